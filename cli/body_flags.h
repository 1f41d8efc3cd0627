/* The body options `refex send` and `refex case publish` share: --body FILE|- and the
 * flags that set one field each (lawful basis, consent, purpose, practitioner, and send's
 * referral fields), merged over the body. Nothing is defaulted: what is not given is left
 * for the agent's required-field check to name. */
#ifndef REFEX_CLI_BODY_FLAGS_H
#define REFEX_CLI_BODY_FLAGS_H

#include <jansson.h>

/* getopt_long values of the body flags, for the commands' option tables. */
enum {
    O_KIND = 256,
    O_SUBJ,
    O_DUE,
    O_GEST,
    O_CONCERN,
    O_URG,
    O_SUM,
    O_A6,
    O_A9,
    O_CONS,
    O_PREF,
    O_PROLE,
    O_PURPOSE
};

typedef struct {
    const char *file; /* --body FILE, "-" for stdin */
    int used;         /* a body flag was given */
    json_t *flags, *concerns, *practitioner;
} cli_body;

int cli_body_init(cli_body *b);
void cli_body_fini(cli_body *b);
/* One body flag (an O_* value) into b; EXIT_USAGE (printed) for a bad value or an option
 * that is not a body flag. */
int cli_body_flag(cli_body *b, const char *cmd, int opt, const char *arg);
/* The body from --body (or {} without it), the flags over it (one level deep for objects),
 * the practitioner flags under the member of message type `type` that names who sent it
 * (referrer, decided_by, ...). EXIT_OK or EXIT_FAIL (printed). */
int cli_body_build(const cli_body *b, const char *cmd, const char *type, json_t **out);

#endif
