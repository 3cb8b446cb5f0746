/* SPDX-License-Identifier: MIT */
/*
 * democritus/client.h - libdemocritus, the C client of a Democritus node's REST API.
 *
 * A small blocking client over libcurl: ask a question and get the whole answer
 * (dc_client_ask), or stream the answer token by token through a callback that may stop it
 * (dc_client_chat_stream), and read or call the admin routes (dc_client_get, dc_client_post).
 * It speaks the node's OpenAI-compatible routes, so it works against any server that speaks
 * POST /v1/chat/completions with SSE streaming.
 *
 *     struct dc_client *c;
 *     struct dc_client_message msg = {"user", "Why is the sky blue?"};
 *     struct dc_client_chat req = DC_CLIENT_CHAT_INIT;
 *     struct dc_client_reply reply;
 *
 *     if (dc_client_new("http://127.0.0.1:8080", getenv("DEMOCRITUS_KEY"), &c) != 0)
 *         return 1;
 *     req.messages = &msg;
 *     req.n_messages = 1;
 *     if (dc_client_ask(c, &req, &reply) == 0)
 *         printf("%s\n(%u tokens)\n", reply.text, reply.usage.completion_tokens);
 *     else
 *         fprintf(stderr, "ask: %s\n", dc_client_error(c));
 *     dc_client_reply_cleanup(&reply);
 *     dc_client_free(c);
 *
 * Errors. Every call returns 0 or a negative DC_CLIENT_E* code, and dc_client_error() then
 * holds one printable line saying what happened: for DC_CLIENT_ECONNECT the URL and the
 * system's reason ("Connection refused"); for DC_CLIENT_EHTTP the status and the server's
 * OpenAI error message ("HTTP 401: Incorrect API key provided"), with dc_client_http_status()
 * and dc_client_error_code() ("invalid_api_key") for programs that branch on them.
 *
 * Threads. A client is one connection (kept alive between calls) and belongs to one thread at
 * a time; use one client per thread. The library initialises libcurl once, thread-safely, on
 * the first dc_client_new(), and never tears it down.
 *
 * Limits. A response body over 64 MiB, or one SSE line over 1 MiB, ends the call with
 * DC_CLIENT_EPROTO; a connection is given 10 s to open. There is no overall deadline unless
 * dc_client_set_timeout_ms() sets one.
 */
#ifndef DEMOCRITUS_CLIENT_H
#define DEMOCRITUS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define DC_CLIENT_MUST_CHECK __attribute__((warn_unused_result))
#else
#define DC_CLIENT_MUST_CHECK
#endif

/* Return codes (0 is success). */
#define DC_CLIENT_EINVAL    (-1) /* a bad argument: NULL, empty URL, no messages */
#define DC_CLIENT_ENOMEM    (-2) /* out of memory */
#define DC_CLIENT_ECONNECT  (-3) /* could not reach the server (refused, no route, DNS) */
#define DC_CLIENT_EHTTP     (-4) /* the server answered an HTTP error (see dc_client_error) */
#define DC_CLIENT_EPROTO    (-5) /* the answer is not what the API promises, or too large */
#define DC_CLIENT_ETIMEDOUT (-6) /* the deadline of dc_client_set_timeout_ms() passed */
#define DC_CLIENT_EIO       (-7) /* the connection broke mid-answer, or another transfer error */

/* A static description of a DC_CLIENT_E* code ("connection failed", ...). */
const char *dc_client_strerror(int code);

struct dc_client;

/*
 * Creates a client for the server at 'url' ("http://127.0.0.1:8080"; a trailing slash is
 * ignored; routes are appended to it). 'api_key' (NULL or "" for none) is sent as
 * "Authorization: Bearer <key>". Both are copied; nothing is sent yet. Returns 0 with '*out'
 * owning the client (release with dc_client_free), DC_CLIENT_EINVAL for a NULL or empty URL
 * or one that is not http:// or https://, DC_CLIENT_ENOMEM.
 */
DC_CLIENT_MUST_CHECK int dc_client_new(const char *url, const char *api_key,
                                       struct dc_client **out);

/* Closes the connection and frees the client (the key is wiped). NULL is a no-op. */
void dc_client_free(struct dc_client *c);

/* Bounds each later call to 'ms' milliseconds in all (0, the default: no bound). */
void dc_client_set_timeout_ms(struct dc_client *c, uint32_t ms);

/* The last error as one line, "" after a success. Borrowed: valid until the next call. */
const char *dc_client_error(const struct dc_client *c);

/* The HTTP status of the last answer (0 when none arrived). */
int dc_client_http_status(const struct dc_client *c);

/* The "code" of the last OpenAI error object ("invalid_api_key", "model_not_found", ...), or
 * "" when there was none. Borrowed: valid until the next call. */
const char *dc_client_error_code(const struct dc_client *c);

/* One chat message; both strings borrowed for the call. */
struct dc_client_message {
    const char *role; /* "system", "user" or "assistant" */
    const char *content;
};

/* A chat request. Start from DC_CLIENT_CHAT_INIT so unset fields mean "server default". */
struct dc_client_chat {
    const char *model; /* model id, PeerId, "local", "swarm" (NULL: "local") */
    const struct dc_client_message *messages;
    size_t n_messages;
    int32_t max_tokens; /* <= 0: the server's default */
    double temperature; /* < 0: the server's default */
    int64_t seed;       /* < 0: random */
    uint32_t experts;   /* model "swarm": experts to ask (1-8); 0: the daemon's default */
};

#define DC_CLIENT_CHAT_INIT                                                                        \
    {                                                                                              \
        NULL, NULL, 0, 0, -1.0, -1, 0                                                              \
    }

struct dc_client_usage {
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
    uint32_t total_tokens;
};

/*
 * What a chat produced. Owned by the caller after a call that filled it; release with
 * dc_client_reply_cleanup() (also safe after a failed call, which leaves it zeroed).
 */
struct dc_client_reply {
    char *text;          /* the whole answer, NUL-terminated ("" when empty) */
    size_t text_len;     /* its length in bytes */
    char *finish_reason; /* "stop", "length", "stopped" (the callback ended it), ... */
    char *model;         /* the model that answered, as the server names it (or NULL) */
    char *id;            /* the completion id (or NULL) */
    struct dc_client_usage usage;
    bool has_usage; /* the server reported usage */
};

void dc_client_reply_cleanup(struct dc_client_reply *r);

/*
 * Asks and waits for the whole answer (POST /v1/chat/completions, stream false). Fills '*out'
 * (see struct dc_client_reply). Returns 0; DC_CLIENT_EINVAL; DC_CLIENT_ECONNECT;
 * DC_CLIENT_EHTTP with the server's message; DC_CLIENT_EPROTO; DC_CLIENT_ETIMEDOUT;
 * DC_CLIENT_EIO; DC_CLIENT_ENOMEM.
 */
DC_CLIENT_MUST_CHECK int dc_client_ask(struct dc_client *c, const struct dc_client_chat *req,
                                       struct dc_client_reply *out);

/*
 * Called with each piece of generated text as it arrives ('text' is 'len' bytes, borrowed for
 * the call, NUL-terminated; pieces follow the model's tokens, so one piece may be part of a
 * UTF-8 character only when the server splits one, which ours never does). Return 0 to go on,
 * anything else to stop: the connection is dropped, the server cancels the generation, and the
 * call returns 0 with finish_reason "stopped".
 */
typedef int (*dc_client_token_cb)(void *ud, const char *text, size_t len);

/*
 * Asks with stream true and include_usage, calling 'cb' for each piece of text. '*out' (may be
 * NULL) receives the whole text, the finish reason and the usage, as dc_client_ask() would.
 * Returns as dc_client_ask(); an error event inside the stream gives DC_CLIENT_EHTTP with its
 * message, and a stream cut before "data: [DONE]" gives DC_CLIENT_EIO (the text so far is in
 * '*out').
 */
DC_CLIENT_MUST_CHECK int dc_client_chat_stream(struct dc_client *c,
                                               const struct dc_client_chat *req,
                                               dc_client_token_cb cb, void *ud,
                                               struct dc_client_reply *out);

/*
 * GET 'path' (e.g. "/api/peers", "/api/health") and returns the body in '*body' (heap,
 * NUL-terminated, '*len' bytes when 'len' is not NULL; release with free()). Any 2xx status is
 * success; the body is not parsed, so it may be any content type. Returns 0 or as
 * dc_client_ask() (an HTTP error status gives DC_CLIENT_EHTTP with the error object's message
 * when the body has one).
 */
DC_CLIENT_MUST_CHECK int dc_client_get(struct dc_client *c, const char *path, char **body,
                                       size_t *len);

/* POST 'json' (a JSON text, borrowed) to 'path'; otherwise as dc_client_get(). */
DC_CLIENT_MUST_CHECK int dc_client_post(struct dc_client *c, const char *path, const char *json,
                                        char **body, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
