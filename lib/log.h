/* Logging for daemons and the CLI: one line per event on stderr, with a timestamp and
 * level. Log ids and agencies, never message contents or personal data. */
#ifndef REFEX_LOG_H
#define REFEX_LOG_H

typedef enum { REFEX_LOG_DEBUG, REFEX_LOG_INFO, REFEX_LOG_WARN, REFEX_LOG_ERROR } refex_log_level;

void refex_log_set_ident(const char *ident);
void refex_log_set_level(refex_log_level level);
void refex_log(refex_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define refex_log_debug(...) refex_log(REFEX_LOG_DEBUG, __VA_ARGS__)
#define refex_log_info(...)  refex_log(REFEX_LOG_INFO, __VA_ARGS__)
#define refex_log_warn(...)  refex_log(REFEX_LOG_WARN, __VA_ARGS__)
#define refex_log_error(...) refex_log(REFEX_LOG_ERROR, __VA_ARGS__)

#endif
