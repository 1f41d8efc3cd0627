/* The connection half of librefex-client: finding an agent's control socket, one REQ/REP
 * exchange of JSON text (or one held open as a watch of the inbox, read without
 * blocking), and the typed error left behind by each call. It knows nothing about
 * individual commands: those are built in client_calls.c. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <zmq.h>

#include "client_priv.h"
#include "config.h"
#include "util.h"
#include "refex/client.h"

#define ENDPOINT_MAX 4200
/* The largest request sent and reply taken: the agent's own limit on control messages. A
 * peer that answers more is cut off by ZeroMQ, and the call times out. */
#define REPLY_MAX (64 * 1024 * 1024)

/* A watch asks for at most this many messages per reply, and the agent holds each request
 * at most this long; a request not answered WATCH_SLACK_MS after that is taken as lost. */
#define WATCH_PAGE     100
#define WATCH_WAIT_MS  25000
#define WATCH_SLACK_MS 5000
#define WATCH_SEND_MS  500

struct refex_client {
    void *ctx, *sock;
    char endpoint[ENDPOINT_MAX]; /* ipc://... */
    int timeout_ms;
    char detail[1024];
    char error[1100]; /* "E_NAME: detail" */
    /* The watch: an inbox_wait from w_after is outstanding on sock while w_armed. */
    int w_on, w_armed;
    long long w_after;
    int64_t w_deadline;
    /* The control socket's inode and change time when armed: another socket file is
     * another agent (a new file may be given the old inode number). */
    ino_t w_ino;
    struct timespec w_ctime;
};

int refex_client_fail(refex_client *c, int code, const char *fmt, ...)
{
    if (!c)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
    if (!c->detail[0])
        snprintf(c->detail, sizeof c->detail, "%s", refex_strerror(code));
    snprintf(c->error, sizeof c->error, "%s: %s", refex_errname(code), c->detail);
    return code;
}

static void clear_error(refex_client *c)
{
    c->detail[0] = '\0';
    c->error[0] = '\0';
}

const char *refex_client_error(const refex_client *c)
{
    return c ? c->error : "E_INVAL: no client";
}

const char *refex_client_error_detail(const refex_client *c)
{
    return c ? c->detail : "no client";
}

void refex_client_free(void *p)
{
    free(p);
}

static void drop_socket(refex_client *c)
{
    if (c->sock)
        zmq_close(c->sock);
    c->sock = NULL;
}

/* A REQ socket that has sent and not received cannot send again: a fresh one after a
 * timeout keeps the client usable. */
static int connect_socket(refex_client *c)
{
    int linger = 0, immediate = 1;
    int64_t max = REPLY_MAX;
    drop_socket(c);
    c->sock = zmq_socket(c->ctx, ZMQ_REQ);
    if (!c->sock)
        return refex_client_fail(c, REFEX_E_IO, "cannot reach the agent at %s", c->endpoint);
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    /* Queue nothing for an agent that is not there: a send then times out instead. */
    zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &immediate, sizeof immediate);
    zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &max, sizeof max);
    zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &c->timeout_ms, sizeof c->timeout_ms);
    zmq_setsockopt(c->sock, ZMQ_RCVTIMEO, &c->timeout_ms, sizeof c->timeout_ms);
    if (zmq_connect(c->sock, c->endpoint) != 0) {
        drop_socket(c);
        return refex_client_fail(c, REFEX_E_IO, "cannot reach the agent at %s", c->endpoint);
    }
    return REFEX_OK;
}

static int client_new(refex_client **out)
{
    if (refex_init() != REFEX_OK) /* libsodium, for the hex and base64 of bodies */
        return REFEX_E_CRYPTO;
    refex_client *c = *out = calloc(1, sizeof *c);
    if (!c)
        return REFEX_E_NOMEM;
    c->timeout_ms = REFEX_CLIENT_TIMEOUT_MS;
    return REFEX_OK;
}

/* A control socket left behind by an agent that died refuses connections: say so now,
 * rather than let the first call wait out its whole timeout. Returns 0 if something may
 * listen, else the connect's errno. */
static int socket_probe(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return 0; /* ZeroMQ reports what it makes of it */
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int e = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 ? 0 : errno;
    close(fd);
    return e == ECONNREFUSED || e == EACCES || e == EPERM ? e : 0;
}

/* The file permissions of the socket or of its directory keep this process out: only the
 * agent's own user and members of its control_group get in (docs/operations.md). ZeroMQ
 * would retry such a connect silently until the call timed out. */
static int denied(refex_client *c, const char *socket_path)
{
    return refex_client_fail(c, REFEX_E_DENIED,
                             "no permission to use the agent's control socket %s: it admits the "
                             "agent's own user and members of its control_group",
                             socket_path);
}

static int open_socket(refex_client *c, const char *socket_path)
{
    struct stat st;
    if (!socket_path || !socket_path[0])
        return refex_client_fail(c, REFEX_E_INVAL, "no control socket path given");
    if (stat(socket_path, &st) != 0)
        return errno == EACCES ? denied(c, socket_path)
                               : refex_client_fail(c, REFEX_E_UNAVAILABLE,
                                                   "the agent is not running (no control socket "
                                                   "at %s)",
                                                   socket_path);
    int e = socket_probe(socket_path);
    if (e == EACCES || e == EPERM)
        return denied(c, socket_path);
    if (e)
        return refex_client_fail(c, REFEX_E_UNAVAILABLE,
                                 "the agent is not running (nothing listens on %s)", socket_path);
    if ((size_t)snprintf(c->endpoint, sizeof c->endpoint, "ipc://%s", socket_path) >=
        sizeof c->endpoint)
        return refex_client_fail(c, REFEX_E_INVAL, "control socket path too long");
    if (!(c->ctx = zmq_ctx_new()))
        return refex_client_fail(c, REFEX_E_IO, "cannot reach the agent at %s", c->endpoint);
    return connect_socket(c);
}

int refex_client_open_socket(const char *socket_path, refex_client **out)
{
    if (!out)
        return REFEX_E_INVAL;
    *out = NULL;
    int rc = client_new(out);
    return rc != REFEX_OK ? rc : open_socket(*out, socket_path);
}

int refex_client_open(const char *config_path, refex_client **out)
{
    char err[512], dir[4096], path[4200];
    refex_config *cfg = NULL;
    if (!out)
        return REFEX_E_INVAL;
    *out = NULL;
    int rc = client_new(out);
    refex_client *c = *out;
    if (rc != REFEX_OK)
        return rc;
    if (!config_path || !config_path[0])
        return refex_client_fail(c, REFEX_E_INVAL, "no agent configuration file given");
    if (refex_config_open(config_path, &cfg, err, sizeof err) != REFEX_OK)
        return refex_client_fail(c, REFEX_E_CONFIG, "%s", err);
    rc = refex_config_path(cfg, "data_dir", dir, sizeof dir);
    refex_config_close(&cfg);
    if (rc != REFEX_OK)
        return refex_client_fail(c, REFEX_E_CONFIG, "%s has no data_dir", config_path);
    if ((size_t)snprintf(path, sizeof path, "%s/control.sock", dir) >= sizeof path)
        return refex_client_fail(c, REFEX_E_CONFIG, "%s: data_dir path too long", config_path);
    return open_socket(c, path);
}

void refex_client_close(refex_client **c_p)
{
    if (!c_p || !*c_p)
        return;
    refex_client *c = *c_p;
    drop_socket(c);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free(c);
    *c_p = NULL;
}

static void apply_timeout(refex_client *c, int timeout_ms)
{
    c->timeout_ms = timeout_ms;
    if (c->sock) {
        zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &c->timeout_ms, sizeof c->timeout_ms);
        zmq_setsockopt(c->sock, ZMQ_RCVTIMEO, &c->timeout_ms, sizeof c->timeout_ms);
    }
}

int refex_client_set_timeout(refex_client *c, int timeout_ms)
{
    if (!c)
        return REFEX_E_INVAL;
    if (timeout_ms <= 0)
        return refex_client_fail(c, REFEX_E_INVAL, "the timeout must be positive");
    clear_error(c);
    apply_timeout(c, timeout_ms);
    return REFEX_OK;
}

/* Receives the first part of a reply, within the timeout even if signals interrupt it. */
static int recv_first(refex_client *c, zmq_msg_t *m)
{
    int64_t deadline = refex_mono_ms() + c->timeout_ms;
    int rc;
    while ((rc = zmq_msg_recv(m, c->sock, 0)) < 0 && errno == EINTR) {
        int left = (int)(deadline - refex_mono_ms());
        if (left <= 0)
            break;
        zmq_setsockopt(c->sock, ZMQ_RCVTIMEO, &left, sizeof left);
    }
    zmq_setsockopt(c->sock, ZMQ_RCVTIMEO, &c->timeout_ms, sizeof c->timeout_ms);
    return rc;
}

/* A reply is one part of text: further parts are read off (so the socket can send again)
 * and the reply refused, as is one with a NUL inside. */
static int reply_shape(refex_client *c, zmq_msg_t *m)
{
    int more = 0, bad = memchr(zmq_msg_data(m), 0, zmq_msg_size(m)) != NULL;
    size_t len = sizeof more;
    while (zmq_getsockopt(c->sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        bad = 1;
        int got = zmq_msg_recv(&extra, c->sock, 0);
        zmq_msg_close(&extra);
        if (got < 0) {
            connect_socket(c);
            break;
        }
        len = sizeof more;
    }
    return bad ? refex_client_fail(c, REFEX_E_MALFORMED,
                                   "unreadable answer from the agent (not one part of text)")
               : REFEX_OK;
}

/* The received reply m (closed here) as a new NUL-terminated string. */
static int take_reply(refex_client *c, zmq_msg_t *m, char **reply)
{
    if (reply_shape(c, m) != REFEX_OK) {
        zmq_msg_close(m);
        return REFEX_E_MALFORMED;
    }
    size_t len = zmq_msg_size(m);
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, zmq_msg_data(m), len);
        s[len] = '\0';
    }
    zmq_msg_close(m);
    if (!s)
        return refex_client_fail(c, REFEX_E_NOMEM, "%s", "");
    *reply = s;
    return REFEX_OK;
}

/* One request out, one reply back as a new NUL-terminated string. */
static int exchange(refex_client *c, const char *text, char **reply)
{
    zmq_msg_t m;
    if (!c->sock && (!c->ctx || connect_socket(c) != REFEX_OK))
        return refex_client_fail(c, REFEX_E_UNAVAILABLE, "cannot reach the agent at %s",
                                 c->endpoint);
    if (zmq_send(c->sock, text, strlen(text), 0) < 0) {
        connect_socket(c);
        return refex_client_fail(c, REFEX_E_UNAVAILABLE, "cannot reach the agent at %s",
                                 c->endpoint);
    }
    zmq_msg_init(&m);
    if (recv_first(c, &m) < 0) {
        zmq_msg_close(&m);
        connect_socket(c);
        if (c->timeout_ms % 1000)
            return refex_client_fail(c, REFEX_E_TIMEOUT, "the agent did not answer within %d ms",
                                     c->timeout_ms);
        return refex_client_fail(c, REFEX_E_TIMEOUT, "the agent did not answer within %d s",
                                 c->timeout_ms / 1000);
    }
    return take_reply(c, &m, reply);
}

/* The code a reply stands for: OK, or the agent's typed error (also left in c). */
static int reply_code(refex_client *c, const char *text, int *readable)
{
    json_error_t jerr;
    json_t *r = json_loads(text, 0, &jerr);
    int rc = REFEX_OK;
    *readable = json_is_object(r);
    if (!*readable) {
        rc = refex_client_fail(c, REFEX_E_MALFORMED, "unreadable answer from the agent");
    } else if (!json_is_true(json_object_get(r, "ok"))) {
        json_int_t code = json_integer_value(json_object_get(r, "code"));
        const char *detail = json_string_value(json_object_get(r, "detail"));
        rc = code > 0 && code <= 0xffff ? (int)code : REFEX_E_PROTOCOL;
        refex_client_fail(c, rc, "%s", detail ? detail : "");
        /* The agent's own name wins, should this library be older than the agent. */
        const char *name = json_string_value(json_object_get(r, "error"));
        if (name)
            snprintf(c->error, sizeof c->error, "%s: %s", name, c->detail);
    }
    json_decref(r);
    return rc;
}

int refex_client_request(refex_client *c, const char *json_text, char **reply)
{
    char *text = NULL;
    if (!c || !json_text || !reply)
        return refex_client_fail(c, REFEX_E_INVAL, "NULL argument");
    *reply = NULL;
    clear_error(c);
    if (c->w_on)
        return refex_client_fail(c, REFEX_E_BUSY,
                                 "this client is watching the inbox: use another client, or "
                                 "refex_client_watch_stop first");
    if (strlen(json_text) > REPLY_MAX)
        return refex_client_fail(c, REFEX_E_TOO_BIG, "the request is over the agent's %d MiB limit",
                                 REPLY_MAX / (1024 * 1024));
    json_error_t jerr;
    json_t *req = json_loads(json_text, 0, &jerr);
    int is_obj = json_is_object(req);
    json_decref(req);
    if (!is_obj)
        return refex_client_fail(c, REFEX_E_JSON, "the request must be a JSON object: %s",
                                 jerr.text);
    int rc = exchange(c, json_text, &text);
    if (rc != REFEX_OK)
        return rc;
    int readable = 0;
    rc = reply_code(c, text, &readable);
    if (!readable) {
        free(text);
        return rc;
    }
    *reply = text;
    return rc;
}

int refex_client_call(refex_client *c, json_t *req, char **out)
{
    if (out)
        *out = NULL;
    if (!c) {
        json_decref(req);
        return REFEX_E_INVAL;
    }
    if (!req)
        return refex_client_fail(c, REFEX_E_NOMEM, "%s", "");
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!text)
        return refex_client_fail(c, REFEX_E_NOMEM, "%s", "");
    char *reply = NULL;
    int rc = refex_client_request(c, text, &reply);
    free(text);
    if (out)
        *out = reply;
    else
        free(reply);
    return rc;
}

int refex_client_call_long(refex_client *c, json_t *req, int extra_ms, char **out)
{
    if (!c)
        return refex_client_call(c, req, out);
    int saved = c->timeout_ms;
    long long t = (long long)saved + (extra_ms > 0 ? extra_ms : 0);
    apply_timeout(c, t > INT_MAX ? INT_MAX : (int)t);
    int rc = refex_client_call(c, req, out);
    apply_timeout(c, saved);
    return rc;
}

/* ---- the watch: an inbox_wait kept outstanding, read without blocking ----------------- */

/* The control socket's path, without "ipc://". */
static const char *socket_path(const refex_client *c)
{
    return c->endpoint + strlen("ipc://");
}

/* Sends the next inbox_wait from the watch's cursor (waiting at most WATCH_SEND_MS for a
 * connection to the agent). */
static int watch_arm(refex_client *c)
{
    struct stat st;
    int ms = WATCH_SEND_MS;
    if (stat(socket_path(c), &st) != 0)
        return refex_client_fail(c, REFEX_E_UNAVAILABLE,
                                 "the agent is not running (no control socket at %s)",
                                 socket_path(c));
    if (!c->sock && connect_socket(c) != REFEX_OK)
        return REFEX_E_UNAVAILABLE;
    json_t *req =
        json_pack("{s:s, s:I, s:i, s:i}", "cmd", "inbox_wait", "after", (json_int_t)c->w_after,
                  "limit", WATCH_PAGE, "timeout_ms", WATCH_WAIT_MS);
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text)
        return refex_client_fail(c, REFEX_E_NOMEM, "%s", "");
    zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &ms, sizeof ms);
    int sent = zmq_send(c->sock, text, strlen(text), 0);
    zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &c->timeout_ms, sizeof c->timeout_ms);
    free(text);
    if (sent < 0)
        return refex_client_fail(c, REFEX_E_UNAVAILABLE, "cannot reach the agent at %s",
                                 c->endpoint);
    c->w_armed = 1;
    c->w_ino = st.st_ino;
    c->w_ctime = st.st_ctim;
    c->w_deadline = refex_mono_ms() + WATCH_WAIT_MS + WATCH_SLACK_MS;
    return REFEX_OK;
}

int refex_client_watch_start(refex_client *c, long long after)
{
    if (!c)
        return REFEX_E_INVAL;
    clear_error(c);
    if (after < 0)
        return refex_client_fail(c, REFEX_E_INVAL, "the cursor must be 0 or more");
    refex_client_watch_stop(c);
    c->w_on = 1;
    c->w_after = after;
    int rc = watch_arm(c);
    if (rc != REFEX_OK)
        c->w_on = 0;
    return rc;
}

void refex_client_watch_stop(refex_client *c)
{
    if (!c || !c->w_on)
        return;
    if (c->w_armed && c->ctx)
        connect_socket(c); /* a REQ socket owes a receive: a fresh one forgets the request */
    c->w_on = c->w_armed = 0;
}

int refex_client_fd(refex_client *c, int *fd)
{
    size_t len = sizeof *fd;
    if (!c || !fd)
        return refex_client_fail(c, REFEX_E_INVAL, "NULL argument");
    if (!c->sock && (!c->ctx || connect_socket(c) != REFEX_OK))
        return REFEX_E_UNAVAILABLE;
    if (zmq_getsockopt(c->sock, ZMQ_FD, fd, &len) != 0)
        return refex_client_fail(c, REFEX_E_IO, "no descriptor for the agent's socket");
    return REFEX_OK;
}

/* The request outstanding is lost: its time is up, or the control socket is another
 * one (the agent restarted) or gone. */
static int watch_lost(const refex_client *c)
{
    struct stat st;
    return refex_mono_ms() >= c->w_deadline || stat(socket_path(c), &st) != 0 ||
           st.st_ino != c->w_ino || st.st_ctim.tv_sec != c->w_ctime.tv_sec ||
           st.st_ctim.tv_nsec != c->w_ctime.tv_nsec;
}

/* A page came: the watch moves on to its cursor and asks again. */
static int watch_page(refex_client *c, char *text, char **out)
{
    json_error_t jerr;
    json_t *r = json_loads(text, 0, &jerr);
    json_t *cursor = json_object_get(r, "cursor");
    size_t n = json_array_size(json_object_get(r, "messages"));
    if (json_is_integer(cursor) && json_integer_value(cursor) > c->w_after)
        c->w_after = json_integer_value(cursor);
    json_decref(r);
    watch_arm(c); /* if this fails, the next call tries again */
    clear_error(c);
    if (n == 0) {
        free(text);
        return refex_client_fail(c, REFEX_E_TIMEOUT, "no new message yet");
    }
    *out = text;
    return REFEX_OK;
}

int refex_client_watch_next(refex_client *c, char **out)
{
    char *text = NULL;
    int readable = 0, rc;
    if (out)
        *out = NULL;
    if (!c || !out)
        return refex_client_fail(c, REFEX_E_INVAL, "NULL argument");
    clear_error(c);
    if (!c->w_on)
        return refex_client_fail(c, REFEX_E_INVAL, "no watch: call refex_client_watch_start");
    if (!c->w_armed && (rc = watch_arm(c)) != REFEX_OK)
        return rc;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, c->sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        if (!watch_lost(c))
            return refex_client_fail(c, REFEX_E_TIMEOUT, "no new message yet");
        connect_socket(c);
        c->w_armed = 0;
        return refex_client_fail(c, REFEX_E_UNAVAILABLE,
                                 "lost the agent at %s; the watch goes on from cursor %lld",
                                 c->endpoint, c->w_after);
    }
    c->w_armed = 0;
    if ((rc = take_reply(c, &m, &text)) != REFEX_OK)
        return rc;
    rc = reply_code(c, text, &readable);
    if (rc == REFEX_OK)
        return watch_page(c, text, out);
    if (readable)
        *out = text; /* the agent's refusal: the next call asks again */
    else
        free(text);
    return rc;
}
