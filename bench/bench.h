/* refex-bench's shared pieces: a case (message size and count), a result, and the peers
 * measured in the same run (raw ZeroMQ in bench.c, NATS JetStream in jetstream.c). */
#ifndef REFEX_BENCH_H
#define REFEX_BENCH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t size;
    int n;
} bench_case;

typedef struct {
    double msgs_per_s;
    double p50_ms, p99_ms;
} result;

int64_t bench_now_us(void);
/* Sorts v (n latencies in ms) and fills r's p50 and p99. */
void bench_percentiles(double *v, int n, result *r);

/* NATS JetStream end to end (jetstream.c): Debian's nats-server with JetStream file
 * storage on a loopback port, its store under dir; one publisher waiting for each PubAck,
 * and, at the same time, one pull consumer acknowledging each message with AckSync.
 * Latency from publish to receipt by the consumer. 0 on success, -1 if it failed, 1 if
 * the peer is not installed (deploy/install-bench-deps.sh). */
int jetstream_run(const char *dir, const bench_case *c, int round, result *r);

#endif
