/* libFuzzer target: an Envelope's bytes as a peer sends them (inside a frame, or as the
 * broker stores them) go through the protobuf unpack, the header parser, the verifier with
 * the sender's directory key, the envelope hash and, for our fixed recipient, the
 * receiver's policy check (agents/inbox.c) and the opener.
 * Must never crash or leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "envelope.h"
#include "fuzz_fixture.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const fuzz_fixture *fx = fuzz_fixture_get();
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, size, data);
    if (!e)
        return 0;
    uint8_t hash[32];
    (void)!refex_envelope_hash(e, hash);
    Refex__V1__EnvelopeHeader *h = NULL;
    if (refex_envelope_parse_header(e, &h) == REFEX_OK) {
        const refex_agency *from = refex_directory_find(fx->dir, h->sender);
        char detail[256];
        if (from && refex_envelope_verify(e, h, from->sign_pk) == REFEX_OK &&
            refex_policy_check(fx->dir, h->sender, (int)h->type, FUZZ_MEMBER, detail,
                               sizeof detail) == REFEX_OK) {
            uint8_t *body = NULL;
            size_t len = 0;
            if (refex_envelope_open(e, h, FUZZ_MEMBER, fx->member.enc_pk, fx->member.enc_sk, &body,
                                    &len) == REFEX_OK)
                free(body);
        }
        refex__v1__envelope_header__free_unpacked(h, NULL);
    }
    refex__v1__envelope__free_unpacked(e, NULL);
    return 0;
}
