/* What the broker knows of cases: membership metadata only (case reference, lead, members,
 * grant serials), taken from grants signed by each case's lead. Used to refuse case updates
 * from or to non-members, and to give every member the signed grants of its cases. */
#ifndef REFEX_BROKER_CASES_H
#define REFEX_BROKER_CASES_H

#include <stddef.h>
#include <stdint.h>

#include "refex.pb-c.h"
#include "directory.h"
#include "grant.h"

typedef struct cases cases;

typedef void (*cases_blob_fn)(void *ctx, const uint8_t *grant, size_t len);
typedef void (*cases_agency_fn)(void *ctx, const char *agency);

/* max_objects: at most that many grants of the cases one agency leads, and subscriptions
 * of one agency, are stored; more are refused with REFEX_E_STORE (updates of ones held are
 * not). */
int cases_open(const char *path, uint64_t max_objects, cases **out, char *err, size_t errlen);
void cases_close(cases **c_p);
/* Records a grant submitted by `agency`, which must be the grant's lead and the case's lead
 * (the first grant of a case fixes its lead). REFEX_E_DUPLICATE for a serial not newer than
 * the one held. */
int cases_submit(cases *c, const refex_directory *dir, const char *agency,
                 const Refex__V1__SignedGrant *sg, refex_grant *out, char *why, size_t whylen);
/* The lead, or a member whose grant is in force now: 1 yes, 0 no, -1 the records cannot be
 * read (the caller answers E_STORE, not "not a member"). */
int cases_is_member(cases *c, const char *case_ref, const char *agency, int64_t now_ms);
/* Every grant of every case `agency` leads or belongs to (revoked ones included). */
void cases_grants_for(cases *c, const char *agency, cases_blob_fn fn, void *ctx);
/* Every grant of one case. */
void cases_grants_of(cases *c, const char *case_ref, cases_blob_fn fn, void *ctx);
/* Records a subscription signed by `agency` (itself); for a named case it must be a member
 * to subscribe and a party now or before to unsubscribe (else REFEX_E_NOT_MEMBER).
 * REFEX_E_DUPLICATE for a serial not newer than the one held. */
int cases_subscribe(cases *c, const refex_directory *dir, const char *agency, const uint8_t *blob,
                    size_t len, refex_subscription *out, char *why, size_t whylen);
/* Subscriptions that matter to the publishers of one case: those for the case, and the
 * all-cases subscriptions of its parties. */
void cases_subscriptions_of(cases *c, const char *case_ref, cases_blob_fn fn, void *ctx);
/* The same, for every case `agency` is a party of. */
void cases_subscriptions_for(cases *c, const char *agency, cases_blob_fn fn, void *ctx);
/* Every case `agency` is a current (not revoked) party of. */
void cases_of(cases *c, const char *agency, cases_agency_fn fn, void *ctx);

/* The lead and every agency holding a grant (revoked ones too, so they hear of it). */
void cases_parties(cases *c, const char *case_ref, cases_agency_fn fn, void *ctx);
/* The lead and every agency holding a grant not revoked: who hears of subscriptions. */
void cases_current_parties(cases *c, const char *case_ref, cases_agency_fn fn, void *ctx);

#endif
