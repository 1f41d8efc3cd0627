/* Tests for messages that expired with no report (agents/outbox_expiry.c over
 * agents/agent_store_report.c), against a real SQLite file: a message every recipient
 * receipted is closed by the receipt and never flagged; a stored message past its expiry
 * and the grace with a recipient that sent nothing is flagged for that recipient once,
 * audited once (`no-report`, naming the peer and the message id), shown as
 * expired_no_report, and closed; a receipt that still comes later wins in the status; the
 * sweep waits while offline, for the grace after coming online, and for a message's grace
 * after its expiry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>

#include "testing.h"

#include "agent_testing.h"
#include "codec.h"
#include "envelope.h"
#include "receipt.h"

static int setup(void **state)
{
    agent_fixture *f = agent_fixture_new(T_MIDWIFERY);
    f->a.online = 1;
    f->a.report_grace_s = 1;
    f->a.expiry_online_ms = refex_mono_ms() - 60000; /* online for a minute */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    agent_fixture *f = *state;
    agent_fixture_destroy(&f);
    return 0;
}

static const uint8_t ID_A[16] = {0xaa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const uint8_t ID_B[16] = {0xbb, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* The outbox's envelope (a packed Envelope, contents immaterial here) and its hash, which
 * recipients' receipts name. */
static uint8_t *g_env;
static size_t g_env_len;
static uint8_t g_env_hash[32];

static void make_envelope(void)
{
    if (g_env)
        return;
    static uint8_t header[] = "header-bytes";
    Refex__V1__Envelope e = REFEX__V1__ENVELOPE__INIT;
    e.header = (ProtobufCBinaryData){sizeof header, header};
    assert_ok(refex_pb_pack(&e.base, &g_env, &g_env_len));
    assert_ok(refex_envelope_hash(&e, g_env_hash));
}

/* A message to social-care and police, stored by the broker, that expired `ago_ms` ago. */
static void insert_stored(agent_fixture *f, const uint8_t id[16], char idhex[33], int64_t ago_ms)
{
    make_envelope();
    refex_body_meta m = {
        "MW-0042", "PURPOSE_SAFEGUARDING", "", "", "", "CASE-1", "", "", "", "", "", ""};
    int64_t now = refex_now_ms();
    int settled = 0;
    refex_hex_encode(idhex, id, 16);
    agent_outbox_row r = {idhex,
                          "social-care,police",
                          "REFERRAL",
                          "CASE-1",
                          now - ago_ms - 60000,
                          now - ago_ms,
                          1,
                          g_env,
                          g_env_len,
                          &m,
                          NULL,
                          NULL};
    assert_ok(agent_store_outbox_insert(f->a.store, &r));
    assert_ok(agent_store_outbox_settle(f->a.store, idhex, 0, NULL, now, NULL, 0, &settled));
    assert_true(settled);
}

/* A receipt for our message id signed by recipient T_IDS[who], as the broker relays it. */
static void receive_receipt(agent_fixture *f, const uint8_t id[16], int who, int code)
{
    refex_receipt r;
    uint8_t *blob = NULL;
    size_t len = 0;
    memset(&r, 0, sizeof r);
    memcpy(r.message_id, id, 16);
    snprintf(r.sender, sizeof r.sender, "%s", f->a.agency);
    snprintf(r.recipient, sizeof r.recipient, "%s", T_IDS[who]);
    snprintf(r.signer, sizeof r.signer, "%s", T_IDS[who]);
    r.code = (uint32_t)code;
    r.time_ms = refex_now_ms();
    make_envelope();
    memcpy(r.envelope_hash, g_env_hash, 32); /* a recipient's receipt names our envelope */
    r.has_envelope_hash = 1;
    assert_ok(refex_receipt_sign(&r, f->keys[who]->sk->sign_sk, &blob, &len));
    Refex__V1__SignedReceipt *sr = refex__v1__signed_receipt__unpack(NULL, len, blob);
    free(blob);
    assert_non_null(sr);
    inbox_receipt(&f->a, sr);
    refex__v1__signed_receipt__free_unpacked(sr, NULL);
    agent_fixture_commit(f);
}

static long long sql_int(agent_fixture *f, const char *sql, const char *idhex)
{
    sqlite3_stmt *st = NULL;
    long long v = -1;
    assert_int_equal(sqlite3_prepare_v2(agent_store_db(f->a.store), sql, -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, idhex, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static long long closed(agent_fixture *f, const char *idhex)
{
    return sql_int(f, "SELECT closed FROM outbox WHERE message_id = ?", idhex);
}

static long long no_report_audits(agent_fixture *f, const char *idhex)
{
    return sql_int(f,
                   "SELECT count(*) FROM audit WHERE message_id = ? AND event = 'no-report'"
                   " AND outcome = 'expired' AND peer = 'police'",
                   idhex);
}

/* The sweep now, as the loop runs it (not before a second since the last one). */
static void sweep(agent_fixture *f)
{
    f->a.expiry_next_ms = 0;
    outbox_expiry_sweep(&f->a);
    agent_fixture_commit(f);
}

static json_t *status(agent_fixture *f, const char *idhex)
{
    json_t *st = NULL;
    assert_ok(agent_store_message_status_json(f->a.store, idhex, &st));
    return st;
}

static void test_receipted_message_closed_and_never_flagged(void **state)
{
    agent_fixture *f = *state;
    char a[33];
    insert_stored(f, ID_A, a, 60000);
    receive_receipt(f, ID_A, T_LEAD, 0);
    assert_int_equal(closed(f, a), 0); /* police's is still awaited */
    receive_receipt(f, ID_A, T_POLICE, REFEX_E_NOT_MEMBER);
    assert_int_equal(closed(f, a), 1);
    uint64_t audit = agent_fixture_audit_size(f);
    sweep(f);
    assert_int_equal(agent_fixture_audit_size(f), audit);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM no_reports WHERE message_id = ?", a), 0);
    json_t *st = status(f, a);
    assert_string_equal(json_string_value(json_object_get(st, "state")), "stored");
    assert_int_equal(json_array_size(json_object_get(st, "no_report")), 0);
    json_decref(st);
}

static void test_receipt_from_a_non_recipient_does_not_close(void **state)
{
    agent_fixture *f = *state;
    char a[33];
    insert_stored(f, ID_A, a, 60000);
    receive_receipt(f, ID_A, T_LEAD, 0);
    receive_receipt(f, ID_A, T_LEAD2, 0); /* not a recipient of this message */
    assert_int_equal(closed(f, a), 0);
}

static void test_expired_unreceipted_flagged_once_then_receipt_wins(void **state)
{
    agent_fixture *f = *state;
    char a[33];
    insert_stored(f, ID_A, a, 60000);
    receive_receipt(f, ID_A, T_LEAD, 0); /* police sends nothing */
    uint64_t audit = agent_fixture_audit_size(f);
    sweep(f);
    assert_int_equal(agent_fixture_audit_size(f), audit + 1);
    assert_int_equal(no_report_audits(f, a), 1);
    assert_int_equal(closed(f, a), 1);
    json_t *st = status(f, a);
    assert_string_equal(json_string_value(json_object_get(st, "state")), "expired_no_report");
    json_t *nr = json_object_get(st, "no_report");
    assert_int_equal(json_array_size(nr), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(nr, 0), "recipient")),
                        "police");
    assert_true(json_integer_value(json_object_get(json_array_get(nr, 0), "expires_ms")) > 0);
    assert_true(json_integer_value(json_object_get(json_array_get(nr, 0), "noted_ms")) > 0);
    json_decref(st);
    /* Swept again (closed, and the note is kept once): nothing more. */
    sqlite3_exec(agent_store_db(f->a.store), "UPDATE outbox SET closed = 0", NULL, NULL, NULL);
    sweep(f);
    assert_int_equal(agent_fixture_audit_size(f), audit + 1);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM no_reports WHERE message_id = ?", a), 1);
    /* police's receipt comes after all: it is recorded, audited, and wins. */
    receive_receipt(f, ID_A, T_POLICE, 0);
    assert_int_equal(agent_fixture_audit_size(f), audit + 2);
    st = status(f, a);
    assert_string_equal(json_string_value(json_object_get(st, "state")), "stored");
    assert_int_equal(json_array_size(json_object_get(st, "no_report")), 0);
    assert_int_equal(json_array_size(json_object_get(st, "receipts")), 2);
    json_decref(st);
}

static void test_sweep_waits_for_online_and_grace(void **state)
{
    agent_fixture *f = *state;
    char a[33], b[33];
    insert_stored(f, ID_A, a, 60000);
    insert_stored(f, ID_B, b, 0); /* expired just now: within its grace */
    f->a.report_grace_s = 30;
    f->a.online = 0;
    sweep(f);
    assert_int_equal(closed(f, a), 0);
    f->a.online = 1; /* just came online: the broker's held reports come first */
    sweep(f);
    assert_int_equal(closed(f, a), 0);
    f->a.expiry_online_ms = refex_mono_ms() - 31000;
    sweep(f);
    assert_int_equal(closed(f, a), 1);
    assert_int_equal(closed(f, b), 0);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM no_reports WHERE message_id = ?", a), 2);
    assert_int_equal(sql_int(f, "SELECT count(*) FROM no_reports WHERE message_id = ?", b), 0);
}

/* The referral listing says so too. */
static void test_referral_listing_shows_expired_no_report(void **state)
{
    agent_fixture *f = *state;
    char a[33];
    json_t *rows = NULL;
    insert_stored(f, ID_A, a, 60000);
    sweep(f);
    assert_ok(agent_store_referrals_json(f->a.store, &rows));
    assert_int_equal(json_array_size(rows), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(rows, 0), "status")),
                        "expired, no report");
    json_decref(rows);
}

/* ---- an outbox made before expires_ms and closed ------------------------------------ */

#define DAY_MS (86400000LL)

/* The outbox as it was before expires_ms, store_gen, store_seq and closed, and receipts. */
static const char *OLD_SCHEMA =
    "CREATE TABLE outbox ("
    " message_id TEXT PRIMARY KEY, recipients TEXT NOT NULL, type TEXT NOT NULL,"
    " case_ref TEXT NOT NULL, created_ms INTEGER NOT NULL, envelope BLOB NOT NULL,"
    " state TEXT NOT NULL, error_code INTEGER NOT NULL DEFAULT 0,"
    " error_detail TEXT NOT NULL DEFAULT '', updated_ms INTEGER NOT NULL,"
    " sent_ms INTEGER NOT NULL DEFAULT 0, practitioner TEXT NOT NULL DEFAULT '',"
    " purpose TEXT NOT NULL DEFAULT '', article6 TEXT NOT NULL DEFAULT '',"
    " article9 TEXT NOT NULL DEFAULT '', consent TEXT NOT NULL DEFAULT '',"
    " subjects TEXT NOT NULL DEFAULT '', conversation_id TEXT NOT NULL DEFAULT '',"
    " request_id TEXT NOT NULL DEFAULT '', due_date TEXT NOT NULL DEFAULT '',"
    " local_id TEXT NOT NULL DEFAULT '', submission_hash TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX outbox_state ON outbox(state, created_ms);"
    "CREATE TABLE receipts ("
    " message_id TEXT NOT NULL, recipient TEXT NOT NULL, code INTEGER NOT NULL,"
    " signer TEXT NOT NULL, time_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,"
    " receipt BLOB NOT NULL, PRIMARY KEY (message_id, recipient));";

/* A stored row of the old outbox, to police, made at created_ms, with this envelope. */
static void old_row(sqlite3 *db, const char *id, int64_t created_ms, const uint8_t *env, size_t len)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO outbox(message_id, recipients, type,"
                                        " case_ref, created_ms, envelope, state, updated_ms)"
                                        " VALUES (?1, 'police', 'REFERRAL', 'CASE-1', ?2, ?3,"
                                        " 'stored', ?2)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, created_ms);
    sqlite3_bind_blob(st, 3, env, (int)len, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

/* An envelope from us to police that expires 30 days after created_ms. */
static void seal_30_days(agent_fixture *f, int64_t created_ms, uint8_t **env, size_t *len,
                         char idhex[33])
{
    uint8_t id[16];
    refex_agency police;
    const refex_agency *to[1] = {&police};
    refex_agency_from_pubkeys(&police, &f->keys[T_POLICE]->pub, NULL);
    refex_seal_params p = {.sender = f->a.agency,
                           .sign_sk = f->keys[T_MIDWIFERY]->sk->sign_sk,
                           .recipients = to,
                           .n_recipients = 1,
                           .type = REFEX__V1__MESSAGE_TYPE__REFERRAL,
                           .case_ref = "CASE-1",
                           .created_at_ms = created_ms,
                           .expires_at_ms = created_ms + 30 * DAY_MS};
    static const uint8_t body[] = "{}";
    assert_ok(refex_envelope_seal(&p, body, sizeof body - 1, env, len, id));
    refex_hex_encode(idhex, id, 16);
}

static long long old_int(sqlite3 *db, const char *sql, const char *id)
{
    sqlite3_stmt *st = NULL;
    long long v = -1;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void reopen(const char *path, agent_store **s)
{
    char err[256];
    agent_store_close(s);
    if (agent_store_open(path, s, err, sizeof err) != REFEX_OK)
        fail_msg("agent_store_open: %s", err);
}

/* At the upgrade that adds expires_ms, each row takes its envelope's expiry (30 days here,
 * not the default 7), a row whose envelope does not parse the default; a row receipted by
 * every recipient is closed. Neither fill runs again at the next open. */
static void test_upgrade_fills_expiry_from_envelope_once(void **state)
{
    agent_fixture *f = *state;
    char path[300], sealed[33];
    uint8_t *env = NULL;
    size_t len = 0;
    sqlite3 *db = NULL;
    agent_store *s = NULL;
    int64_t created = refex_now_ms() - DAY_MS;
    static const uint8_t junk[] = "not an envelope";
    snprintf(path, sizeof path, "%s/old.db", f->dir);
    seal_30_days(f, created, &env, &len, sealed);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, OLD_SCHEMA, NULL, NULL, NULL), SQLITE_OK);
    old_row(db, sealed, created, env, len);
    old_row(db, "junk", created, junk, sizeof junk);
    assert_int_equal(sqlite3_exec(db,
                                  "INSERT INTO receipts VALUES ('junk', 'police', 0, 'police',"
                                  " 1, 1, x'00')",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    free(env);

    reopen(path, &s);
    db = agent_store_db(s);
    assert_int_equal(old_int(db, "SELECT expires_ms FROM outbox WHERE message_id = ?", sealed),
                     created + 30 * DAY_MS);
    assert_int_equal(old_int(db, "SELECT expires_ms FROM outbox WHERE message_id = ?", "junk"),
                     created + REFEX_DEFAULT_TTL_MS);
    assert_int_equal(old_int(db, "SELECT closed FROM outbox WHERE message_id = ?", sealed), 0);
    assert_int_equal(old_int(db, "SELECT closed FROM outbox WHERE message_id = ?", "junk"), 1);
    assert_int_equal(old_int(db,
                             "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name"
                             " IN ('outbox_open_expiry', 'outbox_open_updated', ?)",
                             "outbox_open"),
                     3);

    /* Sentinels: a fill that ran again would overwrite them. */
    assert_int_equal(
        sqlite3_exec(db, "UPDATE outbox SET expires_ms = 12345, closed = 0", NULL, NULL, NULL),
        SQLITE_OK);
    reopen(path, &s);
    db = agent_store_db(s);
    assert_int_equal(
        old_int(db, "SELECT count(*) FROM outbox WHERE expires_ms = 12345 AND closed = 0", NULL),
        2);
    agent_store_close(&s);
}

int main(void)
{
    if (refex_init() != REFEX_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_receipted_message_closed_and_never_flagged, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_receipt_from_a_non_recipient_does_not_close, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_expired_unreceipted_flagged_once_then_receipt_wins,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_waits_for_online_and_grace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_referral_listing_shows_expired_no_report, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_fills_expiry_from_envelope_once, setup,
                                        teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    free(g_env);
    return failed;
}
