/* One small SQL interface over SQLite and PostgreSQL, for the broker's state beside its queue
 * (witnessed checkpoints, case records): the same statements run on a SQLite file or on the
 * PostgreSQL database the queue is in. Statements are written for SQLite with ? or ?N
 * parameters; on PostgreSQL they become $N. Not for the queue, whose hot path has its own
 * backends (store_sqlite.c, store_pg.c). */
#ifndef REFEX_SQLDB_H
#define REFEX_SQLDB_H

#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"

typedef struct refex_sql refex_sql;
typedef struct refex_sql_stmt refex_sql_stmt;

#define REFEX_SQL_ROW  1
#define REFEX_SQL_DONE 0

/* where: a file path (SQLite: WAL, synchronous=FULL) or a postgresql:// URI. */
int refex_sql_open(const char *where, refex_sql **out, char *err, size_t errlen) REFEX_NODISCARD;
void refex_sql_close(refex_sql **db_p);
int refex_sql_is_pg(const refex_sql *db);
/* Statements without parameters or rows (schema). */
int refex_sql_exec(refex_sql *db, const char *sql) REFEX_NODISCARD;
/* Creates tables: lite on SQLite, pg on PostgreSQL (under a lock, for nodes that start
 * together). */
int refex_sql_schema(refex_sql *db, const char *lite, const char *pg) REFEX_NODISCARD;
int refex_sql_begin(refex_sql *db) REFEX_NODISCARD;
int refex_sql_commit(refex_sql *db) REFEX_NODISCARD;
void refex_sql_rollback(refex_sql *db);
/* In a transaction: holds a lock on key until it ends, across every node on the database
 * (PostgreSQL's advisory lock); on SQLite the write transaction itself is the lock. */
int refex_sql_lock(refex_sql *db, const char *key) REFEX_NODISCARD;

int refex_sql_prepare(refex_sql *db, const char *sql, refex_sql_stmt **out) REFEX_NODISCARD;
void refex_sql_finalize(refex_sql_stmt **st_p);
/* Parameters count from 1; text and blobs are copied. */
void refex_sql_bind_text(refex_sql_stmt *st, int i, const char *s);
void refex_sql_bind_blob(refex_sql_stmt *st, int i, const void *p, size_t len);
void refex_sql_bind_int(refex_sql_stmt *st, int i, int64_t v);
/* REFEX_SQL_ROW, REFEX_SQL_DONE, or a negative refex error: REFEX_E_DUPLICATE for a
 * constraint, REFEX_E_STORE for anything else. */
int refex_sql_step(refex_sql_stmt *st);
/* Columns of the current row, from 0. A boolean reads as 0 or 1. */
int64_t refex_sql_int(refex_sql_stmt *st, int col);
const char *refex_sql_text(refex_sql_stmt *st, int col);
const void *refex_sql_blob(refex_sql_stmt *st, int col);
size_t refex_sql_bytes(refex_sql_stmt *st, int col);
/* Rows the last step of a write changed. */
int64_t refex_sql_changes(refex_sql_stmt *st);

#endif
