/* Tests for key rotation in lib/directory.c: refex_directory_rotate keeps an entry's old
 * keys as its previous keys, which verify signatures and admit the transport until the
 * overlap ends and never after; the previous keys survive signing, saving and loading; a
 * malformed set of previous keys is refused; no key is ever shared between entries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testing.h"

#include <sodium.h>

#include "refex.pb-c.h"
#include "codec.h"
#include "directory.h"
#include "keys.h"
#include "util.h"

#define CONTEXT "refex/test/v1"

static refex_keys *anchor, *mw_old, *mw_new, *sc;
static char tmpdir[4096];

static int group_setup(void **state)
{
    (void)state;
    if (refex_keys_new("operator", "trust-anchor", &anchor) != REFEX_OK ||
        refex_keys_new("midwifery", "midwifery", &mw_old) != REFEX_OK ||
        refex_keys_new("midwifery", "midwifery", &mw_new) != REFEX_OK ||
        refex_keys_new("social-care", "social-care", &sc) != REFEX_OK)
        return -1;
    testing_tmpdir(tmpdir, sizeof tmpdir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    refex_keys_destroy(&anchor);
    refex_keys_destroy(&mw_old);
    refex_keys_destroy(&mw_new);
    refex_keys_destroy(&sc);
    testing_rmtree(tmpdir);
    return 0;
}

static refex_directory *make_dir(void)
{
    refex_directory *d = NULL;
    refex_agency a;
    assert_ok(refex_directory_new(&d));
    refex_agency_from_pubkeys(&a, &mw_old->pub, NULL);
    assert_ok(refex_directory_add(d, &a, 0));
    refex_agency_from_pubkeys(&a, &sc->pub, NULL);
    assert_ok(refex_directory_add(d, &a, 0));
    return d;
}

static void sign_with(const refex_keys *k, const uint8_t *m, size_t len, uint8_t sig[64])
{
    assert_ok(refex_sign_domain(CONTEXT, m, len, k->sk->sign_sk, sig));
}

static void test_rotate_overlap(void **state)
{
    (void)state;
    const int64_t until = 5000000;
    refex_directory *d = make_dir();
    assert_ok(refex_directory_rotate(d, &mw_new->pub, 0, until));
    const refex_agency *a = refex_directory_find(d, "midwifery");
    assert_true(a->has_prev);
    assert_memory_equal(a->sign_pk, mw_new->pub.sign_pk, 32);
    assert_memory_equal(a->prev_sign_pk, mw_old->pub.sign_pk, 32);
    assert_int_equal(refex_agency_keys_match(a, &mw_new->pub), 1);
    assert_int_equal(refex_agency_keys_match(a, &mw_old->pub), 2);
    assert_int_equal(refex_agency_keys_match(a, &sc->pub), 0);

    const uint8_t msg[] = "a referral header";
    uint8_t old_sig[64], new_sig[64], other_sig[64];
    sign_with(mw_old, msg, sizeof msg, old_sig);
    sign_with(mw_new, msg, sizeof msg, new_sig);
    sign_with(sc, msg, sizeof msg, other_sig);
    const uint8_t *pks[2];
    /* Inside the overlap both keys verify, the current one first. */
    assert_int_equal(refex_agency_sign_keys(a, until - 1, pks), 2);
    assert_ptr_equal(pks[0], a->sign_pk);
    assert_ok(refex_agency_verify_domain(a, until - 1, CONTEXT, msg, sizeof msg, old_sig));
    assert_ok(refex_agency_verify_domain(a, until - 1, CONTEXT, msg, sizeof msg, new_sig));
    assert_rc(refex_agency_verify_domain(a, until - 1, CONTEXT, msg, sizeof msg, other_sig),
              REFEX_E_BAD_SIGNATURE);
    /* From its end on, only the new key: the old one's signature is refused for good
     * (E_REVOKED, genuine but rotated away), anyone else's as a forgery. */
    assert_int_equal(refex_agency_sign_keys(a, until, pks), 1);
    assert_rc(refex_agency_verify_domain(a, until, CONTEXT, msg, sizeof msg, old_sig),
              REFEX_E_REVOKED);
    assert_rc(refex_agency_verify_domain(a, until, CONTEXT, msg, sizeof msg, other_sig),
              REFEX_E_BAD_SIGNATURE);
    assert_ok(refex_agency_verify_domain(a, until, CONTEXT, msg, sizeof msg, new_sig));

    /* The transport: the old key finds the entry, and is admitted only inside the overlap. */
    const char *why = NULL;
    assert_ptr_equal(refex_directory_find_transport(d, mw_old->pub.transport_pk), a);
    assert_ok(refex_agency_admits_transport(a, mw_old->pub.transport_pk, until - 1, &why));
    assert_null(why);
    assert_rc(refex_agency_admits_transport(a, mw_old->pub.transport_pk, until, &why),
              REFEX_E_REVOKED);
    assert_non_null(strstr(why, "overlap has ended"));
    assert_ok(refex_agency_admits_transport(a, mw_new->pub.transport_pk, until, NULL));
    assert_rc(refex_agency_admits_transport(a, sc->pub.transport_pk, 0, &why), REFEX_E_REVOKED);
    assert_non_null(strstr(why, "replaced"));
    refex_directory_destroy(&d);
}

static void test_rotate_refusals(void **state)
{
    (void)state;
    refex_directory *d = make_dir();
    refex_pubkeys p = mw_old->pub;
    /* Not new, another agency's keys, an agency not listed, the wrong role. */
    assert_rc(refex_directory_rotate(d, &mw_old->pub, 0, 1000), REFEX_E_EXISTS);
    memcpy(p.transport_pk, sc->pub.transport_pk, 32);
    memcpy(p.sign_pk, mw_new->pub.sign_pk, 32);
    memcpy(p.enc_pk, mw_new->pub.enc_pk, 32);
    assert_rc(refex_directory_rotate(d, &p, 0, 1000), REFEX_E_EXISTS);
    p = mw_new->pub;
    snprintf(p.agency, sizeof p.agency, "police");
    assert_rc(refex_directory_rotate(d, &p, 0, 1000), REFEX_E_INVAL);
    p = mw_new->pub;
    snprintf(p.role, sizeof p.role, "police");
    assert_rc(refex_directory_rotate(d, &p, 0, 1000), REFEX_E_INVAL);
    assert_rc(refex_directory_rotate(d, &mw_new->pub, 0, 0), REFEX_E_INVAL);
    /* Nothing changed. */
    const refex_agency *a = refex_directory_find(d, "midwifery");
    assert_false(a->has_prev);
    assert_memory_equal(a->sign_pk, mw_old->pub.sign_pk, 32);
    /* After a rotation, nobody else may take the previous transport key. */
    assert_ok(refex_directory_rotate(d, &mw_new->pub, 0, 1000));
    refex_agency other;
    refex_agency_from_pubkeys(&other, &sc->pub, NULL);
    snprintf(other.id, sizeof other.id, "police");
    memcpy(other.transport_pk, mw_old->pub.transport_pk, 32);
    assert_rc(refex_directory_add(d, &other, 0), REFEX_E_EXISTS);
    refex_directory_destroy(&d);
}

/* A second rotation inside the first's overlap would cut the keys before short: refused,
 * unless it is the no-overlap rotation after a compromise. --end-overlap ends one now. The
 * broker and the trust anchor are pinned: never rotated. */
static void test_rotate_overlap_running(void **state)
{
    (void)state;
    refex_keys *third = NULL, *brk = NULL;
    assert_ok(refex_keys_new("midwifery", "midwifery", &third));
    assert_ok(refex_keys_new("broker", "broker", &brk));
    refex_directory *d = make_dir();
    refex_agency b;
    refex_agency_from_pubkeys(&b, &brk->pub, NULL);
    assert_ok(refex_directory_add(d, &b, 0));
    assert_rc(refex_directory_rotate(d, &brk->pub, 100, 200), REFEX_E_INVAL);
    assert_ok(refex_directory_rotate(d, &mw_new->pub, 100, 1000));
    assert_rc(refex_directory_rotate(d, &third->pub, 500, 2000), REFEX_E_BUSY);
    const refex_agency *a = refex_directory_find(d, "midwifery");
    assert_memory_equal(a->sign_pk, mw_new->pub.sign_pk, 32);
    /* After the overlap, the next rotation goes through. */
    assert_ok(refex_directory_rotate(d, &third->pub, 1000, 2000));
    assert_memory_equal(a->prev_sign_pk, mw_new->pub.sign_pk, 32);
    /* Ending the running overlap now: the previous key stops verifying at once. */
    assert_ok(refex_directory_end_overlap(d, "midwifery", 1500));
    assert_int_equal(a->prev_until_ms, 1500);
    const uint8_t *pks[2];
    assert_int_equal(refex_agency_sign_keys(a, 1500, pks), 1);
    assert_rc(refex_directory_end_overlap(d, "police", 1500), REFEX_E_UNKNOWN_AGENCY);
    assert_rc(refex_directory_end_overlap(d, "midwifery", 1600), REFEX_E_NOTFOUND);
    assert_rc(refex_directory_end_overlap(d, "social-care", 1600), REFEX_E_NOTFOUND);
    /* A compromise: rotated with no overlap even while one runs. */
    refex_directory_destroy(&d);
    d = make_dir();
    assert_ok(refex_directory_rotate(d, &mw_new->pub, 100, 1000));
    assert_ok(refex_directory_rotate(d, &third->pub, 500, 500));
    a = refex_directory_find(d, "midwifery");
    assert_int_equal(refex_agency_sign_keys(a, 500, pks), 1);
    assert_memory_equal(a->sign_pk, third->pub.sign_pk, 32);
    refex_directory_destroy(&d);
    refex_keys_destroy(&third);
    refex_keys_destroy(&brk);
}

static void test_previous_keys_round_trip(void **state)
{
    (void)state;
    char path[4200], err[512];
    refex_directory *d = make_dir(), *got = NULL;
    assert_ok(refex_directory_rotate(d, &mw_new->pub, 0, 123456789));
    assert_ok(refex_directory_sign(d, anchor->sk->sign_sk));
    snprintf(path, sizeof path, "%s/rotated.dir", tmpdir);
    assert_ok(refex_directory_save(d, path));
    assert_ok(refex_directory_load(path, anchor->pub.sign_pk, &got, err, sizeof err));
    const refex_agency *a = refex_directory_find(got, "midwifery");
    assert_true(a->has_prev);
    assert_int_equal(a->prev_until_ms, 123456789);
    assert_memory_equal(a->prev_sign_pk, mw_old->pub.sign_pk, 32);
    assert_memory_equal(a->prev_enc_pk, mw_old->pub.enc_pk, 32);
    assert_memory_equal(a->prev_transport_pk, mw_old->pub.transport_pk, 32);
    assert_false(refex_directory_find(got, "social-care")->has_prev);
    refex_directory_destroy(&got);
    refex_directory_destroy(&d);
}

/* A directory whose one entry carries the given previous keys, signed and parsed. */
static int parse_with_previous(size_t sign_len, size_t enc_len, size_t tr_len, int64_t until)
{
    char err[512];
    uint8_t z[32] = {7};
    Refex__V1__Agency p = REFEX__V1__AGENCY__INIT;
    Refex__V1__Agency *ptrs[1] = {&p};
    p.id = "midwifery";
    p.role = "midwifery";
    p.display_name = "";
    p.sign_pk = (ProtobufCBinaryData){32, mw_new->pub.sign_pk};
    p.enc_pk = (ProtobufCBinaryData){32, mw_new->pub.enc_pk};
    p.transport_pk = (ProtobufCBinaryData){32, mw_new->pub.transport_pk};
    p.previous_sign_pk = (ProtobufCBinaryData){sign_len, z};
    p.previous_enc_pk = (ProtobufCBinaryData){enc_len, z};
    p.previous_transport_pk = (ProtobufCBinaryData){tr_len, z};
    p.previous_until_ms = until;
    Refex__V1__Directory dir = REFEX__V1__DIRECTORY__INIT;
    dir.serial = 3;
    dir.n_agencies = 1;
    dir.agencies = ptrs;
    uint8_t *bytes = NULL, *file = NULL, sig[64];
    size_t len = 0, flen = 0;
    assert_ok(refex_pb_pack(&dir.base, &bytes, &len));
    assert_ok(refex_sign_domain(REFEX_DIRECTORY_CONTEXT, bytes, len, anchor->sk->sign_sk, sig));
    Refex__V1__SignedDirectory sd = REFEX__V1__SIGNED_DIRECTORY__INIT;
    sd.directory = (ProtobufCBinaryData){len, bytes};
    sd.signature = (ProtobufCBinaryData){64, sig};
    assert_ok(refex_pb_pack(&sd.base, &file, &flen));
    refex_directory *got = NULL;
    int rc =
        refex_directory_parse(file, flen, "crafted", anchor->pub.sign_pk, &got, err, sizeof err);
    refex_directory_destroy(&got);
    free(bytes);
    free(file);
    return rc;
}

static void test_malformed_previous_refused(void **state)
{
    (void)state;
    assert_ok(parse_with_previous(0, 0, 0, 0));
    assert_ok(parse_with_previous(32, 32, 32, 1000));
    assert_rc(parse_with_previous(32, 32, 32, 0), REFEX_E_DIRECTORY);    /* no end */
    assert_rc(parse_with_previous(32, 0, 32, 1000), REFEX_E_DIRECTORY);  /* one missing */
    assert_rc(parse_with_previous(31, 32, 32, 1000), REFEX_E_DIRECTORY); /* short */
    assert_rc(parse_with_previous(0, 0, 0, 1000), REFEX_E_DIRECTORY);    /* an end, no keys */
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rotate_overlap),
        cmocka_unit_test(test_rotate_refusals),
        cmocka_unit_test(test_rotate_overlap_running),
        cmocka_unit_test(test_previous_keys_round_trip),
        cmocka_unit_test(test_malformed_previous_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
