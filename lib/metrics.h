/* A daemon's metrics and health over HTTP (metrics_listen): GET /metrics answers the
 * Prometheus text exposition format (version 0.0.4), GET /healthz 200 "ok" or 503 with the
 * reason. Served by libmicrohttpd from the daemon's own event loop (its epoll descriptor
 * joins zmq_poll), so the numbers are read in the daemon's thread, like everything else.
 * Not for anything an agency's data could be read from: names of agencies and counts only. */
#ifndef REFEX_METRICS_H
#define REFEX_METRICS_H

#include <stddef.h>

#include "refex/error.h"

typedef struct refex_metrics refex_metrics;

/* The text of one answer, grown by refex_metrics_printf. */
typedef struct {
    char *data;
    size_t len, cap;
    int failed; /* out of memory: the answer is a 500 */
} refex_metrics_text;

void refex_metrics_printf(refex_metrics_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* One metric family's HELP and TYPE lines. */
void refex_metrics_family(refex_metrics_text *t, const char *name, const char *type,
                          const char *help);

/* render: the /metrics text. health: 1 healthy, 0 not (why says so, in a line). */
typedef void (*refex_metrics_render_fn)(void *ctx, refex_metrics_text *t);
typedef int (*refex_metrics_health_fn)(void *ctx, char *why, size_t whylen);

/* Whether listen is one refex_metrics_open takes (config checks, -n). */
int refex_metrics_check(const char *listen, char *err, size_t errlen) REFEX_NODISCARD;
/* listen: "PORT" (on 127.0.0.1) or "HOST:PORT" with an IPv4 address. */
int refex_metrics_open(const char *listen, refex_metrics_render_fn render,
                       refex_metrics_health_fn health, void *ctx, refex_metrics **out, char *err,
                       size_t errlen) REFEX_NODISCARD;
/* The descriptor to poll for input (-1 if none), and the work to do when it is readable
 * (also safe to call when it is not). */
int refex_metrics_fd(const refex_metrics *m);
void refex_metrics_run(refex_metrics *m);
/* The event loop's poll timeout, shortened to when libmicrohttpd has work queued (its epoll
 * descriptor does not say so: libmicrohttpd asks not to wait longer). */
int refex_metrics_timeout_ms(const refex_metrics *m, int timeout_ms);
void refex_metrics_close(refex_metrics **m_p);

#endif
