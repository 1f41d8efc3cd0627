/* The broker as a witness of the agents' audit logs: it cosigns an agency's checkpoint only
 * if it is consistent with the last one it cosigned for that agency, so a rewritten,
 * truncated or forked log is caught. */
#ifndef REFEX_BROKER_WITNESS_H
#define REFEX_BROKER_WITNESS_H

#include <stddef.h>
#include <stdint.h>

#include "refex.pb-c.h"
#include "directory.h"
#include "refex/error.h"
#include "keys.h"

typedef struct witness witness;

int witness_open(const char *path, witness **out, char *err, size_t errlen);
void witness_close(witness **w_p);
/* Checks and cosigns; on success *cosigned is the cosigned note (malloc'd). If the agent's
 * proof starts from another witnessed size than the one the witness holds (it missed a
 * COSIGNED, or the witness was restored from a backup), the witness's latest cosigned note
 * is returned instead, so the agent can prove consistency from it next time. On refusal
 * returns REFEX_E_TAMPERED (inconsistent), REFEX_E_BAD_SIGNATURE or REFEX_E_MALFORMED, and
 * explains in why. */
int witness_submit(witness *w, const refex_directory *dir, const refex_keys *broker,
                   const char *agency, const Refex__V1__CheckpointSubmit *cp, char **cosigned,
                   uint64_t *size, char *why, size_t whylen);

#endif
