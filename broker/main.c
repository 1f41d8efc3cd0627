/* refex-broker command line: the shared daemon main with the broker's loop. */
#include "broker.h"
#include "daemon.h"
#include "store.h"

static const char USAGE[] =
    "usage: refex-broker -c FILE [-n] [-f] [--init-store]\n"
    "\n"
    "Routes signed, end-to-end encrypted refex envelopes between agency agents.\n"
    "\n"
    "  -c FILE  configuration file (see deploy/broker.conf.example)\n"
    "  -n       check the configuration, keys and directory, then exit\n"
    "  -f       run in the foreground (the default; refex daemons never fork,\n"
    "           run them under systemd or another supervisor)\n"
    "  --init-store  if the store file exists but lacks its tables (damaged,\n"
    "           replaced, or its WAL lost), move it aside (queue.db.damaged-TIME)\n"
    "           and begin a new store; without it such a store is refused. A whole\n"
    "           store is left as it is. Agents send again every message they hold\n"
    "           no receipt for. Not with -n\n"
    "  -h       this help\n"
    "  --version  print the version and exit\n"
    "\n"
    "Prints 'READY <endpoint>' on standard output once listening. Logs go to\n"
    "standard error. SIGTERM/SIGINT stop cleanly; SIGHUP reloads the directory.\n"
    "Exit status: 0 clean stop or config OK, 1 runtime failure, 2 usage or\n"
    "configuration error.\n";

static int open_broker(const refex_config *cfg, unsigned flags, void **out, char *err,
                       size_t errlen)
{
    broker *b = NULL;
    int rc =
        broker_open(cfg, flags & REFEX_DAEMON_INIT_STORE ? REFEX_STORE_INIT : 0, &b, err, errlen);
    *out = b;
    return rc;
}

static int run_broker(void *self)
{
    return broker_run(self);
}

static void close_broker(void **self_p)
{
    broker *b = *self_p;
    broker_close(&b);
    *self_p = NULL;
}

int main(int argc, char **argv)
{
    static const refex_daemon d = {"refex-broker", USAGE,        open_broker,
                                   run_broker,     close_broker, REFEX_DAEMON_INIT_STORE};
    return refex_daemon_main(argc, argv, &d);
}
