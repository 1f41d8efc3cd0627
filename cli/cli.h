/* Shared pieces of the refex command line: exit codes, the agent control client,
 * option helpers. */
#ifndef REFEX_CLI_H
#define REFEX_CLI_H

#include <jansson.h>
#include <stdio.h>

/* Exit codes, documented in `refex --help` and README.md. */
enum {
    EXIT_OK = 0,
    EXIT_FAIL = 1,    /* the operation was refused or failed (typed error printed) */
    EXIT_USAGE = 2,   /* bad command line */
    EXIT_NOAGENT = 3, /* the agent is not running or did not answer */
    EXIT_KEYS = 4,    /* key, directory or configuration problem */
};

extern const char *cli_config; /* -c FILE, or $REFEX_CONFIG */

int cmd_keys(int argc, char **argv);
int cmd_directory(int argc, char **argv);
int cmd_directory_policy(int argc, char **argv); /* cli/cmd_policy.c */
int cmd_keys_rotate(int argc, char **argv);      /* cli/cmd_rotate.c */
int cmd_directory_rotate(int argc, char **argv); /* cli/cmd_rotate.c */
int cmd_send(int argc, char **argv);
int cmd_inbox(int argc, char **argv);
int cmd_outbox(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_audit_list(int argc, char **argv);
int cmd_audit_query(int argc, char **argv);
int cmd_audit_export(int argc, char **argv);
int cmd_audit_proof(int argc, char **argv);
int cmd_audit_reconcile(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_referrals(int argc, char **argv);
int cmd_case(int argc, char **argv);
int cmd_requests(int argc, char **argv);

/* ---- the agent client and option parsing (cli/client.c, cli/options.c) ------------- */

struct option;
typedef struct refex_client refex_client;

/* Opens librefex-client on the agent named by cli_config with a reply timeout; prints why
 * not and returns an exit code (usage, keys/config, or no agent). */
int cli_client_open(refex_client **c, int timeout_ms);
/* Parses a reply text returned by a library call with code rc (taking the text). NULL
 * text: the agent did not answer (prints the client's error, EXIT_NOAGENT), or the
 * library refused the call itself (EXIT_FAIL). An {"ok":false} reply is EXIT_OK here. */
int cli_client_reply(refex_client *c, int rc, char *text, json_t **reply);
/* One typed library call: fn(c, arg, &text), e.g. refex_client_inbox_list. */
typedef int (*cli_call_fn)(refex_client *c, const void *arg, char **out);
/* Opens the client, makes the call, parses the reply; a failed reply is printed and is
 * EXIT_FAIL. */
int cli_call(int timeout_ms, cli_call_fn fn, const void *arg, json_t **reply);
/* True if tok ("--name" or "--name=value") spells the long option name in full:
 * getopt_long also takes unambiguous prefixes, and a typo that happens to be a prefix
 * should not quietly mean something else. */
int cli_spelt_in_full(const char *name, const char *tok);
/* Call before the first cli_getopt of a command. */
void cli_getopt_reset(void);
/* getopt_long over argv (argv[0] the command's own name) that handles -c FILE itself,
 * returns 'h' for -h, and on an unknown option or a missing value prints a message naming
 * it and returns '?' (a usage error). */
int cli_getopt(const char *cmd, int argc, char **argv, const struct option *opts);
/* A whole number in [min, max] into *out: 0, or -1 (nothing printed) if arg is not one. */
int cli_parse_long(const char *arg, long min, long max, long *out);
/* Parses a whole number in [min, max] for option opt; prints and returns EXIT_USAGE if
 * it is not one. */
int cli_number(const char *cmd, const char *opt, const char *arg, long min, long max, long *out);
/* s, one line, cut to len with "..." (cli/output.c). */
void cli_short_text(char *out, size_t len, const char *s);

/* Sends one JSON request to the agent named by cli_config and returns its reply in
 * *reply. Returns an exit code; prints the reason on failure. */
int cli_agent_request(json_t *req, json_t **reply, int timeout_ms);
/* ---- errors, for people or, with --json, for programs (cli/output.c) ---------------- */

/* Set by main when --json is anywhere on the command line (before a "--"): then every
 * failure is one JSON object on stdout, {"ok":false,"error":NAME,"message":TEXT,...}, with
 * the same exit code, and nothing else is printed on stdout. Without it, errors are text
 * on stderr. */
extern int cli_json;
/* Error names of the CLI itself, not wire codes (refex/error.h): a bad command line, and a
 * failure the command gave no more precise name for. */
#define CLI_E_USAGE  "E_USAGE"
#define CLI_E_FAILED "E_FAILED"
/* True if argv[1..] holds a "--json" before any "--". */
int cli_json_scan(int argc, char **argv);
/* Prints one failure and returns exit_code: without --json the formatted text on stderr,
 * exactly as given; with --json its first line, as the object's "message", named error. */
int cli_fail(int exit_code, const char *error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Where a command's usage text goes: stdout when help was asked for; after a usage error
 * stderr, or nowhere under --json (the error object is the whole answer). */
FILE *cli_usage_stream(int help);
/* Prints a failed reply ({"ok":false,...}) and returns EXIT_FAIL. With --json: the reply's
 * fields ("error", "code", "valid", "field", "message_id", ...) with "detail" as "message";
 * without: "refex: ERROR: detail", then the valid values if the reply lists them. */
int cli_print_error(const json_t *reply);
/* main, after a command returned rc: with --json, a failure that printed no JSON object
 * (a path that only wrote text on stderr) gets one now, named after the exit code. */
int cli_json_finish(const char *cmd, int rc);
/* Formats a millisecond Unix time as "YYYY-MM-DD HH:MM:SSZ". */
void cli_format_time(char *buf, size_t len, long long ms);
/* True if argv[i] is -h or --help. */
int cli_wants_help(int argc, char **argv);
/* obj[key] as a string; "" when missing or not a string, so a short reply never crashes a
 * printf or strcmp. */
const char *cli_str(const json_t *obj, const char *key);
/* Prints v as indented JSON and a newline on stdout. */
void cli_print_json(json_t *v);
/* The data_dir of the agent named by cli_config; prints why not and returns an exit code. */
int cli_data_dir(char *buf, size_t len);
/* db if given, else the agent's own agent.db under its data_dir. */
int cli_agent_db(const char *cmd, const char *db, char *buf, size_t len);

/* ---- CSV ---- */
/* Writes one RFC 4180 field (quoted if it holds a comma, quote or line break), then a comma,
 * or CRLF after the last field of a row. */
void cli_csv_field(FILE *f, const char *s, int last);

#endif
