/* Shared helpers: hex coding, whole-file I/O with explicit modes, clocks. Nothing here
 * knows about the protocol. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int refex_init(void)
{
    return sodium_init() < 0 ? REFEX_E_CRYPTO : REFEX_OK;
}

void refex_hex_encode(char *out, const uint8_t *in, size_t len)
{
    sodium_bin2hex(out, 2 * len + 1, in, len);
}

int refex_hex_decode(uint8_t *out, size_t len, const char *hex)
{
    size_t got = 0;
    const char *end = NULL;
    if (!hex || strlen(hex) != 2 * len)
        return REFEX_E_INVAL;
    if (sodium_hex2bin(out, len, hex, 2 * len, NULL, &got, &end) != 0 || got != len)
        return REFEX_E_INVAL;
    return REFEX_OK;
}

int refex_file_read(const char *path, size_t max, uint8_t **out, size_t *out_len)
{
    int rc = REFEX_E_IO;
    uint8_t *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? REFEX_E_NOTFOUND : REFEX_E_IO;
    struct stat st;
    if (fstat(fileno(f), &st) != 0)
        goto out;
    if ((size_t)st.st_size > max) {
        rc = REFEX_E_TOO_BIG;
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    if (n != (size_t)st.st_size)
        goto out;
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    buf = NULL;
    rc = REFEX_OK;
out:
    free(buf);
    fclose(f);
    return rc;
}

int refex_file_write(const char *path, const void *data, size_t len, unsigned mode)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return REFEX_E_INVAL;
    unlink(tmp); /* a stale temp file from a crash of this same pid */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return REFEX_E_IO;
    /* umask may have narrowed the mode, never widened it; make it exact. */
    if (fchmod(fd, mode) != 0)
        goto fail;
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0)
        goto fail;
    close(fd);
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return REFEX_E_IO;
    }
    /* Make the rename itself durable. */
    char dir[4096];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    int dfd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return REFEX_OK;
fail:
    close(fd);
    unlink(tmp);
    return REFEX_E_IO;
}

int refex_file_check_private(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? REFEX_E_NOTFOUND : REFEX_E_IO;
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        return REFEX_E_PERM;
    return REFEX_OK;
}

int refex_mkdirs(const char *path, unsigned mode)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return REFEX_E_INVAL;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return REFEX_E_IO;
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return REFEX_E_IO;
    struct stat st;
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
        return REFEX_E_IO;
    return REFEX_OK;
}

int64_t refex_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t refex_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint8_t *domain_message(const char *context, const uint8_t *data, size_t len,
                               size_t *out_len)
{
    size_t cl = strlen(context) + 1; /* with its NUL separator */
    uint8_t *m = malloc(cl + len);
    if (!m)
        return NULL;
    memcpy(m, context, cl);
    if (len)
        memcpy(m + cl, data, len);
    *out_len = cl + len;
    return m;
}

int refex_sign_domain(const char *context, const uint8_t *data, size_t len,
                      const uint8_t sign_sk[64], uint8_t sig[64])
{
    size_t mlen = 0;
    uint8_t *m = domain_message(context, data, len, &mlen);
    if (!m)
        return REFEX_E_NOMEM;
    crypto_sign_detached(sig, NULL, m, mlen, sign_sk);
    free(m);
    return REFEX_OK;
}

int refex_verify_domain(const char *context, const uint8_t *data, size_t len, const uint8_t sig[64],
                        const uint8_t sign_pk[32])
{
    size_t mlen = 0;
    uint8_t *m = domain_message(context, data, len, &mlen);
    if (!m)
        return REFEX_E_NOMEM;
    int bad = crypto_sign_verify_detached(sig, m, mlen, sign_pk);
    free(m);
    return bad ? REFEX_E_BAD_SIGNATURE : REFEX_OK;
}

void refex_random_id(uint8_t id[16])
{
    randombytes_buf(id, 16);
}

void refex_base64_encode(char *out, const uint8_t *in, size_t len)
{
    sodium_bin2base64(out, REFEX_BASE64_LEN(len), in, len, sodium_base64_VARIANT_ORIGINAL);
}

int refex_base64_decode(uint8_t *out, size_t cap, size_t *out_len, const char *in, size_t in_len)
{
    const char *end = NULL;
    size_t n = 0;
    if (sodium_base642bin(out, cap, in, in_len, NULL, &n, &end, sodium_base64_VARIANT_ORIGINAL) !=
            0 ||
        end != in + in_len)
        return REFEX_E_MALFORMED;
    *out_len = n;
    return REFEX_OK;
}

int refex_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}
