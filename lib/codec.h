/* Frame codec: protobuf bytes <-> Refex__V1__Frame, with the size limit and the
 * structural checks every receiver needs (version, exactly one command), and the packing
 * helpers every sender shares (any message, a command wrapped in a frame, a Signed*
 * wrapper). Knows nothing about sockets; it holds no keys, only uses the one it is given
 * for refex_pb_pack_signed. */
#ifndef REFEX_CODEC_H
#define REFEX_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "refex.pb-c.h"
#include "refex/error.h"

#define REFEX_PROTOCOL_VERSION  2
#define REFEX_DEFAULT_MAX_FRAME (16u * 1024 * 1024)

/* Packs any protobuf-c message into a fresh malloc'd buffer (free() it). */
int refex_pb_pack(const ProtobufCMessage *m, uint8_t **out, size_t *out_len) REFEX_NODISCARD;
/* Packs m, signs its bytes under context (refex_sign_domain) and packs the signed wrapper:
 * a message whose two fields are those bytes and the signature (SignedReceipt, SignedGrant,
 * SignedSubscription). REFEX_E_INVAL if wrapper is not of that shape. */
int refex_pb_pack_signed(const ProtobufCMessage *m, const ProtobufCMessageDescriptor *wrapper,
                         const char *context, const uint8_t sign_sk[64], uint8_t **out,
                         size_t *out_len) REFEX_NODISCARD;
int refex_frame_pack(const Refex__V1__Frame *f, uint8_t **out, size_t *out_len) REFEX_NODISCARD;
/* Points outer's message field number `field` at m (borrowed, not copied), setting the case
 * of a oneof member. REFEX_E_INVAL if there is no such singular message field of m's type. */
int refex_pb_set_message(ProtobufCMessage *outer, unsigned field,
                         const ProtobufCMessage *m) REFEX_NODISCARD;
/* Initialises *f as a frame carrying m as its `kind` command (m is borrowed, not copied):
 * refex_frame_wrap(&f, REFEX__V1__FRAME__KIND_STORED, &stored.base). REFEX_E_INVAL if kind
 * is not a command or m is not that command's message type. */
int refex_frame_wrap(Refex__V1__Frame *f, Refex__V1__Frame__KindCase kind,
                     const ProtobufCMessage *m) REFEX_NODISCARD;
/* REFEX_E_TOO_BIG over max, REFEX_E_VERSION for a frame of another version than
 * REFEX_PROTOCOL_VERSION, REFEX_E_MALFORMED for anything that is not a frame carrying
 * exactly one known command with its required parts. */
int refex_frame_unpack(const uint8_t *buf, size_t len, size_t max,
                       Refex__V1__Frame **out) REFEX_NODISCARD;
void refex_frame_free(Refex__V1__Frame **f_p);
/* Short lowercase name of the frame's command, for logs. */
const char *refex_frame_kind_name(const Refex__V1__Frame *f);

#endif
