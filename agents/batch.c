/* Group commit: the work of one poll cycle shares one transaction, each piece in its own
 * savepoint; frames for the broker and replies to control clients that depend on it wait
 * in the out queue until it commits. The envelopes and receipts among those frames are
 * signed then, all with one batch signature (lib/batchsig.h). Not the work itself. */
#include "agent.h"

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "batchsig.h"
#include "codec.h"
#include "link.h"
#include "log.h"
#include "util.h"

/* ---- replies and frames held for the commit ------------------------------------------ */

static void control_send(agent *a, const uint8_t *rid, size_t rid_len, const char *text, size_t len)
{
    zmq_send(a->control, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(a->control, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(a->control, text, len, ZMQ_DONTWAIT);
}

/* Queues data (taking ownership) until the batch commits. */
static int outq_push(agent *a, const uint8_t *rid, size_t rid_len, char *data, size_t len)
{
    if (a->outq_n == a->outq_cap) {
        size_t cap = a->outq_cap ? a->outq_cap * 2 : 64;
        struct out_item *q = realloc(a->outq, cap * sizeof *q);
        if (!q) {
            free(data);
            return REFEX_E_NOMEM;
        }
        a->outq = q;
        a->outq_cap = cap;
    }
    struct out_item *it = &a->outq[a->outq_n++];
    if (rid_len)
        memcpy(it->rid, rid, rid_len);
    it->rid_len = rid_len;
    it->data = data;
    it->len = len;
    it->to_sign = 0;
    return REFEX_OK;
}

/* ---- batch signatures ---------------------------------------------------------------- */

/* Where a frame's batch proof goes: the envelope of a SEND, the receipt of an ACK; NULL for
 * frames that carry nothing we sign this way. */
static Refex__V1__BatchProof **proof_slot(const Refex__V1__Frame *f)
{
    if (f->kind_case == REFEX__V1__FRAME__KIND_SEND && f->send && f->send->envelope)
        return &f->send->envelope->batch;
    if (f->kind_case == REFEX__V1__FRAME__KIND_ACK && f->ack && f->ack->receipt)
        return &f->ack->receipt->batch;
    return NULL;
}

static void frame_leaf(const Refex__V1__Frame *f, uint8_t leaf[32])
{
    if (f->kind_case == REFEX__V1__FRAME__KIND_SEND)
        refex_batch_envelope_leaf(f->send->envelope->header.data, f->send->envelope->header.len,
                                  leaf);
    else
        refex_batch_receipt_leaf(f->ack->receipt->receipt.data, f->ack->receipt->receipt.len, leaf);
}

/* Packs f with proof p in its slot (borrowed for the packing only; whatever proof the slot
 * held is put back, for its owner to free), and without an envelope's old single signature,
 * which no verifier accepts beside a proof (nor does the envelope hash cover it). */
static int pack_with_proof(Refex__V1__Frame *f, const refex_batch_proof *p, uint8_t **out,
                           size_t *len)
{
    Refex__V1__BatchProof pb, **slot = proof_slot(f), *old = *slot;
    ProtobufCBinaryData path[REFEX_BATCH_MAX_PATH], sig = {0, NULL};
    refex_batch_proof_pb(p, &pb, path);
    *slot = &pb;
    if (f->kind_case == REFEX__V1__FRAME__KIND_SEND) {
        sig = f->send->envelope->signature;
        f->send->envelope->signature = (ProtobufCBinaryData){0, NULL};
    }
    f->version = REFEX_PROTOCOL_VERSION;
    int rc = refex_frame_pack(f, out, len);
    *slot = old;
    if (f->kind_case == REFEX__V1__FRAME__KIND_SEND)
        f->send->envelope->signature = sig;
    return rc;
}

/* Outside a batch a frame to sign is a batch of its own. */
static int send_signed_alone(agent *a, Refex__V1__Frame *f)
{
    uint8_t leaf[1][32], *buf = NULL;
    size_t len = 0;
    refex_batch_proof *one = malloc(sizeof *one);
    if (!one)
        return REFEX_E_NOMEM;
    frame_leaf(f, leaf[0]);
    int rc = refex_batch_sign(leaf, 1, a->base.keys->sk->sign_sk, one, NULL);
    if (rc == REFEX_OK)
        rc = pack_with_proof(f, one, &buf, &len);
    free(one);
    if (rc == REFEX_OK && zmq_send(a->link, buf, len, ZMQ_DONTWAIT) < 0)
        rc = REFEX_E_IO;
    else if (rc == REFEX_OK)
        a->last_sent_ms = refex_mono_ms();
    free(buf);
    return rc;
}

/* One proof for the queued item; replaces its frame with the frame carrying it. */
static int attach(struct out_item *it, const refex_batch_proof *p)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    Refex__V1__Frame *f = refex__v1__frame__unpack(NULL, it->len, (const uint8_t *)it->data);
    int rc = f && proof_slot(f) ? pack_with_proof(f, p, &buf, &len) : REFEX_E_MALFORMED;
    if (f)
        refex__v1__frame__free_unpacked(f, NULL);
    if (rc != REFEX_OK)
        return rc;
    free(it->data);
    it->data = (char *)buf;
    it->len = len;
    it->to_sign = 0;
    return REFEX_OK;
}

/* Signs every envelope and receipt in the committed out queue with one signature: the
 * tree over their leaves, in queue order. A frame that could not be signed is not sent
 * (the outbox sends it again; the broker delivers again what was not acknowledged). */
void batch_sign_queue(agent *a)
{
    size_t n = 0, k = 0;
    for (size_t i = 0; i < a->outq_n; i++)
        n += a->outq[i].to_sign != 0;
    if (n == 0)
        return;
    uint8_t(*leaves)[32] = malloc(n * sizeof *leaves);
    refex_batch_proof *proofs = malloc(n * sizeof *proofs);
    int rc = leaves && proofs ? REFEX_OK : REFEX_E_NOMEM;
    for (size_t i = 0; rc == REFEX_OK && i < a->outq_n; i++)
        if (a->outq[i].to_sign)
            memcpy(leaves[k++], a->outq[i].leaf, 32);
    if (rc == REFEX_OK)
        rc = refex_batch_sign((const uint8_t(*)[32])leaves, n, a->base.keys->sk->sign_sk, proofs,
                              NULL);
    k = 0;
    for (size_t i = 0; i < a->outq_n; i++) {
        struct out_item *it = &a->outq[i];
        if (!it->to_sign)
            continue;
        /* An item still to_sign after this is withheld by batch_end. */
        if (rc != REFEX_OK || attach(it, &proofs[k]) != REFEX_OK)
            refex_log_warn("batch: a frame could not be signed; it will be retried");
        k++;
    }
    free(leaves);
    free(proofs);
}

void batch_reply(agent *a, const uint8_t *rid, size_t rid_len, json_t *reply)
{
    if (a->reply_sink) {
        if (reply)
            json_array_append_new(a->reply_sink, reply);
        return;
    }
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    if (!text)
        return;
    if (a->in_batch && rid_len) {
        outq_push(a, rid, rid_len, text, strlen(text));
        return;
    }
    control_send(a, rid, rid_len, text, strlen(text));
    free(text);
}

/* A frame for the broker: queued while a batch is open, so the broker never hears of
 * anything (a new message, an ACK, a receipt acknowledgement) before it is committed. */
int batch_link_out(agent *a, Refex__V1__Frame__KindCase kind, const ProtobufCMessage *m)
{
    Refex__V1__Frame f;
    int rc = refex_frame_wrap(&f, kind, m);
    int to_sign = rc == REFEX_OK && proof_slot(&f) != NULL;
    if (rc != REFEX_OK || !a->in_batch) {
        if (rc != REFEX_OK)
            return rc;
        return to_sign ? send_signed_alone(a, &f) : refex_link_send(a->link, NULL, 0, &f);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    f.version = REFEX_PROTOCOL_VERSION;
    rc = refex_frame_pack(&f, &buf, &len);
    if (rc == REFEX_OK)
        rc = outq_push(a, NULL, 0, (char *)buf, len);
    if (rc == REFEX_OK && to_sign) {
        struct out_item *it = &a->outq[a->outq_n - 1];
        it->to_sign = 1;
        frame_leaf(&f, it->leaf);
    }
    return rc;
}

/* ---- batches ------------------------------------------------------------------------- */

/* One unit of work inside the cycle's transaction. */
int batch_unit_begin(agent *a)
{
    if (a->batch_dead)
        return REFEX_E_DB;
    if (!a->in_batch) {
        int rc = agent_store_begin(a->store);
        if (rc != REFEX_OK)
            return rc;
        a->in_batch = 1;
    }
    return agent_store_savepoint(a->store);
}

int batch_unit_end(agent *a, int ok)
{
    int rc = REFEX_E_DB;
    if (ok)
        rc = agent_store_release(a->store);
    else if (agent_store_undo(a->store) != REFEX_OK)
        refex_log_error("db: could not release a rolled-back unit");
    /* Some errors (disk full, I/O) make SQLite roll back the whole transaction: then the
     * batch is lost, and nothing more may be done in it or reported as committed. */
    if (agent_store_autocommit(a->store)) {
        a->batch_dead = 1;
        rc = REFEX_E_DB;
    }
    return rc;
}

/* Commits the cycle (one fsync for everything in it), then sends what waited for it. If
 * the commit fails nothing is sent to the broker (it will redeliver; our outbox retries)
 * and every waiting control client is told. */
void batch_end(agent *a)
{
    int rc = REFEX_OK;
    if (a->batch_dead) {
        agent_store_rollback(a->store);
        rc = REFEX_E_DB;
    } else if (a->in_batch) {
        rc = agent_store_commit(a->store);
    }
    a->in_batch = a->batch_dead = 0;
    if (rc == REFEX_OK)
        batch_sign_queue(a);
    for (size_t i = 0; i < a->outq_n; i++) {
        struct out_item *it = &a->outq[i];
        if (rc == REFEX_OK && it->rid_len == 0 && it->to_sign) {
            /* withheld: could not be signed */
        } else if (rc == REFEX_OK && it->rid_len == 0) {
            if (zmq_send(a->link, it->data, it->len, ZMQ_DONTWAIT) < 0)
                refex_log_warn("link: a frame could not be sent now; it will be retried");
            else
                a->last_sent_ms = refex_mono_ms();
        } else if (rc == REFEX_OK) {
            control_send(a, it->rid, it->rid_len, it->data, it->len);
        } else if (it->rid_len) {
            json_t *e = control_error(REFEX_E_DB, "the agent could not commit; try again");
            char *text = json_dumps(e, JSON_COMPACT);
            json_decref(e);
            if (text)
                control_send(a, it->rid, it->rid_len, text, strlen(text));
            free(text);
        }
        free(it->data);
    }
    if (rc != REFEX_OK && a->outq_n)
        refex_log_error("batch: commit failed; %zu frame(s) and reply(ies) withheld", a->outq_n);
    a->outq_n = 0;
    /* Clients waiting for a STORED: if their message did not commit, tell them now. */
    for (size_t i = 0; i < a->n_waiters; i++) {
        waiter *w = &a->waiters[i];
        if (w->committed)
            continue;
        if (rc == REFEX_OK) {
            w->committed = 1;
            continue;
        }
        json_t *e = control_error(REFEX_E_DB, "the agent could not commit; nothing was sent");
        char *text = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        if (text)
            control_send(a, w->rid, w->rid_len, text, strlen(text));
        free(text);
        a->waiters[i--] = a->waiters[--a->n_waiters];
    }
    /* Inbox waiters: a delivery that committed answers them in this same loop turn. */
    if (a->inbox_grew && rc == REFEX_OK)
        inbox_wait_wake(a);
    a->inbox_grew = 0;
}
