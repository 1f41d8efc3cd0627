/* ZAP handler of refex-broker. */
#ifndef REFEX_BROKER_ZAP_H
#define REFEX_BROKER_ZAP_H

#include "directory.h"

/* Answers one ZAP request waiting on the REP socket bound to inproc://zeromq.zap.01. */
void broker_zap_handle(void *zap, const refex_directory *dir);

#endif
