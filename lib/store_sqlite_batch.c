/* The SQLite queue store's batch: one transaction per poll cycle (group commit), a
 * savepoint per op, the pages a batch freed given back at its commit, and the survival of a
 * write failure that ends SQLite's transaction (its acknowledgements are redone in a new
 * one; only its messages are lost). Not for the operations themselves (store_sqlite.c). */
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "store.h"
#include "store_sqlite.h"

void refex_sqstore_redo_clear(sq_store *s)
{
    for (size_t i = 0; i < s->n_redo; i++) {
        free(s->redo[i].recipient);
        free(s->redo[i].sender);
        free(s->redo[i].who);
        free(s->redo[i].receipt);
    }
    s->n_redo = 0;
}

/* Remembers a successful acknowledgement of the open batch. REFEX_E_NOMEM if it cannot. */
int refex_sqstore_redo_keep(sq_store *s, const char *recipient, const char *sender, const char *who,
                            const uint8_t id[16], const uint8_t *receipt, size_t receipt_len)
{
    if (s->n_redo == s->cap_redo) {
        size_t cap = s->cap_redo ? 2 * s->cap_redo : 64;
        redo_op *r = realloc(s->redo, cap * sizeof *r);
        if (!r)
            return REFEX_E_NOMEM;
        s->redo = r;
        s->cap_redo = cap;
    }
    redo_op *op = &s->redo[s->n_redo];
    memset(op, 0, sizeof *op);
    memcpy(op->id, id, 16);
    op->recipient = recipient ? strdup(recipient) : NULL;
    op->sender = strdup(sender);
    op->who = who ? strdup(who) : NULL;
    op->receipt = receipt_len ? malloc(receipt_len) : NULL;
    op->receipt_len = receipt_len;
    s->n_redo++;
    if ((recipient && !op->recipient) || !op->sender || (who && !op->who) ||
        (receipt_len && !op->receipt))
        return REFEX_E_NOMEM; /* freed by redo_clear */
    if (receipt_len)
        memcpy(op->receipt, receipt, receipt_len);
    return REFEX_OK;
}

static void batch_reset(sq_store *s)
{
    refex_sqstore_redo_clear(s);
    s->live = s->live_done;
    s->n_puts = 0;
    s->puts_lost = 0;
    s->renewing = 0;
}

/* Runs one of the batch's control statements (BEGIN, COMMIT, SAVEPOINT ...), kept on the
 * connection (refex_db_cached) rather than parsed from text at every op; SQLite's code, for
 * refex_sqstore_write_err. */
static int run(sq_store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (refex_db_cached(s->db, sql, &st) != REFEX_OK)
        return sqlite3_errcode(s->db) != SQLITE_OK ? sqlite3_errcode(s->db) : SQLITE_NOMEM;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    refex_db_done(st, 0);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int refex_sqstore_begin(void *impl)
{
    sq_store *s = impl;
    if (s->in_tx)
        return REFEX_OK;
    batch_reset(s);
    int rc = run(s, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK)
        return refex_sqstore_write_err(s, rc);
    s->in_tx = 1;
    return REFEX_OK;
}

/* Gives the pages freed by the batch (delivered envelopes, purged rows) back to the file
 * system, in the batch's own transaction. Cheap: only when the freelist is not empty. */
static void give_back_pages(sq_store *s)
{
    if (!s->incremental)
        return;
    sqlite3_stmt *st = refex_sqstore_stmt(s, S_FREELIST);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (n > 0 && run(s, "PRAGMA incremental_vacuum") != SQLITE_OK)
        refex_log_warn("store: incremental vacuum failed: %s", sqlite3_errmsg(s->db));
}

/* SQLite ended the batch's transaction under a failed write (a full disk or the size
 * backstop): start a new one and redo the batch's acknowledgements, which must not be lost
 * for a message that did not fit. The batch's messages are lost: commit refuses them. */
static int revive(sq_store *s)
{
    s->live = s->live_done;
    s->puts_lost = s->n_puts > 0;
    s->renewing = 0; /* a new generation written in the ended transaction is gone with it */
    if (run(s, "BEGIN IMMEDIATE") != SQLITE_OK) {
        refex_log_error("store: cannot restart the batch: %s", sqlite3_errmsg(s->db));
        return REFEX_E_STORE;
    }
    for (size_t i = 0; i < s->n_redo; i++) {
        const redo_op *op = &s->redo[i];
        int rc = refex_sqstore_unit(s, 1, 0);
        if (rc == REFEX_OK)
            rc = op->recipient ? refex_sqstore_ack_one(s, op->recipient, op->sender, op->id,
                                                       op->receipt, op->receipt_len)
                               : refex_sqstore_receipt_del(s, op->sender, op->id, op->who);
        if (rc == REFEX_OK || rc == REFEX_E_NOTFOUND)
            rc = refex_sqstore_unit(s, 0, 1);
        if (rc != REFEX_OK) {
            refex_log_error("store: cannot redo the batch's acknowledgements");
            run(s, "ROLLBACK");
            return REFEX_E_STORE;
        }
    }
    refex_log_warn("store: a write failure ended the batch; %zu acknowledgement(s) redone, "
                   "%zu message(s) of the batch refused",
                   s->n_redo, s->n_puts);
    return REFEX_OK;
}

/* After a write failed: if SQLite ended the transaction, revive it. REFEX_OK if the batch is
 * usable again. */
int refex_sqstore_after_failure(sq_store *s)
{
    if (!s->in_tx || !sqlite3_get_autocommit(s->db))
        return s->in_tx ? REFEX_OK : REFEX_E_STORE;
    return revive(s);
}

int refex_sqstore_commit(void *impl)
{
    sq_store *s = impl;
    if (!s->in_tx)
        return REFEX_OK;
    int rc = refex_sqstore_after_failure(s);
    if (rc == REFEX_OK) {
        give_back_pages(s);
        rc = refex_sqstore_write_err(s, run(s, "COMMIT"));
    }
    if (rc != REFEX_OK && !sqlite3_get_autocommit(s->db))
        run(s, "ROLLBACK");
    if (rc == REFEX_OK)
        s->live_done = s->live;
    if (rc == REFEX_OK && s->renewing)
        refex_sqstore_renewed(s); /* only now is the new generation the store's */
    int lost = s->puts_lost;
    s->in_tx = 0;
    batch_reset(s);
    if (rc == REFEX_OK && lost)
        return REFEX_E_STORE; /* the acknowledgements are durable; the messages are not */
    return rc == REFEX_OK ? REFEX_OK : REFEX_E_STORE;
}

void refex_sqstore_rollback(void *impl)
{
    sq_store *s = impl;
    if (!sqlite3_get_autocommit(s->db))
        run(s, "ROLLBACK");
    s->in_tx = 0;
    batch_reset(s);
}

/* Each write op runs inside a savepoint, so a failure undoes just that op and the rest of
 * the batch can still commit. */
int refex_sqstore_unit(sq_store *s, int begin, int ok)
{
    if (begin)
        return refex_sqstore_write_err(s, run(s, "SAVEPOINT op"));
    if (ok)
        return refex_sqstore_write_err(s, run(s, "RELEASE op"));
    if (!sqlite3_get_autocommit(s->db)) {
        run(s, "ROLLBACK TO op");
        run(s, "RELEASE op");
    }
    return REFEX_OK;
}
