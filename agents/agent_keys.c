/* Which of this agency's key sets the agent runs with, and a key rotation's other set
 * (docs/operations.md, "Rotating an agency's keys"). `refex keys rotate` moves ID.secret
 * to ID.previous.secret beside it and writes new keys as ID.secret; the agent signs and
 * connects with whichever of the two the directory names as current, and keeps the other
 * to open messages sealed to it. Also the key epochs both sets take part in: the sender's
 * epoch per recipient key and the cache of senders' epoch keys per own key (lib/epoch.c).
 * Not for loading key files (lib/keys.c) nor for whose signatures verify (lib/directory.c,
 * refex_agency_sign_keys). */
#include "agent.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"
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

/* Loads the key file at path if there is one (NULL if absent), for this agency only. */
static int load_optional(agent *a, const char *path, refex_keys **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = refex_keys_load(path, out, err, errlen);
    if (rc == REFEX_E_NOTFOUND)
        return REFEX_OK;
    if (rc != REFEX_OK)
        return rc; /* there, but not safe to use: say so rather than ignore it */
    if (strcmp((*out)->pub.agency, a->agency) != 0) {
        snprintf(err, errlen, "%s: keys belong to '%s', not to agency '%s'", path,
                 (*out)->pub.agency, a->agency);
        refex_keys_destroy(out);
        return REFEX_E_CONFIG;
    }
    return REFEX_OK;
}

static int same_keys(const refex_keys *x, const refex_keys *y)
{
    return sodium_memcmp(x->pub.sign_pk, y->pub.sign_pk, 32) == 0 &&
           sodium_memcmp(x->pub.enc_pk, y->pub.enc_pk, 32) == 0 &&
           sodium_memcmp(x->pub.transport_pk, y->pub.transport_pk, 32) == 0;
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
    snprintf(a->keys_path, sizeof a->keys_path, "%s", keys_path);
    int rc = previous_path(keys_path, prev, sizeof prev);
    if (rc == REFEX_OK)
        rc = load_optional(a, prev, &other, err, errlen);
    if (rc != REFEX_OK)
        return rc;
    if (other && same_keys(other, a->base.keys)) {
        refex_log_warn("keys: %s holds the same keys as %s; ignored", prev, keys_path);
        refex_keys_destroy(&other);
    }
    int mine = refex_agency_keys_match(me, &a->base.keys->pub);
    int theirs = other ? refex_agency_keys_match(me, &other->pub) : 0;
    int64_t now = refex_now_ms();
    describe_until(me, until, sizeof until);
    if (mine != 1 && (theirs == 1 || (mine == 0 && theirs == 2 && me->prev_until_ms > now))) {
        /* Rotated here, and the directory does not name the new keys yet. */
        refex_log_warn("keys: the directory does not name the keys in %s; running with the "
                       "previous ones from %s (restart the agent once the directory names the "
                       "new ones)",
                       keys_path, prev);
        refex_keys *cur = a->base.keys;
        a->base.keys = other;
        other = cur;
    } else if (mine == 2 && me->prev_until_ms > now) {
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

int agent_keys_behind(agent *a)
{
    const refex_agency *me = refex_directory_find(a->base.dir, a->agency);
    return me && refex_agency_keys_match(me, &a->base.keys->pub) != 1 &&
           !(a->other_keys && refex_agency_keys_match(me, &a->other_keys->pub) == 1);
}

/* After a reload that names keys other than the ones in use: the set on disk that the
 * directory now names, if there is one, replaces other_keys (so what senders now seal to
 * it opens here before the restart); 1 if one did. */
static int hold_current_from_disk(agent *a, const refex_agency *me)
{
    char prev[4200], err[512];
    const char *paths[2] = {a->keys_path, prev};
    if (previous_path(a->keys_path, prev, sizeof prev) != REFEX_OK)
        return 0;
    if (a->other_keys && refex_agency_keys_match(me, &a->other_keys->pub) == 1)
        return 1;
    for (int i = 0; i < 2; i++) {
        refex_keys *k = NULL;
        if (load_optional(a, paths[i], &k, err, sizeof err) != REFEX_OK) {
            refex_log_warn("reload: %s", err);
            continue;
        }
        if (k && refex_agency_keys_match(me, &k->pub) == 1) {
            if (a->other_keys) /* its senders' epoch keys are of no more use */
                refex_epoch_cache_forget(a->epoch_cache, a->other_keys->pub.enc_pk);
            refex_keys_destroy(&a->other_keys);
            a->other_keys = k;
            return 1;
        }
        refex_keys_destroy(&k);
    }
    return 0;
}

void agent_keys_reloaded(agent *a)
{
    char until[64];
    const refex_agency *me = refex_directory_find(a->base.dir, a->agency);
    if (!me) {
        refex_log_error("reload: agency %s is no longer in the directory", a->agency);
        return;
    }
    int mine = refex_agency_keys_match(me, &a->base.keys->pub);
    if (mine == 1)
        return;
    describe_until(me, until, sizeof until);
    int held = hold_current_from_disk(a, me);
    if (mine == 0)
        refex_log_error("reload: the directory no longer names the keys this agent uses: "
                        "restart it on the keys it names");
    else if (me->prev_until_ms <= refex_now_ms())
        refex_log_error("reload: the keys in use were rotated away and their overlap has ended: "
                        "restart the agent on its new keys");
    else
        refex_log_warn("reload: the directory names new keys for %s; the ones in use are "
                       "accepted until %s: restart the agent on its new keys before then",
                       a->agency, until);
    if (held)
        refex_log_info("reload: holding the new keys from disk, to open what is now sealed to "
                       "them");
    else
        refex_log_error("reload: the keys the directory names for %s are in neither %s nor "
                        "its .previous file: messages sealed to them wait at the broker",
                        a->agency, a->keys_path);
}

int agent_keys_epochs_open(agent *a, const refex_config *cfg, char *err, size_t errlen)
{
    uint64_t secs = 0, msgs = 0;
    if (refex_config_uint(cfg, "epoch_seconds", REFEX_EPOCH_SECONDS_DEFAULT, &secs) || secs < 1 ||
        secs > REFEX_EPOCH_SECONDS_MAX) {
        snprintf(err, errlen, "config: epoch_seconds must be between 1 and %d",
                 REFEX_EPOCH_SECONDS_MAX);
        return REFEX_E_CONFIG;
    }
    if (refex_config_uint(cfg, "epoch_messages", REFEX_EPOCH_MESSAGES_DEFAULT, &msgs) || msgs < 1 ||
        msgs > REFEX_EPOCH_MESSAGES_MAX) {
        snprintf(err, errlen, "config: epoch_messages must be between 1 and %d",
                 REFEX_EPOCH_MESSAGES_MAX);
        return REFEX_E_CONFIG;
    }
    /* A sender's epoch lasts at most as long as ours by default; an EK idle that long is
     * wiped here (derived again, once, if its epoch goes on). */
    int rc = refex_epoch_sender_new(secs, msgs, &a->epochs);
    if (rc == REFEX_OK)
        rc = refex_epoch_cache_new((int64_t)secs * 1000, &a->epoch_cache);
    return rc;
}

void agent_keys_fini(agent *a)
{
    refex_epoch_sender_destroy(&a->epochs);
    refex_epoch_cache_destroy(&a->epoch_cache);
    refex_keys_destroy(&a->other_keys);
}

int agent_keys_open(agent *a, const Refex__V1__Envelope *env, const Refex__V1__EnvelopeHeader *h,
                    uint8_t **body, size_t *len)
{
    refex_open_key k[REFEX_OPEN_KEYS_MAX] = {{a->base.keys->pub.enc_pk, a->base.keys->sk->enc_sk}};
    size_t n = 1;
    if (a->other_keys)
        k[n++] = (refex_open_key){a->other_keys->pub.enc_pk, a->other_keys->sk->enc_sk};
    return refex_envelope_open_keys(env, h, a->agency, k, n, a->epoch_cache, body, len);
}
