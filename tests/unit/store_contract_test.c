/* The store contract: the same cases run against every backend of refex_store (store.h),
 * the SQLite store on a file in a temp directory and the PostgreSQL store on a real server
 * (tests/pg_cluster.sh), chosen by the first argument: "sqlite", or "postgresql FILE" where
 * FILE holds the server's URI. Each case starts from an empty store. The cases for two
 * broker nodes on one store run on PostgreSQL only. SQLite-only behaviour (its file, pages,
 * a full disk) is in store_test.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <libpq-fe.h>
#include <poll.h>

#include "store.h"
#include "util.h"

#define FAR    INT64_C(4102444800000) /* 2100-01-01 */
#define SENDER "midwifery-north"
#define OTHER  "police-east"
#define MAXR   64

static const char *backend; /* "sqlite" or "postgresql" */
static char pg_url[1024];

typedef struct {
    int64_t seq;
    uint8_t id[16];
    char who[64]; /* sender (pending, expired) or recipient (receipts) */
    char rcpt[64];
    uint8_t data[1100000 / MAXR];
    size_t len;
} row;

typedef struct {
    char dir[512];
    refex_store *st, *node2;
    size_t n;
    row r[MAXR];
    uint8_t *big; /* a large envelope seen by a walk */
    size_t big_len;
} fixture;

static const char *const TWO[] = {"social-care", "health-visiting"};
static const char *const ONE[] = {"social-care"};
static const uint8_t ENV[] = {0x0a, 0x03, 'h', 'd', 'r', 0x00, 0xff, 0x12, 0x00, 0x7f};
static const uint8_t RECEIPT[] = {0x52, 0x00, 0x01, 0xfe, 0x00, 0x63};

static void make_id(uint8_t id[16], unsigned n)
{
    memset(id, 0, 16);
    id[0] = 0x5a;
    id[14] = (uint8_t)(n >> 8);
    id[15] = (uint8_t)n;
}

static void keep(fixture *f, int64_t seq, const uint8_t id[16], const char *who, const char *rcpt,
                 const uint8_t *data, size_t len)
{
    assert_true(f->n < MAXR);
    row *r = &f->r[f->n++];
    r->seq = seq;
    memcpy(r->id, id, 16);
    snprintf(r->who, sizeof r->who, "%s", who);
    snprintf(r->rcpt, sizeof r->rcpt, "%s", rcpt ? rcpt : "");
    r->len = len;
    if (len <= sizeof r->data) {
        if (len)
            memcpy(r->data, data, len);
    } else {
        free(f->big);
        f->big = malloc(len);
        assert_non_null(f->big);
        memcpy(f->big, data, len);
        f->big_len = len;
    }
}

static int on_msg(void *ctx, int64_t seq, const uint8_t id[16], const char *sender,
                  const uint8_t *env, size_t len)
{
    keep(ctx, seq, id, sender, NULL, env, len);
    return 0;
}

static int on_receipt(void *ctx, int64_t seq, const uint8_t id[16], const char *recipient,
                      const uint8_t *receipt, size_t len)
{
    keep(ctx, seq, id, recipient, NULL, receipt, len);
    return 0;
}

static int on_expired(void *ctx, const uint8_t id[16], const char *sender, const char *recipient)
{
    keep(ctx, 0, id, sender, recipient, NULL, 0);
    return 0;
}

static size_t pending(fixture *f, refex_store *st, const char *rcpt, int64_t after, int limit)
{
    f->n = 0;
    assert_ok(refex_store_pending(st, rcpt, after, limit, on_msg, f));
    return f->n;
}

static size_t receipts(fixture *f, const char *sender, int64_t after)
{
    f->n = 0;
    assert_ok(refex_store_receipts(f->st, sender, after, MAXR, on_receipt, f));
    return f->n;
}

static size_t expired(fixture *f, int64_t now)
{
    f->n = 0;
    assert_ok(refex_store_expired(f->st, now, MAXR, on_expired, f));
    return f->n;
}

static refex_store *open_one(fixture *f, uint64_t max_bytes)
{
    char err[512] = "", path[1100];
    refex_store *st = NULL;
    int rc;
    if (strcmp(backend, "sqlite") == 0) {
        snprintf(path, sizeof path, "%s/queue.db", f->dir);
        rc = refex_store_sqlite_open(path, max_bytes, 0, &st, err, sizeof err);
    } else {
        rc = refex_store_pg_open(pg_url, max_bytes, &st, err, sizeof err);
    }
    if (rc != REFEX_OK)
        fail_msg("open %s store: %s: %s", backend, refex_errname(rc), err);
    assert_string_equal(refex_store_name(st), backend);
    return st;
}

static void reopen(fixture *f, uint64_t max_bytes)
{
    refex_store_destroy(&f->st);
    f->st = open_one(f, max_bytes);
}

/* An empty database for each case: the store's tables dropped. */
static void pg_empty(void)
{
    PGconn *c = PQconnectdb(pg_url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect %s: %s", pg_url, PQerrorMessage(c));
    PGresult *r =
        PQexec(c, "SET client_min_messages = warning; DROP VIEW IF EXISTS case_parties,"
                  " case_current_parties; DROP TABLE IF EXISTS refex_state, claims, witnessed,"
                  " case_leads, case_grants, case_subscriptions,"
                  " messages, deliveries, receipts, senders");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("drop: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    testing_tmpdir(f->dir, sizeof f->dir);
    if (strcmp(backend, "postgresql") == 0)
        pg_empty();
    f->st = open_one(f, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    refex_store_destroy(&f->st);
    refex_store_destroy(&f->node2);
    testing_rmtree(f->dir);
    free(f->big);
    free(f);
    return 0;
}

static void put_batch(refex_store *st, unsigned n, const char *sender, const char *const *rcpt,
                      size_t n_rcpt, int64_t expires)
{
    uint8_t id[16];
    make_id(id, n);
    assert_ok(refex_store_begin(st));
    assert_ok(refex_store_put(st, id, sender, rcpt, n_rcpt, ENV, sizeof ENV, expires));
    assert_ok(refex_store_commit(st));
}

static int ack_batch(refex_store *st, const char *rcpt, const char *sender, unsigned n)
{
    uint8_t id[16];
    make_id(id, n);
    assert_ok(refex_store_begin(st));
    int rc = refex_store_ack(st, rcpt, sender, id, RECEIPT, sizeof RECEIPT);
    assert_ok(refex_store_commit(st));
    return rc;
}

/* ---- cases ----------------------------------------------------------------------------- */

static void test_put_pending_each_recipient(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    make_id(id, 1);
    assert_int_equal(refex_store_count(f->st), 0);
    put_batch(f->st, 1, SENDER, TWO, 2, FAR);
    assert_int_equal(refex_store_count(f->st), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pending(f, f->st, TWO[i], 0, 10), 1);
        assert_memory_equal(f->r[0].id, id, 16);
        assert_string_equal(f->r[0].who, SENDER);
        assert_int_equal(f->r[0].len, sizeof ENV);
        assert_memory_equal(f->r[0].data, ENV, sizeof ENV); /* bytes with NULs, unchanged */
        assert_true(f->r[0].seq > 0);
    }
    assert_int_equal(pending(f, f->st, "police-east", 0, 10), 0);
}

static void test_cursor_limit_and_order(void **state)
{
    fixture *f = *state;
    for (unsigned i = 1; i <= 6; i++)
        put_batch(f->st, i, i % 2 ? SENDER : OTHER, ONE, 1, FAR);
    assert_int_equal(pending(f, f->st, ONE[0], 0, 4), 4);
    int64_t last = 0;
    for (size_t i = 0; i < 4; i++) {
        assert_true(f->r[i].seq > last); /* arrival order, across senders */
        last = f->r[i].seq;
        assert_int_equal(f->r[i].id[15], i + 1);
    }
    assert_int_equal(pending(f, f->st, ONE[0], last, 10), 2);
    assert_int_equal(f->r[0].id[15], 5);
    assert_int_equal(f->r[1].id[15], 6);
}

static void test_durable_rollback_and_uncommitted(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    put_batch(f->st, 1, SENDER, ONE, 1, FAR);
    make_id(id, 2);
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_put(f->st, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR));
    refex_store_rollback(f->st);
    make_id(id, 3);
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_put(f->st, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR));
    reopen(f, 0); /* destroyed with its batch open */
    assert_int_equal(pending(f, f->st, ONE[0], 0, 10), 1);
    assert_int_equal(f->r[0].id[15], 1);
}

static void test_duplicates(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    make_id(id, 7);
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_put(f->st, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR));
    uint64_t seq = refex_store_put_seq(f->st);
    assert_true(seq > 0);
    assert_rc(refex_store_put(f->st, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR), REFEX_E_DUPLICATE);
    assert_int_equal(refex_store_put_seq(f->st), seq);
    assert_true(refex_store_batch_alive(f->st)); /* a duplicate does not end the batch */
    assert_ok(refex_store_put(f->st, id, OTHER, ONE, 1, ENV, sizeof ENV, FAR)); /* per sender */
    assert_ok(refex_store_commit(f->st));
    assert_ok(refex_store_begin(f->st));
    assert_rc(refex_store_put(f->st, id, SENDER, TWO, 2, ENV, sizeof ENV, FAR), REFEX_E_DUPLICATE);
    assert_int_equal(refex_store_put_seq(f->st), seq);
    assert_ok(refex_store_commit(f->st));
    assert_int_equal(refex_store_count(f->st), 2);
}

static void test_ack_receipts(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    make_id(id, 1);
    put_batch(f->st, 1, SENDER, TWO, 2, FAR);
    assert_ok(ack_batch(f->st, TWO[0], SENDER, 1));
    assert_rc(ack_batch(f->st, TWO[0], SENDER, 1), REFEX_E_NOTFOUND);        /* twice */
    assert_rc(ack_batch(f->st, "police-east", SENDER, 1), REFEX_E_NOTFOUND); /* not to it */
    assert_rc(ack_batch(f->st, TWO[1], SENDER, 9), REFEX_E_NOTFOUND);        /* no such id */
    assert_int_equal(pending(f, f->st, TWO[0], 0, 10), 0);
    assert_int_equal(pending(f, f->st, TWO[1], 0, 10), 1);
    assert_int_equal(receipts(f, SENDER, 0), 1);
    assert_memory_equal(f->r[0].id, id, 16);
    assert_string_equal(f->r[0].who, TWO[0]);
    assert_int_equal(f->r[0].len, sizeof RECEIPT);
    assert_memory_equal(f->r[0].data, RECEIPT, sizeof RECEIPT);
    int64_t first = f->r[0].seq;
    assert_ok(ack_batch(f->st, TWO[1], SENDER, 1));
    assert_int_equal(receipts(f, SENDER, first), 1);
    assert_string_equal(f->r[0].who, TWO[1]);
    assert_int_equal(receipts(f, OTHER, 0), 0);
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_receipt_ack(f->st, SENDER, id, TWO[0]));
    assert_rc(refex_store_receipt_ack(f->st, SENDER, id, TWO[0]), REFEX_E_NOTFOUND);
    assert_ok(refex_store_commit(f->st));
    assert_int_equal(receipts(f, SENDER, 0), 1);
    assert_int_equal(refex_store_count(f->st), 0);
}

static void test_live_bytes_and_purge(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    make_id(id, 1);
    put_batch(f->st, 1, SENDER, TWO, 2, 1000); /* long expired by the clock, kept until acked */
    assert_int_equal(refex_store_live_bytes(f->st), sizeof ENV);
    assert_ok(ack_batch(f->st, TWO[0], SENDER, 1));
    assert_int_equal(refex_store_live_bytes(f->st), sizeof ENV);
    assert_ok(ack_batch(f->st, TWO[1], SENDER, 1));
    assert_int_equal(refex_store_live_bytes(f->st), 0); /* the last delivery drops the body */
    assert_ok(refex_store_begin(f->st));
    assert_rc(refex_store_put(f->st, id, SENDER, ONE, 1, ENV, sizeof ENV, 1000), REFEX_E_DUPLICATE);
    assert_ok(refex_store_purge(f->st, refex_now_ms()));
    assert_ok(refex_store_commit(f->st));
    reopen(f, 0);
    assert_int_equal(refex_store_live_bytes(f->st), 0);
    /* purged: no longer a duplicate, and a new seq */
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_put(f->st, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR));
    assert_ok(refex_store_commit(f->st));
}

static void test_seq_never_reused(void **state)
{
    fixture *f = *state;
    put_batch(f->st, 1, SENDER, ONE, 1, 1000);
    assert_int_equal(pending(f, f->st, ONE[0], 0, 10), 1);
    int64_t seq = f->r[0].seq;
    assert_ok(ack_batch(f->st, ONE[0], SENDER, 1));
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_purge(f->st, refex_now_ms()));
    assert_ok(refex_store_commit(f->st));
    reopen(f, 0);
    put_batch(f->st, 2, SENDER, ONE, 1, FAR);
    assert_int_equal(pending(f, f->st, ONE[0], 0, 10), 1);
    assert_true(f->r[0].seq > seq);
}

static void test_expired(void **state)
{
    fixture *f = *state;
    int64_t now = refex_now_ms();
    put_batch(f->st, 1, SENDER, TWO, 2, now - 1000);
    put_batch(f->st, 2, SENDER, ONE, 1, FAR);
    assert_int_equal(expired(f, now), 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(f->r[i].id[15], 1);
        assert_string_equal(f->r[i].who, SENDER);
    }
    assert_true(strcmp(f->r[0].rcpt, f->r[1].rcpt) != 0);
    assert_ok(ack_batch(f->st, TWO[0], SENDER, 1)); /* as a non-delivery report would */
    assert_int_equal(expired(f, now), 1);
    assert_string_equal(f->r[0].rcpt, TWO[1]);
}

static void test_store_max(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    reopen(f, 3 * sizeof ENV);
    for (unsigned i = 1; i <= 3; i++)
        put_batch(f->st, i, SENDER, ONE, 1, FAR);
    make_id(id, 4);
    assert_ok(refex_store_begin(f->st));
    assert_rc(refex_store_put(f->st, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR), REFEX_E_STORE);
    assert_non_null(strstr(refex_store_refusal(f->st), "full"));
    assert_true(refex_store_batch_alive(f->st)); /* refused alone */
    make_id(id, 2);
    assert_rc(refex_store_put(f->st, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR), REFEX_E_DUPLICATE);
    assert_ok(refex_store_ack(f->st, ONE[0], SENDER, id, RECEIPT, sizeof RECEIPT));
    make_id(id, 4);
    assert_ok(refex_store_put(f->st, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR)); /* room now */
    assert_ok(refex_store_commit(f->st));
    assert_int_equal(refex_store_count(f->st), 3);
}

static void test_large_envelope(void **state)
{
    fixture *f = *state;
    size_t len = (1u << 20) + 17;
    uint8_t *env = malloc(len), id[16];
    assert_non_null(env);
    for (size_t i = 0; i < len; i++)
        env[i] = (uint8_t)(i * 131u);
    make_id(id, 1);
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_put(f->st, id, SENDER, ONE, 1, env, len, FAR));
    assert_ok(refex_store_commit(f->st));
    assert_int_equal(pending(f, f->st, ONE[0], 0, 1), 1);
    assert_int_equal(f->big_len, len);
    assert_memory_equal(f->big, env, len);
    free(env);
}

static void test_generation_and_highs(void **state)
{
    fixture *f = *state;
    uint8_t g1[16], g2[16], g3[16];
    uint64_t high = 99;
    refex_store_generation(f->st, g1);
    assert_ok(refex_store_sender_high(f->st, SENDER, &high));
    assert_int_equal(high, 0);
    put_batch(f->st, 1, SENDER, ONE, 1, FAR);
    put_batch(f->st, 2, OTHER, ONE, 1, FAR);
    assert_int_equal(pending(f, f->st, ONE[0], 0, 10), 2);
    assert_ok(refex_store_sender_high(f->st, SENDER, &high));
    assert_int_equal(high, f->r[0].seq);
    reopen(f, 0);
    refex_store_generation(f->st, g2);
    assert_memory_equal(g1, g2, 16); /* the same store */
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_renew(f->st));
    refex_store_rollback(f->st);
    refex_store_generation(f->st, g2);
    assert_memory_equal(g1, g2, 16); /* not renewed: its batch was lost */
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_renew(f->st));
    assert_ok(refex_store_commit(f->st));
    refex_store_generation(f->st, g2);
    assert_memory_not_equal(g1, g2, 16);
    reopen(f, 0);
    refex_store_generation(f->st, g3);
    assert_memory_equal(g2, g3, 16);
    assert_ok(refex_store_sender_high(f->st, OTHER, &high));
    assert_int_equal(high, f->r[1].seq);
}

/* ---- two broker nodes on one store (PostgreSQL) ----------------------------------------- */

static void test_two_nodes_share_order_and_counts(void **state)
{
    fixture *f = *state;
    uint8_t id[16], g1[16], g2[16];
    f->node2 = open_one(f, 2 * sizeof ENV);
    put_batch(f->st, 1, SENDER, ONE, 1, FAR);
    put_batch(f->node2, 2, OTHER, ONE, 1, FAR);
    put_batch(f->st, 3, SENDER, ONE, 1, FAR);
    /* either node sees all three, in one order of seqs */
    assert_int_equal(pending(f, f->node2, ONE[0], 0, 10), 3);
    assert_true(f->r[0].seq < f->r[1].seq && f->r[1].seq < f->r[2].seq);
    assert_int_equal(f->r[1].id[15], 2);
    /* a duplicate is one whichever node it reaches */
    make_id(id, 1);
    assert_ok(refex_store_begin(f->node2));
    assert_rc(refex_store_put(f->node2, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR),
              REFEX_E_DUPLICATE);
    /* node2's cap counts what node 1 stored: three are queued, two allowed */
    make_id(id, 4);
    assert_rc(refex_store_put(f->node2, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR), REFEX_E_STORE);
    assert_ok(refex_store_commit(f->node2));
    /* an ack on one node, its receipt seen from the other */
    assert_ok(ack_batch(f->node2, ONE[0], SENDER, 1));
    assert_int_equal(receipts(f, SENDER, 0), 1);
    /* a generation renewed on one node is the other's from its next batch */
    assert_ok(refex_store_begin(f->node2));
    assert_ok(refex_store_renew(f->node2));
    assert_ok(refex_store_commit(f->node2));
    refex_store_generation(f->node2, g2);
    put_batch(f->st, 5, SENDER, ONE, 1, FAR);
    refex_store_generation(f->st, g1);
    assert_memory_equal(g1, g2, 16);
}

/* A batch holds the store's write lock until it ends: the other node's writing batch waits
 * for it, and then gets the seq after the first one's. */
static void test_two_nodes_batches_serialise(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    f->node2 = open_one(f, 0);
    make_id(id, 1);
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_put(f->st, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR));
    uint64_t first = refex_store_put_seq(f->st);
    /* node2's read does not wait, and does not see the uncommitted message */
    assert_int_equal(pending(f, f->node2, ONE[0], 0, 10), 0);
    assert_ok(refex_store_commit(f->st));
    put_batch(f->node2, 2, OTHER, ONE, 1, FAR);
    assert_int_equal(pending(f, f->st, ONE[0], 0, 10), 2);
    assert_int_equal(f->r[0].seq, first);
    assert_true(f->r[1].seq > (int64_t)first);
}

static void test_two_nodes_claims(void **state)
{
    fixture *f = *state;
    uint64_t e1 = 0, e2 = 0, e3 = 0;
    f->node2 = open_one(f, 0);
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_claim(f->st, ONE[0], &e1));
    assert_ok(refex_store_commit(f->st));
    assert_int_equal(refex_store_holds(f->st, ONE[0], e1), 1);
    assert_int_equal(refex_store_holds(f->node2, ONE[0], e1), 0); /* not node2's */
    assert_ok(refex_store_begin(f->node2));
    assert_ok(refex_store_claim(f->node2, ONE[0], &e2));
    assert_ok(refex_store_commit(f->node2));
    assert_true(e2 > e1);
    assert_int_equal(refex_store_holds(f->st, ONE[0], e1), 0); /* taken: node 1 stops */
    assert_int_equal(refex_store_holds(f->node2, ONE[0], e2), 1);
    /* a claim in a batch that is lost is not taken */
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_claim(f->st, ONE[0], &e3));
    refex_store_rollback(f->st);
    assert_int_equal(refex_store_holds(f->node2, ONE[0], e2), 1);
    assert_int_equal(refex_store_holds(f->st, TWO[1], 0), 0); /* never claimed */
}

static void on_wake(void *ctx, const char *agency)
{
    fixture *f = ctx;
    keep(f, 0, (const uint8_t *)"0123456789abcdef", agency, NULL, NULL, 0);
}

/* Waits for node2's wake-ups (its descriptor readable) until one names want. */
static int woken(fixture *f, const char *want)
{
    for (int tries = 0; tries < 50; tries++) {
        struct pollfd pfd = {refex_store_wake_fd(f->node2), POLLIN, 0};
        assert_true(pfd.fd >= 0);
        poll(&pfd, 1, 100);
        f->n = 0;
        refex_store_wakeups(f->node2, on_wake, f);
        for (size_t i = 0; i < f->n; i++)
            if (strcmp(f->r[i].who, want) == 0)
                return 1;
    }
    return 0;
}

static void test_two_nodes_wake_each_other(void **state)
{
    fixture *f = *state;
    f->node2 = open_one(f, 0);
    put_batch(f->st, 1, SENDER, TWO, 2, FAR);
    assert_true(woken(f, TWO[0]));
    put_batch(f->st, 2, SENDER, ONE, 1, FAR);
    assert_ok(ack_batch(f->st, ONE[0], SENDER, 2));
    assert_true(woken(f, SENDER)); /* a receipt waits for the sender */
    /* a rolled-back batch wakes nobody */
    uint8_t id[16];
    make_id(id, 3);
    assert_ok(refex_store_begin(f->st));
    assert_ok(refex_store_put(f->st, id, OTHER, (const char *const[]){"police-east"}, 1, ENV,
                              sizeof ENV, FAR));
    refex_store_rollback(f->st);
    assert_false(woken(f, "police-east"));
}

int main(int argc, char **argv)
{
    backend = argc > 1 ? argv[1] : "sqlite";
    if (strcmp(backend, "postgresql") == 0) {
        uint8_t *url = NULL;
        size_t len = 0;
        if (argc < 3 || refex_file_read(argv[2], sizeof pg_url - 1, &url, &len) != REFEX_OK) {
            fprintf(stderr, "usage: store_contract_test postgresql FILE (FILE: the URI, from "
                            "tests/pg_cluster.sh)\n");
            return 2;
        }
        snprintf(pg_url, sizeof pg_url, "%.*s", (int)strcspn((char *)url, "\n"), (char *)url);
        free(url);
    } else if (strcmp(backend, "sqlite") != 0) {
        fprintf(stderr, "usage: store_contract_test [sqlite | postgresql FILE]\n");
        return 2;
    }
    if (refex_init() != REFEX_OK)
        return 1;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest common[] = {
        T(test_put_pending_each_recipient),
        T(test_cursor_limit_and_order),
        T(test_durable_rollback_and_uncommitted),
        T(test_duplicates),
        T(test_ack_receipts),
        T(test_live_bytes_and_purge),
        T(test_seq_never_reused),
        T(test_expired),
        T(test_store_max),
        T(test_large_envelope),
        T(test_generation_and_highs),
    };
    const struct CMUnitTest nodes[] = {
        T(test_two_nodes_share_order_and_counts),
        T(test_two_nodes_batches_serialise),
        T(test_two_nodes_claims),
        T(test_two_nodes_wake_each_other),
    };
    int failed = cmocka_run_group_tests_name(backend, common, NULL, NULL);
    if (strcmp(backend, "postgresql") == 0)
        failed += cmocka_run_group_tests_name("two nodes", nodes, NULL, NULL);
    return failed;
}
