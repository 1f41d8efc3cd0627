/* End-to-end test of key rotation with real processes (issue 11, item 6): midwifery's keys
 * are rotated with `refex keys rotate` and `refex directory rotate --overlap`, the new
 * directory is signed and SIGHUPed into every daemon. Inside the overlap the agent still
 * running on its old keys is admitted and its referral verifies at the broker and at
 * social care. When the overlap ends the broker ends that session, ZAP refuses the old
 * transport key and an envelope signed with the old key is refused E_REVOKED, while
 * the new keys are admitted and verify. Restarted, the agent runs on its new keys, signs its
 * subscription again (so the lead's updates still reach it) and still opens a message
 * sealed to its previous encryption key. Waits are on readiness lines, log lines and
 * replies, with deadlines; the only wait for the clock is for the overlap to end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "../unit/testing.h"
#include "body.h"
#include "codec.h"
#include "directory.h"
#include "envelope.h"
#include "harness.h"
#include "util.h"

#define OVERLAP_S "8"
#define MW_DB     "data/midwifery/agent.db"
#define SC_DB     "data/social-care/agent.db"
#define CASE      "C-ROT-1"

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "social-care", NULL};
static const char *const LISTED[] = {"police", NULL};

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

static void cli_ok(const char *agency, const char *const *args)
{
    char out[8192];
    int rc = agency ? h_cli_agent(&g_net, agency, out, sizeof out, args)
                    : h_cli(&g_net, out, sizeof out, args);
    if (rc != 0)
        fail_msg("refex %s %s exited %d: %s", args[0], args[1], rc, out);
}

static h_proc *agent_proc(const char *agency)
{
    int i = h_agent_index(&g_net, agency);
    assert_true(i >= 0);
    return &g_net.agents[i];
}

/* Polls a daemon's log for needle until timeout_ms pass. */
static void wait_log(const char *who, const char *needle, int timeout_ms)
{
    char log[600];
    h_path(&g_net, log, sizeof log, "logs/%s.log", who);
    int64_t deadline = refex_mono_ms() + timeout_ms;
    while (!h_tree_contains(log, needle, strlen(needle)) && refex_mono_ms() < deadline)
        h_pause();
    if (!h_tree_contains(log, needle, strlen(needle)))
        fail_msg("%s has no line '%s'", log, needle);
}

static void assert_log_lacks(const char *who, const char *needle)
{
    char log[600];
    h_path(&g_net, log, sizeof log, "logs/%s.log", who);
    if (h_tree_contains(log, needle, strlen(needle)))
        fail_msg("%s has a line '%s'", log, needle);
}

static int agent_online(const char *agency)
{
    json_t *req = json_pack("{s:s}", "cmd", "status");
    json_t *r = h_control(&g_net, agency, req);
    json_decref(req);
    assert_non_null(r);
    int online = json_is_true(json_object_get(r, "online"));
    json_decref(r);
    return online;
}

static void reload(h_proc *p, const char *want)
{
    char line[128];
    assert_int_equal(kill(p->pid, SIGHUP), 0);
    assert_int_equal(h_wait_line(p, "RELOAD", H_TIMEOUT_MS, line, sizeof line), 0);
    assert_string_equal(line, want);
}

static refex_keys *load_keys(const char *rel)
{
    char path[600], err[256];
    refex_keys *k = NULL;
    h_path(&g_net, path, sizeof path, "%s", rel);
    assert_ok(refex_keys_load(path, &k, err, sizeof err));
    return k;
}

/* A referral from `sender`, signed with sign_sk and sealed to `to` as given. */
static Refex__V1__Envelope *sealed(const char *sender, const uint8_t *sign_sk,
                                   const refex_agency *to, uint8_t id[16])
{
    char err[256];
    uint8_t *b = NULL, *env = NULL;
    size_t blen = 0, elen = 0;
    json_t *body = h_required("referral", json_object());
    assert_ok(
        refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, body, &b, &blen, err, sizeof err));
    json_decref(body);
    const refex_agency *rcpt[] = {to};
    refex_seal_params p = {.sender = sender,
                           .sign_sk = sign_sk,
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

/* SENDs e on c; the broker's answer: 0 for STORED, else the REJECTED code. */
static int send_envelope(h_client *c, Refex__V1__Envelope *e, const uint8_t id[16])
{
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = e;
    f.kind_case = REFEX__V1__FRAME__KIND_SEND;
    f.send = &s;
    assert_int_equal(h_client_send(c, &f), 0);
    Refex__V1__Frame *r = NULL;
    while ((r = h_client_recv(c, H_TIMEOUT_MS)) &&
           r->kind_case != REFEX__V1__FRAME__KIND_REJECTED &&
           r->kind_case != REFEX__V1__FRAME__KIND_STORED)
        refex_frame_free(&r);
    assert_non_null(r);
    int code = 0;
    if (r->kind_case == REFEX__V1__FRAME__KIND_REJECTED) {
        assert_memory_equal(r->rejected->message_id.data, id, 16);
        code = (int)r->rejected->code;
    } else {
        assert_memory_equal(r->stored->message_id.data, id, 16);
    }
    refex_frame_free(&r);
    return code;
}

static refex_directory *load_directory(void)
{
    char file[600], err[512];
    refex_directory *d = NULL;
    h_path(&g_net, file, sizeof file, "directory.rdir");
    assert_ok(refex_directory_load(file, NULL, &d, err, sizeof err));
    return d;
}

/* Case C-ROT-1 led by social care with midwifery a member, subscribed to its updates. */
static void open_case(void)
{
    const char *open[] = {"case", "open", "--case", CASE, NULL};
    const char *grant[] = {"case", "grant", "--case", CASE, "--member", "midwifery", NULL};
    const char *sub[] = {"case", "subscribe", "--case", CASE, NULL};
    cli_ok("social-care", open);
    cli_ok("social-care", grant);
    assert_int_equal(h_sql_wait(&g_net, MW_DB, "SELECT count(*) FROM case_grants", 2, H_TIMEOUT_MS),
                     2);
    cli_ok("midwifery", sub);
    assert_int_equal(h_sql_wait(&g_net, SC_DB,
                                "SELECT count(*) FROM case_subscriptions WHERE agency = "
                                "'midwifery'",
                                1, H_TIMEOUT_MS),
                     1);
}

/* The operator's two steps for `who`, then a reload everywhere: serial 2 names its new
 * keys, its old ones accepted for OVERLAP_S seconds. Returns the end of the overlap. */
static int64_t rotate(const char *who)
{
    char keys[600], file[600], pub[600], anchor[600], prev[600], want[128];
    struct stat st;
    h_path(&g_net, keys, sizeof keys, "keys");
    h_path(&g_net, file, sizeof file, "directory.rdir");
    h_path(&g_net, pub, sizeof pub, "keys/%s.public", who);
    h_path(&g_net, anchor, sizeof anchor, "keys/operator.secret");
    h_path(&g_net, prev, sizeof prev, "keys/%s.previous.secret", who);
    const char *kr[] = {"keys", "rotate", "--agency", who, "--out", keys, NULL};
    cli_ok(NULL, kr);
    assert_int_equal(stat(prev, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* A second rotation before the first is over is refused, and changes nothing. */
    char out[4096], cur[600];
    uint8_t *before = NULL, *after = NULL;
    size_t blen = 0, alen = 0;
    h_path(&g_net, cur, sizeof cur, "keys/%s.secret", who);
    assert_ok(refex_file_read(cur, 1u << 16, &before, &blen));
    assert_int_equal(h_cli(&g_net, out, sizeof out, kr), 4);
    assert_non_null(strstr(out, "still in progress"));
    assert_ok(refex_file_read(cur, 1u << 16, &after, &alen));
    assert_int_equal(alen, blen);
    assert_memory_equal(after, before, blen);
    free(before);
    free(after);
    const char *dr[] = {"directory", "rotate",    "--file",  file, "--keys",
                        pub,         "--overlap", OVERLAP_S, NULL};
    cli_ok(NULL, dr);
    const char *sign[] = {"directory", "sign", "--file", file, "--anchor", anchor, NULL};
    cli_ok(NULL, sign);
    reload(&g_net.broker, "RELOADED 2");
    reload(agent_proc("social-care"), "RELOADED 2");
    reload(agent_proc("midwifery"), "RELOADED 2");
    snprintf(want, sizeof want, "the directory names new keys for %s", who);
    wait_log(who, want, H_TIMEOUT_MS);
    refex_directory *d = load_directory();
    const refex_agency *mw = refex_directory_find(d, who);
    assert_true(mw->has_prev);
    int64_t until = mw->prev_until_ms;
    refex_directory_destroy(&d);
    return until;
}

/* The broker's keys are pinned by every agent: neither step rotates them. */
static void refuse_broker_rotation(void)
{
    char keys[600], file[600], pub[600], out[4096];
    h_path(&g_net, keys, sizeof keys, "keys");
    h_path(&g_net, file, sizeof file, "directory.rdir");
    h_path(&g_net, pub, sizeof pub, "keys/broker.public");
    const char *kr[] = {"keys", "rotate", "--agency", "broker", "--out", keys, NULL};
    assert_int_equal(h_cli(&g_net, out, sizeof out, kr), 4);
    assert_non_null(strstr(out, "pinned"));
    const char *dr[] = {"directory", "rotate", "--file", file, "--keys", pub, NULL};
    assert_int_equal(h_cli(&g_net, out, sizeof out, dr), 4);
    assert_non_null(strstr(out, "pinned"));
}

/* A case update by `from`, and the one case update the other party then holds (in db). */
static void publish_and_wait(const char *from, const char *summary, const char *practitioner,
                             const char *db)
{
    const char *args[] = {
        "case",       "publish",         "--case",         CASE,
        "--type",     "other",           "--summary",      summary,
        "--article6", "public-task",     "--article9",     "substantial-public-interest",
        "--purpose",  "case-management", "--practitioner", practitioner,
        NULL};
    cli_ok(from, args);
    assert_int_equal(h_sql_wait(&g_net, db, "SELECT count(*) FROM inbox WHERE type = 'CASE_UPDATE'",
                                1, H_TIMEOUT_MS),
                     1);
}

static void test_rotation(void **state)
{
    (void)state;
    char id[33];
    refuse_broker_rotation();
    open_case();
    int64_t until = rotate("midwifery");

    /* Inside the overlap: the agent on its old keys is still admitted, and what it signs
     * verifies at the broker and at social care, which receipts it. */
    assert_true(agent_online("midwifery"));
    assert_int_equal(h_send_json(&g_net, "midwifery", "social-care", "referral",
                                 h_required("referral", json_object()), id),
                     0);
    assert_int_equal(h_sql_wait(&g_net, SC_DB, "SELECT count(*) FROM inbox", 1, H_TIMEOUT_MS), 1);
    assert_int_equal(h_sql_wait(&g_net, MW_DB,
                                "SELECT count(*) FROM receipts WHERE code = 0 AND recipient = "
                                "'social-care'",
                                1, H_TIMEOUT_MS),
                     1);
    /* What social care now seals to midwifery's new key opens at the agent still running on
     * its old keys: the reload loaded the new set from disk to decrypt with. */
    wait_log("midwifery", "holding the new keys from disk", H_TIMEOUT_MS);
    assert_int_equal(h_send_json(&g_net, "social-care", "midwifery", "referral",
                                 h_required("referral", json_object()), id),
                     0);
    assert_int_equal(h_sql_wait(&g_net, MW_DB,
                                "SELECT count(*) FROM inbox WHERE sender = 'social-care'", 1,
                                H_TIMEOUT_MS),
                     1);
    if (refex_now_ms() >= until)
        fail_msg("the overlap ended before its checks were done (machine too slow?)");

    /* The overlap ends: the broker ends the old key's session (the agent goes offline),
     * and ZAP refuses a new handshake with the old key. */
    wait_log("broker", "ending the session of midwifery: agency's previous transport key",
             (int)(until - refex_now_ms()) + H_TIMEOUT_MS);
    assert_false(agent_online("midwifery"));
    h_stop(agent_proc("midwifery"));

    /* After it, at the signature level: with the new transport key admitted, an envelope
     * signed with the old key is refused, one signed with the new key stored. */
    refex_keys *oldk = load_keys("keys/midwifery.previous.secret");
    h_client c;
    assert_int_equal(h_client_open(&c, &g_net, "midwifery", oldk), 0);
    assert_true(h_client_wait_event(&c, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, H_TIMEOUT_MS));
    h_client_close(&c); /* frees oldk */
    wait_log("broker", "zap: denied midwifery: agency's previous transport key", H_TIMEOUT_MS);
    oldk = load_keys("keys/midwifery.previous.secret");
    refex_keys *newk = load_keys("keys/midwifery.secret");
    assert_int_equal(h_client_open(&c, &g_net, "midwifery", newk), 0);
    assert_int_equal(h_client_hello(&c, "midwifery"), 0);
    refex_directory *d = load_directory();
    uint8_t mid[16];
    Refex__V1__Envelope *e =
        sealed("midwifery", oldk->sk->sign_sk, refex_directory_find(d, "social-care"), mid);
    assert_int_equal(send_envelope(&c, e, mid), REFEX_E_REVOKED);
    refex__v1__envelope__free_unpacked(e, NULL);
    e = sealed("midwifery", newk->sk->sign_sk, refex_directory_find(d, "social-care"), mid);
    assert_int_equal(send_envelope(&c, e, mid), 0);
    refex__v1__envelope__free_unpacked(e, NULL);
    assert_int_equal(h_sql_wait(&g_net, SC_DB, "SELECT count(*) FROM inbox", 2, H_TIMEOUT_MS), 2);
    h_client_close(&c); /* frees newk */
    refex_keys_destroy(&oldk);

    /* While midwifery is away, police seals a referral to its previous encryption key (a
     * sender whose directory was older would). */
    refex_agency stale = *refex_directory_find(d, "midwifery");
    memcpy(stale.enc_pk, stale.prev_enc_pk, 32);
    refex_keys *pk = load_keys("keys/police.secret");
    assert_int_equal(h_client_open(&c, &g_net, "police", pk), 0);
    assert_int_equal(h_client_hello(&c, "police"), 0);
    e = sealed("police", pk->sk->sign_sk, &stale, mid);
    assert_int_equal(send_envelope(&c, e, mid), 0);
    refex__v1__envelope__free_unpacked(e, NULL);
    h_client_close(&c);
    refex_directory_destroy(&d);

    /* Restarted, the agent runs on its new keys, opens what was sealed to its previous
     * key, and signs its subscription again so it verifies now the overlap is over. */
    long long serial = h_sql_int(
        &g_net, SC_DB, "SELECT serial FROM case_subscriptions WHERE agency = 'midwifery'");
    assert_int_equal(h_net_start_agent(&g_net, "midwifery"), 0);
    assert_int_equal(h_sql_wait(&g_net, MW_DB, "SELECT count(*) FROM inbox WHERE sender = 'police'",
                                1, H_TIMEOUT_MS),
                     1);
    assert_int_equal(h_sql_wait(&g_net, MW_DB,
                                "SELECT count(*) FROM audit WHERE event = 'subscribe' AND "
                                "outcome LIKE 'success: signed again%'",
                                1, H_TIMEOUT_MS),
                     1);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM case_subscriptions WHERE agency = 'midwifery' AND serial > %lld",
             serial);
    assert_int_equal(h_sql_wait(&g_net, SC_DB, sql, 1, H_TIMEOUT_MS), 1);
    publish_and_wait("social-care", "home visit arranged", "SW-ROT-1", MW_DB);
    /* The auditor verifies the whole log, checkpoints from before the rotation and after,
     * with both public keys; `keys rotate` kept the old one as midwifery.previous.public. */
    char db[600], newpub[600], oldpub[600], vout[4096];
    h_path(&g_net, db, sizeof db, "data/midwifery/agent.db");
    h_path(&g_net, newpub, sizeof newpub, "keys/midwifery.public");
    h_path(&g_net, oldpub, sizeof oldpub, "keys/midwifery.previous.public");
    const char *verify[] = {"audit", "verify", "--db", db, "--key", newpub, "--key", oldpub, NULL};
    if (h_cli(&g_net, vout, sizeof vout, verify) != 0)
        fail_msg("audit verify with both keys: %s", vout);
    assert_non_null(strstr(vout, "intact"));
    const char *only_new[] = {"audit", "verify", "--db", db, "--key", newpub, NULL};
    assert_int_equal(h_cli(&g_net, vout, sizeof vout, only_new), 1);
    assert_non_null(strstr(vout, "not signed by midwifery's key"));
    /* And what it sends now is signed with the new key and accepted. */
    assert_int_equal(h_send_json(&g_net, "midwifery", "social-care", "referral",
                                 h_required("referral", json_object()), id),
                     0);
    assert_int_equal(h_sql_wait(&g_net, SC_DB, "SELECT count(*) FROM inbox", 3, H_TIMEOUT_MS), 3);
    /* The witness took midwifery's checkpoints under either key. */
    assert_log_lacks("broker", "checkpoint from midwifery refused");
    assert_true(h_alive(&g_net.broker));
    assert_true(h_alive(agent_proc("social-care")));
}

/* The case's lead rotates: restarted on its new keys after the overlap, it signs its grants
 * again, so members still count as members (their copies verify) and updates flow both
 * ways. */
static void test_lead_rotation(void **state)
{
    (void)state;
    open_case();
    long long serial =
        h_sql_int(&g_net, MW_DB, "SELECT serial FROM case_grants WHERE member = 'midwifery'");
    int64_t until = rotate("social-care");
    wait_log("broker", "ending the session of social-care: agency's previous transport key",
             (int)(until - refex_now_ms()) + H_TIMEOUT_MS);
    h_stop(agent_proc("social-care"));
    assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM case_grants WHERE member = 'midwifery' AND serial > %lld",
             serial);
    assert_int_equal(h_sql_wait(&g_net, MW_DB, sql, 1, H_TIMEOUT_MS), 1);
    wait_log("social-care", "signed again with the current key", H_TIMEOUT_MS);
    publish_and_wait("social-care", "strategy meeting booked", "SW-ROT-2", MW_DB);
    publish_and_wait("midwifery", "antenatal appointment attended", "MW-ROT-2", SC_DB);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lead_rotation, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
