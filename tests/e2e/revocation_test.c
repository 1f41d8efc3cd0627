/* End-to-end tests of revocation and directory rollback, with real processes (issue 11,
 * item 6). An agency revoked in the directory, re-signed and SIGHUPed into the broker is cut
 * off within a second: its session ends with an ERROR E_REVOKED, its agent shows offline,
 * every later frame on its connection is refused E_REVOKED and a new handshake is refused by
 * ZAP. A connection admitted under a transport key the directory has since replaced is
 * refused the same way. A daemon restarted on an older signed directory than one it has
 * accepted refuses to start (exit 2, both serials named); a damaged directory.serial too, and
 * a directory with the serial accepted but other bytes (at start and on reload).
 * Waits are on readiness lines and replies, with deadlines; nothing sleeps for a fixed
 * time. */
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
#include "codec.h"
#include "directory.h"
#include "harness.h"
#include "util.h"

#define CUT_OFF_MS 1000 /* the acceptance bound: revoked and disconnected within a second */

static h_net g_net;

static int setup(void **state)
{
    (void)state;
    const char *agents[] = {"midwifery", "social-care", NULL};
    const char *listed[] = {"police", "probation", NULL};
    return h_net_up(&g_net, agents, listed, NULL);
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

static void copy_file(const char *from, const char *to)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    assert_ok(refex_file_read(from, 1u << 22, &bytes, &len));
    assert_ok(refex_file_write(to, bytes, len, 0644));
    free(bytes);
}

static void cli_ok(const char *const *args)
{
    char out[4096];
    if (h_cli(&g_net, out, sizeof out, args) != 0)
        fail_msg("refex %s %s failed: %s", args[0], args[1], out);
}

/* The agent's own view of its link, from `status` on its control socket. */
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

/* The next frame on a raw connection is an ERROR with code, within timeout_ms. */
static void expect_error(h_client *c, int code, int timeout_ms)
{
    Refex__V1__Frame *f = h_client_recv(c, timeout_ms > 0 ? timeout_ms : 1);
    if (!f)
        fail_msg("no frame within %d ms (expected ERROR %s)", timeout_ms, refex_errname(code));
    if (f->kind_case != REFEX__V1__FRAME__KIND_ERROR)
        fail_msg("got %s, expected ERROR %s", refex_frame_kind_name(f), refex_errname(code));
    int got = (int)f->error->code;
    refex_frame_free(&f);
    assert_int_equal(got, code);
}

static void send_kind(h_client *c, const char *agency, Refex__V1__Frame__KindCase kind)
{
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Hello h = REFEX__V1__HELLO__INIT;
    Refex__V1__Ping p = REFEX__V1__PING__INIT;
    f.kind_case = kind;
    if (kind == REFEX__V1__FRAME__KIND_HELLO) {
        h.agency = (char *)agency;
        h.software = "refex-e2e";
        f.hello = &h;
    } else {
        p.nonce = 7;
        f.ping = &p;
    }
    assert_int_equal(h_client_send(c, &f), 0);
}

static void assert_log_has(const char *who, const char *needle)
{
    char log[600];
    h_path(&g_net, log, sizeof log, "logs/%s.log", who);
    if (!h_tree_contains(log, needle, strlen(needle)))
        fail_msg("%s has no line '%s'", log, needle);
}

/* The operator's edit: social-care and police revoked, probation given a new transport key
 * (its new keys under newkeys), the directory signed again (serial 2). */
static void revoke_and_rekey(const char *file, const char *newkeys, const char *anchor)
{
    char pub[600];
    assert_int_equal(mkdir(newkeys, 0700), 0);
    const char *kn[] = {"keys",      "new",   "--agency", "probation", "--role",
                        "probation", "--out", newkeys,    NULL};
    cli_ok(kn);
    h_path(&g_net, pub, sizeof pub, "newkeys/probation.public");
    const char *rekey[] = {"directory", "add", "--file", file, "--keys", pub, "--replace", NULL};
    cli_ok(rekey);
    const char *who[] = {"social-care", "police"};
    for (int i = 0; i < 2; i++) {
        h_path(&g_net, pub, sizeof pub, "keys/%s.public", who[i]);
        const char *rv[] = {"directory", "add",       "--file",    file, "--keys",
                            pub,         "--replace", "--revoked", NULL};
        cli_ok(rv);
    }
    const char *sign[] = {"directory", "sign", "--file", file, "--anchor", anchor, NULL};
    cli_ok(sign);
}

/* Revokes social-care and police, replaces probation's transport key, re-signs, SIGHUPs the
 * broker: each is cut off within a second of the signal. */
static void test_revoked_agency_cut_off(void **state)
{
    (void)state;
    char file[600], anchor[600], old[600], newkeys[600], line[128];
    h_path(&g_net, file, sizeof file, "directory.rdir");
    h_path(&g_net, old, sizeof old, "directory.serial1");
    h_path(&g_net, anchor, sizeof anchor, "keys/operator.secret");
    h_path(&g_net, newkeys, sizeof newkeys, "newkeys");
    copy_file(file, old);
    assert_true(agent_online("social-care"));

    /* police: a session open before the reload. probation: connected under its old key,
     * no HELLO yet: the reload comes between its handshake and its first frame. */
    h_client police, probation;
    assert_int_equal(h_client_open(&police, &g_net, "police", NULL), 0);
    assert_int_equal(h_client_hello(&police, "police"), 0);
    assert_int_equal(h_client_open(&probation, &g_net, "probation", NULL), 0);
    assert_true(h_client_wait_event(&probation, ZMQ_EVENT_HANDSHAKE_SUCCEEDED, H_TIMEOUT_MS));

    revoke_and_rekey(file, newkeys, anchor);

    int64_t t0 = refex_mono_ms();
    assert_int_equal(kill(g_net.broker.pid, SIGHUP), 0);
    assert_int_equal(h_wait_line(&g_net.broker, "RELOAD", CUT_OFF_MS, line, sizeof line), 0);
    assert_string_equal(line, "RELOADED 2");
    /* The open session is ended with word of why, at once. */
    expect_error(&police, REFEX_E_REVOKED, (int)(t0 + CUT_OFF_MS - refex_mono_ms()));
    /* The real agent hears it too and goes offline. */
    while (agent_online("social-care") && refex_mono_ms() - t0 < CUT_OFF_MS)
        h_pause();
    assert_false(agent_online("social-care"));
    assert_true(refex_mono_ms() - t0 < CUT_OFF_MS);

    /* Every later frame on the revoked connection is refused, HELLO first of all. */
    send_kind(&police, "police", REFEX__V1__FRAME__KIND_HELLO);
    expect_error(&police, REFEX_E_REVOKED, H_TIMEOUT_MS);
    send_kind(&police, "police", REFEX__V1__FRAME__KIND_PING);
    expect_error(&police, REFEX_E_REVOKED, H_TIMEOUT_MS);
    h_client_close(&police);
    /* The connection admitted under probation's old key is refused too. */
    send_kind(&probation, "probation", REFEX__V1__FRAME__KIND_HELLO);
    expect_error(&probation, REFEX_E_REVOKED, H_TIMEOUT_MS);
    h_client_close(&probation);

    /* Reconnecting: ZAP refuses the revoked key and probation's old key. */
    assert_int_equal(h_client_open(&police, &g_net, "police", NULL), 0);
    assert_true(h_client_wait_event(&police, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, H_TIMEOUT_MS));
    h_client_close(&police);
    assert_int_equal(h_client_open(&probation, &g_net, "probation", NULL), 0);
    assert_true(h_client_wait_event(&probation, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, H_TIMEOUT_MS));
    h_client_close(&probation);
    /* probation's new key is admitted. */
    refex_keys *k = NULL;
    char sec[600], err[256];
    h_path(&g_net, sec, sizeof sec, "newkeys/probation.secret");
    assert_ok(refex_keys_load(sec, &k, err, sizeof err));
    assert_int_equal(h_client_open(&probation, &g_net, "probation", k), 0);
    assert_int_equal(h_client_hello(&probation, "probation"), 0);
    h_client_close(&probation); /* closes k with the client */

    /* Those still admitted are untouched. */
    assert_true(agent_online("midwifery"));
    assert_true(h_alive(&g_net.broker));
    assert_log_has("broker", "admission: ending the session of social-care: agency revoked");
    assert_log_has("broker", "admission: ending the session of police: agency revoked");
    assert_log_has("broker", "admission: frame from probation refused: agency's transport key "
                             "replaced");
    assert_log_has("social-care", "the broker no longer admits agency social-care");
}

/* After the reload above, the broker and midwifery (reloaded too) have accepted serial 2;
 * started again on the serial-1 file they refuse, naming both serials. */
static void test_older_directory_refused_after_restart(void **state)
{
    (void)state;
    char file[600], old[600], now[600], line[128], serial[600];
    h_path(&g_net, file, sizeof file, "directory.rdir");
    h_path(&g_net, old, sizeof old, "directory.serial1");
    h_path(&g_net, now, sizeof now, "directory.serial2");
    copy_file(file, now);
    int mw = h_agent_index(&g_net, "midwifery");
    assert_true(mw >= 0);
    assert_int_equal(kill(g_net.agents[mw].pid, SIGHUP), 0);
    assert_int_equal(h_wait_line(&g_net.agents[mw], "RELOAD", H_TIMEOUT_MS, line, sizeof line), 0);
    assert_string_equal(line, "RELOADED 2");
    h_path(&g_net, serial, sizeof serial, "data/midwifery/directory.serial");
    assert_true(h_tree_contains(serial, "2 ", 2)); /* the serial, then the file's hash */

    copy_file(old, file);
    assert_int_not_equal(h_net_restart_broker(&g_net), 0);
    assert_int_equal(h_wait_exit(&g_net.broker, H_TIMEOUT_MS), 2);
    assert_log_has("broker", "directory serial 1 is older than serial 2 already accepted");
    h_stop(&g_net.agents[mw]);
    assert_int_not_equal(h_net_start_agent(&g_net, "midwifery"), 0);
    assert_int_equal(h_wait_exit(&g_net.agents[mw], H_TIMEOUT_MS), 2);
    assert_log_has("midwifery", "directory serial 1 is older than serial 2 already accepted");

    /* A damaged directory.serial is refused, not read as 0. */
    copy_file(now, file);
    h_path(&g_net, serial, sizeof serial, "data/broker/directory.serial");
    assert_ok(refex_file_write(serial, "two\n", 4, 0600));
    assert_int_not_equal(h_net_start_broker(&g_net), 0);
    assert_int_equal(h_wait_exit(&g_net.broker, H_TIMEOUT_MS), 2);
    assert_log_has("broker", "directory.serial: not a directory serial");

    /* With the serial restored the broker starts, and still refuses serial 1 on reload. */
    assert_ok(refex_file_write(serial, "2\n", 2, 0600));
    assert_int_equal(h_net_start_broker(&g_net), 0);
    copy_file(old, file);
    assert_int_equal(kill(g_net.broker.pid, SIGHUP), 0);
    assert_int_equal(h_wait_line(&g_net.broker, "RELOAD", H_TIMEOUT_MS, line, sizeof line), 0);
    assert_string_equal(line, "RELOAD_FAILED E_DIRECTORY");
    assert_true(h_alive(&g_net.broker));

    /* Another directory signed from serial 1, so serial 2 with other bytes: refused on
     * reload (the daemon keeps running) and at start. */
    char fork[600], anchor[600], pub[600];
    h_path(&g_net, fork, sizeof fork, "directory.fork");
    h_path(&g_net, anchor, sizeof anchor, "keys/operator.secret");
    h_path(&g_net, pub, sizeof pub, "keys/midwifery.public");
    copy_file(old, fork);
    const char *rv[] = {"directory", "add",       "--file",    fork, "--keys",
                        pub,         "--replace", "--revoked", NULL};
    cli_ok(rv);
    const char *sign[] = {"directory", "sign", "--file", fork, "--anchor", anchor, NULL};
    cli_ok(sign);
    copy_file(fork, file);
    assert_int_equal(kill(g_net.broker.pid, SIGHUP), 0);
    assert_int_equal(h_wait_line(&g_net.broker, "RELOAD", H_TIMEOUT_MS, line, sizeof line), 0);
    assert_string_equal(line, "RELOAD_FAILED E_DIRECTORY");
    assert_log_has("broker", "directory serial 2 differs from the directory already accepted "
                             "with that serial");
    assert_true(h_alive(&g_net.broker));
    assert_int_not_equal(h_net_restart_broker(&g_net), 0);
    assert_int_equal(h_wait_exit(&g_net.broker, H_TIMEOUT_MS), 2);
}

/* An agency whose validity runs out with no reload: its open session is ended within about
 * a second of the moment (the broker's admission tick), with no frame from it needed. */
static void test_validity_lapse_ends_session(void **state)
{
    (void)state;
    char file[600], pub[600], sec[600], err[256], line[128];
    h_path(&g_net, file, sizeof file, "directory.rdir");
    h_path(&g_net, pub, sizeof pub, "keys/operator.public");
    h_path(&g_net, sec, sizeof sec, "keys/operator.secret");
    refex_pubkeys anchor;
    refex_keys *op = NULL;
    refex_directory *d = NULL;
    assert_ok(refex_pubkeys_load(pub, &anchor, err, sizeof err));
    assert_ok(refex_keys_load(sec, &op, err, sizeof err));
    assert_ok(refex_directory_load(file, anchor.sign_pk, &d, err, sizeof err));

    h_client police;
    assert_int_equal(h_client_open(&police, &g_net, "police", NULL), 0);
    assert_int_equal(h_client_hello(&police, "police"), 0);

    refex_agency a = *refex_directory_find(d, "police");
    a.valid_until_ms = refex_now_ms() + 2500;
    assert_ok(refex_directory_add(d, &a, 1));
    assert_ok(refex_directory_sign(d, op->sk->sign_sk));
    assert_ok(refex_directory_save(d, file));
    assert_int_equal(kill(g_net.broker.pid, SIGHUP), 0);
    assert_int_equal(h_wait_line(&g_net.broker, "RELOAD", CUT_OFF_MS, line, sizeof line), 0);
    assert_string_equal(line, "RELOADED 2");

    /* still valid at the reload: nothing yet; then, past valid_until, the session ends */
    expect_error(&police, REFEX_E_REVOKED, 6000);
    int64_t late = refex_now_ms() - a.valid_until_ms;
    printf("validity lapse: session ended %lld ms after valid_until\n", (long long)late);
    assert_true(late >= 0);
    assert_true(late < CUT_OFF_MS + 500);
    h_client_close(&police);
    assert_log_has("broker", "admission: ending the session of police");
    assert_true(agent_online("midwifery"));
    refex_directory_destroy(&d);
    refex_keys_destroy(&op);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_revoked_agency_cut_off),
        cmocka_unit_test(test_older_directory_refused_after_restart),
    };
    const struct CMUnitTest lapse[] = {
        cmocka_unit_test(test_validity_lapse_ends_session),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    return failed + cmocka_run_group_tests(lapse, setup, teardown); /* a network of its own */
}
