/* Receipt signing and verification. Like envelopes, the signature covers the exact
 * serialized bytes carried in the message, behind a domain-separation prefix. */
#include "receipt.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "keys.h"
#include "util.h"

int refex_receipt_sign(const refex_receipt *r, const uint8_t sign_sk[64], uint8_t **out,
                       size_t *out_len)
{
    Refex__V1__Receipt p = REFEX__V1__RECEIPT__INIT;
    *out = NULL;
    *out_len = 0;
    if (!refex_id_valid(r->sender) || !refex_id_valid(r->recipient) || !refex_id_valid(r->signer))
        return REFEX_E_INVAL;
    p.version = 1;
    p.message_id = (ProtobufCBinaryData){16, (uint8_t *)r->message_id};
    p.sender = (char *)r->sender;
    p.recipient = (char *)r->recipient;
    p.code = r->code;
    p.time_ms = r->time_ms;
    if (r->has_envelope_hash)
        p.envelope_hash = (ProtobufCBinaryData){32, (uint8_t *)r->envelope_hash};
    p.signer = (char *)r->signer;
    return refex_pb_pack_signed(&p.base, &refex__v1__signed_receipt__descriptor,
                                REFEX_RECEIPT_CONTEXT, sign_sk, out, out_len);
}

int refex_receipt_verify(const Refex__V1__SignedReceipt *sr, const refex_directory *dir,
                         refex_receipt *out)
{
    int rc = REFEX_OK;
    if (!sr || sr->signature.len != 64 || sr->receipt.len == 0)
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
    if ((rc = refex_agency_verify_domain(signer, refex_now_ms(), REFEX_RECEIPT_CONTEXT,
                                         sr->receipt.data, sr->receipt.len, sr->signature.data)) !=
        REFEX_OK)
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
