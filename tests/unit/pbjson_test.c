/* Unit tests for pbjson: exact round trips (compared as packed protobuf bytes), default
 * omission, and rejection of bad JSON with a field path in the message. A hand-written
 * recursive descriptor covers proto2 labels (optional with has_, required) and the depth
 * limit, which the proto3, non-recursive wire schema cannot reach. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "testing.h"
#include "refex.pb-c.h"
#include "refex/error.h"
#include "pbjson.h"

/* ---- helpers ---------------------------------------------------------------------- */

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    uint8_t *buf;

    *len = protobuf_c_message_get_packed_size(m);
    buf = malloc(*len + 1);
    assert_non_null(buf);
    assert_int_equal(protobuf_c_message_pack(m, buf), *len);
    return buf;
}

/* msg -> JSON -> text -> JSON -> message, and checks the packed bytes are unchanged and
 * that the rebuilt message converts to the same JSON. Returns the first JSON. */
static json_t *round_trip(const ProtobufCMessage *msg)
{
    json_t *j1 = NULL, *j2 = NULL, *reparsed;
    ProtobufCMessage *back = NULL;
    uint8_t *a, *b;
    size_t alen, blen;
    char err[256];
    char *text;

    assert_rc(refex_pbjson_to_json(msg, &j1), REFEX_OK);
    text = json_dumps(j1, JSON_COMPACT | JSON_SORT_KEYS);
    assert_non_null(text);
    reparsed = json_loads(text, 0, NULL);
    assert_non_null(reparsed);
    free(text);

    err[0] = 'x';
    assert_rc(refex_pbjson_from_json(msg->descriptor, reparsed, &back, err, sizeof(err)), REFEX_OK);
    assert_string_equal(err, "");
    assert_non_null(back);

    a = pack(msg, &alen);
    b = pack(back, &blen);
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);

    assert_rc(refex_pbjson_to_json(back, &j2), REFEX_OK);
    assert_true(json_equal(j1, j2));

    free(a);
    free(b);
    json_decref(j2);
    json_decref(reparsed);
    protobuf_c_message_free_unpacked(back, NULL);
    return j1;
}

/* Expects text (for desc) to be rejected with REFEX_E_JSON and an error containing want. */
static void expect_bad(const ProtobufCMessageDescriptor *desc, const char *text, const char *want)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
    ProtobufCMessage *m = (ProtobufCMessage *)(uintptr_t)1;
    char err[256];

    if (j == NULL)
        fail_msg("test JSON does not parse: %s: %s", text, jerr.text);
    assert_rc(refex_pbjson_from_json(desc, j, &m, err, sizeof(err)), REFEX_E_JSON);
    assert_null(m);
    if (strstr(err, want) == NULL)
        fail_msg("input %s\n  error \"%s\"\n  lacks \"%s\"", text, err, want);
    json_decref(j);
}

static json_t *get_path(json_t *j, const char *a, const char *b)
{
    j = json_object_get(j, a);
    return b ? json_object_get(j, b) : j;
}

/* ---- the wire schema -------------------------------------------------------------- */

static void test_body_round_trip(void **state)
{
    static uint8_t blob[] = {0x00, 0x01, 0xff, 0x00, 0x7f, 0x80, 0x00};
    Refex__V1__Subject subject = REFEX__V1__SUBJECT__INIT;
    Refex__V1__Person mother = REFEX__V1__PERSON__INIT;
    Refex__V1__Person father = REFEX__V1__PERSON__INIT;
    Refex__V1__Person *parents[] = {&mother, &father};
    Refex__V1__Concern concerns[] = {REFEX__V1__CONCERN__CONCERN_SUBSTANCE_MISUSE,
                                     REFEX__V1__CONCERN__CONCERN_UNSPECIFIED,
                                     REFEX__V1__CONCERN__CONCERN_DOMESTIC_ABUSE};
    Refex__V1__Practitioner referrer = REFEX__V1__PRACTITIONER__INIT;
    Refex__V1__LawfulBasis basis = REFEX__V1__LAWFUL_BASIS__INIT;
    Refex__V1__Attachment att = REFEX__V1__ATTACHMENT__INIT;
    Refex__V1__Attachment empty_att = REFEX__V1__ATTACHMENT__INIT;
    Refex__V1__Attachment *atts[] = {&att, &empty_att};
    Refex__V1__Referral ref = REFEX__V1__REFERRAL__INIT;
    Refex__V1__Body body = REFEX__V1__BODY__INIT;
    json_t *j, *v;
    (void)state;

    subject.kind = REFEX__V1__SUBJECT_KIND__SUBJECT_UNBORN;
    subject.reference = "S-0001";
    subject.estimated_due_date = "2025-03-01";
    subject.gestation_weeks = 4000000000u; /* above INT32_MAX: must stay unsigned */
    mother.reference = "P-1";
    mother.name = "Zo\xc3\xab Example"; /* UTF-8 */
    mother.relationship = "mother";
    father.name = "A. Example";
    father.relationship = "father";
    referrer.reference = "MW-7";
    referrer.role = "community midwife";
    basis.article6 = REFEX__V1__ARTICLE6_BASIS__ARTICLE6_PUBLIC_TASK;
    basis.article9 = REFEX__V1__ARTICLE9_CONDITION__ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST;
    basis.note = "Children Act 1989 s.47";
    att.filename = "scan.bin";
    att.content_type = "application/octet-stream";
    att.data.data = blob;
    att.data.len = sizeof(blob);

    ref.kind = REFEX__V1__REFERRAL_KIND__REFERRAL_PRE_BIRTH;
    ref.subject = &subject;
    ref.n_parents = 2;
    ref.parents = parents;
    ref.n_concerns = 3;
    ref.concerns = concerns;
    ref.referrer = &referrer;
    ref.urgency = REFEX__V1__URGENCY__URGENCY_URGENT;
    ref.lawful_basis = &basis;
    ref.consent = REFEX__V1__CONSENT_STATUS__CONSENT_NOT_SOUGHT_SAFEGUARDING;
    ref.summary = "line one\nline two \"quoted\"";
    ref.n_attachments = 2;
    ref.attachments = atts;
    ref.purpose = REFEX__V1__PURPOSE_OF_USE__PURPOSE_SAFEGUARDING;
    body.kind_case = REFEX__V1__BODY__KIND_REFERRAL;
    body.referral = &ref;

    j = round_trip(&body.base);

    assert_string_equal(json_string_value(get_path(j, "referral", "kind")), "REFERRAL_PRE_BIRTH");
    v = get_path(get_path(j, "referral", "subject"), "gestation_weeks", NULL);
    assert_true(json_is_integer(v));
    assert_int_equal(json_integer_value(v), 4000000000LL);
    v = get_path(j, "referral", "concerns");
    assert_int_equal(json_array_size(v), 3);
    assert_string_equal(json_string_value(json_array_get(v, 1)), "CONCERN_UNSPECIFIED");
    v = json_array_get(get_path(j, "referral", "attachments"), 0);
    assert_string_equal(json_string_value(json_object_get(v, "data")), "AAH/AH+AAA==");
    /* The second attachment is present but all-default: an empty object. */
    v = json_array_get(get_path(j, "referral", "attachments"), 1);
    assert_true(json_is_object(v));
    assert_int_equal(json_object_size(v), 0);
    json_decref(j);
}

static void test_ints_round_trip(void **state)
{
    static uint8_t pk[32];
    Refex__V1__Agency a1 = REFEX__V1__AGENCY__INIT;
    Refex__V1__Agency a2 = REFEX__V1__AGENCY__INIT;
    Refex__V1__Agency *agencies[] = {&a1, &a2};
    Refex__V1__Directory dir = REFEX__V1__DIRECTORY__INIT;
    Refex__V1__Ping ping = REFEX__V1__PING__INIT;
    Refex__V1__Pong pong = REFEX__V1__PONG__INIT;
    Refex__V1__Frame frame = REFEX__V1__FRAME__INIT;
    json_t *j;
    (void)state;

    memset(pk, 0xa5, sizeof(pk));
    pk[0] = 0;
    a1.id = "midwifery.example";
    a1.sign_pk.data = pk;
    a1.sign_pk.len = sizeof(pk);
    a1.valid_from_ms = INT64_MIN;
    a1.valid_until_ms = INT64_MAX;
    a1.revoked = 1;
    a2.id = "csc.example";
    a2.valid_from_ms = -1;
    dir.serial = UINT64_MAX;
    dir.issued_at_ms = 1700000000123LL;
    dir.n_agencies = 2;
    dir.agencies = agencies;

    j = round_trip(&dir.base);
    /* uint64 beyond INT64_MAX is written as a decimal string. */
    assert_string_equal(json_string_value(json_object_get(j, "serial")), "18446744073709551615");
    assert_int_equal(json_integer_value(json_object_get(j, "issued_at_ms")), 1700000000123LL);
    assert_true(json_is_true(
        json_object_get(json_array_get(json_object_get(j, "agencies"), 0), "revoked")));
    json_decref(j);

    frame.version = 1;
    frame.kind_case = REFEX__V1__FRAME__KIND_PING;
    frame.ping = &ping;
    ping.nonce = 42;
    json_decref(round_trip(&frame.base));

    /* A oneof member holding an all-default message is still the member that is set. */
    frame.kind_case = REFEX__V1__FRAME__KIND_PONG;
    frame.pong = &pong;
    j = round_trip(&frame.base);
    assert_true(json_is_object(json_object_get(j, "pong")));
    assert_null(json_object_get(j, "ping"));
    json_decref(j);
}

static void test_string_forms_of_64bit(void **state)
{
    json_t *j = json_pack("{s:s, s:s}", "serial", "18446744073709551615", "issued_at_ms",
                          "-9223372036854775808");
    ProtobufCMessage *m = NULL;
    Refex__V1__Directory *dir;
    char err[128];
    (void)state;

    assert_rc(refex_pbjson_from_json(&refex__v1__directory__descriptor, j, &m, err, sizeof(err)),
              REFEX_OK);
    dir = (Refex__V1__Directory *)m;
    assert_true(dir->serial == UINT64_MAX);
    assert_true(dir->issued_at_ms == INT64_MIN);
    protobuf_c_message_free_unpacked(m, NULL);
    json_decref(j);
}

static void test_enum_as_integer(void **state)
{
    json_t *j = json_loads(
        "{\"referral\":{\"kind\":2,\"concerns\":[3,\"CONCERN_LEARNING_DISABILITY\",0]}}", 0, NULL);
    ProtobufCMessage *m = NULL;
    Refex__V1__Body *body;
    json_t *back = NULL;
    char err[128];
    (void)state;

    assert_non_null(j);
    assert_rc(refex_pbjson_from_json(&refex__v1__body__descriptor, j, &m, err, sizeof(err)),
              REFEX_OK);
    body = (Refex__V1__Body *)m;
    assert_int_equal(body->kind_case, REFEX__V1__BODY__KIND_REFERRAL);
    assert_int_equal(body->referral->kind, REFEX__V1__REFERRAL_KIND__REFERRAL_CHILD_IN_NEED);
    assert_int_equal(body->referral->n_concerns, 3);
    assert_int_equal(body->referral->concerns[0], REFEX__V1__CONCERN__CONCERN_MENTAL_HEALTH);
    assert_int_equal(body->referral->concerns[1], REFEX__V1__CONCERN__CONCERN_LEARNING_DISABILITY);
    assert_int_equal(body->referral->concerns[2], REFEX__V1__CONCERN__CONCERN_UNSPECIFIED);

    /* Output always uses names; a value unknown to this build stays a number. */
    body->referral->concerns[2] = 77;
    assert_rc(refex_pbjson_to_json(m, &back), REFEX_OK);
    assert_string_equal(json_string_value(get_path(back, "referral", "kind")),
                        "REFERRAL_CHILD_IN_NEED");
    assert_int_equal(json_integer_value(json_array_get(get_path(back, "referral", "concerns"), 2)),
                     77);
    body->referral->concerns[2] = 0;
    json_decref(back);
    protobuf_c_message_free_unpacked(m, NULL);
    json_decref(j);
}

static void test_defaults_omitted(void **state)
{
    Refex__V1__Subject subject = REFEX__V1__SUBJECT__INIT;
    Refex__V1__Referral ref = REFEX__V1__REFERRAL__INIT;
    Refex__V1__Body body = REFEX__V1__BODY__INIT;
    Refex__V1__Attachment att = REFEX__V1__ATTACHMENT__INIT;
    json_t *j;
    (void)state;

    assert_rc(refex_pbjson_to_json(&body.base, &j), REFEX_OK);
    assert_int_equal(json_object_size(j), 0);
    json_decref(j);

    assert_rc(refex_pbjson_to_json(&subject.base, &j), REFEX_OK);
    assert_int_equal(json_object_size(j), 0);
    json_decref(j);

    att.data.len = 0; /* empty bytes */
    att.filename = "";
    assert_rc(refex_pbjson_to_json(&att.base, &j), REFEX_OK);
    assert_int_equal(json_object_size(j), 0);
    json_decref(j);

    ref.kind = REFEX__V1__REFERRAL_KIND__REFERRAL_EDGE_OF_CARE;
    ref.n_concerns = 0; /* empty repeated */
    assert_rc(refex_pbjson_to_json(&ref.base, &j), REFEX_OK);
    assert_int_equal(json_object_size(j), 1);
    assert_string_equal(json_string_value(json_object_get(j, "kind")), "REFERRAL_EDGE_OF_CARE");
    json_decref(j);

    ref.subject = &subject; /* present, even though empty */
    assert_rc(refex_pbjson_to_json(&ref.base, &j), REFEX_OK);
    assert_int_equal(json_object_size(j), 2);
    assert_int_equal(json_object_size(json_object_get(j, "subject")), 0);
    json_decref(j);
}

static void test_null_leaves_default(void **state)
{
    json_t *j =
        json_loads("{\"referral\":{\"summary\":null,\"subject\":null,\"concerns\":null}}", 0, NULL);
    ProtobufCMessage *m = NULL;
    Refex__V1__Body *body;
    char err[64];
    (void)state;

    assert_rc(refex_pbjson_from_json(&refex__v1__body__descriptor, j, &m, err, sizeof(err)),
              REFEX_OK);
    body = (Refex__V1__Body *)m;
    assert_string_equal(body->referral->summary, "");
    assert_null(body->referral->subject);
    assert_int_equal(body->referral->n_concerns, 0);
    protobuf_c_message_free_unpacked(m, NULL);
    json_decref(j);
}

static void test_bad_input(void **state)
{
    const ProtobufCMessageDescriptor *body = &refex__v1__body__descriptor;
    const ProtobufCMessageDescriptor *dir = &refex__v1__directory__descriptor;
    (void)state;

    expect_bad(body, "{\"referral\":{\"bogus\":1}}", "referral.bogus: unknown field");
    expect_bad(body, "{\"referral\":{\"subject\":{\"gestation_weeks\":\"12a\"}}}",
               "referral.subject.gestation_weeks: expected integer or decimal string");
    expect_bad(body, "{\"referral\":{\"subject\":{\"gestation_weeks\":true}}}",
               "referral.subject.gestation_weeks: expected integer");
    expect_bad(body, "{\"referral\":{\"subject\":{\"gestation_weeks\":-1}}}",
               "referral.subject.gestation_weeks: negative value -1 for uint32");
    expect_bad(body, "{\"referral\":{\"subject\":{\"gestation_weeks\":4294967296}}}",
               "referral.subject.gestation_weeks: value 4294967296 out of range for uint32");
    expect_bad(body, "{\"referral\":{\"subject\":{\"gestation_weeks\":1.5}}}",
               "referral.subject.gestation_weeks: expected integer");
    expect_bad(body, "{\"referral\":{\"kind\":\"REFERRAL_BOGUS\"}}",
               "referral.kind: unknown enum value \"REFERRAL_BOGUS\"");
    expect_bad(body, "{\"referral\":{\"kind\":99}}", "referral.kind: unknown enum value 99");
    expect_bad(body, "{\"referral\":{\"kind\":true}}", "referral.kind: expected enum name");
    expect_bad(body, "{\"referral\":{\"concerns\":[1,\"CONCERN_NOPE\"]}}",
               "referral.concerns[1]: unknown enum value \"CONCERN_NOPE\"");
    expect_bad(body, "{\"referral\":{\"attachments\":[{\"data\":\"not base64!\"}]}}",
               "referral.attachments[0].data: invalid base64");
    expect_bad(body, "{\"referral\":{\"attachments\":[{},{\"data\":\"AA=\"}]}}",
               "referral.attachments[1].data: invalid base64"); /* partial padding */
    expect_bad(body, "{\"referral\":{\"attachments\":[{\"data\":\"AA==AA==\"}]}}",
               "referral.attachments[0].data: invalid base64");
    expect_bad(body, "{\"referral\":{},\"case_update\":{}}",
               "case_update: oneof already has referral set");
    expect_bad(body, "[]", "(top level): expected object");
    expect_bad(body, "\"referral\"", "(top level): expected object");
    expect_bad(body, "{\"referral\":[]}", "referral: expected object");
    expect_bad(body, "{\"referral\":{\"summary\":5}}", "referral.summary: expected string");
    expect_bad(body, "{\"referral\":{\"parents\":{}}}", "referral.parents: expected array");
    expect_bad(body, "{\"referral\":{\"parents\":[null]}}", "referral.parents[0]: expected object");
    /* Deep structures where the schema has none are type errors, found at once. */
    expect_bad(body, "{\"referral\":{\"concerns\":[[[[[[[[[[1]]]]]]]]]]}}",
               "referral.concerns[0]: expected enum name or integer");
    expect_bad(body, "{\"referral\":{\"subject\":{\"kind\":{\"a\":{\"b\":{\"c\":{}}}}}}}",
               "referral.subject.kind: expected enum name or integer");
    /* Failing late, after strings, arrays and submessages were built (ASan checks). */
    expect_bad(body,
               "{\"referral\":{\"summary\":\"x\",\"concerns\":[1,2],\"subject\":{\"name\":\"n\"},"
               "\"parents\":[{\"name\":\"a\"},{\"name\":5}]}}",
               "referral.parents[1].name: expected string");
    expect_bad(body,
               "{\"referral\":{\"attachments\":[{\"data\":\"AAEC\",\"filename\":\"f\"},"
               "{\"data\":\"AAEC\",\"filename\":7}]}}",
               "referral.attachments[1].filename: expected string");
    expect_bad(dir, "{\"serial\":\"18446744073709551616\"}",
               "serial: expected integer or decimal string");
    expect_bad(dir, "{\"serial\":\"-5\"}", "serial: negative value for uint64");
    expect_bad(dir, "{\"issued_at_ms\":\"12a\"}", "issued_at_ms: expected integer or decimal");
    expect_bad(dir, "{\"issued_at_ms\":\"9223372036854775808\"}",
               "issued_at_ms: value out of range for int64");
    expect_bad(dir, "{\"agencies\":[{\"revoked\":\"yes\"}]}",
               "agencies[0].revoked: expected true or false");
    expect_bad(&refex__v1__frame__descriptor, "{\"version\":\"1x\"}",
               "version: expected integer or decimal string");
}

static void test_bad_strings_and_keys(void **state)
{
    ProtobufCMessage *m = NULL;
    json_t *j = json_object();
    char err[128];
    (void)state;

    /* A key with an embedded NUL must not match the field named by its prefix. */
    assert_int_equal(json_object_setn_new(j, "id\0x", 4, json_string("a")), 0);
    assert_rc(refex_pbjson_from_json(&refex__v1__agency__descriptor, j, &m, err, sizeof(err)),
              REFEX_E_JSON);
    assert_string_equal(err, "id?x: unknown field");
    json_decref(j);

    j = json_object();
    assert_int_equal(json_object_set_new(j, "id", json_stringn("a\0b", 3)), 0);
    assert_rc(refex_pbjson_from_json(&refex__v1__agency__descriptor, j, &m, err, sizeof(err)),
              REFEX_E_JSON);
    assert_string_equal(err, "id: string contains a NUL character");
    assert_null(m);
    json_decref(j);

    /* Control characters in a key are not copied into the message. */
    j = json_loads("{\"a\\u0001\\nb\":1}", 0, NULL);
    assert_rc(refex_pbjson_from_json(&refex__v1__agency__descriptor, j, &m, err, sizeof(err)),
              REFEX_E_JSON);
    assert_string_equal(err, "a??b: unknown field");
    json_decref(j);
}

static void test_err_buffer(void **state)
{
    json_t *j = json_loads("{\"referral\":{\"bogus\":1}}", 0, NULL);
    ProtobufCMessage *m = NULL;
    json_t *out = (json_t *)(uintptr_t)1;
    char small[8];
    (void)state;

    memset(small, 'x', sizeof(small));
    assert_rc(refex_pbjson_from_json(&refex__v1__body__descriptor, j, &m, small, sizeof(small)),
              REFEX_E_JSON);
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_rc(refex_pbjson_from_json(&refex__v1__body__descriptor, j, &m, NULL, 0), REFEX_E_JSON);
    assert_rc(refex_pbjson_from_json(NULL, j, &m, NULL, 0), REFEX_E_INVAL);
    assert_rc(refex_pbjson_from_json(&refex__v1__body__descriptor, NULL, &m, NULL, 0),
              REFEX_E_INVAL);
    assert_rc(refex_pbjson_from_json(&refex__v1__body__descriptor, j, NULL, NULL, 0),
              REFEX_E_INVAL);
    assert_rc(refex_pbjson_to_json(NULL, &out), REFEX_E_INVAL);
    assert_null(out);
    assert_rc(refex_pbjson_to_json(NULL, NULL), REFEX_E_INVAL);
    json_decref(j);
}

/* ---- a hand-written proto2-style, recursive message ----------------------------------
 * message Node {
 *   optional Node child = 1;   optional int32 count = 2;    optional string label = 3;
 *   optional bytes blob = 4;   oneof pick { sint64 num = 5; string text = 6; }
 *   repeated string tags = 7;  float ratio = 8 (proto3);    repeated double weights = 9;
 *   fixed64 big = 10 (proto3); optional bool flag = 11;     required uint32 id = 12;
 * } */

typedef struct Node Node;
struct Node {
    ProtobufCMessage base;
    Node *child;
    protobuf_c_boolean has_count;
    int32_t count;
    char *label;
    protobuf_c_boolean has_blob;
    ProtobufCBinaryData blob;
    uint32_t pick_case;
    union {
        int64_t num;
        char *text;
    };
    size_t n_tags;
    char **tags;
    float ratio;
    size_t n_weights;
    double *weights;
    uint64_t big;
    protobuf_c_boolean has_flag;
    protobuf_c_boolean flag;
    uint32_t id;
};

static const ProtobufCMessageDescriptor node_descriptor;

static void node_init(Node *n)
{
    memset(n, 0, sizeof(*n));
    n->base.descriptor = &node_descriptor;
}

#define NODE_FIELD(nm, num, lab, typ, quant, desc, flg)                                            \
    {                                                                                              \
        .name = #nm, .id = num, .label = PROTOBUF_C_LABEL_##lab, .type = PROTOBUF_C_TYPE_##typ,    \
        .quantifier_offset = quant, .offset = offsetof(Node, nm), .descriptor = desc,              \
        .default_value = NULL, .flags = flg                                                        \
    }

static const ProtobufCFieldDescriptor node_fields[] = {
    NODE_FIELD(child, 1, OPTIONAL, MESSAGE, 0, &node_descriptor, 0),
    NODE_FIELD(count, 2, OPTIONAL, INT32, offsetof(Node, has_count), NULL, 0),
    NODE_FIELD(label, 3, OPTIONAL, STRING, 0, NULL, 0),
    NODE_FIELD(blob, 4, OPTIONAL, BYTES, offsetof(Node, has_blob), NULL, 0),
    NODE_FIELD(num, 5, OPTIONAL, SINT64, offsetof(Node, pick_case), NULL,
               PROTOBUF_C_FIELD_FLAG_ONEOF),
    NODE_FIELD(text, 6, OPTIONAL, STRING, offsetof(Node, pick_case), NULL,
               PROTOBUF_C_FIELD_FLAG_ONEOF),
    NODE_FIELD(tags, 7, REPEATED, STRING, offsetof(Node, n_tags), NULL, 0),
    NODE_FIELD(ratio, 8, NONE, FLOAT, 0, NULL, 0),
    NODE_FIELD(weights, 9, REPEATED, DOUBLE, offsetof(Node, n_weights), NULL, 0),
    NODE_FIELD(big, 10, NONE, FIXED64, 0, NULL, 0),
    NODE_FIELD(flag, 11, OPTIONAL, BOOL, offsetof(Node, has_flag), NULL, 0),
    NODE_FIELD(id, 12, REQUIRED, UINT32, 0, NULL, 0),
};

/* big blob child count flag id label num ratio tags text weights */
static const unsigned node_by_name[] = {9, 3, 0, 1, 10, 11, 2, 4, 7, 6, 5, 8};
static const ProtobufCIntRange node_ranges[] = {{1, 0}, {0, 12}};

static const ProtobufCMessageDescriptor node_descriptor = {
    .magic = PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    .name = "test.Node",
    .short_name = "Node",
    .c_name = "Node",
    .package_name = "test",
    .sizeof_message = sizeof(Node),
    .n_fields = 12,
    .fields = node_fields,
    .fields_sorted_by_name = node_by_name,
    .n_field_ranges = 1,
    .field_ranges = node_ranges,
    .message_init = (ProtobufCMessageInit)node_init,
};

static void test_proto2_labels_round_trip(void **state)
{
    char *tags[] = {"a", "", "\xe2\x82\xac"};
    double weights[] = {1.5, -2.0, 0.0};
    Node child, top;
    json_t *j, *c;
    (void)state;

    node_init(&child);
    child.id = 7;
    child.has_count = 1; /* explicitly set to zero: written */
    child.has_flag = 1;  /* explicitly false: written */
    child.has_blob = 1;  /* explicitly empty: written */
    child.pick_case = 6;
    child.text = "";
    child.label = "";

    node_init(&top);
    top.id = 0;
    top.child = &child;
    top.has_count = 1;
    top.count = -5;
    top.label = "top";
    top.pick_case = 5;
    top.num = INT64_MIN;
    top.n_tags = 3;
    top.tags = tags;
    top.ratio = 0.1f;
    top.n_weights = 3;
    top.weights = weights;
    top.big = 0x8000000000000001ULL;

    j = round_trip(&top.base);
    assert_int_equal(json_integer_value(json_object_get(j, "id")), 0); /* required: written */
    assert_null(json_object_get(j, "text"));
    assert_null(json_object_get(j, "flag")); /* has_flag false: omitted */
    c = json_object_get(j, "child");
    assert_int_equal(json_integer_value(json_object_get(c, "count")), 0);
    assert_true(json_is_false(json_object_get(c, "flag")));
    assert_string_equal(json_string_value(json_object_get(c, "blob")), "");
    assert_string_equal(json_string_value(json_object_get(c, "text")), "");
    assert_string_equal(json_string_value(json_object_get(c, "label")), "");
    assert_null(json_object_get(c, "ratio"));
    json_decref(j);
}

static void test_proto2_bad_input(void **state)
{
    (void)state;
    expect_bad(&node_descriptor, "{}", "id: required field missing");
    expect_bad(&node_descriptor, "{\"id\":1,\"child\":{\"label\":\"x\"}}",
               "child.id: required field missing");
    expect_bad(&node_descriptor, "{\"id\":1,\"num\":1,\"text\":\"x\"}",
               "text: oneof already has num set");
    expect_bad(&node_descriptor, "{\"id\":1,\"text\":\"x\",\"num\":1}",
               "num: oneof already has text set");
    expect_bad(&node_descriptor, "{\"id\":1,\"count\":2147483648}",
               "count: value 2147483648 out of range for int32");
    expect_bad(&node_descriptor, "{\"id\":1,\"ratio\":1e300}",
               "ratio: value out of range for float");
    expect_bad(&node_descriptor, "{\"id\":1,\"weights\":[1,\"2\"]}", "weights[1]: expected number");
    expect_bad(&node_descriptor, "{\"id\":1,\"tags\":[\"a\",[[[[[[\"b\"]]]]]]]}",
               "tags[1]: expected string");
    expect_bad(&node_descriptor, "{\"id\":1,\"tags\":[\"a\",\"b\"],\"blob\":\"%%%%\"}",
               "blob: invalid base64");
}

/* Builds {"id":1,"child":{"id":1,"child":...}} with `levels` messages in all. */
static json_t *chain_json(int levels)
{
    json_t *j = NULL;

    for (int i = 0; i < levels; i++) {
        json_t *n = json_pack("{s:i}", "id", 1);

        assert_non_null(n);
        if (j != NULL)
            assert_int_equal(json_object_set_new(n, "child", j), 0);
        j = n;
    }
    return j;
}

static void test_depth_limit(void **state)
{
    Node nodes[REFEX_PBJSON_MAX_DEPTH + 1];
    ProtobufCMessage *m = NULL;
    json_t *j, *out = NULL;
    char err[1024];
    (void)state;

    j = chain_json(REFEX_PBJSON_MAX_DEPTH);
    assert_rc(refex_pbjson_from_json(&node_descriptor, j, &m, err, sizeof(err)), REFEX_OK);
    protobuf_c_message_free_unpacked(m, NULL);
    json_decref(j);

    j = chain_json(REFEX_PBJSON_MAX_DEPTH + 1);
    assert_rc(refex_pbjson_from_json(&node_descriptor, j, &m, err, sizeof(err)), REFEX_E_JSON);
    assert_null(m);
    assert_non_null(strstr(err, "child.child.child"));
    assert_non_null(strstr(err, ": messages nested deeper than 32"));
    json_decref(j);

    j = chain_json(1000);
    assert_rc(refex_pbjson_from_json(&node_descriptor, j, &m, err, sizeof(err)), REFEX_E_JSON);
    json_decref(j);

    for (int i = 0; i <= REFEX_PBJSON_MAX_DEPTH; i++) {
        node_init(&nodes[i]);
        nodes[i].child = i < REFEX_PBJSON_MAX_DEPTH ? &nodes[i + 1] : NULL;
    }
    assert_rc(refex_pbjson_to_json(&nodes[0].base, &out), REFEX_E_JSON);
    assert_null(out);
    assert_rc(refex_pbjson_to_json(&nodes[1].base, &out), REFEX_OK);
    json_decref(out);
}

static void test_unrepresentable_output(void **state)
{
    Node n;
    json_t *out = NULL;
    (void)state;

    node_init(&n);
    n.ratio = NAN;
    assert_rc(refex_pbjson_to_json(&n.base, &out), REFEX_E_JSON);
    assert_null(out);
    n.ratio = 0;
    n.label = "bad \xff utf-8";
    assert_rc(refex_pbjson_to_json(&n.base, &out), REFEX_E_JSON);
    assert_null(out);
    n.label = "ok";
    n.n_tags = 1;
    n.tags = NULL; /* malformed in-memory message */
    assert_rc(refex_pbjson_to_json(&n.base, &out), REFEX_E_INVAL);
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_round_trip),
        cmocka_unit_test(test_ints_round_trip),
        cmocka_unit_test(test_string_forms_of_64bit),
        cmocka_unit_test(test_enum_as_integer),
        cmocka_unit_test(test_defaults_omitted),
        cmocka_unit_test(test_null_leaves_default),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_bad_strings_and_keys),
        cmocka_unit_test(test_err_buffer),
        cmocka_unit_test(test_proto2_labels_round_trip),
        cmocka_unit_test(test_proto2_bad_input),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_unrepresentable_output),
    };

    /* base64 codecs need no sodium_init, but the project calls it once at start. */
    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
