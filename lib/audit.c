/* Audit log rows and their canonical bytes. The Merkle tree and checkpoints that make
 * the log tamper-evident build on the leaf hashes stored here. */
#include "audit.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "audit_tree.h"
#include "db.h"
#include "util.h"

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS audit ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " time_ms INTEGER NOT NULL, event TEXT NOT NULL, outcome TEXT NOT NULL,"
    " agency TEXT NOT NULL, practitioner TEXT NOT NULL, peer TEXT NOT NULL,"
    " message_id TEXT NOT NULL, message_type TEXT NOT NULL, case_ref TEXT NOT NULL,"
    " envelope_hash TEXT NOT NULL, purpose TEXT NOT NULL, article6 TEXT NOT NULL,"
    " article9 TEXT NOT NULL, consent TEXT NOT NULL, subjects TEXT NOT NULL,"
    " entry BLOB NOT NULL, leaf_hash BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS audit_msg ON audit(message_id);"
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
    /* INSERT OR REPLACE deletes without firing DELETE triggers: refuse reused seqs. */
    "CREATE TRIGGER IF NOT EXISTS audit_no_replace BEFORE INSERT ON audit"
    " WHEN EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq)"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;";

int refex_audit_init(sqlite3 *db)
{
    int rc = refex_db_exec(db, SCHEMA);
    return rc == REFEX_OK ? refex_audit_tree_init(db) : rc;
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

typedef struct {
    uint8_t *b;
    size_t n, cap;
    int oom;
} buf_t;

static void put(buf_t *b, const void *p, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256) + n;
        uint8_t *nb = realloc(b->b, cap);
        if (!nb) {
            b->oom = 1;
            return;
        }
        b->b = nb;
        b->cap = cap;
    }
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

static void put_field(buf_t *b, const void *p, size_t n)
{
    uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    put(b, len, 4);
    put(b, p, n);
}

static void put_str(buf_t *b, const char *s)
{
    put_field(b, nz(s), strlen(nz(s)));
}

/* A hex id goes in as its raw bytes; an empty string as an empty field. */
static int put_hex(buf_t *b, const char *hex, size_t raw_len)
{
    uint8_t raw[64] = {0};
    if (!hex || !*hex) {
        put_field(b, raw, 0);
        return REFEX_OK;
    }
    /* Lowercase only: one spelling per value, so a re-cased id is a different entry. */
    for (const char *p = hex; *p; p++)
        if (*p >= 'A' && *p <= 'F')
            return REFEX_E_INVAL;
    if (raw_len > sizeof raw || refex_hex_decode(raw, raw_len, hex) != REFEX_OK)
        return REFEX_E_INVAL;
    put_field(b, raw, raw_len);
    return REFEX_OK;
}

int refex_audit_encode(const refex_audit_entry *e, uint8_t **out, size_t *out_len)
{
    buf_t b = {0};
    uint8_t t[8];
    uint64_t tm = (uint64_t)e->time_ms;
    for (int i = 0; i < 8; i++)
        t[i] = (uint8_t)(tm >> (56 - 8 * i));
    put(&b, REFEX_AUDIT_CONTEXT, sizeof REFEX_AUDIT_CONTEXT);
    put_field(&b, t, 8);
    put_str(&b, e->event);
    put_str(&b, e->outcome);
    put_str(&b, e->agency);
    put_str(&b, e->practitioner);
    put_str(&b, e->peer);
    if (put_hex(&b, e->message_id, 16) != REFEX_OK ||
        (put_str(&b, e->message_type), put_str(&b, e->case_ref),
         put_hex(&b, e->envelope_hash, 32) != REFEX_OK)) {
        free(b.b);
        return REFEX_E_INVAL;
    }
    put_str(&b, e->purpose);
    put_str(&b, e->article6);
    put_str(&b, e->article9);
    put_str(&b, e->consent);
    put_str(&b, e->subjects);
    if (b.oom) {
        free(b.b);
        return REFEX_E_NOMEM;
    }
    *out = b.b;
    *out_len = b.n;
    return REFEX_OK;
}

int refex_audit_append(sqlite3 *db, const refex_audit_entry *e, int64_t *seq_out)
{
    static const char *SQL =
        "INSERT INTO audit(seq, time_ms, event, outcome, agency, practitioner, peer, message_id,"
        " message_type, case_ref, envelope_hash, purpose, article6, article9, consent, subjects,"
        " entry, leaf_hash) VALUES ((SELECT IFNULL(MAX(seq), 0) + 1 FROM audit),"
        " ?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    uint8_t *entry = NULL;
    size_t len = 0;
    uint8_t leaf[32];
    sqlite3_stmt *st = NULL;
    int rc = refex_audit_encode(e, &entry, &len);
    if (rc != REFEX_OK)
        return rc;
    /* RFC 6962 leaf hash: SHA-256(0x00 || entry). */
    crypto_hash_sha256_state hs;
    crypto_hash_sha256_init(&hs);
    crypto_hash_sha256_update(&hs, (const uint8_t *)"\0", 1);
    crypto_hash_sha256_update(&hs, entry, len);
    crypto_hash_sha256_final(&hs, leaf);

    if ((rc = refex_db_cached(db, SQL, &st)) != REFEX_OK)
        goto out;
    const char *text[] = {e->event,      e->outcome,      e->agency,   e->practitioner,  e->peer,
                          e->message_id, e->message_type, e->case_ref, e->envelope_hash, e->purpose,
                          e->article6,   e->article9,     e->consent,  e->subjects};
    sqlite3_bind_int64(st, 1, e->time_ms);
    for (int i = 0; i < 14; i++)
        sqlite3_bind_text(st, 2 + i, nz(text[i]), -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 16, entry, (int)len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 17, leaf, 32, SQLITE_STATIC);
    rc = refex_db_done(st, refex_db_err(sqlite3_step(st)));
    int64_t seq = sqlite3_last_insert_rowid(db);
    /* The Merkle tree over the log grows in the same transaction. */
    if (rc == REFEX_OK)
        rc = refex_audit_tree_append(db, (uint64_t)seq - 1, leaf);
    if (rc == REFEX_OK && seq_out)
        *seq_out = seq;
out:
    free(entry);
    return rc;
}

refex_audit_entry refex_audit_entry_of(int64_t time_ms, const char *const t[REFEX_AUDIT_N_TEXT])
{
    return (refex_audit_entry){time_ms, t[0], t[1], t[2],  t[3],  t[4],  t[5], t[6],
                               t[7],    t[8], t[9], t[10], t[11], t[12], t[13]};
}

int refex_audit_list_json(sqlite3 *db, int64_t after, int64_t limit, json_t **out)
{
    static const char *SQL = REFEX_AUDIT_SELECT " WHERE seq > ? ORDER BY seq LIMIT ?";
    sqlite3_stmt *st = NULL;
    json_t *arr = json_array();
    int rc, step;
    if (!arr)
        return REFEX_E_NOMEM;
    if ((rc = refex_db_prepare(db, SQL, &st)) != REFEX_OK)
        goto out;
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int64(st, 2, limit > 0 ? limit : INT64_MAX);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = json_object();
        char leaf[65] = "";
        if (!o) {
            rc = REFEX_E_NOMEM;
            goto out;
        }
        json_object_set_new(o, "seq", json_integer(sqlite3_column_int64(st, REFEX_AUDIT_COL_SEQ)));
        json_object_set_new(o, "time_ms",
                            json_integer(sqlite3_column_int64(st, REFEX_AUDIT_COL_TIME)));
        for (int i = REFEX_AUDIT_COL_TEXT; i < REFEX_AUDIT_COL_ENTRY; i++)
            json_object_set_new(o, sqlite3_column_name(st, i),
                                json_string((const char *)sqlite3_column_text(st, i)));
        if (sqlite3_column_bytes(st, REFEX_AUDIT_COL_LEAF) == 32)
            refex_hex_encode(leaf, sqlite3_column_blob(st, REFEX_AUDIT_COL_LEAF), 32);
        json_object_set_new(o, "leaf_hash", json_string(leaf));
        json_array_append_new(arr, o);
    }
    rc = refex_db_err(step);
out:
    sqlite3_finalize(st);
    if (rc != REFEX_OK) {
        json_decref(arr);
        arr = NULL;
    }
    *out = arr;
    return rc;
}
