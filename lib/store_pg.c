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
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store.h"
#include "util.h"

#define TEXTOID  25
#define BYTEAOID 17
#define INT8OID  20
/* At most one connection attempt per RETRY_MS while the server is away. */
#define RETRY_MS 1000

static const char *const SCHEMA =
    "CREATE TABLE IF NOT EXISTS refex_state ("
    " id int PRIMARY KEY CHECK (id = 1), next_seq bigint NOT NULL, next_receipt bigint NOT NULL,"
    " live bigint NOT NULL, generation bytea NOT NULL);"
    "CREATE TABLE IF NOT EXISTS messages ("
    " seq bigint PRIMARY KEY, sender text NOT NULL, message_id bytea NOT NULL, envelope bytea,"
    " expires_ms bigint NOT NULL, stored_ms bigint NOT NULL, remaining int NOT NULL,"
    " UNIQUE (sender, message_id));"
    "CREATE INDEX IF NOT EXISTS messages_expiry ON messages(expires_ms);"
    "CREATE TABLE IF NOT EXISTS deliveries ("
    " recipient text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (recipient, seq));"
    "CREATE INDEX IF NOT EXISTS deliveries_seq ON deliveries(seq);"
    "CREATE TABLE IF NOT EXISTS receipts ("
    " seq bigint PRIMARY KEY, sender text NOT NULL, message_id bytea NOT NULL,"
    " recipient text NOT NULL, receipt bytea NOT NULL, UNIQUE (sender, message_id, recipient));"
    "CREATE INDEX IF NOT EXISTS receipts_sender ON receipts(sender, seq);"
    "CREATE TABLE IF NOT EXISTS senders (sender text PRIMARY KEY, high bigint NOT NULL);";

enum {
    Q_LOCK,
    Q_SAVE,
    Q_FIND,
    Q_PUT,
    Q_DELIVERY,
    Q_SENDER_PUT,
    Q_SENDER_HIGH,
    Q_PENDING,
    Q_UNDELIVER,
    Q_DONE,
    Q_DROP,
    Q_RECEIPT_PUT,
    Q_RECEIPTS,
    Q_RECEIPT_DEL,
    Q_EXPIRED,
    Q_PURGE,
    Q_COUNT,
    Q_GENERATION,
    Q_N
};

typedef struct {
    const char *sql;
    int n;
    Oid types[6];
} query;

#define T TEXTOID
#define B BYTEAOID
#define I INT8OID
static const query Q[Q_N] = {
    [Q_LOCK] = {"SELECT next_seq, next_receipt, live, generation FROM refex_state WHERE id = 1"
                " FOR UPDATE",
                0,
                {0}},
    [Q_SAVE] = {"UPDATE refex_state SET next_seq = $1, next_receipt = $2, live = $3,"
                " generation = $4 WHERE id = 1",
                4,
                {I, I, I, B}},
    [Q_FIND] = {"SELECT seq, remaining::int8, coalesce(length(envelope), 0)::int8 FROM messages"
                " WHERE sender = $1 AND message_id = $2",
                2,
                {T, B}},
    [Q_PUT] = {"INSERT INTO messages(seq, sender, message_id, envelope, expires_ms, stored_ms,"
               " remaining) VALUES ($1, $2, $3, $4, $5,"
               " (extract(epoch FROM now()) * 1000)::int8, $6)"
               " ON CONFLICT (sender, message_id) DO NOTHING",
               6,
               {I, T, B, B, I, I}},
    [Q_DELIVERY] = {"INSERT INTO deliveries(recipient, seq) VALUES ($1, $2)", 2, {T, I}},
    [Q_SENDER_PUT] = {"INSERT INTO senders(sender, high) VALUES ($1, $2) ON CONFLICT (sender)"
                      " DO UPDATE SET high = greatest(senders.high, excluded.high)",
                      2,
                      {T, I}},
    [Q_SENDER_HIGH] = {"SELECT high FROM senders WHERE sender = $1", 1, {T}},
    [Q_PENDING] = {"SELECT m.seq, m.message_id, m.sender, m.envelope FROM deliveries d"
                   " JOIN messages m ON m.seq = d.seq WHERE d.recipient = $1 AND d.seq > $2"
                   " ORDER BY d.seq LIMIT $3",
                   3,
                   {T, I, I}},
    [Q_UNDELIVER] = {"DELETE FROM deliveries WHERE recipient = $1 AND seq = $2", 2, {T, I}},
    [Q_DONE] = {"UPDATE messages SET remaining = remaining - 1 WHERE seq = $1", 1, {I}},
    /* The last delivery: the body goes, the row stays for duplicate detection. */
    [Q_DROP] = {"UPDATE messages SET remaining = 0, envelope = NULL WHERE seq = $1", 1, {I}},
    [Q_RECEIPT_PUT] = {"INSERT INTO receipts(seq, sender, message_id, recipient, receipt)"
                       " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                       5,
                       {I, T, B, T, B}},
    [Q_RECEIPTS] = {"SELECT seq, message_id, recipient, receipt FROM receipts WHERE sender = $1"
                    " AND seq > $2 ORDER BY seq LIMIT $3",
                    3,
                    {T, I, I}},
    [Q_RECEIPT_DEL] = {"DELETE FROM receipts WHERE sender = $1 AND message_id = $2 AND"
                       " recipient = $3",
                       3,
                       {T, B, T}},
    [Q_EXPIRED] = {"SELECT m.message_id, m.sender, d.recipient FROM messages m"
                   " JOIN deliveries d ON d.seq = m.seq WHERE m.expires_ms <= $1 LIMIT $2",
                   2,
                   {I, I}},
    [Q_PURGE] = {"DELETE FROM messages WHERE remaining = 0 AND expires_ms < $1", 1, {I}},
    [Q_COUNT] = {"SELECT count(*)::int8 FROM deliveries", 0, {0}},
    [Q_GENERATION] = {"SELECT generation, live FROM refex_state WHERE id = 1", 0, {0}},
};
#undef T
#undef B
#undef I

static const char *const REFUSE_FULL =
    "the broker's store is full (store_max reached); retry later";
static const char *const REFUSE_WRITE = "the broker could not store the message; retry later";

typedef struct {
    PGconn *conn;
    int prepared;              /* the statements exist on this connection */
    int in_tx, locked, failed; /* a batch is open; it holds the state lock; a write failed */
    int64_t next_seq, next_receipt, live;
    uint64_t max_bytes;
    const char *refusal;
    uint64_t put_seq;
    uint8_t generation[16];
    uint8_t renewed[16];
    int renewing;
    int64_t retry_ms; /* no new connection attempt before this (monotonic ms) */
} pg_store;

/* Parameters of one statement, all sent in binary: text as its bytes, bytea raw, int8 in
 * network order. */
typedef struct {
    const char *v[6];
    int len[6], fmt[6], n;
    uint8_t ints[6][8];
} params;

static void p_text(params *p, const char *s)
{
    p->v[p->n] = s;
    p->len[p->n] = (int)strlen(s);
    p->fmt[p->n++] = 1;
}

static void p_blob(params *p, const uint8_t *b, size_t len)
{
    p->v[p->n] = len ? (const char *)b : "";
    p->len[p->n] = (int)len;
    p->fmt[p->n++] = 1;
}

static void p_int(params *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        p->ints[p->n][i] = (uint8_t)(u >> (56 - 8 * i));
    p->v[p->n] = (const char *)p->ints[p->n];
    p->len[p->n] = 8;
    p->fmt[p->n++] = 1;
}

static int64_t col_int(const PGresult *r, int row, int col)
{
    const uint8_t *b = (const uint8_t *)PQgetvalue(r, row, col);
    uint64_t u = 0;
    if (PQgetlength(r, row, col) != 8)
        return 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | b[i];
    return (int64_t)u;
}

/* A text column of a binary result: its bytes, NUL-terminated by libpq. */
static const char *col_text(const PGresult *r, int row, int col)
{
    return PQgetvalue(r, row, col);
}

static void log_failure(pg_store *s, const char *what, const PGresult *r)
{
    const char *msg = r ? PQresultErrorMessage(r) : "";
    if (!msg || !*msg)
        msg = PQerrorMessage(s->conn);
    refex_log_error("store: postgresql: %s failed: %.*s", what, (int)strcspn(msg, "\n"), msg);
}

static int prepare_all(pg_store *s)
{
    char name[16];
    for (int i = 0; i < Q_N; i++) {
        snprintf(name, sizeof name, "q%d", i);
        PGresult *r = PQprepare(s->conn, name, Q[i].sql, Q[i].n, Q[i].types);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            log_failure(s, "prepare", r);
        PQclear(r);
        if (!ok)
            return REFEX_E_STORE;
    }
    s->prepared = 1;
    return REFEX_OK;
}

static int ensure_connection(pg_store *s);

/* Runs a kept statement; NULL (logged) if it failed. A failure inside a batch ends it. A
 * read outside a batch connects again first if the connection was lost. */
static PGresult *run(pg_store *s, int which, const params *p)
{
    char name[16];
    if (!s->in_tx && ensure_connection(s) != REFEX_OK)
        return NULL;
    if (!s->prepared)
        return NULL;
    snprintf(name, sizeof name, "q%d", which);
    PGresult *r = PQexecPrepared(s->conn, name, p ? p->n : 0, p ? p->v : NULL, p ? p->len : NULL,
                                 p ? p->fmt : NULL, 1);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    log_failure(s, Q[which].sql, r);
    PQclear(r);
    if (s->in_tx)
        s->failed = 1;
    return NULL;
}

/* A statement whose rows are not needed: REFEX_OK, and how many rows it touched. */
static int run_cmd(pg_store *s, int which, const params *p, long *touched)
{
    PGresult *r = run(s, which, p);
    if (!r)
        return REFEX_E_STORE;
    if (touched)
        *touched = strtol(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return REFEX_OK;
}

static int exec_plain(pg_store *s, const char *sql)
{
    PGresult *r = PQexec(s->conn, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        log_failure(s, sql, r);
    PQclear(r);
    return ok ? REFEX_OK : REFEX_E_STORE;
}

/* A lost connection is made again (libpq keeps the parameters, so target_session_attrs
 * finds the writable host again) and the statements prepared anew. */
static int ensure_connection(pg_store *s)
{
    if (PQstatus(s->conn) == CONNECTION_OK && s->prepared)
        return REFEX_OK;
    int64_t now = refex_mono_ms();
    if (now < s->retry_ms)
        return REFEX_E_STORE; /* tried a moment ago: each try may wait connect_timeout */
    s->retry_ms = now + RETRY_MS;
    s->prepared = 0;
    if (PQstatus(s->conn) != CONNECTION_OK) {
        refex_log_warn("store: postgresql: connection lost; connecting again");
        PQreset(s->conn);
        if (PQstatus(s->conn) != CONNECTION_OK) {
            log_failure(s, "connect", NULL);
            return REFEX_E_STORE;
        }
        refex_log_info("store: postgresql: connected to %s:%s", PQhost(s->conn), PQport(s->conn));
    }
    return prepare_all(s);
}

/* ---- the batch: one transaction, the state lock taken by its first write -------------- */

static int pg_begin(void *impl)
{
    pg_store *s = impl;
    if (s->in_tx)
        return REFEX_OK;
    if (ensure_connection(s) != REFEX_OK || exec_plain(s, "BEGIN") != REFEX_OK)
        return REFEX_E_STORE;
    s->in_tx = 1;
    s->locked = s->failed = s->renewing = 0;
    return REFEX_OK;
}

static int lock_state(pg_store *s)
{
    if (!s->in_tx || s->failed)
        return REFEX_E_STORE;
    if (s->locked)
        return REFEX_OK;
    PGresult *r = run(s, Q_LOCK, NULL);
    if (!r)
        return REFEX_E_STORE;
    int ok = PQntuples(r) == 1 && PQgetlength(r, 0, 3) == 16;
    if (ok) {
        s->next_seq = col_int(r, 0, 0);
        s->next_receipt = col_int(r, 0, 1);
        s->live = col_int(r, 0, 2);
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
        exec_plain(s, how);
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
        p_int(&p, s->next_seq);
        p_int(&p, s->next_receipt);
        p_int(&p, s->live);
        p_blob(&p, s->renewing ? s->renewed : s->generation, 16);
        rc = run_cmd(s, Q_SAVE, &p, NULL);
    }
    if (rc != REFEX_OK) {
        end_tx(s, "ROLLBACK");
        s->renewing = 0;
        return REFEX_E_STORE;
    }
    /* COMMIT returns once the server (and a synchronous standby) has it durable; if the
     * connection breaks first the outcome is unknown, and the batch is refused: a sender
     * resends, and finds its message stored as a duplicate if it was. */
    rc = exec_plain(s, "COMMIT");
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
    p_text(&p, sender);
    p_blob(&p, id, 16);
    PGresult *r = run(s, Q_FIND, &p);
    if (!r)
        return -1;
    int found = PQntuples(r) == 1;
    if (found) {
        *seq = col_int(r, 0, 0);
        *remaining = col_int(r, 0, 1);
        *env_len = col_int(r, 0, 2);
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
    p_int(&p, s->next_seq);
    p_text(&p, sender);
    p_blob(&p, id, 16);
    p_blob(&p, env, env_len);
    p_int(&p, expires_at_ms);
    p_int(&p, (int64_t)n_rcpt);
    if (run_cmd(s, Q_PUT, &p, &added) != REFEX_OK)
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
        p_text(&d, rcpt[i]);
        p_int(&d, seq);
        if (run_cmd(s, Q_DELIVERY, &d, NULL) != REFEX_OK)
            return REFEX_E_STORE;
    }
    params h = {0};
    p_text(&h, sender);
    p_int(&h, seq);
    if (run_cmd(s, Q_SENDER_PUT, &h, NULL) != REFEX_OK)
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
    p_text(&p, recipient);
    p_int(&p, after);
    p_int(&p, limit);
    PGresult *r = run(s, Q_PENDING, &p);
    if (!r)
        return REFEX_E_STORE;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetlength(r, i, 1) != 16)
            continue;
        if (fn(ctx, col_int(r, i, 0), (const uint8_t *)PQgetvalue(r, i, 1), col_text(r, i, 2),
               (const uint8_t *)PQgetvalue(r, i, 3), (size_t)PQgetlength(r, i, 3)) != 0)
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
    p_text(&p, recipient);
    p_int(&p, seq);
    if (run_cmd(s, Q_UNDELIVER, &p, &gone) != REFEX_OK)
        return REFEX_E_STORE;
    if (!gone)
        return REFEX_E_NOTFOUND;
    params d = {0};
    p_int(&d, seq);
    if (run_cmd(s, remaining > 1 ? Q_DONE : Q_DROP, &d, NULL) != REFEX_OK)
        return REFEX_E_STORE;
    params rp = {0};
    p_int(&rp, s->next_receipt);
    p_text(&rp, sender);
    p_blob(&rp, id, 16);
    p_text(&rp, recipient);
    p_blob(&rp, receipt, receipt_len);
    if (run_cmd(s, Q_RECEIPT_PUT, &rp, NULL) != REFEX_OK)
        return REFEX_E_STORE;
    s->next_receipt++;
    if (remaining <= 1)
        s->live -= env_len; /* the last delivery: the envelope is gone */
    return REFEX_OK;
}

static int pg_receipts(void *impl, const char *sender, int64_t after, int limit,
                       refex_store_receipt_fn fn, void *ctx)
{
    pg_store *s = impl;
    params p = {0};
    p_text(&p, sender);
    p_int(&p, after);
    p_int(&p, limit);
    PGresult *r = run(s, Q_RECEIPTS, &p);
    if (!r)
        return REFEX_E_STORE;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetlength(r, i, 1) != 16)
            continue;
        if (fn(ctx, col_int(r, i, 0), (const uint8_t *)PQgetvalue(r, i, 1), col_text(r, i, 2),
               (const uint8_t *)PQgetvalue(r, i, 3), (size_t)PQgetlength(r, i, 3)) != 0)
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
    p_text(&p, sender);
    p_blob(&p, id, 16);
    p_text(&p, recipient);
    if (run_cmd(s, Q_RECEIPT_DEL, &p, &gone) != REFEX_OK)
        return REFEX_E_STORE;
    return gone ? REFEX_OK : REFEX_E_NOTFOUND;
}

/* Read outside the lock: the broker ends each one with ack under it, which finds a delivery
 * another node ended already NOTFOUND, so no report is ever made twice. */
static int pg_expired(void *impl, int64_t now_ms, int limit, refex_store_expired_fn fn, void *ctx)
{
    pg_store *s = impl;
    params p = {0};
    p_int(&p, now_ms);
    p_int(&p, limit);
    PGresult *r = run(s, Q_EXPIRED, &p);
    if (!r)
        return REFEX_E_STORE;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetlength(r, i, 0) != 16)
            continue;
        if (fn(ctx, (const uint8_t *)PQgetvalue(r, i, 0), col_text(r, i, 1), col_text(r, i, 2)) !=
            0)
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
    p_int(&p, now_ms);
    return run_cmd(s, Q_PURGE, &p, NULL);
}

static int64_t pg_count(void *impl)
{
    pg_store *s = impl;
    PGresult *r = run(s, Q_COUNT, NULL);
    int64_t n = r && PQntuples(r) == 1 ? col_int(r, 0, 0) : -1;
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

static void pg_generation(void *impl, uint8_t out[16])
{
    memcpy(out, ((pg_store *)impl)->generation, 16);
}

static int pg_sender_high(void *impl, const char *sender, uint64_t *high)
{
    pg_store *s = impl;
    params p = {0};
    p_text(&p, sender);
    PGresult *r = run(s, Q_SENDER_HIGH, &p);
    if (!r)
        return REFEX_E_STORE;
    int64_t v = PQntuples(r) == 1 ? col_int(r, 0, 0) : 0;
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
    .destroy = pg_destroy,
};

/* The server's notices (an IF NOT EXISTS that found the table, say) go to the log, not to
 * stderr. */
static void on_notice(void *arg, const char *msg)
{
    (void)arg;
    refex_log_debug("store: postgresql: %.*s", (int)strcspn(msg, "\n"), msg);
}

/* The tables, and the state row with a first generation if the store is new. Concurrent
 * first starts of two nodes are serialised by an advisory lock. */
static int schema_create(pg_store *s, char *err, size_t errlen)
{
    uint8_t gen[16];
    char sql[256], hex[33];
    randombytes_buf(gen, 16);
    refex_hex_encode(hex, gen, 16);
    snprintf(sql, sizeof sql,
             "INSERT INTO refex_state(id, next_seq, next_receipt, live, generation)"
             " VALUES (1, 1, 1, 0, '\\x%s') ON CONFLICT (id) DO NOTHING",
             hex);
    if (exec_plain(s, "BEGIN") != REFEX_OK ||
        exec_plain(s, "SELECT pg_advisory_xact_lock(7600)") != REFEX_OK ||
        exec_plain(s, SCHEMA) != REFEX_OK || exec_plain(s, sql) != REFEX_OK ||
        exec_plain(s, "COMMIT") != REFEX_OK) {
        snprintf(err, errlen, "postgresql store: cannot create the queue tables: %.200s",
                 PQerrorMessage(s->conn));
        exec_plain(s, "ROLLBACK");
        return REFEX_E_STORE;
    }
    return REFEX_OK;
}

static int load_state(pg_store *s, char *err, size_t errlen)
{
    char hex[33];
    PGresult *r = run(s, Q_GENERATION, NULL);
    int ok = r && PQntuples(r) == 1 && PQgetlength(r, 0, 0) == 16;
    if (ok) {
        memcpy(s->generation, PQgetvalue(r, 0, 0), 16);
        s->live = col_int(r, 0, 1);
    }
    PQclear(r);
    if (!ok) {
        snprintf(err, errlen, "postgresql store: the refex_state row is missing or damaged");
        return REFEX_E_STORE;
    }
    refex_hex_encode(hex, s->generation, 16);
    refex_log_info("store: postgresql at %s:%s, generation %s, %lld envelope bytes queued",
                   PQhost(s->conn), PQport(s->conn), hex, (long long)s->live);
    return REFEX_OK;
}

int refex_store_pg_open(const char *uri, uint64_t max_bytes, refex_store **out, char *err,
                        size_t errlen)
{
    /* Later parameters win over earlier: the URI's own connect_timeout or application_name,
     * if it has them, over these defaults. */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {"5", "refex-broker", uri, NULL};
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
    PQsetNoticeProcessor(s->conn, on_notice, NULL);
    if ((rc = schema_create(s, err, errlen)) != REFEX_OK)
        goto out;
    if (prepare_all(s) != REFEX_OK) {
        snprintf(err, errlen, "postgresql store: cannot prepare the queue statements");
        rc = REFEX_E_STORE;
        goto out;
    }
    if ((rc = load_state(s, err, errlen)) != REFEX_OK)
        goto out;
    *out = self;
    self = NULL;
out:
    refex_store_destroy(&self);
    return rc;
}
