/* The common command line of refex daemons: -c FILE, -n (check and exit), -f
 * (foreground, the default), -h. Loads the config, opens the daemon, runs its loop. */
#ifndef REFEX_DAEMON_H
#define REFEX_DAEMON_H

#include <stddef.h>

#include "refex/config.h"

typedef struct {
    const char *name;  /* e.g. "refex-broker": log ident and messages */
    const char *usage; /* full --help text */
    int (*open)(const refex_config *cfg, void **out, char *err, size_t errlen);
    int (*run)(void *self);
    void (*close)(void **self_p);
} refex_daemon;

/* Returns the process exit status: 0 clean stop or config OK, 1 runtime failure,
 * 2 usage or configuration error. */
int refex_daemon_main(int argc, char **argv, const refex_daemon *d);

#endif
