/* Tests for lib/checkpoint.c's memo of verified notes (refex_checkpoint_open_memo): it gives
 * what refex_checkpoint_open_any gives, skips the signature only for the same bytes under a
 * key still given, and so still refuses a changed or forged note, a note under a key rotated
 * away or revoked, and a note presented as another sender's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <sodium.h>

#include "checkpoint.h"

#define NAME  "refex/audit/midwifery"
#define OTHER "refex/audit/police"

static uint8_t pk_a[32], sk_a[64], pk_b[32], sk_b[64];

static int group_setup(void **state)
{
    (void)state;
    if (sodium_init() < 0)
        return -1;
    crypto_sign_keypair(pk_a, sk_a);
    crypto_sign_keypair(pk_b, sk_b);
    return 0;
}

/* A note of `size` by name, signed with sk; free() it. */
static char *note_of(const char *name, uint64_t size, const uint8_t sk[64])
{
    refex_checkpoint c;
    char *note = NULL;
    memset(&c, 0, sizeof c);
    snprintf(c.origin, sizeof c.origin, "%s", name);
    c.size = size;
    crypto_hash_sha256(c.root, (const uint8_t *)&size, sizeof size);
    assert_ok(refex_checkpoint_sign(&c, name, sk, &note));
    return note;
}

static int open_memo(refex_checkpoint_memo *m, const char *note, const char *name,
                     const uint8_t *k0, const uint8_t *k1, refex_checkpoint *c)
{
    const uint8_t *pks[2] = {k0, k1};
    return refex_checkpoint_open_memo(m, note, strlen(note), name, pks, (k0 != NULL) + (k1 != NULL),
                                      c);
}

static int slot_of(const refex_checkpoint_memo *m, const char *name)
{
    for (int i = 0; i < REFEX_CHECKPOINT_MEMO_SLOTS; i++)
        if (strcmp(m->slot[i].key_name, name) == 0)
            return i;
    return -1;
}

/* The first open verifies and keeps; the second is answered from the slot (shown by a mark
 * put in the kept result, which only a hit can return). */
static void test_same_note_hits(void **state)
{
    static refex_checkpoint_memo m;
    refex_checkpoint c, want;
    char *note = note_of(NAME, 7, sk_a);
    (void)state;
    assert_ok(refex_checkpoint_open(note, strlen(note), NAME, pk_a, &want));
    assert_ok(open_memo(&m, note, NAME, pk_a, NULL, &c));
    assert_memory_equal(&c, &want, sizeof c);
    int i = slot_of(&m, NAME);
    assert_true(i >= 0);
    assert_memory_equal(m.slot[i].pk, pk_a, 32);
    m.slot[i].c.size = 12345; /* the mark */
    assert_ok(open_memo(&m, note, NAME, pk_a, NULL, &c));
    assert_int_equal(c.size, 12345);
    /* Under the key pair of a rotation overlap, with the kept key second: still a hit. */
    assert_ok(open_memo(&m, note, NAME, pk_b, pk_a, &c));
    assert_int_equal(c.size, 12345);
    free(note);
}

/* A changed note is checked in full: a forged or tampered one is refused and the slot keeps
 * the last good note; a new genuine one replaces it. */
static void test_changed_note_checked(void **state)
{
    static refex_checkpoint_memo m;
    refex_checkpoint c;
    char *note = note_of(NAME, 7, sk_a), *next = note_of(NAME, 8, sk_a);
    char *forged = note_of(NAME, 9, sk_b); /* right name, wrong key */
    (void)state;
    assert_ok(open_memo(&m, note, NAME, pk_a, NULL, &c));
    int i = slot_of(&m, NAME);

    char *tampered = strdup(note);
    assert_non_null(tampered);
    tampered[strlen(NAME) + 1] = '9'; /* the size line: 7 -> 9, signature unchanged */
    assert_rc(open_memo(&m, tampered, NAME, pk_a, NULL, &c), REFEX_E_BAD_SIGNATURE);
    assert_rc(open_memo(&m, forged, NAME, pk_a, NULL, &c), REFEX_E_BAD_SIGNATURE);
    assert_rc(open_memo(&m, "not a note", NAME, pk_a, NULL, &c), REFEX_E_MALFORMED);
    assert_string_equal(m.slot[i].note, note); /* untouched by the failures */

    assert_ok(open_memo(&m, next, NAME, pk_a, NULL, &c));
    assert_int_equal(c.size, 8);
    assert_int_equal(slot_of(&m, NAME), i); /* one slot per name */
    assert_int_equal(m.slot[i].len, strlen(next));
    assert_ok(open_memo(&m, note, NAME, pk_a, NULL, &c)); /* the older one: checked again */
    assert_int_equal(c.size, 7);
    free(tampered);
    free(forged);
    free(next);
    free(note);
}

/* The key it verified under is no longer given (rotated away after the overlap, or the
 * agency revoked and its key withdrawn): the kept note misses and fails in full. */
static void test_key_withdrawn(void **state)
{
    static refex_checkpoint_memo m;
    refex_checkpoint c;
    char *note = note_of(NAME, 7, sk_a);
    (void)state;
    assert_ok(open_memo(&m, note, NAME, pk_b, pk_a, &c)); /* in the overlap: old key verifies */
    int i = slot_of(&m, NAME);
    assert_memory_equal(m.slot[i].pk, pk_a, 32);
    assert_rc(open_memo(&m, note, NAME, pk_b, NULL, &c), REFEX_E_BAD_SIGNATURE);
    assert_rc(open_memo(&m, note, NAME, NULL, NULL, &c), REFEX_E_BAD_SIGNATURE); /* no keys */
    assert_string_equal(m.slot[i].note, note); /* still kept: valid again if A comes back */
    assert_ok(open_memo(&m, note, NAME, pk_a, NULL, &c));
    free(note);
}

/* The same bytes presented as another sender's are not that sender's. */
static void test_other_name(void **state)
{
    static refex_checkpoint_memo m;
    refex_checkpoint c;
    char *note = note_of(NAME, 7, sk_a);
    (void)state;
    assert_ok(open_memo(&m, note, NAME, pk_a, NULL, &c));
    assert_rc(open_memo(&m, note, OTHER, pk_a, NULL, &c), REFEX_E_BAD_SIGNATURE);
    assert_int_equal(slot_of(&m, OTHER), -1);
    assert_rc(open_memo(&m, note, "", pk_a, NULL, &c), REFEX_E_INVAL);
    assert_rc(open_memo(&m, note, "a b", pk_a, NULL, &c), REFEX_E_INVAL);
    free(note);
}

/* More names than slots: the oldest slot is taken, and every answer stays right. */
static void test_many_senders(void **state)
{
    static refex_checkpoint_memo m;
    enum { N = REFEX_CHECKPOINT_MEMO_SLOTS + 3 };
    char names[N][32], *notes[N];
    refex_checkpoint c;
    (void)state;
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < N; i++) {
            if (round == 0) {
                snprintf(names[i], sizeof names[i], "refex/audit/a%d", i);
                notes[i] = note_of(names[i], (uint64_t)i, i % 2 ? sk_a : sk_b);
            }
            assert_ok(open_memo(&m, notes[i], names[i], i % 2 ? pk_a : pk_b, NULL, &c));
            assert_int_equal(c.size, i);
            assert_rc(open_memo(&m, notes[i], names[i], i % 2 ? pk_b : pk_a, NULL, &c),
                      REFEX_E_BAD_SIGNATURE);
        }
    for (int i = 0; i < N; i++)
        free(notes[i]);
}

/* A note of body text (with its final newline) signed by (name, sk) as signed-note says,
 * built here so that the body can carry extension lines; malloc'd. */
static char *sign_body(const char *body, const char *name, const uint8_t sk[64])
{
    uint8_t h[32], raw[68];
    crypto_hash_sha256_state hs;
    crypto_hash_sha256_init(&hs);
    crypto_hash_sha256_update(&hs, (const uint8_t *)name, strlen(name));
    crypto_hash_sha256_update(&hs, (const uint8_t *)"\n\x01", 2);
    crypto_hash_sha256_update(&hs, sk + 32, 32);
    crypto_hash_sha256_final(&hs, h);
    memcpy(raw, h, 4);
    crypto_sign_detached(raw + 4, NULL, (const uint8_t *)body, strlen(body), sk);
    char b64[sodium_base64_ENCODED_LEN(68, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof b64, raw, sizeof raw, sodium_base64_VARIANT_ORIGINAL);
    size_t cap = strlen(body) + strlen(name) + sizeof b64 + 16;
    char *note = malloc(cap);
    assert_non_null(note);
    snprintf(note, cap, "%s\n\xe2\x80\x94 %s %s\n", body, name, b64);
    return note;
}

/* Notes too long to keep are verified every time and never kept; bad arguments are typed. */
static void test_limits_and_arguments(void **state)
{
    static refex_checkpoint_memo m;
    refex_checkpoint c;
    char body[REFEX_CHECKPOINT_MEMO_NOTE + 200];
    (void)state;
    int n =
        snprintf(body, sizeof body, "%s\n5\nH42NJGsTfTI4bgj7HvgrwuFMXOJVzJa0oq+fCsjU6r4=\n", NAME);
    memset(body + n, 'x', sizeof body - (size_t)n - 2); /* one long extension line */
    body[sizeof body - 2] = '\n';
    body[sizeof body - 1] = '\0';
    char *big = sign_body(body, NAME, sk_a);
    assert_true(strlen(big) > REFEX_CHECKPOINT_MEMO_NOTE);
    for (int i = 0; i < 2; i++) {
        assert_ok(open_memo(&m, big, NAME, pk_a, NULL, &c));
        assert_int_equal(c.size, 5);
        assert_int_equal(slot_of(&m, NAME), -1);
        assert_rc(open_memo(&m, big, NAME, pk_b, NULL, &c), REFEX_E_BAD_SIGNATURE);
    }
    free(big);

    char *note = note_of(NAME, 1, sk_a);
    const uint8_t *pks[1] = {pk_a};
    assert_rc(refex_checkpoint_open_memo(NULL, note, strlen(note), NAME, pks, 1, &c),
              REFEX_E_INVAL);
    assert_rc(refex_checkpoint_open_memo(&m, NULL, 0, NAME, pks, 1, &c), REFEX_E_INVAL);
    assert_rc(refex_checkpoint_open_memo(&m, note, strlen(note), NULL, pks, 1, &c), REFEX_E_INVAL);
    assert_rc(refex_checkpoint_open_memo(&m, note, strlen(note), NAME, pks, 1, NULL),
              REFEX_E_INVAL);
    assert_rc(refex_checkpoint_open_memo(&m, note, strlen(note) - 1, NAME, pks, 1, &c),
              REFEX_E_MALFORMED); /* truncated */
    assert_int_equal(slot_of(&m, NAME), -1);
    assert_ok(refex_checkpoint_open_memo(&m, note, strlen(note), NAME, pks, 1, &c));
    assert_true(slot_of(&m, NAME) >= 0);
    /* A prefix of a kept note is not the kept note. */
    assert_rc(refex_checkpoint_open_memo(&m, note, strlen(note) - 1, NAME, pks, 1, &c),
              REFEX_E_MALFORMED);
    free(note);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_note_hits), cmocka_unit_test(test_changed_note_checked),
        cmocka_unit_test(test_key_withdrawn),  cmocka_unit_test(test_other_name),
        cmocka_unit_test(test_many_senders),   cmocka_unit_test(test_limits_and_arguments),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
