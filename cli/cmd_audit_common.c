/* Helpers shared by the `refex audit` commands: one option parser so every subcommand
 * reports a bad command line the same way, one way to open a log (read-only, with the
 * agent told), and the JSON shape of an entry. No command logic lives here. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cmd_audit.h"
#include "util.h"

int cli_audit_unknown(const char *cmd, const char *arg)
{
    fprintf(stderr, "refex audit %s: unknown argument '%s' (see --help)\n", cmd, arg);
    return EXIT_USAGE;
}

/* "--name" of a long-option token, without any "=value"; "-x" for a short option. */
static void opt_name(char *buf, size_t len, const char *tok)
{
    if (strncmp(tok, "--", 2) == 0)
        snprintf(buf, len, "%.*s", (int)strcspn(tok, "="), tok);
    else
        snprintf(buf, len, "-%c", optopt ? optopt : tok[1]);
}

static int usage_error(const cli_audit_opts *o, int c, const char *tok)
{
    char name[64];
    opt_name(name, sizeof name, tok);
    if (c == ':') {
        fprintf(stderr, "refex audit %s: %s needs a value (see --help)\n", o->cmd, name);
        return '?';
    }
    for (const struct option *p = o->longopts; p->name; p++)
        if (name[1] == '-' && strcmp(name + 2, p->name) == 0 && p->has_arg == no_argument) {
            fprintf(stderr, "refex audit %s: %s takes no value (see --help)\n", o->cmd, name);
            return '?';
        }
    (void)cli_audit_unknown(o->cmd, name);
    return '?';
}

int cli_audit_getopt(cli_audit_opts *o, const char **arg)
{
    char **av = o->argv + 1, spec[32]; /* av[0] is the subcommand, as getopt expects */
    int ac = o->argc - 1, idx = -1;
    *arg = NULL;
    if (o->state == 0) {
        optind = 0; /* a full reset, whatever ran before */
        opterr = 0;
        o->state = 1;
    }
    if (o->state == 1) {
        /* "-": positional arguments come back in order, as 1; ":": a missing value is ':'. */
        snprintf(spec, sizeof spec, "-:%s", o->shortopts);
        int c = getopt_long(ac, av, spec, o->longopts, &idx);
        if (c != -1) {
            *arg = optarg;
            if (c == '?' || c == ':')
                return usage_error(o, c, av[optind - 1]);
            if (idx < 0)
                return c;
            /* The option's own token: before its value if that was a separate argument. */
            const char *tok = av[optind - 1 - (optarg && optarg == av[optind - 1])];
            if (cli_spelt_in_full(o->longopts[idx].name, tok))
                return c;
            char name[64];
            opt_name(name, sizeof name, tok);
            (void)cli_audit_unknown(o->cmd, name);
            return '?';
        }
        o->state = 2;
    }
    /* After "--", the rest are positional. */
    if (optind < ac) {
        *arg = av[optind++];
        return 1;
    }
    return -1;
}

/* ---- reading a log ------------------------------------------------------------------ */

int cli_audit_parse_count(const char *s, uint64_t *out)
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

int cli_audit_check_file(const char *cmd, const char *path)
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

/* Reading an agency's own log through its config is itself audited: the agent appends an
 * audit-log-used entry naming the command (never the filter values). A stopped agent
 * cannot record it; the read goes ahead and the user is told. */
void cli_audit_tell_agent(const char *what)
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

int cli_audit_log_open(const char *cmd, const char *db_arg, refex_audit_reader **out, char *path,
                       size_t len)
{
    char err[4600];
    int rc = EXIT_OK;
    *out = NULL;
    if (db_arg)
        snprintf(path, len, "%s", db_arg);
    else if ((rc = cli_agent_db(cmd, NULL, path, len)) != EXIT_OK)
        return rc;
    if ((rc = cli_audit_check_file(cmd, path)) != EXIT_OK)
        return rc;
    if (!db_arg)
        cli_audit_tell_agent(cmd);
    if (refex_audit_reader_open(path, 0, out, err, sizeof err) != REFEX_OK) {
        fprintf(stderr, "refex audit %s: %s\n", cmd, err);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

/* ---- entries as text and JSON ------------------------------------------------------- */

const char *const CLI_AUDIT_FIELDS[CLI_AUDIT_NFIELDS] = {
    "event",      "outcome",      "agency",   "practitioner",  "peer",
    "message_id", "message_type", "case_ref", "envelope_hash", "purpose",
    "article6",   "article9",     "consent",  "subjects"};

void cli_audit_fields(const refex_audit_row *row, const char *out[CLI_AUDIT_NFIELDS])
{
    const refex_audit_entry *e = &row->e;
    const char *f[CLI_AUDIT_NFIELDS] = {
        e->event,      e->outcome,      e->agency,   e->practitioner,  e->peer,
        e->message_id, e->message_type, e->case_ref, e->envelope_hash, e->purpose,
        e->article6,   e->article9,     e->consent,  e->subjects};
    memcpy(out, f, sizeof f);
}

const char *cli_audit_dash(const char *s)
{
    return s && *s ? s : "-";
}

json_t *cli_audit_b64(const void *p, size_t n)
{
    char *s = malloc(REFEX_BASE64_LEN(n));
    if (!s)
        return NULL;
    refex_base64_encode(s, p, n);
    json_t *v = json_string(s);
    free(s);
    return v;
}

json_t *cli_audit_row_json(const refex_audit_row *row, int leaf)
{
    json_t *o = json_object();
    const char *f[CLI_AUDIT_NFIELDS];
    char hex[65] = "";
    if (!o)
        return NULL;
    cli_audit_fields(row, f);
    json_object_set_new(o, "seq", json_integer(row->seq));
    json_object_set_new(o, "time_ms", json_integer(row->e.time_ms));
    for (int i = 0; i < CLI_AUDIT_NFIELDS; i++)
        json_object_set_new(o, CLI_AUDIT_FIELDS[i], json_string(f[i]));
    if (leaf)
        json_object_set_new(o, "leaf", cli_audit_b64(row->entry, row->entry_len));
    if (row->leaf_hash)
        refex_hex_encode(hex, row->leaf_hash, 32);
    json_object_set_new(o, "leaf_hash", json_string(hex));
    return o;
}

/* ---- progress on a terminal ---------------------------------------------------------- */

static struct {
    const char *what;
    uint64_t total;
    int64_t start_ms, last_ms;
    int open; /* a line is on the terminal, not yet ended */
} g_progress;

static void on_progress(void *ctx, uint64_t done)
{
    (void)ctx;
    int64_t now = refex_mono_ms();
    int last = done >= g_progress.total;
    if (!last && now - g_progress.last_ms < 200)
        return;
    g_progress.last_ms = now;
    double secs = (double)(now - g_progress.start_ms) / 1000.0;
    fprintf(stderr, "\r%s: %llu / %llu entries (%.0f/s)%s", g_progress.what,
            (unsigned long long)done, (unsigned long long)g_progress.total,
            secs > 0.001 ? (double)done / secs : (double)done, last ? "\n" : "");
    fflush(stderr);
    g_progress.open = !last;
}

void cli_audit_progress(refex_audit_reader *r, const char *what)
{
    uint64_t total = 0;
    if (!isatty(STDERR_FILENO) || refex_audit_reader_size(r, &total) != REFEX_OK)
        return;
    g_progress.what = what;
    g_progress.total = total;
    g_progress.start_ms = refex_mono_ms();
    g_progress.last_ms = 0;
    refex_audit_reader_progress(r, on_progress, NULL);
}

void cli_audit_progress_end(void)
{
    if (g_progress.open) /* stopped short (a failure): what follows starts a line of its own */
        fputc('\n', stderr);
    g_progress.open = 0;
}
