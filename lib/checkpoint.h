/* Signed audit-log checkpoints in the C2SP formats (tlog-checkpoint body in a signed-note,
 * Ed25519 log signature, tlog-cosignature cosignature/v1 witness cosignatures), so that any
 * C2SP tool can check a refex log head. Text in, text out: it does not build trees, check
 * consistency between checkpoints or store anything. */
#ifndef REFEX_CHECKPOINT_H
#define REFEX_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"

/* Longest origin line kept (bytes, without the NUL). */
#define REFEX_CHECKPOINT_ORIGIN_MAX 255
/* Notes larger than this, or with more signature lines than this, are REFEX_E_MALFORMED. */
#define REFEX_CHECKPOINT_NOTE_MAX 65536
#define REFEX_CHECKPOINT_SIGS_MAX 100

typedef struct {
    char origin[REFEX_CHECKPOINT_ORIGIN_MAX + 1]; /* NUL-terminated origin line */
    uint64_t size;                                /* number of leaves */
    uint8_t root[32];                             /* RFC 6962 root hash at that size */
} refex_checkpoint;

/* The checkpoint body "<origin>\n<size>\n<base64 root>\n" (no extension lines), malloc'd and
 * NUL-terminated; free() it. refex emits only the origins tlog-checkpoint recommends:
 * 1..255 bytes of printable ASCII without space or '+' (REFEX_E_INVAL otherwise). */
int refex_checkpoint_body(const refex_checkpoint *c, char **out) REFEX_NODISCARD;

/* A signed note: the body, a blank line and one signature line
 * "<em dash U+2014> <key_name> base64(key ID || Ed25519 signature over the body)\n", where
 * key ID = SHA-256(key_name || 0x0A || 0x01 || public key)[:4] (C2SP signed-note).
 * sign_sk is a libsodium Ed25519 secret key (seed || public key). key_name should be the
 * origin; it must be 1..255 bytes of UTF-8 without spaces, '+' or control characters
 * (REFEX_E_INVAL otherwise). *out is malloc'd and NUL-terminated; free() it. */
int refex_checkpoint_sign(const refex_checkpoint *c, const char *key_name,
                          const uint8_t sign_sk[64], char **out) REFEX_NODISCARD;

/* Adds a C2SP tlog-cosignature cosignature/v1 line by (witness_name, sign_sk) at `timestamp`
 * (POSIX seconds, at most 2^63 - 1) to a signed checkpoint note, replacing an earlier
 * cosignature by the same witness key. The key ID uses signature type 0x04 and the signature
 * is timestamp (8 bytes big-endian) || Ed25519 over "cosignature/v1\ntime <timestamp>\n" ||
 * note body. The note must parse (REFEX_E_MALFORMED otherwise), but no signature in it is
 * checked: a witness must refex_checkpoint_open() it, and check consistency with the last
 * checkpoint it cosigned, before vouching for it. REFEX_E_TOO_BIG if the result would exceed
 * the note limits. *out is malloc'd and NUL-terminated; free() it. */
int refex_checkpoint_cosign(const char *note, const char *witness_name, const uint8_t sign_sk[64],
                            uint64_t timestamp, char **out) REFEX_NODISCARD;

/* Parses an untrusted signed checkpoint note of len bytes and verifies the Ed25519 signature
 * by (key_name, pk); fills *c only on success (it is zeroed otherwise). Signature lines by
 * other keys (other names or key IDs, such as witness cosignatures) are ignored; extension
 * lines are accepted, covered by the signature and not returned.
 * REFEX_E_MALFORMED: not a signed note (over REFEX_CHECKPOINT_NOTE_MAX bytes, invalid UTF-8,
 * control characters, no blank line before the signatures, a bad signature line, more than
 * REFEX_CHECKPOINT_SIGS_MAX of them) or not a checkpoint (fewer than three lines, an empty
 * line, an origin over 255 bytes, a size that is not canonical decimal within uint64, a root
 * that is not base64 of 32 bytes).
 * REFEX_E_BAD_SIGNATURE: no line by that key, or a line by that key that does not verify. */
int refex_checkpoint_open(const char *note, size_t len, const char *key_name, const uint8_t pk[32],
                          refex_checkpoint *c) REFEX_NODISCARD;

/* refex_checkpoint_open with each of the n keys in turn (the current and, inside a key
 * rotation's overlap, the previous key: refex_agency_sign_keys): the first that verifies. */
int refex_checkpoint_open_any(const char *note, size_t len, const char *key_name,
                              const uint8_t *const pks[], int n,
                              refex_checkpoint *c) REFEX_NODISCARD;

/* The last note verified for each of a few key names, to skip the Ed25519 check when the
 * same note comes again (a sender attaches its latest checkpoint to every message, and signs
 * a new one at most once a second). A slot holds the note's bytes, the key it verified
 * under and what it said; a hit needs the same name, the same bytes and that key among the
 * keys given now, so a changed note, or a key rotated away or revoked since, is checked
 * again in full. Zero-initialise; nothing to free. Not for notes over
 * REFEX_CHECKPOINT_MEMO_NOTE bytes (those are always checked). */
#define REFEX_CHECKPOINT_MEMO_SLOTS 8
#define REFEX_CHECKPOINT_MEMO_NOTE  1024
typedef struct {
    struct {
        char key_name[REFEX_CHECKPOINT_ORIGIN_MAX + 1]; /* "" for an empty slot */
        uint8_t pk[32];
        size_t len;
        char note[REFEX_CHECKPOINT_MEMO_NOTE];
        refex_checkpoint c;
    } slot[REFEX_CHECKPOINT_MEMO_SLOTS];
    unsigned next; /* the slot a new name takes */
} refex_checkpoint_memo;

/* refex_checkpoint_open_any through memo m: the same result, without the signature check when
 * m holds this note as verified under one of pks by key_name. A note that fails is not kept,
 * and leaves the name's slot as it was. */
int refex_checkpoint_open_memo(refex_checkpoint_memo *m, const char *note, size_t len,
                               const char *key_name, const uint8_t *const pks[], int n,
                               refex_checkpoint *c) REFEX_NODISCARD;

/* Verifies the cosignature/v1 line(s) by (witness_name, pk) in an untrusted note and returns
 * the cosigned timestamp (the latest, if the witness signed more than once). The log's own
 * signature is not checked here: use refex_checkpoint_open() for that. Errors as for
 * refex_checkpoint_open(); a timestamp above 2^63 - 1 is REFEX_E_BAD_SIGNATURE. */
int refex_checkpoint_verify_cosignature(const char *note, size_t len, const char *witness_name,
                                        const uint8_t pk[32], uint64_t *timestamp) REFEX_NODISCARD;

#endif
