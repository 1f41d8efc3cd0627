/* Tests for librefex-client without a real agent: bad paths and configs give typed errors,
 * a socket nobody answers on gives E_UNAVAILABLE, close is idempotent; and against a fake
 * agent (a REP socket in a thread) each call sends the documented request fields, a
 * protobuf body arrives as its bytes (base64), a refusal comes back as the agent's typed
 * error, an inbox wait is waited for beyond the client's timeout, and a watch moves on to
 * each reply's cursor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "codec.h"
#include "refex.pb-c.h"
#include "refex/client.h"
#include "util.h"

typedef struct {
    char dir[512], sock[600], conf[600];
    void *ctx, *rep;
    pthread_t thread;
    int running;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    testing_tmpdir(f->dir, sizeof f->dir);
    snprintf(f->sock, sizeof f->sock, "%s/control.sock", f->dir);
    snprintf(f->conf, sizeof f->conf, "%s/agent.conf", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->running) {
        pthread_join(f->thread, NULL);
        zmq_close(f->rep);
        zmq_ctx_term(f->ctx);
    }
    testing_rmtree(f->dir);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void test_bad_paths_are_typed(void **state)
{
    fixture *f = *state;
    refex_client *c = NULL;
    char path[700];
    assert_rc(refex_client_open(NULL, &c), REFEX_E_INVAL);
    refex_client_close(&c);
    snprintf(path, sizeof path, "%s/no-such.conf", f->dir);
    assert_rc(refex_client_open(path, &c), REFEX_E_CONFIG);
    assert_non_null(c);
    assert_int_equal(strncmp(refex_client_error(c), "E_CONFIG: ", 10), 0);
    refex_client_close(&c);

    write_file(f->conf, "agency = midwifery\n");
    assert_rc(refex_client_open(f->conf, &c), REFEX_E_CONFIG);
    assert_non_null(strstr(refex_client_error(c), "has no data_dir"));
    refex_client_close(&c);

    write_file(f->conf, "data_dir = .\n");
    assert_rc(refex_client_open(f->conf, &c), REFEX_E_UNAVAILABLE);
    assert_non_null(strstr(refex_client_error(c), "E_UNAVAILABLE: the agent is not running"));
    assert_non_null(strstr(refex_client_error_detail(c), "control.sock"));
    refex_client_close(&c);

    assert_rc(refex_client_open_socket(f->sock, &c), REFEX_E_UNAVAILABLE);
    refex_client_close(&c);
    assert_rc(refex_client_open_socket(NULL, NULL), REFEX_E_INVAL);
}

static void test_close_is_idempotent(void **state)
{
    (void)state;
    refex_client *c = NULL;
    refex_client_close(NULL);
    refex_client_close(&c);
    assert_rc(refex_client_open(NULL, &c), REFEX_E_INVAL);
    assert_non_null(c);
    refex_client_close(&c);
    assert_null(c);
    refex_client_close(&c);
    assert_non_null(refex_client_error(NULL));
    assert_rc(refex_client_set_timeout(NULL, 10), REFEX_E_INVAL);
    refex_client_free(NULL);
}

/* A socket file with nobody behind it (an agent that died): E_UNAVAILABLE at once, not a
 * hang; the failed client still answers calls with typed errors. */
static void test_dead_socket_is_unavailable(void **state)
{
    fixture *f = *state;
    refex_client *c = NULL;
    char *reply = (char *)"x";
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(f->sock) < sizeof sa.sun_path);
    memcpy(sa.sun_path, f->sock, strlen(f->sock) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd); /* the file stays, nobody listens */
    write_file(f->conf, "data_dir = .\n");
    int64_t t0 = refex_mono_ms();
    assert_rc(refex_client_open(f->conf, &c), REFEX_E_UNAVAILABLE);
    assert_true(refex_mono_ms() - t0 < 5000);
    assert_non_null(c);
    assert_non_null(strstr(refex_client_error(c), "E_UNAVAILABLE: the agent is not running"));
    assert_rc(refex_client_set_timeout(c, 0), REFEX_E_INVAL);
    assert_ok(refex_client_set_timeout(c, 300));
    assert_rc(refex_client_request(c, "{\"cmd\":\"status\"}", &reply), REFEX_E_UNAVAILABLE);
    assert_null(reply);
    assert_non_null(strstr(refex_client_error(c), "E_UNAVAILABLE: cannot reach the agent"));
    assert_rc(refex_client_request(c, "[1]", &reply), REFEX_E_JSON);
    assert_rc(refex_client_request(c, "{", &reply), REFEX_E_JSON);
    refex_client_close(&c);
}

/* ---- a fake agent ------------------------------------------------------------------- */

/* An inbox_wait: held for its timeout_ms and answered empty if that is short (up to 2 s),
 * else answered at once with one message above its cursor. */
static char *fake_wait(json_t *req)
{
    json_int_t after = json_integer_value(json_object_get(req, "after"));
    json_int_t ms = json_integer_value(json_object_get(req, "timeout_ms"));
    json_t *r;
    if (ms <= 2000) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL); /* the agent holding the request */
        r = json_pack("{s:b, s:[], s:I, s:O}", "ok", 1, "messages", "cursor", after, "echo", req);
    } else {
        r = json_pack("{s:b, s:[{s:I}], s:I, s:O}", "ok", 1, "messages", "cursor", after + 1,
                      "cursor", after + 1, "echo", req);
    }
    char *out = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    return out;
}

/* Answers {"cmd":"refuse"} with a typed error, {"cmd":"garbage"} with text that is not
 * JSON, {"cmd":"multipart"} with a reply of two parts, {"cmd":"nul"} with a NUL inside
 * otherwise good JSON, anything else with {"ok":true,"message_id":...,"echo":REQUEST}; stops after
 * {"cmd":"stop"}. */
static void *fake_agent(void *arg)
{
    fixture *f = arg;
    char buf[65536];
    int stop = 0;
    while (!stop) {
        int n = zmq_recv(f->rep, buf, sizeof buf - 1, 0);
        if (n < 0)
            break;
        buf[n] = '\0';
        json_t *req = json_loads(buf, 0, NULL);
        const char *cmd = json_string_value(json_object_get(req, "cmd"));
        char *out = NULL;
        stop = cmd && strcmp(cmd, "stop") == 0;
        if (cmd && strcmp(cmd, "refuse") == 0) {
            out = strdup("{\"ok\":false,\"code\":31,\"error\":\"E_NOT_MEMBER\","
                         "\"detail\":\"social-care is not a member of case C-1\"}");
        } else if (cmd && strcmp(cmd, "garbage") == 0) {
            out = strdup("not json");
        } else if (cmd && strcmp(cmd, "multipart") == 0) {
            zmq_send(f->rep, "{\"ok\":true}", 11, ZMQ_SNDMORE);
            out = strdup("{\"ok\":true}");
        } else if (cmd && strcmp(cmd, "inbox_wait") == 0) {
            out = fake_wait(req);
        } else if (cmd && strcmp(cmd, "nul") == 0) {
            json_decref(req);
            zmq_send(f->rep, "{\"ok\":true}\0{}", 14, 0);
            continue;
        } else {
            json_t *r = json_pack("{s:b, s:s, s:O}", "ok", 1, "message_id",
                                  "00112233445566778899aabbccddeeff", "echo", req);
            out = json_dumps(r, JSON_COMPACT);
            json_decref(r);
        }
        json_decref(req);
        zmq_send(f->rep, out, strlen(out), 0);
        free(out);
    }
    return NULL;
}

static refex_client *start_fake(fixture *f)
{
    char ep[700];
    refex_client *c = NULL;
    f->ctx = zmq_ctx_new();
    f->rep = zmq_socket(f->ctx, ZMQ_REP);
    snprintf(ep, sizeof ep, "ipc://%s", f->sock);
    assert_int_equal(zmq_bind(f->rep, ep), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_agent, f), 0);
    f->running = 1;
    assert_ok(refex_client_open_socket(f->sock, &c));
    assert_ok(refex_client_set_timeout(c, 5000));
    return c;
}

static void stop_fake(refex_client **c)
{
    char *reply = NULL;
    assert_ok(refex_client_request(*c, "{\"cmd\":\"stop\"}", &reply));
    refex_client_free(reply);
    refex_client_close(c);
}

/* The request the fake agent saw, from its echo. */
static json_t *echoed(char *reply)
{
    json_t *r = json_loads(reply, 0, NULL);
    refex_client_free(reply);
    assert_non_null(r);
    json_t *e = json_incref(json_object_get(r, "echo"));
    json_decref(r);
    assert_non_null(e);
    return e;
}

static void test_calls_send_documented_fields(void **state)
{
    fixture *f = *state;
    refex_client *c = start_fake(f);
    char *reply = NULL;
    const char *types[] = {"CASE_UPDATE_BIRTH"};

    assert_ok(refex_client_audit_list(c, 5, 10, &reply));
    json_t *e = echoed(reply);
    assert_string_equal(json_string_value(json_object_get(e, "cmd")), "audit_list");
    assert_int_equal(json_integer_value(json_object_get(e, "after")), 5);
    assert_int_equal(json_integer_value(json_object_get(e, "limit")), 10);
    json_decref(e);

    assert_ok(refex_client_case_grant(c, "C-1", "police", types, 1, 1000, 0, &reply));
    e = echoed(reply);
    assert_string_equal(json_string_value(json_object_get(e, "cmd")), "grant");
    assert_string_equal(json_string_value(json_object_get(e, "member")), "police");
    assert_string_equal(json_string_value(json_array_get(json_object_get(e, "types"), 0)),
                        "CASE_UPDATE_BIRTH");
    assert_int_equal(json_integer_value(json_object_get(e, "until_ms")), 1000);
    assert_true(json_is_false(json_object_get(e, "revoke")));
    json_decref(e);

    assert_ok(refex_client_case_revoke(c, "C-1", "police", &reply));
    e = echoed(reply);
    assert_string_equal(json_string_value(json_object_get(e, "cmd")), "grant");
    assert_true(json_is_true(json_object_get(e, "revoke")));
    assert_null(json_object_get(e, "types"));
    json_decref(e);

    char id[33];
    assert_ok(
        refex_client_case_publish(c, "C-1", "{\"summary\":\"Synthetic update\"}", id, &reply));
    assert_string_equal(id, "00112233445566778899aabbccddeeff");
    e = echoed(reply);
    assert_string_equal(json_string_value(json_object_get(e, "type")), "case-update");
    assert_string_equal(json_string_value(json_object_get(e, "case")), "C-1");
    assert_null(json_object_get(e, "to"));
    json_decref(e);
    assert_rc(refex_client_case_publish(c, NULL, "{}", id, &reply), REFEX_E_INVAL);

    assert_ok(refex_client_case_subscribe(c, NULL, NULL, 0, 1, &reply));
    e = echoed(reply);
    assert_true(json_is_true(json_object_get(e, "all")));
    assert_true(json_is_true(json_object_get(e, "unsubscribe")));
    assert_null(json_object_get(e, "case"));
    json_decref(e);

    assert_ok(refex_client_inbox_show(c, "abc", &reply));
    e = echoed(reply);
    assert_string_equal(json_string_value(json_object_get(e, "cmd")), "inbox_show");
    assert_string_equal(json_string_value(json_object_get(e, "id")), "abc");
    json_decref(e);
    assert_rc(refex_client_inbox_show(c, NULL, &reply), REFEX_E_INVAL);
    assert_null(reply);

    assert_ok(refex_client_requests(c, 1, &reply));
    e = echoed(reply);
    assert_true(json_is_true(json_object_get(e, "overdue")));
    json_decref(e);
    stop_fake(&c);
}

static void test_inbox_calls(void **state)
{
    fixture *f = *state;
    refex_client *c = start_fake(f);
    char *reply = NULL;
    assert_ok(refex_client_inbox_query(c, 5, 10, 1, &reply));
    json_t *e = echoed(reply);
    assert_string_equal(json_string_value(json_object_get(e, "cmd")), "inbox_list");
    assert_int_equal(json_integer_value(json_object_get(e, "after")), 5);
    assert_int_equal(json_integer_value(json_object_get(e, "limit")), 10);
    assert_true(json_is_true(json_object_get(e, "unacked")));
    json_decref(e);
    assert_ok(refex_client_inbox_ack(c, "abc", &reply));
    e = echoed(reply);
    assert_string_equal(json_string_value(json_object_get(e, "cmd")), "inbox_ack");
    assert_string_equal(json_string_value(json_object_get(e, "id")), "abc");
    json_decref(e);
    assert_rc(refex_client_inbox_ack(c, NULL, &reply), REFEX_E_INVAL);
    assert_null(reply);

    /* A wait held longer than the client's timeout is still waited for. */
    assert_ok(refex_client_set_timeout(c, 300));
    assert_ok(refex_client_inbox_wait(c, 7, 900, &reply));
    e = echoed(reply);
    assert_string_equal(json_string_value(json_object_get(e, "cmd")), "inbox_wait");
    assert_int_equal(json_integer_value(json_object_get(e, "after")), 7);
    assert_int_equal(json_integer_value(json_object_get(e, "timeout_ms")), 900);
    json_decref(e);
    assert_ok(refex_client_set_timeout(c, 5000));

    /* A watch: each reply moves it on to its cursor; nothing else meanwhile. */
    int fd = -1;
    assert_rc(refex_client_watch_next(c, &reply), REFEX_E_INVAL);
    assert_ok(refex_client_watch_start(c, 3));
    assert_ok(refex_client_fd(c, &fd));
    assert_rc(refex_client_status(c, &reply), REFEX_E_BUSY);
    assert_null(reply);
    for (int want = 3; want < 5; want++) {
        int rc = REFEX_E_TIMEOUT;
        for (int i = 0; rc == REFEX_E_TIMEOUT && i < 100; i++) {
            struct pollfd p = {fd, POLLIN, 0};
            poll(&p, 1, 100);
            rc = refex_client_watch_next(c, &reply);
        }
        assert_ok(rc);
        e = echoed(reply);
        assert_int_equal(json_integer_value(json_object_get(e, "after")), want);
        assert_int_equal(json_integer_value(json_object_get(e, "limit")), 100);
        json_decref(e);
    }
    refex_client_watch_stop(c);
    refex_client_watch_stop(c);
    assert_ok(refex_client_status(c, &reply));
    refex_client_free(reply);
    stop_fake(&c);
}

static void test_send_protobuf_body_goes_as_json(void **state)
{
    fixture *f = *state;
    refex_client *c = start_fake(f);
    Refex__V1__Body body = REFEX__V1__BODY__INIT;
    Refex__V1__Referral ref = REFEX__V1__REFERRAL__INIT;
    uint8_t *pb = NULL;
    size_t pb_len = 0;
    char id[33], *reply = NULL;
    ref.summary = (char *)"Synthetic: booking at 12 weeks";
    body.kind_case = REFEX__V1__BODY__KIND_REFERRAL;
    body.referral = &ref;
    assert_ok(refex_pb_pack(&body.base, &pb, &pb_len));
    const char *to[] = {"social-care"};
    refex_client_message m = {.type = "referral",
                              .to = to,
                              .n_to = 1,
                              .case_ref = "C-9",
                              .body_pb = pb,
                              .body_pb_len = pb_len,
                              .ttl_seconds = 60,
                              .wait = 1};
    assert_ok(refex_client_send(c, &m, id, &reply));
    assert_string_equal(id, "00112233445566778899aabbccddeeff");
    json_t *e = echoed(reply);
    assert_string_equal(json_string_value(json_object_get(e, "cmd")), "send");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "referral");
    assert_string_equal(json_string_value(json_array_get(json_object_get(e, "to"), 0)),
                        "social-care");
    assert_string_equal(json_string_value(json_object_get(e, "case")), "C-9");
    assert_int_equal(json_integer_value(json_object_get(e, "ttl_seconds")), 60);
    assert_true(json_is_true(json_object_get(e, "wait")));
    /* The protobuf body travels as its bytes (base64), not converted to JSON. */
    assert_null(json_object_get(e, "body"));
    const char *b64 = json_string_value(json_object_get(e, "body_pb"));
    assert_non_null(b64);
    uint8_t back[256];
    size_t back_len = 0;
    assert_ok(refex_base64_decode(back, sizeof back, &back_len, b64, strlen(b64)));
    assert_int_equal(back_len, pb_len);
    assert_memory_equal(back, pb, pb_len);
    json_decref(e);

    /* A body of another type, garbage protobuf, both forms, neither. */
    m.type = "case-update";
    assert_rc(refex_client_send(c, &m, id, NULL), REFEX_E_TYPE_MISMATCH);
    assert_string_equal(id, "");
    m.type = "referral";
    m.body_pb_len = 3;
    uint8_t junk[3] = {0xff, 0xff, 0xff};
    m.body_pb = junk;
    assert_rc(refex_client_send(c, &m, id, NULL), REFEX_E_MALFORMED);
    m.body_json = "{}";
    assert_rc(refex_client_send(c, &m, id, NULL), REFEX_E_INVAL);
    m.body_pb = NULL;
    m.body_json = "[]";
    assert_rc(refex_client_send(c, &m, id, NULL), REFEX_E_JSON);
    free(pb);
    stop_fake(&c);
}

/* The local id travels as the request's "local_id", and only when given; one that is not
 * even UTF-8 is refused before anything is sent. */
static void test_send_local_id_goes_in_the_request(void **state)
{
    fixture *f = *state;
    refex_client *c = start_fake(f);
    char id[33], *reply = NULL;
    const char *to[] = {"social-care"};
    refex_client_message m = {
        .type = "referral", .to = to, .n_to = 1, .body_json = "{}", .local_id = "EPR-1"};
    assert_ok(refex_client_send(c, &m, id, &reply));
    json_t *e = echoed(reply);
    assert_string_equal(json_string_value(json_object_get(e, "local_id")), "EPR-1");
    json_decref(e);
    m.local_id = NULL;
    assert_ok(refex_client_send(c, &m, id, &reply));
    e = echoed(reply);
    assert_null(json_object_get(e, "local_id"));
    json_decref(e);
    m.local_id = "EPR-\xff";
    assert_rc(refex_client_send(c, &m, id, &reply), REFEX_E_INVAL);
    assert_null(reply);
    assert_non_null(strstr(refex_client_error(c), "local id"));
    stop_fake(&c);
}

static void test_refusal_and_garbage_are_typed(void **state)
{
    fixture *f = *state;
    refex_client *c = start_fake(f);
    char *reply = NULL;
    assert_rc(refex_client_request(c, "{\"cmd\":\"refuse\"}", &reply), REFEX_E_NOT_MEMBER);
    assert_non_null(reply); /* the agent's own error reply */
    assert_non_null(strstr(reply, "\"ok\":false"));
    refex_client_free(reply);
    assert_string_equal(refex_client_error(c),
                        "E_NOT_MEMBER: social-care is not a member of case C-1");
    assert_rc(refex_client_request(c, "{\"cmd\":\"garbage\"}", &reply), REFEX_E_MALFORMED);
    assert_null(reply);
    /* Not one part of text: refused, and the client can still talk afterwards. */
    assert_rc(refex_client_request(c, "{\"cmd\":\"multipart\"}", &reply), REFEX_E_MALFORMED);
    assert_null(reply);
    assert_rc(refex_client_request(c, "{\"cmd\":\"nul\"}", &reply), REFEX_E_MALFORMED);
    assert_null(reply);
    /* Over the agent's limit: refused here, at once, not left to time out. */
    size_t big = 64u * 1024 * 1024 + 16;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, ' ', big);
    memcpy(huge, "{\"cmd\":\"status\"}", 16);
    huge[big] = '\0';
    assert_rc(refex_client_request(c, huge, &reply), REFEX_E_TOO_BIG);
    assert_null(reply);
    free(huge);
    /* A NULL type list with a count is the caller's mistake, typed, not a crash. */
    assert_rc(refex_client_case_grant(c, "C-1", "midwifery", NULL, 2, 0, 0, &reply), REFEX_E_INVAL);
    assert_rc(refex_client_case_subscribe(c, "C-1", NULL, 1, 0, &reply), REFEX_E_INVAL);
    assert_null(reply);
    assert_ok(refex_client_status(c, &reply));
    assert_string_equal(refex_client_error(c), "");
    refex_client_free(reply);
    stop_fake(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_paths_are_typed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_is_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_socket_is_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_calls_send_documented_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbox_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_protobuf_body_goes_as_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusal_and_garbage_are_typed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_local_id_goes_in_the_request, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
