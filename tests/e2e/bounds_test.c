/* End-to-end test of the broker's bounds and log hygiene (issue 11, items 2 and 3), with a
 * real broker and raw wire clients (no agents: the clients skip every agent-side check):
 * a HELLO's software string with a newline is logged escaped, on one line; an envelope that
 * expires more than 366 days after its creation is refused (E_INVAL) and not stored; an
 * unsubscription is stored only from a party, present or past, of the case; grants and
 * subscriptions stored per agency stop at case_objects_max (E_STORE); a flood of malformed
 * frames writes a bounded number of log lines, one of them the count of the rest, and the
 * broker still answers. Waits poll observable state with deadlines, never fixed sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "../unit/testing.h"
#include "harness.h"
#include "body.h"
#include "codec.h"
#include "directory.h"
#include "envelope.h"
#include "grant.h"
#include "util.h"

#define CASES "data/broker/cases.db"
#define QUEUE "data/broker/queue.db"
#define CAP   3

static h_net g_net;
static h_client g_police, g_lead; /* police and social-care, the case lead */

static int setup(void **state)
{
    (void)state;
    const char *none[] = {NULL};
    const char *listed[] = {"social-care", "police", NULL};
    if (h_net_up(&g_net, none, listed, "case_objects_max = 3") != 0)
        return -1;
    if (h_client_open(&g_police, &g_net, "police", NULL) != 0 ||
        h_client_open(&g_lead, &g_net, "social-care", NULL) != 0 ||
        h_client_hello(&g_lead, "social-care") != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_client_close(&g_police);
    h_client_close(&g_lead);
    h_net_fini(&g_net);
    return 0;
}

static void broker_log(char *path, size_t len)
{
    h_path(&g_net, path, len, "logs/broker.log");
}

/* The broker log's contents (malloc'd, NUL-terminated). */
static char *read_log(void)
{
    char path[600];
    broker_log(path, sizeof path);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static long count_lines(const char *text)
{
    long lines = 0;
    for (const char *p = text; (p = strchr(p, '\n')); p++)
        lines++;
    return lines;
}

/* Polls the broker log until it contains needle; fails after timeout_ms. */
static void wait_log(const char *needle, int timeout_ms)
{
    int64_t deadline = refex_mono_ms() + timeout_ms;
    for (;;) {
        char *text = read_log();
        int found = strstr(text, needle) != NULL;
        free(text);
        if (found)
            return;
        if (refex_mono_ms() > deadline)
            fail_msg("broker log never showed: %s", needle);
        h_pause();
    }
}

/* The next frame that is not a notice or a delivery (notices of grants and subscriptions
 * come and go; social-care is delivered the one message stored, and never acknowledges). */
static Refex__V1__Frame *next_answer(h_client *c)
{
    for (;;) {
        Refex__V1__Frame *r = h_client_recv(c, H_TIMEOUT_MS);
        if (!r || (r->kind_case != REFEX__V1__FRAME__KIND_GRANT_NOTICE &&
                   r->kind_case != REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE &&
                   r->kind_case != REFEX__V1__FRAME__KIND_DELIVER))
            return r;
        refex_frame_free(&r);
    }
}

/* Expects an ERROR (or REJECTED) with code, whose detail contains `detail` if not NULL. */
static void expect_refusal(h_client *c, int code, const char *detail)
{
    Refex__V1__Frame *r = next_answer(c);
    if (!r)
        fail_msg("no answer from the broker; wanted %s", refex_errname(code));
    int got = -1;
    const char *why = NULL;
    if (r->kind_case == REFEX__V1__FRAME__KIND_ERROR) {
        got = (int)r->error->code;
        why = r->error->detail;
    } else if (r->kind_case == REFEX__V1__FRAME__KIND_REJECTED) {
        got = (int)r->rejected->code;
        why = r->rejected->detail;
    }
    if (got != code)
        fail_msg("wanted %s, got frame %s code %s", refex_errname(code), refex_frame_kind_name(r),
                 refex_errname(got));
    if (detail && (!why || !strstr(why, detail)))
        fail_msg("detail '%s' lacks '%s'", why ? why : "", detail);
    refex_frame_free(&r);
}

static void assert_broker_alive(void)
{
    assert_true(h_alive(&g_net.broker));
}

/* ---- item 2: log injection ------------------------------------------------------------ */

static void test_hello_software_is_logged_escaped(void **state)
{
    (void)state;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Hello h = REFEX__V1__HELLO__INIT;
    h.agency = "police";
    h.software = "refex-e2e\nALERT witness: fake\r\x1b[2J";
    f.kind_case = REFEX__V1__FRAME__KIND_HELLO;
    f.hello = &h;
    assert_int_equal(h_client_send(&g_police, &f), 0);
    Refex__V1__Frame *r = h_client_recv(&g_police, H_TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_WELCOME);
    refex_frame_free(&r);
    wait_log("police online (refex-e2e\\nALERT witness: fake\\r\\x1b[2J)", H_TIMEOUT_MS);
    char *text = read_log();
    assert_null(strstr(text, "\nALERT witness: fake"));
    assert_null(strstr(text, "\x1b"));
    free(text);
    assert_broker_alive();
}

/* ---- item 3: the TTL cap --------------------------------------------------------------- */

/* Seals an information request from police to social-care with the given times. */
static Refex__V1__Envelope *seal(int64_t created, int64_t expires, uint8_t id[16])
{
    char path[600], err[256];
    refex_directory *d = NULL;
    h_path(&g_net, path, sizeof path, "directory.rdir");
    assert_ok(refex_directory_load(path, NULL, &d, err, sizeof err));
    const refex_agency *rcpt[] = {refex_directory_find(d, "social-care")};
    assert_non_null(rcpt[0]);
    json_t *body = h_required("information-request",
                              json_pack("{s:s, s:s, s:s}", "case_ref", "C-TTL-1", "request_id",
                                        "RQ-TTL", "question", "bounds test"));
    uint8_t *b = NULL, *env = NULL;
    size_t blen = 0, elen = 0;
    assert_ok(refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__INFORMATION_REQUEST, body, &b, &blen,
                                   err, sizeof err));
    refex_seal_params p = {.sender = "police",
                           .sign_sk = g_police.keys->sk->sign_sk,
                           .recipients = rcpt,
                           .n_recipients = 1,
                           .type = REFEX__V1__MESSAGE_TYPE__INFORMATION_REQUEST,
                           .case_ref = "C-TTL-1",
                           .created_at_ms = created,
                           .expires_at_ms = expires};
    assert_ok(refex_envelope_seal(&p, b, blen, &env, &elen, id));
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, elen, env);
    assert_non_null(e);
    free(b);
    free(env);
    json_decref(body);
    refex_directory_destroy(&d);
    return e;
}

/* Sends an envelope; the answer frame. */
static Refex__V1__Frame *send_envelope(int64_t created, int64_t expires, uint8_t id[16])
{
    Refex__V1__Envelope *e = seal(created, expires, id);
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = e;
    f.kind_case = REFEX__V1__FRAME__KIND_SEND;
    f.send = &s;
    assert_int_equal(h_client_send(&g_police, &f), 0);
    refex__v1__envelope__free_unpacked(e, NULL);
    return next_answer(&g_police);
}

static long long stored(const uint8_t id[16])
{
    char hex[33], sql[200];
    refex_hex_encode(hex, id, 16);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE message_id = x'%s'", hex);
    return h_sql_int(&g_net, QUEUE, sql);
}

static void test_expiry_beyond_max_ttl_refused(void **state)
{
    (void)state;
    uint8_t id[16];
    int64_t now = refex_now_ms();
    const int64_t too_far[] = {INT64_MAX, now + REFEX_MAX_TTL_MS + 1000};
    for (size_t i = 0; i < 2; i++) {
        Refex__V1__Frame *r = send_envelope(now, too_far[i], id);
        assert_non_null(r);
        assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_REJECTED);
        assert_int_equal(r->rejected->code, REFEX_E_INVAL);
        assert_non_null(strstr(r->rejected->detail, "maximum TTL"));
        assert_memory_equal(r->rejected->message_id.data, id, 16);
        refex_frame_free(&r);
        assert_int_equal(stored(id), 0);
    }
    /* A creation time near INT64_MAX cannot wrap the sum round. */
    Refex__V1__Frame *r = send_envelope(INT64_MAX - 10, INT64_MAX, id);
    assert_non_null(r);
    assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_REJECTED);
    assert_int_not_equal(r->rejected->code, REFEX_OK);
    refex_frame_free(&r);
    assert_int_equal(stored(id), 0);
    /* Exactly the maximum is allowed. */
    r = send_envelope(now, now + REFEX_MAX_TTL_MS, id);
    assert_non_null(r);
    assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_STORED);
    refex_frame_free(&r);
    assert_int_equal(stored(id), 1);
    wait_log("E_INVAL (expires_at is more than 366 days after created_at", H_TIMEOUT_MS);
    assert_broker_alive();
}

/* ---- item 3: what case objects are stored ---------------------------------------------- */

static void submit_subscription(const char *case_ref, int unsubscribed, uint64_t serial)
{
    refex_subscription s = {.agency = "police", .unsubscribed = unsubscribed, .serial = serial};
    snprintf(s.case_ref, sizeof s.case_ref, "%s", case_ref);
    s.issued_at_ms = refex_now_ms();
    uint8_t *blob = NULL;
    size_t len = 0;
    assert_ok(refex_subscription_sign(&s, g_police.keys->sk->sign_sk, &blob, &len));
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__SubscribeSubmit ss = REFEX__V1__SUBSCRIBE_SUBMIT__INIT;
    ss.subscription = refex__v1__signed_subscription__unpack(NULL, len, blob);
    assert_non_null(ss.subscription);
    f.kind_case = REFEX__V1__FRAME__KIND_SUBSCRIBE;
    f.subscribe = &ss;
    assert_int_equal(h_client_send(&g_police, &f), 0);
    refex__v1__signed_subscription__free_unpacked(ss.subscription, NULL);
    free(blob);
}

/* The lead grants (or revokes) police's membership of a case. */
static void submit_grant(const char *case_ref, int revoked, uint64_t serial)
{
    refex_grant g = {.revoked = revoked, .serial = serial};
    snprintf(g.case_ref, sizeof g.case_ref, "%s", case_ref);
    snprintf(g.lead, sizeof g.lead, "social-care");
    snprintf(g.member, sizeof g.member, "police");
    g.issued_at_ms = refex_now_ms();
    uint8_t *blob = NULL;
    size_t len = 0;
    assert_ok(refex_grant_sign(&g, g_lead.keys->sk->sign_sk, &blob, &len));
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__GrantSubmit gs = REFEX__V1__GRANT_SUBMIT__INIT;
    gs.grant = refex__v1__signed_grant__unpack(NULL, len, blob);
    assert_non_null(gs.grant);
    f.kind_case = REFEX__V1__FRAME__KIND_GRANT;
    f.grant = &gs;
    assert_int_equal(h_client_send(&g_lead, &f), 0);
    refex__v1__signed_grant__free_unpacked(gs.grant, NULL);
    free(blob);
}

/* The lead hears of its own accepted grant. */
static void expect_grant_notice(void)
{
    Refex__V1__Frame *r = h_client_recv(&g_lead, H_TIMEOUT_MS);
    while (r && (r->kind_case == REFEX__V1__FRAME__KIND_DELIVER ||
                 r->kind_case == REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE)) {
        refex_frame_free(&r);
        r = h_client_recv(&g_lead, H_TIMEOUT_MS);
    }
    assert_non_null(r);
    if (r->kind_case != REFEX__V1__FRAME__KIND_GRANT_NOTICE)
        fail_msg("wanted GRANT_NOTICE, got %s", refex_frame_kind_name(r));
    refex_frame_free(&r);
}

static long long police_subscriptions(void)
{
    return h_sql_int(&g_net, CASES,
                     "SELECT count(*) FROM case_subscriptions WHERE agency = 'police'");
}

static void test_unsubscribe_needs_a_party(void **state)
{
    (void)state;
    char case_ref[32];
    for (int i = 0; i < 10; i++) {
        snprintf(case_ref, sizeof case_ref, "C-NEVER-%d", i);
        submit_subscription(case_ref, 1, 1);
        expect_refusal(&g_police, REFEX_E_NOT_MEMBER, "was never a member");
    }
    assert_int_equal(police_subscriptions(), 0);
    /* A member that left may still unsubscribe. */
    submit_grant("C-PAST-1", 0, 1);
    expect_grant_notice();
    submit_grant("C-PAST-1", 1, 2);
    expect_grant_notice();
    submit_subscription("C-PAST-1", 1, 1);
    assert_int_equal(h_sql_wait(&g_net, CASES,
                                "SELECT count(*) FROM case_subscriptions WHERE agency = 'police'"
                                " AND case_ref = 'C-PAST-1'",
                                1, H_TIMEOUT_MS),
                     1);
    /* But not subscribe again. */
    submit_subscription("C-PAST-1", 0, 2);
    expect_refusal(&g_police, REFEX_E_NOT_MEMBER, "is not a member");
    assert_broker_alive();
}

static void test_case_objects_are_capped(void **state)
{
    (void)state;
    /* social-care leads C-PAST-1 with one grant; two more cases reach the cap. */
    submit_grant("C-CAP-1", 0, 1);
    expect_grant_notice();
    submit_grant("C-CAP-2", 0, 1);
    expect_grant_notice();
    submit_grant("C-CAP-3", 0, 1);
    expect_refusal(&g_lead, REFEX_E_STORE, "its limit");
    assert_int_equal(h_sql_int(&g_net, CASES, "SELECT count(*) FROM case_grants"), CAP);
    assert_int_equal(
        h_sql_int(&g_net, CASES, "SELECT count(*) FROM case_leads WHERE case_ref = 'C-CAP-3'"), 0);
    /* A newer grant of one held replaces it: not a new object. */
    submit_grant("C-CAP-1", 0, 2);
    expect_grant_notice();
    assert_int_equal(
        h_sql_int(&g_net, CASES, "SELECT serial FROM case_grants WHERE case_ref = 'C-CAP-1'"), 2);
    /* police holds its C-PAST-1 unsubscription; two more subscriptions reach the cap. */
    submit_subscription("C-CAP-1", 0, 1);
    submit_subscription("C-CAP-2", 0, 1);
    assert_int_equal(h_sql_wait(&g_net, CASES,
                                "SELECT count(*) FROM case_subscriptions WHERE agency = 'police'",
                                CAP, H_TIMEOUT_MS),
                     CAP);
    submit_subscription("", 0, 1);
    expect_refusal(&g_police, REFEX_E_STORE, "its limit");
    assert_int_equal(police_subscriptions(), CAP);
    assert_broker_alive();
}

/* ---- item 2: a flood of malformed frames ----------------------------------------------- */

static void test_flood_logs_bounded_lines(void **state)
{
    (void)state;
    char *before = read_log();
    long lines_before = count_lines(before);
    free(before);
    for (int i = 0; i < 2000; i++)
        assert_int_equal(h_client_send_raw(&g_police, "\xff\xff\xff\xff garbage", 12), 0);
    /* Frames are handled in order: a PONG comes after every refusal. (The broker drops an
     * answer rather than wait when the client's queue is full, as it may be now: so PING
     * again until one is answered.) */
    int errors = 0, pong = 0;
    for (uint64_t nonce = 1; nonce <= 20 && !pong; nonce++) {
        Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
        Refex__V1__Ping ping = REFEX__V1__PING__INIT;
        ping.nonce = nonce;
        f.kind_case = REFEX__V1__FRAME__KIND_PING;
        f.ping = &ping;
        assert_int_equal(h_client_send(&g_police, &f), 0);
        Refex__V1__Frame *r;
        while (!pong && (r = h_client_recv(&g_police, 2000))) {
            pong = r->kind_case == REFEX__V1__FRAME__KIND_PONG && r->pong->nonce == nonce;
            errors +=
                r->kind_case == REFEX__V1__FRAME__KIND_ERROR && r->error->code == REFEX_E_MALFORMED;
            refex_frame_free(&r);
        }
    }
    assert_true(pong);
    assert_true(errors > 0);
    /* The window ends within 10 s: then the count of the rest is logged. */
    wait_log("more warning(s) about police suppressed in 10 s", 30000);
    char *after = read_log();
    long added = count_lines(after) - lines_before;
    assert_non_null(strstr(after, "refusals: more than 20 warnings about police in 10 s"));
    free(after);
    if (added >= 50)
        fail_msg("a flood of 2,000 bad frames wrote %ld log lines", added);
    assert_broker_alive();
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_software_is_logged_escaped),
        cmocka_unit_test(test_expiry_beyond_max_ttl_refused),
        cmocka_unit_test(test_unsubscribe_needs_a_party),
        cmocka_unit_test(test_case_objects_are_capped),
        cmocka_unit_test(test_flood_logs_bounded_lines),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
