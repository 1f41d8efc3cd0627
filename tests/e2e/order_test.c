/* Per-sender order under refusal (issue 10, item 2), with a real broker and agents: the
 * broker's store is capped (store_max) so that it refuses with E_STORE while the recipient
 * is offline; the sender goes on sending (messages of random sizes, so a small one could fit
 * where a large one did not), new sends queue behind the refused ones, and after its 5 s
 * back-off the sender tries the oldest pending one alone, not a burst; then the broker comes
 * back with room, more is sent, the recipient comes online, and its inbox holds every
 * message exactly once, in the order it was sent (by cursor), with the default send_window
 * (several SENDs in flight: the broker holds a sender's later SENDs behind a refused one)
 * and with send_window = 1 (and a new key epoch every 3 messages); a send_window, or key
 * epoch setting, out of range stops the agent at start with a line saying so. The seed is printed;
 * REFEX_ORDER_SEED replays it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../unit/testing.h"
#include "harness.h"
#include "util.h"

#define N_FULL       40 /* sent first: the store fills and refuses */
#define N_QUEUED     10 /* sent while refused: they queue behind */
#define N_AFTER      10 /* sent once the broker has room again */
#define N_TOTAL      (N_FULL + N_QUEUED + N_AFTER)
#define DRAIN_MS     120000
#define RETRY_MS_E2E 5000 /* the agent's back-off after a transient refusal */

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "social-care", NULL};
static char g_ids[N_TOTAL][33];

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    return h_net_up(&g_net, AGENCIES, NULL, "store_max = 64K");
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

static const char *str(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

/* Message i, its summary "order-<i>" padded to a random size; not waited for. Returns its
 * reply's state. */
static const char *send_numbered(int i, char state[16])
{
    char summary[4000];
    int pad = 100 + rand() % 2900;
    int n = snprintf(summary, sizeof summary, "order-%03d ", i);
    memset(summary + n, 'x', (size_t)pad);
    summary[n + pad] = 0;
    json_t *body = h_required(
        "referral", json_pack("{s:s, s:s}", "kind", "REFERRAL_PRE_BIRTH", "summary", summary));
    json_t *req = json_pack("{s:s, s:[s], s:s, s:o}", "cmd", "send", "to", "social-care", "type",
                            "referral", "body", body);
    json_t *r = h_control(&g_net, "midwifery", req);
    json_decref(req);
    if (!json_is_true(json_object_get(r, "ok")))
        fail_msg("send %d: %s", i, r ? str(r, "detail") : "no answer");
    snprintf(g_ids[i], sizeof g_ids[i], "%s", str(r, "message_id"));
    snprintf(state, 16, "%s", str(r, "state"));
    json_decref(r);
    return state;
}

static long long outbox_count(const char *state)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox WHERE state = '%s'", state);
    return h_sql_int(&g_net, "data/midwifery/agent.db", sql);
}

/* How many times the sender's log says the broker refused one of its messages for now. */
static int refusals(void)
{
    char path[600], line[1024];
    int n = 0;
    h_path(&g_net, path, sizeof path, "logs/midwifery.log");
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, "not stored by the broker yet") != NULL;
    if (f)
        fclose(f);
    return n;
}

/* The message id in the sender's last "not stored by the broker yet" line, into id. */
static void last_refused(char id[33])
{
    char path[600], line[1024];
    id[0] = 0;
    h_path(&g_net, path, sizeof path, "logs/midwifery.log");
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        const char *at = strstr(line, "outbox: ");
        if (at && strstr(line, "not stored by the broker yet"))
            snprintf(id, 33, "%.32s", at + strlen("outbox: "));
    }
    if (f)
        fclose(f);
}

/* The oldest of the sender's messages still pending: its index in g_ids, or -1. */
static int oldest_pending(int sent)
{
    char sql[256];
    for (int i = 0; i < sent; i++) {
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM outbox WHERE state = 'pending' AND message_id = '%.32s'",
                 g_ids[i]);
        if (h_sql_int(&g_net, "data/midwifery/agent.db", sql) == 1)
            return i;
    }
    return -1;
}

/* The broker still full: after the back-off the sender tries the oldest pending message
 * alone (one refusal more, for that one), not the outbox in a burst. */
static void backoff_sends_oldest_alone(int sent)
{
    int seen = refusals();
    int64_t t0 = refex_mono_ms(), deadline = t0 + 3 * RETRY_MS_E2E;
    while (refusals() == seen && refex_mono_ms() < deadline)
        h_pause();
    assert_int_equal(refusals(), seen + 1);
    char id[33];
    last_refused(id);
    int oldest = oldest_pending(sent);
    assert_true(oldest >= 0);
    assert_string_equal(id, g_ids[oldest]);
    printf("order: after %lld ms of back-off the oldest pending (#%d) alone was tried again\n",
           (long long)(refex_mono_ms() - t0), oldest);
}

/* The broker restarted on its port with store_max = cap. */
static void restart_broker_with(const char *cap)
{
    char path[600], text[2048], out[2300];
    h_path(&g_net, path, sizeof path, "conf/broker.conf");
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    char *line = strstr(text, "store_max = ");
    assert_non_null(line);
    char *end = strchr(line, '\n');
    *line = 0;
    snprintf(out, sizeof out, "%sstore_max = %s%s", text, cap, end ? end : "\n");
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(out, f) >= 0, 1);
    fclose(f);
    assert_int_equal(h_net_restart_broker(&g_net), 0);
}

/* Waits until the sender has been refused more than `seen` times, or has nothing pending. */
static void wait_refused_or_drained(int seen)
{
    int64_t deadline = refex_mono_ms() + 30000;
    while (refusals() <= seen && outbox_count("pending") != 0 && refex_mono_ms() < deadline)
        h_pause();
    assert_true(refusals() > seen || outbox_count("pending") == 0);
}

/* The recipient's inbox from cursor 0, as message ids in cursor order. */
static size_t inbox_ids(char ids[][33], size_t cap)
{
    json_t *req = json_pack("{s:s, s:I, s:I}", "cmd", "inbox_list", "after", (json_int_t)0, "limit",
                            (json_int_t)1000);
    json_t *r = h_control(&g_net, "social-care", req);
    json_decref(req);
    size_t n = 0, i;
    json_t *m;
    json_array_foreach(json_object_get(r, "messages"), i, m)
    {
        if (strcmp(str(m, "sender"), "midwifery") == 0 && n < cap)
            snprintf(ids[n++], 33, "%s", str(m, "message_id"));
    }
    json_decref(r);
    return n;
}

/* The sender's agent restarted with send_window = window in its config, and key epochs of
 * 3 messages, so the recipient opens messages of many epochs. */
static void sender_window(int window)
{
    char path[600];
    h_stop(&g_net.agents[h_agent_index(&g_net, "midwifery")]);
    h_path(&g_net, path, sizeof path, "conf/midwifery.conf");
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fprintf(f, "send_window = %d\nepoch_messages = 3\n", window);
    fclose(f);
    assert_int_equal(h_net_start_agent(&g_net, "midwifery"), 0);
}

/* The scenario: the store fills and refuses while the recipient is offline and sends go
 * on; room comes back in steps; then fully, and the recipient comes online. Returns how
 * many of the sender's messages the recipient holds, their ids in cursor order in got. */
static size_t refusal_scenario(int window, char got[][33], size_t cap)
{
    const char *env_seed = getenv("REFEX_ORDER_SEED");
    unsigned seed = env_seed ? (unsigned)strtoul(env_seed, NULL, 10) : (unsigned)time(NULL);
    printf("order: window %d, seed %u (replay with REFEX_ORDER_SEED=%u)\n", window, seed, seed);
    srand(seed);
    char st[16];
    int next = 0;
    h_stop(&g_net.agents[h_agent_index(&g_net, "social-care")]); /* the recipient offline */
    if (window)
        sender_window(window);

    for (; next < N_FULL; next++)
        send_numbered(next, st);
    wait_refused_or_drained(0);
    assert_true(refusals() > 0);
    for (int k = 0; k < N_QUEUED / 2; k++, next++)
        assert_string_equal(send_numbered(next, st), "pending"); /* behind the refused ones */
    printf("order: the full store took %lld of %d; %lld pending\n", outbox_count("stored"), next,
           outbox_count("pending"));
    assert_true(outbox_count("stored") < N_FULL);
    if (window == 0)
        backoff_sends_oldest_alone(next);

    /* Room comes back a little at a time: some fit, then the store is full again. */
    const char *caps[] = {"96K", "128K"};
    for (int c = 0; c < 2; c++) {
        int seen = refusals();
        restart_broker_with(caps[c]);
        for (int k = 0; k < N_QUEUED / 4; k++, next++)
            send_numbered(next, st);
        wait_refused_or_drained(seen);
        printf("order: store_max %s: %lld stored, %lld pending\n", caps[c], outbox_count("stored"),
               outbox_count("pending"));
    }

    int64_t t0 = refex_mono_ms();
    restart_broker_with("64M");
    for (; next < N_TOTAL; next++)
        send_numbered(next, st);
    assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);

    size_t n = 0;
    int64_t deadline = refex_mono_ms() + DRAIN_MS;
    while ((n = inbox_ids(got, cap)) < N_TOTAL && refex_mono_ms() < deadline)
        h_pause();
    printf("order: %zu of %d delivered %lld ms after the broker had room\n", n, N_TOTAL,
           (long long)(refex_mono_ms() - t0));
    deadline = refex_mono_ms() + 30000;
    while (outbox_count("pending") != 0 && refex_mono_ms() < deadline)
        h_pause();
    assert_int_equal(outbox_count("pending"), 0);
    assert_int_equal(outbox_count("stored"), N_TOTAL);
    return n;
}

static char g_got[N_TOTAL + 8][33];

static void assert_in_send_order(size_t n)
{
    assert_int_equal(n, N_TOTAL);
    for (size_t i = 0; i < n; i++)
        if (strcmp(g_got[i], g_ids[i]) != 0)
            fail_msg("inbox position %zu holds %s; message %zu (%s) was sent there", i, g_got[i], i,
                     g_ids[i]);
}

/* The default window (several SENDs in flight): every message once, in the order sent. */
static void test_order_kept_under_refusal(void **state)
{
    (void)state;
    assert_in_send_order(refusal_scenario(0, g_got, N_TOTAL + 8));
}

/* One SEND at a time: every message exactly once, in the order sent. */
static void test_window_delivers_every_message_once(void **state)
{
    (void)state;
    size_t n = refusal_scenario(1, g_got, N_TOTAL + 8);
    assert_in_send_order(n);
    for (size_t i = 0; i < N_TOTAL; i++) {
        int seen = 0;
        for (size_t k = 0; k < n; k++)
            seen += strcmp(g_got[k], g_ids[i]) == 0;
        if (seen != 1)
            fail_msg("message %zu (%s) is in the inbox %d times", i, g_ids[i], seen);
    }
}

/* send_window outside 1..64, an epoch_seconds outside 1..86400 or an epoch_messages
 * outside 1..10000000, or one that is not a number: the agent does not start, and says
 * why. In range, the same config checks out. */
static void test_send_window_checked(void **state)
{
    (void)state;
    static const struct {
        const char *key, *value;
        int ok;
    } cases[] = {
        {"send_window", "0", 0},       {"send_window", "65", 0},
        {"send_window", "many", 0},    {"epoch_seconds", "0", 0},
        {"epoch_seconds", "86401", 0}, {"epoch_messages", "0", 0},
        {"epoch_messages", "lots", 0}, {"epoch_messages", "10000001", 0},
        {"epoch_seconds", "1", 1},     {"epoch_messages", "1", 1},
    };
    char conf[600], exe[1100], out[8192], text[4096];
    h_path(&g_net, conf, sizeof conf, "conf/midwifery.conf");
    FILE *f = fopen(conf, "r");
    assert_non_null(f);
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    snprintf(exe, sizeof exe, "%s/refex-agent", g_net.bin);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[600];
        h_path(&g_net, path, sizeof path, "conf/bad-window.conf");
        f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "%s%s = %s\n", text, cases[i].key, cases[i].value);
        fclose(f);
        char *argv[] = {exe, "-c", path, "-n", NULL};
        int rc = h_run(argv, out, sizeof out);
        if (cases[i].ok ? rc != 0 : rc == 0 || !strstr(out, cases[i].key))
            fail_msg("%s = %s: exit %d: %s", cases[i].key, cases[i].value, rc, out);
    }
    assert_true(h_alive(&g_net.agents[h_agent_index(&g_net, "midwifery")]));
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_order_kept_under_refusal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_window_delivers_every_message_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_window_checked, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
