/* `refex inbox`, `refex outbox` and `refex audit list`: what this agency received, sent
 * and recorded, as the local agent reports it, formatted as tables or JSON. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "refex/client.h"

#define LIMIT_MAX 1000000000L

static int call_inbox(refex_client *c, const void *id, char **out)
{
    return id ? refex_client_inbox_show(c, id, out) : refex_client_inbox_list(c, out);
}

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

/* Keeps the first limit entries of arr (all if limit is 0). */
static void truncate_list(json_t *arr, long limit)
{
    while (limit > 0 && json_array_size(arr) > (size_t)limit)
        json_array_remove(arr, json_array_size(arr) - 1);
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

static void print_inbox_table(const json_t *msgs)
{
    json_t *m;
    size_t i;
    printf("%-21s %-18s %-20s %-12s %-32s %s\n", "RECEIVED", "FROM", "TYPE", "CASE", "MESSAGE ID",
           "SUMMARY");
    json_array_foreach(msgs, i, m)
    {
        char t[32], sum[41];
        cli_format_time(t, sizeof t,
                        (long long)json_integer_value(json_object_get(m, "received_ms")));
        cli_short_text(sum, sizeof sum, cli_str(json_object_get(m, "body"), "summary"));
        const char *c = cli_str(m, "case_ref");
        printf("%-21s %-18s %-20s %-12s %-32s %s\n", t, cli_str(m, "sender"), cli_str(m, "type"),
               c && *c ? c : "-", cli_str(m, "message_id"), sum);
    }
    if (json_array_size(msgs) == 0)
        printf("(inbox is empty)\n");
}

int cmd_inbox(int argc, char **argv)
{
    list_args a = {0};
    json_t *reply = NULL;
    int bad = list_options("inbox", argc, argv, &a, 1) != EXIT_OK;
    int words = argc - optind;
    if (bad || words < 1 || a.help) {
        fprintf(cli_usage_stream(a.help && !bad),
                "usage: refex [-c AGENT.conf] inbox list [--limit N] [--json]\n"
                "       refex [-c AGENT.conf] inbox show MESSAGE_ID [--json]\n"
                "\n"
                "Messages this agency received: verified, decrypted and recorded in the\n"
                "audit log before they were acknowledged, oldest first. --limit shows only\n"
                "the first N (0: all). 'show' prints the whole body.\n");
        return a.help && !bad ? EXIT_OK : EXIT_USAGE;
    }
    const char *sub = argv[optind];
    int show = strcmp(sub, "show") == 0;
    if (!show && strcmp(sub, "list") != 0) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex inbox: unknown subcommand '%s'\n", sub);
    }
    if (show && words != 2) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex inbox show: give one MESSAGE_ID\n");
    }
    if (!show && words != 1) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex inbox list: unknown argument '%s'\n",
                        argv[optind + 1]);
    }
    int rc = cli_call(10000, call_inbox, show ? argv[optind + 1] : NULL, &reply);
    if (rc != EXIT_OK)
        return rc;
    json_t *msgs = json_object_get(reply, "messages");
    truncate_list(msgs, a.limit);
    if (a.json)
        cli_print_json(show ? json_array_get(msgs, 0) : msgs);
    else if (show)
        print_inbox_message(json_array_get(msgs, 0));
    else
        print_inbox_table(msgs);
    json_decref(reply);
    return EXIT_OK;
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
