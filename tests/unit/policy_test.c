/* Tests for lib/policy.c: rules allow exactly what they say and a present policy denies the
 * rest; a directory without one allows everything and leads with social-care; the policy
 * round-trips through a signed directory file and is covered by its signature; an invalid
 * rule or lead role in a file is refused at load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <stdlib.h>
#include <string.h>

#include "refex.pb-c.h"
#include "codec.h"
#include "directory.h"
#include "keys.h"
#include "policy.h"
#include "util.h"

enum {
    REF = REFEX__V1__MESSAGE_TYPE__REFERRAL,
    DEC = REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION,
    REQ = REFEX__V1__MESSAGE_TYPE__INFORMATION_REQUEST,
    UPD = REFEX__V1__MESSAGE_TYPE__CASE_UPDATE,
};

static refex_keys *anchor, *mw, *sc, *sm;
static char tmpdir[4096];

static int group_setup(void **state)
{
    (void)state;
    if (refex_keys_new("operator", "trust-anchor", &anchor) != REFEX_OK ||
        refex_keys_new("mw-east", "midwifery", &mw) != REFEX_OK ||
        refex_keys_new("sc-east", "social-care", &sc) != REFEX_OK ||
        refex_keys_new("sm-east", "substance-misuse", &sm) != REFEX_OK)
        return -1;
    testing_tmpdir(tmpdir, sizeof tmpdir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    refex_keys_destroy(&anchor);
    refex_keys_destroy(&mw);
    refex_keys_destroy(&sc);
    refex_keys_destroy(&sm);
    testing_rmtree(tmpdir);
    return 0;
}

static refex_directory *make_dir(void)
{
    refex_directory *d = NULL;
    refex_keys *k[] = {mw, sc, sm};
    assert_ok(refex_directory_new(&d));
    for (size_t i = 0; i < 3; i++) {
        refex_agency a;
        refex_agency_from_pubkeys(&a, &k[i]->pub, NULL);
        assert_ok(refex_directory_add(d, &a, 0));
    }
    return d;
}

static void test_no_policy_allows_all(void **state)
{
    (void)state;
    char detail[256];
    refex_directory *d = make_dir();
    assert_null(refex_directory_policy(d));
    assert_true(refex_policy_allows(d, "substance-misuse", REF, "midwifery"));
    assert_string_equal(refex_policy_lead_role(d), "social-care");
    assert_ok(refex_policy_check(d, "sm-east", REF, "mw-east", detail, sizeof detail));
    assert_int_equal(refex_policy_check(d, "sm-east", REF, "nobody", detail, sizeof detail),
                     REFEX_E_UNKNOWN_AGENCY);
    refex_directory_destroy(&d);
}

static void test_rules_deny_by_default(void **state)
{
    (void)state;
    char detail[256];
    refex_directory *d = make_dir();
    refex_policy *p = NULL;
    assert_ok(refex_directory_policy_edit(d, &p));
    /* An empty policy refuses everything. */
    assert_false(refex_policy_allows(d, "midwifery", REF, "social-care"));
    assert_ok(refex_policy_allow(p, "midwifery", REF, "social-care"));
    assert_int_equal(refex_policy_allow(p, "midwifery", REF, "social-care"), REFEX_E_EXISTS);
    assert_true(refex_policy_allows(d, "midwifery", REF, "social-care"));
    /* Direction, type and roles all count. */
    assert_false(refex_policy_allows(d, "social-care", REF, "midwifery"));
    assert_false(refex_policy_allows(d, "midwifery", DEC, "social-care"));
    assert_false(refex_policy_allows(d, "substance-misuse", REF, "social-care"));
    assert_int_equal(refex_policy_check(d, "sm-east", REF, "mw-east", detail, sizeof detail),
                     REFEX_E_POLICY);
    assert_non_null(strstr(detail, "substance-misuse to send referral to midwifery"));
    assert_ok(refex_policy_check(d, "mw-east", REF, "sc-east", detail, sizeof detail));
    assert_ok(refex_policy_deny(p, "midwifery", REF, "social-care"));
    assert_int_equal(refex_policy_deny(p, "midwifery", REF, "social-care"), REFEX_E_NOTFOUND);
    assert_false(refex_policy_allows(d, "midwifery", REF, "social-care"));
    refex_directory_destroy(&d);
}

static void test_bad_rules_refused(void **state)
{
    (void)state;
    refex_policy *p = NULL;
    assert_ok(refex_policy_new(&p));
    assert_int_equal(refex_policy_allow(p, "Mid Wifery", REF, "social-care"), REFEX_E_INVAL);
    assert_int_equal(refex_policy_allow(p, "midwifery", 0, "social-care"), REFEX_E_INVAL);
    assert_int_equal(refex_policy_allow(p, "midwifery", 6, "social-care"), REFEX_E_INVAL);
    assert_int_equal(refex_policy_allow(p, "midwifery", REF, ""), REFEX_E_INVAL);
    assert_int_equal(refex_policy_set_lead(p, "Not A Role"), REFEX_E_INVAL);
    assert_int_equal(refex_policy_count(p), 0);
    refex_policy_destroy(&p);
    assert_null(p);
}

static void test_lead_role(void **state)
{
    (void)state;
    refex_directory *d = make_dir();
    refex_policy *p = NULL;
    assert_ok(refex_directory_policy_edit(d, &p));
    assert_string_equal(refex_policy_lead_role(d), "social-care"); /* "" = default */
    assert_ok(refex_policy_set_lead(p, "early-help"));
    assert_string_equal(refex_policy_lead_role(d), "early-help");
    assert_ok(refex_policy_set_lead(p, ""));
    assert_string_equal(refex_policy_lead_role(d), "social-care");
    refex_directory_destroy(&d);
}

static void test_round_trip_signed(void **state)
{
    (void)state;
    char path[4200], err[512];
    snprintf(path, sizeof path, "%s/policy.rdir", tmpdir);
    refex_directory *d = make_dir(), *back = NULL;
    refex_policy *p = NULL;
    assert_ok(refex_directory_sign(d, anchor->sk->sign_sk));
    assert_true(refex_directory_is_signed(d));
    assert_ok(refex_directory_policy_edit(d, &p));
    assert_false(refex_directory_is_signed(d)); /* an edit needs a new signature */
    assert_ok(refex_policy_allow(p, "midwifery", REF, "social-care"));
    assert_ok(refex_policy_allow(p, "social-care", UPD, "midwifery"));
    assert_ok(refex_policy_allow(p, "social-care", REQ, "substance-misuse"));
    assert_ok(refex_policy_set_lead(p, "social-care"));
    assert_ok(refex_directory_sign(d, anchor->sk->sign_sk));
    assert_ok(refex_directory_save(d, path));
    assert_ok(refex_directory_load(path, anchor->pub.sign_pk, &back, err, sizeof err));
    const refex_policy *q = refex_directory_policy(back);
    assert_non_null(q);
    assert_int_equal(refex_policy_count(q), 3);
    assert_string_equal(refex_policy_at(q, 1)->sender_role, "social-care");
    assert_int_equal(refex_policy_at(q, 1)->type, UPD);
    assert_string_equal(refex_policy_at(q, 1)->recipient_role, "midwifery");
    assert_null(refex_policy_at(q, 3));
    assert_string_equal(refex_policy_lead(q), "social-care");
    assert_true(refex_policy_allows(back, "social-care", REQ, "substance-misuse"));
    assert_false(refex_policy_allows(back, "substance-misuse", REQ, "social-care"));
    refex_directory_destroy(&back);
    refex_directory_destroy(&d);
}

/* An empty policy is still a policy: it survives the file and denies everything. */
static void test_empty_policy_survives(void **state)
{
    (void)state;
    char path[4200], err[512];
    snprintf(path, sizeof path, "%s/empty.rdir", tmpdir);
    refex_directory *d = make_dir(), *back = NULL;
    refex_policy *p = NULL;
    assert_ok(refex_directory_policy_edit(d, &p));
    assert_ok(refex_directory_sign(d, anchor->sk->sign_sk));
    assert_ok(refex_directory_save(d, path));
    assert_ok(refex_directory_load(path, anchor->pub.sign_pk, &back, err, sizeof err));
    assert_non_null(refex_directory_policy(back));
    assert_false(refex_policy_allows(back, "midwifery", REF, "social-care"));
    refex_directory_destroy(&back);
    refex_directory_destroy(&d);
}

/* A signed file whose policy carries `rule` (or lead role `lead`). */
static void write_with_policy(const char *path, const Refex__V1__PolicyRule *rule, const char *lead)
{
    Refex__V1__Directory dir = REFEX__V1__DIRECTORY__INIT;
    Refex__V1__Policy pol = REFEX__V1__POLICY__INIT;
    Refex__V1__PolicyRule *rules[] = {(Refex__V1__PolicyRule *)rule};
    Refex__V1__SignedDirectory sd = REFEX__V1__SIGNED_DIRECTORY__INIT;
    uint8_t *bytes = NULL, *file = NULL, sig[64];
    size_t len = 0, flen = 0;
    pol.n_rules = rule ? 1 : 0;
    pol.rules = rules;
    pol.lead_role = (char *)lead;
    dir.policy = &pol;
    assert_ok(refex_pb_pack(&dir.base, &bytes, &len));
    assert_ok(refex_sign_domain(REFEX_DIRECTORY_CONTEXT, bytes, len, anchor->sk->sign_sk, sig));
    sd.directory = (ProtobufCBinaryData){len, bytes};
    sd.signature = (ProtobufCBinaryData){64, sig};
    assert_ok(refex_pb_pack(&sd.base, &file, &flen));
    assert_ok(refex_file_write(path, file, flen, 0644));
    free(bytes);
    free(file);
}

static void test_invalid_policy_in_file(void **state)
{
    (void)state;
    char path[4200], err[512];
    refex_directory *d = NULL;
    snprintf(path, sizeof path, "%s/bad.rdir", tmpdir);
    Refex__V1__PolicyRule r = REFEX__V1__POLICY_RULE__INIT;
    r.sender_role = "midwifery";
    r.recipient_role = "social-care";
    r.type = (Refex__V1__MessageType)99;
    write_with_policy(path, &r, "");
    assert_int_equal(refex_directory_load(path, anchor->pub.sign_pk, &d, err, sizeof err),
                     REFEX_E_DIRECTORY);
    assert_non_null(strstr(err, "policy rule 0 is invalid"));
    r.type = REFEX__V1__MESSAGE_TYPE__REFERRAL;
    r.recipient_role = "";
    write_with_policy(path, &r, "");
    assert_int_equal(refex_directory_load(path, anchor->pub.sign_pk, &d, err, sizeof err),
                     REFEX_E_DIRECTORY);
    write_with_policy(path, NULL, "Social Care");
    assert_int_equal(refex_directory_load(path, anchor->pub.sign_pk, &d, err, sizeof err),
                     REFEX_E_DIRECTORY);
    assert_non_null(strstr(err, "lead role"));
    assert_null(d);
    write_with_policy(path, NULL, "early-help");
    assert_ok(refex_directory_load(path, anchor->pub.sign_pk, &d, err, sizeof err));
    assert_string_equal(refex_policy_lead_role(d), "early-help");
    refex_directory_destroy(&d);
}

static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(refex_policy_type_name(REF), "referral");
    assert_string_equal(refex_policy_type_name(DEC), "referral-decision");
    assert_string_equal(refex_policy_type_name(UPD), "case-update");
    assert_string_equal(refex_policy_type_name(0), "?");
    assert_string_equal(refex_policy_type_name(42), "?");
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_policy_allows_all),   cmocka_unit_test(test_rules_deny_by_default),
        cmocka_unit_test(test_bad_rules_refused),      cmocka_unit_test(test_lead_role),
        cmocka_unit_test(test_round_trip_signed),      cmocka_unit_test(test_empty_policy_survives),
        cmocka_unit_test(test_invalid_policy_in_file), cmocka_unit_test(test_type_names),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
