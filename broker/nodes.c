/* Several broker nodes on one store (the PostgreSQL store; with SQLite there is one node and
 * all of this is a no-op): the wake-ups other nodes send when they store deliveries or
 * receipts for an agency with a session here, a slow sweep that looks for them anyway in
 * case a wake-up was missed, and the per-agency delivery claim, so one node at a time pumps
 * to an agency: taken on HELLO, and a session whose claim another node has taken since is
 * ended here (the agency is on that node now). Not for the pump itself (session.c). */
#include <string.h>

#include "broker.h"
#include "link.h"
#include "log.h"
#include "util.h"

/* The sweep: a missed wake-up costs at most this much delay. */
#define NODES_SWEEP_MS 2000

void nodes_claim(broker *b, session *s)
{
    if (queue_batch_begin(b) != REFEX_OK ||
        refex_store_claim(b->store, s->agency, &s->claim_epoch) != REFEX_OK) {
        b->batch_failed = !refex_store_batch_alive(b->store);
        refex_log_warn("session: cannot record the delivery claim for %s; it is taken again "
                       "at its next HELLO",
                       s->agency);
    }
}

static void on_wake(void *ctx, const char *agency)
{
    broker *b = ctx;
    if (strcmp(agency, "*") != 0) {
        session_mark(b, agency);
        return;
    }
    for (size_t i = 0; i < b->n_sessions; i++)
        b->sessions[i].dirty = 1;
}

/* A session whose claim is another node's now: ended, and its agency told to say HELLO
 * again if it is in fact still here. */
static void sweep(broker *b)
{
    for (size_t i = 0; i < b->n_sessions; i++) {
        session *s = &b->sessions[i];
        s->dirty = 1;
        if (refex_store_holds(b->store, s->agency, s->claim_epoch) != 0)
            continue; /* held, or cannot tell now: asked again at the next sweep */
        refex_log_warn("session: %s is on another broker node now; ending its session here",
                       s->agency);
        refex_link_send_error(b->router, s->rid, s->rid_len, REFEX_E_NOT_READY,
                              "another broker node took this agency's session; send HELLO");
        session_drop(b, &b->sessions[i--]);
    }
}

void nodes_tick(broker *b)
{
    refex_store_wakeups(b->store, on_wake, b);
    int64_t now = refex_mono_ms();
    if (now >= b->next_nodes_ms) {
        b->next_nodes_ms = now + NODES_SWEEP_MS;
        sweep(b);
    }
}
