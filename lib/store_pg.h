/* Private to the PostgreSQL queue store: store_pg.c has the operations and the batch,
 * store_pg_conn.c the connection, the statements and the schema. Not for any other module. */
#ifndef REFEX_STORE_PG_H
#define REFEX_STORE_PG_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#define TEXTOID  25
#define BYTEAOID 17
#define INT8OID  20
/* At most one connection attempt per RETRY_MS while the server is away. */
#define RETRY_MS    1000
#define PG_WAKE_MAX 64
/* The channel broker nodes wake each other on (LISTEN/NOTIFY). */
#define PG_WAKE_CHANNEL "refex_wake"

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
    Q_CLAIM,
    Q_HOLDS,
    Q_NOTIFY,
    Q_STATS,
    Q_N
};

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
    int unreplicated; /* the server warned that a commit might not have been replicated */
    uint8_t node[16]; /* this node: random at open, the owner of the claims it takes */
    /* The agencies the open batch stored deliveries or receipts for: told to the other
     * nodes (NOTIFY) when it commits; all of them ("*") past PG_WAKE_MAX. */
    char wake[PG_WAKE_MAX][64];
    size_t n_wake;
    int wake_all;
} pg_store;

/* Parameters of one statement, all sent in binary: text as its bytes, bytea raw, int8 in
 * network order. */
typedef struct {
    const char *v[6];
    int len[6], fmt[6], n;
    uint8_t ints[6][8];
} params;

/* Statement parameters, each sent in binary. */
void refex_pg_text(params *p, const char *s);
void refex_pg_blob(params *p, const uint8_t *b, size_t len);
void refex_pg_int(params *p, int64_t v);
/* Columns of a binary result: int8, and text (NUL-terminated by libpq). */
int64_t refex_pg_col_int(const PGresult *r, int row, int col);
const char *refex_pg_col_text(const PGresult *r, int row, int col);
void refex_pg_log_failure(pg_store *s, const char *what, const PGresult *r);
int refex_pg_prepare(pg_store *s);
/* A kept statement's result (PQclear it); NULL, logged, if it failed, which ends a batch. */
PGresult *refex_pg_run(pg_store *s, int which, const params *p);
/* A kept statement whose rows are not needed; touched gets how many it changed. */
int refex_pg_cmd(pg_store *s, int which, const params *p, long *touched);
int refex_pg_exec(pg_store *s, const char *sql);
/* The connection is up with its statements prepared, made again if it was lost. */
int refex_pg_connected(pg_store *s);
void refex_pg_on_notice(void *arg, const char *msg);
int refex_pg_schema(pg_store *s, char *err, size_t errlen);
int refex_pg_load(pg_store *s, char *err, size_t errlen);

#endif
