/* Bulk submit end to end, with a real broker and agents: refex_client_send_batch hands
 * several messages to midwifery's agent in one control request, each one checked, sealed
 * and committed as a send of its own (a refused one takes no other with it, a repeated
 * local id is answered as a repeat), and social care receives exactly the accepted ones; a
 * body given as protobuf bytes travels as base64 ("body_pb") and arrives intact; malformed
 * batches and bodies get typed errors and the agent keeps running. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/testing.h"
#include "body.h"
#include "codec.h"
#include "harness.h"
#include "refex/client.h"
#include "util.h"

static h_net g_net;
static const char *const AGENCIES[] = {"midwifery", "social-care", NULL};

#define BODY_FMT                                                                                   \
    "{\"kind\": \"REFERRAL_PRE_BIRTH\", \"summary\": \"%s\","                                      \
    " \"subject\": {\"kind\": \"SUBJECT_UNBORN\", \"reference\": \"UB-BULK-1\"},"                  \
    " \"referrer\": {\"reference\": \"MW-BULK-1\", \"role\": \"community midwife\"},"              \
    " \"purpose\": \"PURPOSE_SAFEGUARDING\", \"urgency\": \"URGENCY_ROUTINE\","                    \
    " \"consent\": \"CONSENT_NOT_SOUGHT_SAFEGUARDING\","                                           \
    " \"lawful_basis\": {\"article6\": \"ARTICLE6_PUBLIC_TASK\","                                  \
    " \"article9\": \"ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST\"}}"

static const char *const TO[] = {"social-care"};

static int setup(void **state)
{
    (void)state;
    return h_net_up(&g_net, AGENCIES, NULL, NULL);
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

/* One control request to an agent (the request is ours to free); its reply or NULL. */
static json_t *ctl(const char *agency, json_t *req)
{
    json_t *r = h_control(&g_net, agency, req);
    json_decref(req);
    return r;
}

static long long inbox_count(void)
{
    return h_sql_int(&g_net, "data/social-care/agent.db", "SELECT count(*) FROM inbox");
}

static refex_client *open_midwifery(void)
{
    char conf[600];
    refex_client *c = NULL;
    h_path(&g_net, conf, sizeof conf, "conf/midwifery.conf");
    assert_ok(refex_client_open(conf, &c));
    return c;
}

/* The referral of BODY_FMT with this summary as a serialized Body; free() it. */
static uint8_t *referral_pb(const char *summary, size_t *len)
{
    char text[2048];
    uint8_t *pb = NULL;
    json_t *j;
    snprintf(text, sizeof text, BODY_FMT, summary);
    assert_non_null(j = json_loads(text, 0, NULL));
    char detail[256];
    assert_ok(refex_body_pack_json(REFEX__V1__MESSAGE_TYPE__REFERRAL, j, &pb, len, detail,
                                   sizeof detail));
    json_decref(j);
    return pb;
}

/* Five messages in one batch: JSON, protobuf, a repeat of the first's local id, one missing
 * a required field, and a last good one. Exactly the three new ones are delivered. */
static void test_batch_is_many_sends(void **state)
{
    (void)state;
    char good[2048], last[2048], ids[5][33];
    int codes[5];
    size_t pb_len = 0;
    uint8_t *pb = referral_pb("Synthetic: batch, protobuf body", &pb_len);
    snprintf(good, sizeof good, BODY_FMT, "Synthetic: batch, JSON body");
    snprintf(last, sizeof last, BODY_FMT, "Synthetic: batch, last");
    refex_client_message m[5] = {
        {.type = "referral", .to = TO, .n_to = 1, .body_json = good, .local_id = "BULK-1"},
        {.type = "referral", .to = TO, .n_to = 1, .body_pb = pb, .body_pb_len = pb_len},
        {.type = "referral", .to = TO, .n_to = 1, .body_json = good, .local_id = "BULK-1"},
        {.type = "referral", .to = TO, .n_to = 1, .body_json = "{\"summary\": \"no fields\"}"},
        {.type = "referral", .to = TO, .n_to = 1, .body_json = last},
    };
    long long before = inbox_count();
    refex_client *c = open_midwifery();
    char *reply = NULL;
    if (refex_client_send_batch(c, m, 5, ids, codes, &reply) != REFEX_OK)
        fail_msg("send_batch: %s", refex_client_error(c));
    assert_int_equal(codes[0], REFEX_OK);
    assert_int_equal(codes[1], REFEX_OK);
    assert_int_equal(codes[2], REFEX_OK);
    assert_int_equal(codes[3], REFEX_E_INVAL);
    assert_int_equal(codes[4], REFEX_OK);
    assert_string_equal(ids[2], ids[0]); /* the repeat names the first message */
    assert_string_equal(ids[3], "");
    assert_int_equal(strlen(ids[1]), 32);
    json_t *r = json_loads(reply, 0, NULL);
    json_t *res = json_object_get(r, "results");
    assert_true(json_is_true(json_object_get(json_array_get(res, 2), "repeat")));
    assert_non_null(json_object_get(json_array_get(res, 3), "detail"));
    json_decref(r);
    refex_client_free(reply);
    refex_client_close(&c);

    /* Messages of one sender arrive in order: once the last is in, all are. */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM inbox WHERE message_id = '%s'", ids[4]);
    assert_int_equal(h_sql_wait(&g_net, "data/social-care/agent.db", sql, 1, H_TIMEOUT_MS), 1);
    assert_int_equal(inbox_count(), before + 3);

    /* The protobuf body arrived intact: social care's decrypted view has its summary. */
    json_t *show = ctl("social-care", json_pack("{s:s, s:s}", "cmd", "inbox_show", "id", ids[1]));
    assert_non_null(show);
    char *text = json_dumps(show, JSON_COMPACT);
    assert_non_null(strstr(text, "Synthetic: batch, protobuf body"));
    free(text);
    json_decref(show);
    free(pb);
}

static void expect_error(json_t *reply, int code, const char *field)
{
    assert_non_null(reply);
    assert_false(json_is_true(json_object_get(reply, "ok")));
    assert_int_equal(json_integer_value(json_object_get(reply, "code")), code);
    if (field)
        assert_string_equal(json_string_value(json_object_get(reply, "field")), field);
}

/* Whole batches the agent refuses, and bad entries inside an accepted batch. */
static void test_bad_batches_are_refused(void **state)
{
    (void)state;
    json_t *r = ctl("midwifery", json_pack("{s:s}", "cmd", "send_batch"));
    expect_error(r, REFEX_E_INVAL, "messages");
    json_decref(r);
    r = ctl("midwifery", json_pack("{s:s, s:[]}", "cmd", "send_batch", "messages"));
    expect_error(r, REFEX_E_INVAL, "messages");
    json_decref(r);
    json_t *many = json_array();
    for (int i = 0; i < 1025; i++)
        json_array_append_new(many, json_object());
    r = ctl("midwifery", json_pack("{s:s, s:o}", "cmd", "send_batch", "messages", many));
    expect_error(r, REFEX_E_INVAL, "messages");
    json_decref(r);

    /* Accepted as a batch; each bad entry gets its own typed error, in its place. */
    r = ctl("midwifery", json_pack("{s:s, s:[i, {s:s, s:[s], s:b, s:{}}, {s:s, s:[s], s:s}]}",
                                   "cmd", "send_batch", "messages", 7, "type", "referral", "to",
                                   "social-care", "wait", 1, "body", "type", "referral", "to",
                                   "social-care", "body_pb", "not base64!"));
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_t *res = json_object_get(r, "results");
    assert_int_equal(json_array_size(res), 3);
    expect_error(json_array_get(res, 0), REFEX_E_INVAL, NULL);
    expect_error(json_array_get(res, 1), REFEX_E_INVAL, "wait");
    expect_error(json_array_get(res, 2), REFEX_E_INVAL, "body_pb");
    json_decref(r);

    /* A body given twice, and a protobuf body that is not a referral. */
    r = ctl("midwifery", json_pack("{s:s, s:s, s:[s], s:{}, s:s}", "cmd", "send", "type",
                                   "referral", "to", "social-care", "body", "body_pb", "AAAA"));
    expect_error(r, REFEX_E_INVAL, "body_pb");
    json_decref(r);
    r = ctl("midwifery", json_pack("{s:s, s:s, s:[s], s:s}", "cmd", "send", "type", "referral",
                                   "to", "social-care", "body_pb", "/////w=="));
    assert_non_null(r);
    assert_false(json_is_true(json_object_get(r, "ok")));
    json_decref(r);

    /* The client refuses what it can check before sending anything. */
    refex_client *c = open_midwifery();
    refex_client_message w = {
        .type = "referral", .to = TO, .n_to = 1, .body_json = "{}", .wait = 1};
    assert_rc(refex_client_send_batch(c, &w, 1, NULL, NULL, NULL), REFEX_E_INVAL);
    assert_rc(refex_client_send_batch(c, &w, 0, NULL, NULL, NULL), REFEX_E_INVAL);
    refex_client_close(&c);

    /* Still running, still answering. */
    r = ctl("midwifery", json_pack("{s:s}", "cmd", "status"));
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
}

/* A local id with a protobuf body: the same bytes, or the same body in JSON form, is a
 * repeat; another body under that local id is E_DUPLICATE. */
static void test_protobuf_body_submission(void **state)
{
    (void)state;
    char json_form[2048], first[33], again[33];
    size_t pb_len = 0, other_len = 0;
    uint8_t *pb = referral_pb("Synthetic: protobuf submission", &pb_len);
    uint8_t *other = referral_pb("Synthetic: another body", &other_len);
    snprintf(json_form, sizeof json_form, BODY_FMT, "Synthetic: protobuf submission");
    refex_client_message m = {.type = "referral",
                              .to = TO,
                              .n_to = 1,
                              .body_pb = pb,
                              .body_pb_len = pb_len,
                              .local_id = "BULK-PB-1"};
    refex_client *c = open_midwifery();
    assert_ok(refex_client_send(c, &m, first, NULL));
    char *reply = NULL;
    assert_ok(refex_client_send(c, &m, again, &reply));
    assert_string_equal(again, first);
    assert_non_null(strstr(reply, "\"repeat\":true"));
    refex_client_free(reply);
    m.body_pb = NULL;
    m.body_json = json_form;
    assert_ok(refex_client_send(c, &m, again, NULL));
    assert_string_equal(again, first);
    m.body_json = NULL;
    m.body_pb = other;
    m.body_pb_len = other_len;
    assert_rc(refex_client_send(c, &m, again, NULL), REFEX_E_DUPLICATE);
    refex_client_close(&c);
    /* A body in a bad form under that local id is refused as such, not as a duplicate. */
    json_t *r = ctl("midwifery", json_pack("{s:s, s:s, s:[s], s:s, s:s}", "cmd", "send", "type",
                                           "referral", "to", "social-care", "local_id", "BULK-PB-1",
                                           "body_pb", "not base64!"));
    expect_error(r, REFEX_E_INVAL, "body_pb");
    json_decref(r);
    free(pb);
    free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_is_many_sends),
        cmocka_unit_test(test_bad_batches_are_refused),
        cmocka_unit_test(test_protobuf_body_submission),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
