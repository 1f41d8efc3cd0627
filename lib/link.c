/* ZeroMQ socket plumbing. Knows frames and keys, not routing or policy. */
#include "link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "codec.h"
#include "log.h"

int refex_link_curve_server(void *sock, const refex_keys *k)
{
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k->sk->transport_sk, 32) ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, REFEX_ZAP_DOMAIN, strlen(REFEX_ZAP_DOMAIN)))
        return REFEX_E_CRYPTO;
    return REFEX_OK;
}

int refex_link_curve_client(void *sock, const refex_keys *k, const uint8_t server_pk[32])
{
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_pk, 32) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, k->pub.transport_pk, 32) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k->sk->transport_sk, 32))
        return REFEX_E_CRYPTO;
    return REFEX_OK;
}

void refex_link_tune(void *sock, size_t max_frame)
{
    int linger = 1000, ivl = 5000, timeout = 15000, rivl = 100, rmax = 5000;
    /* Frames a little over the limit still arrive and get a typed error back; only
     * grossly oversized ones make libzmq drop the connection. */
    int64_t hard = (int64_t)max_frame * 2 + 65536;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(sock, ZMQ_HEARTBEAT_TIMEOUT, &timeout, sizeof timeout);
    zmq_setsockopt(sock, ZMQ_RECONNECT_IVL, &rivl, sizeof rivl);
    zmq_setsockopt(sock, ZMQ_RECONNECT_IVL_MAX, &rmax, sizeof rmax);
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &hard, sizeof hard);
}

/* EHOSTUNREACH: the peer is gone (ROUTER_MANDATORY); EAGAIN: its queue is full. */
static int send_error(int err)
{
    return err == EHOSTUNREACH ? REFEX_E_UNAVAILABLE : err == EAGAIN ? REFEX_E_BUSY : REFEX_E_IO;
}

int refex_link_send(void *sock, const void *rid, size_t rid_len, Refex__V1__Frame *f)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    f->version = REFEX_PROTOCOL_VERSION;
    int rc = refex_frame_pack(f, &buf, &len);
    if (rc != REFEX_OK)
        return rc;
    if (rid && zmq_send(sock, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        rc = send_error(errno);
        goto out;
    }
    if (zmq_send(sock, buf, len, ZMQ_DONTWAIT) < 0)
        rc = send_error(errno);
out:
    free(buf);
    return rc;
}

int refex_link_send_msg(void *sock, const void *rid, size_t rid_len,
                        Refex__V1__Frame__KindCase kind, const ProtobufCMessage *m)
{
    Refex__V1__Frame f;
    int rc = refex_frame_wrap(&f, kind, m);
    return rc != REFEX_OK ? rc : refex_link_send(sock, rid, rid_len, &f);
}

int refex_link_send_error(void *sock, const void *rid, size_t rid_len, int code, const char *detail)
{
    Refex__V1__Error e = REFEX__V1__ERROR__INIT;
    e.code = (uint32_t)code;
    e.detail = (char *)(detail ? detail : refex_strerror(code));
    return refex_link_send_msg(sock, rid, rid_len, REFEX__V1__FRAME__KIND_ERROR, &e.base);
}

int refex_link_send_rejected(void *sock, const void *rid, size_t rid_len, const uint8_t *id,
                             int code, const char *detail)
{
    Refex__V1__Rejected r = REFEX__V1__REJECTED__INIT;
    uint8_t zero[16] = {0};
    r.message_id = (ProtobufCBinaryData){16, (uint8_t *)(id ? id : zero)};
    r.code = (uint32_t)code;
    r.detail = (char *)(detail ? detail : refex_strerror(code));
    return refex_link_send_msg(sock, rid, rid_len, REFEX__V1__FRAME__KIND_REJECTED, &r.base);
}

int refex_link_monitor(void *ctx, void *sock, void **mon_out)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://refex-monitor-%p", sock);
    if (zmq_socket_monitor(sock, ep, ZMQ_EVENT_ALL) != 0)
        return REFEX_E_IO;
    void *mon = zmq_socket(ctx, ZMQ_PAIR);
    if (!mon)
        return REFEX_E_IO;
    if (zmq_connect(mon, ep) != 0) {
        zmq_close(mon);
        return REFEX_E_IO;
    }
    *mon_out = mon;
    return REFEX_OK;
}

int refex_link_monitor_event(void *mon, int *value_out)
{
    return refex_link_monitor_event_ep(mon, value_out, NULL, 0);
}

int refex_link_monitor_event_ep(void *mon, int *value_out, char *ep, size_t eplen)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return -1;
    }
    int ev = -1;
    if (zmq_msg_size(&m) >= 6) {
        const uint8_t *d = zmq_msg_data(&m);
        uint16_t id;
        uint32_t val;
        memcpy(&id, d, 2);
        memcpy(&val, d + 2, 4);
        ev = id;
        if (value_out)
            *value_out = (int)val;
    }
    /* Second part: the endpoint address. */
    if (ep && eplen)
        ep[0] = '\0';
    while (zmq_msg_more(&m)) {
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, mon, 0) < 0)
            break;
        if (ep && eplen)
            snprintf(ep, eplen, "%.*s", (int)zmq_msg_size(&m), (const char *)zmq_msg_data(&m));
    }
    zmq_msg_close(&m);
    return ev;
}
