/* Key epochs: how an envelope's content key reaches each recipient (docs/protocol.md 5.3).
 * A sender keeps, per recipient encryption key, an ephemeral X25519 key pair for a bounded
 * time and number of messages, derives the epoch key EK from it once, and wraps each
 * message's content key under EK; a recipient derives EK once per epoch and keeps it in a
 * small cache. So only the first message of an epoch costs a scalar multiplication at
 * either end. Not for the envelope format itself (lib/envelope.c). */
#ifndef REFEX_EPOCH_H
#define REFEX_EPOCH_H

#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"

#define REFEX_EPOCH_CONTEXT "refex/epoch/v1"
#define REFEX_WRAP_CONTEXT  "refex/wrap/v1"
/* nonce (24) || XChaCha20-Poly1305 of the 32-byte content key (32 + 16). */
#define REFEX_EPOCH_WRAPPED_LEN 72
/* Defaults and bounds of the agent settings epoch_seconds and epoch_messages. */
#define REFEX_EPOCH_SECONDS_DEFAULT  600
#define REFEX_EPOCH_SECONDS_MAX      86400
#define REFEX_EPOCH_MESSAGES_DEFAULT 10000
#define REFEX_EPOCH_MESSAGES_MAX     10000000
/* Epochs a sender keeps at once (one per recipient key), and EKs a receiver caches. */
#define REFEX_EPOCH_SENDER_SLOTS 256
#define REFEX_EPOCH_CACHE_SLOTS  64
#define REFEX_EPOCH_SCRATCH_LEN  64

/* EK = BLAKE2b-256("refex/epoch/v1"\0 || X25519(my_sk, their_pk) || epoch_pk || rcpt_pk).
 * The sender passes (eph_sk, rcpt_pk), the recipient (rcpt_sk, epoch_pk): both get the same
 * shared secret. REFEX_E_CRYPTO if the X25519 output is all zero (a low-order point). */
int refex_epoch_derive(const uint8_t my_sk[32], const uint8_t their_pk[32],
                       const uint8_t epoch_pk[32], const uint8_t rcpt_pk[32],
                       uint8_t ek[32]) REFEX_NODISCARD;

/* out = nonce || XChaCha20-Poly1305-IETF(ckey, ad, nonce, ek) with ad = "refex/wrap/v1"\0 ||
 * message_id || u32be(len sender) || sender || u32be(len recipient) || recipient. */
int refex_epoch_wrap(const uint8_t ek[32], const uint8_t nonce[24], const uint8_t ckey[32],
                     const uint8_t message_id[16], const char *sender, const char *recipient,
                     uint8_t out[REFEX_EPOCH_WRAPPED_LEN]) REFEX_NODISCARD;
/* The inverse; REFEX_E_DECRYPT if the tag does not check (wrong EK, ids or bytes). */
int refex_epoch_unwrap(const uint8_t ek[32], const uint8_t wrapped[REFEX_EPOCH_WRAPPED_LEN],
                       const uint8_t message_id[16], const char *sender, const char *recipient,
                       uint8_t ckey[32]) REFEX_NODISCARD;

/* ---- sender: the current epoch per recipient key ---------------------------------- */

typedef struct refex_epoch_sender refex_epoch_sender;

/* An epoch ends max_seconds after it began or after max_messages wraps, whichever first. */
int refex_epoch_sender_new(uint64_t max_seconds, uint64_t max_messages,
                           refex_epoch_sender **out) REFEX_NODISCARD;
/* Wipes every epoch key. Accepts NULL; NULLs *self_p. */
void refex_epoch_sender_destroy(refex_epoch_sender **self_p);
/* The epoch to use for one more message to rcpt_pk at now_ms (a new one if none is current):
 * epoch_pk and EK copied out; the caller wipes ek. Counts the message against the epoch. */
int refex_epoch_sender_take(refex_epoch_sender *self, const uint8_t rcpt_pk[32], int64_t now_ms,
                            uint8_t epoch_pk[32], uint8_t ek[32]) REFEX_NODISCARD;
/* Ends (and wipes) every epoch over its limits at now_ms, so an idle sender holds no EK
 * past its epoch; the agent calls it once a second. Accepts NULL. */
void refex_epoch_sender_sweep(refex_epoch_sender *self, int64_t now_ms);
/* Epochs current (their EKs held), for tests. */
size_t refex_epoch_sender_live(const refex_epoch_sender *self);
/* REFEX_EPOCH_SCRATCH_LEN bytes of locked memory for one seal's content and epoch keys,
 * so that a seal needs no secure allocation of its own; the user wipes it after each use. */
uint8_t *refex_epoch_sender_scratch(refex_epoch_sender *self);
/* Epochs begun since creation (for tests: a new one per recipient key and per limit). */
uint64_t refex_epoch_sender_begun(const refex_epoch_sender *self);

/* ---- receiver: EKs of epochs already seen, per own key ------------------------------ */

typedef struct refex_epoch_cache refex_epoch_cache;

/* Entries unused for idle_ms are wiped (0: never by age; eviction still bounds them). */
int refex_epoch_cache_new(int64_t idle_ms, refex_epoch_cache **out) REFEX_NODISCARD;
void refex_epoch_cache_destroy(refex_epoch_cache **self_p);
/* 1 and EK in ek if (own_pk, epoch_pk) is cached and fresh at now_ms; else 0. */
int refex_epoch_cache_find(refex_epoch_cache *self, const uint8_t own_pk[32],
                           const uint8_t epoch_pk[32], int64_t now_ms, uint8_t ek[32]);
/* Remembers EK (only once it has opened a key slot), evicting the least recently used. */
void refex_epoch_cache_put(refex_epoch_cache *self, const uint8_t own_pk[32],
                           const uint8_t epoch_pk[32], int64_t now_ms, const uint8_t ek[32]);
/* Wipes every entry unused for idle_ms at now_ms (as find does on its way); the agent
 * calls it once a second. Accepts NULL. */
void refex_epoch_cache_sweep(refex_epoch_cache *self, int64_t now_ms);
/* EKs cached, for tests. */
size_t refex_epoch_cache_live(const refex_epoch_cache *self);
/* Wipes every entry for own_pk (a key set no longer held). */
void refex_epoch_cache_forget(refex_epoch_cache *self, const uint8_t own_pk[32]);
/* As refex_epoch_sender_scratch, for one open. */
uint8_t *refex_epoch_cache_scratch(refex_epoch_cache *self);
/* Derivations that missed the cache (for tests). */
uint64_t refex_epoch_cache_misses(const refex_epoch_cache *self);
void refex_epoch_cache_count_miss(refex_epoch_cache *self);

#endif
