/* Delivery receipts and non-delivery reports. A receipt says what happened to one message
 * at one recipient, signed by that recipient (delivered, or refused with a code) or by the
 * broker (not delivered before it expired). The sender logs it; an auditor can check it
 * against the recipient's directory key. */
#ifndef REFEX_RECEIPT_H
#define REFEX_RECEIPT_H

#include <stddef.h>
#include <stdint.h>

#include "refex.pb-c.h"
#include "directory.h"
#include "refex/error.h"

typedef struct {
    uint8_t message_id[16];
    char sender[REFEX_ID_MAX];
    char recipient[REFEX_ID_MAX];
    uint32_t code; /* 0: delivered */
    int64_t time_ms;
    uint8_t envelope_hash[32];
    int has_envelope_hash;
    char signer[REFEX_ID_MAX];
} refex_receipt;

/* Packs and signs alone (a batch of one); *out is a packed SignedReceipt (malloc'd). */
int refex_receipt_sign(const refex_receipt *r, const uint8_t sign_sk[64], uint8_t **out,
                       size_t *out_len) REFEX_NODISCARD;
/* The SignedReceipt of r without a signature yet (receipt bytes only, no batch proof), for
 * a signer that signs receipts in batches. Free with refex_receipt_unsigned_free. */
int refex_receipt_pack(const refex_receipt *r, Refex__V1__SignedReceipt **out) REFEX_NODISCARD;
void refex_receipt_unsigned_free(Refex__V1__SignedReceipt **sr_p);
/* Parses a SignedReceipt and verifies its batch proof with the signer's key from the directory:
 * REFEX_E_UNKNOWN_AGENCY if the signer is not listed, REFEX_E_REVOKED if its key is not
 * usable now, REFEX_E_BAD_SIGNATURE (also for no batch proof, or an old-style signature),
 * or REFEX_E_MALFORMED. */
int refex_receipt_verify(const Refex__V1__SignedReceipt *sr, const refex_directory *dir,
                         refex_receipt *out) REFEX_NODISCARD;
/* Same, from packed SignedReceipt bytes. */
int refex_receipt_verify_packed(const uint8_t *buf, size_t len, const refex_directory *dir,
                                refex_receipt *out) REFEX_NODISCARD;

#endif
