/* `refex audit export`: a whole log for an auditor or a regulator, as refex's own JSON
 * (enough to recompute the root from the leaf bytes), CSV, or a FHIR R4 Bundle (the mapping
 * is lib/fhir.c's). Exports what it finds, but fails if the stored tree does not match the
 * entries, so a damaged log is never handed over as if it were sound. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_audit.h"
#include "fhir.h"
#include "merkle.h"
#include "util.h"

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

/* ---- where it goes: stdout, or a file written beside its name and renamed into place -- */

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

/* ---- one entry ------------------------------------------------------------------------- */

typedef enum { F_JSON, F_CSV, F_FHIR } export_format;

typedef struct {
    export_format fmt;
    FILE *f;
    json_t *entries;       /* json and fhir */
    uint8_t (*leaves)[32]; /* the leaf hashes a third party would compute */
    uint64_t n, cap;
    char agency[256];
    char why[300]; /* why the log does not verify, if it does not */
    int failed;    /* out of memory */
} export_state;

static const char *const CSV_HEADER[] = {
    "seq",          "time",     "time_ms",    "event",        "outcome",  "agency",
    "practitioner", "peer",     "message_id", "message_type", "case_ref", "envelope_hash",
    "purpose",      "article6", "article9",   "consent",      "subjects", "leaf_hash"};

static void csv_row(FILE *f, const refex_audit_row *row)
{
    char seq[24], ms[24], when[40], hex[65] = "";
    const char *fields[CLI_AUDIT_NFIELDS];
    snprintf(seq, sizeof seq, "%lld", (long long)row->seq);
    snprintf(ms, sizeof ms, "%lld", (long long)row->e.time_ms);
    refex_fhir_instant(when, sizeof when, row->e.time_ms);
    cli_csv_field(f, seq, 0);
    cli_csv_field(f, when, 0);
    cli_csv_field(f, ms, 0);
    cli_audit_fields(row, fields);
    for (int i = 0; i < CLI_AUDIT_NFIELDS; i++)
        cli_csv_field(f, fields[i], 0);
    if (row->leaf_hash)
        refex_hex_encode(hex, row->leaf_hash, 32);
    cli_csv_field(f, hex, 1);
}

static int export_row(const refex_audit_row *row, void *arg)
{
    export_state *s = arg;
    if (s->n == s->cap) {
        uint64_t cap = s->cap ? s->cap * 2 : 256;
        void *nl = realloc(s->leaves, cap * sizeof *s->leaves);
        if (!nl)
            goto oom;
        s->leaves = nl;
        s->cap = cap;
    }
    refex_merkle_leaf_hash(row->entry, row->entry_len, s->leaves[s->n]);
    if ((uint64_t)row->seq != s->n + 1 && !s->why[0])
        snprintf(s->why, sizeof s->why, "entry %llu is missing", (unsigned long long)(s->n + 1));
    s->n++;
    if (!s->agency[0])
        snprintf(s->agency, sizeof s->agency, "%s", row->e.agency);
    if (s->fmt == F_CSV) {
        csv_row(s->f, row);
        return REFEX_OK;
    }
    json_t *x = NULL;
    if (s->fmt == F_JSON)
        x = cli_audit_row_json(row, 1);
    else if (refex_fhir_bundle_entry(row, &x) != REFEX_OK)
        goto oom;
    if (x && json_array_append_new(s->entries, x) == 0)
        return REFEX_OK;
oom:
    s->failed = 1;
    return REFEX_E_NOMEM;
}

/* ---- the whole log ------------------------------------------------------------------- */

/* The root the log claims (from its stored subtree hashes, what checkpoints sign) must be
 * the root of the entries exported, and the exported columns what the entries' bytes say
 * (csv and fhir readers cannot check that themselves). If not, s->why says so. */
static int export_check(refex_audit_reader *r, export_state *s, uint64_t size, uint8_t stored[32],
                        int *have_root)
{
    uint8_t root[32];
    if (refex_merkle_root((const uint8_t(*)[32])s->leaves, s->n, root) != REFEX_OK)
        return REFEX_E_NOMEM;
    *have_root = refex_audit_reader_root(r, size, stored) == REFEX_OK;
    if (!s->why[0] && s->n != size)
        snprintf(s->why, sizeof s->why, "%llu entries but the log claims %llu",
                 (unsigned long long)s->n, (unsigned long long)size);
    if (!s->why[0] && (!*have_root || memcmp(root, stored, 32) != 0))
        snprintf(s->why, sizeof s->why, "the stored tree does not match the entries");
    if (!s->why[0]) {
        uint64_t vsize = 0;
        uint8_t vroot[32];
        char vwhy[256] = "";
        cli_audit_progress(r, "export: verify");
        int vrc = refex_audit_reader_verify(r, &vsize, vroot, vwhy, sizeof vwhy);
        cli_audit_progress_end();
        if (vrc != REFEX_OK)
            snprintf(s->why, sizeof s->why, "%s", vwhy[0] ? vwhy : "the log does not verify");
    }
    return REFEX_OK;
}

static int add_checkpoint(const refex_audit_checkpoint_row *cp, void *arg)
{
    return json_array_append_new(
               arg, json_pack("{s:I, s:o, s:s, s:I}", "size", (json_int_t)cp->size, "root",
                              cli_audit_b64(cp->root, cp->root_len), "note",
                              cp->note ? cp->note : "", "created_ms", (json_int_t)cp->created_ms))
               ? REFEX_E_NOMEM
               : REFEX_OK;
}

static int add_cosignature(const refex_audit_cosignature_row *cs, void *arg)
{
    return json_array_append_new(arg,
                                 json_pack("{s:I, s:s, s:s, s:I}", "size", (json_int_t)cs->size,
                                           "witness", cs->witness, "note", cs->note ? cs->note : "",
                                           "received_ms", (json_int_t)cs->received_ms))
               ? REFEX_E_NOMEM
               : REFEX_OK;
}

/* Checkpoints and cosignatures (tables absent in logs older than checkpointing). */
static int export_notes(refex_audit_reader *r, json_t *doc)
{
    json_t *cps = json_array(), *cos = json_array();
    int rc = REFEX_OK;
    json_object_set_new(doc, "checkpoints", cps);
    json_object_set_new(doc, "cosignatures", cos);
    if (!cps || !cos)
        return REFEX_E_NOMEM;
    if (refex_audit_reader_has(r, "audit_checkpoints") == 1)
        rc = refex_audit_reader_checkpoints(r, add_checkpoint, cps);
    if (rc == REFEX_OK && refex_audit_reader_has(r, "audit_cosignatures") == 1)
        rc = refex_audit_reader_cosignatures(r, 0, add_cosignature, cos);
    return rc;
}

/* The json or fhir document around the entries, written out; csv is already written. */
static int export_doc(refex_audit_reader *r, export_state *s, uint64_t size,
                      const uint8_t stored[32], int have_root)
{
    json_t *doc = NULL;
    int rc = REFEX_E_NOMEM;
    if (s->fmt == F_CSV)
        return REFEX_OK;
    if (s->fmt == F_FHIR && refex_fhir_bundle(s->entries, refex_now_ms(), &doc) != REFEX_OK)
        goto out;
    if (s->fmt == F_JSON) {
        doc = json_pack("{s:s}", "format", "refex-audit-export/v1");
        if (!doc)
            goto out;
        json_object_set_new(doc, "agency", s->agency[0] ? json_string(s->agency) : json_null());
        json_object_set_new(doc, "size", json_integer((json_int_t)size));
        json_object_set_new(doc, "root", have_root ? cli_audit_b64(stored, 32) : json_null());
        json_object_set(doc, "entries", s->entries);
        if ((rc = export_notes(r, doc)) != REFEX_OK)
            goto out;
    }
    rc = json_dumpf(doc, s->f, JSON_INDENT(2)) == 0 && fputc('\n', s->f) != EOF ? REFEX_OK
                                                                                : REFEX_E_IO;
out:
    json_decref(doc);
    return rc;
}

static int export_parse(int argc, char **argv, export_format *fmt, const char **db,
                        const char **out)
{
    static const struct option opts[] = {{"format", required_argument, NULL, 'F'},
                                         {"db", required_argument, NULL, 'd'},
                                         {"out", required_argument, NULL, 'o'},
                                         {0}};
    cli_audit_opts o = {"export", argc, argv, "c:", opts, 0};
    const char *v, *format = NULL;
    int c;
    while ((c = cli_audit_getopt(&o, &v)) != -1) {
        if (c == 'F')
            format = v;
        else if (c == 'd')
            *db = v;
        else if (c == 'o')
            *out = v;
        else if (c == 'c')
            cli_config = v;
        else
            return c == 1 ? cli_audit_unknown("export", v) : EXIT_USAGE;
    }
    static const char *const NAMES[] = {[F_JSON] = "json", [F_CSV] = "csv", [F_FHIR] = "fhir"};
    if (!format) {
        fprintf(stderr, "refex audit export: give --format json, csv or fhir\n");
        return EXIT_USAGE;
    }
    for (int i = 0; i < 3; i++)
        if (strcmp(format, NAMES[i]) == 0) {
            *fmt = (export_format)i;
            return EXIT_OK;
        }
    fprintf(stderr, "refex audit export: unknown --format '%s': json, csv or fhir\n", format);
    return EXIT_USAGE;
}

int cmd_audit_export(int argc, char **argv)
{
    const char *db_arg = NULL, *out_path = NULL;
    export_state s = {0};
    outfile o = {0};
    refex_audit_reader *r = NULL;
    char path[4200];
    uint8_t stored[32];
    uint64_t size = 0;
    int ok = 0, have_root = 0;
    if (cli_wants_help(argc, argv)) {
        export_usage(stdout);
        return EXIT_OK;
    }
    int rc = export_parse(argc, argv, &s.fmt, &db_arg, &out_path);
    if (rc != EXIT_OK ||
        (rc = cli_audit_log_open("export", db_arg, &r, path, sizeof path)) != EXIT_OK)
        return rc;
    rc = EXIT_FAIL;
    if (refex_audit_reader_size(r, &size) != REFEX_OK ||
        (s.fmt != F_CSV && !(s.entries = json_array())))
        goto out;
    if ((rc = out_open(&o, out_path)) != EXIT_OK)
        goto out;
    rc = EXIT_FAIL;
    s.f = o.f;
    for (size_t i = 0; s.fmt == F_CSV && i < sizeof CSV_HEADER / sizeof CSV_HEADER[0]; i++)
        cli_csv_field(o.f, CSV_HEADER[i], i + 1 == sizeof CSV_HEADER / sizeof CSV_HEADER[0]);
    if (refex_audit_reader_each(r, NULL, 0, export_row, &s) != REFEX_OK) {
        if (!s.failed)
            fprintf(stderr, "refex audit export: %s: %s\n", path, refex_audit_reader_errmsg(r));
        goto out;
    }
    if (export_check(r, &s, size, stored, &have_root) != REFEX_OK ||
        export_doc(r, &s, size, stored, have_root) != REFEX_OK)
        goto out;
    ok = 1;
    rc = EXIT_OK;
out:
    if (o.f && out_close(&o, ok) != EXIT_OK)
        rc = EXIT_FAIL;
    if (rc == EXIT_OK && s.why[0]) {
        fprintf(stderr,
                "refex audit export: %s does not verify (%s); exported as found. Run "
                "refex audit verify.\n",
                path, s.why);
        rc = EXIT_FAIL;
    }
    free(s.leaves);
    json_decref(s.entries);
    refex_audit_reader_close(&r);
    return rc;
}
