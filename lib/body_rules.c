/* Required fields per message type, as one flat table of field paths walked through the
 * protobuf-c descriptors, so the rules read like docs/protocol.md section 10 and cannot
 * name a field the schema lacks without a test noticing. Not the JSON mapping (pbjson.c)
 * nor the body's member for a type (body.c). */
#include "body_rules.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* One required field. `path` is dotted, relative to the type's body message. A rule with
 * `when` applies only while that field (a bool or an enum) has the value `when_is`
 * ("true"/"false" or an enum name). `not_value` is an enum value that does not count. */
typedef struct {
    const char *path, *when, *when_is, *not_value;
} rule;

/* clang-format off */
#define REQ(path)                {path, NULL, NULL, NULL}
#define REQ_WHEN(path, when, is) {path, when, is, NULL}
#define LAWFUL_BASIS             REQ("lawful_basis.article6"), REQ("lawful_basis.article9")
#define END                      {NULL, NULL, NULL, NULL}
/* clang-format on */

static const rule REFERRAL[] = {
    REQ("subject.reference"),
    REQ("subject.kind"),
    REQ("referrer.reference"),
    REQ("lawful_basis.article6"),
    /* a referral is special-category data: "not applicable" is no condition for it */
    {"lawful_basis.article9", NULL, NULL, "ARTICLE9_NOT_APPLICABLE"},
    REQ("consent"),
    REQ("purpose"),
    REQ("urgency"),
    END};

static const rule REFERRAL_DECISION[] = {REQ("referral_message_id"),
                                         REQ("decision"),
                                         REQ_WHEN("case_ref", "decision", "DECISION_ACCEPTED"),
                                         REQ("decided_by.reference"),
                                         LAWFUL_BASIS,
                                         REQ("purpose"),
                                         END};

static const rule INFORMATION_REQUEST[] = {REQ("request_id"),
                                           REQ("case_ref"),
                                           REQ("question"),
                                           REQ("requested_by.reference"),
                                           LAWFUL_BASIS,
                                           REQ("purpose"),
                                           END};

static const rule INFORMATION_RESPONSE[] = {REQ("request_id"),
                                            REQ_WHEN("answer", "declined", "false"),
                                            REQ_WHEN("decline_reason", "declined", "true"),
                                            REQ("responded_by.reference"),
                                            LAWFUL_BASIS,
                                            REQ("consent"),
                                            REQ("purpose"),
                                            END};

static const rule CASE_UPDATE[] = {REQ("case_ref"),
                                   REQ("update_type"),
                                   REQ("summary"),
                                   REQ("published_by.reference"),
                                   LAWFUL_BASIS,
                                   REQ("purpose"),
                                   END};

static const rule *rules_for(Refex__V1__Body__KindCase k)
{
    switch (k) {
    case REFEX__V1__BODY__KIND_REFERRAL:
        return REFERRAL;
    case REFEX__V1__BODY__KIND_REFERRAL_DECISION:
        return REFERRAL_DECISION;
    case REFEX__V1__BODY__KIND_INFORMATION_REQUEST:
        return INFORMATION_REQUEST;
    case REFEX__V1__BODY__KIND_INFORMATION_RESPONSE:
        return INFORMATION_RESPONSE;
    case REFEX__V1__BODY__KIND_CASE_UPDATE:
        return CASE_UPDATE;
    default:
        return NULL;
    }
}

/* The field at a dotted path under m, and the message that holds it in *holder; NULL if the
 * schema has no such field or a message on the way is absent. */
static const ProtobufCFieldDescriptor *resolve(const ProtobufCMessage *m, const char *path,
                                               const ProtobufCMessage **holder)
{
    char part[64];
    while (m) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof part)
            return NULL;
        memcpy(part, path, n);
        part[n] = 0;
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field_by_name(m->descriptor, part);
        if (!fd)
            return NULL;
        if (!dot) {
            *holder = m;
            return fd;
        }
        if (fd->type != PROTOBUF_C_TYPE_MESSAGE || fd->label == PROTOBUF_C_LABEL_REPEATED)
            return NULL;
        m = *(const ProtobufCMessage *const *)((const char *)m + fd->offset);
        path = dot + 1;
    }
    return NULL;
}

/* The field's value as text for comparisons: an enum's name ("" if unspecified or
 * unknown), a string, "true"/"false"; "" for an absent field or another kind. */
static const char *value_of(const ProtobufCMessage *m, const char *path)
{
    const ProtobufCMessage *h = NULL;
    const ProtobufCFieldDescriptor *fd = resolve(m, path, &h);
    if (!fd || fd->label == PROTOBUF_C_LABEL_REPEATED)
        return "";
    const char *at = (const char *)h + fd->offset;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)at;
        const ProtobufCEnumValue *ev =
            v ? protobuf_c_enum_descriptor_get_value(fd->descriptor, v) : NULL;
        return ev ? ev->name : "";
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)at;
        return s ? s : "";
    }
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)at ? "true" : "false";
    default:
        return "";
    }
}

static int blank(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return *s == 0;
}

static int satisfied(const ProtobufCMessage *m, const rule *r)
{
    const char *v = value_of(m, r->path);
    return !blank(v) && !(r->not_value && strcmp(v, r->not_value) == 0);
}

int refex_body_check(const Refex__V1__Body *b, char *detail, size_t dlen)
{
    const rule *rs = rules_for(b->kind_case);
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(&refex__v1__body__descriptor, (int)b->kind_case);
    const ProtobufCMessage *m =
        fd ? *(const ProtobufCMessage *const *)((const char *)b + fd->offset) : NULL;
    size_t used = 0, missing = 0;
    if (!rs || !m) {
        snprintf(detail, dlen, "the body carries no known message");
        return REFEX_E_INVAL;
    }
    for (; rs->path; rs++) {
        if (rs->when && strcmp(value_of(m, rs->when), rs->when_is) != 0)
            continue;
        if (satisfied(m, rs))
            continue;
        const char *sep = missing++ ? ", " : "missing required fields: ";
        int n = used < dlen ? snprintf(detail + used, dlen - used, "%s%s", sep, rs->path) : 0;
        used += n > 0 ? (size_t)n : 1;
    }
    if (used >= dlen && dlen > 4)
        memcpy(detail + dlen - 4, "...", 4); /* cut, and says so */
    return missing ? REFEX_E_INVAL : REFEX_OK;
}
