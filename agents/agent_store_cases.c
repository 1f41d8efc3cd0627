/* The agent's store of what case membership rests on: the signed grants and subscriptions
 * it holds (its own and others'), and the audit-log checkpoints its peers showed it.
 * Statements are prepared on first use. Not for messages (agent_store.c). */
#include <sodium.h>
#include <sqlite3.h>
#include <stdint.h>

#include "agent_store_sql.h"

static const char *const CASES_SQL[C_N] = {
    [C_PEER_CP_GET] = "SELECT root FROM peer_checkpoints WHERE agency = ? AND size = ?",
    [C_PEER_CP_PUT] = "INSERT INTO peer_checkpoints(agency, size, root) VALUES (?,?,?)",
    [C_GRANT_PUT] = "INSERT INTO case_grants(case_ref, member, serial, grant, lead)"
                    " VALUES (?,?,?,?,?) ON CONFLICT (case_ref, member) DO UPDATE SET"
                    " serial = excluded.serial, grant = excluded.grant"
                    " WHERE excluded.serial > case_grants.serial",
    [C_SUBSCRIPTION_PUT] = "INSERT INTO case_subscriptions(agency, case_ref, serial,"
                           " subscription) VALUES (?,?,?,?) ON CONFLICT (agency, case_ref)"
                           " DO UPDATE SET serial = excluded.serial,"
                           " subscription = excluded.subscription"
                           " WHERE excluded.serial > case_subscriptions.serial",
    [C_GRANT_SERIAL] = "SELECT serial FROM case_grants WHERE case_ref = ? AND member = ?",
    [C_SUBSCRIPTION_SERIAL] = "SELECT serial FROM case_subscriptions WHERE agency = ?"
                              " AND case_ref = ?",
    [C_GRANT_OTHER_LEAD] = "SELECT 1 FROM case_grants WHERE case_ref = ? AND lead <> ? LIMIT 1",
    [C_GRANTS_OF_CASE] = "SELECT grant FROM case_grants WHERE case_ref = ?",
    [C_SUBSCRIPTIONS_FOR] = "SELECT subscription FROM case_subscriptions WHERE agency = ?"
                            " AND case_ref IN (?, '') ORDER BY case_ref DESC",
    [C_SUBSCRIPTIONS_OF] = "SELECT subscription FROM case_subscriptions WHERE agency = ?",
    [C_GRANTS_LED_BY] = "SELECT grant FROM case_grants WHERE lead = ?",
};

static sqlite3_stmt *cases_stmt(agent_store *s, int which)
{
    return agent_store_lazy(s, CASES_SQL[which], &s->cases[which]);
}

void agent_store_cases_close(agent_store *s)
{
    for (int i = 0; i < C_N; i++)
        sqlite3_finalize(s->cases[i]);
}

/* ---- peers' checkpoints ------------------------------------------------------------- */

int agent_store_peer_checkpoint_check(agent_store *s, const char *agency, uint64_t size,
                                      const uint8_t root[32], int *seen, int *differs)
{
    sqlite3_stmt *st = cases_stmt(s, C_PEER_CP_GET);
    if (!st)
        return REFEX_E_DB;
    if (size > INT64_MAX)
        return REFEX_E_INVAL;
    agent_store_bind_text(st, 1, agency);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)size);
    int step = sqlite3_step(st);
    *seen = step == SQLITE_ROW;
    *differs = *seen && (sqlite3_column_bytes(st, 0) != 32 ||
                         sodium_memcmp(sqlite3_column_blob(st, 0), root, 32) != 0);
    return agent_store_done(st, refex_db_err(step));
}

int agent_store_peer_checkpoint_put(agent_store *s, const char *agency, uint64_t size,
                                    const uint8_t root[32])
{
    sqlite3_stmt *st = cases_stmt(s, C_PEER_CP_PUT);
    if (!st)
        return REFEX_E_DB;
    if (size > INT64_MAX)
        return REFEX_E_INVAL;
    agent_store_bind_text(st, 1, agency);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)size);
    sqlite3_bind_blob(st, 3, root, 32, SQLITE_STATIC);
    return agent_store_write(s, st, NULL);
}

/* ---- grants and subscriptions ------------------------------------------------------- */

int agent_store_signed_put(agent_store *s, const agent_signed_obj *o)
{
    int grant = o->kind == AGENT_SIGNED_GRANT;
    sqlite3_stmt *st = cases_stmt(s, grant ? C_GRANT_PUT : C_SUBSCRIPTION_PUT);
    if (!st)
        return REFEX_E_DB;
    if (o->serial > INT64_MAX)
        return REFEX_E_INVAL;
    agent_store_bind_text(st, 1, o->key1);
    agent_store_bind_text(st, 2, o->key2);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)o->serial);
    sqlite3_bind_blob(st, 4, o->blob, (int)o->len, SQLITE_STATIC);
    if (grant)
        agent_store_bind_text(st, 5, o->lead);
    return agent_store_write(s, st, NULL);
}

int agent_store_signed_serial(agent_store *s, agent_signed_kind kind, const char *key1,
                              const char *key2, int64_t *serial)
{
    sqlite3_stmt *st =
        cases_stmt(s, kind == AGENT_SIGNED_GRANT ? C_GRANT_SERIAL : C_SUBSCRIPTION_SERIAL);
    if (!st)
        return REFEX_E_DB;
    agent_store_bind_text(st, 1, key1);
    agent_store_bind_text(st, 2, key2);
    int step = sqlite3_step(st);
    *serial = step == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    return agent_store_done(st, refex_db_err(step));
}

int agent_store_grant_other_lead(agent_store *s, const char *case_ref, const char *lead, int *other)
{
    sqlite3_stmt *st = cases_stmt(s, C_GRANT_OTHER_LEAD);
    if (!st)
        return REFEX_E_DB;
    agent_store_bind_text(st, 1, case_ref);
    agent_store_bind_text(st, 2, lead);
    int step = sqlite3_step(st);
    *other = step == SQLITE_ROW;
    return agent_store_done(st, refex_db_err(step));
}

/* Runs fn over the first column of each row of a bound statement. */
static int each_blob(sqlite3_stmt *st, agent_store_blob_fn fn, void *ctx)
{
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        if (fn(ctx, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0)))
            break;
    return agent_store_done(st, refex_db_err(step));
}

int agent_store_grants_each(agent_store *s, const char *case_ref, agent_store_blob_fn fn, void *ctx)
{
    sqlite3_stmt *st = cases_stmt(s, C_GRANTS_OF_CASE);
    if (!st)
        return REFEX_E_DB;
    agent_store_bind_text(st, 1, case_ref);
    return each_blob(st, fn, ctx);
}

int agent_store_subscriptions_for(agent_store *s, const char *agency, const char *case_ref,
                                  agent_store_blob_fn fn, void *ctx)
{
    sqlite3_stmt *st = cases_stmt(s, C_SUBSCRIPTIONS_FOR);
    if (!st)
        return REFEX_E_DB;
    agent_store_bind_text(st, 1, agency);
    agent_store_bind_text(st, 2, case_ref);
    return each_blob(st, fn, ctx);
}

int agent_store_signed_by(agent_store *s, agent_signed_kind kind, const char *agency,
                          agent_store_blob_fn fn, void *ctx)
{
    sqlite3_stmt *st =
        cases_stmt(s, kind == AGENT_SIGNED_GRANT ? C_GRANTS_LED_BY : C_SUBSCRIPTIONS_OF);
    if (!st)
        return REFEX_E_DB;
    agent_store_bind_text(st, 1, agency);
    return each_blob(st, fn, ctx);
}
