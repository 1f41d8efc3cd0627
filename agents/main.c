/* refex-agent command line: flags, config, then the event loop in agent.c. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "refex/log.h"
#include "refex/util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: refex-agent -c FILE [-n] [-f]\n"
            "\n"
            "The per-agency refex daemon: seals and sends what this agency shares, verifies\n"
            "and decrypts what it receives, and records both in its audit log.\n"
            "\n"
            "  -c FILE  configuration file (see agents/profiles/*.conf)\n"
            "  -n       check the configuration, keys and directory, then exit\n"
            "  -f       run in the foreground (the default; refex daemons never fork)\n"
            "  -h       this help\n"
            "\n"
            "Prints 'READY <agency>' on standard output once the broker has welcomed it.\n"
            "Logs go to standard error. SIGTERM/SIGINT stop cleanly.\n"
            "Exit status: 0 clean stop or config OK, 1 runtime failure, 2 usage or\n"
            "configuration error.\n");
}

int main(int argc, char **argv)
{
    const char *conf = NULL;
    int check = 0, opt;
    char err[1024] = "";
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    while ((opt = getopt(argc, argv, "c:nfh")) != -1) {
        switch (opt) {
        case 'c':
            conf = optarg;
            break;
        case 'n':
            check = 1;
            break;
        case 'f':
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!conf || optind != argc) {
        usage(stderr);
        return 2;
    }
    refex_log_set_ident("refex-agent");
    if (refex_init() != REFEX_OK) {
        refex_log_error("libsodium failed to initialise");
        return 1;
    }
    refex_config *cfg = NULL;
    if (refex_config_open(conf, &cfg, err, sizeof err) != REFEX_OK) {
        refex_log_error("%s", err);
        return 2;
    }
    agent *a = NULL;
    int rc = agent_open(cfg, &a, err, sizeof err);
    refex_config_close(&cfg);
    if (rc != REFEX_OK) {
        refex_log_error("%s", err);
        return 2;
    }
    if (check) {
        printf("refex-agent: configuration OK\n");
        agent_close(&a);
        return 0;
    }
    rc = agent_run(a);
    agent_close(&a);
    return rc == REFEX_OK ? 0 : 1;
}
