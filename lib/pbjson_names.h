/* The two names a field has in proto3 JSON: its proto name (estimated_due_date), which
 * pbjson writes, and the lowerCamelCase JSON name derived from it (estimatedDueDate),
 * which libprotobuf writes by default; a parser must accept both. Not the conversion of
 * values (pbjson.c). */
#ifndef REFEX_PBJSON_NAMES_H
#define REFEX_PBJSON_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

/* Whether key (len bytes, not NUL-terminated) is the lowerCamelCase JSON name of a field
 * called name, by protobuf's rule: each '_' dropped and the letter after it upper-cased. */
bool refex_pbjson_names_is_json_name(const char *name, const char *key, size_t len);

/* The field of desc that key (len bytes) names, by its proto name first and then by its
 * JSON name; NULL if none. *alias is set when it matched only as a JSON name that differs
 * from the proto name, i.e. when the object could also hold the field under f->name. */
const ProtobufCFieldDescriptor *refex_pbjson_names_find(const ProtobufCMessageDescriptor *desc,
                                                        const char *key, size_t len, bool *alias);

/* The non-null value obj holds for f under either of its names, or NULL. */
const json_t *refex_pbjson_names_get(const json_t *obj, const ProtobufCFieldDescriptor *f);

#endif
