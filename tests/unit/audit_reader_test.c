/* Tests for lib/audit_reader.c on real SQLite files written with refex_audit_append:
 * opening defensively (missing, garbage, no audit table), filters, entries by seq,
 * checkpoints and cosignatures, the tree, reconciling two logs, a witness.db. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "audit_reader.h"
#include "audit_tree.h"
#include "db.h"
#include "merkle.h"
#include "util.h"

#define ID1 "00112233445566778899aabbccddeeff"
#define ID2 "ffeeddccbbaa99887766554433221100"
#define ID3 "0123456789abcdef0123456789abcdef"

typedef struct {
    char dir[512];
    char a[1024], b[1024]; /* midwifery's and social care's logs */
} fixture;

static refex_audit_entry entry(int64_t t, const char *event, const char *agency, const char *peer,
                               const char *id, const char *subjects)
{
    refex_audit_entry e = {t,
                           event,
                           "success",
                           agency,
                           "",
                           peer,
                           id,
                           "REFERRAL",
                           "CASE-A",
                           "",
                           "PURPOSE_SAFEGUARDING",
                           "ARTICLE6_PUBLIC_TASK",
                           "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST",
                           "CONSENT_NOT_SOUGHT_SAFEGUARDING",
                           subjects};
    return e;
}

static void write_log(const char *path, const refex_audit_entry *e, size_t n, const char *extra)
{
    sqlite3 *db = NULL;
    char err[256];
    assert_ok(refex_db_open(path, 0, &db, err, sizeof err));
    assert_ok(refex_audit_init(db));
    for (size_t i = 0; i < n; i++)
        assert_ok(refex_audit_append(db, &e[i], NULL));
    if (extra)
        assert_int_equal(sqlite3_exec(db, extra, NULL, NULL, NULL), SQLITE_OK);
    refex_db_close(&db);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    testing_tmpdir(f->dir, sizeof f->dir);
    snprintf(f->a, sizeof f->a, "%s/a.db", f->dir);
    snprintf(f->b, sizeof f->b, "%s/b.db", f->dir);
    /* A sends three, holds receipts for ID1 and ID3; B received ID1 and ID2 only. */
    refex_audit_entry a[] = {
        entry(1000, "send", "midwifery", "social-care", ID1, "UB-1,P-MUM"),
        entry(2000, "send", "midwifery", "social-care", ID2, "UB-2"),
        entry(3000, "receipt", "midwifery", "social-care", ID1, "UB-1,P-MUM"),
        entry(4000, "send", "midwifery", "social-care,police", ID3, "UB-1"),
        entry(5000, "receipt", "midwifery", "social-care", ID3, "UB-1"),
    };
    a[4].outcome = "success: late";
    refex_audit_entry b[] = {
        entry(1500, "receive", "social-care", "midwifery", ID1, "UB-1,P-MUM"),
        entry(2500, "receive", "social-care", "midwifery", ID2, "UB-2"),
    };
    write_log(f->a, a, 5, NULL);
    write_log(f->b, b, 2, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    testing_rmtree(f->dir);
    free(f);
    return 0;
}

static refex_audit_reader *open_ok(const char *path)
{
    refex_audit_reader *r = NULL;
    char err[512] = "";
    int rc = refex_audit_reader_open(path, 0, &r, err, sizeof err);
    if (rc != REFEX_OK)
        fail_msg("open %s: %s (%s)", path, refex_errname(rc), err);
    return r;
}

typedef struct {
    int n;
    int64_t seqs[16];
} seen;

static int collect(const refex_audit_row *row, void *arg)
{
    seen *s = arg;
    if (s->n < 16)
        s->seqs[s->n] = row->seq;
    s->n++;
    return REFEX_OK;
}

static int count(refex_audit_reader *r, const refex_audit_cond *c, size_t n)
{
    seen s = {0};
    assert_ok(refex_audit_reader_each(r, c, n, collect, &s));
    return s.n;
}

static void test_open_defensive(void **state)
{
    fixture *f = *state;
    refex_audit_reader *r = NULL;
    char err[512], path[1100];
    snprintf(path, sizeof path, "%s/missing.db", f->dir);
    assert_true(refex_audit_reader_open(path, 0, &r, err, sizeof err) != REFEX_OK);
    assert_null(r);
    /* Garbage is refused before any query runs. */
    snprintf(path, sizeof path, "%s/garbage.db", f->dir);
    FILE *g = fopen(path, "w");
    assert_non_null(g);
    for (int i = 0; i < 64; i++)
        fputs("not an SQLite database at all. ", g);
    fclose(g);
    assert_true(refex_audit_reader_open(path, 0, &r, err, sizeof err) != REFEX_OK);
    assert_non_null(strstr(err, path));
    assert_null(r);
    /* A database without an audit table: refused, unless asked for any database. */
    snprintf(path, sizeof path, "%s/other.db", f->dir);
    sqlite3 *db = NULL;
    assert_ok(refex_db_open(path, 0, &db, err, sizeof err));
    assert_ok(refex_db_exec(db, "CREATE TABLE t(x)"));
    refex_db_close(&db);
    assert_rc(refex_audit_reader_open(path, 0, &r, err, sizeof err), REFEX_E_NOTFOUND);
    assert_non_null(strstr(err, "no audit log"));
    assert_ok(refex_audit_reader_open(path, REFEX_AUDIT_READER_ANY, &r, err, sizeof err));
    assert_int_equal(refex_audit_reader_has(r, "audit"), 0);
    assert_int_equal(refex_audit_reader_has(r, "t"), 1);
    refex_audit_reader_close(&r);
    assert_null(r);
    refex_audit_reader_close(&r); /* idempotent */
    refex_audit_reader_close(NULL);
}

static void test_each_filters(void **state)
{
    fixture *f = *state;
    refex_audit_reader *r = open_ok(f->a);
    seen s = {0};
    assert_ok(refex_audit_reader_each(r, NULL, 0, collect, &s));
    assert_int_equal(s.n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(s.seqs[i], i + 1);
    /* One element of the list, exactly. */
    assert_int_equal(count(r, (refex_audit_cond[]){{REFEX_AUDIT_BY_SUBJECT, "P-MUM", 0}}, 1), 2);
    assert_int_equal(count(r, (refex_audit_cond[]){{REFEX_AUDIT_BY_SUBJECT, "UB-", 0}}, 1), 0);
    assert_int_equal(count(r, (refex_audit_cond[]){{REFEX_AUDIT_BY_SUBJECT, "UB-_", 0}}, 1), 0);
    assert_int_equal(count(r, (refex_audit_cond[]){{REFEX_AUDIT_BY_PEER, "police", 0}}, 1), 1);
    assert_int_equal(count(r, (refex_audit_cond[]){{REFEX_AUDIT_BY_MESSAGE, ID1, 0}}, 1), 2);
    assert_int_equal(count(r, (refex_audit_cond[]){{REFEX_AUDIT_BY_EVENT, "send", 0}}, 1), 3);
    assert_int_equal(count(r,
                           (refex_audit_cond[]){{REFEX_AUDIT_BY_SINCE, NULL, 2000},
                                                {REFEX_AUDIT_BY_UNTIL, NULL, 4000}},
                           2),
                     3);
    /* "success" also matches "success: ...", but not a prefix of a word. */
    assert_int_equal(count(r, (refex_audit_cond[]){{REFEX_AUDIT_BY_OUTCOME, "success", 0}}, 1), 5);
    assert_int_equal(count(r, (refex_audit_cond[]){{REFEX_AUDIT_BY_OUTCOME, "succ", 0}}, 1), 0);
    /* Every condition must hold; the same field twice is two conditions. */
    assert_int_equal(count(r,
                           (refex_audit_cond[]){{REFEX_AUDIT_BY_CASE, "CASE-A", 0},
                                                {REFEX_AUDIT_BY_CASE, "CASE-B", 0}},
                           2),
                     0);
    assert_int_equal(count(r,
                           (refex_audit_cond[]){
                               {REFEX_AUDIT_BY_TYPE, "REFERRAL", 0},
                               {REFEX_AUDIT_BY_PURPOSE, "PURPOSE_SAFEGUARDING", 0},
                               {REFEX_AUDIT_BY_ARTICLE6, "ARTICLE6_PUBLIC_TASK", 0},
                               {REFEX_AUDIT_BY_ARTICLE9, "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST", 0},
                               {REFEX_AUDIT_BY_CONSENT, "CONSENT_GIVEN", 0}},
                           5),
                     0);
    /* A bad condition is refused, not run. */
    assert_rc(refex_audit_reader_each(r, (refex_audit_cond[]){{(refex_audit_field)99, "x", 0}}, 1,
                                      collect, &s),
              REFEX_E_INVAL);
    assert_rc(refex_audit_reader_each(r, (refex_audit_cond[]){{REFEX_AUDIT_BY_CASE, NULL, 0}}, 1,
                                      collect, &s),
              REFEX_E_INVAL);
    refex_audit_cond many[REFEX_AUDIT_MAX_CONDS + 1];
    for (size_t i = 0; i < sizeof many / sizeof many[0]; i++)
        many[i] = (refex_audit_cond){REFEX_AUDIT_BY_CASE, "CASE-A", 0};
    assert_rc(refex_audit_reader_each(r, many, REFEX_AUDIT_MAX_CONDS + 1, collect, &s),
              REFEX_E_INVAL);
    assert_int_equal(count(r, many, REFEX_AUDIT_MAX_CONDS), 5);
    refex_audit_reader_close(&r);
}

static int check_row(const refex_audit_row *row, void *arg)
{
    (void)arg;
    uint8_t *bytes = NULL, leaf[32];
    size_t len = 0;
    /* The row's fields are the entry's canonical bytes; the leaf hash is theirs. */
    assert_ok(refex_audit_encode(&row->e, &bytes, &len));
    assert_int_equal(len, row->entry_len);
    assert_memory_equal(bytes, row->entry, len);
    refex_merkle_leaf_hash(bytes, len, leaf);
    assert_non_null(row->leaf_hash);
    assert_memory_equal(leaf, row->leaf_hash, 32);
    free(bytes);
    return row->seq == 2 ? REFEX_E_EXISTS : REFEX_OK; /* stop at 2 */
}

static void test_rows_and_entries(void **state)
{
    fixture *f = *state;
    refex_audit_reader *r = open_ok(f->a);
    assert_rc(refex_audit_reader_each(r, NULL, 0, check_row, NULL), REFEX_E_EXISTS);
    uint8_t *bytes = NULL;
    size_t len = 0;
    assert_ok(refex_audit_reader_entry(r, 3, &bytes, &len));
    refex_audit_entry e = entry(3000, "receipt", "midwifery", "social-care", ID1, "UB-1,P-MUM");
    uint8_t *want = NULL;
    size_t wlen = 0;
    assert_ok(refex_audit_encode(&e, &want, &wlen));
    assert_int_equal(len, wlen);
    assert_memory_equal(bytes, want, len);
    free(bytes);
    free(want);
    assert_rc(refex_audit_reader_entry(r, 6, &bytes, &len), REFEX_E_NOTFOUND);
    assert_null(bytes);
    assert_rc(refex_audit_reader_entry(r, 0, &bytes, &len), REFEX_E_NOTFOUND);

    /* The tree is audit_tree's, on the reader's snapshot. */
    uint64_t size = 0, vsize = 0;
    uint8_t root[32], vroot[32], (*proof)[32] = NULL, leaf[32];
    char why[256];
    assert_ok(refex_audit_reader_size(r, &size));
    assert_int_equal(size, 5);
    assert_ok(refex_audit_reader_root(r, 5, root));
    assert_ok(refex_audit_reader_verify(r, &vsize, vroot, why, sizeof why));
    assert_int_equal(vsize, 5);
    assert_memory_equal(root, vroot, 32);
    assert_ok(refex_audit_reader_entry(r, 4, &bytes, &len));
    refex_merkle_leaf_hash(bytes, len, leaf);
    assert_ok(refex_audit_reader_inclusion(r, 3, 5, &proof, &len));
    assert_ok(refex_merkle_verify_inclusion(3, 5, leaf, (const uint8_t(*)[32])proof, len, root));
    free(proof);
    free(bytes);
    refex_audit_reader_close(&r);
}

typedef struct {
    int n;
    uint64_t sizes[8];
    char notes[8][32];
} notes;

static int collect_cp(const refex_audit_checkpoint_row *cp, void *arg)
{
    notes *s = arg;
    assert_int_equal(cp->root_len, 32);
    s->sizes[s->n] = cp->size;
    snprintf(s->notes[s->n++], 32, "%s", cp->note ? cp->note : "(null)");
    return REFEX_OK;
}

static int collect_cs(const refex_audit_cosignature_row *cs, void *arg)
{
    notes *s = arg;
    s->sizes[s->n] = cs->size;
    snprintf(s->notes[s->n++], 32, "%s/%s", cs->witness, cs->note ? cs->note : "(null)");
    return REFEX_OK;
}

static void test_checkpoints_and_cosignatures(void **state)
{
    fixture *f = *state;
    refex_audit_reader *r = open_ok(f->a);
    notes s = {0};
    /* Tables present but empty: nothing, and no checkpoint covers anything. */
    assert_int_equal(refex_audit_reader_has(r, "audit_checkpoints"), 1);
    assert_ok(refex_audit_reader_checkpoints(r, collect_cp, &s));
    assert_int_equal(s.n, 0);
    assert_rc(refex_audit_reader_checkpoint(r, 1, 1, collect_cp, &s), REFEX_E_NOTFOUND);
    refex_audit_reader_close(&r);

    char path[1100], sql[1024];
    snprintf(path, sizeof path, "%s/cp.db", f->dir);
    refex_audit_entry e[4];
    for (int i = 0; i < 4; i++)
        e[i] = entry(1000 + i, "send", "midwifery", "social-care", ID1, "");
    snprintf(sql, sizeof sql,
             "INSERT INTO audit_checkpoints VALUES (3, zeroblob(32), 'cp3', 30),"
             " (2, zeroblob(32), 'cp2', 20);"
             "INSERT INTO audit_cosignatures VALUES (3, 'w2', 'cs3b', 31), (3, 'w1', 'cs3a', 32),"
             " (2, 'w1', 'cs2', 21);");
    write_log(path, e, 4, sql);
    r = open_ok(path);
    assert_ok(refex_audit_reader_checkpoints(r, collect_cp, &s));
    assert_int_equal(s.n, 2);
    assert_int_equal(s.sizes[0], 2);
    assert_string_equal(s.notes[1], "cp3");
    /* Exactly a size, or the largest covering an entry. */
    memset(&s, 0, sizeof s);
    assert_ok(refex_audit_reader_checkpoint(r, 2, 0, collect_cp, &s));
    assert_ok(refex_audit_reader_checkpoint(r, 1, 1, collect_cp, &s));
    assert_int_equal(s.n, 2);
    assert_int_equal(s.sizes[0], 2);
    assert_int_equal(s.sizes[1], 3);
    assert_rc(refex_audit_reader_checkpoint(r, 4, 1, collect_cp, &s), REFEX_E_NOTFOUND);
    assert_rc(refex_audit_reader_checkpoint(r, 1, 0, collect_cp, &s), REFEX_E_NOTFOUND);
    /* Cosignatures by size, then witness; or of one size. */
    memset(&s, 0, sizeof s);
    assert_ok(refex_audit_reader_cosignatures(r, 0, collect_cs, &s));
    assert_int_equal(s.n, 3);
    assert_string_equal(s.notes[0], "w1/cs2");
    assert_string_equal(s.notes[1], "w1/cs3a");
    assert_string_equal(s.notes[2], "w2/cs3b");
    memset(&s, 0, sizeof s);
    assert_ok(refex_audit_reader_cosignatures(r, 3, collect_cs, &s));
    assert_int_equal(s.n, 2);
    refex_audit_reader_close(&r);
}

static void test_missing_tables(void **state)
{
    fixture *f = *state;
    char path[1100];
    snprintf(path, sizeof path, "%s/old.db", f->dir);
    refex_audit_entry e = entry(1000, "send", "midwifery", "social-care", ID1, "");
    write_log(path, &e, 1, "DROP TABLE audit_checkpoints; DROP TABLE audit_cosignatures;");
    refex_audit_reader *r = open_ok(path);
    notes s = {0};
    assert_int_equal(refex_audit_reader_has(r, "audit_checkpoints"), 0);
    assert_int_equal(refex_audit_reader_has(r, "audit_cosignatures"), 0);
    assert_true(refex_audit_reader_checkpoints(r, collect_cp, &s) != REFEX_OK);
    assert_true(refex_audit_reader_cosignatures(r, 0, collect_cs, &s) != REFEX_OK);
    refex_audit_reader_close(&r);
}

typedef struct {
    int n;
    char ids[4][33];
    int flags[4];
} found;

static int collect_d(const refex_audit_discrepancy *d, void *arg)
{
    found *s = arg;
    snprintf(s->ids[s->n], 33, "%s", d->message_id);
    s->flags[s->n++] = d->flag;
    return REFEX_OK;
}

static void test_reconcile(void **state)
{
    fixture *f = *state;
    refex_audit_reader *r = NULL;
    char err[512], a[64], b[64];
    int n = 0;
    assert_ok(refex_audit_reader_open_pair(f->a, f->b, &r, err, sizeof err));
    assert_ok(refex_audit_reader_agency(r, 0, a, sizeof a, &n));
    assert_int_equal(n, 1);
    assert_string_equal(a, "midwifery");
    assert_ok(refex_audit_reader_agency(r, 1, b, sizeof b, &n));
    assert_string_equal(b, "social-care");
    found s = {0};
    /* ID3 was sent, B never logged it, A holds its receipt: flag 1. */
    assert_ok(
        refex_audit_reader_reconcile(r, REFEX_AUDIT_SENT_NOT_RECEIVED, a, b, 0, collect_d, &s));
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], ID3);
    assert_int_equal(s.flags[0], 1);
    memset(&s, 0, sizeof s);
    assert_ok(
        refex_audit_reader_reconcile(r, REFEX_AUDIT_RECEIVED_NOT_SENT, a, b, 0, collect_d, &s));
    assert_int_equal(s.n, 0);
    /* ID2 has no receipt: overdue once the cut-off passes its send time. */
    assert_ok(
        refex_audit_reader_reconcile(r, REFEX_AUDIT_UNACKNOWLEDGED, a, b, 2000, collect_d, &s));
    assert_int_equal(s.n, 0);
    assert_ok(
        refex_audit_reader_reconcile(r, REFEX_AUDIT_UNACKNOWLEDGED, a, b, 2001, collect_d, &s));
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], ID2);
    assert_int_equal(s.flags[0], 0);
    assert_rc(
        refex_audit_reader_reconcile(r, (refex_audit_reconcile_kind)7, a, b, 0, collect_d, &s),
        REFEX_E_INVAL);
    refex_audit_reader_close(&r);
    /* Reversed, B's receives were never sent by B. */
    assert_ok(refex_audit_reader_open_pair(f->b, f->a, &r, err, sizeof err));
    memset(&s, 0, sizeof s);
    assert_ok(refex_audit_reader_reconcile(r, REFEX_AUDIT_RECEIVED_NOT_SENT, "social-care",
                                           "midwifery", 0, collect_d, &s));
    assert_int_equal(s.n, 0); /* A logged no receive from B */
    refex_audit_reader_close(&r);
    /* The second file must be a log too. */
    char path[1100];
    snprintf(path, sizeof path, "%s/missing.db", f->dir);
    assert_true(refex_audit_reader_open_pair(f->a, path, &r, err, sizeof err) != REFEX_OK);
    assert_non_null(strstr(err, path));
    assert_null(r);
}

static int collect_note(const char *note, void *arg)
{
    notes *s = arg;
    snprintf(s->notes[s->n++], 32, "%s", note ? note : "(null)");
    return REFEX_OK;
}

static void test_witnessed(void **state)
{
    fixture *f = *state;
    char path[1100], err[512];
    sqlite3 *db = NULL;
    snprintf(path, sizeof path, "%s/witness.db", f->dir);
    assert_ok(refex_db_open(path, 0, &db, err, sizeof err));
    assert_ok(refex_db_exec(db,
                            "CREATE TABLE witnessed (agency TEXT NOT NULL, size INTEGER NOT "
                            "NULL, root BLOB NOT NULL, note TEXT NOT NULL, cosigned_ms "
                            "INTEGER NOT NULL, PRIMARY KEY (agency, size));"
                            "INSERT INTO witnessed VALUES ('midwifery', 9, x'00', 'n9', 1),"
                            " ('midwifery', 4, x'00', 'n4', 1), ('police', 5, x'00', 'p5', 1)"));
    refex_db_close(&db);
    notes s = {0};
    assert_ok(refex_audit_reader_witnessed(path, "midwifery", collect_note, &s, err, sizeof err));
    assert_int_equal(s.n, 2);
    assert_string_equal(s.notes[0], "n4");
    assert_string_equal(s.notes[1], "n9");
    memset(&s, 0, sizeof s);
    assert_ok(refex_audit_reader_witnessed(path, "nobody", collect_note, &s, err, sizeof err));
    assert_int_equal(s.n, 0);
    /* An agent.db is not a witness database. */
    assert_true(refex_audit_reader_witnessed(f->a, "midwifery", collect_note, &s, err,
                                             sizeof err) != REFEX_OK);
    assert_non_null(strstr(err, "not a refex witness database"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_defensive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_and_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoints_and_cosignatures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_tables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconcile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_witnessed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
