/* refex: the command line for operators, agencies and auditors. Key and directory
 * commands work on files; message commands talk to the local agent over its control
 * socket. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"
#include "util.h"

const char *cli_config;

static void usage(FILE *out)
{
    fprintf(out, "usage: refex [-c AGENT.conf] COMMAND [ARGS]\n"
                 "\n"
                 "refex moves signed, end-to-end encrypted referrals and information-sharing\n"
                 "messages between safeguarding agencies, and keeps a tamper-evident audit log.\n"
                 "\n"
                 "Set-up (operator):\n"
                 "  keys new        create an agency's signing, encryption and transport keys\n"
                 "  directory       init | add | sign | show the signed agency directory\n"
                 "\n"
                 "Messages (talk to the local refex-agent named by -c):\n"
                 "  send            seal and send a referral or other message\n"
                 "  inbox           list | show | ack | watch: received messages, decrypted;\n"
                 "                  ack: taken into your records; watch: a stream as they come\n"
                 "  outbox          list sent messages and whether the broker stored them\n"
                 "  audit           list this agency's audit log\n"
                 "  status          is the agent running and connected? status MSGID: where a\n"
                 "                  message is; status --overdue: overdue information requests\n"
                 "  referrals       the referrals sent, with receipts and decisions\n"
                 "  case            grant | revoke | members | publish: case membership, updates\n"
                 "  requests        the information requests sent: open, answered, overdue\n"
                 "\n"
                 "Options:\n"
                 "  -c FILE         the agent's configuration file (or set REFEX_CONFIG)\n"
                 "  -h, --help      help; 'refex COMMAND --help' for each command\n"
                 "  --version       print the version and exit\n"
                 "  --json          (every command) results as JSON on stdout, and any\n"
                 "                  failure as one object {\"ok\":false,\"error\":...}\n"
                 "\n"
                 "Exit status:\n"
                 "  0  success\n"
                 "  1  the operation was refused or failed; the typed error is printed\n"
                 "  2  usage error\n"
                 "  3  the agent is not running or did not answer; for 'status', also\n"
                 "     when the agent runs but is not connected to its broker\n"
                 "  4  key, directory or configuration problem\n"
                 "\n"
                 "Example:\n"
                 "  refex -c midwifery.conf send --to social-care --type referral \\\n"
                 "        --body referral.json --wait\n");
}

/* The usage text on stderr (not under --json: stdout has the error object) and exit 2. */
static int usage_error(void)
{
    if (!cli_json)
        usage(stderr);
    return cli_json_finish(NULL, EXIT_USAGE);
}

int main(int argc, char **argv)
{
    refex_log_set_ident("refex");
    /* Before any option is parsed, so that even a usage error can be one JSON object. */
    cli_json = cli_json_scan(argc, argv);
    if (refex_init() != REFEX_OK)
        return cli_fail(EXIT_FAIL, "E_CRYPTO", "refex: libsodium failed to initialise\n");
    cli_config = getenv("REFEX_CONFIG");
    /* Options before the command only ('+'): the command parses its own. */
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+:c:h", opts, NULL)) != -1) {
        if (opt == 'c') {
            cli_config = optarg;
        } else if (opt == 'h') {
            usage(stdout);
            return EXIT_OK;
        } else if (opt == 'V') {
            printf("refex %s\n", REFEX_VERSION);
            return EXIT_OK;
        } else {
            cli_fail(EXIT_USAGE, CLI_E_USAGE,
                     opt == ':' ? "refex: option '%s' needs a value\n\n"
                                : "refex: unknown option '%s'\n\n",
                     argv[optind - 1]);
            return usage_error();
        }
    }
    int i = optind;
    if (i >= argc)
        return usage_error();
    const char *cmd = argv[i];
    int sub_argc = argc - i;
    char **sub_argv = argv + i;
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"keys", cmd_keys},     {"directory", cmd_directory}, {"send", cmd_send},
                {"inbox", cmd_inbox},   {"outbox", cmd_outbox},       {"audit", cmd_audit},
                {"status", cmd_status}, {"referrals", cmd_referrals}, {"requests", cmd_requests},
                {"case", cmd_case}};
    for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++)
        if (strcmp(cmd, cmds[k].name) == 0)
            return cli_json_finish(cmd, cmds[k].fn(sub_argc, sub_argv));
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex: unknown command '%s'\n\n", cmd);
    return usage_error();
}
