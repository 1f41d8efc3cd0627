/* Tests for lib/body.c: message type names, JSON <-> packed Body for a referral and a
 * case update, the audit metadata pulled from a body, and bad JSON and bad bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "body.h"
#include "codec.h"
#include "util.h"

static const char *REFERRAL_JSON =
    "{"
    " \"kind\": \"REFERRAL_PRE_BIRTH\","
    " \"subject\": {\"kind\": \"SUBJECT_UNBORN\", \"reference\": \"SUBJ-7f3a\","
    "   \"estimated_due_date\": \"2025-11-02\", \"gestation_weeks\": 12},"
    " \"parents\": [{\"reference\": \"P-1\", \"relationship\": \"mother\"}],"
    " \"concerns\": [\"CONCERN_SUBSTANCE_MISUSE\", \"CONCERN_DOMESTIC_ABUSE\"],"
    " \"referrer\": {\"reference\": \"MW-0042\", \"name\": \"A. Midwife\","
    "   \"role\": \"community midwife\", \"organisation\": \"North Trust\"},"
    " \"urgency\": \"URGENCY_URGENT\","
    " \"lawful_basis\": {\"article6\": \"ARTICLE6_PUBLIC_TASK\","
    "   \"article9\": \"ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST\","
    "   \"note\": \"Children Act 1989 s.47\"},"
    " \"consent\": \"CONSENT_NOT_SOUGHT_SAFEGUARDING\","
    " \"summary\": \"Pre-birth referral\","
    " \"attachments\": [{\"filename\": \"note.txt\", \"content_type\": \"text/plain\","
    "   \"data\": \"aGVsbG8=\"}],"
    " \"purpose\": \"PURPOSE_SAFEGUARDING\""
    "}";

static const char *CASE_UPDATE_JSON =
    "{"
    " \"case_ref\": \"CASE-2024-0117\","
    " \"update_type\": \"CASE_UPDATE_CHILD_PROTECTION_PLAN\","
    " \"summary\": \"Plan agreed\","
    " \"published_by\": {\"reference\": \"SW-0007\"},"
    " \"lawful_basis\": {\"article6\": \"ARTICLE6_LEGAL_OBLIGATION\","
    "   \"article9\": \"ARTICLE9_SOCIAL_PROTECTION_LAW\"},"
    " \"purpose\": \"PURPOSE_CASE_MANAGEMENT\""
    "}";

static json_t *load(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j)
        fail_msg("json_loads: line %d: %s", jerr.line, jerr.text);
    return j;
}

/* Packs text as a body of type, which must succeed. */
static void pack_ok(int type, const char *text, uint8_t **out, size_t *out_len)
{
    char err[256] = "";
    json_t *j = load(text);
    int rc = refex_body_pack_json(type, j, out, out_len, err, sizeof err);
    json_decref(j);
    if (rc != REFEX_OK)
        fail_msg("refex_body_pack_json: %s: %s", refex_errname(rc), err);
    assert_non_null(*out);
    assert_true(*out_len > 0);
}

/* Packing text as type must fail with want; err must contain needle (if not NULL). */
static void pack_bad(int type, const char *text, int want, const char *needle)
{
    char err[256] = "";
    uint8_t *buf = NULL;
    size_t len = 0;
    json_t *j = load(text);
    assert_rc(refex_body_pack_json(type, j, &buf, &len, err, sizeof err), want);
    json_decref(j);
    assert_null(buf);
    if (needle && !strstr(err, needle))
        fail_msg("err \"%s\" does not mention \"%s\"", err, needle);
}

/* ---- message types ---- */

static void test_type_parse(void **state)
{
    (void)state;
    assert_int_equal(refex_message_type_parse("REFERRAL"), REFEX__V1__MESSAGE_TYPE__REFERRAL);
    assert_int_equal(refex_message_type_parse("referral"), REFEX__V1__MESSAGE_TYPE__REFERRAL);
    assert_int_equal(refex_message_type_parse("Referral"), REFEX__V1__MESSAGE_TYPE__REFERRAL);
    assert_int_equal(refex_message_type_parse("referral-decision"),
                     REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION);
    assert_int_equal(refex_message_type_parse("REFERRAL_DECISION"),
                     REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION);
    assert_int_equal(refex_message_type_parse("information-request"),
                     REFEX__V1__MESSAGE_TYPE__INFORMATION_REQUEST);
    assert_int_equal(refex_message_type_parse("information_response"),
                     REFEX__V1__MESSAGE_TYPE__INFORMATION_RESPONSE);
    assert_int_equal(refex_message_type_parse("case_update"), REFEX__V1__MESSAGE_TYPE__CASE_UPDATE);
    assert_int_equal(refex_message_type_parse("case-update"), REFEX__V1__MESSAGE_TYPE__CASE_UPDATE);
}

static void test_type_parse_rejects(void **state)
{
    (void)state;
    char longname[200];
    memset(longname, 'A', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_int_equal(refex_message_type_parse(""), 0);
    assert_int_equal(refex_message_type_parse("bogus"), 0);
    assert_int_equal(refex_message_type_parse(NULL), 0);
    assert_int_equal(refex_message_type_parse("MESSAGE_TYPE_UNSPECIFIED"), 0);
    assert_int_equal(refex_message_type_parse("unknown"), 0);
    assert_int_equal(refex_message_type_parse(" referral"), 0);
    assert_int_equal(refex_message_type_parse("referral "), 0);
    assert_int_equal(refex_message_type_parse("referrals"), 0);
    assert_int_equal(refex_message_type_parse("1"), 0);
    assert_int_equal(refex_message_type_parse(longname), 0);
}

static void test_type_name(void **state)
{
    (void)state;
    assert_string_equal(refex_message_type_name(REFEX__V1__MESSAGE_TYPE__REFERRAL), "REFERRAL");
    assert_string_equal(refex_message_type_name(REFEX__V1__MESSAGE_TYPE__CASE_UPDATE),
                        "CASE_UPDATE");
    for (int t = 1; t <= 5; t++) {
        const char *name = refex_message_type_name(t);
        assert_string_not_equal(name, "UNKNOWN");
        assert_int_equal(refex_message_type_parse(name), t);
    }
    assert_string_equal(refex_message_type_name(0), "UNKNOWN");
    assert_string_equal(refex_message_type_name(99), "UNKNOWN");
    assert_string_equal(refex_message_type_name(-1), "UNKNOWN");
}

/* ---- referral ---- */

static void test_referral_pack_unpack(void **state)
{
    (void)state;
    uint8_t *buf = NULL;
    size_t len = 0;
    Refex__V1__Body *b = NULL;
    pack_ok(REFEX__V1__MESSAGE_TYPE__REFERRAL, REFERRAL_JSON, &buf, &len);

    assert_ok(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL, buf, len, &b));
    assert_non_null(b);
    assert_int_equal(b->kind_case, REFEX__V1__BODY__KIND_REFERRAL);
    const Refex__V1__Referral *r = b->referral;
    assert_int_equal(r->kind, REFEX__V1__REFERRAL_KIND__REFERRAL_PRE_BIRTH);
    assert_non_null(r->subject);
    assert_int_equal(r->subject->gestation_weeks, 12);
    assert_int_equal(r->n_concerns, 2);
    assert_int_equal(r->concerns[0], REFEX__V1__CONCERN__CONCERN_SUBSTANCE_MISUSE);
    assert_int_equal(r->concerns[1], REFEX__V1__CONCERN__CONCERN_DOMESTIC_ABUSE);
    assert_non_null(r->referrer);
    assert_string_equal(r->referrer->reference, "MW-0042");
    assert_int_equal(r->n_attachments, 1);
    assert_int_equal(r->attachments[0]->data.len, 5);
    assert_memory_equal(r->attachments[0]->data.data, "hello", 5);
    refex__v1__body__free_unpacked(b, NULL);

    /* the same bytes are not a case update, nor any other type */
    b = (Refex__V1__Body *)&b;
    assert_rc(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, buf, len, &b),
              REFEX_E_TYPE_MISMATCH);
    assert_null(b);
    for (int t = 2; t <= 5; t++) {
        assert_rc(refex_body_unpack(t, buf, len, &b), REFEX_E_TYPE_MISMATCH);
        assert_null(b);
    }
    assert_rc(refex_body_unpack(0, buf, len, &b), REFEX_E_TYPE_MISMATCH);
    assert_rc(refex_body_unpack(99, buf, len, &b), REFEX_E_TYPE_MISMATCH);
    assert_null(b);
    free(buf);
}

static void test_referral_meta(void **state)
{
    (void)state;
    uint8_t *buf = NULL;
    size_t len = 0;
    Refex__V1__Body *b = NULL;
    refex_body_meta m;
    pack_ok(REFEX__V1__MESSAGE_TYPE__REFERRAL, REFERRAL_JSON, &buf, &len);
    assert_ok(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL, buf, len, &b));

    memset(&m, 0, sizeof m);
    refex_body_meta_get(b, &m);
    assert_string_equal(m.practitioner, "MW-0042");
    assert_string_equal(m.article6, "ARTICLE6_PUBLIC_TASK");
    assert_string_equal(m.article9, "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST");
    assert_string_equal(m.consent, "CONSENT_NOT_SOUGHT_SAFEGUARDING");
    assert_string_equal(m.purpose, "PURPOSE_SAFEGUARDING");
    assert_string_equal(m.case_ref, ""); /* a referral names no case yet */

    refex__v1__body__free_unpacked(b, NULL);
    free(buf);
}

static void test_referral_to_json_round_trip(void **state)
{
    (void)state;
    uint8_t *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    Refex__V1__Body *b = NULL;
    json_t *back = NULL, *want = load(REFERRAL_JSON);
    char err[256] = "";

    pack_ok(REFEX__V1__MESSAGE_TYPE__REFERRAL, REFERRAL_JSON, &buf, &len);
    assert_ok(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL, buf, len, &b));
    assert_ok(refex_body_to_json(b, &back));
    assert_non_null(back);
    if (!json_equal(back, want)) {
        char *s = json_dumps(back, JSON_SORT_KEYS);
        fail_msg("round trip differs: %s", s ? s : "(null)");
    }

    /* and packing the result again gives the same bytes */
    assert_ok(refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, back, &buf2, &len2, err,
                                   sizeof err));
    assert_int_equal(len2, len);
    assert_memory_equal(buf2, buf, len);

    json_decref(back);
    json_decref(want);
    refex__v1__body__free_unpacked(b, NULL);
    free(buf);
    free(buf2);
}

static void test_minimal_referral_meta(void **state)
{
    (void)state;
    uint8_t *buf = NULL;
    size_t len = 0;
    Refex__V1__Body *b = NULL;
    json_t *back = NULL;
    refex_body_meta m;
    /* no referrer, no lawful basis: metadata is empty or *_UNSPECIFIED, never NULL */
    pack_ok(REFEX__V1__MESSAGE_TYPE__REFERRAL, "{\"summary\": \"x\"}", &buf, &len);
    assert_ok(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL, buf, len, &b));
    refex_body_meta_get(b, &m);
    assert_string_equal(m.practitioner, "");
    assert_string_equal(m.article6, "ARTICLE6_UNSPECIFIED");
    assert_string_equal(m.article9, "ARTICLE9_UNSPECIFIED");
    assert_string_equal(m.consent, "CONSENT_UNSPECIFIED");
    assert_string_equal(m.purpose, "PURPOSE_UNSPECIFIED");
    assert_string_equal(m.case_ref, "");

    assert_ok(refex_body_to_json(b, &back));
    json_t *want = load("{\"summary\": \"x\"}");
    assert_true(json_equal(back, want));
    json_decref(want);
    json_decref(back);
    refex__v1__body__free_unpacked(b, NULL);
    free(buf);
}

static void test_empty_object(void **state)
{
    (void)state;
    uint8_t *buf = NULL;
    size_t len = 0;
    Refex__V1__Body *b = NULL;
    json_t *back = NULL;
    char err[256] = "";
    json_t *j = json_object();
    /* an empty referral still sets the oneof member */
    assert_ok(
        refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, j, &buf, &len, err, sizeof err));
    json_decref(j);
    assert_ok(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL, buf, len, &b));
    assert_int_equal(b->kind_case, REFEX__V1__BODY__KIND_REFERRAL);
    assert_ok(refex_body_to_json(b, &back));
    assert_true(json_is_object(back));
    assert_int_equal(json_object_size(back), 0);
    json_decref(back);
    refex__v1__body__free_unpacked(b, NULL);
    free(buf);
}

/* ---- case update ---- */

static void test_case_update(void **state)
{
    (void)state;
    uint8_t *buf = NULL;
    size_t len = 0;
    Refex__V1__Body *b = NULL;
    json_t *back = NULL, *want = load(CASE_UPDATE_JSON);
    refex_body_meta m;

    pack_ok(REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, CASE_UPDATE_JSON, &buf, &len);
    assert_rc(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL, buf, len, &b),
              REFEX_E_TYPE_MISMATCH);
    assert_ok(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, buf, len, &b));
    assert_int_equal(b->kind_case, REFEX__V1__BODY__KIND_CASE_UPDATE);

    refex_body_meta_get(b, &m);
    assert_string_equal(m.case_ref, "CASE-2024-0117");
    assert_string_equal(m.practitioner, "SW-0007");
    assert_string_equal(m.article6, "ARTICLE6_LEGAL_OBLIGATION");
    assert_string_equal(m.article9, "ARTICLE9_SOCIAL_PROTECTION_LAW");
    assert_string_equal(m.purpose, "PURPOSE_CASE_MANAGEMENT");
    assert_string_equal(m.consent, "CONSENT_UNSPECIFIED"); /* case updates carry none */

    assert_ok(refex_body_to_json(b, &back));
    assert_true(json_equal(back, want));
    json_decref(back);
    json_decref(want);
    refex__v1__body__free_unpacked(b, NULL);
    free(buf);
}

static void test_decision_and_request_case_ref(void **state)
{
    (void)state;
    uint8_t *buf = NULL;
    size_t len = 0;
    Refex__V1__Body *b = NULL;
    refex_body_meta m;

    pack_ok(REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION,
            "{\"decision\": \"DECISION_ACCEPTED\", \"case_ref\": \"CASE-9\","
            " \"decided_by\": {\"reference\": \"SW-1\"}}",
            &buf, &len);
    assert_ok(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION, buf, len, &b));
    refex_body_meta_get(b, &m);
    assert_string_equal(m.case_ref, "CASE-9");
    assert_string_equal(m.practitioner, "SW-1");
    refex__v1__body__free_unpacked(b, NULL);
    free(buf);

    pack_ok(REFEX__V1__MESSAGE_TYPE__INFORMATION_REQUEST,
            "{\"case_ref\": \"CASE-10\", \"requested_by\": {\"reference\": \"HV-3\"},"
            " \"purpose\": \"PURPOSE_DIRECT_CARE\"}",
            &buf, &len);
    assert_ok(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__INFORMATION_REQUEST, buf, len, &b));
    refex_body_meta_get(b, &m);
    assert_string_equal(m.case_ref, "CASE-10");
    assert_string_equal(m.practitioner, "HV-3");
    assert_string_equal(m.purpose, "PURPOSE_DIRECT_CARE");
    refex__v1__body__free_unpacked(b, NULL);
    free(buf);

    pack_ok(REFEX__V1__MESSAGE_TYPE__INFORMATION_RESPONSE,
            "{\"responded_by\": {\"reference\": \"GP-2\"}, \"consent\": \"CONSENT_GIVEN\"}", &buf,
            &len);
    assert_ok(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__INFORMATION_RESPONSE, buf, len, &b));
    refex_body_meta_get(b, &m);
    assert_string_equal(m.case_ref, "");
    assert_string_equal(m.practitioner, "GP-2");
    assert_string_equal(m.consent, "CONSENT_GIVEN");
    refex__v1__body__free_unpacked(b, NULL);
    free(buf);
}

/* ---- bad JSON ---- */

static void test_pack_unknown_field(void **state)
{
    (void)state;
    pack_bad(REFEX__V1__MESSAGE_TYPE__REFERRAL,
             "{\"kind\": \"REFERRAL_PRE_BIRTH\", \"favourite_colour\": \"blue\"}", REFEX_E_JSON,
             "favourite_colour");
    /* nested: the error names the path */
    pack_bad(REFEX__V1__MESSAGE_TYPE__REFERRAL, "{\"subject\": {\"shoe_size\": 3}}", REFEX_E_JSON,
             "subject.shoe_size");
    /* a field of another body type */
    pack_bad(REFEX__V1__MESSAGE_TYPE__REFERRAL, "{\"case_ref\": \"CASE-1\"}", REFEX_E_JSON,
             "case_ref");
}

static void test_pack_wrong_values(void **state)
{
    (void)state;
    pack_bad(REFEX__V1__MESSAGE_TYPE__REFERRAL, "{\"subject\": {\"gestation_weeks\": \"12a\"}}",
             REFEX_E_JSON, "gestation_weeks");
    pack_bad(REFEX__V1__MESSAGE_TYPE__REFERRAL, "{\"subject\": {\"gestation_weeks\": -1}}",
             REFEX_E_JSON, "gestation_weeks");
    pack_bad(REFEX__V1__MESSAGE_TYPE__REFERRAL, "{\"kind\": \"REFERRAL_BOGUS\"}", REFEX_E_JSON,
             "kind");
    pack_bad(REFEX__V1__MESSAGE_TYPE__REFERRAL, "{\"concerns\": \"CONCERN_MENTAL_HEALTH\"}",
             REFEX_E_JSON, "concerns");
    pack_bad(REFEX__V1__MESSAGE_TYPE__REFERRAL, "{\"referrer\": \"MW-0042\"}", REFEX_E_JSON,
             "referrer");
    pack_bad(REFEX__V1__MESSAGE_TYPE__REFERRAL, "{\"attachments\": [{\"data\": \"not base64!\"}]}",
             REFEX_E_JSON, "data");
}

static void test_pack_non_object(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "[]", "[{\"kind\": \"REFERRAL_PRE_BIRTH\"}]", "\"referral\"", "42", "null", "true"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char err[256] = "";
        uint8_t *buf = NULL;
        size_t len = 0;
        json_t *j = json_loads(texts[i], JSON_DECODE_ANY, NULL);
        assert_non_null(j);
        assert_rc(
            refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, j, &buf, &len, err, sizeof err),
            REFEX_E_JSON);
        assert_null(buf);
        assert_true(strlen(err) > 0);
        json_decref(j);
    }
    /* NULL object */
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[256] = "";
    assert_rc(
        refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, NULL, &buf, &len, err, sizeof err),
        REFEX_E_JSON);
}

static void test_pack_unknown_type(void **state)
{
    (void)state;
    static const int types[] = {0, 6, 99, -1};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        pack_bad(types[i], "{\"summary\": \"x\"}", REFEX_E_INVAL, "type");
}

/* ---- bad bytes ---- */

static void test_unpack_garbage(void **state)
{
    (void)state;
    static const uint8_t garbage[][12] = {
        /* field 1, length 16, but one byte follows */
        {0x0a, 0x10, 0x01},
        /* varint that never ends */
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
        /* wire type 7 does not exist */
        {0x0f, 0x00},
        /* field number 0 */
        {0x02, 0x00},
    };
    static const size_t lens[] = {3, 12, 2, 2};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        Refex__V1__Body *b = (Refex__V1__Body *)&b;
        int rc = refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL, garbage[i], lens[i], &b);
        if (rc != REFEX_E_MALFORMED)
            fail_msg("garbage #%zu: got %s, want E_MALFORMED", i, refex_errname(rc));
        assert_null(b);
    }
}

static void test_unpack_truncated(void **state)
{
    (void)state;
    uint8_t *buf = NULL;
    size_t len = 0;
    Refex__V1__Body *b = NULL;
    pack_ok(REFEX__V1__MESSAGE_TYPE__REFERRAL, REFERRAL_JSON, &buf, &len);

    /* every proper prefix cuts the one length-delimited member short */
    for (size_t n = 1; n < len; n++) {
        int rc = refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL, buf, n, &b);
        if (rc != REFEX_E_MALFORMED)
            fail_msg("prefix of %zu/%zu bytes: got %s, want E_MALFORMED", n, len,
                     refex_errname(rc));
        assert_null(b);
    }
    /* no bytes at all is a Body with no member: not a referral */
    assert_rc(refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL, buf, 0, &b),
              REFEX_E_TYPE_MISMATCH);
    assert_null(b);
    free(buf);
}

/* protobuf-c does not check UTF-8: unpack does, in any string at any depth (the summary, a
 * nested subject reference, a repeated parent's name); a valid body still unpacks. */
static void test_unpack_refuses_invalid_utf8(void **state)
{
    (void)state;
    Refex__V1__Body body = REFEX__V1__BODY__INIT;
    Refex__V1__Referral ref = REFEX__V1__REFERRAL__INIT;
    Refex__V1__Subject subj = REFEX__V1__SUBJECT__INIT;
    Refex__V1__Person parent = REFEX__V1__PERSON__INIT, *parents[] = {&parent};
    body.kind_case = REFEX__V1__BODY__KIND_REFERRAL;
    body.referral = &ref;
    ref.subject = &subj;
    ref.n_parents = 1;
    ref.parents = parents;
    char bad[] = {'o', 'k', (char)0xff, (char)0xfe, 0};
    char *good = "Synthetic: Ada Testperson";
    char **fields[] = {&ref.summary, &subj.reference, &parent.name};
    for (size_t i = 0; i <= sizeof fields / sizeof fields[0]; i++) {
        ref.summary = subj.reference = parent.name = good;
        if (i < sizeof fields / sizeof fields[0])
            *fields[i] = bad;
        uint8_t *buf = NULL;
        size_t len = 0;
        Refex__V1__Body *b = NULL;
        assert_ok(refex_pb_pack(&body.base, &buf, &len));
        int rc = refex_body_unpack(REFEX__V1__MESSAGE_TYPE__REFERRAL, buf, len, &b);
        assert_rc(rc, i < sizeof fields / sizeof fields[0] ? REFEX_E_MALFORMED : REFEX_OK);
        if (b)
            refex__v1__body__free_unpacked(b, NULL);
        free(buf);
    }
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_parse),
        cmocka_unit_test(test_type_parse_rejects),
        cmocka_unit_test(test_type_name),
        cmocka_unit_test(test_referral_pack_unpack),
        cmocka_unit_test(test_referral_meta),
        cmocka_unit_test(test_referral_to_json_round_trip),
        cmocka_unit_test(test_minimal_referral_meta),
        cmocka_unit_test(test_empty_object),
        cmocka_unit_test(test_case_update),
        cmocka_unit_test(test_decision_and_request_case_ref),
        cmocka_unit_test(test_pack_unknown_field),
        cmocka_unit_test(test_pack_wrong_values),
        cmocka_unit_test(test_pack_non_object),
        cmocka_unit_test(test_pack_unknown_type),
        cmocka_unit_test(test_unpack_refuses_invalid_utf8),
        cmocka_unit_test(test_unpack_garbage),
        cmocka_unit_test(test_unpack_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
