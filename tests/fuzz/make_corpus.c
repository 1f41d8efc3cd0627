/* Writes the fuzz targets' seed corpora: make_corpus DIR puts a handful of valid inputs
 * per target in DIR/<target>/, built with the real library from the fixed keys of
 * fuzz_fixture.c (so the signed ones verify in the targets). Run once and commit the
 * output (tests/fuzz/corpus/); signing and sealing are randomised, so a rerun differs in
 * bytes, not in kind. Not a fuzz target: it is built with the fuzz build but runs alone. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "body.h"
#include "checkpoint.h"
#include "codec.h"
#include "envelope.h"
#include "fuzz_fixture.h"
#include "grant.h"
#include "policy.h"
#include "merkle.h"
#include "receipt.h"
#include "util.h"

static const char *g_dir;

static void put(const char *target, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_dir, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", g_dir, target, name);
    if (refex_file_write(path, data, len, 0644) != REFEX_OK) {
        fprintf(stderr, "make_corpus: cannot write %s\n", path);
        exit(1);
    }
}

static void must(int rc, const char *what)
{
    if (rc != REFEX_OK) {
        fprintf(stderr, "make_corpus: %s: %s\n", what, refex_strerror(rc));
        exit(1);
    }
}

/* m as the `kind` command of a frame, into frame_fuzz's corpus. */
static void put_frame(const char *name, Refex__V1__Frame__KindCase kind, const ProtobufCMessage *m)
{
    Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
    uint8_t *frame;
    size_t len;
    must(refex_frame_wrap(&f, kind, m), "wrap");
    f.version = REFEX_PROTOCOL_VERSION; /* wrap leaves it 0, which any receiver refuses */
    must(refex_frame_pack(&f, &frame, &len), "pack");
    put("frame_fuzz", name, frame, len);
    free(frame);
}

static const char REFERRAL[] =
    "{\"kind\":\"REFERRAL_PRE_BIRTH\",\"subject\":{\"kind\":\"SUBJECT_UNBORN\",\"reference\":"
    "\"SUBJ-7f3a\",\"estimated_due_date\":\"2025-11-02\",\"gestation_weeks\":12},\"parents\":"
    "[{\"reference\":\"P-1\",\"relationship\":\"mother\"}],\"concerns\":["
    "\"CONCERN_SUBSTANCE_MISUSE\"],\"referrer\":{\"reference\":\"MW-0042\",\"role\":\"midwife\"},"
    "\"urgency\":\"URGENCY_URGENT\",\"lawful_basis\":{\"article6\":\"ARTICLE6_PUBLIC_TASK\","
    "\"article9\":\"ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST\"},\"consent\":"
    "\"CONSENT_NOT_SOUGHT_SAFEGUARDING\",\"summary\":\"Pre-birth referral\",\"attachments\":[{"
    "\"filename\":\"note.txt\",\"content_type\":\"text/plain\",\"data\":\"aGVsbG8=\"}],"
    "\"purpose\":\"PURPOSE_SAFEGUARDING\"}";
static const char CASE_UPDATE[] =
    "{\"case_ref\":\"CASE-2024-0117\",\"update_type\":\"CASE_UPDATE_CHILD_PROTECTION_PLAN\","
    "\"summary\":\"Plan agreed\",\"published_by\":{\"reference\":\"SW-0007\"},\"lawful_basis\":"
    "{\"article6\":\"ARTICLE6_LEGAL_OBLIGATION\",\"article9\":\"ARTICLE9_SOCIAL_PROTECTION_LAW\"},"
    "\"purpose\":\"PURPOSE_CASE_MANAGEMENT\"}";

/* A body of type from JSON text, packed. */
static void body(int type, const char *text, uint8_t **out, size_t *len)
{
    char err[256];
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j)
        exit(1);
    must(refex_body_pack_json(type, j, out, len, err, sizeof err), err);
    json_decref(j);
}

/* Envelopes between the lead and the member, alone and in Send / Deliver frames. */
static void envelopes(const fuzz_fixture *fx)
{
    /* The lead's referral and case update to the member, which the fixture's policy allows;
     * the member's referral to the lead, which the policy allows at the broker but which is
     * not for our fixed recipient (the member) to accept. */
    const struct {
        int type;
        const char *json, *case_ref, *name, *from, *to;
        const fuzz_keys *keys;
    } kinds[] = {
        {1, REFERRAL, NULL, "referral", FUZZ_LEAD, FUZZ_MEMBER, &fx->lead},
        {5, CASE_UPDATE, "CASE-2024-0117", "update", FUZZ_LEAD, FUZZ_MEMBER, &fx->lead},
        {1, REFERRAL, NULL, "referral-from-member", FUZZ_MEMBER, FUZZ_LEAD, &fx->member},
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        const refex_agency *to[] = {refex_directory_find(fx->dir, kinds[k].to)};
        uint8_t *b, *env, *frame, id[16];
        size_t blen, elen, flen;
        char name[64];
        body(kinds[k].type, kinds[k].json, &b, &blen);
        refex_seal_params p = {.sender = kinds[k].from,
                               .sign_sk = kinds[k].keys->sign_sk,
                               .recipients = to,
                               .n_recipients = 1,
                               .type = kinds[k].type,
                               .case_ref = kinds[k].case_ref,
                               .created_at_ms = FUZZ_NOW_MS};
        must(refex_envelope_seal(&p, b, blen, &env, &elen, id), "seal");
        put("envelope_fuzz", kinds[k].name, env, elen);
        Refex__V1__Envelope *e = refex__v1__envelope__unpack(NULL, elen, env);
        Refex__V1__Send send = REFEX__V1__SEND__INIT;
        Refex__V1__Deliver deliver = REFEX__V1__DELIVER__INIT;
        Refex__V1__Frame f = REFEX__V1__FRAME__INIT;
        send.envelope = deliver.envelope = e;
        must(refex_frame_wrap(&f, REFEX__V1__FRAME__KIND_SEND, &send.base), "wrap");
        f.version = REFEX_PROTOCOL_VERSION; /* wrap leaves it 0, which any receiver refuses */
        must(refex_frame_pack(&f, &frame, &flen), "pack");
        snprintf(name, sizeof name, "send-%s", kinds[k].name);
        put("frame_fuzz", name, frame, flen);
        free(frame);
        must(refex_frame_wrap(&f, REFEX__V1__FRAME__KIND_DELIVER, &deliver.base), "wrap");
        f.version = REFEX_PROTOCOL_VERSION; /* wrap leaves it 0, which any receiver refuses */
        must(refex_frame_pack(&f, &frame, &flen), "pack");
        snprintf(name, sizeof name, "deliver-%s", kinds[k].name);
        put("frame_fuzz", name, frame, flen);
        free(frame);
        refex__v1__envelope__free_unpacked(e, NULL);
        free(env);
        free(b);
        if (k < 2) /* the third body is the first one again */
            put("body_json_fuzz", kinds[k].name, kinds[k].json, strlen(kinds[k].json));
    }
    Refex__V1__Ping ping = REFEX__V1__PING__INIT;
    ping.nonce = 42;
    put_frame("ping", REFEX__V1__FRAME__KIND_PING, &ping.base);
}

static void receipts(const fuzz_fixture *fx)
{
    refex_receipt r;
    uint8_t *out;
    size_t len;
    memset(&r, 0, sizeof r);
    memset(r.message_id, 7, sizeof r.message_id);
    snprintf(r.sender, sizeof r.sender, FUZZ_LEAD);
    snprintf(r.recipient, sizeof r.recipient, FUZZ_MEMBER);
    snprintf(r.signer, sizeof r.signer, FUZZ_MEMBER);
    r.time_ms = FUZZ_NOW_MS;
    must(refex_receipt_sign(&r, fx->member.sign_sk, &out, &len), "receipt");
    put("receipt_fuzz", "delivered", out, len);
    Refex__V1__ReceiptDeliver rd = REFEX__V1__RECEIPT_DELIVER__INIT;
    rd.receipt = refex__v1__signed_receipt__unpack(NULL, len, out);
    put_frame("receipt", REFEX__V1__FRAME__KIND_RECEIPT, &rd.base);
    refex__v1__signed_receipt__free_unpacked(rd.receipt, NULL);
    free(out);
    r.code = 3;
    memset(r.envelope_hash, 9, 32);
    r.has_envelope_hash = 1;
    must(refex_receipt_sign(&r, fx->member.sign_sk, &out, &len), "receipt");
    put("receipt_fuzz", "refused-hash", out, len);
    free(out);
    snprintf(r.signer, sizeof r.signer, FUZZ_REVOKED);
    must(refex_receipt_sign(&r, fx->revoked.sign_sk, &out, &len), "receipt");
    put("receipt_fuzz", "revoked-signer", out, len);
    free(out);
}

static void grants(const fuzz_fixture *fx)
{
    refex_grant g;
    refex_subscription s;
    uint8_t *out;
    size_t len;
    memset(&g, 0, sizeof g);
    snprintf(g.case_ref, sizeof g.case_ref, "CASE-2024-0117");
    snprintf(g.lead, sizeof g.lead, FUZZ_LEAD);
    snprintf(g.member, sizeof g.member, FUZZ_MEMBER);
    g.issued_at_ms = FUZZ_NOW_MS;
    g.serial = 1;
    must(refex_grant_sign(&g, fx->lead.sign_sk, &out, &len), "grant");
    put("grant_fuzz", "all-types", out, len);
    free(out);
    g.types[0] = 2, g.types[1] = 5, g.n_types = 2, g.valid_until_ms = FUZZ_NOW_MS + 86400000;
    must(refex_grant_sign(&g, fx->lead.sign_sk, &out, &len), "grant");
    put("grant_fuzz", "two-types", out, len);
    Refex__V1__GrantNotice gn = REFEX__V1__GRANT_NOTICE__INIT;
    gn.grant = refex__v1__signed_grant__unpack(NULL, len, out);
    put_frame("grant-notice", REFEX__V1__FRAME__KIND_GRANT_NOTICE, &gn.base);
    refex__v1__signed_grant__free_unpacked(gn.grant, NULL);
    free(out);
    g.revoked = 1, g.serial = 2;
    must(refex_grant_sign(&g, fx->lead.sign_sk, &out, &len), "grant");
    put("grant_fuzz", "revoked", out, len);
    free(out);

    memset(&s, 0, sizeof s);
    snprintf(s.agency, sizeof s.agency, FUZZ_MEMBER);
    s.issued_at_ms = FUZZ_NOW_MS;
    s.serial = 1;
    must(refex_subscription_sign(&s, fx->member.sign_sk, &out, &len), "subscription");
    put("subscription_fuzz", "every-case", out, len);
    free(out);
    snprintf(s.case_ref, sizeof s.case_ref, "CASE-2024-0117");
    s.types[0] = 3, s.n_types = 1, s.serial = 2;
    must(refex_subscription_sign(&s, fx->member.sign_sk, &out, &len), "subscription");
    put("subscription_fuzz", "one-case", out, len);
    Refex__V1__SubscribeSubmit sub = REFEX__V1__SUBSCRIBE_SUBMIT__INIT;
    sub.subscription = refex__v1__signed_subscription__unpack(NULL, len, out);
    put_frame("subscribe", REFEX__V1__FRAME__KIND_SUBSCRIBE, &sub.base);
    refex__v1__signed_subscription__free_unpacked(sub.subscription, NULL);
    free(out);
    s.unsubscribed = 1, s.serial = 3;
    must(refex_subscription_sign(&s, fx->member.sign_sk, &out, &len), "subscription");
    put("subscription_fuzz", "unsubscribed", out, len);
    free(out);
}

static void checkpoints(const fuzz_fixture *fx)
{
    refex_checkpoint c;
    char *note, *cosigned, *twice;
    memset(&c, 0, sizeof c);
    snprintf(c.origin, sizeof c.origin, FUZZ_LOG_NAME);
    c.size = 0;
    must(refex_merkle_root(NULL, 0, c.root), "root");
    must(refex_checkpoint_sign(&c, FUZZ_LOG_NAME, fx->log_sk, &note), "sign");
    put("checkpoint_fuzz", "empty-tree", note, strlen(note));
    free(note);
    c.size = 12345;
    memset(c.root, 0xab, 32);
    must(refex_checkpoint_sign(&c, FUZZ_LOG_NAME, fx->log_sk, &note), "sign");
    put("checkpoint_fuzz", "signed", note, strlen(note));
    must(refex_checkpoint_cosign(note, FUZZ_WITNESS, fx->witness_sk, 1767225600, &cosigned),
         "cosign");
    put("checkpoint_fuzz", "cosigned", cosigned, strlen(cosigned));
    Refex__V1__CheckpointSubmit cs = REFEX__V1__CHECKPOINT_SUBMIT__INIT;
    cs.note = note;
    put_frame("checkpoint", REFEX__V1__FRAME__KIND_CHECKPOINT, &cs.base);
    must(refex_checkpoint_cosign(cosigned, "other.witness", fx->lead.sign_sk, 1767225601, &twice),
         "cosign");
    put("checkpoint_fuzz", "cosigned-twice", twice, strlen(twice));
    free(twice);
    free(cosigned);
    free(note);
}

/* consistency_fuzz's layout: size1, size2 (little-endian), root1, root2, proof hashes. */
static void consistency(void)
{
    static const uint64_t pairs[][2] = {{1, 1}, {1, 2}, {3, 7}, {4, 8}, {6, 13}, {15, 16}};
    uint8_t leaves[16][32];
    for (int i = 0; i < 16; i++) {
        uint8_t d = (uint8_t)i;
        refex_merkle_leaf_hash(&d, 1, leaves[i]);
    }
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
        uint64_t m = pairs[k][0], n = pairs[k][1];
        uint8_t buf[80 + 32 * 64], (*proof)[32] = NULL;
        size_t plen = 0;
        char name[32];
        for (int i = 0; i < 8; i++)
            buf[i] = (uint8_t)(m >> 8 * i), buf[8 + i] = (uint8_t)(n >> 8 * i);
        must(refex_merkle_root((const uint8_t(*)[32])leaves, m, buf + 16), "root");
        must(refex_merkle_root((const uint8_t(*)[32])leaves, n, buf + 48), "root");
        must(refex_merkle_consistency_proof((const uint8_t(*)[32])leaves, m, n, &proof, &plen),
             "proof");
        if (plen)
            memcpy(buf + 80, proof, plen * 32);
        free(proof);
        snprintf(name, sizeof name, "%llu-%llu", (unsigned long long)m, (unsigned long long)n);
        put("consistency_fuzz", name, buf, 80 + plen * 32);
    }
}

/* The fixture's signed directory file (with its policy), an unsigned one, and signed ones
 * whose policy has only a lead role, or more rules than the fixture's. */
static void directories(const fuzz_fixture *fx)
{
    char path[4096];
    refex_directory *d;
    refex_policy *p;
    const char *names[] = {"signed", "unsigned", "policy-lead-only", "policy-wide"};
    snprintf(path, sizeof path, "%s/directory_fuzz", g_dir);
    mkdir(path, 0755);
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof path, "%s/directory_fuzz/%s", g_dir, names[k]);
        must(refex_directory_new(&d), "directory");
        for (size_t i = 0; i < refex_directory_count(fx->dir); i++)
            must(refex_directory_add(d, refex_directory_at(fx->dir, i), 0), "add");
        must(refex_directory_policy_edit(d, &p), "policy");
        const refex_policy *from = refex_directory_policy(fx->dir);
        must(refex_policy_set_lead(p, k == 2 ? "health" : refex_policy_lead(from)), "lead");
        for (size_t i = 0; k != 2 && i < refex_policy_count(from); i++) {
            const refex_policy_rule *r = refex_policy_at(from, i);
            must(refex_policy_allow(p, r->sender_role, r->type, r->recipient_role), "allow");
        }
        for (int type = 1; k == 3 && type <= 5; type++)
            must(refex_policy_allow(p, "police", type, "health"), "allow");
        if (k != 1)
            must(refex_directory_sign(d, fx->anchor_sk), "sign");
        must(refex_directory_save(d, path), "save");
        refex_directory_destroy(&d);
    }
}

/* Requests as the CLI and librefex-client send them. */
static void control(void)
{
    static const char *const reqs[][2] = {
        {"inbox-list", "{\"cmd\":\"inbox_list\",\"after\":10,\"limit\":5,\"unacked\":true}"},
        {"inbox-ack", "{\"cmd\":\"inbox_ack\",\"id\":\"0123456789abcdef0123456789abcdef\","
                      "\"from\":\"la-north\"}"},
        {"grant", "{\"cmd\":\"grant\",\"case\":\"CASE-1\",\"member\":\"health-south\","
                  "\"types\":[\"CASE_UPDATE_BIRTH\"],\"until_ms\":1767225600000}"},
        {"subscribe", "{\"cmd\":\"subscribe\",\"case\":\"CASE-1\",\"types\":[],\"all\":false}"},
        {"status", "{\"cmd\":\"status\"}"},
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++)
        put("control_json_fuzz", reqs[i][0], reqs[i][1], strlen(reqs[i][1]));
    char send[4096];
    snprintf(send, sizeof send,
             "{\"cmd\":\"send\",\"to\":[\"health-south\"],\"type\":\"REFERRAL\","
             "\"case\":\"CASE-1\",\"ttl_seconds\":3600,\"wait\":true,\"local_id\":"
             "\"ehr-42\",\"body\":%s}",
             REFERRAL);
    put("control_json_fuzz", "send", send, strlen(send));
    snprintf(send, sizeof send, "{\"cmd\":\"send\",\"type\":\"CASE_UPDATE\",\"body\":%s}",
             CASE_UPDATE);
    put("control_json_fuzz", "send-update", send, strlen(send));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus DIR\n");
        return 2;
    }
    g_dir = argv[1];
    mkdir(g_dir, 0755);
    const fuzz_fixture *fx = fuzz_fixture_get();
    envelopes(fx);
    receipts(fx);
    grants(fx);
    checkpoints(fx);
    consistency();
    directories(fx);
    control();
    put("body_json_fuzz", "empty", "{}", 2);
    return 0;
}
