/* Envelope sealing and opening. The signed leaf covers exactly Envelope.header, so a
 * verifier never re-encodes anything; every other part of the envelope is bound to the
 * header by a hash the header carries. The signature itself is a batch signature
 * (batchsig.c), made alone at seal or later for everything sent together. */
#include "envelope.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "batchsig.h"
#include "codec.h"
#include "epoch.h"
#include "keys.h"
#include "sha256.h"
#include "util.h"

#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define CKEY_LEN  crypto_aead_xchacha20poly1305_ietf_KEYBYTES
#define WRAP_LEN  REFEX_EPOCH_WRAPPED_LEN

_Static_assert(REFEX_EPOCH_SCRATCH_LEN >= CKEY_LEN + 32,
               "scratch holds the content and epoch keys");

int refex_case_ref_valid(const char *case_ref)
{
    size_t n = case_ref ? strlen(case_ref) : 0;
    if (!case_ref || n >= 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = case_ref[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("._:/-", c)))
            return 0;
    }
    return 1;
}

static void put_u32(crypto_hash_sha256_state *st, size_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    crypto_hash_sha256_update(st, b, 4);
}

static void put_bytes(crypto_hash_sha256_state *st, const uint8_t *p, size_t n)
{
    put_u32(st, n);
    crypto_hash_sha256_update(st, p, n);
}

/* SHA-256("refex/keyslots/v2"\0 || for each slot: u32 len || recipient || u32 len ||
 * epoch_pk || u32 len || wrapped_key). */
static void keyslots_hash(Refex__V1__KeySlot *const *slots, size_t n, uint8_t out[32])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const uint8_t *)REFEX_KEYSLOTS_CONTEXT,
                              sizeof REFEX_KEYSLOTS_CONTEXT);
    for (size_t i = 0; i < n; i++) {
        put_bytes(&st, (const uint8_t *)slots[i]->recipient, strlen(slots[i]->recipient));
        put_bytes(&st, slots[i]->epoch_pk.data, slots[i]->epoch_pk.len);
        put_bytes(&st, slots[i]->wrapped_key.data, slots[i]->wrapped_key.len);
    }
    crypto_hash_sha256_final(&st, out);
}

/* Associated data of the body: context || message id || sender. */
static size_t body_ad(uint8_t *ad, size_t cap, const uint8_t id[16], const char *sender)
{
    size_t cl = sizeof REFEX_BODY_CONTEXT, sl = strlen(sender);
    if (cl + 16 + sl > cap)
        return 0;
    memcpy(ad, REFEX_BODY_CONTEXT, cl);
    memcpy(ad + cl, id, 16);
    memcpy(ad + cl + 16, sender, sl);
    return cl + 16 + sl;
}

/* Wipes the content and epoch keys: a scratch area of the epoch tables is kept, one of
 * our own is freed (sodium_free wipes it). */
static void release_secret(uint8_t *secret, int scratch)
{
    if (scratch && secret)
        sodium_memzero(secret, CKEY_LEN + 32);
    else
        sodium_free(secret);
}

/* The epoch for recipient i: the sender's current one, or without a table a fresh one for
 * this message alone (its ephemeral secret wiped at once). */
static int slot_epoch(const refex_seal_params *p, size_t i, int64_t now_ms, uint8_t epoch_pk[32],
                      uint8_t ek[32])
{
    const uint8_t *rpk = p->recipients[i]->enc_pk;
    if (p->epochs)
        return refex_epoch_sender_take(p->epochs, rpk, now_ms, epoch_pk, ek);
    uint8_t eph_sk[32];
    crypto_box_keypair(epoch_pk, eph_sk);
    int rc = refex_epoch_derive(eph_sk, rpk, epoch_pk, rpk, ek);
    sodium_memzero(eph_sk, sizeof eph_sk);
    return rc;
}

/* Fills slots[i] = {recipient, epoch_pk, wrapped content key} into keys (n x (32 + 72)). */
static int wrap_slots(const refex_seal_params *p, const uint8_t id[16], uint8_t *secret,
                      uint8_t *keys, Refex__V1__KeySlot *slots, Refex__V1__KeySlot **ptrs)
{
    const uint8_t *ckey = secret;
    uint8_t *ek = secret + CKEY_LEN, nonce[NONCE_LEN];
    int64_t now = refex_now_ms();
    for (size_t i = 0; i < p->n_recipients; i++) {
        uint8_t *epk = keys + i * (32 + WRAP_LEN), *wrapped = epk + 32;
        int rc = slot_epoch(p, i, now, epk, ek);
        randombytes_buf(nonce, sizeof nonce);
        if (rc == REFEX_OK)
            rc = refex_epoch_wrap(ek, nonce, ckey, id, p->sender, p->recipients[i]->id, wrapped);
        sodium_memzero(ek, 32);
        if (rc != REFEX_OK)
            return rc == REFEX_E_INVAL ? REFEX_E_INVAL : REFEX_E_CRYPTO;
        refex__v1__key_slot__init(&slots[i]);
        slots[i].recipient = (char *)p->recipients[i]->id;
        slots[i].epoch_pk = (ProtobufCBinaryData){32, epk};
        slots[i].wrapped_key = (ProtobufCBinaryData){WRAP_LEN, wrapped};
        ptrs[i] = &slots[i];
    }
    return REFEX_OK;
}

/* Refuse here whatever refex_envelope_parse_header would refuse at the other end. */
static int seal_params_ok(const refex_seal_params *p, int sign)
{
    if (!p->sender || (sign && !p->sign_sk) || p->n_recipients == 0 ||
        p->n_recipients > REFEX_MAX_RECIPIENTS || !refex_id_valid(p->sender) ||
        (p->case_ref && !refex_case_ref_valid(p->case_ref)) ||
        (p->expires_at_ms && p->created_at_ms && p->expires_at_ms <= p->created_at_ms))
        return 0;
    for (size_t i = 0; i < p->n_recipients; i++) {
        if (!refex_id_valid(p->recipients[i]->id))
            return 0;
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->recipients[i]->id, p->recipients[j]->id) == 0)
                return 0;
    }
    return 1;
}

/* The envelope's batch signature when it is signed alone: a tree of one, whose root is the
 * header's leaf. */
static int sign_alone(const uint8_t *hdr, size_t len, const uint8_t sign_sk[64],
                      refex_batch_proof *one)
{
    uint8_t leaf[1][32];
    refex_batch_envelope_leaf(hdr, len, leaf[0]);
    return refex_batch_sign(leaf, 1, sign_sk, one, NULL);
}

/* Packs env, signed alone under sign_sk, or unsigned when sign_sk is NULL. */
static int pack_envelope(Refex__V1__Envelope *env, const uint8_t *sign_sk, uint8_t **out,
                         size_t *out_len)
{
    Refex__V1__BatchProof pb;
    ProtobufCBinaryData path[REFEX_BATCH_MAX_PATH];
    refex_batch_proof *one = NULL;
    int rc = REFEX_OK;
    if (sign_sk) {
        if (!(one = malloc(sizeof *one)))
            return REFEX_E_NOMEM;
        if ((rc = sign_alone(env->header.data, env->header.len, sign_sk, one)) == REFEX_OK) {
            refex_batch_proof_pb(one, &pb, path);
            env->batch = &pb;
        }
    }
    if (rc == REFEX_OK)
        rc = refex_pb_pack(&env->base, out, out_len);
    env->batch = NULL;
    free(one);
    return rc;
}

static int seal(const refex_seal_params *p, const uint8_t *body, size_t body_len, uint8_t **out,
                size_t *out_len, uint8_t id_out[16], int sign)
{
    int rc = REFEX_OK;
    uint8_t id[16], nonce[NONCE_LEN], ct_hash[32], ks_hash[32], ad[128];
    uint8_t *secret = NULL, *ct = NULL, *hdr_bytes = NULL, *keys = NULL;
    size_t hdr_len = 0;
    unsigned long long ct_len = 0;
    Refex__V1__KeySlot *slots = NULL, **slot_ptrs = NULL;
    char **rcpt = NULL;

    if (!seal_params_ok(p, sign))
        return REFEX_E_INVAL;
    refex_random_id(id);
    randombytes_buf(nonce, sizeof nonce);
    /* content key || the slot's epoch key */
    secret = p->epochs ? refex_epoch_sender_scratch(p->epochs) : sodium_malloc(CKEY_LEN + 32);
    ct = malloc(body_len + crypto_aead_xchacha20poly1305_ietf_ABYTES);
    slots = calloc(p->n_recipients, sizeof *slots);
    slot_ptrs = calloc(p->n_recipients, sizeof *slot_ptrs);
    rcpt = calloc(p->n_recipients, sizeof *rcpt);
    keys = malloc(p->n_recipients * (32 + WRAP_LEN));
    if (!secret || !ct || !slots || !slot_ptrs || !rcpt || !keys) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    crypto_aead_xchacha20poly1305_ietf_keygen(secret);
    size_t ad_len = body_ad(ad, sizeof ad, id, p->sender);
    crypto_aead_xchacha20poly1305_ietf_encrypt(ct, &ct_len, body, body_len, ad, ad_len, NULL, nonce,
                                               secret);
    refex_sha256(ct_hash, ct, ct_len);
    if ((rc = wrap_slots(p, id, secret, keys, slots, slot_ptrs)) != REFEX_OK)
        goto out;
    for (size_t i = 0; i < p->n_recipients; i++)
        rcpt[i] = (char *)p->recipients[i]->id;
    keyslots_hash(slot_ptrs, p->n_recipients, ks_hash);

    Refex__V1__EnvelopeHeader h = REFEX__V1__ENVELOPE_HEADER__INIT;
    h.version = REFEX_ENVELOPE_VERSION;
    h.message_id = (ProtobufCBinaryData){16, id};
    h.sender = (char *)p->sender;
    h.n_recipients = p->n_recipients;
    h.recipients = rcpt;
    h.type = p->type;
    h.case_ref = (char *)(p->case_ref ? p->case_ref : "");
    h.created_at_ms = p->created_at_ms ? p->created_at_ms : refex_now_ms();
    h.expires_at_ms = p->expires_at_ms ? p->expires_at_ms : h.created_at_ms + REFEX_DEFAULT_TTL_MS;
    h.nonce = (ProtobufCBinaryData){NONCE_LEN, nonce};
    h.ciphertext_hash = (ProtobufCBinaryData){32, ct_hash};
    h.key_slots_hash = (ProtobufCBinaryData){32, ks_hash};
    if ((rc = refex_pb_pack(&h.base, &hdr_bytes, &hdr_len)) != REFEX_OK)
        goto out;

    Refex__V1__Envelope env = REFEX__V1__ENVELOPE__INIT;
    env.header = (ProtobufCBinaryData){hdr_len, hdr_bytes};
    env.ciphertext = (ProtobufCBinaryData){(size_t)ct_len, ct};
    env.n_key_slots = p->n_recipients;
    env.key_slots = slot_ptrs;
    /* Fields 1, 3 and 4 are all refex_envelope_hash covers; protobuf-c writes fields in
     * number order, so they are the first `hashed` bytes of the packing, before the
     * checkpoint and the batch proof (fields 5 and 6): hashed there, not packed again. */
    size_t hashed = protobuf_c_message_get_packed_size(&env.base);
    if (p->checkpoint)
        env.checkpoint = (char *)p->checkpoint;
    if ((rc = pack_envelope(&env, sign ? p->sign_sk : NULL, out, out_len)) != REFEX_OK)
        goto out;
    if (p->hash_out)
        refex_sha256(p->hash_out, *out, hashed);
    memcpy(id_out, id, 16);
out:
    release_secret(secret, p->epochs != NULL);
    free(ct);
    free(slots);
    free(slot_ptrs);
    free(rcpt);
    free(keys);
    free(hdr_bytes);
    return rc;
}

int refex_envelope_seal(const refex_seal_params *p, const uint8_t *body, size_t body_len,
                        uint8_t **out, size_t *out_len, uint8_t id_out[16])
{
    return seal(p, body, body_len, out, out_len, id_out, 1);
}

int refex_envelope_seal_unsigned(const refex_seal_params *p, const uint8_t *body, size_t body_len,
                                 uint8_t **out, size_t *out_len, uint8_t id_out[16])
{
    return seal(p, body, body_len, out, out_len, id_out, 0);
}

int refex_envelope_parse_header(const Refex__V1__Envelope *env, Refex__V1__EnvelopeHeader **out)
{
    *out = NULL;
    if (!env || env->header.len == 0)
        return REFEX_E_MALFORMED;
    Refex__V1__EnvelopeHeader *h =
        refex__v1__envelope_header__unpack(NULL, env->header.len, env->header.data);
    if (!h)
        return REFEX_E_MALFORMED;
    if (h->version != REFEX_ENVELOPE_VERSION) {
        refex__v1__envelope_header__free_unpacked(h, NULL);
        return REFEX_E_VERSION;
    }
    int ok = h->message_id.len == 16 && h->nonce.len == NONCE_LEN && h->ciphertext_hash.len == 32 &&
             h->key_slots_hash.len == 32 && refex_id_valid(h->sender) && h->n_recipients > 0 &&
             h->n_recipients <= REFEX_MAX_RECIPIENTS && h->type > 0 &&
             h->type <= REFEX__V1__MESSAGE_TYPE__CASE_UPDATE && refex_case_ref_valid(h->case_ref) &&
             h->expires_at_ms > h->created_at_ms;
    for (size_t i = 0; ok && i < h->n_recipients; i++) {
        ok = refex_id_valid(h->recipients[i]);
        for (size_t j = 0; ok && j < i; j++)
            ok = strcmp(h->recipients[i], h->recipients[j]) != 0;
    }
    if (!ok) {
        refex__v1__envelope_header__free_unpacked(h, NULL);
        return REFEX_E_MALFORMED;
    }
    *out = h;
    return REFEX_OK;
}

/* The header's commitments to the ciphertext and the key slots. */
static int check_commitments(const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h)
{
    uint8_t hash[32];
    refex_sha256(hash, env->ciphertext.data, env->ciphertext.len);
    if (sodium_memcmp(hash, h->ciphertext_hash.data, 32) != 0)
        return REFEX_E_TAMPERED;
    if (env->n_key_slots != h->n_recipients)
        return REFEX_E_TAMPERED;
    for (size_t i = 0; i < env->n_key_slots; i++)
        if (strcmp(env->key_slots[i]->recipient, h->recipients[i]) != 0)
            return REFEX_E_TAMPERED;
    keyslots_hash(env->key_slots, env->n_key_slots, hash);
    if (sodium_memcmp(hash, h->key_slots_hash.data, 32) != 0)
        return REFEX_E_TAMPERED;
    return REFEX_OK;
}

/* This version signs only by batch: an old-style signature, or none, is not one. */
static int header_leaf(const Refex__V1__Envelope *env, uint8_t leaf[32])
{
    if (env->signature.len != 0 || !env->batch)
        return REFEX_E_BAD_SIGNATURE;
    refex_batch_envelope_leaf(env->header.data, env->header.len, leaf);
    return REFEX_OK;
}

int refex_envelope_verify(const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h,
                          const uint8_t sender_sign_pk[32])
{
    uint8_t leaf[32];
    int rc = header_leaf(env, leaf);
    if (rc == REFEX_OK)
        rc = refex_batch_verify_key(env->batch, leaf, sender_sign_pk);
    return rc == REFEX_OK ? check_commitments(env, h) : rc;
}

int refex_envelope_verify_from(const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h,
                               const refex_agency *sender, int64_t now_ms)
{
    uint8_t leaf[32];
    int rc = header_leaf(env, leaf);
    if (rc == REFEX_OK)
        rc = refex_batch_verify(env->batch, leaf, sender, now_ms);
    return rc == REFEX_OK ? check_commitments(env, h) : rc;
}

/* Unwraps slot's content key into secret with the first of keys that opens it: an epoch
 * key from the cache first, else derived (one scalar multiplication) and then cached. */
static int unwrap_slot(const Refex__V1__KeySlot *slot, const Refex__V1__EnvelopeHeader *h,
                       const char *me, const refex_open_key *keys, size_t n_keys,
                       refex_epoch_cache *cache, uint8_t *secret)
{
    uint8_t *ckey = secret, *ek = secret + CKEY_LEN;
    const uint8_t *epk = slot->epoch_pk.data, *id = h->message_id.data;
    int64_t now = cache ? refex_now_ms() : 0;
    int cached[REFEX_OPEN_KEYS_MAX] = {0};
    for (size_t i = 0; cache && i < n_keys; i++) {
        cached[i] = refex_epoch_cache_find(cache, keys[i].pk, epk, now, ek);
        if (cached[i] &&
            refex_epoch_unwrap(ek, slot->wrapped_key.data, id, h->sender, me, ckey) == REFEX_OK)
            return REFEX_OK;
    }
    for (size_t i = 0; i < n_keys; i++) {
        if (cached[i]) /* the same EK again would fail the same way */
            continue;
        if (cache)
            refex_epoch_cache_count_miss(cache);
        if (refex_epoch_derive(keys[i].sk, epk, epk, keys[i].pk, ek) != REFEX_OK ||
            refex_epoch_unwrap(ek, slot->wrapped_key.data, id, h->sender, me, ckey) != REFEX_OK)
            continue;
        if (cache) /* only an EK that opened a slot: a forged epoch_pk costs, never evicts */
            refex_epoch_cache_put(cache, keys[i].pk, epk, now, ek);
        return REFEX_OK;
    }
    return REFEX_E_DECRYPT;
}

int refex_envelope_open_keys(const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h,
                             const char *me, const refex_open_key *keys, size_t n_keys,
                             refex_epoch_cache *cache, uint8_t **body_out, size_t *body_len)
{
    int rc = REFEX_OK;
    uint8_t ad[128];
    uint8_t *secret = NULL, *pt = NULL;
    unsigned long long pt_len = 0;
    const Refex__V1__KeySlot *slot = NULL;

    if (n_keys < 1 || n_keys > REFEX_OPEN_KEYS_MAX)
        return REFEX_E_INVAL;
    for (size_t i = 0; i < env->n_key_slots; i++)
        if (strcmp(env->key_slots[i]->recipient, me) == 0)
            slot = env->key_slots[i];
    if (!slot)
        return REFEX_E_NOT_RECIPIENT;
    if (slot->epoch_pk.len != 32 || slot->wrapped_key.len != WRAP_LEN ||
        env->ciphertext.len < crypto_aead_xchacha20poly1305_ietf_ABYTES)
        return REFEX_E_DECRYPT;
    if (!(secret = cache ? refex_epoch_cache_scratch(cache) : sodium_malloc(CKEY_LEN + 32)))
        return REFEX_E_NOMEM;
    if ((rc = unwrap_slot(slot, h, me, keys, n_keys, cache, secret)) != REFEX_OK)
        goto out;
    pt = malloc(env->ciphertext.len);
    if (!pt) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    size_t ad_len = body_ad(ad, sizeof ad, h->message_id.data, h->sender);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &pt_len, NULL, env->ciphertext.data,
                                                   env->ciphertext.len, ad, ad_len, h->nonce.data,
                                                   secret) != 0) {
        rc = REFEX_E_DECRYPT;
        goto out;
    }
    *body_out = pt;
    *body_len = (size_t)pt_len;
    pt = NULL;
out:
    release_secret(secret, cache != NULL);
    free(pt);
    return rc;
}

int refex_envelope_open(const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h,
                        const char *me, const uint8_t enc_pk[32], const uint8_t enc_sk[32],
                        uint8_t **body_out, size_t *body_len)
{
    refex_open_key k = {enc_pk, enc_sk};
    return refex_envelope_open_keys(env, h, me, &k, 1, NULL, body_out, body_len);
}

int refex_envelope_hash(const Refex__V1__Envelope *env, uint8_t out[32])
{
    uint8_t *buf = NULL;
    size_t n = 0;
    /* Fields 1, 3 and 4 only: not the signature parts (the batch proof is made when the
     * envelope is sent, after its hash is in the sender's audit log), not the checkpoint,
     * which nothing in the envelope signs, nor fields unknown to this version (kept by
     * protobuf-c), which a broker could add; any would make the hash in the recipient's
     * receipt one the sender does not know. */
    Refex__V1__Envelope signed_parts = *env;
    Refex__V1__KeySlot *slots = calloc(env->n_key_slots ? env->n_key_slots : 1, sizeof *slots);
    Refex__V1__KeySlot **ptrs = calloc(env->n_key_slots ? env->n_key_slots : 1, sizeof *ptrs);
    int rc = slots && ptrs ? REFEX_OK : REFEX_E_NOMEM;
    for (size_t i = 0; rc == REFEX_OK && i < env->n_key_slots; i++) {
        slots[i] = *env->key_slots[i];
        slots[i].base.n_unknown_fields = 0;
        slots[i].base.unknown_fields = NULL;
        ptrs[i] = &slots[i];
    }
    signed_parts.signature = (ProtobufCBinaryData){0, NULL};
    signed_parts.batch = NULL;
    signed_parts.checkpoint = "";
    signed_parts.base.n_unknown_fields = 0;
    signed_parts.base.unknown_fields = NULL;
    signed_parts.key_slots = ptrs;
    if (rc == REFEX_OK)
        rc = refex_pb_pack(&signed_parts.base, &buf, &n);
    if (rc == REFEX_OK)
        refex_sha256(out, buf, n);
    free(buf);
    free(slots);
    free(ptrs);
    return rc;
}
