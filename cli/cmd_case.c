/* `refex case`: case membership and case updates. The lead agency (children's social care)
 * grants and revokes membership; members publish updates, which the agent encrypts for the
 * case's current members only, as the lead's signed grants say. */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body_flags.h"
#include "cli.h"
#include "refex/client.h"

static void case_usage(FILE *out)
{
    fprintf(out,
            "usage: refex [-c AGENT.conf] case open --case REF\n"
            "       refex [-c AGENT.conf] case grant --case REF --member ID [--types T,...]\n"
            "                                       [--until YYYY-MM-DD]\n"
            "       refex [-c AGENT.conf] case revoke --case REF --member ID\n"
            "       refex [-c AGENT.conf] case members|show --case REF [--json]\n"
            "       refex [-c AGENT.conf] case subscribe (--case REF | --all) [--types T,...]\n"
            "       refex [-c AGENT.conf] case unsubscribe (--case REF | --all)\n"
            "       refex [-c AGENT.conf] case publish --case REF --type TYPE --summary TEXT\n"
            "                 --article6 BASIS --article9 CONDITION --purpose PURPOSE\n"
            "                 --practitioner REF [--practitioner-role ROLE] [--consent STATUS]\n"
            "                 [--effective-date YYYY-MM-DD] [--body FILE|-] [--json]\n"
            "\n"
            "open        (lead only) open a case under a pseudonymous reference: this agency\n"
            "            becomes its lead, and no other agency can lead it\n"
            "grant       (lead only) let an agency receive the case's updates; --types limits\n"
            "            them (assessment-concluded, child-protection-plan, birth, placement,\n"
            "            case-closed, other); --until ends the grant at that date (UTC)\n"
            "revoke      (lead only) end an agency's membership: later updates do not reach it\n"
            "members     the case's members, from the lead's signed grants this agent holds,\n"
            "            and whether each has subscribed\n"
            "show        the same, then the case's updates this agency has received\n"
            "subscribe   ask for the updates of one case this agency is a member of, or of\n"
            "            all of them (--all), optionally only some types (--types); a\n"
            "            non-member gets E_NOT_MEMBER, and the refusal is audited\n"
            "unsubscribe stop receiving them (a subscription to the case itself wins over\n"
            "            --all, so --all then unsubscribe --case REF leaves out REF)\n"
            "publish     send a case update to every current member allowed that type and\n"
            "            subscribed to it, and to the lead; each grant and subscription is\n"
            "            checked by this agent (the broker cannot add a reader); a\n"
            "            non-member gets E_NOT_MEMBER, and the refusal is audited. The\n"
            "            lawful basis, purpose and practitioner are the publisher's to state,\n"
            "            as for 'refex send' (same values; --body gives a CaseUpdate as JSON,\n"
            "            the flags override it); nothing is defaulted, and an update without\n"
            "            them is refused with E_INVAL naming each missing field\n");
}

#define MAX_TYPES 32 /* the agent takes 16, and says so for more */

/* "birth,placement" -> {"CASE_UPDATE_BIRTH", "CASE_UPDATE_PLACEMENT"}; full names, and
 * names too long to be real, pass through for the agent to judge. */
typedef struct {
    char buf[MAX_TYPES][96];
    const char *v[MAX_TYPES];
    size_t n;
    char *dup;
} update_types;

static void update_types_parse(update_types *t, const char *list)
{
    char *save = NULL;
    t->n = 0;
    t->dup = list ? strdup(list) : NULL;
    for (char *v = t->dup ? strtok_r(t->dup, ",", &save) : NULL; v && t->n < MAX_TYPES;
         v = strtok_r(NULL, ",", &save)) {
        char *b = t->buf[t->n];
        int n = snprintf(b, sizeof t->buf[0], "CASE_UPDATE_%s", v);
        if (strncmp(v, "CASE_UPDATE_", 12) == 0 || n < 0 || (size_t)n >= sizeof t->buf[0]) {
            t->v[t->n++] = v;
            continue;
        }
        for (char *p = b + 12; *p; p++)
            *p = (char)(*p == '-' ? '_' : toupper((unsigned char)*p));
        t->v[t->n++] = b;
    }
}

/* How many names a comma-separated list holds (empty names between commas do not count). */
static size_t count_names(const char *list)
{
    size_t n = 0;
    for (const char *p = list; *p; p++)
        n += *p != ',' && (p == list || p[-1] == ',');
    return n;
}

static long long date_ms(const char *d)
{
    int y, m, day;
    if (!d || sscanf(d, "%4d-%2d-%2d", &y, &m, &day) != 3 || m < 1 || m > 12 || day < 1 || day > 31)
        return -1;
    /* days from civil (Howard Hinnant), UTC midnight */
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (era * 146097 + doe - 719468) * 86400000LL;
}

static int call_inbox_list(refex_client *c, const void *arg, char **out)
{
    (void)arg;
    return refex_client_inbox_list(c, out);
}

/* The case updates this agency has received for the case, oldest first. */
static void show_updates(const char *case_ref)
{
    json_t *reply = NULL, *m;
    size_t i, n = 0;
    if (cli_call(35000, call_inbox_list, NULL, &reply) != EXIT_OK)
        return;
    printf("\nupdates received\n%-21s %-18s %-22s %s\n", "RECEIVED", "FROM", "TYPE", "SUMMARY");
    json_array_foreach(json_object_get(reply, "messages"), i, m)
    {
        const char *c = cli_str(m, "case_ref");
        const char *t = cli_str(m, "type");
        if (!c || !t || strcmp(c, case_ref) != 0 || strcmp(t, "CASE_UPDATE") != 0)
            continue;
        char when[32];
        json_t *body = json_object_get(m, "body");
        const char *ut = cli_str(body, "update_type");
        const char *sum = cli_str(body, "summary");
        cli_format_time(when, sizeof when,
                        (long long)json_integer_value(json_object_get(m, "received_ms")));
        printf("%-21s %-18s %-22s %s\n", when, cli_str(m, "sender"),
               ut && strlen(ut) > 12 ? ut + 12 : "?", sum ? sum : "");
        n++;
    }
    if (!n)
        printf("(none)\n");
    json_decref(reply);
}

typedef struct {
    const char *sub, *case_ref, *member, *types, *until, *type, *summary, *effective;
    int json, all, show;
    long long until_ms; /* --until, parsed */
    cli_body body;      /* publish: --body and the field flags */
    json_t *update;     /* publish: the body built from them */
} case_args;

static const struct option OPTS[] = {{"case", required_argument, 0, 'C'},
                                     {"member", required_argument, 0, 'm'},
                                     {"types", required_argument, 0, 't'},
                                     {"until", required_argument, 0, 'u'},
                                     {"type", required_argument, 0, 'y'},
                                     {"summary", required_argument, 0, 's'},
                                     {"effective-date", required_argument, 0, 'e'},
                                     {"json", no_argument, 0, 'j'},
                                     {"all", no_argument, 0, 'a'},
                                     {"help", no_argument, 0, 'h'},
                                     {"body", required_argument, 0, 'b'},
                                     {"article6", required_argument, 0, O_A6},
                                     {"article9", required_argument, 0, O_A9},
                                     {"consent", required_argument, 0, O_CONS},
                                     {"purpose", required_argument, 0, O_PURPOSE},
                                     {"practitioner", required_argument, 0, O_PREF},
                                     {"practitioner-role", required_argument, 0, O_PROLE},
                                     {0, 0, 0, 0}};

/* Options after the subcommand (argv[1], which getopt sees as argv[0]). */
static int parse_case(int argc, char **argv, case_args *a)
{
    int opt;
    cli_getopt_reset();
    while ((opt = cli_getopt("case", argc - 1, argv + 1, OPTS)) != -1) {
        const char **slot = opt == 'C'   ? &a->case_ref
                            : opt == 'm' ? &a->member
                            : opt == 't' ? &a->types
                            : opt == 'u' ? &a->until
                            : opt == 'y' ? &a->type
                            : opt == 's' ? &a->summary
                            : opt == 'e' ? &a->effective
                                         : NULL;
        if (slot)
            *slot = optarg;
        else if (opt == 'j')
            a->json = 1;
        else if (opt == 'a')
            a->all = 1;
        else if (opt == 'b')
            a->body.file = optarg;
        else if (opt < O_KIND || cli_body_flag(&a->body, "case", opt, optarg) != EXIT_OK)
            return EXIT_USAGE;
    }
    if ((a->body.file || a->body.used) && strcmp(a->sub, "publish") != 0) {
        fprintf(stderr, "refex case %s: --body and the lawful-basis flags are for publish\n",
                a->sub);
        return EXIT_USAGE;
    }
    if (optind + 1 < argc) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex case %s: unknown argument '%s'\n", a->sub,
                        argv[optind + 1]);
    }
    /* An empty list would mean every type: widening a grant by accident is refused. */
    if (a->types && (count_names(a->types) == 0 || count_names(a->types) > MAX_TYPES)) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex case %s: --types takes 1 to %d update types, not '%s'\n", a->sub,
                        MAX_TYPES, a->types);
    }
    return EXIT_OK;
}

static int is_subscribing(const case_args *a)
{
    return strcmp(a->sub, "subscribe") == 0 || strcmp(a->sub, "unsubscribe") == 0;
}

/* ---- calls: each makes the library call for one subcommand ---------------------------- */

static int call_grant(refex_client *c, const void *arg, char **out)
{
    const case_args *a = arg;
    update_types t;
    update_types_parse(&t, a->types);
    int rc = refex_client_case_grant(c, a->case_ref, a->member, t.v, t.n, a->until_ms,
                                     strcmp(a->sub, "revoke") == 0, out);
    free(t.dup);
    return rc;
}

static int call_open(refex_client *c, const void *arg, char **out)
{
    return refex_client_case_open(c, ((const case_args *)arg)->case_ref, out);
}

static int call_subscribe(refex_client *c, const void *arg, char **out)
{
    const case_args *a = arg;
    update_types t;
    update_types_parse(&t, a->types);
    int rc = refex_client_case_subscribe(c, a->all ? NULL : a->case_ref, t.v, t.n,
                                         strcmp(a->sub, "unsubscribe") == 0, out);
    free(t.dup);
    return rc;
}

static int call_members(refex_client *c, const void *arg, char **out)
{
    return refex_client_case_members(c, ((const case_args *)arg)->case_ref, out);
}

/* A case update: the agent picks the recipients from the case's grants and subscriptions. */
static int call_publish(refex_client *c, const void *arg, char **out)
{
    const case_args *a = arg;
    char *text = json_dumps(a->update, JSON_COMPACT);
    int rc = text ? refex_client_case_publish(c, a->case_ref, text, NULL, out) : REFEX_E_NOMEM;
    free(text);
    return rc;
}

/* Usage errors the agent need not see. */
static int check_grant(case_args *a)
{
    if (!a->member) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex case %s: --member is required\n", a->sub);
    }
    if (a->until && (a->until_ms = date_ms(a->until)) < 0) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex case grant: --until takes YYYY-MM-DD\n");
    }
    return EXIT_OK;
}

/* Builds the update: --body, the field flags over it, then --case, --type, --summary and
 * --effective-date over those. */
static int check_publish(case_args *a)
{
    if (!a->body.file && (!a->type || !a->summary))
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex case publish: --type and --summary are required (or --body)\n");
    int rc = cli_body_build(&a->body, "case publish", "case-update", &a->update);
    if (rc != EXIT_OK)
        return rc;
    json_object_set_new(a->update, "case_ref", json_string(a->case_ref));
    if (a->type) {
        update_types t;
        update_types_parse(&t, a->type);
        json_object_set_new(a->update, "update_type",
                            json_string(t.n == 1 && !strchr(a->type, ',') ? t.v[0] : a->type));
        free(t.dup);
    }
    if (a->summary)
        json_object_set_new(a->update, "summary", json_string(a->summary));
    if (a->effective)
        json_object_set_new(a->update, "effective_date", json_string(a->effective));
    return EXIT_OK;
}

/* ---- replies ----------------------------------------------------------------------- */

/* "CASE_UPDATE_BIRTH,CASE_UPDATE_PLACEMENT" -> "BIRTH,PLACEMENT"; "all" if none. */
static void type_list(const json_t *ts, char *typ, size_t len)
{
    json_t *t;
    size_t k, used = 0;
    snprintf(typ, len, "all");
    json_array_foreach(ts, k, t)
    {
        used += (size_t)snprintf(typ + (k ? used : 0), len - (k ? used : 0), "%s%s", k ? "," : "",
                                 json_string_value(t) + 12);
        if (used >= len)
            break;
    }
}

static void print_members(const case_args *a, const json_t *reply)
{
    json_t *m;
    size_t i;
    printf("case %s\n%-20s %-10s %-11s %-12s %s\n", a->case_ref, "MEMBER", "STATUS", "SUBSCRIBED",
           "UNTIL", "UPDATE TYPES");
    json_array_foreach(json_object_get(reply, "members"), i, m)
    {
        char until_s[32] = "-", typ[256];
        long long u = (long long)json_integer_value(json_object_get(m, "valid_until_ms"));
        if (u)
            cli_format_time(until_s, sizeof until_s, u);
        type_list(json_object_get(m, "update_types"), typ, sizeof typ);
        printf("%-20s %-10s %-11s %-12.10s %s\n", cli_str(m, "member"),
               json_is_true(json_object_get(m, "is_lead"))    ? "lead"
               : json_is_true(json_object_get(m, "revoked"))  ? "revoked"
               : json_is_true(json_object_get(m, "in_force")) ? "member"
                                                              : "expired",
               json_is_true(json_object_get(m, "subscribed")) ? "yes" : "no", until_s, typ);
    }
    if (a->show)
        show_updates(a->case_ref);
}

static void print_publish(const case_args *a, const json_t *reply)
{
    printf("case update %s published to the members of %s\n", cli_str(reply, "message_id"),
           a->case_ref);
}

static void print_open(const case_args *a, const json_t *reply)
{
    (void)reply;
    printf("case %s opened; this agency leads it\n", a->case_ref);
}

static void print_subscribe(const case_args *a, const json_t *reply)
{
    printf("%s %s (serial %lld)\n",
           strcmp(a->sub, "unsubscribe") == 0 ? "unsubscribed from" : "subscribed to",
           a->case_ref ? a->case_ref : "every case this agency is a member of",
           (long long)json_integer_value(json_object_get(reply, "serial")));
}

static void print_grant(const case_args *a, const json_t *reply)
{
    printf("%s %s on case %s (serial %lld)\n", a->member,
           strcmp(a->sub, "revoke") == 0 ? "revoked" : "granted", a->case_ref,
           (long long)json_integer_value(json_object_get(reply, "serial")));
}

static const struct {
    const char *name;
    int (*check)(case_args *);
    cli_call_fn call;
    void (*print)(const case_args *, const json_t *);
} SUBS[] = {
    {"open", NULL, call_open, print_open},
    {"grant", check_grant, call_grant, print_grant},
    {"revoke", check_grant, call_grant, print_grant},
    {"members", NULL, call_members, print_members},
    {"show", NULL, call_members, print_members},
    {"subscribe", NULL, call_subscribe, print_subscribe},
    {"unsubscribe", NULL, call_subscribe, print_subscribe},
    {"publish", check_publish, call_publish, print_publish},
};

static int run_case(case_args *a, int argc, char **argv)
{
    json_t *reply = NULL;
    a->sub = argv[1];
    a->show = strcmp(a->sub, "show") == 0;
    if (parse_case(argc, argv, a) != EXIT_OK)
        return EXIT_USAGE;
    int subscribing = is_subscribing(a);
    if (subscribing ? !a->case_ref == !a->all : !a->case_ref) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex case %s: %s\n", a->sub,
                        subscribing ? "give --case REF or --all" : "--case is required");
    }
    size_t k = 0, n = sizeof SUBS / sizeof SUBS[0];
    while (k < n && strcmp(SUBS[k].name, a->sub) != 0)
        k++;
    if (k == n) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex case: unknown subcommand '%s'\n", a->sub);
    }
    int rc = SUBS[k].check ? SUBS[k].check(a) : EXIT_OK;
    if (rc != EXIT_OK)
        return rc;
    if ((rc = cli_call(35000, SUBS[k].call, a, &reply)) != EXIT_OK)
        return rc;
    if (a->json)
        cli_print_json(reply);
    else
        SUBS[k].print(a, reply);
    json_decref(reply);
    return EXIT_OK;
}

int cmd_case(int argc, char **argv)
{
    case_args a = {0};
    if (argc < 2 || cli_wants_help(argc, argv)) {
        case_usage(cli_usage_stream(argc >= 2));
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    int rc = cli_body_init(&a.body);
    if (rc == EXIT_OK)
        rc = run_case(&a, argc, argv);
    cli_body_fini(&a.body);
    json_decref(a.update);
    return rc;
}
