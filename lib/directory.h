/* The signed agency directory: who is in the network and which keys are theirs. Signed
 * by the operator's trust anchor (Ed25519); daemons pin the anchor's public key, so the
 * broker cannot substitute keys. */
#ifndef REFEX_DIRECTORY_H
#define REFEX_DIRECTORY_H

#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"
#include "keys.h"
#include "policy.h"

#define REFEX_DIRECTORY_CONTEXT   "refex/directory/v1"
#define REFEX_DIRECTORY_MAX_BYTES (4u * 1024 * 1024)

typedef struct {
    char id[REFEX_ID_MAX];
    char role[REFEX_ID_MAX];
    char display_name[128];
    uint8_t sign_pk[32];
    uint8_t enc_pk[32];
    uint8_t transport_pk[32];
    int64_t valid_from_ms;  /* 0: no lower bound */
    int64_t valid_until_ms; /* 0: no upper bound */
    int revoked;
    /* Key rotation: the keys before the last rotation, accepted until prev_until_ms. */
    int has_prev;
    uint8_t prev_sign_pk[32];
    uint8_t prev_enc_pk[32];
    uint8_t prev_transport_pk[32];
    int64_t prev_until_ms;
} refex_agency;

typedef struct refex_directory refex_directory;

int refex_directory_new(refex_directory **out) REFEX_NODISCARD;
void refex_directory_destroy(refex_directory **self_p);
/* Loads a directory file. With anchor_pk, the signature must verify against it
 * (REFEX_E_DIRECTORY otherwise); with NULL, an unsigned file is accepted (for editing). */
int refex_directory_load(const char *path, const uint8_t *anchor_pk, refex_directory **out,
                         char *err, size_t errlen) REFEX_NODISCARD;
/* The same, from the file's bytes in memory; path only names them in err. */
int refex_directory_parse(const uint8_t *buf, size_t len, const char *path,
                          const uint8_t *anchor_pk, refex_directory **out, char *err,
                          size_t errlen) REFEX_NODISCARD;
int refex_directory_save(const refex_directory *self, const char *path) REFEX_NODISCARD;
/* Adds or replaces (replace=1) an agency. Adding clears the signature. */
int refex_directory_add(refex_directory *self, const refex_agency *a, int replace) REFEX_NODISCARD;
/* Bumps the serial, stamps the time and signs with the trust anchor's signing key. */
int refex_directory_sign(refex_directory *self, const uint8_t sign_sk[64]) REFEX_NODISCARD;
int refex_directory_is_signed(const refex_directory *self);
uint64_t refex_directory_serial(const refex_directory *self);
int64_t refex_directory_issued_at(const refex_directory *self);

/* The information-sharing policy (lib/policy.h), NULL if the directory carries none. */
const refex_policy *refex_directory_policy(const refex_directory *self);
/* The policy to edit, created empty (deny everything) if there was none. Clears the
 * signature, like refex_directory_add. */
int refex_directory_policy_edit(refex_directory *self, refex_policy **out) REFEX_NODISCARD;

size_t refex_directory_count(const refex_directory *self);
const refex_agency *refex_directory_at(const refex_directory *self, size_t i);
const refex_agency *refex_directory_find(const refex_directory *self, const char *id);
const refex_agency *refex_directory_find_transport(const refex_directory *self,
                                                   const uint8_t pk[32]);
/* REFEX_OK if the agency may be used at now_ms, REFEX_E_REVOKED otherwise. */
int refex_agency_usable(const refex_agency *a, int64_t now_ms);
/* The signing keys that verify a's signatures at now_ms, current first, then the key it
 * had before its last rotation while the overlap lasts (now_ms < prev_until_ms). Fills
 * pks and returns how many (1 or 2). */
int refex_agency_sign_keys(const refex_agency *a, int64_t now_ms, const uint8_t *pks[2]);
/* refex_verify_domain against each of those keys: REFEX_OK if one verifies;
 * REFEX_E_REVOKED if only the previous key does and its overlap has ended (a signature that
 * is the agency's, by a key it rotated away: refused for good, unlike a forgery). */
int refex_agency_verify_domain(const refex_agency *a, int64_t now_ms, const char *context,
                               const uint8_t *data, size_t len,
                               const uint8_t sig[64]) REFEX_NODISCARD;
/* REFEX_OK if a is usable at now_ms and pk is its transport key, or its previous one
 * inside the overlap; REFEX_E_REVOKED otherwise (*why, if given, says which). */
int refex_agency_admits_transport(const refex_agency *a, const uint8_t pk[32], int64_t now_ms,
                                  const char **why) REFEX_NODISCARD;
/* Which of a's key sets p is: 1 the current, 2 the previous (whatever the time), 0 neither. */
int refex_agency_keys_match(const refex_agency *a, const refex_pubkeys *p);
/* A key rotation in the directory: a's current keys become its previous keys, accepted
 * until until_ms (at or before now_ms: not at all, the rotation after a compromise), and
 * p's become current. REFEX_E_INVAL if p is for an agency not listed, another role, or the
 * broker or trust anchor (pinned by every daemon); REFEX_E_EXISTS if p's keys are a's
 * current or previous ones already, or another agency's transport key; REFEX_E_BUSY if the
 * overlap of a's last rotation is still running and this one would have one too. Clears
 * the signature. */
int refex_directory_rotate(refex_directory *self, const refex_pubkeys *p, int64_t now_ms,
                           int64_t until_ms) REFEX_NODISCARD;
/* Ends the overlap of agency id's last rotation at now_ms: its previous keys stop
 * verifying. REFEX_E_UNKNOWN_AGENCY if id is not listed, REFEX_E_NOTFOUND if no overlap of
 * its is running (nothing changed). Clears the signature. */
int refex_directory_end_overlap(refex_directory *self, const char *id,
                                int64_t now_ms) REFEX_NODISCARD;
/* Fills an agency entry from a key set's public half. */
void refex_agency_from_pubkeys(refex_agency *a, const refex_pubkeys *p, const char *display);

#endif
