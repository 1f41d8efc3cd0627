/* The send queue: which pending outbox messages go to the broker, in what order and how
 * many at once. Not sealing or settling them (outbox.c) nor the outbox's storage.
 *
 * Order. One sender's SENDs on its one connection are handled by the broker in the order
 * they arrive, so sending the outbox oldest first (created order, ties by rowid) keeps each
 * sender's order as long as nothing is refused. A new message is committed to the outbox
 * and queued behind the older pending ones: it goes out only when its turn comes.
 *
 * Pace. At most `send_window` SENDs are unanswered at a time; each STORED or refusal frees
 * a slot and the next one goes out, so a backlog drains as fast as the broker answers and
 * is never sent as one burst.
 *
 * Refusal. A transient refusal (E_STORE, E_BUSY, ...) stops the queue: nothing is sent for
 * a pause, then the oldest pending message is sent alone until it is STORED, and only then
 * does the window open again. The pause starts at PACE_BACKOFF_MIN_MS and doubles with each
 * refusal in a row up to RETRY_MS: a broker whose store frees up as deliveries complete (a
 * full store drains within milliseconds once its recipient is back) is tried again at once,
 * one that stays full (its recipient offline) once every RETRY_MS, one message at a time. Sent one
 * at a time, nothing can overtake it. The SENDs already in flight behind a refused one cannot
 * overtake it either: once the broker has refused one of this agency's messages for now, it refuses
 * the later ones too (E_BUSY, "behind message ...") until that one is sent again (broker/queue.c),
 * so it never holds a later message from this agency without every earlier one. A non-transient
 * refusal settles its message (rejected) and the queue goes on. */
#include "agent.h"

#include <string.h>

#include "log.h"
#include "util.h"

int outbox_transient(int code)
{
    return code == REFEX_E_STORE || code == REFEX_E_BUSY || code == REFEX_E_UNAVAILABLE ||
           code == REFEX_E_NOMEM;
}

static size_t pace_window(const agent *a)
{
    if (!a->send_window)
        return SEND_WINDOW_DEFAULT;
    return a->send_window > SEND_WINDOW_MAX ? SEND_WINDOW_MAX : (size_t)a->send_window;
}

static int flight_index(const agent *a, const uint8_t id[16])
{
    for (size_t i = 0; i < a->n_flight; i++)
        if (memcmp(a->flight[i].id, id, 16) == 0)
            return (int)i;
    return -1;
}

int outbox_pace_in_flight(const agent *a, const uint8_t id[16])
{
    return flight_index(a, id) >= 0;
}

static int send_envelope_bytes(agent *a, const uint8_t *env, size_t len)
{
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, len, env);
    if (!e)
        return REFEX_E_MALFORMED;
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = e;
    int rc = batch_link_out(a, REFEX__V1__FRAME__KIND_SEND, &s.base);
    refex__v1__envelope__free_unpacked(e, NULL);
    return rc;
}

typedef struct {
    agent *a;
    size_t window;
    int n;
} pump_ctx;

/* One row of the queue, oldest first: skipped if in flight, else sent while there is
 * room. Stops at the first that cannot be sent, so nothing behind it goes first. */
static int pump_one(void *vctx, const char *message_id, const uint8_t *env, size_t len)
{
    pump_ctx *pc = vctx;
    agent *a = pc->a;
    uint8_t id[16];
    if (a->n_flight >= pc->window || refex_hex_decode(id, 16, message_id) != REFEX_OK)
        return 1;
    if (outbox_pace_in_flight(a, id))
        return 0;
    int rc = send_envelope_bytes(a, env, len);
    if (rc != REFEX_OK) {
        refex_log_warn("outbox: %s not sent yet: %s", message_id, refex_errname(rc));
        return 1;
    }
    if (agent_store_outbox_mark_sent(a->store, message_id, refex_now_ms()) != REFEX_OK)
        refex_log_warn("outbox: could not record the send time of %s", message_id);
    in_flight *f = &a->flight[a->n_flight++];
    memcpy(f->id, id, 16);
    f->sent_ms = refex_mono_ms();
    pc->n++;
    return 0;
}

void outbox_pace_pump(agent *a)
{
    size_t window = a->pace_recovering ? 1 : pace_window(a);
    pump_ctx pc = {a, window, 0};
    if (!a->online || a->pace_resume_ms || a->n_flight >= window)
        return;
    if (batch_unit_begin(a) != REFEX_OK)
        return;
    if (agent_store_outbox_queue(a->store, (int)window, pump_one, &pc) != REFEX_OK)
        refex_log_debug("outbox: the send queue was not read to its end");
    if (batch_unit_end(a, 1) != REFEX_OK)
        refex_log_warn("outbox: could not record send times");
    if (pc.n) {
        a->last_sent_ms = refex_mono_ms();
        refex_log_debug("outbox: %d message(s) handed to the broker, %zu in flight", pc.n,
                        a->n_flight);
    }
}

void outbox_pace_restart(agent *a)
{
    a->n_flight = 0;
    a->pace_resume_ms = 0;
    a->pace_backoff_ms = 0; /* a new session: its first refusal pauses briefly again */
    outbox_pace_pump(a);
}

void outbox_pace_answer(agent *a, const uint8_t id[16], int code)
{
    int i = flight_index(a, id);
    if (i >= 0) {
        memmove(&a->flight[i], &a->flight[i + 1],
                (a->n_flight - (size_t)i - 1) * sizeof *a->flight);
        a->n_flight--;
    }
    if (outbox_transient(code)) {
        if (!a->pace_resume_ms) {
            int64_t b = a->pace_backoff_ms;
            a->pace_backoff_ms = !b ? PACE_BACKOFF_MIN_MS : b * 2 > RETRY_MS ? RETRY_MS : b * 2;
            if (!a->pace_recovering)
                refex_log_warn("outbox: the broker refused a message for now (%s); sending "
                               "again from %lld ms on, oldest first, one at a time",
                               refex_errname(code), (long long)a->pace_backoff_ms);
            else
                refex_log_debug("outbox: refused again (%s); next try in %lld ms",
                                refex_errname(code), (long long)a->pace_backoff_ms);
            a->pace_resume_ms = refex_mono_ms() + a->pace_backoff_ms;
        }
        a->pace_recovering = 1;
        return;
    }
    if (code == 0 && a->pace_recovering && a->n_flight == 0 && !a->pace_resume_ms) {
        a->pace_recovering = 0;
        a->pace_backoff_ms = 0;
        refex_log_info("outbox: the broker stores again; sending resumes at full window");
    }
    outbox_pace_pump(a);
}

void outbox_pace_tick(agent *a)
{
    int64_t now = refex_mono_ms();
    if (a->pace_resume_ms && now >= a->pace_resume_ms) {
        a->pace_resume_ms = 0;
        outbox_pace_pump(a);
    }
    if (now < a->next_retry_ms)
        return;
    a->next_retry_ms = now + RETRY_MS;
    if (a->n_flight && now - a->flight[0].sent_ms >= RETRY_MS) {
        /* Unanswered that long: the SEND or its answer was lost. Send again from the oldest
         * (the broker answers STORED again for one it has). */
        refex_log_warn("outbox: %zu message(s) unanswered by the broker for %d s; resending "
                       "oldest first",
                       a->n_flight, RETRY_MS / 1000);
        a->n_flight = 0;
    }
    outbox_pace_pump(a);
}

int outbox_pace_poll_ms(const agent *a, int max_ms)
{
    if (!a->pace_resume_ms || !a->online) /* offline, nothing is sent: the pause can wait */
        return max_ms;
    int64_t left = a->pace_resume_ms - refex_mono_ms();
    return left <= 0 ? 0 : left < max_ms ? (int)left : max_ms;
}
