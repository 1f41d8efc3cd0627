/* The broker's event loop: one thread, one zmq_poll over the agent-facing ROUTER, its
 * connection monitor and the ZAP handler, and the table that hands each checked frame to its
 * handler. Every frame is checked before anything is stored. Writes of one poll cycle share
 * one store transaction (group commit, queue.c); STORED answers, deliveries and receipts go
 * out only after that commit. Logs carry ids and agency names only: the broker never sees a
 * body. */
#include "broker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "admission.h"
#include "codec.h"
#include "link.h"
#include "log.h"
#include "notify.h"
#include "util.h"
#include "zap.h"

static const char *const CONFIG_KEYS[] = {
    "listen",           "window", "window_bytes",   "redeliver_seconds",    "store_max",
    "case_objects_max", "store",  "metrics_listen", REFEX_DAEMON_BASE_KEYS, NULL};

/* When the configuration sets none: 1 GiB of live envelopes ("store_max = 0": no cap), and
 * 10,000 grants (as a lead) and 10,000 subscriptions stored per agency. */
#define STORE_MAX_DEFAULT        (1ULL << 30)
#define CASE_OBJECTS_MAX_DEFAULT 10000
/* Deliveries in flight per session: at most `window`, and a delivery of L bytes only while
 * fewer than window_bytes / L are (session.c). 512 keeps a replay of small messages
 * streaming while the recipient commits the ones before (64 made broker and recipient take
 * turns: 2,200 against 3,700 msg/s, bench --replay 20000); the byte bound keeps large ones
 * from filling memory (16 of 1 MiB). */
#define WINDOW_DEFAULT       512
#define WINDOW_BYTES_DEFAULT (16ULL << 20)
/* Refusal warnings logged per agency: the first WARN_BURST in each WARN_WINDOW_MS. */
#define WARN_BURST     20
#define WARN_WINDOW_MS 10000

/* The queue: SQLite in data_dir unless `store` names a PostgreSQL database. */
static int open_store(broker *b, const char *spec, unsigned store_flags, char *err, size_t errlen)
{
    char path[4200];
    if (spec && refex_store_is_pg(spec))
        return refex_store_pg_open(spec, b->store_max, &b->store, err, errlen);
    if (spec) {
        snprintf(err, errlen,
                 "config: store must be a postgresql:// URI (leave it out for the SQLite "
                 "store in data_dir)");
        return REFEX_E_CONFIG;
    }
    snprintf(path, sizeof path, "%s/queue.db", b->base.data_dir);
    return refex_store_sqlite_open(path, b->store_max, store_flags, &b->store, err, errlen);
}

int broker_open(const refex_config *cfg, unsigned store_flags, broker **out, char *err,
                size_t errlen)
{
    int rc;
    char path[4200];
    uint64_t redeliver = 30, case_max = CASE_OBJECTS_MAX_DEFAULT;
    broker *b = calloc(1, sizeof *b);
    *out = NULL;
    if (!b)
        return REFEX_E_NOMEM;
    if ((rc = refex_config_check_keys(cfg, CONFIG_KEYS, err, errlen)) != REFEX_OK)
        goto out;
    const char *listen = refex_config_get(cfg, "listen");
    snprintf(b->listen, sizeof b->listen, "%s", listen ? listen : "tcp://127.0.0.1:7600");
    rc = REFEX_E_CONFIG;
    if (refex_config_uint(cfg, "window", WINDOW_DEFAULT, &b->window) || b->window < 1 ||
        b->window > 4096) {
        snprintf(err, errlen, "config: window must be between 1 and 4096");
        goto out;
    }
    if (refex_config_uint(cfg, "window_bytes", WINDOW_BYTES_DEFAULT, &b->window_bytes) ||
        b->window_bytes < (1u << 20) || b->window_bytes > (1ULL << 32)) {
        snprintf(err, errlen, "config: window_bytes must be between 1M and 4G");
        goto out;
    }
    if (refex_config_uint(cfg, "redeliver_seconds", 30, &redeliver) || redeliver < 1 ||
        redeliver > 86400) {
        snprintf(err, errlen, "config: redeliver_seconds must be between 1 and 86400");
        goto out;
    }
    b->redeliver_ms = redeliver * 1000;
    if (refex_config_uint(cfg, "store_max", STORE_MAX_DEFAULT, &b->store_max)) {
        snprintf(err, errlen, "config: store_max must be a size such as 10G");
        goto out;
    }
    if (refex_config_uint(cfg, "case_objects_max", CASE_OBJECTS_MAX_DEFAULT, &case_max) ||
        case_max < 1 || case_max > 1000000000) {
        snprintf(err, errlen, "config: case_objects_max must be between 1 and 1000000000");
        goto out;
    }
    b->warn_gate.what = "refusals";
    b->warn_gate.burst = WARN_BURST;
    b->warn_gate.window_ms = WARN_WINDOW_MS;
    if ((rc = refex_daemon_base_load(cfg, "the broker's .secret file", &b->base, err, errlen)) !=
        REFEX_OK)
        goto out;
    if ((rc = open_store(b, refex_config_get(cfg, "store"), store_flags, err, errlen)) != REFEX_OK)
        goto out;
    /* Witnessed checkpoints and case records live where the queue does: beside it in
     * data_dir, or in the same PostgreSQL database, shared by every node on it. */
    const char *spec = refex_config_get(cfg, "store");
    int shared = spec && refex_store_is_pg(spec);
    snprintf(path, sizeof path, "%s/witness.db", b->base.data_dir);
    if ((rc = witness_open(shared ? spec : path, &b->witness, err, errlen)) != REFEX_OK)
        goto out;
    snprintf(path, sizeof path, "%s/cases.db", b->base.data_dir);
    if ((rc = cases_open(shared ? spec : path, case_max, &b->cases, err, errlen)) != REFEX_OK)
        goto out;
    const char *metrics = refex_config_get(cfg, "metrics_listen");
    snprintf(b->metrics_listen, sizeof b->metrics_listen, "%s", metrics ? metrics : "");
    if (metrics && (rc = refex_metrics_check(metrics, err, errlen)) != REFEX_OK)
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
    refex_metrics_close(&b->metrics);
    refex_store_destroy(&b->store);
    witness_close(&b->witness);
    cases_close(&b->cases);
    refex_daemon_base_fini(&b->base);
    free(b);
    *b_p = NULL;
}

int broker_may_warn(broker *b, const char *agency)
{
    return refex_log_gate_pass(&b->warn_gate, agency, refex_mono_ms());
}

int broker_reply(broker *b, const peer *p, Refex__V1__Frame__KindCase kind,
                 const ProtobufCMessage *m)
{
    return refex_link_send_msg(b->router, p->rid, p->rid_len, kind, m);
}

/* ---- frame handlers ------------------------------------------------------------------ */

static void handle_hello(broker *b, const peer *p, const Refex__V1__Frame *f)
{
    const Refex__V1__Hello *h = f->hello;
    if (strcmp(h->agency, p->agency) != 0) {
        if (broker_may_warn(b, p->agency))
            refex_log_warn("hello: connection authenticated as %s claimed to be another agency",
                           p->agency);
        refex_link_send_error(b->router, p->rid, p->rid_len, REFEX_E_SENDER_MISMATCH,
                              "HELLO agency does not match the authenticated transport key");
        return;
    }
    if (session_bind(b, p) != REFEX_OK) {
        refex_link_send_error(b->router, p->rid, p->rid_len, REFEX_E_UNAVAILABLE,
                              "too many sessions");
        return;
    }
    nodes_claim(b, session_by_agency(b, p->agency));
    Refex__V1__Welcome w = REFEX__V1__WELCOME__INIT;
    w.agency = (char *)p->agency;
    w.broker_time_ms = (uint64_t)refex_now_ms();
    w.max_frame_bytes = b->base.max_frame;
    uint8_t gen[16];
    queue_welcome(b, p->agency, h, &w, gen);
    if (broker_reply(b, p, REFEX__V1__FRAME__KIND_WELCOME, &w.base) != REFEX_OK)
        return;
    refex_log_info("session: %s online (%s)", p->agency,
                   h->software && *h->software ? h->software : "unnamed client");
    /* The signed grants and subscriptions of every case it leads or belongs to. */
    notice_welcome(b, p->agency);
}

static void handle_ping(broker *b, const peer *p, const Refex__V1__Frame *f)
{
    Refex__V1__Pong pong = REFEX__V1__PONG__INIT;
    pong.nonce = f->ping->nonce;
    if (broker_reply(b, p, REFEX__V1__FRAME__KIND_PONG, &pong.base) != REFEX_OK)
        refex_log_debug("ping: could not answer %s", p->agency);
}

/* Witness an agency's audit-log checkpoint: cosign it if it extends the last one, refuse
 * and raise an alert if it does not. */
static void handle_checkpoint(broker *b, const peer *p, const Refex__V1__Frame *f)
{
    const char *agency = p->agency;
    char why[256] = "", *cosigned = NULL;
    uint64_t size = 0;
    int rc = witness_submit(b->witness, b->base.dir, b->base.keys, agency, f->checkpoint, &cosigned,
                            &size, why, sizeof why);
    if (rc != REFEX_OK) {
        if (rc == REFEX_E_TAMPERED)
            b->alerts++;
        if (rc == REFEX_E_TAMPERED)
            refex_log_error("ALERT witness: audit log of %s is inconsistent with what it showed "
                            "before: %s",
                            agency, why);
        else if (broker_may_warn(b, agency))
            refex_log_warn("witness: checkpoint from %s refused: %s (%s)", agency,
                           refex_errname(rc), why);
        refex_link_send_error(b->router, p->rid, p->rid_len, rc, why);
        return;
    }
    Refex__V1__Cosigned cs = REFEX__V1__COSIGNED__INIT;
    cs.size = size;
    cs.note = cosigned;
    if (broker_reply(b, p, REFEX__V1__FRAME__KIND_COSIGNED, &cs.base) != REFEX_OK)
        refex_log_warn("witness: could not return the cosignature to %s", agency);
    b->cosigned++;
    refex_log_info("witness: cosigned %s's audit log at size %llu", agency,
                   (unsigned long long)size);
    free(cosigned);
}

/* What an agent may send; every other kind is refused. HELLO and PING need no session. */
static const struct {
    Refex__V1__Frame__KindCase kind;
    int needs_session;
    broker_frame_fn fn;
} FRAME_HANDLERS[] = {
    {REFEX__V1__FRAME__KIND_HELLO, 0, handle_hello},
    {REFEX__V1__FRAME__KIND_PING, 0, handle_ping},
    {REFEX__V1__FRAME__KIND_SEND, 1, queue_handle_send},
    {REFEX__V1__FRAME__KIND_ACK, 1, queue_handle_ack},
    {REFEX__V1__FRAME__KIND_SUBSCRIBE, 1, notice_handle_subscribe},
    {REFEX__V1__FRAME__KIND_GRANT, 1, notice_handle_grant},
    {REFEX__V1__FRAME__KIND_CHECKPOINT, 1, handle_checkpoint},
    {REFEX__V1__FRAME__KIND_RECEIPT_ACK, 1, queue_handle_receipt_ack},
};

static void handle_frame(broker *b, const peer *p, const uint8_t *data, size_t len)
{
    Refex__V1__Frame *f = NULL;
    int rc = refex_frame_unpack(data, len, b->base.max_frame, &f);
    if (rc != REFEX_OK) {
        if (broker_may_warn(b, p->agency))
            refex_log_warn("frame: from %s refused: %s (%zu bytes)", p->agency, refex_errname(rc),
                           len);
        refex_link_send_error(b->router, p->rid, p->rid_len, rc, NULL);
        return;
    }
    session *s = session_by_rid(b, p->rid, p->rid_len);
    if (s && (strcmp(s->agency, p->agency) != 0 || s->fd != p->fd)) {
        refex_log_warn("session: routing id of %s reused by a connection of %s; session ended",
                       s->agency, p->agency);
        session_drop(b, s);
        s = NULL;
    }
    size_t i = 0;
    while (i < sizeof FRAME_HANDLERS / sizeof FRAME_HANDLERS[0] &&
           FRAME_HANDLERS[i].kind != f->kind_case)
        i++;
    int known = i < sizeof FRAME_HANDLERS / sizeof FRAME_HANDLERS[0];
    if (!s && (!known || FRAME_HANDLERS[i].needs_session)) {
        if (broker_may_warn(b, p->agency))
            refex_log_warn("frame: %s from %s before HELLO", refex_frame_kind_name(f), p->agency);
        refex_link_send_error(b->router, p->rid, p->rid_len, REFEX_E_NOT_READY, NULL);
    } else if (!known) {
        if (broker_may_warn(b, p->agency))
            refex_log_warn("frame: unexpected %s from %s", refex_frame_kind_name(f), p->agency);
        refex_link_send_error(b->router, p->rid, p->rid_len, REFEX_E_PROTOCOL,
                              "frame not valid from an agent");
    } else {
        FRAME_HANDLERS[i].fn(b, p, f);
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
        if (broker_may_warn(b, user))
            refex_log_warn("frame: multipart message from %s refused", user ? user : "?");
        refex_link_send_error(b->router, zmq_msg_data(&rid), zmq_msg_size(&rid), REFEX_E_MALFORMED,
                              "one frame per message");
        goto out;
    }
    if (!user || zmq_msg_size(&rid) > RID_MAX) {
        if (broker_may_warn(b, user))
            refex_log_error("frame: no authenticated identity; dropped");
        goto out;
    }
    peer p = {zmq_msg_data(&rid), zmq_msg_size(&rid), zmq_msg_get(&body, ZMQ_SRCFD), user,
              zmq_msg_gets(&body, BROKER_ZAP_KEY_PROPERTY)};
    if (admission_refuse(b, &p))
        goto out;
    handle_frame(b, &p, zmq_msg_data(&body), zmq_msg_size(&body));
out:
    zmq_msg_close(&rid);
    zmq_msg_close(&body);
}

/* Binds the ZAP handler, then the agent-facing ROUTER with its monitor; writes the bound
 * endpoint to <data_dir>/broker.endpoint and announces READY. */
static int listen_sockets(broker *b)
{
    char endpoint[512], path[4200], err[256];
    size_t elen = sizeof endpoint;
    int one = 1, linger0 = 0;
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
    snprintf(path, sizeof path, "%s/broker.endpoint", b->base.data_dir);
    if (refex_file_write(path, endpoint, strlen(endpoint), 0644) != REFEX_OK)
        refex_log_warn("cannot write %s", path);
    refex_log_info("listening on %s, directory serial %llu with %zu agencies, store %s with "
                   "%lld pending deliveries",
                   endpoint, (unsigned long long)refex_directory_serial(b->base.dir),
                   refex_directory_count(b->base.dir), refex_store_name(b->store),
                   (long long)refex_store_count(b->store));
    if (b->metrics_listen[0] &&
        broker_metrics_open(b, b->metrics_listen, err, sizeof err) != REFEX_OK) {
        refex_log_error("%s", err);
        return REFEX_E_IO;
    }
    printf("READY %s\n", endpoint);
    fflush(stdout);
    char status[700];
    snprintf(status, sizeof status, "listening on %s, store %s", endpoint,
             refex_store_name(b->store));
    refex_notify_ready(status);
    return REFEX_OK;
}

int broker_run(broker *b)
{
    int rc;
    refex_daemon_signals_install();
    if ((rc = listen_sockets(b)) != REFEX_OK)
        return rc;
    while (!refex_daemon_stopping()) {
        /* the store's descriptor: other nodes' wake-ups (nodes.c) */
        int wake = refex_store_wake_fd(b->store), http = refex_metrics_fd(b->metrics);
        zmq_pollitem_t items[] = {{b->zap, 0, ZMQ_POLLIN, 0},
                                  {b->mon, 0, ZMQ_POLLIN, 0},
                                  {b->router, 0, ZMQ_POLLIN, 0},
                                  {NULL, http, ZMQ_POLLIN, 0},
                                  {NULL, wake, ZMQ_POLLIN, 0}};
        int n_items = http >= 0 ? 4 : 3;
        if (wake >= 0) /* the store's descriptor last, the metrics' before it if any */
            items[n_items++] = items[4];
        int n = zmq_poll(items, n_items, refex_metrics_timeout_ms(b->metrics, 200));
        if (n < 0) {
            if (errno == EINTR)
                goto signals;
            refex_log_error("poll: %s", zmq_strerror(errno));
            rc = REFEX_E_IO;
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            broker_zap_handle(b->zap, b->base.dir, &b->warn_gate);
        if (items[1].revents & ZMQ_POLLIN)
            session_monitor_drain(b);
        /* One batch: up to BATCH_MAX frames, then one commit, then the answers. */
        for (int i = 0; i < BATCH_MAX && (items[2].revents & ZMQ_POLLIN); i++) {
            int ev = 0;
            size_t evlen = sizeof ev;
            zmq_getsockopt(b->router, ZMQ_EVENTS, &ev, &evlen);
            if (!(ev & ZMQ_POLLIN))
                break;
            router_readable(b);
        }
        queue_timers(b);
        admission_tick(b);
        refex_log_gate_flush(&b->warn_gate, refex_mono_ms());
        queue_batch_end(b);
        session_monitor_drain(b);
        nodes_tick(b);
        session_pump_all(b);
        refex_metrics_run(b->metrics);
        refex_notify_watchdog();
      signals:
        if (refex_daemon_take_reload() && refex_daemon_base_reload(&b->base) == REFEX_OK)
            admission_sweep(b);
    }
    queue_batch_end(b);
    refex_log_info("stopping: %lld delivery(ies) still queued",
                   (long long)refex_store_count(b->store));
    return rc;
}
