/* refex-broker command line: the shared daemon main with the broker's loop. */
#include "broker.h"
#include "daemon.h"

static const char USAGE[] =
    "usage: refex-broker -c FILE [-n] [-f]\n"
    "\n"
    "Routes signed, end-to-end encrypted refex envelopes between agency agents.\n"
    "\n"
    "  -c FILE  configuration file (see deploy/broker.conf.example)\n"
    "  -n       check the configuration, keys and directory, then exit\n"
    "  -f       run in the foreground (the default; refex daemons never fork,\n"
    "           run them under systemd or another supervisor)\n"
    "  -h       this help\n"
    "  --version  print the version and exit\n"
    "\n"
    "Prints 'READY <endpoint>' on standard output once listening. Logs go to\n"
    "standard error. SIGTERM/SIGINT stop cleanly; SIGHUP reloads the directory.\n"
    "Exit status: 0 clean stop or config OK, 1 runtime failure, 2 usage or\n"
    "configuration error.\n";

static int open_broker(const refex_config *cfg, void **out, char *err, size_t errlen)
{
    broker *b = NULL;
    int rc = broker_open(cfg, &b, err, errlen);
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
    static const refex_daemon d = {"refex-broker", USAGE, open_broker, run_broker, close_broker};
    return refex_daemon_main(argc, argv, &d);
}
