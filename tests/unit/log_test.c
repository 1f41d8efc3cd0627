/* lib/log.c: control characters are written out, so text from outside cannot start a log
 * line of its own; the gate logs a bounded number of warnings per source and the count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "testing.h"

#include "log.h"

static void test_escape_controls(void **state)
{
    (void)state;
    char out[256];
    refex_log_escape(out, sizeof out, "refex-agent/1\nALERT witness: fake\r\tend");
    assert_string_equal(out, "refex-agent/1\\nALERT witness: fake\\r\\tend");
    refex_log_escape(out, sizeof out,
                     "a\x01"
                     "b\x1b[31mc\x7f"
                     "d\x1f");
    assert_string_equal(out, "a\\x01b\\x1b[31mc\\x7fd\\x1f");
    /* C1 controls in UTF-8 (U+0085 NEL, U+009B CSI) are escaped, other UTF-8 is kept. */
    refex_log_escape(out, sizeof out, "x\xc2\x85y\xc2\x9bz");
    assert_string_equal(out, "x\\xc2\\x85y\\xc2\\x9bz");
    refex_log_escape(out, sizeof out,
                     "Gwasanaethau Cymdeithasol \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    assert_string_equal(out, "Gwasanaethau Cymdeithasol \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    refex_log_escape(out, sizeof out, "");
    assert_string_equal(out, "");
}

static void test_escape_truncates_whole_escapes(void **state)
{
    (void)state;
    char out[6];
    assert_int_equal(refex_log_escape(out, sizeof out, "abc\ndef"), 5);
    assert_string_equal(out, "abc\\n");
    assert_int_equal(refex_log_escape(out, sizeof out, "abcd\x01"), 4);
    assert_string_equal(out, "abcd"); /* \x01 does not fit: left out whole */
    assert_int_equal(refex_log_escape(out, 1, "abc"), 0);
    assert_string_equal(out, "");
}

/* Runs fn with stderr sent to a file; the file's contents into buf. */
static void capture_stderr(void (*fn)(void), char *buf, size_t len)
{
    char path[] = "/tmp/refex-log-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0 && dup2(fd, 2) == 2);
    fn();
    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
    ssize_t n = pread(fd, buf, len - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    close(fd);
    unlink(path);
}

static void log_injected(void)
{
    refex_log_info("session: %s online (%s)", "police", "x\nALERT witness: fake");
}

static void test_log_line_is_one_line(void **state)
{
    (void)state;
    char buf[4096];
    capture_stderr(log_injected, buf, sizeof buf);
    assert_non_null(strstr(buf, "online (x\\nALERT witness: fake)\n"));
    assert_null(strstr(buf, "\nALERT"));
    assert_int_equal(strchr(buf, '\n') - buf + 1, (ptrdiff_t)strlen(buf)); /* one line */
}

static refex_log_gate g_gate;

static void gate_run(void)
{
    memset(&g_gate, 0, sizeof g_gate);
    g_gate.what = "refusals";
    g_gate.burst = 3;
    g_gate.window_ms = 10000;
    int passed = 0;
    for (int i = 0; i < 100; i++)
        passed += refex_log_gate_pass(&g_gate, "police", 1000 + i);
    assert_int_equal(passed, 3);
    /* Another source has a window of its own. */
    assert_true(refex_log_gate_pass(&g_gate, "probation", 1200));
    refex_log_gate_flush(&g_gate, 5000); /* police's window is not over */
    refex_log_gate_flush(&g_gate, 11000);
    /* A new window: logged again. */
    assert_true(refex_log_gate_pass(&g_gate, "police", 11001));
    /* More sources than slots: the oldest is reused, its count logged first. */
    char name[32];
    for (int i = 0; i < REFEX_LOG_GATE_SOURCES + 5; i++) {
        snprintf(name, sizeof name, "agency-%d", i);
        assert_true(refex_log_gate_pass(&g_gate, name, 20000 + i));
    }
}

static void test_gate_bounds_and_counts(void **state)
{
    (void)state;
    char buf[8192];
    capture_stderr(gate_run, buf, sizeof buf);
    assert_non_null(strstr(buf, "refusals: more than 3 warnings about police in 10 s"));
    assert_non_null(strstr(buf, "refusals: 97 more warning(s) about police suppressed in 10 s"));
    assert_null(strstr(buf, "about probation suppressed"));
    int lines = 0;
    for (const char *p = buf; (p = strchr(p, '\n')); p++)
        lines++;
    assert_int_equal(lines, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_controls),
        cmocka_unit_test(test_escape_truncates_whole_escapes),
        cmocka_unit_test(test_log_line_is_one_line),
        cmocka_unit_test(test_gate_bounds_and_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
