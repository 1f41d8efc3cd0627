/* Tests for the audit log's Merkle tree: roots and proofs from the stored subtree hashes
 * agree with the in-memory reference (merkle.c) for every size, and verification finds
 * an edited, re-hashed, deleted or reordered row. Uses a real SQLite file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "audit.h"
#include "audit_tree.h"
#include "db.h"
#include "merkle.h"
#include "util.h"

typedef struct {
    char dir[256];
    sqlite3 *db;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char path[300], err[256];
    testing_tmpdir(f->dir, sizeof f->dir);
    snprintf(path, sizeof path, "%s/agent.db", f->dir);
    if (refex_db_open(path, 0, &f->db, err, sizeof err) != REFEX_OK ||
        refex_audit_init(f->db) != REFEX_OK)
        return -1;
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

static void append_n(sqlite3 *db, int n)
{
    for (int i = 0; i < n; i++) {
        char peer[32], case_ref[32];
        snprintf(peer, sizeof peer, "agency-%d", i % 3);
        snprintf(case_ref, sizeof case_ref, "C-%04d", i);
        refex_audit_entry e = {.time_ms = 1700000000000 + i,
                               .event = i % 2 ? "receive" : "send",
                               .outcome = "success",
                               .agency = "midwifery",
                               .practitioner = "MW-0042",
                               .peer = peer,
                               .message_id = "",
                               .message_type = "REFERRAL",
                               .case_ref = case_ref,
                               .envelope_hash = "",
                               .purpose = "PURPOSE_SAFEGUARDING",
                               .article6 = "ARTICLE6_PUBLIC_TASK",
                               .article9 = "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST",
                               .consent = "CONSENT_NOT_SOUGHT_SAFEGUARDING"};
        assert_ok(refex_db_begin(db));
        assert_ok(refex_audit_append(db, &e, NULL));
        assert_ok(refex_db_commit(db));
    }
}

static uint8_t (*leaves(sqlite3 *db, uint64_t *n))[32]
{
    assert_ok(refex_audit_tree_size(db, n));
    uint8_t(*l)[32] = calloc(*n ? *n : 1, 32);
    sqlite3_stmt *st = NULL;
    assert_ok(refex_db_prepare(db, "SELECT leaf_hash FROM audit ORDER BY seq", &st));
    for (uint64_t i = 0; sqlite3_step(st) == SQLITE_ROW; i++)
        memcpy(l[i], sqlite3_column_blob(st, 0), 32);
    sqlite3_finalize(st);
    return l;
}

static void test_roots_and_proofs_match_reference(void **state)
{
    fixture *f = *state;
    append_n(f->db, 40);
    uint64_t n = 0;
    uint8_t(*l)[32] = leaves(f->db, &n);
    assert_int_equal(n, 40);
    for (uint64_t size = 0; size <= n; size++) {
        uint8_t want[32], got[32];
        assert_ok(refex_merkle_root((const uint8_t(*)[32])l, size, want));
        assert_ok(refex_audit_tree_root(f->db, size, got));
        assert_memory_equal(got, want, 32);
        for (uint64_t i = 0; i < size; i++) {
            uint8_t(*p)[32] = NULL;
            size_t len = 0;
            assert_ok(refex_audit_tree_inclusion(f->db, i, size, &p, &len));
            assert_ok(
                refex_merkle_verify_inclusion(i, size, l[i], (const uint8_t(*)[32])p, len, want));
            free(p);
        }
        for (uint64_t m = 1; m <= size; m++) {
            uint8_t old[32];
            uint8_t(*p)[32] = NULL;
            size_t len = 0;
            assert_ok(refex_merkle_root((const uint8_t(*)[32])l, m, old));
            assert_ok(refex_audit_tree_consistency(f->db, m, size, &p, &len));
            assert_ok(
                refex_merkle_verify_consistency(m, size, old, want, (const uint8_t(*)[32])p, len));
            free(p);
        }
    }
    uint8_t root[32];
    assert_rc(refex_audit_tree_root(f->db, n + 1, root), REFEX_E_INVAL);
    uint8_t(*p)[32] = NULL;
    size_t len = 0;
    assert_rc(refex_audit_tree_inclusion(f->db, n, n, &p, &len), REFEX_E_INVAL);
    assert_rc(refex_audit_tree_consistency(f->db, 0, n, &p, &len), REFEX_E_INVAL);
    free(l);
}

static void test_verify_intact(void **state)
{
    fixture *f = *state;
    uint64_t size = 0;
    uint8_t root[32], want[32];
    char why[256];
    assert_ok(refex_audit_tree_verify(f->db, &size, root, why, sizeof why));
    assert_int_equal(size, 0);
    append_n(f->db, 21);
    assert_ok(refex_audit_tree_verify(f->db, &size, root, why, sizeof why));
    assert_int_equal(size, 21);
    assert_ok(refex_audit_tree_root(f->db, 21, want));
    assert_memory_equal(root, want, 32);
}

/* A tamperer with the file can drop the triggers first. */
static void tamper(sqlite3 *db, const char *sql)
{
    assert_ok(refex_db_exec(db, "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;"
                                "DROP TRIGGER audit_no_replace;"));
    assert_ok(refex_db_exec(db, sql));
}

static void expect_tampered(sqlite3 *db, const char *needle)
{
    uint64_t size = 0;
    uint8_t root[32];
    char why[256];
    assert_rc(refex_audit_tree_verify(db, &size, root, why, sizeof why), REFEX_E_TAMPERED);
    if (!strstr(why, needle))
        fail_msg("verify said \"%s\", expected it to mention \"%s\"", why, needle);
}

static void test_edit_a_row(void **state)
{
    fixture *f = *state;
    append_n(f->db, 16);
    tamper(f->db, "UPDATE audit SET peer = 'police' WHERE seq = 5");
    expect_tampered(f->db, "entry 5: its fields do not match");
}

static void test_edit_a_row_and_rehash_it(void **state)
{
    fixture *f = *state;
    append_n(f->db, 16);
    /* Rewrite entry 5 consistently (fields, bytes and leaf hash): the stored subtree hashes
     * above it no longer match. */
    refex_audit_entry e = {.time_ms = 1,
                           .event = "send",
                           .outcome = "success",
                           .agency = "midwifery",
                           .practitioner = "",
                           .peer = "police",
                           .message_id = "",
                           .message_type = "REFERRAL",
                           .case_ref = "",
                           .envelope_hash = "",
                           .purpose = "",
                           .article6 = "",
                           .article9 = "",
                           .consent = ""};
    uint8_t *bytes = NULL, leaf[32];
    size_t len = 0;
    assert_ok(refex_audit_encode(&e, &bytes, &len));
    refex_merkle_leaf_hash(bytes, len, leaf);
    tamper(f->db, "SELECT 1");
    sqlite3_stmt *st = NULL;
    assert_ok(
        refex_db_prepare(f->db,
                         "UPDATE audit SET time_ms = 1, event = 'send', peer = 'police',"
                         " practitioner = '', case_ref = '', purpose = '', article6 = '',"
                         " article9 = '', consent = '', entry = ?, leaf_hash = ? WHERE seq = 5",
                         &st));
    sqlite3_bind_blob(st, 1, bytes, (int)len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, leaf, 32, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    free(bytes);
    expect_tampered(f->db, "subtree hash");
}

static void test_delete_a_middle_row(void **state)
{
    fixture *f = *state;
    append_n(f->db, 16);
    tamper(f->db, "DELETE FROM audit WHERE seq = 7");
    expect_tampered(f->db, "entry 7 is missing");
}

static void test_reorder_two_rows(void **state)
{
    fixture *f = *state;
    append_n(f->db, 16);
    tamper(f->db, "UPDATE audit SET seq = 1000 WHERE seq = 3;"
                  "UPDATE audit SET seq = 3 WHERE seq = 4;"
                  "UPDATE audit SET seq = 4 WHERE seq = 1000;");
    expect_tampered(f->db, "subtree hash");
}

static void test_truncate_the_tail(void **state)
{
    fixture *f = *state;
    append_n(f->db, 16);
    tamper(f->db, "DELETE FROM audit WHERE seq > 12");
    expect_tampered(f->db, "subtree hashes stored");
}

static void test_nodes_are_append_only(void **state)
{
    fixture *f = *state;
    append_n(f->db, 4);
    assert_int_not_equal(refex_db_exec(f->db, "UPDATE audit_nodes SET hash = zeroblob(32)"),
                         REFEX_OK);
    assert_int_not_equal(refex_db_exec(f->db, "DELETE FROM audit_nodes"), REFEX_OK);
    assert_int_not_equal(
        refex_db_exec(f->db, "INSERT OR REPLACE INTO audit_nodes VALUES (1, 0, zeroblob(32))"),
        REFEX_OK);
}

/* Checkpoints: none yet is NOTFOUND; the largest size is the latest; a second note for a
 * size already kept is ignored (the first stays). */
static void test_checkpoints_latest_and_first_kept(void **state)
{
    fixture *f = *state;
    uint8_t root[32] = {1};
    char *note = NULL;
    assert_rc(refex_audit_tree_latest_checkpoint(f->db, &note), REFEX_E_NOTFOUND);
    assert_null(note);
    assert_ok(refex_audit_tree_add_checkpoint(f->db, 3, root, "note-3", 1000));
    assert_ok(refex_audit_tree_add_checkpoint(f->db, 7, root, "note-7", 2000));
    assert_ok(refex_audit_tree_add_checkpoint(f->db, 5, root, "note-5", 3000));
    assert_ok(refex_audit_tree_add_checkpoint(f->db, 7, root, "another-7", 4000));
    assert_ok(refex_audit_tree_latest_checkpoint(f->db, &note));
    assert_string_equal(note, "note-7");
    free(note);
    assert_rc(refex_audit_tree_add_checkpoint(f->db, (uint64_t)INT64_MAX + 1, root, "x", 0),
              REFEX_E_INVAL);
}

/* Cosignatures: the witnessed size is the largest any witness cosigned, 0 before any; a
 * repeat from the same witness is ignored; the table stays append-only. */
static void test_cosignatures_witnessed_size(void **state)
{
    fixture *f = *state;
    uint64_t size = 99;
    assert_ok(refex_audit_tree_witnessed_size(f->db, &size));
    assert_int_equal(size, 0);
    assert_ok(refex_audit_tree_add_cosignature(f->db, 4, "broker", "cosigned-4", 1000));
    assert_ok(refex_audit_tree_add_cosignature(f->db, 9, "broker", "cosigned-9", 2000));
    assert_ok(refex_audit_tree_add_cosignature(f->db, 9, "broker", "again-9", 3000));
    assert_ok(refex_audit_tree_add_cosignature(f->db, 6, "witness-2", "cosigned-6", 4000));
    assert_ok(refex_audit_tree_witnessed_size(f->db, &size));
    assert_int_equal(size, 9);
    sqlite3_stmt *st = NULL;
    assert_ok(refex_db_prepare(
        f->db, "SELECT count(*), min(note) FROM audit_cosignatures WHERE size = 9", &st));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    assert_string_equal((const char *)sqlite3_column_text(st, 1), "cosigned-9");
    sqlite3_finalize(st);
    assert_int_not_equal(refex_db_exec(f->db, "DELETE FROM audit_cosignatures"), REFEX_OK);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roots_and_proofs_match_reference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_intact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edit_a_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edit_a_row_and_rehash_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_a_middle_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reorder_two_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncate_the_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nodes_are_append_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints_latest_and_first_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cosignatures_witnessed_size, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
