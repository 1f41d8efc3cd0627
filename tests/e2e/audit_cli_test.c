/* The auditor's reports end to end: a real broker, midwifery and social care exchange
 * referrals, then `refex audit query|export|proof|reconcile` run on copies of their logs.
 * A subject-access query finds exactly that person's entries; an export lets the root be
 * recomputed from the leaf bytes alone; a proof verifies independently; reconciling the two
 * logs is clean until a copy loses an entry. Reading a log through its agent is audited. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sodium.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../unit/testing.h"
#include "harness.h"
#include "merkle.h"
#include "util.h"

#define OUT_MAX (1 << 20)

static h_net g_net;
static char *g_out;         /* CLI output */
static char g_ids[3][33];   /* the three referrals, in send order */
static char g_mw[700];      /* snapshot of midwifery's log */
static char g_sc[700];      /* snapshot of social care's log */
static long long g_mw_size; /* entries in the midwifery snapshot */

static const char *const AGENCIES[] = {"midwifery", "social-care", NULL};

/* Sends one referral from midwifery to social care; returns 0 and its id in g_ids[i]. */
static int send_referral(int i, const char *subject, const char *parent, const char *case_ref,
                         const char *article6)
{
    json_t *body = h_required(
        "referral",
        json_pack("{s:s, s:{s:s, s:s, s:i}, s:s, s:{s:s, s:s}, s:s}", "kind", "REFERRAL_PRE_BIRTH",
                  "subject", "kind", "SUBJECT_UNBORN", "reference", subject, "gestation_weeks", 12,
                  "summary", "synthetic referral for the audit report test", "lawful_basis",
                  "article6", article6, "article9", "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST",
                  "consent", "CONSENT_NOT_SOUGHT_SAFEGUARDING"));
    if (parent)
        json_object_set_new(body, "parents", json_pack("[{s:s}]", "reference", parent));
    json_t *req = json_pack("{s:s, s:[s], s:s, s:s, s:o, s:b}", "cmd", "send", "to", "social-care",
                            "type", "referral", "case", case_ref, "body", body, "wait", 1);
    json_t *r = h_control(&g_net, "midwifery", req);
    json_decref(req);
    int rc = -1;
    if (r && json_is_true(json_object_get(r, "ok"))) {
        snprintf(g_ids[i], sizeof g_ids[i], "%s",
                 json_string_value(json_object_get(r, "message_id")));
        rc = 0;
    }
    json_decref(r);
    return rc;
}

/* A consistent copy of a live log (SQLite online backup). */
static int snapshot(const char *agency, char *path, size_t len, const char *name)
{
    char src[700];
    sqlite3 *s = NULL, *d = NULL;
    h_path(&g_net, src, sizeof src, "data/%s/agent.db", agency);
    h_path(&g_net, path, len, "%s", name);
    int rc = -1;
    if (sqlite3_open_v2(src, &s, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_open(path, &d) == SQLITE_OK) {
        sqlite3_backup *b = sqlite3_backup_init(d, "main", s, "main");
        if (b && sqlite3_backup_step(b, -1) == SQLITE_DONE)
            rc = 0;
        sqlite3_backup_finish(b);
    }
    sqlite3_close(s);
    sqlite3_close(d);
    return rc;
}

static long long sql_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* A copy of `from` with the audit rows matching `where` deleted, as an insider with the
 * file could. */
static void doctored_copy(const char *from, const char *name, const char *where, char *path,
                          size_t len)
{
    sqlite3 *s = NULL, *d = NULL;
    char sql[512];
    h_path(&g_net, path, len, "%s", name);
    assert_int_equal(sqlite3_open_v2(from, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_open(path, &d), SQLITE_OK);
    sqlite3_backup *b = sqlite3_backup_init(d, "main", s, "main");
    assert_non_null(b);
    assert_int_equal(sqlite3_backup_step(b, -1), SQLITE_DONE);
    sqlite3_backup_finish(b);
    snprintf(sql, sizeof sql, "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE %s", where);
    assert_int_equal(sqlite3_exec(d, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_changes(d), 1);
    sqlite3_close(s);
    sqlite3_close(d);
}

/* Runs `refex ARGS...` and returns the exit code; output in g_out. */
static int cli(const char *const *args)
{
    return h_cli(&g_net, g_out, OUT_MAX, args);
}

static json_t *parse_out(void)
{
    json_error_t jerr;
    json_t *j = json_loads(g_out, 0, &jerr);
    if (!j)
        fail_msg("not JSON (%s): %.400s", jerr.text, g_out);
    return j;
}

/* Runs a query on a log and returns how many entries it matched (via --json). */
static size_t query_count(const char *db, const char *const *filters)
{
    const char *args[32] = {"audit", "query", "--json", "--db", db};
    int k = 5;
    for (int i = 0; filters[i]; i++)
        args[k++] = filters[i];
    args[k] = NULL;
    int rc = cli(args);
    if (rc != 0)
        fail_msg("audit query exit %d: %.400s", rc, g_out);
    json_t *j = parse_out();
    assert_true(json_is_array(j));
    size_t n = json_array_size(j);
    json_decref(j);
    return n;
}

static int b64_decode(const char *s, uint8_t *out, size_t cap, size_t *len)
{
    return sodium_base642bin(out, cap, s, strlen(s), NULL, len, NULL,
                             sodium_base64_VARIANT_ORIGINAL);
}

static int setup(void **state)
{
    (void)state;
    g_out = malloc(OUT_MAX);
    if (!g_out || h_net_init(&g_net, AGENCIES, NULL, NULL) != 0 || h_net_start_broker(&g_net) != 0)
        return -1;
    for (int i = 0; AGENCIES[i]; i++)
        if (h_net_start_agent(&g_net, AGENCIES[i]) != 0)
            return -1;
    if (send_referral(0, "UB-7F3K-2041", "P-MUM-0001", "CASE-A", "ARTICLE6_PUBLIC_TASK") ||
        send_referral(1, "UB-9ZZZ-0001", "P-MUM-0001", "CASE-B", "ARTICLE6_PUBLIC_TASK") ||
        send_referral(2, "UB-7F3K-2041", NULL, "CASE-C", "ARTICLE6_LEGAL_OBLIGATION"))
        return -1;
    /* Delivered: midwifery holds social care's signed receipt for each. */
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (h_sql_int(&g_net, "data/midwifery/agent.db",
                     "SELECT count(*) FROM audit WHERE event = 'receipt'") != 3) {
        if (refex_mono_ms() > deadline)
            return -1;
        h_pause();
    }
    /* ... and has signed a checkpoint of all six entries. */
    deadline = refex_mono_ms() + H_TIMEOUT_MS * 2;
    while (h_sql_int(&g_net, "data/midwifery/agent.db",
                     "SELECT IFNULL(MAX(size), 0) FROM audit_checkpoints") != 6) {
        if (refex_mono_ms() > deadline)
            return -1;
        h_pause();
    }
    if (snapshot("midwifery", g_mw, sizeof g_mw, "mw.db") ||
        snapshot("social-care", g_sc, sizeof g_sc, "sc.db"))
        return -1;
    g_mw_size = sql_int(g_mw, "SELECT count(*) FROM audit");
    return g_mw_size == 6 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    free(g_out);
    return 0;
}

/* ---- query ----------------------------------------------------------------------------- */

static void test_query_by_subject(void **state)
{
    (void)state;
    /* Every disclosure about this person: the send and the receipt of referrals 1 and 3. */
    const char *args[] = {"audit",  "query", "--subject", "UB-7F3K-2041",
                          "--json", "--db",  g_mw,        NULL};
    assert_int_equal(cli(args), 0);
    json_t *j = parse_out(), *e;
    size_t i;
    assert_int_equal(json_array_size(j), 4);
    json_array_foreach(j, i, e)
    {
        const char *id = json_string_value(json_object_get(e, "message_id"));
        assert_true(strcmp(id, g_ids[0]) == 0 || strcmp(id, g_ids[2]) == 0);
        assert_non_null(strstr(json_string_value(json_object_get(e, "subjects")), "UB-7F3K-2041"));
        assert_int_equal(strlen(json_string_value(json_object_get(e, "leaf_hash"))), 64);
    }
    json_decref(j);
    /* A parent is matched as the second element; a prefix or other case is not a match. */
    assert_int_equal(query_count(g_mw, (const char *[]){"--subject", "P-MUM-0001", NULL}), 4);
    assert_int_equal(query_count(g_mw, (const char *[]){"--subject", "UB-7F3K", NULL}), 0);
    assert_int_equal(query_count(g_mw, (const char *[]){"--subject", "ub-7f3k-2041", NULL}), 0);
    assert_int_equal(query_count(g_mw, (const char *[]){"--subject", "UB-7F3K-204_", NULL}), 0);
    /* The recipient's log: the two receives. */
    assert_int_equal(query_count(g_sc, (const char *[]){"--subject", "UB-7F3K-2041", NULL}), 2);
    /* The table names the messages. */
    const char *table[] = {"audit", "query", "--subject", "UB-9ZZZ-0001", "--db", g_mw, NULL};
    assert_int_equal(cli(table), 0);
    assert_non_null(strstr(g_out, g_ids[1]));
    assert_non_null(strstr(g_out, "SUBJECTS"));
    assert_null(strstr(g_out, g_ids[0]));
}

static void test_query_filters(void **state)
{
    (void)state;
    assert_int_equal(query_count(g_mw, (const char *[]){"--case", "CASE-B", NULL}), 2);
    assert_int_equal(
        query_count(g_mw, (const char *[]){"--peer", "social-care", "--event", "send", NULL}), 3);
    assert_int_equal(query_count(g_mw, (const char *[]){"--peer", "social", NULL}), 0);
    assert_int_equal(query_count(g_mw, (const char *[]){"--event", "receipt", NULL}), 3);
    assert_int_equal(query_count(g_sc, (const char *[]){"--event", "receive", "--peer", "midwifery",
                                                        "--outcome", "success", NULL}),
                     3);
    assert_int_equal(query_count(g_mw, (const char *[]){"--article6", "legal-obligation", NULL}),
                     2);
    assert_int_equal(
        query_count(g_mw, (const char *[]){"--article6", "ARTICLE6_PUBLIC_TASK", "--consent",
                                           "not-sought-safeguarding", "--article9",
                                           "substantial-public-interest", NULL}),
        4);
    assert_int_equal(query_count(g_mw, (const char *[]){"--message", g_ids[2], NULL}), 2);

    /* Periods: dates, timestamps and epoch milliseconds. */
    long long first = sql_int(g_mw, "SELECT MIN(time_ms) FROM audit");
    long long last = sql_int(g_mw, "SELECT MAX(time_ms) FROM audit");
    char day[16], after[32], first_ms[32], last_ms[32];
    time_t t = (time_t)(first / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(day, sizeof day, "%Y-%m-%d", &tm);
    snprintf(after, sizeof after, "%lld", last + 3600 * 1000);
    snprintf(first_ms, sizeof first_ms, "%lld", first);
    snprintf(last_ms, sizeof last_ms, "%lld", last);
    assert_int_equal(query_count(g_mw, (const char *[]){"--since", day, NULL}), (size_t)g_mw_size);
    assert_int_equal(query_count(g_mw, (const char *[]){"--since", "2000-01-01", "--until",
                                                        "2999-12-31T23:59:59Z", NULL}),
                     (size_t)g_mw_size);
    assert_int_equal(query_count(g_mw, (const char *[]){"--until", "2000-01-01", NULL}), 0);
    assert_int_equal(query_count(g_mw, (const char *[]){"--since", after, NULL}), 0);
    assert_int_equal(
        query_count(g_mw, (const char *[]){"--since", first_ms, "--until", first_ms, NULL}),
        (size_t)sql_int(g_mw, "SELECT count(*) FROM audit WHERE time_ms = "
                              "(SELECT MIN(time_ms) FROM audit)"));
    assert_int_equal(query_count(g_mw, (const char *[]){"--until", last_ms, NULL}),
                     (size_t)g_mw_size);
}

static void test_query_through_agent_is_audited(void **state)
{
    (void)state;
    const char *sql = "SELECT count(*) FROM audit WHERE event = 'audit-log-used' AND "
                      "outcome = 'success: query' AND purpose = 'PURPOSE_AUDIT'";
    long long before = h_sql_int(&g_net, "data/midwifery/agent.db", sql);
    assert_true(before >= 0);
    const char *args[] = {"audit", "query", "--subject", "UB-7F3K-2041", "--json", NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", g_out, OUT_MAX, args), 0);
    json_t *j = parse_out();
    assert_int_equal(json_array_size(j), 4);
    json_decref(j);
    /* The agent committed the entry before it answered, and the CLI waited for that. */
    assert_int_equal(h_sql_int(&g_net, "data/midwifery/agent.db", sql), before + 1);
    /* The entry names the tool, never the filter values. */
    assert_int_equal(h_sql_int(&g_net, "data/midwifery/agent.db",
                               "SELECT count(*) FROM audit WHERE event = 'audit-log-used' AND "
                               "(outcome LIKE '%UB-7F3K%' OR subjects != '')"),
                     0);
    const char *exp[] = {"audit", "export", "--format", "csv", NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", g_out, OUT_MAX, exp), 0);
    assert_int_equal(h_sql_int(&g_net, "data/midwifery/agent.db",
                               "SELECT count(*) FROM audit WHERE event = 'audit-log-used' AND "
                               "outcome = 'success: export'"),
                     1);
}

/* ---- export ---------------------------------------------------------------------------- */

static void test_export_json_recomputes_root(void **state)
{
    (void)state;
    char file[700];
    h_path(&g_net, file, sizeof file, "export.json");
    const char *args[] = {"audit", "export", "--format", "json", "--db", g_mw, "--out", file, NULL};
    assert_int_equal(cli(args), 0);
    json_error_t jerr;
    json_t *doc = json_load_file(file, 0, &jerr), *e;
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "format")), "refex-audit-export/v1");
    assert_string_equal(json_string_value(json_object_get(doc, "agency")), "midwifery");
    json_t *entries = json_object_get(doc, "entries");
    size_t n = json_array_size(entries), i;
    assert_int_equal(n, (size_t)g_mw_size);
    assert_int_equal(json_integer_value(json_object_get(doc, "size")), g_mw_size);
    assert_true(json_is_array(json_object_get(doc, "checkpoints")));
    assert_true(json_is_array(json_object_get(doc, "cosignatures")));

    /* A third party's view: only the leaf bytes. */
    uint8_t(*leaves)[32] = calloc(n, 32), root[32];
    assert_non_null(leaves);
    json_array_foreach(entries, i, e)
    {
        uint8_t bytes[4096];
        size_t len = 0;
        char hex[65];
        assert_int_equal(json_integer_value(json_object_get(e, "seq")), (json_int_t)i + 1);
        assert_int_equal(
            b64_decode(json_string_value(json_object_get(e, "leaf")), bytes, sizeof bytes, &len),
            0);
        refex_merkle_leaf_hash(bytes, len, leaves[i]);
        refex_hex_encode(hex, leaves[i], 32);
        assert_string_equal(hex, json_string_value(json_object_get(e, "leaf_hash")));
        assert_non_null(json_object_get(e, "article6"));
        assert_non_null(json_object_get(e, "subjects"));
    }
    assert_ok(refex_merkle_root((const uint8_t(*)[32])leaves, n, root));
    free(leaves);
    char b64[64];
    sodium_bin2base64(b64, sizeof b64, root, 32, sodium_base64_VARIANT_ORIGINAL);
    assert_string_equal(b64, json_string_value(json_object_get(doc, "root")));
    json_decref(doc);

    /* ... and the same root as refex audit verify. */
    const char *verify[] = {"audit", "verify", "--db", g_mw, "--json", NULL};
    assert_int_equal(cli(verify), 0);
    json_t *v = parse_out();
    assert_string_equal(b64, json_string_value(json_object_get(v, "root")));
    json_decref(v);
}

/* On a terminal (script(1) gives the CLI one) verify and export print a progress line to
 * stderr: entries done / total and the rate; on a pipe, nothing. */
static void test_progress_on_a_terminal(void **state)
{
    (void)state;
    char cmd[3000], out[8192], want[128], file[700];
    h_path(&g_net, file, sizeof file, "progress.json");
    snprintf(want, sizeof want, "verify: %lld / %lld entries (", (long long)g_mw_size,
             (long long)g_mw_size);
    snprintf(cmd, sizeof cmd, "'%s/refex' audit verify --db '%s'", g_net.bin, g_mw);
    char *tty[] = {"/usr/bin/script", "-qec", cmd, "/dev/null", NULL};
    assert_int_equal(h_run(tty, out, sizeof out), 0);
    if (!strstr(out, want))
        fail_msg("no progress line on a terminal: %s", out);
    /* the same without a terminal: no progress line */
    const char *plain[] = {"audit", "verify", "--db", g_mw, NULL};
    assert_int_equal(cli(plain), 0);
    assert_null(strstr(g_out, "entries ("));
    snprintf(cmd, sizeof cmd, "'%s/refex' audit export --format json --db '%s' --out '%s'",
             g_net.bin, g_mw, file);
    char *tty_export[] = {"/usr/bin/script", "-qec", cmd, "/dev/null", NULL};
    assert_int_equal(h_run(tty_export, out, sizeof out), 0);
    assert_non_null(strstr(out, "export: verify: "));
}

static void test_export_csv(void **state)
{
    (void)state;
    const char *args[] = {"audit", "export", "--format", "csv", "--db", g_mw, NULL};
    assert_int_equal(cli(args), 0);
    assert_int_equal(strncmp(g_out, "seq,time,time_ms,event,outcome,agency,", 38), 0);
    size_t lines = 0;
    for (const char *p = g_out; (p = strstr(p, "\r\n")) != NULL; p += 2)
        lines++;
    assert_int_equal(lines, (size_t)g_mw_size + 1);
    /* The comma-separated subjects are one quoted field. */
    assert_non_null(strstr(g_out, ",\"UB-7F3K-2041,P-MUM-0001\","));
    assert_non_null(strstr(g_out, g_ids[0]));
}

static void test_export_fhir(void **state)
{
    (void)state;
    const char *args[] = {"audit", "export", "--format", "fhir", "--db", g_sc, NULL};
    assert_int_equal(cli(args), 0);
    json_t *b = parse_out(), *x;
    size_t i;
    assert_string_equal(json_string_value(json_object_get(b, "resourceType")), "Bundle");
    assert_string_equal(json_string_value(json_object_get(b, "type")), "collection");
    json_t *entries = json_object_get(b, "entry");
    assert_int_equal(json_array_size(entries), (size_t)sql_int(g_sc, "SELECT count(*) FROM audit"));
    int imports = 0;
    json_array_foreach(entries, i, x)
    {
        json_t *r = json_object_get(x, "resource");
        assert_string_equal(json_string_value(json_object_get(r, "resourceType")), "AuditEvent");
        assert_non_null(json_object_get(r, "recorded"));
        assert_non_null(json_object_get(r, "agent"));
        json_t *obs = json_object_get(json_object_get(r, "source"), "observer");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(obs, "identifier"), "value")),
            "social-care");
        json_t *type = json_object_get(r, "type");
        if (strcmp(json_string_value(json_object_get(type, "code")), "110107") == 0) {
            imports++;
            assert_string_equal(json_string_value(json_object_get(r, "outcome")), "0");
            assert_string_equal(json_string_value(json_object_get(r, "action")), "C");
        }
    }
    assert_int_equal(imports, 3);
    /* The lawful basis travels as entity details; people only as identifiers. */
    char *text = json_dumps(b, JSON_COMPACT);
    assert_non_null(strstr(text, "\"type\":\"article6\",\"valueString\":\"ARTICLE6_PUBLIC_TASK\""));
    assert_non_null(strstr(text, "\"value\":\"UB-7F3K-2041\""));
    assert_null(strstr(text, "synthetic referral"));
    free(text);
    json_decref(b);
}

/* ---- proof ----------------------------------------------------------------------------- */

/* signed: 1 if the proof must be against a signed checkpoint, 0 if it must not, -1 either. */
static void check_proof(const char *entry, const char *size, uint64_t want_size, int signed_cp)
{
    const char *args[] = {"audit", "proof", "--entry", entry,
                          "--db",  g_mw,    "--json",  size ? "--size" : NULL,
                          size,    NULL};
    int rc = cli(args);
    if (rc != 0)
        fail_msg("audit proof exit %d: %.400s", rc, g_out);
    json_t *j = parse_out(), *h;
    uint8_t leaf[4096], leaf_hash[32], want[32], root[32], (*path)[32] = NULL;
    size_t len = 0, n, i;
    uint64_t index = (uint64_t)json_integer_value(json_object_get(j, "leaf_index"));
    uint64_t tsize = (uint64_t)json_integer_value(json_object_get(j, "tree_size"));
    assert_int_equal(index + 1, (uint64_t)json_integer_value(json_object_get(j, "entry")));
    assert_int_equal(index + 1, strtoull(entry, NULL, 10));
    if (want_size)
        assert_int_equal(tsize, want_size);
    assert_int_equal(
        b64_decode(json_string_value(json_object_get(j, "leaf")), leaf, sizeof leaf, &len), 0);
    refex_merkle_leaf_hash(leaf, len, leaf_hash);
    assert_int_equal(
        b64_decode(json_string_value(json_object_get(j, "leaf_hash")), want, sizeof want, &n), 0);
    assert_memory_equal(leaf_hash, want, 32);
    assert_int_equal(
        b64_decode(json_string_value(json_object_get(j, "root")), root, sizeof root, &n), 0);
    n = json_array_size(json_object_get(j, "proof"));
    path = calloc(n ? n : 1, 32);
    json_array_foreach(json_object_get(j, "proof"), i, h)
    {
        size_t hl = 0;
        assert_int_equal(b64_decode(json_string_value(h), path[i], 32, &hl), 0);
        assert_int_equal(hl, 32);
    }
    assert_ok(refex_merkle_verify_inclusion(index, tsize, leaf_hash, (const uint8_t(*)[32])path, n,
                                            root));
    /* A damaged leaf does not verify. */
    leaf_hash[0] ^= 1;
    assert_rc(
        refex_merkle_verify_inclusion(index, tsize, leaf_hash, (const uint8_t(*)[32])path, n, root),
        REFEX_E_TAMPERED);
    /* If signed, the checkpoint note commits to that size and root. */
    const char *note = json_string_value(json_object_get(j, "checkpoint"));
    if (signed_cp >= 0)
        assert_int_equal(note != NULL, signed_cp);
    if (note) {
        char line[128];
        snprintf(line, sizeof line, "\n%llu\n%s\n", (unsigned long long)tsize,
                 json_string_value(json_object_get(j, "root")));
        assert_non_null(strstr(note, line));
    } else {
        assert_true(json_is_null(json_object_get(j, "checkpoint")));
        assert_non_null(strstr(json_string_value(json_object_get(j, "note")), "unsigned"));
    }
    free(path);
    json_decref(j);
}

static void test_proof(void **state)
{
    (void)state;
    char last[24];
    snprintf(last, sizeof last, "%lld", g_mw_size);
    /* Against the latest signed checkpoint (all six entries), or a tree size asked for. */
    check_proof("1", NULL, (uint64_t)g_mw_size, 1);
    check_proof("1", "1", 1, -1);
    check_proof("2", last, (uint64_t)g_mw_size, 1);
    check_proof(last, NULL, (uint64_t)g_mw_size, 1);
    check_proof("3", "5", 5, -1);
    /* The human-readable form says it verified. */
    const char *args[] = {"audit", "proof", "--entry", "1", "--db", g_mw, NULL};
    assert_int_equal(cli(args), 0);
    assert_non_null(strstr(g_out, "verified"));
}

/* ---- reconcile ------------------------------------------------------------------------- */

static void test_reconcile(void **state)
{
    (void)state;
    const char *clean[] = {"audit", "reconcile", g_mw, g_sc, NULL};
    int rc = cli(clean);
    if (rc != 0)
        fail_msg("clean reconcile exit %d: %s", rc, g_out);
    assert_non_null(strstr(g_out, "0 discrepancies"));
    const char *clean_json[] = {"audit", "reconcile", g_mw, g_sc, "--json", NULL};
    assert_int_equal(cli(clean_json), 0);
    json_t *j = parse_out();
    assert_int_equal(json_integer_value(json_object_get(j, "discrepancies")), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "a"), "agency")),
                        "midwifery");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "b"), "agency")),
                        "social-care");
    json_decref(j);

    /* Social care's copy loses the receive of referral 2: sent but not received, although
     * midwifery holds social care's signed receipt for it. */
    char bad_sc[700], where[256];
    snprintf(where, sizeof where, "event = 'receive' AND message_id = '%s'", g_ids[1]);
    doctored_copy(g_sc, "sc-doctored.db", where, bad_sc, sizeof bad_sc);
    const char *bad[] = {"audit", "reconcile", g_mw, bad_sc, NULL};
    assert_int_equal(cli(bad), 1);
    assert_non_null(strstr(g_out, g_ids[1]));
    assert_non_null(strstr(g_out, "1 discrepancy"));
    const char *bad_json[] = {"audit", "reconcile", g_mw, bad_sc, "--json", NULL};
    assert_int_equal(cli(bad_json), 1);
    j = parse_out();
    json_t *snr = json_object_get(j, "sent_not_received");
    assert_int_equal(json_array_size(snr), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(snr, 0), "message_id")),
                        g_ids[1]);
    assert_non_null(
        strstr(json_string_value(json_object_get(json_array_get(snr, 0), "note")), "receipt"));
    assert_int_equal(json_array_size(json_object_get(j, "received_not_sent")), 0);
    assert_int_equal(json_array_size(json_object_get(j, "unacknowledged")), 0);
    json_decref(j);

    /* Midwifery's copy loses the send of referral 3: received but never sent. */
    char bad_mw[700];
    snprintf(where, sizeof where, "event = 'send' AND message_id = '%s'", g_ids[2]);
    doctored_copy(g_mw, "mw-no-send.db", where, bad_mw, sizeof bad_mw);
    const char *unsent[] = {"audit", "reconcile", bad_mw, g_sc, "--json", NULL};
    assert_int_equal(cli(unsent), 1);
    j = parse_out();
    json_t *rns = json_object_get(j, "received_not_sent");
    assert_int_equal(json_array_size(rns), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rns, 0), "message_id")),
                        g_ids[2]);
    assert_int_equal(json_array_size(json_object_get(j, "sent_not_received")), 0);
    json_decref(j);

    /* Midwifery's copy loses the receipt of referral 1: unacknowledged, once the SLA has
     * passed (not within the default 24 hours). */
    snprintf(where, sizeof where, "event = 'receipt' AND message_id = '%s'", g_ids[0]);
    doctored_copy(g_mw, "mw-no-receipt.db", where, bad_mw, sizeof bad_mw);
    const char *within[] = {"audit", "reconcile", bad_mw, g_sc, NULL};
    assert_int_equal(cli(within), 0);
    long long sent = sql_int(g_mw, "SELECT MAX(time_ms) FROM audit WHERE event = 'send'");
    while (refex_now_ms() <= sent + 1100)
        h_pause();
    const char *late[] = {"audit", "reconcile", bad_mw, g_sc, "--sla", "1s", "--json", NULL};
    assert_int_equal(cli(late), 1);
    j = parse_out();
    json_t *un = json_object_get(j, "unacknowledged");
    assert_int_equal(json_array_size(un), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(un, 0), "message_id")),
                        g_ids[0]);
    assert_int_equal(json_integer_value(json_object_get(j, "sla_seconds")), 1);
    json_decref(j);
}

/* ---- bad input ------------------------------------------------------------------------- */

static void expect(int want, const char *needle, const char *const *args)
{
    int rc = cli(args);
    if (rc != want || (needle && !strstr(g_out, needle)))
        fail_msg("%s %s: exit %d (want %d): %.400s", args[1], args[2] ? args[2] : "", rc, want,
                 g_out);
}

static void test_bad_input(void **state)
{
    (void)state;
    char garbage[700];
    h_path(&g_net, garbage, sizeof garbage, "garbage.db");
    FILE *f = fopen(garbage, "w");
    assert_non_null(f);
    fputs("this is not an SQLite database, not even close; it is long enough to be looked at by "
          "SQLite as a header of sorts................................................",
          f);
    fclose(f);
    const char *missing = "/nonexistent/agent.db";

    expect(2, "unknown --format",
           (const char *[]){"audit", "export", "--format", "xml", "--db", g_mw, NULL});
    expect(2, "--format", (const char *[]){"audit", "export", "--db", g_mw, NULL});
    expect(2, "--since",
           (const char *[]){"audit", "query", "--since", "2025-13-45", "--db", g_mw, NULL});
    expect(2, "--since",
           (const char *[]){"audit", "query", "--since", "2025-02-30", "--db", g_mw, NULL});
    expect(2, "--until",
           (const char *[]){"audit", "query", "--until", "yesterday", "--db", g_mw, NULL});
    expect(2, "is after",
           (const char *[]){"audit", "query", "--since", "2025-02-01", "--until", "2025-01-01",
                            "--db", g_mw, NULL});
    expect(2, "unknown --article6",
           (const char *[]){"audit", "query", "--article6", "because", "--db", g_mw, NULL});
    expect(2, "unknown --event",
           (const char *[]){"audit", "query", "--event", "sent", "--db", g_mw, NULL});
    expect(2, "without commas",
           (const char *[]){"audit", "query", "--subject", "A,B", "--db", g_mw, NULL});
    expect(2, "unknown argument",
           (const char *[]){"audit", "query", "--colour", "red", "--db", g_mw, NULL});
    expect(2, "--entry", (const char *[]){"audit", "proof", "--entry", "0", "--db", g_mw, NULL});
    expect(2, "--entry", (const char *[]){"audit", "proof", "--entry", "-1", "--db", g_mw, NULL});
    expect(2, "--entry", (const char *[]){"audit", "proof", "--db", g_mw, NULL});
    expect(2, "--size",
           (const char *[]){"audit", "proof", "--entry", "3", "--size", "2", "--db", g_mw, NULL});
    expect(1, "no entry 1000",
           (const char *[]){"audit", "proof", "--entry", "1000", "--db", g_mw, NULL});
    expect(
        1, "only",
        (const char *[]){"audit", "proof", "--entry", "1", "--size", "1000", "--db", g_mw, NULL});
    expect(1, "no such file", (const char *[]){"audit", "query", "--db", missing, NULL});
    expect(1, "no such file",
           (const char *[]){"audit", "export", "--format", "json", "--db", missing, NULL});
    expect(1, "no such file",
           (const char *[]){"audit", "proof", "--entry", "1", "--db", missing, NULL});
    expect(1, "no such file", (const char *[]){"audit", "reconcile", g_mw, missing, NULL});
    expect(1, "not a readable SQLite database",
           (const char *[]){"audit", "query", "--db", garbage, NULL});
    expect(1, "not a readable SQLite database",
           (const char *[]){"audit", "reconcile", g_mw, garbage, NULL});
    expect(1, "both logs", (const char *[]){"audit", "reconcile", g_mw, g_mw, NULL});
    expect(2, "two audit databases", (const char *[]){"audit", "reconcile", g_mw, NULL});
    expect(2, "--sla", (const char *[]){"audit", "reconcile", g_mw, g_sc, "--sla", "5x", NULL});
    expect(2, "--sla", (const char *[]){"audit", "reconcile", g_mw, g_sc, "--sla", "0h", NULL});
    /* An unwritable --out leaves nothing behind and fails. */
    expect(1, "/nonexistent/out.json",
           (const char *[]){"audit", "export", "--format", "json", "--db", g_mw, "--out",
                            "/nonexistent/out.json", NULL});
    /* Every command explains itself. */
    const char *subs[] = {"query", "export", "proof", "reconcile"};
    for (int i = 0; i < 4; i++)
        expect(0, "usage: refex", (const char *[]){"audit", subs[i], "--help", NULL});
    expect(0, "every disclosure about this person:",
           (const char *[]){"audit", "query", "--help", NULL});
}

/* Every audit subcommand parses with getopt_long: --opt=value and --opt value alike; an
 * unknown option, a missing or bad value, or a long option abbreviated is a usage error
 * (exit 2) that names the option. */
static void test_options(void **state)
{
    (void)state;
    char db_eq[800], conf[600], key[600], key_eq[700];
    snprintf(db_eq, sizeof db_eq, "--db=%s", g_mw);
    h_path(&g_net, conf, sizeof conf, "conf/midwifery.conf");
    h_path(&g_net, key, sizeof key, "keys/midwifery.public");
    snprintf(key_eq, sizeof key_eq, "--key=%s", key);

    /* The = form gives the same answers as the separate form. */
    assert_int_equal(query_count(g_mw, (const char *[]){"--case=CASE-B", NULL}), 2);
    assert_int_equal(
        query_count(g_mw, (const char *[]){"--peer=social-care", "--event", "send", NULL}), 3);
    const char *q_eq[] = {"audit", "query", "--subject=UB-7F3K-2041", "--json", db_eq, NULL};
    assert_int_equal(cli(q_eq), 0);
    json_t *j = parse_out();
    assert_int_equal(json_array_size(j), 4);
    json_decref(j);
    expect(0, "\"tree_size\": 5",
           (const char *[]){"audit", "proof", "--entry=3", "--size=5", db_eq, "--json", NULL});
    expect(0, "seq,time,time_ms,",
           (const char *[]){"audit", "export", "--format=csv", db_eq, NULL});
    expect(0, "0 discrepancies",
           (const char *[]){"audit", "reconcile", g_mw, g_sc, "--sla=1h", NULL});
    expect(0, "checkpoint(s) signed by midwifery match",
           (const char *[]){"audit", "verify", db_eq, key_eq, NULL});
    /* -c FILE inside the subcommand still names the agent (and the read is recorded). */
    expect(0, "matching", (const char *[]){"audit", "query", "-c", conf, "--case", "CASE-A", NULL});
    assert_null(strstr(g_out, "not recorded"));

    /* Unknown options, named. */
    expect(2, "unknown argument '--jsn'",
           (const char *[]){"audit", "query", "--jsn", "--db", g_mw, NULL});
    expect(2, "refex audit export: unknown argument '--fromat'",
           (const char *[]){"audit", "export", "--fromat", "json", "--db", g_mw, NULL});
    expect(2, "refex audit proof: unknown argument '--entries'",
           (const char *[]){"audit", "proof", "--entries=1", "--db", g_mw, NULL});
    expect(2, "refex audit reconcile: unknown argument '--json-out'",
           (const char *[]){"audit", "reconcile", g_mw, g_sc, "--json-out", NULL});
    expect(2, "refex audit verify: unknown argument '-x'",
           (const char *[]){"audit", "verify", "-x", "--db", g_mw, NULL});
    expect(2, "refex audit witnessed: unknown argument '--db'",
           (const char *[]){"audit", "witnessed", "--db", g_mw, NULL});
    /* A prefix of a real option is not that option. */
    expect(2, "unknown argument '--js'",
           (const char *[]){"audit", "query", "--js", "--db", g_mw, NULL});
    expect(2, "unknown argument '--ent'",
           (const char *[]){"audit", "proof", "--ent", "1", "--db", g_mw, NULL});
    /* A stray positional argument. */
    expect(2, "unknown argument 'extra'",
           (const char *[]){"audit", "query", "--db", g_mw, "extra", NULL});
    /* Missing values, values where none is taken, bad values: named. */
    expect(2, "--case needs a value",
           (const char *[]){"audit", "query", "--db", g_mw, "--case", NULL});
    expect(2, "--db needs a value",
           (const char *[]){"audit", "export", "--format", "json", "--db", NULL});
    expect(2, "--json takes no value",
           (const char *[]){"audit", "query", "--json=yes", "--db", g_mw, NULL});
    expect(2, "--entry", (const char *[]){"audit", "proof", "--entry=abc", "--db", g_mw, NULL});
    expect(2, "--entry", (const char *[]){"audit", "proof", "--entry", "1x", "--db", g_mw, NULL});
    expect(2, "--size",
           (const char *[]){"audit", "proof", "--entry", "1", "--size=-3", db_eq, NULL});
    expect(2, "--sla '5x'", (const char *[]){"audit", "reconcile", g_mw, g_sc, "--sla=5x", NULL});
    expect(2, "--since '2025-02-30'",
           (const char *[]){"audit", "query", "--since=2025-02-30", db_eq, NULL});
    expect(2, "unknown --format 'xml'",
           (const char *[]){"audit", "export", "--format=xml", db_eq, NULL});
}

/* Last: with the agent stopped, a read of its log still works and says it is not recorded. */
static void test_agent_not_running(void **state)
{
    (void)state;
    h_stop(&g_net.agents[h_agent_index(&g_net, "social-care")]);
    const char *args[] = {"audit", "query", "--event", "receive", NULL};
    assert_int_equal(h_cli_agent(&g_net, "social-care", g_out, OUT_MAX, args), 0);
    assert_non_null(strstr(g_out, "not running"));
    assert_non_null(strstr(g_out, "not recorded"));
    assert_non_null(strstr(g_out, g_ids[0]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_progress_on_a_terminal),
        cmocka_unit_test(test_query_by_subject),
        cmocka_unit_test(test_query_filters),
        cmocka_unit_test(test_query_through_agent_is_audited),
        cmocka_unit_test(test_export_json_recomputes_root),
        cmocka_unit_test(test_export_csv),
        cmocka_unit_test(test_export_fhir),
        cmocka_unit_test(test_proof),
        cmocka_unit_test(test_reconcile),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_agent_not_running),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
