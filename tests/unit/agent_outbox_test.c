/* Tests for the agent's outbox (agents/outbox.c over agents/agent_store.c), against a real
 * SQLite file: a row commits pending with its metadata, leaves the pending list once
 * stored, is settled once only (a second STORED or REJECTED changes nothing and audits
 * nothing), a transient refusal leaves it pending, and a duplicate id is refused. A send
 * under a local id is idempotent (a repeat answers with the first message, and sends and
 * records nothing; another submission under it is E_DUPLICATE), and an agent.db made
 * before local ids opens and takes them. The send queue (outbox_pace.c): new sends wait
 * behind pending ones, at most the window unanswered, a transient refusal stops it until
 * the oldest is stored, a rejection does not, and a new session resends oldest first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>

#include "testing.h"

#include "agent_testing.h"

static int setup(void **state)
{
    *state = agent_fixture_new(T_MIDWIFERY);
    return 0;
}

static int teardown(void **state)
{
    agent_fixture *f = *state;
    agent_fixture_destroy(&f);
    return 0;
}

static const uint8_t ID[16] = {0xab, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const char *IDHEX = "ab0102030405060708090a0b0c0d0e0f";

static void insert(agent_fixture *f, const char *id, int64_t created_ms, int64_t sent_ms)
{
    static const uint8_t env[] = "envelope-bytes";
    refex_body_meta m = {"MW-0042",
                         "PURPOSE_SAFEGUARDING",
                         "ARTICLE6_PUBLIC_TASK",
                         "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST",
                         "CONSENT_GIVEN",
                         "CASE-1",
                         "SUBJ-1,SUBJ-2",
                         "",
                         "",
                         "",
                         "",
                         ""};
    agent_outbox_row r = {
        id,  "social-care,police", "REFERRAL", "CASE-1", created_ms, created_ms + 1000, sent_ms,
        env, sizeof env,           &m,         NULL,     NULL};
    assert_ok(agent_store_outbox_insert(f->a.store, &r));
}

typedef struct {
    int n;
    char ids[8][33];
} pending_list;

static int collect(void *ctx, const char *message_id, const uint8_t *env, size_t len)
{
    pending_list *p = ctx;
    assert_int_equal(len, sizeof "envelope-bytes");
    assert_memory_equal(env, "envelope-bytes", len);
    snprintf(p->ids[p->n++], sizeof p->ids[0], "%s", message_id);
    return p->n == 8;
}

static pending_list pending(agent_fixture *f, int64_t sent_before)
{
    pending_list p;
    memset(&p, 0, sizeof p);
    assert_ok(agent_store_outbox_pending(f->a.store, sent_before, collect, &p));
    return p;
}

/* The outbox row as outbox_list shows it. */
static json_t *outbox_row(agent_fixture *f, const char *id)
{
    json_t *rows = NULL, *row, *found = NULL;
    size_t i;
    assert_ok(agent_store_outbox_json(f->a.store, &rows));
    json_array_foreach(rows, i, row)
    {
        if (strcmp(json_string_value(json_object_get(row, "message_id")), id) == 0)
            found = json_incref(row);
    }
    json_decref(rows);
    assert_non_null(found);
    return found;
}

static void assert_state(agent_fixture *f, const char *id, const char *state, int code)
{
    json_t *row = outbox_row(f, id);
    assert_string_equal(json_string_value(json_object_get(row, "state")), state);
    assert_int_equal(json_integer_value(json_object_get(row, "error_code")), code);
    json_decref(row);
}

static void test_insert_pending_in_order_and_mark_sent(void **state)
{
    agent_fixture *f = *state;
    insert(f, "bb", 2000, 0);
    insert(f, "aa", 1000, 0);
    pending_list p = pending(f, INT64_MAX);
    assert_int_equal(p.n, 2);
    assert_string_equal(p.ids[0], "aa"); /* oldest first: per-sender order */
    assert_string_equal(p.ids[1], "bb");
    assert_ok(agent_store_outbox_mark_sent(f->a.store, "aa", 5000));
    p = pending(f, 4999); /* the retry timer: only what waited long enough */
    assert_int_equal(p.n, 1);
    assert_string_equal(p.ids[0], "bb");
    assert_state(f, "aa", "pending", 0);
}

static void test_duplicate_id_is_refused(void **state)
{
    agent_fixture *f = *state;
    insert(f, "aa", 1000, 0);
    static const uint8_t env[] = "other";
    refex_body_meta m = {"", "", "", "", "", "", "", "", "", "", "", ""};
    agent_outbox_row r = {"aa", "police", "REFERRAL", "", 3000, 4000,
                          0,    env,      sizeof env, &m, NULL, NULL};
    assert_rc(agent_store_outbox_insert(f->a.store, &r), REFEX_E_EXISTS);
    assert_int_equal(pending(f, INT64_MAX).n, 1);
}

static void test_settle_once_only(void **state)
{
    agent_fixture *f = *state;
    char rcpt[256] = "";
    int settled = -1;
    insert(f, "aa", 1000, 0);
    assert_ok(
        agent_store_outbox_settle(f->a.store, "aa", 0, NULL, 2000, rcpt, sizeof rcpt, &settled));
    assert_int_equal(settled, 1);
    assert_string_equal(rcpt, "social-care,police");
    assert_ok(agent_store_outbox_settle(f->a.store, "aa", REFEX_E_NOT_MEMBER, "late", 3000, rcpt,
                                        sizeof rcpt, &settled));
    assert_int_equal(settled, 0); /* no longer pending: a late REJECTED changes nothing */
    assert_state(f, "aa", "stored", 0);
    assert_int_equal(pending(f, INT64_MAX).n, 0);
    assert_ok(agent_store_outbox_settle(f->a.store, "unknown", 0, NULL, 2000, rcpt, sizeof rcpt,
                                        &settled));
    assert_int_equal(settled, 0);
}

static int check_meta(void *ctx, const char *type, const refex_body_meta *m)
{
    int *calls = ctx;
    (*calls)++;
    assert_string_equal(type, "REFERRAL");
    assert_string_equal(m->case_ref, "CASE-1");
    assert_string_equal(m->practitioner, "MW-0042");
    assert_string_equal(m->article9, "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST");
    assert_string_equal(m->subjects, "SUBJ-1,SUBJ-2");
    return REFEX_E_BUSY; /* passed back to the caller */
}

static int check_no_meta(void *ctx, const char *type, const refex_body_meta *m)
{
    (void)ctx;
    assert_string_equal(type, "");
    assert_string_equal(m->case_ref, "");
    assert_string_equal(m->purpose, "");
    return REFEX_OK;
}

static void test_meta_kept_for_auditing_outcomes(void **state)
{
    agent_fixture *f = *state;
    int calls = 0;
    insert(f, "aa", 1000, 0);
    assert_rc(agent_store_outbox_meta(f->a.store, "aa", check_meta, &calls), REFEX_E_BUSY);
    assert_int_equal(calls, 1);
    assert_ok(agent_store_outbox_meta(f->a.store, "zz", check_no_meta, NULL));
}

/* outbox_result: STORED settles the row without an audit entry; a second STORED and a late
 * REJECTED are no-ops. */
static void test_result_stored_is_idempotent(void **state)
{
    agent_fixture *f = *state;
    insert(f, IDHEX, 1000, 1000);
    uint64_t before = agent_fixture_audit_size(f);
    outbox_result(&f->a, ID, 0, NULL);
    agent_fixture_commit(f);
    assert_state(f, IDHEX, "stored", 0);
    outbox_result(&f->a, ID, 0, NULL);
    outbox_result(&f->a, ID, REFEX_E_NOT_MEMBER, "late");
    agent_fixture_commit(f);
    assert_state(f, IDHEX, "stored", 0);
    assert_int_equal(agent_fixture_audit_size(f), before);
}

/* A REJECTED settles the row and is audited once; a redelivered REJECTED is not audited
 * again. */
static void test_result_rejected_audited_once(void **state)
{
    agent_fixture *f = *state;
    insert(f, IDHEX, 1000, 1000);
    uint64_t before = agent_fixture_audit_size(f);
    outbox_result(&f->a, ID, REFEX_E_NOT_MEMBER, "not a member");
    agent_fixture_commit(f);
    assert_state(f, IDHEX, "rejected", REFEX_E_NOT_MEMBER);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
    outbox_result(&f->a, ID, REFEX_E_NOT_MEMBER, "not a member");
    agent_fixture_commit(f);
    assert_int_equal(agent_fixture_audit_size(f), before + 1);
}

/* "Not now" from the broker: the message stays pending, to be sent again. */
static void test_result_transient_stays_pending(void **state)
{
    agent_fixture *f = *state;
    insert(f, IDHEX, 1000, 1000);
    outbox_result(&f->a, ID, REFEX_E_BUSY, NULL);
    agent_fixture_commit(f);
    assert_state(f, IDHEX, "pending", 0);
    assert_int_equal(pending(f, INT64_MAX).n, 1);
}

/* A client waiting for the STORED is answered (after commit) with the message's state. */
static void test_result_answers_waiter(void **state)
{
    agent_fixture *f = *state;
    insert(f, IDHEX, 1000, 1000);
    waiter *w = &f->a.waiters[f->a.n_waiters++];
    memcpy(w->rid, "client", 6);
    w->rid_len = 6;
    memcpy(w->id, ID, 16);
    w->committed = 1;
    outbox_result(&f->a, ID, 0, NULL);
    assert_int_equal(f->a.n_waiters, 0);
    assert_int_equal(f->a.outq_n, 1); /* held until the batch commits */
    assert_int_equal(f->a.outq[0].rid_len, 6);
    json_t *r = json_loadb(f->a.outq[0].data, f->a.outq[0].len, 0, NULL);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(json_string_value(json_object_get(r, "state")), "stored");
    assert_string_equal(json_string_value(json_object_get(r, "message_id")), IDHEX);
    json_decref(r);
    agent_fixture_commit(f);
}

/* ---- idempotent submit by local id ------------------------------------------------- */

/* A referral body with every field a sending agent may require. */
#define REFERRAL_BODY(summary)                                                                     \
    "{\"kind\": \"REFERRAL_PRE_BIRTH\", \"summary\": \"" summary "\","                             \
    " \"subject\": {\"kind\": \"SUBJECT_UNBORN\", \"reference\": \"UB-1\"},"                       \
    " \"referrer\": {\"reference\": \"MW-1\"}, \"purpose\": \"PURPOSE_SAFEGUARDING\","             \
    " \"urgency\": \"URGENCY_ROUTINE\", \"consent\": \"CONSENT_NOT_SOUGHT_SAFEGUARDING\","         \
    " \"lawful_basis\": {\"article6\": \"ARTICLE6_PUBLIC_TASK\","                                  \
    " \"article9\": \"ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST\"}}"

/* The same body, its keys in another order. */
#define REFERRAL_BODY_REORDERED                                                                    \
    "{\"lawful_basis\": {\"article9\": \"ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST\","                  \
    " \"article6\": \"ARTICLE6_PUBLIC_TASK\"}, \"consent\": \"CONSENT_NOT_SOUGHT_SAFEGUARDING\","  \
    " \"urgency\": \"URGENCY_ROUTINE\", \"purpose\": \"PURPOSE_SAFEGUARDING\","                    \
    " \"referrer\": {\"reference\": \"MW-1\"},"                                                    \
    " \"subject\": {\"reference\": \"UB-1\", \"kind\": \"SUBJECT_UNBORN\"},"                       \
    " \"summary\": \"first\", \"kind\": \"REFERRAL_PRE_BIRTH\"}"

typedef struct {
    json_t *reply; /* NULL if none was queued (a waiter) */
    size_t frames; /* frames queued for the broker */
} send_outcome;

/* Runs one control `send` inside a cycle's batch, as the loop does, and commits it. */
static send_outcome control_send_json(agent_fixture *f, const char *json)
{
    send_outcome o = {NULL, 0};
    json_error_t jerr;
    json_t *req = json_loads(json, 0, &jerr);
    if (!req)
        fail_msg("bad test request: %s", jerr.text);
    assert_ok(batch_unit_begin(&f->a));
    assert_ok(batch_unit_end(&f->a, 1));
    outbox_cmd_send(&f->a, (const uint8_t *)"cli", 3, req);
    json_decref(req);
    for (size_t i = 0; i < f->a.outq_n; i++) {
        if (f->a.outq[i].rid_len == 0) {
            o.frames++;
            continue;
        }
        assert_null(o.reply);
        assert_memory_equal(f->a.outq[i].rid, "cli", 3);
        o.reply = json_loadb(f->a.outq[i].data, f->a.outq[i].len, 0, NULL);
        assert_non_null(o.reply);
    }
    agent_fixture_commit(f);
    return o;
}

static size_t outbox_rows(agent_fixture *f)
{
    json_t *rows = NULL;
    assert_ok(agent_store_outbox_json(f->a.store, &rows));
    size_t n = json_array_size(rows);
    json_decref(rows);
    return n;
}

static const char *reply_str(const json_t *r, const char *key)
{
    const char *v = json_string_value(json_object_get(r, key));
    return v ? v : "";
}

static void assert_refused(send_outcome o, int code)
{
    assert_non_null(o.reply);
    assert_false(json_is_true(json_object_get(o.reply, "ok")));
    assert_rc((int)json_integer_value(json_object_get(o.reply, "code")), code);
    assert_string_equal(reply_str(o.reply, "error"), refex_errname(code));
}

#define SEND_EPR1(to, summary, extra)                                                              \
    "{\"cmd\": \"send\", \"type\": \"referral\", \"to\": " to ", \"local_id\": \"EPR-1\","         \
    " \"body\": " REFERRAL_BODY(summary) extra "}"

/* A repeat under the same local id, recipients in another order and the body's keys too,
 * gets the first message's id and sends, records and audits nothing. */
static void test_local_id_repeat_sends_nothing(void **state)
{
    agent_fixture *f = *state;
    char first[33];
    f->a.online = 1;
    send_outcome o = control_send_json(f, SEND_EPR1("[\"social-care\", \"police\"]", "first", ""));
    assert_true(json_is_true(json_object_get(o.reply, "ok")));
    assert_int_equal(o.frames, 1);
    assert_null(json_object_get(o.reply, "repeat"));
    snprintf(first, sizeof first, "%s", reply_str(o.reply, "message_id"));
    assert_int_equal(strlen(first), 32);
    json_decref(o.reply);
    uint64_t audited = agent_fixture_audit_size(f);
    assert_int_equal(outbox_rows(f), 1);

    o = control_send_json(f, "{\"cmd\": \"send\", \"type\": \"REFERRAL\", \"local_id\": \"EPR-1\","
                             " \"to\": [\"police\", \"social-care\"], \"ttl_seconds\": 60,"
                             " \"body\": " REFERRAL_BODY_REORDERED "}");
    assert_true(json_is_true(json_object_get(o.reply, "ok")));
    assert_string_equal(reply_str(o.reply, "message_id"), first);
    assert_string_equal(reply_str(o.reply, "state"), "sent");
    assert_true(json_is_true(json_object_get(o.reply, "repeat")));
    assert_int_equal(o.frames, 0); /* nothing to the broker */
    json_decref(o.reply);
    assert_int_equal(outbox_rows(f), 1);
    assert_int_equal(agent_fixture_audit_size(f), audited);
}

/* The local id taken, anything else under it is refused, naming the first message, and
 * nothing is recorded. */
static void test_local_id_other_submission_is_duplicate(void **state)
{
    agent_fixture *f = *state;
    send_outcome o = control_send_json(f, SEND_EPR1("[\"social-care\"]", "first", ""));
    char first[33];
    snprintf(first, sizeof first, "%s", reply_str(o.reply, "message_id"));
    json_decref(o.reply);
    uint64_t audited = agent_fixture_audit_size(f);
    static const char *const others[] = {
        SEND_EPR1("[\"social-care\"]", "second", ""),                   /* another body */
        SEND_EPR1("[\"social-care\", \"police\"]", "first", ""),        /* other recipients */
        SEND_EPR1("[\"social-care\"]", "first", ", \"case\": \"C-9\""), /* another case */
        "{\"cmd\": \"send\", \"type\": \"information-request\", \"to\": [\"social-care\"],"
        " \"local_id\": \"EPR-1\", \"body\": {\"request_id\": \"R-1\"}}", /* another type */
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        o = control_send_json(f, others[i]);
        assert_refused(o, REFEX_E_DUPLICATE);
        assert_non_null(strstr(reply_str(o.reply, "detail"), first));
        assert_null(json_object_get(o.reply, "message_id"));
        json_decref(o.reply);
    }
    assert_int_equal(outbox_rows(f), 1);
    assert_int_equal(agent_fixture_audit_size(f), audited);
    /* Another local id is another message. */
    o = control_send_json(f,
                          "{\"cmd\": \"send\", \"type\": \"referral\", \"to\": [\"social-care\"],"
                          " \"local_id\": \"EPR-2\", \"body\": " REFERRAL_BODY("first") "}");
    assert_true(json_is_true(json_object_get(o.reply, "ok")));
    assert_string_not_equal(reply_str(o.reply, "message_id"), first);
    json_decref(o.reply);
    assert_int_equal(outbox_rows(f), 2);
}

/* 1 to 64 printable ASCII characters without spaces; anything else is E_INVAL and nothing
 * is recorded. null counts as absent. */
static void test_local_id_validated(void **state)
{
    agent_fixture *f = *state;
    static const char *const bad[] = {
        "\"\"",
        "\"EPR 1\"",
        "\"EPR\\t1\"",
        "\"caf\\u00e9\"",
        "\"EPR\\u007f\"",
        "12",
        "true",
        "\""
        "0123456789012345678901234567890123456789012345678901234567890123"
        "4\"",
    };
    char req[2048];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(req, sizeof req,
                 "{\"cmd\": \"send\", \"type\": \"referral\", \"to\": [\"social-care\"],"
                 " \"local_id\": %s, \"body\": " REFERRAL_BODY("x") "}",
                 bad[i]);
        send_outcome o = control_send_json(f, req);
        assert_refused(o, REFEX_E_INVAL);
        assert_non_null(strstr(reply_str(o.reply, "detail"), "local id"));
        json_decref(o.reply);
    }
    assert_int_equal(outbox_rows(f), 0);
    static const char *const good[] = {
        "null", "\"!~\"",
        "\""
        "0123456789012345678901234567890123456789012345678901234567890123"
        "\""};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(req, sizeof req,
                 "{\"cmd\": \"send\", \"type\": \"referral\", \"to\": [\"social-care\"],"
                 " \"local_id\": %s, \"body\": " REFERRAL_BODY("x") "}",
                 good[i]);
        send_outcome o = control_send_json(f, req);
        assert_true(json_is_true(json_object_get(o.reply, "ok")));
        json_decref(o.reply);
    }
    assert_int_equal(outbox_rows(f), 3);
}

/* With wait: a repeat of a stored message is answered "stored" at once; of a pending one,
 * when the broker stores it; of a rejected one, with the broker's refusal again. */
static void test_local_id_repeat_with_wait(void **state)
{
    agent_fixture *f = *state;
    uint8_t id[16];
    char first[33];
    send_outcome o = control_send_json(f, SEND_EPR1("[\"social-care\"]", "first", ""));
    assert_string_equal(reply_str(o.reply, "state"), "pending"); /* offline */
    snprintf(first, sizeof first, "%s", reply_str(o.reply, "message_id"));
    json_decref(o.reply);
    assert_ok(refex_hex_decode(id, 16, first));

    o = control_send_json(f, SEND_EPR1("[\"social-care\"]", "first", ", \"wait\": true"));
    assert_null(o.reply); /* waits for the STORED */
    assert_int_equal(f->a.n_waiters, 1);
    outbox_result(&f->a, id, 0, NULL);
    assert_int_equal(f->a.n_waiters, 0);
    agent_fixture_commit(f);

    o = control_send_json(f, SEND_EPR1("[\"social-care\"]", "first", ", \"wait\": true"));
    assert_true(json_is_true(json_object_get(o.reply, "ok")));
    assert_string_equal(reply_str(o.reply, "state"), "stored");
    assert_string_equal(reply_str(o.reply, "message_id"), first);
    assert_true(json_is_true(json_object_get(o.reply, "repeat")));
    assert_int_equal(f->a.n_waiters, 0);
    json_decref(o.reply);

    /* A rejected message stays rejected: its repeat is the refusal, with its id. */
    o = control_send_json(f, "{\"cmd\": \"send\", \"type\": \"referral\", \"to\": [\"police\"],"
                             " \"local_id\": \"EPR-3\", \"body\": " REFERRAL_BODY("x") "}");
    char third[33];
    snprintf(third, sizeof third, "%s", reply_str(o.reply, "message_id"));
    json_decref(o.reply);
    assert_ok(refex_hex_decode(id, 16, third));
    outbox_result(&f->a, id, REFEX_E_REVOKED, "police is revoked");
    agent_fixture_commit(f);
    o = control_send_json(f, "{\"cmd\": \"send\", \"type\": \"referral\", \"to\": [\"police\"],"
                             " \"local_id\": \"EPR-3\", \"wait\": true,"
                             " \"body\": " REFERRAL_BODY("x") "}");
    assert_refused(o, REFEX_E_REVOKED);
    assert_string_equal(reply_str(o.reply, "message_id"), third);
    assert_string_equal(reply_str(o.reply, "state"), "rejected");
    assert_string_equal(reply_str(o.reply, "detail"), "police is revoked");
    json_decref(o.reply);
    assert_int_equal(outbox_rows(f), 2);
}

/* message_status takes a local id in place of the message id; listings show it. */
static void test_local_id_in_status_and_listing(void **state)
{
    agent_fixture *f = *state;
    json_t *r = NULL;
    char first[33];
    send_outcome o = control_send_json(f, SEND_EPR1("[\"social-care\"]", "first", ""));
    snprintf(first, sizeof first, "%s", reply_str(o.reply, "message_id"));
    json_decref(o.reply);
    insert(f, "ab", 1000, 0); /* one without a local id */

    assert_ok(agent_store_message_status_json(f->a.store, "EPR-1", &r));
    assert_string_equal(reply_str(r, "message_id"), first);
    assert_string_equal(reply_str(r, "local_id"), "EPR-1");
    assert_true(json_is_array(json_object_get(r, "receipts")));
    json_decref(r);
    assert_ok(agent_store_message_status_json(f->a.store, first, &r));
    assert_string_equal(reply_str(r, "local_id"), "EPR-1");
    json_decref(r);
    r = NULL;
    assert_rc(agent_store_message_status_json(f->a.store, "EPR-9", &r), REFEX_E_NOTFOUND);
    assert_rc(agent_store_message_status_json(f->a.store, "", &r), REFEX_E_NOTFOUND);
    assert_null(r);

    json_t *row = outbox_row(f, first);
    assert_string_equal(reply_str(row, "local_id"), "EPR-1");
    json_decref(row);
    row = outbox_row(f, "ab");
    assert_string_equal(reply_str(row, "local_id"), "");
    json_decref(row);
}

/* A local id that looks like a message id is still found as a local id, and a message id
 * wins over a local id spelt the same. */
static void test_local_id_shaped_like_a_message_id(void **state)
{
    agent_fixture *f = *state;
    json_t *r = NULL;
    send_outcome o = control_send_json(
        f, "{\"cmd\": \"send\", \"type\": \"referral\", \"to\": [\"social-care\"],"
           " \"local_id\": \""
           "ab0102030405060708090a0b0c0d0e0f"
           "\","
           " \"body\": " REFERRAL_BODY("x") "}");
    char mine[33];
    snprintf(mine, sizeof mine, "%s", reply_str(o.reply, "message_id"));
    json_decref(o.reply);
    assert_ok(agent_store_message_status_json(f->a.store, IDHEX, &r));
    assert_string_equal(reply_str(r, "message_id"), mine);
    json_decref(r);
    insert(f, IDHEX, 1000, 0);
    assert_ok(agent_store_message_status_json(f->a.store, IDHEX, &r));
    assert_string_equal(reply_str(r, "message_id"), IDHEX);
    json_decref(r);
}

/* The outbox as it was before local ids, with one message in it. */
static const char *OLD_SCHEMA =
    "CREATE TABLE outbox ("
    " message_id TEXT PRIMARY KEY, recipients TEXT NOT NULL, type TEXT NOT NULL,"
    " case_ref TEXT NOT NULL, created_ms INTEGER NOT NULL, envelope BLOB NOT NULL,"
    " state TEXT NOT NULL, error_code INTEGER NOT NULL DEFAULT 0,"
    " error_detail TEXT NOT NULL DEFAULT '', updated_ms INTEGER NOT NULL,"
    " sent_ms INTEGER NOT NULL DEFAULT 0, practitioner TEXT NOT NULL DEFAULT '',"
    " purpose TEXT NOT NULL DEFAULT '', article6 TEXT NOT NULL DEFAULT '',"
    " article9 TEXT NOT NULL DEFAULT '', consent TEXT NOT NULL DEFAULT '',"
    " subjects TEXT NOT NULL DEFAULT '', conversation_id TEXT NOT NULL DEFAULT '',"
    " request_id TEXT NOT NULL DEFAULT '', due_date TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX outbox_state ON outbox(state, created_ms);"
    "INSERT INTO outbox(message_id, recipients, type, case_ref, created_ms, envelope, state,"
    " updated_ms) VALUES ('0ld0', 'social-care', 'REFERRAL', 'C-1', 1000, x'00', 'pending',"
    " 1000);";

static void test_old_database_opens_and_takes_local_ids(void **state)
{
    agent_fixture *f = *state;
    char path[300], err[256];
    sqlite3 *db = NULL;
    agent_store *st = NULL;
    agent_outbox_local lo;
    int found = -1;
    snprintf(path, sizeof path, "%s/old-agent.db", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, OLD_SCHEMA, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    for (int round = 0; round < 2; round++) { /* the upgrade is done once, then a no-op */
        if (agent_store_open(path, &st, err, sizeof err) != REFEX_OK)
            fail_msg("agent_store_open of an old database: %s", err);
        json_t *rows = NULL;
        assert_ok(agent_store_outbox_json(st, &rows));
        assert_int_equal(json_array_size(rows), round + 1);
        json_t *old = json_array_get(rows, 0);
        assert_string_equal(reply_str(old, "message_id"), "0ld0");
        assert_string_equal(reply_str(old, "state"), "pending");
        assert_string_equal(reply_str(old, "local_id"), "");
        json_decref(rows);
        if (round == 0) {
            static const uint8_t env[] = "e";
            refex_body_meta m = {"", "", "", "", "", "", "", "", "", "", "", ""};
            agent_outbox_row r = {"new1", "police", "REFERRAL", "", 2000,    3000,
                                  0,      env,      sizeof env, &m, "EPR-1", "aa"};
            assert_ok(agent_store_outbox_insert(st, &r));
            agent_outbox_row again = {"new2", "police", "REFERRAL", "", 3000,    4000,
                                      0,      env,      sizeof env, &m, "EPR-1", "bb"};
            assert_rc(agent_store_outbox_insert(st, &again), REFEX_E_EXISTS); /* unique */
        }
        assert_ok(agent_store_outbox_by_local_id(st, "EPR-1", &lo, &found));
        assert_int_equal(found, 1);
        assert_string_equal(lo.message_id, "new1");
        assert_string_equal(lo.submission_hash, "aa");
        assert_ok(agent_store_outbox_by_local_id(st, "", &lo, &found));
        assert_int_equal(found, 0); /* "" is no local id, though the old row has it */
        agent_store_close(&st);
    }
}

/* ---- the send queue: order and pace (agents/outbox_pace.c) ------------------------- */

#include "envelope.h"

typedef struct {
    size_t n;
    char ids[16][33];
} sends;

/* The SENDs the open batch queued for the broker, by message id, in order; then commits. */
static sends take_sends(agent_fixture *f)
{
    sends out;
    memset(&out, 0, sizeof out);
    for (size_t i = 0; i < f->a.outq_n; i++) {
        if (f->a.outq[i].rid_len != 0)
            continue;
        Refex__V1__Frame *fr = agent_fixture_frame(f, i);
        assert_int_equal(fr->kind_case, REFEX__V1__FRAME__KIND_SEND);
        Refex__V1__EnvelopeHeader *h = NULL;
        assert_ok(refex_envelope_parse_header(fr->send->envelope, &h));
        assert_true(out.n < 16);
        refex_hex_encode(out.ids[out.n++], h->message_id.data, 16);
        refex__v1__envelope_header__free_unpacked(h, NULL);
        refex_frame_free(&fr);
    }
    agent_fixture_commit(f);
    return out;
}

/* One control send (summary names it); its id into id, its reply's state into state. */
static sends pace_send(agent_fixture *f, const char *summary, char id[33], char state[16])
{
    char json[2048];
    snprintf(json, sizeof json,
             "{\"cmd\": \"send\", \"type\": \"referral\", \"to\": [\"social-care\"],"
             " \"body\": {\"kind\": \"REFERRAL_PRE_BIRTH\", \"summary\": \"%s\","
             " \"subject\": {\"kind\": \"SUBJECT_UNBORN\", \"reference\": \"UB-1\"},"
             " \"referrer\": {\"reference\": \"MW-1\"}, \"purpose\": \"PURPOSE_SAFEGUARDING\","
             " \"urgency\": \"URGENCY_ROUTINE\", \"consent\": \"CONSENT_NOT_SOUGHT_SAFEGUARDING\","
             " \"lawful_basis\": {\"article6\": \"ARTICLE6_PUBLIC_TASK\","
             " \"article9\": \"ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST\"}}}",
             summary);
    json_t *req = json_loads(json, 0, NULL);
    assert_non_null(req);
    assert_ok(batch_unit_begin(&f->a));
    assert_ok(batch_unit_end(&f->a, 1));
    outbox_cmd_send(&f->a, (const uint8_t *)"cli", 3, req);
    json_decref(req);
    json_t *r = NULL;
    for (size_t i = 0; i < f->a.outq_n; i++)
        if (f->a.outq[i].rid_len)
            r = json_loadb(f->a.outq[i].data, f->a.outq[i].len, 0, NULL);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "ok")));
    snprintf(id, 33, "%s", reply_str(r, "message_id"));
    snprintf(state, 16, "%s", reply_str(r, "state"));
    json_decref(r);
    return take_sends(f);
}

/* The broker's answer for message idhex (0: STORED), as the loop handles it. */
static sends pace_answer(agent_fixture *f, const char *idhex, int code)
{
    uint8_t id[16];
    assert_ok(refex_hex_decode(id, 16, idhex));
    assert_ok(batch_unit_begin(&f->a));
    assert_ok(batch_unit_end(&f->a, 1));
    outbox_result(&f->a, id, code, code ? "refused" : NULL);
    return take_sends(f);
}

/* Window 1: a new send queues behind the pending one and goes out when the one before it
 * is answered; a non-transient refusal does not block the queue. */
static void test_pace_new_sends_queue_behind_pending(void **state)
{
    agent_fixture *f = *state;
    char id[3][33], st[16];
    f->a.online = 1;
    f->a.send_window = 1;
    sends s = pace_send(f, "one", id[0], st);
    assert_string_equal(st, "sent");
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], id[0]);
    for (int i = 1; i < 3; i++) {
        s = pace_send(f, i == 1 ? "two" : "three", id[i], st);
        assert_string_equal(st, "pending"); /* committed, not sent ahead of the first */
        assert_int_equal(s.n, 0);
    }
    s = pace_answer(f, id[0], 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], id[1]);
    s = pace_answer(f, id[1], REFEX_E_INVAL); /* rejected: leaves the queue */
    assert_state(f, id[1], "rejected", REFEX_E_INVAL);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], id[2]);
    s = pace_answer(f, id[2], 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(f->a.n_flight, 0);
}

/* Window 3: at most three unanswered, the next sent as each answer comes; a transient
 * refusal stops the queue until the back-off ends, then the oldest pending goes alone until
 * it is stored, and only then the window opens again. */
/* What STORED said is kept with the row; HELLO's view is the newest generation's highest
 * seq among rows awaiting receipts; a WELCOME of another generation, or below a row's seq,
 * puts those rows back to pending, except expired ones. */
static void test_store_generation_and_requeue(void **state)
{
    agent_fixture *f = *state;
    static const char *G1 = "11111111111111111111111111111111";
    static const char *G2 = "22222222222222222222222222222222";
    char gen[33], rcpt[64];
    uint64_t seq = 9;
    int settled = 0, requeued = 0, expired = 0;
    assert_ok(agent_store_outbox_high(f->a.store, gen, &seq));
    assert_string_equal(gen, "");
    assert_int_equal(seq, 0);
    insert(f, "a1", 1000, 0); /* expires at 2000 */
    insert(f, "a2", 5000, 0); /* expires at 6000 */
    insert(f, "a3", 6000, 0);
    assert_ok(agent_store_outbox_settle_at(f->a.store, "a1", 0, NULL, 1500, G1, 4, rcpt,
                                           sizeof rcpt, &settled));
    assert_ok(agent_store_outbox_settle_at(f->a.store, "a2", 0, NULL, 5500, G1, 7, rcpt,
                                           sizeof rcpt, &settled));
    assert_ok(agent_store_outbox_settle_at(f->a.store, "a3", 0, NULL, 6500, G1, 9, rcpt,
                                           sizeof rcpt, &settled));
    assert_true(settled);
    assert_ok(agent_store_outbox_high(f->a.store, gen, &seq));
    assert_string_equal(gen, G1);
    assert_int_equal(seq, 9);
    /* the same generation holding up to 7: a3 is lost and goes back */
    assert_ok(agent_store_outbox_requeue_lost(f->a.store, G1, 7, 5800, &requeued, &expired));
    assert_int_equal(requeued, 1);
    assert_int_equal(expired, 0);
    assert_state(f, "a3", "pending", 0);
    assert_state(f, "a2", "stored", 0);
    /* sent again and refused for good (expired meanwhile): it stays stored, not rejected */
    assert_ok(agent_store_outbox_settle_at(f->a.store, "a3", REFEX_E_EXPIRED, "late", 5850, NULL, 0,
                                           rcpt, sizeof rcpt, &settled));
    assert_int_equal(settled, 2);
    assert_state(f, "a3", "stored", 0);
    /* a message never stored before is rejected as ever */
    insert(f, "a4", 5000, 0);
    assert_ok(agent_store_outbox_settle_at(f->a.store, "a4", REFEX_E_EXPIRED, "late", 5850, NULL, 0,
                                           rcpt, sizeof rcpt, &settled));
    assert_int_equal(settled, 1);
    assert_state(f, "a4", "rejected", REFEX_E_EXPIRED);
    /* another generation: every stored row is lost; a1 has expired and stays */
    assert_ok(agent_store_outbox_requeue_lost(f->a.store, G2, 100, 5800, &requeued, &expired));
    assert_int_equal(requeued, 2); /* a2 and a3 */
    assert_int_equal(expired, 1);
    assert_state(f, "a2", "pending", 0);
    assert_state(f, "a1", "stored", 0);
    /* a REJECTED keeps what the row had; a STORED of the new generation replaces it */
    assert_ok(agent_store_outbox_settle_at(f->a.store, "a2", 0, NULL, 5900, G2, 1, rcpt,
                                           sizeof rcpt, &settled));
    assert_ok(agent_store_outbox_high(f->a.store, gen, &seq));
    assert_string_equal(gen, G2);
    assert_int_equal(seq, 1);
}

static void test_pace_window_and_transient_refusal(void **state)
{
    agent_fixture *f = *state;
    char id[6][33], st[16], name[8];
    f->a.online = 1;
    f->a.send_window = 3;
    size_t sent = 0;
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "m%d", i);
        sends s = pace_send(f, name, id[i], st);
        assert_string_equal(st, i < 3 ? "sent" : "pending");
        for (size_t k = 0; k < s.n; k++)
            assert_string_equal(s.ids[k], id[sent++]);
    }
    assert_int_equal(sent, 3);
    assert_int_equal(f->a.n_flight, 3);
    sends s = pace_answer(f, id[0], 0); /* a slot frees: the next one */
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], id[3]);
    s = pace_answer(f, id[1], REFEX_E_STORE); /* the queue stops */
    assert_int_equal(s.n, 0);
    assert_state(f, id[1], "pending", 0);
    assert_true(f->a.pace_resume_ms > 0);
    assert_int_equal(f->a.pace_backoff_ms, PACE_BACKOFF_MIN_MS); /* a short first pause */
    assert_int_equal(pace_answer(f, id[2], 0).n, 0);             /* in flight before the refusal */
    assert_int_equal(pace_answer(f, id[3], REFEX_E_BUSY).n, 0);
    assert_int_equal(f->a.pace_backoff_ms, PACE_BACKOFF_MIN_MS); /* not lengthened by these */
    assert_int_equal(f->a.n_flight, 0);
    char st2[16], late[33];
    assert_int_equal(pace_send(f, "late", late, st2).n, 0); /* queued, not sent ahead */
    assert_string_equal(st2, "pending");
    outbox_pace_tick(&f->a); /* still backing off: nothing */
    assert_int_equal(take_sends(f).n, 0);
    f->a.pace_resume_ms = 1; /* the back-off is over */
    outbox_pace_tick(&f->a);
    s = take_sends(f);
    assert_int_equal(s.n, 1); /* the oldest pending, alone */
    assert_string_equal(s.ids[0], id[1]);
    s = pace_answer(f, id[1], REFEX_E_STORE); /* refused again: back off again, longer */
    assert_int_equal(s.n, 0);
    assert_int_equal(f->a.pace_backoff_ms, 2 * PACE_BACKOFF_MIN_MS);
    f->a.pace_resume_ms = 1;
    outbox_pace_tick(&f->a);
    s = take_sends(f);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], id[1]);
    s = pace_answer(f, id[1], 0); /* stored: the window opens, in order */
    assert_int_equal(s.n, 3);
    assert_int_equal(f->a.pace_backoff_ms, 0);
    assert_string_equal(s.ids[0], id[3]);
    assert_string_equal(s.ids[1], id[4]);
    assert_string_equal(s.ids[2], id[5]);
    s = pace_answer(f, id[3], 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], late);
}

/* A new session resends what was in flight, oldest first, windowed; offline, nothing. */
static void test_pace_restart_resends_oldest_first(void **state)
{
    agent_fixture *f = *state;
    char id[3][33], st[16];
    f->a.send_window = 2;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pace_send(f, i ? "later" : "first", id[i], st).n, 0);
        assert_string_equal(st, "pending");
    }
    f->a.online = 1;
    outbox_pace_restart(&f->a);
    sends s = take_sends(f);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], id[0]);
    assert_string_equal(s.ids[1], id[1]);
    outbox_pace_restart(&f->a); /* the answers were lost with the old session */
    s = take_sends(f);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], id[0]);
    assert_string_equal(s.ids[1], id[1]);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_insert_pending_in_order_and_mark_sent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_id_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_once_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_meta_kept_for_auditing_outcomes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_stored_is_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_rejected_audited_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_transient_stays_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_answers_waiter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_id_repeat_sends_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_id_other_submission_is_duplicate, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_local_id_validated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_id_repeat_with_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_id_in_status_and_listing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_id_shaped_like_a_message_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_database_opens_and_takes_local_ids, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pace_new_sends_queue_behind_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pace_window_and_transient_refusal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_generation_and_requeue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pace_restart_resends_oldest_first, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
