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
/* Writes DIR/AGENCY.secret (0600, created O_EXCL|O_NOFOLLOW: REFEX_E_EXISTS if anything,
 * a symlink included, is already there) and DIR/AGENCY.public (0644, replaced). */
int refex_keys_save(const refex_keys *self, const char *dir) REFEX_NODISCARD;
/* Writes a .public file at path (0644, by temp file and rename: replaced, never written
 * through a symlink). */
int refex_pubkeys_save(const refex_pubkeys *p, const char *path) REFEX_NODISCARD;
/* Loads a .secret file, opened once with O_NOFOLLOW and checked on that descriptor:
 * REFEX_E_PERM (err says why) if it is a symlink, not a regular file, not owned by this
 * process's effective uid, or open to group or others. REFEX_E_NOTFOUND if absent. */
int refex_keys_load(const char *path, refex_keys **out, char *err, size_t errlen) REFEX_NODISCARD;
/* Loads the public half from a .public or .secret file: O_NOFOLLOW and a regular file
 * (REFEX_E_PERM otherwise), any owner and mode; REFEX_E_CONFIG if it cannot be opened. */
int refex_pubkeys_load(const char *path, refex_pubkeys *out, char *err,
                       size_t errlen) REFEX_NODISCARD;
/* The same for a trust anchor (the operator's .public file, which every directory
 * signature is checked against): also REFEX_E_PERM, err naming the file and the reason, if
 * it is owned by anyone but this process's effective uid or root, or is writable by group
 * or others. All checks are on the one descriptor opened. */
int refex_pubkeys_load_anchor(const char *path, refex_pubkeys *out, char *err,
                              size_t errlen) REFEX_NODISCARD;

#endif
