/* The broker's durable queue, behind a small interface so routing never depends on the
 * backend (SQLite now; a replicated backend such as PostgreSQL can implement the same
 * operations). A message is stored once with one pending delivery per recipient; each
 * recipient's ACK removes its delivery and leaves a signed receipt for the sender. Writes
 * happen inside a batch (begin ... commit), so one fsync covers every message of a poll
 * cycle (group commit); nothing is acknowledged to anyone before commit returns OK. */
#ifndef REFEX_STORE_H
#define REFEX_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"

/* Pending deliveries, in store order (which is arrival order, so per-sender order). */
typedef int (*refex_store_msg_fn)(void *ctx, int64_t seq, const uint8_t id[16], const char *sender,
                                  const uint8_t *env, size_t env_len);
/* Receipts waiting for their sender. */
typedef int (*refex_store_receipt_fn)(void *ctx, int64_t seq, const uint8_t id[16],
                                      const char *recipient, const uint8_t *receipt, size_t len);
/* Pending deliveries of one recipient: how many, and when the oldest was stored (ms). */
typedef void (*refex_store_stats_fn)(void *ctx, const char *recipient, int64_t pending,
                                     int64_t oldest_stored_ms);
/* Deliveries whose message expired before the recipient acknowledged it. */
typedef int (*refex_store_expired_fn)(void *ctx, const uint8_t id[16], const char *sender,
                                      const char *recipient);

typedef struct refex_store_ops {
    const char *name;
    int (*begin)(void *impl);
    /* REFEX_E_STORE if the batch's messages could not be made durable. Its acknowledgements
     * and receipt acks may still have been: if SQLite ended the transaction under a failed
     * write (a full disk), they are redone in a new one, and only the messages are lost. */
    int (*commit)(void *impl);
    void (*rollback)(void *impl);
    /* REFEX_E_DUPLICATE if (sender, id) is known; REFEX_E_STORE if it cannot be written or
     * does not fit (checked before the insert; refusal() says which). */
    int (*put)(void *impl, const uint8_t id[16], const char *sender, const char *const *rcpt,
               size_t n_rcpt, const uint8_t *env, size_t env_len, int64_t expires_at_ms);
    /* Deliveries for recipient with seq > after, at most limit. */
    int (*pending)(void *impl, const char *recipient, int64_t after, int limit,
                   refex_store_msg_fn fn, void *ctx);
    /* Ends recipient's delivery of (sender, id) and keeps the receipt for the sender.
     * REFEX_E_NOTFOUND if there is no such pending delivery. */
    int (*ack)(void *impl, const char *recipient, const char *sender, const uint8_t id[16],
               const uint8_t *receipt, size_t receipt_len);
    /* Receipts for sender with seq > after, at most limit, oldest first. */
    int (*receipts)(void *impl, const char *sender, int64_t after, int limit,
                    refex_store_receipt_fn fn, void *ctx);
    int (*receipt_ack)(void *impl, const char *sender, const uint8_t id[16], const char *recipient);
    int (*expired)(void *impl, int64_t now_ms, int limit, refex_store_expired_fn fn, void *ctx);
    /* Forgets delivered messages whose expiry has passed (their ids stop being duplicates:
     * a resend after expiry is refused as expired anyway). */
    int (*purge)(void *impl, int64_t now_ms);
    int64_t (*count)(void *impl); /* pending deliveries */
    /* After a write failed: is the batch still usable? put and ack undo their own partial
     * work when they fail, but some failures (I/O, a full disk) end the whole batch. */
    int (*batch_alive)(void *impl);
    /* Envelope bytes waiting for delivery (what max_bytes limits), in the open batch. */
    int64_t (*live_bytes)(void *impl);
    /* Why the last put answered REFEX_E_STORE, in words for the sender. */
    const char *(*refusal)(void *impl);
    /* The store seq of the message the last put stored, or found stored (a duplicate). */
    uint64_t (*put_seq)(void *impl);
    /* The store's generation: 16 random bytes, new when the store is created or
     * initialised, and when renew says it was found behind. */
    void (*generation)(void *impl, uint8_t out[16]);
    /* The highest store seq of any message stored from sender (0: none) into *high. Never
     * lower than what an earlier STORED said, unless the store went backwards. */
    int (*sender_high)(void *impl, const char *sender, uint64_t *high);
    /* A new generation, written in the open batch: the store holds less than it answered
     * STORED for (restored from an older copy, or its WAL lost). generation() gives it once
     * the batch has committed; until then, and if the batch is lost, the old one. */
    int (*renew)(void *impl);
    /* Several broker nodes on one store (NULL in a backend only one node can use). wake_fd: a
     * descriptor that becomes readable when another node stored deliveries or receipts (-1:
     * none); wakeups: calls fn for each agency they were for ("*": any), without blocking.
     * claim: this node takes the agency's delivery claim, in the open batch; *epoch gets the
     * claim's epoch, higher at each take. holds: 1 if this node still holds it at epoch, 0
     * if another node took it since, negative if it cannot tell. */
    int (*wake_fd)(void *impl);
    /* For metrics: per recipient, its pending deliveries and the oldest one's store time. */
    int (*pending_stats)(void *impl, refex_store_stats_fn fn, void *ctx);
    void (*wakeups)(void *impl, void (*fn)(void *ctx, const char *agency), void *ctx);
    int (*claim)(void *impl, const char *agency, uint64_t *epoch);
    int (*holds)(void *impl, const char *agency, uint64_t epoch);
    void (*destroy)(void *impl);
} refex_store_ops;

typedef struct refex_store {
    const refex_store_ops *ops;
    void *impl;
} refex_store;

/* One-line wrappers over the ops table, so callers write refex_store_put(s, ...) rather than
 * s->ops->put(s->impl, ...). Contracts as in refex_store_ops above. */
static inline const char *refex_store_name(const refex_store *s)
{
    return s->ops->name;
}
static inline int refex_store_begin(refex_store *s)
{
    return s->ops->begin(s->impl);
}
static inline int refex_store_commit(refex_store *s)
{
    return s->ops->commit(s->impl);
}
static inline void refex_store_rollback(refex_store *s)
{
    s->ops->rollback(s->impl);
}
static inline int refex_store_put(refex_store *s, const uint8_t id[16], const char *sender,
                                  const char *const *rcpt, size_t n_rcpt, const uint8_t *env,
                                  size_t env_len, int64_t expires_at_ms)
{
    return s->ops->put(s->impl, id, sender, rcpt, n_rcpt, env, env_len, expires_at_ms);
}
static inline int refex_store_pending(refex_store *s, const char *recipient, int64_t after,
                                      int limit, refex_store_msg_fn fn, void *ctx)
{
    return s->ops->pending(s->impl, recipient, after, limit, fn, ctx);
}
static inline int refex_store_ack(refex_store *s, const char *recipient, const char *sender,
                                  const uint8_t id[16], const uint8_t *receipt, size_t receipt_len)
{
    return s->ops->ack(s->impl, recipient, sender, id, receipt, receipt_len);
}
static inline int refex_store_receipts(refex_store *s, const char *sender, int64_t after, int limit,
                                       refex_store_receipt_fn fn, void *ctx)
{
    return s->ops->receipts(s->impl, sender, after, limit, fn, ctx);
}
static inline int refex_store_receipt_ack(refex_store *s, const char *sender, const uint8_t id[16],
                                          const char *recipient)
{
    return s->ops->receipt_ack(s->impl, sender, id, recipient);
}
static inline int refex_store_expired(refex_store *s, int64_t now_ms, int limit,
                                      refex_store_expired_fn fn, void *ctx)
{
    return s->ops->expired(s->impl, now_ms, limit, fn, ctx);
}
static inline int refex_store_purge(refex_store *s, int64_t now_ms)
{
    return s->ops->purge(s->impl, now_ms);
}
static inline int64_t refex_store_count(refex_store *s)
{
    return s->ops->count(s->impl);
}
static inline int refex_store_batch_alive(refex_store *s)
{
    return s->ops->batch_alive(s->impl);
}
static inline int64_t refex_store_live_bytes(refex_store *s)
{
    return s->ops->live_bytes(s->impl);
}
static inline const char *refex_store_refusal(refex_store *s)
{
    return s->ops->refusal(s->impl);
}
static inline uint64_t refex_store_put_seq(refex_store *s)
{
    return s->ops->put_seq(s->impl);
}
static inline void refex_store_generation(refex_store *s, uint8_t out[16])
{
    s->ops->generation(s->impl, out);
}
static inline int refex_store_sender_high(refex_store *s, const char *sender, uint64_t *high)
{
    return s->ops->sender_high(s->impl, sender, high);
}
static inline int refex_store_renew(refex_store *s)
{
    return s->ops->renew(s->impl);
}
static inline int refex_store_pending_stats(refex_store *s, refex_store_stats_fn fn, void *ctx)
{
    return s->ops->pending_stats ? s->ops->pending_stats(s->impl, fn, ctx) : REFEX_OK;
}
/* For a backend without nodes: no wake-ups, and every claim is this node's. */
static inline int refex_store_wake_fd(refex_store *s)
{
    return s->ops->wake_fd ? s->ops->wake_fd(s->impl) : -1;
}
static inline void refex_store_wakeups(refex_store *s, void (*fn)(void *ctx, const char *agency),
                                       void *ctx)
{
    if (s->ops->wakeups)
        s->ops->wakeups(s->impl, fn, ctx);
}
static inline int refex_store_claim(refex_store *s, const char *agency, uint64_t *epoch)
{
    *epoch = 0;
    return s->ops->claim ? s->ops->claim(s->impl, agency, epoch) : REFEX_OK;
}
static inline int refex_store_holds(refex_store *s, const char *agency, uint64_t epoch)
{
    return s->ops->holds ? s->ops->holds(s->impl, agency, epoch) : 1;
}

/* refex_store_sqlite_open flags. A store file that exists but lacks tables it had (its file
 * damaged or replaced, its WAL lost before a checkpoint) is refused with REFEX_E_STORE
 * unless REFEX_STORE_INIT is given: then the missing tables are made anew under a new
 * generation, and agents send again what they hold no receipt for. */
#define REFEX_STORE_INIT 1u

/* Opens (creating) the SQLite store at path: WAL, synchronous=FULL, incremental auto-vacuum
 * when new. max_bytes > 0 caps the live envelope bytes (a put that would pass it fails with
 * REFEX_E_STORE); the file is capped at about twice that plus 256 KiB as a backstop. */
int refex_store_sqlite_open(const char *path, uint64_t max_bytes, unsigned flags, refex_store **out,
                            char *err, size_t errlen) REFEX_NODISCARD;
/* Opens the PostgreSQL store at uri (a libpq connection URI, postgresql://h1,h2/db?...;
 * with target_session_attrs=read-write libpq picks the writable host), creating its tables
 * if the database has none. max_bytes as for SQLite. */
int refex_store_pg_open(const char *uri, uint64_t max_bytes, refex_store **out, char *err,
                        size_t errlen) REFEX_NODISCARD;
/* Every PostgreSQL session of the broker (the URI's own options, if it has any, win): a
 * node that stops in the middle of a transaction (its machine lost, not its process) gives
 * up its locks after 15 s, and a node waiting for a lock gives up after 5 s (the batch is
 * refused and sent again) instead of stalling its event loop; TCP keepalives notice a
 * vanished server within about 25 s. */
#define REFEX_PG_SESSION_OPTIONS "-c idle_in_transaction_session_timeout=15s -c lock_timeout=5s"
/* Whether a `store =` setting names a PostgreSQL store (postgresql:// or postgres://). */
int refex_store_is_pg(const char *spec);
void refex_store_destroy(refex_store **self_p);

#endif
