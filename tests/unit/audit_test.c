/* Tests for lib/audit.c and lib/db.c on a real SQLite file: durability pragmas, the
 * canonical leaf encoding and its RFC 6962 hash, append-only rows, and the JSON listing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "db.h"
#include "util.h"

#define MSG_ID   "00112233445566778899aabbccddeeff"
#define ENV_HASH "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
#define N_FIELDS 15

typedef struct {
    char dir[512];
    char path[1024];
    sqlite3 *db;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char err[256] = "";
    if (!f)
        return -1;
    testing_tmpdir(f->dir, sizeof f->dir);
    snprintf(f->path, sizeof f->path, "%s/agent.db", f->dir);
    int rc = refex_db_open(f->path, 0, &f->db, err, sizeof err);
    if (rc != REFEX_OK)
        fail_msg("refex_db_open: %s: %s", refex_errname(rc), err);
    assert_ok(refex_audit_init(f->db));
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

static refex_audit_entry sample(void)
{
    refex_audit_entry e = {
        .time_ms = INT64_C(1767225600123),
        .event = "send",
        .outcome = "success",
        .agency = "midwifery-north",
        .practitioner = "MW-0042",
        .peer = "social-care,health-visiting",
        .message_id = MSG_ID,
        .message_type = "REFERRAL",
        .case_ref = "",
        .envelope_hash = ENV_HASH,
        .purpose = "PURPOSE_SAFEGUARDING",
        .article6 = "ARTICLE6_PUBLIC_TASK",
        .article9 = "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST",
        .consent = "CONSENT_NOT_SOUGHT_SAFEGUARDING",
        .subjects = "UB-0001,P-0001",
    };
    return e;
}

static void encode_ok(const refex_audit_entry *e, uint8_t **out, size_t *len)
{
    *out = NULL;
    assert_ok(refex_audit_encode(e, out, len));
    assert_non_null(*out);
}

static void leaf_of(const uint8_t *entry, size_t len, uint8_t leaf[32])
{
    uint8_t *pre = malloc(len + 1);
    assert_non_null(pre);
    pre[0] = 0x00;
    memcpy(pre + 1, entry, len);
    crypto_hash_sha256(leaf, pre, len + 1);
    free(pre);
}

static int64_t count_rows(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM audit", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static int64_t append_ok(sqlite3 *db, const refex_audit_entry *e)
{
    int64_t seq = -1;
    assert_ok(refex_db_begin(db));
    assert_ok(refex_audit_append(db, e, &seq));
    assert_ok(refex_db_commit(db));
    return seq;
}

/* ---- db ---- */

static void test_db_pragmas(void **state)
{
    fixture *f = *state;
    sqlite3_stmt *st = NULL;
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);

    assert_int_equal(sqlite3_prepare_v2(f->db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);

    assert_int_equal(sqlite3_prepare_v2(f->db, "PRAGMA synchronous", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 2); /* FULL */
    sqlite3_finalize(st);

    assert_int_equal(sqlite3_prepare_v2(f->db, "PRAGMA foreign_keys", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
}

static void test_db_open_errors(void **state)
{
    fixture *f = *state;
    char path[1100], err[512] = "";
    sqlite3 *db = (sqlite3 *)&db;

    /* read-only open of a file that does not exist */
    snprintf(path, sizeof path, "%s/absent.db", f->dir);
    assert_int_not_equal(refex_db_open(path, 1, &db, err, sizeof err), REFEX_OK);
    assert_null(db);
    assert_non_null(strstr(err, path));

    /* a directory that does not exist */
    db = (sqlite3 *)&db;
    snprintf(path, sizeof path, "%s/no/such/dir/x.db", f->dir);
    assert_int_not_equal(refex_db_open(path, 0, &db, err, sizeof err), REFEX_OK);
    assert_null(db);

    /* read-only open of an existing database works and sees the table */
    assert_ok(refex_db_open(f->path, 1, &db, err, sizeof err));
    assert_int_equal(count_rows(db), 0);
    refex_db_close(&db);
    assert_null(db);
    refex_db_close(&db);
    refex_db_close(NULL);
}

/* A database's files are made private (0600) whatever the umask, and a sidecar that is a
 * symbolic link is refused, not followed: the file it points at keeps its mode. */
static void test_db_private_modes(void **state)
{
    fixture *f = *state;
    char path[1100], side[1200], other[1100], err[512] = "";
    struct stat st;
    sqlite3 *db = NULL;
    mode_t old = umask(0);
    snprintf(path, sizeof path, "%s/loose.db", f->dir);
    assert_ok(refex_db_open(path, 0, &db, err, sizeof err));
    refex_db_close(&db);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(chmod(path, 0644), 0); /* an older one: tightened at open */
    assert_ok(refex_db_open(path, 0, &db, err, sizeof err));
    refex_db_close(&db);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    snprintf(other, sizeof other, "%s/elsewhere", f->dir);
    FILE *o = fopen(other, "w");
    assert_non_null(o);
    fclose(o);
    assert_int_equal(chmod(other, 0644), 0);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    assert_int_equal(symlink(other, side), 0);
    assert_int_equal(refex_db_open(path, 0, &db, err, sizeof err), REFEX_E_STORE);
    assert_null(db);
    assert_non_null(strstr(err, "symbolic link"));
    assert_int_equal(stat(other, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    umask(old);
}

static void test_db_err_mapping(void **state)
{
    (void)state;
    assert_int_equal(refex_db_err(SQLITE_OK), REFEX_OK);
    assert_int_equal(refex_db_err(SQLITE_DONE), REFEX_OK);
    assert_int_equal(refex_db_err(SQLITE_ROW), REFEX_OK);
    assert_int_equal(refex_db_err(SQLITE_NOMEM), REFEX_E_NOMEM);
    assert_int_equal(refex_db_err(SQLITE_CONSTRAINT_TRIGGER), REFEX_E_EXISTS);
    assert_int_equal(refex_db_err(SQLITE_BUSY), REFEX_E_UNAVAILABLE);
    assert_int_equal(refex_db_err(SQLITE_IOERR_FSYNC), REFEX_E_STORE);
    assert_int_equal(refex_db_err(SQLITE_CORRUPT), REFEX_E_DB);
}

/* ---- schema and append ---- */

static void test_init_idempotent(void **state)
{
    fixture *f = *state;
    /* setup already ran init once */
    assert_ok(refex_audit_init(f->db));
    assert_ok(refex_audit_init(f->db));
    assert_int_equal(count_rows(f->db), 0);

    /* and again on a fresh connection to the same file, with rows present */
    refex_audit_entry e = sample();
    append_ok(f->db, &e);
    refex_db_close(&f->db);
    char err[256] = "";
    assert_ok(refex_db_open(f->path, 0, &f->db, err, sizeof err));
    assert_ok(refex_audit_init(f->db));
    assert_int_equal(count_rows(f->db), 1);
}

static void test_append_seq_increases(void **state)
{
    fixture *f = *state;
    refex_audit_entry e = sample();
    int64_t prev = 0;
    for (int i = 0; i < 5; i++) {
        e.time_ms += 1;
        int64_t seq = append_ok(f->db, &e);
        assert_true(seq > prev);
        prev = seq;
    }

    /* several entries in one transaction */
    int64_t a = 0, b = 0;
    assert_ok(refex_db_begin(f->db));
    assert_ok(refex_audit_append(f->db, &e, &a));
    assert_ok(refex_audit_append(f->db, &e, &b));
    assert_ok(refex_db_commit(f->db));
    assert_true(a > prev);
    assert_true(b > a);
    assert_int_equal(count_rows(f->db), 7);

    /* seq_out may be NULL */
    assert_ok(refex_db_begin(f->db));
    assert_ok(refex_audit_append(f->db, &e, NULL));
    assert_ok(refex_db_commit(f->db));
    assert_int_equal(count_rows(f->db), 8);
}

static void test_append_rolled_back(void **state)
{
    fixture *f = *state;
    refex_audit_entry e = sample();
    int64_t seq = 0;
    append_ok(f->db, &e);
    assert_ok(refex_db_begin(f->db));
    assert_ok(refex_audit_append(f->db, &e, &seq));
    refex_db_rollback(f->db);
    assert_int_equal(count_rows(f->db), 1);
}

static void test_append_persists(void **state)
{
    fixture *f = *state;
    refex_audit_entry e = sample();
    char err[256] = "";
    int64_t seq = append_ok(f->db, &e);
    refex_db_close(&f->db);
    assert_ok(refex_db_open(f->path, 1, &f->db, err, sizeof err));
    json_t *arr = NULL;
    assert_ok(refex_audit_list_json(f->db, 0, 0, &arr));
    assert_int_equal(json_array_size(arr), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "seq")), seq);
    json_decref(arr);
}

/* ---- canonical encoding ---- */

/* Reads the next 4-byte big-endian length-prefixed field at *off. */
static const uint8_t *next_field(const uint8_t *b, size_t len, size_t *off, size_t *flen)
{
    assert_true(*off + 4 <= len);
    const uint8_t *p = b + *off;
    *flen = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    assert_true(*off + 4 + *flen <= len);
    *off += 4 + *flen;
    return p + 4;
}

static void expect_str(const uint8_t *b, size_t len, size_t *off, const char *want)
{
    size_t n = 0;
    const uint8_t *p = next_field(b, len, off, &n);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(p, want, n);
}

static void expect_raw(const uint8_t *b, size_t len, size_t *off, const uint8_t *want,
                       size_t want_len)
{
    size_t n = 0;
    const uint8_t *p = next_field(b, len, off, &n);
    assert_int_equal(n, want_len);
    if (n)
        assert_memory_equal(p, want, n);
}

static void test_encode_layout(void **state)
{
    (void)state;
    refex_audit_entry e = sample();
    uint8_t *b = NULL, id[16], eh[32];
    size_t len = 0, off = sizeof REFEX_AUDIT_CONTEXT;
    const uint8_t tm[8] = {0x00, 0x00, 0x01, 0x9b, 0x76, 0xda, 0xa8, 0x7b};
    assert_int_equal(e.time_ms, INT64_C(0x0000019b76daa87b));
    assert_ok(refex_hex_decode(id, sizeof id, MSG_ID));
    assert_ok(refex_hex_decode(eh, sizeof eh, ENV_HASH));

    encode_ok(&e, &b, &len);
    /* the context string with its NUL comes first, unprefixed */
    assert_int_equal(sizeof REFEX_AUDIT_CONTEXT, 15);
    assert_memory_equal(b, "refex/audit/v1\0", 15);

    expect_raw(b, len, &off, tm, 8);
    expect_str(b, len, &off, "send");
    expect_str(b, len, &off, "success");
    expect_str(b, len, &off, "midwifery-north");
    expect_str(b, len, &off, "MW-0042");
    expect_str(b, len, &off, "social-care,health-visiting");
    expect_raw(b, len, &off, id, 16); /* message_id as 16 raw bytes */
    expect_str(b, len, &off, "REFERRAL");
    expect_str(b, len, &off, "");
    expect_raw(b, len, &off, eh, 32); /* envelope_hash as 32 raw bytes */
    expect_str(b, len, &off, "PURPOSE_SAFEGUARDING");
    expect_str(b, len, &off, "ARTICLE6_PUBLIC_TASK");
    expect_str(b, len, &off, "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST");
    expect_str(b, len, &off, "CONSENT_NOT_SOUGHT_SAFEGUARDING");
    expect_str(b, len, &off, "UB-0001,P-0001");
    assert_int_equal(off, len); /* nothing after the last field */

    /* a length prefix is big-endian: "send" is 00 00 00 04 */
    const uint8_t four[4] = {0, 0, 0, 4};
    assert_memory_equal(b + 15 + 4 + 8, four, 4);
    free(b);
}

static void test_encode_empty_ids(void **state)
{
    (void)state;
    refex_audit_entry e = sample();
    uint8_t *b = NULL, *b2 = NULL;
    size_t len = 0, len2 = 0, off = 15, n = 0;
    e.message_id = "";
    e.envelope_hash = "";
    encode_ok(&e, &b, &len);
    for (int i = 0; i < N_FIELDS; i++) {
        next_field(b, len, &off, &n);
        if (i == 6 || i == 9)
            assert_int_equal(n, 0);
    }
    assert_int_equal(off, len);

    /* NULL strings encode as empty ones */
    e.message_id = NULL;
    e.envelope_hash = NULL;
    e.case_ref = NULL;
    e.practitioner = "";
    encode_ok(&e, &b2, &len2);
    e.practitioner = NULL;
    free(b);
    encode_ok(&e, &b, &len);
    assert_int_equal(len, len2);
    assert_memory_equal(b, b2, len);
    free(b);
    free(b2);
}

static void test_encode_deterministic(void **state)
{
    (void)state;
    refex_audit_entry e = sample(), e2 = sample();
    uint8_t *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    /* same values in different buffers */
    char event[16];
    snprintf(event, sizeof event, "%s", "send");
    e2.event = event;
    encode_ok(&e, &a, &alen);
    encode_ok(&e2, &b, &blen);
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
    free(b);
    encode_ok(&e, &b, &blen);
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
    free(a);
    free(b);
}

static void test_encode_every_field_matters(void **state)
{
    (void)state;
    const refex_audit_entry base = sample();
    uint8_t *ref = NULL, *b = NULL;
    size_t ref_len = 0, len = 0;
    encode_ok(&base, &ref, &ref_len);

    /* one change per string field; the last round changes the time instead */
    static const struct {
        size_t off;
        const char *val;
    } changes[] = {
        {offsetof(refex_audit_entry, event), "receive"},
        {offsetof(refex_audit_entry, outcome), "E_BAD_SIGNATURE"},
        {offsetof(refex_audit_entry, agency), "midwifery-south"},
        {offsetof(refex_audit_entry, practitioner), "MW-0043"},
        {offsetof(refex_audit_entry, peer), "social-care"},
        {offsetof(refex_audit_entry, message_id), "00112233445566778899aabbccddeefe"},
        {offsetof(refex_audit_entry, message_type), "CASE_UPDATE"},
        {offsetof(refex_audit_entry, case_ref), "CASE-1"},
        {offsetof(refex_audit_entry, envelope_hash),
         "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbeb0"},
        {offsetof(refex_audit_entry, purpose), "PURPOSE_AUDIT"},
        {offsetof(refex_audit_entry, article6), "ARTICLE6_CONSENT"},
        {offsetof(refex_audit_entry, article9), "ARTICLE9_NOT_APPLICABLE"},
        {offsetof(refex_audit_entry, consent), "CONSENT_GIVEN"},
        {offsetof(refex_audit_entry, subjects), "UB-0002"},
    };
    assert_int_equal(sizeof changes / sizeof changes[0], N_FIELDS - 1);
    for (size_t i = 0; i < N_FIELDS; i++) {
        refex_audit_entry e = base;
        if (i < N_FIELDS - 1)
            memcpy((char *)&e + changes[i].off, &changes[i].val, sizeof changes[i].val);
        else
            e.time_ms += 1;
        encode_ok(&e, &b, &len);
        if (len == ref_len && memcmp(b, ref, len) == 0)
            fail_msg("changing field %zu does not change the encoding", i);
        free(b);
    }

    /* moving a boundary between adjacent fields changes the bytes: lengths are encoded */
    refex_audit_entry x = base, y = base;
    uint8_t *bx = NULL, *by = NULL;
    size_t lx = 0, ly = 0;
    x.event = "ab";
    x.outcome = "c";
    y.event = "a";
    y.outcome = "bc";
    encode_ok(&x, &bx, &lx);
    encode_ok(&y, &by, &ly);
    assert_int_equal(lx, ly);
    assert_memory_not_equal(bx, by, lx);
    free(bx);
    free(by);
    free(ref);
}

static void test_encode_bad_hex(void **state)
{
    fixture *f = *state;
    static const char *const bad_ids[] = {
        "xyz",
        "00112233445566778899aabbccddeef",   /* 31 chars */
        "00112233445566778899aabbccddeeff0", /* 33 chars */
        "00112233445566778899aabbccddeeffff",
        "0011223344556677 899aabbccddeeff",
        "g0112233445566778899aabbccddeeff",
        ENV_HASH, /* right for a hash, too long for an id */
    };
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        refex_audit_entry e = sample();
        uint8_t *b = NULL;
        size_t len = 0;
        int64_t seq = -1;
        e.message_id = bad_ids[i];
        assert_rc(refex_audit_encode(&e, &b, &len), REFEX_E_INVAL);
        assert_null(b);
        assert_rc(refex_audit_append(f->db, &e, &seq), REFEX_E_INVAL);
        assert_int_equal(seq, -1);
    }

    refex_audit_entry e = sample();
    uint8_t *b = NULL;
    size_t len = 0;
    e.envelope_hash = MSG_ID; /* 16 bytes where 32 are needed */
    assert_rc(refex_audit_encode(&e, &b, &len), REFEX_E_INVAL);
    e.envelope_hash = "not hex at all";
    assert_rc(refex_audit_encode(&e, &b, &len), REFEX_E_INVAL);
    assert_rc(refex_audit_append(f->db, &e, NULL), REFEX_E_INVAL);
    assert_null(b);

    /* nothing was written */
    assert_int_equal(count_rows(f->db), 0);
}

/* ---- stored rows ---- */

static void test_leaf_hash_column(void **state)
{
    fixture *f = *state;
    refex_audit_entry e = sample();
    uint8_t *entry = NULL, leaf[32];
    size_t len = 0;
    sqlite3_stmt *st = NULL;
    int64_t seq = append_ok(f->db, &e);
    encode_ok(&e, &entry, &len);
    leaf_of(entry, len, leaf);

    assert_int_equal(sqlite3_prepare_v2(f->db,
                                        "SELECT entry, leaf_hash, message_id, envelope_hash,"
                                        " event FROM audit WHERE seq = ?",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, seq);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_bytes(st, 0), (int)len);
    assert_memory_equal(sqlite3_column_blob(st, 0), entry, len);
    assert_int_equal(sqlite3_column_bytes(st, 1), 32);
    assert_memory_equal(sqlite3_column_blob(st, 1), leaf, 32);
    assert_string_equal((const char *)sqlite3_column_text(st, 2), MSG_ID);
    assert_string_equal((const char *)sqlite3_column_text(st, 3), ENV_HASH);
    assert_string_equal((const char *)sqlite3_column_text(st, 4), "send");
    sqlite3_finalize(st);

    /* the leaf hash is domain-separated: not the plain SHA-256 of the entry */
    uint8_t plain[32];
    crypto_hash_sha256(plain, entry, len);
    assert_memory_not_equal(plain, leaf, 32);
    free(entry);
}

/* Returns the row's event and leaf hash, to compare before and after a refused change. */
static void row_snapshot(sqlite3 *db, int64_t seq, char event[32], uint8_t leaf[32])
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT event, leaf_hash FROM audit WHERE seq = ?", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(st, 1, seq);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(event, 32, "%s", (const char *)sqlite3_column_text(st, 0));
    assert_int_equal(sqlite3_column_bytes(st, 1), 32);
    memcpy(leaf, sqlite3_column_blob(st, 1), 32);
    sqlite3_finalize(st);
}

static void test_append_only(void **state)
{
    fixture *f = *state;
    refex_audit_entry e = sample();
    char ev0[32], ev1[32], sql[256];
    uint8_t leaf0[32], leaf1[32];
    int64_t seq = append_ok(f->db, &e);
    row_snapshot(f->db, seq, ev0, leaf0);

    static const struct {
        const char *stmt, *op;
    } attempts[] = {
        {"UPDATE audit SET event = 'receive'", "="},
        {"UPDATE audit SET leaf_hash = zeroblob(32)", "="},
        {"UPDATE audit SET seq = seq + 100", "="},
        {"DELETE FROM audit", "="},
        {"DELETE FROM audit", ">="},
    };
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        snprintf(sql, sizeof sql, "%s WHERE seq %s %lld", attempts[i].stmt, attempts[i].op,
                 (long long)seq);
        int rc = sqlite3_exec(f->db, sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            fail_msg("append-only audit table accepted: %s", sql);
        assert_int_equal(rc & 0xff, SQLITE_CONSTRAINT);
        assert_non_null(strstr(sqlite3_errmsg(f->db), "append-only"));
        /* through the refex wrapper the refusal is an error code too */
        assert_int_not_equal(refex_db_exec(f->db, sql), REFEX_OK);
    }

    /* INSERT OR REPLACE deletes the old row without firing DELETE triggers. */
    snprintf(sql, sizeof sql,
             "INSERT OR REPLACE INTO audit SELECT seq, time_ms, 'FORGED', outcome, agency,"
             " practitioner, peer, message_id, message_type, case_ref, envelope_hash, purpose,"
             " article6, article9, consent, subjects, entry, leaf_hash FROM audit WHERE seq = %lld",
             (long long)seq);
    assert_int_not_equal(sqlite3_exec(f->db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_non_null(strstr(sqlite3_errmsg(f->db), "append-only"));

    /* also inside a transaction, which the caller then commits */
    assert_ok(refex_db_begin(f->db));
    assert_int_not_equal(refex_db_exec(f->db, "DELETE FROM audit"), REFEX_OK);
    assert_ok(refex_db_commit(f->db));

    assert_int_equal(count_rows(f->db), 1);
    row_snapshot(f->db, seq, ev1, leaf1);
    assert_string_equal(ev1, ev0);
    assert_memory_equal(leaf1, leaf0, 32);
}

/* ---- listing ---- */

static void test_list_json(void **state)
{
    fixture *f = *state;
    static const char *const events[] = {"send", "receive", "reject", "receipt", "read-of-log"};
    int64_t seqs[5];
    json_t *arr = NULL;

    for (int i = 0; i < 5; i++) {
        refex_audit_entry e = sample();
        e.time_ms += i;
        e.event = events[i];
        if (i == 2) {
            e.outcome = "E_BAD_SIGNATURE";
            e.envelope_hash = "";
        }
        seqs[i] = append_ok(f->db, &e);
    }

    assert_ok(refex_audit_list_json(f->db, 0, 0, &arr));
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 5);
    for (size_t i = 0; i < 5; i++) {
        json_t *o = json_array_get(arr, i);
        refex_audit_entry e = sample();
        uint8_t *entry = NULL, leaf[32];
        size_t len = 0;
        char leaf_hex[65];
        e.time_ms += (int64_t)i;
        e.event = events[i];
        if (i == 2) {
            e.outcome = "E_BAD_SIGNATURE";
            e.envelope_hash = "";
        }
        encode_ok(&e, &entry, &len);
        leaf_of(entry, len, leaf);
        free(entry);
        refex_hex_encode(leaf_hex, leaf, 32);

        assert_true(json_is_object(o));
        assert_int_equal(json_integer_value(json_object_get(o, "seq")), seqs[i]);
        assert_int_equal(json_integer_value(json_object_get(o, "time_ms")), e.time_ms);
        assert_string_equal(json_string_value(json_object_get(o, "event")), events[i]);
        assert_string_equal(json_string_value(json_object_get(o, "outcome")), e.outcome);
        assert_string_equal(json_string_value(json_object_get(o, "agency")), "midwifery-north");
        assert_string_equal(json_string_value(json_object_get(o, "practitioner")), "MW-0042");
        assert_string_equal(json_string_value(json_object_get(o, "peer")),
                            "social-care,health-visiting");
        assert_string_equal(json_string_value(json_object_get(o, "message_id")), MSG_ID);
        assert_string_equal(json_string_value(json_object_get(o, "message_type")), "REFERRAL");
        assert_string_equal(json_string_value(json_object_get(o, "case_ref")), "");
        assert_string_equal(json_string_value(json_object_get(o, "envelope_hash")),
                            e.envelope_hash);
        assert_string_equal(json_string_value(json_object_get(o, "purpose")),
                            "PURPOSE_SAFEGUARDING");
        assert_string_equal(json_string_value(json_object_get(o, "article6")),
                            "ARTICLE6_PUBLIC_TASK");
        assert_string_equal(json_string_value(json_object_get(o, "article9")),
                            "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST");
        assert_string_equal(json_string_value(json_object_get(o, "consent")),
                            "CONSENT_NOT_SOUGHT_SAFEGUARDING");
        assert_string_equal(json_string_value(json_object_get(o, "leaf_hash")), leaf_hex);
        /* the raw entry bytes are not part of the listing */
        assert_null(json_object_get(o, "entry"));
        assert_string_equal(json_string_value(json_object_get(o, "subjects")), "UB-0001,P-0001");
        assert_int_equal(json_object_size(o), 17);
    }
    json_decref(arr);

    /* after and limit */
    assert_ok(refex_audit_list_json(f->db, seqs[1], 2, &arr));
    assert_int_equal(json_array_size(arr), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "seq")), seqs[2]);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 1), "seq")), seqs[3]);
    json_decref(arr);

    assert_ok(refex_audit_list_json(f->db, seqs[3], 10, &arr));
    assert_int_equal(json_array_size(arr), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "seq")), seqs[4]);
    json_decref(arr);

    assert_ok(refex_audit_list_json(f->db, 0, 1, &arr));
    assert_int_equal(json_array_size(arr), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "seq")), seqs[0]);
    json_decref(arr);

    assert_ok(refex_audit_list_json(f->db, seqs[4], 0, &arr));
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);

    /* a negative limit means no limit, like 0 */
    assert_ok(refex_audit_list_json(f->db, seqs[2], -1, &arr));
    assert_int_equal(json_array_size(arr), 2);
    json_decref(arr);
}

static void test_list_json_empty(void **state)
{
    fixture *f = *state;
    json_t *arr = NULL;
    assert_ok(refex_audit_list_json(f->db, 0, 0, &arr));
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 0);
    json_decref(arr);
}

static void test_list_json_no_table(void **state)
{
    fixture *f = *state;
    char path[1100], err[256] = "";
    sqlite3 *db = NULL;
    json_t *arr = (json_t *)&arr;
    snprintf(path, sizeof path, "%s/other.db", f->dir);
    assert_ok(refex_db_open(path, 0, &db, err, sizeof err));
    assert_int_not_equal(refex_audit_list_json(db, 0, 0, &arr), REFEX_OK);
    assert_null(arr);
    refex_audit_entry e = sample();
    assert_int_not_equal(refex_audit_append(db, &e, NULL), REFEX_OK);
    refex_db_close(&db);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        T(test_db_pragmas),
        T(test_db_open_errors),
        T(test_db_private_modes),
        cmocka_unit_test(test_db_err_mapping),
        T(test_init_idempotent),
        T(test_append_seq_increases),
        T(test_append_rolled_back),
        T(test_append_persists),
        cmocka_unit_test(test_encode_layout),
        cmocka_unit_test(test_encode_empty_ids),
        cmocka_unit_test(test_encode_deterministic),
        cmocka_unit_test(test_encode_every_field_matters),
        T(test_encode_bad_hex),
        T(test_leaf_hash_column),
        T(test_append_only),
        T(test_list_json),
        T(test_list_json_empty),
        T(test_list_json_no_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
