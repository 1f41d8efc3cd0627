/* Tests for lib/store.c through the refex_store interface, on the in-memory backend:
 * put/pending/ack per recipient, duplicates, arrival order and the visitor protocol. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include "refex/store.h"
#include "refex/util.h"

#define MAX_SEEN 64

typedef struct {
    uint8_t id[16];
    char sender[64];
    uint8_t env[64];
    size_t env_len;
} seen_msg;

/* Collects what a pending walk visits; stops after `stop_after` visits if non-zero. */
typedef struct {
    size_t n;
    size_t stop_after;
    seen_msg msg[MAX_SEEN];
} seen;

static int collect(void *ctx, const uint8_t id[16], const char *sender, const uint8_t *env,
                   size_t env_len)
{
    seen *s = ctx;
    assert_true(s->n < MAX_SEEN);
    assert_true(env_len <= sizeof s->msg[0].env);
    seen_msg *m = &s->msg[s->n++];
    memcpy(m->id, id, 16);
    snprintf(m->sender, sizeof m->sender, "%s", sender);
    memcpy(m->env, env, env_len);
    m->env_len = env_len;
    return s->stop_after && s->n >= s->stop_after ? 1 : 0;
}

static size_t pending_for(refex_store *st, const char *rcpt, seen *out)
{
    memset(out, 0, sizeof *out);
    assert_ok(refex_store_pending(st, rcpt, collect, out));
    return out->n;
}

static void make_id(uint8_t id[16], unsigned n)
{
    memset(id, 0, 16);
    id[0] = 0xa5;
    id[14] = (uint8_t)(n >> 8);
    id[15] = (uint8_t)n;
}

static int setup(void **state)
{
    refex_store *st = NULL;
    if (refex_store_memory_new(&st) != REFEX_OK)
        return -1;
    *state = st;
    return 0;
}

static int teardown(void **state)
{
    refex_store *st = *state;
    refex_store_destroy(&st);
    return 0;
}

static const char *const TWO[] = {"social-care", "health-visiting"};
static const uint8_t ENV[] = {0x0a, 0x03, 'h', 'd', 'r', 0x00, 0xff, 0x12};

static void test_new_is_empty(void **state)
{
    refex_store *st = *state;
    seen s;
    assert_non_null(st->ops);
    assert_string_equal(st->ops->name, "memory");
    assert_int_equal(refex_store_count(st), 0);
    assert_int_equal(pending_for(st, "social-care", &s), 0);
}

static void test_put_then_pending(void **state)
{
    refex_store *st = *state;
    uint8_t id[16];
    seen s;
    make_id(id, 1);
    assert_ok(refex_store_put(st, id, "midwifery-north", TWO, 2, ENV, sizeof ENV, 0));
    assert_int_equal(refex_store_count(st), 1);

    for (size_t r = 0; r < 2; r++) {
        assert_int_equal(pending_for(st, TWO[r], &s), 1);
        assert_memory_equal(s.msg[0].id, id, 16);
        assert_string_equal(s.msg[0].sender, "midwifery-north");
        assert_int_equal(s.msg[0].env_len, sizeof ENV);
        assert_memory_equal(s.msg[0].env, ENV, sizeof ENV);
    }
    /* the sender and strangers have nothing pending */
    assert_int_equal(pending_for(st, "midwifery-north", &s), 0);
    assert_int_equal(pending_for(st, "police", &s), 0);
    assert_int_equal(pending_for(st, "", &s), 0);
}

static void test_put_copies_envelope(void **state)
{
    refex_store *st = *state;
    uint8_t id[16], env[8];
    char rcpt_buf[32];
    const char *rcpt[] = {rcpt_buf};
    seen s;
    make_id(id, 2);
    memcpy(env, ENV, sizeof env);
    snprintf(rcpt_buf, sizeof rcpt_buf, "social-care");
    assert_ok(refex_store_put(st, id, "midwifery-north", rcpt, 1, env, sizeof env, 0));

    /* the caller's buffers may be reused straight away */
    memset(env, 0, sizeof env);
    memset(rcpt_buf, 'x', sizeof rcpt_buf - 1);
    memset(id, 0, sizeof id);

    assert_int_equal(pending_for(st, "social-care", &s), 1);
    assert_memory_equal(s.msg[0].env, ENV, sizeof ENV);
    make_id(id, 2);
    assert_memory_equal(s.msg[0].id, id, 16);
}

static void test_empty_envelope(void **state)
{
    refex_store *st = *state;
    uint8_t id[16];
    seen s;
    make_id(id, 3);
    /* (env is not NULL here: lib/store.c memcpy's from it even when env_len is 0) */
    assert_ok(refex_store_put(st, id, "midwifery-north", TWO, 1, ENV, 0, 0));
    assert_int_equal(pending_for(st, TWO[0], &s), 1);
    assert_int_equal(s.msg[0].env_len, 0);
}

static void test_duplicate(void **state)
{
    refex_store *st = *state;
    uint8_t id[16];
    seen s;
    make_id(id, 7);
    assert_ok(refex_store_put(st, id, "midwifery-north", TWO, 2, ENV, sizeof ENV, 0));
    assert_rc(refex_store_put(st, id, "midwifery-north", TWO, 2, ENV, sizeof ENV, 0),
              REFEX_E_DUPLICATE);
    /* different recipients or bytes do not make it a new message */
    assert_rc(refex_store_put(st, id, "midwifery-north", TWO + 1, 1, ENV, 3, 0), REFEX_E_DUPLICATE);
    assert_int_equal(refex_store_count(st), 1);

    /* the same id from another sender is a different message */
    assert_ok(refex_store_put(st, id, "gp-surgery", TWO, 2, ENV, 4, 0));
    assert_int_equal(refex_store_count(st), 2);
    assert_int_equal(pending_for(st, "social-care", &s), 2);
    assert_string_equal(s.msg[0].sender, "midwifery-north");
    assert_int_equal(s.msg[0].env_len, sizeof ENV);
    assert_string_equal(s.msg[1].sender, "gp-surgery");
    assert_int_equal(s.msg[1].env_len, 4);

    /* acking one sender's copy leaves the other sender's message alone */
    assert_ok(refex_store_ack(st, "social-care", "gp-surgery", id));
    assert_int_equal(pending_for(st, "social-care", &s), 1);
    assert_string_equal(s.msg[0].sender, "midwifery-north");
}

static void test_ack_per_recipient(void **state)
{
    refex_store *st = *state;
    uint8_t id[16];
    seen s;
    make_id(id, 9);
    assert_ok(refex_store_put(st, id, "midwifery-north", TWO, 2, ENV, sizeof ENV, 0));

    assert_ok(refex_store_ack(st, "social-care", "midwifery-north", id));
    assert_int_equal(refex_store_count(st), 1);
    assert_int_equal(pending_for(st, "social-care", &s), 0);
    assert_int_equal(pending_for(st, "health-visiting", &s), 1);
    assert_memory_equal(s.msg[0].id, id, 16);

    /* a second ack by the same recipient finds nothing */
    assert_rc(refex_store_ack(st, "social-care", "midwifery-north", id), REFEX_E_NOTFOUND);
    assert_int_equal(refex_store_count(st), 1);

    assert_ok(refex_store_ack(st, "health-visiting", "midwifery-north", id));
    assert_int_equal(refex_store_count(st), 0);
    assert_int_equal(pending_for(st, "health-visiting", &s), 0);
    assert_rc(refex_store_ack(st, "health-visiting", "midwifery-north", id), REFEX_E_NOTFOUND);
    assert_rc(refex_store_ack(st, "social-care", "midwifery-north", id), REFEX_E_NOTFOUND);
}

static void test_ack_unknown(void **state)
{
    refex_store *st = *state;
    uint8_t id[16], other[16];
    make_id(id, 10);
    make_id(other, 11);
    assert_rc(refex_store_ack(st, "social-care", "midwifery-north", id), REFEX_E_NOTFOUND);

    assert_ok(refex_store_put(st, id, "midwifery-north", TWO, 2, ENV, sizeof ENV, 0));
    /* unknown id, wrong sender, not a recipient */
    assert_rc(refex_store_ack(st, "social-care", "midwifery-north", other), REFEX_E_NOTFOUND);
    assert_rc(refex_store_ack(st, "social-care", "gp-surgery", id), REFEX_E_NOTFOUND);
    assert_rc(refex_store_ack(st, "police", "midwifery-north", id), REFEX_E_NOTFOUND);
    assert_rc(refex_store_ack(st, "midwifery-north", "midwifery-north", id), REFEX_E_NOTFOUND);
    assert_int_equal(refex_store_count(st), 1);
}

static void test_ack_middle_keeps_list(void **state)
{
    refex_store *st = *state;
    uint8_t id[16];
    seen s;
    for (unsigned i = 0; i < 3; i++) {
        make_id(id, 100 + i);
        assert_ok(refex_store_put(st, id, "midwifery-north", TWO, 1, ENV, sizeof ENV, 0));
    }
    /* remove the middle, then the tail, then append: order and tail stay right */
    make_id(id, 101);
    assert_ok(refex_store_ack(st, TWO[0], "midwifery-north", id));
    make_id(id, 102);
    assert_ok(refex_store_ack(st, TWO[0], "midwifery-north", id));
    make_id(id, 103);
    assert_ok(refex_store_put(st, id, "midwifery-north", TWO, 1, ENV, sizeof ENV, 0));
    assert_int_equal(refex_store_count(st), 2);
    assert_int_equal(pending_for(st, TWO[0], &s), 2);
    make_id(id, 100);
    assert_memory_equal(s.msg[0].id, id, 16);
    make_id(id, 103);
    assert_memory_equal(s.msg[1].id, id, 16);

    /* remove the head, then everything, then append again */
    make_id(id, 100);
    assert_ok(refex_store_ack(st, TWO[0], "midwifery-north", id));
    make_id(id, 103);
    assert_ok(refex_store_ack(st, TWO[0], "midwifery-north", id));
    assert_int_equal(refex_store_count(st), 0);
    make_id(id, 104);
    assert_ok(refex_store_put(st, id, "midwifery-north", TWO, 1, ENV, sizeof ENV, 0));
    assert_int_equal(pending_for(st, TWO[0], &s), 1);
    assert_memory_equal(s.msg[0].id, id, 16);
}

static void test_arrival_order(void **state)
{
    refex_store *st = *state;
    static const char *const senders[] = {"midwifery-north", "gp-surgery"};
    uint8_t id[16], env[2];
    seen s;
    enum { N = 50 };
    for (unsigned i = 0; i < N; i++) {
        make_id(id, i / 2); /* both senders reuse the same ids */
        env[0] = (uint8_t)i;
        env[1] = (uint8_t)(i % 2);
        assert_ok(refex_store_put(st, id, senders[i % 2], TWO, 2, env, sizeof env, (int64_t)i));
    }
    assert_int_equal(refex_store_count(st), N);

    for (size_t r = 0; r < 2; r++) {
        assert_int_equal(pending_for(st, TWO[r], &s), N);
        unsigned next[2] = {0, 0};
        for (unsigned i = 0; i < N; i++) {
            /* overall arrival order ... */
            assert_int_equal(s.msg[i].env[0], i);
            assert_string_equal(s.msg[i].sender, senders[i % 2]);
            /* ... hence per-sender order */
            unsigned k = s.msg[i].env[1];
            make_id(id, next[k]++);
            assert_memory_equal(s.msg[i].id, id, 16);
        }
        assert_int_equal(next[0], N / 2);
        assert_int_equal(next[1], N / 2);
    }

    /* after one recipient acks every other message, it still sees the rest in order */
    for (unsigned i = 0; i < N; i += 2) {
        make_id(id, i / 2);
        assert_ok(refex_store_ack(st, TWO[0], senders[0], id));
    }
    assert_int_equal(pending_for(st, TWO[0], &s), N / 2);
    for (unsigned i = 0; i < N / 2; i++) {
        assert_string_equal(s.msg[i].sender, senders[1]);
        assert_int_equal(s.msg[i].env[0], 2 * i + 1);
    }
    assert_int_equal(pending_for(st, TWO[1], &s), N);
    assert_int_equal(refex_store_count(st), N);
}

static void test_visitor_stops(void **state)
{
    refex_store *st = *state;
    uint8_t id[16];
    seen s;
    for (unsigned i = 0; i < 5; i++) {
        make_id(id, i);
        assert_ok(refex_store_put(st, id, "midwifery-north", TWO, 2, ENV, sizeof ENV, 0));
    }
    memset(&s, 0, sizeof s);
    s.stop_after = 1;
    assert_ok(refex_store_pending(st, TWO[0], collect, &s));
    assert_int_equal(s.n, 1);
    make_id(id, 0);
    assert_memory_equal(s.msg[0].id, id, 16);

    memset(&s, 0, sizeof s);
    s.stop_after = 3;
    assert_ok(refex_store_pending(st, TWO[1], collect, &s));
    assert_int_equal(s.n, 3);
    make_id(id, 2);
    assert_memory_equal(s.msg[2].id, id, 16);

    /* stopping the walk changes nothing in the store */
    assert_int_equal(refex_store_count(st), 5);
    assert_int_equal(pending_for(st, TWO[0], &s), 5);
}

static void test_destroy_null_and_twice(void **state)
{
    (void)state;
    refex_store *st = NULL;
    uint8_t id[16];
    refex_store_destroy(NULL);
    refex_store_destroy(&st);
    assert_null(st);

    assert_ok(refex_store_memory_new(&st));
    assert_non_null(st);
    make_id(id, 1);
    /* destroy frees messages still pending (ASan reports a leak otherwise) */
    assert_ok(refex_store_put(st, id, "midwifery-north", TWO, 2, ENV, sizeof ENV, 0));
    make_id(id, 2);
    assert_ok(refex_store_put(st, id, "midwifery-north", TWO, 2, ENV, sizeof ENV, 0));
    refex_store_destroy(&st);
    assert_null(st);
    refex_store_destroy(&st);
    assert_null(st);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        T(test_new_is_empty),
        T(test_put_then_pending),
        T(test_put_copies_envelope),
        T(test_empty_envelope),
        T(test_duplicate),
        T(test_ack_per_recipient),
        T(test_ack_unknown),
        T(test_ack_middle_keeps_list),
        T(test_arrival_order),
        T(test_visitor_stops),
        cmocka_unit_test(test_destroy_null_and_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
