/* The fuzz targets' fixed keys and directory (see fuzz_fixture.h). */
#include "fuzz_fixture.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

static void seeded_sign(uint8_t n, uint8_t pk[32], uint8_t sk[64])
{
    uint8_t seed[32];
    memset(seed, n, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);
}

static void seeded_keys(uint8_t n, fuzz_keys *k)
{
    uint8_t seed[32];
    seeded_sign(n, k->sign_pk, k->sign_sk);
    memset(seed, n + 100, sizeof seed);
    crypto_box_seed_keypair(k->enc_pk, k->enc_sk, seed);
}

static void add(refex_directory *dir, const char *id, const char *role, const fuzz_keys *k,
                uint8_t transport, int revoked)
{
    refex_agency a;
    uint8_t sk[64];
    memset(&a, 0, sizeof a);
    snprintf(a.id, sizeof a.id, "%s", id);
    snprintf(a.role, sizeof a.role, "%s", role);
    snprintf(a.display_name, sizeof a.display_name, "Fuzz %s", id);
    memcpy(a.sign_pk, k->sign_pk, 32);
    memcpy(a.enc_pk, k->enc_pk, 32);
    seeded_sign(transport, a.transport_pk, sk);
    a.revoked = revoked;
    if (refex_directory_add(dir, &a, 0) != REFEX_OK)
        abort();
}

/* A small information-sharing policy, so the targets reach the policy code: the seeds'
 * referral and case update (lead to member) are allowed, most other pairs are not. */
static void add_policy(refex_directory *dir)
{
    static const struct {
        const char *from;
        int type;
        const char *to;
    } rules[] = {
        {"social-care", 1, "health"}, {"social-care", 3, "health"}, {"social-care", 5, "health"},
        {"health", 1, "social-care"}, {"health", 2, "social-care"}, {"health", 4, "social-care"},
        {"police", 1, "social-care"},
    };
    refex_policy *p = NULL;
    if (refex_directory_policy_edit(dir, &p) != REFEX_OK ||
        refex_policy_set_lead(p, "social-care") != REFEX_OK)
        abort();
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (refex_policy_allow(p, rules[i].from, rules[i].type, rules[i].to) != REFEX_OK)
            abort();
}

const fuzz_fixture *fuzz_fixture_get(void)
{
    static fuzz_fixture f;
    static int ready;
    if (ready)
        return &f;
    if (sodium_init() < 0 || refex_directory_new(&f.dir) != REFEX_OK)
        abort();
    seeded_keys(1, &f.lead);
    seeded_keys(2, &f.member);
    seeded_keys(3, &f.revoked);
    seeded_sign(9, f.anchor_pk, f.anchor_sk);
    seeded_sign(10, f.log_pk, f.log_sk);
    seeded_sign(11, f.witness_pk, f.witness_sk);
    add(f.dir, FUZZ_LEAD, "social-care", &f.lead, 21, 0);
    add(f.dir, FUZZ_MEMBER, "health", &f.member, 22, 0);
    add(f.dir, FUZZ_REVOKED, "police", &f.revoked, 23, 1);
    add_policy(f.dir);
    if (refex_directory_sign(f.dir, f.anchor_sk) != REFEX_OK)
        abort();
    ready = 1;
    return &f;
}
