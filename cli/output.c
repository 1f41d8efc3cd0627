/* Output and lookup helpers shared by every refex command: times, JSON, help detection,
 * typed errors, and where an agent keeps its data. Formatting only: no command logic. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "config.h"
#include "refex/error.h"

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    return 0;
}

void cli_format_time(char *buf, size_t len, long long ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm);
}

int cli_json;
static int json_printed; /* a result or an error is on stdout: the one JSON document */

int cli_json_scan(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--json") == 0)
            return 1;
    return 0;
}

/* {"ok":false,"error":E,"message":M} plus extra's fields; takes extra. */
static void print_error_object(const char *error, const char *message, json_t *extra)
{
    json_t *o = json_pack("{s:b, s:s, s:s}", "ok", 0, "error", error, "message", message);
    if (o && extra)
        json_object_update_missing(o, extra);
    json_decref(extra);
    if (o)
        cli_print_json(o);
    else /* out of memory: still one object */
        printf("{\"ok\": false, \"error\": \"E_NOMEM\"}\n");
    json_decref(o);
    json_printed = 1;
}

FILE *cli_usage_stream(int help)
{
    static FILE *sink;
    if (help || !cli_json)
        return help ? stdout : stderr;
    if (!sink)
        sink = fopen("/dev/null", "w");
    return sink ? sink : stderr;
}

int cli_fail(int exit_code, const char *error, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    if (!cli_json) {
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        return exit_code;
    }
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    msg[strcspn(msg, "\n")] = '\0'; /* the first line: a usage text after it is for people */
    print_error_object(error, msg, NULL);
    return exit_code;
}

/* "to" -> "recipients": what a reply's "valid" list holds, for people. */
static const char *valid_label(const char *field)
{
    return strcmp(field, "to") == 0 ? "recipients" : strcmp(field, "type") == 0 ? "types" : field;
}

static void print_valid(const json_t *reply)
{
    const json_t *valid = json_object_get(reply, "valid"), *v;
    size_t i;
    if (!json_is_array(valid))
        return;
    const char *field = cli_str(reply, "field");
    fprintf(stderr, "refex: valid %s:", *field ? valid_label(field) : "values");
    json_array_foreach(valid, i, v)
    {
        fprintf(stderr, "%s %s", i ? "," : "", json_string_value(v) ? json_string_value(v) : "?");
    }
    fprintf(stderr, json_array_size(valid) ? "\n" : " (none)\n");
}

int cli_print_error(const json_t *reply)
{
    if (cli_json) {
        /* The agent's reply as it came, "detail" named "message" like the CLI's own. */
        json_t *extra = json_deep_copy(reply);
        json_object_del(extra, "detail");
        json_object_del(extra, "ok");
        print_error_object(*cli_str(reply, "error") ? cli_str(reply, "error") : "E_FAILED",
                           cli_str(reply, "detail"), extra);
        return EXIT_FAIL;
    }
    fprintf(stderr, "refex: %s: %s\n", json_string_value(json_object_get(reply, "error")),
            json_string_value(json_object_get(reply, "detail")));
    print_valid(reply);
    return EXIT_FAIL;
}

int cli_json_finish(const char *cmd, int rc)
{
    static const char *const names[] = {[EXIT_FAIL] = CLI_E_FAILED,
                                        [EXIT_USAGE] = CLI_E_USAGE,
                                        [EXIT_NOAGENT] = "E_UNAVAILABLE",
                                        [EXIT_KEYS] = "E_CONFIG"};
    if (!cli_json || rc == EXIT_OK || json_printed)
        return rc;
    const char *name = rc > 0 && rc <= EXIT_KEYS ? names[rc] : CLI_E_FAILED;
    char msg[256];
    snprintf(msg, sizeof msg, "refex%s%s failed (exit %d); see refex%s%s --help", cmd ? " " : "",
             cmd ? cmd : "", rc, cmd ? " " : "", cmd ? cmd : "");
    print_error_object(name, msg, NULL);
    return rc;
}

const char *cli_str(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

void cli_print_json(json_t *v)
{
    json_dumpf(v, stdout, JSON_INDENT(2));
    printf("\n");
    json_printed = 1;
}

void cli_short_text(char *out, size_t len, const char *s)
{
    snprintf(out, len, "%s", s ? s : "");
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    if (s && strlen(s) >= len && len > 4)
        memcpy(out + len - 4, "...", 4);
}

int cli_data_dir(char *buf, size_t len)
{
    char err[512];
    refex_config *cfg = NULL;
    if (!cli_config) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex: which agent? give -c AGENT.conf or set REFEX_CONFIG\n");
    }
    if (refex_config_open(cli_config, &cfg, err, sizeof err) != REFEX_OK) {
        return cli_fail(EXIT_KEYS, "E_CONFIG", "refex: %s\n", err);
    }
    int rc = refex_config_path(cfg, "data_dir", buf, len);
    refex_config_close(&cfg);
    if (rc != REFEX_OK) {
        return cli_fail(EXIT_KEYS, "E_CONFIG", "refex: %s has no data_dir\n", cli_config);
    }
    return EXIT_OK;
}

int cli_agent_db(const char *cmd, const char *db, char *buf, size_t len)
{
    char dir[4096];
    if (db) {
        snprintf(buf, len, "%s", db);
        return EXIT_OK;
    }
    if (!cli_config) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex %s: give --db FILE, or -c AGENT.conf\n",
                        cmd);
    }
    int rc = cli_data_dir(dir, sizeof dir);
    if (rc != EXIT_OK)
        return rc;
    if ((size_t)snprintf(buf, len, "%s/agent.db", dir) >= len) {
        return cli_fail(EXIT_KEYS, "E_CONFIG", "refex %s: data_dir path too long\n", cmd);
    }
    return EXIT_OK;
}

/* ---- CSV ---- */

void cli_csv_field(FILE *f, const char *s, int last)
{
    if (strpbrk(s, ",\"\r\n")) {
        fputc('"', f);
        for (; *s; s++) {
            if (*s == '"')
                fputc('"', f);
            fputc(*s, f);
        }
        fputc('"', f);
    } else {
        fputs(s, f);
    }
    fputs(last ? "\r\n" : ",", f);
}
