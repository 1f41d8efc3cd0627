/* Tests for agents/batch.c's batch signatures: the envelopes and receipts one cycle sends
 * share one tree and one Ed25519 signature, in queue order, each item verifiable alone;
 * other frames stay out of the tree; the next cycle signs a tree of its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "agent_testing.h"
#include "batchsig.h"
#include "body.h"
#include "envelope.h"
#include "receipt.h"

static int setup(void **state)
{
    *state = agent_fixture_new(T_LEAD);
    return 0;
}

static int teardown(void **state)
{
    agent_fixture *f = *state;
    agent_fixture_destroy(&f);
    return 0;
}

/* A complete referral from `from` to `to`, signed alone when sign_sk is given, else
 * unsigned (as an outbox holds it). */
static Refex__V1__Envelope *referral(agent_fixture *f, const char *from, const char *to,
                                     const uint8_t *sign_sk)
{
    uint8_t *body = NULL, *env = NULL, id[16];
    size_t body_len = 0, env_len = 0;
    char err[256];
    json_t *j =
        json_pack("{s:s, s:{s:s, s:s}, s:{s:s}, s:{s:s, s:s}, s:s, s:s, s:s}", "summary", "x",
                  "subject", "kind", "SUBJECT_UNBORN", "reference", "UB-1", "referrer", "reference",
                  "MW-1", "lawful_basis", "article6", "ARTICLE6_PUBLIC_TASK", "article9",
                  "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST", "consent", "CONSENT_GIVEN", "purpose",
                  "PURPOSE_SAFEGUARDING", "urgency", "URGENCY_ROUTINE");
    assert_ok(refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, j, &body, &body_len, err,
                                   sizeof err));
    json_decref(j);
    const refex_agency *rcpt[1] = {refex_directory_find(f->directory, to)};
    refex_seal_params p = {.sender = from,
                           .sign_sk = sign_sk,
                           .recipients = rcpt,
                           .n_recipients = 1,
                           .type = REFEX__V1__MESSAGE_TYPE__REFERRAL};
    if (sign_sk)
        assert_ok(refex_envelope_seal(&p, body, body_len, &env, &env_len, id));
    else
        assert_ok(refex_envelope_seal_unsigned(&p, body, body_len, &env, &env_len, id));
    Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, env_len, env);
    assert_non_null(e);
    free(body);
    free(env);
    return e;
}

static int verify_envelope(agent_fixture *f, const Refex__V1__Envelope *e, const char *from)
{
    Refex__V1__EnvelopeHeader *h = NULL;
    assert_ok(refex_envelope_parse_header(e, &h));
    int rc =
        refex_envelope_verify_from(e, h, refex_directory_find(f->directory, from), refex_now_ms());
    refex__v1__envelope_header__free_unpacked(h, NULL);
    return rc;
}

/* Three deliveries (three ACK receipts) and one SEND of our own in one cycle: one tree of
 * four, in queue order, one root signature, each item verifying on its own, and a verifier
 * doing one Ed25519 verification for all four. */
static void test_one_signature_per_cycle(void **state)
{
    agent_fixture *f = *state;
    const uint8_t *mw_sk = f->keys[T_MIDWIFERY]->sk->sign_sk;
    Refex__V1__Envelope *in[3], *mine = referral(f, "social-care", "midwifery", NULL);
    assert_null(mine->batch); /* the outbox's envelope is unsigned */
    assert_rc(verify_envelope(f, mine, "social-care"), REFEX_E_BAD_SIGNATURE);
    for (int i = 0; i < 3; i++)
        in[i] = referral(f, "midwifery", "social-care", mw_sk);
    assert_ok(batch_unit_begin(&f->a));
    assert_ok(batch_unit_end(&f->a, 1));
    for (int i = 0; i < 3; i++)
        inbox_deliver(&f->a, in[i]);
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = mine;
    assert_ok(batch_link_out(&f->a, REFEX__V1__FRAME__KIND_SEND, &s.base));
    assert_int_equal(f->a.outq_n, 4);

    refex_batch_cache_clear();
    uint64_t v0 = refex_batch_ed25519_verifies();
    uint8_t sig0[64];
    for (size_t i = 0; i < 4; i++) {
        Refex__V1__Frame *fr = agent_fixture_frame(f, i);
        const Refex__V1__BatchProof *pb = NULL;
        if (i < 3) {
            assert_int_equal(fr->kind_case, REFEX__V1__FRAME__KIND_ACK);
            pb = fr->ack->receipt->batch;
            assert_int_equal(fr->ack->receipt->signature.len, 0);
            refex_receipt r;
            assert_ok(refex_receipt_verify(fr->ack->receipt, f->directory, &r));
            assert_int_equal(r.code, 0);
        } else {
            assert_int_equal(fr->kind_case, REFEX__V1__FRAME__KIND_SEND);
            pb = fr->send->envelope->batch;
            assert_ok(verify_envelope(f, fr->send->envelope, "social-care"));
            /* Signing changed nothing the envelope hash covers. */
            uint8_t a[32], b[32];
            assert_ok(refex_envelope_hash(mine, a));
            assert_ok(refex_envelope_hash(fr->send->envelope, b));
            assert_memory_equal(a, b, 32);
        }
        assert_non_null(pb);
        assert_int_equal(pb->leaf_index, i);
        assert_int_equal(pb->tree_size, 4);
        assert_int_equal(pb->n_path, 2);
        assert_int_equal(pb->root_signature.len, 64);
        if (i == 0)
            memcpy(sig0, pb->root_signature.data, 64);
        assert_memory_equal(pb->root_signature.data, sig0, 64);
        refex_frame_free(&fr);
    }
    assert_int_equal(refex_batch_ed25519_verifies(), v0 + 1);
    agent_fixture_commit(f);
    for (int i = 0; i < 3; i++)
        refex__v1__envelope__free_unpacked(in[i], NULL);
    refex__v1__envelope__free_unpacked(mine, NULL);
}

/* Frames that carry no envelope or receipt are left as they are and not counted in the
 * tree; a second cycle makes a tree of its own. */
static void test_other_frames_and_next_cycle(void **state)
{
    agent_fixture *f = *state;
    Refex__V1__Envelope *mine = referral(f, "social-care", "police", NULL);
    assert_ok(batch_unit_begin(&f->a));
    assert_ok(batch_unit_end(&f->a, 1));
    Refex__V1__ReceiptAck ra = REFEX__V1__RECEIPT_ACK__INIT;
    uint8_t id[16] = {1};
    ra.message_id = (ProtobufCBinaryData){16, id};
    ra.recipient = "police";
    assert_ok(batch_link_out(&f->a, REFEX__V1__FRAME__KIND_RECEIPT_ACK, &ra.base));
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = mine;
    assert_ok(batch_link_out(&f->a, REFEX__V1__FRAME__KIND_SEND, &s.base));
    Refex__V1__Frame *fr = agent_fixture_frame(f, 1);
    assert_int_equal(fr->send->envelope->batch->tree_size, 1);
    assert_int_equal(fr->send->envelope->batch->leaf_index, 0);
    assert_int_equal(fr->send->envelope->batch->n_path, 0);
    assert_ok(verify_envelope(f, fr->send->envelope, "social-care"));
    refex_frame_free(&fr);
    fr = agent_fixture_frame(f, 0);
    assert_int_equal(fr->kind_case, REFEX__V1__FRAME__KIND_RECEIPT_ACK);
    refex_frame_free(&fr);
    agent_fixture_commit(f);

    /* The next cycle: the same envelope again (a resend) signs in a tree of its own. */
    assert_ok(batch_unit_begin(&f->a));
    assert_ok(batch_unit_end(&f->a, 1));
    assert_ok(batch_link_out(&f->a, REFEX__V1__FRAME__KIND_SEND, &s.base));
    assert_ok(batch_link_out(&f->a, REFEX__V1__FRAME__KIND_SEND, &s.base));
    for (size_t i = 0; i < 2; i++) {
        fr = agent_fixture_frame(f, i);
        assert_int_equal(fr->send->envelope->batch->tree_size, 2);
        assert_int_equal(fr->send->envelope->batch->leaf_index, i);
        assert_ok(verify_envelope(f, fr->send->envelope, "social-care"));
        refex_frame_free(&fr);
    }
    agent_fixture_commit(f);
    refex__v1__envelope__free_unpacked(mine, NULL);
}

/* An outbox envelope that already carries a proof and an old single signature (signed
 * alone by an earlier build) goes out with the cycle's proof only, and verifies. */
static void test_presigned_envelope_is_resigned(void **state)
{
    agent_fixture *f = *state;
    Refex__V1__Envelope *mine = referral(f, "social-care", "police", f->keys[T_LEAD]->sk->sign_sk);
    uint8_t oldsig[64] = {7};
    assert_non_null(mine->batch);
    mine->signature = (ProtobufCBinaryData){64, oldsig};
    assert_ok(batch_unit_begin(&f->a));
    assert_ok(batch_unit_end(&f->a, 1));
    Refex__V1__Send s = REFEX__V1__SEND__INIT;
    s.envelope = mine;
    assert_ok(batch_link_out(&f->a, REFEX__V1__FRAME__KIND_SEND, &s.base));
    assert_ok(batch_link_out(&f->a, REFEX__V1__FRAME__KIND_SEND, &s.base));
    for (size_t i = 0; i < 2; i++) {
        Refex__V1__Frame *fr = agent_fixture_frame(f, i);
        assert_int_equal(fr->send->envelope->signature.len, 0);
        assert_int_equal(fr->send->envelope->batch->tree_size, 2);
        assert_ok(verify_envelope(f, fr->send->envelope, "social-care"));
        refex_frame_free(&fr);
    }
    agent_fixture_commit(f);
    mine->signature = (ProtobufCBinaryData){0, NULL};
    refex__v1__envelope__free_unpacked(mine, NULL);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_signature_per_cycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_frames_and_next_cycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_presigned_envelope_is_resigned, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
