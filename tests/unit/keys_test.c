/* Tests for lib/keys.c: agency id rules, key generation, and key files: exact modes, no
 * overwrite (not even through a symlink), faithful round trip, and refusal of readable,
 * symlinked, foreign-owned, non-regular, mismatched or malformed secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keys.h"
#include "util.h"

static char tmpdir[4096];

static int group_setup(void **state)
{
    (void)state;
    testing_tmpdir(tmpdir, sizeof tmpdir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    testing_rmtree(tmpdir);
    return 0;
}

static void path_for(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

static unsigned file_mode(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        fail_msg("stat %s failed", path);
    assert_true(S_ISREG(st.st_mode));
    return (unsigned)(st.st_mode & 07777);
}

/* Creates keys for `id` and saves them under tmpdir/sub; returns the keys. */
static refex_keys *saved_keys(const char *sub, const char *id, char *secret, char *public,
                              size_t len)
{
    char dir[4200];
    refex_keys *k = NULL;
    assert_ok(refex_keys_new(id, "maternity", &k));
    path_for(dir, sizeof dir, sub);
    assert_ok(refex_keys_save(k, dir));
    snprintf(secret, len, "%s/%s.secret", dir, id);
    snprintf(public, len, "%s/%s.public", dir, id);
    return k;
}

/* Copies the key file src to dst (mode 0600), with `key`'s value replaced by value, or
 * with its line dropped if value is NULL. */
static void rewrite_field(const char *src, const char *dst, const char *key, const char *value)
{
    uint8_t *text = NULL;
    size_t len = 0, klen = strlen(key);
    assert_ok(refex_file_read(src, 1 << 16, &text, &len));
    char *out = malloc(len + 512);
    assert_non_null(out);
    size_t n = 0;
    int found = 0;
    for (char *line = (char *)text, *next; line && *line; line = next) {
        char *nl = strchr(line, '\n');
        next = nl ? nl + 1 : NULL;
        size_t ll = nl ? (size_t)(nl - line) + 1 : strlen(line);
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            found = 1;
            if (value)
                n += (size_t)sprintf(out + n, "%s = %s\n", key, value);
            continue;
        }
        memcpy(out + n, line, ll);
        n += ll;
    }
    assert_true(found);
    assert_ok(refex_file_write(dst, out, n, 0600));
    sodium_memzero(out, n);
    sodium_memzero(text, len);
    free(out);
    free(text);
}

static void assert_pub_equal(const refex_pubkeys *a, const refex_pubkeys *b)
{
    assert_string_equal(a->agency, b->agency);
    assert_string_equal(a->role, b->role);
    assert_memory_equal(a->sign_pk, b->sign_pk, 32);
    assert_memory_equal(a->enc_pk, b->enc_pk, 32);
    assert_memory_equal(a->transport_pk, b->transport_pk, 32);
}

static void test_id_valid(void **state)
{
    (void)state;
    char max[REFEX_ID_MAX], over[REFEX_ID_MAX + 1];
    memset(max, 'a', sizeof max - 1);
    max[sizeof max - 1] = 0;
    memset(over, 'a', sizeof over - 1);
    over[sizeof over - 1] = 0;
    assert_int_equal(strlen(max), 63);
    assert_int_equal(strlen(over), 64);

    static const char *const good[] = {"midwifery", "social-care", "a1",          "1a",
                                       "x",         "a-",          "trust-anchor"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!refex_id_valid(good[i]))
            fail_msg("'%s' should be a valid id", good[i]);
    assert_true(refex_id_valid(max));

    static const char *const bad[] = {"",    "-x",  "Upper",    "has space", "x/y", "a_b",
                                      "a.b", "a\n", "\xc3\xa9", "../x",      "a:b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (refex_id_valid(bad[i]))
            fail_msg("'%s' should be rejected", bad[i]);
    assert_false(refex_id_valid(over));
    assert_false(refex_id_valid(NULL));
}

static void test_new(void **state)
{
    (void)state;
    refex_keys *k = NULL, *k2 = NULL;
    assert_ok(refex_keys_new("midwifery", "maternity", &k));
    assert_non_null(k);
    assert_non_null(k->sk);
    assert_string_equal(k->pub.agency, "midwifery");
    assert_string_equal(k->pub.role, "maternity");

    /* Each public key belongs to its secret. */
    uint8_t pk[32];
    crypto_scalarmult_base(pk, k->sk->enc_sk);
    assert_memory_equal(pk, k->pub.enc_pk, 32);
    crypto_scalarmult_base(pk, k->sk->transport_sk);
    assert_memory_equal(pk, k->pub.transport_pk, 32);
    uint8_t sig[64];
    crypto_sign_detached(sig, NULL, (const uint8_t *)"m", 1, k->sk->sign_sk);
    assert_int_equal(crypto_sign_verify_detached(sig, (const uint8_t *)"m", 1, k->pub.sign_pk), 0);
    /* Three independent key pairs, fresh every time. */
    assert_memory_not_equal(k->pub.enc_pk, k->pub.transport_pk, 32);
    assert_ok(refex_keys_new("midwifery", "maternity", &k2));
    assert_memory_not_equal(k->pub.sign_pk, k2->pub.sign_pk, 32);
    assert_memory_not_equal(k->pub.enc_pk, k2->pub.enc_pk, 32);
    assert_memory_not_equal(k->pub.transport_pk, k2->pub.transport_pk, 32);

    refex_keys_destroy(&k2);
    refex_keys_destroy(&k);
    assert_null(k);
    refex_keys_destroy(&k);
    refex_keys_destroy(NULL);
}

static void test_new_invalid_id(void **state)
{
    (void)state;
    static refex_keys sentinel;
    refex_keys *k = &sentinel; /* keys_new must reset it to NULL */
    assert_rc(refex_keys_new("", "maternity", &k), REFEX_E_INVAL);
    assert_null(k);
    assert_rc(refex_keys_new("Midwifery", "maternity", &k), REFEX_E_INVAL);
    assert_rc(refex_keys_new("../etc", "maternity", &k), REFEX_E_INVAL);
    assert_rc(refex_keys_new(NULL, "maternity", &k), REFEX_E_INVAL);
    assert_rc(refex_keys_new("midwifery", "", &k), REFEX_E_INVAL);
    assert_rc(refex_keys_new("midwifery", "Has Space", &k), REFEX_E_INVAL);
    assert_null(k);
}

static void test_save_modes(void **state)
{
    (void)state;
    char secret[4300], public[4300];
    /* The modes are exact whatever the umask says. */
    static const mode_t umasks[] = {022, 0, 077};
    for (size_t i = 0; i < sizeof umasks / sizeof umasks[0]; i++) {
        char sub[64];
        snprintf(sub, sizeof sub, "modes-%zu/nested", i);
        mode_t old = umask(umasks[i]);
        refex_keys *k = saved_keys(sub, "midwifery", secret, public, sizeof secret);
        umask(old);
        assert_int_equal(file_mode(secret), 0600);
        assert_int_equal(file_mode(public), 0644);
        refex_keys_destroy(&k);
    }
}

static void test_public_file_has_no_secrets(void **state)
{
    (void)state;
    char secret[4300], public[4300], hex[129];
    refex_keys *k = saved_keys("nosecrets", "midwifery", secret, public, sizeof secret);
    uint8_t *text = NULL;
    size_t len = 0;
    assert_ok(refex_file_read(public, 1 << 16, &text, &len));
    assert_null(strstr((char *)text, "_sk"));
    refex_hex_encode(hex, k->sk->enc_sk, 32);
    assert_null(strstr((char *)text, hex));
    refex_hex_encode(hex, k->sk->sign_sk, 32); /* the Ed25519 seed */
    assert_null(strstr((char *)text, hex));
    refex_hex_encode(hex, k->sk->transport_sk, 32);
    assert_null(strstr((char *)text, hex));
    free(text);
    refex_keys_destroy(&k);
}

static void test_save_refuses_overwrite(void **state)
{
    (void)state;
    char secret[4300], public[4300], dir[4200], err[512] = "";
    refex_keys *k = saved_keys("overwrite", "midwifery", secret, public, sizeof secret);
    path_for(dir, sizeof dir, "overwrite");
    assert_rc(refex_keys_save(k, dir), REFEX_E_EXISTS);

    /* A different key with the same id must not replace the existing one. */
    refex_keys *other = NULL;
    assert_ok(refex_keys_new("midwifery", "maternity", &other));
    assert_rc(refex_keys_save(other, dir), REFEX_E_EXISTS);
    refex_keys *got = NULL;
    assert_ok(refex_keys_load(secret, &got, err, sizeof err));
    assert_pub_equal(&got->pub, &k->pub);
    refex_pubkeys pub;
    assert_ok(refex_pubkeys_load(public, &pub, err, sizeof err));
    assert_pub_equal(&pub, &k->pub);

    refex_keys_destroy(&got);
    refex_keys_destroy(&other);
    refex_keys_destroy(&k);
}

static void test_load_round_trip(void **state)
{
    (void)state;
    char secret[4300], public[4300], err[512] = "";
    refex_keys *k = saved_keys("roundtrip", "social-care", secret, public, sizeof secret);
    refex_keys *got = NULL;
    assert_ok(refex_keys_load(secret, &got, err, sizeof err));
    assert_non_null(got);
    assert_pub_equal(&got->pub, &k->pub);
    assert_memory_equal(got->sk->sign_sk, k->sk->sign_sk, 64);
    assert_memory_equal(got->sk->enc_sk, k->sk->enc_sk, 32);
    assert_memory_equal(got->sk->transport_sk, k->sk->transport_sk, 32);

    /* The loaded secret signs for the public key... */
    static const uint8_t msg[] = "refex/test\0message";
    uint8_t sig[64];
    crypto_sign_detached(sig, NULL, msg, sizeof msg, got->sk->sign_sk);
    assert_int_equal(crypto_sign_verify_detached(sig, msg, sizeof msg, got->pub.sign_pk), 0);
    /* ... and opens what is sealed to the encryption key. */
    uint8_t sealed[sizeof msg + crypto_box_SEALBYTES], opened[sizeof msg];
    assert_int_equal(crypto_box_seal(sealed, msg, sizeof msg, k->pub.enc_pk), 0);
    assert_int_equal(
        crypto_box_seal_open(opened, sealed, sizeof sealed, got->pub.enc_pk, got->sk->enc_sk), 0);
    assert_memory_equal(opened, msg, sizeof msg);

    refex_keys_destroy(&got);
    refex_keys_destroy(&k);
}

static void test_load_readable_secret(void **state)
{
    (void)state;
    char secret[4300], public[4300], err[512];
    refex_keys *k = saved_keys("perm", "midwifery", secret, public, sizeof secret);
    static const mode_t bad[] = {0640, 0604, 0660, 0644, 0620, 0602, 0610, 0601, 0666};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(secret, bad[i]), 0);
        static refex_keys sentinel;
        refex_keys *got = &sentinel;
        err[0] = 0;
        int rc = refex_keys_load(secret, &got, err, sizeof err);
        if (rc != REFEX_E_PERM)
            fail_msg("mode %04o: got %s, want E_PERM", (unsigned)bad[i], refex_errname(rc));
        assert_null(got);
        assert_non_null(strstr(err, "chmod"));
        assert_non_null(strstr(err, secret));
        char mode[32];
        snprintf(mode, sizeof mode, "(mode %04o)", (unsigned)bad[i]);
        assert_non_null(strstr(err, mode));
    }
    /* Owner-only modes are accepted. */
    static const mode_t ok[] = {0600, 0400, 0700};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(chmod(secret, ok[i]), 0);
        refex_keys *got = NULL;
        assert_ok(refex_keys_load(secret, &got, err, sizeof err));
        refex_keys_destroy(&got);
    }
    /* The public file is meant to be readable: pubkeys_load does not care. */
    refex_pubkeys pub;
    assert_ok(refex_pubkeys_load(public, &pub, err, sizeof err));
    refex_keys_destroy(&k);
}

static void test_load_mismatched_secret(void **state)
{
    (void)state;
    char secret[4300], public[4300], bad[4300], err[512], hex[129];
    refex_keys *k = saved_keys("mismatch", "midwifery", secret, public, sizeof secret);
    refex_keys *other = NULL;
    assert_ok(refex_keys_new("police", "police", &other));
    path_for(bad, sizeof bad, "mismatch/bad.secret");

    static const char *const fields[] = {"sign_sk", "enc_sk", "transport_sk"};
    for (size_t i = 0; i < 3; i++) {
        if (i == 0)
            refex_hex_encode(hex, other->sk->sign_sk, 64);
        else if (i == 1)
            refex_hex_encode(hex, other->sk->enc_sk, 32);
        else
            refex_hex_encode(hex, other->sk->transport_sk, 32);
        rewrite_field(secret, bad, fields[i], hex);
        refex_keys *got = NULL;
        err[0] = 0;
        int rc = refex_keys_load(bad, &got, err, sizeof err);
        if (rc != REFEX_E_CONFIG)
            fail_msg("%s of another key: got %s, want E_CONFIG", fields[i], refex_errname(rc));
        assert_null(got);
        assert_non_null(strstr(err, "do not match"));
    }
    /* A public key swapped for another agency's, secrets left alone. */
    refex_hex_encode(hex, other->pub.sign_pk, 32);
    rewrite_field(secret, bad, "sign_pk", hex);
    refex_keys *got = NULL;
    assert_rc(refex_keys_load(bad, &got, err, sizeof err), REFEX_E_CONFIG);
    assert_non_null(strstr(err, "do not match"));
    assert_null(got);

    sodium_memzero(hex, sizeof hex);
    refex_keys_destroy(&other);
    refex_keys_destroy(&k);
}

static void test_load_malformed(void **state)
{
    (void)state;
    char secret[4300], public[4300], bad[4300], err[512], hex[129];
    refex_keys *k = saved_keys("malformed", "midwifery", secret, public, sizeof secret);
    path_for(bad, sizeof bad, "malformed/bad.secret");
    static const struct {
        const char *key, *value;
    } cases[] = {
        {"sign_sk", "zz"},
        {"sign_sk", NULL},
        {"enc_sk", "0123"},
        {"enc_sk", "not hex at all"},
        {"transport_sk", NULL},
        {"sign_pk", "00"},
        {"enc_pk", NULL},
        {"transport_pk", "g000000000000000000000000000000000000000000000000000000000000000"},
        {"agency", NULL},
        {"agency", "Not Valid"},
        {"role", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rewrite_field(secret, bad, cases[i].key, cases[i].value);
        refex_keys *got = NULL;
        int rc = refex_keys_load(bad, &got, err, sizeof err);
        if (rc != REFEX_E_CONFIG)
            fail_msg("%s = %s: got %s, want E_CONFIG", cases[i].key,
                     cases[i].value ? cases[i].value : "(missing)", refex_errname(rc));
        assert_null(got);
        assert_non_null(strstr(err, bad));
    }
    /* One hex digit too many or too few in the signing secret. */
    refex_hex_encode(hex, k->sk->sign_sk, 64);
    hex[127] = 0;
    rewrite_field(secret, bad, "sign_sk", hex);
    refex_keys *got = NULL;
    assert_rc(refex_keys_load(bad, &got, err, sizeof err), REFEX_E_CONFIG);
    refex_hex_encode(hex, k->sk->enc_sk, 32);
    hex[64] = 'a';
    hex[65] = 0;
    rewrite_field(secret, bad, "enc_sk", hex);
    assert_rc(refex_keys_load(bad, &got, err, sizeof err), REFEX_E_CONFIG);
    assert_null(got);

    /* Not a key file at all. */
    static const char junk[] = "\x01\x02 this is not a key file\n";
    assert_ok(refex_file_write(bad, junk, sizeof junk - 1, 0600));
    assert_rc(refex_keys_load(bad, &got, err, sizeof err), REFEX_E_CONFIG);
    assert_null(got);

    sodium_memzero(hex, sizeof hex);
    refex_keys_destroy(&k);
}

static void test_load_missing(void **state)
{
    (void)state;
    char path[4300], err[512] = "";
    path_for(path, sizeof path, "missing/none.secret");
    refex_keys *got = NULL;
    assert_int_not_equal(refex_keys_load(path, &got, err, sizeof err), REFEX_OK);
    assert_null(got);
    assert_non_null(strstr(err, path));
    refex_pubkeys pub;
    err[0] = 0;
    assert_int_not_equal(refex_pubkeys_load(path, &pub, err, sizeof err), REFEX_OK);
    assert_non_null(strstr(err, path));
}

static void test_pubkeys_load(void **state)
{
    (void)state;
    char secret[4300], public[4300], bad[4300], err[512] = "";
    refex_keys *k = saved_keys("pubkeys", "health-visiting", secret, public, sizeof secret);
    refex_pubkeys pub;
    memset(&pub, 0xaa, sizeof pub);
    assert_ok(refex_pubkeys_load(public, &pub, err, sizeof err));
    assert_pub_equal(&pub, &k->pub);
    /* The public half can also be read from the secret file. */
    memset(&pub, 0xaa, sizeof pub);
    assert_ok(refex_pubkeys_load(secret, &pub, err, sizeof err));
    assert_pub_equal(&pub, &k->pub);

    path_for(bad, sizeof bad, "pubkeys/bad.public");
    rewrite_field(public, bad, "enc_pk", "xyz");
    assert_rc(refex_pubkeys_load(bad, &pub, err, sizeof err), REFEX_E_CONFIG);
    rewrite_field(public, bad, "role", NULL);
    assert_rc(refex_pubkeys_load(bad, &pub, err, sizeof err), REFEX_E_CONFIG);
    refex_keys_destroy(&k);
}

/* Regression: refex_keys_load once compared sign_pk with the copy of the public key stored
 * in the second half of sign_sk, not with the key derived from the seed, so a file whose
 * seed belongs to another key loaded and then made signatures that failed. */
static void test_load_foreign_sign_seed(void **state)
{
    (void)state;
    char secret[4300], public[4300], bad[4300], err[512] = "", hex[129];
    refex_keys *k = saved_keys("seed", "midwifery", secret, public, sizeof secret);
    refex_keys *other = NULL;
    assert_ok(refex_keys_new("police", "police", &other));
    uint8_t sk[64];
    memcpy(sk, other->sk->sign_sk, 32);  /* another key's seed ... */
    memcpy(sk + 32, k->pub.sign_pk, 32); /* ... with our public half appended */
    refex_hex_encode(hex, sk, 64);
    path_for(bad, sizeof bad, "seed/bad.secret");
    rewrite_field(secret, bad, "sign_sk", hex);
    refex_keys *got = NULL;
    assert_rc(refex_keys_load(bad, &got, err, sizeof err), REFEX_E_CONFIG);
    assert_null(got);
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(hex, sizeof hex);
    refex_keys_destroy(&other);
    refex_keys_destroy(&k);
}

/* Expects refex_keys_load (secret) or refex_pubkeys_load to refuse path with rc and an
 * error naming the path and containing why. */
static void assert_refused(const char *path, int secret, int rc, const char *why)
{
    char err[512] = "";
    int got_rc;
    if (secret) {
        static refex_keys sentinel;
        refex_keys *got = &sentinel;
        got_rc = refex_keys_load(path, &got, err, sizeof err);
        assert_null(got);
    } else {
        refex_pubkeys pub;
        got_rc = refex_pubkeys_load(path, &pub, err, sizeof err);
    }
    if (got_rc != rc)
        fail_msg("%s: got %s (%s), want %s", path, refex_errname(got_rc), err, refex_errname(rc));
    assert_non_null(strstr(err, path));
    if (!strstr(err, why))
        fail_msg("%s: error '%s' does not say '%s'", path, err, why);
}

/* A symlink is refused, not followed, for both files, even to a good 0600 key. */
static void test_load_symlink(void **state)
{
    (void)state;
    char secret[4300], public[4300], link_s[4300], link_p[4300], err[512] = "";
    refex_keys *k = saved_keys("symlink", "midwifery", secret, public, sizeof secret);
    path_for(link_s, sizeof link_s, "symlink/link.secret");
    path_for(link_p, sizeof link_p, "symlink/link.public");
    assert_int_equal(symlink(secret, link_s), 0);
    assert_int_equal(symlink(public, link_p), 0);
    assert_refused(link_s, 1, REFEX_E_PERM, "is a symbolic link");
    assert_refused(link_p, 0, REFEX_E_PERM, "is a symbolic link");
    /* A relative symlink and a dangling one too. */
    path_for(link_s, sizeof link_s, "symlink/rel.secret");
    assert_int_equal(symlink("midwifery.secret", link_s), 0);
    assert_refused(link_s, 1, REFEX_E_PERM, "is a symbolic link");
    path_for(link_s, sizeof link_s, "symlink/dangling.secret");
    assert_int_equal(symlink("nowhere.secret", link_s), 0);
    assert_refused(link_s, 1, REFEX_E_PERM, "is a symbolic link");
    /* The targets themselves still load. */
    refex_keys *got = NULL;
    assert_ok(refex_keys_load(secret, &got, err, sizeof err));
    refex_keys_destroy(&got);
    refex_keys_destroy(&k);
}

/* A 0600 secret owned by another user is refused; a .public owned by another is fine. */
static void test_load_other_owner(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        print_message("not root: cannot chown a key file to another user; skipping\n");
        skip();
    }
    char secret[4300], public[4300], err[512] = "";
    refex_keys *k = saved_keys("owner", "midwifery", secret, public, sizeof secret);
    assert_int_equal(chown(secret, 65534, 65534), 0);
    assert_int_equal(chmod(secret, 0600), 0);
    assert_refused(secret, 1, REFEX_E_PERM, "is owned by uid 65534, not this daemon's uid 0");
    assert_int_equal(chown(public, 65534, 65534), 0);
    refex_pubkeys pub;
    assert_ok(refex_pubkeys_load(public, &pub, err, sizeof err));
    assert_int_equal(chown(secret, 0, 0), 0);
    refex_keys *got = NULL;
    assert_ok(refex_keys_load(secret, &got, err, sizeof err));
    refex_keys_destroy(&got);
    refex_keys_destroy(&k);
}

/* A directory, a FIFO (which must not block the open) and an oversized file are refused. */
static void test_load_not_regular(void **state)
{
    (void)state;
    char path[4300], dir[4200];
    path_for(dir, sizeof dir, "notreg");
    assert_ok(refex_mkdirs(dir, 0700));
    path_for(path, sizeof path, "notreg/dir.secret");
    assert_int_equal(mkdir(path, 0700), 0);
    assert_refused(path, 1, REFEX_E_PERM, "not a regular file (a directory)");
    assert_refused(path, 0, REFEX_E_PERM, "not a regular file (a directory)");
    path_for(path, sizeof path, "notreg/fifo.secret");
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_refused(path, 1, REFEX_E_PERM, "not a regular file (a FIFO)");
    assert_refused(path, 0, REFEX_E_PERM, "not a regular file (a FIFO)");
    path_for(path, sizeof path, "notreg/big.secret");
    char *big = malloc(20000);
    assert_non_null(big);
    memset(big, '#', 20000);
    assert_ok(refex_file_write(path, big, 20000, 0600));
    free(big);
    assert_refused(path, 1, REFEX_E_CONFIG, "too large");
    assert_refused(path, 0, REFEX_E_CONFIG, "too large");
}

/* Saving never writes through a symlink planted where the .secret goes. */
static void test_save_refuses_symlink(void **state)
{
    (void)state;
    char dir[4200], planted[4300], target[4300];
    path_for(dir, sizeof dir, "plant");
    assert_ok(refex_mkdirs(dir, 0700));
    path_for(planted, sizeof planted, "plant/midwifery.secret");
    path_for(target, sizeof target, "plant/stolen");
    assert_int_equal(symlink(target, planted), 0);
    refex_keys *k = NULL;
    assert_ok(refex_keys_new("midwifery", "maternity", &k));
    assert_rc(refex_keys_save(k, dir), REFEX_E_EXISTS);
    struct stat st;
    assert_int_not_equal(lstat(target, &st), 0); /* nothing written through the link */
    assert_int_equal(lstat(planted, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    refex_keys_destroy(&k);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_valid),
        cmocka_unit_test(test_new),
        cmocka_unit_test(test_new_invalid_id),
        cmocka_unit_test(test_save_modes),
        cmocka_unit_test(test_public_file_has_no_secrets),
        cmocka_unit_test(test_save_refuses_overwrite),
        cmocka_unit_test(test_load_round_trip),
        cmocka_unit_test(test_load_readable_secret),
        cmocka_unit_test(test_load_mismatched_secret),
        cmocka_unit_test(test_load_malformed),
        cmocka_unit_test(test_load_missing),
        cmocka_unit_test(test_pubkeys_load),
        cmocka_unit_test(test_load_foreign_sign_seed),
        cmocka_unit_test(test_load_symlink),
        cmocka_unit_test(test_load_other_owner),
        cmocka_unit_test(test_load_not_regular),
        cmocka_unit_test(test_save_refuses_symlink),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
