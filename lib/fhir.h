/* FHIR R4 for the audit log: one AuditEvent (IHE ATNA profile) per audit entry, and the
 * collection Bundle an export hands to a regulator. Mapping only: reading the log is
 * audit_reader.c's, and nothing here sees a message body (the log holds none). */
#ifndef REFEX_FHIR_H
#define REFEX_FHIR_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "audit_reader.h"
#include "refex/error.h"

/* "YYYY-MM-DDTHH:MM:SS.mmmZ", a FHIR instant, for years 0..9999; "invalid" otherwise. */
void refex_fhir_instant(char *buf, size_t len, int64_t ms);
/* The entry as an AuditEvent: DICOM 110106 Export / 110107 Import for send / receive, the
 * refex audit-event code system for the others; agencies, practitioners, messages, cases
 * and people as identifiers only; the lawful basis and consent as entity details. */
int refex_fhir_audit_event(const refex_audit_row *row, json_t **out) REFEX_NODISCARD;
/* {"fullUrl": a urn:uuid derived from the leaf hash and seq, "resource": the AuditEvent}. */
int refex_fhir_bundle_entry(const refex_audit_row *row, json_t **out) REFEX_NODISCARD;
/* A Bundle of type collection holding `entries` (a new reference is taken), stamped with
 * now_ms. */
int refex_fhir_bundle(json_t *entries, int64_t now_ms, json_t **out) REFEX_NODISCARD;

#endif
