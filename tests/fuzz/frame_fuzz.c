/* libFuzzer target: every byte string a peer can send goes through the frame decoder and,
 * for envelopes, the header parser and the verifier with the sender's key from the fixed
 * directory (fuzz_fixture.c, which signed the seeds); the receipts, grants, subscriptions
 * and checkpoint notes frames carry go through their verifiers; an envelope's sender, type
 * and recipients through the broker's policy check. Must never crash or leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "codec.h"
#include "envelope.h"
#include "fuzz_fixture.h"
#include "grant.h"
#include "policy.h"
#include "receipt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The signed objects other than envelopes that a frame can carry. */
static void signed_parts(const fuzz_fixture *fx, const Refex__V1__Frame *f)
{
    refex_receipt r;
    refex_grant g;
    refex_subscription s;
    refex_checkpoint c;
    const Refex__V1__SignedGrant *sg = NULL;
    const Refex__V1__SignedSubscription *ss = NULL;
    const char *note = NULL;
    if (f->kind_case == REFEX__V1__FRAME__KIND_RECEIPT && f->receipt->receipt)
        (void)!refex_receipt_verify(f->receipt->receipt, fx->dir, &r);
    if (f->kind_case == REFEX__V1__FRAME__KIND_GRANT)
        sg = f->grant->grant;
    if (f->kind_case == REFEX__V1__FRAME__KIND_GRANT_NOTICE)
        sg = f->grant_notice->grant;
    if (sg)
        (void)!refex_grant_verify(sg, fx->dir, &g);
    if (f->kind_case == REFEX__V1__FRAME__KIND_SUBSCRIBE)
        ss = f->subscribe->subscription;
    if (f->kind_case == REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE)
        ss = f->subscription_notice->subscription;
    uint8_t *packed = NULL;
    size_t len = 0;
    if (ss && refex_pb_pack(&ss->base, &packed, &len) == REFEX_OK) {
        (void)!refex_subscription_verify_packed(packed, len, fx->dir, &s);
        free(packed);
    }
    if (f->kind_case == REFEX__V1__FRAME__KIND_CHECKPOINT)
        note = f->checkpoint->note;
    if (f->kind_case == REFEX__V1__FRAME__KIND_COSIGNED)
        note = f->cosigned->note;
    if (note)
        (void)!refex_checkpoint_open(note, strlen(note), FUZZ_LOG_NAME, fx->log_pk, &c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const fuzz_fixture *fx = fuzz_fixture_get();
    Refex__V1__Frame *f = NULL;
    if (refex_frame_unpack(data, size, FUZZ_MAX_FRAME, &f) != REFEX_OK)
        return 0;
    const Refex__V1__Envelope *e = NULL;
    if (f->kind_case == REFEX__V1__FRAME__KIND_SEND)
        e = f->send->envelope;
    else if (f->kind_case == REFEX__V1__FRAME__KIND_DELIVER)
        e = f->deliver->envelope;
    Refex__V1__EnvelopeHeader *h = NULL;
    if (e && refex_envelope_parse_header(e, &h) == REFEX_OK) {
        const refex_agency *from = refex_directory_find(fx->dir, h->sender);
        if (from && refex_envelope_verify(e, h, from->sign_pk) != REFEX_OK) {
            /* expected for fuzzed input */
        }
        /* The broker's information-sharing check, for every recipient (broker/queue.c). */
        char detail[256];
        for (size_t i = 0; i < h->n_recipients && i < 64; i++)
            (void)!refex_policy_check(fx->dir, h->sender, (int)h->type, h->recipients[i], detail,
                                      sizeof detail);
        refex__v1__envelope_header__free_unpacked(h, NULL);
    }
    signed_parts(fx, f);
    refex_frame_free(&f);
    return 0;
}
