/* Tests for lib/checkpoint.c: exact C2SP text for fixed keys (cross-checked with an independent
 * Ed25519 implementation), a real transparency-dev checkpoint with a real witness cosignature,
 * and refusal of forged, tampered, truncated, oversized and malformed notes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <sodium.h>

#include "checkpoint.h"
#include "util.h"

/* U+2014 em dash, which opens every signature line. */
#define EM "\xe2\x80\x94"

#define LOG_NAME "refex.example/audit/midwifery"
#define WIT_NAME "refex.example/broker/witness"

/* Log key from seed 00..1f, witness key from seed 20..3f; checkpoint of size 42 whose root
 * is SHA-256("refex"). The expected notes were produced by Python's `cryptography` Ed25519
 * and hashlib from the C2SP specs, not by this code. */
static const char KAT_SIGNED[] = LOG_NAME
    "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n\n" EM " " LOG_NAME
    " b71hS2uRqm6b+D4hdGvH1fRf5WnDXVhnYIEi/4vBHP3NEgnM9HNz0DqKHiZwV84k7KXXgoX87NqHCjLNLh2DyuRsq"
    "go=\n";
static const char KAT_COSIG_LINE[] =
    EM " " WIT_NAME " kfAvowAAAABlU/EAn0w0a3xqtwZa7CIT3YSJpMSA6RARFLRUiRlzP4Q8nc0iYt4h8m8Xu2fOe/"
       "XGpFylLg+xcSSm+L9EQUf4QYHZCQ==\n";
#define KAT_TS 1700000000u

/* A real checkpoint of transparency.dev's arche2025h1 staging CT log (Ed25519 key type 0x01)
 * with an RFC 6962 signature by the same name and four witness cosignatures, one of them by
 * remora.n621.de (cosignature/v1, type 0x04); keys from their published vkeys. */
static const char REAL_NOTE[] =
    "arche2025h1.staging.ct.transparency.dev\n"
    "1432088532\n"
    "U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
    "\n" EM " arche2025h1.staging.ct.transparency.dev "
    "zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFb"
    "on5Ch9MNL5zRNZ55lvGt0=\n" EM " arche2025h1.staging.ct.transparency.dev "
    "ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/"
    "27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=\n" EM
    " transparency.dev/DEV:witness-little-garden "
    "2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY"
    "096st5BQ==\n" EM " witness1.smartit.nu/witness1 "
    "pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0Xwz"
    "dZsDsUAQ==\n" EM " remora.n621.de "
    "2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB"
    "0DrAWfBw==\n" EM " witness.stagemole.eu "
    "Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe"
    "/TmN9DAg==\n";
#define REAL_LOG      "arche2025h1.staging.ct.transparency.dev"
#define REAL_LOG_PK   "4d2f1e6946092fcf74df1bd8e68698aa6b2c8f0728cf9d278ef6c60158875e5f"
#define REAL_WIT      "remora.n621.de"
#define REAL_WIT_PK   "ebcdeb78e7fdb2ef9227b2c1ef11e94600b55b4d6d9a57877e31ee89e59adc36"
#define REAL_WIT_TS   1779573024u
#define REAL_ROOT_B64 "U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro="

static uint8_t log_pk[32], log_sk[64], wit_pk[32], wit_sk[64];
static uint8_t other_pk[32], other_sk[64];
static refex_checkpoint kat_cp;

static int group_setup(void **state)
{
    uint8_t seed[32];
    (void)state;
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)i;
    crypto_sign_seed_keypair(log_pk, log_sk, seed);
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(32 + i);
    crypto_sign_seed_keypair(wit_pk, wit_sk, seed);
    crypto_sign_keypair(other_pk, other_sk);

    memset(&kat_cp, 0, sizeof kat_cp);
    strcpy(kat_cp.origin, LOG_NAME);
    kat_cp.size = 42;
    crypto_hash_sha256(kat_cp.root, (const uint8_t *)"refex", 5);
    return 0;
}

/* key ID = SHA-256(name || 0x0A || type || pk)[:4], computed here in one shot, apart from the
 * library's code. */
static void ref_key_id(const char *name, uint8_t type, const uint8_t pk[32], uint8_t id[4])
{
    uint8_t buf[600], h[32];
    size_t n = strlen(name);
    assert_true(n + 34 <= sizeof buf);
    memcpy(buf, name, n);
    buf[n] = '\n';
    buf[n + 1] = type;
    memcpy(buf + n + 2, pk, 32);
    crypto_hash_sha256(h, buf, n + 34);
    memcpy(id, h, 4);
}

static void hex32(const char *hex, uint8_t out[32])
{
    assert_ok(refex_hex_decode(out, 32, hex));
}

/* "— name base64(raw)\n" into a malloc'd string. */
static char *sig_line(const char *name, const uint8_t *raw, size_t raw_len)
{
    size_t b64len = sodium_base64_ENCODED_LEN(raw_len, sodium_base64_VARIANT_ORIGINAL);
    size_t cap = strlen(name) + b64len + 16;
    char *b64 = malloc(b64len), *s = malloc(cap);
    assert_non_null(b64);
    assert_non_null(s);
    sodium_bin2base64(b64, b64len, raw, raw_len, sodium_base64_VARIANT_ORIGINAL);
    snprintf(s, cap, EM " %s %s\n", name, b64);
    free(b64);
    return s;
}

/* A note of arbitrary text signed by (name, sk) the way signed-note says, built here without
 * the library, so that bodies the library would never emit can be tested. malloc'd. */
static char *sign_text(const char *text, const char *name, const uint8_t sk[64])
{
    uint8_t raw[68];
    size_t tlen = strlen(text);
    ref_key_id(name, 0x01, sk + 32, raw);
    crypto_sign_detached(raw + 4, NULL, (const uint8_t *)text, tlen, sk);
    char *line = sig_line(name, raw, sizeof raw);
    char *note = malloc(tlen + 1 + strlen(line) + 1);
    assert_non_null(note);
    memcpy(note, text, tlen);
    note[tlen] = '\n';
    strcpy(note + tlen + 1, line);
    free(line);
    return note;
}

/* A cosignature/v1 line over text at ts by (name, sk), built without the library. */
static char *cosig_line(const char *text, const char *name, const uint8_t sk[64], uint64_t ts)
{
    uint8_t raw[76];
    char prefix[64];
    size_t tlen = strlen(text);
    int k = snprintf(prefix, sizeof prefix, "cosignature/v1\ntime %llu\n", (unsigned long long)ts);
    uint8_t *msg = malloc((size_t)k + tlen);
    assert_non_null(msg);
    memcpy(msg, prefix, (size_t)k);
    memcpy(msg + k, text, tlen);
    ref_key_id(name, 0x04, sk + 32, raw);
    for (int i = 0; i < 8; i++)
        raw[4 + i] = (uint8_t)(ts >> (56 - 8 * i));
    crypto_sign_detached(raw + 12, NULL, msg, (size_t)k + tlen, sk);
    free(msg);
    return sig_line(name, raw, sizeof raw);
}

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    assert_non_null(s);
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static int open_str(const char *note, const char *name, const uint8_t pk[32], refex_checkpoint *c)
{
    return refex_checkpoint_open(note, strlen(note), name, pk, c);
}

static int open_log(const char *note)
{
    refex_checkpoint c;
    return open_str(note, LOG_NAME, log_pk, &c);
}

/* Replaces the first occurrence of from by to; malloc'd. */
static char *replace(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    assert_non_null(at);
    size_t lf = strlen(from), lt = strlen(to), ls = strlen(s);
    char *r = malloc(ls - lf + lt + 1);
    assert_non_null(r);
    memcpy(r, s, (size_t)(at - s));
    memcpy(r + (at - s), to, lt);
    strcpy(r + (at - s) + lt, at + lf);
    return r;
}

static void test_key_id_reference(void **state)
{
    uint8_t pk[32], id[4];
    (void)state;
    /* Published vkeys carry name+hex key ID+base64(type || pk): golang.org/x/mod/sumdb/note
     * (PeterNeumann+c74f20a3), the arche log and the remora witness. */
    static const uint8_t peter[4] = {0xc7, 0x4f, 0x20, 0xa3}, arche[4] = {0xba, 0x2f, 0x06, 0xc0},
                         remora[4] = {0xda, 0x77, 0xad, 0xe7};
    hex32("1a5cd907143c384c41e830c5bce12aa8817ec5649aaabf2c31388b35b2d744d6", pk);
    ref_key_id("PeterNeumann", 0x01, pk, id);
    assert_memory_equal(id, peter, 4);
    hex32(REAL_LOG_PK, pk);
    ref_key_id(REAL_LOG, 0x01, pk, id);
    assert_memory_equal(id, arche, 4);
    hex32(REAL_WIT_PK, pk);
    ref_key_id(REAL_WIT, 0x04, pk, id);
    assert_memory_equal(id, remora, 4);
}

static void test_body(void **state)
{
    refex_checkpoint c = kat_cp;
    char *body = NULL;
    (void)state;
    assert_ok(refex_checkpoint_body(&c, &body));
    assert_string_equal(body, LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n");
    free(body);

    c.size = 0;
    memset(c.root, 0, sizeof c.root);
    assert_ok(refex_checkpoint_body(&c, &body));
    assert_string_equal(body, LOG_NAME "\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
    free(body);
    c.size = UINT64_MAX;
    assert_ok(refex_checkpoint_body(&c, &body));
    assert_non_null(strstr(body, "\n18446744073709551615\n"));
    free(body);

    /* Origins refex will not emit. */
    static const char *bad[] = {"", "a b", "a+b", "a\nb", "caf\xc3\xa9", "tab\there", "del\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        c = kat_cp;
        strcpy(c.origin, bad[i]);
        body = (char *)1;
        assert_rc(refex_checkpoint_body(&c, &body), REFEX_E_INVAL);
        assert_null(body);
    }
    c = kat_cp;
    memset(c.origin, 'a', sizeof c.origin); /* no NUL */
    assert_rc(refex_checkpoint_body(&c, &body), REFEX_E_INVAL);
    c.origin[255] = '\0'; /* 255 bytes is the maximum */
    assert_ok(refex_checkpoint_body(&c, &body));
    free(body);
    assert_rc(refex_checkpoint_body(NULL, &body), REFEX_E_INVAL);
    assert_rc(refex_checkpoint_body(&c, NULL), REFEX_E_INVAL);
}

static void test_sign_known_answer(void **state)
{
    char *note = NULL;
    (void)state;
    assert_ok(refex_checkpoint_sign(&kat_cp, LOG_NAME, log_sk, &note));
    assert_string_equal(note, KAT_SIGNED);
    free(note);
}

/* The layout, taken apart by hand: body lines, blank line, em dash, name, base64 of
 * key ID || 64-byte signature over exactly the body. */
static void test_sign_layout(void **state)
{
    char *note = NULL;
    uint8_t raw[80], id[4];
    size_t raw_len = 0;
    (void)state;
    assert_ok(refex_checkpoint_sign(&kat_cp, LOG_NAME, log_sk, &note));

    const char *body_end = strstr(note, "\n\n");
    assert_non_null(body_end);
    size_t body_len = (size_t)(body_end - note) + 1;
    assert_int_equal(body_len,
                     strlen(LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n"));
    assert_memory_equal(note, LOG_NAME "\n42\n", strlen(LOG_NAME "\n42\n"));

    const char *line = body_end + 2;
    assert_memory_equal(line, "\xe2\x80\x94\x20", 4);
    line += 4;
    assert_memory_equal(line, LOG_NAME " ", strlen(LOG_NAME) + 1);
    const char *b64 = line + strlen(LOG_NAME) + 1;
    const char *nl = strchr(b64, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0'); /* exactly one signature line, newline-terminated */
    assert_int_equal(sodium_base642bin(raw, sizeof raw, b64, (size_t)(nl - b64), NULL, &raw_len,
                                       NULL, sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(raw_len, 68);
    ref_key_id(LOG_NAME, 0x01, log_pk, id);
    assert_memory_equal(raw, id, 4);
    assert_int_equal(crypto_sign_verify_detached(raw + 4, (const uint8_t *)note, body_len, log_pk),
                     0);
    free(note);
}

static void test_round_trip(void **state)
{
    refex_checkpoint in, out;
    char *note = NULL;
    (void)state;
    static const uint64_t sizes[] = {0, 1, 2, 9, 10, 1000000007, UINT64_MAX - 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        memset(&in, 0, sizeof in);
        strcpy(in.origin, "refex.example/audit/social-care");
        in.size = sizes[i];
        randombytes_buf(in.root, sizeof in.root);
        assert_ok(refex_checkpoint_sign(&in, "refex.example/audit/social-care", other_sk, &note));
        assert_ok(open_str(note, "refex.example/audit/social-care", other_pk, &out));
        assert_string_equal(out.origin, in.origin);
        assert_true(out.size == in.size);
        assert_memory_equal(out.root, in.root, 32);
        free(note);
    }

    /* Longest origin, and a key name that differs from the origin. */
    memset(&in, 0, sizeof in);
    memset(in.origin, 'o', REFEX_CHECKPOINT_ORIGIN_MAX);
    assert_ok(refex_checkpoint_sign(&in, "k\xc3\xa9y", log_sk, &note));
    assert_ok(open_str(note, "k\xc3\xa9y", log_pk, &out));
    assert_int_equal(strlen(out.origin), REFEX_CHECKPOINT_ORIGIN_MAX);
    free(note);

    /* Key names that signed-note forbids. */
    static const char *bad_names[] = {"",
                                      "a b",
                                      "a+b",
                                      "a\nb",
                                      "a\xc2\xa0"
                                      "b",
                                      "a\xe3\x80\x80",
                                      "\xff"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        assert_rc(refex_checkpoint_sign(&kat_cp, bad_names[i], log_sk, &note), REFEX_E_INVAL);
        assert_null(note);
        assert_rc(open_str(KAT_SIGNED, bad_names[i], log_pk, &out), REFEX_E_INVAL);
    }
    assert_rc(refex_checkpoint_sign(NULL, LOG_NAME, log_sk, &note), REFEX_E_INVAL);
    assert_rc(refex_checkpoint_open(NULL, 0, LOG_NAME, log_pk, &out), REFEX_E_INVAL);
}

/* A real C2SP checkpoint from the wild, verified by its published keys. */
static void test_real_checkpoint(void **state)
{
    uint8_t pk[32], wpk[32], root[32];
    size_t root_len = 0;
    uint64_t ts = 0;
    refex_checkpoint c;
    (void)state;
    hex32(REAL_LOG_PK, pk);
    hex32(REAL_WIT_PK, wpk);
    assert_ok(open_str(REAL_NOTE, REAL_LOG, pk, &c));
    assert_string_equal(c.origin, REAL_LOG);
    assert_true(c.size == 1432088532u);
    assert_int_equal(sodium_base642bin(root, 32, REAL_ROOT_B64, strlen(REAL_ROOT_B64), NULL,
                                       &root_len, NULL, sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_memory_equal(c.root, root, 32);

    assert_ok(
        refex_checkpoint_verify_cosignature(REAL_NOTE, strlen(REAL_NOTE), REAL_WIT, wpk, &ts));
    assert_true(ts == REAL_WIT_TS);

    /* The witness key is not the log key and vice versa (key IDs differ by type byte). */
    assert_rc(open_str(REAL_NOTE, REAL_WIT, wpk, &c), REFEX_E_BAD_SIGNATURE);
    assert_rc(refex_checkpoint_verify_cosignature(REAL_NOTE, strlen(REAL_NOTE), REAL_LOG, pk, &ts),
              REFEX_E_BAD_SIGNATURE);

    /* One changed digit of the size breaks both. */
    char *t = replace(REAL_NOTE, "\n1432088532\n", "\n1432088533\n");
    assert_rc(open_str(t, REAL_LOG, pk, &c), REFEX_E_BAD_SIGNATURE);
    assert_rc(refex_checkpoint_verify_cosignature(t, strlen(t), REAL_WIT, wpk, &ts),
              REFEX_E_BAD_SIGNATURE);
    free(t);
}

static void test_wrong_key(void **state)
{
    refex_checkpoint c;
    (void)state;
    assert_rc(open_str(KAT_SIGNED, LOG_NAME, other_pk, &c), REFEX_E_BAD_SIGNATURE);
    assert_rc(open_str(KAT_SIGNED, WIT_NAME, log_pk, &c), REFEX_E_BAD_SIGNATURE);
    assert_rc(open_str(KAT_SIGNED, LOG_NAME "x", log_pk, &c), REFEX_E_BAD_SIGNATURE);
    assert_string_equal(c.origin, ""); /* nothing filled in on failure */
    assert_ok(open_str(KAT_SIGNED, LOG_NAME, log_pk, &c));
}

static void test_tampered(void **state)
{
    (void)state;
    static const struct {
        const char *from, *to;
    } edits[] = {
        {"\n42\n", "\n43\n"},
        {"\n42\n", "\n4\n"},
        {"\nH42N", "\nI42N"},              /* root, still 32 bytes */
        {"midwifery\n", "midwiferz\n"},    /* origin */
        {"midwifery\n", "social-care\n"},  /* origin */
        {"U6r4=\n", "U6r4=\nextension\n"}, /* an added extension line */
        {"b71hS2uRqm6b", "b71hS2uRqm6c"},  /* signature bytes */
        {"b71h", "b71i"},                  /* key ID: no longer "by that key" */
    };
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        char *t = replace(KAT_SIGNED, edits[i].from, edits[i].to);
        assert_rc(open_log(t), REFEX_E_BAD_SIGNATURE);
        free(t);
    }

    /* A second, bad line by the same key rejects the note even after a good one. */
    char *bad = replace(KAT_SIGNED, "b71hS2uRqm6b", "b71hS2uRqm6c");
    const char *bad_line = strstr(bad, EM);
    char *two = concat(KAT_SIGNED, bad_line);
    assert_rc(open_log(two), REFEX_E_BAD_SIGNATURE);
    free(two);
    free(bad);

    /* Every single-byte change is refused, one way or the other. */
    size_t len = strlen(KAT_SIGNED);
    char *m = malloc(len);
    assert_non_null(m);
    for (size_t i = 0; i < len; i++) {
        refex_checkpoint c;
        memcpy(m, KAT_SIGNED, len);
        m[i] ^= 0x01;
        int rc = refex_checkpoint_open(m, len, LOG_NAME, log_pk, &c);
        if (rc != REFEX_E_BAD_SIGNATURE && rc != REFEX_E_MALFORMED)
            fail_msg("byte %zu: %s", i, refex_errname(rc));
    }
    free(m);
}

static void test_extension_lines(void **state)
{
    refex_checkpoint c;
    (void)state;
    char *note = sign_text(
        LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\next one\n\xe2\x9c\x93\n",
        LOG_NAME, log_sk);
    assert_ok(open_str(note, LOG_NAME, log_pk, &c));
    assert_string_equal(c.origin, LOG_NAME);
    assert_true(c.size == 42);
    assert_memory_equal(c.root, kat_cp.root, 32);
    char *t = replace(note, "ext one", "ext two");
    assert_rc(open_log(t), REFEX_E_BAD_SIGNATURE);
    free(t);
    free(note);

    /* Origins the spec allows but refex does not emit are still read. */
    note = sign_text("a b+c \xc3\xa9\n0\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n", LOG_NAME,
                     log_sk);
    assert_ok(open_str(note, LOG_NAME, log_pk, &c));
    assert_string_equal(c.origin, "a b+c \xc3\xa9");
    free(note);
}

static void test_unknown_signatures(void **state)
{
    uint8_t junk[200];
    (void)state;
    memset(junk, 0xab, sizeof junk);
    /* Same name, other key ID (as a log's RFC 6962 signature would be); other names; odd
     * lengths; a cosignature by the log key. */
    char *l1 = sig_line(LOG_NAME, junk, 5);
    char *l2 = sig_line("someone.else/key", junk, sizeof junk);
    char *l3 = sig_line("x", junk, 68);
    char *l4 = cosig_line(LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n", LOG_NAME,
                          log_sk, 5);
    const char *body_end = strstr(KAT_SIGNED, EM);
    size_t head = (size_t)(body_end - KAT_SIGNED);
    char *note = malloc(strlen(KAT_SIGNED) + strlen(l1) + strlen(l2) + strlen(l3) + strlen(l4) + 1);
    assert_non_null(note);
    memcpy(note, KAT_SIGNED, head);
    note[head] = '\0';
    strcat(note, l1);
    strcat(note, l2);
    strcat(note, body_end); /* the real line in the middle */
    strcat(note, l3);
    strcat(note, l4);
    assert_ok(open_log(note));

    /* A note with only unknown signatures is not signed by the log. */
    char *only = concat(LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n\n", l2);
    assert_rc(open_log(only), REFEX_E_BAD_SIGNATURE);
    free(only);
    free(note);
    free(l1);
    free(l2);
    free(l3);
    free(l4);
}

static void expect_malformed(const char *note, size_t len)
{
    refex_checkpoint c;
    uint64_t ts;
    char *out = NULL;
    assert_rc(refex_checkpoint_open(note, len, LOG_NAME, log_pk, &c), REFEX_E_MALFORMED);
    assert_rc(refex_checkpoint_verify_cosignature(note, len, WIT_NAME, wit_pk, &ts),
              REFEX_E_MALFORMED);
    if (memchr(note, '\0', len) == NULL && len <= REFEX_CHECKPOINT_NOTE_MAX) {
        char *s = malloc(len + 1);
        assert_non_null(s);
        memcpy(s, note, len);
        s[len] = '\0';
        assert_rc(refex_checkpoint_cosign(s, WIT_NAME, wit_sk, 1, &out), REFEX_E_MALFORMED);
        assert_null(out);
        free(s);
    }
}

static void expect_malformed_str(const char *note)
{
    expect_malformed(note, strlen(note));
}

/* Bodies that are not checkpoints, each correctly signed so only the body is at fault. */
static void test_malformed_bodies(void **state)
{
    (void)state;
    static const char *bodies[] = {
        LOG_NAME "\n007\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
        LOG_NAME "\n00\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
        LOG_NAME "\n-1\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
        LOG_NAME "\n+1\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
        LOG_NAME "\n 1\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
        LOG_NAME "\n1 \nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
        LOG_NAME "\n0x10\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
        LOG_NAME "\n18446744073709551616\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
        LOG_NAME "\n99999999999999999999\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
        LOG_NAME "\n100000000000000000000\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
        LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6g==\n",     /* 31 bytes */
        LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4AAA==\n", /* 34 bytes */
        LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4\n",      /* no padding */
        LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r5=\n",     /* stray bits */
        LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq-fCsjU6r4=\n",     /* URL alphabet */
        LOG_NAME "\n42\n1f8d8d246b137d32386e08fb1ef82bc2e14c5ce255cc96b4a2af9f0ac8d4eabe\n",
        LOG_NAME "\n42\n",                                                      /* two lines */
        LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n\next\n", /* empty line */
        "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",                 /* no origin */
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        char *note = sign_text(bodies[i], LOG_NAME, log_sk);
        expect_malformed_str(note);
        free(note);
    }

    /* The largest size parses; an origin of 256 bytes does not. */
    char *note =
        sign_text(LOG_NAME "\n18446744073709551615\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
                  LOG_NAME, log_sk);
    refex_checkpoint c;
    assert_ok(open_str(note, LOG_NAME, log_pk, &c));
    assert_true(c.size == UINT64_MAX);
    free(note);
    char text[400];
    memset(text, 'o', 256);
    strcpy(text + 256, "\n1\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n");
    note = sign_text(text, LOG_NAME, log_sk);
    expect_malformed_str(note);
    free(note);
}

static void test_malformed_notes(void **state)
{
    (void)state;
    const char *sig = strstr(KAT_SIGNED, EM);
    size_t head = (size_t)(sig - KAT_SIGNED); /* body + blank line */
    char buf[1024];

    /* No blank line between body and signature. */
    memcpy(buf, KAT_SIGNED, head - 1);
    strcpy(buf + head - 1, sig);
    expect_malformed_str(buf);
    /* No signature at all; body only; body and blank line only. */
    memcpy(buf, KAT_SIGNED, head);
    buf[head] = '\0';
    expect_malformed_str(buf);
    buf[head - 1] = '\0';
    expect_malformed_str(buf);
    /* Signature line not newline-terminated, or followed by an empty or a foreign line. */
    expect_malformed(KAT_SIGNED, strlen(KAT_SIGNED) - 1);
    char *t = concat(KAT_SIGNED, "\n");
    expect_malformed_str(t);
    free(t);
    t = concat(KAT_SIGNED, "Unexpected line.\n");
    expect_malformed_str(t);
    free(t);

    static const struct {
        const char *from, *to;
    } edits[] = {
        {EM " ", "- "},                                /* hyphen, not em dash */
        {EM " ", "\xe2\x80\x93 "},                     /* en dash */
        {EM " ", EM},                                  /* no space after the dash */
        {EM " ", EM "  "},                             /* empty name */
        {"midwifery b71h", "midwifery+x b71h"},        /* '+' in the name */
        {"midwifery b71h", "midwifery\xc2\xa0x b71h"}, /* Unicode space in the name */
        {"b71hS2uRq", "b71h!2uRq"},                    /* bad base64 */
        {"b71hS2uRq", "b71h S2uRq"},                   /* space in base64 */
        {"NLh2DyuRsqgo=\n", "NLh2DyuRsqgo\n"},         /* missing padding */
        {"NLh2DyuRsqgo=\n", "NLh2DyuRsqgo==\n"},       /* extra padding */
        {"midwifery "
         "b71hS2uRqm6b+D4hdGvH1fRf5WnDXVhnYIEi/4vBHP3NEgnM9HNz0DqKHiZwV84k7KXXgoX87NqHCjLN"
         "Lh2DyuRsqgo=\n",
         "midwifery \n"}, /* empty signature */
        {"midwifery "
         "b71hS2uRqm6b+D4hdGvH1fRf5WnDXVhnYIEi/4vBHP3NEgnM9HNz0DqKHiZwV84k7KXXgoX87NqHCjLN"
         "Lh2DyuRsqgo=\n",
         "midwifery b71hSw==\n"},                       /* 4 bytes: key ID only */
        {"midwifery b71h", "midwifery\tb71h"},          /* control character */
        {"\n42\n", "\n4\r2\n"},                         /* control character in body */
        {"midwifery\n", "midwifery\xc3\n"},             /* truncated UTF-8 */
        {"midwifery\n", "midwifery\xc0\xaf\n"},         /* overlong UTF-8 */
        {"midwifery\n", "midwifery\xed\xa0\x80\n"},     /* surrogate */
        {"midwifery\n", "midwifery\xf4\x90\x80\x80\n"}, /* above U+10FFFF */
        {"midwifery\n", "midwifery\xff\n"},             /* not UTF-8 at all */
    };
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        t = replace(KAT_SIGNED, edits[i].from, edits[i].to);
        expect_malformed_str(t);
        free(t);
    }

    /* A NUL byte inside an otherwise valid note. */
    size_t len = strlen(KAT_SIGNED);
    memcpy(buf, KAT_SIGNED, len);
    buf[3] = '\0';
    expect_malformed(buf, len);

    /* Every proper prefix, and garbage. */
    for (size_t n = 0; n < len; n++)
        expect_malformed(KAT_SIGNED, n);
    expect_malformed_str("garbage");
    expect_malformed_str("\n\n");
    expect_malformed_str("\n\n\n");
    expect_malformed_str("a\n\n" EM " b AAAAAAA=\n"); /* not a checkpoint */
    uint8_t rnd[2048];
    for (int i = 0; i < 200; i++) {
        refex_checkpoint c;
        uint64_t ts;
        size_t n = randombytes_uniform(sizeof rnd);
        randombytes_buf(rnd, n);
        assert_rc(refex_checkpoint_open((const char *)rnd, n, LOG_NAME, log_pk, &c),
                  REFEX_E_MALFORMED);
        assert_rc(refex_checkpoint_verify_cosignature((const char *)rnd, n, WIT_NAME, wit_pk, &ts),
                  REFEX_E_MALFORMED);
    }
}

static void test_limits(void **state)
{
    (void)state;
    const char *sig = strstr(KAT_SIGNED, EM);
    size_t sig_len = strlen(sig), len = strlen(KAT_SIGNED);

    /* 100 signature lines are fine (the spec asks for at least 16); 101 are not. */
    char *note = malloc(len + 100 * sig_len + 1);
    assert_non_null(note);
    strcpy(note, KAT_SIGNED);
    for (int i = 1; i < 100; i++)
        strcat(note, sig);
    assert_ok(open_log(note));
    strcat(note, sig);
    expect_malformed_str(note);
    free(note);

    /* A valid note padded to just over 64 KiB with an extension line. */
    size_t big = REFEX_CHECKPOINT_NOTE_MAX + 1;
    char *text = malloc(big + 1);
    assert_non_null(text);
    const char *body = LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n";
    size_t bl = strlen(body);
    memcpy(text, body, bl);
    size_t ext = big - bl - 1 - sig_len - 1; /* extension line plus its newline */
    memset(text + bl, 'e', ext);
    text[bl + ext] = '\n';
    text[bl + ext + 1] = '\0';
    note = sign_text(text, LOG_NAME, log_sk);
    assert_int_equal(strlen(note), big);
    expect_malformed_str(note);
    /* One byte shorter is within the limit. */
    free(note);
    text[bl + ext - 1] = '\n';
    text[bl + ext] = '\0';
    note = sign_text(text, LOG_NAME, log_sk);
    assert_int_equal(strlen(note), REFEX_CHECKPOINT_NOTE_MAX);
    assert_ok(open_log(note));
    free(note);
    free(text);
}

static void test_cosign_known_answer(void **state)
{
    char *out = NULL;
    uint64_t ts = 0;
    (void)state;
    assert_ok(refex_checkpoint_cosign(KAT_SIGNED, WIT_NAME, wit_sk, KAT_TS, &out));
    char *want = concat(KAT_SIGNED, KAT_COSIG_LINE);
    assert_string_equal(out, want);
    free(want);

    assert_ok(refex_checkpoint_verify_cosignature(out, strlen(out), WIT_NAME, wit_pk, &ts));
    assert_true(ts == KAT_TS);
    assert_ok(open_log(out)); /* the log signature still opens */

    /* The cosignature line decodes to key ID (type 0x04) || timestamp || 64 bytes. */
    uint8_t raw[100], id[4];
    size_t raw_len = 0;
    const char *b64 = KAT_COSIG_LINE + 4 + strlen(WIT_NAME) + 1;
    assert_int_equal(sodium_base642bin(raw, sizeof raw, b64, strlen(b64) - 1, NULL, &raw_len, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(raw_len, 76);
    ref_key_id(WIT_NAME, 0x04, wit_pk, id);
    assert_memory_equal(raw, id, 4);
    static const uint8_t be_ts[8] = {0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00};
    assert_memory_equal(raw + 4, be_ts, 8);
    free(out);
}

static void test_cosign_verify(void **state)
{
    char *once = NULL, *twice = NULL, *both = NULL;
    uint64_t ts = 0;
    refex_checkpoint c;
    (void)state;
    assert_ok(refex_checkpoint_cosign(KAT_SIGNED, WIT_NAME, wit_sk, 1000, &once));
    /* Cosigning again replaces the witness's earlier line. */
    assert_ok(refex_checkpoint_cosign(once, WIT_NAME, wit_sk, 2000, &twice));
    assert_ok(refex_checkpoint_verify_cosignature(twice, strlen(twice), WIT_NAME, wit_pk, &ts));
    assert_true(ts == 2000);
    assert_null(strstr(strstr(twice, WIT_NAME " ") + 1, WIT_NAME " "));
    /* A second witness adds its own line; both verify. */
    assert_ok(refex_checkpoint_cosign(twice, "other.example/w", other_sk, 3000, &both));
    assert_ok(refex_checkpoint_verify_cosignature(both, strlen(both), WIT_NAME, wit_pk, &ts));
    assert_true(ts == 2000);
    assert_ok(
        refex_checkpoint_verify_cosignature(both, strlen(both), "other.example/w", other_pk, &ts));
    assert_true(ts == 3000);
    assert_ok(open_str(both, LOG_NAME, log_pk, &c));

    /* By another key, under another name, or the log's own signature taken for one. */
    assert_rc(refex_checkpoint_verify_cosignature(once, strlen(once), WIT_NAME, other_pk, &ts),
              REFEX_E_BAD_SIGNATURE);
    assert_rc(refex_checkpoint_verify_cosignature(once, strlen(once), "w2", wit_pk, &ts),
              REFEX_E_BAD_SIGNATURE);
    assert_rc(refex_checkpoint_verify_cosignature(once, strlen(once), LOG_NAME, log_pk, &ts),
              REFEX_E_BAD_SIGNATURE);
    /* A cosignature is not a log signature, even by the same key and name. */
    char *self = NULL;
    assert_ok(refex_checkpoint_cosign(KAT_SIGNED, LOG_NAME, log_sk, 5, &self));
    const char *self_line = strrchr(self, '\n');
    while (self_line > self && self_line[-1] != '\n')
        self_line--;
    char *only_cosig =
        concat(LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n\n", self_line);
    assert_rc(open_log(only_cosig), REFEX_E_BAD_SIGNATURE);
    assert_ok(
        refex_checkpoint_verify_cosignature(only_cosig, strlen(only_cosig), LOG_NAME, log_pk, &ts));
    free(only_cosig);
    free(self);

    /* The witness line moved onto another checkpoint, or its timestamp changed. */
    refex_checkpoint other = kat_cp;
    other.size = 43;
    char *note43 = NULL, *moved = NULL;
    assert_ok(refex_checkpoint_sign(&other, LOG_NAME, log_sk, &note43));
    moved = concat(note43, strstr(once, EM " " WIT_NAME));
    assert_ok(open_log(moved));
    assert_rc(refex_checkpoint_verify_cosignature(moved, strlen(moved), WIT_NAME, wit_pk, &ts),
              REFEX_E_BAD_SIGNATURE);
    free(moved);
    char *line = cosig_line(LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n",
                            WIT_NAME, wit_sk, 1001);
    char *forged = concat(KAT_SIGNED, line); /* valid for 1001 ... */
    assert_ok(refex_checkpoint_verify_cosignature(forged, strlen(forged), WIT_NAME, wit_pk, &ts));
    assert_true(ts == 1001);
    free(forged);
    /* ... but with the timestamp bytes of 1000 it does not verify. */
    char *once_line = strstr(once, EM " " WIT_NAME);
    forged = concat(KAT_SIGNED, line);
    memcpy(strstr(forged, EM " " WIT_NAME), once_line, 4 + strlen(WIT_NAME) + 1 + 16);
    assert_rc(refex_checkpoint_verify_cosignature(forged, strlen(forged), WIT_NAME, wit_pk, &ts),
              REFEX_E_BAD_SIGNATURE);
    free(forged);
    free(line);

    /* A correctly signed timestamp of 2^63 is out of range. */
    line = cosig_line(LOG_NAME "\n42\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n", WIT_NAME,
                      wit_sk, (uint64_t)1 << 63);
    forged = concat(KAT_SIGNED, line);
    assert_rc(refex_checkpoint_verify_cosignature(forged, strlen(forged), WIT_NAME, wit_pk, &ts),
              REFEX_E_BAD_SIGNATURE);
    free(forged);
    free(line);
    /* Wrong length for a cosignature by a known key. */
    uint8_t raw[68];
    ref_key_id(WIT_NAME, 0x04, wit_pk, raw);
    memset(raw + 4, 0, 64);
    line = sig_line(WIT_NAME, raw, sizeof raw);
    forged = concat(KAT_SIGNED, line);
    assert_rc(refex_checkpoint_verify_cosignature(forged, strlen(forged), WIT_NAME, wit_pk, &ts),
              REFEX_E_BAD_SIGNATURE);
    free(forged);
    free(line);
    /* No cosignature at all. */
    assert_rc(
        refex_checkpoint_verify_cosignature(KAT_SIGNED, strlen(KAT_SIGNED), WIT_NAME, wit_pk, &ts),
        REFEX_E_BAD_SIGNATURE);

    char *out = NULL;
    assert_rc(refex_checkpoint_cosign(KAT_SIGNED, WIT_NAME, wit_sk, (uint64_t)1 << 63, &out),
              REFEX_E_INVAL);
    assert_rc(refex_checkpoint_cosign(KAT_SIGNED, "bad name", wit_sk, 1, &out), REFEX_E_INVAL);
    assert_null(out);
    assert_ok(refex_checkpoint_cosign(KAT_SIGNED, WIT_NAME, wit_sk, INT64_MAX, &out));
    assert_ok(refex_checkpoint_verify_cosignature(out, strlen(out), WIT_NAME, wit_pk, &ts));
    assert_true(ts == INT64_MAX);
    free(out);

    free(note43);
    free(both);
    free(twice);
    free(once);
}

static void test_cosign_limits(void **state)
{
    (void)state;
    const char *sig = strstr(KAT_SIGNED, EM);
    char *note = malloc(strlen(KAT_SIGNED) + 100 * strlen(sig) + 1), *out = NULL;
    assert_non_null(note);
    strcpy(note, KAT_SIGNED);
    for (int i = 1; i < 99; i++)
        strcat(note, sig);
    assert_ok(refex_checkpoint_cosign(note, WIT_NAME, wit_sk, 1, &out)); /* 100 lines */
    char *again = NULL;
    assert_ok(refex_checkpoint_cosign(out, WIT_NAME, wit_sk, 2, &again)); /* replaced: still 100 */
    free(again);
    assert_rc(refex_checkpoint_cosign(out, "w2", other_sk, 1, &again), REFEX_E_TOO_BIG);
    assert_null(again);
    free(out);
    free(note);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_id_reference),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_sign_known_answer),
        cmocka_unit_test(test_sign_layout),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_real_checkpoint),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_extension_lines),
        cmocka_unit_test(test_unknown_signatures),
        cmocka_unit_test(test_malformed_bodies),
        cmocka_unit_test(test_malformed_notes),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_cosign_known_answer),
        cmocka_unit_test(test_cosign_verify),
        cmocka_unit_test(test_cosign_limits),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
