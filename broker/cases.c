/* Case membership at the broker, in its own SQLite file or in the PostgreSQL database of the
 * broker's store (shared by every node on it; a grant is checked and recorded under a lock
 * on its case). The broker cannot forge or alter a
 * grant (it has no lead's key); it only keeps the latest one per (case, member). What an
 * agency can make it store is bounded: grants only for cases it leads, subscriptions only
 * for cases it is or was a party of, and at most max_objects of each per agency. */
#include "cases.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "sqldb.h"
#include "util.h"

struct cases {
    refex_sql *db;
    uint64_t max_objects; /* grants per lead, subscriptions per agency */
};

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS case_leads (case_ref TEXT PRIMARY KEY, lead TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS case_grants ("
    " case_ref TEXT NOT NULL, member TEXT NOT NULL, serial INTEGER NOT NULL,"
    " valid_until_ms INTEGER NOT NULL, revoked INTEGER NOT NULL, grant BLOB NOT NULL,"
    " PRIMARY KEY (case_ref, member));"
    "CREATE INDEX IF NOT EXISTS case_grants_member ON case_grants(member);"
    "CREATE INDEX IF NOT EXISTS case_leads_lead ON case_leads(lead);"
    "CREATE TABLE IF NOT EXISTS case_subscriptions ("
    " agency TEXT NOT NULL, case_ref TEXT NOT NULL, serial INTEGER NOT NULL,"
    " subscription BLOB NOT NULL, PRIMARY KEY (agency, case_ref));"
    /* The cases an agency is a party of: led, or holding a grant (even a revoked one). */
    "CREATE VIEW IF NOT EXISTS case_parties AS"
    " SELECT case_ref, lead AS agency FROM case_leads"
    " UNION SELECT case_ref, member AS agency FROM case_grants;"
    /* The same without revoked members: who hears of subscriptions. */
    "CREATE VIEW IF NOT EXISTS case_current_parties AS"
    " SELECT case_ref, lead AS agency FROM case_leads"
    " UNION SELECT case_ref, member AS agency FROM case_grants WHERE revoked = 0;";

static const char *PG_SCHEMA =
    "CREATE TABLE IF NOT EXISTS case_leads (case_ref TEXT PRIMARY KEY, lead TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS case_grants ("
    " case_ref TEXT NOT NULL, member TEXT NOT NULL, serial BIGINT NOT NULL,"
    " valid_until_ms BIGINT NOT NULL, revoked BIGINT NOT NULL, \"grant\" BYTEA NOT NULL,"
    " PRIMARY KEY (case_ref, member));"
    "CREATE INDEX IF NOT EXISTS case_grants_member ON case_grants(member);"
    "CREATE INDEX IF NOT EXISTS case_leads_lead ON case_leads(lead);"
    "CREATE TABLE IF NOT EXISTS case_subscriptions ("
    " agency TEXT NOT NULL, case_ref TEXT NOT NULL, serial BIGINT NOT NULL,"
    " subscription BYTEA NOT NULL, PRIMARY KEY (agency, case_ref));"
    /* The cases an agency is a party of: led, or holding a grant (even a revoked one). */
    "CREATE OR REPLACE VIEW case_parties AS"
    " SELECT case_ref, lead AS agency FROM case_leads"
    " UNION SELECT case_ref, member AS agency FROM case_grants;"
    /* The same without revoked members: who hears of subscriptions. */
    "CREATE OR REPLACE VIEW case_current_parties AS"
    " SELECT case_ref, lead AS agency FROM case_leads"
    " UNION SELECT case_ref, member AS agency FROM case_grants WHERE revoked = 0;";

int cases_open(const char *path, uint64_t max_objects, cases **out, char *err, size_t errlen)
{
    cases *c = calloc(1, sizeof *c);
    int rc;
    *out = NULL;
    if (!c)
        return REFEX_E_NOMEM;
    c->max_objects = max_objects;
    if ((rc = refex_sql_open(path, &c->db, err, errlen)) != REFEX_OK ||
        (rc = refex_sql_schema(c->db, SCHEMA, PG_SCHEMA)) != REFEX_OK) {
        cases_close(&c);
        return rc;
    }
    *out = c;
    return REFEX_OK;
}

void cases_close(cases **c_p)
{
    if (!c_p || !*c_p)
        return;
    refex_sql_close(&(*c_p)->db);
    free(*c_p);
    *c_p = NULL;
}

static int lead_of(cases *c, const char *case_ref, char lead[REFEX_ID_MAX])
{
    refex_sql_stmt *st = NULL;
    int found = 0;
    if (refex_sql_prepare(c->db, "SELECT lead FROM case_leads WHERE case_ref = ?", &st) != REFEX_OK)
        return -1;
    refex_sql_bind_text(st, 1, case_ref);
    if (refex_sql_step(st) == REFEX_SQL_ROW) {
        snprintf(lead, REFEX_ID_MAX, "%s", refex_sql_text(st, 0));
        found = 1;
    }
    refex_sql_finalize(&st);
    return found;
}

/* Whether storing one more object would pass the cap: sql gives 1 when the agency (?1)
 * already holds max_objects (?4) and (?2, ?3) would be a new row. -1 on a database error. */
static int over_cap(cases *c, const char *sql, const char *agency, const char *a2, const char *a3)
{
    refex_sql_stmt *st = NULL;
    int over = -1;
    if (refex_sql_prepare(c->db, sql, &st) != REFEX_OK)
        return -1;
    refex_sql_bind_text(st, 1, agency);
    refex_sql_bind_text(st, 2, a2);
    if (a3)
        refex_sql_bind_text(st, 3, a3);
    refex_sql_bind_int(st, 4, (int64_t)c->max_objects);
    if (refex_sql_step(st) == REFEX_SQL_ROW)
        over = refex_sql_int(st, 0) != 0;
    refex_sql_finalize(&st);
    return over;
}

/* 1, with why filled, if one more object of `what` from agency cannot be stored (the cap is
 * reached, or the count cannot be read). */
static int cap_reached(cases *c, const char *sql, const char *agency, const char *a2,
                       const char *a3, const char *what, char *why, size_t whylen)
{
    int over = over_cap(c, sql, agency, a2, a3);
    if (over > 0)
        snprintf(why, whylen, "the broker holds %llu %s %s, its limit",
                 (unsigned long long)c->max_objects, what, agency);
    else if (over < 0)
        snprintf(why, whylen, "the broker's case store cannot be read");
    return over != 0;
}

static const char GRANTS_OVER_CAP[] =
    "SELECT (SELECT count(*) FROM case_grants WHERE case_ref IN"
    " (SELECT case_ref FROM case_leads WHERE lead = ?1)) >= ?4 AND NOT EXISTS"
    " (SELECT 1 FROM case_grants WHERE case_ref = ?2 AND member = ?3)";
static const char SUBSCRIPTIONS_OVER_CAP[] =
    "SELECT (SELECT count(*) FROM case_subscriptions WHERE agency = ?1) >= ?4 AND NOT EXISTS"
    " (SELECT 1 FROM case_subscriptions WHERE agency = ?1 AND case_ref = ?2)";

/* The checks against what is held and the writes, in the transaction cases_submit holds the
 * case's lock in. */
static int submit_locked(cases *c, const char *agency, const Refex__V1__SignedGrant *sg,
                         const refex_grant *g, char *why, size_t whylen)
{
    char lead[REFEX_ID_MAX];
    refex_sql_stmt *st = NULL;
    int rc = REFEX_OK;
    int have = lead_of(c, g->case_ref, lead);
    if (have < 0)
        return REFEX_E_STORE;
    if (have && strcmp(lead, g->lead) != 0) {
        snprintf(why, whylen, "case %s is led by another agency", g->case_ref);
        return REFEX_E_NOT_MEMBER;
    }
    if (cap_reached(c, GRANTS_OVER_CAP, agency, g->case_ref, g->member, "grants of cases led by",
                    why, whylen))
        return REFEX_E_STORE;
    if (!have) {
        rc = refex_sql_prepare(c->db, "INSERT INTO case_leads(case_ref, lead) VALUES (?,?)", &st);
        if (rc == REFEX_OK) {
            refex_sql_bind_text(st, 1, g->case_ref);
            refex_sql_bind_text(st, 2, g->lead);
            rc = refex_sql_step(st) == REFEX_SQL_DONE ? REFEX_OK : REFEX_E_STORE;
            refex_sql_finalize(&st);
        }
    }
    if (rc == REFEX_OK)
        rc =
            refex_sql_prepare(c->db,
                              "INSERT INTO case_grants(case_ref, member, serial, valid_until_ms,"
                              " revoked, \"grant\") VALUES (?,?,?,?,?,?)"
                              " ON CONFLICT (case_ref, member) DO UPDATE SET"
                              " serial = excluded.serial, valid_until_ms = excluded.valid_until_ms,"
                              " revoked = excluded.revoked, \"grant\" = excluded.\"grant\""
                              " WHERE excluded.serial > case_grants.serial",
                              &st);
    int changed = 0;
    if (rc == REFEX_OK) {
        refex_sql_bind_text(st, 1, g->case_ref);
        refex_sql_bind_text(st, 2, g->member);
        refex_sql_bind_int(st, 3, (int64_t)g->serial);
        refex_sql_bind_int(st, 4, g->valid_until_ms);
        refex_sql_bind_int(st, 5, g->revoked);
        uint8_t *blob = NULL;
        size_t len = 0;
        if ((rc = refex_pb_pack(&sg->base, &blob, &len)) == REFEX_OK) {
            refex_sql_bind_blob(st, 6, blob, len);
            free(blob);
            rc = refex_sql_step(st) == REFEX_SQL_DONE ? REFEX_OK : REFEX_E_STORE;
            changed = refex_sql_changes(st) > 0;
        }
        refex_sql_finalize(&st);
    }
    if (rc != REFEX_OK)
        return REFEX_E_STORE;
    if (!changed) {
        snprintf(why, whylen, "a grant with this or a newer serial is already held");
        return REFEX_E_DUPLICATE;
    }
    return REFEX_OK;
}

int cases_submit(cases *c, const refex_directory *dir, const char *agency,
                 const Refex__V1__SignedGrant *sg, refex_grant *g, char *why, size_t whylen)
{
    char key[REFEX_ID_MAX + 160];
    int rc = refex_grant_verify(sg, dir, g);
    if (rc != REFEX_OK) {
        snprintf(why, whylen, "grant does not verify (%s)", refex_errname(rc));
        return rc;
    }
    if (strcmp(g->lead, agency) != 0) {
        snprintf(why, whylen, "a grant can only be submitted by its lead");
        return REFEX_E_SENDER_MISMATCH;
    }
    snprintf(key, sizeof key, "case %s", g->case_ref);
    if (refex_sql_begin(c->db) != REFEX_OK || refex_sql_lock(c->db, key) != REFEX_OK) {
        refex_sql_rollback(c->db);
        snprintf(why, whylen, "the broker's case store is not available");
        return REFEX_E_STORE;
    }
    rc = submit_locked(c, agency, sg, g, why, whylen);
    if (rc == REFEX_OK && refex_sql_commit(c->db) != REFEX_OK)
        rc = REFEX_E_STORE;
    if (rc != REFEX_OK)
        refex_sql_rollback(c->db);
    return rc;
}

int cases_is_member(cases *c, const char *case_ref, const char *agency, int64_t now_ms)
{
    char lead[REFEX_ID_MAX];
    int have = lead_of(c, case_ref, lead);
    if (have < 0)
        return -1;
    if (have && strcmp(lead, agency) == 0)
        return 1;
    refex_sql_stmt *st = NULL;
    if (refex_sql_prepare(c->db,
                          "SELECT 1 FROM case_grants WHERE case_ref = ? AND member = ? AND"
                          " revoked = 0 AND (valid_until_ms = 0 OR valid_until_ms > ?)",
                          &st) != REFEX_OK)
        return -1;
    refex_sql_bind_text(st, 1, case_ref);
    refex_sql_bind_text(st, 2, agency);
    refex_sql_bind_int(st, 3, now_ms);
    int step = refex_sql_step(st);
    refex_sql_finalize(&st);
    return step < 0 ? -1 : step == REFEX_SQL_ROW;
}

static void each_blob(cases *c, const char *sql, const char *arg, cases_blob_fn fn, void *ctx)
{
    refex_sql_stmt *st = NULL;
    if (refex_sql_prepare(c->db, sql, &st) != REFEX_OK)
        return;
    refex_sql_bind_text(st, 1, arg);
    while (refex_sql_step(st) == REFEX_SQL_ROW)
        fn(ctx, refex_sql_blob(st, 0), refex_sql_bytes(st, 0));
    refex_sql_finalize(&st);
}

void cases_grants_for(cases *c, const char *agency, cases_blob_fn fn, void *ctx)
{
    each_blob(
        c,
        "SELECT \"grant\" FROM case_grants WHERE case_ref IN (SELECT case_ref FROM case_grants"
        " WHERE member = ?1 UNION SELECT case_ref FROM case_leads WHERE lead = ?1)",
        agency, fn, ctx);
}

void cases_grants_of(cases *c, const char *case_ref, cases_blob_fn fn, void *ctx)
{
    each_blob(c, "SELECT \"grant\" FROM case_grants WHERE case_ref = ?", case_ref, fn, ctx);
}

static void each_text(cases *c, const char *sql, const char *arg, cases_agency_fn fn, void *ctx)
{
    refex_sql_stmt *st = NULL;
    if (refex_sql_prepare(c->db, sql, &st) != REFEX_OK)
        return;
    refex_sql_bind_text(st, 1, arg);
    while (refex_sql_step(st) == REFEX_SQL_ROW)
        fn(ctx, refex_sql_text(st, 0));
    refex_sql_finalize(&st);
}

void cases_parties(cases *c, const char *case_ref, cases_agency_fn fn, void *ctx)
{
    each_text(c, "SELECT agency FROM case_parties WHERE case_ref = ?", case_ref, fn, ctx);
}

void cases_current_parties(cases *c, const char *case_ref, cases_agency_fn fn, void *ctx)
{
    each_text(c, "SELECT agency FROM case_current_parties WHERE case_ref = ?", case_ref, fn, ctx);
}

/* The case's lead, or an agency holding a grant of it (revoked or expired too). */
static int was_party(cases *c, const char *case_ref, const char *agency)
{
    refex_sql_stmt *st = NULL;
    int party = 0;
    if (refex_sql_prepare(c->db, "SELECT 1 FROM case_parties WHERE case_ref = ? AND agency = ?",
                          &st) != REFEX_OK)
        return 0;
    refex_sql_bind_text(st, 1, case_ref);
    refex_sql_bind_text(st, 2, agency);
    party = refex_sql_step(st) == REFEX_SQL_ROW;
    refex_sql_finalize(&st);
    return party;
}

int cases_subscribe(cases *c, const refex_directory *dir, const char *agency, const uint8_t *blob,
                    size_t len, refex_subscription *sub, char *why, size_t whylen)
{
    refex_sql_stmt *st = NULL;
    int rc = refex_subscription_verify_packed(blob, len, dir, sub);
    if (rc != REFEX_OK) {
        snprintf(why, whylen, "subscription does not verify (%s)", refex_errname(rc));
        return rc;
    }
    if (strcmp(sub->agency, agency) != 0) {
        snprintf(why, whylen, "an agency subscribes only for itself");
        return REFEX_E_SENDER_MISMATCH;
    }
    /* Subscribe: a member now. Unsubscribe: a party now or before (a grant held, even a
     * revoked one), so a member that left can still say it wants nothing more. The
     * all-cases subscription is one row per agency, whoever sends it. */
    int member = sub->case_ref[0] && !sub->unsubscribed
                     ? cases_is_member(c, sub->case_ref, agency, refex_now_ms())
                     : 1;
    if (member < 0) {
        snprintf(why, whylen, "the broker's case store cannot be read");
        return REFEX_E_STORE;
    }
    if (sub->case_ref[0] && (sub->unsubscribed ? !was_party(c, sub->case_ref, agency) : !member)) {
        snprintf(why, whylen, "%s %s a member of case %s", agency,
                 sub->unsubscribed ? "was never" : "is not", sub->case_ref);
        return REFEX_E_NOT_MEMBER;
    }
    if (cap_reached(c, SUBSCRIPTIONS_OVER_CAP, agency, sub->case_ref, NULL, "subscriptions of", why,
                    whylen))
        return REFEX_E_STORE;
    rc = refex_sql_prepare(c->db,
                           "INSERT INTO case_subscriptions(agency, case_ref, serial, subscription)"
                           " VALUES (?,?,?,?) ON CONFLICT (agency, case_ref) DO UPDATE SET"
                           " serial = excluded.serial, subscription = excluded.subscription"
                           " WHERE excluded.serial > case_subscriptions.serial",
                           &st);
    if (rc != REFEX_OK)
        return REFEX_E_STORE;
    refex_sql_bind_text(st, 1, agency);
    refex_sql_bind_text(st, 2, sub->case_ref);
    refex_sql_bind_int(st, 3, (int64_t)sub->serial);
    refex_sql_bind_blob(st, 4, blob, len);
    rc = refex_sql_step(st) == REFEX_SQL_DONE ? REFEX_OK : REFEX_E_STORE;
    int changed = refex_sql_changes(st) > 0;
    refex_sql_finalize(&st);
    if (rc != REFEX_OK)
        return REFEX_E_STORE;
    if (!changed) {
        snprintf(why, whylen, "a subscription with this or a newer serial is already held");
        return REFEX_E_DUPLICATE;
    }
    return REFEX_OK;
}

void cases_subscriptions_of(cases *c, const char *case_ref, cases_blob_fn fn, void *ctx)
{
    each_blob(c,
              "SELECT subscription FROM case_subscriptions WHERE case_ref = ?1 OR"
              " (case_ref = '' AND agency IN (SELECT agency FROM case_current_parties"
              " WHERE case_ref = ?1))",
              case_ref, fn, ctx);
}

void cases_subscriptions_for(cases *c, const char *agency, cases_blob_fn fn, void *ctx)
{
    each_blob(
        c,
        "SELECT subscription FROM case_subscriptions s WHERE s.case_ref IN"
        " (SELECT case_ref FROM case_current_parties WHERE agency = ?1) OR (s.case_ref = '' AND"
        " s.agency IN (SELECT p2.agency FROM case_current_parties p1 JOIN case_current_parties p2"
        " ON p1.case_ref = p2.case_ref WHERE p1.agency = ?1))",
        agency, fn, ctx);
}

void cases_of(cases *c, const char *agency, cases_agency_fn fn, void *ctx)
{
    each_text(c, "SELECT case_ref FROM case_current_parties WHERE agency = ?", agency, fn, ctx);
}
