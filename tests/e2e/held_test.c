/* A refusal that may only reflect the receiver's own, possibly stale, state is held, not
 * final (issue 11, item 1): no ACK, nothing remembered, no audit entry, a warning; the
 * broker delivers the message again, and once the receiver's state has caught up it is
 * accepted. The test plays the broker (harness_raw.h) for real agents:
 * 1. social care leads case C-HELD-1 and grants midwifery and substance misuse; midwifery
 *    learns both grants, substance misuse only its own (the grant notice for midwifery is
 *    late: there is no order across senders, even with an honest broker). Midwifery's case
 *    update reaches substance misuse first: held (E_NOT_MEMBER). Social care's update,
 *    delivered after it, is accepted, and its ACK is the first. Once the late grant notice
 *    has arrived, the same envelope delivered again is accepted, stored and receipted.
 * 2. an envelope from 10 minutes in the future (signed with midwifery's real key) and one
 *    from a sender social care's directory lacks are held; the agent keeps running and
 *    answers `refex status`, and a genuine referral delivered after them is accepted, its
 *    ACK the first. */
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
#include "body.h"
#include "codec.h"
#include "directory.h"
#include "envelope.h"
#include "harness.h"
#include "harness_raw.h"
#include "receipt.h"
#include "util.h"

static h_net g_net;
static h_fake_broker g_fb;
static refex_directory *g_dir;
static const char *const AGENCIES[] = {"midwifery", "substance-misuse", "social-care", NULL};

#define CASE "C-HELD-1"
#define PUBLISH_BASIS                                                                              \
    "--article6", "public-task", "--article9", "substantial-public-interest", "--purpose",         \
        "case-management", "--practitioner", "SW-0007"

static void load_directory(void)
{
    char path[600], err[256];
    refex_pubkeys anchor;
    h_path(&g_net, path, sizeof path, "keys/operator.public");
    assert_ok(refex_pubkeys_load(path, &anchor, err, sizeof err));
    h_path(&g_net, path, sizeof path, "directory.rdir");
    assert_ok(refex_directory_load(path, anchor.sign_pk, &g_dir, err, sizeof err));
}

static int setup(void **state)
{
    (void)state;
    if (h_net_init(&g_net, AGENCIES, NULL, NULL) != 0)
        return -1;
    h_fb_open(&g_fb, &g_net);
    load_directory();
    for (int i = 0; AGENCIES[i]; i++)
        h_fb_start_agent(&g_fb, &g_net, AGENCIES[i]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    h_fb_close(&g_fb);
    refex_directory_destroy(&g_dir);
    return 0;
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

/* Polls agent_sql until it gives want (what the agent has taken in is observable only so). */
static void wait_sql(const char *agency, const char *sql, long long want)
{
    char db[128];
    snprintf(db, sizeof db, "data/%s/agent.db", agency);
    assert_int_equal(h_sql_wait(&g_net, db, sql, want, H_TIMEOUT_MS), want);
}

static void cli_ok(const char *agency, const char *const *args)
{
    char out[4096];
    int rc = h_cli_agent(&g_net, agency, out, sizeof out, args);
    if (rc != 0)
        fail_msg("refex %s %s: %d: %s", args[0], args[1] ? args[1] : "", rc, out);
}

/* The message id of an envelope, from its signed header. */
static void envelope_id(const Refex__V1__Envelope *env, uint8_t id[16])
{
    Refex__V1__EnvelopeHeader *h = NULL;
    assert_ok(refex_envelope_parse_header(env, &h));
    memcpy(id, h->message_id.data, 16);
    refex__v1__envelope_header__free_unpacked(h, NULL);
}

/* The next SEND from `from`, answered STORED; the frame (its envelope) and its id. */
static Refex__V1__Frame *take_send(const char *from, uint8_t id[16], uint64_t seq)
{
    Refex__V1__Frame *f = h_fb_expect(&g_fb, from, REFEX__V1__FRAME__KIND_SEND);
    envelope_id(f->send->envelope, id);
    h_fb_stored(&g_fb, from, id, seq);
    return f;
}

/* `to`'s next ACK: for id from `sender` with code 0, a receipt by `to` naming hash. */
static void expect_accepted(const char *to, const char *sender, const uint8_t id[16],
                            const uint8_t hash[32])
{
    refex_receipt r;
    Refex__V1__Frame *f = h_fb_expect(&g_fb, to, REFEX__V1__FRAME__KIND_ACK);
    assert_int_equal(f->ack->message_id.len, 16);
    assert_memory_equal(f->ack->message_id.data, id, 16); /* not a held one's */
    assert_int_equal(f->ack->code, 0);
    assert_string_equal(f->ack->sender, sender);
    assert_non_null(f->ack->receipt);
    assert_ok(refex_receipt_verify(f->ack->receipt, g_dir, &r));
    assert_string_equal(r.signer, to);
    assert_int_equal(r.code, 0);
    assert_true(r.has_envelope_hash);
    assert_memory_equal(r.envelope_hash, hash, 32);
    refex_frame_free(&f);
}

/* The lead's next GRANT (a grant the test then hands out as GRANT_NOTICE at will). */
static Refex__V1__Frame *take_grant(const char *const *args)
{
    cli_ok("social-care", args);
    return h_fb_expect(&g_fb, "social-care", REFEX__V1__FRAME__KIND_GRANT);
}

static void grant_notice(const char *to, const Refex__V1__Frame *grant)
{
    Refex__V1__GrantNotice gn = REFEX__V1__GRANT_NOTICE__INIT;
    gn.grant = grant->grant->grant;
    h_fb_send(&g_fb, to, REFEX__V1__FRAME__KIND_GRANT_NOTICE, &gn.base);
}

#define GRANTS "SELECT count(*) FROM case_grants WHERE case_ref = '" CASE "'"

/* Test 1's case: led by social care; midwifery knows every grant, substance misuse only
 * the lead's own and its own; every party knows substance misuse's subscription. The
 * grant of midwifery, withheld from substance misuse, into *late. */
static void case_with_late_grant(Refex__V1__Frame **late)
{
    Refex__V1__Frame *open = take_grant((const char *[]){"case", "open", "--case", CASE, NULL});
    *late = take_grant(
        (const char *[]){"case", "grant", "--case", CASE, "--member", "midwifery", NULL});
    Refex__V1__Frame *sm = take_grant(
        (const char *[]){"case", "grant", "--case", CASE, "--member", "substance-misuse", NULL});
    grant_notice("midwifery", open);
    grant_notice("midwifery", *late);
    grant_notice("midwifery", sm);
    grant_notice("substance-misuse", open);
    grant_notice("substance-misuse", sm);
    wait_sql("midwifery", GRANTS, 3);
    wait_sql("substance-misuse", GRANTS, 2);
    cli_ok("substance-misuse", (const char *[]){"case", "subscribe", "--case", CASE, NULL});
    Refex__V1__Frame *sub =
        h_fb_expect(&g_fb, "substance-misuse", REFEX__V1__FRAME__KIND_SUBSCRIBE);
    Refex__V1__SubscriptionNotice sn = REFEX__V1__SUBSCRIPTION_NOTICE__INIT;
    sn.subscription = sub->subscribe->subscription;
    h_fb_send(&g_fb, "midwifery", REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE, &sn.base);
    h_fb_send(&g_fb, "social-care", REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE, &sn.base);
    wait_sql("midwifery", "SELECT count(*) FROM case_subscriptions", 1);
    wait_sql("social-care", "SELECT count(*) FROM case_subscriptions", 1);
    refex_frame_free(&sub);
    refex_frame_free(&sm);
    refex_frame_free(&open);
}

static void test_case_update_before_grant_notice(void **state)
{
    (void)state;
    Refex__V1__Frame *late = NULL;
    uint8_t uid[16], vid[16], uhash[32], vhash[32];
    char uhex[33], path[600];
    case_with_late_grant(&late);

    /* Midwifery's update, to the lead and substance misuse; then social care's. */
    cli_ok("midwifery", (const char *[]){"case", "publish", "--case", CASE, "--type", "other",
                                         "--summary", "midwifery visit", PUBLISH_BASIS, NULL});
    Refex__V1__Frame *u = take_send("midwifery", uid, 1);
    cli_ok("social-care", (const char *[]){"case", "publish", "--case", CASE, "--type", "other",
                                           "--summary", "strategy meeting", PUBLISH_BASIS, NULL});
    Refex__V1__Frame *v = take_send("social-care", vid, 1);
    assert_ok(refex_envelope_hash(u->send->envelope, uhash));
    assert_ok(refex_envelope_hash(v->send->envelope, vhash));
    refex_hex_encode(uhex, uid, 16);

    /* Midwifery's first, before its grant reached substance misuse: held. Social care's,
     * after it, is accepted, and its ACK is the first. */
    h_fb_deliver(&g_fb, "substance-misuse", u->send->envelope);
    h_fb_deliver(&g_fb, "substance-misuse", v->send->envelope);
    expect_accepted("substance-misuse", "social-care", vid, vhash);
    assert_int_equal(agent_sql("substance-misuse", "SELECT count(*) FROM refused"), 0);
    assert_int_equal(
        agent_sql("substance-misuse", "SELECT count(*) FROM inbox WHERE message_id = '%s'", uhex),
        0);
    assert_int_equal(
        agent_sql("substance-misuse", "SELECT count(*) FROM audit WHERE message_id = '%s'", uhex),
        0);
    h_path(&g_net, path, sizeof path, "logs/substance-misuse.log");
    char held[128];
    snprintf(held, sizeof held, "deliver: %s from midwifery held, not acknowledged: E_NOT_MEMBER",
             uhex);
    assert_true(h_tree_contains(path, held, strlen(held)));

    /* The late grant notice arrives; the broker delivers the update again: accepted. */
    grant_notice("substance-misuse", late);
    wait_sql("substance-misuse", GRANTS, 3);
    h_fb_deliver(&g_fb, "substance-misuse", u->send->envelope);
    expect_accepted("substance-misuse", "midwifery", uid, uhash);
    assert_int_equal(agent_sql("substance-misuse",
                               "SELECT count(*) FROM inbox WHERE message_id = '%s'"
                               " AND sender = 'midwifery'",
                               uhex),
                     1);
    assert_int_equal(agent_sql("substance-misuse",
                               "SELECT count(*) FROM audit WHERE message_id = '%s'"
                               " AND event = 'receive' AND outcome = 'success'",
                               uhex),
                     1);
    assert_int_equal(agent_sql("substance-misuse", "SELECT count(*) FROM refused"), 0);
    for (int i = 0; i < g_net.n_agents; i++)
        assert_true(h_alive(&g_net.agents[i]));
    refex_frame_free(&v);
    refex_frame_free(&u);
    refex_frame_free(&late);
}

/* A referral for social care sealed by `sender` with sign_sk, created at created_at_ms. */
static Refex__V1__Envelope *seal_referral(const char *sender, const uint8_t *sign_sk,
                                          int64_t created_at_ms, uint8_t id[16])
{
    uint8_t *body = NULL, *env = NULL;
    size_t body_len = 0, env_len = 0;
    char err[256];
    json_t *j = h_required("referral", json_object());
    assert_ok(refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, j, &body, &body_len, err,
                                   sizeof err));
    json_decref(j);
    const refex_agency *rcpt[1] = {refex_directory_find(g_dir, "social-care")};
    refex_seal_params p = {.sender = sender,
                           .sign_sk = sign_sk,
                           .recipients = rcpt,
                           .n_recipients = 1,
                           .type = REFEX__V1__MESSAGE_TYPE__REFERRAL,
                           .created_at_ms = created_at_ms};
    assert_ok(refex_envelope_seal(&p, body, body_len, &env, &env_len, id));
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, env_len, env);
    assert_non_null(e);
    free(body);
    free(env);
    return e;
}

static void test_future_and_unknown_sender_held(void **state)
{
    (void)state;
    char path[600], err[256], out[4096], fhex[33], nhex[33], gidhex[33];
    uint8_t fid[16], nid[16], gid[16], ghash[32];
    refex_keys *mw = NULL, *stranger = NULL;
    h_path(&g_net, path, sizeof path, "keys/midwifery.secret");
    assert_ok(refex_keys_load(path, &mw, err, sizeof err));
    assert_ok(refex_keys_new("probation", "probation", &stranger)); /* in no directory */
    Refex__V1__Envelope *future =
        seal_referral("midwifery", mw->sk->sign_sk, refex_now_ms() + 10 * 60 * 1000, fid);
    Refex__V1__Envelope *unknown =
        seal_referral("probation", stranger->sk->sign_sk, refex_now_ms(), nid);
    refex_hex_encode(fhex, fid, 16);
    refex_hex_encode(nhex, nid, 16);

    h_fb_deliver(&g_fb, "social-care", future);
    h_fb_deliver(&g_fb, "social-care", unknown);
    /* Still running, and answering. */
    assert_int_equal(
        h_cli_agent(&g_net, "social-care", out, sizeof out, (const char *[]){"status", NULL}), 0);
    /* A genuine referral from midwifery after them: its ACK is the first. */
    assert_int_equal(h_send_json(&g_net, "midwifery", "social-care", "referral",
                                 h_required("referral", json_object()), gidhex),
                     0);
    Refex__V1__Frame *g = take_send("midwifery", gid, 1);
    assert_ok(refex_envelope_hash(g->send->envelope, ghash));
    h_fb_deliver(&g_fb, "social-care", g->send->envelope);
    expect_accepted("social-care", "midwifery", gid, ghash);

    assert_int_equal(agent_sql("social-care", "SELECT count(*) FROM refused"), 0);
    assert_int_equal(agent_sql("social-care", "SELECT count(*) FROM inbox"), 1);
    assert_int_equal(agent_sql("social-care",
                               "SELECT count(*) FROM audit WHERE message_id IN ('%s', '%s')", fhex,
                               nhex),
                     0);
    h_path(&g_net, path, sizeof path, "logs/social-care.log");
    char held[128];
    snprintf(held, sizeof held, "deliver: %s from midwifery held, not acknowledged: E_CLOCK_SKEW",
             fhex);
    assert_true(h_tree_contains(path, held, strlen(held)));
    snprintf(held, sizeof held,
             "deliver: %s from probation held, not acknowledged: E_UNKNOWN_AGENCY", nhex);
    assert_true(h_tree_contains(path, held, strlen(held)));
    for (int i = 0; i < g_net.n_agents; i++)
        assert_true(h_alive(&g_net.agents[i]));
    refex_frame_free(&g);
    refex__v1__envelope__free_unpacked(unknown, NULL);
    refex__v1__envelope__free_unpacked(future, NULL);
    refex_keys_destroy(&stranger);
    refex_keys_destroy(&mw);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_case_update_before_grant_notice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_future_and_unknown_sender_held, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
