/* The outbox against the broker's store: until a receipt or a report comes, the sender's
 * outbox is the truth about a message, not the broker's word that it was stored. Each
 * STORED records the store's generation and the message's store seq; HELLO tells the broker
 * the newest of them, so a store that went backwards can notice (and take a new
 * generation); each WELCOME gives the store's generation and the highest seq it holds from
 * this agency, and any message awaiting receipts that it no longer holds goes back to the
 * send queue, in its old place. Not the queue's pace (outbox_pace.c). */
#include "agent.h"

#include <string.h>

#include "log.h"
#include "util.h"

void outbox_link_hello(agent *a, Refex__V1__Hello *h, uint8_t gen[16])
{
    char hex[33];
    uint64_t seq = 0;
    if (agent_store_outbox_high(a->store, hex, &seq) != REFEX_OK) {
        refex_log_warn("link: could not read which broker store generation we rely on");
        return;
    }
    if (!hex[0] || refex_hex_decode(gen, 16, hex) != REFEX_OK)
        return;
    h->store_generation = (ProtobufCBinaryData){16, gen};
    h->stored_seq = seq;
}

void outbox_link_welcome(agent *a, const Refex__V1__Welcome *w)
{
    char gen[33];
    int requeued = 0, expired = 0;
    if (w->store_generation.len != 16) {
        refex_log_warn("link: the broker gave no store generation; cannot tell whether it "
                       "still holds what it stored");
        return;
    }
    refex_hex_encode(gen, w->store_generation.data, 16);
    memcpy(a->broker_gen, gen, sizeof a->broker_gen);
    if (batch_unit_begin(a) != REFEX_OK)
        return;
    int rc = agent_store_outbox_requeue_lost(a->store, gen, w->stored_seq, refex_now_ms(),
                                             &requeued, &expired);
    if (batch_unit_end(a, rc == REFEX_OK) != REFEX_OK || rc != REFEX_OK) {
        refex_log_error("link: could not check the outbox against the broker's store");
        return;
    }
    if (requeued)
        refex_log_warn("link: the broker's store (generation %s, holding up to seq %llu from "
                       "us) no longer holds %d message(s) it had stored and we hold no "
                       "receipt for; sending them again, oldest first",
                       gen, (unsigned long long)w->stored_seq, requeued);
    if (expired)
        refex_log_warn("link: %d more message(s) the broker's store lost had already expired; "
                       "they cannot be sent again and will show as expired, no report",
                       expired);
}

void outbox_link_stored(agent *a, const Refex__V1__Stored *st)
{
    char gen[33];
    if (st->message_id.len != 16)
        return;
    if (st->store_generation.len == 16)
        refex_hex_encode(gen, st->store_generation.data, 16);
    outbox_result_at(a, st->message_id.data, 0, NULL, st->store_generation.len == 16 ? gen : NULL,
                     st->store_seq);
}
