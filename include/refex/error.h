/* refex error codes: one list, so codes, names and messages cannot drift apart.
 * The numbers travel on the wire (Rejected.code, Ack.code, Error.code) and are
 * listed in docs/protocol.md: never renumber, only append. */
#ifndef REFEX_ERROR_H
#define REFEX_ERROR_H

#define REFEX_ERRNO_MAP(X)                                                                         \
    X(OK, 0, "success")                                                                            \
    X(E_NOMEM, 1, "out of memory")                                                                 \
    X(E_INVAL, 2, "invalid argument")                                                              \
    X(E_IO, 3, "input/output error")                                                               \
    X(E_NOTFOUND, 4, "not found")                                                                  \
    X(E_EXISTS, 5, "already exists")                                                               \
    X(E_PERM, 6, "key file is readable by group or others")                                        \
    X(E_CONFIG, 7, "bad configuration")                                                            \
    X(E_CRYPTO, 8, "cryptographic operation failed")                                               \
    X(E_MALFORMED, 9, "malformed frame or message")                                                \
    X(E_TOO_BIG, 10, "frame exceeds the size limit")                                               \
    X(E_BAD_SIGNATURE, 11, "signature does not verify")                                            \
    X(E_UNKNOWN_AGENCY, 12, "agency is not in the directory")                                      \
    X(E_SENDER_MISMATCH, 13, "sender does not match the authenticated agency")                     \
    X(E_NOT_RECIPIENT, 14, "this agency is not a recipient")                                       \
    X(E_DECRYPT, 15, "decryption failed")                                                          \
    X(E_TAMPERED, 16, "envelope hash does not match its contents")                                 \
    X(E_EXPIRED, 17, "message has expired")                                                        \
    X(E_CLOCK_SKEW, 18, "timestamp outside the allowed clock skew")                                \
    X(E_DUPLICATE, 19, "duplicate message id")                                                     \
    X(E_DIRECTORY, 20, "directory signature or contents invalid")                                  \
    X(E_NOT_READY, 21, "HELLO required before this frame")                                         \
    X(E_PROTOCOL, 22, "unexpected frame for this peer")                                            \
    X(E_STORE, 23, "store failure")                                                                \
    X(E_DB, 24, "database error")                                                                  \
    X(E_TIMEOUT, 25, "timed out")                                                                  \
    X(E_UNAVAILABLE, 26, "service unavailable")                                                    \
    X(E_REVOKED, 27, "agency key revoked or outside its validity period")                          \
    X(E_TYPE_MISMATCH, 28, "body does not match the message type")                                 \
    X(E_JSON, 29, "invalid JSON body")                                                             \
    X(E_BUSY, 30, "peer's send queue is full; try again later")                                    \
    X(E_NOT_MEMBER, 31, "not a member of this case")                                               \
    X(E_DENIED, 32, "not allowed to use this agent's control socket")                              \
    X(E_POLICY, 33, "the information-sharing policy does not allow this message")                  \
    X(E_VERSION, 34, "unsupported protocol or envelope version")

typedef enum {
#define REFEX_ERR_ENUM(name, num, msg) REFEX_##name = num,
    REFEX_ERRNO_MAP(REFEX_ERR_ENUM)
#undef REFEX_ERR_ENUM
} refex_err;

/* Human-readable message for a code; never NULL, also for unknown codes. */
const char *refex_strerror(int code);
/* Symbolic name such as "E_BAD_SIGNATURE"; never NULL. */
const char *refex_errname(int code);

#define REFEX_NODISCARD __attribute__((warn_unused_result))

#endif
