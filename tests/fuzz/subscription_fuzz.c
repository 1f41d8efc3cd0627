/* libFuzzer target: a SignedSubscription (a member asking for a case's updates, signed by
 * itself) goes through refex_subscription_verify_packed against the fixed directory and,
 * when it verifies, refex_subscription_wants. Must never crash or leak. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_fixture.h"
#include "grant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const fuzz_fixture *fx = fuzz_fixture_get();
    refex_subscription s;
    if (refex_subscription_verify_packed(data, size, fx->dir, &s) != REFEX_OK)
        return 0;
    for (int type = 0; type < 8; type++) {
        (void)refex_subscription_wants(&s, "CASE-1", type);
        (void)refex_subscription_wants(&s, s.case_ref, type);
    }
    return 0;
}
