/* stderr logger, with the escaping that keeps one event on one line and the rate limit for
 * warnings outsiders can provoke. Not for audit: the audit log is a separate,
 * tamper-evident store. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* The length of the well-formed UTF-8 sequence at s (1 for ASCII) and its code point; 0 if
 * there is none (a stray continuation byte, an overlong form, a surrogate, above
 * U+10FFFF, a sequence cut short, also by the terminating NUL). */
static size_t utf8_decode(const unsigned char *s, unsigned *cp)
{
    unsigned c = s[0], min;
    size_t n;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, *cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, *cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, *cp = c & 0x07, min = 0x10000;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (s[i] & 0x3f);
    }
    if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
        return 0;
    return n;
}

/* Code points above U+007F written out: the C1 controls, the line and paragraph
 * separators, and the bidirectional controls that can make a line read other than it is. */
static int escaped_code_point(unsigned cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e ||
           cp == 0x200f || cp == 0x061c;
}

size_t refex_log_escape(char *out, size_t outlen, const char *in)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t n = 0, len;
    if (!outlen)
        return 0;
    for (; *s; s += len) {
        char piece[17]; /* up to four bytes as \xNN */
        unsigned cp = 0;
        len = utf8_decode(s, &cp);
        if (cp == '\n' || cp == '\r' || cp == '\t')
            snprintf(piece, sizeof piece, "\\%c", cp == '\n' ? 'n' : cp == '\r' ? 'r' : 't');
        else if (len == 0 || cp < 0x20 || cp == 0x7f || escaped_code_point(cp)) {
            len = len ? len : 1; /* an invalid byte alone; what follows is looked at anew */
            for (size_t i = 0; i < len; i++)
                snprintf(piece + 4 * i, sizeof piece - 4 * i, "\\x%02x", (unsigned)s[i]);
        } else {
            memcpy(piece, s, len);
            piece[len] = '\0';
        }
        size_t plen = strlen(piece);
        if (n + plen >= outlen)
            break;
        memcpy(out + n, piece, plen);
        n += plen;
    }
    out[n] = '\0';
    return n;
}

/* Whether stderr is the journal: systemd sets JOURNAL_STREAM to "DEV:INODE" of the stream it
 * connected a service's stderr to (systemd.exec(5)); a redirected stderr is not. */
int refex_log_to_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev = 0, ino = 0;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void refex_log(refex_log_level level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    /* sd-daemon(3) priorities: debug 7, info 6, warning 4, err 3, and alert 1 for the lines
     * that raise one (they start with "ALERT"; text from outside is escaped inside a line
     * and cannot start one) */
    static const int prio[] = {7, 6, 4, 3};
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
    if (refex_log_to_journal()) /* the journal has its own time stamp */
        fprintf(stderr, "<%d>%s[%s] %s\n", strncmp(line, "ALERT", 5) == 0 ? 1 : prio[level],
                g_ident, names[level], escaped);
    else
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
