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
/* Deliveries whose message expired before the recipient acknowledged it. */
typedef int (*refex_store_expired_fn)(void *ctx, const uint8_t id[16], const char *sender,
                                      const char *recipient);

typedef struct refex_store_ops {
    const char *name;
    int (*begin)(void *impl);
    int (*commit)(void *impl); /* REFEX_E_STORE if it could not be made durable */
    void (*rollback)(void *impl);
    /* REFEX_E_DUPLICATE if (sender, id) is known; REFEX_E_STORE if it cannot be written. */
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
    void (*destroy)(void *impl);
} refex_store_ops;

typedef struct refex_store {
    const refex_store_ops *ops;
    void *impl;
} refex_store;

/* Opens (creating) the SQLite store at path: WAL, synchronous=FULL. max_bytes > 0 caps the
 * database size (writes beyond it fail with REFEX_E_STORE, as on a full disk). */
int refex_store_sqlite_open(const char *path, uint64_t max_bytes, refex_store **out, char *err,
                            size_t errlen) REFEX_NODISCARD;
void refex_store_destroy(refex_store **self_p);

#endif
