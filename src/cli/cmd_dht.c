/* SPDX-License-Identifier: MIT */
/*
 * cmd_dht.c - `democritus dht put|get|provide|findprovs`: one DHT operation from a throw-away
 * node. It starts an in-process host with a fresh identity (so it runs beside a daemon that
 * holds the state directory), enters the DHT through the --bootstrap peers (the config's
 * bootstrap_nodes by default), performs the operation in DHT client mode, prints the result
 * and exits. It speaks whatever the configuration says: /democritus/kad/1.0.0 or, with
 * --ipfs-dht true, /ipfs/kad/1.0.0, and pnet with the configured swarm key.
 *
 * Keys: put/get take a record key as text ("/democritus/...", or "/ipns/<PeerId>" and
 * "/pk/<PeerId>", which become the binary keys the DHT uses); provide/findprovs take a CID
 * (CIDv0 "Qm...", CIDv1 multibase such as "bafy..."), whose multihash is the DHT key as in
 * IPFS, or any other text, used as bytes.
 *
 * /democritus/ records are signed (p2p/record.h): `put` signs the value with the node's
 * identity key from the state directory (read only; created on first use like `democritus
 * id`), so the key must end with this node's PeerId; `get` checks the record and prints its
 * body, and for /ipns/ names the record's Value; --raw prints the stored value as it is. The
 * throw-away transport identity is not the node's: it only carries the signed record.
 *
 * Exit codes: 0 done (found), 1 failed or not found, 2 usage.
 *
 * `democritus ping MULTIADDR` lives here too: the same throw-away node dials a peer, prints
 * what identify says of it (agent, protocols) and the round trips of /ipfs/ping/1.0.0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/log.h"
#include "base/multibase.h"
#include "cli/cli.h"
#include "crypto/crypto.h"
#include "daemon/daemon.h"
#include "p2p/dht.h"
#include "p2p/record.h"

#define MAX_KEYS 64
/* How long peers keep a record `dht put` signs (they drop it sooner if not republished:
 * DC_KAD_RECORD_TTL_MS after they received it). */
#define PUT_RECORD_LIFETIME_MS (48ull * 3600ull * 1000ull)

enum dht_cmd { CMD_PUT, CMD_GET, CMD_PROVIDE, CMD_FINDPROVS };

struct key {
    const char *text;
    uint8_t bytes[DC_KAD_MAX_KEY];
    size_t len;
};

struct run {
    uv_loop_t loop;
    struct dc_host *host;
    struct dc_dht *dht;
    enum dht_cmd cmd;
    struct key keys[MAX_KEYS];
    size_t n_keys;
    const char *value;
    uint8_t *signed_value; /* put under /democritus/: the signed record (owned) */
    size_t signed_len;
    bool raw; /* get: print the stored value unchanged */
    uint32_t max_providers;
    size_t dials_pending, dials_ok;
    size_t ops_pending;
    bool started, failed, timed_out;
    int found; /* operations that succeeded */
    uint64_t drain_until;
    uv_timer_t timer;
};

/* A CID's multihash (provide/findprovs), or a record key (/ipns/ and /pk/ PeerIds made
 * binary, other text as it is). */
static int parse_key(const char *text, bool cid, struct key *k)
{
    k->text = text;
    if (cid)
        return dc_dht_key_parse(text, k->bytes, &k->len);
    return dc_dht_record_key_from_text(text, k->bytes, &k->len);
}

static bool key_has_prefix(const struct key *k, const char *prefix)
{
    size_t n = strlen(prefix);

    return k->len > n && memcmp(k->bytes, prefix, n) == 0;
}

/* Prints what GET found: a /democritus/ record's body, an /ipns/ record's Value, or (raw, or
 * any other namespace) the value itself; then a newline. */
static void print_value(const struct run *r, const struct key *k, const uint8_t *v, size_t len)
{
    struct dc_dht_record rec;
    struct dc_ipns_entry e;

    if (!r->raw && key_has_prefix(k, DC_DHT_RECORD_PREFIX) &&
        dc_dht_record_open(k->bytes, k->len, v, len, dc_wall_ms(), &rec) == 0) {
        v = rec.body;
        len = rec.body_len;
    } else if (!r->raw && key_has_prefix(k, "/ipns/") && dc_ipns_parse(v, len, &e) == 0) {
        v = e.value;
        len = e.value_len;
    }
    fwrite(v, 1, len, stdout);
    fputc('\n', stdout);
}

/* put under /democritus/: signs the value with the node's identity (seq = now in ms, so a
 * later put replaces an earlier one). Returns 0, or 1 after printing one line. */
static int sign_put_value(const struct dc_config *cfg, struct run *r)
{
    const struct key *k = &r->keys[0];
    struct dc_identity *me = NULL;
    char err[512], peer[DC_PEER_ID_STR_MAX];
    uint64_t now = dc_wall_ms();
    struct dc_buf b;
    int rc;

    if (dc_crypto_init() < 0) {
        fprintf(stderr, "democritus dht put: cannot initialise libsodium\n");
        return 1;
    }
    rc = dc_state_identity(cfg->state_dir, true, &me, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "democritus dht put: %s\n", err);
        return 1;
    }
    dc_buf_init(&b, DC_KAD_MAX_VALUE);
    rc = dc_dht_record_sign(me, k->bytes, k->len, now, now + PUT_RECORD_LIFETIME_MS,
                            (const uint8_t *)r->value, strlen(r->value), &b);
    if (rc == DC_EPERM || rc == DC_ECORRUPT) {
        if (dc_peer_id_to_string(dc_identity_peer_id(me), peer, sizeof(peer)) < 0)
            snprintf(peer, sizeof(peer), "?");
        fprintf(stderr,
                "democritus dht put: %s: a /democritus/ key must be /democritus/<kind>/<PeerId> "
                "ending with this node's PeerId, %s\n",
                k->text, peer);
    } else if (rc == DC_ELIMIT) {
        fprintf(stderr, "democritus dht put: %s: the value is over %u bytes\n", k->text,
                DC_DHT_RECORD_MAX_BODY);
    } else if (rc < 0) {
        fprintf(stderr, "democritus dht put: %s: cannot sign the record: %s\n", k->text,
                dc_strerror(rc));
    } else {
        r->signed_value = dc_buf_steal(&b, &r->signed_len);
    }
    dc_buf_cleanup(&b);
    dc_identity_free(me);
    return rc < 0 ? 1 : 0;
}

static void finish_if_done(struct run *r);

struct op_ctx {
    struct run *r;
    const struct key *k;
};

static void on_done(void *ud, int status, const struct dc_dht_result *res)
{
    struct op_ctx *o = ud;
    struct run *r = o->r;
    char peer[DC_PEER_ID_STR_MAX], addr[DC_MULTIADDR_TEXT_MAX];

    r->ops_pending--;
    if (status == 0)
        r->found++;
    switch (r->cmd) {
    case CMD_GET:
        if (status == 0) {
            print_value(r, o->k, res->value, res->value_len);
        } else {
            fprintf(stderr, "democritus dht get: %s: %s\n", o->k->text,
                    status == DC_ENOENT ? "no record found" : dc_strerror(status));
        }
        break;
    case CMD_PUT:
    case CMD_PROVIDE:
        if (status == 0)
            printf("%s: %s %zu peer(s)\n", o->k->text,
                   r->cmd == CMD_PUT ? "stored on" : "announced to", res->n_stored);
        else
            fprintf(stderr, "democritus dht %s: %s: %s\n", r->cmd == CMD_PUT ? "put" : "provide",
                    o->k->text,
                    status == DC_EAGAIN ? "no DHT peer reachable" : dc_strerror(status));
        break;
    case CMD_FINDPROVS:
        if (status != 0) {
            fprintf(stderr, "democritus dht findprovs: %s: %s\n", o->k->text,
                    status == DC_ENOENT ? "no provider found" : dc_strerror(status));
            break;
        }
        for (size_t i = 0; i < res->n_providers; i++) {
            const struct dc_kad_peer_info *p = &res->providers[i];
            if (dc_peer_id_to_string(&p->id, peer, sizeof(peer)) < 0)
                continue;
            printf("%s %s ", o->k->text, peer);
            for (size_t j = 0; j < p->n_addrs; j++)
                if (dc_multiaddr_format(&p->addrs[j], addr, sizeof(addr)) >= 0)
                    printf("%s%s", j > 0 ? "," : "", addr);
            putchar('\n');
        }
        break;
    }
    fflush(stdout);
    dc_free(o);
    finish_if_done(r);
}

static void start_ops(struct run *r)
{
    r->started = true;
    for (size_t i = 0; i < r->n_keys; i++) {
        struct op_ctx *o = dc_calloc(1, sizeof(*o));
        const struct key *k = &r->keys[i];
        int rc;

        if (o == NULL) {
            r->failed = true;
            break;
        }
        o->r = r;
        o->k = k;
        switch (r->cmd) {
        case CMD_GET:
            rc = dc_dht_get(r->dht, k->bytes, k->len, on_done, o);
            break;
        case CMD_PUT:
            if (r->signed_value != NULL)
                rc = dc_dht_put(r->dht, k->bytes, k->len, r->signed_value, r->signed_len, on_done,
                                o);
            else
                rc = dc_dht_put(r->dht, k->bytes, k->len, (const uint8_t *)r->value,
                                strlen(r->value), on_done, o);
            break;
        case CMD_PROVIDE:
            rc = dc_dht_provide(r->dht, k->bytes, k->len, false, on_done, o);
            break;
        default:
            rc = dc_dht_find_providers(r->dht, k->bytes, k->len, r->max_providers, on_done, o);
            break;
        }
        if (rc < 0) {
            fprintf(stderr, "democritus dht: %s: %s\n", k->text, dc_strerror(rc));
            dc_free(o);
            r->failed = true;
            continue;
        }
        r->ops_pending++;
    }
    finish_if_done(r);
}

static void on_timer(uv_timer_t *t)
{
    struct run *r = t->data;

    if (!r->started) {
        r->timed_out = true;
        uv_stop(&r->loop);
        return;
    }
    /* Operations are over: wait (briefly) for the last messages to leave. */
    if (r->ops_pending == 0 && (dc_dht_busy(r->dht) == 0 || uv_now(&r->loop) >= r->drain_until)) {
        uv_stop(&r->loop);
        return;
    }
    if (r->ops_pending > 0 && uv_now(&r->loop) >= r->drain_until) {
        r->timed_out = true;
        uv_stop(&r->loop);
    }
}

static void finish_if_done(struct run *r)
{
    if (r->ops_pending == 0 && r->started) {
        r->drain_until = uv_now(&r->loop) + 2000;
        uv_timer_start(&r->timer, on_timer, 20, 20);
    }
}

static void on_dialed(void *ud, int status, const struct dc_peer_id *peer)
{
    struct run *r = ud;

    r->dials_pending--;
    if (status == 0) {
        r->dials_ok++;
        /* A bootstrap peer is taken to be a DHT server without waiting for identify. */
        dc_dht_add_server(r->dht, peer);
    }
    if (r->dials_pending == 0 && !r->started) {
        if (r->dials_ok == 0) {
            fprintf(stderr, "democritus dht: no bootstrap peer could be reached\n");
            r->failed = true;
            uv_stop(&r->loop);
            return;
        }
        start_ops(r);
    }
}

static void on_identified(void *ud, const struct dc_peer_info *info)
{
    struct run *r = ud;

    if (r->dht != NULL)
        dc_dht_peer_identified(r->dht, info);
}

static void on_conn_error(void *ud, const char *remote, bool outbound, int err, const char *stage,
                          const char *hint)
{
    DC_UNUSED(ud);
    if (outbound)
        dc_log_debug("dht", "connection to %s failed during %s: %s%s%s", remote, stage,
                     dc_strerror(err), hint != NULL ? "; " : "", hint != NULL ? hint : "");
}

static int load_psk(const struct dc_config *cfg, struct dc_host_config *hc)
{
    if (cfg->private_swarm_key != NULL) {
        hc->use_psk = dc_base16_decode(cfg->private_swarm_key, 2 * DC_PNET_KEY_LEN, hc->psk,
                                       DC_PNET_KEY_LEN) == DC_PNET_KEY_LEN;
        return hc->use_psk ? 0 : DC_ECONFIG;
    }
    if (cfg->private_swarm_key_file != NULL) {
        char text[1024];
        FILE *f = fopen(cfg->private_swarm_key_file, "r");
        size_t n;
        int rc;

        if (f == NULL)
            return -errno;
        n = fread(text, 1, sizeof(text), f);
        fclose(f);
        rc = n == sizeof(text) ? DC_ECORRUPT : dc_pnet_psk_parse(text, n, hc->psk);
        explicit_bzero(text, sizeof(text));
        if (rc < 0)
            return rc;
        hc->use_psk = true;
    }
    return 0;
}

static void walk_close(uv_handle_t *h, void *arg)
{
    DC_UNUSED(arg);
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int cli_cmd_dht(int argc, char **argv)
{
    const char *timeout_text = NULL, *count_text = NULL;
    bool raw = false;
    const struct cli_opt opts[] = {
        {"timeout-ms", 0, CLI_VALUE, "N", "give up after N milliseconds (default 30000)", NULL,
         &timeout_text},
        {"count", 0, CLI_VALUE, "N", "findprovs: stop after N providers per key (default 20)", NULL,
         &count_text},
        {"raw", 0, CLI_BOOL, NULL, "get: print the stored value as it is (not a record's body)",
         &raw, NULL},
    };
    struct cli_ctx ctx = {
        .cmd = "dht",
        .usage = "dht put KEY VALUE | get KEY... | provide KEY... | findprovs KEY...\n"
                 "       [--bootstrap MULTIADDR]... [--ipfs-dht true] [options]",
        .summary = "Runs one DHT operation from a temporary client node that enters the DHT\n"
                   "through the bootstrap peers, prints the result and exits. put/get keys are\n"
                   "record keys such as /democritus/<kind>/<PeerId> or /ipns/<PeerId>;\n"
                   "provide/findprovs keys are CIDs (or text). put signs /democritus/ values\n"
                   "with this node's key (state dir), so the key must end with its PeerId\n"
                   "(`democritus id`); get prints the record's body (--raw: the stored bytes).\n"
                   "findprovs prints one line per provider: KEY PEERID ADDRS.",
        .opts = opts,
        .n_opts = DC_ARRAY_LEN(opts),
    };
    struct dc_host_config hc = {0};
    struct dc_dht_config dcfg = {0};
    struct dc_identity *id = NULL;
    struct dc_config cfg;
    struct run *r;
    uint64_t timeout_ms = 30000;
    size_t first_key = 1, n_keys;
    bool done;
    int rc, exit_code = 1;

    rc = cli_parse(&ctx, argc, argv, CLI_MAX_POS, &done);
    if (rc != 0 || done)
        return rc;
    if (ctx.n_pos < 2)
        return cli_usage_error(&ctx, "needs an operation and a key");
    r = dc_calloc(1, sizeof(*r));
    if (r == NULL)
        return 1;
    if (strcmp(ctx.pos[0], "put") == 0) {
        r->cmd = CMD_PUT;
        if (ctx.n_pos != 3) {
            dc_free(r);
            return cli_usage_error(&ctx, "put takes KEY VALUE");
        }
        r->value = ctx.pos[2];
        n_keys = 1;
    } else if (strcmp(ctx.pos[0], "get") == 0) {
        r->cmd = CMD_GET;
        n_keys = ctx.n_pos - 1;
    } else if (strcmp(ctx.pos[0], "provide") == 0) {
        r->cmd = CMD_PROVIDE;
        n_keys = ctx.n_pos - 1;
    } else if (strcmp(ctx.pos[0], "findprovs") == 0) {
        r->cmd = CMD_FINDPROVS;
        n_keys = ctx.n_pos - 1;
    } else {
        dc_free(r);
        return cli_usage_error(&ctx, "unknown operation '%s'", ctx.pos[0]);
    }
    for (size_t i = 0; i < n_keys; i++) {
        if (parse_key(ctx.pos[first_key + i], r->cmd == CMD_PROVIDE || r->cmd == CMD_FINDPROVS,
                      &r->keys[r->n_keys]) < 0) {
            dc_free(r);
            return cli_usage_error(&ctx, "bad key '%s'", ctx.pos[first_key + i]);
        }
        r->n_keys++;
    }
    if (count_text != NULL) {
        r->max_providers = (uint32_t)atoi(count_text);
        if (r->max_providers == 0 || r->max_providers > 64) {
            dc_free(r);
            return cli_usage_error(&ctx, "--count must be 1..64");
        }
    }
    if (timeout_text != NULL) {
        char *end;
        timeout_ms = strtoull(timeout_text, &end, 10);
        if (*end != '\0' || timeout_ms == 0) {
            dc_free(r);
            return cli_usage_error(&ctx, "--timeout-ms needs a positive number");
        }
    }
    rc = cli_load_config(&ctx, &cfg);
    if (rc != 0) {
        dc_free(r);
        return rc;
    }
    if (cfg.bootstrap_nodes.n == 0) {
        dc_config_cleanup(&cfg);
        dc_free(r);
        return cli_usage_error(&ctx, "no bootstrap peer: give --bootstrap MULTIADDR");
    }
    r->raw = raw;
    if (r->cmd == CMD_PUT && key_has_prefix(&r->keys[0], DC_DHT_RECORD_PREFIX) &&
        sign_put_value(&cfg, r) != 0)
        goto out_free;
    if (uv_loop_init(&r->loop) < 0)
        goto out_free;
    uv_timer_init(&r->loop, &r->timer);
    r->timer.data = r;
    if (dc_identity_generate(&id) < 0 || load_psk(&cfg, &hc) < 0) {
        fprintf(stderr, "democritus dht: cannot set up the identity or the swarm key\n");
        goto out_loop;
    }
    hc.loop = &r->loop;
    hc.identity = id;
    hc.agent_version = "democritus-dht/" DC_VERSION;
    hc.ev.on_identified = on_identified;
    hc.ev.on_conn_error = on_conn_error;
    hc.ud = r;
    rc = dc_host_new(&hc, &r->host);
    explicit_bzero(hc.psk, sizeof(hc.psk));
    if (rc < 0)
        goto out_loop;
    dcfg.host = r->host;
    dcfg.loop = &r->loop;
    dcfg.protocol = cfg.ipfs_dht ? DC_KAD_IPFS_PROTOCOL_ID : DC_KAD_PROTOCOL_ID;
    dcfg.client_mode = true;
    rc = dc_dht_new(&dcfg, &r->dht);
    if (rc < 0)
        goto out_host;
    for (size_t i = 0; i < cfg.bootstrap_nodes.n; i++) {
        struct dc_multiaddr ma;
        struct dc_multiaddr_error me;
        const char *a = cfg.bootstrap_nodes.items[i];

        if (dc_multiaddr_parse(a, &ma, &me) < 0) {
            fprintf(stderr, "democritus dht: bootstrap %s: %s at offset %zu: %s\n", a, me.component,
                    me.offset, me.reason);
            continue;
        }
        rc = dc_host_dial(r->host, &ma, 10000, on_dialed, r);
        if (rc < 0) {
            fprintf(stderr, "democritus dht: cannot dial %s: %s\n", a, dc_strerror(rc));
            continue;
        }
        r->dials_pending++;
    }
    if (r->dials_pending == 0)
        goto out_dht;
    {
        /* The overall deadline, in a second timer on the same callback path. */
        uv_timer_t *deadline = &r->timer;
        r->drain_until = uv_now(&r->loop) + timeout_ms;
        uv_timer_start(deadline, on_timer, timeout_ms, 0);
    }
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (r->timed_out)
        fprintf(stderr, "democritus dht: timed out after %llu ms\n",
                (unsigned long long)timeout_ms);
    else if (!r->failed && r->found == (int)r->n_keys)
        exit_code = 0;

out_dht:
    dc_dht_free(r->dht);
out_host:
    dc_host_free(r->host);
out_loop:
    uv_walk(&r->loop, walk_close, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&r->loop);
    dc_identity_free(id);
out_free:
    dc_config_cleanup(&cfg);
    dc_free(r->signed_value);
    dc_free(r);
    return exit_code;
}

/* ---- ping ------------------------------------------------------------------------------- */

struct ping_run {
    uv_loop_t loop;
    struct dc_host *host;
    struct dc_peer_id peer;
    uv_timer_t timer;
    int count, sent, ok;
    bool connected, identified, failed;
};

static void ping_next(struct ping_run *p);

static void on_pong(void *ud, int status, uint64_t rtt_us)
{
    struct ping_run *p = ud;
    char peer[DC_PEER_ID_STR_MAX];

    if (dc_peer_id_to_string(&p->peer, peer, sizeof(peer)) < 0)
        snprintf(peer, sizeof(peer), "?");
    if (status == 0) {
        p->ok++;
        printf("pong from %s: time=%.3f ms\n", peer, (double)rtt_us / 1000.0);
    } else {
        printf("ping to %s failed: %s\n", peer, dc_strerror(status));
    }
    fflush(stdout);
    ping_next(p);
}

static void ping_next(struct ping_run *p)
{
    if (p->sent >= p->count || dc_host_ping(p->host, &p->peer, on_pong, p) < 0) {
        uv_stop(&p->loop);
        return;
    }
    p->sent++;
}

static void ping_print_identity(struct ping_run *p)
{
    const struct dc_peer_info *pi = dc_host_peer_info(p->host, &p->peer);
    char peer[DC_PEER_ID_STR_MAX];

    if (dc_peer_id_to_string(&p->peer, peer, sizeof(peer)) < 0)
        snprintf(peer, sizeof(peer), "?");
    printf("peer %s\n", peer);
    if (pi != NULL && pi->identified) {
        printf("agent %s\nprotocol-version %s\nprotocols", pi->agent, pi->protocol_version);
        for (size_t i = 0; i < pi->n_protocols; i++)
            printf("%s%s", i > 0 ? "," : " ", pi->protocols[i]);
        putchar('\n');
    } else {
        printf("agent (no identify answer)\n");
    }
    fflush(stdout);
}

static void ping_on_timer(uv_timer_t *t)
{
    struct ping_run *p = t->data;

    if (!p->connected) {
        fprintf(stderr, "democritus ping: timed out\n");
        p->failed = true;
        uv_stop(&p->loop);
        return;
    }
    /* Identify did not answer in time: ping anyway. */
    if (!p->identified) {
        p->identified = true;
        ping_print_identity(p);
        ping_next(p);
    }
}

static void ping_on_identified(void *ud, const struct dc_peer_info *info)
{
    struct ping_run *p = ud;

    if (!p->connected || p->identified || !dc_peer_id_equal(&info->id, &p->peer))
        return;
    p->identified = true;
    uv_timer_stop(&p->timer);
    ping_print_identity(p);
    ping_next(p);
}

static void ping_on_dialed(void *ud, int status, const struct dc_peer_id *peer)
{
    struct ping_run *p = ud;

    if (status < 0) {
        fprintf(stderr, "democritus ping: cannot connect: %s\n", dc_strerror(status));
        p->failed = true;
        uv_stop(&p->loop);
        return;
    }
    p->connected = true;
    p->peer = *peer;
    /* Identify runs at once on every new connection; its answer may already be here. */
    {
        const struct dc_peer_info *pi = dc_host_peer_info(p->host, peer);
        if (pi != NULL && pi->identified) {
            ping_on_identified(p, pi);
            return;
        }
    }
    uv_timer_start(&p->timer, ping_on_timer, 3000, 0);
}

static void ping_on_conn_error(void *ud, const char *remote, bool outbound, int err,
                               const char *stage, const char *hint)
{
    DC_UNUSED(ud);
    if (outbound)
        fprintf(stderr, "democritus ping: connection to %s failed during %s: %s%s%s\n", remote,
                stage, dc_strerror(err), hint != NULL ? "; " : "", hint != NULL ? hint : "");
}

int cli_cmd_ping(int argc, char **argv)
{
    const char *count_text = NULL;
    const struct cli_opt opts[] = {
        {"count", 'n', CLI_VALUE, "N", "pings to send (default 3)", NULL, &count_text},
    };
    struct cli_ctx ctx = {
        .cmd = "ping",
        .usage = "ping MULTIADDR [-n N] [--private-swarm-key-file FILE] [options]",
        .summary = "Dials a libp2p peer from a temporary node, prints its identify answer\n"
                   "(agent, protocols) and the round trip of each /ipfs/ping/1.0.0 probe.",
        .opts = opts,
        .n_opts = DC_ARRAY_LEN(opts),
    };
    struct dc_host_config hc = {0};
    struct dc_identity *id = NULL;
    struct dc_multiaddr ma;
    struct dc_multiaddr_error me;
    struct dc_config cfg;
    struct ping_run *p;
    bool done;
    int rc, exit_code = 1;

    rc = cli_parse(&ctx, argc, argv, 1, &done);
    if (rc != 0 || done)
        return rc;
    if (ctx.n_pos != 1)
        return cli_usage_error(&ctx, "needs the peer's multiaddr");
    if (dc_multiaddr_parse(ctx.pos[0], &ma, &me) < 0)
        return cli_usage_error(&ctx, "%s: %s at offset %zu: %s", ctx.pos[0], me.component,
                               me.offset, me.reason);
    p = dc_calloc(1, sizeof(*p));
    if (p == NULL)
        return 1;
    p->count = 3;
    if (count_text != NULL) {
        p->count = atoi(count_text);
        if (p->count <= 0 || p->count > 1000) {
            dc_free(p);
            return cli_usage_error(&ctx, "--count must be 1..1000");
        }
    }
    rc = cli_load_config(&ctx, &cfg);
    if (rc != 0) {
        dc_free(p);
        return rc;
    }
    if (uv_loop_init(&p->loop) < 0)
        goto out_free;
    uv_timer_init(&p->loop, &p->timer);
    p->timer.data = p;
    if (dc_identity_generate(&id) < 0 || load_psk(&cfg, &hc) < 0) {
        fprintf(stderr, "democritus ping: cannot set up the identity or the swarm key\n");
        goto out_loop;
    }
    hc.loop = &p->loop;
    hc.identity = id;
    hc.agent_version = "democritus-ping/" DC_VERSION;
    hc.ev.on_identified = ping_on_identified;
    hc.ev.on_conn_error = ping_on_conn_error;
    hc.ud = p;
    rc = dc_host_new(&hc, &p->host);
    explicit_bzero(hc.psk, sizeof(hc.psk));
    if (rc < 0)
        goto out_loop;
    rc = dc_host_dial(p->host, &ma, 10000, ping_on_dialed, p);
    if (rc < 0) {
        fprintf(stderr, "democritus ping: cannot dial %s: %s\n", ctx.pos[0], dc_strerror(rc));
        goto out_host;
    }
    uv_timer_start(&p->timer, ping_on_timer, 15000, 0);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    if (!p->failed && p->ok == p->count)
        exit_code = 0;
out_host:
    dc_host_free(p->host);
out_loop:
    uv_walk(&p->loop, walk_close, NULL);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    (void)uv_loop_close(&p->loop);
    dc_identity_free(id);
out_free:
    dc_config_cleanup(&cfg);
    dc_free(p);
    return exit_code;
}
