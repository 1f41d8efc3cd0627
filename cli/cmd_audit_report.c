/* `refex audit query|export|proof|reconcile`: the auditor's reports, read straight from
 * agent.db files opened read-only, so an auditor can work on a copy without the agency's
 * keys or daemon. Nothing here writes to a log: the one side effect is asking a running
 * agent to record that its own log was read. Whole-log verification stays in cmd_audit.c. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cli.h"
#include "refex.pb-c.h"
#include "audit_tree.h"
#include "body.h"
#include "config.h"
#include "db.h"
#include "merkle.h"
#include "util.h"

/* Code systems for what DICOM and HL7 have no code for. */
#define SYS_REFEX        "https://refex.example/"
#define SYS_EVENT        SYS_REFEX "audit-event"
#define SYS_AGENCY       SYS_REFEX "agency"
#define SYS_PRACTITIONER SYS_REFEX "practitioner-ref"
#define SYS_PERSON       SYS_REFEX "person-ref"
#define SYS_MESSAGE      SYS_REFEX "message-id"
#define SYS_MSGTYPE      SYS_REFEX "message-type"
#define SYS_CASE         SYS_REFEX "case-ref"
#define SYS_PURPOSE      SYS_REFEX "purpose-of-use"
#define SYS_AUDITLOG     SYS_REFEX "audit-log"
#define SYS_DCM          "http://dicom.nema.org/resources/ontology/DCM"
#define SYS_ENTITY_TYPE  "http://terminology.hl7.org/CodeSystem/audit-entity-type"
#define SYS_SOURCE_TYPE  "http://terminology.hl7.org/CodeSystem/security-source-type"

/* Every column of the audit table, in table order. */
#define AUDIT_COLS                                                                                 \
    "seq, time_ms, event, outcome, agency, practitioner, peer, message_id, message_type,"          \
    " case_ref, envelope_hash, purpose, article6, article9, consent, subjects, entry, leaf_hash"
enum {
    C_SEQ,
    C_TIME,
    C_EVENT,
    C_OUTCOME,
    C_AGENCY,
    C_PRACTITIONER,
    C_PEER,
    C_MSGID,
    C_MSGTYPE,
    C_CASE,
    C_ENVHASH,
    C_PURPOSE,
    C_ARTICLE6,
    C_ARTICLE9,
    C_CONSENT,
    C_SUBJECTS,
    C_ENTRY,
    C_LEAF,
    C_COUNT
};

static const char *const EVENTS[] = {"send",    "receive",      "reject",
                                     "receipt", "non-delivery", "audit-log-used"};

/* ---- shared helpers ------------------------------------------------------------------ */

static const char *col(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? s : "";
}

static const char *dash(const char *s)
{
    return s && *s ? s : "-";
}

static json_t *json_b64(const void *p, size_t n)
{
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *s = malloc(cap);
    if (!s)
        return NULL;
    sodium_bin2base64(s, cap, p, n, sodium_base64_VARIANT_ORIGINAL);
    json_t *v = json_string(s);
    free(s);
    return v;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ", an ISO 8601 / FHIR instant. */
static void iso_time(char *buf, size_t len, long long ms)
{
    /* Years 0..9999 only: anything else is not a time this log could have written. */
    if (ms < -62167219200000LL || ms > 253402300799999LL) {
        snprintf(buf, len, "invalid");
        return;
    }
    long long s = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    time_t t = (time_t)s;
    struct tm tm;
    char base[32];
    if (!gmtime_r(&t, &tm)) {
        snprintf(buf, len, "invalid");
        return;
    }
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03dZ", base, (int)(ms - s * 1000));
}

/* Reading an agency's own log through its config is itself audited: the agent appends an
 * audit-log-used entry naming the command (never the filter values). A stopped agent
 * cannot record it; the read goes ahead and the user is told. */
static void tell_agent(const char *what)
{
    json_t *reply = NULL, *req = json_pack("{s:s, s:s}", "cmd", "audit_used", "what", what);
    int rc = req ? cli_agent_request(req, &reply, 5000) : EXIT_FAIL;
    json_decref(req);
    if (rc != EXIT_OK)
        fprintf(stderr,
                "refex audit %s: the agent is not running; continuing, but this read is not "
                "recorded in its audit log\n",
                what);
    else if (!json_is_true(json_object_get(reply, "ok"))) {
        (void)cli_print_error(reply);
        fprintf(stderr, "refex audit %s: continuing, but this read was not recorded\n", what);
    }
    json_decref(reply);
}

/* 1 if schema.name is a table, 0 if not, -1 if the file is not a readable database. */
static int table_exists(sqlite3 *db, const char *schema, const char *name)
{
    char sql[128];
    sqlite3_stmt *st = NULL;
    snprintf(sql, sizeof sql, "SELECT 1 FROM %s.sqlite_master WHERE type = 'table' AND name = ?",
             schema);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    return step == SQLITE_ROW ? 1 : step == SQLITE_DONE ? 0 : -1;
}

static int check_file(const char *cmd, const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "refex audit %s: %s: %s\n", cmd, path,
                errno == ENOENT ? "no such file" : strerror(errno));
        return EXIT_FAIL;
    }
    if (!S_ISREG(sb.st_mode)) {
        fprintf(stderr, "refex audit %s: %s: not a file\n", cmd, path);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static int check_audit_table(const char *cmd, sqlite3 *db, const char *schema, const char *path)
{
    int t = table_exists(db, schema, "audit");
    if (t < 0)
        fprintf(stderr, "refex audit %s: %s: not a readable SQLite database (%s)\n", cmd, path,
                sqlite3_errmsg(db));
    else if (t == 0)
        fprintf(stderr, "refex audit %s: %s: no audit log in this database\n", cmd, path);
    return t == 1 ? EXIT_OK : EXIT_FAIL;
}

/* Opens the log to read: --db FILE, or (telling the agent) the agent's own. Read-only, and
 * inside one read transaction, so every row and hash comes from the same snapshot even
 * while the agent appends. */
static int log_open(const char *cmd, const char *db_arg, sqlite3 **out, char *path, size_t len)
{
    char err[512];
    int rc = EXIT_OK;
    *out = NULL;
    if (db_arg)
        snprintf(path, len, "%s", db_arg);
    else if ((rc = cli_agent_db(cmd, NULL, path, len)) != EXIT_OK)
        return rc;
    if ((rc = check_file(cmd, path)) != EXIT_OK)
        return rc;
    if (!db_arg)
        tell_agent(cmd);
    if (refex_db_open(path, 1, out, err, sizeof err) != REFEX_OK) {
        fprintf(stderr, "refex audit %s: %s\n", cmd, err);
        return EXIT_FAIL;
    }
    if ((rc = check_audit_table(cmd, *out, "main", path)) != EXIT_OK ||
        sqlite3_exec(*out, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        if (rc == EXIT_OK)
            fprintf(stderr, "refex audit %s: %s: %s\n", cmd, path, sqlite3_errmsg(*out));
        refex_db_close(out);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static void log_close(sqlite3 **db)
{
    if (*db)
        sqlite3_exec(*db, "COMMIT", NULL, NULL, NULL);
    refex_db_close(db);
}

/* Strict decimal, 1..UINT64_MAX/2 (seqs and sizes are SQLite int64). */
static int parse_count(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!s || !*s)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX / 2 - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return 0;
}

static int digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static int num(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC; a space for the T is accepted, as the tables
 * print it) or epoch milliseconds. A bare date names its first millisecond, or with
 * end_of_day its last, so --until 2025-03-31 includes that whole day. */
static int parse_time(const char *s, int end_of_day, int64_t *ms)
{
    size_t n = strlen(s);
    if (n > 0 && n <= 15 && digits(s, n)) {
        *ms = (int64_t)strtoll(s, NULL, 10);
        return 0;
    }
    if (n != 10 && n != 20)
        return -1;
    if (!digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' || !digits(s + 8, 2))
        return -1;
    struct tm tm = {0};
    tm.tm_year = num(s, 4) - 1900;
    tm.tm_mon = num(s + 5, 2) - 1;
    tm.tm_mday = num(s + 8, 2);
    if (n == 20) {
        if ((s[10] != 'T' && s[10] != ' ') || !digits(s + 11, 2) || s[13] != ':' ||
            !digits(s + 14, 2) || s[16] != ':' || !digits(s + 17, 2) || s[19] != 'Z')
            return -1;
        tm.tm_hour = num(s + 11, 2);
        tm.tm_min = num(s + 14, 2);
        tm.tm_sec = num(s + 17, 2);
    }
    struct tm want = tm, back;
    time_t t = timegm(&tm);
    /* timegm normalises 2025-02-30 to March: a date that changes was not a date. */
    if (t == (time_t)-1 || !gmtime_r(&t, &back) || back.tm_year != want.tm_year ||
        back.tm_mon != want.tm_mon || back.tm_mday != want.tm_mday ||
        back.tm_hour != want.tm_hour || back.tm_min != want.tm_min || back.tm_sec != want.tm_sec)
        return -1;
    *ms = (int64_t)t * 1000;
    if (n == 10 && end_of_day)
        *ms += 86400000 - 1;
    return 0;
}

/* "public-task" with ARTICLE6_ -> "ARTICLE6_PUBLIC_TASK", checked against the proto enum so
 * that a typo is an error rather than an empty report. */
static int enum_filter(const char *opt, const ProtobufCEnumDescriptor *d, const char *prefix,
                       const char *v, char *buf, size_t len)
{
    size_t pl = strlen(prefix);
    int n = strncmp(v, prefix, pl) == 0 ? snprintf(buf, len, "%s", v)
                                        : snprintf(buf, len, "%s%s", prefix, v);
    if (n > 0 && (size_t)n < len) {
        for (char *p = buf + pl; *p; p++)
            *p = (char)(*p == '-' ? '_' : toupper((unsigned char)*p));
        if (protobuf_c_enum_descriptor_get_value_by_name(d, buf))
            return EXIT_OK;
    }
    fprintf(stderr, "refex audit query: unknown %s '%s'; one of:", opt, v);
    for (unsigned i = 0; i < d->n_values; i++) {
        fprintf(stderr, " ");
        for (const char *p = d->values[i].name + pl; *p; p++)
            fputc(*p == '_' ? '-' : tolower((unsigned char)*p), stderr);
    }
    fprintf(stderr, "\n");
    return EXIT_USAGE;
}

/* One audit row as JSON: seq, every column, and the leaf hash in hex; with `leaf`, also the
 * canonical entry bytes in base64. */
static json_t *row_json(sqlite3_stmt *st, int leaf)
{
    json_t *o = json_object();
    char hex[65] = "";
    if (!o)
        return NULL;
    json_object_set_new(o, "seq", json_integer(sqlite3_column_int64(st, C_SEQ)));
    json_object_set_new(o, "time_ms", json_integer(sqlite3_column_int64(st, C_TIME)));
    for (int i = C_EVENT; i <= C_SUBJECTS; i++)
        json_object_set_new(o, sqlite3_column_name(st, i), json_string(col(st, i)));
    if (leaf)
        json_object_set_new(
            o, "leaf",
            json_b64(sqlite3_column_blob(st, C_ENTRY), (size_t)sqlite3_column_bytes(st, C_ENTRY)));
    if (sqlite3_column_bytes(st, C_LEAF) == 32)
        refex_hex_encode(hex, sqlite3_column_blob(st, C_LEAF), 32);
    json_object_set_new(o, "leaf_hash", json_string(hex));
    return o;
}

/* ---- query --------------------------------------------------------------------------- */

static void query_usage(FILE *out)
{
    fprintf(out,
            "usage: refex [-c AGENT.conf] audit query [FILTERS] [--json] [--db FILE]\n"
            "\n"
            "Audit entries that match every filter given, oldest first.\n"
            "\n"
            "  --subject REF     entries about this person: REF is one of the entry's subject\n"
            "                    references, matched exactly (case and all). A subject-access\n"
            "                    report, every disclosure about this person:\n"
            "                      refex audit query --subject UB-7F3K-2041\n"
            "  --case REF        the case reference\n"
            "  --peer AGENCY     one of the other agencies of the entry\n"
            "  --message ID      the message id\n"
            "  --since TIME      at or after TIME\n"
            "  --until TIME      at or before TIME (a bare date includes that whole day)\n"
            "                    TIME is YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC) or epoch ms\n"
            "  --event E         send, receive, reject, receipt, non-delivery, audit-log-used\n"
            "  --outcome O       success, or an error name such as E_BAD_SIGNATURE\n"
            "  --type T          message type: referral, information-request, ...\n"
            "  --purpose P       safeguarding, direct-care, case-management, audit\n"
            "  --article6 X      public-task, legal-obligation, vital-interests, consent, ...\n"
            "  --article9 Y      substantial-public-interest, health-social-care, ...\n"
            "  --consent Z       given, refused, not-sought-safeguarding, not-required\n"
            "                    (enum values also by full name, e.g. ARTICLE6_PUBLIC_TASK)\n"
            "  --json            a JSON array of entries, each with its leaf hash\n"
            "  --db FILE         read any copy of an agent.db, read-only; without it the\n"
            "                    agent named by -c, which records this read in its own log\n"
            "\n"
            "People appear only as pseudonymous references. Exit 0 with or without matches.\n");
}

typedef struct {
    const char *sql; /* fixed SQL with one or more ?, all bound to the same value */
    int nbind;
    const char *text;
    int64_t num;
} filter;

static void print_entry_header(void)
{
    printf("%-5s %-21s %-14s %-16s %-18s %-20s %-32s %-12s %-24s %s\n", "SEQ", "TIME", "EVENT",
           "OUTCOME", "PEER", "TYPE", "MESSAGE ID", "CASE", "SUBJECTS", "LAWFUL BASIS");
}

static void print_entry_row(sqlite3_stmt *st)
{
    char t[32];
    cli_format_time(t, sizeof t, (long long)sqlite3_column_int64(st, C_TIME));
    printf("%-5lld %-21s %-14s %-16s %-18s %-20s %-32s %-12s %-24s %s + %s\n",
           (long long)sqlite3_column_int64(st, C_SEQ), t, col(st, C_EVENT), col(st, C_OUTCOME),
           dash(col(st, C_PEER)), dash(col(st, C_MSGTYPE)), dash(col(st, C_MSGID)),
           dash(col(st, C_CASE)), dash(col(st, C_SUBJECTS)), dash(col(st, C_ARTICLE6)),
           dash(col(st, C_ARTICLE9)));
}

int cmd_audit_query(int argc, char **argv)
{
    enum { MAXF = 16 };
    filter f[MAXF];
    char e6[96], e9[96], ec[96], ep[96], et[96], msg[33];
    int nf = 0, json = 0, have_since = 0, have_until = 0;
    int64_t since = 0, until = 0;
    const char *db_arg = NULL;
    if (cli_wants_help(argc, argv)) {
        query_usage(stdout);
        return EXIT_OK;
    }
    for (int k = 2; k < argc; k++) {
        const char *a = argv[k], *v = k + 1 < argc ? argv[k + 1] : NULL;
        int rc = EXIT_OK;
        if (strcmp(a, "--json") == 0) {
            json = 1;
            continue;
        }
        if (!v || a[0] != '-') {
            fprintf(stderr, "refex audit query: %s '%s' (see refex audit query --help)\n",
                    v ? "unknown argument" : "missing value or unknown argument", a);
            return EXIT_USAGE;
        }
        k++;
        if (nf >= MAXF) {
            fprintf(stderr, "refex audit query: too many filters\n");
            return EXIT_USAGE;
        }
        filter *x = &f[nf];
        *x = (filter){NULL, 1, v, 0};
        if (strcmp(a, "-c") == 0) {
            cli_config = v;
            continue;
        } else if (strcmp(a, "--db") == 0) {
            db_arg = v;
            continue;
        } else if (strcmp(a, "--case") == 0) {
            x->sql = " AND case_ref = ?";
        } else if (strcmp(a, "--subject") == 0 || strcmp(a, "--peer") == 0) {
            /* One element of a comma-separated list, exactly: instr, not LIKE, so that
             * '_' and '%' in a reference are not wildcards and case matters. */
            if (!*v || strchr(v, ',')) {
                fprintf(stderr, "refex audit query: %s takes one reference, without commas\n", a);
                return EXIT_USAGE;
            }
            x->sql = a[2] == 's' ? " AND instr(',' || subjects || ',', ',' || ? || ',') > 0"
                                 : " AND instr(',' || peer || ',', ',' || ? || ',') > 0";
        } else if (strcmp(a, "--message") == 0) {
            size_t n = strlen(v);
            if (n != 32 || refex_hex_decode((uint8_t[16]){0}, 16, v) != REFEX_OK) {
                fprintf(stderr, "refex audit query: --message takes a 32-hex-digit id\n");
                return EXIT_USAGE;
            }
            for (size_t i = 0; i <= n; i++)
                msg[i] = (char)tolower((unsigned char)v[i]);
            x->sql = " AND message_id = ?";
            x->text = msg;
        } else if (strcmp(a, "--since") == 0 || strcmp(a, "--until") == 0) {
            int is_until = a[2] == 'u';
            if (parse_time(v, is_until, &x->num) != 0) {
                fprintf(stderr,
                        "refex audit query: %s '%s': give YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC) "
                        "or epoch milliseconds\n",
                        a, v);
                return EXIT_USAGE;
            }
            x->sql = is_until ? " AND time_ms <= ?" : " AND time_ms >= ?";
            x->text = NULL;
            if (is_until) {
                have_until = 1;
                until = x->num;
            } else {
                have_since = 1;
                since = x->num;
            }
        } else if (strcmp(a, "--event") == 0) {
            size_t i = 0;
            while (i < sizeof EVENTS / sizeof EVENTS[0] && strcmp(v, EVENTS[i]) != 0)
                i++;
            if (i == sizeof EVENTS / sizeof EVENTS[0]) {
                fprintf(stderr,
                        "refex audit query: unknown --event '%s'; one of: send, receive, reject, "
                        "receipt, non-delivery, audit-log-used\n",
                        v);
                return EXIT_USAGE;
            }
            x->sql = " AND event = ?";
        } else if (strcmp(a, "--outcome") == 0) {
            /* "success" also matches "success: query" (what an audit-log-used records). */
            x->sql = " AND (outcome = ? OR substr(outcome, 1, length(?) + 2) = ? || ': ')";
            x->nbind = 3;
        } else if (strcmp(a, "--type") == 0) {
            int t = refex_message_type_parse(v);
            if (!t) {
                fprintf(stderr, "refex audit query: unknown --type '%s'\n", v);
                return EXIT_USAGE;
            }
            snprintf(et, sizeof et, "%s", refex_message_type_name(t));
            x->sql = " AND message_type = ?";
            x->text = et;
        } else if (strcmp(a, "--article6") == 0) {
            rc = enum_filter(a, &refex__v1__article6_basis__descriptor, "ARTICLE6_", v, e6,
                             sizeof e6);
            x->sql = " AND article6 = ?";
            x->text = e6;
        } else if (strcmp(a, "--article9") == 0) {
            rc = enum_filter(a, &refex__v1__article9_condition__descriptor, "ARTICLE9_", v, e9,
                             sizeof e9);
            x->sql = " AND article9 = ?";
            x->text = e9;
        } else if (strcmp(a, "--consent") == 0) {
            rc = enum_filter(a, &refex__v1__consent_status__descriptor, "CONSENT_", v, ec,
                             sizeof ec);
            x->sql = " AND consent = ?";
            x->text = ec;
        } else if (strcmp(a, "--purpose") == 0) {
            rc = enum_filter(a, &refex__v1__purpose_of_use__descriptor, "PURPOSE_", v, ep,
                             sizeof ep);
            x->sql = " AND purpose = ?";
            x->text = ep;
        } else {
            fprintf(stderr, "refex audit query: unknown argument '%s' (see --help)\n", a);
            return EXIT_USAGE;
        }
        if (rc != EXIT_OK)
            return rc;
        nf++;
    }
    if (have_since && have_until && since > until) {
        fprintf(stderr, "refex audit query: --since is after --until\n");
        return EXIT_USAGE;
    }

    char sql[4096], path[4200];
    snprintf(sql, sizeof sql, "SELECT " AUDIT_COLS " FROM audit WHERE 1");
    for (int i = 0; i < nf; i++) {
        size_t used = strlen(sql);
        snprintf(sql + used, sizeof sql - used, "%s", f[i].sql);
    }
    snprintf(sql + strlen(sql), sizeof sql - strlen(sql), " ORDER BY seq");

    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    json_t *arr = NULL;
    int rc = log_open("query", db_arg, &db, path, sizeof path), step, count = 0;
    if (rc != EXIT_OK)
        return rc;
    rc = EXIT_FAIL;
    if (refex_db_prepare(db, sql, &st) != REFEX_OK)
        goto out;
    for (int i = 0, b = 1; i < nf; i++)
        for (int j = 0; j < f[i].nbind; j++, b++) {
            if (f[i].text)
                sqlite3_bind_text(st, b, f[i].text, -1, SQLITE_STATIC);
            else
                sqlite3_bind_int64(st, b, f[i].num);
        }
    if (json && !(arr = json_array()))
        goto out;
    if (!json)
        print_entry_header();
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        count++;
        if (!json)
            print_entry_row(st);
        else if (json_array_append_new(arr, row_json(st, 0)) != 0)
            goto out;
    }
    if (step != SQLITE_DONE) {
        fprintf(stderr, "refex audit query: %s: %s\n", path, sqlite3_errmsg(db));
        goto out;
    }
    if (json)
        cli_print_json(arr);
    else
        printf("(%d matching %s)\n", count, count == 1 ? "entry" : "entries");
    rc = EXIT_OK;
out:
    json_decref(arr);
    sqlite3_finalize(st);
    log_close(&db);
    return rc;
}

/* ---- export -------------------------------------------------------------------------- */

static void export_usage(FILE *out)
{
    fprintf(out,
            "usage: refex [-c AGENT.conf] audit export --format json|csv|fhir [--db FILE]\n"
            "                                        [--out FILE]\n"
            "\n"
            "The whole audit log, for an auditor or a regulator.\n"
            "\n"
            "  json   {\"format\": \"refex-audit-export/v1\", agency, size, root (base64),\n"
            "         entries: every column, \"leaf\" (base64 of the entry's canonical bytes)\n"
            "         and \"leaf_hash\" (hex), checkpoints (size, root, signed note),\n"
            "         cosignatures (size, witness, note)}. Anyone can recompute the root\n"
            "         from the leaf bytes alone: leaf hash SHA-256(0x00 || leaf), RFC 6962\n"
            "         tree, and compare it with a signed checkpoint.\n"
            "  csv    a header and one row per entry (RFC 4180 quoting, CRLF). Values are\n"
            "         verbatim: import them as text into a spreadsheet.\n"
            "  fhir   a FHIR R4 Bundle (type collection) of one AuditEvent per entry:\n"
            "         DICOM 110106 Export / 110107 Import for send / receive, the refex\n"
            "         audit-event code system for the others; agencies, practitioners,\n"
            "         messages, cases and people appear as identifiers only, and the lawful\n"
            "         basis and consent as entity details.\n"
            "\n"
            "  --out FILE   write there (mode 0600, replaced atomically) instead of stdout\n"
            "  --db FILE    read any copy of an agent.db, read-only; without it the agent\n"
            "               named by -c, which records this export in its own log\n"
            "\n"
            "Exit 0 on success; 1 if the log cannot be read, or if its stored tree does not\n"
            "match its entries (the export is still written, as found: run audit verify).\n");
}

/* Output to a file is written beside it and renamed into place when complete. */
typedef struct {
    FILE *f;
    char tmp[4300];
    const char *path;
} outfile;

static int out_open(outfile *o, const char *path)
{
    o->path = path;
    o->tmp[0] = 0;
    if (!path) {
        o->f = stdout;
        return EXIT_OK;
    }
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(o->tmp); /* 0600 */
    if (fd < 0 || !(o->f = fdopen(fd, "w"))) {
        fprintf(stderr, "refex audit export: %s: %s\n", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(o->tmp);
        }
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static int out_close(outfile *o, int ok)
{
    if (!o->f)
        return EXIT_FAIL;
    if (!o->path) {
        ok = fflush(stdout) == 0 && ok;
        o->f = NULL;
        return ok ? EXIT_OK : EXIT_FAIL;
    }
    ok = fflush(o->f) == 0 && fsync(fileno(o->f)) == 0 && ok;
    ok = fclose(o->f) == 0 && ok;
    o->f = NULL;
    if (ok && rename(o->tmp, o->path) == 0)
        return EXIT_OK;
    fprintf(stderr, "refex audit export: %s: not written (%s)\n", o->path, strerror(errno));
    unlink(o->tmp);
    return EXIT_FAIL;
}

static void csv_field(FILE *f, const char *s, int last)
{
    if (strpbrk(s, ",\"\r\n")) {
        fputc('"', f);
        for (; *s; s++) {
            if (*s == '"')
                fputc('"', f);
            fputc(*s, f);
        }
        fputc('"', f);
    } else {
        fputs(s, f);
    }
    fputs(last ? "\r\n" : ",", f);
}

static json_t *coding(const char *system, const char *code, const char *display)
{
    json_t *c = json_pack("{s:s, s:s}", "system", system, "code", code);
    if (c && display)
        json_object_set_new(c, "display", json_string(display));
    return c;
}

static json_t *ident_ref(const char *system, const char *value)
{
    return json_pack("{s:{s:s, s:s}}", "identifier", "system", system, "value", value);
}

static json_t *fhir_agent(const char *system, const char *value, const char *role_code,
                          const char *role_display, int requestor)
{
    json_t *a = json_pack("{s:o, s:b}", "who", ident_ref(system, value), "requestor", requestor);
    if (a && role_code)
        json_object_set_new(
            a, "type", json_pack("{s:[o]}", "coding", coding(SYS_DCM, role_code, role_display)));
    return a;
}

static void add_detail(json_t *entity, const char *type, const char *value)
{
    json_t *d;
    if (!*value)
        return;
    if (!(d = json_object_get(entity, "detail")))
        json_object_set_new(entity, "detail", d = json_array());
    json_array_append_new(d, json_pack("{s:s, s:s}", "type", type, "valueString", value));
}

/* The entry's comma-separated list, one callback per non-empty element. */
static void each_ref(const char *list, json_t *arr,
                     json_t *(*make)(const char *ref, const void *arg), const void *arg)
{
    char *dup = strdup(list), *save = NULL;
    for (char *t = dup ? strtok_r(dup, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(arr, make(t, arg));
    free(dup);
}

static json_t *peer_agent(const char *ref, const void *arg)
{
    const char *event = arg;
    int send = strcmp(event, "send") == 0, recv = strcmp(event, "receive") == 0;
    return fhir_agent(SYS_AGENCY, ref,
                      send   ? "110152"
                      : recv ? "110153"
                             : NULL,
                      send   ? "Destination Role ID"
                      : recv ? "Source Role ID"
                             : NULL,
                      recv);
}

static json_t *subject_entity(const char *ref, const void *arg)
{
    (void)arg;
    return json_pack("{s:o, s:o}", "what", ident_ref(SYS_PERSON, ref), "type",
                     coding(SYS_ENTITY_TYPE, "1", "Person"));
}

/* A deterministic urn:uuid for the bundle entry, from the leaf hash and seq. */
static void entry_urn(char *buf, size_t len, sqlite3_stmt *st)
{
    uint8_t in[40] = {0}, h[32];
    int64_t seq = sqlite3_column_int64(st, C_SEQ);
    if (sqlite3_column_bytes(st, C_LEAF) == 32)
        memcpy(in, sqlite3_column_blob(st, C_LEAF), 32);
    for (int i = 0; i < 8; i++)
        in[32 + i] = (uint8_t)((uint64_t)seq >> (56 - 8 * i));
    crypto_hash_sha256(h, in, sizeof in);
    h[6] = (uint8_t)((h[6] & 0x0f) | 0x80); /* RFC 9562 version 8 */
    h[8] = (uint8_t)((h[8] & 0x3f) | 0x80);
    char hex[33];
    refex_hex_encode(hex, h, 16);
    snprintf(buf, len, "urn:uuid:%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
             hex + 20);
}

/* One audit row as a FHIR R4 AuditEvent (IHE ATNA). */
static json_t *fhir_event(sqlite3_stmt *st)
{
    const char *ev = col(st, C_EVENT), *outcome = col(st, C_OUTCOME), *agency = col(st, C_AGENCY);
    int send = strcmp(ev, "send") == 0, recv = strcmp(ev, "receive") == 0;
    int ok = strcmp(outcome, "success") == 0 || strncmp(outcome, "success:", 8) == 0;
    char id[40], when[40];
    snprintf(id, sizeof id, "audit-%lld", (long long)sqlite3_column_int64(st, C_SEQ));
    iso_time(when, sizeof when, (long long)sqlite3_column_int64(st, C_TIME));
    const char *action = send || strcmp(ev, "audit-log-used") == 0 ? "R"
                         : recv || strcmp(ev, "receipt") == 0      ? "C"
                                                                   : "E";
    json_t *type = send   ? coding(SYS_DCM, "110106", "Export")
                   : recv ? coding(SYS_DCM, "110107", "Import")
                          : coding(SYS_EVENT, ev, NULL);
    json_t *e = json_pack("{s:s, s:s, s:o, s:[o], s:s, s:s, s:s}", "resourceType", "AuditEvent",
                          "id", id, "type", type, "subtype", coding(SYS_EVENT, ev, NULL), "action",
                          action, "recorded", when, "outcome",
                          ok                          ? "0"
                          : strcmp(ev, "reject") == 0 ? "8"
                                                      : "4");
    if (!e)
        return NULL;
    if (strcmp(outcome, "success") != 0)
        json_object_set_new(e, "outcomeDesc", json_string(outcome));
    const char *purpose = col(st, C_PURPOSE);
    if (*purpose && !strstr(purpose, "_UNSPECIFIED"))
        json_object_set_new(e, "purposeOfEvent",
                            json_pack("[{s:[o]}]", "coding", coding(SYS_PURPOSE, purpose, NULL)));

    json_t *agents = json_array();
    json_array_append_new(agents, fhir_agent(SYS_AGENCY, agency,
                                             send   ? "110153"
                                             : recv ? "110152"
                                                    : NULL,
                                             send   ? "Source Role ID"
                                             : recv ? "Destination Role ID"
                                                    : NULL,
                                             !recv));
    each_ref(col(st, C_PEER), agents, peer_agent, ev);
    if (*col(st, C_PRACTITIONER))
        json_array_append_new(agents, fhir_agent(SYS_PRACTITIONER, col(st, C_PRACTITIONER), NULL,
                                                 NULL, send || recv));
    json_object_set_new(e, "agent", agents);
    json_object_set_new(e, "source",
                        json_pack("{s:o, s:[o]}", "observer", ident_ref(SYS_AGENCY, agency), "type",
                                  coding(SYS_SOURCE_TYPE, "4", "Application Server")));

    json_t *entities = json_array(), *main_entity = NULL;
    if (*col(st, C_MSGID))
        main_entity = json_pack("{s:o, s:o}", "what", ident_ref(SYS_MESSAGE, col(st, C_MSGID)),
                                "type", coding(SYS_MSGTYPE, col(st, C_MSGTYPE), NULL));
    else if (strcmp(ev, "audit-log-used") == 0)
        main_entity = json_pack("{s:o, s:o}", "what", ident_ref(SYS_AUDITLOG, agency), "type",
                                coding(SYS_ENTITY_TYPE, "2", "System Object"));
    if (main_entity) {
        add_detail(main_entity, "article6", col(st, C_ARTICLE6));
        add_detail(main_entity, "article9", col(st, C_ARTICLE9));
        add_detail(main_entity, "consent", col(st, C_CONSENT));
        add_detail(main_entity, "envelope-sha256", col(st, C_ENVHASH));
        json_array_append_new(entities, main_entity);
    }
    if (*col(st, C_CASE))
        json_array_append_new(entities,
                              json_pack("{s:o, s:o}", "what", ident_ref(SYS_CASE, col(st, C_CASE)),
                                        "type", coding(SYS_ENTITY_TYPE, "4", "Other")));
    each_ref(col(st, C_SUBJECTS), entities, subject_entity, NULL);
    if (json_array_size(entities))
        json_object_set_new(e, "entity", entities);
    else
        json_decref(entities);
    return e;
}

static const char *const CSV_HEADER[] = {
    "seq",          "time",     "time_ms",    "event",        "outcome",  "agency",
    "practitioner", "peer",     "message_id", "message_type", "case_ref", "envelope_hash",
    "purpose",      "article6", "article9",   "consent",      "subjects", "leaf_hash"};

static void csv_row(FILE *f, sqlite3_stmt *st)
{
    char seq[24], ms[24], when[40], hex[65] = "";
    long long t = (long long)sqlite3_column_int64(st, C_TIME);
    snprintf(seq, sizeof seq, "%lld", (long long)sqlite3_column_int64(st, C_SEQ));
    snprintf(ms, sizeof ms, "%lld", t);
    iso_time(when, sizeof when, t);
    csv_field(f, seq, 0);
    csv_field(f, when, 0);
    csv_field(f, ms, 0);
    for (int i = C_EVENT; i <= C_SUBJECTS; i++)
        csv_field(f, col(st, i), 0);
    if (sqlite3_column_bytes(st, C_LEAF) == 32)
        refex_hex_encode(hex, sqlite3_column_blob(st, C_LEAF), 32);
    csv_field(f, hex, 1);
}

/* Checkpoints and cosignatures (tables absent in logs older than checkpointing). */
static int export_notes(sqlite3 *db, json_t *doc)
{
    json_t *cps = json_array(), *cos = json_array();
    sqlite3_stmt *st = NULL;
    int rc = REFEX_OK;
    json_object_set_new(doc, "checkpoints", cps);
    json_object_set_new(doc, "cosignatures", cos);
    if (!cps || !cos)
        return REFEX_E_NOMEM;
    if (table_exists(db, "main", "audit_checkpoints") == 1) {
        if ((rc = refex_db_prepare(db,
                                   "SELECT size, root, note, created_ms FROM audit_checkpoints"
                                   " ORDER BY size",
                                   &st)) != REFEX_OK)
            return rc;
        while (sqlite3_step(st) == SQLITE_ROW)
            json_array_append_new(cps, json_pack("{s:I, s:o, s:s, s:I}", "size",
                                                 (json_int_t)sqlite3_column_int64(st, 0), "root",
                                                 json_b64(sqlite3_column_blob(st, 1),
                                                          (size_t)sqlite3_column_bytes(st, 1)),
                                                 "note", col(st, 2), "created_ms",
                                                 (json_int_t)sqlite3_column_int64(st, 3)));
        sqlite3_finalize(st);
        st = NULL;
    }
    if (table_exists(db, "main", "audit_cosignatures") == 1) {
        if ((rc = refex_db_prepare(db,
                                   "SELECT size, witness, note, received_ms FROM audit_cosignatures"
                                   " ORDER BY size, witness",
                                   &st)) != REFEX_OK)
            return rc;
        while (sqlite3_step(st) == SQLITE_ROW)
            json_array_append_new(cos, json_pack("{s:I, s:s, s:s, s:I}", "size",
                                                 (json_int_t)sqlite3_column_int64(st, 0), "witness",
                                                 col(st, 1), "note", col(st, 2), "received_ms",
                                                 (json_int_t)sqlite3_column_int64(st, 3)));
        sqlite3_finalize(st);
    }
    return REFEX_OK;
}

int cmd_audit_export(int argc, char **argv)
{
    const char *db_arg = NULL, *format = NULL, *out_path = NULL;
    enum { F_JSON, F_CSV, F_FHIR } fmt = F_JSON;
    if (cli_wants_help(argc, argv)) {
        export_usage(stdout);
        return EXIT_OK;
    }
    for (int k = 2; k < argc; k++) {
        const char *v = k + 1 < argc ? argv[k + 1] : NULL;
        if (strcmp(argv[k], "--format") == 0 && v)
            format = argv[++k];
        else if (strcmp(argv[k], "--db") == 0 && v)
            db_arg = argv[++k];
        else if (strcmp(argv[k], "--out") == 0 && v)
            out_path = argv[++k];
        else if (strcmp(argv[k], "-c") == 0 && v)
            cli_config = argv[++k];
        else {
            fprintf(stderr, "refex audit export: unknown argument '%s' (see --help)\n", argv[k]);
            return EXIT_USAGE;
        }
    }
    if (!format) {
        fprintf(stderr, "refex audit export: give --format json, csv or fhir\n");
        return EXIT_USAGE;
    }
    if (strcmp(format, "json") == 0)
        fmt = F_JSON;
    else if (strcmp(format, "csv") == 0)
        fmt = F_CSV;
    else if (strcmp(format, "fhir") == 0)
        fmt = F_FHIR;
    else {
        fprintf(stderr, "refex audit export: unknown --format '%s': json, csv or fhir\n", format);
        return EXIT_USAGE;
    }

    char path[4200], why[300] = "";
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    json_t *doc = NULL, *entries = NULL;
    uint8_t(*leaves)[32] = NULL, root[32], stored[32];
    uint64_t n = 0, cap = 0, size = 0;
    outfile o = {0};
    int ok = 0, step, have_root = 0;
    int rc = log_open("export", db_arg, &db, path, sizeof path);
    if (rc != EXIT_OK)
        return rc;
    rc = EXIT_FAIL;
    if (refex_audit_tree_size(db, &size) != REFEX_OK ||
        refex_db_prepare(db, "SELECT " AUDIT_COLS " FROM audit ORDER BY seq", &st) != REFEX_OK)
        goto out;
    if (fmt != F_CSV) {
        doc = fmt == F_JSON
                  ? json_pack("{s:s}", "format", "refex-audit-export/v1")
                  : json_pack("{s:s, s:s}", "resourceType", "Bundle", "type", "collection");
        entries = json_array();
        if (!doc || !entries)
            goto out;
    }
    if ((rc = out_open(&o, out_path)) != EXIT_OK)
        goto out;
    rc = EXIT_FAIL;
    if (fmt == F_CSV)
        for (size_t i = 0; i < sizeof CSV_HEADER / sizeof CSV_HEADER[0]; i++)
            csv_field(o.f, CSV_HEADER[i], i + 1 == sizeof CSV_HEADER / sizeof CSV_HEADER[0]);
    char agency[256] = "";
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        /* The root a third party would compute from the exported leaf bytes. */
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            void *nl = realloc(leaves, cap * sizeof *leaves);
            if (!nl)
                goto out;
            leaves = nl;
        }
        refex_merkle_leaf_hash(sqlite3_column_blob(st, C_ENTRY),
                               (size_t)sqlite3_column_bytes(st, C_ENTRY), leaves[n]);
        if ((uint64_t)sqlite3_column_int64(st, C_SEQ) != n + 1 && !why[0])
            snprintf(why, sizeof why, "entry %llu is missing", (unsigned long long)(n + 1));
        n++;
        if (!agency[0])
            snprintf(agency, sizeof agency, "%s", col(st, C_AGENCY));
        if (fmt == F_CSV) {
            csv_row(o.f, st);
        } else {
            json_t *x = fmt == F_JSON ? row_json(st, 1) : fhir_event(st);
            if (!x)
                goto out;
            if (fmt == F_FHIR) {
                char urn[64];
                entry_urn(urn, sizeof urn, st);
                x = json_pack("{s:s, s:o}", "fullUrl", urn, "resource", x);
            }
            if (json_array_append_new(entries, x) != 0)
                goto out;
        }
    }
    if (step != SQLITE_DONE) {
        fprintf(stderr, "refex audit export: %s: %s\n", path, sqlite3_errmsg(db));
        goto out;
    }
    /* The root the log claims (from its stored subtree hashes, what checkpoints sign) must be
     * the root of the entries exported; if not, export anyway and say so. */
    if (refex_merkle_root((const uint8_t(*)[32])leaves, n, root) != REFEX_OK)
        goto out;
    have_root = refex_audit_tree_root(db, size, stored) == REFEX_OK;
    if (!why[0] && n != size)
        snprintf(why, sizeof why, "%llu entries but the log claims %llu", (unsigned long long)n,
                 (unsigned long long)size);
    if (!why[0] && (!have_root || memcmp(root, stored, 32) != 0))
        snprintf(why, sizeof why, "the stored tree does not match the entries");
    if (!why[0]) {
        /* The exported columns must be what the entries' bytes say (csv and fhir readers
         * cannot check that themselves). */
        uint64_t vsize = 0;
        uint8_t vroot[32];
        char vwhy[256] = "";
        if (refex_audit_tree_verify(db, &vsize, vroot, vwhy, sizeof vwhy) != REFEX_OK)
            snprintf(why, sizeof why, "%s", vwhy[0] ? vwhy : "the log does not verify");
    }
    if (fmt == F_JSON) {
        json_object_set_new(doc, "agency", agency[0] ? json_string(agency) : json_null());
        json_object_set_new(doc, "size", json_integer((json_int_t)size));
        json_object_set_new(doc, "root", have_root ? json_b64(stored, 32) : json_null());
        json_object_set(doc, "entries", entries);
        if (export_notes(db, doc) != REFEX_OK)
            goto out;
    } else if (fmt == F_FHIR) {
        char now[40];
        iso_time(now, sizeof now, (long long)refex_now_ms());
        json_object_set_new(doc, "timestamp", json_string(now));
        json_object_set(doc, "entry", entries);
    }
    if (doc && json_dumpf(doc, o.f, JSON_INDENT(2)) != 0)
        goto out;
    if (doc)
        fputc('\n', o.f);
    ok = 1;
    rc = EXIT_OK;
out:
    if (o.f && out_close(&o, ok) != EXIT_OK)
        rc = EXIT_FAIL;
    if (rc == EXIT_OK && why[0]) {
        fprintf(stderr,
                "refex audit export: %s does not verify (%s); exported as found. Run "
                "refex audit verify.\n",
                path, why);
        rc = EXIT_FAIL;
    }
    free(leaves);
    json_decref(entries);
    json_decref(doc);
    sqlite3_finalize(st);
    log_close(&db);
    return rc;
}

/* ---- proof --------------------------------------------------------------------------- */

static void proof_usage(FILE *out)
{
    fprintf(out,
            "usage: refex [-c AGENT.conf] audit proof --entry N [--size M] [--db FILE] [--json]\n"
            "\n"
            "An inclusion proof that entry N (its seq, from 1) is in the log: the entry's\n"
            "canonical bytes, its leaf hash, and the RFC 9162 audit path to the root of\n"
            "\n"
            "  - the latest signed checkpoint that covers entry N (its note is included, for\n"
            "    checking the agency's and witnesses' signatures), or\n"
            "  - with --size M, the tree of the first M entries (with its checkpoint note if\n"
            "    one was signed at that size), or\n"
            "  - if no checkpoint covers the entry, the current tree: the bundle then says it\n"
            "    is unsigned, and proves inclusion only in this copy.\n"
            "\n"
            "The proof is verified before it is printed. With --json, the bundle:\n"
            "  {\"entry\", \"leaf_index\", \"leaf\", \"leaf_hash\", \"tree_size\", \"root\",\n"
            "   \"proof\": [...], \"checkpoint\": note or null}  (hashes and bytes in base64)\n"
            "\n"
            "  --db FILE   read any copy of an agent.db, read-only; without it the agent\n"
            "              named by -c, which records this read in its own log\n"
            "\n"
            "Exit 0 if the proof verifies; 1 if the entry does not exist, or the log does not\n"
            "match its checkpoint or the proof does not verify (run refex audit verify);\n"
            "2 for a bad command line.\n");
}

static int proof_bundle(sqlite3 *db, uint64_t entry, uint64_t want_size, int json)
{
    uint64_t cur = 0, size = 0;
    uint8_t root[32], tree_root[32], leaf[32], (*proof)[32] = NULL;
    size_t plen = 0;
    char *note = NULL;
    int signed_cp = 0, rc = EXIT_FAIL;
    sqlite3_stmt *st = NULL;
    json_t *out = NULL, *cos = json_array();
    uint8_t *bytes = NULL;
    size_t blen = 0;
    int have_cp_table = table_exists(db, "main", "audit_checkpoints") == 1;

    if (!cos || refex_audit_tree_size(db, &cur) != REFEX_OK)
        goto out;
    if (entry > cur) {
        fprintf(stderr, "refex audit proof: there is no entry %llu: the log has %llu\n",
                (unsigned long long)entry, (unsigned long long)cur);
        goto out;
    }
    if (want_size > cur) {
        fprintf(stderr, "refex audit proof: --size %llu: the log has only %llu entries\n",
                (unsigned long long)want_size, (unsigned long long)cur);
        goto out;
    }
    /* Which tree: the one asked for, else the latest checkpoint covering the entry. */
    size = want_size ? want_size : cur;
    if (have_cp_table) {
        if (refex_db_prepare(db,
                             want_size ? "SELECT size, root, note FROM audit_checkpoints"
                                         " WHERE size = ?1"
                                       : "SELECT size, root, note FROM audit_checkpoints"
                                         " WHERE size >= ?2 ORDER BY size DESC LIMIT 1",
                             &st) != REFEX_OK)
            goto out;
        if (want_size)
            sqlite3_bind_int64(st, 1, (sqlite3_int64)want_size);
        else
            sqlite3_bind_int64(st, 2, (sqlite3_int64)entry);
        if (sqlite3_step(st) == SQLITE_ROW) {
            size = (uint64_t)sqlite3_column_int64(st, 0);
            if (sqlite3_column_bytes(st, 1) != 32 || size == 0 || size > cur) {
                fprintf(stderr,
                        "refex audit proof: the checkpoint at size %llu does not fit this log "
                        "(%llu entries): truncated or damaged\n",
                        (unsigned long long)size, (unsigned long long)cur);
                goto out;
            }
            memcpy(root, sqlite3_column_blob(st, 1), 32);
            note = strdup(col(st, 2));
            signed_cp = 1;
            if (!note)
                goto out;
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    if (refex_audit_tree_root(db, size, tree_root) != REFEX_OK) {
        fprintf(stderr,
                "refex audit proof: cannot compute the tree of size %llu: the log is "
                "damaged (run refex audit verify)\n",
                (unsigned long long)size);
        goto out;
    }
    if (!signed_cp)
        memcpy(root, tree_root, 32);
    else if (memcmp(root, tree_root, 32) != 0) {
        fprintf(stderr,
                "refex audit proof: the log's tree at size %llu does not match its signed "
                "checkpoint: the log was changed after it was signed (run refex audit verify)\n",
                (unsigned long long)size);
        goto out;
    }
    if (refex_db_prepare(db, "SELECT entry FROM audit WHERE seq = ?", &st) != REFEX_OK)
        goto out;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)entry);
    if (sqlite3_step(st) != SQLITE_ROW) {
        fprintf(stderr,
                "refex audit proof: entry %llu is missing from the log (run refex audit "
                "verify)\n",
                (unsigned long long)entry);
        goto out;
    }
    blen = (size_t)sqlite3_column_bytes(st, 0);
    if (!(bytes = malloc(blen ? blen : 1)))
        goto out;
    if (blen)
        memcpy(bytes, sqlite3_column_blob(st, 0), blen);
    sqlite3_finalize(st);
    st = NULL;
    /* The leaf hash is computed from the bytes, as a third party would. */
    refex_merkle_leaf_hash(bytes, blen, leaf);
    if (refex_audit_tree_inclusion(db, entry - 1, size, &proof, &plen) != REFEX_OK ||
        refex_merkle_verify_inclusion(entry - 1, size, leaf, (const uint8_t(*)[32])proof, plen,
                                      root) != REFEX_OK) {
        fprintf(stderr,
                "refex audit proof: the inclusion proof for entry %llu does not verify against "
                "the root of size %llu: the log is damaged (run refex audit verify)\n",
                (unsigned long long)entry, (unsigned long long)size);
        goto out;
    }
    if (signed_cp && table_exists(db, "main", "audit_cosignatures") == 1) {
        if (refex_db_prepare(db,
                             "SELECT witness, note FROM audit_cosignatures WHERE size = ?"
                             " ORDER BY witness",
                             &st) != REFEX_OK)
            goto out;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)size);
        while (sqlite3_step(st) == SQLITE_ROW)
            json_array_append_new(
                cos, json_pack("{s:s, s:s}", "witness", col(st, 0), "note", col(st, 1)));
        sqlite3_finalize(st);
        st = NULL;
    }

    json_t *path = json_array();
    out = json_pack("{s:I, s:I, s:o, s:o, s:I, s:o, s:o, s:o, s:O}", "entry", (json_int_t)entry,
                    "leaf_index", (json_int_t)(entry - 1), "leaf", json_b64(bytes, blen),
                    "leaf_hash", json_b64(leaf, 32), "tree_size", (json_int_t)size, "root",
                    json_b64(root, 32), "proof", path, "checkpoint",
                    signed_cp ? json_string(note) : json_null(), "cosignatures", cos);
    if (!out)
        goto out;
    for (size_t i = 0; i < plen; i++)
        json_array_append_new(path, json_b64(proof[i], 32));
    if (!signed_cp)
        json_object_set_new(out, "note",
                            json_string("unsigned: no checkpoint covers this entry; the root is "
                                        "the current tree of this copy of the log"));
    if (json) {
        cli_print_json(out);
    } else {
        printf("entry       %llu (leaf index %llu)\n", (unsigned long long)entry,
               (unsigned long long)(entry - 1));
        printf("leaf hash   %s\n", json_string_value(json_object_get(out, "leaf_hash")));
        printf("tree size   %llu\n", (unsigned long long)size);
        printf("root        %s\n", json_string_value(json_object_get(out, "root")));
        printf("proof       %zu hashes, verified\n", plen);
        for (size_t i = 0; i < plen; i++)
            printf("  %s\n", json_string_value(json_array_get(path, i)));
        if (signed_cp)
            printf("checkpoint  signed, %zu witness cosignature(s):\n%s", json_array_size(cos),
                   note);
        else
            printf("checkpoint  none: UNSIGNED, proves inclusion in this copy's current tree "
                   "only\n");
        printf("(--json gives the whole bundle, with the entry's bytes)\n");
    }
    rc = EXIT_OK;
out:
    sqlite3_finalize(st);
    json_decref(out);
    json_decref(cos);
    free(proof);
    free(bytes);
    free(note);
    return rc;
}

int cmd_audit_proof(int argc, char **argv)
{
    const char *db_arg = NULL, *entry_s = NULL, *size_s = NULL;
    uint64_t entry = 0, size = 0;
    int json = 0;
    if (cli_wants_help(argc, argv)) {
        proof_usage(stdout);
        return EXIT_OK;
    }
    for (int k = 2; k < argc; k++) {
        const char *v = k + 1 < argc ? argv[k + 1] : NULL;
        if (strcmp(argv[k], "--json") == 0)
            json = 1;
        else if (strcmp(argv[k], "--entry") == 0 && v)
            entry_s = argv[++k];
        else if (strcmp(argv[k], "--size") == 0 && v)
            size_s = argv[++k];
        else if (strcmp(argv[k], "--db") == 0 && v)
            db_arg = argv[++k];
        else if (strcmp(argv[k], "-c") == 0 && v)
            cli_config = argv[++k];
        else {
            fprintf(stderr, "refex audit proof: unknown argument '%s' (see --help)\n", argv[k]);
            return EXIT_USAGE;
        }
    }
    if (!entry_s || parse_count(entry_s, &entry) != 0 || entry == 0) {
        fprintf(stderr, "refex audit proof: give --entry N, an entry's seq (from 1)\n");
        return EXIT_USAGE;
    }
    if (size_s && (parse_count(size_s, &size) != 0 || size < entry)) {
        fprintf(stderr,
                "refex audit proof: --size must be a tree size of at least %llu, so that "
                "it includes the entry\n",
                (unsigned long long)entry);
        return EXIT_USAGE;
    }
    char path[4200];
    sqlite3 *db = NULL;
    int rc = log_open("proof", db_arg, &db, path, sizeof path);
    if (rc != EXIT_OK)
        return rc;
    rc = proof_bundle(db, entry, size, json);
    log_close(&db);
    return rc;
}

/* ---- reconcile ----------------------------------------------------------------------- */

static void reconcile_usage(FILE *out)
{
    fprintf(out, "usage: refex audit reconcile A.db B.db [--sla DURATION] [--json]\n"
                 "\n"
                 "Compares two agencies' audit logs (agent.db files, opened read-only) for what\n"
                 "A sent to B. The agency ids are taken from the logs. Reported:\n"
                 "\n"
                 "  sent, not received    A logged a send to B, and B's log has no receive (or\n"
                 "                        reject) of that message, unless A holds a non-delivery\n"
                 "                        report or the broker refused it. If A holds B's signed\n"
                 "                        receipt, B's log is missing an entry it should have.\n"
                 "                        Otherwise the message is lost or still in transit.\n"
                 "  received, not sent    B logged a receive from A of a message A never logged\n"
                 "                        as sent.\n"
                 "  unacknowledged        A sent it to B longer ago than DURATION and holds no\n"
                 "                        receipt from B (a non-delivery report or a broker\n"
                 "                        refusal is noted, but is not a receipt).\n"
                 "\n"
                 "  --sla DURATION   e.g. 30m, 24h, 7d (also s); default 24h, measured from A's\n"
                 "                   send time to now\n"
                 "  --json           one JSON object with the three lists\n"
                 "\n"
                 "Only A-to-B traffic is compared: swap the files for B-to-A.\n"
                 "Exit 0 if nothing was found; 1 if discrepancies were found (or a log cannot be\n"
                 "read); 2 for a bad command line.\n");
}

static int parse_duration(const char *s, int64_t *ms)
{
    char *end = NULL;
    if (!s || !isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    int64_t unit = 0;
    if (errno || !end || end[0] == 0 || end[1] != 0 || v <= 0)
        return -1;
    switch (end[0]) {
    case 's':
        unit = 1000;
        break;
    case 'm':
        unit = 60 * 1000;
        break;
    case 'h':
        unit = 3600 * 1000;
        break;
    case 'd':
        unit = 86400 * 1000;
        break;
    default:
        return -1;
    }
    if (v > 3660LL * 86400 * 1000 / unit) /* ten years is enough */
        return -1;
    *ms = v * unit;
    return 0;
}

/* The one agency a log belongs to; an empty log, or one with two agencies, is an error. */
static int log_agency(sqlite3 *db, const char *schema, const char *path, char *buf, size_t len)
{
    char sql[128];
    sqlite3_stmt *st = NULL;
    int n = 0;
    snprintf(sql, sizeof sql, "SELECT DISTINCT agency FROM %s.audit LIMIT 2", schema);
    if (refex_db_prepare(db, sql, &st) != REFEX_OK)
        return EXIT_FAIL;
    while (sqlite3_step(st) == SQLITE_ROW)
        if (n++ == 0)
            snprintf(buf, len, "%s", col(st, 0));
    sqlite3_finalize(st);
    if (n == 1 && buf[0])
        return EXIT_OK;
    fprintf(stderr, "refex audit reconcile: %s: %s\n", path,
            n == 0 ? "the audit log is empty: whose is it?"
                   : "entries of more than one agency: not one agent's log");
    return EXIT_FAIL;
}

/* ?1 = A's agency, ?2 = B's, ?3 = the SLA cut-off time. */
static const char *const SQL_SENT_NOT_RECEIVED =
    "SELECT s.message_id, s.time_ms, s.message_type, s.case_ref,"
    " EXISTS (SELECT 1 FROM main.audit x WHERE x.message_id = s.message_id"
    "  AND x.event = 'receipt' AND x.peer = ?2)"
    " FROM main.audit s WHERE s.event = 'send' AND s.message_id != ''"
    " AND instr(',' || s.peer || ',', ',' || ?2 || ',') > 0"
    " AND NOT EXISTS (SELECT 1 FROM b.audit r WHERE r.message_id = s.message_id"
    "  AND r.event IN ('receive', 'reject') AND r.peer = ?1)"
    " AND NOT EXISTS (SELECT 1 FROM main.audit x WHERE x.message_id = s.message_id"
    "  AND ((x.event = 'non-delivery' AND x.peer = ?2) OR (x.event = 'reject'"
    "  AND instr(',' || x.peer || ',', ',' || ?2 || ',') > 0)))"
    " ORDER BY s.seq";

static const char *const SQL_RECEIVED_NOT_SENT =
    "SELECT r.message_id, r.time_ms, r.message_type, r.case_ref, 0"
    " FROM b.audit r WHERE r.event = 'receive' AND r.peer = ?1"
    " AND NOT EXISTS (SELECT 1 FROM main.audit s WHERE s.message_id = r.message_id"
    "  AND s.event = 'send')"
    " ORDER BY r.seq";

static const char *const SQL_UNACKNOWLEDGED =
    "SELECT s.message_id, s.time_ms, s.message_type, s.case_ref,"
    " CASE WHEN EXISTS (SELECT 1 FROM main.audit x WHERE x.message_id = s.message_id"
    "  AND x.event = 'non-delivery' AND x.peer = ?2) THEN 2"
    " WHEN EXISTS (SELECT 1 FROM main.audit x WHERE x.message_id = s.message_id"
    "  AND x.event = 'reject') THEN 3 ELSE 0 END"
    " FROM main.audit s WHERE s.event = 'send' AND s.message_id != ''"
    " AND instr(',' || s.peer || ',', ',' || ?2 || ',') > 0 AND s.time_ms < ?3"
    " AND NOT EXISTS (SELECT 1 FROM main.audit x WHERE x.message_id = s.message_id"
    "  AND x.event = 'receipt' AND x.peer = ?2)"
    " ORDER BY s.seq";

static const char *reconcile_note(int category, int flag)
{
    if (category == 0)
        return flag ? "A holds B's signed receipt, but B's log has no entry for it"
                    : "no receive in B's log and no receipt in A's: lost, or in transit";
    if (category == 1)
        return "B's log has a receive from A that A's log never sent";
    return flag == 2   ? "no receipt: A holds a non-delivery report (expired)"
           : flag == 3 ? "no receipt: the broker refused it"
                       : "no receipt from B";
}

/* Runs one category's query; appends its rows to *arr. Returns the row count, or -1. */
static int reconcile_run(sqlite3 *db, const char *sql, int category, const char *a, const char *b,
                         int64_t cutoff, json_t *arr)
{
    sqlite3_stmt *st = NULL;
    int n = 0, step;
    if (refex_db_prepare(db, sql, &st) != REFEX_OK)
        return -1;
    sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= 3)
        sqlite3_bind_int64(st, 3, cutoff);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        json_array_append_new(arr,
                              json_pack("{s:s, s:I, s:s, s:s, s:s}", "message_id", col(st, 0),
                                        "time_ms", (json_int_t)sqlite3_column_int64(st, 1),
                                        "message_type", col(st, 2), "case_ref", col(st, 3), "note",
                                        reconcile_note(category, sqlite3_column_int(st, 4))));
    }
    if (step != SQLITE_DONE)
        n = -1;
    sqlite3_finalize(st);
    return n;
}

static void reconcile_print(const char *title, json_t *arr)
{
    size_t i;
    json_t *m;
    printf("\n%s: %s\n", title, json_array_size(arr) ? "" : "none");
    if (!json_array_size(arr))
        return;
    printf("  %-21s %-32s %-20s %-12s %s\n", "TIME", "MESSAGE ID", "TYPE", "CASE", "NOTE");
    json_array_foreach(arr, i, m)
    {
        char t[32];
        cli_format_time(t, sizeof t, (long long)json_integer_value(json_object_get(m, "time_ms")));
        printf("  %-21s %-32s %-20s %-12s %s\n", t,
               json_string_value(json_object_get(m, "message_id")),
               dash(json_string_value(json_object_get(m, "message_type"))),
               dash(json_string_value(json_object_get(m, "case_ref"))),
               json_string_value(json_object_get(m, "note")));
    }
}

int cmd_audit_reconcile(int argc, char **argv)
{
    const char *files[2] = {NULL, NULL}, *sla_s = "24h";
    int nfiles = 0, json = 0, rc;
    int64_t sla = 0;
    if (cli_wants_help(argc, argv)) {
        reconcile_usage(stdout);
        return EXIT_OK;
    }
    for (int k = 2; k < argc; k++) {
        if (strcmp(argv[k], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[k], "--sla") == 0 && k + 1 < argc) {
            sla_s = argv[++k];
        } else if (argv[k][0] == '-' || nfiles == 2) {
            fprintf(stderr, "refex audit reconcile: unexpected argument '%s' (see --help)\n",
                    argv[k]);
            return EXIT_USAGE;
        } else {
            files[nfiles++] = argv[k];
        }
    }
    if (nfiles != 2) {
        fprintf(stderr, "refex audit reconcile: give two audit databases, A.db B.db\n");
        return EXIT_USAGE;
    }
    if (parse_duration(sla_s, &sla) != 0) {
        fprintf(stderr,
                "refex audit reconcile: --sla '%s': give a duration such as 30m, 24h or "
                "7d\n",
                sla_s);
        return EXIT_USAGE;
    }
    if ((rc = check_file("reconcile", files[0])) != EXIT_OK ||
        (rc = check_file("reconcile", files[1])) != EXIT_OK)
        return rc;

    char err[512], a[256] = "", b[256] = "";
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    json_t *cat[3] = {json_array(), json_array(), json_array()}, *doc = NULL;
    rc = EXIT_FAIL;
    if (!cat[0] || !cat[1] || !cat[2])
        goto out;
    if (refex_db_open(files[0], 1, &db, err, sizeof err) != REFEX_OK) {
        fprintf(stderr, "refex audit reconcile: %s\n", err);
        goto out;
    }
    if (check_audit_table("reconcile", db, "main", files[0]) != EXIT_OK)
        goto out;
    /* B is attached with the main connection's flags: read-only as well. The path is a
     * bound value, never SQL text. */
    if (refex_db_prepare(db, "ATTACH DATABASE ? AS b", &st) != REFEX_OK)
        goto out;
    sqlite3_bind_text(st, 1, files[1], -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        fprintf(stderr, "refex audit reconcile: %s: not a readable SQLite database (%s)\n",
                files[1], sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (check_audit_table("reconcile", db, "b", files[1]) != EXIT_OK)
        goto out;
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        log_agency(db, "main", files[0], a, sizeof a) != EXIT_OK ||
        log_agency(db, "b", files[1], b, sizeof b) != EXIT_OK)
        goto out;
    if (strcmp(a, b) == 0) {
        fprintf(stderr, "refex audit reconcile: both logs belong to %s\n", a);
        goto out;
    }
    int64_t now = refex_now_ms();
    const char *sql[3] = {SQL_SENT_NOT_RECEIVED, SQL_RECEIVED_NOT_SENT, SQL_UNACKNOWLEDGED};
    int found = 0;
    for (int i = 0; i < 3; i++) {
        int n = reconcile_run(db, sql[i], i, a, b, now - sla, cat[i]);
        if (n < 0) {
            fprintf(stderr, "refex audit reconcile: %s\n", sqlite3_errmsg(db));
            goto out;
        }
        found += n;
    }
    if (json) {
        doc = json_pack("{s:{s:s, s:s}, s:{s:s, s:s}, s:I, s:I, s:O, s:O, s:O, s:i}", "a", "db",
                        files[0], "agency", a, "b", "db", files[1], "agency", b, "sla_seconds",
                        (json_int_t)(sla / 1000), "now_ms", (json_int_t)now, "sent_not_received",
                        cat[0], "received_not_sent", cat[1], "unacknowledged", cat[2],
                        "discrepancies", found);
        if (!doc)
            goto out;
        cli_print_json(doc);
    } else {
        char t1[1024], t2[1024], t3[1024];
        printf("reconcile A = %s (%s) with B = %s (%s), SLA %s\n", a, files[0], b, files[1], sla_s);
        snprintf(t1, sizeof t1, "sent by %s, not received by %s", a, b);
        snprintf(t2, sizeof t2, "received by %s from %s, never sent by %s", b, a, a);
        snprintf(t3, sizeof t3, "sent by %s, unacknowledged by %s after %s", a, b, sla_s);
        reconcile_print(t1, cat[0]);
        reconcile_print(t2, cat[1]);
        reconcile_print(t3, cat[2]);
        printf("\n%d %s\n", found, found == 1 ? "discrepancy" : "discrepancies");
    }
    rc = found ? EXIT_FAIL : EXIT_OK;
out:
    sqlite3_finalize(st);
    json_decref(doc);
    for (int i = 0; i < 3; i++)
        json_decref(cat[i]);
    if (db)
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    refex_db_close(&db);
    return rc;
}
