/* The control socket: reads a local client's JSON request and dispatches it by name;
 * also the read-only queries (inbox, outbox, status, referrals, requests). Not the work
 * of sending or of cases (outbox.c, cases.c). */
#include "agent.h"

#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "audit.h"
#include "log.h"

json_t *control_error(int code, const char *detail)
{
    return json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "code", code, "error", refex_errname(code),
                     "detail", detail && *detail ? detail : refex_strerror(code));
}

/* ---- commands -------------------------------------------------------------------- */

static void inbox_query(agent *a, const uint8_t *rid, size_t rid_len, json_t *req, int show)
{
    const char *id = json_string_value(json_object_get(req, "id"));
    json_t *rows = NULL;
    int rc = agent_store_inbox_json(a->store, show ? (id ? id : "") : NULL, &rows);
    if (rc != REFEX_OK) {
        json_decref(rows);
        batch_reply(a, rid, rid_len, control_error(rc, NULL));
        return;
    }
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

/* A listing's reply: {"ok": true, key: rows}, or a database error. */
static void reply_rows(agent *a, const uint8_t *rid, size_t rid_len, int rc, const char *key,
                       json_t *rows)
{
    if (rc != REFEX_OK) {
        json_decref(rows);
        batch_reply(a, rid, rid_len, control_error(REFEX_E_DB, NULL));
        return;
    }
    batch_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, key, rows));
}

static void cmd_outbox(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    json_t *rows = NULL;
    (void)req;
    int rc = agent_store_outbox_json(a->store, &rows);
    reply_rows(a, rid, rid_len, rc, "messages", rows);
}

/* Where one of our messages is: queued here, stored at the broker, rejected, and what
 * each recipient's receipt (or the broker's non-delivery report) says. The id is its
 * message id or the local id the caller sent it under (a message id is tried first). */
static void cmd_message_status(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    const char *id = json_string_value(json_object_get(req, "id"));
    json_t *r = NULL;
    if (!id) {
        batch_reply(a, rid, rid_len,
                    control_error(REFEX_E_INVAL, "give a message id or a local id"));
        return;
    }
    int rc = agent_store_message_status_json(a->store, id, &r);
    if (rc == REFEX_E_NOTFOUND)
        batch_reply(a, rid, rid_len,
                    control_error(REFEX_E_NOTFOUND,
                                  "no message with this id or local id was sent from here"));
    else if (rc != REFEX_OK)
        batch_reply(a, rid, rid_len, control_error(rc, NULL));
    else
        batch_reply(a, rid, rid_len, r);
}

/* The referrals this agency made, each with where it stands: queued, stored, received by
 * the recipient (its receipt), and the recipient's decision if one came back (a
 * ReferralDecision whose referral_message_id names the referral). */
static void cmd_referrals(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    json_t *rows = NULL;
    (void)req;
    int rc = agent_store_referrals_json(a->store, &rows);
    reply_rows(a, rid, rid_len, rc, "referrals", rows);
}

/* Information requests this agency sent: answered, declined (a response that declines is
 * still a response), open, or overdue (past the due date with no response). */
static void cmd_requests(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    json_t *rows = NULL;
    int only_overdue = json_is_true(json_object_get(req, "overdue"));
    int rc = agent_store_requests_json(a->store, only_overdue, &rows);
    reply_rows(a, rid, rid_len, rc, "requests", rows);
}

static void cmd_audit(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    json_t *rows = NULL;
    json_int_t after = json_integer_value(json_object_get(req, "after"));
    json_int_t limit = json_integer_value(json_object_get(req, "limit"));
    int rc = refex_audit_list_json(agent_store_db(a->store), after, limit, &rows);
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
    if (!control_guard_admit(a, &part[2], zmq_msg_data(&part[0]), zmq_msg_size(&part[0])))
        goto out;
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
