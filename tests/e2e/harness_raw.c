/* The fake broker of harness_raw.h: CurveZMQ ROUTER, HELLO/WELCOME, frames in and out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "harness_raw.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "../unit/testing.h"
#include "codec.h"
#include "link.h"
#include "util.h"

void h_fb_open(h_fake_broker *b, h_net *n)
{
    char path[600], err[256];
    size_t len = sizeof n->endpoint;
    int one = 1;
    memset(b, 0, sizeof *b);
    h_path(n, path, sizeof path, "keys/broker.secret");
    assert_ok(refex_keys_load(path, &b->keys, err, sizeof err));
    randombytes_buf(b->gen, sizeof b->gen);
    b->ctx = zmq_ctx_new();
    b->sock = zmq_socket(b->ctx, ZMQ_ROUTER);
    assert_non_null(b->sock);
    refex_link_tune(b->sock, 64u * 1024 * 1024);
    assert_int_equal(zmq_setsockopt(b->sock, ZMQ_CURVE_SERVER, &one, sizeof one), 0);
    assert_int_equal(zmq_setsockopt(b->sock, ZMQ_CURVE_SECRETKEY, b->keys->sk->transport_sk, 32),
                     0);
    assert_int_equal(zmq_bind(b->sock, "tcp://127.0.0.1:*"), 0);
    assert_int_equal(zmq_getsockopt(b->sock, ZMQ_LAST_ENDPOINT, n->endpoint, &len), 0);
}

void h_fb_close(h_fake_broker *b)
{
    int linger = 0;
    if (b->sock) {
        zmq_setsockopt(b->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(b->sock);
    }
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    refex_keys_destroy(&b->keys);
    memset(b, 0, sizeof *b);
}

static h_fb_peer *peer_of(h_fake_broker *b, const char *agency)
{
    for (int i = 0; i < b->n_peers; i++)
        if (strcmp(b->peers[i].agency, agency) == 0)
            return &b->peers[i];
    return NULL;
}

void h_fb_send(h_fake_broker *b, const char *to, Refex__V1__Frame__KindCase kind,
               const ProtobufCMessage *m)
{
    const h_fb_peer *p = peer_of(b, to);
    if (!p)
        fail_msg("%s has not said HELLO", to);
    assert_ok(refex_link_send_msg(b->sock, p->rid, p->rid_len, kind, m));
}

/* HELLO: the peer is remembered under the agency it names (a reconnection replaces its
 * routing id) and welcomed. */
static void welcome(h_fake_broker *b, const uint8_t *rid, size_t rid_len, const char *agency)
{
    h_fb_peer *p = peer_of(b, agency);
    assert_true(rid_len <= sizeof p->rid);
    if (!p) {
        assert_true(b->n_peers < H_MAX_AGENTS);
        p = &b->peers[b->n_peers++];
        snprintf(p->agency, sizeof p->agency, "%s", agency);
    }
    memcpy(p->rid, rid, rid_len);
    p->rid_len = rid_len;
    Refex__V1__Welcome w = REFEX__V1__WELCOME__INIT;
    w.agency = p->agency;
    w.broker_time_ms = (uint64_t)refex_now_ms();
    w.max_frame_bytes = 1u << 20;
    w.store_generation = (ProtobufCBinaryData){16, b->gen};
    h_fb_send(b, agency, REFEX__V1__FRAME__KIND_WELCOME, &w.base);
}

static const char *sender_of(const h_fake_broker *b, const uint8_t *rid, size_t rid_len)
{
    for (int i = 0; i < b->n_peers; i++)
        if (b->peers[i].rid_len == rid_len && memcmp(b->peers[i].rid, rid, rid_len) == 0)
            return b->peers[i].agency;
    return NULL;
}

Refex__V1__Frame *h_fb_expect(h_fake_broker *b, const char *from, Refex__V1__Frame__KindCase kind)
{
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (refex_mono_ms() < deadline) {
        zmq_pollitem_t it = {b->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0)
            continue;
        uint8_t rid[256];
        zmq_msg_t m;
        int rid_len = zmq_recv(b->sock, rid, sizeof rid, 0);
        assert_true(rid_len > 0 && rid_len <= (int)sizeof rid);
        zmq_msg_init(&m);
        assert_true(zmq_msg_recv(&m, b->sock, 0) >= 0);
        Refex__V1__Frame *f = NULL;
        int rc = refex_frame_unpack(zmq_msg_data(&m), zmq_msg_size(&m), 1u << 30, &f);
        zmq_msg_close(&m);
        assert_ok(rc);
        const char *sender = NULL;
        if (f->kind_case == REFEX__V1__FRAME__KIND_HELLO) {
            welcome(b, rid, (size_t)rid_len, f->hello->agency);
            sender = f->hello->agency;
        } else {
            sender = sender_of(b, rid, (size_t)rid_len);
        }
        if (f->kind_case == kind && sender && strcmp(sender, from) == 0)
            return f;
        refex_frame_free(&f);
    }
    fail_msg("no frame of kind %d from %s", (int)kind, from);
    return NULL;
}

void h_fb_start_agent(h_fake_broker *b, h_net *n, const char *agency)
{
    char path[600], text[1024], log[600], exe[1100], line[256];
    int i = h_agent_index(n, agency);
    assert_true(i >= 0);
    snprintf(text, sizeof text,
             "agency = %s\nbroker = %s\ndata_dir = ../data/%s\n"
             "directory = ../directory.rdir\ntrust_anchor = ../keys/operator.public\n"
             "keys = ../keys/%s.secret\n",
             agency, n->endpoint, agency, agency);
    h_path(n, path, sizeof path, "conf/%s.conf", agency);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
    h_path(n, log, sizeof log, "logs/%s.log", agency);
    snprintf(exe, sizeof exe, "%s/refex-agent", n->bin);
    char *argv[] = {exe, "-c", path, NULL};
    assert_int_equal(h_spawn(&n->agents[i], agency, argv, log), 0);
    Refex__V1__Frame *f = h_fb_expect(b, agency, REFEX__V1__FRAME__KIND_HELLO);
    refex_frame_free(&f);
    assert_int_equal(h_wait_line(&n->agents[i], "READY ", H_TIMEOUT_MS, line, sizeof line), 0);
}

void h_fb_stored(h_fake_broker *b, const char *to, const uint8_t id[16], uint64_t seq)
{
    Refex__V1__Stored st = REFEX__V1__STORED__INIT;
    st.message_id = (ProtobufCBinaryData){16, (uint8_t *)id};
    st.store_seq = seq;
    st.store_generation = (ProtobufCBinaryData){16, b->gen};
    h_fb_send(b, to, REFEX__V1__FRAME__KIND_STORED, &st.base);
}

void h_fb_deliver(h_fake_broker *b, const char *to, Refex__V1__Envelope *env)
{
    Refex__V1__Deliver d = REFEX__V1__DELIVER__INIT;
    d.envelope = env;
    h_fb_send(b, to, REFEX__V1__FRAME__KIND_DELIVER, &d.base);
}
