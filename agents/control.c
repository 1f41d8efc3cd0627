/* The control socket: reads a local client's JSON request and dispatches it by name;
 * also the queries (inbox, outbox, status, referrals, requests) and the inbox's
 * consumption (list by cursor, ack, wait: their work is in inbox.c and inbox_wait.c). Not
 * the work of sending or of cases (outbox.c, cases.c). */
#include "agent.h"

#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "audit.h"
#include "log.h"
#include "util.h"

json_t *control_error(int code, const char *detail)
{
    return json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "code", code, "error", refex_errname(code),
                     "detail", detail && *detail ? detail : refex_strerror(code));
}

/* ---- commands -------------------------------------------------------------------- */

/* A refusal naming the request field it is about. */
static void reply_field_error(agent *a, const uint8_t *rid, size_t rid_len, const char *field,
                              const char *detail)
{
    json_t *e = control_error(REFEX_E_INVAL, detail);
    json_object_set_new(e, "field", json_string(field));
    batch_reply(a, rid, rid_len, e);
}

/* req[key], an optional whole number in [0, max] (def when absent), into *out; false after
 * replying E_INVAL naming the field. */
static int count_field(agent *a, const uint8_t *rid, size_t rid_len, json_t *req, const char *key,
                       json_int_t max, int64_t def, int64_t *out)
{
    char detail[128];
    json_t *v = json_object_get(req, key);
    *out = def;
    if (!v)
        return 1;
    if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= max) {
        *out = json_integer_value(v);
        return 1;
    }
    snprintf(detail, sizeof detail, "%s must be a whole number from 0 to %lld", key,
             (long long)max);
    reply_field_error(a, rid, rid_len, key, detail);
    return 0;
}

/* The after and limit of an inbox page; false after replying E_INVAL. */
static int page_fields(agent *a, const uint8_t *rid, size_t rid_len, json_t *req, int64_t *after,
                       int64_t *limit)
{
    return count_field(a, rid, rid_len, req, "after", INT64_MAX, 0, after) &&
           count_field(a, rid, rid_len, req, "limit", INT64_MAX, 0, limit);
}

/* The inbox by cursor: after, limit (0: all), unacked; the reply's cursor is the last
 * entry's, or after, so a consumer always continues from it. */
static void cmd_inbox_list(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    int64_t after, limit;
    json_t *unacked = json_object_get(req, "unacked"), *reply = NULL;
    if (!page_fields(a, rid, rid_len, req, &after, &limit))
        return;
    if (unacked && !json_is_boolean(unacked)) {
        reply_field_error(a, rid, rid_len, "unacked", "unacked must be true or false");
        return;
    }
    int rc = inbox_page(a, after, limit, json_is_true(unacked), &reply);
    batch_reply(a, rid, rid_len, rc == REFEX_OK ? reply : control_error(rc, NULL));
}

/* Is id shaped like a message id (32 lower-case hex digits)? */
static int is_message_id(const char *id)
{
    return id && strlen(id) == 32 && strspn(id, "0123456789abcdef") == 32;
}

/* req's optional "from", the sender of the message asked for, into *from (NULL if
 * absent); false after replying E_INVAL when it is not an agency id. */
static int from_field(agent *a, const uint8_t *rid, size_t rid_len, json_t *req, const char **from)
{
    json_t *v = json_object_get(req, "from");
    *from = json_string_value(v);
    if (!v || json_is_null(v) || (*from && refex_id_valid(*from)))
        return 1;
    reply_field_error(a, rid, rid_len, "from", "give the sender's agency id");
    return 0;
}

/* Message ids are unique per sender only: an id two senders used needs "from". NULL when
 * id names one message (or none: inbox_ack says so), else the refusal to reply with. */
static json_t *sender_ambiguity(agent *a, const char *id, const char *from)
{
    json_t *senders = NULL;
    if (from)
        return NULL;
    int rc = agent_store_inbox_senders(a->store, id, &senders);
    if (rc != REFEX_OK || json_array_size(senders) < 2) {
        json_decref(senders);
        return rc == REFEX_OK ? NULL : control_error(rc, NULL);
    }
    json_t *e = control_error(REFEX_E_INVAL, "more than one sender used this message id: give "
                                             "\"from\", the sender whose message it is");
    json_object_set_new(e, "field", json_string("from"));
    json_object_set_new(e, "valid", senders);
    return e;
}

/* The receiving system has taken the message into its own records: audited the first
 * time, "already" after that; the message stays in the inbox. */
static void cmd_inbox_ack(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    const char *id = json_string_value(json_object_get(req, "id")), *from = NULL;
    int64_t acked_at = 0;
    int already = 0;
    if (!is_message_id(id)) {
        reply_field_error(a, rid, rid_len, "id", "give the message id: 32 lower-case hex digits");
        return;
    }
    if (!from_field(a, rid, rid_len, req, &from))
        return;
    json_t *refusal = sender_ambiguity(a, id, from);
    if (refusal) {
        batch_reply(a, rid, rid_len, refusal);
        return;
    }
    int rc = inbox_ack(a, id, from, &acked_at, &already);
    if (rc == REFEX_E_NOTFOUND) {
        batch_reply(a, rid, rid_len, control_error(rc, "no message with this id in the inbox"));
        return;
    }
    if (rc != REFEX_OK) {
        batch_reply(a, rid, rid_len, control_error(rc, NULL));
        return;
    }
    if (!already)
        refex_log_info("inbox: %s acknowledged", id);
    batch_reply(a, rid, rid_len,
                json_pack("{s:b, s:s, s:I, s:b}", "ok", 1, "id", id, "acked_at_ms",
                          (json_int_t)acked_at, "already", already));
}

/* One message, decrypted, by id (and by sender, "from", when two senders used the id). */
static void cmd_inbox_show(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    const char *id = json_string_value(json_object_get(req, "id")), *from = NULL;
    json_t *rows = NULL, *m;
    size_t i;
    if (!from_field(a, rid, rid_len, req, &from))
        return;
    json_t *refusal = id ? sender_ambiguity(a, id, from) : NULL;
    if (refusal) {
        batch_reply(a, rid, rid_len, refusal);
        return;
    }
    int rc = agent_store_inbox_json(a->store, id ? id : "", &rows);
    if (rc != REFEX_OK) {
        json_decref(rows);
        batch_reply(a, rid, rid_len, control_error(rc, NULL));
        return;
    }
    json_array_foreach(rows, i, m)
    {
        const char *sender = json_string_value(json_object_get(m, "sender"));
        if (from && (!sender || strcmp(sender, from) != 0))
            json_array_remove(rows, i--);
    }
    if (json_array_size(rows) == 0) {
        json_decref(rows);
        batch_reply(a, rid, rid_len, control_error(REFEX_E_NOTFOUND, "no such message"));
        return;
    }
    batch_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "messages", rows));
}

/* The long poll: a page at once if there is one, else the client is held until a
 * delivery above its cursor commits or timeout_ms passes (then an empty page). */
static void cmd_inbox_wait(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    int64_t after, limit, timeout;
    json_t *reply = NULL;
    if (!page_fields(a, rid, rid_len, req, &after, &limit) ||
        !count_field(a, rid, rid_len, req, "timeout_ms", INBOX_WAIT_MAX_MS, WAIT_DEADLINE,
                     &timeout))
        return;
    if (timeout == 0) {
        reply_field_error(a, rid, rid_len, "timeout_ms", "timeout_ms must be more than 0");
        return;
    }
    int rc = inbox_page(a, after, limit, 0, &reply);
    if (rc == REFEX_OK && json_array_size(json_object_get(reply, "messages")) > 0) {
        batch_reply(a, rid, rid_len, reply);
        return;
    }
    json_decref(reply);
    if (rc == REFEX_OK)
        rc = inbox_wait_hold(a, rid, rid_len, after, limit, (int)timeout);
    if (rc == REFEX_E_BUSY) {
        refex_log_warn("inbox wait: %d clients held already; one more refused", MAX_INBOX_WAITERS);
        batch_reply(a, rid, rid_len,
                    control_error(rc, "too many inbox waiters are held; try again later"));
    } else if (rc != REFEX_OK) {
        batch_reply(a, rid, rid_len, control_error(rc, NULL));
    }
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
    {"send", outbox_cmd_send},          {"send_batch", outbox_cmd_send_batch},
    {"inbox_list", cmd_inbox_list},     {"inbox_show", cmd_inbox_show},
    {"inbox_ack", cmd_inbox_ack},       {"inbox_wait", cmd_inbox_wait},
    {"outbox_list", cmd_outbox},        {"message_status", cmd_message_status},
    {"grant", cases_cmd_grant},         {"members", cases_cmd_members},
    {"subscribe", cases_cmd_subscribe}, {"referrals", cmd_referrals},
    {"requests", cmd_requests},         {"audit_used", cmd_audit_used},
    {"audit_list", cmd_audit},          {"status", cmd_status},
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
