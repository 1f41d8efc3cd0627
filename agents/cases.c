/* Cases: grants of membership signed by a case's lead, members' own subscriptions, and
 * the membership checks and recipient lists computed from them. Not the wire transport
 * of grants (the broker relays them) nor their format (lib/grant.c). */
#include "agent.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "audit.h"
#include "audit_tree.h"
#include "body.h"
#include "checkpoint.h"
#include "codec.h"
#include "db.h"
#include "directory.h"
#include "envelope.h"
#include "grant.h"
#include "keys.h"
#include "link.h"
#include "log.h"
#include "receipt.h"
#include "util.h"

typedef int (*grant_fn)(void *ctx, const refex_grant *g);
static void each_grant(agent *a, const char *case_ref, grant_fn fn, void *ctx);
static int store_grant(agent *a, const refex_grant *g, const uint8_t *blob, size_t len);

void cases_cmd_grant(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    refex_grant g;
    char detail[256] = "";
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = REFEX_OK;
    json_t *types = json_object_get(req, "types"), *t;
    size_t i;
    memset(&g, 0, sizeof g);
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    int open = json_is_true(json_object_get(req, "open"));
    const char *member = open ? a->agency : json_string_value(json_object_get(req, "member"));
    snprintf(g.case_ref, sizeof g.case_ref, "%s", case_ref ? case_ref : "");
    snprintf(g.lead, sizeof g.lead, "%s", a->agency);
    snprintf(g.member, sizeof g.member, "%s", member ? member : "");
    g.revoked = json_is_true(json_object_get(req, "revoke"));
    g.valid_until_ms = json_integer_value(json_object_get(req, "until_ms"));
    g.issued_at_ms = refex_now_ms();
    if (strcmp(a->base.keys->pub.role, REFEX_GRANT_LEAD_ROLE) != 0) {
        rc = REFEX_E_NOT_MEMBER;
        snprintf(detail, sizeof detail, "only a %s agency leads cases", REFEX_GRANT_LEAD_ROLE);
        goto out;
    }
    if (!case_ref || !case_ref[0] || !refex_case_ref_valid(case_ref) || !member ||
        !refex_directory_find(a->base.dir, member) || (strcmp(member, a->agency) == 0 && !open) ||
        json_array_size(types) > REFEX_GRANT_MAX_TYPES) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail,
                 "give a case, and a member from the directory other "
                 "than this agency");
        goto out;
    }
    json_array_foreach(types, i, t)
    {
        const char *name = json_string_value(t);
        const ProtobufCEnumValue *v = name ? protobuf_c_enum_descriptor_get_value_by_name(
                                                 &refex__v1__case_update_type__descriptor, name)
                                           : NULL;
        if (!v || v->value == 0) {
            rc = REFEX_E_INVAL;
            snprintf(detail, sizeof detail, "unknown update type");
            goto out;
        }
        g.types[g.n_types++] = v->value;
    }
    /* Serials only grow: the time in ms, or one more than the last one held. */
    int64_t last = 0;
    sqlite3_stmt *st = NULL;
    if (refex_db_prepare(a->db, "SELECT serial FROM case_grants WHERE case_ref = ? AND member = ?",
                         &st) == REFEX_OK) {
        sqlite3_bind_text(st, 1, g.case_ref, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, g.member, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            last = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    g.serial = (uint64_t)(g.issued_at_ms > last ? g.issued_at_ms : last + 1);
    if ((rc = refex_grant_sign(&g, a->base.keys->sk->sign_sk, &blob, &len)) != REFEX_OK)
        goto out;
    if ((rc = batch_unit_begin(a)) != REFEX_OK)
        goto out;
    rc = store_grant(a, &g, blob, len);
    rc = rc == REFEX_OK ? batch_unit_end(a, 1) : (batch_unit_end(a, 0), rc);
    if (rc != REFEX_OK)
        goto out;
    Refex__V1__SignedGrant *sg = refex__v1__signed_grant__unpack(NULL, len, blob);
    if (sg) {
        Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
        Refex__V1__GrantSubmit gs = REFEX__V1__GRANT_SUBMIT__INIT;
        gs.grant = sg;
        f.kind_case = REFEX__V1__FRAME__KIND_GRANT;
        f.grant = &gs;
        rc = batch_link_out(a, &f); /* after commit, with the rest of the batch */
        refex__v1__signed_grant__free_unpacked(sg, NULL);
    }
    refex_log_info("grant: case %s: %s %s (serial %llu)", g.case_ref, g.member,
                   g.revoked ? "revoked" : "granted", (unsigned long long)g.serial);
out:
    free(blob);
    batch_reply(a, rid, rid_len,
                rc == REFEX_OK ? json_pack("{s:b, s:s, s:s, s:I}", "ok", 1, "case", g.case_ref,
                                           "member", g.member, "serial", (json_int_t)g.serial)
                               : control_error(rc, detail));
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

/* ---- cases -------------------------------------------------------------------------- */

/* Stores a verified grant if it is newer than the one held for (case, member), and only if
 * it names the lead already known for the case. Inside the caller's unit. */
static int store_grant(agent *a, const refex_grant *g, const uint8_t *blob, size_t len)
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_prepare(
        a->db, "SELECT 1 FROM case_grants WHERE case_ref = ? AND lead <> ? LIMIT 1", &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_text(st, 1, g->case_ref, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, g->lead, -1, SQLITE_STATIC);
    int other_lead = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (other_lead) {
        refex_log_error("ALERT grant: case %s already has another lead; grant by %s ignored",
                        g->case_ref, g->lead);
        return REFEX_E_NOT_MEMBER;
    }
    rc = refex_db_prepare(a->db,
                          "INSERT INTO case_grants(case_ref, member, lead, serial, grant)"
                          " VALUES (?,?,?,?,?) ON CONFLICT (case_ref, member) DO UPDATE SET"
                          " serial = excluded.serial, grant = excluded.grant"
                          " WHERE excluded.serial > case_grants.serial",
                          &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_text(st, 1, g->case_ref, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, g->member, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, g->lead, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)g->serial);
    sqlite3_bind_blob(st, 5, blob, (int)len, SQLITE_STATIC);
    rc = refex_db_err(sqlite3_step(st));
    sqlite3_finalize(st);
    return rc;
}

void cases_grant_notice(agent *a, const Refex__V1__SignedGrant *sg)
{
    refex_grant g;
    int rc = refex_grant_verify(sg, a->base.dir, &g);
    if (rc != REFEX_OK) {
        refex_log_warn("grant: a grant from the broker does not verify (%s); ignored",
                       refex_errname(rc));
        return;
    }
    size_t len = refex__v1__signed_grant__get_packed_size(sg);
    uint8_t *blob = malloc(len ? len : 1);
    if (!blob || batch_unit_begin(a) != REFEX_OK) {
        free(blob);
        return;
    }
    refex__v1__signed_grant__pack(sg, blob);
    rc = store_grant(a, &g, blob, len);
    if (rc == REFEX_OK)
        rc = batch_unit_end(a, 1);
    else
        batch_unit_end(a, 0);
    free(blob);
    if (rc == REFEX_OK)
        refex_log_info("grant: case %s: %s %s by %s", g.case_ref, g.member,
                       g.revoked ? "revoked" : "granted", g.lead);
}

/* ---- subscriptions ------------------------------------------------------------------ */

/* Keeps a verified subscription if it is newer than the one held. Inside the caller's unit. */
static int store_subscription(agent *a, const refex_subscription *s, const uint8_t *blob,
                              size_t len)
{
    sqlite3_stmt *st = NULL;
    int rc =
        refex_db_prepare(a->db,
                         "INSERT INTO case_subscriptions(agency, case_ref, serial, subscription)"
                         " VALUES (?,?,?,?) ON CONFLICT (agency, case_ref) DO UPDATE SET"
                         " serial = excluded.serial, subscription = excluded.subscription"
                         " WHERE excluded.serial > case_subscriptions.serial",
                         &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_text(st, 1, s->agency, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->case_ref, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)s->serial);
    sqlite3_bind_blob(st, 4, blob, (int)len, SQLITE_STATIC);
    rc = refex_db_err(sqlite3_step(st));
    sqlite3_finalize(st);
    return rc;
}

void cases_subscription_notice(agent *a, const Refex__V1__SignedSubscription *ss)
{
    refex_subscription s;
    size_t len = refex__v1__signed_subscription__get_packed_size(ss);
    uint8_t *blob = malloc(len ? len : 1);
    if (!blob)
        return;
    refex__v1__signed_subscription__pack(ss, blob);
    int rc = refex_subscription_verify_packed(blob, len, a->base.dir, &s);
    if (rc != REFEX_OK) {
        refex_log_warn("subscription: one from the broker does not verify (%s); ignored",
                       refex_errname(rc));
    } else if ((rc = batch_unit_begin(a)) == REFEX_OK) {
        rc = store_subscription(a, &s, blob, len);
        rc = rc == REFEX_OK ? batch_unit_end(a, 1) : (batch_unit_end(a, 0), rc);
        if (rc == REFEX_OK)
            refex_log_info("subscription: %s %s %s", s.agency,
                           s.unsubscribed ? "unsubscribed from" : "subscribed to",
                           s.case_ref[0] ? s.case_ref : "all its cases");
    }
    free(blob);
}

/* Has `agency` asked, in a subscription it signed, for updates of `type` in the case? A
 * subscription to the case itself decides before one to all its cases. */
int cases_is_subscribed(agent *a, const char *agency, const char *case_ref, int type)
{
    sqlite3_stmt *st = NULL;
    int wants = 0;
    if (refex_db_prepare(a->db,
                         "SELECT subscription FROM case_subscriptions WHERE agency = ?"
                         " AND case_ref IN (?, '') ORDER BY case_ref DESC",
                         &st) != REFEX_OK)
        return 0;
    sqlite3_bind_text(st, 1, agency, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, case_ref, -1, SQLITE_STATIC);
    /* The first row decides: one that no longer verifies (say, after a key change) means
     * "not subscribed", never a fall back to the all-cases one against the member's wish. */
    if (sqlite3_step(st) == SQLITE_ROW) {
        refex_subscription s;
        wants = refex_subscription_verify_packed(sqlite3_column_blob(st, 0),
                                                 (size_t)sqlite3_column_bytes(st, 0), a->base.dir,
                                                 &s) == REFEX_OK &&
                strcmp(s.agency, agency) == 0 && refex_subscription_wants(&s, case_ref, type);
    }
    sqlite3_finalize(st);
    return wants;
}

static int audit_subscription(agent *a, const char *event, const char *outcome,
                              const char *case_ref)
{
    refex_audit_entry ae;
    journal_fill(a, &ae, event, outcome, "", "", REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, case_ref, "",
                 NULL);
    return refex_audit_append(a->db, &ae, NULL);
}

static void submit_subscription(agent *a, const uint8_t *blob, size_t len)
{
    Refex__V1__SignedSubscription *ss = refex__v1__signed_subscription__unpack(NULL, len, blob);
    if (!ss)
        return;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__SubscribeSubmit sub = REFEX__V1__SUBSCRIBE_SUBMIT__INIT;
    sub.subscription = ss;
    f.kind_case = REFEX__V1__FRAME__KIND_SUBSCRIBE;
    f.subscribe = &sub;
    if (batch_link_out(a, &f) != REFEX_OK) /* after commit, with the rest of the batch */
        refex_log_debug("subscription: not sent now; sent again when next welcomed");
    refex__v1__signed_subscription__free_unpacked(ss, NULL);
}

/* On every welcome, our own subscriptions go to the broker again (it ignores ones it has),
 * so one made while the broker was away still reaches the publishers. */
void cases_resend_subscriptions(agent *a)
{
    sqlite3_stmt *st = NULL;
    if (refex_db_prepare(a->db, "SELECT subscription FROM case_subscriptions WHERE agency = ?",
                         &st) != REFEX_OK)
        return;
    sqlite3_bind_text(st, 1, a->agency, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        refex_subscription s;
        const uint8_t *blob = sqlite3_column_blob(st, 0);
        size_t len = (size_t)sqlite3_column_bytes(st, 0);
        /* Not for a case it has left: the broker would only refuse it. */
        if (refex_subscription_verify_packed(blob, len, a->base.dir, &s) != REFEX_OK ||
            (s.case_ref[0] && !s.unsubscribed && !cases_is_member(a, s.case_ref, a->agency, 0)))
            continue;
        submit_subscription(a, blob, len);
    }
    sqlite3_finalize(st);
}

/* A member subscribes to (or unsubscribes from) one case's updates or all its cases'. */
void cases_cmd_subscribe(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    refex_subscription s;
    char detail[256] = "";
    uint8_t *blob = NULL;
    size_t len = 0, i;
    int rc = REFEX_OK;
    json_t *types = json_object_get(req, "types"), *t;
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    int all = json_is_true(json_object_get(req, "all"));
    memset(&s, 0, sizeof s);
    snprintf(s.agency, sizeof s.agency, "%s", a->agency);
    snprintf(s.case_ref, sizeof s.case_ref, "%s", case_ref && !all ? case_ref : "");
    s.unsubscribed = json_is_true(json_object_get(req, "unsubscribe"));
    s.issued_at_ms = refex_now_ms();
    if ((!all && (!case_ref || !case_ref[0] || !refex_case_ref_valid(case_ref))) ||
        (all && case_ref) || json_array_size(types) > REFEX_GRANT_MAX_TYPES) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail, "give a case, or all");
        goto out;
    }
    json_array_foreach(types, i, t)
    {
        const char *name = json_string_value(t);
        const ProtobufCEnumValue *v = name ? protobuf_c_enum_descriptor_get_value_by_name(
                                                 &refex__v1__case_update_type__descriptor, name)
                                           : NULL;
        if (!v || v->value == 0) {
            rc = REFEX_E_INVAL;
            snprintf(detail, sizeof detail, "unknown update type");
            goto out;
        }
        s.types[s.n_types++] = v->value;
    }
    if ((rc = batch_unit_begin(a)) != REFEX_OK)
        goto out;
    if (s.case_ref[0] && !s.unsubscribed && !cases_is_member(a, s.case_ref, a->agency, 0)) {
        rc = audit_subscription(a, "reject", refex_errname(REFEX_E_NOT_MEMBER), s.case_ref);
        rc = rc == REFEX_OK ? batch_unit_end(a, 1) : (batch_unit_end(a, 0), rc);
        refex_log_warn("subscription: refused, %s is not a member of case %s", a->agency,
                       s.case_ref);
        snprintf(detail, sizeof detail, "%s is not a member of case %s", a->agency, s.case_ref);
        rc = REFEX_E_NOT_MEMBER;
        goto out;
    }
    /* Serials only grow: the time in ms, or one more than the last one held. */
    int64_t last = 0;
    sqlite3_stmt *st = NULL;
    if (refex_db_prepare(a->db,
                         "SELECT serial FROM case_subscriptions WHERE agency = ? AND case_ref = ?",
                         &st) == REFEX_OK) {
        sqlite3_bind_text(st, 1, s.agency, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, s.case_ref, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            last = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    s.serial = (uint64_t)(s.issued_at_ms > last ? s.issued_at_ms : last + 1);
    rc = refex_subscription_sign(&s, a->base.keys->sk->sign_sk, &blob, &len);
    if (rc == REFEX_OK)
        rc = store_subscription(a, &s, blob, len);
    if (rc == REFEX_OK)
        rc = audit_subscription(a, s.unsubscribed ? "unsubscribe" : "subscribe", "success",
                                s.case_ref[0] ? s.case_ref : "*");
    rc = rc == REFEX_OK ? batch_unit_end(a, 1) : (batch_unit_end(a, 0), rc);
    if (rc != REFEX_OK)
        goto out;
    submit_subscription(a, blob, len);
    refex_log_info("subscription: %s %s (serial %llu)",
                   s.unsubscribed ? "unsubscribed from" : "subscribed to",
                   s.case_ref[0] ? s.case_ref : "all cases", (unsigned long long)s.serial);
out:
    free(blob);
    batch_reply(a, rid, rid_len,
                rc == REFEX_OK ? json_pack("{s:b, s:s, s:b, s:I}", "ok", 1, "case",
                                           s.case_ref[0] ? s.case_ref : "*", "subscribed",
                                           !s.unsubscribed, "serial", (json_int_t)s.serial)
                               : control_error(rc, detail));
}

/* The case's verified grants, as (member, grant); fn returns nonzero to stop. */

static void each_grant(agent *a, const char *case_ref, grant_fn fn, void *ctx)
{
    sqlite3_stmt *st = NULL;
    if (refex_db_prepare(a->db, "SELECT grant FROM case_grants WHERE case_ref = ?", &st) !=
        REFEX_OK)
        return;
    sqlite3_bind_text(st, 1, case_ref, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        refex_grant g;
        /* Checked again on every use: the directory may have changed since it arrived. */
        int ok = refex_grant_verify_packed(sqlite3_column_blob(st, 0),
                                           (size_t)sqlite3_column_bytes(st, 0), a->base.dir,
                                           &g) == REFEX_OK &&
                 strcmp(g.case_ref, case_ref) == 0;
        if (ok && fn(ctx, &g))
            break;
    }
    sqlite3_finalize(st);
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
