/* RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification: the maths under the
 * append-only audit log. Pure computation over 32-byte hashes; storage, entry encoding and
 * checkpoint signing live elsewhere. */
#ifndef REFEX_MERKLE_H
#define REFEX_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"

#define REFEX_MERKLE_HASH 32

/* Leaf hash SHA-256(0x00 || data) and node hash SHA-256(0x01 || left || right). */
void refex_merkle_leaf_hash(const uint8_t *data, size_t len, uint8_t out[REFEX_MERKLE_HASH]);
void refex_merkle_node_hash(const uint8_t left[REFEX_MERKLE_HASH],
                            const uint8_t right[REFEX_MERKLE_HASH], uint8_t out[REFEX_MERKLE_HASH]);

/* Root (RFC 6962 MTH) of the n leaf hashes; the empty tree's root is SHA-256 of the empty
 * string. REFEX_E_INVAL if leaves is NULL and n > 0. */
int refex_merkle_root(const uint8_t (*leaves)[REFEX_MERKLE_HASH], uint64_t n,
                      uint8_t out[REFEX_MERKLE_HASH]) REFEX_NODISCARD;

/* Inclusion proof (RFC 9162 2.1.3.1 PATH) for leaf index i in the tree of the first n leaves,
 * ordered from the leaf upwards. *proof is malloc'd (NULL when *len is 0); free() it.
 * REFEX_E_INVAL unless i < n. */
int refex_merkle_inclusion_proof(const uint8_t (*leaves)[REFEX_MERKLE_HASH], uint64_t n, uint64_t i,
                                 uint8_t (**proof)[REFEX_MERKLE_HASH], size_t *len) REFEX_NODISCARD;

/* Consistency proof (RFC 9162 2.1.4.1 PROOF) between the trees of the first m and the first
 * n leaves. *proof is malloc'd (NULL when *len is 0, as for m == n); free() it.
 * REFEX_E_INVAL unless 0 < m <= n: a proof from the empty tree is meaningless. */
int refex_merkle_consistency_proof(const uint8_t (*leaves)[REFEX_MERKLE_HASH], uint64_t m,
                                   uint64_t n, uint8_t (**proof)[REFEX_MERKLE_HASH],
                                   size_t *len) REFEX_NODISCARD;

/* Verifiers (RFC 9162 2.1.3.2 and 2.1.4.2, with the edge cases of transparency-dev/merkle).
 * All inputs may be untrusted. REFEX_OK if the proof verifies; REFEX_E_TAMPERED if it is
 * well-formed but a hash does not match; REFEX_E_INVAL for sizes, indices or a proof length
 * that cannot be right (index >= size; size1 > size2; size1 == 0, even with size2 == 0;
 * size1 == size2 with a non-empty proof; size1 < size2 with a proof of the wrong length). */
int refex_merkle_verify_inclusion(uint64_t index, uint64_t size,
                                  const uint8_t leaf[REFEX_MERKLE_HASH],
                                  const uint8_t (*proof)[REFEX_MERKLE_HASH], size_t proof_len,
                                  const uint8_t root[REFEX_MERKLE_HASH]) REFEX_NODISCARD;
/* The root that an inclusion proof leads to: the leaf hashed up the path as
 * refex_merkle_verify_inclusion does, without comparing. REFEX_E_INVAL when index >= size or
 * proof_len is not the path length of that index in a tree of that size; the caller compares
 * (or signs over) root_out. */
int refex_merkle_root_from_inclusion(uint64_t index, uint64_t size,
                                     const uint8_t leaf[REFEX_MERKLE_HASH],
                                     const uint8_t (*proof)[REFEX_MERKLE_HASH], size_t proof_len,
                                     uint8_t root_out[REFEX_MERKLE_HASH]) REFEX_NODISCARD;
int refex_merkle_verify_consistency(uint64_t size1, uint64_t size2,
                                    const uint8_t root1[REFEX_MERKLE_HASH],
                                    const uint8_t root2[REFEX_MERKLE_HASH],
                                    const uint8_t (*proof)[REFEX_MERKLE_HASH],
                                    size_t proof_len) REFEX_NODISCARD;

/* The same, for roots given as byte strings of any length (as RFC 9162 verifiers and the
 * transparency-dev vectors treat them): equal sizes need an empty proof and byte-equal
 * roots; otherwise both roots must be 32 bytes and the proof is checked as above. */
int refex_merkle_verify_consistency_bytes(uint64_t size1, uint64_t size2, const uint8_t *root1,
                                          size_t root1_len, const uint8_t *root2, size_t root2_len,
                                          const uint8_t (*proof)[32],
                                          size_t proof_len) REFEX_NODISCARD;

#endif
