/* Tests for lib/merkle.c: every public transparency-dev/merkle verification vector, known
 * answers from the RFC 6962 test tree, and generated proofs for every tree of up to 70 leaves,
 * which must verify and must stop verifying when any byte of them or of a root is damaged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <sys/stat.h>

#include "merkle.h"
#include "util.h"

#define H     REFEX_MERKLE_HASH
#define MAX_N 70

/* Leaf hashes of "leaf-0" .. "leaf-69". */
static uint8_t leaves[MAX_N][H];

static int group_setup(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_N; i++) {
        char data[32];
        int len = snprintf(data, sizeof data, "leaf-%d", i);
        refex_merkle_leaf_hash((const uint8_t *)data, (size_t)len, leaves[i]);
    }
    return 0;
}

static void hex_to_hash(const char *hex, uint8_t out[H])
{
    assert_ok(refex_hex_decode(out, H, hex));
}

/* MTH straight from RFC 6962 2.1, recursive, as an independent check of refex_merkle_root. */
static void reference_root(const uint8_t (*l)[H], uint64_t n, uint8_t out[H])
{
    uint8_t left[H], right[H];
    uint64_t k = 1;
    if (n == 1) {
        memcpy(out, l[0], H);
        return;
    }
    while (k * 2 < n)
        k *= 2;
    reference_root(l, k, left);
    reference_root(l + k, n - k, right);
    refex_merkle_node_hash(left, right, out);
}

/* ---- known answers ---- */

static void test_empty_root(void **state)
{
    (void)state;
    uint8_t root[H], want[H];
    hex_to_hash("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", want);
    assert_ok(refex_merkle_root(NULL, 0, root));
    assert_memory_equal(root, want, H);
    crypto_hash_sha256(want, (const uint8_t *)"", 0);
    assert_memory_equal(root, want, H);
}

/* The RFC 6962 test tree, with roots and proofs as in transparency-dev/merkle's
 * proof/verify_test.go (Apache License 2.0). */
static const struct {
    const char *data;
    size_t len;
} rfc_leaves[8] = {
    {"", 0},
    {"\x00", 1},
    {"\x10", 1},
    {"\x20\x21", 2},
    {"\x30\x31", 2},
    {"\x40\x41\x42\x43", 4},
    {"\x50\x51\x52\x53\x54\x55\x56\x57", 8},
    {"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f", 16},
};

static const char *const rfc_roots[8] = {
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
};

/* Inclusion: a = leaf index, b = tree size. Consistency: a = size1, b = size2. */
static const struct {
    uint64_t a, b;
    size_t len;
    const char *proof[3];
} rfc_inclusion[] =
    {
        {0,
         8,
         3,
         {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
          "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
          "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
        {5,
         8,
         3,
         {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
          "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
          "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
        {2, 3, 1, {"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"}},
        {1,
         5,
         3,
         {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
          "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
          "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
},
  rfc_consistency[] = {
      {1,
       8,
       3,
       {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
      {6,
       8,
       3,
       {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
      {2,
       5,
       2,
       {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
      {6,
       7,
       3,
       {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
};

static void assert_proof(uint8_t (*got)[H], size_t got_len, const char *const *want,
                         size_t want_len)
{
    assert_int_equal(got_len, want_len);
    for (size_t j = 0; j < want_len; j++) {
        uint8_t h[H];
        hex_to_hash(want[j], h);
        assert_memory_equal(got[j], h, H);
    }
}

static void test_rfc6962_tree(void **state)
{
    (void)state;
    uint8_t l[8][H], root[H], want[H], roots[8][H];
    uint8_t(*proof)[H];
    size_t len;

    for (int i = 0; i < 8; i++)
        refex_merkle_leaf_hash((const uint8_t *)rfc_leaves[i].data, rfc_leaves[i].len, l[i]);
    hex_to_hash("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328", want);
    assert_ok(refex_merkle_root(l, 8, root));
    assert_memory_equal(root, want, H);
    for (int n = 1; n <= 8; n++) {
        hex_to_hash(rfc_roots[n - 1], roots[n - 1]);
        assert_ok(refex_merkle_root(l, (uint64_t)n, root));
        assert_memory_equal(root, roots[n - 1], H);
    }
    /* A one-leaf tree's root is its leaf hash. */
    assert_memory_equal(l[0], roots[0], H);

    for (size_t c = 0; c < sizeof rfc_inclusion / sizeof rfc_inclusion[0]; c++) {
        uint64_t i = rfc_inclusion[c].a, n = rfc_inclusion[c].b;
        assert_ok(refex_merkle_inclusion_proof(l, n, i, &proof, &len));
        assert_proof(proof, len, rfc_inclusion[c].proof, rfc_inclusion[c].len);
        assert_ok(refex_merkle_verify_inclusion(i, n, l[i], proof, len, roots[n - 1]));
        free(proof);
    }
    for (size_t c = 0; c < sizeof rfc_consistency / sizeof rfc_consistency[0]; c++) {
        uint64_t m = rfc_consistency[c].a, n = rfc_consistency[c].b;
        assert_ok(refex_merkle_consistency_proof(l, m, n, &proof, &len));
        assert_proof(proof, len, rfc_consistency[c].proof, rfc_consistency[c].len);
        assert_ok(refex_merkle_verify_consistency(m, n, roots[m - 1], roots[n - 1], proof, len));
        free(proof);
    }
}

/* ---- generated proofs ---- */

static void test_roots_match_reference(void **state)
{
    (void)state;
    for (uint64_t n = 1; n <= MAX_N; n++) {
        uint8_t got[H], want[H];
        assert_ok(refex_merkle_root(leaves, n, got));
        reference_root(leaves, n, want);
        assert_memory_equal(got, want, H);
    }
}

/* Any one flipped bit in the proof, the leaf or the root must make verification fail. */
static void check_inclusion_damage(uint64_t i, uint64_t n, uint8_t (*proof)[H], size_t len,
                                   uint8_t root[H])
{
    uint8_t leaf[H];
    memcpy(leaf, leaves[i], H);
    for (size_t j = 0; j < len; j++)
        for (size_t b = 0; b < H; b++) {
            proof[j][b] ^= 1;
            int rc = refex_merkle_verify_inclusion(i, n, leaf, proof, len, root);
            proof[j][b] ^= 1;
            if (rc != REFEX_E_TAMPERED)
                fail_msg("inclusion %" PRIu64 "/%" PRIu64 ": proof[%zu] byte %zu flipped: %s", i, n,
                         j, b, refex_errname(rc));
        }
    for (size_t b = 0; b < H; b++) {
        root[b] ^= 1;
        int rc = refex_merkle_verify_inclusion(i, n, leaf, proof, len, root);
        root[b] ^= 1;
        leaf[b] ^= 1;
        int rc2 = refex_merkle_verify_inclusion(i, n, leaf, proof, len, root);
        leaf[b] ^= 1;
        if (rc != REFEX_E_TAMPERED || rc2 != REFEX_E_TAMPERED)
            fail_msg("inclusion %" PRIu64 "/%" PRIu64 ": byte %zu of root/leaf flipped: %s/%s", i,
                     n, b, refex_errname(rc), refex_errname(rc2));
    }
}

static void test_inclusion_generated(void **state)
{
    (void)state;
    for (uint64_t n = 1; n <= MAX_N; n++) {
        uint8_t root[H];
        assert_ok(refex_merkle_root(leaves, n, root));
        for (uint64_t i = 0; i < n; i++) {
            uint8_t(*proof)[H], (*longer)[H];
            size_t len;
            assert_ok(refex_merkle_inclusion_proof(leaves, n, i, &proof, &len));
            assert_true(len <= 7);
            assert_true((len == 0) == (proof == NULL));
            assert_ok(refex_merkle_verify_inclusion(i, n, leaves[i], proof, len, root));
            check_inclusion_damage(i, n, proof, len, root);

            /* Wrong position or tree size. */
            assert_rc(refex_merkle_verify_inclusion(n, n, leaves[i], proof, len, root),
                      REFEX_E_INVAL);
            assert_int_not_equal(
                refex_merkle_verify_inclusion(i, n * 2, leaves[i], proof, len, root), REFEX_OK);
            if (n > 1 && i < n / 2)
                assert_int_not_equal(
                    refex_merkle_verify_inclusion(i, n / 2, leaves[i], proof, len, root), REFEX_OK);
            if ((i ^ 2) < n && (i ^ 2) != i)
                assert_int_not_equal(
                    refex_merkle_verify_inclusion(i ^ 2, n, leaves[i], proof, len, root), REFEX_OK);
            if (i + 1 < n)
                assert_int_not_equal(
                    refex_merkle_verify_inclusion(i + 1, n, leaves[i], proof, len, root), REFEX_OK);
            if (i > 0)
                assert_int_not_equal(
                    refex_merkle_verify_inclusion(i - 1, n, leaves[i], proof, len, root), REFEX_OK);
            /* Extra and missing entries. */
            assert_non_null(longer = calloc(len + 1, H));
            if (len > 0)
                memcpy(longer, proof, len * H);
            memcpy(longer[len], root, H);
            assert_rc(refex_merkle_verify_inclusion(i, n, leaves[i], longer, len + 1, root),
                      REFEX_E_INVAL);
            if (len > 0)
                assert_rc(refex_merkle_verify_inclusion(i, n, leaves[i], proof, len - 1, root),
                          REFEX_E_INVAL);
            free(longer);
            free(proof);
        }
    }
}

/* root1 and root2 may be the same buffer (m == n), so damage copies of them. */
static void check_consistency_damage(uint64_t m, uint64_t n, uint8_t (*proof)[H], size_t len,
                                     const uint8_t root1_in[H], const uint8_t root2_in[H])
{
    uint8_t root1[H], root2[H];
    memcpy(root1, root1_in, H);
    memcpy(root2, root2_in, H);
    for (size_t j = 0; j < len; j++)
        for (size_t b = 0; b < H; b++) {
            proof[j][b] ^= 1;
            int rc = refex_merkle_verify_consistency(m, n, root1, root2, proof, len);
            proof[j][b] ^= 1;
            if (rc != REFEX_E_TAMPERED)
                fail_msg("consistency %" PRIu64 "->%" PRIu64 ": proof[%zu] byte %zu flipped: %s", m,
                         n, j, b, refex_errname(rc));
        }
    for (size_t b = 0; b < H; b++) {
        root1[b] ^= 1;
        int rc1 = refex_merkle_verify_consistency(m, n, root1, root2, proof, len);
        root1[b] ^= 1;
        root2[b] ^= 1;
        int rc2 = refex_merkle_verify_consistency(m, n, root1, root2, proof, len);
        root2[b] ^= 1;
        if (rc1 != REFEX_E_TAMPERED || rc2 != REFEX_E_TAMPERED)
            fail_msg("consistency %" PRIu64 "->%" PRIu64 ": byte %zu of root1/root2 flipped: %s/%s",
                     m, n, b, refex_errname(rc1), refex_errname(rc2));
    }
}

/* refex_merkle_root_from_inclusion over every generated proof of trees up to MAX_N leaves
 * gives the tree's root; other indices, sizes and proof lengths give another root or
 * REFEX_E_INVAL. */
static void test_root_from_inclusion(void **state)
{
    (void)state;
    uint8_t root[H], got[H];
    for (uint64_t n = 1; n <= MAX_N; n++) {
        assert_ok(refex_merkle_root(leaves, n, root));
        for (uint64_t i = 0; i < n; i++) {
            uint8_t(*proof)[H] = NULL;
            size_t len = 0;
            assert_ok(refex_merkle_inclusion_proof(leaves, n, i, &proof, &len));
            assert_ok(refex_merkle_root_from_inclusion(i, n, leaves[i], proof, len, got));
            assert_memory_equal(got, root, H);
            assert_rc(refex_merkle_root_from_inclusion(n, n, leaves[i], proof, len, got),
                      REFEX_E_INVAL);
            if (len > 0)
                assert_rc(refex_merkle_root_from_inclusion(i, n, leaves[i], proof, len - 1, got),
                          REFEX_E_INVAL);
            if (i + 1 < n &&
                refex_merkle_root_from_inclusion(i + 1, n, leaves[i], proof, len, got) == REFEX_OK)
                assert_memory_not_equal(got, root, H);
            free(proof);
        }
    }
    assert_rc(refex_merkle_root_from_inclusion(0, 0, leaves[0], NULL, 0, got), REFEX_E_INVAL);
    assert_ok(refex_merkle_root_from_inclusion(0, 1, leaves[0], NULL, 0, got));
    assert_memory_equal(got, leaves[0], H); /* a tree of one: the root is the leaf */
}

static void test_consistency_generated(void **state)
{
    (void)state;
    uint8_t roots[MAX_N + 1][H];
    for (uint64_t n = 1; n <= MAX_N; n++)
        assert_ok(refex_merkle_root(leaves, n, roots[n]));
    for (uint64_t n = 1; n <= MAX_N; n++)
        for (uint64_t m = 1; m <= n; m++) {
            uint8_t(*proof)[H], (*longer)[H];
            size_t len;
            assert_ok(refex_merkle_consistency_proof(leaves, m, n, &proof, &len));
            assert_true(len <= 8);
            assert_true((len == 0) == (m == n));
            assert_true((len == 0) == (proof == NULL));
            assert_ok(refex_merkle_verify_consistency(m, n, roots[m], roots[n], proof, len));
            check_consistency_damage(m, n, proof, len, roots[m], roots[n]);

            /* Other sizes, swapped roots, extra and missing entries. */
            if (m < n) {
                assert_int_not_equal(
                    refex_merkle_verify_consistency(m, n, roots[n], roots[m], proof, len),
                    REFEX_OK);
                assert_int_not_equal(
                    refex_merkle_verify_consistency(m + 1, n, roots[m], roots[n], proof, len),
                    REFEX_OK);
                assert_int_not_equal(
                    refex_merkle_verify_consistency(m, n * 2, roots[m], roots[n], proof, len),
                    REFEX_OK);
                assert_int_not_equal(
                    refex_merkle_verify_consistency(m, n / 2, roots[m], roots[n], proof, len),
                    REFEX_OK);
                if ((m ^ 2) != 0)
                    assert_int_not_equal(
                        refex_merkle_verify_consistency(m ^ 2, n, roots[m], roots[n], proof, len),
                        REFEX_OK);
                assert_rc(refex_merkle_verify_consistency(m, n, roots[m], roots[n], proof, 0),
                          REFEX_E_INVAL);
                assert_rc(refex_merkle_verify_consistency(m, n, roots[m], roots[n], proof, len - 1),
                          REFEX_E_INVAL);
            }
            if (m > 1)
                assert_int_not_equal(
                    refex_merkle_verify_consistency(m - 1, n, roots[m], roots[n], proof, len),
                    REFEX_OK);
            assert_non_null(longer = calloc(len + 1, H));
            if (len > 0)
                memcpy(longer, proof, len * H);
            memcpy(longer[len], roots[n], H);
            assert_rc(refex_merkle_verify_consistency(m, n, roots[m], roots[n], longer, len + 1),
                      REFEX_E_INVAL);
            free(longer);
            free(proof);
        }
}

/* ---- bad input ---- */

static void test_bad_input(void **state)
{
    (void)state;
    static uint8_t junk[130][H];
    uint8_t root[H] = {0}, leaf[H];
    uint8_t(*proof)[H] = junk;
    size_t len = 99;

    memset(leaf, 0xff, H);
    /* Generators: indices and sizes out of range. */
    assert_rc(refex_merkle_root(NULL, 1, root), REFEX_E_INVAL);
    assert_rc(refex_merkle_inclusion_proof(leaves, 0, 0, &proof, &len), REFEX_E_INVAL);
    assert_null(proof);
    assert_int_equal(len, 0);
    assert_rc(refex_merkle_inclusion_proof(leaves, 5, 5, &proof, &len), REFEX_E_INVAL);
    assert_rc(refex_merkle_inclusion_proof(leaves, 5, UINT64_MAX, &proof, &len), REFEX_E_INVAL);
    assert_rc(refex_merkle_consistency_proof(leaves, 0, 0, &proof, &len), REFEX_E_INVAL);
    assert_rc(refex_merkle_consistency_proof(leaves, 0, 5, &proof, &len), REFEX_E_INVAL);
    assert_rc(refex_merkle_consistency_proof(leaves, 6, 5, &proof, &len), REFEX_E_INVAL);

    /* Verifiers: impossible sizes and indices. */
    assert_rc(refex_merkle_verify_inclusion(0, 0, leaf, NULL, 0, root), REFEX_E_INVAL);
    assert_rc(refex_merkle_verify_inclusion(UINT64_MAX, UINT64_MAX, leaf, junk, 64, root),
              REFEX_E_INVAL);
    assert_rc(refex_merkle_verify_inclusion(0, 2, leaf, NULL, 1, root), REFEX_E_INVAL);
    assert_rc(refex_merkle_verify_consistency(0, 0, root, root, NULL, 0), REFEX_E_INVAL);
    assert_rc(refex_merkle_verify_consistency(0, 1, root, root, NULL, 0), REFEX_E_INVAL);
    assert_rc(refex_merkle_verify_consistency(2, 1, root, root, NULL, 0), REFEX_E_INVAL);
    assert_rc(refex_merkle_verify_consistency(1, 2, root, root, NULL, 1), REFEX_E_INVAL);
    assert_rc(refex_merkle_verify_consistency(3, 3, root, root, junk, 1), REFEX_E_INVAL);
    assert_rc(refex_merkle_verify_consistency(1, 2, root, root, junk, SIZE_MAX), REFEX_E_INVAL);
    assert_rc(refex_merkle_verify_inclusion(0, 2, leaf, junk, SIZE_MAX, root), REFEX_E_INVAL);

    /* Trees far too big to build: every proof length is either the wrong length or a
     * well-formed proof that does not match; never OK, never a crash (ASan/UBSan watch the
     * 64-level paths, including index 0 in a tree of 2^63 + 1 leaves). */
    static const uint64_t big[] = {UINT64_MAX,
                                   UINT64_MAX - 1,
                                   (UINT64_C(1) << 63) + 1,
                                   UINT64_C(1) << 63,
                                   (UINT64_C(1) << 63) - 1,
                                   UINT64_C(1) << 32,
                                   3};
    int tampered = 0;
    for (size_t a = 0; a < sizeof big / sizeof big[0]; a++)
        for (size_t b = 0; b < sizeof big / sizeof big[0]; b++) {
            uint64_t s1 = big[a] < big[b] ? big[a] : big[b], s2 = big[a] < big[b] ? big[b] : big[a];
            const uint64_t idx[] = {0, 1, s1 - 1, s2 - 1, s2 / 2, s2 - 2};
            for (size_t k = 0; k <= 130; k++) {
                int rc = refex_merkle_verify_consistency(s1, s2, root, leaf, junk, k);
                assert_true(rc == REFEX_E_INVAL || rc == REFEX_E_TAMPERED);
                tampered += rc == REFEX_E_TAMPERED;
                for (size_t x = 0; x < sizeof idx / sizeof idx[0]; x++) {
                    rc = refex_merkle_verify_inclusion(idx[x], s2, leaf, junk, k, root);
                    assert_true(rc == REFEX_E_INVAL || rc == REFEX_E_TAMPERED);
                    tampered += rc == REFEX_E_TAMPERED;
                }
            }
        }
    assert_true(tampered > 0);
    /* The deepest inclusion path: 64 inner levels, no border. */
    assert_rc(refex_merkle_verify_inclusion(0, (UINT64_C(1) << 63) + 1, leaf, junk, 64, root),
              REFEX_E_TAMPERED);
    assert_rc(refex_merkle_verify_inclusion(UINT64_MAX - 1, UINT64_MAX, leaf, junk, 63, root),
              REFEX_E_TAMPERED);
}

/* ---- the public vectors ---- */

/* Vectors whose expectation cannot hold, and why (none: roots of other lengths go through
 * refex_merkle_verify_consistency_bytes, as upstream treats them). */
static const struct {
    const char *path;
    const char *why;
} divergences[] = {
    {"", ""},
};

typedef struct {
    const char *root; /* $REFEX_VECTORS/merkle */
    int inclusion, consistency, divergent, failures;
} tally;

/* Exact unsigned value of the integer member key. jansson holds integers as int64 and cannot
 * parse 2^64 - 1 (leafIdx-sub-@1), so the file is parsed with JSON_DECODE_INT_AS_REAL and the
 * digits are read from the text, then checked against jansson's value. -1 if absent or not a
 * non-negative integer. */
static int get_u64(const char *text, const json_t *obj, const char *key, uint64_t *out)
{
    char pat[32], *end;
    const char *p;
    const json_t *v = json_object_get(obj, key);
    unsigned long long u;

    snprintf(pat, sizeof pat, "\"%s\"", key);
    if (!json_is_number(v) || !(p = strstr(text, pat)) || strstr(p + 1, pat))
        return -1;
    p += strlen(pat);
    p += strspn(p, " \t\r\n");
    if (*p++ != ':')
        return -1;
    p += strspn(p, " \t\r\n");
    if (*p < '0' || *p > '9')
        return -1;
    errno = 0;
    u = strtoull(p, &end, 10);
    if (errno == ERANGE || !strchr(",} \t\r\n", *end) || (double)u != json_number_value(v))
        return -1;
    *out = (uint64_t)u;
    return 0;
}

/* 1: a 32-byte hash, in out; 0: valid base64 of another length; -1: not a base64 string. */
static int get_hash(const json_t *v, uint8_t out[H])
{
    const char *s = json_string_value(v);
    size_t slen = json_string_length(v), cap = slen / 4 * 3 + 3, bin_len = 0;
    uint8_t *buf;
    int rc;

    if (!s || !(buf = malloc(cap)))
        return -1;
    if (sodium_base642bin(buf, cap, s, slen, NULL, &bin_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        rc = -1;
    else if (bin_len != H)
        rc = 0;
    else {
        memcpy(out, buf, H);
        rc = 1;
    }
    free(buf);
    return rc;
}

/* The proof array (null means empty). *proof gets at least one slot. Returns 1 if all entries
 * are 32-byte hashes, 0 if some are not, -1 if malformed. */
static int get_proof(const json_t *v, uint8_t (**proof)[H], size_t *len)
{
    size_t n = json_is_array(v) ? json_array_size(v) : 0;
    int all = 1;
    if (!json_is_null(v) && !json_is_array(v))
        return -1;
    if (!(*proof = calloc(n + 1, H)))
        return -1;
    *len = n;
    for (size_t j = 0; j < n; j++) {
        int rc = get_hash(json_array_get(v, j), (*proof)[j]);
        if (rc < 0)
            return -1;
        all &= rc;
    }
    return all;
}

/* Runs one vector file; returns the verifier's code, or REFEX_E_INVAL when a hash in it is
 * not 32 bytes (our API cannot even express it), via *rc. -1 if the file is malformed. */
static int run_vector(const char *path, int is_inclusion, int *rc, int *want_err, int *by_size,
                      char *desc, size_t desc_len)
{
    uint8_t *text = NULL;
    size_t text_len;
    json_t *j = NULL;
    json_error_t jerr;
    uint8_t(*proof)[H] = NULL;
    size_t proof_len = 0;
    uint8_t a[H], b[H];
    uint64_t x, y;
    int ok = -1, ha, hb, hp;

    if (refex_file_read(path, 1 << 20, &text, &text_len) != REFEX_OK)
        goto out;
    if (!(j = json_loadb((const char *)text, text_len, JSON_DECODE_INT_AS_REAL, &jerr))) {
        fprintf(stderr, "%s: line %d: %s\n", path, jerr.line, jerr.text);
        goto out;
    }
    if (!json_is_boolean(json_object_get(j, "wantErr")) ||
        !json_is_string(json_object_get(j, "desc")))
        goto out;
    *want_err = json_is_true(json_object_get(j, "wantErr"));
    snprintf(desc, desc_len, "%s", json_string_value(json_object_get(j, "desc")));
    hp = get_proof(json_object_get(j, "proof"), &proof, &proof_len);
    if (is_inclusion) {
        if (get_u64((const char *)text, j, "leafIdx", &x) ||
            get_u64((const char *)text, j, "treeSize", &y))
            goto out;
        ha = get_hash(json_object_get(j, "leafHash"), a);
        hb = get_hash(json_object_get(j, "root"), b);
    } else {
        if (get_u64((const char *)text, j, "size1", &x) ||
            get_u64((const char *)text, j, "size2", &y))
            goto out;
        ha = get_hash(json_object_get(j, "root1"), a);
        hb = get_hash(json_object_get(j, "root2"), b);
    }
    if (ha < 0 || hb < 0 || hp < 0)
        goto out;
    *by_size = !(ha && hb && hp);
    if (*by_size && !is_inclusion && hp) {
        /* Roots that are not 32 bytes: compare them as byte strings, like upstream. */
        uint8_t r1[256], r2[256];
        size_t l1 = 0, l2 = 0;
        const char *s1 = json_string_value(json_object_get(j, "root1"));
        const char *s2 = json_string_value(json_object_get(j, "root2"));
        if (s1 && s2 &&
            sodium_base642bin(r1, sizeof r1, s1, strlen(s1), NULL, &l1, NULL,
                              sodium_base64_VARIANT_ORIGINAL) == 0 &&
            sodium_base642bin(r2, sizeof r2, s2, strlen(s2), NULL, &l2, NULL,
                              sodium_base64_VARIANT_ORIGINAL) == 0)
            *rc = refex_merkle_verify_consistency_bytes(x, y, r1, l1, r2, l2, proof, proof_len);
        else
            *rc = REFEX_E_INVAL;
    } else if (*by_size)
        *rc = REFEX_E_INVAL;
    else if (is_inclusion) {
        *rc = refex_merkle_verify_inclusion(x, y, a, proof, proof_len, b);
        /* refex_merkle_root_from_inclusion must agree: the root it gives is b exactly when
         * the proof verifies, and it refuses exactly the same shapes. */
        uint8_t got[H];
        int rr = refex_merkle_root_from_inclusion(x, y, a, proof, proof_len, got);
        if (rr == REFEX_OK)
            rr = sodium_memcmp(got, b, H) == 0 ? REFEX_OK : REFEX_E_TAMPERED;
        if (rr != *rc)
            *rc = REFEX_E_CRYPTO; /* reported as a failure whatever the vector wants */
    } else
        *rc = refex_merkle_verify_consistency(x, y, a, b, proof, proof_len);
    ok = 0;
out:
    free(proof);
    json_decref(j);
    free(text);
    return ok;
}

static const char *divergence(const char *rel)
{
    for (size_t d = 0; d < sizeof divergences / sizeof divergences[0]; d++)
        if (strcmp(rel, divergences[d].path) == 0)
            return divergences[d].why;
    return NULL;
}

static void check_vector(tally *t, const char *path)
{
    const char *rel = path + strlen(t->root) + 1, *why;
    int is_inclusion = strncmp(rel, "inclusion/", 10) == 0;
    int rc = REFEX_OK, want_err = 0, by_size = 0;
    char desc[256] = "";

    if (run_vector(path, is_inclusion, &rc, &want_err, &by_size, desc, sizeof desc) != 0) {
        printf("MALFORMED %s\n", rel);
        t->failures++;
        return;
    }
    if (is_inclusion)
        t->inclusion++;
    else
        t->consistency++;
    if (want_err ? rc == REFEX_E_INVAL || rc == REFEX_E_TAMPERED : rc == REFEX_OK)
        return;
    if (!want_err && by_size && (why = divergence(rel))) {
        printf("known divergence: %s (\"%s\"): wantErr=false, rejected: %s\n", rel, desc, why);
        t->divergent++;
        return;
    }
    printf("FAIL %s (\"%s\"): got %s, wantErr=%s\n", rel, desc, refex_errname(rc),
           want_err ? "true" : "false");
    t->failures++;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Every *.json under dir (inclusion/additional nests one level deeper than the rest). */
static void walk(tally *t, const char *dir, int depth)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, by_name);
    if (n < 0) {
        printf("cannot read %s: %s\n", dir, strerror(errno));
        t->failures++;
        return;
    }
    for (int k = 0; k < n; k++) {
        const char *name = names[k]->d_name;
        char path[4096];
        struct stat st;
        size_t len = strlen(name);
        if (name[0] != '.' &&
            (size_t)snprintf(path, sizeof path, "%s/%s", dir, name) < sizeof path &&
            stat(path, &st) == 0) {
            if (S_ISDIR(st.st_mode) && depth < 4)
                walk(t, path, depth + 1);
            else if (S_ISREG(st.st_mode) && len > 5 && strcmp(name + len - 5, ".json") == 0)
                check_vector(t, path);
        }
        free(names[k]);
    }
    free(names);
}

static void test_vectors(void **state)
{
    (void)state;
    const char *env = getenv("REFEX_VECTORS"), *ci = getenv("CI");
    char root[4096], sub[4200];
    struct stat st;
    tally t = {root, 0, 0, 0, 0};

    if (!env || !*env || (size_t)snprintf(root, sizeof root, "%s/merkle", env) >= sizeof root ||
        stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        if (ci && *ci)
            fail_msg("merkle vectors not found (REFEX_VECTORS=%s) and CI is set",
                     env ? env : "(unset)");
        printf("merkle vectors not found (REFEX_VECTORS=%s); skipping\n", env ? env : "(unset)");
        skip();
    }
    snprintf(sub, sizeof sub, "%s/inclusion", root);
    walk(&t, sub, 0);
    snprintf(sub, sizeof sub, "%s/consistency", root);
    walk(&t, sub, 0);

    if (t.failures)
        fail_msg("merkle vectors: %d failed (listed above)", t.failures);
    if (t.inclusion == 0 || t.consistency == 0)
        fail_msg("merkle vectors: found %d inclusion and %d consistency files under %s",
                 t.inclusion, t.consistency, root);
    if (t.divergent)
        printf("merkle vectors: %d inclusion, %d consistency, all as expected but %d documented "
               "divergence%s (above)\n",
               t.inclusion, t.consistency, t.divergent, t.divergent == 1 ? "" : "s");
    else
        printf("merkle vectors: %d inclusion, %d consistency, all as expected\n", t.inclusion,
               t.consistency);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_root),
        cmocka_unit_test(test_rfc6962_tree),
        cmocka_unit_test(test_roots_match_reference),
        cmocka_unit_test(test_inclusion_generated),
        cmocka_unit_test(test_root_from_inclusion),
        cmocka_unit_test(test_consistency_generated),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_vectors),
    };
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
