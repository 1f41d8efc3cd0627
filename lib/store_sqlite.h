/* Private to the SQLite queue store (store_sqlite.c: the operations; store_sqlite_batch.c:
 * the batch's transaction and its survival of a write failure). Not for any other module. */
#ifndef REFEX_STORE_SQLITE_H
#define REFEX_STORE_SQLITE_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

enum {
    S_PUT,
    S_DELIVERY,
    S_PENDING,
    S_FIND,
    S_UNDELIVER,
    S_DONE,
    S_DROP,
    S_KEEP,
    S_RECEIPT_PUT,
    S_RECEIPTS,
    S_RECEIPT_DEL,
    S_EXPIRED,
    S_PURGE,
    S_COUNT,
    S_LIVE,
    S_FREELIST,
    S_SENDER_PUT,
    S_SENDER_HIGH,
    S_STATS,
    S_N
};

/* An acknowledgement of the open batch, kept so it can be redone if SQLite ends the batch's
 * transaction (recipient NULL: a receipt ack, `who` being the receipt's recipient). */
typedef struct {
    char *recipient, *sender, *who;
    uint8_t id[16];
    uint8_t *receipt;
    size_t receipt_len;
} redo_op;

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *st[S_N];
    int in_tx;
    int incremental;         /* auto_vacuum = INCREMENTAL: freed pages can be given back */
    uint64_t max_bytes;      /* live envelope bytes allowed; 0: no limit */
    int64_t live, live_done; /* live envelope bytes: in the open batch, and committed */
    size_t n_puts;           /* messages put in the open batch */
    int puts_lost;           /* the batch's transaction ended under them: refuse the batch's */
    const char *refusal;     /* why the last put was refused, for the sender */
    uint64_t put_seq;        /* seq of the message the last put stored or found */
    uint8_t generation[16];
    uint8_t renewed[16]; /* a new generation written in the open batch, */
    int renewing;        /* adopted when it commits */
    redo_op *redo;
    size_t n_redo, cap_redo;
} sq_store;

/* A kept statement, reset and unbound. */
sqlite3_stmt *refex_sqstore_stmt(sq_store *s, int which);
/* SQLite's rc as a refex code: REFEX_E_DUPLICATE for constraints, else REFEX_E_STORE. */
int refex_sqstore_write_err(sq_store *s, int rc);
int refex_sqstore_ack_one(sq_store *s, const char *recipient, const char *sender,
                          const uint8_t id[16], const uint8_t *receipt, size_t receipt_len);
int refex_sqstore_receipt_del(sq_store *s, const char *sender, const uint8_t id[16],
                              const char *recipient);

/* store_sqlite_meta.c: the store's identity. check: before the schema is made, whether an
 * existing file (existed) still has its tables; *fresh says a new generation is due. */
int refex_sqstore_check(sq_store *s, const char *path, int existed, unsigned flags, int *fresh,
                        char *err, size_t errlen);
int refex_sqstore_identity(sq_store *s, int fresh, char *err, size_t errlen);
int refex_sqstore_renew(void *impl);
/* The batch that wrote a new generation committed: it is the store's now. */
void refex_sqstore_renewed(sq_store *s);
void refex_sqstore_generation(void *impl, uint8_t out[16]);
int refex_sqstore_sender_high(void *impl, const char *sender, uint64_t *high);
int refex_sqstore_sender_put(sq_store *s, const char *sender, int64_t seq);

/* store_sqlite_batch.c */
int refex_sqstore_begin(void *impl);
int refex_sqstore_commit(void *impl);
void refex_sqstore_rollback(void *impl);
/* A savepoint around one op: begin, or end it keeping (ok) or undoing its work. */
int refex_sqstore_unit(sq_store *s, int begin, int ok);
/* After a failed write: REFEX_OK if the batch is usable (revived if SQLite had ended it). */
int refex_sqstore_after_failure(sq_store *s);
void refex_sqstore_redo_clear(sq_store *s);
int refex_sqstore_redo_keep(sq_store *s, const char *recipient, const char *sender, const char *who,
                            const uint8_t id[16], const uint8_t *receipt, size_t receipt_len);

#endif
