/* The broker's queue, behind a small interface so routing never depends on the backend.
 * A message is stored once with its list of recipients; each recipient acknowledges its
 * own copy, and the message is gone once every recipient has. The in-memory backend
 * here holds messages for recipients that are offline until they reconnect; a durable
 * SQLite backend implements the same operations. */
#ifndef REFEX_STORE_H
#define REFEX_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"

/* Called once per pending message, oldest first; a non-zero return stops the walk. */
typedef int (*refex_store_visit_fn)(void *ctx, const uint8_t id[16], const char *sender,
                                    const uint8_t *env, size_t env_len);

typedef struct refex_store_ops {
    const char *name;
    /* REFEX_E_DUPLICATE if (sender, id) is already stored. */
    int (*put)(void *impl, const uint8_t id[16], const char *sender, const char *const *rcpt,
               size_t n_rcpt, const uint8_t *env, size_t env_len, int64_t expires_at_ms);
    /* REFEX_E_NOTFOUND if the recipient has no such pending message. */
    int (*ack)(void *impl, const char *recipient, const char *sender, const uint8_t id[16]);
    int (*pending)(void *impl, const char *recipient, refex_store_visit_fn fn, void *ctx);
    size_t (*count)(void *impl);
    void (*destroy)(void *impl);
} refex_store_ops;

typedef struct refex_store {
    const refex_store_ops *ops;
    void *impl;
} refex_store;

int refex_store_memory_new(refex_store **out) REFEX_NODISCARD;
void refex_store_destroy(refex_store **self_p);

int refex_store_put(refex_store *s, const uint8_t id[16], const char *sender,
                    const char *const *rcpt, size_t n_rcpt, const uint8_t *env, size_t env_len,
                    int64_t expires_at_ms) REFEX_NODISCARD;
int refex_store_ack(refex_store *s, const char *recipient, const char *sender,
                    const uint8_t id[16]) REFEX_NODISCARD;
int refex_store_pending(refex_store *s, const char *recipient, refex_store_visit_fn fn,
                        void *ctx) REFEX_NODISCARD;
size_t refex_store_count(refex_store *s);

#endif
