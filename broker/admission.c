/* Revocation that bites: ZAP admits a CurveZMQ connection only at its handshake, so a
 * reloaded directory would otherwise not reach connections already open. Here every frame
 * is checked against the directory in force, and a reload ends the sessions of agencies no
 * longer admitted. libzmq has no per-peer disconnect on a ROUTER (zmq_disconnect is for
 * connect endpoints; closing or shutting down the fd from ZMQ_SRCFD races with libzmq's own
 * I/O thread, which may already have closed and reused that number), so "disconnected"
 * means: no more deliveries, every frame refused E_REVOKED, new handshakes refused by ZAP
 * (docs/protocol.md). Not for the handshake itself (zap.c) or session bookkeeping
 * (session.c). */
#include "admission.h"

#include <sodium.h>
#include <string.h>

#include "link.h"
#include "log.h"
#include "util.h"

/* Why the directory no longer admits agency with transport key pk (NULL: its current key),
 * or NULL if it does: a previous key only inside its rotation overlap. */
static const char *not_admitted(const refex_directory *dir, const char *agency, const uint8_t *pk)
{
    const refex_agency *a = refex_directory_find(dir, agency);
    if (!a)
        return "agency no longer in the directory";
    if (strcmp(a->role, "broker") == 0 || strcmp(a->role, "trust-anchor") == 0)
        return "not an agency";
    const char *why = NULL;
    if (refex_agency_admits_transport(a, pk ? pk : a->transport_pk, refex_now_ms(), &why) !=
        REFEX_OK)
        return why;
    return NULL;
}

int admission_refuse(broker *b, const peer *p)
{
    uint8_t pk[32];
    const char *why = "connection has no admitted transport key";
    const char *key_hex = p->key_hex;
    if (key_hex && strlen(key_hex) == 64 && refex_hex_decode(pk, 32, key_hex) == REFEX_OK)
        why = not_admitted(b->base.dir, p->agency, pk);
    if (!why)
        return 0;
    if (broker_may_warn(b, p->agency)) /* it keeps its connection: it may flood */
        refex_log_warn("admission: frame from %s refused: %s", p->agency, why);
    session *s = session_by_rid(b, p->rid, p->rid_len);
    if (s && s->fd == p->fd && strcmp(s->agency, p->agency) == 0)
        session_drop(b, s);
    if (refex_link_send_error(b->router, p->rid, p->rid_len, REFEX_E_REVOKED, why) != REFEX_OK)
        refex_log_debug("admission: could not tell %s", p->agency);
    return 1;
}

/* Ends the session of every agency `dir` no longer admits, checking the transport key
 * each session was admitted with; `under` is the directory the sessions were admitted
 * under, for a session that did not record its key (the one `under` listed). */
static void sweep(broker *b, const refex_directory *under)
{
    for (size_t i = 0; i < b->n_sessions; i++) {
        session *s = &b->sessions[i];
        const refex_agency *was = under ? refex_directory_find(under, s->agency) : NULL;
        const uint8_t *pk = s->has_transport_pk ? s->transport_pk : was ? was->transport_pk : NULL;
        const char *why = not_admitted(b->base.dir, s->agency, pk);
        if (!why)
            continue;
        refex_log_warn("admission: ending the session of %s: %s", s->agency, why);
        if (refex_link_send_error(b->router, s->rid, s->rid_len, REFEX_E_REVOKED, why) != REFEX_OK)
            refex_log_debug("admission: could not tell %s", s->agency);
        session_drop(b, &b->sessions[i--]);
    }
}

void admission_sweep(broker *b)
{
    /* The sessions were bound, and their every frame checked, under the directory this
     * reload replaced. */
    sweep(b, b->base.prev_dir);
}

void admission_tick(broker *b)
{
    int64_t now = refex_mono_ms();
    if (now < b->next_admission_ms)
        return;
    b->next_admission_ms = now + ADMISSION_EVERY_MS;
    sweep(b, b->base.dir); /* no reload: the keys are the current directory's */
}
