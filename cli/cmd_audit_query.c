/* `refex audit query`: the entries of a log that match every filter given, for a
 * subject-access report or an investigation. Parses and checks the filters; the matching
 * itself is lib/audit_reader.c's. Read-only: the one side effect is asking a running agent
 * to record that its own log was read. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cmd_audit.h"
#include "body.h"
#include "refex.pb-c.h"
#include "util.h"

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
            "  --event E         send, receive, reject, receipt, non-delivery, no-report,\n"
            "                    audit-log-used\n"
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

/* ---- checking filter values ---------------------------------------------------------- */

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

/* Each checker validates the value of --opt and puts what to match in buf (or c->ms). */
typedef int (*checker)(const char *opt, const char *v, char *buf, size_t len, refex_audit_cond *c);

static int any_text(const char *opt, const char *v, char *buf, size_t len, refex_audit_cond *c)
{
    (void)opt;
    (void)c;
    snprintf(buf, len, "%s", v);
    return EXIT_OK;
}

static int one_ref(const char *opt, const char *v, char *buf, size_t len, refex_audit_cond *c)
{
    if (!*v || strchr(v, ',')) {
        fprintf(stderr, "refex audit query: %s takes one reference, without commas\n", opt);
        return EXIT_USAGE;
    }
    return any_text(opt, v, buf, len, c);
}

static int message_id(const char *opt, const char *v, char *buf, size_t len, refex_audit_cond *c)
{
    (void)opt;
    (void)c;
    size_t n = strlen(v);
    if (n != 32 || len <= n || refex_hex_decode((uint8_t[16]){0}, 16, v) != REFEX_OK) {
        fprintf(stderr, "refex audit query: --message takes a 32-hex-digit id\n");
        return EXIT_USAGE;
    }
    for (size_t i = 0; i <= n; i++)
        buf[i] = (char)tolower((unsigned char)v[i]);
    return EXIT_OK;
}

static int a_time(const char *opt, const char *v, refex_audit_cond *c)
{
    if (parse_time(v, c->field == REFEX_AUDIT_BY_UNTIL, &c->ms) == 0)
        return EXIT_OK;
    fprintf(stderr,
            "refex audit query: %s '%s': give YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC) or epoch "
            "milliseconds\n",
            opt, v);
    return EXIT_USAGE;
}

static int since_until(const char *opt, const char *v, char *buf, size_t len, refex_audit_cond *c)
{
    (void)buf;
    (void)len;
    return a_time(opt, v, c);
}

static int event_name(const char *opt, const char *v, char *buf, size_t len, refex_audit_cond *c)
{
    static const char *const EVENTS[] = {"send",         "receive",   "reject",        "receipt",
                                         "non-delivery", "no-report", "audit-log-used"};
    for (size_t i = 0; i < sizeof EVENTS / sizeof EVENTS[0]; i++)
        if (strcmp(v, EVENTS[i]) == 0)
            return any_text(opt, v, buf, len, c);
    fprintf(stderr,
            "refex audit query: unknown --event '%s'; one of: send, receive, reject, receipt, "
            "non-delivery, no-report, audit-log-used\n",
            v);
    return EXIT_USAGE;
}

static int message_type(const char *opt, const char *v, char *buf, size_t len, refex_audit_cond *c)
{
    (void)opt;
    (void)c;
    int t = refex_message_type_parse(v);
    if (!t) {
        fprintf(stderr, "refex audit query: unknown --type '%s'\n", v);
        return EXIT_USAGE;
    }
    snprintf(buf, len, "%s", refex_message_type_name(t));
    return EXIT_OK;
}

/* "public-task" with ARTICLE6_ -> "ARTICLE6_PUBLIC_TASK", checked against the proto enum so
 * that a typo is an error rather than an empty report. */
static int enum_value(const char *opt, const ProtobufCEnumDescriptor *d, const char *prefix,
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

static int purpose(const char *opt, const char *v, char *buf, size_t len, refex_audit_cond *c)
{
    (void)c;
    return enum_value(opt, &refex__v1__purpose_of_use__descriptor, "PURPOSE_", v, buf, len);
}

static int article6(const char *opt, const char *v, char *buf, size_t len, refex_audit_cond *c)
{
    (void)c;
    return enum_value(opt, &refex__v1__article6_basis__descriptor, "ARTICLE6_", v, buf, len);
}

static int article9(const char *opt, const char *v, char *buf, size_t len, refex_audit_cond *c)
{
    (void)c;
    return enum_value(opt, &refex__v1__article9_condition__descriptor, "ARTICLE9_", v, buf, len);
}

static int consent(const char *opt, const char *v, char *buf, size_t len, refex_audit_cond *c)
{
    (void)c;
    return enum_value(opt, &refex__v1__consent_status__descriptor, "CONSENT_", v, buf, len);
}

/* ---- the command --------------------------------------------------------------------- */

enum { OPT_JSON = 256, OPT_DB, OPT_FILTER }; /* OPT_FILTER + i is FILTERS[i] */

static const struct {
    const char *name;
    refex_audit_field field;
    checker check;
} FILTERS[] = {
    {"subject", REFEX_AUDIT_BY_SUBJECT, one_ref},
    {"case", REFEX_AUDIT_BY_CASE, any_text},
    {"peer", REFEX_AUDIT_BY_PEER, one_ref},
    {"message", REFEX_AUDIT_BY_MESSAGE, message_id},
    {"since", REFEX_AUDIT_BY_SINCE, since_until},
    {"until", REFEX_AUDIT_BY_UNTIL, since_until},
    {"event", REFEX_AUDIT_BY_EVENT, event_name},
    {"outcome", REFEX_AUDIT_BY_OUTCOME, any_text},
    {"type", REFEX_AUDIT_BY_TYPE, message_type},
    {"purpose", REFEX_AUDIT_BY_PURPOSE, purpose},
    {"article6", REFEX_AUDIT_BY_ARTICLE6, article6},
    {"article9", REFEX_AUDIT_BY_ARTICLE9, article9},
    {"consent", REFEX_AUDIT_BY_CONSENT, consent},
};
#define NFILTERS (sizeof FILTERS / sizeof FILTERS[0])

typedef struct {
    refex_audit_cond c[REFEX_AUDIT_MAX_CONDS];
    char text[REFEX_AUDIT_MAX_CONDS][96];
    size_t n;
    int json;
    const char *db;
} query_args;

static int add_filter(query_args *q, size_t i, const char *v)
{
    char opt[32];
    if (q->n >= REFEX_AUDIT_MAX_CONDS) {
        fprintf(stderr, "refex audit query: too many filters\n");
        return EXIT_USAGE;
    }
    refex_audit_cond *c = &q->c[q->n];
    *c = (refex_audit_cond){FILTERS[i].field, q->text[q->n], 0};
    snprintf(opt, sizeof opt, "--%s", FILTERS[i].name);
    int rc = FILTERS[i].check(opt, v, q->text[q->n], sizeof q->text[q->n], c);
    if (rc == EXIT_OK)
        q->n++;
    return rc;
}

/* The filters in command-line order; --since after --until is a usage error. */
static int query_parse(int argc, char **argv, query_args *q)
{
    struct option opts[NFILTERS + 3] = {{"json", no_argument, NULL, OPT_JSON},
                                        {"db", required_argument, NULL, OPT_DB}};
    for (size_t i = 0; i < NFILTERS; i++)
        opts[2 + i] =
            (struct option){FILTERS[i].name, required_argument, NULL, OPT_FILTER + (int)i};
    cli_audit_opts o = {"query", argc, argv, "c:", opts, 0};
    const char *v;
    int c, rc;
    while ((c = cli_audit_getopt(&o, &v)) != -1) {
        if (c == 'c')
            cli_config = v;
        else if (c == OPT_JSON)
            q->json = 1;
        else if (c == OPT_DB)
            q->db = v;
        else if (c >= OPT_FILTER && c < OPT_FILTER + (int)NFILTERS) {
            if ((rc = add_filter(q, (size_t)(c - OPT_FILTER), v)) != EXIT_OK)
                return rc;
        } else
            return c == 1 ? cli_audit_unknown("query", v) : EXIT_USAGE;
    }
    const refex_audit_cond *since = NULL, *until = NULL;
    for (size_t i = 0; i < q->n; i++) {
        if (q->c[i].field == REFEX_AUDIT_BY_SINCE)
            since = &q->c[i];
        else if (q->c[i].field == REFEX_AUDIT_BY_UNTIL)
            until = &q->c[i];
    }
    if (since && until && since->ms > until->ms) {
        fprintf(stderr, "refex audit query: --since is after --until\n");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

typedef struct {
    int json, count;
    json_t *arr;
} query_out;

static int print_row(const refex_audit_row *row, void *arg)
{
    query_out *q = arg;
    q->count++;
    if (q->json)
        return json_array_append_new(q->arr, cli_audit_row_json(row, 0)) == 0 ? REFEX_OK
                                                                              : REFEX_E_NOMEM;
    const refex_audit_entry *e = &row->e;
    char t[32];
    cli_format_time(t, sizeof t, (long long)e->time_ms);
    printf("%-5lld %-21s %-14s %-16s %-18s %-20s %-32s %-12s %-24s %s + %s\n", (long long)row->seq,
           t, e->event, e->outcome, cli_audit_dash(e->peer), cli_audit_dash(e->message_type),
           cli_audit_dash(e->message_id), cli_audit_dash(e->case_ref), cli_audit_dash(e->subjects),
           cli_audit_dash(e->article6), cli_audit_dash(e->article9));
    return REFEX_OK;
}

int cmd_audit_query(int argc, char **argv)
{
    query_args q = {0};
    query_out out = {0};
    refex_audit_reader *r = NULL;
    char path[4200];
    if (cli_wants_help(argc, argv)) {
        query_usage(stdout);
        return EXIT_OK;
    }
    int rc = query_parse(argc, argv, &q);
    if (rc != EXIT_OK || (rc = cli_audit_log_open("query", q.db, &r, path, sizeof path)) != EXIT_OK)
        return rc;
    rc = EXIT_FAIL;
    out.json = q.json;
    if (q.json && !(out.arr = json_array()))
        goto out;
    if (!q.json)
        printf("%-5s %-21s %-14s %-16s %-18s %-20s %-32s %-12s %-24s %s\n", "SEQ", "TIME", "EVENT",
               "OUTCOME", "PEER", "TYPE", "MESSAGE ID", "CASE", "SUBJECTS", "LAWFUL BASIS");
    if (refex_audit_reader_each(r, q.c, q.n, print_row, &out) != REFEX_OK) {
        fprintf(stderr, "refex audit query: %s: %s\n", path, refex_audit_reader_errmsg(r));
        goto out;
    }
    if (q.json)
        cli_print_json(out.arr);
    else
        printf("(%d matching %s)\n", out.count, out.count == 1 ? "entry" : "entries");
    rc = EXIT_OK;
out:
    json_decref(out.arr);
    refex_audit_reader_close(&r);
    return rc;
}
