/* Unit tests for the parser side of the proto3 JSON mapping (issue 9, item 5): pbjson_names
 * (the lowerCamelCase JSON name by protobuf's rule), bodies written with either name form
 * (nested, repeated, oneof members) parsing to the same message, a field under both names
 * refused with its path, pbjson's other input forms (integers as strings or integral
 * numbers, base64 URL-safe or unpadded), and output unchanged throughout. The rest of
 * pbjson is tests/unit/pbjson_test.c. */
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

static ProtobufCMessage *parse_as(const ProtobufCMessageDescriptor *desc, const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    ProtobufCMessage *m = NULL;
    char err[256];

    if (j == NULL)
        fail_msg("test JSON does not parse: %s", jerr.text);
    if (refex_pbjson_from_json(desc, j, &m, err, sizeof(err)) != REFEX_OK)
        fail_msg("input %s refused: %s", text, err);
    json_decref(j);
    return m;
}

static void bad_as(const ProtobufCMessageDescriptor *desc, const char *text, const char *want)
{
    json_t *j = json_loads(text, 0, NULL);
    ProtobufCMessage *m = (ProtobufCMessage *)(uintptr_t)1;
    char err[256];

    assert_non_null(j);
    assert_rc(refex_pbjson_from_json(desc, j, &m, err, sizeof(err)), REFEX_E_JSON);
    assert_null(m);
    if (strstr(err, want) == NULL)
        fail_msg("input %s\n  error \"%s\"\n  lacks \"%s\"", text, err, want);
    json_decref(j);
}

static ProtobufCMessage *parse(const char *text)
{
    return parse_as(&refex__v1__body__descriptor, text);
}

static void expect_bad(const char *text, const char *want)
{
    bad_as(&refex__v1__body__descriptor, text, want);
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

/* The value forms the proto3 JSON mapping requires a parser to take beyond what pbjson
 * writes: integers of any width as decimal strings or integral numbers in exponent or
 * fraction form; bytes in either base64 alphabet, padded or not. Output is unchanged. */
static void test_proto3_value_forms(void **state)
{
    const ProtobufCMessageDescriptor *frame = &refex__v1__frame__descriptor;
    static const struct {
        const char *text;
        uint32_t version;
    } ints[] = {{"{\"version\":\"7\"}", 7},  {"{\"version\":1e1}", 10},
                {"{\"version\":3.0}", 3},    {"{\"version\":-0.0}", 0},
                {"{\"version\":\"-0\"}", 0}, {"{\"version\":4.294967295e9}", 4294967295u}};
    static const struct {
        const char *in, *bytes, *out; /* out: how it is written back */
        size_t len;
    } b64s[] = {
        {"+/+/", "\xfb\xff\xbf", "+/+/", 3}, {"-_-_", "\xfb\xff\xbf", "+/+/", 3},
        {"++8=", "\xfb\xef", "++8=", 2},     {"--8=", "\xfb\xef", "++8=", 2},
        {"++8", "\xfb\xef", "++8=", 2},      {"--8", "\xfb\xef", "++8=", 2},
        {"AAE", "\x00\x01", "AAE=", 2},      {"AA", "\x00", "AA==", 1},
    };
    ProtobufCMessage *m;
    Refex__V1__Directory *dir;
    Refex__V1__Referral *ref;
    json_t *out, *att;
    char text[128];
    (void)state;

    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        m = parse_as(frame, ints[i].text);
        assert_int_equal(((Refex__V1__Frame *)m)->version, ints[i].version);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    m = parse_as(
        &refex__v1__directory__descriptor,
        "{\"serial\":1.8e19,\"issued_at_ms\":-1e3,\"agencies\":[{\"valid_from_ms\":\"5\"}]}");
    dir = (Refex__V1__Directory *)m;
    assert_true(dir->serial == 18000000000000000000ULL);
    assert_true(dir->issued_at_ms == -1000);
    assert_true(dir->agencies[0]->valid_from_ms == 5);
    protobuf_c_message_free_unpacked(m, NULL);
    bad_as(frame, "{\"version\":2.5}", "version: expected integer");
    bad_as(frame, "{\"version\":\"1e1\"}", "version: expected integer or decimal string");
    bad_as(frame, "{\"version\":\" 1\"}", "version: expected integer or decimal string");
    bad_as(frame, "{\"version\":-1.0}", "version: negative value for uint32");
    bad_as(frame, "{\"version\":4294967296.0}", "version: value 4294967296 out of range");
    bad_as(frame, "{\"version\":1e20}", "version: value out of range for uint32");
    bad_as(&refex__v1__directory__descriptor, "{\"issued_at_ms\":9.3e18}",
           "issued_at_ms: value out of range for int64");

    for (size_t i = 0; i < sizeof(b64s) / sizeof(b64s[0]); i++) {
        snprintf(text, sizeof(text), "{\"referral\":{\"attachments\":[{\"data\":\"%s\"}]}}",
                 b64s[i].in);
        m = parse(text);
        ref = ((Refex__V1__Body *)m)->referral;
        assert_int_equal(ref->attachments[0]->data.len, b64s[i].len);
        assert_memory_equal(ref->attachments[0]->data.data, b64s[i].bytes, b64s[i].len);
        /* written back as standard, padded base64 whatever the input's form */
        assert_rc(refex_pbjson_to_json(m, &out), REFEX_OK);
        att = json_array_get(json_object_get(json_object_get(out, "referral"), "attachments"), 0);
        assert_string_equal(json_string_value(json_object_get(att, "data")), b64s[i].out);
        json_decref(out);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    /* mixed alphabets, partial padding, a lone character, padding inside */
    static const char *const bad64[] = {"+_8=", "-/8", "AA=", "A", "AAE=AA", "A=AA", "AAF"};
    for (size_t i = 0; i < sizeof(bad64) / sizeof(bad64[0]); i++) {
        snprintf(text, sizeof(text), "{\"referral\":{\"attachments\":[{\"data\":\"%s\"}]}}",
                 bad64[i]);
        expect_bad(text, "referral.attachments[0].data: invalid base64");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_name_rule),
        cmocka_unit_test(test_find_and_get),
        cmocka_unit_test(test_both_forms_same_message),
        cmocka_unit_test(test_oneof_member_by_json_name),
        cmocka_unit_test(test_both_names_refused),
        cmocka_unit_test(test_proto3_value_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
