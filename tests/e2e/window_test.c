/* The broker's delivery window, end to end: a real broker and a real midwifery agent, and
 * social care played by a raw client that never acknowledges. With `window = 8`, twelve
 * stored referrals give it exactly eight deliveries; with `window_bytes = 1M` as well, four
 * referrals of about 400 KB give it exactly two (one of L bytes goes only while fewer than
 * window_bytes / L are in flight), so a backlog of large messages cannot fill the broker's
 * memory, while small ones still pass a large one that is held. "Exactly" is fenced by a
 * PING sent after the first delivery: the broker fills a window in one go, before it reads
 * the next frame, so whatever it would send has been sent by the time the PONG comes back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/testing.h"
#include "codec.h"
#include "harness.h"
#include "util.h"

static const char *const AGENCIES[] = {"midwifery", NULL};
static const char *const LISTED[] = {"social-care", NULL};

/* Sends n referrals from midwifery with a summary of summary_len bytes, and waits until the
 * broker has stored them all. */
static void send_stored(h_net *net, int n, size_t summary_len)
{
    static const char *const STORED = "SELECT count(*) FROM outbox WHERE state = 'stored'";
    long long before = h_sql_int(net, "data/midwifery/agent.db", STORED);
    char *summary = malloc(summary_len + 1);
    assert_non_null(summary);
    memset(summary, 's', summary_len);
    summary[summary_len] = '\0';
    for (int i = 0; i < n; i++) {
        char id[33];
        json_t *body = json_pack("{s:s, s:s}", "kind", "REFERRAL_PRE_BIRTH", "summary", summary);
        assert_int_equal(h_send_json(net, "midwifery", "social-care", "referral",
                                     h_required("referral", body), id),
                         0);
    }
    free(summary);
    assert_int_equal(h_sql_wait(net, "data/midwifery/agent.db", STORED, before + n, H_TIMEOUT_MS),
                     before + n);
}

static Refex__V1__Frame *recv_frame(h_client *c)
{
    Refex__V1__Frame *r = h_client_recv(c, H_TIMEOUT_MS);
    if (!r)
        fail_msg("nothing from the broker");
    return r;
}

/* Social care comes online; returns how many deliveries it gets before a PONG. The PING
 * goes out after the first DELIVER: the broker sends a window's deliveries in one go, so
 * by then it has sent all it will, and the PONG comes behind them. */
static int deliveries_before_pong(h_net *net)
{
    h_client c;
    int n = 0, pong = 0;
    assert_int_equal(h_client_open(&c, net, "social-care", NULL), 0);
    assert_int_equal(h_client_hello(&c, "social-care"), 0);
    Refex__V1__Frame *r = recv_frame(&c);
    while (r->kind_case != REFEX__V1__FRAME__KIND_DELIVER) {
        refex_frame_free(&r);
        r = recv_frame(&c);
    }
    refex_frame_free(&r);
    n = 1;
    Refex__V1__Ping ping = REFEX__V1__PING__INIT;
    ping.nonce = 77;
    Refex__V1__Frame f;
    assert_ok(refex_frame_wrap(&f, REFEX__V1__FRAME__KIND_PING, &ping.base));
    assert_int_equal(h_client_send(&c, &f), 0);
    while (!pong) {
        r = recv_frame(&c);
        n += r->kind_case == REFEX__V1__FRAME__KIND_DELIVER;
        pong = r->kind_case == REFEX__V1__FRAME__KIND_PONG && r->pong->nonce == 77;
        refex_frame_free(&r);
    }
    h_client_close(&c);
    return n;
}

static void test_window_counts_messages(void **state)
{
    (void)state;
    h_net net;
    assert_int_equal(h_net_up(&net, AGENCIES, LISTED, "window = 8"), 0);
    send_stored(&net, 12, 100);
    assert_int_equal(deliveries_before_pong(&net), 8);
    h_net_fini(&net);
}

static void test_window_bytes_bounds_large_messages(void **state)
{
    (void)state;
    h_net net;
    assert_int_equal(h_net_up(&net, AGENCIES, LISTED, "window = 8\nwindow_bytes = 1M"), 0);
    send_stored(&net, 4, 400 * 1024);
    assert_int_equal(deliveries_before_pong(&net), 2);
    h_net_fini(&net);
}

/* A large delivery that stays unacknowledged (a recipient may hold one) does not stop the
 * small ones behind it: 1 of 600 KB and 5 small ones make 6 deliveries. */
static void test_held_large_message_does_not_block(void **state)
{
    (void)state;
    h_net net;
    assert_int_equal(h_net_up(&net, AGENCIES, LISTED, "window = 8\nwindow_bytes = 1M"), 0);
    send_stored(&net, 1, 600 * 1024);
    send_stored(&net, 5, 100);
    assert_int_equal(deliveries_before_pong(&net), 6);
    h_net_fini(&net);
}

/* Out-of-range settings stop the broker at start with a message naming the setting. */
static void test_window_settings_checked(void **state)
{
    (void)state;
    const char *bad[] = {"window_bytes = 1000", "window_bytes = 5G", "window = 0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        h_net net;
        assert_int_equal(h_net_init(&net, AGENCIES, LISTED, bad[i]), 0);
        assert_int_not_equal(h_net_start_broker(&net), 0);
        h_net_fini(&net);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_counts_messages),
        cmocka_unit_test(test_window_bytes_bounds_large_messages),
        cmocka_unit_test(test_held_large_message_does_not_block),
        cmocka_unit_test(test_window_settings_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
