/* End-to-end test of a full broker store with real processes: with the recipient offline,
 * sends go on until the broker refuses one with E_STORE (store_max counts live envelope
 * bytes); the refusal takes down only what does not fit; once the recipient is back and the
 * deliveries complete, the bodies' space comes back (queue.db's live bytes and page count
 * fall) and the broker accepts as much again. Every message answered STORED is delivered
 * exactly once. Waits poll observable state with deadlines; nothing sleeps for a fixed time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../unit/testing.h"
#include "harness.h"
#include "body.h"
#include "codec.h"
#include "directory.h"
#include "envelope.h"
#include "util.h"

#define MAX_SENDS 400
#define PAD       2000
#define QUEUE     "data/broker/queue.db"
#define INBOX     "data/social-care/agent.db"
#define LIVE_SQL  "SELECT coalesce(sum(length(envelope)), 0) FROM messages"

static h_net g_net;

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

/* Sends one padded referral through midwifery's control socket and waits for the broker's
 * answer. 1 if STORED (id filled), 0 if refused with E_STORE (id filled); fails otherwise. */
static int send_one(int seq, char id[33])
{
    char summary[128];
    snprintf(summary, sizeof summary, "synthetic referral number %d", seq);
    json_t *body = h_required(
        "referral", json_pack("{s:s, s:{s:s, s:i}, s:s}", "kind", "REFERRAL_PRE_BIRTH", "subject",
                              "reference", "UB-FULL", "gestation_weeks", 12, "summary", summary));
    char *blob = malloc(PAD + 1);
    assert_non_null(blob);
    memset(blob, 'x', PAD);
    blob[PAD] = 0;
    json_object_set_new(body, "conversation_id", json_string(blob));
    free(blob);
    json_t *req = json_pack("{s:s, s:[s], s:s, s:o, s:b}", "cmd", "send", "to", "social-care",
                            "type", "referral", "body", body, "wait", 1);
    json_t *r = h_control(&g_net, "midwifery", req);
    json_decref(req);
    assert_non_null(r);
    const char *mid = json_string_value(json_object_get(r, "message_id"));
    assert_non_null(mid);
    snprintf(id, 33, "%s", mid);
    int stored = json_is_true(json_object_get(r, "ok"));
    if (!stored) {
        const char *err = json_string_value(json_object_get(r, "error"));
        if (!err || strcmp(err, "E_STORE") != 0)
            fail_msg("send %d: unexpected %s", seq, err ? err : "(no error)");
    }
    json_decref(r);
    return stored;
}

static long long wait_count(const char *db, const char *sql, long long want, int timeout_ms)
{
    return h_sql_wait(&g_net, db, sql, want, timeout_ms);
}

/* Sends until the first E_STORE; the STORED ids into ids. Returns how many were STORED. */
static int fill(char (*ids)[33], int *n_ids, int base)
{
    char id[33];
    for (int i = 0; i < MAX_SENDS; i++) {
        if (!send_one(base + i, id))
            return i;
        snprintf(ids[(*n_ids)++], 33, "%s", id);
    }
    fail_msg("%d sends of %d bytes fit under store_max = 64K", MAX_SENDS, PAD);
    return -1;
}

/* Every STORED id is in social-care's inbox exactly once. */
static void delivered_once(char (*ids)[33], int n)
{
    char sql[256];
    for (int i = 0; i < n; i++) {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM inbox WHERE message_id = '%s'", ids[i]);
        if (h_sql_int(&g_net, INBOX, sql) != 1)
            fail_msg("STORED message %s is in the inbox %lld times", ids[i],
                     h_sql_int(&g_net, INBOX, sql));
    }
    assert_int_equal(
        h_sql_int(&g_net, INBOX, "SELECT count(*) - count(DISTINCT message_id) FROM inbox"), 0);
}

/* Waits until midwifery's outbox is all stored and social-care has everything, and the
 * broker has no pending delivery left. */
static void drain(void)
{
    int64_t t0 = refex_mono_ms();
    long long sent = h_sql_int(&g_net, "data/midwifery/agent.db", "SELECT count(*) FROM outbox");
    assert_int_equal(wait_count("data/midwifery/agent.db",
                                "SELECT count(*) FROM outbox WHERE state <> 'stored'", 0,
                                H_TIMEOUT_MS * 6),
                     0);
    assert_int_equal(wait_count(INBOX, "SELECT count(*) FROM inbox", sent, H_TIMEOUT_MS * 3), sent);
    assert_int_equal(wait_count(QUEUE, "SELECT count(*) FROM deliveries", 0, H_TIMEOUT_MS * 3), 0);
    assert_int_equal(wait_count(QUEUE, LIVE_SQL, 0, H_TIMEOUT_MS), 0);
    printf("drain: %lld messages in the outbox, all delivered in %lld ms\n", sent,
           (long long)(refex_mono_ms() - t0));
}

static void test_full_store_reclaims_space(void **state)
{
    (void)state;
    static const char *const agencies[] = {"midwifery", "social-care", NULL};
    char(*ids)[33] = calloc(4 * MAX_SENDS, sizeof *ids);
    int n_ids = 0;
    assert_non_null(ids);
    assert_int_equal(h_net_up(&g_net, agencies, NULL, "store_max = 64K"), 0);
    int social = h_agent_index(&g_net, "social-care");
    h_stop(&g_net.agents[social]);

    int first = fill(ids, &n_ids, 0);
    long long live_full = h_sql_int(&g_net, QUEUE, LIVE_SQL);
    long long pages_full = h_sql_int(&g_net, QUEUE, "PRAGMA page_count");
    printf("store full: %d STORED then E_STORE; %lld live bytes, %lld pages\n", first, live_full,
           pages_full);
    assert_true(first >= 10);
    assert_true(live_full <= 64 * 1024 && live_full > 64 * 1024 - 2 * (PAD + 2000));
    char path[600];
    h_path(&g_net, path, sizeof path, "logs/broker.log");
    assert_true(h_tree_contains(path, "store_max reached", 17));
    assert_true(h_alive(&g_net.broker));

    /* the recipient comes back: everything drains, the refused one by the outbox's retry */
    assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
    drain();
    long long pages_drained = h_sql_int(&g_net, QUEUE, "PRAGMA page_count");
    printf("drained: 0 live bytes, %lld pages (from %lld)\n", pages_drained, pages_full);
    assert_true(pages_drained < pages_full);
    assert_int_equal(h_sql_int(&g_net, QUEUE, "PRAGMA freelist_count"), 0);

    /* the space came back: as much again is accepted with the recipient offline */
    h_stop(&g_net.agents[social]);
    int second = fill(ids, &n_ids, 1000);
    printf("store full again: %d STORED then E_STORE\n", second);
    assert_true(second >= first - 1);
    assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
    drain();
    delivered_once(ids, n_ids);
    printf("delivered: %d STORED answers, each exactly once; %lld pages at the end\n", n_ids,
           h_sql_int(&g_net, QUEUE, "PRAGMA page_count"));
    free(ids);
}

/* A referral of about size bytes from police (no agent: sealed here) to social-care. */
static Refex__V1__Envelope *sealed(h_client *c, const refex_directory *d, size_t size,
                                   uint8_t id[16])
{
    char err[256], *summary = malloc(size + 1);
    uint8_t *b = NULL, *env = NULL;
    size_t blen = 0, elen = 0;
    assert_non_null(summary);
    memset(summary, 'x', size);
    summary[size] = 0;
    json_t *body = json_pack("{s:s}", "summary", summary);
    free(summary);
    assert_ok(
        refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, body, &b, &blen, err, sizeof err));
    json_decref(body);
    const refex_agency *rcpt[] = {refex_directory_find(d, "social-care")};
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

/* SENDs e and returns the broker's answer: 0 for STORED, else the refusal's code (and its
 * detail in detail). */
static int send_raw(h_client *c, Refex__V1__Envelope *e, const uint8_t id[16], char *detail,
                    size_t len)
{
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = e;
    f.kind_case = REFEX__V1__FRAME__KIND_SEND;
    f.send = &s;
    assert_int_equal(h_client_send(c, &f), 0);
    for (;;) {
        Refex__V1__Frame *r = h_client_recv(c, H_TIMEOUT_MS);
        assert_non_null(r);
        int code = -1;
        if (r->kind_case == REFEX__V1__FRAME__KIND_STORED &&
            memcmp(r->stored->message_id.data, id, 16) == 0)
            code = 0;
        else if (r->kind_case == REFEX__V1__FRAME__KIND_REJECTED &&
                 memcmp(r->rejected->message_id.data, id, 16) == 0) {
            code = (int)r->rejected->code;
            snprintf(detail, len, "%s", r->rejected->detail);
        }
        refex_frame_free(&r);
        if (code >= 0)
            return code;
    }
}

/* Once the broker has refused a sender's message for now, that sender's later messages are
 * refused too (E_BUSY, "behind message ...") until it sends the refused one again: a small
 * one that would fit is not stored ahead of it. */
static void test_sender_held_behind_refusal(void **state)
{
    (void)state;
    static const char *const agencies[] = {"social-care", NULL};
    static const char *const listed[] = {"police", NULL};
    char path[600], err[256], detail[512];
    uint8_t big_id[16], big2_id[16], small_id[16];
    refex_directory *d = NULL;
    h_client c;
    assert_int_equal(h_net_up(&g_net, agencies, listed, "store_max = 16K"), 0);
    int social = h_agent_index(&g_net, "social-care");
    h_stop(&g_net.agents[social]); /* nothing drains */
    h_path(&g_net, path, sizeof path, "directory.rdir");
    assert_ok(refex_directory_load(path, NULL, &d, err, sizeof err));
    assert_int_equal(h_client_open(&c, &g_net, "police", NULL), 0);
    assert_int_equal(h_client_hello(&c, "police"), 0);

    Refex__V1__Envelope *big = sealed(&c, d, 9000, big_id);
    Refex__V1__Envelope *big2 = sealed(&c, d, 9000, big2_id);
    Refex__V1__Envelope *small = sealed(&c, d, 100, small_id);
    assert_int_equal(send_raw(&c, big, big_id, detail, sizeof detail), 0);
    assert_int_equal(send_raw(&c, big2, big2_id, detail, sizeof detail), REFEX_E_STORE);
    /* small would fit, but it is behind big2 */
    assert_int_equal(send_raw(&c, small, small_id, detail, sizeof detail), REFEX_E_BUSY);
    char hex[33];
    refex_hex_encode(hex, big2_id, 16);
    assert_non_null(strstr(detail, hex));
    /* big2 again: still no room, and small still held */
    assert_int_equal(send_raw(&c, big2, big2_id, detail, sizeof detail), REFEX_E_STORE);
    assert_int_equal(send_raw(&c, small, small_id, detail, sizeof detail), REFEX_E_BUSY);
    assert_int_equal(h_sql_int(&g_net, QUEUE, "SELECT count(*) FROM messages"), 1);

    /* the recipient drains big; then big2 fits and small goes after it */
    assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
    assert_int_equal(wait_count(QUEUE, LIVE_SQL, 0, H_TIMEOUT_MS * 3), 0);
    assert_int_equal(send_raw(&c, big2, big2_id, detail, sizeof detail), 0);
    assert_int_equal(send_raw(&c, small, small_id, detail, sizeof detail), 0);
    assert_true(h_alive(&g_net.broker));
    refex__v1__envelope__free_unpacked(big, NULL);
    refex__v1__envelope__free_unpacked(big2, NULL);
    refex__v1__envelope__free_unpacked(small, NULL);
    h_client_close(&c);
    refex_directory_destroy(&d);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_full_store_reclaims_space, teardown),
        cmocka_unit_test_teardown(test_sender_held_behind_refusal, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
