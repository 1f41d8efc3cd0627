/* End-to-end test of key-file checks (issue 11, item 4) with the real daemons and CLI: an
 * agent whose .secret is a symlink to a good 0600 key, is owned by another user (as root
 * only), or is readable by its group refuses to start (exit 2) with a line naming the file
 * and the reason; the broker refuses a symlinked trust anchor .public, and one writable by
 * group or others or owned by another user (the agent too); `refex directory
 * sign` refuses a symlinked anchor with E_PERM. Once the file is put right the agent
 * starts and is welcomed, and the running broker never noticed the refused attempts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../unit/testing.h"
#include "harness.h"

static h_net g_net;
static char g_out[64 * 1024];

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

/* Runs `DAEMON -c conf/CONF.conf -n`, expecting exit 2 and a line with the file and why. */
static void assert_daemon_refuses(const char *daemon, const char *conf, const char *file,
                                  const char *why)
{
    char exe[1200], path[600];
    snprintf(exe, sizeof exe, "%s/%s", g_net.bin, daemon);
    h_path(&g_net, path, sizeof path, "conf/%s.conf", conf);
    char *argv[] = {exe, "-c", path, "-n", NULL};
    int rc = h_run(argv, g_out, sizeof g_out);
    if (rc != 2 || !strstr(g_out, why) || !strstr(g_out, file))
        fail_msg("%s -n: exit %d, output '%s'; want 2 and '%s' about %s", daemon, rc, g_out, why,
                 file);
}

static void test_key_files(void **state)
{
    (void)state;
    static const char *const agencies[] = {"midwifery", NULL};
    char secret[600], real[600], anchor[600], anchor_real[600], file[600];
    assert_int_equal(h_net_init(&g_net, agencies, NULL, NULL), 0);
    assert_int_equal(h_net_start_broker(&g_net), 0);
    h_path(&g_net, secret, sizeof secret, "keys/midwifery.secret");
    h_path(&g_net, real, sizeof real, "keys/midwifery-real.secret");

    /* A symlink to the agency's own good 0600 key. */
    assert_int_equal(rename(secret, real), 0);
    assert_int_equal(symlink("midwifery-real.secret", secret), 0);
    assert_daemon_refuses("refex-agent", "midwifery", "midwifery.secret", "is a symbolic link");
    assert_int_equal(unlink(secret), 0);
    assert_int_equal(rename(real, secret), 0);

    /* Owned by another user, mode 0600. */
    if (geteuid() == 0) {
        assert_int_equal(chown(secret, 65534, 65534), 0);
        assert_daemon_refuses("refex-agent", "midwifery", "midwifery.secret",
                              "is owned by uid 65534, not this daemon's uid 0");
        assert_int_equal(chown(secret, 0, 0), 0);
    } else {
        print_message("not root: the other-owner case is left to the unit test\n");
    }

    /* Readable by its group. */
    assert_int_equal(chmod(secret, 0640), 0);
    assert_daemon_refuses("refex-agent", "midwifery", "midwifery.secret", "(mode 0640)");
    assert_int_equal(chmod(secret, 0600), 0);

    /* The broker's trust anchor .public as a symlink. */
    h_path(&g_net, anchor, sizeof anchor, "keys/operator.public");
    h_path(&g_net, anchor_real, sizeof anchor_real, "keys/operator-real.public");
    assert_int_equal(rename(anchor, anchor_real), 0);
    assert_int_equal(symlink("operator-real.public", anchor), 0);
    assert_daemon_refuses("refex-broker", "broker", "operator.public", "is a symbolic link");
    assert_int_equal(unlink(anchor), 0);
    assert_int_equal(rename(anchor_real, anchor), 0);

    /* ...writable by its group, or owned by another user: refused too, for the agent too. */
    assert_int_equal(chmod(anchor, 0664), 0);
    assert_daemon_refuses("refex-broker", "broker", "operator.public",
                          "trust anchor file is writable by group or others (mode 0664)");
    assert_daemon_refuses("refex-agent", "midwifery", "operator.public",
                          "trust anchor file is writable by group or others (mode 0664)");
    assert_int_equal(chmod(anchor, 0644), 0);
    if (geteuid() == 0) {
        assert_int_equal(chown(anchor, 65534, 65534), 0);
        assert_daemon_refuses("refex-broker", "broker", "operator.public",
                              "trust anchor file is owned by uid 65534, neither this "
                              "daemon's uid 0 nor root");
        assert_int_equal(chown(anchor, 0, 0), 0);
    }

    /* The operator's signing key as a symlink: refex directory sign refuses, typed. */
    h_path(&g_net, anchor, sizeof anchor, "keys/operator.secret");
    h_path(&g_net, anchor_real, sizeof anchor_real, "keys/anchor-link.secret");
    h_path(&g_net, file, sizeof file, "directory.rdir");
    assert_int_equal(symlink("operator.secret", anchor_real), 0);
    const char *sign[] = {"directory", "sign",      "--file", file,
                          "--anchor",  anchor_real, "--json", NULL};
    int rc = h_cli(&g_net, g_out, sizeof g_out, sign);
    if (rc != 4 || !strstr(g_out, "E_PERM") || !strstr(g_out, "is a symbolic link"))
        fail_msg("directory sign through a symlink: exit %d, '%s'", rc, g_out);

    /* Put right, the agent starts and is welcomed by the broker that ran throughout. */
    assert_true(h_alive(&g_net.broker));
    assert_int_equal(h_net_start_agent(&g_net, "midwifery"), 0);
    assert_true(h_alive(&g_net.broker));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_key_files, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
