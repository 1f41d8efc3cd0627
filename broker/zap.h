/* ZAP handler of refex-broker. */
#ifndef REFEX_BROKER_ZAP_H
#define REFEX_BROKER_ZAP_H

#include "directory.h"
#include "log.h"

/* The connection property (zmq_msg_gets) in which ZAP names the transport key it admitted,
 * 64 hex digits. ZAP properties take precedence over any a client sends in its own
 * handshake metadata, so a client cannot forge it (libzmq stream_engine_base mechanism_ready
 * inserts ZAP properties before ZMTP ones into one std::map). admission.c checks it against
 * the directory on every frame. */
#define BROKER_ZAP_KEY_PROPERTY "X-Refex-Transport-Key"

/* Answers one ZAP request waiting on the REP socket bound to inproc://zeromq.zap.01. */
/* Denials are logged through gate (all under one source, "zap": any peer can cause them). */
void broker_zap_handle(void *zap, const refex_directory *dir, refex_log_gate *gate);

#endif
