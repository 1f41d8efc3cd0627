/* Witness state: the latest checkpoints the broker cosigned, per agency (WITNESS_KEEP of
 * them), in its own SQLite file or in the PostgreSQL database of the broker's store. With
 * several broker nodes on one database, a submission is checked, recorded and committed
 * under a lock on its agency, so the nodes witness each agency's log one checkpoint at a
 * time, as one witness would. Trust on first use: the first checkpoint of an agency is
 * accepted as it comes; every later one must extend the latest (RFC 9162 consistency proof)
 * or be identical. Only the latest is needed for that, and its root commits every entry
 * below its size, so older rows are deleted: any agency (or an agent submitting on every
 * entry) would otherwise grow the file without bound. */
#include "witness.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "sqldb.h"
#include "log.h"
#include "merkle.h"
#include "util.h"

/* Rows kept per agency: the latest is all the checks need; a few before it stay for the
 * auditor's `refex audit witnessed` (each is consistent with the latest). */
#define WITNESS_KEEP 16

struct witness {
    refex_sql *db;
};

static const char *SCHEMA = "CREATE TABLE IF NOT EXISTS witnessed ("
                            " agency TEXT NOT NULL, size INTEGER NOT NULL, root BLOB NOT NULL,"
                            " note TEXT NOT NULL, cosigned_ms INTEGER NOT NULL,"
                            " PRIMARY KEY (agency, size));";
static const char *PG_SCHEMA = "CREATE TABLE IF NOT EXISTS witnessed ("
                               " agency TEXT NOT NULL, size BIGINT NOT NULL, root BYTEA NOT NULL,"
                               " note TEXT NOT NULL, cosigned_ms BIGINT NOT NULL,"
                               " PRIMARY KEY (agency, size));";

int witness_open(const char *path, witness **out, char *err, size_t errlen)
{
    witness *w = calloc(1, sizeof *w);
    int rc;
    *out = NULL;
    if (!w)
        return REFEX_E_NOMEM;
    if ((rc = refex_sql_open(path, &w->db, err, errlen)) != REFEX_OK ||
        (rc = refex_sql_schema(w->db, SCHEMA, PG_SCHEMA)) != REFEX_OK) {
        witness_close(&w);
        return rc;
    }
    *out = w;
    return REFEX_OK;
}

void witness_close(witness **w_p)
{
    if (!w_p || !*w_p)
        return;
    refex_sql_close(&(*w_p)->db);
    free(*w_p);
    *w_p = NULL;
}

/* The latest cosigned (size, root) for an agency; 0 if none. */
static int latest(witness *w, const char *agency, uint64_t *size, uint8_t root[32])
{
    refex_sql_stmt *st = NULL;
    int found = 0;
    if (refex_sql_prepare(w->db,
                          "SELECT size, root FROM witnessed WHERE agency = ?"
                          " ORDER BY size DESC LIMIT 1",
                          &st) != REFEX_OK)
        return -1;
    refex_sql_bind_text(st, 1, agency);
    int step = refex_sql_step(st);
    if (step == REFEX_SQL_ROW && refex_sql_bytes(st, 1) == 32) {
        *size = (uint64_t)refex_sql_int(st, 0);
        memcpy(root, refex_sql_blob(st, 1), 32);
        found = 1;
    }
    refex_sql_finalize(&st);
    return step < 0 ? -1 : found;
}

static int latest_note(witness *w, const char *agency, uint64_t sz, char **note, uint64_t *size)
{
    refex_sql_stmt *st = NULL;
    int rc =
        refex_sql_prepare(w->db, "SELECT note FROM witnessed WHERE agency = ? AND size = ?", &st);
    if (rc != REFEX_OK)
        return REFEX_E_STORE;
    refex_sql_bind_text(st, 1, agency);
    refex_sql_bind_int(st, 2, (int64_t)sz);
    rc = REFEX_E_STORE;
    if (refex_sql_step(st) == REFEX_SQL_ROW && (*note = strdup(refex_sql_text(st, 0)))) {
        *size = sz;
        rc = REFEX_OK;
    }
    refex_sql_finalize(&st);
    return rc;
}

/* The submitted proof (checked by the codec to hold 32-byte hashes) from old to new. */
static int consistent(const Refex__V1__CheckpointSubmit *cp, uint64_t old_size,
                      const uint8_t old_root[32], const refex_checkpoint *c)
{
    if (cp->n_consistency > 128)
        return 0;
    uint8_t(*proof)[32] = calloc(cp->n_consistency ? cp->n_consistency : 1, 32);
    if (!proof)
        return 0;
    for (size_t i = 0; i < cp->n_consistency; i++)
        memcpy(proof[i], cp->consistency[i].data, 32);
    int ok =
        refex_merkle_verify_consistency(old_size, c->size, old_root, c->root,
                                        (const uint8_t(*)[32])proof, cp->n_consistency) == REFEX_OK;
    free(proof);
    return ok;
}

/* Keeps what was cosigned, so the next checkpoint of the agency is checked against it, and
 * deletes, in the same transaction, the agency's rows older than its WITNESS_KEEP latest. */
static int record(witness *w, const char *agency, const refex_checkpoint *c, const char *cosigned)
{
    refex_sql_stmt *st = NULL;
    int rc = refex_sql_prepare(w->db,
                               "INSERT INTO witnessed(agency, size, root, note, cosigned_ms)"
                               " VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                               &st);
    if (rc != REFEX_OK)
        return rc;
    refex_sql_bind_text(st, 1, agency);
    refex_sql_bind_int(st, 2, (int64_t)c->size);
    refex_sql_bind_blob(st, 3, c->root, 32);
    refex_sql_bind_text(st, 4, cosigned);
    refex_sql_bind_int(st, 5, refex_now_ms());
    rc = refex_sql_step(st) == REFEX_SQL_DONE ? REFEX_OK : REFEX_E_STORE;
    refex_sql_finalize(&st);
    if (rc == REFEX_OK &&
        (rc = refex_sql_prepare(w->db,
                                "DELETE FROM witnessed WHERE agency = ?1 AND size < (SELECT size"
                                " FROM witnessed WHERE agency = ?1 ORDER BY size DESC LIMIT 1"
                                " OFFSET ?2)",
                                &st)) == REFEX_OK) {
        refex_sql_bind_text(st, 1, agency);
        refex_sql_bind_int(st, 2, WITNESS_KEEP - 1);
        rc = refex_sql_step(st) == REFEX_SQL_DONE ? REFEX_OK : REFEX_E_STORE;
        refex_sql_finalize(&st);
    }
    return rc;
}

/* The checks and the cosignature, in the transaction witness_submit holds the agency's lock
 * in. */
static int submit_locked(witness *w, const refex_directory *dir, const refex_keys *broker,
                         const char *agency, const Refex__V1__CheckpointSubmit *cp, char **cosigned,
                         uint64_t *size, char *why, size_t whylen)
{
    refex_checkpoint c;
    char origin[128];
    uint8_t old_root[32];
    uint64_t old_size = 0;
    int rc;
    *cosigned = NULL;
    const refex_agency *a = refex_directory_find(dir, agency);
    if (!a) {
        snprintf(why, whylen, "agency not in the directory");
        return REFEX_E_UNKNOWN_AGENCY;
    }
    const uint8_t *pks[2];
    int npk = refex_agency_sign_keys(a, refex_now_ms(), pks);
    rc = refex_checkpoint_open_any(cp->note, strlen(cp->note), agency, pks, npk, &c);
    if (rc != REFEX_OK) {
        snprintf(why, whylen, "checkpoint does not verify with %s's key", agency);
        return rc;
    }
    if (c.size > INT64_MAX) { /* stored as SQLite integers */
        snprintf(why, whylen, "checkpoint size out of range");
        return REFEX_E_MALFORMED;
    }
    snprintf(origin, sizeof origin, "refex/audit/%s", agency);
    if (strcmp(c.origin, origin) != 0) {
        snprintf(why, whylen, "checkpoint origin is not %s", origin);
        return REFEX_E_MALFORMED;
    }
    int have = latest(w, agency, &old_size, old_root);
    if (have < 0)
        return REFEX_E_STORE;
    if (have) {
        if (c.size < old_size) {
            snprintf(why, whylen, "size %llu is below the witnessed size %llu (truncated log)",
                     (unsigned long long)c.size, (unsigned long long)old_size);
            return REFEX_E_TAMPERED;
        }
        if (c.size == old_size) {
            if (sodium_memcmp(c.root, old_root, 32) != 0) {
                snprintf(why, whylen, "a different root for the witnessed size %llu (fork)",
                         (unsigned long long)c.size);
                return REFEX_E_TAMPERED;
            }
        } else if (cp->old_size != old_size) {
            /* The agent and we disagree on the last witnessed size: it missed our latest
             * cosignature, or our state was restored from an older backup. Either way, tell
             * it what we hold; it must then prove consistency from there. */
            refex_log_info("witness: %s's proof starts at %llu, ours is %llu; resending ours",
                           agency, (unsigned long long)cp->old_size, (unsigned long long)old_size);
            return latest_note(w, agency, old_size, cosigned, size);
        } else if (!consistent(cp, old_size, old_root, &c)) {
            snprintf(why, whylen,
                     "not consistent with the witnessed checkpoint of size %llu (rewritten "
                     "history)",
                     (unsigned long long)old_size);
            return REFEX_E_TAMPERED;
        }
    }
    if ((rc = refex_checkpoint_cosign(cp->note, broker->pub.agency, broker->sk->sign_sk,
                                      (uint64_t)(refex_now_ms() / 1000), cosigned)) != REFEX_OK)
        return rc;
    rc = record(w, agency, &c, *cosigned);
    if (rc != REFEX_OK) {
        free(*cosigned);
        *cosigned = NULL;
        return REFEX_E_STORE;
    }
    *size = c.size;
    return REFEX_OK;
}

int witness_submit(witness *w, const refex_directory *dir, const refex_keys *broker,
                   const char *agency, const Refex__V1__CheckpointSubmit *cp, char **cosigned,
                   uint64_t *size, char *why, size_t whylen)
{
    *cosigned = NULL;
    if (refex_sql_begin(w->db) != REFEX_OK || refex_sql_lock(w->db, agency) != REFEX_OK) {
        refex_sql_rollback(w->db);
        snprintf(why, whylen, "the witness's store is not available");
        return REFEX_E_STORE;
    }
    int rc = submit_locked(w, dir, broker, agency, cp, cosigned, size, why, whylen);
    /* A refusal or a resent note wrote nothing; the commit is only of a new cosignature, and
     * COSIGNED goes out only once it has. */
    if (rc == REFEX_OK && refex_sql_commit(w->db) != REFEX_OK)
        rc = REFEX_E_STORE;
    if (rc != REFEX_OK) {
        refex_sql_rollback(w->db);
        free(*cosigned);
        *cosigned = NULL;
    }
    return rc;
}
