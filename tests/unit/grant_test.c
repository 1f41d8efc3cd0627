/* Tests for case grants: a grant verifies only if signed by an active social-care agency
 * naming a member from the directory; any change to its bytes breaks it; and
 * refex_grant_allows honours revocation, expiry and update types. Subscriptions likewise
 * verify only as signed by the subscriber, and say which cases and types it wants. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "grant.h"
#include "util.h"

static refex_keys *lead, *member, *other;
static refex_directory *dir;

static int add(refex_directory *d, const refex_keys *k)
{
    refex_agency a;
    refex_agency_from_pubkeys(&a, &k->pub, NULL);
    return refex_directory_add(d, &a, 0);
}

static int setup(void **state)
{
    (void)state;
    if (refex_keys_new("social-care", "social-care", &lead) != REFEX_OK ||
        refex_keys_new("midwifery", "midwifery", &member) != REFEX_OK ||
        refex_keys_new("police", "police", &other) != REFEX_OK ||
        refex_directory_new(&dir) != REFEX_OK || add(dir, lead) != REFEX_OK ||
        add(dir, member) != REFEX_OK || add(dir, other) != REFEX_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    refex_keys_destroy(&lead);
    refex_keys_destroy(&member);
    refex_keys_destroy(&other);
    refex_directory_destroy(&dir);
    return 0;
}

static refex_grant sample(void)
{
    refex_grant g;
    memset(&g, 0, sizeof g);
    strcpy(g.case_ref, "C-EAST-0001");
    strcpy(g.lead, "social-care");
    strcpy(g.member, "midwifery");
    g.types[0] = REFEX__V1__CASE_UPDATE_TYPE__CASE_UPDATE_BIRTH;
    g.n_types = 1;
    g.issued_at_ms = 1700000000000;
    g.serial = 7;
    return g;
}

static int verify_bytes(const uint8_t *buf, size_t len, refex_grant *out)
{
    return refex_grant_verify_packed(buf, len, dir, out);
}

static void test_round_trip(void **state)
{
    (void)state;
    refex_grant g = sample(), got;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(refex_grant_sign(&g, lead->sk->sign_sk, &buf, &len));
    assert_ok(verify_bytes(buf, len, &got));
    assert_string_equal(got.case_ref, "C-EAST-0001");
    assert_string_equal(got.lead, "social-care");
    assert_string_equal(got.member, "midwifery");
    assert_int_equal(got.n_types, 1);
    assert_int_equal(got.types[0], REFEX__V1__CASE_UPDATE_TYPE__CASE_UPDATE_BIRTH);
    assert_int_equal(got.serial, 7);
    free(buf);
}

static void test_only_social_care_leads(void **state)
{
    (void)state;
    refex_grant g = sample(), got;
    uint8_t *buf = NULL;
    size_t len = 0;
    strcpy(g.lead, "police");
    assert_ok(refex_grant_sign(&g, other->sk->sign_sk, &buf, &len));
    assert_rc(verify_bytes(buf, len, &got), REFEX_E_NOT_MEMBER);
    free(buf);
}

static void test_signed_by_another_key(void **state)
{
    (void)state;
    refex_grant g = sample(), got;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(refex_grant_sign(&g, member->sk->sign_sk, &buf, &len)); /* claims social-care */
    assert_rc(verify_bytes(buf, len, &got), REFEX_E_BAD_SIGNATURE);
    free(buf);
}

static void test_any_changed_byte_breaks_it(void **state)
{
    (void)state;
    refex_grant g = sample(), got;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(refex_grant_sign(&g, lead->sk->sign_sk, &buf, &len));
    for (size_t i = 0; i < len; i++) {
        buf[i] ^= 0x01;
        if (verify_bytes(buf, len, &got) == REFEX_OK)
            fail_msg("a grant with byte %zu changed still verifies", i);
        buf[i] ^= 0x01;
    }
    for (size_t cut = 0; cut < len; cut++)
        assert_int_not_equal(verify_bytes(buf, cut, &got), REFEX_OK);
    free(buf);
}

static void test_bad_fields(void **state)
{
    (void)state;
    refex_grant g = sample(), got;
    uint8_t *buf = NULL;
    size_t len = 0;
    strcpy(g.case_ref, "Jane Smith");
    assert_rc(refex_grant_sign(&g, lead->sk->sign_sk, &buf, &len), REFEX_E_INVAL);
    g = sample();
    g.case_ref[0] = 0;
    assert_rc(refex_grant_sign(&g, lead->sk->sign_sk, &buf, &len), REFEX_E_INVAL);
    g = sample();
    strcpy(g.member, "nobody");
    assert_ok(refex_grant_sign(&g, lead->sk->sign_sk, &buf, &len));
    assert_rc(verify_bytes(buf, len, &got), REFEX_E_UNKNOWN_AGENCY);
    free(buf);
    assert_rc(verify_bytes((const uint8_t *)"garbage", 7, &got), REFEX_E_MALFORMED);
}

static void test_allows(void **state)
{
    (void)state;
    refex_grant g = sample();
    int birth = REFEX__V1__CASE_UPDATE_TYPE__CASE_UPDATE_BIRTH;
    int placement = REFEX__V1__CASE_UPDATE_TYPE__CASE_UPDATE_PLACEMENT;
    assert_true(refex_grant_allows(&g, 1000, birth));
    assert_false(refex_grant_allows(&g, 1000, placement));
    assert_true(refex_grant_allows(&g, 1000, 0));
    g.n_types = 0;
    assert_true(refex_grant_allows(&g, 1000, placement));
    g.valid_until_ms = 2000;
    assert_true(refex_grant_allows(&g, 1999, birth));
    assert_false(refex_grant_allows(&g, 2000, birth));
    g.valid_until_ms = 0;
    g.revoked = 1;
    assert_false(refex_grant_allows(&g, 1000, birth));
}

static refex_subscription sample_sub(void)
{
    refex_subscription s;
    memset(&s, 0, sizeof s);
    strcpy(s.agency, "midwifery");
    strcpy(s.case_ref, "C-EAST-0001");
    s.types[0] = REFEX__V1__CASE_UPDATE_TYPE__CASE_UPDATE_BIRTH;
    s.n_types = 1;
    s.issued_at_ms = 1700000000000;
    s.serial = 3;
    return s;
}

static void test_subscription_round_trip_and_tamper(void **state)
{
    (void)state;
    refex_subscription s = sample_sub(), got;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(refex_subscription_sign(&s, member->sk->sign_sk, &buf, &len));
    assert_ok(refex_subscription_verify_packed(buf, len, dir, &got));
    assert_string_equal(got.agency, "midwifery");
    assert_string_equal(got.case_ref, "C-EAST-0001");
    assert_int_equal(got.n_types, 1);
    assert_int_equal(got.serial, 3);
    for (size_t i = 0; i < len; i++) {
        buf[i] ^= 0x01;
        if (refex_subscription_verify_packed(buf, len, dir, &got) == REFEX_OK)
            fail_msg("a subscription with byte %zu changed still verifies", i);
        buf[i] ^= 0x01;
    }
    free(buf);
    /* Signed by someone else in the member's name. */
    assert_ok(refex_subscription_sign(&s, other->sk->sign_sk, &buf, &len));
    assert_rc(refex_subscription_verify_packed(buf, len, dir, &got), REFEX_E_BAD_SIGNATURE);
    free(buf);
    strcpy(s.agency, "nobody");
    assert_ok(refex_subscription_sign(&s, other->sk->sign_sk, &buf, &len));
    assert_rc(refex_subscription_verify_packed(buf, len, dir, &got), REFEX_E_UNKNOWN_AGENCY);
    free(buf);
    s = sample_sub();
    strcpy(s.case_ref, "Jane Smith");
    assert_rc(refex_subscription_sign(&s, member->sk->sign_sk, &buf, &len), REFEX_E_INVAL);
    assert_rc(refex_subscription_verify_packed((const uint8_t *)"garbage", 7, dir, &got),
              REFEX_E_MALFORMED);
}

static void test_subscription_wants(void **state)
{
    (void)state;
    refex_subscription s = sample_sub();
    int birth = REFEX__V1__CASE_UPDATE_TYPE__CASE_UPDATE_BIRTH;
    int placement = REFEX__V1__CASE_UPDATE_TYPE__CASE_UPDATE_PLACEMENT;
    assert_true(refex_subscription_wants(&s, "C-EAST-0001", birth));
    assert_false(refex_subscription_wants(&s, "C-EAST-0001", placement));
    assert_false(refex_subscription_wants(&s, "C-EAST-0002", birth));
    s.case_ref[0] = 0; /* every case */
    assert_true(refex_subscription_wants(&s, "C-EAST-0002", birth));
    s.n_types = 0;
    assert_true(refex_subscription_wants(&s, "C-EAST-0002", placement));
    s.unsubscribed = 1;
    assert_false(refex_subscription_wants(&s, "C-EAST-0002", placement));
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_only_social_care_leads),
        cmocka_unit_test(test_signed_by_another_key),
        cmocka_unit_test(test_any_changed_byte_breaks_it),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_allows),
        cmocka_unit_test(test_subscription_round_trip_and_tamper),
        cmocka_unit_test(test_subscription_wants),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
