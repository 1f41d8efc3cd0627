/* SQLite helpers: open with the durability settings refex relies on (WAL,
 * synchronous=FULL), transactions, and translation of SQLite errors to refex codes.
 * Every module that touches SQLite goes through here. */
#ifndef REFEX_DB_H
#define REFEX_DB_H

#include <sqlite3.h>
#include <stddef.h>

#include "refex/error.h"

int refex_db_open(const char *path, int readonly, sqlite3 **out, char *err,
                  size_t errlen) REFEX_NODISCARD;
/* Finalizes the connection's kept statements (refex_db_cached), then closes it. */
void refex_db_close(sqlite3 **db_p);
/* Runs SQL without results; logs the SQLite message on failure. */
int refex_db_exec(sqlite3 *db, const char *sql) REFEX_NODISCARD;
int refex_db_begin(sqlite3 *db) REFEX_NODISCARD; /* BEGIN IMMEDIATE */
int refex_db_commit(sqlite3 *db) REFEX_NODISCARD;
void refex_db_rollback(sqlite3 *db);
/* Prepares, logging the SQLite message on failure. The caller finalizes *out. */
int refex_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out) REFEX_NODISCARD;
/* The connection's kept statement for sql, prepared on first use and finalized by
 * refex_db_close; reset, with its bindings cleared. sql should have static storage (a
 * literal): its address is the key. Hand the statement back with refex_db_done before
 * asking for the same sql again, so that no statement holds a read open between uses; do
 * not finalize it. */
int refex_db_cached(sqlite3 *db, const char *sql, sqlite3_stmt **out) REFEX_NODISCARD;
/* Resets a statement from refex_db_cached (NULL is fine) and returns rc, for
 * `return refex_db_done(st, rc);`. */
int refex_db_done(sqlite3_stmt *st, int rc);
/* Runs one kept statement without results (SAVEPOINT, RELEASE, ...); logs on failure. */
int refex_db_run(sqlite3 *db, const char *sql) REFEX_NODISCARD;
/* Maps an SQLite result code to a refex code. */
int refex_db_err(int sqlite_rc);

#endif
