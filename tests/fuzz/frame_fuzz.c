/* libFuzzer target: every byte string a peer can send goes through the frame decoder and,
 * for envelopes, the header parser and verifier. Must never crash or leak. */
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t pk[32] = {1};
    Refex__V1__Frame *f = NULL;
    if (refex_frame_unpack(data, size, 1u << 20, &f) != REFEX_OK)
        return 0;
    const Refex__V1__Envelope *e = NULL;
    if (f->kind_case == REFEX__V1__FRAME__KIND_SEND)
        e = f->send->envelope;
    else if (f->kind_case == REFEX__V1__FRAME__KIND_DELIVER)
        e = f->deliver->envelope;
    Refex__V1__EnvelopeHeader *h = NULL;
    if (e && refex_envelope_parse_header(e, &h) == REFEX_OK) {
        if (refex_envelope_verify(e, h, pk) != REFEX_OK) {
            /* expected for fuzzed input */
        }
        refex__v1__envelope_header__free_unpacked(h, NULL);
    }
    refex_frame_free(&f);
    return 0;
}
