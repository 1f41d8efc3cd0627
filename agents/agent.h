/* refex-agent: one agency's daemon. Holds the agency's keys, seals what the agency
 * sends, verifies and opens what it receives, keeps the outbox, inbox and audit log in
 * one SQLite database, and serves the local CLI on an ipc:// control socket. */
#ifndef REFEX_AGENT_H
#define REFEX_AGENT_H

#include "config.h"

typedef struct agent agent;

int agent_open(const refex_config *cfg, agent **out, char *err, size_t errlen);
/* Runs until SIGTERM/SIGINT. Prints "READY <agency>" on stdout after the broker's
 * WELCOME. */
int agent_run(agent *a);
void agent_close(agent **a_p);

#endif
