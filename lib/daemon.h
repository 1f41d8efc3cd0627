/* The common command line of refex daemons: -c FILE, -n (check and exit), -f
 * (foreground, the default), -h, and the options a daemon takes of its own. Loads the config, opens
 * the daemon, runs its loop. */
#ifndef REFEX_DAEMON_H
#define REFEX_DAEMON_H

#include <stddef.h>

#include <stdint.h>

#include "config.h"
#include "directory.h"
#include "keys.h"

typedef struct {
    const char *name;  /* e.g. "refex-broker": log ident and messages */
    const char *usage; /* full --help text */
    /* flags: REFEX_DAEMON_* options given on the command line (only those in `takes`) */
    int (*open)(const refex_config *cfg, unsigned flags, void **out, char *err, size_t errlen);
    int (*run)(void *self);
    void (*close)(void **self_p);
    unsigned takes; /* the REFEX_DAEMON_* options this daemon has */
} refex_daemon;

/* --init-store: begin a new store where the existing one lacks its tables (the broker). */
#define REFEX_DAEMON_INIT_STORE 1u

/* What every daemon loads the same way: its data directory (created 0700), the pinned
 * trust anchor, its own keys, the signed directory, and the shared limits. */
typedef struct {
    refex_directory *prev_dir; /* the directory the last reload replaced (NULL before one) */
    uint64_t serial_floor;     /* highest directory serial accepted, as in directory.serial */
    char serial_hash[65];      /* hex BLAKE2b-256 of the file accepted at serial_floor, or "" */
    char data_dir[4096];
    char dir_path[4096];
    uint8_t anchor_pk[32];
    uint64_t max_frame;
    int64_t skew_ms;
    refex_keys *keys;
    refex_directory *dir;
} refex_daemon_base;

/* The config keys refex_daemon_base_load reads, for each daemon's list of allowed keys. */
#define REFEX_DAEMON_BASE_KEYS                                                                     \
    "data_dir", "directory", "trust_anchor", "keys", "max_frame", "clock_skew_seconds", "log_level"

/* The file in data_dir holding the highest directory serial this daemon has accepted and
 * the hex BLAKE2b-256 of that directory file's bytes ("<serial> <hash>\n", written
 * atomically; a file with the serial alone, from before hashes were kept, is read and
 * gains the hash on the next start or reload). A directory with a lower serial, or with
 * the same serial but other bytes, is refused at start and on reload: a rollback to an
 * older signed directory would bring back revoked agencies and replaced keys. */
#define REFEX_DAEMON_SERIAL_FILE "directory.serial"

/* keys_what names the key file in errors, e.g. "the broker's .secret file". Refuses
 * (REFEX_E_DIRECTORY, naming both serials) a directory older than directory.serial, or
 * one with the serial recorded there but other bytes. */
int refex_daemon_base_load(const refex_config *cfg, const char *keys_what, refex_daemon_base *b,
                           char *err, size_t errlen) REFEX_NODISCARD;
void refex_daemon_base_fini(refex_daemon_base *b);

/* Reloads the directory file (SIGHUP). Keeps the old one, with a log line, if the new one
 * does not verify, has a serial lower than the highest ever accepted (a rollback, also
 * across restarts: directory.serial), or has that serial with other bytes. On success the replaced
 * directory stays in prev_dir until the next reload, so the daemon can see who lost admission.
 * Prints "RELOADED <serial>" or "RELOAD_FAILED <error>" on stdout. */
int refex_daemon_base_reload(refex_daemon_base *b);

/* Signals, handled inside each daemon's loop: SIGTERM/SIGINT stop, SIGHUP reloads.
 * zmq_poll returns EINTR when one arrives. */
void refex_daemon_signals_install(void);
int refex_daemon_stopping(void);
/* True once per SIGHUP received. */
int refex_daemon_take_reload(void);

/* Returns the process exit status: 0 clean stop or config OK, 1 runtime failure,
 * 2 usage or configuration error. */
int refex_daemon_main(int argc, char **argv, const refex_daemon *d);

#endif
