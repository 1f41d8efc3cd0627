/* Tests for lib/db.c's statement cache and its kept transaction statements, on a real
 * SQLite file: a kept statement is the same one on every call, is reset and unbound when
 * handed out, belongs to its own connection, survives rolled-back transactions and
 * savepoints and schema changes, follows a changed text at a reused address, and is
 * finalized by refex_db_close. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "db.h"

static const char *const INSERT = "INSERT INTO t(v) VALUES (?)";
static const char *const COUNT = "SELECT count(*) FROM t";
static const char *const ALL = "SELECT * FROM t ORDER BY v";

typedef struct {
    char dir[512];
    char path[1024];
    sqlite3 *db;
} fixture;

static void open_db(fixture *f, const char *name, sqlite3 **db)
{
    char err[256] = "";
    snprintf(f->path, sizeof f->path, "%s/%s", f->dir, name);
    int rc = refex_db_open(f->path, 0, db, err, sizeof err);
    if (rc != REFEX_OK)
        fail_msg("refex_db_open: %s: %s", refex_errname(rc), err);
    assert_ok(refex_db_exec(*db, "CREATE TABLE IF NOT EXISTS t (v INTEGER NOT NULL UNIQUE)"));
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    testing_tmpdir(f->dir, sizeof f->dir);
    open_db(f, "a.db", &f->db);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    refex_db_close(&f->db);
    testing_rmtree(f->dir);
    free(f);
    return 0;
}

static int insert(sqlite3 *db, int v)
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_cached(db, INSERT, &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_int(st, 1, v);
    return refex_db_done(st, refex_db_err(sqlite3_step(st)));
}

static int count(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    assert_ok(refex_db_cached(db, COUNT, &st));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    return refex_db_done(st, sqlite3_column_int(st, 0));
}

static void test_same_statement_each_call(void **state)
{
    fixture *f = *state;
    sqlite3_stmt *a = NULL, *b = NULL;
    assert_ok(refex_db_cached(f->db, INSERT, &a));
    refex_db_done(a, REFEX_OK);
    assert_ok(refex_db_cached(f->db, INSERT, &b));
    assert_ptr_equal(a, b);
    refex_db_done(b, REFEX_OK);
    assert_ok(refex_db_cached(f->db, COUNT, &b));
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(sqlite3_db_handle(b), f->db);
    refex_db_done(b, REFEX_OK);
}

/* Handed out reset (a half-read SELECT starts again) and with no bindings left over. */
static void test_handed_out_reset_and_unbound(void **state)
{
    fixture *f = *state;
    sqlite3_stmt *st = NULL;
    for (int v = 1; v <= 3; v++)
        assert_ok(insert(f->db, v));
    assert_ok(refex_db_cached(f->db, ALL, &st));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 2);
    assert_ok(refex_db_cached(f->db, ALL, &st)); /* without refex_db_done: reset anyway */
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    refex_db_done(st, REFEX_OK);

    assert_ok(refex_db_cached(f->db, INSERT, &st));
    /* ?1 unbound is NULL, which the NOT NULL column refuses: the last call's 3 is gone. */
    assert_int_equal(refex_db_err(sqlite3_step(st)), REFEX_E_EXISTS);
    refex_db_done(st, REFEX_OK);
    assert_int_equal(count(f->db), 3);
}

/* A kept statement still works after the transaction it ran in was rolled back, whole or
 * to a savepoint, and the kept transaction statements can run again. */
static void test_survives_rollback(void **state)
{
    fixture *f = *state;
    assert_ok(refex_db_begin(f->db));
    assert_ok(insert(f->db, 1));
    refex_db_rollback(f->db);
    assert_true(sqlite3_get_autocommit(f->db));
    assert_int_equal(count(f->db), 0);

    assert_ok(refex_db_begin(f->db));
    assert_ok(insert(f->db, 1));
    assert_ok(refex_db_run(f->db, "SAVEPOINT unit"));
    assert_ok(insert(f->db, 2));
    assert_ok(refex_db_run(f->db, "ROLLBACK TO unit"));
    assert_ok(refex_db_run(f->db, "RELEASE unit"));
    assert_ok(refex_db_run(f->db, "SAVEPOINT unit"));
    assert_rc(insert(f->db, 1), REFEX_E_EXISTS); /* a failed step leaves it usable */
    assert_ok(refex_db_run(f->db, "ROLLBACK TO unit"));
    assert_ok(refex_db_run(f->db, "RELEASE unit"));
    assert_ok(insert(f->db, 3));
    assert_ok(refex_db_commit(f->db));
    assert_int_equal(count(f->db), 2);

    assert_ok(refex_db_begin(f->db));
    assert_ok(insert(f->db, 4));
    assert_ok(refex_db_commit(f->db));
    assert_int_equal(count(f->db), 3);
}

/* Transaction statements fail with typed errors and log, as their text form did. */
static void test_run_errors(void **state)
{
    fixture *f = *state;
    assert_rc(refex_db_run(f->db, "RELEASE absent"), REFEX_E_DB);
    assert_rc(refex_db_commit(f->db), REFEX_E_DB); /* no transaction is open */
    assert_ok(refex_db_begin(f->db));
    assert_rc(refex_db_begin(f->db), REFEX_E_DB); /* no nesting */
    refex_db_rollback(f->db);
    refex_db_rollback(f->db); /* none open: nothing to do */
    assert_true(sqlite3_get_autocommit(f->db));
}

static void test_bad_sql(void **state)
{
    fixture *f = *state;
    sqlite3_stmt *st = (sqlite3_stmt *)&st;
    static const char *const BAD = "SELEC nothing";
    assert_rc(refex_db_cached(f->db, BAD, &st), REFEX_E_DB);
    assert_null(st);
    assert_rc(refex_db_cached(f->db, "SELECT * FROM missing", &st), REFEX_E_DB);
    assert_null(st);
    assert_rc(refex_db_run(f->db, BAD), REFEX_E_DB);
    assert_ok(insert(f->db, 1)); /* the others are unaffected */
}

/* The key is the address, but a text that changed at that address is a new statement. */
static void test_changed_text_same_address(void **state)
{
    fixture *f = *state;
    char sql[64];
    sqlite3_stmt *st = NULL;
    assert_ok(insert(f->db, 7));
    snprintf(sql, sizeof sql, "SELECT 1");
    assert_ok(refex_db_cached(f->db, sql, &st));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    refex_db_done(st, REFEX_OK);
    snprintf(sql, sizeof sql, "SELECT v + 1 FROM t");
    assert_ok(refex_db_cached(f->db, sql, &st));
    assert_string_equal(sqlite3_sql(st), "SELECT v + 1 FROM t");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 8);
    refex_db_done(st, REFEX_OK);
}

/* A kept statement sees a schema change made after it was prepared. */
static void test_schema_change(void **state)
{
    fixture *f = *state;
    sqlite3_stmt *st = NULL;
    assert_ok(insert(f->db, 1));
    assert_ok(refex_db_cached(f->db, ALL, &st));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_count(st), 1);
    refex_db_done(st, REFEX_OK);
    assert_ok(refex_db_exec(f->db, "ALTER TABLE t ADD COLUMN w INTEGER NOT NULL DEFAULT 5"));
    assert_ok(refex_db_cached(f->db, ALL, &st));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_count(st), 2);
    assert_int_equal(sqlite3_column_int(st, 1), 5);
    refex_db_done(st, REFEX_OK);
}

/* Each connection has its own statements; closing one leaves the other's working. */
static void test_per_connection(void **state)
{
    fixture *f = *state;
    sqlite3 *b = NULL;
    sqlite3_stmt *sa = NULL, *sb = NULL;
    open_db(f, "b.db", &b);
    assert_ok(insert(f->db, 1));
    assert_ok(insert(b, 1));
    assert_ok(insert(b, 2));
    assert_ok(refex_db_cached(f->db, INSERT, &sa));
    assert_ok(refex_db_cached(b, INSERT, &sb));
    assert_ptr_not_equal(sa, sb);
    assert_ptr_equal(sqlite3_db_handle(sa), f->db);
    assert_ptr_equal(sqlite3_db_handle(sb), b);
    refex_db_done(sa, REFEX_OK);
    refex_db_done(sb, REFEX_OK);
    assert_int_equal(count(f->db), 1);
    assert_int_equal(count(b), 2);
    refex_db_close(&b);
    assert_null(b);
    assert_ok(insert(f->db, 2));
    assert_int_equal(count(f->db), 2);
}

/* refex_db_close finalizes the kept statements: the connection is really closed (not left
 * a zombie holding them), so SQLite's memory goes back to where it was. */
static void test_close_finalizes(void **state)
{
    fixture *f = *state;
    sqlite3 *b = NULL;
    refex_db_close(&f->db); /* the fixture's, so that only b is open */
    sqlite3_int64 before = sqlite3_memory_used();
    open_db(f, "c.db", &b);
    assert_ok(refex_db_begin(b));
    assert_ok(insert(b, 1));
    assert_ok(refex_db_run(b, "SAVEPOINT unit"));
    assert_ok(refex_db_run(b, "RELEASE unit"));
    assert_ok(refex_db_commit(b));
    assert_int_equal(count(b), 1);
    assert_non_null(sqlite3_next_stmt(b, NULL));
    refex_db_close(&b);
    assert_int_equal(sqlite3_memory_used(), before);
    refex_db_close(&b); /* idempotent */
    refex_db_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_same_statement_each_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handed_out_reset_and_unbound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_survives_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_sql, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_text_same_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_per_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_finalizes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
