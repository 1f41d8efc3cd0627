/* refex-bench: durable end-to-end throughput and latency of refex against NATS JetStream
 * (jetstream.c) and raw ZeroMQ forwarding of the same sizes, measured in the same run on
 * the same machine, so the ratios mean something on a shared, noisy host. It starts a real broker
 * and two real agents (sender, receiver) in a temp directory. "End to end" runs from the send call
 * on the sender's control socket to the receiver's commit of the decrypted message. */
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "../tests/e2e/harness.h"
#include "bench.h"
#include "util.h"

int64_t bench_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_cpu_us(pid_t pid)
{
    if (pid == 0) {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) != 0)
            return -1;
        return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
               (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    }
    /* A child that still runs: its getrusage is not ours to ask, so /proc/PID/stat's
     * utime and stime (fields 14 and 15, clock ticks, every thread). */
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

void bench_cpu_begin(result *r, int n, const char *const *names, const pid_t *pids, double *marks)
{
    r->n_procs = n < BENCH_PROCS ? n : BENCH_PROCS;
    for (int i = 0; i < r->n_procs; i++) {
        r->proc[i] = names[i];
        marks[i] = bench_cpu_us(pids[i]);
    }
}

void bench_cpu_end(result *r, const pid_t *pids, const double *marks, int n_msgs)
{
    for (int i = 0; i < r->n_procs; i++) {
        double now = bench_cpu_us(pids[i]);
        r->cpu_us[i] = now < 0 || marks[i] < 0 || n_msgs <= 0 ? -1 : (now - marks[i]) / n_msgs;
    }
}

void bench_percentiles(double *v, int n, result *r)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    r->p50_ms = v[n / 2];
    r->p99_ms = v[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1];
}

/* ---- baseline: DEALER -> ROUTER -> DEALER over loopback TCP, no crypto, no disk -------- */

typedef struct {
    void *ctx;
    char front[64], back[64];
    int n;
    volatile int ready;
} fwd_args;

static void *forwarder(void *arg)
{
    fwd_args *a = arg;
    void *front = zmq_socket(a->ctx, ZMQ_ROUTER), *back = zmq_socket(a->ctx, ZMQ_ROUTER);
    int hwm = 0;
    zmq_setsockopt(front, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(back, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_bind(front, "tcp://127.0.0.1:*");
    zmq_bind(back, "tcp://127.0.0.1:*");
    size_t l = sizeof a->front;
    zmq_getsockopt(front, ZMQ_LAST_ENDPOINT, a->front, &l);
    l = sizeof a->back;
    zmq_getsockopt(back, ZMQ_LAST_ENDPOINT, a->back, &l);
    a->ready = 1;
    /* The receiver announces itself first, so we know its routing id. */
    zmq_msg_t rid, body;
    zmq_msg_init(&rid);
    zmq_msg_init(&body);
    zmq_msg_recv(&rid, back, 0);
    zmq_msg_recv(&body, back, 0);
    zmq_msg_close(&body);
    for (int i = 0; i < a->n; i++) {
        zmq_msg_t sid, m;
        zmq_msg_init(&sid);
        zmq_msg_init(&m);
        zmq_msg_recv(&sid, front, 0);
        zmq_msg_recv(&m, front, 0);
        zmq_send(back, zmq_msg_data(&rid), zmq_msg_size(&rid), ZMQ_SNDMORE);
        zmq_msg_send(&m, back, 0);
        zmq_msg_close(&sid);
        zmq_msg_close(&m);
    }
    zmq_msg_close(&rid);
    zmq_close(front);
    zmq_close(back);
    return NULL;
}

static int raw_zmq(const bench_case *c, result *r)
{
    void *ctx = zmq_ctx_new();
    fwd_args fa;
    memset(&fa, 0, sizeof fa);
    fa.ctx = ctx;
    fa.n = c->n;
    pthread_t th;
    pthread_create(&th, NULL, forwarder, &fa);
    while (!fa.ready) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    void *snd = zmq_socket(ctx, ZMQ_DEALER), *rcv = zmq_socket(ctx, ZMQ_DEALER);
    int hwm = 0;
    zmq_setsockopt(snd, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(rcv, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_connect(snd, fa.front);
    zmq_connect(rcv, fa.back);
    zmq_send(rcv, "hi", 2, 0);
    uint8_t *buf = calloc(1, c->size);
    double *lat = calloc((size_t)c->n, sizeof *lat);
    int64_t t0 = bench_now_us(), last = t0;
    /* Open loop: the sender never waits for the receiver, like refex's outbox. */
    for (int i = 0; i < c->n; i++) {
        int64_t t = bench_now_us();
        memcpy(buf, &t, sizeof t);
        zmq_send(snd, buf, c->size, 0);
    }
    for (int i = 0; i < c->n; i++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, rcv, 0);
        int64_t sent;
        memcpy(&sent, zmq_msg_data(&m), sizeof sent);
        last = bench_now_us();
        lat[i] = (double)(last - sent) / 1000.0;
        zmq_msg_close(&m);
    }
    r->msgs_per_s = c->n / ((double)(last - t0) / 1e6);
    bench_percentiles(lat, c->n, r);
    pthread_join(th, NULL);
    int linger = 0;
    zmq_setsockopt(snd, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(rcv, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(snd);
    zmq_close(rcv);
    zmq_ctx_term(ctx);
    free(buf);
    free(lat);
    return 0;
}

/* ---- refex: sender agent -> broker -> receiver agent, durable at every hop ------------- */

#define CLIENTS 8

typedef struct {
    char url[800];
    const char *pad;
    int n;
    int failed;
} client_args;

char *bench_send_request(const char *summary)
{
    /* A complete referral: the agent refuses one without its required fields. */
    json_t *req = json_pack(
        "{s:s, s:[s], s:s, s:s, s:{s:s, s:s, s:{s:s, s:s}, s:{s:s}, s:{s:s, s:s}, s:s, s:s,"
        " s:s}}",
        "cmd", "send", "to", "receiver", "type", "referral", "case", "BENCH", "body", "kind",
        "REFERRAL_PRE_BIRTH", "summary", summary, "subject", "kind", "SUBJECT_UNBORN", "reference",
        "UB-BENCH", "referrer", "reference", "MW-BENCH", "lawful_basis", "article6",
        "ARTICLE6_PUBLIC_TASK", "article9", "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST", "consent",
        "CONSENT_NOT_SOUGHT_SAFEGUARDING", "purpose", "PURPOSE_SAFEGUARDING", "urgency",
        "URGENCY_ROUTINE");
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return text;
}

/* Messages per control request: 1 is one "send" each (what `refex send` does); more is a
 * "send_batch" of that many (--bulk). */
static int g_bulk = 1;

/* The request for the next k messages. */
static char *next_request(const char *pad, int k)
{
    if (k == 1)
        return bench_send_request(pad);
    json_t *msgs = json_array();
    for (int j = 0; j < k; j++) {
        char *one = bench_send_request(pad);
        json_t *m = json_loads(one, 0, NULL);
        free(one);
        json_object_del(m, "cmd");
        json_array_append_new(msgs, m);
    }
    json_t *req = json_pack("{s:s, s:o}", "cmd", "send_batch", "messages", msgs);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return text;
}

/* A reply is good if it, and with a batch each of its results, says ok. */
static int reply_ok(const json_t *reply)
{
    json_t *res = json_object_get(reply, "results");
    for (size_t j = 0; j < json_array_size(res); j++)
        if (!json_is_true(json_object_get(json_array_get(res, j), "ok")))
            return 0;
    return json_is_true(json_object_get(reply, "ok"));
}

/* One control-socket client: sends its share of messages, each request after the previous
 * one was committed to the sender's outbox. */
static void *client(void *arg)
{
    client_args *ca = arg;
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_REQ);
    zmq_connect(s, ca->url);
    for (int i = 0; i < ca->n && !ca->failed;) {
        int k = ca->n - i < g_bulk ? ca->n - i : g_bulk;
        char *text = next_request(ca->pad, k);
        zmq_send(s, text, strlen(text), 0);
        free(text);
        i += k;
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, s, 0);
        json_error_t jerr;
        json_t *reply = json_loadb(zmq_msg_data(&m), zmq_msg_size(&m), 0, &jerr);
        zmq_msg_close(&m);
        if (!reply_ok(reply)) {
            fprintf(stderr, "refex-bench: send refused: %s\n",
                    json_string_value(json_object_get(reply, "error")));
            ca->failed = 1;
        }
        json_decref(reply);
    }
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return NULL;
}

static int refex_run(h_net *net, const bench_case *c, int round, result *r)
{
    char path[700];
    h_path(net, path, sizeof path, "data/sender/control.sock");
    char *pad = malloc(c->size + 1);
    memset(pad, 'x', c->size);
    pad[c->size] = 0;
    long long before = h_sql_int(net, "data/receiver/agent.db", "SELECT count(*) FROM inbox");
    long long receipts = h_sql_int(net, "data/sender/agent.db", "SELECT count(*) FROM receipts");
    static const char *const names[] = {"broker", "sender", "receiver", "clients"};
    pid_t pids[] = {net->broker.pid, net->agents[h_agent_index(net, "sender")].pid,
                    net->agents[h_agent_index(net, "receiver")].pid, 0};
    double marks[BENCH_PROCS];
    bench_cpu_begin(r, BENCH_PROCS, names, pids, marks);
    pthread_t th[CLIENTS];
    client_args ca[CLIENTS];
    int failed = 0;
    for (int k = 0; k < CLIENTS; k++) {
        snprintf(ca[k].url, sizeof ca[k].url, "ipc://%s", path);
        ca[k].pad = pad;
        ca[k].n = c->n / CLIENTS + (k < c->n % CLIENTS);
        ca[k].failed = 0;
        pthread_create(&th[k], NULL, client, &ca[k]);
    }
    for (int k = 0; k < CLIENTS; k++) {
        pthread_join(th[k], NULL);
        failed |= ca[k].failed;
    }
    double clients_us = bench_cpu_us(0) - marks[3]; /* before this thread starts polling */
    free(pad);
    if (failed)
        return -1;
    long long want = before + c->n;
    int64_t deadline = refex_mono_ms() + 600000;
    while (h_sql_int(net, "data/receiver/agent.db", "SELECT count(*) FROM inbox") < want ||
           h_sql_int(net, "data/sender/agent.db", "SELECT count(*) FROM receipts") <
               receipts + c->n) {
        if (refex_mono_ms() > deadline)
            return -1;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    /* CPU to the last receipt at the sender: the whole end-to-end cost of each message. */
    bench_cpu_end(r, pids, marks, c->n);
    r->cpu_us[3] = clients_us / c->n;
    /* Latency per message: receiver's commit time minus the envelope's creation time (both
     * milliseconds of the same clock); throughput over the whole round. */
    char sql[256];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    h_path(net, path, sizeof path, "data/receiver/agent.db");
    sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    snprintf(sql, sizeof sql,
             "SELECT received_ms - created_ms, created_ms, received_ms FROM inbox "
             "ORDER BY rowid LIMIT -1 OFFSET %lld",
             before);
    sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    double *lat = calloc((size_t)c->n, sizeof *lat);
    int k = 0;
    int64_t first = INT64_MAX, last = 0;
    while (sqlite3_step(st) == SQLITE_ROW && k < c->n) {
        lat[k++] = (double)sqlite3_column_int64(st, 0);
        int64_t cr = sqlite3_column_int64(st, 1), rv = sqlite3_column_int64(st, 2);
        first = cr < first ? cr : first;
        last = rv > last ? rv : last;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    (void)round;
    r->msgs_per_s = k / ((double)(last - first + 1) / 1000.0);
    bench_percentiles(lat, k, r);
    free(lat);
    return 0;
}

/* CPU per message of each process, refex's then JetStream's. */
static void print_cpu(const result *rr, const result *jr)
{
    const result *rs[2] = {rr, jr};
    const char *label[2] = {"refex", "JetStream"};
    printf("       cpu us/msg:");
    for (int k = 0; k < 2 && rs[k]; k++) {
        double total = 0;
        printf("%s %s", k ? " |" : "", label[k]);
        for (int i = 0; i < rs[k]->n_procs; i++) {
            printf(" %s %.0f", rs[k]->proc[i], rs[k]->cpu_us[i]);
            total += rs[k]->cpu_us[i] > 0 ? rs[k]->cpu_us[i] : 0;
        }
        printf(" = %.0f", total);
    }
    printf("\n");
}

/* REFEX_BIN_DIR, if unset: where this program is, or the build tree one level up. */
static void find_binaries(const char *argv0)
{
    if (getenv("REFEX_BIN_DIR"))
        return;
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s", argv0);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    setenv("REFEX_BIN_DIR", dir, 1);
    /* the binaries live one level up from bench/ in the build tree */
    char up[1100];
    snprintf(up, sizeof up, "%s/../refex", dir);
    FILE *f = fopen(up, "r");
    if (f) {
        fclose(f);
        snprintf(up, sizeof up, "%s/..", dir);
        setenv("REFEX_BIN_DIR", up, 1);
    }
}

static int open_loop(h_net *net, int rate, double scale)
{
    result o;
    int n = (int)(2500 * scale);
    n = n > 0 ? n : 1;
    fprintf(stderr, "refex-bench: open loop, %d x 1 KiB at %d/s...\n", n, rate);
    if (openloop_run(net->root, rate, n, &o) != 0) {
        fprintf(stderr, "refex-bench: open-loop run failed\n");
        return 1;
    }
    printf("open loop, 1 KiB, %d offered at %d/s: %.0f msg/s delivered, latency from the "
           "scheduled send to the receiver's commit p50 %.1f ms, p99 %.1f ms\n",
           n, rate, o.msgs_per_s, o.p50_ms, o.p99_ms);
    return 0;
}

/* One row of the table (and its CPU line) for a case. */
static void print_row(const bench_case *c, const result *rr, int js, const result *jr,
                      const result *zr)
{
    char label[32], jcols[64] = "", jthr[16] = "-", jp50[16] = "-";
    snprintf(label, sizeof label, "%zuK", c->size / 1024);
    if (js == 0) {
        snprintf(jcols, sizeof jcols, "%9.0f %7.1f %7.1f", jr->msgs_per_s, jr->p50_ms, jr->p99_ms);
        snprintf(jthr, sizeof jthr, "%.3fx", rr->msgs_per_s / jr->msgs_per_s);
        snprintf(jp50, sizeof jp50, "%.1fx",
                 rr->p50_ms / (jr->p50_ms > 0.001 ? jr->p50_ms : 0.001));
    } else {
        snprintf(jcols, sizeof jcols, "%9s %7s %7s", "-", "-", "-");
    }
    printf("%-6s %5d | %9.0f %7.1f %7.1f | %s | %9.0f %7.2f | %8s %7.3fx %8s\n", label, c->n,
           rr->msgs_per_s, rr->p50_ms, rr->p99_ms, jcols, zr->msgs_per_s, zr->p50_ms, jthr,
           rr->msgs_per_s / zr->msgs_per_s, jp50);
    print_cpu(rr, js == 0 ? jr : NULL);
    fflush(stdout);
}

/* The table: each size through JetStream, refex and raw ZeroMQ. */
static int table(h_net *net, double scale, size_t only)
{
    bench_case cases[] = {{1024, (int)(3000 * scale)},
                          {64 * 1024, (int)(500 * scale)},
                          {1024 * 1024, (int)(40 * scale)}};
    printf("%-6s %5s | %9s %7s %7s | %9s %7s %7s | %9s %7s | %8s %8s %8s\n", "size", "n", "refex/s",
           "p50 ms", "p99 ms", "js/s", "p50 ms", "p99 ms", "zmq/s", "p50 ms", "thr/js", "thr/zmq",
           "p50/js");
    int js_missing = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (only && cases[i].size != only)
            continue;
        result rr, jr, zr;
        memset(&jr, 0, sizeof jr);
        fprintf(stderr, "refex-bench: %zu bytes x %d...\n", cases[i].size, cases[i].n);
        int js = jetstream_run(net->root, &cases[i], (int)i, &jr);
        if (js < 0 || refex_run(net, &cases[i], (int)i, &rr) != 0 || raw_zmq(&cases[i], &zr) != 0) {
            fprintf(stderr, "refex-bench: run failed\n");
            return 1;
        }
        js_missing |= js > 0;
        print_row(&cases[i], &rr, js, &jr, &zr);
    }
    printf("thr/js = refex throughput / NATS JetStream's (publish with PubAck, pull consumer "
           "with AckSync, file storage); thr/zmq = refex / raw ZeroMQ forwarding; p50/js = "
           "refex median latency / JetStream's.\n");
    if (js_missing)
        printf("JetStream: not measured (nats-server or libnats-dev missing: run "
               "deploy/install-bench-deps.sh, then rebuild).\n");
    return 0;
}

/* One network (a broker on the store REFEX_TEST_PG_URL_FILE names, else SQLite), one case. */
static int store_case(const bench_case *c, result *r)
{
    static const char *const agencies[] = {"sender", "receiver", NULL};
    h_net net;
    int rc = h_net_init(&net, agencies, NULL, "") == 0 && h_net_start_broker(&net) == 0 &&
                     h_net_start_agent(&net, "sender") == 0 &&
                     h_net_start_agent(&net, "receiver") == 0
                 ? refex_run(&net, c, 0, r)
                 : -1;
    h_net_fini(&net);
    return rc;
}

/* --store-pg: the same 1 KiB and 64 KiB runs with the broker on SQLite and on PostgreSQL (a
 * primary with a synchronous standby, tests/pg_cluster.sh), in one run. */
static int store_table(double scale)
{
    char dir[] = "/tmp/refex-bench-pg-XXXXXX", cmd[1024], url[600];
    bench_case cases[] = {{1024, (int)(3000 * scale)}, {64 * 1024, (int)(500 * scale)}};
    if (!mkdtemp(dir) || chmod(dir, 0755) != 0) /* the servers may run as another user */
        return 1;
    snprintf(cmd, sizeof cmd, "'%s/tests/pg_cluster.sh' start '%s/pg' >/dev/null", REFEX_SOURCE_DIR,
             dir);
    fprintf(stderr, "refex-bench: starting PostgreSQL (primary + synchronous standby)...\n");
    if (system(cmd) != 0) {
        fprintf(stderr, "refex-bench: could not start PostgreSQL (postgresql-15 installed?)\n");
        return 1;
    }
    snprintf(url, sizeof url, "%s/pg/url", dir);
    printf("%-6s %-10s %5s | %9s %7s %7s | %8s\n", "size", "store", "n", "refex/s", "p50 ms",
           "p99 ms", "pg/sqlite");
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof cases / sizeof cases[0]; i++) {
        result lite, pg;
        fprintf(stderr, "refex-bench: %zu bytes x %d, SQLite then PostgreSQL...\n", cases[i].size,
                cases[i].n);
        unsetenv("REFEX_TEST_PG_URL_FILE");
        if ((rc = store_case(&cases[i], &lite)) != 0)
            break;
        setenv("REFEX_TEST_PG_URL_FILE", url, 1);
        rc = store_case(&cases[i], &pg);
        unsetenv("REFEX_TEST_PG_URL_FILE");
        if (rc != 0)
            break;
        printf("%-6s %-10s %5d | %9.0f %7.1f %7.1f |\n", i ? "64K" : "1K", "sqlite", cases[i].n,
               lite.msgs_per_s, lite.p50_ms, lite.p99_ms);
        print_cpu(&lite, NULL);
        printf("%-6s %-10s %5d | %9.0f %7.1f %7.1f | %7.3fx\n", i ? "64K" : "1K", "postgresql",
               cases[i].n, pg.msgs_per_s, pg.p50_ms, pg.p99_ms, pg.msgs_per_s / lite.msgs_per_s);
        print_cpu(&pg, NULL);
        fflush(stdout);
    }
    snprintf(cmd, sizeof cmd, "'%s/tests/pg_cluster.sh' destroy '%s/pg' >/dev/null; rm -rf '%s'",
             REFEX_SOURCE_DIR, dir, dir);
    if (system(cmd) != 0)
        fprintf(stderr, "refex-bench: could not remove %s\n", dir);
    if (rc != 0)
        fprintf(stderr, "refex-bench: run failed\n");
    return rc != 0;
}

/* --replay's N: digits only, 1 to 100,000,000; -1 otherwise. */
static int replay_count(const char *arg)
{
    char *end = NULL;
    long v = strtol(arg, &end, 10);
    return end != arg && *end == 0 && v >= 1 && v <= 100000000 ? (int)v : -1;
}

int main(int argc, char **argv)
{
    double scale = 1.0;
    int opt, open_rate = 0, store_pg = 0, replay = -1; /* -1: no replay; 0: 1,000,000 x scale */
    size_t only = 0;
    static const struct option opts[] = {
        {"scale", required_argument, 0, 's'},  {"open-loop", required_argument, 0, 'o'},
        {"size", required_argument, 0, 'z'},   {"bulk", required_argument, 0, 'b'},
        {"replay", optional_argument, 0, 'r'}, {"store-pg", no_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 's') {
            scale = atof(optarg);
        } else if (opt == 'o') {
            open_rate = atoi(optarg);
        } else if (opt == 'b') {
            g_bulk = atoi(optarg);
        } else if (opt == 'r') {
            /* --replay, --replay=N or --replay N */
            const char *arg = optarg;
            if (!arg && optind < argc && argv[optind][0] >= '0' && argv[optind][0] <= '9')
                arg = argv[optind++];
            if ((replay = arg ? replay_count(arg) : 0) < 0) {
                fprintf(stderr, "refex-bench: --replay N needs N from 1 to 100000000\n");
                return 2;
            }
        } else if (opt == 'p') {
            store_pg = 1;
        } else if (opt == 'z') {
            only = (size_t)strtoul(optarg, NULL, 10);
        } else {
            printf("usage: refex-bench [--scale F] [--size BYTES] [--bulk K] [--open-loop RATE] "
                   "[--replay [N]] [--store-pg]\n\n"
                   "Measures refex end to end (send call to the receiver's commit, durable at\n"
                   "every hop) against NATS JetStream and raw ZeroMQ DEALER->ROUTER->DEALER\n"
                   "forwarding of the same sizes, in one run, and prints one table with the\n"
                   "ratios and the CPU per message of every process. --scale multiplies the\n"
                   "message counts (default 1.0). --size runs one of the sizes only (1024,\n"
                   "65536 or 1048576). --bulk K hands the sender K messages per control\n"
                   "request (send_batch; default 1, one send each). --open-loop RATE offers 1 KiB\n"
                   "referrals at RATE per second on schedule (2500 x scale of them) and prints\n"
                   "the latency from each one's scheduled time to the receiver's commit.\n"
                   "--replay [N] queues N 1 KiB referrals (default 1000000 x scale) at the\n"
                   "broker for a receiver that is offline (the store filled before the broker\n"
                   "starts, with envelopes sealed and signed for the sender), then starts the\n"
                   "receiver and prints the replay rate (goal >= 10000 msg/s), the broker's\n"
                   "peak RSS (goal < 64 MiB), CPU per message of broker and receiver, and\n"
                   "whether every message arrived exactly once. --store-pg runs 1 KiB and\n"
                   "64 KiB with the broker on SQLite and then on PostgreSQL (a primary and a\n"
                   "synchronous standby on loopback, postgresql-15) and prints both. Needs\n"
                   "the refex binaries next to it (or REFEX_BIN_DIR); JetStream needs\n"
                   "deploy/install-bench-deps.sh.\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (only && only != 1024 && only != 64 * 1024 && only != 1024 * 1024) {
        fprintf(stderr, "refex-bench: --size is 1024, 65536 or 1048576\n");
        return 2;
    }
    if (refex_init() != REFEX_OK || scale <= 0 || open_rate < 0 || g_bulk < 1 || g_bulk > 1024)
        return 2;
    find_binaries(argv[0]);
    if (replay >= 0) {
        int n = replay > 0 ? replay : (int)(1000000 * scale);
        return replay_run(n > 0 ? n : 1);
    }
    if (store_pg)
        return store_table(scale);
    static const char *const agencies[] = {"sender", "receiver", NULL};
    h_net net;
    fprintf(stderr, "refex-bench: starting a broker and two agents...\n");
    if (h_net_init(&net, agencies, NULL, "") != 0 || h_net_start_broker(&net) != 0 ||
        h_net_start_agent(&net, "sender") != 0 || h_net_start_agent(&net, "receiver") != 0) {
        fprintf(stderr, "refex-bench: could not start the test network\n");
        h_net_fini(&net);
        return 1;
    }
    int rc = open_rate > 0 ? open_loop(&net, open_rate, scale) : table(&net, scale, only);
    h_net_fini(&net);
    return rc;
}
