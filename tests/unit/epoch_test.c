/* Tests for lib/epoch.c and its use by lib/envelope.c: the known-answer vector
 * tests/vectors/epoch-wrap.json (recomputed with the library, and the epoch key and wrap
 * also with raw libsodium calls, so the vector does not only check itself), flipped bits
 * and a low-order point refused, the sender's epochs ending by count, by age, with a clock
 * that goes back and with the recipient's key, a full sender table, the receiver's cache
 * (bounded, least recently used evicted, idle entries wiped, keyed by own key, an own key
 * forgotten), and sealed
 * envelopes opened with one derivation per epoch, also with a rotation's previous key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>

#include "testing.h"

#include "envelope.h"
#include "epoch.h"
#include "keys.h"
#include "util.h"

#ifndef REFEX_TEST_VECTORS
#error "REFEX_TEST_VECTORS must name tests/vectors"
#endif

typedef struct {
    uint8_t eph_sk[32], epoch_pk[32], rsk[32], rpk[32], id[16], nonce[24], k[32], ek[32];
    uint8_t wrapped[REFEX_EPOCH_WRAPPED_LEN];
    char sender[64], recipient[64];
} vector;

static void get_hex(json_t *j, const char *name, uint8_t *out, size_t len)
{
    const char *v = json_string_value(json_object_get(j, name));
    if (!v || refex_hex_decode(out, len, v) != REFEX_OK)
        fail_msg("vector: %s is not %zu bytes of hex", name, len);
}

static void load_vector(vector *v)
{
    json_error_t jerr;
    json_t *j = json_load_file(REFEX_TEST_VECTORS "/epoch-wrap.json", 0, &jerr);
    if (!j)
        fail_msg("vector: %s", jerr.text);
    get_hex(j, "eph_sk", v->eph_sk, 32);
    get_hex(j, "epoch_pk", v->epoch_pk, 32);
    get_hex(j, "recipient_sk", v->rsk, 32);
    get_hex(j, "recipient_pk", v->rpk, 32);
    get_hex(j, "message_id", v->id, 16);
    get_hex(j, "nonce", v->nonce, 24);
    get_hex(j, "content_key", v->k, 32);
    get_hex(j, "epoch_key", v->ek, 32);
    get_hex(j, "wrapped_key", v->wrapped, sizeof v->wrapped);
    snprintf(v->sender, sizeof v->sender, "%s", json_string_value(json_object_get(j, "sender")));
    snprintf(v->recipient, sizeof v->recipient, "%s",
             json_string_value(json_object_get(j, "recipient")));
    json_decref(j);
}

/* EK and the wrap from the formulas in docs/protocol.md 5.3, with libsodium alone. */
static void raw_epoch_key(const vector *v, uint8_t ek[32])
{
    uint8_t shared[32];
    static const uint8_t ctx[] = "refex/epoch/v1"; /* sizeof includes the NUL */
    crypto_generichash_state st;
    assert_int_equal(crypto_scalarmult(shared, v->eph_sk, v->rpk), 0);
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, ctx, sizeof ctx);
    crypto_generichash_update(&st, shared, 32);
    crypto_generichash_update(&st, v->epoch_pk, 32);
    crypto_generichash_update(&st, v->rpk, 32);
    crypto_generichash_final(&st, ek, 32);
}

static void raw_wrap(const vector *v, uint8_t out[REFEX_EPOCH_WRAPPED_LEN])
{
    uint8_t ad[256];
    size_t n = 0, sl = strlen(v->sender), rl = strlen(v->recipient);
    memcpy(ad, "refex/wrap/v1", 14); /* with its NUL */
    n = 14;
    memcpy(ad + n, v->id, 16);
    n += 16;
    uint8_t l1[4] = {0, 0, 0, (uint8_t)sl}, l2[4] = {0, 0, 0, (uint8_t)rl};
    memcpy(ad + n, l1, 4);
    memcpy(ad + n + 4, v->sender, sl);
    n += 4 + sl;
    memcpy(ad + n, l2, 4);
    memcpy(ad + n + 4, v->recipient, rl);
    n += 4 + rl;
    unsigned long long clen = 0;
    memcpy(out, v->nonce, 24);
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + 24, &clen, v->k, 32, ad, n, NULL, v->nonce,
                                               v->ek);
    assert_int_equal(clen, 48);
}

static void test_vector(void **state)
{
    (void)state;
    vector v;
    uint8_t pk[32], ek[32], w[REFEX_EPOCH_WRAPPED_LEN], k[32];
    load_vector(&v);
    crypto_scalarmult_base(pk, v.eph_sk);
    assert_memory_equal(pk, v.epoch_pk, 32);
    crypto_scalarmult_base(pk, v.rsk);
    assert_memory_equal(pk, v.rpk, 32);

    /* Independently of the library. */
    raw_epoch_key(&v, ek);
    assert_memory_equal(ek, v.ek, 32);
    raw_wrap(&v, w);
    assert_memory_equal(w, v.wrapped, sizeof w);

    /* The library, at the sender and at the recipient. */
    assert_ok(refex_epoch_derive(v.eph_sk, v.rpk, v.epoch_pk, v.rpk, ek));
    assert_memory_equal(ek, v.ek, 32);
    assert_ok(refex_epoch_derive(v.rsk, v.epoch_pk, v.epoch_pk, v.rpk, ek));
    assert_memory_equal(ek, v.ek, 32);
    assert_ok(refex_epoch_wrap(v.ek, v.nonce, v.k, v.id, v.sender, v.recipient, w));
    assert_memory_equal(w, v.wrapped, sizeof w);
    assert_ok(refex_epoch_unwrap(v.ek, v.wrapped, v.id, v.sender, v.recipient, k));
    assert_memory_equal(k, v.k, 32);
}

/* Every bit of the wrapped key, the epoch key, the message id, and the names matter. */
static void test_vector_flipped_bits(void **state)
{
    (void)state;
    vector v;
    uint8_t k[32], ek[32];
    load_vector(&v);
    for (size_t i = 0; i < REFEX_EPOCH_WRAPPED_LEN * 8; i++) {
        v.wrapped[i / 8] ^= (uint8_t)(1u << (i % 8));
        assert_rc(refex_epoch_unwrap(v.ek, v.wrapped, v.id, v.sender, v.recipient, k),
                  REFEX_E_DECRYPT);
        v.wrapped[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    for (size_t i = 0; i < 32; i++) {
        v.ek[i] ^= 0x01;
        assert_rc(refex_epoch_unwrap(v.ek, v.wrapped, v.id, v.sender, v.recipient, k),
                  REFEX_E_DECRYPT);
        v.ek[i] ^= 0x01;
    }
    v.id[15] ^= 0x80;
    assert_rc(refex_epoch_unwrap(v.ek, v.wrapped, v.id, v.sender, v.recipient, k), REFEX_E_DECRYPT);
    v.id[15] ^= 0x80;
    assert_rc(refex_epoch_unwrap(v.ek, v.wrapped, v.id, "police", v.recipient, k), REFEX_E_DECRYPT);
    assert_rc(refex_epoch_unwrap(v.ek, v.wrapped, v.id, v.sender, "police", k), REFEX_E_DECRYPT);
    /* Sender and recipient swapped: the lengths keep the two names apart. */
    assert_rc(refex_epoch_unwrap(v.ek, v.wrapped, v.id, v.recipient, v.sender, k), REFEX_E_DECRYPT);
    /* A flipped bit of the epoch or recipient key gives another EK. */
    v.epoch_pk[0] ^= 0x01;
    assert_ok(refex_epoch_derive(v.rsk, v.epoch_pk, v.epoch_pk, v.rpk, ek));
    assert_memory_not_equal(ek, v.ek, 32);
    v.epoch_pk[0] ^= 0x01;
    v.rpk[3] ^= 0x10;
    assert_ok(refex_epoch_derive(v.rsk, v.epoch_pk, v.epoch_pk, v.rpk, ek));
    assert_memory_not_equal(ek, v.ek, 32);
    assert_ok(refex_epoch_unwrap(v.ek, v.wrapped, v.id, v.sender, v.recipient, k));
}

/* Low-order points give an all-zero shared secret: refused, not used. */
static void test_low_order_point(void **state)
{
    (void)state;
    uint8_t sk[32], pk[32], ek[32], zero[32] = {0}, one[32] = {1};
    crypto_box_keypair(pk, sk);
    assert_rc(refex_epoch_derive(sk, zero, zero, pk, ek), REFEX_E_CRYPTO);
    assert_rc(refex_epoch_derive(sk, one, one, pk, ek), REFEX_E_CRYPTO);
}

static void test_sender_limits(void **state)
{
    (void)state;
    refex_epoch_sender *s = NULL;
    uint8_t sk[32], r1[32], r2[32], pk[32], first[32], ek[32], ek1[32];
    crypto_box_keypair(r1, sk);
    crypto_box_keypair(r2, sk);
    assert_rc(refex_epoch_sender_new(0, 10, &s), REFEX_E_INVAL);
    assert_rc(refex_epoch_sender_new(600, 0, &s), REFEX_E_INVAL);
    assert_rc(refex_epoch_sender_new(REFEX_EPOCH_SECONDS_MAX + 1, 10, &s), REFEX_E_INVAL);
    assert_rc(refex_epoch_sender_new(600, REFEX_EPOCH_MESSAGES_MAX + 1, &s), REFEX_E_INVAL);
    assert_null(s);
    assert_ok(refex_epoch_sender_new(600, 3, &s));
    int64_t t = 1700000000000;

    /* Three messages share an epoch; the fourth begins the next one. */
    assert_ok(refex_epoch_sender_take(s, r1, t, first, ek1));
    for (int i = 0; i < 2; i++) {
        assert_ok(refex_epoch_sender_take(s, r1, t + i, pk, ek));
        assert_memory_equal(pk, first, 32);
        assert_memory_equal(ek, ek1, 32);
    }
    assert_int_equal(refex_epoch_sender_begun(s), 1);
    assert_ok(refex_epoch_sender_take(s, r1, t, pk, ek));
    assert_memory_not_equal(pk, first, 32);
    assert_memory_not_equal(ek, ek1, 32);
    assert_int_equal(refex_epoch_sender_begun(s), 2);

    /* Another recipient key (also: the same agency after a rotation) has its own epoch. */
    assert_ok(refex_epoch_sender_take(s, r2, t, first, ek));
    assert_int_equal(refex_epoch_sender_begun(s), 3);

    /* By age: still current just before 600 s, a new one at 600 s. */
    assert_ok(refex_epoch_sender_take(s, r2, t + 599999, pk, ek));
    assert_memory_equal(pk, first, 32);
    assert_ok(refex_epoch_sender_take(s, r2, t + 600000, pk, ek));
    assert_memory_not_equal(pk, first, 32);
    assert_int_equal(refex_epoch_sender_begun(s), 4);

    /* A clock that went back ends the epoch too. */
    memcpy(first, pk, 32);
    assert_ok(refex_epoch_sender_take(s, r2, t, pk, ek));
    assert_memory_not_equal(pk, first, 32);
    assert_int_equal(refex_epoch_sender_begun(s), 5);

    /* A recipient key that is a low-order point is refused, typed. */
    uint8_t zero[32] = {0};
    assert_rc(refex_epoch_sender_take(s, zero, t, pk, ek), REFEX_E_CRYPTO);
    refex_epoch_sender_destroy(&s);
    assert_null(s);
    refex_epoch_sender_destroy(&s);
    refex_epoch_sender_destroy(NULL);
}

/* More recipient keys than slots: the oldest epoch is ended, every take still works. */
static void test_sender_table_full(void **state)
{
    (void)state;
    refex_epoch_sender *s = NULL;
    uint8_t sk[32], keys[REFEX_EPOCH_SENDER_SLOTS + 1][32], pk[32], first[32], ek[32];
    assert_ok(refex_epoch_sender_new(600, 1000, &s));
    int64_t t = 1700000000000;
    for (size_t i = 0; i <= REFEX_EPOCH_SENDER_SLOTS; i++) {
        crypto_box_keypair(keys[i], sk);
        assert_ok(refex_epoch_sender_take(s, keys[i], t + (int64_t)i, i ? pk : first, ek));
    }
    assert_int_equal(refex_epoch_sender_begun(s), REFEX_EPOCH_SENDER_SLOTS + 1);
    /* keys[0]'s epoch was the oldest, so it went; keys[1]'s is still there. */
    assert_ok(refex_epoch_sender_take(s, keys[1], t + 1000, pk, ek));
    assert_int_equal(refex_epoch_sender_begun(s), REFEX_EPOCH_SENDER_SLOTS + 1);
    assert_ok(refex_epoch_sender_take(s, keys[0], t + 1000, pk, ek));
    assert_memory_not_equal(pk, first, 32);
    assert_int_equal(refex_epoch_sender_begun(s), REFEX_EPOCH_SENDER_SLOTS + 2);
    refex_epoch_sender_destroy(&s);
}

static void test_cache(void **state)
{
    (void)state;
    refex_epoch_cache *c = NULL;
    uint8_t own[2][32], epk[REFEX_EPOCH_CACHE_SLOTS + 1][32], ek[32], got[32];
    assert_rc(refex_epoch_cache_new(-1, &c), REFEX_E_INVAL);
    assert_ok(refex_epoch_cache_new(60000, &c));
    randombytes_buf(own, sizeof own);
    randombytes_buf(epk, sizeof epk);
    int64_t t = 1700000000000;
    for (size_t i = 0; i < REFEX_EPOCH_CACHE_SLOTS; i++) {
        memset(ek, (int)i, sizeof ek);
        refex_epoch_cache_put(c, own[0], epk[i], t, ek);
    }
    assert_true(refex_epoch_cache_find(c, own[0], epk[5], t, got));
    memset(ek, 5, sizeof ek);
    assert_memory_equal(got, ek, 32);
    /* Keyed by own key too: the same epoch key under the other own key is not there. */
    assert_false(refex_epoch_cache_find(c, own[1], epk[5], t, got));

    /* Touch all but entry 0; one more entry evicts entry 0, the least recently used. */
    for (size_t i = 1; i < REFEX_EPOCH_CACHE_SLOTS; i++)
        assert_true(refex_epoch_cache_find(c, own[0], epk[i], t, got));
    refex_epoch_cache_put(c, own[0], epk[REFEX_EPOCH_CACHE_SLOTS], t, ek);
    assert_false(refex_epoch_cache_find(c, own[0], epk[0], t, got));
    assert_true(refex_epoch_cache_find(c, own[0], epk[1], t, got));
    assert_true(refex_epoch_cache_find(c, own[0], epk[REFEX_EPOCH_CACHE_SLOTS], t, got));

    /* Unused for the idle time: gone (and so for a clock that went back). */
    assert_true(refex_epoch_cache_find(c, own[0], epk[2], t + 59999, got));
    assert_false(refex_epoch_cache_find(c, own[0], epk[3], t + 60000, got));
    assert_true(refex_epoch_cache_find(c, own[0], epk[2], t + 60000, got));
    assert_false(refex_epoch_cache_find(c, own[0], epk[2], t, got));

    /* Forgetting an own key wipes its entries only. */
    refex_epoch_cache_put(c, own[1], epk[7], t, ek);
    refex_epoch_cache_put(c, own[0], epk[8], t, ek);
    refex_epoch_cache_forget(c, own[1]);
    assert_false(refex_epoch_cache_find(c, own[1], epk[7], t, got));
    assert_true(refex_epoch_cache_find(c, own[0], epk[8], t, got));
    refex_epoch_cache_forget(NULL, own[1]);
    refex_epoch_cache_destroy(&c);
    assert_null(c);
    refex_epoch_cache_destroy(NULL);
}

/* ---- through the envelope -------------------------------------------------------------- */

static refex_keys *g_sender, *g_rcpt, *g_rcpt_new;

static int setup(void **state)
{
    (void)state;
    if (sodium_init() < 0 || refex_keys_new("midwifery", "maternity", &g_sender) != REFEX_OK ||
        refex_keys_new("social-care", "childrens-services", &g_rcpt) != REFEX_OK ||
        refex_keys_new("social-care", "childrens-services", &g_rcpt_new) != REFEX_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    refex_keys_destroy(&g_sender);
    refex_keys_destroy(&g_rcpt);
    refex_keys_destroy(&g_rcpt_new);
    return 0;
}

static Refex__V1__Envelope *seal_with(refex_epoch_sender *epochs, const refex_keys *to,
                                      const char *body)
{
    refex_agency a;
    refex_agency_from_pubkeys(&a, &to->pub, NULL);
    const refex_agency *rcpt[1] = {&a};
    refex_seal_params p = {.sender = "midwifery",
                           .sign_sk = g_sender->sk->sign_sk,
                           .recipients = rcpt,
                           .n_recipients = 1,
                           .type = REFEX__V1__MESSAGE_TYPE__REFERRAL,
                           .epochs = epochs};
    uint8_t *buf = NULL, id[16];
    size_t len = 0;
    assert_ok(refex_envelope_seal(&p, (const uint8_t *)body, strlen(body), &buf, &len, id));
    Refex__V1__Envelope *env = refex__v1__envelope__unpack(NULL, len, buf);
    assert_non_null(env);
    free(buf);
    assert_int_equal(env->key_slots[0]->epoch_pk.len, 32);
    assert_int_equal(env->key_slots[0]->wrapped_key.len, REFEX_EPOCH_WRAPPED_LEN);
    return env;
}

/* Verifies and opens env with keys through cache; the body must be `want`. */
static int open_with(Refex__V1__Envelope *env, const refex_open_key *keys, size_t n,
                     refex_epoch_cache *cache, const char *want)
{
    Refex__V1__EnvelopeHeader *h = NULL;
    uint8_t *body = NULL;
    size_t len = 0;
    assert_ok(refex_envelope_parse_header(env, &h));
    assert_ok(refex_envelope_verify(env, h, g_sender->pub.sign_pk));
    int rc = refex_envelope_open_keys(env, h, "social-care", keys, n, cache, &body, &len);
    if (rc == REFEX_OK) {
        assert_int_equal(len, strlen(want));
        assert_memory_equal(body, want, len);
    }
    free(body);
    refex__v1__envelope_header__free_unpacked(h, NULL);
    return rc;
}

/* One epoch, many messages: one derivation at the receiver, for the first only. */
static void test_one_derivation_per_epoch(void **state)
{
    (void)state;
    refex_epoch_sender *s = NULL;
    refex_epoch_cache *c = NULL;
    Refex__V1__Envelope *env[3];
    assert_ok(refex_epoch_sender_new(600, 2, &s));
    assert_ok(refex_epoch_cache_new(600000, &c));
    refex_open_key k = {g_rcpt->pub.enc_pk, g_rcpt->sk->enc_sk};
    for (int i = 0; i < 3; i++)
        env[i] = seal_with(s, g_rcpt, "epoch body");
    assert_memory_equal(env[0]->key_slots[0]->epoch_pk.data, env[1]->key_slots[0]->epoch_pk.data,
                        32);
    assert_memory_not_equal(env[1]->key_slots[0]->epoch_pk.data,
                            env[2]->key_slots[0]->epoch_pk.data, 32);
    for (int i = 0; i < 3; i++)
        assert_ok(open_with(env[i], &k, 1, c, "epoch body"));
    assert_int_equal(refex_epoch_cache_misses(c), 2); /* two epochs */
    assert_ok(open_with(env[0], &k, 1, c, "epoch body"));
    assert_int_equal(refex_epoch_cache_misses(c), 2);

    /* Without the table or the cache it still works, as a one-off epoch. */
    Refex__V1__Envelope *one = seal_with(NULL, g_rcpt, "one-off");
    assert_ok(open_with(one, &k, 1, NULL, "one-off"));
    refex__v1__envelope__free_unpacked(one, NULL);

    /* A wrong own key: E_DECRYPT, and nothing cached for it. */
    refex_open_key wrong = {g_rcpt_new->pub.enc_pk, g_rcpt_new->sk->enc_sk};
    assert_rc(open_with(env[0], &wrong, 1, c, ""), REFEX_E_DECRYPT);
    assert_rc(open_with(env[0], &wrong, 1, c, ""), REFEX_E_DECRYPT);
    assert_int_equal(refex_epoch_cache_misses(c), 4);
    assert_rc(open_with(env[0], &k, 0, c, ""), REFEX_E_INVAL);
    for (int i = 0; i < 3; i++)
        refex__v1__envelope__free_unpacked(env[i], NULL);
    refex_epoch_sender_destroy(&s);
    refex_epoch_cache_destroy(&c);
}

/* The recipient rotated: it holds the new key and the previous one. What was sealed to the
 * previous key opens, and after its first message each one needs no derivation at all
 * (the cache is consulted for both own keys before deriving with either). */
static void test_rotation_overlap(void **state)
{
    (void)state;
    refex_epoch_sender *s = NULL;
    refex_epoch_cache *c = NULL;
    assert_ok(refex_epoch_sender_new(600, 100, &s));
    assert_ok(refex_epoch_cache_new(600000, &c));
    refex_open_key k[2] = {{g_rcpt_new->pub.enc_pk, g_rcpt_new->sk->enc_sk},
                           {g_rcpt->pub.enc_pk, g_rcpt->sk->enc_sk}};
    Refex__V1__Envelope *old1 = seal_with(s, g_rcpt, "to the old key");
    Refex__V1__Envelope *old2 = seal_with(s, g_rcpt, "to the old key");
    Refex__V1__Envelope *new1 = seal_with(s, g_rcpt_new, "to the new key");
    assert_int_equal(refex_epoch_sender_begun(s), 2); /* a new recipient key, a new epoch */
    assert_ok(open_with(old1, k, 2, c, "to the old key"));
    assert_int_equal(refex_epoch_cache_misses(c), 2); /* the new key tried, then the old */
    assert_ok(open_with(old2, k, 2, c, "to the old key"));
    assert_int_equal(refex_epoch_cache_misses(c), 2);
    assert_ok(open_with(new1, k, 2, c, "to the new key"));
    assert_int_equal(refex_epoch_cache_misses(c), 3);
    /* The new key alone cannot open what was sealed to the old one. */
    assert_rc(open_with(old1, k, 1, c, ""), REFEX_E_DECRYPT);
    refex__v1__envelope__free_unpacked(old1, NULL);
    refex__v1__envelope__free_unpacked(old2, NULL);
    refex__v1__envelope__free_unpacked(new1, NULL);
    refex_epoch_sender_destroy(&s);
    refex_epoch_cache_destroy(&c);
}

/* Bad key slots at open: wrong sizes, a low-order epoch key, a damaged wrap. */
static void test_bad_slots(void **state)
{
    (void)state;
    refex_epoch_cache *c = NULL;
    assert_ok(refex_epoch_cache_new(600000, &c));
    refex_open_key k = {g_rcpt->pub.enc_pk, g_rcpt->sk->enc_sk};
    Refex__V1__Envelope *env = seal_with(NULL, g_rcpt, "slots");
    Refex__V1__EnvelopeHeader *h = NULL;
    uint8_t *body = NULL, zero[32] = {0};
    size_t len = 0;
    assert_ok(refex_envelope_parse_header(env, &h));
    Refex__V1__KeySlot *slot = env->key_slots[0];
    ProtobufCBinaryData epk = slot->epoch_pk, wk = slot->wrapped_key;
    slot->epoch_pk.len = 31;
    assert_rc(refex_envelope_open_keys(env, h, "social-care", &k, 1, c, &body, &len),
              REFEX_E_DECRYPT);
    slot->epoch_pk = epk;
    slot->wrapped_key.len = REFEX_EPOCH_WRAPPED_LEN - 1;
    assert_rc(refex_envelope_open_keys(env, h, "social-care", &k, 1, c, &body, &len),
              REFEX_E_DECRYPT);
    slot->wrapped_key = wk;
    slot->epoch_pk = (ProtobufCBinaryData){32, zero};
    assert_rc(refex_envelope_open_keys(env, h, "social-care", &k, 1, c, &body, &len),
              REFEX_E_DECRYPT);
    slot->epoch_pk = epk;
    slot->wrapped_key.data[40] ^= 0x04;
    assert_rc(refex_envelope_open_keys(env, h, "social-care", &k, 1, c, &body, &len),
              REFEX_E_DECRYPT);
    slot->wrapped_key.data[40] ^= 0x04;
    assert_rc(refex_envelope_open_keys(env, h, "police", &k, 1, c, &body, &len),
              REFEX_E_NOT_RECIPIENT);
    assert_ok(refex_envelope_open_keys(env, h, "social-care", &k, 1, c, &body, &len));
    assert_non_null(body);
    free(body);
    refex__v1__envelope_header__free_unpacked(h, NULL);
    refex__v1__envelope__free_unpacked(env, NULL);
    refex_epoch_cache_destroy(&c);
}

/* An idle sender's and receiver's ended epochs are wiped by the sweep, not kept until the
 * next seal or open. */
static void test_sweep(void **state)
{
    (void)state;
    refex_epoch_sender *s = NULL;
    refex_epoch_cache *c = NULL;
    uint8_t sk[32], r1[32], own[32], epk[32], pk[32], ek[32];
    int64_t t = 1700000000000;
    crypto_box_keypair(r1, sk);
    randombytes_buf(own, sizeof own);
    randombytes_buf(epk, sizeof epk);
    randombytes_buf(ek, sizeof ek);
    assert_ok(refex_epoch_sender_new(600, 1000, &s));
    assert_ok(refex_epoch_cache_new(600000, &c));
    assert_ok(refex_epoch_sender_take(s, r1, t, pk, ek));
    refex_epoch_cache_put(c, own, epk, t, ek);
    refex_epoch_sender_sweep(s, t + 599999);
    refex_epoch_cache_sweep(c, t + 599999);
    assert_int_equal(refex_epoch_sender_live(s), 1);
    assert_int_equal(refex_epoch_cache_live(c), 1);
    refex_epoch_sender_sweep(s, t + 600000);
    refex_epoch_cache_sweep(c, t + 600000);
    assert_int_equal(refex_epoch_sender_live(s), 0);
    assert_int_equal(refex_epoch_cache_live(c), 0);
    refex_epoch_sender_sweep(NULL, t);
    refex_epoch_cache_sweep(NULL, t);
    refex_epoch_sender_destroy(&s);
    refex_epoch_cache_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector),
        cmocka_unit_test(test_vector_flipped_bits),
        cmocka_unit_test(test_low_order_point),
        cmocka_unit_test(test_sender_limits),
        cmocka_unit_test(test_sender_table_full),
        cmocka_unit_test(test_sweep),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_one_derivation_per_epoch),
        cmocka_unit_test(test_rotation_overlap),
        cmocka_unit_test(test_bad_slots),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
