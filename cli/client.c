/* The CLI's one way to the local agent: librefex-client, opened from the -c config, with
 * the CLI's exit codes and messages for each way a request can fail. Formatting of what
 * comes back is the commands' business, not this file's. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "refex/client.h"

int cli_client_open(refex_client **c, int timeout_ms)
{
    *c = NULL;
    if (!cli_config) {
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex: which agent? give -c AGENT.conf or set REFEX_CONFIG\n");
    }
    int rc = refex_client_open(cli_config, c);
    if (rc == REFEX_OK)
        rc = refex_client_set_timeout(*c, timeout_ms);
    if (rc == REFEX_OK)
        return EXIT_OK;
    /* E_DENIED: the agent runs, but this user may not use it; the same exit as when the
     * agent itself refuses the request (EXIT_FAIL), not "no agent". */
    int code = rc == REFEX_E_CONFIG ? EXIT_KEYS : rc == REFEX_E_DENIED ? EXIT_FAIL : EXIT_NOAGENT;
    cli_fail(code, refex_errname(rc), "refex: %s\n",
             *c ? refex_client_error_detail(*c) : refex_strerror(REFEX_E_NOMEM));
    refex_client_close(c);
    return code;
}

/* Codes for which the agent did not answer (readably): the CLI's "no agent" exit. */
static int no_answer(int rc)
{
    return rc == REFEX_E_TIMEOUT || rc == REFEX_E_UNAVAILABLE || rc == REFEX_E_IO ||
           rc == REFEX_E_MALFORMED;
}

int cli_client_reply(refex_client *c, int rc, char *text, json_t **reply)
{
    json_error_t jerr;
    *reply = NULL;
    if (!text && no_answer(rc))
        return cli_fail(EXIT_NOAGENT, refex_errname(rc), "refex: %s\n",
                        refex_client_error_detail(c));
    if (!text) /* refused by the library before anything was sent */
        return cli_fail(EXIT_FAIL, refex_errname(rc), "refex: %s\n", refex_client_error(c));
    *reply = json_loads(text, 0, &jerr);
    refex_client_free(text);
    if (!*reply)
        return cli_fail(EXIT_NOAGENT, "E_MALFORMED", "refex: unreadable answer from the agent\n");
    return EXIT_OK;
}

int cli_agent_request(json_t *req, json_t **reply, int timeout_ms)
{
    refex_client *c = NULL;
    char *text = NULL, *out = NULL;
    *reply = NULL;
    int rc = cli_client_open(&c, timeout_ms);
    if (rc != EXIT_OK)
        return rc;
    if (!(text = json_dumps(req, JSON_COMPACT))) {
        refex_client_close(&c);
        return cli_fail(EXIT_FAIL, "E_NOMEM", "refex: out of memory\n");
    }
    /* An {"ok":false} reply is the caller's to print. */
    int lib_rc = refex_client_request(c, text, &out);
    free(text);
    rc = cli_client_reply(c, lib_rc, out, reply);
    refex_client_close(&c);
    return rc;
}

int cli_call(int timeout_ms, cli_call_fn fn, const void *arg, json_t **reply)
{
    refex_client *c = NULL;
    char *text = NULL;
    *reply = NULL;
    int rc = cli_client_open(&c, timeout_ms);
    if (rc != EXIT_OK)
        return rc;
    rc = fn(c, arg, &text); /* before text is read: argument order is unspecified */
    rc = cli_client_reply(c, rc, text, reply);
    refex_client_close(&c);
    if (rc == EXIT_OK && !json_is_true(json_object_get(*reply, "ok"))) {
        rc = cli_print_error(*reply);
        json_decref(*reply);
        *reply = NULL;
    }
    return rc;
}
