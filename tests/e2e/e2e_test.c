/* End-to-end tests of the foundation: a real broker and three real agents on loopback.
 * A pre-birth referral travels midwifery -> broker -> social care byte-identical; nobody
 * else gets it; unknown transport keys, forged senders and bad frames are refused with
 * typed errors while the daemons keep running; the body never reaches the broker's disk
 * or logs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <sodium.h>
#include <sqlite3.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "../unit/testing.h"
#include "harness.h"
#include "body.h"
#include "checkpoint.h"
#include "codec.h"
#include "directory.h"
#include "envelope.h"
#include "link.h"
#include "receipt.h"
#include "util.h"

static h_net g_net;
static char g_marker[64]; /* unique text placed in the referral body */
static char g_referral_id[33];

static const char *const AGENCIES[] = {"midwifery", "substance-misuse", "social-care", NULL};
static const char *const LISTED_ONLY[] = {"police", "probation", NULL};

/* Waits until `agency` has message id in its inbox (polls the agent through the CLI). */
static int wait_inbox(const char *agency, const char *id)
{
    char out[65536];
    const char *args[] = {"inbox", "show", id, "--json", NULL};
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (refex_mono_ms() < deadline) {
        if (h_cli_agent(&g_net, agency, out, sizeof out, args) == 0)
            return 0;
        h_pause();
    }
    return -1;
}

static int setup(void **state)
{
    (void)state;
    if (h_net_init(&g_net, AGENCIES, LISTED_ONLY, "max_frame = 256K\nredeliver_seconds = 2") != 0 ||
        h_net_start_broker(&g_net) != 0)
        return -1;
    for (int i = 0; AGENCIES[i]; i++)
        if (h_net_start_agent(&g_net, AGENCIES[i]) != 0)
            return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

static void assert_daemons_alive(void)
{
    assert_true(h_alive(&g_net.broker));
    for (int i = 0; i < g_net.n_agents; i++)
        assert_true(h_alive(&g_net.agents[i]));
}

static json_t *referral_json(const char *summary)
{
    json_error_t jerr;
    json_t *j = json_pack_ex(
        &jerr, 0,
        "{s:s, s:{s:s, s:s, s:s, s:i}, s:[{s:s, s:s, s:s}], s:[s, s], s:{s:s, s:s},"
        " s:s, s:{s:s, s:s}, s:s, s:s, s:s}",
        "kind", "REFERRAL_PRE_BIRTH", "subject", "kind", "SUBJECT_UNBORN", "reference",
        "UB-TEST-0001", "estimated_due_date", "2027-06-03", "gestation_weeks", 12, "parents",
        "reference", "P-0001", "name", "Morgan Tressider", "relationship", "mother", "concerns",
        "CONCERN_PREVIOUS_CHILDREN_REMOVED", "CONCERN_SUBSTANCE_MISUSE", "referrer", "reference",
        "MW-0099", "role", "community midwife", "urgency", "URGENCY_URGENT", "lawful_basis",
        "article6", "ARTICLE6_PUBLIC_TASK", "article9", "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST",
        "consent", "CONSENT_NOT_SOUGHT_SAFEGUARDING", "purpose", "PURPOSE_SAFEGUARDING", "summary",
        summary);
    if (!j)
        fail_msg("json_pack: %s", jerr.text);
    return j;
}

/* ---- the referral ----------------------------------------------------------------- */

static void test_referral_reaches_social_care_byte_identical(void **state)
{
    (void)state;
    char out[65536], path[600], summary[256];
    uint8_t rnd[16];
    randombytes_buf(rnd, sizeof rnd);
    strcpy(g_marker, "MARKER-");
    refex_hex_encode(g_marker + 7, rnd, 16);
    snprintf(summary, sizeof summary, "Booked at 12 weeks; %s; two older children removed.",
             g_marker);
    json_t *body = referral_json(summary);
    h_path(&g_net, path, sizeof path, "referral.json");
    assert_int_equal(json_dump_file(body, path, JSON_INDENT(2)), 0);

    const char *args[] = {"send",        "--to",   "social-care", "--type", "referral", "--case",
                          "C-TEST-0001", "--body", path,          "--wait", "--json",   NULL};
    int rc = h_cli_agent(&g_net, "midwifery", out, sizeof out, args);
    if (rc != 0)
        fail_msg("refex send exited %d: %s", rc, out);
    json_error_t jerr;
    json_t *reply = json_loads(out, 0, &jerr);
    assert_non_null(reply);
    assert_string_equal(json_string_value(json_object_get(reply, "state")), "stored");
    snprintf(g_referral_id, sizeof g_referral_id, "%s",
             json_string_value(json_object_get(reply, "message_id")));
    assert_int_equal(strlen(g_referral_id), 32);
    json_decref(reply);

    assert_int_equal(wait_inbox("social-care", g_referral_id), 0);

    /* Byte-identical: the plaintext the receiver committed equals what the sender sealed. */
    uint8_t *want = NULL;
    size_t want_len = 0;
    char err[256];
    assert_ok(refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, body, &want, &want_len, err,
                                   sizeof err));
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    h_path(&g_net, path, sizeof path, "data/social-care/agent.db");
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT body, sender, type, case_ref FROM inbox"
                                        " WHERE message_id = ?",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, g_referral_id, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal((size_t)sqlite3_column_bytes(st, 0), want_len);
    assert_memory_equal(sqlite3_column_blob(st, 0), want, want_len);
    assert_string_equal((const char *)sqlite3_column_text(st, 1), "midwifery");
    assert_string_equal((const char *)sqlite3_column_text(st, 2), "REFERRAL");
    assert_string_equal((const char *)sqlite3_column_text(st, 3), "C-TEST-0001");
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(want);

    /* And through the CLI, decrypted, field for field. */
    const char *show[] = {"inbox", "show", g_referral_id, "--json", NULL};
    assert_int_equal(h_cli_agent(&g_net, "social-care", out, sizeof out, show), 0);
    json_t *row = json_loads(out, 0, &jerr);
    assert_non_null(row);
    assert_true(json_equal(json_object_get(row, "body"), body));
    json_decref(row);
    json_decref(body);

    /* Both audit logs hold the event with its lawful basis. */
    const char *audit[] = {"audit", "list", "--json", NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, audit), 0);
    assert_non_null(strstr(out, g_referral_id));
    assert_non_null(strstr(out, "\"event\": \"send\""));
    assert_non_null(strstr(out, "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST"));
    assert_null(strstr(out, g_marker));
    assert_int_equal(h_cli_agent(&g_net, "social-care", out, sizeof out, audit), 0);
    assert_non_null(strstr(out, g_referral_id));
    assert_non_null(strstr(out, "\"event\": \"receive\""));
    assert_non_null(strstr(out, "MW-0099"));
    assert_null(strstr(out, "Morgan Tressider")); /* people only as references */
    assert_daemons_alive();
}

static void test_non_recipient_receives_nothing(void **state)
{
    (void)state;
    char out[65536];
    const char *list[] = {"inbox", "list", "--json", NULL};
    assert_int_equal(h_cli_agent(&g_net, "substance-misuse", out, sizeof out, list), 0);
    json_error_t jerr;
    json_t *msgs = json_loads(out, 0, &jerr);
    assert_non_null(msgs);
    assert_int_equal(json_array_size(msgs), 0);
    json_decref(msgs);
    const char *audit[] = {"audit", "list", "--json", NULL};
    assert_int_equal(h_cli_agent(&g_net, "substance-misuse", out, sizeof out, audit), 0);
    assert_null(strstr(out, g_referral_id));
}

/* ---- transport admission ----------------------------------------------------------- */

static void test_unlisted_transport_key_cannot_connect(void **state)
{
    (void)state;
    h_client c;
    refex_keys *intruder = NULL;
    char path[600];
    assert_ok(refex_keys_new("intruder", "police", &intruder));
    assert_int_equal(h_client_open(&c, &g_net, NULL, intruder), 0);
    assert_true(h_client_wait_event(&c, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, H_TIMEOUT_MS));
    h_client_close(&c);
    h_path(&g_net, path, sizeof path, "logs/broker.log");
    assert_true(h_tree_contains(path, "zap: denied transport key", 25));

    /* A real agent with keys the directory does not list refuses to start. */
    char out[2048], conf[600], log[600], exe[1100], dir[600];
    h_path(&g_net, dir, sizeof dir, "keys/intruder");
    const char *kargs[] = {"keys",   "new",   "--agency", "intruder", "--role",
                           "police", "--out", dir,        NULL};
    assert_int_equal(h_cli(&g_net, out, sizeof out, kargs), 0);
    h_path(&g_net, conf, sizeof conf, "conf/intruder.conf");
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "agency = intruder\nbroker = %s\ndata_dir = ../data/intruder\n"
            "directory = ../directory.rdir\ntrust_anchor = ../keys/operator.public\n"
            "keys = ../keys/intruder/intruder.secret\n",
            g_net.endpoint);
    fclose(f);
    h_path(&g_net, log, sizeof log, "logs/intruder.log");
    snprintf(exe, sizeof exe, "%s/refex-agent", g_net.bin);
    char *argv[] = {exe, "-c", conf, NULL};
    h_proc p;
    assert_int_equal(h_spawn(&p, "intruder", argv, log), 0);
    assert_int_equal(h_wait_exit(&p, H_TIMEOUT_MS), 2);
    assert_true(h_tree_contains(log, "is not in the directory", 23));
    assert_daemons_alive();
}

/* ---- raw-client helpers ------------------------------------------------------------ */

static refex_directory *load_directory(void)
{
    char path[600], err[256];
    refex_directory *d = NULL;
    h_path(&g_net, path, sizeof path, "directory.rdir");
    assert_ok(refex_directory_load(path, NULL, &d, err, sizeof err));
    return d;
}

/* Seals a small case update from `sender_keys` claiming `claimed_sender`. */
static Refex__V1__Envelope *seal_with(refex_keys *sender_keys, const char *claimed_sender,
                                      const char *recipient, int wrong_key, uint8_t id[16])
{
    refex_directory *d = load_directory();
    const refex_agency *r = refex_directory_find(d, recipient);
    refex_agency fake;
    if (!r || wrong_key) { /* unknown agency, or a key that is not the recipient's */
        memset(&fake, 0, sizeof fake);
        snprintf(fake.id, sizeof fake.id, "%s", recipient);
        crypto_box_keypair(fake.enc_pk, (uint8_t[32]){0});
        r = &fake;
    }
    const refex_agency *rcpt[] = {r};
    /* An information request: not limited to case members, unlike a case update. */
    json_t *body = h_required("information-request",
                              json_pack("{s:s, s:s, s:s}", "case_ref", "C-TEST-0002", "request_id",
                                        "RQ-RAW", "question", "raw client test"));
    uint8_t *b = NULL, *env = NULL;
    size_t blen = 0, elen = 0;
    char err[256];
    assert_ok(refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__INFORMATION_REQUEST, body, &b, &blen,
                                   err, sizeof err));
    refex_seal_params p = {.sender = claimed_sender,
                           .sign_sk = sender_keys->sk->sign_sk,
                           .recipients = rcpt,
                           .n_recipients = 1,
                           .type = REFEX__V1__MESSAGE_TYPE__INFORMATION_REQUEST,
                           .case_ref = "C-TEST-0002"};
    assert_ok(refex_envelope_seal(&p, b, blen, &env, &elen, id));
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, elen, env);
    assert_non_null(e);
    free(b);
    free(env);
    json_decref(body);
    refex_directory_destroy(&d);
    return e;
}

static void send_envelope(h_client *c, Refex__V1__Envelope *e)
{
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = e;
    f.kind_case = REFEX__V1__FRAME__KIND_SEND;
    f.send = &s;
    assert_int_equal(h_client_send(c, &f), 0);
}

/* Sends e with its header rewritten to envelope version 1 and signed again by c. */
static void send_old_envelope(h_client *c, Refex__V1__Envelope *e)
{
    Refex__V1__EnvelopeHeader *h =
        refex__v1__envelope_header__unpack(NULL, e->header.len, e->header.data);
    assert_non_null(h);
    h->version = 1;
    uint8_t *hdr = NULL, sig[64];
    size_t len = 0;
    assert_ok(refex_pb_pack(&h->base, &hdr, &len));
    /* as a version-1 sender signs: one signature over its header */
    assert_ok(refex_sign_domain("refex/envelope/v1", hdr, len, c->keys->sk->sign_sk, sig));
    Refex__V1__Envelope old = *e;
    old.header = (ProtobufCBinaryData){len, hdr};
    old.signature = (ProtobufCBinaryData){64, sig};
    old.batch = NULL;
    send_envelope(c, &old);
    free(hdr);
    refex__v1__envelope_header__free_unpacked(h, NULL);
}

/* Acknowledges a receipt for a raw client, as an agent would. */
static void ack_receipt(h_client *c, const Refex__V1__Frame *r)
{
    Refex__V1__Receipt *rc = refex__v1__receipt__unpack(NULL, r->receipt->receipt->receipt.len,
                                                        r->receipt->receipt->receipt.data);
    assert_non_null(rc);
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__ReceiptAck ra = REFEX__V1__RECEIPT_ACK__INIT;
    ra.message_id = rc->message_id;
    ra.recipient = rc->recipient;
    f.kind_case = REFEX__V1__FRAME__KIND_RECEIPT_ACK;
    f.receipt_ack = &ra;
    assert_int_equal(h_client_send(c, &f), 0);
    refex__v1__receipt__free_unpacked(rc, NULL);
}

/* Next frame for a raw client, acknowledging receipts of earlier messages on the way
 * unless receipts are what the caller waits for. */
static Refex__V1__Frame *next_frame(h_client *c, int want_receipt)
{
    for (;;) {
        Refex__V1__Frame *r = h_client_recv(c, H_TIMEOUT_MS);
        if (!r || want_receipt || r->kind_case != REFEX__V1__FRAME__KIND_RECEIPT)
            return r;
        ack_receipt(c, r);
        refex_frame_free(&r);
    }
}

/* Expects a REJECTED (for SEND) or ERROR frame carrying `code`. */
static void expect_refusal(h_client *c, int code)
{
    Refex__V1__Frame *r = next_frame(c, 0);
    if (!r)
        fail_msg("no answer from the broker; wanted %s", refex_errname(code));
    int got = r->kind_case == REFEX__V1__FRAME__KIND_REJECTED ? (int)r->rejected->code
              : r->kind_case == REFEX__V1__FRAME__KIND_ERROR  ? (int)r->error->code
                                                              : -1;
    if (got != code)
        fail_msg("got %s frame with %s, wanted %s", refex_frame_kind_name(r), refex_errname(got),
                 refex_errname(code));
    refex_frame_free(&r);
}

static void expect_stored(h_client *c, const uint8_t id[16])
{
    Refex__V1__Frame *r = next_frame(c, 0);
    assert_non_null(r);
    if (r->kind_case != REFEX__V1__FRAME__KIND_STORED)
        fail_msg("wanted STORED, got %s (%s)", refex_frame_kind_name(r),
                 r->kind_case == REFEX__V1__FRAME__KIND_REJECTED
                     ? refex_errname((int)r->rejected->code)
                     : "");
    assert_memory_equal(r->stored->message_id.data, id, 16);
    refex_frame_free(&r);
}

static Refex__V1__Envelope *seal_for(refex_keys *sender_keys, const char *claimed_sender,
                                     const char *recipient, uint8_t id[16])
{
    return seal_with(sender_keys, claimed_sender, recipient, 0, id);
}

/* ---- forged sender ------------------------------------------------------------------ */

static void test_forged_sender_refused(void **state)
{
    (void)state;
    h_client c;
    uint8_t id[16];
    char path[600], err[256];
    assert_int_equal(h_client_open(&c, &g_net, "police", NULL), 0);

    /* HELLO claiming another agency over police's transport key. */
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Hello h = REFEX__V1__HELLO__INIT;
    h.agency = "midwifery";
    f.kind_case = REFEX__V1__FRAME__KIND_HELLO;
    f.hello = &h;
    assert_int_equal(h_client_send(&c, &f), 0);
    expect_refusal(&c, REFEX_E_SENDER_MISMATCH);

    assert_int_equal(h_client_hello(&c, "police"), 0);
    /* An envelope claiming midwifery, signed with police's key. */
    Refex__V1__Envelope *e = seal_for(c.keys, "midwifery", "social-care", id);
    send_envelope(&c, e);
    expect_refusal(&c, REFEX_E_SENDER_MISMATCH);
    refex__v1__envelope__free_unpacked(e, NULL);

    /* Even with midwifery's real signing key: the transport identity is police. */
    refex_keys *mw = NULL;
    h_path(&g_net, path, sizeof path, "keys/midwifery.secret");
    assert_ok(refex_keys_load(path, &mw, err, sizeof err));
    e = seal_for(mw, "midwifery", "social-care", id);
    send_envelope(&c, e);
    expect_refusal(&c, REFEX_E_SENDER_MISMATCH);
    refex__v1__envelope__free_unpacked(e, NULL);
    refex_keys_destroy(&mw);

    h_client_close(&c);
    h_path(&g_net, path, sizeof path, "logs/broker.log");
    assert_true(h_tree_contains(path, "E_SENDER_MISMATCH", 17));
    assert_daemons_alive();
}

/* ---- bad frames --------------------------------------------------------------------- */

static void test_bad_input_gets_typed_errors_and_nothing_is_lost(void **state)
{
    (void)state;
    h_client c;
    uint8_t id[16];
    assert_int_equal(h_client_open(&c, &g_net, "police", NULL), 0);

    /* SEND before HELLO. */
    Refex__V1__Envelope *e = seal_for(c.keys, "police", "social-care", id);
    send_envelope(&c, e);
    expect_refusal(&c, REFEX_E_NOT_READY);
    assert_int_equal(h_client_hello(&c, "police"), 0);

    /* Garbage and truncated protobuf. */
    assert_int_equal(h_client_send_raw(&c, "\xff\xff\xff\xff garbage", 12), 0);
    expect_refusal(&c, REFEX_E_MALFORMED);
    assert_int_equal(h_client_send_raw(&c, "", 0), 0);
    expect_refusal(&c, REFEX_E_MALFORMED);
    {
        Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
        Refex__V1__Send s = REFEX__V1__SEND__INIT;
        s.envelope = e;
        f.version = REFEX_PROTOCOL_VERSION;
        f.kind_case = REFEX__V1__FRAME__KIND_SEND;
        f.send = &s;
        uint8_t *buf = NULL;
        size_t len = 0;
        assert_ok(refex_frame_pack(&f, &buf, &len));
        assert_int_equal(h_client_send_raw(&c, buf, len / 2), 0);
        expect_refusal(&c, REFEX_E_MALFORMED);
        free(buf);
    }
    /* Two parts in one message. */
    assert_true(zmq_send(c.sock, "a", 1, ZMQ_SNDMORE) == 1);
    assert_true(zmq_send(c.sock, "b", 1, 0) == 1);
    expect_refusal(&c, REFEX_E_MALFORMED);

    /* Oversized: the broker's limit in this test is 256 KiB. */
    size_t big = 300 * 1024;
    uint8_t *junk = calloc(1, big);
    assert_non_null(junk);
    assert_int_equal(h_client_send_raw(&c, junk, big), 0);
    expect_refusal(&c, REFEX_E_TOO_BIG);
    free(junk);

    /* Bad signature: the batch root signature, then the proof's tree size, then no proof. */
    e->batch->root_signature.data[5] ^= 0x01;
    send_envelope(&c, e);
    expect_refusal(&c, REFEX_E_BAD_SIGNATURE);
    e->batch->root_signature.data[5] ^= 0x01;
    e->batch->tree_size = 2;
    send_envelope(&c, e);
    expect_refusal(&c, REFEX_E_BAD_SIGNATURE);
    e->batch->tree_size = 1;
    Refex__V1__BatchProof *kept_batch = e->batch;
    e->batch = NULL;
    send_envelope(&c, e);
    expect_refusal(&c, REFEX_E_BAD_SIGNATURE);
    e->batch = kept_batch;

    /* Tampered ciphertext. */
    e->ciphertext.data[0] ^= 0x80;
    send_envelope(&c, e);
    expect_refusal(&c, REFEX_E_TAMPERED);
    e->ciphertext.data[0] ^= 0x80;
    refex__v1__envelope__free_unpacked(e, NULL);

    /* Unknown recipient. */
    e = seal_for(c.keys, "police", "nobody", id);
    send_envelope(&c, e);
    expect_refusal(&c, REFEX_E_UNKNOWN_AGENCY);
    refex__v1__envelope__free_unpacked(e, NULL);

    /* A frame of protocol version 1 (before key epochs), and one of a future version. */
    for (uint32_t v = 1; v <= 3; v += 2) {
        Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
        Refex__V1__Ping ping = REFEX__V1__PING__INIT;
        f.version = v;
        f.kind_case = REFEX__V1__FRAME__KIND_PING;
        f.ping = &ping;
        uint8_t *buf = NULL;
        size_t len = 0;
        assert_ok(refex_frame_pack(&f, &buf, &len));
        assert_int_equal(h_client_send_raw(&c, buf, len), 0);
        expect_refusal(&c, REFEX_E_VERSION);
        free(buf);
    }

    /* A version-1 envelope header, correctly signed, in a current frame: REJECTED. */
    e = seal_for(c.keys, "police", "social-care", id);
    send_old_envelope(&c, e);
    expect_refusal(&c, REFEX_E_VERSION);
    refex__v1__envelope__free_unpacked(e, NULL);

    /* A frame only the broker may send. */
    {
        Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
        Refex__V1__Stored s = REFEX__V1__STORED__INIT;
        s.message_id = (ProtobufCBinaryData){16, id};
        f.kind_case = REFEX__V1__FRAME__KIND_STORED;
        f.stored = &s;
        assert_int_equal(h_client_send(&c, &f), 0);
        expect_refusal(&c, REFEX_E_PROTOCOL);
    }

    /* The daemons are still running, and a good message still goes through. */
    assert_daemons_alive();
    e = seal_for(c.keys, "police", "social-care", id);
    send_envelope(&c, e);
    expect_stored(&c, id);
    /* A retry of the same envelope is harmless: STORED again. */
    send_envelope(&c, e);
    expect_stored(&c, id);
    refex__v1__envelope__free_unpacked(e, NULL);
    char idhex[33];
    refex_hex_encode(idhex, id, 16);
    assert_int_equal(wait_inbox("social-care", idhex), 0);
    h_client_close(&c);

    char path[600];
    h_path(&g_net, path, sizeof path, "logs/broker.log");
    assert_true(h_tree_contains(path, "E_BAD_SIGNATURE", 15));
    assert_true(h_tree_contains(path, "E_TOO_BIG", 9));
    assert_true(h_tree_contains(path, "E_VERSION", 9));
    assert_true(h_tree_contains(path, "unknown recipient nobody", 24));
    assert_daemons_alive();
}

/* ---- sessions cannot be taken over ---------------------------------------------------- */

/* A client may choose its own ZeroMQ routing id. When police disconnects, probation
 * connecting with police's routing id must not receive police's mail. */
static void test_routing_id_reuse_does_not_hijack_a_session(void **state)
{
    (void)state;
    char out[8192], idhex[33];
    h_client police, probation;
    assert_int_equal(h_client_open(&police, &g_net, "police", NULL), 0);
    /* set before connect: h_client_open connected already, so reconnect by hand */
    zmq_close(police.sock);
    police.sock = zmq_socket(police.ctx, ZMQ_DEALER);
    assert_int_equal(zmq_setsockopt(police.sock, ZMQ_ROUTING_ID, "shared-rid", 10), 0);
    refex_pubkeys bpk;
    char path[600], err[256];
    h_path(&g_net, path, sizeof path, "keys/broker.public");
    assert_ok(refex_pubkeys_load(path, &bpk, err, sizeof err));
    assert_ok(refex_link_curve_client(police.sock, police.keys, bpk.transport_pk));
    assert_int_equal(zmq_connect(police.sock, g_net.endpoint), 0);
    assert_int_equal(h_client_hello(&police, "police"), 0);
    h_client_close(&police);

    assert_int_equal(h_client_open(&probation, &g_net, "probation", NULL), 0);
    zmq_close(probation.sock);
    probation.sock = zmq_socket(probation.ctx, ZMQ_DEALER);
    assert_int_equal(zmq_setsockopt(probation.sock, ZMQ_ROUTING_ID, "shared-rid", 10), 0);
    assert_ok(refex_link_curve_client(probation.sock, probation.keys, bpk.transport_pk));
    assert_int_equal(zmq_connect(probation.sock, g_net.endpoint), 0);
    /* Probation is connected once the broker answers it (a PING needs no session). */
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Ping ping = REFEX__V1__PING__INIT;
    ping.nonce = 7;
    f.kind_case = REFEX__V1__FRAME__KIND_PING;
    f.ping = &ping;
    assert_int_equal(h_client_send(&probation, &f), 0);
    Refex__V1__Frame *r = h_client_recv(&probation, H_TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_PONG);
    refex_frame_free(&r);

    /* Midwifery writes to police; STORED means the broker has routed it. */
    const char *args[] = {"send",     "--to",           "police",     "--type",
                          "referral", "--summary",      "for police", "--wait",
                          "--json",   H_REFERRAL_FLAGS, NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, args), 0);
    assert_non_null(strstr(out, "\"stored\""));
    json_error_t jerr;
    json_t *reply = json_loads(out, 0, &jerr);
    snprintf(idhex, sizeof idhex, "%s", json_string_value(json_object_get(reply, "message_id")));
    json_decref(reply);

    /* Anything routed to probation's connection before this PONG would arrive first. */
    ping.nonce = 8;
    assert_int_equal(h_client_send(&probation, &f), 0);
    r = h_client_recv(&probation, H_TIMEOUT_MS);
    assert_non_null(r);
    if (r->kind_case != REFEX__V1__FRAME__KIND_PONG)
        fail_msg("probation received a %s meant for police", refex_frame_kind_name(r));
    refex_frame_free(&r);
    h_client_close(&probation);

    /* Police, back with its own HELLO, gets its backlog. */
    assert_int_equal(h_client_open(&police, &g_net, "police", NULL), 0);
    assert_int_equal(h_client_hello(&police, "police"), 0);
    r = next_frame(&police, 0);
    assert_non_null(r);
    assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_DELIVER);
    char got[33];
    Refex__V1__EnvelopeHeader *h = NULL;
    assert_ok(refex_envelope_parse_header(r->deliver->envelope, &h));
    refex_hex_encode(got, h->message_id.data, 16);
    assert_string_equal(got, idhex);
    refex__v1__envelope_header__free_unpacked(h, NULL);
    refex_frame_free(&r);
    h_client_close(&police);
    assert_daemons_alive();
}

/* ---- the control socket ------------------------------------------------------------- */

/* Sends raw bytes to an agent's control socket and returns the parsed reply. */
static json_t *control_raw(const char *agency, const char *request)
{
    char ep[700];
    h_path(&g_net, ep, sizeof ep, "data/%s/control.sock", agency);
    char url[720];
    snprintf(url, sizeof url, "ipc://%s", ep);
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_REQ);
    int linger = 0, timeout = H_TIMEOUT_MS;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    assert_int_equal(zmq_connect(s, url), 0);
    assert_true(zmq_send(s, request, strlen(request), 0) >= 0);
    char buf[65536];
    int n = zmq_recv(s, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = 0;
    zmq_close(s);
    zmq_ctx_term(ctx);
    json_error_t jerr;
    json_t *j = json_loads(buf, 0, &jerr);
    assert_non_null(j);
    return j;
}

static void expect_control_error(const char *request, const char *errname)
{
    json_t *r = control_raw("midwifery", request);
    assert_false(json_is_true(json_object_get(r, "ok")));
    const char *got = json_string_value(json_object_get(r, "error"));
    if (!got || strcmp(got, errname) != 0)
        fail_msg("%s: got %s, want %s", request, got ? got : "?", errname);
    json_decref(r);
}

static void test_control_socket_bad_requests_get_typed_errors(void **state)
{
    (void)state;
    expect_control_error("not json at all", "E_JSON");
    expect_control_error("[1, 2, 3]", "E_JSON");
    expect_control_error("{\"no_cmd\": 1}", "E_JSON");
    expect_control_error("{\"cmd\": \"format-disk\"}", "E_INVAL");
    expect_control_error("{\"cmd\": \"send\", \"type\": \"referral\", \"to\": \"social-care\","
                         " \"body\": {}}",
                         "E_INVAL");
    expect_control_error("{\"cmd\": \"send\", \"type\": \"referral\", \"to\": [\"social-care\"],"
                         " \"body\": {}, \"ttl_seconds\": 9223372036854775807}",
                         "E_INVAL");
    expect_control_error("{\"cmd\": \"send\", \"type\": \"referral\", \"to\": [\"social-care\"],"
                         " \"body\": {}, \"case\": \"Jane Smith\"}",
                         "E_INVAL");
    expect_control_error("{\"cmd\": \"send\", \"type\": \"referral\", \"to\": [\"social-care\","
                         " \"social-care\"], \"body\": {}}",
                         "E_INVAL");
    expect_control_error("{\"cmd\": \"send\", \"type\": \"referral\", \"to\": [\"social-care\"],"
                         " \"body\": \"text\"}",
                         "E_JSON");
    expect_control_error("{\"cmd\": \"inbox_show\", \"id\": \"00\"}", "E_NOTFOUND");
    json_t *r = control_raw("midwifery", "{\"cmd\": \"status\"}");
    assert_true(json_is_true(json_object_get(r, "online")));
    json_decref(r);
    assert_daemons_alive();

    /* The agent's log names the refusals but never echoes what was typed. */
    char path[600];
    h_path(&g_net, path, sizeof path, "logs/midwifery.log");
    assert_false(h_tree_contains(path, "Jane Smith", 10));
}

/* ---- dead letters ---------------------------------------------------------------------- */

/* A correctly signed message the recipient cannot decrypt is refused for good: the sender
 * gets the recipient's signed refusal and the broker does not redeliver it. */
static void test_undecryptable_message_is_dead_lettered(void **state)
{
    (void)state;
    h_client c;
    uint8_t id[16];
    assert_int_equal(h_client_open(&c, &g_net, "police", NULL), 0);
    assert_int_equal(h_client_hello(&c, "police"), 0);
    /* Freeze the recipient so the broker's redelivery fires: the refusal must then be
     * answered twice but audited once. */
    h_proc *sc = &g_net.agents[h_agent_index(&g_net, "social-care")];
    char log[600];
    h_path(&g_net, log, sizeof log, "logs/broker.log");
    int before = h_tree_contains(log, "no acknowledgement from social-care", 35);
    assert_int_equal(kill(sc->pid, SIGSTOP), 0);
    Refex__V1__Envelope *e = seal_with(c.keys, "police", "social-care", 1, id);
    send_envelope(&c, e);
    refex__v1__envelope__free_unpacked(e, NULL);
    expect_stored(&c, id);
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (!before && !h_tree_contains(log, "no acknowledgement from social-care", 35) &&
           refex_mono_ms() < deadline)
        h_pause();
    assert_int_equal(kill(sc->pid, SIGCONT), 0);

    refex_receipt rc;
    refex_directory *d = load_directory();
    Refex__V1__Frame *r = NULL;
    for (;;) { /* receipts of earlier messages may come first */
        r = next_frame(&c, 1);
        assert_non_null(r);
        assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_RECEIPT);
        assert_ok(refex_receipt_verify(r->receipt->receipt, d, &rc));
        ack_receipt(&c, r);
        if (memcmp(rc.message_id, id, 16) == 0)
            break;
        refex_frame_free(&r);
    }
    assert_memory_equal(rc.message_id, id, 16);
    assert_string_equal(rc.signer, "social-care");
    assert_string_equal(rc.recipient, "social-care");
    assert_int_equal(rc.code, REFEX_E_DECRYPT);
    refex_directory_destroy(&d);
    refex_frame_free(&r);

    char idhex[33], sql[256];
    refex_hex_encode(idhex, id, 16);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit WHERE message_id = '%s' AND event = 'reject' AND "
             "outcome = 'E_DECRYPT'",
             idhex);
    assert_int_equal(h_sql_int(&g_net, "data/social-care/agent.db", sql), 1);
    /* Dead-lettered: nothing left to deliver at the broker. */
    if (h_pg_url())
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM deliveries d JOIN messages m ON m.seq = d.seq WHERE "
                 "encode(m.message_id, 'hex') = '%s'",
                 idhex);
    else
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM deliveries d JOIN messages m ON m.seq = d.seq WHERE "
                 "hex(m.message_id) = upper('%s')",
                 idhex);
    assert_int_equal(h_sql_int(&g_net, "data/broker/queue.db", sql), 0);
    h_client_close(&c);
    assert_daemons_alive();
}

/* ---- checkpoints carried by envelopes ------------------------------------------------- */

/* A sender that shows a recipient two different audit histories of the same size is caught:
 * the recipient keeps every checkpoint its peers attach and raises an alert on a fork. */
static void test_recipient_detects_a_forked_sender(void **state)
{
    (void)state;
    h_client c;
    uint8_t id[16];
    char log[600];
    assert_int_equal(h_client_open(&c, &g_net, "police", NULL), 0);
    assert_int_equal(h_client_hello(&c, "police"), 0);
    for (int round = 0; round < 2; round++) {
        refex_checkpoint cp;
        char *note = NULL;
        memset(&cp, 0, sizeof cp);
        strcpy(cp.origin, "refex/audit/police");
        cp.size = 7;
        memset(cp.root, round ? 0x22 : 0x11, 32);
        assert_ok(refex_checkpoint_sign(&cp, "police", c.keys->sk->sign_sk, &note));
        Refex__V1__Envelope *e = seal_for(c.keys, "police", "social-care", id);
        e->checkpoint = note;
        send_envelope(&c, e);
        e->checkpoint = NULL;
        refex__v1__envelope__free_unpacked(e, NULL);
        free(note);
        expect_stored(&c, id);
        char idhex[33];
        refex_hex_encode(idhex, id, 16);
        assert_int_equal(wait_inbox("social-care", idhex), 0);
    }
    h_client_close(&c);
    assert_int_equal(h_sql_int(&g_net, "data/social-care/agent.db",
                               "SELECT count(*) FROM peer_checkpoints WHERE agency = 'police'"),
                     1);
    h_path(&g_net, log, sizeof log, "logs/social-care.log");
    assert_true(h_tree_contains(log, "ALERT checkpoint: police showed two different", 45));
    assert_daemons_alive();
}

/* ---- redelivery ------------------------------------------------------------------------ */

/* A delivery the recipient never acknowledges is sent again after redeliver_seconds of
 * silence; the recipient's signed ACK then ends it and reaches the sender as a receipt. */
static void test_unacknowledged_delivery_is_redelivered(void **state)
{
    (void)state;
    char out[4096], idhex[33], got[33];
    h_client c;
    assert_int_equal(h_client_open(&c, &g_net, "probation", NULL), 0);
    assert_int_equal(h_client_hello(&c, "probation"), 0);
    const char *args[] = {"send",      "--to",          "probation", "--type", "referral",
                          "--summary", "for probation", "--wait",    "--json", H_REFERRAL_FLAGS,
                          NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, args), 0);
    json_error_t jerr;
    json_t *reply = json_loads(out, 0, &jerr);
    assert_non_null(reply);
    snprintf(idhex, sizeof idhex, "%s", json_string_value(json_object_get(reply, "message_id")));
    json_decref(reply);

    Refex__V1__Envelope *env = NULL;
    for (int round = 0; round < 2; round++) { /* first delivery, then the redelivery */
        Refex__V1__Frame *r = next_frame(&c, 0);
        assert_non_null(r);
        assert_int_equal(r->kind_case, REFEX__V1__FRAME__KIND_DELIVER);
        Refex__V1__EnvelopeHeader *h = NULL;
        assert_ok(refex_envelope_parse_header(r->deliver->envelope, &h));
        refex_hex_encode(got, h->message_id.data, 16);
        assert_string_equal(got, idhex);
        refex__v1__envelope_header__free_unpacked(h, NULL);
        if (round == 1) {
            size_t len = refex__v1__envelope__get_packed_size(r->deliver->envelope);
            uint8_t *buf = malloc(len);
            refex__v1__envelope__pack(r->deliver->envelope, buf);
            env = refex__v1__envelope__unpack(NULL, len, buf);
            free(buf);
        }
        refex_frame_free(&r);
    }

    /* Acknowledge as an agent would: with a receipt signed by probation. */
    refex_receipt rc;
    uint8_t *blob = NULL;
    size_t blen = 0;
    memset(&rc, 0, sizeof rc);
    assert_ok(refex_hex_decode(rc.message_id, 16, idhex));
    strcpy(rc.sender, "midwifery");
    strcpy(rc.recipient, "probation");
    strcpy(rc.signer, "probation");
    rc.time_ms = refex_now_ms();
    assert_ok(refex_envelope_hash(env, rc.envelope_hash));
    rc.has_envelope_hash = 1;
    assert_ok(refex_receipt_sign(&rc, c.keys->sk->sign_sk, &blob, &blen));
    Refex__V1__SignedReceipt *sr = refex__v1__signed_receipt__unpack(NULL, blen, blob);
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    Refex__V1__Ack ack = REFEX__V1__ACK__INIT;
    ack.message_id = (ProtobufCBinaryData){16, rc.message_id};
    ack.sender = "midwifery";
    ack.receipt = sr;
    f.kind_case = REFEX__V1__FRAME__KIND_ACK;
    f.ack = &ack;
    assert_int_equal(h_client_send(&c, &f), 0);
    refex__v1__signed_receipt__free_unpacked(sr, NULL);
    refex__v1__envelope__free_unpacked(env, NULL);
    free(blob);

    /* The sender holds probation's receipt. */
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM receipts WHERE message_id = '%s' AND recipient = 'probation' "
             "AND code = 0",
             idhex);
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    while (h_sql_int(&g_net, "data/midwifery/agent.db", sql) != 1 && refex_mono_ms() < deadline)
        h_pause();
    assert_int_equal(h_sql_int(&g_net, "data/midwifery/agent.db", sql), 1);
    const char *status[] = {"status", idhex, NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, status), 0);
    assert_non_null(strstr(out, "delivered"));
    assert_non_null(strstr(out, "receipt signed by probation"));
    h_client_close(&c);
    assert_daemons_alive();
}

/* ---- CLI-level refusals ------------------------------------------------------------- */

static void test_cli_send_errors_are_typed(void **state)
{
    (void)state;
    char out[8192], path[600];
    const char *unknown[] = {"send",     "--to",      "nobody", "--type",
                             "referral", "--summary", "x",      NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, unknown), 1);
    assert_non_null(strstr(out, "E_UNKNOWN_AGENCY"));

    h_path(&g_net, path, sizeof path, "bad.json");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"kind\": \"REFERRAL_PRE_BIRTH\", \"no_such_field\": 1}", f);
    fclose(f);
    const char *badfield[] = {"send",     "--to",   "social-care", "--type",
                              "referral", "--body", path,          NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, badfield), 1);
    assert_non_null(strstr(out, "E_JSON"));
    assert_non_null(strstr(out, "no_such_field"));

    const char *badtype[] = {"send",   "--to",   "social-care", "--type",
                             "gossip", "--body", path,          NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, badtype), 1);
    assert_non_null(strstr(out, "E_INVAL"));

    const char *noargs[] = {"send", NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, noargs), 2);
    const char *help[] = {"send", "--help", NULL};
    assert_int_equal(h_cli(&g_net, out, sizeof out, help), 0);
    assert_non_null(strstr(out, "--to"));
    assert_daemons_alive();
}

/* ---- what the broker holds ---------------------------------------------------------- */

static void test_body_never_reaches_broker_disk_or_logs(void **state)
{
    (void)state;
    char path[600];
    assert_true(g_marker[0]);
    /* The receiver did see it (so the search below is meaningful) ... */
    h_path(&g_net, path, sizeof path, "data/social-care");
    assert_true(h_tree_contains(path, g_marker, strlen(g_marker)));
    /* ... and the broker's data directory and log never did. */
    h_path(&g_net, path, sizeof path, "data/broker");
    assert_false(h_tree_contains(path, g_marker, strlen(g_marker)));
    h_path(&g_net, path, sizeof path, "logs/broker.log");
    assert_false(h_tree_contains(path, g_marker, strlen(g_marker)));
    assert_false(h_tree_contains(path, "Morgan Tressider", 16));
    /* No agent log carries body contents either. */
    h_path(&g_net, path, sizeof path, "logs");
    assert_false(h_tree_contains(path, g_marker, strlen(g_marker)));
}

/* SIGHUP: the broker admits an agency added to the re-signed directory, and refuses to roll
 * back to an older directory. */
static void test_sighup_reloads_directory(void **state)
{
    (void)state;
    char out[4096], keys[600], file[600], pub[600], anchor[600], old[600], line[128];
    h_path(&g_net, keys, sizeof keys, "keys");
    h_path(&g_net, file, sizeof file, "directory.rdir");
    h_path(&g_net, old, sizeof old, "directory.old");
    h_path(&g_net, pub, sizeof pub, "keys/health-visiting.public");
    h_path(&g_net, anchor, sizeof anchor, "keys/operator.secret");
    uint8_t *bytes = NULL;
    size_t len = 0;
    assert_ok(refex_file_read(file, 1u << 20, &bytes, &len));
    assert_ok(refex_file_write(old, bytes, len, 0644));
    free(bytes);

    const char *kn[] = {"keys",  "new", "--agency", "health-visiting", "--role", "health-visiting",
                        "--out", keys,  NULL};
    assert_int_equal(h_cli(&g_net, out, sizeof out, kn), 0);
    /* Not yet listed: refused at the handshake. */
    h_client c;
    assert_int_equal(h_client_open(&c, &g_net, "health-visiting", NULL), 0);
    assert_true(h_client_wait_event(&c, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, H_TIMEOUT_MS));
    h_client_close(&c);

    const char *add[] = {"directory", "add", "--file", file, "--keys", pub, NULL};
    assert_int_equal(h_cli(&g_net, out, sizeof out, add), 0);
    const char *sign[] = {"directory", "sign", "--file", file, "--anchor", anchor, NULL};
    assert_int_equal(h_cli(&g_net, out, sizeof out, sign), 0);
    assert_int_equal(kill(g_net.broker.pid, SIGHUP), 0);
    assert_int_equal(h_wait_line(&g_net.broker, "RELOAD", H_TIMEOUT_MS, line, sizeof line), 0);
    assert_string_equal(line, "RELOADED 2");

    assert_int_equal(h_client_open(&c, &g_net, "health-visiting", NULL), 0);
    assert_int_equal(h_client_hello(&c, "health-visiting"), 0);
    h_client_close(&c);

    /* The old directory (serial 1) is refused: no rollback. */
    assert_ok(refex_file_read(old, 1u << 20, &bytes, &len));
    assert_ok(refex_file_write(file, bytes, len, 0644));
    free(bytes);
    assert_int_equal(kill(g_net.broker.pid, SIGHUP), 0);
    assert_int_equal(h_wait_line(&g_net.broker, "RELOAD", H_TIMEOUT_MS, line, sizeof line), 0);
    assert_string_equal(line, "RELOAD_FAILED E_DIRECTORY");
    assert_int_equal(h_client_open(&c, &g_net, "health-visiting", NULL), 0);
    assert_int_equal(h_client_hello(&c, "health-visiting"), 0);
    h_client_close(&c);
    assert_daemons_alive();
}

/* SIGTERM stops every daemon promptly with exit status 0. */
static void test_daemons_stop_cleanly_on_sigterm(void **state)
{
    (void)state;
    for (int i = 0; i < g_net.n_agents; i++) {
        assert_int_equal(kill(g_net.agents[i].pid, SIGTERM), 0);
        assert_int_equal(h_wait_exit(&g_net.agents[i], H_TIMEOUT_MS), 0);
    }
    assert_int_equal(kill(g_net.broker.pid, SIGTERM), 0);
    assert_int_equal(h_wait_exit(&g_net.broker, H_TIMEOUT_MS), 0);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_referral_reaches_social_care_byte_identical),
        cmocka_unit_test(test_non_recipient_receives_nothing),
        cmocka_unit_test(test_unlisted_transport_key_cannot_connect),
        cmocka_unit_test(test_forged_sender_refused),
        cmocka_unit_test(test_bad_input_gets_typed_errors_and_nothing_is_lost),
        cmocka_unit_test(test_undecryptable_message_is_dead_lettered),
        cmocka_unit_test(test_unacknowledged_delivery_is_redelivered),
        cmocka_unit_test(test_recipient_detects_a_forked_sender),
        cmocka_unit_test(test_routing_id_reuse_does_not_hijack_a_session),
        cmocka_unit_test(test_control_socket_bad_requests_get_typed_errors),
        cmocka_unit_test(test_cli_send_errors_are_typed),
        cmocka_unit_test(test_body_never_reaches_broker_disk_or_logs),
        cmocka_unit_test(test_sighup_reloads_directory),
        cmocka_unit_test(test_daemons_stop_cleanly_on_sigterm),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
