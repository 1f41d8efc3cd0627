/* `refex status`, `refex referrals` and `refex requests`: whether the agent is up, where
 * one sent message is, and how the referrals and information requests sent are doing. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "refex/client.h"
#include "refex/error.h"

static int call_status(refex_client *c, const void *id, char **out)
{
    return id ? refex_client_message_status(c, id, out) : refex_client_status(c, out);
}

static int call_referrals(refex_client *c, const void *arg, char **out)
{
    (void)arg;
    return refex_client_referrals(c, out);
}

static int call_requests(refex_client *c, const void *overdue, char **out)
{
    return refex_client_requests(c, *(const int *)overdue, out);
}

static const struct option OPTS[] = {{"json", no_argument, 0, 'j'},
                                     {"overdue", no_argument, 0, 'o'},
                                     {"help", no_argument, 0, 'h'},
                                     {0, 0, 0, 0}};

typedef struct {
    int json, overdue, help;
} status_args;

/* Options; the words left over are argv[optind..argc). EXIT_USAGE for a bad option. */
static int parse(const char *cmd, int argc, char **argv, status_args *a)
{
    int opt;
    cli_getopt_reset();
    while ((opt = cli_getopt(cmd, argc, argv, OPTS)) != -1) {
        if (opt == 'j')
            a->json = 1;
        else if (opt == 'o')
            a->overdue = 1;
        else if (opt == 'h')
            a->help = 1;
        else
            return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* The entry of array `key` of m whose "recipient" is who, or NULL. */
static const json_t *for_recipient(const json_t *m, const char *key, const char *who)
{
    const json_t *found = NULL, *r;
    size_t i;
    json_array_foreach(json_object_get(m, key), i, r)
    {
        if (strcmp(cli_str(r, "recipient"), who) == 0)
            found = r;
    }
    return found;
}

/* One recipient's line, from its receipt; "awaiting delivery" where none has come yet, and
 * EXPIRED, NO REPORT where none came by the expiry (the agent lists only those). */
static void print_recipient(const json_t *m, const char *who, const char *state)
{
    const json_t *found = for_recipient(m, "receipts", who);
    const json_t *lost = for_recipient(m, "no_report", who);
    char t[32];
    if (!found && lost) {
        cli_format_time(t, sizeof t,
                        (long long)json_integer_value(json_object_get(lost, "expires_ms")));
        printf("  %-20s EXPIRED, NO REPORT (expired %s)\n", who, t);
        return;
    }
    if (!found) {
        printf("  %-20s %s\n", who, strcmp(state, "stored") == 0 ? "awaiting delivery" : "-");
        return;
    }
    cli_format_time(t, sizeof t, (long long)json_integer_value(json_object_get(found, "time_ms")));
    int code = (int)json_integer_value(json_object_get(found, "code"));
    const char *signer = cli_str(found, "signer");
    if (code == 0)
        printf("  %-20s delivered %s (receipt signed by %s)\n", who, t, signer);
    else if (code == REFEX_E_EXPIRED)
        printf("  %-20s NOT delivered: expired %s (non-delivery report signed by %s)\n", who, t,
               signer);
    else
        printf("  %-20s refused by the recipient %s: %s (signed by %s)\n", who, t,
               refex_errname(code), signer);
}

/* Some recipient sent neither a receipt nor a non-delivery report by the expiry. */
static void print_no_report_state(const json_t *m)
{
    const json_t *lost = json_object_get(m, "no_report"), *r;
    json_int_t latest = 0;
    size_t i;
    char t[32];
    json_array_foreach(lost, i, r)
    {
        json_int_t e = json_integer_value(json_object_get(r, "expires_ms"));
        latest = e > latest ? e : latest;
    }
    cli_format_time(t, sizeof t, (long long)latest);
    printf("state      expired, no report: neither a receipt nor a non-delivery report came for "
           "%zu recipient(s) by %s; the broker may have lost it (see docs/operations.md)\n",
           json_array_size(lost), t);
}

static void print_message_status(const json_t *m)
{
    const char *state = cli_str(m, "state");
    char t[32];
    cli_format_time(t, sizeof t, (long long)json_integer_value(json_object_get(m, "created_ms")));
    printf("message    %s\n", cli_str(m, "message_id"));
    if (*cli_str(m, "local_id"))
        printf("local id   %s\n", cli_str(m, "local_id"));
    printf("type       %s\ncase       %s\ncreated    %s\n", cli_str(m, "type"),
           cli_str(m, "case_ref"), t);
    if (strcmp(state, "pending") == 0)
        printf("state      queued locally: the broker has not stored it yet (retrying)\n");
    else if (strcmp(state, "rejected") == 0)
        printf("state      rejected by the broker: %s (%s)\n",
               refex_errname((int)json_integer_value(json_object_get(m, "error_code"))),
               cli_str(m, "error_detail"));
    else if (strcmp(state, "expired_no_report") == 0)
        print_no_report_state(m);
    else
        printf("state      stored at the broker\n");
    char *rc = strdup(cli_str(m, "recipients")), *save = NULL;
    for (char *who = rc ? strtok_r(rc, ",", &save) : NULL; who; who = strtok_r(NULL, ",", &save))
        print_recipient(m, who, state);
    free(rc);
}

int cmd_status(int argc, char **argv)
{
    status_args a = {0};
    json_t *reply = NULL;
    int bad = parse("status", argc, argv, &a) != EXIT_OK;
    if (!bad && a.overdue)
        return cmd_requests(argc, argv);
    int words = argc - optind;
    if (bad || words > 1 || a.help) {
        fprintf(cli_usage_stream(a.help && !bad),
                "usage: refex [-c AGENT.conf] status [MESSAGE_ID | LOCAL_ID] [--json]\n"
                "\n"
                "Without an id: whether the agent is running and connected to its broker.\n"
                "With the id of a message this agency sent: where it is. Queued locally (not\n"
                "yet stored by the broker), stored at the broker, rejected by the broker with\n"
                "a reason, and for each recipient: delivered (its signed receipt is held),\n"
                "refused by the recipient with a reason, or not delivered before it expired\n"
                "(the broker's signed non-delivery report is held). Expired, no report: the\n"
                "message's expiry passed (by the agent's report_grace_seconds) with neither a\n"
                "receipt nor a non-delivery report from a recipient, so the broker may have\n"
                "lost it; the agent logged an ALERT line and audited it (no-report). A receipt\n"
                "that still comes later is shown instead. A message may also be\n"
                "named by the local id it was sent under (send --local-id); a 32-hex id is\n"
                "tried as a message id first.\n"
                "\n"
                "Exit status 3 when the agent is not running, and also when it runs but is\n"
                "not connected to its broker.\n");
        return a.help && !bad ? EXIT_OK : EXIT_USAGE;
    }
    int rc = cli_call(5000, call_status, words == 1 ? argv[optind] : NULL, &reply);
    if (rc != EXIT_OK)
        return rc;
    /* Running but cut off from the broker is "no agent" to a supervisor: nothing it sends
     * leaves the machine. */
    rc = words == 0 && !json_is_true(json_object_get(reply, "online")) ? EXIT_NOAGENT : EXIT_OK;
    if (a.json)
        cli_print_json(reply);
    else if (words == 1)
        print_message_status(reply);
    else
        printf("agent %s: %s broker %s\n", cli_str(reply, "agency"),
               rc == EXIT_OK ? "connected to" : "NOT connected to", cli_str(reply, "broker"));
    json_decref(reply);
    return rc;
}

static void print_referrals(const json_t *rows)
{
    json_t *r;
    size_t i;
    printf("%-21s %-18s %-32s %-28s %s\n", "SENT", "TO", "MESSAGE ID", "STATUS", "DETAIL");
    json_array_foreach(rows, i, r)
    {
        char t[32], detail[128] = "";
        cli_format_time(t, sizeof t,
                        (long long)json_integer_value(json_object_get(r, "created_ms")));
        const char *c = cli_str(r, "case_ref_assigned");
        const char *why = cli_str(r, "reason");
        if (c && *c)
            snprintf(detail, sizeof detail, "case %s", c);
        else if (why && *why)
            cli_short_text(detail, sizeof detail, why);
        printf("%-21s %-18s %-32s %-28s %s\n", t, cli_str(r, "recipients"),
               cli_str(r, "message_id"), cli_str(r, "status"), detail);
    }
    if (json_array_size(rows) == 0)
        printf("(no referrals sent)\n");
}

int cmd_referrals(int argc, char **argv)
{
    status_args a = {0};
    json_t *reply = NULL;
    int bad = parse("referrals", argc, argv, &a) != EXIT_OK || a.overdue;
    if (bad || a.help || optind != argc) {
        if (a.overdue)
            cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex referrals: unknown option '--overdue'\n");
        fprintf(cli_usage_stream(a.help && !bad),
                "usage: refex [-c AGENT.conf] referrals [--json]\n"
                "\n"
                "The referrals this agency made and where each stands: queued locally,\n"
                "stored at the broker, received (the recipient's signed receipt is held),\n"
                "then the recipient's decision: accepted (with the new case reference),\n"
                "declined (with the reason), or more information needed. A decision is\n"
                "matched by its referral_message_id. Expired, no report: it expired with\n"
                "neither a receipt nor a non-delivery report (the broker may have lost it;\n"
                "see refex status MESSAGE_ID).\n");
        return a.help && !bad ? EXIT_OK : EXIT_USAGE;
    }
    int rc = cli_call(10000, call_referrals, NULL, &reply);
    if (rc != EXIT_OK)
        return rc;
    json_t *rows = json_object_get(reply, "referrals");
    if (a.json)
        cli_print_json(rows);
    else
        print_referrals(rows);
    json_decref(reply);
    return EXIT_OK;
}

static void print_requests(const json_t *rows, int overdue)
{
    json_t *r;
    size_t i;
    printf("%-12s %-18s %-24s %-12s %-32s %s\n", "DUE", "TO", "REQUEST ID", "CASE", "MESSAGE ID",
           "STATUS");
    json_array_foreach(rows, i, r)
    {
        const char *due = cli_str(r, "due_date");
        const char *c = cli_str(r, "case_ref");
        printf("%-12s %-18s %-24s %-12s %-32s %s\n", due && *due ? due : "-",
               cli_str(r, "recipients"), cli_str(r, "request_id"), c && *c ? c : "-",
               cli_str(r, "message_id"), cli_str(r, "status"));
    }
    if (json_array_size(rows) == 0)
        printf(overdue ? "(no overdue requests)\n" : "(no requests sent)\n");
}

/* Also `refex status --overdue`, so argv[0] may be "status". */
int cmd_requests(int argc, char **argv)
{
    status_args a = {0};
    json_t *reply = NULL;
    const char *cmd = strcmp(argv[0], "status") == 0 ? "status" : "requests";
    int bad = parse(cmd, argc, argv, &a) != EXIT_OK;
    if (bad || a.help || optind != argc) {
        fprintf(cli_usage_stream(a.help && !bad),
                "usage: refex [-c AGENT.conf] requests [--overdue] [--json]\n"
                "       refex [-c AGENT.conf] status --overdue [--json]\n"
                "\n"
                "Information requests this agency sent, by due date: open, answered,\n"
                "declined (a refusal to share is also a response), or overdue (past the\n"
                "due date with no response). A response is matched by its request_id.\n");
        return a.help && !bad ? EXIT_OK : EXIT_USAGE;
    }
    int rc = cli_call(10000, call_requests, &a.overdue, &reply);
    if (rc != EXIT_OK)
        return rc;
    json_t *rows = json_object_get(reply, "requests");
    if (a.json)
        cli_print_json(rows);
    else
        print_requests(rows, a.overdue);
    json_decref(reply);
    return EXIT_OK;
}
