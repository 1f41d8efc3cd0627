/* SHA-256 of large inputs at the speed of the CPU's SHA instructions: OpenSSL's libcrypto
 * where it pays (bodies, ciphertexts, whole envelopes), libsodium's portable code for the
 * short inputs everywhere else. Not a second crypto library for anything but this hash:
 * signatures, encryption and key exchange stay in libsodium. */
#ifndef REFEX_SHA256_H
#define REFEX_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* SHA-256(data) into out. Same answer as crypto_hash_sha256, for any length. */
void refex_sha256(uint8_t out[32], const void *data, size_t len);

#endif
