/* Message commands of the CLI: they talk to the local refex-agent over its ipc://
 * control socket (JSON requests and replies) and format what comes back. */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#include "cli.h"
#include "config.h"
#include "refex/error.h"

int cli_agent_request(json_t *req, json_t **reply, int timeout_ms)
{
    char dir[4096], ep[4200];
    struct stat st;
    *reply = NULL;
    int rc = cli_data_dir(dir, sizeof dir);
    if (rc != EXIT_OK)
        return rc;
    snprintf(ep, sizeof ep, "%s/control.sock", dir);
    if (stat(ep, &st) != 0) {
        fprintf(stderr, "refex: the agent is not running (no control socket at %s)\n", ep);
        return EXIT_NOAGENT;
    }
    snprintf(ep, sizeof ep, "ipc://%s/control.sock", dir);
    char *text = json_dumps(req, JSON_COMPACT);
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_REQ);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    int exit_code = EXIT_NOAGENT;
    if (!text || zmq_connect(s, ep) != 0 || zmq_send(s, text, strlen(text), 0) < 0) {
        fprintf(stderr, "refex: cannot reach the agent at %s\n", ep);
        goto out;
    }
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s, 0) < 0) {
        fprintf(stderr, "refex: the agent did not answer within %d s\n", timeout_ms / 1000);
        zmq_msg_close(&m);
        goto out;
    }
    json_error_t jerr;
    *reply = json_loadb(zmq_msg_data(&m), zmq_msg_size(&m), 0, &jerr);
    zmq_msg_close(&m);
    if (!*reply) {
        fprintf(stderr, "refex: unreadable answer from the agent\n");
        goto out;
    }
    exit_code = EXIT_OK;
out:
    free(text);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return exit_code;
}

/* Sends req and, on an ok reply, returns it; prints errors. */
static int request(json_t *req, json_t **reply, int timeout_ms)
{
    int rc = cli_agent_request(req, reply, timeout_ms);
    json_decref(req);
    if (rc != EXIT_OK)
        return rc;
    if (!json_is_true(json_object_get(*reply, "ok"))) {
        rc = cli_print_error(*reply);
        json_decref(*reply);
        *reply = NULL;
    }
    return rc;
}

/* Parses `-c FILE` and `--json` anywhere after the subcommand; returns the other args. */
static int common_flags(int *argc, char **argv, int *json)
{
    int out = 0;
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            *json = 1;
        } else if (strcmp(argv[i], "-c") == 0) {
            if (i + 1 >= *argc)
                return EXIT_USAGE;
            cli_config = argv[++i];
        } else {
            argv[out++] = argv[i];
        }
    }
    *argc = out;
    return EXIT_OK;
}

/* ---- send -------------------------------------------------------------------------- */

static void send_usage(FILE *out)
{
    fprintf(out,
            "usage: refex [-c AGENT.conf] send --to ID[,ID...] --type TYPE [--case REF]\n"
            "             (--body FILE.json | REFERRAL FLAGS) [--ttl SECONDS] [--wait] [--json]\n"
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

int cmd_send(int argc, char **argv)
{
    const char *to = NULL, *type = NULL, *case_ref = NULL, *body_file = NULL;
    long ttl = 0;
    int wait = 0, json = 0, opt, flags_used = 0;
    json_t *flags = json_object(), *concerns = json_array();
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
    static const struct option opts[] = {{"to", required_argument, 0, 't'},
                                         {"type", required_argument, 0, 'y'},
                                         {"case", required_argument, 0, 'C'},
                                         {"body", required_argument, 0, 'b'},
                                         {"ttl", required_argument, 0, 'T'},
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
    int exit_code = EXIT_USAGE;
    json_t *req = NULL, *reply = NULL, *body = NULL;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        char *end = NULL;
        flags_used |= opt >= O_KIND;
        switch (opt) {
        case 'c':
            cli_config = optarg;
            break;
        case 't':
            to = optarg;
            break;
        case 'y':
            type = optarg;
            break;
        case 'C':
            case_ref = optarg;
            break;
        case 'b':
            body_file = optarg;
            break;
        case 'T':
            ttl = strtol(optarg, &end, 10);
            if (*end || ttl <= 0 || ttl > 366L * 24 * 3600) {
                fprintf(stderr, "refex send: --ttl takes 1 to 31622400 seconds (366 days)\n");
                goto out;
            }
            break;
        case 'w':
            wait = 1;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            send_usage(stdout);
            exit_code = EXIT_OK;
            goto out;
        case O_KIND:
            json_object_set_new(flags, "kind", enum_value("REFERRAL_", optarg));
            break;
        case O_SUBJ:
            json_object_set_new(child(flags, "subject"), "reference", json_string(optarg));
            break;
        case O_DUE:
            json_object_set_new(child(flags, "subject"), "estimated_due_date", json_string(optarg));
            break;
        case O_GEST: {
            long w = strtol(optarg, &end, 10);
            if (*end || w < 0 || w > 45) {
                fprintf(stderr, "refex send: --gestation-weeks takes 0 to 45\n");
                goto out;
            }
            json_object_set_new(child(flags, "subject"), "gestation_weeks", json_integer(w));
            json_object_set_new(child(flags, "subject"), "kind", json_string("SUBJECT_UNBORN"));
            break;
        }
        case O_CONCERN:
            json_array_append_new(concerns, enum_value("CONCERN_", optarg));
            break;
        case O_URG:
            json_object_set_new(flags, "urgency", enum_value("URGENCY_", optarg));
            break;
        case O_SUM:
            json_object_set_new(flags, "summary", json_string(optarg));
            break;
        case O_A6:
            json_object_set_new(child(flags, "lawful_basis"), "article6",
                                enum_value("ARTICLE6_", optarg));
            break;
        case O_A9:
            json_object_set_new(child(flags, "lawful_basis"), "article9",
                                enum_value("ARTICLE9_", optarg));
            break;
        case O_CONS:
            json_object_set_new(flags, "consent", enum_value("CONSENT_", optarg));
            break;
        case O_PREF:
            json_object_set_new(child(flags, "referrer"), "reference", json_string(optarg));
            break;
        case O_PROLE:
            json_object_set_new(child(flags, "referrer"), "role", json_string(optarg));
            break;
        default:
            send_usage(stderr);
            goto out;
        }
    }
    if (optind != argc || !to || !type) {
        fprintf(stderr, "refex send: --to and --type are required (see refex send --help)\n");
        goto out;
    }
    if (json_array_size(concerns))
        json_object_set(flags, "concerns", concerns);
    if (body_file) {
        json_error_t jerr;
        body = strcmp(body_file, "-") == 0 ? json_loadf(stdin, 0, &jerr)
                                           : json_load_file(body_file, 0, &jerr);
        if (!body) {
            fprintf(stderr, "refex send: %s:%d: %s\n", body_file, jerr.line, jerr.text);
            exit_code = EXIT_FAIL;
            goto out;
        }
        if (!json_is_object(body)) {
            fprintf(stderr, "refex send: %s: the body must be a JSON object\n", body_file);
            exit_code = EXIT_FAIL;
            goto out;
        }
    } else if (!flags_used) {
        fprintf(stderr, "refex send: give the body with --body FILE or with referral flags\n");
        goto out;
    } else {
        body = json_object();
    }
    if (flags_used) {
        /* Flags override the file, one level deep for nested objects. */
        const char *k;
        json_t *v;
        json_object_foreach(flags, k, v)
        {
            json_t *cur = json_object_get(body, k);
            if (json_is_object(v) && json_is_object(cur))
                json_object_update(cur, v);
            else
                json_object_set(body, k, v);
        }
    }
    json_t *tolist = json_array();
    char *dup = strdup(to), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(tolist, json_string(t));
    free(dup);
    req = json_pack("{s:s, s:o, s:s, s:O, s:b}", "cmd", "send", "to", tolist, "type", type, "body",
                    body, "wait", wait);
    if (case_ref)
        json_object_set_new(req, "case", json_string(case_ref));
    if (ttl)
        json_object_set_new(req, "ttl_seconds", json_integer(ttl));
    exit_code = request(req, &reply, 35000);
    req = NULL;
    if (exit_code != EXIT_OK)
        goto out;
    if (json) {
        cli_print_json(reply);
    } else {
        const char *state = json_string_value(json_object_get(reply, "state"));
        printf("message %s: %s\n", json_string_value(json_object_get(reply, "message_id")),
               strcmp(state, "stored") == 0 ? "stored by the broker"
               : strcmp(state, "sent") == 0 ? "sent to the broker"
                                            : "queued in the agent's outbox (broker not "
                                              "reached yet)");
    }
out:
    json_decref(reply);
    json_decref(req);
    json_decref(body);
    json_decref(flags);
    json_decref(concerns);
    return exit_code;
}

/* ---- inbox / outbox / audit / status ---------------------------------------------- */

static void short_text(char *out, size_t len, const char *s)
{
    snprintf(out, len, "%s", s ? s : "");
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    if (s && strlen(s) >= len && len > 4)
        memcpy(out + len - 4, "...", 4);
}

int cmd_inbox(int argc, char **argv)
{
    int json = 0;
    json_t *reply = NULL;
    if (common_flags(&argc, argv, &json) != EXIT_OK || argc < 2 || cli_wants_help(argc, argv)) {
        int help = argc >= 2 && cli_wants_help(argc, argv);
        fprintf(help ? stdout : stderr,
                "usage: refex [-c AGENT.conf] inbox list [--json]\n"
                "       refex [-c AGENT.conf] inbox show MESSAGE_ID [--json]\n"
                "\n"
                "Messages this agency received: verified, decrypted and recorded in the\n"
                "audit log before they were acknowledged. 'show' prints the whole body.\n");
        return help ? EXIT_OK : EXIT_USAGE;
    }
    int show = strcmp(argv[1], "show") == 0;
    if (!show && strcmp(argv[1], "list") != 0) {
        fprintf(stderr, "refex inbox: unknown subcommand '%s'\n", argv[1]);
        return EXIT_USAGE;
    }
    if (show && argc != 3) {
        fprintf(stderr, "refex inbox show: give one MESSAGE_ID\n");
        return EXIT_USAGE;
    }
    json_t *req = show ? json_pack("{s:s, s:s}", "cmd", "inbox_show", "id", argv[2])
                       : json_pack("{s:s}", "cmd", "inbox_list");
    int rc = request(req, &reply, 10000);
    if (rc != EXIT_OK)
        return rc;
    json_t *msgs = json_object_get(reply, "messages"), *m;
    size_t i;
    if (json) {
        cli_print_json(show ? json_array_get(msgs, 0) : msgs);
    } else if (show) {
        m = json_array_get(msgs, 0);
        char t[32];
        cli_format_time(t, sizeof t,
                        (long long)json_integer_value(json_object_get(m, "received_ms")));
        printf("message   %s\nfrom      %s\ntype      %s\ncase      %s\nreceived  %s\n"
               "envelope  sha256:%s\nverified  signature and encryption OK\nbody:\n",
               json_string_value(json_object_get(m, "message_id")),
               json_string_value(json_object_get(m, "sender")),
               json_string_value(json_object_get(m, "type")),
               json_string_value(json_object_get(m, "case_ref")), t,
               json_string_value(json_object_get(m, "envelope_hash")));
        cli_print_json(json_object_get(m, "body"));
    } else {
        printf("%-21s %-18s %-20s %-12s %-32s %s\n", "RECEIVED", "FROM", "TYPE", "CASE",
               "MESSAGE ID", "SUMMARY");
        json_array_foreach(msgs, i, m)
        {
            char t[32], sum[41];
            cli_format_time(t, sizeof t,
                            (long long)json_integer_value(json_object_get(m, "received_ms")));
            short_text(sum, sizeof sum,
                       json_string_value(json_object_get(json_object_get(m, "body"), "summary")));
            const char *c = json_string_value(json_object_get(m, "case_ref"));
            printf("%-21s %-18s %-20s %-12s %-32s %s\n", t,
                   json_string_value(json_object_get(m, "sender")),
                   json_string_value(json_object_get(m, "type")), c && *c ? c : "-",
                   json_string_value(json_object_get(m, "message_id")), sum);
        }
        if (json_array_size(msgs) == 0)
            printf("(inbox is empty)\n");
    }
    json_decref(reply);
    return EXIT_OK;
}

int cmd_outbox(int argc, char **argv)
{
    int json = 0;
    json_t *reply = NULL, *m;
    size_t i;
    if (common_flags(&argc, argv, &json) != EXIT_OK || argc != 2 || strcmp(argv[1], "list") != 0) {
        int help = cli_wants_help(argc, argv);
        fprintf(help ? stdout : stderr,
                "usage: refex [-c AGENT.conf] outbox list [--json]\n"
                "\n"
                "Messages this agency sent, with their state: pending (not yet stored by\n"
                "the broker), stored, or rejected with the broker's typed error.\n");
        return help ? EXIT_OK : EXIT_USAGE;
    }
    int rc = request(json_pack("{s:s}", "cmd", "outbox_list"), &reply, 10000);
    if (rc != EXIT_OK)
        return rc;
    json_t *msgs = json_object_get(reply, "messages");
    if (json) {
        cli_print_json(msgs);
    } else {
        printf("%-21s %-24s %-20s %-32s %s\n", "CREATED", "TO", "TYPE", "MESSAGE ID", "STATE");
        json_array_foreach(msgs, i, m)
        {
            char t[32];
            cli_format_time(t, sizeof t,
                            (long long)json_integer_value(json_object_get(m, "created_ms")));
            printf("%-21s %-24s %-20s %-32s %s%s%s\n", t,
                   json_string_value(json_object_get(m, "recipients")),
                   json_string_value(json_object_get(m, "type")),
                   json_string_value(json_object_get(m, "message_id")),
                   json_string_value(json_object_get(m, "state")),
                   json_integer_value(json_object_get(m, "error_code")) ? ": " : "",
                   json_string_value(json_object_get(m, "error_detail")));
        }
    }
    json_decref(reply);
    return EXIT_OK;
}

int cmd_audit_list(int argc, char **argv)
{
    int json = 0;
    long limit = 0;
    json_t *reply = NULL, *e;
    size_t i;
    if (common_flags(&argc, argv, &json) != EXIT_OK || argc < 2 || strcmp(argv[1], "list") != 0 ||
        cli_wants_help(argc, argv)) {
        int help = cli_wants_help(argc, argv);
        fprintf(help ? stdout : stderr,
                "usage: refex [-c AGENT.conf] audit list [--limit N] [--json]\n"
                "\n"
                "This agency's audit log, oldest first: every send, receive and refusal,\n"
                "with peer agency, message id and type, case reference, envelope hash,\n"
                "purpose, lawful basis (UK GDPR Art. 6 and Art. 9) and consent status.\n"
                "People appear only as references. --json adds each entry's leaf hash.\n");
        return help ? EXIT_OK : EXIT_USAGE;
    }
    for (int k = 2; k < argc; k++) {
        if (strcmp(argv[k], "--limit") == 0 && k + 1 < argc) {
            limit = strtol(argv[++k], NULL, 10);
        } else {
            fprintf(stderr, "refex audit list: unknown argument '%s'\n", argv[k]);
            return EXIT_USAGE;
        }
    }
    int rc =
        request(json_pack("{s:s, s:i}", "cmd", "audit_list", "limit", (int)limit), &reply, 10000);
    if (rc != EXIT_OK)
        return rc;
    json_t *entries = json_object_get(reply, "entries");
    if (json) {
        cli_print_json(entries);
    } else {
        printf("%-5s %-21s %-12s %-16s %-18s %-20s %-32s %-12s %s\n", "SEQ", "TIME", "EVENT",
               "OUTCOME", "PEER", "TYPE", "MESSAGE ID", "CASE", "LAWFUL BASIS");
        json_array_foreach(entries, i, e)
        {
            char t[32];
            cli_format_time(t, sizeof t,
                            (long long)json_integer_value(json_object_get(e, "time_ms")));
            const char *c = json_string_value(json_object_get(e, "case_ref"));
            printf("%-5lld %-21s %-12s %-16s %-18s %-20s %-32s %-12s %s + %s\n",
                   (long long)json_integer_value(json_object_get(e, "seq")), t,
                   json_string_value(json_object_get(e, "event")),
                   json_string_value(json_object_get(e, "outcome")),
                   json_string_value(json_object_get(e, "peer")),
                   json_string_value(json_object_get(e, "message_type")),
                   json_string_value(json_object_get(e, "message_id")), c && *c ? c : "-",
                   json_string_value(json_object_get(e, "article6")),
                   json_string_value(json_object_get(e, "article9")));
        }
    }
    json_decref(reply);
    return EXIT_OK;
}

/* One line per recipient, from its receipt; "awaiting delivery" where none has come yet. */
static void print_message_status(const json_t *m)
{
    const char *state = json_string_value(json_object_get(m, "state"));
    char t[32];
    size_t i;
    json_t *r;
    cli_format_time(t, sizeof t, (long long)json_integer_value(json_object_get(m, "created_ms")));
    printf("message    %s\ntype       %s\ncase       %s\ncreated    %s\n",
           json_string_value(json_object_get(m, "message_id")),
           json_string_value(json_object_get(m, "type")),
           json_string_value(json_object_get(m, "case_ref")), t);
    if (strcmp(state, "pending") == 0)
        printf("state      queued locally: the broker has not stored it yet (retrying)\n");
    else if (strcmp(state, "rejected") == 0)
        printf("state      rejected by the broker: %s (%s)\n",
               refex_errname((int)json_integer_value(json_object_get(m, "error_code"))),
               json_string_value(json_object_get(m, "error_detail")));
    else
        printf("state      stored at the broker\n");
    char *rc = strdup(json_string_value(json_object_get(m, "recipients"))), *save = NULL;
    for (char *who = rc ? strtok_r(rc, ",", &save) : NULL; who; who = strtok_r(NULL, ",", &save)) {
        const json_t *found = NULL;
        json_array_foreach(json_object_get(m, "receipts"), i, r)
        {
            if (strcmp(json_string_value(json_object_get(r, "recipient")), who) == 0)
                found = r;
        }
        if (!found) {
            printf("  %-20s %s\n", who, strcmp(state, "stored") == 0 ? "awaiting delivery" : "-");
            continue;
        }
        cli_format_time(t, sizeof t,
                        (long long)json_integer_value(json_object_get(found, "time_ms")));
        int code = (int)json_integer_value(json_object_get(found, "code"));
        const char *signer = json_string_value(json_object_get(found, "signer"));
        if (code == 0)
            printf("  %-20s delivered %s (receipt signed by %s)\n", who, t, signer);
        else if (code == REFEX_E_EXPIRED)
            printf("  %-20s NOT delivered: expired %s (non-delivery report signed by %s)\n", who, t,
                   signer);
        else
            printf("  %-20s refused by the recipient %s: %s (signed by %s)\n", who, t,
                   refex_errname(code), signer);
    }
    free(rc);
}

int cmd_status(int argc, char **argv)
{
    int json = 0;
    json_t *reply = NULL;
    for (int k = 1; k < argc; k++)
        if (strcmp(argv[k], "--overdue") == 0)
            return cmd_requests(argc, argv);
    if (common_flags(&argc, argv, &json) != EXIT_OK || argc > 2 || cli_wants_help(argc, argv)) {
        int help = cli_wants_help(argc, argv);
        fprintf(help ? stdout : stderr,
                "usage: refex [-c AGENT.conf] status [MESSAGE_ID] [--json]\n"
                "\n"
                "Without an id: whether the agent is running and connected to its broker.\n"
                "With the id of a message this agency sent: where it is. Queued locally (not\n"
                "yet stored by the broker), stored at the broker, rejected by the broker with\n"
                "a reason, and for each recipient: delivered (its signed receipt is held),\n"
                "refused by the recipient with a reason, or not delivered before it expired\n"
                "(the broker's signed non-delivery report is held).\n");
        return help ? EXIT_OK : EXIT_USAGE;
    }
    json_t *req = argc == 2 ? json_pack("{s:s, s:s}", "cmd", "message_status", "id", argv[1])
                            : json_pack("{s:s}", "cmd", "status");
    int rc = request(req, &reply, 5000);
    if (rc != EXIT_OK)
        return rc;
    if (json)
        cli_print_json(reply);
    else if (argc == 2)
        print_message_status(reply);
    else
        printf("agent %s: %s broker %s\n", json_string_value(json_object_get(reply, "agency")),
               json_is_true(json_object_get(reply, "online")) ? "connected to" : "NOT connected to",
               json_string_value(json_object_get(reply, "broker")));
    json_decref(reply);
    return EXIT_OK;
}

/* ---- referrals and information requests -------------------------------------------- */

int cmd_referrals(int argc, char **argv)
{
    int json = 0;
    json_t *reply = NULL, *r;
    size_t i;
    if (common_flags(&argc, argv, &json) != EXIT_OK || argc != 1) {
        int help = cli_wants_help(argc, argv);
        fprintf(help ? stdout : stderr,
                "usage: refex [-c AGENT.conf] referrals [--json]\n"
                "\n"
                "The referrals this agency made and where each stands: queued locally,\n"
                "stored at the broker, received (the recipient's signed receipt is held),\n"
                "then the recipient's decision: accepted (with the new case reference),\n"
                "declined (with the reason), or more information needed. A decision is\n"
                "matched by its referral_message_id.\n");
        return help ? EXIT_OK : EXIT_USAGE;
    }
    int rc = request(json_pack("{s:s}", "cmd", "referrals"), &reply, 10000);
    if (rc != EXIT_OK)
        return rc;
    json_t *rows = json_object_get(reply, "referrals");
    if (json) {
        cli_print_json(rows);
    } else {
        printf("%-21s %-18s %-32s %-28s %s\n", "SENT", "TO", "MESSAGE ID", "STATUS", "DETAIL");
        json_array_foreach(rows, i, r)
        {
            char t[32], detail[128] = "";
            cli_format_time(t, sizeof t,
                            (long long)json_integer_value(json_object_get(r, "created_ms")));
            const char *c = json_string_value(json_object_get(r, "case_ref_assigned"));
            const char *why = json_string_value(json_object_get(r, "reason"));
            if (c && *c)
                snprintf(detail, sizeof detail, "case %s", c);
            else if (why && *why)
                short_text(detail, sizeof detail, why);
            printf("%-21s %-18s %-32s %-28s %s\n", t,
                   json_string_value(json_object_get(r, "recipients")),
                   json_string_value(json_object_get(r, "message_id")),
                   json_string_value(json_object_get(r, "status")), detail);
        }
        if (json_array_size(rows) == 0)
            printf("(no referrals sent)\n");
    }
    json_decref(reply);
    return EXIT_OK;
}

int cmd_requests(int argc, char **argv)
{
    int json = 0, overdue = 0, out = 1;
    json_t *reply = NULL, *r;
    size_t i;
    if (common_flags(&argc, argv, &json) != EXIT_OK)
        return EXIT_USAGE;
    for (int k = 1; k < argc; k++) {
        if (strcmp(argv[k], "--overdue") == 0) {
            overdue = 1;
        } else {
            int help = cli_wants_help(argc, argv);
            fprintf(help ? stdout : stderr,
                    "usage: refex [-c AGENT.conf] requests [--overdue] [--json]\n"
                    "       refex [-c AGENT.conf] status --overdue [--json]\n"
                    "\n"
                    "Information requests this agency sent, by due date: open, answered,\n"
                    "declined (a refusal to share is also a response), or overdue (past the\n"
                    "due date with no response). A response is matched by its request_id.\n");
            return help ? EXIT_OK : EXIT_USAGE;
        }
        argv[out++] = argv[k];
    }
    int rc = request(json_pack("{s:s, s:b}", "cmd", "requests", "overdue", overdue), &reply, 10000);
    if (rc != EXIT_OK)
        return rc;
    json_t *rows = json_object_get(reply, "requests");
    if (json) {
        cli_print_json(rows);
    } else {
        printf("%-12s %-18s %-24s %-12s %-32s %s\n", "DUE", "TO", "REQUEST ID", "CASE",
               "MESSAGE ID", "STATUS");
        json_array_foreach(rows, i, r)
        {
            const char *due = json_string_value(json_object_get(r, "due_date"));
            const char *c = json_string_value(json_object_get(r, "case_ref"));
            printf("%-12s %-18s %-24s %-12s %-32s %s\n", due && *due ? due : "-",
                   json_string_value(json_object_get(r, "recipients")),
                   json_string_value(json_object_get(r, "request_id")), c && *c ? c : "-",
                   json_string_value(json_object_get(r, "message_id")),
                   json_string_value(json_object_get(r, "status")));
        }
        if (json_array_size(rows) == 0)
            printf(overdue ? "(no overdue requests)\n" : "(no requests sent)\n");
    }
    json_decref(reply);
    return EXIT_OK;
}
