/* The broker's metrics and health (lib/metrics.h; config metrics_listen): sessions online,
 * deliveries pending per recipient and the oldest one's age, the live envelope bytes of the
 * store, refusals by code, witness cosignatures and alerts. Agency names and counts only.
 * Not for the HTTP side (lib/metrics.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "util.h"

typedef struct {
    refex_metrics_text *t, *oldest; /* the pending family, and the oldest-age one after it */
    int64_t now_ms;
} stats_ctx;

/* A label value as the text format wants it: backslash, double quote and newline escaped.
 * Agency ids never need it; a value that does not fit is cut between characters. */
static void label_value(char *out, size_t len, const char *in)
{
    size_t o = 0;
    for (const char *p = in; *p && o + 3 < len; p++) {
        if (*p == '\\' || *p == '"' || *p == '\n')
            out[o++] = '\\';
        out[o++] = *p == '\n' ? 'n' : *p;
    }
    out[o] = 0;
}

static void on_stats(void *vctx, const char *recipient, int64_t pending, int64_t oldest)
{
    stats_ctx *c = vctx;
    char esc[160];
    label_value(esc, sizeof esc, recipient);
    refex_metrics_printf(c->t, "refex_broker_deliveries_pending{recipient=\"%s\"} %lld\n", esc,
                         (long long)pending);
    refex_metrics_printf(c->oldest,
                         "refex_broker_delivery_oldest_pending_seconds{recipient=\"%s\"} %.3f\n",
                         esc, oldest > 0 ? (double)(c->now_ms - oldest) / 1000.0 : 0.0);
}

static void render(void *vb, refex_metrics_text *t)
{
    broker *b = vb;
    refex_metrics_text oldest = {0};
    stats_ctx c = {t, &oldest, refex_now_ms()};
    refex_metrics_family(t, "refex_broker_sessions_online", "gauge",
                         "Agencies with a session on this broker node.");
    refex_metrics_printf(t, "refex_broker_sessions_online %zu\n", b->n_sessions);
    refex_metrics_family(t, "refex_broker_deliveries_pending", "gauge",
                         "Deliveries stored and not yet acknowledged, per recipient.");
    /* one query for both families: the second's lines wait in `oldest` */
    int ok = refex_store_pending_stats(b->store, on_stats, &c) == REFEX_OK;
    refex_metrics_family(t, "refex_broker_delivery_oldest_pending_seconds", "gauge",
                         "Age of the oldest pending delivery, per recipient.");
    if (oldest.failed)
        t->failed = 1;
    else if (oldest.len)
        refex_metrics_printf(t, "%.*s", (int)oldest.len, oldest.data);
    free(oldest.data);
    refex_metrics_family(t, "refex_broker_store_readable", "gauge",
                         "1 if the store answered the queries above.");
    refex_metrics_printf(t, "refex_broker_store_readable %d\n", ok);
    refex_metrics_family(t, "refex_broker_store_live_bytes", "gauge",
                         "Envelope bytes held for delivery (what store_max limits).");
    refex_metrics_printf(t, "refex_broker_store_live_bytes %lld\n",
                         (long long)refex_store_live_bytes(b->store));
    refex_metrics_family(t, "refex_broker_refusals_total", "counter",
                         "Messages refused (REJECTED), by error code, since start.");
    for (int code = 0; code < BROKER_CODES; code++)
        if (b->refusals[code])
            refex_metrics_printf(t, "refex_broker_refusals_total{code=\"%s\"} %llu\n",
                                 refex_errname(code), (unsigned long long)b->refusals[code]);
    refex_metrics_family(t, "refex_broker_witness_cosigned_total", "counter",
                         "Audit-log checkpoints this node cosigned since start.");
    refex_metrics_printf(t, "refex_broker_witness_cosigned_total %llu\n",
                         (unsigned long long)b->cosigned);
    refex_metrics_family(t, "refex_broker_alerts_total", "counter",
                         "ALERT lines logged since start (an inconsistent audit log).");
    refex_metrics_printf(t, "refex_broker_alerts_total %llu\n", (unsigned long long)b->alerts);
}

/* Healthy: the store answers. */
static int health(void *vb, char *why, size_t whylen)
{
    broker *b = vb;
    if (refex_store_count(b->store) < 0) {
        snprintf(why, whylen, "the store does not answer");
        return 0;
    }
    return 1;
}

int broker_metrics_open(broker *b, const char *listen, char *err, size_t errlen)
{
    return listen ? refex_metrics_open(listen, render, health, b, &b->metrics, err, errlen)
                  : REFEX_OK;
}

void broker_refused(broker *b, int code)
{
    if (code >= 0 && code < BROKER_CODES)
        b->refusals[code]++;
}
