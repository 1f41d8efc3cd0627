/* Open-loop latency: 1 KiB referrals offered to the sender agent at a fixed rate on
 * schedule, whatever has been answered (a DEALER on the control socket, so requests do not
 * wait for replies), as traffic from many independent systems arrives. Latency runs from
 * each message's scheduled time to the receiver's commit, so time spent queued at the
 * sender counts. Not for throughput (bench.c). */
#include "bench.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

/* Wall-clock milliseconds, the clock the agents stamp their rows with. */
static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads one reply if there is one within timeout_ms: its message id into ids[*got]. */
static int take_reply(void *s, char (*ids)[33], int *got, int timeout_ms)
{
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return 0;
    zmq_msg_t m;
    zmq_msg_init(&m);
    zmq_msg_recv(&m, s, 0); /* the empty delimiter */
    zmq_msg_close(&m);
    zmq_msg_init(&m);
    zmq_msg_recv(&m, s, 0);
    json_error_t jerr;
    json_t *reply = json_loadb(zmq_msg_data(&m), zmq_msg_size(&m), 0, &jerr);
    zmq_msg_close(&m);
    const char *id = json_string_value(json_object_get(reply, "message_id"));
    int ok = json_is_true(json_object_get(reply, "ok")) && id && strlen(id) == 32;
    if (ok)
        memcpy(ids[(*got)++], id, 33);
    else
        fprintf(stderr, "refex-bench: open loop: send refused: %s\n",
                json_string_value(json_object_get(reply, "error")));
    json_decref(reply);
    return ok ? 1 : -1;
}

/* The receiver's commit time of message id, or -1 once deadline passes. */
static int64_t received_ms(sqlite3_stmt *st, const char *id, int64_t deadline)
{
    for (;;) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            return sqlite3_column_int64(st, 0);
        if (wall_ms() > deadline)
            return -1;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

/* Sends the n requests on schedule; their ids, in the order the agent answered (which is
 * the order sent: one agent, one queue). */
static int offer(void *s, int rate, int n, int64_t *sched, char (*ids)[33])
{
    char pad[1025];
    memset(pad, 'x', 1024);
    pad[1024] = 0;
    char *text = bench_send_request(pad);
    int got = 0, rc = 0;
    int64_t start_us = bench_now_us() + 100000, start_wall = wall_ms() + 100;
    for (int i = 0; i < n && rc >= 0; i++) {
        int64_t due = start_us + (int64_t)i * 1000000 / rate;
        while (bench_now_us() < due && rc >= 0) /* answers while waiting for the slot */
            rc = take_reply(s, ids, &got, (int)((due - bench_now_us()) / 1000)) < 0 ? -1 : 0;
        sched[i] = start_wall + (int64_t)i * 1000 / rate;
        zmq_send(s, "", 0, ZMQ_SNDMORE);
        zmq_send(s, text, strlen(text), 0);
    }
    while (got < n && rc >= 0) {
        int one = take_reply(s, ids, &got, 60000);
        rc = one <= 0 ? -1 : 0;
    }
    free(text);
    return rc;
}

int openloop_run(const char *root, int rate, int n, result *r)
{
    char url[700], dbpath[700];
    snprintf(url, sizeof url, "ipc://%s/data/sender/control.sock", root);
    snprintf(dbpath, sizeof dbpath, "%s/data/receiver/agent.db", root);
    int64_t *sched = calloc((size_t)n, sizeof *sched);
    char(*ids)[33] = calloc((size_t)n, sizeof *ids);
    double *lat = calloc((size_t)n, sizeof *lat);
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_DEALER);
    int hwm = 0, linger = 0, rc = -1;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    if (!sched || !ids || !lat || zmq_connect(s, url) != 0 || offer(s, rate, n, sched, ids) != 0)
        goto out;
    if (sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT received_ms FROM inbox WHERE message_id = ?", -1, &st,
                           NULL) != SQLITE_OK)
        goto out;
    int64_t deadline = wall_ms() + 120000, first = sched[0], last = 0;
    for (int i = 0; i < n; i++) {
        int64_t at = received_ms(st, ids[i], deadline);
        if (at < 0)
            goto out;
        lat[i] = (double)(at - sched[i]);
        last = at > last ? at : last;
    }
    r->msgs_per_s = n / ((double)(last - first + 1) / 1000.0);
    bench_percentiles(lat, n, r);
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    zmq_close(s);
    zmq_ctx_term(ctx);
    free(sched);
    free(ids);
    free(lat);
    return rc;
}
