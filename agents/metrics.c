/* The agent's metrics and health (lib/metrics.h; config metrics_listen): connected to the
 * broker, outbox pending, sends without a receipt and the oldest one's age, inbox not
 * acknowledged, overdue information requests, audit log size. Counts only. /healthz is 503
 * while the agent is not connected to its broker. Not for the HTTP side (lib/metrics.c). */
#include <stdio.h>

#include "agent.h"
#include "util.h"

static void render(void *va, refex_metrics_text *t)
{
    agent *a = va;
    agent_store_counts_t c = {0};
    json_t *overdue = NULL;
    int ok = agent_store_counts(a->store, &c) == REFEX_OK;
    ok = agent_store_requests_json(a->store, 1, &overdue) == REFEX_OK && ok;
    refex_metrics_family(t, "refex_agent_connected", "gauge",
                         "1 while the broker has welcomed this agent.");
    refex_metrics_printf(t, "refex_agent_connected %d\n", a->online ? 1 : 0);
    refex_metrics_family(t, "refex_agent_outbox_pending", "gauge",
                         "Messages sealed and not yet stored by the broker.");
    refex_metrics_printf(t, "refex_agent_outbox_pending %lld\n", (long long)c.outbox_pending);
    refex_metrics_family(t, "refex_agent_sends_unreceipted", "gauge",
                         "Messages stored by the broker with no receipt from any recipient yet.");
    refex_metrics_printf(t, "refex_agent_sends_unreceipted %lld\n", (long long)c.unreceipted);
    refex_metrics_family(t, "refex_agent_oldest_unreceipted_send_seconds", "gauge",
                         "Age of the oldest message sent without a receipt (0: none).");
    refex_metrics_printf(t, "refex_agent_oldest_unreceipted_send_seconds %.3f\n",
                         c.oldest_unreceipted_ms
                             ? (double)(refex_now_ms() - c.oldest_unreceipted_ms) / 1000.0
                             : 0.0);
    refex_metrics_family(t, "refex_agent_inbox_unacked", "gauge",
                         "Messages received and not yet acknowledged into the agency's records.");
    refex_metrics_printf(t, "refex_agent_inbox_unacked %lld\n", (long long)c.inbox_unacked);
    refex_metrics_family(t, "refex_agent_information_requests_overdue", "gauge",
                         "Information requests sent, past their due date, with no response.");
    refex_metrics_printf(t, "refex_agent_information_requests_overdue %zu\n",
                         json_array_size(overdue));
    refex_metrics_family(t, "refex_agent_audit_log_entries", "gauge",
                         "Entries in this agency's audit log.");
    refex_metrics_printf(t, "refex_agent_audit_log_entries %lld\n", (long long)c.audit_entries);
    refex_metrics_family(t, "refex_agent_store_readable", "gauge",
                         "1 if the agent's database answered the queries above.");
    refex_metrics_printf(t, "refex_agent_store_readable %d\n", ok);
    json_decref(overdue);
}

static int health(void *va, char *why, size_t whylen)
{
    agent *a = va;
    if (!a->online) {
        snprintf(why, whylen, "not connected to the broker");
        return 0;
    }
    return 1;
}

int agent_metrics_open(agent *a, const char *listen, char *err, size_t errlen)
{
    return listen ? refex_metrics_open(listen, render, health, a, &a->metrics, err, errlen)
                  : REFEX_OK;
}
