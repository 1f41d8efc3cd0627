/* Consuming the inbox by cursor: pages of messages after a cursor, and the long poll
 * (inbox_wait) whose clients are held here until a delivery with a higher cursor commits
 * or their time is up. Held clients cost one slot each and no work until then, so the
 * loop stays free for everything else. Not receiving (inbox.c) nor parsing requests
 * (control.c). */
#include "agent.h"

#include <string.h>

#include "log.h"
#include "util.h"

int inbox_page(agent *a, int64_t after, int64_t limit, int unacked, json_t **reply)
{
    json_t *rows = NULL;
    int64_t last = after;
    *reply = NULL;
    int rc = agent_store_inbox_page_json(a->store, after, limit, unacked, &rows, &last);
    if (rc != REFEX_OK) {
        json_decref(rows);
        return rc;
    }
    *reply = json_pack("{s:b, s:o, s:I}", "ok", 1, "messages", rows, "cursor", (json_int_t)last);
    return *reply ? REFEX_OK : REFEX_E_NOMEM;
}

int inbox_wait_hold(agent *a, const uint8_t *rid, size_t rid_len, int64_t after, int64_t limit,
                    int timeout_ms)
{
    if (a->n_inbox_waiters >= MAX_INBOX_WAITERS || rid_len > RID_MAX)
        return REFEX_E_BUSY;
    inbox_waiter *w = &a->inbox_waiters[a->n_inbox_waiters++];
    memcpy(w->rid, rid, rid_len);
    w->rid_len = rid_len;
    w->after = after;
    w->limit = limit;
    w->deadline = refex_mono_ms() + timeout_ms;
    return REFEX_OK;
}

/* Takes waiter i off the list (the last one moves into its place). */
static void drop(agent *a, size_t i)
{
    a->inbox_waiters[i] = a->inbox_waiters[--a->n_inbox_waiters];
}

void inbox_wait_wake(agent *a)
{
    for (size_t i = 0; i < a->n_inbox_waiters; i++) {
        inbox_waiter *w = &a->inbox_waiters[i];
        json_t *reply = NULL;
        int rc = inbox_page(a, w->after, w->limit, 0, &reply);
        if (rc == REFEX_OK && json_array_size(json_object_get(reply, "messages")) == 0) {
            json_decref(reply);
            continue; /* nothing above its cursor yet */
        }
        if (rc != REFEX_OK) {
            refex_log_warn("inbox wait: cannot read the inbox: %s", refex_errname(rc));
            reply = control_error(rc, NULL);
        }
        batch_reply(a, w->rid, w->rid_len, reply);
        drop(a, i--);
    }
}

void inbox_wait_expire(agent *a)
{
    int64_t now = refex_mono_ms();
    for (size_t i = 0; i < a->n_inbox_waiters; i++) {
        inbox_waiter *w = &a->inbox_waiters[i];
        if (w->deadline > now)
            continue;
        batch_reply(
            a, w->rid, w->rid_len,
            json_pack("{s:b, s:[], s:I}", "ok", 1, "messages", "cursor", (json_int_t)w->after));
        drop(a, i--);
    }
}

int inbox_wait_poll_ms(const agent *a, int max_ms)
{
    int64_t now = refex_mono_ms();
    int ms = max_ms;
    for (size_t i = 0; i < a->n_inbox_waiters; i++) {
        int64_t left = a->inbox_waiters[i].deadline - now;
        if (left < ms)
            ms = left > 0 ? (int)left : 0;
    }
    return ms;
}
