/* C2SP checkpoints for the audit log: tlog-checkpoint bodies in signed notes, Ed25519 log
 * signatures and tlog-cosignature witness cosignatures, parsed as untrusted text with hard
 * size limits, and a caller's memo of the notes that verified (to check a note that comes
 * again only once). It does not decide which checkpoints are consistent; that is the
 * witness's job. */
#include "checkpoint.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define ROOT_LEN   32
#define KEY_ID_LEN 4
#define TS_LEN     8
/* Caller-supplied key names are bounded; names in parsed notes only by the note size. */
#define ARG_NAME_MAX 255
/* Signature type bytes from C2SP signed-note. */
#define ALG_ED25519  0x01
#define ALG_COSIG_V1 0x04
/* key ID || signature, and key ID || timestamp || signature. */
#define SIG_RAW_LEN   (KEY_ID_LEN + crypto_sign_BYTES)
#define COSIG_RAW_LEN (KEY_ID_LEN + TS_LEN + crypto_sign_BYTES)
/* "cosignature/v1\ntime " + at most 19 digits (timestamps stay below 2^63) + "\n". */
#define COSIG_PREFIX_MAX (sizeof "cosignature/v1\ntime " - 1 + 19 + 1)

/* Every signature line opens with an em dash (U+2014) and a space. */
static const char sig_prefix[] = "\xe2\x80\x94 ";
#define SIG_PREFIX_LEN (sizeof sig_prefix - 1)

struct sigline {
    const char *line; /* the whole line, without its newline */
    size_t line_len;
    const char *name;
    size_t name_len;
    const uint8_t *raw; /* decoded: key ID || signature; at least 5 bytes */
    size_t raw_len;
};

struct note {
    const char *text; /* the signed body, up to and including its final newline */
    size_t text_len;
    struct sigline sigs[REFEX_CHECKPOINT_SIGS_MAX];
    size_t nsigs;
    uint8_t *scratch; /* backing store of every sigline.raw; free() it */
    refex_checkpoint cp;
};

/* Length of the valid UTF-8 sequence at s (n > 0 bytes available), storing its code point;
 * 0 for anything Go's utf8.DecodeRune would call an error: bad or truncated sequences,
 * overlong forms, surrogates, code points above U+10FFFF. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    uint32_t c = s[0], min;
    size_t len;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, c &= 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, c &= 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, c &= 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

/* Go's unicode.IsSpace, which is what "Unicode spaces" means in signed-note. */
static int is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

/* signed-note: valid UTF-8 with no ASCII control character other than newline. */
static int text_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t k = utf8_next(p + i, n - i, &c);
        if (k == 0 || (c < 0x20 && c != '\n'))
            return 0;
        i += k;
    }
    return 1;
}

/* signed-note: key names are non-empty and contain no Unicode space and no '+'. */
static int name_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t k = utf8_next(p + i, n - i, &c);
        if (k == 0 || c < 0x20 || c == '+' || is_space(c))
            return 0;
        i += k;
    }
    return 1;
}

static int arg_name_ok(const char *name)
{
    size_t n = strnlen(name, ARG_NAME_MAX + 1);
    return n <= ARG_NAME_MAX && name_ok(name, n);
}

/* key ID = SHA-256(name || 0x0A || type || public key)[:4] (signed-note, tlog-cosignature). */
static void key_id(const char *name, uint8_t type, const uint8_t pk[crypto_sign_PUBLICKEYBYTES],
                   uint8_t id[KEY_ID_LEN])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_state st;

    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const uint8_t *)name, strlen(name));
    crypto_hash_sha256_update(&st, (const uint8_t *)"\n", 1);
    crypto_hash_sha256_update(&st, &type, 1);
    crypto_hash_sha256_update(&st, pk, crypto_sign_PUBLICKEYBYTES);
    crypto_hash_sha256_final(&st, h);
    memcpy(id, h, KEY_ID_LEN);
}

static int sig_matches(const struct sigline *s, const char *name, const uint8_t id[KEY_ID_LEN])
{
    size_t n = strlen(name);
    return s->name_len == n && memcmp(s->name, name, n) == 0 && memcmp(s->raw, id, KEY_ID_LEN) == 0;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* tlog-checkpoint: the size is ASCII decimal without leading zeroes ("0" for empty). */
static int parse_size(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0 || n > 20 || (s[0] == '0' && n > 1))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

/* tlog-checkpoint: at least three non-empty lines (origin, size, root), then optional
 * non-empty extension lines. text ends with a newline. The origin is taken as the spec
 * says clients must take it: any non-empty line, here of at most 255 bytes. */
static int parse_body(const char *text, size_t len, refex_checkpoint *cp)
{
    const char *p = text, *end = text + len;
    size_t nlines = 0;

    memset(cp, 0, sizeof *cp);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)(nl - p);
        size_t root_len = 0;

        if (n == 0)
            return REFEX_E_MALFORMED;
        if (nlines == 0) {
            if (n > REFEX_CHECKPOINT_ORIGIN_MAX)
                return REFEX_E_MALFORMED;
            memcpy(cp->origin, p, n);
            cp->origin[n] = '\0';
        } else if (nlines == 1) {
            if (!parse_size(p, n, &cp->size))
                return REFEX_E_MALFORMED;
        } else if (nlines == 2) {
            if (refex_base64_decode(cp->root, ROOT_LEN, &root_len, p, n) != REFEX_OK ||
                root_len != ROOT_LEN)
                return REFEX_E_MALFORMED;
        }
        nlines++;
        p = nl + 1;
    }
    return nlines >= 3 ? REFEX_OK : REFEX_E_MALFORMED;
}

/* Splits an untrusted signed note into body and signature lines, decoding every signature
 * (all must be well-formed, as in golang.org/x/mod/sumdb/note), and parses the body as a
 * checkpoint. On any return n->scratch must be freed. */
static int parse_note(const char *note, size_t len, struct note *n)
{
    const char *p, *end = note + len;
    size_t split, cap, used = 0;

    n->scratch = NULL;
    n->nsigs = 0;
    if (len > REFEX_CHECKPOINT_NOTE_MAX || len < 2 || !text_ok(note, len))
        return REFEX_E_MALFORMED;

    /* The body is separated from the signatures by the last empty line. */
    for (split = len - 1; split > 0; split--)
        if (note[split - 1] == '\n' && note[split] == '\n')
            break;
    if (split == 0 || split + 1 >= len || note[len - 1] != '\n')
        return REFEX_E_MALFORMED;
    n->text = note;
    n->text_len = split; /* up to and including the body's final newline */

    /* Decoded signatures are shorter than their base64, so this always suffices. */
    cap = len - split;
    n->scratch = malloc(cap);
    if (!n->scratch)
        return REFEX_E_NOMEM;
    for (p = note + split + 1; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t line_len = (size_t)(nl - p);
        struct sigline *s;
        const char *name, *sp, *b64;
        size_t raw_len = 0;

        if (n->nsigs == REFEX_CHECKPOINT_SIGS_MAX || line_len < SIG_PREFIX_LEN ||
            memcmp(p, sig_prefix, SIG_PREFIX_LEN) != 0)
            return REFEX_E_MALFORMED;
        name = p + SIG_PREFIX_LEN;
        sp = memchr(name, ' ', (size_t)(nl - name));
        if (!sp || !name_ok(name, (size_t)(sp - name)) || sp + 1 == nl)
            return REFEX_E_MALFORMED;
        b64 = sp + 1;
        if (refex_base64_decode(n->scratch + used, cap - used, &raw_len, b64, (size_t)(nl - b64)) !=
                REFEX_OK ||
            raw_len < KEY_ID_LEN + 1)
            return REFEX_E_MALFORMED;
        s = &n->sigs[n->nsigs++];
        s->line = p;
        s->line_len = line_len;
        s->name = name;
        s->name_len = (size_t)(sp - name);
        s->raw = n->scratch + used;
        s->raw_len = raw_len;
        used += raw_len;
        p = nl + 1;
    }
    return parse_body(n->text, n->text_len, &n->cp);
}

/* "cosignature/v1\ntime <ts>\n" || body, the message a cosignature/v1 signs; malloc'd. */
static int cosig_message(uint64_t ts, const char *text, size_t text_len, uint8_t **msg,
                         size_t *msg_len)
{
    char prefix[COSIG_PREFIX_MAX + 1];
    int k = snprintf(prefix, sizeof prefix, "cosignature/v1\ntime %" PRIu64 "\n", ts);

    if (k < 0 || (size_t)k >= sizeof prefix)
        return REFEX_E_INVAL;
    *msg = malloc((size_t)k + text_len);
    if (!*msg)
        return REFEX_E_NOMEM;
    memcpy(*msg, prefix, (size_t)k);
    memcpy(*msg + k, text, text_len);
    *msg_len = (size_t)k + text_len;
    return REFEX_OK;
}

/* Appends "— name base64(raw)\n" at *p. */
static char *put_sigline(char *p, const char *name, const uint8_t *raw, size_t raw_len)
{
    size_t n = strlen(name);

    memcpy(p, sig_prefix, SIG_PREFIX_LEN);
    p += SIG_PREFIX_LEN;
    memcpy(p, name, n);
    p += n;
    *p++ = ' ';
    refex_base64_encode(p, raw, raw_len);
    p += REFEX_BASE64_LEN(raw_len) - 1;
    *p++ = '\n';
    return p;
}

static size_t sigline_len(const char *name, size_t raw_len)
{
    return SIG_PREFIX_LEN + strlen(name) + 1 + (REFEX_BASE64_LEN(raw_len) - 1) + 1;
}

int refex_checkpoint_body(const refex_checkpoint *c, char **out)
{
    char root64[REFEX_BASE64_LEN(ROOT_LEN)];
    size_t olen, total;
    int k;

    if (!c || !out)
        return REFEX_E_INVAL;
    *out = NULL;
    olen = strnlen(c->origin, sizeof c->origin);
    if (olen == 0 || olen > REFEX_CHECKPOINT_ORIGIN_MAX)
        return REFEX_E_INVAL;
    for (size_t i = 0; i < olen; i++) {
        unsigned char ch = (unsigned char)c->origin[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '+')
            return REFEX_E_INVAL;
    }
    refex_base64_encode(root64, c->root, ROOT_LEN);
    /* origin \n up to 20 digits \n root \n NUL */
    total = olen + 1 + 20 + 1 + (sizeof root64 - 1) + 1 + 1;
    *out = malloc(total);
    if (!*out)
        return REFEX_E_NOMEM;
    k = snprintf(*out, total, "%s\n%" PRIu64 "\n%s\n", c->origin, c->size, root64);
    if (k < 0 || (size_t)k >= total) {
        free(*out);
        *out = NULL;
        return REFEX_E_INVAL;
    }
    return REFEX_OK;
}

int refex_checkpoint_sign(const refex_checkpoint *c, const char *key_name,
                          const uint8_t sign_sk[64], char **out)
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], raw[SIG_RAW_LEN];
    char *body = NULL, *p;
    size_t body_len;
    int rc;

    if (!c || !key_name || !sign_sk || !out)
        return REFEX_E_INVAL;
    *out = NULL;
    if (!arg_name_ok(key_name))
        return REFEX_E_INVAL;
    rc = refex_checkpoint_body(c, &body);
    if (rc != REFEX_OK)
        goto out;
    body_len = strlen(body);

    crypto_sign_ed25519_sk_to_pk(pk, sign_sk);
    key_id(key_name, ALG_ED25519, pk, raw);
    if (crypto_sign_detached(raw + KEY_ID_LEN, NULL, (const uint8_t *)body, body_len, sign_sk) !=
        0) {
        rc = REFEX_E_CRYPTO;
        goto out;
    }

    *out = malloc(body_len + 1 + sigline_len(key_name, SIG_RAW_LEN) + 1);
    if (!*out) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    memcpy(*out, body, body_len);
    p = *out + body_len;
    *p++ = '\n';
    p = put_sigline(p, key_name, raw, SIG_RAW_LEN);
    *p = '\0';
    rc = REFEX_OK;
out:
    free(body);
    return rc;
}

int refex_checkpoint_cosign(const char *note, const char *witness_name, const uint8_t sign_sk[64],
                            uint64_t timestamp, char **out)
{
    struct note n;
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], raw[COSIG_RAW_LEN];
    uint8_t *msg = NULL;
    size_t len, msg_len, kept = 0, total;
    char *p;
    int rc;

    if (!note || !witness_name || !sign_sk || !out)
        return REFEX_E_INVAL;
    *out = NULL;
    if (!arg_name_ok(witness_name) || timestamp > (uint64_t)INT64_MAX)
        return REFEX_E_INVAL;
    len = strnlen(note, REFEX_CHECKPOINT_NOTE_MAX + 1);
    rc = parse_note(note, len, &n);
    if (rc != REFEX_OK)
        goto out;

    crypto_sign_ed25519_sk_to_pk(pk, sign_sk);
    key_id(witness_name, ALG_COSIG_V1, pk, raw);
    put_be64(raw + KEY_ID_LEN, timestamp);
    rc = cosig_message(timestamp, n.text, n.text_len, &msg, &msg_len);
    if (rc != REFEX_OK)
        goto out;
    if (crypto_sign_detached(raw + KEY_ID_LEN + TS_LEN, NULL, msg, msg_len, sign_sk) != 0) {
        rc = REFEX_E_CRYPTO;
        goto out;
    }

    /* Keep every other signature line as it was; drop this witness's earlier cosignature. */
    total = n.text_len + 1 + sigline_len(witness_name, COSIG_RAW_LEN);
    for (size_t i = 0; i < n.nsigs; i++) {
        if (sig_matches(&n.sigs[i], witness_name, raw))
            continue;
        kept++;
        total += n.sigs[i].line_len + 1;
    }
    if (kept + 1 > REFEX_CHECKPOINT_SIGS_MAX || total > REFEX_CHECKPOINT_NOTE_MAX) {
        rc = REFEX_E_TOO_BIG;
        goto out;
    }
    *out = malloc(total + 1);
    if (!*out) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    memcpy(*out, n.text, n.text_len);
    p = *out + n.text_len;
    *p++ = '\n';
    for (size_t i = 0; i < n.nsigs; i++) {
        if (sig_matches(&n.sigs[i], witness_name, raw))
            continue;
        memcpy(p, n.sigs[i].line, n.sigs[i].line_len);
        p += n.sigs[i].line_len;
        *p++ = '\n';
    }
    p = put_sigline(p, witness_name, raw, COSIG_RAW_LEN);
    *p = '\0';
    rc = REFEX_OK;
out:
    free(msg);
    free(n.scratch);
    return rc;
}

int refex_checkpoint_open(const char *note, size_t len, const char *key_name, const uint8_t pk[32],
                          refex_checkpoint *c)
{
    struct note n;
    uint8_t id[KEY_ID_LEN];
    int rc, found = 0;

    if (!note || !key_name || !pk || !c)
        return REFEX_E_INVAL;
    memset(c, 0, sizeof *c);
    if (!arg_name_ok(key_name))
        return REFEX_E_INVAL;
    rc = parse_note(note, len, &n);
    if (rc != REFEX_OK)
        goto out;

    key_id(key_name, ALG_ED25519, pk, id);
    rc = REFEX_E_BAD_SIGNATURE;
    for (size_t i = 0; i < n.nsigs; i++) {
        const struct sigline *s = &n.sigs[i];
        if (!sig_matches(s, key_name, id))
            continue;
        /* signed-note: a known key's signature that fails rejects the whole note. */
        if (s->raw_len != SIG_RAW_LEN ||
            crypto_sign_verify_detached(s->raw + KEY_ID_LEN, (const uint8_t *)n.text, n.text_len,
                                        pk) != 0)
            goto out;
        found = 1;
    }
    if (!found)
        goto out;
    *c = n.cp;
    rc = REFEX_OK;
out:
    free(n.scratch);
    return rc;
}

int refex_checkpoint_open_any(const char *note, size_t len, const char *key_name,
                              const uint8_t *const pks[], int n, refex_checkpoint *c)
{
    int rc = REFEX_E_BAD_SIGNATURE;
    for (int i = 0; i < n && rc == REFEX_E_BAD_SIGNATURE; i++)
        rc = refex_checkpoint_open(note, len, key_name, pks[i], c);
    return rc;
}

/* The slot m keeps for key_name, or -1. */
static int memo_find(const refex_checkpoint_memo *m, const char *key_name)
{
    for (int i = 0; i < REFEX_CHECKPOINT_MEMO_SLOTS; i++)
        if (strcmp(m->slot[i].key_name, key_name) == 0)
            return i;
    return -1;
}

int refex_checkpoint_open_memo(refex_checkpoint_memo *m, const char *note, size_t len,
                               const char *key_name, const uint8_t *const pks[], int n,
                               refex_checkpoint *c)
{
    if (!m || !note || !key_name || !c)
        return REFEX_E_INVAL;
    int i =
        *key_name && strlen(key_name) <= REFEX_CHECKPOINT_ORIGIN_MAX ? memo_find(m, key_name) : -1;
    if (i >= 0 && m->slot[i].len == len && memcmp(m->slot[i].note, note, len) == 0)
        for (int k = 0; k < n; k++)
            if (pks[k] && sodium_memcmp(pks[k], m->slot[i].pk, 32) == 0) {
                *c = m->slot[i].c; /* the same bytes verified under a key still given */
                return REFEX_OK;
            }
    int rc = REFEX_E_BAD_SIGNATURE, k = 0;
    for (; k < n && rc == REFEX_E_BAD_SIGNATURE; k++)
        rc = refex_checkpoint_open(note, len, key_name, pks[k], c);
    if (rc != REFEX_OK || len > REFEX_CHECKPOINT_MEMO_NOTE ||
        strlen(key_name) > REFEX_CHECKPOINT_ORIGIN_MAX)
        return rc;
    if (i < 0)
        i = (int)(m->next++ % REFEX_CHECKPOINT_MEMO_SLOTS);
    snprintf(m->slot[i].key_name, sizeof m->slot[i].key_name, "%s", key_name);
    memcpy(m->slot[i].pk, pks[k - 1], 32);
    memcpy(m->slot[i].note, note, len);
    m->slot[i].len = len;
    m->slot[i].c = *c;
    return REFEX_OK;
}

int refex_checkpoint_verify_cosignature(const char *note, size_t len, const char *witness_name,
                                        const uint8_t pk[32], uint64_t *timestamp)
{
    struct note n;
    uint8_t id[KEY_ID_LEN];
    uint8_t *msg = NULL;
    size_t msg_len;
    uint64_t latest = 0;
    int rc, found = 0;

    if (!note || !witness_name || !pk || !timestamp)
        return REFEX_E_INVAL;
    *timestamp = 0;
    if (!arg_name_ok(witness_name))
        return REFEX_E_INVAL;
    rc = parse_note(note, len, &n);
    if (rc != REFEX_OK)
        goto out;

    key_id(witness_name, ALG_COSIG_V1, pk, id);
    for (size_t i = 0; i < n.nsigs; i++) {
        const struct sigline *s = &n.sigs[i];
        uint64_t ts;
        if (!sig_matches(s, witness_name, id))
            continue;
        rc = REFEX_E_BAD_SIGNATURE;
        if (s->raw_len != COSIG_RAW_LEN)
            goto out;
        ts = get_be64(s->raw + KEY_ID_LEN);
        if (ts > (uint64_t)INT64_MAX) /* tlog-cosignature: MUST NOT exceed 2^63 - 1 */
            goto out;
        free(msg);
        msg = NULL;
        rc = cosig_message(ts, n.text, n.text_len, &msg, &msg_len);
        if (rc != REFEX_OK)
            goto out;
        if (crypto_sign_verify_detached(s->raw + KEY_ID_LEN + TS_LEN, msg, msg_len, pk) != 0) {
            rc = REFEX_E_BAD_SIGNATURE;
            goto out;
        }
        if (!found || ts > latest)
            latest = ts;
        found = 1;
    }
    if (!found) {
        rc = REFEX_E_BAD_SIGNATURE;
        goto out;
    }
    *timestamp = latest;
    rc = REFEX_OK;
out:
    free(msg);
    free(n.scratch);
    return rc;
}
