/* The agent's storage: schema, the prepared-statement table, transactions, and typed
 * access to the outbox, inbox, refusals, receipts, peers' checkpoints, grants and
 * subscriptions. The only file in agents/ (with agent_store_json.c, its listings) that
 * calls SQLite. Not policy: whether a grant or a subscription is valid is cases.c's to
 * decide; this file keeps bytes and serials. */
#include "agent_store.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_store_sql.h"
#include "audit.h"
#include "db.h"
#include "util.h"

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS outbox ("
    " message_id TEXT PRIMARY KEY, recipients TEXT NOT NULL, type TEXT NOT NULL,"
    " case_ref TEXT NOT NULL, created_ms INTEGER NOT NULL, envelope BLOB NOT NULL,"
    " state TEXT NOT NULL, error_code INTEGER NOT NULL DEFAULT 0,"
    " error_detail TEXT NOT NULL DEFAULT '', updated_ms INTEGER NOT NULL,"
    " sent_ms INTEGER NOT NULL DEFAULT 0, practitioner TEXT NOT NULL DEFAULT '',"
    " purpose TEXT NOT NULL DEFAULT '', article6 TEXT NOT NULL DEFAULT '',"
    " article9 TEXT NOT NULL DEFAULT '', consent TEXT NOT NULL DEFAULT '',"
    " subjects TEXT NOT NULL DEFAULT '', conversation_id TEXT NOT NULL DEFAULT '',"
    " request_id TEXT NOT NULL DEFAULT '', due_date TEXT NOT NULL DEFAULT '',"
    " local_id TEXT NOT NULL DEFAULT '', submission_hash TEXT NOT NULL DEFAULT '',"
    " expires_ms INTEGER NOT NULL DEFAULT 0, store_gen TEXT NOT NULL DEFAULT '',"
    " store_seq INTEGER NOT NULL DEFAULT 0, closed INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, created_ms);"
    "CREATE TABLE IF NOT EXISTS inbox ("
    " sender TEXT NOT NULL, message_id TEXT NOT NULL, type TEXT NOT NULL,"
    " case_ref TEXT NOT NULL, created_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,"
    " envelope_hash TEXT NOT NULL, body BLOB NOT NULL,"
    " conversation_id TEXT NOT NULL DEFAULT '', reply_to TEXT NOT NULL DEFAULT '',"
    " decision TEXT NOT NULL DEFAULT '', cursor INTEGER, acked_at_ms INTEGER,"
    " PRIMARY KEY (sender, message_id));"
    "CREATE INDEX IF NOT EXISTS inbox_reply_to ON inbox(reply_to);"
    "CREATE TABLE IF NOT EXISTS case_grants ("
    " case_ref TEXT NOT NULL, member TEXT NOT NULL, lead TEXT NOT NULL, serial INTEGER NOT NULL,"
    " grant BLOB NOT NULL, PRIMARY KEY (case_ref, member));"
    "CREATE TABLE IF NOT EXISTS case_subscriptions ("
    " agency TEXT NOT NULL, case_ref TEXT NOT NULL, serial INTEGER NOT NULL,"
    " subscription BLOB NOT NULL, PRIMARY KEY (agency, case_ref));"
    "CREATE TABLE IF NOT EXISTS peer_checkpoints ("
    " agency TEXT NOT NULL, size INTEGER NOT NULL, root BLOB NOT NULL,"
    " PRIMARY KEY (agency, size));"
    "CREATE TABLE IF NOT EXISTS refused ("
    " sender TEXT NOT NULL, message_id TEXT NOT NULL, code INTEGER NOT NULL,"
    " PRIMARY KEY (sender, message_id));"
    "CREATE TABLE IF NOT EXISTS receipts ("
    " message_id TEXT NOT NULL, recipient TEXT NOT NULL, code INTEGER NOT NULL,"
    " signer TEXT NOT NULL, time_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,"
    " receipt BLOB NOT NULL, PRIMARY KEY (message_id, recipient));";

/* Columns added after a table's first release: a database made before them gets them at
 * open (ALTER TABLE), then whatever fills them and the indexes that need them. */
typedef struct {
    const char *name, *ddl;
} added_column;

static const added_column OUTBOX_ADDED[] = {
    {"local_id", "ALTER TABLE outbox ADD COLUMN local_id TEXT NOT NULL DEFAULT ''"},
    {"submission_hash", "ALTER TABLE outbox ADD COLUMN submission_hash TEXT NOT NULL DEFAULT ''"},
    {"expires_ms", "ALTER TABLE outbox ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0"},
    {"store_gen", "ALTER TABLE outbox ADD COLUMN store_gen TEXT NOT NULL DEFAULT ''"},
    {"store_seq", "ALTER TABLE outbox ADD COLUMN store_seq INTEGER NOT NULL DEFAULT 0"},
    {"closed", "ALTER TABLE outbox ADD COLUMN closed INTEGER NOT NULL DEFAULT 0"},
    {NULL, NULL},
};
/* An inbox message's cursor says in which order messages were committed to the inbox:
 * each new row takes the highest cursor plus one, and inbox rows are never deleted, so a
 * cursor is never reused (unlike a rowid, which VACUUM may renumber in a table without an
 * INTEGER PRIMARY KEY). Rows older than the column get theirs from their rowid, which is
 * the order they were inserted in. acked_at_ms stays NULL until the receiving system
 * acknowledges the message. */
static const added_column INBOX_ADDED[] = {
    {"cursor", "ALTER TABLE inbox ADD COLUMN cursor INTEGER"},
    {"acked_at_ms", "ALTER TABLE inbox ADD COLUMN acked_at_ms INTEGER"},
    {NULL, NULL},
};
/* A caller's local id names one message for as long as its outbox row is kept. store_gen
 * and store_seq say which broker store answered STORED and where in it; closed is set once
 * nothing more is awaited (every receipt came, or its expiry was dealt with). Open rows
 * (stored, not closed) are few and closed ones are kept, so the queries over open rows have
 * partial indexes led by state and closed: the planner (no statistics) then prefers them to
 * outbox_state, which would read every stored row. */
static const char *ADDED_FILL =
    "CREATE UNIQUE INDEX IF NOT EXISTS outbox_local_id ON outbox(local_id) WHERE local_id <> '';"
    "CREATE INDEX IF NOT EXISTS outbox_open ON outbox(store_gen, store_seq)"
    " WHERE state = 'stored' AND closed = 0;"
    "CREATE INDEX IF NOT EXISTS outbox_open_expiry ON outbox(state, closed, expires_ms)"
    " WHERE state = 'stored' AND closed = 0;"
    "CREATE INDEX IF NOT EXISTS outbox_open_updated ON outbox(state, closed, updated_ms)"
    " WHERE state = 'stored' AND closed = 0;"
    "UPDATE inbox SET cursor = (SELECT COALESCE(MAX(cursor), 0) FROM inbox) + rowid"
    " WHERE cursor IS NULL;"
    "CREATE UNIQUE INDEX IF NOT EXISTS inbox_cursor ON inbox(cursor);";

#define INBOX_COLUMNS                                                                              \
    "SELECT sender, message_id, type, case_ref, created_ms, received_ms, envelope_hash, body,"     \
    " cursor, acked_at_ms FROM inbox"

#define MESSAGE_STATUS_COLUMNS                                                                     \
    "SELECT message_id, recipients, type, case_ref, created_ms, state, error_code,"                \
    " error_detail, local_id FROM outbox"

static const char *const SQL[S_N] = {
    [S_OUTBOX_INSERT] = "INSERT INTO outbox(message_id, recipients, type, case_ref,"
                        " created_ms, envelope, state, updated_ms, sent_ms, practitioner,"
                        " purpose, article6, article9, consent, subjects, conversation_id,"
                        " request_id, due_date, local_id, submission_hash, expires_ms)"
                        " VALUES (?,?,?,?,?,?,'pending',?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [S_OUTBOX_PENDING] = "SELECT message_id, envelope FROM outbox WHERE state = 'pending'"
                         " AND sent_ms <= ? ORDER BY created_ms, rowid LIMIT 500",
    [S_OUTBOX_QUEUE] = "SELECT message_id, envelope FROM outbox WHERE state = 'pending'"
                       " ORDER BY created_ms, rowid LIMIT ?",
    [S_OUTBOX_MARK_SENT] = "UPDATE outbox SET sent_ms = ? WHERE message_id = ?",
/* ?6, ?7: the broker store's generation and seq of a STORED, NULL to keep them */
/* A refusal of a message a broker store had stored before (sent again after the store
 * lost it: store_gen is set) leaves it stored: it was accepted once, and only a receipt
 * or its expiry (expired, no report) settles it now. */
#define KEPT "(?2 <> 0 AND store_gen <> '')"
    [S_OUTBOX_SETTLE] = "UPDATE outbox SET state = CASE WHEN " KEPT " THEN 'stored' ELSE ?1 END,"
                        " error_code = CASE WHEN " KEPT " THEN 0 ELSE ?2 END,"
                        " error_detail = CASE WHEN " KEPT " THEN '' ELSE ?3 END,"
                        " updated_ms = ?4, store_gen = coalesce(?6, store_gen),"
                        " store_seq = coalesce(?7, store_seq)"
                        " WHERE message_id = ?5 AND state = 'pending'"
                        " RETURNING recipients, ?2 <> 0 AND state = 'stored'",
#undef KEPT
    [S_OUTBOX_BY_LOCAL_ID] = "SELECT message_id, submission_hash, state, sent_ms, error_code,"
                             " error_detail FROM outbox WHERE local_id = ?1 AND local_id <> ''",
    [S_OUTBOX_META] = "SELECT type, case_ref, practitioner, purpose, article6, article9,"
                      " consent, subjects FROM outbox WHERE message_id = ?",
    [S_KNOWN_DELIVERY] = "SELECT 0, envelope_hash FROM inbox WHERE sender = ?1 AND"
                         " message_id = ?2 UNION ALL SELECT code, '' FROM refused WHERE"
                         " sender = ?1 AND message_id = ?2",
    [S_INBOX_INSERT] = "INSERT INTO inbox(sender, message_id, type, case_ref,"
                       " created_ms, received_ms, envelope_hash, body,"
                       " conversation_id, reply_to, decision, cursor)"
                       " VALUES (?,?,?,?,?,?,?,?,?,?,?,"
                       " (SELECT COALESCE(MAX(cursor), 0) + 1 FROM inbox))"
                       " ON CONFLICT (sender, message_id) DO NOTHING", /* a cursor clash fails */
    [S_REFUSED_INSERT] = "INSERT INTO refused(sender, message_id, code) VALUES (?,?,?)"
                         " ON CONFLICT DO NOTHING",
    [S_RECEIPT_INSERT] = "INSERT INTO receipts(message_id, recipient, code, signer, time_ms,"
                         " received_ms, receipt) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
    /* ?1 after, ?2 only unacknowledged, ?3 limit (-1: none). */
    [S_INBOX_PAGE] = INBOX_COLUMNS " WHERE cursor > ?1 AND (?2 = 0 OR acked_at_ms IS NULL)"
                                   " ORDER BY cursor LIMIT ?3",
    [S_INBOX_SHOW] = INBOX_COLUMNS " WHERE message_id = ? ORDER BY cursor",
    /* The message with this id from sender ?3 (ids are unique per sender; NULL: the one
     * sender the caller has checked there is), unless acknowledged. */
    [S_INBOX_ACK] = "UPDATE inbox SET acked_at_ms = ?1 WHERE rowid = (SELECT rowid FROM inbox"
                    " WHERE message_id = ?2 AND (?3 IS NULL OR sender = ?3) ORDER BY cursor"
                    " LIMIT 1) AND acked_at_ms IS NULL"
                    " RETURNING sender, type, case_ref, envelope_hash, body",
    [S_INBOX_ACKED] = "SELECT acked_at_ms FROM inbox WHERE message_id = ?1"
                      " AND (?2 IS NULL OR sender = ?2) ORDER BY cursor LIMIT 1",
    [S_INBOX_SENDERS] = "SELECT sender FROM inbox WHERE message_id = ? ORDER BY cursor",
    [S_OUTBOX_LIST] = "SELECT message_id, recipients, type, case_ref, created_ms,"
                      " state, error_code, error_detail, local_id FROM outbox ORDER BY created_ms",
    [S_MESSAGE_STATUS] = MESSAGE_STATUS_COLUMNS " WHERE message_id = ?1",
    [S_MESSAGE_STATUS_LOCAL] = MESSAGE_STATUS_COLUMNS " WHERE local_id = ?1 AND local_id <> ''",
    [S_MESSAGE_RECEIPTS] = "SELECT recipient, code, signer, time_ms FROM receipts"
                           " WHERE message_id = ? ORDER BY recipient",
    /* Each referral with its best receipt code and the latest decision that answers it. */
    [S_REFERRALS] = "SELECT o.message_id, o.recipients, o.case_ref, o.created_ms, o.state,"
                    " o.error_code, o.conversation_id,"
                    " (SELECT code FROM receipts r WHERE r.message_id = o.message_id"
                    "  ORDER BY code DESC LIMIT 1),"
                    " d.message_id, d.sender, d.decision, d.case_ref, d.body, d.received_ms"
                    " FROM outbox o LEFT JOIN inbox d ON d.rowid = (SELECT rowid FROM inbox i"
                    "  WHERE i.reply_to = o.message_id AND i.type = 'REFERRAL_DECISION'"
                    "  ORDER BY i.received_ms DESC LIMIT 1)"
                    " WHERE o.type = 'REFERRAL' ORDER BY o.created_ms",
    /* Each information request with its first response and whether it is overdue. */
    [S_REQUESTS] = "SELECT o.message_id, o.recipients, o.case_ref, o.created_ms, o.request_id,"
                   " o.due_date, r.decision, r.message_id, r.received_ms,"
                   " o.due_date <> '' AND o.due_date < date('now') AND r.message_id IS NULL"
                   " FROM outbox o LEFT JOIN inbox r ON r.rowid = (SELECT rowid FROM inbox i"
                   "  WHERE i.reply_to = o.request_id AND i.type = 'INFORMATION_RESPONSE'"
                   "  AND o.request_id <> '' ORDER BY i.received_ms LIMIT 1)"
                   " WHERE o.type = 'INFORMATION_REQUEST' ORDER BY o.due_date, o.created_ms",
};

/* ---- open, close, transactions ------------------------------------------------------ */

/* Adds the columns of `added` that table lacks in an older database (PRAGMA table_info
 * says which); bit i of *added_now (if given) says whether added[i] was added now. */
static int upgrade_table(sqlite3 *db, const char *table, const added_column *added,
                         unsigned *added_now)
{
    sqlite3_stmt *st = NULL;
    char sql[128];
    int have[8] = {0}, step;
    snprintf(sql, sizeof sql, "PRAGMA table_info(%s)", table);
    int rc = refex_db_prepare(db, sql, &st);
    if (rc != REFEX_OK)
        return rc;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 1);
        for (size_t i = 0; name && added[i].name; i++)
            have[i] |= strcmp(name, added[i].name) == 0;
    }
    rc = refex_db_err(step);
    sqlite3_finalize(st);
    for (size_t i = 0; rc == REFEX_OK && added[i].name; i++)
        if (!have[i] && (rc = refex_db_exec(db, added[i].ddl)) == REFEX_OK && added_now)
            *added_now |= 1u << i;
    return rc;
}

/* Whether upgrade_table's added_now says the column called name was added now. */
static int added_now(const added_column *added, unsigned mask, const char *name)
{
    for (size_t i = 0; added[i].name; i++)
        if (strcmp(added[i].name, name) == 0)
            return (mask >> i) & 1;
    return 0;
}

/* The schema, and an older database brought up to it, in one transaction. */
static int create_tables(sqlite3 *db)
{
    unsigned outbox_added = 0;
    int rc = refex_db_begin(db);
    if (rc != REFEX_OK)
        return rc;
    if ((rc = refex_db_exec(db, SCHEMA)) != REFEX_OK ||
        (rc = upgrade_table(db, "outbox", OUTBOX_ADDED, &outbox_added)) != REFEX_OK ||
        (rc = upgrade_table(db, "inbox", INBOX_ADDED, NULL)) != REFEX_OK ||
        (rc = refex_db_exec(db, ADDED_FILL)) != REFEX_OK ||
        (rc = agent_store_report_create(db, added_now(OUTBOX_ADDED, outbox_added, "expires_ms"),
                                        added_now(OUTBOX_ADDED, outbox_added, "closed"))) !=
            REFEX_OK ||
        (rc = refex_db_commit(db)) != REFEX_OK) {
        refex_db_rollback(db);
        return rc;
    }
    return refex_audit_init(db);
}

int agent_store_open(const char *path, agent_store **out, char *err, size_t errlen)
{
    int rc;
    agent_store *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!s)
        return REFEX_E_NOMEM;
    if ((rc = refex_db_open(path, 0, &s->db, err, errlen)) != REFEX_OK)
        goto out;
    if ((rc = create_tables(s->db)) != REFEX_OK) {
        snprintf(err, errlen, "%s: cannot create tables", path);
        goto out;
    }
    for (int i = 0; i < S_N; i++)
        if ((rc = refex_db_prepare(s->db, SQL[i], &s->st[i])) != REFEX_OK) {
            snprintf(err, errlen, "%s: cannot prepare the agent's statements", path);
            goto out;
        }
    *out = s;
    s = NULL;
out:
    agent_store_close(&s);
    return rc;
}

void agent_store_close(agent_store **s_p)
{
    if (!s_p || !*s_p)
        return;
    agent_store *s = *s_p;
    for (int i = 0; i < S_N; i++)
        sqlite3_finalize(s->st[i]);
    agent_store_link_close(s);
    agent_store_cases_close(s);
    refex_db_close(&s->db);
    free(s);
    *s_p = NULL;
}

sqlite3 *agent_store_db(agent_store *s)
{
    return s->db;
}

int agent_store_begin(agent_store *s)
{
    return refex_db_begin(s->db);
}

int agent_store_commit(agent_store *s)
{
    return refex_db_commit(s->db);
}

void agent_store_rollback(agent_store *s)
{
    refex_db_rollback(s->db);
}

/* A unit per message: kept statements (refex_db_run), not text parsed each time. */
int agent_store_savepoint(agent_store *s)
{
    return refex_db_run(s->db, "SAVEPOINT unit");
}

int agent_store_release(agent_store *s)
{
    return refex_db_run(s->db, "RELEASE unit");
}

int agent_store_undo(agent_store *s)
{
    int rc = refex_db_run(s->db, "ROLLBACK TO unit");
    return rc == REFEX_OK ? refex_db_run(s->db, "RELEASE unit") : rc;
}

int agent_store_autocommit(agent_store *s)
{
    return sqlite3_get_autocommit(s->db);
}

static const char *column_text(sqlite3_stmt *st, int i)
{
    const char *v = (const char *)sqlite3_column_text(st, i);
    return v ? v : "";
}

/* ---- outbox ------------------------------------------------------------------------- */

int agent_store_outbox_insert(agent_store *s, const agent_outbox_row *r)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_OUTBOX_INSERT);
    const refex_body_meta *m = r->meta;
    agent_store_bind_text(st, 1, r->message_id);
    agent_store_bind_text(st, 2, r->recipients);
    agent_store_bind_text(st, 3, r->type);
    agent_store_bind_text(st, 4, r->case_ref);
    sqlite3_bind_int64(st, 5, r->created_ms);
    sqlite3_bind_blob(st, 6, r->envelope, (int)r->envelope_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, r->created_ms);
    sqlite3_bind_int64(st, 8, r->sent_ms);
    agent_store_bind_text(st, 9, m->practitioner);
    agent_store_bind_text(st, 10, m->purpose);
    agent_store_bind_text(st, 11, m->article6);
    agent_store_bind_text(st, 12, m->article9);
    agent_store_bind_text(st, 13, m->consent);
    agent_store_bind_text(st, 14, m->subjects);
    agent_store_bind_text(st, 15, m->conversation_id);
    agent_store_bind_text(st, 16, m->request_id);
    agent_store_bind_text(st, 17, m->due_date);
    agent_store_bind_text(st, 18, r->local_id);
    agent_store_bind_text(st, 19, r->submission_hash);
    sqlite3_bind_int64(st, 20, r->expires_ms);
    return agent_store_write(s, st, NULL);
}

int agent_store_outbox_by_local_id(agent_store *s, const char *local_id, agent_outbox_local *out,
                                   int *found)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_OUTBOX_BY_LOCAL_ID);
    memset(out, 0, sizeof *out);
    agent_store_bind_text(st, 1, local_id);
    int step = sqlite3_step(st);
    *found = step == SQLITE_ROW;
    if (*found) {
        snprintf(out->message_id, sizeof out->message_id, "%s", column_text(st, 0));
        snprintf(out->submission_hash, sizeof out->submission_hash, "%s", column_text(st, 1));
        snprintf(out->state, sizeof out->state, "%s", column_text(st, 2));
        out->sent_ms = sqlite3_column_int64(st, 3);
        out->error_code = sqlite3_column_int(st, 4);
        snprintf(out->error_detail, sizeof out->error_detail, "%s", column_text(st, 5));
    }
    return agent_store_done(st, refex_db_err(step));
}

int agent_store_outbox_pending(agent_store *s, int64_t sent_before, agent_store_envelope_fn fn,
                               void *ctx)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_OUTBOX_PENDING);
    int step;
    sqlite3_bind_int64(st, 1, sent_before);
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        if (fn(ctx, column_text(st, 0), sqlite3_column_blob(st, 1),
               (size_t)sqlite3_column_bytes(st, 1)))
            break;
    return agent_store_done(st, refex_db_err(step));
}

int agent_store_outbox_queue(agent_store *s, int limit, agent_store_envelope_fn fn, void *ctx)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_OUTBOX_QUEUE);
    int step;
    sqlite3_bind_int(st, 1, limit);
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        if (fn(ctx, column_text(st, 0), sqlite3_column_blob(st, 1),
               (size_t)sqlite3_column_bytes(st, 1)))
            break;
    return agent_store_done(st, refex_db_err(step));
}

int agent_store_outbox_mark_sent(agent_store *s, const char *message_id, int64_t sent_ms)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_OUTBOX_MARK_SENT);
    sqlite3_bind_int64(st, 1, sent_ms);
    agent_store_bind_text(st, 2, message_id);
    return agent_store_write(s, st, NULL);
}

int agent_store_outbox_settle(agent_store *s, const char *message_id, int code, const char *detail,
                              int64_t now_ms, char *recipients, size_t rlen, int *settled)
{
    return agent_store_outbox_settle_at(s, message_id, code, detail, now_ms, NULL, 0, recipients,
                                        rlen, settled);
}

int agent_store_outbox_settle_at(agent_store *s, const char *message_id, int code,
                                 const char *detail, int64_t now_ms, const char *gen, uint64_t seq,
                                 char *recipients, size_t rlen, int *settled)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_OUTBOX_SETTLE);
    sqlite3_bind_text(st, 1, code ? "rejected" : "stored", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, code);
    agent_store_bind_text(st, 3, detail);
    sqlite3_bind_int64(st, 4, now_ms);
    agent_store_bind_text(st, 5, message_id);
    if (gen) {
        sqlite3_bind_text(st, 6, gen, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, (sqlite3_int64)seq);
    }
    int step = sqlite3_step(st);
    *settled = step != SQLITE_ROW ? 0 : sqlite3_column_int(st, 1) ? 2 : 1;
    if (*settled && rlen)
        snprintf(recipients, rlen, "%s", column_text(st, 0));
    return agent_store_done(st, refex_db_err(step));
}

int agent_store_outbox_meta(agent_store *s, const char *message_id, agent_store_meta_fn fn,
                            void *ctx)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_OUTBOX_META);
    const char *col[8];
    agent_store_bind_text(st, 1, message_id);
    int found = sqlite3_step(st) == SQLITE_ROW;
    for (int i = 0; i < 8; i++)
        col[i] = found ? column_text(st, i) : "";
    refex_body_meta m = {col[2], col[3], col[4], col[5], col[6], col[1], "", "", "", "", "", ""};
    snprintf(m.subjects, sizeof m.subjects, "%s", col[7]);
    return agent_store_done(st, fn(ctx, col[0], &m));
}

/* ---- inbox, refusals, receipts ------------------------------------------------------ */

int agent_store_known_delivery(agent_store *s, const char *sender, const char *message_id,
                               int *code, uint8_t hash[32], int *has_hash)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_KNOWN_DELIVERY);
    int found = 0;
    *has_hash = 0;
    agent_store_bind_text(st, 1, sender);
    agent_store_bind_text(st, 2, message_id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        found = 1;
        *code = sqlite3_column_int(st, 0);
        *has_hash = refex_hex_decode(hash, 32, column_text(st, 1)) == REFEX_OK;
    }
    return agent_store_done(st, found);
}

int agent_store_inbox_insert(agent_store *s, const agent_inbox_row *r, int *dup)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_INBOX_INSERT);
    int changed = 0;
    agent_store_bind_text(st, 1, r->sender);
    agent_store_bind_text(st, 2, r->message_id);
    agent_store_bind_text(st, 3, r->type);
    agent_store_bind_text(st, 4, r->case_ref);
    sqlite3_bind_int64(st, 5, r->created_ms);
    sqlite3_bind_int64(st, 6, r->received_ms);
    agent_store_bind_text(st, 7, r->envelope_hash);
    sqlite3_bind_blob(st, 8, r->body, (int)r->body_len, SQLITE_STATIC);
    agent_store_bind_text(st, 9, r->meta->conversation_id);
    agent_store_bind_text(st, 10, r->meta->reply_to);
    agent_store_bind_text(st, 11, r->meta->decision);
    int rc = agent_store_write(s, st, &changed);
    *dup = rc == REFEX_OK && !changed;
    return rc;
}

int agent_store_inbox_ack(agent_store *s, const char *message_id, const char *sender,
                          int64_t now_ms, agent_store_ack_fn fn, void *ctx, int64_t *acked_at_ms,
                          int *already)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_INBOX_ACK);
    *already = 0;
    *acked_at_ms = now_ms;
    sqlite3_bind_int64(st, 1, now_ms);
    agent_store_bind_text(st, 2, message_id);
    if (sender)
        agent_store_bind_text(st, 3, sender);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        /* RETURNING has made its change by the first row: fn may write (the audit entry). */
        agent_inbox_acked e = {column_text(st, 0),         column_text(st, 1),
                               column_text(st, 2),         column_text(st, 3),
                               sqlite3_column_blob(st, 4), (size_t)sqlite3_column_bytes(st, 4)};
        int rc = fn(ctx, &e);
        sqlite3_step(st); /* ends the statement: one row at most */
        return agent_store_done(st, rc);
    }
    int rc = agent_store_done(st, refex_db_err(step));
    if (rc != REFEX_OK)
        return rc;
    st = agent_store_stmt(s, S_INBOX_ACKED);
    agent_store_bind_text(st, 1, message_id);
    if (sender)
        agent_store_bind_text(st, 2, sender);
    step = sqlite3_step(st);
    if (step != SQLITE_ROW)
        return agent_store_done(st, step == SQLITE_DONE ? REFEX_E_NOTFOUND : refex_db_err(step));
    *already = 1;
    *acked_at_ms = sqlite3_column_int64(st, 0);
    return agent_store_done(st, REFEX_OK);
}

int agent_store_refused_insert(agent_store *s, const char *sender, const char *message_id, int code,
                               int *dup)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_REFUSED_INSERT);
    int changed = 0;
    agent_store_bind_text(st, 1, sender);
    agent_store_bind_text(st, 2, message_id);
    sqlite3_bind_int(st, 3, code);
    int rc = agent_store_write(s, st, &changed);
    *dup = rc == REFEX_OK && !changed;
    return rc;
}

int agent_store_receipt_insert(agent_store *s, const agent_receipt_row *r, int *fresh)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_RECEIPT_INSERT);
    agent_store_bind_text(st, 1, r->message_id);
    agent_store_bind_text(st, 2, r->recipient);
    sqlite3_bind_int(st, 3, r->code);
    agent_store_bind_text(st, 4, r->signer);
    sqlite3_bind_int64(st, 5, r->time_ms);
    sqlite3_bind_int64(st, 6, r->received_ms);
    sqlite3_bind_blob(st, 7, r->receipt, (int)r->len, SQLITE_STATIC);
    return agent_store_write(s, st, fresh);
}
