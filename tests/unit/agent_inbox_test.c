/* Tests for the agent's inbox (agents/inbox.c over agents/agent_store.c), against a real
 * SQLite file: duplicate detection (known_delivery) for stored and refused messages, a
 * verified delivery stored with one audit entry and acknowledged with code 0, a
 * redelivery acknowledged the same way without a second entry, a refusal remembered and
 * answered the same way again (naming the envelope hash), a forgery held (no ACK) whether
 * it comes before or after the genuine message and never shadowing it, receipts recorded once,
 * and a receipt naming an envelope other than the one we sent ignored; the consumable inbox:
 * cursors (also given to the messages of a database made before them), pages by cursor, an
 * acknowledgement audited once, and held waiters (woken by a commit, at most 64, expired). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "agent_testing.h"
#include "audit.h"
#include "body.h"
#include "envelope.h"
#include "receipt.h"

static int setup(void **state)
{
    *state = agent_fixture_new(T_LEAD);
    return 0;
}

static int teardown(void **state)
{
    agent_fixture *f = *state;
    agent_fixture_destroy(&f);
    return 0;
}

static void insert(agent_fixture *f, const char *sender, const char *id, const char *hashhex,
                   int *dup)
{
    static const uint8_t body[] = "body";
    refex_body_meta m = {"", "", "", "", "", "", "", "CONV-1", "", "", "", ""};
    agent_inbox_row r = {sender, id,      "REFERRAL", "CASE-1",    1000,
                         2000,   hashhex, body,       sizeof body, &m};
    assert_ok(agent_store_inbox_insert(f->a.store, &r, dup));
}

static void test_known_delivery_stored(void **state)
{
    agent_fixture *f = *state;
    char hashhex[65];
    uint8_t hash[32], got[32];
    int code = -1, has_hash = -1, dup = -1;
    for (int i = 0; i < 32; i++)
        hash[i] = (uint8_t)(i * 7);
    refex_hex_encode(hashhex, hash, 32);
    assert_false(agent_store_known_delivery(f->a.store, "midwifery", "aa", &code, got, &has_hash));
    insert(f, "midwifery", "aa", hashhex, &dup);
    assert_int_equal(dup, 0);
    assert_true(agent_store_known_delivery(f->a.store, "midwifery", "aa", &code, got, &has_hash));
    assert_int_equal(code, 0);
    assert_true(has_hash);
    assert_memory_equal(got, hash, 32);
    /* Same id from another sender is another message. */
    assert_false(agent_store_known_delivery(f->a.store, "police", "aa", &code, got, &has_hash));
    insert(f, "midwifery", "aa", hashhex, &dup);
    assert_int_equal(dup, 1);
    json_t *rows = NULL;
    assert_ok(agent_store_inbox_json(f->a.store, NULL, &rows));
    assert_int_equal(json_array_size(rows), 1);
    /* Not a valid Body: listed with body_error, never dropped. */
    assert_non_null(json_object_get(json_array_get(rows, 0), "body_error"));
    json_decref(rows);
}

static void test_known_delivery_refused(void **state)
{
    agent_fixture *f = *state;
    uint8_t got[32];
    int code = -1, has_hash = -1, dup = -1;
    assert_ok(agent_store_refused_insert(f->a.store, "police", "bb", REFEX_E_NOT_MEMBER, &dup));
    assert_int_equal(dup, 0);
    assert_true(agent_store_known_delivery(f->a.store, "police", "bb", &code, got, &has_hash));
    assert_int_equal(code, REFEX_E_NOT_MEMBER);
    assert_false(has_hash);
    assert_ok(agent_store_refused_insert(f->a.store, "police", "bb", REFEX_E_EXPIRED, &dup));
    assert_int_equal(dup, 1);
    assert_true(agent_store_known_delivery(f->a.store, "police", "bb", &code, got, &has_hash));
    assert_int_equal(code, REFEX_E_NOT_MEMBER); /* the first answer stands */
}

static void test_receipt_recorded_once(void **state)
{
    agent_fixture *f = *state;
    static const uint8_t blob[] = "signed-receipt";
    int fresh = -1;
    agent_receipt_row r = {"aa", "social-care", 0, "social-care", 1000, 2000, blob, sizeof blob};
    assert_ok(agent_store_receipt_insert(f->a.store, &r, &fresh));
    assert_int_equal(fresh, 1);
    assert_ok(agent_store_receipt_insert(f->a.store, &r, &fresh));
    assert_int_equal(fresh, 0);
    r.recipient = "police";
    assert_ok(agent_store_receipt_insert(f->a.store, &r, &fresh));
    assert_int_equal(fresh, 1);
}

/* How far ahead of now the next envelopes are created (0: now). */
static int64_t g_created_ahead_ms;

/* Body j (taken) as a referral sealed by midwifery for `to`. */
static Refex__V1__Envelope *seal_json(agent_fixture *f, const char *to, json_t *j, uint8_t id[16])
{
    uint8_t *body = NULL, *env = NULL;
    size_t body_len = 0, env_len = 0;
    char err[256];
    assert_ok(refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, j, &body, &body_len, err,
                                   sizeof err));
    json_decref(j);
    const refex_agency *rcpt[1] = {refex_directory_find(f->directory, to)};
    refex_seal_params p = {.sender = "midwifery",
                           .sign_sk = f->keys[T_MIDWIFERY]->sk->sign_sk,
                           .recipients = rcpt,
                           .n_recipients = 1,
                           .type = REFEX__V1__MESSAGE_TYPE__REFERRAL,
                           .case_ref = "CASE-1",
                           .created_at_ms = refex_now_ms() + g_created_ahead_ms,
                           .expires_at_ms = 0};
    assert_ok(refex_envelope_seal(&p, body, body_len, &env, &env_len, id));
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, env_len, env);
    assert_non_null(e);
    free(body);
    free(env);
    return e;
}

/* A complete referral sealed by midwifery for `to`. */
static Refex__V1__Envelope *seal(agent_fixture *f, const char *to, uint8_t id[16])
{
    return seal_json(f, to,
                     json_pack("{s:s, s:{s:s, s:s}, s:{s:s}, s:{s:s, s:s}, s:s, s:s, s:s}",
                               "summary", "x", "subject", "kind", "SUBJECT_UNBORN", "reference",
                               "UB-1", "referrer", "reference", "MW-1", "lawful_basis", "article6",
                               "ARTICLE6_PUBLIC_TASK", "article9",
                               "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST", "consent", "CONSENT_GIVEN",
                               "purpose", "PURPOSE_SAFEGUARDING", "urgency", "URGENCY_ROUTINE"),
                     id);
}

/* Delivers env inside an open batch (so that even an ACK that needs no commit, for a
 * redelivery, is queued where the test can read it, not sent on the absent link), checks
 * the one ACK queued for the broker, and commits. */
static void deliver_expect_ack(agent_fixture *f, const Refex__V1__Envelope *env,
                               const uint8_t id[16], int code)
{
    assert_ok(batch_unit_begin(&f->a));
    assert_ok(batch_unit_end(&f->a, 1));
    inbox_deliver(&f->a, env);
    assert_int_equal(f->a.outq_n, 1);
    Refex__V1__Frame *fr = agent_fixture_frame(f, 0);
    assert_int_equal(fr->kind_case, REFEX__V1__FRAME__KIND_ACK);
    assert_int_equal(fr->ack->code, (uint32_t)code);
    assert_string_equal(fr->ack->sender, "midwifery");
    assert_int_equal(fr->ack->message_id.len, 16);
    assert_memory_equal(fr->ack->message_id.data, id, 16);
    assert_non_null(fr->ack->receipt); /* our signed receipt, in every case */
    refex_frame_free(&fr);
    agent_fixture_commit(f);
}

/* Delivers env as deliver_expect_ack does, and checks that nothing was queued: held, not
 * acknowledged (so the broker delivers it again). */
static void deliver_expect_held(agent_fixture *f, const Refex__V1__Envelope *env)
{
    assert_ok(batch_unit_begin(&f->a));
    assert_ok(batch_unit_end(&f->a, 1));
    inbox_deliver(&f->a, env);
    assert_int_equal(f->a.outq_n, 0);
    agent_fixture_commit(f);
}

/* An envelope of version 1 (before key epochs), correctly signed by the sender: dropped
 * unacknowledged, unaudited (the broker keeps it; it cannot be opened here), and the agent
 * goes on accepting current envelopes. */
static void test_old_envelope_version_not_acknowledged(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16], sig[64], *hdr = NULL;
    size_t len = 0;
    Refex__V1__Envelope *env = seal(f, "social-care", id);
    Refex__V1__EnvelopeHeader *h =
        refex__v1__envelope_header__unpack(NULL, env->header.len, env->header.data);
    assert_non_null(h);
    h->version = 1;
    assert_ok(refex_pb_pack(&h->base, &hdr, &len));
    /* Signed alone as a version-1 sender would (a 64-byte signature over the header). */
    assert_ok(
        refex_sign_domain("refex/envelope/v1", hdr, len, f->keys[T_MIDWIFERY]->sk->sign_sk, sig));
    Refex__V1__Envelope old = *env;
    old.header = (ProtobufCBinaryData){len, hdr};
    old.signature = (ProtobufCBinaryData){64, sig};
    old.batch = NULL;
    uint64_t before = agent_fixture_audit_size(f);
    deliver_expect_held(f, &old);
    deliver_expect_held(f, &old);
    assert_int_equal(agent_fixture_audit_size(f), before);
    deliver_expect_ack(f, env, id, REFEX_OK);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    free(hdr);
    refex__v1__envelope_header__free_unpacked(h, NULL);
    refex__v1__envelope__free_unpacked(env, NULL);
}

/* Midwifery rotates its keys and the overlap is over. A message accepted under its old key
 * and delivered again (our ACK lost) is answered from memory as accepted, not refused; a
 * new one signed with the old key is refused E_REVOKED for good, once audited and
 * remembered. */
static void test_rotated_away_key(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16], id2[16];
    refex_keys *fresh = NULL;
    Refex__V1__Envelope *env = seal(f, "social-care", id);
    Refex__V1__Envelope *late = seal(f, "social-care", id2);
    deliver_expect_ack(f, env, id, REFEX_OK);
    assert_ok(refex_keys_new("midwifery", f->keys[T_MIDWIFERY]->pub.role, &fresh));
    int64_t now = refex_now_ms();
    assert_ok(refex_directory_rotate(f->directory, &fresh->pub, now - 2000, now - 1000));
    deliver_expect_ack(f, env, id, REFEX_OK);
    uint64_t before = agent_fixture_audit_size(f);
    deliver_expect_ack(f, late, id2, REFEX_E_REVOKED);
    deliver_expect_ack(f, late, id2, REFEX_E_REVOKED);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    refex_keys_destroy(&fresh);
    refex__v1__envelope__free_unpacked(late, NULL);
    refex__v1__envelope__free_unpacked(env, NULL);
}

static void test_deliver_stores_then_redelivery_acks_again(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16];
    Refex__V1__Envelope *env = seal(f, "social-care", id);
    uint64_t before = agent_fixture_audit_size(f);
    deliver_expect_ack(f, env, id, REFEX_OK);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    json_t *rows = NULL;
    assert_ok(agent_store_inbox_json(f->a.store, NULL, &rows));
    assert_int_equal(json_array_size(rows), 1);
    json_t *row = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(row, "sender")), "midwifery");
    assert_string_equal(json_string_value(json_object_get(row, "case_ref")), "CASE-1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(row, "body"), "summary")),
                        "x");
    json_decref(rows);
    /* The broker delivers it again (our ACK was lost): same answer, no second entry. */
    deliver_expect_ack(f, env, id, REFEX_OK);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    assert_ok(agent_store_inbox_json(f->a.store, NULL, &rows));
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    refex__v1__envelope__free_unpacked(env, NULL);
}

static void test_refusal_remembered(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16];
    Refex__V1__Envelope *env = seal(f, "police", id); /* not for us */
    uint64_t before = agent_fixture_audit_size(f);
    deliver_expect_ack(f, env, id, REFEX_E_NOT_RECIPIENT);
    assert_int_equal(agent_fixture_audit_size(f), before + 1); /* the reject is audited */
    deliver_expect_ack(f, env, id, REFEX_E_NOT_RECIPIENT);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    json_t *rows = NULL;
    assert_ok(agent_store_inbox_json(f->a.store, NULL, &rows));
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);
    refex__v1__envelope__free_unpacked(env, NULL);
}

/* A forged delivery (the sender's name and the id of a real message, a signature that does
 * not verify) is held: neither acknowledged, audited nor remembered; the genuine message,
 * delivered after it, is verified, stored and acknowledged. */
static void test_forgery_does_not_shadow_genuine(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16];
    Refex__V1__Envelope *env = seal(f, "social-care", id);
    uint8_t *sig = env->batch->root_signature.data;
    uint64_t before = agent_fixture_audit_size(f);
    sig[0] ^= 0x01;
    deliver_expect_held(f, env);
    assert_int_equal(agent_fixture_audit_size(f), before); /* held: not audited */
    int code = -1, has_hash = -1;
    uint8_t hash[32];
    char idhex[33];
    refex_hex_encode(idhex, id, 16);
    assert_false(
        agent_store_known_delivery(f->a.store, "midwifery", idhex, &code, hash, &has_hash));
    sig[0] ^= 0x01; /* now the genuine envelope */
    deliver_expect_ack(f, env, id, REFEX_OK);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    json_t *rows = NULL;
    assert_ok(agent_store_inbox_json(f->a.store, NULL, &rows));
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    refex__v1__envelope__free_unpacked(env, NULL);
}

/* An envelope from 10 minutes in the future (beyond the skew allowed): held, not audited,
 * not remembered; the next genuine delivery is accepted. */
static void test_clock_skew_held(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16], id2[16];
    char idhex[33];
    int code = -1, has_hash = -1;
    uint8_t hash[32];
    g_created_ahead_ms = 600000;
    Refex__V1__Envelope *env = seal(f, "social-care", id);
    g_created_ahead_ms = 0;
    uint64_t before = agent_fixture_audit_size(f);
    deliver_expect_held(f, env);
    deliver_expect_held(f, env); /* again: the same */
    assert_int_equal(agent_fixture_audit_size(f), before);
    refex_hex_encode(idhex, id, 16);
    assert_false(
        agent_store_known_delivery(f->a.store, "midwifery", idhex, &code, hash, &has_hash));
    Refex__V1__Envelope *env2 = seal(f, "social-care", id2);
    deliver_expect_ack(f, env2, id2, REFEX_OK);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    refex__v1__envelope__free_unpacked(env2, NULL);
    refex__v1__envelope__free_unpacked(env, NULL);
}

/* Delivers env as deliver_expect_ack does, and returns the receipt of its ACK, verified. */
static refex_receipt deliver_receipt(agent_fixture *f, const Refex__V1__Envelope *env, int code)
{
    refex_receipt r;
    assert_ok(batch_unit_begin(&f->a));
    assert_ok(batch_unit_end(&f->a, 1));
    inbox_deliver(&f->a, env);
    assert_int_equal(f->a.outq_n, 1);
    Refex__V1__Frame *fr = agent_fixture_frame(f, 0);
    assert_int_equal(fr->kind_case, REFEX__V1__FRAME__KIND_ACK);
    assert_int_equal(fr->ack->code, (uint32_t)code);
    assert_ok(refex_receipt_verify(fr->ack->receipt, f->directory, &r));
    assert_int_equal(r.code, (uint32_t)code);
    refex_frame_free(&fr);
    agent_fixture_commit(f);
    return r;
}

/* Verification comes before the memory of what was handled: a forgery of a message already
 * stored is held (no ACK, not audited), not answered with the genuine message's receipt. */
static void test_forgery_after_genuine_refused(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16], good[32], bad[32];
    Refex__V1__Envelope *env = seal(f, "social-care", id);
    assert_ok(refex_envelope_hash(env, good));
    uint64_t before = agent_fixture_audit_size(f);
    refex_receipt r = deliver_receipt(f, env, REFEX_OK);
    assert_true(r.has_envelope_hash);
    assert_memory_equal(r.envelope_hash, good, 32);
    env->batch->root_signature.data[0] ^= 0x01;
    /* The envelope hash does not cover the signature: only verification tells them apart. */
    assert_ok(refex_envelope_hash(env, bad));
    assert_memory_equal(bad, good, 32);
    deliver_expect_held(f, env); /* not answered with the genuine receipt */
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    env->batch->root_signature.data[0] ^= 0x01;
    r = deliver_receipt(f, env, REFEX_OK); /* the genuine one again: from memory */
    assert_memory_equal(r.envelope_hash, good, 32);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    refex__v1__envelope__free_unpacked(env, NULL);
}

/* A refusal made after verification is remembered, and its repeat names the envelope hash
 * as the first answer did. */
static void test_remembered_refusal_names_hash(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16], hash[32];
    Refex__V1__Envelope *env = seal(f, "police", id); /* not for us */
    assert_ok(refex_envelope_hash(env, hash));
    for (int i = 0; i < 2; i++) {
        refex_receipt r = deliver_receipt(f, env, REFEX_E_NOT_RECIPIENT);
        assert_true(r.has_envelope_hash);
        assert_memory_equal(r.envelope_hash, hash, 32);
    }
    refex__v1__envelope__free_unpacked(env, NULL);
}

/* Hands the agent (the sender) midwifery's receipt for id naming hash (NULL: none); the
 * frames queued. */
static size_t hand_receipt(agent_fixture *f, const uint8_t id[16], int code, const uint8_t *hash)
{
    refex_receipt r;
    uint8_t *blob = NULL;
    size_t len = 0;
    memset(&r, 0, sizeof r);
    memcpy(r.message_id, id, 16);
    snprintf(r.sender, sizeof r.sender, "social-care");
    snprintf(r.recipient, sizeof r.recipient, "midwifery");
    snprintf(r.signer, sizeof r.signer, "midwifery");
    r.code = (uint32_t)code;
    r.time_ms = refex_now_ms();
    if (hash) {
        memcpy(r.envelope_hash, hash, 32);
        r.has_envelope_hash = 1;
    }
    assert_ok(refex_receipt_sign(&r, f->keys[T_MIDWIFERY]->sk->sign_sk, &blob, &len));
    Refex__V1__SignedReceipt *sr = refex__v1__signed_receipt__unpack(NULL, len, blob);
    free(blob);
    assert_non_null(sr);
    assert_ok(batch_unit_begin(&f->a));
    assert_ok(batch_unit_end(&f->a, 1));
    inbox_receipt(&f->a, sr);
    refex__v1__signed_receipt__free_unpacked(sr, NULL);
    size_t n = f->a.outq_n;
    agent_fixture_commit(f);
    return n;
}

/* The sender side: a receipt that names an envelope other than the one we sent (the
 * recipient's refusal of a forgery under our name and id), or none, is neither recorded
 * nor acknowledged; the receipt naming our envelope is. */
static void test_receipt_for_another_envelope_ignored(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16], ours[32], other[32];
    uint8_t *packed = NULL;
    size_t len = 0;
    char idhex[33];
    int held = -1;
    Refex__V1__Envelope *env = seal(f, "midwifery", id);
    assert_ok(refex_pb_pack(&env->base, &packed, &len));
    assert_ok(refex_envelope_hash(env, ours));
    memcpy(other, ours, 32);
    other[0] ^= 0x01;
    refex_hex_encode(idhex, id, 16);
    refex_body_meta m = {"", "", "", "", "", "", "", "", "", "", "", ""};
    agent_outbox_row row = {idhex, "midwifery", "REFERRAL", "CASE-1", 1000, refex_now_ms() + 60000,
                            1000,  packed,      len,        &m,       NULL, NULL};
    assert_ok(agent_store_outbox_insert(f->a.store, &row));
    assert_int_equal(hand_receipt(f, id, REFEX_E_BAD_SIGNATURE, other), 0);
    assert_ok(agent_store_receipt_held(f->a.store, idhex, "midwifery", &held));
    assert_false(held);
    /* Nor is the recipient's word on no envelope in particular. */
    assert_int_equal(hand_receipt(f, id, REFEX_OK, NULL), 0);
    assert_ok(agent_store_receipt_held(f->a.store, idhex, "midwifery", &held));
    assert_false(held);
    assert_int_equal(hand_receipt(f, id, REFEX_OK, ours), 1); /* its RECEIPT_ACK */
    assert_ok(agent_store_receipt_held(f->a.store, idhex, "midwifery", &held));
    assert_true(held);
    free(packed);
    refex__v1__envelope__free_unpacked(env, NULL);
}

/* A signed referral without its required fields (a sender that skipped its own check) is
 * refused with our signed receipt, audited once, remembered, and not stored. */
static void test_incomplete_body_refused(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16];
    Refex__V1__Envelope *env = seal_json(f, "social-care", json_pack("{s:s}", "summary", "x"), id);
    uint64_t before = agent_fixture_audit_size(f);
    deliver_expect_ack(f, env, id, REFEX_E_INVAL);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    deliver_expect_ack(f, env, id, REFEX_E_INVAL); /* redelivered: the same answer */
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    json_t *rows = NULL;
    assert_ok(agent_store_inbox_json(f->a.store, NULL, &rows));
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);
    refex__v1__envelope__free_unpacked(env, NULL);
}

/* A delivery whose commit fails is not acknowledged: the broker keeps it. */
static void test_no_ack_without_commit(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16];
    Refex__V1__Envelope *env = seal(f, "social-care", id);
    f->a.batch_dead = 1; /* as after SQLite rolled the transaction back by itself */
    inbox_deliver(&f->a, env);
    assert_int_equal(f->a.outq_n, 0);
    agent_fixture_commit(f);
    deliver_expect_ack(f, env, id, REFEX_OK); /* delivered again, now stored */
    refex__v1__envelope__free_unpacked(env, NULL);
}

/* ---- the consumable inbox ------------------------------------------------------------ */

/* Delivers n sealed referrals, their ids (hex) into ids. */
static void deliver_n(agent_fixture *f, int n, char ids[][33])
{
    for (int i = 0; i < n; i++) {
        uint8_t id[16];
        Refex__V1__Envelope *env = seal(f, "social-care", id);
        deliver_expect_ack(f, env, id, REFEX_OK);
        refex_hex_encode(ids[i], id, 16);
        refex__v1__envelope__free_unpacked(env, NULL);
    }
}

static long long cursor_at(json_t *rows, size_t i)
{
    return (long long)json_integer_value(json_object_get(json_array_get(rows, i), "cursor"));
}

static void test_cursor_pages(void **state)
{
    agent_fixture *f = *state;
    char ids[3][33];
    json_t *rows = NULL;
    int64_t last = -1;
    deliver_n(f, 3, ids);
    assert_ok(agent_store_inbox_page_json(f->a.store, 0, 0, 0, &rows, &last));
    assert_int_equal(json_array_size(rows), 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(cursor_at(rows, i), (long long)i + 1);
        assert_string_equal(
            json_string_value(json_object_get(json_array_get(rows, i), "message_id")), ids[i]);
        assert_true(json_is_false(json_object_get(json_array_get(rows, i), "acked")));
    }
    assert_int_equal(last, 3);
    json_decref(rows);
    assert_ok(agent_store_inbox_page_json(f->a.store, 1, 1, 0, &rows, &last));
    assert_int_equal(json_array_size(rows), 1);
    assert_int_equal(cursor_at(rows, 0), 2);
    assert_int_equal(last, 2);
    json_decref(rows);
    assert_ok(agent_store_inbox_page_json(f->a.store, 3, 0, 0, &rows, &last));
    assert_int_equal(json_array_size(rows), 0);
    assert_int_equal(last, 3); /* none: the cursor asked from */
    json_decref(rows);
}

static void test_ack_audited_once(void **state)
{
    agent_fixture *f = *state;
    char ids[2][33];
    json_t *rows = NULL;
    int64_t at = 0, at2 = 0, last;
    int already = -1;
    deliver_n(f, 2, ids);
    uint64_t before = agent_fixture_audit_size(f);
    assert_ok(inbox_ack(&f->a, ids[0], NULL, &at, &already));
    agent_fixture_commit(f);
    assert_int_equal(already, 0);
    assert_true(at > 0);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    assert_ok(inbox_ack(&f->a, ids[0], NULL, &at2, &already));
    agent_fixture_commit(f);
    assert_int_equal(already, 1);
    assert_int_equal(at2, at);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    assert_rc(inbox_ack(&f->a, "00000000000000000000000000000000", NULL, &at2, &already),
              REFEX_E_NOTFOUND);
    agent_fixture_commit(f);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    /* Still listed, acked; left out of the unacknowledged. */
    assert_ok(agent_store_inbox_page_json(f->a.store, 0, 0, 0, &rows, &last));
    assert_int_equal(json_array_size(rows), 2);
    json_t *m = json_array_get(rows, 0);
    assert_true(json_is_true(json_object_get(m, "acked")));
    assert_int_equal(json_integer_value(json_object_get(m, "acked_at_ms")), at);
    json_decref(rows);
    assert_ok(agent_store_inbox_page_json(f->a.store, 0, 0, 1, &rows, &last));
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), "message_id")),
                        ids[1]);
    json_decref(rows);
    /* The entry: an ack from the sender, with the body's lawful basis. */
    json_t *entries = NULL;
    assert_ok(refex_audit_list_json(agent_store_db(f->a.store), 0, 0, &entries));
    json_t *e = json_array_get(entries, json_array_size(entries) - 1);
    assert_string_equal(json_string_value(json_object_get(e, "event")), "ack");
    assert_string_equal(json_string_value(json_object_get(e, "outcome")), "success");
    assert_string_equal(json_string_value(json_object_get(e, "peer")), "midwifery");
    assert_string_equal(json_string_value(json_object_get(e, "message_id")), ids[0]);
    assert_string_equal(json_string_value(json_object_get(e, "message_type")), "REFERRAL");
    assert_string_equal(json_string_value(json_object_get(e, "article6")), "ARTICLE6_PUBLIC_TASK");
    json_decref(entries);
}

/* Ids are unique per sender only: two senders' messages under one id are acked apart. */
static void test_ack_by_sender(void **state)
{
    agent_fixture *f = *state;
    const char *id = "0123456789abcdef0123456789abcdef";
    char hashhex[65];
    json_t *senders = NULL, *rows = NULL;
    int64_t at = 0, last;
    int dup = -1, already = -1;
    memset(hashhex, 'a', 64);
    hashhex[64] = 0;
    insert(f, "midwifery", id, hashhex, &dup);
    insert(f, "police", id, hashhex, &dup);
    agent_fixture_commit(f);
    assert_ok(agent_store_inbox_senders(f->a.store, id, &senders));
    assert_int_equal(json_array_size(senders), 2);
    assert_string_equal(json_string_value(json_array_get(senders, 0)), "midwifery");
    assert_string_equal(json_string_value(json_array_get(senders, 1)), "police");
    json_decref(senders);
    assert_ok(inbox_ack(&f->a, id, "police", &at, &already));
    agent_fixture_commit(f);
    assert_int_equal(already, 0);
    assert_rc(inbox_ack(&f->a, id, "social-care", &at, &already), REFEX_E_NOTFOUND);
    agent_fixture_commit(f);
    assert_ok(agent_store_inbox_page_json(f->a.store, 0, 0, 1, &rows, &last));
    assert_int_equal(json_array_size(rows), 1); /* midwifery's is still to be taken */
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), "sender")),
                        "midwifery");
    json_decref(rows);
    assert_ok(inbox_ack(&f->a, id, "midwifery", &at, &already));
    agent_fixture_commit(f);
    assert_int_equal(already, 0);
    assert_ok(inbox_ack(&f->a, id, "police", &at, &already));
    agent_fixture_commit(f);
    assert_int_equal(already, 1);
}

static void test_waiters(void **state)
{
    agent_fixture *f = *state;
    char ids[1][33];
    const uint8_t rid[] = "client";
    for (int i = 0; i < MAX_INBOX_WAITERS - 1; i++)
        assert_ok(inbox_wait_hold(&f->a, rid, sizeof rid, 0, 0, 60000));
    assert_ok(inbox_wait_hold(&f->a, rid, sizeof rid, 5, 0, 60000)); /* above what comes */
    assert_rc(inbox_wait_hold(&f->a, rid, sizeof rid, 0, 0, 60000), REFEX_E_BUSY);
    assert_int_equal(inbox_wait_poll_ms(&f->a, 500), 500);
    /* A delivery's commit answers those it satisfies, and no other. */
    deliver_n(f, 1, ids);
    assert_int_equal(f->a.n_inbox_waiters, 1);
    assert_int_equal(f->a.inbox_waiters[0].after, 5);
    assert_false(f->a.inbox_grew);
    /* A waiter whose time is up is answered and let go. */
    assert_ok(inbox_wait_hold(&f->a, rid, sizeof rid, 5, 0, 0));
    assert_int_equal(inbox_wait_poll_ms(&f->a, 500), 0);
    inbox_wait_expire(&f->a);
    assert_int_equal(f->a.n_inbox_waiters, 1);
    /* A delivery that does not commit wakes nobody. */
    f->a.inbox_waiters[0].after = 0;
    uint8_t id[16];
    Refex__V1__Envelope *env = seal(f, "social-care", id);
    f->a.batch_dead = 1;
    inbox_deliver(&f->a, env);
    agent_fixture_commit(f);
    assert_int_equal(f->a.n_inbox_waiters, 1);
    refex__v1__envelope__free_unpacked(env, NULL);
}

/* A database made before cursors: its messages get cursors in the order they came, and a
 * new one the next. */
static void test_cursor_migration(void **state)
{
    agent_fixture *f = *state;
    char path[300], err[256];
    sqlite3 *db = NULL;
    agent_store *s = NULL;
    json_t *rows = NULL;
    int64_t last = 0;
    int dup = 0;
    snprintf(path, sizeof path, "%s/old.db", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "CREATE TABLE inbox (sender TEXT NOT NULL, message_id TEXT NOT NULL,"
                     " type TEXT NOT NULL, case_ref TEXT NOT NULL, created_ms INTEGER NOT NULL,"
                     " received_ms INTEGER NOT NULL, envelope_hash TEXT NOT NULL,"
                     " body BLOB NOT NULL, conversation_id TEXT NOT NULL DEFAULT '',"
                     " reply_to TEXT NOT NULL DEFAULT '', decision TEXT NOT NULL DEFAULT '',"
                     " PRIMARY KEY (sender, message_id));"
                     "INSERT INTO inbox VALUES ('midwifery', 'bb', 'REFERRAL', '', 1, 10, '',"
                     " x'', '', '', '');"
                     "INSERT INTO inbox VALUES ('midwifery', 'aa', 'REFERRAL', '', 1, 20, '',"
                     " x'', '', '', '');",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    if (agent_store_open(path, &s, err, sizeof err) != REFEX_OK)
        fail_msg("agent_store_open: %s", err);
    static const uint8_t body[] = "body";
    refex_body_meta m = {"", "", "", "", "", "", "", "", "", "", "", ""};
    agent_inbox_row r = {"midwifery", "cc", "REFERRAL", "", 1, 30, "", body, sizeof body, &m};
    assert_ok(agent_store_inbox_insert(s, &r, &dup));
    assert_ok(agent_store_inbox_page_json(s, 0, 0, 0, &rows, &last));
    assert_int_equal(json_array_size(rows), 3);
    static const char *const order[] = {"bb", "aa", "cc"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(cursor_at(rows, i), (long long)i + 1);
        assert_string_equal(
            json_string_value(json_object_get(json_array_get(rows, i), "message_id")), order[i]);
    }
    json_decref(rows);
    agent_store_close(&s);
    /* Opened again: the same cursors. */
    if (agent_store_open(path, &s, err, sizeof err) != REFEX_OK)
        fail_msg("agent_store_open: %s", err);
    assert_ok(agent_store_inbox_page_json(s, 2, 0, 0, &rows, &last));
    assert_int_equal(json_array_size(rows), 1);
    assert_int_equal(last, 3);
    json_decref(rows);
    agent_store_close(&s);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_known_delivery_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_known_delivery_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receipt_recorded_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotated_away_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_envelope_version_not_acknowledged, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_deliver_stores_then_redelivery_acks_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_refusal_remembered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_incomplete_body_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_ack_without_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forgery_does_not_shadow_genuine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock_skew_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forgery_after_genuine_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remembered_refusal_names_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receipt_for_another_envelope_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_audited_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_by_sender, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_migration, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
