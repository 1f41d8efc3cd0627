/* Key epochs (epoch.h): the derivation and wrap both ends share, the sender's table of
 * current epochs and the receiver's cache of epoch keys. The epoch keys of each table live
 * in one sodium_malloc'd block, so a message costs no secure allocation, and every key is
 * wiped when its epoch ends, on eviction and on destroy. An ephemeral secret key lives
 * only for the one derivation it serves. */
#include "epoch.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define NONCE_LEN    crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define AD_MAX       256
#define SENDER_BLOCK (REFEX_EPOCH_SENDER_SLOTS * 32 + REFEX_EPOCH_SCRATCH_LEN)
#define CACHE_BLOCK  (REFEX_EPOCH_CACHE_SLOTS * 32 + REFEX_EPOCH_SCRATCH_LEN)

int refex_epoch_derive(const uint8_t my_sk[32], const uint8_t their_pk[32],
                       const uint8_t epoch_pk[32], const uint8_t rcpt_pk[32], uint8_t ek[32])
{
    uint8_t shared[crypto_scalarmult_BYTES];
    crypto_generichash_state st;
    /* -1 for an all-zero output: their_pk is a low-order point, which no honest party uses. */
    if (crypto_scalarmult(shared, my_sk, their_pk) != 0) {
        sodium_memzero(shared, sizeof shared);
        return REFEX_E_CRYPTO;
    }
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)REFEX_EPOCH_CONTEXT,
                              sizeof REFEX_EPOCH_CONTEXT);
    crypto_generichash_update(&st, shared, sizeof shared);
    crypto_generichash_update(&st, epoch_pk, 32);
    crypto_generichash_update(&st, rcpt_pk, 32);
    crypto_generichash_final(&st, ek, 32);
    sodium_memzero(shared, sizeof shared);
    sodium_memzero(&st, sizeof st);
    return REFEX_OK;
}

static void put_u32be(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* "refex/wrap/v1"\0 || id || u32be(len) || sender || u32be(len) || recipient; 0 if too long. */
static size_t wrap_ad(uint8_t ad[AD_MAX], const uint8_t id[16], const char *sender,
                      const char *recipient)
{
    size_t cl = sizeof REFEX_WRAP_CONTEXT, sl = strlen(sender), rl = strlen(recipient);
    size_t n = cl + 16 + 4 + sl + 4 + rl;
    if (n > AD_MAX)
        return 0;
    memcpy(ad, REFEX_WRAP_CONTEXT, cl);
    memcpy(ad + cl, id, 16);
    put_u32be(ad + cl + 16, sl);
    memcpy(ad + cl + 20, sender, sl);
    put_u32be(ad + cl + 20 + sl, rl);
    memcpy(ad + cl + 24 + sl, recipient, rl);
    return n;
}

int refex_epoch_wrap(const uint8_t ek[32], const uint8_t nonce[24], const uint8_t ckey[32],
                     const uint8_t message_id[16], const char *sender, const char *recipient,
                     uint8_t out[REFEX_EPOCH_WRAPPED_LEN])
{
    uint8_t ad[AD_MAX];
    unsigned long long clen = 0;
    size_t ad_len = wrap_ad(ad, message_id, sender, recipient);
    if (!ad_len)
        return REFEX_E_INVAL;
    memcpy(out, nonce, NONCE_LEN);
    crypto_aead_xchacha20poly1305_ietf_encrypt(out + NONCE_LEN, &clen, ckey, 32, ad, ad_len, NULL,
                                               nonce, ek);
    return REFEX_OK;
}

int refex_epoch_unwrap(const uint8_t ek[32], const uint8_t wrapped[REFEX_EPOCH_WRAPPED_LEN],
                       const uint8_t message_id[16], const char *sender, const char *recipient,
                       uint8_t ckey[32])
{
    uint8_t ad[AD_MAX];
    unsigned long long klen = 0;
    size_t ad_len = wrap_ad(ad, message_id, sender, recipient);
    if (!ad_len)
        return REFEX_E_DECRYPT;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(ckey, &klen, NULL, wrapped + NONCE_LEN,
                                                   REFEX_EPOCH_WRAPPED_LEN - NONCE_LEN, ad, ad_len,
                                                   wrapped, ek) != 0 ||
        klen != 32) {
        sodium_memzero(ckey, 32);
        return REFEX_E_DECRYPT;
    }
    return REFEX_OK;
}

/* ---- sender ----------------------------------------------------------------------- */

typedef struct {
    uint8_t rcpt_pk[32];
    uint8_t epoch_pk[32];
    int64_t begun_ms;
    uint64_t used;
    int live;
} sender_epoch;

struct refex_epoch_sender {
    int64_t max_ms;
    uint64_t max_msgs;
    uint64_t begun;
    sender_epoch e[REFEX_EPOCH_SENDER_SLOTS];
    uint8_t *ek; /* REFEX_EPOCH_SENDER_SLOTS x 32 then the scratch, sodium_malloc'd */
};

int refex_epoch_sender_new(uint64_t max_seconds, uint64_t max_messages, refex_epoch_sender **out)
{
    *out = NULL;
    if (max_seconds < 1 || max_seconds > REFEX_EPOCH_SECONDS_MAX || max_messages < 1 ||
        max_messages > REFEX_EPOCH_MESSAGES_MAX)
        return REFEX_E_INVAL;
    refex_epoch_sender *s = calloc(1, sizeof *s);
    if (!s || !(s->ek = sodium_malloc(SENDER_BLOCK))) {
        free(s);
        return REFEX_E_NOMEM;
    }
    sodium_memzero(s->ek, SENDER_BLOCK);
    s->max_ms = (int64_t)max_seconds * 1000;
    s->max_msgs = max_messages;
    *out = s;
    return REFEX_OK;
}

static void end_epoch(refex_epoch_sender *s, size_t i)
{
    sodium_memzero(s->ek + i * 32, 32);
    memset(&s->e[i], 0, sizeof s->e[i]);
}

void refex_epoch_sender_destroy(refex_epoch_sender **self_p)
{
    if (!self_p || !*self_p)
        return;
    sodium_free((*self_p)->ek); /* wipes the whole block */
    free(*self_p);
    *self_p = NULL;
}

static int epoch_over(const refex_epoch_sender *s, const sender_epoch *e, int64_t now_ms)
{
    /* A clock that went back also ends it: the age bound must not stretch. */
    return e->used >= s->max_msgs || now_ms < e->begun_ms || now_ms - e->begun_ms >= s->max_ms;
}

/* A fresh ephemeral key pair for rcpt_pk in slot i: only EK and the public key are kept. */
static int begin_epoch(refex_epoch_sender *s, size_t i, const uint8_t rcpt_pk[32], int64_t now_ms)
{
    uint8_t eph_sk[32];
    sender_epoch *e = &s->e[i];
    crypto_box_keypair(e->epoch_pk, eph_sk);
    int rc = refex_epoch_derive(eph_sk, rcpt_pk, e->epoch_pk, rcpt_pk, s->ek + i * 32);
    sodium_memzero(eph_sk, sizeof eph_sk);
    if (rc != REFEX_OK) {
        end_epoch(s, i);
        return rc;
    }
    memcpy(e->rcpt_pk, rcpt_pk, 32);
    e->begun_ms = now_ms;
    e->used = 0;
    e->live = 1;
    s->begun++;
    return REFEX_OK;
}

int refex_epoch_sender_take(refex_epoch_sender *self, const uint8_t rcpt_pk[32], int64_t now_ms,
                            uint8_t epoch_pk[32], uint8_t ek[32])
{
    size_t found = REFEX_EPOCH_SENDER_SLOTS, spare = REFEX_EPOCH_SENDER_SLOTS, oldest = 0;
    for (size_t i = 0; i < REFEX_EPOCH_SENDER_SLOTS; i++) {
        sender_epoch *e = &self->e[i];
        if (e->live && epoch_over(self, e, now_ms))
            end_epoch(self, i); /* ended: its key goes now, not when the slot is reused */
        if (!e->live) {
            if (spare == REFEX_EPOCH_SENDER_SLOTS)
                spare = i;
            continue;
        }
        if (memcmp(e->rcpt_pk, rcpt_pk, 32) == 0)
            found = i;
        if (e->begun_ms < self->e[oldest].begun_ms || !self->e[oldest].live)
            oldest = i;
    }
    if (found == REFEX_EPOCH_SENDER_SLOTS) {
        found = spare != REFEX_EPOCH_SENDER_SLOTS ? spare : oldest;
        end_epoch(self, found);
        int rc = begin_epoch(self, found, rcpt_pk, now_ms);
        if (rc != REFEX_OK)
            return rc;
    }
    self->e[found].used++;
    memcpy(epoch_pk, self->e[found].epoch_pk, 32);
    memcpy(ek, self->ek + found * 32, 32);
    return REFEX_OK;
}

void refex_epoch_sender_sweep(refex_epoch_sender *self, int64_t now_ms)
{
    for (size_t i = 0; self && i < REFEX_EPOCH_SENDER_SLOTS; i++)
        if (self->e[i].live && epoch_over(self, &self->e[i], now_ms))
            end_epoch(self, i);
}

size_t refex_epoch_sender_live(const refex_epoch_sender *self)
{
    size_t n = 0;
    for (size_t i = 0; i < REFEX_EPOCH_SENDER_SLOTS; i++)
        n += self->e[i].live != 0;
    return n;
}

uint8_t *refex_epoch_sender_scratch(refex_epoch_sender *self)
{
    return self->ek + REFEX_EPOCH_SENDER_SLOTS * 32;
}

uint64_t refex_epoch_sender_begun(const refex_epoch_sender *self)
{
    return self->begun;
}

/* ---- receiver --------------------------------------------------------------------- */

typedef struct {
    uint8_t own_pk[32];
    uint8_t epoch_pk[32];
    int64_t used_ms;
    uint64_t tick; /* last use, for LRU */
    int live;
} cache_entry;

struct refex_epoch_cache {
    int64_t idle_ms;
    uint64_t tick;
    uint64_t misses;
    cache_entry e[REFEX_EPOCH_CACHE_SLOTS];
    uint8_t *ek; /* REFEX_EPOCH_CACHE_SLOTS x 32 then the scratch, sodium_malloc'd */
};

int refex_epoch_cache_new(int64_t idle_ms, refex_epoch_cache **out)
{
    *out = NULL;
    if (idle_ms < 0)
        return REFEX_E_INVAL;
    refex_epoch_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->ek = sodium_malloc(CACHE_BLOCK))) {
        free(c);
        return REFEX_E_NOMEM;
    }
    sodium_memzero(c->ek, CACHE_BLOCK);
    c->idle_ms = idle_ms;
    *out = c;
    return REFEX_OK;
}

void refex_epoch_cache_destroy(refex_epoch_cache **self_p)
{
    if (!self_p || !*self_p)
        return;
    sodium_free((*self_p)->ek);
    free(*self_p);
    *self_p = NULL;
}

static void drop_entry(refex_epoch_cache *c, size_t i)
{
    sodium_memzero(c->ek + i * 32, 32);
    memset(&c->e[i], 0, sizeof c->e[i]);
}

static int stale(const refex_epoch_cache *c, const cache_entry *e, int64_t now_ms)
{
    return c->idle_ms > 0 && (now_ms < e->used_ms || now_ms - e->used_ms >= c->idle_ms);
}

void refex_epoch_cache_sweep(refex_epoch_cache *self, int64_t now_ms)
{
    for (size_t i = 0; self && i < REFEX_EPOCH_CACHE_SLOTS; i++)
        if (self->e[i].live && stale(self, &self->e[i], now_ms))
            drop_entry(self, i);
}

size_t refex_epoch_cache_live(const refex_epoch_cache *self)
{
    size_t n = 0;
    for (size_t i = 0; i < REFEX_EPOCH_CACHE_SLOTS; i++)
        n += self->e[i].live != 0;
    return n;
}

int refex_epoch_cache_find(refex_epoch_cache *self, const uint8_t own_pk[32],
                           const uint8_t epoch_pk[32], int64_t now_ms, uint8_t ek[32])
{
    for (size_t i = 0; i < REFEX_EPOCH_CACHE_SLOTS; i++) {
        cache_entry *e = &self->e[i];
        if (e->live && stale(self, e, now_ms))
            drop_entry(self, i);
        if (!e->live || memcmp(e->epoch_pk, epoch_pk, 32) != 0 ||
            memcmp(e->own_pk, own_pk, 32) != 0)
            continue;
        e->used_ms = now_ms;
        e->tick = ++self->tick;
        memcpy(ek, self->ek + i * 32, 32);
        return 1;
    }
    return 0;
}

void refex_epoch_cache_put(refex_epoch_cache *self, const uint8_t own_pk[32],
                           const uint8_t epoch_pk[32], int64_t now_ms, const uint8_t ek[32])
{
    size_t victim = 0;
    for (size_t i = 0; i < REFEX_EPOCH_CACHE_SLOTS; i++) {
        if (!self->e[i].live) {
            victim = i;
            break;
        }
        if (self->e[i].tick < self->e[victim].tick)
            victim = i;
    }
    drop_entry(self, victim);
    cache_entry *e = &self->e[victim];
    memcpy(e->own_pk, own_pk, 32);
    memcpy(e->epoch_pk, epoch_pk, 32);
    memcpy(self->ek + victim * 32, ek, 32);
    e->used_ms = now_ms;
    e->tick = ++self->tick;
    e->live = 1;
}

void refex_epoch_cache_forget(refex_epoch_cache *self, const uint8_t own_pk[32])
{
    for (size_t i = 0; self && i < REFEX_EPOCH_CACHE_SLOTS; i++)
        if (self->e[i].live && memcmp(self->e[i].own_pk, own_pk, 32) == 0)
            drop_entry(self, i);
}

uint8_t *refex_epoch_cache_scratch(refex_epoch_cache *self)
{
    return self->ek + REFEX_EPOCH_CACHE_SLOTS * 32;
}

uint64_t refex_epoch_cache_misses(const refex_epoch_cache *self)
{
    return self->misses;
}

void refex_epoch_cache_count_miss(refex_epoch_cache *self)
{
    self->misses++;
}
