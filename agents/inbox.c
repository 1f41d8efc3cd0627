/* Receiving: a delivery is verified, decrypted and stored with its audit entry before it
 * is acknowledged with our signed receipt; receipts for our own messages are recorded and
 * acknowledged. Not sending (outbox.c). */
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

/* ---- receiving ---------------------------------------------------------------------- */

/* ACK with our signed receipt: the sender's proof of what happened here. */
static void send_ack(agent *a, const uint8_t *id, const char *sender, int code,
                     const uint8_t *env_hash)
{
    refex_receipt r;
    uint8_t *blob = NULL;
    size_t len = 0;
    memset(&r, 0, sizeof r);
    memcpy(r.message_id, id, 16);
    snprintf(r.sender, sizeof r.sender, "%s", sender);
    snprintf(r.recipient, sizeof r.recipient, "%s", a->agency);
    snprintf(r.signer, sizeof r.signer, "%s", a->agency);
    r.code = (uint32_t)code;
    r.time_ms = refex_now_ms();
    if (env_hash) {
        memcpy(r.envelope_hash, env_hash, 32);
        r.has_envelope_hash = 1;
    }
    if (refex_receipt_sign(&r, a->base.keys->sk->sign_sk, &blob, &len) != REFEX_OK)
        return;
    Refex__V1__SignedReceipt *sr = refex__v1__signed_receipt__unpack(NULL, len, blob);
    free(blob);
    if (!sr)
        return;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Ack ack = REFEX__V1__ACK__INIT;
    ack.message_id = (ProtobufCBinaryData){16, (uint8_t *)id};
    ack.sender = (char *)sender;
    ack.code = (uint32_t)code;
    ack.receipt = sr;
    f.kind_case = REFEX__V1__FRAME__KIND_ACK;
    f.ack = &ack;
    if (batch_link_out(a, &f) != REFEX_OK)
        refex_log_warn("ack: could not send for a message from %s", sender);
    refex__v1__signed_receipt__free_unpacked(sr, NULL);
}

/* Verify, decrypt, check the body, then inbox row + audit entry in one transaction, then
 * ACK. A message we cannot accept is audited as a reject and refused with its code. */
/* Has this (sender, id) been handled before? 1 with *code = 0 and the stored envelope
 * hash if it is in the inbox, 1 with the refusal code if it was refused, 0 if it is new. */
static int known_delivery(agent *a, const char *sender, const char *idhex, int *code,
                          uint8_t hash[32], int *has_hash)
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    *has_hash = 0;
    if (refex_db_prepare(a->db,
                         "SELECT 0, envelope_hash FROM inbox WHERE sender = ?1 AND message_id = ?2"
                         " UNION ALL SELECT code, '' FROM refused WHERE sender = ?1 AND"
                         " message_id = ?2",
                         &st) != REFEX_OK)
        return 0;
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, idhex, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        found = 1;
        *code = sqlite3_column_int(st, 0);
        *has_hash =
            refex_hex_decode(hash, 32, (const char *)sqlite3_column_text(st, 1)) == REFEX_OK;
    }
    sqlite3_finalize(st);
    return found;
}

void inbox_deliver(agent *a, const Refex__V1__Envelope *env)
{
    Refex__V1__EnvelopeHeader *h = NULL;
    Refex__V1__Body *b = NULL;
    uint8_t *body = NULL, hash[32];
    size_t body_len = 0;
    char idhex[33] = "", hashhex[65] = "";
    refex_body_meta meta;
    int rc = refex_envelope_parse_header(env, &h), have_meta = 0;
    if (rc != REFEX_OK) {
        refex_log_warn("deliver: malformed envelope header; dropped");
        return; /* no id or sender to acknowledge */
    }
    refex_hex_encode(idhex, h->message_id.data, 16);
    /* Handled before (a redelivery, or our ACK was lost): answer as we answered then,
     * without a second audit entry, whatever the message's state is now. */
    int prior_code = 0, prior_has_hash = 0;
    if (known_delivery(a, h->sender, idhex, &prior_code, hash, &prior_has_hash)) {
        refex_log_debug("deliver: %s from %s seen before; acknowledged again", idhex, h->sender);
        send_ack(a, h->message_id.data, h->sender, prior_code, prior_has_hash ? hash : NULL);
        refex__v1__envelope_header__free_unpacked(h, NULL);
        return;
    }
    if (refex_envelope_hash(env, hash) == REFEX_OK)
        refex_hex_encode(hashhex, hash, 32);
    const refex_agency *sender = refex_directory_find(a->base.dir, h->sender);
    int mine = 0;
    for (size_t i = 0; i < h->n_recipients; i++)
        mine |= strcmp(h->recipients[i], a->agency) == 0;
    int64_t now = refex_now_ms();
    if (!mine)
        rc = REFEX_E_NOT_RECIPIENT;
    else if (!sender)
        rc = REFEX_E_UNKNOWN_AGENCY;
    else if (refex_agency_usable(sender, now) != REFEX_OK)
        rc = REFEX_E_REVOKED;
    else if (h->created_at_ms > now + a->base.skew_ms)
        rc = REFEX_E_CLOCK_SKEW; /* from the future; old backlog is fine */
    else if (h->expires_at_ms <= now)
        rc = REFEX_E_EXPIRED;
    else if ((rc = refex_envelope_verify(env, h, sender->sign_pk)) != REFEX_OK)
        ;
    else if ((rc = refex_envelope_open(env, h, a->agency, a->base.keys->pub.enc_pk,
                                       a->base.keys->sk->enc_sk, &body, &body_len)) != REFEX_OK)
        ;
    else if ((rc = refex_body_unpack(h->type, body, body_len, &b)) == REFEX_OK) {
        refex_body_meta_get(b, &meta);
        have_meta = 1;
        /* A case update must come from a member to a member, by the lead's grants here. */
        if (h->type == REFEX__V1__MESSAGE_TYPE__CASE_UPDATE &&
            (!cases_is_member(a, h->case_ref, h->sender, 0) ||
             !cases_is_member(a, h->case_ref, a->agency, (int)b->case_update->update_type)))
            rc = REFEX_E_NOT_MEMBER;
    }

    refex_audit_entry ae;
    journal_fill(a, &ae, rc == REFEX_OK ? "receive" : "reject",
                 rc == REFEX_OK ? "success" : refex_errname(rc), h->sender, idhex, h->type,
                 h->case_ref, hashhex, have_meta ? &meta : NULL);
    int dbrc = batch_unit_begin(a), dup = 0;
    if (dbrc == REFEX_OK && rc == REFEX_OK)
        journal_note_peer_checkpoint(a, h->sender, sender, env->checkpoint);
    if (dbrc == REFEX_OK && rc == REFEX_OK) {
        sqlite3_stmt *st = NULL;
        dbrc = refex_db_prepare(a->db,
                                "INSERT INTO inbox(sender, message_id, type, case_ref,"
                                " created_ms, received_ms, envelope_hash, body,"
                                " conversation_id, reply_to, decision)"
                                " VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                                &st);
        if (dbrc == REFEX_OK) {
            sqlite3_bind_text(st, 1, h->sender, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, idhex, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, refex_message_type_name(h->type), -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 4, h->case_ref, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 5, h->created_at_ms);
            sqlite3_bind_int64(st, 6, refex_now_ms());
            sqlite3_bind_text(st, 7, hashhex, -1, SQLITE_STATIC);
            sqlite3_bind_blob(st, 8, body, (int)body_len, SQLITE_STATIC);
            sqlite3_bind_text(st, 9, meta.conversation_id, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 10, meta.reply_to, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 11, meta.decision, -1, SQLITE_STATIC);
            dbrc = refex_db_err(sqlite3_step(st));
            dup = dbrc == REFEX_OK && sqlite3_changes(a->db) == 0;
            sqlite3_finalize(st);
        }
    }
    if (dbrc == REFEX_OK && rc != REFEX_OK) {
        /* Remember the refusal, so a redelivery is answered the same way and not audited
         * again. */
        sqlite3_stmt *st = NULL;
        dbrc = refex_db_prepare(a->db,
                                "INSERT INTO refused(sender, message_id, code) VALUES (?,?,?)"
                                " ON CONFLICT DO NOTHING",
                                &st);
        if (dbrc == REFEX_OK) {
            sqlite3_bind_text(st, 1, h->sender, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, idhex, -1, SQLITE_STATIC);
            sqlite3_bind_int(st, 3, rc);
            dbrc = refex_db_err(sqlite3_step(st));
            dup = dbrc == REFEX_OK && sqlite3_changes(a->db) == 0;
            sqlite3_finalize(st);
        }
    }
    if (dbrc == REFEX_OK && !dup)
        dbrc = refex_audit_append(a->db, &ae, NULL);
    if (dbrc == REFEX_OK)
        dbrc = batch_unit_end(a, 1);
    else
        batch_unit_end(a, 0);

    if (dbrc != REFEX_OK) {
        /* Not committed: no ACK, so the broker keeps it and delivers it again. */
        refex_log_error("deliver: %s from %s not committed (%s); not acknowledged", idhex,
                        h->sender, refex_strerror(dbrc));
    } else {
        if (rc == REFEX_OK)
            refex_log_info("deliver: %s %s from %s %s", idhex, refex_message_type_name(h->type),
                           h->sender, dup ? "was a duplicate" : "verified, decrypted, stored");
        else
            refex_log_warn("deliver: %s from %s refused: %s", idhex, h->sender, refex_errname(rc));
        send_ack(a, h->message_id.data, h->sender, rc, hashhex[0] ? hash : NULL);
    }
    if (b)
        refex__v1__body__free_unpacked(b, NULL);
    if (body)
        sodium_memzero(body, body_len);
    free(body);
    refex__v1__envelope_header__free_unpacked(h, NULL);
}

static void send_receipt_ack(agent *a, const refex_receipt *r)
{
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__ReceiptAck ra = REFEX__V1__RECEIPT_ACK__INIT;
    ra.message_id = (ProtobufCBinaryData){16, (uint8_t *)r->message_id};
    ra.recipient = (char *)r->recipient;
    f.kind_case = REFEX__V1__FRAME__KIND_RECEIPT_ACK;
    f.receipt_ack = &ra;
    if (batch_link_out(a, &f) != REFEX_OK)
        refex_log_warn("receipt: could not acknowledge");
}

/* A receipt for one of our messages: verify the signer (the recipient, or the broker for a
 * non-delivery), record it with an audit entry in one transaction, then acknowledge it. A
 * receipt seen before is acknowledged again without a second audit entry. */
void inbox_receipt(agent *a, const Refex__V1__SignedReceipt *sr)
{
    refex_receipt r;
    char idhex[33], hashhex[65] = "";
    int rc = refex_receipt_verify(sr, a->base.dir, &r);
    if (rc == REFEX_OK && strcmp(r.sender, a->agency) != 0)
        rc = REFEX_E_NOT_RECIPIENT;
    if (rc == REFEX_OK && strcmp(r.signer, r.recipient) != 0 &&
        !(strcmp(r.signer, a->broker_id) == 0 && r.code == REFEX_E_EXPIRED))
        rc = REFEX_E_BAD_SIGNATURE; /* only the recipient speaks for the recipient */
    if (rc != REFEX_OK) {
        refex_log_warn("receipt: refused: %s", refex_errname(rc));
        return;
    }
    refex_hex_encode(idhex, r.message_id, 16);
    if (r.has_envelope_hash)
        refex_hex_encode(hashhex, r.envelope_hash, 32);
    size_t len = refex__v1__signed_receipt__get_packed_size(sr);
    uint8_t *blob = malloc(len);
    sqlite3_stmt *st = NULL;
    if (!blob || batch_unit_begin(a) != REFEX_OK) {
        free(blob);
        return;
    }
    refex__v1__signed_receipt__pack(sr, blob);
    rc = refex_db_prepare(a->db,
                          "INSERT INTO receipts(message_id, recipient, code, signer, time_ms,"
                          " received_ms, receipt) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                          &st);
    int fresh = 0;
    if (rc == REFEX_OK) {
        sqlite3_bind_text(st, 1, idhex, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r.recipient, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, (int)r.code);
        sqlite3_bind_text(st, 4, r.signer, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, r.time_ms);
        sqlite3_bind_int64(st, 6, refex_now_ms());
        sqlite3_bind_blob(st, 7, blob, (int)len, SQLITE_STATIC);
        rc = refex_db_err(sqlite3_step(st));
        fresh = rc == REFEX_OK && sqlite3_changes(a->db) > 0;
        sqlite3_finalize(st);
    }
    if (rc == REFEX_OK && fresh) {
        rc = journal_outcome(a, r.code == REFEX_E_EXPIRED ? "non-delivery" : "receipt",
                             r.code ? refex_errname((int)r.code) : "success", r.recipient, idhex,
                             hashhex);
    }
    if (rc == REFEX_OK)
        rc = batch_unit_end(a, 1);
    else
        batch_unit_end(a, 0);
    free(blob);
    if (rc != REFEX_OK) {
        refex_log_error("receipt: %s from %s not committed; not acknowledged", idhex, r.recipient);
        return;
    }
    if (fresh) {
        if (r.code == REFEX_E_EXPIRED)
            refex_log_warn("receipt: %s was not delivered to %s before it expired", idhex,
                           r.recipient);
        else if (r.code)
            refex_log_warn("receipt: %s refused by %s: %s", idhex, r.recipient,
                           refex_errname((int)r.code));
        else
            refex_log_debug("receipt: %s delivered to %s", idhex, r.recipient);
    }
    send_receipt_ack(a, &r);
}
