/* The consumable inbox (issue 9, item 3) end to end, with a real broker and agents: a
 * cursor on every inbox message, `inbox list --after/--limit/--unacked`, `inbox ack`
 * (audited once), `inbox watch` printing one JSON line per delivery within a second and
 * resuming from its last cursor without a gap or a repeat, and librefex-client's
 * refex_client_inbox_query/ack/wait and its pollable watch; the agent's limit of 64 held
 * waiters, while it goes on answering everything else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "../unit/testing.h"
#include "harness.h"
#include "refex/client.h"
#include "util.h"

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "social-care", NULL};

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    return h_net_up(&g_net, AGENCIES, NULL, NULL);
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

static long long num(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* A complete referral from midwifery to social care, waited for until the broker has
 * STORED it; its id into id. */
static void send_referral(const char *summary, char id[33])
{
    json_t *body = h_required(
        "referral", json_pack("{s:s, s:s}", "kind", "REFERRAL_PRE_BIRTH", "summary", summary));
    json_t *req = json_pack("{s:s, s:[s], s:s, s:o, s:b}", "cmd", "send", "to", "social-care",
                            "type", "referral", "body", body, "wait", 1);
    json_t *r = h_control(&g_net, "midwifery", req);
    json_decref(req);
    if (!json_is_true(json_object_get(r, "ok")) || strcmp(str(r, "state"), "stored") != 0)
        fail_msg("send %s: %s", summary, r ? str(r, "detail") : "no answer");
    snprintf(id, 33, "%s", str(r, "message_id"));
    json_decref(r);
}

/* `refex -c social-care.conf args`; asserts the exit code, returns the output parsed as
 * JSON if it is JSON (else NULL), the text in out. */
static json_t *sc_cli(int code, const char *const *args, char *out, size_t len)
{
    json_error_t jerr;
    int rc = h_cli_agent(&g_net, "social-care", out, len, args);
    if (rc != code)
        fail_msg("refex %s %s: exit %d (want %d): %s", args[0], args[1] ? args[1] : "", rc, code,
                 out);
    return json_loads(out, 0, &jerr);
}

static json_t *sc_json(const char *const *args)
{
    char out[131072];
    json_t *j = sc_cli(0, args, out, sizeof out);
    if (!j)
        fail_msg("refex %s %s: not JSON: %s", args[0], args[1], out);
    return j;
}

static size_t inbox_size(void)
{
    json_t *all = sc_json((const char *[]){"inbox", "list", "--json", NULL});
    size_t n = json_array_size(all);
    json_decref(all);
    return n;
}

/* Polls social care's inbox until it holds n messages. */
static void wait_inbox_size(size_t n)
{
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (inbox_size() != n) {
        if (refex_mono_ms() > deadline)
            fail_msg("social care's inbox never reached %zu messages", n);
        h_pause();
    }
}

static long long last_cursor(void)
{
    json_t *all = sc_json((const char *[]){"inbox", "list", "--json", NULL});
    long long c = num(json_array_get(all, json_array_size(all) - 1), "cursor");
    json_decref(all);
    return c;
}

/* One control request to social care; the reply. */
static json_t *sc_control(json_t *req)
{
    json_t *r = h_control(&g_net, "social-care", req);
    json_decref(req);
    assert_non_null(r);
    return r;
}

static void assert_refused(json_t *r, const char *error, const char *field)
{
    if (json_is_true(json_object_get(r, "ok")) || strcmp(str(r, "error"), error) != 0 ||
        (field && strcmp(str(r, "field"), field) != 0))
        fail_msg("wanted %s (field %s), got %s", error, field ? field : "-",
                 json_dumps(r, JSON_COMPACT));
    json_decref(r);
}

/* ---- 64 held waiters, the 65th refused; the agent answers all else meanwhile -------- */

#define N_WAITERS 65

static void test_waiter_limit(void **state)
{
    (void)state;
    char ep[700], url[720], id[33];
    h_path(&g_net, ep, sizeof ep, "data/social-care/control.sock");
    snprintf(url, sizeof url, "ipc://%s", ep);
    void *ctx = zmq_ctx_new(), *s[N_WAITERS];
    zmq_pollitem_t items[N_WAITERS];
    const char *req = "{\"cmd\":\"inbox_wait\",\"after\":0,\"timeout_ms\":60000}";
    for (int i = 0; i < N_WAITERS; i++) {
        int linger = 0;
        s[i] = zmq_socket(ctx, ZMQ_REQ);
        zmq_setsockopt(s[i], ZMQ_LINGER, &linger, sizeof linger);
        assert_int_equal(zmq_connect(s[i], url), 0);
        assert_true(zmq_send(s[i], req, strlen(req), 0) > 0);
        items[i] = (zmq_pollitem_t){s[i], 0, ZMQ_POLLIN, 0};
    }
    /* The inbox is empty: 64 are held and the one read last is refused at once. */
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    int busy = -1;
    while (busy < 0 && refex_mono_ms() < deadline) {
        if (zmq_poll(items, N_WAITERS, 1000) <= 0)
            continue;
        for (int i = 0; i < N_WAITERS && busy < 0; i++) {
            if (!(items[i].revents & ZMQ_POLLIN))
                continue;
            char buf[4096];
            int n = zmq_recv(s[i], buf, sizeof buf - 1, 0);
            assert_true(n > 0);
            buf[n] = '\0';
            json_error_t jerr;
            json_t *r = json_loads(buf, 0, &jerr);
            assert_refused(r, "E_BUSY", NULL);
            busy = i;
        }
    }
    assert_true(busy >= 0);
    assert_int_equal(zmq_poll(items, N_WAITERS, 0), 0); /* the other 64 are still held */

    /* Meanwhile everything else is answered, and a 66th waiter is refused too. */
    json_t *r = sc_control(json_pack("{s:s}", "cmd", "status"));
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    assert_int_equal(inbox_size(), 0);
    refex_client *c = NULL;
    char conf[600], *out = NULL;
    h_path(&g_net, conf, sizeof conf, "conf/social-care.conf");
    assert_ok(refex_client_open(conf, &c));
    assert_rc(refex_client_inbox_wait(c, 0, 1000, &out), REFEX_E_BUSY);
    refex_client_free(out);
    refex_client_close(&c);

    /* One delivery answers all 64, each with the message. */
    send_referral("wakes every waiter", id);
    int answered = 0;
    deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (answered < N_WAITERS - 1 && refex_mono_ms() < deadline) {
        if (zmq_poll(items, N_WAITERS, 1000) <= 0)
            continue;
        for (int i = 0; i < N_WAITERS; i++) {
            if (i == busy || !(items[i].revents & ZMQ_POLLIN))
                continue;
            char buf[16384];
            int n = zmq_recv(s[i], buf, sizeof buf - 1, 0);
            assert_true(n > 0 && n < (int)sizeof buf);
            buf[n] = '\0';
            json_error_t jerr;
            r = json_loads(buf, 0, &jerr);
            assert_true(json_is_true(json_object_get(r, "ok")));
            json_t *msgs = json_object_get(r, "messages");
            assert_int_equal(json_array_size(msgs), 1);
            assert_string_equal(str(json_array_get(msgs, 0), "message_id"), id);
            assert_int_equal(num(r, "cursor"), num(json_array_get(msgs, 0), "cursor"));
            json_decref(r);
            answered++;
        }
    }
    assert_int_equal(answered, N_WAITERS - 1);
    for (int i = 0; i < N_WAITERS; i++)
        zmq_close(s[i]);
    zmq_ctx_term(ctx);
}

/* ---- list, ack, bad input ------------------------------------------------------------ */

static char g_ids[3][33];

static void test_list_and_ack(void **state)
{
    (void)state;
    char out[65536];
    size_t before = inbox_size();
    for (int i = 0; i < 3; i++) {
        char summary[32];
        snprintf(summary, sizeof summary, "list and ack %d", i);
        send_referral(summary, g_ids[i]);
    }
    wait_inbox_size(before + 3);
    /* The one from the waiter test is acked first, so three remain unacked. */
    json_t *all = sc_json((const char *[]){"inbox", "list", "--json", NULL});
    json_decref(sc_json((const char *[]){"inbox", "ack", str(json_array_get(all, 0), "message_id"),
                                         "--json", NULL}));
    json_decref(all);

    json_t *un = sc_json((const char *[]){"inbox", "list", "--unacked", "--json", NULL});
    assert_int_equal(json_array_size(un), 3);
    long long prev = 0;
    for (size_t i = 0; i < 3; i++) {
        json_t *m = json_array_get(un, i);
        assert_string_equal(str(m, "message_id"), g_ids[i]);
        assert_true(json_is_false(json_object_get(m, "acked")));
        assert_null(json_object_get(m, "acked_at_ms"));
        assert_true(num(m, "cursor") > prev);
        prev = num(m, "cursor");
    }
    json_decref(un);

    json_decref(sc_cli(0, (const char *[]){"inbox", "ack", g_ids[0], NULL}, out, sizeof out));
    assert_non_null(strstr(out, "acked "));
    assert_null(strstr(out, "already"));
    assert_non_null(strstr(out, g_ids[0]));
    un = sc_json((const char *[]){"inbox", "list", "--unacked", "--json", NULL});
    assert_int_equal(json_array_size(un), 2);
    assert_string_equal(str(json_array_get(un, 0), "message_id"), g_ids[1]);
    json_decref(un);
    /* Acking never deletes; the second ack is "already" and not audited again. */
    all = sc_json((const char *[]){"inbox", "list", "--json", NULL});
    assert_int_equal(json_array_size(all), before + 3);
    json_t *m = json_array_get(all, before);
    assert_string_equal(str(m, "message_id"), g_ids[0]);
    assert_true(json_is_true(json_object_get(m, "acked")));
    assert_true(num(m, "acked_at_ms") >= num(m, "received_ms"));
    json_decref(all);
    json_decref(sc_cli(0, (const char *[]){"inbox", "ack", g_ids[0], NULL}, out, sizeof out));
    assert_non_null(strstr(out, "already acked "));
    json_t *again = sc_json((const char *[]){"inbox", "ack", g_ids[0], "--json", NULL});
    assert_true(json_is_true(json_object_get(again, "already")));
    assert_string_equal(str(again, "id"), g_ids[0]);
    json_decref(again);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit WHERE event = 'ack' AND outcome = 'success' AND"
             " message_id = '%s' AND peer = 'midwifery' AND message_type = 'REFERRAL' AND"
             " article6 = 'ARTICLE6_PUBLIC_TASK'",
             g_ids[0]);
    assert_int_equal(h_sql_int(&g_net, "data/social-care/agent.db", sql), 1);

    /* The table shows the cursor and whether each is acked. */
    json_decref(sc_cli(0, (const char *[]){"inbox", "list", NULL}, out, sizeof out));
    assert_non_null(strstr(out, "CURSOR"));
    assert_non_null(strstr(out, "ACKED"));
}

static void test_list_by_cursor(void **state)
{
    (void)state;
    json_t *un = sc_json((const char *[]){"inbox", "list", "--unacked", "--json", NULL});
    long long c1 = num(json_array_get(un, 0), "cursor"), c2 = num(json_array_get(un, 1), "cursor");
    json_decref(un);
    char after[32];
    snprintf(after, sizeof after, "%lld", c1);
    json_t *page = sc_json((const char *[]){"inbox", "list", "--after", after, "--json", NULL});
    assert_int_equal(json_array_size(page), 1);
    assert_int_equal(num(json_array_get(page, 0), "cursor"), c2);
    json_decref(page);
    page = sc_json((const char *[]){"inbox", "list", "--limit", "1", "--unacked", "--json", NULL});
    assert_int_equal(json_array_size(page), 1);
    assert_int_equal(num(json_array_get(page, 0), "cursor"), c1);
    json_decref(page);

    /* The reply's cursor: the last entry's, or after when there is none. */
    json_t *r = sc_control(json_pack("{s:s, s:I, s:I}", "cmd", "inbox_list", "after",
                                     (json_int_t)(c1 - 1), "limit", (json_int_t)1));
    assert_int_equal(json_array_size(json_object_get(r, "messages")), 1);
    assert_int_equal(num(r, "cursor"), c1);
    json_decref(r);
    r = sc_control(json_pack("{s:s, s:I}", "cmd", "inbox_list", "after", (json_int_t)(c2 + 100)));
    assert_int_equal(json_array_size(json_object_get(r, "messages")), 0);
    assert_int_equal(num(r, "cursor"), c2 + 100);
    json_decref(r);

    /* An empty page says what it was a page of, not that the inbox is empty. */
    char out[4096];
    snprintf(after, sizeof after, "%lld", c2 + 100);
    json_decref(
        sc_cli(0, (const char *[]){"inbox", "list", "--after", after, NULL}, out, sizeof out));
    assert_non_null(strstr(out, "(no messages after cursor "));
}

static void test_bad_input(void **state)
{
    (void)state;
    char out[65536];
    /* The CLI: unknown id, a malformed id, bad numbers, options of another subcommand. */
    json_decref(sc_cli(1,
                       (const char *[]){"inbox", "ack", "0123456789abcdef0123456789abcdef", NULL},
                       out, sizeof out));
    assert_non_null(strstr(out, "E_NOTFOUND"));
    json_t *e = sc_cli(
        1, (const char *[]){"inbox", "ack", "0123456789abcdef0123456789abcdef", "--json", NULL},
        out, sizeof out);
    assert_false(json_is_true(json_object_get(e, "ok")));
    assert_string_equal(str(e, "error"), "E_NOTFOUND");
    json_decref(e);
    json_decref(sc_cli(1, (const char *[]){"inbox", "ack", "not-an-id", NULL}, out, sizeof out));
    assert_non_null(strstr(out, "E_INVAL"));
    json_decref(
        sc_cli(2, (const char *[]){"inbox", "list", "--limit", "-1", NULL}, out, sizeof out));
    json_decref(
        sc_cli(2, (const char *[]){"inbox", "list", "--after", "x", NULL}, out, sizeof out));
    json_decref(sc_cli(2, (const char *[]){"inbox", "ack", NULL}, out, sizeof out));
    json_decref(sc_cli(2, (const char *[]){"inbox", "ack", g_ids[1], "--limit", "1", NULL}, out,
                       sizeof out));
    assert_non_null(strstr(out, "--limit"));
    json_decref(
        sc_cli(2, (const char *[]){"inbox", "watch", "--count", "0", NULL}, out, sizeof out));

    /* The control protocol: every bad field is E_INVAL naming it. */
    assert_refused(sc_control(json_pack("{s:s, s:i}", "cmd", "inbox_list", "limit", -1)), "E_INVAL",
                   "limit");
    assert_refused(sc_control(json_pack("{s:s, s:i}", "cmd", "inbox_list", "after", -1)), "E_INVAL",
                   "after");
    assert_refused(sc_control(json_pack("{s:s, s:s}", "cmd", "inbox_list", "after", "3")),
                   "E_INVAL", "after");
    assert_refused(sc_control(json_pack("{s:s, s:f}", "cmd", "inbox_list", "limit", 1.5)),
                   "E_INVAL", "limit");
    assert_refused(sc_control(json_pack("{s:s, s:i}", "cmd", "inbox_list", "unacked", 1)),
                   "E_INVAL", "unacked");
    assert_refused(sc_control(json_pack("{s:s}", "cmd", "inbox_ack")), "E_INVAL", "id");
    assert_refused(sc_control(json_pack("{s:s, s:i}", "cmd", "inbox_ack", "id", 7)), "E_INVAL",
                   "id");
    assert_refused(sc_control(json_pack("{s:s, s:s}", "cmd", "inbox_ack", "id",
                                        "ffffffffffffffffffffffffffffffff")),
                   "E_NOTFOUND", NULL);
    assert_refused(
        sc_control(json_pack("{s:s, s:s, s:i}", "cmd", "inbox_ack", "id", g_ids[1], "from", 7)),
        "E_INVAL", "from");
    assert_refused(sc_control(json_pack("{s:s, s:s, s:s}", "cmd", "inbox_ack", "id", g_ids[1],
                                        "from", "Not An Id")),
                   "E_INVAL", "from");
    assert_refused(sc_control(json_pack("{s:s, s:s, s:s}", "cmd", "inbox_ack", "id", g_ids[1],
                                        "from", "substance-misuse")),
                   "E_NOTFOUND", NULL);
    json_decref(sc_cli(1, (const char *[]){"inbox", "ack", g_ids[1], "--from", "police", NULL}, out,
                       sizeof out));
    assert_non_null(strstr(out, "E_NOTFOUND"));
    json_decref(sc_cli(1, (const char *[]){"inbox", "show", g_ids[1], "--from", "police", NULL},
                       out, sizeof out));
    assert_non_null(strstr(out, "E_NOTFOUND"));
    json_t *shown =
        sc_json((const char *[]){"inbox", "show", g_ids[1], "--from", "midwifery", "--json", NULL});
    assert_string_equal(str(shown, "message_id"), g_ids[1]);
    json_decref(shown);
    assert_refused(sc_control(json_pack("{s:s, s:s, s:s}", "cmd", "inbox_show", "id", g_ids[1],
                                        "from", "Not An Id")),
                   "E_INVAL", "from");
    assert_refused(sc_control(json_pack("{s:s, s:i}", "cmd", "inbox_wait", "timeout_ms", 0)),
                   "E_INVAL", "timeout_ms");
    assert_refused(sc_control(json_pack("{s:s, s:i}", "cmd", "inbox_wait", "timeout_ms", 300001)),
                   "E_INVAL", "timeout_ms");
    assert_refused(sc_control(json_pack("{s:s, s:s}", "cmd", "inbox_wait", "after", "x")),
                   "E_INVAL", "after");

    /* The client library. */
    refex_client *c = NULL;
    char conf[600], *r = NULL;
    h_path(&g_net, conf, sizeof conf, "conf/social-care.conf");
    assert_ok(refex_client_open(conf, &c));
    assert_rc(refex_client_inbox_query(c, -1, 0, 0, &r), REFEX_E_INVAL);
    refex_client_free(r);
    assert_rc(refex_client_inbox_query(c, 0, -5, 0, &r), REFEX_E_INVAL);
    refex_client_free(r);
    assert_rc(refex_client_inbox_ack(c, "0123456789abcdef0123456789abcdef", &r), REFEX_E_NOTFOUND);
    assert_non_null(strstr(refex_client_error(c), "E_NOTFOUND"));
    refex_client_free(r);
    assert_rc(refex_client_inbox_ack(c, NULL, &r), REFEX_E_INVAL);
    assert_rc(refex_client_inbox_wait(c, 0, 0, &r), REFEX_E_INVAL);
    refex_client_free(r);
    assert_rc(refex_client_watch_next(c, &r), REFEX_E_INVAL); /* no watch started */
    assert_rc(refex_client_watch_start(c, -1), REFEX_E_INVAL);
    assert_rc(refex_client_inbox_ack_from(c, g_ids[0], NULL, &r), REFEX_E_INVAL);
    /* ... and the agent is still there, its inbox as it was. */
    assert_ok(refex_client_inbox_ack(c, g_ids[0], &r));
    assert_non_null(strstr(r, "\"already\":true"));
    refex_client_free(r);
    assert_ok(refex_client_inbox_ack_from(c, g_ids[0], "midwifery", &r));
    assert_non_null(strstr(r, "\"already\":true"));
    refex_client_free(r);
    assert_ok(refex_client_status(c, &r));
    refex_client_free(r);
    refex_client_close(&c);
    assert_true(h_alive(&g_net.agents[h_agent_index(&g_net, "social-care")]));
    assert_int_equal(h_sql_int(&g_net, "data/social-care/agent.db",
                               "SELECT count(*) FROM audit WHERE event = 'ack'"),
                     2);
}

/* ---- inbox watch: the CLI stream ----------------------------------------------------- */

/* Reads one line of the child's stdout within timeout_ms, parsed as a JSON object. */
static json_t *read_json_line(h_proc *p, int timeout_ms)
{
    static char buf[65536];
    size_t used = 0;
    int64_t deadline = refex_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - refex_mono_ms();
        struct pollfd pfd = {p->out_fd, POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return NULL;
        char ch;
        if (read(p->out_fd, &ch, 1) != 1)
            return NULL;
        if (ch != '\n') {
            if (used < sizeof buf - 1)
                buf[used++] = ch;
            continue;
        }
        buf[used] = '\0';
        json_error_t jerr;
        json_t *j = json_loads(buf, 0, &jerr);
        if (!json_is_object(j))
            fail_msg("watch printed a line that is not a JSON object: %s", buf);
        return j;
    }
}

/* Nothing more on the child's stdout: the next thing there is its end (it exits). */
static void assert_no_more_lines(h_proc *p)
{
    char ch;
    struct pollfd pfd = {p->out_fd, POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, H_TIMEOUT_MS), 1);
    assert_int_equal(read(p->out_fd, &ch, 1), 0);
}

static void start_watch(h_proc *p, const char *after, const char *count)
{
    char exe[1100], conf[600], log[600];
    snprintf(exe, sizeof exe, "%s/refex", g_net.bin);
    h_path(&g_net, conf, sizeof conf, "conf/social-care.conf");
    h_path(&g_net, log, sizeof log, "logs/watch.log");
    char *argv[12] = {exe, "-c", conf, "inbox", "watch", "--json"};
    int k = 6;
    if (after) {
        argv[k++] = "--after";
        argv[k++] = (char *)after;
    }
    if (count) {
        argv[k++] = "--count";
        argv[k++] = (char *)count;
    }
    argv[k] = NULL;
    assert_int_equal(h_spawn(p, "watch", argv, log), 0);
}

/* Sends a referral and reads the watcher's line for it: within a second of the send's
 * STORED. Its cursor is returned. */
static long long expect_prompt_line(h_proc *w, const char *summary)
{
    char id[33];
    send_referral(summary, id);
    int64_t stored = refex_mono_ms();
    json_t *line = read_json_line(w, H_TIMEOUT_MS);
    int64_t took = refex_mono_ms() - stored;
    assert_non_null(line);
    assert_string_equal(str(line, "message_id"), id);
    if (took >= 1000)
        fail_msg("watch printed %s %lld ms after it was stored", id, (long long)took);
    printf("watch: a delivery printed %lld ms after STORED\n", (long long)took);
    long long cursor = num(line, "cursor");
    assert_true(cursor > 0);
    json_decref(line);
    return cursor;
}

static void test_watch_cli(void **state)
{
    (void)state;
    h_proc w;
    char after[32], idf[33], idg[33];
    json_t *all = sc_json((const char *[]){"inbox", "list", "--json", NULL});
    start_watch(&w, NULL, NULL);
    /* First what is there already, in cursor order, each entry as inbox list has it. */
    for (size_t i = 0; i < json_array_size(all); i++) {
        json_t *line = read_json_line(&w, H_TIMEOUT_MS);
        assert_non_null(line);
        assert_true(json_equal(line, json_array_get(all, i)));
        json_decref(line);
    }
    json_decref(all);
    /* Then each new delivery, within a second. */
    expect_prompt_line(&w, "watched 1");
    long long last = expect_prompt_line(&w, "watched 2");
    /* SIGTERM: a clean exit 0. */
    kill(w.pid, SIGTERM);
    assert_int_equal(h_wait_exit(&w, H_TIMEOUT_MS), 0);

    /* Two come while nobody watches; a watcher restarted from the last cursor prints
     * exactly those two, then the next one, nothing twice. */
    size_t n = inbox_size();
    send_referral("missed 1", idf);
    send_referral("missed 2", idg);
    wait_inbox_size(n + 2);
    snprintf(after, sizeof after, "%lld", last);
    start_watch(&w, after, NULL);
    json_t *l1 = read_json_line(&w, H_TIMEOUT_MS), *l2 = read_json_line(&w, H_TIMEOUT_MS);
    assert_non_null(l1);
    assert_non_null(l2);
    assert_string_equal(str(l1, "message_id"), idf);
    assert_string_equal(str(l2, "message_id"), idg);
    assert_true(num(l1, "cursor") > last && num(l2, "cursor") > num(l1, "cursor"));
    json_decref(l1);
    json_decref(l2);
    last = expect_prompt_line(&w, "after the restart");

    /* The agent restarts under the watcher: it reconnects and goes on from its cursor. */
    h_proc *agent = &g_net.agents[h_agent_index(&g_net, "social-care")];
    h_stop(agent);
    assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
    char idr[33];
    send_referral("after the agent restarted", idr);
    json_t *lr = read_json_line(&w, H_TIMEOUT_MS);
    assert_non_null(lr);
    assert_string_equal(str(lr, "message_id"), idr);
    assert_true(num(lr, "cursor") > last);
    json_decref(lr);
    char log[600];
    h_path(&g_net, log, sizeof log, "logs/watch.log");
    assert_true(h_tree_contains(log, "reconnecting", strlen("reconnecting")));
    kill(w.pid, SIGINT);
    assert_no_more_lines(&w);
    assert_int_equal(h_wait_exit(&w, H_TIMEOUT_MS), 0);

    /* --count ends it after N lines; --timeout after SEC seconds with nothing new; with
     * --unacked the acknowledged ones are left out. */
    start_watch(&w, "0", "2");
    json_decref(read_json_line(&w, H_TIMEOUT_MS));
    json_decref(read_json_line(&w, H_TIMEOUT_MS));
    assert_no_more_lines(&w);
    assert_int_equal(h_wait_exit(&w, H_TIMEOUT_MS), 0);
    char out[262144];
    snprintf(after, sizeof after, "%lld", last_cursor());
    json_decref(sc_cli(0,
                       (const char *[]){"inbox", "watch", "--after", after, "--timeout", "1", NULL},
                       out, sizeof out));
    assert_string_equal(out, "");
    json_decref(
        sc_cli(0, (const char *[]){"inbox", "watch", "--unacked", "--json", "--timeout", "1", NULL},
               out, sizeof out));
    assert_null(strstr(out, g_ids[0]));
    assert_non_null(strstr(out, g_ids[1]));
    assert_non_null(strstr(out, idr));
}

/* ---- librefex-client: the blocking wait and the pollable watch ------------------------ */

static void test_client_wait(void **state)
{
    (void)state;
    refex_client *c = NULL;
    char conf[600], *r = NULL, id[33];
    json_error_t jerr;
    h_path(&g_net, conf, sizeof conf, "conf/social-care.conf");
    assert_ok(refex_client_open(conf, &c));
    long long last = last_cursor();

    /* Nothing comes: an empty page, after about the timeout. */
    int64_t t0 = refex_mono_ms();
    assert_ok(refex_client_inbox_wait(c, last, 500, &r));
    int64_t took = refex_mono_ms() - t0;
    json_t *j = json_loads(r, 0, &jerr);
    assert_int_equal(json_array_size(json_object_get(j, "messages")), 0);
    assert_int_equal(num(j, "cursor"), last);
    assert_true(took >= 450 && took < 1500);
    json_decref(j);
    refex_client_free(r);

    /* Something there already: at once. */
    t0 = refex_mono_ms();
    assert_ok(refex_client_inbox_wait(c, last - 1, 20000, &r));
    assert_true(refex_mono_ms() - t0 < 1000);
    j = json_loads(r, 0, &jerr);
    assert_int_equal(json_array_size(json_object_get(j, "messages")), 1);
    assert_int_equal(num(j, "cursor"), last);
    json_decref(j);
    refex_client_free(r);

    /* Delivered during the wait (a sender in another process): returned then, long
     * before the timeout. */
    h_proc sender;
    char exe[1100], mconf[600];
    snprintf(exe, sizeof exe, "%s/refex", g_net.bin);
    h_path(&g_net, mconf, sizeof mconf, "conf/midwifery.conf");
    char *argv[] = {exe,
                    "-c",
                    mconf,
                    "send",
                    "--to",
                    "social-care",
                    "--type",
                    "referral",
                    "--summary",
                    "during the wait",
                    H_REFERRAL_FLAGS,
                    NULL};
    assert_int_equal(h_spawn(&sender, "sender", argv, NULL), 0);
    t0 = refex_mono_ms();
    assert_ok(refex_client_inbox_wait(c, last, 60000, &r));
    took = refex_mono_ms() - t0;
    assert_int_equal(h_wait_exit(&sender, H_TIMEOUT_MS), 0);
    j = json_loads(r, 0, &jerr);
    json_t *m = json_array_get(json_object_get(j, "messages"), 0);
    assert_int_equal(json_array_size(json_object_get(j, "messages")), 1);
    assert_string_equal(str(json_object_get(m, "body"), "summary"), "during the wait");
    assert_true(num(m, "cursor") > last);
    assert_true(took < 30000);
    last = num(j, "cursor");
    json_decref(j);
    refex_client_free(r);

    /* The pollable watch: nothing yet, then a delivery makes the descriptor readable. */
    int fd = -1;
    assert_ok(refex_client_watch_start(c, last));
    assert_ok(refex_client_fd(c, &fd));
    assert_true(fd >= 0);
    assert_rc(refex_client_watch_next(c, &r), REFEX_E_TIMEOUT);
    assert_null(r);
    assert_rc(refex_client_status(c, &r), REFEX_E_BUSY); /* one call at a time */
    send_referral("watched by fd", id);
    int64_t stored = refex_mono_ms(), deadline = stored + H_TIMEOUT_MS;
    int rc = REFEX_E_TIMEOUT;
    while (rc == REFEX_E_TIMEOUT && refex_mono_ms() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        poll(&p, 1, 1000);
        rc = refex_client_watch_next(c, &r);
    }
    took = refex_mono_ms() - stored;
    assert_ok(rc);
    j = json_loads(r, 0, &jerr);
    assert_int_equal(json_array_size(json_object_get(j, "messages")), 1);
    assert_string_equal(str(json_array_get(json_object_get(j, "messages"), 0), "message_id"), id);
    if (took >= 1000)
        fail_msg("the watch's descriptor gave %s %lld ms after it was stored", id, (long long)took);
    json_decref(j);
    refex_client_free(r);
    /* It asked again by itself: the next one comes the same way. */
    assert_rc(refex_client_watch_next(c, &r), REFEX_E_TIMEOUT);
    send_referral("watched by fd again", id);
    deadline = refex_mono_ms() + H_TIMEOUT_MS;
    rc = REFEX_E_TIMEOUT;
    while (rc == REFEX_E_TIMEOUT && refex_mono_ms() < deadline) {
        assert_ok(refex_client_fd(c, &fd));
        struct pollfd p = {fd, POLLIN, 0};
        poll(&p, 1, 1000);
        rc = refex_client_watch_next(c, &r);
    }
    assert_ok(rc);
    assert_non_null(strstr(r, id));
    refex_client_free(r);
    refex_client_watch_stop(c);
    assert_ok(refex_client_status(c, &r));
    refex_client_free(r);
    refex_client_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waiter_limit),   cmocka_unit_test(test_list_and_ack),
        cmocka_unit_test(test_list_by_cursor), cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_watch_cli),      cmocka_unit_test(test_client_wait),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
