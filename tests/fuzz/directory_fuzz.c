/* libFuzzer target: a directory file's bytes (SignedDirectory, as the broker distributes
 * it) go through refex_directory_parse pinned to the fixed trust anchor, and unpinned (as
 * `refex directory` edits a file), then the lookups a daemon makes. Must never crash or
 * leak. */
#include <stddef.h>
#include <stdint.h>

#include "directory.h"
#include "fuzz_fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void use(const refex_directory *d)
{
    for (size_t i = 0; i < refex_directory_count(d); i++) {
        const refex_agency *a = refex_directory_at(d, i);
        if (refex_directory_find(d, a->id) == NULL ||
            refex_directory_find_transport(d, a->transport_pk) == NULL)
            __builtin_trap(); /* every listed agency must be found by id and by key */
        (void)refex_agency_usable(a, FUZZ_NOW_MS);
    }
    (void)refex_directory_serial(d);
    (void)refex_directory_is_signed(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const fuzz_fixture *fx = fuzz_fixture_get();
    char err[256];
    refex_directory *d = NULL;
    if (refex_directory_parse(data, size, "fuzz", fx->anchor_pk, &d, err, sizeof err) == REFEX_OK) {
        use(d);
        refex_directory_destroy(&d);
    }
    if (refex_directory_parse(data, size, "fuzz", NULL, &d, err, sizeof err) == REFEX_OK) {
        use(d);
        refex_directory_destroy(&d);
    }
    return 0;
}
