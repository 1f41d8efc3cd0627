/* Shared fixture for the unit tests of the agent's modules (agents/): a struct agent with
 * a real SQLite store in a scratch directory, keys for a few agencies and an in-memory
 * directory listing them, and no broker link (frames queued in a batch stay in a->outq
 * for the test to read). Include after <cmocka.h> and "testing.h". */
#ifndef REFEX_AGENT_TESTING_H
#define REFEX_AGENT_TESTING_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "audit_tree.h"
#include "codec.h"
#include "directory.h"
#include "keys.h"
#include "util.h"

/* Two case leads (the social-care role), two other agencies. */
enum { T_LEAD, T_LEAD2, T_MIDWIFERY, T_POLICE, T_N };

static const char *const T_IDS[T_N] = {"social-care", "social-care-2", "midwifery", "police"};
static const char *const T_ROLES[T_N] = {"social-care", "social-care", "midwifery", "police"};

typedef struct {
    char dir[256];
    refex_keys *keys[T_N];
    refex_directory *directory;
    agent a;
} agent_fixture;

/* An agent for agency T_IDS[me], its store open in a fresh directory. */
static inline agent_fixture *agent_fixture_new(int me)
{
    agent_fixture *f = calloc(1, sizeof *f);
    char path[300], err[256];
    if (!f)
        fail_msg("calloc");
    testing_tmpdir(f->dir, sizeof f->dir);
    assert_ok(refex_directory_new(&f->directory));
    for (int i = 0; i < T_N; i++) {
        refex_agency ag;
        assert_ok(refex_keys_new(T_IDS[i], T_ROLES[i], &f->keys[i]));
        refex_agency_from_pubkeys(&ag, &f->keys[i]->pub, NULL);
        assert_ok(refex_directory_add(f->directory, &ag, 0));
    }
    snprintf(f->a.agency, sizeof f->a.agency, "%s", T_IDS[me]);
    snprintf(f->a.broker_id, sizeof f->a.broker_id, "broker");
    f->a.base.keys = f->keys[me];
    f->a.base.dir = f->directory;
    f->a.base.max_frame = 1u << 20;
    f->a.base.skew_ms = 300000;
    snprintf(path, sizeof path, "%s/agent.db", f->dir);
    if (agent_store_open(path, &f->a.store, err, sizeof err) != REFEX_OK)
        fail_msg("agent_store_open: %s", err);
    return f;
}

/* Drops whatever the batch queued (there is no link to send it on). */
static inline void agent_fixture_drop_outq(agent_fixture *f)
{
    for (size_t i = 0; i < f->a.outq_n; i++)
        free(f->a.outq[i].data);
    f->a.outq_n = 0;
}

/* Commits the open batch; queued frames and replies are dropped first. */
static inline void agent_fixture_commit(agent_fixture *f)
{
    agent_fixture_drop_outq(f);
    batch_end(&f->a);
}

static inline void agent_fixture_destroy(agent_fixture **f_p)
{
    agent_fixture *f = *f_p;
    if (!f)
        return;
    agent_fixture_drop_outq(f);
    free(f->a.outq);
    agent_store_close(&f->a.store);
    for (int i = 0; i < T_N; i++)
        refex_keys_destroy(&f->keys[i]);
    refex_directory_destroy(&f->directory);
    testing_rmtree(f->dir);
    free(f);
    *f_p = NULL;
}

/* Entries in the agent's audit log. */
static inline uint64_t agent_fixture_audit_size(agent_fixture *f)
{
    uint64_t n = 0;
    assert_ok(refex_audit_tree_size(agent_store_db(f->a.store), &n));
    return n;
}

/* The i-th queued frame for the broker, unpacked (free with refex_frame_free). */
static inline Refex__V1__Frame *agent_fixture_frame(agent_fixture *f, size_t i)
{
    Refex__V1__Frame *fr = NULL;
    assert_true(i < f->a.outq_n);
    assert_int_equal(f->a.outq[i].rid_len, 0);
    batch_sign_queue(&f->a); /* as batch_end does after the commit */
    assert_ok(refex_frame_unpack((const uint8_t *)f->a.outq[i].data, f->a.outq[i].len,
                                 f->a.base.max_frame, &fr));
    return fr;
}

#endif
