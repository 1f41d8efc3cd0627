/* End-to-end tests of the integration contract's required fields (issue 9, item 1), with a
 * real broker and real agents: an empty referral piped to `refex send --body -` is refused
 * with E_INVAL naming every missing field, audited as a reject and leaves the outbox as it
 * was; a complete referral goes through; each other type's minimum is enforced by the
 * sending agent (and `case publish` defaults nothing); and a receiving agent refuses, with
 * its signed receipt, an incomplete referral that a raw client sealed and sent itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../unit/testing.h"
#include "harness.h"
#include "body.h"
#include "codec.h"
#include "directory.h"
#include "envelope.h"
#include "receipt.h"
#include "util.h"

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "substance-misuse", "social-care", NULL};
static const char *const LISTED_ONLY[] = {"police", NULL};

#define MW_DB   "data/midwifery/agent.db"
#define SC_DB   "data/social-care/agent.db"
#define REJECTS "SELECT count(*) FROM audit WHERE event = 'reject' AND outcome = 'E_INVAL'"

static int setup(void **state)
{
    (void)state;
    return h_net_up(&g_net, AGENCIES, LISTED_ONLY, NULL);
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

static void wait_sql(const char *db, const char *sql, long long want)
{
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (h_sql_int(&g_net, db, sql) != want && refex_mono_ms() < deadline)
        h_pause();
    assert_int_equal(h_sql_int(&g_net, db, sql), want);
}

/* Runs `refex -c CONF(agency) args` with `input` on its stdin, as `echo input | refex`. */
static int cli_stdin(const char *agency, const char *input, char *out, size_t len,
                     const char *const *args)
{
    char path[600];
    h_path(&g_net, path, sizeof path, "stdin.json");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(input, f);
    fclose(f);
    int saved = dup(0), fd = open(path, O_RDONLY);
    assert_true(saved >= 0 && fd >= 0);
    assert_int_equal(dup2(fd, 0), 0);
    close(fd);
    int rc = h_cli_agent(&g_net, agency, out, len, args);
    assert_int_equal(dup2(saved, 0), 0);
    close(saved);
    return rc;
}

/* A send through the control socket that must be refused with E_INVAL naming `missing`
 * exactly; the reject is audited and the outbox does not grow. */
static void expect_missing(const char *type, json_t *body, const char *missing)
{
    long long rejects = h_sql_int(&g_net, MW_DB, REJECTS);
    long long outbox = h_sql_int(&g_net, MW_DB, "SELECT count(*) FROM outbox");
    json_t *req = json_pack("{s:s, s:[s], s:s, s:o}", "cmd", "send", "to", "social-care", "type",
                            type, "body", body);
    json_t *r = h_control(&g_net, "midwifery", req);
    assert_non_null(r);
    assert_false(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(json_string_value(json_object_get(r, "error")), "E_INVAL");
    const char *detail = json_string_value(json_object_get(r, "detail"));
    if (!detail || strcmp(detail + strlen("missing required fields: "), missing) != 0)
        fail_msg("%s: detail '%s', wanted the fields '%s'", type, detail ? detail : "?", missing);
    json_decref(r);
    json_decref(req);
    assert_int_equal(h_sql_int(&g_net, MW_DB, REJECTS), rejects + 1);
    assert_int_equal(h_sql_int(&g_net, MW_DB, "SELECT count(*) FROM outbox"), outbox);
}

/* The same body with the missing fields added goes through. */
static void expect_accepted(const char *type, json_t *body)
{
    char id[33];
    assert_int_equal(h_send_json(&g_net, "midwifery", "social-care", type, body, id), 0);
    assert_int_equal(strlen(id), 32);
}

/* ---- the acceptance test of issue 9, item 1 ----------------------------------------- */

static void test_empty_referral_refused_with_every_missing_field(void **state)
{
    (void)state;
    char before[65536], after[65536], out[8192];
    const char *list[] = {"outbox", "list", "--json", NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", before, sizeof before, list), 0);
    long long rejects = h_sql_int(&g_net, MW_DB, REJECTS);

    const char *send[] = {"send", "--to", "social-care", "--type", "referral", "--body", "-", NULL};
    assert_int_equal(cli_stdin("midwifery", "{}\n", out, sizeof out, send), 1);
    assert_non_null(strstr(out, "E_INVAL"));
    assert_non_null(strstr(out, "missing required fields: subject.reference, subject.kind, "
                                "referrer.reference, lawful_basis.article6, "
                                "lawful_basis.article9, consent, purpose, urgency"));

    assert_int_equal(h_cli_agent(&g_net, "midwifery", after, sizeof after, list), 0);
    assert_string_equal(after, before);
    assert_int_equal(h_sql_int(&g_net, MW_DB, REJECTS), rejects + 1);
    assert_int_equal(h_sql_int(&g_net, MW_DB,
                               "SELECT count(*) FROM audit WHERE event = 'reject' AND outcome ="
                               " 'E_INVAL' AND message_type = 'REFERRAL' AND message_id = '' AND"
                               " peer = 'social-care'"),
                     1);
    /* The refusal reached the audit log, never the broker. */
    const char *audit[] = {"audit", "list", "--json", NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", after, sizeof after, audit), 0);
    assert_non_null(strstr(after, "\"event\": \"reject\""));
}

static void test_complete_referral_goes_through(void **state)
{
    (void)state;
    char out[8192], sql[256];
    const char *send[] = {"send",     "--to",   "social-care", "--type",
                          "referral", "--kind", "pre-birth",   H_REFERRAL_FLAGS,
                          "--wait",   "--json", NULL};
    int rc = h_cli_agent(&g_net, "midwifery", out, sizeof out, send);
    if (rc != 0)
        fail_msg("refex send exited %d: %s", rc, out);
    json_error_t jerr;
    json_t *reply = json_loads(out, 0, &jerr);
    assert_non_null(reply);
    assert_string_equal(json_string_value(json_object_get(reply, "state")), "stored");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM inbox WHERE message_id = '%s'",
             json_string_value(json_object_get(reply, "message_id")));
    json_decref(reply);
    wait_sql(SC_DB, sql, 1);
    /* The same through stdin, as a maternity system would pipe it. */
    json_t *body = h_required("referral", json_object());
    char *text = json_dumps(body, JSON_COMPACT);
    const char *piped[] = {"send",     "--to",   "social-care", "--type",
                           "referral", "--body", "-",           NULL};
    assert_int_equal(cli_stdin("midwifery", text, out, sizeof out, piped), 0);
    free(text);
    json_decref(body);
}

/* ---- each other type's minimum ------------------------------------------------------ */

static void test_decision_minimum(void **state)
{
    (void)state;
    const char *base = "{\"referral_message_id\": \"00112233445566778899aabbccddeeff\","
                       " \"decision\": \"DECISION_ACCEPTED\"}";
    json_error_t jerr;
    expect_missing("referral-decision", json_loads(base, 0, &jerr),
                   "case_ref, decided_by.reference, lawful_basis.article6, "
                   "lawful_basis.article9, purpose");
    json_t *b = json_loads(base, 0, &jerr);
    json_object_set_new(b, "case_ref", json_string("C-CONTRACT-1"));
    expect_accepted("referral-decision", h_required("referral-decision", b));
    /* A decline opens no case: no case reference needed. */
    expect_accepted(
        "referral-decision",
        h_required("referral-decision", json_pack("{s:s, s:s}", "referral_message_id", "00ff",
                                                  "decision", "DECISION_DECLINED")));
    expect_missing("referral-decision",
                   json_pack("{s:s, s:{s:s}}", "decision", "DECISION_UNSPECIFIED", "decided_by",
                             "reference", "SW-1"),
                   "referral_message_id, decision, lawful_basis.article6, lawful_basis.article9, "
                   "purpose");
}

static void test_information_request_minimum(void **state)
{
    (void)state;
    expect_missing("information-request",
                   json_pack("{s:s, s:{s:s, s:s}}", "question", "engaged with treatment?",
                             "lawful_basis", "article6", "ARTICLE6_PUBLIC_TASK", "article9",
                             "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST"),
                   "request_id, case_ref, requested_by.reference, purpose");
    expect_accepted(
        "information-request",
        h_required("information-request",
                   json_pack("{s:s, s:s, s:s}", "request_id", "RQ-CONTRACT-1", "case_ref",
                             "C-CONTRACT-1", "question", "engaged with treatment?")));
}

static void test_information_response_minimum(void **state)
{
    (void)state;
    expect_missing("information-response", json_pack("{s:s}", "request_id", "RQ-CONTRACT-1"),
                   "answer, responded_by.reference, lawful_basis.article6, lawful_basis.article9, "
                   "consent, purpose");
    /* Declined: the reason, not an answer. */
    expect_missing("information-response",
                   h_required("information-response", json_pack("{s:s, s:b}", "request_id",
                                                                "RQ-CONTRACT-1", "declined", 1)),
                   "decline_reason");
    expect_accepted("information-response",
                    h_required("information-response",
                               json_pack("{s:s, s:b, s:s}", "request_id", "RQ-CONTRACT-1",
                                         "declined", 1, "decline_reason", "no consent")));
    expect_accepted(
        "information-response",
        h_required("information-response", json_pack("{s:s, s:s}", "request_id", "RQ-CONTRACT-1",
                                                     "answer", "engaged since week 14")));
}

/* A case update by `refex case publish`: nothing defaulted, every flag taken. */
static void test_case_update_minimum(void **state)
{
    (void)state;
    char out[8192];
    const char *open[] = {"case", "open", "--case", "C-CONTRACT-1", NULL};
    const char *grant[] = {"case",     "grant",     "--case", "C-CONTRACT-1",
                           "--member", "midwifery", NULL};
    const char *sub[] = {"case", "subscribe", "--case", "C-CONTRACT-1", NULL};
    assert_int_equal(h_cli_agent(&g_net, "social-care", out, sizeof out, open), 0);
    assert_int_equal(h_cli_agent(&g_net, "social-care", out, sizeof out, grant), 0);
    wait_sql(MW_DB, "SELECT count(*) FROM case_grants WHERE case_ref = 'C-CONTRACT-1'", 2);
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, sub), 0);
    wait_sql(SC_DB, "SELECT count(*) FROM case_subscriptions WHERE case_ref = 'C-CONTRACT-1'", 1);

    long long rejects = h_sql_int(&g_net, SC_DB, REJECTS);
    const char *bare[] = {"case",      "publish", "--case", "C-CONTRACT-1", "--type", "birth",
                          "--summary", "born",    NULL};
    assert_int_equal(h_cli_agent(&g_net, "social-care", out, sizeof out, bare), 1);
    assert_non_null(strstr(out, "E_INVAL"));
    assert_non_null(strstr(out, "missing required fields: published_by.reference, "
                                "lawful_basis.article6, lawful_basis.article9, purpose"));
    assert_int_equal(h_sql_int(&g_net, SC_DB, REJECTS), rejects + 1);
    assert_int_equal(h_sql_int(&g_net, SC_DB,
                               "SELECT count(*) FROM outbox WHERE type ="
                               " 'CASE_UPDATE'"),
                     0);

    /* The flags, over a body from stdin that gives the summary. */
    const char *full[] = {"case",           "publish",
                          "--case",         "C-CONTRACT-1",
                          "--type",         "birth",
                          "--article6",     "public-task",
                          "--article9",     "substantial-public-interest",
                          "--consent",      "not-required",
                          "--purpose",      "case-management",
                          "--practitioner", "SW-0007",
                          "--body",         "-",
                          "--json",         NULL};
    int rc = cli_stdin("social-care", "{\"summary\": \"born at 39 weeks\"}", out, sizeof out, full);
    if (rc != 0)
        fail_msg("case publish exited %d: %s", rc, out);
    wait_sql(MW_DB, "SELECT count(*) FROM inbox WHERE type = 'CASE_UPDATE'", 1);
    assert_int_equal(h_sql_int(&g_net, SC_DB,
                               "SELECT count(*) FROM audit WHERE event = 'send' AND message_type ="
                               " 'CASE_UPDATE' AND practitioner = 'SW-0007' AND purpose ="
                               " 'PURPOSE_CASE_MANAGEMENT' AND consent = 'CONSENT_NOT_REQUIRED'"),
                     1);
    /* The body flags are publish's only. */
    const char *misplaced[] = {"case",      "members", "--case", "C-CONTRACT-1",
                               "--purpose", "audit",   NULL};
    assert_int_equal(h_cli_agent(&g_net, "social-care", out, sizeof out, misplaced), 2);
}

/* ---- the receiver checks too -------------------------------------------------------- */

static void test_receiver_refuses_incomplete_raw_referral(void **state)
{
    (void)state;
    h_client c;
    uint8_t id[16], *b = NULL, *env = NULL;
    size_t blen = 0, elen = 0;
    char path[600], err[256], idhex[33], sql[256];
    refex_directory *d = NULL;
    h_path(&g_net, path, sizeof path, "directory.rdir");
    assert_ok(refex_directory_load(path, NULL, &d, err, sizeof err));
    assert_int_equal(h_client_open(&c, &g_net, "police", NULL), 0);
    assert_int_equal(h_client_hello(&c, "police"), 0);

    /* Sealed and signed by police itself, skipping any agent's check. */
    json_t *body = json_pack("{s:s, s:{s:s}}", "summary", "no lawful basis", "subject", "reference",
                             "UB-RAW-1");
    assert_ok(
        refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, body, &b, &blen, err, sizeof err));
    const refex_agency *rcpt[] = {refex_directory_find(d, "social-care")};
    refex_seal_params p = {.sender = "police",
                           .sign_sk = c.keys->sk->sign_sk,
                           .recipients = rcpt,
                           .n_recipients = 1,
                           .type = REFEX__V1__MESSAGE_TYPE__REFERRAL,
                           .case_ref = "C-RAW-1",
                           .created_at_ms = refex_now_ms()};
    assert_ok(refex_envelope_seal(&p, b, blen, &env, &elen, id));
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, elen, env);
    assert_non_null(e);
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = e;
    f.kind_case = REFEX__V1__FRAME__KIND_SEND;
    f.send = &s;
    assert_int_equal(h_client_send(&c, &f), 0);

    /* The broker stores it (it cannot read bodies); social care's signed receipt refuses it. */
    int stored = 0;
    refex_receipt rc;
    memset(&rc, 0, sizeof rc);
    for (;;) {
        Refex__V1__Frame *r = h_client_recv(&c, H_TIMEOUT_MS);
        assert_non_null(r);
        if (r->kind_case == REFEX__V1__FRAME__KIND_STORED) {
            assert_memory_equal(r->stored->message_id.data, id, 16);
            stored = 1;
        } else if (r->kind_case == REFEX__V1__FRAME__KIND_RECEIPT) {
            assert_ok(refex_receipt_verify(r->receipt->receipt, d, &rc));
            refex_frame_free(&r);
            break;
        } else {
            fail_msg("unexpected %s", refex_frame_kind_name(r));
        }
        refex_frame_free(&r);
    }
    assert_true(stored);
    assert_memory_equal(rc.message_id, id, 16);
    assert_string_equal(rc.signer, "social-care");
    assert_int_equal(rc.code, REFEX_E_INVAL);

    refex_hex_encode(idhex, id, 16);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM inbox WHERE message_id = '%s'", idhex);
    assert_int_equal(h_sql_int(&g_net, SC_DB, sql), 0);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit WHERE message_id = '%s' AND event = 'reject' AND"
             " outcome = 'E_INVAL' AND peer = 'police'",
             idhex);
    assert_int_equal(h_sql_int(&g_net, SC_DB, sql), 1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM refused WHERE message_id = '%s' AND sender = 'police' AND"
             " code = %d",
             idhex, REFEX_E_INVAL);
    assert_int_equal(h_sql_int(&g_net, SC_DB, sql), 1);
    /* Its log names the missing fields, never what the body held. */
    h_path(&g_net, path, sizeof path, "logs/social-care.log");
    assert_true(h_tree_contains(path, "missing required fields", 23));
    assert_false(h_tree_contains(path, "no lawful basis", 15));

    refex__v1__envelope__free_unpacked(e, NULL);
    free(b);
    free(env);
    json_decref(body);
    refex_directory_destroy(&d);
    h_client_close(&c);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_referral_refused_with_every_missing_field),
        cmocka_unit_test(test_complete_referral_goes_through),
        cmocka_unit_test(test_decision_minimum),
        cmocka_unit_test(test_information_request_minimum),
        cmocka_unit_test(test_information_response_minimum),
        cmocka_unit_test(test_case_update_minimum),
        cmocka_unit_test(test_receiver_refuses_incomplete_raw_referral),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
