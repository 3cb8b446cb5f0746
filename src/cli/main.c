/* SPDX-License-Identifier: MIT */
/*
 * main.c - `democritus <command>`: dispatches to one function per command (cmd_*.c). Unknown
 * commands print the usage and exit 2.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"daemon", cli_cmd_daemon, "run a node (P2P host, model engine, APIs)"},
    {"ask", cli_cmd_ask, "ask the running daemon (and its swarm) a question"},
    {"generate", cli_cmd_generate, "run a local GGUF model directly, without a daemon"},
    {"dht", cli_cmd_dht, "dht put|get|provide|findprovs: one DHT operation via bootstrap peers"},
    {"ping", cli_cmd_ping, "ping a libp2p peer by multiaddr (identify + /ipfs/ping/1.0.0)"},
    {"peers", cli_cmd_peers, "peers list: the running daemon's peers"},
    {"experts", cli_cmd_experts, "experts list: the experts the running daemon knows"},
    {"reputation", cli_cmd_reputation, "reputation show: what this node thinks of its peers"},
    {"ledger", cli_cmd_ledger, "ledger show: credits earned and spent"},
    {"models", cli_cmd_models, "models list | pull URL: the local model registry"},
    {"benchmark", cli_cmd_benchmark, "benchmark engine: measure inference speed"},
    {"id", cli_cmd_id, "print this node's PeerId (creates the key on first use)"},
    {"keygen", cli_cmd_keygen, "create the node's identity key (--force replaces it)"},
    {"config", cli_cmd_config, "config show | example | docs"},
    {"version", cli_cmd_version, "print the version"},
};

static void usage(FILE *f)
{
    fputs("usage: democritus <command> [options]\n\n"
          "A node of a peer-to-peer swarm of language-model experts.\n\ncommands:\n",
          f);
    for (size_t i = 0; i < DC_ARRAY_LEN(commands); i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fputs("\nRun 'democritus <command> --help' for a command's options.\n", f);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0)
        return cli_cmd_version(0, argv + 2);
    for (size_t i = 0; i < DC_ARRAY_LEN(commands); i++) {
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 2, argv + 2);
    }
    fprintf(stderr, "democritus: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
