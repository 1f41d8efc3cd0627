/* The agent's audit journal: filling entries, auditing outcomes and reads of the log,
 * and checkpoints (signing our own, witnessing by the broker, checking those peers attach).
 * Not the log format (lib/audit.c) nor the Merkle tree (lib/audit_tree.c). */
#include "agent.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_tree.h"
#include "checkpoint.h"
#include "codec.h"
#include "link.h"
#include "log.h"
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

int journal_append(agent *a, const refex_audit_entry *e)
{
    return refex_audit_append(agent_store_db(a->store), e, NULL);
}

typedef struct {
    agent *a;
    const char *event, *outcome, *peer, *idhex, *env_hash;
} outcome_ctx;

static int append_outcome(void *vctx, const char *type, const refex_body_meta *m)
{
    outcome_ctx *o = vctx;
    refex_audit_entry ae;
    journal_fill(o->a, &ae, o->event, o->outcome, o->peer, o->idhex, refex_message_type_parse(type),
                 m->case_ref, o->env_hash, m);
    return journal_append(o->a, &ae);
}

/* Audits what happened to one of our messages (a refusal, a receipt, a non-delivery)
 * with the type, case and lawful basis recorded when it was sent. Inside the caller's
 * transaction. */
int journal_outcome(agent *a, const char *event, const char *outcome, const char *peer,
                    const char *idhex, const char *env_hash)
{
    outcome_ctx o = {a, event, outcome, peer, idhex, env_hash};
    return agent_store_outbox_meta(a->store, idhex, append_outcome, &o);
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
    rc = journal_append(a, &ae);
    return rc == REFEX_OK ? batch_unit_end(a, 1) : (batch_unit_end(a, 0), rc);
}

/* ---- checkpoints ------------------------------------------------------------------- */

/* Our latest signed audit checkpoint, to attach to the envelopes we seal (malloc'd; free
 * it); REFEX_E_NOTFOUND while there is none yet (then the envelope goes without one). */
int journal_checkpoint_note(agent *a, char **note)
{
    return refex_audit_tree_latest_checkpoint(agent_store_db(a->store), note);
}

/* The notes peers attached that verified, per sender: a sender attaches the same
 * checkpoint to every message until it signs the next (at most once a second), and checking
 * its signature again on each delivery was an eighth of the receiver's CPU. The memo keys on
 * the note's bytes and the key it verified under (refex_checkpoint_open_memo), so it holds
 * no judgement an agent could disagree with: verification is the same for any agent in the
 * process, and a rotated or revoked key no longer given by the directory misses. */
static refex_checkpoint_memo peer_notes;

/* A checkpoint a sender attached: check it is the sender's, and that no other history of
 * the same size was seen from that sender before (a fork). Inside the caller's unit. */
void journal_note_peer_checkpoint(agent *a, const char *sender, const refex_agency *sa,
                                  const char *note)
{
    refex_checkpoint c;
    char origin[128];
    int seen = 0, differs = 0;
    if (!note || !*note || !sa)
        return;
    snprintf(origin, sizeof origin, "refex/audit/%s", sender);
    const uint8_t *pks[2];
    int n = refex_agency_sign_keys(sa, refex_now_ms(), pks);
    if (refex_checkpoint_open_memo(&peer_notes, note, strlen(note), sender, pks, n, &c) !=
            REFEX_OK ||
        strcmp(c.origin, origin) != 0 || c.size > INT64_MAX) {
        refex_log_warn("checkpoint: %s attached a checkpoint that does not verify", sender);
        return;
    }
    if (agent_store_peer_checkpoint_check(a->store, sender, c.size, c.root, &seen, &differs) !=
        REFEX_OK)
        return;
    if (differs) {
        refex_log_error("ALERT checkpoint: %s showed two different audit histories of size %llu "
                        "(fork)",
                        sender, (unsigned long long)c.size);
        return;
    }
    if (!seen && agent_store_peer_checkpoint_put(a->store, sender, c.size, c.root) != REFEX_OK)
        refex_log_warn("checkpoint: could not record %s's checkpoint", sender);
}

/* Signs a checkpoint of the first `size` entries and keeps it, in its own transaction
 * (this runs after the cycle's batch). *note is malloc'd. */
static int sign_and_keep(agent *a, uint64_t size, char **note)
{
    sqlite3 *db = agent_store_db(a->store);
    refex_checkpoint c;
    memset(&c, 0, sizeof c);
    snprintf(c.origin, sizeof c.origin, "refex/audit/%s", a->agency);
    c.size = size;
    int rc = refex_audit_tree_root(db, size, c.root);
    if (rc == REFEX_OK)
        rc = refex_checkpoint_sign(&c, a->agency, a->base.keys->sk->sign_sk, note);
    if (rc != REFEX_OK)
        return rc;
    rc = agent_store_begin(a->store);
    if (rc == REFEX_OK)
        rc = refex_audit_tree_add_checkpoint(db, size, c.root, *note, refex_now_ms());
    if (rc == REFEX_OK)
        rc = agent_store_commit(a->store);
    else
        agent_store_rollback(a->store);
    return rc;
}

/* Hands a checkpoint to the broker to witness, with the proof that it extends the one of
 * size `witnessed` (0: none yet). */
static int submit_checkpoint(agent *a, char *note, uint64_t witnessed, uint64_t size)
{
    uint8_t(*proof)[32] = NULL;
    size_t plen = 0;
    if (witnessed > 0 && refex_audit_tree_consistency(agent_store_db(a->store), witnessed, size,
                                                      &proof, &plen) != REFEX_OK)
        return REFEX_E_DB;
    int rc = REFEX_E_NOMEM;
    ProtobufCBinaryData *items = calloc(plen ? plen : 1, sizeof *items);
    if (items) {
        for (size_t i = 0; i < plen; i++)
            items[i] = (ProtobufCBinaryData){32, proof[i]};
        Refex__V1__CheckpointSubmit cs = REFEX__V1__CHECKPOINT_SUBMIT__INIT;
        cs.note = note;
        cs.old_size = witnessed;
        cs.n_consistency = plen;
        cs.consistency = items;
        rc = refex_link_send_msg(a->link, NULL, 0, REFEX__V1__FRAME__KIND_CHECKPOINT, &cs.base);
        if (rc != REFEX_OK)
            refex_log_warn("checkpoint: could not send size %llu to the witness",
                           (unsigned long long)size);
    }
    free(items);
    free(proof);
    return rc;
}

/* After a batch that added audit entries (at most once a second, one at a time): sign a
 * checkpoint of the log, keep it, and send it to the broker to witness, with a consistency
 * proof from the last checkpoint the broker cosigned. */
void journal_checkpoint(agent *a)
{
    uint64_t size = 0, witnessed = 0;
    int64_t now = refex_mono_ms();
    char *note = NULL;
    sqlite3 *db = agent_store_db(a->store);
    if (!a->online || now < a->next_checkpoint_ms || now < a->checkpoint_wait_until ||
        refex_audit_tree_size(db, &size) != REFEX_OK || size == 0 ||
        refex_audit_tree_witnessed_size(db, &witnessed) != REFEX_OK)
        return;
    /* Prove consistency from what the witness says it holds (it may be behind us). */
    if (a->witness_size && a->witness_size <= size)
        witnessed = a->witness_size;
    if (size <= witnessed)
        return;
    a->next_checkpoint_ms = now + 1000;
    if (sign_and_keep(a, size, &note) == REFEX_OK &&
        submit_checkpoint(a, note, witnessed, size) == REFEX_OK)
        a->checkpoint_wait_until = now + 5000; /* one checkpoint in flight at a time */
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
    sqlite3 *db = agent_store_db(a->store);
    /* Ours: signed with the keys in use, or (a checkpoint made before a key rotation) the
     * other set's. */
    const uint8_t *pks[2] = {a->base.keys->pub.sign_pk,
                             a->other_keys ? a->other_keys->pub.sign_pk : NULL};
    a->checkpoint_wait_until = 0;
    a->witness_size = cs->size;
    if (!br ||
        refex_checkpoint_open_any(cs->note, len, a->agency, pks, a->other_keys ? 2 : 1, &c) !=
            REFEX_OK ||
        refex_checkpoint_verify_cosignature(cs->note, len, a->broker_id, br->sign_pk, &ts) !=
            REFEX_OK) {
        refex_log_warn("checkpoint: cosignature from the broker does not verify; ignored");
        return;
    }
    if (refex_audit_tree_root(db, c.size, root) != REFEX_OK ||
        sodium_memcmp(root, c.root, 32) != 0) {
        refex_log_error("ALERT checkpoint: the broker cosigned a checkpoint of size %llu that "
                        "is not our log",
                        (unsigned long long)c.size);
        return;
    }
    int rc = batch_unit_begin(a); /* frames from the broker are handled inside the cycle's batch */
    if (rc == REFEX_OK)
        rc = refex_audit_tree_add_cosignature(db, c.size, a->broker_id, cs->note, refex_now_ms());
    if (rc == REFEX_OK)
        rc = batch_unit_end(a, 1);
    else
        batch_unit_end(a, 0);
    if (rc == REFEX_OK)
        refex_log_info("checkpoint: size %llu witnessed by %s", (unsigned long long)c.size,
                       a->broker_id);
}
