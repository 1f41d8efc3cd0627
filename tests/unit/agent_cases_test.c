/* Tests for the agent's cases (agents/cases.c over agents/agent_store.c), against a real
 * SQLite file: for grants and subscriptions alike the newest serial wins; membership
 * follows the lead's grants (types, revocation, a second lead refused); a subscription to
 * the case itself beats one to all cases; update recipients are the granted and
 * subscribed members plus the lead; and the control commands answer as the CLI expects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "agent_testing.h"
#include "grant.h"
#include "util.h"

#define ASSESSMENT REFEX__V1__CASE_UPDATE_TYPE__CASE_UPDATE_ASSESSMENT_CONCLUDED
#define PLAN       REFEX__V1__CASE_UPDATE_TYPE__CASE_UPDATE_CHILD_PROTECTION_PLAN

static int setup_member(void **state)
{
    *state = agent_fixture_new(T_MIDWIFERY);
    return 0;
}

static int setup_lead(void **state)
{
    *state = agent_fixture_new(T_LEAD);
    return 0;
}

static int teardown(void **state)
{
    agent_fixture *f = *state;
    agent_fixture_destroy(&f);
    return 0;
}

/* A grant signed by `lead` for `member`, as the broker would relay it. */
static void grant_notice(agent_fixture *f, int lead, const char *member, uint64_t serial,
                         int revoked, int type)
{
    refex_grant g;
    uint8_t *blob = NULL;
    size_t len = 0;
    memset(&g, 0, sizeof g);
    snprintf(g.case_ref, sizeof g.case_ref, "CASE-1");
    snprintf(g.lead, sizeof g.lead, "%s", T_IDS[lead]);
    snprintf(g.member, sizeof g.member, "%s", member);
    g.revoked = revoked;
    g.issued_at_ms = refex_now_ms();
    g.serial = serial;
    if (type)
        g.types[g.n_types++] = type;
    assert_ok(refex_grant_sign(&g, f->keys[lead]->sk->sign_sk, &blob, &len));
    Refex__V1__SignedGrant *sg = refex__v1__signed_grant__unpack(NULL, len, blob);
    assert_non_null(sg);
    cases_grant_notice(&f->a, sg);
    agent_fixture_commit(f);
    refex__v1__signed_grant__free_unpacked(sg, NULL);
    free(blob);
}

/* A subscription signed by `who`, as the broker would relay it. */
static void subscription_notice(agent_fixture *f, int who, const char *case_ref, uint64_t serial,
                                int unsubscribed)
{
    refex_subscription s;
    uint8_t *blob = NULL;
    size_t len = 0;
    memset(&s, 0, sizeof s);
    snprintf(s.agency, sizeof s.agency, "%s", T_IDS[who]);
    snprintf(s.case_ref, sizeof s.case_ref, "%s", case_ref);
    s.unsubscribed = unsubscribed;
    s.issued_at_ms = refex_now_ms();
    s.serial = serial;
    assert_ok(refex_subscription_sign(&s, f->keys[who]->sk->sign_sk, &blob, &len));
    Refex__V1__SignedSubscription *ss = refex__v1__signed_subscription__unpack(NULL, len, blob);
    assert_non_null(ss);
    cases_subscription_notice(&f->a, ss);
    agent_fixture_commit(f);
    refex__v1__signed_subscription__free_unpacked(ss, NULL);
    free(blob);
}

static int64_t serial_of(agent_fixture *f, agent_signed_kind kind, const char *k1, const char *k2)
{
    int64_t serial = -1;
    assert_ok(agent_store_signed_serial(f->a.store, kind, k1, k2, &serial));
    return serial;
}

/* The store's rule, for both kinds: a lower or equal serial never replaces a higher one. */
static void test_store_newest_serial_wins(void **state)
{
    agent_fixture *f = *state;
    static const uint8_t A[] = "a", B[] = "b";
    for (int kind = AGENT_SIGNED_GRANT; kind <= AGENT_SIGNED_SUBSCRIPTION; kind++) {
        agent_signed_obj o = {kind, "CASE-1", "midwifery", "social-care", 5, A, sizeof A};
        assert_int_equal(serial_of(f, kind, "CASE-1", "midwifery"), 0);
        assert_ok(agent_store_signed_put(f->a.store, &o));
        o.serial = 3;
        o.blob = B;
        assert_ok(agent_store_signed_put(f->a.store, &o));
        assert_int_equal(serial_of(f, kind, "CASE-1", "midwifery"), 5);
        o.serial = 5;
        assert_ok(agent_store_signed_put(f->a.store, &o));
        assert_int_equal(serial_of(f, kind, "CASE-1", "midwifery"), 5);
        o.serial = 9;
        assert_ok(agent_store_signed_put(f->a.store, &o));
        assert_int_equal(serial_of(f, kind, "CASE-1", "midwifery"), 9);
    }
}

static void test_grant_newest_serial_wins(void **state)
{
    agent_fixture *f = *state;
    assert_false(cases_is_member(&f->a, "CASE-1", "midwifery", 0));
    grant_notice(f, T_LEAD, "midwifery", 10, 0, 0);
    assert_true(cases_is_member(&f->a, "CASE-1", "midwifery", 0));
    grant_notice(f, T_LEAD, "midwifery", 5, 1, 0); /* an older revocation, replayed */
    assert_true(cases_is_member(&f->a, "CASE-1", "midwifery", 0));
    grant_notice(f, T_LEAD, "midwifery", 20, 1, 0);
    assert_false(cases_is_member(&f->a, "CASE-1", "midwifery", 0));
    assert_int_equal(serial_of(f, AGENT_SIGNED_GRANT, "CASE-1", "midwifery"), 20);
}

static void test_membership(void **state)
{
    agent_fixture *f = *state;
    grant_notice(f, T_LEAD, "midwifery", 1, 0, ASSESSMENT);
    assert_true(cases_is_member(&f->a, "CASE-1", "social-care", 0)); /* the lead */
    assert_true(cases_is_member(&f->a, "CASE-1", "midwifery", 0));
    assert_true(cases_is_member(&f->a, "CASE-1", "midwifery", ASSESSMENT));
    assert_false(cases_is_member(&f->a, "CASE-1", "midwifery", PLAN)); /* not granted */
    assert_false(cases_is_member(&f->a, "CASE-1", "police", 0));
    assert_false(cases_is_member(&f->a, "CASE-2", "midwifery", 0));
    /* Another lead's grant for the same case is refused. */
    grant_notice(f, T_LEAD2, "police", 1, 0, 0);
    assert_false(cases_is_member(&f->a, "CASE-1", "police", 0));
    assert_false(cases_is_member(&f->a, "CASE-1", "social-care-2", 0));
}

/* The case's own subscription decides before the all-cases one, either way. */
static void test_subscription_case_beats_all_cases(void **state)
{
    agent_fixture *f = *state;
    assert_false(cases_is_subscribed(&f->a, "police", "CASE-1", ASSESSMENT));
    subscription_notice(f, T_POLICE, "", 1, 0); /* all cases */
    assert_true(cases_is_subscribed(&f->a, "police", "CASE-1", ASSESSMENT));
    assert_true(cases_is_subscribed(&f->a, "police", "CASE-2", ASSESSMENT));
    subscription_notice(f, T_POLICE, "CASE-1", 2, 1); /* but not this one */
    assert_false(cases_is_subscribed(&f->a, "police", "CASE-1", ASSESSMENT));
    assert_true(cases_is_subscribed(&f->a, "police", "CASE-2", ASSESSMENT));
    subscription_notice(f, T_MIDWIFERY, "", 1, 1); /* unsubscribed from all */
    subscription_notice(f, T_MIDWIFERY, "CASE-1", 1, 0);
    assert_true(cases_is_subscribed(&f->a, "midwifery", "CASE-1", PLAN));
    assert_false(cases_is_subscribed(&f->a, "midwifery", "CASE-2", PLAN));
    /* An older subscription replayed changes nothing. */
    subscription_notice(f, T_POLICE, "CASE-1", 1, 0);
    assert_false(cases_is_subscribed(&f->a, "police", "CASE-1", ASSESSMENT));
}

/* Update recipients: granted for the type and subscribed, plus the lead, never ourselves. */
static void test_recipients(void **state)
{
    agent_fixture *f = *state; /* midwifery */
    const refex_agency *out[8];
    size_t n = 0;
    assert_rc(cases_recipients(&f->a, "CASE-1", ASSESSMENT, out, 8, &n), REFEX_E_NOT_MEMBER);
    grant_notice(f, T_LEAD, "midwifery", 1, 0, 0);
    grant_notice(f, T_LEAD, "police", 1, 0, ASSESSMENT);
    subscription_notice(f, T_POLICE, "CASE-1", 1, 0);
    assert_ok(cases_recipients(&f->a, "CASE-1", ASSESSMENT, out, 8, &n));
    assert_int_equal(n, 2);
    assert_string_equal(out[0]->id, "police");
    assert_string_equal(out[1]->id, "social-care");
    assert_ok(cases_recipients(&f->a, "CASE-1", PLAN, out, 8, &n)); /* police not granted */
    assert_int_equal(n, 1);
    assert_string_equal(out[0]->id, "social-care");
}

/* The one reply queued for a control client (rid "cli"), parsed; frames for the broker
 * (a grant or subscription to relay) may be queued beside it. */
static json_t *reply(agent_fixture *f)
{
    json_t *r = NULL;
    for (size_t i = 0; i < f->a.outq_n; i++) {
        if (f->a.outq[i].rid_len == 0)
            continue;
        assert_null(r);
        assert_int_equal(f->a.outq[i].rid_len, 3);
        assert_memory_equal(f->a.outq[i].rid, "cli", 3);
        r = json_loadb(f->a.outq[i].data, f->a.outq[i].len, 0, NULL);
        assert_non_null(r);
    }
    assert_non_null(r);
    agent_fixture_commit(f);
    return r;
}

static json_t *command(agent_fixture *f, agent_cmd_fn fn, const char *json)
{
    json_t *req = json_loads(json, 0, NULL);
    assert_non_null(req);
    assert_ok(batch_unit_begin(&f->a)); /* inside a cycle's batch, as in the loop */
    assert_ok(batch_unit_end(&f->a, 1));
    fn(&f->a, (const uint8_t *)"cli", 3, req);
    json_decref(req);
    return reply(f);
}

static void test_commands_grant_subscribe_members(void **state)
{
    agent_fixture *f = *state; /* social-care, the lead */
    json_t *r = command(f, cases_cmd_grant,
                        "{\"cmd\": \"grant\", \"case\": \"CASE-1\", \"member\": \"midwifery\","
                        " \"types\": [\"CASE_UPDATE_ASSESSMENT_CONCLUDED\"]}");
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(json_string_value(json_object_get(r, "member")), "midwifery");
    json_int_t serial = json_integer_value(json_object_get(r, "serial"));
    json_decref(r);
    r = command(f, cases_cmd_grant,
                "{\"cmd\": \"grant\", \"case\": \"CASE-1\", \"member\": \"midwifery\","
                " \"revoke\": true}");
    assert_true(json_integer_value(json_object_get(r, "serial")) > serial); /* serials grow */
    json_decref(r);
    assert_false(cases_is_member(&f->a, "CASE-1", "midwifery", 0));
    r = command(f, cases_cmd_grant,
                "{\"cmd\": \"grant\", \"case\": \"CASE-1\", \"types\": [\"X\"],"
                " \"member\": \"midwifery\"}");
    assert_false(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(json_string_value(json_object_get(r, "error")), "E_INVAL");
    json_decref(r);
    r = command(f, cases_cmd_subscribe, "{\"cmd\": \"subscribe\", \"case\": \"CASE-9\"}");
    assert_string_equal(json_string_value(json_object_get(r, "error")), "E_NOT_MEMBER");
    json_decref(r);
    r = command(f, cases_cmd_subscribe, "{\"cmd\": \"subscribe\", \"all\": true}");
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_string_equal(json_string_value(json_object_get(r, "case")), "*");
    json_decref(r);
    r = command(f, cases_cmd_members, "{\"cmd\": \"members\", \"case\": \"CASE-1\"}");
    json_t *members = json_object_get(r, "members");
    assert_int_equal(json_array_size(members), 1);
    assert_true(json_is_true(json_object_get(json_array_get(members, 0), "revoked")));
    json_decref(r);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_newest_serial_wins, setup_member, teardown),
        cmocka_unit_test_setup_teardown(test_grant_newest_serial_wins, setup_member, teardown),
        cmocka_unit_test_setup_teardown(test_membership, setup_member, teardown),
        cmocka_unit_test_setup_teardown(test_subscription_case_beats_all_cases, setup_member,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_recipients, setup_member, teardown),
        cmocka_unit_test_setup_teardown(test_commands_grant_subscribe_members, setup_lead,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
