/* Tests for lib/keys.c's trust anchor loading (refex_pubkeys_load_anchor): the operator's
 * .public file must be owned by this uid or root and writable by neither group nor others,
 * checked on the one descriptor opened (a symlink is refused, not followed); the same
 * files load at any owner and mode through refex_pubkeys_load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keys.h"
#include "util.h"

static char tmpdir[4096], public[4200];
static refex_keys *anchor;

static int setup(void **state)
{
    (void)state;
    testing_tmpdir(tmpdir, sizeof tmpdir);
    if (refex_keys_new("operator", "trust-anchor", &anchor) != REFEX_OK ||
        refex_keys_save(anchor, tmpdir) != REFEX_OK)
        return -1;
    snprintf(public, sizeof public, "%s/operator.public", tmpdir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    refex_keys_destroy(&anchor);
    testing_rmtree(tmpdir);
    return 0;
}

/* Expects the anchor load of path to fail with rc, err naming path and saying why. */
static void assert_anchor_refused(const char *path, int rc, const char *why)
{
    char err[512] = "";
    refex_pubkeys pub;
    int got = refex_pubkeys_load_anchor(path, &pub, err, sizeof err);
    if (got != rc || !strstr(err, path) || !strstr(err, why))
        fail_msg("%s: got %s '%s'; want %s and '%s'", path, refex_errname(got), err,
                 refex_errname(rc), why);
}

static void test_anchor_as_saved_loads(void **state)
{
    (void)state;
    char err[512] = "";
    refex_pubkeys pub;
    assert_ok(refex_pubkeys_load_anchor(public, &pub, err, sizeof err)); /* 0644, ours */
    assert_memory_equal(pub.sign_pk, anchor->pub.sign_pk, 32);
    assert_string_equal(pub.agency, "operator");
    assert_int_equal(chmod(public, 0444), 0);
    assert_ok(refex_pubkeys_load_anchor(public, &pub, err, sizeof err));
    assert_int_equal(chmod(public, 0600), 0);
    assert_ok(refex_pubkeys_load_anchor(public, &pub, err, sizeof err));
    assert_int_equal(chmod(public, 0644), 0);
}

static void test_anchor_writable_refused(void **state)
{
    (void)state;
    static const unsigned bad[] = {0664, 0646, 0666, 0622, 0602};
    char err[512] = "", why[80];
    refex_pubkeys pub;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(public, bad[i]), 0);
        snprintf(why, sizeof why, "writable by group or others (mode %04o)", bad[i]);
        assert_anchor_refused(public, REFEX_E_PERM, why);
        /* Any other public file may be so. */
        assert_ok(refex_pubkeys_load(public, &pub, err, sizeof err));
    }
    assert_int_equal(chmod(public, 0644), 0);
}

static void test_anchor_other_owner_refused(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        print_message("not root: cannot chown the anchor to another user; skipping\n");
        skip();
    }
    char err[512] = "";
    refex_pubkeys pub;
    assert_int_equal(chown(public, 65534, 65534), 0);
    assert_anchor_refused(public, REFEX_E_PERM,
                          "is owned by uid 65534, neither this daemon's uid 0 nor root");
    assert_ok(refex_pubkeys_load(public, &pub, err, sizeof err));
    assert_int_equal(chown(public, 0, 0), 0);
    assert_ok(refex_pubkeys_load_anchor(public, &pub, err, sizeof err));
}

static void test_anchor_link_or_missing_refused(void **state)
{
    (void)state;
    char link_p[4300];
    snprintf(link_p, sizeof link_p, "%s/link.public", tmpdir);
    assert_int_equal(symlink(public, link_p), 0);
    assert_anchor_refused(link_p, REFEX_E_PERM, "is a symbolic link");
    snprintf(link_p, sizeof link_p, "%s/missing.public", tmpdir);
    assert_anchor_refused(link_p, REFEX_E_CONFIG, "cannot open");
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anchor_as_saved_loads),
        cmocka_unit_test(test_anchor_writable_refused),
        cmocka_unit_test(test_anchor_other_owner_refused),
        cmocka_unit_test(test_anchor_link_or_missing_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
