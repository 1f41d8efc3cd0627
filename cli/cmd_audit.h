/* What the `refex audit` commands (cmd_audit*.c) share: option parsing with getopt_long,
 * opening a log to read, telling the agent its log was read, and an entry as JSON. Not
 * for other commands, and never SQL: the log is read through lib/audit_reader.h. */
#ifndef REFEX_CLI_CMD_AUDIT_H
#define REFEX_CLI_CMD_AUDIT_H

#include <getopt.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "audit_reader.h"

/* getopt_long over one subcommand's arguments (argv[1] onwards: argv[0] is "audit").
 * `--opt value` and `--opt=value` both work; long options must be spelt in full. */
typedef struct {
    const char *cmd;               /* "query", for messages */
    int argc;                      /* as given to the subcommand */
    char **argv;                   /* argv[0] = "audit", argv[1] = the subcommand */
    const char *shortopts;         /* e.g. "c:" for -c FILE, or "" */
    const struct option *longopts; /* terminated by a zero row */
    int state;                     /* 0 before the first call */
} cli_audit_opts;

/* The next option's val with its value in *arg, 1 with *arg for a positional argument, -1
 * at the end, or '?' after printing a usage error that names the option. */
int cli_audit_getopt(cli_audit_opts *o, const char **arg);
/* Prints "refex audit CMD: unknown argument 'ARG' (see --help)"; returns EXIT_USAGE. */
int cli_audit_unknown(const char *cmd, const char *arg);

/* Strict decimal, 0..UINT64_MAX/2 (seqs and sizes are SQLite int64); -1 if not. */
int cli_audit_parse_count(const char *s, uint64_t *out);
/* EXIT_OK if path is a regular file; else prints why and returns EXIT_FAIL. */
int cli_audit_check_file(const char *cmd, const char *path);
/* Opens the log to read: --db FILE, or (telling the agent) the agent's own; path gets
 * which. Prints why not and returns an exit code. */
int cli_audit_log_open(const char *cmd, const char *db_arg, refex_audit_reader **out, char *path,
                       size_t len);
/* Asks the running agent to record that its log was read by `what`. */
void cli_audit_tell_agent(const char *what);
/* When stderr is a terminal: a progress line as r verifies (entries done / total, rate),
 * labelled what; nothing otherwise. */
void cli_audit_progress(refex_audit_reader *r, const char *what);
/* After the verify: ends a progress line that a failure left open. */
void cli_audit_progress_end(void);

/* "-" for an empty value, in tables. */
const char *cli_audit_dash(const char *s);
/* Base64 of n bytes as a JSON string (NULL if out of memory). */
json_t *cli_audit_b64(const void *p, size_t n);
/* The entry's 14 text fields, in table order, and their column names. */
#define CLI_AUDIT_NFIELDS 14
extern const char *const CLI_AUDIT_FIELDS[CLI_AUDIT_NFIELDS];
void cli_audit_fields(const refex_audit_row *row, const char *out[CLI_AUDIT_NFIELDS]);
/* seq, time_ms, every field and the leaf hash in hex; with leaf, also the entry's
 * canonical bytes in base64. */
json_t *cli_audit_row_json(const refex_audit_row *row, int leaf);

#endif
