/* A broker that went bad cannot get a genuine message refused for good (issue 11, item 1).
 * The test plays the broker itself (harness_raw.h: a raw ROUTER holding the broker's keys
 * from the test tree), which the real midwifery and social-care agents connect to. It takes
 * midwifery's genuine referral from SEND, delivers a forgery under the same sender and id
 * (another header under the genuine batch proof) to social care first, then the genuine envelope,
 * then each again: the forgery is held each time (no ACK, a warning naming E_BAD_SIGNATURE), and
 * never answered from, nor written to, the memory of what was handled; the genuine envelope is
 * accepted (code 0, a receipt that verifies with social care's key and names the genuine
 * envelope hash), stored once, and answered the same way again. Handed both a refusal of
 * the forgery signed by social care (as a recipient that answered forgeries would have sent
 * it) and the genuine receipt, the forgery's first, midwifery ignores the forgery's (it
 * names an envelope midwifery did not send) and records the delivery. Both agents keep
 * running. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/testing.h"
#include "codec.h"
#include "directory.h"
#include "envelope.h"
#include "harness.h"
#include "harness_raw.h"
#include "receipt.h"
#include "util.h"

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "social-care", NULL};

static h_fake_broker g_fb;

/* ---- the test ------------------------------------------------------------------------- */

static refex_directory *g_dir;

static int setup(void **state)
{
    (void)state;
    return h_net_init(&g_net, AGENCIES, NULL, NULL);
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    h_fb_close(&g_fb);
    refex_directory_destroy(&g_dir);
    return 0;
}

static void load_directory(void)
{
    char path[600], err[256];
    refex_pubkeys anchor;
    h_path(&g_net, path, sizeof path, "keys/operator.public");
    assert_ok(refex_pubkeys_load(path, &anchor, err, sizeof err));
    h_path(&g_net, path, sizeof path, "directory.rdir");
    assert_ok(refex_directory_load(path, anchor.sign_pk, &g_dir, err, sizeof err));
}

/* Delivers env to social care without waiting for an answer. */
static void deliver(Refex__V1__Envelope *env)
{
    h_fb_deliver(&g_fb, "social-care", env);
}

/* Social care's next ACK: checks it (code, and a receipt by social care for this id naming
 * hash) and returns the receipt (the ACK's, detached). Being the next, it says that nothing
 * delivered before was acknowledged first. */
static Refex__V1__SignedReceipt *expect_ack(const uint8_t id[16], int code, const uint8_t hash[32])
{
    refex_receipt r;
    Refex__V1__Frame *f = h_fb_expect(&g_fb, "social-care", REFEX__V1__FRAME__KIND_ACK);
    assert_int_equal(f->ack->code, (uint32_t)code);
    assert_string_equal(f->ack->sender, "midwifery");
    assert_int_equal(f->ack->message_id.len, 16);
    assert_memory_equal(f->ack->message_id.data, id, 16);
    assert_non_null(f->ack->receipt);
    assert_ok(refex_receipt_verify(f->ack->receipt, g_dir, &r));
    assert_string_equal(r.signer, "social-care");
    assert_string_equal(r.recipient, "social-care");
    assert_string_equal(r.sender, "midwifery");
    assert_int_equal(r.code, (uint32_t)code);
    assert_memory_equal(r.message_id, id, 16);
    assert_true(r.has_envelope_hash);
    assert_memory_equal(r.envelope_hash, hash, 32);
    Refex__V1__SignedReceipt *sr = f->ack->receipt;
    f->ack->receipt = NULL;
    refex_frame_free(&f);
    return sr;
}

/* A refusal (E_BAD_SIGNATURE) of the envelope hashed `hash`, signed with social care's key
 * from the test tree: what a recipient that answered forgeries would have sent. */
static Refex__V1__SignedReceipt *forged_refusal(const uint8_t id[16], const uint8_t hash[32])
{
    char path[600], err[256];
    refex_keys *k = NULL;
    refex_receipt r;
    uint8_t *blob = NULL;
    size_t len = 0;
    h_path(&g_net, path, sizeof path, "keys/social-care.secret");
    assert_ok(refex_keys_load(path, &k, err, sizeof err));
    memset(&r, 0, sizeof r);
    memcpy(r.message_id, id, 16);
    snprintf(r.sender, sizeof r.sender, "midwifery");
    snprintf(r.recipient, sizeof r.recipient, "social-care");
    snprintf(r.signer, sizeof r.signer, "social-care");
    r.code = REFEX_E_BAD_SIGNATURE;
    r.time_ms = refex_now_ms();
    memcpy(r.envelope_hash, hash, 32);
    r.has_envelope_hash = 1;
    assert_ok(refex_receipt_sign(&r, k->sk->sign_sk, &blob, &len));
    refex_keys_destroy(&k);
    Refex__V1__SignedReceipt *sr = refex__v1__signed_receipt__unpack(NULL, len, blob);
    free(blob);
    assert_non_null(sr);
    return sr;
}

/* A single-value query on an agency's agent.db. */
static long long agent_sql(const char *agency, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static long long agent_sql(const char *agency, const char *fmt, ...)
{
    char sql[512], db[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    snprintf(db, sizeof db, "data/%s/agent.db", agency);
    return h_sql_int(&g_net, db, sql);
}

#define INBOX_ONE "SELECT count(*) FROM inbox WHERE sender = 'midwifery' AND message_id = '%s'"

static void hand_receipt(Refex__V1__SignedReceipt *sr)
{
    Refex__V1__ReceiptDeliver rd = REFEX__V1__RECEIPT_DELIVER__INIT;
    rd.receipt = sr;
    h_fb_send(&g_fb, "midwifery", REFEX__V1__FRAME__KIND_RECEIPT, &rd.base);
}

static void test_forgery_first_then_genuine(void **state)
{
    (void)state;
    char idhex[33], path[600];
    uint8_t id[16], good_hash[32], bad_hash[32];
    h_fb_open(&g_fb, &g_net);
    load_directory();
    h_fb_start_agent(&g_fb, &g_net, "midwifery");
    h_fb_start_agent(&g_fb, &g_net, "social-care");
    assert_int_equal(h_send_json(&g_net, "midwifery", "social-care", "referral",
                                 h_required("referral", json_object()), idhex),
                     0);
    assert_ok(refex_hex_decode(id, 16, idhex));
    Refex__V1__Frame *sf = h_fb_expect(&g_fb, "midwifery", REFEX__V1__FRAME__KIND_SEND);
    Refex__V1__Envelope *genuine = sf->send->envelope;
    h_fb_stored(&g_fb, "midwifery", id, 1);

    /* The forgery: the genuine envelope with another header (same id and sender, expiring a
     * millisecond later) under the genuine batch proof, which does not sign it. */
    uint8_t *packed = NULL;
    size_t packed_len = 0;
    assert_ok(refex_pb_pack(&genuine->base, &packed, &packed_len));
    Refex__V1__Envelope *forged = refex__v1__envelope__unpack(NULL, packed_len, packed);
    free(packed);
    assert_non_null(forged);
    assert_non_null(forged->batch);
    Refex__V1__EnvelopeHeader *fh = NULL;
    assert_ok(refex_envelope_parse_header(forged, &fh));
    fh->expires_at_ms += 1;
    free(forged->header.data);
    assert_ok(refex_pb_pack(&fh->base, &forged->header.data, &forged->header.len));
    refex__v1__envelope_header__free_unpacked(fh, NULL);
    assert_ok(refex_envelope_hash(genuine, good_hash));
    assert_ok(refex_envelope_hash(forged, bad_hash));
    assert_memory_not_equal(good_hash, bad_hash, 32);

    /* The forgery is held: the first ACK after it is the genuine envelope's. */
    deliver(forged);
    deliver(genuine);
    Refex__V1__SignedReceipt *good = expect_ack(id, REFEX_OK, good_hash);
    assert_int_equal(agent_sql("social-care", "SELECT count(*) FROM refused"), 0);
    assert_int_equal(agent_sql("social-care", INBOX_ONE, idhex), 1);
    /* Each again: the forgery is still held, not answered with the genuine receipt from
     * memory; the genuine envelope is answered from memory, the same way. */
    deliver(forged);
    deliver(genuine);
    Refex__V1__SignedReceipt *again = expect_ack(id, REFEX_OK, good_hash);
    refex__v1__signed_receipt__free_unpacked(again, NULL);
    assert_int_equal(agent_sql("social-care", INBOX_ONE, idhex), 1);
    assert_int_equal(agent_sql("social-care", "SELECT count(*) FROM inbox"), 1);
    assert_int_equal(agent_sql("social-care", "SELECT count(*) FROM refused"), 0);

    /* Midwifery is handed the forgery's refusal first, then the genuine receipt: the only
     * RECEIPT_ACK is for the genuine one, and the receipt it holds says delivered. */
    Refex__V1__SignedReceipt *bad = forged_refusal(id, bad_hash);
    hand_receipt(bad);
    hand_receipt(good);
    Refex__V1__Frame *ra = h_fb_expect(&g_fb, "midwifery", REFEX__V1__FRAME__KIND_RECEIPT_ACK);
    assert_memory_equal(ra->receipt_ack->message_id.data, id, 16);
    assert_string_equal(ra->receipt_ack->recipient, "social-care");
    refex_frame_free(&ra);
    assert_int_equal(agent_sql("midwifery",
                               "SELECT code FROM receipts WHERE message_id = '%s'"
                               " AND recipient = 'social-care'",
                               idhex),
                     0);
    assert_int_equal(agent_sql("midwifery", "SELECT count(*) FROM receipts"), 1);
    h_path(&g_net, path, sizeof path, "logs/midwifery.log");
    const char *warned = "names an envelope we did not send; ignored";
    assert_true(h_tree_contains(path, warned, strlen(warned)));
    h_path(&g_net, path, sizeof path, "logs/social-care.log");
    const char *refused = "held, not acknowledged: E_BAD_SIGNATURE";
    assert_true(h_tree_contains(path, refused, strlen(refused)));

    for (int i = 0; i < g_net.n_agents; i++)
        assert_true(h_alive(&g_net.agents[i]));
    refex__v1__signed_receipt__free_unpacked(bad, NULL);
    refex__v1__signed_receipt__free_unpacked(good, NULL);
    refex__v1__envelope__free_unpacked(forged, NULL);
    refex_frame_free(&sf);
}

/* A broker that rewrites the envelope's unsigned checkpoint in transit: the envelope hash
 * leaves the checkpoint out, so social care's receipt still names the envelope midwifery
 * sent, and midwifery records the delivery. */
static void test_altered_checkpoint_keeps_the_receipt(void **state)
{
    (void)state;
    char idhex[33];
    uint8_t id[16], sent_hash[32];
    h_fb_open(&g_fb, &g_net);
    load_directory();
    h_fb_start_agent(&g_fb, &g_net, "midwifery");
    h_fb_start_agent(&g_fb, &g_net, "social-care");
    assert_int_equal(h_send_json(&g_net, "midwifery", "social-care", "referral",
                                 h_required("referral", json_object()), idhex),
                     0);
    assert_ok(refex_hex_decode(id, 16, idhex));
    Refex__V1__Frame *sf = h_fb_expect(&g_fb, "midwifery", REFEX__V1__FRAME__KIND_SEND);
    Refex__V1__Envelope *env = sf->send->envelope;
    h_fb_stored(&g_fb, "midwifery", id, 1);
    assert_ok(refex_envelope_hash(env, sent_hash));
    char *kept = env->checkpoint;
    env->checkpoint = (char *)"refex/audit/midwifery\n1\nAAAA\n\n";
    deliver(env);
    env->checkpoint = kept; /* freed with the frame */
    Refex__V1__SignedReceipt *r = expect_ack(id, REFEX_OK, sent_hash);
    hand_receipt(r);
    Refex__V1__Frame *ra = h_fb_expect(&g_fb, "midwifery", REFEX__V1__FRAME__KIND_RECEIPT_ACK);
    refex_frame_free(&ra);
    assert_int_equal(agent_sql("midwifery",
                               "SELECT code FROM receipts WHERE message_id = '%s'"
                               " AND recipient = 'social-care'",
                               idhex),
                     0);
    assert_int_equal(agent_sql("social-care", INBOX_ONE, idhex), 1);
    refex__v1__signed_receipt__free_unpacked(r, NULL);
    refex_frame_free(&sf);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_forgery_first_then_genuine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_altered_checkpoint_keeps_the_receipt, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
