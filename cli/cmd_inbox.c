/* `refex inbox`, `refex outbox` and `refex audit list`: what this agency received, sent
 * and recorded, as the local agent reports it, formatted as tables or JSON; and the inbox
 * consumed by cursor: `inbox ack`, and `inbox watch`, a stream of new messages. */
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "refex/client.h"

#define LIMIT_MAX 1000000000L

static int call_outbox(refex_client *c, const void *arg, char **out)
{
    (void)arg;
    return refex_client_outbox_list(c, out);
}

static int call_audit_list(refex_client *c, const void *limit, char **out)
{
    return refex_client_audit_list(c, 0, *(const long *)limit, out);
}

static const struct option LIST_OPTS[] = {{"json", no_argument, 0, 'j'},
                                          {"limit", required_argument, 0, 'l'},
                                          {"help", no_argument, 0, 'h'},
                                          {0, 0, 0, 0}};

typedef struct {
    int json, help;
    long limit; /* 0: all */
} list_args;

/* Options of a listing command; the words left over are argv[optind..argc). */
static int list_options(const char *cmd, int argc, char **argv, list_args *a, int with_limit)
{
    int opt;
    cli_getopt_reset();
    while ((opt = cli_getopt(cmd, argc, argv, LIST_OPTS)) != -1) {
        if (opt == 'j') {
            a->json = 1;
        } else if (opt == 'h') {
            a->help = 1;
        } else if (opt == 'l' && with_limit) {
            if (cli_number(cmd, "--limit", optarg, 0, LIMIT_MAX, &a->limit) != EXIT_OK)
                return EXIT_USAGE;
        } else {
            if (opt == 'l')
                cli_fail(EXIT_USAGE, CLI_E_USAGE,
                         "refex %s: unknown option '--limit' (see refex %s --help)\n", cmd, cmd);
            return EXIT_USAGE;
        }
    }
    return EXIT_OK;
}

/* ---- inbox ---------------------------------------------------------------------------- */

static const struct option INBOX_OPTS[] = {{"json", no_argument, 0, 'j'},
                                           {"limit", required_argument, 0, 'l'},
                                           {"after", required_argument, 0, 'a'},
                                           {"unacked", no_argument, 0, 'u'},
                                           {"count", required_argument, 0, 'n'},
                                           {"timeout", required_argument, 0, 't'},
                                           {"from", required_argument, 0, 'f'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};

typedef struct {
    int json, help, unacked;
    long limit, after, count, timeout; /* 0: all, from the start, no end, no end */
    const char *from;                  /* inbox ack --from: the message's sender */
    char given[8];                     /* the options given, by letter, for checking */
} inbox_args;

static int inbox_options(int argc, char **argv, inbox_args *a)
{
    int opt, rc = EXIT_OK;
    size_t n = 0;
    cli_getopt_reset();
    while (rc == EXIT_OK && (opt = cli_getopt("inbox", argc, argv, INBOX_OPTS)) != -1) {
        if (opt != 'j' && opt != 'h' && opt != '?' && !strchr(a->given, opt) &&
            n < sizeof a->given - 1)
            a->given[n++] = (char)opt;
        if (opt == 'j')
            a->json = 1;
        else if (opt == 'h')
            a->help = 1;
        else if (opt == 'u')
            a->unacked = 1;
        else if (opt == 'f')
            a->from = optarg;
        else if (opt == 'l')
            rc = cli_number("inbox", "--limit", optarg, 0, LIMIT_MAX, &a->limit);
        else if (opt == 'a')
            rc = cli_number("inbox", "--after", optarg, 0, LONG_MAX, &a->after);
        else if (opt == 'n')
            rc = cli_number("inbox", "--count", optarg, 1, LIMIT_MAX, &a->count);
        else if (opt == 't')
            rc = cli_number("inbox", "--timeout", optarg, 1, 86400L * 366, &a->timeout);
        else
            rc = EXIT_USAGE;
    }
    return rc;
}

/* Refuses an option the subcommand has no use for (allowed: the letters it takes). */
static int inbox_check_options(const char *sub, const inbox_args *a, const char *allowed)
{
    static const struct {
        char letter;
        const char *name;
    } NAMES[] = {{'l', "--limit"}, {'a', "--after"},   {'u', "--unacked"},
                 {'n', "--count"}, {'t', "--timeout"}, {'f', "--from"}};
    for (const char *g = a->given; *g; g++) {
        if (strchr(allowed, *g))
            continue;
        for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++)
            if (NAMES[i].letter == *g)
                return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                                "refex inbox %s: %s is not an option of %s (see refex inbox "
                                "--help)\n",
                                sub, NAMES[i].name, sub);
    }
    return EXIT_OK;
}

static int call_inbox_query(refex_client *c, const void *arg, char **out)
{
    const inbox_args *a = arg;
    return refex_client_inbox_query(c, a->after, a->limit, a->unacked, out);
}

/* A message id and, if given (--from), its sender. */
typedef struct {
    const char *id, *from;
} by_sender;

static int call_inbox_show(refex_client *c, const void *arg, char **out)
{
    const by_sender *k = arg;
    return k->from ? refex_client_inbox_show_from(c, k->id, k->from, out)
                   : refex_client_inbox_show(c, k->id, out);
}

static int call_inbox_ack(refex_client *c, const void *arg, char **out)
{
    const by_sender *k = arg;
    return k->from ? refex_client_inbox_ack_from(c, k->id, k->from, out)
                   : refex_client_inbox_ack(c, k->id, out);
}

static void print_inbox_message(const json_t *m)
{
    char t[32];
    cli_format_time(t, sizeof t, (long long)json_integer_value(json_object_get(m, "received_ms")));
    printf("message   %s\nfrom      %s\ntype      %s\ncase      %s\nreceived  %s\n"
           "envelope  sha256:%s\nverified  signature and encryption OK\nbody:\n",
           cli_str(m, "message_id"), cli_str(m, "sender"), cli_str(m, "type"),
           cli_str(m, "case_ref"), t, cli_str(m, "envelope_hash"));
    cli_print_json(json_object_get(m, "body"));
}

/* One inbox entry as a table row. */
static void print_inbox_row(const json_t *m)
{
    char t[32], sum[41];
    cli_format_time(t, sizeof t, (long long)json_integer_value(json_object_get(m, "received_ms")));
    cli_short_text(sum, sizeof sum, cli_str(json_object_get(m, "body"), "summary"));
    const char *c = cli_str(m, "case_ref");
    printf("%-7lld %-21s %-18s %-20s %-12s %-32s %-5s %s\n",
           (long long)json_integer_value(json_object_get(m, "cursor")), t, cli_str(m, "sender"),
           cli_str(m, "type"), c && *c ? c : "-", cli_str(m, "message_id"),
           json_is_true(json_object_get(m, "acked")) ? "yes" : "no", sum);
}

static void print_inbox_table(const json_t *msgs, const inbox_args *a)
{
    json_t *m;
    size_t i;
    printf("%-7s %-21s %-18s %-20s %-12s %-32s %-5s %s\n", "CURSOR", "RECEIVED", "FROM", "TYPE",
           "CASE", "MESSAGE ID", "ACKED", "SUMMARY");
    json_array_foreach(msgs, i, m)
    {
        print_inbox_row(m);
    }
    if (json_array_size(msgs) > 0)
        return;
    if (a->after)
        printf("(no %smessages after cursor %ld)\n", a->unacked ? "unacknowledged " : "", a->after);
    else
        printf(a->unacked ? "(no unacknowledged messages)\n" : "(inbox is empty)\n");
}

static int inbox_ack(const char *id, const inbox_args *a)
{
    json_t *reply = NULL;
    by_sender k = {id, a->from};
    int rc = cli_call(10000, call_inbox_ack, &k, &reply);
    if (rc != EXIT_OK)
        return rc;
    if (a->json)
        cli_print_json(reply);
    else
        printf("%s %s\n",
               json_is_true(json_object_get(reply, "already")) ? "already acked" : "acked",
               cli_str(reply, "id"));
    json_decref(reply);
    return EXIT_OK;
}

/* ---- inbox watch ---------------------------------------------------------------------- */

static volatile sig_atomic_t watch_stopping;

static void on_stop_signal(int sig)
{
    (void)sig;
    watch_stopping = 1;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct {
    const inbox_args *a;
    long printed;
    long long idle_until; /* --timeout: when to stop if nothing new comes; 0: never */
    int lost;             /* the agent went away: said so on stderr */
} watch_state;

/* Prints a page's entries, one line each, flushed (taking text); true when --count is
 * reached. */
static int watch_print(watch_state *w, char *text)
{
    json_error_t jerr;
    json_t *r = json_loads(text, 0, &jerr), *m;
    size_t i;
    int done = 0;
    refex_client_free(text);
    json_array_foreach(json_object_get(r, "messages"), i, m)
    {
        if (w->a->unacked && json_is_true(json_object_get(m, "acked")))
            continue;
        if (w->a->json) {
            char *line = json_dumps(m, JSON_COMPACT);
            if (line)
                printf("%s\n", line);
            free(line);
        } else {
            print_inbox_row(m);
        }
        fflush(stdout);
        if (w->a->count && ++w->printed >= w->a->count) {
            done = 1;
            break;
        }
    }
    json_decref(r);
    return done;
}

/* One look at the watch: 1 to stop (the count reached), 0 to poll, or an exit code + 2
 * for a refusal that retrying cannot mend. *ready says whether the descriptor is worth
 * polling (otherwise only a pause before the next try). */
static int watch_step(refex_client *c, watch_state *w, int *ready)
{
    char *text = NULL;
    int rc;
    while ((rc = refex_client_watch_next(c, &text)) == REFEX_OK) {
        if (w->lost)
            fprintf(stderr, "refex inbox watch: the agent is back; going on\n");
        w->lost = 0;
        if (w->a->timeout)
            w->idle_until = mono_ms() + w->a->timeout * 1000LL;
        if (watch_print(w, text))
            return 1;
    }
    *ready = rc == REFEX_E_TIMEOUT;
    if (rc == REFEX_E_UNAVAILABLE && !w->lost) {
        fprintf(stderr, "refex inbox watch: %s; reconnecting\n", refex_client_error_detail(c));
        w->lost = 1;
    } else if (rc == REFEX_E_INVAL || rc == REFEX_E_JSON) {
        json_error_t jerr;
        json_t *reply = text ? json_loads(text, 0, &jerr) : NULL;
        int ex = reply
                     ? cli_print_error(reply)
                     : cli_fail(EXIT_FAIL, refex_errname(rc), "refex: %s\n", refex_client_error(c));
        json_decref(reply);
        refex_client_free(text);
        return ex + 2;
    } else if (rc != REFEX_E_TIMEOUT && rc != REFEX_E_UNAVAILABLE) {
        fprintf(stderr, "refex inbox watch: %s; trying again\n", refex_client_error(c));
    }
    refex_client_free(text);
    return 0;
}

static int inbox_watch(const inbox_args *a)
{
    refex_client *c = NULL;
    watch_state w = {a, 0, 0, 0};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal; /* no SA_RESTART: poll returns, and the loop ends */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = cli_client_open(&c, 10000);
    if (rc != EXIT_OK)
        return rc;
    if ((rc = refex_client_watch_start(c, a->after)) != REFEX_OK) {
        rc = cli_fail(rc == REFEX_E_INVAL ? EXIT_FAIL : EXIT_NOAGENT, refex_errname(rc),
                      "refex: %s\n", refex_client_error_detail(c));
        refex_client_close(&c);
        return rc;
    }
    if (a->timeout)
        w.idle_until = mono_ms() + a->timeout * 1000LL;
    rc = EXIT_OK;
    while (!watch_stopping) {
        int ready = 0, step = watch_step(c, &w, &ready), fd = -1;
        if (step) {
            rc = step == 1 ? EXIT_OK : step - 2;
            break;
        }
        long long now = mono_ms(), ms = 1000;
        if (w.idle_until && now >= w.idle_until)
            break;
        if (w.idle_until && w.idle_until - now < ms)
            ms = w.idle_until - now;
        struct pollfd p = {.fd = -1, .events = POLLIN};
        if (ready && refex_client_fd(c, &fd) == REFEX_OK)
            p.fd = fd;
        poll(&p, 1, (int)ms);
    }
    refex_client_watch_stop(c);
    refex_client_close(&c);
    return rc;
}

/* ---- inbox: the command --------------------------------------------------------------- */

static int inbox_usage(int help, int bad)
{
    fprintf(cli_usage_stream(help && !bad),
            "usage: refex [-c AGENT.conf] inbox list [--after CURSOR] [--limit N] [--unacked]"
            " [--json]\n"
            "       refex [-c AGENT.conf] inbox show MESSAGE_ID [--from SENDER] [--json]\n"
            "       refex [-c AGENT.conf] inbox ack MESSAGE_ID [--from SENDER] [--json]\n"
            "       refex [-c AGENT.conf] inbox watch [--after CURSOR] [--unacked] [--json]\n"
            "                                         [--count N] [--timeout SEC]\n"
            "\n"
            "Messages this agency received: verified, decrypted and recorded in the\n"
            "audit log before they were acknowledged to the sender, in the order they\n"
            "came. Each has a cursor, a number that only grows: --after CURSOR shows\n"
            "only those that came after it, --limit the first N (0: all), --unacked\n"
            "those not acknowledged yet. 'show' prints the whole body. 'ack' says the\n"
            "message is now in this system's own records (audited once; it stays in\n"
            "the inbox). For show and ack, --from SENDER names whose message it is when\n"
            "two senders used one message id. 'watch' prints the messages after CURSOR (default: "
            "all),\n"
            "then each new one as it comes, one line each (one JSON object per line\n"
            "with --json), until interrupted, --count N printed, or --timeout SEC\n"
            "without a new one. Restarted with --after the last cursor printed, it\n"
            "prints exactly what it missed.\n");
    return help && !bad ? EXIT_OK : EXIT_USAGE;
}

/* inbox list and inbox show: one query, printed as a table, a message or JSON. */
static int inbox_query(const char *id, const inbox_args *a)
{
    json_t *reply = NULL;
    by_sender k = {id, a->from};
    int rc = id ? cli_call(10000, call_inbox_show, &k, &reply)
                : cli_call(10000, call_inbox_query, a, &reply);
    if (rc != EXIT_OK)
        return rc;
    json_t *msgs = json_object_get(reply, "messages");
    if (a->json)
        cli_print_json(id ? json_array_get(msgs, 0) : msgs);
    else if (id)
        print_inbox_message(json_array_get(msgs, 0));
    else
        print_inbox_table(msgs, a);
    json_decref(reply);
    return EXIT_OK;
}

static int sub_list(const char *arg, const inbox_args *a)
{
    (void)arg;
    return inbox_query(NULL, a);
}

static int sub_show(const char *id, const inbox_args *a)
{
    return inbox_query(id, a);
}

static int sub_watch(const char *arg, const inbox_args *a)
{
    (void)arg;
    return inbox_watch(a);
}

int cmd_inbox(int argc, char **argv)
{
    inbox_args a = {0};
    int bad = inbox_options(argc, argv, &a) != EXIT_OK;
    int words = argc - optind;
    if (bad || words < 1 || a.help)
        return inbox_usage(a.help, bad);
    const char *sub = argv[optind];
    /* name, the options it takes (by letter), its words (with the name), handler */
    static const struct {
        const char *name, *options;
        int words;
        int (*fn)(const char *arg, const inbox_args *a);
    } SUBS[] = {{"list", "lau", 1, sub_list},
                {"show", "f", 2, sub_show},
                {"ack", "f", 2, inbox_ack},
                {"watch", "aunt", 1, sub_watch}};
    size_t k = 0;
    while (k < sizeof SUBS / sizeof SUBS[0] && strcmp(SUBS[k].name, sub) != 0)
        k++;
    if (k == sizeof SUBS / sizeof SUBS[0])
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex inbox: unknown subcommand '%s'\n", sub);
    if (words != SUBS[k].words) {
        if (SUBS[k].words == 2)
            return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex inbox %s: give one MESSAGE_ID\n", sub);
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex inbox %s: unknown argument '%s'\n", sub,
                        argv[optind + 1]);
    }
    if (inbox_check_options(sub, &a, SUBS[k].options) != EXIT_OK)
        return EXIT_USAGE;
    return SUBS[k].fn(SUBS[k].words == 2 ? argv[optind + 1] : NULL, &a);
}

static void print_outbox_table(const json_t *msgs)
{
    json_t *m;
    size_t i;
    printf("%-21s %-24s %-20s %-32s %-16s %s\n", "CREATED", "TO", "TYPE", "MESSAGE ID", "LOCAL ID",
           "STATE");
    json_array_foreach(msgs, i, m)
    {
        char t[32];
        cli_format_time(t, sizeof t,
                        (long long)json_integer_value(json_object_get(m, "created_ms")));
        const char *local = cli_str(m, "local_id");
        printf("%-21s %-24s %-20s %-32s %-16s %s%s%s\n", t, cli_str(m, "recipients"),
               cli_str(m, "type"), cli_str(m, "message_id"), *local ? local : "-",
               cli_str(m, "state"),
               json_integer_value(json_object_get(m, "error_code")) ? ": " : "",
               cli_str(m, "error_detail"));
    }
}

int cmd_outbox(int argc, char **argv)
{
    list_args a = {0};
    json_t *reply = NULL;
    int bad = list_options("outbox", argc, argv, &a, 0) != EXIT_OK;
    if (bad || a.help || argc - optind != 1 || strcmp(argv[optind], "list") != 0) {
        fprintf(cli_usage_stream(a.help && !bad),
                "usage: refex [-c AGENT.conf] outbox list [--json]\n"
                "\n"
                "Messages this agency sent, with their state: pending (not yet stored by\n"
                "the broker), stored, or rejected with the broker's typed error, and the\n"
                "local id each was sent under (send --local-id), '-' if none.\n");
        return a.help && !bad ? EXIT_OK : EXIT_USAGE;
    }
    int rc = cli_call(10000, call_outbox, NULL, &reply);
    if (rc != EXIT_OK)
        return rc;
    json_t *msgs = json_object_get(reply, "messages");
    if (a.json)
        cli_print_json(msgs);
    else
        print_outbox_table(msgs);
    json_decref(reply);
    return EXIT_OK;
}

static void print_audit_table(const json_t *entries)
{
    json_t *e;
    size_t i;
    printf("%-5s %-21s %-12s %-16s %-18s %-20s %-32s %-12s %s\n", "SEQ", "TIME", "EVENT", "OUTCOME",
           "PEER", "TYPE", "MESSAGE ID", "CASE", "LAWFUL BASIS");
    json_array_foreach(entries, i, e)
    {
        char t[32];
        cli_format_time(t, sizeof t, (long long)json_integer_value(json_object_get(e, "time_ms")));
        const char *c = cli_str(e, "case_ref");
        printf("%-5lld %-21s %-12s %-16s %-18s %-20s %-32s %-12s %s + %s\n",
               (long long)json_integer_value(json_object_get(e, "seq")), t, cli_str(e, "event"),
               cli_str(e, "outcome"), cli_str(e, "peer"), cli_str(e, "message_type"),
               cli_str(e, "message_id"), c && *c ? c : "-", cli_str(e, "article6"),
               cli_str(e, "article9"));
    }
}

int cmd_audit_list(int argc, char **argv)
{
    list_args a = {0};
    json_t *reply = NULL;
    /* argv[0] is "audit", argv[1] "list": options start after the subcommand. */
    int bad = list_options("audit list", argc - 1, argv + 1, &a, 1) != EXIT_OK;
    if (!bad && !a.help && optind + 1 < argc) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex audit list: unknown argument '%s'\n",
                        argv[optind + 1]);
    }
    if (bad || a.help) {
        fprintf(cli_usage_stream(a.help && !bad),
                "usage: refex [-c AGENT.conf] audit list [--limit N] [--json]\n"
                "\n"
                "This agency's audit log, oldest first: every send, receive and refusal,\n"
                "with peer agency, message id and type, case reference, envelope hash,\n"
                "purpose, lawful basis (UK GDPR Art. 6 and Art. 9) and consent status.\n"
                "People appear only as references. --json adds each entry's leaf hash.\n");
        return a.help && !bad ? EXIT_OK : EXIT_USAGE;
    }
    int rc = cli_call(10000, call_audit_list, &a.limit, &reply);
    if (rc != EXIT_OK)
        return rc;
    json_t *entries = json_object_get(reply, "entries");
    if (a.json)
        cli_print_json(entries);
    else
        print_audit_table(entries);
    json_decref(reply);
    return EXIT_OK;
}
