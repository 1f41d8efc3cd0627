/* stderr logger, with the escaping that keeps one event on one line and the rate limit for
 * warnings outsiders can provoke. Not for audit: the audit log is a separate,
 * tamper-evident store. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
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

size_t refex_log_escape(char *out, size_t outlen, const char *in)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t n = 0;
    if (!outlen)
        return 0;
    for (; *s; s++) {
        char piece[9];
        unsigned c = *s;
        if (c == '\n' || c == '\r' || c == '\t')
            snprintf(piece, sizeof piece, "\\%c", c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
        else if (c < 0x20 || c == 0x7f)
            snprintf(piece, sizeof piece, "\\x%02x", c);
        else if (c == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f) /* a C1 control, U+0080..U+009F */
            snprintf(piece, sizeof piece, "\\xc2\\x%02x", (unsigned)*++s);
        else
            piece[0] = (char)c, piece[1] = '\0';
        size_t plen = strlen(piece);
        if (n + plen >= outlen)
            break;
        memcpy(out + n, piece, plen);
        n += plen;
    }
    out[n] = '\0';
    return n;
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
    char line[1024], escaped[4 * sizeof line];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    refex_log_escape(escaped, sizeof escaped, line);
    fprintf(stderr, "%s.%03ldZ %s[%s] %s\n", when, ts.tv_nsec / 1000000L, g_ident, names[level],
            escaped);
    fflush(stderr);
}

/* ---- the gate ------------------------------------------------------------------------ */

static void gate_summary(const refex_log_gate *g, const refex_log_gate_slot *s)
{
    if (s->suppressed)
        refex_log_warn("%s: %u more warning(s) about %s suppressed in %lld s", g->what,
                       s->suppressed, s->source, (long long)(g->window_ms / 1000));
}

static void slot_start(refex_log_gate_slot *s, const char *source, int64_t now_ms)
{
    snprintf(s->source, sizeof s->source, "%s", source);
    s->start_ms = now_ms;
    s->logged = s->suppressed = 0;
}

/* The source's slot; else a free one, else the one whose window started first (its count
 * logged first). */
static refex_log_gate_slot *gate_slot(refex_log_gate *g, const char *source, int64_t now_ms)
{
    refex_log_gate_slot *free_slot = NULL, *oldest = &g->slots[0];
    for (size_t i = 0; i < REFEX_LOG_GATE_SOURCES; i++) {
        refex_log_gate_slot *s = &g->slots[i];
        if (!s->source[0]) {
            if (!free_slot)
                free_slot = s;
            continue;
        }
        if (strncmp(s->source, source, sizeof s->source - 1) == 0)
            return s;
        if (s->start_ms < oldest->start_ms || !oldest->source[0])
            oldest = s;
    }
    refex_log_gate_slot *s = free_slot ? free_slot : oldest;
    if (!free_slot)
        gate_summary(g, s);
    slot_start(s, source, now_ms);
    return s;
}

int refex_log_gate_pass(refex_log_gate *g, const char *source, int64_t now_ms)
{
    refex_log_gate_slot *s = gate_slot(g, source ? source : "?", now_ms);
    if (now_ms - s->start_ms >= g->window_ms) {
        gate_summary(g, s);
        s->start_ms = now_ms;
        s->logged = s->suppressed = 0;
    }
    if (s->logged < g->burst) {
        s->logged++;
        return 1;
    }
    if (s->suppressed++ == 0)
        refex_log_warn("%s: more than %u warnings about %s in %lld s; the rest are counted, "
                       "not logged, until then",
                       g->what, g->burst, s->source, (long long)(g->window_ms / 1000));
    return 0;
}

void refex_log_gate_flush(refex_log_gate *g, int64_t now_ms)
{
    for (size_t i = 0; i < REFEX_LOG_GATE_SOURCES; i++) {
        refex_log_gate_slot *s = &g->slots[i];
        if (s->source[0] && now_ms - s->start_ms >= g->window_ms) {
            gate_summary(g, s);
            memset(s, 0, sizeof *s);
        }
    }
}
