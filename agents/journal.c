/* The agent's audit journal: filling entries, auditing outcomes and reads of the log,
 * and checkpoints (signing our own, witnessing by the broker, checking those peers attach).
 * Not the log format (lib/audit.c) nor the Merkle tree (lib/audit_tree.c). */
#include "agent.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "audit.h"
#include "audit_tree.h"
#include "body.h"
#include "checkpoint.h"
#include "codec.h"
#include "db.h"
#include "directory.h"
#include "envelope.h"
#include "grant.h"
#include "keys.h"
#include "link.h"
#include "log.h"
#include "receipt.h"
#include "util.h"

/* ---- audit ------------------------------------------------------------------------- */

void journal_fill(agent *a, refex_audit_entry *e, const char *event, const char *outcome,
                  const char *peer, const char *idhex, int type, const char *case_ref,
                  const char *env_hash, const refex_body_meta *m)
{
    memset(e, 0, sizeof *e);
    e->time_ms = refex_now_ms();
    e->event = event;
    e->outcome = outcome;
    e->agency = a->agency;
    e->peer = peer;
    e->message_id = idhex;
    e->message_type = refex_message_type_name(type);
    e->case_ref = case_ref;
    e->envelope_hash = env_hash;
    e->practitioner = m ? m->practitioner : "";
    e->purpose = m ? m->purpose : "";
    e->article6 = m ? m->article6 : "";
    e->article9 = m ? m->article9 : "";
    e->consent = m ? m->consent : "";
    e->subjects = m ? m->subjects : "";
}

/* Audits what happened to one of our messages (a refusal, a receipt, a non-delivery)
 * with the type, case and lawful basis recorded when it was sent. Inside the caller's
 * transaction. */
int journal_outcome(agent *a, const char *event, const char *outcome, const char *peer,
                    const char *idhex, const char *env_hash)
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_prepare(a->db,
                              "SELECT type, case_ref, practitioner, purpose, article6, article9,"
                              " consent, subjects FROM outbox WHERE message_id = ?",
                              &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_text(st, 1, idhex, -1, SQLITE_STATIC);
    int found = sqlite3_step(st) == SQLITE_ROW;
    const char *col[8];
    for (int i = 0; i < 8; i++)
        col[i] = found ? (const char *)sqlite3_column_text(st, i) : "";
    refex_body_meta m = {col[2], col[3], col[4], col[5], col[6], col[1], "", "", "", "", "", ""};
    snprintf(m.subjects, sizeof m.subjects, "%s", col[7]);
    refex_audit_entry ae;
    journal_fill(a, &ae, event, outcome, peer, idhex, refex_message_type_parse(col[0]), col[1],
                 env_hash, &m);
    rc = refex_audit_append(a->db, &ae, NULL);
    sqlite3_finalize(st);
    return rc;
}

/* Adds our latest signed audit checkpoint to a sealed envelope. */
int journal_attach_checkpoint(agent *a, uint8_t **env, size_t *env_len)
{
    sqlite3_stmt *st = NULL;
    int rc = REFEX_OK;
    if (refex_db_prepare(a->db, "SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
                         &st) != REFEX_OK)
        return REFEX_OK; /* no checkpoint yet: the envelope goes without one */
    if (sqlite3_step(st) == SQLITE_ROW) {
        Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, *env_len, *env);
        if (!e) {
            rc = REFEX_E_MALFORMED;
        } else {
            e->checkpoint = (char *)sqlite3_column_text(st, 0);
            size_t n = refex__v1__envelope__get_packed_size(e);
            uint8_t *buf = malloc(n);
            if (buf) {
                refex__v1__envelope__pack(e, buf);
                free(*env);
                *env = buf;
                *env_len = n;
            } else {
                rc = REFEX_E_NOMEM;
            }
            e->checkpoint = NULL; /* owned by the statement */
            refex__v1__envelope__free_unpacked(e, NULL);
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* A checkpoint a sender attached: check it is the sender's, and that no other history of
 * the same size was seen from that sender before (a fork). Inside the caller's unit. */
void journal_note_peer_checkpoint(agent *a, const char *sender, const refex_agency *sa,
                                  const char *note)
{
    refex_checkpoint c;
    char origin[128];
    sqlite3_stmt *st = NULL;
    if (!note || !*note || !sa)
        return;
    snprintf(origin, sizeof origin, "refex/audit/%s", sender);
    if (refex_checkpoint_open(note, strlen(note), sender, sa->sign_pk, &c) != REFEX_OK ||
        strcmp(c.origin, origin) != 0 || c.size > INT64_MAX) {
        refex_log_warn("checkpoint: %s attached a checkpoint that does not verify", sender);
        return;
    }
    if (refex_db_prepare(a->db, "SELECT root FROM peer_checkpoints WHERE agency = ? AND size = ?",
                         &st) != REFEX_OK)
        return;
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)c.size);
    int seen = sqlite3_step(st) == SQLITE_ROW, differs = 0;
    if (seen)
        differs = sqlite3_column_bytes(st, 0) != 32 ||
                  sodium_memcmp(sqlite3_column_blob(st, 0), c.root, 32) != 0;
    sqlite3_finalize(st);
    if (differs) {
        refex_log_error("ALERT checkpoint: %s showed two different audit histories of size %llu "
                        "(fork)",
                        sender, (unsigned long long)c.size);
        return;
    }
    if (seen ||
        refex_db_prepare(a->db, "INSERT INTO peer_checkpoints(agency, size, root) VALUES (?,?,?)",
                         &st) != REFEX_OK)
        return;
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)c.size);
    sqlite3_bind_blob(st, 3, c.root, 32, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        refex_log_warn("checkpoint: could not record %s's checkpoint", sender);
    sqlite3_finalize(st);
}

/* Reading the audit log is itself audited: an audit-log-used entry names the tool used
 * (list, query, export, proof, verify) in its outcome field, never the filter values. */
int journal_used(agent *a, const char *what)
{
    char outcome[64];
    snprintf(outcome, sizeof outcome, "success: %s", what);
    refex_body_meta m = {"", "PURPOSE_AUDIT", "", "", "", "", "", "", "", "", "", ""};
    refex_audit_entry ae;
    journal_fill(a, &ae, "audit-log-used", outcome, "", "", 0, "", "", &m);
    int rc = batch_unit_begin(a);
    if (rc != REFEX_OK)
        return rc;
    rc = refex_audit_append(a->db, &ae, NULL);
    return rc == REFEX_OK ? batch_unit_end(a, 1) : (batch_unit_end(a, 0), rc);
}

/* ---- checkpoints ------------------------------------------------------------------- */

static int exec_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_prepare(db, sql, &st);
    if (rc != REFEX_OK)
        return rc;
    *out = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return REFEX_OK;
}

/* After a batch that added audit entries (at most once a second, one at a time): sign a
 * checkpoint of the log, keep it, and send it to the broker to witness, with a consistency
 * proof from the last checkpoint the broker cosigned. */
void journal_checkpoint(agent *a)
{
    uint64_t size = 0;
    int64_t now = refex_mono_ms(), witnessed = 0;
    refex_checkpoint c;
    char *note = NULL;
    uint8_t(*proof)[32] = NULL;
    size_t plen = 0;
    if (!a->online || now < a->next_checkpoint_ms || now < a->checkpoint_wait_until ||
        refex_audit_tree_size(a->db, &size) != REFEX_OK || size == 0 ||
        exec_int(a->db, "SELECT IFNULL(MAX(size), 0) FROM audit_cosignatures", &witnessed) !=
            REFEX_OK)
        return;
    /* Prove consistency from what the witness says it holds (it may be behind us). */
    if (a->witness_size && a->witness_size <= size)
        witnessed = (int64_t)a->witness_size;
    if (size <= (uint64_t)witnessed)
        return;
    a->next_checkpoint_ms = now + 1000;
    memset(&c, 0, sizeof c);
    snprintf(c.origin, sizeof c.origin, "refex/audit/%s", a->agency);
    c.size = size;
    if (refex_audit_tree_root(a->db, size, c.root) != REFEX_OK ||
        refex_checkpoint_sign(&c, a->agency, a->base.keys->sk->sign_sk, &note) != REFEX_OK)
        return;
    sqlite3_stmt *st = NULL;
    int rc = refex_db_begin(a->db);
    if (rc == REFEX_OK)
        rc = refex_db_prepare(a->db,
                              "INSERT INTO audit_checkpoints(size, root, note, created_ms)"
                              " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                              &st);
    if (rc == REFEX_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)size);
        sqlite3_bind_blob(st, 2, c.root, 32, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, note, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, refex_now_ms());
        rc = refex_db_err(sqlite3_step(st));
        sqlite3_finalize(st);
    }
    if (rc == REFEX_OK)
        rc = refex_db_commit(a->db);
    else
        refex_db_rollback(a->db);
    if (rc != REFEX_OK ||
        (witnessed > 0 && refex_audit_tree_consistency(a->db, (uint64_t)witnessed, size, &proof,
                                                       &plen) != REFEX_OK)) {
        free(note);
        return;
    }
    ProtobufCBinaryData *items = calloc(plen ? plen : 1, sizeof *items);
    if (items) {
        for (size_t i = 0; i < plen; i++)
            items[i] = (ProtobufCBinaryData){32, proof[i]};
        Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
        Refex__V1__CheckpointSubmit cs = REFEX__V1__CHECKPOINT_SUBMIT__INIT;
        cs.note = note;
        cs.old_size = (uint64_t)witnessed;
        cs.n_consistency = plen;
        cs.consistency = items;
        f.kind_case = REFEX__V1__FRAME__KIND_CHECKPOINT;
        f.checkpoint = &cs;
        if (refex_link_send(a->link, NULL, 0, &f) != REFEX_OK)
            refex_log_warn("checkpoint: could not send size %llu to the witness",
                           (unsigned long long)size);
        else
            a->checkpoint_wait_until = now + 5000; /* one checkpoint in flight at a time */
    }
    free(items);
    free(proof);
    free(note);
}

/* The broker's cosignature on one of our checkpoints: check both signatures, and that it
 * describes our own log, then keep it. */
void journal_cosigned(agent *a, const Refex__V1__Cosigned *cs)
{
    refex_checkpoint c;
    uint64_t ts = 0;
    uint8_t root[32];
    const refex_agency *br = refex_directory_find(a->base.dir, a->broker_id);
    size_t len = strlen(cs->note);
    a->checkpoint_wait_until = 0;
    a->witness_size = cs->size;
    if (!br ||
        refex_checkpoint_open(cs->note, len, a->agency, a->base.keys->pub.sign_pk, &c) !=
            REFEX_OK ||
        refex_checkpoint_verify_cosignature(cs->note, len, a->broker_id, br->sign_pk, &ts) !=
            REFEX_OK) {
        refex_log_warn("checkpoint: cosignature from the broker does not verify; ignored");
        return;
    }
    if (refex_audit_tree_root(a->db, c.size, root) != REFEX_OK ||
        sodium_memcmp(root, c.root, 32) != 0) {
        refex_log_error("ALERT checkpoint: the broker cosigned a checkpoint of size %llu that "
                        "is not our log",
                        (unsigned long long)c.size);
        return;
    }
    sqlite3_stmt *st = NULL;
    int rc = batch_unit_begin(a); /* frames from the broker are handled inside the cycle's batch */
    if (rc == REFEX_OK)
        rc = refex_db_prepare(a->db,
                              "INSERT INTO audit_cosignatures(size, witness, note, received_ms)"
                              " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                              &st);
    if (rc == REFEX_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)c.size);
        sqlite3_bind_text(st, 2, a->broker_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, cs->note, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, refex_now_ms());
        rc = refex_db_err(sqlite3_step(st));
        sqlite3_finalize(st);
    }
    if (rc == REFEX_OK)
        rc = batch_unit_end(a, 1);
    else
        batch_unit_end(a, 0);
    if (rc == REFEX_OK)
        refex_log_info("checkpoint: size %llu witnessed by %s", (unsigned long long)c.size,
                       a->broker_id);
}
