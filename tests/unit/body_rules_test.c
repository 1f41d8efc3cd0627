/* Tests for lib/body_rules.c: a complete body of each type passes; an empty one is refused
 * naming every required field path; UNSPECIFIED enums, blank strings, a referral's
 * "not applicable" Article 9 condition and the conditional fields of decisions and
 * responses; a detail too small for the list is cut and says so. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "body.h"
#include "body_rules.h"

#define LB                                                                                         \
    "\"lawful_basis\": {\"article6\": \"ARTICLE6_PUBLIC_TASK\", \"article9\": "                    \
    "\"ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST\"}, \"purpose\": \"PURPOSE_SAFEGUARDING\""

static const struct {
    int type;
    const char *complete, *empty_missing;
} TYPES[] = {
    {REFEX__V1__MESSAGE_TYPE__REFERRAL,
     "{\"subject\": {\"kind\": \"SUBJECT_UNBORN\", \"reference\": \"UB-1\"},"
     " \"referrer\": {\"reference\": \"MW-1\"}, \"consent\": \"CONSENT_GIVEN\","
     " \"urgency\": \"URGENCY_ROUTINE\", " LB "}",
     "missing required fields: subject.reference, subject.kind, referrer.reference, "
     "lawful_basis.article6, lawful_basis.article9, consent, purpose, urgency"},
    {REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION,
     "{\"referral_message_id\": \"00ff\", \"decision\": \"DECISION_ACCEPTED\","
     " \"case_ref\": \"C-1\", \"decided_by\": {\"reference\": \"SW-1\"}, " LB "}",
     "missing required fields: referral_message_id, decision, decided_by.reference, "
     "lawful_basis.article6, lawful_basis.article9, purpose"},
    {REFEX__V1__MESSAGE_TYPE__INFORMATION_REQUEST,
     "{\"request_id\": \"RQ-1\", \"case_ref\": \"C-1\", \"question\": \"q?\","
     " \"requested_by\": {\"reference\": \"SW-1\"}, " LB "}",
     "missing required fields: request_id, case_ref, question, requested_by.reference, "
     "lawful_basis.article6, lawful_basis.article9, purpose"},
    {REFEX__V1__MESSAGE_TYPE__INFORMATION_RESPONSE,
     "{\"request_id\": \"RQ-1\", \"answer\": \"a\", \"consent\": \"CONSENT_NOT_REQUIRED\","
     " \"responded_by\": {\"reference\": \"SM-1\"}, " LB "}",
     "missing required fields: request_id, answer, responded_by.reference, "
     "lawful_basis.article6, lawful_basis.article9, consent, purpose"},
    {REFEX__V1__MESSAGE_TYPE__CASE_UPDATE,
     "{\"case_ref\": \"C-1\", \"update_type\": \"CASE_UPDATE_BIRTH\", \"summary\": \"born\","
     " \"published_by\": {\"reference\": \"SW-1\"}, " LB "}",
     "missing required fields: case_ref, update_type, summary, published_by.reference, "
     "lawful_basis.article6, lawful_basis.article9, purpose"},
};

/* The text as a body of type, checked: the code, and the detail into detail. */
static int check(int type, const char *text, char *detail, size_t dlen)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[256];
    Refex__V1__Body *b = NULL;
    if (!j)
        fail_msg("json_loads: %s: %s", text, jerr.text);
    assert_ok(refex_body_pack_json(type, j, &buf, &len, err, sizeof err));
    assert_ok(refex_body_unpack(type, buf, len, &b));
    detail[0] = 0;
    int rc = refex_body_check(b, detail, dlen);
    refex__v1__body__free_unpacked(b, NULL);
    free(buf);
    json_decref(j);
    return rc;
}

static void test_complete_bodies_pass(void **state)
{
    (void)state;
    char detail[512];
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
        if (check(TYPES[i].type, TYPES[i].complete, detail, sizeof detail) != REFEX_OK)
            fail_msg("%s: %s", refex_message_type_name(TYPES[i].type), detail);
}

static void test_empty_bodies_name_every_missing_field(void **state)
{
    (void)state;
    char detail[512];
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++) {
        assert_rc(check(TYPES[i].type, "{}", detail, sizeof detail), REFEX_E_INVAL);
        assert_string_equal(detail, TYPES[i].empty_missing);
    }
}

static void test_unspecified_and_blank_count_as_missing(void **state)
{
    (void)state;
    char detail[512];
    assert_rc(check(REFEX__V1__MESSAGE_TYPE__REFERRAL,
                    "{\"subject\": {\"kind\": \"SUBJECT_UNSPECIFIED\", \"reference\": \"  \"},"
                    " \"referrer\": {\"reference\": \"MW-1\"}, \"consent\": \"CONSENT_GIVEN\","
                    " \"urgency\": \"URGENCY_UNSPECIFIED\", " LB "}",
                    detail, sizeof detail),
              REFEX_E_INVAL);
    assert_string_equal(detail, "missing required fields: subject.reference, subject.kind, "
                                "urgency");
}

static void test_referral_needs_an_article9_condition(void **state)
{
    (void)state;
    char detail[512];
    const char *body = "{\"subject\": {\"kind\": \"SUBJECT_CHILD\", \"reference\": \"C-1\"},"
                       " \"referrer\": {\"reference\": \"MW-1\"}, \"consent\": \"CONSENT_GIVEN\","
                       " \"urgency\": \"URGENCY_ROUTINE\", \"purpose\": \"PURPOSE_SAFEGUARDING\","
                       " \"lawful_basis\": {\"article6\": \"ARTICLE6_PUBLIC_TASK\","
                       " \"article9\": \"ARTICLE9_NOT_APPLICABLE\"}}";
    assert_rc(check(REFEX__V1__MESSAGE_TYPE__REFERRAL, body, detail, sizeof detail), REFEX_E_INVAL);
    assert_string_equal(detail, "missing required fields: lawful_basis.article9");
    /* Another type may say it carries no special-category data. */
    assert_ok(check(REFEX__V1__MESSAGE_TYPE__CASE_UPDATE,
                    "{\"case_ref\": \"C-1\", \"update_type\": \"CASE_UPDATE_OTHER\","
                    " \"summary\": \"s\", \"published_by\": {\"reference\": \"SW-1\"},"
                    " \"purpose\": \"PURPOSE_CASE_MANAGEMENT\", \"lawful_basis\":"
                    " {\"article6\": \"ARTICLE6_PUBLIC_TASK\","
                    " \"article9\": \"ARTICLE9_NOT_APPLICABLE\"}}",
                    detail, sizeof detail));
}

static void test_conditional_fields(void **state)
{
    (void)state;
    char detail[512];
    /* A decision other than "accepted" opens no case. */
    assert_ok(check(REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION,
                    "{\"referral_message_id\": \"00ff\", \"decision\": \"DECISION_DECLINED\","
                    " \"decided_by\": {\"reference\": \"SW-1\"}, " LB "}",
                    detail, sizeof detail));
    assert_rc(check(REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION,
                    "{\"referral_message_id\": \"00ff\", \"decision\": \"DECISION_ACCEPTED\","
                    " \"decided_by\": {\"reference\": \"SW-1\"}, " LB "}",
                    detail, sizeof detail),
              REFEX_E_INVAL);
    assert_string_equal(detail, "missing required fields: case_ref");
    /* A declined request gives its reason instead of an answer. */
    const char *declined =
        "{\"request_id\": \"RQ-1\", \"declined\": true, \"consent\": \"CONSENT_REFUSED\","
        " \"responded_by\": {\"reference\": \"SM-1\"}, " LB "}";
    assert_rc(check(REFEX__V1__MESSAGE_TYPE__INFORMATION_RESPONSE, declined, detail, sizeof detail),
              REFEX_E_INVAL);
    assert_string_equal(detail, "missing required fields: decline_reason");
}

static void test_short_detail_is_cut_visibly(void **state)
{
    (void)state;
    char detail[40];
    assert_rc(check(REFEX__V1__MESSAGE_TYPE__REFERRAL, "{}", detail, sizeof detail), REFEX_E_INVAL);
    assert_int_equal(strlen(detail), sizeof detail - 1);
    assert_string_equal(detail + sizeof detail - 4, "...");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_complete_bodies_pass),
        cmocka_unit_test(test_empty_bodies_name_every_missing_field),
        cmocka_unit_test(test_unspecified_and_blank_count_as_missing),
        cmocka_unit_test(test_referral_needs_an_article9_condition),
        cmocka_unit_test(test_conditional_fields),
        cmocka_unit_test(test_short_detail_is_cut_visibly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
