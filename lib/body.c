/* Body helpers. The mapping from message type to Body member is by name: the member of
 * Body for type REFERRAL_DECISION is `referral_decision`, and so on. */
#include "body.h"

#include <ctype.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "pbjson.h"
#include "util.h"

int refex_message_type_parse(const char *name)
{
    char up[64];
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= sizeof up)
        return 0;
    for (size_t i = 0; i <= n; i++)
        up[i] = (char)(name[i] == '-' ? '_' : toupper((unsigned char)name[i]));
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value_by_name(&refex__v1__message_type__descriptor, up);
    return v && v->value > 0 ? v->value : 0;
}

const char *refex_message_type_name(int type)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&refex__v1__message_type__descriptor, type);
    return v && type > 0 ? v->name : "UNKNOWN";
}

static const ProtobufCFieldDescriptor *member_for(int type)
{
    char lower[64];
    const char *name = refex_message_type_name(type);
    size_t n = strlen(name);
    if (type <= 0 || n >= sizeof lower)
        return NULL;
    for (size_t i = 0; i <= n; i++)
        lower[i] = (char)tolower((unsigned char)name[i]);
    return protobuf_c_message_descriptor_get_field_by_name(&refex__v1__body__descriptor, lower);
}

int refex_body_pack_json(int type, const json_t *obj, uint8_t **out, size_t *out_len, char *err,
                         size_t errlen)
{
    const ProtobufCFieldDescriptor *fd = member_for(type);
    ProtobufCMessage *msg = NULL;
    if (!fd) {
        snprintf(err, errlen, "unknown message type");
        return REFEX_E_INVAL;
    }
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "body must be a JSON object");
        return REFEX_E_JSON;
    }
    json_t *wrap = json_object();
    if (!wrap)
        return REFEX_E_NOMEM;
    json_object_set(wrap, fd->name, (json_t *)obj);
    int rc = refex_pbjson_from_json(&refex__v1__body__descriptor, wrap, &msg, err, errlen);
    json_decref(wrap);
    if (rc != REFEX_OK)
        return rc;
    rc = refex_pb_pack(msg, out, out_len);
    protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

/* Every string field of m, at any depth, is strict UTF-8: protobuf-c does not check, and a
 * body that the JSON form (and every reader of the inbox and the audit log) cannot carry
 * must be refused where it enters, not stored and receipted. */
static int strings_valid(const ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (depth > 32)
        return 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        const void *const *items = (const void *const *)(base + f->offset);
        size_t n = 1;
        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(base + f->quantifier_offset);
            items = *(const void *const *const *)(base + f->offset);
        } else if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                   *(const uint32_t *)(base + f->quantifier_offset) != f->id) {
            continue;
        }
        for (size_t k = 0; k < n; k++) {
            const void *v = items[k];
            if (v && f->type == PROTOBUF_C_TYPE_STRING && !refex_utf8_valid(v, strlen(v)))
                return 0;
            if (v && f->type == PROTOBUF_C_TYPE_MESSAGE && !strings_valid(v, depth + 1))
                return 0;
        }
    }
    return 1;
}

int refex_body_unpack(int type, const uint8_t *buf, size_t len, Refex__V1__Body **out)
{
    const ProtobufCFieldDescriptor *fd = member_for(type);
    *out = NULL;
    if (!fd)
        return REFEX_E_TYPE_MISMATCH;
    Refex__V1__Body *b = refex__v1__body__unpack(NULL, len, buf);
    if (!b)
        return REFEX_E_MALFORMED;
    if ((unsigned)b->kind_case != fd->id) {
        refex__v1__body__free_unpacked(b, NULL);
        return REFEX_E_TYPE_MISMATCH;
    }
    if (!strings_valid(&b->base, 0)) {
        refex__v1__body__free_unpacked(b, NULL);
        return REFEX_E_MALFORMED;
    }
    *out = b;
    return REFEX_OK;
}

int refex_body_to_json(const Refex__V1__Body *b, json_t **out)
{
    json_t *all = NULL;
    int rc = refex_pbjson_to_json(&b->base, &all);
    if (rc != REFEX_OK)
        return rc;
    /* Unwrap the single member. */
    const char *key;
    json_t *val;
    *out = NULL;
    json_object_foreach(all, key, val)
    {
        *out = json_incref(val);
        break;
    }
    json_decref(all);
    if (!*out)
        *out = json_object();
    return *out ? REFEX_OK : REFEX_E_NOMEM;
}

static const char *enum_name(const ProtobufCEnumDescriptor *d, int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, v);
    return ev ? ev->name : "";
}

static void fill(refex_body_meta *m, const Refex__V1__Practitioner *p,
                 const Refex__V1__LawfulBasis *lb, int purpose, int consent, const char *case_ref)
{
    m->practitioner = p ? p->reference : "";
    m->article6 = enum_name(&refex__v1__article6_basis__descriptor, lb ? (int)lb->article6 : 0);
    m->article9 = enum_name(&refex__v1__article9_condition__descriptor, lb ? (int)lb->article9 : 0);
    m->purpose = enum_name(&refex__v1__purpose_of_use__descriptor, purpose);
    m->consent = enum_name(&refex__v1__consent_status__descriptor, consent);
    m->case_ref = case_ref ? case_ref : "";
}

void refex_body_meta_get(const Refex__V1__Body *b, refex_body_meta *m)
{
    switch (b->kind_case) {
    case REFEX__V1__BODY__KIND_REFERRAL: {
        const Refex__V1__Referral *r = b->referral;
        fill(m, r->referrer, r->lawful_basis, r->purpose, r->consent, "");
        break;
    }
    case REFEX__V1__BODY__KIND_REFERRAL_DECISION: {
        const Refex__V1__ReferralDecision *r = b->referral_decision;
        fill(m, r->decided_by, r->lawful_basis, r->purpose, 0, r->case_ref);
        break;
    }
    case REFEX__V1__BODY__KIND_INFORMATION_REQUEST: {
        const Refex__V1__InformationRequest *r = b->information_request;
        fill(m, r->requested_by, r->lawful_basis, r->purpose, 0, r->case_ref);
        break;
    }
    case REFEX__V1__BODY__KIND_INFORMATION_RESPONSE: {
        const Refex__V1__InformationResponse *r = b->information_response;
        fill(m, r->responded_by, r->lawful_basis, r->purpose, r->consent, "");
        break;
    }
    case REFEX__V1__BODY__KIND_CASE_UPDATE: {
        const Refex__V1__CaseUpdate *r = b->case_update;
        fill(m, r->published_by, r->lawful_basis, r->purpose, r->consent, r->case_ref);
        break;
    }
    default:
        fill(m, NULL, NULL, 0, 0, "");
    }
    /* Correlation: which conversation, request or referral a message belongs to. */
    m->conversation_id = m->reply_to = m->request_id = m->due_date = m->decision = "";
    switch (b->kind_case) {
    case REFEX__V1__BODY__KIND_REFERRAL:
        m->conversation_id = b->referral->conversation_id;
        break;
    case REFEX__V1__BODY__KIND_REFERRAL_DECISION:
        m->conversation_id = b->referral_decision->conversation_id;
        m->reply_to = b->referral_decision->referral_message_id;
        m->decision =
            enum_name(&refex__v1__decision__descriptor, (int)b->referral_decision->decision);
        break;
    case REFEX__V1__BODY__KIND_INFORMATION_REQUEST:
        m->conversation_id = b->information_request->conversation_id;
        m->request_id = b->information_request->request_id;
        m->due_date = b->information_request->due_date;
        break;
    case REFEX__V1__BODY__KIND_INFORMATION_RESPONSE:
        m->conversation_id = b->information_response->conversation_id;
        m->reply_to = b->information_response->request_id;
        m->decision = b->information_response->declined ? "DECLINED" : "ANSWERED";
        break;
    default:
        break;
    }
    /* The people a referral is about, by reference only: the subject, then the parents. */
    m->subjects[0] = 0;
    if (b->kind_case == REFEX__V1__BODY__KIND_REFERRAL) {
        const Refex__V1__Referral *r = b->referral;
        size_t used = 0;
        if (r->subject && r->subject->reference[0])
            used += (size_t)snprintf(m->subjects, sizeof m->subjects, "%s", r->subject->reference);
        for (size_t i = 0; i < r->n_parents && used < sizeof m->subjects; i++)
            if (r->parents[i]->reference[0])
                used += (size_t)snprintf(m->subjects + used, sizeof m->subjects - used, "%s%s",
                                         used ? "," : "", r->parents[i]->reference);
    }
}
