/* Daemon configuration files: `key = value` lines, `#` comments. Relative paths are
 * resolved against the directory of the config file, so a config travels with its keys. */
#ifndef REFEX_CONFIG_H
#define REFEX_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"

typedef struct refex_config refex_config;

/* On a syntax error returns REFEX_E_CONFIG and writes "FILE:LINE: why" into err. */
int refex_config_open(const char *path, refex_config **out, char *err,
                      size_t errlen) REFEX_NODISCARD;
void refex_config_close(refex_config **self_p);

/* NULL if absent. */
const char *refex_config_get(const refex_config *self, const char *key);
/* Like get, but a relative value is resolved against the config file's directory.
 * REFEX_E_NOTFOUND if absent or empty, REFEX_E_CONFIG if buf is too small. */
int refex_config_path(const refex_config *self, const char *key, char *buf, size_t len);
/* Unsigned integer with optional K/M/G suffix; def if absent. */
int refex_config_uint(const refex_config *self, const char *key, uint64_t def, uint64_t *out);
/* A group given by name (or number): its gid in *gid, -1 if the key is absent. An unknown
 * group is REFEX_E_CONFIG with "config: KEY: ..." in err. */
int refex_config_group(const refex_config *self, const char *key, long *gid, char *err,
                       size_t errlen) REFEX_NODISCARD;
/* REFEX_E_CONFIG naming the first key not in the NULL-terminated allowed list. */
int refex_config_check_keys(const refex_config *self, const char *const *allowed, char *err,
                            size_t errlen);

#endif
