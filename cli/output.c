/* Output and lookup helpers shared by every refex command: times, JSON, help detection,
 * typed errors, and where an agent keeps its data. Formatting only: no command logic. */
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

int cli_print_error(const json_t *reply)
{
    fprintf(stderr, "refex: %s: %s\n", json_string_value(json_object_get(reply, "error")),
            json_string_value(json_object_get(reply, "detail")));
    return EXIT_FAIL;
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
        fprintf(stderr, "refex: which agent? give -c AGENT.conf or set REFEX_CONFIG\n");
        return EXIT_USAGE;
    }
    if (refex_config_open(cli_config, &cfg, err, sizeof err) != REFEX_OK) {
        fprintf(stderr, "refex: %s\n", err);
        return EXIT_KEYS;
    }
    int rc = refex_config_path(cfg, "data_dir", buf, len);
    refex_config_close(&cfg);
    if (rc != REFEX_OK) {
        fprintf(stderr, "refex: %s has no data_dir\n", cli_config);
        return EXIT_KEYS;
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
        fprintf(stderr, "refex %s: give --db FILE, or -c AGENT.conf\n", cmd);
        return EXIT_USAGE;
    }
    int rc = cli_data_dir(dir, sizeof dir);
    if (rc != EXIT_OK)
        return rc;
    if ((size_t)snprintf(buf, len, "%s/agent.db", dir) >= len) {
        fprintf(stderr, "refex %s: data_dir path too long\n", cmd);
        return EXIT_KEYS;
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
