/* The control socket: reads a local client's JSON request and dispatches it by name;
 * also the read-only queries (inbox, outbox, status, referrals, requests). Not the work
 * of sending or of cases (outbox.c, cases.c). */
#include "agent.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "audit.h"
#include "audit_tree.h"
#include "body.h"
#include "checkpoint.h"
#include "codec.h"
#include "db.h"
#include "directory.h"
#include "envelope.h"
#include "grant.h"
#include "keys.h"
#include "link.h"
#include "log.h"
#include "receipt.h"
#include "util.h"

json_t *control_error(int code, const char *detail)
{
    return json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "code", code, "error", refex_errname(code),
                     "detail", detail && *detail ? detail : refex_strerror(code));
}

/* ---- control socket ---------------------------------------------------------------- */

static json_t *inbox_row(sqlite3_stmt *st)
{
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "sender", sqlite3_column_text(st, 0), "message_id",
        sqlite3_column_text(st, 1), "type", sqlite3_column_text(st, 2), "case_ref",
        sqlite3_column_text(st, 3), "created_ms", (json_int_t)sqlite3_column_int64(st, 4),
        "received_ms", (json_int_t)sqlite3_column_int64(st, 5), "envelope_hash",
        sqlite3_column_text(st, 6));
    if (!o)
        return o;
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

static void inbox_query(agent *a, const uint8_t *rid, size_t rid_len, json_t *req, int show)
{
    sqlite3_stmt *st = NULL;
    const char *id = json_string_value(json_object_get(req, "id"));
    json_t *rows = json_array();
    int rc = refex_db_prepare(a->db,
                              show ? "SELECT sender, message_id, type, case_ref, created_ms,"
                                     " received_ms, envelope_hash, body FROM inbox"
                                     " WHERE message_id = ?"
                                   : "SELECT sender, message_id, type, case_ref, created_ms,"
                                     " received_ms, envelope_hash, body FROM inbox"
                                     " ORDER BY received_ms, rowid",
                              &st);
    if (rc != REFEX_OK || !rows) {
        json_decref(rows);
        batch_reply(a, rid, rid_len, control_error(rc ? rc : REFEX_E_NOMEM, NULL));
        return;
    }
    if (show)
        sqlite3_bind_text(st, 1, id ? id : "", -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(rows, inbox_row(st));
    sqlite3_finalize(st);
    if (show && json_array_size(rows) == 0) {
        json_decref(rows);
        batch_reply(a, rid, rid_len, control_error(REFEX_E_NOTFOUND, "no such message"));
        return;
    }
    batch_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "messages", rows));
}

static void cmd_inbox_list(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    inbox_query(a, rid, rid_len, req, 0);
}

static void cmd_inbox_show(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    inbox_query(a, rid, rid_len, req, 1);
}

static void cmd_outbox(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    (void)req;
    sqlite3_stmt *st = NULL;
    json_t *rows = json_array();
    if (!rows || refex_db_prepare(a->db,
                                  "SELECT message_id, recipients, type, case_ref, created_ms,"
                                  " state, error_code, error_detail FROM outbox"
                                  " ORDER BY created_ms",
                                  &st) != REFEX_OK) {
        json_decref(rows);
        batch_reply(a, rid, rid_len, control_error(REFEX_E_DB, NULL));
        return;
    }
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(
            rows,
            json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:i, s:s}", "message_id",
                      sqlite3_column_text(st, 0), "recipients", sqlite3_column_text(st, 1), "type",
                      sqlite3_column_text(st, 2), "case_ref", sqlite3_column_text(st, 3),
                      "created_ms", (json_int_t)sqlite3_column_int64(st, 4), "state",
                      sqlite3_column_text(st, 5), "error_code", sqlite3_column_int(st, 6),
                      "error_detail", sqlite3_column_text(st, 7)));
    sqlite3_finalize(st);
    batch_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "messages", rows));
}

/* Where one of our messages is: queued here, stored at the broker, rejected, and what
 * each recipient's receipt (or the broker's non-delivery report) says. */
static void cmd_message_status(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    const char *id = json_string_value(json_object_get(req, "id"));
    sqlite3_stmt *st = NULL;
    json_t *r = NULL, *receipts = NULL;
    if (!id || refex_db_prepare(a->db,
                                "SELECT recipients, type, case_ref, created_ms, state, error_code,"
                                " error_detail FROM outbox WHERE message_id = ?",
                                &st) != REFEX_OK) {
        batch_reply(a, rid, rid_len, control_error(REFEX_E_INVAL, "give a message id"));
        return;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        r = json_pack("{s:b, s:s, s:s, s:s, s:s, s:I, s:s, s:i, s:s}", "ok", 1, "message_id", id,
                      "recipients", sqlite3_column_text(st, 0), "type", sqlite3_column_text(st, 1),
                      "case_ref", sqlite3_column_text(st, 2), "created_ms",
                      (json_int_t)sqlite3_column_int64(st, 3), "state", sqlite3_column_text(st, 4),
                      "error_code", sqlite3_column_int(st, 5), "error_detail",
                      sqlite3_column_text(st, 6));
    sqlite3_finalize(st);
    if (!r) {
        batch_reply(a, rid, rid_len,
                    control_error(REFEX_E_NOTFOUND, "no message with this id was sent from here"));
        return;
    }
    receipts = json_array();
    if (receipts && refex_db_prepare(a->db,
                                     "SELECT recipient, code, signer, time_ms FROM receipts"
                                     " WHERE message_id = ? ORDER BY recipient",
                                     &st) == REFEX_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW)
            json_array_append_new(
                receipts, json_pack("{s:s, s:i, s:s, s:s, s:I}", "recipient",
                                    sqlite3_column_text(st, 0), "code", sqlite3_column_int(st, 1),
                                    "error", refex_errname(sqlite3_column_int(st, 1)), "signer",
                                    sqlite3_column_text(st, 2), "time_ms",
                                    (json_int_t)sqlite3_column_int64(st, 3)));
        sqlite3_finalize(st);
    }
    json_object_set_new(r, "receipts", receipts ? receipts : json_array());
    batch_reply(a, rid, rid_len, r);
}

/* The referrals this agency made, each with where it stands: queued, stored, received by
 * the recipient (its receipt), and the recipient's decision if one came back (a
 * ReferralDecision whose referral_message_id names the referral). */
static void cmd_referrals(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    (void)req;
    static const char *SQL =
        "SELECT o.message_id, o.recipients, o.case_ref, o.created_ms, o.state, o.error_code,"
        " o.conversation_id,"
        " (SELECT code FROM receipts r WHERE r.message_id = o.message_id ORDER BY code DESC"
        "  LIMIT 1),"
        " d.message_id, d.sender, d.decision, d.case_ref, d.body, d.received_ms"
        " FROM outbox o LEFT JOIN inbox d ON d.rowid = (SELECT rowid FROM inbox i"
        "  WHERE i.reply_to = o.message_id AND i.type = 'REFERRAL_DECISION'"
        "  ORDER BY i.received_ms DESC LIMIT 1)"
        " WHERE o.type = 'REFERRAL' ORDER BY o.created_ms";
    sqlite3_stmt *st = NULL;
    json_t *rows = json_array();
    if (!rows || refex_db_prepare(a->db, SQL, &st) != REFEX_OK) {
        json_decref(rows);
        batch_reply(a, rid, rid_len, control_error(REFEX_E_DB, NULL));
        return;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(st, 4);
        const char *decision = (const char *)sqlite3_column_text(st, 10);
        int has_receipt = sqlite3_column_type(st, 7) != SQLITE_NULL;
        int code = sqlite3_column_int(st, 7);
        const char *status = strcmp(state, "rejected") == 0 ? "rejected by the broker"
                             : decision && strcmp(decision, "DECISION_ACCEPTED") == 0 ? "accepted"
                             : decision && strcmp(decision, "DECISION_DECLINED") == 0 ? "declined"
                             : decision && strcmp(decision, "DECISION_MORE_INFORMATION") == 0
                                 ? "more information needed"
                             : has_receipt && code == REFEX_E_EXPIRED ? "not delivered (expired)"
                             : has_receipt && code != 0               ? "refused by the recipient"
                             : has_receipt                  ? "received, awaiting decision"
                             : strcmp(state, "stored") == 0 ? "stored at the broker"
                                                            : "queued locally";
        json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "message_id",
                              sqlite3_column_text(st, 0), "recipients", sqlite3_column_text(st, 1),
                              "case_ref", sqlite3_column_text(st, 2), "created_ms",
                              (json_int_t)sqlite3_column_int64(st, 3), "conversation_id",
                              sqlite3_column_text(st, 6), "status", status);
        if (o && decision) {
            Refex__V1__Body *b = NULL;
            json_object_set_new(o, "decision_message_id",
                                json_string((const char *)sqlite3_column_text(st, 8)));
            json_object_set_new(o, "decided_by",
                                json_string((const char *)sqlite3_column_text(st, 9)));
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
        json_array_append_new(rows, o);
    }
    sqlite3_finalize(st);
    batch_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "referrals", rows));
}

/* Information requests this agency sent: answered, declined (a response that declines is
 * still a response), open, or overdue (past the due date with no response). */
static void cmd_requests(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    static const char *SQL =
        "SELECT o.message_id, o.recipients, o.case_ref, o.created_ms, o.request_id,"
        " o.due_date, r.decision, r.message_id, r.received_ms,"
        " o.due_date <> '' AND o.due_date < date('now') AND r.message_id IS NULL"
        " FROM outbox o LEFT JOIN inbox r ON r.rowid = (SELECT rowid FROM inbox i"
        "  WHERE i.reply_to = o.request_id AND i.type = 'INFORMATION_RESPONSE'"
        "  AND o.request_id <> '' ORDER BY i.received_ms LIMIT 1)"
        " WHERE o.type = 'INFORMATION_REQUEST' ORDER BY o.due_date, o.created_ms";
    int only_overdue = json_is_true(json_object_get(req, "overdue"));
    sqlite3_stmt *st = NULL;
    json_t *rows = json_array();
    if (!rows || refex_db_prepare(a->db, SQL, &st) != REFEX_OK) {
        json_decref(rows);
        batch_reply(a, rid, rid_len, control_error(REFEX_E_DB, NULL));
        return;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        int overdue = sqlite3_column_int(st, 9);
        const char *answer = (const char *)sqlite3_column_text(st, 6);
        if (only_overdue && !overdue)
            continue;
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
        json_array_append_new(rows, o);
    }
    sqlite3_finalize(st);
    batch_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "requests", rows));
}

/* The lead grants (or revokes) case membership: sign, keep, and hand to the broker. */
static void cmd_audit(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    json_t *rows = NULL;
    json_int_t after = json_integer_value(json_object_get(req, "after"));
    json_int_t limit = json_integer_value(json_object_get(req, "limit"));
    int rc = refex_audit_list_json(a->db, after, limit, &rows);
    if (rc == REFEX_OK)
        rc = journal_used(a, "list");
    if (rc != REFEX_OK) {
        json_decref(rows);
        batch_reply(a, rid, rid_len, control_error(rc, NULL));
        return;
    }
    batch_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "entries", rows));
}

static void cmd_audit_used(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    const char *what = json_string_value(json_object_get(req, "what"));
    static const char *const allowed[] = {"query", "export", "proof", "verify", "reconcile", NULL};
    int ok = 0;
    for (int i = 0; what && allowed[i]; i++)
        ok |= strcmp(what, allowed[i]) == 0;
    if (!ok) {
        batch_reply(a, rid, rid_len, control_error(REFEX_E_INVAL, "unknown audit use"));
        return;
    }
    int rc = journal_used(a, what);
    batch_reply(a, rid, rid_len,
                rc == REFEX_OK ? json_pack("{s:b}", "ok", 1) : control_error(rc, NULL));
}

static void cmd_status(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    (void)req;
    batch_reply(a, rid, rid_len,
                json_pack("{s:b, s:s, s:b, s:s}", "ok", 1, "agency", a->agency, "online", a->online,
                          "broker", a->broker_ep));
}

/* Every control command, by the name a client puts in "cmd". */
static const struct command {
    const char *name;
    agent_cmd_fn fn;
} COMMANDS[] = {
    {"send", outbox_cmd_send},
    {"inbox_list", cmd_inbox_list},
    {"inbox_show", cmd_inbox_show},
    {"outbox_list", cmd_outbox},
    {"message_status", cmd_message_status},
    {"grant", cases_cmd_grant},
    {"members", cases_cmd_members},
    {"subscribe", cases_cmd_subscribe},
    {"referrals", cmd_referrals},
    {"requests", cmd_requests},
    {"audit_used", cmd_audit_used},
    {"audit_list", cmd_audit},
    {"status", cmd_status},
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (strcmp(COMMANDS[i].name, name) == 0)
            return &COMMANDS[i];
    return NULL;
}

void control_readable(agent *a)
{
    zmq_msg_t part[3];
    int n = 0, more = 1;
    while (more && n < 3) {
        zmq_msg_init(&part[n]);
        if (zmq_msg_recv(&part[n], a->control, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part[n]);
            break;
        }
        more = zmq_msg_more(&part[n]);
        n++;
    }
    while (more) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        more = zmq_msg_recv(&extra, a->control, 0) >= 0 && zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
    if (n != 3 || zmq_msg_size(&part[1]) != 0 || zmq_msg_size(&part[0]) > RID_MAX) {
        refex_log_warn("control: malformed request ignored");
        goto out;
    }
    const uint8_t *rid = zmq_msg_data(&part[0]);
    size_t rid_len = zmq_msg_size(&part[0]);
    json_error_t jerr;
    json_t *req = json_loadb(zmq_msg_data(&part[2]), zmq_msg_size(&part[2]), 0, &jerr);
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    const struct command *c = cmd ? find_command(cmd) : NULL;
    if (!req || !cmd)
        batch_reply(a, rid, rid_len,
                    control_error(REFEX_E_JSON, "request must be a JSON object with a 'cmd'"));
    else if (!c)
        batch_reply(a, rid, rid_len, control_error(REFEX_E_INVAL, "unknown command"));
    else
        c->fn(a, rid, rid_len, req);
    json_decref(req);
out:
    for (int i = 0; i < n; i++)
        zmq_msg_close(&part[i]);
}
