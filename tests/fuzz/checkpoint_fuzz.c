/* libFuzzer target: a signed checkpoint note (C2SP signed-note, tlog-checkpoint) as a
 * witness or auditor receives it goes through refex_checkpoint_open with the fixed log key,
 * refex_checkpoint_verify_cosignature with the fixed witness key and, as a witness would,
 * refex_checkpoint_cosign. Must never crash or leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "fuzz_fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const fuzz_fixture *fx = fuzz_fixture_get();
    refex_checkpoint c;
    uint64_t ts = 0;
    const char *note = (const char *)data;
    (void)!refex_checkpoint_open(note, size, FUZZ_LOG_NAME, fx->log_pk, &c);
    (void)!refex_checkpoint_verify_cosignature(note, size, FUZZ_WITNESS, fx->witness_pk, &ts);
    /* cosign takes a NUL-terminated note. */
    char *z = malloc(size + 1);
    if (!z)
        return 0;
    memcpy(z, data, size);
    z[size] = '\0';
    char *out = NULL;
    if (refex_checkpoint_cosign(z, FUZZ_WITNESS, fx->witness_sk, 1767225600, &out) == REFEX_OK) {
        if (refex_checkpoint_verify_cosignature(out, strlen(out), FUZZ_WITNESS, fx->witness_pk,
                                                &ts) != REFEX_OK)
            abort(); /* what we just cosigned must verify */
        free(out);
    }
    free(z);
    return 0;
}
