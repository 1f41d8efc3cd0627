/* Private to the agent's storage (agent_store.c, agent_store_json.c): the statement table
 * and the store's struct. Nothing else includes this. */
#ifndef REFEX_AGENT_STORE_SQL_H
#define REFEX_AGENT_STORE_SQL_H

#include <sqlite3.h>

#include "agent_store.h"

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
    S_PEER_CP_GET,
    S_PEER_CP_PUT,
    S_GRANT_PUT,
    S_SUBSCRIPTION_PUT,
    S_GRANT_SERIAL,
    S_SUBSCRIPTION_SERIAL,
    S_GRANT_OTHER_LEAD,
    S_GRANTS_OF_CASE,
    S_SUBSCRIPTIONS_FOR,
    S_SUBSCRIPTIONS_OF,
    S_GRANTS_LED_BY,
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

struct agent_store {
    sqlite3 *db;
    sqlite3_stmt *st[S_N];
    sqlite3_stmt *link[L_N];
};

void agent_store_link_close(agent_store *s);

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

#endif
