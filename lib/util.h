/* Small helpers shared by every module: hex, files with safe permissions, clocks. */
#ifndef REFEX_UTIL_H
#define REFEX_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "refex/error.h"

/* Initialise libsodium; call once at program start. */
int refex_init(void) REFEX_NODISCARD;

/* hex: out must hold 2*len+1 bytes. */
void refex_hex_encode(char *out, const uint8_t *in, size_t len);
/* Decodes exactly `len` bytes from a 2*len hex string; REFEX_E_INVAL otherwise. */
int refex_hex_decode(uint8_t *out, size_t len, const char *hex) REFEX_NODISCARD;

/* Standard base64 (RFC 4648 alphabet, padded). Encode: out must hold
 * REFEX_BASE64_LEN(len) bytes, NUL included. Decode: exactly the whole input, at most
 * cap bytes out; REFEX_E_MALFORMED for anything else (bad characters, bad padding,
 * whitespace, too long). */
#define REFEX_BASE64_LEN(n) ((((n) + 2) / 3) * 4 + 1)
void refex_base64_encode(char *out, const uint8_t *in, size_t len);
int refex_base64_decode(uint8_t *out, size_t cap, size_t *out_len, const char *in,
                        size_t in_len) REFEX_NODISCARD;

/* Strict UTF-8: no overlong forms, surrogates or code points above U+10FFFF. */
int refex_utf8_valid(const char *s, size_t len);

/* Reads a whole file (at most max bytes) into a malloc'd buffer, NUL-terminated. */
int refex_file_read(const char *path, size_t max, uint8_t **out, size_t *out_len) REFEX_NODISCARD;
/* Writes a file atomically (temp + rename) with the given mode. */
int refex_file_write(const char *path, const void *data, size_t len, unsigned mode);
/* REFEX_E_PERM if path is readable or writable by group or others. */
int refex_file_check_private(const char *path) REFEX_NODISCARD;
/* mkdir -p with the given mode for each created directory. */
int refex_mkdirs(const char *path, unsigned mode);

int64_t refex_now_ms(void);
/* Monotonic milliseconds, for timeouts. */
int64_t refex_mono_ms(void);

/* Domain-separated Ed25519: the signature covers context || 0x00 || data, so bytes signed
 * for one purpose can never pass as another's. */
int refex_sign_domain(const char *context, const uint8_t *data, size_t len,
                      const uint8_t sign_sk[64], uint8_t sig[64]) REFEX_NODISCARD;
/* REFEX_OK, or REFEX_E_BAD_SIGNATURE. */
int refex_verify_domain(const char *context, const uint8_t *data, size_t len, const uint8_t sig[64],
                        const uint8_t sign_pk[32]) REFEX_NODISCARD;

/* 16-byte random message id. */
void refex_random_id(uint8_t id[16]);

#endif
