/* libFuzzer target: the RFC 9162 proof verifiers with every input untrusted, as an auditor
 * or witness gets them from an agent. Input layout (little-endian): size1 (8 bytes),
 * size2 (8), root1 (32), root2 (32), then the proof, 32 bytes a hash (a partial hash at the
 * end is dropped). The same bytes are also read as an inclusion proof (index = size1,
 * size = size2, leaf = root1, root = root2) and, with roots of any length, through
 * refex_merkle_verify_consistency_bytes. Must never crash or leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "merkle.h"

#define HEAD (8 + 8 + 32 + 32)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEAD)
        return 0;
    uint64_t size1 = le64(data), size2 = le64(data + 8);
    const uint8_t *root1 = data + 16, *root2 = data + 48;
    size_t n = (size - HEAD) / 32;
    /* a copy of its own, so ASan sees any read past the proof */
    uint8_t(*proof)[32] = n ? malloc(n * 32) : NULL;
    if (n && !proof)
        return 0;
    if (n)
        memcpy(proof, data + HEAD, n * 32);
    (void)!refex_merkle_verify_consistency(size1, size2, root1, root2, (const uint8_t(*)[32])proof,
                                           n);
    (void)!refex_merkle_verify_inclusion(size1, size2, root1, (const uint8_t(*)[32])proof, n,
                                         root2);
    /* roots of 0..64 bytes (the sizes' top bytes say), cut from the 64 root bytes */
    size_t len1 = (size_t)(size1 >> 56) % 65, len2 = (size_t)(size2 >> 56) % 65;
    (void)!refex_merkle_verify_consistency_bytes(size1 & 0xffffffffu, size2 & 0xffffffffu,
                                                 data + 16, len1, data + 16, len2,
                                                 (const uint8_t(*)[32])proof, n);
    free(proof);
    return 0;
}
