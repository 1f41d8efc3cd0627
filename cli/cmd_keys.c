/* `refex keys` and `refex directory`: operator commands that work on files only. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "directory.h"
#include "keys.h"
#include "util.h"

static void keys_usage(FILE *out)
{
    fprintf(out, "usage: refex keys new --agency ID --role ROLE --out DIR [--json]\n"
                 "       refex keys rotate --agency ID --out DIR [--json] (see --help)\n"
                 "\n"
                 "Creates DIR/ID.secret (mode 0600) and DIR/ID.public with three key pairs:\n"
                 "Ed25519 for signing, X25519 for end-to-end encryption, and a CurveZMQ key\n"
                 "for the transport. Add the .public file to the directory with\n"
                 "'refex directory add'. Never copy the .secret file off its machine.\n"
                 "\n"
                 "  --agency ID   agency id: lowercase letters, digits and '-' (e.g. midwifery)\n"
                 "  --role ROLE   midwifery, substance-misuse, social-care, police, ...;\n"
                 "                'broker' for the broker, 'trust-anchor' for the operator key\n"
                 "                that signs the directory\n"
                 "  --out DIR     where to write the files (created 0700 if missing)\n"
                 "  --json        print the files created as JSON\n"
                 "\n"
                 "Refuses to overwrite an existing .secret file.\n");
}

/* A --json result; takes o. */
static void print_result(json_t *o)
{
    cli_print_json(o);
    json_decref(o);
}

int cmd_keys(int argc, char **argv)
{
    const char *agency = NULL, *role = NULL, *out = NULL;
    int json = 0;
    static const struct option opts[] = {
        {"agency", required_argument, 0, 'a'}, {"role", required_argument, 0, 'r'},
        {"out", required_argument, 0, 'o'},    {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    if (argc < 2 || cli_wants_help(2, argv)) {
        keys_usage(cli_usage_stream(argc >= 2));
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (strcmp(argv[1], "rotate") == 0)
        return cmd_keys_rotate(argc - 1, argv + 1);
    if (strcmp(argv[1], "new") != 0)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex keys: unknown subcommand '%s'\n", argv[1]);
    int opt;
    cli_getopt_reset();
    while ((opt = cli_getopt("keys new", argc - 1, argv + 1, opts)) != -1) {
        switch (opt) {
        case 'a':
            agency = optarg;
            break;
        case 'r':
            role = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            keys_usage(stdout);
            return EXIT_OK;
        default:
            return EXIT_USAGE;
        }
    }
    if (optind + 1 < argc)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex keys new: unknown argument '%s'\n",
                        argv[optind + 1]);
    if (!agency || !role || !out)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex keys new: --agency, --role and --out are required\n");
    if (!refex_id_valid(agency) || !refex_id_valid(role))
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex keys new: agency and role must be 1-63 characters of a-z, "
                        "0-9 and '-'\n");
    refex_keys *k = NULL;
    int rc = refex_keys_new(agency, role, &k);
    if (rc == REFEX_OK)
        rc = refex_keys_save(k, out);
    refex_keys_destroy(&k);
    if (rc == REFEX_E_EXISTS)
        return cli_fail(EXIT_KEYS, refex_errname(rc),
                        "refex keys new: %s/%s.secret already exists; not overwritten\n", out,
                        agency);
    if (rc != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex keys new: %s\n", refex_strerror(rc));
    char sec[4096], pub[4096];
    snprintf(sec, sizeof sec, "%s/%s.secret", out, agency);
    snprintf(pub, sizeof pub, "%s/%s.public", out, agency);
    if (json)
        print_result(json_pack("{s:b, s:s, s:s, s:s, s:s}", "ok", 1, "agency", agency, "role", role,
                               "secret", sec, "public", pub));
    else
        printf("created %s/%s.secret (0600) and %s/%s.public\n", out, agency, out, agency);
    return EXIT_OK;
}

/* ---- directory ------------------------------------------------------------------- */

static void dir_usage(FILE *out)
{
    fprintf(out, "usage: refex directory init --file FILE [--json]\n"
                 "       refex directory add  --file FILE --keys ID.public [--display-name NAME]\n"
                 "                            [--replace] [--revoked] [--json]\n"
                 "       refex directory sign --file FILE --anchor ANCHOR.secret [--json]\n"
                 "       refex directory show --file FILE [--anchor ANCHOR.public] [--json]\n"
                 "       refex directory rotate --file FILE --keys ID.public [--overlap SECONDS]\n"
                 "       refex directory policy show | allow | deny | lead ... (see --help)\n"
                 "\n"
                 "The directory lists every agency with its role and public keys, signed by the\n"
                 "operator's trust anchor. Brokers and agents load it and check the signature\n"
                 "against the anchor's public key named in their config, so nobody without the\n"
                 "anchor's secret key can add an agency or swap a key. 'add' clears the\n"
                 "signature: run 'sign' after the last change.\n");
}

static int dir_show(const char *file, const char *anchor, int json)
{
    char err[512];
    refex_pubkeys ap;
    refex_directory *d = NULL;
    int rc;
    if (anchor && (rc = refex_pubkeys_load(anchor, &ap, err, sizeof err)) != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory show: %s\n", err);
    if ((rc = refex_directory_load(file, anchor ? ap.sign_pk : NULL, &d, err, sizeof err)) !=
        REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory show: %s\n", err);
    const char *sig = !refex_directory_is_signed(d) ? "unsigned"
                      : anchor                      ? "signed, verified against the anchor"
                                                    : "signed (not verified: give --anchor)";
    json_t *arr = json_array();
    if (!json)
        printf("directory %s: serial %llu, %s, %zu agencies\n", file,
               (unsigned long long)refex_directory_serial(d), sig, refex_directory_count(d));
    for (size_t i = 0; i < refex_directory_count(d); i++) {
        const refex_agency *a = refex_directory_at(d, i);
        char sp[65], ep[65], tp[65];
        refex_hex_encode(sp, a->sign_pk, 32);
        refex_hex_encode(ep, a->enc_pk, 32);
        refex_hex_encode(tp, a->transport_pk, 32);
        char prev[65] = "", until[64] = "";
        if (a->has_prev) {
            refex_hex_encode(prev, a->prev_sign_pk, 32);
            cli_format_time(until, sizeof until, (long long)a->prev_until_ms);
        }
        if (json) {
            json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "id", a->id, "role",
                                  a->role, "display_name", a->display_name, "sign_pk", sp, "enc_pk",
                                  ep, "transport_pk", tp, "revoked", a->revoked);
            if (a->has_prev) {
                char pe[65], pt[65];
                refex_hex_encode(pe, a->prev_enc_pk, 32);
                refex_hex_encode(pt, a->prev_transport_pk, 32);
                json_object_set_new(o, "previous_sign_pk", json_string(prev));
                json_object_set_new(o, "previous_enc_pk", json_string(pe));
                json_object_set_new(o, "previous_transport_pk", json_string(pt));
                json_object_set_new(o, "previous_until_ms", json_integer(a->prev_until_ms));
            }
            json_array_append_new(arr, o);
        } else {
            printf("  %-20s %-18s %-32s sign %.16s...%s", a->id, a->role, a->display_name, sp,
                   a->revoked ? "  REVOKED" : "");
            if (a->has_prev)
                printf("  (previous key %.16s... until %s)", prev, until);
            printf("\n");
        }
    }
    if (json) {
        print_result(json_pack("{s:b, s:I, s:s, s:o}", "ok", 1, "serial",
                               (json_int_t)refex_directory_serial(d), "signature", sig, "agencies",
                               arr));
    } else {
        json_decref(arr);
    }
    refex_directory_destroy(&d);
    return EXIT_OK;
}

static int dir_init(const char *file, int json)
{
    refex_directory *d = NULL;
    if (refex_file_check_private(file) != REFEX_E_NOTFOUND)
        return cli_fail(EXIT_KEYS, "E_EXISTS", "refex directory init: %s already exists\n", file);
    int rc = refex_directory_new(&d);
    if (rc == REFEX_OK)
        rc = refex_directory_save(d, file);
    refex_directory_destroy(&d);
    if (rc != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory init: %s: %s\n", file,
                        refex_strerror(rc));
    if (json)
        print_result(
            json_pack("{s:b, s:s, s:I}", "ok", 1, "file", file, "agencies", (json_int_t)0));
    else
        printf("created empty directory %s\n", file);
    return EXIT_OK;
}

typedef struct {
    const char *file, *keys, *display, *anchor;
    int replace, revoked, json;
} dir_args;

static int dir_add(refex_directory *d, const dir_args *o)
{
    char err[512];
    refex_pubkeys p;
    refex_agency a;
    int rc;
    if (!o->keys)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex directory add: --keys ID.public is required\n");
    if ((rc = refex_pubkeys_load(o->keys, &p, err, sizeof err)) != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory add: %s\n", err);
    refex_agency_from_pubkeys(&a, &p, o->display);
    a.revoked = o->revoked;
    rc = refex_directory_add(d, &a, o->replace);
    if (rc == REFEX_E_EXISTS)
        return cli_fail(EXIT_KEYS, refex_errname(rc),
                        "refex directory add: '%s' or its transport key is already listed "
                        "(use --replace to update it)\n",
                        a.id);
    if (rc == REFEX_OK)
        rc = refex_directory_save(d, o->file);
    if (rc != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory add: %s\n",
                        refex_strerror(rc));
    if (o->json)
        print_result(json_pack("{s:b, s:s, s:s, s:s, s:s}", "ok", 1, "file", o->file, "id", a.id,
                               "role", a.role, "signature", "unsigned"));
    else
        printf("added %s (%s) to %s; the directory is now unsigned\n", a.id, a.role, o->file);
    return EXIT_OK;
}

static int dir_sign(refex_directory *d, const dir_args *o)
{
    char err[512];
    refex_keys *k = NULL;
    int rc;
    if (!o->anchor)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex directory sign: --anchor ANCHOR.secret is required\n");
    if ((rc = refex_keys_load(o->anchor, &k, err, sizeof err)) != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory sign: %s\n", err);
    rc = refex_directory_sign(d, k->sk->sign_sk);
    refex_keys_destroy(&k);
    if (rc == REFEX_OK)
        rc = refex_directory_save(d, o->file);
    if (rc != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory sign: %s\n",
                        refex_strerror(rc));
    if (o->json)
        print_result(json_pack("{s:b, s:s, s:I, s:I}", "ok", 1, "file", o->file, "serial",
                               (json_int_t)refex_directory_serial(d), "agencies",
                               (json_int_t)refex_directory_count(d)));
    else
        printf("signed %s: serial %llu, %zu agencies\n", o->file,
               (unsigned long long)refex_directory_serial(d), refex_directory_count(d));
    return EXIT_OK;
}

/* Options after the subcommand; -1 when help was printed. */
static int dir_options(int argc, char **argv, dir_args *o)
{
    static const struct option opts[] = {{"file", required_argument, 0, 'f'},
                                         {"keys", required_argument, 0, 'k'},
                                         {"display-name", required_argument, 0, 'd'},
                                         {"anchor", required_argument, 0, 'a'},
                                         {"replace", no_argument, 0, 'r'},
                                         {"revoked", no_argument, 0, 'R'},
                                         {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int opt;
    cli_getopt_reset();
    while ((opt = cli_getopt("directory", argc - 1, argv + 1, opts)) != -1) {
        if (opt == 'f')
            o->file = optarg;
        else if (opt == 'k')
            o->keys = optarg;
        else if (opt == 'd')
            o->display = optarg;
        else if (opt == 'a')
            o->anchor = optarg;
        else if (opt == 'r')
            o->replace = 1;
        else if (opt == 'R')
            o->revoked = 1;
        else if (opt == 'j')
            o->json = 1;
        else if (opt == 'h') {
            dir_usage(stdout);
            return -1;
        } else
            return EXIT_USAGE;
    }
    if (optind + 1 < argc)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex directory: unknown argument '%s'\n",
                        argv[optind + 1]);
    return EXIT_OK;
}

int cmd_directory(int argc, char **argv)
{
    char err[512];
    dir_args o = {0};
    if (argc < 2 || cli_wants_help(2, argv)) {
        dir_usage(cli_usage_stream(argc >= 2));
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "policy") == 0)
        return cmd_directory_policy(argc - 1, argv + 1);
    if (strcmp(sub, "rotate") == 0)
        return cmd_directory_rotate(argc - 1, argv + 1);
    int rc = dir_options(argc, argv, &o);
    if (rc != EXIT_OK)
        return rc < 0 ? EXIT_OK : rc;
    if (!o.file)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex directory %s: --file is required\n", sub);
    if (strcmp(sub, "show") == 0)
        return dir_show(o.file, o.anchor, o.json);
    if (strcmp(sub, "init") == 0)
        return dir_init(o.file, o.json);
    if (strcmp(sub, "add") != 0 && strcmp(sub, "sign") != 0)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex directory: unknown subcommand '%s'\n", sub);
    refex_directory *d = NULL;
    if ((rc = refex_directory_load(o.file, NULL, &d, err, sizeof err)) != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory %s: %s\n", sub, err);
    rc = strcmp(sub, "add") == 0 ? dir_add(d, &o) : dir_sign(d, &o);
    refex_directory_destroy(&d);
    return rc;
}
