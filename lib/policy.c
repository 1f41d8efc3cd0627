/* Information-sharing policy: the rule list, its edits, its wire form, and the one decision
 * every enforcement point (sending agent, broker, receiving agent) asks for. Not the
 * directory file itself (lib/directory.c keeps and signs the policy with the agencies),
 * nor case membership (lib/grant.c). */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refex.pb-c.h"
#include "directory.h"
#include "log.h"

struct refex_policy {
    refex_policy_rule *rules;
    size_t n, cap;
    char lead[REFEX_ID_MAX]; /* "" = REFEX_POLICY_DEFAULT_LEAD */
};

int refex_policy_new(refex_policy **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? REFEX_OK : REFEX_E_NOMEM;
}

void refex_policy_destroy(refex_policy **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->rules);
    free(*self_p);
    *self_p = NULL;
}

static int type_valid(int type)
{
    return type >= REFEX__V1__MESSAGE_TYPE__REFERRAL &&
           type <= REFEX__V1__MESSAGE_TYPE__CASE_UPDATE;
}

static refex_policy_rule *find(const refex_policy *self, const char *from, int type, const char *to)
{
    for (size_t i = 0; i < self->n; i++) {
        refex_policy_rule *r = &self->rules[i];
        if (r->type == type && strcmp(r->sender_role, from) == 0 &&
            strcmp(r->recipient_role, to) == 0)
            return r;
    }
    return NULL;
}

int refex_policy_allow(refex_policy *self, const char *sender_role, int type,
                       const char *recipient_role)
{
    if (!refex_id_valid(sender_role) || !refex_id_valid(recipient_role) || !type_valid(type))
        return REFEX_E_INVAL;
    if (find(self, sender_role, type, recipient_role))
        return REFEX_E_EXISTS;
    if (self->n == REFEX_POLICY_MAX_RULES)
        return REFEX_E_TOO_BIG;
    if (self->n == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 16;
        refex_policy_rule *r = realloc(self->rules, cap * sizeof *r);
        if (!r)
            return REFEX_E_NOMEM;
        self->rules = r;
        self->cap = cap;
    }
    refex_policy_rule *r = &self->rules[self->n++];
    memset(r, 0, sizeof *r);
    snprintf(r->sender_role, sizeof r->sender_role, "%s", sender_role);
    snprintf(r->recipient_role, sizeof r->recipient_role, "%s", recipient_role);
    r->type = type;
    return REFEX_OK;
}

int refex_policy_deny(refex_policy *self, const char *sender_role, int type,
                      const char *recipient_role)
{
    refex_policy_rule *r = find(self, sender_role, type, recipient_role);
    if (!r)
        return REFEX_E_NOTFOUND;
    size_t i = (size_t)(r - self->rules);
    memmove(r, r + 1, (self->n - i - 1) * sizeof *r); /* keeps the others' order */
    self->n--;
    return REFEX_OK;
}

int refex_policy_set_lead(refex_policy *self, const char *role)
{
    if (role[0] && !refex_id_valid(role))
        return REFEX_E_INVAL;
    snprintf(self->lead, sizeof self->lead, "%s", role);
    return REFEX_OK;
}

size_t refex_policy_count(const refex_policy *self)
{
    return self->n;
}

const refex_policy_rule *refex_policy_at(const refex_policy *self, size_t i)
{
    return i < self->n ? &self->rules[i] : NULL;
}

const char *refex_policy_lead(const refex_policy *self)
{
    return self->lead;
}

/* ---- decisions ------------------------------------------------------------------- */

int refex_policy_allows(const refex_directory *dir, const char *sender_role, int type,
                        const char *recipient_role)
{
    const refex_policy *p = refex_directory_policy(dir);
    return !p || find(p, sender_role, type, recipient_role) != NULL;
}

const char *refex_policy_lead_role(const refex_directory *dir)
{
    const refex_policy *p = refex_directory_policy(dir);
    return p && p->lead[0] ? p->lead : REFEX_POLICY_DEFAULT_LEAD;
}

int refex_policy_check(const refex_directory *dir, const char *sender, int type,
                       const char *recipient, char *detail, size_t dlen)
{
    const refex_agency *s = refex_directory_find(dir, sender);
    const refex_agency *r = refex_directory_find(dir, recipient);
    if (!s || !r) {
        snprintf(detail, dlen, "'%s' is not in the directory", s ? recipient : sender);
        return REFEX_E_UNKNOWN_AGENCY;
    }
    if (refex_policy_allows(dir, s->role, type, r->role))
        return REFEX_OK;
    snprintf(detail, dlen, "the information-sharing policy does not allow %s to send %s to %s",
             s->role, refex_policy_type_name(type), r->role);
    return REFEX_E_POLICY;
}

const char *refex_policy_type_name(int type)
{
    static const char *const names[] = {"?",
                                        "referral",
                                        "referral-decision",
                                        "information-request",
                                        "information-response",
                                        "case-update"};
    return type_valid(type) ? names[type] : names[0];
}

void refex_policy_warn_absent(const refex_directory *dir)
{
    if (!refex_directory_policy(dir))
        refex_log_warn("directory has no information-sharing policy: every role may send "
                       "every type (lead role %s)",
                       REFEX_POLICY_DEFAULT_LEAD);
}

/* ---- wire form ------------------------------------------------------------------- */

int refex_policy_from_pb(const Refex__V1__Policy *pb, refex_policy **out, char *err, size_t errlen)
{
    refex_policy *self = NULL;
    int rc = refex_policy_new(&self);
    if (rc != REFEX_OK)
        return rc;
    if (pb->n_rules > REFEX_POLICY_MAX_RULES) {
        snprintf(err, errlen, "policy has more than %d rules", REFEX_POLICY_MAX_RULES);
        rc = REFEX_E_DIRECTORY;
        goto out;
    }
    for (size_t i = 0; i < pb->n_rules; i++) {
        const Refex__V1__PolicyRule *r = pb->rules[i];
        rc = refex_policy_allow(self, r->sender_role, (int)r->type, r->recipient_role);
        if (rc == REFEX_E_EXISTS)
            continue; /* a repeated rule allows nothing more */
        if (rc != REFEX_OK) {
            snprintf(err, errlen, "policy rule %zu is invalid", i);
            rc = rc == REFEX_E_NOMEM ? rc : REFEX_E_DIRECTORY;
            goto out;
        }
    }
    if (refex_policy_set_lead(self, pb->lead_role) != REFEX_OK) {
        snprintf(err, errlen, "policy lead role is invalid");
        rc = REFEX_E_DIRECTORY;
        goto out;
    }
    *out = self;
    self = NULL;
    rc = REFEX_OK;
out:
    refex_policy_destroy(&self);
    return rc;
}

/* One allocation: the message, its rules, and the pointer array. */
typedef struct {
    Refex__V1__Policy pb;
    Refex__V1__PolicyRule **ptrs;
    Refex__V1__PolicyRule items[];
} policy_pb;

int refex_policy_to_pb(const refex_policy *self, Refex__V1__Policy **out)
{
    policy_pb *w = calloc(1, sizeof *w + self->n * sizeof w->items[0]);
    Refex__V1__PolicyRule **ptrs = calloc(self->n ? self->n : 1, sizeof *ptrs);
    if (!w || !ptrs) {
        free(w);
        free(ptrs);
        return REFEX_E_NOMEM;
    }
    refex__v1__policy__init(&w->pb);
    for (size_t i = 0; i < self->n; i++) {
        Refex__V1__PolicyRule *r = &w->items[i];
        refex__v1__policy_rule__init(r);
        r->sender_role = (char *)self->rules[i].sender_role;
        r->type = (Refex__V1__MessageType)self->rules[i].type;
        r->recipient_role = (char *)self->rules[i].recipient_role;
        ptrs[i] = r;
    }
    w->ptrs = ptrs;
    w->pb.n_rules = self->n;
    w->pb.rules = ptrs;
    w->pb.lead_role = (char *)self->lead;
    *out = &w->pb;
    return REFEX_OK;
}

void refex_policy_pb_free(Refex__V1__Policy *pb)
{
    if (!pb)
        return;
    policy_pb *w = (policy_pb *)pb; /* pb is the first member */
    free(w->ptrs);
    free(w);
}
