/* The agent's storage: the one place in agents/ that talks to SQLite. It owns the schema,
 * a table of statements prepared once at open, the transaction primitives the batch
 * module builds group commit from, and typed functions for each table the agent keeps.
 * It knows nothing of keys, envelopes or the broker: callers pass plain values and get
 * refex codes back. The audit log's own tables belong to lib/audit.c and lib/audit_tree.c,
 * reached through agent_store_db(). */
#ifndef REFEX_AGENT_STORE_H
#define REFEX_AGENT_STORE_H

#include <jansson.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "body.h"
#include "refex/error.h"

typedef struct agent_store agent_store;

/* Opens (creating if needed) the database at path with the agent's tables and the audit
 * log's, and prepares every statement. */
int agent_store_open(const char *path, agent_store **out, char *err, size_t errlen) REFEX_NODISCARD;
void agent_store_close(agent_store **s_p);
/* The handle, for lib modules that keep their own tables in it (the audit log). */
sqlite3 *agent_store_db(agent_store *s);

/* Transactions: one per poll cycle, one savepoint per unit of work inside it. */
int agent_store_begin(agent_store *s) REFEX_NODISCARD;
int agent_store_commit(agent_store *s) REFEX_NODISCARD;
void agent_store_rollback(agent_store *s);
int agent_store_savepoint(agent_store *s) REFEX_NODISCARD;
int agent_store_release(agent_store *s) REFEX_NODISCARD;
/* Undoes the savepoint's work and ends it. */
int agent_store_undo(agent_store *s) REFEX_NODISCARD;
/* No transaction is open (SQLite may have rolled one back by itself, e.g. disk full). */
int agent_store_autocommit(agent_store *s);

/* ---- outbox: messages this agency sent ---- */
typedef struct {
    const char *message_id; /* hex */
    const char *recipients; /* "a,b" */
    const char *type;       /* message type name */
    const char *case_ref;
    int64_t created_ms;
    int64_t expires_ms; /* the envelope's expiry */
    int64_t sent_ms;    /* 0: not handed to the broker yet */
    const uint8_t *envelope;
    size_t envelope_len;
    const refex_body_meta *meta; /* kept so receipts and refusals are audited alike */
    const char *local_id;        /* the caller's own id for it, or NULL / "" for none */
    const char *submission_hash; /* hex SHA-256 of what was asked for under local_id */
} agent_outbox_row;

/* Adds a pending message; REFEX_E_EXISTS if the id, or a non-empty local id, is taken. */
int agent_store_outbox_insert(agent_store *s, const agent_outbox_row *r) REFEX_NODISCARD;

/* The message a caller's local id names, as an idempotent resubmission needs it. */
typedef struct {
    char message_id[33];
    char submission_hash[65];
    char state[16]; /* pending, stored, rejected */
    int64_t sent_ms;
    int error_code;
    char error_detail[512];
} agent_outbox_local;

/* *found is 1 and *out filled if a kept outbox row has this (non-empty) local id. */
int agent_store_outbox_by_local_id(agent_store *s, const char *local_id, agent_outbox_local *out,
                                   int *found) REFEX_NODISCARD;
typedef int (*agent_store_envelope_fn)(void *ctx, const char *message_id, const uint8_t *env,
                                       size_t len);
/* Pending messages last handed over at or before sent_before, oldest first, at most 500;
 * fn returns nonzero to stop. */
int agent_store_outbox_pending(agent_store *s, int64_t sent_before, agent_store_envelope_fn fn,
                               void *ctx) REFEX_NODISCARD;
/* The first `limit` pending messages in the order they were committed (created_ms, ties
 * by rowid), whenever last handed over: the send queue (outbox_pace.c). fn as above. */
int agent_store_outbox_queue(agent_store *s, int limit, agent_store_envelope_fn fn,
                             void *ctx) REFEX_NODISCARD;
int agent_store_outbox_mark_sent(agent_store *s, const char *message_id,
                                 int64_t sent_ms) REFEX_NODISCARD;
/* A pending message becomes stored (code 0) or rejected (code, detail). *settled is 0 if it
 * was not pending (unknown, or settled before); else its recipients are copied out. */
int agent_store_outbox_settle(agent_store *s, const char *message_id, int code, const char *detail,
                              int64_t now_ms, char *recipients, size_t rlen,
                              int *settled) REFEX_NODISCARD;
/* The same, recording for a STORED (code 0) the broker store's generation (32 hex) and the
 * store seq it gave the message; gen NULL keeps what the row has. *settled is 2 if a refusal
 * left the message stored: a broker store had stored it before, it was sent again because
 * the store lost it, and the refusal (it expired meanwhile, a recipient was revoked ...)
 * does not undo that first acceptance. */
int agent_store_outbox_settle_at(agent_store *s, const char *message_id, int code,
                                 const char *detail, int64_t now_ms, const char *gen, uint64_t seq,
                                 char *recipients, size_t rlen, int *settled) REFEX_NODISCARD;
/* agent_store_link.c. What HELLO says it was told: the generation of the newest STORED still
 * awaiting receipts and the highest store seq under it ("" and 0: none). */
int agent_store_outbox_high(agent_store *s, char gen[33], uint64_t *seq) REFEX_NODISCARD;
/* The broker's store is at generation gen holding up to seq `high` from us: stored
 * messages awaiting receipts that it no longer holds go back to pending (*requeued), except
 * those already expired (*expired counts them; the no-report sweep sees to them). */
int agent_store_outbox_requeue_lost(agent_store *s, const char *gen, uint64_t high, int64_t now_ms,
                                    int *requeued, int *expired) REFEX_NODISCARD;
/* The type and metadata recorded with one of our messages ("" throughout if unknown),
 * valid during fn; returns what fn returns. */
typedef int (*agent_store_meta_fn)(void *ctx, const char *type, const refex_body_meta *m);
int agent_store_outbox_meta(agent_store *s, const char *message_id, agent_store_meta_fn fn,
                            void *ctx) REFEX_NODISCARD;

/* ---- inbox: messages received, and those refused ---- */
typedef struct {
    const char *sender;
    const char *message_id;
    const char *type;
    const char *case_ref;
    int64_t created_ms;
    int64_t received_ms;
    const char *envelope_hash; /* hex */
    const uint8_t *body;
    size_t body_len;
    const refex_body_meta *meta;
} agent_inbox_row;

/* Has (sender, id) been handled? 1 with *code 0 and the stored envelope hash if it is in
 * the inbox, 1 with the refusal code if refused, 0 if new (or on a read error). */
int agent_store_known_delivery(agent_store *s, const char *sender, const char *message_id,
                               int *code, uint8_t hash[32], int *has_hash);
/* *dup is 1 if (sender, id) was there already (nothing changed). */
int agent_store_inbox_insert(agent_store *s, const agent_inbox_row *r, int *dup) REFEX_NODISCARD;
/* What an acknowledgement needs of the message it marks, valid during the callback. */
typedef struct {
    const char *sender, *type, *case_ref, *envelope_hash;
    const uint8_t *body;
    size_t body_len;
} agent_inbox_acked;
typedef int (*agent_store_ack_fn)(void *ctx, const agent_inbox_acked *m);
/* Marks the inbox message with this id from sender (NULL: any; the caller has checked
 * with agent_store_inbox_senders that there is one) acknowledged at now_ms, then calls fn
 * (the audit entry, in the same unit; a failure from fn is returned and the caller undoes
 * the unit). Acknowledged before: *already 1, *acked_at_ms when, and fn is not called.
 * Never deletes. REFEX_E_NOTFOUND if no such message. */
int agent_store_inbox_ack(agent_store *s, const char *message_id, const char *sender,
                          int64_t now_ms, agent_store_ack_fn fn, void *ctx, int64_t *acked_at_ms,
                          int *already) REFEX_NODISCARD;
/* The senders of the inbox messages with this id (ids are unique per sender only), as a
 * new JSON array of strings in cursor order. */
int agent_store_inbox_senders(agent_store *s, const char *message_id, json_t **out) REFEX_NODISCARD;
int agent_store_refused_insert(agent_store *s, const char *sender, const char *message_id, int code,
                               int *dup) REFEX_NODISCARD;

/* ---- receipts for our messages ---- */
typedef struct {
    const char *message_id;
    const char *recipient;
    int code;
    const char *signer;
    int64_t time_ms;
    int64_t received_ms;
    const uint8_t *receipt; /* the signed receipt as received */
    size_t len;
} agent_receipt_row;

/* *fresh is 0 if a receipt from this recipient was held already. */
int agent_store_receipt_insert(agent_store *s, const agent_receipt_row *r,
                               int *fresh) REFEX_NODISCARD;

/* ---- checkpoints peers attached ---- */
/* *seen: one of this size from agency is held; *differs: with another root. */
int agent_store_peer_checkpoint_check(agent_store *s, const char *agency, uint64_t size,
                                      const uint8_t root[32], int *seen,
                                      int *differs) REFEX_NODISCARD;
int agent_store_peer_checkpoint_put(agent_store *s, const char *agency, uint64_t size,
                                    const uint8_t root[32]) REFEX_NODISCARD;

/* ---- signed case objects: grants and subscriptions, newest serial wins ---- */
typedef enum { AGENT_SIGNED_GRANT, AGENT_SIGNED_SUBSCRIPTION } agent_signed_kind;

/* A grant is keyed by (case_ref, member) and names its lead; a subscription is keyed by
 * (agency, case_ref), case_ref "" meaning all the agency's cases. */
typedef struct {
    agent_signed_kind kind;
    const char *key1, *key2;
    const char *lead; /* grants only */
    uint64_t serial;
    const uint8_t *blob; /* the signed bytes */
    size_t len;
} agent_signed_obj;

/* Keeps o unless one with the same key and a serial at least as high is held. */
int agent_store_signed_put(agent_store *s, const agent_signed_obj *o) REFEX_NODISCARD;
/* The serial held for the key, 0 if none. */
int agent_store_signed_serial(agent_store *s, agent_signed_kind kind, const char *key1,
                              const char *key2, int64_t *serial) REFEX_NODISCARD;
/* Is a grant for case_ref held from a lead other than `lead`? */
int agent_store_grant_other_lead(agent_store *s, const char *case_ref, const char *lead,
                                 int *other) REFEX_NODISCARD;

/* Signed bytes, valid during the call; fn returns nonzero to stop. */
typedef int (*agent_store_blob_fn)(void *ctx, const uint8_t *blob, size_t len);
/* Every grant held for the case. */
int agent_store_grants_each(agent_store *s, const char *case_ref, agent_store_blob_fn fn,
                            void *ctx) REFEX_NODISCARD;
/* agency's subscriptions to case_ref and to all its cases, the case's own first. */
int agent_store_subscriptions_for(agent_store *s, const char *agency, const char *case_ref,
                                  agent_store_blob_fn fn, void *ctx) REFEX_NODISCARD;
/* Every object `agency` signed: its subscriptions, or the grants it made as a lead. */
int agent_store_signed_by(agent_store *s, agent_signed_kind kind, const char *agency,
                          agent_store_blob_fn fn, void *ctx) REFEX_NODISCARD;

/* ---- listings for the control socket (agent_store_json.c), rows as the replies carry them */
/* The messages with this id (the whole inbox if id is NULL), each row as in a page. */
int agent_store_inbox_json(agent_store *s, const char *id, json_t **rows) REFEX_NODISCARD;
/* Inbox messages with cursor > after, by cursor, at most limit (0: all), only the
 * unacknowledged ones if unacked; *last is the cursor of the last row, or after if none.
 * Each row carries "cursor", "acked" and (once acknowledged) "acked_at_ms". */
int agent_store_inbox_page_json(agent_store *s, int64_t after, int64_t limit, int unacked,
                                json_t **rows, int64_t *last) REFEX_NODISCARD;
int agent_store_outbox_json(agent_store *s, json_t **rows) REFEX_NODISCARD;
/* One of our messages with its receipts, as the message_status reply; id is its message id,
 * or else the caller's local id for it (a message id is tried first). REFEX_E_NOTFOUND. */
int agent_store_message_status_json(agent_store *s, const char *id, json_t **out) REFEX_NODISCARD;
int agent_store_referrals_json(agent_store *s, json_t **rows) REFEX_NODISCARD;
int agent_store_requests_json(agent_store *s, int only_overdue, json_t **rows) REFEX_NODISCARD;

/* ---- expired with no report (agent_store_report.c) ---------------------------------- */
/* The no_reports table: recipients of our stored messages that sent neither a receipt nor
 * a non-delivery report by the message's expiry (the broker may have lost the message).
 * Made with the schema (create_tables), inside its transaction; expires_added and
 * closed_added say whether that upgrade has just added the outbox's columns of those names,
 * whose existing rows are then filled (each once: a full scan of the outbox). */
int agent_store_report_create(sqlite3 *db, int expires_added, int closed_added) REFEX_NODISCARD;
/* Closes message_id's outbox row (nothing more is awaited) if a receipt from each of its
 * recipients is held; *closed (may be NULL) says whether it did now. */
int agent_store_outbox_close_if_receipted(agent_store *s, const char *message_id,
                                          int *closed) REFEX_NODISCARD;
int agent_store_outbox_close(agent_store *s, const char *message_id) REFEX_NODISCARD;

/* A stored message still open past its expiry (recipients as the outbox keeps them: at
 * most 64 agency ids of under 64 characters, comma-separated). */
#define AGENT_RECIPIENTS_MAX (64 * 65)
typedef struct {
    char message_id[33];
    char recipients[AGENT_RECIPIENTS_MAX];
    int64_t expires_ms;
} agent_overdue_row;
/* Stored, open messages with expires_ms <= expired_by, earliest first, at most cap. */
int agent_store_outbox_overdue(agent_store *s, int64_t expired_by, agent_overdue_row *rows,
                               size_t cap, size_t *n) REFEX_NODISCARD;
/* fn once with message_id's envelope if its outbox row is kept (not at all if not). */
int agent_store_outbox_envelope(agent_store *s, const char *message_id, agent_store_envelope_fn fn,
                                void *ctx) REFEX_NODISCARD;
/* Is a receipt (or non-delivery report) from recipient held for message_id? */
int agent_store_receipt_held(agent_store *s, const char *message_id, const char *recipient,
                             int *held) REFEX_NODISCARD;
/* *fresh is 0 if (message_id, recipient) was noted before (nothing changed). */
int agent_store_no_report_insert(agent_store *s, const char *message_id, const char *recipient,
                                 int64_t expires_ms, int64_t noted_ms, int *fresh) REFEX_NODISCARD;
/* The noted recipients of message_id still without a receipt, as a new JSON array of
 * {recipient, expires_ms, noted_ms}; a receipt that came after all wins. */
int agent_store_no_report_json(agent_store *s, const char *message_id,
                               json_t **out) REFEX_NODISCARD;
/* The ids of messages with such a recipient, as a new JSON object {id: true}. */
int agent_store_no_report_ids(agent_store *s, json_t **out) REFEX_NODISCARD;

/* Counts for the agent's metrics (agents/metrics.c). */
typedef struct {
    int64_t outbox_pending;        /* not yet stored by the broker */
    int64_t unreceipted;           /* sent, no receipt from any recipient yet */
    int64_t oldest_unreceipted_ms; /* created_ms of the oldest of them; 0: none */
    int64_t inbox_unacked;         /* received, not acknowledged into the agency's records */
    int64_t audit_entries;
} agent_store_counts_t;
int agent_store_counts(agent_store *s, agent_store_counts_t *c) REFEX_NODISCARD;

#endif
