/* Process and wire helpers for the end-to-end tests. Children are started with their
 * stdout on a pipe (readiness lines) and stderr in a log file under the test tree. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sqlite3.h>
#include <zmq.h>

#include "body.h"
#include "codec.h"
#include "link.h"
#include "util.h"

void h_path(const h_net *n, char *buf, size_t len, const char *fmt, ...)
{
    char rel[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    snprintf(buf, len, "%s/%s", n->root, rel);
}

int h_spawn(h_proc *p, const char *name, char *const argv[], const char *log_path)
{
    int fds[2];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->log, sizeof p->log, "%s", log_path ? log_path : "/dev/null");
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        int log = open(p->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fds[1], 1);
        if (log >= 0)
            dup2(log, 2);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    p->pid = pid;
    p->out_fd = fds[0];
    return 0;
}

int h_wait_line(h_proc *p, const char *prefix, int timeout_ms, char *line, size_t len)
{
    char buf[1024];
    size_t used = 0;
    int64_t deadline = refex_mono_ms() + timeout_ms;
    while (refex_mono_ms() < deadline) {
        struct pollfd pfd = {p->out_fd, POLLIN, 0};
        int64_t left = deadline - refex_mono_ms();
        int r = poll(&pfd, 1, left > 0 ? (int)left : 0);
        if (r <= 0)
            continue;
        /* Read byte by byte so nothing after the line is consumed. */
        char c;
        ssize_t got = read(p->out_fd, &c, 1);
        if (got <= 0)
            return -1;
        if (c != '\n') {
            if (used < sizeof buf - 1)
                buf[used++] = c;
            continue;
        }
        buf[used] = 0;
        used = 0;
        if (strncmp(buf, prefix, strlen(prefix)) == 0) {
            if (line)
                snprintf(line, len, "%s", buf);
            return 0;
        }
    }
    return -1;
}

int h_alive(const h_proc *p)
{
    int status;
    return p->pid > 0 && waitpid(p->pid, &status, WNOHANG) == 0;
}

int h_wait_exit(h_proc *p, int timeout_ms)
{
    int status;
    int64_t deadline = refex_mono_ms() + timeout_ms;
    if (p->pid <= 0)
        return -1;
    /* Readiness of exit: the child's stdout closes when it exits. */
    while (refex_mono_ms() < deadline) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            if (p->out_fd > 0)
                close(p->out_fd);
            p->out_fd = -1;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        struct pollfd pfd = {p->out_fd, POLLIN, 0};
        char drain[256];
        if (poll(&pfd, 1, 50) > 0 && read(p->out_fd, drain, sizeof drain) <= 0) {
            /* EOF: the exit is imminent; waitpid on the next round. */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return -1;
}

void h_stop(h_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGTERM);
    if (h_wait_exit(p, 10000) < 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
    if (p->out_fd > 0)
        close(p->out_fd);
    p->out_fd = -1;
}

int h_run(char *const argv[], char *out, size_t outlen)
{
    int fds[2], status = 0;
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    ssize_t r;
    char sink[4096];
    while ((r = read(fds[0], used + 1 < outlen ? out + used : sink,
                     used + 1 < outlen ? outlen - used - 1 : sizeof sink)) > 0)
        if (used + 1 < outlen)
            used += (size_t)r;
    if (outlen)
        out[used] = 0;
    close(fds[0]);
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int h_cli(const h_net *n, char *out, size_t outlen, const char *const *args)
{
    char *argv[64];
    char exe[1100];
    int k = 0;
    snprintf(exe, sizeof exe, "%s/refex", n->bin);
    argv[k++] = exe;
    for (int i = 0; args[i] && k < 63; i++)
        argv[k++] = (char *)args[i];
    argv[k] = NULL;
    return h_run(argv, out, outlen);
}

int h_cli_agent(const h_net *n, const char *agency, char *out, size_t outlen,
                const char *const *args)
{
    const char *full[64];
    char conf[600];
    int k = 0;
    h_path(n, conf, sizeof conf, "conf/%s.conf", agency);
    full[k++] = "-c";
    full[k++] = conf;
    for (int i = 0; args[i] && k < 63; i++)
        full[k++] = args[i];
    full[k] = NULL;
    return h_cli(n, out, outlen, full);
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int keys_new(h_net *n, const char *id, const char *role)
{
    char out[2048], dir[600];
    h_path(n, dir, sizeof dir, "keys");
    const char *args[] = {"keys", "new", "--agency", id, "--role", role, "--out", dir, NULL};
    return h_cli(n, out, sizeof out, args);
}

static int dir_add(h_net *n, const char *id)
{
    char out[2048], file[600], pub[600];
    h_path(n, file, sizeof file, "directory.rdir");
    h_path(n, pub, sizeof pub, "keys/%s.public", id);
    const char *args[] = {"directory", "add", "--file", file, "--keys", pub, NULL};
    return h_cli(n, out, sizeof out, args);
}

int h_net_init(h_net *n, const char *const *agencies, const char *const *listed_only,
               const char *broker_extra_conf)
{
    char path[600], out[2048], file[600], anchor[600];
    memset(n, 0, sizeof *n);
    const char *bin = getenv("REFEX_BIN_DIR");
    snprintf(n->bin, sizeof n->bin, "%s", bin ? bin : ".");
    snprintf(n->root, sizeof n->root, "/tmp/refex-e2e-XXXXXX");
    if (!mkdtemp(n->root))
        return -1;
    const char *sub[] = {"keys", "conf", "data", "logs"};
    for (int i = 0; i < 4; i++) {
        h_path(n, path, sizeof path, "%s", sub[i]);
        if (mkdir(path, 0700) != 0)
            return -1;
    }
    if (keys_new(n, "operator", "trust-anchor") || keys_new(n, "broker", "broker"))
        return -1;
    h_path(n, file, sizeof file, "directory.rdir");
    const char *init[] = {"directory", "init", "--file", file, NULL};
    if (h_cli(n, out, sizeof out, init) != 0 || dir_add(n, "broker"))
        return -1;
    for (int pass = 0; pass < 2; pass++) {
        const char *const *list = pass ? listed_only : agencies;
        for (int i = 0; list && list[i]; i++)
            if (keys_new(n, list[i], list[i]) || dir_add(n, list[i]))
                return -1;
    }
    h_path(n, anchor, sizeof anchor, "keys/operator.secret");
    const char *sign[] = {"directory", "sign", "--file", file, "--anchor", anchor, NULL};
    if (h_cli(n, out, sizeof out, sign) != 0)
        return -1;

    char conf[4096], store[1100] = "";
    if (h_pg_url()) {
        if (h_pg_empty() != 0)
            return -1;
        snprintf(store, sizeof store, "store = %s\n", h_pg_url());
    }
    snprintf(conf, sizeof conf,
             "listen = tcp://127.0.0.1:*\ndata_dir = ../data/broker\n"
             "directory = ../directory.rdir\ntrust_anchor = ../keys/operator.public\n"
             "keys = ../keys/broker.secret\n%s%s\n",
             store, broker_extra_conf ? broker_extra_conf : "");
    h_path(n, path, sizeof path, "conf/broker.conf");
    if (write_text(path, conf))
        return -1;
    for (int i = 0; agencies && agencies[i] && i < H_MAX_AGENTS; i++)
        snprintf(n->agent_names[n->n_agents++], 64, "%s", agencies[i]);
    return 0;
}

int h_net_start_broker(h_net *n)
{
    return h_net_start_broker_with(n, NULL);
}

int h_net_start_broker_with(h_net *n, const char *extra_arg)
{
    char conf[600], log[600], exe[1100], line[512];
    h_path(n, conf, sizeof conf, "conf/broker.conf");
    h_path(n, log, sizeof log, "logs/broker.log");
    snprintf(exe, sizeof exe, "%s/refex-broker", n->bin);
    char *argv[] = {exe, "-c", conf, (char *)extra_arg, NULL};
    if (h_spawn(&n->broker, "broker", argv, log) != 0)
        return -1;
    if (h_wait_line(&n->broker, "READY ", H_TIMEOUT_MS, line, sizeof line) != 0)
        return -1;
    snprintf(n->endpoint, sizeof n->endpoint, "%s", line + 6);
    /* Agents' configs name the endpoint, known only now. */
    for (int i = 0; i < n->n_agents; i++) {
        char path[600], text[1024];
        const char *a = n->agent_names[i];
        snprintf(text, sizeof text,
                 "agency = %s\nbroker = %s\ndata_dir = ../data/%s\n"
                 "directory = ../directory.rdir\ntrust_anchor = ../keys/operator.public\n"
                 "keys = ../keys/%s.secret\n",
                 a, n->endpoint, a, a);
        h_path(n, path, sizeof path, "conf/%s.conf", a);
        if (write_text(path, text))
            return -1;
    }
    return 0;
}

int h_net_start_agent(h_net *n, const char *agency)
{
    char conf[600], log[600], exe[1100], line[256];
    for (int i = 0; i < n->n_agents; i++) {
        if (strcmp(n->agent_names[i], agency) != 0)
            continue;
        h_path(n, conf, sizeof conf, "conf/%s.conf", agency);
        h_path(n, log, sizeof log, "logs/%s.log", agency);
        snprintf(exe, sizeof exe, "%s/refex-agent", n->bin);
        char *argv[] = {exe, "-c", conf, NULL};
        if (h_spawn(&n->agents[i], agency, argv, log) != 0)
            return -1;
        return h_wait_line(&n->agents[i], "READY ", H_TIMEOUT_MS, line, sizeof line);
    }
    return -1;
}

int h_net_up(h_net *n, const char *const *agencies, const char *const *listed_only,
             const char *broker_extra_conf)
{
    if (h_net_init(n, agencies, listed_only, broker_extra_conf) != 0 || h_net_start_broker(n) != 0)
        return -1;
    for (int i = 0; agencies[i]; i++)
        if (h_net_start_agent(n, agencies[i]) != 0)
            return -1;
    return 0;
}

void h_net_fini(h_net *n)
{
    for (int i = 0; i < n->n_agents; i++)
        h_stop(&n->agents[i]);
    h_stop(&n->broker);
    if (n->root[0] && !getenv("REFEX_KEEP_E2E")) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", n->root);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", n->root);
    }
}

static int file_contains(const char *path, const void *needle, size_t len)
{
    uint8_t *data = NULL;
    size_t n = 0;
    int found = 0;
    if (refex_file_read(path, 1u << 30, &data, &n) != REFEX_OK)
        return 0;
    for (size_t i = 0; n >= len && i <= n - len && !found; i++)
        found = memcmp(data + i, needle, len) == 0;
    free(data);
    return found;
}

int h_tree_contains(const char *path, const void *needle, size_t len)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return 0;
    if (!S_ISDIR(st.st_mode))
        return S_ISREG(st.st_mode) && file_contains(path, needle, len);
    DIR *d = opendir(path);
    struct dirent *e;
    int found = 0;
    while (d && !found && (e = readdir(d))) {
        char sub[4096];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        found = h_tree_contains(sub, needle, len);
    }
    if (d)
        closedir(d);
    return found;
}

/* ---- raw client -------------------------------------------------------------------- */

int h_client_open(h_client *c, const h_net *n, const char *agency, refex_keys *keys)
{
    char path[600], err[512];
    refex_pubkeys broker;
    memset(c, 0, sizeof *c);
    if (keys) {
        c->keys = keys;
    } else {
        h_path(n, path, sizeof path, "keys/%s.secret", agency);
        if (refex_keys_load(path, &c->keys, err, sizeof err) != REFEX_OK)
            return -1;
    }
    h_path(n, path, sizeof path, "keys/broker.public");
    if (refex_pubkeys_load(path, &broker, err, sizeof err) != REFEX_OK)
        return -1;
    c->ctx = zmq_ctx_new();
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    refex_link_tune(c->sock, 64u * 1024 * 1024);
    if (refex_link_curve_client(c->sock, c->keys, broker.transport_pk) != REFEX_OK ||
        refex_link_monitor(c->ctx, c->sock, &c->mon) != REFEX_OK)
        return -1;
    return zmq_connect(c->sock, n->endpoint);
}

void h_client_close(h_client *c)
{
    int linger = 0;
    if (c->sock) {
        zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->sock);
    }
    if (c->mon)
        zmq_close(c->mon);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    refex_keys_destroy(&c->keys);
    memset(c, 0, sizeof *c);
}

int h_client_send_raw(h_client *c, const void *data, size_t len)
{
    return zmq_send(c->sock, data, len, 0) < 0 ? -1 : 0;
}

int h_client_send(h_client *c, Refex__V1__Frame *f)
{
    f->version = REFEX_PROTOCOL_VERSION;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (refex_frame_pack(f, &buf, &len) != REFEX_OK)
        return -1;
    int rc = h_client_send_raw(c, buf, len);
    free(buf);
    return rc;
}

Refex__V1__Frame *h_client_recv(h_client *c, int timeout_ms)
{
    zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return NULL;
    zmq_msg_t m;
    zmq_msg_init(&m);
    Refex__V1__Frame *f = NULL;
    if (zmq_msg_recv(&m, c->sock, 0) >= 0 &&
        refex_frame_unpack(zmq_msg_data(&m), zmq_msg_size(&m), 1u << 30, &f) != REFEX_OK)
        f = NULL;
    zmq_msg_close(&m);
    return f;
}

int h_client_wait_event(h_client *c, int event, int timeout_ms)
{
    int64_t deadline = refex_mono_ms() + timeout_ms;
    while (refex_mono_ms() < deadline) {
        zmq_pollitem_t it = {c->mon, 0, ZMQ_POLLIN, 0};
        int64_t left = deadline - refex_mono_ms();
        if (zmq_poll(&it, 1, left > 0 ? (long)left : 0) <= 0)
            continue;
        int ev;
        while ((ev = refex_link_monitor_event(c->mon, NULL)) >= 0)
            if (ev == event)
                return 1;
    }
    return 0;
}

int h_client_hello(h_client *c, const char *agency)
{
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Hello h = REFEX__V1__HELLO__INIT;
    h.agency = (char *)agency;
    h.software = "refex-e2e";
    f.kind_case = REFEX__V1__FRAME__KIND_HELLO;
    f.hello = &h;
    if (h_client_send(c, &f) != 0)
        return -1;
    Refex__V1__Frame *r = h_client_recv(c, H_TIMEOUT_MS);
    int ok = r && r->kind_case == REFEX__V1__FRAME__KIND_WELCOME;
    refex_frame_free(&r);
    return ok ? 0 : -1;
}

/* ---- crash and query helpers ------------------------------------------------------- */

void h_kill9(h_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
    if (p->out_fd > 0)
        close(p->out_fd);
    p->out_fd = -1;
}

int h_net_restart_broker(h_net *n)
{
    return h_net_restart_broker_with(n, NULL);
}

int h_net_restart_broker_with(h_net *n, const char *extra_arg)
{
    char path[600], text[2048];
    FILE *f;
    h_path(n, path, sizeof path, "conf/broker.conf");
    /* Pin the port the first start chose, so agents find the broker again. */
    f = fopen(path, "r");
    if (!f)
        return -1;
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = 0;
    char *listen = strstr(text, "tcp://127.0.0.1:*");
    if (listen) {
        char fixed[2600];
        *listen = 0;
        snprintf(fixed, sizeof fixed, "%s%s%s", text, n->endpoint,
                 listen + strlen("tcp://127.0.0.1:*"));
        if (write_text(path, fixed))
            return -1;
    }
    h_stop(&n->broker);
    char endpoint[512];
    snprintf(endpoint, sizeof endpoint, "%s", n->endpoint);
    int rc = h_net_start_broker_with(n, extra_arg);
    return rc == 0 && strcmp(endpoint, n->endpoint) == 0 ? 0 : -1;
}

int h_agent_index(const h_net *n, const char *agency)
{
    for (int i = 0; i < n->n_agents; i++)
        if (strcmp(n->agent_names[i], agency) == 0)
            return i;
    return -1;
}

json_t *h_control(const h_net *n, const char *agency, json_t *request)
{
    char ep[700];
    char *text = json_dumps(request, JSON_COMPACT);
    json_t *reply = NULL;
    h_path(n, ep, sizeof ep, "data/%s/control.sock", agency);
    char url[720];
    snprintf(url, sizeof url, "ipc://%s", ep);
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_REQ);
    int linger = 0, timeout = H_TIMEOUT_MS;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    if (text && zmq_connect(s, url) == 0 && zmq_send(s, text, strlen(text), 0) >= 0) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) >= 0) {
            json_error_t jerr;
            reply = json_loadb(zmq_msg_data(&m), zmq_msg_size(&m), 0, &jerr);
        }
        zmq_msg_close(&m);
    }
    free(text);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return reply;
}

long long h_sql_int(const h_net *n, const char *db_rel, const char *sql)
{
    char path[700];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (h_pg_url() && strcmp(db_rel, "data/broker/queue.db") == 0)
        return h_pg_int(sql);
    h_path(n, path, sizeof path, "%s", db_rel);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

long long h_sql_wait(const h_net *n, const char *db_rel, const char *sql, long long want,
                     int timeout_ms)
{
    int64_t deadline = refex_mono_ms() + timeout_ms;
    long long v = -1;
    while (refex_mono_ms() < deadline) {
        if ((v = h_sql_int(n, db_rel, sql)) == want)
            return v;
        h_pause();
    }
    return v;
}

int h_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0)
        close(s);
    return port;
}

void h_pause(void)
{
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
}

int h_send_json(const h_net *n, const char *from, const char *to, const char *type, json_t *body,
                char id[33])
{
    json_t *req =
        json_pack("{s:s, s:[s], s:s, s:o}", "cmd", "send", "to", to, "type", type, "body", body);
    json_t *r = req ? h_control(n, from, req) : NULL;
    int ok = json_is_true(json_object_get(r, "ok"));
    if (!ok)
        fprintf(stderr, "send %s refused: %s\n", type,
                r ? json_string_value(json_object_get(r, "detail")) : "no answer");
    snprintf(id, 33, "%s", ok ? json_string_value(json_object_get(r, "message_id")) : "");
    json_decref(req);
    json_decref(r);
    return ok ? 0 : -1;
}

/* ---- complete bodies ----------------------------------------------------------------- */

/* Synthetic values for the fields each type requires (docs/protocol.md section 10). */
static const struct {
    int type;
    const char *parent, *key, *value;
} REQUIRED[] = {
    {REFEX__V1__MESSAGE_TYPE__REFERRAL, "subject", "kind", "SUBJECT_UNBORN"},
    {REFEX__V1__MESSAGE_TYPE__REFERRAL, "subject", "reference", "UB-H-0001"},
    {REFEX__V1__MESSAGE_TYPE__REFERRAL, "referrer", "reference", "MW-H-0001"},
    {REFEX__V1__MESSAGE_TYPE__REFERRAL, NULL, "consent", "CONSENT_NOT_SOUGHT_SAFEGUARDING"},
    {REFEX__V1__MESSAGE_TYPE__REFERRAL, NULL, "urgency", "URGENCY_ROUTINE"},
    {REFEX__V1__MESSAGE_TYPE__REFERRAL, NULL, "purpose", "PURPOSE_SAFEGUARDING"},
    {REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION, "decided_by", "reference", "SW-H-0001"},
    {REFEX__V1__MESSAGE_TYPE__REFERRAL_DECISION, NULL, "purpose", "PURPOSE_SAFEGUARDING"},
    {REFEX__V1__MESSAGE_TYPE__INFORMATION_REQUEST, "requested_by", "reference", "SW-H-0001"},
    {REFEX__V1__MESSAGE_TYPE__INFORMATION_REQUEST, NULL, "purpose", "PURPOSE_SAFEGUARDING"},
    {REFEX__V1__MESSAGE_TYPE__INFORMATION_RESPONSE, "responded_by", "reference", "SM-H-0001"},
    {REFEX__V1__MESSAGE_TYPE__INFORMATION_RESPONSE, NULL, "consent", "CONSENT_GIVEN"},
    {REFEX__V1__MESSAGE_TYPE__INFORMATION_RESPONSE, NULL, "purpose", "PURPOSE_SAFEGUARDING"},
    {REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, "published_by", "reference", "SW-H-0001"},
    {REFEX__V1__MESSAGE_TYPE__CASE_UPDATE, NULL, "purpose", "PURPOSE_CASE_MANAGEMENT"},
    {0, "lawful_basis", "article6", "ARTICLE6_PUBLIC_TASK"},
    {0, "lawful_basis", "article9", "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST"},
};

json_t *h_required(const char *type, json_t *body)
{
    int t = refex_message_type_parse(type);
    for (size_t i = 0; body && i < sizeof REQUIRED / sizeof REQUIRED[0]; i++) {
        if (REQUIRED[i].type && REQUIRED[i].type != t)
            continue;
        json_t *o = body;
        if (REQUIRED[i].parent) {
            o = json_object_get(body, REQUIRED[i].parent);
            if (!json_is_object(o)) {
                o = json_object();
                json_object_set_new(body, REQUIRED[i].parent, o);
            }
        }
        if (!json_object_get(o, REQUIRED[i].key))
            json_object_set_new(o, REQUIRED[i].key, json_string(REQUIRED[i].value));
    }
    return body;
}
