/* Read-only queries over audit logs for the auditor's tools: the one place outside the
 * writers that knows the audit tables' columns. Not a second tree implementation: roots,
 * proofs and whole-log verification are audit_tree.c's, called on this connection. */
#include "audit_reader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_tree.h"
#include "db.h"
#include "sqldb.h"

struct refex_audit_reader {
    sqlite3 *db;
    int in_txn;
    refex_audit_progress_fn progress; /* of verify, if set */
    void *progress_ctx;
};

static const char *col(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? s : "";
}

static const char *col_or_null(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

/* 1 if schema.name is a table, 0 if not, -1 if the file is not a readable database. */
static int table_exists(sqlite3 *db, const char *schema, const char *name)
{
    char sql[128];
    sqlite3_stmt *st = NULL;
    snprintf(sql, sizeof sql, "SELECT 1 FROM %s.sqlite_master WHERE type = 'table' AND name = ?",
             schema);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    return step == SQLITE_ROW ? 1 : step == SQLITE_DONE ? 0 : -1;
}

static int check_log(sqlite3 *db, const char *schema, const char *path, char *err, size_t errlen)
{
    int t = table_exists(db, schema, "audit");
    if (t < 0)
        snprintf(err, errlen, "%s: not a readable SQLite database (%s)", path, sqlite3_errmsg(db));
    else if (t == 0)
        snprintf(err, errlen, "%s: no audit log in this database", path);
    return t == 1 ? REFEX_OK : t == 0 ? REFEX_E_NOTFOUND : REFEX_E_DB;
}

static int begin(refex_audit_reader *r, const char *path, char *err, size_t errlen)
{
    if (sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(r->db));
        return REFEX_E_DB;
    }
    r->in_txn = 1;
    return REFEX_OK;
}

int refex_audit_reader_open(const char *path, int flags, refex_audit_reader **out, char *err,
                            size_t errlen)
{
    refex_audit_reader *r = calloc(1, sizeof *r);
    int rc;
    *out = NULL;
    if (!r)
        return REFEX_E_NOMEM;
    if ((rc = refex_db_open(path, 1, &r->db, err, errlen)) != REFEX_OK ||
        (!(flags & REFEX_AUDIT_READER_ANY) &&
         (rc = check_log(r->db, "main", path, err, errlen)) != REFEX_OK) ||
        (rc = begin(r, path, err, errlen)) != REFEX_OK) {
        refex_audit_reader_close(&r);
        return rc;
    }
    *out = r;
    return REFEX_OK;
}

int refex_audit_reader_open_pair(const char *a, const char *b, refex_audit_reader **out, char *err,
                                 size_t errlen)
{
    refex_audit_reader *r = calloc(1, sizeof *r);
    sqlite3_stmt *st = NULL;
    int rc;
    *out = NULL;
    if (!r)
        return REFEX_E_NOMEM;
    if ((rc = refex_db_open(a, 1, &r->db, err, errlen)) != REFEX_OK ||
        (rc = check_log(r->db, "main", a, err, errlen)) != REFEX_OK)
        goto out;
    /* b is attached with the main connection's flags: read-only as well. The path is a
     * bound value, never SQL text. */
    if ((rc = refex_db_prepare(r->db, "ATTACH DATABASE ? AS b", &st)) != REFEX_OK) {
        snprintf(err, errlen, "%s: %s", b, sqlite3_errmsg(r->db));
        goto out;
    }
    sqlite3_bind_text(st, 1, b, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        snprintf(err, errlen, "%s: not a readable SQLite database (%s)", b, sqlite3_errmsg(r->db));
        rc = REFEX_E_DB;
        goto out;
    }
    if ((rc = check_log(r->db, "b", b, err, errlen)) != REFEX_OK)
        goto out;
    rc = begin(r, a, err, errlen);
out:
    sqlite3_finalize(st);
    if (rc != REFEX_OK)
        refex_audit_reader_close(&r);
    *out = r;
    return rc;
}

void refex_audit_reader_close(refex_audit_reader **r_p)
{
    if (!r_p || !*r_p)
        return;
    refex_audit_reader *r = *r_p;
    if (r->in_txn)
        sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
    refex_db_close(&r->db);
    free(r);
    *r_p = NULL;
}

const char *refex_audit_reader_errmsg(const refex_audit_reader *r)
{
    const char *m = r && r->db ? sqlite3_errmsg(r->db) : NULL;
    return m ? m : "no database";
}

int refex_audit_reader_has(refex_audit_reader *r, const char *table)
{
    return table_exists(r->db, "main", table);
}

/* ---- entries ------------------------------------------------------------------------ */

/* Each field's condition: fixed SQL whose every ? is bound to the same value. */
static const struct {
    const char *sql;
    int nbind, is_time;
} CONDS[] = {
    /* One element of a comma-separated list, exactly: instr, not LIKE, so that '_' and '%'
     * in a reference are not wildcards and case matters. */
    [REFEX_AUDIT_BY_SUBJECT] = {" AND instr(',' || subjects || ',', ',' || ? || ',') > 0", 1, 0},
    [REFEX_AUDIT_BY_CASE] = {" AND case_ref = ?", 1, 0},
    [REFEX_AUDIT_BY_PEER] = {" AND instr(',' || peer || ',', ',' || ? || ',') > 0", 1, 0},
    [REFEX_AUDIT_BY_MESSAGE] = {" AND message_id = ?", 1, 0},
    [REFEX_AUDIT_BY_SINCE] = {" AND time_ms >= ?", 1, 1},
    [REFEX_AUDIT_BY_UNTIL] = {" AND time_ms <= ?", 1, 1},
    [REFEX_AUDIT_BY_EVENT] = {" AND event = ?", 1, 0},
    [REFEX_AUDIT_BY_OUTCOME] = {" AND (outcome = ? OR substr(outcome, 1, length(?) + 2) = ? || "
                                "': ')",
                                3, 0},
    [REFEX_AUDIT_BY_TYPE] = {" AND message_type = ?", 1, 0},
    [REFEX_AUDIT_BY_PURPOSE] = {" AND purpose = ?", 1, 0},
    [REFEX_AUDIT_BY_ARTICLE6] = {" AND article6 = ?", 1, 0},
    [REFEX_AUDIT_BY_ARTICLE9] = {" AND article9 = ?", 1, 0},
    [REFEX_AUDIT_BY_CONSENT] = {" AND consent = ?", 1, 0},
};

static void row_read(sqlite3_stmt *st, refex_audit_row *row)
{
    const char *t[REFEX_AUDIT_N_TEXT];
    for (int i = 0; i < REFEX_AUDIT_N_TEXT; i++)
        t[i] = col(st, REFEX_AUDIT_COL_TEXT + i);
    row->seq = sqlite3_column_int64(st, REFEX_AUDIT_COL_SEQ);
    row->e = refex_audit_entry_of(sqlite3_column_int64(st, REFEX_AUDIT_COL_TIME), t);
    row->entry = sqlite3_column_blob(st, REFEX_AUDIT_COL_ENTRY);
    row->entry_len = (size_t)sqlite3_column_bytes(st, REFEX_AUDIT_COL_ENTRY);
    row->leaf_hash = sqlite3_column_bytes(st, REFEX_AUDIT_COL_LEAF) == 32
                         ? sqlite3_column_blob(st, REFEX_AUDIT_COL_LEAF)
                         : NULL;
}

static int prepare_query(sqlite3 *db, const refex_audit_cond *conds, size_t n, sqlite3_stmt **st)
{
    char sql[2048];
    size_t used = (size_t)snprintf(sql, sizeof sql, REFEX_AUDIT_SELECT " WHERE 1");
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)conds[i].field >= sizeof CONDS / sizeof CONDS[0] ||
            (!CONDS[conds[i].field].is_time && !conds[i].text))
            return REFEX_E_INVAL;
        used += (size_t)snprintf(sql + used, sizeof sql - used, "%s", CONDS[conds[i].field].sql);
        if (used >= sizeof sql - 16)
            return REFEX_E_INVAL; /* cannot happen within REFEX_AUDIT_MAX_CONDS */
    }
    snprintf(sql + used, sizeof sql - used, " ORDER BY seq");
    int rc = refex_db_prepare(db, sql, st);
    for (size_t i = 0, b = 1; rc == REFEX_OK && i < n; i++)
        for (int j = 0; j < CONDS[conds[i].field].nbind; j++, b++) {
            if (CONDS[conds[i].field].is_time)
                sqlite3_bind_int64(*st, (int)b, conds[i].ms);
            else
                sqlite3_bind_text(*st, (int)b, conds[i].text, -1, SQLITE_STATIC);
        }
    return rc;
}

int refex_audit_reader_each(refex_audit_reader *r, const refex_audit_cond *conds, size_t n,
                            refex_audit_row_fn fn, void *arg)
{
    sqlite3_stmt *st = NULL;
    int rc, step;
    if (n > REFEX_AUDIT_MAX_CONDS)
        return REFEX_E_INVAL;
    if ((rc = prepare_query(r->db, conds, n, &st)) != REFEX_OK)
        goto out;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        refex_audit_row row;
        row_read(st, &row);
        if ((rc = fn(&row, arg)) != REFEX_OK)
            goto out;
    }
    rc = refex_db_err(step);
out:
    sqlite3_finalize(st);
    return rc;
}

int refex_audit_reader_entry(refex_audit_reader *r, uint64_t seq, uint8_t **bytes, size_t *len)
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_prepare(r->db, "SELECT entry FROM audit WHERE seq = ?", &st), step;
    *bytes = NULL;
    *len = 0;
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)seq);
    if ((step = sqlite3_step(st)) != SQLITE_ROW) {
        rc = step == SQLITE_DONE ? REFEX_E_NOTFOUND : refex_db_err(step);
        goto out;
    }
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    if (!(*bytes = malloc(n ? n : 1))) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    if (n)
        memcpy(*bytes, sqlite3_column_blob(st, 0), n);
    *len = n;
out:
    sqlite3_finalize(st);
    return rc;
}

/* ---- checkpoints and cosignatures --------------------------------------------------- */

/* Steps a prepared checkpoint query; at most `max` rows (0: all). */
static int walk_checkpoints(sqlite3_stmt *st, int max, refex_audit_checkpoint_fn fn, void *arg)
{
    int rc, step = SQLITE_DONE, n = 0;
    while ((max == 0 || n < max) && (step = sqlite3_step(st)) == SQLITE_ROW) {
        refex_audit_checkpoint_row cp = {
            (uint64_t)sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 1),
            (size_t)sqlite3_column_bytes(st, 1), col_or_null(st, 2), sqlite3_column_int64(st, 3)};
        n++;
        if ((rc = fn(&cp, arg)) != REFEX_OK)
            return rc;
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        return refex_db_err(step);
    return max && n == 0 ? REFEX_E_NOTFOUND : REFEX_OK;
}

int refex_audit_reader_checkpoints(refex_audit_reader *r, refex_audit_checkpoint_fn fn, void *arg)
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_prepare(
        r->db, "SELECT size, root, note, created_ms FROM audit_checkpoints ORDER BY size", &st);
    if (rc == REFEX_OK)
        rc = walk_checkpoints(st, 0, fn, arg);
    sqlite3_finalize(st);
    return rc;
}

int refex_audit_reader_checkpoint(refex_audit_reader *r, uint64_t size, int latest,
                                  refex_audit_checkpoint_fn fn, void *arg)
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_prepare(r->db,
                              latest ? "SELECT size, root, note, created_ms FROM audit_checkpoints"
                                       " WHERE size >= ? ORDER BY size DESC LIMIT 1"
                                     : "SELECT size, root, note, created_ms FROM audit_checkpoints"
                                       " WHERE size = ?",
                              &st);
    if (rc == REFEX_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)size);
        rc = walk_checkpoints(st, 1, fn, arg);
    }
    sqlite3_finalize(st);
    return rc;
}

int refex_audit_reader_cosignatures(refex_audit_reader *r, uint64_t size,
                                    refex_audit_cosignature_fn fn, void *arg)
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_prepare(r->db,
                              "SELECT size, witness, note, received_ms FROM audit_cosignatures"
                              " WHERE ?1 = 0 OR size = ?1 ORDER BY size, witness",
                              &st),
        step;
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)size);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        refex_audit_cosignature_row cs = {(uint64_t)sqlite3_column_int64(st, 0), col(st, 1),
                                          col_or_null(st, 2), sqlite3_column_int64(st, 3)};
        if ((rc = fn(&cs, arg)) != REFEX_OK)
            goto out;
    }
    rc = refex_db_err(step);
out:
    sqlite3_finalize(st);
    return rc;
}

/* ---- the tree ----------------------------------------------------------------------- */

int refex_audit_reader_size(refex_audit_reader *r, uint64_t *size)
{
    return refex_audit_tree_size(r->db, size);
}

int refex_audit_reader_root(refex_audit_reader *r, uint64_t size, uint8_t root[32])
{
    return refex_audit_tree_root(r->db, size, root);
}

int refex_audit_reader_inclusion(refex_audit_reader *r, uint64_t index, uint64_t size,
                                 uint8_t (**proof)[32], size_t *len)
{
    return refex_audit_tree_inclusion(r->db, index, size, proof, len);
}

int refex_audit_reader_verify(refex_audit_reader *r, uint64_t *size, uint8_t root[32], char *why,
                              size_t whylen)
{
    return refex_audit_tree_verify_progress(r->db, size, root, why, whylen, r->progress,
                                            r->progress_ctx);
}

void refex_audit_reader_progress(refex_audit_reader *r, refex_audit_progress_fn fn, void *ctx)
{
    r->progress = fn;
    r->progress_ctx = ctx;
}

/* ---- reconcile ---------------------------------------------------------------------- */

int refex_audit_reader_agency(refex_audit_reader *r, int which, char *buf, size_t len, int *count)
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_prepare(r->db,
                              which ? "SELECT DISTINCT agency FROM b.audit LIMIT 2"
                                    : "SELECT DISTINCT agency FROM main.audit LIMIT 2",
                              &st),
        step, n = 0;
    if (rc != REFEX_OK)
        return rc;
    if (len)
        buf[0] = 0;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        if (n++ == 0)
            snprintf(buf, len, "%s", col(st, 0));
    sqlite3_finalize(st);
    *count = n;
    return refex_db_err(step);
}

/* ?1 = A's agency, ?2 = B's, ?3 = the SLA cut-off time. */
static const char *const SQL_RECONCILE[] = {
    [REFEX_AUDIT_SENT_NOT_RECEIVED] =
        "SELECT s.message_id, s.time_ms, s.message_type, s.case_ref,"
        " EXISTS (SELECT 1 FROM main.audit x WHERE x.message_id = s.message_id"
        "  AND x.event = 'receipt' AND x.peer = ?2)"
        " FROM main.audit s WHERE s.event = 'send' AND s.message_id != ''"
        " AND instr(',' || s.peer || ',', ',' || ?2 || ',') > 0"
        " AND NOT EXISTS (SELECT 1 FROM b.audit r WHERE r.message_id = s.message_id"
        "  AND r.event IN ('receive', 'reject') AND r.peer = ?1)"
        " AND NOT EXISTS (SELECT 1 FROM main.audit x WHERE x.message_id = s.message_id"
        "  AND ((x.event = 'non-delivery' AND x.peer = ?2) OR (x.event = 'reject'"
        "  AND instr(',' || x.peer || ',', ',' || ?2 || ',') > 0)))"
        " ORDER BY s.seq",
    [REFEX_AUDIT_RECEIVED_NOT_SENT] =
        "SELECT r.message_id, r.time_ms, r.message_type, r.case_ref, 0"
        " FROM b.audit r WHERE r.event = 'receive' AND r.peer = ?1"
        " AND NOT EXISTS (SELECT 1 FROM main.audit s WHERE s.message_id = r.message_id"
        "  AND s.event = 'send')"
        " ORDER BY r.seq",
    [REFEX_AUDIT_UNACKNOWLEDGED] =
        "SELECT s.message_id, s.time_ms, s.message_type, s.case_ref,"
        " CASE WHEN EXISTS (SELECT 1 FROM main.audit x WHERE x.message_id = s.message_id"
        "  AND x.event = 'non-delivery' AND x.peer = ?2) THEN 2"
        " WHEN EXISTS (SELECT 1 FROM main.audit x WHERE x.message_id = s.message_id"
        "  AND x.event = 'reject') THEN 3 ELSE 0 END"
        " FROM main.audit s WHERE s.event = 'send' AND s.message_id != ''"
        " AND instr(',' || s.peer || ',', ',' || ?2 || ',') > 0 AND s.time_ms < ?3"
        " AND NOT EXISTS (SELECT 1 FROM main.audit x WHERE x.message_id = s.message_id"
        "  AND x.event = 'receipt' AND x.peer = ?2)"
        " ORDER BY s.seq",
};

int refex_audit_reader_reconcile(refex_audit_reader *r, refex_audit_reconcile_kind kind,
                                 const char *a, const char *b, int64_t cutoff_ms,
                                 refex_audit_discrepancy_fn fn, void *arg)
{
    sqlite3_stmt *st = NULL;
    int rc, step;
    if ((unsigned)kind >= sizeof SQL_RECONCILE / sizeof SQL_RECONCILE[0])
        return REFEX_E_INVAL;
    if ((rc = refex_db_prepare(r->db, SQL_RECONCILE[kind], &st)) != REFEX_OK)
        return rc;
    sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= 3)
        sqlite3_bind_int64(st, 3, cutoff_ms);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        refex_audit_discrepancy d = {col(st, 0), col(st, 2), col(st, 3),
                                     sqlite3_column_int64(st, 1), sqlite3_column_int(st, 4)};
        if ((rc = fn(&d, arg)) != REFEX_OK)
            goto out;
    }
    rc = refex_db_err(step);
out:
    sqlite3_finalize(st);
    return rc;
}

/* ---- a broker's witness.db ---------------------------------------------------------- */

/* The same from the PostgreSQL database of broker nodes (the witness in their store). */
static int witnessed_pg(const char *uri, const char *agency, refex_audit_note_fn fn, void *arg,
                        char *err, size_t errlen)
{
    refex_sql *db = NULL;
    refex_sql_stmt *st = NULL;
    char oerr[256];
    int rc, step = REFEX_SQL_DONE;
    if (refex_sql_open(uri, &db, oerr, sizeof oerr) != REFEX_OK ||
        refex_sql_prepare(db, "SELECT note FROM witnessed WHERE agency = ? ORDER BY size", &st) !=
            REFEX_OK) {
        snprintf(err, errlen, "the broker's witness in PostgreSQL cannot be read");
        rc = REFEX_E_NOTFOUND;
        goto out;
    }
    refex_sql_bind_text(st, 1, agency);
    rc = REFEX_OK;
    while (rc == REFEX_OK && (step = refex_sql_step(st)) == REFEX_SQL_ROW)
        rc = fn(refex_sql_text(st, 0), arg);
    if (rc == REFEX_OK && step < 0) {
        snprintf(err, errlen, "the broker's witness in PostgreSQL cannot be read");
        rc = REFEX_E_STORE;
    }
out:
    refex_sql_finalize(&st);
    refex_sql_close(&db);
    return rc;
}

int refex_audit_reader_witnessed(const char *path, const char *agency, refex_audit_note_fn fn,
                                 void *arg, char *err, size_t errlen)
{
    if (strncmp(path, "postgresql://", 13) == 0 || strncmp(path, "postgres://", 11) == 0)
        return witnessed_pg(path, agency, fn, arg, err, errlen);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char oerr[256];
    int rc, step;
    if (refex_db_open(path, 1, &db, oerr, sizeof oerr) != REFEX_OK ||
        refex_db_prepare(db, "SELECT note FROM witnessed WHERE agency = ? ORDER BY size", &st) !=
            REFEX_OK) {
        snprintf(err, errlen, "%s: not a refex witness database", path);
        rc = REFEX_E_NOTFOUND;
        goto out;
    }
    sqlite3_bind_text(st, 1, agency, -1, SQLITE_STATIC);
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        if ((rc = fn(col_or_null(st, 0), arg)) != REFEX_OK)
            goto out;
    if ((rc = refex_db_err(step)) != REFEX_OK)
        snprintf(err, errlen, "%s: cannot read the witnessed checkpoints", path);
out:
    sqlite3_finalize(st);
    refex_db_close(&db);
    return rc;
}
