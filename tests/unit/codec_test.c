/* Tests for lib/codec.c: every frame kind survives pack/unpack, and oversized, truncated,
 * garbage and structurally incomplete frames are refused with a typed error, never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <sodium.h>

#include "codec.h"
#include "util.h"

static const uint8_t MSG_ID[16] = {0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
                                   0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};

static uint8_t *pack(const Refex__V1__Frame *f, size_t *len)
{
    uint8_t *buf = NULL;
    assert_ok(refex_frame_pack(f, &buf, len));
    assert_non_null(buf);
    assert_int_equal(*len, refex__v1__frame__get_packed_size(f));
    return buf;
}

static Refex__V1__Frame *round_trip(const Refex__V1__Frame *f, const char *kind)
{
    size_t len = 0;
    uint8_t *buf = pack(f, &len);
    Refex__V1__Frame *got = NULL;
    assert_ok(refex_frame_unpack(buf, len, REFEX_DEFAULT_MAX_FRAME, &got));
    assert_non_null(got);
    assert_int_equal(got->version, REFEX_PROTOCOL_VERSION);
    assert_int_equal(got->kind_case, f->kind_case);
    assert_string_equal(refex_frame_kind_name(got), kind);
    free(buf);
    return got;
}

/* Packs f and checks refex_frame_unpack refuses it with want. */
static void expect_unpack_rc(const Refex__V1__Frame *f, int want)
{
    size_t len = 0;
    uint8_t *buf = pack(f, &len);
    static Refex__V1__Frame sentinel;
    Refex__V1__Frame *got = &sentinel; /* unpack must reset it to NULL */
    assert_rc(refex_frame_unpack(buf, len, REFEX_DEFAULT_MAX_FRAME, &got), want);
    assert_null(got);
    free(buf);
}

static void test_hello(void **state)
{
    (void)state;
    Refex__V1__Hello hello = REFEX__V1__HELLO__INIT;
    hello.agency = "midwifery";
    hello.software = "refex-agent 0.1";
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_HELLO;
    f.hello = &hello;
    Refex__V1__Frame *got = round_trip(&f, "hello");
    assert_string_equal(got->hello->agency, "midwifery");
    assert_string_equal(got->hello->software, "refex-agent 0.1");
    refex_frame_free(&got);
    assert_null(got);
}

static void test_welcome(void **state)
{
    (void)state;
    Refex__V1__Welcome w = REFEX__V1__WELCOME__INIT;
    w.agency = "social-care";
    w.broker_time_ms = 1700000000123ULL;
    w.max_frame_bytes = REFEX_DEFAULT_MAX_FRAME;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_WELCOME;
    f.welcome = &w;
    Refex__V1__Frame *got = round_trip(&f, "welcome");
    assert_string_equal(got->welcome->agency, "social-care");
    assert_int_equal(got->welcome->broker_time_ms, 1700000000123ULL);
    assert_int_equal(got->welcome->max_frame_bytes, REFEX_DEFAULT_MAX_FRAME);
    refex_frame_free(&got);
}

/* A stand-in envelope: the codec only checks that one is present with a header. */
static void fake_envelope(Refex__V1__Envelope *e, Refex__V1__KeySlot *slot,
                          Refex__V1__KeySlot **slots)
{
    static uint8_t hdr[] = {0x08, 0x01, 0x00, 0xff};
    static uint8_t sig[64] = {1, 2, 3};
    static uint8_t ct[] = {0x00, 0x00, 0x42};
    static uint8_t epoch_pk[32] = {7};
    static uint8_t wrapped[72] = {9};
    refex__v1__envelope__init(e);
    refex__v1__key_slot__init(slot);
    slot->recipient = "social-care";
    slot->epoch_pk = (ProtobufCBinaryData){sizeof epoch_pk, epoch_pk};
    slot->wrapped_key = (ProtobufCBinaryData){sizeof wrapped, wrapped};
    slots[0] = slot;
    e->header = (ProtobufCBinaryData){sizeof hdr, hdr};
    e->signature = (ProtobufCBinaryData){sizeof sig, sig};
    e->ciphertext = (ProtobufCBinaryData){sizeof ct, ct};
    e->n_key_slots = 1;
    e->key_slots = slots;
}

static void check_envelope(const Refex__V1__Envelope *got, const Refex__V1__Envelope *want)
{
    assert_non_null(got);
    assert_int_equal(got->header.len, want->header.len);
    assert_memory_equal(got->header.data, want->header.data, want->header.len);
    assert_int_equal(got->signature.len, want->signature.len);
    assert_memory_equal(got->signature.data, want->signature.data, want->signature.len);
    assert_int_equal(got->ciphertext.len, want->ciphertext.len);
    assert_memory_equal(got->ciphertext.data, want->ciphertext.data, want->ciphertext.len);
    assert_int_equal(got->n_key_slots, 1);
    assert_string_equal(got->key_slots[0]->recipient, "social-care");
    assert_int_equal(got->key_slots[0]->epoch_pk.len, 32);
    assert_memory_equal(got->key_slots[0]->epoch_pk.data, want->key_slots[0]->epoch_pk.data, 32);
    assert_int_equal(got->key_slots[0]->wrapped_key.len, 72);
    assert_memory_equal(got->key_slots[0]->wrapped_key.data, want->key_slots[0]->wrapped_key.data,
                        72);
}

static void test_send(void **state)
{
    (void)state;
    Refex__V1__Envelope env;
    Refex__V1__KeySlot slot, *slots[1];
    fake_envelope(&env, &slot, slots);
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = &env;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_SEND;
    f.send = &s;
    Refex__V1__Frame *got = round_trip(&f, "send");
    check_envelope(got->send->envelope, &env);
    refex_frame_free(&got);
}

static void test_deliver(void **state)
{
    (void)state;
    Refex__V1__Envelope env;
    Refex__V1__KeySlot slot, *slots[1];
    fake_envelope(&env, &slot, slots);
    Refex__V1__Deliver d = REFEX__V1__DELIVER__INIT;
    d.envelope = &env;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_DELIVER;
    f.deliver = &d;
    Refex__V1__Frame *got = round_trip(&f, "deliver");
    check_envelope(got->deliver->envelope, &env);
    refex_frame_free(&got);
}

static void test_stored(void **state)
{
    (void)state;
    Refex__V1__Stored s = REFEX__V1__STORED__INIT;
    s.message_id = (ProtobufCBinaryData){16, (uint8_t *)MSG_ID};
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_STORED;
    f.stored = &s;
    Refex__V1__Frame *got = round_trip(&f, "stored");
    assert_int_equal(got->stored->message_id.len, 16);
    assert_memory_equal(got->stored->message_id.data, MSG_ID, 16);
    refex_frame_free(&got);
}

static void test_rejected(void **state)
{
    (void)state;
    Refex__V1__Rejected r = REFEX__V1__REJECTED__INIT;
    r.message_id = (ProtobufCBinaryData){16, (uint8_t *)MSG_ID};
    r.code = REFEX_E_BAD_SIGNATURE;
    r.detail = "signature does not verify";
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_REJECTED;
    f.rejected = &r;
    Refex__V1__Frame *got = round_trip(&f, "rejected");
    assert_memory_equal(got->rejected->message_id.data, MSG_ID, 16);
    assert_int_equal(got->rejected->code, REFEX_E_BAD_SIGNATURE);
    assert_string_equal(got->rejected->detail, "signature does not verify");
    refex_frame_free(&got);
}

static void test_ack(void **state)
{
    (void)state;
    Refex__V1__Ack a = REFEX__V1__ACK__INIT;
    a.message_id = (ProtobufCBinaryData){16, (uint8_t *)MSG_ID};
    a.sender = "midwifery";
    a.code = REFEX_E_DECRYPT;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_ACK;
    f.ack = &a;
    Refex__V1__Frame *got = round_trip(&f, "ack");
    assert_memory_equal(got->ack->message_id.data, MSG_ID, 16);
    assert_string_equal(got->ack->sender, "midwifery");
    assert_int_equal(got->ack->code, REFEX_E_DECRYPT);
    refex_frame_free(&got);
}

static void test_error(void **state)
{
    (void)state;
    Refex__V1__Error e = REFEX__V1__ERROR__INIT;
    e.code = REFEX_E_NOT_READY;
    e.detail = "HELLO first";
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_ERROR;
    f.error = &e;
    Refex__V1__Frame *got = round_trip(&f, "error");
    assert_int_equal(got->error->code, REFEX_E_NOT_READY);
    assert_string_equal(got->error->detail, "HELLO first");
    refex_frame_free(&got);
}

static void test_ping_pong(void **state)
{
    (void)state;
    Refex__V1__Ping ping = REFEX__V1__PING__INIT;
    ping.nonce = 0xfedcba9876543210ULL;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_PING;
    f.ping = &ping;
    Refex__V1__Frame *got = round_trip(&f, "ping");
    assert_int_equal(got->ping->nonce, 0xfedcba9876543210ULL);
    refex_frame_free(&got);

    /* A default (zero) nonce is an empty submessage: still a ping. */
    Refex__V1__Pong pong = REFEX__V1__PONG__INIT;
    f.kind_case = REFEX__V1__FRAME__KIND_PONG;
    f.pong = &pong;
    got = round_trip(&f, "pong");
    assert_int_equal(got->pong->nonce, 0);
    refex_frame_free(&got);
    pong.nonce = 7;
    got = round_trip(&f, "pong");
    assert_int_equal(got->pong->nonce, 7);
    refex_frame_free(&got);
}

static void test_kind_names(void **state)
{
    (void)state;
    static const struct {
        Refex__V1__Frame__KindCase kind;
        const char *name;
    } rows[] = {
        {REFEX__V1__FRAME__KIND__NOT_SET, "unknown"}, {REFEX__V1__FRAME__KIND_HELLO, "hello"},
        {REFEX__V1__FRAME__KIND_WELCOME, "welcome"},  {REFEX__V1__FRAME__KIND_SEND, "send"},
        {REFEX__V1__FRAME__KIND_STORED, "stored"},    {REFEX__V1__FRAME__KIND_REJECTED, "rejected"},
        {REFEX__V1__FRAME__KIND_DELIVER, "deliver"},  {REFEX__V1__FRAME__KIND_ACK, "ack"},
        {REFEX__V1__FRAME__KIND_ERROR, "error"},      {REFEX__V1__FRAME__KIND_PING, "ping"},
        {REFEX__V1__FRAME__KIND_PONG, "pong"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
        f.kind_case = rows[i].kind;
        assert_string_equal(refex_frame_kind_name(&f), rows[i].name);
    }
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.kind_case = (Refex__V1__Frame__KindCase)99;
    assert_string_equal(refex_frame_kind_name(&f), "unknown");
}

static void test_too_big(void **state)
{
    (void)state;
    Refex__V1__Ping ping = REFEX__V1__PING__INIT;
    ping.nonce = 42;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_PING;
    f.ping = &ping;
    size_t len = 0;
    uint8_t *buf = pack(&f, &len);
    Refex__V1__Frame *got = NULL;
    assert_rc(refex_frame_unpack(buf, len, len - 1, &got), REFEX_E_TOO_BIG);
    assert_null(got);
    assert_rc(refex_frame_unpack(buf, len, 0, &got), REFEX_E_TOO_BIG);
    assert_null(got);
    /* Exactly at the limit is fine. */
    assert_ok(refex_frame_unpack(buf, len, len, &got));
    refex_frame_free(&got);
    free(buf);

    /* The limit is checked before parsing: an oversized buffer of garbage is TOO_BIG. */
    uint8_t junk[64];
    memset(junk, 0xff, sizeof junk);
    assert_rc(refex_frame_unpack(junk, sizeof junk, 63, &got), REFEX_E_TOO_BIG);
    assert_null(got);
}

static void test_empty_and_garbage(void **state)
{
    (void)state;
    Refex__V1__Frame *got = NULL;
    static const uint8_t one[1] = {0};
    assert_rc(refex_frame_unpack(one, 0, REFEX_DEFAULT_MAX_FRAME, &got), REFEX_E_MALFORMED);
    assert_null(got);

    static const char text[] = "GET / HTTP/1.1\r\nHost: broker\r\n\r\n";
    assert_rc(
        refex_frame_unpack((const uint8_t *)text, sizeof text - 1, REFEX_DEFAULT_MAX_FRAME, &got),
        REFEX_E_MALFORMED);
    assert_null(got);

    uint8_t ff[32];
    memset(ff, 0xff, sizeof ff);
    assert_rc(refex_frame_unpack(ff, sizeof ff, REFEX_DEFAULT_MAX_FRAME, &got), REFEX_E_MALFORMED);
    assert_null(got);

    /* A single zero byte (field number 0) and a lone version field. */
    assert_rc(refex_frame_unpack(one, 1, REFEX_DEFAULT_MAX_FRAME, &got), REFEX_E_MALFORMED);
    static const uint8_t version_only[] = {0x08, 0x02};
    assert_rc(refex_frame_unpack(version_only, sizeof version_only, REFEX_DEFAULT_MAX_FRAME, &got),
              REFEX_E_MALFORMED);
    static const uint8_t old_version_only[] = {0x08, 0x01};
    assert_rc(refex_frame_unpack(old_version_only, sizeof old_version_only, REFEX_DEFAULT_MAX_FRAME,
                                 &got),
              REFEX_E_VERSION);
    assert_null(got);
    /* version 2, then a field this protocol does not know (field 99, varint). */
    static const uint8_t unknown[] = {0x08, 0x02, 0x98, 0x06, 0x05};
    assert_rc(refex_frame_unpack(unknown, sizeof unknown, REFEX_DEFAULT_MAX_FRAME, &got),
              REFEX_E_MALFORMED);
    assert_null(got);
}

static void test_truncated(void **state)
{
    (void)state;
    Refex__V1__Envelope env;
    Refex__V1__KeySlot slot, *slots[1];
    fake_envelope(&env, &slot, slots);
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = &env;
    Refex__V1__Ack a = REFEX__V1__ACK__INIT;
    a.message_id = (ProtobufCBinaryData){16, (uint8_t *)MSG_ID};
    a.sender = "midwifery";
    Refex__V1__Hello hello = REFEX__V1__HELLO__INIT;
    hello.agency = "midwifery";

    Refex__V1__Frame frames[3];
    for (size_t i = 0; i < 3; i++) {
        refex__v1__frame__init(&frames[i]);
        frames[i].version = REFEX_PROTOCOL_VERSION;
    }
    frames[0].kind_case = REFEX__V1__FRAME__KIND_SEND;
    frames[0].send = &s;
    frames[1].kind_case = REFEX__V1__FRAME__KIND_ACK;
    frames[1].ack = &a;
    frames[2].kind_case = REFEX__V1__FRAME__KIND_HELLO;
    frames[2].hello = &hello;

    for (size_t i = 0; i < 3; i++) {
        size_t len = 0;
        uint8_t *buf = pack(&frames[i], &len);
        for (size_t cut = 0; cut < len; cut++) {
            /* Exactly `cut` bytes on the heap, so ASan sees any over-read. */
            uint8_t *t = malloc(cut ? cut : 1);
            assert_non_null(t);
            memcpy(t, buf, cut);
            Refex__V1__Frame *got = NULL;
            int rc = refex_frame_unpack(t, cut, REFEX_DEFAULT_MAX_FRAME, &got);
            if (rc != REFEX_E_MALFORMED)
                fail_msg("%s frame cut to %zu of %zu bytes: got %s",
                         refex_frame_kind_name(&frames[i]), cut, len, refex_errname(rc));
            assert_null(got);
            free(t);
        }
        free(buf);
    }
}

static void test_wrong_version(void **state)
{
    (void)state;
    Refex__V1__Ping ping = REFEX__V1__PING__INIT;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.kind_case = REFEX__V1__FRAME__KIND_PING;
    f.ping = &ping;
    f.version = 1; /* the version before key epochs */
    expect_unpack_rc(&f, REFEX_E_VERSION);
    f.version = 3;
    expect_unpack_rc(&f, REFEX_E_VERSION);
    f.version = 0;
    expect_unpack_rc(&f, REFEX_E_VERSION);
    f.version = UINT32_MAX;
    expect_unpack_rc(&f, REFEX_E_VERSION);
    /* Version first: another version's frame with no command we know is still E_VERSION. */
    f.version = 1;
    f.kind_case = REFEX__V1__FRAME__KIND__NOT_SET;
    expect_unpack_rc(&f, REFEX_E_VERSION);
}

static void test_missing_parts(void **state)
{
    (void)state;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    /* No command at all. */
    expect_unpack_rc(&f, REFEX_E_MALFORMED);

    /* HELLO with an empty agency. */
    Refex__V1__Hello hello = REFEX__V1__HELLO__INIT;
    hello.software = "refex-agent";
    f.kind_case = REFEX__V1__FRAME__KIND_HELLO;
    f.hello = &hello;
    expect_unpack_rc(&f, REFEX_E_MALFORMED);

    /* ACK and STORED with a 15-byte, and a missing, message id. */
    Refex__V1__Ack a = REFEX__V1__ACK__INIT;
    a.message_id = (ProtobufCBinaryData){15, (uint8_t *)MSG_ID};
    a.sender = "midwifery";
    f.kind_case = REFEX__V1__FRAME__KIND_ACK;
    f.ack = &a;
    expect_unpack_rc(&f, REFEX_E_MALFORMED);
    a.message_id = (ProtobufCBinaryData){0, NULL};
    expect_unpack_rc(&f, REFEX_E_MALFORMED);
    Refex__V1__Stored st = REFEX__V1__STORED__INIT;
    st.message_id = (ProtobufCBinaryData){15, (uint8_t *)MSG_ID};
    f.kind_case = REFEX__V1__FRAME__KIND_STORED;
    f.stored = &st;
    expect_unpack_rc(&f, REFEX_E_MALFORMED);

    /* SEND and DELIVER without an envelope, and with an envelope that has no header. */
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    f.kind_case = REFEX__V1__FRAME__KIND_SEND;
    f.send = &s;
    expect_unpack_rc(&f, REFEX_E_MALFORMED);
    Refex__V1__Envelope headerless = REFEX__V1__ENVELOPE__INIT;
    static uint8_t ct[] = {1, 2, 3};
    headerless.ciphertext = (ProtobufCBinaryData){sizeof ct, ct};
    s.envelope = &headerless;
    expect_unpack_rc(&f, REFEX_E_MALFORMED);
    Refex__V1__Deliver d = REFEX__V1__DELIVER__INIT;
    f.kind_case = REFEX__V1__FRAME__KIND_DELIVER;
    f.deliver = &d;
    expect_unpack_rc(&f, REFEX_E_MALFORMED);
    d.envelope = &headerless;
    expect_unpack_rc(&f, REFEX_E_MALFORMED);
}

/* Two commands on the wire: protobuf's oneof rule keeps the last one; the frame still
 * carries exactly one command and nothing leaks (LeakSanitizer would say). */
static void test_two_commands(void **state)
{
    (void)state;
    Refex__V1__Hello hello = REFEX__V1__HELLO__INIT;
    hello.agency = "midwifery";
    Refex__V1__Ping ping = REFEX__V1__PING__INIT;
    ping.nonce = 5;
    Refex__V1__Frame f1 = REFEX__V1__FRAME__INIT, f2 = REFEX__V1__FRAME__INIT;
    f1.version = REFEX_PROTOCOL_VERSION;
    f1.kind_case = REFEX__V1__FRAME__KIND_HELLO;
    f1.hello = &hello;
    f2.kind_case = REFEX__V1__FRAME__KIND_PING;
    f2.ping = &ping;
    size_t l1 = 0, l2 = 0;
    uint8_t *b1 = pack(&f1, &l1), *b2 = pack(&f2, &l2);
    uint8_t *both = malloc(l1 + l2);
    assert_non_null(both);
    memcpy(both, b1, l1);
    memcpy(both + l1, b2, l2);
    Refex__V1__Frame *got = NULL;
    assert_ok(refex_frame_unpack(both, l1 + l2, REFEX_DEFAULT_MAX_FRAME, &got));
    assert_int_equal(got->kind_case, REFEX__V1__FRAME__KIND_PING);
    assert_int_equal(got->ping->nonce, 5);
    refex_frame_free(&got);
    free(both);
    free(b2);
    free(b1);
}

static void check_fuzz_result(int rc, Refex__V1__Frame *got)
{
    if (rc == REFEX_OK) {
        assert_non_null(got);
        assert_int_equal(got->version, REFEX_PROTOCOL_VERSION);
        assert_int_not_equal(got->kind_case, REFEX__V1__FRAME__KIND__NOT_SET);
        assert_string_not_equal(refex_frame_kind_name(got), "unknown");
        refex_frame_free(&got);
    } else {
        assert_null(got);
        if (rc != REFEX_E_MALFORMED && rc != REFEX_E_TOO_BIG && rc != REFEX_E_VERSION)
            fail_msg("unexpected %s", refex_errname(rc));
    }
}

static void test_fuzz(void **state)
{
    (void)state;
    /* Pure random buffers. */
    for (int i = 0; i < 2000; i++) {
        size_t len = randombytes_uniform(257);
        uint8_t *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        randombytes_buf(buf, len);
        /* Half of them start like a real frame (version 1, then a command tag). */
        if (len >= 3 && (i & 1)) {
            buf[0] = 0x08;
            buf[1] = 0x01;
            buf[2] = (uint8_t)(((10 + randombytes_uniform(10)) << 3) | 2);
        }
        Refex__V1__Frame *got = NULL;
        int rc = refex_frame_unpack(buf, len, 200, &got);
        check_fuzz_result(rc, got);
        free(buf);
    }

    /* Valid frames with random bytes overwritten. */
    Refex__V1__Envelope env;
    Refex__V1__KeySlot slot, *slots[1];
    fake_envelope(&env, &slot, slots);
    Refex__V1__Deliver d = REFEX__V1__DELIVER__INIT;
    d.envelope = &env;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_DELIVER;
    f.deliver = &d;
    size_t len = 0;
    uint8_t *orig = pack(&f, &len);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    for (int i = 0; i < 2000; i++) {
        memcpy(buf, orig, len);
        uint32_t flips = 1 + randombytes_uniform(4);
        for (uint32_t k = 0; k < flips; k++)
            buf[randombytes_uniform((uint32_t)len)] = (uint8_t)randombytes_uniform(256);
        Refex__V1__Frame *got = NULL;
        int rc = refex_frame_unpack(buf, len, REFEX_DEFAULT_MAX_FRAME, &got);
        check_fuzz_result(rc, got);
    }
    free(buf);
    free(orig);
}

/* A stand-in signed receipt: the codec only checks that one is present with receipt bytes. */
static void fake_signed_receipt(Refex__V1__SignedReceipt *sr)
{
    static uint8_t receipt[] = {0x08, 0x01, 0x12, 0x02, 0xaa, 0xbb};
    static uint8_t sig[64] = {7, 8, 9};
    refex__v1__signed_receipt__init(sr);
    sr->receipt = (ProtobufCBinaryData){sizeof receipt, receipt};
    sr->signature = (ProtobufCBinaryData){sizeof sig, sig};
}

static void receipt_frame(Refex__V1__Frame *f, Refex__V1__ReceiptDeliver *rd,
                          Refex__V1__SignedReceipt *sr)
{
    fake_signed_receipt(sr);
    refex__v1__receipt_deliver__init(rd);
    rd->receipt = sr;
    refex__v1__frame__init(f);
    f->version = REFEX_PROTOCOL_VERSION;
    f->kind_case = REFEX__V1__FRAME__KIND_RECEIPT;
    f->receipt = rd;
}

static void test_receipt(void **state)
{
    (void)state;
    Refex__V1__SignedReceipt sr;
    Refex__V1__ReceiptDeliver rd;
    Refex__V1__Frame f;
    receipt_frame(&f, &rd, &sr);
    Refex__V1__Frame *got = round_trip(&f, "receipt");
    assert_non_null(got->receipt);
    const Refex__V1__SignedReceipt *g = got->receipt->receipt;
    assert_non_null(g);
    assert_int_equal(g->receipt.len, sr.receipt.len);
    assert_memory_equal(g->receipt.data, sr.receipt.data, sr.receipt.len);
    assert_int_equal(g->signature.len, 64);
    assert_memory_equal(g->signature.data, sr.signature.data, 64);
    refex_frame_free(&got);

    /* The codec does not judge the signature: that is refex_receipt_verify's job. */
    sr.signature = (ProtobufCBinaryData){0, NULL};
    got = round_trip(&f, "receipt");
    assert_int_equal(got->receipt->receipt->signature.len, 0);
    refex_frame_free(&got);
}

static void test_receipt_ack(void **state)
{
    (void)state;
    Refex__V1__ReceiptAck ra = REFEX__V1__RECEIPT_ACK__INIT;
    ra.message_id = (ProtobufCBinaryData){16, (uint8_t *)MSG_ID};
    ra.recipient = "social-care";
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;
    f.kind_case = REFEX__V1__FRAME__KIND_RECEIPT_ACK;
    f.receipt_ack = &ra;
    Refex__V1__Frame *got = round_trip(&f, "receipt_ack");
    assert_non_null(got->receipt_ack);
    assert_int_equal(got->receipt_ack->message_id.len, 16);
    assert_memory_equal(got->receipt_ack->message_id.data, MSG_ID, 16);
    assert_string_equal(got->receipt_ack->recipient, "social-care");
    refex_frame_free(&got);
}

static void test_receipt_kind_names(void **state)
{
    (void)state;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.kind_case = REFEX__V1__FRAME__KIND_RECEIPT;
    assert_string_equal(refex_frame_kind_name(&f), "receipt");
    f.kind_case = REFEX__V1__FRAME__KIND_RECEIPT_ACK;
    assert_string_equal(refex_frame_kind_name(&f), "receipt_ack");
}

static void test_receipt_missing_parts(void **state)
{
    (void)state;
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    f.version = REFEX_PROTOCOL_VERSION;

    /* RECEIPT without a SignedReceipt, with an empty one, and with one whose receipt bytes
     * are empty but whose signature is not. */
    Refex__V1__ReceiptDeliver rd = REFEX__V1__RECEIPT_DELIVER__INIT;
    f.kind_case = REFEX__V1__FRAME__KIND_RECEIPT;
    f.receipt = &rd;
    expect_unpack_rc(&f, REFEX_E_MALFORMED);
    Refex__V1__SignedReceipt empty = REFEX__V1__SIGNED_RECEIPT__INIT;
    rd.receipt = &empty;
    expect_unpack_rc(&f, REFEX_E_MALFORMED);
    Refex__V1__SignedReceipt sig_only;
    fake_signed_receipt(&sig_only);
    sig_only.receipt = (ProtobufCBinaryData){0, NULL};
    rd.receipt = &sig_only;
    expect_unpack_rc(&f, REFEX_E_MALFORMED);

    /* RECEIPT_ACK with a 15-byte, a 17-byte and a missing message id. */
    static const uint8_t id17[17] = {1};
    Refex__V1__ReceiptAck ra = REFEX__V1__RECEIPT_ACK__INIT;
    ra.recipient = "social-care";
    ra.message_id = (ProtobufCBinaryData){15, (uint8_t *)MSG_ID};
    f.kind_case = REFEX__V1__FRAME__KIND_RECEIPT_ACK;
    f.receipt_ack = &ra;
    expect_unpack_rc(&f, REFEX_E_MALFORMED);
    ra.message_id = (ProtobufCBinaryData){17, (uint8_t *)id17};
    expect_unpack_rc(&f, REFEX_E_MALFORMED);
    ra.message_id = (ProtobufCBinaryData){0, NULL};
    expect_unpack_rc(&f, REFEX_E_MALFORMED);

    /* Both with the wrong protocol version. */
    Refex__V1__SignedReceipt sr;
    Refex__V1__Frame rf;
    receipt_frame(&rf, &rd, &sr);
    rf.version = 1;
    expect_unpack_rc(&rf, REFEX_E_VERSION);
    ra.message_id = (ProtobufCBinaryData){16, (uint8_t *)MSG_ID};
    f.version = 0;
    expect_unpack_rc(&f, REFEX_E_VERSION);
}

/* RECEIPT and RECEIPT_ACK frames cut at every length, and a RECEIPT with random damage. */
static void test_receipt_truncated_and_fuzz(void **state)
{
    (void)state;
    Refex__V1__SignedReceipt sr;
    Refex__V1__ReceiptDeliver rd;
    Refex__V1__Frame frames[2];
    receipt_frame(&frames[0], &rd, &sr);
    Refex__V1__ReceiptAck ra = REFEX__V1__RECEIPT_ACK__INIT;
    ra.message_id = (ProtobufCBinaryData){16, (uint8_t *)MSG_ID};
    ra.recipient = "social-care";
    refex__v1__frame__init(&frames[1]);
    frames[1].version = REFEX_PROTOCOL_VERSION;
    frames[1].kind_case = REFEX__V1__FRAME__KIND_RECEIPT_ACK;
    frames[1].receipt_ack = &ra;

    for (size_t i = 0; i < 2; i++) {
        size_t len = 0;
        uint8_t *buf = pack(&frames[i], &len);
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *t = malloc(cut ? cut : 1);
            assert_non_null(t);
            memcpy(t, buf, cut);
            Refex__V1__Frame *got = NULL;
            int rc = refex_frame_unpack(t, cut, REFEX_DEFAULT_MAX_FRAME, &got);
            if (rc != REFEX_E_MALFORMED)
                fail_msg("%s frame cut to %zu of %zu bytes: got %s",
                         refex_frame_kind_name(&frames[i]), cut, len, refex_errname(rc));
            assert_null(got);
            free(t);
        }
        free(buf);
    }

    size_t len = 0;
    uint8_t *orig = pack(&frames[0], &len);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    for (int i = 0; i < 2000; i++) {
        memcpy(buf, orig, len);
        uint32_t flips = 1 + randombytes_uniform(4);
        for (uint32_t k = 0; k < flips; k++)
            buf[randombytes_uniform((uint32_t)len)] = (uint8_t)randombytes_uniform(256);
        Refex__V1__Frame *got = NULL;
        int rc = refex_frame_unpack(buf, len, REFEX_DEFAULT_MAX_FRAME, &got);
        check_fuzz_result(rc, got);
    }
    free(buf);
    free(orig);
}

static void test_free_null(void **state)
{
    (void)state;
    Refex__V1__Frame *f = NULL;
    refex_frame_free(&f);
    refex_frame_free(NULL);
    assert_null(f);
}

/* Grant and subscription frames: each carries non-empty signed bytes, or is malformed. */
static void test_case_frames(void **state)
{
    (void)state;
    uint8_t bytes[] = {0x08, 0x01};
    Refex__V1__SignedGrant sg = REFEX__V1__SIGNED_GRANT__INIT;
    Refex__V1__SignedSubscription ss = REFEX__V1__SIGNED_SUBSCRIPTION__INIT;
    Refex__V1__GrantSubmit gs = REFEX__V1__GRANT_SUBMIT__INIT;
    Refex__V1__GrantNotice gn = REFEX__V1__GRANT_NOTICE__INIT;
    Refex__V1__SubscribeSubmit su = REFEX__V1__SUBSCRIBE_SUBMIT__INIT;
    Refex__V1__SubscriptionNotice sn = REFEX__V1__SUBSCRIPTION_NOTICE__INIT;
    Refex__V1__Frame f[4];
    static const char *const names[] = {"grant", "grant_notice", "subscribe",
                                        "subscription_notice"};
    for (int i = 0; i < 4; i++) {
        refex__v1__frame__init(&f[i]);
        f[i].version = REFEX_PROTOCOL_VERSION;
    }
    f[0].kind_case = REFEX__V1__FRAME__KIND_GRANT;
    f[0].grant = &gs;
    f[1].kind_case = REFEX__V1__FRAME__KIND_GRANT_NOTICE;
    f[1].grant_notice = &gn;
    f[2].kind_case = REFEX__V1__FRAME__KIND_SUBSCRIBE;
    f[2].subscribe = &su;
    f[3].kind_case = REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE;
    f[3].subscription_notice = &sn;
    /* Nothing inside: malformed. */
    for (int i = 0; i < 4; i++)
        expect_unpack_rc(&f[i], REFEX_E_MALFORMED);
    /* A signed object with empty bytes: malformed. */
    gs.grant = gn.grant = &sg;
    su.subscription = sn.subscription = &ss;
    for (int i = 0; i < 4; i++)
        expect_unpack_rc(&f[i], REFEX_E_MALFORMED);
    /* With bytes: the frame round-trips (the signature is checked later, by its reader). */
    sg.grant = (ProtobufCBinaryData){sizeof bytes, bytes};
    ss.subscription = (ProtobufCBinaryData){sizeof bytes, bytes};
    for (int i = 0; i < 4; i++) {
        Refex__V1__Frame *got = round_trip(&f[i], names[i]);
        refex_frame_free(&got);
    }
}

/* ---- refex_pb_set_message, refex_frame_wrap, refex_pb_pack_signed ------------------------ */

/* Every command of the frame's oneof: wrap an empty message of the field's type, check the
 * case and the slot, and that the packed frame unpacks (as plain protobuf, since an empty
 * command may lack parts refex_frame_unpack requires) to the same kind. */
static void test_wrap_every_kind(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *fd = &refex__v1__frame__descriptor;
    size_t n_kinds = 0;
    for (unsigned i = 0; i < fd->n_fields; i++) {
        const ProtobufCFieldDescriptor *field = &fd->fields[i];
        if (!(field->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            continue;
        const ProtobufCMessageDescriptor *md = field->descriptor;
        n_kinds++;
        ProtobufCMessage *m = calloc(1, md->sizeof_message);
        assert_non_null(m);
        protobuf_c_message_init(md, m);
        Refex__V1__Frame f;
        assert_ok(refex_frame_wrap(&f, (Refex__V1__Frame__KindCase)field->id, m));
        assert_int_equal(f.kind_case, field->id);
        assert_ptr_equal(f.hello, (void *)m); /* every member shares the union's slot */
        f.version = REFEX_PROTOCOL_VERSION;
        size_t len = 0;
        uint8_t *buf = pack(&f, &len);
        Refex__V1__Frame *got = refex__v1__frame__unpack(NULL, len, buf);
        assert_non_null(got);
        assert_int_equal(got->kind_case, field->id);
        assert_non_null(got->hello);
        assert_ptr_equal(got->hello->base.descriptor, md);
        refex__v1__frame__free_unpacked(got, NULL);
        free(buf);
        free(m);
    }
    assert_int_equal(n_kinds, 18);
}

/* A wrapped STORED and REJECTED pass the full codec checks with their contents intact. */
static void test_wrap_round_trip(void **state)
{
    (void)state;
    Refex__V1__Stored st = REFEX__V1__STORED__INIT;
    st.message_id = (ProtobufCBinaryData){16, (uint8_t *)MSG_ID};
    Refex__V1__Frame f;
    assert_ok(refex_frame_wrap(&f, REFEX__V1__FRAME__KIND_STORED, &st.base));
    f.version = REFEX_PROTOCOL_VERSION;
    Refex__V1__Frame *got = round_trip(&f, "stored");
    assert_int_equal(got->stored->message_id.len, 16);
    assert_memory_equal(got->stored->message_id.data, MSG_ID, 16);
    refex_frame_free(&got);

    Refex__V1__Rejected r = REFEX__V1__REJECTED__INIT;
    r.message_id = (ProtobufCBinaryData){16, (uint8_t *)MSG_ID};
    r.code = REFEX_E_EXPIRED;
    r.detail = "too late";
    assert_ok(refex_frame_wrap(&f, REFEX__V1__FRAME__KIND_REJECTED, &r.base));
    f.version = REFEX_PROTOCOL_VERSION;
    got = round_trip(&f, "rejected");
    assert_int_equal(got->rejected->code, REFEX_E_EXPIRED);
    assert_string_equal(got->rejected->detail, "too late");
    assert_memory_equal(got->rejected->message_id.data, MSG_ID, 16);
    refex_frame_free(&got);
}

/* A message of the wrong type, no message, no command or a non-message field: refused, and
 * the frame is left initialised with no command. */
static void test_wrap_refuses(void **state)
{
    (void)state;
    Refex__V1__Stored st = REFEX__V1__STORED__INIT;
    Refex__V1__Frame f;
    assert_rc(refex_frame_wrap(&f, REFEX__V1__FRAME__KIND_ACK, &st.base), REFEX_E_INVAL);
    assert_int_equal(f.kind_case, REFEX__V1__FRAME__KIND__NOT_SET);
    assert_null(f.ack);
    assert_rc(refex_frame_wrap(&f, REFEX__V1__FRAME__KIND_STORED, NULL), REFEX_E_INVAL);
    assert_rc(refex_frame_wrap(&f, REFEX__V1__FRAME__KIND__NOT_SET, &st.base), REFEX_E_INVAL);
    assert_rc(refex_frame_wrap(&f, (Refex__V1__Frame__KindCase)1, &st.base), REFEX_E_INVAL);
    assert_rc(refex_frame_wrap(&f, (Refex__V1__Frame__KindCase)999, &st.base), REFEX_E_INVAL);
    assert_int_equal(f.kind_case, REFEX__V1__FRAME__KIND__NOT_SET);
}

/* Outside a oneof: a notice's one field, and nothing else. */
static void test_set_message(void **state)
{
    (void)state;
    Refex__V1__GrantNotice gn = REFEX__V1__GRANT_NOTICE__INIT;
    Refex__V1__SignedGrant sg = REFEX__V1__SIGNED_GRANT__INIT;
    Refex__V1__SignedSubscription ss = REFEX__V1__SIGNED_SUBSCRIPTION__INIT;
    assert_rc(refex_pb_set_message(&gn.base, 1, &ss.base), REFEX_E_INVAL);
    assert_rc(refex_pb_set_message(&gn.base, 2, &sg.base), REFEX_E_INVAL);
    assert_null(gn.grant);
    assert_ok(refex_pb_set_message(&gn.base, 1, &sg.base));
    assert_ptr_equal(gn.grant, &sg);
    /* bytes fields are not messages */
    assert_rc(refex_pb_set_message(&sg.base, 1, &ss.base), REFEX_E_INVAL);
}

static void test_pack_signed(void **state)
{
    (void)state;
    static const char CONTEXT[] = "refex/codec-test/v1";
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(pk, sk);
    Refex__V1__Receipt r = REFEX__V1__RECEIPT__INIT;
    r.version = 1;
    r.message_id = (ProtobufCBinaryData){16, (uint8_t *)MSG_ID};
    r.sender = "midwifery";
    r.recipient = "social-care";
    r.signer = "social-care";
    uint8_t *inner = NULL, *out = NULL;
    size_t inner_len = 0, out_len = 0;
    assert_ok(refex_pb_pack(&r.base, &inner, &inner_len));
    assert_ok(refex_pb_pack_signed(&r.base, &refex__v1__signed_subscription__descriptor, CONTEXT,
                                   sk, &out, &out_len));
    Refex__V1__SignedSubscription *sr = refex__v1__signed_subscription__unpack(NULL, out_len, out);
    assert_non_null(sr);
    assert_int_equal(sr->subscription.len, inner_len);
    assert_memory_equal(sr->subscription.data, inner, inner_len);
    assert_int_equal(sr->signature.len, 64);
    assert_ok(refex_verify_domain(CONTEXT, sr->subscription.data, sr->subscription.len,
                                  sr->signature.data, pk));
    assert_rc(refex_verify_domain("refex/other/v1", sr->subscription.data, sr->subscription.len,
                                  sr->signature.data, pk),
              REFEX_E_BAD_SIGNATURE);
    refex__v1__signed_subscription__free_unpacked(sr, NULL);
    free(out);

    /* A wrapper with a third field (SignedReceipt, which carries a batch proof) is not of
     * this shape. */
    out = NULL;
    assert_rc(refex_pb_pack_signed(&r.base, &refex__v1__signed_receipt__descriptor, CONTEXT, sk,
                                   &out, &out_len),
              REFEX_E_INVAL);
    assert_null(out);

    /* The same wrapper shape under another type (grants), and a wrapper of another shape. */
    assert_ok(refex_pb_pack_signed(&r.base, &refex__v1__signed_grant__descriptor, CONTEXT, sk, &out,
                                   &out_len));
    Refex__V1__SignedGrant *sg = refex__v1__signed_grant__unpack(NULL, out_len, out);
    assert_non_null(sg);
    assert_memory_equal(sg->grant.data, inner, inner_len);
    refex__v1__signed_grant__free_unpacked(sg, NULL);
    free(out);
    out = NULL;
    assert_rc(
        refex_pb_pack_signed(&r.base, &refex__v1__stored__descriptor, CONTEXT, sk, &out, &out_len),
        REFEX_E_INVAL);
    assert_null(out);
    free(inner);
    sodium_memzero(sk, sizeof sk);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello),
        cmocka_unit_test(test_welcome),
        cmocka_unit_test(test_send),
        cmocka_unit_test(test_deliver),
        cmocka_unit_test(test_stored),
        cmocka_unit_test(test_rejected),
        cmocka_unit_test(test_ack),
        cmocka_unit_test(test_error),
        cmocka_unit_test(test_ping_pong),
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_empty_and_garbage),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_wrong_version),
        cmocka_unit_test(test_missing_parts),
        cmocka_unit_test(test_two_commands),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_free_null),
        cmocka_unit_test(test_receipt),
        cmocka_unit_test(test_receipt_ack),
        cmocka_unit_test(test_receipt_kind_names),
        cmocka_unit_test(test_receipt_missing_parts),
        cmocka_unit_test(test_receipt_truncated_and_fuzz),
        cmocka_unit_test(test_case_frames),
        cmocka_unit_test(test_wrap_every_kind),
        cmocka_unit_test(test_wrap_round_trip),
        cmocka_unit_test(test_wrap_refuses),
        cmocka_unit_test(test_set_message),
        cmocka_unit_test(test_pack_signed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
