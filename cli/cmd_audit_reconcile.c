/* `refex audit reconcile`: compares what one agency's log says it sent another with what
 * the other's log says it received, so a lost message, a missing log entry or an overdue
 * receipt shows up without trusting either side alone. The comparisons are
 * lib/audit_reader.c's; this file checks the command line and writes the report. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_audit.h"
#include "util.h"

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
    static const struct {
        char suffix;
        int64_t unit;
    } UNITS[] = {{'s', 1000}, {'m', 60 * 1000}, {'h', 3600 * 1000}, {'d', 86400 * 1000}};
    char *end = NULL;
    if (!s || !isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || end[0] == 0 || end[1] != 0 || v <= 0)
        return -1;
    for (size_t i = 0; i < sizeof UNITS / sizeof UNITS[0]; i++)
        if (end[0] == UNITS[i].suffix) {
            if (v > 3660LL * 86400 * 1000 / UNITS[i].unit) /* ten years is enough */
                return -1;
            *ms = v * UNITS[i].unit;
            return 0;
        }
    return -1;
}

/* The one agency a log belongs to; an empty log, or one with two agencies, is an error. */
static int log_agency(refex_audit_reader *r, int which, const char *path, char *buf, size_t len)
{
    int n = 0;
    if (refex_audit_reader_agency(r, which, buf, len, &n) != REFEX_OK)
        return EXIT_FAIL;
    if (n == 1 && buf[0])
        return EXIT_OK;
    fprintf(stderr, "refex audit reconcile: %s: %s\n", path,
            n == 0 ? "the audit log is empty: whose is it?"
                   : "entries of more than one agency: not one agent's log");
    return EXIT_FAIL;
}

typedef struct {
    refex_audit_reconcile_kind kind;
    json_t *arr;
    int n;
} category;

static const char *reconcile_note(refex_audit_reconcile_kind kind, int flag)
{
    if (kind == REFEX_AUDIT_SENT_NOT_RECEIVED)
        return flag ? "A holds B's signed receipt, but B's log has no entry for it"
                    : "no receive in B's log and no receipt in A's: lost, or in transit";
    if (kind == REFEX_AUDIT_RECEIVED_NOT_SENT)
        return "B's log has a receive from A that A's log never sent";
    return flag == 2   ? "no receipt: A holds a non-delivery report (expired)"
           : flag == 3 ? "no receipt: the broker refused it"
                       : "no receipt from B";
}

static int add_discrepancy(const refex_audit_discrepancy *d, void *arg)
{
    category *c = arg;
    c->n++;
    return json_array_append_new(
               c->arr, json_pack("{s:s, s:I, s:s, s:s, s:s}", "message_id", d->message_id,
                                 "time_ms", (json_int_t)d->time_ms, "message_type", d->message_type,
                                 "case_ref", d->case_ref, "note", reconcile_note(c->kind, d->flag)))
               ? REFEX_E_NOMEM
               : REFEX_OK;
}

static void print_category(const char *title, json_t *arr)
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
               cli_audit_dash(json_string_value(json_object_get(m, "message_type"))),
               cli_audit_dash(json_string_value(json_object_get(m, "case_ref"))),
               json_string_value(json_object_get(m, "note")));
    }
}

typedef struct {
    const char *files[2], *sla_s;
    int64_t sla, now;
    int json;
    char a[256], b[256];
} reconcile_args;

static int print_report(const reconcile_args *x, category cat[3], int found)
{
    if (x->json) {
        json_t *doc =
            json_pack("{s:{s:s, s:s}, s:{s:s, s:s}, s:I, s:I, s:O, s:O, s:O, s:i}", "a", "db",
                      x->files[0], "agency", x->a, "b", "db", x->files[1], "agency", x->b,
                      "sla_seconds", (json_int_t)(x->sla / 1000), "now_ms", (json_int_t)x->now,
                      "sent_not_received", cat[0].arr, "received_not_sent", cat[1].arr,
                      "unacknowledged", cat[2].arr, "discrepancies", found);
        if (!doc)
            return EXIT_FAIL;
        cli_print_json(doc);
        json_decref(doc);
        return EXIT_OK;
    }
    char t1[1024], t2[1024], t3[1024];
    printf("reconcile A = %s (%s) with B = %s (%s), SLA %s\n", x->a, x->files[0], x->b, x->files[1],
           x->sla_s);
    snprintf(t1, sizeof t1, "sent by %s, not received by %s", x->a, x->b);
    snprintf(t2, sizeof t2, "received by %s from %s, never sent by %s", x->b, x->a, x->a);
    snprintf(t3, sizeof t3, "sent by %s, unacknowledged by %s after %s", x->a, x->b, x->sla_s);
    print_category(t1, cat[0].arr);
    print_category(t2, cat[1].arr);
    print_category(t3, cat[2].arr);
    printf("\n%d %s\n", found, found == 1 ? "discrepancy" : "discrepancies");
    return EXIT_OK;
}

static int reconcile_parse(int argc, char **argv, reconcile_args *x)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"sla", required_argument, NULL, 's'}, {0}};
    cli_audit_opts o = {"reconcile", argc, argv, "", opts, 0};
    const char *v;
    int c, nfiles = 0;
    x->sla_s = "24h";
    while ((c = cli_audit_getopt(&o, &v)) != -1) {
        if (c == 'j') {
            x->json = 1;
        } else if (c == 's') {
            x->sla_s = v;
        } else if (c == 1 && nfiles < 2) {
            x->files[nfiles++] = v;
        } else if (c == 1) {
            fprintf(stderr, "refex audit reconcile: unexpected argument '%s' (see --help)\n", v);
            return EXIT_USAGE;
        } else {
            return EXIT_USAGE;
        }
    }
    if (nfiles != 2) {
        fprintf(stderr, "refex audit reconcile: give two audit databases, A.db B.db\n");
        return EXIT_USAGE;
    }
    if (parse_duration(x->sla_s, &x->sla) != 0) {
        fprintf(stderr,
                "refex audit reconcile: --sla '%s': give a duration such as 30m, 24h or "
                "7d\n",
                x->sla_s);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

int cmd_audit_reconcile(int argc, char **argv)
{
    reconcile_args x = {0};
    refex_audit_reader *r = NULL;
    category cat[3] = {{REFEX_AUDIT_SENT_NOT_RECEIVED, json_array(), 0},
                       {REFEX_AUDIT_RECEIVED_NOT_SENT, json_array(), 0},
                       {REFEX_AUDIT_UNACKNOWLEDGED, json_array(), 0}};
    char err[9000];
    int rc = EXIT_OK, found = 0;
    if (cli_wants_help(argc, argv))
        reconcile_usage(stdout);
    else if ((rc = reconcile_parse(argc, argv, &x)) == EXIT_OK &&
             (rc = cli_audit_check_file("reconcile", x.files[0])) == EXIT_OK)
        rc = cli_audit_check_file("reconcile", x.files[1]);
    if (rc != EXIT_OK || !x.files[0])
        goto out;
    rc = EXIT_FAIL;
    if (!cat[0].arr || !cat[1].arr || !cat[2].arr)
        goto out;
    if (refex_audit_reader_open_pair(x.files[0], x.files[1], &r, err, sizeof err) != REFEX_OK) {
        fprintf(stderr, "refex audit reconcile: %s\n", err);
        goto out;
    }
    if (log_agency(r, 0, x.files[0], x.a, sizeof x.a) != EXIT_OK ||
        log_agency(r, 1, x.files[1], x.b, sizeof x.b) != EXIT_OK)
        goto out;
    if (strcmp(x.a, x.b) == 0) {
        fprintf(stderr, "refex audit reconcile: both logs belong to %s\n", x.a);
        goto out;
    }
    x.now = refex_now_ms();
    for (int i = 0; i < 3; i++) {
        if (refex_audit_reader_reconcile(r, cat[i].kind, x.a, x.b, x.now - x.sla, add_discrepancy,
                                         &cat[i]) != REFEX_OK) {
            fprintf(stderr, "refex audit reconcile: %s\n", refex_audit_reader_errmsg(r));
            goto out;
        }
        found += cat[i].n;
    }
    if (print_report(&x, cat, found) == EXIT_OK)
        rc = found ? EXIT_FAIL : EXIT_OK;
out:
    for (int i = 0; i < 3; i++)
        json_decref(cat[i].arr);
    refex_audit_reader_close(&r);
    return rc;
}
