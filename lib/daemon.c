/* Shared main() of refex-broker and refex-agent, so both take the same flags and report
 * configuration errors the same way. The event loops themselves live with each daemon. */
#include "daemon.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec.h"

#include "log.h"
#include "util.h"

int refex_daemon_main(int argc, char **argv, const refex_daemon *d)
{
    static const struct option LONG[] = {{"init-store", no_argument, NULL, 'I'},
                                         {NULL, 0, NULL, 0}};
    const char *conf = NULL;
    int check = 0, opt;
    unsigned flags = 0;
    char err[1024] = "";
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        fputs(d->usage, stdout);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("%s %s\n", d->name, REFEX_VERSION);
        return 0;
    }
    while ((opt = getopt_long(argc, argv, "c:nfh", LONG, NULL)) != -1) {
        switch (opt) {
        case 'I':
            if (!(d->takes & REFEX_DAEMON_INIT_STORE)) {
                fputs(d->usage, stderr);
                return 2;
            }
            flags |= REFEX_DAEMON_INIT_STORE;
            break;
        case 'c':
            conf = optarg;
            break;
        case 'n':
            check = 1;
            break;
        case 'f':
            break;
        case 'h':
            fputs(d->usage, stdout);
            return 0;
        default:
            fputs(d->usage, stderr);
            return 2;
        }
    }
    if (!conf || optind != argc) {
        fputs(d->usage, stderr);
        return 2;
    }
    if (check && flags) {
        fprintf(stderr, "%s: -n only checks; it cannot be combined with --init-store\n", d->name);
        return 2;
    }
    refex_log_set_ident(d->name);
    if (refex_init() != REFEX_OK) {
        refex_log_error("libsodium failed to initialise");
        return 1;
    }
    refex_config *cfg = NULL;
    if (refex_config_open(conf, &cfg, err, sizeof err) != REFEX_OK) {
        refex_log_error("%s", err);
        return 2;
    }
    void *self = NULL;
    int rc = d->open(cfg, flags, &self, err, sizeof err);
    refex_config_close(&cfg);
    if (rc != REFEX_OK) {
        refex_log_error("%s", err);
        return 2;
    }
    if (check) {
        printf("%s: configuration OK\n", d->name);
        d->close(&self);
        return 0;
    }
    rc = d->run(self);
    d->close(&self);
    return rc == REFEX_OK ? 0 : 1;
}

/* ---- the highest directory serial accepted (directory.serial) ---------------------- */

/* Reads data_dir/directory.serial into *out; a missing file is serial 0 (a new data
 * directory). Anything but one decimal number is refused: the file guards against
 * rollbacks, so a damaged one must not silently reset the guard. */
static int serial_read(const char *data_dir, uint64_t *out, char *err, size_t errlen)
{
    char path[4200];
    uint8_t *buf = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/%s", data_dir, REFEX_DAEMON_SERIAL_FILE);
    *out = 0;
    int rc = refex_file_read(path, 32, &buf, &len);
    if (rc == REFEX_E_NOTFOUND)
        return REFEX_OK;
    if (rc != REFEX_OK && rc != REFEX_E_TOO_BIG) {
        snprintf(err, errlen, "%s: cannot read the highest directory serial accepted", path);
        return REFEX_E_IO;
    }
    const char *text = (const char *)buf; /* NUL-terminated by refex_file_read */
    char *end = NULL;
    errno = 0;
    unsigned long long v = rc == REFEX_OK ? strtoull(text, &end, 10) : 0;
    int ok = rc == REFEX_OK && len > 0 && strlen(text) == len && text[0] >= '0' && text[0] <= '9' &&
             errno == 0 && (*end == '\0' || strcmp(end, "\n") == 0);
    free(buf);
    if (!ok) {
        snprintf(err, errlen,
                 "%s: not a directory serial (remove it only if you know no older "
                 "directory can come back)",
                 path);
        return REFEX_E_DIRECTORY;
    }
    *out = v;
    return REFEX_OK;
}

/* Checks d's serial against the highest accepted; records it if it is higher. A write
 * failure is reported but leaves the floor raised in memory: refusing a newer directory
 * (one that may revoke someone) because the disk is full would be the worse failure. */
static int serial_admit(refex_daemon_base *b, const refex_directory *d, char *err, size_t errlen)
{
    char path[4200], text[32];
    uint64_t serial = refex_directory_serial(d);
    if (serial < b->serial_floor) {
        snprintf(err, errlen,
                 "%s: directory serial %llu is older than serial %llu already accepted "
                 "(%s/%s): refusing a rollback",
                 b->dir_path, (unsigned long long)serial, (unsigned long long)b->serial_floor,
                 b->data_dir, REFEX_DAEMON_SERIAL_FILE);
        return REFEX_E_DIRECTORY;
    }
    if (serial == b->serial_floor && serial != 0)
        return REFEX_OK;
    b->serial_floor = serial;
    snprintf(path, sizeof path, "%s/%s", b->data_dir, REFEX_DAEMON_SERIAL_FILE);
    int n = snprintf(text, sizeof text, "%llu\n", (unsigned long long)serial);
    if (refex_file_write(path, text, (size_t)n, 0600) != REFEX_OK)
        refex_log_error("directory: cannot record serial %llu in %s: a rollback across a "
                        "restart would go unnoticed",
                        (unsigned long long)serial, path);
    return REFEX_OK;
}

int refex_daemon_base_load(const refex_config *cfg, const char *keys_what, refex_daemon_base *b,
                           char *err, size_t errlen)
{
    char path[4096];
    uint64_t skew = 300;
    refex_pubkeys anchor;
    int rc;
    const char *lvl = refex_config_get(cfg, "log_level");
    if (lvl && strcmp(lvl, "debug") == 0)
        refex_log_set_level(REFEX_LOG_DEBUG);
    if (refex_config_path(cfg, "data_dir", b->data_dir, sizeof b->data_dir) ||
        refex_config_path(cfg, "directory", b->dir_path, sizeof b->dir_path)) {
        snprintf(err, errlen, "config: data_dir and directory are required");
        return REFEX_E_CONFIG;
    }
    if (refex_config_uint(cfg, "max_frame", REFEX_DEFAULT_MAX_FRAME, &b->max_frame) ||
        b->max_frame < 1024 || b->max_frame > 1024ull * 1024 * 1024) {
        snprintf(err, errlen, "config: max_frame must be between 1K and 1G");
        return REFEX_E_CONFIG;
    }
    if (refex_config_uint(cfg, "clock_skew_seconds", 300, &skew) || skew > 86400) {
        snprintf(err, errlen, "config: clock_skew_seconds must be at most 86400");
        return REFEX_E_CONFIG;
    }
    b->skew_ms = (int64_t)skew * 1000;
    if (refex_config_path(cfg, "trust_anchor", path, sizeof path)) {
        snprintf(err, errlen, "config: trust_anchor (the operator's .public file) is required");
        return REFEX_E_CONFIG;
    }
    if ((rc = refex_pubkeys_load(path, &anchor, err, errlen)) != REFEX_OK)
        return rc;
    memcpy(b->anchor_pk, anchor.sign_pk, 32);
    if (refex_config_path(cfg, "keys", path, sizeof path)) {
        snprintf(err, errlen, "config: keys (%s) is required", keys_what);
        return REFEX_E_CONFIG;
    }
    if ((rc = refex_keys_load(path, &b->keys, err, errlen)) != REFEX_OK)
        return rc;
    if ((rc = refex_directory_load(b->dir_path, b->anchor_pk, &b->dir, err, errlen)) != REFEX_OK)
        return rc;
    refex_policy_warn_absent(b->dir);
    if (refex_mkdirs(b->data_dir, 0700) != REFEX_OK || chmod(b->data_dir, 0700) != 0) {
        snprintf(err, errlen, "%s: cannot create data directory", b->data_dir);
        return REFEX_E_CONFIG;
    }
    if ((rc = serial_read(b->data_dir, &b->serial_floor, err, errlen)) != REFEX_OK ||
        (rc = serial_admit(b, b->dir, err, errlen)) != REFEX_OK)
        return rc;
    return REFEX_OK;
}

void refex_daemon_base_fini(refex_daemon_base *b)
{
    refex_directory_destroy(&b->prev_dir);
    refex_directory_destroy(&b->dir);
    refex_keys_destroy(&b->keys);
}

int refex_daemon_base_reload(refex_daemon_base *b)
{
    char err[1024];
    refex_directory *d = NULL;
    int rc = refex_directory_load(b->dir_path, b->anchor_pk, &d, err, sizeof err);
    if (rc == REFEX_OK) /* never below the highest accepted, which is >= the current one */
        rc = serial_admit(b, d, err, sizeof err);
    if (rc != REFEX_OK) {
        refex_log_error("reload: keeping the old directory: %s", err);
        refex_directory_destroy(&d);
        goto out;
    }
    refex_directory_destroy(&b->prev_dir);
    b->prev_dir = b->dir;
    b->dir = d;
    refex_policy_warn_absent(d);
    refex_log_info("reload: directory serial %llu, %zu agencies",
                   (unsigned long long)refex_directory_serial(d), refex_directory_count(d));
out:
    /* Readiness line on stdout, like READY, for supervisors and tests. */
    if (rc == REFEX_OK)
        printf("RELOADED %llu\n", (unsigned long long)refex_directory_serial(b->dir));
    else
        printf("RELOAD_FAILED %s\n", refex_errname(rc));
    fflush(stdout);
    return rc;
}

static volatile sig_atomic_t g_stop, g_reload;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        g_reload = 1;
    else
        g_stop = 1;
}

void refex_daemon_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int refex_daemon_stopping(void)
{
    return g_stop != 0;
}

int refex_daemon_take_reload(void)
{
    if (!g_reload)
        return 0;
    g_reload = 0;
    return 1;
}
