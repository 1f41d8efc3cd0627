/* The commands of librefex-client: each typed call builds one control request (the fields
 * are those of "Control protocol" in docs/protocol.md) and hands it to client.c. A body
 * given as a serialized protobuf Body is turned into its JSON form here, so the control
 * protocol stays JSON. No command logic lives here: the agent decides. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "body.h"
#include "client_priv.h"
#include "refex/client.h"
#include "util.h"

/* A JSON array of n strings; NULL for no memory, or a NULL list or entry (n > 0). */
static json_t *string_array(const char *const *v, size_t n)
{
    if (n && !v)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        if (!v[i] || json_array_append_new(a, json_string(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* The message's body as the agent takes it: a JSON object under "body" from body_json, or
 * the protobuf bytes as base64 under "body_pb", checked here against the type first so a
 * wrong body fails before anything is sent. */
static int body_of(refex_client *c, const refex_client_message *m, const char **key, json_t **out)
{
    json_error_t jerr;
    Refex__V1__Body *b = NULL;
    *out = NULL;
    if (!m->body_json == !m->body_pb)
        return refex_client_fail(c, REFEX_E_INVAL, "give the body as JSON or as protobuf, once");
    if (m->body_json) {
        *key = "body";
        *out = json_loads(m->body_json, 0, &jerr);
        if (json_is_object(*out))
            return REFEX_OK;
        json_decref(*out);
        *out = NULL;
        return refex_client_fail(c, REFEX_E_JSON, "the body must be a JSON object: %s", jerr.text);
    }
    int type = refex_message_type_parse(m->type);
    if (!type)
        return refex_client_fail(c, REFEX_E_INVAL, "unknown message type");
    int rc = refex_body_unpack(type, m->body_pb, m->body_pb_len, &b);
    if (rc != REFEX_OK)
        return refex_client_fail(c, rc, "the protobuf body: %s", refex_strerror(rc));
    refex__v1__body__free_unpacked(b, NULL);
    char *b64 = malloc(REFEX_BASE64_LEN(m->body_pb_len));
    if (!b64)
        return refex_client_fail(c, REFEX_E_NOMEM, "%s", "");
    refex_base64_encode(b64, m->body_pb, m->body_pb_len);
    *key = "body_pb";
    *out = json_string(b64);
    free(b64);
    return *out ? REFEX_OK : refex_client_fail(c, REFEX_E_NOMEM, "%s", "");
}

/* The fields of one send (the "send" command's, without "cmd"); takes body, even on
 * failure. */
static json_t *send_fields(const refex_client_message *m, const char *body_key, json_t *body)
{
    json_t *req =
        json_pack("{s:s, s:o, s:b}", "type", m->type, body_key, body, "wait", m->wait != 0);
    if (!req)
        return NULL;
    int bad = 0;
    if (m->n_to) {
        json_t *to = string_array(m->to, m->n_to);
        bad |= !to || json_object_set_new(req, "to", to) != 0;
    }
    if (m->case_ref)
        bad |= json_object_set_new(req, "case", json_string(m->case_ref)) != 0;
    if (m->ttl_seconds)
        bad |= json_object_set_new(req, "ttl_seconds", json_integer(m->ttl_seconds)) != 0;
    if (m->local_id)
        bad |= json_object_set_new(req, "local_id", json_string(m->local_id)) != 0;
    if (bad) {
        json_decref(req);
        return NULL;
    }
    return req;
}

/* Checks what the client can check of one message and builds its fields. */
static int message_fields(refex_client *c, const refex_client_message *m, json_t **out)
{
    const char *key = NULL;
    json_t *body = NULL;
    *out = NULL;
    if (!m || !m->type || (m->n_to && !m->to))
        return refex_client_fail(c, REFEX_E_INVAL, "give a client and a message with a type");
    if (m->local_id && !refex_utf8_valid(m->local_id, strlen(m->local_id)))
        return refex_client_fail(c, REFEX_E_INVAL,
                                 "a local id is 1 to 64 printable ASCII characters, no spaces");
    int rc = body_of(c, m, &key, &body);
    if (rc != REFEX_OK)
        return rc;
    *out = send_fields(m, key, body);
    return *out ? REFEX_OK : refex_client_fail(c, REFEX_E_NOMEM, "%s", "");
}

/* The message id of a send reply, also of a refusal by the broker while waiting. */
static void reply_id(const char *text, char id[33])
{
    json_error_t jerr;
    json_t *r = text ? json_loads(text, 0, &jerr) : NULL;
    const char *s = json_string_value(json_object_get(r, "message_id"));
    if (s && strlen(s) == 32)
        memcpy(id, s, 33);
    json_decref(r);
}

int refex_client_send(refex_client *c, const refex_client_message *m, char id[33], char **reply)
{
    json_t *req = NULL;
    char *text = NULL;
    if (id)
        id[0] = '\0';
    if (reply)
        *reply = NULL;
    if (!c)
        return REFEX_E_INVAL;
    int rc = message_fields(c, m, &req);
    if (rc != REFEX_OK)
        return rc;
    if (json_object_set_new(req, "cmd", json_string("send")) != 0) {
        json_decref(req);
        return refex_client_fail(c, REFEX_E_NOMEM, "%s", "");
    }
    rc = refex_client_call(c, req, &text);
    if (id)
        reply_id(text, id);
    if (reply)
        *reply = text;
    else
        free(text);
    return rc;
}

/* Each result of a send_batch reply into ids[i] and codes[i]; E_MALFORMED if the reply
 * does not have one result per message. */
static int batch_results(refex_client *c, const char *text, size_t n, char (*ids)[33], int *codes)
{
    json_error_t jerr;
    json_t *r = text ? json_loads(text, 0, &jerr) : NULL;
    json_t *res = json_object_get(r, "results");
    int rc = REFEX_OK;
    if (json_array_size(res) != n)
        rc = refex_client_fail(c, REFEX_E_MALFORMED,
                               "the agent's reply has %zu results for %zu "
                               "messages",
                               json_array_size(res), n);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(res, i);
        const char *id = json_string_value(json_object_get(e, "message_id"));
        json_int_t code = json_integer_value(json_object_get(e, "code"));
        if (ids)
            snprintf(ids[i], 33, "%s", id && strlen(id) == 32 ? id : "");
        if (codes)
            codes[i] = json_is_true(json_object_get(e, "ok")) ? REFEX_OK
                       : code > 0                             ? (int)code
                                                              : REFEX_E_MALFORMED;
    }
    json_decref(r);
    return rc;
}

int refex_client_send_batch(refex_client *c, const refex_client_message *m, size_t n,
                            char (*ids)[33], int *codes, char **reply)
{
    char *text = NULL;
    if (reply)
        *reply = NULL;
    /* Until the agent says otherwise, no message has an id, and each has failed as the
     * whole call does (set again from the reply below). */
    for (size_t i = 0; i < n && i < REFEX_CLIENT_BATCH_MAX; i++) {
        if (ids)
            ids[i][0] = '\0';
        if (codes)
            codes[i] = REFEX_E_INVAL;
    }
    if (!c)
        return REFEX_E_INVAL;
    if (!m || n == 0 || n > REFEX_CLIENT_BATCH_MAX)
        return refex_client_fail(c, REFEX_E_INVAL, "give 1 to %d messages", REFEX_CLIENT_BATCH_MAX);
    json_t *msgs = json_array();
    for (size_t i = 0; msgs && i < n; i++) {
        json_t *f = NULL;
        if (m[i].wait) {
            json_decref(msgs);
            return refex_client_fail(c, REFEX_E_INVAL,
                                     "message %zu: wait is not allowed in a "
                                     "batch",
                                     i);
        }
        int rc = message_fields(c, &m[i], &f);
        if (rc != REFEX_OK) {
            json_decref(msgs);
            return rc;
        }
        json_object_del(f, "wait");
        json_array_append_new(msgs, f);
    }
    int rc = refex_client_call(c, json_pack("{s:s, s:o*}", "cmd", "send_batch", "messages", msgs),
                               &text);
    if (rc == REFEX_OK)
        rc = batch_results(c, text, n, ids, codes);
    else
        for (size_t i = 0; codes && i < n; i++)
            codes[i] = rc;
    if (reply)
        *reply = text;
    else
        free(text);
    return rc;
}

/* ---- queries ------------------------------------------------------------------------ */

int refex_client_status(refex_client *c, char **out)
{
    return refex_client_call(c, json_pack("{s:s}", "cmd", "status"), out);
}

static int with_id(refex_client *c, const char *cmd, const char *id, char **out)
{
    if (!id) {
        if (out)
            *out = NULL;
        return refex_client_fail(c, REFEX_E_INVAL, "give a message id");
    }
    return refex_client_call(c, json_pack("{s:s, s:s}", "cmd", cmd, "id", id), out);
}

int refex_client_message_status(refex_client *c, const char *message_id, char **out)
{
    return with_id(c, "message_status", message_id, out);
}

int refex_client_inbox_list(refex_client *c, char **out)
{
    return refex_client_call(c, json_pack("{s:s}", "cmd", "inbox_list"), out);
}

int refex_client_inbox_show(refex_client *c, const char *message_id, char **out)
{
    return with_id(c, "inbox_show", message_id, out);
}

int refex_client_inbox_show_from(refex_client *c, const char *message_id, const char *sender,
                                 char **out)
{
    if (!message_id || !sender) {
        if (out)
            *out = NULL;
        return refex_client_fail(c, REFEX_E_INVAL, "give a message id and its sender");
    }
    return refex_client_call(
        c, json_pack("{s:s, s:s, s:s}", "cmd", "inbox_show", "id", message_id, "from", sender),
        out);
}

int refex_client_inbox_query(refex_client *c, long long after, long long limit, int unacked,
                             char **out)
{
    return refex_client_call(c,
                             json_pack("{s:s, s:I, s:I, s:b}", "cmd", "inbox_list", "after",
                                       (json_int_t)after, "limit", (json_int_t)limit, "unacked",
                                       unacked != 0),
                             out);
}

int refex_client_inbox_ack(refex_client *c, const char *message_id, char **out)
{
    return with_id(c, "inbox_ack", message_id, out);
}

int refex_client_inbox_ack_from(refex_client *c, const char *message_id, const char *sender,
                                char **out)
{
    if (!message_id || !sender) {
        if (out)
            *out = NULL;
        return refex_client_fail(c, REFEX_E_INVAL, "give a message id and its sender");
    }
    return refex_client_call(
        c, json_pack("{s:s, s:s, s:s}", "cmd", "inbox_ack", "id", message_id, "from", sender), out);
}

int refex_client_inbox_wait(refex_client *c, long long after, int timeout_ms, char **out)
{
    return refex_client_call_long(c,
                                  json_pack("{s:s, s:I, s:i}", "cmd", "inbox_wait", "after",
                                            (json_int_t)after, "timeout_ms", timeout_ms),
                                  timeout_ms, out);
}

int refex_client_outbox_list(refex_client *c, char **out)
{
    return refex_client_call(c, json_pack("{s:s}", "cmd", "outbox_list"), out);
}

int refex_client_referrals(refex_client *c, char **out)
{
    return refex_client_call(c, json_pack("{s:s}", "cmd", "referrals"), out);
}

int refex_client_requests(refex_client *c, int overdue, char **out)
{
    return refex_client_call(c, json_pack("{s:s, s:b}", "cmd", "requests", "overdue", overdue != 0),
                             out);
}

int refex_client_audit_list(refex_client *c, long long after, long long limit, char **out)
{
    return refex_client_call(c,
                             json_pack("{s:s, s:I, s:I}", "cmd", "audit_list", "after",
                                       (json_int_t)after, "limit", (json_int_t)limit),
                             out);
}

/* ---- cases -------------------------------------------------------------------------- */

/* Adds key to *req (value stolen); on failure drops *req, which the call then reports as
 * out of memory. */
static void set_or_drop(json_t **req, const char *key, json_t *value)
{
    if (json_object_set_new(*req, key, value) != 0) { /* frees value, also for *req NULL */
        json_decref(*req);
        *req = NULL;
    }
}

static int need_case(refex_client *c, const char *case_ref, char **out)
{
    if (out)
        *out = NULL;
    return case_ref ? REFEX_OK : refex_client_fail(c, REFEX_E_INVAL, "give a case reference");
}

int refex_client_case_open(refex_client *c, const char *case_ref, char **out)
{
    int rc = need_case(c, case_ref, out);
    return rc ? rc
              : refex_client_call(
                    c, json_pack("{s:s, s:s, s:b}", "cmd", "grant", "case", case_ref, "open", 1),
                    out);
}

int refex_client_case_grant(refex_client *c, const char *case_ref, const char *member,
                            const char *const *types, size_t n_types, long long until_ms,
                            int revoke, char **out)
{
    int rc = need_case(c, case_ref, out);
    if (rc)
        return rc;
    if (!member)
        return refex_client_fail(c, REFEX_E_INVAL, "give a member");
    if (n_types && !types)
        return refex_client_fail(c, REFEX_E_INVAL, "n_types is %zu but types is NULL", n_types);
    json_t *req = json_pack("{s:s, s:s, s:s, s:b}", "cmd", "grant", "case", case_ref, "member",
                            member, "revoke", revoke != 0);
    if (n_types)
        set_or_drop(&req, "types", string_array(types, n_types));
    if (until_ms)
        set_or_drop(&req, "until_ms", json_integer(until_ms));
    return refex_client_call(c, req, out);
}

int refex_client_case_revoke(refex_client *c, const char *case_ref, const char *member, char **out)
{
    return refex_client_case_grant(c, case_ref, member, NULL, 0, 0, 1, out);
}

int refex_client_case_publish(refex_client *c, const char *case_ref, const char *body_json,
                              char id[33], char **out)
{
    int rc = need_case(c, case_ref, out);
    if (id)
        id[0] = '\0';
    if (rc)
        return rc;
    refex_client_message m = {.type = "case-update", .case_ref = case_ref, .body_json = body_json};
    return refex_client_send(c, &m, id, out);
}

int refex_client_case_members(refex_client *c, const char *case_ref, char **out)
{
    int rc = need_case(c, case_ref, out);
    return rc ? rc
              : refex_client_call(c, json_pack("{s:s, s:s}", "cmd", "members", "case", case_ref),
                                  out);
}

int refex_client_case_subscribe(refex_client *c, const char *case_ref, const char *const *types,
                                size_t n_types, int unsubscribe, char **out)
{
    if (out)
        *out = NULL;
    if (n_types && !types)
        return refex_client_fail(c, REFEX_E_INVAL, "n_types is %zu but types is NULL", n_types);
    json_t *req = json_pack("{s:s, s:b, s:b}", "cmd", "subscribe", "all", case_ref == NULL,
                            "unsubscribe", unsubscribe != 0);
    if (case_ref)
        set_or_drop(&req, "case", json_string(case_ref));
    if (n_types)
        set_or_drop(&req, "types", string_array(types, n_types));
    return refex_client_call(c, req, out);
}
