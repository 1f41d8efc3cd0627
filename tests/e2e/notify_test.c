/* The daemons under systemd's service protocol (sd_notify), with NOTIFY_SOCKET pointing at a
 * datagram socket this test reads, as systemd would: the agent says READY=1 only once the
 * broker's WELCOME has arrived (started before the broker, it says STATUS= and waits), then
 * WATCHDOG=1 at half of WATCHDOG_USEC, and RELOADING=1 then READY=1 around a SIGHUP; the
 * broker says READY=1 once it listens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../unit/testing.h"
#include "harness.h"
#include "util.h"

static h_net g_net;

static int notify_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0 && strlen(path) < sizeof sa.sun_path);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* The next datagram within timeout_ms into buf; 0 if none came. */
static int next_message(int fd, char *buf, size_t len, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1)
        return 0;
    ssize_t n = recv(fd, buf, len - 1, 0);
    assert_true(n > 0);
    buf[n] = 0;
    return 1;
}

/* Reads messages until one contains want (1), or none comes for timeout_ms (0). Every
 * message read is appended to seen. */
static int wait_for(int fd, const char *want, int timeout_ms, char *seen, size_t seen_len)
{
    char msg[1024];
    int64_t deadline = refex_mono_ms() + timeout_ms;
    while (refex_mono_ms() < deadline) {
        if (!next_message(fd, msg, sizeof msg, (int)(deadline - refex_mono_ms())))
            return 0;
        size_t used = strlen(seen);
        snprintf(seen + used, seen_len - used, "%s|", msg);
        if (strstr(msg, want))
            return 1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_net_fini(&g_net);
    return 0;
}

static void test_ready_after_welcome_then_watchdog(void **state)
{
    (void)state;
    static const char *const agencies[] = {"midwifery", "social-care", NULL};
    char path[700], seen[16384] = "", line[256];
    assert_int_equal(h_net_init(&g_net, agencies, NULL, NULL), 0);
    /* The broker once, for its endpoint (the agents' configs name it); then stopped. */
    h_path(&g_net, path, sizeof path, "broker-notify.sock");
    int bfd = notify_socket(path);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(h_net_start_broker(&g_net), 0);
    unsetenv("NOTIFY_SOCKET");
    assert_true(wait_for(bfd, "READY=1", H_TIMEOUT_MS, seen, sizeof seen));
    assert_non_null(strstr(seen, "STATUS=listening on tcp://127.0.0.1:"));
    h_stop(&g_net.broker);

    /* The agent, with no broker to welcome it: STATUS=, and no READY=1. */
    h_path(&g_net, path, sizeof path, "agent-notify.sock");
    int afd = notify_socket(path);
    char conf[700], log[700], exe[1100];
    h_path(&g_net, conf, sizeof conf, "conf/midwifery.conf");
    h_path(&g_net, log, sizeof log, "logs/midwifery.log");
    snprintf(exe, sizeof exe, "%s/refex-agent", g_net.bin);
    char *argv[] = {exe, "-c", conf, NULL};
    setenv("NOTIFY_SOCKET", path, 1);
    setenv("WATCHDOG_USEC", "400000", 1);
    int idx = h_agent_index(&g_net, "midwifery");
    assert_int_equal(h_spawn(&g_net.agents[idx], "midwifery", argv, log), 0);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    seen[0] = 0;
    assert_true(wait_for(afd, "STATUS=connecting to broker", H_TIMEOUT_MS, seen, sizeof seen));
    /* While the broker is down, only watchdog pings and status: never READY=1. Two pings
     * (at 200 ms each) pass with the broker down. */
    assert_true(wait_for(afd, "WATCHDOG=1", 5000, seen, sizeof seen));
    assert_true(wait_for(afd, "WATCHDOG=1", 5000, seen, sizeof seen));
    assert_null(strstr(seen, "READY=1"));

    /* The broker back on its port: WELCOME, and only then READY=1. */
    assert_int_equal(h_net_restart_broker(&g_net), 0);
    assert_true(wait_for(afd, "READY=1", H_TIMEOUT_MS, seen, sizeof seen));
    assert_non_null(strstr(seen, "STATUS=online: agency midwifery at broker tcp://"));
    /* the WELCOME came first: the agent's READY line is already on its stdout */
    assert_int_equal(h_wait_line(&g_net.agents[idx], "READY midwifery", 100, line, sizeof line), 0);
    /* and the watchdog goes on */
    seen[0] = 0;
    assert_true(wait_for(afd, "WATCHDOG=1", 5000, seen, sizeof seen));

    /* SIGHUP: RELOADING=1, then READY=1 again. */
    seen[0] = 0;
    kill(g_net.agents[idx].pid, SIGHUP);
    assert_true(wait_for(afd, "RELOADING=1", H_TIMEOUT_MS, seen, sizeof seen));
    assert_true(wait_for(afd, "READY=1", H_TIMEOUT_MS, seen, sizeof seen));
    assert_non_null(strstr(seen, "STATUS=reloaded: directory serial"));
    assert_true(h_alive(&g_net.agents[idx]));
    close(afd);
    close(bfd);
}

/* `refex send --wait` on a terminal (script(1) gives it one) shows that it waits for the
 * broker on stderr; on a pipe it prints only its result. */
static void test_send_wait_progress_on_a_terminal(void **state)
{
    (void)state;
    static const char *const agencies[] = {"midwifery", "social-care", NULL};
    char conf[700], cmd[4096], out[8192];
    assert_int_equal(h_net_up(&g_net, agencies, NULL, NULL), 0);
    h_path(&g_net, conf, sizeof conf, "conf/midwifery.conf");
    snprintf(cmd, sizeof cmd,
             "'%s/refex' -c '%s' send --to social-care --type referral --subject-ref UB-P1 "
             "--gestation-weeks 12 --practitioner-ref MW-P1 --urgency routine --article6 "
             "public-task --article9 substantial-public-interest --consent "
             "not-sought-safeguarding --purpose safeguarding --wait",
             g_net.bin, conf);
    char *tty[] = {"/usr/bin/script", "-qec", cmd, "/dev/null", NULL};
    assert_int_equal(h_run(tty, out, sizeof out), 0);
    if (!strstr(out, "send: waiting for the broker to store it (0 s)") ||
        !strstr(out, "send: done waiting for the broker"))
        fail_msg("no progress on a terminal: %s", out);
    const char *args[] = {"send",     "--to",           "social-care", "--type",
                          "referral", H_REFERRAL_FLAGS, "--wait",      NULL};
    assert_int_equal(h_cli_agent(&g_net, "midwifery", out, sizeof out, args), 0);
    assert_null(strstr(out, "waiting for the broker"));
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_ready_after_welcome_then_watchdog, teardown),
        cmocka_unit_test_teardown(test_send_wait_progress_on_a_terminal, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
