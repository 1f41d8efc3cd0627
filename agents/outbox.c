/* Sending: a control client's send becomes a sealed envelope in the outbox and the audit
 * log in one unit, then waits its turn in the send queue (outbox_pace.c); STORED/REJECTED
 * settle it and answer waiting clients. Not receiving (inbox.c). */
#include "agent.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batchsig.h"
#include "body.h"
#include "body_rules.h"
#include "codec.h"
#include "envelope.h"
#include "log.h"
#include "sha256.h"
#include "util.h"

/* One send request on its way from the control socket to the outbox. */
typedef struct {
    int type, wait;
    const char *case_ref;
    json_int_t ttl;
    const refex_agency *rcpt[REFEX_MAX_RECIPIENTS];
    size_t n_rcpt;
    uint8_t *body, *env, id[16];
    size_t body_len, env_len;
    Refex__V1__Body *parsed;
    refex_body_meta meta;
    int64_t created_ms, expires_ms;
    char idhex[33], hashhex[65];
    char peers[REFEX_MAX_RECIPIENTS * REFEX_ID_MAX];
    char detail[512];     /* for the client: may quote what the user typed, never logged */
    const char *field;    /* the request field a refusal is about, or NULL */
    const char *local_id; /* the caller's own id for the message, or NULL */
    char subhash[65];     /* hex SHA-256 of what was asked for under local_id */
    int repeat;           /* local_id names a message already kept: first is it */
    agent_outbox_local first;
} send_req;

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

/* The ids resolve_recipients accepts: listed, not the broker or trust anchor, usable now. */
static json_t *valid_recipients(agent *a)
{
    json_t *ids = json_array();
    for (size_t i = 0; ids && i < refex_directory_count(a->base.dir); i++) {
        const refex_agency *r = refex_directory_at(a->base.dir, i);
        if (strcmp(r->role, "broker") != 0 && strcmp(r->role, "trust-anchor") != 0 &&
            refex_agency_usable(r, refex_now_ms()) == REFEX_OK)
            json_array_append_new(ids, json_string(r->id));
    }
    return ids;
}

/* Message type names as the CLI spells them: "referral", "referral-decision", ... */
static json_t *valid_types(void)
{
    const ProtobufCEnumDescriptor *d = &refex__v1__message_type__descriptor;
    json_t *names = json_array();
    for (unsigned i = 0; names && i < d->n_values; i++) {
        char buf[64];
        if (d->values[i].value <= 0 || strlen(d->values[i].name) >= sizeof buf)
            continue;
        for (size_t k = 0; k <= strlen(d->values[i].name); k++)
            buf[k] =
                (char)(d->values[i].name[k] == '_' ? '-'
                                                   : tolower((unsigned char)d->values[i].name[k]));
        json_array_append_new(names, json_string(buf));
    }
    return names;
}

/* A refused send's reply, with "field" naming the request field it is about where one
 * is; an unknown recipient or type also lists the valid ones. */
static json_t *send_error(agent *a, int rc, const send_req *s)
{
    json_t *e = control_error(rc, s ? s->detail : "");
    const char *field = !s ? NULL : rc == REFEX_E_UNKNOWN_AGENCY ? "to" : s->field;
    json_t *valid = !field || rc == REFEX_E_POLICY ? NULL
                    : strcmp(field, "to") == 0     ? valid_recipients(a)
                    : strcmp(field, "type") == 0   ? valid_types()
                                                   : NULL;
    if (e && field)
        json_object_set_new(e, "field", json_string(field));
    if (e && valid)
        json_object_set_new(e, "valid", valid);
    else
        json_decref(valid);
    return e;
}

/* Recipients of a case update: the case's members as its lead's grants say. If the client
 * named recipients, each must be such a member. A refusal is audited. */
static int update_recipients(agent *a, const char *case_ref, int update_type,
                             const refex_agency **rcpt, size_t *n_rcpt, char *detail, size_t dlen)
{
    const refex_agency *members[REFEX_MAX_RECIPIENTS];
    size_t n = 0;
    int rc = case_ref && case_ref[0]
                 ? cases_recipients(a, case_ref, update_type, members, REFEX_MAX_RECIPIENTS, &n)
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
    if (rc == REFEX_E_NOT_MEMBER && batch_unit_begin(a) == REFEX_OK) {
        refex_audit_entry ae;
        journal_fill(a, &ae, "reject", refex_errname(rc), "", "",
                     REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, case_ref ? case_ref : "", "", NULL);
        if (journal_append(a, &ae) == REFEX_OK)
            (void)batch_unit_end(a, 1);
        else
            batch_unit_end(a, 0);
    }
    return rc;
}

/* Required fields (lib/body_rules.c), checked before anything is sealed. A refusal names
 * every missing field for the client and is audited as a reject, with no message id: none
 * was made. Nothing reaches the outbox. */
static int check_required(agent *a, send_req *s)
{
    char peers[REFEX_MAX_RECIPIENTS * REFEX_ID_MAX] = "";
    int rc = refex_body_check(s->parsed, s->detail, sizeof s->detail);
    if (rc == REFEX_OK)
        return REFEX_OK;
    for (size_t i = 0; i < s->n_rcpt; i++) {
        size_t used = strlen(peers);
        snprintf(peers + used, sizeof peers - used, "%s%s", i ? "," : "", s->rcpt[i]->id);
    }
    if (batch_unit_begin(a) == REFEX_OK) {
        refex_audit_entry ae;
        journal_fill(a, &ae, "reject", refex_errname(rc), peers, "", s->type, s->case_ref, "",
                     &s->meta);
        if (journal_append(a, &ae) == REFEX_OK)
            (void)batch_unit_end(a, 1);
        else
            batch_unit_end(a, 0);
    }
    return rc;
}

/* The information-sharing policy (lib/policy.c), before anything is sealed: may our role
 * send this type to each recipient's role? A refusal names "to" and is audited as a reject,
 * with no message id. */
static int check_policy(agent *a, send_req *s)
{
    int rc = REFEX_OK;
    size_t i = 0;
    for (; i < s->n_rcpt; i++)
        if ((rc = refex_policy_check(a->base.dir, a->agency, s->type, s->rcpt[i]->id, s->detail,
                                     sizeof s->detail)) != REFEX_OK)
            break;
    if (rc == REFEX_OK)
        return REFEX_OK;
    s->field = "to";
    refex_log_warn("send: refused by the information-sharing policy: %s", s->detail);
    if (batch_unit_begin(a) == REFEX_OK) {
        refex_audit_entry ae;
        journal_fill(a, &ae, "reject", refex_errname(rc), s->rcpt[i]->id, "", s->type,
                     s->case_ref ? s->case_ref : "", "", &s->meta);
        if (journal_append(a, &ae) == REFEX_OK)
            (void)batch_unit_end(a, 1);
        else
            batch_unit_end(a, 0);
    }
    return rc;
}

static int send_invalid(send_req *s, const char *field, const char *detail)
{
    snprintf(s->detail, sizeof s->detail, "%s", detail);
    s->field = field;
    return REFEX_E_INVAL;
}

/* Checks the request and builds its body; for a case update, works out its recipients. */
/* The body as a serialized Body: from "body_pb" (base64 of the protobuf bytes, for callers
 * that have them: no JSON on either side) or from the JSON object "body"; not both. */
static int body_of(json_t *req, send_req *s)
{
    json_t *pb = json_object_get(req, "body_pb");
    if (s->body)
        return REFEX_OK; /* decoded already, before the local-id lookup */
    if (!pb)
        return refex_body_pack_json(s->type, json_object_get(req, "body"), &s->body, &s->body_len,
                                    s->detail, sizeof s->detail);
    const char *b64 = json_string_value(pb);
    size_t n = b64 ? strlen(b64) : 0;
    if (!b64 || json_object_get(req, "body"))
        return send_invalid(s, "body_pb",
                            "give the body once: \"body\" (JSON) or \"body_pb\" "
                            "(base64 of a serialized refex.v1.Body)");
    size_t cap = n / 4 * 3 + 3;
    if (!(s->body = malloc(cap)))
        return REFEX_E_NOMEM;
    if (refex_base64_decode(s->body, cap, &s->body_len, b64, n) != REFEX_OK) {
        sodium_memzero(s->body, cap);
        s->body_len = 0;
        return send_invalid(s, "body_pb", "not standard padded base64");
    }
    return REFEX_OK;
}

static int parse_send(agent *a, json_t *req, send_req *s)
{
    int rc;
    s->type = refex_message_type_parse(json_string_value(json_object_get(req, "type")));
    s->case_ref = json_string_value(json_object_get(req, "case"));
    s->ttl = json_integer_value(json_object_get(req, "ttl_seconds"));
    s->wait = json_is_true(json_object_get(req, "wait"));
    if (!s->type)
        return send_invalid(s, "type", "unknown message type");
    if (s->case_ref && !refex_case_ref_valid(s->case_ref))
        return send_invalid(s, "case",
                            "a case reference is at most 127 letters, digits and . _ : / -");
    if (s->ttl < 0 || s->ttl > MAX_TTL_SECONDS) {
        snprintf(s->detail, sizeof s->detail, "ttl_seconds must be between 1 and %d",
                 MAX_TTL_SECONDS);
        s->field = "ttl_seconds";
        return REFEX_E_INVAL;
    }
    json_t *to = json_object_get(req, "to");
    int is_update = s->type == REFEX__V1__MESSAGE_TYPE__CASE_UPDATE;
    if ((!is_update || json_array_size(to) > 0) &&
        (rc = resolve_recipients(a, to, s->rcpt, &s->n_rcpt, s->detail, sizeof s->detail)) !=
            REFEX_OK)
        return rc;
    if ((rc = body_of(req, s)) != REFEX_OK ||
        (rc = refex_body_unpack(s->type, s->body, s->body_len, &s->parsed)) != REFEX_OK)
        return rc;
    refex_body_meta_get(s->parsed, &s->meta);
    if (!s->case_ref || !*s->case_ref)
        s->case_ref = s->meta.case_ref;
    if (!refex_case_ref_valid(s->case_ref))
        return send_invalid(s, "body",
                            "the body's case reference has characters outside "
                            "letters, digits and . _ : / -");
    /* The policy before the fields: what may not be sent at all is refused as such. */
    if (!is_update && (rc = check_policy(a, s)) != REFEX_OK)
        return rc;
    if ((rc = check_required(a, s)) != REFEX_OK)
        return rc;
    if (is_update &&
        (rc = update_recipients(a, s->case_ref, (int)s->parsed->case_update->update_type, s->rcpt,
                                &s->n_rcpt, s->detail, sizeof s->detail)) != REFEX_OK)
        return rc;
    return is_update ? check_policy(a, s) : REFEX_OK;
}

/* Encrypts to the recipients, attaches our latest checkpoint, and checks the size. */
static int seal_send(agent *a, send_req *s)
{
    uint8_t hash[32];
    char *note = NULL; /* none yet: the envelope goes without one */
    int rc;
    s->created_ms = refex_now_ms();
    s->expires_ms = s->created_ms + (s->ttl > 0 ? (int64_t)s->ttl * 1000 : REFEX_DEFAULT_TTL_MS);
    refex_seal_params p = {.sender = a->agency,
                           .sign_sk = a->base.keys->sk->sign_sk,
                           .recipients = s->rcpt,
                           .n_recipients = s->n_rcpt,
                           .type = (Refex__V1__MessageType)s->type,
                           .case_ref = s->case_ref,
                           .created_at_ms = s->created_ms,
                           .expires_at_ms = s->expires_ms,
                           .epochs = a->epochs,
                           .hash_out = hash};
    if (journal_checkpoint_note(a, &note) == REFEX_OK)
        p.checkpoint = note;
    /* Unsigned: the batch signature is made when it is sent (batch.c), over every envelope
     * and receipt sent with it. */
    rc = refex_envelope_seal_unsigned(&p, s->body, s->body_len, &s->env, &s->env_len, s->id);
    free(note);
    if (rc != REFEX_OK)
        return rc;
    uint64_t limit = a->base.max_frame;
    if (a->broker_max_frame && a->broker_max_frame < limit)
        limit = a->broker_max_frame;
    if (s->env_len + 64 + REFEX_BATCH_PROOF_MAX_BYTES > limit) {
        snprintf(s->detail, sizeof s->detail, "message is %zu bytes; the limit is %llu", s->env_len,
                 (unsigned long long)limit);
        return REFEX_E_TOO_BIG;
    }
    refex_hex_encode(s->idhex, s->id, 16);
    refex_hex_encode(s->hashhex, hash, 32);
    for (size_t i = 0; i < s->n_rcpt; i++) {
        size_t used = strlen(s->peers);
        snprintf(s->peers + used, sizeof s->peers - used, "%s%s", i ? "," : "", s->rcpt[i]->id);
    }
    return REFEX_OK;
}

/* Outbox row and audit entry commit together, before the broker sees anything. */
static int commit_send(agent *a, send_req *s)
{
    refex_audit_entry ae;
    journal_fill(a, &ae, "send", "success", s->peers, s->idhex, s->type, s->case_ref, s->hashhex,
                 &s->meta);
    /* Sent when its turn in the send queue comes (outbox_pace.c), which records it. */
    agent_outbox_row row = {s->idhex,    s->peers,      refex_message_type_name(s->type),
                            s->case_ref, s->created_ms, s->expires_ms,
                            0,           s->env,        s->env_len,
                            &s->meta,    s->local_id,   s->subhash};
    int rc = batch_unit_begin(a);
    if (rc != REFEX_OK)
        return rc;
    rc = agent_store_outbox_insert(a->store, &row);
    if (rc == REFEX_OK)
        rc = journal_append(a, &ae);
    if (rc == REFEX_OK)
        rc = batch_unit_end(a, 1);
    else
        batch_unit_end(a, 0);
    return rc;
}

/* Registers a client to be answered when the broker stores message id; 0 if too many
 * wait already (then it is answered at once, as without wait). */
static int add_waiter(agent *a, const uint8_t *rid, size_t rid_len, const uint8_t id[16])
{
    if (a->n_waiters >= MAX_WAITERS)
        return 0;
    waiter *w = &a->waiters[a->n_waiters++];
    memcpy(w->rid, rid, rid_len);
    w->rid_len = rid_len;
    memcpy(w->id, id, 16);
    w->deadline = refex_mono_ms() + WAIT_DEADLINE;
    w->committed = 0;
    return 1;
}

/* ---- idempotent submit: the caller's local id --------------------------------------- */

#define LOCAL_ID_MAX 64

/* Domain separation for the hash of a submission (it is kept only in the outbox). */
static const char SUBMISSION_CONTEXT[] = "refex/submission/v1"; /* hashed with its NUL */

/* 1 to 64 printable ASCII characters, none of them a space. */
static int local_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] <= ' ' || (unsigned char)id[i] > '~')
            return 0;
    return n >= 1 && n <= LOCAL_ID_MAX;
}

static int by_string(const void *x, const void *y)
{
    const char *a = json_string_value(*(json_t *const *)x);
    const char *b = json_string_value(*(json_t *const *)y);
    return strcmp(a ? a : "", b ? b : "");
}

/* The recipients as asked for, sorted (order does not make another submission). */
static json_t *sorted_recipients(const json_t *to)
{
    json_t *v[REFEX_MAX_RECIPIENTS], *out;
    size_t n = json_array_size(to), i;
    if (!to || json_is_null(to))
        return json_array();
    if (!json_is_array(to) || n > REFEX_MAX_RECIPIENTS) /* refused later; never matches */
        return json_deep_copy(to);
    for (i = 0; i < n; i++)
        v[i] = json_array_get(to, i);
    qsort(v, n, sizeof v[0], by_string);
    out = json_array();
    for (i = 0; out && i < n; i++)
        json_array_append(out, v[i]);
    return out;
}

/* A body given as protobuf (base64), re-encoded as the JSON form would pack it, so the
 * two forms of one body, or two encodings of it, are one submission. */
static int pb_canonical(int type, const char *b64, uint8_t **out, size_t *len)
{
    size_t n = b64 ? strlen(b64) : 0, cap = n / 4 * 3 + 3, raw_len = 0;
    uint8_t *raw = b64 ? malloc(cap) : NULL;
    Refex__V1__Body *b = NULL;
    int rc = raw ? refex_base64_decode(raw, cap, &raw_len, b64, n) : REFEX_E_MALFORMED;
    if (rc == REFEX_OK)
        rc = refex_body_unpack(type, raw, raw_len, &b);
    if (rc == REFEX_OK)
        rc = refex_pb_pack(&b->base, out, len);
    if (b)
        refex__v1__body__free_unpacked(b, NULL);
    if (raw)
        sodium_memzero(raw, cap);
    free(raw);
    return rc;
}

/* The body as the message would carry it, for the submission hash: the hex SHA-256 of the
 * packed Body it makes, so that how its JSON was written (field-name form, key order, enums
 * by name or number, base64 alphabet) does not make another submission. NULL if it does not
 * pack (the request is refused later; the raw body is hashed instead and never matches). */
static json_t *body_digest(int type, const json_t *body, const json_t *body_pb)
{
    uint8_t *packed = NULL, hash[32];
    size_t len = 0;
    char err[256], hex[65];
    if (!type)
        return NULL;
    if (body_pb) {
        if (body || pb_canonical(type, json_string_value(body_pb), &packed, &len) != REFEX_OK)
            return NULL;
    } else if (refex_body_pack_json(type, body, &packed, &len, err, sizeof err) != REFEX_OK) {
        return NULL;
    }
    refex_sha256(hash, packed, len);
    sodium_memzero(packed, len);
    free(packed);
    refex_hex_encode(hex, hash, 32);
    return json_string(hex);
}

/* SHA-256 over the context and a canonical form of what a send asks for: its type (by
 * its canonical name), the recipients sorted, the case as given, and the body by its digest
 * (body_digest); all as one JSON object dumped with sorted keys, compact. Not the ttl, nor
 * whether to wait. */
static int submission_hash(json_t *req, char hex[65])
{
    const char *type = json_string_value(json_object_get(req, "type"));
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    int t = refex_message_type_parse(type);
    json_t *body = json_object_get(req, "body");
    json_t *digest = body_digest(t, body, json_object_get(req, "body_pb"));
    json_t *canon = json_pack(
        "{s:s, s:o, s:s, s:o}", "type", t ? refex_message_type_name(t) : (type ? type : ""), "to",
        sorted_recipients(json_object_get(req, "to")), "case", case_ref ? case_ref : "",
        digest ? "body_sha256" : "body", digest ? digest : json_incref(body ? body : json_null()));
    char *text = canon ? json_dumps(canon, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_decref(canon);
    if (!text)
        return REFEX_E_NOMEM;
    crypto_hash_sha256_state st;
    uint8_t hash[32];
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const uint8_t *)SUBMISSION_CONTEXT, sizeof SUBMISSION_CONTEXT);
    crypto_hash_sha256_update(&st, (const uint8_t *)text, strlen(text));
    crypto_hash_sha256_final(&st, hash);
    refex_hex_encode(hex, hash, 32);
    free(text);
    return REFEX_OK;
}

/* A send with a local id: if a kept message has it, the same submission is a repeat
 * (s->repeat, s->first) and anything else under it is E_DUPLICATE. Without one, nothing. */
static int local_id_lookup(agent *a, json_t *req, send_req *s)
{
    json_t *v = json_object_get(req, "local_id");
    int found = 0, rc;
    if (!v || json_is_null(v))
        return REFEX_OK;
    s->local_id = json_string_value(v);
    if (!local_id_valid(s->local_id))
        return send_invalid(s, "local_id",
                            "a local id is 1 to 64 printable ASCII characters, no spaces");
    /* A protobuf body in a bad form is refused as such, not compared as a submission. */
    if (json_object_get(req, "body_pb") && (rc = body_of(req, s)) != REFEX_OK)
        return rc;
    if ((rc = submission_hash(req, s->subhash)) != REFEX_OK)
        return rc;
    if ((rc = agent_store_outbox_by_local_id(a->store, s->local_id, &s->first, &found)) !=
        REFEX_OK) {
        snprintf(s->detail, sizeof s->detail, "could not read the outbox");
        return rc;
    }
    if (found && strcmp(s->first.submission_hash, s->subhash) != 0) {
        snprintf(s->detail, sizeof s->detail,
                 "this local id is taken by message %s, sent with another type, recipients, "
                 "case or body",
                 s->first.message_id);
        return REFEX_E_DUPLICATE;
    }
    s->repeat = found;
    return REFEX_OK;
}

/* Answers a repeat with the first message's id and where it is now; nothing is sent or
 * recorded. With wait, a pending one is answered when the broker stores it. */
static void answer_repeat(agent *a, const uint8_t *rid, size_t rid_len, json_t *req,
                          const send_req *s)
{
    const agent_outbox_local *f = &s->first;
    uint8_t id[16];
    json_t *r;
    refex_log_info("send: a repeat of %s (same local id and submission); nothing sent",
                   f->message_id);
    if (strcmp(f->state, "rejected") == 0) {
        r = control_error(f->error_code, f->error_detail);
        json_object_set_new(r, "message_id", json_string(f->message_id));
        json_object_set_new(r, "state", json_string("rejected"));
    } else if (strcmp(f->state, "pending") == 0 && json_is_true(json_object_get(req, "wait")) &&
               refex_hex_decode(id, 16, f->message_id) == REFEX_OK &&
               add_waiter(a, rid, rid_len, id)) {
        return;
    } else {
        const char *state = strcmp(f->state, "stored") == 0 ? "stored"
                            : f->sent_ms                    ? "sent"
                                                            : "pending";
        r = json_pack("{s:b, s:s, s:s}", "ok", 1, "message_id", f->message_id, "state", state);
    }
    json_object_set_new(r, "repeat", json_true());
    batch_reply(a, rid, rid_len, r);
}

/* Queues the committed message behind any older pending ones (it goes to the broker now
 * only if it is next and the window has room), then answers now or when it is stored. */
static void answer_send(agent *a, const uint8_t *rid, size_t rid_len, const send_req *s)
{
    outbox_pace_pump(a);
    int sent = outbox_pace_in_flight(a, s->id);
    if (s->wait && add_waiter(a, rid, rid_len, s->id))
        return;
    batch_reply(a, rid, rid_len,
                json_pack("{s:b, s:s, s:s}", "ok", 1, "message_id", s->idhex, "state",
                          sent ? "sent" : "pending"));
}

void outbox_cmd_send(agent *a, const uint8_t *rid, size_t rid_len, json_t *req)
{
    send_req *s = calloc(1, sizeof *s);
    int rc = s ? local_id_lookup(a, req, s) : REFEX_E_NOMEM;
    if (rc == REFEX_OK && s->repeat) {
        answer_repeat(a, rid, rid_len, req, s);
        goto out;
    }
    if (rc == REFEX_OK)
        rc = parse_send(a, req, s); /* with the policy check */
    if (rc == REFEX_OK)
        rc = seal_send(a, s);
    if (rc == REFEX_OK && (rc = commit_send(a, s)) != REFEX_OK)
        snprintf(s->detail, sizeof s->detail, "could not commit to the outbox");
    if (rc == REFEX_OK) {
        refex_log_info("send: %s %s to %s committed to outbox", s->idhex,
                       refex_message_type_name(s->type), s->peers);
        answer_send(a, rid, rid_len, s);
    } else {
        refex_log_warn("send: refused: %s", refex_errname(rc));
        batch_reply(a, rid, rid_len, send_error(a, rc, s));
    }
out:
    if (!s)
        return;
    if (s->parsed)
        refex__v1__body__free_unpacked(s->parsed, NULL);
    free(s->env);
    if (s->body)
        sodium_memzero(s->body, s->body_len);
    free(s->body);
    free(s);
}

/* Answers the control clients waiting for this message. */
static void answer_waiters(agent *a, const uint8_t id[16], const char *idhex, int code,
                           const char *detail)
{
    for (size_t i = 0; i < a->n_waiters; i++) {
        waiter *w = &a->waiters[i];
        if (memcmp(w->id, id, 16) != 0)
            continue;
        json_t *r =
            code ? control_error(code, detail)
                 : json_pack("{s:b, s:s, s:s}", "ok", 1, "message_id", idhex, "state", "stored");
        if (code && r) {
            json_object_set_new(r, "message_id", json_string(idhex));
            if (outbox_transient(code))
                json_object_set_new(r, "state", json_string("pending"));
        }
        batch_reply(a, w->rid, w->rid_len, r);
        a->waiters[i--] = a->waiters[--a->n_waiters];
    }
}

void outbox_result(agent *a, const uint8_t id[16], int code, const char *detail)
{
    outbox_result_at(a, id, code, detail, NULL, 0);
}

/* A STORED or REJECTED for one of ours: update the outbox (with where the broker's store
 * holds it), audit a refusal, answer any CLI that waits for it. */
void outbox_result_at(agent *a, const uint8_t id[16], int code, const char *detail, const char *gen,
                      uint64_t seq)
{
    char idhex[33], peers[REFEX_MAX_RECIPIENTS * REFEX_ID_MAX] = "";
    int rc, settled = 0;
    refex_hex_encode(idhex, id, 16);
    if (outbox_transient(code)) {
        refex_log_warn("outbox: %s not stored by the broker yet (%s); will retry", idhex,
                       refex_errname(code));
        answer_waiters(a, id, idhex, code, detail);
        outbox_pace_answer(a, id, code);
        return;
    }
    if ((rc = batch_unit_begin(a)) != REFEX_OK)
        return;
    /* A refusal records the current generation with seq 0: a message kept stored after
     * one (see agent_store_outbox_settle_at) is not sent again at every WELCOME. */
    const char *where = code ? (a->broker_gen[0] ? a->broker_gen : NULL) : gen;
    rc = agent_store_outbox_settle_at(a->store, idhex, code, detail, refex_now_ms(), where,
                                      code ? 0 : seq, peers, sizeof peers, &settled);
    if (rc == REFEX_OK && settled == 1 && code)
        rc = journal_outcome(a, "reject", refex_errname(code), peers, idhex, "");
    if (rc == REFEX_OK)
        rc = batch_unit_end(a, 1);
    else
        batch_unit_end(a, 0);
    if (rc != REFEX_OK)
        refex_log_error("outbox: could not record the result for %s", idhex);
    if (code && settled == 2)
        refex_log_warn("outbox: %s, sent again after the broker's store lost it, was refused "
                       "(%s); it stays stored, and with no receipt by its expiry it shows as "
                       "expired, no report",
                       idhex, refex_errname(code));
    else if (code)
        refex_log_warn("outbox: %s rejected by the broker: %s", idhex, refex_errname(code));
    else
        refex_log_debug("outbox: %s stored by the broker", idhex);
    answer_waiters(a, id, idhex, code, detail);
    outbox_pace_answer(a, id, code);
}

void outbox_expire_waiters(agent *a)
{
    int64_t now = refex_mono_ms();
    for (size_t i = 0; i < a->n_waiters; i++) {
        waiter *w = &a->waiters[i];
        if (w->deadline > now || !w->committed)
            continue;
        char idhex[33];
        refex_hex_encode(idhex, w->id, 16);
        batch_reply(a, w->rid, w->rid_len,
                    json_pack("{s:b, s:s, s:s}", "ok", 1, "message_id", idhex, "state", "pending"));
        a->waiters[i--] = a->waiters[--a->n_waiters];
    }
}
