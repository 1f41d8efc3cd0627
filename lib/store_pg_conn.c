/* The PostgreSQL store's connection (store_pg.h): its statements, run with binary
 * parameters and results, the connection made again when lost, and the schema. Not for the
 * queue operations (store_pg.c). */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store.h"
#include "store_pg.h"
#include "util.h"

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
    "CREATE TABLE IF NOT EXISTS senders (sender text PRIMARY KEY, high bigint NOT NULL);"
    "CREATE TABLE IF NOT EXISTS claims ("
    " agency text PRIMARY KEY, node bytea NOT NULL, epoch bigint NOT NULL);";

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
    [Q_CLAIM] = {"INSERT INTO claims(agency, node, epoch) VALUES ($1, $2, 1)"
                 " ON CONFLICT (agency) DO UPDATE SET node = excluded.node,"
                 " epoch = claims.epoch + 1 RETURNING epoch",
                 2,
                 {T, B}},
    [Q_HOLDS] = {"SELECT node, epoch FROM claims WHERE agency = $1", 1, {T}},
    [Q_STATS] = {"SELECT d.recipient, count(*)::int8, min(m.stored_ms) FROM deliveries d"
                 " JOIN messages m ON m.seq = d.seq GROUP BY d.recipient",
                 0,
                 {0}},
    [Q_NOTIFY] = {"SELECT pg_notify('" PG_WAKE_CHANNEL "', $1)", 1, {T}},
    [Q_GENERATION] = {"SELECT generation, live FROM refex_state WHERE id = 1", 0, {0}},
};
#undef T
#undef B
#undef I

void refex_pg_text(params *p, const char *s)
{
    p->v[p->n] = s;
    p->len[p->n] = (int)strlen(s);
    p->fmt[p->n++] = 1;
}

void refex_pg_blob(params *p, const uint8_t *b, size_t len)
{
    p->v[p->n] = len ? (const char *)b : "";
    p->len[p->n] = (int)len;
    p->fmt[p->n++] = 1;
}

void refex_pg_int(params *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        p->ints[p->n][i] = (uint8_t)(u >> (56 - 8 * i));
    p->v[p->n] = (const char *)p->ints[p->n];
    p->len[p->n] = 8;
    p->fmt[p->n++] = 1;
}

int64_t refex_pg_col_int(const PGresult *r, int row, int col)
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
const char *refex_pg_col_text(const PGresult *r, int row, int col)
{
    return PQgetvalue(r, row, col);
}

void refex_pg_log_failure(pg_store *s, const char *what, const PGresult *r)
{
    const char *msg = r ? PQresultErrorMessage(r) : "";
    if (!msg || !*msg)
        msg = PQerrorMessage(s->conn);
    refex_log_error("store: postgresql: %s failed: %.*s", what, (int)strcspn(msg, "\n"), msg);
}

int refex_pg_prepare(pg_store *s)
{
    char name[16];
    /* what a failed earlier attempt on this connection prepared would collide */
    if (refex_pg_exec(s, "DEALLOCATE ALL") != REFEX_OK)
        return REFEX_E_STORE;
    for (int i = 0; i < Q_N; i++) {
        snprintf(name, sizeof name, "q%d", i);
        PGresult *r = PQprepare(s->conn, name, Q[i].sql, Q[i].n, Q[i].types);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            refex_pg_log_failure(s, "prepare", r);
        PQclear(r);
        if (!ok)
            return REFEX_E_STORE;
    }
    /* every connection listens for the other nodes' wake-ups (store_pg.c) */
    if (refex_pg_exec(s, "LISTEN " PG_WAKE_CHANNEL) != REFEX_OK)
        return REFEX_E_STORE;
    s->prepared = 1;
    return REFEX_OK;
}

/* Runs a kept statement; NULL (logged) if it failed. A failure inside a batch ends it. A
 * read outside a batch connects again first if the connection was lost. */
PGresult *refex_pg_run(pg_store *s, int which, const params *p)
{
    char name[16];
    if (!s->in_tx && refex_pg_connected(s) != REFEX_OK)
        return NULL;
    if (!s->prepared)
        return NULL;
    snprintf(name, sizeof name, "q%d", which);
    PGresult *r = PQexecPrepared(s->conn, name, p ? p->n : 0, p ? p->v : NULL, p ? p->len : NULL,
                                 p ? p->fmt : NULL, 1);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return r;
    refex_pg_log_failure(s, Q[which].sql, r);
    PQclear(r);
    if (s->in_tx)
        s->failed = 1;
    return NULL;
}

/* A statement whose rows are not needed: REFEX_OK, and how many rows it touched. */
int refex_pg_cmd(pg_store *s, int which, const params *p, long *touched)
{
    PGresult *r = refex_pg_run(s, which, p);
    if (!r)
        return REFEX_E_STORE;
    if (touched)
        *touched = strtol(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return REFEX_OK;
}

int refex_pg_exec(pg_store *s, const char *sql)
{
    PGresult *r = PQexec(s->conn, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        refex_pg_log_failure(s, sql, r);
    PQclear(r);
    return ok ? REFEX_OK : REFEX_E_STORE;
}

/* A lost connection is made again (libpq keeps the parameters, so target_session_attrs
 * finds the writable host again) and the statements prepared anew. */
int refex_pg_connected(pg_store *s)
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
            refex_pg_log_failure(s, "connect", NULL);
            return REFEX_E_STORE;
        }
        refex_log_info("store: postgresql: connected to %s:%s", PQhost(s->conn), PQport(s->conn));
    }
    return refex_pg_prepare(s);
}

void refex_pg_on_notice(void *arg, const char *msg)
{
    pg_store *s = arg;
    /* "... The transaction has already committed locally, but might not have been
     * replicated to the standby." (a cancelled wait for synchronous replication) */
    if (s && strstr(msg, "might not have been replicated"))
        s->unreplicated = 1;
    refex_log_debug("store: postgresql: %.*s", (int)strcspn(msg, "\n"), msg);
}

/* The tables, and the state row with a first generation if the store is new. Concurrent
 * first starts of two nodes are serialised by an advisory lock. */
int refex_pg_schema(pg_store *s, char *err, size_t errlen)
{
    uint8_t gen[16];
    char sql[256], hex[33];
    randombytes_buf(gen, 16);
    refex_hex_encode(hex, gen, 16);
    snprintf(sql, sizeof sql,
             "INSERT INTO refex_state(id, next_seq, next_receipt, live, generation)"
             " VALUES (1, 1, 1, 0, '\\x%s') ON CONFLICT (id) DO NOTHING",
             hex);
    if (refex_pg_exec(s, "BEGIN") != REFEX_OK ||
        refex_pg_exec(s, "SELECT pg_advisory_xact_lock(7600)") != REFEX_OK ||
        refex_pg_exec(s, SCHEMA) != REFEX_OK || refex_pg_exec(s, sql) != REFEX_OK ||
        refex_pg_exec(s, "COMMIT") != REFEX_OK) {
        snprintf(err, errlen, "postgresql store: cannot create the queue tables: %.200s",
                 PQerrorMessage(s->conn));
        refex_pg_exec(s, "ROLLBACK");
        return REFEX_E_STORE;
    }
    return REFEX_OK;
}

int refex_pg_load(pg_store *s, char *err, size_t errlen)
{
    char hex[33];
    PGresult *r = refex_pg_run(s, Q_GENERATION, NULL);
    int ok = r && PQntuples(r) == 1 && PQgetlength(r, 0, 0) == 16;
    if (ok) {
        memcpy(s->generation, PQgetvalue(r, 0, 0), 16);
        s->live = refex_pg_col_int(r, 0, 1);
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
