/* Error code to text. The table is generated from REFEX_ERRNO_MAP, so adding a code
 * in the header is the only step needed. */
#include "refex/error.h"

const char *refex_strerror(int code)
{
    switch (code) {
#define REFEX_ERR_MSG(name, num, msg)                                                              \
    case num:                                                                                      \
        return msg;
        REFEX_ERRNO_MAP(REFEX_ERR_MSG)
#undef REFEX_ERR_MSG
    default:
        return "unknown error";
    }
}

const char *refex_errname(int code)
{
    switch (code) {
#define REFEX_ERR_NAME(name, num, msg)                                                             \
    case num:                                                                                      \
        return #name;
        REFEX_ERRNO_MAP(REFEX_ERR_NAME)
#undef REFEX_ERR_NAME
    default:
        return "E_UNKNOWN";
    }
}
