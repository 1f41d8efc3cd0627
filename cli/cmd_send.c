/* `refex send`: builds a message body from a JSON file and/or referral flags and hands it
 * to the local agent through librefex-client. Sealing and policy are the agent's job. */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "body_flags.h"
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
            "has stored it, and prints 'stored' or the broker's typed error; on a terminal it\n"
            "shows on stderr that it is waiting, and for how long.\n"
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
            "  --purpose safeguarding|direct-care|case-management|audit\n"
            "  --practitioner-ref REF  --practitioner-role ROLE\n"
            "  (--article6, --article9, --consent, --purpose and the practitioner flags work\n"
            "  for every type; the practitioner is the type's sender: referrer, decided_by,\n"
            "  requested_by, responded_by or published_by.)\n"
            "\n"
            "Nothing is defaulted: the agent refuses a body without the fields its type\n"
            "requires (E_INVAL, naming each; docs/protocol.md section 10.1).\n"
            "\n"
            "Example:\n"
            "  refex -c midwifery.conf send --to social-care --type referral \\\n"
            "    --kind pre-birth --subject-ref UB-2041 --gestation-weeks 12 \\\n"
            "    --concern substance-misuse --concern previous-children-removed \\\n"
            "    --urgency urgent --practitioner-ref MW-0099 --purpose safeguarding \\\n"
            "    --article6 public-task --article9 substantial-public-interest \\\n"
            "    --consent not-sought-safeguarding --summary 'Booking at 12 weeks' --wait\n");
}

typedef struct {
    const char *to, *type, *case_ref, *local_id;
    long ttl;
    int wait, json;
    cli_body body; /* --body and the field flags, merged over it */
} send_args;

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
                                     {"purpose", required_argument, 0, O_PURPOSE},
                                     {0, 0, 0, 0}};

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
            a->body.file = optarg;
            break;
        case 'T':
            if (cli_parse_long(optarg, 1, 366L * 24 * 3600, &a->ttl) != 0) {
                return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                                "refex send: --ttl takes 1 to 31622400 seconds (366 days)\n");
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
            rc = cli_body_flag(&a->body, "send", opt, optarg);
        }
    }
    if (rc == EXIT_OK && (optind != argc || !a->to || !a->type)) {
        rc = cli_fail(EXIT_USAGE, CLI_E_USAGE,
                      "refex send: --to and --type are required (see refex send --help)\n");
    }
    return rc;
}

/* The body from --body, with the field flags over it (cli/body_flags.c). */
static int build_body(const send_args *a, json_t **out)
{
    *out = NULL;
    if (!a->body.file && !a->body.used) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex send: give the body with --body FILE or with referral flags\n");
    }
    return cli_body_build(&a->body, "send", a->type, out);
}

static void print_result(const json_t *reply)
{
    const char *state = cli_str(reply, "state");
    printf("message %s: %s\n", cli_str(reply, "message_id"),
           strcmp(state, "stored") == 0 ? "stored by the broker"
           : strcmp(state, "sent") == 0 ? "sent to the broker"
                                        : "queued in the agent's outbox (it goes to the "
                                          "broker in turn, behind any older pending one)");
    if (json_is_true(json_object_get(reply, "repeat")))
        printf("(sent before under this local id; nothing was sent again)\n");
}

/* --wait on a terminal: a line on stderr, updated each second, while the agent waits for the
 * broker's STORED (one blocking request to the agent, up to 30 s). */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t done_cv;
    int done;
} wait_ticker;

static void *tick(void *arg)
{
    wait_ticker *t = arg;
    struct timespec start, until;
    clock_gettime(CLOCK_REALTIME, &start);
    pthread_mutex_lock(&t->lock);
    for (int s = 0; !t->done; s++) {
        fprintf(stderr, "\rsend: waiting for the broker to store it (%d s)", s);
        fflush(stderr);
        until = start;
        until.tv_sec += s + 1;
        while (!t->done && pthread_cond_timedwait(&t->done_cv, &t->lock, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&t->lock);
    fprintf(stderr, "\rsend: done waiting for the broker%20s\n", "");
    return NULL;
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
    wait_ticker t = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    pthread_t th;
    int ticking = a->wait && isatty(STDERR_FILENO) && pthread_create(&th, NULL, tick, &t) == 0;
    rc = refex_client_send(c, &m, NULL, &text); /* a refusal is in the reply */
    if (ticking) {
        pthread_mutex_lock(&t.lock);
        t.done = 1;
        pthread_cond_signal(&t.done_cv);
        pthread_mutex_unlock(&t.lock);
        pthread_join(th, NULL);
    }
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
    send_args a = {0};
    json_t *body = NULL;
    char *body_text = NULL;
    int rc = cli_body_init(&a.body);
    if (rc == EXIT_OK)
        rc = parse_args(&a, argc, argv);
    if (rc != EXIT_OK) {
        rc = rc < 0 ? EXIT_OK : rc;
        goto out;
    }
    if ((rc = build_body(&a, &body)) != EXIT_OK)
        goto out;
    if (!(body_text = json_dumps(body, JSON_COMPACT))) {
        (void)cli_fail(EXIT_FAIL, "E_NOMEM", "refex send: out of memory\n");
        rc = EXIT_FAIL;
        goto out;
    }
    rc = submit(&a, body_text);
out:
    free(body_text);
    json_decref(body);
    cli_body_fini(&a.body);
    return rc;
}
