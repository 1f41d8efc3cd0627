/* Parser for the small `key = value` config files of refex-broker and refex-agent.
 * Not a general INI parser: no sections, no quoting, one value per key. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ENTRIES 64

struct refex_config {
    char *c_dir; /* directory of the config file, for relative paths */
    size_t c_n;
    char *c_key[MAX_ENTRIES];
    char *c_val[MAX_ENTRIES];
};

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = 0;
    return s;
}

void refex_config_close(refex_config **self_p)
{
    if (!self_p || !*self_p)
        return;
    refex_config *self = *self_p;
    /* Key files are parsed with this module too: wipe values, they may be secret. */
    for (size_t i = 0; i < self->c_n; i++) {
        free(self->c_key[i]);
        if (self->c_val[i])
            sodium_memzero(self->c_val[i], strlen(self->c_val[i]));
        free(self->c_val[i]);
    }
    free(self->c_dir);
    free(self);
    *self_p = NULL;
}

int refex_config_open(const char *path, refex_config **out, char *err, size_t errlen)
{
    int rc = REFEX_OK;
    char line[4096];
    unsigned lineno = 0;
    refex_config *self = calloc(1, sizeof *self);
    FILE *f = NULL;
    if (!self)
        return REFEX_E_NOMEM;
    const char *slash = strrchr(path, '/');
    self->c_dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
    if (!self->c_dir) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        rc = REFEX_E_CONFIG;
        goto out;
    }
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s:%u: line too long", path, lineno);
            rc = REFEX_E_CONFIG;
            goto out;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%u: expected 'key = value'", path, lineno);
            rc = REFEX_E_CONFIG;
            goto out;
        }
        *eq = 0;
        char *k = trim(s), *v = trim(eq + 1);
        if (!*k) {
            snprintf(err, errlen, "%s:%u: empty key", path, lineno);
            rc = REFEX_E_CONFIG;
            goto out;
        }
        if (refex_config_get(self, k)) {
            snprintf(err, errlen, "%s:%u: '%s' given twice", path, lineno, k);
            rc = REFEX_E_CONFIG;
            goto out;
        }
        if (self->c_n == MAX_ENTRIES) {
            snprintf(err, errlen, "%s:%u: too many entries", path, lineno);
            rc = REFEX_E_CONFIG;
            goto out;
        }
        self->c_key[self->c_n] = strdup(k);
        self->c_val[self->c_n] = strdup(v);
        self->c_n++;
        if (!self->c_key[self->c_n - 1] || !self->c_val[self->c_n - 1]) {
            rc = REFEX_E_NOMEM;
            goto out;
        }
    }
out:
    sodium_memzero(line, sizeof line);
    if (f)
        fclose(f);
    if (rc != REFEX_OK)
        refex_config_close(&self);
    *out = self;
    return rc;
}

const char *refex_config_get(const refex_config *self, const char *key)
{
    for (size_t i = 0; i < self->c_n; i++)
        if (strcmp(self->c_key[i], key) == 0)
            return self->c_val[i];
    return NULL;
}

int refex_config_path(const refex_config *self, const char *key, char *buf, size_t len)
{
    const char *v = refex_config_get(self, key);
    int n;
    if (!v || !*v)
        return REFEX_E_NOTFOUND;
    if (v[0] == '/')
        n = snprintf(buf, len, "%s", v);
    else
        n = snprintf(buf, len, "%s/%s", self->c_dir, v);
    return (n < 0 || (size_t)n >= len) ? REFEX_E_CONFIG : REFEX_OK;
}

int refex_config_uint(const refex_config *self, const char *key, uint64_t def, uint64_t *out)
{
    const char *v = refex_config_get(self, key);
    if (!v) {
        *out = def;
        return REFEX_OK;
    }
    if (!isdigit((unsigned char)*v))
        return REFEX_E_CONFIG;
    errno = 0;
    char *end = NULL;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno)
        return REFEX_E_CONFIG;
    uint64_t mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1024 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1024ull * 1024 * 1024, end++;
    if (*end || (mul > 1 && n > UINT64_MAX / mul))
        return REFEX_E_CONFIG;
    *out = (uint64_t)n * mul;
    return REFEX_OK;
}

int refex_config_group(const refex_config *self, const char *key, long *gid, char *err,
                       size_t errlen)
{
    const char *v = refex_config_get(self, key);
    struct group gr, *found = NULL;
    char buf[16384];
    *gid = -1;
    if (!v)
        return REFEX_OK;
    int e = *v ? getgrnam_r(v, &gr, buf, sizeof buf, &found) : 0;
    if (!found && *v && isdigit((unsigned char)*v)) {
        char *end = NULL;
        errno = 0;
        unsigned long n = strtoul(v, &end, 10);
        if (!*end && !errno && n < (unsigned long)(gid_t)-1)
            e = getgrgid_r((gid_t)n, &gr, buf, sizeof buf, &found);
    }
    if (!found) {
        snprintf(err, errlen, "config: %s: no group named '%s' on this system%s%s", key, v,
                 e ? ": " : "", e ? strerror(e) : "");
        return REFEX_E_CONFIG;
    }
    *gid = (long)found->gr_gid;
    return REFEX_OK;
}

int refex_config_check_keys(const refex_config *self, const char *const *allowed, char *err,
                            size_t errlen)
{
    for (size_t i = 0; i < self->c_n; i++) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, self->c_key[i]) == 0)
                ok = 1;
        if (!ok) {
            snprintf(err, errlen, "unknown setting '%s'", self->c_key[i]);
            return REFEX_E_CONFIG;
        }
    }
    return REFEX_OK;
}
