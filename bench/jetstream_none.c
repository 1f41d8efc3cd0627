/* jetstream_run when the bench was built without the NATS C client (libnats-dev): the
 * peer is reported as not measured. deploy/install-bench-deps.sh installs it. */
#include "bench.h"

int jetstream_run(const char *dir, const bench_case *c, int round, result *r)
{
    (void)dir;
    (void)c;
    (void)round;
    (void)r;
    return 1;
}
