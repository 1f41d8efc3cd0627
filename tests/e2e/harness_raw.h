/* A fake broker for end-to-end tests that play a broker themselves (an honest one that
 * orders deliveries as it likes, or one gone bad): a raw ROUTER holding the broker's keys
 * from the test tree, which real agents connect to. It welcomes each agent, reads the
 * frames they send, and sends them any frame the test builds. Not the real broker's logic
 * (no store, no routing, no admission): the test decides every frame. Uses cmocka's
 * assertions, so it is for cmocka tests only. */
#ifndef REFEX_HARNESS_RAW_H
#define REFEX_HARNESS_RAW_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

typedef struct {
    char agency[64];
    uint8_t rid[256];
    size_t rid_len;
} h_fb_peer;

typedef struct {
    void *ctx, *sock;
    refex_keys *keys;
    h_fb_peer peers[H_MAX_AGENTS];
    int n_peers;
    uint8_t gen[16]; /* the store generation every WELCOME names */
} h_fake_broker;

/* A ROUTER on a free loopback port with the broker's CurveZMQ key (no ZAP handler: it
 * lets anyone in, and takes HELLO's word for who they are); its endpoint into n. */
void h_fb_open(h_fake_broker *b, h_net *n);
void h_fb_close(h_fake_broker *b);
/* Sends m (a frame of `kind`) to an agency that has said HELLO. */
void h_fb_send(h_fake_broker *b, const char *to, Refex__V1__Frame__KindCase kind,
               const ProtobufCMessage *m);
/* The next frame of `kind` from `from` (HELLOs answered, anything else dropped on the way);
 * fails the test if none comes in time. Free with refex_frame_free. */
Refex__V1__Frame *h_fb_expect(h_fake_broker *b, const char *from, Refex__V1__Frame__KindCase kind);
/* Starts an agent of n configured for the fake broker, welcomes it, waits for READY. */
void h_fb_start_agent(h_fake_broker *b, h_net *n, const char *agency);
/* Answers a SEND of id with STORED (store_seq `seq`), as a broker that kept it. */
void h_fb_stored(h_fake_broker *b, const char *to, const uint8_t id[16], uint64_t seq);
/* Delivers env to an agency (DELIVER). */
void h_fb_deliver(h_fake_broker *b, const char *to, Refex__V1__Envelope *env);

#endif
