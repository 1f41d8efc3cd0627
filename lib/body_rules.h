/* Required fields per message type: what a body must carry before it is sealed, and what
 * a receiver refuses without. One table, used by the sending and the receiving agent alike
 * (docs/protocol.md section 10). Not the body's encoding (body.c). */
#ifndef REFEX_BODY_RULES_H
#define REFEX_BODY_RULES_H

#include <stddef.h>

#include "refex.pb-c.h"
#include "refex/error.h"

/* REFEX_OK if b carries every field its type requires; otherwise REFEX_E_INVAL with
 * "missing required fields: a.b, c" in detail, naming every missing field path (relative to
 * the type's body message). An UNSPECIFIED (or unknown) enum value and an empty or blank
 * string count as missing. */
int refex_body_check(const Refex__V1__Body *b, char *detail, size_t dlen) REFEX_NODISCARD;

#endif
