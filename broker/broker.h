/* refex-broker: authenticates agencies (CurveZMQ + ZAP against the signed directory),
 * checks envelopes it can see the outside of, queues and routes them. It never holds a
 * key that opens a body. */
#ifndef REFEX_BROKER_H
#define REFEX_BROKER_H

#include "config.h"

typedef struct broker broker;

int broker_open(const refex_config *cfg, broker **out, char *err, size_t errlen);
/* Runs the event loop until SIGTERM/SIGINT. Prints "READY <endpoint>" on stdout once
 * bound. */
int broker_run(broker *b);
void broker_close(broker **b_p);

#endif
