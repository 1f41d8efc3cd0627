/* Group commit: the work of one poll cycle shares one transaction, each piece in its own
 * savepoint; frames for the broker and replies to control clients that depend on it wait
 * in the out queue until it commits. Not the work itself. */
#include "agent.h"

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

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
    return REFEX_OK;
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
    if (rc != REFEX_OK || !a->in_batch)
        return rc != REFEX_OK ? rc : refex_link_send(a->link, NULL, 0, &f);
    uint8_t *buf = NULL;
    size_t len = 0;
    f.version = REFEX_PROTOCOL_VERSION;
    rc = refex_frame_pack(&f, &buf, &len);
    return rc == REFEX_OK ? outq_push(a, NULL, 0, (char *)buf, len) : rc;
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
    for (size_t i = 0; i < a->outq_n; i++) {
        struct out_item *it = &a->outq[i];
        if (rc == REFEX_OK && it->rid_len == 0) {
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
