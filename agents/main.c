/* refex-agent command line: the shared daemon main with the agent's loop. */
#include "agent.h"
#include "daemon.h"

static const char USAGE[] =
    "usage: refex-agent -c FILE [-n] [-f]\n"
    "\n"
    "The per-agency refex daemon: seals and sends what this agency shares, verifies\n"
    "and decrypts what it receives, and records both in its audit log.\n"
    "\n"
    "  -c FILE  configuration file (see agents/profiles/*.conf)\n"
    "  -n       check the configuration, keys and directory, then exit\n"
    "  -f       run in the foreground (the default; refex daemons never fork)\n"
    "  -h       this help\n"
    "  --version  print the version and exit\n"
    "\n"
    "Prints 'READY <agency>' on standard output once the broker has welcomed it.\n"
    "Logs go to standard error. SIGTERM/SIGINT stop cleanly.\n"
    "Exit status: 0 clean stop or config OK, 1 runtime failure, 2 usage or\n"
    "configuration error.\n";

static int open_agent(const refex_config *cfg, unsigned flags, void **out, char *err, size_t errlen)
{
    agent *a = NULL;
    (void)flags; /* takes none of its own */
    int rc = agent_open(cfg, &a, err, errlen);
    *out = a;
    return rc;
}

static int run_agent(void *self)
{
    return agent_run(self);
}

static void close_agent(void **self_p)
{
    agent *a = *self_p;
    agent_close(&a);
    *self_p = NULL;
}

int main(int argc, char **argv)
{
    static const refex_daemon d = {"refex-agent", USAGE, open_agent, run_agent, close_agent, 0};
    return refex_daemon_main(argc, argv, &d);
}
