/* refex-broker: authenticates agencies (CurveZMQ + ZAP against the signed directory),
 * checks envelopes it can see the outside of, queues and routes them. It never holds a
 * key that opens a body.
 *
 * This private header joins the broker's files, one concern each: broker.c (the loop, the
 * frame table, HELLO/PING/CHECKPOINT), session.c (agency <-> connection, delivery pump),
 * queue.c (SEND/ACK/RECEIPT_ACK, expiry, group commit) and notice.c (GRANT/SUBSCRIBE and
 * the notices that spread them to a case's parties). */
#ifndef REFEX_BROKER_H
#define REFEX_BROKER_H

#include <stddef.h>
#include <stdint.h>

#include "refex.pb-c.h"
#include "cases.h"
#include "config.h"
#include "daemon.h"
#include "directory.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "witness.h"

#define MAX_SESSIONS 1024
#define RID_MAX      256
#define BATCH_MAX    256

/* One stream a session is sent, deliveries or receipts, each acknowledged on its own. */
typedef struct {
    int64_t cursor;      /* last seq sent on this session */
    int inflight;        /* sent and not yet acknowledged */
    int64_t progress_ms; /* last acknowledgement, or when sending last (re)started */
} session_flow;

/* A HELLO binds an agency to one connection: its routing id and, because a client may
 * choose its own routing id, the file descriptor it arrived on. Frames from that routing id
 * by another identity or fd, and the connection's DISCONNECTED event, end the session. */
typedef struct {
    char agency[REFEX_ID_MAX];
    uint8_t rid[RID_MAX];
    size_t rid_len;
    int fd;
    session_flow deliveries; /* progress: last ACK, or when the window was opened */
    session_flow receipts;   /* progress: last RECEIPT_ACK, or when receipts were first sent */
    int dirty;               /* new deliveries or receipts may be waiting */
    /* After refusing one of this agency's messages for now (E_STORE), its later SENDs are
     * refused too (E_BUSY) until it sends that one again, or until held_until_ms: so no
     * later message of a sender is stored ahead of an earlier one (queue.c). */
    int held;
    uint8_t held_id[16];
    int64_t held_until_ms;
    /* The transport key the connection was admitted with: during a key rotation's overlap
     * it may be the agency's previous key (admission.c). */
    int has_transport_pk;
    uint8_t transport_pk[32];
    uint64_t claim_epoch; /* the delivery claim this node took for it at HELLO (nodes.c) */
} session;

/* A STORED (or, if the batch fails, REJECTED) answer held until the batch commits. */
typedef struct {
    uint8_t rid[RID_MAX];
    size_t rid_len;
    uint8_t id[16];
    uint64_t seq; /* its store seq */
} reply;

/* Where a frame came from: its routing id and fd, and the agency the transport
 * authenticated. */
typedef struct {
    const uint8_t *rid;
    size_t rid_len;
    int fd;
    const char *agency;
    const char *key_hex; /* the transport key ZAP admitted (BROKER_ZAP_KEY_PROPERTY), hex */
} peer;

/* Error codes counted for metrics (refex error codes are below this). */
#define BROKER_CODES 64

typedef struct broker {
    char listen[512];
    refex_daemon_base base;
    refex_store *store;
    witness *witness;
    cases *cases;
    uint64_t window, window_bytes, redeliver_ms, store_max;
    void *ctx, *router, *zap, *mon;
    session sessions[MAX_SESSIONS];
    size_t n_sessions;
    reply replies[BATCH_MAX];
    size_t n_replies;
    int in_batch, batch_failed;
    int64_t next_expiry_ms, next_purge_ms, next_admission_ms, next_nodes_ms;
    refex_log_gate warn_gate; /* refusal warnings, per agency (broker_may_warn) */
    /* metrics.c (config metrics_listen): the endpoint, and what it counts since start */
    refex_metrics *metrics;
    char metrics_listen[128];        /* config metrics_listen; "": none */
    uint64_t refusals[BROKER_CODES]; /* REJECTED answers, by refex error code */
    uint64_t cosigned, alerts;
} broker;

/* A handler of one kind of frame from an agent (a row of broker.c's frame table). */
typedef void (*broker_frame_fn)(broker *b, const peer *p, const Refex__V1__Frame *f);

/* broker.c */
/* store_flags: REFEX_STORE_* (lib/store.h) for opening the queue store. */
int broker_open(const refex_config *cfg, unsigned store_flags, broker **out, char *err,
                size_t errlen);
/* Runs the event loop until SIGTERM/SIGINT. Prints "READY <endpoint>" on stdout once
 * bound. */
int broker_run(broker *b);
void broker_close(broker **b_p);
/* Whether a warning about a refused frame from agency may be logged now: the first few per
 * agency in each window are, the rest only counted (refex_log_gate). A flood of bad frames
 * writes a bounded number of lines. */
int broker_may_warn(broker *b, const char *agency);
/* Sends command m of the given kind back to the peer a frame came from. */
int broker_reply(broker *b, const peer *p, Refex__V1__Frame__KindCase kind,
                 const ProtobufCMessage *m);

/* session.c */
session *session_by_rid(broker *b, const uint8_t *rid, size_t len);
session *session_by_agency(broker *b, const char *agency);
/* REFEX_E_UNAVAILABLE when every session slot is taken. */
int session_bind(broker *b, const peer *p);
void session_drop(broker *b, session *s);
/* New deliveries or receipts may be waiting for agency, if it is online. */
void session_mark(broker *b, const char *agency);
/* Every session starts over from its oldest pending delivery and receipt. */
void session_rewind_all(broker *b);
/* Ends the sessions of connections the monitor reports closed. */
void session_monitor_drain(broker *b);
/* Sends command m of the given kind on the session (see refex_link_send). */
int session_send(broker *b, const session *s, Refex__V1__Frame__KindCase kind,
                 const ProtobufCMessage *m);
/* Sends a stored object (packed: an envelope, a signed receipt, grant or subscription) in
 * the frame kind whose command carries it as its one field: DELIVER, RECEIPT, GRANT_NOTICE,
 * SUBSCRIPTION_NOTICE. REFEX_E_MALFORMED if the bytes do not unpack, else as session_send. */
int session_send_packed(broker *b, const session *s, Refex__V1__Frame__KindCase kind,
                        const uint8_t *blob, size_t len);
/* Redelivers what went unacknowledged too long and fills every open delivery window. */
void session_pump_all(broker *b);

/* metrics.c: the metrics endpoint if metrics_listen is set (NULL: none), and a refusal
 * counted by code. */
int broker_metrics_open(broker *b, const char *listen, char *err, size_t errlen);
void broker_refused(broker *b, int code);

/* nodes.c: with several nodes on one store, the delivery claim taken at HELLO (in the open
 * batch), and from the loop: other nodes' wake-ups and the sweep of claims. */
void nodes_claim(broker *b, session *s);
void nodes_tick(broker *b);

/* queue.c */
int queue_batch_begin(broker *b);
/* Commits the cycle's writes, then answers STORED (or REJECTED for all of them). */
void queue_batch_end(broker *b);
/* Expiry every second, purge every minute. */
void queue_timers(broker *b);
void queue_handle_send(broker *b, const peer *p, const Refex__V1__Frame *f);
/* HELLO's view of the store checked against the store (a new generation if the store is
 * found behind it), and the store's part of the WELCOME filled in: gen must outlive w. */
void queue_welcome(broker *b, const char *agency, const Refex__V1__Hello *h, Refex__V1__Welcome *w,
                   uint8_t gen[16]);
void queue_handle_ack(broker *b, const peer *p, const Refex__V1__Frame *f);
void queue_handle_receipt_ack(broker *b, const peer *p, const Refex__V1__Frame *f);

/* notice.c */
void notice_handle_grant(broker *b, const peer *p, const Refex__V1__Frame *f);
void notice_handle_subscribe(broker *b, const peer *p, const Refex__V1__Frame *f);
/* A new session gets the grants and subscriptions of every case it is a party of. */
void notice_welcome(broker *b, const char *agency);

#endif
