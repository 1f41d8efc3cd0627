/* The SQLite store's identity, apart from its queue operations (store_sqlite.c): the check
 * at open that a store file still has the tables it was made with, the store's generation
 * (table meta), and each sender's highest store seq (table senders). Together they let an
 * agent notice that the broker's store went backwards: restored from an older copy, or its
 * WAL lost after STORED was answered (docs/protocol.md section 3.1). Not for messages,
 * deliveries or receipts. */
#include <errno.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "store.h"
#include "store_sqlite.h"
#include "util.h"

static const char *IDENTITY_SCHEMA =
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS senders (sender TEXT PRIMARY KEY, high INTEGER NOT NULL)"
    " WITHOUT ROWID;";

/* The queue's tables, which every store has had since its first version. */
static const char *const QUEUE_TABLES[] = {"messages", "deliveries", "receipts", NULL};

static int table_exists(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    if (refex_db_prepare(db, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?",
                         &st) != REFEX_OK)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    found = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return found;
}

/* --init-store: the damaged file (and its WAL and index) is moved aside, whatever tables it
 * still has, and a new store is made in its place. */
static int begin_anew(sq_store *s, const char *path, const char *missing, int *fresh, char *err,
                      size_t errlen)
{
    static const char *const SUFFIX[] = {"", "-wal", "-shm", NULL};
    char from[4200], to[4300];
    long long now = (long long)(refex_now_ms() / 1000);
    refex_db_close(&s->db);
    for (size_t i = 0; SUFFIX[i]; i++) {
        snprintf(from, sizeof from, "%s%s", path, SUFFIX[i]);
        snprintf(to, sizeof to, "%s.damaged-%lld%s", path, now, SUFFIX[i]);
        if (rename(from, to) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "%s: cannot move it aside to %s: %s", from, to, strerror(errno));
            return REFEX_E_STORE;
        }
    }
    refex_log_warn("store: %s lacked tables (%s); moved aside as %s.damaged-%lld and "
                   "initialised as a new store (--init-store)",
                   path, missing, path, now);
    *fresh = 1;
    return refex_db_open(path, 0, &s->db, err, errlen);
}

int refex_sqstore_check(sq_store *s, const char *path, int existed, unsigned flags, int *fresh,
                        char *err, size_t errlen)
{
    char missing[64] = "";
    size_t n_missing = 0;
    *fresh = !existed;
    if (!existed)
        return REFEX_OK;
    for (size_t i = 0; QUEUE_TABLES[i]; i++) {
        int have = table_exists(s->db, QUEUE_TABLES[i]);
        if (have < 0) {
            snprintf(err, errlen, "%s: cannot read the store's schema: %s", path,
                     sqlite3_errmsg(s->db));
            return REFEX_E_STORE;
        }
        if (!have) {
            size_t used = strlen(missing);
            snprintf(missing + used, sizeof missing - used, "%s%s", n_missing ? ", " : "",
                     QUEUE_TABLES[i]);
            n_missing++;
        }
    }
    if (!n_missing)
        return REFEX_OK;
    if (!(flags & REFEX_STORE_INIT)) {
        snprintf(err, errlen,
                 "E_STORE: %s exists but lacks tables a store has (%s): it was damaged or "
                 "replaced, or its WAL was lost. No tables were made anew. To begin a new store "
                 "in its place (the file is kept aside), start once with --init-store (agents "
                 "then send again every message they hold no receipt for); see "
                 "docs/operations.md",
                 path, missing);
        return REFEX_E_STORE;
    }
    return begin_anew(s, path, missing, fresh, err, errlen);
}

static int write_generation(sq_store *s, const uint8_t gen[16])
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_prepare(
        s->db, "INSERT OR REPLACE INTO meta(key, value) VALUES ('generation', ?)", &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_blob(st, 1, gen, 16, SQLITE_STATIC);
    rc = refex_sqstore_write_err(s, sqlite3_step(st));
    sqlite3_finalize(st);
    return rc;
}

/* 1 and gen filled if the store has a generation. */
static int read_generation(sq_store *s, uint8_t gen[16])
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    if (refex_db_prepare(s->db, "SELECT value FROM meta WHERE key = 'generation'", &st) != REFEX_OK)
        return 0;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 16) {
        memcpy(gen, sqlite3_column_blob(st, 0), 16);
        found = 1;
    }
    sqlite3_finalize(st);
    return found;
}

int refex_sqstore_identity(sq_store *s, int fresh, char *err, size_t errlen)
{
    char hex[33];
    int had_senders = table_exists(s->db, "senders") == 1;
    int rc = refex_db_exec(s->db, IDENTITY_SCHEMA);
    /* A store made before senders existed: its highs are in its messages. */
    if (rc == REFEX_OK && !had_senders && !fresh)
        rc = refex_db_exec(s->db, "INSERT OR IGNORE INTO senders(sender, high)"
                                  " SELECT sender, max(seq) FROM messages GROUP BY sender");
    if (rc != REFEX_OK) {
        snprintf(err, errlen, "cannot create the store's identity tables");
        return rc;
    }
    const char *why = fresh ? "new store" : "store made before generations";
    if (!fresh && read_generation(s, s->generation))
        why = NULL;
    else {
        randombytes_buf(s->generation, 16);
        if ((rc = write_generation(s, s->generation)) != REFEX_OK) {
            snprintf(err, errlen, "cannot record the store's generation");
            return rc;
        }
    }
    refex_hex_encode(hex, s->generation, 16);
    refex_log_info("store: generation %s%s%s%s", hex, why ? " (" : "", why ? why : "",
                   why ? ")" : "");
    return REFEX_OK;
}

int refex_sqstore_renew(void *impl)
{
    sq_store *s = impl;
    randombytes_buf(s->renewed, 16);
    int rc = write_generation(s, s->renewed);
    if (rc != REFEX_OK) {
        refex_sqstore_after_failure(s);
        return rc;
    }
    s->renewing = 1;
    return REFEX_OK;
}

void refex_sqstore_renewed(sq_store *s)
{
    char old[33], now[33];
    refex_hex_encode(old, s->generation, 16);
    refex_hex_encode(now, s->renewed, 16);
    memcpy(s->generation, s->renewed, 16);
    s->renewing = 0;
    refex_log_warn("store: generation %s renewed as %s: the store was found behind what it had "
                   "answered STORED for",
                   old, now);
}

void refex_sqstore_generation(void *impl, uint8_t out[16])
{
    memcpy(out, ((sq_store *)impl)->generation, 16);
}

int refex_sqstore_sender_high(void *impl, const char *sender, uint64_t *high)
{
    sq_store *s = impl;
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_SENDER_HIGH);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    int64_t v = step == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    *high = v > 0 ? (uint64_t)v : 0;
    return step == SQLITE_ROW || step == SQLITE_DONE ? REFEX_OK : refex_db_err(step);
}

int refex_sqstore_sender_put(sq_store *s, const char *sender, int64_t seq)
{
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_SENDER_PUT);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, seq);
    int rc = refex_sqstore_write_err(s, sqlite3_step(st));
    sqlite3_reset(st);
    return rc == REFEX_E_DUPLICATE ? REFEX_E_STORE : rc;
}
