/* libFuzzer target: a SignedReceipt or non-delivery report as it arrives from the broker
 * goes through refex_receipt_verify_packed against the fixed directory. Must never crash
 * or leak. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_fixture.h"
#include "receipt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const fuzz_fixture *fx = fuzz_fixture_get();
    refex_receipt r;
    (void)!refex_receipt_verify_packed(data, size, fx->dir, &r);
    return 0;
}
