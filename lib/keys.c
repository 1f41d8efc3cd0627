/* Key generation and key files. Files are `key = value` text (parsed by config.c) so an
 * operator can read a .public file; secrets never leave sodium_malloc'd memory except
 * while being written or parsed, and those buffers are wiped. */
#include "keys.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "util.h"

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

int refex_keys_save(const refex_keys *self, const char *dir)
{
    int rc = REFEX_OK;
    char path[4096];
    char *buf = sodium_malloc(2048);
    if (!buf)
        return REFEX_E_NOMEM;
    if ((rc = refex_mkdirs(dir, 0700)) != REFEX_OK)
        goto out;

    snprintf(path, sizeof path, "%s/%s.secret", dir, self->pub.agency);
    if (access(path, F_OK) == 0) {
        rc = REFEX_E_EXISTS;
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
    if ((rc = refex_file_write(path, buf, (size_t)n, 0600)) != REFEX_OK)
        goto out;

    snprintf(path, sizeof path, "%s/%s.public", dir, self->pub.agency);
    n = format_public(&self->pub, buf, 2048);
    rc = refex_file_write(path, buf, (size_t)n, 0644);
out:
    sodium_free(buf);
    return rc;
}

static int parse_pub(const refex_config *cfg, const char *path, refex_pubkeys *p, char *err,
                     size_t errlen)
{
    const char *agency = refex_config_get(cfg, "agency");
    const char *role = refex_config_get(cfg, "role");
    if (!refex_id_valid(agency) || !refex_id_valid(role)) {
        snprintf(err, errlen, "%s: missing or invalid agency/role", path);
        return REFEX_E_CONFIG;
    }
    memset(p, 0, sizeof *p);
    snprintf(p->agency, sizeof p->agency, "%s", agency);
    snprintf(p->role, sizeof p->role, "%s", role);
    if (refex_hex_decode(p->sign_pk, 32, refex_config_get(cfg, "sign_pk")) ||
        refex_hex_decode(p->enc_pk, 32, refex_config_get(cfg, "enc_pk")) ||
        refex_hex_decode(p->transport_pk, 32, refex_config_get(cfg, "transport_pk"))) {
        snprintf(err, errlen, "%s: missing or malformed public key", path);
        return REFEX_E_CONFIG;
    }
    return REFEX_OK;
}

int refex_pubkeys_load(const char *path, refex_pubkeys *out, char *err, size_t errlen)
{
    refex_config *cfg = NULL;
    int rc = refex_config_open(path, &cfg, err, errlen);
    if (rc != REFEX_OK)
        return rc;
    rc = parse_pub(cfg, path, out, err, errlen);
    refex_config_close(&cfg);
    return rc;
}

int refex_keys_load(const char *path, refex_keys **out, char *err, size_t errlen)
{
    refex_config *cfg = NULL;
    refex_keys *self = NULL;
    int rc = refex_file_check_private(path);
    *out = NULL;
    if (rc == REFEX_E_PERM) {
        snprintf(err, errlen,
                 "%s: secret key file is readable by group or others; run: chmod 600 %s", path,
                 path);
        return rc;
    }
    if (rc != REFEX_OK) {
        snprintf(err, errlen, "%s: %s", path, refex_strerror(rc));
        return rc;
    }
    if ((rc = refex_config_open(path, &cfg, err, errlen)) != REFEX_OK)
        return rc;
    if (!(self = keys_alloc())) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    if ((rc = parse_pub(cfg, path, &self->pub, err, errlen)) != REFEX_OK)
        goto out;
    if (refex_hex_decode(self->sk->sign_sk, 64, refex_config_get(cfg, "sign_sk")) ||
        refex_hex_decode(self->sk->enc_sk, 32, refex_config_get(cfg, "enc_sk")) ||
        refex_hex_decode(self->sk->transport_sk, 32, refex_config_get(cfg, "transport_sk"))) {
        snprintf(err, errlen, "%s: missing or malformed secret key", path);
        rc = REFEX_E_CONFIG;
        goto out;
    }
    /* The secret halves must belong to the public halves in the same file. */
    /* Derive from the seed: the second half of sign_sk is only a stored copy. */
    uint8_t pk[32], derived_sk[64];
    crypto_sign_seed_keypair(pk, derived_sk, self->sk->sign_sk);
    int bad =
        sodium_memcmp(pk, self->pub.sign_pk, 32) | sodium_memcmp(derived_sk, self->sk->sign_sk, 64);
    sodium_memzero(derived_sk, sizeof derived_sk);
    crypto_scalarmult_base(pk, self->sk->enc_sk);
    bad |= sodium_memcmp(pk, self->pub.enc_pk, 32);
    crypto_scalarmult_base(pk, self->sk->transport_sk);
    bad |= sodium_memcmp(pk, self->pub.transport_pk, 32);
    if (bad) {
        snprintf(err, errlen, "%s: secret and public keys do not match", path);
        rc = REFEX_E_CONFIG;
        goto out;
    }
    *out = self;
    self = NULL;
out:
    refex_keys_destroy(&self);
    refex_config_close(&cfg);
    return rc;
}
