/* End-to-end tests of the information-sharing policy (issue 11, item 5), with real daemons.
 * The directory's policy forbids substance-misuse (and police) sending a referral to
 * midwifery, and the refusal happens at each of the three places:
 * - the sending agent refuses it (E_POLICY, field "to"), audits the reject, seals nothing;
 * - the broker refuses it from a raw client (REJECTED E_POLICY) and stores nothing;
 * - the receiver refuses it with a signed E_POLICY receipt when a sender and broker that do
 *   not enforce it (they load a directory without a policy, signed by the same anchor)
 *   pass it on.
 * What the policy allows still goes through, and every daemon keeps running. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/testing.h"
#include "harness.h"
#include "body.h"
#include "codec.h"
#include "directory.h"
#include "envelope.h"
#include "util.h"

static const char *const AGENCIES[] = {"midwifery", "substance-misuse", "social-care", NULL};
static const char *const LISTED_ONLY[] = {"police", NULL};

#define SM_DB   "data/substance-misuse/agent.db"
#define MW_DB   "data/midwifery/agent.db"
#define QUEUE   "data/broker/queue.db"
#define REJECTS "SELECT count(*) FROM audit WHERE event = 'reject' AND outcome = 'E_POLICY'"

static void cli_ok(h_net *n, const char *const *args)
{
    char out[4096];
    int rc = h_cli(n, out, sizeof out, args);
    if (rc != 0)
        fprintf(stderr, "%s\n", out);
    assert_int_equal(rc, 0);
}

/* A realistic policy in directory.rdir, then signed; with `open_copy`, a copy of the
 * directory as it was (no policy) is first signed into open.rdir. */
static void write_policy(h_net *n, int open_copy)
{
    static const char *const rules[][3] = {
        {"midwifery", "referral", "social-care"},
        {"social-care", "referral-decision", "midwifery"},
        {"social-care", "information-request", "substance-misuse"},
        {"substance-misuse", "information-response", "social-care"},
        {"police", "referral", "social-care"},
    };
    char file[600], open[600], anchor[600], out[4096];
    h_path(n, file, sizeof file, "directory.rdir");
    h_path(n, open, sizeof open, "open.rdir");
    h_path(n, anchor, sizeof anchor, "keys/operator.secret");
    if (open_copy) {
        char *cp[] = {"/bin/cp", file, open, NULL};
        assert_int_equal(h_run(cp, out, sizeof out), 0);
        const char *sign[] = {"directory", "sign", "--file", open, "--anchor", anchor, NULL};
        cli_ok(n, sign);
    }
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        const char *allow[] = {"directory", "policy", "allow",     "--file", file,        "--from",
                               rules[i][0], "--type", rules[i][1], "--to",   rules[i][2], NULL};
        cli_ok(n, allow);
    }
    const char *lead[] = {"directory", "policy", "lead",        "--file",
                          file,        "--role", "social-care", NULL};
    cli_ok(n, lead);
    const char *sign[] = {"directory", "sign", "--file", file, "--anchor", anchor, NULL};
    cli_ok(n, sign);
}

/* Points conf/NAME.conf at open.rdir instead of directory.rdir. */
static void use_open_directory(h_net *n, const char *name)
{
    char path[600], buf[8192];
    h_path(n, path, sizeof path, "conf/%s.conf", name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *at = strstr(buf, "../directory.rdir");
    assert_non_null(at);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%.*s../open.rdir%s", (int)(at - buf), buf, at + strlen("../directory.rdir"));
    fclose(f);
}

static json_t *send_req(const char *to, const char *type)
{
    return json_pack("{s:s, s:[s], s:s, s:o}", "cmd", "send", "to", to, "type", type, "body",
                     h_required(type, json_object()));
}

/* The sending agent: refused before anything is sealed, named, audited. */
static void test_sending_agent_refuses(void **state)
{
    (void)state;
    h_net n;
    char id[33];
    assert_int_equal(h_net_init(&n, AGENCIES, LISTED_ONLY, NULL), 0);
    write_policy(&n, 0);
    assert_int_equal(h_net_start_broker(&n), 0);
    for (int i = 0; AGENCIES[i]; i++)
        assert_int_equal(h_net_start_agent(&n, AGENCIES[i]), 0);

    long long rejects = h_sql_int(&n, SM_DB, REJECTS);
    json_t *req = send_req("midwifery", "referral");
    json_t *r = h_control(&n, "substance-misuse", req);
    json_decref(req);
    assert_non_null(r);
    assert_false(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(json_string_value(json_object_get(r, "error")), "E_POLICY");
    assert_string_equal(json_string_value(json_object_get(r, "field")), "to");
    assert_non_null(strstr(json_string_value(json_object_get(r, "detail")),
                           "substance-misuse to send referral to midwifery"));
    json_decref(r);
    assert_int_equal(h_sql_int(&n, SM_DB, REJECTS), rejects + 1);
    assert_int_equal(
        h_sql_int(&n, SM_DB, REJECTS " AND peer = 'midwifery' AND message_type = 'REFERRAL'"), 1);
    assert_int_equal(h_sql_int(&n, SM_DB, "SELECT count(*) FROM outbox"), 0);

    /* The policy comes before the required fields: a forbidden send that also lacks every
     * required field is refused E_POLICY, not E_INVAL. */
    req = json_pack("{s:s, s:[s], s:s, s:{}}", "cmd", "send", "to", "midwifery", "type", "referral",
                    "body");
    r = h_control(&n, "substance-misuse", req);
    json_decref(req);
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(r, "error")), "E_POLICY");
    json_decref(r);
    assert_int_equal(h_sql_int(&n, SM_DB, REJECTS), rejects + 2);

    /* The CLI shows it as a typed error too. */
    char out[4096];
    const char *args[] = {"send",     "--to",           "midwifery", "--type",
                          "referral", H_REFERRAL_FLAGS, "--json",    NULL};
    assert_int_not_equal(h_cli_agent(&n, "substance-misuse", out, sizeof out, args), 0);
    assert_non_null(strstr(out, "E_POLICY"));

    /* What the policy allows goes through, and arrives. */
    assert_int_equal(h_send_json(&n, "midwifery", "social-care", "referral",
                                 h_required("referral", json_object()), id),
                     0);
    assert_int_equal(
        h_sql_wait(&n, "data/social-care/agent.db", "SELECT count(*) FROM inbox", 1, H_TIMEOUT_MS),
        1);
    assert_true(h_alive(&n.agents[h_agent_index(&n, "substance-misuse")]));
    h_net_fini(&n);
}

/* A referral from police to midwifery, sealed here (police runs no agent). */
static Refex__V1__Envelope *sealed(h_client *c, const refex_directory *d, uint8_t id[16])
{
    char err[256];
    uint8_t *b = NULL, *env = NULL;
    size_t blen = 0, elen = 0;
    json_t *body = h_required("referral", json_object());
    assert_ok(
        refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, body, &b, &blen, err, sizeof err));
    json_decref(body);
    const refex_agency *rcpt[] = {refex_directory_find(d, "midwifery")};
    refex_seal_params p = {.sender = "police",
                           .sign_sk = c->keys->sk->sign_sk,
                           .recipients = rcpt,
                           .n_recipients = 1,
                           .type = REFEX__V1__MESSAGE_TYPE__REFERRAL,
                           .created_at_ms = refex_now_ms()};
    assert_ok(refex_envelope_seal(&p, b, blen, &env, &elen, id));
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, elen, env);
    assert_non_null(e);
    free(b);
    free(env);
    return e;
}

/* The broker: a raw client's forbidden envelope is REJECTED E_POLICY and not stored. */
static void test_broker_refuses(void **state)
{
    (void)state;
    h_net n;
    h_client c;
    char file[600], err[512];
    uint8_t id[16];
    refex_directory *d = NULL;
    assert_int_equal(h_net_init(&n, AGENCIES, LISTED_ONLY, NULL), 0);
    write_policy(&n, 0);
    assert_int_equal(h_net_start_broker(&n), 0);
    assert_int_equal(h_net_start_agent(&n, "midwifery"), 0);
    h_path(&n, file, sizeof file, "directory.rdir");
    assert_ok(refex_directory_load(file, NULL, &d, err, sizeof err));
    assert_int_equal(h_client_open(&c, &n, "police", NULL), 0);
    assert_int_equal(h_client_hello(&c, "police"), 0);

    Refex__V1__Envelope *e = sealed(&c, d, id);
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = e;
    f.kind_case = REFEX__V1__FRAME__KIND_SEND;
    f.send = &s;
    assert_int_equal(h_client_send(&c, &f), 0);
    Refex__V1__Frame *r = NULL;
    while ((r = h_client_recv(&c, H_TIMEOUT_MS)) &&
           r->kind_case != REFEX__V1__FRAME__KIND_REJECTED &&
           r->kind_case != REFEX__V1__FRAME__KIND_STORED)
        refex_frame_free(&r);
    assert_non_null(r);
    assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_REJECTED);
    assert_memory_equal(r->rejected->message_id.data, id, 16);
    assert_int_equal(r->rejected->code, REFEX_E_POLICY);
    assert_non_null(strstr(r->rejected->detail, "police to send referral to midwifery"));
    refex_frame_free(&r);
    refex__v1__envelope__free_unpacked(e, NULL);
    assert_int_equal(h_sql_int(&n, QUEUE, "SELECT count(*) FROM messages"), 0);
    assert_true(h_alive(&n.broker));
    h_client_close(&c);
    refex_directory_destroy(&d);
    h_net_fini(&n);
}

/* The receiver: a sender and a broker without the policy pass the referral on; midwifery
 * verifies it, refuses it with a signed E_POLICY receipt, audits it, keeps nothing. */
static void test_receiver_refuses(void **state)
{
    (void)state;
    h_net n;
    char id[33], sql[256];
    assert_int_equal(h_net_init(&n, AGENCIES, LISTED_ONLY, NULL), 0);
    write_policy(&n, 1);
    use_open_directory(&n, "broker");
    assert_int_equal(h_net_start_broker(&n), 0);
    use_open_directory(&n, "substance-misuse");
    for (int i = 0; AGENCIES[i]; i++)
        assert_int_equal(h_net_start_agent(&n, AGENCIES[i]), 0);

    assert_int_equal(h_send_json(&n, "substance-misuse", "midwifery", "referral",
                                 h_required("referral", json_object()), id),
                     0);
    snprintf(sql, sizeof sql,
             "SELECT code FROM receipts WHERE message_id = '%s' AND recipient = 'midwifery'", id);
    assert_int_equal(h_sql_wait(&n, SM_DB, sql, REFEX_E_POLICY, H_TIMEOUT_MS), REFEX_E_POLICY);
    assert_int_equal(h_sql_int(&n, SM_DB,
                               "SELECT count(*) FROM audit WHERE event = 'receipt' AND "
                               "outcome = 'E_POLICY'"),
                     1);
    assert_int_equal(h_sql_int(&n, MW_DB, "SELECT count(*) FROM inbox"), 0);
    assert_int_equal(h_sql_int(&n, MW_DB, REJECTS), 1);
    assert_true(h_alive(&n.agents[h_agent_index(&n, "midwifery")]));
    h_net_fini(&n);
}

/* The CLI: bad edits are typed errors and change nothing; show reports what is there. */
static void test_cli_edits(void **state)
{
    (void)state;
    h_net n;
    char file[600], out[8192];
    assert_int_equal(h_net_init(&n, AGENCIES, LISTED_ONLY, NULL), 0);
    h_path(&n, file, sizeof file, "directory.rdir");
    const char *show[] = {"directory", "policy", "show", "--file", file, "--json", NULL};
    assert_int_equal(h_cli(&n, out, sizeof out, show), 0);
    assert_non_null(strstr(out, "\"present\": false"));
    const char *bad_type[] = {"directory", "policy", "allow",  "--file", file,        "--from",
                              "police",    "--type", "gossip", "--to",   "midwifery", NULL};
    assert_int_equal(h_cli(&n, out, sizeof out, bad_type), 2);
    assert_non_null(strstr(out, "unknown message type"));
    const char *bad_role[] = {"directory", "policy", "allow",    "--file", file,        "--from",
                              "Police",    "--type", "referral", "--to",   "midwifery", NULL};
    assert_int_equal(h_cli(&n, out, sizeof out, bad_role), 2);
    const char *missing[] = {"directory", "policy", "deny",   "--file",   file,
                             "--from",    "police", "--type", "referral", "--to",
                             "midwifery", "--json", NULL};
    assert_int_equal(h_cli(&n, out, sizeof out, missing), 1);
    assert_non_null(strstr(out, "E_NOTFOUND"));
    assert_int_equal(h_cli(&n, out, sizeof out, show), 0);
    assert_non_null(strstr(out, "\"present\": false")); /* the failed edit wrote nothing */
    write_policy(&n, 0);
    assert_int_equal(h_cli(&n, out, sizeof out, show), 0);
    assert_non_null(strstr(out, "\"lead_role\": \"social-care\""));
    assert_non_null(strstr(out, "\"type\": \"referral-decision\""));
    const char *again[] = {"directory", "policy", "allow",    "--file", file,          "--from",
                           "police",    "--type", "referral", "--to",   "social-care", NULL};
    assert_int_equal(h_cli(&n, out, sizeof out, again), 1);
    assert_non_null(strstr(out, "already"));
    const char *sub[] = {"directory", "policy", "remove", "--file", file, NULL};
    assert_int_equal(h_cli(&n, out, sizeof out, sub), 2);
    h_net_fini(&n);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sending_agent_refuses),
        cmocka_unit_test(test_broker_refuses),
        cmocka_unit_test(test_receiver_refuses),
        cmocka_unit_test(test_cli_edits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
