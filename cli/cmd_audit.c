/* `refex audit`: the auditor's commands. `list` asks the running agent; `verify` reads an
 * audit database directly (read-only), so an auditor can check a copy of an agency's log
 * without that agency's keys or daemon. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "audit_tree.h"
#include "checkpoint.h"
#include "keys.h"
#include "config.h"
#include "db.h"
#include "util.h"

#include <sodium.h>

static void audit_usage(FILE *out)
{
    fprintf(out, "usage: refex [-c AGENT.conf] audit list [--limit N] [--json]\n"
                 "       refex [-c AGENT.conf] audit query|export|proof ... (see --help of each)\n"
                 "       refex audit reconcile A.db B.db [--sla 24h] [--json]\n"
                 "       refex audit witnessed --witness-db BROKER/witness.db --agency ID\n"
                 "       refex [-c AGENT.conf] audit verify [--db FILE] [--key AGENCY.public]\n"
                 "                 [--witness FILE --witness-key BROKER.public] [--json]\n"
                 "\n"
                 "list    this agency's audit log, through its running agent\n"
                 "verify  recompute the log's Merkle tree from its entries and check every\n"
                 "        stored hash; with --db, any copy of an agent.db file (opened\n"
                 "        read-only), otherwise the agent named by -c. Exit 0 if intact, 1\n"
                 "        with what is wrong and where if not.\n"
                 "        --key: also check every checkpoint the log holds: signed by that\n"
                 "        agency, and its root equal to the recomputed tree at its size.\n"
                 "        --witness: also check the log against the checkpoints the broker\n"
                 "        cosigned (the broker's witness.db, or a JSON array of cosigned\n"
                 "        notes), each cosignature verified with --witness-key. This catches\n"
                 "        a log truncated below, or rewritten since, a witnessed size.\n"
                 "witnessed  the checkpoints the broker cosigned for one agency, as a JSON\n"
                 "        array of notes: the file to give verify --witness.\n");
}

/* A checkpoint (signed by the agency; cosigned by the witness if wpk) must describe this
 * very log: its size at most the log's, its root the recomputed root at that size. */
static int check_note(sqlite3 *db, uint64_t size, const char *note, const refex_pubkeys *key,
                      const refex_pubkeys *wkey, const char *what, char *why, size_t whylen)
{
    refex_checkpoint c;
    uint8_t root[32];
    uint64_t ts = 0;
    if (!note) {
        snprintf(why, whylen, "a %s row has no note (the log was edited)", what);
        return REFEX_E_MALFORMED;
    }
    size_t len = strlen(note);
    if (refex_checkpoint_open(note, len, key->agency, key->sign_pk, &c) != REFEX_OK) {
        snprintf(why, whylen, "%s: not signed by %s's key", what, key->agency);
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
    if (refex_audit_tree_root(db, c.size, root) != REFEX_OK ||
        sodium_memcmp(root, c.root, 32) != 0) {
        snprintf(why, whylen,
                 "the log's first %llu entries are not what the %s of that size says (the "
                 "history was rewritten, replaced or forked)",
                 (unsigned long long)c.size, what);
        return REFEX_E_TAMPERED;
    }
    return REFEX_OK;
}

/* Cosigned notes from the broker's witness.db (SQLite) or a JSON array of notes. */
static json_t *load_witnessed(const char *path, const char *agency, char *why, size_t whylen)
{
    uint8_t *data = NULL;
    size_t len = 0;
    json_t *notes = NULL;
    if (refex_file_read(path, 64u * 1024 * 1024, &data, &len) != REFEX_OK) {
        snprintf(why, whylen, "%s: cannot read", path);
        return NULL;
    }
    if (len >= 16 && memcmp(data, "SQLite format 3", 16) == 0) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        char err[256];
        notes = json_array();
        if (refex_db_open(path, 1, &db, err, sizeof err) == REFEX_OK &&
            refex_db_prepare(db, "SELECT note FROM witnessed WHERE agency = ? ORDER BY size",
                             &st) == REFEX_OK) {
            sqlite3_bind_text(st, 1, agency, -1, SQLITE_STATIC);
            int step;
            while ((step = sqlite3_step(st)) == SQLITE_ROW) {
                const char *n = (const char *)sqlite3_column_text(st, 0);
                json_array_append_new(notes, n ? json_string(n) : json_null());
            }
            if (step != SQLITE_DONE) {
                snprintf(why, whylen, "%s: cannot read the witnessed checkpoints", path);
                json_decref(notes);
                notes = NULL;
            }
        } else {
            snprintf(why, whylen, "%s: not a refex witness database", path);
            json_decref(notes);
            notes = NULL;
        }
        sqlite3_finalize(st);
        refex_db_close(&db);
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

static int audit_verify(int argc, char **argv)
{
    const char *db_arg = NULL, *key_arg = NULL, *witness_arg = NULL, *wkey_arg = NULL;
    refex_pubkeys key, wkey;
    size_t n_checkpoints = 0, n_witnessed = 0;
    int json = 0;
    char path[4200], err[512], why[512] = "", rootb64[64];
    for (int k = 2; k < argc; k++) {
        if (strcmp(argv[k], "--db") == 0 && k + 1 < argc) {
            db_arg = argv[++k];
        } else if (strcmp(argv[k], "--key") == 0 && k + 1 < argc) {
            key_arg = argv[++k];
        } else if (strcmp(argv[k], "--witness") == 0 && k + 1 < argc) {
            witness_arg = argv[++k];
        } else if (strcmp(argv[k], "--witness-key") == 0 && k + 1 < argc) {
            wkey_arg = argv[++k];
        } else if (strcmp(argv[k], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[k], "-c") == 0 && k + 1 < argc) {
            cli_config = argv[++k];
        } else {
            fprintf(stderr, "refex audit verify: unknown argument '%s'\n", argv[k]);
            return EXIT_USAGE;
        }
    }
    if ((witness_arg && (!wkey_arg || !key_arg)) || (wkey_arg && !witness_arg)) {
        fprintf(stderr, "refex audit verify: --witness needs --witness-key and --key\n");
        return EXIT_USAGE;
    }
    if ((key_arg && refex_pubkeys_load(key_arg, &key, err, sizeof err) != REFEX_OK) ||
        (wkey_arg && refex_pubkeys_load(wkey_arg, &wkey, err, sizeof err) != REFEX_OK)) {
        fprintf(stderr, "refex audit verify: %s\n", err);
        return EXIT_KEYS;
    }
    int rc = cli_agent_db("audit verify", db_arg, path, sizeof path);
    if (rc != EXIT_OK)
        return rc;
    if (!db_arg) {
        /* Reading the agency's own log through its agent is itself audited. */
        json_t *reply = NULL;
        json_t *req = json_pack("{s:s, s:s}", "cmd", "audit_used", "what", "verify");
        if (cli_agent_request(req, &reply, 5000) != EXIT_OK)
            fprintf(stderr, "refex audit verify: this read is not recorded in the audit log\n");
        json_decref(req);
        json_decref(reply);
    }
    if (refex_file_check_private(path) == REFEX_E_NOTFOUND) {
        fprintf(stderr, "refex audit verify: %s: no such file\n", path);
        return EXIT_FAIL;
    }
    sqlite3 *db = NULL;
    if (refex_db_open(path, 1, &db, err, sizeof err) != REFEX_OK) {
        fprintf(stderr, "refex audit verify: %s\n", err);
        return EXIT_FAIL;
    }
    uint64_t size = 0;
    uint8_t root[32];
    rc = refex_audit_tree_verify(db, &size, root, why, sizeof why);
    if (rc == REFEX_OK && key_arg) {
        /* The log's own checkpoints, and the cosigned copies it holds. */
        sqlite3_stmt *st = NULL;
        static const char *const sql[2] = {"SELECT note FROM audit_checkpoints ORDER BY size",
                                           "SELECT note FROM audit_cosignatures ORDER BY size"};
        for (int pass = 0; pass < 2 && rc == REFEX_OK; pass++) {
            int step = SQLITE_ERROR;
            if (refex_db_prepare(db, sql[pass], &st) == REFEX_OK) {
                while (rc == REFEX_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
                    rc = check_note(db, size, (const char *)sqlite3_column_text(st, 0), &key, NULL,
                                    pass ? "cosigned checkpoint" : "checkpoint", why, sizeof why);
                    n_checkpoints++;
                }
            }
            sqlite3_finalize(st);
            st = NULL;
            if (rc == REFEX_OK && step != SQLITE_DONE) {
                snprintf(why, sizeof why, "cannot read the log's %s (a table is missing?)",
                         pass ? "cosignatures" : "checkpoints");
                rc = REFEX_E_TAMPERED;
            }
        }
    }
    if (rc == REFEX_OK && witness_arg) {
        json_t *notes = load_witnessed(witness_arg, key.agency, why, sizeof why), *v;
        size_t i;
        if (!notes)
            rc = REFEX_E_INVAL;
        json_array_foreach(notes, i, v)
        {
            if (rc != REFEX_OK)
                break;
            rc = json_is_string(v) ? check_note(db, size, json_string_value(v), &key, &wkey,
                                                "witnessed checkpoint", why, sizeof why)
                                   : REFEX_E_MALFORMED;
            n_witnessed++;
        }
        json_decref(notes);
    }
    refex_db_close(&db);
    if (rc == REFEX_OK)
        sodium_bin2base64(rootb64, sizeof rootb64, root, 32, sodium_base64_VARIANT_ORIGINAL);
    if (json) {
        json_t *o = rc == REFEX_OK
                        ? json_pack("{s:b, s:s, s:I, s:s, s:I, s:I}", "ok", 1, "db", path, "size",
                                    (json_int_t)size, "root", rootb64, "checkpoints",
                                    (json_int_t)n_checkpoints, "witnessed", (json_int_t)n_witnessed)
                        : json_pack("{s:b, s:s, s:s, s:s}", "ok", 0, "db", path, "error",
                                    refex_errname(rc), "detail", why[0] ? why : refex_strerror(rc));
        json_dumpf(o, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(o);
    } else if (rc == REFEX_OK) {
        printf("audit log %s: intact, %llu entries, root %s", path, (unsigned long long)size,
               rootb64);
        if (key_arg)
            printf("; %zu checkpoint(s) signed by %s match", n_checkpoints, key.agency);
        if (witness_arg)
            printf("; consistent with %zu checkpoint(s) witnessed by %s", n_witnessed, wkey.agency);
        printf("\n");
    } else {
        printf("audit log %s: NOT intact: %s\n", path, why[0] ? why : refex_strerror(rc));
    }
    return rc == REFEX_OK ? EXIT_OK : EXIT_FAIL;
}

/* The checkpoints a witness cosigned for one agency, as the JSON array that
 * `audit verify --witness` reads: what an auditor takes away from the broker. */
static int audit_witnessed(int argc, char **argv)
{
    const char *wdb = NULL, *agency = NULL;
    for (int k = 2; k < argc; k++) {
        if (strcmp(argv[k], "--witness-db") == 0 && k + 1 < argc)
            wdb = argv[++k];
        else if (strcmp(argv[k], "--agency") == 0 && k + 1 < argc)
            agency = argv[++k];
        else {
            fprintf(stderr, "refex audit witnessed: unknown argument '%s'\n", argv[k]);
            return EXIT_USAGE;
        }
    }
    if (!wdb || !agency || !refex_id_valid(agency)) {
        fprintf(stderr, "refex audit witnessed: give --witness-db FILE and --agency ID\n");
        return EXIT_USAGE;
    }
    char why[512] = "";
    json_t *notes = load_witnessed(wdb, agency, why, sizeof why);
    if (!notes) {
        fprintf(stderr, "refex audit witnessed: %s\n", why);
        return EXIT_FAIL;
    }
    json_dumpf(notes, stdout, JSON_INDENT(2));
    printf("\n");
    json_decref(notes);
    return EXIT_OK;
}

int cmd_audit(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "verify") == 0) {
        if (cli_wants_help(argc, argv)) {
            audit_usage(stdout);
            return EXIT_OK;
        }
        return audit_verify(argc, argv);
    }
    if (argc >= 2 && strcmp(argv[1], "list") == 0)
        return cmd_audit_list(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "witnessed") == 0 && !cli_wants_help(argc, argv))
        return audit_witnessed(argc, argv);
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } sub[] = {{"query", cmd_audit_query},
               {"export", cmd_audit_export},
               {"proof", cmd_audit_proof},
               {"reconcile", cmd_audit_reconcile}};
    for (size_t i = 0; argc >= 2 && i < sizeof sub / sizeof sub[0]; i++)
        if (strcmp(argv[1], sub[i].name) == 0)
            return sub[i].fn(argc, argv);
    int help = cli_wants_help(argc, argv);
    audit_usage(help ? stdout : stderr);
    return help ? EXIT_OK : EXIT_USAGE;
}
