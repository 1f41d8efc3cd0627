/* Generic protobuf-c <-> JSON converter, driven only by protobuf-c descriptors, so that
 * tools and agents can show and accept message bodies as JSON without per-message code.
 * What it writes is not quite the canonical proto3 JSON mapping: keys are the proto field
 * names (snake_case), bytes are standard padded base64, enums are value names, and 64-bit
 * integers are JSON integers (uint64 values above INT64_MAX are written as strings).
 * What it reads is what the mapping requires a parser to accept: a field under its proto
 * name or its lowerCamelCase JSON name (estimated_due_date or estimatedDueDate, never
 * both), enums by name or number, any integer as a JSON number (1e5 and 100000.0 too, if
 * integral) or a decimal string, bytes as standard or URL-safe base64 with or without
 * padding, and null for a field's default. Float and double take JSON numbers only (refex's
 * schema has none); Timestamp and Duration are not special (the schema uses neither). */
#ifndef REFEX_PBJSON_H
#define REFEX_PBJSON_H

#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "refex/error.h"

/* Deepest message nesting accepted or produced; the top-level message counts as 1. */
#define REFEX_PBJSON_MAX_DEPTH 32

/* msg -> new JSON object (caller json_decref). Fields equal to their proto3 default (0,
 * "", empty bytes, empty repeated, unset submessage/oneof) are omitted; a set oneof
 * member, a set proto2/proto3-optional field and a present (even empty) submessage are
 * written. REFEX_E_INVAL for NULL arguments or a malformed in-memory message,
 * REFEX_E_JSON for a message JSON cannot represent (NaN/infinite float, string that is
 * not UTF-8, nesting deeper than REFEX_PBJSON_MAX_DEPTH), REFEX_E_NOMEM. */
int refex_pbjson_to_json(const ProtobufCMessage *msg, json_t **out) REFEX_NODISCARD;

/* JSON object -> newly allocated message of type desc (free with
 * protobuf_c_message_free_unpacked(msg, NULL)). Unknown keys, a field under both its
 * names, wrong types, out-of-range or fractional numbers, unknown enum names and numbers,
 * bad base64, two members of one oneof, missing required (proto2) fields and nesting
 * deeper than REFEX_PBJSON_MAX_DEPTH are REFEX_E_JSON, with a message naming the
 * offending field path as written (e.g. "referral.subject.gestation_weeks: expected
 * integer") written to err (errlen bytes, always NUL-terminated; err may be NULL when
 * errlen is 0). JSON null for a field leaves its default. *out is NULL on error. */
int refex_pbjson_from_json(const ProtobufCMessageDescriptor *desc, const json_t *json,
                           ProtobufCMessage **out, char *err, size_t errlen) REFEX_NODISCARD;

#endif
