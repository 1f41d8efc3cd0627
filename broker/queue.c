/* The broker's queue side: SEND is checked as far as the broker can see (signature, sender,
 * recipients, case membership, clock) and stored; ACK and RECEIPT_ACK end deliveries and
 * receipts; undelivered messages expire into broker-signed non-delivery reports. Writes of
 * one poll cycle share one store transaction (group commit), and STORED answers go out only
 * after that commit. Not for sending deliveries (session.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "codec.h"
#include "envelope.h"
#include "keys.h"
#include "link.h"
#include "log.h"
#include "receipt.h"
#include "util.h"

#define EXPIRE_BATCH 256
/* How long a sender's SENDs stay held behind its refused message if it never sends that
 * one again (an agent that gave it up): then order yields to progress. */
#define HOLD_MS 60000

/* ---- batches: one transaction per poll cycle ------------------------------------------ */

int queue_batch_begin(broker *b)
{
    if (b->in_batch)
        return b->batch_failed ? REFEX_E_STORE : REFEX_OK;
    int rc = refex_store_begin(b->store);
    b->in_batch = 1;
    b->batch_failed = rc != REFEX_OK;
    return rc;
}

/* ---- order: a sender's later messages are not stored ahead of a refused one ----------- */

/* Holds the sender's later SENDs behind id, refused for now. The first refusal wins: an
 * agent resends its oldest pending message first, which is that one. */
static void hold_sender(broker *b, const uint8_t *rid, size_t rid_len, const uint8_t id[16])
{
    session *s = session_by_rid(b, rid, rid_len);
    if (!s || s->held)
        return;
    s->held = 1;
    memcpy(s->held_id, id, 16);
    s->held_until_ms = refex_mono_ms() + HOLD_MS;
}

/* Whether a SEND of id from this session may be considered now; if not, the refusal's
 * detail is in detail. Sending the held message itself (or waiting HOLD_MS) lifts the
 * hold. */
static int held_back(broker *b, const peer *p, const uint8_t id[16], char *detail, size_t len)
{
    session *s = session_by_rid(b, p->rid, p->rid_len);
    if (!s || !s->held)
        return 0;
    if (memcmp(s->held_id, id, 16) == 0 || refex_mono_ms() >= s->held_until_ms) {
        s->held = 0;
        return 0;
    }
    char hex[33];
    refex_hex_encode(hex, s->held_id, 16);
    snprintf(detail, len, "behind message %s, which the broker refused for now; send it first",
             hex);
    return 1;
}

static void send_stored(broker *b, const reply *r, uint8_t gen[16])
{
    Refex__V1__Stored st = REFEX__V1__STORED__INIT;
    st.message_id = (ProtobufCBinaryData){16, (uint8_t *)r->id};
    st.store_seq = r->seq;
    st.store_generation = (ProtobufCBinaryData){16, gen};
    if (refex_link_send_msg(b->router, r->rid, r->rid_len, REFEX__V1__FRAME__KIND_STORED,
                            &st.base) != REFEX_OK)
        refex_log_warn("send: could not answer STORED (sender gone); it will retry");
}

/* Commits the cycle's writes; only then are STORED answers sent. If the store cannot
 * commit, every message of the batch is refused with E_STORE and stays in its sender's
 * outbox, and every session starts over from the oldest pending delivery. (The store
 * keeps the batch's acknowledgements even then when it can: see refex_store_ops.commit.) */
void queue_batch_end(broker *b)
{
    if (!b->in_batch)
        return;
    int rc = b->batch_failed ? REFEX_E_STORE : refex_store_commit(b->store);
    if (b->batch_failed)
        refex_store_rollback(b->store);
    b->in_batch = 0;
    b->batch_failed = 0;
    if (rc == REFEX_OK) {
        uint8_t gen[16];
        refex_store_generation(b->store, gen);
        for (size_t i = 0; i < b->n_replies; i++)
            send_stored(b, &b->replies[i], gen);
    } else {
        refex_log_error("store: commit failed; refusing %zu message(s) with E_STORE", b->n_replies);
        for (size_t i = 0; i < b->n_replies; i++) {
            broker_refused(b, REFEX_E_STORE);
            refex_link_send_rejected(b->router, b->replies[i].rid, b->replies[i].rid_len,
                                     b->replies[i].id, REFEX_E_STORE,
                                     "the broker could not store the message; retry later");
            hold_sender(b, b->replies[i].rid, b->replies[i].rid_len, b->replies[i].id);
        }
        session_rewind_all(b);
    }
    b->n_replies = 0;
}

/* ---- the store's identity: has it gone backwards? -------------------------------------- */

/* A new generation, committed before any WELCOME names it: the cycle's batch so far is
 * committed first (its STORED answers go out), then the renewal alone. */
static void renew_generation(broker *b)
{
    queue_batch_end(b);
    if (queue_batch_begin(b) == REFEX_OK && refex_store_renew(b->store) == REFEX_OK) {
        queue_batch_end(b);
        return;
    }
    b->batch_failed = 1;
    queue_batch_end(b);
    refex_log_error("store: could not record a new generation; agencies are told the old one "
                    "and their own highs, and send again what is above those");
}

void queue_welcome(broker *b, const char *agency, const Refex__V1__Hello *h, Refex__V1__Welcome *w,
                   uint8_t gen[16])
{
    uint64_t high = 0;
    int known = refex_store_sender_high(b->store, agency, &high) == REFEX_OK;
    refex_store_generation(b->store, gen);
    if (!known) /* not "nothing held": that would have the agency send everything again */
        refex_log_error("store: cannot read the highest seq held from %s; not checking "
                        "whether the store is behind",
                        agency);
    if (known && h->store_generation.len == 16 && memcmp(h->store_generation.data, gen, 16) == 0 &&
        h->stored_seq > high) {
        /* This agency was told STORED for more than the store holds: the store is a copy
         * from before, or lost its WAL. A new generation tells every agency to send again
         * what it holds no receipt for (duplicates of what the store has are recognised). */
        refex_log_warn("store: behind what %s was told: it holds up to seq %llu from it, "
                       "STORED was answered up to %llu; the store was restored from an older "
                       "copy or lost writes",
                       agency, (unsigned long long)high, (unsigned long long)h->stored_seq);
        renew_generation(b);
        refex_store_generation(b->store, gen);
    }
    w->store_generation = (ProtobufCBinaryData){16, gen};
    /* Unknown: the agency's own view, so it resends nothing on this store's account. */
    w->stored_seq = known ? high : h->stored_seq;
}

/* ---- expiry ---------------------------------------------------------------------------- */

typedef struct {
    uint8_t id[16];
    char sender[REFEX_ID_MAX];
    char recipient[REFEX_ID_MAX];
} expired_row;

typedef struct {
    expired_row rows[EXPIRE_BATCH];
    int n;
} expired_set;

static int collect_expired(void *vctx, const uint8_t id[16], const char *sender,
                           const char *recipient)
{
    expired_set *set = vctx;
    expired_row *r = &set->rows[set->n++];
    memcpy(r->id, id, 16);
    snprintf(r->sender, sizeof r->sender, "%s", sender);
    snprintf(r->recipient, sizeof r->recipient, "%s", recipient);
    return set->n == EXPIRE_BATCH;
}

/* Ends one expired delivery with a non-delivery report signed by the broker. */
static int expire_one(broker *b, const expired_row *r, int64_t now)
{
    refex_receipt nd;
    uint8_t *blob = NULL;
    size_t len = 0;
    char idhex[33];
    memset(&nd, 0, sizeof nd);
    memcpy(nd.message_id, r->id, 16);
    snprintf(nd.sender, sizeof nd.sender, "%s", r->sender);
    snprintf(nd.recipient, sizeof nd.recipient, "%s", r->recipient);
    snprintf(nd.signer, sizeof nd.signer, "%s", b->base.keys->pub.agency);
    nd.code = REFEX_E_EXPIRED;
    nd.time_ms = now;
    refex_hex_encode(idhex, r->id, 16);
    if (refex_receipt_sign(&nd, b->base.keys->sk->sign_sk, &blob, &len) != REFEX_OK)
        return REFEX_OK;
    int rc = refex_store_ack(b->store, r->recipient, r->sender, r->id, blob, len);
    free(blob);
    if (rc == REFEX_E_STORE)
        return rc;
    if (rc == REFEX_E_NOTFOUND)
        return REFEX_OK; /* acknowledged meanwhile, or expired by another broker node */
    refex_log_warn("expire: %s from %s to %s expired undelivered; non-delivery report "
                   "queued",
                   idhex, r->sender, r->recipient);
    session_mark(b, r->sender);
    return REFEX_OK;
}

/* Undelivered messages past their expiry: end the delivery and leave the sender a
 * non-delivery report signed by the broker. */
static void expire(broker *b)
{
    int64_t now = refex_now_ms();
    expired_set *set = calloc(1, sizeof *set);
    if (!set)
        return;
    if (refex_store_expired(b->store, now, EXPIRE_BATCH, collect_expired, set) != REFEX_OK ||
        set->n == 0 || queue_batch_begin(b) != REFEX_OK)
        goto out;
    for (int i = 0; i < set->n; i++)
        if (expire_one(b, &set->rows[i], now) == REFEX_E_STORE) {
            /* the rest are found again next second */
            b->batch_failed = !refex_store_batch_alive(b->store);
            break;
        }
out:
    free(set);
}

void queue_timers(broker *b)
{
    int64_t now = refex_mono_ms();
    if (now >= b->next_expiry_ms) {
        b->next_expiry_ms = now + 1000;
        expire(b);
    }
    if (now >= b->next_purge_ms) {
        b->next_purge_ms = now + 60000;
        if (queue_batch_begin(b) == REFEX_OK &&
            refex_store_purge(b->store, refex_now_ms()) != REFEX_OK &&
            !refex_store_batch_alive(b->store))
            b->batch_failed = 1;
    }
}

/* ---- SEND ---------------------------------------------------------------------------- */

/* The sender is the authenticated agency, in the directory and not revoked, and its
 * signature verifies. */
static int check_sender(broker *b, const char *agency, const Refex__V1__Envelope *env,
                        const Refex__V1__EnvelopeHeader *h, int64_t now, char *detail, size_t dlen)
{
    if (strcmp(h->sender, agency) != 0) {
        snprintf(detail, dlen, "envelope sender is not the authenticated agency %s", agency);
        return REFEX_E_SENDER_MISMATCH;
    }
    const refex_agency *sa = refex_directory_find(b->base.dir, agency);
    if (!sa) {
        snprintf(detail, dlen, "sender %s is not in the directory", agency);
        return REFEX_E_UNKNOWN_AGENCY;
    }
    if (refex_agency_usable(sa, now) != REFEX_OK) {
        snprintf(detail, dlen, "sender %s is revoked", agency);
        return REFEX_E_REVOKED;
    }
    int rc = refex_envelope_verify_from(env, h, sa, now);
    if (rc != REFEX_OK)
        snprintf(detail, dlen, "%s", refex_strerror(rc));
    return rc;
}

/* Every recipient is a usable agency (not the broker or a trust anchor); case updates go
 * only from and to the case's members, as its lead's grants say. */
static int check_recipients(broker *b, const char *agency, const Refex__V1__EnvelopeHeader *h,
                            int64_t now, char *detail, size_t dlen)
{
    for (size_t i = 0; i < h->n_recipients; i++) {
        const refex_agency *ra = refex_directory_find(b->base.dir, h->recipients[i]);
        if (!ra || strcmp(ra->role, "broker") == 0 || strcmp(ra->role, "trust-anchor") == 0) {
            snprintf(detail, dlen, "unknown recipient %s", h->recipients[i]);
            return REFEX_E_UNKNOWN_AGENCY;
        }
        if (refex_agency_usable(ra, now) != REFEX_OK) {
            snprintf(detail, dlen, "recipient %s is revoked", h->recipients[i]);
            return REFEX_E_REVOKED;
        }
    }
    if (h->type != REFEX__V1__MESSAGE_TYPE__CASE_UPDATE)
        return REFEX_OK;
    int member = h->case_ref[0] ? cases_is_member(b->cases, h->case_ref, agency, now) : 0;
    for (size_t i = 0; member > 0 && i < h->n_recipients; i++)
        if ((member = cases_is_member(b->cases, h->case_ref, h->recipients[i], now)) == 0) {
            snprintf(detail, dlen, "recipient %s is not a member of case %s", h->recipients[i],
                     h->case_ref);
            return REFEX_E_NOT_MEMBER;
        }
    if (member < 0) {
        snprintf(detail, dlen, "the broker cannot read its case records; retry later");
        return REFEX_E_STORE;
    }
    if (member == 0) {
        snprintf(detail, dlen, "%s is not a member of case %s", agency,
                 h->case_ref[0] ? h->case_ref : "(none)");
        return REFEX_E_NOT_MEMBER;
    }
    return REFEX_OK;
}

/* Checks everything the broker can see; on failure returns a code and a detail. */
static int check_envelope(broker *b, const char *agency, const Refex__V1__Envelope *env,
                          const Refex__V1__EnvelopeHeader *h, char *detail, size_t dlen)
{
    int64_t now = refex_now_ms();
    int rc = check_sender(b, agency, env, h, now, detail, dlen);
    if (rc == REFEX_OK)
        rc = check_recipients(b, agency, h, now, detail, dlen);
    if (rc != REFEX_OK)
        return rc;
    /* Only the future is suspicious: an envelope that waited in an offline sender's outbox
     * is old but valid until it expires. Replays are caught by the duplicate checks. */
    if (h->created_at_ms > now + b->base.skew_ms) {
        snprintf(detail, dlen,
                 "created_at is ahead of the broker's clock by more than the "
                 "allowed skew");
        return REFEX_E_CLOCK_SKEW;
    }
    if (h->expires_at_ms <= now) {
        snprintf(detail, dlen, "message expired before it reached the broker");
        return REFEX_E_EXPIRED;
    }
    /* No message lives longer than the documented maximum: nothing may be held for good. */
    if (h->created_at_ms > INT64_MAX - REFEX_MAX_TTL_MS ||
        h->expires_at_ms > h->created_at_ms + REFEX_MAX_TTL_MS) {
        snprintf(detail, dlen, "expires_at is more than %d days after created_at (the maximum TTL)",
                 REFEX_MAX_TTL_SECONDS / 86400);
        return REFEX_E_INVAL;
    }
    /* The information-sharing policy (lib/policy.c), for every recipient, before storing. */
    for (size_t i = 0; i < h->n_recipients && rc == REFEX_OK; i++)
        rc = refex_policy_check(b->base.dir, agency, (int)h->type, h->recipients[i], detail, dlen);
    return rc;
}

/* Holds the STORED answer for the batch's commit. */
static void reply_at_commit(broker *b, const peer *p, const uint8_t id[16], uint64_t seq)
{
    reply *r = &b->replies[b->n_replies++];
    memcpy(r->rid, p->rid, p->rid_len);
    r->rid_len = p->rid_len;
    memcpy(r->id, id, 16);
    r->seq = seq;
}

void queue_handle_send(broker *b, const peer *p, const Refex__V1__Frame *f)
{
    const Refex__V1__Send *s = f->send;
    Refex__V1__EnvelopeHeader *h = NULL;
    uint8_t *packed = NULL;
    size_t len = 0;
    char detail[256] = "", idhex[33] = "?";
    const uint8_t *id = NULL;
    int rc = refex_envelope_parse_header(s->envelope, &h);
    if (rc != REFEX_OK) {
        snprintf(detail, sizeof detail, "%s",
                 rc == REFEX_E_VERSION ? "unsupported envelope version"
                                       : "envelope header is malformed");
        goto out;
    }
    id = h->message_id.data;
    refex_hex_encode(idhex, id, 16);
    if (held_back(b, p, id, detail, sizeof detail)) {
        rc = REFEX_E_BUSY;
        goto out;
    }
    if ((rc = check_envelope(b, p->agency, s->envelope, h, detail, sizeof detail)) != REFEX_OK)
        goto out;
    if (b->n_replies == BATCH_MAX) { /* cannot happen: batches are at most BATCH_MAX frames */
        rc = REFEX_E_BUSY;
        goto out;
    }
    if ((rc = refex_pb_pack(&s->envelope->base, &packed, &len)) != REFEX_OK)
        goto out;
    if ((rc = queue_batch_begin(b)) == REFEX_OK)
        rc = refex_store_put(b->store, id, p->agency, (const char *const *)h->recipients,
                             h->n_recipients, packed, len, h->expires_at_ms);
    if (rc == REFEX_E_DUPLICATE) {
        /* A retry of something already accepted: answer STORED again, route nothing. */
        refex_log_info("send: %s from %s is a duplicate; already stored", idhex, p->agency);
    } else if (rc == REFEX_OK) {
        refex_log_info("send: %s from %s, type %d, %zu recipient(s), %zu bytes", idhex, p->agency,
                       (int)h->type, h->n_recipients, len);
        for (size_t i = 0; i < h->n_recipients; i++)
            session_mark(b, h->recipients[i]);
    } else if (rc == REFEX_E_STORE && refex_store_batch_alive(b->store)) {
        /* Only this message could not be written (e.g. the store is full): refuse it now;
         * the rest of the batch, ACKs included (which free space), still commits. */
        snprintf(detail, sizeof detail, "%s", refex_store_refusal(b->store));
        hold_sender(b, p->rid, p->rid_len, id);
        goto out;
    } else {
        /* The batch's transaction is gone: refuse all of it at commit. */
        b->batch_failed = 1;
    }
    /* STORED (or E_STORE) is answered when the batch commits. */
    reply_at_commit(b, p, id, refex_store_put_seq(b->store));
    rc = REFEX_OK;
out:
    if (rc != REFEX_OK) {
        if (broker_may_warn(b, p->agency))
            refex_log_warn("send: rejected %s from %s: %s (%s)", idhex, p->agency,
                           refex_errname(rc), detail);
        refex_link_send_rejected(b->router, p->rid, p->rid_len, id, rc, detail);
        broker_refused(b, rc);
    }
    free(packed);
    if (h)
        refex__v1__envelope_header__free_unpacked(h, NULL);
}

/* ---- ACK and RECEIPT_ACK --------------------------------------------------------------- */

/* The recipient's ACK carries its signed receipt; check it is the recipient's own word
 * about this very message before ending the delivery. */
static int check_ack_receipt(broker *b, const char *agency, const Refex__V1__Ack *a)
{
    refex_receipt r;
    int rc = a->receipt ? refex_receipt_verify(a->receipt, b->base.dir, &r) : REFEX_E_MALFORMED;
    if (rc == REFEX_OK &&
        (memcmp(r.message_id, a->message_id.data, 16) != 0 || strcmp(r.sender, a->sender) != 0 ||
         strcmp(r.recipient, agency) != 0 || strcmp(r.signer, agency) != 0 || r.code != a->code))
        rc = REFEX_E_MALFORMED;
    return rc;
}

void queue_handle_ack(broker *b, const peer *p, const Refex__V1__Frame *f)
{
    const Refex__V1__Ack *a = f->ack;
    const char *agency = p->agency;
    char idhex[33];
    uint8_t *blob = NULL;
    size_t len = 0;
    refex_hex_encode(idhex, a->message_id.data, 16);
    int rc = check_ack_receipt(b, agency, a);
    if (rc != REFEX_OK) {
        if (broker_may_warn(b, agency))
            refex_log_warn("ack: %s from %s refused: receipt %s", idhex, agency, refex_errname(rc));
        refex_link_send_error(b->router, p->rid, p->rid_len, rc,
                              "ACK needs the recipient's receipt");
        return;
    }
    if (refex_pb_pack(&a->receipt->base, &blob, &len) != REFEX_OK)
        return;
    if ((rc = queue_batch_begin(b)) == REFEX_OK)
        rc = refex_store_ack(b->store, agency, a->sender, a->message_id.data, blob, len);
    free(blob);
    session *s = session_by_agency(b, agency);
    if (s) {
        if (s->deliveries.inflight > 0)
            s->deliveries.inflight--;
        s->deliveries.progress_ms = refex_mono_ms();
        s->dirty = 1;
    }
    if (rc == REFEX_E_STORE) {
        /* Not recorded: the delivery stays pending and is redelivered later. */
        if (!refex_store_batch_alive(b->store))
            b->batch_failed = 1;
    } else if (rc != REFEX_OK) {
        refex_log_debug("ack: %s from %s for %s: nothing pending", idhex, agency, a->sender);
    } else {
        if (a->code != 0)
            refex_log_warn("ack: %s refused by %s: %s; dead-lettered, negative receipt queued",
                           idhex, agency, refex_errname((int)a->code));
        else
            refex_log_info("ack: %s delivered to %s", idhex, agency);
        session_mark(b, a->sender);
    }
}

void queue_handle_receipt_ack(broker *b, const peer *p, const Refex__V1__Frame *f)
{
    const Refex__V1__ReceiptAck *ra = f->receipt_ack;
    if (!refex_id_valid(ra->recipient)) {
        if (broker_may_warn(b, p->agency))
            refex_log_warn("receipt_ack: from %s names no valid recipient", p->agency);
        refex_link_send_error(b->router, p->rid, p->rid_len, REFEX_E_MALFORMED,
                              "RECEIPT_ACK needs the recipient's agency id");
        return;
    }
    int rc = queue_batch_begin(b);
    if (rc == REFEX_OK)
        rc = refex_store_receipt_ack(b->store, p->agency, ra->message_id.data, ra->recipient);
    if (rc == REFEX_E_STORE && !refex_store_batch_alive(b->store))
        b->batch_failed = 1;
    session *s = session_by_agency(b, p->agency);
    if (s) {
        s->receipts.progress_ms = refex_mono_ms();
        if (s->receipts.inflight > 0)
            s->receipts.inflight--;
    }
}
