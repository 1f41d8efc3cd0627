/* The SQLite backend of the broker's queue. One connection, used by the broker's single
 * thread; prepared statements are kept for the hot path. Envelopes are dropped as soon as
 * every recipient has acknowledged; the (sender, id) row stays until the message would have
 * expired, so late retries are still recognised as duplicates. New stores are created with
 * incremental auto-vacuum, so the pages of dropped envelopes go back to the file system at
 * the next commit. The size limit counts live envelope bytes (checked before the insert);
 * max_page_count is only a backstop. A write failure that ends SQLite's transaction (a full
 * disk) is survived: the batch's acknowledgements are redone in a new transaction and only
 * its messages are refused (the batch lives in store_sqlite_batch.c). Not for routing
 * decisions (broker/queue.c). */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "db.h"
#include "log.h"
#include "store.h"
#include "store_sqlite.h"

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

static const char *SQL[S_N] = {
    [S_PUT] = "INSERT INTO messages(sender, message_id, envelope, expires_ms, stored_ms,"
              " remaining) VALUES (?,?,?,?,strftime('%s','now')*1000,?)",
    [S_DELIVERY] = "INSERT INTO deliveries(recipient, seq) VALUES (?,?)",
    [S_PENDING] = "SELECT m.seq, m.message_id, m.sender, m.envelope FROM deliveries d"
                  " JOIN messages m ON m.seq = d.seq WHERE d.recipient = ? AND d.seq > ?"
                  " ORDER BY d.seq LIMIT ?",
    [S_FIND] = "SELECT seq, remaining, coalesce(length(envelope), 0), expires_ms, stored_ms"
               " FROM messages WHERE sender = ? AND message_id = ?",
    [S_UNDELIVER] = "DELETE FROM deliveries WHERE recipient = ? AND seq = ?",
    [S_DONE] = "UPDATE messages SET remaining = remaining - 1 WHERE seq = ?",
    /* The last delivery: the row is deleted and written again without its body. A DELETE
     * lets SQLite free the body's pages (an UPDATE that shrinks a row never gives its page
     * back); the small row stays for duplicate detection. */
    [S_DROP] = "DELETE FROM messages WHERE seq = ?",
    [S_KEEP] = "INSERT INTO messages(seq, sender, message_id, envelope, expires_ms, stored_ms,"
               " remaining) VALUES (?,?,?,NULL,?,?,0)",
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
    [S_LIVE] = "SELECT coalesce(sum(length(envelope)), 0) FROM messages",
    [S_FREELIST] = "PRAGMA freelist_count",
    [S_SENDER_PUT] = "INSERT INTO senders(sender, high) VALUES (?1, ?2) ON CONFLICT (sender)"
                     " DO UPDATE SET high = max(high, excluded.high)",
    [S_SENDER_HIGH] = "SELECT high FROM senders WHERE sender = ?",
    [S_STATS] = "SELECT d.recipient, count(*), min(m.stored_ms) FROM deliveries d"
                " JOIN messages m ON m.seq = d.seq GROUP BY d.recipient",
};

static const char *const REFUSE_FULL =
    "the broker's store is full (store_max reached); retry later";
static const char *const REFUSE_WRITE = "the broker could not store the message; retry later";

sqlite3_stmt *refex_sqstore_stmt(sq_store *s, int which)
{
    sqlite3_stmt *st = s->st[which];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Errors that mean the data could not be written map to REFEX_E_STORE. */
int refex_sqstore_write_err(sq_store *s, int rc)
{
    int code = rc & 0xff;
    if (code == SQLITE_OK || code == SQLITE_DONE || code == SQLITE_ROW)
        return REFEX_OK;
    if (code == SQLITE_CONSTRAINT)
        return REFEX_E_DUPLICATE;
    if (code == SQLITE_FULL)
        s->refusal = REFUSE_FULL;
    refex_log_error("store: write failed: %s", sqlite3_errmsg(s->db));
    return REFEX_E_STORE;
}

static int put_one(sq_store *s, const uint8_t id[16], const char *sender, const char *const *rcpt,
                   size_t n_rcpt, const uint8_t *env, size_t env_len, int64_t expires_at_ms);

/* Is (sender, id) stored? 1 yes (put_seq says where), 0 no. */
static int known(sq_store *s, const uint8_t id[16], const char *sender)
{
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_FIND);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, id, 16, SQLITE_STATIC);
    int found = sqlite3_step(st) == SQLITE_ROW;
    if (found)
        s->put_seq = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return found;
}

/* The size check, before anything is written: a message that does not fit is refused
 * alone, and SQLite never reaches its backstop in the normal case. */
static int fits(sq_store *s, const uint8_t id[16], const char *sender, size_t env_len)
{
    if (s->puts_lost) {
        s->refusal = REFUSE_WRITE;
        return REFEX_E_STORE;
    }
    if (!s->max_bytes || (uint64_t)s->live + env_len <= s->max_bytes)
        return REFEX_OK;
    if (known(s, id, sender))
        return REFEX_E_DUPLICATE; /* a retry of a stored message is still recognised */
    s->refusal = REFUSE_FULL;
    refex_log_warn("store: full: %lld of %llu bytes queued; refusing a message of %zu bytes",
                   (long long)s->live, (unsigned long long)s->max_bytes, env_len);
    return REFEX_E_STORE;
}

static int sq_put(void *impl, const uint8_t id[16], const char *sender, const char *const *rcpt,
                  size_t n_rcpt, const uint8_t *env, size_t env_len, int64_t expires_at_ms)
{
    sq_store *s = impl;
    s->put_seq = 0;
    int rc = fits(s, id, sender, env_len);
    if (rc != REFEX_OK)
        return rc;
    s->refusal = REFUSE_WRITE;
    if (refex_sqstore_unit(s, 1, 0) != REFEX_OK) {
        refex_sqstore_after_failure(s);
        return REFEX_E_STORE;
    }
    rc = put_one(s, id, sender, rcpt, n_rcpt, env, env_len, expires_at_ms);
    if (rc == REFEX_OK && refex_sqstore_unit(s, 0, 1) == REFEX_OK) {
        s->live += (int64_t)env_len;
        s->n_puts++;
        return REFEX_OK;
    }
    refex_sqstore_unit(s, 0, 0);
    if (rc == REFEX_E_DUPLICATE)
        known(s, id, sender);
    else
        refex_sqstore_after_failure(s);
    return rc == REFEX_OK ? REFEX_E_STORE : rc;
}

static int put_one(sq_store *s, const uint8_t id[16], const char *sender, const char *const *rcpt,
                   size_t n_rcpt, const uint8_t *env, size_t env_len, int64_t expires_at_ms)
{
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_PUT);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, id, 16, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, env, (int)env_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, expires_at_ms);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)n_rcpt);
    int rc = refex_sqstore_write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    if (rc != REFEX_OK)
        return rc;
    int64_t seq = sqlite3_last_insert_rowid(s->db);
    s->put_seq = (uint64_t)seq;
    if ((rc = refex_sqstore_sender_put(s, sender, seq)) != REFEX_OK)
        return rc;
    for (size_t i = 0; i < n_rcpt; i++) {
        st = refex_sqstore_stmt(s, S_DELIVERY);
        sqlite3_bind_text(st, 1, rcpt[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, seq);
        rc = refex_sqstore_write_err(s, sqlite3_step(st));
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
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_PENDING);
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

/* One delivery of message seq ended; the last one drops its body. */
static int delivery_done(sq_store *s, int64_t seq, int64_t remaining, const char *sender,
                         const uint8_t id[16], int64_t expires, int64_t stored)
{
    sqlite3_stmt *st = refex_sqstore_stmt(s, remaining > 1 ? S_DONE : S_DROP);
    sqlite3_bind_int64(st, 1, seq);
    int rc = refex_sqstore_write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    if (rc != REFEX_OK || remaining > 1)
        return rc;
    st = refex_sqstore_stmt(s, S_KEEP);
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_text(st, 2, sender, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, id, 16, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, expires);
    sqlite3_bind_int64(st, 5, stored);
    rc = refex_sqstore_write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    return rc;
}

/* The ack is in the batch; if it cannot be kept for a redo, a write failure later in the
 * same batch would lose it (the delivery then stays pending and is delivered again). */
static void keep_for_redo(sq_store *s, const char *recipient, const char *sender, const char *who,
                          const uint8_t id[16], const uint8_t *receipt, size_t receipt_len)
{
    if (refex_sqstore_redo_keep(s, recipient, sender, who, id, receipt, receipt_len) != REFEX_OK)
        refex_log_warn("store: out of memory keeping an acknowledgement for a redo");
}

static int sq_ack(void *impl, const char *recipient, const char *sender, const uint8_t id[16],
                  const uint8_t *receipt, size_t receipt_len)
{
    sq_store *s = impl;
    int rc = REFEX_E_STORE;
    /* a second try if the first ended the transaction and the batch was revived */
    for (int attempt = 0; attempt < 2 && rc == REFEX_E_STORE; attempt++) {
        int64_t live = s->live;
        if (refex_sqstore_unit(s, 1, 0) != REFEX_OK) {
            if (refex_sqstore_after_failure(s) != REFEX_OK)
                return REFEX_E_STORE;
            continue;
        }
        rc = refex_sqstore_ack_one(s, recipient, sender, id, receipt, receipt_len);
        if (rc == REFEX_OK && refex_sqstore_unit(s, 0, 1) == REFEX_OK) {
            keep_for_redo(s, recipient, sender, NULL, id, receipt, receipt_len);
            return REFEX_OK;
        }
        refex_sqstore_unit(s, 0, 0);
        s->live = live;
        if (rc == REFEX_OK)
            rc = REFEX_E_STORE;
        if (rc == REFEX_E_STORE && refex_sqstore_after_failure(s) != REFEX_OK)
            return REFEX_E_STORE;
    }
    return rc;
}

int refex_sqstore_ack_one(sq_store *s, const char *recipient, const char *sender,
                          const uint8_t id[16], const uint8_t *receipt, size_t receipt_len)
{
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_FIND);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, id, 16, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        return REFEX_E_NOTFOUND;
    }
    int64_t seq = sqlite3_column_int64(st, 0);
    int64_t remaining = sqlite3_column_int64(st, 1), env_len = sqlite3_column_int64(st, 2);
    int64_t expires = sqlite3_column_int64(st, 3), stored = sqlite3_column_int64(st, 4);
    sqlite3_reset(st);
    st = refex_sqstore_stmt(s, S_UNDELIVER);
    sqlite3_bind_text(st, 1, recipient, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, seq);
    int rc = refex_sqstore_write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    if (rc != REFEX_OK)
        return rc;
    if (sqlite3_changes(s->db) == 0)
        return REFEX_E_NOTFOUND;
    if ((rc = delivery_done(s, seq, remaining, sender, id, expires, stored)) != REFEX_OK)
        return rc;
    st = refex_sqstore_stmt(s, S_RECEIPT_PUT);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, id, 16, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, recipient, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, receipt, (int)receipt_len, SQLITE_STATIC);
    rc = refex_sqstore_write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    if (rc == REFEX_OK && remaining == 1)
        s->live -= env_len; /* the last delivery: the envelope is gone */
    return rc;
}

static int sq_receipts(void *impl, const char *sender, int64_t after, int limit,
                       refex_store_receipt_fn fn, void *ctx)
{
    sq_store *s = impl;
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_RECEIPTS);
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

int refex_sqstore_receipt_del(sq_store *s, const char *sender, const uint8_t id[16],
                              const char *recipient)
{
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_RECEIPT_DEL);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, id, 16, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, recipient, -1, SQLITE_STATIC);
    int rc = refex_sqstore_write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    if (rc == REFEX_OK && sqlite3_changes(s->db) == 0)
        return REFEX_E_NOTFOUND;
    return rc;
}

static int sq_receipt_ack(void *impl, const char *sender, const uint8_t id[16],
                          const char *recipient)
{
    sq_store *s = impl;
    int rc = refex_sqstore_receipt_del(s, sender, id, recipient);
    /* once more, in the revived batch, if the failure ended the transaction */
    if (rc == REFEX_E_STORE && refex_sqstore_after_failure(s) == REFEX_OK)
        rc = refex_sqstore_receipt_del(s, sender, id, recipient);
    if (rc == REFEX_OK)
        keep_for_redo(s, NULL, sender, recipient, id, NULL, 0);
    return rc;
}

static int sq_expired(void *impl, int64_t now_ms, int limit, refex_store_expired_fn fn, void *ctx)
{
    sq_store *s = impl;
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_EXPIRED);
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
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_PURGE);
    sqlite3_bind_int64(st, 1, now_ms);
    int rc = refex_sqstore_write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    if (rc == REFEX_E_STORE)
        refex_sqstore_after_failure(
            s); /* purge is redone at its next turn; the batch must live on */
    return rc;
}

static int64_t sq_count(void *impl)
{
    sq_store *s = impl;
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_COUNT);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    return n;
}

static int sq_pending_stats(void *impl, refex_store_stats_fn fn, void *ctx)
{
    sq_store *s = impl;
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_STATS);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(ctx, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1),
           sqlite3_column_int64(st, 2));
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? REFEX_OK : refex_db_err(rc);
}

static int sq_batch_alive(void *impl)
{
    sq_store *s = impl;
    return s->in_tx && !sqlite3_get_autocommit(s->db);
}

static int64_t sq_live_bytes(void *impl)
{
    return ((sq_store *)impl)->live;
}

static const char *sq_refusal(void *impl)
{
    sq_store *s = impl;
    return s->refusal ? s->refusal : REFUSE_WRITE;
}

static uint64_t sq_put_seq(void *impl)
{
    return ((sq_store *)impl)->put_seq;
}

static void sq_destroy(void *impl)
{
    sq_store *s = impl;
    if (!s)
        return;
    for (int i = 0; i < S_N; i++)
        sqlite3_finalize(s->st[i]);
    if (s->in_tx)
        refex_sqstore_rollback(s);
    refex_sqstore_redo_clear(s);
    free(s->redo);
    refex_db_close(&s->db);
    free(s);
}

static const refex_store_ops SQ_OPS = {
    .name = "sqlite",
    .begin = refex_sqstore_begin,
    .commit = refex_sqstore_commit,
    .rollback = refex_sqstore_rollback,
    .put = sq_put,
    .pending = sq_pending,
    .ack = sq_ack,
    .receipts = sq_receipts,
    .receipt_ack = sq_receipt_ack,
    .expired = sq_expired,
    .purge = sq_purge,
    .count = sq_count,
    .batch_alive = sq_batch_alive,
    .live_bytes = sq_live_bytes,
    .refusal = sq_refusal,
    .put_seq = sq_put_seq,
    .generation = refex_sqstore_generation,
    .sender_high = refex_sqstore_sender_high,
    .renew = refex_sqstore_renew,
    .pending_stats = sq_pending_stats,
    .destroy = sq_destroy,
};

static int64_t pragma_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *ps = NULL;
    int64_t v = -1;
    if (refex_db_prepare(db, sql, &ps) == REFEX_OK && sqlite3_step(ps) == SQLITE_ROW)
        v = sqlite3_column_int64(ps, 0);
    sqlite3_finalize(ps);
    return v;
}

/* A new store gets auto_vacuum = INCREMENTAL, which must come before its first table (and,
 * the file's header being written already by WAL mode, takes a VACUUM of the empty file).
 * An existing store keeps its mode: without it, freed pages are still reused. */
static int schema_create(sq_store *s)
{
    if (pragma_int(s->db, "SELECT count(*) FROM sqlite_schema") == 0) {
        int rc = refex_db_exec(s->db, "PRAGMA auto_vacuum = INCREMENTAL");
        if (rc == REFEX_OK && pragma_int(s->db, "PRAGMA auto_vacuum") != 2)
            rc = refex_db_exec(s->db, "VACUUM");
        if (rc != REFEX_OK) /* not fatal: the store works without, as old ones do */
            refex_log_warn("store: cannot turn on incremental auto-vacuum");
    }
    s->incremental = pragma_int(s->db, "PRAGMA auto_vacuum") == 2;
    return refex_db_exec(s->db, SCHEMA);
}

/* store_max counts live envelope bytes (see fits); the file itself may hold up to twice as
 * much plus BACKSTOP_SLACK (duplicate-detection rows, receipts, indexes) before SQLite's own
 * max_page_count refuses, as a full disk would. */
#define BACKSTOP_SLACK (256u * 1024u)

static int size_limit(sq_store *s, uint64_t max_bytes)
{
    char sql[128];
    int64_t page = pragma_int(s->db, "PRAGMA page_size");
    uint64_t pages = (2 * max_bytes + BACKSTOP_SLACK) / (uint64_t)(page > 0 ? page : 4096);
    s->max_bytes = max_bytes;
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %llu", (unsigned long long)pages);
    return refex_db_exec(s->db, sql);
}

int refex_store_sqlite_open(const char *path, uint64_t max_bytes, unsigned flags, refex_store **out,
                            char *err, size_t errlen)
{
    struct stat sb;
    /* A file never written (0 bytes) is a first start too; a lost WAL leaves a header. */
    int rc, fresh = 0, existed = stat(path, &sb) == 0 && sb.st_size > 0;
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
    if ((rc = refex_db_open(path, 0, &s->db, err, errlen)) != REFEX_OK ||
        (rc = refex_sqstore_check(s, path, existed, flags, &fresh, err, errlen)) != REFEX_OK)
        goto out;
    if ((rc = schema_create(s)) != REFEX_OK) {
        snprintf(err, errlen, "%s: cannot create the queue tables", path);
        goto out;
    }
    if ((rc = refex_sqstore_identity(s, fresh, err, errlen)) != REFEX_OK)
        goto out;
    if (max_bytes > 0 && (rc = size_limit(s, max_bytes)) != REFEX_OK) {
        snprintf(err, errlen, "%s: cannot set the size limit", path);
        goto out;
    }
    for (int i = 0; i < S_N; i++)
        if ((rc = refex_db_prepare(s->db, SQL[i], &s->st[i])) != REFEX_OK) {
            snprintf(err, errlen, "%s: cannot prepare queue statements", path);
            goto out;
        }
    s->live = s->live_done = pragma_int(s->db, SQL[S_LIVE]);
    refex_log_info("store: %lld envelope bytes queued%s, %lld pages (%lld free), auto_vacuum %s",
                   (long long)s->live, max_bytes ? " (store_max counts these)" : "",
                   (long long)pragma_int(s->db, "PRAGMA page_count"),
                   (long long)pragma_int(s->db, "PRAGMA freelist_count"),
                   s->incremental ? "incremental" : "off");
    *out = self;
    self = NULL;
out:
    refex_store_destroy(&self);
    return rc;
}
