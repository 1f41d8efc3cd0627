/* Tests for lib/error.c: every code in REFEX_ERRNO_MAP has a name and a message, codes are
 * unique, and unknown codes still give non-NULL text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "refex/error.h"
#include "util.h"

typedef struct {
    const char *name;
    int num;
    const char *msg;
} err_row;

static const err_row ROWS[] = {
#define ROW(name, num, msg) {#name, num, msg},
    REFEX_ERRNO_MAP(ROW)
#undef ROW
};

#define N_ROWS (sizeof ROWS / sizeof ROWS[0])

static void test_every_code_has_message(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ROWS; i++) {
        const char *s = refex_strerror(ROWS[i].num);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        assert_string_equal(s, ROWS[i].msg);
        assert_string_not_equal(s, "unknown error");
    }
}

static void test_every_code_has_name(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ROWS; i++) {
        const char *n = refex_errname(ROWS[i].num);
        assert_non_null(n);
        assert_string_equal(n, ROWS[i].name);
        if (ROWS[i].num == 0)
            assert_string_equal(n, "OK");
        else
            assert_memory_equal(n, "E_", 2);
        assert_string_not_equal(n, "E_UNKNOWN");
    }
}

static void test_ok_is_zero(void **state)
{
    (void)state;
    assert_int_equal(REFEX_OK, 0);
    assert_string_equal(refex_errname(REFEX_OK), "OK");
    assert_string_equal(refex_strerror(REFEX_OK), "success");
}

static void test_codes_and_names_unique(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ROWS; i++)
        for (size_t j = i + 1; j < N_ROWS; j++) {
            if (ROWS[i].num == ROWS[j].num)
                fail_msg("code %d used by %s and %s", ROWS[i].num, ROWS[i].name, ROWS[j].name);
            assert_string_not_equal(ROWS[i].name, ROWS[j].name);
        }
}

static void test_unknown_codes(void **state)
{
    (void)state;
    const int unknown[] = {-1, -2, (int)N_ROWS, 9999, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        assert_non_null(refex_strerror(unknown[i]));
        assert_non_null(refex_errname(unknown[i]));
        assert_string_equal(refex_strerror(unknown[i]), "unknown error");
        assert_string_equal(refex_errname(unknown[i]), "E_UNKNOWN");
    }
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_message),
        cmocka_unit_test(test_every_code_has_name),
        cmocka_unit_test(test_ok_is_zero),
        cmocka_unit_test(test_codes_and_names_unique),
        cmocka_unit_test(test_unknown_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
