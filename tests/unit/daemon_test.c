/* Tests for lib/daemon.c's directory rollback guard: the highest directory serial accepted is
 * kept in data_dir/directory.serial, raised at start and on reload; an older directory is
 * refused at start (both serials named) and on reload (the old one kept); a damaged
 * directory.serial is refused, never read as 0; a directory with the serial accepted but
 * other bytes is refused too (directory.serial keeps the accepted file's hash). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "directory.h"
#include "keys.h"
#include "util.h"

static refex_keys *anchor, *member;
static char tmpdir[4096], conf_path[4200], dir_path[4200], serial_path[4200];
static refex_directory *dir; /* the one being edited and signed, serial bumped per sign */

static int setup(void **state)
{
    (void)state;
    char text[8192];
    if (refex_keys_new("operator", "trust-anchor", &anchor) != REFEX_OK ||
        refex_keys_new("midwifery", "midwifery", &member) != REFEX_OK)
        return -1;
    testing_tmpdir(tmpdir, sizeof tmpdir);
    if (refex_keys_save(anchor, tmpdir) != REFEX_OK || refex_keys_save(member, tmpdir) != REFEX_OK)
        return -1;
    snprintf(dir_path, sizeof dir_path, "%s/directory.rdir", tmpdir);
    snprintf(serial_path, sizeof serial_path, "%s/data/%s", tmpdir, REFEX_DAEMON_SERIAL_FILE);
    snprintf(conf_path, sizeof conf_path, "%s/d.conf", tmpdir);
    int n = snprintf(text, sizeof text,
                     "data_dir = %s/data\ndirectory = %s\ntrust_anchor = %s/operator.public\n"
                     "keys = %s/midwifery.secret\n",
                     tmpdir, dir_path, tmpdir, tmpdir);
    refex_agency a;
    refex_agency_from_pubkeys(&a, &member->pub, NULL);
    if (refex_file_write(conf_path, text, (size_t)n, 0600) != REFEX_OK ||
        refex_directory_new(&dir) != REFEX_OK || refex_directory_add(dir, &a, 0) != REFEX_OK)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    refex_directory_destroy(&dir);
    refex_keys_destroy(&anchor);
    refex_keys_destroy(&member);
    testing_rmtree(tmpdir);
    return 0;
}

/* Signs the next serial into the directory file; returns that serial. */
static uint64_t publish(void)
{
    assert_ok(refex_directory_sign(dir, anchor->sk->sign_sk));
    assert_ok(refex_directory_save(dir, dir_path));
    return refex_directory_serial(dir);
}

static int load(refex_daemon_base *b, char *err, size_t errlen)
{
    refex_config *cfg = NULL;
    memset(b, 0, sizeof *b);
    assert_ok(refex_config_open(conf_path, &cfg, err, errlen));
    int rc = refex_daemon_base_load(cfg, "test keys", b, err, errlen);
    refex_config_close(&cfg);
    return rc;
}

static uint64_t serial_file(void)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(refex_file_read(serial_path, 128, &buf, &len));
    char text[129];
    memcpy(text, buf, len);
    text[len] = '\0';
    free(buf);
    assert_int_equal(text[len - 1], '\n');
    return strtoull(text, NULL, 10);
}

static void copy(const char *from, const char *to)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(refex_file_read(from, 1u << 22, &buf, &len));
    assert_ok(refex_file_write(to, buf, len, 0644));
    free(buf);
}

static void test_serial_guards_start_and_reload(void **state)
{
    (void)state;
    char err[1024] = "", old[4300], want[128];
    refex_daemon_base b;
    snprintf(old, sizeof old, "%s/directory.old", tmpdir);

    /* A new data directory: the first directory's serial is recorded. */
    uint64_t s1 = publish();
    assert_ok(load(&b, err, sizeof err));
    assert_int_equal(serial_file(), s1);
    assert_int_equal(b.serial_floor, s1);
    copy(dir_path, old);

    /* A newer one on reload: recorded, the replaced one kept as prev_dir. */
    uint64_t s2 = publish();
    assert_ok(refex_daemon_base_reload(&b));
    assert_int_equal(refex_directory_serial(b.dir), s2);
    assert_non_null(b.prev_dir);
    assert_int_equal(refex_directory_serial(b.prev_dir), s1);
    assert_int_equal(serial_file(), s2);
    /* The same serial again is fine. */
    assert_ok(refex_daemon_base_reload(&b));

    /* The older one on reload: refused, the newer kept. */
    copy(old, dir_path);
    assert_rc(refex_daemon_base_reload(&b), REFEX_E_DIRECTORY);
    assert_int_equal(refex_directory_serial(b.dir), s2);
    assert_int_equal(serial_file(), s2);
    refex_daemon_base_fini(&b);

    /* ...and at start, after a restart: both serials named. */
    assert_rc(load(&b, err, sizeof err), REFEX_E_DIRECTORY);
    snprintf(want, sizeof want, "directory serial %llu is older than serial %llu",
             (unsigned long long)s1, (unsigned long long)s2);
    if (!strstr(err, want))
        fail_msg("error '%s' lacks '%s'", err, want);
    refex_daemon_base_fini(&b);
    assert_int_equal(serial_file(), s2);
}

static void test_damaged_serial_file_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {"",     "\n",   "x\n",   "12x\n",
                                      "-1\n", " 3\n", "3\n\n", "99999999999999999999999\n"};
    char err[1024];
    refex_daemon_base b;
    uint64_t s = publish();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_ok(refex_file_write(serial_path, bad[i], strlen(bad[i]), 0600));
        err[0] = '\0';
        assert_rc(load(&b, err, sizeof err), REFEX_E_DIRECTORY);
        if (!strstr(err, "not a directory serial"))
            fail_msg("'%s': error '%s'", bad[i], err);
        refex_daemon_base_fini(&b);
    }
    /* A file far longer than any serial, or with a NUL inside, is refused too. */
    char longer[200];
    memset(longer, '1', sizeof longer);
    assert_ok(refex_file_write(serial_path, longer, sizeof longer, 0600));
    assert_rc(load(&b, err, sizeof err), REFEX_E_DIRECTORY);
    refex_daemon_base_fini(&b);
    assert_ok(refex_file_write(serial_path, "9\0\n", 3, 0600));
    assert_rc(load(&b, err, sizeof err), REFEX_E_DIRECTORY);
    refex_daemon_base_fini(&b);
    /* Without its newline a number is still read; a lower one than the directory's is
     * raised to it. */
    assert_ok(refex_file_write(serial_path, "1", 1, 0600));
    assert_ok(load(&b, err, sizeof err));
    refex_daemon_base_fini(&b);
    assert_int_equal(serial_file(), s);
    /* Missing: a new data directory, the guard starts from the directory loaded. */
    assert_int_equal(remove(serial_path), 0);
    assert_ok(load(&b, err, sizeof err));
    refex_daemon_base_fini(&b);
    assert_int_equal(serial_file(), s);
}

/* The hash directory.serial keeps ("" for a file with the serial alone). */
static void serial_file_hash(char *out, size_t cap)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_ok(refex_file_read(serial_path, 128, &buf, &len));
    const char *sp = strchr((const char *)buf, ' ');
    snprintf(out, cap, "%.*s", sp ? (int)strcspn(sp + 1, "\n") : 0, sp ? sp + 1 : "");
    free(buf);
}

static void test_same_serial_other_bytes_refused(void **state)
{
    (void)state;
    char err[1024] = "", base[4300], first[4300], want[160], hash[129], text[64];
    refex_daemon_base b;
    refex_directory *fork = NULL;
    snprintf(base, sizeof base, "%s/directory.base", tmpdir);
    snprintf(first, sizeof first, "%s/directory.first", tmpdir);

    /* Two directories signed from one base, so with one serial: the first is accepted. */
    publish();
    copy(dir_path, base);
    uint64_t s = publish();
    copy(dir_path, first);
    assert_ok(load(&b, err, sizeof err));
    assert_int_equal(serial_file(), s);
    serial_file_hash(hash, sizeof hash);
    assert_int_equal(strlen(hash), 64);
    assert_ok(refex_directory_load(base, NULL, &fork, err, sizeof err));
    refex_keys *other = NULL;
    refex_agency a;
    assert_ok(refex_keys_new("police", "police", &other));
    refex_agency_from_pubkeys(&a, &other->pub, NULL);
    refex_keys_destroy(&other);
    assert_ok(refex_directory_add(fork, &a, 0));
    assert_ok(refex_directory_sign(fork, anchor->sk->sign_sk));
    assert_int_equal(refex_directory_serial(fork), s);

    /* The second on reload: refused, the first kept, directory.serial unchanged. */
    assert_ok(refex_directory_save(fork, dir_path));
    assert_rc(refex_daemon_base_reload(&b), REFEX_E_DIRECTORY);
    assert_int_equal(refex_directory_serial(b.dir), s);
    assert_int_equal(refex_directory_count(b.dir), 1);
    assert_null(b.prev_dir);
    assert_int_equal(serial_file(), s);
    serial_file_hash(want, sizeof want);
    assert_string_equal(want, hash);
    refex_daemon_base_fini(&b);

    /* ...and at start, after a restart. */
    err[0] = '\0';
    assert_rc(load(&b, err, sizeof err), REFEX_E_DIRECTORY);
    snprintf(want, sizeof want,
             "directory serial %llu differs from the directory already "
             "accepted with that serial",
             (unsigned long long)s);
    if (!strstr(err, want))
        fail_msg("error '%s' lacks '%s'", err, want);
    refex_daemon_base_fini(&b);

    /* A directory.serial from before hashes were kept (the serial alone) is read, and the
     * hash of the directory accepted next is recorded: from then on the guard holds. */
    int n = snprintf(text, sizeof text, "%llu\n", (unsigned long long)s);
    assert_ok(refex_file_write(serial_path, text, (size_t)n, 0600));
    assert_ok(load(&b, err, sizeof err));
    assert_int_equal(refex_directory_count(b.dir), 2);
    serial_file_hash(want, sizeof want);
    assert_int_equal(strlen(want), 64);
    assert_string_not_equal(want, hash);
    copy(first, dir_path); /* the first one, now the other bytes at serial s */
    assert_rc(refex_daemon_base_reload(&b), REFEX_E_DIRECTORY);
    assert_int_equal(refex_directory_count(b.dir), 2);
    refex_daemon_base_fini(&b);
    refex_directory_destroy(&fork);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serial_guards_start_and_reload),
        cmocka_unit_test(test_damaged_serial_file_refused),
        cmocka_unit_test(test_same_serial_other_bytes_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
