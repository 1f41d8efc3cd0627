/* Which of this agency's key sets the agent runs with, and a key rotation's other set
 * (docs/operations.md, "Rotating an agency's keys"). `refex keys rotate` moves ID.secret
 * to ID.previous.secret beside it and writes new keys as ID.secret; the agent signs and
 * connects with whichever of the two the directory names as current, and keeps the other
 * to open messages sealed to it. Not for loading key files (lib/keys.c) nor for whose
 * signatures verify (lib/directory.c, refex_agency_sign_keys). */
#include "agent.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "util.h"

/* keys_path with ".secret" replaced by ".previous.secret" (or ".previous" added). */
static int previous_path(const char *keys_path, char *out, size_t outlen)
{
    size_t n = strlen(keys_path);
    const char *ext = ".secret";
    size_t e = strlen(ext);
    int w = n > e && strcmp(keys_path + n - e, ext) == 0
                ? snprintf(out, outlen, "%.*s.previous.secret", (int)(n - e), keys_path)
                : snprintf(out, outlen, "%s.previous", keys_path);
    return w > 0 && (size_t)w < outlen ? REFEX_OK : REFEX_E_INVAL;
}

/* The end of me's rotation overlap, as UTC. */
static void describe_until(const refex_agency *me, char *buf, size_t len)
{
    struct tm tm;
    time_t t = (time_t)(me->prev_until_ms / 1000);
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "?");
}

int agent_keys_choose(agent *a, const char *keys_path, char *err, size_t errlen)
{
    char prev[4200], until[64];
    refex_keys *other = NULL;
    const refex_agency *me = refex_directory_find(a->base.dir, a->agency);
    if (!me) {
        snprintf(err, errlen, "agency '%s' is not in the directory", a->agency);
        return REFEX_E_CONFIG;
    }
    if (previous_path(keys_path, prev, sizeof prev) == REFEX_OK) {
        int rc = refex_keys_load(prev, &other, err, errlen);
        if (rc != REFEX_OK && rc != REFEX_E_NOTFOUND)
            return rc; /* there, but not safe to use: say so rather than ignore it */
        if (other && strcmp(other->pub.agency, a->agency) != 0) {
            snprintf(err, errlen, "%s: keys belong to '%s', not to agency '%s'", prev,
                     other->pub.agency, a->agency);
            refex_keys_destroy(&other);
            return REFEX_E_CONFIG;
        }
    }
    int mine = refex_agency_keys_match(me, &a->base.keys->pub);
    int theirs = other ? refex_agency_keys_match(me, &other->pub) : 0;
    describe_until(me, until, sizeof until);
    if (mine != 1 && theirs == 1) {
        /* Rotated here, and the directory does not name the new keys yet. */
        refex_log_warn("keys: the directory does not name the keys in %s yet; running with the "
                       "previous ones from %s until it does (restart the agent after the new "
                       "directory is loaded)",
                       keys_path, prev);
        refex_keys *cur = a->base.keys;
        a->base.keys = other;
        other = cur;
    } else if (mine == 2 && me->prev_until_ms > refex_now_ms()) {
        refex_log_warn("keys: the directory names new keys for %s; these are its previous keys, "
                       "accepted until %s",
                       a->agency, until);
    } else if (mine != 1) {
        snprintf(err, errlen, "agency '%s' is not in the directory with these keys%s", a->agency,
                 mine == 2 ? " (they were rotated away and the overlap has ended)" : "");
        refex_keys_destroy(&other);
        return REFEX_E_CONFIG;
    }
    if (other)
        refex_log_info("keys: holding the agency's other key set too, to open messages sealed "
                       "to it");
    a->other_keys = other;
    return REFEX_OK;
}

void agent_keys_reloaded(agent *a)
{
    char until[64];
    const refex_agency *me = refex_directory_find(a->base.dir, a->agency);
    if (!me) {
        refex_log_error("reload: agency %s is no longer in the directory", a->agency);
        return;
    }
    if (refex_agency_keys_match(me, &a->base.keys->pub) != 2)
        return;
    describe_until(me, until, sizeof until);
    if (a->other_keys && refex_agency_keys_match(me, &a->other_keys->pub) == 1)
        refex_log_warn("reload: the directory now names this agency's new keys: restart the "
                       "agent to use them (the ones in use are accepted until %s)",
                       until);
    else
        refex_log_warn("reload: the directory names new keys for %s; the ones in use are "
                       "accepted until %s: restart the agent on its new keys before then",
                       a->agency, until);
}

int agent_keys_open(agent *a, const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h,
                    uint8_t **body, size_t *len)
{
    const refex_keys *k = a->base.keys;
    int rc = refex_envelope_open(env, h, a->agency, k->pub.enc_pk, k->sk->enc_sk, body, len);
    if (rc == REFEX_E_DECRYPT && a->other_keys) {
        k = a->other_keys;
        rc = refex_envelope_open(env, h, a->agency, k->pub.enc_pk, k->sk->enc_sk, body, len);
    }
    return rc;
}
