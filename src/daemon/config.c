/* SPDX-License-Identifier: MIT */
/*
 * config.c - the configuration schema and its loader.
 *
 * The table 'schema' is the single source of truth: each row names a key, its type, default,
 * bounds, flag and help text, and where it lives in struct dc_config. Loading applies the rows'
 * defaults, then the TOML file, then DEMOCRITUS_<SECTION>_<KEY> variables, then flags, each
 * through the same typed setters so every layer gets the same validation. The example file and
 * the docs table are printed from the same rows.
 */
#include "daemon/config.h"

#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/toml.h"

enum key_type {
    KT_STRING,
    KT_INT,
    KT_PORT,
    KT_FLOAT,
    KT_LIST,
    KT_ENUM,
    KT_BOOL,
};

#define KF_SECRET 1u /* never printed, logged or echoed in an error */
#define KF_PATH   2u /* a filesystem path ("~/" expanded) */

struct key_def {
    const char *section;
    const char *key;
    enum key_type type;
    size_t offset;
    const char *def;     /* default as text (lists comma-separated); NULL = unset */
    const char *def_doc; /* how the docs show a computed default, or NULL */
    const char *flag;    /* without dashes */
    const char *choices; /* KT_ENUM: "a|b|c" */
    int64_t min, max;    /* KT_INT / KT_FLOAT bounds (floats use them as whole numbers) */
    unsigned flags;
    const char *help;
};

#define OFF(f) offsetof(struct dc_config, f)

static const struct key_def schema[] = {
    {"node", "name", KT_STRING, OFF(name), "", "(host name)", "name", NULL, 0, 0, 0,
     "Human-readable node name shown to peers and in the dashboard."},
    {"node", "listen_addresses", KT_LIST, OFF(listen_addresses), "/ip4/0.0.0.0/tcp/4001", NULL,
     "listen", NULL, 0, 0, 0,
     "Multiaddrs the P2P host listens on. Port 0 picks a free port. Flag repeatable."},
    {"node", "bootstrap_nodes", KT_LIST, OFF(bootstrap_nodes), "", NULL, "bootstrap", NULL, 0, 0, 0,
     "Peers to dial at start, as multiaddrs ending in /p2p/<PeerId> (/ip4, /ip6, or a /dns4, "
     "/dns6 or /dns name). Flag repeatable."},
    {"node", "state_dir", KT_STRING, OFF(state_dir), NULL,
     "$XDG_DATA_HOME/democritus or ~/.local/share/democritus", "state-dir", NULL, 0, 0, KF_PATH,
     "Directory for the identity key, databases, lock and daemon.json (created 0700)."},
    {"node", "private_swarm_key", KT_STRING, OFF(private_swarm_key), NULL, NULL,
     "private-swarm-key", NULL, 0, 0, KF_SECRET,
     "Pre-shared key (64 hex digits) of a private swarm; prefer the _file form or the "
     "environment so it stays out of `ps`."},
    {"node", "private_swarm_key_file", KT_STRING, OFF(private_swarm_key_file), NULL, NULL,
     "private-swarm-key-file", NULL, 0, 0, KF_PATH,
     "File holding the private swarm key in the libp2p PSK format."},
    {"node", "ipfs_dht", KT_BOOL, OFF(ipfs_dht), "false", NULL, "ipfs-dht", NULL, 0, 0, 0,
     "Speak the public IPFS DHT protocol /ipfs/kad/1.0.0 instead of /democritus/kad/1.0.0 "
     "(off, so a node never joins the IPFS DHT by accident)."},
    {"node", "dht_client", KT_BOOL, OFF(dht_client), "false", NULL, "dht-client", NULL, 0, 0, 0,
     "DHT client mode: look up records and providers but never serve or store them for "
     "others (for nodes that peers cannot dial)."},
    {"node", "serve_remote", KT_BOOL, OFF(serve_remote), "true", NULL, "serve-remote", NULL, 0, 0,
     0, "Answer inference requests from peers (/democritus/infer/1.0.0) with the local model."},
    {"node", "remote_allow", KT_LIST, OFF(remote_allow), "", NULL, "remote-allow", NULL, 0, 0, 0,
     "PeerIds allowed to ask for inference; empty = every peer. Flag repeatable."},
    {"node", "remote_deny", KT_LIST, OFF(remote_deny), "", NULL, "remote-deny", NULL, 0, 0, 0,
     "PeerIds refused inference (checked before remote_allow). Flag repeatable."},
    {"node", "remote_max_streams", KT_INT, OFF(remote_max_streams), "4", NULL, "remote-max-streams",
     NULL, 1, 1024, 0, "Concurrent inference requests one peer may run."},
    {"node", "remote_requests_per_minute", KT_INT, OFF(remote_requests_per_minute), "60", NULL,
     "remote-requests-per-minute", NULL, 0, 1000000, 0,
     "Inference requests one peer may start per minute; 0 = unlimited."},
    {"node", "remote_tokens_per_minute", KT_INT, OFF(remote_tokens_per_minute), "20000", NULL,
     "remote-tokens-per-minute", NULL, 0, 1000000000, 0,
     "Tokens generated for one peer per minute before its new requests are refused; 0 = "
     "unlimited."},
    {"node", "remote_max_tokens", KT_INT, OFF(remote_max_tokens), "1024", NULL, "remote-max-tokens",
     NULL, 1, 1048576, 0,
     "Largest max_tokens a remote request may ask for (and the default when it gives none)."},
    {"node", "remote_max_context", KT_INT, OFF(remote_max_context), "4096", NULL,
     "remote-max-context", NULL, 0, 1048576, 0,
     "Largest prompt + max_tokens (tokens) of a remote request; 0 = the model's slot."},
    {"expert", "description", KT_STRING, OFF(description), "A general-purpose assistant.", NULL,
     "description", NULL, 0, 0, 0,
     "What this node's expert is good at; embedded and advertised to the swarm."},
    {"expert", "model_path", KT_STRING, OFF(model_path), NULL, NULL, "model", NULL, 0, 0, KF_PATH,
     "GGUF model this node serves. Unset: the first GGUF in models_dir."},
    {"expert", "max_context", KT_INT, OFF(max_context), "0", NULL, "max-context", NULL, 0, 1048576,
     0, "Context length (tokens) per request; 0 = the model's training context, at most 4096."},
    {"expert", "temperature", KT_FLOAT, OFF(temperature), "0.7", NULL, "temperature", NULL, 0, 2, 0,
     "Default sampling temperature when a request gives none."},
    {"expert", "backend", KT_ENUM, OFF(backend), "local", NULL, "backend", "local|upstream", 0, 0,
     0, "local: run the GGUF with the built-in engine; upstream: forward to upstream_url."},
    {"expert", "upstream_url", KT_STRING, OFF(upstream_url), NULL, NULL, "upstream-url", NULL, 0, 0,
     0, "Base URL of an OpenAI-compatible server, for backend = \"upstream\"."},
    {"expert", "tags", KT_LIST, OFF(tags), "", NULL, "tag", NULL, 0, 0, 0,
     "Kinds of request this expert takes (e.g. code, math, writing), advertised with its "
     "description. Flag repeatable."},
    {"expert", "price", KT_FLOAT, OFF(price), "0", NULL, "price", NULL, 0, 1000000, 0,
     "Credits per 1,000 generated tokens this node asks, advertised in its capability record."},
    {"expert", "publish", KT_BOOL, OFF(publish), "true", NULL, "publish", NULL, 0, 0, 0,
     "Advertise this node as an expert: its signed capability record (description, embedding, "
     "model, load) on the DHT, found by prompts that resemble the description."},
    {"swarm", "experts", KT_INT, OFF(swarm_experts), "3", NULL, "swarm-experts", NULL, 1, 8, 0,
     "Experts a chat with the model \"swarm\" asks when it names none; their answers are "
     "merged by this node's model."},
    {"swarm", "expert_timeout_s", KT_INT, OFF(swarm_expert_timeout_s), "120", NULL,
     "expert-timeout", NULL, 1, 3600, 0,
     "Seconds one expert may take for its whole answer before the next candidate replaces it."},
    {"swarm", "lookup_timeout_ms", KT_INT, OFF(swarm_lookup_timeout_ms), "3000", NULL,
     "lookup-timeout-ms", NULL, 50, 60000, 0,
     "Longest wait for the DHT lookups that find experts for a prompt; the experts known by "
     "then are ranked."},
    {"swarm", "republish_s", KT_INT, OFF(swarm_republish_s), "600", NULL, "republish-s", NULL, 5,
     86400, 0,
     "Seconds between re-signing this node's capability record (it expires after three)."},
    {"engine", "models_dir", KT_STRING, OFF(models_dir), "./models", NULL, "models-dir", NULL, 0, 0,
     KF_PATH, "Folder of GGUF files the registry lists and loads on demand."},
    {"engine", "threads", KT_INT, OFF(threads), "0", NULL, "threads", NULL, 0, 1024, 0,
     "Compute threads per model; 0 = one per physical core."},
    {"engine", "parallel", KT_INT, OFF(parallel), "4", NULL, "parallel", NULL, 1, 256, 0,
     "Sequences decoded together per model (continuous batching slots)."},
    {"engine", "gpu_layers", KT_INT, OFF(gpu_layers), "-1", NULL, "gpu-layers", NULL, -1, 100000, 0,
     "Layers offloaded to the GPU in GPU builds; -1 = all that fit, 0 = CPU only."},
    {"engine", "step_budget_ms", KT_INT, OFF(step_budget_ms), "0", NULL, "step-budget-ms", NULL, 0,
     60000, 0,
     "Longest decode step (ms) where a step cannot be aborted (GPU backends): bounds how late a "
     "cancel lands; 0 = 50."},
    {"engine", "memory_budget_mb", KT_INT, OFF(memory_budget_mb), "0", NULL, "memory-budget-mb",
     NULL, 0, INT64_C(1) << 30, 0,
     "Memory for loaded models before the least recently used is unloaded; 0 = half of RAM."},
    {"api", "bind", KT_STRING, OFF(bind), "127.0.0.1", NULL, "bind", NULL, 0, 0, 0,
     "Address the REST, gRPC and WebSocket servers bind to."},
    {"api", "rest_port", KT_PORT, OFF(rest_port), "8080", NULL, "rest-port", NULL, 0, 65535, 0,
     "OpenAI-compatible REST port; 0 picks a free one."},
    {"api", "grpc_port", KT_PORT, OFF(grpc_port), "50051", NULL, "grpc-port", NULL, 0, 65535, 0,
     "gRPC port; 0 picks a free one."},
    {"api", "ws_port", KT_PORT, OFF(ws_port), "8081", NULL, "ws-port", NULL, 0, 65535, 0,
     "WebSocket port; 0 picks a free one."},
    {"api", "api_keys", KT_LIST, OFF(api_keys), "", NULL, "api-key", NULL, 0, 0, KF_SECRET,
     "Bearer keys clients must present; empty = no auth (loopback only). Flag repeatable."},
    {"api", "api_key_file", KT_STRING, OFF(api_key_file), NULL, NULL, "api-key-file", NULL, 0, 0,
     KF_PATH, "File with one API key per line, added to api_keys."},
    {"api", "priority_api_keys", KT_LIST, OFF(priority_api_keys), "", NULL, "priority-api-key",
     NULL, 0, 0, KF_SECRET,
     "Keys whose requests wait ahead of other keys' in each model's queue; each is a valid key "
     "too. Flag repeatable."},
    {"api", "max_queue", KT_INT, OFF(api_max_queue), "64", NULL, "max-queue", NULL, 1, 65536, 0,
     "Requests allowed to wait per model beyond its busy slots; more answer 429."},
    {"api", "max_connections", KT_INT, OFF(api_max_connections), "1024", NULL, "max-connections",
     NULL, 1, 65536, 0, "Open REST connections at most; more are refused at accept."},
    {"api", "timeout_s", KT_INT, OFF(api_timeout_s), "15", NULL, "api-timeout", NULL, 1, 3600, 0,
     "Seconds a REST connection may stay idle (or dribble its headers) before it is closed."},
    {"api", "cors_origins", KT_LIST, OFF(cors_origins), "", NULL, "cors-origin", NULL, 0, 0, 0,
     "Browser origins (e.g. \"https://app.example\", or \"*\") allowed to call the REST API "
     "(CORS); empty = none. Flag repeatable."},
    {"api", "rate_limit_rpm", KT_INT, OFF(rate_limit_rpm), "0", NULL, "rate-limit-rpm", NULL, 0,
     1000000, 0,
     "Requests per minute per API key (per client address when auth is off), counted across "
     "REST, WebSocket chats and gRPC calls, beyond which 429 with Retry-After (WebSocket: an "
     "error with retry_after_ms; gRPC: RESOURCE_EXHAUSTED); 0 = off."},
    {"api", "ws_max_message_bytes", KT_INT, OFF(ws_max_message_bytes), "1048576", NULL,
     "ws-max-message-bytes", NULL, 1024, INT64_C(64) << 20, 0,
     "Largest WebSocket message (bytes) a client may send; a bigger one closes the socket with "
     "1009."},
    {"api", "grpc_max_message_bytes", KT_INT, OFF(grpc_max_message_bytes), "4194304", NULL,
     "grpc-max-message-bytes", NULL, 1024, INT64_C(64) << 20, 0,
     "Largest gRPC request message (bytes); a bigger one ends the call with "
     "RESOURCE_EXHAUSTED."},
    {"log", "level", KT_ENUM, OFF(log_level), "info", NULL, "log-level",
     "error|warn|info|debug|trace", 0, 0, 0, "Least severe level written to stderr."},
    {"log", "format", KT_ENUM, OFF(log_format), "text", NULL, "log-format", "text|json", 0, 0, 0,
     "text for people, json for one JSON object per line."},
};

static const char *const sections[] = {"node", "expert", "swarm", "engine", "api", "log"};

/* Where a value came from, for error messages. */
struct origin {
    const char *what; /* "file", "env", "flag", "default" */
    const char *path;
    unsigned line;
    const char *name; /* env variable or flag */
};

static void strlist_clear(struct dc_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        dc_free(l->items[i]);
    dc_free(l->items);
    l->items = NULL;
    l->n = 0;
}

static int strlist_push(struct dc_strlist *l, const char *s, size_t len)
{
    char **items = dc_realloc(l->items, (l->n + 1) * sizeof(*items));
    char *copy;

    if (items == NULL)
        return DC_ENOMEM;
    l->items = items;
    copy = dc_strndup(s, len);
    if (copy == NULL)
        return DC_ENOMEM;
    l->items[l->n++] = copy;
    return 0;
}

/* Formats the "where" prefix of an error: "file:12: [api] rest_port" or "--rest-port". */
static void origin_prefix(const struct origin *o, const struct key_def *k, char *buf, size_t len)
{
    if (strcmp(o->what, "file") == 0)
        snprintf(buf, len, "%s:%u: [%s] %s", o->path, o->line, k->section, k->key);
    else if (strcmp(o->what, "env") == 0)
        snprintf(buf, len, "environment %s", o->name);
    else if (strcmp(o->what, "flag") == 0)
        snprintf(buf, len, "--%s", o->name);
    else
        snprintf(buf, len, "default of [%s] %s", k->section, k->key);
}

static int key_error(char *err, size_t errlen, const struct origin *o, const struct key_def *k,
                     const char *fmt, const char *detail)
{
    char where[512];

    origin_prefix(o, k, where, sizeof(where));
    snprintf(err, errlen, "%s: ", where);
    size_t used = strlen(err);
    snprintf(err + used, errlen - used, fmt, detail);
    return DC_ECONFIG;
}

static bool is_hex64(const char *s)
{
    size_t n = 0;

    for (; *s != '\0'; s++, n++) {
        if (!isxdigit((unsigned char)*s))
            return false;
    }
    return n == 64;
}

/* Checks a string against the key's choices and special rules. */
static int check_string(const struct key_def *k, const char *s, const struct origin *o, char *err,
                        size_t errlen)
{
    if (k->type == KT_ENUM) {
        size_t len = strlen(s);
        const char *c = k->choices;
        while (c != NULL && *c != '\0') {
            const char *bar = strchr(c, '|');
            size_t clen = bar ? (size_t)(bar - c) : strlen(c);
            if (clen == len && strncmp(c, s, len) == 0)
                return 0;
            c = bar ? bar + 1 : NULL;
        }
        return key_error(err, errlen, o, k, "must be one of %s", k->choices);
    }
    if ((k->flags & KF_SECRET) && strcmp(k->key, "private_swarm_key") == 0 && !is_hex64(s))
        return key_error(err, errlen, o, k, "%s", "must be 64 hexadecimal digits");
    return 0;
}

static int set_string(struct dc_config *cfg, const struct key_def *k, const char *s, size_t len,
                      const struct origin *o, char *err, size_t errlen)
{
    char **field = (char **)((char *)cfg + k->offset);
    char *copy;
    int rc;

    if (memchr(s, '\0', len) != NULL)
        return key_error(err, errlen, o, k, "%s", "must not contain NUL characters");
    if ((k->flags & KF_PATH) && len >= 2 && s[0] == '~' && s[1] == '/' && getenv("HOME")) {
        copy = dc_asprintf("%s%.*s", getenv("HOME"), (int)(len - 1), s + 1);
    } else {
        copy = dc_strndup(s, len);
    }
    if (copy == NULL)
        return DC_ENOMEM;
    rc = check_string(k, copy, o, err, errlen);
    if (rc < 0) {
        dc_free(copy);
        return rc;
    }
    dc_free(*field);
    *field = copy;
    return 0;
}

static int set_int(struct dc_config *cfg, const struct key_def *k, int64_t v,
                   const struct origin *o, char *err, size_t errlen)
{
    char detail[96];

    if (v < k->min || v > k->max) {
        snprintf(detail, sizeof(detail), "%lld is out of range (%lld to %lld)", (long long)v,
                 (long long)k->min, (long long)k->max);
        return key_error(err, errlen, o, k, "%s", detail);
    }
    *(int64_t *)((char *)cfg + k->offset) = v;
    return 0;
}

static int set_bool(struct dc_config *cfg, const struct key_def *k, bool v)
{
    *(bool *)((char *)cfg + k->offset) = v;
    return 0;
}

static int set_float(struct dc_config *cfg, const struct key_def *k, double v,
                     const struct origin *o, char *err, size_t errlen)
{
    char detail[96];

    if (!(v >= (double)k->min && v <= (double)k->max)) {
        snprintf(detail, sizeof(detail), "%g is out of range (%lld to %lld)", v, (long long)k->min,
                 (long long)k->max);
        return key_error(err, errlen, o, k, "%s", detail);
    }
    *(double *)((char *)cfg + k->offset) = v;
    return 0;
}

/* Applies a value given as text (defaults, environment, flags). 'append' adds to a list. */
static int set_from_text(struct dc_config *cfg, const struct key_def *k, const char *text,
                         bool append, const struct origin *o, char *err, size_t errlen)
{
    struct dc_strlist *list;
    char *end;
    int rc;

    switch (k->type) {
    case KT_STRING:
    case KT_ENUM:
        return set_string(cfg, k, text, strlen(text), o, err, errlen);
    case KT_INT:
    case KT_PORT: {
        long long v;
        errno = 0;
        v = strtoll(text, &end, 10);
        if (*text == '\0' || *end != '\0' || errno != 0)
            return key_error(err, errlen, o, k, "'%s' is not an integer",
                             (k->flags & KF_SECRET) ? "<redacted>" : text);
        return set_int(cfg, k, v, o, err, errlen);
    }
    case KT_BOOL:
        if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0)
            return set_bool(cfg, k, true);
        if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0)
            return set_bool(cfg, k, false);
        return key_error(err, errlen, o, k, "'%s' is not a boolean (true or false)", text);
    case KT_FLOAT: {
        double v;
        v = strtod(text, &end);
        if (*text == '\0' || *end != '\0')
            return key_error(err, errlen, o, k, "'%s' is not a number", text);
        return set_float(cfg, k, v, o, err, errlen);
    }
    case KT_LIST:
        list = (struct dc_strlist *)((char *)cfg + k->offset);
        if (!append)
            strlist_clear(list);
        if (append) {
            return strlist_push(list, text, strlen(text));
        }
        /* Text lists (defaults, environment) are comma-separated; empty items are skipped. */
        for (const char *p = text; *p != '\0';) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            while (len > 0 && isspace((unsigned char)*p)) {
                p++;
                len--;
            }
            while (len > 0 && isspace((unsigned char)p[len - 1]))
                len--;
            if (len > 0) {
                rc = strlist_push(list, p, len);
                if (rc < 0)
                    return rc;
            }
            if (comma == NULL)
                break;
            p = comma + 1;
        }
        return 0;
    }
    return DC_EINVAL;
}

/* Applies a TOML value to key 'k', checking its type. */
static int set_from_toml(struct dc_config *cfg, const struct key_def *k,
                         const struct dc_toml_value *v, const struct origin *o, char *err,
                         size_t errlen)
{
    enum dc_toml_type t = dc_toml_type(v);
    const char *s;
    size_t len;
    int rc;

    switch (k->type) {
    case KT_STRING:
    case KT_ENUM:
        if (t != DC_TOML_STRING)
            return key_error(err, errlen, o, k, "expected a string, got %s", dc_toml_type_name(t));
        s = dc_toml_string(v, &len);
        return set_string(cfg, k, s, len, o, err, errlen);
    case KT_INT:
    case KT_PORT:
        if (t != DC_TOML_INTEGER)
            return key_error(err, errlen, o, k, "expected an integer, got %s",
                             dc_toml_type_name(t));
        return set_int(cfg, k, dc_toml_int(v), o, err, errlen);
    case KT_BOOL:
        if (t != DC_TOML_BOOL)
            return key_error(err, errlen, o, k, "expected a boolean, got %s", dc_toml_type_name(t));
        return set_bool(cfg, k, dc_toml_bool(v));
    case KT_FLOAT:
        if (t == DC_TOML_INTEGER)
            return set_float(cfg, k, (double)dc_toml_int(v), o, err, errlen);
        if (t != DC_TOML_FLOAT)
            return key_error(err, errlen, o, k, "expected a number, got %s", dc_toml_type_name(t));
        return set_float(cfg, k, dc_toml_float(v), o, err, errlen);
    case KT_LIST: {
        struct dc_strlist *list = (struct dc_strlist *)((char *)cfg + k->offset);
        if (t != DC_TOML_ARRAY)
            return key_error(err, errlen, o, k, "expected an array of strings, got %s",
                             dc_toml_type_name(t));
        strlist_clear(list);
        for (size_t i = 0; i < dc_toml_len(v); i++) {
            const struct dc_toml_value *item = dc_toml_at(v, i);
            if (dc_toml_type(item) != DC_TOML_STRING)
                return key_error(err, errlen, o, k, "expected an array of strings, found %s",
                                 dc_toml_type_name(dc_toml_type(item)));
            s = dc_toml_string(item, &len);
            if (memchr(s, '\0', len) != NULL)
                return key_error(err, errlen, o, k, "%s", "must not contain NUL characters");
            rc = strlist_push(list, s, len);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    }
    return DC_EINVAL;
}

static const struct key_def *find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < DC_ARRAY_LEN(schema); i++) {
        if (strcmp(schema[i].section, section) == 0 && strcmp(schema[i].key, key) == 0)
            return &schema[i];
    }
    return NULL;
}

static const struct key_def *find_flag(const char *flag)
{
    for (size_t i = 0; i < DC_ARRAY_LEN(schema); i++) {
        if (strcmp(schema[i].flag, flag) == 0)
            return &schema[i];
    }
    return NULL;
}

bool dc_config_is_flag(const char *name, bool *takes_value)
{
    if (find_flag(name) == NULL)
        return false;
    if (takes_value != NULL)
        *takes_value = true;
    return true;
}

/* Edit distance for "did you mean" hints; short strings only. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[64], cur[64];

    if (la >= 63 || lb >= 63)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof(size_t));
    }
    return prev[lb];
}

static const char *suggest_key(const char *section, const char *key)
{
    const char *best = NULL;
    size_t best_d = 3;

    for (size_t i = 0; i < DC_ARRAY_LEN(schema); i++) {
        if (strcmp(schema[i].section, section) != 0)
            continue;
        size_t d = edit_distance(key, schema[i].key);
        if (d < best_d) {
            best_d = d;
            best = schema[i].key;
        }
    }
    return best;
}

static bool known_section(const char *s)
{
    for (size_t i = 0; i < DC_ARRAY_LEN(sections); i++) {
        if (strcmp(sections[i], s) == 0)
            return true;
    }
    return false;
}

static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    struct dc_buf b;
    char chunk[8192];
    FILE *f;
    size_t n;
    int rc = 0;

    *out = NULL;
    f = fopen(path, "rb");
    if (f == NULL) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot read config file: %s", path, dc_strerror(rc));
        return rc;
    }
    dc_buf_init(&b, 16u << 20);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        rc = dc_buf_append(&b, chunk, n);
        if (rc < 0)
            break;
    }
    if (rc == 0 && ferror(f))
        rc = -EIO;
    fclose(f);
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot read config file: %s", path,
                 rc == DC_ELIMIT ? "larger than 16 MiB" : dc_strerror(rc));
        dc_buf_cleanup(&b);
        return rc == DC_ELIMIT ? DC_ECONFIG : rc;
    }
    if (b.data == NULL && (rc = dc_buf_append(&b, "", 0)) < 0)
        return rc;
    *out = (char *)dc_buf_steal(&b, len);
    return 0;
}

static int apply_file(struct dc_config *cfg, const char *path, char *err, size_t errlen)
{
    struct dc_toml_value *root = NULL;
    struct dc_toml_error terr;
    char *text;
    size_t len;
    int rc;

    rc = read_file(path, &text, &len, err, errlen);
    if (rc < 0)
        return rc;
    rc = dc_toml_parse(text, len, &root, &terr);
    dc_free(text);
    if (rc == DC_ENOMEM)
        return rc;
    if (rc < 0) {
        snprintf(err, errlen, "%s:%u:%u: invalid TOML: %s", path, terr.line, terr.column,
                 terr.message);
        return DC_ECONFIG;
    }

    for (size_t i = 0; i < dc_toml_len(root); i++) {
        const struct dc_toml_value *sec;
        const char *sname = dc_toml_key_at(root, i, &sec);

        if (!known_section(sname)) {
            snprintf(err, errlen,
                     "%s:%u: unknown section [%s] (sections: node, expert, "
                     "engine, api, log)",
                     path, dc_toml_line(sec), sname);
            rc = DC_ECONFIG;
            goto out;
        }
        if (dc_toml_type(sec) != DC_TOML_TABLE) {
            snprintf(err, errlen, "%s:%u: '%s' must be a table [%s]", path, dc_toml_line(sec),
                     sname, sname);
            rc = DC_ECONFIG;
            goto out;
        }
        for (size_t j = 0; j < dc_toml_len(sec); j++) {
            const struct dc_toml_value *v;
            const char *kname = dc_toml_key_at(sec, j, &v);
            const struct key_def *k = find_key(sname, kname);
            struct origin o = {"file", path, dc_toml_line(v), NULL};

            if (k == NULL) {
                const char *hint = suggest_key(sname, kname);
                snprintf(err, errlen, "%s:%u: [%s] unknown key '%s'%s%s%s", path, dc_toml_line(v),
                         sname, kname, hint ? " (did you mean '" : "", hint ? hint : "",
                         hint ? "'?)" : "");
                rc = DC_ECONFIG;
                goto out;
            }
            rc = set_from_toml(cfg, k, v, &o, err, errlen);
            if (rc < 0)
                goto out;
        }
    }
out:
    dc_toml_free(root);
    return rc;
}

/* DEMOCRITUS_<SECTION>_<KEY> for a row. */
static void env_name(const struct key_def *k, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "DEMOCRITUS_%s_%s", k->section, k->key);

    for (size_t i = 0; i < n && i < len; i++)
        buf[i] = (char)toupper((unsigned char)buf[i]);
}

static const char *env_lookup(char *const *env, const char *name)
{
    size_t len = strlen(name);

    for (; env != NULL && *env != NULL; env++) {
        if (strncmp(*env, name, len) == 0 && (*env)[len] == '=')
            return *env + len + 1;
    }
    return NULL;
}

static int apply_defaults(struct dc_config *cfg, char *const *env, char *err, size_t errlen)
{
    const char *xdg = env_lookup(env, "XDG_DATA_HOME"), *home = env_lookup(env, "HOME");
    int rc;

    for (size_t i = 0; i < DC_ARRAY_LEN(schema); i++) {
        struct origin o = {"default", NULL, 0, NULL};
        if (schema[i].def == NULL)
            continue;
        rc = set_from_text(cfg, &schema[i], schema[i].def, false, &o, err, errlen);
        if (rc < 0)
            return rc;
    }
    if (xdg != NULL && xdg[0] == '/')
        cfg->state_dir = dc_asprintf("%s/democritus", xdg);
    else if (home != NULL && home[0] != '\0')
        cfg->state_dir = dc_asprintf("%s/.local/share/democritus", home);
    else
        cfg->state_dir = dc_strdup("./democritus-state");
    return cfg->state_dir == NULL ? DC_ENOMEM : 0;
}

int dc_config_load(struct dc_config *cfg, const char *path, char *const *env,
                   const struct dc_config_flag *flags, size_t n_flags, char *err, size_t errlen)
{
    const struct key_def *k;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    err[0] = '\0';
    rc = apply_defaults(cfg, env, err, errlen);
    if (rc < 0)
        goto fail;

    if (path == NULL && access("config.toml", F_OK) == 0)
        path = "config.toml";
    if (path != NULL) {
        cfg->source_path = dc_strdup(path);
        if (cfg->source_path == NULL) {
            rc = DC_ENOMEM;
            goto fail;
        }
        rc = apply_file(cfg, path, err, errlen);
        if (rc < 0)
            goto fail;
    }

    for (size_t i = 0; i < DC_ARRAY_LEN(schema); i++) {
        char name[96];
        const char *val;
        env_name(&schema[i], name, sizeof(name));
        val = env_lookup(env, name);
        if (val != NULL) {
            struct origin o = {"env", NULL, 0, name};
            rc = set_from_text(cfg, &schema[i], val, false, &o, err, errlen);
            if (rc < 0)
                goto fail;
        }
    }

    /* A repeatable (list) flag replaces the lower layers' list on its first use. */
    for (size_t i = 0; i < n_flags; i++) {
        struct origin o = {"flag", NULL, 0, flags[i].name};
        bool first = true;
        k = find_flag(flags[i].name);
        if (k == NULL) {
            snprintf(err, errlen, "--%s: unknown option", flags[i].name);
            rc = DC_ECONFIG;
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            first = first && strcmp(flags[j].name, flags[i].name) != 0;
        if (k->type == KT_LIST && first)
            strlist_clear((struct dc_strlist *)((char *)cfg + k->offset));
        rc = set_from_text(cfg, k, flags[i].value, k->type == KT_LIST, &o, err, errlen);
        if (rc < 0)
            goto fail;
    }

    if (strcmp(cfg->backend, "upstream") == 0 &&
        (cfg->upstream_url == NULL || cfg->upstream_url[0] == '\0')) {
        snprintf(err, errlen, "[expert] backend = \"upstream\" needs [expert] upstream_url");
        rc = DC_ECONFIG;
        goto fail;
    }
    if (cfg->private_swarm_key != NULL && cfg->private_swarm_key_file != NULL) {
        snprintf(err, errlen,
                 "[node] private_swarm_key and private_swarm_key_file are both "
                 "set; keep one");
        rc = DC_ECONFIG;
        goto fail;
    }
    return 0;

fail:
    if (rc == DC_ENOMEM && err[0] == '\0')
        snprintf(err, errlen, "out of memory while loading the configuration");
    dc_config_cleanup(cfg);
    return rc;
}

int dc_config_load_secrets(struct dc_config *cfg, char *err, size_t errlen)
{
    char *text, *line, *save = NULL;
    size_t len;
    int rc;

    if (cfg->private_swarm_key_file != NULL && access(cfg->private_swarm_key_file, R_OK) != 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot read private swarm key file: %s",
                 cfg->private_swarm_key_file, dc_strerror(rc));
        return DC_ECONFIG;
    }
    /* Priority keys are keys too: one set for the auth check and for "are keys configured". */
    for (size_t i = 0; i < cfg->priority_api_keys.n; i++) {
        const char *k = cfg->priority_api_keys.items[i];
        bool known = false;

        for (size_t j = 0; j < cfg->api_keys.n && !known; j++)
            known = strcmp(cfg->api_keys.items[j], k) == 0;
        if (!known && (rc = strlist_push(&cfg->api_keys, k, strlen(k))) < 0)
            return rc;
    }
    if (cfg->api_key_file == NULL)
        return 0;
    rc = read_file(cfg->api_key_file, &text, &len, err, errlen);
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot read API key file: %s", cfg->api_key_file,
                 dc_strerror(rc));
        return DC_ECONFIG;
    }
    for (line = strtok_r(text, "\r\n", &save); line != NULL; line = strtok_r(NULL, "\r\n", &save)) {
        while (isspace((unsigned char)*line))
            line++;
        len = strlen(line);
        while (len > 0 && isspace((unsigned char)line[len - 1]))
            len--;
        if (len == 0 || line[0] == '#')
            continue;
        rc = strlist_push(&cfg->api_keys, line, len);
        if (rc < 0)
            break;
    }
    dc_free(text);
    return rc < 0 ? rc : 0;
}

void dc_config_cleanup(struct dc_config *cfg)
{
    for (size_t i = 0; i < DC_ARRAY_LEN(schema); i++) {
        void *field = (char *)cfg + schema[i].offset;
        if (schema[i].type == KT_STRING || schema[i].type == KT_ENUM) {
            dc_free(*(char **)field);
            *(char **)field = NULL;
        } else if (schema[i].type == KT_LIST) {
            strlist_clear(field);
        }
    }
    dc_free(cfg->source_path);
    cfg->source_path = NULL;
}

static const char *type_doc(const struct key_def *k)
{
    switch (k->type) {
    case KT_STRING:
        return "string";
    case KT_INT:
        return "integer";
    case KT_PORT:
        return "port";
    case KT_FLOAT:
        return "number";
    case KT_LIST:
        return "array of strings";
    case KT_ENUM:
        return "string";
    case KT_BOOL:
        return "boolean";
    }
    return "?";
}

/* Writes a default value as TOML (lists from their comma-separated text). */
static void write_toml_default(FILE *f, const struct key_def *k, const char *text)
{
    if (k->type == KT_INT || k->type == KT_PORT || k->type == KT_FLOAT || k->type == KT_BOOL) {
        fputs(text, f);
    } else if (k->type == KT_LIST) {
        fputc('[', f);
        for (const char *p = text; *p != '\0';) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            fprintf(f, "%s\"%.*s\"", p == text ? "" : ", ", (int)len, p);
            if (comma == NULL)
                break;
            p = comma + 1;
        }
        fputc(']', f);
    } else {
        fputc('"', f);
        for (const char *p = text; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\')
                fputc('\\', f);
            fputc(*p, f);
        }
        fputc('"', f);
    }
}

void dc_config_write_example(FILE *f)
{
    const char *section = "";
    char env[96];

    fputs("# Democritus configuration (generated by `democritus config example`; every key is\n"
          "# optional and shown with its default). Precedence: defaults < this file <\n"
          "# environment DEMOCRITUS_<SECTION>_<KEY> < command-line flags.\n",
          f);
    for (size_t i = 0; i < DC_ARRAY_LEN(schema); i++) {
        const struct key_def *k = &schema[i];
        if (strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(f, "\n[%s]\n", section);
        }
        env_name(k, env, sizeof(env));
        fprintf(f, "\n# %s\n# Env %s, flag --%s.", k->help, env, k->flag);
        if (k->type == KT_ENUM)
            fprintf(f, " One of: %s.", k->choices);
        fputc('\n', f);
        if (k->def_doc != NULL) {
            fprintf(f, "# Default: %s\n# %s = ", k->def_doc, k->key);
            if (k->def != NULL && k->def[0] != '\0')
                write_toml_default(f, k, k->def);
            else
                fputs("\"\"", f);
        } else if (k->def == NULL) {
            fprintf(f, "# %s = \"\"", k->key);
        } else {
            fprintf(f, "%s = ", k->key);
            write_toml_default(f, k, k->def);
        }
        fputc('\n', f);
    }
}

void dc_config_write_docs(FILE *f)
{
    char env[96];

    fputs("| Section | Key | Type | Default | Environment | Flag | Meaning |\n"
          "|---|---|---|---|---|---|---|\n",
          f);
    for (size_t i = 0; i < DC_ARRAY_LEN(schema); i++) {
        const struct key_def *k = &schema[i];
        const char *def = k->def_doc ? k->def_doc : (k->def ? k->def : "(unset)");
        env_name(k, env, sizeof(env));
        char type[128];
        if (k->type == KT_ENUM) {
            /* '|' would split the markdown cell. */
            size_t n = (size_t)snprintf(type, sizeof(type), "one of: %s", k->choices);
            for (size_t j = 0; j < n && j < sizeof(type); j++)
                type[j] = type[j] == '|' ? '/' : type[j];
        } else {
            snprintf(type, sizeof(type), "%s", type_doc(k));
        }
        fprintf(f, "| `[%s]` | `%s` | %s | %s%s%s | `%s` | `--%s` | %s%s |\n", k->section, k->key,
                type, def[0] ? "`" : "", def[0] ? def : "(empty)", def[0] ? "`" : "", env, k->flag,
                k->help, (k->flags & KF_SECRET) ? " Secret: never logged." : "");
    }
}

void dc_config_write_effective(const struct dc_config *cfg, FILE *f)
{
    const char *section = "";

    for (size_t i = 0; i < DC_ARRAY_LEN(schema); i++) {
        const struct key_def *k = &schema[i];
        const void *field = (const char *)cfg + k->offset;
        if (strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(f, "%s[%s]\n", i ? "\n" : "", section);
        }
        switch (k->type) {
        case KT_STRING:
        case KT_ENUM: {
            const char *s = *(char *const *)field;
            if (s == NULL) {
                fprintf(f, "# %s is unset\n", k->key);
                continue;
            }
            fprintf(f, "%s = ", k->key);
            write_toml_default(f, k, (k->flags & KF_SECRET) ? "<redacted>" : s);
            break;
        }
        case KT_INT:
        case KT_PORT:
            fprintf(f, "%s = %lld", k->key, (long long)*(const int64_t *)field);
            break;
        case KT_FLOAT:
            fprintf(f, "%s = %g", k->key, *(const double *)field);
            break;
        case KT_BOOL:
            fprintf(f, "%s = %s", k->key, *(const bool *)field ? "true" : "false");
            break;
        case KT_LIST: {
            const struct dc_strlist *l = field;
            fprintf(f, "%s = [", k->key);
            for (size_t j = 0; j < l->n; j++) {
                fprintf(f, "%s", j ? ", " : "");
                write_toml_default(f, &schema[0],
                                   (k->flags & KF_SECRET) ? "<redacted>" : l->items[j]);
            }
            fputc(']', f);
            break;
        }
        }
        fputc('\n', f);
    }
}

void dc_config_write_flag_help(FILE *f)
{
    for (size_t i = 0; i < DC_ARRAY_LEN(schema); i++) {
        char opt[64];
        snprintf(opt, sizeof(opt), "--%s VALUE", schema[i].flag);
        fprintf(f, "  %-30s [%s] %s\n", opt, schema[i].section, schema[i].key);
    }
}
