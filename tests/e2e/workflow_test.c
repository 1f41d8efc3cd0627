/* The referral and information-request workflow between real agents: a referral's
 * decision is matched to it (refex referrals), and an information request is open, overdue,
 * and then answered or declined (refex requests, refex status --overdue). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <string.h>

#include "../unit/testing.h"
#include "harness.h"
#include "util.h"

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "social-care", "substance-misuse", NULL};

static int setup(void **state)
{
    (void)state;
    return h_net_up(&g_net, AGENCIES, NULL, NULL);
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

/* Sends type/body from one agency to another; the message id. */
static void send_json(const char *from, const char *to, const char *type, json_t *body, char id[33])
{
    assert_int_equal(h_send_json(&g_net, from, to, type, body, id), 0);
}

static void wait_sql(const char *db, const char *sql, long long want)
{
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (h_sql_int(&g_net, db, sql) != want && refex_mono_ms() < deadline)
        h_pause();
    assert_int_equal(h_sql_int(&g_net, db, sql), want);
}

/* Runs a CLI command for an agency and returns its JSON output (caller decrefs). */
static json_t *cli_json(const char *agency, const char *const *args)
{
    char out[65536];
    int rc = h_cli_agent(&g_net, agency, out, sizeof out, args);
    if (rc != 0)
        fail_msg("refex exited %d: %s", rc, out);
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    assert_non_null(j);
    return j;
}

static void test_referral_decision_is_matched(void **state)
{
    (void)state;
    char ref[33], dec[33], sql[256];
    send_json(
        "midwifery", "social-care", "referral",
        h_required("referral",
                   json_pack("{s:s, s:{s:s, s:i}, s:s, s:s}", "kind", "REFERRAL_PRE_BIRTH",
                             "subject", "reference", "UB-WF-0001", "gestation_weeks", 12, "summary",
                             "synthetic workflow referral", "conversation_id", "conv-wf-1")),
        ref);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM receipts WHERE message_id = '%s'", ref);
    wait_sql("data/midwifery/agent.db", sql, 1);
    const char *list[] = {"referrals", "--json", NULL};
    json_t *rows = cli_json("midwifery", list);
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), "status")),
                        "received, awaiting decision");
    json_decref(rows);

    /* Social care accepts, naming the referral it decides on. */
    send_json(
        "social-care", "midwifery", "referral-decision",
        h_required("referral-decision",
                   json_pack("{s:s, s:s, s:s, s:s, s:s}", "referral_message_id", ref, "decision",
                             "DECISION_ACCEPTED", "case_ref", "C-WF-0001", "conversation_id",
                             "conv-wf-1", "reason", "pre-birth assessment to start")),
        dec);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM inbox WHERE message_id = '%s'", dec);
    wait_sql("data/midwifery/agent.db", sql, 1);
    rows = cli_json("midwifery", list);
    json_t *r = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(r, "status")), "accepted");
    assert_string_equal(json_string_value(json_object_get(r, "case_ref_assigned")), "C-WF-0001");
    assert_string_equal(json_string_value(json_object_get(r, "decided_by")), "social-care");
    assert_string_equal(json_string_value(json_object_get(r, "decision_message_id")), dec);
    assert_string_equal(json_string_value(json_object_get(r, "conversation_id")), "conv-wf-1");
    json_decref(rows);

    char out[4096];
    const char *table[] = {"referrals", NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, table), 0);
    assert_non_null(strstr(out, "accepted"));
    assert_non_null(strstr(out, "case C-WF-0001"));
}

static void test_information_request_overdue_then_declined(void **state)
{
    (void)state;
    char req[33], resp[33], sql[256];
    send_json("social-care", "substance-misuse", "information-request",
              h_required("information-request",
                         json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s}}", "request_id", "RQ-WF-1",
                                   "case_ref", "C-WF-0001", "question",
                                   "Is the mother engaged with treatment?", "due_date",
                                   "2000-01-01", "lawful_basis", "article6", "ARTICLE6_PUBLIC_TASK",
                                   "article9", "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST")),
              req);
    const char *overdue[] = {"status", "--overdue", "--json", NULL};
    json_t *rows = cli_json("social-care", overdue);
    assert_int_equal(json_array_size(rows), 1);
    json_t *r = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(r, "request_id")), "RQ-WF-1");
    assert_string_equal(json_string_value(json_object_get(r, "status")), "overdue");
    json_decref(rows);

    /* Substance misuse declines to share, with a reason: that is a response too. */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM inbox WHERE message_id = '%s'", req);
    wait_sql("data/substance-misuse/agent.db", sql, 1);
    send_json("substance-misuse", "social-care", "information-response",
              h_required("information-response",
                         json_pack("{s:s, s:b, s:s, s:{s:s, s:s}}", "request_id", "RQ-WF-1",
                                   "declined", 1, "decline_reason",
                                   "no consent and no safeguarding threshold met yet",
                                   "lawful_basis", "article6", "ARTICLE6_PUBLIC_TASK", "article9",
                                   "ARTICLE9_HEALTH_SOCIAL_CARE")),
              resp);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM inbox WHERE message_id = '%s'", resp);
    wait_sql("data/social-care/agent.db", sql, 1);
    rows = cli_json("social-care", overdue);
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);
    const char *all[] = {"requests", "--json", NULL};
    rows = cli_json("social-care", all);
    assert_int_equal(json_array_size(rows), 1);
    r = json_array_get(rows, 0);
    assert_string_equal(json_string_value(json_object_get(r, "status")), "declined");
    assert_string_equal(json_string_value(json_object_get(r, "response_message_id")), resp);
    json_decref(rows);
    /* The refusal to share is audited by the agency that refused, with its lawful basis. */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit WHERE message_id = '%s' AND event = 'send' AND"
             " message_type = 'INFORMATION_RESPONSE' AND article9 = 'ARTICLE9_HEALTH_SOCIAL_CARE'",
             resp);
    assert_int_equal(h_sql_int(&g_net, "data/substance-misuse/agent.db", sql), 1);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_referral_decision_is_matched),
        cmocka_unit_test(test_information_request_overdue_then_declined),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
