/* Tests for lib/directory.c: a directory signed by the trust anchor round-trips through a
 * file, any other key or any corruption is refused, and the in-memory editing rules hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <sodium.h>

#include "refex.pb-c.h"
#include "directory.h"
#include "keys.h"
#include "util.h"

#define N_AGENCIES 3

static refex_keys *anchor, *other_anchor;
static refex_keys *members[N_AGENCIES];
static char tmpdir[4096];

static int group_setup(void **state)
{
    (void)state;
    static const char *const ids[N_AGENCIES] = {"midwifery", "social-care", "health-visiting"};
    static const char *const roles[N_AGENCIES] = {"maternity", "childrens-services", "health"};
    if (refex_keys_new("operator", "trust-anchor", &anchor) != REFEX_OK ||
        refex_keys_new("rogue", "trust-anchor", &other_anchor) != REFEX_OK)
        return -1;
    for (size_t i = 0; i < N_AGENCIES; i++)
        if (refex_keys_new(ids[i], roles[i], &members[i]) != REFEX_OK)
            return -1;
    testing_tmpdir(tmpdir, sizeof tmpdir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    refex_keys_destroy(&anchor);
    refex_keys_destroy(&other_anchor);
    for (size_t i = 0; i < N_AGENCIES; i++)
        refex_keys_destroy(&members[i]);
    testing_rmtree(tmpdir);
    return 0;
}

static void path_for(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* A directory holding every member, unsigned. */
static refex_directory *make_dir(void)
{
    refex_directory *d = NULL;
    assert_ok(refex_directory_new(&d));
    assert_non_null(d);
    static const char *const names[N_AGENCIES] = {"St Elsewhere maternity unit", NULL,
                                                  "Health visiting"};
    for (size_t i = 0; i < N_AGENCIES; i++) {
        refex_agency a;
        refex_agency_from_pubkeys(&a, &members[i]->pub, names[i]);
        a.valid_from_ms = 1000 * (int64_t)(i + 1);
        a.valid_until_ms = i == 1 ? 0 : 4102444800000LL; /* 2100-01-01 */
        a.revoked = i == 2;
        assert_ok(refex_directory_add(d, &a, 0));
    }
    return d;
}

static void assert_agency_equal(const refex_agency *a, const refex_agency *b)
{
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->role, b->role);
    assert_string_equal(a->display_name, b->display_name);
    assert_memory_equal(a->sign_pk, b->sign_pk, 32);
    assert_memory_equal(a->enc_pk, b->enc_pk, 32);
    assert_memory_equal(a->transport_pk, b->transport_pk, 32);
    assert_int_equal(a->valid_from_ms, b->valid_from_ms);
    assert_int_equal(a->valid_until_ms, b->valid_until_ms);
    assert_int_equal(a->revoked != 0, b->revoked != 0);
}

static void save_signed(const char *name, char *path, size_t len)
{
    refex_directory *d = make_dir();
    assert_ok(refex_directory_sign(d, anchor->sk->sign_sk));
    path_for(path, len, name);
    assert_ok(refex_directory_save(d, path));
    refex_directory_destroy(&d);
}

static void test_signed_round_trip(void **state)
{
    (void)state;
    char path[4200], err[512] = "";
    int64_t before = refex_now_ms();
    refex_directory *d = make_dir();
    assert_false(refex_directory_is_signed(d));
    assert_int_equal(refex_directory_serial(d), 0);
    assert_ok(refex_directory_sign(d, anchor->sk->sign_sk));
    assert_true(refex_directory_is_signed(d));
    assert_int_equal(refex_directory_serial(d), 1);
    assert_true(refex_directory_issued_at(d) >= before);
    path_for(path, sizeof path, "round-trip.dir");
    assert_ok(refex_directory_save(d, path));

    refex_directory *got = NULL;
    assert_ok(refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err));
    assert_non_null(got);
    assert_true(refex_directory_is_signed(got));
    assert_int_equal(refex_directory_serial(got), 1);
    assert_int_equal(refex_directory_issued_at(got), refex_directory_issued_at(d));
    assert_int_equal(refex_directory_count(got), N_AGENCIES);
    for (size_t i = 0; i < N_AGENCIES; i++)
        assert_agency_equal(refex_directory_at(got, i), refex_directory_at(d, i));
    assert_string_equal(refex_directory_find(got, "midwifery")->display_name,
                        "St Elsewhere maternity unit");

    /* Saving a loaded, still-signed directory keeps the exact signed bytes. */
    char path2[4200];
    path_for(path2, sizeof path2, "round-trip-2.dir");
    assert_ok(refex_directory_save(got, path2));
    uint8_t *b1 = NULL, *b2 = NULL;
    size_t l1 = 0, l2 = 0;
    assert_ok(refex_file_read(path, 1 << 20, &b1, &l1));
    assert_ok(refex_file_read(path2, 1 << 20, &b2, &l2));
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    free(b1);
    free(b2);

    refex_directory_destroy(&got);
    assert_null(got);
    refex_directory_destroy(&d);
    refex_directory_destroy(&d);
    refex_directory_destroy(NULL);
}

static void test_wrong_anchor(void **state)
{
    (void)state;
    char path[4200], err[512] = "";
    save_signed("wrong-anchor.dir", path, sizeof path);
    refex_directory *got = NULL;
    assert_rc(refex_directory_load(path, other_anchor->pub.sign_pk, &got, err, sizeof err),
              REFEX_E_DIRECTORY);
    assert_null(got);
    assert_non_null(strstr(err, path));
    /* A member's key is not the anchor either. */
    assert_rc(refex_directory_load(path, members[0]->pub.sign_pk, &got, err, sizeof err),
              REFEX_E_DIRECTORY);
    assert_null(got);
}

static void test_signed_by_other_anchor(void **state)
{
    (void)state;
    char path[4200], err[512] = "";
    refex_directory *d = make_dir();
    assert_ok(refex_directory_sign(d, other_anchor->sk->sign_sk));
    path_for(path, sizeof path, "other-anchor.dir");
    assert_ok(refex_directory_save(d, path));
    refex_directory_destroy(&d);
    refex_directory *got = NULL;
    assert_rc(refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err),
              REFEX_E_DIRECTORY);
    assert_null(got);
}

static void test_unsigned(void **state)
{
    (void)state;
    char path[4200], err[512] = "";
    refex_directory *d = make_dir();
    path_for(path, sizeof path, "unsigned.dir");
    assert_ok(refex_directory_save(d, path));
    refex_directory_destroy(&d);

    refex_directory *got = NULL;
    assert_rc(refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err),
              REFEX_E_DIRECTORY);
    assert_null(got);
    assert_non_null(strstr(err, "not signed"));

    /* Without an anchor (for editing) it loads, unsigned. */
    err[0] = 0;
    assert_ok(refex_directory_load(path, NULL, &got, err, sizeof err));
    assert_non_null(got);
    assert_false(refex_directory_is_signed(got));
    assert_int_equal(refex_directory_count(got), N_AGENCIES);
    assert_non_null(refex_directory_find(got, "health-visiting"));
    refex_directory_destroy(&got);
}

static void test_edit_after_sign_needs_resign(void **state)
{
    (void)state;
    char path[4200], err[512] = "";
    save_signed("edited.dir", path, sizeof path);
    refex_directory *d = NULL;
    assert_ok(refex_directory_load(path, anchor->pub.sign_pk, &d, err, sizeof err));

    /* Swap in an attacker's keys for a member: the signature no longer covers it. */
    refex_keys *mallory = NULL;
    assert_ok(refex_keys_new("social-care", "childrens-services", &mallory));
    refex_agency a;
    refex_agency_from_pubkeys(&a, &mallory->pub, NULL);
    assert_ok(refex_directory_add(d, &a, 1));
    assert_false(refex_directory_is_signed(d));
    assert_ok(refex_directory_save(d, path));
    refex_directory *got = NULL;
    assert_rc(refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err),
              REFEX_E_DIRECTORY);
    assert_null(got);

    /* Once the anchor signs it, it is accepted with the new keys. */
    assert_ok(refex_directory_sign(d, anchor->sk->sign_sk));
    assert_ok(refex_directory_save(d, path));
    assert_ok(refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err));
    assert_memory_equal(refex_directory_find(got, "social-care")->sign_pk, mallory->pub.sign_pk,
                        32);
    refex_directory_destroy(&got);
    refex_directory_destroy(&d);
    refex_keys_destroy(&mallory);
}

static void test_byte_flips(void **state)
{
    (void)state;
    char path[4200], bad[4200], err[512];
    save_signed("flips.dir", path, sizeof path);
    path_for(bad, sizeof bad, "flipped.dir");
    uint8_t *orig = NULL;
    size_t len = 0;
    assert_ok(refex_file_read(path, REFEX_DIRECTORY_MAX_BYTES, &orig, &len));
    assert_true(len > 64);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    static const uint8_t masks[] = {0x01, 0x80, 0xff};

    for (size_t i = 0; i < len; i += 7) {
        for (size_t m = 0; m < sizeof masks; m++) {
            memcpy(buf, orig, len);
            buf[i] ^= masks[m];
            assert_ok(refex_file_write(bad, buf, len, 0644));
            refex_directory *got = NULL;
            err[0] = 0;
            int rc = refex_directory_load(bad, anchor->pub.sign_pk, &got, err, sizeof err);
            if (rc == REFEX_OK)
                fail_msg("byte %zu of %zu ^ 0x%02x loaded with the anchor", i, len, masks[m]);
            assert_null(got);
            assert_true(strlen(err) > 0);
        }
    }
    free(buf);
    free(orig);
}

static void test_add_rules(void **state)
{
    (void)state;
    refex_directory *d = make_dir();
    assert_ok(refex_directory_sign(d, anchor->sk->sign_sk));
    assert_true(refex_directory_is_signed(d));

    /* Same id without replace. */
    refex_agency a;
    refex_agency_from_pubkeys(&a, &members[0]->pub, "Another midwifery");
    assert_rc(refex_directory_add(d, &a, 0), REFEX_E_EXISTS);
    assert_true(refex_directory_is_signed(d)); /* a refused add changes nothing */
    assert_string_equal(refex_directory_find(d, "midwifery")->display_name,
                        "St Elsewhere maternity unit");

    /* With replace: the entry changes and the signature is gone. */
    a.revoked = 1;
    assert_ok(refex_directory_add(d, &a, 1));
    assert_false(refex_directory_is_signed(d));
    assert_int_equal(refex_directory_count(d), N_AGENCIES);
    assert_string_equal(refex_directory_find(d, "midwifery")->display_name, "Another midwifery");
    assert_true(refex_directory_find(d, "midwifery")->revoked);

    /* A transport key already held by another id. */
    refex_keys *k = NULL;
    assert_ok(refex_keys_new("police", "police", &k));
    refex_agency_from_pubkeys(&a, &k->pub, NULL);
    memcpy(a.transport_pk, members[1]->pub.transport_pk, 32);
    assert_rc(refex_directory_add(d, &a, 0), REFEX_E_EXISTS);
    assert_rc(refex_directory_add(d, &a, 1), REFEX_E_EXISTS);
    assert_null(refex_directory_find(d, "police"));
    /* ... and a fresh one is fine, and clears a signature too. */
    assert_ok(refex_directory_sign(d, anchor->sk->sign_sk));
    refex_agency_from_pubkeys(&a, &k->pub, NULL);
    assert_ok(refex_directory_add(d, &a, 0));
    assert_false(refex_directory_is_signed(d));
    assert_int_equal(refex_directory_count(d), N_AGENCIES + 1);

    /* Invalid ids and roles. */
    refex_agency_from_pubkeys(&a, &k->pub, NULL);
    snprintf(a.id, sizeof a.id, "%s", "Police Force");
    assert_rc(refex_directory_add(d, &a, 0), REFEX_E_INVAL);
    snprintf(a.id, sizeof a.id, "%s", "police-2");
    a.role[0] = 0;
    assert_rc(refex_directory_add(d, &a, 0), REFEX_E_INVAL);
    a.id[0] = 0;
    assert_rc(refex_directory_add(d, &a, 1), REFEX_E_INVAL);

    refex_keys_destroy(&k);
    refex_directory_destroy(&d);
}

static void test_lookups(void **state)
{
    (void)state;
    refex_directory *d = NULL;
    assert_ok(refex_directory_new(&d));
    assert_int_equal(refex_directory_count(d), 0);
    assert_null(refex_directory_at(d, 0));
    assert_null(refex_directory_find(d, "midwifery"));
    assert_null(refex_directory_find_transport(d, members[0]->pub.transport_pk));
    refex_directory_destroy(&d);

    d = make_dir();
    assert_int_equal(refex_directory_count(d), N_AGENCIES);
    for (size_t i = 0; i < N_AGENCIES; i++) {
        const refex_agency *a = refex_directory_at(d, i);
        assert_non_null(a);
        assert_string_equal(a->id, members[i]->pub.agency);
        assert_string_equal(a->role, members[i]->pub.role);
        assert_ptr_equal(refex_directory_find(d, members[i]->pub.agency), a);
        assert_ptr_equal(refex_directory_find_transport(d, members[i]->pub.transport_pk), a);
    }
    assert_null(refex_directory_at(d, N_AGENCIES));
    assert_null(refex_directory_at(d, SIZE_MAX));
    assert_null(refex_directory_find(d, "police"));
    assert_null(refex_directory_find(d, "midwifer"));
    assert_null(refex_directory_find(d, ""));
    /* A signing or encryption key is not a transport key. */
    assert_null(refex_directory_find_transport(d, members[0]->pub.sign_pk));
    assert_null(refex_directory_find_transport(d, members[0]->pub.enc_pk));
    assert_null(refex_directory_find_transport(d, anchor->pub.transport_pk));
    refex_directory_destroy(&d);
}

static void test_agency_usable(void **state)
{
    (void)state;
    const int64_t now = 1700000000000LL;
    refex_agency a;
    refex_agency_from_pubkeys(&a, &members[0]->pub, NULL);
    assert_ok(refex_agency_usable(&a, now));

    a.revoked = 1;
    assert_rc(refex_agency_usable(&a, now), REFEX_E_REVOKED);
    a.valid_from_ms = now - 1000;
    a.valid_until_ms = now + 1000;
    assert_rc(refex_agency_usable(&a, now), REFEX_E_REVOKED);
    a.revoked = 0;
    assert_ok(refex_agency_usable(&a, now));

    a.valid_from_ms = now + 1;
    a.valid_until_ms = 0;
    assert_rc(refex_agency_usable(&a, now), REFEX_E_REVOKED);
    a.valid_from_ms = now;
    assert_ok(refex_agency_usable(&a, now));

    a.valid_from_ms = 0;
    a.valid_until_ms = now - 1;
    assert_rc(refex_agency_usable(&a, now), REFEX_E_REVOKED);
    a.valid_until_ms = now; /* the upper bound is exclusive */
    assert_rc(refex_agency_usable(&a, now), REFEX_E_REVOKED);
    a.valid_until_ms = now + 1;
    assert_ok(refex_agency_usable(&a, now));
}

static void test_serial_increments(void **state)
{
    (void)state;
    char path[4200], err[512] = "";
    refex_directory *d = make_dir();
    for (uint64_t want = 1; want <= 3; want++) {
        int64_t prev = refex_directory_issued_at(d);
        assert_ok(refex_directory_sign(d, anchor->sk->sign_sk));
        assert_int_equal(refex_directory_serial(d), want);
        assert_true(refex_directory_issued_at(d) >= prev);
    }
    path_for(path, sizeof path, "serial.dir");
    assert_ok(refex_directory_save(d, path));
    refex_directory_destroy(&d);

    /* The serial survives a save and load and keeps counting. */
    assert_ok(refex_directory_load(path, anchor->pub.sign_pk, &d, err, sizeof err));
    assert_int_equal(refex_directory_serial(d), 3);
    assert_ok(refex_directory_sign(d, anchor->sk->sign_sk));
    assert_int_equal(refex_directory_serial(d), 4);
    refex_directory_destroy(&d);
}

static void test_load_missing_file(void **state)
{
    (void)state;
    char path[4200], err[512] = "";
    path_for(path, sizeof path, "no-such-directory.dir");
    refex_directory *got = NULL;
    int rc = refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err);
    assert_int_not_equal(rc, REFEX_OK);
    assert_null(got);
    assert_non_null(strstr(err, path));
    rc = refex_directory_load(path, NULL, &got, err, sizeof err);
    assert_int_not_equal(rc, REFEX_OK);
    assert_null(got);
}

static void test_load_garbage(void **state)
{
    (void)state;
    char path[4200], err[512] = "";
    static const char text[] = "this is not a refex directory\n";
    uint8_t ff[100];
    memset(ff, 0xff, sizeof ff);
    path_for(path, sizeof path, "garbage.dir");
    refex_directory *got = NULL;

    assert_ok(refex_file_write(path, text, sizeof text - 1, 0644));
    assert_rc(refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err),
              REFEX_E_DIRECTORY);
    assert_null(got);
    assert_non_null(strstr(err, path));
    assert_rc(refex_directory_load(path, NULL, &got, err, sizeof err), REFEX_E_DIRECTORY);
    assert_null(got);

    assert_ok(refex_file_write(path, ff, sizeof ff, 0644));
    assert_rc(refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err),
              REFEX_E_DIRECTORY);
    assert_rc(refex_directory_load(path, NULL, &got, err, sizeof err), REFEX_E_DIRECTORY);
    assert_null(got);
}

/* Writes a SignedDirectory holding `agencies`, signed by the anchor. */
static void write_crafted(const char *path, Refex__V1__Agency **agencies, size_t n)
{
    Refex__V1__Directory d = REFEX__V1__DIRECTORY__INIT;
    d.serial = 9;
    d.issued_at_ms = 1700000000000LL;
    d.n_agencies = n;
    d.agencies = agencies;
    size_t dl = refex__v1__directory__get_packed_size(&d);
    size_t cl = sizeof REFEX_DIRECTORY_CONTEXT;
    uint8_t *msg = malloc(cl + dl), sig[64];
    assert_non_null(msg);
    memcpy(msg, REFEX_DIRECTORY_CONTEXT, cl);
    refex__v1__directory__pack(&d, msg + cl);
    crypto_sign_detached(sig, NULL, msg, cl + dl, anchor->sk->sign_sk);

    Refex__V1__SignedDirectory sd = REFEX__V1__SIGNED_DIRECTORY__INIT;
    sd.directory = (ProtobufCBinaryData){dl, msg + cl};
    sd.signature = (ProtobufCBinaryData){64, sig};
    size_t n_out = refex__v1__signed_directory__get_packed_size(&sd);
    uint8_t *out = malloc(n_out);
    assert_non_null(out);
    refex__v1__signed_directory__pack(&sd, out);
    assert_ok(refex_file_write(path, out, n_out, 0644));
    free(out);
    free(msg);
}

static void fill_agency(Refex__V1__Agency *p, const refex_keys *k)
{
    refex__v1__agency__init(p);
    p->id = (char *)k->pub.agency;
    p->role = (char *)k->pub.role;
    p->display_name = (char *)k->pub.agency;
    p->sign_pk = (ProtobufCBinaryData){32, (uint8_t *)k->pub.sign_pk};
    p->enc_pk = (ProtobufCBinaryData){32, (uint8_t *)k->pub.enc_pk};
    p->transport_pk = (ProtobufCBinaryData){32, (uint8_t *)k->pub.transport_pk};
}

/* Correctly signed by the anchor, but with contents no directory may have. */
static void test_load_invalid_signed_contents(void **state)
{
    (void)state;
    char path[4200], err[512] = "";
    path_for(path, sizeof path, "crafted.dir");
    Refex__V1__Agency p[2];
    Refex__V1__Agency *ptrs[2] = {&p[0], &p[1]};
    refex_directory *got = NULL;

    /* The encoding used by write_crafted matches the library's. */
    fill_agency(&p[0], members[0]);
    fill_agency(&p[1], members[1]);
    write_crafted(path, ptrs, 2);
    assert_ok(refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err));
    assert_int_equal(refex_directory_count(got), 2);
    assert_int_equal(refex_directory_serial(got), 9);
    refex_directory_destroy(&got);

    for (int k = 0; k < 6; k++) {
        fill_agency(&p[0], members[0]);
        fill_agency(&p[1], members[1]);
        size_t n = 2;
        switch (k) {
        case 0: /* two ids sharing a transport key */
            p[1].transport_pk = p[0].transport_pk;
            break;
        case 1: /* the same id twice */
            p[1].id = p[0].id;
            break;
        case 2: /* short key */
            p[0].sign_pk.len = 31;
            break;
        case 3: /* missing key */
            p[1].enc_pk = (ProtobufCBinaryData){0, NULL};
            break;
        case 4: /* invalid id */
            p[0].id = "Midwifery";
            break;
        case 5: /* empty role */
            p[0].role = "";
            n = 1;
            break;
        }
        write_crafted(path, ptrs, n);
        err[0] = 0;
        int rc = refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err);
        if (rc != REFEX_E_DIRECTORY)
            fail_msg("crafted directory %d: got %s, want E_DIRECTORY", k, refex_errname(rc));
        assert_null(got);
        assert_non_null(strstr(err, path));
    }
}

/* lib/directory.c refex_directory_add: replacing an entry must not give it a transport key
 * that another (later) entry already holds: one transport key, one identity. */
static void test_replace_keeps_transport_keys_unique(void **state)
{
    (void)state;
    refex_directory *d = make_dir();
    refex_agency a = *refex_directory_find(d, "midwifery");
    memcpy(a.transport_pk, members[2]->pub.transport_pk, 32);
    assert_rc(refex_directory_add(d, &a, 1), REFEX_E_EXISTS);
    assert_ptr_equal(refex_directory_find_transport(d, members[2]->pub.transport_pk),
                     refex_directory_find(d, "health-visiting"));
    refex_directory_destroy(&d);
}

/* lib/directory.c refex_directory_load: a file with a 64-byte signature and an empty
 * directory field, loaded without an anchor, must not memcpy from NULL (UBSan aborts). */
static void test_load_unanchored_empty_signed(void **state)
{
    (void)state;
    char path[4200], err[512] = "";
    uint8_t sig[64] = {0}, buf[128];
    Refex__V1__SignedDirectory sd = REFEX__V1__SIGNED_DIRECTORY__INIT;
    sd.signature = (ProtobufCBinaryData){64, sig};
    size_t n = refex__v1__signed_directory__pack(&sd, buf);
    path_for(path, sizeof path, "empty-signed.dir");
    assert_ok(refex_file_write(path, buf, n, 0644));
    refex_directory *got = NULL;
    /* With the anchor it is refused today already. */
    assert_rc(refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err),
              REFEX_E_DIRECTORY);
    int rc = refex_directory_load(path, NULL, &got, err, sizeof err);
    if (rc == REFEX_OK)
        assert_int_equal(refex_directory_count(got), 0);
    refex_directory_destroy(&got);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signed_round_trip),
        cmocka_unit_test(test_wrong_anchor),
        cmocka_unit_test(test_signed_by_other_anchor),
        cmocka_unit_test(test_unsigned),
        cmocka_unit_test(test_edit_after_sign_needs_resign),
        cmocka_unit_test(test_byte_flips),
        cmocka_unit_test(test_add_rules),
        cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_agency_usable),
        cmocka_unit_test(test_serial_increments),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_load_garbage),
        cmocka_unit_test(test_load_invalid_signed_contents),
        cmocka_unit_test(test_replace_keeps_transport_keys_unique),
        cmocka_unit_test(test_load_unanchored_empty_signed),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
