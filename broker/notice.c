/* Case grants and subscriptions at the broker: a lead's GRANT and a member's SUBSCRIBE are
 * recorded (cases.c) and their signed bytes relayed, unchanged, to the parties of the case
 * that need them. The broker cannot forge either: it holds no lead's or member's key. Not for
 * deciding membership (cases.c) or checking case updates (queue.c). */
#include <stdio.h>
#include <stdlib.h>

#include "broker.h"
#include "codec.h"
#include "link.h"
#include "log.h"

/* What a signed object travels as: its frame kind, and a name for logs. */
typedef struct {
    Refex__V1__Frame__KindCase kind;
    const char *what;
} notice_kind;

static const notice_kind GRANT = {REFEX__V1__FRAME__KIND_GRANT_NOTICE, "grant"};
static const notice_kind SUBSCRIPTION = {REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE,
                                         "subscription"};

/* Sends one signed object (packed) to an agency, if it is online: it gets every grant and
 * subscription of its cases after its next HELLO anyway. */
static void notice_send(broker *b, const notice_kind *k, const char *agency, const uint8_t *blob,
                        size_t len)
{
    session *s = session_by_agency(b, agency);
    if (!s)
        return;
    int rc = session_send_packed(b, s, k->kind, blob, len);
    if (rc != REFEX_OK && rc != REFEX_E_MALFORMED)
        refex_log_debug("%s: could not notify %s now", k->what, agency);
}

/* Context of the cases_* walks: send `blob` to each agency walked, or each blob walked to
 * `agency`; case_ref for the walk over a case's parties. */
typedef struct {
    broker *b;
    const notice_kind *kind;
    const char *agency;
    const uint8_t *blob;
    size_t len;
    const char *case_ref;
} notice_ctx;

static void blob_to_agency(void *vctx, const uint8_t *blob, size_t len)
{
    notice_ctx *n = vctx;
    notice_send(n->b, n->kind, n->agency, blob, len);
}

static void agency_gets_blob(void *vctx, const char *agency)
{
    notice_ctx *n = vctx;
    notice_send(n->b, n->kind, agency, n->blob, n->len);
}

/* Every party of a case gets the case's relevant subscriptions. */
static void party_gets_case_subscriptions(void *vctx, const char *agency)
{
    notice_ctx *n = vctx;
    notice_ctx one = {n->b, &SUBSCRIPTION, agency, NULL, 0, NULL};
    cases_subscriptions_of(n->b->cases, n->case_ref, blob_to_agency, &one);
}

/* An all-cases subscription: every party of every case of the subscriber hears of it. */
static void case_parties_get_blob(void *vctx, const char *case_ref)
{
    notice_ctx *n = vctx;
    cases_current_parties(n->b->cases, case_ref, agency_gets_blob, n);
}

void notice_welcome(broker *b, const char *agency)
{
    notice_ctx grants = {b, &GRANT, agency, NULL, 0, NULL};
    notice_ctx subs = {b, &SUBSCRIPTION, agency, NULL, 0, NULL};
    cases_grants_for(b->cases, agency, blob_to_agency, &grants);
    cases_subscriptions_for(b->cases, agency, blob_to_agency, &subs);
}

/* A grant from a case's lead: record it, tell every party of the case, and give a new member
 * the grants of its fellow members. */
void notice_handle_grant(broker *b, const peer *p, const Refex__V1__Frame *f)
{
    const Refex__V1__GrantSubmit *gs = f->grant;
    char why[256] = "";
    refex_grant g;
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = cases_submit(b->cases, b->base.dir, p->agency, gs->grant, &g, why, sizeof why);
    if (rc == REFEX_E_DUPLICATE) {
        refex_log_debug("grant: %s resent an older grant for %s", p->agency, why);
        return;
    }
    if (rc != REFEX_OK) {
        if (broker_may_warn(b, p->agency))
            refex_log_warn("grant: from %s refused: %s (%s)", p->agency, refex_errname(rc), why);
        refex_link_send_error(b->router, p->rid, p->rid_len, rc, why);
        return;
    }
    refex_log_info("grant: case %s: %s %s by %s (serial %llu)", g.case_ref, g.member,
                   g.revoked ? "revoked" : "granted", g.lead, (unsigned long long)g.serial);
    if (refex_pb_pack(&gs->grant->base, &blob, &len) != REFEX_OK)
        return;
    notice_ctx all = {b, &GRANT, NULL, blob, len, NULL};
    cases_parties(b->cases, g.case_ref, agency_gets_blob, &all);
    if (!g.revoked) {
        notice_ctx one = {b, &GRANT, g.member, NULL, 0, NULL};
        cases_grants_of(b->cases, g.case_ref, blob_to_agency, &one);
    }
    /* Publishers need the (new) parties' subscriptions too. */
    notice_ctx subs = {b, &SUBSCRIPTION, NULL, NULL, 0, g.case_ref};
    cases_current_parties(b->cases, g.case_ref, party_gets_case_subscriptions, &subs);
    free(blob);
}

/* A member's subscription: record it, and tell the publishers of the cases it covers. */
void notice_handle_subscribe(broker *b, const peer *p, const Refex__V1__Frame *f)
{
    const Refex__V1__SubscribeSubmit *ss = f->subscribe;
    char why[256] = "";
    refex_subscription sub;
    uint8_t *blob = NULL;
    size_t len = 0;
    if (refex_pb_pack(&ss->subscription->base, &blob, &len) != REFEX_OK)
        return;
    int rc = cases_subscribe(b->cases, b->base.dir, p->agency, blob, len, &sub, why, sizeof why);
    if (rc == REFEX_OK) {
        refex_log_info("subscription: %s %s %s", p->agency,
                       sub.unsubscribed ? "unsubscribed from" : "subscribed to",
                       sub.case_ref[0] ? sub.case_ref : "all its cases");
        notice_ctx n = {b, &SUBSCRIPTION, NULL, blob, len, NULL};
        if (sub.case_ref[0])
            cases_current_parties(b->cases, sub.case_ref, agency_gets_blob, &n);
        else
            cases_of(b->cases, p->agency, case_parties_get_blob, &n);
    } else if (rc != REFEX_E_DUPLICATE) {
        if (broker_may_warn(b, p->agency))
            refex_log_warn("subscription: from %s refused: %s (%s)", p->agency, refex_errname(rc),
                           why);
        refex_link_send_error(b->router, p->rid, p->rid_len, rc, why);
    }
    free(blob);
}
