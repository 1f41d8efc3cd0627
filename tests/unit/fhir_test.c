/* Tests for lib/fhir.c: the FHIR R4 AuditEvent of each kind of audit entry (codes,
 * outcome, recorded instant, agents and entities, purpose of use, lawful basis details),
 * that people are identifiers only, and the collection Bundle around them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "fhir.h"
#include "util.h"

#define MSG_ID "00112233445566778899aabbccddeeff"
#define T0     INT64_C(1767225600123) /* 2026-01-01T00:00:00.123Z */

static refex_audit_row row_of(const char *event, const char *outcome)
{
    static const uint8_t leaf[32] = {1, 2, 3};
    refex_audit_row r = {
        .seq = 7,
        .e = {.time_ms = T0,
              .event = event,
              .outcome = outcome,
              .agency = "midwifery",
              .practitioner = "PR-0042",
              .peer = "social-care,police",
              .message_id = MSG_ID,
              .message_type = "REFERRAL",
              .case_ref = "CASE-A",
              .envelope_hash = "",
              .purpose = "PURPOSE_SAFEGUARDING",
              .article6 = "ARTICLE6_PUBLIC_TASK",
              .article9 = "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST",
              .consent = "CONSENT_NOT_SOUGHT_SAFEGUARDING",
              .subjects = "UB-7F3K-2041,P-MUM-0001"},
        .entry = (const uint8_t *)"x",
        .entry_len = 1,
        .leaf_hash = leaf,
    };
    return r;
}

static const char *str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static json_t *event_of(const refex_audit_row *r)
{
    json_t *e = NULL;
    assert_ok(refex_fhir_audit_event(r, &e));
    assert_non_null(e);
    return e;
}

/* The identifier value of an agent or entity ("who" or "what"), and its system. */
static const char *ident(json_t *x, const char *key, const char **system)
{
    json_t *id = json_object_get(json_object_get(x, key), "identifier");
    if (system)
        *system = str(id, "system");
    return str(id, "value");
}

static void test_instant(void **state)
{
    (void)state;
    char buf[40];
    refex_fhir_instant(buf, sizeof buf, T0);
    assert_string_equal(buf, "2026-01-01T00:00:00.123Z");
    refex_fhir_instant(buf, sizeof buf, 0);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    refex_fhir_instant(buf, sizeof buf, -1);
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
    refex_fhir_instant(buf, sizeof buf, INT64_MAX);
    assert_string_equal(buf, "invalid");
    refex_fhir_instant(buf, sizeof buf, INT64_MIN);
    assert_string_equal(buf, "invalid");
}

static void test_send(void **state)
{
    (void)state;
    refex_audit_row r = row_of("send", "success");
    json_t *e = event_of(&r), *x;
    assert_string_equal(str(e, "resourceType"), "AuditEvent");
    assert_string_equal(str(e, "id"), "audit-7");
    json_t *type = json_object_get(e, "type");
    assert_string_equal(str(type, "system"), "http://dicom.nema.org/resources/ontology/DCM");
    assert_string_equal(str(type, "code"), "110106");
    assert_string_equal(str(type, "display"), "Export");
    json_t *sub = json_array_get(json_object_get(e, "subtype"), 0);
    assert_string_equal(str(sub, "system"), "https://refex.example/audit-event");
    assert_string_equal(str(sub, "code"), "send");
    assert_string_equal(str(e, "action"), "R");
    assert_string_equal(str(e, "outcome"), "0");
    assert_null(json_object_get(e, "outcomeDesc"));
    assert_string_equal(str(e, "recorded"), "2026-01-01T00:00:00.123Z");
    json_t *pc = json_array_get(
        json_object_get(json_array_get(json_object_get(e, "purposeOfEvent"), 0), "coding"), 0);
    assert_string_equal(str(pc, "system"), "https://refex.example/purpose-of-use");
    assert_string_equal(str(pc, "code"), "PURPOSE_SAFEGUARDING");

    /* Agents: us (source, requestor), each peer (destination), the practitioner. */
    json_t *agents = json_object_get(e, "agent");
    assert_int_equal(json_array_size(agents), 4);
    const char *sys;
    x = json_array_get(agents, 0);
    assert_string_equal(ident(x, "who", &sys), "midwifery");
    assert_string_equal(sys, "https://refex.example/agency");
    assert_true(json_is_true(json_object_get(x, "requestor")));
    assert_string_equal(
        str(json_array_get(json_object_get(json_object_get(x, "type"), "coding"), 0), "code"),
        "110153");
    x = json_array_get(agents, 1);
    assert_string_equal(ident(x, "who", NULL), "social-care");
    assert_true(json_is_false(json_object_get(x, "requestor")));
    assert_string_equal(
        str(json_array_get(json_object_get(json_object_get(x, "type"), "coding"), 0), "code"),
        "110152");
    assert_string_equal(ident(json_array_get(agents, 2), "who", NULL), "police");
    x = json_array_get(agents, 3);
    assert_string_equal(ident(x, "who", &sys), "PR-0042");
    assert_string_equal(sys, "https://refex.example/practitioner-ref");
    assert_null(json_object_get(x, "type"));
    json_t *src = json_object_get(e, "source");
    assert_string_equal(ident(src, "observer", NULL), "midwifery");
    assert_string_equal(str(json_array_get(json_object_get(src, "type"), 0), "code"), "4");

    /* Entities: the message with the lawful basis, the case, each person. */
    json_t *ents = json_object_get(e, "entity");
    assert_int_equal(json_array_size(ents), 4);
    x = json_array_get(ents, 0);
    assert_string_equal(ident(x, "what", &sys), MSG_ID);
    assert_string_equal(sys, "https://refex.example/message-id");
    assert_string_equal(str(json_object_get(x, "type"), "code"), "REFERRAL");
    json_t *d = json_object_get(x, "detail");
    assert_int_equal(json_array_size(d), 3); /* no envelope hash: no detail for it */
    assert_string_equal(str(json_array_get(d, 0), "type"), "article6");
    assert_string_equal(str(json_array_get(d, 0), "valueString"), "ARTICLE6_PUBLIC_TASK");
    assert_string_equal(str(json_array_get(d, 1), "type"), "article9");
    assert_string_equal(str(json_array_get(d, 2), "valueString"),
                        "CONSENT_NOT_SOUGHT_SAFEGUARDING");
    assert_string_equal(ident(json_array_get(ents, 1), "what", &sys), "CASE-A");
    assert_string_equal(sys, "https://refex.example/case-ref");
    x = json_array_get(ents, 2);
    assert_string_equal(ident(x, "what", &sys), "UB-7F3K-2041");
    assert_string_equal(sys, "https://refex.example/person-ref");
    assert_string_equal(str(json_object_get(x, "type"), "code"), "1");
    assert_string_equal(ident(json_array_get(ents, 3), "what", NULL), "P-MUM-0001");
    json_decref(e);
}

static void test_receive_and_failures(void **state)
{
    (void)state;
    refex_audit_row r = row_of("receive", "success");
    r.e.peer = "social-care";
    json_t *e = event_of(&r), *agents = json_object_get(e, "agent");
    assert_string_equal(str(json_object_get(e, "type"), "code"), "110107");
    assert_string_equal(str(e, "action"), "C");
    /* We are the destination; the sender is the requestor. */
    assert_true(json_is_false(json_object_get(json_array_get(agents, 0), "requestor")));
    assert_true(json_is_true(json_object_get(json_array_get(agents, 1), "requestor")));
    json_decref(e);

    r = row_of("reject", "E_BAD_SIGNATURE");
    e = event_of(&r);
    assert_string_equal(str(json_object_get(e, "type"), "code"), "reject");
    assert_string_equal(str(json_object_get(e, "type"), "system"),
                        "https://refex.example/audit-event");
    assert_string_equal(str(e, "outcome"), "8");
    assert_string_equal(str(e, "outcomeDesc"), "E_BAD_SIGNATURE");
    assert_string_equal(str(e, "action"), "E");
    json_decref(e);

    r = row_of("non-delivery", "E_EXPIRED");
    e = event_of(&r);
    assert_string_equal(str(e, "outcome"), "4");
    json_decref(e);

    r = row_of("receipt", "success");
    e = event_of(&r);
    assert_string_equal(str(e, "action"), "C");
    json_decref(e);
}

static void test_audit_log_used(void **state)
{
    (void)state;
    refex_audit_row r = row_of("audit-log-used", "success: query");
    r.e.message_id = r.e.message_type = r.e.case_ref = r.e.subjects = r.e.peer = "";
    r.e.practitioner = "";
    r.e.purpose = "PURPOSE_AUDIT";
    r.e.article6 = r.e.article9 = r.e.consent = "";
    json_t *e = event_of(&r);
    assert_string_equal(str(e, "outcome"), "0");
    assert_string_equal(str(e, "outcomeDesc"), "success: query");
    assert_string_equal(str(e, "action"), "R");
    assert_int_equal(json_array_size(json_object_get(e, "agent")), 1);
    json_t *ents = json_object_get(e, "entity");
    assert_int_equal(json_array_size(ents), 1);
    const char *sys;
    assert_string_equal(ident(json_array_get(ents, 0), "what", &sys), "midwifery");
    assert_string_equal(sys, "https://refex.example/audit-log");
    assert_null(json_object_get(json_array_get(ents, 0), "detail"));
    json_decref(e);

    /* An unspecified purpose is left out; no message, case or person: no entity. */
    r = row_of("reject", "E_MALFORMED");
    r.e.message_id = r.e.case_ref = r.e.subjects = "";
    r.e.purpose = "PURPOSE_UNSPECIFIED";
    e = event_of(&r);
    assert_null(json_object_get(e, "purposeOfEvent"));
    assert_null(json_object_get(e, "entity"));
    json_decref(e);
}

static void test_no_free_text(void **state)
{
    (void)state;
    refex_audit_row r = row_of("send", "success");
    json_t *e = event_of(&r);
    char *text = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(text);
    /* Only references: no name, summary or body field, and no entry bytes. */
    const char *banned[] = {"\"name\"",    "\"text\"", "\"description\"",
                            "\"summary\"", "\"body\"", "\"query\""};
    for (size_t i = 0; i < sizeof banned / sizeof banned[0]; i++)
        if (strstr(text, banned[i]))
            fail_msg("%s in %s", banned[i], text);
    free(text);
    json_decref(e);
}

static void test_bundle(void **state)
{
    (void)state;
    refex_audit_row r1 = row_of("send", "success"), r2 = row_of("receipt", "success");
    r2.seq = 8;
    json_t *x1 = NULL, *x2 = NULL, *again = NULL, *entries = json_array(), *b = NULL;
    assert_ok(refex_fhir_bundle_entry(&r1, &x1));
    assert_ok(refex_fhir_bundle_entry(&r2, &x2));
    assert_ok(refex_fhir_bundle_entry(&r1, &again));
    const char *u1 = str(x1, "fullUrl"), *u2 = str(x2, "fullUrl");
    /* urn:uuid:8-4-4-4-12, version 8, RFC variant; the same entry, the same urn. */
    assert_int_equal(strlen(u1), 45);
    assert_int_equal(strncmp(u1, "urn:uuid:", 9), 0);
    assert_int_equal(u1[9 + 14], '8');
    assert_non_null(strchr("89ab", u1[9 + 19]));
    assert_string_equal(u1, str(again, "fullUrl"));
    assert_string_not_equal(u1, u2);
    assert_string_equal(str(json_object_get(x1, "resource"), "id"), "audit-7");
    json_array_append_new(entries, x1);
    json_array_append_new(entries, x2);
    assert_ok(refex_fhir_bundle(entries, T0, &b));
    assert_string_equal(str(b, "resourceType"), "Bundle");
    assert_string_equal(str(b, "type"), "collection");
    assert_string_equal(str(b, "timestamp"), "2026-01-01T00:00:00.123Z");
    assert_int_equal(json_array_size(json_object_get(b, "entry")), 2);
    /* The Bundle's keys in the order the export has always written them. */
    const char *keys[] = {"resourceType", "type", "timestamp", "entry"};
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(b, k, v)
    {
        (void)v;
        assert_string_equal(k, keys[i++]);
    }
    json_decref(b);
    json_decref(entries);
    json_decref(again);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instant),
        cmocka_unit_test(test_send),
        cmocka_unit_test(test_receive_and_failures),
        cmocka_unit_test(test_audit_log_used),
        cmocka_unit_test(test_no_free_text),
        cmocka_unit_test(test_bundle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
