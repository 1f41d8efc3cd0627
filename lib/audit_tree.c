/* Merkle tree storage for the audit log. Not the log's row format (audit.c) and not the
 * proof verifiers (merkle.c): this module keeps and reads the stored subtree hashes. */
#include "audit_tree.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "db.h"
#include "merkle.h"

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS audit_nodes ("
    " level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,"
    " PRIMARY KEY (level, idx)) WITHOUT ROWID;"
    "CREATE TRIGGER IF NOT EXISTS audit_nodes_no_update BEFORE UPDATE ON audit_nodes"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS audit_nodes_no_delete BEFORE DELETE ON audit_nodes"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS audit_nodes_no_replace BEFORE INSERT ON audit_nodes"
    " WHEN EXISTS (SELECT 1 FROM audit_nodes WHERE level = NEW.level AND idx = NEW.idx)"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
    /* Signed checkpoints of the tree (C2SP signed notes), and witnesses' cosigned copies. */
    "CREATE TABLE IF NOT EXISTS audit_checkpoints ("
    " size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS audit_cosignatures ("
    " size INTEGER NOT NULL, witness TEXT NOT NULL, note TEXT NOT NULL,"
    " received_ms INTEGER NOT NULL, PRIMARY KEY (size, witness));"
    "CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_replace BEFORE INSERT ON audit_checkpoints"
    " WHEN EXISTS (SELECT 1 FROM audit_checkpoints WHERE size = NEW.size)"
    " BEGIN SELECT RAISE(IGNORE); END;"
    "CREATE TRIGGER IF NOT EXISTS audit_cosignatures_no_update BEFORE UPDATE ON audit_cosignatures"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS audit_cosignatures_no_delete BEFORE DELETE ON audit_cosignatures"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS audit_cosignatures_no_replace BEFORE INSERT ON"
    " audit_cosignatures WHEN EXISTS (SELECT 1 FROM audit_cosignatures WHERE size = NEW.size"
    " AND witness = NEW.witness) BEGIN SELECT RAISE(IGNORE); END;";

int refex_audit_tree_init(sqlite3 *db)
{
    return refex_db_exec(db, SCHEMA);
}

/* Hash of the complete subtree (level, idx): a leaf at level 0, a stored node above. */
static int node_get(sqlite3 *db, int level, uint64_t idx, uint8_t out[32])
{
    static const char *const LEAF = "SELECT leaf_hash FROM audit WHERE seq = ?";
    static const char *const NODE = "SELECT hash FROM audit_nodes WHERE level = ? AND idx = ?";
    sqlite3_stmt *st = NULL;
    int rc = refex_db_cached(db, level == 0 ? LEAF : NODE, &st);
    if (rc != REFEX_OK)
        return rc;
    if (level == 0) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)idx + 1);
    } else {
        sqlite3_bind_int(st, 1, level);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)idx);
    }
    rc = REFEX_E_NOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 32) {
        memcpy(out, sqlite3_column_blob(st, 0), 32);
        rc = REFEX_OK;
    }
    return refex_db_done(st, rc);
}

int refex_audit_tree_append(sqlite3 *db, uint64_t index, const uint8_t leaf[32])
{
    static const char *const SQL = "INSERT INTO audit_nodes(level, idx, hash) VALUES (?,?,?)";
    uint8_t h[32], left[32];
    uint64_t j = index;
    int level = 0, rc = REFEX_OK;
    memcpy(h, leaf, 32);
    /* A right child completes its parent: hash upwards while we are a right child. */
    while (j & 1) {
        sqlite3_stmt *st = NULL;
        if ((rc = node_get(db, level, j - 1, left)) != REFEX_OK)
            break;
        refex_merkle_node_hash(left, h, h);
        level++;
        j >>= 1;
        if ((rc = refex_db_cached(db, SQL, &st)) != REFEX_OK)
            break;
        sqlite3_bind_int(st, 1, level);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)j);
        sqlite3_bind_blob(st, 3, h, 32, SQLITE_STATIC);
        if ((rc = refex_db_done(st, refex_db_err(sqlite3_step(st)))) != REFEX_OK)
            break;
    }
    return rc;
}

int refex_audit_tree_size(sqlite3 *db, uint64_t *size)
{
    static const char *const SQL = "SELECT IFNULL(MAX(seq), 0) FROM audit";
    sqlite3_stmt *st = NULL;
    int rc = refex_db_cached(db, SQL, &st);
    if (rc != REFEX_OK)
        return rc;
    *size = sqlite3_step(st) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    return refex_db_done(st, REFEX_OK);
}

int refex_audit_tree_latest_checkpoint(sqlite3 *db, char **note)
{
    static const char *const SQL = "SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1";
    sqlite3_stmt *st = NULL;
    *note = NULL;
    int rc = refex_db_cached(db, SQL, &st);
    if (rc != REFEX_OK)
        return rc;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 0);
        *note = strdup(text ? text : "");
        rc = *note ? REFEX_OK : REFEX_E_NOMEM;
    } else {
        rc = step == SQLITE_DONE ? REFEX_E_NOTFOUND : refex_db_err(step);
    }
    return refex_db_done(st, rc);
}

int refex_audit_tree_witnessed_size(sqlite3 *db, uint64_t *size)
{
    sqlite3_stmt *st = NULL;
    *size = 0;
    int rc = refex_db_prepare(db, "SELECT IFNULL(MAX(size), 0) FROM audit_cosignatures", &st);
    if (rc != REFEX_OK)
        return rc;
    if (sqlite3_step(st) == SQLITE_ROW)
        *size = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return REFEX_OK;
}

int refex_audit_tree_add_checkpoint(sqlite3 *db, uint64_t size, const uint8_t root[32],
                                    const char *note, int64_t created_ms)
{
    sqlite3_stmt *st = NULL;
    if (size > INT64_MAX)
        return REFEX_E_INVAL;
    int rc = refex_db_prepare(db,
                              "INSERT INTO audit_checkpoints(size, root, note, created_ms)"
                              " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                              &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)size);
    sqlite3_bind_blob(st, 2, root, 32, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, note, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, created_ms);
    rc = refex_db_err(sqlite3_step(st));
    sqlite3_finalize(st);
    return rc;
}

int refex_audit_tree_add_cosignature(sqlite3 *db, uint64_t size, const char *witness,
                                     const char *note, int64_t received_ms)
{
    sqlite3_stmt *st = NULL;
    if (size > INT64_MAX)
        return REFEX_E_INVAL;
    int rc = refex_db_prepare(db,
                              "INSERT INTO audit_cosignatures(size, witness, note, received_ms)"
                              " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                              &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)size);
    sqlite3_bind_text(st, 2, witness, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, note, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, received_ms);
    rc = refex_db_err(sqlite3_step(st));
    sqlite3_finalize(st);
    return rc;
}

static uint64_t split_point(uint64_t n) /* largest power of two < n, for n >= 2 */
{
    uint64_t k = 1;
    while (k << 1 < n)
        k <<= 1;
    return k;
}

/* MTH of leaves [start, start+n), from stored complete subtrees where aligned. */
static int mth(sqlite3 *db, uint64_t start, uint64_t n, uint8_t out[32])
{
    if (n == 0) {
        crypto_hash_sha256(out, (const uint8_t *)"", 0);
        return REFEX_OK;
    }
    if ((n & (n - 1)) == 0 && start % n == 0) {
        int level = 0;
        while ((1ull << level) < n)
            level++;
        return node_get(db, level, start / n, out);
    }
    uint64_t k = split_point(n);
    uint8_t l[32], r[32];
    int rc = mth(db, start, k, l);
    if (rc == REFEX_OK)
        rc = mth(db, start + k, n - k, r);
    if (rc == REFEX_OK)
        refex_merkle_node_hash(l, r, out);
    return rc;
}

int refex_audit_tree_root(sqlite3 *db, uint64_t size, uint8_t root[32])
{
    uint64_t have = 0;
    int rc = refex_audit_tree_size(db, &have);
    if (rc != REFEX_OK)
        return rc;
    if (size > have)
        return REFEX_E_INVAL;
    return mth(db, 0, size, root);
}

typedef struct {
    uint8_t (*h)[32];
    size_t n;
} proof_buf;

static int proof_push(proof_buf *p, const uint8_t h[32])
{
    uint8_t(*nh)[32] = realloc(p->h, (p->n + 1) * sizeof *nh);
    if (!nh)
        return REFEX_E_NOMEM;
    p->h = nh;
    memcpy(p->h[p->n++], h, 32);
    return REFEX_OK;
}

/* RFC 9162 2.1.3.1 PATH(m, D[start:start+n]), leaf-upwards. */
static int path(sqlite3 *db, uint64_t m, uint64_t start, uint64_t n, proof_buf *p)
{
    uint8_t h[32];
    if (n <= 1)
        return REFEX_OK;
    uint64_t k = split_point(n);
    int rc;
    if (m < k) {
        if ((rc = path(db, m, start, k, p)) == REFEX_OK &&
            (rc = mth(db, start + k, n - k, h)) == REFEX_OK)
            rc = proof_push(p, h);
    } else {
        if ((rc = path(db, m - k, start + k, n - k, p)) == REFEX_OK &&
            (rc = mth(db, start, k, h)) == REFEX_OK)
            rc = proof_push(p, h);
    }
    return rc;
}

/* RFC 9162 2.1.4.1 SUBPROOF(m, D[start:start+n], b). */
static int subproof(sqlite3 *db, uint64_t m, uint64_t start, uint64_t n, int b, proof_buf *p)
{
    uint8_t h[32];
    int rc;
    if (m == n) {
        if (b)
            return REFEX_OK;
        if ((rc = mth(db, start, n, h)) != REFEX_OK)
            return rc;
        return proof_push(p, h);
    }
    uint64_t k = split_point(n);
    if (m <= k) {
        if ((rc = subproof(db, m, start, k, b, p)) == REFEX_OK &&
            (rc = mth(db, start + k, n - k, h)) == REFEX_OK)
            rc = proof_push(p, h);
    } else {
        if ((rc = subproof(db, m - k, start + k, n - k, 0, p)) == REFEX_OK &&
            (rc = mth(db, start, k, h)) == REFEX_OK)
            rc = proof_push(p, h);
    }
    return rc;
}

int refex_audit_tree_inclusion(sqlite3 *db, uint64_t index, uint64_t size, uint8_t (**proof)[32],
                               size_t *len)
{
    uint64_t have = 0;
    proof_buf p = {NULL, 0};
    int rc = refex_audit_tree_size(db, &have);
    *proof = NULL;
    *len = 0;
    if (rc != REFEX_OK)
        return rc;
    if (index >= size || size > have)
        return REFEX_E_INVAL;
    if ((rc = path(db, index, 0, size, &p)) != REFEX_OK) {
        free(p.h);
        return rc;
    }
    *proof = p.h;
    *len = p.n;
    return REFEX_OK;
}

int refex_audit_tree_consistency(sqlite3 *db, uint64_t size1, uint64_t size2, uint8_t (**proof)[32],
                                 size_t *len)
{
    uint64_t have = 0;
    proof_buf p = {NULL, 0};
    int rc = refex_audit_tree_size(db, &have);
    *proof = NULL;
    *len = 0;
    if (rc != REFEX_OK)
        return rc;
    if (size1 == 0 || size1 > size2 || size2 > have)
        return REFEX_E_INVAL;
    if (size1 < size2 && (rc = subproof(db, size1, 0, size2, 1, &p)) != REFEX_OK) {
        free(p.h);
        return rc;
    }
    *proof = p.h;
    *len = p.n;
    return REFEX_OK;
}

/* ---- verification ----------------------------------------------------------------- */

/* One row of the audit table, as verify reads it: every column must hold the type it was
 * written with, its fields must encode to its canonical bytes, and its stored leaf hash
 * must be the hash of those bytes. Fills leaf on success. */
static int check_row(sqlite3_stmt *st, int64_t seq, uint8_t leaf[32], char *why, size_t whylen)
{
    uint8_t *entry = NULL;
    size_t elen = 0;
    /* Types first: reading a column as text converts it in place. A BLOB or a text with a
     * NUL in it would read back as the same text here but match differently in queries. */
    int typed = sqlite3_column_type(st, REFEX_AUDIT_COL_TIME) == SQLITE_INTEGER &&
                sqlite3_column_type(st, REFEX_AUDIT_COL_ENTRY) == SQLITE_BLOB &&
                sqlite3_column_type(st, REFEX_AUDIT_COL_LEAF) == SQLITE_BLOB;
    for (int i = 0; i < REFEX_AUDIT_N_TEXT; i++)
        typed = typed && sqlite3_column_type(st, REFEX_AUDIT_COL_TEXT + i) == SQLITE_TEXT;
    const char *t[REFEX_AUDIT_N_TEXT];
    for (int i = 0; i < REFEX_AUDIT_N_TEXT; i++) {
        int c = REFEX_AUDIT_COL_TEXT + i;
        t[i] = (const char *)sqlite3_column_text(st, c);
        typed = typed && t[i] && (size_t)sqlite3_column_bytes(st, c) == strlen(t[i]);
    }
    if (!typed) {
        snprintf(why, whylen,
                 "entry %lld: a column holds a value of the wrong type (the row was edited)",
                 (long long)seq);
        return REFEX_E_TAMPERED;
    }
    refex_audit_entry e = refex_audit_entry_of(sqlite3_column_int64(st, REFEX_AUDIT_COL_TIME), t);
    int rc = refex_audit_encode(&e, &entry, &elen);
    if (rc == REFEX_E_NOMEM)
        return rc;
    if (rc != REFEX_OK || (size_t)sqlite3_column_bytes(st, REFEX_AUDIT_COL_ENTRY) != elen ||
        memcmp(sqlite3_column_blob(st, REFEX_AUDIT_COL_ENTRY), entry, elen) != 0) {
        free(entry);
        snprintf(why, whylen,
                 "entry %lld: its fields do not match its canonical bytes (the row was edited)",
                 (long long)seq);
        return REFEX_E_TAMPERED;
    }
    refex_merkle_leaf_hash(entry, elen, leaf);
    free(entry);
    if (sqlite3_column_bytes(st, REFEX_AUDIT_COL_LEAF) != 32 ||
        sodium_memcmp(sqlite3_column_blob(st, REFEX_AUDIT_COL_LEAF), leaf, 32) != 0) {
        snprintf(why, whylen, "entry %lld: stored leaf hash is not the hash of its bytes",
                 (long long)seq);
        return REFEX_E_TAMPERED;
    }
    return REFEX_OK;
}

/* The compact range of complete subtrees while verify folds the log in, leaf by leaf. */
typedef struct {
    uint8_t stack[64][32];
    int levels[64];
    int depth;
    uint64_t nodes; /* subtree hashes the log must have stored so far */
} compact_range;

/* Folds leaf number n (0-based) into r, checking each completed subtree hash against the
 * one stored. */
static int fold_leaf(sqlite3 *db, compact_range *r, uint64_t n, int64_t seq, const uint8_t leaf[32],
                     char *why, size_t whylen)
{
    uint8_t stored[32];
    memcpy(r->stack[r->depth], leaf, 32);
    r->levels[r->depth++] = 0;
    uint64_t j = n;
    while (r->depth >= 2 && r->levels[r->depth - 1] == r->levels[r->depth - 2]) {
        refex_merkle_node_hash(r->stack[r->depth - 2], r->stack[r->depth - 1],
                               r->stack[r->depth - 2]);
        r->levels[r->depth - 2]++;
        r->depth--;
        j >>= 1;
        r->nodes++;
        if (node_get(db, r->levels[r->depth - 1], j, stored) != REFEX_OK ||
            sodium_memcmp(stored, r->stack[r->depth - 1], 32) != 0) {
            snprintf(why, whylen,
                     "subtree hash (level %d, index %llu) after entry %lld is missing or wrong",
                     r->levels[r->depth - 1], (unsigned long long)j, (long long)seq);
            return REFEX_E_TAMPERED;
        }
    }
    return REFEX_OK;
}

/* The stored subtree hashes must be exactly those the rows need: no more, no fewer. */
static int check_node_count(sqlite3 *db, const compact_range *r, uint64_t n, char *why,
                            size_t whylen)
{
    sqlite3_stmt *st = NULL;
    uint64_t have = 0;
    if (refex_db_prepare(db, "SELECT count(*) FROM audit_nodes", &st) == REFEX_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        have = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (have == r->nodes)
        return REFEX_OK;
    snprintf(why, whylen,
             "%llu subtree hashes stored for %llu entries, %llu expected (rows were removed "
             "from the end, or hashes added)",
             (unsigned long long)have, (unsigned long long)n, (unsigned long long)r->nodes);
    return REFEX_E_TAMPERED;
}

int refex_audit_tree_verify(sqlite3 *db, uint64_t *size, uint8_t root[32], char *why, size_t whylen)
{
    return refex_audit_tree_verify_progress(db, size, root, why, whylen, NULL, NULL);
}

int refex_audit_tree_verify_progress(sqlite3 *db, uint64_t *size, uint8_t root[32], char *why,
                                     size_t whylen, refex_audit_progress_fn fn, void *ctx)
{
    sqlite3_stmt *st = NULL;
    compact_range r = {.depth = 0, .nodes = 0};
    uint8_t leaf[32];
    int rc, step;
    uint64_t n = 0;
    *size = 0;
    why[0] = 0;
    rc = refex_db_prepare(db, REFEX_AUDIT_SELECT " ORDER BY seq", &st);
    if (rc != REFEX_OK)
        return rc;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        if ((uint64_t)seq != n + 1) {
            snprintf(why, whylen,
                     "entry %llu is missing: the log jumps from seq %llu to %lld (a deleted or "
                     "reordered row)",
                     (unsigned long long)n + 1, (unsigned long long)n, (long long)seq);
            rc = REFEX_E_TAMPERED;
            goto out;
        }
        if ((rc = check_row(st, seq, leaf, why, whylen)) != REFEX_OK ||
            (rc = fold_leaf(db, &r, n, seq, leaf, why, whylen)) != REFEX_OK)
            goto out;
        if (++n % 1024 == 0 && fn)
            fn(ctx, n);
    }
    if (fn && (n == 0 || n % 1024 != 0)) /* the last count, once */
        fn(ctx, n);
    if (step != SQLITE_DONE) {
        rc = refex_db_err(step);
        goto out;
    }
    if ((rc = check_node_count(db, &r, n, why, whylen)) != REFEX_OK)
        goto out;
    /* Root: fold the compact range right to left. */
    if (r.depth == 0) {
        crypto_hash_sha256(root, (const uint8_t *)"", 0);
    } else {
        memcpy(root, r.stack[r.depth - 1], 32);
        for (int i = r.depth - 2; i >= 0; i--)
            refex_merkle_node_hash(r.stack[i], root, root);
    }
    *size = n;
    rc = REFEX_OK;
out:
    sqlite3_finalize(st);
    return rc;
}
