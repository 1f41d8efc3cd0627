/* Store lifecycle shared by every backend. The operations themselves are called through
 * the refex_store_* wrappers over store->ops; see store.h for their contracts. */
#include "store.h"

#include <stdlib.h>
#include <string.h>

void refex_store_destroy(refex_store **self_p)
{
    if (!self_p || !*self_p)
        return;
    if ((*self_p)->ops)
        (*self_p)->ops->destroy((*self_p)->impl);
    free(*self_p);
    *self_p = NULL;
}

int refex_store_is_pg(const char *spec)
{
    return spec &&
           (strncmp(spec, "postgresql://", 13) == 0 || strncmp(spec, "postgres://", 11) == 0);
}
