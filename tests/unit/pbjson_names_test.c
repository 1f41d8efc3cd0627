/* Unit tests for pbjson_names and the field-name side of pbjson: the lowerCamelCase JSON
 * name by protobuf's rule, bodies written with either name form (nested, repeated, oneof
 * members) parsing to the same message, a field under both names refused with its path,
 * and output keeping the proto names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testing.h"
#include "refex.pb-c.h"
#include "refex/error.h"
#include "codec.h"
#include "pbjson.h"
#include "pbjson_names.h"

/* One referral written with the proto names and with the JSON names, key orders differing. */
#define REFERRAL_PROTO                                                                             \
    "{\"referral\":{\"kind\":\"REFERRAL_PRE_BIRTH\","                                              \
    "\"subject\":{\"kind\":\"SUBJECT_UNBORN\",\"reference\":\"UB-1\","                             \
    "\"estimated_due_date\":\"2027-03-01\",\"gestation_weeks\":14,\"nhs_number\":\"999\"},"        \
    "\"parents\":[{\"reference\":\"P-1\",\"date_of_birth\":\"1990-01-01\"},"                       \
    "{\"nhs_number\":\"998\"}],"                                                                   \
    "\"concerns\":[\"CONCERN_MENTAL_HEALTH\",2],"                                                  \
    "\"referrer\":{\"reference\":\"MW-1\"},\"urgency\":\"URGENCY_URGENT\","                        \
    "\"lawful_basis\":{\"article6\":\"ARTICLE6_PUBLIC_TASK\",\"article9\":3},"                     \
    "\"attachments\":[{\"content_type\":\"text/plain\",\"data\":\"aGk=\"}],"                       \
    "\"conversation_id\":\"C-1\",\"purpose\":\"PURPOSE_SAFEGUARDING\"}}"
#define REFERRAL_CAMEL                                                                             \
    "{\"referral\":{\"purpose\":\"PURPOSE_SAFEGUARDING\",\"conversationId\":\"C-1\","              \
    "\"attachments\":[{\"data\":\"aGk\",\"contentType\":\"text/plain\"}],"                         \
    "\"lawfulBasis\":{\"article9\":\"ARTICLE9_SOCIAL_PROTECTION_LAW\",\"article6\":5},"            \
    "\"urgency\":2,\"referrer\":{\"reference\":\"MW-1\"},"                                         \
    "\"concerns\":[3,\"CONCERN_DOMESTIC_ABUSE\"],"                                                 \
    "\"parents\":[{\"dateOfBirth\":\"1990-01-01\",\"reference\":\"P-1\"},"                         \
    "{\"nhsNumber\":\"998\"}],"                                                                    \
    "\"subject\":{\"nhsNumber\":\"999\",\"gestationWeeks\":\"14\","                                \
    "\"estimatedDueDate\":\"2027-03-01\",\"reference\":\"UB-1\",\"kind\":1},"                      \
    "\"kind\":1}}"

static ProtobufCMessage *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    ProtobufCMessage *m = NULL;
    char err[256];

    if (j == NULL)
        fail_msg("test JSON does not parse: %s", jerr.text);
    if (refex_pbjson_from_json(&refex__v1__body__descriptor, j, &m, err, sizeof(err)) != REFEX_OK)
        fail_msg("input %s refused: %s", text, err);
    json_decref(j);
    return m;
}

static void expect_bad(const char *text, const char *want)
{
    json_t *j = json_loads(text, 0, NULL);
    ProtobufCMessage *m = (ProtobufCMessage *)(uintptr_t)1;
    char err[256];

    assert_non_null(j);
    assert_rc(refex_pbjson_from_json(&refex__v1__body__descriptor, j, &m, err, sizeof(err)),
              REFEX_E_JSON);
    assert_null(m);
    if (strstr(err, want) == NULL)
        fail_msg("input %s\n  error \"%s\"\n  lacks \"%s\"", text, err, want);
    json_decref(j);
}

static void test_json_name_rule(void **state)
{
    static const struct {
        const char *name, *key;
        bool match;
    } cases[] = {
        {"estimated_due_date", "estimatedDueDate", true},
        {"kind", "kind", true},
        {"a__b", "aB", true},      /* each '_' dropped, the next letter upper-cased */
        {"foo_", "foo", true},     /* a trailing '_' just disappears */
        {"foo_1x", "foo1x", true}, /* a digit has no upper case */
        {"foo_Bar", "fooBar", true},
        {"estimated_due_date", "estimated_due_date", false}, /* the proto name, not the JSON one */
        {"estimated_due_date", "estimatedDue", false},
        {"estimated_due_date", "estimatedDueDateX", false},
        {"estimated_due_date", "EstimatedDueDate", false},
        {"estimated_due_date", "estimatedduedate", false},
        {"estimated_due_date", "estimated_dueDate", false},
        {"kind", "", false},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool got =
            refex_pbjson_names_is_json_name(cases[i].name, cases[i].key, strlen(cases[i].key));
        if (got != cases[i].match)
            fail_msg("%s as the JSON name of %s: got %d", cases[i].key, cases[i].name, got);
    }
    /* the length bounds the key: a longer buffer's prefix is compared, not the rest */
    assert_true(refex_pbjson_names_is_json_name("due_date", "dueDateXYZ", 7));
    assert_false(refex_pbjson_names_is_json_name("due_date", "dueDate", 6));
}

static void test_find_and_get(void **state)
{
    const ProtobufCMessageDescriptor *d = &refex__v1__subject__descriptor;
    const ProtobufCFieldDescriptor *f;
    json_t *obj;
    bool alias = true;
    (void)state;

    f = refex_pbjson_names_find(d, "estimated_due_date", 18, &alias);
    assert_non_null(f);
    assert_string_equal(f->name, "estimated_due_date");
    assert_false(alias);
    f = refex_pbjson_names_find(d, "estimatedDueDate", 16, &alias);
    assert_non_null(f);
    assert_string_equal(f->name, "estimated_due_date");
    assert_true(alias);
    f = refex_pbjson_names_find(d, "kind", 4, &alias);
    assert_non_null(f);
    assert_false(alias); /* one word: both names are the same */
    assert_null(refex_pbjson_names_find(d, "estimatedDueDat", 15, &alias));
    assert_null(refex_pbjson_names_find(d, "kind\0x", 6, &alias)); /* embedded NUL */

    f = protobuf_c_message_descriptor_get_field_by_name(d, "estimated_due_date");
    obj = json_pack("{s:s, s:n}", "estimatedDueDate", "2027-03-01", "gestationWeeks");
    assert_non_null(obj);
    assert_string_equal(json_string_value(refex_pbjson_names_get(obj, f)), "2027-03-01");
    assert_null(refex_pbjson_names_get(
        obj, protobuf_c_message_descriptor_get_field_by_name(d, "gestation_weeks"))); /* null */
    assert_null(refex_pbjson_names_get(
        obj, protobuf_c_message_descriptor_get_field_by_name(d, "reference")));
    json_decref(obj);
}

/* Both forms (and a mix, with enums as numbers and base64 unpadded) give the same message,
 * and what is written back uses the proto names. */
static void test_both_forms_same_message(void **state)
{
    ProtobufCMessage *a = parse(REFERRAL_PROTO);
    ProtobufCMessage *b = parse(REFERRAL_CAMEL);
    Refex__V1__Referral *r = ((Refex__V1__Body *)b)->referral;
    uint8_t *pa = NULL, *pb = NULL;
    size_t la, lb;
    json_t *ja = NULL, *jb = NULL;
    char *text;
    (void)state;

    assert_string_equal(r->subject->estimated_due_date, "2027-03-01");
    assert_int_equal(r->subject->gestation_weeks, 14);
    assert_string_equal(r->parents[0]->date_of_birth, "1990-01-01");
    assert_string_equal(r->parents[1]->nhs_number, "998");
    assert_int_equal(r->lawful_basis->article6, REFEX__V1__ARTICLE6_BASIS__ARTICLE6_PUBLIC_TASK);
    assert_string_equal(r->attachments[0]->content_type, "text/plain");
    assert_string_equal(r->conversation_id, "C-1");

    assert_rc(refex_pb_pack(a, &pa, &la), REFEX_OK);
    assert_rc(refex_pb_pack(b, &pb, &lb), REFEX_OK);
    assert_int_equal(la, lb);
    assert_memory_equal(pa, pb, la);

    assert_rc(refex_pbjson_to_json(a, &ja), REFEX_OK);
    assert_rc(refex_pbjson_to_json(b, &jb), REFEX_OK);
    assert_true(json_equal(ja, jb));
    text = json_dumps(jb, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"estimated_due_date\":\"2027-03-01\""));
    assert_non_null(strstr(text, "\"lawful_basis\":{"));
    assert_non_null(strstr(text, "\"content_type\":\"text/plain\""));
    assert_non_null(strstr(text, "\"data\":\"aGk=\""));
    assert_non_null(strstr(text, "\"article9\":\"ARTICLE9_SOCIAL_PROTECTION_LAW\""));
    assert_non_null(strstr(text, "\"gestation_weeks\":14"));
    assert_null(strstr(text, "estimatedDueDate"));
    assert_null(strstr(text, "lawfulBasis"));
    assert_null(strstr(text, "conversationId"));
    free(text);

    free(pa);
    free(pb);
    json_decref(ja);
    json_decref(jb);
    protobuf_c_message_free_unpacked(a, NULL);
    protobuf_c_message_free_unpacked(b, NULL);
}

/* A oneof member of Body by its JSON name, with its nested fields in either form. */
static void test_oneof_member_by_json_name(void **state)
{
    ProtobufCMessage *m =
        parse("{\"referralDecision\":{\"referralMessageId\":\"00ff\",\"decided_by\":"
              "{\"reference\":\"SW-1\"},\"caseRef\":\"CASE-1\",\"decision\":1}}");
    Refex__V1__Body *b = (Refex__V1__Body *)m;
    (void)state;

    assert_int_equal(b->kind_case, REFEX__V1__BODY__KIND_REFERRAL_DECISION);
    assert_string_equal(b->referral_decision->referral_message_id, "00ff");
    assert_string_equal(b->referral_decision->decided_by->reference, "SW-1");
    assert_string_equal(b->referral_decision->case_ref, "CASE-1");
    protobuf_c_message_free_unpacked(m, NULL);
    expect_bad("{\"referralDecision\":{},\"referral\":{}}",
               "referral: oneof already has referral_decision set");
}

static void test_both_names_refused(void **state)
{
    (void)state;
    /* either order, a scalar, nested */
    expect_bad("{\"referral\":{\"subject\":{\"estimated_due_date\":\"a\",\"estimatedDueDate\":"
               "\"b\"}}}",
               "referral.subject.estimatedDueDate: field given twice, also as estimated_due_date");
    expect_bad("{\"referral\":{\"subject\":{\"estimatedDueDate\":\"b\",\"estimated_due_date\":"
               "\"a\"}}}",
               "referral.subject.estimatedDueDate: field given twice, also as estimated_due_date");
    /* the same value, or null under one of them, is still two of one field */
    expect_bad("{\"referral\":{\"conversation_id\":\"c\",\"conversationId\":\"c\"}}",
               "referral.conversationId: field given twice, also as conversation_id");
    expect_bad("{\"referral\":{\"conversationId\":null,\"conversation_id\":\"c\"}}",
               "referral.conversationId: field given twice");
    /* a submessage, parsed under the first name before the second is met (ASan checks) */
    expect_bad("{\"referral\":{\"lawful_basis\":{\"note\":\"n\"},\"summary\":\"s\","
               "\"lawfulBasis\":{\"note\":\"m\"}}}",
               "referral.lawfulBasis: field given twice, also as lawful_basis");
    /* a oneof member of Body */
    expect_bad("{\"case_update\":{},\"caseUpdate\":{}}",
               "caseUpdate: field given twice, also as case_update");
    /* a form that is neither name */
    expect_bad("{\"referral\":{\"lawful_Basis\":{}}}", "referral.lawful_Basis: unknown field");
    expect_bad("{\"referral\":{\"LawfulBasis\":{}}}", "referral.LawfulBasis: unknown field");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_name_rule),
        cmocka_unit_test(test_find_and_get),
        cmocka_unit_test(test_both_forms_same_message),
        cmocka_unit_test(test_oneof_member_by_json_name),
        cmocka_unit_test(test_both_names_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
