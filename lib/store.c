/* Broker queue interface and its in-memory backend. The memory backend keeps messages
 * in arrival order in a list, which also gives per-sender order on replay. It is not
 * durable: a broker restart forgets it. */
#include "refex/store.h"

#include <stdlib.h>
#include <string.h>

#include "refex/keys.h"

typedef struct mem_msg {
    struct mem_msg *next;
    uint8_t id[16];
    char sender[REFEX_ID_MAX];
    size_t n_rcpt, n_left;
    char (*rcpt)[REFEX_ID_MAX];
    uint8_t *done; /* per recipient: acknowledged */
    uint8_t *env;
    size_t env_len;
    int64_t expires_at_ms;
} mem_msg;

typedef struct {
    mem_msg *head, *tail;
    size_t count;
} mem_store;

static void msg_free(mem_msg *m)
{
    free(m->rcpt);
    free(m->done);
    free(m->env);
    free(m);
}

static int mem_put(void *impl, const uint8_t id[16], const char *sender, const char *const *rcpt,
                   size_t n_rcpt, const uint8_t *env, size_t env_len, int64_t expires_at_ms)
{
    mem_store *s = impl;
    for (mem_msg *m = s->head; m; m = m->next)
        if (memcmp(m->id, id, 16) == 0 && strcmp(m->sender, sender) == 0)
            return REFEX_E_DUPLICATE;
    mem_msg *m = calloc(1, sizeof *m);
    if (!m)
        return REFEX_E_NOMEM;
    m->rcpt = calloc(n_rcpt, sizeof *m->rcpt);
    m->done = calloc(n_rcpt, 1);
    m->env = malloc(env_len ? env_len : 1);
    if (!m->rcpt || !m->done || !m->env) {
        msg_free(m);
        return REFEX_E_NOMEM;
    }
    memcpy(m->id, id, 16);
    strncpy(m->sender, sender, REFEX_ID_MAX - 1);
    for (size_t i = 0; i < n_rcpt; i++)
        strncpy(m->rcpt[i], rcpt[i], REFEX_ID_MAX - 1);
    m->n_rcpt = m->n_left = n_rcpt;
    if (env_len)
        memcpy(m->env, env, env_len);
    m->env_len = env_len;
    m->expires_at_ms = expires_at_ms;
    if (s->tail)
        s->tail->next = m;
    else
        s->head = m;
    s->tail = m;
    s->count++;
    return REFEX_OK;
}

static int mem_ack(void *impl, const char *recipient, const char *sender, const uint8_t id[16])
{
    mem_store *s = impl;
    mem_msg *prev = NULL;
    for (mem_msg *m = s->head; m; prev = m, m = m->next) {
        if (memcmp(m->id, id, 16) != 0 || strcmp(m->sender, sender) != 0)
            continue;
        for (size_t i = 0; i < m->n_rcpt; i++) {
            if (strcmp(m->rcpt[i], recipient) != 0 || m->done[i])
                continue;
            m->done[i] = 1;
            if (--m->n_left == 0) {
                if (prev)
                    prev->next = m->next;
                else
                    s->head = m->next;
                if (s->tail == m)
                    s->tail = prev;
                s->count--;
                msg_free(m);
            }
            return REFEX_OK;
        }
        return REFEX_E_NOTFOUND;
    }
    return REFEX_E_NOTFOUND;
}

static int mem_pending(void *impl, const char *recipient, refex_store_visit_fn fn, void *ctx)
{
    mem_store *s = impl;
    for (mem_msg *m = s->head; m; m = m->next)
        for (size_t i = 0; i < m->n_rcpt; i++)
            if (!m->done[i] && strcmp(m->rcpt[i], recipient) == 0 &&
                fn(ctx, m->id, m->sender, m->env, m->env_len) != 0)
                return REFEX_OK;
    return REFEX_OK;
}

static size_t mem_count(void *impl)
{
    return ((mem_store *)impl)->count;
}

static void mem_destroy(void *impl)
{
    mem_store *s = impl;
    while (s->head) {
        mem_msg *n = s->head->next;
        msg_free(s->head);
        s->head = n;
    }
    free(s);
}

static const refex_store_ops MEM_OPS = {"memory",    mem_put,   mem_ack,
                                        mem_pending, mem_count, mem_destroy};

int refex_store_memory_new(refex_store **out)
{
    refex_store *self = calloc(1, sizeof *self);
    mem_store *m = calloc(1, sizeof *m);
    if (!self || !m) {
        free(self);
        free(m);
        return REFEX_E_NOMEM;
    }
    self->ops = &MEM_OPS;
    self->impl = m;
    *out = self;
    return REFEX_OK;
}

void refex_store_destroy(refex_store **self_p)
{
    if (!self_p || !*self_p)
        return;
    (*self_p)->ops->destroy((*self_p)->impl);
    free(*self_p);
    *self_p = NULL;
}

int refex_store_put(refex_store *s, const uint8_t id[16], const char *sender,
                    const char *const *rcpt, size_t n_rcpt, const uint8_t *env, size_t env_len,
                    int64_t expires_at_ms)
{
    return s->ops->put(s->impl, id, sender, rcpt, n_rcpt, env, env_len, expires_at_ms);
}

int refex_store_ack(refex_store *s, const char *recipient, const char *sender, const uint8_t id[16])
{
    return s->ops->ack(s->impl, recipient, sender, id);
}

int refex_store_pending(refex_store *s, const char *recipient, refex_store_visit_fn fn, void *ctx)
{
    return s->ops->pending(s->impl, recipient, fn, ctx);
}

size_t refex_store_count(refex_store *s)
{
    return s->ops->count(s->impl);
}
