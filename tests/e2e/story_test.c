/* The pre-birth story, end to end with real processes (broker and four agents):
 * 1. midwifery refers an unborn baby at 12 weeks; social care's receipt acknowledges it, and
 *    social care accepts, opens case C-STORY-1 and grants midwifery and substance misuse,
 *    which subscribe;
 * 2. social care asks substance misuse about the mother's treatment and gets the answer;
 * 3-4. social care publishes four updates; every member sees each exactly once and in order,
 *    including midwifery, offline for two of them;
 * 5. police, in the directory but never granted, receives nothing, and its subscribe and
 *    publish attempts are refused (by its agent, audited, and by the broker for a raw client);
 * 6. after substance misuse is revoked, later updates do not reach it;
 * 7. every step is in the audit logs of the agents involved, with its lawful basis.
 * Then: a member's signed subscription decides which update types reach it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <sodium.h>
#include <string.h>

#include "../unit/testing.h"
#include "harness.h"
#include "body.h"
#include "codec.h"
#include "directory.h"
#include "envelope.h"
#include "grant.h"
#include "util.h"

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "substance-misuse", "social-care", "police",
                                       NULL};
static const char *const LISTED[] = {"probation", NULL};

static int setup(void **state)
{
    (void)state;
    return h_net_up(&g_net, AGENCIES, LISTED, NULL);
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

static long long count(const char *agency, const char *sql)
{
    char db[128];
    snprintf(db, sizeof db, "data/%s/agent.db", agency);
    return h_sql_int(&g_net, db, sql);
}

static void wait_count(const char *agency, const char *sql, long long want)
{
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (count(agency, sql) != want && refex_mono_ms() < deadline)
        h_pause();
    assert_int_equal(count(agency, sql), want);
}

static int cli(const char *agency, char *out, size_t len, const char *const *args)
{
    return h_cli_agent(&g_net, agency, out, len, args);
}

/* What every case update must state (docs/protocol.md section 10). */
#define PUBLISH_BASIS                                                                              \
    "--article6", "public-task", "--article9", "substantial-public-interest", "--purpose",         \
        "case-management", "--practitioner", "SW-0007"

static void publish(const char *agency, const char *type, const char *summary)
{
    char out[4096];
    const char *args[] = {"case", "publish",   "--case", "C-STORY-1",   "--type",
                          type,   "--summary", summary,  PUBLISH_BASIS, NULL};
    int rc = cli(agency, out, sizeof out, args);
    if (rc != 0)
        fail_msg("publish by %s exited %d: %s", agency, rc, out);
}

#define UPDATES "SELECT count(*) FROM inbox WHERE type = 'CASE_UPDATE'"

/* Sends type/body from one agency to another; the message id. */
static void send_json(const char *from, const char *to, const char *type, json_t *body, char id[33])
{
    assert_int_equal(h_send_json(&g_net, from, to, type, body, id), 0);
}

static json_t *lawful(const char *article9)
{
    return json_pack("{s:s, s:s}", "article6", "ARTICLE6_PUBLIC_TASK", "article9", article9);
}

/* The rest of what every body must carry: who sends it (under `member`) and the purpose. */
static json_t *stated(json_t *body, const char *member, const char *practitioner)
{
    json_object_set_new(body, member, json_pack("{s:s}", "reference", practitioner));
    json_object_set_new(body, "purpose", json_string("PURPOSE_SAFEGUARDING"));
    return body;
}

/* The first field of the first row of a CLI command's JSON output. */
static void assert_first_row(const char *agency, const char *const *args, const char *field,
                             const char *want)
{
    char out[65536];
    json_error_t jerr;
    assert_int_equal(cli(agency, out, sizeof out, args), 0);
    json_t *rows = json_loads(out, 0, &jerr);
    assert_non_null(rows);
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), field)), want);
    json_decref(rows);
}

/* 1. Midwifery refers at 12 weeks; social care's agent acknowledges on receipt (a signed
 * receipt), and social care accepts, opening case C-STORY-1. */
static void test_referral_acknowledged_and_accepted(void **state)
{
    (void)state;
    char ref[33], dec[33], sql[256];
    send_json("midwifery", "social-care", "referral",
              stated(json_pack("{s:s, s:{s:s, s:s, s:i}, s:s, s:s, s:o, s:s, s:s}", "kind",
                               "REFERRAL_PRE_BIRTH", "subject", "kind", "SUBJECT_UNBORN",
                               "reference", "UB-STORY-0001", "gestation_weeks", 12, "summary",
                               "synthetic: mother's two older children were removed into care",
                               "conversation_id", "conv-story-1", "lawful_basis",
                               lawful("ARTICLE9_HEALTH_SOCIAL_CARE"), "consent",
                               "CONSENT_NOT_SOUGHT_SAFEGUARDING", "urgency", "URGENCY_URGENT"),
                     "referrer", "MW-0099"),
              ref);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM receipts WHERE message_id = '%s'", ref);
    wait_count("midwifery", sql, 1);
    send_json(
        "social-care", "midwifery", "referral-decision",
        stated(json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "referral_message_id", ref, "decision",
                         "DECISION_ACCEPTED", "case_ref", "C-STORY-1", "conversation_id",
                         "conv-story-1", "reason", "pre-birth assessment to start", "lawful_basis",
                         lawful("ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST")),
               "decided_by", "SW-0007"),
        dec);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM inbox WHERE message_id = '%s'", dec);
    wait_count("midwifery", sql, 1);
    const char *referrals[] = {"referrals", "--json", NULL};
    assert_first_row("midwifery", referrals, "status", "accepted");
    assert_first_row("midwifery", referrals, "case_ref_assigned", "C-STORY-1");
}

/* 2. Social care asks substance misuse about the mother's engagement with treatment. */
static void test_information_request_answered(void **state)
{
    (void)state;
    char req[33], resp[33], sql[256];
    send_json("social-care", "substance-misuse", "information-request",
              stated(json_pack("{s:s, s:s, s:s, s:s, s:o}", "request_id", "RQ-STORY-1", "case_ref",
                               "C-STORY-1", "question", "Is the mother engaged with treatment?",
                               "due_date", "2099-01-01", "lawful_basis",
                               lawful("ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST")),
                     "requested_by", "SW-0007"),
              req);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM inbox WHERE message_id = '%s'", req);
    wait_count("substance-misuse", sql, 1);
    send_json("substance-misuse", "social-care", "information-response",
              stated(json_pack("{s:s, s:s, s:o, s:s}", "request_id", "RQ-STORY-1", "answer",
                               "synthetic: engaged since week 14, attends weekly", "lawful_basis",
                               lawful("ARTICLE9_HEALTH_SOCIAL_CARE"), "consent", "CONSENT_GIVEN"),
                     "responded_by", "SM-0031"),
              resp);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM inbox WHERE message_id = '%s'", resp);
    wait_count("social-care", sql, 1);
    const char *requests[] = {"requests", "--json", NULL};
    assert_first_row("social-care", requests, "status", "answered");
    assert_first_row("social-care", requests, "response_message_id", resp);
}

static void test_grants_reach_members(void **state)
{
    (void)state;
    char out[4096];
    const char *open[] = {"case", "open", "--case", "C-STORY-1", NULL};
    const char *g1[] = {"case", "grant", "--case", "C-STORY-1", "--member", "midwifery", NULL};
    assert_int_equal(cli("social-care", out, sizeof out, open), 0);
    const char *g2[] = {"case", "grant", "--case", "C-STORY-1", "--member", "substance-misuse",
                        NULL};
    assert_int_equal(cli("social-care", out, sizeof out, g1), 0);
    assert_int_equal(cli("social-care", out, sizeof out, g2), 0);
    /* Each member learns the whole membership from the lead's signed grants. */
    wait_count("midwifery", "SELECT count(*) FROM case_grants WHERE case_ref = 'C-STORY-1'", 3);
    wait_count("substance-misuse", "SELECT count(*) FROM case_grants WHERE case_ref = 'C-STORY-1'",
               3);
    /* Granted but not yet subscribed: there is no one to publish to. */
    const char *pub[] = {"case",  "publish",   "--case",    "C-STORY-1",   "--type",
                         "other", "--summary", "too early", PUBLISH_BASIS, NULL};
    assert_int_equal(cli("social-care", out, sizeof out, pub), 1);
    assert_non_null(strstr(out, "subscribed"));
    /* Midwifery subscribes to this case, substance misuse to all its cases; every party
     * learns both signed subscriptions. */
    const char *s1[] = {"case", "subscribe", "--case", "C-STORY-1", NULL};
    const char *s2[] = {"case", "subscribe", "--all", NULL};
    assert_int_equal(cli("midwifery", out, sizeof out, s1), 0);
    assert_int_equal(cli("substance-misuse", out, sizeof out, s2), 0);
    for (int i = 0; i < 3; i++)
        wait_count(AGENCIES[i], "SELECT count(*) FROM case_subscriptions", 2);
    const char *members[] = {"case", "show", "--case", "C-STORY-1", NULL};
    assert_int_equal(cli("social-care", out, sizeof out, members), 0);
    assert_non_null(strstr(out, "SUBSCRIBED"));
    /* Only the lead may grant. */
    const char *bad[] = {"case", "grant", "--case", "C-STORY-1", "--member", "police", NULL};
    assert_int_equal(cli("midwifery", out, sizeof out, bad), 1);
    assert_non_null(strstr(out, "E_NOT_MEMBER"));
}

static void test_updates_reach_every_member_once_in_order(void **state)
{
    (void)state;
    publish("social-care", "assessment-concluded", "pre-birth assessment concluded at 28 weeks");
    wait_count("midwifery", UPDATES, 1);
    wait_count("substance-misuse", UPDATES, 1);

    /* Midwifery is offline for the next two updates. */
    int mw = h_agent_index(&g_net, "midwifery");
    h_stop(&g_net.agents[mw]);
    publish("social-care", "child-protection-plan", "child protection plan at 32 weeks");
    publish("social-care", "birth", "baby born; mother and baby on the ward");
    wait_count("substance-misuse", UPDATES, 3);
    assert_int_equal(h_net_start_agent(&g_net, "midwifery"), 0);
    wait_count("midwifery", UPDATES, 3);
    /* Exactly once each, and in the order published. */
    assert_int_equal(count("midwifery", "SELECT count(DISTINCT message_id) FROM inbox WHERE type = "
                                        "'CASE_UPDATE'"),
                     3);
    char out[65536];
    const char *list[] = {"inbox", "list", "--json", NULL};
    assert_int_equal(cli("midwifery", out, sizeof out, list), 0);
    const char *a = strstr(out, "assessment concluded"), *b = strstr(out, "protection plan"),
               *c = strstr(out, "baby born");
    assert_true(a && b && c && a < b && b < c);
    const char *show[] = {"case", "show", "--case", "C-STORY-1", NULL};
    assert_int_equal(cli("midwifery", out, sizeof out, show), 0);
    a = strstr(out, "ASSESSMENT_CONCLUDED");
    b = strstr(out, "CHILD_PROTECTION_PLAN");
    c = strstr(out, "BIRTH");
    assert_true(a && b && c && a < b && b < c);
    /* Members publish too: midwifery's update reaches the lead and substance misuse. */
    publish("midwifery", "other", "midwifery visit: mother attending appointments");
    wait_count("social-care", UPDATES, 1);
    wait_count("substance-misuse", UPDATES, 4);
}

static void test_non_member_can_neither_publish_nor_receive(void **state)
{
    (void)state;
    char out[4096];
    const char *args[] = {"case",        "publish", "--case",    "C-STORY-1",
                          "--type",      "other",   "--summary", "not mine to share",
                          PUBLISH_BASIS, NULL};
    assert_int_equal(cli("police", out, sizeof out, args), 1);
    assert_non_null(strstr(out, "E_NOT_MEMBER"));
    /* The refusal is audited by the agency refused. */
    assert_int_equal(count("police", "SELECT count(*) FROM audit WHERE event = 'reject' AND"
                                     " outcome = 'E_NOT_MEMBER' AND case_ref = 'C-STORY-1'"),
                     1);
    assert_int_equal(count("police", UPDATES), 0);
    assert_int_equal(count("police", "SELECT count(*) FROM case_grants"), 0);
    /* Nor subscribe: refused by its agent, and audited. */
    const char *sub[] = {"case", "subscribe", "--case", "C-STORY-1", NULL};
    assert_int_equal(cli("police", out, sizeof out, sub), 1);
    assert_non_null(strstr(out, "E_NOT_MEMBER"));
    assert_int_equal(count("police", "SELECT count(*) FROM audit WHERE event = 'reject' AND"
                                     " outcome = 'E_NOT_MEMBER' AND case_ref = 'C-STORY-1'"),
                     2);
    assert_int_equal(count("social-care", "SELECT count(*) FROM case_subscriptions"
                                          " WHERE agency = 'police'"),
                     0);

    /* A raw client that skips its agent's check meets the broker's. */
    h_client c;
    char path[600], err[256];
    uint8_t id[16];
    assert_int_equal(h_client_open(&c, &g_net, "probation", NULL), 0);
    assert_int_equal(h_client_hello(&c, "probation"), 0);
    refex_directory *d = NULL;
    h_path(&g_net, path, sizeof path, "directory.rdir");
    assert_ok(refex_directory_load(path, NULL, &d, err, sizeof err));
    /* Its subscription, validly signed, is refused by the broker too. */
    refex_subscription psub = {.agency = "probation", .case_ref = "C-STORY-1", .serial = 1};
    uint8_t *sb = NULL;
    size_t sblen = 0;
    assert_ok(refex_subscription_sign(&psub, c.keys->sk->sign_sk, &sb, &sblen));
    Refex__V1__Frame sf = REFEX__V1__FRAME__INIT;
    Refex__V1__SubscribeSubmit ssub = REFEX__V1__SUBSCRIBE_SUBMIT__INIT;
    ssub.subscription = refex__v1__signed_subscription__unpack(NULL, sblen, sb);
    sf.kind_case = REFEX__V1__FRAME__KIND_SUBSCRIBE;
    sf.subscribe = &ssub;
    assert_int_equal(h_client_send(&c, &sf), 0);
    Refex__V1__Frame *er = h_client_recv(&c, H_TIMEOUT_MS);
    assert_non_null(er);
    assert_int_equal(er->kind_case, REFEX__V1__FRAME__KIND_ERROR);
    assert_int_equal(er->error->code, REFEX_E_NOT_MEMBER);
    refex_frame_free(&er);
    refex__v1__signed_subscription__free_unpacked(ssub.subscription, NULL);
    free(sb);

    const refex_agency *rcpt[] = {refex_directory_find(d, "social-care")};
    json_t *body = json_pack("{s:s, s:s, s:s}", "case_ref", "C-STORY-1", "update_type",
                             "CASE_UPDATE_OTHER", "summary", "forged update");
    uint8_t *bb = NULL, *env = NULL;
    size_t blen = 0, elen = 0;
    assert_ok(refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, body, &bb, &blen, err,
                                   sizeof err));
    refex_seal_params p = {.sender = "probation",
                           .sign_sk = c.keys->sk->sign_sk,
                           .recipients = rcpt,
                           .n_recipients = 1,
                           .type = REFEX__V1__MESSAGE_TYPE__CASE_UPDATE,
                           .case_ref = "C-STORY-1"};
    assert_ok(refex_envelope_seal(&p, bb, blen, &env, &elen, id));
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, elen, env);
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = e;
    f.kind_case = REFEX__V1__FRAME__KIND_SEND;
    f.send = &s;
    assert_int_equal(h_client_send(&c, &f), 0);
    Refex__V1__Frame *r = h_client_recv(&c, H_TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_REJECTED);
    assert_int_equal(r->rejected->code, REFEX_E_NOT_MEMBER);
    refex_frame_free(&r);
    refex__v1__envelope__free_unpacked(e, NULL);
    free(bb);
    free(env);
    json_decref(body);
    refex_directory_destroy(&d);
    h_client_close(&c);
}

static void test_revoked_member_receives_nothing_more(void **state)
{
    (void)state;
    char out[4096];
    const char *rv[] = {"case",     "revoke",           "--case", "C-STORY-1",
                        "--member", "substance-misuse", NULL};
    assert_int_equal(cli("social-care", out, sizeof out, rv), 0);
    long long before = count("substance-misuse", UPDATES);
    long long mw = count("midwifery", UPDATES);
    publish("social-care", "placement", "placed with mother, supported by family");
    wait_count("midwifery", UPDATES, mw + 1);
    assert_int_equal(count("substance-misuse", UPDATES), before);
    const char *members[] = {"case", "members", "--case", "C-STORY-1", NULL};
    assert_int_equal(cli("social-care", out, sizeof out, members), 0);
    assert_non_null(strstr(out, "substance-misuse"));
    assert_non_null(strstr(out, "revoked"));
    /* 7. Every step is audited, by each agent involved, with its lawful basis. */
    static const char *const steps[][3] = {
        {"midwifery", "send", "REFERRAL"},
        {"social-care", "receive", "REFERRAL"},
        {"social-care", "send", "REFERRAL_DECISION"},
        {"midwifery", "receive", "REFERRAL_DECISION"},
        {"social-care", "send", "INFORMATION_REQUEST"},
        {"substance-misuse", "receive", "INFORMATION_REQUEST"},
        {"substance-misuse", "send", "INFORMATION_RESPONSE"},
        {"social-care", "receive", "INFORMATION_RESPONSE"},
        {"substance-misuse", "receive", "CASE_UPDATE"},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM audit WHERE event = '%s' AND message_type = '%s' AND"
                 " article6 = 'ARTICLE6_PUBLIC_TASK' AND article9 <> ''",
                 steps[i][1], steps[i][2]);
        if (count(steps[i][0], sql) < 1)
            fail_msg("%s has no audited %s of a %s with its lawful basis", steps[i][0], steps[i][1],
                     steps[i][2]);
    }
    assert_true(count("social-care", "SELECT count(*) FROM audit WHERE event = 'send' AND"
                                     " message_type = 'CASE_UPDATE' AND"
                                     " article6 = 'ARTICLE6_PUBLIC_TASK'") >= 4);
    assert_true(count("midwifery", "SELECT count(*) FROM audit WHERE event = 'receive' AND"
                                   " message_type = 'CASE_UPDATE' AND"
                                   " article6 = 'ARTICLE6_PUBLIC_TASK'") >= 4);
}

/* Parses "(serial N)" from a subscribe command's output. */
static long long serial_of(const char *out)
{
    const char *p = strstr(out, "(serial ");
    return p ? atoll(p + 8) : -1;
}

/* Subscribes (or unsubscribes) to C-STORY-1, or with case_ref NULL to all cases, and waits
 * until the lead holds the new subscription. */
static void subscribe(const char *agency, const char *verb, const char *case_ref, const char *types)
{
    char out[4096], sql[256];
    const char *args[] = {"case", verb, case_ref ? "--case" : "--all", case_ref, NULL, NULL, NULL};
    if (types) {
        args[case_ref ? 4 : 3] = "--types";
        args[case_ref ? 5 : 4] = types;
    }
    assert_int_equal(cli(agency, out, sizeof out, args), 0);
    long long serial = serial_of(out);
    assert_true(serial > 0);
    /* The publisher (the lead) holds the new subscription. */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM case_subscriptions WHERE agency = '%s' AND serial = %lld",
             agency, serial);
    wait_count("social-care", sql, 1);
}

static void test_subscription_filters_and_unsubscribe(void **state)
{
    (void)state;
    char out[4096];
    const char *pub_other[] = {"case",        "publish", "--case",    "C-STORY-1",
                               "--type",      "other",   "--summary", "health visitor allocated",
                               PUBLISH_BASIS, NULL};
    const char *pub_closed[] = {"case",        "publish",   "--case",      "C-STORY-1",   "--type",
                                "case-closed", "--summary", "case closed", PUBLISH_BASIS, NULL};
    long long mw = count("midwifery", UPDATES);
    /* Midwifery now wants only case closures: an "other" update has no one left to go to
     * (substance misuse is revoked), a closure reaches it. */
    subscribe("midwifery", "subscribe", "C-STORY-1", "case-closed");
    assert_int_equal(cli("social-care", out, sizeof out, pub_other), 1);
    assert_non_null(strstr(out, "subscribed"));
    assert_int_equal(cli("social-care", out, sizeof out, pub_closed), 0);
    wait_count("midwifery", UPDATES, mw + 1);
    /* After unsubscribing, nothing more reaches it. */
    subscribe("midwifery", "unsubscribe", "C-STORY-1", NULL);
    assert_int_equal(cli("social-care", out, sizeof out, pub_closed), 1);
    assert_int_equal(count("midwifery", UPDATES), mw + 1);
    /* "All my cases except this one": the case's own subscription decides. */
    subscribe("midwifery", "subscribe", NULL, NULL);
    assert_int_equal(cli("social-care", out, sizeof out, pub_closed), 1);
    assert_int_equal(count("midwifery", UPDATES), mw + 1);
    subscribe("midwifery", "subscribe", "C-STORY-1", NULL);
    assert_int_equal(cli("social-care", out, sizeof out, pub_closed), 0);
    wait_count("midwifery", UPDATES, mw + 2);
    /* A revoked member may still unsubscribe (but not subscribe). */
    const char *resub[] = {"case", "subscribe", "--case", "C-STORY-1", NULL};
    assert_int_equal(cli("substance-misuse", out, sizeof out, resub), 1);
    assert_non_null(strstr(out, "E_NOT_MEMBER"));
    subscribe("substance-misuse", "unsubscribe", "C-STORY-1", NULL);
    assert_true(count("midwifery", "SELECT count(*) FROM audit WHERE event IN"
                                   " ('subscribe', 'unsubscribe')") >= 3);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_referral_acknowledged_and_accepted),
        cmocka_unit_test(test_grants_reach_members),
        cmocka_unit_test(test_information_request_answered),
        cmocka_unit_test(test_updates_reach_every_member_once_in_order),
        cmocka_unit_test(test_non_member_can_neither_publish_nor_receive),
        cmocka_unit_test(test_revoked_member_receives_nothing_more),
        cmocka_unit_test(test_subscription_filters_and_unsubscribe),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
