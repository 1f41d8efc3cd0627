/* An agency's key set: Ed25519 signing, X25519 encryption, CurveZMQ transport.
 * Secret halves live in sodium_malloc'd memory and are wiped on destroy. The same
 * format serves the operator's trust anchor (role "trust-anchor") and the broker. */
#ifndef REFEX_KEYS_H
#define REFEX_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"

#define REFEX_ID_MAX 64

typedef struct {
    char agency[REFEX_ID_MAX];
    char role[REFEX_ID_MAX];
    uint8_t sign_pk[32];
    uint8_t enc_pk[32];
    uint8_t transport_pk[32];
} refex_pubkeys;

typedef struct {
    uint8_t sign_sk[64];
    uint8_t enc_sk[32];
    uint8_t transport_sk[32];
} refex_secret;

typedef struct {
    refex_pubkeys pub;
    refex_secret *sk; /* sodium_malloc'd */
} refex_keys;

/* Agency ids and roles: 1-63 of [a-z0-9-], starting with a letter or digit. */
int refex_id_valid(const char *id);

int refex_keys_new(const char *agency, const char *role, refex_keys **out) REFEX_NODISCARD;
void refex_keys_destroy(refex_keys **self_p);
/* Writes DIR/AGENCY.secret (0600) and DIR/AGENCY.public (0644). Refuses to overwrite. */
int refex_keys_save(const refex_keys *self, const char *dir) REFEX_NODISCARD;
/* Loads a .secret file; REFEX_E_PERM if group or others can read it. */
int refex_keys_load(const char *path, refex_keys **out, char *err, size_t errlen) REFEX_NODISCARD;
/* Loads the public half from a .public or .secret file. */
int refex_pubkeys_load(const char *path, refex_pubkeys *out, char *err,
                       size_t errlen) REFEX_NODISCARD;

#endif
