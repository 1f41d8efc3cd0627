/* Admission after the handshake: ZAP (zap.c) admits a connection once, at its handshake;
 * this module makes that admission hold for the connection's whole life, against the
 * directory in force now. */
#ifndef REFEX_BROKER_ADMISSION_H
#define REFEX_BROKER_ADMISSION_H

#include "broker.h"

/* Checks a frame's connection before the frame is read: the agency it authenticated as must
 * still be listed, not revoked, inside its validity period, and still hold the transport key
 * the connection was admitted with (p->key_hex: the BROKER_ZAP_KEY_PROPERTY of the frame). If
 * not, answers ERROR E_REVOKED, ends any session of that connection and returns 1 (the
 * caller drops the frame); 0 if the frame may go on. */
int admission_refuse(broker *b, const peer *p);

/* After a directory reload: ends at once, with an ERROR E_REVOKED to each, the session of
 * every agency the new directory no longer admits (removed, revoked, expired, or listed
 * with another transport key than the directory its session was admitted under). */
void admission_sweep(broker *b);

/* From the loop, at most every ADMISSION_EVERY_MS: ends the sessions of agencies whose
 * validity ran out (or that the directory otherwise no longer admits) without a reload. */
#define ADMISSION_EVERY_MS 1000
void admission_tick(broker *b);

#endif
