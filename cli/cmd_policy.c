/* `refex directory policy`: show and edit the information-sharing policy kept in the
 * directory file (lib/policy.h). Works on the file only; an edit clears the signature, as
 * `refex directory add` does, so the operator signs once after the last change. Not the
 * agencies (cli/cmd_keys.c). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "body.h"
#include "directory.h"
#include "keys.h"
#include "policy.h"

typedef struct {
    const char *file, *anchor, *from, *type, *to, *role;
    int json;
} pol_args;

static void pol_usage(FILE *out)
{
    fprintf(out,
            "usage: refex directory policy show  --file FILE [--anchor ANCHOR.public] [--json]\n"
            "       refex directory policy allow --file FILE --from ROLE --type TYPE --to ROLE\n"
            "       refex directory policy deny  --file FILE --from ROLE --type TYPE --to ROLE\n"
            "       refex directory policy lead  --file FILE --role ROLE\n"
            "\n"
            "The policy says which roles may send which message types (referral,\n"
            "referral-decision, information-request, information-response, case-update) to\n"
            "which roles, and which role leads cases. A directory with a policy refuses\n"
            "(E_POLICY) whatever no rule allows, at the sending agent, the broker and the\n"
            "receiver; a directory without one allows everything. 'allow' adds a rule, 'deny'\n"
            "removes one, 'lead' sets the lead role. Each edit clears the signature: run\n"
            "'refex directory sign' after the last change.\n");
}

static json_t *rules_json(const refex_policy *p)
{
    json_t *arr = json_array();
    for (size_t i = 0; p && arr && i < refex_policy_count(p); i++) {
        const refex_policy_rule *r = refex_policy_at(p, i);
        json_array_append_new(arr,
                              json_pack("{s:s, s:s, s:s}", "from", r->sender_role, "type",
                                        refex_policy_type_name(r->type), "to", r->recipient_role));
    }
    return arr;
}

static int pol_show(refex_directory *d, const char *sub, const pol_args *o)
{
    (void)sub;
    const refex_policy *p = refex_directory_policy(d);
    const char *sig = !refex_directory_is_signed(d) ? "unsigned"
                      : o->anchor                   ? "signed, verified against the anchor"
                                                    : "signed (not verified: give --anchor)";
    if (o->json) {
        json_t *r =
            json_pack("{s:b, s:s, s:I, s:s, s:b, s:s, s:o}", "ok", 1, "file", o->file, "serial",
                      (json_int_t)refex_directory_serial(d), "signature", sig, "present", p != NULL,
                      "lead_role", refex_policy_lead_role(d), "rules", rules_json(p));
        cli_print_json(r);
        json_decref(r);
        return EXIT_OK;
    }
    printf("policy of %s: serial %llu, %s\n", o->file,
           (unsigned long long)refex_directory_serial(d), sig);
    if (!p) {
        printf("  no policy: every role may send every type; lead role %s\n",
               refex_policy_lead_role(d));
        return EXIT_OK;
    }
    printf("  lead role %s%s; %zu rules, anything else refused\n", refex_policy_lead_role(d),
           refex_policy_lead(p)[0] ? "" : " (default)", refex_policy_count(p));
    for (size_t i = 0; i < refex_policy_count(p); i++) {
        const refex_policy_rule *r = refex_policy_at(p, i);
        printf("  %-20s %-22s -> %s\n", r->sender_role, refex_policy_type_name(r->type),
               r->recipient_role);
    }
    return EXIT_OK;
}

/* allow / deny one rule. */
static int pol_rule(refex_directory *d, const char *sub, const pol_args *o)
{
    refex_policy *p = NULL;
    int created = refex_directory_policy(d) == NULL;
    int type = o->type ? refex_message_type_parse(o->type) : 0;
    if (!o->from || !o->to || !o->type)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex directory policy %s: --from, --type and --to are required\n", sub);
    if (!type)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex directory policy %s: unknown message type '%s'\n", sub, o->type);
    if (!refex_id_valid(o->from) || !refex_id_valid(o->to))
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex directory policy %s: a role is lower-case letters, digits and -\n",
                        sub);
    int rc = refex_directory_policy_edit(d, &p);
    if (rc == REFEX_OK)
        rc = strcmp(sub, "allow") == 0 ? refex_policy_allow(p, o->from, type, o->to)
                                       : refex_policy_deny(p, o->from, type, o->to);
    if (rc == REFEX_E_EXISTS || rc == REFEX_E_NOTFOUND)
        return cli_fail(EXIT_FAIL, refex_errname(rc), "refex directory policy %s: %s\n", sub,
                        rc == REFEX_E_EXISTS ? "that rule is there already"
                                             : "no rule allows that: nothing to remove");
    if (rc == REFEX_OK)
        rc = refex_directory_save(d, o->file);
    if (rc != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory policy %s: %s\n", sub,
                        refex_strerror(rc));
    if (o->json) {
        json_t *r = json_pack("{s:b, s:s, s:s, s:s, s:s, s:I, s:s}", "ok", 1, "file", o->file,
                              "from", o->from, "type", refex_policy_type_name(type), "to", o->to,
                              "rules", (json_int_t)refex_policy_count(p), "signature", "unsigned");
        cli_print_json(r);
        json_decref(r);
        return EXIT_OK;
    }
    printf("%s %s to send %s to %s in %s; the directory is now unsigned\n",
           strcmp(sub, "allow") == 0 ? "allowed" : "no longer allowed", o->from,
           refex_policy_type_name(type), o->to, o->file);
    if (created)
        printf("the directory has a policy now: anything no rule allows is refused\n");
    return EXIT_OK;
}

static int pol_lead(refex_directory *d, const char *sub, const pol_args *o)
{
    (void)sub;
    refex_policy *p = NULL;
    int created = refex_directory_policy(d) == NULL;
    if (!o->role || !refex_id_valid(o->role))
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex directory policy lead: --role ROLE is required\n");
    int rc = refex_directory_policy_edit(d, &p);
    if (rc == REFEX_OK)
        rc = refex_policy_set_lead(p, o->role);
    if (rc == REFEX_OK)
        rc = refex_directory_save(d, o->file);
    if (rc != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory policy lead: %s\n",
                        refex_strerror(rc));
    if (o->json) {
        json_t *r = json_pack("{s:b, s:s, s:s, s:s}", "ok", 1, "file", o->file, "lead_role",
                              o->role, "signature", "unsigned");
        cli_print_json(r);
        json_decref(r);
        return EXIT_OK;
    }
    printf("%s leads cases in %s; the directory is now unsigned\n", o->role, o->file);
    if (created)
        printf("the directory has a policy now: anything no rule allows is refused\n");
    return EXIT_OK;
}

/* Options after the subcommand; -1 when help was printed. */
static int pol_options(int argc, char **argv, pol_args *o)
{
    static const struct option opts[] = {{"file", required_argument, 0, 'f'},
                                         {"anchor", required_argument, 0, 'a'},
                                         {"from", required_argument, 0, 's'},
                                         {"type", required_argument, 0, 't'},
                                         {"to", required_argument, 0, 'r'},
                                         {"role", required_argument, 0, 'l'},
                                         {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char **slot[128] = {['f'] = &o->file, ['a'] = &o->anchor, ['s'] = &o->from,
                              ['t'] = &o->type, ['r'] = &o->to,     ['l'] = &o->role};
    int opt;
    cli_getopt_reset();
    while ((opt = cli_getopt("directory policy", argc - 1, argv + 1, opts)) != -1) {
        if (opt > 0 && opt < 128 && slot[opt])
            *slot[opt] = optarg;
        else if (opt == 'j')
            o->json = 1;
        else if (opt == 'h') {
            pol_usage(stdout);
            return -1;
        } else
            return EXIT_USAGE;
    }
    if (optind + 1 < argc)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex directory policy: unknown argument '%s'\n",
                        argv[optind + 1]);
    return EXIT_OK;
}

/* argv[0] is "policy", argv[1] the subcommand. */
int cmd_directory_policy(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(refex_directory *d, const char *sub, const pol_args *o);
    } subs[] = {{"show", pol_show}, {"allow", pol_rule}, {"deny", pol_rule}, {"lead", pol_lead}};
    char err[512];
    pol_args o = {0};
    refex_pubkeys ap;
    refex_directory *d = NULL;
    if (argc < 2 || cli_wants_help(2, argv)) {
        pol_usage(cli_usage_stream(argc >= 2));
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    const char *sub = argv[1];
    int rc = pol_options(argc, argv, &o);
    if (rc != EXIT_OK)
        return rc < 0 ? EXIT_OK : rc;
    size_t k = 0;
    while (k < sizeof subs / sizeof subs[0] && strcmp(sub, subs[k].name) != 0)
        k++;
    if (k == sizeof subs / sizeof subs[0])
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex directory policy: unknown subcommand '%s'\n", sub);
    if (!o.file)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex directory policy %s: --file is required\n",
                        sub);
    /* Only show verifies: an edit works on the file as it is and leaves it unsigned. */
    const uint8_t *anchor = NULL;
    if (subs[k].fn == pol_show && o.anchor) {
        if ((rc = refex_pubkeys_load(o.anchor, &ap, err, sizeof err)) != REFEX_OK)
            return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory policy: %s\n", err);
        anchor = ap.sign_pk;
    }
    if ((rc = refex_directory_load(o.file, anchor, &d, err, sizeof err)) != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory policy %s: %s\n", sub, err);
    rc = subs[k].fn(d, sub, &o);
    refex_directory_destroy(&d);
    return rc;
}
