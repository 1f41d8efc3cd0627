/* Tests for lib/store_sqlite.c through the refex_store operations, on a real SQLite file in a
 * fresh temp directory: durability across reopen, duplicates, per-recipient delivery, receipts,
 * expiry, purge and the size cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"
#include "util.h"

#define MAX_ROWS 128
#define DATA_MAX 4096
#define FAR      INT64_C(4102444800000) /* 2100-01-01: never expires during a test */
#define SENDER   "midwifery-north"
#define OTHER    "police-east"

/* One row seen by a pending, receipts or expired walk. */
typedef struct {
    int64_t seq;
    uint8_t id[16];
    char sender[64];    /* pending and expired */
    char recipient[64]; /* receipts and expired */
    uint8_t data[DATA_MAX];
    size_t len;
} row;

/* Collects what a walk visits; the walk is told to stop after `stop_after` rows if non-zero. */
typedef struct {
    size_t n;
    size_t stop_after;
    row r[MAX_ROWS];
} rows;

typedef struct {
    char dir[512];
    char path[1024];
    refex_store *st;
    rows seen;
} fixture;

static const char *const TWO[] = {"social-care", "health-visiting"};
static const char *const ONE[] = {"social-care"};
/* binary, with NUL bytes, so nothing treats the envelope as a string */
static const uint8_t ENV[] = {0x0a, 0x03, 'h', 'd', 'r', 0x00, 0xff, 0x12, 0x00, 0x7f};
static const uint8_t RECEIPT[] = {0x52, 0x00, 0x01, 0xfe, 0x00, 0x63};

static void make_id(uint8_t id[16], unsigned n)
{
    memset(id, 0, 16);
    id[0] = 0xa5;
    id[13] = (uint8_t)(n >> 16);
    id[14] = (uint8_t)(n >> 8);
    id[15] = (uint8_t)n;
}

/* A deterministic envelope of len bytes that differs for every n. */
static void make_env(uint8_t *env, size_t len, unsigned n)
{
    for (size_t i = 0; i < len; i++)
        env[i] = (uint8_t)(n * 31u + i * 7u);
    if (len > 0)
        env[0] = 0x00;
}

static int on_msg(void *ctx, int64_t seq, const uint8_t id[16], const char *sender,
                  const uint8_t *env, size_t env_len)
{
    rows *rs = ctx;
    assert_true(rs->n < MAX_ROWS);
    assert_true(env_len <= DATA_MAX);
    assert_non_null(sender);
    row *r = &rs->r[rs->n++];
    r->seq = seq;
    memcpy(r->id, id, 16);
    snprintf(r->sender, sizeof r->sender, "%s", sender);
    r->recipient[0] = '\0';
    if (env_len > 0)
        memcpy(r->data, env, env_len);
    r->len = env_len;
    return rs->stop_after && rs->n >= rs->stop_after ? 1 : 0;
}

static int on_receipt(void *ctx, int64_t seq, const uint8_t id[16], const char *recipient,
                      const uint8_t *receipt, size_t len)
{
    rows *rs = ctx;
    assert_true(rs->n < MAX_ROWS);
    assert_true(len <= DATA_MAX);
    assert_non_null(recipient);
    row *r = &rs->r[rs->n++];
    r->seq = seq;
    memcpy(r->id, id, 16);
    r->sender[0] = '\0';
    snprintf(r->recipient, sizeof r->recipient, "%s", recipient);
    if (len > 0)
        memcpy(r->data, receipt, len);
    r->len = len;
    return rs->stop_after && rs->n >= rs->stop_after ? 1 : 0;
}

static int on_expired(void *ctx, const uint8_t id[16], const char *sender, const char *recipient)
{
    rows *rs = ctx;
    assert_true(rs->n < MAX_ROWS);
    assert_non_null(sender);
    assert_non_null(recipient);
    row *r = &rs->r[rs->n++];
    r->seq = 0;
    memcpy(r->id, id, 16);
    snprintf(r->sender, sizeof r->sender, "%s", sender);
    snprintf(r->recipient, sizeof r->recipient, "%s", recipient);
    r->len = 0;
    return rs->stop_after && rs->n >= rs->stop_after ? 1 : 0;
}

static void reset_seen(fixture *f, size_t stop_after)
{
    f->seen.n = 0;
    f->seen.stop_after = stop_after;
}

static size_t pending(fixture *f, const char *recipient, int64_t after, int limit)
{
    reset_seen(f, 0);
    assert_ok(f->st->ops->pending(f->st->impl, recipient, after, limit, on_msg, &f->seen));
    return f->seen.n;
}

static size_t receipts(fixture *f, const char *sender, int64_t after, int limit)
{
    reset_seen(f, 0);
    assert_ok(f->st->ops->receipts(f->st->impl, sender, after, limit, on_receipt, &f->seen));
    return f->seen.n;
}

static size_t expired(fixture *f, int64_t now, int limit)
{
    reset_seen(f, 0);
    assert_ok(f->st->ops->expired(f->st->impl, now, limit, on_expired, &f->seen));
    return f->seen.n;
}

static int has_expired(const rows *rs, const uint8_t id[16], const char *sender,
                       const char *recipient)
{
    for (size_t i = 0; i < rs->n; i++)
        if (memcmp(rs->r[i].id, id, 16) == 0 && strcmp(rs->r[i].sender, sender) == 0 &&
            strcmp(rs->r[i].recipient, recipient) == 0)
            return 1;
    return 0;
}

static int put(fixture *f, const uint8_t id[16], const char *sender, const char *const *rcpt,
               size_t n_rcpt, const uint8_t *env, size_t env_len, int64_t expires)
{
    return f->st->ops->put(f->st->impl, id, sender, rcpt, n_rcpt, env, env_len, expires);
}

/* One message in its own committed batch. */
static void put_committed(fixture *f, const uint8_t id[16], const char *sender,
                          const char *const *rcpt, size_t n_rcpt, int64_t expires)
{
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(put(f, id, sender, rcpt, n_rcpt, ENV, sizeof ENV, expires));
    assert_ok(f->st->ops->commit(f->st->impl));
}

static int ack(fixture *f, const char *recipient, const char *sender, const uint8_t id[16],
               const uint8_t *receipt, size_t len)
{
    return f->st->ops->ack(f->st->impl, recipient, sender, id, receipt, len);
}

static int ack_committed(fixture *f, const char *recipient, const char *sender,
                         const uint8_t id[16])
{
    assert_ok(f->st->ops->begin(f->st->impl));
    int rc = ack(f, recipient, sender, id, RECEIPT, sizeof RECEIPT);
    assert_ok(f->st->ops->commit(f->st->impl));
    return rc;
}

static int64_t count(fixture *f)
{
    return f->st->ops->count(f->st->impl);
}

static void open_store_flags(fixture *f, uint64_t max_bytes, unsigned flags)
{
    char err[512] = "";
    int rc = refex_store_sqlite_open(f->path, max_bytes, flags, &f->st, err, sizeof err);
    if (rc != REFEX_OK)
        fail_msg("refex_store_sqlite_open: %s: %s", refex_errname(rc), err);
    assert_non_null(f->st);
    assert_non_null(f->st->ops);
}

static void open_store(fixture *f, uint64_t max_bytes)
{
    open_store_flags(f, max_bytes, 0);
}

static void reopen(fixture *f)
{
    refex_store_destroy(&f->st);
    assert_null(f->st);
    open_store(f, 0);
}

/* Runs one single-value query on a separate read-only connection to the store's file, binding
 * id (if given) to ?1. Returns the integer in the first column, or -1 if there is no row. */
static int64_t ro_query(const fixture *f, const char *sql, const uint8_t *id)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *ps = NULL;
    int64_t v = -1;
    if (sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        fail_msg("read-only open of %s: %s", f->path, db ? sqlite3_errmsg(db) : "?");
    if (sqlite3_prepare_v2(db, sql, -1, &ps, NULL) != SQLITE_OK)
        fail_msg("prepare %s: %s", sql, sqlite3_errmsg(db));
    if (id)
        sqlite3_bind_blob(ps, 1, id, 16, SQLITE_STATIC);
    int rc = sqlite3_step(ps);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(ps, 0);
    else if (rc != SQLITE_DONE)
        fail_msg("step %s: %s", sql, sqlite3_errmsg(db));
    sqlite3_finalize(ps);
    sqlite3_close(db);
    return v;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    testing_tmpdir(f->dir, sizeof f->dir);
    snprintf(f->path, sizeof f->path, "%s/broker.db", f->dir);
    open_store(f, 0);
    *state = f;
    return 0;
}

/* For tests that open the store themselves. */
static int setup_closed(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    testing_tmpdir(f->dir, sizeof f->dir);
    snprintf(f->path, sizeof f->path, "%s/broker.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    refex_store_destroy(&f->st);
    testing_rmtree(f->dir);
    free(f);
    return 0;
}

/* ---- open ---------------------------------------------------------------------------- */

static void test_open_creates_file(void **state)
{
    fixture *f = *state;
    struct stat sb;
    uint8_t id[16];
    assert_int_not_equal(stat(f->path, &sb), 0);
    open_store(f, 0);
    assert_int_equal(stat(f->path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_string_equal(f->st->ops->name, "sqlite");
    assert_int_equal(count(f), 0);
    assert_int_equal(pending(f, "social-care", 0, 100), 0);
    assert_int_equal(receipts(f, SENDER, 0, 100), 0);
    assert_int_equal(expired(f, FAR, 100), 0);

    make_id(id, 1);
    put_committed(f, id, SENDER, ONE, 1, FAR);
    /* the committed row is visible to another connection */
    assert_int_equal(ro_query(f, "SELECT count(*) FROM messages", NULL), 1);
}

/* Reads a text PRAGMA into buf. */
static void pragma_text(sqlite3 *db, const char *sql, char *buf, size_t len)
{
    sqlite3_stmt *ps = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &ps, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(ps), SQLITE_ROW);
    snprintf(buf, len, "%s", (const char *)sqlite3_column_text(ps, 0));
    sqlite3_finalize(ps);
}

static void test_open_wal_and_synchronous_full(void **state)
{
    fixture *f = *state;
    char mode[32], sync[32], real_a[PATH_MAX], real_b[PATH_MAX];
    sqlite3 *db = NULL;

    /* journal_mode=WAL is a property of the file: a separate read-only connection sees it */
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    pragma_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal");
    sqlite3_close(db);

    /* synchronous is per connection, so it can only be read on the store's own connection.
     * White-box: the backend's private struct starts with its sqlite3 handle; the file name
     * check below makes sure that is still so before the PRAGMA is trusted. */
    db = *(sqlite3 *const *)f->st->impl;
    assert_non_null(db);
    const char *fname = sqlite3_db_filename(db, "main");
    assert_non_null(fname);
    assert_non_null(realpath(fname, real_a));
    assert_non_null(realpath(f->path, real_b));
    assert_string_equal(real_a, real_b);
    pragma_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal");
    pragma_text(db, "PRAGMA synchronous", sync, sizeof sync);
    assert_string_equal(sync, "2"); /* FULL */
}

static void expect_open_fails(const char *path)
{
    char err[512] = "";
    refex_store *st = (refex_store *)&st;
    int rc = refex_store_sqlite_open(path, 0, 0, &st, err, sizeof err);
    if (rc == REFEX_OK)
        fail_msg("open of %s succeeded", path);
    assert_null(st);
    assert_true(err[0] != '\0');
    assert_non_null(strstr(err, path));
    refex_store_destroy(&st);
}

static void test_open_errors(void **state)
{
    fixture *f = *state;
    char path[1200];
    FILE *fp;

    /* a directory that does not exist */
    snprintf(path, sizeof path, "%s/no/such/dir/broker.db", f->dir);
    expect_open_fails(path);

    /* a parent that is a regular file */
    snprintf(path, sizeof path, "%s/plain", f->dir);
    assert_non_null(fp = fopen(path, "w"));
    fclose(fp);
    snprintf(path, sizeof path, "%s/plain/broker.db", f->dir);
    expect_open_fails(path);

    /* the path is a directory */
    expect_open_fails(f->dir);

    /* a file that is not a database */
    snprintf(path, sizeof path, "%s/garbage.db", f->dir);
    assert_non_null(fp = fopen(path, "w"));
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database file. ", fp);
    fclose(fp);
    expect_open_fails(path);

    /* a read-only directory (root can write anywhere, so only when not root) */
    if (geteuid() != 0) {
        snprintf(path, sizeof path, "%s/ro", f->dir);
        assert_int_equal(mkdir(path, 0500), 0);
        snprintf(path, sizeof path, "%s/ro/broker.db", f->dir);
        expect_open_fails(path);
        snprintf(path, sizeof path, "%s/ro", f->dir);
        assert_int_equal(chmod(path, 0700), 0);
    }
}

/* ---- put and pending ----------------------------------------------------------------- */

static void test_put_then_pending(void **state)
{
    fixture *f = *state;
    uint8_t id[16], env[sizeof ENV];
    char rcpt_buf[2][32];
    const char *rcpt[2] = {rcpt_buf[0], rcpt_buf[1]};
    make_id(id, 1);
    memcpy(env, ENV, sizeof env);
    snprintf(rcpt_buf[0], sizeof rcpt_buf[0], "%s", TWO[0]);
    snprintf(rcpt_buf[1], sizeof rcpt_buf[1], "%s", TWO[1]);

    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(put(f, id, SENDER, rcpt, 2, env, sizeof env, FAR));
    /* the caller's buffers may be reused as soon as put returns */
    memset(env, 0, sizeof env);
    memset(rcpt_buf, 'x', sizeof rcpt_buf[0] - 1);
    assert_ok(f->st->ops->commit(f->st->impl));

    int64_t seq = 0;
    for (size_t r = 0; r < 2; r++) {
        assert_int_equal(pending(f, TWO[r], 0, 100), 1);
        const row *m = &f->seen.r[0];
        assert_true(m->seq > 0);
        if (r == 0)
            seq = m->seq;
        assert_int_equal(m->seq, seq); /* one message, one seq for every recipient */
        assert_memory_equal(m->id, id, 16);
        assert_string_equal(m->sender, SENDER);
        assert_int_equal(m->len, sizeof ENV);
        assert_memory_equal(m->data, ENV, sizeof ENV);
    }
    /* the sender and other agencies have nothing pending */
    assert_int_equal(pending(f, SENDER, 0, 100), 0);
    assert_int_equal(pending(f, "police-east", 0, 100), 0);
    assert_int_equal(pending(f, "social", 0, 100), 0);
    assert_int_equal(pending(f, "", 0, 100), 0);
    assert_int_equal(count(f), 2);
}

static void test_empty_envelope(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    make_id(id, 2);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(put(f, id, SENDER, ONE, 1, ENV, 0, FAR));
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(pending(f, ONE[0], 0, 100), 1);
    assert_int_equal(f->seen.r[0].len, 0);
    assert_memory_equal(f->seen.r[0].id, id, 16);
}

static void test_pending_cursor_and_limit(void **state)
{
    fixture *f = *state;
    uint8_t id[5][16];
    int64_t seq[5];
    assert_ok(f->st->ops->begin(f->st->impl));
    for (unsigned i = 0; i < 5; i++) {
        make_id(id[i], 10 + i);
        assert_ok(put(f, id[i], SENDER, ONE, 1, ENV, sizeof ENV, FAR));
    }
    assert_ok(f->st->ops->commit(f->st->impl));

    assert_int_equal(pending(f, ONE[0], 0, 100), 5);
    for (unsigned i = 0; i < 5; i++) {
        seq[i] = f->seen.r[i].seq;
        assert_memory_equal(f->seen.r[i].id, id[i], 16);
        if (i > 0)
            assert_true(seq[i] > seq[i - 1]);
    }

    /* limit */
    assert_int_equal(pending(f, ONE[0], 0, 2), 2);
    assert_memory_equal(f->seen.r[0].id, id[0], 16);
    assert_memory_equal(f->seen.r[1].id, id[1], 16);
    assert_int_equal(pending(f, ONE[0], 0, 1), 1);
    assert_memory_equal(f->seen.r[0].id, id[0], 16);
    assert_int_equal(pending(f, ONE[0], 0, 0), 0);

    /* cursor: seq > after */
    assert_int_equal(pending(f, ONE[0], seq[1], 2), 2);
    assert_int_equal(f->seen.r[0].seq, seq[2]);
    assert_int_equal(f->seen.r[1].seq, seq[3]);
    assert_int_equal(pending(f, ONE[0], seq[3], 2), 1);
    assert_int_equal(f->seen.r[0].seq, seq[4]);
    assert_int_equal(pending(f, ONE[0], seq[4], 100), 0);
    assert_int_equal(pending(f, ONE[0], seq[0] - 1, 100), 5);
    assert_int_equal(pending(f, ONE[0], seq[2] - 1, 100), 3);
    assert_int_equal(f->seen.r[0].seq, seq[2]);

    /* a visitor that returns non-zero ends the walk early, and that is not an error */
    reset_seen(f, 2);
    assert_ok(f->st->ops->pending(f->st->impl, ONE[0], 0, 100, on_msg, &f->seen));
    assert_int_equal(f->seen.n, 2);
    /* and the store is still usable afterwards */
    assert_int_equal(pending(f, ONE[0], 0, 100), 5);
}

static void test_arrival_order_interleaved(void **state)
{
    fixture *f = *state;
    enum { N = 50 };
    const char *const both[] = {"social-care", "education-west"};
    uint8_t id[N][16];
    const char *from[N];
    size_t n_other = 0;

    /* two senders, irregularly interleaved, in batches of 7 */
    assert_ok(f->st->ops->begin(f->st->impl));
    for (unsigned i = 0; i < N; i++) {
        from[i] = (i % 3 == 0 || i % 7 == 5) ? OTHER : SENDER;
        make_id(id[i], 100 + i);
        uint8_t env[32];
        make_env(env, sizeof env, i);
        /* OTHER's messages also go to education-west */
        int to_both = strcmp(from[i], OTHER) == 0;
        n_other += (size_t)to_both;
        assert_ok(put(f, id[i], from[i], both, to_both ? 2 : 1, env, sizeof env, FAR));
        if (i % 7 == 6) {
            assert_ok(f->st->ops->commit(f->st->impl));
            assert_ok(f->st->ops->begin(f->st->impl));
        }
    }
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(count(f), N + (int64_t)n_other);

    assert_int_equal(pending(f, "social-care", 0, 1000), N);
    for (unsigned i = 0; i < N; i++) {
        uint8_t env[32];
        make_env(env, sizeof env, i);
        assert_memory_equal(f->seen.r[i].id, id[i], 16);
        assert_string_equal(f->seen.r[i].sender, from[i]);
        assert_int_equal(f->seen.r[i].len, sizeof env);
        assert_memory_equal(f->seen.r[i].data, env, sizeof env);
        if (i > 0)
            assert_true(f->seen.r[i].seq > f->seen.r[i - 1].seq);
    }

    /* education-west sees only OTHER's messages, in OTHER's order */
    assert_int_equal(pending(f, "education-west", 0, 1000), n_other);
    size_t k = 0;
    for (unsigned i = 0; i < N; i++) {
        if (strcmp(from[i], OTHER) != 0)
            continue;
        assert_memory_equal(f->seen.r[k].id, id[i], 16);
        assert_string_equal(f->seen.r[k].sender, OTHER);
        k++;
    }
    assert_int_equal(k, n_other);

    /* order survives a reopen, and walking with a cursor in pages of 4 sees the same list */
    reopen(f);
    int64_t cursor = 0;
    unsigned seen_total = 0;
    for (;;) {
        size_t n = pending(f, "social-care", cursor, 4);
        if (n == 0)
            break;
        assert_true(n <= 4);
        for (size_t j = 0; j < n; j++)
            assert_memory_equal(f->seen.r[j].id, id[seen_total + j], 16);
        seen_total += (unsigned)n;
        cursor = f->seen.r[n - 1].seq;
        assert_true(seen_total <= N);
    }
    assert_int_equal(seen_total, N);
}

/* ---- durability ---------------------------------------------------------------------- */

static void test_committed_survives_reopen(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    make_id(id, 1);
    put_committed(f, id, SENDER, TWO, 2, FAR);
    assert_int_equal(pending(f, TWO[0], 0, 100), 1);
    int64_t seq = f->seen.r[0].seq;

    reopen(f);
    assert_int_equal(count(f), 2);
    for (size_t r = 0; r < 2; r++) {
        assert_int_equal(pending(f, TWO[r], 0, 100), 1);
        assert_int_equal(f->seen.r[0].seq, seq);
        assert_memory_equal(f->seen.r[0].id, id, 16);
        assert_string_equal(f->seen.r[0].sender, SENDER);
        assert_int_equal(f->seen.r[0].len, sizeof ENV);
        assert_memory_equal(f->seen.r[0].data, ENV, sizeof ENV);
    }
    /* and it is still known: a retry is a duplicate */
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_rc(put(f, id, SENDER, TWO, 2, ENV, sizeof ENV, FAR), REFEX_E_DUPLICATE);
    assert_ok(f->st->ops->commit(f->st->impl));
}

static void test_rollback_discards(void **state)
{
    fixture *f = *state;
    uint8_t id[16], kept[16];
    make_id(kept, 1);
    put_committed(f, kept, SENDER, ONE, 1, FAR);

    make_id(id, 2);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(put(f, id, SENDER, TWO, 2, ENV, sizeof ENV, FAR));
    assert_int_equal(count(f), 3); /* visible inside the batch */
    f->st->ops->rollback(f->st->impl);

    /* gone before reopen */
    assert_int_equal(count(f), 1);
    assert_int_equal(pending(f, TWO[1], 0, 100), 0);
    assert_int_equal(pending(f, TWO[0], 0, 100), 1);
    assert_memory_equal(f->seen.r[0].id, kept, 16);

    /* and after */
    reopen(f);
    assert_int_equal(count(f), 1);
    assert_int_equal(pending(f, TWO[1], 0, 100), 0);
    assert_int_equal(pending(f, TWO[0], 0, 100), 1);
    assert_memory_equal(f->seen.r[0].id, kept, 16);

    /* the rolled-back id was never stored, so it is not a duplicate */
    put_committed(f, id, SENDER, TWO, 2, FAR);
    assert_int_equal(count(f), 3);
}

static void test_uncommitted_lost_on_destroy(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    make_id(id, 3);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(put(f, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR));
    reopen(f); /* destroy without commit */
    assert_int_equal(count(f), 0);
    assert_int_equal(pending(f, ONE[0], 0, 100), 0);
    put_committed(f, id, SENDER, ONE, 1, FAR);
    assert_int_equal(count(f), 1);
}

static void test_batch_is_atomic(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    /* several puts and an ack in one batch: all or nothing */
    make_id(id, 1);
    put_committed(f, id, SENDER, ONE, 1, FAR);
    assert_ok(f->st->ops->begin(f->st->impl));
    for (unsigned i = 2; i < 6; i++) {
        uint8_t idn[16];
        make_id(idn, i);
        assert_ok(put(f, idn, SENDER, TWO, 2, ENV, sizeof ENV, FAR));
    }
    assert_ok(ack(f, ONE[0], SENDER, id, RECEIPT, sizeof RECEIPT));
    f->st->ops->rollback(f->st->impl);
    assert_int_equal(count(f), 1);
    assert_int_equal(receipts(f, SENDER, 0, 100), 0);
    assert_int_equal(pending(f, ONE[0], 0, 100), 1);
    assert_memory_equal(f->seen.r[0].id, id, 16);
}

/* ---- duplicates ---------------------------------------------------------------------- */

static void test_duplicate_same_batch(void **state)
{
    fixture *f = *state;
    uint8_t id[16], id2[16], env2[sizeof ENV];
    make_id(id, 1);
    make_id(id2, 2);
    make_env(env2, sizeof env2, 99);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(put(f, id, SENDER, TWO, 2, ENV, sizeof ENV, FAR));
    assert_rc(put(f, id, SENDER, TWO, 2, env2, sizeof env2, FAR), REFEX_E_DUPLICATE);
    assert_rc(put(f, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR), REFEX_E_DUPLICATE);
    /* a duplicate does not spoil the rest of the batch */
    assert_ok(put(f, id2, SENDER, ONE, 1, ENV, sizeof ENV, FAR));
    assert_ok(f->st->ops->commit(f->st->impl));

    assert_int_equal(count(f), 3);
    assert_int_equal(pending(f, TWO[0], 0, 100), 2);
    assert_memory_equal(f->seen.r[0].id, id, 16);
    assert_memory_equal(f->seen.r[0].data, ENV, sizeof ENV); /* the first copy wins */
    assert_memory_equal(f->seen.r[1].id, id2, 16);
    assert_int_equal(pending(f, TWO[1], 0, 100), 1);
}

static void test_duplicate_later_batch(void **state)
{
    fixture *f = *state;
    uint8_t id[16], env2[sizeof ENV];
    make_id(id, 1);
    make_env(env2, sizeof env2, 99);
    put_committed(f, id, SENDER, ONE, 1, FAR);

    assert_ok(f->st->ops->begin(f->st->impl));
    assert_rc(put(f, id, SENDER, TWO, 2, env2, sizeof env2, FAR), REFEX_E_DUPLICATE);
    /* the same id from another sender is a different message */
    assert_ok(put(f, id, OTHER, ONE, 1, env2, sizeof env2, FAR));
    assert_ok(f->st->ops->commit(f->st->impl));

    assert_int_equal(count(f), 2);
    assert_int_equal(pending(f, TWO[1], 0, 100), 0);
    assert_int_equal(pending(f, ONE[0], 0, 100), 2);
    assert_string_equal(f->seen.r[0].sender, SENDER);
    assert_memory_equal(f->seen.r[0].data, ENV, sizeof ENV);
    assert_string_equal(f->seen.r[1].sender, OTHER);
    assert_memory_equal(f->seen.r[1].id, id, 16);
    assert_memory_equal(f->seen.r[1].data, env2, sizeof env2);

    /* still a duplicate after a reopen */
    reopen(f);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_rc(put(f, id, SENDER, ONE, 1, ENV, sizeof ENV, FAR), REFEX_E_DUPLICATE);
    assert_rc(put(f, id, OTHER, ONE, 1, ENV, sizeof ENV, FAR), REFEX_E_DUPLICATE);
    assert_ok(f->st->ops->commit(f->st->impl));
}

static void test_duplicate_until_purge(void **state)
{
    fixture *f = *state;
    uint8_t id[16], unacked[16];
    const int64_t exp = 1000;
    make_id(id, 1);
    make_id(unacked, 2);
    put_committed(f, id, SENDER, TWO, 2, exp);
    put_committed(f, unacked, SENDER, ONE, 1, exp);
    assert_ok(ack_committed(f, TWO[0], SENDER, id));
    assert_ok(ack_committed(f, TWO[1], SENDER, id));
    assert_int_equal(pending(f, TWO[0], 0, 100), 1); /* only `unacked` */
    assert_memory_equal(f->seen.r[0].id, unacked, 16);

    /* delivered to everyone, but a late retry is still recognised */
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_rc(put(f, id, SENDER, TWO, 2, ENV, sizeof ENV, exp), REFEX_E_DUPLICATE);
    /* purge forgets only what has expired: not at now == expires_at */
    assert_ok(f->st->ops->purge(f->st->impl, exp - 1));
    assert_ok(f->st->ops->purge(f->st->impl, exp));
    assert_rc(put(f, id, SENDER, TWO, 2, ENV, sizeof ENV, exp), REFEX_E_DUPLICATE);
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(ro_query(f, "SELECT count(*) FROM messages", NULL), 2);

    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(f->st->ops->purge(f->st->impl, exp + 1));
    assert_ok(f->st->ops->commit(f->st->impl));
    /* the delivered message is forgotten; the undelivered one is kept although expired */
    assert_int_equal(ro_query(f, "SELECT count(*) FROM messages WHERE message_id = ?1", id), 0);
    assert_int_equal(ro_query(f, "SELECT count(*) FROM messages WHERE message_id = ?1", unacked),
                     1);
    assert_int_equal(pending(f, ONE[0], 0, 100), 1);
    assert_memory_equal(f->seen.r[0].id, unacked, 16);
    assert_int_equal(count(f), 1);

    assert_ok(f->st->ops->begin(f->st->impl));
    assert_rc(put(f, unacked, SENDER, ONE, 1, ENV, sizeof ENV, FAR), REFEX_E_DUPLICATE);
    /* the purged id can be stored again, and is delivered again */
    assert_ok(put(f, id, SENDER, TWO, 2, ENV, sizeof ENV, FAR));
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(pending(f, TWO[1], 0, 100), 1);
    assert_memory_equal(f->seen.r[0].id, id, 16);
    assert_int_equal(count(f), 3);
}

/* Sessions keep a cursor (the last seq seen); a seq handed out again after a purge or a
 * receipt_ack would sit behind some cursor and never be delivered. */
static void test_seq_never_reused(void **state)
{
    fixture *f = *state;
    uint8_t a[16], b[16], c[16];
    make_id(a, 1);
    make_id(b, 2);
    make_id(c, 3);
    put_committed(f, a, SENDER, ONE, 1, 1000);
    assert_int_equal(pending(f, ONE[0], 0, 100), 1);
    int64_t seq_a = f->seen.r[0].seq;
    assert_ok(ack_committed(f, ONE[0], SENDER, a));
    assert_int_equal(receipts(f, SENDER, 0, 100), 1);
    int64_t rseq_a = f->seen.r[0].seq;
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(f->st->ops->receipt_ack(f->st->impl, SENDER, a, ONE[0]));
    assert_ok(f->st->ops->purge(f->st->impl, 1001));
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(ro_query(f, "SELECT count(*) FROM messages", NULL), 0);
    assert_int_equal(ro_query(f, "SELECT count(*) FROM receipts", NULL), 0);

    /* the newest message and receipt are gone; their numbers must not come back */
    reopen(f);
    put_committed(f, b, SENDER, ONE, 1, FAR);
    assert_int_equal(pending(f, ONE[0], seq_a, 100), 1);
    assert_memory_equal(f->seen.r[0].id, b, 16);
    assert_true(f->seen.r[0].seq > seq_a);
    assert_ok(ack_committed(f, ONE[0], SENDER, b));
    assert_int_equal(receipts(f, SENDER, rseq_a, 100), 1);
    assert_memory_equal(f->seen.r[0].id, b, 16);
    assert_true(f->seen.r[0].seq > rseq_a);

    /* also within one connection, without a reopen */
    int64_t rseq_b = f->seen.r[0].seq;
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(f->st->ops->receipt_ack(f->st->impl, SENDER, b, ONE[0]));
    assert_ok(f->st->ops->commit(f->st->impl));
    put_committed(f, c, SENDER, ONE, 1, FAR);
    assert_ok(ack_committed(f, ONE[0], SENDER, c));
    assert_int_equal(receipts(f, SENDER, rseq_b, 100), 1);
    assert_memory_equal(f->seen.r[0].id, c, 16);
}

/* ---- ack and receipts ---------------------------------------------------------------- */

static void test_ack_one_of_two(void **state)
{
    fixture *f = *state;
    uint8_t id[16];
    make_id(id, 1);
    put_committed(f, id, SENDER, TWO, 2, FAR);
    assert_int_equal(count(f), 2);

    assert_ok(ack_committed(f, TWO[0], SENDER, id));
    assert_int_equal(count(f), 1);
    assert_int_equal(pending(f, TWO[0], 0, 100), 0);
    assert_int_equal(pending(f, TWO[1], 0, 100), 1);
    assert_memory_equal(f->seen.r[0].id, id, 16);
    assert_memory_equal(f->seen.r[0].data, ENV, sizeof ENV);

    reopen(f);
    assert_int_equal(pending(f, TWO[0], 0, 100), 0);
    assert_int_equal(pending(f, TWO[1], 0, 100), 1);
    assert_ok(ack_committed(f, TWO[1], SENDER, id));
    assert_int_equal(count(f), 0);
    assert_int_equal(pending(f, TWO[1], 0, 100), 0);
}

static void test_ack_notfound(void **state)
{
    fixture *f = *state;
    uint8_t id[16], unknown[16];
    make_id(id, 1);
    make_id(unknown, 77);
    put_committed(f, id, SENDER, TWO, 2, FAR);

    assert_ok(f->st->ops->begin(f->st->impl));
    assert_rc(ack(f, TWO[0], SENDER, unknown, RECEIPT, sizeof RECEIPT), REFEX_E_NOTFOUND);
    assert_rc(ack(f, "police-east", SENDER, id, RECEIPT, sizeof RECEIPT), REFEX_E_NOTFOUND);
    assert_rc(ack(f, SENDER, SENDER, id, RECEIPT, sizeof RECEIPT), REFEX_E_NOTFOUND);
    assert_rc(ack(f, TWO[0], OTHER, id, RECEIPT, sizeof RECEIPT), REFEX_E_NOTFOUND);
    assert_ok(ack(f, TWO[0], SENDER, id, RECEIPT, sizeof RECEIPT));
    assert_rc(ack(f, TWO[0], SENDER, id, RECEIPT, sizeof RECEIPT), REFEX_E_NOTFOUND);
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_rc(ack_committed(f, TWO[0], SENDER, id), REFEX_E_NOTFOUND);

    /* the failed acks changed nothing and left no receipts */
    assert_int_equal(count(f), 1);
    assert_int_equal(pending(f, TWO[1], 0, 100), 1);
    assert_int_equal(receipts(f, SENDER, 0, 100), 1);
    assert_string_equal(f->seen.r[0].recipient, TWO[0]);
    assert_int_equal(receipts(f, OTHER, 0, 100), 0);

    /* after the last recipient, the message is still known but has nothing to ack */
    assert_ok(ack_committed(f, TWO[1], SENDER, id));
    assert_rc(ack_committed(f, TWO[1], SENDER, id), REFEX_E_NOTFOUND);
    assert_rc(ack_committed(f, TWO[0], SENDER, id), REFEX_E_NOTFOUND);
    assert_int_equal(receipts(f, SENDER, 0, 100), 2);
}

static void test_receipts(void **state)
{
    fixture *f = *state;
    uint8_t a[16], b[16], rc_a0[40], rc_b1[40], rc_a1[40];
    make_id(a, 1);
    make_id(b, 2);
    make_env(rc_a0, sizeof rc_a0, 1);
    make_env(rc_b1, sizeof rc_b1, 2);
    make_env(rc_a1, 3, 3); /* receipts may differ in length */
    put_committed(f, a, SENDER, TWO, 2, FAR);
    put_committed(f, b, SENDER, TWO, 2, FAR);

    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(ack(f, TWO[0], SENDER, a, rc_a0, sizeof rc_a0));
    assert_ok(ack(f, TWO[1], SENDER, b, rc_b1, sizeof rc_b1));
    assert_ok(ack(f, TWO[1], SENDER, a, rc_a1, 3));
    assert_ok(f->st->ops->commit(f->st->impl));

    /* oldest first, exact bytes, only for their sender */
    assert_int_equal(receipts(f, SENDER, 0, 100), 3);
    row all[3];
    memcpy(all, f->seen.r, sizeof all);
    assert_memory_equal(all[0].id, a, 16);
    assert_string_equal(all[0].recipient, TWO[0]);
    assert_int_equal(all[0].len, sizeof rc_a0);
    assert_memory_equal(all[0].data, rc_a0, sizeof rc_a0);
    assert_memory_equal(all[1].id, b, 16);
    assert_string_equal(all[1].recipient, TWO[1]);
    assert_int_equal(all[1].len, sizeof rc_b1);
    assert_memory_equal(all[1].data, rc_b1, sizeof rc_b1);
    assert_memory_equal(all[2].id, a, 16);
    assert_string_equal(all[2].recipient, TWO[1]);
    assert_int_equal(all[2].len, 3);
    assert_memory_equal(all[2].data, rc_a1, 3);
    assert_true(all[0].seq > 0 && all[1].seq > all[0].seq && all[2].seq > all[1].seq);
    assert_int_equal(receipts(f, OTHER, 0, 100), 0);
    assert_int_equal(receipts(f, TWO[0], 0, 100), 0);

    /* after and limit */
    assert_int_equal(receipts(f, SENDER, 0, 1), 1);
    assert_int_equal(f->seen.r[0].seq, all[0].seq);
    assert_int_equal(receipts(f, SENDER, all[0].seq, 1), 1);
    assert_int_equal(f->seen.r[0].seq, all[1].seq);
    assert_int_equal(receipts(f, SENDER, all[0].seq, 100), 2);
    assert_int_equal(f->seen.r[1].seq, all[2].seq);
    assert_int_equal(receipts(f, SENDER, all[2].seq, 100), 0);
    assert_int_equal(receipts(f, SENDER, 0, 0), 0);
    reset_seen(f, 1);
    assert_ok(f->st->ops->receipts(f->st->impl, SENDER, 0, 100, on_receipt, &f->seen));
    assert_int_equal(f->seen.n, 1);

    /* receipts are durable */
    reopen(f);
    assert_int_equal(receipts(f, SENDER, 0, 100), 3);
    assert_memory_equal(f->seen.r[1].data, rc_b1, sizeof rc_b1);

    /* receipt_ack deletes exactly one receipt */
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_rc(f->st->ops->receipt_ack(f->st->impl, OTHER, b, TWO[1]), REFEX_E_NOTFOUND);
    assert_rc(f->st->ops->receipt_ack(f->st->impl, SENDER, b, TWO[0]), REFEX_E_NOTFOUND);
    assert_ok(f->st->ops->receipt_ack(f->st->impl, SENDER, b, TWO[1]));
    assert_rc(f->st->ops->receipt_ack(f->st->impl, SENDER, b, TWO[1]), REFEX_E_NOTFOUND);
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(receipts(f, SENDER, 0, 100), 2);
    assert_int_equal(f->seen.r[0].seq, all[0].seq);
    assert_int_equal(f->seen.r[1].seq, all[2].seq);

    reopen(f);
    assert_int_equal(receipts(f, SENDER, 0, 100), 2);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(f->st->ops->receipt_ack(f->st->impl, SENDER, a, TWO[0]));
    assert_ok(f->st->ops->receipt_ack(f->st->impl, SENDER, a, TWO[1]));
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(receipts(f, SENDER, 0, 100), 0);
}

static void test_count(void **state)
{
    fixture *f = *state;
    const char *const three[] = {"social-care", "health-visiting", "police-east"};
    uint8_t a[16], b[16];
    make_id(a, 1);
    make_id(b, 2);
    assert_int_equal(count(f), 0);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(put(f, a, SENDER, three, 3, ENV, sizeof ENV, FAR));
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(count(f), 3);
    put_committed(f, b, OTHER, ONE, 1, FAR);
    assert_int_equal(count(f), 4);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_rc(put(f, a, SENDER, three, 3, ENV, sizeof ENV, FAR), REFEX_E_DUPLICATE);
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(count(f), 4);
    assert_ok(ack_committed(f, "police-east", SENDER, a));
    assert_int_equal(count(f), 3);
    /* acked in a batch that is rolled back: still pending */
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(ack(f, "social-care", OTHER, b, RECEIPT, sizeof RECEIPT));
    assert_int_equal(count(f), 2);
    f->st->ops->rollback(f->st->impl);
    assert_int_equal(count(f), 3);
    reopen(f);
    assert_int_equal(count(f), 3);
}

/* ---- expiry -------------------------------------------------------------------------- */

static void test_expired(void **state)
{
    fixture *f = *state;
    uint8_t m1[16], m2[16], m3[16], nd[24];
    make_id(m1, 1);
    make_id(m2, 2);
    make_id(m3, 3);
    make_env(nd, sizeof nd, 42);
    put_committed(f, m1, SENDER, TWO, 2, 1000);
    put_committed(f, m2, OTHER, ONE, 1, 2000);
    put_committed(f, m3, SENDER, TWO, 2, FAR);

    assert_int_equal(expired(f, 0, 100), 0);
    assert_int_equal(expired(f, 999, 100), 0);
    assert_int_equal(expired(f, 1000, 100), 2); /* expires_at <= now */
    assert_true(has_expired(&f->seen, m1, SENDER, TWO[0]));
    assert_true(has_expired(&f->seen, m1, SENDER, TWO[1]));
    assert_int_equal(expired(f, 2000, 100), 3);
    assert_true(has_expired(&f->seen, m2, OTHER, ONE[0]));
    assert_false(has_expired(&f->seen, m3, SENDER, TWO[0]));

    /* limit, and a visitor may stop early */
    assert_int_equal(expired(f, 2000, 1), 1);
    reset_seen(f, 2);
    assert_ok(f->st->ops->expired(f->st->impl, 2000, 100, on_expired, &f->seen));
    assert_int_equal(f->seen.n, 2);

    /* an acked delivery is not expired, even past its expiry */
    assert_ok(ack_committed(f, TWO[0], SENDER, m1));
    assert_int_equal(expired(f, 2000, 100), 2);
    assert_false(has_expired(&f->seen, m1, SENDER, TWO[0]));
    assert_true(has_expired(&f->seen, m1, SENDER, TWO[1]));
    assert_true(has_expired(&f->seen, m2, OTHER, ONE[0]));

    /* ending an expired delivery with a non-delivery receipt, as the broker does */
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(ack(f, TWO[1], SENDER, m1, nd, sizeof nd));
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(expired(f, 2000, 100), 1);
    assert_true(has_expired(&f->seen, m2, OTHER, ONE[0]));
    assert_int_equal(receipts(f, SENDER, 0, 100), 2);
    assert_string_equal(f->seen.r[1].recipient, TWO[1]);
    assert_memory_equal(f->seen.r[1].id, m1, 16);
    assert_int_equal(f->seen.r[1].len, sizeof nd);
    assert_memory_equal(f->seen.r[1].data, nd, sizeof nd);

    /* everything expires eventually; only the unacked deliveries are listed */
    assert_int_equal(expired(f, FAR, 100), 3);
    assert_true(has_expired(&f->seen, m2, OTHER, ONE[0]));
    assert_true(has_expired(&f->seen, m3, SENDER, TWO[0]));
    assert_true(has_expired(&f->seen, m3, SENDER, TWO[1]));
}

/* ---- bounded storage ----------------------------------------------------------------- */

static void test_envelope_dropped_after_all_acks(void **state)
{
    fixture *f = *state;
    uint8_t id[16], env[2048];
    const char *null_q = "SELECT envelope IS NULL FROM messages WHERE message_id = ?1";
    make_id(id, 1);
    make_env(env, sizeof env, 1);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(put(f, id, SENDER, TWO, 2, env, sizeof env, 1000));
    assert_ok(f->st->ops->commit(f->st->impl));

    assert_int_equal(ro_query(f, null_q, id), 0);
    assert_int_equal(ro_query(f, "SELECT length(envelope) FROM messages WHERE message_id = ?1", id),
                     (int64_t)sizeof env);
    assert_ok(ack_committed(f, TWO[1], SENDER, id));
    assert_int_equal(ro_query(f, null_q, id), 0); /* social-care still needs it */
    assert_int_equal(pending(f, TWO[0], 0, 100), 1);
    assert_memory_equal(f->seen.r[0].data, env, sizeof env);

    assert_ok(ack_committed(f, TWO[0], SENDER, id));
    assert_int_equal(ro_query(f, null_q, id), 1); /* row kept for duplicates, envelope gone */
    assert_int_equal(ro_query(f, "SELECT count(*) FROM messages WHERE envelope IS NOT NULL", NULL),
                     0);

    /* and the row itself goes at purge */
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(f->st->ops->purge(f->st->impl, 1001));
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(ro_query(f, null_q, id), -1);
    assert_int_equal(ro_query(f, "SELECT count(*) FROM messages", NULL), 0);
}

static void test_store_max(void **state)
{
    fixture *f = *state;
    enum { TRIES = 200, ENV_LEN = 2048 };
    uint8_t env[ENV_LEN], id[16];
    unsigned ok = 0, i;
    int rc = REFEX_OK;
    open_store(f, 64 * 1024);

    for (i = 0; i < TRIES; i++) {
        make_id(id, i);
        make_env(env, sizeof env, i);
        assert_ok(f->st->ops->begin(f->st->impl));
        rc = put(f, id, SENDER, TWO, 2, env, sizeof env, 1000);
        if (rc == REFEX_OK)
            rc = f->st->ops->commit(f->st->impl);
        if (rc != REFEX_OK)
            break;
        ok++;
    }
    if (i == TRIES)
        fail_msg("%d puts of %d bytes fit in a 64 KiB store", TRIES, ENV_LEN);
    assert_rc(rc, REFEX_E_STORE);
    f->st->ops->rollback(f->st->impl);
    assert_true(ok >= 1);

    /* nothing half-stored: exactly the committed messages are pending, intact */
    assert_int_equal(count(f), 2 * (int64_t)ok);
    for (size_t r = 0; r < 2; r++) {
        assert_int_equal(pending(f, TWO[r], 0, 1000), ok);
        for (unsigned k = 0; k < ok; k++) {
            make_id(id, k);
            make_env(env, sizeof env, k);
            assert_memory_equal(f->seen.r[k].id, id, 16);
            assert_int_equal(f->seen.r[k].len, sizeof env);
            assert_memory_equal(f->seen.r[k].data, env, sizeof env);
        }
    }
    assert_int_equal(ro_query(f, "SELECT count(*) FROM messages", NULL), ok);

    /* a retry of a stored message is still recognised while the store is full */
    make_id(id, 0);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_rc(put(f, id, SENDER, TWO, 2, env, sizeof env, 1000), REFEX_E_DUPLICATE);
    f->st->ops->rollback(f->st->impl);

    /* still usable: a small put either fits or fails cleanly */
    make_id(id, 5000);
    assert_ok(f->st->ops->begin(f->st->impl));
    rc = put(f, id, SENDER, ONE, 1, ENV, sizeof ENV, 1000);
    if (rc == REFEX_OK)
        rc = f->st->ops->commit(f->st->impl);
    if (rc != REFEX_OK) {
        assert_rc(rc, REFEX_E_STORE);
        f->st->ops->rollback(f->st->impl);
    }
    int64_t small = rc == REFEX_OK;
    assert_int_equal(count(f), 2 * (int64_t)ok + small);

    /* once everything is delivered, its receipts fetched and purged, the space is reused */
    for (unsigned k = 0; k < ok; k++) {
        make_id(id, k);
        for (size_t r = 0; r < 2; r++) {
            assert_ok(ack_committed(f, TWO[r], SENDER, id));
            assert_ok(f->st->ops->begin(f->st->impl));
            assert_ok(f->st->ops->receipt_ack(f->st->impl, SENDER, id, TWO[r]));
            assert_ok(f->st->ops->commit(f->st->impl));
        }
    }
    if (small) {
        make_id(id, 5000);
        assert_ok(ack_committed(f, ONE[0], SENDER, id));
        assert_ok(f->st->ops->begin(f->st->impl));
        assert_ok(f->st->ops->receipt_ack(f->st->impl, SENDER, id, ONE[0]));
        assert_ok(f->st->ops->commit(f->st->impl));
    }
    assert_int_equal(count(f), 0);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(f->st->ops->purge(f->st->impl, 1001));
    assert_ok(f->st->ops->commit(f->st->impl));
    make_id(id, 6000);
    make_env(env, sizeof env, 6000);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(put(f, id, SENDER, TWO, 2, env, sizeof env, FAR));
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(pending(f, TWO[1], 0, 100), 1);
    assert_memory_equal(f->seen.r[0].data, env, sizeof env);
}

/* ---- space: store_max in live bytes, refusals of one message, pages given back -------- */

static void open_store_max(fixture *f, uint64_t max)
{
    refex_store_destroy(&f->st);
    open_store(f, max);
}

static int64_t live(fixture *f)
{
    return f->st->ops->live_bytes(f->st->impl);
}

/* A message that does not fit is refused alone, before anything is written; an ack in the
 * same batch frees its bytes at once, and the count is exact across a restart. */
static void test_full_refuses_one(void **state)
{
    fixture *f = *state;
    enum { LEN = 2048 };
    uint8_t env[LEN], id[16];
    open_store_max(f, 4 * LEN);
    make_id(id, 1);
    make_env(env, LEN, 1);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(put(f, id, SENDER, ONE, 1, env, LEN, FAR));
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(live(f), LEN);

    assert_ok(f->st->ops->begin(f->st->impl));
    for (unsigned n = 2; n <= 4; n++) {
        make_id(id, n);
        assert_ok(put(f, id, SENDER, ONE, 1, env, LEN, FAR));
    }
    assert_int_equal(live(f), 4 * LEN);
    make_id(id, 5);
    assert_rc(put(f, id, SENDER, ONE, 1, env, LEN, FAR), REFEX_E_STORE);
    assert_non_null(strstr(f->st->ops->refusal(f->st->impl), "store_max"));
    assert_true(f->st->ops->batch_alive(f->st->impl));
    make_id(id, 2); /* a retry of a stored one is still a duplicate while full */
    assert_rc(put(f, id, SENDER, ONE, 1, env, LEN, FAR), REFEX_E_DUPLICATE);
    make_id(id, 1);
    assert_ok(ack(f, ONE[0], SENDER, id, RECEIPT, sizeof RECEIPT));
    assert_int_equal(live(f), 3 * LEN);
    make_id(id, 5);
    assert_ok(put(f, id, SENDER, ONE, 1, env, LEN, FAR));
    assert_ok(f->st->ops->commit(f->st->impl));
    assert_int_equal(live(f), 4 * LEN);
    assert_int_equal(count(f), 4);

    /* a rolled-back batch gives its bytes back to the count */
    assert_ok(f->st->ops->begin(f->st->impl));
    make_id(id, 2);
    assert_ok(ack(f, ONE[0], SENDER, id, RECEIPT, sizeof RECEIPT));
    assert_int_equal(live(f), 3 * LEN);
    f->st->ops->rollback(f->st->impl);
    assert_int_equal(live(f), 4 * LEN);

    refex_store_destroy(&f->st);
    open_store(f, 4 * LEN);
    assert_int_equal(live(f), 4 * LEN);
    assert_int_equal(ro_query(f, "SELECT sum(length(envelope)) FROM messages", NULL), 4 * LEN);
    make_id(id, 6);
    assert_ok(f->st->ops->begin(f->st->impl));
    assert_rc(put(f, id, SENDER, ONE, 1, env, LEN, FAR), REFEX_E_STORE);
    assert_ok(f->st->ops->commit(f->st->impl));
}

/* Past the live-byte check, SQLite's own backstop (or a real full disk) may end the whole
 * transaction: the batch's acks and receipt acks still commit; only messages are lost. */
static void test_backstop_full_keeps_acks(void **state)
{
    fixture *f = *state;
    enum { RCPT = 40, TRIES = 20000 };
    char names[RCPT][64];
    const char *rcpt[RCPT];
    uint8_t id[16], a[16], b[16], c[16];
    unsigned ok = 0, i;
    int rc = REFEX_OK;
    for (i = 0; i < RCPT; i++) {
        snprintf(names[i], sizeof names[i], "recipient-agency-with-a-long-name-%02u-xxxxxxxxxxx",
                 i);
        rcpt[i] = names[i];
    }
    open_store_max(f, 4096); /* backstop: (2 * 4096 + 256 KiB) / page */
    make_id(a, 1);
    make_id(b, 2);
    make_id(c, 3);
    put_committed(f, a, SENDER, ONE, 1, FAR);
    put_committed(f, b, SENDER, ONE, 1, FAR);
    put_committed(f, c, SENDER, TWO, 2, FAR);
    assert_ok(ack_committed(f, ONE[0], SENDER, b));

    assert_ok(f->st->ops->begin(f->st->impl));
    assert_ok(ack(f, ONE[0], SENDER, a, RECEIPT, sizeof RECEIPT));
    assert_ok(f->st->ops->receipt_ack(f->st->impl, SENDER, b, ONE[0]));
    for (i = 0; i < TRIES; i++) { /* tiny envelopes: live bytes never refuse them */
        make_id(id, 100 + i);
        if ((rc = put(f, id, SENDER, rcpt, RCPT, ENV, 1, FAR)) != REFEX_OK)
            break;
        ok++;
    }
    if (i == TRIES)
        fail_msg("%d puts never reached the backstop", TRIES);
    assert_rc(rc, REFEX_E_STORE);
    assert_non_null(strstr(f->st->ops->refusal(f->st->impl), "full"));
    assert_true(f->st->ops->batch_alive(f->st->impl)); /* revived if SQLite ended it */
    /* if SQLite ended the transaction, the batch's messages are lost and so refused */
    make_id(id, 99);
    int died = put(f, id, SENDER, ONE, 1, ENV, 1, FAR) == REFEX_E_STORE;
    assert_ok(ack(f, TWO[1], SENDER, c, RECEIPT, sizeof RECEIPT)); /* after the failure */
    rc = f->st->ops->commit(f->st->impl);
    print_message("backstop after %u puts; transaction %s; commit %s\n", ok,
                  died ? "ended by SQLite" : "alive", refex_errname(rc));
    if (!died)
        ok++; /* the put after the failure */
    assert_rc(rc, died ? REFEX_E_STORE : REFEX_OK);

    reopen(f);
    assert_int_equal(pending(f, ONE[0], 0, 10), 1); /* a's ack is durable; c is pending */
    assert_memory_equal(f->seen.r[0].id, c, 16);
    assert_int_equal(pending(f, TWO[1], 0, 10), 0);  /* c's ack after the failure too */
    assert_int_equal(receipts(f, SENDER, 0, 10), 2); /* a's and c's kept, b's acked */
    assert_memory_equal(f->seen.r[0].id, a, 16);
    assert_memory_equal(f->seen.r[1].id, c, 16);
    int64_t stored = ro_query(f, "SELECT count(*) FROM messages", NULL) - 3;
    assert_int_equal(stored, rc == REFEX_OK ? (int64_t)ok : 0);
    assert_int_equal(count(f), 1 + stored * RCPT);
}

static void put_big(fixture *f, unsigned from, unsigned n, size_t len)
{
    uint8_t id[16], env[DATA_MAX];
    assert_ok(f->st->ops->begin(f->st->impl));
    for (unsigned k = from; k < from + n; k++) {
        make_id(id, k);
        make_env(env, len, k);
        assert_ok(put(f, id, SENDER, ONE, 1, env, len, FAR));
    }
    assert_ok(f->st->ops->commit(f->st->impl));
}

static void ack_all(fixture *f, unsigned from, unsigned n)
{
    uint8_t id[16];
    assert_ok(f->st->ops->begin(f->st->impl));
    for (unsigned k = from; k < from + n; k++) {
        make_id(id, k);
        assert_ok(ack(f, ONE[0], SENDER, id, RECEIPT, sizeof RECEIPT));
    }
    assert_ok(f->st->ops->commit(f->st->impl));
}

/* A new store vacuums incrementally: delivered bodies go at once, and their pages leave the
 * file at the commit. */
static void test_pages_come_back(void **state)
{
    fixture *f = *state;
    enum { N = 40 };
    /* bodies in overflow pages, and bodies that fit in a leaf page with their row */
    const size_t sizes[] = {DATA_MAX, 2000};
    assert_int_equal(ro_query(f, "PRAGMA auto_vacuum", NULL), 2);
    int64_t empty = ro_query(f, "PRAGMA page_count", NULL);
    for (unsigned k = 0; k < 2; k++) {
        unsigned base = 1000 * k;
        put_big(f, base, N, sizes[k]);
        int64_t full = ro_query(f, "PRAGMA page_count", NULL);
        assert_true(full >= empty + N / 2);
        assert_int_equal(live(f), (int64_t)(N * sizes[k]));
        ack_all(f, base, N);
        assert_int_equal(live(f), 0);
        assert_int_equal(
            ro_query(f, "SELECT count(*) FROM messages WHERE envelope IS NOT NULL", NULL), 0);
        assert_int_equal(ro_query(f, "SELECT count(*) FROM messages", NULL), (k + 1) * N);
        assert_int_equal(ro_query(f, "PRAGMA freelist_count", NULL), 0);
        int64_t after = ro_query(f, "PRAGMA page_count", NULL);
        print_message("pages: empty %lld, %d bodies of %zu bytes %lld, delivered %lld\n",
                      (long long)empty, N, sizes[k], (long long)full, (long long)after);
        assert_true(after <= empty + 8); /* what is left: duplicate rows and receipts */
    }
}

/* A store created before auto-vacuum keeps working: its free pages are reused. */
static void test_old_store_reuses_pages(void **state)
{
    fixture *f = *state;
    enum { N = 20, LEN = DATA_MAX };
    sqlite3 *db = NULL;
    /* the queue's tables as a store made before auto-vacuum has them */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL;"
                     "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                     " sender TEXT NOT NULL, message_id BLOB NOT NULL, envelope BLOB,"
                     " expires_ms INTEGER NOT NULL, stored_ms INTEGER NOT NULL,"
                     " remaining INTEGER NOT NULL, UNIQUE (sender, message_id));"
                     "CREATE TABLE deliveries (recipient TEXT NOT NULL, seq INTEGER NOT NULL,"
                     " PRIMARY KEY (recipient, seq)) WITHOUT ROWID;"
                     "CREATE TABLE receipts (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                     " sender TEXT NOT NULL, message_id BLOB NOT NULL, recipient TEXT NOT NULL,"
                     " receipt BLOB NOT NULL, UNIQUE (sender, message_id, recipient));",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    open_store(f, 0);
    assert_int_equal(ro_query(f, "PRAGMA auto_vacuum", NULL), 0);
    put_big(f, 0, N, LEN);
    ack_all(f, 0, N);
    int64_t once = ro_query(f, "PRAGMA page_count", NULL);
    assert_true(ro_query(f, "PRAGMA freelist_count", NULL) >= N);
    put_big(f, 100, N, LEN);
    ack_all(f, 100, N);
    assert_true(ro_query(f, "PRAGMA page_count", NULL) <= once + 4);
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static void test_destroy_null_and_twice(void **state)
{
    fixture *f = *state;
    refex_store *none = NULL;
    refex_store_destroy(NULL);
    refex_store_destroy(&none);
    assert_null(none);
    refex_store_destroy(&f->st);
    assert_null(f->st);
    refex_store_destroy(&f->st);
    assert_null(f->st);
    open_store(f, 0);
    assert_int_equal(count(f), 0);
}

/* ---- the inline wrappers in store.h --------------------------------------------------- */

/* The refex_store_* wrappers reach the same operations as the ops table: one message from
 * put to purge, every step through a wrapper. */
static void test_wrappers(void **state)
{
    fixture *f = *state;
    refex_store *st = f->st;
    uint8_t a[16];
    make_id(a, 1);
    assert_string_equal(refex_store_name(st), st->ops->name);
    assert_int_equal(refex_store_count(st), 0);

    assert_ok(refex_store_begin(st));
    assert_ok(refex_store_put(st, a, SENDER, ONE, 1, ENV, sizeof ENV, 1000));
    assert_rc(refex_store_put(st, a, SENDER, ONE, 1, ENV, sizeof ENV, 1000), REFEX_E_DUPLICATE);
    assert_true(refex_store_batch_alive(st));
    assert_ok(refex_store_commit(st));
    assert_int_equal(refex_store_count(st), 1);

    reset_seen(f, 0);
    assert_ok(refex_store_pending(st, ONE[0], 0, 10, on_msg, &f->seen));
    assert_int_equal(f->seen.n, 1);
    assert_memory_equal(f->seen.r[0].id, a, 16);
    assert_int_equal(f->seen.r[0].len, sizeof ENV);
    assert_memory_equal(f->seen.r[0].data, ENV, sizeof ENV);

    reset_seen(f, 0);
    assert_ok(refex_store_expired(st, 2000, 10, on_expired, &f->seen));
    assert_int_equal(f->seen.n, 1);
    assert_true(has_expired(&f->seen, a, SENDER, ONE[0]));

    /* an ack rolled back through the wrapper leaves the delivery pending */
    assert_ok(refex_store_begin(st));
    assert_ok(refex_store_ack(st, ONE[0], SENDER, a, RECEIPT, sizeof RECEIPT));
    refex_store_rollback(st);
    assert_int_equal(refex_store_count(st), 1);

    assert_ok(refex_store_begin(st));
    assert_ok(refex_store_ack(st, ONE[0], SENDER, a, RECEIPT, sizeof RECEIPT));
    assert_ok(refex_store_commit(st));
    assert_int_equal(refex_store_count(st), 0);
    reset_seen(f, 0);
    assert_ok(refex_store_receipts(st, SENDER, 0, 10, on_receipt, &f->seen));
    assert_int_equal(f->seen.n, 1);
    assert_int_equal(f->seen.r[0].len, sizeof RECEIPT);
    assert_memory_equal(f->seen.r[0].data, RECEIPT, sizeof RECEIPT);

    assert_ok(refex_store_begin(st));
    assert_ok(refex_store_receipt_ack(st, SENDER, a, ONE[0]));
    assert_rc(refex_store_receipt_ack(st, SENDER, a, ONE[0]), REFEX_E_NOTFOUND);
    assert_ok(refex_store_purge(st, 2000));
    assert_ok(refex_store_commit(st));
    assert_int_equal(receipts(f, SENDER, 0, 10), 0);

    /* purged: the id is no longer a duplicate */
    assert_ok(refex_store_begin(st));
    assert_ok(refex_store_put(st, a, SENDER, ONE, 1, ENV, sizeof ENV, FAR));
    assert_ok(refex_store_commit(st));
    assert_int_equal(refex_store_count(st), 1);
}

#define T(fn)  cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TC(fn) cmocka_unit_test_setup_teardown(fn, setup_closed, teardown)

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        TC(test_open_creates_file),
        T(test_open_wal_and_synchronous_full),
        T(test_open_errors),
        T(test_put_then_pending),
        T(test_empty_envelope),
        T(test_pending_cursor_and_limit),
        T(test_arrival_order_interleaved),
        T(test_committed_survives_reopen),
        T(test_rollback_discards),
        T(test_uncommitted_lost_on_destroy),
        T(test_batch_is_atomic),
        T(test_duplicate_same_batch),
        T(test_duplicate_later_batch),
        T(test_duplicate_until_purge),
        T(test_seq_never_reused),
        T(test_ack_one_of_two),
        T(test_ack_notfound),
        T(test_receipts),
        T(test_count),
        T(test_expired),
        T(test_envelope_dropped_after_all_acks),
        TC(test_store_max),
        T(test_full_refuses_one),
        T(test_backstop_full_keeps_acks),
        T(test_pages_come_back),
        TC(test_old_store_reuses_pages),
        T(test_destroy_null_and_twice),
        T(test_wrappers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
