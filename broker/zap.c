/* The broker's ZAP handler (RFC 27): admits a CurveZMQ client only if its transport key
 * belongs to a usable agency in the signed directory, and names that agency as the
 * connection's User-Id, which the broker then reads from every frame. */
#include "zap.h"

#include <string.h>
#include <zmq.h>

#include "log.h"
#include "util.h"

/* An admitted connection's reply carries one metadata property (ZMTP 3.0 encoding: name
 * length octet, name, 4-octet big-endian value length, value): the transport key, so the
 * broker can tell later which key a connection was admitted with (admission.c). */
static void zap_reply(void *zap, const zmq_msg_t *req_id, const char *code, const char *text,
                      const char *user, const uint8_t *pk)
{
    uint8_t meta[1 + sizeof BROKER_ZAP_KEY_PROPERTY + 4 + 64];
    size_t name_len = strlen(BROKER_ZAP_KEY_PROPERTY), meta_len = 0;
    if (pk) {
        char hex[65];
        refex_hex_encode(hex, pk, 32);
        meta[0] = (uint8_t)name_len;
        memcpy(meta + 1, BROKER_ZAP_KEY_PROPERTY, name_len);
        memcpy(meta + 1 + name_len, "\0\0\0\x40", 4); /* 64 */
        memcpy(meta + 5 + name_len, hex, 64);
        meta_len = 5 + name_len + 64;
    }
    zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(zap, zmq_msg_data((zmq_msg_t *)req_id), zmq_msg_size((zmq_msg_t *)req_id),
             ZMQ_SNDMORE);
    zmq_send(zap, code, strlen(code), ZMQ_SNDMORE);
    zmq_send(zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(zap, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(zap, meta, meta_len, 0);
}

void broker_zap_handle(void *zap, const refex_directory *dir, refex_log_gate *gate)
{
    zmq_msg_t part[8];
    int n = 0, more = 1;
    while (more && n < 8) {
        zmq_msg_init(&part[n]);
        if (zmq_msg_recv(&part[n], zap, 0) < 0) {
            zmq_msg_close(&part[n]);
            break;
        }
        more = zmq_msg_more(&part[n]);
        n++;
    }
    while (more) { /* drain anything beyond what RFC 27 defines */
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        if (zmq_msg_recv(&extra, zap, 0) < 0)
            more = 0;
        else
            more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
    if (n < 2)
        goto out; /* cannot even address a reply */
    if (n != 7 || zmq_msg_size(&part[5]) != 5 || memcmp(zmq_msg_data(&part[5]), "CURVE", 5) ||
        zmq_msg_size(&part[6]) != 32) {
        if (refex_log_gate_pass(gate, "zap", refex_mono_ms()))
            refex_log_warn("zap: denied a connection not using CURVE");
        zap_reply(zap, &part[1], "400", "CURVE required", "", NULL);
        goto out;
    }
    const uint8_t *pk = zmq_msg_data(&part[6]);
    const refex_agency *a = refex_directory_find_transport(dir, pk);
    char hex[17];
    refex_hex_encode(hex, pk, 8);
    if (!a || strcmp(a->role, "broker") == 0 || strcmp(a->role, "trust-anchor") == 0) {
        if (refex_log_gate_pass(gate, "zap", refex_mono_ms()))
            refex_log_warn("zap: denied transport key %s...: not an agency in the directory", hex);
        zap_reply(zap, &part[1], "400", "unknown transport key", "", NULL);
        goto out;
    }
    const char *why = NULL;
    if (refex_agency_admits_transport(a, pk, refex_now_ms(), &why) != REFEX_OK) {
        if (refex_log_gate_pass(gate, "zap", refex_mono_ms()))
            refex_log_warn("zap: denied %s: %s", a->id, why);
        zap_reply(zap, &part[1], "400", "agency revoked", "", NULL);
        goto out;
    }
    refex_log_debug("zap: admitted %s", a->id);
    zap_reply(zap, &part[1], "200", "OK", a->id, pk);
out:
    for (int i = 0; i < n; i++)
        zmq_msg_close(&part[i]);
}
