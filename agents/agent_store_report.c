/* The agent's storage for messages that expired with no report: the no_reports table (which
 * recipients of our stored messages sent neither a receipt nor a non-delivery report by the
 * message's expiry), closing outbox rows for which nothing more is awaited, and the queries
 * the expiry sweep and the status listings need. Part of the storage module; its statements
 * are prepared per call on agent_store_db() (they run about once a second, or when a user
 * asks), so the shared statement table stays untouched. Not the policy (when to sweep, what
 * to audit and log): that is agents/outbox_expiry.c. */
#include <stdio.h>
#include <string.h>

#include "agent_store.h"
#include "db.h"

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

/* Rows from before `closed` existed whose every receipt is in: closed at open, so the
 * outbox's open rows (what a WELCOME is checked against) are only those still awaited. */
static const char *CLOSE_RECEIPTED =
    "UPDATE outbox SET closed = 1 WHERE state = 'stored' AND closed = 0 AND"
    " (SELECT COUNT(*) FROM receipts r WHERE r.message_id = outbox.message_id"
    " AND instr(',' || outbox.recipients || ',', ',' || r.recipient || ',') > 0)"
    " >= " RECIPIENT_COUNT;

int agent_store_report_create(sqlite3 *db)
{
    int rc = refex_db_exec(db, NO_REPORTS_SCHEMA);
    return rc == REFEX_OK ? refex_db_exec(db, CLOSE_RECEIPTED) : rc;
}

/* Prepares sql on the store's handle with text ?1 (and ?2 if t2). */
static int prepare(agent_store *s, const char *sql, const char *t1, const char *t2,
                   sqlite3_stmt **st)
{
    int rc = refex_db_prepare(agent_store_db(s), sql, st);
    if (rc != REFEX_OK)
        return rc;
    if (t1)
        sqlite3_bind_text(*st, 1, t1, -1, SQLITE_STATIC);
    if (t2)
        sqlite3_bind_text(*st, 2, t2, -1, SQLITE_STATIC);
    return REFEX_OK;
}

/* Steps a one-shot write and finalizes it; *changed (if given): whether a row changed. */
static int write_once(agent_store *s, sqlite3_stmt *st, int *changed)
{
    int rc = refex_db_err(sqlite3_step(st));
    if (changed)
        *changed = rc == REFEX_OK && sqlite3_changes(agent_store_db(s)) > 0;
    sqlite3_finalize(st);
    return rc;
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
    sqlite3_finalize(st);
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
    sqlite3_finalize(st);
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
    sqlite3_finalize(st);
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
    sqlite3_finalize(st);
    if (rc != REFEX_OK) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}
