/* Receiving: a delivery is verified (before the memory of what was handled is consulted),
 * decrypted and stored with its audit entry before it is acknowledged with our signed
 * receipt; receipts for our own messages (naming the envelope we sent) are recorded and
 * acknowledged; the receiving system's acknowledgement of a message (inbox_ack) is
 * audited once. A refusal is final (a signed refusal ACK, remembered) only where it does
 * not depend on state of ours that may be stale (refusal_is_final); the others are held:
 * no ACK, so the broker delivers the message again, and a held message accepted later may
 * land after later messages from the same sender. Not sending (outbox.c), nor reading the
 * inbox by cursor (inbox_wait.c). */
#include "agent.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "body_rules.h"
#include "codec.h"
#include "envelope.h"
#include "log.h"
#include "receipt.h"
#include "util.h"

/* One delivery on its way from the broker to the inbox. */
typedef struct {
    const Refex__V1__Envelope *env;
    Refex__V1__EnvelopeHeader *h;
    const refex_agency *sender;
    Refex__V1__Body *b;
    uint8_t *body, hash[32];
    size_t body_len;
    char idhex[33], hashhex[65];
    refex_body_meta meta;
    int have_meta;
    int verified; /* the named sender's key signed these header bytes */
} delivery;

/* Warnings for held deliveries, per sender: a broker (or a forger through it) can cause
 * them at will. One agent per process, so one gate per process. */
static refex_log_gate g_held_gate = {.what = "held deliveries", .burst = 20, .window_ms = 10000};

/* Whether a refusal is final: a signed refusal ACK (the broker dead-letters the message,
 * the sender takes the receipt as the last word) and remembered. A refusal that may only
 * reflect our own state is held instead (no ACK, nothing remembered or audited): the
 * broker delivers it again after redeliver_seconds or on reconnect, and reports
 * non-delivery to the sender when it expires.
 *   held:  E_NOT_MEMBER      the lead's grant notice may not have reached us yet (there is
 *                            no order across senders, even with an honest broker);
 *          E_CLOCK_SKEW      from the future by our clock: time will pass;
 *          E_UNKNOWN_AGENCY  our directory may be older than the sender (a new agency);
 *          E_BAD_SIGNATURE   the sender may have a new key our directory lacks (or it is a
 *                            forgery, which must not be answered for the sender anyway).
 *   final: everything else, E_NOT_RECIPIENT, E_DECRYPT, E_INVAL/E_MALFORMED (the body),
 *          E_EXPIRED, and E_POLICY and E_REVOKED (our current signed directory is the
 *          operator's word on them). */
static int refusal_is_final(int code)
{
    static const int held[] = {REFEX_E_NOT_MEMBER, REFEX_E_CLOCK_SKEW, REFEX_E_UNKNOWN_AGENCY,
                               REFEX_E_BAD_SIGNATURE};
    for (size_t i = 0; i < sizeof held / sizeof held[0]; i++)
        if (code == held[i])
            return 0;
    return 1;
}

/* ACK with our receipt, signed in the cycle's batch: the sender's proof of what happened
 * here. */
static void send_ack(agent *a, const uint8_t *id, const char *sender, int code,
                     const uint8_t *env_hash)
{
    refex_receipt r;
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
    /* Signed with everything else this cycle sends, when it commits (batch.c). */
    Refex__V1__SignedReceipt *sr = NULL;
    if (refex_receipt_pack(&r, &sr) != REFEX_OK)
        return;
    Refex__V1__Ack ack = REFEX__V1__ACK__INIT;
    ack.message_id = (ProtobufCBinaryData){16, (uint8_t *)id};
    ack.sender = (char *)sender;
    ack.code = (uint32_t)code;
    ack.receipt = sr;
    if (batch_link_out(a, REFEX__V1__FRAME__KIND_ACK, &ack.base) != REFEX_OK)
        refex_log_warn("ack: could not send for a message from %s", sender);
    refex_receipt_unsigned_free(&sr);
}

/* From a known agency and signed by it? Checked before anything is looked up in, or
 * written to, the memory of what was handled: whatever fails here the named sender did not
 * sign, so it can neither be answered as, nor stand in for, the sender's message. */
static int check_signed(agent *a, delivery *d)
{
    d->sender = refex_directory_find(a->base.dir, d->h->sender);
    if (!d->sender)
        return REFEX_E_UNKNOWN_AGENCY;
    int rc = refex_envelope_verify_from(d->env, d->h, d->sender, refex_now_ms());
    /* E_REVOKED here: the sender's own key signed it, one rotated away since. Its word all
     * the same: answered from memory if handled before, and its refusal remembered. */
    d->verified = rc == REFEX_OK || rc == REFEX_E_REVOKED;
    return rc;
}

/* The information-sharing policy (lib/policy.c) checked again here, after verification
 * and before decryption: may the sender's role send this type to ours? */
static int check_policy(agent *a, const Refex__V1__EnvelopeHeader *h)
{
    char detail[256];
    int rc =
        refex_policy_check(a->base.dir, h->sender, (int)h->type, a->agency, detail, sizeof detail);
    if (rc != REFEX_OK)
        refex_log_warn("deliver: %s", detail); /* roles and type only */
    return rc;
}

/* Recipients never rely on the broker: (signed, check_signed) for us, allowed by the
 * information-sharing policy, from an unrevoked agency, in time, openable by us, a
 * well-formed body with every field its type requires (lib/body_rules.c), and (a case
 * update) from a member to a member by the lead's grants here? REFEX_OK or why not. */
static int check_delivery(agent *a, delivery *d)
{
    const Refex__V1__EnvelopeHeader *h = d->h;
    int rc, mine = 0;
    for (size_t i = 0; i < h->n_recipients; i++)
        mine |= strcmp(h->recipients[i], a->agency) == 0;
    int64_t now = refex_now_ms();
    if (!mine)
        return REFEX_E_NOT_RECIPIENT;
    if ((rc = check_policy(a, h)) != REFEX_OK)
        return rc;
    if (refex_agency_usable(d->sender, now) != REFEX_OK)
        return REFEX_E_REVOKED;
    if (h->created_at_ms > now + a->base.skew_ms)
        return REFEX_E_CLOCK_SKEW; /* from the future; old backlog is fine */
    if (h->expires_at_ms <= now)
        return REFEX_E_EXPIRED;
    if ((rc = agent_keys_open(a, d->env, h, &d->body, &d->body_len)) != REFEX_OK ||
        (rc = refex_body_unpack(h->type, d->body, d->body_len, &d->b)) != REFEX_OK)
        return rc;
    refex_body_meta_get(d->b, &d->meta);
    d->have_meta = 1;
    char missing[256]; /* what a foreign agent let through: refused here too */
    if (refex_body_check(d->b, missing, sizeof missing) != REFEX_OK) {
        refex_log_warn("deliver: %s from %s: %s", d->idhex, h->sender, missing); /* names only */
        return REFEX_E_INVAL;
    }
    if (h->type == REFEX__V1__MESSAGE_TYPE__CASE_UPDATE &&
        (!cases_is_member(a, h->case_ref, h->sender, 0) ||
         !cases_is_member(a, h->case_ref, a->agency, (int)d->b->case_update->update_type)))
        return REFEX_E_NOT_MEMBER;
    return REFEX_OK;
}

/* Inbox row (or, refused with `code`, the refusal) and audit entry in one unit; a
 * duplicate (*dup) gets no second audit entry. */
static int commit_delivery(agent *a, delivery *d, int code, int *dup)
{
    const Refex__V1__EnvelopeHeader *h = d->h;
    refex_audit_entry ae;
    journal_fill(a, &ae, code == REFEX_OK ? "receive" : "reject",
                 code == REFEX_OK ? "success" : refex_errname(code), h->sender, d->idhex, h->type,
                 h->case_ref, d->hashhex, d->have_meta ? &d->meta : NULL);
    agent_inbox_row row = {h->sender,   d->idhex,         refex_message_type_name(h->type),
                           h->case_ref, h->created_at_ms, refex_now_ms(),
                           d->hashhex,  d->body,          d->body_len,
                           &d->meta};
    int rc = batch_unit_begin(a);
    *dup = 0;
    if (rc == REFEX_OK && code == REFEX_OK) {
        journal_note_peer_checkpoint(a, h->sender, d->sender, d->env->checkpoint);
        rc = agent_store_inbox_insert(a->store, &row, dup);
    } else if (rc == REFEX_OK && d->verified) {
        /* Remember the refusal, so a redelivery is answered the same way and not audited
         * again. Only for what the sender signed: a forgery remembered under the sender's
         * name and id would shadow the genuine message when it came. */
        rc = agent_store_refused_insert(a->store, h->sender, d->idhex, code, dup);
    }
    if (rc == REFEX_OK && !*dup)
        rc = journal_append(a, &ae);
    if (rc == REFEX_OK)
        rc = batch_unit_end(a, 1);
    else
        batch_unit_end(a, 0);
    if (rc == REFEX_OK && code == REFEX_OK && !*dup)
        a->inbox_grew = 1; /* inbox waiters are answered when the batch commits */
    return rc;
}

/* A verified delivery handled before (a redelivery, or our ACK was lost) is answered as we
 * answered then, without a second audit entry, whatever the message's state is now: with
 * the envelope hash the inbox holds, or, for a remembered refusal (which keeps none), this
 * envelope's, which the sender signed. 1 if it was. */
static int answered_before(agent *a, delivery *d)
{
    const Refex__V1__EnvelopeHeader *h = d->h;
    uint8_t prior[32];
    int code = 0, has_hash = 0;
    if (!agent_store_known_delivery(a->store, h->sender, d->idhex, &code, prior, &has_hash))
        return 0;
    refex_log_debug("deliver: %s from %s seen before; acknowledged again", d->idhex, h->sender);
    send_ack(a, h->message_id.data, h->sender, code,
             has_hash        ? prior
             : d->hashhex[0] ? d->hash
                             : NULL);
    return 1;
}

/* A held delivery: not acknowledged (so delivered again), nothing remembered, not
 * audited; a warning naming id, sender and why, rate-limited per sender. */
static void hold(const delivery *d, int code)
{
    int64_t now = refex_mono_ms();
    refex_log_gate_flush(&g_held_gate, now);
    if (refex_log_gate_pass(&g_held_gate, d->h->sender, now))
        refex_log_warn("deliver: %s from %s held, not acknowledged: %s", d->idhex, d->h->sender,
                       refex_errname(code));
}

/* Verify first, then the memory of what was handled; then decrypt, check the body, then
 * inbox row + audit entry in one transaction, then ACK. A message we cannot accept for
 * good is audited as a reject and refused with its code, the receipt naming this
 * envelope's hash; one refused for now is held (refusal_is_final). */
void inbox_deliver(agent *a, const Refex__V1__Envelope *env)
{
    delivery d;
    memset(&d, 0, sizeof d);
    d.env = env;
    int prc = refex_envelope_parse_header(env, &d.h);
    if (prc != REFEX_OK) {
        refex_log_warn("deliver: envelope header refused (%s); dropped", refex_errname(prc));
        return; /* no id or sender to acknowledge */
    }
    const Refex__V1__EnvelopeHeader *h = d.h;
    refex_hex_encode(d.idhex, h->message_id.data, 16);
    if (refex_envelope_hash(env, d.hash) == REFEX_OK)
        refex_hex_encode(d.hashhex, d.hash, 32);
    int rc = check_signed(a, &d), dup = 0;
    if (d.verified && answered_before(a, &d))
        goto out;
    if (rc == REFEX_OK)
        rc = check_delivery(a, &d);
    if (rc != REFEX_OK &&
        (!refusal_is_final(rc) || (rc == REFEX_E_DECRYPT && agent_keys_behind(a)))) {
        hold(&d, rc);
        goto out;
    }
    int dbrc = commit_delivery(a, &d, rc, &dup);
    if (dbrc != REFEX_OK) {
        /* Not committed: no ACK, so the broker keeps it and delivers it again. */
        refex_log_error("deliver: %s from %s not committed (%s); not acknowledged", d.idhex,
                        h->sender, refex_strerror(dbrc));
        goto out;
    }
    if (rc == REFEX_OK)
        refex_log_info("deliver: %s %s from %s %s", d.idhex, refex_message_type_name(h->type),
                       h->sender, dup ? "was a duplicate" : "verified, decrypted, stored");
    else
        refex_log_warn("deliver: %s from %s refused: %s", d.idhex, h->sender, refex_errname(rc));
    send_ack(a, h->message_id.data, h->sender, rc, d.hashhex[0] ? d.hash : NULL);
out:
    if (d.b)
        refex__v1__body__free_unpacked(d.b, NULL);
    if (d.body)
        sodium_memzero(d.body, d.body_len);
    free(d.body);
    refex__v1__envelope_header__free_unpacked(d.h, NULL);
}

static void send_receipt_ack(agent *a, const refex_receipt *r)
{
    Refex__V1__ReceiptAck ra = REFEX__V1__RECEIPT_ACK__INIT;
    ra.message_id = (ProtobufCBinaryData){16, (uint8_t *)r->message_id};
    ra.recipient = (char *)r->recipient;
    if (batch_link_out(a, REFEX__V1__FRAME__KIND_RECEIPT_ACK, &ra.base) != REFEX_OK)
        refex_log_warn("receipt: could not acknowledge");
}

typedef struct {
    const uint8_t *want;
    int differs;
} envelope_match;

static int match_envelope(void *ctx, const char *message_id, const uint8_t *env, size_t len)
{
    envelope_match *m = ctx;
    uint8_t hash[32];
    (void)message_id;
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, len, env);
    m->differs =
        !e || refex_envelope_hash(e, hash) != REFEX_OK || sodium_memcmp(hash, m->want, 32) != 0;
    if (e)
        refex__v1__envelope__free_unpacked(e, NULL);
    return 1;
}

/* A receipt for one of our messages: verify the signer (the recipient, or the broker for a
 * non-delivery), record it with an audit entry in one transaction, then acknowledge it. A
 * receipt seen before is acknowledged again without a second audit entry. A receipt that
 * names an envelope hash other than our envelope's speaks of an envelope we did not send
 * (a forgery the recipient refused under our name and id): not ours to record; one the
 * recipient signed without naming an envelope is refused too. */
static int verify_receipt(agent *a, const Refex__V1__SignedReceipt *sr, refex_receipt *r)
{
    int rc = refex_receipt_verify(sr, a->base.dir, r);
    if (rc == REFEX_OK && strcmp(r->sender, a->agency) != 0)
        rc = REFEX_E_NOT_RECIPIENT;
    if (rc == REFEX_OK && strcmp(r->signer, r->recipient) != 0 &&
        !(strcmp(r->signer, a->broker_id) == 0 && r->code == REFEX_E_EXPIRED))
        rc = REFEX_E_BAD_SIGNATURE; /* only the recipient speaks for the recipient */
    if (rc == REFEX_OK && !r->has_envelope_hash && strcmp(r->signer, r->recipient) == 0)
        rc = REFEX_E_MALFORMED; /* a recipient's word must say which envelope it judged */
    if (rc == REFEX_OK && r->has_envelope_hash) {
        char idhex[33];
        envelope_match m = {r->envelope_hash, 0};
        refex_hex_encode(idhex, r->message_id, 16);
        rc = agent_store_outbox_envelope(a->store, idhex, match_envelope, &m);
        if (rc == REFEX_OK && m.differs) {
            refex_log_warn("receipt: %s from %s names an envelope we did not send; ignored", idhex,
                           r->recipient);
            rc = REFEX_E_TAMPERED;
        }
    }
    return rc;
}

static void log_receipt(const refex_receipt *r, const char *idhex)
{
    if (r->code == REFEX_E_EXPIRED)
        refex_log_warn("receipt: %s was not delivered to %s before it expired", idhex,
                       r->recipient);
    else if (r->code)
        refex_log_warn("receipt: %s refused by %s: %s", idhex, r->recipient,
                       refex_errname((int)r->code));
    else
        refex_log_debug("receipt: %s delivered to %s", idhex, r->recipient);
}

void inbox_receipt(agent *a, const Refex__V1__SignedReceipt *sr)
{
    refex_receipt r;
    char idhex[33], hashhex[65] = "";
    uint8_t *blob = NULL;
    size_t len = 0;
    int fresh = 0, rc = verify_receipt(a, sr, &r);
    if (rc != REFEX_OK) {
        refex_log_warn("receipt: refused: %s", refex_errname(rc));
        return;
    }
    refex_hex_encode(idhex, r.message_id, 16);
    if (r.has_envelope_hash)
        refex_hex_encode(hashhex, r.envelope_hash, 32);
    if (refex_pb_pack(&sr->base, &blob, &len) != REFEX_OK)
        return;
    if (batch_unit_begin(a) != REFEX_OK) {
        free(blob);
        return;
    }
    agent_receipt_row row = {idhex,     r.recipient,    (int)r.code, r.signer,
                             r.time_ms, refex_now_ms(), blob,        len};
    rc = agent_store_receipt_insert(a->store, &row, &fresh);
    if (rc == REFEX_OK && fresh)
        rc = journal_outcome(a, r.code == REFEX_E_EXPIRED ? "non-delivery" : "receipt",
                             r.code ? refex_errname((int)r.code) : "success", r.recipient, idhex,
                             hashhex);
    if (rc == REFEX_OK) /* every recipient's receipt in: nothing more is awaited */
        rc = agent_store_outbox_close_if_receipted(a->store, idhex, NULL);
    if (rc == REFEX_OK)
        rc = batch_unit_end(a, 1);
    else
        batch_unit_end(a, 0);
    free(blob);
    if (rc != REFEX_OK) {
        refex_log_error("receipt: %s from %s not committed; not acknowledged", idhex, r.recipient);
        return;
    }
    if (fresh)
        log_receipt(&r, idhex);
    send_receipt_ack(a, &r);
}

/* ---- acknowledgement by the receiving system ---------------------------------------- */

typedef struct {
    agent *a;
    const char *idhex;
} ack_ctx;

/* The `ack` audit entry, with the type, case and lawful basis of the message as received. */
static int audit_ack(void *vctx, const agent_inbox_acked *m)
{
    ack_ctx *x = vctx;
    refex_body_meta meta;
    refex_audit_entry ae;
    Refex__V1__Body *b = NULL;
    int type = refex_message_type_parse(m->type);
    int have = refex_body_unpack(type, m->body, m->body_len, &b) == REFEX_OK;
    if (have)
        refex_body_meta_get(b, &meta);
    journal_fill(x->a, &ae, "ack", "success", m->sender, x->idhex, type, m->case_ref,
                 m->envelope_hash, have ? &meta : NULL);
    int rc = journal_append(x->a, &ae);
    if (b)
        refex__v1__body__free_unpacked(b, NULL);
    return rc;
}

int inbox_ack(agent *a, const char *idhex, const char *sender, int64_t *acked_at_ms, int *already)
{
    ack_ctx x = {a, idhex};
    int rc = batch_unit_begin(a);
    if (rc != REFEX_OK)
        return rc;
    rc = agent_store_inbox_ack(a->store, idhex, sender, refex_now_ms(), audit_ack, &x, acked_at_ms,
                               already);
    if (rc == REFEX_OK)
        return batch_unit_end(a, 1);
    batch_unit_end(a, 0);
    return rc;
}
