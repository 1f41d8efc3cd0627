/* Tests for broker/witness.c's bound: however many checkpoints an agency submits, the
 * witness keeps only its latest few (16) rows, deleted in the transaction that adds the
 * newest, per agency; the checks against the latest (consistency, fork, truncation) and
 * the auditor's reading of witness.db still work after older rows are gone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_reader.h"
#include "checkpoint.h"
#include "db.h"
#include "directory.h"
#include "keys.h"
#include "merkle.h"
#include "util.h"
#include "witness.h"

#define LEAVES 64

static char tmpdir[4096], db_path[4200];
static refex_keys *broker, *midwifery, *police;
static refex_directory *dir;
static witness *w;
static uint8_t leaves[LEAVES][REFEX_MERKLE_HASH];

static int setup(void **state)
{
    (void)state;
    char err[256];
    refex_agency a;
    testing_tmpdir(tmpdir, sizeof tmpdir);
    snprintf(db_path, sizeof db_path, "%s/witness.db", tmpdir);
    if (refex_keys_new("broker", "broker", &broker) != REFEX_OK ||
        refex_keys_new("midwifery", "midwifery", &midwifery) != REFEX_OK ||
        refex_keys_new("police", "police", &police) != REFEX_OK ||
        refex_directory_new(&dir) != REFEX_OK)
        return -1;
    refex_keys *all[] = {broker, midwifery, police};
    for (size_t i = 0; i < 3; i++) {
        refex_agency_from_pubkeys(&a, &all[i]->pub, NULL);
        if (refex_directory_add(dir, &a, 0) != REFEX_OK)
            return -1;
    }
    for (unsigned i = 0; i < LEAVES; i++) {
        char entry[32];
        int n = snprintf(entry, sizeof entry, "entry %u", i);
        refex_merkle_leaf_hash((const uint8_t *)entry, (size_t)n, leaves[i]);
    }
    return witness_open(db_path, &w, err, sizeof err) == REFEX_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    witness_close(&w);
    refex_directory_destroy(&dir);
    refex_keys_destroy(&broker);
    refex_keys_destroy(&midwifery);
    refex_keys_destroy(&police);
    testing_rmtree(tmpdir);
    return 0;
}

/* Submits k's checkpoint at size n (root over the first n leaves, or a forged root),
 * with a proof from old; returns witness_submit's code, *got the size answered. */
static int submit(const refex_keys *k, uint64_t old, uint64_t n, int forge, uint64_t *got)
{
    refex_checkpoint c;
    char *note = NULL, *cosigned = NULL, why[256] = "";
    uint8_t(*proof)[REFEX_MERKLE_HASH] = NULL;
    size_t plen = 0;
    memset(&c, 0, sizeof c);
    snprintf(c.origin, sizeof c.origin, "refex/audit/%s", k->pub.agency);
    c.size = n;
    assert_ok(refex_merkle_root((const uint8_t(*)[REFEX_MERKLE_HASH])leaves, n, c.root));
    if (forge)
        c.root[0] ^= 1;
    assert_ok(refex_checkpoint_sign(&c, k->pub.agency, k->sk->sign_sk, &note));
    if (old > 0 && old < n)
        assert_ok(refex_merkle_consistency_proof((const uint8_t(*)[REFEX_MERKLE_HASH])leaves, old,
                                                 n, &proof, &plen));
    ProtobufCBinaryData hashes[64];
    assert_true(plen <= 64);
    for (size_t i = 0; i < plen; i++)
        hashes[i] = (ProtobufCBinaryData){REFEX_MERKLE_HASH, proof[i]};
    Refex__V1__CheckpointSubmit cp = REFEX__V1__CHECKPOINT_SUBMIT__INIT;
    cp.note = note;
    cp.old_size = old;
    cp.n_consistency = plen;
    cp.consistency = hashes;
    *got = 0;
    int rc = witness_submit(w, dir, broker, k->pub.agency, &cp, &cosigned, got, why, sizeof why);
    free(cosigned);
    free(proof);
    free(note);
    return rc;
}

/* Rows witness.db holds for agency, and the smallest size among them. */
static int64_t rows(const char *agency, int64_t *min_size)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char err[256];
    int64_t n = -1;
    assert_ok(refex_db_open(db_path, 1, &db, err, sizeof err));
    assert_ok(refex_db_prepare(db,
                               "SELECT COUNT(*), IFNULL(MIN(size), 0) FROM witnessed"
                               " WHERE agency = ?",
                               &st));
    sqlite3_bind_text(st, 1, agency, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        n = sqlite3_column_int64(st, 0);
        *min_size = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    refex_db_close(&db);
    return n;
}

static int count_note(const char *note, void *arg)
{
    (void)note;
    (*(size_t *)arg)++;
    return REFEX_OK;
}

static void test_rows_per_agency_bounded(void **state)
{
    (void)state;
    uint64_t got;
    int64_t min_size = 0;
    char err[256];
    /* police: three checkpoints, kept whatever midwifery does. */
    for (uint64_t n = 1; n <= 3; n++)
        assert_ok(submit(police, n - 1, n, 0, &got));
    for (uint64_t n = 1; n < LEAVES; n++) {
        assert_ok(submit(midwifery, n - 1, n, 0, &got));
        assert_int_equal(got, n);
        int64_t want = n < 16 ? (int64_t)n : 16;
        assert_int_equal(rows("midwifery", &min_size), want);
        assert_int_equal(min_size, (int64_t)n - want + 1);
    }
    assert_int_equal(rows("police", &min_size), 3);

    /* The checks against the latest (LEAVES - 1) still hold: the same checkpoint again is
     * fine; another root at its size is a fork, a smaller size a truncation (also one
     * whose row was deleted), a proof from it to a forged root a rewritten history. */
    assert_ok(submit(midwifery, LEAVES - 1, LEAVES - 1, 0, &got));
    assert_rc(submit(midwifery, LEAVES - 1, LEAVES - 1, 1, &got), REFEX_E_TAMPERED);
    assert_rc(submit(midwifery, 9, 10, 0, &got), REFEX_E_TAMPERED);
    assert_rc(submit(midwifery, LEAVES - 1, LEAVES, 1, &got), REFEX_E_TAMPERED);
    assert_int_equal(rows("midwifery", &min_size), 16);
    assert_int_equal(min_size, LEAVES - 16);

    /* An agent whose proof starts elsewhere than the latest is sent the latest back. */
    assert_ok(submit(police, 1, 4, 0, &got));
    assert_int_equal(got, 3);
    assert_int_equal(rows("police", &min_size), 3);

    /* The auditor's reading of witness.db sees the rows kept. */
    size_t notes = 0;
    assert_ok(
        refex_audit_reader_witnessed(db_path, "midwifery", count_note, &notes, err, sizeof err));
    assert_int_equal(notes, 16);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_per_agency_bounded),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
