/* Case membership grants. A grant says that `member` may receive the updates of case
 * `case_ref`, signed by the case's lead agency (which must hold the role below). Publishers
 * encrypt only to members whose grants verify, so the broker cannot add a reader. */
#ifndef REFEX_GRANT_H
#define REFEX_GRANT_H

#include <stddef.h>
#include <stdint.h>

#include "refex.pb-c.h"
#include "directory.h"
#include "refex/error.h"

#define REFEX_GRANT_CONTEXT   "refex/grant/v1"
#define REFEX_GRANT_MAX_TYPES 16

typedef struct {
    char case_ref[128];
    char lead[REFEX_ID_MAX];
    char member[REFEX_ID_MAX];
    int types[REFEX_GRANT_MAX_TYPES]; /* CaseUpdateType values; n_types == 0: all */
    size_t n_types;
    int64_t valid_until_ms;
    int revoked;
    int64_t issued_at_ms;
    uint64_t serial;
} refex_grant;

/* Packs and signs with the lead's key; *out is a packed SignedGrant (malloc'd). */
int refex_grant_sign(const refex_grant *g, const uint8_t sign_sk[64], uint8_t **out,
                     size_t *out_len) REFEX_NODISCARD;
/* Verifies: well formed, the lead is a usable agency with the lead role, the member is in the
 * directory, the signature is the lead's. */
int refex_grant_verify(const Refex__V1__SignedGrant *sg, const refex_directory *dir,
                       refex_grant *out) REFEX_NODISCARD;
/* A lead's own stored grant: REFEX_OK if it was signed with pk, REFEX_E_BAD_SIGNATURE if
 * with another key (one rotated away: sign it again), REFEX_E_MALFORMED if it does not
 * parse. out holds the contents unless it is malformed. */
int refex_grant_signed_with(const uint8_t *buf, size_t len, const uint8_t pk[32],
                            refex_grant *out) REFEX_NODISCARD;
/* Same, from packed SignedGrant bytes. */
int refex_grant_verify_packed(const uint8_t *buf, size_t len, const refex_directory *dir,
                              refex_grant *out) REFEX_NODISCARD;
#define REFEX_SUBSCRIPTION_CONTEXT "refex/subscription/v1"

typedef struct {
    char agency[REFEX_ID_MAX];
    char case_ref[128]; /* "" = every case the agency is a member of */
    int types[REFEX_GRANT_MAX_TYPES];
    size_t n_types;
    int unsubscribed;
    int64_t issued_at_ms;
    uint64_t serial;
} refex_subscription;

/* A member's subscription, signed by the member itself. */
int refex_subscription_sign(const refex_subscription *s, const uint8_t sign_sk[64], uint8_t **out,
                            size_t *out_len) REFEX_NODISCARD;
int refex_subscription_verify_packed(const uint8_t *buf, size_t len, const refex_directory *dir,
                                     refex_subscription *out) REFEX_NODISCARD;
/* One's own stored subscription: REFEX_OK if it was signed with pk, REFEX_E_BAD_SIGNATURE
 * if with another key (one rotated away: sign it again), REFEX_E_MALFORMED if it does not
 * parse. out holds the contents unless it is malformed. */
int refex_subscription_signed_with(const uint8_t *buf, size_t len, const uint8_t pk[32],
                                   refex_subscription *out) REFEX_NODISCARD;
/* Does the subscription ask for updates of `type` in `case_ref`? */
int refex_subscription_wants(const refex_subscription *s, const char *case_ref, int type);

/* Is the grant in force now for update type `type` (0: any type)? */
int refex_grant_allows(const refex_grant *g, int64_t now_ms, int type);

#endif
