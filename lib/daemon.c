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

#include <sodium.h>

#include "codec.h"

#include "log.h"
#include "notify.h"
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

/* Hex BLAKE2b-256 of a directory file's bytes, as kept in directory.serial. */
#define SERIAL_HASH_BYTES 32

/* Loads the directory file like refex_directory_load, and hashes the bytes it parsed into
 * hash (hex), so the rollback guard can tell two directories with one serial apart. */
static int dir_load(const refex_daemon_base *b, refex_directory **out,
                    char hash[2 * SERIAL_HASH_BYTES + 1], char *err, size_t errlen)
{
    uint8_t *file = NULL, h[SERIAL_HASH_BYTES];
    size_t file_len = 0;
    *out = NULL;
    int rc = refex_file_read(b->dir_path, REFEX_DIRECTORY_MAX_BYTES, &file, &file_len);
    if (rc != REFEX_OK) {
        snprintf(err, errlen, "%s: %s", b->dir_path, refex_strerror(rc));
        goto out;
    }
    crypto_generichash(h, sizeof h, file, file_len, NULL, 0);
    sodium_bin2hex(hash, 2 * SERIAL_HASH_BYTES + 1, h, sizeof h);
    rc = refex_directory_parse(file, file_len, b->dir_path, b->anchor_pk, out, err, errlen);
out:
    free(file);
    return rc;
}

/* Parses directory.serial's text: the serial, then optionally one space and the hex hash
 * of the directory file accepted with it, then an optional newline. The hash is "" for a
 * file written before hashes were kept (one number): it is recorded on the next admit. */
static int serial_parse(const char *text, size_t len, uint64_t *serial, char *hash)
{
    char *end = NULL;
    if (strlen(text) != len || text[0] < '0' || text[0] > '9')
        return 0;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0)
        return 0;
    hash[0] = '\0';
    if (*end == ' ') {
        size_t n = strspn(end + 1, "0123456789abcdef");
        if (n != 2 * SERIAL_HASH_BYTES)
            return 0;
        memcpy(hash, end + 1, n);
        hash[n] = '\0';
        end += 1 + n;
    }
    if (*end != '\0' && strcmp(end, "\n") != 0)
        return 0;
    *serial = v;
    return 1;
}

/* Reads data_dir/directory.serial into b's floor and hash; a missing file is serial 0 (a
 * new data directory). Anything else unreadable is refused: the file guards against
 * rollbacks, so a damaged one must not silently reset the guard. */
static int serial_read(refex_daemon_base *b, char *err, size_t errlen)
{
    char path[4200];
    uint8_t *buf = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/%s", b->data_dir, REFEX_DAEMON_SERIAL_FILE);
    b->serial_floor = 0;
    b->serial_hash[0] = '\0';
    int rc = refex_file_read(path, 128, &buf, &len);
    if (rc == REFEX_E_NOTFOUND)
        return REFEX_OK;
    if (rc != REFEX_OK && rc != REFEX_E_TOO_BIG) {
        snprintf(err, errlen, "%s: cannot read the highest directory serial accepted", path);
        return REFEX_E_IO;
    }
    /* NUL-terminated by refex_file_read */
    int ok =
        rc == REFEX_OK && serial_parse((const char *)buf, len, &b->serial_floor, b->serial_hash);
    free(buf);
    if (!ok) {
        snprintf(err, errlen,
                 "%s: not a directory serial (remove it only if you know no older "
                 "directory can come back)",
                 path);
        return REFEX_E_DIRECTORY;
    }
    return REFEX_OK;
}

/* Checks d (whose file hashed to hash) against the highest serial accepted: an older one is
 * refused, and so is the same serial with other bytes (two directories signed with one
 * serial: the second could undo a revocation the first made). Records a higher serial, or
 * the hash where an old directory.serial lacked one. A write failure is reported but leaves
 * the floor raised in memory: refusing a newer directory (one that may revoke someone)
 * because the disk is full would be the worse failure. */
static int serial_admit(refex_daemon_base *b, const refex_directory *d, const char *hash, char *err,
                        size_t errlen)
{
    char path[4200], text[128];
    uint64_t serial = refex_directory_serial(d);
    if (serial < b->serial_floor) {
        snprintf(err, errlen,
                 "%s: directory serial %llu is older than serial %llu already accepted "
                 "(%s/%s): refusing a rollback",
                 b->dir_path, (unsigned long long)serial, (unsigned long long)b->serial_floor,
                 b->data_dir, REFEX_DAEMON_SERIAL_FILE);
        return REFEX_E_DIRECTORY;
    }
    if (serial == b->serial_floor && serial != 0 && b->serial_hash[0] != '\0') {
        if (strcmp(hash, b->serial_hash) == 0)
            return REFEX_OK;
        snprintf(err, errlen,
                 "%s: directory serial %llu differs from the directory already accepted "
                 "with that serial (%s/%s): refusing a directory signed twice with one serial",
                 b->dir_path, (unsigned long long)serial, b->data_dir, REFEX_DAEMON_SERIAL_FILE);
        return REFEX_E_DIRECTORY;
    }
    b->serial_floor = serial;
    snprintf(b->serial_hash, sizeof b->serial_hash, "%s", hash);
    snprintf(path, sizeof path, "%s/%s", b->data_dir, REFEX_DAEMON_SERIAL_FILE);
    int n = snprintf(text, sizeof text, "%llu %s\n", (unsigned long long)serial, hash);
    if (refex_file_write(path, text, (size_t)n, 0600) != REFEX_OK)
        refex_log_error("directory: cannot record serial %llu in %s: a rollback across a "
                        "restart would go unnoticed",
                        (unsigned long long)serial, path);
    return REFEX_OK;
}

int refex_daemon_base_load(const refex_config *cfg, const char *keys_what, refex_daemon_base *b,
                           char *err, size_t errlen)
{
    char path[4096], hash[2 * SERIAL_HASH_BYTES + 1];
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
    if ((rc = refex_pubkeys_load_anchor(path, &anchor, err, errlen)) != REFEX_OK)
        return rc;
    memcpy(b->anchor_pk, anchor.sign_pk, 32);
    if (refex_config_path(cfg, "keys", path, sizeof path)) {
        snprintf(err, errlen, "config: keys (%s) is required", keys_what);
        return REFEX_E_CONFIG;
    }
    if ((rc = refex_keys_load(path, &b->keys, err, errlen)) != REFEX_OK)
        return rc;
    if ((rc = dir_load(b, &b->dir, hash, err, errlen)) != REFEX_OK)
        return rc;
    refex_policy_warn_absent(b->dir);
    if (refex_mkdirs(b->data_dir, 0700) != REFEX_OK || chmod(b->data_dir, 0700) != 0) {
        snprintf(err, errlen, "%s: cannot create data directory", b->data_dir);
        return REFEX_E_CONFIG;
    }
    if ((rc = serial_read(b, err, errlen)) != REFEX_OK ||
        (rc = serial_admit(b, b->dir, hash, err, errlen)) != REFEX_OK)
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
    char err[1024], hash[2 * SERIAL_HASH_BYTES + 1];
    refex_directory *d = NULL;
    refex_notify_reloading();
    int rc = dir_load(b, &d, hash, err, sizeof err);
    if (rc == REFEX_OK) /* never below the highest accepted, which is >= the current one */
        rc = serial_admit(b, d, hash, err, sizeof err);
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
    /* Readiness line on stdout, like READY, for supervisors and tests; and for systemd. */
    if (rc == REFEX_OK)
        printf("RELOADED %llu\n", (unsigned long long)refex_directory_serial(b->dir));
    else
        printf("RELOAD_FAILED %s\n", refex_errname(rc));
    fflush(stdout);
    char status[128];
    snprintf(status, sizeof status, "%s directory serial %llu",
             rc == REFEX_OK ? "reloaded:" : "reload failed, kept",
             (unsigned long long)refex_directory_serial(b->dir));
    refex_notify_reloaded(status);
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
