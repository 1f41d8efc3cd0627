/* Idempotent submit by the caller's local id, end to end with a real broker and agents:
 * `refex send --local-id EPR-1` run twice prints the same message id and social care's
 * inbox grows by exactly one; a different body under the same local id exits 1 with
 * E_DUPLICATE; `status EPR-1` and `outbox list` show it; it survives an agent restart; and
 * librefex-client's refex_client_send with local_id does the same. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/testing.h"
#include "harness.h"
#include "refex/client.h"
#include "util.h"

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "social-care", NULL};

/* A referral with every field a sending agent may require; summary tells bodies apart. */
#define BODY_FMT                                                                                   \
    "{\"kind\": \"REFERRAL_PRE_BIRTH\", \"summary\": \"%s\","                                      \
    " \"subject\": {\"kind\": \"SUBJECT_UNBORN\", \"reference\": \"UB-LOCAL-1\"},"                 \
    " \"referrer\": {\"reference\": \"MW-LOCAL-1\", \"role\": \"community midwife\"},"             \
    " \"purpose\": \"PURPOSE_SAFEGUARDING\", \"urgency\": \"URGENCY_ROUTINE\","                    \
    " \"consent\": \"CONSENT_NOT_SOUGHT_SAFEGUARDING\","                                           \
    " \"lawful_basis\": {\"article6\": \"ARTICLE6_PUBLIC_TASK\","                                  \
    " \"article9\": \"ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST\"}}"

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

/* Writes a body file under the test tree; its path into path. */
static void body_file(char *path, size_t len, const char *name, const char *summary)
{
    h_path(&g_net, path, len, "%s.json", name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, BODY_FMT, summary);
    assert_int_equal(fclose(f), 0);
}

/* Runs the CLI as midwifery; asserts the exit code and that the output names `needle`. */
static void expect(int code, const char *needle, const char *const *args, char *out, size_t len)
{
    int rc = h_cli_agent(&g_net, "midwifery", out, len, args);
    if (rc != code || (needle && !strstr(out, needle)))
        fail_msg("refex %s %s: exit %d (want %d), output: %s", args[0], args[1] ? args[1] : "", rc,
                 code, out);
}

/* `refex ... --json` as midwifery, parsed. */
static json_t *cli_json(const char *const *args)
{
    char out[65536];
    json_error_t jerr;
    expect(0, NULL, args, out, sizeof out);
    json_t *j = json_loads(out, 0, &jerr);
    if (!j)
        fail_msg("refex %s: not JSON (%s): %s", args[0], jerr.text, out);
    return j;
}

static const char *str(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

static long long inbox_count(void)
{
    return h_sql_int(&g_net, "data/social-care/agent.db", "SELECT count(*) FROM inbox");
}

/* Waits until social care holds message id. */
static void wait_delivered(const char *id)
{
    char out[65536];
    const char *args[] = {"inbox", "show", id, "--json", NULL};
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (h_cli_agent(&g_net, "social-care", out, sizeof out, args) != 0) {
        if (refex_mono_ms() > deadline)
            fail_msg("%s never reached social-care", id);
        h_pause();
    }
}

/* Sends a fresh message from midwifery and waits for it at social care. Messages from one
 * sender are delivered in order, so whatever midwifery sent before it has arrived too: no
 * sleep is needed to be sure nothing more is on its way. */
static void fence(const char *local_id)
{
    char path[600];
    body_file(path, sizeof path, local_id, local_id);
    json_t *r =
        cli_json((const char *[]){"send", "--to", "social-care", "--type", "referral", "--body",
                                  path, "--local-id", local_id, "--wait", "--json", NULL});
    assert_string_equal(str(r, "state"), "stored");
    wait_delivered(str(r, "message_id"));
    json_decref(r);
}

static void test_cli_send_twice_delivers_once(void **state)
{
    (void)state;
    char path[600], other[600], out[65536], id[33];
    body_file(path, sizeof path, "epr-1", "Booking at 12 weeks");
    long long before = inbox_count();
    assert_true(before >= 0);

    const char *send[] = {"send", "--to",       "social-care", "--type", "referral", "--body",
                          path,   "--local-id", "EPR-1",       "--wait", "--json",   NULL};
    json_t *r = cli_json(send);
    assert_string_equal(str(r, "state"), "stored");
    assert_null(json_object_get(r, "repeat"));
    snprintf(id, sizeof id, "%s", str(r, "message_id"));
    assert_int_equal(strlen(id), 32);
    json_decref(r);
    wait_delivered(id);

    /* The retry: same id, stored at once, nothing sent. */
    r = cli_json(send);
    assert_string_equal(str(r, "message_id"), id);
    assert_string_equal(str(r, "state"), "stored");
    assert_true(json_is_true(json_object_get(r, "repeat")));
    json_decref(r);
    expect(0, id,
           (const char *[]){"send", "--to", "social-care", "--type", "referral", "--body", path,
                            "--local-id", "EPR-1", NULL},
           out, sizeof out);
    assert_non_null(strstr(out, "nothing was sent again"));

    /* Another body under the same local id is refused. */
    body_file(other, sizeof other, "epr-1-changed", "Booking at 13 weeks");
    expect(1, "E_DUPLICATE",
           (const char *[]){"send", "--to", "social-care", "--type", "referral", "--body", other,
                            "--local-id", "EPR-1", NULL},
           out, sizeof out);
    assert_non_null(strstr(out, id)); /* it names the message holding the local id */
    expect(1, "E_INVAL",
           (const char *[]){"send", "--to", "social-care", "--type", "referral", "--body", other,
                            "--local-id", "EPR 1", NULL},
           out, sizeof out);

    fence("FENCE-1");
    assert_int_equal(inbox_count(), before + 2); /* EPR-1 once, and the fence */
    assert_int_equal(h_sql_int(&g_net, "data/midwifery/agent.db",
                               "SELECT count(*) FROM outbox WHERE local_id = 'EPR-1'"),
                     1);
}

static void test_status_and_outbox_by_local_id(void **state)
{
    (void)state;
    char out[65536];
    json_t *st = cli_json((const char *[]){"status", "EPR-1", "--json", NULL});
    const char *id = str(st, "message_id");
    assert_int_equal(strlen(id), 32);
    assert_string_equal(str(st, "local_id"), "EPR-1");
    assert_string_equal(str(st, "state"), "stored");
    expect(0, "local id   EPR-1", (const char *[]){"status", "EPR-1", NULL}, out, sizeof out);
    assert_non_null(strstr(out, id));
    expect(0, "local id   EPR-1", (const char *[]){"status", id, NULL}, out, sizeof out);
    expect(1, "E_NOTFOUND", (const char *[]){"status", "EPR-404", NULL}, out, sizeof out);

    expect(0, "LOCAL ID", (const char *[]){"outbox", "list", NULL}, out, sizeof out);
    assert_non_null(strstr(out, "EPR-1"));
    json_t *rows = cli_json((const char *[]){"outbox", "list", "--json", NULL});
    json_t *row;
    size_t i, found = 0;
    json_array_foreach(rows, i, row)
    {
        if (strcmp(str(row, "local_id"), "EPR-1") == 0) {
            found++;
            assert_string_equal(str(row, "message_id"), id);
        }
    }
    assert_int_equal(found, 1);
    json_decref(rows);
    json_decref(st);
}

/* The local id is kept in the agent's database: a restarted agent still knows it. */
static void test_local_id_survives_restart(void **state)
{
    (void)state;
    char path[600];
    json_t *st = cli_json((const char *[]){"status", "EPR-1", "--json", NULL});
    int mw = h_agent_index(&g_net, "midwifery");
    h_stop(&g_net.agents[mw]);
    assert_int_equal(h_net_start_agent(&g_net, "midwifery"), 0);
    body_file(path, sizeof path, "epr-1", "Booking at 12 weeks");
    json_t *r = cli_json((const char *[]){"send", "--to", "social-care", "--type", "referral",
                                          "--body", path, "--local-id", "EPR-1", "--json", NULL});
    assert_string_equal(str(r, "message_id"), str(st, "message_id"));
    assert_true(json_is_true(json_object_get(r, "repeat")));
    json_decref(r);
    json_decref(st);
}

/* The same through librefex-client, as a maternity system would call it. */
static void test_client_library_send_twice(void **state)
{
    (void)state;
    char conf[600], body[2048], first[33], second[33], *reply = NULL, *status = NULL;
    refex_client *c = NULL;
    const char *to[] = {"social-care"};
    h_path(&g_net, conf, sizeof conf, "conf/midwifery.conf");
    snprintf(body, sizeof body, BODY_FMT, "Sent by the library");
    refex_client_message m = {.type = "referral",
                              .to = to,
                              .n_to = 1,
                              .body_json = body,
                              .wait = 1,
                              .local_id = "EPR-LIB-1"};
    long long before = inbox_count();
    assert_ok(refex_client_open(conf, &c));
    if (refex_client_send(c, &m, first, NULL) != REFEX_OK)
        fail_msg("refex_client_send: %s", refex_client_error(c));
    assert_int_equal(strlen(first), 32);
    assert_ok(refex_client_send(c, &m, second, &reply));
    assert_string_equal(first, second);
    json_t *r = json_loads(reply, 0, NULL);
    assert_true(json_is_true(json_object_get(r, "repeat")));
    assert_string_equal(str(r, "state"), "stored");
    json_decref(r);
    refex_client_free(reply);

    snprintf(body, sizeof body, BODY_FMT, "Changed after the first send");
    assert_rc(refex_client_send(c, &m, second, NULL), REFEX_E_DUPLICATE);
    assert_non_null(strstr(refex_client_error(c), "E_DUPLICATE"));
    assert_string_equal(second, ""); /* no id for a refusal of the submission */
    m.local_id = "EPR LIB";
    assert_rc(refex_client_send(c, &m, second, NULL), REFEX_E_INVAL);

    assert_ok(refex_client_message_status(c, "EPR-LIB-1", &status));
    r = json_loads(status, 0, NULL);
    assert_string_equal(str(r, "message_id"), first);
    assert_string_equal(str(r, "local_id"), "EPR-LIB-1");
    json_decref(r);
    refex_client_free(status);
    refex_client_close(&c);

    fence("FENCE-2");
    assert_int_equal(inbox_count(), before + 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_send_twice_delivers_once),
        cmocka_unit_test(test_status_and_outbox_by_local_id),
        cmocka_unit_test(test_local_id_survives_restart),
        cmocka_unit_test(test_client_library_send_twice),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
