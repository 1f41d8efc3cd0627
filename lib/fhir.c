/* Audit entries as FHIR R4 AuditEvents, so a regulator's tooling can read a refex log
 * without knowing refex. Codes come from DICOM and HL7 where they have one, from refex's
 * own code systems where not. Not a FHIR library: this writes the one shape we export. */
#include "fhir.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

/* Code systems for what DICOM and HL7 have no code for. */
#define SYS_REFEX        "https://refex.example/"
#define SYS_EVENT        SYS_REFEX "audit-event"
#define SYS_AGENCY       SYS_REFEX "agency"
#define SYS_PRACTITIONER SYS_REFEX "practitioner-ref"
#define SYS_PERSON       SYS_REFEX "person-ref"
#define SYS_MESSAGE      SYS_REFEX "message-id"
#define SYS_MSGTYPE      SYS_REFEX "message-type"
#define SYS_CASE         SYS_REFEX "case-ref"
#define SYS_PURPOSE      SYS_REFEX "purpose-of-use"
#define SYS_AUDITLOG     SYS_REFEX "audit-log"
#define SYS_DCM          "http://dicom.nema.org/resources/ontology/DCM"
#define SYS_ENTITY_TYPE  "http://terminology.hl7.org/CodeSystem/audit-entity-type"
#define SYS_SOURCE_TYPE  "http://terminology.hl7.org/CodeSystem/security-source-type"

void refex_fhir_instant(char *buf, size_t len, int64_t ms)
{
    /* Years 0..9999 only: anything else is not a time this log could have written. */
    if (ms < -62167219200000LL || ms > 253402300799999LL) {
        snprintf(buf, len, "invalid");
        return;
    }
    long long s = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    time_t t = (time_t)s;
    struct tm tm;
    char base[32];
    if (!gmtime_r(&t, &tm)) {
        snprintf(buf, len, "invalid");
        return;
    }
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03dZ", base, (int)(ms - s * 1000));
}

static json_t *coding(const char *system, const char *code, const char *display)
{
    json_t *c = json_pack("{s:s, s:s}", "system", system, "code", code);
    if (c && display)
        json_object_set_new(c, "display", json_string(display));
    return c;
}

static json_t *ident_ref(const char *system, const char *value)
{
    return json_pack("{s:{s:s, s:s}}", "identifier", "system", system, "value", value);
}

static json_t *fhir_agent(const char *system, const char *value, const char *role_code,
                          const char *role_display, int requestor)
{
    json_t *a = json_pack("{s:o, s:b}", "who", ident_ref(system, value), "requestor", requestor);
    if (a && role_code)
        json_object_set_new(
            a, "type", json_pack("{s:[o]}", "coding", coding(SYS_DCM, role_code, role_display)));
    return a;
}

static void add_detail(json_t *entity, const char *type, const char *value)
{
    json_t *d;
    if (!*value)
        return;
    if (!(d = json_object_get(entity, "detail")))
        json_object_set_new(entity, "detail", d = json_array());
    json_array_append_new(d, json_pack("{s:s, s:s}", "type", type, "valueString", value));
}

/* The entry's comma-separated list, one callback per non-empty element. */
static void each_ref(const char *list, json_t *arr,
                     json_t *(*make)(const char *ref, const void *arg), const void *arg)
{
    char *dup = strdup(list), *save = NULL;
    for (char *t = dup ? strtok_r(dup, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(arr, make(t, arg));
    free(dup);
}

/* Send: we are the source (110153), the peers the destination (110152); receive: the
 * other way round. The requestor is whoever started the exchange. */
static json_t *peer_agent(const char *ref, const void *arg)
{
    const char *event = arg;
    int send = strcmp(event, "send") == 0, recv = strcmp(event, "receive") == 0;
    return fhir_agent(SYS_AGENCY, ref,
                      send   ? "110152"
                      : recv ? "110153"
                             : NULL,
                      send   ? "Destination Role ID"
                      : recv ? "Source Role ID"
                             : NULL,
                      recv);
}

static json_t *agents(const refex_audit_entry *e)
{
    int send = strcmp(e->event, "send") == 0, recv = strcmp(e->event, "receive") == 0;
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    json_array_append_new(arr, fhir_agent(SYS_AGENCY, e->agency,
                                          send   ? "110153"
                                          : recv ? "110152"
                                                 : NULL,
                                          send   ? "Source Role ID"
                                          : recv ? "Destination Role ID"
                                                 : NULL,
                                          !recv));
    each_ref(e->peer, arr, peer_agent, e->event);
    if (*e->practitioner)
        json_array_append_new(
            arr, fhir_agent(SYS_PRACTITIONER, e->practitioner, NULL, NULL, send || recv));
    return arr;
}

static json_t *subject_entity(const char *ref, const void *arg)
{
    (void)arg;
    return json_pack("{s:o, s:o}", "what", ident_ref(SYS_PERSON, ref), "type",
                     coding(SYS_ENTITY_TYPE, "1", "Person"));
}

/* The message (or, for audit-log-used, the log itself) with the lawful basis as details;
 * the case; each person concerned. NULL if there is none of these. */
static json_t *entities(const refex_audit_entry *e)
{
    json_t *arr = json_array(), *main_entity = NULL;
    if (!arr)
        return NULL;
    if (*e->message_id)
        main_entity = json_pack("{s:o, s:o}", "what", ident_ref(SYS_MESSAGE, e->message_id), "type",
                                coding(SYS_MSGTYPE, e->message_type, NULL));
    else if (strcmp(e->event, "audit-log-used") == 0)
        main_entity = json_pack("{s:o, s:o}", "what", ident_ref(SYS_AUDITLOG, e->agency), "type",
                                coding(SYS_ENTITY_TYPE, "2", "System Object"));
    if (main_entity) {
        add_detail(main_entity, "article6", e->article6);
        add_detail(main_entity, "article9", e->article9);
        add_detail(main_entity, "consent", e->consent);
        add_detail(main_entity, "envelope-sha256", e->envelope_hash);
        json_array_append_new(arr, main_entity);
    }
    if (*e->case_ref)
        json_array_append_new(arr, json_pack("{s:o, s:o}", "what", ident_ref(SYS_CASE, e->case_ref),
                                             "type", coding(SYS_ENTITY_TYPE, "4", "Other")));
    each_ref(e->subjects, arr, subject_entity, NULL);
    if (json_array_size(arr))
        return arr;
    json_decref(arr);
    return NULL;
}

int refex_fhir_audit_event(const refex_audit_row *row, json_t **out)
{
    const refex_audit_entry *e = &row->e;
    const char *ev = e->event, *outcome = e->outcome;
    int send = strcmp(ev, "send") == 0, recv = strcmp(ev, "receive") == 0;
    int ok = strcmp(outcome, "success") == 0 || strncmp(outcome, "success:", 8) == 0;
    char id[40], when[40];
    *out = NULL;
    snprintf(id, sizeof id, "audit-%lld", (long long)row->seq);
    refex_fhir_instant(when, sizeof when, e->time_ms);
    /* DICOM actions: R(ead) for what left us or read the log, C(reate) for what arrived. */
    const char *action = send || strcmp(ev, "audit-log-used") == 0 ? "R"
                         : recv || strcmp(ev, "receipt") == 0      ? "C"
                                                                   : "E";
    json_t *type = send   ? coding(SYS_DCM, "110106", "Export")
                   : recv ? coding(SYS_DCM, "110107", "Import")
                          : coding(SYS_EVENT, ev, NULL);
    /* Outcome: 0 success, 8 serious failure (refused), 4 minor failure. */
    json_t *o = json_pack("{s:s, s:s, s:o, s:[o], s:s, s:s, s:s}", "resourceType", "AuditEvent",
                          "id", id, "type", type, "subtype", coding(SYS_EVENT, ev, NULL), "action",
                          action, "recorded", when, "outcome",
                          ok                          ? "0"
                          : strcmp(ev, "reject") == 0 ? "8"
                                                      : "4");
    if (!o)
        return REFEX_E_NOMEM;
    if (strcmp(outcome, "success") != 0)
        json_object_set_new(o, "outcomeDesc", json_string(outcome));
    if (*e->purpose && !strstr(e->purpose, "_UNSPECIFIED"))
        json_object_set_new(
            o, "purposeOfEvent",
            json_pack("[{s:[o]}]", "coding", coding(SYS_PURPOSE, e->purpose, NULL)));
    json_object_set_new(o, "agent", agents(e));
    json_object_set_new(o, "source",
                        json_pack("{s:o, s:[o]}", "observer", ident_ref(SYS_AGENCY, e->agency),
                                  "type", coding(SYS_SOURCE_TYPE, "4", "Application Server")));
    json_t *ents = entities(e);
    if (ents)
        json_object_set_new(o, "entity", ents);
    *out = o;
    return REFEX_OK;
}

/* A deterministic urn:uuid for the bundle entry, from the leaf hash and seq. */
static void entry_urn(char *buf, size_t len, const refex_audit_row *row)
{
    uint8_t in[40] = {0}, h[32];
    if (row->leaf_hash)
        memcpy(in, row->leaf_hash, 32);
    for (int i = 0; i < 8; i++)
        in[32 + i] = (uint8_t)((uint64_t)row->seq >> (56 - 8 * i));
    crypto_hash_sha256(h, in, sizeof in);
    h[6] = (uint8_t)((h[6] & 0x0f) | 0x80); /* RFC 9562 version 8 */
    h[8] = (uint8_t)((h[8] & 0x3f) | 0x80);
    char hex[33];
    refex_hex_encode(hex, h, 16);
    snprintf(buf, len, "urn:uuid:%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16,
             hex + 20);
}

int refex_fhir_bundle_entry(const refex_audit_row *row, json_t **out)
{
    json_t *ev = NULL;
    char urn[64];
    int rc = refex_fhir_audit_event(row, &ev);
    *out = NULL;
    if (rc != REFEX_OK)
        return rc;
    entry_urn(urn, sizeof urn, row);
    *out = json_pack("{s:s, s:o}", "fullUrl", urn, "resource", ev);
    return *out ? REFEX_OK : REFEX_E_NOMEM;
}

int refex_fhir_bundle(json_t *entries, int64_t now_ms, json_t **out)
{
    char now[40];
    refex_fhir_instant(now, sizeof now, now_ms);
    *out = json_pack("{s:s, s:s, s:s, s:O}", "resourceType", "Bundle", "type", "collection",
                     "timestamp", now, "entry", entries);
    return *out ? REFEX_OK : REFEX_E_NOMEM;
}
