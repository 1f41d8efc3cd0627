/* `refex send`: builds a message body from a JSON file and/or referral flags and hands it
 * to the local agent through librefex-client. Sealing and policy are the agent's job. */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "refex/client.h"

static void send_usage(FILE *out)
{
    fprintf(out,
            "usage: refex [-c AGENT.conf] send --to ID[,ID...] --type TYPE [--case REF]\n"
            "             (--body FILE.json | REFERRAL FLAGS) [--local-id ID] [--ttl SECONDS]\n"
            "             [--wait] [--json]\n"
            "\n"
            "Seals a message for its recipients and hands it to the local agent, which signs\n"
            "it, records it in the outbox and the audit log, and sends it to the broker.\n"
            "Prints the message id. With --wait, also waits (up to 30 s) until the broker\n"
            "has stored it, and prints 'stored' or the broker's typed error.\n"
            "\n"
            "  --to IDS        recipient agency ids, comma-separated (see 'refex directory show')\n"
            "  --type TYPE     referral, referral-decision, information-request,\n"
            "                  information-response or case-update\n"
            "  --case REF      pseudonymous case reference (visible to the broker: never a name)\n"
            "  --body FILE     the body as JSON: the fields of the message type in\n"
            "                  proto/refex.proto (e.g. Referral), enums by name; '-' reads stdin\n"
            "  --ttl SECONDS   how long the broker may hold it for an offline recipient\n"
            "                  (default 7 days)\n"
            "  --local-id ID   your own id for this message (e.g. its record number in your\n"
            "                  system), 1 to 64 printable ASCII characters, no spaces. Sent\n"
            "                  again under it (a retry) with the same type, recipients, case\n"
            "                  and body, nothing is sent: it prints the first message's id\n"
            "                  and state. With anything different it is refused\n"
            "                  (E_DUPLICATE). Kept by the agent only, never sent on;\n"
            "                  'refex status ID' takes it too\n"
            "  --wait          wait for the broker's STORED\n"
            "  --json          print the result as JSON\n"
            "\n"
            "Referral flags (type referral, without --body, or to override fields of it):\n"
            "  --kind pre-birth|child-in-need|edge-of-care\n"
            "  --subject-ref REF       pseudonymous reference of the unborn baby or child\n"
            "  --due-date YYYY-MM-DD   --gestation-weeks N\n"
            "  --concern C             repeatable: substance-misuse, domestic-abuse,\n"
            "                          mental-health, previous-children-removed,\n"
            "                          learning-disability\n"
            "  --urgency routine|urgent|immediate\n"
            "  --summary TEXT\n"
            "  --article6 public-task|legal-obligation|vital-interests|consent|...\n"
            "  --article9 substantial-public-interest|health-social-care|...\n"
            "  --consent given|refused|not-sought-safeguarding|not-required\n"
            "  --practitioner-ref REF  --practitioner-role ROLE\n"
            "\n"
            "Example:\n"
            "  refex -c midwifery.conf send --to social-care --type referral \\\n"
            "    --kind pre-birth --subject-ref UB-2041 --gestation-weeks 12 \\\n"
            "    --concern substance-misuse --concern previous-children-removed \\\n"
            "    --article6 public-task --article9 substantial-public-interest \\\n"
            "    --consent not-sought-safeguarding --summary 'Booking at 12 weeks' --wait\n");
}

/* "pre-birth" with prefix "REFERRAL_" -> "REFERRAL_PRE_BIRTH"; full names pass through. */
static json_t *enum_value(const char *prefix, const char *v)
{
    char buf[128];
    size_t pl = strlen(prefix);
    if (strncmp(v, prefix, pl) == 0)
        return json_string(v);
    int n = snprintf(buf, sizeof buf, "%s%s", prefix, v);
    if (n < 0 || (size_t)n >= sizeof buf)
        return json_string(v);
    for (char *p = buf + pl; *p; p++)
        *p = (char)(*p == '-' ? '_' : toupper((unsigned char)*p));
    return json_string(buf);
}

static json_t *child(json_t *o, const char *key)
{
    json_t *c = json_object_get(o, key);
    if (!json_is_object(c)) {
        c = json_object();
        json_object_set_new(o, key, c);
    }
    return c;
}

typedef struct {
    const char *to, *type, *case_ref, *body_file, *local_id;
    long ttl;
    int wait, json, flags_used;
    json_t *flags, *concerns; /* referral flags, merged over the body */
} send_args;

enum {
    O_KIND = 256,
    O_SUBJ,
    O_DUE,
    O_GEST,
    O_CONCERN,
    O_URG,
    O_SUM,
    O_A6,
    O_A9,
    O_CONS,
    O_PREF,
    O_PROLE
};

static const struct option OPTS[] = {{"to", required_argument, 0, 't'},
                                     {"type", required_argument, 0, 'y'},
                                     {"case", required_argument, 0, 'C'},
                                     {"body", required_argument, 0, 'b'},
                                     {"ttl", required_argument, 0, 'T'},
                                     {"local-id", required_argument, 0, 'L'},
                                     {"wait", no_argument, 0, 'w'},
                                     {"json", no_argument, 0, 'j'},
                                     {"help", no_argument, 0, 'h'},
                                     {"kind", required_argument, 0, O_KIND},
                                     {"subject-ref", required_argument, 0, O_SUBJ},
                                     {"due-date", required_argument, 0, O_DUE},
                                     {"gestation-weeks", required_argument, 0, O_GEST},
                                     {"concern", required_argument, 0, O_CONCERN},
                                     {"urgency", required_argument, 0, O_URG},
                                     {"summary", required_argument, 0, O_SUM},
                                     {"article6", required_argument, 0, O_A6},
                                     {"article9", required_argument, 0, O_A9},
                                     {"consent", required_argument, 0, O_CONS},
                                     {"practitioner-ref", required_argument, 0, O_PREF},
                                     {"practitioner-role", required_argument, 0, O_PROLE},
                                     {0, 0, 0, 0}};

/* Referral flags that set one field: under parent (or at the top), an enum if prefix. */
static const struct {
    int opt;
    const char *parent, *key, *prefix;
} FIELD_FLAGS[] = {
    {O_KIND, NULL, "kind", "REFERRAL_"},
    {O_SUBJ, "subject", "reference", NULL},
    {O_DUE, "subject", "estimated_due_date", NULL},
    {O_URG, NULL, "urgency", "URGENCY_"},
    {O_SUM, NULL, "summary", NULL},
    {O_A6, "lawful_basis", "article6", "ARTICLE6_"},
    {O_A9, "lawful_basis", "article9", "ARTICLE9_"},
    {O_CONS, NULL, "consent", "CONSENT_"},
    {O_PREF, "referrer", "reference", NULL},
    {O_PROLE, "referrer", "role", NULL},
};

/* One referral flag into a->flags; EXIT_USAGE for a bad value. */
static int referral_flag(send_args *a, int opt, const char *arg)
{
    long w;
    if (opt == O_CONCERN) {
        json_array_append_new(a->concerns, enum_value("CONCERN_", arg));
        return EXIT_OK;
    }
    if (opt == O_GEST) {
        if (cli_parse_long(arg, 0, 45, &w) != 0) {
            fprintf(stderr, "refex send: --gestation-weeks takes 0 to 45\n");
            return EXIT_USAGE;
        }
        json_object_set_new(child(a->flags, "subject"), "gestation_weeks", json_integer(w));
        json_object_set_new(child(a->flags, "subject"), "kind", json_string("SUBJECT_UNBORN"));
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof FIELD_FLAGS / sizeof FIELD_FLAGS[0]; i++) {
        if (FIELD_FLAGS[i].opt != opt)
            continue;
        json_t *o = FIELD_FLAGS[i].parent ? child(a->flags, FIELD_FLAGS[i].parent) : a->flags;
        json_object_set_new(o, FIELD_FLAGS[i].key,
                            FIELD_FLAGS[i].prefix ? enum_value(FIELD_FLAGS[i].prefix, arg)
                                                  : json_string(arg));
        return EXIT_OK;
    }
    send_usage(stderr);
    return EXIT_USAGE;
}

/* EXIT_OK to go on; -1 when help was printed (exit 0); EXIT_USAGE otherwise. */
static int parse_args(send_args *a, int argc, char **argv)
{
    int opt, rc = EXIT_OK;
    cli_getopt_reset();
    while (rc == EXIT_OK && (opt = cli_getopt("send", argc, argv, OPTS)) != -1) {
        switch (opt) {
        case 't':
            a->to = optarg;
            break;
        case 'y':
            a->type = optarg;
            break;
        case 'C':
            a->case_ref = optarg;
            break;
        case 'b':
            a->body_file = optarg;
            break;
        case 'T':
            if (cli_parse_long(optarg, 1, 366L * 24 * 3600, &a->ttl) != 0) {
                fprintf(stderr, "refex send: --ttl takes 1 to 31622400 seconds (366 days)\n");
                return EXIT_USAGE;
            }
            break;
        case 'L':
            a->local_id = optarg;
            break;
        case 'w':
            a->wait = 1;
            break;
        case 'j':
            a->json = 1;
            break;
        case 'h':
            send_usage(stdout);
            return -1;
        case '?':
            return EXIT_USAGE;
        default:
            a->flags_used = 1;
            rc = referral_flag(a, opt, optarg);
        }
    }
    if (rc == EXIT_OK && (optind != argc || !a->to || !a->type)) {
        fprintf(stderr, "refex send: --to and --type are required (see refex send --help)\n");
        rc = EXIT_USAGE;
    }
    return rc;
}

/* The body from --body, with the referral flags over it (one level deep for objects). */
static int build_body(const send_args *a, json_t **out)
{
    json_error_t jerr;
    json_t *body = NULL;
    *out = NULL;
    if (a->body_file) {
        body = strcmp(a->body_file, "-") == 0 ? json_loadf(stdin, 0, &jerr)
                                              : json_load_file(a->body_file, 0, &jerr);
        if (!body) {
            fprintf(stderr, "refex send: %s:%d: %s\n", a->body_file, jerr.line, jerr.text);
            return EXIT_FAIL;
        }
        if (!json_is_object(body)) {
            fprintf(stderr, "refex send: %s: the body must be a JSON object\n", a->body_file);
            json_decref(body);
            return EXIT_FAIL;
        }
    } else if (!a->flags_used) {
        fprintf(stderr, "refex send: give the body with --body FILE or with referral flags\n");
        return EXIT_USAGE;
    } else {
        body = json_object();
    }
    if (json_array_size(a->concerns))
        json_object_set(a->flags, "concerns", a->concerns);
    const char *k;
    json_t *v;
    json_object_foreach(a->flags, k, v)
    {
        json_t *cur = json_object_get(body, k);
        if (json_is_object(v) && json_is_object(cur))
            json_object_update(cur, v);
        else
            json_object_set(body, k, v);
    }
    *out = body;
    return EXIT_OK;
}

static void print_result(const json_t *reply)
{
    const char *state = cli_str(reply, "state");
    printf("message %s: %s\n", cli_str(reply, "message_id"),
           strcmp(state, "stored") == 0 ? "stored by the broker"
           : strcmp(state, "sent") == 0 ? "sent to the broker"
                                        : "queued in the agent's outbox (broker not "
                                          "reached yet)");
    if (json_is_true(json_object_get(reply, "repeat")))
        printf("(sent before under this local id; nothing was sent again)\n");
}

/* Splits --to and sends through the client library; prints the outcome. */
static int submit(const send_args *a, const char *body_text)
{
    refex_client *c = NULL;
    json_t *reply = NULL;
    char *text = NULL, *dup = strdup(a->to), *save = NULL;
    const char *to[64 + 1];
    size_t n = 0;
    for (char *t = dup ? strtok_r(dup, ",", &save) : NULL; t && n < sizeof to / sizeof to[0];
         t = strtok_r(NULL, ",", &save))
        to[n++] = t; /* more than 64 reaches the agent, which says how many it takes */
    refex_client_message m = {.type = a->type,
                              .to = to,
                              .n_to = n,
                              .case_ref = a->case_ref,
                              .body_json = body_text,
                              .ttl_seconds = a->ttl,
                              .wait = a->wait,
                              .local_id = a->local_id};
    int rc = cli_client_open(&c, 35000);
    if (rc != EXIT_OK)
        goto out;
    rc = refex_client_send(c, &m, NULL, &text); /* a refusal is in the reply */
    if ((rc = cli_client_reply(c, rc, text, &reply)) != EXIT_OK)
        goto out;
    if (!json_is_true(json_object_get(reply, "ok")))
        rc = cli_print_error(reply);
    else if (a->json)
        cli_print_json(reply);
    else
        print_result(reply);
out:
    json_decref(reply);
    refex_client_close(&c);
    free(dup);
    return rc;
}

int cmd_send(int argc, char **argv)
{
    send_args a = {.flags = json_object(), .concerns = json_array()};
    json_t *body = NULL;
    char *body_text = NULL;
    int rc = parse_args(&a, argc, argv);
    if (rc != EXIT_OK) {
        rc = rc < 0 ? EXIT_OK : rc;
        goto out;
    }
    if ((rc = build_body(&a, &body)) != EXIT_OK)
        goto out;
    if (!(body_text = json_dumps(body, JSON_COMPACT))) {
        fprintf(stderr, "refex send: out of memory\n");
        rc = EXIT_FAIL;
        goto out;
    }
    rc = submit(&a, body_text);
out:
    free(body_text);
    json_decref(body);
    json_decref(a.flags);
    json_decref(a.concerns);
    return rc;
}
