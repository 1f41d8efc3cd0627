/* refex-broker command line: flags, config, then the event loop in broker.c. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "refex/log.h"
#include "refex/util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: refex-broker -c FILE [-n] [-f]\n"
            "\n"
            "Routes signed, end-to-end encrypted refex envelopes between agency agents.\n"
            "\n"
            "  -c FILE  configuration file (see deploy/broker.conf.example)\n"
            "  -n       check the configuration, keys and directory, then exit\n"
            "  -f       run in the foreground (the default; refex daemons never fork,\n"
            "           run them under systemd or another supervisor)\n"
            "  -h       this help\n"
            "\n"
            "Prints 'READY <endpoint>' on standard output once listening. Logs go to\n"
            "standard error. SIGTERM/SIGINT stop cleanly; SIGHUP reloads the directory.\n"
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
    refex_log_set_ident("refex-broker");
    if (refex_init() != REFEX_OK) {
        refex_log_error("libsodium failed to initialise");
        return 1;
    }
    refex_config *cfg = NULL;
    if (refex_config_open(conf, &cfg, err, sizeof err) != REFEX_OK) {
        refex_log_error("%s", err);
        return 2;
    }
    broker *b = NULL;
    int rc = broker_open(cfg, &b, err, sizeof err);
    refex_config_close(&cfg);
    if (rc != REFEX_OK) {
        refex_log_error("%s", err);
        return 2;
    }
    if (check) {
        printf("refex-broker: configuration OK\n");
        broker_close(&b);
        return 0;
    }
    rc = broker_run(b);
    broker_close(&b);
    return rc == REFEX_OK ? 0 : 1;
}
