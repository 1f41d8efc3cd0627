/* libFuzzer target: a directory file's bytes (SignedDirectory, as the broker distributes
 * it) go through refex_directory_parse pinned to the fixed trust anchor, and unpinned (as
 * `refex directory` edits a file), then the lookups a daemon makes and the decisions of
 * the information-sharing policy the directory carries. Must never crash or leak. */
#include <stddef.h>
#include <stdint.h>

#include "directory.h"
#include "fuzz_fixture.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The policy decisions every enforcement point makes, for each pair of listed agencies
 * (at most the first 16) and every type, including out-of-range ones. */
static void policy(const refex_directory *d)
{
    char detail[256];
    const refex_policy *p = refex_directory_policy(d);
    for (size_t i = 0; p && i < refex_policy_count(p); i++) {
        const refex_policy_rule *r = refex_policy_at(p, i);
        if (!refex_policy_allows(d, r->sender_role, r->type, r->recipient_role))
            __builtin_trap(); /* a rule the policy holds must allow its own case */
        (void)refex_policy_type_name(r->type);
    }
    if (p)
        (void)refex_policy_lead(p);
    (void)refex_policy_lead_role(d);
    size_t n = refex_directory_count(d) < 16 ? refex_directory_count(d) : 16;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            for (int type = 0; type <= 6; type++)
                (void)!refex_policy_check(d, refex_directory_at(d, i)->id, type,
                                          refex_directory_at(d, j)->id, detail, sizeof detail);
    (void)!refex_policy_check(d, "nobody", 1, "nobody-else", detail, sizeof detail);
}

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
    policy(d);
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
