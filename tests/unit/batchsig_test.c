/* Tests for lib/batchsig.c: trees of every size up to 70 whose every proof verifies and
 * leads to the RFC 6962 root; damaged proofs refused; the cache of verified roots, which
 * saves Ed25519 work but never the directory's word (revocation, rotation); and the
 * known-answer vectors of tests/vectors/batch-signature.json, recomputed with raw SHA-256. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "batchsig.h"
#include "directory.h"
#include "keys.h"
#include "merkle.h"
#include "receipt.h"
#include "util.h"

#define MAX_N 70

static refex_keys *signer, *other;

static int group_setup(void **state)
{
    (void)state;
    if (refex_keys_new("midwifery", "maternity", &signer) != REFEX_OK ||
        refex_keys_new("police", "police", &other) != REFEX_OK)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    refex_keys_destroy(&signer);
    refex_keys_destroy(&other);
    return 0;
}

static void make_leaves(uint8_t (*leaves)[32], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char data[32];
        int len = snprintf(data, sizeof data, "header-%zu", i);
        if (i % 3 == 2)
            refex_batch_receipt_leaf((const uint8_t *)data, (size_t)len, leaves[i]);
        else
            refex_batch_envelope_leaf((const uint8_t *)data, (size_t)len, leaves[i]);
    }
}

/* Every proof of every tree of 1..70 items verifies under the signer's key and leads to
 * the RFC 6962 root of the leaves; none verifies under another key. */
static void test_every_size_and_index(void **state)
{
    (void)state;
    uint8_t leaves[MAX_N][32], root[32], want[32], got[32];
    refex_batch_proof *proofs = calloc(MAX_N, sizeof *proofs);
    assert_non_null(proofs);
    make_leaves(leaves, MAX_N);
    for (size_t n = 1; n <= MAX_N; n++) {
        assert_ok(
            refex_batch_sign((const uint8_t(*)[32])leaves, n, signer->sk->sign_sk, proofs, root));
        assert_ok(refex_merkle_root((const uint8_t(*)[32])leaves, n, want));
        assert_memory_equal(root, want, 32);
        for (size_t i = 0; i < n; i++) {
            Refex__V1__BatchProof pb;
            ProtobufCBinaryData path[REFEX_BATCH_MAX_PATH];
            refex_batch_proof_pb(&proofs[i], &pb, path);
            assert_int_equal(pb.leaf_index, i);
            assert_int_equal(pb.tree_size, n);
            assert_memory_equal(proofs[i].root_sig, proofs[0].root_sig, 64);
            assert_ok(refex_batch_root(&pb, leaves[i], got));
            assert_memory_equal(got, root, 32);
            assert_ok(refex_batch_verify_key(&pb, leaves[i], signer->pub.sign_pk));
            assert_rc(refex_batch_verify_key(&pb, leaves[i], other->pub.sign_pk),
                      REFEX_E_BAD_SIGNATURE);
            /* Another item's leaf at this place does not verify. */
            assert_rc(refex_batch_verify_key(&pb, leaves[(i + 1) % MAX_N], signer->pub.sign_pk),
                      REFEX_E_BAD_SIGNATURE);
        }
    }
    assert_rc(refex_batch_sign((const uint8_t(*)[32])leaves, 0, signer->sk->sign_sk, proofs, NULL),
              REFEX_E_INVAL);
    free(proofs);
}

/* A proof of item i of a fresh tree of n leaves; pb points into *p and path. */
static void proof_of(uint8_t (*leaves)[32], size_t n, size_t i, refex_batch_proof *p,
                     Refex__V1__BatchProof *pb, ProtobufCBinaryData *path)
{
    refex_batch_proof *all = calloc(n, sizeof *all);
    assert_non_null(all);
    assert_ok(refex_batch_sign((const uint8_t(*)[32])leaves, n, signer->sk->sign_sk, all, NULL));
    *p = all[i];
    free(all);
    refex_batch_proof_pb(p, pb, path);
}

/* Damaged proofs: each is refused E_BAD_SIGNATURE, never accepted, never a crash. */
static void test_damaged_proofs(void **state)
{
    (void)state;
    uint8_t leaves[13][32], junk[65] = {0};
    refex_batch_proof p;
    Refex__V1__BatchProof pb;
    ProtobufCBinaryData path[REFEX_BATCH_MAX_PATH + 1];
    make_leaves(leaves, 13);
    proof_of(leaves, 13, 6, &p, &pb, path);
    const uint8_t *pk = signer->pub.sign_pk;
    assert_ok(refex_batch_verify_key(&pb, leaves[6], pk));
    assert_rc(refex_batch_verify_key(NULL, leaves[6], pk), REFEX_E_BAD_SIGNATURE);

    Refex__V1__BatchProof bad = pb;
    uint64_t wrong_index[] = {5, 7, 12, 13, UINT64_MAX};
    for (size_t k = 0; k < sizeof wrong_index / sizeof wrong_index[0]; k++) {
        bad.leaf_index = wrong_index[k];
        assert_rc(refex_batch_verify_key(&bad, leaves[6], pk), REFEX_E_BAD_SIGNATURE);
    }
    bad = pb;
    uint64_t wrong_size[] = {0, 1, 7, 12, 14, 16, UINT64_MAX};
    for (size_t k = 0; k < sizeof wrong_size / sizeof wrong_size[0]; k++) {
        bad.tree_size = wrong_size[k];
        assert_rc(refex_batch_verify_key(&bad, leaves[6], pk), REFEX_E_BAD_SIGNATURE);
    }
    bad = pb;
    bad.n_path = pb.n_path - 1; /* shortened */
    assert_rc(refex_batch_verify_key(&bad, leaves[6], pk), REFEX_E_BAD_SIGNATURE);
    bad.n_path = 0;
    assert_rc(refex_batch_verify_key(&bad, leaves[6], pk), REFEX_E_BAD_SIGNATURE);
    /* Lengthened: one more entry, and more than 64. */
    memcpy(path, pb.path, pb.n_path * sizeof *path);
    for (size_t k = pb.n_path; k <= REFEX_BATCH_MAX_PATH; k++)
        path[k] = (ProtobufCBinaryData){32, leaves[0]};
    bad = pb;
    bad.path = path;
    bad.n_path = pb.n_path + 1;
    assert_rc(refex_batch_verify_key(&bad, leaves[6], pk), REFEX_E_BAD_SIGNATURE);
    bad.n_path = REFEX_BATCH_MAX_PATH + 1;
    assert_rc(refex_batch_verify_key(&bad, leaves[6], pk), REFEX_E_BAD_SIGNATURE);
    /* Every byte of every path entry flipped; entries of 31 and 33 bytes. */
    for (size_t e = 0; e < pb.n_path; e++) {
        for (size_t b = 0; b < 32; b++) {
            p.path[e][b] ^= 0x01;
            assert_rc(refex_batch_verify_key(&pb, leaves[6], pk), REFEX_E_BAD_SIGNATURE);
            p.path[e][b] ^= 0x01;
        }
        for (size_t len = 31; len <= 33; len += 2) {
            uint8_t longer[33] = {0};
            memcpy(longer, p.path[e], 32);
            ProtobufCBinaryData keep = path[e];
            memcpy(path, pb.path, pb.n_path * sizeof *path);
            path[e] = (ProtobufCBinaryData){len, longer};
            bad = pb;
            bad.path = path;
            assert_rc(refex_batch_verify_key(&bad, leaves[6], pk), REFEX_E_BAD_SIGNATURE);
            path[e] = keep;
        }
    }
    /* Root signatures of another size, and with a flipped byte. */
    size_t sig_lens[] = {0, 32, 63, 65};
    memcpy(junk, p.root_sig, 64);
    for (size_t k = 0; k < sizeof sig_lens / sizeof sig_lens[0]; k++) {
        bad = pb;
        bad.root_signature = (ProtobufCBinaryData){sig_lens[k], sig_lens[k] ? junk : NULL};
        assert_rc(refex_batch_verify_key(&bad, leaves[6], pk), REFEX_E_BAD_SIGNATURE);
    }
    p.root_sig[10] ^= 0x40;
    assert_rc(refex_batch_verify_key(&pb, leaves[6], pk), REFEX_E_BAD_SIGNATURE);
    p.root_sig[10] ^= 0x40;
    assert_ok(refex_batch_verify_key(&pb, leaves[6], pk));
}

/* The two leaf kinds are domain-separated: the same bytes as a header and as a receipt
 * give different leaves, so one cannot stand for the other. */
static void test_leaf_kinds_differ(void **state)
{
    (void)state;
    static const uint8_t bytes[] = "the same bytes";
    uint8_t a[32], b[32], want[32], in[1 + 18 + 32];
    refex_batch_envelope_leaf(bytes, sizeof bytes, a);
    refex_batch_receipt_leaf(bytes, sizeof bytes, b);
    assert_memory_not_equal(a, b, 32);
    in[0] = 0x00;
    memcpy(in + 1, "refex/envelope/v2", 18);
    crypto_hash_sha256(in + 19, bytes, sizeof bytes);
    crypto_hash_sha256(want, in, sizeof in);
    assert_memory_equal(a, want, 32);
}

/* Signs two receipts of the signer in one batch: out[i] packed SignedReceipts. */
static void two_receipts(uint8_t *out[2], size_t len[2])
{
    Refex__V1__SignedReceipt *sr[2] = {NULL, NULL};
    uint8_t leaves[2][32];
    refex_batch_proof proofs[2];
    for (int i = 0; i < 2; i++) {
        refex_receipt r;
        memset(&r, 0, sizeof r);
        r.message_id[0] = (uint8_t)(i + 1);
        snprintf(r.sender, sizeof r.sender, "police");
        snprintf(r.recipient, sizeof r.recipient, "midwifery");
        snprintf(r.signer, sizeof r.signer, "midwifery");
        r.time_ms = refex_now_ms() + i; /* a new root each run */
        assert_ok(refex_receipt_pack(&r, &sr[i]));
        refex_batch_receipt_leaf(sr[i]->receipt.data, sr[i]->receipt.len, leaves[i]);
    }
    assert_ok(refex_batch_sign((const uint8_t(*)[32])leaves, 2, signer->sk->sign_sk, proofs, NULL));
    for (int i = 0; i < 2; i++) {
        Refex__V1__BatchProof pb;
        ProtobufCBinaryData path[REFEX_BATCH_MAX_PATH];
        refex_batch_proof_pb(&proofs[i], &pb, path);
        sr[i]->batch = &pb;
        len[i] = refex__v1__signed_receipt__get_packed_size(sr[i]);
        out[i] = malloc(len[i]);
        assert_non_null(out[i]);
        refex__v1__signed_receipt__pack(sr[i], out[i]);
        sr[i]->batch = NULL;
        refex_receipt_unsigned_free(&sr[i]);
    }
}

static refex_directory *dir_with(const refex_agency *a)
{
    refex_directory *d = NULL;
    assert_ok(refex_directory_new(&d));
    assert_ok(refex_directory_add(d, a, 0));
    return d;
}

/* One Ed25519 verification per distinct root; and a cached root still answers to the
 * directory: refused once the signer is revoked, once its key is replaced, and once the
 * overlap of a rotation that retired its key has ended. */
static void test_cache_never_skips_directory(void **state)
{
    (void)state;
    uint8_t *rb[2];
    size_t rl[2];
    refex_receipt got;
    refex_agency a;
    refex_agency_from_pubkeys(&a, &signer->pub, NULL);
    refex_directory *d = dir_with(&a);
    two_receipts(rb, rl);

    refex_batch_cache_clear();
    uint64_t v0 = refex_batch_ed25519_verifies();
    assert_ok(refex_receipt_verify_packed(rb[0], rl[0], d, &got));
    assert_int_equal(refex_batch_ed25519_verifies(), v0 + 1);
    assert_ok(refex_receipt_verify_packed(rb[1], rl[1], d, &got));
    assert_ok(refex_receipt_verify_packed(rb[0], rl[0], d, &got));
    assert_int_equal(refex_batch_ed25519_verifies(), v0 + 1); /* the same root: cached */

    /* Revoked in a new directory: refused, cached or not. */
    refex_agency revoked = a;
    revoked.revoked = 1;
    refex_directory *dr = dir_with(&revoked);
    assert_rc(refex_receipt_verify_packed(rb[0], rl[0], dr, &got), REFEX_E_REVOKED);
    assert_rc(refex_receipt_verify_packed(rb[1], rl[1], dr, &got), REFEX_E_REVOKED);
    /* Outside its validity period, likewise. */
    refex_agency expired = a;
    expired.valid_until_ms = refex_now_ms() - 1000;
    refex_directory *dx = dir_with(&expired);
    assert_rc(refex_receipt_verify_packed(rb[0], rl[0], dx, &got), REFEX_E_REVOKED);

    /* Its key replaced without an overlap: the cached root was under the old key. */
    refex_agency replaced = a;
    memcpy(replaced.sign_pk, other->pub.sign_pk, 32);
    refex_directory *dp = dir_with(&replaced);
    assert_rc(refex_receipt_verify_packed(rb[0], rl[0], dp, &got), REFEX_E_BAD_SIGNATURE);

    /* Rotated away with an overlap: the old key counts while it lasts, then E_REVOKED. */
    refex_agency rotated = replaced;
    rotated.has_prev = 1;
    memcpy(rotated.prev_sign_pk, signer->pub.sign_pk, 32);
    rotated.prev_until_ms = refex_now_ms() + 3600000;
    refex_directory *dov = dir_with(&rotated);
    assert_ok(refex_receipt_verify_packed(rb[0], rl[0], dov, &got));
    rotated.prev_until_ms = refex_now_ms() - 1;
    refex_directory *dend = dir_with(&rotated);
    assert_rc(refex_receipt_verify_packed(rb[0], rl[0], dend, &got), REFEX_E_REVOKED);
    assert_rc(refex_receipt_verify_packed(rb[1], rl[1], dend, &got), REFEX_E_REVOKED);
    /* And the original directory still accepts it, from the cache. */
    uint64_t v1 = refex_batch_ed25519_verifies();
    assert_ok(refex_receipt_verify_packed(rb[1], rl[1], d, &got));
    assert_int_equal(refex_batch_ed25519_verifies(), v1);

    /* A clear cache verifies again. */
    refex_batch_cache_clear();
    assert_ok(refex_receipt_verify_packed(rb[1], rl[1], d, &got));
    assert_int_equal(refex_batch_ed25519_verifies(), v1 + 1);

    refex_directory_destroy(&dend);
    refex_directory_destroy(&dov);
    refex_directory_destroy(&dp);
    refex_directory_destroy(&dx);
    refex_directory_destroy(&dr);
    refex_directory_destroy(&d);
    free(rb[0]);
    free(rb[1]);
}

/* A forged signature is not cached: the next check verifies (and refuses) again, and a
 * cache full of other roots still gives the right answers. */
static void test_cache_bounded(void **state)
{
    (void)state;
    uint8_t leaves[2][32];
    refex_batch_proof p;
    Refex__V1__BatchProof pb;
    ProtobufCBinaryData path[REFEX_BATCH_MAX_PATH];
    refex_batch_cache_clear();
    for (int r = 0; r < 3 * REFEX_BATCH_CACHE_ENTRIES; r++) {
        char data[32];
        int len = snprintf(data, sizeof data, "root-%d", r);
        refex_batch_envelope_leaf((const uint8_t *)data, (size_t)len, leaves[0]);
        refex_batch_envelope_leaf((const uint8_t *)data, (size_t)len - 1, leaves[1]);
        proof_of(leaves, 2, 1, &p, &pb, path);
        assert_ok(refex_batch_verify_key(&pb, leaves[1], signer->pub.sign_pk));
        p.root_sig[0] ^= 1;
        uint64_t v = refex_batch_ed25519_verifies();
        assert_rc(refex_batch_verify_key(&pb, leaves[1], signer->pub.sign_pk),
                  REFEX_E_BAD_SIGNATURE);
        assert_rc(refex_batch_verify_key(&pb, leaves[1], signer->pub.sign_pk),
                  REFEX_E_BAD_SIGNATURE);
        assert_int_equal(refex_batch_ed25519_verifies(), v + 2);
    }
}

/* ---- known answers ------------------------------------------------------------------- */

static void unhex(const char *hex, uint8_t *out, size_t len)
{
    assert_non_null(hex);
    assert_int_equal(strlen(hex), 2 * len);
    assert_ok(refex_hex_decode(out, len, hex));
}

static void node(const uint8_t l[32], const uint8_t r[32], uint8_t out[32])
{
    uint8_t in[65];
    in[0] = 0x01;
    memcpy(in + 1, l, 32);
    memcpy(in + 33, r, 32);
    crypto_hash_sha256(out, in, sizeof in);
}

/* tests/vectors/batch-signature.json (written by batch_signature.py from the spec alone):
 * leaves and root recomputed here with raw SHA-256, the signature with raw Ed25519, then
 * refex_batch_sign must give the same bytes, and the vector's proofs must verify, and stop
 * verifying when damaged. */
static void test_known_answers(void **state)
{
    (void)state;
    json_error_t err;
    json_t *doc = json_load_file(REFEX_TEST_VECTORS "/batch-signature.json", 0, &err);
    if (!doc)
        fail_msg("batch-signature.json: %s", err.text);
    uint8_t seed[32], pk[32], sk[64], want_pk[32], root[32], sig[64], mine[64];
    unhex(json_string_value(json_object_get(doc, "seed")), seed, 32);
    unhex(json_string_value(json_object_get(doc, "public_key")), want_pk, 32);
    crypto_sign_seed_keypair(pk, sk, seed);
    assert_memory_equal(pk, want_pk, 32);
    json_t *items = json_object_get(doc, "items");
    size_t n = json_array_size(items);
    assert_int_equal(n, 5);
    assert_int_equal(json_integer_value(json_object_get(doc, "tree_size")), 5);
    uint8_t leaves[5][32];
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(items, i);
        const char *kind = json_string_value(json_object_get(it, "kind"));
        const char *hex = json_string_value(json_object_get(it, "bytes"));
        size_t len = strlen(hex) / 2;
        uint8_t *b = malloc(len), in[1 + 18 + 32], want[32], lib[32];
        assert_non_null(b);
        unhex(hex, b, len);
        int env = strcmp(kind, "envelope") == 0;
        const char *ctx = env ? "refex/envelope/v2" : "refex/receipt/v2";
        size_t cl = strlen(ctx) + 1;
        in[0] = 0x00;
        memcpy(in + 1, ctx, cl);
        crypto_hash_sha256(in + 1 + cl, b, len);
        crypto_hash_sha256(leaves[i], in, 1 + cl + 32);
        unhex(json_string_value(json_object_get(it, "leaf")), want, 32);
        assert_memory_equal(leaves[i], want, 32);
        if (env)
            refex_batch_envelope_leaf(b, len, lib);
        else
            refex_batch_receipt_leaf(b, len, lib);
        assert_memory_equal(lib, want, 32);
        free(b);
    }
    /* RFC 6962 MTH of five: H(H(H(0,1), H(2,3)), 4). */
    uint8_t n01[32], n23[32], n0123[32], want_root[32];
    node(leaves[0], leaves[1], n01);
    node(leaves[2], leaves[3], n23);
    node(n01, n23, n0123);
    node(n0123, leaves[4], root);
    unhex(json_string_value(json_object_get(doc, "root")), want_root, 32);
    assert_memory_equal(root, want_root, 32);
    /* "refex/batch/v1" NUL || u64be(5) || root, signed with raw Ed25519. */
    uint8_t m[15 + 8 + 32] = {0}, want_m[sizeof m];
    memcpy(m, "refex/batch/v1", 15);
    m[15 + 7] = 5;
    memcpy(m + 23, root, 32);
    unhex(json_string_value(json_object_get(doc, "signed_message")), want_m, sizeof want_m);
    assert_memory_equal(m, want_m, sizeof m);
    unhex(json_string_value(json_object_get(doc, "root_signature")), sig, 64);
    crypto_sign_detached(mine, NULL, m, sizeof m, sk);
    assert_memory_equal(mine, sig, 64);
    assert_int_equal(crypto_sign_verify_detached(sig, m, sizeof m, pk), 0);

    /* refex_batch_sign gives the same root, signature and paths. */
    refex_batch_proof proofs[5];
    uint8_t lib_root[32];
    assert_ok(refex_batch_sign((const uint8_t(*)[32])leaves, n, sk, proofs, lib_root));
    assert_memory_equal(lib_root, root, 32);
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(items, i), *jp = json_object_get(it, "path");
        assert_int_equal(json_integer_value(json_object_get(it, "leaf_index")), i);
        assert_memory_equal(proofs[i].root_sig, sig, 64);
        assert_int_equal(proofs[i].path_len, json_array_size(jp));
        uint8_t path[REFEX_BATCH_MAX_PATH][32];
        ProtobufCBinaryData pd[REFEX_BATCH_MAX_PATH];
        for (size_t k = 0; k < json_array_size(jp); k++) {
            unhex(json_string_value(json_array_get(jp, k)), path[k], 32);
            assert_memory_equal(proofs[i].path[k], path[k], 32);
            pd[k] = (ProtobufCBinaryData){32, path[k]};
        }
        /* The vector's own proof, as a verifier receives it. */
        Refex__V1__BatchProof pb = REFEX__V1__BATCH_PROOF__INIT;
        pb.leaf_index = i;
        pb.tree_size = n;
        pb.n_path = json_array_size(jp);
        pb.path = pd;
        pb.root_signature = (ProtobufCBinaryData){64, sig};
        assert_ok(refex_batch_verify_key(&pb, leaves[i], pk));
        Refex__V1__BatchProof bad = pb;
        bad.leaf_index = (i + 1) % n; /* a wrong index */
        assert_rc(refex_batch_verify_key(&bad, leaves[i], pk), REFEX_E_BAD_SIGNATURE);
        bad = pb;
        bad.n_path--; /* a shortened path */
        assert_rc(refex_batch_verify_key(&bad, leaves[i], pk), REFEX_E_BAD_SIGNATURE);
        path[0][7] ^= 0x20; /* a flipped path byte */
        assert_rc(refex_batch_verify_key(&pb, leaves[i], pk), REFEX_E_BAD_SIGNATURE);
        path[0][7] ^= 0x20;
        uint8_t longsig[65] = {0};
        memcpy(longsig, sig, 64);
        bad = pb;
        bad.root_signature = (ProtobufCBinaryData){65, longsig}; /* another size */
        assert_rc(refex_batch_verify_key(&bad, leaves[i], pk), REFEX_E_BAD_SIGNATURE);
        bad.root_signature = (ProtobufCBinaryData){63, longsig};
        assert_rc(refex_batch_verify_key(&bad, leaves[i], pk), REFEX_E_BAD_SIGNATURE);
    }
    sodium_memzero(sk, sizeof sk);
    json_decref(doc);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_size_and_index),
        cmocka_unit_test(test_damaged_proofs),
        cmocka_unit_test(test_leaf_kinds_differ),
        cmocka_unit_test(test_cache_never_skips_directory),
        cmocka_unit_test(test_cache_bounded),
        cmocka_unit_test(test_known_answers),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
