/* The auditor's read side of an agent's audit log: opens any copy of an agent.db read-only
 * and defensively, inside one read transaction, and reads its entries, checkpoints and
 * cosignatures (and a broker's witness.db). Not for writing: appending entries, tree nodes
 * and checkpoints belongs to audit.c and audit_tree.c, whose tree reads this wraps. */
#ifndef REFEX_AUDIT_READER_H
#define REFEX_AUDIT_READER_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "refex/error.h"

typedef struct refex_audit_reader refex_audit_reader;

/* One audit row as read. Text fields are never NULL ("" for a NULL column); every pointer
 * is valid only during the callback it is passed to. */
typedef struct {
    int64_t seq;
    refex_audit_entry e;
    const uint8_t *entry; /* the stored canonical bytes */
    size_t entry_len;
    const uint8_t *leaf_hash; /* the stored leaf hash, NULL unless exactly 32 bytes */
} refex_audit_row;

typedef struct {
    uint64_t size;
    const uint8_t *root; /* as stored: check root_len */
    size_t root_len;
    const char *note; /* NULL if the column is NULL */
    int64_t created_ms;
} refex_audit_checkpoint_row;

typedef struct {
    uint64_t size;
    const char *witness; /* "" if NULL */
    const char *note;    /* NULL if the column is NULL */
    int64_t received_ms;
} refex_audit_cosignature_row;

/* One message in a reconcile category (see refex_audit_reader_reconcile). */
typedef struct {
    const char *message_id, *message_type, *case_ref;
    int64_t time_ms;
    int flag; /* per category: see refex_audit_reconcile_kind */
} refex_audit_discrepancy;

/* Callbacks return REFEX_OK to go on; anything else stops the walk and is returned. */
typedef int (*refex_audit_row_fn)(const refex_audit_row *row, void *arg);
typedef int (*refex_audit_checkpoint_fn)(const refex_audit_checkpoint_row *cp, void *arg);
typedef int (*refex_audit_cosignature_fn)(const refex_audit_cosignature_row *cs, void *arg);
typedef int (*refex_audit_discrepancy_fn)(const refex_audit_discrepancy *d, void *arg);
typedef int (*refex_audit_note_fn)(const char *note, void *arg);

/* Query conditions, all of which an entry must meet. Text values are matched exactly
 * (case and all); SUBJECT and PEER match one element of the comma-separated column;
 * OUTCOME also matches "<text>: ..." (as audit-log-used records "success: query"). */
typedef enum {
    REFEX_AUDIT_BY_SUBJECT,
    REFEX_AUDIT_BY_CASE,
    REFEX_AUDIT_BY_PEER,
    REFEX_AUDIT_BY_MESSAGE,
    REFEX_AUDIT_BY_SINCE, /* time_ms >= ms */
    REFEX_AUDIT_BY_UNTIL, /* time_ms <= ms */
    REFEX_AUDIT_BY_EVENT,
    REFEX_AUDIT_BY_OUTCOME,
    REFEX_AUDIT_BY_TYPE,
    REFEX_AUDIT_BY_PURPOSE,
    REFEX_AUDIT_BY_ARTICLE6,
    REFEX_AUDIT_BY_ARTICLE9,
    REFEX_AUDIT_BY_CONSENT,
} refex_audit_field;

typedef struct {
    refex_audit_field field;
    const char *text; /* for the text fields */
    int64_t ms;       /* for SINCE and UNTIL */
} refex_audit_cond;

#define REFEX_AUDIT_MAX_CONDS 16

enum {
    REFEX_AUDIT_READER_ANY = 1, /* open even without an audit table (verify reports it) */
};

typedef enum {
    /* A logged a send to B that B's log has no receive or reject of (and no non-delivery
     * or broker refusal explains); flag 1 if A holds B's receipt for it. */
    REFEX_AUDIT_SENT_NOT_RECEIVED,
    /* B logged a receive from A of a message A's log never sent; flag 0. */
    REFEX_AUDIT_RECEIVED_NOT_SENT,
    /* A sent it to B before the cut-off and holds no receipt from B; flag 2 if A holds a
     * non-delivery report, 3 if the broker refused it, else 0. */
    REFEX_AUDIT_UNACKNOWLEDGED,
} refex_audit_reconcile_kind;

/* Opens path read-only (no schema code, no views: the file is untrusted) and starts one
 * read transaction, so everything read comes from one snapshot even while an agent
 * appends. Unless flags has REFEX_AUDIT_READER_ANY the file must hold an audit table.
 * On failure err says why, starting with the path. */
int refex_audit_reader_open(const char *path, int flags, refex_audit_reader **out, char *err,
                            size_t errlen) REFEX_NODISCARD;
/* Opens log a, attaches log b (read-only as well), both holding an audit table, for
 * refex_audit_reader_reconcile and refex_audit_reader_agency. */
int refex_audit_reader_open_pair(const char *a, const char *b, refex_audit_reader **out, char *err,
                                 size_t errlen) REFEX_NODISCARD;
void refex_audit_reader_close(refex_audit_reader **r_p);
/* SQLite's message for the last failure, for diagnostics; never NULL. */
const char *refex_audit_reader_errmsg(const refex_audit_reader *r);

/* 1 if the (main) database has this table, 0 if not, -1 if it cannot be read. */
int refex_audit_reader_has(refex_audit_reader *r, const char *table);

/* Entries meeting every condition (at most REFEX_AUDIT_MAX_CONDS), oldest first. */
int refex_audit_reader_each(refex_audit_reader *r, const refex_audit_cond *conds, size_t n,
                            refex_audit_row_fn fn, void *arg) REFEX_NODISCARD;
/* The stored canonical bytes of entry seq, malloc'd; REFEX_E_NOTFOUND if there is none. */
int refex_audit_reader_entry(refex_audit_reader *r, uint64_t seq, uint8_t **bytes,
                             size_t *len) REFEX_NODISCARD;

/* Every checkpoint, smallest size first (fails if the table is missing). */
int refex_audit_reader_checkpoints(refex_audit_reader *r, refex_audit_checkpoint_fn fn,
                                   void *arg) REFEX_NODISCARD;
/* The checkpoint of exactly `size`, or with latest, the largest of at least `size`
 * entries: fn is called once; REFEX_E_NOTFOUND if there is none. */
int refex_audit_reader_checkpoint(refex_audit_reader *r, uint64_t size, int latest,
                                  refex_audit_checkpoint_fn fn, void *arg) REFEX_NODISCARD;
/* Cosignatures by size, then witness; size 0 for every size (fails if the table is
 * missing). */
int refex_audit_reader_cosignatures(refex_audit_reader *r, uint64_t size,
                                    refex_audit_cosignature_fn fn, void *arg) REFEX_NODISCARD;

/* The Merkle tree over the log, from audit_tree.c. */
int refex_audit_reader_size(refex_audit_reader *r, uint64_t *size) REFEX_NODISCARD;
int refex_audit_reader_root(refex_audit_reader *r, uint64_t size, uint8_t root[32]) REFEX_NODISCARD;
int refex_audit_reader_inclusion(refex_audit_reader *r, uint64_t index, uint64_t size,
                                 uint8_t (**proof)[32], size_t *len) REFEX_NODISCARD;
/* verify calls fn as it goes (entries done), for a progress line. */
void refex_audit_reader_progress(refex_audit_reader *r, refex_audit_progress_fn fn, void *ctx);
int refex_audit_reader_verify(refex_audit_reader *r, uint64_t *size, uint8_t root[32], char *why,
                              size_t whylen) REFEX_NODISCARD;

/* The agency of log a (which 0) or b (which 1): *count is how many distinct agencies it
 * holds, 0, 1 or 2 (meaning two or more); buf gets the first. */
int refex_audit_reader_agency(refex_audit_reader *r, int which, char *buf, size_t len,
                              int *count) REFEX_NODISCARD;
/* One reconcile category of a pair opened with refex_audit_reader_open_pair: a and b are
 * the logs' agencies, cutoff_ms the send time before which a receipt is overdue. */
int refex_audit_reader_reconcile(refex_audit_reader *r, refex_audit_reconcile_kind kind,
                                 const char *a, const char *b, int64_t cutoff_ms,
                                 refex_audit_discrepancy_fn fn, void *arg) REFEX_NODISCARD;

/* The notes a broker's witness.db (opened read-only) holds for one agency, by size; fn
 * gets NULL for a NULL note. On failure err says why, starting with the path. */
int refex_audit_reader_witnessed(const char *path, const char *agency, refex_audit_note_fn fn,
                                 void *arg, char *err, size_t errlen) REFEX_NODISCARD;

#endif
