/* The broker's event loop: one thread, one zmq_poll over the agent-facing ROUTER, its
 * connection monitor and the ZAP handler. Every frame is checked before anything is
 * stored. Writes of one poll cycle share one SQLite transaction (group commit); STORED
 * answers, deliveries and receipts go out only after that commit. Each agency gets at
 * most `window` unacknowledged deliveries at a time, read from disk as the window opens,
 * so memory stays bounded whatever the backlog. Logs carry ids and agency names only: the
 * broker never sees a body. */
#include "broker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "codec.h"
#include "daemon.h"
#include "directory.h"
#include "envelope.h"
#include "keys.h"
#include "link.h"
#include "log.h"
#include "receipt.h"
#include "store.h"
#include "util.h"
#include "cases.h"
#include "witness.h"
#include "zap.h"

#define MAX_SESSIONS 1024
#define RID_MAX      256
#define BATCH_MAX    256
#define EXPIRE_BATCH 256

/* A HELLO binds an agency to one connection: its routing id and, because a client may
 * choose its own routing id, the file descriptor it arrived on. Frames from that routing id
 * by another identity or fd, and the connection's DISCONNECTED event, end the session. */
typedef struct {
    char agency[REFEX_ID_MAX];
    uint8_t rid[RID_MAX];
    size_t rid_len;
    int fd;
    int64_t cursor;         /* last delivery seq sent on this session */
    int inflight;           /* deliveries sent and not yet acknowledged */
    int64_t receipt_cursor; /* last receipt seq sent */
    int receipts_inflight;  /* receipts sent and not yet acknowledged */
    int64_t progress_ms;    /* last ACK, or when the delivery window was opened */
    int64_t r_progress_ms;  /* last RECEIPT_ACK, or when receipts were first sent */
    int dirty;              /* new deliveries or receipts may be waiting */
} session;

/* A STORED (or, if the batch fails, REJECTED) answer held until the batch commits. */
typedef struct {
    uint8_t rid[RID_MAX];
    size_t rid_len;
    uint8_t id[16];
} reply;

struct broker {
    char listen[512];
    refex_daemon_base base;
    refex_store *store;
    witness *witness;
    cases *cases;
    uint64_t window, redeliver_ms, store_max;
    void *ctx, *router, *zap, *mon;
    session sessions[MAX_SESSIONS];
    size_t n_sessions;
    reply replies[BATCH_MAX];
    size_t n_replies;
    int in_batch, batch_failed;
    int64_t next_expiry_ms, next_purge_ms;
};

static const char *const CONFIG_KEYS[] = {
    "listen", "window", "redeliver_seconds", "store_max", REFEX_DAEMON_BASE_KEYS, NULL};

int broker_open(const refex_config *cfg, broker **out, char *err, size_t errlen)
{
    int rc;
    char path[4200];
    uint64_t redeliver = 30;
    broker *b = calloc(1, sizeof *b);
    *out = NULL;
    if (!b)
        return REFEX_E_NOMEM;
    if ((rc = refex_config_check_keys(cfg, CONFIG_KEYS, err, errlen)) != REFEX_OK)
        goto out;
    const char *listen = refex_config_get(cfg, "listen");
    snprintf(b->listen, sizeof b->listen, "%s", listen ? listen : "tcp://127.0.0.1:7600");
    rc = REFEX_E_CONFIG;
    if (refex_config_uint(cfg, "window", 64, &b->window) || b->window < 1 || b->window > 4096) {
        snprintf(err, errlen, "config: window must be between 1 and 4096");
        goto out;
    }
    if (refex_config_uint(cfg, "redeliver_seconds", 30, &redeliver) || redeliver < 1 ||
        redeliver > 86400) {
        snprintf(err, errlen, "config: redeliver_seconds must be between 1 and 86400");
        goto out;
    }
    b->redeliver_ms = redeliver * 1000;
    if (refex_config_uint(cfg, "store_max", 0, &b->store_max)) {
        snprintf(err, errlen, "config: store_max must be a size such as 10G");
        goto out;
    }
    if ((rc = refex_daemon_base_load(cfg, "the broker's .secret file", &b->base, err, errlen)) !=
        REFEX_OK)
        goto out;
    snprintf(path, sizeof path, "%s/queue.db", b->base.data_dir);
    if ((rc = refex_store_sqlite_open(path, b->store_max, &b->store, err, errlen)) != REFEX_OK)
        goto out;
    snprintf(path, sizeof path, "%s/witness.db", b->base.data_dir);
    if ((rc = witness_open(path, &b->witness, err, errlen)) != REFEX_OK)
        goto out;
    snprintf(path, sizeof path, "%s/cases.db", b->base.data_dir);
    if ((rc = cases_open(path, &b->cases, err, errlen)) != REFEX_OK)
        goto out;
    *out = b;
    b = NULL;
out:
    broker_close(&b);
    return rc;
}

void broker_close(broker **b_p)
{
    if (!b_p || !*b_p)
        return;
    broker *b = *b_p;
    if (b->router && b->mon)
        zmq_socket_monitor(b->router, NULL, 0); /* while its reader is still open */
    if (b->mon)
        zmq_close(b->mon);
    if (b->router)
        zmq_close(b->router);
    if (b->zap)
        zmq_close(b->zap);
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    refex_store_destroy(&b->store);
    witness_close(&b->witness);
    cases_close(&b->cases);
    refex_daemon_base_fini(&b->base);
    free(b);
    *b_p = NULL;
}

/* ---- sessions: agency <-> connection ------------------------------------------------- */

static session *session_by_rid(broker *b, const uint8_t *rid, size_t len)
{
    for (size_t i = 0; i < b->n_sessions; i++)
        if (b->sessions[i].rid_len == len && memcmp(b->sessions[i].rid, rid, len) == 0)
            return &b->sessions[i];
    return NULL;
}

static session *session_by_agency(broker *b, const char *agency)
{
    for (size_t i = 0; i < b->n_sessions; i++)
        if (strcmp(b->sessions[i].agency, agency) == 0)
            return &b->sessions[i];
    return NULL;
}

static void session_drop(broker *b, session *s)
{
    refex_log_info("session: %s offline", s->agency);
    *s = b->sessions[--b->n_sessions];
}

static void session_mark(broker *b, const char *agency)
{
    session *s = session_by_agency(b, agency);
    if (s)
        s->dirty = 1;
}

/* Connection events: a closed connection ends its session at once, before its routing id
 * can be taken by anyone else. */
static void monitor_drain(broker *b)
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

static int session_bind(broker *b, const char *agency, const uint8_t *rid, size_t len, int fd)
{
    session *s = session_by_agency(b, agency);
    session *other = session_by_rid(b, rid, len);
    if (other && other != s)
        session_drop(b, other);
    s = session_by_agency(b, agency);
    if (!s) {
        if (b->n_sessions == MAX_SESSIONS)
            return REFEX_E_UNAVAILABLE;
        s = &b->sessions[b->n_sessions++];
    }
    memset(s, 0, sizeof *s);
    snprintf(s->agency, sizeof s->agency, "%s", agency);
    memcpy(s->rid, rid, len);
    s->rid_len = len;
    s->fd = fd;
    s->progress_ms = s->r_progress_ms = refex_mono_ms();
    s->dirty = 1;
    return REFEX_OK;
}

/* ---- batches: one transaction per poll cycle ------------------------------------------ */

static int batch_begin(broker *b)
{
    if (b->in_batch)
        return b->batch_failed ? REFEX_E_STORE : REFEX_OK;
    int rc = b->store->ops->begin(b->store->impl);
    b->in_batch = 1;
    b->batch_failed = rc != REFEX_OK;
    return rc;
}

static void send_stored(broker *b, const reply *r)
{
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Stored st = REFEX__V1__STORED__INIT;
    st.message_id = (ProtobufCBinaryData){16, (uint8_t *)r->id};
    f.kind_case = REFEX__V1__FRAME__KIND_STORED;
    f.stored = &st;
    if (refex_link_send(b->router, r->rid, r->rid_len, &f) != REFEX_OK)
        refex_log_warn("send: could not answer STORED (sender gone); it will retry");
}

/* Commits the cycle's writes; only then are STORED answers sent. If the store cannot
 * commit, every message of the batch is refused with E_STORE and stays in its sender's
 * outbox, and every session starts over from the oldest pending delivery. */
static void batch_end(broker *b)
{
    if (!b->in_batch)
        return;
    int rc = b->batch_failed ? REFEX_E_STORE : b->store->ops->commit(b->store->impl);
    if (b->batch_failed)
        b->store->ops->rollback(b->store->impl);
    b->in_batch = 0;
    b->batch_failed = 0;
    if (rc == REFEX_OK) {
        for (size_t i = 0; i < b->n_replies; i++)
            send_stored(b, &b->replies[i]);
    } else {
        refex_log_error("store: commit failed; refusing %zu message(s) with E_STORE", b->n_replies);
        for (size_t i = 0; i < b->n_replies; i++)
            refex_link_send_rejected(b->router, b->replies[i].rid, b->replies[i].rid_len,
                                     b->replies[i].id, REFEX_E_STORE,
                                     "the broker could not store the message; retry later");
        for (size_t i = 0; i < b->n_sessions; i++) {
            b->sessions[i].cursor = b->sessions[i].receipt_cursor = 0;
            b->sessions[i].inflight = b->sessions[i].receipts_inflight = 0;
            b->sessions[i].dirty = 1;
        }
    }
    b->n_replies = 0;
}

/* ---- delivery ------------------------------------------------------------------------ */

typedef struct {
    broker *b;
    session *s;
    int stop; /* REFEX_E_BUSY or REFEX_E_UNAVAILABLE once sending failed */
} pump_ctx;

/* Sends one frame of a pump; on failure records why the pump stops. */
static int pump_send(pump_ctx *c, Refex__V1__Frame *f)
{
    int rc = refex_link_send(c->b->router, c->s->rid, c->s->rid_len, f);
    if (rc != REFEX_OK)
        c->stop = rc == REFEX_E_BUSY ? REFEX_E_BUSY : REFEX_E_UNAVAILABLE;
    return rc;
}

static int deliver_one(void *vctx, int64_t seq, const uint8_t id[16], const char *sender,
                       const uint8_t *env, size_t env_len)
{
    pump_ctx *c = vctx;
    char idhex[33];
    refex_hex_encode(idhex, id, 16);
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, env_len, env);
    if (!e) {
        refex_log_error("deliver: stored envelope %s from %s is unreadable", idhex, sender);
        c->s->cursor = seq;
        return 0;
    }
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Deliver d = REFEX__V1__DELIVER__INIT;
    d.envelope = e;
    f.kind_case = REFEX__V1__FRAME__KIND_DELIVER;
    f.deliver = &d;
    int rc = pump_send(c, &f);
    refex__v1__envelope__free_unpacked(e, NULL);
    if (rc != REFEX_OK)
        return 1;
    c->s->cursor = seq;
    c->s->inflight++;
    refex_log_debug("deliver: %s from %s to %s", idhex, sender, c->s->agency);
    return 0;
}

static int receipt_one(void *vctx, int64_t seq, const uint8_t id[16], const char *recipient,
                       const uint8_t *receipt, size_t len)
{
    pump_ctx *c = vctx;
    (void)id;
    (void)recipient;
    Refex__V1__SignedReceipt *sr = refex__v1__signed_receipt__unpack(NULL, len, receipt);
    if (!sr) {
        c->s->receipt_cursor = seq;
        return 0;
    }
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__ReceiptDeliver rd = REFEX__V1__RECEIPT_DELIVER__INIT;
    rd.receipt = sr;
    f.kind_case = REFEX__V1__FRAME__KIND_RECEIPT;
    f.receipt = &rd;
    int rc = pump_send(c, &f);
    refex__v1__signed_receipt__free_unpacked(sr, NULL);
    if (rc != REFEX_OK)
        return 1;
    c->s->receipt_cursor = seq;
    if (c->s->receipts_inflight++ == 0)
        c->s->r_progress_ms = refex_mono_ms();
    return 0;
}

/* Fills the session's delivery window from the store, and sends waiting receipts.
 * Returns REFEX_E_UNAVAILABLE if the peer is gone (the caller ends the session). */
static int pump(broker *b, session *s)
{
    pump_ctx c = {b, s, 0};
    s->dirty = 0;
    if ((uint64_t)s->inflight < b->window) {
        if (s->inflight == 0)
            s->progress_ms = refex_mono_ms();
        if (b->store->ops->pending(b->store->impl, s->agency, s->cursor,
                                   (int)(b->window - (uint64_t)s->inflight), deliver_one,
                                   &c) != REFEX_OK)
            refex_log_error("deliver: cannot read the backlog of %s", s->agency);
    }
    if (!c.stop && b->store->ops->receipts(b->store->impl, s->agency, s->receipt_cursor,
                                           (int)b->window, receipt_one, &c) != REFEX_OK)
        refex_log_error("receipt: cannot read the receipts of %s", s->agency);
    if (c.stop == REFEX_E_BUSY)
        s->dirty = 1; /* try again next cycle */
    return c.stop == REFEX_E_UNAVAILABLE ? REFEX_E_UNAVAILABLE : REFEX_OK;
}

static void pump_all(broker *b)
{
    int64_t now = refex_mono_ms();
    for (size_t i = 0; i < b->n_sessions; i++) {
        session *s = &b->sessions[i];
        /* Nothing acknowledged for a while: send everything unacknowledged again (the
         * recipient collapses duplicates by message id). */
        /* Deliveries and receipts each have their own silence: traffic on one must not
         * hide a stall of the other. */
        if (s->inflight > 0 && now - s->progress_ms > (int64_t)b->redeliver_ms) {
            refex_log_info("deliver: no acknowledgement from %s for %llu s; redelivering",
                           s->agency, (unsigned long long)(b->redeliver_ms / 1000));
            s->cursor = 0;
            s->inflight = 0;
            s->progress_ms = now;
            s->dirty = 1;
        }
        if (s->receipts_inflight > 0 && now - s->r_progress_ms > (int64_t)b->redeliver_ms) {
            refex_log_info("receipt: no acknowledgement from %s for %llu s; sending again",
                           s->agency, (unsigned long long)(b->redeliver_ms / 1000));
            s->receipt_cursor = 0;
            s->receipts_inflight = 0;
            s->r_progress_ms = now;
            s->dirty = 1;
        }
        if (s->dirty && pump(b, s) == REFEX_E_UNAVAILABLE)
            session_drop(b, &b->sessions[i--]);
    }
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

/* Undelivered messages past their expiry: end the delivery and leave the sender a
 * non-delivery report signed by the broker. */
static void expire(broker *b)
{
    int64_t now = refex_now_ms();
    expired_set *set = calloc(1, sizeof *set);
    if (!set)
        return;
    if (b->store->ops->expired(b->store->impl, now, EXPIRE_BATCH, collect_expired, set) !=
            REFEX_OK ||
        set->n == 0 || batch_begin(b) != REFEX_OK)
        goto out;
    for (int i = 0; i < set->n; i++) {
        expired_row *r = &set->rows[i];
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
            continue;
        int rc = b->store->ops->ack(b->store->impl, r->recipient, r->sender, r->id, blob, len);
        free(blob);
        if (rc == REFEX_E_STORE) {
            b->batch_failed = 1;
            break;
        }
        refex_log_warn("expire: %s from %s to %s expired undelivered; non-delivery report "
                       "queued",
                       idhex, r->sender, r->recipient);
        session_mark(b, r->sender);
    }
out:
    free(set);
}

/* ---- case grants --------------------------------------------------------------------- */

typedef struct {
    broker *b;
    const char *agency;  /* send to this agency's session */
    const uint8_t *blob; /* or, for parties_notify, this grant to every party */
    size_t len;
    const char *case_ref; /* for case_subscriptions_to_party */
} grant_ctx;

static void send_grant_blob(broker *b, const char *agency, const uint8_t *blob, size_t len)
{
    session *s = session_by_agency(b, agency);
    if (!s)
        return; /* it gets every grant of its cases after its next HELLO */
    Refex__V1__SignedGrant *sg = refex__v1__signed_grant__unpack(NULL, len, blob);
    if (!sg)
        return;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__GrantNotice gn = REFEX__V1__GRANT_NOTICE__INIT;
    gn.grant = sg;
    f.kind_case = REFEX__V1__FRAME__KIND_GRANT_NOTICE;
    f.grant_notice = &gn;
    if (refex_link_send(b->router, s->rid, s->rid_len, &f) != REFEX_OK)
        refex_log_debug("grant: could not notify %s now", agency);
    refex__v1__signed_grant__free_unpacked(sg, NULL);
}

static void send_subscription_blob(broker *b, const char *agency, const uint8_t *blob, size_t len)
{
    session *s = session_by_agency(b, agency);
    if (!s)
        return; /* it gets the subscriptions of its cases after its next HELLO */
    Refex__V1__SignedSubscription *ss = refex__v1__signed_subscription__unpack(NULL, len, blob);
    if (!ss)
        return;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__SubscriptionNotice sn = REFEX__V1__SUBSCRIPTION_NOTICE__INIT;
    sn.subscription = ss;
    f.kind_case = REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE;
    f.subscription_notice = &sn;
    if (refex_link_send(b->router, s->rid, s->rid_len, &f) != REFEX_OK)
        refex_log_debug("subscription: could not notify %s now", agency);
    refex__v1__signed_subscription__free_unpacked(ss, NULL);
}

static void subscription_to_agency(void *vctx, const uint8_t *blob, size_t len)
{
    grant_ctx *g = vctx;
    send_subscription_blob(g->b, g->agency, blob, len);
}

static void subscription_to_party(void *vctx, const char *agency)
{
    grant_ctx *g = vctx;
    send_subscription_blob(g->b, agency, g->blob, g->len);
}

/* Every party of a case gets the case's relevant subscriptions. */
static void case_subscriptions_to_party(void *vctx, const char *agency)
{
    grant_ctx *g = vctx;
    grant_ctx one = {g->b, agency, NULL, 0, NULL};
    cases_subscriptions_of(g->b->cases, g->case_ref, subscription_to_agency, &one);
}

/* An all-cases subscription: every party of every case of the subscriber hears of it. */
static void subscription_to_case(void *vctx, const char *case_ref)
{
    grant_ctx *g = vctx;
    cases_current_parties(g->b->cases, case_ref, subscription_to_party, g);
}

static void grant_to_agency(void *vctx, const uint8_t *blob, size_t len)
{
    grant_ctx *g = vctx;
    send_grant_blob(g->b, g->agency, blob, len);
}

static void grant_to_party(void *vctx, const char *agency)
{
    grant_ctx *g = vctx;
    send_grant_blob(g->b, agency, g->blob, g->len);
}

/* A grant from a case's lead: record it, tell every party of the case, and give a new member
 * the grants of its fellow members. */
static void handle_grant(broker *b, const uint8_t *rid, size_t rid_len, const char *agency,
                         const Refex__V1__GrantSubmit *gs)
{
    char why[256] = "";
    refex_grant g;
    int rc = cases_submit(b->cases, b->base.dir, agency, gs->grant, &g, why, sizeof why);
    if (rc == REFEX_E_DUPLICATE) {
        refex_log_debug("grant: %s resent an older grant for %s", agency, why);
        return;
    }
    if (rc != REFEX_OK) {
        refex_log_warn("grant: from %s refused: %s (%s)", agency, refex_errname(rc), why);
        refex_link_send_error(b->router, rid, rid_len, rc, why);
        return;
    }
    refex_log_info("grant: case %s: %s %s by %s (serial %llu)", g.case_ref, g.member,
                   g.revoked ? "revoked" : "granted", g.lead, (unsigned long long)g.serial);
    size_t len = refex__v1__signed_grant__get_packed_size(gs->grant);
    uint8_t *blob = malloc(len ? len : 1);
    if (!blob)
        return;
    refex__v1__signed_grant__pack(gs->grant, blob);
    grant_ctx all = {b, NULL, blob, len, NULL};
    cases_parties(b->cases, g.case_ref, grant_to_party, &all);
    if (!g.revoked) {
        grant_ctx one = {b, g.member, NULL, 0, NULL};
        cases_grants_of(b->cases, g.case_ref, grant_to_agency, &one);
    }
    /* Publishers need the (new) parties' subscriptions too. */
    grant_ctx subs = {b, NULL, NULL, 0, g.case_ref};
    cases_current_parties(b->cases, g.case_ref, case_subscriptions_to_party, &subs);
    free(blob);
}

/* A member's subscription: record it, and tell the publishers of the cases it covers. */
static void handle_subscribe(broker *b, const uint8_t *rid, size_t rid_len, const char *agency,
                             const Refex__V1__SubscribeSubmit *ss)
{
    char why[256] = "";
    refex_subscription sub;
    size_t len = refex__v1__signed_subscription__get_packed_size(ss->subscription);
    uint8_t *blob = malloc(len ? len : 1);
    if (!blob)
        return;
    refex__v1__signed_subscription__pack(ss->subscription, blob);
    int rc = cases_subscribe(b->cases, b->base.dir, agency, blob, len, &sub, why, sizeof why);
    if (rc == REFEX_OK) {
        refex_log_info("subscription: %s %s %s", agency,
                       sub.unsubscribed ? "unsubscribed from" : "subscribed to",
                       sub.case_ref[0] ? sub.case_ref : "all its cases");
        grant_ctx g = {b, NULL, blob, len, NULL};
        if (sub.case_ref[0])
            cases_current_parties(b->cases, sub.case_ref, subscription_to_party, &g);
        else
            cases_of(b->cases, agency, subscription_to_case, &g);
    } else if (rc != REFEX_E_DUPLICATE) {
        refex_log_warn("subscription: from %s refused: %s (%s)", agency, refex_errname(rc), why);
        refex_link_send_error(b->router, rid, rid_len, rc, why);
    }
    free(blob);
}

/* ---- frame handlers ------------------------------------------------------------------ */

static void handle_hello(broker *b, const uint8_t *rid, size_t rid_len, int fd, const char *user,
                         const Refex__V1__Hello *h)
{
    if (strcmp(h->agency, user) != 0) {
        refex_log_warn("hello: connection authenticated as %s claimed to be another agency", user);
        refex_link_send_error(b->router, rid, rid_len, REFEX_E_SENDER_MISMATCH,
                              "HELLO agency does not match the authenticated transport key");
        return;
    }
    if (session_bind(b, user, rid, rid_len, fd) != REFEX_OK) {
        refex_link_send_error(b->router, rid, rid_len, REFEX_E_UNAVAILABLE, "too many sessions");
        return;
    }
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Welcome w = REFEX__V1__WELCOME__INIT;
    w.agency = (char *)user;
    w.broker_time_ms = (uint64_t)refex_now_ms();
    w.max_frame_bytes = b->base.max_frame;
    f.kind_case = REFEX__V1__FRAME__KIND_WELCOME;
    f.welcome = &w;
    if (refex_link_send(b->router, rid, rid_len, &f) != REFEX_OK)
        return;
    refex_log_info("session: %s online (%s)", user,
                   h->software && *h->software ? h->software : "unnamed client");
    /* The signed grants of every case it leads or belongs to. */
    grant_ctx gc = {b, user, NULL, 0, NULL};
    cases_grants_for(b->cases, user, grant_to_agency, &gc);
    cases_subscriptions_for(b->cases, user, subscription_to_agency, &gc);
}

/* Checks everything the broker can see; on failure returns a code and a detail. */
static int check_envelope(broker *b, const char *agency, const Refex__V1__Envelope *env,
                          const Refex__V1__EnvelopeHeader *h, char *detail, size_t dlen)
{
    int64_t now = refex_now_ms();
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
    int rc = refex_envelope_verify(env, h, sa->sign_pk);
    if (rc != REFEX_OK) {
        snprintf(detail, dlen, "%s", refex_strerror(rc));
        return rc;
    }
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
    /* Case updates go only from and to the case's members, as its lead's grants say. */
    if (h->type == REFEX__V1__MESSAGE_TYPE__CASE_UPDATE) {
        if (!h->case_ref[0] || !cases_is_member(b->cases, h->case_ref, agency, now)) {
            snprintf(detail, dlen, "%s is not a member of case %s", agency,
                     h->case_ref[0] ? h->case_ref : "(none)");
            return REFEX_E_NOT_MEMBER;
        }
        for (size_t i = 0; i < h->n_recipients; i++)
            if (!cases_is_member(b->cases, h->case_ref, h->recipients[i], now)) {
                snprintf(detail, dlen, "recipient %s is not a member of case %s", h->recipients[i],
                         h->case_ref);
                return REFEX_E_NOT_MEMBER;
            }
    }
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
    return REFEX_OK;
}

static void handle_send(broker *b, const uint8_t *rid, size_t rid_len, const char *agency,
                        const Refex__V1__Send *s)
{
    Refex__V1__EnvelopeHeader *h = NULL;
    uint8_t *packed = NULL;
    char detail[256] = "", idhex[33] = "?";
    const uint8_t *id = NULL;
    int rc = refex_envelope_parse_header(s->envelope, &h);
    if (rc != REFEX_OK) {
        snprintf(detail, sizeof detail, "envelope header is malformed");
        goto out;
    }
    id = h->message_id.data;
    refex_hex_encode(idhex, id, 16);
    if ((rc = check_envelope(b, agency, s->envelope, h, detail, sizeof detail)) != REFEX_OK)
        goto out;
    if (b->n_replies == BATCH_MAX) { /* cannot happen: batches are at most BATCH_MAX frames */
        rc = REFEX_E_BUSY;
        goto out;
    }
    size_t len = refex__v1__envelope__get_packed_size(s->envelope);
    if (!(packed = malloc(len))) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    refex__v1__envelope__pack(s->envelope, packed);
    if ((rc = batch_begin(b)) == REFEX_OK)
        rc = b->store->ops->put(b->store->impl, id, agency, (const char *const *)h->recipients,
                                h->n_recipients, packed, len, h->expires_at_ms);
    if (rc == REFEX_E_DUPLICATE) {
        /* A retry of something already accepted: answer STORED again, route nothing. */
        refex_log_info("send: %s from %s is a duplicate; already stored", idhex, agency);
        rc = REFEX_OK;
    } else if (rc == REFEX_OK) {
        refex_log_info("send: %s from %s, type %d, %zu recipient(s), %zu bytes", idhex, agency,
                       (int)h->type, h->n_recipients, len);
        for (size_t i = 0; i < h->n_recipients; i++)
            session_mark(b, h->recipients[i]);
    } else if (rc == REFEX_E_STORE && b->store->ops->batch_alive(b->store->impl)) {
        /* Only this message could not be written (e.g. the store is full): refuse it now;
         * the rest of the batch, ACKs included (which free space), still commits. */
        snprintf(detail, sizeof detail, "the broker could not store the message; retry later");
        goto out;
    } else {
        /* The batch's transaction is gone: refuse all of it at commit. */
        b->batch_failed = 1;
    }
    /* STORED (or E_STORE) is answered when the batch commits. */
    reply *r = &b->replies[b->n_replies++];
    memcpy(r->rid, rid, rid_len);
    r->rid_len = rid_len;
    memcpy(r->id, id, 16);
    rc = REFEX_OK;
out:
    if (rc != REFEX_OK) {
        refex_log_warn("send: rejected %s from %s: %s (%s)", idhex, agency, refex_errname(rc),
                       detail);
        refex_link_send_rejected(b->router, rid, rid_len, id, rc, detail);
    }
    free(packed);
    if (h)
        refex__v1__envelope_header__free_unpacked(h, NULL);
}

/* The recipient's ACK carries its signed receipt; check it is the recipient's own word
 * about this very message before ending the delivery. */
static void handle_ack(broker *b, const uint8_t *rid, size_t rid_len, const char *agency,
                       const Refex__V1__Ack *a)
{
    char idhex[33];
    refex_receipt r;
    refex_hex_encode(idhex, a->message_id.data, 16);
    int rc = a->receipt ? refex_receipt_verify(a->receipt, b->base.dir, &r) : REFEX_E_MALFORMED;
    if (rc == REFEX_OK &&
        (memcmp(r.message_id, a->message_id.data, 16) != 0 || strcmp(r.sender, a->sender) != 0 ||
         strcmp(r.recipient, agency) != 0 || strcmp(r.signer, agency) != 0 || r.code != a->code))
        rc = REFEX_E_MALFORMED;
    if (rc != REFEX_OK) {
        refex_log_warn("ack: %s from %s refused: receipt %s", idhex, agency, refex_errname(rc));
        refex_link_send_error(b->router, rid, rid_len, rc, "ACK needs the recipient's receipt");
        return;
    }
    size_t len = refex__v1__signed_receipt__get_packed_size(a->receipt);
    uint8_t *blob = malloc(len);
    if (!blob)
        return;
    refex__v1__signed_receipt__pack(a->receipt, blob);
    if ((rc = batch_begin(b)) == REFEX_OK)
        rc = b->store->ops->ack(b->store->impl, agency, a->sender, a->message_id.data, blob, len);
    free(blob);
    session *s = session_by_agency(b, agency);
    if (s) {
        if (s->inflight > 0)
            s->inflight--;
        s->progress_ms = refex_mono_ms();
        s->dirty = 1;
    }
    if (rc == REFEX_E_STORE) {
        /* Not recorded: the delivery stays pending and is redelivered later. */
        if (!b->store->ops->batch_alive(b->store->impl))
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

static void handle_receipt_ack(broker *b, const uint8_t *rid, size_t rid_len, const char *agency,
                               const Refex__V1__ReceiptAck *ra)
{
    if (!refex_id_valid(ra->recipient)) {
        refex_log_warn("receipt_ack: from %s names no valid recipient", agency);
        refex_link_send_error(b->router, rid, rid_len, REFEX_E_MALFORMED,
                              "RECEIPT_ACK needs the recipient's agency id");
        return;
    }
    int rc = batch_begin(b);
    if (rc == REFEX_OK)
        rc = b->store->ops->receipt_ack(b->store->impl, agency, ra->message_id.data, ra->recipient);
    if (rc == REFEX_E_STORE)
        b->batch_failed = 1;
    session *s = session_by_agency(b, agency);
    if (s) {
        s->r_progress_ms = refex_mono_ms();
        if (s->receipts_inflight > 0)
            s->receipts_inflight--;
    }
}

/* Witness an agency's audit-log checkpoint: cosign it if it extends the last one, refuse
 * and raise an alert if it does not. */
static void handle_checkpoint(broker *b, const uint8_t *rid, size_t rid_len, const char *agency,
                              const Refex__V1__CheckpointSubmit *cp)
{
    char why[256] = "", *cosigned = NULL;
    uint64_t size = 0;
    int rc = witness_submit(b->witness, b->base.dir, b->base.keys, agency, cp, &cosigned, &size,
                            why, sizeof why);
    if (rc != REFEX_OK) {
        if (rc == REFEX_E_TAMPERED)
            refex_log_error("ALERT witness: audit log of %s is inconsistent with what it showed "
                            "before: %s",
                            agency, why);
        else
            refex_log_warn("witness: checkpoint from %s refused: %s (%s)", agency,
                           refex_errname(rc), why);
        refex_link_send_error(b->router, rid, rid_len, rc, why);
        return;
    }
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Cosigned cs = REFEX__V1__COSIGNED__INIT;
    cs.size = size;
    cs.note = cosigned;
    f.kind_case = REFEX__V1__FRAME__KIND_COSIGNED;
    f.cosigned = &cs;
    if (refex_link_send(b->router, rid, rid_len, &f) != REFEX_OK)
        refex_log_warn("witness: could not return the cosignature to %s", agency);
    refex_log_info("witness: cosigned %s's audit log at size %llu", agency,
                   (unsigned long long)size);
    free(cosigned);
}

static void handle_frame(broker *b, const uint8_t *rid, size_t rid_len, int fd, const char *user,
                         const uint8_t *data, size_t len)
{
    Refex__V1__Frame *f = NULL;
    int rc = refex_frame_unpack(data, len, b->base.max_frame, &f);
    if (rc != REFEX_OK) {
        refex_log_warn("frame: from %s refused: %s (%zu bytes)", user, refex_errname(rc), len);
        refex_link_send_error(b->router, rid, rid_len, rc, NULL);
        return;
    }
    session *s = session_by_rid(b, rid, rid_len);
    if (s && (strcmp(s->agency, user) != 0 || s->fd != fd)) {
        refex_log_warn("session: routing id of %s reused by a connection of %s; session ended",
                       s->agency, user);
        session_drop(b, s);
        s = NULL;
    }
    if (f->kind_case == REFEX__V1__FRAME__KIND_HELLO) {
        handle_hello(b, rid, rid_len, fd, user, f->hello);
    } else if (f->kind_case == REFEX__V1__FRAME__KIND_PING) {
        Refex__V1__Frame pf = REFEX__V1__FRAME__INIT;
        Refex__V1__Pong pong = REFEX__V1__PONG__INIT;
        pong.nonce = f->ping->nonce;
        pf.kind_case = REFEX__V1__FRAME__KIND_PONG;
        pf.pong = &pong;
        if (refex_link_send(b->router, rid, rid_len, &pf) != REFEX_OK)
            refex_log_debug("ping: could not answer %s", user);
    } else if (!s) {
        refex_log_warn("frame: %s from %s before HELLO", refex_frame_kind_name(f), user);
        refex_link_send_error(b->router, rid, rid_len, REFEX_E_NOT_READY, NULL);
    } else if (f->kind_case == REFEX__V1__FRAME__KIND_SEND) {
        handle_send(b, rid, rid_len, user, f->send);
    } else if (f->kind_case == REFEX__V1__FRAME__KIND_ACK) {
        handle_ack(b, rid, rid_len, user, f->ack);
    } else if (f->kind_case == REFEX__V1__FRAME__KIND_SUBSCRIBE) {
        handle_subscribe(b, rid, rid_len, user, f->subscribe);
    } else if (f->kind_case == REFEX__V1__FRAME__KIND_GRANT) {
        handle_grant(b, rid, rid_len, user, f->grant);
    } else if (f->kind_case == REFEX__V1__FRAME__KIND_CHECKPOINT) {
        handle_checkpoint(b, rid, rid_len, user, f->checkpoint);
    } else if (f->kind_case == REFEX__V1__FRAME__KIND_RECEIPT_ACK) {
        handle_receipt_ack(b, rid, rid_len, user, f->receipt_ack);
    } else {
        refex_log_warn("frame: unexpected %s from %s", refex_frame_kind_name(f), user);
        refex_link_send_error(b->router, rid, rid_len, REFEX_E_PROTOCOL,
                              "frame not valid from an agent");
    }
    refex_frame_free(&f);
}

static void router_readable(broker *b)
{
    zmq_msg_t rid, body;
    zmq_msg_init(&rid);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&rid, b->router, ZMQ_DONTWAIT) < 0)
        goto out;
    if (!zmq_msg_more(&rid) || zmq_msg_recv(&body, b->router, 0) < 0)
        goto out;
    const char *user = zmq_msg_gets(&body, "User-Id");
    if (zmq_msg_more(&body)) {
        int more = 1;
        while (more) {
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            more = zmq_msg_recv(&extra, b->router, 0) >= 0 && zmq_msg_more(&extra);
            zmq_msg_close(&extra);
        }
        refex_log_warn("frame: multipart message from %s refused", user ? user : "?");
        refex_link_send_error(b->router, zmq_msg_data(&rid), zmq_msg_size(&rid), REFEX_E_MALFORMED,
                              "one frame per message");
        goto out;
    }
    if (!user || zmq_msg_size(&rid) > RID_MAX) {
        refex_log_error("frame: no authenticated identity; dropped");
        goto out;
    }
    handle_frame(b, zmq_msg_data(&rid), zmq_msg_size(&rid), zmq_msg_get(&body, ZMQ_SRCFD), user,
                 zmq_msg_data(&body), zmq_msg_size(&body));
out:
    zmq_msg_close(&rid);
    zmq_msg_close(&body);
}

static void timers(broker *b)
{
    int64_t now = refex_mono_ms();
    if (now >= b->next_expiry_ms) {
        b->next_expiry_ms = now + 1000;
        expire(b);
    }
    if (now >= b->next_purge_ms) {
        b->next_purge_ms = now + 60000;
        if (batch_begin(b) == REFEX_OK &&
            b->store->ops->purge(b->store->impl, refex_now_ms()) != REFEX_OK)
            b->batch_failed = 1;
    }
}

int broker_run(broker *b)
{
    char endpoint[512];
    size_t elen = sizeof endpoint;
    int one = 1, linger0 = 0, rc = REFEX_OK;
    refex_daemon_signals_install();

    b->ctx = zmq_ctx_new();
    b->zap = zmq_socket(b->ctx, ZMQ_REP);
    if (b->zap)
        zmq_setsockopt(b->zap, ZMQ_LINGER, &linger0, sizeof linger0);
    if (!b->zap || zmq_bind(b->zap, "inproc://zeromq.zap.01") != 0) {
        refex_log_error("zap: cannot bind handler: %s", zmq_strerror(errno));
        return REFEX_E_IO;
    }
    b->router = zmq_socket(b->ctx, ZMQ_ROUTER);
    refex_link_tune(b->router, b->base.max_frame);
    zmq_setsockopt(b->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    if (refex_link_monitor(b->ctx, b->router, &b->mon) != REFEX_OK) {
        refex_log_error("listen: cannot monitor connections");
        return REFEX_E_IO;
    }
    zmq_setsockopt(b->mon, ZMQ_LINGER, &linger0, sizeof linger0);
    if (refex_link_curve_server(b->router, b->base.keys) != REFEX_OK ||
        zmq_bind(b->router, b->listen) != 0) {
        refex_log_error("listen: cannot bind %s: %s", b->listen, zmq_strerror(errno));
        return REFEX_E_IO;
    }
    zmq_getsockopt(b->router, ZMQ_LAST_ENDPOINT, endpoint, &elen);
    char path[4200];
    snprintf(path, sizeof path, "%s/broker.endpoint", b->base.data_dir);
    if (refex_file_write(path, endpoint, strlen(endpoint), 0644) != REFEX_OK)
        refex_log_warn("cannot write %s", path);
    refex_log_info("listening on %s, directory serial %llu with %zu agencies, store %s with "
                   "%lld pending deliveries",
                   endpoint, (unsigned long long)refex_directory_serial(b->base.dir),
                   refex_directory_count(b->base.dir), b->store->ops->name,
                   (long long)b->store->ops->count(b->store->impl));
    printf("READY %s\n", endpoint);
    fflush(stdout);

    while (!refex_daemon_stopping()) {
        zmq_pollitem_t items[] = {
            {b->zap, 0, ZMQ_POLLIN, 0}, {b->mon, 0, ZMQ_POLLIN, 0}, {b->router, 0, ZMQ_POLLIN, 0}};
        int n = zmq_poll(items, 3, 200);
        if (n < 0) {
            if (errno == EINTR)
                goto signals;
            refex_log_error("poll: %s", zmq_strerror(errno));
            rc = REFEX_E_IO;
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            broker_zap_handle(b->zap, b->base.dir);
        if (items[1].revents & ZMQ_POLLIN)
            monitor_drain(b);
        /* One batch: up to BATCH_MAX frames, then one commit, then the answers. */
        for (int i = 0; i < BATCH_MAX && (items[2].revents & ZMQ_POLLIN); i++) {
            int ev = 0;
            size_t evlen = sizeof ev;
            zmq_getsockopt(b->router, ZMQ_EVENTS, &ev, &evlen);
            if (!(ev & ZMQ_POLLIN))
                break;
            router_readable(b);
        }
        timers(b);
        batch_end(b);
        monitor_drain(b);
        pump_all(b);
      signals:
        if (refex_daemon_take_reload())
            (void)refex_daemon_base_reload(&b->base);
    }
    batch_end(b);
    refex_log_info("stopping: %lld delivery(ies) still queued",
                   (long long)b->store->ops->count(b->store->impl));
    return rc;
}
