/* Case membership at the broker, in its own SQLite file. The broker cannot forge or alter a
 * grant (it has no lead's key); it only keeps the latest one per (case, member). What an
 * agency can make it store is bounded: grants only for cases it leads, subscriptions only
 * for cases it is or was a party of, and at most max_objects of each per agency. */
#include "cases.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "db.h"
#include "util.h"

struct cases {
    sqlite3 *db;
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

int cases_open(const char *path, uint64_t max_objects, cases **out, char *err, size_t errlen)
{
    cases *c = calloc(1, sizeof *c);
    int rc;
    *out = NULL;
    if (!c)
        return REFEX_E_NOMEM;
    c->max_objects = max_objects;
    if ((rc = refex_db_open(path, 0, &c->db, err, errlen)) != REFEX_OK ||
        (rc = refex_db_exec(c->db, SCHEMA)) != REFEX_OK) {
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
    refex_db_close(&(*c_p)->db);
    free(*c_p);
    *c_p = NULL;
}

static int lead_of(cases *c, const char *case_ref, char lead[REFEX_ID_MAX])
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    if (refex_db_prepare(c->db, "SELECT lead FROM case_leads WHERE case_ref = ?", &st) != REFEX_OK)
        return -1;
    sqlite3_bind_text(st, 1, case_ref, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(lead, REFEX_ID_MAX, "%s", sqlite3_column_text(st, 0));
        found = 1;
    }
    sqlite3_finalize(st);
    return found;
}

/* Whether storing one more object would pass the cap: sql gives 1 when the agency (?1)
 * already holds max_objects (?4) and (?2, ?3) would be a new row. -1 on a database error. */
static int over_cap(cases *c, const char *sql, const char *agency, const char *a2, const char *a3)
{
    sqlite3_stmt *st = NULL;
    int over = -1;
    if (refex_db_prepare(c->db, sql, &st) != REFEX_OK)
        return -1;
    sqlite3_bind_text(st, 1, agency, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, a2, -1, SQLITE_STATIC);
    if (a3)
        sqlite3_bind_text(st, 3, a3, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)c->max_objects);
    if (sqlite3_step(st) == SQLITE_ROW)
        over = sqlite3_column_int(st, 0) != 0;
    sqlite3_finalize(st);
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

int cases_submit(cases *c, const refex_directory *dir, const char *agency,
                 const Refex__V1__SignedGrant *sg, refex_grant *g, char *why, size_t whylen)
{
    char lead[REFEX_ID_MAX];
    sqlite3_stmt *st = NULL;
    int rc = refex_grant_verify(sg, dir, g);
    if (rc != REFEX_OK) {
        snprintf(why, whylen, "grant does not verify (%s)", refex_errname(rc));
        return rc;
    }
    if (strcmp(g->lead, agency) != 0) {
        snprintf(why, whylen, "a grant can only be submitted by its lead");
        return REFEX_E_SENDER_MISMATCH;
    }
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
    if ((rc = refex_db_begin(c->db)) != REFEX_OK)
        return REFEX_E_STORE;
    if (!have) {
        rc = refex_db_prepare(c->db, "INSERT INTO case_leads(case_ref, lead) VALUES (?,?)", &st);
        if (rc == REFEX_OK) {
            sqlite3_bind_text(st, 1, g->case_ref, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, g->lead, -1, SQLITE_STATIC);
            rc = refex_db_err(sqlite3_step(st));
            sqlite3_finalize(st);
        }
    }
    if (rc == REFEX_OK)
        rc = refex_db_prepare(c->db,
                              "INSERT INTO case_grants(case_ref, member, serial, valid_until_ms,"
                              " revoked, grant) VALUES (?,?,?,?,?,?)"
                              " ON CONFLICT (case_ref, member) DO UPDATE SET"
                              " serial = excluded.serial, valid_until_ms = excluded.valid_until_ms,"
                              " revoked = excluded.revoked, grant = excluded.grant"
                              " WHERE excluded.serial > case_grants.serial",
                              &st);
    int changed = 0;
    if (rc == REFEX_OK) {
        sqlite3_bind_text(st, 1, g->case_ref, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, g->member, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)g->serial);
        sqlite3_bind_int64(st, 4, g->valid_until_ms);
        sqlite3_bind_int(st, 5, g->revoked);
        uint8_t *blob = NULL;
        size_t len = 0;
        if ((rc = refex_pb_pack(&sg->base, &blob, &len)) == REFEX_OK) {
            sqlite3_bind_blob(st, 6, blob, (int)len, SQLITE_TRANSIENT);
            free(blob);
            rc = refex_db_err(sqlite3_step(st));
            changed = sqlite3_changes(c->db) > 0;
        }
        sqlite3_finalize(st);
    }
    if (rc == REFEX_OK)
        rc = refex_db_commit(c->db);
    else
        refex_db_rollback(c->db);
    if (rc != REFEX_OK)
        return REFEX_E_STORE;
    if (!changed) {
        snprintf(why, whylen, "a grant with this or a newer serial is already held");
        return REFEX_E_DUPLICATE;
    }
    return REFEX_OK;
}

int cases_is_member(cases *c, const char *case_ref, const char *agency, int64_t now_ms)
{
    char lead[REFEX_ID_MAX];
    if (lead_of(c, case_ref, lead) == 1 && strcmp(lead, agency) == 0)
        return 1;
    sqlite3_stmt *st = NULL;
    int member = 0;
    if (refex_db_prepare(c->db,
                         "SELECT 1 FROM case_grants WHERE case_ref = ? AND member = ? AND"
                         " revoked = 0 AND (valid_until_ms = 0 OR valid_until_ms > ?)",
                         &st) != REFEX_OK)
        return 0;
    sqlite3_bind_text(st, 1, case_ref, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, agency, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms);
    member = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return member;
}

static void each_blob(cases *c, const char *sql, const char *arg, cases_blob_fn fn, void *ctx)
{
    sqlite3_stmt *st = NULL;
    if (refex_db_prepare(c->db, sql, &st) != REFEX_OK)
        return;
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW)
        fn(ctx, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
    sqlite3_finalize(st);
}

void cases_grants_for(cases *c, const char *agency, cases_blob_fn fn, void *ctx)
{
    each_blob(c,
              "SELECT grant FROM case_grants WHERE case_ref IN (SELECT case_ref FROM case_grants"
              " WHERE member = ?1 UNION SELECT case_ref FROM case_leads WHERE lead = ?1)",
              agency, fn, ctx);
}

void cases_grants_of(cases *c, const char *case_ref, cases_blob_fn fn, void *ctx)
{
    each_blob(c, "SELECT grant FROM case_grants WHERE case_ref = ?", case_ref, fn, ctx);
}

static void each_text(cases *c, const char *sql, const char *arg, cases_agency_fn fn, void *ctx)
{
    sqlite3_stmt *st = NULL;
    if (refex_db_prepare(c->db, sql, &st) != REFEX_OK)
        return;
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW)
        fn(ctx, (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
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
    sqlite3_stmt *st = NULL;
    int party = 0;
    if (refex_db_prepare(c->db, "SELECT 1 FROM case_parties WHERE case_ref = ? AND agency = ?",
                         &st) != REFEX_OK)
        return 0;
    sqlite3_bind_text(st, 1, case_ref, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, agency, -1, SQLITE_STATIC);
    party = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return party;
}

int cases_subscribe(cases *c, const refex_directory *dir, const char *agency, const uint8_t *blob,
                    size_t len, refex_subscription *sub, char *why, size_t whylen)
{
    sqlite3_stmt *st = NULL;
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
    if (sub->case_ref[0] &&
        (sub->unsubscribed ? !was_party(c, sub->case_ref, agency)
                           : !cases_is_member(c, sub->case_ref, agency, refex_now_ms()))) {
        snprintf(why, whylen, "%s %s a member of case %s", agency,
                 sub->unsubscribed ? "was never" : "is not", sub->case_ref);
        return REFEX_E_NOT_MEMBER;
    }
    if (cap_reached(c, SUBSCRIPTIONS_OVER_CAP, agency, sub->case_ref, NULL, "subscriptions of", why,
                    whylen))
        return REFEX_E_STORE;
    rc = refex_db_prepare(c->db,
                          "INSERT INTO case_subscriptions(agency, case_ref, serial, subscription)"
                          " VALUES (?,?,?,?) ON CONFLICT (agency, case_ref) DO UPDATE SET"
                          " serial = excluded.serial, subscription = excluded.subscription"
                          " WHERE excluded.serial > case_subscriptions.serial",
                          &st);
    if (rc != REFEX_OK)
        return REFEX_E_STORE;
    sqlite3_bind_text(st, 1, agency, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sub->case_ref, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)sub->serial);
    sqlite3_bind_blob(st, 4, blob, (int)len, SQLITE_STATIC);
    rc = refex_db_err(sqlite3_step(st));
    int changed = sqlite3_changes(c->db) > 0;
    sqlite3_finalize(st);
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
