/* The agent's audit log: one row per event (send, receive, reject, receipt, non-delivery,
 * audit-log-used),
 * each with canonical, length-prefixed binary bytes and their RFC 6962 leaf hash, so a
 * Merkle tree can be built over the rows. Rows are append-only (SQL triggers refuse
 * UPDATE and DELETE). Fields follow FHIR AuditEvent / IHE ATNA; people appear only as
 * references, never by name. */
#ifndef REFEX_AUDIT_H
#define REFEX_AUDIT_H

#include <jansson.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"

#define REFEX_AUDIT_CONTEXT "refex/audit/v1"

typedef struct {
    int64_t time_ms;
    const char *event;         /* send | receive | reject | receipt | non-delivery |
                                  audit-log-used */
    const char *outcome;       /* success, the error name (e.g. E_BAD_SIGNATURE), or for
                                  audit-log-used "success: <command>" */
    const char *agency;        /* our agency */
    const char *practitioner;  /* practitioner reference, "" if none */
    const char *peer;          /* other agency ids, comma-separated */
    const char *message_id;    /* 32 hex chars, or "" */
    const char *message_type;  /* e.g. REFERRAL */
    const char *case_ref;      /* pseudonymous case reference, or "" */
    const char *envelope_hash; /* 64 hex chars, or "" */
    const char *purpose;       /* PurposeOfUse name */
    const char *article6;      /* Article6Basis name */
    const char *article9;      /* Article9Condition name */
    const char *consent;       /* ConsentStatus name */
    const char *subjects;      /* pseudonymous references of the people concerned,
                                  comma-separated (subject first, then parents), or "" */
} refex_audit_entry;

/* What readers select from the audit table, and the column numbers it gives: seq, time,
 * the 14 text fields in refex_audit_entry's order (event .. subjects), entry, leaf_hash.
 * The one place the column list is written. */
#define REFEX_AUDIT_SELECT                                                                         \
    "SELECT seq, time_ms, event, outcome, agency, practitioner, peer, message_id, message_type,"   \
    " case_ref, envelope_hash, purpose, article6, article9, consent, subjects, entry, leaf_hash"   \
    " FROM audit"
enum {
    REFEX_AUDIT_COL_SEQ,
    REFEX_AUDIT_COL_TIME,
    REFEX_AUDIT_COL_TEXT, /* the first of REFEX_AUDIT_N_TEXT */
    REFEX_AUDIT_COL_ENTRY = REFEX_AUDIT_COL_TEXT + 14,
    REFEX_AUDIT_COL_LEAF,
};
#define REFEX_AUDIT_N_TEXT 14

/* An entry whose text fields point at t[0..13] (borrowed), in the order above. */
refex_audit_entry refex_audit_entry_of(int64_t time_ms, const char *const t[REFEX_AUDIT_N_TEXT]);

/* Creates the audit table and its append-only triggers if missing. */
int refex_audit_init(sqlite3 *db) REFEX_NODISCARD;
/* Canonical leaf bytes: the context string with its NUL, then each field as a 4-byte
 * big-endian length and its bytes (time as 8 bytes big-endian, ids as raw bytes). */
int refex_audit_encode(const refex_audit_entry *e, uint8_t **out, size_t *out_len) REFEX_NODISCARD;
/* Appends one entry. Run inside the caller's transaction with the event it records. */
int refex_audit_append(sqlite3 *db, const refex_audit_entry *e, int64_t *seq_out) REFEX_NODISCARD;
/* Entries with seq > after, oldest first, at most limit, as a JSON array. */
int refex_audit_list_json(sqlite3 *db, int64_t after, int64_t limit, json_t **out) REFEX_NODISCARD;

/* Progress of a long verify: entries done so far (called every 1024 and at the end). */
typedef void (*refex_audit_progress_fn)(void *ctx, uint64_t done);

#endif
