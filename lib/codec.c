/* Frame codec. Everything that arrives from a socket passes through refex_frame_unpack
 * first, so the daemons only ever see structurally valid frames. The packing helpers here
 * are descriptor-driven, so one serves every message type. */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

int refex_pb_pack(const ProtobufCMessage *m, uint8_t **out, size_t *out_len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return REFEX_E_NOMEM;
    protobuf_c_message_pack(m, buf);
    *out = buf;
    *out_len = n;
    return REFEX_OK;
}

int refex_pb_pack_signed(const ProtobufCMessage *m, const ProtobufCMessageDescriptor *wrapper,
                         const char *context, const uint8_t sign_sk[64], uint8_t **out,
                         size_t *out_len)
{
    uint8_t sig[64], *bytes = NULL;
    size_t len = 0;
    ProtobufCMessage *w = NULL;
    int rc = REFEX_E_INVAL;
    if (wrapper->n_fields != 2 || wrapper->fields[0].type != PROTOBUF_C_TYPE_BYTES ||
        wrapper->fields[1].type != PROTOBUF_C_TYPE_BYTES)
        goto out;
    if ((rc = refex_pb_pack(m, &bytes, &len)) != REFEX_OK ||
        (rc = refex_sign_domain(context, bytes, len, sign_sk, sig)) != REFEX_OK)
        goto out;
    rc = REFEX_E_NOMEM;
    if (!(w = malloc(wrapper->sizeof_message)))
        goto out;
    protobuf_c_message_init(wrapper, w);
    ProtobufCBinaryData fields[2] = {{len, bytes}, {sizeof sig, sig}};
    for (int i = 0; i < 2; i++)
        memcpy((char *)w + wrapper->fields[i].offset, &fields[i], sizeof fields[i]);
    rc = refex_pb_pack(w, out, out_len);
out:
    free(w);
    free(bytes);
    return rc;
}

int refex_frame_pack(const Refex__V1__Frame *f, uint8_t **out, size_t *out_len)
{
    return refex_pb_pack(&f->base, out, out_len);
}

/* Descriptor-driven, so one helper serves every carrier message: the field's number gives
 * its slot, its type must be m's, and a oneof member also sets the oneof's case. */
int refex_pb_set_message(ProtobufCMessage *outer, unsigned field, const ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(outer->descriptor, field);
    if (!fd || !m || fd->type != PROTOBUF_C_TYPE_MESSAGE ||
        fd->label == PROTOBUF_C_LABEL_REPEATED || fd->descriptor != m->descriptor)
        return REFEX_E_INVAL;
    memcpy((char *)outer + fd->offset, &m, sizeof m);
    if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        memcpy((char *)outer + fd->quantifier_offset, &(uint32_t){field}, sizeof(uint32_t));
    return REFEX_OK;
}

int refex_frame_wrap(Refex__V1__Frame *f, Refex__V1__Frame__KindCase kind,
                     const ProtobufCMessage *m)
{
    refex__v1__frame__init(f);
    return refex_pb_set_message(&f->base, (unsigned)kind, m);
}

void refex_frame_free(Refex__V1__Frame **f_p)
{
    if (!f_p || !*f_p)
        return;
    refex__v1__frame__free_unpacked(*f_p, NULL);
    *f_p = NULL;
}

static int envelope_present(const Refex__V1__Envelope *e)
{
    return e && e->header.len > 0;
}

int refex_frame_unpack(const uint8_t *buf, size_t len, size_t max, Refex__V1__Frame **out)
{
    *out = NULL;
    if (len > max)
        return REFEX_E_TOO_BIG;
    if (len == 0)
        return REFEX_E_MALFORMED;
    Refex__V1__Frame *f = refex__v1__frame__unpack(NULL, len, buf);
    if (!f)
        return REFEX_E_MALFORMED;
    if (f->version != REFEX_PROTOCOL_VERSION) {
        /* Checked first: another version's commands need not look like ours. */
        refex__v1__frame__free_unpacked(f, NULL);
        return REFEX_E_VERSION;
    }
    int ok = 1;
    switch (f->kind_case) {
    case REFEX__V1__FRAME__KIND_HELLO:
        ok = ok && f->hello->agency && f->hello->agency[0];
        break;
    case REFEX__V1__FRAME__KIND_SEND:
        ok = ok && envelope_present(f->send->envelope);
        break;
    case REFEX__V1__FRAME__KIND_DELIVER:
        ok = ok && envelope_present(f->deliver->envelope);
        break;
    case REFEX__V1__FRAME__KIND_ACK:
        ok = ok && f->ack->message_id.len == 16;
        break;
    case REFEX__V1__FRAME__KIND_RECEIPT:
        ok = ok && f->receipt->receipt && f->receipt->receipt->receipt.len > 0;
        break;
    case REFEX__V1__FRAME__KIND_RECEIPT_ACK:
        ok = ok && f->receipt_ack->message_id.len == 16;
        break;
    case REFEX__V1__FRAME__KIND_CHECKPOINT:
        ok = ok && f->checkpoint->note && f->checkpoint->note[0];
        for (size_t i = 0; ok && i < f->checkpoint->n_consistency; i++)
            ok = f->checkpoint->consistency[i].len == 32;
        break;
    case REFEX__V1__FRAME__KIND_COSIGNED:
        ok = ok && f->cosigned->note && f->cosigned->note[0];
        break;
    case REFEX__V1__FRAME__KIND_GRANT:
        ok = ok && f->grant->grant && f->grant->grant->grant.len > 0;
        break;
    case REFEX__V1__FRAME__KIND_GRANT_NOTICE:
        ok = ok && f->grant_notice->grant && f->grant_notice->grant->grant.len > 0;
        break;
    case REFEX__V1__FRAME__KIND_SUBSCRIBE:
        ok = ok && f->subscribe->subscription && f->subscribe->subscription->subscription.len > 0;
        break;
    case REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE:
        ok = ok && f->subscription_notice->subscription &&
             f->subscription_notice->subscription->subscription.len > 0;
        break;
    case REFEX__V1__FRAME__KIND_STORED:
        ok = ok && f->stored->message_id.len == 16;
        break;
    case REFEX__V1__FRAME__KIND_REJECTED:
    case REFEX__V1__FRAME__KIND_WELCOME:
    case REFEX__V1__FRAME__KIND_ERROR:
    case REFEX__V1__FRAME__KIND_PING:
    case REFEX__V1__FRAME__KIND_PONG:
        break;
    default:
        ok = 0;
    }
    if (!ok) {
        refex__v1__frame__free_unpacked(f, NULL);
        return REFEX_E_MALFORMED;
    }
    *out = f;
    return REFEX_OK;
}

const char *refex_frame_kind_name(const Refex__V1__Frame *f)
{
    switch (f->kind_case) {
    case REFEX__V1__FRAME__KIND_HELLO:
        return "hello";
    case REFEX__V1__FRAME__KIND_WELCOME:
        return "welcome";
    case REFEX__V1__FRAME__KIND_SEND:
        return "send";
    case REFEX__V1__FRAME__KIND_STORED:
        return "stored";
    case REFEX__V1__FRAME__KIND_REJECTED:
        return "rejected";
    case REFEX__V1__FRAME__KIND_DELIVER:
        return "deliver";
    case REFEX__V1__FRAME__KIND_ACK:
        return "ack";
    case REFEX__V1__FRAME__KIND_ERROR:
        return "error";
    case REFEX__V1__FRAME__KIND_PING:
        return "ping";
    case REFEX__V1__FRAME__KIND_PONG:
        return "pong";
    case REFEX__V1__FRAME__KIND_RECEIPT:
        return "receipt";
    case REFEX__V1__FRAME__KIND_RECEIPT_ACK:
        return "receipt_ack";
    case REFEX__V1__FRAME__KIND_CHECKPOINT:
        return "checkpoint";
    case REFEX__V1__FRAME__KIND_COSIGNED:
        return "cosigned";
    case REFEX__V1__FRAME__KIND_GRANT:
        return "grant";
    case REFEX__V1__FRAME__KIND_GRANT_NOTICE:
        return "grant_notice";
    case REFEX__V1__FRAME__KIND_SUBSCRIBE:
        return "subscribe";
    case REFEX__V1__FRAME__KIND_SUBSCRIPTION_NOTICE:
        return "subscription_notice";
    default:
        return "unknown";
    }
}
