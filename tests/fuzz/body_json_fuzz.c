/* libFuzzer target: JSON bodies from the command line and the control socket go through
 * jansson, the protobuf-c JSON converter and the required-field check. Must never crash
 * or leak. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "body.h"
#include "body_rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    char err[256];
    json_t *j = json_loadb((const char *)data, size, 0, &jerr);
    if (!j)
        return 0;
    for (int type = 1; type <= 5; type++) {
        uint8_t *out = NULL;
        size_t len = 0;
        if (refex_body_pack_json(type, j, &out, &len, err, sizeof err) == REFEX_OK) {
            Refex__V1__Body *b = NULL;
            if (refex_body_unpack(type, out, len, &b) == REFEX_OK) {
                char detail[64]; /* small: the cut list is exercised too */
                (void)!refex_body_check(b, detail, sizeof detail);
                refex__v1__body__free_unpacked(b, NULL);
            }
            free(out);
        }
    }
    json_decref(j);
    return 0;
}
