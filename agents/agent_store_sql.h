/* Private to the agent's storage (agent_store*.c): the statement tables
 * and the store's struct. Nothing else includes this. */
#ifndef REFEX_AGENT_STORE_SQL_H
#define REFEX_AGENT_STORE_SQL_H

#include <sqlite3.h>

#include "agent_store.h"
#include "db.h"

enum {
    S_OUTBOX_INSERT,
    S_OUTBOX_PENDING,
    S_OUTBOX_QUEUE,
    S_OUTBOX_MARK_SENT,
    S_OUTBOX_SETTLE,
    S_OUTBOX_BY_LOCAL_ID,
    S_OUTBOX_META,
    S_KNOWN_DELIVERY,
    S_INBOX_INSERT,
    S_REFUSED_INSERT,
    S_RECEIPT_INSERT,
    S_INBOX_PAGE,
    S_INBOX_SHOW,
    S_INBOX_ACK,
    S_INBOX_ACKED,
    S_INBOX_SENDERS,
    S_OUTBOX_LIST,
    S_MESSAGE_STATUS,
    S_MESSAGE_STATUS_LOCAL,
    S_MESSAGE_RECEIPTS,
    S_REFERRALS,
    S_REQUESTS,
    S_N
};

/* agent_store_link.c's statements, prepared on first use. */
enum { L_HIGH, L_REQUEUE, L_LOST_EXPIRED, L_N };

/* agent_store_cases.c's statements, prepared on first use. */
enum {
    C_PEER_CP_GET,
    C_PEER_CP_PUT,
    C_GRANT_PUT,
    C_SUBSCRIPTION_PUT,
    C_GRANT_SERIAL,
    C_SUBSCRIPTION_SERIAL,
    C_GRANT_OTHER_LEAD,
    C_GRANTS_OF_CASE,
    C_SUBSCRIPTIONS_FOR,
    C_SUBSCRIPTIONS_OF,
    C_GRANTS_LED_BY,
    C_N
};

struct agent_store {
    sqlite3 *db;
    sqlite3_stmt *st[S_N];
    sqlite3_stmt *link[L_N];
    sqlite3_stmt *cases[C_N];
};

void agent_store_link_close(agent_store *s);
void agent_store_cases_close(agent_store *s);

/* The statement, reset and with its bindings cleared; callers reset it again when done
 * (agent_store_done), so no statement holds a read open between uses. */
static inline sqlite3_stmt *agent_store_stmt(agent_store *s, int which)
{
    sqlite3_stmt *st = s->st[which];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

static inline int agent_store_done(sqlite3_stmt *st, int rc)
{
    sqlite3_reset(st);
    return rc;
}

/* A statement prepared on first use into *slot (agent_store_link.c, agent_store_cases.c),
 * reset and with its bindings cleared; NULL if it cannot be prepared. */
static inline sqlite3_stmt *agent_store_lazy(agent_store *s, const char *sql, sqlite3_stmt **slot)
{
    if (!*slot && refex_db_prepare(s->db, sql, slot) != REFEX_OK)
        return NULL;
    sqlite3_reset(*slot);
    sqlite3_clear_bindings(*slot);
    return *slot;
}

/* Steps a write; *changed says whether it changed a row. */
static inline int agent_store_write(agent_store *s, sqlite3_stmt *st, int *changed)
{
    int rc = refex_db_err(sqlite3_step(st));
    if (changed)
        *changed = rc == REFEX_OK && sqlite3_changes(s->db) > 0;
    return agent_store_done(st, rc);
}

/* Binds v, or "" for NULL, as text parameter i. */
static inline void agent_store_bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_STATIC);
}

#endif
