/* Tests for lib/sha256.c: known answers from FIPS 180-2, and the same digest as libsodium's
 * SHA-256 at every length around the point where the large-input path takes over. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"
#include "util.h"

static void expect_hex(const uint8_t h[32], const char *want)
{
    char hex[65];
    refex_hex_encode(hex, h, 32);
    assert_string_equal(hex, want);
}

/* FIPS 180-2 appendix B.1 ("abc", the short path) and B.3 (a million 'a', the long one). */
static void test_known_answers(void **state)
{
    (void)state;
    uint8_t h[32];
    refex_sha256(h, "abc", 3);
    expect_hex(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    char *a = malloc(1000000);
    assert_non_null(a);
    memset(a, 'a', 1000000);
    refex_sha256(h, a, 1000000);
    expect_hex(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

static void test_same_as_libsodium(void **state)
{
    (void)state;
    static const size_t lens[] = {0, 1, 55, 56, 64, 4095, 4096, 4097, 65536, (1u << 20) + 3};
    uint8_t *buf = malloc((1u << 20) + 3), ours[32], theirs[32];
    assert_non_null(buf);
    randombytes_buf(buf, (1u << 20) + 3);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        refex_sha256(ours, buf, lens[i]);
        crypto_hash_sha256(theirs, buf, lens[i]);
        assert_memory_equal(ours, theirs, 32);
    }
    free(buf);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_same_as_libsodium),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
