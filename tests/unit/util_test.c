/* Tests for lib/util.c: hex coding and its bad input, whole-file I/O with exact modes and
 * atomic replacement, private-file checks, mkdir -p, random ids and clocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>

#include "testing.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "util.h"

/* 2020-01-01T00:00:00Z and 2100-01-01T00:00:00Z in Unix milliseconds. */
#define EPOCH_2020_MS INT64_C(1577836800000)
#define EPOCH_2100_MS INT64_C(4102444800000)

typedef struct {
    char dir[512];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    testing_tmpdir(f->dir, sizeof f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    testing_rmtree(f->dir);
    free(f);
    return 0;
}

static void path_in(const fixture *f, const char *name, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/%s", f->dir, name);
    assert_true(n > 0 && (size_t)n < len);
}

static unsigned file_mode(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (unsigned)(st.st_mode & 07777);
}

/* Number of directory entries other than . and .. */
static size_t dir_entries(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void write_raw(const char *path, const char *content, unsigned mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    size_t len = strlen(content);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* ---- hex ---- */

static void test_hex_round_trip(void **state)
{
    (void)state;
    uint8_t in[256], back[256];
    char hex[2 * sizeof in + 1];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)i;
    refex_hex_encode(hex, in, sizeof in);
    assert_int_equal(strlen(hex), 2 * sizeof in);
    assert_memory_equal(hex, "000102", 6);
    assert_string_equal(hex + 2 * 250, "fafbfcfdfeff");
    assert_ok(refex_hex_decode(back, sizeof back, hex));
    assert_memory_equal(in, back, sizeof in);
}

static void test_hex_known_values(void **state)
{
    (void)state;
    const uint8_t want[4] = {0xde, 0xad, 0xbe, 0xef};
    uint8_t got[4];
    char hex[9];
    refex_hex_encode(hex, want, sizeof want);
    assert_string_equal(hex, "deadbeef");
    assert_ok(refex_hex_decode(got, sizeof got, "deadbeef"));
    assert_memory_equal(got, want, sizeof want);
    memset(got, 0, sizeof got);
    assert_ok(refex_hex_decode(got, sizeof got, "DEADBEEF"));
    assert_memory_equal(got, want, sizeof want);
}

static void test_hex_decode_rejects(void **state)
{
    (void)state;
    uint8_t out[4];
    /* wrong length: too short, too long */
    assert_rc(refex_hex_decode(out, 4, "deadbe"), REFEX_E_INVAL);
    assert_rc(refex_hex_decode(out, 4, "deadbeef00"), REFEX_E_INVAL);
    assert_rc(refex_hex_decode(out, 4, ""), REFEX_E_INVAL);
    /* odd length */
    assert_rc(refex_hex_decode(out, 4, "deadbee"), REFEX_E_INVAL);
    assert_rc(refex_hex_decode(out, 2, "abc"), REFEX_E_INVAL);
    /* non-hex characters, at the start, middle and end */
    assert_rc(refex_hex_decode(out, 4, "zeadbeef"), REFEX_E_INVAL);
    assert_rc(refex_hex_decode(out, 4, "dead beef"), REFEX_E_INVAL);
    assert_rc(refex_hex_decode(out, 4, "deadbe f"), REFEX_E_INVAL);
    assert_rc(refex_hex_decode(out, 4, "deadbeeg"), REFEX_E_INVAL);
    assert_rc(refex_hex_decode(out, 4, "de:ad:be"), REFEX_E_INVAL);
    assert_rc(refex_hex_decode(out, 4, "0xdeadbe"), REFEX_E_INVAL);
    /* NULL */
    assert_rc(refex_hex_decode(out, 4, NULL), REFEX_E_INVAL);
}

/* ---- files ---- */

static void test_file_write_exact_mode(void **state)
{
    fixture *f = *state;
    char p600[1024], p644[1024], q600[1024], q644[1024];
    path_in(f, "a600", p600, sizeof p600);
    path_in(f, "a644", p644, sizeof p644);
    path_in(f, "b600", q600, sizeof q600);
    path_in(f, "b644", q644, sizeof q644);

    /* umask 0 must not widen the mode ... */
    mode_t old = umask(0);
    int rc1 = refex_file_write(p600, "secret", 6, 0600);
    int rc2 = refex_file_write(p644, "public", 6, 0644);
    /* ... and a strict umask must not narrow it. */
    umask(077);
    int rc3 = refex_file_write(q600, "secret", 6, 0600);
    int rc4 = refex_file_write(q644, "public", 6, 0644);
    umask(old);

    assert_ok(rc1);
    assert_ok(rc2);
    assert_ok(rc3);
    assert_ok(rc4);
    assert_int_equal(file_mode(p600), 0600);
    assert_int_equal(file_mode(p644), 0644);
    assert_int_equal(file_mode(q600), 0600);
    assert_int_equal(file_mode(q644), 0644);
}

static void test_file_write_replaces_atomically(void **state)
{
    fixture *f = *state;
    char p[1024];
    path_in(f, "data", p, sizeof p);
    assert_ok(refex_file_write(p, "old contents", 12, 0600));

    /* A reader holding the old file keeps seeing the old bytes: the new file is a new
     * inode renamed into place, never the old one truncated and rewritten. */
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    struct stat before, after;
    assert_int_equal(fstat(fd, &before), 0);

    assert_ok(refex_file_write(p, "new", 3, 0644));

    char buf[32] = {0};
    assert_int_equal(read(fd, buf, sizeof buf - 1), 12);
    assert_string_equal(buf, "old contents");
    close(fd);

    assert_int_equal(stat(p, &after), 0);
    assert_true(before.st_ino != after.st_ino);
    assert_int_equal(file_mode(p), 0644);

    uint8_t *got = NULL;
    size_t len = 0;
    assert_ok(refex_file_read(p, 1024, &got, &len));
    assert_int_equal(len, 3);
    assert_string_equal((char *)got, "new");
    free(got);

    /* Only the target is left behind: no temporary file. */
    assert_int_equal(dir_entries(f->dir), 1);
}

static void test_file_write_no_tmp_left(void **state)
{
    fixture *f = *state;
    char p[1024];
    path_in(f, "one", p, sizeof p);
    assert_ok(refex_file_write(p, "x", 1, 0600));
    assert_ok(refex_file_write(p, "", 0, 0600));
    assert_int_equal(dir_entries(f->dir), 1);

    DIR *d = opendir(f->dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp"))
            fail_msg("temporary file left behind: %s", e->d_name);
    closedir(d);
}

static void test_file_write_missing_dir(void **state)
{
    fixture *f = *state;
    char p[1024];
    path_in(f, "no/such/dir/file", p, sizeof p);
    assert_rc(refex_file_write(p, "x", 1, 0600), REFEX_E_IO);
    assert_int_equal(dir_entries(f->dir), 0);
}

static void test_file_read_content(void **state)
{
    fixture *f = *state;
    char p[1024];
    const uint8_t data[] = {'a', 0, 'b', 0xff, '\n'};
    path_in(f, "bin", p, sizeof p);
    assert_ok(refex_file_write(p, data, sizeof data, 0600));

    uint8_t *got = NULL;
    size_t len = 0;
    assert_ok(refex_file_read(p, 1024, &got, &len));
    assert_non_null(got);
    assert_int_equal(len, sizeof data);
    assert_memory_equal(got, data, sizeof data);
    assert_int_equal(got[len], 0); /* NUL terminator after the content */
    free(got);
}

static void test_file_read_empty(void **state)
{
    fixture *f = *state;
    char p[1024];
    path_in(f, "empty", p, sizeof p);
    assert_ok(refex_file_write(p, "", 0, 0600));

    uint8_t *got = NULL;
    size_t len = 99;
    assert_ok(refex_file_read(p, 0, &got, &len));
    assert_non_null(got);
    assert_int_equal(len, 0);
    assert_int_equal(got[0], 0);
    free(got);
}

static void test_file_read_missing(void **state)
{
    fixture *f = *state;
    char p[1024];
    uint8_t *got = NULL;
    size_t len = 0;
    path_in(f, "absent", p, sizeof p);
    assert_rc(refex_file_read(p, 1024, &got, &len), REFEX_E_NOTFOUND);
    assert_null(got);
}

static void test_file_read_too_big(void **state)
{
    fixture *f = *state;
    char p[1024];
    uint8_t *got = NULL;
    size_t len = 0;
    path_in(f, "ten", p, sizeof p);
    assert_ok(refex_file_write(p, "0123456789", 10, 0600));

    assert_rc(refex_file_read(p, 9, &got, &len), REFEX_E_TOO_BIG);
    assert_null(got);
    assert_rc(refex_file_read(p, 0, &got, &len), REFEX_E_TOO_BIG);
    assert_null(got);

    /* exactly max is allowed */
    assert_ok(refex_file_read(p, 10, &got, &len));
    assert_int_equal(len, 10);
    assert_string_equal((char *)got, "0123456789");
    free(got);
}

static void test_file_check_private(void **state)
{
    fixture *f = *state;
    char p[1024];
    path_in(f, "key", p, sizeof p);

    write_raw(p, "k", 0600);
    assert_ok(refex_file_check_private(p));
    write_raw(p, "k", 0400);
    assert_ok(refex_file_check_private(p));

    const unsigned bad[] = {0640, 0604, 0660, 0644, 0602, 0620, 0601, 0610, 0666};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(p, bad[i]), 0);
        assert_int_equal(file_mode(p), bad[i]);
        if (refex_file_check_private(p) != REFEX_E_PERM)
            fail_msg("mode %04o accepted as private", bad[i]);
    }

    path_in(f, "absent", p, sizeof p);
    assert_rc(refex_file_check_private(p), REFEX_E_NOTFOUND);
}

static void test_file_check_private_after_write(void **state)
{
    fixture *f = *state;
    char p[1024];
    path_in(f, "secret", p, sizeof p);
    assert_ok(refex_file_write(p, "s", 1, 0600));
    assert_ok(refex_file_check_private(p));
    assert_ok(refex_file_write(p, "s", 1, 0644));
    assert_rc(refex_file_check_private(p), REFEX_E_PERM);
}

/* ---- directories ---- */

static void test_mkdirs_nested(void **state)
{
    fixture *f = *state;
    char p[1024], q[1024];
    path_in(f, "a/b/c/d", p, sizeof p);

    mode_t old = umask(0);
    int rc = refex_mkdirs(p, 0700);
    umask(old);
    assert_ok(rc);

    const char *levels[] = {"a", "a/b", "a/b/c", "a/b/c/d"};
    for (size_t i = 0; i < 4; i++) {
        struct stat st;
        path_in(f, levels[i], q, sizeof q);
        assert_int_equal(stat(q, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(st.st_mode & 0777, 0700);
    }

    /* Existing directories are fine, also with a trailing slash. */
    assert_ok(refex_mkdirs(p, 0700));
    path_in(f, "a/b/", q, sizeof q);
    assert_ok(refex_mkdirs(q, 0700));

    /* A file can be written into the new directory. */
    path_in(f, "a/b/c/d/file", q, sizeof q);
    assert_ok(refex_file_write(q, "x", 1, 0600));
}

static void test_mkdirs_rejects(void **state)
{
    fixture *f = *state;
    char p[1024], q[1024];
    assert_rc(refex_mkdirs("", 0700), REFEX_E_INVAL);

    /* A regular file in the way of a parent component. */
    path_in(f, "plain", p, sizeof p);
    assert_ok(refex_file_write(p, "x", 1, 0600));
    path_in(f, "plain/sub/dir", q, sizeof q);
    assert_rc(refex_mkdirs(q, 0700), REFEX_E_IO);

    /* Too long for the internal buffer. */
    char *huge = malloc(5000);
    assert_non_null(huge);
    memset(huge, 'a', 4999);
    huge[4999] = 0;
    assert_rc(refex_mkdirs(huge, 0700), REFEX_E_INVAL);
    free(huge);
}

/* ---- ids and clocks ---- */

/* Domain separation: a signature made for one context never verifies for another. */
static void test_sign_domain(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], sig[64];
    static const uint8_t data[] = "some exact bytes";
    crypto_sign_keypair(pk, sk);
    assert_ok(refex_sign_domain("refex/test/v1", data, sizeof data, sk, sig));
    assert_ok(refex_verify_domain("refex/test/v1", data, sizeof data, sig, pk));
    assert_rc(refex_verify_domain("refex/test/v2", data, sizeof data, sig, pk),
              REFEX_E_BAD_SIGNATURE);
    assert_rc(refex_verify_domain("refex/test/v1", data, sizeof data - 1, sig, pk),
              REFEX_E_BAD_SIGNATURE);
    /* The context is NUL-terminated inside the signed bytes: "ab" + "c..." != "abc" + "...". */
    static const uint8_t c_data[] = "cdef";
    assert_ok(refex_sign_domain("ab", c_data, 4, sk, sig));
    assert_rc(refex_verify_domain("abc", c_data + 1, 3, sig, pk), REFEX_E_BAD_SIGNATURE);
    /* Same as signing context || 0x00 || data by hand. */
    uint8_t manual[3 + 4];
    memcpy(manual, "ab", 3);
    memcpy(manual + 3, c_data, 4);
    assert_int_equal(crypto_sign_verify_detached(sig, manual, sizeof manual, pk), 0);
    sig[0] ^= 1;
    assert_rc(refex_verify_domain("ab", c_data, 4, sig, pk), REFEX_E_BAD_SIGNATURE);
    /* An empty payload is allowed. */
    assert_ok(refex_sign_domain("ab", NULL, 0, sk, sig));
    assert_ok(refex_verify_domain("ab", NULL, 0, sig, pk));
}

static void test_random_id_distinct(void **state)
{
    (void)state;
    enum { N = 64 };
    uint8_t ids[N][16];
    const uint8_t zero[16] = {0};
    for (size_t i = 0; i < N; i++) {
        refex_random_id(ids[i]);
        assert_memory_not_equal(ids[i], zero, 16);
    }
    for (size_t i = 0; i < N; i++)
        for (size_t j = i + 1; j < N; j++)
            assert_memory_not_equal(ids[i], ids[j], 16);
}

static void test_now_ms_plausible(void **state)
{
    (void)state;
    int64_t now = refex_now_ms();
    assert_true(now > EPOCH_2020_MS);
    assert_true(now < EPOCH_2100_MS);
}

static void test_mono_ms_non_decreasing(void **state)
{
    (void)state;
    int64_t prev = refex_mono_ms();
    assert_true(prev >= 0);
    for (int i = 0; i < 10000; i++) {
        int64_t t = refex_mono_ms();
        assert_true(t >= prev);
        prev = t;
    }
}

static void test_base64_round_trip(void **state)
{
    (void)state;
    static const struct {
        const char *raw, *b64;
    } v[] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[32];
        uint8_t back[16];
        size_t n = 99;
        refex_base64_encode(out, (const uint8_t *)v[i].raw, strlen(v[i].raw));
        assert_string_equal(out, v[i].b64);
        assert_int_equal(refex_base64_decode(back, sizeof back, &n, out, strlen(out)), REFEX_OK);
        assert_int_equal(n, strlen(v[i].raw));
        assert_memory_equal(back, v[i].raw, n);
    }
}

static void test_base64_decode_rejects(void **state)
{
    (void)state;
    uint8_t out[4];
    size_t n = 0;
    /* bad character, missing padding, whitespace, trailing garbage, too long for out */
    static const char *const bad[] = {"Zm9*", "Zg", "Zm9v Zm9v", "Zm9v=", "Zm9vYmFy"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(refex_base64_decode(out, sizeof out, &n, bad[i], strlen(bad[i])),
                         REFEX_E_MALFORMED);
}

static void test_utf8_valid(void **state)
{
    (void)state;
    assert_true(refex_utf8_valid("", 0));
    assert_true(refex_utf8_valid("plain", 5));
    assert_true(refex_utf8_valid("\xc3\xa9", 2));          /* U+00E9 */
    assert_true(refex_utf8_valid("\xf0\x9f\x98\x80", 4));  /* U+1F600 */
    assert_false(refex_utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(refex_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(refex_utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    assert_false(refex_utf8_valid("\xe2\x82", 2));         /* truncated */
    assert_false(refex_utf8_valid("\x80", 1));             /* lone continuation */
    assert_false(refex_utf8_valid("\xff", 1));
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_round_trip),
        cmocka_unit_test(test_hex_known_values),
        cmocka_unit_test(test_hex_decode_rejects),
        cmocka_unit_test_setup_teardown(test_file_write_exact_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_write_replaces_atomically, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_write_no_tmp_left, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_write_missing_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_read_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_read_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_read_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_read_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_check_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_check_private_after_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mkdirs_nested, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mkdirs_rejects, setup, teardown),
        cmocka_unit_test(test_random_id_distinct),
        cmocka_unit_test(test_sign_domain),
        cmocka_unit_test(test_now_ms_plausible),
        cmocka_unit_test(test_mono_ms_non_decreasing),
        cmocka_unit_test(test_base64_round_trip),
        cmocka_unit_test(test_base64_decode_rejects),
        cmocka_unit_test(test_utf8_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
