/* The agent's event loop: one thread, one zmq_poll over the broker link, its monitor and
 * the control socket. Every state change that matters (a message sent, received or
 * refused) is committed to SQLite together with its audit entry before anything is
 * answered. Logs carry ids and agencies only, never body contents. Not here: what each
 * frame or command does (inbox.c, outbox.c, cases.c, journal.c, control.c). */
#include "agent.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "codec.h"
#include "link.h"
#include "epoch.h"
#include "log.h"
#include "notify.h"
#include "util.h"

static const char *const CONFIG_KEYS[] = {"agency",
                                          "broker",
                                          "broker_id",
                                          "broker_timeout_seconds",
                                          "ready_grace_seconds",
                                          "metrics_listen",
                                          "control_group",
                                          "send_window",
                                          "report_grace_seconds",
                                          "epoch_seconds",
                                          "epoch_messages",
                                          REFEX_DAEMON_BASE_KEYS,
                                          NULL};

/* ---- setup ------------------------------------------------------------------------- */

int agent_open(const refex_config *cfg, agent **out, char *err, size_t errlen)
{
    int rc;
    char path[4200];
    agent *a = calloc(1, sizeof *a);
    *out = NULL;
    if (!a)
        return REFEX_E_NOMEM;
    if ((rc = refex_config_check_keys(cfg, CONFIG_KEYS, err, errlen)) != REFEX_OK)
        goto out;
    if ((rc = refex_config_group(cfg, "control_group", &a->control_gid, err, errlen)) != REFEX_OK)
        goto out;
    rc = REFEX_E_CONFIG;
    const char *agency = refex_config_get(cfg, "agency");
    const char *ep = refex_config_get(cfg, "broker");
    const char *bid = refex_config_get(cfg, "broker_id");
    if (!refex_id_valid(agency)) {
        snprintf(err, errlen, "config: agency must be a valid agency id");
        goto out;
    }
    if (!ep || !*ep) {
        snprintf(err, errlen, "config: broker (the broker's endpoint) is required");
        goto out;
    }
    snprintf(a->agency, sizeof a->agency, "%s", agency);
    if ((rc = failover_parse(a, ep, err, errlen)) != REFEX_OK)
        goto out;
    rc = REFEX_E_CONFIG;
    if (refex_config_uint(cfg, "broker_timeout_seconds", BROKER_TIMEOUT_DEFAULT,
                          &a->broker_timeout_s) ||
        a->broker_timeout_s < 1 || a->broker_timeout_s > 3600) {
        snprintf(err, errlen, "config: broker_timeout_seconds must be between 1 and 3600");
        goto out;
    }
    if (refex_config_uint(cfg, "ready_grace_seconds", READY_GRACE_DEFAULT, &a->ready_grace_s) ||
        a->ready_grace_s > 3600) {
        snprintf(err, errlen, "config: ready_grace_seconds must be between 0 and 3600");
        goto out;
    }
    snprintf(a->broker_id, sizeof a->broker_id, "%s", bid ? bid : "broker");
    if (refex_config_uint(cfg, "send_window", SEND_WINDOW_DEFAULT, &a->send_window) ||
        a->send_window < 1 || a->send_window > SEND_WINDOW_MAX) {
        snprintf(err, errlen, "config: send_window must be between 1 and %d", SEND_WINDOW_MAX);
        goto out;
    }
    if (refex_config_uint(cfg, "report_grace_seconds", REPORT_GRACE_DEFAULT, &a->report_grace_s) ||
        a->report_grace_s < 1 || a->report_grace_s > REPORT_GRACE_MAX) {
        snprintf(err, errlen, "config: report_grace_seconds must be between 1 and %d",
                 REPORT_GRACE_MAX);
        goto out;
    }
    if ((rc = refex_daemon_base_load(cfg, "this agency's .secret file", &a->base, err, errlen)) !=
        REFEX_OK)
        goto out;
    rc = REFEX_E_CONFIG;
    if (strcmp(a->base.keys->pub.agency, a->agency) != 0) {
        snprintf(err, errlen, "config: keys belong to '%s', not to agency '%s'",
                 a->base.keys->pub.agency, a->agency);
        goto out;
    }
    if (refex_config_path(cfg, "keys", path, sizeof path) ||
        (rc = agent_keys_choose(a, path, err, errlen)) != REFEX_OK ||
        (rc = agent_keys_epochs_open(a, cfg, err, errlen)) != REFEX_OK)
        goto out;
    rc = REFEX_E_CONFIG;
    if (!refex_directory_find(a->base.dir, a->broker_id)) {
        snprintf(err, errlen, "broker '%s' is not in the directory", a->broker_id);
        goto out;
    }
    const char *metrics = refex_config_get(cfg, "metrics_listen");
    snprintf(a->metrics_listen, sizeof a->metrics_listen, "%s", metrics ? metrics : "");
    if (metrics && (rc = refex_metrics_check(metrics, err, errlen)) != REFEX_OK)
        goto out;
    snprintf(path, sizeof path, "%s/agent.db", a->base.data_dir);
    if ((rc = agent_store_open(path, &a->store, err, errlen)) != REFEX_OK)
        goto out;
    *out = a;
    a = NULL;
    rc = REFEX_OK;
out:
    agent_close(&a);
    return rc;
}

void agent_close(agent **a_p)
{
    if (!a_p || !*a_p)
        return;
    agent *a = *a_p;
    refex_metrics_close(&a->metrics);
    if (a->control)
        zmq_close(a->control);
    /* Stop the monitor while its reader is open: the stop event is a blocking send. */
    if (a->link && a->mon)
        zmq_socket_monitor(a->link, NULL, 0);
    if (a->mon)
        zmq_close(a->mon);
    if (a->link)
        zmq_close(a->link);
    if (a->ctx)
        zmq_ctx_term(a->ctx);
    for (size_t i = 0; i < a->outq_n; i++)
        free(a->outq[i].data);
    free(a->outq);
    agent_store_close(&a->store);
    agent_keys_fini(a);
    refex_daemon_base_fini(&a->base);
    free(a);
    *a_p = NULL;
}
static void send_hello(agent *a)
{
    Refex__V1__Hello h = REFEX__V1__HELLO__INIT;
    h.agency = a->agency;
    h.software = "refex-agent/0.1";
    a->broker_since_ms = refex_mono_ms(); /* WELCOME is awaited from now (failover.c) */
    uint8_t gen[16];
    outbox_link_hello(a, &h, gen);
    if (refex_link_send_msg(a->link, NULL, 0, REFEX__V1__FRAME__KIND_HELLO, &h.base) != REFEX_OK)
        refex_log_warn("hello: could not send");
}

/* ---- frames from the broker ------------------------------------------------------- */

static void on_welcome(agent *a, const Refex__V1__Frame *f)
{
    a->broker_max_frame = f->welcome->max_frame_bytes;
    if (!a->online) {
        a->online = 1;
        refex_log_info("link: welcomed by the broker as %s", a->agency);
        printf("READY %s\n", a->agency);
        fflush(stdout);
        char status[sizeof a->broker_ep + REFEX_ID_MAX + 64];
        snprintf(status, sizeof status, "online: agency %s at broker %s", a->agency, a->broker_ep);
        if (a->notified_ready)
            refex_notify_status("%s", status);
        else
            refex_notify_ready(status);
        a->notified_ready = 1;
    }
    a->expiry_online_ms = refex_mono_ms(); /* reports held for us come after each WELCOME */
    a->broker_moves = 0;
    outbox_link_welcome(a, f->welcome);
    outbox_pace_restart(a);
    cases_resend_subscriptions(a);
}

static void on_stored(agent *a, const Refex__V1__Frame *f)
{
    outbox_link_stored(a, f->stored);
}

static void on_rejected(agent *a, const Refex__V1__Frame *f)
{
    if (f->rejected->message_id.len == 16)
        outbox_result(a, f->rejected->message_id.data, (int)f->rejected->code, f->rejected->detail);
}

static void on_deliver(agent *a, const Refex__V1__Frame *f)
{
    inbox_deliver(a, f->deliver->envelope);
}

static void on_error(agent *a, const Refex__V1__Frame *f)
{
    refex_log_warn("link: broker reported %s", refex_errname((int)f->error->code));
    if (f->error->code == REFEX_E_NOT_READY) {
        /* The broker ended our session (e.g. our queue was full): bind again. */
        a->online = 0;
        send_hello(a);
    } else if (f->error->code == REFEX_E_REVOKED) {
        /* The directory no longer admits us: the broker ended our session for good. */
        if (a->online)
            refex_log_error("link: the broker no longer admits agency %s; offline", a->agency);
        a->online = 0;
    }
}

static void on_receipt(agent *a, const Refex__V1__Frame *f)
{
    inbox_receipt(a, f->receipt->receipt);
}

static void on_cosigned(agent *a, const Refex__V1__Frame *f)
{
    journal_cosigned(a, f->cosigned);
}

static void on_grant_notice(agent *a, const Refex__V1__Frame *f)
{
    cases_grant_notice(a, f->grant_notice->grant);
}

static void on_subscription_notice(agent *a, const Refex__V1__Frame *f)
{
    cases_subscription_notice(a, f->subscription_notice->subscription);
}

/* What the agent does with each kind of frame the broker sends; a NULL handler means the
 * frame is expected and needs nothing (liveness). Anything else is logged and dropped. */
static const struct frame_handler {
    Refex__V1__Frame__KindCase kind;
    void (*fn)(agent *a, const Refex__V1__Frame *f);
} FRAME_HANDLERS[] = {
    {REFEX__V1__FRAME__KIND_WELCOME, on_welcome},
    {REFEX__V1__FRAME__KIND_STORED, on_stored},
    {REFEX__V1__FRAME__KIND_REJECTED, on_rejected},
    {REFEX__V1__FRAME__KIND_DELIVER, on_deliver},
    {REFEX__V1__FRAME__KIND_ERROR, on_error},
    {REFEX__V1__FRAME__KIND_RECEIPT, on_receipt},
    {REFEX__V1__FRAME__KIND_COSIGNED, on_cosigned},
    {REFEX__V1__FRAME__KIND_GRANT_NOTICE, on_grant_notice},
    {REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE, on_subscription_notice},
    {REFEX__V1__FRAME__KIND_PING, NULL},
    {REFEX__V1__FRAME__KIND_PONG, NULL},
};

static const struct frame_handler *find_frame_handler(Refex__V1__Frame__KindCase kind)
{
    for (size_t i = 0; i < sizeof FRAME_HANDLERS / sizeof FRAME_HANDLERS[0]; i++)
        if (FRAME_HANDLERS[i].kind == kind)
            return &FRAME_HANDLERS[i];
    return NULL;
}

static void link_readable(agent *a)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, a->link, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return;
    }
    Refex__V1__Frame *f = NULL;
    int rc = refex_frame_unpack(zmq_msg_data(&m), zmq_msg_size(&m), a->base.max_frame, &f);
    int more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    while (more) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        more = zmq_msg_recv(&extra, a->link, 0) >= 0 && zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
    if (rc != REFEX_OK) {
        refex_log_warn("link: frame from the broker refused: %s", refex_errname(rc));
        return;
    }
    const struct frame_handler *h = find_frame_handler(f->kind_case);
    if (h && h->fn)
        h->fn(a, f);
    else if (!h)
        refex_log_warn("link: unexpected %s frame from the broker", refex_frame_kind_name(f));
    refex_frame_free(&f);
}

static void monitor_readable(agent *a)
{
    int value = 0, ev;
    char ep[sizeof a->broker_ep];
    while ((ev = refex_link_monitor_event_ep(a->mon, &value, ep, sizeof ep)) >= 0) {
        if (failover_stale(a, ep))
            continue; /* about an endpoint failed over from */
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            refex_log_info("link: connected to %s", a->broker_ep);
            send_hello(a);
        } else if (ev == ZMQ_EVENT_DISCONNECTED) {
            if (a->online) {
                refex_log_warn("link: disconnected from the broker; reconnecting");
                refex_notify_status("offline: reconnecting to the broker");
            }
            a->online = 0;
            failover_lost(a, "disconnected");
        } else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            refex_log_error("link: the broker refused our transport key (status %d): is "
                            "agency %s in the broker's directory?",
                            value, a->agency);
            failover_lost(a, "transport key refused");
        } else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                   ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            refex_log_error("link: handshake with the broker failed (wrong broker key?)");
            failover_lost(a, "handshake failed");
        }
    }
}
/* ---- loop -------------------------------------------------------------------------- */

static void timers(agent *a)
{
    int64_t now = refex_mono_ms();
    if (now >= a->next_epoch_sweep_ms) { /* ended epochs' keys go even while idle */
        int64_t wall = refex_now_ms();
        refex_epoch_sender_sweep(a->epochs, wall);
        refex_epoch_cache_sweep(a->epoch_cache, wall);
        a->next_epoch_sweep_ms = now + 1000;
    }
    failover_tick(a);
    /* systemd: ready without the broker once the grace is over (the control socket serves;
     * messages wait in the outbox) */
    if (!a->notified_ready && a->ready_grace_s &&
        now - a->started_ms >= (int64_t)a->ready_grace_s * 1000) {
        refex_notify_ready("serving the control socket; waiting for the broker");
        a->notified_ready = 1;
    }
    /* until then, start-up is still in progress as long as the loop runs: no
     * TimeoutStartSec kills an agent that waits for its broker (a stuck loop stops this) */
    if (!a->notified_ready)
        refex_notify_extend_start(30);
    if (!a->online)
        return;
    outbox_pace_tick(a);
    if (now - a->last_sent_ms >= PING_MS) {
        /* Application-level liveness on top of ZMTP heartbeats: any traffic counts. */
        Refex__V1__Ping p = REFEX__V1__PING__INIT;
        p.nonce = (uint64_t)now;
        if (refex_link_send_msg(a->link, NULL, 0, REFEX__V1__FRAME__KIND_PING, &p.base) == REFEX_OK)
            a->last_sent_ms = now;
    }
}

/* With control_group set, its members must be able to reach control.sock: the data
 * directory becomes 0710 with that group (search only: they can open what they can name,
 * list nothing, and every other file in it is private to the agent's user). */
static int open_data_dir(agent *a, const char *group)
{
    struct stat st;
    const char *dir = a->base.data_dir;
    if (stat(dir, &st) != 0 || chown(dir, (uid_t)-1, (gid_t)a->control_gid) != 0 ||
        chmod(dir, 0710) != 0) {
        refex_log_error("control: cannot give %s to control_group %s: %s", dir, group,
                        strerror(errno));
        return REFEX_E_CONFIG;
    }
    if ((st.st_mode & 07777) != 0710 || st.st_gid != (gid_t)a->control_gid)
        refex_log_info("control: %s is now mode 0710, group %s (control_group), so its members "
                       "can reach control.sock",
                       dir, group);
    return REFEX_OK;
}

/* The control socket at ipc://<data_dir>/control.sock, mode 0660 whatever the umask: its
 * owner's group is control_group if one is set, else the agent's own. Who may then send on
 * it is control_guard.c's check. */
static int bind_control(agent *a, char *ep, size_t eplen)
{
    char path[sizeof a->base.data_dir + 16];
    const struct group *gr = a->control_gid >= 0 ? getgrgid((gid_t)a->control_gid) : NULL;
    const char *group = gr ? gr->gr_name : "?";
    snprintf(path, sizeof path, "%s/control.sock", a->base.data_dir);
    remove(path); /* a stale socket from an unclean stop */
    snprintf(ep, eplen, "ipc://%s", path);
    /* The process's one thread creates files now; libzmq's I/O threads create none. */
    mode_t old = umask(0117);
    int bound = zmq_bind(a->control, ep) == 0;
    int e = errno;
    umask(old);
    if (!bound) {
        refex_log_error("control: cannot bind %s: %s", ep, zmq_strerror(e));
        return REFEX_E_IO;
    }
    if (chmod(path, 0660) != 0) {
        refex_log_error("control: cannot set mode 0660 on %s: %s", path, strerror(errno));
        return REFEX_E_IO;
    }
    if (a->control_gid < 0)
        return REFEX_OK;
    if (chown(path, (uid_t)-1, (gid_t)a->control_gid) != 0) {
        refex_log_error("control: cannot give %s to control_group %s: %s (the agent's user must "
                        "be root or a member of that group)",
                        path, group, strerror(errno));
        return REFEX_E_CONFIG;
    }
    return open_data_dir(a, group);
}

/* The broker link (CurveZMQ, monitored) and the control socket, bound at
 * ipc://<data_dir>/control.sock, whose endpoint goes to ep. */
static int open_sockets(agent *a, char *ep, size_t eplen)
{
    const refex_agency *br = refex_directory_find(a->base.dir, a->broker_id);
    a->ctx = zmq_ctx_new();
    a->link = zmq_socket(a->ctx, ZMQ_DEALER);
    a->control = zmq_socket(a->ctx, ZMQ_ROUTER);
    if (!a->link || !a->control)
        return REFEX_E_IO;
    refex_link_tune(a->link, a->base.max_frame);
    if (refex_link_curve_client(a->link, a->base.keys, br->transport_pk) != REFEX_OK ||
        refex_link_monitor(a->ctx, a->link, &a->mon) != REFEX_OK) {
        refex_log_error("link: cannot set up the broker connection");
        return REFEX_E_IO;
    }
    if (failover_connect(a) != REFEX_OK)
        return REFEX_E_CONFIG;
    int64_t maxmsg = CONTROL_MAX;
    int linger0 = 0;
    zmq_setsockopt(a->control, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    /* Replies to a CLI that has gone away must not hold up shutdown. */
    zmq_setsockopt(a->control, ZMQ_LINGER, &linger0, sizeof linger0);
    zmq_setsockopt(a->mon, ZMQ_LINGER, &linger0, sizeof linger0);
    return bind_control(a, ep, eplen);
}

/* Is a message waiting on sock right now? (zmq_poll's answer may be stale mid-cycle.) */
static int has_input(void *sock)
{
    int ev = 0;
    size_t evlen = sizeof ev;
    zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &evlen);
    return ev & ZMQ_POLLIN;
}

int agent_run(agent *a)
{
    char ep[4200];
    refex_daemon_signals_install();
    int rc = open_sockets(a, ep, sizeof ep);
    if (rc != REFEX_OK)
        return rc;
    char err[256];
    if (a->metrics_listen[0] &&
        agent_metrics_open(a, a->metrics_listen, err, sizeof err) != REFEX_OK) {
        refex_log_error("%s", err);
        return REFEX_E_IO;
    }
    refex_log_info("agency %s: broker %s, control %s", a->agency, a->broker_ep, ep);
    a->started_ms = refex_mono_ms();
    refex_notify_status("connecting to broker %s", a->broker_ep);

    while (!refex_daemon_stopping()) {
        int http = refex_metrics_fd(a->metrics);
        zmq_pollitem_t items[] = {{a->link, 0, ZMQ_POLLIN, 0},
                                  {a->mon, 0, ZMQ_POLLIN, 0},
                                  {a->control, 0, ZMQ_POLLIN, 0},
                                  {NULL, http, ZMQ_POLLIN, 0}};
        int wait_ms = outbox_pace_poll_ms(a, inbox_wait_poll_ms(a, 500));
        int n = zmq_poll(items, http >= 0 ? 4 : 3, refex_metrics_timeout_ms(a->metrics, wait_ms));
        if (n < 0) {
            if (errno == EINTR)
                goto signals;
            refex_log_error("poll: %s", zmq_strerror(errno));
            return REFEX_E_IO;
        }
        if (items[1].revents & ZMQ_POLLIN)
            monitor_readable(a);
        for (int i = 0; i < 256 && (items[0].revents & ZMQ_POLLIN) && has_input(a->link); i++)
            link_readable(a);
        for (int i = 0; i < 64 && (items[2].revents & ZMQ_POLLIN) && has_input(a->control); i++)
            control_readable(a);
        /* One commit for the cycle, then what waits on it. */
        timers(a);
        outbox_expiry_sweep(a);
        batch_end(a);
        journal_checkpoint(a);
        outbox_expire_waiters(a);
        inbox_wait_expire(a);
        refex_metrics_run(a->metrics);
        refex_notify_watchdog();
      signals:
        if (refex_daemon_take_reload() && refex_daemon_base_reload(&a->base) == REFEX_OK)
            agent_keys_reloaded(a);
    }
    snprintf(ep, sizeof ep, "%s/control.sock", a->base.data_dir);
    remove(ep);
    refex_log_info("stopping");
    return REFEX_OK;
}
