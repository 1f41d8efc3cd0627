/* End-to-end envelopes. Seal: encrypt the body once (XChaCha20-Poly1305, random content
 * key), wrap the content key for each recipient under the sender's current key epoch for
 * that recipient (lib/epoch.c), and sign the header,
 * which commits to the ciphertext and the key slots by SHA-256. Open: verify first, then
 * find our slot and decrypt. The broker uses parse + verify only; it holds no keys that
 * can open a body. */
#ifndef REFEX_ENVELOPE_H
#define REFEX_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "refex.pb-c.h"
#include "directory.h"
#include "epoch.h"
#include "refex/error.h"

#define REFEX_BODY_CONTEXT     "refex/body/v1"
#define REFEX_KEYSLOTS_CONTEXT "refex/keyslots/v2"
/* EnvelopeHeader.version this code seals and the only one it accepts (E_VERSION else). */
#define REFEX_ENVELOPE_VERSION 2
#define REFEX_MAX_RECIPIENTS   64

/* A message's life when its sender gives none. */
#define REFEX_DEFAULT_TTL_MS (7LL * 24 * 3600 * 1000)
/* The longest life a message may have (expires_at - created_at): agents refuse a longer
 * ttl_seconds, the broker refuses such an envelope (E_INVAL). */
#define REFEX_MAX_TTL_SECONDS (366 * 24 * 3600)
#define REFEX_MAX_TTL_MS      (REFEX_MAX_TTL_SECONDS * 1000LL)

typedef struct {
    const char *sender;
    const uint8_t *sign_sk; /* 64 bytes */
    const refex_agency *const *recipients;
    size_t n_recipients;
    Refex__V1__MessageType type;
    const char *case_ref;       /* may be NULL */
    int64_t created_at_ms;      /* 0: now */
    int64_t expires_at_ms;      /* 0: created + 7 days */
    refex_epoch_sender *epochs; /* the sender's epochs; NULL: a one-off epoch per recipient */
    const char *checkpoint;     /* a signed note to attach (Envelope.checkpoint); NULL: none */
    uint8_t *hash_out;          /* 32 bytes: gets the envelope hash (refex_envelope_hash); NULL */
} refex_seal_params;

/* Case references are pseudonymous: at most 127 of [A-Za-z0-9._:/-]; "" is allowed. */
int refex_case_ref_valid(const char *case_ref);

/* Seals body into a packed Envelope (malloc'd), signed alone (a batch of one). id_out gets
 * the new message id. */
int refex_envelope_seal(const refex_seal_params *p, const uint8_t *body, size_t body_len,
                        uint8_t **out, size_t *out_len, uint8_t id_out[16]) REFEX_NODISCARD;
/* The same without a signature (no batch proof; p->sign_sk may be NULL): for a sender that
 * signs its envelopes in batches when it sends them. */
int refex_envelope_seal_unsigned(const refex_seal_params *p, const uint8_t *body, size_t body_len,
                                 uint8_t **out, size_t *out_len,
                                 uint8_t id_out[16]) REFEX_NODISCARD;

/* Structural parse of the signed header, with sanity checks (sizes, ids, type).
 * REFEX_E_VERSION for a header whose version is not REFEX_ENVELOPE_VERSION.
 * Free with refex__v1__envelope_header__free_unpacked. */
int refex_envelope_parse_header(const Refex__V1__Envelope *env,
                                Refex__V1__EnvelopeHeader **out) REFEX_NODISCARD;

/* The batch signature over the header (REFEX_E_BAD_SIGNATURE if there is none, or an
 * old-style signature field is set), and the header's commitments to ciphertext and key
 * slots. */
int refex_envelope_verify(const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h,
                          const uint8_t sender_sign_pk[32]) REFEX_NODISCARD;

/* refex_envelope_verify against each signing key of the sender at now_ms: its current
 * key, and inside a rotation's overlap its previous one (refex_agency_sign_keys).
 * REFEX_E_REVOKED if only the previous key verifies and the overlap has ended. */
int refex_envelope_verify_from(const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h,
                               const refex_agency *sender, int64_t now_ms) REFEX_NODISCARD;

/* One of the recipient's own encryption key pairs. */
typedef struct {
    const uint8_t *pk; /* 32 bytes */
    const uint8_t *sk; /* 32 bytes */
} refex_open_key;
#define REFEX_OPEN_KEYS_MAX 2 /* current and, during a rotation's overlap, previous */

/* Decrypts for recipient `me` with whichever of keys (1 or 2) the slot was wrapped for,
 * using and filling cache (may be NULL) so that one scalar multiplication serves a whole
 * epoch. Call only after refex_envelope_verify succeeded. E_NOT_RECIPIENT without a slot
 * for me, E_DECRYPT if no key opens it, E_INVAL for no keys or too many. */
int refex_envelope_open_keys(const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h,
                             const char *me, const refex_open_key *keys, size_t n_keys,
                             refex_epoch_cache *cache, uint8_t **body_out,
                             size_t *body_len) REFEX_NODISCARD;
/* refex_envelope_open_keys with one key and no cache. */
int refex_envelope_open(const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h,
                        const char *me, const uint8_t enc_pk[32], const uint8_t enc_sk[32],
                        uint8_t **body_out, size_t *body_len) REFEX_NODISCARD;

/* SHA-256 of the envelope re-packed with fields 1, 3 and 4 only (header, ciphertext, key
 * slots; not the signature, batch proof or checkpoint): the envelope hash in receipts and
 * audit logs, known to the sender before the envelope is signed. */
int refex_envelope_hash(const Refex__V1__Envelope *env, uint8_t out[32]) REFEX_NODISCARD;

#endif
