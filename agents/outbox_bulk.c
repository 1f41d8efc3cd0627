/* "send_batch": many sends in one control request, for callers with a queue of messages.
 * Each one is checked, sealed, committed and answered exactly as a "send" of its own
 * (outbox.c); only the replies are gathered into one, in order. Not a transaction of its
 * own: like every command of one poll cycle, the messages share the cycle's commit, each in
 * its own savepoint, so one refused message never takes another with it. */
#include "agent.h"

#include <jansson.h>

#include "log.h"

#define SEND_BATCH_MAX 1024

/* One message of the batch: a JSON object of "send" fields; "wait" is not allowed, since
 * its answer would come after the batch's. */
static void send_one(agent *a, const uint8_t *rid, size_t rid_len, json_t *m, json_t *results)
{
    size_t before = json_array_size(results);
    if (!json_is_object(m)) {
        json_array_append_new(results,
                              control_error(REFEX_E_INVAL, "each message is a JSON object"));
        return;
    }
    if (json_is_true(json_object_get(m, "wait"))) {
        json_t *e = control_error(REFEX_E_INVAL, "\"wait\" is not allowed in send_batch");
        json_object_set_new(e, "field", json_string("wait"));
        json_array_append_new(results, e);
        return;
    }
    outbox_cmd_send(a, rid, rid_len, m);
    /* Every send answers exactly once; a reply lost for want of memory still takes its
     * place, so results[i] stays the answer to messages[i]. */
    if (json_array_size(results) == before)
        json_array_append_new(results, control_error(REFEX_E_NOMEM, NULL));
}

void outbox_cmd_send_batch(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    json_t *msgs = json_object_get(req, "messages");
    size_t n = json_array_size(msgs);
    if (!json_is_array(msgs) || n == 0 || n > SEND_BATCH_MAX) {
        json_t *e = control_error(REFEX_E_INVAL, "\"messages\" is an array of 1 to 1024 sends");
        json_object_set_new(e, "field", json_string("messages"));
        batch_reply(a, rid, rid_len, e);
        return;
    }
    json_t *results = json_array();
    if (!results) {
        batch_reply(a, rid, rid_len, control_error(REFEX_E_NOMEM, NULL));
        return;
    }
    a->reply_sink = results;
    for (size_t i = 0; i < n; i++)
        send_one(a, rid, rid_len, json_array_get(msgs, i), results);
    a->reply_sink = NULL;
    size_t refused = 0;
    for (size_t i = 0; i < n; i++)
        refused += !json_is_true(json_object_get(json_array_get(results, i), "ok"));
    refex_log_info("send_batch: %zu message(s), %zu refused", n, refused);
    batch_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "results", results));
}
