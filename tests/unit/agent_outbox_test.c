/* Tests for the agent's outbox (agents/outbox.c over agents/agent_store.c), against a real
 * SQLite file: a row commits pending with its metadata, leaves the pending list once
 * stored, is settled once only (a second STORED or REJECTED changes nothing and audits
 * nothing), a transient refusal leaves it pending, and a duplicate id is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

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
    agent_outbox_row r = {id,  "social-care,police", "REFERRAL", "CASE-1", created_ms, sent_ms,
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
    agent_outbox_row r = {"aa", "police", "REFERRAL", "", 3000, 0, env, sizeof env, &m, NULL, NULL};
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
