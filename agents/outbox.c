/* Sending: a control client's send becomes a sealed envelope in the outbox and the audit
 * log in one unit, then goes to the broker; STORED/REJECTED settle it and answer waiting
 * clients. Not receiving (inbox.c). */
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

/* ---- sending ------------------------------------------------------------------------ */

static int send_envelope_bytes(agent *a, const uint8_t *env, size_t len)
{
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, len, env);
    if (!e)
        return REFEX_E_MALFORMED;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = e;
    f.kind_case = REFEX__V1__FRAME__KIND_SEND;
    f.send = &s;
    int rc = batch_link_out(a, &f);
    refex__v1__envelope__free_unpacked(e, NULL);
    return rc;
}

/* After WELCOME: hand the broker everything it has not yet stored. */
/* Hands the broker what it has not stored yet, oldest first (which keeps per-sender
 * order): everything after a WELCOME, and on the retry timer whatever has waited longer
 * than RETRY_MS for its STORED. */
void outbox_flush(agent *a, int stale_only)
{
    sqlite3_stmt *st = NULL, *up = NULL;
    int n = 0;
    int64_t now = refex_now_ms();
    if (refex_db_prepare(a->db,
                         "SELECT message_id, envelope FROM outbox WHERE state = 'pending'"
                         " AND sent_ms <= ? ORDER BY created_ms, rowid LIMIT 500",
                         &st) != REFEX_OK)
        return;
    if (refex_db_prepare(a->db, "UPDATE outbox SET sent_ms = ? WHERE message_id = ?", &up) !=
            REFEX_OK ||
        batch_unit_begin(a) != REFEX_OK) {
        sqlite3_finalize(st);
        sqlite3_finalize(up);
        return;
    }
    sqlite3_bind_int64(st, 1, stale_only ? now - RETRY_MS : INT64_MAX);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int rc =
            send_envelope_bytes(a, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1));
        if (rc != REFEX_OK) {
            refex_log_warn("outbox: %s not sent yet: %s", sqlite3_column_text(st, 0),
                           refex_errname(rc));
            break;
        }
        sqlite3_reset(up);
        sqlite3_bind_int64(up, 1, now);
        sqlite3_bind_text(up, 2, (const char *)sqlite3_column_text(st, 0), -1, SQLITE_TRANSIENT);
        if (sqlite3_step(up) != SQLITE_DONE)
            break;
        n++;
    }
    sqlite3_finalize(st);
    sqlite3_finalize(up);
    if (batch_unit_end(a, 1) != REFEX_OK)
        refex_log_warn("outbox: could not record send times");
    if (n) {
        a->last_sent_ms = refex_mono_ms();
        refex_log_info("outbox: %d pending message(s) handed to the broker", n);
    }
}
static int resolve_recipients(agent *a, const json_t *to, const refex_agency **out, size_t *n,
                              char *detail, size_t dlen)
{
    size_t i;
    json_t *v;
    *n = 0;
    if (!json_is_array(to) || json_array_size(to) == 0 ||
        json_array_size(to) > REFEX_MAX_RECIPIENTS) {
        snprintf(detail, dlen, "'to' must list 1 to %d agency ids", REFEX_MAX_RECIPIENTS);
        return REFEX_E_INVAL;
    }
    json_array_foreach(to, i, v)
    {
        const char *id = json_string_value(v);
        const refex_agency *r = id ? refex_directory_find(a->base.dir, id) : NULL;
        if (!r || strcmp(r->role, "broker") == 0 || strcmp(r->role, "trust-anchor") == 0) {
            snprintf(detail, dlen, "unknown recipient '%s'", id ? id : "?");
            return REFEX_E_UNKNOWN_AGENCY;
        }
        if (refex_agency_usable(r, refex_now_ms()) != REFEX_OK) {
            snprintf(detail, dlen, "recipient '%s' is revoked", id);
            return REFEX_E_REVOKED;
        }
        for (size_t j = 0; j < *n; j++)
            if (out[j] == r) {
                snprintf(detail, dlen, "recipient '%s' listed twice", id);
                return REFEX_E_INVAL;
            }
        out[(*n)++] = r;
    }
    return REFEX_OK;
}

/* Recipients of a case update: the case's members as its lead's grants say. If the client
 * named recipients, each must be such a member. A refusal is audited. */
static int update_recipients(agent *a, const char *case_ref, int update_type,
                             const refex_agency **rcpt, size_t *n_rcpt, char *detail, size_t dlen)
{
    const refex_agency *members[REFEX_MAX_RECIPIENTS];
    size_t n = 0;
    int rc = case_ref && case_ref[0]
                 ? cases_recipients(a, case_ref, update_type, members, REFEX_MAX_RECIPIENTS, &n)
                 : REFEX_E_INVAL;
    if (rc == REFEX_OK && *n_rcpt > 0) {
        for (size_t i = 0; i < *n_rcpt && rc == REFEX_OK; i++) {
            int found = 0;
            for (size_t j = 0; j < n; j++)
                found |= members[j] == rcpt[i];
            if (!found) {
                snprintf(detail, dlen, "%s is not a subscribed member of case %s for this update",
                         rcpt[i]->id, case_ref);
                rc = REFEX_E_NOT_MEMBER;
            }
        }
    } else if (rc == REFEX_OK) {
        memcpy(rcpt, members, n * sizeof *members);
        *n_rcpt = n;
    } else if (rc == REFEX_E_NOT_MEMBER) {
        snprintf(detail, dlen, "%s is not a member of case %s", a->agency, case_ref);
    } else {
        snprintf(detail, dlen,
                 "no other member of case %s is granted and subscribed to this type of update",
                 case_ref && case_ref[0] ? case_ref : "(none)");
    }
    if (rc == REFEX_E_NOT_MEMBER && batch_unit_begin(a) == REFEX_OK) {
        refex_audit_entry ae;
        journal_fill(a, &ae, "reject", refex_errname(rc), "", "",
                     REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, case_ref ? case_ref : "", "", NULL);
        if (refex_audit_append(a->db, &ae, NULL) == REFEX_OK)
            (void)batch_unit_end(a, 1);
        else
            batch_unit_end(a, 0);
    }
    return rc;
}

void outbox_cmd_send(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    char detail[512] = "", idhex[33] = "", hashhex[65] = "";
    char peers[REFEX_MAX_RECIPIENTS * REFEX_ID_MAX] = "";
    const refex_agency *rcpt[REFEX_MAX_RECIPIENTS];
    size_t n_rcpt = 0;
    uint8_t *body = NULL, *env = NULL, id[16], hash[32];
    size_t body_len = 0, env_len = 0;
    Refex__V1__Body *parsed = NULL;
    Refex__V1__Envelope *e = NULL;
    refex_body_meta meta;
    int rc;

    int type = refex_message_type_parse(json_string_value(json_object_get(req, "type")));
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    json_int_t ttl = json_integer_value(json_object_get(req, "ttl_seconds"));
    int wait = json_is_true(json_object_get(req, "wait"));
    if (!type) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail, "unknown message type");
        goto out;
    }
    if (case_ref && !refex_case_ref_valid(case_ref)) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail,
                 "a case reference is at most 127 letters, digits and . _ : / -");
        goto out;
    }
    if (ttl < 0 || ttl > MAX_TTL_SECONDS) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail, "ttl_seconds must be between 1 and %d", MAX_TTL_SECONDS);
        goto out;
    }
    json_t *to = json_object_get(req, "to");
    int is_update = type == REFEX__V1__MESSAGE_TYPE__CASE_UPDATE;
    if ((!is_update || json_array_size(to) > 0) &&
        (rc = resolve_recipients(a, to, rcpt, &n_rcpt, detail, sizeof detail)) != REFEX_OK)
        goto out;
    if ((rc = refex_body_pack_json(type, json_object_get(req, "body"), &body, &body_len, detail,
                                   sizeof detail)) != REFEX_OK)
        goto out;
    if ((rc = refex_body_unpack(type, body, body_len, &parsed)) != REFEX_OK)
        goto out;
    refex_body_meta_get(parsed, &meta);
    if (!case_ref || !*case_ref)
        case_ref = meta.case_ref;
    if (!refex_case_ref_valid(case_ref)) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail,
                 "the body's case reference has characters outside "
                 "letters, digits and . _ : / -");
        goto out;
    }
    if (is_update && (rc = update_recipients(a, case_ref, (int)parsed->case_update->update_type,
                                             rcpt, &n_rcpt, detail, sizeof detail)) != REFEX_OK)
        goto out;
    refex_seal_params p = {.sender = a->agency,
                           .sign_sk = a->base.keys->sk->sign_sk,
                           .recipients = rcpt,
                           .n_recipients = n_rcpt,
                           .type = (Refex__V1__MessageType)type,
                           .case_ref = case_ref,
                           .created_at_ms = refex_now_ms(),
                           .expires_at_ms = ttl > 0 ? refex_now_ms() + ttl * 1000 : 0};
    if ((rc = refex_envelope_seal(&p, body, body_len, &env, &env_len, id)) != REFEX_OK ||
        (rc = journal_attach_checkpoint(a, &env, &env_len)) != REFEX_OK)
        goto out;
    uint64_t limit = a->base.max_frame;
    if (a->broker_max_frame && a->broker_max_frame < limit)
        limit = a->broker_max_frame;
    if (env_len + 64 > limit) {
        rc = REFEX_E_TOO_BIG;
        snprintf(detail, sizeof detail, "message is %zu bytes; the limit is %llu", env_len,
                 (unsigned long long)limit);
        goto out;
    }
    if (!(e = refex__v1__envelope__unpack(NULL, env_len, env))) {
        rc = REFEX_E_MALFORMED;
        goto out;
    }
    if ((rc = refex_envelope_hash(e, hash)) != REFEX_OK)
        goto out;
    refex_hex_encode(idhex, id, 16);
    refex_hex_encode(hashhex, hash, 32);
    for (size_t i = 0; i < n_rcpt; i++) {
        size_t used = strlen(peers);
        snprintf(peers + used, sizeof peers - used, "%s%s", i ? "," : "", rcpt[i]->id);
    }

    /* Outbox row and audit entry commit together, before the broker sees anything. */
    refex_audit_entry ae;
    journal_fill(a, &ae, "send", "success", peers, idhex, type, case_ref, hashhex, &meta);
    sqlite3_stmt *st = NULL;
    if ((rc = batch_unit_begin(a)) != REFEX_OK)
        goto out;
    rc = refex_db_prepare(a->db,
                          "INSERT INTO outbox(message_id, recipients, type, case_ref,"
                          " created_ms, envelope, state, updated_ms, sent_ms, practitioner,"
                          " purpose, article6, article9, consent, subjects, conversation_id,"
                          " request_id, due_date)"
                          " VALUES (?,?,?,?,?,?,'pending',?,?,?,?,?,?,?,?,?,?,?)",
                          &st);
    if (rc == REFEX_OK) {
        sqlite3_bind_text(st, 1, idhex, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, peers, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, refex_message_type_name(type), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, case_ref, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, p.created_at_ms);
        sqlite3_bind_blob(st, 6, env, (int)env_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, p.created_at_ms);
        /* Sent right after commit if online; the retry timer covers a lost send. */
        sqlite3_bind_int64(st, 8, a->online ? p.created_at_ms : 0);
        /* Kept so receipts and refusals are audited with the same lawful basis. */
        sqlite3_bind_text(st, 9, meta.practitioner, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 10, meta.purpose, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 11, meta.article6, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 12, meta.article9, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 13, meta.consent, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 14, meta.subjects, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 15, meta.conversation_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 16, meta.request_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 17, meta.due_date, -1, SQLITE_STATIC);
        rc = refex_db_err(sqlite3_step(st));
        sqlite3_finalize(st);
    }
    if (rc == REFEX_OK)
        rc = refex_audit_append(a->db, &ae, NULL);
    if (rc == REFEX_OK)
        rc = batch_unit_end(a, 1);
    else
        batch_unit_end(a, 0);
    if (rc != REFEX_OK) {
        snprintf(detail, sizeof detail, "could not commit to the outbox");
        goto out;
    }
    refex_log_info("send: %s %s to %s committed to outbox", idhex, refex_message_type_name(type),
                   peers);

    int sent = a->online && send_envelope_bytes(a, env, env_len) == REFEX_OK;
    if (sent)
        a->last_sent_ms = refex_mono_ms();
    if (wait && a->n_waiters < MAX_WAITERS) {
        waiter *w = &a->waiters[a->n_waiters++];
        memcpy(w->rid, rid, rid_len);
        w->rid_len = rid_len;
        memcpy(w->id, id, 16);
        w->deadline = refex_mono_ms() + WAIT_DEADLINE;
        w->committed = 0;
    } else {
        batch_reply(a, rid, rid_len,
                    json_pack("{s:b, s:s, s:s}", "ok", 1, "message_id", idhex, "state",
                              sent ? "sent" : "pending"));
    }
out:
    if (rc != REFEX_OK) {
        /* The detail may quote what the user typed: it goes back to the CLI, not the log. */
        refex_log_warn("send: refused: %s", refex_errname(rc));
        batch_reply(a, rid, rid_len, control_error(rc, detail));
    }
    if (e)
        refex__v1__envelope__free_unpacked(e, NULL);
    if (parsed)
        refex__v1__body__free_unpacked(parsed, NULL);
    free(env);
    if (body)
        sodium_memzero(body, body_len);
    free(body);
}

/* A STORED or REJECTED for one of ours: update the outbox, audit a refusal, answer any
 * CLI that waits for it. */
/* Refusals that say "not now" rather than "never": the message stays pending and is
 * resent. */
static int transient(int code)
{
    return code == REFEX_E_STORE || code == REFEX_E_BUSY || code == REFEX_E_UNAVAILABLE ||
           code == REFEX_E_NOMEM;
}

void outbox_result(agent *a, const uint8_t id[16], int code, const char *detail)
{
    char idhex[33];
    sqlite3_stmt *st = NULL;
    int rc;
    refex_hex_encode(idhex, id, 16);
    if (transient(code)) {
        refex_log_warn("outbox: %s not stored by the broker yet (%s); will retry", idhex,
                       refex_errname(code));
        goto answer;
    }
    if ((rc = batch_unit_begin(a)) != REFEX_OK)
        return;
    rc = refex_db_prepare(a->db,
                          "UPDATE outbox SET state = ?, error_code = ?, error_detail = ?,"
                          " updated_ms = ? WHERE message_id = ? AND state = 'pending'"
                          " RETURNING recipients",
                          &st);
    if (rc == REFEX_OK) {
        sqlite3_bind_text(st, 1, code ? "rejected" : "stored", -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, code);
        sqlite3_bind_text(st, 3, detail ? detail : "", -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 4, refex_now_ms());
        sqlite3_bind_text(st, 5, idhex, -1, SQLITE_STATIC);
        char peers[REFEX_MAX_RECIPIENTS * REFEX_ID_MAX] = "";
        int hit = sqlite3_step(st) == SQLITE_ROW;
        if (hit)
            snprintf(peers, sizeof peers, "%s", sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        if (hit && code)
            rc = journal_outcome(a, "reject", refex_errname(code), peers, idhex, "");
    }
    if (rc == REFEX_OK)
        rc = batch_unit_end(a, 1);
    else
        batch_unit_end(a, 0);
    if (rc != REFEX_OK)
        refex_log_error("outbox: could not record the result for %s", idhex);
    if (code)
        refex_log_warn("outbox: %s rejected by the broker: %s", idhex, refex_errname(code));
    else
        refex_log_debug("outbox: %s stored by the broker", idhex);
answer:
    for (size_t i = 0; i < a->n_waiters; i++) {
        waiter *w = &a->waiters[i];
        if (memcmp(w->id, id, 16) != 0)
            continue;
        json_t *r =
            code ? control_error(code, detail)
                 : json_pack("{s:b, s:s, s:s}", "ok", 1, "message_id", idhex, "state", "stored");
        if (code && r) {
            json_object_set_new(r, "message_id", json_string(idhex));
            if (transient(code))
                json_object_set_new(r, "state", json_string("pending"));
        }
        batch_reply(a, w->rid, w->rid_len, r);
        a->waiters[i--] = a->waiters[--a->n_waiters];
    }
}

void outbox_expire_waiters(agent *a)
{
    int64_t now = refex_mono_ms();
    for (size_t i = 0; i < a->n_waiters; i++) {
        waiter *w = &a->waiters[i];
        if (w->deadline > now || !w->committed)
            continue;
        char idhex[33];
        refex_hex_encode(idhex, w->id, 16);
        batch_reply(a, w->rid, w->rid_len,
                    json_pack("{s:b, s:s, s:s}", "ok", 1, "message_id", idhex, "state", "pending"));
        a->waiters[i--] = a->waiters[--a->n_waiters];
    }
}
