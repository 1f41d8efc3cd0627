/* lib/log.c: control characters are written out, so text from outside cannot start a log
 * line of its own; nor do bytes that are not UTF-8, line separators or bidirectional
 * controls pass into it raw. The gate logs a bounded number of warnings per source and
 * the count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testing.h"

#include <sys/stat.h>

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

/* Bytes that are not well-formed UTF-8 are written out one by one as \xNN; what follows
 * an invalid byte is read anew, so a good character after it is kept. */
static void test_escape_invalid_utf8(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"a\x80z", "a\\x80z"},                            /* a stray continuation byte */
        {"a\xbf\xbfz", "a\\xbf\\xbfz"},                   /* two of them */
        {"a\xc0\xafz", "a\\xc0\\xafz"},                   /* overlong '/' */
        {"a\xe0\x80\xafz", "a\\xe0\\x80\\xafz"},          /* overlong, three bytes */
        {"a\xf0\x80\x80\xafz", "a\\xf0\\x80\\x80\\xafz"}, /* overlong, four bytes */
        {"a\xed\xa0\x80z", "a\\xed\\xa0\\x80z"},          /* a surrogate, U+D800 */
        {"a\xf4\x90\x80\x80z", "a\\xf4\\x90\\x80\\x80z"}, /* above U+10FFFF */
        {"a\xf5\xfe\xffz", "a\\xf5\\xfe\\xffz"},          /* bytes never in UTF-8 */
        {"a\xe2\x82z", "a\\xe2\\x82z"},                   /* cut short by ASCII */
        {"a\xe2\x82", "a\\xe2\\x82"},                     /* cut short by the end */
        {"a\xc3\xc3\xa9z", "a\\xc3\xc3\xa9z"},            /* cut short by a good character */
        {"\xc2\x85\x80", "\\xc2\\x85\\x80"},              /* a C1 control, then a stray byte */
    };
    char out[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        refex_log_escape(out, sizeof out, cases[i].in);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu: '%s', want '%s'", i, out, cases[i].want);
    }
}

/* The line and paragraph separators and the bidirectional controls are written out as
 * the \xNN of their UTF-8 bytes, like the C1 controls; their neighbours are kept. */
static void test_escape_separators_and_bidi(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"a\xe2\x80\xa8z", "a\\xe2\\x80\\xa8z"}, /* U+2028 LINE SEPARATOR */
        {"a\xe2\x80\xa9z", "a\\xe2\\x80\\xa9z"}, /* U+2029 PARAGRAPH SEPARATOR */
        {"a\xe2\x80\xaaz", "a\\xe2\\x80\\xaaz"}, /* U+202A LRE */
        {"a\xe2\x80\xabz", "a\\xe2\\x80\\xabz"}, /* U+202B RLE */
        {"a\xe2\x80\xacz", "a\\xe2\\x80\\xacz"}, /* U+202C PDF */
        {"a\xe2\x80\xadz", "a\\xe2\\x80\\xadz"}, /* U+202D LRO */
        {"a\xe2\x80\xaez", "a\\xe2\\x80\\xaez"}, /* U+202E RLO */
        {"a\xe2\x81\xa6z", "a\\xe2\\x81\\xa6z"}, /* U+2066 LRI */
        {"a\xe2\x81\xa7z", "a\\xe2\\x81\\xa7z"}, /* U+2067 RLI */
        {"a\xe2\x81\xa8z", "a\\xe2\\x81\\xa8z"}, /* U+2068 FSI */
        {"a\xe2\x81\xa9z", "a\\xe2\\x81\\xa9z"}, /* U+2069 PDI */
        {"a\xe2\x80\x8ez", "a\\xe2\\x80\\x8ez"}, /* U+200E LRM */
        {"a\xe2\x80\x8fz", "a\\xe2\\x80\\x8fz"}, /* U+200F RLM */
        {"a\xd8\x9cz", "a\\xd8\\x9cz"},          /* U+061C ARABIC LETTER MARK */
        /* Their neighbours stay: U+2027, U+202F, U+2065 (unassigned), U+206A, U+200D,
         * U+061B, and the Arabic and Hebrew letters themselves. */
        {"\xe2\x80\xa7\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa\xe2\x80\x8d\xd8\x9b",
         "\xe2\x80\xa7\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa\xe2\x80\x8d\xd8\x9b"},
        {"\xd8\xb3\xd7\x90", "\xd8\xb3\xd7\x90"},
        /* A filename-style spoof: the RLO is shown, so the line reads as it is. */
        {"invoice\xe2\x80\xae"
         "fdp.exe",
         "invoice\\xe2\\x80\\xaefdp.exe"},
    };
    char out[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        refex_log_escape(out, sizeof out, cases[i].in);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("case %zu: '%s', want '%s'", i, out, cases[i].want);
    }
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
    /* A multi-byte character, or the escape of one, is left out whole too. */
    assert_int_equal(refex_log_escape(out, sizeof out, "abc\xe2\x82\xac"), 3);
    assert_string_equal(out, "abc");
    assert_int_equal(refex_log_escape(out, sizeof out, "ab\xc3\xa9"), 4);
    assert_string_equal(out, "ab\xc3\xa9");
    assert_int_equal(refex_log_escape(out, sizeof out, "a\xe2\x80\xa8"), 1);
    assert_string_equal(out, "a");
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

static void log_levels(void)
{
    refex_log_set_level(REFEX_LOG_DEBUG);
    refex_log_debug("one %d", 1);
    refex_log_info("two");
    refex_log_warn("three");
    refex_log_error("four");
    refex_log_error("ALERT witness: five");
    refex_log_info("six %s", "ALERT not at the start");
    refex_log_set_level(REFEX_LOG_INFO);
}

/* On the journal's stream (JOURNAL_STREAM naming stderr's device and inode) every line
 * starts with its priority; on any other stream, with the time. */
static void test_journal_priorities(void **state)
{
    (void)state;
    char buf[4096], js[64];
    struct stat st;
    /* not the journal: JOURNAL_STREAM names another file */
    setenv("JOURNAL_STREAM", "1:1", 1);
    capture_stderr(log_levels, buf, sizeof buf);
    assert_null(strstr(buf, "<6>"));
    assert_non_null(strstr(buf, "Z refex[info] two\n"));
    /* the journal: capture_stderr's file is stderr; its dev:inode set before each line */
    char path[] = "/tmp/refex-log-journal-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0 && fstat(fd, &st) == 0);
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0 && dup2(fd, 2) == 2);
    assert_true(refex_log_to_journal());
    log_levels();
    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    close(fd);
    unlink(path);
    unsetenv("JOURNAL_STREAM");
    assert_string_equal(buf, "<7>refex[debug] one 1\n"
                             "<6>refex[info] two\n"
                             "<4>refex[warn] three\n"
                             "<3>refex[error] four\n"
                             "<1>refex[error] ALERT witness: five\n"
                             "<6>refex[info] six ALERT not at the start\n");
    assert_false(refex_log_to_journal());
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
        cmocka_unit_test(test_escape_invalid_utf8),
        cmocka_unit_test(test_escape_separators_and_bidi),
        cmocka_unit_test(test_escape_truncates_whole_escapes),
        cmocka_unit_test(test_log_line_is_one_line),
        cmocka_unit_test(test_journal_priorities),
        cmocka_unit_test(test_gate_bounds_and_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
