/* The agent's storage for messages that expired with no report: the no_reports table (which
 * recipients of our stored messages sent neither a receipt nor a non-delivery report by the
 * message's expiry), closing outbox rows for which nothing more is awaited, and the queries
 * the expiry sweep and the status listings need. Part of the storage module; its statements
 * are kept in the connection's statement cache (refex_db_cached: closing a receipted row and
 * reading an envelope run once per receipt), so the shared statement table stays untouched.
 * Also the one-off fills of the
 * columns the sweep reads (expires_ms, closed) at the upgrade that adds them, and the
 * envelope of one of our messages (that a receipt's envelope hash is checked against). Not
 * the policy (when to sweep, what to audit and log): that is agents/outbox_expiry.c. */
#include <stdio.h>
#include <string.h>

#include "agent_store.h"
#include "audit_tree.h"
#include "db.h"
#include "envelope.h"
#include "log.h"

static const char *NO_REPORTS_SCHEMA =
    "CREATE TABLE IF NOT EXISTS no_reports ("
    " message_id TEXT NOT NULL, recipient TEXT NOT NULL, expires_ms INTEGER NOT NULL,"
    " noted_ms INTEGER NOT NULL, PRIMARY KEY (message_id, recipient));";

/* The receipts of ?1 from the recipients its outbox row lists: a receipt from anyone else
 * (signed by an agency the message was not for) must not close it. */
#define RECEIPTS_FROM_RECIPIENTS                                                                   \
    "(SELECT COUNT(*) FROM receipts r WHERE r.message_id = ?1"                                     \
    " AND instr(',' || outbox.recipients || ',', ',' || r.recipient || ',') > 0)"
#define RECIPIENT_COUNT "(length(recipients) - length(replace(recipients, ',', '')) + 1)"

static const char *SQL_CLOSE_IF_RECEIPTED =
    /* a message sent again after a broker store lost it, whose receipts came meanwhile,
     * needs sending no more: stored, as it was */
    "UPDATE outbox SET closed = 1,"
    " state = CASE WHEN state = 'pending' AND store_gen <> '' THEN 'stored' ELSE state END"
    " WHERE message_id = ?1 AND closed = 0"
    " AND " RECEIPTS_FROM_RECIPIENTS " >= " RECIPIENT_COUNT;
static const char *SQL_CLOSE = "UPDATE outbox SET closed = 1 WHERE message_id = ?1";
static const char *SQL_OVERDUE = "SELECT message_id, recipients, expires_ms FROM outbox"
                                 " WHERE state = 'stored' AND closed = 0 AND expires_ms <= ?1"
                                 " ORDER BY expires_ms LIMIT ?2";
static const char *SQL_OUTBOX_ENVELOPE = "SELECT message_id, envelope FROM outbox"
                                         " WHERE message_id = ?1";
static const char *SQL_RECEIPT_HELD = "SELECT 1 FROM receipts WHERE message_id = ? AND"
                                      " recipient = ?";
static const char *SQL_NO_REPORT_INSERT =
    "INSERT INTO no_reports(message_id, recipient, expires_ms, noted_ms) VALUES (?,?,?,?)"
    " ON CONFLICT DO NOTHING";
/* A receipt that came after all wins: only recipients still without one are listed. */
#define UNANSWERED                                                                                 \
    " FROM no_reports n WHERE NOT EXISTS (SELECT 1 FROM receipts r WHERE"                          \
    " r.message_id = n.message_id AND r.recipient = n.recipient)"
static const char *SQL_NO_REPORT_OF = "SELECT n.recipient, n.expires_ms, n.noted_ms" UNANSWERED
                                      " AND n.message_id = ? ORDER BY n.recipient";
static const char *SQL_NO_REPORT_IDS = "SELECT DISTINCT n.message_id" UNANSWERED;

/* Rows from before `closed` existed whose every receipt is in: closed at the upgrade that
 * adds the column, so the outbox's open rows (what a WELCOME is checked against) are only
 * those still awaited. */
#define RECEIPTED                                                                                  \
    "state = 'stored' AND (SELECT COUNT(*) FROM receipts r"                                        \
    " WHERE r.message_id = outbox.message_id"                                                      \
    " AND instr(',' || outbox.recipients || ',', ',' || r.recipient || ',') > 0)"                  \
    " >= " RECIPIENT_COUNT
static const char *CLOSE_RECEIPTED = "UPDATE outbox SET closed = 1 WHERE closed = 0 AND " RECEIPTED;

/* Rows from before expires_ms existed take their envelope's expiry (a sender's ttl may be
 * up to 366 days), read in rowid order a batch at a time, each batch written before the
 * next is read (no write under an open read of the same table). When closed is new too,
 * the same write closes a receipted row: each row (envelope and all) is rewritten once. */
#define FILL_BATCH 256
static const char *SQL_FILL_READ = "SELECT rowid, created_ms, envelope, message_id FROM outbox"
                                   " WHERE rowid > ?1 ORDER BY rowid LIMIT ?2";
static const char *SQL_FILL_WRITE = "UPDATE outbox SET expires_ms = ?1 WHERE rowid = ?2";
static const char *SQL_FILL_WRITE_CLOSED =
    "UPDATE outbox SET expires_ms = ?1, closed = (" RECEIPTED ") WHERE rowid = ?2";

typedef struct {
    sqlite3_int64 rowid, expires_ms;
} expiry_fill;

/* The expiry the packed envelope's signed header gives, or, when it does not parse, the
 * default life from created_ms (and a log line naming the message, not its contents). */
static int64_t envelope_expiry(sqlite3_stmt *read)
{
    const uint8_t *blob = sqlite3_column_blob(read, 2);
    size_t len = (size_t)sqlite3_column_bytes(read, 2);
    Refex__V1__Envelope *env = blob ? refex__v1__envelope__unpack(NULL, len, blob) : NULL;
    Refex__V1__EnvelopeHeader *h = NULL;
    int64_t expires = sqlite3_column_int64(read, 1) + REFEX_DEFAULT_TTL_MS;
    if (env && refex_envelope_parse_header(env, &h) == REFEX_OK)
        expires = h->expires_at_ms;
    else
        refex_log_warn("outbox message %s: its envelope does not parse; it expires by the"
                       " default, %lld days after it was made",
                       (const char *)sqlite3_column_text(read, 3),
                       (long long)(REFEX_DEFAULT_TTL_MS / 86400000));
    if (h)
        refex__v1__envelope_header__free_unpacked(h, NULL);
    if (env)
        refex__v1__envelope__free_unpacked(env, NULL);
    return expires;
}

/* Reads up to FILL_BATCH rows after *after into rows; *n how many, *after the last rowid. */
static int fill_read(sqlite3_stmt *read, sqlite3_int64 *after, expiry_fill *rows, size_t *n)
{
    int step = SQLITE_DONE;
    *n = 0;
    sqlite3_reset(read);
    sqlite3_bind_int64(read, 1, *after);
    sqlite3_bind_int(read, 2, FILL_BATCH);
    while (*n < FILL_BATCH && (step = sqlite3_step(read)) == SQLITE_ROW) {
        rows[*n].rowid = *after = sqlite3_column_int64(read, 0);
        rows[(*n)++].expires_ms = envelope_expiry(read);
    }
    int rc = *n == FILL_BATCH ? REFEX_OK : refex_db_err(step);
    sqlite3_reset(read);
    return rc;
}

static int fill_expiry(sqlite3 *db, int closed_added)
{
    sqlite3_stmt *read = NULL, *write = NULL;
    expiry_fill rows[FILL_BATCH];
    sqlite3_int64 after = 0;
    size_t n = 0, total = 0;
    int rc;
    if ((rc = refex_db_prepare(db, SQL_FILL_READ, &read)) != REFEX_OK ||
        (rc = refex_db_prepare(db, closed_added ? SQL_FILL_WRITE_CLOSED : SQL_FILL_WRITE,
                               &write)) != REFEX_OK)
        goto out;
    refex_log_info("outbox upgrade: reading each message's expiry from its envelope (once; a "
                   "large outbox takes a while)");
    do {
        if ((rc = fill_read(read, &after, rows, &n)) != REFEX_OK)
            goto out;
        for (size_t i = 0; i < n && rc == REFEX_OK; i++) {
            sqlite3_reset(write);
            sqlite3_bind_int64(write, 1, rows[i].expires_ms);
            sqlite3_bind_int64(write, 2, rows[i].rowid);
            rc = refex_db_err(sqlite3_step(write));
        }
        total += n;
    } while (rc == REFEX_OK && n == FILL_BATCH);
    if (rc == REFEX_OK)
        refex_log_info("outbox upgraded: the expiry of %zu messages filled from their envelopes",
                       total);
out:
    sqlite3_finalize(read);
    sqlite3_finalize(write);
    return rc;
}

int agent_store_report_create(sqlite3 *db, int expires_added, int closed_added)
{
    int rc = refex_db_exec(db, NO_REPORTS_SCHEMA);
    if (rc == REFEX_OK && expires_added)
        rc = fill_expiry(db, closed_added);
    else if (rc == REFEX_OK && closed_added)
        rc = refex_db_exec(db, CLOSE_RECEIPTED);
    return rc;
}

/* The kept statement for sql on the store's handle, with text ?1 (and ?2 if t2); hand it
 * back with refex_db_done. */
static int prepare(agent_store *s, const char *sql, const char *t1, const char *t2,
                   sqlite3_stmt **st)
{
    int rc = refex_db_cached(agent_store_db(s), sql, st);
    if (rc != REFEX_OK)
        return rc;
    if (t1)
        sqlite3_bind_text(*st, 1, t1, -1, SQLITE_STATIC);
    if (t2)
        sqlite3_bind_text(*st, 2, t2, -1, SQLITE_STATIC);
    return REFEX_OK;
}

/* Steps a write and hands it back; *changed (if given): whether a row changed. */
static int write_once(agent_store *s, sqlite3_stmt *st, int *changed)
{
    int rc = refex_db_err(sqlite3_step(st));
    if (changed)
        *changed = rc == REFEX_OK && sqlite3_changes(agent_store_db(s)) > 0;
    return refex_db_done(st, rc);
}

int agent_store_outbox_close_if_receipted(agent_store *s, const char *message_id, int *closed)
{
    sqlite3_stmt *st = NULL;
    int rc = prepare(s, SQL_CLOSE_IF_RECEIPTED, message_id, NULL, &st);
    return rc == REFEX_OK ? write_once(s, st, closed) : rc;
}

int agent_store_outbox_close(agent_store *s, const char *message_id)
{
    sqlite3_stmt *st = NULL;
    int rc = prepare(s, SQL_CLOSE, message_id, NULL, &st);
    return rc == REFEX_OK ? write_once(s, st, NULL) : rc;
}

int agent_store_outbox_overdue(agent_store *s, int64_t expired_by, agent_overdue_row *rows,
                               size_t cap, size_t *n)
{
    sqlite3_stmt *st = NULL;
    int step, rc = prepare(s, SQL_OVERDUE, NULL, NULL, &st);
    *n = 0;
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_int64(st, 1, expired_by);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)cap);
    while (*n < cap && (step = sqlite3_step(st)) == SQLITE_ROW) {
        agent_overdue_row *r = &rows[(*n)++];
        snprintf(r->message_id, sizeof r->message_id, "%s",
                 (const char *)sqlite3_column_text(st, 0));
        snprintf(r->recipients, sizeof r->recipients, "%s",
                 (const char *)sqlite3_column_text(st, 1));
        r->expires_ms = sqlite3_column_int64(st, 2);
    }
    rc = *n == cap ? REFEX_OK : refex_db_err(step);
    refex_db_done(st, REFEX_OK);
    return rc;
}

int agent_store_outbox_envelope(agent_store *s, const char *message_id, agent_store_envelope_fn fn,
                                void *ctx)
{
    sqlite3_stmt *st = NULL;
    int rc = prepare(s, SQL_OUTBOX_ENVELOPE, message_id, NULL, &st);
    if (rc != REFEX_OK)
        return rc;
    int step = sqlite3_step(st);
    rc = step == SQLITE_ROW || step == SQLITE_DONE ? REFEX_OK : refex_db_err(step);
    if (step == SQLITE_ROW)
        fn(ctx, (const char *)sqlite3_column_text(st, 0), sqlite3_column_blob(st, 1),
           (size_t)sqlite3_column_bytes(st, 1));
    refex_db_done(st, REFEX_OK);
    return rc;
}

int agent_store_receipt_held(agent_store *s, const char *message_id, const char *recipient,
                             int *held)
{
    sqlite3_stmt *st = NULL;
    int rc = prepare(s, SQL_RECEIPT_HELD, message_id, recipient, &st);
    if (rc != REFEX_OK)
        return rc;
    int step = sqlite3_step(st);
    *held = step == SQLITE_ROW;
    rc = step == SQLITE_ROW ? REFEX_OK : refex_db_err(step);
    refex_db_done(st, REFEX_OK);
    return rc;
}

int agent_store_no_report_insert(agent_store *s, const char *message_id, const char *recipient,
                                 int64_t expires_ms, int64_t noted_ms, int *fresh)
{
    sqlite3_stmt *st = NULL;
    int rc = prepare(s, SQL_NO_REPORT_INSERT, message_id, recipient, &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_int64(st, 3, expires_ms);
    sqlite3_bind_int64(st, 4, noted_ms);
    return write_once(s, st, fresh);
}

int agent_store_no_report_json(agent_store *s, const char *message_id, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int step, rc;
    if (!(*out = json_array()))
        return REFEX_E_NOMEM;
    if ((rc = prepare(s, SQL_NO_REPORT_OF, message_id, NULL, &st)) != REFEX_OK)
        goto out;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(*out,
                              json_pack("{s:s, s:I, s:I}", "recipient", sqlite3_column_text(st, 0),
                                        "expires_ms", (json_int_t)sqlite3_column_int64(st, 1),
                                        "noted_ms", (json_int_t)sqlite3_column_int64(st, 2)));
    rc = refex_db_err(step);
out:
    refex_db_done(st, REFEX_OK);
    if (rc != REFEX_OK) {
        json_decref(*out); /* a partial list would misreport */
        *out = NULL;
    }
    return rc;
}

int agent_store_no_report_ids(agent_store *s, json_t **out)
{
    sqlite3_stmt *st = NULL;
    int step, rc;
    if (!(*out = json_object()))
        return REFEX_E_NOMEM;
    if ((rc = prepare(s, SQL_NO_REPORT_IDS, NULL, NULL, &st)) != REFEX_OK)
        goto out;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        json_object_set_new(*out, (const char *)sqlite3_column_text(st, 0), json_true());
    rc = refex_db_err(step);
out:
    refex_db_done(st, REFEX_OK);
    if (rc != REFEX_OK) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

/* ---- counts for metrics --------------------------------------------------------------- */

static int64_t count_of(agent_store *s, const char *sql, int *ok)
{
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    if (refex_db_cached(agent_store_db(s), sql, &st) != REFEX_OK) {
        *ok = 0;
        return 0;
    }
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        *ok = 0;
    sqlite3_reset(st);
    return v;
}

int agent_store_counts(agent_store *s, agent_store_counts_t *c)
{
    int ok = 1;
    c->outbox_pending = count_of(s, "SELECT count(*) FROM outbox WHERE state = 'pending'", &ok);
    /* open rows only (stored, not closed): closed ones are kept for ever, and those that
     * expired with no report are flagged elsewhere (outbox_expiry.c) */
    c->unreceipted = count_of(s,
                              "SELECT count(*) FROM outbox o WHERE state = 'stored' AND closed = 0"
                              " AND NOT EXISTS (SELECT 1 FROM receipts r"
                              " WHERE r.message_id = o.message_id)",
                              &ok);
    c->oldest_unreceipted_ms =
        count_of(s,
                 "SELECT coalesce(min(created_ms), 0) FROM outbox o WHERE state = 'stored' AND"
                 " closed = 0 AND NOT EXISTS (SELECT 1 FROM receipts r"
                 " WHERE r.message_id = o.message_id)",
                 &ok);
    c->inbox_unacked = count_of(s, "SELECT count(*) FROM inbox WHERE acked_at_ms IS NULL", &ok);
    uint64_t size = 0;
    if (refex_audit_tree_size(agent_store_db(s), &size) != REFEX_OK)
        ok = 0;
    c->audit_entries = (int64_t)size;
    return ok ? REFEX_OK : REFEX_E_DB;
}
