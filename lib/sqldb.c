/* The SQL interface of sqldb.h on its two engines. SQLite: thin wrappers over a prepared
 * statement. PostgreSQL: a statement keeps its parameters (text and integers sent as text,
 * so the server types them from the statement; blobs in binary) and runs at its first step,
 * asking for binary results, which are read by column type. A lost connection is made again
 * at the next transaction or statement. */
#include "sqldb.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "store.h"

#define MAX_PARAMS 8
#define BOOLOID    16
#define INT8OID    20
#define INT2OID    21
#define INT4OID    23

struct refex_sql {
    sqlite3 *lite;
    PGconn *pg;
    int in_tx; /* between our BEGIN and its COMMIT or ROLLBACK */
};

struct refex_sql_stmt {
    refex_sql *db;
    sqlite3_stmt *lite;
    /* PostgreSQL */
    char *sql;
    int n_params;
    Oid types[MAX_PARAMS]; /* 0: the server infers it; text for a number the SQL skips */
    char *val[MAX_PARAMS];
    int len[MAX_PARAMS], fmt[MAX_PARAMS];
    PGresult *res;
    int row, ran;
    int64_t changes;
};

static void on_notice(void *arg, const char *msg)
{
    (void)arg;
    refex_log_debug("sql: postgresql: %.*s", (int)strcspn(msg, "\n"), msg);
}

int refex_sql_open(const char *where, refex_sql **out, char *err, size_t errlen)
{
    refex_sql *db = calloc(1, sizeof *db);
    *out = NULL;
    if (!db)
        return REFEX_E_NOMEM;
    if (strncmp(where, "postgresql://", 13) != 0 && strncmp(where, "postgres://", 11) != 0) {
        int rc = refex_db_open(where, 0, &db->lite, err, errlen);
        if (rc != REFEX_OK) {
            free(db);
            return rc;
        }
        *out = db;
        return REFEX_OK;
    }
    const char *const keys[] = {
        "connect_timeout",  "application_name", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "options",          "dbname",          NULL};
    const char *const vals[] = {"5", "refex-broker",           "10",  "5",
                                "3", REFEX_PG_SESSION_OPTIONS, where, NULL};
    db->pg = PQconnectdbParams(keys, vals, 1);
    if (!db->pg || PQstatus(db->pg) != CONNECTION_OK) {
        const char *m = db->pg ? PQerrorMessage(db->pg) : "out of memory";
        snprintf(err, errlen, "postgresql: cannot connect: %.*s", (int)strcspn(m, "\n"), m);
        refex_sql_close(&db);
        return REFEX_E_STORE;
    }
    PQsetNoticeProcessor(db->pg, on_notice, NULL);
    *out = db;
    return REFEX_OK;
}

void refex_sql_close(refex_sql **db_p)
{
    if (!db_p || !*db_p)
        return;
    refex_db_close(&(*db_p)->lite);
    PQfinish((*db_p)->pg);
    free(*db_p);
    *db_p = NULL;
}

int refex_sql_is_pg(const refex_sql *db)
{
    return db->pg != NULL;
}

/* The connection, made again if it was lost (outside a transaction only: one that was
 * open is gone with it, and its statements fail until the caller rolls back). */
static int pg_up(refex_sql *db)
{
    if (PQstatus(db->pg) == CONNECTION_OK)
        return REFEX_OK;
    PQreset(db->pg);
    if (PQstatus(db->pg) == CONNECTION_OK) {
        refex_log_info("sql: postgresql: connected again to %s:%s", PQhost(db->pg), PQport(db->pg));
        return REFEX_OK;
    }
    refex_log_error("sql: postgresql: cannot connect: %.*s",
                    (int)strcspn(PQerrorMessage(db->pg), "\n"), PQerrorMessage(db->pg));
    return REFEX_E_STORE;
}

/* An error result as a refex code: constraint violations (SQLSTATE class 23) are
 * REFEX_E_DUPLICATE, anything else REFEX_E_STORE, logged. */
static int pg_err(refex_sql *db, const PGresult *r, const char *what)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state && strncmp(state, "23", 2) == 0)
        return REFEX_E_DUPLICATE;
    const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(db->pg);
    refex_log_error("sql: postgresql: %.60s: %.*s", what, (int)strcspn(m, "\n"), m);
    return REFEX_E_STORE;
}

int refex_sql_exec(refex_sql *db, const char *sql)
{
    if (db->lite)
        return refex_db_exec(db->lite, sql);
    if (!db->in_tx && pg_up(db) != REFEX_OK)
        return REFEX_E_STORE;
    PGresult *r = PQexec(db->pg, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    int rc = ok ? REFEX_OK : pg_err(db, r, sql);
    PQclear(r);
    return rc;
}

int refex_sql_schema(refex_sql *db, const char *lite, const char *pg)
{
    if (db->lite)
        return refex_db_exec(db->lite, lite);
    /* Nodes starting together would race in CREATE ... IF NOT EXISTS: one at a time. */
    int rc = refex_sql_begin(db);
    if (rc == REFEX_OK)
        rc = refex_sql_lock(db, "refex schema");
    if (rc == REFEX_OK)
        rc = refex_sql_exec(db, pg);
    if (rc == REFEX_OK)
        rc = refex_sql_commit(db);
    if (rc != REFEX_OK)
        refex_sql_rollback(db);
    return rc;
}

int refex_sql_begin(refex_sql *db)
{
    if (db->lite)
        return refex_db_begin(db->lite);
    int rc = refex_sql_exec(db, "BEGIN");
    db->in_tx = rc == REFEX_OK;
    return rc;
}

int refex_sql_commit(refex_sql *db)
{
    if (db->lite)
        return refex_db_commit(db->lite);
    PGresult *r = PQexec(db->pg, "COMMIT");
    /* an aborted transaction's COMMIT answers ROLLBACK, and is no commit */
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0;
    int rc = ok ? REFEX_OK : pg_err(db, r, "COMMIT");
    PQclear(r);
    db->in_tx = 0;
    return rc;
}

void refex_sql_rollback(refex_sql *db)
{
    if (db->lite) {
        refex_db_rollback(db->lite);
        return;
    }
    db->in_tx = 0;
    if (PQstatus(db->pg) == CONNECTION_OK && PQtransactionStatus(db->pg) != PQTRANS_IDLE)
        if (refex_sql_exec(db, "ROLLBACK") != REFEX_OK)
            refex_log_debug("sql: postgresql: rollback failed (the transaction is gone)");
}

int refex_sql_lock(refex_sql *db, const char *key)
{
    if (db->lite)
        return REFEX_OK;
    refex_sql_stmt *st = NULL;
    int rc = refex_sql_prepare(db, "SELECT pg_advisory_xact_lock(hashtext(?))", &st);
    if (rc == REFEX_OK) {
        refex_sql_bind_text(st, 1, key);
        rc = refex_sql_step(st) == REFEX_SQL_ROW ? REFEX_OK : REFEX_E_STORE;
    }
    refex_sql_finalize(&st);
    return rc;
}

/* ? and ?N become $N: the statements are SQLite's, and none has a ? in a literal. A number
 * the statement skips (?1, ?2, ?4) gets the type text, as the server cannot infer one. */
static char *pg_sql(const char *sql, int *n_params, Oid types[MAX_PARAMS])
{
    int used[MAX_PARAMS + 1] = {0};
    size_t cap = strlen(sql) * 3 + 1, o = 0;
    char *out = malloc(cap);
    int next = 0, max = 0;
    if (!out)
        return NULL;
    for (const char *p = sql; *p; p++) {
        if (*p != '?') {
            out[o++] = *p;
            continue;
        }
        int n = 0;
        while (p[1] >= '0' && p[1] <= '9')
            n = n * 10 + (*++p - '0');
        if (!n)
            n = ++next;
        if (n > max)
            max = n;
        if (n <= MAX_PARAMS)
            used[n] = 1;
        o += (size_t)snprintf(out + o, cap - o, "$%d", n);
    }
    out[o] = 0;
    *n_params = max;
    for (int i = 1; i <= MAX_PARAMS; i++)
        types[i - 1] = used[i] ? 0 : 25; /* TEXTOID */
    return out;
}

int refex_sql_prepare(refex_sql *db, const char *sql, refex_sql_stmt **out)
{
    refex_sql_stmt *st = calloc(1, sizeof *st);
    *out = NULL;
    if (!st)
        return REFEX_E_NOMEM;
    st->db = db;
    if (db->lite) {
        int rc = refex_db_prepare(db->lite, sql, &st->lite);
        if (rc != REFEX_OK) {
            free(st);
            return rc;
        }
    } else if (!(st->sql = pg_sql(sql, &st->n_params, st->types)) || st->n_params > MAX_PARAMS) {
        refex_sql_finalize(&st);
        return REFEX_E_NOMEM;
    }
    *out = st;
    return REFEX_OK;
}

void refex_sql_finalize(refex_sql_stmt **st_p)
{
    if (!st_p || !*st_p)
        return;
    refex_sql_stmt *st = *st_p;
    sqlite3_finalize(st->lite);
    for (int i = 0; i < MAX_PARAMS; i++)
        free(st->val[i]);
    PQclear(st->res);
    free(st->sql);
    free(st);
    *st_p = NULL;
}

static void pg_param(refex_sql_stmt *st, int i, const void *p, size_t len, int binary)
{
    if (i < 1 || i > MAX_PARAMS)
        return;
    free(st->val[i - 1]);
    st->val[i - 1] = malloc(len + 1);
    if (!st->val[i - 1])
        return; /* sent as NULL: the statement fails or finds nothing */
    if (len)
        memcpy(st->val[i - 1], p, len);
    st->val[i - 1][len] = 0;
    st->len[i - 1] = (int)len;
    st->fmt[i - 1] = binary;
}

void refex_sql_bind_text(refex_sql_stmt *st, int i, const char *s)
{
    if (st->lite)
        sqlite3_bind_text(st->lite, i, s, -1, SQLITE_TRANSIENT);
    else
        pg_param(st, i, s, strlen(s), 0);
}

void refex_sql_bind_blob(refex_sql_stmt *st, int i, const void *p, size_t len)
{
    if (st->lite)
        sqlite3_bind_blob(st->lite, i, p, (int)len, SQLITE_TRANSIENT);
    else
        pg_param(st, i, p, len, 1);
}

void refex_sql_bind_int(refex_sql_stmt *st, int i, int64_t v)
{
    char buf[24];
    if (st->lite) {
        sqlite3_bind_int64(st->lite, i, v);
        return;
    }
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    pg_param(st, i, buf, strlen(buf), 0);
}

static int pg_step(refex_sql_stmt *st)
{
    refex_sql *db = st->db;
    if (!st->ran) {
        st->ran = 1;
        st->row = -1;
        if (!db->in_tx && pg_up(db) != REFEX_OK)
            return REFEX_E_STORE;
        st->res = PQexecParams(db->pg, st->sql, st->n_params, st->types,
                               (const char *const *)st->val, st->len, st->fmt, 1);
        ExecStatusType s = PQresultStatus(st->res);
        if (s == PGRES_COMMAND_OK) {
            st->changes = strtoll(PQcmdTuples(st->res), NULL, 10);
            return REFEX_SQL_DONE;
        }
        if (s != PGRES_TUPLES_OK)
            return pg_err(db, st->res, st->sql);
    }
    if (++st->row < PQntuples(st->res))
        return REFEX_SQL_ROW;
    return REFEX_SQL_DONE;
}

int refex_sql_step(refex_sql_stmt *st)
{
    if (!st->lite)
        return pg_step(st);
    int rc = sqlite3_step(st->lite);
    if (rc == SQLITE_ROW)
        return REFEX_SQL_ROW;
    if (rc == SQLITE_DONE) {
        st->changes = sqlite3_changes(sqlite3_db_handle(st->lite));
        return REFEX_SQL_DONE;
    }
    return (rc & 0xff) == SQLITE_CONSTRAINT ? REFEX_E_DUPLICATE : refex_db_err(rc);
}

int64_t refex_sql_int(refex_sql_stmt *st, int col)
{
    if (st->lite)
        return sqlite3_column_int64(st->lite, col);
    const uint8_t *b = (const uint8_t *)PQgetvalue(st->res, st->row, col);
    int len = PQgetlength(st->res, st->row, col);
    Oid t = PQftype(st->res, col);
    uint64_t u = 0;
    if (PQgetisnull(st->res, st->row, col))
        return 0;
    if (t == BOOLOID)
        return len == 1 && b[0];
    if ((t == INT8OID && len == 8) || (t == INT4OID && len == 4) || (t == INT2OID && len == 2)) {
        for (int i = 0; i < len; i++)
            u = u << 8 | b[i];
        if (len == 4)
            return (int32_t)(uint32_t)u;
        if (len == 2)
            return (int16_t)(uint16_t)u;
        return (int64_t)u;
    }
    return 0;
}

const char *refex_sql_text(refex_sql_stmt *st, int col)
{
    if (st->lite)
        return (const char *)sqlite3_column_text(st->lite, col);
    return PQgetisnull(st->res, st->row, col) ? NULL : PQgetvalue(st->res, st->row, col);
}

const void *refex_sql_blob(refex_sql_stmt *st, int col)
{
    if (st->lite)
        return sqlite3_column_blob(st->lite, col);
    return PQgetvalue(st->res, st->row, col);
}

size_t refex_sql_bytes(refex_sql_stmt *st, int col)
{
    if (st->lite)
        return (size_t)sqlite3_column_bytes(st->lite, col);
    return (size_t)PQgetlength(st->res, st->row, col);
}

int64_t refex_sql_changes(refex_sql_stmt *st)
{
    return st->changes;
}
