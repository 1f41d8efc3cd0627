/* The broker's metrics and health over HTTP (metrics_listen), read with a real HTTP client
 * (curl) and checked with a Prometheus exposition parser (python3-prometheus-client,
 * tests/prom_value.py): the pending deliveries of an offline agency rise as messages are
 * sent to it, /healthz answers ok, and a wrong method or path gets its HTTP error while the
 * broker goes on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../unit/testing.h"
#include "harness.h"
#include "util.h"

static h_net g_net;
static int g_port, g_agent_port;

/* Runs a shell pipeline; its output into out; its exit code. */
static int sh(char *out, size_t len, const char *cmd)
{
    char *argv[] = {"/bin/bash", "-c", (char *)cmd, NULL};
    return h_run(argv, out, len);
}

/* The value of one sample of a daemon's /metrics (the broker's, or the agent's for names
 * starting refex_agent_), parsed by prometheus_client. */
static long long metric(const char *name, const char *label)
{
    char cmd[1024], out[256];
    int port = strncmp(name, "refex_agent_", 12) == 0 ? g_agent_port : g_port;
    snprintf(cmd, sizeof cmd,
             "set -o pipefail; curl -sf http://127.0.0.1:%d/metrics | /usr/bin/python3 "
             "'%s/tests/prom_value.py' %s %s",
             port, getenv("REFEX_SOURCE_DIR"), name, label ? label : "");
    if (sh(out, sizeof out, cmd) != 0)
        fail_msg("%s: %s", cmd, out);
    return strtoll(out, NULL, 10);
}

static long long wait_metric(const char *name, const char *label, long long want)
{
    int64_t deadline = refex_mono_ms() + H_TIMEOUT_MS;
    long long v;
    while ((v = metric(name, label)) != want && refex_mono_ms() < deadline)
        h_pause();
    return v;
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

static void send_referrals(int n)
{
    for (int i = 0; i < n; i++) {
        char id[33];
        json_t *body = h_required("referral", json_pack("{s:s}", "kind", "REFERRAL_PRE_BIRTH"));
        assert_int_equal(h_send_json(&g_net, "midwifery", "social-care", "referral", body, id), 0);
    }
}

static void test_metrics_and_health(void **state)
{
    (void)state;
    static const char *const agencies[] = {"midwifery", "social-care", NULL};
    char conf[64], out[4096], cmd[512];
    g_port = h_free_port();
    snprintf(conf, sizeof conf, "metrics_listen = 127.0.0.1:%d", g_port);
    assert_int_equal(h_net_init(&g_net, agencies, NULL, conf), 0);
    assert_int_equal(h_net_start_broker(&g_net), 0);
    /* the sender's agent serves metrics too */
    g_agent_port = h_free_port();
    char path[700];
    h_path(&g_net, path, sizeof path, "conf/midwifery.conf");
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fprintf(f, "metrics_listen = %d\n", g_agent_port);
    fclose(f);
    assert_int_equal(h_net_start_agent(&g_net, "midwifery"), 0); /* social-care stays offline */
    assert_int_equal(metric("refex_agent_connected", NULL), 1);
    assert_int_equal(metric("refex_agent_sends_unreceipted", NULL), 0);

    /* The whole text parses; nothing is pending yet. */
    snprintf(cmd, sizeof cmd,
             "set -o pipefail; curl -sf http://127.0.0.1:%d/metrics | /usr/bin/python3 "
             "'%s/tests/prom_value.py'",
             g_port, getenv("REFEX_SOURCE_DIR"));
    if (sh(out, sizeof out, cmd) != 0)
        fail_msg("%s: %s", cmd, out);
    assert_true(atoi(out) >= 5);
    assert_int_equal(wait_metric("refex_broker_sessions_online", NULL, 1), 1);
    assert_int_equal(metric("refex_broker_deliveries_pending", "recipient=social-care"), 0);

    /* Pending deliveries for the offline agency rise with what is sent to it. */
    send_referrals(3);
    assert_int_equal(wait_metric("refex_broker_deliveries_pending", "recipient=social-care", 3), 3);
    send_referrals(2);
    assert_int_equal(wait_metric("refex_broker_deliveries_pending", "recipient=social-care", 5), 5);
    assert_true(metric("refex_broker_store_live_bytes", NULL) > 0);
    assert_int_equal(metric("refex_broker_store_readable", NULL), 1);
    /* the sender's side: stored, but no receipt yet */
    assert_int_equal(wait_metric("refex_agent_outbox_pending", NULL, 0), 0);
    assert_int_equal(metric("refex_agent_sends_unreceipted", NULL), 5);
    assert_true(metric("refex_agent_audit_log_entries", NULL) >= 5);
    assert_int_equal(metric("refex_agent_store_readable", NULL), 1);

    /* ... and fall to nothing once it comes online and acknowledges them. */
    assert_int_equal(h_net_start_agent(&g_net, "social-care"), 0);
    assert_int_equal(wait_metric("refex_broker_deliveries_pending", "recipient=social-care", 0), 0);
    assert_int_equal(wait_metric("refex_broker_sessions_online", NULL, 2), 2);
    assert_int_equal(wait_metric("refex_agent_sends_unreceipted", NULL, 0), 0);
    snprintf(cmd, sizeof cmd, "curl -s -w ' %%{http_code}' http://127.0.0.1:%d/healthz",
             g_agent_port);
    assert_int_equal(sh(out, sizeof out, cmd), 0);
    assert_string_equal(out, "ok\n 200");

    /* Health. */
    snprintf(cmd, sizeof cmd, "curl -s -w ' %%{http_code}' http://127.0.0.1:%d/healthz", g_port);
    assert_int_equal(sh(out, sizeof out, cmd), 0);
    assert_string_equal(out, "ok\n 200");

    /* Bad requests: a typed HTTP answer each, and the broker goes on. */
    snprintf(cmd, sizeof cmd,
             "curl -s -o /dev/null -w '%%{http_code}' -X POST -d x=1 http://127.0.0.1:%d/metrics",
             g_port);
    assert_int_equal(sh(out, sizeof out, cmd), 0);
    assert_string_equal(out, "405");
    snprintf(cmd, sizeof cmd, "curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/nope",
             g_port);
    assert_int_equal(sh(out, sizeof out, cmd), 0);
    assert_string_equal(out, "404");
    snprintf(cmd, sizeof cmd,
             "printf 'GARBAGE\\r\\n\\r\\n' | timeout 5 bash -c 'cat > /dev/tcp/127.0.0.1/%d'",
             g_port);
    sh(out, sizeof out, cmd);
    assert_true(h_alive(&g_net.broker));
    assert_int_equal(metric("refex_broker_sessions_online", NULL), 2);
}

/* A metrics_listen that is not PORT or IPv4:PORT: the broker refuses to start, saying why. */
static void test_bad_metrics_listen(void **state)
{
    (void)state;
    static const char *const agencies[] = {"midwifery", NULL};
    char out[4096], conf[700], exe[1100];
    assert_int_equal(h_net_init(&g_net, agencies, NULL, "metrics_listen = localhost:http"), 0);
    h_path(&g_net, conf, sizeof conf, "conf/broker.conf");
    snprintf(exe, sizeof exe, "%s/refex-broker", g_net.bin);
    char *argv[] = {exe, "-c", conf, NULL};
    assert_int_not_equal(h_run(argv, out, sizeof out), 0);
    assert_non_null(strstr(out, "metrics_listen must be PORT or IPv4:PORT"));
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_metrics_and_health, teardown),
        cmocka_unit_test_teardown(test_bad_metrics_listen, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
