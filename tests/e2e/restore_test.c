/* End-to-end tests of a broker whose store goes backwards after it answered STORED, with
 * real processes: restarted on a copy of its store taken before the last messages, or after
 * losing its WAL. The sender's outbox is the truth until a receipt comes: on the broker's
 * WELCOME it sees the store no longer holds what it stored, sends those messages again, and
 * every one arrives exactly once, with no operator action. A store file that lost its
 * tables altogether (its WAL lost before the first checkpoint) is refused, typed, until the
 * broker is started with --init-store; then the same happens. Waits poll observable state
 * with deadlines; nothing sleeps for a fixed time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../unit/testing.h"
#include "harness.h"
#include "util.h"

#define QUEUE     "data/broker/queue.db"
#define SENDER_DB "data/midwifery/agent.db"
#define INBOX_DB  "data/social-care/agent.db"
#define WAIT_MS   120000
#define N_EARLY   3   /* delivered and receipted before the copy */
#define N_LOST    100 /* answered STORED after it */

static h_net g_net;

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

/* One synthetic referral from midwifery to social-care, queued (not waited for). */
static void send_one(int seq)
{
    char summary[96], id[33];
    snprintf(summary, sizeof summary, "synthetic restore referral %d", seq);
    json_t *body =
        h_required("referral",
                   json_pack("{s:s, s:{s:s, s:i}, s:s}", "kind", "REFERRAL_PRE_BIRTH", "subject",
                             "reference", "UB-RESTORE", "gestation_weeks", 12, "summary", summary));
    assert_int_equal(h_send_json(&g_net, "midwifery", "social-care", "referral", body, id), 0);
}

static long long wait_count(const char *db, const char *sql, long long want)
{
    return h_sql_wait(&g_net, db, sql, want, WAIT_MS);
}

static void file_path(char *buf, size_t len, const char *rel)
{
    h_path(&g_net, buf, len, "%s", rel);
}

/* A consistent copy of the live store, as a backup tool would take it (the online backup
 * API: the broker keeps running and writing). */
static void copy_store(const char *to_rel)
{
    char from[700], to[700];
    sqlite3 *src = NULL, *dst = NULL;
    file_path(from, sizeof from, QUEUE);
    file_path(to, sizeof to, to_rel);
    assert_int_equal(sqlite3_open_v2(from, &src, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_open(to, &dst), SQLITE_OK);
    sqlite3_busy_timeout(src, 5000);
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    assert_non_null(b);
    assert_int_equal(sqlite3_backup_step(b, -1), SQLITE_DONE);
    assert_int_equal(sqlite3_backup_finish(b), SQLITE_OK);
    sqlite3_close(dst);
    sqlite3_close(src);
}

/* The WAL and its index go, as after a restore or a lost file. */
static void drop_wal(void)
{
    char p[720];
    file_path(p, sizeof p, QUEUE "-wal");
    unlink(p);
    file_path(p, sizeof p, QUEUE "-shm");
    unlink(p);
}

static void start_net(void)
{
    static const char *const agencies[] = {"midwifery", "social-care", NULL};
    assert_int_equal(h_net_up(&g_net, agencies, NULL, "redeliver_seconds = 3"), 0);
}

/* N_EARLY messages delivered and receipted; then social-care goes offline. */
static void early_traffic(void)
{
    for (int i = 0; i < N_EARLY; i++)
        send_one(i);
    assert_int_equal(wait_count(SENDER_DB, "SELECT count(*) FROM receipts WHERE code = 0", N_EARLY),
                     N_EARLY);
    h_stop(&g_net.agents[h_agent_index(&g_net, "social-care")]);
}

/* N_LOST more, every one answered STORED (social-care offline: none delivered). */
static void lost_traffic(void)
{
    for (int i = N_EARLY; i < N_EARLY + N_LOST; i++)
        send_one(i);
    assert_int_equal(wait_count(SENDER_DB, "SELECT count(*) FROM outbox WHERE state = 'stored'",
                                N_EARLY + N_LOST),
                     N_EARLY + N_LOST);
}

/* social-care back: everything arrives exactly once and every message is receipted. */
static void all_arrive_once(void)
{
    const long long all = N_EARLY + N_LOST;
    assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
    assert_int_equal(wait_count(INBOX_DB, "SELECT count(*) FROM inbox", all), all);
    assert_int_equal(wait_count(SENDER_DB, "SELECT count(*) FROM receipts WHERE code = 0", all),
                     all);
    assert_int_equal(h_sql_int(&g_net, INBOX_DB, "SELECT count(DISTINCT message_id) FROM inbox"),
                     all);
    assert_int_equal(
        h_sql_int(&g_net, INBOX_DB, "SELECT count(*) FROM audit WHERE event = 'receive'"), all);
    assert_int_equal(h_sql_int(&g_net, SENDER_DB,
                               "SELECT count(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 FROM"
                               " receipts r WHERE r.message_id = o.message_id)"),
                     0);
    assert_int_equal(
        h_sql_int(&g_net, SENDER_DB, "SELECT count(*) FROM audit WHERE event = 'send'"), all);
    /* still running, both */
    assert_true(h_alive(&g_net.broker));
    assert_true(h_alive(&g_net.agents[h_agent_index(&g_net, "midwifery")]));
}

static int log_has(const h_proc *p, const char *needle)
{
    return h_tree_contains(p->log, needle, strlen(needle));
}

/* Acceptance: a broker restarted on a copy of its store taken before the last 100 STORED
 * answers; all 100 arrive exactly once with no action by an operator. */
static void test_restarted_on_older_copy(void **state)
{
    (void)state;
    start_net();
    early_traffic();
    copy_store("data/broker/queue.copy");
    lost_traffic();
    h_kill9(&g_net.broker);
    char from[700], to[700];
    file_path(from, sizeof from, "data/broker/queue.copy");
    file_path(to, sizeof to, QUEUE);
    assert_int_equal(rename(from, to), 0);
    drop_wal();
    assert_int_equal(h_net_restart_broker(&g_net), 0);
    all_arrive_once();
    assert_true(log_has(&g_net.broker, "store: behind what midwifery was told"));
    const h_proc *mw = &g_net.agents[h_agent_index(&g_net, "midwifery")];
    assert_true(log_has(mw, "no longer holds 100 message(s)")); /* not the receipted ones */
}

/* The WAL lost after answering STORED, the store file having been checkpointed before (a
 * clean restart): the broker starts on the older file by itself; all arrive once. */
static void test_wal_lost_after_checkpoint(void **state)
{
    (void)state;
    start_net();
    early_traffic();
    assert_int_equal(h_net_restart_broker(&g_net), 0); /* clean stop: WAL checkpointed */
    lost_traffic();
    h_kill9(&g_net.broker);
    drop_wal();
    assert_int_equal(h_net_restart_broker(&g_net), 0);
    all_arrive_once();
    assert_true(log_has(&g_net.agents[h_agent_index(&g_net, "midwifery")],
                        "no longer holds 100 message(s)"));
}

/* The WAL lost before the store was ever checkpointed: the file has no tables. The broker
 * refuses it (typed, exit 2, nothing changed) rather than making empty ones; started with
 * --init-store it begins a new generation and the agents send everything again. */
static void test_wal_lost_before_any_checkpoint(void **state)
{
    (void)state;
    start_net();
    h_stop(&g_net.agents[h_agent_index(&g_net, "social-care")]);
    for (int i = 0; i < N_LOST; i++)
        send_one(i);
    assert_int_equal(
        wait_count(SENDER_DB, "SELECT count(*) FROM outbox WHERE state = 'stored'", N_LOST),
        N_LOST);
    h_kill9(&g_net.broker);
    drop_wal();
    assert_int_not_equal(h_net_restart_broker(&g_net), 0);
    assert_int_equal(h_wait_exit(&g_net.broker, H_TIMEOUT_MS), 2);
    assert_true(log_has(&g_net.broker, "E_STORE"));
    assert_true(log_has(&g_net.broker, "lacks tables a store has"));
    assert_int_equal(h_sql_int(&g_net, QUEUE, "SELECT count(*) FROM sqlite_schema"), 0);

    assert_int_equal(h_net_restart_broker_with(&g_net, "--init-store"), 0);
    assert_true(log_has(&g_net.broker, "initialised as a new store"));
    assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
    assert_int_equal(wait_count(INBOX_DB, "SELECT count(*) FROM inbox", N_LOST), N_LOST);
    assert_int_equal(wait_count(SENDER_DB, "SELECT count(*) FROM receipts WHERE code = 0", N_LOST),
                     N_LOST);
    assert_int_equal(h_sql_int(&g_net, INBOX_DB, "SELECT count(DISTINCT message_id) FROM inbox"),
                     N_LOST);
    assert_true(log_has(&g_net.agents[h_agent_index(&g_net, "midwifery")],
                        "no longer holds 100 message(s)"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_restarted_on_older_copy, teardown),
        cmocka_unit_test_teardown(test_wal_lost_after_checkpoint, teardown),
        cmocka_unit_test_teardown(test_wal_lost_before_any_checkpoint, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
