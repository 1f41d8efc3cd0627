/* ZeroMQ plumbing shared by the broker, the agent and tests: CurveZMQ socket setup,
 * sending frames (with a ROUTER routing id when given), receiving one frame, and
 * socket-monitor events. zmq errors are translated here. */
#ifndef REFEX_LINK_H
#define REFEX_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "refex.pb-c.h"
#include "refex/error.h"
#include "keys.h"

#define REFEX_ZAP_DOMAIN "refex"

int refex_link_curve_server(void *sock, const refex_keys *k) REFEX_NODISCARD;
int refex_link_curve_client(void *sock, const refex_keys *k,
                            const uint8_t server_pk[32]) REFEX_NODISCARD;
/* Common options: linger, heartbeats, reconnect backoff, hard size limit. */
void refex_link_tune(void *sock, size_t max_frame);

/* Sends f (version is stamped). rid may be NULL for DEALER sockets. Never blocks:
 * REFEX_E_UNAVAILABLE if the peer is gone, REFEX_E_BUSY if its queue is full. */
int refex_link_send(void *sock, const void *rid, size_t rid_len,
                    Refex__V1__Frame *f) REFEX_NODISCARD;
/* Sends the command m as a frame of the given kind (see refex_frame_wrap). */
int refex_link_send_msg(void *sock, const void *rid, size_t rid_len,
                        Refex__V1__Frame__KindCase kind, const ProtobufCMessage *m) REFEX_NODISCARD;
int refex_link_send_error(void *sock, const void *rid, size_t rid_len, int code,
                          const char *detail);
int refex_link_send_rejected(void *sock, const void *rid, size_t rid_len, const uint8_t *id,
                             int code, const char *detail);

/* Starts a monitor on sock; *mon_out is a PAIR socket to poll for events. */
int refex_link_monitor(void *ctx, void *sock, void **mon_out) REFEX_NODISCARD;
/* Reads one monitor event (non-blocking); returns the event id or -1. */
int refex_link_monitor_event(void *mon, int *value_out);
/* The same, with the event's endpoint address in ep ("" if it had none). */
int refex_link_monitor_event_ep(void *mon, int *value_out, char *ep, size_t eplen);

#endif
