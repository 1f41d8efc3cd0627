/* Batch signatures: one Ed25519 signature over the root of an RFC 6962 Merkle tree whose
 * leaves are everything a signer sends together (envelope headers and receipts), and for
 * each item a BatchProof (its place in the tree and the path to the root). Verifying
 * recomputes the root and checks the signature under the signer's directory keys, at most
 * once per distinct root per process (a small cache). Not the items' own formats: envelope.c
 * and receipt.c say what a leaf covers. docs/protocol.md section 5.6. */
#ifndef REFEX_BATCHSIG_H
#define REFEX_BATCHSIG_H

#include <stddef.h>
#include <stdint.h>

#include "refex.pb-c.h"
#include "directory.h"
#include "refex/error.h"

#define REFEX_BATCH_CONTEXT       "refex/batch/v1"
#define REFEX_BATCH_ENVELOPE_LEAF "refex/envelope/v2"
#define REFEX_BATCH_RECEIPT_LEAF  "refex/receipt/v2"
#define REFEX_BATCH_MAX_PATH      64
#define REFEX_BATCH_CACHE_ENTRIES 256
/* The most a BatchProof adds to a packed envelope or receipt: 64 path entries of 34 bytes,
 * the 66-byte signature field, index and size, and the field's own tag and length. */
#define REFEX_BATCH_PROOF_MAX_BYTES (64 * 34 + 66 + 22 + 4)

/* One item's proof, as produced by refex_batch_sign. */
typedef struct {
    uint64_t index, size;
    size_t path_len;
    uint8_t path[REFEX_BATCH_MAX_PATH][32];
    uint8_t root_sig[64];
} refex_batch_proof;

/* Leaf hash of an envelope (over Envelope.header as carried) or a receipt (over
 * SignedReceipt.receipt): RFC 6962 leaf hash of context NUL || SHA-256(bytes). */
void refex_batch_envelope_leaf(const uint8_t *header, size_t len, uint8_t out[32]);
void refex_batch_receipt_leaf(const uint8_t *receipt, size_t len, uint8_t out[32]);

/* Builds the tree over n >= 1 leaves, signs its root once and fills proofs[0..n) (n
 * entries, caller's memory). root_out may be NULL. REFEX_E_INVAL for n == 0. */
int refex_batch_sign(const uint8_t (*leaves)[32], size_t n, const uint8_t sign_sk[64],
                     refex_batch_proof *proofs, uint8_t root_out[32]) REFEX_NODISCARD;

/* Points pb at p (no copies): valid while p and path_store live. */
void refex_batch_proof_pb(const refex_batch_proof *p, Refex__V1__BatchProof *pb,
                          ProtobufCBinaryData path_store[REFEX_BATCH_MAX_PATH]);

/* The root an untrusted proof leads to from leaf. REFEX_E_BAD_SIGNATURE if pb is NULL, its
 * signature is not 64 bytes, it has more than 64 path entries or one not of 32 bytes, or
 * index, size and path length do not fit together. */
int refex_batch_root(const Refex__V1__BatchProof *pb, const uint8_t leaf[32],
                     uint8_t root[32]) REFEX_NODISCARD;

/* The proof under one key: REFEX_OK or REFEX_E_BAD_SIGNATURE. */
int refex_batch_verify_key(const Refex__V1__BatchProof *pb, const uint8_t leaf[32],
                           const uint8_t sign_pk[32]) REFEX_NODISCARD;

/* The proof under the signer's keys at now_ms (refex_agency_sign_keys: the current key,
 * and inside a rotation's overlap the previous one); REFEX_E_REVOKED if only a previous key
 * whose overlap has ended verifies, as refex_agency_verify_domain. The keys always come
 * from this directory entry: the cache only remembers that a (key, size, root, signature)
 * verified, so it never stands in for the directory's word on which keys count. */
int refex_batch_verify(const Refex__V1__BatchProof *pb, const uint8_t leaf[32],
                       const refex_agency *signer, int64_t now_ms) REFEX_NODISCARD;

/* This thread's cache of verified roots (each thread has its own). */
void refex_batch_cache_clear(void);
/* How many Ed25519 verifications refex_batch_verify* has done in this process. */
uint64_t refex_batch_ed25519_verifies(void);

#endif
