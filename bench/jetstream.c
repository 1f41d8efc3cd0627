/* The peer a buyer would compare refex with: NATS JetStream (Debian's nats-server, file
 * storage) driven by the NATS C client, same sizes and counts as refex, in the same run.
 * One publisher thread publishes and waits for each PubAck; the main thread pulls with a
 * durable consumer and acknowledges each message with AckSync. Every message carries its
 * publish time, so latency is publish to receipt. Not for refex itself (bench.c). */
#include "bench.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nats/nats.h>

#include "../tests/e2e/harness.h"

#define NATS_SERVER "/usr/sbin/nats-server"

/* A loopback TCP port nobody holds now. */
static int free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* nats-server with JetStream on a free port, its store and log under dir; the URL. */
static int start_server(const char *dir, h_proc *p, char *url, size_t urllen)
{
    char conf[700], store[700], log[700];
    int port = free_port();
    snprintf(conf, sizeof conf, "%s/nats.conf", dir);
    snprintf(store, sizeof store, "%s/jetstream", dir);
    snprintf(log, sizeof log, "%s/nats.log", dir);
    FILE *f = fopen(conf, "w");
    if (port < 0 || !f) {
        if (f)
            fclose(f);
        return -1;
    }
    /* max_payload: room for the 1 MiB case and its timestamp. */
    fprintf(f, "listen: 127.0.0.1:%d\nmax_payload: 2MB\njetstream {\n  store_dir: \"%s\"\n}\n",
            port, store);
    fclose(f);
    char *argv[] = {NATS_SERVER, "-c", conf, NULL};
    if (h_spawn(p, "nats-server", argv, log) != 0)
        return -1;
    snprintf(url, urllen, "nats://127.0.0.1:%d", port);
    return 0;
}

/* Connects once the server accepts connections (its readiness), within 20 s. */
static natsConnection *connect_ready(const char *url, const h_proc *p)
{
    natsConnection *nc = NULL;
    int64_t deadline = bench_now_us() + 20 * 1000000LL;
    while (natsConnection_ConnectTo(&nc, url) != NATS_OK) {
        if (bench_now_us() > deadline || !h_alive(p))
            return NULL;
        h_pause();
    }
    return nc;
}

typedef struct {
    jsCtx *js;
    const char *subject;
    const bench_case *c;
    int failed;
} publisher;

static void *publish_all(void *arg)
{
    publisher *pb = arg;
    char *buf = malloc(pb->c->size);
    if (!buf) {
        pb->failed = 1;
        return NULL;
    }
    memset(buf, 'x', pb->c->size);
    for (int i = 0; i < pb->c->n && !pb->failed; i++) {
        int64_t t = bench_now_us();
        memcpy(buf, &t, sizeof t);
        jsPubAck *pa = NULL;
        jsErrCode jerr = 0;
        if (js_Publish(&pa, pb->js, pb->subject, buf, (int)pb->c->size, NULL, &jerr) != NATS_OK)
            pb->failed = 1;
        jsPubAck_Destroy(pa);
    }
    free(buf);
    return NULL;
}

/* Pulls and AckSyncs n messages; their latencies into lat, the last receipt time. */
static int consume(natsSubscription *sub, int n, double *lat, int64_t *last)
{
    int got = 0;
    while (got < n) {
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus s = natsSubscription_Fetch(&list, sub, 64, 30000, &jerr);
        if (s != NATS_OK && s != NATS_TIMEOUT)
            return -1;
        if (s == NATS_TIMEOUT && list.Count == 0)
            return -1; /* nothing for 30 s */
        for (int i = 0; i < list.Count && got < n; i++) {
            int64_t sent = 0, now = bench_now_us();
            if (natsMsg_GetDataLength(list.Msgs[i]) >= (int)sizeof sent)
                memcpy(&sent, natsMsg_GetData(list.Msgs[i]), sizeof sent);
            if (natsMsg_AckSync(list.Msgs[i], NULL, &jerr) != NATS_OK) {
                natsMsgList_Destroy(&list);
                return -1;
            }
            lat[got++] = (double)(now - sent) / 1000.0;
            *last = bench_now_us();
        }
        natsMsgList_Destroy(&list);
    }
    return 0;
}

/* One round on an open connection: a stream of its own, the publisher and the consumer
 * at the same time. */
static int measure(natsConnection *nc, const bench_case *c, int round, result *r)
{
    char name[32], subject[32];
    const char *subjects[1] = {subject};
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    natsSubscription *sub = NULL;
    jsStreamConfig cfg;
    jsErrCode jerr = 0;
    int rc = -1;
    double *lat = calloc((size_t)c->n, sizeof *lat);
    snprintf(name, sizeof name, "BENCH%d", round);
    snprintf(subject, sizeof subject, "bench.%d", round);
    if (!lat || natsConnection_JetStream(&js, nc, NULL) != NATS_OK)
        goto out;
    jsStreamConfig_Init(&cfg);
    cfg.Name = name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    if (js_AddStream(&si, js, &cfg, NULL, &jerr) != NATS_OK ||
        js_PullSubscribe(&sub, js, subject, "bench", NULL, NULL, &jerr) != NATS_OK)
        goto out;
    publisher pb = {js, subject, c, 0};
    pthread_t th;
    int64_t first = bench_now_us(), last = first;
    pthread_create(&th, NULL, publish_all, &pb);
    int crc = consume(sub, c->n, lat, &last);
    if (crc != 0)
        pb.failed = 1; /* stops the publisher */
    pthread_join(th, NULL);
    if (crc == 0 && !pb.failed) {
        r->msgs_per_s = c->n / ((double)(last - first) / 1e6);
        bench_percentiles(lat, c->n, r);
        rc = 0;
    }
out:
    if (sub)
        natsSubscription_Destroy(sub);
    if (si)
        jsStreamInfo_Destroy(si);
    if (js) {
        (void)js_DeleteStream(js, name, NULL, &jerr);
        jsCtx_Destroy(js);
    }
    free(lat);
    return rc;
}

int jetstream_run(const char *dir, const bench_case *c, int round, result *r)
{
    char url[64], sub[600];
    h_proc server;
    if (access(NATS_SERVER, X_OK) != 0)
        return 1;
    snprintf(sub, sizeof sub, "%s/nats-%d", dir, round);
    if (mkdir(sub, 0700) != 0 || start_server(sub, &server, url, sizeof url) != 0)
        return -1;
    natsConnection *nc = connect_ready(url, &server);
    static const char *const names[] = {"nats-server", "clients"};
    pid_t pids[] = {server.pid, 0};
    double marks[2];
    bench_cpu_begin(r, 2, names, pids, marks);
    int rc = nc ? measure(nc, c, round, r) : -1;
    bench_cpu_end(r, pids, marks, c->n);
    if (nc)
        natsConnection_Destroy(nc);
    h_stop(&server);
    return rc;
}
