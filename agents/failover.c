/* Broker failover: `broker` may list several endpoints (broker nodes sharing one store, any
 * of which accepts any agency). The agent is connected to one at a time, and moves to the
 * next on a failed handshake, a lost connection, or no WELCOME within broker_timeout_seconds
 * of connecting. What was in flight is sent again after the new node's WELCOME (from the
 * oldest unacknowledged, outbox_pace.c); deliveries the new node sends again are collapsed by
 * message id in the inbox, as after any reconnect. Not for the session itself (agent.c). */
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "agent.h"
#include "log.h"
#include "util.h"

int failover_parse(agent *a, const char *list, char *err, size_t errlen)
{
    char copy[sizeof a->broker_ep];
    if (strlen(list) >= sizeof copy) {
        snprintf(err, errlen, "config: broker is too long");
        return REFEX_E_CONFIG;
    }
    snprintf(copy, sizeof copy, "%s", list);
    a->n_brokers = 0;
    for (char *save = NULL, *tok = strtok_r(copy, " \t,", &save); tok;
         tok = strtok_r(NULL, " \t,", &save)) {
        if (a->n_brokers == AGENT_MAX_BROKERS) {
            snprintf(err, errlen, "config: broker lists more than %d endpoints", AGENT_MAX_BROKERS);
            return REFEX_E_CONFIG;
        }
        if (strncmp(tok, "tcp://", 6) != 0 && strncmp(tok, "ipc://", 6) != 0) {
            snprintf(err, errlen, "config: broker endpoint %.200s is not tcp://HOST:PORT", tok);
            return REFEX_E_CONFIG;
        }
        for (size_t i = 0; i < a->n_brokers; i++)
            if (strcmp(a->brokers[i], tok) == 0) {
                snprintf(err, errlen, "config: broker lists %.200s twice", tok);
                return REFEX_E_CONFIG;
            }
        snprintf(a->brokers[a->n_brokers++], sizeof a->brokers[0], "%s", tok);
    }
    if (a->n_brokers == 0) {
        snprintf(err, errlen, "config: broker (the broker's endpoint) is required");
        return REFEX_E_CONFIG;
    }
    a->cur_broker = 0;
    snprintf(a->broker_ep, sizeof a->broker_ep, "%s", a->brokers[0]);
    return REFEX_OK;
}

int failover_connect(agent *a)
{
    a->broker_since_ms = refex_mono_ms();
    if (zmq_connect(a->link, a->broker_ep) != 0) {
        refex_log_error("link: bad broker endpoint %s: %s", a->broker_ep, zmq_strerror(errno));
        return REFEX_E_CONFIG;
    }
    return REFEX_OK;
}

/* To the next endpoint of the list (with one endpoint, libzmq's own reconnects do). */
static void move_on(agent *a, const char *why)
{
    if (a->n_brokers < 2)
        return;
    char old[sizeof a->broker_ep];
    snprintf(old, sizeof old, "%s", a->broker_ep);
    zmq_disconnect(a->link, old); /* drops what was queued for it: resent after WELCOME */
    a->cur_broker = (a->cur_broker + 1) % a->n_brokers;
    a->broker_moves++;
    snprintf(a->broker_ep, sizeof a->broker_ep, "%s", a->brokers[a->cur_broker]);
    a->online = 0;
    refex_log_warn("link: %s at %s; trying broker %s", why, old, a->broker_ep);
    if (failover_connect(a) != REFEX_OK)
        a->broker_since_ms = 0; /* not connectable: the next tick moves on again */
}

/* At once while the list has nodes not tried since the last WELCOME; after a whole round
 * without one (every node down, or refusing us), one move per broker_timeout_seconds, from
 * failover_tick, so the agent does not cycle through the list at network speed. */
void failover_lost(agent *a, const char *why)
{
    if (a->broker_moves < a->n_brokers)
        move_on(a, why);
}

void failover_tick(agent *a)
{
    if (a->online || a->n_brokers < 2)
        return;
    int64_t now = refex_mono_ms();
    if (now - a->broker_since_ms >= (int64_t)a->broker_timeout_s * 1000)
        move_on(a, "no WELCOME in time");
}

int failover_stale(const agent *a, const char *ep)
{
    for (size_t i = 0; ep && *ep && i < a->n_brokers; i++)
        if (i != a->cur_broker && strcmp(ep, a->brokers[i]) == 0)
            return 1;
    return 0;
}
