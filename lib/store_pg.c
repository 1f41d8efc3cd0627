/* The PostgreSQL backend of the broker's queue (store.h), for deployments that must survive
 * the loss of a machine: the database is replicated by PostgreSQL's own synchronous
 * streaming replication, and several broker nodes may share it (docs/operations.md).
 *
 * Every write of a batch happens under one row lock, taken by the batch's first write
 * (refex_state, FOR UPDATE) and held until its commit. It serialises the writing batches of
 * every node on the store, so store seqs are handed out in commit order and a delivery or
 * receipt cursor can never pass a seq that another node commits later; it also keeps the
 * live-bytes count (store_max) and the generation exact across nodes. National load is tens
 * of messages a second; one batch per poll cycle makes the lock cheap.
 *
 * No statement of a batch is expected to fail (duplicates are found by ON CONFLICT, the
 * size cap is checked from the locked count): one that does (a lost connection, a full disk)
 * ends the batch, which is then refused whole, and the broker resends what it had not
 * answered. A lost connection is made again at the next batch; with target_session_attrs
 * =read-write in the URI, libpq finds the writable host after a failover. Not for routing
 * decisions (broker/queue.c). */
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store.h"
#include "store_pg.h"
#include "util.h"

static const char *const REFUSE_FULL =
    "the broker's store is full (store_max reached); retry later";
static const char *const REFUSE_WRITE = "the broker could not store the message; retry later";

/* ---- the batch: one transaction, the state lock taken by its first write -------------- */

/* An agency the open batch stored something for, to wake the other nodes about. */
static void wake_later(pg_store *s, const char *agency)
{
    for (size_t i = 0; i < s->n_wake; i++)
        if (strcmp(s->wake[i], agency) == 0)
            return;
    if (s->n_wake == PG_WAKE_MAX || strlen(agency) >= sizeof s->wake[0]) {
        s->wake_all = 1;
        return;
    }
    snprintf(s->wake[s->n_wake++], sizeof s->wake[0], "%s", agency);
}

/* The NOTIFYs of the batch, sent with its commit (PostgreSQL delivers them only if it
 * commits). */
static int wake_send(pg_store *s)
{
    size_t n = s->wake_all ? 1 : s->n_wake;
    for (size_t i = 0; i < n; i++) {
        params p = {0};
        refex_pg_text(&p, s->wake_all ? "*" : s->wake[i]);
        if (refex_pg_cmd(s, Q_NOTIFY, &p, NULL) != REFEX_OK)
            return REFEX_E_STORE;
    }
    return REFEX_OK;
}

static int pg_begin(void *impl)
{
    pg_store *s = impl;
    if (s->in_tx)
        return REFEX_OK;
    if (refex_pg_connected(s) != REFEX_OK || refex_pg_exec(s, "BEGIN") != REFEX_OK)
        return REFEX_E_STORE;
    s->in_tx = 1;
    s->locked = s->failed = s->renewing = 0;
    s->n_wake = 0;
    s->wake_all = 0;
    return REFEX_OK;
}

static int lock_state(pg_store *s)
{
    if (!s->in_tx || s->failed)
        return REFEX_E_STORE;
    if (s->locked)
        return REFEX_OK;
    PGresult *r = refex_pg_run(s, Q_LOCK, NULL);
    if (!r)
        return REFEX_E_STORE;
    int ok = PQntuples(r) == 1 && PQgetlength(r, 0, 3) == 16;
    if (ok) {
        s->next_seq = refex_pg_col_int(r, 0, 0);
        s->next_receipt = refex_pg_col_int(r, 0, 1);
        s->live = refex_pg_col_int(r, 0, 2);
        memcpy(s->generation, PQgetvalue(r, 0, 3), 16); /* another node may have renewed it */
        s->locked = 1;
    } else {
        refex_log_error("store: postgresql: the refex_state row is missing or damaged");
        s->failed = 1;
    }
    PQclear(r);
    return ok ? REFEX_OK : REFEX_E_STORE;
}

static void end_tx(pg_store *s, const char *how)
{
    if (PQtransactionStatus(s->conn) != PQTRANS_IDLE && PQstatus(s->conn) == CONNECTION_OK)
        refex_pg_exec(s, how);
    s->in_tx = s->locked = s->failed = 0;
}

static int pg_commit(void *impl)
{
    pg_store *s = impl;
    if (!s->in_tx)
        return REFEX_OK;
    int rc = s->failed ? REFEX_E_STORE : REFEX_OK;
    if (rc == REFEX_OK && s->locked) {
        params p = {0};
        refex_pg_int(&p, s->next_seq);
        refex_pg_int(&p, s->next_receipt);
        refex_pg_int(&p, s->live);
        refex_pg_blob(&p, s->renewing ? s->renewed : s->generation, 16);
        rc = refex_pg_cmd(s, Q_SAVE, &p, NULL);
    }
    if (rc == REFEX_OK)
        rc = wake_send(s);
    if (rc != REFEX_OK) {
        end_tx(s, "ROLLBACK");
        s->renewing = 0;
        return REFEX_E_STORE;
    }
    /* COMMIT returns once the server (and a synchronous standby) has it durable; if the
     * connection breaks first the outcome is unknown, and the batch is refused: a sender
     * resends, and finds its message stored as a duplicate if it was. */
    s->unreplicated = 0;
    PGresult *r = PQexec(s->conn, "COMMIT");
    /* An aborted transaction's COMMIT answers ROLLBACK. A COMMIT whose wait for the
     * synchronous standby was cancelled answers COMMIT with a warning that it is only
     * local: the batch is refused too, and sent again (a duplicate is recognised). */
    rc = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0 &&
                 !s->unreplicated
             ? REFEX_OK
             : REFEX_E_STORE;
    if (rc != REFEX_OK)
        refex_pg_log_failure(s, s->unreplicated ? "COMMIT (not replicated)" : "COMMIT", r);
    PQclear(r);
    s->in_tx = s->locked = s->failed = 0;
    if (rc == REFEX_OK && s->renewing) {
        char old[33], now[33];
        refex_hex_encode(old, s->generation, 16);
        refex_hex_encode(now, s->renewed, 16);
        memcpy(s->generation, s->renewed, 16);
        refex_log_warn("store: generation %s renewed as %s: the store was found behind what it "
                       "had answered STORED for",
                       old, now);
    }
    s->renewing = 0;
    return rc;
}

static void pg_rollback(void *impl)
{
    pg_store *s = impl;
    if (s->in_tx)
        end_tx(s, "ROLLBACK");
    s->renewing = 0;
}

static int pg_batch_alive(void *impl)
{
    pg_store *s = impl;
    return s->in_tx && !s->failed && PQtransactionStatus(s->conn) == PQTRANS_INTRANS;
}

/* ---- messages ------------------------------------------------------------------------- */

/* (sender, id) stored? 1 and its seq, remaining deliveries and envelope length; 0 no; -1 the
 * query failed. */
static int find(pg_store *s, const uint8_t id[16], const char *sender, int64_t *seq,
                int64_t *remaining, int64_t *env_len)
{
    params p = {0};
    refex_pg_text(&p, sender);
    refex_pg_blob(&p, id, 16);
    PGresult *r = refex_pg_run(s, Q_FIND, &p);
    if (!r)
        return -1;
    int found = PQntuples(r) == 1;
    if (found) {
        *seq = refex_pg_col_int(r, 0, 0);
        *remaining = refex_pg_col_int(r, 0, 1);
        *env_len = refex_pg_col_int(r, 0, 2);
    }
    PQclear(r);
    return found;
}

static int pg_put(void *impl, const uint8_t id[16], const char *sender, const char *const *rcpt,
                  size_t n_rcpt, const uint8_t *env, size_t env_len, int64_t expires_at_ms)
{
    pg_store *s = impl;
    int64_t seq = 0, remaining = 0, len = 0;
    long added = 0;
    s->put_seq = 0;
    s->refusal = REFUSE_WRITE;
    if (lock_state(s) != REFEX_OK)
        return REFEX_E_STORE;
    if (s->max_bytes && (uint64_t)s->live + env_len > s->max_bytes) {
        int known = find(s, id, sender, &seq, &remaining, &len);
        if (known < 0)
            return REFEX_E_STORE;
        if (known) {
            s->put_seq = (uint64_t)seq;
            return REFEX_E_DUPLICATE; /* a retry of a stored message is still recognised */
        }
        s->refusal = REFUSE_FULL;
        refex_log_warn("store: full: %lld of %llu bytes queued; refusing a message of %zu bytes",
                       (long long)s->live, (unsigned long long)s->max_bytes, env_len);
        return REFEX_E_STORE;
    }
    params p = {0};
    refex_pg_int(&p, s->next_seq);
    refex_pg_text(&p, sender);
    refex_pg_blob(&p, id, 16);
    refex_pg_blob(&p, env, env_len);
    refex_pg_int(&p, expires_at_ms);
    refex_pg_int(&p, (int64_t)n_rcpt);
    if (refex_pg_cmd(s, Q_PUT, &p, &added) != REFEX_OK)
        return REFEX_E_STORE;
    if (!added) {
        if (find(s, id, sender, &seq, &remaining, &len) != 1)
            return REFEX_E_STORE;
        s->put_seq = (uint64_t)seq;
        return REFEX_E_DUPLICATE;
    }
    seq = s->next_seq++;
    for (size_t i = 0; i < n_rcpt; i++) {
        params d = {0};
        refex_pg_text(&d, rcpt[i]);
        refex_pg_int(&d, seq);
        if (refex_pg_cmd(s, Q_DELIVERY, &d, NULL) != REFEX_OK)
            return REFEX_E_STORE;
        wake_later(s, rcpt[i]);
    }
    params h = {0};
    refex_pg_text(&h, sender);
    refex_pg_int(&h, seq);
    if (refex_pg_cmd(s, Q_SENDER_PUT, &h, NULL) != REFEX_OK)
        return REFEX_E_STORE;
    s->live += (int64_t)env_len;
    s->put_seq = (uint64_t)seq;
    return REFEX_OK;
}

static int pg_pending(void *impl, const char *recipient, int64_t after, int limit,
                      refex_store_msg_fn fn, void *ctx)
{
    pg_store *s = impl;
    params p = {0};
    refex_pg_text(&p, recipient);
    refex_pg_int(&p, after);
    refex_pg_int(&p, limit);
    PGresult *r = refex_pg_run(s, Q_PENDING, &p);
    if (!r)
        return REFEX_E_STORE;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetlength(r, i, 1) != 16)
            continue;
        if (fn(ctx, refex_pg_col_int(r, i, 0), (const uint8_t *)PQgetvalue(r, i, 1),
               refex_pg_col_text(r, i, 2), (const uint8_t *)PQgetvalue(r, i, 3),
               (size_t)PQgetlength(r, i, 3)) != 0)
            break;
    }
    PQclear(r);
    return REFEX_OK;
}

static int pg_ack(void *impl, const char *recipient, const char *sender, const uint8_t id[16],
                  const uint8_t *receipt, size_t receipt_len)
{
    pg_store *s = impl;
    int64_t seq = 0, remaining = 0, env_len = 0;
    long gone = 0;
    if (lock_state(s) != REFEX_OK)
        return REFEX_E_STORE;
    int known = find(s, id, sender, &seq, &remaining, &env_len);
    if (known <= 0)
        return known < 0 ? REFEX_E_STORE : REFEX_E_NOTFOUND;
    params p = {0};
    refex_pg_text(&p, recipient);
    refex_pg_int(&p, seq);
    if (refex_pg_cmd(s, Q_UNDELIVER, &p, &gone) != REFEX_OK)
        return REFEX_E_STORE;
    if (!gone)
        return REFEX_E_NOTFOUND;
    params d = {0};
    refex_pg_int(&d, seq);
    if (refex_pg_cmd(s, remaining > 1 ? Q_DONE : Q_DROP, &d, NULL) != REFEX_OK)
        return REFEX_E_STORE;
    params rp = {0};
    refex_pg_int(&rp, s->next_receipt);
    refex_pg_text(&rp, sender);
    refex_pg_blob(&rp, id, 16);
    refex_pg_text(&rp, recipient);
    refex_pg_blob(&rp, receipt, receipt_len);
    if (refex_pg_cmd(s, Q_RECEIPT_PUT, &rp, NULL) != REFEX_OK)
        return REFEX_E_STORE;
    s->next_receipt++;
    wake_later(s, sender); /* its receipt waits for it */
    if (remaining <= 1)
        s->live -= env_len; /* the last delivery: the envelope is gone */
    return REFEX_OK;
}

static int pg_receipts(void *impl, const char *sender, int64_t after, int limit,
                       refex_store_receipt_fn fn, void *ctx)
{
    pg_store *s = impl;
    params p = {0};
    refex_pg_text(&p, sender);
    refex_pg_int(&p, after);
    refex_pg_int(&p, limit);
    PGresult *r = refex_pg_run(s, Q_RECEIPTS, &p);
    if (!r)
        return REFEX_E_STORE;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetlength(r, i, 1) != 16)
            continue;
        if (fn(ctx, refex_pg_col_int(r, i, 0), (const uint8_t *)PQgetvalue(r, i, 1),
               refex_pg_col_text(r, i, 2), (const uint8_t *)PQgetvalue(r, i, 3),
               (size_t)PQgetlength(r, i, 3)) != 0)
            break;
    }
    PQclear(r);
    return REFEX_OK;
}

static int pg_receipt_ack(void *impl, const char *sender, const uint8_t id[16],
                          const char *recipient)
{
    pg_store *s = impl;
    long gone = 0;
    if (lock_state(s) != REFEX_OK)
        return REFEX_E_STORE;
    params p = {0};
    refex_pg_text(&p, sender);
    refex_pg_blob(&p, id, 16);
    refex_pg_text(&p, recipient);
    if (refex_pg_cmd(s, Q_RECEIPT_DEL, &p, &gone) != REFEX_OK)
        return REFEX_E_STORE;
    return gone ? REFEX_OK : REFEX_E_NOTFOUND;
}

/* Read outside the lock: the broker ends each one with ack under it, which finds a delivery
 * another node ended already NOTFOUND, so no report is ever made twice. */
static int pg_expired(void *impl, int64_t now_ms, int limit, refex_store_expired_fn fn, void *ctx)
{
    pg_store *s = impl;
    params p = {0};
    refex_pg_int(&p, now_ms);
    refex_pg_int(&p, limit);
    PGresult *r = refex_pg_run(s, Q_EXPIRED, &p);
    if (!r)
        return REFEX_E_STORE;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetlength(r, i, 0) != 16)
            continue;
        if (fn(ctx, (const uint8_t *)PQgetvalue(r, i, 0), refex_pg_col_text(r, i, 1),
               refex_pg_col_text(r, i, 2)) != 0)
            break;
    }
    PQclear(r);
    return REFEX_OK;
}

static int pg_purge(void *impl, int64_t now_ms)
{
    pg_store *s = impl;
    if (lock_state(s) != REFEX_OK)
        return REFEX_E_STORE;
    params p = {0};
    refex_pg_int(&p, now_ms);
    return refex_pg_cmd(s, Q_PURGE, &p, NULL);
}

static int64_t pg_count(void *impl)
{
    pg_store *s = impl;
    PGresult *r = refex_pg_run(s, Q_COUNT, NULL);
    int64_t n = r && PQntuples(r) == 1 ? refex_pg_col_int(r, 0, 0) : -1;
    PQclear(r);
    return n;
}

static int64_t pg_live_bytes(void *impl)
{
    return ((pg_store *)impl)->live;
}

static const char *pg_refusal(void *impl)
{
    pg_store *s = impl;
    return s->refusal ? s->refusal : REFUSE_WRITE;
}

static uint64_t pg_put_seq(void *impl)
{
    return ((pg_store *)impl)->put_seq;
}

/* ---- identity ------------------------------------------------------------------------- */

/* Outside a batch, read again: another node may have renewed it since this one last held
 * the lock, and a WELCOME must name the store's generation as it is. */
static void pg_generation(void *impl, uint8_t out[16])
{
    pg_store *s = impl;
    if (!s->in_tx) {
        PGresult *r = refex_pg_run(s, Q_GENERATION, NULL);
        if (r && PQntuples(r) == 1 && PQgetlength(r, 0, 0) == 16)
            memcpy(s->generation, PQgetvalue(r, 0, 0), 16);
        PQclear(r);
    }
    memcpy(out, s->generation, 16);
}

static int pg_sender_high(void *impl, const char *sender, uint64_t *high)
{
    pg_store *s = impl;
    params p = {0};
    refex_pg_text(&p, sender);
    PGresult *r = refex_pg_run(s, Q_SENDER_HIGH, &p);
    if (!r)
        return REFEX_E_STORE;
    int64_t v = PQntuples(r) == 1 ? refex_pg_col_int(r, 0, 0) : 0;
    PQclear(r);
    *high = v > 0 ? (uint64_t)v : 0;
    return REFEX_OK;
}

static int pg_renew(void *impl)
{
    pg_store *s = impl;
    if (lock_state(s) != REFEX_OK)
        return REFEX_E_STORE;
    randombytes_buf(s->renewed, 16);
    s->renewing = 1; /* written with the state at commit */
    return REFEX_OK;
}

/* ---- nodes ---------------------------------------------------------------------------- */

static int pg_pending_stats(void *impl, refex_store_stats_fn fn, void *ctx)
{
    pg_store *s = impl;
    PGresult *r = refex_pg_run(s, Q_STATS, NULL);
    if (!r)
        return REFEX_E_STORE;
    for (int i = 0; i < PQntuples(r); i++)
        fn(ctx, refex_pg_col_text(r, i, 0), refex_pg_col_int(r, i, 1), refex_pg_col_int(r, i, 2));
    PQclear(r);
    return REFEX_OK;
}

static int pg_wake_fd(void *impl)
{
    pg_store *s = impl;
    return PQstatus(s->conn) == CONNECTION_OK ? PQsocket(s->conn) : -1;
}

/* Notifications may also have been read by libpq during any query: so this drains what
 * libpq holds, whether or not the descriptor was readable. */
static void pg_wakeups(void *impl, void (*fn)(void *ctx, const char *agency), void *ctx)
{
    pg_store *s = impl;
    PGnotify *n;
    if (s->in_tx || PQstatus(s->conn) != CONNECTION_OK || !PQconsumeInput(s->conn))
        return;
    while ((n = PQnotifies(s->conn)) != NULL) {
        if (n->extra && *n->extra)
            fn(ctx, n->extra);
        PQfreemem(n);
    }
}

static int pg_claim(void *impl, const char *agency, uint64_t *epoch)
{
    pg_store *s = impl;
    /* the state lock first, as every write of a batch takes it: no two nodes wait for each
     * other's locks in opposite orders */
    if (lock_state(s) != REFEX_OK)
        return REFEX_E_STORE;
    params p = {0};
    refex_pg_text(&p, agency);
    refex_pg_blob(&p, s->node, 16);
    PGresult *r = refex_pg_run(s, Q_CLAIM, &p);
    if (!r)
        return REFEX_E_STORE;
    int ok = PQntuples(r) == 1;
    if (ok)
        *epoch = (uint64_t)refex_pg_col_int(r, 0, 0);
    PQclear(r);
    return ok ? REFEX_OK : REFEX_E_STORE;
}

static int pg_holds(void *impl, const char *agency, uint64_t epoch)
{
    pg_store *s = impl;
    params p = {0};
    refex_pg_text(&p, agency);
    PGresult *r = refex_pg_run(s, Q_HOLDS, &p);
    if (!r)
        return -1;
    int held = PQntuples(r) == 1 && PQgetlength(r, 0, 0) == 16 &&
               memcmp(PQgetvalue(r, 0, 0), s->node, 16) == 0 &&
               (uint64_t)refex_pg_col_int(r, 0, 1) == epoch;
    PQclear(r);
    return held;
}

static void pg_destroy(void *impl)
{
    pg_store *s = impl;
    if (!s)
        return;
    if (s->conn && s->in_tx)
        end_tx(s, "ROLLBACK");
    PQfinish(s->conn);
    free(s);
}

static const refex_store_ops PG_OPS = {
    .name = "postgresql",
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .put = pg_put,
    .pending = pg_pending,
    .ack = pg_ack,
    .receipts = pg_receipts,
    .receipt_ack = pg_receipt_ack,
    .expired = pg_expired,
    .purge = pg_purge,
    .count = pg_count,
    .batch_alive = pg_batch_alive,
    .live_bytes = pg_live_bytes,
    .refusal = pg_refusal,
    .put_seq = pg_put_seq,
    .generation = pg_generation,
    .sender_high = pg_sender_high,
    .renew = pg_renew,
    .wake_fd = pg_wake_fd,
    .pending_stats = pg_pending_stats,
    .wakeups = pg_wakeups,
    .claim = pg_claim,
    .holds = pg_holds,
    .destroy = pg_destroy,
};

/* The server's notices (an IF NOT EXISTS that found the table, say) go to the log, not to
 * stderr. */
int refex_store_pg_open(const char *uri, uint64_t max_bytes, refex_store **out, char *err,
                        size_t errlen)
{
    /* Later parameters win over earlier: the URI's own connect_timeout or application_name,
     * if it has them, over these defaults. */
    const char *const keys[] = {
        "connect_timeout",  "application_name", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "options",          "dbname",          NULL};
    const char *const vals[] = {"5", "refex-broker",           "10", "5",
                                "3", REFEX_PG_SESSION_OPTIONS, uri,  NULL};
    int rc = REFEX_E_STORE;
    refex_store *self = calloc(1, sizeof *self);
    pg_store *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!self || !s) {
        free(self);
        free(s);
        return REFEX_E_NOMEM;
    }
    self->ops = &PG_OPS;
    self->impl = s;
    s->max_bytes = max_bytes;
    randombytes_buf(s->node, sizeof s->node);
    s->conn = PQconnectdbParams(keys, vals, 1);
    if (!s->conn) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    if (PQstatus(s->conn) != CONNECTION_OK) {
        const char *m = PQerrorMessage(s->conn);
        snprintf(err, errlen, "postgresql store: cannot connect: %.*s", (int)strcspn(m, "\n"), m);
        goto out;
    }
    PQsetNoticeProcessor(s->conn, refex_pg_on_notice, s);
    if ((rc = refex_pg_schema(s, err, errlen)) != REFEX_OK)
        goto out;
    if (refex_pg_prepare(s) != REFEX_OK) {
        snprintf(err, errlen, "postgresql store: cannot prepare the queue statements");
        rc = REFEX_E_STORE;
        goto out;
    }
    if ((rc = refex_pg_load(s, err, errlen)) != REFEX_OK)
        goto out;
    *out = self;
    self = NULL;
out:
    refex_store_destroy(&self);
    return rc;
}
