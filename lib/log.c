/* stderr logger. Not for audit: the audit log is a separate, tamper-evident store. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static const char *g_ident = "refex";
static refex_log_level g_level = REFEX_LOG_INFO;

void refex_log_set_ident(const char *ident)
{
    g_ident = ident;
}

void refex_log_set_level(refex_log_level level)
{
    g_level = level;
}

void refex_log(refex_log_level level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < g_level)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %s[%s] %s\n", when, ts.tv_nsec / 1000000L, g_ident, names[level],
            line);
    fflush(stderr);
}
