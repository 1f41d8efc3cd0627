/* Field lookup by JSON key for pbjson.c: a key is a field's proto name or its
 * lowerCamelCase JSON name (the proto3 JSON mapping), compared in place without building
 * either string. protobuf-c's descriptors carry only the proto name, and refex.proto sets
 * no json_name option, so the JSON name is always the derived one. Not value conversion. */
#include "pbjson_names.h"

#include <string.h>

bool refex_pbjson_names_is_json_name(const char *name, const char *key, size_t len)
{
    size_t j = 0;
    bool upper = false;

    for (const char *p = name; *p != '\0'; p++) {
        char want = *p;

        if (want == '_') {
            upper = true;
            continue;
        }
        if (upper && want >= 'a' && want <= 'z')
            want = (char)(want - 'a' + 'A');
        upper = false;
        if (j == len || key[j] != want)
            return false;
        j++;
    }
    return j == len;
}

const ProtobufCFieldDescriptor *refex_pbjson_names_find(const ProtobufCMessageDescriptor *desc,
                                                        const char *key, size_t len, bool *alias)
{
    const ProtobufCFieldDescriptor *f = NULL;

    *alias = false;
    if (strlen(key) != len) /* an embedded NUL names no field */
        return NULL;
    f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
    if (f != NULL)
        return f;
    for (unsigned i = 0; i < desc->n_fields; i++) {
        if (refex_pbjson_names_is_json_name(desc->fields[i].name, key, len)) {
            *alias = true;
            return &desc->fields[i];
        }
    }
    return NULL;
}

const json_t *refex_pbjson_names_get(const json_t *obj, const ProtobufCFieldDescriptor *f)
{
    const char *key;
    size_t key_len;
    json_t *val;

    /* jansson's API is not const-correct; the object is only read. */
    json_object_keylen_foreach((json_t *)obj, key, key_len, val)
    {
        if (json_is_null(val) || strlen(key) != key_len)
            continue;
        if (strcmp(key, f->name) == 0 || refex_pbjson_names_is_json_name(f->name, key, key_len))
            return val;
    }
    return NULL;
}
