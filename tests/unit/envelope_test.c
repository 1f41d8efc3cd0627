/* Tests for lib/envelope.c: seal/parse/verify/open round trips, and that every kind of
 * tampering (header, ciphertext, key slots, signer, truncation) is rejected with its own code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <sodium.h>

#include "batchsig.h"
#include "directory.h"
#include "envelope.h"
#include "keys.h"
#include "util.h"

/* Sender, two recipients and an outsider who is in no recipient list. */
static refex_keys *sender, *rcpt1, *rcpt2, *outsider;
static refex_agency ag_sender, ag_rcpt1, ag_rcpt2, ag_outsider;

static int group_setup(void **state)
{
    (void)state;
    if (refex_keys_new("midwifery", "maternity", &sender) != REFEX_OK ||
        refex_keys_new("social-care", "childrens-services", &rcpt1) != REFEX_OK ||
        refex_keys_new("health-visiting", "health", &rcpt2) != REFEX_OK ||
        refex_keys_new("police", "police", &outsider) != REFEX_OK)
        return -1;
    refex_agency_from_pubkeys(&ag_sender, &sender->pub, "Maternity unit");
    refex_agency_from_pubkeys(&ag_rcpt1, &rcpt1->pub, "Children's social care");
    refex_agency_from_pubkeys(&ag_rcpt2, &rcpt2->pub, NULL);
    refex_agency_from_pubkeys(&ag_outsider, &outsider->pub, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    refex_keys_destroy(&sender);
    refex_keys_destroy(&rcpt1);
    refex_keys_destroy(&rcpt2);
    refex_keys_destroy(&outsider);
    return 0;
}

/* Seals body from "midwifery" to 1 or 2 recipients (rcpt1, then rcpt2). */
static void seal_to(size_t n, const uint8_t *body, size_t body_len, uint8_t **out, size_t *out_len,
                    uint8_t id[16])
{
    const refex_agency *to[2] = {&ag_rcpt1, &ag_rcpt2};
    refex_seal_params p = {
        .sender = "midwifery",
        .sign_sk = sender->sk->sign_sk,
        .recipients = to,
        .n_recipients = n,
        .type = REFEX__V1__MESSAGE_TYPE__REFERRAL,
        .case_ref = "case-0001",
    };
    assert_ok(refex_envelope_seal(&p, body, body_len, out, out_len, id));
    assert_non_null(*out);
    assert_true(*out_len > 0);
}

static int contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    return 0;
}

static Refex__V1__Envelope *unpack(const uint8_t *buf, size_t len)
{
    Refex__V1__Envelope *env = refex__v1__envelope__unpack(NULL, len, buf);
    assert_non_null(env);
    return env;
}

/* Packs a (possibly hand-modified) envelope and unpacks a fresh, self-owned copy: what a
 * receiver would get off the wire. */
static Refex__V1__Envelope *reunpack(const Refex__V1__Envelope *e)
{
    size_t n = refex__v1__envelope__get_packed_size(e);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    refex__v1__envelope__pack(e, buf);
    Refex__V1__Envelope *copy = refex__v1__envelope__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(copy);
    return copy;
}

static void free_env(Refex__V1__Envelope *env)
{
    refex__v1__envelope__free_unpacked(env, NULL);
}

/* A batch of one over the header, as docs/protocol.md 5.6 defines it: the root is the
 * header's leaf and the signature covers "refex/batch/v1" NUL || u64be(1) || root. The
 * proof lives in static storage until the next call (reunpack copies it). */
static Refex__V1__BatchProof *sign_header(const ProtobufCBinaryData *hdr, const uint8_t sk[64])
{
    static uint8_t sig[64];
    static Refex__V1__BatchProof pb;
    uint8_t leaf[32], m[sizeof REFEX_BATCH_CONTEXT + 8 + 32] = {0};
    refex_batch_envelope_leaf(hdr->data, hdr->len, leaf);
    memcpy(m, REFEX_BATCH_CONTEXT, sizeof REFEX_BATCH_CONTEXT);
    m[sizeof REFEX_BATCH_CONTEXT + 7] = 1;
    memcpy(m + sizeof REFEX_BATCH_CONTEXT + 8, leaf, 32);
    crypto_sign_detached(sig, NULL, m, sizeof m, sk);
    refex__v1__batch_proof__init(&pb);
    pb.tree_size = 1;
    pb.root_signature = (ProtobufCBinaryData){64, sig};
    return &pb;
}

/* parse_header + verify against the real sender; returns the first failing code. */
static int parse_and_verify(const Refex__V1__Envelope *env, const uint8_t sign_pk[32])
{
    Refex__V1__EnvelopeHeader *h = NULL;
    int rc = refex_envelope_parse_header(env, &h);
    if (rc != REFEX_OK) {
        assert_null(h);
        return rc;
    }
    rc = refex_envelope_verify(env, h, sign_pk);
    refex__v1__envelope_header__free_unpacked(h, NULL);
    return rc;
}

/* The full receive path for recipient k; asserts the body comes back byte for byte. */
static void expect_opens(const Refex__V1__Envelope *env, const refex_keys *k, const uint8_t *body,
                         size_t body_len)
{
    Refex__V1__EnvelopeHeader *h = NULL;
    uint8_t *got = NULL;
    size_t got_len = 12345;
    assert_ok(refex_envelope_parse_header(env, &h));
    assert_ok(refex_envelope_verify(env, h, sender->pub.sign_pk));
    assert_ok(
        refex_envelope_open(env, h, k->pub.agency, k->pub.enc_pk, k->sk->enc_sk, &got, &got_len));
    assert_int_equal(got_len, body_len);
    if (body_len)
        assert_memory_equal(got, body, body_len);
    free(got);
    refex__v1__envelope_header__free_unpacked(h, NULL);
}

/* Full receive path that must fail before a body is produced. */
static int open_code(const Refex__V1__Envelope *env, const refex_keys *k, const char *me)
{
    Refex__V1__EnvelopeHeader *h = NULL;
    uint8_t *got = NULL;
    size_t got_len = 0;
    assert_ok(refex_envelope_parse_header(env, &h));
    assert_ok(refex_envelope_verify(env, h, sender->pub.sign_pk));
    int rc = refex_envelope_open(env, h, me, k->pub.enc_pk, k->sk->enc_sk, &got, &got_len);
    assert_null(got);
    refex__v1__envelope_header__free_unpacked(h, NULL);
    return rc;
}

static void test_round_trip_one_recipient(void **state)
{
    (void)state;
    static const uint8_t body[] = "pre-birth referral, see attached";
    uint8_t *buf = NULL, id[16];
    size_t len = 0;
    int64_t before = refex_now_ms();
    seal_to(1, body, sizeof body, &buf, &len, id);
    Refex__V1__Envelope *env = unpack(buf, len);

    Refex__V1__EnvelopeHeader *h = NULL;
    assert_ok(refex_envelope_parse_header(env, &h));
    assert_int_equal(h->version, REFEX_ENVELOPE_VERSION);
    assert_int_equal(h->message_id.len, 16);
    assert_memory_equal(h->message_id.data, id, 16);
    assert_string_equal(h->sender, "midwifery");
    assert_int_equal(h->n_recipients, 1);
    assert_string_equal(h->recipients[0], "social-care");
    assert_int_equal(h->type, REFEX__V1__MESSAGE_TYPE__REFERRAL);
    assert_string_equal(h->case_ref, "case-0001");
    assert_true(h->created_at_ms >= before);
    assert_true(h->expires_at_ms > h->created_at_ms);
    assert_int_equal(env->n_key_slots, 1);
    assert_string_equal(env->key_slots[0]->recipient, "social-care");
    /* The body is not in the clear anywhere in the envelope. */
    assert_false(contains(buf, len, body, sizeof body - 1));
    refex__v1__envelope_header__free_unpacked(h, NULL);

    expect_opens(env, rcpt1, body, sizeof body);
    free_env(env);
    free(buf);
}

static void test_round_trip_two_recipients_binary_body(void **state)
{
    (void)state;
    uint8_t body[300];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (uint8_t)(i % 3 == 0 ? 0x00 : i * 7);
    body[sizeof body - 1] = 0x00;
    uint8_t *buf = NULL, id[16];
    size_t len = 0;
    seal_to(2, body, sizeof body, &buf, &len, id);
    Refex__V1__Envelope *env = unpack(buf, len);
    assert_int_equal(env->n_key_slots, 2);
    expect_opens(env, rcpt1, body, sizeof body);
    expect_opens(env, rcpt2, body, sizeof body);
    free_env(env);
    free(buf);
}

static void test_round_trip_empty_body(void **state)
{
    (void)state;
    static const uint8_t none[1] = {0};
    uint8_t *buf = NULL, id[16];
    size_t len = 0;
    seal_to(2, none, 0, &buf, &len, id);
    Refex__V1__Envelope *env = unpack(buf, len);
    expect_opens(env, rcpt1, none, 0);
    expect_opens(env, rcpt2, none, 0);
    free_env(env);
    free(buf);
}

static void test_message_ids_differ(void **state)
{
    (void)state;
    static const uint8_t body[] = "x";
    uint8_t *b1 = NULL, *b2 = NULL, id1[16], id2[16];
    size_t l1 = 0, l2 = 0;
    seal_to(1, body, sizeof body, &b1, &l1, id1);
    seal_to(1, body, sizeof body, &b2, &l2, id2);
    assert_memory_not_equal(id1, id2, 16);
    free(b1);
    free(b2);
}

static void test_tampered_header(void **state)
{
    (void)state;
    static const uint8_t body[] = "tamper with my header";
    uint8_t *buf = NULL, id[16];
    size_t len = 0, n_badsig = 0;
    seal_to(2, body, sizeof body, &buf, &len, id);
    Refex__V1__Envelope *env = unpack(buf, len);
    uint8_t *hdr = malloc(env->header.len);
    assert_non_null(hdr);

    /* Every byte of the signed header, flipped one at a time. */
    for (size_t i = 0; i < env->header.len; i++) {
        for (int mask = 0x01; mask <= 0x80; mask <<= 7) {
            memcpy(hdr, env->header.data, env->header.len);
            hdr[i] ^= (uint8_t)mask;
            Refex__V1__Envelope m = *env;
            m.header.data = hdr;
            Refex__V1__Envelope *bad = reunpack(&m);
            int rc = parse_and_verify(bad, sender->pub.sign_pk);
            if (rc == REFEX_E_BAD_SIGNATURE)
                n_badsig++;
            else if (rc != REFEX_E_MALFORMED && rc != REFEX_E_VERSION)
                fail_msg("header byte %zu ^ 0x%02x: got %s, want E_BAD_SIGNATURE, "
                         "E_MALFORMED or E_VERSION",
                         i, mask, refex_errname(rc));
            free_env(bad);
        }
    }
    /* Flips inside values (ids, hashes, times) parse fine and must hit the signature. */
    assert_true(n_badsig > env->header.len / 2);
    free(hdr);
    free_env(env);
    free(buf);
}

static void test_tampered_ciphertext(void **state)
{
    (void)state;
    static const uint8_t body[] = "the ciphertext is bound to the header";
    uint8_t *buf = NULL, id[16];
    size_t len = 0;
    seal_to(1, body, sizeof body, &buf, &len, id);
    Refex__V1__Envelope *env = unpack(buf, len);
    size_t ct_len = env->ciphertext.len;
    uint8_t *ct = malloc(ct_len);
    assert_non_null(ct);
    const size_t where[] = {0, ct_len / 2, ct_len - 1};

    for (size_t k = 0; k < sizeof where / sizeof where[0]; k++) {
        memcpy(ct, env->ciphertext.data, ct_len);
        ct[where[k]] ^= 0x01;
        Refex__V1__Envelope m = *env;
        m.ciphertext.data = ct;
        Refex__V1__Envelope *bad = reunpack(&m);
        assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_TAMPERED);

        /* Even a receiver that skipped verify would not get a body: the AEAD tag fails. */
        Refex__V1__EnvelopeHeader *h = NULL;
        uint8_t *got = NULL;
        size_t got_len = 0;
        assert_ok(refex_envelope_parse_header(bad, &h));
        assert_rc(refex_envelope_open(bad, h, "social-care", rcpt1->pub.enc_pk, rcpt1->sk->enc_sk,
                                      &got, &got_len),
                  REFEX_E_DECRYPT);
        assert_null(got);
        refex__v1__envelope_header__free_unpacked(h, NULL);
        free_env(bad);
    }

    /* Dropping the last byte, or the whole ciphertext. */
    Refex__V1__Envelope m = *env;
    m.ciphertext.len = ct_len - 1;
    Refex__V1__Envelope *bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_TAMPERED);
    free_env(bad);
    m.ciphertext = (ProtobufCBinaryData){0, NULL};
    bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_TAMPERED);
    free_env(bad);

    free(ct);
    free_env(env);
    free(buf);
}

static void test_wrong_recipient(void **state)
{
    (void)state;
    static const uint8_t body[] = "not for the police";
    uint8_t *buf = NULL, id[16];
    size_t len = 0;
    seal_to(2, body, sizeof body, &buf, &len, id);
    Refex__V1__Envelope *env = unpack(buf, len);

    /* An agency with no slot. */
    assert_rc(open_code(env, outsider, "police"), REFEX_E_NOT_RECIPIENT);
    /* A slot name that is present, opened with the wrong secret key. */
    assert_rc(open_code(env, outsider, "social-care"), REFEX_E_DECRYPT);
    assert_rc(open_code(env, rcpt2, "social-care"), REFEX_E_DECRYPT);
    assert_rc(open_code(env, rcpt1, "health-visiting"), REFEX_E_DECRYPT);
    /* The sender is not a recipient of its own message. */
    assert_rc(open_code(env, sender, "midwifery"), REFEX_E_NOT_RECIPIENT);
    free_env(env);
    free(buf);
}

static void test_truncated(void **state)
{
    (void)state;
    static const uint8_t body[] = "truncate me";
    uint8_t *buf = NULL, id[16];
    size_t len = 0, n_unpack_fail = 0;
    seal_to(2, body, sizeof body, &buf, &len, id);

    for (size_t cut = 0; cut < len; cut++) {
        /* A fresh heap copy of exactly `cut` bytes, so ASan catches any over-read. */
        uint8_t *t = malloc(cut ? cut : 1);
        assert_non_null(t);
        memcpy(t, buf, cut);
        Refex__V1__Envelope *env = refex__v1__envelope__unpack(NULL, cut, t);
        if (!env) {
            n_unpack_fail++;
            free(t);
            continue;
        }
        int rc = parse_and_verify(env, sender->pub.sign_pk);
        if (rc != REFEX_E_MALFORMED && rc != REFEX_E_BAD_SIGNATURE && rc != REFEX_E_TAMPERED)
            fail_msg("truncated to %zu of %zu bytes: got %s", cut, len, refex_errname(rc));
        free_env(env);
        free(t);
    }
    assert_true(n_unpack_fail > 0);
    free(buf);
}

static void test_swapped_slots(void **state)
{
    (void)state;
    static const uint8_t body[] = "slot order is signed";
    uint8_t *buf = NULL, id[16];
    size_t len = 0;
    seal_to(2, body, sizeof body, &buf, &len, id);
    Refex__V1__Envelope *env = unpack(buf, len);
    assert_int_equal(env->n_key_slots, 2);

    /* Swap whole slots. */
    Refex__V1__KeySlot *swapped[2] = {env->key_slots[1], env->key_slots[0]};
    Refex__V1__Envelope m = *env;
    m.key_slots = swapped;
    Refex__V1__Envelope *bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_TAMPERED);
    free_env(bad);

    /* Swap only the wrapped keys (and their epochs), keeping the recipient names in place. */
    Refex__V1__KeySlot s0 = *env->key_slots[0], s1 = *env->key_slots[1];
    s0.epoch_pk = env->key_slots[1]->epoch_pk;
    s0.wrapped_key = env->key_slots[1]->wrapped_key;
    s1.epoch_pk = env->key_slots[0]->epoch_pk;
    s1.wrapped_key = env->key_slots[0]->wrapped_key;
    Refex__V1__KeySlot *crossed[2] = {&s0, &s1};
    m = *env;
    m.key_slots = crossed;
    bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_TAMPERED);
    free_env(bad);

    /* A key slot replaced by one the attacker wrapped to the same recipient, in an epoch of
     * its own: the epoch key is covered by the signature too. */
    uint8_t eph_pk[32], eph_sk[32], ek[32], nonce[24], ckey[32], wrapped[REFEX_EPOCH_WRAPPED_LEN];
    randombytes_buf(ckey, sizeof ckey);
    randombytes_buf(nonce, sizeof nonce);
    crypto_box_keypair(eph_pk, eph_sk);
    assert_ok(refex_epoch_derive(eph_sk, rcpt1->pub.enc_pk, eph_pk, rcpt1->pub.enc_pk, ek));
    assert_ok(refex_epoch_wrap(ek, nonce, ckey, id, "midwifery", "social-care", wrapped));
    s0 = *env->key_slots[0];
    s0.epoch_pk = (ProtobufCBinaryData){sizeof eph_pk, eph_pk};
    s0.wrapped_key = (ProtobufCBinaryData){sizeof wrapped, wrapped};
    Refex__V1__KeySlot *forged[2] = {&s0, env->key_slots[1]};
    m = *env;
    m.key_slots = forged;
    bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_TAMPERED);
    free_env(bad);

    /* Only the epoch key replaced, the wrapped key kept. */
    s0 = *env->key_slots[0];
    s0.epoch_pk = (ProtobufCBinaryData){sizeof eph_pk, eph_pk};
    m = *env;
    m.key_slots = forged;
    bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_TAMPERED);
    free_env(bad);

    free_env(env);
    free(buf);
}

static void test_signature_by_another_key(void **state)
{
    (void)state;
    static const uint8_t body[] = "who signed this?";
    uint8_t *buf = NULL, id[16], sig[64];
    size_t len = 0;
    seal_to(1, body, sizeof body, &buf, &len, id);
    Refex__V1__Envelope *env = unpack(buf, len);

    /* Verifying against somebody else's key. */
    assert_rc(parse_and_verify(env, outsider->pub.sign_pk), REFEX_E_BAD_SIGNATURE);
    assert_rc(parse_and_verify(env, rcpt1->pub.sign_pk), REFEX_E_BAD_SIGNATURE);

    /* The same header re-signed by the outsider: valid for the outsider's key only, so a
     * receiver that looks up the claimed sender's key rejects it. */
    Refex__V1__Envelope m = *env;
    m.batch = sign_header(&env->header, outsider->sk->sign_sk);
    Refex__V1__Envelope *bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_BAD_SIGNATURE);
    assert_ok(parse_and_verify(bad, outsider->pub.sign_pk));
    free_env(bad);

    /* A root signature without the domain-separation prefix and size. */
    uint8_t leaf[32];
    refex_batch_envelope_leaf(env->header.data, env->header.len, leaf);
    crypto_sign_detached(sig, NULL, leaf, 32, sender->sk->sign_sk);
    Refex__V1__BatchProof pb = *env->batch;
    pb.root_signature = (ProtobufCBinaryData){64, sig};
    m.batch = &pb;
    bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_BAD_SIGNATURE);
    free_env(bad);

    /* Missing, short and long root signatures. */
    const size_t sig_lens[] = {0, 63, 65};
    uint8_t longsig[65] = {0};
    memcpy(longsig, env->batch->root_signature.data, 64);
    for (size_t i = 0; i < sizeof sig_lens / sizeof sig_lens[0]; i++) {
        pb.root_signature = (ProtobufCBinaryData){sig_lens[i], sig_lens[i] ? longsig : NULL};
        bad = reunpack(&m);
        assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_BAD_SIGNATURE);
        free_env(bad);
    }

    /* No batch proof at all, and an old-style signature beside a valid proof. */
    m.batch = NULL;
    bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_BAD_SIGNATURE);
    free_env(bad);
    m.batch = env->batch;
    m.signature = (ProtobufCBinaryData){64, longsig};
    bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_BAD_SIGNATURE);
    free_env(bad);

    free_env(env);
    free(buf);
}

/* Re-packs env with a modified header, keeping (or replacing) the signature. */
static Refex__V1__Envelope *with_header(const Refex__V1__Envelope *env,
                                        const Refex__V1__EnvelopeHeader *h, const uint8_t *sign_sk,
                                        uint8_t hdr_buf[1024], uint8_t sig[64])
{
    size_t n = refex__v1__envelope_header__get_packed_size(h);
    assert_true(n <= 1024);
    refex__v1__envelope_header__pack(h, hdr_buf);
    Refex__V1__Envelope m = *env;
    m.header = (ProtobufCBinaryData){n, hdr_buf};
    (void)sig;
    if (sign_sk)
        m.batch = sign_header(&m.header, sign_sk);
    return reunpack(&m);
}

static void test_header_claims_other_sender(void **state)
{
    (void)state;
    static const uint8_t body[] = "this is from the police, honest";
    uint8_t *buf = NULL, id[16], hdr[1024], sig[64];
    size_t len = 0;
    seal_to(1, body, sizeof body, &buf, &len, id);
    Refex__V1__Envelope *env = unpack(buf, len);
    Refex__V1__EnvelopeHeader *h = NULL;
    assert_ok(refex_envelope_parse_header(env, &h));

    Refex__V1__EnvelopeHeader hm = *h;
    hm.sender = "police";
    Refex__V1__Envelope *bad = with_header(env, &hm, NULL, hdr, sig);
    Refex__V1__EnvelopeHeader *bh = NULL;
    assert_ok(refex_envelope_parse_header(bad, &bh));
    assert_string_equal(bh->sender, "police");
    refex__v1__envelope_header__free_unpacked(bh, NULL);
    assert_rc(parse_and_verify(bad, outsider->pub.sign_pk), REFEX_E_BAD_SIGNATURE);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_BAD_SIGNATURE);
    free_env(bad);

    /* Re-packing an unmodified header is byte-identical, so the signature still holds:
     * the check above failed because of the sender change, not the re-encoding. */
    bad = with_header(env, h, NULL, hdr, sig);
    assert_ok(parse_and_verify(bad, sender->pub.sign_pk));
    free_env(bad);

    refex__v1__envelope_header__free_unpacked(h, NULL);
    free_env(env);
    free(buf);
}

static void test_recipient_count_mismatch(void **state)
{
    (void)state;
    static const uint8_t body[] = "how many recipients?";
    uint8_t *buf = NULL, id[16], hdr[1024], sig[64];
    size_t len = 0;
    seal_to(2, body, sizeof body, &buf, &len, id);
    Refex__V1__Envelope *env = unpack(buf, len);

    /* Fewer slots than signed recipients. */
    Refex__V1__Envelope m = *env;
    m.n_key_slots = 1;
    Refex__V1__Envelope *bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_TAMPERED);
    free_env(bad);

    /* More slots than signed recipients (an extra slot for an outsider). */
    Refex__V1__KeySlot extra = *env->key_slots[1];
    extra.recipient = "police";
    Refex__V1__KeySlot *three[3] = {env->key_slots[0], env->key_slots[1], &extra};
    m = *env;
    m.key_slots = three;
    m.n_key_slots = 3;
    bad = reunpack(&m);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_TAMPERED);
    free_env(bad);

    /* A correctly signed header listing three recipients over two slots. */
    Refex__V1__EnvelopeHeader *h = NULL;
    assert_ok(refex_envelope_parse_header(env, &h));
    char *rcpts[3] = {h->recipients[0], h->recipients[1], "police"};
    Refex__V1__EnvelopeHeader hm = *h;
    hm.recipients = rcpts;
    hm.n_recipients = 3;
    bad = with_header(env, &hm, sender->sk->sign_sk, hdr, sig);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_TAMPERED);
    free_env(bad);

    /* ... and a signed header whose recipient names differ from the slot names. */
    char *renamed[2] = {h->recipients[0], "police"};
    hm = *h;
    hm.recipients = renamed;
    bad = with_header(env, &hm, sender->sk->sign_sk, hdr, sig);
    assert_rc(parse_and_verify(bad, sender->pub.sign_pk), REFEX_E_TAMPERED);
    free_env(bad);

    refex__v1__envelope_header__free_unpacked(h, NULL);
    free_env(env);
    free(buf);
}

static void test_malformed_header(void **state)
{
    (void)state;
    static const uint8_t body[] = "x";
    uint8_t *buf = NULL, id[16], hdr[1024], sig[64];
    size_t len = 0;
    seal_to(1, body, sizeof body, &buf, &len, id);
    Refex__V1__Envelope *env = unpack(buf, len);
    Refex__V1__EnvelopeHeader *out = NULL;

    /* Garbage bytes, not a protobuf at all. */
    uint8_t ff[40];
    memset(ff, 0xff, sizeof ff);
    static const char text[] = "not a protobuf header";
    Refex__V1__Envelope m = *env;
    m.header = (ProtobufCBinaryData){sizeof ff, ff};
    assert_rc(refex_envelope_parse_header(&m, &out), REFEX_E_MALFORMED);
    assert_null(out);
    m.header = (ProtobufCBinaryData){sizeof text - 1, (uint8_t *)text};
    assert_rc(refex_envelope_parse_header(&m, &out), REFEX_E_MALFORMED);
    assert_null(out);
    m.header = (ProtobufCBinaryData){0, NULL};
    assert_rc(refex_envelope_parse_header(&m, &out), REFEX_E_MALFORMED);
    assert_null(out);
    assert_rc(refex_envelope_parse_header(NULL, &out), REFEX_E_MALFORMED);

    /* Well-formed protobuf, correctly signed, but failing the header's sanity checks. */
    Refex__V1__EnvelopeHeader *h = NULL;
    assert_ok(refex_envelope_parse_header(env, &h));
    char *dup[2] = {"social-care", "social-care"};
    char *badid[1] = {"Social Care"};
    for (int k = 0; k < 10; k++) {
        Refex__V1__EnvelopeHeader hm = *h;
        switch (k) {
        case 0:
            hm.nonce.len = 23;
            break;
        case 1:
            hm.message_id.len = 15;
            break;
        case 2:
            hm.type = REFEX__V1__MESSAGE_TYPE__MESSAGE_TYPE_UNSPECIFIED;
            break;
        case 3:
            hm.expires_at_ms = hm.created_at_ms;
            break;
        case 4:
            hm.recipients = dup;
            hm.n_recipients = 2;
            break;
        case 5:
            hm.recipients = badid;
            break;
        case 6:
            hm.sender = "";
            break;
        case 7: /* case references are pseudonymous codes, never names or raw bytes */
            hm.case_ref = "Jane Smith";
            break;
        case 8:
            hm.case_ref = "C-\xff\xfe";
            break;
        case 9:
            hm.case_ref = "C-000000000000000000000000000000000000000000000000000000000000000000"
                          "00000000000000000000000000000000000000000000000000000000000000";
            break;
        }
        Refex__V1__Envelope *bad = with_header(env, &hm, sender->sk->sign_sk, hdr, sig);
        if (refex_envelope_parse_header(bad, &out) != REFEX_E_MALFORMED)
            fail_msg("header variant %d was not rejected as E_MALFORMED", k);
        assert_null(out);
        free_env(bad);
    }
    /* Another envelope version, correctly signed: E_VERSION, whatever else it carries. */
    const uint32_t versions[] = {1, 0, 3, UINT32_MAX};
    for (size_t k = 0; k < sizeof versions / sizeof versions[0]; k++) {
        Refex__V1__EnvelopeHeader hm = *h;
        hm.version = versions[k];
        Refex__V1__Envelope *bad = with_header(env, &hm, sender->sk->sign_sk, hdr, sig);
        assert_rc(refex_envelope_parse_header(bad, &out), REFEX_E_VERSION);
        assert_null(out);
        free_env(bad);
    }
    refex__v1__envelope_header__free_unpacked(h, NULL);
    free_env(env);
    free(buf);
}

static void test_seal_invalid_params(void **state)
{
    (void)state;
    static const uint8_t body[] = "x";
    const refex_agency *to[1] = {&ag_rcpt1};
    const refex_seal_params good = {
        .sender = "midwifery",
        .sign_sk = sender->sk->sign_sk,
        .recipients = to,
        .n_recipients = 1,
        .type = REFEX__V1__MESSAGE_TYPE__REFERRAL,
    };
    uint8_t *out = NULL, id[16];
    size_t out_len = 0;

    refex_seal_params p = good;
    p.n_recipients = 0;
    assert_rc(refex_envelope_seal(&p, body, sizeof body, &out, &out_len, id), REFEX_E_INVAL);
    p = good;
    p.n_recipients = REFEX_MAX_RECIPIENTS + 1;
    assert_rc(refex_envelope_seal(&p, body, sizeof body, &out, &out_len, id), REFEX_E_INVAL);
    p = good;
    p.sender = NULL;
    assert_rc(refex_envelope_seal(&p, body, sizeof body, &out, &out_len, id), REFEX_E_INVAL);
    p = good;
    p.sender = "Not An Id";
    assert_rc(refex_envelope_seal(&p, body, sizeof body, &out, &out_len, id), REFEX_E_INVAL);
    p = good;
    p.sign_sk = NULL;
    assert_rc(refex_envelope_seal(&p, body, sizeof body, &out, &out_len, id), REFEX_E_INVAL);
    p = good;
    p.case_ref = "Jane Smith";
    assert_rc(refex_envelope_seal(&p, body, sizeof body, &out, &out_len, id), REFEX_E_INVAL);
    p = good;
    p.created_at_ms = 2000;
    p.expires_at_ms = 1000;
    assert_rc(refex_envelope_seal(&p, body, sizeof body, &out, &out_len, id), REFEX_E_INVAL);
    const refex_agency *twice[2] = {&ag_rcpt1, &ag_rcpt1};
    p = good;
    p.recipients = twice;
    p.n_recipients = 2;
    assert_rc(refex_envelope_seal(&p, body, sizeof body, &out, &out_len, id), REFEX_E_INVAL);
    assert_null(out);
    assert_true(refex_case_ref_valid(""));
    assert_true(refex_case_ref_valid("C-EAST-0001"));
    assert_true(refex_case_ref_valid("la/2026:cp.17_b"));
    assert_false(refex_case_ref_valid("C 1"));
    assert_false(refex_case_ref_valid(NULL));

    assert_ok(refex_envelope_seal(&good, body, sizeof body, &out, &out_len, id));
    free(out);
}

/* The hash a seal hands back (hash_out) is the one refex_envelope_hash gives of the packed
 * envelope, signed or not, with a checkpoint attached at sealing or none. */
static void test_seal_hands_back_envelope_hash(void **state)
{
    (void)state;
    static const uint8_t body[] = "hashed once, where it is sealed";
    const refex_agency *to[2] = {&ag_rcpt1, &ag_rcpt2};
    for (int signed_too = 0; signed_too < 2; signed_too++)
        for (int with_note = 0; with_note < 2; with_note++) {
            uint8_t given[32], again[32], id[16], *buf = NULL;
            size_t len = 0;
            refex_seal_params p = {
                .sender = "midwifery",
                .sign_sk = sender->sk->sign_sk,
                .recipients = to,
                .n_recipients = 2,
                .type = REFEX__V1__MESSAGE_TYPE__REFERRAL,
                .case_ref = "case-0001",
                .checkpoint = with_note ? "refex/audit/midwifery\n9\nAAAA\n" : NULL,
                .hash_out = given,
            };
            if (signed_too)
                assert_ok(refex_envelope_seal(&p, body, sizeof body, &buf, &len, id));
            else
                assert_ok(refex_envelope_seal_unsigned(&p, body, sizeof body, &buf, &len, id));
            Refex__V1__Envelope *e = unpack(buf, len);
            assert_string_equal(e->checkpoint, with_note ? p.checkpoint : "");
            assert_int_equal(e->batch != NULL, signed_too);
            assert_ok(refex_envelope_hash(e, again));
            assert_memory_equal(given, again, 32);
            free_env(e);
            free(buf);
        }
}

static void test_envelope_hash(void **state)
{
    (void)state;
    static const uint8_t body[] = "same body, different envelopes";
    uint8_t *b1 = NULL, *b2 = NULL, id1[16], id2[16];
    uint8_t h1[32], h1again[32], h1copy[32], h2[32], direct[32];
    size_t l1 = 0, l2 = 0;
    seal_to(1, body, sizeof body, &b1, &l1, id1);
    seal_to(1, body, sizeof body, &b2, &l2, id2);
    Refex__V1__Envelope *e1 = unpack(b1, l1), *e2 = unpack(b2, l2);
    Refex__V1__Envelope *e1copy = reunpack(e1);

    assert_ok(refex_envelope_hash(e1, h1));
    assert_ok(refex_envelope_hash(e1, h1again));
    assert_ok(refex_envelope_hash(e1copy, h1copy));
    assert_ok(refex_envelope_hash(e2, h2));
    assert_memory_equal(h1, h1again, 32);
    assert_memory_equal(h1, h1copy, 32);
    assert_memory_not_equal(h1, h2, 32);
    /* It is the SHA-256 of the envelope packed without its signature parts (fields 1, 3
     * and 4), so the sender knows it before the envelope is signed. */
    Refex__V1__Envelope bare = *e1;
    bare.batch = NULL;
    size_t bl = refex__v1__envelope__get_packed_size(&bare);
    uint8_t *bb = malloc(bl);
    assert_non_null(bb);
    refex__v1__envelope__pack(&bare, bb);
    crypto_hash_sha256(direct, bb, bl);
    free(bb);
    assert_memory_equal(h1, direct, 32);
    crypto_hash_sha256(direct, b1, l1);
    assert_memory_not_equal(h1, direct, 32);
    /* Another batch proof (the same header signed again, in another batch) is the same
     * envelope. */
    Refex__V1__BatchProof *kept_batch = e1copy->batch;
    e1copy->batch = sign_header(&e1copy->header, outsider->sk->sign_sk);
    assert_ok(refex_envelope_hash(e1copy, h1copy));
    e1copy->batch = kept_batch;
    assert_memory_equal(h1, h1copy, 32);
    /* Without the checkpoint, which nothing in the envelope signs: a broker that changes it
     * does not change the hash receipts name. */
    char *kept = e1copy->checkpoint;
    e1copy->checkpoint = (char *)"refex/audit/midwifery\n9\nAAAA\n";
    assert_ok(refex_envelope_hash(e1copy, h1copy));
    e1copy->checkpoint = kept; /* freed with the envelope */
    assert_memory_equal(h1, h1copy, 32);
    /* Nor a field unknown to this version, which a broker could add (field 15, varint 1). */
    uint8_t *ext = malloc(l1 + 2);
    assert_non_null(ext);
    memcpy(ext, b1, l1);
    ext[l1] = 0x78;
    ext[l1 + 1] = 0x01;
    Refex__V1__Envelope *ex = unpack(ext, l1 + 2);
    assert_int_equal(ex->base.n_unknown_fields, 1);
    assert_ok(refex_envelope_hash(ex, h1copy));
    assert_memory_equal(h1, h1copy, 32);
    free_env(ex);
    free(ext);

    free_env(e1copy);
    free_env(e2);
    free_env(e1);
    free(b2);
    free(b1);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_one_recipient),
        cmocka_unit_test(test_round_trip_two_recipients_binary_body),
        cmocka_unit_test(test_round_trip_empty_body),
        cmocka_unit_test(test_message_ids_differ),
        cmocka_unit_test(test_tampered_header),
        cmocka_unit_test(test_tampered_ciphertext),
        cmocka_unit_test(test_wrong_recipient),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_swapped_slots),
        cmocka_unit_test(test_signature_by_another_key),
        cmocka_unit_test(test_header_claims_other_sender),
        cmocka_unit_test(test_recipient_count_mismatch),
        cmocka_unit_test(test_malformed_header),
        cmocka_unit_test(test_seal_invalid_params),
        cmocka_unit_test(test_envelope_hash),
        cmocka_unit_test(test_seal_hands_back_envelope_hash),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
