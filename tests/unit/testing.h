/* Shared helpers for the cmocka unit tests: assertions that print refex_strerror, and
 * scratch directories. Include after <cmocka.h>. */
#ifndef REFEX_TESTING_H
#define REFEX_TESTING_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refex/error.h"

#define assert_rc(expr, want)                                                                      \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != (want))                                                                         \
            fail_msg("%s: got %s (%s), want %s", #expr, refex_errname(rc_), refex_strerror(rc_),   \
                     refex_errname(want));                                                         \
    } while (0)

#define assert_ok(expr) assert_rc(expr, REFEX_OK)

/* Creates a fresh directory under $TMPDIR (or /tmp); the caller removes it with
 * testing_rmtree. */
static inline void testing_tmpdir(char *buf, size_t len)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, len, "%s/refex-unit-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(buf))
        fail_msg("mkdtemp failed");
}

static inline void testing_rmtree(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

#endif
