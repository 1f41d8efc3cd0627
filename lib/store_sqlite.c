/* The SQLite backend of the broker's queue. One connection, used by the broker's single
 * thread; prepared statements are kept for the hot path. Envelopes are dropped as soon as
 * every recipient has acknowledged; the (sender, id) row stays until the message would have
 * expired, so late retries are still recognised as duplicates. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "store.h"

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS messages ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " sender TEXT NOT NULL, message_id BLOB NOT NULL, envelope BLOB,"
    " expires_ms INTEGER NOT NULL, stored_ms INTEGER NOT NULL, remaining INTEGER NOT NULL,"
    " UNIQUE (sender, message_id));"
    "CREATE INDEX IF NOT EXISTS messages_expiry ON messages(expires_ms);"
    "CREATE TABLE IF NOT EXISTS deliveries ("
    " recipient TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (recipient, seq))"
    " WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS deliveries_seq ON deliveries(seq);"
    "CREATE TABLE IF NOT EXISTS receipts ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " sender TEXT NOT NULL, message_id BLOB NOT NULL, recipient TEXT NOT NULL,"
    " receipt BLOB NOT NULL, UNIQUE (sender, message_id, recipient));"
    "CREATE INDEX IF NOT EXISTS receipts_sender ON receipts(sender, seq);";

enum {
    S_PUT,
    S_DELIVERY,
    S_PENDING,
    S_FIND,
    S_UNDELIVER,
    S_DONE,
    S_RECEIPT_PUT,
    S_RECEIPTS,
    S_RECEIPT_DEL,
    S_EXPIRED,
    S_PURGE,
    S_COUNT,
    S_N
};

static const char *SQL[S_N] = {
    [S_PUT] = "INSERT INTO messages(sender, message_id, envelope, expires_ms, stored_ms,"
              " remaining) VALUES (?,?,?,?,strftime('%s','now')*1000,?)",
    [S_DELIVERY] = "INSERT INTO deliveries(recipient, seq) VALUES (?,?)",
    [S_PENDING] = "SELECT m.seq, m.message_id, m.sender, m.envelope FROM deliveries d"
                  " JOIN messages m ON m.seq = d.seq WHERE d.recipient = ? AND d.seq > ?"
                  " ORDER BY d.seq LIMIT ?",
    [S_FIND] = "SELECT seq FROM messages WHERE sender = ? AND message_id = ?",
    [S_UNDELIVER] = "DELETE FROM deliveries WHERE recipient = ? AND seq = ?",
    [S_DONE] = "UPDATE messages SET remaining = remaining - 1,"
               " envelope = CASE WHEN remaining = 1 THEN NULL ELSE envelope END WHERE seq = ?",
    [S_RECEIPT_PUT] = "INSERT OR IGNORE INTO receipts(sender, message_id, recipient, receipt)"
                      " VALUES (?,?,?,?)",
    [S_RECEIPTS] = "SELECT seq, message_id, recipient, receipt FROM receipts WHERE sender = ?"
                   " AND seq > ? ORDER BY seq LIMIT ?",
    [S_RECEIPT_DEL] = "DELETE FROM receipts WHERE sender = ? AND message_id = ? AND"
                      " recipient = ?",
    [S_EXPIRED] = "SELECT m.message_id, m.sender, d.recipient FROM messages m"
                  " JOIN deliveries d ON d.seq = m.seq WHERE m.expires_ms <= ? LIMIT ?",
    [S_PURGE] = "DELETE FROM messages WHERE remaining = 0 AND expires_ms < ?",
    [S_COUNT] = "SELECT count(*) FROM deliveries",
};

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *st[S_N];
    int in_tx;
} sq_store;

static sqlite3_stmt *stmt(sq_store *s, int which)
{
    sqlite3_stmt *st = s->st[which];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Errors that mean the data could not be written map to REFEX_E_STORE. */
static int write_err(sq_store *s, int rc)
{
    int code = rc & 0xff;
    if (code == SQLITE_OK || code == SQLITE_DONE || code == SQLITE_ROW)
        return REFEX_OK;
    if (code == SQLITE_CONSTRAINT)
        return REFEX_E_DUPLICATE;
    refex_log_error("store: write failed: %s", sqlite3_errmsg(s->db));
    return REFEX_E_STORE;
}

static int sq_begin(void *impl)
{
    sq_store *s = impl;
    if (s->in_tx)
        return REFEX_OK;
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return write_err(s, rc);
    s->in_tx = 1;
    return REFEX_OK;
}

static int sq_commit(void *impl)
{
    sq_store *s = impl;
    if (!s->in_tx)
        return REFEX_OK;
    int rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    s->in_tx = 0;
    if (rc != SQLITE_OK) {
        int e = write_err(s, rc);
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return e == REFEX_OK ? REFEX_E_STORE : e;
    }
    return REFEX_OK;
}

static void sq_rollback(void *impl)
{
    sq_store *s = impl;
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->in_tx = 0;
}

/* Each write op runs inside a savepoint, so a failure undoes just that op and the rest of
 * the batch can still commit. */
static int unit(sq_store *s, int begin, int ok)
{
    if (begin)
        return write_err(s, sqlite3_exec(s->db, "SAVEPOINT op", NULL, NULL, NULL));
    if (ok)
        return write_err(s, sqlite3_exec(s->db, "RELEASE op", NULL, NULL, NULL));
    if (!sqlite3_get_autocommit(s->db)) {
        sqlite3_exec(s->db, "ROLLBACK TO op", NULL, NULL, NULL);
        sqlite3_exec(s->db, "RELEASE op", NULL, NULL, NULL);
    }
    return REFEX_OK;
}

static int put_one(sq_store *s, const uint8_t id[16], const char *sender, const char *const *rcpt,
                   size_t n_rcpt, const uint8_t *env, size_t env_len, int64_t expires_at_ms);

static int sq_put(void *impl, const uint8_t id[16], const char *sender, const char *const *rcpt,
                  size_t n_rcpt, const uint8_t *env, size_t env_len, int64_t expires_at_ms)
{
    sq_store *s = impl;
    int rc = unit(s, 1, 0);
    if (rc != REFEX_OK)
        return REFEX_E_STORE;
    rc = put_one(s, id, sender, rcpt, n_rcpt, env, env_len, expires_at_ms);
    if (rc == REFEX_OK && unit(s, 0, 1) == REFEX_OK)
        return REFEX_OK;
    unit(s, 0, 0);
    return rc == REFEX_OK ? REFEX_E_STORE : rc;
}

static int put_one(sq_store *s, const uint8_t id[16], const char *sender, const char *const *rcpt,
                   size_t n_rcpt, const uint8_t *env, size_t env_len, int64_t expires_at_ms)
{
    sqlite3_stmt *st = stmt(s, S_PUT);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, id, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, env, (int)env_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, expires_at_ms);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)n_rcpt);
    int rc = write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    if (rc != REFEX_OK)
        return rc;
    int64_t seq = sqlite3_last_insert_rowid(s->db);
    for (size_t i = 0; i < n_rcpt; i++) {
        st = stmt(s, S_DELIVERY);
        sqlite3_bind_text(st, 1, rcpt[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, seq);
        rc = write_err(s, sqlite3_step(st));
        sqlite3_reset(st);
        if (rc != REFEX_OK)
            return rc == REFEX_E_DUPLICATE ? REFEX_E_STORE : rc;
    }
    return REFEX_OK;
}

static int sq_pending(void *impl, const char *recipient, int64_t after, int limit,
                      refex_store_msg_fn fn, void *ctx)
{
    sq_store *s = impl;
    sqlite3_stmt *st = stmt(s, S_PENDING);
    sqlite3_bind_text(st, 1, recipient, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int(st, 3, limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 1) != 16)
            continue;
        if (fn(ctx, sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 1),
               (const char *)sqlite3_column_text(st, 2), sqlite3_column_blob(st, 3),
               (size_t)sqlite3_column_bytes(st, 3)) != 0)
            break;
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? REFEX_OK : refex_db_err(rc);
}

static int ack_one(sq_store *s, const char *recipient, const char *sender, const uint8_t id[16],
                   const uint8_t *receipt, size_t receipt_len);

static int sq_ack(void *impl, const char *recipient, const char *sender, const uint8_t id[16],
                  const uint8_t *receipt, size_t receipt_len)
{
    sq_store *s = impl;
    if (unit(s, 1, 0) != REFEX_OK)
        return REFEX_E_STORE;
    int rc = ack_one(s, recipient, sender, id, receipt, receipt_len);
    if (rc == REFEX_OK && unit(s, 0, 1) == REFEX_OK)
        return REFEX_OK;
    unit(s, 0, 0);
    return rc == REFEX_OK ? REFEX_E_STORE : rc;
}

static int ack_one(sq_store *s, const char *recipient, const char *sender, const uint8_t id[16],
                   const uint8_t *receipt, size_t receipt_len)
{
    sqlite3_stmt *st = stmt(s, S_FIND);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, id, 16, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        return REFEX_E_NOTFOUND;
    }
    int64_t seq = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    st = stmt(s, S_UNDELIVER);
    sqlite3_bind_text(st, 1, recipient, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, seq);
    int rc = write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    if (rc != REFEX_OK)
        return rc;
    if (sqlite3_changes(s->db) == 0)
        return REFEX_E_NOTFOUND;
    st = stmt(s, S_DONE);
    sqlite3_bind_int64(st, 1, seq);
    rc = write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    if (rc != REFEX_OK)
        return rc;
    st = stmt(s, S_RECEIPT_PUT);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, id, 16, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, recipient, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, receipt, (int)receipt_len, SQLITE_STATIC);
    rc = write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    return rc;
}

static int sq_receipts(void *impl, const char *sender, int64_t after, int limit,
                       refex_store_receipt_fn fn, void *ctx)
{
    sq_store *s = impl;
    sqlite3_stmt *st = stmt(s, S_RECEIPTS);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int(st, 3, limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 1) != 16)
            continue;
        if (fn(ctx, sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 1),
               (const char *)sqlite3_column_text(st, 2), sqlite3_column_blob(st, 3),
               (size_t)sqlite3_column_bytes(st, 3)) != 0)
            break;
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? REFEX_OK : refex_db_err(rc);
}

static int sq_receipt_ack(void *impl, const char *sender, const uint8_t id[16],
                          const char *recipient)
{
    sq_store *s = impl;
    sqlite3_stmt *st = stmt(s, S_RECEIPT_DEL);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, id, 16, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, recipient, -1, SQLITE_STATIC);
    int rc = write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    if (rc == REFEX_OK && sqlite3_changes(s->db) == 0)
        return REFEX_E_NOTFOUND;
    return rc;
}

static int sq_expired(void *impl, int64_t now_ms, int limit, refex_store_expired_fn fn, void *ctx)
{
    sq_store *s = impl;
    sqlite3_stmt *st = stmt(s, S_EXPIRED);
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int(st, 2, limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != 16)
            continue;
        if (fn(ctx, sqlite3_column_blob(st, 0), (const char *)sqlite3_column_text(st, 1),
               (const char *)sqlite3_column_text(st, 2)) != 0)
            break;
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? REFEX_OK : refex_db_err(rc);
}

static int sq_purge(void *impl, int64_t now_ms)
{
    sq_store *s = impl;
    sqlite3_stmt *st = stmt(s, S_PURGE);
    sqlite3_bind_int64(st, 1, now_ms);
    int rc = write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    return rc;
}

static int64_t sq_count(void *impl)
{
    sq_store *s = impl;
    sqlite3_stmt *st = stmt(s, S_COUNT);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    return n;
}

static int sq_batch_alive(void *impl)
{
    sq_store *s = impl;
    return s->in_tx && !sqlite3_get_autocommit(s->db);
}

static void sq_destroy(void *impl)
{
    sq_store *s = impl;
    if (!s)
        return;
    for (int i = 0; i < S_N; i++)
        sqlite3_finalize(s->st[i]);
    if (s->in_tx)
        sq_rollback(s);
    refex_db_close(&s->db);
    free(s);
}

static const refex_store_ops SQ_OPS = {
    .name = "sqlite",
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .put = sq_put,
    .pending = sq_pending,
    .ack = sq_ack,
    .receipts = sq_receipts,
    .receipt_ack = sq_receipt_ack,
    .expired = sq_expired,
    .purge = sq_purge,
    .count = sq_count,
    .batch_alive = sq_batch_alive,
    .destroy = sq_destroy,
};

int refex_store_sqlite_open(const char *path, uint64_t max_bytes, refex_store **out, char *err,
                            size_t errlen)
{
    int rc;
    refex_store *self = calloc(1, sizeof *self);
    sq_store *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!self || !s) {
        free(self);
        free(s);
        return REFEX_E_NOMEM;
    }
    self->ops = &SQ_OPS;
    self->impl = s;
    if ((rc = refex_db_open(path, 0, &s->db, err, errlen)) != REFEX_OK)
        goto out;
    if ((rc = refex_db_exec(s->db, SCHEMA)) != REFEX_OK) {
        snprintf(err, errlen, "%s: cannot create the queue tables", path);
        goto out;
    }
    if (max_bytes > 0) {
        char sql[128];
        sqlite3_stmt *ps = NULL;
        int64_t page = 4096;
        if (refex_db_prepare(s->db, "PRAGMA page_size", &ps) == REFEX_OK &&
            sqlite3_step(ps) == SQLITE_ROW)
            page = sqlite3_column_int64(ps, 0);
        sqlite3_finalize(ps);
        uint64_t pages = max_bytes / (uint64_t)(page > 0 ? page : 4096);
        snprintf(sql, sizeof sql, "PRAGMA max_page_count = %llu",
                 (unsigned long long)(pages ? pages : 1));
        if ((rc = refex_db_exec(s->db, sql)) != REFEX_OK) {
            snprintf(err, errlen, "%s: cannot set the size limit", path);
            goto out;
        }
    }
    for (int i = 0; i < S_N; i++)
        if ((rc = refex_db_prepare(s->db, SQL[i], &s->st[i])) != REFEX_OK) {
            snprintf(err, errlen, "%s: cannot prepare queue statements", path);
            goto out;
        }
    *out = self;
    self = NULL;
out:
    refex_store_destroy(&self);
    return rc;
}
