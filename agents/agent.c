/* The agent's event loop: one thread, one zmq_poll over the broker link, its monitor and
 * the control socket. Every state change that matters (a message sent, received or
 * refused) is committed to SQLite together with its audit entry before anything is
 * answered. Logs carry ids and agencies only, never body contents. */
#include "agent.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "audit.h"
#include "audit_tree.h"
#include "checkpoint.h"
#include "body.h"
#include "codec.h"
#include "daemon.h"
#include "db.h"
#include "directory.h"
#include "envelope.h"
#include "grant.h"
#include "keys.h"
#include "link.h"
#include "log.h"
#include "receipt.h"
#include "util.h"

#define MAX_WAITERS     64
#define RID_MAX         256
#define CONTROL_MAX     (64u * 1024 * 1024)
#define WAIT_DEADLINE   30000
#define MAX_TTL_SECONDS (366 * 24 * 3600)
#define RETRY_MS        5000  /* resend what the broker has not answered after this long */
#define PING_MS         10000 /* application-level ping when the link is otherwise idle */

typedef struct {
    uint8_t rid[RID_MAX];
    size_t rid_len;
    uint8_t id[16];
    int64_t deadline;
    int committed; /* its message's batch has committed */
} waiter;

/* Something to send once the current batch has committed: a frame for the broker
 * (rid_len == 0) or a reply for a control client. */
struct out_item {
    uint8_t rid[RID_MAX];
    size_t rid_len;
    char *data;
    size_t len;
};

struct agent {
    char agency[REFEX_ID_MAX];
    char broker_ep[512];
    char broker_id[REFEX_ID_MAX];
    refex_daemon_base base;
    uint64_t broker_max_frame; /* the broker's limit, from WELCOME */
    sqlite3 *db;
    void *ctx, *link, *mon, *control;
    int online;
    int64_t next_retry_ms, last_sent_ms, next_checkpoint_ms;
    int64_t checkpoint_wait_until; /* a submitted checkpoint awaits the witness until then */
    uint64_t witness_size;         /* the size the witness last told us it holds, 0 if unknown */
    /* Group commit: the work of one poll cycle shares one transaction (each piece in its
     * own savepoint); frames and replies that depend on it wait in outq until it commits. */
    int in_batch;
    int batch_dead; /* SQLite rolled the whole transaction back: refuse work until batch_end */
    struct out_item *outq;
    size_t outq_n, outq_cap;
    waiter waiters[MAX_WAITERS];
    size_t n_waiters;
};

static const char *const CONFIG_KEYS[] = {"agency", "broker", "broker_id", REFEX_DAEMON_BASE_KEYS,
                                          NULL};

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS outbox ("
    " message_id TEXT PRIMARY KEY, recipients TEXT NOT NULL, type TEXT NOT NULL,"
    " case_ref TEXT NOT NULL, created_ms INTEGER NOT NULL, envelope BLOB NOT NULL,"
    " state TEXT NOT NULL, error_code INTEGER NOT NULL DEFAULT 0,"
    " error_detail TEXT NOT NULL DEFAULT '', updated_ms INTEGER NOT NULL,"
    " sent_ms INTEGER NOT NULL DEFAULT 0, practitioner TEXT NOT NULL DEFAULT '',"
    " purpose TEXT NOT NULL DEFAULT '', article6 TEXT NOT NULL DEFAULT '',"
    " article9 TEXT NOT NULL DEFAULT '', consent TEXT NOT NULL DEFAULT '',"
    " subjects TEXT NOT NULL DEFAULT '', conversation_id TEXT NOT NULL DEFAULT '',"
    " request_id TEXT NOT NULL DEFAULT '', due_date TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, created_ms);"
    "CREATE TABLE IF NOT EXISTS inbox ("
    " sender TEXT NOT NULL, message_id TEXT NOT NULL, type TEXT NOT NULL,"
    " case_ref TEXT NOT NULL, created_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,"
    " envelope_hash TEXT NOT NULL, body BLOB NOT NULL,"
    " conversation_id TEXT NOT NULL DEFAULT '', reply_to TEXT NOT NULL DEFAULT '',"
    " decision TEXT NOT NULL DEFAULT '', PRIMARY KEY (sender, message_id));"
    "CREATE INDEX IF NOT EXISTS inbox_reply_to ON inbox(reply_to);"
    "CREATE TABLE IF NOT EXISTS case_grants ("
    " case_ref TEXT NOT NULL, member TEXT NOT NULL, lead TEXT NOT NULL, serial INTEGER NOT NULL,"
    " grant BLOB NOT NULL, PRIMARY KEY (case_ref, member));"
    "CREATE TABLE IF NOT EXISTS case_subscriptions ("
    " agency TEXT NOT NULL, case_ref TEXT NOT NULL, serial INTEGER NOT NULL,"
    " subscription BLOB NOT NULL, PRIMARY KEY (agency, case_ref));"
    "CREATE TABLE IF NOT EXISTS peer_checkpoints ("
    " agency TEXT NOT NULL, size INTEGER NOT NULL, root BLOB NOT NULL,"
    " PRIMARY KEY (agency, size));"
    "CREATE TABLE IF NOT EXISTS refused ("
    " sender TEXT NOT NULL, message_id TEXT NOT NULL, code INTEGER NOT NULL,"
    " PRIMARY KEY (sender, message_id));"
    "CREATE TABLE IF NOT EXISTS receipts ("
    " message_id TEXT NOT NULL, recipient TEXT NOT NULL, code INTEGER NOT NULL,"
    " signer TEXT NOT NULL, time_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,"
    " receipt BLOB NOT NULL, PRIMARY KEY (message_id, recipient));";

/* Defined with the case and checkpoint code below. */
static void handle_cosigned(agent *a, const Refex__V1__Cosigned *cs);
static void handle_grant_notice(agent *a, const Refex__V1__SignedGrant *sg);
static void handle_subscription_notice(agent *a, const Refex__V1__SignedSubscription *ss);
static void cmd_subscribe(agent *a, const uint8_t *rid, size_t rid_len, json_t *req);
static void resend_subscriptions(agent *a);
static int is_subscribed(agent *a, const char *agency, const char *case_ref, int type);
static int case_recipients(agent *a, const char *case_ref, int type, const refex_agency **out,
                           size_t cap, size_t *n);
static int is_case_member(agent *a, const char *case_ref, const char *agency, int type);
static int store_grant(agent *a, const refex_grant *g, const uint8_t *blob, size_t len);
typedef int (*grant_fn)(void *ctx, const refex_grant *g);
static void each_grant(agent *a, const char *case_ref, grant_fn fn, void *ctx);

/* ---- setup ------------------------------------------------------------------------- */

int agent_open(const refex_config *cfg, agent **out, char *err, size_t errlen)
{
    int rc;
    char path[4200];
    agent *a = calloc(1, sizeof *a);
    *out = NULL;
    if (!a)
        return REFEX_E_NOMEM;
    if ((rc = refex_config_check_keys(cfg, CONFIG_KEYS, err, errlen)) != REFEX_OK)
        goto out;
    rc = REFEX_E_CONFIG;
    const char *agency = refex_config_get(cfg, "agency");
    const char *ep = refex_config_get(cfg, "broker");
    const char *bid = refex_config_get(cfg, "broker_id");
    if (!refex_id_valid(agency)) {
        snprintf(err, errlen, "config: agency must be a valid agency id");
        goto out;
    }
    if (!ep || !*ep) {
        snprintf(err, errlen, "config: broker (the broker's endpoint) is required");
        goto out;
    }
    snprintf(a->agency, sizeof a->agency, "%s", agency);
    snprintf(a->broker_ep, sizeof a->broker_ep, "%s", ep);
    snprintf(a->broker_id, sizeof a->broker_id, "%s", bid ? bid : "broker");
    if ((rc = refex_daemon_base_load(cfg, "this agency's .secret file", &a->base, err, errlen)) !=
        REFEX_OK)
        goto out;
    rc = REFEX_E_CONFIG;
    if (strcmp(a->base.keys->pub.agency, a->agency) != 0) {
        snprintf(err, errlen, "config: keys belong to '%s', not to agency '%s'",
                 a->base.keys->pub.agency, a->agency);
        goto out;
    }
    const refex_agency *me = refex_directory_find(a->base.dir, a->agency);
    if (!me || memcmp(me->sign_pk, a->base.keys->pub.sign_pk, 32) ||
        memcmp(me->enc_pk, a->base.keys->pub.enc_pk, 32) ||
        memcmp(me->transport_pk, a->base.keys->pub.transport_pk, 32)) {
        snprintf(err, errlen, "agency '%s' is not in the directory with these keys", a->agency);
        goto out;
    }
    if (!refex_directory_find(a->base.dir, a->broker_id)) {
        snprintf(err, errlen, "broker '%s' is not in the directory", a->broker_id);
        goto out;
    }
    snprintf(path, sizeof path, "%s/agent.db", a->base.data_dir);
    if ((rc = refex_db_open(path, 0, &a->db, err, errlen)) != REFEX_OK)
        goto out;
    if ((rc = refex_db_exec(a->db, SCHEMA)) != REFEX_OK ||
        (rc = refex_audit_init(a->db)) != REFEX_OK) {
        snprintf(err, errlen, "%s: cannot create tables", path);
        goto out;
    }
    *out = a;
    a = NULL;
    rc = REFEX_OK;
out:
    agent_close(&a);
    return rc;
}

void agent_close(agent **a_p)
{
    if (!a_p || !*a_p)
        return;
    agent *a = *a_p;
    if (a->control)
        zmq_close(a->control);
    /* Stop the monitor while its reader is open: the stop event is a blocking send. */
    if (a->link && a->mon)
        zmq_socket_monitor(a->link, NULL, 0);
    if (a->mon)
        zmq_close(a->mon);
    if (a->link)
        zmq_close(a->link);
    if (a->ctx)
        zmq_ctx_term(a->ctx);
    for (size_t i = 0; i < a->outq_n; i++)
        free(a->outq[i].data);
    free(a->outq);
    refex_db_close(&a->db);
    refex_daemon_base_fini(&a->base);
    free(a);
    *a_p = NULL;
}

/* ---- control socket replies ------------------------------------------------------- */

static void control_send(agent *a, const uint8_t *rid, size_t rid_len, const char *text, size_t len)
{
    zmq_send(a->control, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(a->control, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(a->control, text, len, ZMQ_DONTWAIT);
}

/* Queues data (taking ownership) until the batch commits. */
static int outq_push(agent *a, const uint8_t *rid, size_t rid_len, char *data, size_t len)
{
    if (a->outq_n == a->outq_cap) {
        size_t cap = a->outq_cap ? a->outq_cap * 2 : 64;
        struct out_item *q = realloc(a->outq, cap * sizeof *q);
        if (!q) {
            free(data);
            return REFEX_E_NOMEM;
        }
        a->outq = q;
        a->outq_cap = cap;
    }
    struct out_item *it = &a->outq[a->outq_n++];
    if (rid_len)
        memcpy(it->rid, rid, rid_len);
    it->rid_len = rid_len;
    it->data = data;
    it->len = len;
    return REFEX_OK;
}

static void control_reply(agent *a, const uint8_t *rid, size_t rid_len, json_t *reply)
{
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    if (!text)
        return;
    if (a->in_batch && rid_len) {
        outq_push(a, rid, rid_len, text, strlen(text));
        return;
    }
    control_send(a, rid, rid_len, text, strlen(text));
    free(text);
}

/* A frame for the broker: queued while a batch is open, so the broker never hears of
 * anything (a new message, an ACK, a receipt acknowledgement) before it is committed. */
static int link_out(agent *a, Refex__V1__Frame *f)
{
    if (!a->in_batch)
        return refex_link_send(a->link, NULL, 0, f);
    uint8_t *buf = NULL;
    size_t len = 0;
    f->version = REFEX_PROTOCOL_VERSION;
    int rc = refex_frame_pack(f, &buf, &len);
    return rc == REFEX_OK ? outq_push(a, NULL, 0, (char *)buf, len) : rc;
}

/* ---- batches ------------------------------------------------------------------------- */

/* One unit of work inside the cycle's transaction. */
static int unit_begin(agent *a)
{
    if (a->batch_dead)
        return REFEX_E_DB;
    if (!a->in_batch) {
        int rc = refex_db_begin(a->db);
        if (rc != REFEX_OK)
            return rc;
        a->in_batch = 1;
    }
    return refex_db_exec(a->db, "SAVEPOINT unit");
}

static int unit_end(agent *a, int ok)
{
    int rc = REFEX_E_DB;
    if (ok)
        rc = refex_db_exec(a->db, "RELEASE unit");
    else if (refex_db_exec(a->db, "ROLLBACK TO unit") == REFEX_OK &&
             refex_db_exec(a->db, "RELEASE unit") != REFEX_OK)
        refex_log_error("db: could not release a rolled-back unit");
    /* Some errors (disk full, I/O) make SQLite roll back the whole transaction: then the
     * batch is lost, and nothing more may be done in it or reported as committed. */
    if (sqlite3_get_autocommit(a->db)) {
        a->batch_dead = 1;
        rc = REFEX_E_DB;
    }
    return rc;
}

static json_t *reply_error(int code, const char *detail);

/* Commits the cycle (one fsync for everything in it), then sends what waited for it. If
 * the commit fails nothing is sent to the broker (it will redeliver; our outbox retries)
 * and every waiting control client is told. */
static void batch_end(agent *a)
{
    int rc = REFEX_OK;
    if (a->batch_dead) {
        refex_db_rollback(a->db);
        rc = REFEX_E_DB;
    } else if (a->in_batch) {
        rc = refex_db_commit(a->db);
    }
    a->in_batch = a->batch_dead = 0;
    for (size_t i = 0; i < a->outq_n; i++) {
        struct out_item *it = &a->outq[i];
        if (rc == REFEX_OK && it->rid_len == 0) {
            if (zmq_send(a->link, it->data, it->len, ZMQ_DONTWAIT) < 0)
                refex_log_warn("link: a frame could not be sent now; it will be retried");
            else
                a->last_sent_ms = refex_mono_ms();
        } else if (rc == REFEX_OK) {
            control_send(a, it->rid, it->rid_len, it->data, it->len);
        } else if (it->rid_len) {
            json_t *e = reply_error(REFEX_E_DB, "the agent could not commit; try again");
            char *text = json_dumps(e, JSON_COMPACT);
            json_decref(e);
            if (text)
                control_send(a, it->rid, it->rid_len, text, strlen(text));
            free(text);
        }
        free(it->data);
    }
    if (rc != REFEX_OK && a->outq_n)
        refex_log_error("batch: commit failed; %zu frame(s) and reply(ies) withheld", a->outq_n);
    a->outq_n = 0;
    /* Clients waiting for a STORED: if their message did not commit, tell them now. */
    for (size_t i = 0; i < a->n_waiters; i++) {
        waiter *w = &a->waiters[i];
        if (w->committed)
            continue;
        if (rc == REFEX_OK) {
            w->committed = 1;
            continue;
        }
        json_t *e = reply_error(REFEX_E_DB, "the agent could not commit; nothing was sent");
        char *text = json_dumps(e, JSON_COMPACT);
        json_decref(e);
        if (text)
            control_send(a, w->rid, w->rid_len, text, strlen(text));
        free(text);
        a->waiters[i--] = a->waiters[--a->n_waiters];
    }
}

static json_t *reply_error(int code, const char *detail)
{
    return json_pack("{s:b, s:i, s:s, s:s}", "ok", 0, "code", code, "error", refex_errname(code),
                     "detail", detail && *detail ? detail : refex_strerror(code));
}

/* ---- audit ------------------------------------------------------------------------- */

static void audit_fill(agent *a, refex_audit_entry *e, const char *event, const char *outcome,
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
static int audit_outcome(agent *a, const char *event, const char *outcome, const char *peer,
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
    audit_fill(a, &ae, event, outcome, peer, idhex, refex_message_type_parse(col[0]), col[1],
               env_hash, &m);
    rc = refex_audit_append(a->db, &ae, NULL);
    sqlite3_finalize(st);
    return rc;
}

/* ---- sending ------------------------------------------------------------------------ */

static int send_envelope_bytes(agent *a, const uint8_t *env, size_t len)
{
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, len, env);
    if (!e)
        return REFEX_E_MALFORMED;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = e;
    f.kind_case = REFEX__V1__FRAME__KIND_SEND;
    f.send = &s;
    int rc = link_out(a, &f);
    refex__v1__envelope__free_unpacked(e, NULL);
    return rc;
}

/* After WELCOME: hand the broker everything it has not yet stored. */
/* Hands the broker what it has not stored yet, oldest first (which keeps per-sender
 * order): everything after a WELCOME, and on the retry timer whatever has waited longer
 * than RETRY_MS for its STORED. */
static void flush_outbox(agent *a, int stale_only)
{
    sqlite3_stmt *st = NULL, *up = NULL;
    int n = 0;
    int64_t now = refex_now_ms();
    if (refex_db_prepare(a->db,
                         "SELECT message_id, envelope FROM outbox WHERE state = 'pending'"
                         " AND sent_ms <= ? ORDER BY created_ms, rowid LIMIT 500",
                         &st) != REFEX_OK)
        return;
    if (refex_db_prepare(a->db, "UPDATE outbox SET sent_ms = ? WHERE message_id = ?", &up) !=
            REFEX_OK ||
        unit_begin(a) != REFEX_OK) {
        sqlite3_finalize(st);
        sqlite3_finalize(up);
        return;
    }
    sqlite3_bind_int64(st, 1, stale_only ? now - RETRY_MS : INT64_MAX);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int rc =
            send_envelope_bytes(a, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1));
        if (rc != REFEX_OK) {
            refex_log_warn("outbox: %s not sent yet: %s", sqlite3_column_text(st, 0),
                           refex_errname(rc));
            break;
        }
        sqlite3_reset(up);
        sqlite3_bind_int64(up, 1, now);
        sqlite3_bind_text(up, 2, (const char *)sqlite3_column_text(st, 0), -1, SQLITE_TRANSIENT);
        if (sqlite3_step(up) != SQLITE_DONE)
            break;
        n++;
    }
    sqlite3_finalize(st);
    sqlite3_finalize(up);
    if (unit_end(a, 1) != REFEX_OK)
        refex_log_warn("outbox: could not record send times");
    if (n) {
        a->last_sent_ms = refex_mono_ms();
        refex_log_info("outbox: %d pending message(s) handed to the broker", n);
    }
}

/* Adds our latest signed audit checkpoint to a sealed envelope. */
static int attach_checkpoint(agent *a, uint8_t **env, size_t *env_len)
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
static void note_peer_checkpoint(agent *a, const char *sender, const refex_agency *sa,
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

static int resolve_recipients(agent *a, const json_t *to, const refex_agency **out, size_t *n,
                              char *detail, size_t dlen)
{
    size_t i;
    json_t *v;
    *n = 0;
    if (!json_is_array(to) || json_array_size(to) == 0 ||
        json_array_size(to) > REFEX_MAX_RECIPIENTS) {
        snprintf(detail, dlen, "'to' must list 1 to %d agency ids", REFEX_MAX_RECIPIENTS);
        return REFEX_E_INVAL;
    }
    json_array_foreach(to, i, v)
    {
        const char *id = json_string_value(v);
        const refex_agency *r = id ? refex_directory_find(a->base.dir, id) : NULL;
        if (!r || strcmp(r->role, "broker") == 0 || strcmp(r->role, "trust-anchor") == 0) {
            snprintf(detail, dlen, "unknown recipient '%s'", id ? id : "?");
            return REFEX_E_UNKNOWN_AGENCY;
        }
        if (refex_agency_usable(r, refex_now_ms()) != REFEX_OK) {
            snprintf(detail, dlen, "recipient '%s' is revoked", id);
            return REFEX_E_REVOKED;
        }
        for (size_t j = 0; j < *n; j++)
            if (out[j] == r) {
                snprintf(detail, dlen, "recipient '%s' listed twice", id);
                return REFEX_E_INVAL;
            }
        out[(*n)++] = r;
    }
    return REFEX_OK;
}

/* Recipients of a case update: the case's members as its lead's grants say. If the client
 * named recipients, each must be such a member. A refusal is audited. */
static int update_recipients(agent *a, const char *case_ref, int update_type,
                             const refex_agency **rcpt, size_t *n_rcpt, char *detail, size_t dlen)
{
    const refex_agency *members[REFEX_MAX_RECIPIENTS];
    size_t n = 0;
    int rc = case_ref && case_ref[0]
                 ? case_recipients(a, case_ref, update_type, members, REFEX_MAX_RECIPIENTS, &n)
                 : REFEX_E_INVAL;
    if (rc == REFEX_OK && *n_rcpt > 0) {
        for (size_t i = 0; i < *n_rcpt && rc == REFEX_OK; i++) {
            int found = 0;
            for (size_t j = 0; j < n; j++)
                found |= members[j] == rcpt[i];
            if (!found) {
                snprintf(detail, dlen, "%s is not a subscribed member of case %s for this update",
                         rcpt[i]->id, case_ref);
                rc = REFEX_E_NOT_MEMBER;
            }
        }
    } else if (rc == REFEX_OK) {
        memcpy(rcpt, members, n * sizeof *members);
        *n_rcpt = n;
    } else if (rc == REFEX_E_NOT_MEMBER) {
        snprintf(detail, dlen, "%s is not a member of case %s", a->agency, case_ref);
    } else {
        snprintf(detail, dlen,
                 "no other member of case %s is granted and subscribed to this type of update",
                 case_ref && case_ref[0] ? case_ref : "(none)");
    }
    if (rc == REFEX_E_NOT_MEMBER && unit_begin(a) == REFEX_OK) {
        refex_audit_entry ae;
        audit_fill(a, &ae, "reject", refex_errname(rc), "", "",
                   REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, case_ref ? case_ref : "", "", NULL);
        if (refex_audit_append(a->db, &ae, NULL) == REFEX_OK)
            (void)unit_end(a, 1);
        else
            unit_end(a, 0);
    }
    return rc;
}

static void cmd_send(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    char detail[512] = "", idhex[33] = "", hashhex[65] = "";
    char peers[REFEX_MAX_RECIPIENTS * REFEX_ID_MAX] = "";
    const refex_agency *rcpt[REFEX_MAX_RECIPIENTS];
    size_t n_rcpt = 0;
    uint8_t *body = NULL, *env = NULL, id[16], hash[32];
    size_t body_len = 0, env_len = 0;
    Refex__V1__Body *parsed = NULL;
    Refex__V1__Envelope *e = NULL;
    refex_body_meta meta;
    int rc;

    int type = refex_message_type_parse(json_string_value(json_object_get(req, "type")));
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    json_int_t ttl = json_integer_value(json_object_get(req, "ttl_seconds"));
    int wait = json_is_true(json_object_get(req, "wait"));
    if (!type) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail, "unknown message type");
        goto out;
    }
    if (case_ref && !refex_case_ref_valid(case_ref)) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail,
                 "a case reference is at most 127 letters, digits and . _ : / -");
        goto out;
    }
    if (ttl < 0 || ttl > MAX_TTL_SECONDS) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail, "ttl_seconds must be between 1 and %d", MAX_TTL_SECONDS);
        goto out;
    }
    json_t *to = json_object_get(req, "to");
    int is_update = type == REFEX__V1__MESSAGE_TYPE__CASE_UPDATE;
    if ((!is_update || json_array_size(to) > 0) &&
        (rc = resolve_recipients(a, to, rcpt, &n_rcpt, detail, sizeof detail)) != REFEX_OK)
        goto out;
    if ((rc = refex_body_pack_json(type, json_object_get(req, "body"), &body, &body_len, detail,
                                   sizeof detail)) != REFEX_OK)
        goto out;
    if ((rc = refex_body_unpack(type, body, body_len, &parsed)) != REFEX_OK)
        goto out;
    refex_body_meta_get(parsed, &meta);
    if (!case_ref || !*case_ref)
        case_ref = meta.case_ref;
    if (!refex_case_ref_valid(case_ref)) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail,
                 "the body's case reference has characters outside "
                 "letters, digits and . _ : / -");
        goto out;
    }
    if (is_update && (rc = update_recipients(a, case_ref, (int)parsed->case_update->update_type,
                                             rcpt, &n_rcpt, detail, sizeof detail)) != REFEX_OK)
        goto out;
    refex_seal_params p = {.sender = a->agency,
                           .sign_sk = a->base.keys->sk->sign_sk,
                           .recipients = rcpt,
                           .n_recipients = n_rcpt,
                           .type = (Refex__V1__MessageType)type,
                           .case_ref = case_ref,
                           .created_at_ms = refex_now_ms(),
                           .expires_at_ms = ttl > 0 ? refex_now_ms() + ttl * 1000 : 0};
    if ((rc = refex_envelope_seal(&p, body, body_len, &env, &env_len, id)) != REFEX_OK ||
        (rc = attach_checkpoint(a, &env, &env_len)) != REFEX_OK)
        goto out;
    uint64_t limit = a->base.max_frame;
    if (a->broker_max_frame && a->broker_max_frame < limit)
        limit = a->broker_max_frame;
    if (env_len + 64 > limit) {
        rc = REFEX_E_TOO_BIG;
        snprintf(detail, sizeof detail, "message is %zu bytes; the limit is %llu", env_len,
                 (unsigned long long)limit);
        goto out;
    }
    if (!(e = refex__v1__envelope__unpack(NULL, env_len, env))) {
        rc = REFEX_E_MALFORMED;
        goto out;
    }
    if ((rc = refex_envelope_hash(e, hash)) != REFEX_OK)
        goto out;
    refex_hex_encode(idhex, id, 16);
    refex_hex_encode(hashhex, hash, 32);
    for (size_t i = 0; i < n_rcpt; i++) {
        size_t used = strlen(peers);
        snprintf(peers + used, sizeof peers - used, "%s%s", i ? "," : "", rcpt[i]->id);
    }

    /* Outbox row and audit entry commit together, before the broker sees anything. */
    refex_audit_entry ae;
    audit_fill(a, &ae, "send", "success", peers, idhex, type, case_ref, hashhex, &meta);
    sqlite3_stmt *st = NULL;
    if ((rc = unit_begin(a)) != REFEX_OK)
        goto out;
    rc = refex_db_prepare(a->db,
                          "INSERT INTO outbox(message_id, recipients, type, case_ref,"
                          " created_ms, envelope, state, updated_ms, sent_ms, practitioner,"
                          " purpose, article6, article9, consent, subjects, conversation_id,"
                          " request_id, due_date)"
                          " VALUES (?,?,?,?,?,?,'pending',?,?,?,?,?,?,?,?,?,?,?)",
                          &st);
    if (rc == REFEX_OK) {
        sqlite3_bind_text(st, 1, idhex, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, peers, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, refex_message_type_name(type), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, case_ref, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, p.created_at_ms);
        sqlite3_bind_blob(st, 6, env, (int)env_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, p.created_at_ms);
        /* Sent right after commit if online; the retry timer covers a lost send. */
        sqlite3_bind_int64(st, 8, a->online ? p.created_at_ms : 0);
        /* Kept so receipts and refusals are audited with the same lawful basis. */
        sqlite3_bind_text(st, 9, meta.practitioner, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 10, meta.purpose, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 11, meta.article6, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 12, meta.article9, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 13, meta.consent, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 14, meta.subjects, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 15, meta.conversation_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 16, meta.request_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 17, meta.due_date, -1, SQLITE_STATIC);
        rc = refex_db_err(sqlite3_step(st));
        sqlite3_finalize(st);
    }
    if (rc == REFEX_OK)
        rc = refex_audit_append(a->db, &ae, NULL);
    if (rc == REFEX_OK)
        rc = unit_end(a, 1);
    else
        unit_end(a, 0);
    if (rc != REFEX_OK) {
        snprintf(detail, sizeof detail, "could not commit to the outbox");
        goto out;
    }
    refex_log_info("send: %s %s to %s committed to outbox", idhex, refex_message_type_name(type),
                   peers);

    int sent = a->online && send_envelope_bytes(a, env, env_len) == REFEX_OK;
    if (sent)
        a->last_sent_ms = refex_mono_ms();
    if (wait && a->n_waiters < MAX_WAITERS) {
        waiter *w = &a->waiters[a->n_waiters++];
        memcpy(w->rid, rid, rid_len);
        w->rid_len = rid_len;
        memcpy(w->id, id, 16);
        w->deadline = refex_mono_ms() + WAIT_DEADLINE;
        w->committed = 0;
    } else {
        control_reply(a, rid, rid_len,
                      json_pack("{s:b, s:s, s:s}", "ok", 1, "message_id", idhex, "state",
                                sent ? "sent" : "pending"));
    }
out:
    if (rc != REFEX_OK) {
        /* The detail may quote what the user typed: it goes back to the CLI, not the log. */
        refex_log_warn("send: refused: %s", refex_errname(rc));
        control_reply(a, rid, rid_len, reply_error(rc, detail));
    }
    if (e)
        refex__v1__envelope__free_unpacked(e, NULL);
    if (parsed)
        refex__v1__body__free_unpacked(parsed, NULL);
    free(env);
    if (body)
        sodium_memzero(body, body_len);
    free(body);
}

/* A STORED or REJECTED for one of ours: update the outbox, audit a refusal, answer any
 * CLI that waits for it. */
/* Refusals that say "not now" rather than "never": the message stays pending and is
 * resent. */
static int transient(int code)
{
    return code == REFEX_E_STORE || code == REFEX_E_BUSY || code == REFEX_E_UNAVAILABLE ||
           code == REFEX_E_NOMEM;
}

static void outbox_result(agent *a, const uint8_t id[16], int code, const char *detail)
{
    char idhex[33];
    sqlite3_stmt *st = NULL;
    int rc;
    refex_hex_encode(idhex, id, 16);
    if (transient(code)) {
        refex_log_warn("outbox: %s not stored by the broker yet (%s); will retry", idhex,
                       refex_errname(code));
        goto answer;
    }
    if ((rc = unit_begin(a)) != REFEX_OK)
        return;
    rc = refex_db_prepare(a->db,
                          "UPDATE outbox SET state = ?, error_code = ?, error_detail = ?,"
                          " updated_ms = ? WHERE message_id = ? AND state = 'pending'"
                          " RETURNING recipients",
                          &st);
    if (rc == REFEX_OK) {
        sqlite3_bind_text(st, 1, code ? "rejected" : "stored", -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, code);
        sqlite3_bind_text(st, 3, detail ? detail : "", -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 4, refex_now_ms());
        sqlite3_bind_text(st, 5, idhex, -1, SQLITE_STATIC);
        char peers[REFEX_MAX_RECIPIENTS * REFEX_ID_MAX] = "";
        int hit = sqlite3_step(st) == SQLITE_ROW;
        if (hit)
            snprintf(peers, sizeof peers, "%s", sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        if (hit && code)
            rc = audit_outcome(a, "reject", refex_errname(code), peers, idhex, "");
    }
    if (rc == REFEX_OK)
        rc = unit_end(a, 1);
    else
        unit_end(a, 0);
    if (rc != REFEX_OK)
        refex_log_error("outbox: could not record the result for %s", idhex);
    if (code)
        refex_log_warn("outbox: %s rejected by the broker: %s", idhex, refex_errname(code));
    else
        refex_log_debug("outbox: %s stored by the broker", idhex);
answer:
    for (size_t i = 0; i < a->n_waiters; i++) {
        waiter *w = &a->waiters[i];
        if (memcmp(w->id, id, 16) != 0)
            continue;
        json_t *r =
            code ? reply_error(code, detail)
                 : json_pack("{s:b, s:s, s:s}", "ok", 1, "message_id", idhex, "state", "stored");
        if (code && r) {
            json_object_set_new(r, "message_id", json_string(idhex));
            if (transient(code))
                json_object_set_new(r, "state", json_string("pending"));
        }
        control_reply(a, w->rid, w->rid_len, r);
        a->waiters[i--] = a->waiters[--a->n_waiters];
    }
}

static void expire_waiters(agent *a)
{
    int64_t now = refex_mono_ms();
    for (size_t i = 0; i < a->n_waiters; i++) {
        waiter *w = &a->waiters[i];
        if (w->deadline > now || !w->committed)
            continue;
        char idhex[33];
        refex_hex_encode(idhex, w->id, 16);
        control_reply(
            a, w->rid, w->rid_len,
            json_pack("{s:b, s:s, s:s}", "ok", 1, "message_id", idhex, "state", "pending"));
        a->waiters[i--] = a->waiters[--a->n_waiters];
    }
}

/* ---- receiving ---------------------------------------------------------------------- */

/* ACK with our signed receipt: the sender's proof of what happened here. */
static void send_ack(agent *a, const uint8_t *id, const char *sender, int code,
                     const uint8_t *env_hash)
{
    refex_receipt r;
    uint8_t *blob = NULL;
    size_t len = 0;
    memset(&r, 0, sizeof r);
    memcpy(r.message_id, id, 16);
    snprintf(r.sender, sizeof r.sender, "%s", sender);
    snprintf(r.recipient, sizeof r.recipient, "%s", a->agency);
    snprintf(r.signer, sizeof r.signer, "%s", a->agency);
    r.code = (uint32_t)code;
    r.time_ms = refex_now_ms();
    if (env_hash) {
        memcpy(r.envelope_hash, env_hash, 32);
        r.has_envelope_hash = 1;
    }
    if (refex_receipt_sign(&r, a->base.keys->sk->sign_sk, &blob, &len) != REFEX_OK)
        return;
    Refex__V1__SignedReceipt *sr = refex__v1__signed_receipt__unpack(NULL, len, blob);
    free(blob);
    if (!sr)
        return;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Ack ack = REFEX__V1__ACK__INIT;
    ack.message_id = (ProtobufCBinaryData){16, (uint8_t *)id};
    ack.sender = (char *)sender;
    ack.code = (uint32_t)code;
    ack.receipt = sr;
    f.kind_case = REFEX__V1__FRAME__KIND_ACK;
    f.ack = &ack;
    if (link_out(a, &f) != REFEX_OK)
        refex_log_warn("ack: could not send for a message from %s", sender);
    refex__v1__signed_receipt__free_unpacked(sr, NULL);
}

/* Verify, decrypt, check the body, then inbox row + audit entry in one transaction, then
 * ACK. A message we cannot accept is audited as a reject and refused with its code. */
/* Has this (sender, id) been handled before? 1 with *code = 0 and the stored envelope
 * hash if it is in the inbox, 1 with the refusal code if it was refused, 0 if it is new. */
static int known_delivery(agent *a, const char *sender, const char *idhex, int *code,
                          uint8_t hash[32], int *has_hash)
{
    sqlite3_stmt *st = NULL;
    int found = 0;
    *has_hash = 0;
    if (refex_db_prepare(a->db,
                         "SELECT 0, envelope_hash FROM inbox WHERE sender = ?1 AND message_id = ?2"
                         " UNION ALL SELECT code, '' FROM refused WHERE sender = ?1 AND"
                         " message_id = ?2",
                         &st) != REFEX_OK)
        return 0;
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, idhex, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        found = 1;
        *code = sqlite3_column_int(st, 0);
        *has_hash =
            refex_hex_decode(hash, 32, (const char *)sqlite3_column_text(st, 1)) == REFEX_OK;
    }
    sqlite3_finalize(st);
    return found;
}

static void handle_deliver(agent *a, const Refex__V1__Envelope *env)
{
    Refex__V1__EnvelopeHeader *h = NULL;
    Refex__V1__Body *b = NULL;
    uint8_t *body = NULL, hash[32];
    size_t body_len = 0;
    char idhex[33] = "", hashhex[65] = "";
    refex_body_meta meta;
    int rc = refex_envelope_parse_header(env, &h), have_meta = 0;
    if (rc != REFEX_OK) {
        refex_log_warn("deliver: malformed envelope header; dropped");
        return; /* no id or sender to acknowledge */
    }
    refex_hex_encode(idhex, h->message_id.data, 16);
    /* Handled before (a redelivery, or our ACK was lost): answer as we answered then,
     * without a second audit entry, whatever the message's state is now. */
    int prior_code = 0, prior_has_hash = 0;
    if (known_delivery(a, h->sender, idhex, &prior_code, hash, &prior_has_hash)) {
        refex_log_debug("deliver: %s from %s seen before; acknowledged again", idhex, h->sender);
        send_ack(a, h->message_id.data, h->sender, prior_code, prior_has_hash ? hash : NULL);
        refex__v1__envelope_header__free_unpacked(h, NULL);
        return;
    }
    if (refex_envelope_hash(env, hash) == REFEX_OK)
        refex_hex_encode(hashhex, hash, 32);
    const refex_agency *sender = refex_directory_find(a->base.dir, h->sender);
    int mine = 0;
    for (size_t i = 0; i < h->n_recipients; i++)
        mine |= strcmp(h->recipients[i], a->agency) == 0;
    int64_t now = refex_now_ms();
    if (!mine)
        rc = REFEX_E_NOT_RECIPIENT;
    else if (!sender)
        rc = REFEX_E_UNKNOWN_AGENCY;
    else if (refex_agency_usable(sender, now) != REFEX_OK)
        rc = REFEX_E_REVOKED;
    else if (h->created_at_ms > now + a->base.skew_ms)
        rc = REFEX_E_CLOCK_SKEW; /* from the future; old backlog is fine */
    else if (h->expires_at_ms <= now)
        rc = REFEX_E_EXPIRED;
    else if ((rc = refex_envelope_verify(env, h, sender->sign_pk)) != REFEX_OK)
        ;
    else if ((rc = refex_envelope_open(env, h, a->agency, a->base.keys->pub.enc_pk,
                                       a->base.keys->sk->enc_sk, &body, &body_len)) != REFEX_OK)
        ;
    else if ((rc = refex_body_unpack(h->type, body, body_len, &b)) == REFEX_OK) {
        refex_body_meta_get(b, &meta);
        have_meta = 1;
        /* A case update must come from a member to a member, by the lead's grants here. */
        if (h->type == REFEX__V1__MESSAGE_TYPE__CASE_UPDATE &&
            (!is_case_member(a, h->case_ref, h->sender, 0) ||
             !is_case_member(a, h->case_ref, a->agency, (int)b->case_update->update_type)))
            rc = REFEX_E_NOT_MEMBER;
    }

    refex_audit_entry ae;
    audit_fill(a, &ae, rc == REFEX_OK ? "receive" : "reject",
               rc == REFEX_OK ? "success" : refex_errname(rc), h->sender, idhex, h->type,
               h->case_ref, hashhex, have_meta ? &meta : NULL);
    int dbrc = unit_begin(a), dup = 0;
    if (dbrc == REFEX_OK && rc == REFEX_OK)
        note_peer_checkpoint(a, h->sender, sender, env->checkpoint);
    if (dbrc == REFEX_OK && rc == REFEX_OK) {
        sqlite3_stmt *st = NULL;
        dbrc = refex_db_prepare(a->db,
                                "INSERT INTO inbox(sender, message_id, type, case_ref,"
                                " created_ms, received_ms, envelope_hash, body,"
                                " conversation_id, reply_to, decision)"
                                " VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                                &st);
        if (dbrc == REFEX_OK) {
            sqlite3_bind_text(st, 1, h->sender, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, idhex, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, refex_message_type_name(h->type), -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 4, h->case_ref, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 5, h->created_at_ms);
            sqlite3_bind_int64(st, 6, refex_now_ms());
            sqlite3_bind_text(st, 7, hashhex, -1, SQLITE_STATIC);
            sqlite3_bind_blob(st, 8, body, (int)body_len, SQLITE_STATIC);
            sqlite3_bind_text(st, 9, meta.conversation_id, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 10, meta.reply_to, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 11, meta.decision, -1, SQLITE_STATIC);
            dbrc = refex_db_err(sqlite3_step(st));
            dup = dbrc == REFEX_OK && sqlite3_changes(a->db) == 0;
            sqlite3_finalize(st);
        }
    }
    if (dbrc == REFEX_OK && rc != REFEX_OK) {
        /* Remember the refusal, so a redelivery is answered the same way and not audited
         * again. */
        sqlite3_stmt *st = NULL;
        dbrc = refex_db_prepare(a->db,
                                "INSERT INTO refused(sender, message_id, code) VALUES (?,?,?)"
                                " ON CONFLICT DO NOTHING",
                                &st);
        if (dbrc == REFEX_OK) {
            sqlite3_bind_text(st, 1, h->sender, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, idhex, -1, SQLITE_STATIC);
            sqlite3_bind_int(st, 3, rc);
            dbrc = refex_db_err(sqlite3_step(st));
            dup = dbrc == REFEX_OK && sqlite3_changes(a->db) == 0;
            sqlite3_finalize(st);
        }
    }
    if (dbrc == REFEX_OK && !dup)
        dbrc = refex_audit_append(a->db, &ae, NULL);
    if (dbrc == REFEX_OK)
        dbrc = unit_end(a, 1);
    else
        unit_end(a, 0);

    if (dbrc != REFEX_OK) {
        /* Not committed: no ACK, so the broker keeps it and delivers it again. */
        refex_log_error("deliver: %s from %s not committed (%s); not acknowledged", idhex,
                        h->sender, refex_strerror(dbrc));
    } else {
        if (rc == REFEX_OK)
            refex_log_info("deliver: %s %s from %s %s", idhex, refex_message_type_name(h->type),
                           h->sender, dup ? "was a duplicate" : "verified, decrypted, stored");
        else
            refex_log_warn("deliver: %s from %s refused: %s", idhex, h->sender, refex_errname(rc));
        send_ack(a, h->message_id.data, h->sender, rc, hashhex[0] ? hash : NULL);
    }
    if (b)
        refex__v1__body__free_unpacked(b, NULL);
    if (body)
        sodium_memzero(body, body_len);
    free(body);
    refex__v1__envelope_header__free_unpacked(h, NULL);
}

static void send_receipt_ack(agent *a, const refex_receipt *r)
{
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__ReceiptAck ra = REFEX__V1__RECEIPT_ACK__INIT;
    ra.message_id = (ProtobufCBinaryData){16, (uint8_t *)r->message_id};
    ra.recipient = (char *)r->recipient;
    f.kind_case = REFEX__V1__FRAME__KIND_RECEIPT_ACK;
    f.receipt_ack = &ra;
    if (link_out(a, &f) != REFEX_OK)
        refex_log_warn("receipt: could not acknowledge");
}

/* A receipt for one of our messages: verify the signer (the recipient, or the broker for a
 * non-delivery), record it with an audit entry in one transaction, then acknowledge it. A
 * receipt seen before is acknowledged again without a second audit entry. */
static void handle_receipt(agent *a, const Refex__V1__SignedReceipt *sr)
{
    refex_receipt r;
    char idhex[33], hashhex[65] = "";
    int rc = refex_receipt_verify(sr, a->base.dir, &r);
    if (rc == REFEX_OK && strcmp(r.sender, a->agency) != 0)
        rc = REFEX_E_NOT_RECIPIENT;
    if (rc == REFEX_OK && strcmp(r.signer, r.recipient) != 0 &&
        !(strcmp(r.signer, a->broker_id) == 0 && r.code == REFEX_E_EXPIRED))
        rc = REFEX_E_BAD_SIGNATURE; /* only the recipient speaks for the recipient */
    if (rc != REFEX_OK) {
        refex_log_warn("receipt: refused: %s", refex_errname(rc));
        return;
    }
    refex_hex_encode(idhex, r.message_id, 16);
    if (r.has_envelope_hash)
        refex_hex_encode(hashhex, r.envelope_hash, 32);
    size_t len = refex__v1__signed_receipt__get_packed_size(sr);
    uint8_t *blob = malloc(len);
    sqlite3_stmt *st = NULL;
    if (!blob || unit_begin(a) != REFEX_OK) {
        free(blob);
        return;
    }
    refex__v1__signed_receipt__pack(sr, blob);
    rc = refex_db_prepare(a->db,
                          "INSERT INTO receipts(message_id, recipient, code, signer, time_ms,"
                          " received_ms, receipt) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                          &st);
    int fresh = 0;
    if (rc == REFEX_OK) {
        sqlite3_bind_text(st, 1, idhex, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r.recipient, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, (int)r.code);
        sqlite3_bind_text(st, 4, r.signer, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, r.time_ms);
        sqlite3_bind_int64(st, 6, refex_now_ms());
        sqlite3_bind_blob(st, 7, blob, (int)len, SQLITE_STATIC);
        rc = refex_db_err(sqlite3_step(st));
        fresh = rc == REFEX_OK && sqlite3_changes(a->db) > 0;
        sqlite3_finalize(st);
    }
    if (rc == REFEX_OK && fresh) {
        rc = audit_outcome(a, r.code == REFEX_E_EXPIRED ? "non-delivery" : "receipt",
                           r.code ? refex_errname((int)r.code) : "success", r.recipient, idhex,
                           hashhex);
    }
    if (rc == REFEX_OK)
        rc = unit_end(a, 1);
    else
        unit_end(a, 0);
    free(blob);
    if (rc != REFEX_OK) {
        refex_log_error("receipt: %s from %s not committed; not acknowledged", idhex, r.recipient);
        return;
    }
    if (fresh) {
        if (r.code == REFEX_E_EXPIRED)
            refex_log_warn("receipt: %s was not delivered to %s before it expired", idhex,
                           r.recipient);
        else if (r.code)
            refex_log_warn("receipt: %s refused by %s: %s", idhex, r.recipient,
                           refex_errname((int)r.code));
        else
            refex_log_debug("receipt: %s delivered to %s", idhex, r.recipient);
    }
    send_receipt_ack(a, &r);
}

static void send_hello(agent *a)
{
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Hello h = REFEX__V1__HELLO__INIT;
    h.agency = a->agency;
    h.software = "refex-agent/0.1";
    f.kind_case = REFEX__V1__FRAME__KIND_HELLO;
    f.hello = &h;
    if (refex_link_send(a->link, NULL, 0, &f) != REFEX_OK)
        refex_log_warn("hello: could not send");
}

static void link_readable(agent *a)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, a->link, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return;
    }
    Refex__V1__Frame *f = NULL;
    int rc = refex_frame_unpack(zmq_msg_data(&m), zmq_msg_size(&m), a->base.max_frame, &f);
    int more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    while (more) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        more = zmq_msg_recv(&extra, a->link, 0) >= 0 && zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
    if (rc != REFEX_OK) {
        refex_log_warn("link: frame from the broker refused: %s", refex_errname(rc));
        return;
    }
    switch (f->kind_case) {
    case REFEX__V1__FRAME__KIND_WELCOME:
        a->broker_max_frame = f->welcome->max_frame_bytes;
        if (!a->online) {
            a->online = 1;
            refex_log_info("link: welcomed by the broker as %s", a->agency);
            printf("READY %s\n", a->agency);
            fflush(stdout);
        }
        flush_outbox(a, 0);
        resend_subscriptions(a);
        break;
    case REFEX__V1__FRAME__KIND_STORED:
        outbox_result(a, f->stored->message_id.data, 0, NULL);
        break;
    case REFEX__V1__FRAME__KIND_REJECTED:
        if (f->rejected->message_id.len == 16)
            outbox_result(a, f->rejected->message_id.data, (int)f->rejected->code,
                          f->rejected->detail);
        break;
    case REFEX__V1__FRAME__KIND_DELIVER:
        handle_deliver(a, f->deliver->envelope);
        break;
    case REFEX__V1__FRAME__KIND_ERROR:
        refex_log_warn("link: broker reported %s", refex_errname((int)f->error->code));
        if (f->error->code == REFEX_E_NOT_READY) {
            /* The broker ended our session (e.g. our queue was full): bind again. */
            a->online = 0;
            send_hello(a);
        }
        break;
    case REFEX__V1__FRAME__KIND_RECEIPT:
        handle_receipt(a, f->receipt->receipt);
        break;
    case REFEX__V1__FRAME__KIND_COSIGNED:
        handle_cosigned(a, f->cosigned);
        break;
    case REFEX__V1__FRAME__KIND_GRANT_NOTICE:
        handle_grant_notice(a, f->grant_notice->grant);
        break;
    case REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE:
        handle_subscription_notice(a, f->subscription_notice->subscription);
        break;
    case REFEX__V1__FRAME__KIND_PING:
    case REFEX__V1__FRAME__KIND_PONG:
        break;
    default:
        refex_log_warn("link: unexpected %s frame from the broker", refex_frame_kind_name(f));
    }
    refex_frame_free(&f);
}

static void monitor_readable(agent *a)
{
    int value = 0, ev;
    while ((ev = refex_link_monitor_event(a->mon, &value)) >= 0) {
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            refex_log_info("link: connected to %s", a->broker_ep);
            send_hello(a);
        } else if (ev == ZMQ_EVENT_DISCONNECTED) {
            if (a->online)
                refex_log_warn("link: disconnected from the broker; reconnecting");
            a->online = 0;
        } else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            refex_log_error("link: the broker refused our transport key (status %d): is "
                            "agency %s in the broker's directory?",
                            value, a->agency);
        } else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                   ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            refex_log_error("link: handshake with the broker failed (wrong broker key?)");
        }
    }
}

/* ---- control socket ---------------------------------------------------------------- */

static json_t *inbox_row(sqlite3_stmt *st)
{
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "sender", sqlite3_column_text(st, 0), "message_id",
        sqlite3_column_text(st, 1), "type", sqlite3_column_text(st, 2), "case_ref",
        sqlite3_column_text(st, 3), "created_ms", (json_int_t)sqlite3_column_int64(st, 4),
        "received_ms", (json_int_t)sqlite3_column_int64(st, 5), "envelope_hash",
        sqlite3_column_text(st, 6));
    if (!o)
        return o;
    Refex__V1__Body *b = NULL;
    json_t *bj = NULL;
    int type = refex_message_type_parse((const char *)sqlite3_column_text(st, 2));
    int rc = refex_body_unpack(type, sqlite3_column_blob(st, 7),
                               (size_t)sqlite3_column_bytes(st, 7), &b);
    if (rc == REFEX_OK)
        rc = refex_body_to_json(b, &bj);
    if (rc == REFEX_OK)
        json_object_set_new(o, "body", bj);
    else /* stored and acknowledged, but not displayable as JSON: say so, never drop it */
        json_object_set_new(o, "body_error", json_string(refex_errname(rc)));
    if (b)
        refex__v1__body__free_unpacked(b, NULL);
    return o;
}

static void cmd_inbox(agent *a, const uint8_t *rid, size_t rid_len, json_t *req, int show)
{
    sqlite3_stmt *st = NULL;
    const char *id = json_string_value(json_object_get(req, "id"));
    json_t *rows = json_array();
    int rc = refex_db_prepare(a->db,
                              show ? "SELECT sender, message_id, type, case_ref, created_ms,"
                                     " received_ms, envelope_hash, body FROM inbox"
                                     " WHERE message_id = ?"
                                   : "SELECT sender, message_id, type, case_ref, created_ms,"
                                     " received_ms, envelope_hash, body FROM inbox"
                                     " ORDER BY received_ms, rowid",
                              &st);
    if (rc != REFEX_OK || !rows) {
        json_decref(rows);
        control_reply(a, rid, rid_len, reply_error(rc ? rc : REFEX_E_NOMEM, NULL));
        return;
    }
    if (show)
        sqlite3_bind_text(st, 1, id ? id : "", -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(rows, inbox_row(st));
    sqlite3_finalize(st);
    if (show && json_array_size(rows) == 0) {
        json_decref(rows);
        control_reply(a, rid, rid_len, reply_error(REFEX_E_NOTFOUND, "no such message"));
        return;
    }
    control_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "messages", rows));
}

static void cmd_outbox(agent *a, const uint8_t *rid, size_t rid_len)
{
    sqlite3_stmt *st = NULL;
    json_t *rows = json_array();
    if (!rows || refex_db_prepare(a->db,
                                  "SELECT message_id, recipients, type, case_ref, created_ms,"
                                  " state, error_code, error_detail FROM outbox"
                                  " ORDER BY created_ms",
                                  &st) != REFEX_OK) {
        json_decref(rows);
        control_reply(a, rid, rid_len, reply_error(REFEX_E_DB, NULL));
        return;
    }
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(
            rows,
            json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:i, s:s}", "message_id",
                      sqlite3_column_text(st, 0), "recipients", sqlite3_column_text(st, 1), "type",
                      sqlite3_column_text(st, 2), "case_ref", sqlite3_column_text(st, 3),
                      "created_ms", (json_int_t)sqlite3_column_int64(st, 4), "state",
                      sqlite3_column_text(st, 5), "error_code", sqlite3_column_int(st, 6),
                      "error_detail", sqlite3_column_text(st, 7)));
    sqlite3_finalize(st);
    control_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "messages", rows));
}

/* Where one of our messages is: queued here, stored at the broker, rejected, and what
 * each recipient's receipt (or the broker's non-delivery report) says. */
static void cmd_message_status(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    const char *id = json_string_value(json_object_get(req, "id"));
    sqlite3_stmt *st = NULL;
    json_t *r = NULL, *receipts = NULL;
    if (!id || refex_db_prepare(a->db,
                                "SELECT recipients, type, case_ref, created_ms, state, error_code,"
                                " error_detail FROM outbox WHERE message_id = ?",
                                &st) != REFEX_OK) {
        control_reply(a, rid, rid_len, reply_error(REFEX_E_INVAL, "give a message id"));
        return;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        r = json_pack("{s:b, s:s, s:s, s:s, s:s, s:I, s:s, s:i, s:s}", "ok", 1, "message_id", id,
                      "recipients", sqlite3_column_text(st, 0), "type", sqlite3_column_text(st, 1),
                      "case_ref", sqlite3_column_text(st, 2), "created_ms",
                      (json_int_t)sqlite3_column_int64(st, 3), "state", sqlite3_column_text(st, 4),
                      "error_code", sqlite3_column_int(st, 5), "error_detail",
                      sqlite3_column_text(st, 6));
    sqlite3_finalize(st);
    if (!r) {
        control_reply(a, rid, rid_len,
                      reply_error(REFEX_E_NOTFOUND, "no message with this id was sent from here"));
        return;
    }
    receipts = json_array();
    if (receipts && refex_db_prepare(a->db,
                                     "SELECT recipient, code, signer, time_ms FROM receipts"
                                     " WHERE message_id = ? ORDER BY recipient",
                                     &st) == REFEX_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW)
            json_array_append_new(
                receipts, json_pack("{s:s, s:i, s:s, s:s, s:I}", "recipient",
                                    sqlite3_column_text(st, 0), "code", sqlite3_column_int(st, 1),
                                    "error", refex_errname(sqlite3_column_int(st, 1)), "signer",
                                    sqlite3_column_text(st, 2), "time_ms",
                                    (json_int_t)sqlite3_column_int64(st, 3)));
        sqlite3_finalize(st);
    }
    json_object_set_new(r, "receipts", receipts ? receipts : json_array());
    control_reply(a, rid, rid_len, r);
}

/* Reading the audit log is itself audited: an audit-log-used entry names the tool used
 * (list, query, export, proof, verify) in its outcome field, never the filter values. */
static int audit_used(agent *a, const char *what)
{
    char outcome[64];
    snprintf(outcome, sizeof outcome, "success: %s", what);
    refex_body_meta m = {"", "PURPOSE_AUDIT", "", "", "", "", "", "", "", "", "", ""};
    refex_audit_entry ae;
    audit_fill(a, &ae, "audit-log-used", outcome, "", "", 0, "", "", &m);
    int rc = unit_begin(a);
    if (rc != REFEX_OK)
        return rc;
    rc = refex_audit_append(a->db, &ae, NULL);
    return rc == REFEX_OK ? unit_end(a, 1) : (unit_end(a, 0), rc);
}

/* The referrals this agency made, each with where it stands: queued, stored, received by
 * the recipient (its receipt), and the recipient's decision if one came back (a
 * ReferralDecision whose referral_message_id names the referral). */
static void cmd_referrals(agent *a, const uint8_t *rid, size_t rid_len)
{
    static const char *SQL =
        "SELECT o.message_id, o.recipients, o.case_ref, o.created_ms, o.state, o.error_code,"
        " o.conversation_id,"
        " (SELECT code FROM receipts r WHERE r.message_id = o.message_id ORDER BY code DESC"
        "  LIMIT 1),"
        " d.message_id, d.sender, d.decision, d.case_ref, d.body, d.received_ms"
        " FROM outbox o LEFT JOIN inbox d ON d.rowid = (SELECT rowid FROM inbox i"
        "  WHERE i.reply_to = o.message_id AND i.type = 'REFERRAL_DECISION'"
        "  ORDER BY i.received_ms DESC LIMIT 1)"
        " WHERE o.type = 'REFERRAL' ORDER BY o.created_ms";
    sqlite3_stmt *st = NULL;
    json_t *rows = json_array();
    if (!rows || refex_db_prepare(a->db, SQL, &st) != REFEX_OK) {
        json_decref(rows);
        control_reply(a, rid, rid_len, reply_error(REFEX_E_DB, NULL));
        return;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(st, 4);
        const char *decision = (const char *)sqlite3_column_text(st, 10);
        int has_receipt = sqlite3_column_type(st, 7) != SQLITE_NULL;
        int code = sqlite3_column_int(st, 7);
        const char *status = strcmp(state, "rejected") == 0 ? "rejected by the broker"
                             : decision && strcmp(decision, "DECISION_ACCEPTED") == 0 ? "accepted"
                             : decision && strcmp(decision, "DECISION_DECLINED") == 0 ? "declined"
                             : decision && strcmp(decision, "DECISION_MORE_INFORMATION") == 0
                                 ? "more information needed"
                             : has_receipt && code == REFEX_E_EXPIRED ? "not delivered (expired)"
                             : has_receipt && code != 0               ? "refused by the recipient"
                             : has_receipt                  ? "received, awaiting decision"
                             : strcmp(state, "stored") == 0 ? "stored at the broker"
                                                            : "queued locally";
        json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "message_id",
                              sqlite3_column_text(st, 0), "recipients", sqlite3_column_text(st, 1),
                              "case_ref", sqlite3_column_text(st, 2), "created_ms",
                              (json_int_t)sqlite3_column_int64(st, 3), "conversation_id",
                              sqlite3_column_text(st, 6), "status", status);
        if (o && decision) {
            Refex__V1__Body *b = NULL;
            json_object_set_new(o, "decision_message_id",
                                json_string((const char *)sqlite3_column_text(st, 8)));
            json_object_set_new(o, "decided_by",
                                json_string((const char *)sqlite3_column_text(st, 9)));
            json_object_set_new(o, "decision_case_ref",
                                json_string((const char *)sqlite3_column_text(st, 11)));
            json_object_set_new(o, "decided_ms", json_integer(sqlite3_column_int64(st, 13)));
            if (refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION,
                                  sqlite3_column_blob(st, 12), (size_t)sqlite3_column_bytes(st, 12),
                                  &b) == REFEX_OK) {
                json_object_set_new(o, "case_ref_assigned",
                                    json_string(b->referral_decision->case_ref));
                json_object_set_new(o, "reason", json_string(b->referral_decision->reason));
                refex__v1__body__free_unpacked(b, NULL);
            }
        }
        json_array_append_new(rows, o);
    }
    sqlite3_finalize(st);
    control_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "referrals", rows));
}

/* Information requests this agency sent: answered, declined (a response that declines is
 * still a response), open, or overdue (past the due date with no response). */
static void cmd_requests(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    static const char *SQL =
        "SELECT o.message_id, o.recipients, o.case_ref, o.created_ms, o.request_id,"
        " o.due_date, r.decision, r.message_id, r.received_ms,"
        " o.due_date <> '' AND o.due_date < date('now') AND r.message_id IS NULL"
        " FROM outbox o LEFT JOIN inbox r ON r.rowid = (SELECT rowid FROM inbox i"
        "  WHERE i.reply_to = o.request_id AND i.type = 'INFORMATION_RESPONSE'"
        "  AND o.request_id <> '' ORDER BY i.received_ms LIMIT 1)"
        " WHERE o.type = 'INFORMATION_REQUEST' ORDER BY o.due_date, o.created_ms";
    int only_overdue = json_is_true(json_object_get(req, "overdue"));
    sqlite3_stmt *st = NULL;
    json_t *rows = json_array();
    if (!rows || refex_db_prepare(a->db, SQL, &st) != REFEX_OK) {
        json_decref(rows);
        control_reply(a, rid, rid_len, reply_error(REFEX_E_DB, NULL));
        return;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        int overdue = sqlite3_column_int(st, 9);
        const char *answer = (const char *)sqlite3_column_text(st, 6);
        if (only_overdue && !overdue)
            continue;
        const char *status = overdue  ? "overdue"
                             : answer ? (strcmp(answer, "DECLINED") == 0 ? "declined" : "answered")
                                      : "open";
        json_t *o = json_pack(
            "{s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "message_id", sqlite3_column_text(st, 0),
            "recipients", sqlite3_column_text(st, 1), "case_ref", sqlite3_column_text(st, 2),
            "created_ms", (json_int_t)sqlite3_column_int64(st, 3), "request_id",
            sqlite3_column_text(st, 4), "due_date", sqlite3_column_text(st, 5), "status", status);
        if (o && answer)
            json_object_set_new(o, "response_message_id",
                                json_string((const char *)sqlite3_column_text(st, 7)));
        json_array_append_new(rows, o);
    }
    sqlite3_finalize(st);
    control_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "requests", rows));
}

/* The lead grants (or revokes) case membership: sign, keep, and hand to the broker. */
static void cmd_grant(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    refex_grant g;
    char detail[256] = "";
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = REFEX_OK;
    json_t *types = json_object_get(req, "types"), *t;
    size_t i;
    memset(&g, 0, sizeof g);
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    int open = json_is_true(json_object_get(req, "open"));
    const char *member = open ? a->agency : json_string_value(json_object_get(req, "member"));
    snprintf(g.case_ref, sizeof g.case_ref, "%s", case_ref ? case_ref : "");
    snprintf(g.lead, sizeof g.lead, "%s", a->agency);
    snprintf(g.member, sizeof g.member, "%s", member ? member : "");
    g.revoked = json_is_true(json_object_get(req, "revoke"));
    g.valid_until_ms = json_integer_value(json_object_get(req, "until_ms"));
    g.issued_at_ms = refex_now_ms();
    if (strcmp(a->base.keys->pub.role, REFEX_GRANT_LEAD_ROLE) != 0) {
        rc = REFEX_E_NOT_MEMBER;
        snprintf(detail, sizeof detail, "only a %s agency leads cases", REFEX_GRANT_LEAD_ROLE);
        goto out;
    }
    if (!case_ref || !case_ref[0] || !refex_case_ref_valid(case_ref) || !member ||
        !refex_directory_find(a->base.dir, member) || (strcmp(member, a->agency) == 0 && !open) ||
        json_array_size(types) > REFEX_GRANT_MAX_TYPES) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail,
                 "give a case, and a member from the directory other "
                 "than this agency");
        goto out;
    }
    json_array_foreach(types, i, t)
    {
        const char *name = json_string_value(t);
        const ProtobufCEnumValue *v = name ? protobuf_c_enum_descriptor_get_value_by_name(
                                                 &refex__v1__case_update_type__descriptor, name)
                                           : NULL;
        if (!v || v->value == 0) {
            rc = REFEX_E_INVAL;
            snprintf(detail, sizeof detail, "unknown update type");
            goto out;
        }
        g.types[g.n_types++] = v->value;
    }
    /* Serials only grow: the time in ms, or one more than the last one held. */
    int64_t last = 0;
    sqlite3_stmt *st = NULL;
    if (refex_db_prepare(a->db, "SELECT serial FROM case_grants WHERE case_ref = ? AND member = ?",
                         &st) == REFEX_OK) {
        sqlite3_bind_text(st, 1, g.case_ref, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, g.member, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            last = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    g.serial = (uint64_t)(g.issued_at_ms > last ? g.issued_at_ms : last + 1);
    if ((rc = refex_grant_sign(&g, a->base.keys->sk->sign_sk, &blob, &len)) != REFEX_OK)
        goto out;
    if ((rc = unit_begin(a)) != REFEX_OK)
        goto out;
    rc = store_grant(a, &g, blob, len);
    rc = rc == REFEX_OK ? unit_end(a, 1) : (unit_end(a, 0), rc);
    if (rc != REFEX_OK)
        goto out;
    Refex__V1__SignedGrant *sg = refex__v1__signed_grant__unpack(NULL, len, blob);
    if (sg) {
        Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
        Refex__V1__GrantSubmit gs = REFEX__V1__GRANT_SUBMIT__INIT;
        gs.grant = sg;
        f.kind_case = REFEX__V1__FRAME__KIND_GRANT;
        f.grant = &gs;
        rc = link_out(a, &f); /* after commit, with the rest of the batch */
        refex__v1__signed_grant__free_unpacked(sg, NULL);
    }
    refex_log_info("grant: case %s: %s %s (serial %llu)", g.case_ref, g.member,
                   g.revoked ? "revoked" : "granted", (unsigned long long)g.serial);
out:
    free(blob);
    control_reply(a, rid, rid_len,
                  rc == REFEX_OK ? json_pack("{s:b, s:s, s:s, s:I}", "ok", 1, "case", g.case_ref,
                                             "member", g.member, "serial", (json_int_t)g.serial)
                                 : reply_error(rc, detail));
}

typedef struct {
    agent *a;
    json_t *rows;
} member_rows;

static int member_row(void *vctx, const refex_grant *g)
{
    member_rows *mr = vctx;
    json_t *rows = mr->rows;
    json_t *types = json_array();
    for (size_t i = 0; i < g->n_types; i++) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &refex__v1__case_update_type__descriptor, g->types[i]);
        json_array_append_new(types, json_string(v ? v->name : "?"));
    }
    json_t *row = json_pack(
        "{s:s, s:s, s:o, s:I, s:b, s:b, s:I}", "member", g->member, "lead", g->lead, "update_types",
        types, "valid_until_ms", (json_int_t)g->valid_until_ms, "revoked", g->revoked, "in_force",
        refex_grant_allows(g, refex_now_ms(), 0), "serial", (json_int_t)g->serial);
    if (!row)
        return 0;
    json_object_set_new(row, "subscribed",
                        json_boolean(strcmp(g->member, g->lead) == 0 ||
                                     is_subscribed(mr->a, g->member, g->case_ref, 0)));
    json_object_set_new(row, "is_lead", json_boolean(strcmp(g->member, g->lead) == 0));
    json_array_append_new(rows, row);
    return 0;
}

/* A case's members as this agent knows them, from grants it has verified. */
static void cmd_members(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    json_t *rows = json_array();
    if (!case_ref || !refex_case_ref_valid(case_ref)) {
        json_decref(rows);
        control_reply(a, rid, rid_len, reply_error(REFEX_E_INVAL, "give a case"));
        return;
    }
    member_rows mr = {a, rows};
    each_grant(a, case_ref, member_row, &mr);
    control_reply(a, rid, rid_len,
                  json_pack("{s:b, s:s, s:o}", "ok", 1, "case", case_ref, "members", rows));
}

static void cmd_audit(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    json_t *rows = NULL;
    json_int_t after = json_integer_value(json_object_get(req, "after"));
    json_int_t limit = json_integer_value(json_object_get(req, "limit"));
    int rc = refex_audit_list_json(a->db, after, limit, &rows);
    if (rc == REFEX_OK)
        rc = audit_used(a, "list");
    if (rc != REFEX_OK) {
        json_decref(rows);
        control_reply(a, rid, rid_len, reply_error(rc, NULL));
        return;
    }
    control_reply(a, rid, rid_len, json_pack("{s:b, s:o}", "ok", 1, "entries", rows));
}

static void cmd_audit_used(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    const char *what = json_string_value(json_object_get(req, "what"));
    static const char *const allowed[] = {"query", "export", "proof", "verify", "reconcile", NULL};
    int ok = 0;
    for (int i = 0; what && allowed[i]; i++)
        ok |= strcmp(what, allowed[i]) == 0;
    if (!ok) {
        control_reply(a, rid, rid_len, reply_error(REFEX_E_INVAL, "unknown audit use"));
        return;
    }
    int rc = audit_used(a, what);
    control_reply(a, rid, rid_len,
                  rc == REFEX_OK ? json_pack("{s:b}", "ok", 1) : reply_error(rc, NULL));
}

static void control_readable(agent *a)
{
    zmq_msg_t part[3];
    int n = 0, more = 1;
    while (more && n < 3) {
        zmq_msg_init(&part[n]);
        if (zmq_msg_recv(&part[n], a->control, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part[n]);
            break;
        }
        more = zmq_msg_more(&part[n]);
        n++;
    }
    while (more) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        more = zmq_msg_recv(&extra, a->control, 0) >= 0 && zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
    if (n != 3 || zmq_msg_size(&part[1]) != 0 || zmq_msg_size(&part[0]) > RID_MAX) {
        refex_log_warn("control: malformed request ignored");
        goto out;
    }
    const uint8_t *rid = zmq_msg_data(&part[0]);
    size_t rid_len = zmq_msg_size(&part[0]);
    json_error_t jerr;
    json_t *req = json_loadb(zmq_msg_data(&part[2]), zmq_msg_size(&part[2]), 0, &jerr);
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    if (!req || !cmd) {
        control_reply(a, rid, rid_len,
                      reply_error(REFEX_E_JSON, "request must be a JSON "
                                                "object with a 'cmd'"));
    } else if (strcmp(cmd, "send") == 0) {
        cmd_send(a, rid, rid_len, req);
    } else if (strcmp(cmd, "inbox_list") == 0) {
        cmd_inbox(a, rid, rid_len, req, 0);
    } else if (strcmp(cmd, "inbox_show") == 0) {
        cmd_inbox(a, rid, rid_len, req, 1);
    } else if (strcmp(cmd, "outbox_list") == 0) {
        cmd_outbox(a, rid, rid_len);
    } else if (strcmp(cmd, "message_status") == 0) {
        cmd_message_status(a, rid, rid_len, req);
    } else if (strcmp(cmd, "grant") == 0) {
        cmd_grant(a, rid, rid_len, req);
    } else if (strcmp(cmd, "members") == 0) {
        cmd_members(a, rid, rid_len, req);
    } else if (strcmp(cmd, "subscribe") == 0) {
        cmd_subscribe(a, rid, rid_len, req);
    } else if (strcmp(cmd, "referrals") == 0) {
        cmd_referrals(a, rid, rid_len);
    } else if (strcmp(cmd, "requests") == 0) {
        cmd_requests(a, rid, rid_len, req);
    } else if (strcmp(cmd, "audit_used") == 0) {
        cmd_audit_used(a, rid, rid_len, req);
    } else if (strcmp(cmd, "audit_list") == 0) {
        cmd_audit(a, rid, rid_len, req);
    } else if (strcmp(cmd, "status") == 0) {
        control_reply(a, rid, rid_len,
                      json_pack("{s:b, s:s, s:b, s:s}", "ok", 1, "agency", a->agency, "online",
                                a->online, "broker", a->broker_ep));
    } else {
        control_reply(a, rid, rid_len, reply_error(REFEX_E_INVAL, "unknown command"));
    }
    json_decref(req);
out:
    for (int i = 0; i < n; i++)
        zmq_msg_close(&part[i]);
}

/* ---- cases -------------------------------------------------------------------------- */

/* Stores a verified grant if it is newer than the one held for (case, member), and only if
 * it names the lead already known for the case. Inside the caller's unit. */
static int store_grant(agent *a, const refex_grant *g, const uint8_t *blob, size_t len)
{
    sqlite3_stmt *st = NULL;
    int rc = refex_db_prepare(
        a->db, "SELECT 1 FROM case_grants WHERE case_ref = ? AND lead <> ? LIMIT 1", &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_text(st, 1, g->case_ref, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, g->lead, -1, SQLITE_STATIC);
    int other_lead = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (other_lead) {
        refex_log_error("ALERT grant: case %s already has another lead; grant by %s ignored",
                        g->case_ref, g->lead);
        return REFEX_E_NOT_MEMBER;
    }
    rc = refex_db_prepare(a->db,
                          "INSERT INTO case_grants(case_ref, member, lead, serial, grant)"
                          " VALUES (?,?,?,?,?) ON CONFLICT (case_ref, member) DO UPDATE SET"
                          " serial = excluded.serial, grant = excluded.grant"
                          " WHERE excluded.serial > case_grants.serial",
                          &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_text(st, 1, g->case_ref, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, g->member, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, g->lead, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)g->serial);
    sqlite3_bind_blob(st, 5, blob, (int)len, SQLITE_STATIC);
    rc = refex_db_err(sqlite3_step(st));
    sqlite3_finalize(st);
    return rc;
}

static void handle_grant_notice(agent *a, const Refex__V1__SignedGrant *sg)
{
    refex_grant g;
    int rc = refex_grant_verify(sg, a->base.dir, &g);
    if (rc != REFEX_OK) {
        refex_log_warn("grant: a grant from the broker does not verify (%s); ignored",
                       refex_errname(rc));
        return;
    }
    size_t len = refex__v1__signed_grant__get_packed_size(sg);
    uint8_t *blob = malloc(len ? len : 1);
    if (!blob || unit_begin(a) != REFEX_OK) {
        free(blob);
        return;
    }
    refex__v1__signed_grant__pack(sg, blob);
    rc = store_grant(a, &g, blob, len);
    if (rc == REFEX_OK)
        rc = unit_end(a, 1);
    else
        unit_end(a, 0);
    free(blob);
    if (rc == REFEX_OK)
        refex_log_info("grant: case %s: %s %s by %s", g.case_ref, g.member,
                       g.revoked ? "revoked" : "granted", g.lead);
}

/* ---- subscriptions ------------------------------------------------------------------ */

/* Keeps a verified subscription if it is newer than the one held. Inside the caller's unit. */
static int store_subscription(agent *a, const refex_subscription *s, const uint8_t *blob,
                              size_t len)
{
    sqlite3_stmt *st = NULL;
    int rc =
        refex_db_prepare(a->db,
                         "INSERT INTO case_subscriptions(agency, case_ref, serial, subscription)"
                         " VALUES (?,?,?,?) ON CONFLICT (agency, case_ref) DO UPDATE SET"
                         " serial = excluded.serial, subscription = excluded.subscription"
                         " WHERE excluded.serial > case_subscriptions.serial",
                         &st);
    if (rc != REFEX_OK)
        return rc;
    sqlite3_bind_text(st, 1, s->agency, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, s->case_ref, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)s->serial);
    sqlite3_bind_blob(st, 4, blob, (int)len, SQLITE_STATIC);
    rc = refex_db_err(sqlite3_step(st));
    sqlite3_finalize(st);
    return rc;
}

static void handle_subscription_notice(agent *a, const Refex__V1__SignedSubscription *ss)
{
    refex_subscription s;
    size_t len = refex__v1__signed_subscription__get_packed_size(ss);
    uint8_t *blob = malloc(len ? len : 1);
    if (!blob)
        return;
    refex__v1__signed_subscription__pack(ss, blob);
    int rc = refex_subscription_verify_packed(blob, len, a->base.dir, &s);
    if (rc != REFEX_OK) {
        refex_log_warn("subscription: one from the broker does not verify (%s); ignored",
                       refex_errname(rc));
    } else if ((rc = unit_begin(a)) == REFEX_OK) {
        rc = store_subscription(a, &s, blob, len);
        rc = rc == REFEX_OK ? unit_end(a, 1) : (unit_end(a, 0), rc);
        if (rc == REFEX_OK)
            refex_log_info("subscription: %s %s %s", s.agency,
                           s.unsubscribed ? "unsubscribed from" : "subscribed to",
                           s.case_ref[0] ? s.case_ref : "all its cases");
    }
    free(blob);
}

/* Has `agency` asked, in a subscription it signed, for updates of `type` in the case? A
 * subscription to the case itself decides before one to all its cases. */
static int is_subscribed(agent *a, const char *agency, const char *case_ref, int type)
{
    sqlite3_stmt *st = NULL;
    int wants = 0;
    if (refex_db_prepare(a->db,
                         "SELECT subscription FROM case_subscriptions WHERE agency = ?"
                         " AND case_ref IN (?, '') ORDER BY case_ref DESC",
                         &st) != REFEX_OK)
        return 0;
    sqlite3_bind_text(st, 1, agency, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, case_ref, -1, SQLITE_STATIC);
    /* The first row decides: one that no longer verifies (say, after a key change) means
     * "not subscribed", never a fall back to the all-cases one against the member's wish. */
    if (sqlite3_step(st) == SQLITE_ROW) {
        refex_subscription s;
        wants = refex_subscription_verify_packed(sqlite3_column_blob(st, 0),
                                                 (size_t)sqlite3_column_bytes(st, 0), a->base.dir,
                                                 &s) == REFEX_OK &&
                strcmp(s.agency, agency) == 0 && refex_subscription_wants(&s, case_ref, type);
    }
    sqlite3_finalize(st);
    return wants;
}

static int audit_subscription(agent *a, const char *event, const char *outcome,
                              const char *case_ref)
{
    refex_audit_entry ae;
    audit_fill(a, &ae, event, outcome, "", "", REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, case_ref, "",
               NULL);
    return refex_audit_append(a->db, &ae, NULL);
}

static void submit_subscription(agent *a, const uint8_t *blob, size_t len)
{
    Refex__V1__SignedSubscription *ss = refex__v1__signed_subscription__unpack(NULL, len, blob);
    if (!ss)
        return;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__SubscribeSubmit sub = REFEX__V1__SUBSCRIBE_SUBMIT__INIT;
    sub.subscription = ss;
    f.kind_case = REFEX__V1__FRAME__KIND_SUBSCRIBE;
    f.subscribe = &sub;
    if (link_out(a, &f) != REFEX_OK) /* after commit, with the rest of the batch */
        refex_log_debug("subscription: not sent now; sent again when next welcomed");
    refex__v1__signed_subscription__free_unpacked(ss, NULL);
}

/* On every welcome, our own subscriptions go to the broker again (it ignores ones it has),
 * so one made while the broker was away still reaches the publishers. */
static void resend_subscriptions(agent *a)
{
    sqlite3_stmt *st = NULL;
    if (refex_db_prepare(a->db, "SELECT subscription FROM case_subscriptions WHERE agency = ?",
                         &st) != REFEX_OK)
        return;
    sqlite3_bind_text(st, 1, a->agency, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        refex_subscription s;
        const uint8_t *blob = sqlite3_column_blob(st, 0);
        size_t len = (size_t)sqlite3_column_bytes(st, 0);
        /* Not for a case it has left: the broker would only refuse it. */
        if (refex_subscription_verify_packed(blob, len, a->base.dir, &s) != REFEX_OK ||
            (s.case_ref[0] && !s.unsubscribed && !is_case_member(a, s.case_ref, a->agency, 0)))
            continue;
        submit_subscription(a, blob, len);
    }
    sqlite3_finalize(st);
}

/* A member subscribes to (or unsubscribes from) one case's updates or all its cases'. */
static void cmd_subscribe(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    refex_subscription s;
    char detail[256] = "";
    uint8_t *blob = NULL;
    size_t len = 0, i;
    int rc = REFEX_OK;
    json_t *types = json_object_get(req, "types"), *t;
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    int all = json_is_true(json_object_get(req, "all"));
    memset(&s, 0, sizeof s);
    snprintf(s.agency, sizeof s.agency, "%s", a->agency);
    snprintf(s.case_ref, sizeof s.case_ref, "%s", case_ref && !all ? case_ref : "");
    s.unsubscribed = json_is_true(json_object_get(req, "unsubscribe"));
    s.issued_at_ms = refex_now_ms();
    if ((!all && (!case_ref || !case_ref[0] || !refex_case_ref_valid(case_ref))) ||
        (all && case_ref) || json_array_size(types) > REFEX_GRANT_MAX_TYPES) {
        rc = REFEX_E_INVAL;
        snprintf(detail, sizeof detail, "give a case, or all");
        goto out;
    }
    json_array_foreach(types, i, t)
    {
        const char *name = json_string_value(t);
        const ProtobufCEnumValue *v = name ? protobuf_c_enum_descriptor_get_value_by_name(
                                                 &refex__v1__case_update_type__descriptor, name)
                                           : NULL;
        if (!v || v->value == 0) {
            rc = REFEX_E_INVAL;
            snprintf(detail, sizeof detail, "unknown update type");
            goto out;
        }
        s.types[s.n_types++] = v->value;
    }
    if ((rc = unit_begin(a)) != REFEX_OK)
        goto out;
    if (s.case_ref[0] && !s.unsubscribed && !is_case_member(a, s.case_ref, a->agency, 0)) {
        rc = audit_subscription(a, "reject", refex_errname(REFEX_E_NOT_MEMBER), s.case_ref);
        rc = rc == REFEX_OK ? unit_end(a, 1) : (unit_end(a, 0), rc);
        refex_log_warn("subscription: refused, %s is not a member of case %s", a->agency,
                       s.case_ref);
        snprintf(detail, sizeof detail, "%s is not a member of case %s", a->agency, s.case_ref);
        rc = REFEX_E_NOT_MEMBER;
        goto out;
    }
    /* Serials only grow: the time in ms, or one more than the last one held. */
    int64_t last = 0;
    sqlite3_stmt *st = NULL;
    if (refex_db_prepare(a->db,
                         "SELECT serial FROM case_subscriptions WHERE agency = ? AND case_ref = ?",
                         &st) == REFEX_OK) {
        sqlite3_bind_text(st, 1, s.agency, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, s.case_ref, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            last = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    s.serial = (uint64_t)(s.issued_at_ms > last ? s.issued_at_ms : last + 1);
    rc = refex_subscription_sign(&s, a->base.keys->sk->sign_sk, &blob, &len);
    if (rc == REFEX_OK)
        rc = store_subscription(a, &s, blob, len);
    if (rc == REFEX_OK)
        rc = audit_subscription(a, s.unsubscribed ? "unsubscribe" : "subscribe", "success",
                                s.case_ref[0] ? s.case_ref : "*");
    rc = rc == REFEX_OK ? unit_end(a, 1) : (unit_end(a, 0), rc);
    if (rc != REFEX_OK)
        goto out;
    submit_subscription(a, blob, len);
    refex_log_info("subscription: %s %s (serial %llu)",
                   s.unsubscribed ? "unsubscribed from" : "subscribed to",
                   s.case_ref[0] ? s.case_ref : "all cases", (unsigned long long)s.serial);
out:
    free(blob);
    control_reply(a, rid, rid_len,
                  rc == REFEX_OK ? json_pack("{s:b, s:s, s:b, s:I}", "ok", 1, "case",
                                             s.case_ref[0] ? s.case_ref : "*", "subscribed",
                                             !s.unsubscribed, "serial", (json_int_t)s.serial)
                                 : reply_error(rc, detail));
}

/* The case's verified grants, as (member, grant); fn returns nonzero to stop. */

static void each_grant(agent *a, const char *case_ref, grant_fn fn, void *ctx)
{
    sqlite3_stmt *st = NULL;
    if (refex_db_prepare(a->db, "SELECT grant FROM case_grants WHERE case_ref = ?", &st) !=
        REFEX_OK)
        return;
    sqlite3_bind_text(st, 1, case_ref, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        refex_grant g;
        /* Checked again on every use: the directory may have changed since it arrived. */
        int ok = refex_grant_verify_packed(sqlite3_column_blob(st, 0),
                                           (size_t)sqlite3_column_bytes(st, 0), a->base.dir,
                                           &g) == REFEX_OK &&
                 strcmp(g.case_ref, case_ref) == 0;
        if (ok && fn(ctx, &g))
            break;
    }
    sqlite3_finalize(st);
}

typedef struct {
    const char *agency;
    int type;
    int64_t now;
    int found;
    char lead[REFEX_ID_MAX];
} member_q;

static int member_check(void *vctx, const refex_grant *g)
{
    member_q *q = vctx;
    snprintf(q->lead, sizeof q->lead, "%s", g->lead);
    if (strcmp(g->lead, q->agency) == 0 ||
        (strcmp(g->member, q->agency) == 0 && refex_grant_allows(g, q->now, q->type)))
        q->found = 1;
    return 0;
}

/* Is agency the case's lead, or a member allowed updates of `type` (0: any)? */
static int is_case_member(agent *a, const char *case_ref, const char *agency, int type)
{
    member_q q = {agency, type, refex_now_ms(), 0, ""};
    each_grant(a, case_ref, member_check, &q);
    return q.found;
}

typedef struct {
    agent *a;
    int type;
    int64_t now;
    const refex_agency **out;
    size_t n, cap;
    char lead[REFEX_ID_MAX];
} recipients_q;

static void add_recipient(recipients_q *q, const char *id)
{
    const refex_agency *r = refex_directory_find(q->a->base.dir, id);
    if (!r || strcmp(id, q->a->agency) == 0 || q->n == q->cap)
        return;
    for (size_t i = 0; i < q->n; i++)
        if (q->out[i] == r)
            return;
    q->out[q->n++] = r;
}

static int recipient_of(void *vctx, const refex_grant *g)
{
    recipients_q *q = vctx;
    snprintf(q->lead, sizeof q->lead, "%s", g->lead);
    if (refex_grant_allows(g, q->now, q->type) &&
        is_subscribed(q->a, g->member, g->case_ref, q->type))
        add_recipient(q, g->member);
    return 0;
}

/* A case update goes to every member whose grant, signed by the lead, is in force for its
 * type and whose own signed subscription asks for it, and to the lead: computed here, from
 * verified grants and subscriptions, never taken from the broker. */
static int case_recipients(agent *a, const char *case_ref, int type, const refex_agency **out,
                           size_t cap, size_t *n)
{
    recipients_q q = {a, type, refex_now_ms(), out, 0, cap, ""};
    if (!is_case_member(a, case_ref, a->agency, 0))
        return REFEX_E_NOT_MEMBER;
    each_grant(a, case_ref, recipient_of, &q);
    if (q.lead[0])
        add_recipient(&q, q.lead);
    *n = q.n;
    return q.n ? REFEX_OK : REFEX_E_INVAL;
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
static void maybe_checkpoint(agent *a)
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
static void handle_cosigned(agent *a, const Refex__V1__Cosigned *cs)
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
    int rc = unit_begin(a); /* frames from the broker are handled inside the cycle's batch */
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
        rc = unit_end(a, 1);
    else
        unit_end(a, 0);
    if (rc == REFEX_OK)
        refex_log_info("checkpoint: size %llu witnessed by %s", (unsigned long long)c.size,
                       a->broker_id);
}

/* ---- loop -------------------------------------------------------------------------- */

static void timers(agent *a)
{
    int64_t now = refex_mono_ms();
    if (!a->online)
        return;
    if (now >= a->next_retry_ms) {
        a->next_retry_ms = now + RETRY_MS;
        flush_outbox(a, 1);
    }
    if (now - a->last_sent_ms >= PING_MS) {
        /* Application-level liveness on top of ZMTP heartbeats: any traffic counts. */
        Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
        Refex__V1__Ping p = REFEX__V1__PING__INIT;
        p.nonce = (uint64_t)now;
        f.kind_case = REFEX__V1__FRAME__KIND_PING;
        f.ping = &p;
        if (refex_link_send(a->link, NULL, 0, &f) == REFEX_OK)
            a->last_sent_ms = now;
    }
}

int agent_run(agent *a)
{
    char ep[4200];
    refex_daemon_signals_install();

    const refex_agency *br = refex_directory_find(a->base.dir, a->broker_id);
    a->ctx = zmq_ctx_new();
    a->link = zmq_socket(a->ctx, ZMQ_DEALER);
    a->control = zmq_socket(a->ctx, ZMQ_ROUTER);
    if (!a->link || !a->control)
        return REFEX_E_IO;
    refex_link_tune(a->link, a->base.max_frame);
    if (refex_link_curve_client(a->link, a->base.keys, br->transport_pk) != REFEX_OK ||
        refex_link_monitor(a->ctx, a->link, &a->mon) != REFEX_OK) {
        refex_log_error("link: cannot set up the broker connection");
        return REFEX_E_IO;
    }
    if (zmq_connect(a->link, a->broker_ep) != 0) {
        refex_log_error("link: bad broker endpoint %s: %s", a->broker_ep, zmq_strerror(errno));
        return REFEX_E_CONFIG;
    }
    int64_t maxmsg = CONTROL_MAX;
    int linger0 = 0;
    zmq_setsockopt(a->control, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    /* Replies to a CLI that has gone away must not hold up shutdown. */
    zmq_setsockopt(a->control, ZMQ_LINGER, &linger0, sizeof linger0);
    zmq_setsockopt(a->mon, ZMQ_LINGER, &linger0, sizeof linger0);
    snprintf(ep, sizeof ep, "%s/control.sock", a->base.data_dir);
    remove(ep); /* a stale socket from an unclean stop */
    snprintf(ep, sizeof ep, "ipc://%s/control.sock", a->base.data_dir);
    if (zmq_bind(a->control, ep) != 0) {
        refex_log_error("control: cannot bind %s: %s", ep, zmq_strerror(errno));
        return REFEX_E_IO;
    }
    refex_log_info("agency %s: broker %s, control %s", a->agency, a->broker_ep, ep);

    while (!refex_daemon_stopping()) {
        zmq_pollitem_t items[] = {{a->link, 0, ZMQ_POLLIN, 0},
                                  {a->mon, 0, ZMQ_POLLIN, 0},
                                  {a->control, 0, ZMQ_POLLIN, 0}};
        int n = zmq_poll(items, 3, 500);
        if (n < 0) {
            if (errno == EINTR)
                goto signals;
            refex_log_error("poll: %s", zmq_strerror(errno));
            return REFEX_E_IO;
        }
        if (items[1].revents & ZMQ_POLLIN)
            monitor_readable(a);
        for (int i = 0; i < 256 && (items[0].revents & ZMQ_POLLIN); i++) {
            int ev = 0;
            size_t evlen = sizeof ev;
            zmq_getsockopt(a->link, ZMQ_EVENTS, &ev, &evlen);
            if (!(ev & ZMQ_POLLIN))
                break;
            link_readable(a);
        }
        for (int i = 0; i < 64 && (items[2].revents & ZMQ_POLLIN); i++) {
            int ev = 0;
            size_t evlen = sizeof ev;
            zmq_getsockopt(a->control, ZMQ_EVENTS, &ev, &evlen);
            if (!(ev & ZMQ_POLLIN))
                break;
            control_readable(a);
        }
        timers(a);
        batch_end(a);
        maybe_checkpoint(a);
        expire_waiters(a);
      signals:
        if (refex_daemon_take_reload() && refex_daemon_base_reload(&a->base) == REFEX_OK &&
            !refex_directory_find(a->base.dir, a->agency))
            refex_log_error("reload: agency %s is no longer in the directory", a->agency);
    }
    snprintf(ep, sizeof ep, "%s/control.sock", a->base.data_dir);
    remove(ep);
    refex_log_info("stopping");
    return REFEX_OK;
}
