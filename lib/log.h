/* Logging for daemons and the CLI: one line per event on stderr, with a timestamp and
 * level. Log ids and agencies, never message contents or personal data. Every line is
 * escaped (refex_log_escape), so text that came from outside cannot start a line of its
 * own; warnings an outside party can cause at will go through a refex_log_gate. */
#ifndef REFEX_LOG_H
#define REFEX_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { REFEX_LOG_DEBUG, REFEX_LOG_INFO, REFEX_LOG_WARN, REFEX_LOG_ERROR } refex_log_level;

void refex_log_set_ident(const char *ident);
void refex_log_set_level(refex_log_level level);
/* 1 if stderr is systemd's journal stream (JOURNAL_STREAM): lines then start with the
 * sd-daemon(3) priority (<7> debug, <6> info, <4> warn, <3> error, <1> for an ALERT line),
 * without the time stamp, so `journalctl -p warning` shows warnings, errors and alerts. */
int refex_log_to_journal(void);
void refex_log(refex_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define refex_log_debug(...) refex_log(REFEX_LOG_DEBUG, __VA_ARGS__)
#define refex_log_info(...)  refex_log(REFEX_LOG_INFO, __VA_ARGS__)
#define refex_log_warn(...)  refex_log(REFEX_LOG_WARN, __VA_ARGS__)
#define refex_log_error(...) refex_log(REFEX_LOG_ERROR, __VA_ARGS__)

/* Copies in to out (NUL-terminated, truncated to outlen) with every control character
 * written out: \n, \r and \t as those two characters; other bytes below 0x20 and 0x7f as
 * \xNN; as \xNN for each of their UTF-8 bytes, the C1 controls U+0080..U+009F, the line
 * and paragraph separators U+2028 and U+2029, and the bidirectional controls U+061C,
 * U+200E, U+200F, U+202A..U+202E and U+2066..U+2069; and as \xNN each byte that is not
 * part of well-formed UTF-8 (stray continuation bytes, overlong forms, surrogates, code
 * points above U+10FFFF, sequences cut short). Other text, other UTF-8 included, is kept,
 * so the output is valid UTF-8. Never cuts an escape or a character in half. Returns the
 * length written. */
size_t refex_log_escape(char *out, size_t outlen, const char *in);

/* A rate limit for warnings an outside party can cause at will (a flood of bad frames):
 * per source (an agency id), the first `burst` in each window of `window_ms` are logged;
 * the rest are counted, one line says when counting starts, and the count is logged when
 * the window is over (refex_log_gate_flush, or the source's next warning). Embedded in its
 * owner; zero it, then set what, burst and window_ms. */
#define REFEX_LOG_GATE_SOURCES 64

typedef struct {
    char source[128];
    int64_t start_ms; /* the window's start (monotonic); 0: slot free */
    unsigned logged, suppressed;
} refex_log_gate_slot;

typedef struct {
    const char *what; /* names the warnings in summary lines, e.g. "frame" */
    unsigned burst;
    int64_t window_ms;
    refex_log_gate_slot slots[REFEX_LOG_GATE_SOURCES];
} refex_log_gate;

/* Whether a warning from source may be logged now (1) or is only counted (0). */
int refex_log_gate_pass(refex_log_gate *g, const char *source, int64_t now_ms);
/* Logs the count of every window that is over and frees its slot. */
void refex_log_gate_flush(refex_log_gate *g, int64_t now_ms);

#endif
