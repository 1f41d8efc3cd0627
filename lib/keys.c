/* Key generation and key files. Files are `key = value` text so an operator can read a
 * .public file. A key file is opened once, with O_NOFOLLOW, and every check is made on that
 * descriptor (fstat), never on the path again; it is read with read(2) into a buffer this
 * module owns and wipes, on every path, errors included (no stdio buffers). Secrets never
 * leave sodium_malloc'd memory except while being written or parsed. Not a general config
 * parser: config.c reads daemon configs. */
#include "keys.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* A key file is about 700 bytes; anything much bigger is not one. */
#define KEYFILE_MAX    16384
#define KEYFILE_FIELDS 16

/* A key file's bytes, split in place into `key = value` fields. */
typedef struct {
    char *buf; /* KEYFILE_MAX + 2 bytes, wiped before it is freed */
    size_t n;
    const char *key[KEYFILE_FIELDS];
    const char *val[KEYFILE_FIELDS];
} keyfile;

int refex_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= REFEX_ID_MAX || id[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)id[i]) || isdigit((unsigned char)id[i]) || id[i] == '-'))
            return 0;
    return 1;
}

void refex_keys_destroy(refex_keys **self_p)
{
    if (!self_p || !*self_p)
        return;
    refex_keys *self = *self_p;
    sodium_free(self->sk); /* sodium_free wipes */
    free(self);
    *self_p = NULL;
}

static refex_keys *keys_alloc(void)
{
    refex_keys *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->sk = sodium_malloc(sizeof *self->sk);
    if (!self->sk) {
        free(self);
        return NULL;
    }
    return self;
}

int refex_keys_new(const char *agency, const char *role, refex_keys **out)
{
    *out = NULL;
    if (!refex_id_valid(agency) || !refex_id_valid(role))
        return REFEX_E_INVAL;
    refex_keys *self = keys_alloc();
    if (!self)
        return REFEX_E_NOMEM;
    snprintf(self->pub.agency, sizeof self->pub.agency, "%s", agency);
    snprintf(self->pub.role, sizeof self->pub.role, "%s", role);
    crypto_sign_keypair(self->pub.sign_pk, self->sk->sign_sk);
    crypto_box_keypair(self->pub.enc_pk, self->sk->enc_sk);
    crypto_box_keypair(self->pub.transport_pk, self->sk->transport_sk);
    *out = self;
    return REFEX_OK;
}

static int format_public(const refex_pubkeys *p, char *buf, size_t len)
{
    char s[65], e[65], t[65];
    refex_hex_encode(s, p->sign_pk, 32);
    refex_hex_encode(e, p->enc_pk, 32);
    refex_hex_encode(t, p->transport_pk, 32);
    return snprintf(buf, len,
                    "# refex public keys\n"
                    "agency = %s\nrole = %s\n"
                    "sign_pk = %s\nenc_pk = %s\ntransport_pk = %s\n",
                    p->agency, p->role, s, e, t);
}

/* Creates path with O_EXCL|O_NOFOLLOW, so nothing already there (a file, or a symlink to
 * one) is ever replaced or written through: REFEX_E_EXISTS instead. The mode is made exact
 * whatever the umask. A failed write removes the half-written file. */
static int write_new(const char *path, const char *data, size_t len, unsigned mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return errno == EEXIST ? REFEX_E_EXISTS : REFEX_E_IO;
    int rc = fchmod(fd, mode) == 0 ? REFEX_OK : REFEX_E_IO;
    while (rc == REFEX_OK && len > 0) {
        ssize_t w = write(fd, data, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = REFEX_E_IO;
            break;
        }
        data += w;
        len -= (size_t)w;
    }
    if (rc == REFEX_OK && fsync(fd) != 0)
        rc = REFEX_E_IO;
    if (close(fd) != 0 && rc == REFEX_OK)
        rc = REFEX_E_IO;
    if (rc != REFEX_OK)
        unlink(path);
    return rc;
}

int refex_keys_save(const refex_keys *self, const char *dir)
{
    int rc = REFEX_OK;
    char path[4096];
    char *buf = sodium_malloc(2048);
    if (!buf)
        return REFEX_E_NOMEM;
    if ((rc = refex_mkdirs(dir, 0700)) != REFEX_OK)
        goto out;

    if (snprintf(path, sizeof path, "%s/%s.secret", dir, self->pub.agency) >= (int)sizeof path) {
        rc = REFEX_E_INVAL;
        goto out;
    }
    int n = format_public(&self->pub, buf, 2048);
    char ss[129], es[65], ts[65];
    refex_hex_encode(ss, self->sk->sign_sk, 64);
    refex_hex_encode(es, self->sk->enc_sk, 32);
    refex_hex_encode(ts, self->sk->transport_sk, 32);
    n += snprintf(buf + n, 2048 - (size_t)n,
                  "# SECRET: keep this file private (mode 0600)\n"
                  "sign_sk = %s\nenc_sk = %s\ntransport_sk = %s\n",
                  ss, es, ts);
    sodium_memzero(ss, sizeof ss);
    sodium_memzero(es, sizeof es);
    sodium_memzero(ts, sizeof ts);
    if ((rc = write_new(path, buf, (size_t)n, 0600)) != REFEX_OK)
        goto out;

    /* Written by temp file and rename: that replaces a symlink, never writes through it. */
    snprintf(path, sizeof path, "%s/%s.public", dir, self->pub.agency);
    n = format_public(&self->pub, buf, 2048);
    rc = refex_file_write(path, buf, (size_t)n, 0644);
out:
    sodium_free(buf); /* sodium_free wipes */
    return rc;
}

int refex_pubkeys_save(const refex_pubkeys *p, const char *path)
{
    char buf[1024];
    int n = format_public(p, buf, sizeof buf);
    if (n < 0 || (size_t)n >= sizeof buf)
        return REFEX_E_INVAL;
    return refex_file_write(path, buf, (size_t)n, 0644);
}

static void keyfile_wipe(keyfile *kf)
{
    if (kf->buf) {
        sodium_memzero(kf->buf, KEYFILE_MAX + 2);
        free(kf->buf);
    }
    memset(kf, 0, sizeof *kf);
}

static const char *keyfile_get(const keyfile *kf, const char *key)
{
    for (size_t i = 0; i < kf->n; i++)
        if (strcmp(kf->key[i], key) == 0)
            return kf->val[i];
    return NULL;
}

/* keyfile_read's `secret` for a trust anchor's .public file: checked like a public file,
 * and then by anchor_check. */
#define KEYFILE_ANCHOR 2

/* A trust anchor's .public file is what every directory signature is checked against:
 * whoever can rewrite it can substitute an anchor of their own. So it must be owned by
 * this process's user or root, and writable by neither group nor others. */
static int anchor_check(const struct stat *st, const char *path, char *err, size_t errlen)
{
    if (st->st_uid != geteuid() && st->st_uid != 0) {
        snprintf(err, errlen,
                 "%s: trust anchor file is owned by uid %ld, neither this daemon's uid %ld nor "
                 "root, so its owner could replace the anchor; chown the file",
                 path, (long)st->st_uid, (long)geteuid());
        return REFEX_E_PERM;
    }
    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, errlen,
                 "%s: trust anchor file is writable by group or others (mode %04o), so they "
                 "could replace the anchor; run: chmod go-w %s",
                 path, (unsigned)(st->st_mode & 07777), path);
        return REFEX_E_PERM;
    }
    return REFEX_OK;
}

/* The checks, all on the open descriptor: a regular file and, for a secret, owned by the
 * user this process runs as and closed to group and others (for an anchor: anchor_check). */
static int keyfile_check(int fd, const char *path, int secret, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        return REFEX_E_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: key file is not a regular file (%s)", path,
                 S_ISDIR(st.st_mode)    ? "a directory"
                 : S_ISFIFO(st.st_mode) ? "a FIFO"
                                        : "a device or socket");
        return REFEX_E_PERM;
    }
    if (st.st_size > KEYFILE_MAX) {
        snprintf(err, errlen, "%s: too large for a key file", path);
        return REFEX_E_CONFIG;
    }
    if (secret == KEYFILE_ANCHOR)
        return anchor_check(&st, path, err, errlen);
    if (!secret)
        return REFEX_OK;
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen,
                 "%s: secret key file is owned by uid %ld, not this daemon's uid %ld; run the "
                 "daemon as the key's owner, or chown the file",
                 path, (long)st.st_uid, (long)geteuid());
        return REFEX_E_PERM;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen,
                 "%s: secret key file is readable or writable by group or others (mode %04o); "
                 "run: chmod 600 %s",
                 path, (unsigned)(st.st_mode & 07777), path);
        return REFEX_E_PERM;
    }
    return REFEX_OK;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

/* Splits len bytes of kf->buf (NUL-terminated) into fields, in place: `key = value` lines,
 * `#` comments, each key once, as config.c reads a config. */
static int keyfile_parse(keyfile *kf, size_t len, const char *path, char *err, size_t errlen)
{
    unsigned lineno = 0;
    if (memchr(kf->buf, 0, len)) {
        snprintf(err, errlen, "%s: not a key file (it holds a NUL byte)", path);
        return REFEX_E_CONFIG;
    }
    for (char *line = kf->buf, *next; line; line = next) {
        char *nl = strchr(line, '\n');
        next = nl ? nl + 1 : NULL;
        if (nl)
            *nl = 0;
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *s = trim(line), *eq = strchr(s, '=');
        if (!*s)
            continue;
        if (!eq) {
            snprintf(err, errlen, "%s:%u: expected 'key = value'", path, lineno);
            return REFEX_E_CONFIG;
        }
        *eq = 0;
        const char *k = trim(s), *v = trim(eq + 1);
        if (!*k || keyfile_get(kf, k) || kf->n == KEYFILE_FIELDS) {
            snprintf(err, errlen, "%s:%u: %s", path, lineno,
                     !*k                      ? "empty key"
                     : kf->n < KEYFILE_FIELDS ? "key given twice"
                                              : "too many entries");
            return REFEX_E_CONFIG;
        }
        kf->key[kf->n] = k;
        kf->val[kf->n++] = v;
    }
    return REFEX_OK;
}

/* Opens path once (O_NOFOLLOW: a symlink is refused, not followed), checks that descriptor,
 * and reads and parses the file. On failure kf is wiped; on success the caller wipes it. */
static int keyfile_read(const char *path, int secret, keyfile *kf, char *err, size_t errlen)
{
    int rc = REFEX_OK;
    size_t len = 0;
    memset(kf, 0, sizeof *kf);
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP) {
            snprintf(err, errlen, "%s: key file is a symbolic link; name the file itself", path);
            return REFEX_E_PERM;
        }
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
        return secret != 1 ? REFEX_E_CONFIG : e == ENOENT ? REFEX_E_NOTFOUND : REFEX_E_IO;
    }
    if ((rc = keyfile_check(fd, path, secret, err, errlen)) != REFEX_OK)
        goto out;
    if (!(kf->buf = malloc(KEYFILE_MAX + 2))) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    while (len <= KEYFILE_MAX) { /* one byte past the limit tells a file that grew */
        ssize_t r = read(fd, kf->buf + len, KEYFILE_MAX + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
            rc = REFEX_E_IO;
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (len > KEYFILE_MAX) {
        snprintf(err, errlen, "%s: too large for a key file", path);
        rc = REFEX_E_CONFIG;
        goto out;
    }
    kf->buf[len] = 0;
    rc = keyfile_parse(kf, len, path, err, errlen);
out:
    close(fd);
    if (rc != REFEX_OK)
        keyfile_wipe(kf);
    return rc;
}

static int parse_pub(const keyfile *kf, const char *path, refex_pubkeys *p, char *err,
                     size_t errlen)
{
    const char *agency = keyfile_get(kf, "agency");
    const char *role = keyfile_get(kf, "role");
    if (!refex_id_valid(agency) || !refex_id_valid(role)) {
        snprintf(err, errlen, "%s: missing or invalid agency/role", path);
        return REFEX_E_CONFIG;
    }
    memset(p, 0, sizeof *p);
    snprintf(p->agency, sizeof p->agency, "%s", agency);
    snprintf(p->role, sizeof p->role, "%s", role);
    if (refex_hex_decode(p->sign_pk, 32, keyfile_get(kf, "sign_pk")) ||
        refex_hex_decode(p->enc_pk, 32, keyfile_get(kf, "enc_pk")) ||
        refex_hex_decode(p->transport_pk, 32, keyfile_get(kf, "transport_pk"))) {
        snprintf(err, errlen, "%s: missing or malformed public key", path);
        return REFEX_E_CONFIG;
    }
    return REFEX_OK;
}

static int pubkeys_load(const char *path, int kind, refex_pubkeys *out, char *err, size_t errlen)
{
    keyfile kf;
    int rc = keyfile_read(path, kind, &kf, err, errlen);
    if (rc != REFEX_OK)
        return rc;
    rc = parse_pub(&kf, path, out, err, errlen);
    keyfile_wipe(&kf); /* it may be a .secret file read for its public half */
    return rc;
}

int refex_pubkeys_load(const char *path, refex_pubkeys *out, char *err, size_t errlen)
{
    return pubkeys_load(path, 0, out, err, errlen);
}

int refex_pubkeys_load_anchor(const char *path, refex_pubkeys *out, char *err, size_t errlen)
{
    return pubkeys_load(path, KEYFILE_ANCHOR, out, err, errlen);
}

/* REFEX_OK if the secret halves belong to the public halves. The signing key is derived
 * from its seed: the second half of sign_sk is only a stored copy of the public key. */
static int keys_match(const refex_keys *k)
{
    uint8_t pk[32], derived_sk[64];
    crypto_sign_seed_keypair(pk, derived_sk, k->sk->sign_sk);
    int bad = sodium_memcmp(pk, k->pub.sign_pk, 32) | sodium_memcmp(derived_sk, k->sk->sign_sk, 64);
    sodium_memzero(derived_sk, sizeof derived_sk);
    crypto_scalarmult_base(pk, k->sk->enc_sk);
    bad |= sodium_memcmp(pk, k->pub.enc_pk, 32);
    crypto_scalarmult_base(pk, k->sk->transport_sk);
    bad |= sodium_memcmp(pk, k->pub.transport_pk, 32);
    return bad ? REFEX_E_CONFIG : REFEX_OK;
}

int refex_keys_load(const char *path, refex_keys **out, char *err, size_t errlen)
{
    keyfile kf;
    refex_keys *self = NULL;
    *out = NULL;
    int rc = keyfile_read(path, 1, &kf, err, errlen);
    if (rc != REFEX_OK)
        return rc;
    if (!(self = keys_alloc())) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    if ((rc = parse_pub(&kf, path, &self->pub, err, errlen)) != REFEX_OK)
        goto out;
    if (refex_hex_decode(self->sk->sign_sk, 64, keyfile_get(&kf, "sign_sk")) ||
        refex_hex_decode(self->sk->enc_sk, 32, keyfile_get(&kf, "enc_sk")) ||
        refex_hex_decode(self->sk->transport_sk, 32, keyfile_get(&kf, "transport_sk"))) {
        snprintf(err, errlen, "%s: missing or malformed secret key", path);
        rc = REFEX_E_CONFIG;
        goto out;
    }
    if ((rc = keys_match(self)) != REFEX_OK) {
        snprintf(err, errlen, "%s: secret and public keys do not match", path);
        goto out;
    }
    *out = self;
    self = NULL;
out:
    refex_keys_destroy(&self);
    keyfile_wipe(&kf);
    return rc;
}
