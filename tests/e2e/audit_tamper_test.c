/* The tamper matrix: a real network writes and witnesses audit logs, then copies of a log
 * are tampered with the way an insider with the file (and even the agency's signing key)
 * could, and `refex audit verify` must say what is wrong. Also: the broker refuses to
 * witness a fork. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/testing.h"
#include "harness.h"
#include "audit.h"
#include "audit_tree.h"
#include "checkpoint.h"
#include "codec.h"
#include "db.h"
#include "merkle.h"
#include "util.h"

static h_net g_net;
static uint64_t g_witnessed; /* size of midwifery's log the broker last cosigned */

static const char *const AGENCIES[] = {"midwifery", "social-care", NULL};
static const char *const LISTED[] = {"police", NULL};

static long long mw(const char *sql)
{
    return h_sql_int(&g_net, "data/midwifery/agent.db", sql);
}

static int setup(void **state)
{
    (void)state;
    if (h_net_init(&g_net, AGENCIES, LISTED, NULL) != 0 || h_net_start_broker(&g_net) != 0)
        return -1;
    for (int i = 0; AGENCIES[i]; i++)
        if (h_net_start_agent(&g_net, AGENCIES[i]) != 0)
            return -1;
    /* Ten referrals, their receipts, and a witnessed checkpoint covering all of it. */
    for (int i = 0; i < 10; i++) {
        char out[2048], subj[32];
        snprintf(subj, sizeof subj, "UB-T%02d", i);
        const char *args[] = {
            "send",          "--to", "social-care", "--type",      "referral", H_REFERRAL_FLAGS,
            "--subject-ref", subj,   "--article6",  "public-task", NULL};
        if (h_cli_agent(&g_net, "midwifery", out, sizeof out, args) != 0)
            return -1;
    }
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS * 2;
    while (refex_mono_ms() < deadline) {
        long long n = mw("SELECT count(*) FROM audit");
        if (n == 20 && mw("SELECT IFNULL(MAX(size), 0) FROM audit_cosignatures") == n)
            break;
        h_pause();
    }
    g_witnessed = (uint64_t)mw("SELECT IFNULL(MAX(size), 0) FROM audit_cosignatures");
    if (g_witnessed != 20)
        return -1;
    /* Freeze the logs: stop the agents (a clean stop folds the WAL into the file). */
    for (int i = 0; i < g_net.n_agents; i++)
        h_stop(&g_net.agents[i]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

/* A fresh copy of midwifery's log to tamper with. */
static sqlite3 *copy_log(const char *name, char *path, size_t len)
{
    char src[700];
    uint8_t *data = NULL;
    size_t n = 0;
    h_path(&g_net, src, sizeof src, "data/midwifery/agent.db");
    h_path(&g_net, path, len, "%s.db", name);
    assert_ok(refex_file_read(src, 1u << 30, &data, &n));
    assert_ok(refex_file_write(path, data, n, 0600));
    free(data);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    /* An insider with the file can drop the append-only triggers first. */
    assert_int_equal(sqlite3_exec(db,
                                  "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;"
                                  "DROP TRIGGER audit_no_replace; DROP TRIGGER "
                                  "audit_nodes_no_delete; DROP TRIGGER audit_checkpoints_no_delete;"
                                  "DROP TRIGGER audit_cosignatures_no_delete;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    return db;
}

/* Runs refex audit verify on path with the agency key and the broker's witness.db. */
static int verify(const char *path, char *out, size_t len)
{
    char key[700], wdb[700], wkey[700];
    h_path(&g_net, key, sizeof key, "keys/midwifery.public");
    h_witness_source(&g_net, "data/broker/witness.db", wdb, sizeof wdb);
    h_path(&g_net, wkey, sizeof wkey, "keys/broker.public");
    const char *args[] = {"audit",     "verify", "--db",          path, "--key", key,
                          "--witness", wdb,      "--witness-key", wkey, NULL};
    return h_cli(&g_net, out, len, args);
}

static void expect_detected(const char *path, const char *needle)
{
    char out[4096];
    int rc = verify(path, out, sizeof out);
    printf("  %s", out);
    if (rc != 1 || !strstr(out, needle))
        fail_msg("verify exited %d with \"%s\"; expected exit 1 mentioning \"%s\"", rc, out,
                 needle);
}

static void test_intact_log_verifies(void **state)
{
    (void)state;
    char path[700], out[4096];
    h_path(&g_net, path, sizeof path, "data/midwifery/agent.db");
    assert_int_equal(verify(path, out, sizeof out), 0);
    printf("  %s", out);
    assert_non_null(strstr(out, "intact, 20 entries"));
    assert_non_null(strstr(out, "witnessed by broker"));

    /* The same check from an exported file of witnessed checkpoints. */
    char wdb[700], json_path[700], key[700], wkey[700], exported[65536];
    h_witness_source(&g_net, "data/broker/witness.db", wdb, sizeof wdb);
    h_path(&g_net, json_path, sizeof json_path, "witnessed.json");
    const char *exp[] = {"audit", "witnessed", "--witness-db", wdb, "--agency", "midwifery", NULL};
    assert_int_equal(h_cli(&g_net, exported, sizeof exported, exp), 0);
    json_error_t jerr;
    json_t *arr = json_loads(exported, 0, &jerr);
    assert_true(json_is_array(arr) && json_array_size(arr) >= 1);
    assert_int_equal(json_dump_file(arr, json_path, 0), 0);
    json_decref(arr);
    h_path(&g_net, key, sizeof key, "keys/midwifery.public");
    h_path(&g_net, wkey, sizeof wkey, "keys/broker.public");
    const char *args[] = {"audit",     "verify",  "--db",          path, "--key", key,
                          "--witness", json_path, "--witness-key", wkey, NULL};
    assert_int_equal(h_cli(&g_net, out, sizeof out, args), 0);
    assert_non_null(strstr(out, "witnessed by broker"));
}

static void test_edit_a_row(void **state)
{
    (void)state;
    char path[700];
    sqlite3 *db = copy_log("edit", path, sizeof path);
    assert_int_equal(
        sqlite3_exec(db, "UPDATE audit SET peer = 'police' WHERE seq = 3", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    expect_detected(path, "entry 3: its fields do not match");
}

/* Rewrites row seq with new fields, and its canonical bytes and leaf hash to match. */
static void rewrite_row(sqlite3 *db, int seq, const char *peer)
{
    refex_audit_entry e = {.time_ms = 1700000000000,
                           .event = "send",
                           .outcome = "success",
                           .agency = "midwifery",
                           .practitioner = "",
                           .peer = peer,
                           .message_id = "",
                           .message_type = "REFERRAL",
                           .case_ref = "",
                           .envelope_hash = "",
                           .purpose = "",
                           .article6 = "",
                           .article9 = "",
                           .consent = "",
                           .subjects = ""};
    uint8_t *bytes = NULL, leaf[32];
    size_t len = 0;
    assert_ok(refex_audit_encode(&e, &bytes, &len));
    refex_merkle_leaf_hash(bytes, len, leaf);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "UPDATE audit SET time_ms = 1700000000000, event = 'send',"
                                        " outcome = 'success', practitioner = '', peer = ?,"
                                        " message_id = '', case_ref = '', envelope_hash = '',"
                                        " purpose = '', article6 = '', article9 = '', consent = '',"
                                        " subjects = '', entry = ?, leaf_hash = ? WHERE seq = ?",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, peer, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, bytes, (int)len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, leaf, 32, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, seq);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    free(bytes);
}

static void test_edit_a_row_and_recompute_its_hashes(void **state)
{
    (void)state;
    char path[700];
    sqlite3 *db = copy_log("rehash", path, sizeof path);
    rewrite_row(db, 3, "police");
    sqlite3_close(db);
    expect_detected(path, "subtree hash");
}

static void test_delete_a_middle_row(void **state)
{
    (void)state;
    char path[700];
    sqlite3 *db = copy_log("delete", path, sizeof path);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM audit WHERE seq = 9", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    expect_detected(path, "entry 9 is missing");
}

static void test_reorder_two_rows(void **state)
{
    (void)state;
    char path[700];
    sqlite3 *db = copy_log("reorder", path, sizeof path);
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE audit SET seq = 1000 WHERE seq = 5;"
                                  "UPDATE audit SET seq = 5 WHERE seq = 6;"
                                  "UPDATE audit SET seq = 6 WHERE seq = 1000;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    expect_detected(path, "subtree hash");
}

/* Cut the log to 12 entries, with every hash and checkpoint beyond made to agree: only the
 * witness still knows it had 20. */
static void test_truncate_below_witnessed_size(void **state)
{
    (void)state;
    char path[700], out[4096];
    sqlite3 *db = copy_log("truncate", path, sizeof path);
    assert_int_equal(sqlite3_exec(db,
                                  "DELETE FROM audit WHERE seq > 12;"
                                  "DELETE FROM audit_nodes WHERE (idx + 1) << level > 12;"
                                  "DELETE FROM audit_checkpoints WHERE size > 12;"
                                  "DELETE FROM audit_cosignatures WHERE size > 12;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    /* Without the witness, the shortened log looks fine ... */
    char key[700];
    h_path(&g_net, key, sizeof key, "keys/midwifery.public");
    const char *args[] = {"audit", "verify", "--db", path, "--key", key, NULL};
    assert_int_equal(h_cli(&g_net, out, sizeof out, args), 0);
    /* ... the witness does not. */
    expect_detected(path, "truncated below a witnessed size");
}

/* An insider with the agency's signing key builds a whole new, self-consistent history and
 * signs checkpoints for it. */
static void test_replace_with_a_consistent_history_signed_by_the_same_key(void **state)
{
    (void)state;
    char path[700], keyfile[700], err[256], out[4096];
    sqlite3 *db = NULL;
    h_path(&g_net, path, sizeof path, "replaced.db");
    assert_ok(refex_db_open(path, 0, &db, err, sizeof err));
    assert_ok(refex_audit_init(db));
    for (uint64_t i = 0; i < g_witnessed; i++) {
        refex_audit_entry e = {.time_ms = 1700000000000 + (int64_t)i,
                               .event = "send",
                               .outcome = "success",
                               .agency = "midwifery",
                               .peer = "social-care",
                               .message_type = "REFERRAL"};
        assert_ok(refex_db_begin(db));
        assert_ok(refex_audit_append(db, &e, NULL));
        assert_ok(refex_db_commit(db));
    }
    refex_keys *k = NULL;
    h_path(&g_net, keyfile, sizeof keyfile, "keys/midwifery.secret");
    assert_ok(refex_keys_load(keyfile, &k, err, sizeof err));
    refex_checkpoint c;
    char *note = NULL;
    memset(&c, 0, sizeof c);
    strcpy(c.origin, "refex/audit/midwifery");
    c.size = g_witnessed;
    assert_ok(refex_audit_tree_root(db, c.size, c.root));
    assert_ok(refex_checkpoint_sign(&c, "midwifery", k->sk->sign_sk, &note));
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "INSERT INTO audit_checkpoints VALUES (?, ?, ?, 0)", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)c.size);
    sqlite3_bind_blob(st, 2, c.root, 32, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, note, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    free(note);
    refex_keys_destroy(&k);
    refex_db_close(&db);

    char key[700];
    h_path(&g_net, key, sizeof key, "keys/midwifery.public");
    const char *args[] = {"audit", "verify", "--db", path, "--key", key, NULL};
    assert_int_equal(h_cli(&g_net, out, sizeof out, args), 0); /* self-consistent and signed */
    expect_detected(path, "history was rewritten, replaced or forked");
}

/* A value stored with another type (here a BLOB) reads back as the same text, so the
 * entry's bytes still match, but queries would no longer find the row. */
static void test_change_a_column_type(void **state)
{
    (void)state;
    char path[700];
    sqlite3 *db = copy_log("retype", path, sizeof path);
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE audit SET subjects = CAST(subjects AS BLOB)"
                                  " WHERE seq = 3",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    expect_detected(path, "entry 3: a column holds a value of the wrong type");
}

/* A hostile file: a view standing in for the audit table. */
static void test_a_view_in_place_of_the_table(void **state)
{
    (void)state;
    char path[700];
    sqlite3 *db = copy_log("view", path, sizeof path);
    assert_int_equal(sqlite3_exec(db,
                                  "ALTER TABLE audit RENAME TO audit_real;"
                                  "CREATE VIEW audit AS SELECT * FROM audit_real;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    expect_detected(path, "contains views");
}

/* An export of an edited log says so and fails: csv and FHIR readers cannot check. */
static void test_export_of_an_edited_log_fails(void **state)
{
    (void)state;
    char path[700], out[65536];
    sqlite3 *db = copy_log("export-edit", path, sizeof path);
    assert_int_equal(
        sqlite3_exec(db, "UPDATE audit SET peer = 'police' WHERE seq = 3", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    const char *args[] = {"audit", "export", "--format", "csv", "--db", path, NULL};
    assert_int_equal(h_cli(&g_net, out, sizeof out, args), 1);
    assert_non_null(strstr(out, "entry 3"));
}

/* Fork: two different checkpoints of the same size shown to the broker. */
static void test_broker_refuses_a_fork(void **state)
{
    (void)state;
    h_client c;
    char log[700];
    assert_int_equal(h_client_open(&c, &g_net, "police", NULL), 0);
    assert_int_equal(h_client_hello(&c, "police"), 0);
    for (int round = 0; round < 2; round++) {
        refex_checkpoint cp;
        char *note = NULL;
        memset(&cp, 0, sizeof cp);
        strcpy(cp.origin, "refex/audit/police");
        cp.size = 5;
        memset(cp.root, round ? 0xbb : 0xaa, 32); /* two different histories of size 5 */
        assert_ok(refex_checkpoint_sign(&cp, "police", c.keys->sk->sign_sk, &note));
        Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
        Refex__V1__CheckpointSubmit cs = REFEX__V1__CHECKPOINT_SUBMIT__INIT;
        cs.note = note;
        f.kind_case = REFEX__V1__FRAME__KIND_CHECKPOINT;
        f.checkpoint = &cs;
        assert_int_equal(h_client_send(&c, &f), 0);
        Refex__V1__Frame *r = h_client_recv(&c, H_TIMEOUT_MS);
        assert_non_null(r);
        if (round == 0) {
            assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_COSIGNED);
        } else {
            assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_ERROR);
            assert_int_equal(r->error->code, REFEX_E_TAMPERED);
            assert_non_null(strstr(r->error->detail, "fork"));
        }
        refex_frame_free(&r);
        free(note);
    }
    h_client_close(&c);
    h_path(&g_net, log, sizeof log, "logs/broker.log");
    assert_true(h_tree_contains(log, "ALERT witness: audit log of police", 34));
    assert_true(h_alive(&g_net.broker));
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intact_log_verifies),
        cmocka_unit_test(test_edit_a_row),
        cmocka_unit_test(test_edit_a_row_and_recompute_its_hashes),
        cmocka_unit_test(test_delete_a_middle_row),
        cmocka_unit_test(test_reorder_two_rows),
        cmocka_unit_test(test_truncate_below_witnessed_size),
        cmocka_unit_test(test_replace_with_a_consistent_history_signed_by_the_same_key),
        cmocka_unit_test(test_change_a_column_type),
        cmocka_unit_test(test_a_view_in_place_of_the_table),
        cmocka_unit_test(test_export_of_an_edited_log_fails),
        cmocka_unit_test(test_broker_refuses_a_fork),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
