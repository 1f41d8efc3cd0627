/* The agent's listings for the control socket: inbox, outbox, one message's status,
 * referrals and information requests, as the JSON rows the replies carry. Part of the
 * storage module (it shares agent_store.c's statement table); the replies' framing is
 * control.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_store.h"
#include "agent_store_sql.h"
#include "body.h"
#include "db.h"

/* One inbox message: INBOX_COLUMNS, the body decoded. */
static json_t *inbox_row(sqlite3_stmt *st)
{
    int acked = sqlite3_column_type(st, 9) != SQLITE_NULL;
    json_t *o = json_pack(
        "{s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:b}", "cursor",
        (json_int_t)sqlite3_column_int64(st, 8), "sender", sqlite3_column_text(st, 0), "message_id",
        sqlite3_column_text(st, 1), "type", sqlite3_column_text(st, 2), "case_ref",
        sqlite3_column_text(st, 3), "created_ms", (json_int_t)sqlite3_column_int64(st, 4),
        "received_ms", (json_int_t)sqlite3_column_int64(st, 5), "envelope_hash",
        sqlite3_column_text(st, 6), "acked", acked);
    if (!o)
        return o;
    if (acked)
        json_object_set_new(o, "acked_at_ms", json_integer(sqlite3_column_int64(st, 9)));
    Refex__V1__Body *b = NULL;
    json_t *bj = NULL;
    int type = refex_message_type_parse((const char *)sqlite3_column_text(st, 2));
    int rc = refex_body_unpack(type, sqlite3_column_blob(st, 7),
                               (size_t)sqlite3_column_bytes(st, 7), &b);
    if (rc == REFEX_OK)
        rc = refex_body_to_json(b, &bj);
    if (rc == REFEX_OK)
        json_object_set_new(o, "body", bj);
    else /* stored and acknowledged, but not displayable as JSON: say so, never drop it */
        json_object_set_new(o, "body_error", json_string(refex_errname(rc)));
    if (b)
        refex__v1__body__free_unpacked(b, NULL);
    return o;
}

int agent_store_inbox_json(agent_store *s, const char *id, json_t **rows)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_INBOX_SHOW);
    int64_t last;
    int step;
    if (!id)
        return agent_store_inbox_page_json(s, 0, 0, 0, rows, &last);
    if (!(*rows = json_array()))
        return REFEX_E_NOMEM;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(*rows, inbox_row(st));
    return agent_store_done(st, refex_db_err(step));
}

int agent_store_inbox_senders(agent_store *s, const char *message_id, json_t **out)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_INBOX_SENDERS);
    int step;
    if (!(*out = json_array()))
        return REFEX_E_NOMEM;
    sqlite3_bind_text(st, 1, message_id, -1, SQLITE_STATIC);
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(*out, json_string((const char *)sqlite3_column_text(st, 0)));
    return agent_store_done(st, refex_db_err(step));
}

int agent_store_inbox_page_json(agent_store *s, int64_t after, int64_t limit, int unacked,
                                json_t **rows, int64_t *last)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_INBOX_PAGE);
    int step;
    *last = after;
    if (!(*rows = json_array()))
        return REFEX_E_NOMEM;
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int(st, 2, unacked != 0);
    sqlite3_bind_int64(st, 3, limit > 0 ? limit : -1);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        *last = sqlite3_column_int64(st, 8);
        json_array_append_new(*rows, inbox_row(st));
    }
    return agent_store_done(st, refex_db_err(step));
}

int agent_store_outbox_json(agent_store *s, json_t **rows)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_OUTBOX_LIST);
    int step;
    if (!(*rows = json_array()))
        return REFEX_E_NOMEM;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(
            *rows,
            json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:i, s:s, s:s}", "message_id",
                      sqlite3_column_text(st, 0), "recipients", sqlite3_column_text(st, 1), "type",
                      sqlite3_column_text(st, 2), "case_ref", sqlite3_column_text(st, 3),
                      "created_ms", (json_int_t)sqlite3_column_int64(st, 4), "state",
                      sqlite3_column_text(st, 5), "error_code", sqlite3_column_int(st, 6),
                      "error_detail", sqlite3_column_text(st, 7), "local_id",
                      sqlite3_column_text(st, 8)));
    return agent_store_done(st, refex_db_err(step));
}

static json_t *receipts_json(agent_store *s, const char *id)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_MESSAGE_RECEIPTS);
    int step;
    json_t *receipts = json_array();
    if (!receipts)
        return NULL;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(receipts, json_pack("{s:s, s:i, s:s, s:s, s:I}", "recipient",
                                                  sqlite3_column_text(st, 0), "code",
                                                  sqlite3_column_int(st, 1), "error",
                                                  refex_errname(sqlite3_column_int(st, 1)),
                                                  "signer", sqlite3_column_text(st, 2), "time_ms",
                                                  (json_int_t)sqlite3_column_int64(st, 3)));
    if (agent_store_done(st, refex_db_err(step)) != REFEX_OK) {
        json_decref(receipts); /* a partial list would misreport delivery */
        return NULL;
    }
    return receipts;
}

/* Is id shaped like a message id (32 lower-case hex digits)? */
static int is_message_id(const char *id)
{
    return strlen(id) == 32 && strspn(id, "0123456789abcdef") == 32;
}

/* The outbox row that `which` finds for key, as the reply; NULL if none. Its message id
 * into mid. */
static json_t *status_row(agent_store *s, int which, const char *key, char mid[33])
{
    sqlite3_stmt *st = agent_store_stmt(s, which);
    json_t *r = NULL;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(mid, 33, "%s", (const char *)sqlite3_column_text(st, 0));
        r = json_pack("{s:b, s:s, s:s, s:s, s:s, s:I, s:s, s:i, s:s, s:s}", "ok", 1, "message_id",
                      mid, "recipients", sqlite3_column_text(st, 1), "type",
                      sqlite3_column_text(st, 2), "case_ref", sqlite3_column_text(st, 3),
                      "created_ms", (json_int_t)sqlite3_column_int64(st, 4), "state",
                      sqlite3_column_text(st, 5), "error_code", sqlite3_column_int(st, 6),
                      "error_detail", sqlite3_column_text(st, 7), "local_id",
                      sqlite3_column_text(st, 8));
    }
    agent_store_done(st, REFEX_OK);
    return r;
}

int agent_store_message_status_json(agent_store *s, const char *id, json_t **out)
{
    char mid[33] = "";
    json_t *r = NULL, *receipts;
    *out = NULL;
    if (is_message_id(id))
        r = status_row(s, S_MESSAGE_STATUS, id, mid);
    if (!r && *id)
        r = status_row(s, S_MESSAGE_STATUS_LOCAL, id, mid);
    if (!r)
        return REFEX_E_NOTFOUND;
    if (!(receipts = receipts_json(s, mid))) {
        json_decref(r);
        return REFEX_E_DB;
    }
    json_object_set_new(r, "receipts", receipts);
    /* Recipients that sent neither a receipt nor a non-delivery report by the expiry: the
     * broker may have lost the message (agent_store_report.c, outbox_expiry.c). */
    json_t *no_report = NULL;
    if (agent_store_no_report_json(s, mid, &no_report) != REFEX_OK) {
        json_decref(r);
        return REFEX_E_DB;
    }
    if (json_array_size(no_report) > 0)
        json_object_set_new(r, "state", json_string("expired_no_report"));
    json_object_set_new(r, "no_report", no_report);
    *out = r;
    return REFEX_OK;
}

/* One referral and where it stands; no_report: the ids of messages that expired with no
 * report from some recipient (agent_store_no_report_ids). */
static json_t *referral_row(sqlite3_stmt *st, const json_t *no_report)
{
    const char *state = (const char *)sqlite3_column_text(st, 4);
    const char *decision = (const char *)sqlite3_column_text(st, 10);
    int has_receipt = sqlite3_column_type(st, 7) != SQLITE_NULL;
    int code = sqlite3_column_int(st, 7);
    int lost = json_object_get(no_report, (const char *)sqlite3_column_text(st, 0)) != NULL;
    const char *status = strcmp(state, "rejected") == 0 ? "rejected by the broker"
                         : decision && strcmp(decision, "DECISION_ACCEPTED") == 0 ? "accepted"
                         : decision && strcmp(decision, "DECISION_DECLINED") == 0 ? "declined"
                         : decision && strcmp(decision, "DECISION_MORE_INFORMATION") == 0
                             ? "more information needed"
                         : lost                                   ? "expired, no report"
                         : has_receipt && code == REFEX_E_EXPIRED ? "not delivered (expired)"
                         : has_receipt && code != 0               ? "refused by the recipient"
                         : has_receipt                            ? "received, awaiting decision"
                         : strcmp(state, "stored") == 0           ? "stored at the broker"
                                                                  : "queued locally";
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "message_id", sqlite3_column_text(st, 0),
                  "recipients", sqlite3_column_text(st, 1), "case_ref", sqlite3_column_text(st, 2),
                  "created_ms", (json_int_t)sqlite3_column_int64(st, 3), "conversation_id",
                  sqlite3_column_text(st, 6), "status", status);
    if (o && decision) {
        Refex__V1__Body *b = NULL;
        json_object_set_new(o, "decision_message_id",
                            json_string((const char *)sqlite3_column_text(st, 8)));
        json_object_set_new(o, "decided_by", json_string((const char *)sqlite3_column_text(st, 9)));
        json_object_set_new(o, "decision_case_ref",
                            json_string((const char *)sqlite3_column_text(st, 11)));
        json_object_set_new(o, "decided_ms", json_integer(sqlite3_column_int64(st, 13)));
        if (refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION,
                              sqlite3_column_blob(st, 12), (size_t)sqlite3_column_bytes(st, 12),
                              &b) == REFEX_OK) {
            json_object_set_new(o, "case_ref_assigned",
                                json_string(b->referral_decision->case_ref));
            json_object_set_new(o, "reason", json_string(b->referral_decision->reason));
            refex__v1__body__free_unpacked(b, NULL);
        }
    }
    return o;
}

int agent_store_referrals_json(agent_store *s, json_t **rows)
{
    sqlite3_stmt *st;
    json_t *no_report = NULL;
    int step, rc = agent_store_no_report_ids(s, &no_report);
    if (rc != REFEX_OK)
        return rc;
    if (!(*rows = json_array())) {
        json_decref(no_report);
        return REFEX_E_NOMEM;
    }
    st = agent_store_stmt(s, S_REFERRALS);
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(*rows, referral_row(st, no_report));
    json_decref(no_report);
    return agent_store_done(st, refex_db_err(step));
}

/* One information request and where it stands; NULL if filtered out. */
static json_t *request_row(sqlite3_stmt *st, int only_overdue)
{
    int overdue = sqlite3_column_int(st, 9);
    const char *answer = (const char *)sqlite3_column_text(st, 6);
    if (only_overdue && !overdue)
        return NULL;
    const char *status = overdue  ? "overdue"
                         : answer ? (strcmp(answer, "DECLINED") == 0 ? "declined" : "answered")
                                  : "open";
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "message_id", sqlite3_column_text(st, 0),
        "recipients", sqlite3_column_text(st, 1), "case_ref", sqlite3_column_text(st, 2),
        "created_ms", (json_int_t)sqlite3_column_int64(st, 3), "request_id",
        sqlite3_column_text(st, 4), "due_date", sqlite3_column_text(st, 5), "status", status);
    if (o && answer)
        json_object_set_new(o, "response_message_id",
                            json_string((const char *)sqlite3_column_text(st, 7)));
    return o;
}

int agent_store_requests_json(agent_store *s, int only_overdue, json_t **rows)
{
    sqlite3_stmt *st = agent_store_stmt(s, S_REQUESTS);
    int step;
    if (!(*rows = json_array()))
        return REFEX_E_NOMEM;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = request_row(st, only_overdue);
        if (o)
            json_array_append_new(*rows, o);
    }
    return agent_store_done(st, refex_db_err(step));
}
