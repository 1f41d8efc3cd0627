/* Tests for lib/config.c: `key = value` parsing, relative path resolution, sized
 * integers, and the FILE:LINE errors for every kind of bad line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <unistd.h>

#include "config.h"
#include "util.h"

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

/* Writes DIR/name with the given content; the full path goes to path. */
static void write_conf(const fixture *f, const char *name, const char *content, char *path,
                       size_t len)
{
    int n = snprintf(path, len, "%s/%s", f->dir, name);
    assert_true(n > 0 && (size_t)n < len);
    assert_ok(refex_file_write(path, content, strlen(content), 0600));
}

/* Opens a config that must parse. */
static refex_config *open_ok(const fixture *f, const char *content)
{
    char path[1024], err[512] = "";
    refex_config *c = NULL;
    write_conf(f, "test.conf", content, path, sizeof path);
    int rc = refex_config_open(path, &c, err, sizeof err);
    if (rc != REFEX_OK)
        fail_msg("refex_config_open: %s: %s", refex_errname(rc), err);
    assert_non_null(c);
    return c;
}

/* Opens a config that must fail with E_CONFIG, and checks err starts with "PATH:LINE: ". */
static void open_bad(const fixture *f, const char *content, unsigned line, const char *why)
{
    char path[1024], err[512] = "", want[1100];
    refex_config *c = (refex_config *)&c; /* must be reset to NULL */
    write_conf(f, "bad.conf", content, path, sizeof path);
    assert_rc(refex_config_open(path, &c, err, sizeof err), REFEX_E_CONFIG);
    assert_null(c);
    snprintf(want, sizeof want, "%s:%u: ", path, line);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("err \"%s\" does not start with \"%s\"", err, want);
    if (!strstr(err, why))
        fail_msg("err \"%s\" does not mention \"%s\"", err, why);
}

/* ---- parsing ---- */

static void test_parse_basic(void **state)
{
    fixture *f = *state;
    refex_config *c = open_ok(f, "# a comment line\n"
                                 "\n"
                                 "   \t  \n"
                                 "agency = midwifery-north\n"
                                 "  broker\t=\ttcp://127.0.0.1:7400   \n"
                                 "name=hello world # trailing comment\n"
                                 "   # indented comment\n"
                                 "url = a=b\n"
                                 "empty =\n"
                                 "last = no newline at end");
    assert_string_equal(refex_config_get(c, "agency"), "midwifery-north");
    assert_string_equal(refex_config_get(c, "broker"), "tcp://127.0.0.1:7400");
    assert_string_equal(refex_config_get(c, "name"), "hello world");
    assert_string_equal(refex_config_get(c, "url"), "a=b");
    assert_string_equal(refex_config_get(c, "empty"), "");
    assert_string_equal(refex_config_get(c, "last"), "no newline at end");
    assert_null(refex_config_get(c, "absent"));
    assert_null(refex_config_get(c, "Agency"));
    assert_null(refex_config_get(c, "# a comment line"));
    refex_config_close(&c);
    assert_null(c);
}

static void test_parse_empty_file(void **state)
{
    fixture *f = *state;
    refex_config *c = open_ok(f, "");
    assert_null(refex_config_get(c, "agency"));
    refex_config_close(&c);
    c = open_ok(f, "# only comments\n\n# here\n");
    assert_null(refex_config_get(c, "only"));
    refex_config_close(&c);
}

static void test_parse_long_line_within_limit(void **state)
{
    fixture *f = *state;
    enum { VLEN = 4000 };
    char *content = malloc(VLEN + 16);
    assert_non_null(content);
    memcpy(content, "k = ", 4);
    memset(content + 4, 'v', VLEN);
    strcpy(content + 4 + VLEN, "\nz = 1\n");
    refex_config *c = open_ok(f, content);
    free(content);
    const char *v = refex_config_get(c, "k");
    assert_non_null(v);
    assert_int_equal(strlen(v), VLEN);
    assert_string_equal(refex_config_get(c, "z"), "1");
    refex_config_close(&c);
}

static void test_close_null_safe(void **state)
{
    (void)state;
    refex_config *c = NULL;
    refex_config_close(NULL);
    refex_config_close(&c);
    assert_null(c);
}

/* ---- paths ---- */

static void test_path_relative_and_absolute(void **state)
{
    fixture *f = *state;
    char path[1024], buf[1024], want[1100], err[256] = "";
    char sub[600];
    refex_config *c = NULL;

    snprintf(sub, sizeof sub, "%s/etc", f->dir);
    assert_ok(refex_mkdirs(sub, 0700));
    write_conf(f, "etc/agent.conf",
               "secret = keys/agent.secret\n"
               "db = ./state/agent.db\n"
               "abs = /var/lib/refex/x.db\n"
               "up = ../other\n"
               "blank =\n",
               path, sizeof path);
    assert_ok(refex_config_open(path, &c, err, sizeof err));

    assert_ok(refex_config_path(c, "secret", buf, sizeof buf));
    snprintf(want, sizeof want, "%s/etc/keys/agent.secret", f->dir);
    assert_string_equal(buf, want);

    assert_ok(refex_config_path(c, "db", buf, sizeof buf));
    snprintf(want, sizeof want, "%s/etc/./state/agent.db", f->dir);
    assert_string_equal(buf, want);

    assert_ok(refex_config_path(c, "up", buf, sizeof buf));
    snprintf(want, sizeof want, "%s/etc/../other", f->dir);
    assert_string_equal(buf, want);

    assert_ok(refex_config_path(c, "abs", buf, sizeof buf));
    assert_string_equal(buf, "/var/lib/refex/x.db");

    /* absent or empty: not found */
    assert_rc(refex_config_path(c, "absent", buf, sizeof buf), REFEX_E_NOTFOUND);
    assert_rc(refex_config_path(c, "blank", buf, sizeof buf), REFEX_E_NOTFOUND);

    /* a buffer too small is an error, not a truncated path */
    char tiny[8];
    assert_rc(refex_config_path(c, "secret", tiny, sizeof tiny), REFEX_E_CONFIG);
    assert_rc(refex_config_path(c, "abs", tiny, sizeof tiny), REFEX_E_CONFIG);
    refex_config_close(&c);
}

static void test_path_config_in_cwd(void **state)
{
    fixture *f = *state;
    char path[1024], buf[1024], err[256] = "", cwd[1024];
    refex_config *c = NULL;
    write_conf(f, "here.conf", "keys = k.secret\n", path, sizeof path);

    /* A config opened by a bare file name resolves against ".". */
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);
    int rc = refex_config_open("here.conf", &c, err, sizeof err);
    assert_int_equal(chdir(cwd), 0);
    assert_ok(rc);
    assert_ok(refex_config_path(c, "keys", buf, sizeof buf));
    assert_string_equal(buf, "./k.secret");
    refex_config_close(&c);
}

/* ---- integers ---- */

static void test_uint_values(void **state)
{
    fixture *f = *state;
    refex_config *c = open_ok(f, "plain = 12345\n"
                                 "zero = 0\n"
                                 "k = 4K\n"
                                 "k_lower = 2k\n"
                                 "m = 3M\n"
                                 "m_lower = 1m\n"
                                 "g = 2G\n"
                                 "g_lower = 1g\n"
                                 "max = 18446744073709551615\n"
                                 "max_g = 17179869183G\n");
    uint64_t v = 0;
    assert_ok(refex_config_uint(c, "plain", 7, &v));
    assert_int_equal(v, 12345);
    assert_ok(refex_config_uint(c, "zero", 7, &v));
    assert_int_equal(v, 0);
    assert_ok(refex_config_uint(c, "k", 7, &v));
    assert_int_equal(v, 4096);
    assert_ok(refex_config_uint(c, "k_lower", 7, &v));
    assert_int_equal(v, 2048);
    assert_ok(refex_config_uint(c, "m", 7, &v));
    assert_int_equal(v, UINT64_C(3) * 1024 * 1024);
    assert_ok(refex_config_uint(c, "m_lower", 7, &v));
    assert_int_equal(v, UINT64_C(1024) * 1024);
    assert_ok(refex_config_uint(c, "g", 7, &v));
    assert_int_equal(v, UINT64_C(2) * 1024 * 1024 * 1024);
    assert_ok(refex_config_uint(c, "g_lower", 7, &v));
    assert_int_equal(v, UINT64_C(1024) * 1024 * 1024);
    assert_ok(refex_config_uint(c, "max", 7, &v));
    assert_true(v == UINT64_MAX);
    assert_ok(refex_config_uint(c, "max_g", 7, &v));
    assert_true(v == UINT64_C(17179869183) * 1024 * 1024 * 1024);

    /* absent: the default */
    v = 1;
    assert_ok(refex_config_uint(c, "absent", 65536, &v));
    assert_int_equal(v, 65536);
    refex_config_close(&c);
}

static void test_uint_rejects(void **state)
{
    fixture *f = *state;
    static const char *const bad[] = {
        "suffix_x", "neg", "word", "empty",      "overflow_g", "mul_overflow", "overflow",
        "plus",     "hex", "frac", "two_suffix", "kb",         "space_unit",   "trailing",
    };
    refex_config *c = open_ok(f, "suffix_x = 12X\n"
                                 "neg = -1\n"
                                 "word = abc\n"
                                 "empty =\n"
                                 "overflow_g = 99999999999999999999G\n"
                                 "mul_overflow = 17179869184G\n"
                                 "overflow = 18446744073709551616\n"
                                 "plus = +1\n"
                                 "hex = 0x10\n"
                                 "frac = 1.5K\n"
                                 "two_suffix = 1KK\n"
                                 "kb = 1KB\n"
                                 "space_unit = 1 K\n"
                                 "trailing = 12 13\n");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 42;
        int rc = refex_config_uint(c, bad[i], 7, &v);
        if (rc != REFEX_E_CONFIG)
            fail_msg("%s = %s: got %s, want E_CONFIG", bad[i], refex_config_get(c, bad[i]),
                     refex_errname(rc));
        assert_int_equal(v, 42); /* untouched on error */
    }
    refex_config_close(&c);
}

/* ---- errors ---- */

static void test_err_no_equals(void **state)
{
    fixture *f = *state;
    open_bad(f, "# header\na = 1\njust some words\n", 3, "key = value");
}

static void test_err_empty_key(void **state)
{
    fixture *f = *state;
    open_bad(f, " = value\n", 1, "empty key");
    open_bad(f, "a = 1\n\n  \t= x\n", 3, "empty key");
}

static void test_err_duplicate_key(void **state)
{
    fixture *f = *state;
    open_bad(f, "agency = a\n# again\nagency = b\n", 3, "'agency'");
    /* whitespace does not make a different key */
    open_bad(f, "agency = a\n  agency=a\n", 2, "twice");
}

static void test_err_line_too_long(void **state)
{
    fixture *f = *state;
    enum { VLEN = 5000 };
    char *content = malloc(VLEN + 32);
    assert_non_null(content);
    strcpy(content, "a = 1\nk = ");
    size_t off = strlen(content);
    memset(content + off, 'v', VLEN);
    strcpy(content + off + VLEN, "\n");
    open_bad(f, content, 2, "too long");

    /* also when the long line is only a comment, and on the last line */
    content[off + VLEN] = 0;
    content[6] = '#';
    open_bad(f, content, 2, "too long");
    free(content);
}

static void test_err_too_many_entries(void **state)
{
    fixture *f = *state;
    char content[4096] = "";
    size_t off = 0;
    for (int i = 0; i < 65; i++)
        off += (size_t)snprintf(content + off, sizeof content - off, "key%d = %d\n", i, i);
    open_bad(f, content, 65, "too many");
}

static void test_err_missing_file(void **state)
{
    fixture *f = *state;
    char path[1024], err[512] = "";
    refex_config *c = (refex_config *)&c;
    snprintf(path, sizeof path, "%s/does-not-exist.conf", f->dir);
    assert_rc(refex_config_open(path, &c, err, sizeof err), REFEX_E_CONFIG);
    assert_null(c);
    assert_non_null(strstr(err, path));
}

static void test_check_keys(void **state)
{
    fixture *f = *state;
    static const char *const allowed[] = {"agency", "broker", "keys", NULL};
    static const char *const fewer[] = {"agency", NULL};
    static const char *const none[] = {NULL};
    char err[256];
    refex_config *c = open_ok(f, "agency = a\nkeys = k\n");
    err[0] = 0;
    assert_ok(refex_config_check_keys(c, allowed, err, sizeof err));
    assert_rc(refex_config_check_keys(c, fewer, err, sizeof err), REFEX_E_CONFIG);
    assert_non_null(strstr(err, "'keys'"));
    assert_rc(refex_config_check_keys(c, none, err, sizeof err), REFEX_E_CONFIG);
    assert_non_null(strstr(err, "'agency'"));
    refex_config_close(&c);

    c = open_ok(f, "agency = a\nbrokr = tcp://x\n");
    assert_rc(refex_config_check_keys(c, allowed, err, sizeof err), REFEX_E_CONFIG);
    assert_non_null(strstr(err, "brokr"));
    refex_config_close(&c);

    c = open_ok(f, "# nothing\n");
    assert_ok(refex_config_check_keys(c, none, err, sizeof err));
    refex_config_close(&c);
}

/* control_group: a group by name or number; absent is -1; unknown or empty, E_CONFIG. */
static void test_group(void **state)
{
    fixture *f = *state;
    char err[256] = "";
    long gid = 7;
    refex_config *c = open_ok(f, "g = root\nn = 0\nbad = refex-no-such-group\nempty =\n");
    assert_ok(refex_config_group(c, "absent", &gid, err, sizeof err));
    assert_int_equal(gid, -1);
    assert_ok(refex_config_group(c, "g", &gid, err, sizeof err));
    assert_int_equal(gid, 0);
    gid = 7;
    assert_ok(refex_config_group(c, "n", &gid, err, sizeof err));
    assert_int_equal(gid, 0);
    assert_rc(refex_config_group(c, "bad", &gid, err, sizeof err), REFEX_E_CONFIG);
    assert_int_equal(gid, -1);
    assert_non_null(strstr(err, "config: bad: no group named 'refex-no-such-group'"));
    assert_rc(refex_config_group(c, "empty", &gid, err, sizeof err), REFEX_E_CONFIG);
    refex_config_close(&c);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        T(test_parse_basic),
        T(test_group),
        T(test_parse_empty_file),
        T(test_parse_long_line_within_limit),
        cmocka_unit_test(test_close_null_safe),
        T(test_path_relative_and_absolute),
        T(test_path_config_in_cwd),
        T(test_uint_values),
        T(test_uint_rejects),
        T(test_err_no_equals),
        T(test_err_empty_key),
        T(test_err_duplicate_key),
        T(test_err_line_too_long),
        T(test_err_too_many_entries),
        T(test_err_missing_file),
        T(test_check_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
