/* The information-sharing policy carried, and signed, in the directory: which roles may
 * send which message types to which roles, and which role leads cases. A directory with a
 * policy denies whatever no rule allows; a directory without one allows everything (the
 * format before policies existed) and daemons warn about it at load. */
#ifndef REFEX_POLICY_H
#define REFEX_POLICY_H

#include <stddef.h>

#include "refex/error.h"
#include "keys.h"

#define REFEX_POLICY_MAX_RULES    4096
#define REFEX_POLICY_DEFAULT_LEAD "social-care" /* lead role of a directory without one */

typedef struct {
    char sender_role[REFEX_ID_MAX];
    int type; /* MessageType, 1..5 */
    char recipient_role[REFEX_ID_MAX];
} refex_policy_rule;

typedef struct refex_policy refex_policy;
typedef struct refex_directory refex_directory;

int refex_policy_new(refex_policy **out) REFEX_NODISCARD;
void refex_policy_destroy(refex_policy **self_p);

/* Adds a rule: REFEX_E_EXISTS if it is there already, REFEX_E_INVAL for a bad role or
 * type, REFEX_E_TOO_BIG past REFEX_POLICY_MAX_RULES. */
int refex_policy_allow(refex_policy *self, const char *sender_role, int type,
                       const char *recipient_role) REFEX_NODISCARD;
/* Removes a rule: REFEX_E_NOTFOUND if there is none such. */
int refex_policy_deny(refex_policy *self, const char *sender_role, int type,
                      const char *recipient_role) REFEX_NODISCARD;
/* Sets the lead role ("" for the default): REFEX_E_INVAL if not a valid role. */
int refex_policy_set_lead(refex_policy *self, const char *role) REFEX_NODISCARD;
size_t refex_policy_count(const refex_policy *self);
const refex_policy_rule *refex_policy_at(const refex_policy *self, size_t i);
/* The lead role as stored: "" when the default applies. */
const char *refex_policy_lead(const refex_policy *self);

/* ---- decisions, on a loaded directory --------------------------------------------- */

/* 1 if a message of `type` from a `sender_role` agency to a `recipient_role` one is
 * allowed: by a rule, or because the directory has no policy. */
int refex_policy_allows(const refex_directory *dir, const char *sender_role, int type,
                        const char *recipient_role);
/* The role that leads cases: the policy's, or REFEX_POLICY_DEFAULT_LEAD. */
const char *refex_policy_lead_role(const refex_directory *dir);
/* The check every enforcement point makes, by agency id: REFEX_OK, REFEX_E_UNKNOWN_AGENCY
 * (an id not in the directory) or REFEX_E_POLICY, with detail naming the roles and type
 * (never anything of the message's contents). */
int refex_policy_check(const refex_directory *dir, const char *sender, int type,
                       const char *recipient, char *detail, size_t dlen) REFEX_NODISCARD;
/* A message type as the CLI and policy listings spell it ("referral-decision"); "?" for
 * an unknown one. */
const char *refex_policy_type_name(int type);
/* Logs a warning if the directory carries no policy (daemons call it at each load). */
void refex_policy_warn_absent(const refex_directory *dir);

/* ---- wire form (lib/directory.c) -------------------------------------------------- */

struct Refex__V1__Policy;
/* A checked copy of a Policy message: REFEX_E_DIRECTORY (and err) if a rule or the lead
 * role is invalid or there are too many rules. */
int refex_policy_from_pb(const struct Refex__V1__Policy *pb, refex_policy **out, char *err,
                         size_t errlen) REFEX_NODISCARD;
/* A Policy message pointing into self (free with refex_policy_pb_free; self must outlive
 * it). */
int refex_policy_to_pb(const refex_policy *self, struct Refex__V1__Policy **out) REFEX_NODISCARD;
void refex_policy_pb_free(struct Refex__V1__Policy *pb);

#endif
