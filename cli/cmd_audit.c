/* `refex audit`: the auditor's commands, dispatched from one table, and the two that check
 * a log's integrity. `verify` reads an audit database directly (read-only), so an auditor
 * can check a copy of an agency's log without that agency's keys or daemon; `witnessed`
 * hands over what the broker cosigned. The reports live in cmd_audit_<name>.c; `list`,
 * which asks the running agent, in cmd_agent.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli.h"
#include "cmd_audit.h"
#include "checkpoint.h"
#include "keys.h"
#include "util.h"

/* --key: an agency's current key and the ones it rotated away from. */
#define VERIFY_KEYS_MAX 4

static void audit_usage(FILE *out)
{
    fprintf(out, "usage: refex [-c AGENT.conf] audit list [--limit N] [--json]\n"
                 "       refex [-c AGENT.conf] audit query|export|proof ... (see --help of each)\n"
                 "       refex audit reconcile A.db B.db [--sla 24h] [--json]\n"
                 "       refex audit witnessed --witness-db BROKER/witness.db|URI --agency ID\n"
                 "       refex [-c AGENT.conf] audit verify [--db FILE] [--key AGENCY.public]...\n"
                 "                 [--witness FILE --witness-key BROKER.public] [--json]\n"
                 "\n"
                 "list    this agency's audit log, through its running agent\n"
                 "verify  recompute the log's Merkle tree from its entries and check every\n"
                 "        stored hash; with --db, any copy of an agent.db file (opened\n"
                 "        read-only), otherwise the agent named by -c. Exit 0 if intact, 1\n"
                 "        with what is wrong and where if not.\n"
                 "        --key: also check every checkpoint the log holds: signed by that\n"
                 "        agency, and its root equal to the recomputed tree at its size.\n"
                 "        After a key rotation, give --key again with the agency's earlier\n"
                 "        .public (ID.previous.public): checkpoints verify under any of them.\n"
                 "        --witness: also check the log against the checkpoints the broker\n"
                 "        cosigned (the broker's witness.db, the postgresql:// URI of its\n"
                 "        store, or a JSON array of cosigned notes), each cosignature\n"
                 "        verified with --witness-key. This catches a log truncated below,\n"
                 "        or rewritten since, a witnessed size.\n"
                 "witnessed  the checkpoints the broker cosigned for one agency, as a JSON\n"
                 "        array of notes: the file to give verify --witness.\n");
}

/* A checkpoint (signed by the agency; cosigned by the witness if wkey) must describe this
 * very log: its size at most the log's, its root the recomputed root at that size. */
static int check_note(refex_audit_reader *r, uint64_t size, const char *note,
                      const refex_pubkeys *keys, size_t n_keys, const refex_pubkeys *wkey,
                      const char *what, char *why, size_t whylen)
{
    refex_checkpoint c;
    uint8_t root[32];
    uint64_t ts = 0;
    const uint8_t *pks[VERIFY_KEYS_MAX] = {NULL};
    if (!note) {
        snprintf(why, whylen, "a %s row has no note (the log was edited)", what);
        return REFEX_E_MALFORMED;
    }
    size_t len = strlen(note);
    for (size_t i = 0; i < n_keys; i++)
        pks[i] = keys[i].sign_pk;
    if (refex_checkpoint_open_any(note, len, keys[0].agency, pks, (int)n_keys, &c) != REFEX_OK) {
        snprintf(why, whylen, "%s: not signed by %s's key%s", what, keys[0].agency,
                 n_keys > 1 ? "s" : "");
        return REFEX_E_BAD_SIGNATURE;
    }
    if (wkey && refex_checkpoint_verify_cosignature(note, len, wkey->agency, wkey->sign_pk, &ts) !=
                    REFEX_OK) {
        snprintf(why, whylen, "%s of size %llu: no valid cosignature by witness %s", what,
                 (unsigned long long)c.size, wkey->agency);
        return REFEX_E_BAD_SIGNATURE;
    }
    if (c.size > size) {
        snprintf(why, whylen,
                 "the log has %llu entries but a %s covers %llu: entries were removed (log "
                 "truncated below a %s size)",
                 (unsigned long long)size, what, (unsigned long long)c.size,
                 wkey ? "witnessed" : "checkpointed");
        return REFEX_E_TAMPERED;
    }
    if (refex_audit_reader_root(r, c.size, root) != REFEX_OK ||
        sodium_memcmp(root, c.root, 32) != 0) {
        snprintf(why, whylen,
                 "the log's first %llu entries are not what the %s of that size says (the "
                 "history was rewritten, replaced or forked)",
                 (unsigned long long)c.size, what);
        return REFEX_E_TAMPERED;
    }
    return REFEX_OK;
}

static int add_note(const char *note, void *arg)
{
    return json_array_append_new(arg, note ? json_string(note) : json_null()) ? REFEX_E_NOMEM
                                                                              : REFEX_OK;
}

/* Cosigned notes from the broker's witness.db (SQLite) or a JSON array of notes. */
static json_t *load_witnessed(const char *path, const char *agency, char *why, size_t whylen)
{
    uint8_t *data = NULL;
    size_t len = 0;
    json_t *notes = NULL;
    if (strncmp(path, "postgresql://", 13) == 0 || strncmp(path, "postgres://", 11) == 0) {
        /* broker nodes on PostgreSQL: the witness is in their store */
        notes = json_array();
        if (notes &&
            refex_audit_reader_witnessed(path, agency, add_note, notes, why, whylen) != REFEX_OK) {
            json_decref(notes);
            notes = NULL;
        }
        return notes;
    }
    if (refex_file_read(path, 64u * 1024 * 1024, &data, &len) != REFEX_OK) {
        snprintf(why, whylen, "%s: cannot read", path);
        return NULL;
    }
    if (len >= 16 && memcmp(data, "SQLite format 3", 16) == 0) {
        notes = json_array();
        if (notes &&
            refex_audit_reader_witnessed(path, agency, add_note, notes, why, whylen) != REFEX_OK) {
            json_decref(notes);
            notes = NULL;
        }
    } else {
        json_error_t jerr;
        notes = json_loadb((const char *)data, len, 0, &jerr);
        if (!json_is_array(notes)) {
            snprintf(why, whylen, "%s: expected a JSON array of cosigned notes", path);
            json_decref(notes);
            notes = NULL;
        }
    }
    free(data);
    return notes;
}

/* ---- verify -------------------------------------------------------------------------- */

typedef struct {
    const char *db, *key[VERIFY_KEYS_MAX], *witness, *wkey;
    size_t n_k; /* --key given this many times: one agency's current and earlier keys */
    int json;
    refex_pubkeys k[VERIFY_KEYS_MAX], w;
} verify_args;

typedef struct {
    refex_audit_reader *r;
    const verify_args *a;
    uint64_t size;
    const char *what;
    size_t n;
    char *why;
    size_t whylen;
} verify_walk;

static int verify_checkpoint(const refex_audit_checkpoint_row *cp, void *arg)
{
    verify_walk *v = arg;
    v->n++;
    return check_note(v->r, v->size, cp->note, v->a->k, v->a->n_k, NULL, v->what, v->why,
                      v->whylen);
}

static int verify_cosignature(const refex_audit_cosignature_row *cs, void *arg)
{
    verify_walk *v = arg;
    v->n++;
    return check_note(v->r, v->size, cs->note, v->a->k, v->a->n_k, NULL, v->what, v->why,
                      v->whylen);
}

/* The log's own checkpoints, and the cosigned copies it holds, each signed by the agency
 * and matching the recomputed tree. */
static int verify_own_notes(verify_walk *v)
{
    int rc;
    v->what = "checkpoint";
    rc = refex_audit_reader_checkpoints(v->r, verify_checkpoint, v);
    if (rc != REFEX_OK && !v->why[0]) {
        snprintf(v->why, v->whylen, "cannot read the log's checkpoints (a table is missing?)");
        return REFEX_E_TAMPERED;
    }
    v->what = "cosigned checkpoint";
    if (rc == REFEX_OK)
        rc = refex_audit_reader_cosignatures(v->r, 0, verify_cosignature, v);
    if (rc != REFEX_OK && !v->why[0]) {
        snprintf(v->why, v->whylen, "cannot read the log's cosignatures (a table is missing?)");
        return REFEX_E_TAMPERED;
    }
    return rc;
}

/* The checkpoints the witness cosigned: this log must be consistent with every one. */
static int verify_witnessed(verify_walk *v, size_t *n)
{
    json_t *notes = load_witnessed(v->a->witness, v->a->k[0].agency, v->why, v->whylen), *x;
    size_t i;
    int rc = notes ? REFEX_OK : REFEX_E_INVAL;
    json_array_foreach(notes, i, x)
    {
        if (rc != REFEX_OK)
            break;
        rc = json_is_string(x) ? check_note(v->r, v->size, json_string_value(x), v->a->k, v->a->n_k,
                                            &v->a->w, "witnessed checkpoint", v->why, v->whylen)
                               : REFEX_E_MALFORMED;
        (*n)++;
    }
    json_decref(notes);
    return rc;
}

static void verify_print(const verify_args *a, const char *path, int rc, uint64_t size,
                         const uint8_t root[32], size_t n_cp, size_t n_wit, const char *why)
{
    char rootb64[REFEX_BASE64_LEN(32)] = "";
    if (rc == REFEX_OK)
        refex_base64_encode(rootb64, root, 32);
    if (a->json) {
        json_t *o = rc == REFEX_OK
                        ? json_pack("{s:b, s:s, s:I, s:s, s:I, s:I}", "ok", 1, "db", path, "size",
                                    (json_int_t)size, "root", rootb64, "checkpoints",
                                    (json_int_t)n_cp, "witnessed", (json_int_t)n_wit)
                        : json_pack("{s:b, s:s, s:s, s:s}", "ok", 0, "db", path, "error",
                                    refex_errname(rc), "detail", why[0] ? why : refex_strerror(rc));
        cli_print_json(o);
        json_decref(o);
    } else if (rc == REFEX_OK) {
        printf("audit log %s: intact, %llu entries, root %s", path, (unsigned long long)size,
               rootb64);
        if (a->n_k)
            printf("; %zu checkpoint(s) signed by %s match", n_cp, a->k[0].agency);
        if (a->witness)
            printf("; consistent with %zu checkpoint(s) witnessed by %s", n_wit, a->w.agency);
        printf("\n");
    } else {
        printf("audit log %s: NOT intact: %s\n", path, why[0] ? why : refex_strerror(rc));
    }
}

static int verify_parse(int argc, char **argv, verify_args *a)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},      {"key", required_argument, NULL, 'k'},
        {"witness", required_argument, NULL, 'w'}, {"witness-key", required_argument, NULL, 'W'},
        {"json", no_argument, NULL, 'j'},          {0}};
    cli_audit_opts o = {"verify", argc, argv, "c:", opts, 0};
    const char *v;
    char err[512];
    int c;
    while ((c = cli_audit_getopt(&o, &v)) != -1) {
        if (c == 'd')
            a->db = v;
        else if (c == 'k') {
            if (a->n_k == VERIFY_KEYS_MAX) {
                fprintf(stderr, "refex audit verify: at most %d --key\n", VERIFY_KEYS_MAX);
                return EXIT_USAGE;
            }
            a->key[a->n_k++] = v;
        } else if (c == 'w')
            a->witness = v;
        else if (c == 'W')
            a->wkey = v;
        else if (c == 'j')
            a->json = 1;
        else if (c == 'c')
            cli_config = v;
        else
            return c == 1 ? cli_audit_unknown("verify", v) : EXIT_USAGE;
    }
    if ((a->witness && (!a->wkey || !a->n_k)) || (a->wkey && !a->witness)) {
        fprintf(stderr, "refex audit verify: --witness needs --witness-key and --key\n");
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < a->n_k; i++) {
        if (refex_pubkeys_load(a->key[i], &a->k[i], err, sizeof err) != REFEX_OK) {
            fprintf(stderr, "refex audit verify: %s\n", err);
            return EXIT_KEYS;
        }
        if (strcmp(a->k[i].agency, a->k[0].agency) != 0) {
            fprintf(stderr,
                    "refex audit verify: every --key must be the same agency's (%s is "
                    "%s's)\n",
                    a->key[i], a->k[i].agency);
            return EXIT_USAGE;
        }
    }
    if (a->wkey && refex_pubkeys_load(a->wkey, &a->w, err, sizeof err) != REFEX_OK) {
        fprintf(stderr, "refex audit verify: %s\n", err);
        return EXIT_KEYS;
    }
    return EXIT_OK;
}

/* Reading the agency's own log through its agent is itself audited. */
static void verify_tell_agent(void)
{
    json_t *reply = NULL;
    json_t *req = json_pack("{s:s, s:s}", "cmd", "audit_used", "what", "verify");
    if (cli_agent_request(req, &reply, 5000) != EXIT_OK)
        fprintf(stderr, "refex audit verify: this read is not recorded in the audit log\n");
    json_decref(req);
    json_decref(reply);
}

static int audit_verify(int argc, char **argv)
{
    verify_args a = {0};
    refex_audit_reader *r = NULL;
    char path[4200], err[4600], why[512] = "";
    uint8_t root[32];
    size_t n_witnessed = 0;
    int rc = verify_parse(argc, argv, &a);
    if (rc != EXIT_OK || (rc = cli_agent_db("audit verify", a.db, path, sizeof path)) != EXIT_OK)
        return rc;
    if (!a.db)
        verify_tell_agent();
    if (refex_file_check_private(path) == REFEX_E_NOTFOUND) {
        fprintf(stderr, "refex audit verify: %s: no such file\n", path);
        return EXIT_FAIL;
    }
    if (refex_audit_reader_open(path, REFEX_AUDIT_READER_ANY, &r, err, sizeof err) != REFEX_OK) {
        fprintf(stderr, "refex audit verify: %s\n", err);
        return EXIT_FAIL;
    }
    verify_walk v = {r, &a, 0, NULL, 0, why, sizeof why};
    cli_audit_progress(r, "verify");
    rc = refex_audit_reader_verify(r, &v.size, root, why, sizeof why);
    cli_audit_progress_end();
    if (rc == REFEX_OK && a.n_k)
        rc = verify_own_notes(&v);
    if (rc == REFEX_OK && a.witness)
        rc = verify_witnessed(&v, &n_witnessed);
    refex_audit_reader_close(&r);
    verify_print(&a, path, rc, v.size, root, v.n, n_witnessed, why);
    return rc == REFEX_OK ? EXIT_OK : EXIT_FAIL;
}

/* ---- witnessed ----------------------------------------------------------------------- */

/* The checkpoints a witness cosigned for one agency, as the JSON array that
 * `audit verify --witness` reads: what an auditor takes away from the broker. */
static int audit_witnessed(int argc, char **argv)
{
    static const struct option opts[] = {{"witness-db", required_argument, NULL, 'w'},
                                         {"agency", required_argument, NULL, 'a'},
                                         {0}};
    cli_audit_opts o = {"witnessed", argc, argv, "", opts, 0};
    const char *wdb = NULL, *agency = NULL, *v;
    int c;
    while ((c = cli_audit_getopt(&o, &v)) != -1) {
        if (c == 'w')
            wdb = v;
        else if (c == 'a')
            agency = v;
        else
            return c == 1 ? cli_audit_unknown("witnessed", v) : EXIT_USAGE;
    }
    if (!wdb || !agency || !refex_id_valid(agency)) {
        fprintf(stderr, "refex audit witnessed: give --witness-db FILE and --agency ID\n");
        return EXIT_USAGE;
    }
    char why[4600] = "";
    json_t *notes = load_witnessed(wdb, agency, why, sizeof why);
    if (!notes) {
        fprintf(stderr, "refex audit witnessed: %s\n", why);
        return EXIT_FAIL;
    }
    cli_print_json(notes);
    json_decref(notes);
    return EXIT_OK;
}

/* ---- dispatch ------------------------------------------------------------------------ */

/* verify and witnessed answer --help with the family's usage; the others have their own. */
static const struct {
    const char *name;
    int (*fn)(int, char **);
    int family_help;
} SUBCOMMANDS[] = {
    {"list", cmd_audit_list, 0},           {"verify", audit_verify, 1},
    {"witnessed", audit_witnessed, 1},     {"query", cmd_audit_query, 0},
    {"export", cmd_audit_export, 0},       {"proof", cmd_audit_proof, 0},
    {"reconcile", cmd_audit_reconcile, 0},
};

int cmd_audit(int argc, char **argv)
{
    int help = cli_wants_help(argc, argv);
    for (size_t i = 0; argc >= 2 && i < sizeof SUBCOMMANDS / sizeof SUBCOMMANDS[0]; i++)
        if (strcmp(argv[1], SUBCOMMANDS[i].name) == 0 && !(help && SUBCOMMANDS[i].family_help))
            return SUBCOMMANDS[i].fn(argc, argv);
    audit_usage(help ? stdout : stderr);
    return help ? EXIT_OK : EXIT_USAGE;
}
