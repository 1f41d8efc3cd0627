/* The metrics and health endpoint (metrics.h) on libmicrohttpd, polled from the daemon's
 * event loop (MHD_USE_EPOLL, no thread of its own). */
#include "metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct refex_metrics {
    struct MHD_Daemon *d;
    refex_metrics_render_fn render;
    refex_metrics_health_fn health;
    void *ctx;
};

void refex_metrics_printf(refex_metrics_text *t, const char *fmt, ...)
{
    va_list ap;
    if (t->failed)
        return;
    for (;;) {
        size_t room = t->cap - t->len;
        va_start(ap, fmt);
        int n = t->data ? vsnprintf(t->data + t->len, room, fmt, ap) : -2;
        va_end(ap);
        if (n >= 0 && (size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        if (n == -1) {
            t->failed = 1;
            return;
        }
        size_t cap = t->cap ? 2 * t->cap : 4096;
        while (n > 0 && cap - t->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(t->data, cap);
        if (!p) {
            t->failed = 1;
            return;
        }
        t->data = p;
        t->cap = cap;
    }
}

void refex_metrics_family(refex_metrics_text *t, const char *name, const char *type,
                          const char *help)
{
    refex_metrics_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *type,
                              const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    refex_metrics *m = cls;
    (void)version;
    (void)upload_data;
    (void)con_cls;
    static const char TEXT[] = "text/plain; charset=utf-8";
    if (*upload_data_size) /* a body: not for us; say so once it has been read */
        *upload_data_size = 0;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "only GET /metrics and GET /healthz\n";
        return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, TEXT, msg, sizeof msg - 1);
    }
    if (strcmp(url, "/metrics") == 0) {
        refex_metrics_text t = {0};
        m->render(m->ctx, &t);
        enum MHD_Result ok =
            t.failed ? answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, TEXT, "out of memory\n", 14)
                     : answer(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                              t.data ? t.data : "", t.len);
        free(t.data);
        return ok;
    }
    if (strcmp(url, "/healthz") == 0) {
        char why[256] = "", body[300];
        int healthy = m->health(m->ctx, why, sizeof why);
        int n = snprintf(body, sizeof body, "%s\n", healthy ? "ok" : why);
        return answer(c, healthy ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, TEXT, body,
                      (size_t)n < sizeof body ? (size_t)n : sizeof body - 1);
    }
    static const char msg[] = "not found: GET /metrics or /healthz\n";
    return answer(c, MHD_HTTP_NOT_FOUND, TEXT, msg, sizeof msg - 1);
}

static int parse_listen(const char *listen, struct sockaddr_in *sa)
{
    char host[64] = "127.0.0.1";
    const char *colon = strrchr(listen, ':');
    const char *port = colon ? colon + 1 : listen;
    if (colon) {
        size_t n = (size_t)(colon - listen);
        if (n == 0 || n >= sizeof host)
            return -1;
        memcpy(host, listen, n);
        host[n] = 0;
    }
    char *end = NULL;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 1 || p > 65535)
        return -1;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)p);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

int refex_metrics_check(const char *listen, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    if (parse_listen(listen, &sa) == 0)
        return REFEX_OK;
    snprintf(err, errlen, "config: metrics_listen must be PORT or IPv4:PORT, not %.100s", listen);
    return REFEX_E_CONFIG;
}

int refex_metrics_open(const char *listen, refex_metrics_render_fn render,
                       refex_metrics_health_fn health, void *ctx, refex_metrics **out, char *err,
                       size_t errlen)
{
    struct sockaddr_in sa;
    *out = NULL;
    if (parse_listen(listen, &sa) != 0) {
        snprintf(err, errlen, "config: metrics_listen must be PORT or IPv4:PORT, not %.100s",
                 listen);
        return REFEX_E_CONFIG;
    }
    refex_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return REFEX_E_NOMEM;
    m->render = render;
    m->health = health;
    m->ctx = ctx;
    m->d =
        MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, m,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!m->d) {
        snprintf(err, errlen, "metrics: cannot listen on %.100s", listen);
        free(m);
        return REFEX_E_IO;
    }
    refex_log_info("metrics: http://%s/metrics and /healthz", listen);
    *out = m;
    return REFEX_OK;
}

int refex_metrics_fd(const refex_metrics *m)
{
    if (!m)
        return -1;
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_EPOLL_FD);
    return i ? i->epoll_fd : -1;
}

int refex_metrics_timeout_ms(const refex_metrics *m, int timeout_ms)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (m && MHD_get_timeout(m->d, &ms) == MHD_YES && ms < (MHD_UNSIGNED_LONG_LONG)timeout_ms)
        return (int)ms;
    return timeout_ms;
}

void refex_metrics_run(refex_metrics *m)
{
    if (m)
        MHD_run(m->d);
}

void refex_metrics_close(refex_metrics **m_p)
{
    if (!m_p || !*m_p)
        return;
    MHD_stop_daemon((*m_p)->d);
    free(*m_p);
    *m_p = NULL;
}
