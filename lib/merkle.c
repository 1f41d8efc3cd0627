/* RFC 6962 / RFC 9162 Merkle tree arithmetic for the audit log: tree roots, inclusion and
 * consistency proofs, and their verification against untrusted proofs. It knows nothing of
 * log entries, storage or checkpoints; callers hand it leaf hashes. */
#include "merkle.h"

#include <assert.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define H REFEX_MERKLE_HASH
/* A tree of at most 2^64 - 1 leaves has at most 64 levels. */
#define MAX_LEVELS 64
/* A consistency proof holds at most one node per level plus the seed subtree. */
#define MAX_PROOF (MAX_LEVELS + 1)

void refex_merkle_leaf_hash(const uint8_t *data, size_t len, uint8_t out[H])
{
    static const uint8_t prefix = 0x00;
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, &prefix, 1);
    if (len > 0)
        crypto_hash_sha256_update(&st, data, len);
    crypto_hash_sha256_final(&st, out);
}

/* out may alias left or right: both are absorbed before out is written. */
void refex_merkle_node_hash(const uint8_t left[H], const uint8_t right[H], uint8_t out[H])
{
    static const uint8_t prefix = 0x01;
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, &prefix, 1);
    crypto_hash_sha256_update(&st, left, H);
    crypto_hash_sha256_update(&st, right, H);
    crypto_hash_sha256_final(&st, out);
}

/* Number of significant bits: 0 for 0, 64 for values with the top bit set. */
static unsigned bit_len(uint64_t x)
{
    return x ? 64u - (unsigned)__builtin_clzll(x) : 0u;
}

/* x >> s that is defined for s == 64 (shifting every bit out), as Go's >> is. */
static uint64_t shr(uint64_t x, unsigned s)
{
    return s >= 64 ? 0 : x >> s;
}

/* Largest power of two strictly below n; n >= 2. */
static uint64_t split_point(uint64_t n)
{
    return (uint64_t)1 << (bit_len(n - 1) - 1);
}

/* MTH over n >= 1 leaf hashes: hash complete subtrees as they fill up (at most one per
 * level is pending), then fold the pending ones from the right, which is MTH's shape. */
static void subtree_root(const uint8_t (*leaves)[H], uint64_t n, uint8_t out[H])
{
    uint8_t stack[MAX_LEVELS][H];
    unsigned depth = 0;

    for (uint64_t i = 0; i < n; i++) {
        memcpy(stack[depth++], leaves[i], H);
        for (uint64_t c = i + 1; (c & 1) == 0; c >>= 1) {
            depth--;
            refex_merkle_node_hash(stack[depth - 1], stack[depth], stack[depth - 1]);
        }
    }
    for (; depth > 1; depth--)
        refex_merkle_node_hash(stack[depth - 2], stack[depth - 1], stack[depth - 2]);
    memcpy(out, stack[0], H);
}

int refex_merkle_root(const uint8_t (*leaves)[H], uint64_t n, uint8_t out[H])
{
    if (n == 0) {
        crypto_hash_sha256(out, NULL, 0);
        return REFEX_OK;
    }
    if (!leaves)
        return REFEX_E_INVAL;
    subtree_root(leaves, n, out);
    return REFEX_OK;
}

/* Hands back the cnt hashes in tmp in reverse order (they were collected top-down, proofs
 * list them bottom-up). */
static int emit_reversed(uint8_t (*tmp)[H], size_t cnt, uint8_t (**proof)[H], size_t *len)
{
    uint8_t(*p)[H] = NULL;
    if (cnt > 0) {
        if (!(p = malloc(cnt * H)))
            return REFEX_E_NOMEM;
        for (size_t j = 0; j < cnt; j++)
            memcpy(p[j], tmp[cnt - 1 - j], H);
    }
    *proof = p;
    *len = cnt;
    return REFEX_OK;
}

int refex_merkle_inclusion_proof(const uint8_t (*leaves)[H], uint64_t n, uint64_t i,
                                 uint8_t (**proof)[H], size_t *len)
{
    uint8_t tmp[MAX_PROOF][H];
    size_t cnt = 0;
    uint64_t lo = 0, size = n, idx = i;

    assert(proof && len);
    *proof = NULL;
    *len = 0;
    if (i >= n || !leaves)
        return REFEX_E_INVAL;
    /* PATH(m, D[n]): descend towards the leaf, taking the other half's root at each split.
     * Each step at least halves size, so this runs at most 64 times. */
    while (size > 1 && cnt < MAX_LEVELS) {
        uint64_t k = split_point(size);
        if (idx < k) {
            subtree_root(leaves + lo + k, size - k, tmp[cnt++]);
            size = k;
        } else {
            subtree_root(leaves + lo, k, tmp[cnt++]);
            lo += k;
            idx -= k;
            size -= k;
        }
    }
    return emit_reversed(tmp, cnt, proof, len);
}

int refex_merkle_consistency_proof(const uint8_t (*leaves)[H], uint64_t m, uint64_t n,
                                   uint8_t (**proof)[H], size_t *len)
{
    uint8_t tmp[MAX_PROOF][H];
    size_t cnt = 0;
    uint64_t lo = 0, size = n, mm = m;
    int whole = 1; /* SUBPROOF's b: is the old tree's root still the caller's root1? */

    assert(proof && len);
    *proof = NULL;
    *len = 0;
    if (m == 0 || m > n || !leaves)
        return REFEX_E_INVAL;
    /* SUBPROOF(m, D[n], b), unrolled; at most 64 steps as size at least halves. */
    while (mm < size && cnt < MAX_LEVELS) {
        uint64_t k = split_point(size);
        if (mm <= k) {
            subtree_root(leaves + lo + k, size - k, tmp[cnt++]);
            size = k;
        } else {
            subtree_root(leaves + lo, k, tmp[cnt++]);
            lo += k;
            mm -= k;
            size -= k;
            whole = 0;
        }
    }
    if (!whole)
        subtree_root(leaves + lo, size, tmp[cnt++]);
    return emit_reversed(tmp, cnt, proof, len);
}

/* The chaining helpers follow transparency-dev/merkle proof/verify.go. The proof slices they
 * walk are at most 64 entries long, as the callers check lengths first. */

/* Hashes seed up through proof, the side at level i given by bit i of index. */
static void chain_inner(uint8_t hash[H], const uint8_t (*proof)[H], unsigned n, uint64_t index)
{
    for (unsigned i = 0; i < n; i++) {
        if ((index >> i) & 1)
            refex_merkle_node_hash(proof[i], hash, hash);
        else
            refex_merkle_node_hash(hash, proof[i], hash);
    }
}

/* Like chain_inner, but only takes left siblings: the same subtree as it was before the
 * nodes to the right of the path existed. */
static void chain_inner_right(uint8_t hash[H], const uint8_t (*proof)[H], unsigned n,
                              uint64_t index)
{
    for (unsigned i = 0; i < n; i++)
        if ((index >> i) & 1)
            refex_merkle_node_hash(proof[i], hash, hash);
}

/* Along the right border every sibling is on the left. */
static void chain_border_right(uint8_t hash[H], const uint8_t (*proof)[H], unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        refex_merkle_node_hash(proof[i], hash, hash);
}

static const uint8_t no_proof[1][H];

/* Splits the inclusion proof of index in a tree of size into the part below the point where
 * the paths to index and to size - 1 part (inner) and the part along the right border. Each
 * is at most 64. */
static void decompose(uint64_t index, uint64_t size, unsigned *inner, unsigned *border)
{
    *inner = bit_len(index ^ (size - 1));
    *border = (unsigned)__builtin_popcountll(shr(index, *inner));
}

int refex_merkle_root_from_inclusion(uint64_t index, uint64_t size, const uint8_t leaf[H],
                                     const uint8_t (*proof)[H], size_t proof_len,
                                     uint8_t root_out[H])
{
    unsigned inner, border;

    assert(leaf && root_out);
    if (index >= size)
        return REFEX_E_INVAL;
    decompose(index, size, &inner, &border);
    if (proof_len != (size_t)inner + border || (proof_len > 0 && !proof))
        return REFEX_E_INVAL;
    if (!proof)
        proof = no_proof; /* so that proof + inner is not arithmetic on NULL */
    memcpy(root_out, leaf, H);
    chain_inner(root_out, proof, inner, index);
    chain_border_right(root_out, proof + inner, border);
    return REFEX_OK;
}

int refex_merkle_verify_inclusion(uint64_t index, uint64_t size, const uint8_t leaf[H],
                                  const uint8_t (*proof)[H], size_t proof_len,
                                  const uint8_t root[H])
{
    uint8_t hash[H];

    assert(leaf && root);
    int rc = refex_merkle_root_from_inclusion(index, size, leaf, proof, proof_len, hash);
    if (rc != REFEX_OK)
        return rc;
    return sodium_memcmp(hash, root, H) == 0 ? REFEX_OK : REFEX_E_TAMPERED;
}

int refex_merkle_verify_consistency(uint64_t size1, uint64_t size2, const uint8_t root1[H],
                                    const uint8_t root2[H], const uint8_t (*proof)[H],
                                    size_t proof_len)
{
    uint8_t hash1[H], hash2[H];
    const uint8_t *seed;
    unsigned inner, border, shift, start;
    uint64_t mask;

    assert(root1 && root2);
    if (size2 < size1 || size1 == 0)
        return REFEX_E_INVAL;
    if (size1 == size2) {
        if (proof_len != 0)
            return REFEX_E_INVAL;
        return sodium_memcmp(root1, root2, H) == 0 ? REFEX_OK : REFEX_E_TAMPERED;
    }
    if (proof_len == 0 || !proof)
        return REFEX_E_INVAL;

    /* The proof is, after an optional seed, a suffix of the inclusion proof of leaf
     * size1 - 1 in the tree of size2, starting at the level of the largest complete subtree
     * that ends at size1 (shift < inner because size1 < size2). */
    decompose(size1 - 1, size2, &inner, &border);
    shift = (unsigned)__builtin_ctzll(size1);
    inner -= shift;
    /* The seed is that subtree's root: the proof's first entry, unless size1 is a power of two
     * and the subtree is the whole old tree, whose root the verifier already has. */
    if (size1 == (uint64_t)1 << shift) {
        seed = root1;
        start = 0;
    } else {
        seed = proof[0];
        start = 1;
    }
    if (proof_len != (size_t)start + inner + border)
        return REFEX_E_INVAL;
    proof += start;
    mask = (size1 - 1) >> shift;

    memcpy(hash1, seed, H);
    chain_inner_right(hash1, proof, inner, mask);
    chain_border_right(hash1, proof + inner, border);

    memcpy(hash2, seed, H);
    chain_inner(hash2, proof, inner, mask);
    chain_border_right(hash2, proof + inner, border);

    /* Both comparisons always run; either mismatch is tampering. */
    int bad1 = sodium_memcmp(hash1, root1, H) != 0;
    int bad2 = sodium_memcmp(hash2, root2, H) != 0;
    return (bad1 | bad2) ? REFEX_E_TAMPERED : REFEX_OK;
}

int refex_merkle_verify_consistency_bytes(uint64_t size1, uint64_t size2, const uint8_t *root1,
                                          size_t root1_len, const uint8_t *root2, size_t root2_len,
                                          const uint8_t (*proof)[H], size_t proof_len)
{
    if (!root1 || !root2 || size2 < size1 || size1 == 0)
        return REFEX_E_INVAL;
    if (size1 == size2) {
        if (proof_len != 0)
            return REFEX_E_INVAL;
        return root1_len == root2_len && sodium_memcmp(root1, root2, root1_len) == 0
                   ? REFEX_OK
                   : REFEX_E_TAMPERED;
    }
    if (root1_len != H || root2_len != H)
        return REFEX_E_INVAL;
    return refex_merkle_verify_consistency(size1, size2, root1, root2, proof, proof_len);
}
