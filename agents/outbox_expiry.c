/* Messages that expired with no report. A broker that lost a stored message (its store
 * restored from an older copy, its WAL lost) can never send a non-delivery report for it,
 * so the sender must notice on its own: once a stored message is past its expiry by the
 * grace period (report_grace_seconds) and the agent has been online for ONLINE_SETTLE_MS or
 * the grace period if shorter (reports the broker held for us while we were away stream in
 * right after WELCOME, so they come in first; a link that reconnects often still gets
 * swept), each recipient without a receipt
 * is noted (no_reports), audited (`no-report`, outcome `expired`: peer and message id, never
 * contents) and raises an ALERT line; then the message is closed. A receipt that still
 * comes later is recorded as usual and wins in the status. Not the storage (that is
 * agent_store_report.c) nor resending what a broker lost before its expiry. */
#include "agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope.h"
#include "log.h"
#include "util.h"

#define SWEEP_EVERY_MS 1000 /* at most one sweep a second */
#define SWEEP_BATCH    16   /* messages per sweep: the rest wait for the next */

/* Recipients of one message noted in this sweep: their ALERT lines wait for the unit. */
typedef struct {
    char who[REFEX_MAX_RECIPIENTS][REFEX_ID_MAX];
    size_t n;
} noted;

static void utc_time(char *buf, size_t len, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "%lld ms", (long long)ms);
}

/* Notes and audits each recipient of r without a receipt, then closes r, in one unit. */
static int sweep_one(agent *a, const agent_overdue_row *r, int64_t now, noted *out)
{
    char list[AGENT_RECIPIENTS_MAX], *save = NULL;
    int rc = batch_unit_begin(a);
    out->n = 0;
    if (rc != REFEX_OK)
        return rc;
    snprintf(list, sizeof list, "%s", r->recipients);
    for (char *who = strtok_r(list, ",", &save); rc == REFEX_OK && who;
         who = strtok_r(NULL, ",", &save)) {
        int held = 0, fresh = 0;
        rc = agent_store_receipt_held(a->store, r->message_id, who, &held);
        if (rc == REFEX_OK && !held)
            rc = agent_store_no_report_insert(a->store, r->message_id, who, r->expires_ms, now,
                                              &fresh);
        if (rc == REFEX_OK && fresh)
            rc = journal_outcome(a, "no-report", "expired", who, r->message_id, "");
        if (rc == REFEX_OK && fresh && out->n < REFEX_MAX_RECIPIENTS)
            snprintf(out->who[out->n++], REFEX_ID_MAX, "%s", who);
    }
    if (rc == REFEX_OK)
        rc = agent_store_outbox_close(a->store, r->message_id);
    if (rc == REFEX_OK)
        return batch_unit_end(a, 1);
    batch_unit_end(a, 0);
    return rc;
}

/* How long after a WELCOME the broker's held receipts and reports have surely come in. */
#define ONLINE_SETTLE_MS 30000

/* May the sweep run now? Online, settled, and not swept this last second. */
static int sweep_due(agent *a, int64_t grace_ms)
{
    int64_t settle_ms = grace_ms < ONLINE_SETTLE_MS ? grace_ms : ONLINE_SETTLE_MS;
    int64_t mono = refex_mono_ms();
    if (!a->online) {
        a->expiry_online_ms = 0;
        return 0;
    }
    if (!a->expiry_online_ms)
        a->expiry_online_ms = mono;
    if (mono - a->expiry_online_ms < settle_ms || mono < a->expiry_next_ms)
        return 0;
    a->expiry_next_ms = mono + SWEEP_EVERY_MS;
    return 1;
}

void outbox_expiry_sweep(agent *a)
{
    int64_t grace_ms =
        (int64_t)(a->report_grace_s ? a->report_grace_s : REPORT_GRACE_DEFAULT) * 1000;
    agent_overdue_row *rows = NULL;
    noted *nd = NULL;
    size_t n = 0;
    if (!sweep_due(a, grace_ms))
        return;
    int64_t now = refex_now_ms();
    rows = calloc(SWEEP_BATCH, sizeof *rows);
    nd = calloc(1, sizeof *nd);
    if (!rows || !nd ||
        agent_store_outbox_overdue(a->store, now - grace_ms, rows, SWEEP_BATCH, &n) != REFEX_OK) {
        refex_log_warn("outbox: could not look for messages expired without a report");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        char when[40];
        if (sweep_one(a, &rows[i], now, nd) != REFEX_OK) {
            refex_log_error("outbox: could not record that %s expired without a report; will "
                            "retry",
                            rows[i].message_id);
            break;
        }
        utc_time(when, sizeof when, rows[i].expires_ms);
        for (size_t k = 0; k < nd->n; k++)
            refex_log_error("ALERT outbox: message %s to %s expired at %s with neither a receipt "
                            "nor a non-delivery report; the broker may have lost it",
                            rows[i].message_id, nd->who[k], when);
    }
out:
    free(nd);
    free(rows);
}
