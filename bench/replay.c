/* Replay: N 1 KiB referrals wait at the broker for a recipient that is offline, then the
 * recipient connects and takes them all. Measures the replay rate (messages committed by
 * the receiver per second, from its start to its last commit), the broker's peak RSS and
 * the CPU per message of broker and receiver. The queue is filled before the broker
 * starts, through the broker's own store API (lib/store.h) with envelopes sealed and
 * signed by the library for the sender, because sending a million messages through the
 * sender agent would take longer than the replay itself. Not for end-to-end latency
 * (bench.c, openloop.c). */
#include "bench.h"

#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../tests/e2e/harness.h"
#include "body.h"
#include "checkpoint.h"
#include "codec.h"
#include "directory.h"
#include "envelope.h"
#include "epoch.h"
#include "keys.h"
#include "store.h"
#include "util.h"

#define SEAL_THREADS  2
#define FIFO_SLOTS    4096
#define PUT_BATCH     2000 /* messages per store transaction while filling */
#define CP_EVERY      1000 /* a new sender checkpoint every this many messages */
#define PROGRESS_US   3000000
#define STALL_MS      120000
#define RSS_PERIOD_US 50000 /* 20 samples a second */
#define GOAL_RATE     10000
#define GOAL_RSS_KIB  (64 * 1024)

/* ---- the broker's RSS, sampled by a thread ------------------------------------------- */

typedef struct {
    pthread_t th;
    _Atomic pid_t pid; /* 0: nothing to sample */
    atomic_int stop;
    atomic_long max_kib, last_kib; /* written by the sampling thread only */
    atomic_long samples;
} rss_sampler;

static long vm_rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    if (f)
        fclose(f);
    return kib;
}

static void *rss_loop(void *arg)
{
    rss_sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        pid_t pid = atomic_load(&s->pid);
        long kib = pid > 0 ? vm_rss_kib(pid) : -1;
        if (kib >= 0) {
            atomic_store(&s->last_kib, kib);
            if (kib > atomic_load(&s->max_kib))
                atomic_store(&s->max_kib, kib);
            atomic_fetch_add(&s->samples, 1);
        }
        struct timespec ts = {0, RSS_PERIOD_US * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* ---- filling the store: sealing threads feed one writer -------------------------------- */

typedef struct {
    uint8_t *env;
    size_t len;
    uint8_t id[16];
    int64_t expires;
} sealed;

typedef struct {
    /* what every envelope shares */
    const refex_keys *keys;
    const refex_agency *rcpt;
    const uint8_t *body;
    size_t body_len;
    int n;
    /* work handed out and results waiting for the writer */
    pthread_mutex_t mu;
    pthread_cond_t not_full, not_empty;
    int next;   /* the next message to seal */
    int failed; /* a sealing thread failed: everyone stops */
    sealed fifo[FIFO_SLOTS];
    int head, count;
} filler;

/* The sender's signed audit checkpoint for block k, as its agent attaches its latest one
 * to each envelope (agents/journal.c): a new size every CP_EVERY messages. */
static int block_checkpoint(const filler *f, int k, char **note)
{
    refex_checkpoint c;
    memset(&c, 0, sizeof c);
    snprintf(c.origin, sizeof c.origin, "refex/audit/%s", f->keys->pub.agency);
    c.size = (uint64_t)k + 1;
    crypto_generichash(c.root, sizeof c.root, (const uint8_t *)&k, sizeof k, NULL, 0);
    return refex_checkpoint_sign(&c, f->keys->pub.agency, f->keys->sk->sign_sk, note);
}

/* Adds note to a sealed envelope as the unsigned checkpoint field. */
static int attach_note(sealed *m, char *note)
{
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, m->len, m->env);
    if (!e)
        return REFEX_E_MALFORMED;
    uint8_t *buf = NULL;
    size_t len = 0;
    e->checkpoint = note;
    int rc = refex_pb_pack(&e->base, &buf, &len);
    e->checkpoint = NULL;
    refex__v1__envelope__free_unpacked(e, NULL);
    if (rc == REFEX_OK) {
        free(m->env);
        m->env = buf;
        m->len = len;
    }
    return rc;
}

/* Sealed with the thread's own key epochs, as the sender agent's outbox seals (one thread
 * and its epochs per sealing thread: two epochs in all, as a sender restarted once). */
static int seal_one(const filler *f, refex_epoch_sender *epochs, char *note, sealed *m)
{
    const refex_agency *rcpt[1] = {f->rcpt};
    int64_t now = refex_now_ms();
    refex_seal_params p = {.sender = f->keys->pub.agency,
                           .sign_sk = f->keys->sk->sign_sk,
                           .recipients = rcpt,
                           .n_recipients = 1,
                           .type = REFEX__V1__MESSAGE_TYPE__REFERRAL,
                           .case_ref = "BENCH",
                           .created_at_ms = now,
                           .expires_at_ms = now + REFEX_DEFAULT_TTL_MS,
                           .epochs = epochs};
    m->expires = p.expires_at_ms;
    int rc = refex_envelope_seal(&p, f->body, f->body_len, &m->env, &m->len, m->id);
    return rc == REFEX_OK ? attach_note(m, note) : rc;
}

static void *seal_loop(void *arg)
{
    filler *f = arg;
    char *note = NULL;
    int note_block = -1;
    refex_epoch_sender *epochs = NULL;
    if (refex_epoch_sender_new(REFEX_EPOCH_SECONDS_DEFAULT, REFEX_EPOCH_MESSAGES_DEFAULT,
                               &epochs) != REFEX_OK) {
        pthread_mutex_lock(&f->mu);
        f->failed = 1;
        pthread_cond_broadcast(&f->not_empty);
        pthread_mutex_unlock(&f->mu);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&f->mu);
        int i = f->failed ? f->n : f->next++;
        pthread_mutex_unlock(&f->mu);
        if (i >= f->n)
            break;
        sealed m = {0};
        int rc = REFEX_OK;
        if (i / CP_EVERY != note_block) {
            free(note);
            note = NULL;
            note_block = i / CP_EVERY;
            rc = block_checkpoint(f, note_block, &note);
        }
        if (rc == REFEX_OK)
            rc = seal_one(f, epochs, note, &m);
        pthread_mutex_lock(&f->mu);
        if (rc != REFEX_OK) {
            fprintf(stderr, "refex-bench: replay: sealing failed: %s\n", refex_strerror(rc));
            f->failed = 1;
            pthread_cond_broadcast(&f->not_empty);
        }
        while (!f->failed && f->count == FIFO_SLOTS)
            pthread_cond_wait(&f->not_full, &f->mu);
        if (!f->failed) {
            f->fifo[(f->head + f->count++) % FIFO_SLOTS] = m;
            m.env = NULL;
            pthread_cond_signal(&f->not_empty);
        }
        pthread_mutex_unlock(&f->mu);
        free(m.env);
    }
    free(note);
    refex_epoch_sender_destroy(&epochs);
    return NULL;
}

/* The next sealed message for the writer; 0 once sealing failed. */
static int take_sealed(filler *f, sealed *m)
{
    pthread_mutex_lock(&f->mu);
    while (!f->failed && f->count == 0)
        pthread_cond_wait(&f->not_empty, &f->mu);
    int ok = !f->failed;
    if (ok) {
        *m = f->fifo[f->head];
        f->head = (f->head + 1) % FIFO_SLOTS;
        f->count--;
        pthread_cond_signal(&f->not_full);
    }
    pthread_mutex_unlock(&f->mu);
    return ok;
}

/* Stores every sealed message as the broker's SEND handling does: one put per message
 * for its one recipient, many per transaction (the broker's group commit). */
static int write_all(filler *f, refex_store *store)
{
    const char *rcpt[1] = {f->rcpt->id};
    int64_t t0 = bench_now_us(), next_note = t0 + PROGRESS_US;
    int rc = REFEX_OK;
    for (int i = 0; i < f->n && rc == REFEX_OK; i++) {
        sealed m;
        if (!take_sealed(f, &m)) { /* a sealing thread said why */
            refex_store_rollback(store);
            return REFEX_E_CRYPTO;
        }
        if (i % PUT_BATCH == 0)
            rc = refex_store_begin(store);
        if (rc == REFEX_OK)
            rc =
                refex_store_put(store, m.id, f->keys->pub.agency, rcpt, 1, m.env, m.len, m.expires);
        free(m.env);
        if (rc == REFEX_OK && (i % PUT_BATCH == PUT_BATCH - 1 || i == f->n - 1))
            rc = refex_store_commit(store);
        int64_t now = bench_now_us();
        if (now >= next_note) {
            next_note = now + PROGRESS_US;
            fprintf(stderr, "refex-bench: replay: queued %d/%d (%.0f/s)\n", i + 1, f->n,
                    (i + 1) / ((double)(now - t0) / 1e6));
        }
    }
    if (rc != REFEX_OK) {
        fprintf(stderr, "refex-bench: replay: store: %s (%s)\n", refex_strerror(rc),
                refex_store_refusal(store));
        refex_store_rollback(store);
    }
    return rc;
}

/* The sender's keys, the receiver's directory entry and the referral body. */
static int load_inputs(const h_net *net, refex_keys **keys, refex_directory **dir, filler *f,
                       uint8_t **body)
{
    char path[700], err[256] = "", *pad = malloc(1025);
    refex_pubkeys anchor;
    int rc = REFEX_E_NOMEM;
    if (!pad)
        return rc;
    memset(pad, 'x', 1024);
    pad[1024] = 0;
    char *req_text = bench_send_request(pad);
    json_t *req = req_text ? json_loads(req_text, 0, NULL) : NULL;
    free(req_text);
    free(pad);
    h_path(net, path, sizeof path, "keys/sender.secret");
    if ((rc = refex_keys_load(path, keys, err, sizeof err)) != REFEX_OK)
        goto out;
    h_path(net, path, sizeof path, "keys/operator.public");
    if ((rc = refex_pubkeys_load(path, &anchor, err, sizeof err)) != REFEX_OK)
        goto out;
    h_path(net, path, sizeof path, "directory.rdir");
    if ((rc = refex_directory_load(path, anchor.sign_pk, dir, err, sizeof err)) != REFEX_OK)
        goto out;
    rc = REFEX_E_CONFIG;
    if (!req || !(f->rcpt = refex_directory_find(*dir, "receiver")))
        goto out;
    rc = refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, json_object_get(req, "body"), body,
                              &f->body_len, err, sizeof err);
    f->keys = *keys;
    f->body = *body;
out:
    if (rc != REFEX_OK)
        fprintf(stderr, "refex-bench: replay: %s %s\n", refex_strerror(rc), err);
    json_decref(req);
    return rc;
}

/* Fills the broker's store (not running yet) with n messages from sender to receiver. */
static int fill_store(const h_net *net, int n, double *secs)
{
    char path[700], err[256] = "";
    refex_keys *keys = NULL;
    refex_directory *dir = NULL;
    refex_store *store = NULL;
    uint8_t *body = NULL;
    filler *f = calloc(1, sizeof *f);
    pthread_t th[SEAL_THREADS];
    int started = 0, rc = REFEX_E_NOMEM;
    int64_t t0 = bench_now_us();
    if (!f)
        return rc;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->not_full, NULL);
    pthread_cond_init(&f->not_empty, NULL);
    f->n = n;
    if ((rc = load_inputs(net, &keys, &dir, f, &body)) != REFEX_OK)
        goto out;
    h_path(net, path, sizeof path, "data/broker");
    if (mkdir(path, 0700) != 0) {
        fprintf(stderr, "refex-bench: replay: cannot create %s\n", path);
        rc = REFEX_E_IO;
        goto out;
    }
    h_path(net, path, sizeof path, "data/broker/queue.db");
    /* no cap: the broker itself is configured without one for this run */
    if ((rc = refex_store_sqlite_open(path, 0, 0, &store, err, sizeof err)) != REFEX_OK) {
        fprintf(stderr, "refex-bench: replay: %s\n", err);
        goto out;
    }
    for (; started < SEAL_THREADS; started++)
        pthread_create(&th[started], NULL, seal_loop, f);
    rc = write_all(f, store);
out:
    pthread_mutex_lock(&f->mu);
    f->failed = f->failed || rc != REFEX_OK;
    pthread_cond_broadcast(&f->not_full);
    pthread_mutex_unlock(&f->mu);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < f->count; i++)
        free(f->fifo[(f->head + i) % FIFO_SLOTS].env);
    refex_store_destroy(&store);
    refex_directory_destroy(&dir);
    refex_keys_destroy(&keys);
    free(body);
    free(f);
    *secs = (double)(bench_now_us() - t0) / 1e6;
    return rc == REFEX_OK ? 0 : -1;
}

/* ---- the replay -------------------------------------------------------------------------- */

typedef struct {
    int n;
    double fill_s;
    double rate;      /* messages committed by the receiver per second */
    double cpu_us[2]; /* broker, receiver, per message */
    long rss_max_kib; /* the broker's, from its start to the last commit */
    long rss_samples;
    long long inbox, received, pending; /* the exactly-once check */
} replay_result;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until the receiver's inbox holds n messages, showing progress; its highest rowid
 * is cheap to read where count(*) walks a million rows. */
static int wait_committed(const h_net *net, int n, int64_t t0_us, rss_sampler *rss)
{
    int64_t next_note = t0_us + PROGRESS_US, last_change = refex_mono_ms(), noted_us = t0_us;
    long long got = 0, noted = 0;
    while (got < n) {
        long long now_got =
            h_sql_int(net, "data/receiver/agent.db", "SELECT coalesce(max(rowid), 0) FROM inbox");
        if (now_got > got) {
            got = now_got;
            last_change = refex_mono_ms();
        } else if (refex_mono_ms() - last_change > STALL_MS) {
            fprintf(stderr, "refex-bench: replay: no progress for %d s at %lld/%d\n",
                    STALL_MS / 1000, got, n);
            return -1;
        }
        int64_t now = bench_now_us();
        if (now >= next_note) {
            next_note = now + PROGRESS_US;
            fprintf(stderr,
                    "refex-bench: replay: committed %lld/%d (%.0f/s, %.0f/s since the last line), "
                    "broker RSS %ld MiB (max %ld)\n",
                    got, n, got / ((double)(now - t0_us) / 1e6),
                    (got - noted) / ((double)(now - noted_us) / 1e6),
                    atomic_load(&rss->last_kib) / 1024, atomic_load(&rss->max_kib) / 1024);
            noted = got;
            noted_us = now;
        }
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Every message exactly once: n rows in the inbox (one per (sender, id) by its key), n
 * "receive" entries in the receiver's audit log (a redelivery processed twice would add
 * one), and, once the ACKs are in, no delivery pending at the broker. */
static void check_once(const h_net *net, replay_result *r)
{
    r->inbox = h_sql_int(net, "data/receiver/agent.db", "SELECT count(*) FROM inbox");
    r->received = h_sql_int(net, "data/receiver/agent.db",
                            "SELECT count(*) FROM audit WHERE event = 'receive'");
    r->pending =
        h_sql_wait(net, "data/broker/queue.db", "SELECT count(*) FROM deliveries", 0, 60000);
}

static int run_replay(h_net *net, replay_result *r, rss_sampler *rss)
{
    int i = h_agent_index(net, "receiver");
    fprintf(stderr, "refex-bench: replay: starting the broker...\n");
    if (h_net_start_broker(net) != 0)
        return -1;
    atomic_store(&rss->pid, net->broker.pid);
    double broker0 = bench_cpu_us(net->broker.pid);
    int64_t t0_wall = wall_ms(), t0_us = bench_now_us();
    fprintf(stderr, "refex-bench: replay: the receiver connects...\n");
    if (h_net_start_agent(net, "receiver") != 0 || wait_committed(net, r->n, t0_us, rss) != 0)
        return -1;
    /* CPU to the last commit; the receiver's from its start, which is the reconnect */
    r->cpu_us[0] = (bench_cpu_us(net->broker.pid) - broker0) / r->n;
    r->cpu_us[1] = bench_cpu_us(net->agents[i].pid) / r->n;
    r->rss_max_kib = atomic_load(&rss->max_kib);
    r->rss_samples = atomic_load(&rss->samples);
    long long last = h_sql_int(net, "data/receiver/agent.db", "SELECT max(received_ms) FROM inbox");
    r->rate = r->n / ((double)(last - t0_wall + 1) / 1000.0);
    check_once(net, r);
    return 0;
}

static void print_result(const replay_result *r)
{
    int once = r->inbox == r->n && r->received == r->n && r->pending == 0;
    printf("replay, 1 KiB, %d referrals queued for an offline recipient (store filled offline "
           "in %.1f s), then it connects:\n",
           r->n, r->fill_s);
    printf("  replay rate %.0f msg/s committed by the receiver (goal >= %d: %s)\n", r->rate,
           GOAL_RATE, r->rate >= GOAL_RATE ? "met" : "not met");
    printf("  broker RSS max %.1f MiB over %ld samples from its start to the last commit "
           "(goal < %d MiB: %s)\n",
           r->rss_max_kib / 1024.0, r->rss_samples, GOAL_RSS_KIB / 1024,
           r->rss_max_kib < GOAL_RSS_KIB ? "met" : "not met");
    printf("  cpu us/msg: broker %.0f receiver %.0f = %.0f\n", r->cpu_us[0], r->cpu_us[1],
           r->cpu_us[0] + r->cpu_us[1]);
    printf("  delivered exactly once: %s (inbox %lld, audit receive %lld, pending at the "
           "broker %lld)\n",
           once ? "yes" : "NO", r->inbox, r->received, r->pending);
}

int replay_run(int n)
{
    static const char *const agencies[] = {"sender", "receiver", NULL};
    h_net net;
    replay_result r;
    rss_sampler rss;
    memset(&r, 0, sizeof r);
    memset(&rss, 0, sizeof rss);
    r.n = n;
    fprintf(stderr, "refex-bench: replay: keys, directory and configs...\n");
    /* The broker's 1 GiB default cap would refuse a million 1 KiB referrals. */
    if (h_net_init(&net, agencies, NULL, "store_max = 0") != 0) {
        fprintf(stderr, "refex-bench: replay: could not set up the test network\n");
        h_net_fini(&net);
        return 1;
    }
    fprintf(stderr, "refex-bench: replay: sealing and storing %d referrals...\n", n);
    int rc = fill_store(&net, n, &r.fill_s);
    pthread_create(&rss.th, NULL, rss_loop, &rss);
    if (rc == 0)
        rc = run_replay(&net, &r, &rss);
    atomic_store(&rss.stop, 1);
    pthread_join(rss.th, NULL);
    if (rc == 0)
        print_result(&r);
    else
        fprintf(stderr, "refex-bench: replay failed (REFEX_KEEP_E2E=1 keeps %s and its logs)\n",
                net.root);
    h_net_fini(&net);
    return rc == 0 && r.inbox == n && r.received == n && r.pending == 0 ? 0 : 1;
}
