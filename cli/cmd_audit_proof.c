/* `refex audit proof`: an inclusion proof that one entry is in the log, against a signed
 * checkpoint where one covers it, so a third party can check a single disclosure without
 * the whole log. The proof is verified here before it is printed; the tree arithmetic is
 * lib's (audit_tree.c through audit_reader.c, merkle.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_audit.h"
#include "merkle.h"

static void proof_usage(FILE *out)
{
    fprintf(out,
            "usage: refex [-c AGENT.conf] audit proof --entry N [--size M] [--db FILE] [--json]\n"
            "\n"
            "An inclusion proof that entry N (its seq, from 1) is in the log: the entry's\n"
            "canonical bytes, its leaf hash, and the RFC 9162 audit path to the root of\n"
            "\n"
            "  - the latest signed checkpoint that covers entry N (its note is included, for\n"
            "    checking the agency's and witnesses' signatures), or\n"
            "  - with --size M, the tree of the first M entries (with its checkpoint note if\n"
            "    one was signed at that size), or\n"
            "  - if no checkpoint covers the entry, the current tree: the bundle then says it\n"
            "    is unsigned, and proves inclusion only in this copy.\n"
            "\n"
            "The proof is verified before it is printed. With --json, the bundle:\n"
            "  {\"entry\", \"leaf_index\", \"leaf\", \"leaf_hash\", \"tree_size\", \"root\",\n"
            "   \"proof\": [...], \"checkpoint\": note or null}  (hashes and bytes in base64)\n"
            "\n"
            "  --db FILE   read any copy of an agent.db, read-only; without it the agent\n"
            "              named by -c, which records this read in its own log\n"
            "\n"
            "Exit 0 if the proof verifies; 1 if the entry does not exist, or the log does not\n"
            "match its checkpoint or the proof does not verify (run refex audit verify);\n"
            "2 for a bad command line.\n");
}

typedef struct {
    uint64_t entry, size, cur; /* the entry, the tree proved against, the log's size */
    uint8_t root[32], leaf[32], (*proof)[32];
    size_t plen;
    uint8_t *bytes;
    size_t blen;
    char *note; /* the checkpoint's, if signed */
    int signed_cp, bad_cp;
    json_t *cos;
} proof_state;

static int take_checkpoint(const refex_audit_checkpoint_row *cp, void *arg)
{
    proof_state *p = arg;
    p->size = cp->size;
    if (cp->root_len != 32 || cp->size == 0 || cp->size > p->cur) {
        p->bad_cp = 1;
        return REFEX_OK;
    }
    memcpy(p->root, cp->root, 32);
    if (!(p->note = strdup(cp->note ? cp->note : "")))
        return REFEX_E_NOMEM;
    p->signed_cp = 1;
    return REFEX_OK;
}

/* Which tree: the one asked for, else the latest checkpoint covering the entry, else the
 * current one; a signed root must be the tree's root at that size. */
static int pick_tree(refex_audit_reader *r, proof_state *p, uint64_t want_size)
{
    uint8_t tree_root[32];
    p->size = want_size ? want_size : p->cur;
    if (refex_audit_reader_has(r, "audit_checkpoints") == 1) {
        int rc = refex_audit_reader_checkpoint(r, want_size ? want_size : p->entry, !want_size,
                                               take_checkpoint, p);
        if (rc != REFEX_OK && rc != REFEX_E_NOTFOUND)
            return EXIT_FAIL;
        if (p->bad_cp) {
            fprintf(stderr,
                    "refex audit proof: the checkpoint at size %llu does not fit this log "
                    "(%llu entries): truncated or damaged\n",
                    (unsigned long long)p->size, (unsigned long long)p->cur);
            return EXIT_FAIL;
        }
    }
    if (refex_audit_reader_root(r, p->size, tree_root) != REFEX_OK) {
        fprintf(stderr,
                "refex audit proof: cannot compute the tree of size %llu: the log is "
                "damaged (run refex audit verify)\n",
                (unsigned long long)p->size);
        return EXIT_FAIL;
    }
    if (!p->signed_cp)
        memcpy(p->root, tree_root, 32);
    else if (memcmp(p->root, tree_root, 32) != 0) {
        fprintf(stderr,
                "refex audit proof: the log's tree at size %llu does not match its signed "
                "checkpoint: the log was changed after it was signed (run refex audit verify)\n",
                (unsigned long long)p->size);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static int add_cosignature(const refex_audit_cosignature_row *cs, void *arg)
{
    return json_array_append_new(arg, json_pack("{s:s, s:s}", "witness", cs->witness, "note",
                                                cs->note ? cs->note : ""))
               ? REFEX_E_NOMEM
               : REFEX_OK;
}

/* The entry's bytes, its leaf hash computed from them (as a third party would), and the
 * audit path, verified against the root. */
static int prove(refex_audit_reader *r, proof_state *p)
{
    int rc = refex_audit_reader_entry(r, p->entry, &p->bytes, &p->blen);
    if (rc == REFEX_E_NOTFOUND)
        fprintf(stderr,
                "refex audit proof: entry %llu is missing from the log (run refex audit "
                "verify)\n",
                (unsigned long long)p->entry);
    if (rc != REFEX_OK)
        return EXIT_FAIL;
    refex_merkle_leaf_hash(p->bytes, p->blen, p->leaf);
    if (refex_audit_reader_inclusion(r, p->entry - 1, p->size, &p->proof, &p->plen) != REFEX_OK ||
        refex_merkle_verify_inclusion(p->entry - 1, p->size, p->leaf,
                                      (const uint8_t(*)[32])p->proof, p->plen,
                                      p->root) != REFEX_OK) {
        fprintf(stderr,
                "refex audit proof: the inclusion proof for entry %llu does not verify against "
                "the root of size %llu: the log is damaged (run refex audit verify)\n",
                (unsigned long long)p->entry, (unsigned long long)p->size);
        return EXIT_FAIL;
    }
    if (p->signed_cp && refex_audit_reader_has(r, "audit_cosignatures") == 1 &&
        refex_audit_reader_cosignatures(r, p->size, add_cosignature, p->cos) != REFEX_OK)
        return EXIT_FAIL;
    return EXIT_OK;
}

static void print_text(const proof_state *p, json_t *out)
{
    json_t *path = json_object_get(out, "proof");
    printf("entry       %llu (leaf index %llu)\n", (unsigned long long)p->entry,
           (unsigned long long)(p->entry - 1));
    printf("leaf hash   %s\n", json_string_value(json_object_get(out, "leaf_hash")));
    printf("tree size   %llu\n", (unsigned long long)p->size);
    printf("root        %s\n", json_string_value(json_object_get(out, "root")));
    printf("proof       %zu hashes, verified\n", p->plen);
    for (size_t i = 0; i < p->plen; i++)
        printf("  %s\n", json_string_value(json_array_get(path, i)));
    if (p->signed_cp)
        printf("checkpoint  signed, %zu witness cosignature(s):\n%s", json_array_size(p->cos),
               p->note);
    else
        printf("checkpoint  none: UNSIGNED, proves inclusion in this copy's current tree "
               "only\n");
    printf("(--json gives the whole bundle, with the entry's bytes)\n");
}

static int print_bundle(const proof_state *p, int json)
{
    json_t *path = json_array();
    json_t *out = json_pack(
        "{s:I, s:I, s:o, s:o, s:I, s:o, s:o, s:o, s:O}", "entry", (json_int_t)p->entry,
        "leaf_index", (json_int_t)(p->entry - 1), "leaf", cli_audit_b64(p->bytes, p->blen),
        "leaf_hash", cli_audit_b64(p->leaf, 32), "tree_size", (json_int_t)p->size, "root",
        cli_audit_b64(p->root, 32), "proof", path, "checkpoint",
        p->signed_cp ? json_string(p->note) : json_null(), "cosignatures", p->cos);
    if (!out)
        return EXIT_FAIL;
    for (size_t i = 0; i < p->plen; i++)
        json_array_append_new(path, cli_audit_b64(p->proof[i], 32));
    if (!p->signed_cp)
        json_object_set_new(out, "note",
                            json_string("unsigned: no checkpoint covers this entry; the root is "
                                        "the current tree of this copy of the log"));
    if (json)
        cli_print_json(out);
    else
        print_text(p, out);
    json_decref(out);
    return EXIT_OK;
}

static int proof_bundle(refex_audit_reader *r, uint64_t entry, uint64_t want_size, int json)
{
    proof_state p = {.entry = entry, .cos = json_array()};
    int rc = EXIT_FAIL;
    if (!p.cos || refex_audit_reader_size(r, &p.cur) != REFEX_OK)
        goto out;
    if (entry > p.cur) {
        fprintf(stderr, "refex audit proof: there is no entry %llu: the log has %llu\n",
                (unsigned long long)entry, (unsigned long long)p.cur);
        goto out;
    }
    if (want_size > p.cur) {
        fprintf(stderr, "refex audit proof: --size %llu: the log has only %llu entries\n",
                (unsigned long long)want_size, (unsigned long long)p.cur);
        goto out;
    }
    if (pick_tree(r, &p, want_size) != EXIT_OK || prove(r, &p) != EXIT_OK)
        goto out;
    rc = print_bundle(&p, json);
out:
    json_decref(p.cos);
    free(p.proof);
    free(p.bytes);
    free(p.note);
    return rc;
}

static int proof_parse(int argc, char **argv, uint64_t *entry, uint64_t *size, const char **db,
                       int *json)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"entry", required_argument, NULL, 'e'},
                                         {"size", required_argument, NULL, 's'},
                                         {"db", required_argument, NULL, 'd'},
                                         {0}};
    cli_audit_opts o = {"proof", argc, argv, "c:", opts, 0};
    const char *v, *entry_s = NULL, *size_s = NULL;
    int c;
    while ((c = cli_audit_getopt(&o, &v)) != -1) {
        if (c == 'j')
            *json = 1;
        else if (c == 'e')
            entry_s = v;
        else if (c == 's')
            size_s = v;
        else if (c == 'd')
            *db = v;
        else if (c == 'c')
            cli_config = v;
        else
            return c == 1 ? cli_audit_unknown("proof", v) : EXIT_USAGE;
    }
    if (!entry_s || cli_audit_parse_count(entry_s, entry) != 0 || *entry == 0) {
        fprintf(stderr, "refex audit proof: give --entry N, an entry's seq (from 1)\n");
        return EXIT_USAGE;
    }
    if (size_s && (cli_audit_parse_count(size_s, size) != 0 || *size < *entry)) {
        fprintf(stderr,
                "refex audit proof: --size must be a tree size of at least %llu, so that "
                "it includes the entry\n",
                (unsigned long long)*entry);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

int cmd_audit_proof(int argc, char **argv)
{
    const char *db_arg = NULL;
    uint64_t entry = 0, size = 0;
    int json = 0;
    char path[4200];
    refex_audit_reader *r = NULL;
    if (cli_wants_help(argc, argv)) {
        proof_usage(stdout);
        return EXIT_OK;
    }
    int rc = proof_parse(argc, argv, &entry, &size, &db_arg, &json);
    if (rc != EXIT_OK ||
        (rc = cli_audit_log_open("proof", db_arg, &r, path, sizeof path)) != EXIT_OK)
        return rc;
    rc = proof_bundle(r, entry, size, json);
    refex_audit_reader_close(&r);
    return rc;
}
