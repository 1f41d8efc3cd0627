/* Tests for lib/receipt.c: signed receipts survive sign/verify with every field intact, and
 * forged, tampered, truncated and structurally invalid receipts are refused with a typed error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <sodium.h>

#include "batchsig.h"
#include "directory.h"
#include "keys.h"
#include "receipt.h"
#include "util.h"

/* Sender, recipient (the usual signer), a third agency and the broker are in the directory;
 * the outsider is not. */
static refex_keys *sender, *rcpt, *other, *brk, *outsider;
static refex_directory *dir;

static const uint8_t MSG_ID[16] = {0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27,
                                   0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f};

static int add_agency(refex_directory *d, const refex_keys *k)
{
    refex_agency a;
    refex_agency_from_pubkeys(&a, &k->pub, NULL);
    return refex_directory_add(d, &a, 0);
}

static int group_setup(void **state)
{
    (void)state;
    if (refex_keys_new("midwifery", "maternity", &sender) != REFEX_OK ||
        refex_keys_new("social-care", "childrens-services", &rcpt) != REFEX_OK ||
        refex_keys_new("health-visiting", "health", &other) != REFEX_OK ||
        refex_keys_new("broker", "broker", &brk) != REFEX_OK ||
        refex_keys_new("police", "police", &outsider) != REFEX_OK)
        return -1;
    if (refex_directory_new(&dir) != REFEX_OK || add_agency(dir, sender) != REFEX_OK ||
        add_agency(dir, rcpt) != REFEX_OK || add_agency(dir, other) != REFEX_OK ||
        add_agency(dir, brk) != REFEX_OK)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    refex_directory_destroy(&dir);
    refex_keys_destroy(&sender);
    refex_keys_destroy(&rcpt);
    refex_keys_destroy(&other);
    refex_keys_destroy(&brk);
    refex_keys_destroy(&outsider);
    return 0;
}

/* A delivery receipt from social-care about a message from midwifery. */
static void make_receipt(refex_receipt *r, int with_hash)
{
    memset(r, 0, sizeof *r);
    memcpy(r->message_id, MSG_ID, 16);
    snprintf(r->sender, sizeof r->sender, "%s", "midwifery");
    snprintf(r->recipient, sizeof r->recipient, "%s", "social-care");
    snprintf(r->signer, sizeof r->signer, "%s", "social-care");
    r->code = 0;
    r->time_ms = 1700000000123LL;
    if (with_hash) {
        for (int i = 0; i < 32; i++)
            r->envelope_hash[i] = (uint8_t)(0xa0 + i);
        r->has_envelope_hash = 1;
    }
}

static void check_equal(const refex_receipt *got, const refex_receipt *want)
{
    assert_memory_equal(got->message_id, want->message_id, 16);
    assert_string_equal(got->sender, want->sender);
    assert_string_equal(got->recipient, want->recipient);
    assert_int_equal(got->code, want->code);
    assert_true(got->time_ms == want->time_ms);
    assert_int_equal(!!got->has_envelope_hash, !!want->has_envelope_hash);
    if (want->has_envelope_hash) {
        assert_memory_equal(got->envelope_hash, want->envelope_hash, 32);
    } else {
        static const uint8_t zero[32];
        assert_memory_equal(got->envelope_hash, zero, 32);
    }
    assert_string_equal(got->signer, want->signer);
}

static uint8_t *sign(const refex_receipt *r, const uint8_t sk[64], size_t *len)
{
    uint8_t *buf = NULL;
    *len = 0;
    assert_ok(refex_receipt_sign(r, sk, &buf, len));
    assert_non_null(buf);
    assert_true(*len > 0);
    return buf;
}

static Refex__V1__SignedReceipt *unpack_signed(const uint8_t *buf, size_t len)
{
    Refex__V1__SignedReceipt *sr = refex__v1__signed_receipt__unpack(NULL, len, buf);
    assert_non_null(sr);
    return sr;
}

/* Ed25519 over ctx (with its NUL) || bytes, as docs/protocol.md defines it; ctx NULL signs
 * the bare bytes. */
static void sign_ctx(const char *ctx, const uint8_t *b, size_t len, const uint8_t sk[64],
                     uint8_t sig[64])
{
    size_t cl = ctx ? strlen(ctx) + 1 : 0;
    uint8_t *m = malloc(cl + len + 1);
    assert_non_null(m);
    if (cl)
        memcpy(m, ctx, cl);
    if (len)
        memcpy(m + cl, b, len);
    crypto_sign_detached(sig, NULL, m, cl + len, sk);
    free(m);
}

/* The root signature of a batch of one over receipt bytes b, as docs/protocol.md 5.6
 * defines it: Ed25519 over "refex/batch/v1" NUL || u64be(1) || leaf, where the leaf is the
 * RFC 6962 leaf hash of "refex/receipt/v2" NUL || SHA-256(b). Computed from the spec here,
 * not with lib/batchsig.c. */
static void sign_batch1(const uint8_t *b, size_t len, const uint8_t sk[64], uint8_t sig[64])
{
    uint8_t data[17 + 32], leaf_in[1 + sizeof data], m[15 + 8 + 32] = {0};
    memcpy(data, "refex/receipt/v2", 17);
    crypto_hash_sha256(data + 17, b, len);
    leaf_in[0] = 0x00;
    memcpy(leaf_in + 1, data, sizeof data);
    memcpy(m, "refex/batch/v1", 15);
    m[15 + 7] = 1;
    crypto_hash_sha256(m + 15 + 8, leaf_in, sizeof leaf_in);
    crypto_sign_detached(sig, NULL, m, sizeof m, sk);
}

static uint8_t *pack_receipt(const Refex__V1__Receipt *p, size_t *len)
{
    *len = refex__v1__receipt__get_packed_size(p);
    uint8_t *b = malloc(*len ? *len : 1);
    assert_non_null(b);
    refex__v1__receipt__pack(p, b);
    return b;
}

/* The Receipt protobuf that refex_receipt_sign would build for make_receipt(r, 1); fields
 * point into r. */
static void receipt_proto(Refex__V1__Receipt *p, refex_receipt *r)
{
    refex__v1__receipt__init(p);
    p->version = 1;
    p->message_id = (ProtobufCBinaryData){16, r->message_id};
    p->sender = r->sender;
    p->recipient = r->recipient;
    p->code = r->code;
    p->time_ms = r->time_ms;
    p->envelope_hash = (ProtobufCBinaryData){32, r->envelope_hash};
    p->signer = r->signer;
}

/* Verifies receipt bytes carried with sig (siglen bytes) as the root signature of a batch of
 * one (sig NULL: no batch proof), through the struct and through the packed form; both must
 * agree. */
static int verify_parts(const uint8_t *b, size_t len, const uint8_t *sig, size_t siglen,
                        refex_receipt *out)
{
    Refex__V1__SignedReceipt sr = REFEX__V1__SIGNED_RECEIPT__INIT;
    Refex__V1__BatchProof pb = REFEX__V1__BATCH_PROOF__INIT;
    sr.receipt = (ProtobufCBinaryData){len, (uint8_t *)b};
    pb.tree_size = 1;
    pb.root_signature = (ProtobufCBinaryData){siglen, (uint8_t *)sig};
    sr.batch = sig ? &pb : NULL; /* no signature at all: no batch proof */
    int rc = refex_receipt_verify(&sr, dir, out);
    size_t n = refex__v1__signed_receipt__get_packed_size(&sr);
    uint8_t *packed = malloc(n ? n : 1);
    assert_non_null(packed);
    refex__v1__signed_receipt__pack(&sr, packed);
    int rc2 = refex_receipt_verify_packed(packed, n, dir, out);
    free(packed);
    if (rc != rc2)
        fail_msg("struct verify %s, packed verify %s", refex_errname(rc), refex_errname(rc2));
    return rc;
}

/* Packs p, signs it correctly with sk and verifies. */
static int verify_hand_built(const Refex__V1__Receipt *p, const uint8_t sk[64])
{
    size_t len = 0;
    uint8_t sig[64], *b = pack_receipt(p, &len);
    refex_receipt out;
    sign_batch1(b, len, sk, sig);
    int rc = verify_parts(b, len, sig, 64, &out);
    free(b);
    return rc;
}

static void test_round_trip_packed(void **state)
{
    (void)state;
    for (int with_hash = 0; with_hash <= 1; with_hash++) {
        refex_receipt r, got;
        make_receipt(&r, with_hash);
        size_t len = 0;
        uint8_t *buf = sign(&r, rcpt->sk->sign_sk, &len);
        memset(&got, 0x5a, sizeof got);
        assert_ok(refex_receipt_verify_packed(buf, len, dir, &got));
        check_equal(&got, &r);
        /* Ed25519 is deterministic: the same receipt signs to the same bytes. */
        size_t len2 = 0;
        uint8_t *buf2 = sign(&r, rcpt->sk->sign_sk, &len2);
        assert_int_equal(len2, len);
        assert_memory_equal(buf2, buf, len);
        free(buf2);
        free(buf);
    }

    /* A broker-signed non-delivery report: no envelope hash, a non-zero code, extreme times. */
    static const int64_t times[] = {0, -1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        refex_receipt r, got;
        make_receipt(&r, 0);
        snprintf(r.signer, sizeof r.signer, "%s", "broker");
        r.code = REFEX_E_EXPIRED;
        r.time_ms = times[i];
        size_t len = 0;
        uint8_t *buf = sign(&r, brk->sk->sign_sk, &len);
        assert_ok(refex_receipt_verify_packed(buf, len, dir, &got));
        check_equal(&got, &r);
        free(buf);
    }

    /* A refusal with the largest code and a 63-character agency id. */
    refex_receipt r, got;
    make_receipt(&r, 1);
    r.code = UINT32_MAX;
    memset(r.sender, 'a', REFEX_ID_MAX - 1);
    r.sender[REFEX_ID_MAX - 1] = '\0';
    size_t len = 0;
    uint8_t *buf = sign(&r, rcpt->sk->sign_sk, &len);
    assert_ok(refex_receipt_verify_packed(buf, len, dir, &got));
    check_equal(&got, &r);
    free(buf);
}

static void test_round_trip_unpacked(void **state)
{
    (void)state;
    for (int with_hash = 0; with_hash <= 1; with_hash++) {
        refex_receipt r, got;
        make_receipt(&r, with_hash);
        r.code = REFEX_E_DECRYPT;
        size_t len = 0;
        uint8_t *buf = sign(&r, rcpt->sk->sign_sk, &len);
        Refex__V1__SignedReceipt *sr = unpack_signed(buf, len);
        assert_int_equal(sr->signature.len, 0);
        assert_true(sr->receipt.len > 0);

        /* The wire format: a batch of one, its root signature by the signer as 5.6 says. */
        assert_non_null(sr->batch);
        assert_int_equal(sr->batch->leaf_index, 0);
        assert_int_equal(sr->batch->tree_size, 1);
        assert_int_equal(sr->batch->n_path, 0);
        assert_int_equal(sr->batch->root_signature.len, 64);
        uint8_t want[64];
        sign_batch1(sr->receipt.data, sr->receipt.len, rcpt->sk->sign_sk, want);
        assert_memory_equal(sr->batch->root_signature.data, want, 64);

        /* The signed bytes are a version-1 Receipt carrying every field. */
        Refex__V1__Receipt *p = refex__v1__receipt__unpack(NULL, sr->receipt.len, sr->receipt.data);
        assert_non_null(p);
        assert_int_equal(p->version, 1);
        assert_int_equal(p->message_id.len, 16);
        assert_memory_equal(p->message_id.data, MSG_ID, 16);
        assert_string_equal(p->sender, "midwifery");
        assert_string_equal(p->recipient, "social-care");
        assert_int_equal(p->code, REFEX_E_DECRYPT);
        assert_true(p->time_ms == r.time_ms);
        assert_int_equal(p->envelope_hash.len, with_hash ? 32 : 0);
        if (with_hash)
            assert_memory_equal(p->envelope_hash.data, r.envelope_hash, 32);
        assert_string_equal(p->signer, "social-care");
        refex__v1__receipt__free_unpacked(p, NULL);

        memset(&got, 0x5a, sizeof got);
        assert_ok(refex_receipt_verify(sr, dir, &got));
        check_equal(&got, &r);
        refex__v1__signed_receipt__free_unpacked(sr, NULL);
        free(buf);
    }
}

/* A receipt built here by hand and signed here verifies: the rejection tests below that
 * build receipts the same way fail only for the reason they change. */
static void test_hand_built_ok(void **state)
{
    (void)state;
    refex_receipt r, got;
    make_receipt(&r, 1);
    Refex__V1__Receipt p;
    receipt_proto(&p, &r);
    size_t len = 0;
    uint8_t sig[64], *b = pack_receipt(&p, &len);
    sign_batch1(b, len, rcpt->sk->sign_sk, sig);
    assert_ok(verify_parts(b, len, sig, 64, &got));
    check_equal(&got, &r);
    free(b);
}

static void test_wrong_key(void **state)
{
    (void)state;
    refex_receipt r, got;
    make_receipt(&r, 1);

    /* Signed by health-visiting, claiming to be social-care. */
    size_t len = 0;
    uint8_t *buf = sign(&r, other->sk->sign_sk, &len);
    assert_rc(refex_receipt_verify_packed(buf, len, dir, &got), REFEX_E_BAD_SIGNATURE);
    free(buf);

    /* The genuine receipt bytes re-signed with other agencies' keys. */
    buf = sign(&r, rcpt->sk->sign_sk, &len);
    Refex__V1__SignedReceipt *sr = unpack_signed(buf, len);
    const refex_keys *others[] = {sender, other, brk, outsider};
    uint8_t sig[64];
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        sign_batch1(sr->receipt.data, sr->receipt.len, others[i]->sk->sign_sk, sig);
        assert_rc(verify_parts(sr->receipt.data, sr->receipt.len, sig, 64, &got),
                  REFEX_E_BAD_SIGNATURE);
    }

    /* The signer's own key, but without the domain separation or with another domain's. */
    sign_ctx(NULL, sr->receipt.data, sr->receipt.len, rcpt->sk->sign_sk, sig);
    assert_rc(verify_parts(sr->receipt.data, sr->receipt.len, sig, 64, &got),
              REFEX_E_BAD_SIGNATURE);
    sign_ctx("refex/envelope/v1", sr->receipt.data, sr->receipt.len, rcpt->sk->sign_sk, sig);
    assert_rc(verify_parts(sr->receipt.data, sr->receipt.len, sig, 64, &got),
              REFEX_E_BAD_SIGNATURE);
    sign_ctx("refex/receipt/v2", sr->receipt.data, sr->receipt.len, rcpt->sk->sign_sk, sig);
    assert_rc(verify_parts(sr->receipt.data, sr->receipt.len, sig, 64, &got),
              REFEX_E_BAD_SIGNATURE);
    /* The context without its NUL. */
    uint8_t *m = malloc(16 + sr->receipt.len);
    assert_non_null(m);
    memcpy(m, "refex/receipt/v1", 16);
    memcpy(m + 16, sr->receipt.data, sr->receipt.len);
    crypto_sign_detached(sig, NULL, m, 16 + sr->receipt.len, rcpt->sk->sign_sk);
    free(m);
    assert_rc(verify_parts(sr->receipt.data, sr->receipt.len, sig, 64, &got),
              REFEX_E_BAD_SIGNATURE);

    /* Appending a second signer field (protobuf keeps the last) changes the signed bytes. */
    static const char alias[] = "health-visiting";
    size_t n = sr->receipt.len + 2 + sizeof alias - 1;
    uint8_t *longer = malloc(n);
    assert_non_null(longer);
    memcpy(longer, sr->receipt.data, sr->receipt.len);
    longer[sr->receipt.len] = (8 << 3) | 2;
    longer[sr->receipt.len + 1] = (uint8_t)(sizeof alias - 1);
    memcpy(longer + sr->receipt.len + 2, alias, sizeof alias - 1);
    assert_rc(verify_parts(longer, n, sr->batch->root_signature.data, 64, &got),
              REFEX_E_BAD_SIGNATURE);
    /* A dangling tag byte after the receipt. */
    assert_rc(verify_parts(longer, sr->receipt.len + 1, sr->batch->root_signature.data, 64, &got),
              REFEX_E_MALFORMED);
    free(longer);

    refex__v1__signed_receipt__free_unpacked(sr, NULL);
    free(buf);
}

static void test_unknown_signer(void **state)
{
    (void)state;
    refex_receipt r, got;
    make_receipt(&r, 1);
    snprintf(r.signer, sizeof r.signer, "%s", "police");
    size_t len = 0;
    uint8_t *buf = sign(&r, outsider->sk->sign_sk, &len);
    assert_rc(refex_receipt_verify_packed(buf, len, dir, &got), REFEX_E_UNKNOWN_AGENCY);
    free(buf);

    /* A genuine receipt, checked against a directory that does not list its signer. */
    refex_directory *small = NULL;
    assert_ok(refex_directory_new(&small));
    make_receipt(&r, 1);
    buf = sign(&r, rcpt->sk->sign_sk, &len);
    assert_rc(refex_receipt_verify_packed(buf, len, small, &got), REFEX_E_UNKNOWN_AGENCY);
    assert_ok(add_agency(small, sender));
    assert_ok(add_agency(small, other));
    assert_rc(refex_receipt_verify_packed(buf, len, small, &got), REFEX_E_UNKNOWN_AGENCY);
    assert_ok(add_agency(small, rcpt));
    assert_ok(refex_receipt_verify_packed(buf, len, small, &got));
    check_equal(&got, &r);
    /* Once the signer is revoked, its receipts are refused. */
    refex_agency revoked;
    refex_agency_from_pubkeys(&revoked, &rcpt->pub, NULL);
    revoked.revoked = 1;
    assert_ok(refex_directory_add(small, &revoked, 1));
    assert_rc(refex_receipt_verify_packed(buf, len, small, &got), REFEX_E_REVOKED);
    free(buf);
    refex_directory_destroy(&small);
    assert_null(small);
}

/* rc for a tampered receipt must not be OK. E_UNKNOWN_AGENCY is allowed only when the
 * tampering renamed the signer to an agency the directory does not list: the key has to be
 * looked up before the signature can be checked. */
static void check_tampered(int rc, const uint8_t *b, size_t len, const char *what, size_t pos)
{
    if (rc == REFEX_E_BAD_SIGNATURE || rc == REFEX_E_MALFORMED)
        return;
    if (rc == REFEX_E_UNKNOWN_AGENCY) {
        Refex__V1__Receipt *p = refex__v1__receipt__unpack(NULL, len, b);
        int renamed = p && strcmp(p->signer, "social-care") != 0 &&
                      refex_directory_find(dir, p->signer) == NULL;
        if (p)
            refex__v1__receipt__free_unpacked(p, NULL);
        if (renamed)
            return;
    }
    fail_msg("%s at %zu: got %s", what, pos, refex_errname(rc));
}

static void test_flipped_bytes(void **state)
{
    (void)state;
    static const uint8_t masks[] = {0x01, 0x02, 0x20, 0x80, 0xff};
    refex_receipt r, got;
    make_receipt(&r, 1);
    size_t len = 0;
    uint8_t *buf = sign(&r, rcpt->sk->sign_sk, &len);
    Refex__V1__SignedReceipt *sr = unpack_signed(buf, len);
    size_t n = sr->receipt.len;
    uint8_t *b = malloc(n);
    assert_non_null(b);
    uint8_t sig[64];

    /* Every byte of the receipt, each with several bit patterns. */
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < sizeof masks; k++) {
            memcpy(b, sr->receipt.data, n);
            b[i] ^= masks[k];
            int rc = verify_parts(b, n, sr->batch->root_signature.data, 64, &got);
            check_tampered(rc, b, n, "receipt byte flipped", i);
        }
    }

    /* Every byte of the signature. */
    for (size_t i = 0; i < 64; i++) {
        for (size_t k = 0; k < sizeof masks; k++) {
            memcpy(sig, sr->batch->root_signature.data, 64);
            sig[i] ^= masks[k];
            assert_rc(verify_parts(sr->receipt.data, n, sig, 64, &got), REFEX_E_BAD_SIGNATURE);
        }
    }

    /* Every byte of the packed SignedReceipt. */
    uint8_t *p = malloc(len);
    assert_non_null(p);
    for (size_t i = 0; i < len; i++) {
        for (size_t k = 0; k < sizeof masks; k++) {
            memcpy(p, buf, len);
            p[i] ^= masks[k];
            int rc = refex_receipt_verify_packed(p, len, dir, &got);
            if (rc == REFEX_E_UNKNOWN_AGENCY) {
                Refex__V1__SignedReceipt *t = unpack_signed(p, len);
                check_tampered(rc, t->receipt.data, t->receipt.len, "packed byte flipped", i);
                refex__v1__signed_receipt__free_unpacked(t, NULL);
            } else {
                check_tampered(rc, NULL, 0, "packed byte flipped", i);
            }
        }
    }

    /* Random multi-byte damage to the receipt. */
    for (int i = 0; i < 2000; i++) {
        memcpy(b, sr->receipt.data, n);
        uint32_t flips = 1 + randombytes_uniform(4);
        for (uint32_t k = 0; k < flips; k++)
            b[randombytes_uniform((uint32_t)n)] ^= (uint8_t)(1 + randombytes_uniform(255));
        if (memcmp(b, sr->receipt.data, n) == 0)
            continue; /* two flips of one byte can cancel out: nothing was damaged */
        int rc = verify_parts(b, n, sr->batch->root_signature.data, 64, &got);
        check_tampered(rc, b, n, "random damage, iteration", (size_t)i);
    }

    free(p);
    free(b);
    refex__v1__signed_receipt__free_unpacked(sr, NULL);
    free(buf);
}

static void test_truncated(void **state)
{
    (void)state;
    refex_receipt r, got;
    make_receipt(&r, 1);
    size_t len = 0;
    uint8_t *buf = sign(&r, rcpt->sk->sign_sk, &len);

    /* The packed SignedReceipt cut at every length. */
    for (size_t cut = 0; cut < len; cut++) {
        /* Exactly `cut` bytes on the heap, so ASan sees any over-read. */
        uint8_t *t = malloc(cut ? cut : 1);
        assert_non_null(t);
        memcpy(t, buf, cut);
        int rc = refex_receipt_verify_packed(t, cut, dir, &got);
        /* Cut where the batch proof begins, it is a whole receipt with no signature. */
        if (rc != REFEX_E_MALFORMED && rc != REFEX_E_BAD_SIGNATURE)
            fail_msg("packed receipt cut to %zu of %zu bytes: got %s", cut, len, refex_errname(rc));
        free(t);
    }

    /* The Receipt inside, cut at every length, with the original signature. */
    Refex__V1__SignedReceipt *sr = unpack_signed(buf, len);
    for (size_t cut = 0; cut < sr->receipt.len; cut++) {
        uint8_t *t = malloc(cut ? cut : 1);
        assert_non_null(t);
        memcpy(t, sr->receipt.data, cut);
        int rc = verify_parts(t, cut, sr->batch->root_signature.data, 64, &got);
        if (rc != REFEX_E_MALFORMED && rc != REFEX_E_BAD_SIGNATURE)
            fail_msg("receipt cut to %zu of %zu bytes: got %s", cut, sr->receipt.len,
                     refex_errname(rc));
        free(t);
    }
    refex__v1__signed_receipt__free_unpacked(sr, NULL);
    free(buf);
}

static void test_signature_length(void **state)
{
    (void)state;
    refex_receipt r, got;
    make_receipt(&r, 1);
    size_t len = 0;
    uint8_t *buf = sign(&r, rcpt->sk->sign_sk, &len);
    Refex__V1__SignedReceipt *sr = unpack_signed(buf, len);
    uint8_t sig[65];
    memcpy(sig, sr->batch->root_signature.data, 64);
    sig[64] = 0;
    /* 63: the genuine signature cut short; 65: the genuine one with a byte after it. */
    assert_rc(verify_parts(sr->receipt.data, sr->receipt.len, sig, 63, &got),
              REFEX_E_BAD_SIGNATURE);
    assert_rc(verify_parts(sr->receipt.data, sr->receipt.len, sig, 65, &got),
              REFEX_E_BAD_SIGNATURE);
    assert_rc(verify_parts(sr->receipt.data, sr->receipt.len, NULL, 0, &got),
              REFEX_E_BAD_SIGNATURE);
    assert_rc(verify_parts(sr->receipt.data, sr->receipt.len, sig, 0, &got), REFEX_E_BAD_SIGNATURE);
    assert_rc(verify_parts(sr->receipt.data, sr->receipt.len, sig, 32, &got),
              REFEX_E_BAD_SIGNATURE);
    /* An old-style signature field beside a valid batch proof. */
    sr->signature = (ProtobufCBinaryData){64, sig};
    assert_rc(refex_receipt_verify(sr, dir, &got), REFEX_E_BAD_SIGNATURE);
    sr->signature = (ProtobufCBinaryData){0, NULL};
    assert_rc(verify_parts(sr->receipt.data, sr->receipt.len, sig, 64, &got), REFEX_OK);

    /* No receipt at all, with a signature of the right length; and no SignedReceipt. */
    assert_rc(verify_parts(NULL, 0, sig, 64, &got), REFEX_E_MALFORMED);
    assert_rc(refex_receipt_verify(NULL, dir, &got), REFEX_E_MALFORMED);
    refex__v1__signed_receipt__free_unpacked(sr, NULL);
    free(buf);
}

static void test_malformed_fields(void **state)
{
    (void)state;
    refex_receipt r;
    Refex__V1__Receipt p;
    static uint8_t long_id[REFEX_ID_MAX + 1];
    memset(long_id, 'a', REFEX_ID_MAX);

    /* Baseline: the hand-built receipt is fine. */
    make_receipt(&r, 1);
    receipt_proto(&p, &r);
    assert_ok(verify_hand_built(&p, rcpt->sk->sign_sk));

    static const uint32_t versions[] = {0, 2, UINT32_MAX};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        receipt_proto(&p, &r);
        p.version = versions[i];
        assert_rc(verify_hand_built(&p, rcpt->sk->sign_sk), REFEX_E_MALFORMED);
    }

    static uint8_t big[33];
    static const size_t id_lens[] = {0, 1, 15, 17, 32};
    for (size_t i = 0; i < sizeof id_lens / sizeof id_lens[0]; i++) {
        receipt_proto(&p, &r);
        p.message_id = (ProtobufCBinaryData){id_lens[i], big};
        assert_rc(verify_hand_built(&p, rcpt->sk->sign_sk), REFEX_E_MALFORMED);
    }

    static const size_t hash_lens[] = {1, 16, 31, 33};
    for (size_t i = 0; i < sizeof hash_lens / sizeof hash_lens[0]; i++) {
        receipt_proto(&p, &r);
        p.envelope_hash = (ProtobufCBinaryData){hash_lens[i], big};
        assert_rc(verify_hand_built(&p, rcpt->sk->sign_sk), REFEX_E_MALFORMED);
    }
    /* No envelope hash is fine (a non-delivery report has none). */
    receipt_proto(&p, &r);
    p.envelope_hash = (ProtobufCBinaryData){0, NULL};
    assert_ok(verify_hand_built(&p, rcpt->sk->sign_sk));

    /* Invalid agency ids in each of sender, recipient and signer, including one a byte too
     * long for refex_receipt's buffers. */
    const char *bad_ids[] = {"Bad Id", "", "-lead", "social_care", (const char *)long_id};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        for (int field = 0; field < 3; field++) {
            receipt_proto(&p, &r);
            char **f = field == 0 ? &p.sender : field == 1 ? &p.recipient : &p.signer;
            *f = (char *)bad_ids[i];
            int rc = verify_hand_built(&p, rcpt->sk->sign_sk);
            if (rc != REFEX_E_MALFORMED)
                fail_msg("id \"%s\" in field %d: got %s", bad_ids[i], field, refex_errname(rc));
        }
    }
}

static void test_sign_invalid_ids(void **state)
{
    (void)state;
    static const char *bad_ids[] = {"", "Bad Id", "-lead", "social_care", "SOCIAL-CARE"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        for (int field = 0; field < 3; field++) {
            refex_receipt r;
            make_receipt(&r, 1);
            char *f = field == 0 ? r.sender : field == 1 ? r.recipient : r.signer;
            snprintf(f, REFEX_ID_MAX, "%s", bad_ids[i]);
            uint8_t *out = NULL;
            size_t len = 0;
            assert_rc(refex_receipt_sign(&r, rcpt->sk->sign_sk, &out, &len), REFEX_E_INVAL);
            assert_null(out);
        }
    }
}

static void test_garbage(void **state)
{
    (void)state;
    refex_receipt got;
    static const uint8_t one[1] = {0};
    assert_rc(refex_receipt_verify_packed(one, 0, dir, &got), REFEX_E_MALFORMED);
    assert_rc(refex_receipt_verify_packed(one, 1, dir, &got), REFEX_E_MALFORMED);

    static const char text[] = "GET / HTTP/1.1\r\nHost: broker\r\n\r\n";
    assert_rc(refex_receipt_verify_packed((const uint8_t *)text, sizeof text - 1, dir, &got),
              REFEX_E_MALFORMED);

    uint8_t ff[64];
    memset(ff, 0xff, sizeof ff);
    assert_rc(refex_receipt_verify_packed(ff, sizeof ff, dir, &got), REFEX_E_MALFORMED);

    /* Only unknown fields; only a signature. */
    static const uint8_t unknown[] = {0x18, 0x05, 0x22, 0x01, 0x00};
    assert_rc(refex_receipt_verify_packed(unknown, sizeof unknown, dir, &got), REFEX_E_MALFORMED);
    uint8_t sig_only[66] = {0x12, 64};
    assert_rc(refex_receipt_verify_packed(sig_only, sizeof sig_only, dir, &got), REFEX_E_MALFORMED);

    /* A receipt field holding garbage instead of a Receipt, with a 64-byte signature. */
    static const uint8_t junk[] = {0xff, 0xff, 0xff};
    uint8_t sig[64] = {0};
    assert_rc(verify_parts(junk, sizeof junk, sig, 64, &got), REFEX_E_MALFORMED);

    /* Random buffers, half of them shaped like a SignedReceipt. */
    for (int i = 0; i < 2000; i++) {
        size_t len = randombytes_uniform(200);
        uint8_t *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        randombytes_buf(buf, len);
        if (len >= 2 && (i & 1)) {
            buf[0] = 0x0a;
            buf[1] = (uint8_t)randombytes_uniform((uint32_t)len - 1);
        }
        int rc = refex_receipt_verify_packed(buf, len, dir, &got);
        if (rc != REFEX_E_MALFORMED && rc != REFEX_E_BAD_SIGNATURE && rc != REFEX_E_UNKNOWN_AGENCY)
            fail_msg("random buffer of %zu bytes: got %s", len, refex_errname(rc));
        free(buf);
    }
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_packed), cmocka_unit_test(test_round_trip_unpacked),
        cmocka_unit_test(test_hand_built_ok),     cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_unknown_signer),    cmocka_unit_test(test_flipped_bytes),
        cmocka_unit_test(test_truncated),         cmocka_unit_test(test_signature_length),
        cmocka_unit_test(test_malformed_fields),  cmocka_unit_test(test_sign_invalid_ids),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
