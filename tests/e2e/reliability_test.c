/* End-to-end reliability tests with real processes: nothing accepted is ever lost.
 * An offline recipient gets its whole backlog in per-sender order; an undeliverable message
 * expires into a signed non-delivery report; a full broker store refuses with a typed error
 * and catches up once space frees; and a crash storm (kill -9 of the broker and the
 * receiver at random moments) delivers every message exactly once, with a receipt for each.
 * Waits poll observable state with deadlines; nothing sleeps for a fixed time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../unit/testing.h"
#include "harness.h"
#include "util.h"

#define STORM_TIMEOUT_MS 240000

static h_net g_net;

static int start_net(const char *const *agencies, const char *const *listed_only,
                     const char *broker_conf)
{
    if (h_net_init(&g_net, agencies, listed_only, broker_conf) != 0 ||
        h_net_start_broker(&g_net) != 0)
        return -1;
    for (int i = 0; agencies[i]; i++)
        if (h_net_start_agent(&g_net, agencies[i]) != 0)
            return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

/* Sends one referral through an agent's control socket; returns the message id (static
 * buffer) or NULL, and the error name in err if refused. */
static const char *send_one(const char *from, const char *to, int seq, int ttl, int wait,
                            size_t pad, char *err, size_t errlen)
{
    static char id[33];
    char summary[256];
    snprintf(summary, sizeof summary, "synthetic referral number %d", seq);
    json_t *body =
        h_required("referral",
                   json_pack("{s:s, s:{s:s, s:i}, s:s, s:{s:s, s:s}}", "kind", "REFERRAL_PRE_BIRTH",
                             "subject", "reference", "UB-STORM", "gestation_weeks", 12, "summary",
                             summary, "lawful_basis", "article6", "ARTICLE6_PUBLIC_TASK",
                             "article9", "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST"));
    if (pad) {
        char *blob = malloc(pad + 1);
        memset(blob, 'x', pad);
        blob[pad] = 0;
        json_object_set_new(body, "conversation_id", json_string(blob));
        free(blob);
    }
    json_t *req = json_pack("{s:s, s:[s], s:s, s:o, s:b}", "cmd", "send", "to", to, "type",
                            "referral", "body", body, "wait", wait);
    if (ttl)
        json_object_set_new(req, "ttl_seconds", json_integer(ttl));
    json_t *r = h_control(&g_net, from, req);
    json_decref(req);
    const char *out = NULL;
    if (err)
        snprintf(err, errlen, "%s", "no answer");
    if (r && json_is_true(json_object_get(r, "ok"))) {
        snprintf(id, sizeof id, "%s", json_string_value(json_object_get(r, "message_id")));
        out = id;
    } else if (r && err) {
        snprintf(err, errlen, "%s", json_string_value(json_object_get(r, "error")));
        const char *mid = json_string_value(json_object_get(r, "message_id"));
        if (mid) {
            snprintf(id, sizeof id, "%s", mid);
            out = NULL;
        }
    }
    json_decref(r);
    return out;
}

/* Polls an integer query until it reaches want; returns the last value. */
static long long wait_count(const char *db, const char *sql, long long want, int timeout_ms)
{
    int64_t deadline = refex_mono_ms() + timeout_ms;
    long long v = -1;
    while (refex_mono_ms() < deadline) {
        v = h_sql_int(&g_net, db, sql);
        if (v == want)
            return v;
        h_pause();
    }
    return v;
}

/* ---- offline recipient ---------------------------------------------------------------- */

static void test_offline_recipient_gets_backlog_in_order(void **state)
{
    (void)state;
    static const char *const agencies[] = {"midwifery", "social-care", NULL};
    assert_int_equal(start_net(agencies, NULL, NULL), 0);
    h_stop(&g_net.agents[h_agent_index(&g_net, "social-care")]);

    char(*ids)[33] = calloc(1000, sizeof *ids);
    assert_non_null(ids);
    for (int i = 0; i < 1000; i++) {
        const char *id = send_one("midwifery", "social-care", i, 0, 0, 0, NULL, 0);
        assert_non_null(id);
        strcpy(ids[i], id);
    }
    /* All 1000 are durably queued at the broker before the recipient comes back. */
    assert_int_equal(wait_count("data/broker/queue.db", "SELECT count(*) FROM deliveries", 1000,
                                H_TIMEOUT_MS * 3),
                     1000);
    assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
    assert_int_equal(wait_count("data/social-care/agent.db", "SELECT count(*) FROM inbox", 1000,
                                H_TIMEOUT_MS * 3),
                     1000);
    /* Per-sender order: the inbox's insertion order is the send order. */
    for (int i = 0; i < 1000; i += 37) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM inbox WHERE rowid < (SELECT rowid FROM inbox WHERE "
                 "message_id = '%s')",
                 ids[i]);
        assert_int_equal(h_sql_int(&g_net, "data/social-care/agent.db", sql), i);
    }
    /* And the sender holds a receipt for every one. */
    assert_int_equal(wait_count("data/midwifery/agent.db",
                                "SELECT count(*) FROM receipts WHERE code = 0", 1000,
                                H_TIMEOUT_MS * 3),
                     1000);
    free(ids);
}

/* ---- expiry ----------------------------------------------------------------------------- */

static void test_expired_message_gives_non_delivery_report(void **state)
{
    (void)state;
    static const char *const agencies[] = {"midwifery", NULL};
    static const char *const listed[] = {"police", NULL};
    assert_int_equal(start_net(agencies, listed, NULL), 0);
    char err[64];
    const char *id = send_one("midwifery", "police", 1, 1, 1, 0, err, sizeof err);
    assert_non_null(id);
    char idhex[33], sql[256];
    snprintf(idhex, sizeof idhex, "%s", id);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM receipts WHERE message_id = '%s' AND code = %d AND "
             "signer = 'broker'",
             idhex, REFEX_E_EXPIRED);
    assert_int_equal(wait_count("data/midwifery/agent.db", sql, 1, H_TIMEOUT_MS), 1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit WHERE message_id = '%s' AND event = 'non-delivery' AND "
             "outcome = 'E_EXPIRED' AND article6 = 'ARTICLE6_PUBLIC_TASK'",
             idhex);
    assert_int_equal(h_sql_int(&g_net, "data/midwifery/agent.db", sql), 1);

    char out[4096];
    const char *args[] = {"status", idhex, NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, args), 0);
    assert_non_null(strstr(out, "NOT delivered: expired"));
    assert_non_null(strstr(out, "signed by broker"));
    /* Nothing is left at the broker. */
    assert_int_equal(h_sql_int(&g_net, "data/broker/queue.db", "SELECT count(*) FROM deliveries"),
                     0);
}

/* ---- the broker's store is full ------------------------------------------------------ */

static void test_full_store_refuses_then_catches_up(void **state)
{
    (void)state;
    static const char *const agencies[] = {"midwifery", "social-care", NULL};
    /* A broker database capped at 512 KiB: the same SQLITE_FULL as a full disk. */
    assert_int_equal(start_net(agencies, NULL, "store_max = 512K"), 0);
    h_stop(&g_net.agents[h_agent_index(&g_net, "social-care")]);

    char err[64] = "";
    int sent = 0, refused = 0;
    for (int i = 0; i < 400 && refused == 0; i++) {
        const char *id = send_one("midwifery", "social-care", i, 0, 1, 8000, err, sizeof err);
        if (id)
            sent++;
        else if (strcmp(err, "E_STORE") == 0)
            refused = 1;
        else
            fail_msg("send %d: unexpected %s", i, err);
    }
    assert_int_equal(refused, 1); /* the typed error reached the sender */
    assert_true(sent > 10);
    char path[600];
    h_path(&g_net, path, sizeof path, "logs/broker.log");
    assert_true(h_tree_contains(path, "refusing", 8));
    /* The refused message is still in midwifery's outbox, pending. */
    assert_true(h_sql_int(&g_net, "data/midwifery/agent.db",
                          "SELECT count(*) FROM outbox WHERE state = 'pending'") >= 1);
    assert_true(h_alive(&g_net.broker));

    /* Space frees as the recipient drains its backlog; the outbox retry then succeeds. */
    assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
    long long want = sent + 1;
    assert_int_equal(wait_count("data/social-care/agent.db", "SELECT count(*) FROM inbox", want,
                                H_TIMEOUT_MS * 4),
                     want);
    assert_int_equal(h_sql_int(&g_net, "data/midwifery/agent.db",
                               "SELECT count(*) FROM outbox WHERE state <> 'stored'"),
                     0);
}

/* ---- crash storm --------------------------------------------------------------------- */

static void test_crash_storm_loses_and_duplicates_nothing(void **state)
{
    (void)state;
    static const char *const agencies[] = {"midwifery", "substance-misuse", "social-care", NULL};
    assert_int_equal(start_net(agencies, NULL, "redeliver_seconds = 3"), 0);
    const char *env_seed = getenv("REFEX_STORM_SEED");
    unsigned seed = env_seed ? (unsigned)strtoul(env_seed, NULL, 10) : (unsigned)time(NULL);
    printf("crash storm: seed %u (replay with REFEX_STORM_SEED=%u)\n", seed, seed);
    fflush(stdout);
    srand(seed);

    enum { N = 5000 };
    /* Five crash points at random positions: three of the broker, two of the receiver. */
    int at[5], what[5] = {0, 0, 0, 1, 1};
    for (int i = 0; i < 5; i++)
        at[i] = 200 + rand() % (N - 400);
    int social = h_agent_index(&g_net, "social-care");
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 5; k++) {
            if (at[k] != i)
                continue;
            if (what[k] == 0) {
                printf("crash storm: kill -9 broker at message %d\n", i);
                h_kill9(&g_net.broker);
                assert_int_equal(h_net_restart_broker(&g_net), 0);
            } else {
                printf("crash storm: kill -9 social-care at message %d\n", i);
                h_kill9(&g_net.agents[social]);
                assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
            }
            fflush(stdout);
        }
        const char *from = i % 2 ? "substance-misuse" : "midwifery";
        char err[64];
        if (!send_one(from, "social-care", i, 0, 0, 0, err, sizeof err))
            fail_msg("send %d from %s refused: %s", i, from, err);
    }
    assert_int_equal(
        wait_count("data/social-care/agent.db", "SELECT count(*) FROM inbox", N, STORM_TIMEOUT_MS),
        N);
    /* Exactly once: every id sent is there, once, and each audit log has one entry each. */
    assert_int_equal(h_sql_int(&g_net, "data/social-care/agent.db",
                               "SELECT count(DISTINCT message_id) FROM inbox"),
                     N);
    assert_int_equal(h_sql_int(&g_net, "data/social-care/agent.db",
                               "SELECT count(*) FROM audit WHERE event = 'receive'"),
                     N);
    assert_int_equal(h_sql_int(&g_net, "data/social-care/agent.db",
                               "SELECT count(DISTINCT message_id) FROM audit WHERE event = "
                               "'receive'"),
                     N);
    const char *senders[] = {"data/midwifery/agent.db", "data/substance-misuse/agent.db"};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(wait_count(senders[k], "SELECT count(*) FROM receipts WHERE code = 0",
                                    N / 2, STORM_TIMEOUT_MS),
                         N / 2);
        assert_int_equal(h_sql_int(&g_net, senders[k],
                                   "SELECT count(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 "
                                   "FROM receipts r WHERE r.message_id = o.message_id)"),
                         0);
        assert_int_equal(
            h_sql_int(&g_net, senders[k], "SELECT count(*) FROM audit WHERE event = 'send'"),
            N / 2);
        assert_int_equal(
            h_sql_int(&g_net, senders[k], "SELECT count(*) FROM audit WHERE event = 'receipt'"),
            N / 2);
    }
    /* Every audit log is still a well-formed Merkle tree after the crashes. */
    const char *dbs[] = {"data/midwifery/agent.db", "data/substance-misuse/agent.db",
                         "data/social-care/agent.db"};
    for (int k = 0; k < 3; k++) {
        char path[700], out[2048];
        h_path(&g_net, path, sizeof path, "%s", dbs[k]);
        const char *args[] = {"audit", "verify", "--db", path, NULL};
        int rc = h_cli(&g_net, out, sizeof out, args);
        if (rc != 0)
            fail_msg("audit verify %s: %s", dbs[k], out);
    }
    assert_true(h_alive(&g_net.broker));
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    if (getenv("REFEX_TEST_FILTER"))
        cmocka_set_test_filter(getenv("REFEX_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_offline_recipient_gets_backlog_in_order, teardown),
        cmocka_unit_test_teardown(test_expired_message_gives_non_delivery_report, teardown),
        cmocka_unit_test_teardown(test_full_store_refuses_then_catches_up, teardown),
        cmocka_unit_test_teardown(test_crash_storm_loses_and_duplicates_nothing, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
