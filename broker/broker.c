/* The broker's event loop: one thread, one zmq_poll over the agent-facing ROUTER and
 * the ZAP handler. Every frame is checked before anything is stored; every refusal is a
 * typed Error or Rejected frame plus a log line, and the loop carries on. Logs carry
 * ids and agency names only: the broker never sees a body. */
#include "broker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "refex/codec.h"
#include "refex/daemon.h"
#include "refex/directory.h"
#include "refex/envelope.h"
#include "refex/keys.h"
#include "refex/link.h"
#include "refex/log.h"
#include "refex/store.h"
#include "refex/util.h"

#define MAX_SESSIONS 1024
#define RID_MAX      256

/* A HELLO binds an agency to one connection: its routing id and, because a client may
 * choose its own routing id, the file descriptor it arrived on. Frames from that routing id
 * by another identity or fd, and the connection's DISCONNECTED event, end the session. */
typedef struct {
    char agency[REFEX_ID_MAX];
    uint8_t rid[RID_MAX];
    size_t rid_len;
    int fd;
} session;

struct broker {
    char listen[512];
    refex_daemon_base base;
    refex_store *store;
    void *ctx, *router, *zap, *mon;
    session sessions[MAX_SESSIONS];
    size_t n_sessions;
};

static const char *const CONFIG_KEYS[] = {"listen", REFEX_DAEMON_BASE_KEYS, NULL};

int broker_open(const refex_config *cfg, broker **out, char *err, size_t errlen)
{
    int rc;
    broker *b = calloc(1, sizeof *b);
    *out = NULL;
    if (!b)
        return REFEX_E_NOMEM;
    if ((rc = refex_config_check_keys(cfg, CONFIG_KEYS, err, errlen)) != REFEX_OK)
        goto out;
    const char *listen = refex_config_get(cfg, "listen");
    snprintf(b->listen, sizeof b->listen, "%s", listen ? listen : "tcp://127.0.0.1:7600");
    if ((rc = refex_daemon_base_load(cfg, "the broker's .secret file", &b->base, err, errlen)) !=
        REFEX_OK)
        goto out;
    if ((rc = refex_store_memory_new(&b->store)) != REFEX_OK)
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
    refex_daemon_base_fini(&b->base);
    free(b);
    *b_p = NULL;
}

/* ---- sessions: agency <-> routing id ------------------------------------------------ */

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
    snprintf(s->agency, sizeof s->agency, "%s", agency);
    memcpy(s->rid, rid, len);
    s->rid_len = len;
    s->fd = fd;
    return REFEX_OK;
}

/* ---- ZAP (RFC 27): admit only transport keys listed in the directory ------------------ */

static void zap_reply(void *zap, const zmq_msg_t *req_id, const char *code, const char *text,
                      const char *user)
{
    zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(zap, zmq_msg_data((zmq_msg_t *)req_id), zmq_msg_size((zmq_msg_t *)req_id),
             ZMQ_SNDMORE);
    zmq_send(zap, code, strlen(code), ZMQ_SNDMORE);
    zmq_send(zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(zap, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(zap, "", 0, 0);
}

static void zap_handle(broker *b)
{
    zmq_msg_t part[8];
    int n = 0, more = 1;
    while (more && n < 8) {
        zmq_msg_init(&part[n]);
        if (zmq_msg_recv(&part[n], b->zap, 0) < 0) {
            zmq_msg_close(&part[n]);
            break;
        }
        more = zmq_msg_more(&part[n]);
        n++;
    }
    while (more) { /* drain anything beyond what RFC 27 defines */
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        if (zmq_msg_recv(&extra, b->zap, 0) < 0)
            more = 0;
        else
            more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
    if (n < 2)
        goto out; /* cannot even address a reply */
    if (n != 7 || zmq_msg_size(&part[5]) != 5 || memcmp(zmq_msg_data(&part[5]), "CURVE", 5) ||
        zmq_msg_size(&part[6]) != 32) {
        refex_log_warn("zap: denied a connection not using CURVE");
        zap_reply(b->zap, &part[1], "400", "CURVE required", "");
        goto out;
    }
    const uint8_t *pk = zmq_msg_data(&part[6]);
    const refex_agency *a = refex_directory_find_transport(b->base.dir, pk);
    char hex[17];
    refex_hex_encode(hex, pk, 8);
    if (!a || strcmp(a->role, "broker") == 0 || strcmp(a->role, "trust-anchor") == 0) {
        refex_log_warn("zap: denied transport key %s...: not an agency in the directory", hex);
        zap_reply(b->zap, &part[1], "400", "unknown transport key", "");
        goto out;
    }
    if (refex_agency_usable(a, refex_now_ms()) != REFEX_OK) {
        refex_log_warn("zap: denied %s: revoked or outside its validity period", a->id);
        zap_reply(b->zap, &part[1], "400", "agency revoked", "");
        goto out;
    }
    refex_log_debug("zap: admitted %s", a->id);
    zap_reply(b->zap, &part[1], "200", "OK", a->id);
out:
    for (int i = 0; i < n; i++)
        zmq_msg_close(&part[i]);
}

/* ---- delivery ----------------------------------------------------------------------- */

typedef struct {
    broker *b;
    session *s;
    int gone; /* the peer is gone: end the session */
    int busy; /* its queue is full: stop for now, keep the session */
} deliver_ctx;

static int deliver_packed(void *vctx, const uint8_t id[16], const char *sender, const uint8_t *env,
                          size_t env_len)
{
    deliver_ctx *c = vctx;
    char idhex[33];
    refex_hex_encode(idhex, id, 16);
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, env_len, env);
    if (!e) {
        refex_log_error("deliver: stored envelope %s from %s is unreadable", idhex, sender);
        return 0;
    }
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Deliver d = REFEX__V1__DELIVER__INIT;
    d.envelope = e;
    f.kind_case = REFEX__V1__FRAME__KIND_DELIVER;
    f.deliver = &d;
    int rc = refex_link_send(c->b->router, c->s->rid, c->s->rid_len, &f);
    refex__v1__envelope__free_unpacked(e, NULL);
    if (rc != REFEX_OK) {
        refex_log_warn("deliver: %s to %s failed (%s); kept for later", idhex, c->s->agency,
                       refex_errname(rc));
        c->gone = rc != REFEX_E_BUSY;
        c->busy = rc == REFEX_E_BUSY;
        return 1;
    }
    refex_log_info("deliver: %s from %s to %s", idhex, sender, c->s->agency);
    return 0;
}

static void deliver_backlog(broker *b, session *s)
{
    deliver_ctx c = {b, s, 0, 0};
    if (refex_store_pending(b->store, s->agency, deliver_packed, &c) != REFEX_OK)
        refex_log_error("deliver: cannot read the backlog of %s", s->agency);
    if (c.busy)
        refex_log_warn("deliver: backlog of %s paused: its queue is full", s->agency);
    if (c.gone)
        session_drop(b, s);
}

/* ---- frame handlers ----------------------------------------------------------------- */

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
    session *s = session_by_agency(b, user);
    if (s)
        deliver_backlog(b, s);
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
    size_t len = refex__v1__envelope__get_packed_size(s->envelope);
    if (!(packed = malloc(len))) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    refex__v1__envelope__pack(s->envelope, packed);
    rc = refex_store_put(b->store, id, agency, (const char *const *)h->recipients, h->n_recipients,
                         packed, len, h->expires_at_ms);
    if (rc == REFEX_E_DUPLICATE) {
        /* A retry of something already accepted: answer STORED again, route nothing. */
        refex_log_info("send: %s from %s is a duplicate; already stored", idhex, agency);
        rc = REFEX_OK;
        goto stored;
    }
    if (rc != REFEX_OK) {
        snprintf(detail, sizeof detail, "broker could not store the message");
        goto out;
    }
    refex_log_info("send: %s from %s, type %d, %zu recipient(s), %zu bytes: stored", idhex, agency,
                   (int)h->type, h->n_recipients, len);
    monitor_drain(b);
    for (size_t i = 0; i < h->n_recipients; i++) {
        session *rs = session_by_agency(b, h->recipients[i]);
        deliver_ctx c = {b, rs, 0, 0};
        if (!rs) {
            refex_log_info("send: %s queued for %s (offline)", idhex, h->recipients[i]);
            continue;
        }
        deliver_packed(&c, id, agency, packed, len);
        if (c.gone)
            session_drop(b, rs);
    }
stored:;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Stored st = REFEX__V1__STORED__INIT;
    st.message_id = (ProtobufCBinaryData){16, (uint8_t *)id};
    f.kind_case = REFEX__V1__FRAME__KIND_STORED;
    f.stored = &st;
    if (refex_link_send(b->router, rid, rid_len, &f) != REFEX_OK)
        refex_log_warn("send: could not answer STORED for %s to %s", idhex, agency);
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

static void handle_ack(broker *b, const char *agency, const Refex__V1__Ack *a)
{
    char idhex[33];
    refex_hex_encode(idhex, a->message_id.data, 16);
    if (!refex_id_valid(a->sender)) {
        refex_log_warn("ack: from %s for %s names no valid sender", agency, idhex);
        return;
    }
    int rc = refex_store_ack(b->store, agency, a->sender, a->message_id.data);
    if (rc != REFEX_OK)
        refex_log_info("ack: %s from %s for %s: nothing pending", idhex, agency, a->sender);
    else if (a->code != 0)
        refex_log_warn("ack: %s refused by %s: %s", idhex, agency, refex_errname((int)a->code));
    else
        refex_log_info("ack: %s delivered to %s", idhex, agency);
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
        handle_ack(b, user, f->ack);
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

int broker_run(broker *b)
{
    char endpoint[512];
    size_t elen = sizeof endpoint;
    int one = 1, rc = REFEX_OK;
    refex_daemon_signals_install();

    b->ctx = zmq_ctx_new();
    b->zap = zmq_socket(b->ctx, ZMQ_REP);
    int linger0 = 0;
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
    refex_log_info("listening on %s, directory serial %llu with %zu agencies, store %s", endpoint,
                   (unsigned long long)refex_directory_serial(b->base.dir),
                   refex_directory_count(b->base.dir), b->store->ops->name);
    printf("READY %s\n", endpoint);
    fflush(stdout);

    while (!refex_daemon_stopping()) {
        zmq_pollitem_t items[] = {
            {b->zap, 0, ZMQ_POLLIN, 0}, {b->mon, 0, ZMQ_POLLIN, 0}, {b->router, 0, ZMQ_POLLIN, 0}};
        int n = zmq_poll(items, 3, 1000);
        if (n < 0) {
            if (errno == EINTR)
                goto signals;
            refex_log_error("poll: %s", zmq_strerror(errno));
            rc = REFEX_E_IO;
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            zap_handle(b);
        if (items[1].revents & ZMQ_POLLIN)
            monitor_drain(b);
        /* Bounded batch per wakeup so ZAP requests are never starved. */
        for (int i = 0; i < 256 && (items[2].revents & ZMQ_POLLIN); i++) {
            int ev = 0;
            size_t evlen = sizeof ev;
            zmq_getsockopt(b->router, ZMQ_EVENTS, &ev, &evlen);
            if (!(ev & ZMQ_POLLIN))
                break;
            router_readable(b);
        }
      signals:
        if (refex_daemon_take_reload())
            (void)refex_daemon_base_reload(&b->base);
    }
    refex_log_info("stopping: %zu message(s) still queued", refex_store_count(b->store));
    return rc;
}
