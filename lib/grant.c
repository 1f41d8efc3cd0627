/* Case grants: signing and verification, like receipts: the signature covers the exact
 * serialized bytes carried in the message, behind a domain-separation prefix. */
#include "grant.h"

#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "envelope.h"
#include "keys.h"
#include "util.h"

int refex_grant_sign(const refex_grant *g, const uint8_t sign_sk[64], uint8_t **out,
                     size_t *out_len)
{
    Refex__V1__CaseUpdateType types[REFEX_GRANT_MAX_TYPES];
    *out = NULL;
    *out_len = 0;
    if (!refex_case_ref_valid(g->case_ref) || !g->case_ref[0] || !refex_id_valid(g->lead) ||
        !refex_id_valid(g->member) || g->n_types > REFEX_GRANT_MAX_TYPES)
        return REFEX_E_INVAL;
    Refex__V1__CaseGrant p = REFEX__V1__CASE_GRANT__INIT;
    p.version = 1;
    p.case_ref = (char *)g->case_ref;
    p.lead = (char *)g->lead;
    p.member = (char *)g->member;
    for (size_t i = 0; i < g->n_types; i++)
        types[i] = (Refex__V1__CaseUpdateType)g->types[i];
    p.n_update_types = g->n_types;
    p.update_types = types;
    p.valid_until_ms = g->valid_until_ms;
    p.revoked = g->revoked != 0;
    p.issued_at_ms = g->issued_at_ms;
    p.serial = g->serial;
    return refex_pb_pack_signed(&p.base, &refex__v1__signed_grant__descriptor, REFEX_GRANT_CONTEXT,
                                sign_sk, out, out_len);
}

/* Parses sg into out, then checks it: against the key pk if given (the lead's own record),
 * else as a verifier does, against dir. out is filled whenever the contents parse. */
static int grant_open(const Refex__V1__SignedGrant *sg, const refex_directory *dir,
                      const uint8_t *pk, refex_grant *out)
{
    int rc = REFEX_OK;
    if (!sg || sg->signature.len != 64 || sg->grant.len == 0)
        return REFEX_E_MALFORMED;
    Refex__V1__CaseGrant *p = refex__v1__case_grant__unpack(NULL, sg->grant.len, sg->grant.data);
    if (!p)
        return REFEX_E_MALFORMED;
    if (p->version != 1 || !p->case_ref[0] || !refex_case_ref_valid(p->case_ref) ||
        !refex_id_valid(p->lead) || !refex_id_valid(p->member) ||
        p->n_update_types > REFEX_GRANT_MAX_TYPES) {
        rc = REFEX_E_MALFORMED;
        goto out;
    }
    memset(out, 0, sizeof *out);
    strcpy(out->case_ref, p->case_ref); /* lengths checked above */
    strcpy(out->lead, p->lead);
    strcpy(out->member, p->member);
    for (size_t i = 0; i < p->n_update_types; i++)
        out->types[i] = (int)p->update_types[i];
    out->n_types = p->n_update_types;
    out->valid_until_ms = p->valid_until_ms;
    out->revoked = p->revoked;
    out->issued_at_ms = p->issued_at_ms;
    out->serial = p->serial;
    if (pk) {
        rc = refex_verify_domain(REFEX_GRANT_CONTEXT, sg->grant.data, sg->grant.len,
                                 sg->signature.data, pk);
        goto out;
    }
    const refex_agency *lead = refex_directory_find(dir, p->lead);
    if (!lead || !refex_directory_find(dir, p->member)) {
        rc = REFEX_E_UNKNOWN_AGENCY;
        goto out;
    }
    if (strcmp(lead->role, refex_policy_lead_role(dir)) != 0 ||
        refex_agency_usable(lead, refex_now_ms()) != REFEX_OK) {
        rc = REFEX_E_NOT_MEMBER; /* only an active agency of the lead role leads a case */
        goto out;
    }
    rc = refex_agency_verify_domain(lead, refex_now_ms(), REFEX_GRANT_CONTEXT, sg->grant.data,
                                    sg->grant.len, sg->signature.data);
out:
    refex__v1__case_grant__free_unpacked(p, NULL);
    return rc;
}

int refex_grant_verify(const Refex__V1__SignedGrant *sg, const refex_directory *dir,
                       refex_grant *out)
{
    refex_grant g;
    int rc = grant_open(sg, dir, NULL, &g);
    if (rc == REFEX_OK)
        *out = g;
    return rc;
}

int refex_grant_signed_with(const uint8_t *buf, size_t len, const uint8_t pk[32], refex_grant *out)
{
    Refex__V1__SignedGrant *sg = refex__v1__signed_grant__unpack(NULL, len, buf);
    if (!sg)
        return REFEX_E_MALFORMED;
    int rc = grant_open(sg, NULL, pk, out);
    refex__v1__signed_grant__free_unpacked(sg, NULL);
    return rc;
}

int refex_grant_allows(const refex_grant *g, int64_t now_ms, int type)
{
    if (g->revoked || (g->valid_until_ms && now_ms >= g->valid_until_ms))
        return 0;
    if (g->n_types == 0 || type == 0)
        return 1;
    for (size_t i = 0; i < g->n_types; i++)
        if (g->types[i] == type)
            return 1;
    return 0;
}

int refex_grant_verify_packed(const uint8_t *buf, size_t len, const refex_directory *dir,
                              refex_grant *out)
{
    Refex__V1__SignedGrant *sg = refex__v1__signed_grant__unpack(NULL, len, buf);
    if (!sg)
        return REFEX_E_MALFORMED;
    int rc = refex_grant_verify(sg, dir, out);
    refex__v1__signed_grant__free_unpacked(sg, NULL);
    return rc;
}

/* ---- subscriptions ------------------------------------------------------------------- */

int refex_subscription_sign(const refex_subscription *sub, const uint8_t sign_sk[64], uint8_t **out,
                            size_t *out_len)
{
    Refex__V1__CaseUpdateType types[REFEX_GRANT_MAX_TYPES];
    *out = NULL;
    *out_len = 0;
    if (!refex_id_valid(sub->agency) || !refex_case_ref_valid(sub->case_ref) ||
        sub->n_types > REFEX_GRANT_MAX_TYPES)
        return REFEX_E_INVAL;
    Refex__V1__CaseSubscription p = REFEX__V1__CASE_SUBSCRIPTION__INIT;
    p.version = 1;
    p.agency = (char *)sub->agency;
    p.case_ref = (char *)sub->case_ref;
    for (size_t i = 0; i < sub->n_types; i++)
        types[i] = (Refex__V1__CaseUpdateType)sub->types[i];
    p.n_update_types = sub->n_types;
    p.update_types = types;
    p.unsubscribed = sub->unsubscribed != 0;
    p.issued_at_ms = sub->issued_at_ms;
    p.serial = sub->serial;
    return refex_pb_pack_signed(&p.base, &refex__v1__signed_subscription__descriptor,
                                REFEX_SUBSCRIPTION_CONTEXT, sign_sk, out, out_len);
}

/* Verifies a packed SignedSubscription against the key pk if given, else against its
 * agency's keys in dir; fills out (if the contents parse) even when the signature fails. */
static int subscription_open(const uint8_t *buf, size_t len, const refex_directory *dir,
                             const uint8_t *pk, refex_subscription *out)
{
    int rc = REFEX_OK;
    Refex__V1__SignedSubscription *ss = refex__v1__signed_subscription__unpack(NULL, len, buf);
    Refex__V1__CaseSubscription *p = NULL;
    if (!ss || ss->signature.len != 64 || ss->subscription.len == 0) {
        rc = REFEX_E_MALFORMED;
        goto out;
    }
    p = refex__v1__case_subscription__unpack(NULL, ss->subscription.len, ss->subscription.data);
    if (!p || p->version != 1 || !refex_id_valid(p->agency) || !refex_case_ref_valid(p->case_ref) ||
        p->n_update_types > REFEX_GRANT_MAX_TYPES) {
        rc = REFEX_E_MALFORMED;
        goto out;
    }
    memset(out, 0, sizeof *out);
    strcpy(out->agency, p->agency); /* lengths checked above */
    strcpy(out->case_ref, p->case_ref);
    for (size_t i = 0; i < p->n_update_types; i++)
        out->types[i] = (int)p->update_types[i];
    out->n_types = p->n_update_types;
    out->unsubscribed = p->unsubscribed;
    out->issued_at_ms = p->issued_at_ms;
    out->serial = p->serial;
    const refex_agency *a = pk ? NULL : refex_directory_find(dir, p->agency);
    if (pk)
        rc = refex_verify_domain(REFEX_SUBSCRIPTION_CONTEXT, ss->subscription.data,
                                 ss->subscription.len, ss->signature.data, pk);
    else if (!a)
        rc = REFEX_E_UNKNOWN_AGENCY;
    else
        rc = refex_agency_verify_domain(a, refex_now_ms(), REFEX_SUBSCRIPTION_CONTEXT,
                                        ss->subscription.data, ss->subscription.len,
                                        ss->signature.data);
out:
    if (p)
        refex__v1__case_subscription__free_unpacked(p, NULL);
    if (ss)
        refex__v1__signed_subscription__free_unpacked(ss, NULL);
    return rc;
}

int refex_subscription_verify_packed(const uint8_t *buf, size_t len, const refex_directory *dir,
                                     refex_subscription *out)
{
    refex_subscription s;
    int rc = subscription_open(buf, len, dir, NULL, &s);
    if (rc == REFEX_OK)
        *out = s;
    return rc;
}

int refex_subscription_signed_with(const uint8_t *buf, size_t len, const uint8_t pk[32],
                                   refex_subscription *out)
{
    return subscription_open(buf, len, NULL, pk, out);
}

int refex_subscription_wants(const refex_subscription *s, const char *case_ref, int type)
{
    if (s->unsubscribed || (s->case_ref[0] && strcmp(s->case_ref, case_ref) != 0))
        return 0;
    if (s->n_types == 0 || type == 0)
        return 1;
    for (size_t i = 0; i < s->n_types; i++)
        if (s->types[i] == type)
            return 1;
    return 0;
}
