/* Message bodies: the plaintext inside an envelope. Converts between a message type plus
 * a JSON object and a serialized Body, and pulls out what the audit log records (lawful
 * basis, consent, purpose, practitioner reference). Knows nothing about keys. */
#ifndef REFEX_BODY_H
#define REFEX_BODY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "refex.pb-c.h"
#include "refex/error.h"

typedef struct {
    const char *practitioner; /* reference only, never the name */
    const char *purpose;
    const char *article6;
    const char *article9;
    const char *consent;
    const char *case_ref;        /* the case reference a body names, "" if none */
    char subjects[512];          /* pseudonymous references of the people concerned, "a,b" */
    const char *conversation_id; /* correlates a referral with its decision, "" if none */
    const char *reply_to;        /* a decision: the referral's message id; a response: the request
                                    id; "" otherwise */
    const char *request_id;      /* an information request's own id, "" otherwise */
    const char *due_date;        /* an information request's due date (YYYY-MM-DD), "" otherwise */
    const char *decision;        /* a decision's Decision name, "" otherwise */
} refex_body_meta;

/* "REFERRAL" or "referral" -> REFEX__V1__MESSAGE_TYPE__REFERRAL; 0 if unknown. */
int refex_message_type_parse(const char *name);
/* Enum name such as "REFERRAL"; "UNKNOWN" for anything else. */
const char *refex_message_type_name(int type);

/* JSON object of the type's body (e.g. a Referral) -> packed Body. */
int refex_body_pack_json(int type, const json_t *obj, uint8_t **out, size_t *out_len, char *err,
                         size_t errlen) REFEX_NODISCARD;
/* Packed Body -> unpacked, checked to carry the member that matches type (else
 * E_TYPE_MISMATCH) and to hold only strict UTF-8 strings (else E_MALFORMED). */
int refex_body_unpack(int type, const uint8_t *buf, size_t len,
                      Refex__V1__Body **out) REFEX_NODISCARD;
/* The body's member as a JSON object. */
int refex_body_to_json(const Refex__V1__Body *b, json_t **out) REFEX_NODISCARD;
void refex_body_meta_get(const Refex__V1__Body *b, refex_body_meta *m);

#endif
