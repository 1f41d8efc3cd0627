/* Survive the loss of a machine: two broker nodes on one PostgreSQL store (a primary with a
 * synchronous streaming standby, tests/pg_cluster.sh), senders and the receiver on
 * different nodes, 5,000 referrals, kill -9 of a broker node at random points (restarted a
 * little later), and once a kill -9 of the PostgreSQL primary with the standby promoted.
 * Every referral arrives exactly once, with one receipt each, every audit log verifies with
 * the checkpoints both nodes witnessed, no ALERT is logged, and the store ends empty. The
 * seed is printed; REFEX_FAILOVER_SEED replays it. Needs REFEX_TEST_PG_URL_FILE and
 * REFEX_TEST_PG_DIR (the cluster's directory, for the primary's kill and the promotion). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../unit/testing.h"
#include "harness.h"
#include "util.h"

#define N          5000
#define TIMEOUT_MS 300000
#define N_KILLS    3   /* of broker nodes */
#define DOWN_FOR   300 /* messages sent while a killed node is down */

static h_net g_net;
static h_proc g_node[2];
static int g_port[2];

static const char *const AGENCIES[] = {"midwifery", "substance-misuse", "social-care", NULL};

static void write_file(const char *rel, const char *text)
{
    char path[700];
    h_path(&g_net, path, sizeof path, "%s", rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Node k's config: the harness's broker.conf (with the store), its own port and data dir. */
static void node_conf(int k)
{
    static const char LISTEN[] = "listen = tcp://127.0.0.1:*\n";
    static const char DIR[] = "data_dir = ../data/broker\n";
    char path[700], text[8192], rel[64];
    uint8_t *base = NULL;
    size_t len = 0;
    h_path(&g_net, path, sizeof path, "conf/broker.conf");
    assert_ok(refex_file_read(path, 1 << 16, &base, &len));
    /* the harness writes these two lines first */
    assert_int_equal(strncmp((char *)base, LISTEN, strlen(LISTEN)), 0);
    assert_int_equal(strncmp((char *)base + strlen(LISTEN), DIR, strlen(DIR)), 0);
    snprintf(text, sizeof text, "listen = tcp://127.0.0.1:%d\ndata_dir = ../data/node%d\n%s",
             g_port[k], k, (char *)base + strlen(LISTEN) + strlen(DIR));
    snprintf(rel, sizeof rel, "conf/node%d.conf", k);
    write_file(rel, text);
    free(base);
}

static void start_node(int k)
{
    char conf[700], log[700], exe[1100], line[512];
    h_path(&g_net, conf, sizeof conf, "conf/node%d.conf", k);
    h_path(&g_net, log, sizeof log, "logs/node%d.log", k);
    snprintf(exe, sizeof exe, "%s/refex-broker", g_net.bin);
    char *argv[] = {exe, "-c", conf, NULL};
    assert_int_equal(h_spawn(&g_node[k], k ? "node1" : "node0", argv, log), 0);
    assert_int_equal(h_wait_line(&g_node[k], "READY ", H_TIMEOUT_MS, line, sizeof line), 0);
}

/* An agent's config: both nodes, first the one given. */
static void agent_conf(const char *agency, int first)
{
    char text[2048], rel[128];
    snprintf(text, sizeof text,
             "agency = %s\nbroker = tcp://127.0.0.1:%d tcp://127.0.0.1:%d\n"
             "broker_timeout_seconds = 3\ndata_dir = ../data/%s\n"
             "directory = ../directory.rdir\ntrust_anchor = ../keys/operator.public\n"
             "keys = ../keys/%s.secret\n",
             agency, g_port[first], g_port[!first], agency, agency);
    snprintf(rel, sizeof rel, "conf/%s.conf", agency);
    write_file(rel, text);
}

static int send_one(const char *from, int seq)
{
    char summary[128];
    snprintf(summary, sizeof summary, "synthetic failover referral number %d", seq);
    json_t *body =
        h_required("referral", json_pack("{s:s, s:{s:s, s:i}, s:s}", "kind", "REFERRAL_PRE_BIRTH",
                                         "subject", "reference", "UB-FAILOVER", "gestation_weeks",
                                         12, "summary", summary));
    json_t *req = json_pack("{s:s, s:[s], s:s, s:o}", "cmd", "send", "to", "social-care", "type",
                            "referral", "body", body);
    json_t *r = h_control(&g_net, from, req);
    int ok = r && json_is_true(json_object_get(r, "ok"));
    if (!ok)
        fprintf(stderr, "send %d from %s: %s\n", seq, from,
                r ? json_string_value(json_object_get(r, "detail")) : "no answer");
    json_decref(req);
    json_decref(r);
    return ok ? 0 : -1;
}

static long long inbox(void)
{
    return h_sql_int(&g_net, "data/social-care/agent.db", "SELECT count(*) FROM inbox");
}

static void pg_cluster(const char *what)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/tests/pg_cluster.sh' %s '%s'", getenv("REFEX_SOURCE_DIR"), what,
             getenv("REFEX_TEST_PG_DIR"));
    assert_int_equal(system(cmd), 0);
}

static int teardown(void **state)
{
    (void)state;
    for (int k = 0; k < 2; k++)
        h_stop(&g_node[k]);
    h_net_fini(&g_net);
    return 0;
}

static void check_end(void)
{
    /* Exactly once at the receiver: N distinct messages, N receive entries. */
    assert_int_equal(h_sql_int(&g_net, "data/social-care/agent.db",
                               "SELECT count(DISTINCT message_id) FROM inbox"),
                     N);
    assert_int_equal(h_sql_int(&g_net, "data/social-care/agent.db",
                               "SELECT count(*) FROM audit WHERE event = 'receive'"),
                     N);
    const char *senders[] = {"data/midwifery/agent.db", "data/substance-misuse/agent.db"};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(h_sql_wait(&g_net, senders[k],
                                    "SELECT count(*) FROM receipts WHERE code = 0", N / 2,
                                    TIMEOUT_MS),
                         N / 2);
        assert_int_equal(h_sql_int(&g_net, senders[k],
                                   "SELECT count(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 "
                                   "FROM receipts r WHERE r.message_id = o.message_id)"),
                         0);
        assert_int_equal(
            h_sql_int(&g_net, senders[k], "SELECT count(DISTINCT message_id) FROM receipts"),
            N / 2);
    }
    /* The store ends empty: no delivery and no receipt waiting. */
    assert_int_equal(
        h_sql_wait(&g_net, "data/broker/queue.db", "SELECT count(*) FROM receipts", 0, TIMEOUT_MS),
        0);
    assert_int_equal(h_sql_int(&g_net, "data/broker/queue.db", "SELECT count(*) FROM deliveries"),
                     0);
    /* Every audit log verifies against the checkpoints the nodes witnessed (one witness,
     * in their store); and the witness holds checkpoints of every agency. */
    for (int i = 0; AGENCIES[i]; i++) {
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM witnessed WHERE agency = '%s'",
                 AGENCIES[i]);
        assert_true(h_pg_int(sql) > 0);
        char db[700], wdb[1100], key[700], own[700], out[4096];
        h_path(&g_net, db, sizeof db, "data/%s/agent.db", AGENCIES[i]);
        snprintf(wdb, sizeof wdb, "%s", h_pg_url());
        h_path(&g_net, key, sizeof key, "keys/broker.public");
        h_path(&g_net, own, sizeof own, "keys/%s.public", AGENCIES[i]);
        const char *args[] = {"audit",     "verify", "--db",          db,  "--key", own,
                              "--witness", wdb,      "--witness-key", key, NULL};
        if (h_cli(&g_net, out, sizeof out, args) != 0)
            fail_msg("audit verify %s with the nodes' witness: %s", AGENCIES[i], out);
    }
    char logs[700];
    h_path(&g_net, logs, sizeof logs, "logs");
    assert_false(h_tree_contains(logs, "ALERT", 5));
}

static void test_failover_loses_and_duplicates_nothing(void **state)
{
    (void)state;
    if (!h_pg_url() || !getenv("REFEX_TEST_PG_DIR"))
        fail_msg("needs REFEX_TEST_PG_URL_FILE and REFEX_TEST_PG_DIR (tests/pg_cluster.sh)");
    const char *env_seed = getenv("REFEX_FAILOVER_SEED");
    unsigned seed = env_seed ? (unsigned)strtoul(env_seed, NULL, 10) : (unsigned)time(NULL);
    printf("failover: seed %u (replay with REFEX_FAILOVER_SEED=%u)\n", seed, seed);
    fflush(stdout);
    srand(seed);

    assert_int_equal(h_net_init(&g_net, AGENCIES, NULL, "redeliver_seconds = 3"), 0);
    for (int k = 0; k < 2; k++) {
        g_port[k] = h_free_port();
        node_conf(k);
    }
    start_node(0);
    start_node(1);
    /* The receiver and one sender start on node 0, the other sender on node 1. */
    agent_conf("midwifery", 0);
    agent_conf("substance-misuse", 1);
    agent_conf("social-care", 0);
    for (int i = 0; AGENCIES[i]; i++)
        assert_int_equal(h_net_start_agent(&g_net, AGENCIES[i]), 0);

    /* Broker kills at random points, the first of node 0 (the receiver's); the primary's
     * kill somewhere in the middle, apart from them. */
    int kill_at[N_KILLS], pg_at = N / 3 + rand() % (N / 3);
    for (int i = 0; i < N_KILLS; i++)
        kill_at[i] = 200 + i * (N - 400) / N_KILLS + rand() % ((N - 400) / N_KILLS - DOWN_FOR);
    kill_at[0] |= 1; /* message kill_at[0] comes from substance-misuse, on node 1 */
    int down = -1, up_at = -1;
    for (int i = 0; i < N; i++) {
        int sent = 0;
        for (int k = 0; k < N_KILLS; k++) {
            if (kill_at[k] != i || down >= 0)
                continue;
            down = k == 0 ? 0 : rand() % 2;
            up_at = i + DOWN_FOR;
            if (k == 0) /* nothing in flight to the receiver: what arrives next came after */
                assert_int_equal(h_sql_wait(&g_net, "data/social-care/agent.db",
                                            "SELECT count(*) FROM inbox", i, TIMEOUT_MS),
                                 i);
            printf("failover: kill -9 broker node %d at message %d\n", down, i);
            fflush(stdout);
            int64_t t0 = refex_mono_ms();
            h_kill9(&g_node[down]);
            if (k == 0) {
                /* The receiver was on node 0: the time until a message sent now through
                 * node 1 reaches it, which it can only by moving to node 1. */
                assert_int_equal(send_one("substance-misuse", i), 0);
                sent = 1;
                while (inbox() <= i && refex_mono_ms() - t0 < TIMEOUT_MS)
                    h_pause();
                printf("failover: delivery to the receiver resumed %lld ms after the kill of "
                       "its node\n",
                       (long long)(refex_mono_ms() - t0));
                fflush(stdout);
            }
        }
        if (i == up_at && down >= 0) {
            printf("failover: broker node %d restarted at message %d\n", down, i);
            fflush(stdout);
            start_node(down);
            down = -1;
        }
        if (i == pg_at) {
            printf("failover: kill -9 of the PostgreSQL primary at message %d; standby "
                   "promoted\n",
                   i);
            fflush(stdout);
            pg_cluster("kill-primary");
            pg_cluster("promote");
        }
        if (!sent)
            assert_int_equal(send_one(i % 2 ? "substance-misuse" : "midwifery", i), 0);
    }
    if (down >= 0)
        start_node(down);
    assert_int_equal(h_sql_wait(&g_net, "data/social-care/agent.db", "SELECT count(*) FROM inbox",
                                N, TIMEOUT_MS),
                     N);
    check_end();
    for (int k = 0; k < 2; k++)
        assert_true(h_alive(&g_node[k]));
}

/* `broker` and `broker_timeout_seconds` as `refex-agent -n` checks them: a clear error
 * naming what is wrong, nothing started. */
static void test_broker_list_is_checked(void **state)
{
    (void)state;
    static const struct {
        const char *broker, *timeout, *want; /* want: in the error; NULL: accepted */
    } cases[] = {
        {"tcp://127.0.0.1:7600 tcp://127.0.0.1:7601", "3", NULL},
        {"tcp://127.0.0.1:7600,tcp://127.0.0.1:7601", "10", NULL},
        {"tcp://127.0.0.1:7600 tcp://127.0.0.1:7600", "3", "twice"},
        {"udp://127.0.0.1:7600", "3", "is not tcp://"},
        {"tcp://h:1 tcp://h:2 tcp://h:3 tcp://h:4 tcp://h:5 tcp://h:6 tcp://h:7 tcp://h:8 "
         "tcp://h:9",
         "3", "more than 8"},
        {"tcp://127.0.0.1:7600 tcp://127.0.0.1:7601", "0", "broker_timeout_seconds"},
        {"tcp://127.0.0.1:7600", "3601", "broker_timeout_seconds"},
    };
    char exe[1100], path[700], out[4096];
    assert_int_equal(h_net_init(&g_net, AGENCIES, NULL, ""), 0);
    snprintf(exe, sizeof exe, "%s/refex-agent", g_net.bin);
    h_path(&g_net, path, sizeof path, "conf/list.conf");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f,
                "agency = midwifery\nbroker = %s\nbroker_timeout_seconds = %s\n"
                "data_dir = ../data/midwifery\ndirectory = ../directory.rdir\n"
                "trust_anchor = ../keys/operator.public\nkeys = ../keys/midwifery.secret\n",
                cases[i].broker, cases[i].timeout);
        fclose(f);
        char *argv[] = {exe, "-c", path, "-n", NULL};
        int rc = h_run(argv, out, sizeof out);
        if (cases[i].want ? rc == 0 || !strstr(out, cases[i].want) : rc != 0)
            fail_msg("broker = %s, timeout %s: exit %d: %s", cases[i].broker, cases[i].timeout, rc,
                     out);
    }
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_broker_list_is_checked, teardown),
        cmocka_unit_test_teardown(test_failover_loses_and_duplicates_nothing, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
