/* librefex-client end to end, with real daemons: the CLI's option parsing (getopt_long for
 * every command; a bad option or number is a usage error naming it), and the installed
 * library: `cmake --install` to a temp prefix, examples/send_referral.c compiled with
 * pkg-config against it, run against the midwifery agent, and the referral found stored
 * in social-care's inbox. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../unit/testing.h"
#include "harness.h"
#include "util.h"

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "social-care", NULL};

static int setup(void **state)
{
    (void)state;
    return h_net_up(&g_net, AGENCIES, NULL, NULL);
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

/* Runs the CLI as midwifery; asserts the exit code and that the output names `needle`. */
static void expect(int code, const char *needle, const char *const *args)
{
    char out[65536];
    int rc = h_cli_agent(&g_net, "midwifery", out, sizeof out, args);
    if (rc != code || (needle && !strstr(out, needle)))
        fail_msg("refex %s %s: exit %d (want %d), output: %s", args[0], args[1] ? args[1] : "", rc,
                 code, out);
}

static void test_options_are_parsed_strictly(void **state)
{
    (void)state;
    expect(2, "--jsn", (const char *[]){"status", "--jsn", NULL});
    expect(2, "--limit", (const char *[]){"inbox", "list", "--limit", "abc", NULL});
    expect(0, "(inbox is empty)", (const char *[]){"inbox", "list", "--limit=2", NULL});
    expect(0, "[]", (const char *[]){"inbox", "list", "--limit", "2", "--json", NULL});
    expect(0, "connected", (const char *[]){"status", NULL});
    expect(0, "\"agency\"", (const char *[]){"status", "--json", NULL});
    expect(2, "--limit", (const char *[]){"audit", "list", "--limit=-1", NULL});
    expect(0, "SEQ", (const char *[]){"audit", "list", "--limit=1", NULL});
    expect(2, "--bogus", (const char *[]){"outbox", "list", "--bogus", NULL});
    expect(2, "--overdue", (const char *[]){"referrals", "--overdue", NULL});
    expect(2, "--jsn", (const char *[]){"requests", "--jsn", NULL});
    expect(2, "--ttl",
           (const char *[]){"send", "--to=social-care", "--type=referral", "--summary=x",
                            "--ttl=soon", NULL});
    expect(2, "--nope", (const char *[]){"case", "members", "--case=C-1", "--nope", NULL});
    expect(2, "--case", (const char *[]){"case", "members", "--case", NULL});
    expect(2, "--types",
           (const char *[]){"case", "grant", "--case=C-1", "--member=x", "--types=,", NULL});
    expect(2, "--types", (const char *[]){"case", "subscribe", "--all", "--types", "", NULL});
    expect(2, "--agent", (const char *[]){"keys", "new", "--agent=x", NULL});
    expect(2, "--fyle", (const char *[]){"directory", "show", "--fyle=x", NULL});
    /* A long option is spelt in full: a prefix is not quietly taken for it. */
    expect(2, "--lim", (const char *[]){"inbox", "list", "--lim", "2", NULL});
    expect(2, "--js", (const char *[]){"status", "--js", NULL});
    expect(0, "usage: refex", (const char *[]){"inbox", "--help", NULL});
}

/* Runs a shell command line; its exit status. */
static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* First line of a command's stdout into out; its exit status. */
static int run_line(const char *cmd, char *out, size_t len)
{
    FILE *p = popen(cmd, "r");
    out[0] = '\0';
    if (!p)
        return -1;
    if (fgets(out, (int)len, p))
        out[strcspn(out, "\n")] = '\0';
    char sink[256];
    while (fgets(sink, sizeof sink, p))
        ;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    if (!v)
        fail_msg("%s is not set (run through ctest)", name);
    return v;
}

static void install_and_build_example(const char *prefix, const char *libdir, const char *exe)
{
    char cmd[8192], path[2048];
    snprintf(cmd, sizeof cmd, "'%s' --install '%s' --prefix '%s' >'%s.install.log' 2>&1",
             env("REFEX_CMAKE"), env("REFEX_BIN_DIR"), prefix, prefix);
    assert_int_equal(run(cmd), 0);
    const char *files[] = {"bin/refex",
                           "bin/refex-broker",
                           "bin/refex-agent",
                           "include/refex/client.h",
                           "include/refex/error.h",
                           NULL};
    for (int i = 0; files[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", prefix, files[i]);
        if (access(path, F_OK) != 0)
            fail_msg("not installed: %s", path);
    }
    snprintf(path, sizeof path, "%s/%s/librefex-client.so.0", prefix, libdir);
    assert_int_equal(access(path, F_OK), 0);
    /* The .pc names the prefix given at install time. */
    snprintf(cmd, sizeof cmd, "grep -qx 'prefix=%s' '%s/%s/pkgconfig/refex-client.pc'", prefix,
             prefix, libdir);
    assert_int_equal(run(cmd), 0);
    /* The public headers stand alone: strict C11, warnings as errors. */
    snprintf(cmd, sizeof cmd,
             "'%s' -std=c11 -Wall -Wextra -Wstrict-prototypes -Werror %s "
             "'%s/examples/send_referral.c' -o '%s' "
             "$(PKG_CONFIG_PATH='%s/%s/pkgconfig' pkg-config --cflags --libs refex-client) "
             "-Wl,-rpath,'%s/%s' >'%s.cc.log' 2>&1",
             env("REFEX_CC"), getenv("REFEX_EXAMPLE_FLAGS") ? getenv("REFEX_EXAMPLE_FLAGS") : "",
             env("REFEX_SOURCE_DIR"), exe, prefix, libdir, prefix, libdir, exe);
    if (run(cmd) != 0) {
        snprintf(path, sizeof path, "%s.cc.log", exe);
        fail_msg("compiling the example failed; see %s", path);
    }
    /* The installed CLI finds the installed library. */
    snprintf(cmd, sizeof cmd, "'%s/bin/refex' --help >/dev/null", prefix);
    assert_int_equal(run(cmd), 0);
}

static void test_example_with_installed_library(void **state)
{
    (void)state;
    char prefix[600], exe[700], conf[600], cmd[4096], id[256], out[65536];
    const char *libdir = env("REFEX_LIBDIR");
    h_path(&g_net, prefix, sizeof prefix, "prefix");
    snprintf(exe, sizeof exe, "%s/send_referral", prefix);
    install_and_build_example(prefix, libdir, exe);

    h_path(&g_net, conf, sizeof conf, "conf/midwifery.conf");
    snprintf(cmd, sizeof cmd, "'%s' '%s' social-care", exe, conf);
    assert_int_equal(run_line(cmd, id, sizeof id), 0);
    assert_int_equal(strlen(id), 32);
    assert_int_equal(strspn(id, "0123456789abcdef"), 32);

    /* social-care has it, verified and stored. */
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    const char *list[] = {"inbox", "list", "--json", NULL};
    while (refex_mono_ms() < deadline) {
        assert_int_equal(h_cli_agent(&g_net, "social-care", out, sizeof out, list), 0);
        if (strstr(out, id))
            break;
        h_pause();
    }
    assert_non_null(strstr(out, id));
    assert_non_null(strstr(out, "UB-EXAMPLE-0001"));

    /* A failure is typed and non-zero: an unknown recipient, a config that is not there. */
    snprintf(cmd, sizeof cmd, "'%s' '%s' nobody 2>&1", exe, conf);
    assert_int_equal(run_line(cmd, id, sizeof id), 1);
    assert_non_null(strstr(id, "E_UNKNOWN_AGENCY: unknown recipient 'nobody'"));
    snprintf(cmd, sizeof cmd, "'%s' '%s/none.conf' 2>&1", exe, prefix);
    assert_int_equal(run_line(cmd, id, sizeof id), 1);
    assert_non_null(strstr(id, "E_CONFIG"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options_are_parsed_strictly),
        cmocka_unit_test(test_example_with_installed_library),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
