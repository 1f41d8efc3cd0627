/* End-to-end test harness: starts real refex-broker and refex-agent processes in a fresh
 * temp directory, synchronises on their READY lines (never on sleeps), runs the refex CLI,
 * speaks the wire protocol directly as a raw client for bad-input tests, and always reaps
 * its children. */
#ifndef REFEX_HARNESS_H
#define REFEX_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "refex.pb-c.h"
#include "keys.h"

#define H_MAX_AGENTS 8
#define H_TIMEOUT_MS 20000

typedef struct {
    pid_t pid;
    int out_fd; /* the child's stdout, where READY appears */
    char name[64];
    char log[512]; /* the child's stderr */
} h_proc;

typedef struct {
    char root[256];
    char bin[1024];
    char endpoint[512];
    h_proc broker;
    h_proc agents[H_MAX_AGENTS];
    char agent_names[H_MAX_AGENTS][64];
    int n_agents;
} h_net;

/* Creates keys for the operator, the broker and each of `agencies` (plus any in
 * `listed_only`, which are in the directory but run no agent), a signed directory and
 * configs. Returns 0 on success. */
int h_net_init(h_net *n, const char *const *agencies, const char *const *listed_only,
               const char *broker_extra_conf);
int h_net_start_broker(h_net *n);
/* The same with one more argument on the broker's command line (NULL: none). */
int h_net_start_broker_with(h_net *n, const char *extra_arg);
int h_net_start_agent(h_net *n, const char *agency);
/* h_net_init, then the broker, then an agent for each of `agencies`, each ready. */
int h_net_up(h_net *n, const char *const *agencies, const char *const *listed_only,
             const char *broker_extra_conf);
/* SIGTERM everything, reap, remove the temp tree (kept if REFEX_KEEP_E2E is set). */
void h_net_fini(h_net *n);

/* Path helpers inside the test tree. */
void h_path(const h_net *n, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

int h_spawn(h_proc *p, const char *name, char *const argv[], const char *log_path);
/* Reads the child's stdout until a line starting with prefix; 0 on success, -1 if the child
 * closed stdout (exited) or the timeout passed. */
int h_wait_line(h_proc *p, const char *prefix, int timeout_ms, char *line, size_t len);
int h_alive(const h_proc *p);
/* Waits for the child to exit; returns its exit status or -1 on timeout. */
int h_wait_exit(h_proc *p, int timeout_ms);
void h_stop(h_proc *p);

/* Runs argv[0] (an absolute path) with argv, stdout and stderr into out (NUL-terminated,
 * truncated to outlen); its exit code, or -1 if it could not run or was killed. */
int h_run(char *const argv[], char *out, size_t outlen);
/* Runs the refex CLI with args; captures stdout (and stderr appended) into out. Returns
 * the exit code. */
int h_cli(const h_net *n, char *out, size_t outlen, const char *const *args);
/* Runs `refex -c CONF(agency) args...`. */
int h_cli_agent(const h_net *n, const char *agency, char *out, size_t outlen,
                const char *const *args);

/* True if the file at path (or any file under it, recursively) contains needle. */
int h_tree_contains(const char *path, const void *needle, size_t len);

/* ---- raw wire client ---------------------------------------------------------------- */

typedef struct {
    void *ctx, *sock, *mon;
    refex_keys *keys;
} h_client;

/* Connects with the given agency's keys from the test tree (or `keys` if non-NULL). */
int h_client_open(h_client *c, const h_net *n, const char *agency, refex_keys *keys);
void h_client_close(h_client *c);
int h_client_send_raw(h_client *c, const void *data, size_t len);
int h_client_send(h_client *c, Refex__V1__Frame *f);
/* Receives one frame (caller frees with refex_frame_free); NULL on timeout. */
Refex__V1__Frame *h_client_recv(h_client *c, int timeout_ms);
/* Waits for a monitor event; returns 1 if `event` was seen before the timeout. */
int h_client_wait_event(h_client *c, int event, int timeout_ms);
/* HELLO and wait for WELCOME; 0 on success. */
int h_client_hello(h_client *c, const char *agency);

#endif

/* A loopback TCP port free now (for a daemon's fixed listen address); -1 if none. */
int h_free_port(void);

/* A short pause between polls of observable state (never a wait for a fixed time). */
void h_pause(void);

/* ---- crash and query helpers ------------------------------------------------------- */

/* kill -9 and reap. */
void h_kill9(h_proc *p);
/* Restarts the broker on the endpoint it had (the first start picks a free port). */
int h_net_restart_broker(h_net *n);
int h_net_restart_broker_with(h_net *n, const char *extra_arg);
/* Index of an agency's process in n->agents, or -1. */
int h_agent_index(const h_net *n, const char *agency);
/* One JSON request on an agent's control socket; NULL if it does not answer. */
json_t *h_control(const h_net *n, const char *agency, json_t *request);
/* Sends `body` (JSON form, reference stolen) of `type` from one agency to another through
 * the sender's control socket; the message id into id. -1 (and a line on stderr) if refused. */
int h_send_json(const h_net *n, const char *from, const char *to, const char *type, json_t *body,
                char id[33]);
/* Adds to body (JSON form, returned) every field a message of `type` requires that it
 * lacks, with synthetic values (docs/protocol.md section 10); what it has is kept. */
json_t *h_required(const char *type, json_t *body);
/* The flags that complete a referral sent with `refex send` flags alone. */
#define H_REFERRAL_FLAGS                                                                           \
    "--subject-ref", "UB-H-0001", "--gestation-weeks", "12", "--practitioner-ref", "MW-H-0001",    \
        "--urgency", "routine", "--article6", "public-task", "--article9",                         \
        "substantial-public-interest", "--consent", "not-sought-safeguarding", "--purpose",        \
        "safeguarding"

/* Runs a single-value SQL query (read-only) on a file under the test tree, e.g.
 * "data/social-care/agent.db"; returns the integer result or -1. */
long long h_sql_int(const h_net *n, const char *db_rel, const char *sql);
/* harness_pg.c: the PostgreSQL store every broker uses when REFEX_TEST_PG_URL_FILE is set
 * (NULL: none, the SQLite queue.db); emptied by h_pg_empty; queue.db's queries go to it. */
const char *h_pg_url(void);
int h_pg_empty(void);
long long h_pg_int(const char *sql);
/* Where the broker's witnessed checkpoints are, for `audit verify --witness`: the store's URI
 * with PostgreSQL, else data/broker/witness.db (rel: that path, relative to the tree). */
void h_witness_source(const h_net *n, const char *rel, char *buf, size_t len);
/* Polls h_sql_int until it gives want or timeout_ms pass; the last value read. */
long long h_sql_wait(const h_net *n, const char *db_rel, const char *sql, long long want,
                     int timeout_ms);
