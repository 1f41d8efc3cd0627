/* Tests for lib/store_sqlite_meta.c through the refex_store operations, on real SQLite files:
 * a store file that lost its tables is refused unless initialised; the generation is kept
 * across reopen and renewed on request; every put and duplicate says its store seq; each
 * sender's high only grows, and comes from the messages of a store made before it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <sqlite3.h>
#include <string.h>
#include <unistd.h>

#include "store.h"

#define FAR    INT64_C(4102444800000) /* 2100-01-01 */
#define SENDER "midwifery-north"
#define OTHER  "police-east"

static const char *const ONE[] = {"social-care"};
static const uint8_t ENV[] = {0x0a, 0x03, 'h', 'd', 'r', 0x00};

typedef struct {
    char dir[512];
    char path[1024];
    refex_store *st;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    testing_tmpdir(f->dir, sizeof f->dir);
    snprintf(f->path, sizeof f->path, "%s/queue.db", f->dir);
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

static int try_open(fixture *f, unsigned flags, char *err, size_t errlen)
{
    refex_store_destroy(&f->st);
    return refex_store_sqlite_open(f->path, 0, flags, &f->st, err, errlen);
}

static void open_ok(fixture *f, unsigned flags)
{
    char err[1024] = "";
    int rc = try_open(f, flags, err, sizeof err);
    if (rc != REFEX_OK)
        fail_msg("open: %s: %s", refex_errname(rc), err);
}

static void make_id(uint8_t id[16], unsigned n)
{
    memset(id, 0x5a, 16);
    id[15] = (uint8_t)n;
}

static uint64_t put_one(fixture *f, unsigned n, const char *sender, int expect)
{
    uint8_t id[16];
    make_id(id, n);
    assert_int_equal(refex_store_begin(f->st), REFEX_OK);
    assert_int_equal(refex_store_put(f->st, id, sender, ONE, 1, ENV, sizeof ENV, FAR), expect);
    uint64_t seq = refex_store_put_seq(f->st);
    assert_int_equal(refex_store_commit(f->st), REFEX_OK);
    return seq;
}

static uint64_t high(fixture *f, const char *sender)
{
    uint64_t v = 99;
    assert_int_equal(refex_store_sender_high(f->st, sender, &v), REFEX_OK);
    return v;
}

static int64_t query(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* A file that exists without the queue's tables (its WAL lost before the first checkpoint
 * looks like this) is refused, typed, and left as it was; --init-store begins a new store. */
static void test_lost_tables_refused_unless_init(void **state)
{
    fixture *f = *state;
    char err[1024] = "";
    sqlite3 *db = NULL; /* a WAL-mode file with its header and nothing else */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(try_open(f, 0, err, sizeof err), REFEX_E_STORE);
    assert_null(f->st);
    assert_non_null(strstr(err, "lacks tables"));
    assert_non_null(strstr(err, "--init-store"));
    assert_int_equal(query(f->path, "SELECT count(*) FROM sqlite_schema"), 0); /* untouched */

    open_ok(f, REFEX_STORE_INIT);
    uint8_t gen[16], zero[16] = {0};
    refex_store_generation(f->st, gen);
    assert_memory_not_equal(gen, zero, 16);
    assert_true(put_one(f, 1, SENDER, REFEX_OK) > 0);

    /* now whole: opened without the flag; the flag on a whole store changes nothing */
    open_ok(f, 0);
    uint8_t again[16];
    refex_store_generation(f->st, again);
    assert_memory_equal(gen, again, 16);
    open_ok(f, REFEX_STORE_INIT);
    refex_store_generation(f->st, again);
    assert_memory_equal(gen, again, 16);
    assert_int_equal(refex_store_count(f->st), 1);
}

/* One of the tables gone (a damaged or hand-edited file) is refused as well. */
static void test_one_table_missing_refused(void **state)
{
    fixture *f = *state;
    char err[1024] = "";
    open_ok(f, 0);
    assert_true(put_one(f, 1, SENDER, REFEX_OK) > 0);
    refex_store_destroy(&f->st);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE deliveries", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(try_open(f, 0, err, sizeof err), REFEX_E_STORE);
    assert_non_null(strstr(err, "deliveries"));
    assert_null(strstr(err, "messages"));
    /* --init-store moves the damaged file aside and begins anew: nothing of it is kept */
    open_ok(f, REFEX_STORE_INIT);
    assert_int_equal(refex_store_count(f->st), 0);
    assert_int_equal(high(f, SENDER), 0);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q '^queue.db.damaged-'", f->dir);
    assert_int_equal(system(cmd), 0);
}

/* A file that was never written (0 bytes: made by provisioning, or a first start killed at
 * once) is a first start, not a damaged store. */
static void test_empty_file_is_first_start(void **state)
{
    fixture *f = *state;
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    fclose(fp);
    open_ok(f, 0);
    assert_true(put_one(f, 1, SENDER, REFEX_OK) > 0);
}

/* Seqs grow; a duplicate says where the first is; highs are per sender and survive reopen. */
static void test_seq_and_sender_high(void **state)
{
    fixture *f = *state;
    open_ok(f, 0);
    assert_int_equal(high(f, SENDER), 0);
    uint64_t a = put_one(f, 1, SENDER, REFEX_OK);
    uint64_t b = put_one(f, 2, OTHER, REFEX_OK);
    uint64_t c = put_one(f, 3, SENDER, REFEX_OK);
    assert_true(a < b && b < c);
    assert_int_equal(put_one(f, 1, SENDER, REFEX_E_DUPLICATE), a);
    assert_int_equal(high(f, SENDER), c);
    assert_int_equal(high(f, OTHER), b);
    open_ok(f, 0);
    assert_int_equal(high(f, SENDER), c);
    assert_int_equal(high(f, "nobody"), 0);
}

/* renew writes a new generation in the open batch: the store's once committed, and after
 * reopen; a rolled-back renewal leaves the old one. */
static void test_renew(void **state)
{
    fixture *f = *state;
    uint8_t first[16], renewed[16], after[16];
    open_ok(f, 0);
    refex_store_generation(f->st, first);
    /* rolled back: the old generation stays, in memory and on disk */
    assert_int_equal(refex_store_begin(f->st), REFEX_OK);
    assert_int_equal(refex_store_renew(f->st), REFEX_OK);
    refex_store_generation(f->st, renewed);
    assert_memory_equal(first, renewed, 16); /* not before the commit */
    refex_store_rollback(f->st);
    refex_store_generation(f->st, renewed);
    assert_memory_equal(first, renewed, 16);
    open_ok(f, 0);
    refex_store_generation(f->st, renewed);
    assert_memory_equal(first, renewed, 16);
    assert_int_equal(refex_store_begin(f->st), REFEX_OK);
    assert_int_equal(refex_store_renew(f->st), REFEX_OK);
    assert_int_equal(refex_store_commit(f->st), REFEX_OK);
    refex_store_generation(f->st, renewed);
    assert_memory_not_equal(first, renewed, 16);
    open_ok(f, 0);
    refex_store_generation(f->st, after);
    assert_memory_equal(renewed, after, 16);
}

/* A store made before generations and senders: it gets a generation, and its senders'
 * highs from the messages it holds. */
static void test_older_store_gets_identity(void **state)
{
    fixture *f = *state;
    uint8_t before[16], after[16];
    open_ok(f, 0);
    refex_store_generation(f->st, before);
    uint64_t a = put_one(f, 1, SENDER, REFEX_OK);
    refex_store_destroy(&f->st);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE meta; DROP TABLE senders", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    open_ok(f, 0);
    refex_store_generation(f->st, after);
    assert_memory_not_equal(before, after, 16);
    assert_int_equal(high(f, SENDER), a);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_lost_tables_refused_unless_init),
        T(test_one_table_missing_refused),
        T(test_seq_and_sender_high),
        T(test_renew),
        T(test_empty_file_is_first_start),
        T(test_older_store_gets_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
