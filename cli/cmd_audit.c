/* `refex audit`: the auditor's commands. `list` asks the running agent; `verify` reads an
 * audit database directly (read-only), so an auditor can check a copy of an agency's log
 * without that agency's keys or daemon. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "refex/audit_tree.h"
#include "refex/config.h"
#include "refex/db.h"
#include "refex/util.h"

#include <sodium.h>

static void audit_usage(FILE *out)
{
    fprintf(out, "usage: refex [-c AGENT.conf] audit list [--limit N] [--json]\n"
                 "       refex [-c AGENT.conf] audit verify [--db FILE] [--json]\n"
                 "\n"
                 "list    this agency's audit log, through its running agent\n"
                 "verify  recompute the log's Merkle tree from its entries and check every\n"
                 "        stored hash; with --db, any copy of an agent.db file (opened\n"
                 "        read-only), otherwise the agent named by -c. Exit 0 if intact, 1\n"
                 "        with what is wrong and where if not.\n");
}

/* The database an audit command reads: --db FILE, or the agent's own. */
static int audit_db_path(const char *db, char *buf, size_t len)
{
    char err[512], dir[4096];
    refex_config *cfg = NULL;
    if (db) {
        snprintf(buf, len, "%s", db);
        return EXIT_OK;
    }
    if (!cli_config) {
        fprintf(stderr, "refex audit: give --db FILE, or -c AGENT.conf\n");
        return EXIT_USAGE;
    }
    if (refex_config_open(cli_config, &cfg, err, sizeof err) != REFEX_OK) {
        fprintf(stderr, "refex: %s\n", err);
        return EXIT_KEYS;
    }
    int rc = refex_config_path(cfg, "data_dir", dir, sizeof dir);
    refex_config_close(&cfg);
    if (rc != REFEX_OK) {
        fprintf(stderr, "refex: %s has no data_dir\n", cli_config);
        return EXIT_KEYS;
    }
    snprintf(buf, len, "%s/agent.db", dir);
    return EXIT_OK;
}

static int audit_verify(int argc, char **argv)
{
    const char *db_arg = NULL;
    int json = 0;
    char path[4200], err[512], why[512] = "", rootb64[64];
    for (int k = 2; k < argc; k++) {
        if (strcmp(argv[k], "--db") == 0 && k + 1 < argc) {
            db_arg = argv[++k];
        } else if (strcmp(argv[k], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[k], "-c") == 0 && k + 1 < argc) {
            cli_config = argv[++k];
        } else {
            fprintf(stderr, "refex audit verify: unknown argument '%s'\n", argv[k]);
            return EXIT_USAGE;
        }
    }
    int rc = audit_db_path(db_arg, path, sizeof path);
    if (rc != EXIT_OK)
        return rc;
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
    refex_db_close(&db);
    if (rc == REFEX_OK)
        sodium_bin2base64(rootb64, sizeof rootb64, root, 32, sodium_base64_VARIANT_ORIGINAL);
    if (json) {
        json_t *o = rc == REFEX_OK
                        ? json_pack("{s:b, s:s, s:I, s:s}", "ok", 1, "db", path, "size",
                                    (json_int_t)size, "root", rootb64)
                        : json_pack("{s:b, s:s, s:s, s:s}", "ok", 0, "db", path, "error",
                                    refex_errname(rc), "detail", why[0] ? why : refex_strerror(rc));
        json_dumpf(o, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(o);
    } else if (rc == REFEX_OK) {
        printf("audit log %s: intact, %llu entries, root %s\n", path, (unsigned long long)size,
               rootb64);
    } else {
        printf("audit log %s: NOT intact: %s\n", path, why[0] ? why : refex_strerror(rc));
    }
    return rc == REFEX_OK ? EXIT_OK : EXIT_FAIL;
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
    int help = cli_wants_help(argc, argv);
    audit_usage(help ? stdout : stderr);
    return help ? EXIT_OK : EXIT_USAGE;
}
