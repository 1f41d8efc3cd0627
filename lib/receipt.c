/* Receipt signing and verification. Like envelopes, the batch signature's leaf covers the
 * exact serialized bytes carried in the message, behind a domain-separation prefix. */
#include "receipt.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "batchsig.h"
#include "codec.h"
#include "keys.h"
#include "util.h"

/* The Receipt protobuf of r; its strings and bytes point into r. */
static int receipt_pb(const refex_receipt *r, Refex__V1__Receipt *p)
{
    refex__v1__receipt__init(p);
    if (!refex_id_valid(r->sender) || !refex_id_valid(r->recipient) || !refex_id_valid(r->signer))
        return REFEX_E_INVAL;
    p->version = 1;
    p->message_id = (ProtobufCBinaryData){16, (uint8_t *)r->message_id};
    p->sender = (char *)r->sender;
    p->recipient = (char *)r->recipient;
    p->code = r->code;
    p->time_ms = r->time_ms;
    if (r->has_envelope_hash)
        p->envelope_hash = (ProtobufCBinaryData){32, (uint8_t *)r->envelope_hash};
    p->signer = (char *)r->signer;
    return REFEX_OK;
}

int refex_receipt_pack(const refex_receipt *r, Refex__V1__SignedReceipt **out)
{
    Refex__V1__Receipt p;
    *out = NULL;
    int rc = receipt_pb(r, &p);
    Refex__V1__SignedReceipt *sr = rc == REFEX_OK ? calloc(1, sizeof *sr) : NULL;
    if (rc == REFEX_OK && !sr)
        rc = REFEX_E_NOMEM;
    if (rc != REFEX_OK)
        return rc;
    refex__v1__signed_receipt__init(sr);
    if ((rc = refex_pb_pack(&p.base, &sr->receipt.data, &sr->receipt.len)) != REFEX_OK) {
        free(sr);
        return rc;
    }
    *out = sr;
    return REFEX_OK;
}

void refex_receipt_unsigned_free(Refex__V1__SignedReceipt **sr_p)
{
    if (!sr_p || !*sr_p)
        return;
    free((*sr_p)->receipt.data);
    free(*sr_p);
    *sr_p = NULL;
}

int refex_receipt_sign(const refex_receipt *r, const uint8_t sign_sk[64], uint8_t **out,
                       size_t *out_len)
{
    Refex__V1__SignedReceipt *sr = NULL;
    uint8_t leaf[1][32];
    *out = NULL;
    *out_len = 0;
    refex_batch_proof *one = malloc(sizeof *one);
    int rc = one ? refex_receipt_pack(r, &sr) : REFEX_E_NOMEM;
    if (rc == REFEX_OK) {
        refex_batch_receipt_leaf(sr->receipt.data, sr->receipt.len, leaf[0]);
        rc = refex_batch_sign(leaf, 1, sign_sk, one, NULL);
    }
    if (rc == REFEX_OK) {
        Refex__V1__BatchProof pb;
        ProtobufCBinaryData path[REFEX_BATCH_MAX_PATH];
        refex_batch_proof_pb(one, &pb, path);
        sr->batch = &pb;
        rc = refex_pb_pack(&sr->base, out, out_len);
        sr->batch = NULL;
    }
    refex_receipt_unsigned_free(&sr);
    free(one);
    return rc;
}

int refex_receipt_verify(const Refex__V1__SignedReceipt *sr, const refex_directory *dir,
                         refex_receipt *out)
{
    int rc = REFEX_OK;
    if (!sr || sr->receipt.len == 0)
        return REFEX_E_MALFORMED;
    Refex__V1__Receipt *p = refex__v1__receipt__unpack(NULL, sr->receipt.len, sr->receipt.data);
    if (!p)
        return REFEX_E_MALFORMED;
    if (p->version != 1 || p->message_id.len != 16 || !refex_id_valid(p->sender) ||
        !refex_id_valid(p->recipient) || !refex_id_valid(p->signer) ||
        (p->envelope_hash.len != 0 && p->envelope_hash.len != 32)) {
        rc = REFEX_E_MALFORMED;
        goto out;
    }
    const refex_agency *signer = refex_directory_find(dir, p->signer);
    if (!signer) {
        rc = REFEX_E_UNKNOWN_AGENCY;
        goto out;
    }
    /* A revoked key speaks for nobody, whatever time it claims to have signed at. */
    if (refex_agency_usable(signer, refex_now_ms()) != REFEX_OK) {
        rc = REFEX_E_REVOKED;
        goto out;
    }
    /* Signed by batch only: an old-style signature, or none, is not a signature here. */
    if (sr->signature.len != 0 || !sr->batch) {
        rc = REFEX_E_BAD_SIGNATURE;
        goto out;
    }
    uint8_t leaf[32];
    refex_batch_receipt_leaf(sr->receipt.data, sr->receipt.len, leaf);
    if ((rc = refex_batch_verify(sr->batch, leaf, signer, refex_now_ms())) != REFEX_OK)
        goto out;
    memset(out, 0, sizeof *out);
    memcpy(out->message_id, p->message_id.data, 16);
    strcpy(out->sender, p->sender); /* lengths checked by refex_id_valid */
    strcpy(out->recipient, p->recipient);
    strcpy(out->signer, p->signer);
    out->code = p->code;
    out->time_ms = p->time_ms;
    if (p->envelope_hash.len == 32) {
        memcpy(out->envelope_hash, p->envelope_hash.data, 32);
        out->has_envelope_hash = 1;
    }
out:
    refex__v1__receipt__free_unpacked(p, NULL);
    return rc;
}

int refex_receipt_verify_packed(const uint8_t *buf, size_t len, const refex_directory *dir,
                                refex_receipt *out)
{
    Refex__V1__SignedReceipt *sr = refex__v1__signed_receipt__unpack(NULL, len, buf);
    if (!sr)
        return REFEX_E_MALFORMED;
    int rc = refex_receipt_verify(sr, dir, out);
    refex__v1__signed_receipt__free_unpacked(sr, NULL);
    return rc;
}
