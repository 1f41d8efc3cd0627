/* Cases: grants of membership signed by a case's lead, members' own subscriptions, and
 * the membership checks and recipient lists computed from them, always from signed
 * objects verified again on use. Not the grants' format (lib/grant.c) nor their storage
 * (agent_store.c). */
#include "agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "envelope.h"
#include "log.h"
#include "util.h"

typedef int (*grant_fn)(void *ctx, const refex_grant *g);
static void each_grant(agent *a, const char *case_ref, grant_fn fn, void *ctx);

/* ---- signed objects: grants and subscriptions alike ---------------------------------- */

/* Serials only grow: the time in ms, or one more than the last one held. */
static uint64_t next_serial(agent *a, agent_signed_kind kind, const char *key1, const char *key2,
                            int64_t issued_at_ms)
{
    int64_t last = 0;
    if (agent_store_signed_serial(a->store, kind, key1, key2, &last) != REFEX_OK)
        last = 0;
    return (uint64_t)(issued_at_ms > last ? issued_at_ms : last + 1);
}

/* Keeps a verified (or just signed) object if it is newer than the one held for its key;
 * a grant only if it names the lead already known for the case. Inside the caller's unit. */
static int keep_signed(agent *a, const agent_signed_obj *o)
{
    int other = 0;
    if (o->kind == AGENT_SIGNED_GRANT) {
        int rc = agent_store_grant_other_lead(a->store, o->key1, o->lead, &other);
        if (rc != REFEX_OK)
            return rc;
        if (other) {
            refex_log_error("ALERT grant: case %s already has another lead; grant by %s ignored",
                            o->key1, o->lead);
            return REFEX_E_NOT_MEMBER;
        }
    }
    return agent_store_signed_put(a->store, o);
}

/* keep_signed in a unit of its own. */
static int keep_signed_unit(agent *a, const agent_signed_obj *o)
{
    int rc = batch_unit_begin(a);
    if (rc != REFEX_OK)
        return rc;
    rc = keep_signed(a, o);
    return rc == REFEX_OK ? batch_unit_end(a, 1) : (batch_unit_end(a, 0), rc);
}

static agent_signed_obj grant_obj(const refex_grant *g, const uint8_t *blob, size_t len)
{
    return (agent_signed_obj){AGENT_SIGNED_GRANT, g->case_ref, g->member, g->lead,
                              g->serial,          blob,        len};
}

static agent_signed_obj subscription_obj(const refex_subscription *s, const uint8_t *blob,
                                         size_t len)
{
    return (agent_signed_obj){
        AGENT_SIGNED_SUBSCRIPTION, s->agency, s->case_ref, NULL, s->serial, blob, len};
}

/* A request's "types": CaseUpdateType names, none meaning all. */
static int parse_types(json_t *types, int *out, size_t *n, char *detail, size_t dlen)
{
    size_t i;
    json_t *t;
    json_array_foreach(types, i, t)
    {
        const char *name = json_string_value(t);
        const ProtobufCEnumValue *v = name ? protobuf_c_enum_descriptor_get_value_by_name(
                                                 &refex__v1__case_update_type__descriptor, name)
                                           : NULL;
        if (!v || v->value == 0) {
            snprintf(detail, dlen, "unknown update type");
            return REFEX_E_INVAL;
        }
        out[(*n)++] = v->value;
    }
    return REFEX_OK;
}

/* ---- grants -------------------------------------------------------------------------- */

/* A grant request from the control socket, checked. */
static int parse_grant(agent *a, json_t *req, refex_grant *g, char *detail, size_t dlen)
{
    json_t *types = json_object_get(req, "types");
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    int open = json_is_true(json_object_get(req, "open"));
    const char *member = open ? a->agency : json_string_value(json_object_get(req, "member"));
    snprintf(g->case_ref, sizeof g->case_ref, "%s", case_ref ? case_ref : "");
    snprintf(g->lead, sizeof g->lead, "%s", a->agency);
    snprintf(g->member, sizeof g->member, "%s", member ? member : "");
    g->revoked = json_is_true(json_object_get(req, "revoke"));
    g->valid_until_ms = json_integer_value(json_object_get(req, "until_ms"));
    g->issued_at_ms = refex_now_ms();
    if (strcmp(a->base.keys->pub.role, refex_policy_lead_role(a->base.dir)) != 0) {
        snprintf(detail, dlen, "only a %s agency leads cases", refex_policy_lead_role(a->base.dir));
        return REFEX_E_NOT_MEMBER;
    }
    if (!case_ref || !case_ref[0] || !refex_case_ref_valid(case_ref) || !member ||
        !refex_directory_find(a->base.dir, member) || (strcmp(member, a->agency) == 0 && !open) ||
        json_array_size(types) > REFEX_GRANT_MAX_TYPES) {
        snprintf(detail, dlen,
                 "give a case, and a member from the directory other "
                 "than this agency");
        return REFEX_E_INVAL;
    }
    return parse_types(types, g->types, &g->n_types, detail, dlen);
}

/* Hands a signed grant to the broker, after commit with the rest of the batch. */
static int submit_grant(agent *a, const uint8_t *blob, size_t len)
{
    Refex__V1__SignedGrant *sg = refex__v1__signed_grant__unpack(NULL, len, blob);
    int rc = REFEX_OK;
    if (sg) {
        Refex__V1__GrantSubmit gs = REFEX__V1__GRANT_SUBMIT__INIT;
        gs.grant = sg;
        rc = batch_link_out(a, REFEX__V1__FRAME__KIND_GRANT, &gs.base);
        refex__v1__signed_grant__free_unpacked(sg, NULL);
    }
    return rc;
}

/* The lead grants (or revokes) case membership: sign, keep, and hand to the broker. */
void cases_cmd_grant(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    refex_grant g;
    char detail[256] = "";
    uint8_t *blob = NULL;
    size_t len = 0;
    memset(&g, 0, sizeof g);
    int rc = parse_grant(a, req, &g, detail, sizeof detail);
    if (rc != REFEX_OK)
        goto out;
    g.serial = next_serial(a, AGENT_SIGNED_GRANT, g.case_ref, g.member, g.issued_at_ms);
    if ((rc = refex_grant_sign(&g, a->base.keys->sk->sign_sk, &blob, &len)) != REFEX_OK)
        goto out;
    agent_signed_obj o = grant_obj(&g, blob, len);
    if ((rc = keep_signed_unit(a, &o)) != REFEX_OK)
        goto out;
    rc = submit_grant(a, blob, len);
    refex_log_info("grant: case %s: %s %s (serial %llu)", g.case_ref, g.member,
                   g.revoked ? "revoked" : "granted", (unsigned long long)g.serial);
out:
    free(blob);
    batch_reply(a, rid, rid_len,
                rc == REFEX_OK ? json_pack("{s:b, s:s, s:s, s:I}", "ok", 1, "case", g.case_ref,
                                           "member", g.member, "serial", (json_int_t)g.serial)
                               : control_error(rc, detail));
}

void cases_grant_notice(agent *a, const Refex__V1__SignedGrant *sg)
{
    refex_grant g;
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = refex_grant_verify(sg, a->base.dir, &g);
    if (rc != REFEX_OK) {
        refex_log_warn("grant: a grant from the broker does not verify (%s); ignored",
                       refex_errname(rc));
        return;
    }
    if (refex_pb_pack(&sg->base, &blob, &len) != REFEX_OK)
        return;
    agent_signed_obj o = grant_obj(&g, blob, len);
    if (keep_signed_unit(a, &o) == REFEX_OK)
        refex_log_info("grant: case %s: %s %s by %s", g.case_ref, g.member,
                       g.revoked ? "revoked" : "granted", g.lead);
    free(blob);
}

typedef struct {
    agent *a;
    json_t *rows;
} member_rows;

static int member_row(void *vctx, const refex_grant *g)
{
    member_rows *mr = vctx;
    json_t *rows = mr->rows;
    json_t *types = json_array();
    for (size_t i = 0; i < g->n_types; i++) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &refex__v1__case_update_type__descriptor, g->types[i]);
        json_array_append_new(types, json_string(v ? v->name : "?"));
    }
    json_t *row = json_pack(
        "{s:s, s:s, s:o, s:I, s:b, s:b, s:I}", "member", g->member, "lead", g->lead, "update_types",
        types, "valid_until_ms", (json_int_t)g->valid_until_ms, "revoked", g->revoked, "in_force",
        refex_grant_allows(g, refex_now_ms(), 0), "serial", (json_int_t)g->serial);
    if (!row)
        return 0;
    json_object_set_new(row, "subscribed",
                        json_boolean(strcmp(g->member, g->lead) == 0 ||
                                     cases_is_subscribed(mr->a, g->member, g->case_ref, 0)));
    json_object_set_new(row, "is_lead", json_boolean(strcmp(g->member, g->lead) == 0));
    json_array_append_new(rows, row);
    return 0;
}

/* A case's members as this agent knows them, from grants it has verified. */
void cases_cmd_members(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    json_t *rows = json_array();
    if (!case_ref || !refex_case_ref_valid(case_ref)) {
        json_decref(rows);
        batch_reply(a, rid, rid_len, control_error(REFEX_E_INVAL, "give a case"));
        return;
    }
    member_rows mr = {a, rows};
    each_grant(a, case_ref, member_row, &mr);
    batch_reply(a, rid, rid_len,
                json_pack("{s:b, s:s, s:o}", "ok", 1, "case", case_ref, "members", rows));
}

/* ---- subscriptions ------------------------------------------------------------------ */

void cases_subscription_notice(agent *a, const Refex__V1__SignedSubscription *ss)
{
    refex_subscription s;
    uint8_t *blob = NULL;
    size_t len = 0;
    if (refex_pb_pack(&ss->base, &blob, &len) != REFEX_OK)
        return;
    int rc = refex_subscription_verify_packed(blob, len, a->base.dir, &s);
    if (rc != REFEX_OK) {
        refex_log_warn("subscription: one from the broker does not verify (%s); ignored",
                       refex_errname(rc));
    } else {
        agent_signed_obj o = subscription_obj(&s, blob, len);
        if (keep_signed_unit(a, &o) == REFEX_OK)
            refex_log_info("subscription: %s %s %s", s.agency,
                           s.unsubscribed ? "unsubscribed from" : "subscribed to",
                           s.case_ref[0] ? s.case_ref : "all its cases");
    }
    free(blob);
}

typedef struct {
    agent *a;
    const char *agency, *case_ref;
    int type, wants;
} subscribed_q;

/* The first row decides: one that no longer verifies (say, after a key change) means
 * "not subscribed", never a fall back to the all-cases one against the member's wish. */
static int first_subscription(void *vctx, const uint8_t *blob, size_t len)
{
    subscribed_q *q = vctx;
    refex_subscription s;
    q->wants = refex_subscription_verify_packed(blob, len, q->a->base.dir, &s) == REFEX_OK &&
               strcmp(s.agency, q->agency) == 0 &&
               refex_subscription_wants(&s, q->case_ref, q->type);
    return 1;
}

/* Has `agency` asked, in a subscription it signed, for updates of `type` in the case? A
 * subscription to the case itself decides before one to all its cases. */
int cases_is_subscribed(agent *a, const char *agency, const char *case_ref, int type)
{
    subscribed_q q = {a, agency, case_ref, type, 0};
    if (agent_store_subscriptions_for(a->store, agency, case_ref, first_subscription, &q) !=
        REFEX_OK)
        return 0;
    return q.wants;
}

static int audit_subscription(agent *a, const char *event, const char *outcome,
                              const char *case_ref)
{
    refex_audit_entry ae;
    journal_fill(a, &ae, event, outcome, "", "", REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, case_ref, "",
                 NULL);
    return journal_append(a, &ae);
}

static void submit_subscription(agent *a, const uint8_t *blob, size_t len)
{
    Refex__V1__SignedSubscription *ss = refex__v1__signed_subscription__unpack(NULL, len, blob);
    if (!ss)
        return;
    Refex__V1__SubscribeSubmit sub = REFEX__V1__SUBSCRIBE_SUBMIT__INIT;
    sub.subscription = ss;
    if (batch_link_out(a, REFEX__V1__FRAME__KIND_SUBSCRIBE, &sub.base) !=
        REFEX_OK) /* after commit, with the rest of the batch */
        refex_log_debug("subscription: not sent now; sent again when next welcomed");
    refex__v1__signed_subscription__free_unpacked(ss, NULL);
}

/* Our subscription s, signed with a key rotated away since: signed again with the current
 * key under a newer serial (the broker and the publishers keep the newer one), kept and
 * audited, then sent; so it still verifies when the rotation's overlap ends. */
static void resign_subscription(agent *a, refex_subscription *s)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    s->issued_at_ms = refex_now_ms();
    s->serial = next_serial(a, AGENT_SIGNED_SUBSCRIPTION, s->agency, s->case_ref, s->issued_at_ms);
    int rc = refex_subscription_sign(s, a->base.keys->sk->sign_sk, &blob, &len);
    agent_signed_obj o = subscription_obj(s, blob, len);
    if (rc == REFEX_OK && (rc = batch_unit_begin(a)) == REFEX_OK) {
        rc = keep_signed(a, &o);
        if (rc == REFEX_OK)
            rc = audit_subscription(a, s->unsubscribed ? "unsubscribe" : "subscribe",
                                    "success: signed again after a key rotation",
                                    s->case_ref[0] ? s->case_ref : "*");
        rc = rc == REFEX_OK ? batch_unit_end(a, 1) : (batch_unit_end(a, 0), rc);
    }
    if (rc == REFEX_OK) {
        refex_log_info("subscription: signed again with the current key (serial %llu)",
                       (unsigned long long)s->serial);
        submit_subscription(a, blob, len);
    } else {
        refex_log_warn("subscription: could not sign again with the current key: %s",
                       refex_errname(rc));
    }
    free(blob);
}

/* Our grant g, signed with a key rotated away since: signed again with the current key
 * under a newer serial, kept and sent, so members' copies still verify after the overlap. */
static void resign_grant(agent *a, refex_grant *g)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    g->issued_at_ms = refex_now_ms();
    g->serial = next_serial(a, AGENT_SIGNED_GRANT, g->case_ref, g->member, g->issued_at_ms);
    int rc = refex_grant_sign(g, a->base.keys->sk->sign_sk, &blob, &len);
    agent_signed_obj o = grant_obj(g, blob, len);
    if (rc == REFEX_OK)
        rc = keep_signed_unit(a, &o);
    if (rc == REFEX_OK)
        rc = submit_grant(a, blob, len);
    if (rc == REFEX_OK)
        refex_log_info("grant: case %s: %s signed again with the current key (serial %llu)",
                       g->case_ref, g->member, (unsigned long long)g->serial);
    else
        refex_log_warn("grant: case %s: could not sign again with the current key: %s", g->case_ref,
                       refex_errname(rc));
    free(blob);
}

/* What we signed, as read: the objects to sign again wait until the reading is done. */
typedef struct {
    agent *a;
    refex_subscription *subs;
    size_t n_subs, cap_subs;
    refex_grant *grants;
    size_t n_grants, cap_grants;
} resend_ctx;

/* Appends one item of `size` bytes to *arr (n, cap); 0 if out of memory (the object is
 * signed again on a later welcome). */
static int push(void **arr, size_t *n, size_t *cap, size_t size, const void *item)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        void *grown = realloc(*arr, c * size);
        if (!grown)
            return 0;
        *arr = grown;
        *cap = c;
    }
    memcpy((char *)*arr + *n * size, item, size);
    (*n)++;
    return 1;
}

/* Was blob (a subscription, or a grant if grant) signed by us with a key we have rotated
 * away from: the other set we hold, or the previous key the directory lists? Only that is
 * signed again; anything else in the store was never our word, and is left alone. */
static int signed_by_our_old_key(agent *a, const uint8_t *blob, size_t len, int grant)
{
    const refex_agency *me = refex_directory_find(a->base.dir, a->agency);
    const uint8_t *old[2] = {a->other_keys ? a->other_keys->pub.sign_pk : NULL,
                             me && me->has_prev ? me->prev_sign_pk : NULL};
    refex_subscription s;
    refex_grant g;
    for (int i = 0; i < 2; i++)
        if (old[i] && (grant ? refex_grant_signed_with(blob, len, old[i], &g)
                             : refex_subscription_signed_with(blob, len, old[i], &s)) == REFEX_OK)
            return 1;
    refex_log_error("ALERT %s: one of ours in the store is signed by no key of ours; not signed "
                    "again",
                    grant ? "grant" : "subscription");
    return 0;
}

static int resend_one(void *vctx, const uint8_t *blob, size_t len)
{
    resend_ctx *c = vctx;
    agent *a = c->a;
    refex_subscription s;
    int rc = refex_subscription_signed_with(blob, len, a->base.keys->pub.sign_pk, &s);
    /* Not for a case it has left: the broker would only refuse it. */
    if (rc == REFEX_E_MALFORMED || strcmp(s.agency, a->agency) != 0 ||
        (s.case_ref[0] && !s.unsubscribed && !cases_is_member(a, s.case_ref, a->agency, 0)))
        return 0;
    if (rc == REFEX_OK)
        submit_subscription(a, blob, len);
    else if (signed_by_our_old_key(a, blob, len, 0))
        push((void **)&c->subs, &c->n_subs, &c->cap_subs, sizeof s, &s);
    return 0;
}

static int grant_one(void *vctx, const uint8_t *blob, size_t len)
{
    resend_ctx *c = vctx;
    refex_grant g;
    int rc = refex_grant_signed_with(blob, len, c->a->base.keys->pub.sign_pk, &g);
    if (rc == REFEX_E_BAD_SIGNATURE && strcmp(g.lead, c->a->agency) == 0 &&
        signed_by_our_old_key(c->a, blob, len, 1))
        push((void **)&c->grants, &c->n_grants, &c->cap_grants, sizeof g, &g);
    return 0;
}

/* On every welcome, our own subscriptions go to the broker again (it ignores ones it has),
 * so one made while the broker was away still reaches the publishers. After a key rotation,
 * each subscription and, as a lead, each grant signed with the key rotated away is signed
 * again with the current key first. */
void cases_resend_subscriptions(agent *a)
{
    resend_ctx c;
    memset(&c, 0, sizeof c);
    c.a = a;
    if (agent_store_signed_by(a->store, AGENT_SIGNED_SUBSCRIPTION, a->agency, resend_one, &c) !=
            REFEX_OK ||
        agent_store_signed_by(a->store, AGENT_SIGNED_GRANT, a->agency, grant_one, &c) != REFEX_OK)
        refex_log_debug("subscription: what we signed was not all read");
    for (size_t i = 0; i < c.n_subs; i++)
        resign_subscription(a, &c.subs[i]);
    for (size_t i = 0; i < c.n_grants; i++)
        resign_grant(a, &c.grants[i]);
    free(c.subs);
    free(c.grants);
}

/* A subscribe request from the control socket, checked. */
static int parse_subscription(agent *a, json_t *req, refex_subscription *s, char *detail,
                              size_t dlen)
{
    json_t *types = json_object_get(req, "types");
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    int all = json_is_true(json_object_get(req, "all"));
    snprintf(s->agency, sizeof s->agency, "%s", a->agency);
    snprintf(s->case_ref, sizeof s->case_ref, "%s", case_ref && !all ? case_ref : "");
    s->unsubscribed = json_is_true(json_object_get(req, "unsubscribe"));
    s->issued_at_ms = refex_now_ms();
    if ((!all && (!case_ref || !case_ref[0] || !refex_case_ref_valid(case_ref))) ||
        (all && case_ref) || json_array_size(types) > REFEX_GRANT_MAX_TYPES) {
        snprintf(detail, dlen, "give a case, or all");
        return REFEX_E_INVAL;
    }
    return parse_types(types, s->types, &s->n_types, detail, dlen);
}

/* Signs and keeps our subscription with its audit entry, inside the caller's unit. A
 * subscription to a case we are not a member of is refused, and the refusal audited. */
static int keep_subscription(agent *a, refex_subscription *s, uint8_t **blob, size_t *len,
                             char *detail, size_t dlen)
{
    int rc;
    if (s->case_ref[0] && !s->unsubscribed && !cases_is_member(a, s->case_ref, a->agency, 0)) {
        rc = audit_subscription(a, "reject", refex_errname(REFEX_E_NOT_MEMBER), s->case_ref);
        rc = rc == REFEX_OK ? batch_unit_end(a, 1) : (batch_unit_end(a, 0), rc);
        refex_log_warn("subscription: refused, %s is not a member of case %s", a->agency,
                       s->case_ref);
        snprintf(detail, dlen, "%s is not a member of case %s", a->agency, s->case_ref);
        return REFEX_E_NOT_MEMBER;
    }
    s->serial = next_serial(a, AGENT_SIGNED_SUBSCRIPTION, s->agency, s->case_ref, s->issued_at_ms);
    rc = refex_subscription_sign(s, a->base.keys->sk->sign_sk, blob, len);
    agent_signed_obj o = subscription_obj(s, *blob, *len);
    if (rc == REFEX_OK)
        rc = keep_signed(a, &o);
    if (rc == REFEX_OK)
        rc = audit_subscription(a, s->unsubscribed ? "unsubscribe" : "subscribe", "success",
                                s->case_ref[0] ? s->case_ref : "*");
    return rc == REFEX_OK ? batch_unit_end(a, 1) : (batch_unit_end(a, 0), rc);
}

/* A member subscribes to (or unsubscribes from) one case's updates or all its cases'. */
void cases_cmd_subscribe(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    refex_subscription s;
    char detail[256] = "";
    uint8_t *blob = NULL;
    size_t len = 0;
    memset(&s, 0, sizeof s);
    int rc = parse_subscription(a, req, &s, detail, sizeof detail);
    if (rc == REFEX_OK && (rc = batch_unit_begin(a)) == REFEX_OK)
        rc = keep_subscription(a, &s, &blob, &len, detail, sizeof detail);
    if (rc == REFEX_OK) {
        submit_subscription(a, blob, len);
        refex_log_info("subscription: %s %s (serial %llu)",
                       s.unsubscribed ? "unsubscribed from" : "subscribed to",
                       s.case_ref[0] ? s.case_ref : "all cases", (unsigned long long)s.serial);
    }
    free(blob);
    batch_reply(a, rid, rid_len,
                rc == REFEX_OK ? json_pack("{s:b, s:s, s:b, s:I}", "ok", 1, "case",
                                           s.case_ref[0] ? s.case_ref : "*", "subscribed",
                                           !s.unsubscribed, "serial", (json_int_t)s.serial)
                               : control_error(rc, detail));
}

/* ---- membership ---------------------------------------------------------------------- */

typedef struct {
    agent *a;
    const char *case_ref;
    grant_fn fn;
    void *ctx;
} grant_walk;

static int verified_grant(void *vctx, const uint8_t *blob, size_t len)
{
    grant_walk *w = vctx;
    refex_grant g;
    /* Checked again on every use: the directory may have changed since it arrived. */
    int ok = refex_grant_verify_packed(blob, len, w->a->base.dir, &g) == REFEX_OK &&
             strcmp(g.case_ref, w->case_ref) == 0;
    return ok && w->fn(w->ctx, &g);
}

/* The case's verified grants; fn returns nonzero to stop. */
static void each_grant(agent *a, const char *case_ref, grant_fn fn, void *ctx)
{
    grant_walk w = {a, case_ref, fn, ctx};
    if (agent_store_grants_each(a->store, case_ref, verified_grant, &w) != REFEX_OK)
        refex_log_debug("grant: the grants of case %s were not all read", case_ref);
}

typedef struct {
    const char *agency;
    int type;
    int64_t now;
    int found;
    char lead[REFEX_ID_MAX];
} member_q;

static int member_check(void *vctx, const refex_grant *g)
{
    member_q *q = vctx;
    snprintf(q->lead, sizeof q->lead, "%s", g->lead);
    if (strcmp(g->lead, q->agency) == 0 ||
        (strcmp(g->member, q->agency) == 0 && refex_grant_allows(g, q->now, q->type)))
        q->found = 1;
    return 0;
}

/* Is agency the case's lead, or a member allowed updates of `type` (0: any)? */
int cases_is_member(agent *a, const char *case_ref, const char *agency, int type)
{
    member_q q = {agency, type, refex_now_ms(), 0, ""};
    each_grant(a, case_ref, member_check, &q);
    return q.found;
}

typedef struct {
    agent *a;
    int type;
    int64_t now;
    const refex_agency **out;
    size_t n, cap;
    char lead[REFEX_ID_MAX];
} recipients_q;

static void add_recipient(recipients_q *q, const char *id)
{
    const refex_agency *r = refex_directory_find(q->a->base.dir, id);
    if (!r || strcmp(id, q->a->agency) == 0 || q->n == q->cap)
        return;
    for (size_t i = 0; i < q->n; i++)
        if (q->out[i] == r)
            return;
    q->out[q->n++] = r;
}

static int recipient_of(void *vctx, const refex_grant *g)
{
    recipients_q *q = vctx;
    snprintf(q->lead, sizeof q->lead, "%s", g->lead);
    if (refex_grant_allows(g, q->now, q->type) &&
        cases_is_subscribed(q->a, g->member, g->case_ref, q->type))
        add_recipient(q, g->member);
    return 0;
}

/* A case update goes to every member whose grant, signed by the lead, is in force for its
 * type and whose own signed subscription asks for it, and to the lead: computed here, from
 * verified grants and subscriptions, never taken from the broker. */
int cases_recipients(agent *a, const char *case_ref, int type, const refex_agency **out, size_t cap,
                     size_t *n)
{
    recipients_q q = {a, type, refex_now_ms(), out, 0, cap, ""};
    if (!cases_is_member(a, case_ref, a->agency, 0))
        return REFEX_E_NOT_MEMBER;
    each_grant(a, case_ref, recipient_of, &q);
    if (q.lead[0])
        add_recipient(&q, q.lead);
    *n = q.n;
    return q.n ? REFEX_OK : REFEX_E_INVAL;
}
