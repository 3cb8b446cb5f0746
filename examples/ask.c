/* SPDX-License-Identifier: MIT */
/*
 * ask.c - the smallest libdemocritus program: ask a Democritus node (or any OpenAI-compatible
 * server) one question and print the answer, streamed or whole.
 *
 *     dc-ask-example URL "QUESTION" [--stream]
 *
 * The API key, if the server wants one, comes from the DEMOCRITUS_API_KEY environment
 * variable. Exit status: 0 answered, 1 the call failed (one line on stderr), 2 usage.
 */
#include <democritus/client.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints each piece as it arrives; returning 0 lets the stream go on. */
static int on_token(void *ud, const char *text, size_t len)
{
    (void)ud;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    struct dc_client *c;
    struct dc_client_message msg;
    struct dc_client_chat req = DC_CLIENT_CHAT_INIT;
    struct dc_client_reply reply;
    bool stream = argc == 4 && strcmp(argv[3], "--stream") == 0;
    int rc;

    if (argc != 3 && !stream) {
        fprintf(stderr, "usage: %s URL \"QUESTION\" [--stream]\n", argv[0]);
        return 2;
    }
    rc = dc_client_new(argv[1], getenv("DEMOCRITUS_API_KEY"), &c);
    if (rc != 0) {
        fprintf(stderr, "ask: %s: %s\n", argv[1], dc_client_strerror(rc));
        return 2;
    }
    msg.role = "user";
    msg.content = argv[2];
    req.messages = &msg;
    req.n_messages = 1;
    req.max_tokens = 32;
    if (stream)
        rc = dc_client_chat_stream(c, &req, on_token, NULL, &reply);
    else
        rc = dc_client_ask(c, &req, &reply);
    if (rc != 0) {
        fprintf(stderr, "ask: %s\n", dc_client_error(c));
    } else {
        if (!stream)
            fputs(reply.text, stdout);
        printf("\n[%s; %u prompt + %u completion tokens]\n",
               reply.finish_reason != NULL ? reply.finish_reason : "?", reply.usage.prompt_tokens,
               reply.usage.completion_tokens);
    }
    dc_client_reply_cleanup(&reply);
    dc_client_free(c);
    return rc == 0 ? 0 : 1;
}
