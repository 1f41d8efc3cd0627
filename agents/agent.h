/* refex-agent: one agency's daemon. Holds the agency's keys, seals what the agency
 * sends, verifies and opens what it receives, keeps the outbox, inbox and audit log in
 * one SQLite database, and serves the local CLI on an ipc:// control socket.
 *
 * The daemon's private header (as redis's server.h): struct agent, shared constants and
 * the prototypes of every module, grouped by file; the storage module's (the only one
 * that touches SQLite) are in agent_store.h. agents/main.c uses only agent_open,
 * agent_run and agent_close. */
#ifndef REFEX_AGENT_H
#define REFEX_AGENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "agent_store.h"
#include "audit.h"
#include "body.h"
#include "config.h"
#include "daemon.h"
#include "metrics.h"
#include "directory.h"
#include "envelope.h"
#include "grant.h"
#include "keys.h"
#include "refex.pb-c.h"

typedef struct agent agent;

int agent_open(const refex_config *cfg, agent **out, char *err, size_t errlen);
/* Runs until SIGTERM/SIGINT. Prints "READY <agency>" on stdout after the broker's
 * WELCOME. */
int agent_run(agent *a);
void agent_close(agent **a_p);

#define MAX_WAITERS         64
#define RID_MAX             256
#define CONTROL_MAX         (64u * 1024 * 1024)
#define WAIT_DEADLINE       30000
#define MAX_TTL_SECONDS     REFEX_MAX_TTL_SECONDS /* lib/envelope.h */
#define RETRY_MS            5000  /* resend what the broker has not answered after this long */
#define PACE_BACKOFF_MIN_MS 250   /* the first pause after a refusal; doubles up to RETRY_MS */
#define PING_MS             10000 /* application-level ping when the link is otherwise idle */
#define SEND_WINDOW_DEFAULT 32    /* SENDs in flight unanswered (the broker keeps their order) */
#define SEND_WINDOW_MAX     64

/* A SEND handed to the broker and not answered yet (outbox_pace.c). */
typedef struct {
    uint8_t id[16];
    int64_t sent_ms; /* monotonic */
} in_flight;

/* A control client waiting for the broker's STORED for one of its messages. */
typedef struct {
    uint8_t rid[RID_MAX];
    size_t rid_len;
    uint8_t id[16];
    int64_t deadline;
    int committed; /* its message's batch has committed */
} waiter;

/* A control client holding an inbox_wait until a message with a cursor above `after`
 * commits, or its deadline passes (inbox_wait.c). */
#define MAX_INBOX_WAITERS 64
#define INBOX_WAIT_MAX_MS 300000
typedef struct {
    uint8_t rid[RID_MAX];
    size_t rid_len;
    int64_t after, limit;
    int64_t deadline; /* monotonic ms */
} inbox_waiter;

/* Something to send once the current batch has committed: a frame for the broker
 * (rid_len == 0) or a reply for a control client. */
struct out_item {
    uint8_t rid[RID_MAX];
    size_t rid_len;
    char *data;
    size_t len;
    int to_sign;      /* a SEND or ACK frame: signed with the batch when it commits */
    uint8_t leaf[32]; /* its batch-signature leaf (lib/batchsig.h) */
};

#define AGENT_MAX_BROKERS 8

struct agent {
    char agency[REFEX_ID_MAX];
    char broker_ep[512]; /* the endpoint connected to now: brokers[cur_broker] */
    /* Broker failover (failover.c): config broker's endpoints, tried in turn. */
    char brokers[AGENT_MAX_BROKERS][512];
    size_t n_brokers, cur_broker;
    uint64_t broker_timeout_s; /* config broker_timeout_seconds: no WELCOME by then, move on */
    int64_t broker_since_ms; /* monotonic: connecting to broker_ep, or waiting for WELCOME, since */
    /* systemd (lib/notify.h): READY=1 sent; config ready_grace_seconds (0: only after a
     * WELCOME); when the loop started (monotonic). */
    int notified_ready;
    /* metrics.c (config metrics_listen; "": none) */
    refex_metrics *metrics;
    char metrics_listen[128];
    uint64_t ready_grace_s;
    int64_t started_ms;
    size_t broker_moves; /* moves since the last WELCOME: a whole round of the list without
                            one, and the next move waits for broker_timeout_seconds */
    char broker_id[REFEX_ID_MAX];
    refex_daemon_base base;
    long control_gid;          /* control_group's gid: its members may use control.sock; -1 */
    uint64_t broker_max_frame; /* the broker's limit, from WELCOME */
    agent_store *store;
    void *ctx, *link, *mon, *control;
    int online;
    int64_t next_retry_ms, last_sent_ms, next_checkpoint_ms;
    int64_t checkpoint_wait_until; /* a submitted checkpoint awaits the witness until then */
    uint64_t witness_size;         /* the size the witness last told us it holds, 0 if unknown */
    /* Group commit: the work of one poll cycle shares one transaction (each piece in its
     * own savepoint); frames and replies that depend on it wait in outq until it commits. */
    int in_batch;
    json_t *reply_sink; /* while set (send_batch), batch_reply appends here instead */
    int batch_dead;     /* SQLite rolled the whole transaction back: refuse work until batch_end */
    struct out_item *outq;
    size_t outq_n, outq_cap;
    waiter waiters[MAX_WAITERS];
    size_t n_waiters;
    inbox_waiter inbox_waiters[MAX_INBOX_WAITERS];
    size_t n_inbox_waiters;
    int inbox_grew; /* the open batch added a message to the inbox */
    /* The send queue (outbox_pace.c): the oldest pending messages, in order, in flight. */
    uint64_t send_window; /* config send_window; 0 (unset): SEND_WINDOW_DEFAULT */
    in_flight flight[SEND_WINDOW_MAX];
    size_t n_flight;
    int pace_recovering;     /* a transient refusal: one at a time until the oldest is stored */
    int64_t pace_resume_ms;  /* monotonic; after a transient refusal nothing is sent before it */
    int64_t pace_backoff_ms; /* the pause after the last refusal; 0 when none is being retried */
    char broker_gen[33];     /* the broker store's generation, as the last WELCOME gave it */
    /* The expiry sweep (outbox_expiry.c). */
    uint64_t report_grace_s;  /* config report_grace_seconds; 0 (unset): REPORT_GRACE_DEFAULT */
    int64_t expiry_online_ms; /* monotonic: online since (0: offline when last looked) */
    int64_t expiry_next_ms;   /* monotonic: no sweep before this */
    /* A key rotation's other key set (agent_keys.c): kept to open messages sealed to it. */
    refex_keys *other_keys;
    char keys_path[4200]; /* config `keys`, read again on reload for a rotation's new keys */
    /* Key epochs (agent_keys.c, lib/epoch.c): ours per recipient key, and the epoch keys of
     * senders' epochs seen, per own key; config epoch_seconds and epoch_messages. */
    refex_epoch_sender *epochs;
    refex_epoch_cache *epoch_cache;
    int64_t next_epoch_sweep_ms; /* monotonic: when timers() next wipes ended epochs */
};

/* A control command's handler, a row in control.c's table: answers through batch_reply. */
typedef void (*agent_cmd_fn)(agent *a, const uint8_t *rid, size_t rid_len, json_t *req);

/* agent_keys.c: a key rotation. Loads the ID.previous.secret beside keys_path if there is
 * one, and runs with whichever set the directory names as current (its previous keys only
 * inside the overlap); REFEX_E_CONFIG (err says why) if neither. */
int agent_keys_choose(agent *a, const char *keys_path, char *err, size_t errlen);
/* After a directory reload: if the directory now names keys other than the ones in use,
 * loads that set from disk to open what is sealed to it, and tells the operator to restart
 * (or that the agency has left the directory). */
void agent_keys_reloaded(agent *a);
/* 1 if the directory names keys for us that we hold neither in use nor as the other set:
 * a message we cannot open may be sealed to keys we will hold later (held, not refused). */
int agent_keys_behind(agent *a);
/* The epoch tables from config epoch_seconds and epoch_messages (REFEX_E_CONFIG, err says
 * why, if out of range); agent_keys_fini wipes them and the other key set. */
int agent_keys_epochs_open(agent *a, const refex_config *cfg, char *err, size_t errlen);
void agent_keys_fini(agent *a);
/* refex_envelope_open_keys with our current encryption key and the other set's, through
 * the epoch cache. */
int agent_keys_open(agent *a, const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h,
                    uint8_t **body, size_t *len);

/* batch.c: group commit */
int batch_unit_begin(agent *a);
int batch_unit_end(agent *a, int ok);
void batch_end(agent *a);
/* Signs the envelopes and receipts waiting in the out queue with one batch signature
 * (batch_end does, once the cycle has committed); a no-op when none wait unsigned. */
void batch_sign_queue(agent *a);
/* Replies to a control client (taking the reply), held until commit inside a batch. */
void batch_reply(agent *a, const uint8_t *rid, size_t rid_len, json_t *reply);
/* The command m as a frame for the broker, held until commit inside a batch. */
int batch_link_out(agent *a, Refex__V1__Frame__KindCase kind, const ProtobufCMessage *m);

/* control.c: the control socket */
json_t *control_error(int code, const char *detail);
void control_readable(agent *a);

/* control_guard.c: whether the peer that sent req (a zmq_msg_t) may use the control socket:
 * this agent's own uid, or a member of control_group. If not, it is answered E_DENIED, the
 * refusal logged (uid, gid, pid) and 0 returned. */
int control_guard_admit(agent *a, const void *req, const uint8_t *rid, size_t rid_len);

/* outbox.c: sending */
void outbox_cmd_send(agent *a, const uint8_t *rid, size_t rid_len, json_t *req);
void outbox_cmd_send_batch(agent *a, const uint8_t *rid, size_t rid_len, json_t *req);
void outbox_result(agent *a, const uint8_t id[16], int code, const char *detail);
/* The same, with the broker store's generation (hex) and the store seq a STORED gave. */
void outbox_result_at(agent *a, const uint8_t id[16], int code, const char *detail, const char *gen,
                      uint64_t seq);

/* outbox_link.c: the broker's store as the outbox sees it. HELLO says what the agent was
 * told; a WELCOME showing the store behind that puts the lost messages back in the queue;
 * a STORED records where the store holds the message. */
void outbox_link_hello(agent *a, Refex__V1__Hello *h, uint8_t gen[16]);
void outbox_link_welcome(agent *a, const Refex__V1__Welcome *w);
void outbox_link_stored(agent *a, const Refex__V1__Stored *st);
void outbox_expire_waiters(agent *a);

/* outbox_pace.c: the order and pace of SENDs. Pending messages go to the broker oldest
 * first, at most the window unanswered; a transient refusal stops the queue. */
/* Refusals that say "not now" rather than "never": the message stays pending. */
int outbox_transient(int code);
/* A new session (WELCOME): nothing is in flight any more; send from the oldest. */
void outbox_pace_restart(agent *a);
/* Sends the next pending messages in order while the window has room (inside a batch). */
void outbox_pace_pump(agent *a);
/* The broker answered message id (code 0: STORED): frees its slot, backs off on a
 * transient refusal, else sends the next ones. */
void outbox_pace_answer(agent *a, const uint8_t id[16], int code);
/* Is message id handed to the broker and unanswered? */
int outbox_pace_in_flight(const agent *a, const uint8_t id[16]);
/* The loop's timer: resumes after a back-off; forgets SENDs unanswered for RETRY_MS. */
void outbox_pace_tick(agent *a);
/* max_ms, or less if a back-off ends sooner: the loop's poll timeout. */
int outbox_pace_poll_ms(const agent *a, int max_ms);

/* outbox_expiry.c: a stored message past its expiry by report_grace_seconds with neither a
 * receipt nor a non-delivery report from a recipient is noted, audited and raises an ALERT
 * line. From the loop, every cycle (it sweeps at most once a second, online only). */
#define REPORT_GRACE_DEFAULT 600
/* No WELCOME this long after connecting to a broker endpoint: try the next one listed. */
#define BROKER_TIMEOUT_DEFAULT 10
/* Under systemd: READY=1 this long after start even without the broker's WELCOME. */
#define READY_GRACE_DEFAULT 30
#define REPORT_GRACE_MAX    86400
void outbox_expiry_sweep(agent *a);

/* inbox.c: receiving */
void inbox_deliver(agent *a, const Refex__V1__Envelope *env);
void inbox_receipt(agent *a, const Refex__V1__SignedReceipt *sr);
/* Marks the message with this id from sender (NULL: its one sender) taken into the
 * receiving system's records, audited once (an `ack` entry) in its own unit: *already if
 * it was before. REFEX_E_NOTFOUND if no such message. */
int inbox_ack(agent *a, const char *idhex, const char *sender, int64_t *acked_at_ms, int *already);

/* inbox_wait.c: consuming the inbox by cursor, and held waiters */
/* {"ok":true,"messages":[...],"cursor":C} for inbox messages with cursor > after. */
int inbox_page(agent *a, int64_t after, int64_t limit, int unacked, json_t **reply);
/* Holds the client until a message with cursor > after commits or timeout_ms passes;
 * REFEX_E_BUSY when MAX_INBOX_WAITERS are held already. */
int inbox_wait_hold(agent *a, const uint8_t *rid, size_t rid_len, int64_t after, int64_t limit,
                    int timeout_ms);
/* After a commit that added to the inbox: answers every waiter it satisfies. */
void inbox_wait_wake(agent *a);
/* Answers waiters whose time is up with an empty page. */
void inbox_wait_expire(agent *a);
/* The poll timeout: at most max_ms, less if a waiter's deadline comes sooner. */
int inbox_wait_poll_ms(const agent *a, int max_ms);

/* cases.c: grants, subscriptions, membership */
void cases_cmd_grant(agent *a, const uint8_t *rid, size_t rid_len, json_t *req);
void cases_cmd_members(agent *a, const uint8_t *rid, size_t rid_len, json_t *req);
void cases_cmd_subscribe(agent *a, const uint8_t *rid, size_t rid_len, json_t *req);
void cases_grant_notice(agent *a, const Refex__V1__SignedGrant *sg);
void cases_subscription_notice(agent *a, const Refex__V1__SignedSubscription *ss);
void cases_resend_subscriptions(agent *a);
int cases_is_subscribed(agent *a, const char *agency, const char *case_ref, int type);
/* Is agency the case's lead, or a member allowed updates of `type` (0: any)? */
int cases_is_member(agent *a, const char *case_ref, const char *agency, int type);
int cases_recipients(agent *a, const char *case_ref, int type, const refex_agency **out, size_t cap,
                     size_t *n);

/* journal.c: the audit journal and checkpoints */
void journal_fill(agent *a, refex_audit_entry *e, const char *event, const char *outcome,
                  const char *peer, const char *idhex, int type, const char *case_ref,
                  const char *env_hash, const refex_body_meta *m);
/* Appends to the audit log, inside the caller's unit. */
int journal_append(agent *a, const refex_audit_entry *e);
int journal_outcome(agent *a, const char *event, const char *outcome, const char *peer,
                    const char *idhex, const char *env_hash);
int journal_used(agent *a, const char *what);
int journal_checkpoint_note(agent *a, char **note);
void journal_note_peer_checkpoint(agent *a, const char *sender, const refex_agency *sa,
                                  const char *note);
void journal_checkpoint(agent *a);
void journal_cosigned(agent *a, const Refex__V1__Cosigned *cs);

/* failover.c: `broker`'s endpoints, the connection to the current one, and the moves to
 * the next (lost: the connection was lost or its handshake failed; tick: from the loop). */
int failover_parse(agent *a, const char *list, char *err, size_t errlen);
int failover_connect(agent *a);
void failover_lost(agent *a, const char *why);
void failover_tick(agent *a);
/* A monitor event's endpoint is one of the others listed, not the one connected to now. */
int failover_stale(const agent *a, const char *ep);

/* metrics.c: the metrics endpoint, opened when the loop starts. */
int agent_metrics_open(agent *a, const char *listen, char *err, size_t errlen);

#endif
