/* libFuzzer target: a SignedGrant (case membership, signed by the lead agency) as it arrives
 * from a peer goes through refex_grant_verify_packed against the fixed directory and, when
 * it verifies, refex_grant_allows for every update type. Must never crash or leak. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_fixture.h"
#include "grant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const fuzz_fixture *fx = fuzz_fixture_get();
    refex_grant g;
    if (refex_grant_verify_packed(data, size, fx->dir, &g) != REFEX_OK)
        return 0;
    for (int type = 0; type < 8; type++)
        (void)refex_grant_allows(&g, FUZZ_NOW_MS, type);
    return 0;
}
