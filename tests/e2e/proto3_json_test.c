/* The canonical proto3 JSON mapping (issue 9, item 5) against an independent implementation,
 * with a real broker and real agents: Debian's python3-protobuf (json_format, driven by
 * tests/e2e/proto3_json.py over the module protoc makes from proto/refex.proto) writes a
 * complete referral in lowerCamelCase; `refex send` accepts it, social care receives and
 * decrypts it, and the body `refex inbox show --json` prints (proto field names) parses back
 * there to the referral that was sent. The same referral under one local id in camelCase,
 * proto names with sorted keys, or enums as numbers is one submission (a repeat), another
 * body is E_DUPLICATE; a field under both its names is refused with E_JSON, logged, and the
 * agent keeps running. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../unit/testing.h"
#include "harness.h"
#include "util.h"

/* Debian's, with python3-protobuf; the `python3` on PATH may be another without it. */
#define PYTHON "/usr/bin/python3"
#define PROTOC "/usr/bin/protoc"

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "social-care", NULL};
static char g_module[1100]; /* where protoc wrote refex_pb2.py */
static char g_script[1100]; /* tests/e2e/proto3_json.py */

/* proto3_json.py MODULE_DIR verb a [b]; fails the test if it does not exit 0. */
static void python(const char *verb, const char *a, const char *b)
{
    char out[8192];
    char *argv[] = {PYTHON, g_script, g_module, (char *)verb, (char *)a, (char *)b, NULL};
    if (h_run(argv, out, sizeof out) != 0)
        fail_msg("proto3_json.py %s %s: %s", verb, a, out);
}

static int setup(void **state)
{
    (void)state;
    const char *bin = getenv("REFEX_BIN_DIR"), *src = getenv("REFEX_SOURCE_DIR");
    char out[8192], proto_path[1100], proto[1100], py_out[1200];
    if (!bin || !src) {
        fprintf(stderr, "proto3_json: REFEX_BIN_DIR and REFEX_SOURCE_DIR must be set\n");
        return -1;
    }
    snprintf(g_module, sizeof g_module, "%s/tests/proto3_py", bin);
    snprintf(g_script, sizeof g_script, "%s/tests/e2e/proto3_json.py", src);
    snprintf(proto_path, sizeof proto_path, "-I%s/proto", src);
    snprintf(proto, sizeof proto, "%s/proto/refex.proto", src);
    snprintf(py_out, sizeof py_out, "--python_out=%s", g_module);
    if (mkdir(g_module, 0755) != 0 && access(g_module, W_OK) != 0)
        return -1;
    char *argv[] = {PROTOC, proto_path, py_out, proto, NULL};
    if (h_run(argv, out, sizeof out) != 0) {
        fprintf(stderr, "proto3_json: %s failed (deploy/install-deps.sh installs it): %s\n", PROTOC,
                out);
        return -1;
    }
    return h_net_up(&g_net, AGENCIES, NULL, NULL);
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

/* Runs the CLI as midwifery; asserts the exit code and that the output names `needle`. */
static void expect(int code, const char *needle, const char *const *args, char *out, size_t len)
{
    int rc = h_cli_agent(&g_net, "midwifery", out, len, args);
    if (rc != code || (needle && !strstr(out, needle)))
        fail_msg("refex %s: exit %d (want %d), output: %s", args[0], rc, code, out);
}

/* `refex send --to social-care --type referral --body path [--local-id id] --wait --json`,
 * which must succeed: its reply. */
static json_t *send_body(const char *path, const char *local_id)
{
    char out[8192];
    json_error_t jerr;
    const char *args[] = {"send", "--to",   "social-care", "--type",     "referral", "--body",
                          path,   "--wait", "--json",      "--local-id", local_id,   NULL};
    if (!local_id)
        args[9] = NULL;
    expect(0, NULL, args, out, sizeof out);
    json_t *r = json_loads(out, 0, &jerr);
    if (!r)
        fail_msg("refex send: not JSON (%s): %s", jerr.text, out);
    return r;
}

static const char *str(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

/* Waits until social care shows message id (received and decrypted); what it showed. */
static void wait_shown(const char *id, char *out, size_t len)
{
    const char *args[] = {"inbox", "show", id, "--json", NULL};
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (h_cli_agent(&g_net, "social-care", out, len, args) != 0) {
        if (refex_mono_ms() > deadline)
            fail_msg("%s never reached social-care: %s", id, out);
        h_pause();
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* The referral in one of proto3_json.py's forms, written under the test tree. */
static void body_in(const char *form, char *path, size_t len)
{
    h_path(&g_net, path, len, "referral-%s.json", form);
    python("write", form, path);
}

static long long inbox_count(void)
{
    return h_sql_int(&g_net, "data/social-care/agent.db", "SELECT count(*) FROM inbox");
}

static void test_libprotobuf_json_sent_and_parsed_back(void **state)
{
    (void)state;
    char path[600], shown_path[600], shown[65536], id[33];
    body_in("camel", path, sizeof path);
    /* it really is the lowerCamelCase form that refex used to refuse */
    assert_true(h_tree_contains(path, "\"estimatedDueDate\"", 18));
    assert_true(h_tree_contains(path, "\"lawfulBasis\"", 13));
    assert_false(h_tree_contains(path, "lawful_basis", 12));

    json_t *r = send_body(path, NULL);
    assert_string_equal(str(r, "state"), "stored");
    snprintf(id, sizeof id, "%s", str(r, "message_id"));
    json_decref(r);
    wait_shown(id, shown, sizeof shown);

    /* refex writes the proto names, as before; json_format parses that to what was sent */
    assert_non_null(strstr(shown, "\"estimated_due_date\""));
    assert_null(strstr(shown, "estimatedDueDate"));
    h_path(&g_net, shown_path, sizeof shown_path, "shown-%s.json", id);
    write_file(shown_path, shown);
    python("check", shown_path, NULL);
}

static void test_local_id_same_across_name_forms(void **state)
{
    (void)state;
    char camel[600], proto[600], ints[600], changed[600], out[8192], id[33];
    body_in("camel", camel, sizeof camel);
    body_in("proto", proto, sizeof proto);
    body_in("ints", ints, sizeof ints);
    body_in("changed", changed, sizeof changed);
    assert_true(h_tree_contains(proto, "\"lawful_basis\"", 14));
    assert_true(h_tree_contains(ints, "\"urgency\": 2", 12));
    long long before = inbox_count();
    assert_true(before >= 0);

    json_t *r = send_body(camel, "PY-1");
    assert_string_equal(str(r, "state"), "stored");
    assert_null(json_object_get(r, "repeat"));
    snprintf(id, sizeof id, "%s", str(r, "message_id"));
    json_decref(r);
    wait_shown(id, out, sizeof out);

    /* Each retry, in another form of the same referral, is the first message again. */
    const char *forms[] = {proto, ints, camel};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        r = send_body(forms[i], "PY-1");
        if (strcmp(str(r, "message_id"), id) != 0 || !json_is_true(json_object_get(r, "repeat")))
            fail_msg("%s under PY-1: not a repeat of %s", forms[i], id);
        assert_string_equal(str(r, "state"), "stored");
        json_decref(r);
    }
    expect(1, "E_DUPLICATE",
           (const char *[]){"send", "--to", "social-care", "--type", "referral", "--body", changed,
                            "--local-id", "PY-1", NULL},
           out, sizeof out);

    /* A fence: delivery is in order per sender, so nothing more is on its way after it. */
    r = send_body(proto, "PY-FENCE");
    assert_string_not_equal(str(r, "message_id"), id);
    wait_shown(str(r, "message_id"), out, sizeof out);
    json_decref(r);
    assert_int_equal(inbox_count(), before + 2);
}

/* Body flags set proto names; over a lowerCamelCase --body file they replace or merge into
 * the same field under its JSON name rather than making it a field given twice. */
static void test_flags_over_camel_body(void **state)
{
    (void)state;
    char path[600], out[8192], shown[65536];
    json_error_t jerr;
    body_in("camel", path, sizeof path);
    const char *args[] = {
        "send",       "--to",       "social-care", "--type",           "referral", "--body", path,
        "--due-date", "2031-08-01", "--article6",  "legal-obligation", "--wait",   "--json", NULL};
    expect(0, NULL, args, out, sizeof out);
    json_t *r = json_loads(out, 0, &jerr);
    assert_non_null(r);
    char id[33];
    snprintf(id, sizeof id, "%s", str(r, "message_id"));
    json_decref(r);
    wait_shown(id, shown, sizeof shown);
    assert_non_null(strstr(shown, "\"estimated_due_date\": \"2031-08-01\""));
    assert_non_null(strstr(shown, "ARTICLE6_LEGAL_OBLIGATION"));
    /* the file's other lawful-basis field survived the merge */
    assert_non_null(strstr(shown, "\"article9\""));
}

/* A field under both its names: a typed error, a log line without the body, nothing kept. */
static void test_both_names_refused(void **state)
{
    (void)state;
    char path[600], log[600], out[8192];
    const char *sql = "SELECT count(*) FROM outbox";
    h_path(&g_net, path, sizeof path, "both-names.json");
    write_file(path, "{\"subject\": {\"estimated_due_date\": \"2031-07-09\","
                     " \"estimatedDueDate\": \"2031-07-09\"}}");
    long long outbox = h_sql_int(&g_net, "data/midwifery/agent.db", sql);

    expect(
        1, "E_JSON",
        (const char *[]){"send", "--to", "social-care", "--type", "referral", "--body", path, NULL},
        out, sizeof out);
    assert_non_null(
        strstr(out, "subject.estimatedDueDate: field given twice, also as estimated_due_date"));
    /* a body flag on such a field does not pick one of the two values */
    write_file(path, "{\"lawful_basis\": {\"article9\": \"ARTICLE9_EXPLICIT_CONSENT\"},"
                     " \"lawfulBasis\": {\"article9\": \"ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST\"}}");
    expect(1, "field given twice",
           (const char *[]){"send", "--to", "social-care", "--type", "referral", "--body", path,
                            "--article6", "legal-obligation", NULL},
           out, sizeof out);
    assert_int_equal(h_sql_int(&g_net, "data/midwifery/agent.db", sql), outbox);
    assert_true(h_alive(&g_net.agents[h_agent_index(&g_net, "midwifery")]));
    h_path(&g_net, log, sizeof log, "logs/midwifery.log");
    assert_true(h_tree_contains(log, "send: refused: E_JSON", 21));
    assert_false(h_tree_contains(log, "2031-07-09", 10));
    expect(0, NULL, (const char *[]){"status", NULL}, out,
           sizeof out); /* exit 3 if not connected */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_libprotobuf_json_sent_and_parsed_back),
        cmocka_unit_test(test_local_id_same_across_name_forms),
        cmocka_unit_test(test_both_names_refused),
        cmocka_unit_test(test_flags_over_camel_body),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
