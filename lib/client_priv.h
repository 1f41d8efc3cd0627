/* Private to librefex-client: what client.c (the connection) offers client_calls.c (the
 * commands). Not installed, not exported. */
#ifndef REFEX_CLIENT_PRIV_H
#define REFEX_CLIENT_PRIV_H

#include <jansson.h>

#include "refex/client.h"

/* Records code and a printf-style detail as the client's last error; returns code. An
 * empty detail becomes refex_strerror(code). */
int refex_client_fail(refex_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends req (reference stolen; NULL means out of memory) and returns as
 * refex_client_request does; out may be NULL when the reply is not wanted. */
int refex_client_call(refex_client *c, json_t *req, char **out);
/* refex_client_call, waiting extra_ms longer than the client's timeout for the reply (a
 * request the agent may hold, such as inbox_wait). */
int refex_client_call_long(refex_client *c, json_t *req, int extra_ms, char **out);

#endif
