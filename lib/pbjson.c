/* Generic protobuf-c <-> JSON conversion, walking ProtobufCMessageDescriptor tables so that
 * any message of the wire schema can be shown to or taken from a human without per-type
 * code. It does not validate business rules (which fields a body must carry); it only
 * guarantees that what it builds is a well-formed message that
 * protobuf_c_message_free_unpacked(msg, NULL) releases completely, even on error. */
#include "pbjson.h"

#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "pbjson_names.h"
#include "util.h"

_Static_assert(sizeof(json_int_t) == sizeof(int64_t), "jansson must use 64-bit integers");

#define PATH_BUF  512 /* field path kept for error messages, truncated beyond this */
#define SHOW_MAX  64  /* bytes of an offending input (key, enum name) quoted in an error */
#define ROOT_NAME "(top level)"

/* State of one from_json call: where we are, for error messages, and how deep. */
struct conv {
    char *err;
    size_t errlen;
    char path[PATH_BUF];
    size_t pathlen;
    int depth;
};

/* ---- error reporting -------------------------------------------------------------- */

/* Copies at most SHOW_MAX bytes of untrusted text, replacing anything that is not
 * printable ASCII so that an error message cannot carry control characters. */
static void show(char *dst, size_t dstlen, const char *s, size_t n)
{
    size_t i, j = 0;

    for (i = 0; i < n && i < SHOW_MAX && j + 1 < dstlen; i++) {
        unsigned char ch = (unsigned char)s[i];
        dst[j++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (i < n) {
        for (int k = 0; k < 3 && j + 1 < dstlen; k++)
            dst[j++] = '.';
    }
    if (dstlen > 0)
        dst[j] = '\0';
}

static void path_append(struct conv *c, const char *s, size_t n)
{
    char buf[SHOW_MAX + 4];
    size_t len;

    show(buf, sizeof(buf), s, n);
    len = strlen(buf);
    if (len > sizeof(c->path) - 1 - c->pathlen)
        len = sizeof(c->path) - 1 - c->pathlen;
    memcpy(c->path + c->pathlen, buf, len);
    c->pathlen += len;
    c->path[c->pathlen] = '\0';
}

/* Appends ".name" (or "name" at the top) and returns the mark to restore with path_pop. */
static size_t path_push_name(struct conv *c, const char *name, size_t len)
{
    size_t mark = c->pathlen;

    if (mark > 0)
        path_append(c, ".", 1);
    path_append(c, name, len);
    return mark;
}

static size_t path_push_index(struct conv *c, size_t i)
{
    char buf[32];
    size_t mark = c->pathlen;
    int n = snprintf(buf, sizeof(buf), "[%zu]", i);

    if (n > 0)
        path_append(c, buf, (size_t)n);
    return mark;
}

static void path_pop(struct conv *c, size_t mark)
{
    c->pathlen = mark;
    c->path[mark] = '\0';
}

static int fail(struct conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes "path: message" into the caller's buffer and returns REFEX_E_JSON. */
static int fail(struct conv *c, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (c->err == NULL || c->errlen == 0)
        return REFEX_E_JSON;
    n = snprintf(c->err, c->errlen, "%s: ", c->pathlen > 0 ? c->path : ROOT_NAME);
    if (n >= 0 && (size_t)n < c->errlen) {
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return REFEX_E_JSON;
}

static int fail_nomem(struct conv *c)
{
    (void)fail(c, "out of memory");
    return REFEX_E_NOMEM;
}

/* ---- descriptor helpers ----------------------------------------------------------- */

#define MEMBER(base, off)  ((void *)((char *)(base) + (off)))
#define CMEMBER(base, off) ((const void *)((const char *)(base) + (off)))

static const char *type_name(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
        return "int32";
    case PROTOBUF_C_TYPE_SINT32:
        return "sint32";
    case PROTOBUF_C_TYPE_SFIXED32:
        return "sfixed32";
    case PROTOBUF_C_TYPE_INT64:
        return "int64";
    case PROTOBUF_C_TYPE_SINT64:
        return "sint64";
    case PROTOBUF_C_TYPE_SFIXED64:
        return "sfixed64";
    case PROTOBUF_C_TYPE_UINT32:
        return "uint32";
    case PROTOBUF_C_TYPE_FIXED32:
        return "fixed32";
    case PROTOBUF_C_TYPE_UINT64:
        return "uint64";
    case PROTOBUF_C_TYPE_FIXED64:
        return "fixed64";
    case PROTOBUF_C_TYPE_FLOAT:
        return "float";
    case PROTOBUF_C_TYPE_DOUBLE:
        return "double";
    case PROTOBUF_C_TYPE_BOOL:
        return "bool";
    case PROTOBUF_C_TYPE_ENUM:
        return "enum";
    case PROTOBUF_C_TYPE_STRING:
        return "string";
    case PROTOBUF_C_TYPE_BYTES:
        return "bytes";
    case PROTOBUF_C_TYPE_MESSAGE:
        return "message";
    }
    return "unknown";
}

/* Size of one element of a repeated field's array, as protobuf-c lays it out. */
static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return sizeof(int32_t);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return sizeof(uint32_t);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return sizeof(int64_t);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(uint64_t);
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

static bool is_pointer_type(ProtobufCType t)
{
    return t == PROTOBUF_C_TYPE_STRING || t == PROTOBUF_C_TYPE_MESSAGE;
}

static bool is_message(const ProtobufCMessage *msg)
{
    return msg != NULL && msg->descriptor != NULL &&
           msg->descriptor->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC;
}

/* ---- message -> JSON -------------------------------------------------------------- */

/* Mirrors protobuf-c's own zero test for proto3 (LABEL_NONE) fields, so that exactly the
 * fields protobuf_c_message_pack would write are written to JSON. */
static bool is_zeroish(const ProtobufCFieldDescriptor *f, const void *member)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return *(const uint32_t *)member == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return *(const uint64_t *)member == 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)member == 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)member == 0;
    case PROTOBUF_C_TYPE_BOOL:
        return !*(const protobuf_c_boolean *)member;
    case PROTOBUF_C_TYPE_ENUM:
        return *(const int *)member == 0;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)member;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)member)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(const ProtobufCMessage *const *)member == NULL;
    }
    return true;
}

/* Whether a field is written, with the same presence rules as protobuf_c_message_pack. */
static bool field_present(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
    const void *member = CMEMBER(msg, f->offset);
    const void *quant = CMEMBER(msg, f->quantifier_offset);

    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        const void *ptr;

        if (*(const uint32_t *)quant != f->id)
            return false;
        if (!is_pointer_type(f->type))
            return true;
        ptr = *(const void *const *)member;
        return ptr != NULL && ptr != f->default_value;
    }
    switch (f->label) {
    case PROTOBUF_C_LABEL_REPEATED:
        return *(const size_t *)quant > 0;
    case PROTOBUF_C_LABEL_REQUIRED:
        return !is_pointer_type(f->type) || *(const void *const *)member != NULL;
    case PROTOBUF_C_LABEL_OPTIONAL:
        if (is_pointer_type(f->type)) {
            const void *ptr = *(const void *const *)member;
            return ptr != NULL && ptr != f->default_value;
        }
        return *(const protobuf_c_boolean *)quant != 0;
    case PROTOBUF_C_LABEL_NONE:
    default:
        return !is_zeroish(f, member);
    }
}

static int msg_to_json(const ProtobufCMessage *msg, int depth, json_t **out);

static int bytes_to_json(const ProtobufCBinaryData *bd, json_t **out)
{
    char *b64 = NULL;
    size_t b64len;
    int rc;

    if (bd->len == 0) {
        *out = json_string("");
        return *out ? REFEX_OK : REFEX_E_NOMEM;
    }
    if (bd->data == NULL)
        return REFEX_E_INVAL;
    if (bd->len / 3 > (SIZE_MAX - 8) / 4)
        return REFEX_E_NOMEM;
    b64len = sodium_base64_ENCODED_LEN(bd->len, sodium_base64_VARIANT_ORIGINAL);
    b64 = malloc(b64len);
    if (b64 == NULL) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    sodium_bin2base64(b64, b64len, bd->data, bd->len, sodium_base64_VARIANT_ORIGINAL);
    *out = json_string(b64);
    rc = *out ? REFEX_OK : REFEX_E_NOMEM;
out:
    free(b64);
    return rc;
}

/* One value (a singular field, or one element of a repeated one) at member. */
static int value_to_json(const ProtobufCFieldDescriptor *f, const void *member, int depth,
                         json_t **out)
{
    *out = NULL;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        *out = json_integer(*(const int32_t *)member);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        *out = json_integer(*(const uint32_t *)member);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        *out = json_integer(*(const int64_t *)member);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t u = *(const uint64_t *)member;
        char buf[24];

        if (u <= INT64_MAX) {
            *out = json_integer((json_int_t)u);
        } else {
            snprintf(buf, sizeof(buf), "%" PRIu64, u);
            *out = json_string(buf);
        }
        break;
    }
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        double d =
            f->type == PROTOBUF_C_TYPE_FLOAT ? *(const float *)member : *(const double *)member;
        if (!isfinite(d))
            return REFEX_E_JSON;
        *out = json_real(d);
        break;
    }
    case PROTOBUF_C_TYPE_BOOL:
        *out = json_boolean(*(const protobuf_c_boolean *)member);
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)member;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);

        /* A value this build does not know (newer peer) is kept as its number. */
        *out = ev ? json_string(ev->name) : json_integer(v);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)member;

        if (s == NULL)
            s = "";
        *out = json_string(s);
        if (*out == NULL)
            return refex_utf8_valid(s, strlen(s)) ? REFEX_E_NOMEM : REFEX_E_JSON;
        break;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return bytes_to_json(member, out);
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)member;

        if (sub == NULL)
            return REFEX_E_INVAL;
        return msg_to_json(sub, depth + 1, out);
    }
    default:
        return REFEX_E_INVAL;
    }
    return *out ? REFEX_OK : REFEX_E_NOMEM;
}

static int repeated_to_json(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                            int depth, json_t **out)
{
    size_t n = *(const size_t *)CMEMBER(msg, f->quantifier_offset);
    const char *elems = *(const char *const *)CMEMBER(msg, f->offset);
    size_t sz = elem_size(f->type);
    json_t *arr = NULL;
    json_t *v = NULL;
    int rc;

    *out = NULL;
    if (elems == NULL || sz == 0) {
        rc = REFEX_E_INVAL;
        goto out;
    }
    arr = json_array();
    if (arr == NULL) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        rc = value_to_json(f, elems + i * sz, depth, &v);
        if (rc != REFEX_OK)
            goto out;
        if (json_array_append_new(arr, v) != 0) { /* consumes v either way */
            rc = REFEX_E_NOMEM;
            goto out;
        }
    }
    *out = arr;
    arr = NULL;
    rc = REFEX_OK;
out:
    json_decref(arr);
    return rc;
}

static int msg_to_json(const ProtobufCMessage *msg, int depth, json_t **out)
{
    const ProtobufCMessageDescriptor *desc;
    json_t *obj = NULL;
    json_t *v = NULL;
    int rc;

    *out = NULL;
    if (!is_message(msg))
        return REFEX_E_INVAL;
    if (depth > REFEX_PBJSON_MAX_DEPTH)
        return REFEX_E_JSON;
    desc = msg->descriptor;
    obj = json_object();
    if (obj == NULL) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];

        if (!field_present(msg, f))
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            rc = repeated_to_json(msg, f, depth, &v);
        else
            rc = value_to_json(f, CMEMBER(msg, f->offset), depth, &v);
        if (rc != REFEX_OK)
            goto out;
        if (json_object_set_new(obj, f->name, v) != 0) { /* consumes v either way */
            rc = REFEX_E_NOMEM;
            goto out;
        }
    }
    *out = obj;
    obj = NULL;
    rc = REFEX_OK;
out:
    json_decref(obj);
    return rc;
}

int refex_pbjson_to_json(const ProtobufCMessage *msg, json_t **out)
{
    if (out == NULL)
        return REFEX_E_INVAL;
    *out = NULL;
    if (msg == NULL)
        return REFEX_E_INVAL;
    return msg_to_json(msg, 1, out);
}

/* ---- JSON -> message -------------------------------------------------------------- */

/* Decimal digits with an optional leading '-': the string form of 64-bit integers. */
static bool parse_decimal(const char *s, size_t n, bool *neg, uint64_t *mag)
{
    size_t i = 0;
    uint64_t m = 0;

    *neg = false;
    if (n > 0 && s[0] == '-') {
        *neg = true;
        i = 1;
    }
    if (i == n)
        return false;
    for (; i < n; i++) {
        unsigned d;

        if (s[i] < '0' || s[i] > '9')
            return false;
        d = (unsigned)(s[i] - '0');
        if (m > (UINT64_MAX - d) / 10)
            return false;
        m = m * 10 + d;
    }
    *mag = m;
    return true;
}

/* A JSON integer, an integral JSON real (1e5, 100000.0) or a decimal string, as sign and
 * magnitude: the proto3 JSON mapping accepts each of these for every integer type. */
static int get_integer(struct conv *c, const json_t *v, ProtobufCType t, bool *neg, uint64_t *mag)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);

        *neg = i < 0;
        *mag = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
        return REFEX_OK;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v); /* always finite: JSON has no NaN or infinity */
        double a = fabs(d);

        if (!(a < 0x1p64))
            return fail(c, "value out of range for %s", type_name(t));
        /* a < 2^64, so the conversion is defined; it is exact only if a is integral */
        *mag = (uint64_t)a;
        if ((double)*mag != a)
            return fail(c, "expected integer");
        *neg = d < 0;
        return REFEX_OK;
    }
    if (json_is_string(v)) {
        if (!parse_decimal(json_string_value(v), json_string_length(v), neg, mag))
            return fail(c, "expected integer or decimal string");
        return REFEX_OK;
    }
    return fail(c, "expected integer");
}

static int get_signed(struct conv *c, const json_t *v, ProtobufCType t, int64_t min, int64_t max,
                      int64_t *out)
{
    bool neg;
    uint64_t mag;
    int64_t x;
    int rc = get_integer(c, v, t, &neg, &mag);

    if (rc != REFEX_OK)
        return rc;
    if (mag > (uint64_t)INT64_MAX + (neg ? 1 : 0))
        return fail(c, "value out of range for %s", type_name(t));
    x = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    if (x < min || x > max)
        return fail(c, "value %" PRId64 " out of range for %s", x, type_name(t));
    *out = x;
    return REFEX_OK;
}

static int get_unsigned(struct conv *c, const json_t *v, ProtobufCType t, uint64_t max,
                        uint64_t *out)
{
    bool neg;
    uint64_t x;
    int rc = get_integer(c, v, t, &neg, &x);

    if (rc != REFEX_OK)
        return rc;
    if (neg && x != 0 && json_is_integer(v))
        return fail(c, "negative value %" PRId64 " for %s", (int64_t)json_integer_value(v),
                    type_name(t));
    if (neg && x != 0)
        return fail(c, "negative value for %s", type_name(t));
    if (x > max)
        return fail(c, "value %" PRIu64 " out of range for %s", x, type_name(t));
    *out = x;
    return REFEX_OK;
}

static int get_enum(struct conv *c, const ProtobufCEnumDescriptor *ed, const json_t *v, int *out)
{
    const ProtobufCEnumValue *ev = NULL;
    char shown[SHOW_MAX + 4];

    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);

        if (strlen(s) == n)
            ev = protobuf_c_enum_descriptor_get_value_by_name(ed, s);
        if (ev == NULL) {
            show(shown, sizeof(shown), s, n);
            return fail(c, "unknown enum value \"%s\"", shown);
        }
    } else if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);

        if (i >= INT_MIN && i <= INT_MAX)
            ev = protobuf_c_enum_descriptor_get_value(ed, (int)i);
        if (ev == NULL)
            return fail(c, "unknown enum value %" PRId64, (int64_t)i);
    } else {
        return fail(c, "expected enum name or integer");
    }
    *out = ev->value;
    return REFEX_OK;
}

static int get_string(struct conv *c, const json_t *v, char **out)
{
    const char *s;
    size_t n;
    char *p;

    if (!json_is_string(v))
        return fail(c, "expected string");
    s = json_string_value(v);
    n = json_string_length(v);
    if (memchr(s, '\0', n) != NULL)
        return fail(c, "string contains a NUL character");
    p = malloc(n + 1);
    if (p == NULL)
        return fail_nomem(c);
    memcpy(p, s, n);
    p[n] = '\0';
    *out = p;
    return REFEX_OK;
}

static int base64_variant(const char *s, size_t n)
{
    bool url = memchr(s, '-', n) != NULL || memchr(s, '_', n) != NULL;

    if (n % 4 == 0)
        return url ? sodium_base64_VARIANT_URLSAFE : sodium_base64_VARIANT_ORIGINAL;
    return url ? sodium_base64_VARIANT_URLSAFE_NO_PADDING
               : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
}

static int get_bytes(struct conv *c, const json_t *v, ProtobufCBinaryData *out)
{
    const char *s;
    size_t n, cap, len = 0;
    unsigned char *buf = NULL;
    int rc;

    if (!json_is_string(v))
        return fail(c, "expected base64 string");
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0) {
        out->len = 0;
        out->data = NULL;
        return REFEX_OK;
    }
    cap = n / 4 * 3 + 3;
    buf = malloc(cap);
    if (buf == NULL) {
        rc = fail_nomem(c);
        goto out;
    }
    /* The mapping accepts standard or URL-safe base64, padded or not: '-' or '_' picks the
     * URL-safe alphabet (mixing the two is then invalid), and a length that is not a
     * multiple of 4 means no padding (a partial "AA=" is then invalid). No ignore set and no
     * end pointer: every character must be consumed. */
    if (sodium_base642bin(buf, cap, s, n, NULL, &len, NULL, base64_variant(s, n)) != 0) {
        rc = fail(c, "invalid base64");
        goto out;
    }
    if (len == 0) {
        out->len = 0;
        out->data = NULL;
    } else {
        out->len = len;
        out->data = buf;
        buf = NULL;
    }
    rc = REFEX_OK;
out:
    free(buf);
    return rc;
}

static int msg_from_json(struct conv *c, const ProtobufCMessageDescriptor *desc, const json_t *obj,
                         ProtobufCMessage **out);

/* Parses one value into dst (a singular member or one repeated element). On failure dst
 * is left as it was, so the enclosing message stays safe to free. */
static int value_from_json(struct conv *c, const ProtobufCFieldDescriptor *f, const json_t *v,
                           void *dst)
{
    int64_t s64;
    uint64_t u64;
    int rc;

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        rc = get_signed(c, v, f->type, INT32_MIN, INT32_MAX, &s64);
        if (rc == REFEX_OK)
            *(int32_t *)dst = (int32_t)s64;
        return rc;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        rc = get_signed(c, v, f->type, INT64_MIN, INT64_MAX, &s64);
        if (rc == REFEX_OK)
            *(int64_t *)dst = s64;
        return rc;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        rc = get_unsigned(c, v, f->type, UINT32_MAX, &u64);
        if (rc == REFEX_OK)
            *(uint32_t *)dst = (uint32_t)u64;
        return rc;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        rc = get_unsigned(c, v, f->type, UINT64_MAX, &u64);
        if (rc == REFEX_OK)
            *(uint64_t *)dst = u64;
        return rc;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        double d;

        if (!json_is_number(v))
            return fail(c, "expected number");
        d = json_number_value(v);
        if (f->type == PROTOBUF_C_TYPE_DOUBLE) {
            *(double *)dst = d;
        } else {
            if (fabs(d) > FLT_MAX)
                return fail(c, "value out of range for float");
            *(float *)dst = (float)d;
        }
        return REFEX_OK;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v))
            return fail(c, "expected true or false");
        *(protobuf_c_boolean *)dst = json_is_true(v);
        return REFEX_OK;
    case PROTOBUF_C_TYPE_ENUM:
        return get_enum(c, f->descriptor, v, dst);
    case PROTOBUF_C_TYPE_STRING:
        return get_string(c, v, dst);
    case PROTOBUF_C_TYPE_BYTES:
        return get_bytes(c, v, dst);
    case PROTOBUF_C_TYPE_MESSAGE:
        return msg_from_json(c, f->descriptor, v, dst);
    }
    (void)fail(c, "unsupported field type %d", (int)f->type);
    return REFEX_E_INVAL;
}

static int repeated_from_json(struct conv *c, ProtobufCMessage *msg,
                              const ProtobufCFieldDescriptor *f, const json_t *v)
{
    size_t n, sz = elem_size(f->type);
    char *arr;
    int rc;

    if (!json_is_array(v))
        return fail(c, "expected array");
    n = json_array_size(v);
    if (n == 0)
        return REFEX_OK;
    if (sz == 0) {
        (void)fail(c, "unsupported field type %d", (int)f->type);
        return REFEX_E_INVAL;
    }
    /* Zeroed elements (NULL string, NULL submessage, empty bytes) are what
     * free_unpacked expects of slots that a failure leaves unfilled, so the array is
     * attached to the message before it is filled. */
    arr = calloc(n, sz);
    if (arr == NULL)
        return fail_nomem(c);
    *(void **)MEMBER(msg, f->offset) = arr;
    *(size_t *)MEMBER(msg, f->quantifier_offset) = n;
    for (size_t i = 0; i < n; i++) {
        size_t mark = path_push_index(c, i);

        rc = value_from_json(c, f, json_array_get(v, i), arr + i * sz);
        if (rc != REFEX_OK)
            return rc;
        path_pop(c, mark);
    }
    return REFEX_OK;
}

static const char *field_name_by_id(const ProtobufCMessageDescriptor *desc, uint32_t id)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(desc, id);

    return f ? f->name : "another member";
}

static int field_from_json(struct conv *c, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                           const json_t *v)
{
    uint32_t *oneof_case = NULL;
    int rc;

    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return repeated_from_json(c, msg, f, v);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        /* free_unpacked frees only the member named by the case, so the case must
         * always name the member that owns the union's storage. */
        oneof_case = MEMBER(msg, f->quantifier_offset);
        if (*oneof_case != 0 && *oneof_case != f->id)
            return fail(c, "oneof already has %s set",
                        field_name_by_id(msg->descriptor, *oneof_case));
    }
    rc = value_from_json(c, f, v, MEMBER(msg, f->offset));
    if (rc != REFEX_OK)
        return rc;
    if (oneof_case != NULL)
        *oneof_case = f->id;
    else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && !is_pointer_type(f->type))
        *(protobuf_c_boolean *)MEMBER(msg, f->quantifier_offset) = 1;
    return REFEX_OK;
}

static int msg_from_json(struct conv *c, const ProtobufCMessageDescriptor *desc, const json_t *obj,
                         ProtobufCMessage **out)
{
    ProtobufCMessage *msg = NULL;
    const char *key;
    size_t key_len;
    json_t *val;
    int rc;

    if (!json_is_object(obj))
        return fail(c, "expected object");
    if (c->depth >= REFEX_PBJSON_MAX_DEPTH)
        return fail(c, "messages nested deeper than %d", REFEX_PBJSON_MAX_DEPTH);
    if (desc == NULL || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        (void)fail(c, "bad message descriptor");
        return REFEX_E_INVAL;
    }
    msg = malloc(desc->sizeof_message);
    if (msg == NULL)
        return fail_nomem(c);
    protobuf_c_message_init(desc, msg);
    c->depth++;

    /* jansson's API is not const-correct; the object is only read. */
    json_object_keylen_foreach((json_t *)obj, key, key_len, val)
    {
        size_t mark = path_push_name(c, key, key_len);
        bool alias;
        const ProtobufCFieldDescriptor *f = refex_pbjson_names_find(desc, key, key_len, &alias);

        if (f == NULL) {
            rc = fail(c, "unknown field");
            goto out;
        }
        /* A field under both its names is ambiguous (which value is meant?): refused, and
         * always before the second one is parsed over the first. */
        if (alias && json_object_get(obj, f->name) != NULL) {
            rc = fail(c, "field given twice, also as %s", f->name);
            goto out;
        }
        if (!json_is_null(val)) {
            rc = field_from_json(c, msg, f, val);
            if (rc != REFEX_OK)
                goto out;
        }
        path_pop(c, mark);
    }
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];

        if (f->label != PROTOBUF_C_LABEL_REQUIRED)
            continue;
        if (refex_pbjson_names_get(obj, f) == NULL) {
            (void)path_push_name(c, f->name, strlen(f->name));
            rc = fail(c, "required field missing");
            goto out;
        }
    }
    *out = msg;
    msg = NULL;
    rc = REFEX_OK;
out:
    c->depth--;
    /* Every member is either its descriptor default or malloc'd by us, and oneof cases
     * name only filled members, so this releases a half-built message exactly. */
    protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

int refex_pbjson_from_json(const ProtobufCMessageDescriptor *desc, const json_t *json,
                           ProtobufCMessage **out, char *err, size_t errlen)
{
    struct conv c;

    memset(&c, 0, sizeof(c));
    c.err = err;
    c.errlen = err ? errlen : 0;
    if (c.errlen > 0)
        err[0] = '\0';
    if (out == NULL)
        return REFEX_E_INVAL;
    *out = NULL;
    if (desc == NULL || json == NULL) {
        (void)fail(&c, "invalid argument");
        return REFEX_E_INVAL;
    }
    return msg_from_json(&c, desc, json, out);
}
