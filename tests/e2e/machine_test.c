/* The CLI for programs, with real daemons: under --json every failure is one JSON object
 * on stdout with the exit code it has without --json (a refused send, a usage error), an
 * unknown recipient or type lists the valid ones, keys and directory speak JSON too,
 * `refex status` exits 3 once the agent has lost its broker, and all three programs answer
 * --version. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "../unit/testing.h"
#include "harness.h"

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

/* Runs the CLI (as midwifery unless plain) and parses all it printed, stdout and stderr
 * together, as one JSON value: so the value is the whole output. Asserts the exit code. */
static json_t *run_json(int want_rc, int plain, const char *const *args)
{
    char out[65536];
    json_error_t jerr;
    int rc = plain ? h_cli(&g_net, out, sizeof out, args)
                   : h_cli_agent(&g_net, "midwifery", out, sizeof out, args);
    if (rc != want_rc)
        fail_msg("refex %s: exit %d (want %d): %s", args[0], rc, want_rc, out);
    json_t *j = json_loads(out, 0, &jerr);
    if (!j)
        fail_msg("refex %s: output is not one JSON value (%s): %s", args[0], jerr.text, out);
    return j;
}

static int has_string(const json_t *arr, const char *s)
{
    const json_t *v;
    size_t i;
    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return 1;
    }
    return 0;
}

static void assert_error(const json_t *j, const char *name)
{
    assert_true(json_is_object(j));
    assert_true(json_is_false(json_object_get(j, "ok")));
    assert_string_equal(json_string_value(json_object_get(j, "error")), name);
    assert_true(json_is_string(json_object_get(j, "message")));
}

static void test_unknown_recipient_lists_valid(void **state)
{
    (void)state;
    json_t *j = run_json(1, 0,
                         (const char *[]){"send", "--to", "nobody", "--type", "referral",
                                          "--summary", "x", "--json", NULL});
    assert_error(j, "E_UNKNOWN_AGENCY");
    assert_string_equal(json_string_value(json_object_get(j, "field")), "to");
    assert_true(has_string(json_object_get(j, "valid"), "social-care"));
    assert_true(has_string(json_object_get(j, "valid"), "midwifery"));
    assert_false(has_string(json_object_get(j, "valid"), "broker")); /* not a recipient */
    json_decref(j);
    /* Without --json: the same on stderr, for people. */
    char out[65536];
    int rc = h_cli_agent(
        &g_net, "midwifery", out, sizeof out,
        (const char *[]){"send", "--to", "nobody", "--type", "referral", "--summary", "x", NULL});
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "refex: E_UNKNOWN_AGENCY: unknown recipient 'nobody'\n"));
    assert_non_null(strstr(out, "refex: valid recipients: "));
    assert_non_null(strstr(out, "social-care"));
}

static void test_unknown_type_lists_valid(void **state)
{
    (void)state;
    json_t *j = run_json(1, 0,
                         (const char *[]){"send", "--to", "social-care", "--type", "referal",
                                          "--summary", "x", "--json", NULL});
    assert_error(j, "E_INVAL");
    assert_string_equal(json_string_value(json_object_get(j, "field")), "type");
    assert_true(has_string(json_object_get(j, "valid"), "referral"));
    assert_true(has_string(json_object_get(j, "valid"), "case-update"));
    json_decref(j);
}

/* A refusal names the field it is about, and lists valid values only for to and type. */
static void test_bad_local_id_names_its_field(void **state)
{
    (void)state;
    json_t *j =
        run_json(1, 0,
                 (const char *[]){"send", "--to", "social-care", "--type", "referral", "--summary",
                                  "x", "--local-id", "bad id", "--json", NULL});
    assert_error(j, "E_INVAL");
    assert_string_equal(json_string_value(json_object_get(j, "field")), "local_id");
    assert_null(json_object_get(j, "valid"));
    json_decref(j);
}

static void test_usage_error_is_json(void **state)
{
    (void)state;
    json_t *j = run_json(2, 0, (const char *[]){"inbox", "list", "--limit", "abc", "--json", NULL});
    assert_error(j, "E_USAGE");
    assert_non_null(strstr(json_string_value(json_object_get(j, "message")), "--limit"));
    json_decref(j);
    j = run_json(2, 0, (const char *[]){"status", "--jsn", "--json", NULL});
    assert_error(j, "E_USAGE");
    json_decref(j);
    /* A path that prints only a usage text still gives one object. */
    j = run_json(2, 0, (const char *[]){"status", "a", "b", "--json", NULL});
    assert_error(j, "E_USAGE");
    json_decref(j);
    j = run_json(2, 1, (const char *[]){"no-such-command", "--json", NULL});
    assert_error(j, "E_USAGE");
    json_decref(j);
    /* send's own checks name what is missing, as JSON too. */
    j = run_json(2, 0, (const char *[]){"send", "--to", "social-care", "--json", NULL});
    assert_error(j, "E_USAGE");
    assert_non_null(strstr(json_string_value(json_object_get(j, "message")), "--type"));
    json_decref(j);
}

static void test_keys_and_directory_json(void **state)
{
    (void)state;
    char dir[512], file[600], pub[600];
    h_path(&g_net, dir, sizeof dir, "machine-keys");
    snprintf(file, sizeof file, "%s/dir.json", dir);
    snprintf(pub, sizeof pub, "%s/probation.public", dir);
    json_t *j = run_json(0, 1,
                         (const char *[]){"keys", "new", "--agency", "probation", "--role",
                                          "probation", "--out", dir, "--json", NULL});
    assert_true(json_is_true(json_object_get(j, "ok")));
    assert_string_equal(json_string_value(json_object_get(j, "public")), pub);
    json_decref(j);
    j = run_json(4, 1,
                 (const char *[]){"keys", "new", "--agency", "probation", "--role", "probation",
                                  "--out", dir, "--json", NULL});
    assert_error(j, "E_EXISTS");
    json_decref(j);
    j = run_json(0, 1, (const char *[]){"directory", "init", "--file", file, "--json", NULL});
    json_decref(j);
    j = run_json(
        0, 1, (const char *[]){"directory", "add", "--file", file, "--keys", pub, "--json", NULL});
    assert_string_equal(json_string_value(json_object_get(j, "id")), "probation");
    json_decref(j);
    j = run_json(0, 1, (const char *[]){"directory", "show", "--file", file, "--json", NULL});
    json_t *agencies = json_object_get(j, "agencies");
    assert_int_equal(json_array_size(agencies), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(agencies, 0), "id")),
                        "probation");
    json_decref(j);
    j = run_json(2, 1, (const char *[]){"directory", "show", "--json", NULL});
    assert_error(j, "E_USAGE");
    json_decref(j);
}

/* The first line a program prints; its exit status. */
static int first_line(const char *cmd, char *out, size_t len)
{
    FILE *p = popen(cmd, "r");
    out[0] = '\0';
    if (!p)
        return -1;
    if (fgets(out, (int)len, p))
        out[strcspn(out, "\n")] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_version(void **state)
{
    (void)state;
    static const char *const progs[] = {"refex", "refex-agent", "refex-broker"};
    for (size_t i = 0; i < 3; i++) {
        char cmd[1200], line[256], want[64];
        snprintf(cmd, sizeof cmd, "'%s/%s' --version", g_net.bin, progs[i]);
        snprintf(want, sizeof want, "%s ", progs[i]);
        assert_int_equal(first_line(cmd, line, sizeof line), 0);
        assert_true(strncmp(line, want, strlen(want)) == 0);
        assert_true(strlen(line) > strlen(want)); /* a version follows */
    }
}

/* Last: stops the broker. */
static void test_status_exits_3_without_broker(void **state)
{
    (void)state;
    const char *const status[] = {"status", "--json", NULL};
    json_t *j = run_json(0, 0, status);
    assert_true(json_is_true(json_object_get(j, "online")));
    json_decref(j);
    h_stop(&g_net.broker);
    /* Until the agent notices the link is gone: status says so and exits 3. */
    int rc = 0;
    char out[65536];
    for (int tries = 0; tries < 600; tries++) {
        rc = h_cli_agent(&g_net, "midwifery", out, sizeof out, status);
        if (rc != 0)
            break;
        h_pause();
    }
    assert_int_equal(rc, 3);
    j = json_loads(out, 0, NULL);
    assert_non_null(j);
    assert_true(json_is_false(json_object_get(j, "online")));
    json_decref(j);
    rc = h_cli_agent(&g_net, "midwifery", out, sizeof out, (const char *[]){"status", NULL});
    assert_int_equal(rc, 3);
    assert_non_null(strstr(out, "NOT connected to"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_recipient_lists_valid),
        cmocka_unit_test(test_unknown_type_lists_valid),
        cmocka_unit_test(test_bad_local_id_names_its_field),
        cmocka_unit_test(test_usage_error_is_json),
        cmocka_unit_test(test_keys_and_directory_json),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_status_exits_3_without_broker),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
