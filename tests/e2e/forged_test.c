/* A broker that went bad cannot get a genuine message refused for good (issue 11, item 1).
 * The test plays the broker itself: a raw ROUTER holding the broker's keys from the test
 * tree, which the real midwifery and social-care agents connect to. It takes midwifery's
 * genuine referral from SEND, delivers a forgery under the same sender and id (one
 * signature byte flipped) to social care first, then the genuine envelope, then each again:
 * the forgery is refused each time (E_BAD_SIGNATURE) with a receipt naming the forgery's
 * envelope hash, and never answered from, nor written to, the memory of what was handled;
 * the genuine envelope is accepted (code 0, a receipt that verifies with social care's key
 * and names the genuine envelope hash), stored once, and answered the same way again.
 * Handed both receipts, the forgery's first, midwifery ignores the forgery's (it names an
 * envelope midwifery did not send) and records the delivery. Both agents keep running. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "../unit/testing.h"
#include "codec.h"
#include "directory.h"
#include "envelope.h"
#include "harness.h"
#include "link.h"
#include "receipt.h"
#include "util.h"

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "social-care", NULL};

/* ---- the fake broker ------------------------------------------------------------------ */

typedef struct {
    char agency[64];
    uint8_t rid[256];
    size_t rid_len;
} fb_peer;

typedef struct {
    void *ctx, *sock;
    refex_keys *keys;
    fb_peer peers[H_MAX_AGENTS];
    int n_peers;
    uint8_t gen[16];
} fake_broker;

static fake_broker g_fb;

/* A ROUTER on a free loopback port with the broker's CurveZMQ key (no ZAP handler: it
 * lets anyone in, and takes HELLO's word for who they are); its endpoint into g_net. */
static void fb_open(fake_broker *b)
{
    char path[600], err[256];
    size_t len = sizeof g_net.endpoint;
    int one = 1;
    memset(b, 0, sizeof *b);
    h_path(&g_net, path, sizeof path, "keys/broker.secret");
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
    assert_int_equal(zmq_getsockopt(b->sock, ZMQ_LAST_ENDPOINT, g_net.endpoint, &len), 0);
}

static void fb_close(fake_broker *b)
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

static const fb_peer *fb_peer_of(const fake_broker *b, const char *agency)
{
    for (int i = 0; i < b->n_peers; i++)
        if (strcmp(b->peers[i].agency, agency) == 0)
            return &b->peers[i];
    fail_msg("%s has not said HELLO", agency);
    return NULL;
}

static void fb_send(fake_broker *b, const char *to, Refex__V1__Frame__KindCase kind,
                    const ProtobufCMessage *m)
{
    const fb_peer *p = fb_peer_of(b, to);
    assert_ok(refex_link_send_msg(b->sock, p->rid, p->rid_len, kind, m));
}

/* HELLO: the peer is remembered under the agency it names and welcomed. */
static void fb_welcome(fake_broker *b, const uint8_t *rid, size_t rid_len, const char *agency)
{
    assert_true(b->n_peers < H_MAX_AGENTS && rid_len <= sizeof b->peers[0].rid);
    fb_peer *p = &b->peers[b->n_peers++];
    snprintf(p->agency, sizeof p->agency, "%s", agency);
    memcpy(p->rid, rid, rid_len);
    p->rid_len = rid_len;
    Refex__V1__Welcome w = REFEX__V1__WELCOME__INIT;
    w.agency = p->agency;
    w.broker_time_ms = (uint64_t)refex_now_ms();
    w.max_frame_bytes = 1u << 20;
    w.store_generation = (ProtobufCBinaryData){16, b->gen};
    fb_send(b, agency, REFEX__V1__FRAME__KIND_WELCOME, &w.base);
}

/* The next frame of `kind` from `from` (HELLOs answered, anything else dropped on the way);
 * fails the test if none comes in time. Free with refex_frame_free. */
static Refex__V1__Frame *fb_expect(fake_broker *b, const char *from,
                                   Refex__V1__Frame__KindCase kind)
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
            fb_welcome(b, rid, (size_t)rid_len, f->hello->agency);
            sender = f->hello->agency;
        } else {
            for (int i = 0; i < b->n_peers; i++)
                if (b->peers[i].rid_len == (size_t)rid_len &&
                    memcmp(b->peers[i].rid, rid, (size_t)rid_len) == 0)
                    sender = b->peers[i].agency;
        }
        if (f->kind_case == kind && sender && strcmp(sender, from) == 0)
            return f;
        refex_frame_free(&f);
    }
    fail_msg("no frame of kind %d from %s", (int)kind, from);
    return NULL;
}

/* Starts an agent configured for the fake broker, welcomes it, and waits for READY. */
static void start_agent(const char *agency)
{
    char path[600], text[1024], log[600], exe[1100], line[256];
    int i = h_agent_index(&g_net, agency);
    assert_true(i >= 0);
    snprintf(text, sizeof text,
             "agency = %s\nbroker = %s\ndata_dir = ../data/%s\n"
             "directory = ../directory.rdir\ntrust_anchor = ../keys/operator.public\n"
             "keys = ../keys/%s.secret\n",
             agency, g_net.endpoint, agency, agency);
    h_path(&g_net, path, sizeof path, "conf/%s.conf", agency);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
    h_path(&g_net, log, sizeof log, "logs/%s.log", agency);
    snprintf(exe, sizeof exe, "%s/refex-agent", g_net.bin);
    char *argv[] = {exe, "-c", path, NULL};
    assert_int_equal(h_spawn(&g_net.agents[i], agency, argv, log), 0);
    Refex__V1__Frame *f = fb_expect(&g_fb, agency, REFEX__V1__FRAME__KIND_HELLO);
    refex_frame_free(&f);
    assert_int_equal(h_wait_line(&g_net.agents[i], "READY ", H_TIMEOUT_MS, line, sizeof line), 0);
}

/* ---- the test ------------------------------------------------------------------------- */

static refex_directory *g_dir;

static int setup(void **state)
{
    (void)state;
    return h_net_init(&g_net, AGENCIES, NULL, NULL);
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    fb_close(&g_fb);
    refex_directory_destroy(&g_dir);
    return 0;
}

static void load_directory(void)
{
    char path[600], err[256];
    refex_pubkeys anchor;
    h_path(&g_net, path, sizeof path, "keys/operator.public");
    assert_ok(refex_pubkeys_load(path, &anchor, err, sizeof err));
    h_path(&g_net, path, sizeof path, "directory.rdir");
    assert_ok(refex_directory_load(path, anchor.sign_pk, &g_dir, err, sizeof err));
}

/* Delivers env to social care; checks its ACK (code, and a receipt by social care for
 * this id naming hash) and returns the receipt (the ACK's, detached). */
static Refex__V1__SignedReceipt *deliver(Refex__V1__Envelope *env, const uint8_t id[16], int code,
                                         const uint8_t hash[32])
{
    Refex__V1__Deliver d = REFEX__V1__DELIVER__INIT;
    refex_receipt r;
    d.envelope = env;
    fb_send(&g_fb, "social-care", REFEX__V1__FRAME__KIND_DELIVER, &d.base);
    Refex__V1__Frame *f = fb_expect(&g_fb, "social-care", REFEX__V1__FRAME__KIND_ACK);
    assert_int_equal(f->ack->code, (uint32_t)code);
    assert_string_equal(f->ack->sender, "midwifery");
    assert_int_equal(f->ack->message_id.len, 16);
    assert_memory_equal(f->ack->message_id.data, id, 16);
    assert_non_null(f->ack->receipt);
    assert_ok(refex_receipt_verify(f->ack->receipt, g_dir, &r));
    assert_string_equal(r.signer, "social-care");
    assert_string_equal(r.recipient, "social-care");
    assert_string_equal(r.sender, "midwifery");
    assert_int_equal(r.code, (uint32_t)code);
    assert_memory_equal(r.message_id, id, 16);
    assert_true(r.has_envelope_hash);
    assert_memory_equal(r.envelope_hash, hash, 32);
    Refex__V1__SignedReceipt *sr = f->ack->receipt;
    f->ack->receipt = NULL;
    refex_frame_free(&f);
    return sr;
}

/* A single-value query on an agency's agent.db. */
static long long agent_sql(const char *agency, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static long long agent_sql(const char *agency, const char *fmt, ...)
{
    char sql[512], db[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    snprintf(db, sizeof db, "data/%s/agent.db", agency);
    return h_sql_int(&g_net, db, sql);
}

#define INBOX_ONE "SELECT count(*) FROM inbox WHERE sender = 'midwifery' AND message_id = '%s'"

static void hand_receipt(Refex__V1__SignedReceipt *sr)
{
    Refex__V1__ReceiptDeliver rd = REFEX__V1__RECEIPT_DELIVER__INIT;
    rd.receipt = sr;
    fb_send(&g_fb, "midwifery", REFEX__V1__FRAME__KIND_RECEIPT, &rd.base);
}

static void test_forgery_first_then_genuine(void **state)
{
    (void)state;
    char idhex[33], path[600];
    uint8_t id[16], good_hash[32], bad_hash[32];
    fb_open(&g_fb);
    load_directory();
    start_agent("midwifery");
    start_agent("social-care");
    assert_int_equal(h_send_json(&g_net, "midwifery", "social-care", "referral",
                                 h_required("referral", json_object()), idhex),
                     0);
    assert_ok(refex_hex_decode(id, 16, idhex));
    Refex__V1__Frame *sf = fb_expect(&g_fb, "midwifery", REFEX__V1__FRAME__KIND_SEND);
    Refex__V1__Envelope *genuine = sf->send->envelope;
    Refex__V1__Stored st = REFEX__V1__STORED__INIT;
    st.message_id = (ProtobufCBinaryData){16, id};
    st.store_seq = 1;
    st.store_generation = (ProtobufCBinaryData){16, g_fb.gen};
    fb_send(&g_fb, "midwifery", REFEX__V1__FRAME__KIND_STORED, &st.base);

    /* The forgery: the genuine envelope with its signature's first byte flipped. */
    uint8_t *packed = NULL;
    size_t packed_len = 0;
    assert_ok(refex_pb_pack(&genuine->base, &packed, &packed_len));
    Refex__V1__Envelope *forged = refex__v1__envelope__unpack(NULL, packed_len, packed);
    free(packed);
    assert_non_null(forged);
    assert_int_equal(forged->signature.len, 64);
    forged->signature.data[0] ^= 0x01;
    assert_ok(refex_envelope_hash(genuine, good_hash));
    assert_ok(refex_envelope_hash(forged, bad_hash));

    Refex__V1__SignedReceipt *bad = deliver(forged, id, REFEX_E_BAD_SIGNATURE, bad_hash);
    assert_int_equal(agent_sql("social-care", "SELECT count(*) FROM refused"), 0);
    Refex__V1__SignedReceipt *good = deliver(genuine, id, REFEX_OK, good_hash);
    assert_int_equal(agent_sql("social-care", INBOX_ONE, idhex), 1);
    /* Each again: the forgery is still refused, not answered with the genuine receipt
     * from memory; the genuine envelope is answered from memory, the same way. */
    Refex__V1__SignedReceipt *again = deliver(forged, id, REFEX_E_BAD_SIGNATURE, bad_hash);
    refex__v1__signed_receipt__free_unpacked(again, NULL);
    again = deliver(genuine, id, REFEX_OK, good_hash);
    refex__v1__signed_receipt__free_unpacked(again, NULL);
    assert_int_equal(agent_sql("social-care", INBOX_ONE, idhex), 1);
    assert_int_equal(agent_sql("social-care", "SELECT count(*) FROM inbox"), 1);
    assert_int_equal(agent_sql("social-care", "SELECT count(*) FROM refused"), 0);

    /* Midwifery is handed the forgery's refusal first, then the genuine receipt: the only
     * RECEIPT_ACK is for the genuine one, and the receipt it holds says delivered. */
    hand_receipt(bad);
    hand_receipt(good);
    Refex__V1__Frame *ra = fb_expect(&g_fb, "midwifery", REFEX__V1__FRAME__KIND_RECEIPT_ACK);
    assert_memory_equal(ra->receipt_ack->message_id.data, id, 16);
    assert_string_equal(ra->receipt_ack->recipient, "social-care");
    refex_frame_free(&ra);
    assert_int_equal(agent_sql("midwifery",
                               "SELECT code FROM receipts WHERE message_id = '%s'"
                               " AND recipient = 'social-care'",
                               idhex),
                     0);
    assert_int_equal(agent_sql("midwifery", "SELECT count(*) FROM receipts"), 1);
    h_path(&g_net, path, sizeof path, "logs/midwifery.log");
    const char *warned = "names an envelope we did not send; ignored";
    assert_true(h_tree_contains(path, warned, strlen(warned)));
    h_path(&g_net, path, sizeof path, "logs/social-care.log");
    const char *refused = "refused: E_BAD_SIGNATURE";
    assert_true(h_tree_contains(path, refused, strlen(refused)));

    for (int i = 0; i < g_net.n_agents; i++)
        assert_true(h_alive(&g_net.agents[i]));
    refex__v1__signed_receipt__free_unpacked(bad, NULL);
    refex__v1__signed_receipt__free_unpacked(good, NULL);
    refex__v1__envelope__free_unpacked(forged, NULL);
    refex_frame_free(&sf);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_forgery_first_then_genuine, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
