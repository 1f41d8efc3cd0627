/* The outbox's view of the broker's store (agent_store.c keeps the rest of the outbox, and
 * records what each STORED said: the store's generation and the message's seq): what HELLO
 * tells the broker it was told, and, after a WELCOME that shows the store behind, the stored
 * messages that go back to the send queue. Statements are prepared on first use. */
#include <sqlite3.h>
#include <string.h>

#include "agent_store_sql.h"
#include "db.h"

/* Messages awaiting receipts that the store no longer holds: stored under another
 * generation, or above the highest seq the store holds from us. */
#define LOST "state = 'stored' AND closed = 0 AND (store_gen <> ?1 OR store_seq > ?2)"

static const char *const LINK_SQL[L_N] = {
    [L_HIGH] = "SELECT store_gen, max(store_seq) FROM outbox WHERE state = 'stored' AND"
               " closed = 0 AND store_gen = (SELECT store_gen FROM outbox WHERE state = 'stored'"
               " AND closed = 0 AND store_gen <> '' ORDER BY updated_ms DESC LIMIT 1)",
    [L_REQUEUE] =
        "UPDATE outbox SET state = 'pending', sent_ms = 0 WHERE " LOST " AND expires_ms > ?3",
    [L_LOST_EXPIRED] = "SELECT count(*) FROM outbox WHERE " LOST " AND expires_ms <= ?3",
};

static sqlite3_stmt *link_stmt(agent_store *s, int which)
{
    return agent_store_lazy(s, LINK_SQL[which], &s->link[which]);
}

void agent_store_link_close(agent_store *s)
{
    for (int i = 0; i < L_N; i++)
        sqlite3_finalize(s->link[i]);
}

int agent_store_outbox_high(agent_store *s, char gen[33], uint64_t *seq)
{
    sqlite3_stmt *st = link_stmt(s, L_HIGH);
    gen[0] = 0;
    *seq = 0;
    if (!st)
        return REFEX_E_DB;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_TEXT &&
        sqlite3_column_bytes(st, 0) == 32) {
        memcpy(gen, sqlite3_column_text(st, 0), 33);
        *seq = (uint64_t)sqlite3_column_int64(st, 1);
    }
    return agent_store_done(st, step == SQLITE_ROW || step == SQLITE_DONE ? REFEX_OK
                                                                          : refex_db_err(step));
}

int agent_store_outbox_requeue_lost(agent_store *s, const char *gen, uint64_t high, int64_t now_ms,
                                    int *requeued, int *expired)
{
    sqlite3_stmt *st = link_stmt(s, L_LOST_EXPIRED);
    *requeued = *expired = 0;
    if (!st)
        return REFEX_E_DB;
    sqlite3_bind_text(st, 1, gen, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)high);
    sqlite3_bind_int64(st, 3, now_ms);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *expired = sqlite3_column_int(st, 0);
    int rc = agent_store_done(st, step == SQLITE_ROW ? REFEX_OK : refex_db_err(step));
    if (rc != REFEX_OK || !(st = link_stmt(s, L_REQUEUE)))
        return rc != REFEX_OK ? rc : REFEX_E_DB;
    sqlite3_bind_text(st, 1, gen, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)high);
    sqlite3_bind_int64(st, 3, now_ms);
    rc = refex_db_err(sqlite3_step(st));
    if (rc == REFEX_OK)
        *requeued = sqlite3_changes(s->db);
    return agent_store_done(st, rc);
}
