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
        fprintf(stderr, "refex: which agent? give -c AGENT.conf or set REFEX_CONFIG\n");
        return EXIT_USAGE;
    }
    int rc = refex_client_open(cli_config, c);
    if (rc == REFEX_OK)
        rc = refex_client_set_timeout(*c, timeout_ms);
    if (rc == REFEX_OK)
        return EXIT_OK;
    fprintf(stderr, "refex: %s\n",
            *c ? refex_client_error_detail(*c) : refex_strerror(REFEX_E_NOMEM));
    refex_client_close(c);
    return rc == REFEX_E_CONFIG ? EXIT_KEYS : EXIT_NOAGENT;
}

int cli_client_reply(refex_client *c, char *text, json_t **reply)
{
    json_error_t jerr;
    *reply = NULL;
    if (!text) { /* the agent did not answer, or not readably */
        fprintf(stderr, "refex: %s\n", refex_client_error_detail(c));
        return EXIT_NOAGENT;
    }
    *reply = json_loads(text, 0, &jerr);
    refex_client_free(text);
    if (!*reply) {
        fprintf(stderr, "refex: unreadable answer from the agent\n");
        return EXIT_NOAGENT;
    }
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
        fprintf(stderr, "refex: out of memory\n");
        refex_client_close(&c);
        return EXIT_FAIL;
    }
    (void)refex_client_request(c, text, &out); /* an {"ok":false} reply is the caller's */
    free(text);
    rc = cli_client_reply(c, out, reply);
    refex_client_close(&c);
    return rc;
}

int cli_request(json_t *req, json_t **reply, int timeout_ms)
{
    int rc = cli_agent_request(req, reply, timeout_ms);
    json_decref(req);
    if (rc != EXIT_OK)
        return rc;
    if (!json_is_true(json_object_get(*reply, "ok"))) {
        rc = cli_print_error(*reply);
        json_decref(*reply);
        *reply = NULL;
    }
    return rc;
}
