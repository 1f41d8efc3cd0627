/* refex-bench's shared pieces: a case (message size and count), a result, and the peers
 * measured in the same run (raw ZeroMQ in bench.c, NATS JetStream in jetstream.c). */
#ifndef REFEX_BENCH_H
#define REFEX_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct {
    size_t size;
    int n;
} bench_case;

#define BENCH_PROCS 4

typedef struct {
    double msgs_per_s;
    double p50_ms, p99_ms;
    /* CPU time per message of each process of the run (user + system, every thread) */
    int n_procs;
    const char *proc[BENCH_PROCS];
    double cpu_us[BENCH_PROCS];
} result;

int64_t bench_now_us(void);
/* CPU time used so far (user + system, all threads) by process pid, or by this process
 * if pid is 0 (getrusage), in microseconds; -1 if it cannot be read. */
double bench_cpu_us(pid_t pid);
/* Starts (before) or ends (after: divides by n messages) the CPU account of r's
 * processes, pids[i] named names[i]; marks[] holds the starting figures. */
void bench_cpu_begin(result *r, int n, const char *const *names, const pid_t *pids, double *marks);
void bench_cpu_end(result *r, const pid_t *pids, const double *marks, int n_msgs);
/* Sorts v (n latencies in ms) and fills r's p50 and p99. */
void bench_percentiles(double *v, int n, result *r);

/* The control request that sends one referral with this summary (malloc'd JSON text). */
char *bench_send_request(const char *summary);

/* Open loop (openloop.c): n 1 KiB referrals offered to the sender agent at `rate` per
 * second on schedule, whatever the replies; latency from each message's scheduled time to
 * the receiver's commit. */
int openloop_run(const char *root, int rate, int n, result *r);

/* Replay (replay.c): n 1 KiB referrals queued at the broker for a receiver that is offline,
 * then the receiver connects; prints the replay rate, the broker's peak RSS and the CPU per
 * message of broker and receiver. 0 if every message was delivered exactly once. */
int replay_run(int n);

/* NATS JetStream end to end (jetstream.c): Debian's nats-server with JetStream file
 * storage on a loopback port, its store under dir; one publisher waiting for each PubAck,
 * and, at the same time, one pull consumer acknowledging each message with AckSync.
 * Latency from publish to receipt by the consumer. 0 on success, -1 if it failed, 1 if
 * the peer is not installed (deploy/install-bench-deps.sh). */
int jetstream_run(const char *dir, const bench_case *c, int round, result *r);

#endif
