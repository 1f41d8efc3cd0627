/* Sessions and the delivery pump: which agency is on which connection, and what each has
 * been sent. Each agency gets at most `window` unacknowledged deliveries at a time, read
 * from disk as the window opens, so memory stays bounded whatever the backlog. Not for
 * deciding what is stored (queue.c) or checking frames (broker.c). */
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "broker.h"
#include "codec.h"
#include "link.h"
#include "log.h"
#include "util.h"

session *session_by_rid(broker *b, const uint8_t *rid, size_t len)
{
    for (size_t i = 0; i < b->n_sessions; i++)
        if (b->sessions[i].rid_len == len && memcmp(b->sessions[i].rid, rid, len) == 0)
            return &b->sessions[i];
    return NULL;
}

session *session_by_agency(broker *b, const char *agency)
{
    for (size_t i = 0; i < b->n_sessions; i++)
        if (strcmp(b->sessions[i].agency, agency) == 0)
            return &b->sessions[i];
    return NULL;
}

void session_drop(broker *b, session *s)
{
    refex_log_info("session: %s offline", s->agency);
    *s = b->sessions[--b->n_sessions];
}

void session_mark(broker *b, const char *agency)
{
    session *s = session_by_agency(b, agency);
    if (s)
        s->dirty = 1;
}

void session_rewind_all(broker *b)
{
    for (size_t i = 0; i < b->n_sessions; i++) {
        b->sessions[i].deliveries.cursor = b->sessions[i].receipts.cursor = 0;
        b->sessions[i].deliveries.inflight = b->sessions[i].receipts.inflight = 0;
        b->sessions[i].dirty = 1;
    }
}

/* Connection events: a closed connection ends its session at once, before its routing id
 * can be taken by anyone else. */
void session_monitor_drain(broker *b)
{
    int ev, fd = -1;
    while ((ev = refex_link_monitor_event(b->mon, &fd)) >= 0) {
        if (ev != ZMQ_EVENT_DISCONNECTED)
            continue;
        for (size_t i = 0; i < b->n_sessions; i++)
            if (b->sessions[i].fd == fd)
                session_drop(b, &b->sessions[i--]);
    }
}

int session_bind(broker *b, const peer *p)
{
    session *s = session_by_agency(b, p->agency);
    session *other = session_by_rid(b, p->rid, p->rid_len);
    if (other && other != s)
        session_drop(b, other);
    s = session_by_agency(b, p->agency);
    if (!s) {
        if (b->n_sessions == MAX_SESSIONS)
            return REFEX_E_UNAVAILABLE;
        s = &b->sessions[b->n_sessions++];
    }
    memset(s, 0, sizeof *s);
    snprintf(s->agency, sizeof s->agency, "%s", p->agency);
    memcpy(s->rid, p->rid, p->rid_len);
    s->rid_len = p->rid_len;
    s->fd = p->fd;
    s->has_transport_pk = p->key_hex && strlen(p->key_hex) == 64 &&
                          refex_hex_decode(s->transport_pk, 32, p->key_hex) == REFEX_OK;
    s->deliveries.progress_ms = s->receipts.progress_ms = refex_mono_ms();
    s->dirty = 1;
    return REFEX_OK;
}

int session_send(broker *b, const session *s, Refex__V1__Frame__KindCase kind,
                 const ProtobufCMessage *m)
{
    return refex_link_send_msg(b->router, s->rid, s->rid_len, kind, m);
}

int session_send_packed(broker *b, const session *s, Refex__V1__Frame__KindCase kind,
                        const uint8_t *blob, size_t len)
{
    union {
        Refex__V1__Deliver deliver;
        Refex__V1__ReceiptDeliver receipt;
        Refex__V1__GrantNotice grant;
        Refex__V1__SubscriptionNotice subscription;
    } carrier;
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(&refex__v1__frame__descriptor, (unsigned)kind);
    const ProtobufCMessageDescriptor *cd = fd ? fd->descriptor : NULL;
    if (!cd || cd->n_fields != 1 || cd->fields[0].type != PROTOBUF_C_TYPE_MESSAGE ||
        cd->sizeof_message > sizeof carrier)
        return REFEX_E_INVAL;
    ProtobufCMessage *obj = protobuf_c_message_unpack(cd->fields[0].descriptor, NULL, len, blob);
    if (!obj)
        return REFEX_E_MALFORMED;
    protobuf_c_message_init(cd, &carrier);
    int rc = refex_pb_set_message((ProtobufCMessage *)&carrier, cd->fields[0].id, obj);
    if (rc == REFEX_OK)
        rc = session_send(b, s, kind, (const ProtobufCMessage *)&carrier);
    protobuf_c_message_free_unpacked(obj, NULL);
    return rc;
}

/* ---- delivery ------------------------------------------------------------------------ */

typedef struct {
    broker *b;
    session *s;
    int stop; /* REFEX_E_BUSY or REFEX_E_UNAVAILABLE once sending failed */
} pump_ctx;

/* Sends one stored object of a pump (REFEX_E_MALFORMED: unreadable, to be skipped); if
 * sending failed, records why the pump stops. */
static int pump_send(pump_ctx *c, Refex__V1__Frame__KindCase kind, const uint8_t *blob, size_t len)
{
    int rc = session_send_packed(c->b, c->s, kind, blob, len);
    if (rc != REFEX_OK && rc != REFEX_E_MALFORMED)
        c->stop = rc == REFEX_E_BUSY ? REFEX_E_BUSY : REFEX_E_UNAVAILABLE;
    return rc;
}

/* How many deliveries may be in flight when the next one is len bytes: `window`, fewer for
 * a large one (window_bytes / len), at least one. So a large delivery waits until few are
 * in flight, while small ones behind a large one that is held unacknowledged still flow;
 * the bytes in flight stay within about window_bytes x ln(window) at worst. */
static uint64_t window_for(const broker *b, size_t len)
{
    uint64_t n = len ? b->window_bytes / len : b->window;
    return n < 1 ? 1 : n > b->window ? b->window : n;
}

static int deliver_one(void *vctx, int64_t seq, const uint8_t id[16], const char *sender,
                       const uint8_t *env, size_t env_len)
{
    pump_ctx *c = vctx;
    session_flow *d = &c->s->deliveries;
    if (d->inflight > 0 && (uint64_t)d->inflight >= window_for(c->b, env_len))
        return 1; /* it waits (and so, for order, do those behind it) for room for its size */
    char idhex[33];
    refex_hex_encode(idhex, id, 16);
    int rc = pump_send(c, REFEX__V1__FRAME__KIND_DELIVER, env, env_len);
    if (c->stop)
        return 1;
    c->s->deliveries.cursor = seq;
    if (rc == REFEX_E_MALFORMED) {
        refex_log_error("deliver: stored envelope %s from %s is unreadable", idhex, sender);
        return 0;
    }
    d->inflight++;
    refex_log_debug("deliver: %s from %s to %s", idhex, sender, c->s->agency);
    return 0;
}

static int receipt_one(void *vctx, int64_t seq, const uint8_t id[16], const char *recipient,
                       const uint8_t *receipt, size_t len)
{
    pump_ctx *c = vctx;
    (void)id;
    (void)recipient;
    int rc = pump_send(c, REFEX__V1__FRAME__KIND_RECEIPT, receipt, len);
    if (c->stop)
        return 1;
    c->s->receipts.cursor = seq;
    if (rc == REFEX_OK && c->s->receipts.inflight++ == 0)
        c->s->receipts.progress_ms = refex_mono_ms();
    return 0;
}

/* Fills the session's delivery window from the store, and sends waiting receipts.
 * Returns REFEX_E_UNAVAILABLE if the peer is gone (the caller ends the session). */
static int pump(broker *b, session *s)
{
    pump_ctx c = {b, s, 0};
    s->dirty = 0;
    session_flow *d = &s->deliveries;
    if ((uint64_t)d->inflight < b->window) {
        if (d->inflight == 0)
            d->progress_ms = refex_mono_ms();
        if (refex_store_pending(b->store, s->agency, d->cursor,
                                (int)(b->window - (uint64_t)d->inflight), deliver_one,
                                &c) != REFEX_OK)
            refex_log_error("deliver: cannot read the backlog of %s", s->agency);
    }
    if (!c.stop && refex_store_receipts(b->store, s->agency, s->receipts.cursor, (int)b->window,
                                        receipt_one, &c) != REFEX_OK)
        refex_log_error("receipt: cannot read the receipts of %s", s->agency);
    if (c.stop == REFEX_E_BUSY)
        s->dirty = 1; /* try again next cycle */
    return c.stop == REFEX_E_UNAVAILABLE ? REFEX_E_UNAVAILABLE : REFEX_OK;
}

/* Nothing acknowledged for a while: send everything unacknowledged again (the recipient
 * collapses duplicates by message id). Deliveries and receipts each have their own
 * silence: traffic on one must not hide a stall of the other. */
static void restart_if_stalled(broker *b, session *s, session_flow *f, const char *what,
                               const char *action, int64_t now)
{
    if (f->inflight <= 0 || now - f->progress_ms <= (int64_t)b->redeliver_ms)
        return;
    refex_log_info("%s: no acknowledgement from %s for %llu s; %s", what, s->agency,
                   (unsigned long long)(b->redeliver_ms / 1000), action);
    f->cursor = 0;
    f->inflight = 0;
    f->progress_ms = now;
    s->dirty = 1;
}

void session_pump_all(broker *b)
{
    int64_t now = refex_mono_ms();
    for (size_t i = 0; i < b->n_sessions; i++) {
        session *s = &b->sessions[i];
        restart_if_stalled(b, s, &s->deliveries, "deliver", "redelivering", now);
        restart_if_stalled(b, s, &s->receipts, "receipt", "sending again", now);
        if (s->dirty && pump(b, s) == REFEX_E_UNAVAILABLE)
            session_drop(b, &b->sessions[i--]);
    }
}
