/* The one place that talks to SQLite's C API directly for connection setup and error
 * mapping. Table layouts belong to the modules that own them (audit.c, the agent). */
#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

int refex_db_err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return REFEX_OK;
    case SQLITE_NOMEM:
        return REFEX_E_NOMEM;
    case SQLITE_CONSTRAINT:
        return REFEX_E_EXISTS;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return REFEX_E_UNAVAILABLE;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
        return REFEX_E_STORE;
    default:
        return REFEX_E_DB;
    }
}

/* A database file that exists with group or other bits (created under a loose umask by an
 * older version, or copied in) is made private, once, with a log line; ENOENT is fine.
 * Through one descriptor opened without following a symbolic link, so what is changed is
 * the file that was looked at. */
static int tighten(const char *path, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return REFEX_OK;
        snprintf(err, errlen, "%s: cannot open to check its mode: %s", path,
                 errno == ELOOP ? "it is a symbolic link" : strerror(errno));
        return REFEX_E_STORE;
    }
    int rc = REFEX_OK;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: cannot check its mode: %s", path, strerror(errno));
        rc = REFEX_E_STORE;
    } else if (S_ISREG(st.st_mode) && (st.st_mode & 077)) {
        if (fchmod(fd, st.st_mode & 0700) != 0) {
            snprintf(err, errlen, "%s: mode %03o is open to others and chmod failed: %s", path,
                     (unsigned)(st.st_mode & 0777), strerror(errno));
            rc = REFEX_E_STORE;
        } else {
            refex_log_warn("db: %s was mode %03o; now %03o (readable by its owner only)", path,
                           (unsigned)(st.st_mode & 0777), (unsigned)(st.st_mode & 0700));
        }
    } /* else not a file (SQLite will say so) or private already */
    close(fd);
    return rc;
}

/* Holds its owner's private data, so 0600 whatever the umask. SQLite gives the -wal and
 * -shm files the main file's mode, so creating that one ourselves is enough for new
 * databases; older ones, and their -wal and -shm, are tightened. */
static int private_file(const char *path, char *err, size_t errlen)
{
    static const char *const sidecars[] = {"-wal", "-shm", "-journal"};
    char side[4200];
    if (!*path || strcmp(path, ":memory:") == 0)
        return REFEX_OK;
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        int ok = fchmod(fd, 0600) == 0; /* umask may have narrowed it, e.g. to 0000 */
        close(fd);
        if (!ok) {
            snprintf(err, errlen, "%s: cannot set mode 0600: %s", path, strerror(errno));
            return REFEX_E_STORE;
        }
    } else if (errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return REFEX_E_STORE;
    }
    int rc = tighten(path, err, errlen);
    for (size_t i = 0; rc == REFEX_OK && i < sizeof sidecars / sizeof sidecars[0]; i++) {
        if ((size_t)snprintf(side, sizeof side, "%s%s", path, sidecars[i]) < sizeof side)
            rc = tighten(side, err, errlen);
    }
    return rc;
}

int refex_db_open(const char *path, int readonly, sqlite3 **out, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int flags = readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int rc;
    *out = NULL;
    /* A read-only open is an auditor's look at a copy: its modes are not ours to change. */
    if (!readonly && (rc = private_file(path, err, errlen)) != REFEX_OK)
        return rc;
    rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return refex_db_err(rc);
    }
    sqlite3_busy_timeout(db, 5000);
    if (readonly) {
        /* A file given to an auditor is untrusted: no code from its schema, and no views
         * (refex databases have none) standing in for tables. */
        sqlite3_stmt *st = NULL;
        int views = 0;
        sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
        sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'view'", -1,
                               &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            views = sqlite3_column_int(st, 0);
        else
            views = -1;
        sqlite3_finalize(st);
        if (views != 0) {
            snprintf(err, errlen, "%s: %s", path,
                     views < 0 ? "not a readable SQLite database"
                               : "contains views; a refex database has none");
            sqlite3_close(db);
            return REFEX_E_DB;
        }
    } else {
        const char *pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                              "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;";
        char *msg = NULL;
        rc = sqlite3_exec(db, pragmas, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errstr(rc));
            sqlite3_free(msg);
            sqlite3_close(db);
            return refex_db_err(rc);
        }
    }
    *out = db;
    return REFEX_OK;
}

/* ---- the statement cache --------------------------------------------------------------
 * Preparing a statement costs more than running most of refex's (a quarter of an agent's
 * CPU per message went to sqlite3_prepare_v2 when every call prepared its own), so the
 * statements of the hot paths are kept, per connection, until refex_db_close. They are
 * keyed by the address of their SQL text, checked against the text itself (a caller that
 * passes a buffer whose contents changed gets a statement for the new text, not a stale
 * one). A connection is used, and closed, on the thread that opened it (each daemon is one
 * event loop; SQLITE_OPEN_NOMUTEX), so each thread keeps its own table and none is locked:
 * a program that opens connections on several threads (the bench's store filler) works. */

typedef struct {
    const char *sql;
    sqlite3_stmt *st;
} cached_stmt;

typedef struct conn_cache {
    sqlite3 *db;
    cached_stmt *e;
    size_t n, cap;
    struct conn_cache *next;
} conn_cache;

static _Thread_local conn_cache *caches; /* this thread's; the connection used last first */

static conn_cache *cache_of(sqlite3 *db, int create)
{
    conn_cache **pp = &caches;
    while (*pp && (*pp)->db != db)
        pp = &(*pp)->next;
    conn_cache *c = *pp;
    if (c) {
        *pp = c->next; /* to the front: a run of calls on one connection finds it first */
    } else {
        if (!create || !(c = calloc(1, sizeof *c)))
            return NULL;
        c->db = db;
    }
    c->next = caches;
    caches = c;
    return c;
}

static void cache_drop(sqlite3 *db)
{
    conn_cache *c = cache_of(db, 0);
    if (!c)
        return;
    caches = c->next;
    for (size_t i = 0; i < c->n; i++)
        sqlite3_finalize(c->e[i].st);
    free(c->e);
    free(c);
}

/* The slot for sql in c, appended (empty) if there is none; NULL without memory. */
static cached_stmt *cache_slot(conn_cache *c, const char *sql)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].sql == sql)
            return &c->e[i];
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 32;
        cached_stmt *e = realloc(c->e, cap * sizeof *e);
        if (!e)
            return NULL;
        c->e = e;
        c->cap = cap;
    }
    c->e[c->n] = (cached_stmt){sql, NULL};
    return &c->e[c->n++];
}

int refex_db_cached(sqlite3 *db, const char *sql, sqlite3_stmt **out)
{
    conn_cache *c = cache_of(db, 1);
    cached_stmt *slot = c ? cache_slot(c, sql) : NULL;
    *out = NULL;
    if (!slot)
        return REFEX_E_NOMEM;
    if (slot->st && strcmp(sqlite3_sql(slot->st), sql) != 0) {
        sqlite3_finalize(slot->st); /* same address, other text: not the statement asked for */
        slot->st = NULL;
    }
    if (!slot->st) {
        int rc = refex_db_prepare(db, sql, &slot->st);
        if (rc != REFEX_OK)
            return rc; /* the slot stays empty; the next call tries again */
    }
    sqlite3_reset(slot->st);
    sqlite3_clear_bindings(slot->st);
    *out = slot->st;
    return REFEX_OK;
}

int refex_db_done(sqlite3_stmt *st, int rc)
{
    if (st) { /* reset, and drop bindings that may point at the caller's freed buffers */
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    return rc;
}

int refex_db_run(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_cached(db, sql, &st);
    if (rc != REFEX_OK)
        return rc;
    int step = sqlite3_step(st);
    if (step != SQLITE_DONE && step != SQLITE_ROW)
        refex_log_error("db: %s", sqlite3_errmsg(db));
    return refex_db_done(st, refex_db_err(step));
}

void refex_db_close(sqlite3 **db_p)
{
    if (!db_p || !*db_p)
        return;
    cache_drop(*db_p);
    sqlite3_close_v2(*db_p);
    *db_p = NULL;
}

int refex_db_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        refex_log_error("db: %s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
    }
    return refex_db_err(rc);
}

/* Transactions run through the cache: as text, each BEGIN and COMMIT was parsed again. */
int refex_db_begin(sqlite3 *db)
{
    return refex_db_run(db, "BEGIN IMMEDIATE");
}

int refex_db_commit(sqlite3 *db)
{
    int rc = refex_db_run(db, "COMMIT");
    if (rc != REFEX_OK)
        refex_db_rollback(db);
    return rc;
}

void refex_db_rollback(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    if (!sqlite3_get_autocommit(db) && refex_db_cached(db, "ROLLBACK", &st) == REFEX_OK)
        refex_db_done(st, sqlite3_step(st));
}

int refex_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out)
{
    int rc = sqlite3_prepare_v2(db, sql, -1, out, NULL);
    if (rc != SQLITE_OK)
        refex_log_error("db: prepare: %s", sqlite3_errmsg(db));
    return refex_db_err(rc);
}
