/* End-to-end test of a message the broker lost, with real processes: the broker is stopped
 * cleanly and its queue.db copied aside, a message with a short ttl is stored while its
 * recipient is offline, the broker is killed and the old copy put back (the message is gone
 * from it), and once the expiry has passed and the broker is back, the sender's agent (with
 * report_grace_seconds = 1) shows it as expired, no report, has logged an ALERT line and
 * audited a no-report entry, and is still running. A message delivered and receipted in
 * time with the same short ttl is never flagged, and a report_grace_seconds outside 1..86400
 * stops the agent at start with a line saying so. Waits poll observable state (or the clock
 * for the expiry) with deadlines; nothing sleeps for a fixed time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../unit/testing.h"
#include "harness.h"
#include "util.h"

#define SENDER_DB "data/midwifery/agent.db"
#define OUT_MAX   (64 * 1024)

static h_net g_net;
static char g_out[OUT_MAX];

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

/* The broker, then midwifery's agent (report_grace_seconds = 1), and social-care's if
 * with_recipient. The broker's first start picks the port; a restart pins it. */
static void net_up(int with_recipient)
{
    static const char *const agencies[] = {"midwifery", "social-care", NULL};
    char path[600];
    assert_int_equal(h_net_init(&g_net, agencies, NULL, NULL), 0);
    assert_int_equal(h_net_start_broker(&g_net), 0);
    /* The agents' configs are written by the broker's start; the agent reads its own once. */
    h_path(&g_net, path, sizeof path, "conf/midwifery.conf");
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs("report_grace_seconds = 1\n", f);
    fclose(f);
    assert_int_equal(h_net_start_agent(&g_net, "midwifery"), 0);
    if (with_recipient)
        assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
}

/* A referral to social-care with ttl_seconds 2, waiting for STORED; its id into id. */
static void send_short_lived(char id[33])
{
    json_t *body =
        h_required("referral", json_pack("{s:s, s:{s:s, s:i}, s:s}", "kind", "REFERRAL_PRE_BIRTH",
                                         "subject", "reference", "UB-LOST-0001", "gestation_weeks",
                                         12, "summary", "synthetic referral the broker will lose"));
    json_t *req = json_pack("{s:s, s:[s], s:s, s:o, s:b, s:i}", "cmd", "send", "to", "social-care",
                            "type", "referral", "body", body, "wait", 1, "ttl_seconds", 2);
    json_t *r = h_control(&g_net, "midwifery", req);
    json_decref(req);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(json_string_value(json_object_get(r, "state")), "stored");
    snprintf(id, 33, "%s", json_string_value(json_object_get(r, "message_id")));
    json_decref(r);
}

/* The message's expiry as the sender's outbox holds it. */
static long long expires_ms(const char *id)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT expires_ms FROM outbox WHERE message_id = '%s'", id);
    long long v = h_sql_int(&g_net, SENDER_DB, sql);
    assert_true(v > 0);
    return v;
}

/* Polls the wall clock until it is past ms. */
static void wait_until_past(long long ms)
{
    while (refex_now_ms() <= ms)
        h_pause();
}

/* `refex status ID --json` from the sender, parsed. */
static json_t *status_json(const char *id)
{
    const char *args[] = {"status", id, "--json", NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", g_out, OUT_MAX, args), 0);
    json_error_t e;
    json_t *j = json_loads(g_out, 0, &e);
    if (!j)
        fail_msg("status --json: not JSON: %s", g_out);
    return j;
}

/* Polls the sender's status of id until its state is want (20 s at most). */
static json_t *wait_state(const char *id, const char *want)
{
    int64_t deadline = refex_mono_ms() + 20000;
    for (;;) {
        json_t *j = status_json(id);
        if (strcmp(json_string_value(json_object_get(j, "state")), want) == 0)
            return j;
        if (refex_mono_ms() > deadline)
            fail_msg("status of %s stays '%s', not '%s'", id,
                     json_string_value(json_object_get(j, "state")), want);
        json_decref(j);
        h_pause();
    }
}

static int sender_log_has(const char *needle)
{
    char path[600];
    h_path(&g_net, path, sizeof path, "logs/midwifery.log");
    return h_tree_contains(path, needle, strlen(needle));
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    char buf[65536];
    size_t n;
    assert_non_null(in);
    assert_non_null(out);
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static void test_lost_message_expires_with_no_report(void **state)
{
    (void)state;
    char queue[600], old[600], wal[600], shm[600], id[33], needle[200];
    int mw = (net_up(0), h_agent_index(&g_net, "midwifery"));
    h_path(&g_net, queue, sizeof queue, "data/broker/queue.db");
    h_path(&g_net, old, sizeof old, "queue-before.db");
    h_path(&g_net, wal, sizeof wal, "data/broker/queue.db-wal");
    h_path(&g_net, shm, sizeof shm, "data/broker/queue.db-shm");
    /* Pin the broker's port, then stop it cleanly (its WAL checkpointed) and keep a copy. */
    assert_int_equal(h_net_restart_broker(&g_net), 0);
    h_stop(&g_net.broker);
    copy_file(queue, old);
    assert_int_equal(h_net_start_broker(&g_net), 0);
    char line[256];
    assert_int_equal(h_wait_line(&g_net.agents[mw], "READY ", H_TIMEOUT_MS, line, sizeof line), 0);

    /* Stored while social-care is offline; then the broker loses it. */
    send_short_lived(id);
    long long expiry = expires_ms(id);
    h_kill9(&g_net.broker);
    assert_int_equal(rename(old, queue), 0);
    unlink(wal);
    unlink(shm);
    wait_until_past(expiry);
    assert_int_equal(h_net_start_broker(&g_net), 0);

    json_t *j = wait_state(id, "expired_no_report");
    json_t *nr = json_object_get(j, "no_report");
    assert_int_equal(json_array_size(nr), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(nr, 0), "recipient")),
                        "social-care");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(nr, 0), "expires_ms")),
                     expiry);
    assert_int_equal(json_array_size(json_object_get(j, "receipts")), 0);
    json_decref(j);

    /* The human form. */
    const char *args[] = {"status", id, NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", g_out, OUT_MAX, args), 0);
    assert_non_null(strstr(g_out, "state      expired, no report: neither a receipt nor a "
                                  "non-delivery report came for 1 recipient(s) by "));
    assert_non_null(strstr(g_out, "the broker may have lost it"));
    assert_non_null(strstr(g_out, "social-care          EXPIRED, NO REPORT (expired "));

    /* The ALERT line, once, and the audit entry, once. */
    snprintf(needle, sizeof needle, "ALERT outbox: message %s to social-care expired at ", id);
    assert_true(sender_log_has(needle));
    assert_true(sender_log_has("with neither a receipt nor a non-delivery report; the broker "
                               "may have lost it"));
    const char *audit[] = {"audit",   "query",     "--message", id,
                           "--event", "no-report", "--json",    NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", g_out, OUT_MAX, audit), 0);
    json_error_t e;
    json_t *entries = json_loads(g_out, 0, &e);
    assert_non_null(entries);
    assert_int_equal(json_array_size(entries), 1);
    json_t *en = json_array_get(entries, 0);
    assert_string_equal(json_string_value(json_object_get(en, "outcome")), "expired");
    assert_string_equal(json_string_value(json_object_get(en, "peer")), "social-care");
    json_decref(entries);

    /* The referral listing says so too, and the agent is still running and connected. */
    const char *refs[] = {"referrals", NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", g_out, OUT_MAX, refs), 0);
    assert_non_null(strstr(g_out, "expired, no report"));
    assert_true(h_alive(&g_net.agents[mw]));
    const char *st[] = {"status", NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", g_out, OUT_MAX, st), 0);
}

static void test_delivered_message_never_flagged(void **state)
{
    (void)state;
    char id[33], sql[200];
    net_up(1);
    send_short_lived(id);
    json_t *j = NULL;
    int64_t deadline = refex_mono_ms() + 20000;
    while (json_array_size(json_object_get(j, "receipts")) == 0 && refex_mono_ms() < deadline) {
        json_decref(j);
        h_pause();
        j = status_json(id);
    }
    assert_int_equal(json_array_size(json_object_get(j, "receipts")), 1);
    json_decref(j);
    snprintf(sql, sizeof sql, "SELECT closed FROM outbox WHERE message_id = '%s'", id);
    assert_int_equal(h_sql_int(&g_net, SENDER_DB, sql), 1); /* nothing more is awaited */
    /* Past its expiry and the grace, with the sweep running (it is online): still delivered. */
    wait_until_past(expires_ms(id) + 3000);
    j = status_json(id);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "stored");
    assert_int_equal(json_array_size(json_object_get(j, "no_report")), 0);
    json_decref(j);
    const char *args[] = {"status", id, NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", g_out, OUT_MAX, args), 0);
    assert_non_null(strstr(g_out, "social-care          delivered "));
    assert_false(sender_log_has("ALERT outbox"));
    assert_int_equal(h_sql_int(&g_net, SENDER_DB, "SELECT count(*) FROM no_reports"), 0);
}

/* report_grace_seconds outside 1..86400, or not a number: the agent does not start, and
 * says why; the bounds themselves are accepted (-n: check the configuration and exit). */
static void test_report_grace_checked(void **state)
{
    (void)state;
    static const char *const bad[] = {"0", "86401", "soon", "-5"};
    static const char *const good[] = {"1", "86400"};
    char conf[600], path[600], exe[1100], out[8192], text[4096];
    net_up(0);
    h_path(&g_net, conf, sizeof conf, "conf/social-care.conf");
    h_path(&g_net, path, sizeof path, "conf/bad-grace.conf");
    FILE *f = fopen(conf, "r");
    assert_non_null(f);
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    snprintf(exe, sizeof exe, "%s/refex-agent", g_net.bin);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0] + sizeof good / sizeof good[0]; i++) {
        int ok = i >= sizeof bad / sizeof bad[0];
        const char *v = ok ? good[i - sizeof bad / sizeof bad[0]] : bad[i];
        f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "%sreport_grace_seconds = %s\n", text, v);
        fclose(f);
        char *argv[] = {exe, "-n", "-c", path, NULL};
        int rc = h_run(argv, out, sizeof out);
        if (ok ? rc != 0
               : rc == 0 || !strstr(out, "report_grace_seconds must be between 1 and "
                                         "86400"))
            fail_msg("report_grace_seconds = %s: exit %d: %s", v, rc, out);
    }
    assert_true(h_alive(&g_net.agents[h_agent_index(&g_net, "midwifery")]));
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_lost_message_expires_with_no_report, teardown),
        cmocka_unit_test_teardown(test_delivered_message_never_flagged, teardown),
        cmocka_unit_test_teardown(test_report_grace_checked, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
