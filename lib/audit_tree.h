/* The Merkle tree over an agent's audit log (RFC 6962): leaf i is audit row seq i+1, and
 * the hashes of complete subtrees are stored beside the rows, written in the same
 * transaction, so roots and proofs come from O(log n) lookups instead of a rebuild.
 * Verification of a whole log (recompute everything from the leaves) lives here too. */
#ifndef REFEX_AUDIT_TREE_H
#define REFEX_AUDIT_TREE_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "refex/error.h"

/* Creates the node table and its append-only triggers. */
int refex_audit_tree_init(sqlite3 *db) REFEX_NODISCARD;
/* Adds leaf `index` (0-based; its audit row must already be inserted) and the subtree
 * hashes it completes. Inside the caller's transaction. */
int refex_audit_tree_append(sqlite3 *db, uint64_t index, const uint8_t leaf[32]) REFEX_NODISCARD;
/* Number of leaves (audit rows). */
int refex_audit_tree_size(sqlite3 *db, uint64_t *size) REFEX_NODISCARD;
/* Root of the first `size` leaves. */
int refex_audit_tree_root(sqlite3 *db, uint64_t size, uint8_t root[32]) REFEX_NODISCARD;
/* RFC 9162 proofs from the stored hashes; *proof malloc'd (NULL if empty). */
int refex_audit_tree_inclusion(sqlite3 *db, uint64_t index, uint64_t size, uint8_t (**proof)[32],
                               size_t *len) REFEX_NODISCARD;
int refex_audit_tree_consistency(sqlite3 *db, uint64_t size1, uint64_t size2, uint8_t (**proof)[32],
                                 size_t *len) REFEX_NODISCARD;

/* Signed checkpoints of the tree and witnesses' cosignatures of them. */
/* The note of the largest checkpoint kept, malloc'd into *note; REFEX_E_NOTFOUND if none. */
int refex_audit_tree_latest_checkpoint(sqlite3 *db, char **note) REFEX_NODISCARD;
/* The largest size any witness has cosigned, 0 if none. */
int refex_audit_tree_witnessed_size(sqlite3 *db, uint64_t *size) REFEX_NODISCARD;
/* Keeps a signed checkpoint of `size` leaves; one already kept for that size stays.
 * Inside the caller's transaction. */
int refex_audit_tree_add_checkpoint(sqlite3 *db, uint64_t size, const uint8_t root[32],
                                    const char *note, int64_t created_ms) REFEX_NODISCARD;
/* Keeps a witness's cosigned note of the checkpoint of `size`; a repeat is ignored. */
int refex_audit_tree_add_cosignature(sqlite3 *db, uint64_t size, const char *witness,
                                     const char *note, int64_t received_ms) REFEX_NODISCARD;

/* Recomputes the log from its rows: contiguous seqs, each row's canonical bytes from its
 * columns, each leaf hash, every stored subtree hash. On failure returns REFEX_E_TAMPERED
 * and says what and where in `why`. *size and root get the verified tree. */
int refex_audit_tree_verify(sqlite3 *db, uint64_t *size, uint8_t root[32], char *why,
                            size_t whylen) REFEX_NODISCARD;
int refex_audit_tree_verify_progress(sqlite3 *db, uint64_t *size, uint8_t root[32], char *why,
                                     size_t whylen, refex_audit_progress_fn fn,
                                     void *ctx) REFEX_NODISCARD;

#endif
