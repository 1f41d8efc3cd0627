/* Batch signature trees and their verification. The tree is RFC 6962's, built level by
 * level (a node without a sibling moves up unchanged, which gives MTH's shape), so every
 * item's path comes from one pass: the signer's cost is one signature and about 2n hashes
 * per batch, not one signature per item. */
#include "batchsig.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "merkle.h"

#define SIG_MSG_LEN (sizeof REFEX_BATCH_CONTEXT + 8 + 32)

typedef struct {
    int used;
    uint64_t size;
    uint8_t pk[32], root[32], sig[64];
} cache_entry;

/* Per thread: a verifier on another thread never meets a half-written entry. */
static _Thread_local cache_entry cache[REFEX_BATCH_CACHE_ENTRIES];
static _Thread_local uint64_t n_verifies;

static void leaf_of(const char *context, size_t clen, const uint8_t *data, size_t len,
                    uint8_t out[32])
{
    uint8_t buf[32 + 32];
    memcpy(buf, context, clen);
    crypto_hash_sha256(buf + clen, data, len);
    refex_merkle_leaf_hash(buf, clen + 32, out);
}

void refex_batch_envelope_leaf(const uint8_t *header, size_t len, uint8_t out[32])
{
    leaf_of(REFEX_BATCH_ENVELOPE_LEAF, sizeof REFEX_BATCH_ENVELOPE_LEAF, header, len, out);
}

void refex_batch_receipt_leaf(const uint8_t *receipt, size_t len, uint8_t out[32])
{
    leaf_of(REFEX_BATCH_RECEIPT_LEAF, sizeof REFEX_BATCH_RECEIPT_LEAF, receipt, len, out);
}

/* "refex/batch/v1" NUL || u64be(size) || root. */
static void sig_message(uint64_t size, const uint8_t root[32], uint8_t m[SIG_MSG_LEN])
{
    size_t c = sizeof REFEX_BATCH_CONTEXT;
    memcpy(m, REFEX_BATCH_CONTEXT, c);
    for (int i = 0; i < 8; i++)
        m[c + i] = (uint8_t)(size >> (56 - 8 * i));
    memcpy(m + c + 8, root, 32);
}

int refex_batch_sign(const uint8_t (*leaves)[32], size_t n, const uint8_t sign_sk[64],
                     refex_batch_proof *proofs, uint8_t root_out[32])
{
    if (n == 0 || !leaves || !proofs)
        return REFEX_E_INVAL;
    /* All levels, leaves first: 2n - 1 nodes, plus at most one promoted per level. */
    uint8_t(*nodes)[32] = malloc((2 * n + REFEX_BATCH_MAX_PATH) * sizeof *nodes);
    size_t start[REFEX_BATCH_MAX_PATH + 1], width[REFEX_BATCH_MAX_PATH + 1], levels = 1;
    if (!nodes)
        return REFEX_E_NOMEM;
    memcpy(nodes, leaves, n * sizeof *nodes);
    start[0] = 0;
    width[0] = n;
    while (width[levels - 1] > 1) {
        size_t s = start[levels - 1], w = width[levels - 1], o = s + w;
        for (size_t j = 0; j < w; j += 2) {
            if (j + 1 < w)
                refex_merkle_node_hash(nodes[s + j], nodes[s + j + 1], nodes[o + j / 2]);
            else
                memcpy(nodes[o + j / 2], nodes[s + j], 32);
        }
        start[levels] = o;
        width[levels] = (w + 1) / 2;
        levels++;
    }
    uint8_t m[SIG_MSG_LEN], sig[64];
    const uint8_t *root = nodes[start[levels - 1]];
    sig_message(n, root, m);
    crypto_sign_detached(sig, NULL, m, sizeof m, sign_sk);
    for (size_t i = 0; i < n; i++) {
        refex_batch_proof *p = &proofs[i];
        p->index = i;
        p->size = n;
        p->path_len = 0;
        for (size_t k = 0; k + 1 < levels; k++) {
            size_t sib = (i >> k) ^ 1;
            if (sib < width[k])
                memcpy(p->path[p->path_len++], nodes[start[k] + sib], 32);
        }
        memcpy(p->root_sig, sig, 64);
    }
    if (root_out)
        memcpy(root_out, root, 32);
    free(nodes);
    return REFEX_OK;
}

void refex_batch_proof_pb(const refex_batch_proof *p, Refex__V1__BatchProof *pb,
                          ProtobufCBinaryData path_store[REFEX_BATCH_MAX_PATH])
{
    refex__v1__batch_proof__init(pb);
    pb->leaf_index = p->index;
    pb->tree_size = p->size;
    for (size_t i = 0; i < p->path_len; i++)
        path_store[i] = (ProtobufCBinaryData){32, (uint8_t *)p->path[i]};
    pb->n_path = p->path_len;
    pb->path = p->path_len ? path_store : NULL;
    pb->root_signature = (ProtobufCBinaryData){64, (uint8_t *)p->root_sig};
}

int refex_batch_root(const Refex__V1__BatchProof *pb, const uint8_t leaf[32], uint8_t root[32])
{
    uint8_t path[REFEX_BATCH_MAX_PATH][32];
    if (!pb || pb->root_signature.len != crypto_sign_BYTES || pb->n_path > REFEX_BATCH_MAX_PATH)
        return REFEX_E_BAD_SIGNATURE;
    for (size_t i = 0; i < pb->n_path; i++) {
        if (pb->path[i].len != 32)
            return REFEX_E_BAD_SIGNATURE;
        memcpy(path[i], pb->path[i].data, 32);
    }
    if (refex_merkle_root_from_inclusion(pb->leaf_index, pb->tree_size, leaf, path, pb->n_path,
                                         root) != REFEX_OK)
        return REFEX_E_BAD_SIGNATURE;
    return REFEX_OK;
}

/* Direct-mapped by the root's first bytes: a root a signer made is random to anyone else. */
static cache_entry *slot_for(const uint8_t root[32])
{
    return &cache[(root[0] | (size_t)root[1] << 8) % REFEX_BATCH_CACHE_ENTRIES];
}

static int cached(const cache_entry *e, const uint8_t pk[32], uint64_t size, const uint8_t root[32],
                  const uint8_t sig[64])
{
    return e->used && e->size == size && memcmp(e->root, root, 32) == 0 &&
           memcmp(e->pk, pk, 32) == 0 && memcmp(e->sig, sig, 64) == 0;
}

/* Whether sig over (size, root) verifies under pk, from the cache or by Ed25519. */
static int root_verifies(const uint8_t pk[32], uint64_t size, const uint8_t root[32],
                         const uint8_t sig[64])
{
    cache_entry *e = slot_for(root);
    if (cached(e, pk, size, root, sig))
        return 1;
    uint8_t m[SIG_MSG_LEN];
    sig_message(size, root, m);
    n_verifies++;
    if (crypto_sign_verify_detached(sig, m, sizeof m, pk) != 0)
        return 0;
    e->used = 1;
    e->size = size;
    memcpy(e->pk, pk, 32);
    memcpy(e->root, root, 32);
    memcpy(e->sig, sig, 64);
    return 1;
}

int refex_batch_verify_key(const Refex__V1__BatchProof *pb, const uint8_t leaf[32],
                           const uint8_t sign_pk[32])
{
    uint8_t root[32];
    int rc = refex_batch_root(pb, leaf, root);
    if (rc != REFEX_OK)
        return rc;
    return root_verifies(sign_pk, pb->tree_size, root, pb->root_signature.data)
               ? REFEX_OK
               : REFEX_E_BAD_SIGNATURE;
}

int refex_batch_verify(const Refex__V1__BatchProof *pb, const uint8_t leaf[32],
                       const refex_agency *signer, int64_t now_ms)
{
    uint8_t root[32];
    const uint8_t *pks[2];
    int rc = refex_batch_root(pb, leaf, root);
    if (rc != REFEX_OK)
        return rc;
    const uint8_t *sig = pb->root_signature.data;
    int n = refex_agency_sign_keys(signer, now_ms, pks);
    for (int i = 0; i < n; i++)
        if (root_verifies(pks[i], pb->tree_size, root, sig))
            return REFEX_OK;
    if (n == 1 && signer->has_prev && root_verifies(signer->prev_sign_pk, pb->tree_size, root, sig))
        return REFEX_E_REVOKED; /* genuine, by a key rotated away: final, not a forgery */
    return REFEX_E_BAD_SIGNATURE;
}

void refex_batch_cache_clear(void)
{
    sodium_memzero(cache, sizeof cache);
}

uint64_t refex_batch_ed25519_verifies(void)
{
    return n_verifies;
}
