/* Option parsing shared by the CLI's commands: getopt_long with one set of messages, so
 * `--opt=value` and `--opt value` both work everywhere and a bad option is always a usage
 * error that names it. Knows no command's options. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* "--limit=abc" -> "--limit" */
static void option_name(char *buf, size_t len, const char *arg)
{
    snprintf(buf, len, "%s", arg ? arg : "?");
    char *eq = strchr(buf, '=');
    if (eq)
        *eq = '\0';
}

int cli_spelt_in_full(const char *name, const char *tok)
{
    size_t n = strcspn(tok + 2, "=");
    return strlen(name) == n && strncmp(tok + 2, name, n) == 0;
}

int cli_getopt(const char *cmd, int argc, char **argv, const struct option *opts)
{
    char name[128];
    for (;;) {
        int idx = -1;
        int opt = getopt_long(argc, argv, ":c:h", opts, &idx);
        if (opt == 'c') {
            cli_config = optarg;
            continue;
        }
        if (opt != '?' && opt != ':' && idx >= 0) {
            /* The option's own token: before its value if that was a separate argument. */
            const char *tok = argv[optind - 1 - (optarg && optarg == argv[optind - 1])];
            if (cli_spelt_in_full(opts[idx].name, tok))
                return opt;
            option_name(name, sizeof name, tok);
            cli_fail(EXIT_USAGE, CLI_E_USAGE,
                     "refex %s: unknown option '%s' (see refex %s --help)\n", cmd, name, cmd);
            return '?';
        }
        if (opt != '?' && opt != ':')
            return opt;
        if (optopt && optopt < 256 && strncmp(argv[optind - 1], "--", 2) != 0)
            snprintf(name, sizeof name, "-%c", optopt);
        else
            option_name(name, sizeof name, argv[optind - 1]);
        if (opt == ':')
            cli_fail(EXIT_USAGE, CLI_E_USAGE,
                     "refex %s: option '%s' needs a value (see refex %s --help)\n", cmd, name, cmd);
        else
            cli_fail(EXIT_USAGE, CLI_E_USAGE,
                     "refex %s: unknown option '%s' (see refex %s --help)\n", cmd, name, cmd);
        return '?';
    }
}

void cli_getopt_reset(void)
{
    optind = 0; /* glibc and musl: start again from argv[1], forgetting earlier state */
    opterr = 0;
}

int cli_parse_long(const char *arg, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = arg && *arg ? strtol(arg, &end, 10) : 0;
    if (!arg || !*arg || *end || errno || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int cli_number(const char *cmd, const char *opt, const char *arg, long min, long max, long *out)
{
    if (cli_parse_long(arg, min, max, out) != 0)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex %s: %s takes a whole number from %ld to %ld, not '%s'\n", cmd, opt,
                        min, max, arg ? arg : "");
    return EXIT_OK;
}
