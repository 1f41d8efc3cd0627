/* Shared main() of refex-broker and refex-agent, so both take the same flags and report
 * configuration errors the same way. The event loops themselves live with each daemon. */
#include "refex/daemon.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "refex/log.h"
#include "refex/util.h"

int refex_daemon_main(int argc, char **argv, const refex_daemon *d)
{
    const char *conf = NULL;
    int check = 0, opt;
    char err[1024] = "";
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        fputs(d->usage, stdout);
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
            fputs(d->usage, stdout);
            return 0;
        default:
            fputs(d->usage, stderr);
            return 2;
        }
    }
    if (!conf || optind != argc) {
        fputs(d->usage, stderr);
        return 2;
    }
    refex_log_set_ident(d->name);
    if (refex_init() != REFEX_OK) {
        refex_log_error("libsodium failed to initialise");
        return 1;
    }
    refex_config *cfg = NULL;
    if (refex_config_open(conf, &cfg, err, sizeof err) != REFEX_OK) {
        refex_log_error("%s", err);
        return 2;
    }
    void *self = NULL;
    int rc = d->open(cfg, &self, err, sizeof err);
    refex_config_close(&cfg);
    if (rc != REFEX_OK) {
        refex_log_error("%s", err);
        return 2;
    }
    if (check) {
        printf("%s: configuration OK\n", d->name);
        d->close(&self);
        return 0;
    }
    rc = d->run(self);
    d->close(&self);
    return rc == REFEX_OK ? 0 : 1;
}
