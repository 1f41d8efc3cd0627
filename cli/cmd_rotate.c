/* Key rotation, the operator's two steps (docs/operations.md, "Rotating an agency's
 * keys"): `refex keys rotate` on the agency's machine makes new keys and keeps the old
 * ones as ID.previous.secret; `refex directory rotate` on the trust anchor's machine names
 * the new keys in the directory and keeps the old ones verifying for an overlap. Files
 * only: no daemon is contacted. Not for making first keys or editing other entries
 * (cmd_keys.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "directory.h"
#include "keys.h"
#include "util.h"

#define OVERLAP_DEFAULT_S (14L * 24 * 3600) /* twice the default TTL (lib/envelope.h) */

/* The broker's and the trust anchor's keys are pinned by every daemon: not rotated here. */
static int pinned_role(const char *role)
{
    return strcmp(role, "broker") == 0 || strcmp(role, "trust-anchor") == 0;
}
#define OVERLAP_MAX_S (366L * 24 * 3600)

static void keys_rotate_usage(FILE *out)
{
    fprintf(out, "usage: refex keys rotate --agency ID --out DIR [--json]\n"
                 "\n"
                 "Replaces DIR/ID.secret and DIR/ID.public with new key pairs, keeping the old\n"
                 "secret as DIR/ID.previous.secret (mode 0600) and the old public half as\n"
                 "DIR/ID.previous.public (for auditors). A running agent is not affected. Then, on "
                 "the trust anchor's machine:\n"
                 "  refex directory rotate --file DIRECTORY --keys ID.public [--overlap SECONDS]\n"
                 "  refex directory sign --file DIRECTORY --anchor ANCHOR.secret\n"
                 "install the new directory everywhere, reload (SIGHUP) the broker and every\n"
                 "agent, and restart this agency's agent: it then signs with the new keys.\n"
                 "Until the directory names them, an agent restarted here keeps using the\n"
                 "previous keys. Remove ID.previous.secret once the overlap has ended and no\n"
                 "message sealed to the old key can still be queued (the longest TTL).\n"
                 "\n"
                 "Refuses if DIR/ID.previous.secret exists (a rotation still in progress) or\n"
                 "DIR/ID.previous.public does (archive an earlier rotation's first).\n");
}

static void dir_rotate_usage(FILE *out)
{
    fprintf(out, "usage: refex directory rotate --file FILE --keys ID.public [--overlap SECONDS]\n"
                 "                              [--json]\n"
                 "       refex directory rotate --file FILE --agency ID --end-overlap [--json]\n"
                 "\n"
                 "Names the new keys in ID.public (from 'refex keys rotate') as agency ID's keys\n"
                 "and keeps its current keys as previous keys, which still verify signatures and\n"
                 "admit its connections for the overlap, counted from now (default 1209600 s,\n"
                 "14 days; at most 366 days). Make it at least the longest TTL in use: what the\n"
                 "old key signed and is delivered after the overlap is refused. After the\n"
                 "overlap only the new keys count. --overlap 0 after a compromise: the old keys\n"
                 "stop counting as soon as the directory is loaded. A rotation is refused while\n"
                 "the overlap of the one before still runs, unless with --overlap 0.\n"
                 "--end-overlap ends a running overlap now. Clears the signature: run\n"
                 "'refex directory sign' next.\n");
}

/* The files of one rotation in DIR. */
typedef struct {
    char cur[4096], pub[4096], prev[4096], prevpub[4096];
    char tmp[4096], tmpsec[4200], tmppub[4200], tmpprev[4200];
} rotate_paths;

/* How a rotation ended: done; refused before anything moved (ID.previous.secret or
 * ID.previous.public already there, or an I/O error); or half done, the files as printed. */
enum { ROTATED, REFUSED_SECRET, REFUSED_PUBLIC, FAILED, HALF_DONE };

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Puts the files in place from the temporary directory, never replacing an old key:
 * ID.secret linked as ID.previous.secret and the old public half linked as
 * ID.previous.public (each refused if there: a rotation in progress, or an earlier one's
 * file not archived), then the new ID.secret and ID.public renamed over the old ones. A
 * failure puts back what had moved; HALF_DONE if even that failed (nothing is deleted). */
static int install(const rotate_paths *f, const char *out)
{
    if (link(f->cur, f->prev) != 0)
        return errno == EEXIST ? REFUSED_SECRET : FAILED;
    if (link(f->tmpprev, f->prevpub) != 0) {
        int e = errno;
        unlink(f->prev);
        return e == EEXIST ? REFUSED_PUBLIC : FAILED;
    }
    fsync_dir(out);
    if (rename(f->tmpsec, f->cur) != 0) {
        unlink(f->prevpub);
        unlink(f->prev);
        return FAILED;
    }
    fsync_dir(out);
    if (rename(f->tmppub, f->pub) != 0) {
        if (rename(f->prev, f->cur) != 0) /* the old secret back, atomically */
            return HALF_DONE;
        unlink(f->prevpub);
        return FAILED;
    }
    return ROTATED;
}

static int rotate_in(const char *agency, const char *out, const refex_keys *old, rotate_paths *f)
{
    refex_keys *k = NULL;
    snprintf(f->tmp, sizeof f->tmp, "%s/.rotate-%s-XXXXXX", out, agency);
    if (!mkdtemp(f->tmp))
        return FAILED;
    snprintf(f->tmpsec, sizeof f->tmpsec, "%s/%s.secret", f->tmp, agency);
    snprintf(f->tmppub, sizeof f->tmppub, "%s/%s.public", f->tmp, agency);
    snprintf(f->tmpprev, sizeof f->tmpprev, "%s/%s.previous.public", f->tmp, agency);
    int rc = refex_keys_new(agency, old->pub.role, &k) == REFEX_OK &&
                     refex_keys_save(k, f->tmp) == REFEX_OK &&
                     refex_pubkeys_save(&old->pub, f->tmpprev) == REFEX_OK
                 ? install(f, out)
                 : FAILED;
    refex_keys_destroy(&k);
    if (rc == HALF_DONE)
        return rc;     /* the temporary directory holds the new public half: kept */
    unlink(f->tmpsec); /* gone already if installed */
    unlink(f->tmppub);
    unlink(f->tmpprev);
    rmdir(f->tmp);
    fsync_dir(out);
    return rc;
}

static int rotate_failed(int rc, const rotate_paths *f)
{
    if (rc == REFUSED_SECRET)
        return cli_fail(EXIT_KEYS, "E_EXISTS",
                        "refex keys rotate: %s exists: a rotation is still in progress (remove "
                        "it once its overlap has ended)\n",
                        f->prev);
    if (rc == REFUSED_PUBLIC)
        return cli_fail(EXIT_KEYS, "E_EXISTS",
                        "refex keys rotate: %s exists (an earlier rotation's): archive it for "
                        "auditors, then run this again; nothing was changed\n",
                        f->prevpub);
    if (rc == HALF_DONE)
        return cli_fail(EXIT_KEYS, "E_IO",
                        "refex keys rotate: stopped half way: %s holds the new secret, %s the "
                        "old one, and the new public half is in %s; put them right by hand\n",
                        f->cur, f->prev, f->tmppub);
    return cli_fail(EXIT_KEYS, "E_IO",
                    "refex keys rotate: could not write the new keys beside %s; nothing was "
                    "changed\n",
                    f->cur);
}

static int keys_rotate_files(const char *agency, const char *out, int json)
{
    char err[512];
    rotate_paths f;
    refex_keys *old = NULL;
    snprintf(f.cur, sizeof f.cur, "%s/%s.secret", out, agency);
    snprintf(f.prev, sizeof f.prev, "%s/%s.previous.secret", out, agency);
    snprintf(f.pub, sizeof f.pub, "%s/%s.public", out, agency);
    snprintf(f.prevpub, sizeof f.prevpub, "%s/%s.previous.public", out, agency);
    int rc = refex_keys_load(f.cur, &old, err, sizeof err);
    if (rc != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex keys rotate: %s\n", err);
    if (strcmp(old->pub.agency, agency) != 0 || pinned_role(old->pub.role)) {
        int other = strcmp(old->pub.agency, agency) != 0;
        refex_keys_destroy(&old);
        if (other)
            return cli_fail(EXIT_KEYS, "E_CONFIG",
                            "refex keys rotate: %s holds another agency's keys\n", f.cur);
        return cli_fail(EXIT_KEYS, "E_CONFIG",
                        "refex keys rotate: %s is pinned by every daemon; its keys are not "
                        "rotated this way (docs/operations.md)\n",
                        agency);
    }
    rc = rotate_in(agency, out, old, &f);
    refex_keys_destroy(&old);
    if (rc != ROTATED)
        return rotate_failed(rc, &f);
    if (json) {
        json_t *o =
            json_pack("{s:b, s:s, s:s, s:s, s:s, s:s}", "ok", 1, "agency", agency, "secret", f.cur,
                      "public", f.pub, "previous", f.prev, "previous_public", f.prevpub);
        cli_print_json(o);
        json_decref(o);
    } else {
        printf("rotated %s: new keys in %s (0600) and %s; the old ones are now %s and %s\n"
               "next: refex directory rotate --file DIRECTORY --keys %s, then sign it\n",
               agency, f.cur, f.pub, f.prev, f.prevpub, f.pub);
    }
    return EXIT_OK;
}

int cmd_keys_rotate(int argc, char **argv)
{
    const char *agency = NULL, *out = NULL;
    int json = 0, opt;
    static const struct option opts[] = {{"agency", required_argument, 0, 'a'},
                                         {"out", required_argument, 0, 'o'},
                                         {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    cli_getopt_reset();
    while ((opt = cli_getopt("keys rotate", argc, argv, opts)) != -1) {
        if (opt == 'a')
            agency = optarg;
        else if (opt == 'o')
            out = optarg;
        else if (opt == 'j')
            json = 1;
        else if (opt == 'h') {
            keys_rotate_usage(stdout);
            return EXIT_OK;
        } else
            return EXIT_USAGE;
    }
    if (optind < argc)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex keys rotate: unknown argument '%s'\n",
                        argv[optind]);
    if (!agency || !out) {
        keys_rotate_usage(cli_usage_stream(0));
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex keys rotate: --agency and --out are required\n");
    }
    if (!refex_id_valid(agency))
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex keys rotate: '%s' is not an agency id\n",
                        agency);
    return keys_rotate_files(agency, out, json);
}

/* The UTC time of ms, for people. */
static void utc(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "?");
}

/* The directory file, edited by fn and saved; the failures fn names printed by it. */
static int edit_directory(const char *file, int (*fn)(refex_directory *d, void *arg), void *arg)
{
    char err[512];
    refex_directory *d = NULL;
    int rc = refex_directory_load(file, NULL, &d, err, sizeof err);
    if (rc != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory rotate: %s\n", err);
    rc = fn(d, arg);
    if (rc == EXIT_OK && (rc = refex_directory_save(d, file)) != REFEX_OK)
        rc = cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory rotate: %s: %s\n", file,
                      refex_strerror(rc));
    refex_directory_destroy(&d);
    return rc;
}

typedef struct {
    const char *file, *keys, *agency;
    refex_pubkeys p;
    long overlap;
    int64_t until_ms;
} rotate_args;

static int rotate_entry(refex_directory *d, void *arg)
{
    rotate_args *o = arg;
    char until[64];
    int64_t now = refex_now_ms();
    o->until_ms = now + (int64_t)o->overlap * 1000;
    const refex_agency *a = refex_directory_find(d, o->p.agency);
    int rc = a ? refex_directory_rotate(d, &o->p, now, o->until_ms) : REFEX_E_UNKNOWN_AGENCY;
    if (rc == REFEX_E_UNKNOWN_AGENCY)
        return cli_fail(EXIT_KEYS, refex_errname(rc),
                        "refex directory rotate: '%s' is not in %s (use 'refex directory add')\n",
                        o->p.agency, o->file);
    if (rc == REFEX_E_INVAL)
        return cli_fail(EXIT_KEYS, refex_errname(rc),
                        "refex directory rotate: %s is for role '%s', not the directory's '%s'\n",
                        o->keys, o->p.role, a->role);
    if (rc == REFEX_E_EXISTS)
        return cli_fail(EXIT_KEYS, refex_errname(rc),
                        "refex directory rotate: the keys in %s are already listed (this "
                        "agency's or another's)\n",
                        o->keys);
    if (rc == REFEX_E_BUSY) {
        utc(a->prev_until_ms, until, sizeof until);
        return cli_fail(EXIT_KEYS, refex_errname(rc),
                        "refex directory rotate: the overlap of %s's last rotation runs until "
                        "%s; wait, end it with --end-overlap, or rotate with --overlap 0\n",
                        o->p.agency, until);
    }
    if (rc != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory rotate: %s\n",
                        refex_strerror(rc));
    return EXIT_OK;
}

static int end_overlap(refex_directory *d, void *arg)
{
    rotate_args *o = arg;
    o->until_ms = refex_now_ms();
    int rc = refex_directory_end_overlap(d, o->agency, o->until_ms);
    if (rc == REFEX_E_NOTFOUND)
        return cli_fail(EXIT_KEYS, refex_errname(rc),
                        "refex directory rotate: no overlap of %s's is running; %s not changed\n",
                        o->agency, o->file);
    if (rc != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory rotate: '%s' is not in %s\n",
                        o->agency, o->file);
    return EXIT_OK;
}

static void print_done(const rotate_args *o, const char *id, int json)
{
    char until[64];
    utc(o->until_ms, until, sizeof until);
    if (json) {
        json_t *j =
            json_pack("{s:b, s:s, s:s, s:I, s:s}", "ok", 1, "file", o->file, "id", id,
                      "previous_until_ms", (json_int_t)o->until_ms, "signature", "unsigned");
        cli_print_json(j);
        json_decref(j);
    } else {
        int over = o->keys ? o->overlap == 0 : 1;
        printf("%s %s in %s: its previous keys %s%s; the directory is now unsigned\n",
               o->keys ? "rotated" : "ended the overlap of", id, o->file,
               over ? "no longer count, once the signed directory is loaded"
                    : "are accepted until ",
               over ? "" : until);
    }
}

static int dir_rotate_file(rotate_args *o, int json)
{
    char err[512];
    int rc;
    if (!o->keys) {
        if ((rc = edit_directory(o->file, end_overlap, o)) == EXIT_OK)
            print_done(o, o->agency, json);
        return rc;
    }
    if ((rc = refex_pubkeys_load(o->keys, &o->p, err, sizeof err)) != REFEX_OK)
        return cli_fail(EXIT_KEYS, refex_errname(rc), "refex directory rotate: %s\n", err);
    if (pinned_role(o->p.role))
        return cli_fail(EXIT_KEYS, "E_CONFIG",
                        "refex directory rotate: the %s's keys are pinned by every daemon and "
                        "are not rotated this way (docs/operations.md)\n",
                        o->p.role);
    if ((rc = edit_directory(o->file, rotate_entry, o)) == EXIT_OK)
        print_done(o, o->p.agency, json);
    return rc;
}

int cmd_directory_rotate(int argc, char **argv)
{
    rotate_args o = {.overlap = OVERLAP_DEFAULT_S};
    int json = 0, end = 0, opt;
    static const struct option opts[] = {
        {"file", required_argument, 0, 'f'},    {"keys", required_argument, 0, 'k'},
        {"overlap", required_argument, 0, 'o'}, {"agency", required_argument, 0, 'a'},
        {"end-overlap", no_argument, 0, 'e'},   {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    cli_getopt_reset();
    while ((opt = cli_getopt("directory rotate", argc, argv, opts)) != -1) {
        if (opt == 'f')
            o.file = optarg;
        else if (opt == 'k')
            o.keys = optarg;
        else if (opt == 'a')
            o.agency = optarg;
        else if (opt == 'e')
            end = 1;
        else if (opt == 'o') {
            if (cli_number("directory rotate", "--overlap", optarg, 0, OVERLAP_MAX_S, &o.overlap) !=
                EXIT_OK)
                return EXIT_USAGE;
        } else if (opt == 'j')
            json = 1;
        else if (opt == 'h') {
            dir_rotate_usage(stdout);
            return EXIT_OK;
        } else
            return EXIT_USAGE;
    }
    if (optind < argc)
        return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex directory rotate: unknown argument '%s'\n",
                        argv[optind]);
    if (!o.file || (end ? !o.agency || o.keys : !o.keys || o.agency)) {
        dir_rotate_usage(cli_usage_stream(0));
        return cli_fail(EXIT_USAGE, CLI_E_USAGE,
                        "refex directory rotate: give --file and --keys, or --file, --agency "
                        "and --end-overlap\n");
    }
    return dir_rotate_file(&o, json);
}
