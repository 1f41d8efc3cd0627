/* Signed directory: load, verify, edit, sign, save. The signature covers the exact
 * serialized Directory bytes kept in the file, prefixed by a domain-separation string,
 * so no canonical re-encoding is ever needed to verify. */
#include "directory.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refex.pb-c.h"
#include "codec.h"
#include "util.h"

#define MAX_AGENCIES 4096

struct refex_directory {
    refex_agency *d_agencies;
    size_t d_n, d_cap;
    uint64_t d_serial;
    int64_t d_issued_at;
    uint8_t *d_bytes; /* signed Directory bytes, NULL when modified since signing */
    size_t d_len;
    uint8_t d_sig[64];
    int d_signed;
    refex_policy *d_policy; /* NULL: the directory carries no policy */
};

int refex_directory_new(refex_directory **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? REFEX_OK : REFEX_E_NOMEM;
}

void refex_directory_destroy(refex_directory **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->d_agencies);
    free((*self_p)->d_bytes);
    refex_policy_destroy(&(*self_p)->d_policy);
    free(*self_p);
    *self_p = NULL;
}

/* Is pk one of a's transport keys (current, or previous whatever the time)? */
static int has_transport_key(const refex_agency *a, const uint8_t pk[32])
{
    return sodium_memcmp(a->transport_pk, pk, 32) == 0 ||
           (a->has_prev && sodium_memcmp(a->prev_transport_pk, pk, 32) == 0);
}

static void invalidate(refex_directory *self)
{
    free(self->d_bytes);
    self->d_bytes = NULL;
    self->d_len = 0;
    self->d_signed = 0;
}

int refex_directory_add(refex_directory *self, const refex_agency *a, int replace)
{
    refex_agency *same = NULL;
    if (!refex_id_valid(a->id) || !refex_id_valid(a->role))
        return REFEX_E_INVAL;
    for (size_t i = 0; i < self->d_n; i++) {
        refex_agency *b = &self->d_agencies[i];
        if (strcmp(b->id, a->id) == 0)
            same = b;
        else if (has_transport_key(b, a->transport_pk) ||
                 (a->has_prev && has_transport_key(b, a->prev_transport_pk)))
            return REFEX_E_EXISTS; /* one transport key, one identity */
    }
    if (same) {
        if (!replace)
            return REFEX_E_EXISTS;
        *same = *a;
        invalidate(self);
        return REFEX_OK;
    }
    if (self->d_n == MAX_AGENCIES)
        return REFEX_E_TOO_BIG;
    if (self->d_n == self->d_cap) {
        size_t cap = self->d_cap ? self->d_cap * 2 : 8;
        refex_agency *n = realloc(self->d_agencies, cap * sizeof *n);
        if (!n)
            return REFEX_E_NOMEM;
        self->d_agencies = n;
        self->d_cap = cap;
    }
    self->d_agencies[self->d_n++] = *a;
    invalidate(self);
    return REFEX_OK;
}

static int serialize(const refex_directory *self, uint8_t **out, size_t *out_len)
{
    int rc = REFEX_OK;
    Refex__V1__Directory d = REFEX__V1__DIRECTORY__INIT;
    Refex__V1__Agency *items = calloc(self->d_n ? self->d_n : 1, sizeof *items);
    Refex__V1__Agency **ptrs = calloc(self->d_n ? self->d_n : 1, sizeof *ptrs);
    if (!items || !ptrs) {
        rc = REFEX_E_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < self->d_n; i++) {
        const refex_agency *a = &self->d_agencies[i];
        Refex__V1__Agency *p = &items[i];
        refex__v1__agency__init(p);
        p->id = (char *)a->id;
        p->role = (char *)a->role;
        p->display_name = (char *)a->display_name;
        p->sign_pk = (ProtobufCBinaryData){32, (uint8_t *)a->sign_pk};
        p->enc_pk = (ProtobufCBinaryData){32, (uint8_t *)a->enc_pk};
        p->transport_pk = (ProtobufCBinaryData){32, (uint8_t *)a->transport_pk};
        p->valid_from_ms = a->valid_from_ms;
        p->valid_until_ms = a->valid_until_ms;
        p->revoked = a->revoked != 0;
        if (a->has_prev) {
            p->previous_sign_pk = (ProtobufCBinaryData){32, (uint8_t *)a->prev_sign_pk};
            p->previous_enc_pk = (ProtobufCBinaryData){32, (uint8_t *)a->prev_enc_pk};
            p->previous_transport_pk = (ProtobufCBinaryData){32, (uint8_t *)a->prev_transport_pk};
            p->previous_until_ms = a->prev_until_ms;
        }
        ptrs[i] = p;
    }
    d.serial = self->d_serial;
    d.issued_at_ms = self->d_issued_at;
    d.n_agencies = self->d_n;
    d.agencies = ptrs;
    if (self->d_policy && (rc = refex_policy_to_pb(self->d_policy, &d.policy)) != REFEX_OK)
        goto out;
    rc = refex_pb_pack(&d.base, out, out_len);
out:
    refex_policy_pb_free(d.policy);
    free(items);
    free(ptrs);
    return rc;
}

int refex_directory_sign(refex_directory *self, const uint8_t sign_sk[64])
{
    invalidate(self);
    self->d_serial++;
    self->d_issued_at = refex_now_ms();
    int rc = serialize(self, &self->d_bytes, &self->d_len);
    if (rc != REFEX_OK)
        return rc;
    if ((rc = refex_sign_domain(REFEX_DIRECTORY_CONTEXT, self->d_bytes, self->d_len, sign_sk,
                                self->d_sig)) != REFEX_OK)
        return rc;
    self->d_signed = 1;
    return REFEX_OK;
}

int refex_directory_save(const refex_directory *self, const char *path)
{
    Refex__V1__SignedDirectory sd = REFEX__V1__SIGNED_DIRECTORY__INIT;
    uint8_t *bytes = NULL, *buf = NULL;
    size_t len = 0;
    int rc = REFEX_OK;
    if (self->d_signed) {
        sd.directory = (ProtobufCBinaryData){self->d_len, self->d_bytes};
        sd.signature = (ProtobufCBinaryData){64, (uint8_t *)self->d_sig};
    } else {
        if ((rc = serialize(self, &bytes, &len)) != REFEX_OK)
            return rc;
        sd.directory = (ProtobufCBinaryData){len, bytes};
    }
    size_t n = 0;
    if ((rc = refex_pb_pack(&sd.base, &buf, &n)) == REFEX_OK)
        rc = refex_file_write(path, buf, n, 0644);
    free(bytes);
    free(buf);
    return rc;
}

/* An entry's previous keys (key rotation): all three 32 bytes with an end of the overlap,
 * or none at all. 0 if the entry is malformed. */
static int load_previous(refex_agency *a, const Refex__V1__Agency *p)
{
    size_t n = p->previous_sign_pk.len + p->previous_enc_pk.len + p->previous_transport_pk.len;
    if (n == 0)
        return p->previous_until_ms == 0;
    if (p->previous_sign_pk.len != 32 || p->previous_enc_pk.len != 32 ||
        p->previous_transport_pk.len != 32 || p->previous_until_ms <= 0)
        return 0;
    a->has_prev = 1;
    memcpy(a->prev_sign_pk, p->previous_sign_pk.data, 32);
    memcpy(a->prev_enc_pk, p->previous_enc_pk.data, 32);
    memcpy(a->prev_transport_pk, p->previous_transport_pk.data, 32);
    a->prev_until_ms = p->previous_until_ms;
    return 1;
}

/* The agencies of a parsed Directory, checked, into self. */
static int load_agencies(refex_directory *self, const Refex__V1__Directory *d, const char *path,
                         char *err, size_t errlen)
{
    for (size_t i = 0; i < d->n_agencies; i++) {
        const Refex__V1__Agency *p = d->agencies[i];
        refex_agency a;
        memset(&a, 0, sizeof a);
        if (!refex_id_valid(p->id) || !refex_id_valid(p->role) || p->sign_pk.len != 32 ||
            p->enc_pk.len != 32 || p->transport_pk.len != 32 ||
            strlen(p->display_name) >= sizeof a.display_name || !load_previous(&a, p)) {
            snprintf(err, errlen, "%s: agency entry %zu is invalid", path, i);
            return REFEX_E_DIRECTORY;
        }
        snprintf(a.id, sizeof a.id, "%s", p->id);
        snprintf(a.role, sizeof a.role, "%s", p->role);
        snprintf(a.display_name, sizeof a.display_name, "%s", p->display_name);
        memcpy(a.sign_pk, p->sign_pk.data, 32);
        memcpy(a.enc_pk, p->enc_pk.data, 32);
        memcpy(a.transport_pk, p->transport_pk.data, 32);
        a.valid_from_ms = p->valid_from_ms;
        a.valid_until_ms = p->valid_until_ms;
        a.revoked = p->revoked;
        if (refex_directory_add(self, &a, 0) != REFEX_OK) {
            snprintf(err, errlen, "%s: agency '%s' is listed twice or shares a key", path, a.id);
            return REFEX_E_DIRECTORY;
        }
    }
    return REFEX_OK;
}

int refex_directory_load(const char *path, const uint8_t *anchor_pk, refex_directory **out,
                         char *err, size_t errlen)
{
    uint8_t *file = NULL;
    size_t file_len = 0;
    *out = NULL;
    int rc = refex_file_read(path, REFEX_DIRECTORY_MAX_BYTES, &file, &file_len);
    if (rc != REFEX_OK)
        snprintf(err, errlen, "%s: %s", path, refex_strerror(rc));
    else
        rc = refex_directory_parse(file, file_len, path, anchor_pk, out, err, errlen);
    free(file);
    return rc;
}

int refex_directory_parse(const uint8_t *file, size_t file_len, const char *path,
                          const uint8_t *anchor_pk, refex_directory **out, char *err, size_t errlen)
{
    int rc = REFEX_E_DIRECTORY;
    Refex__V1__SignedDirectory *sd = NULL;
    Refex__V1__Directory *d = NULL;
    refex_directory *self = NULL;
    *out = NULL;

    if (file_len > REFEX_DIRECTORY_MAX_BYTES) {
        snprintf(err, errlen, "%s: %s", path, refex_strerror(REFEX_E_TOO_BIG));
        return REFEX_E_TOO_BIG;
    }
    sd = refex__v1__signed_directory__unpack(NULL, file_len, file);
    if (!sd) {
        snprintf(err, errlen, "%s: not a refex directory file", path);
        goto out;
    }
    if (anchor_pk) {
        if (sd->signature.len != 64) {
            snprintf(err, errlen, "%s: directory is not signed (run: refex directory sign)", path);
            goto out;
        }
        if (refex_verify_domain(REFEX_DIRECTORY_CONTEXT, sd->directory.data, sd->directory.len,
                                sd->signature.data, anchor_pk) != REFEX_OK) {
            snprintf(err, errlen,
                     "%s: directory signature does not verify against the pinned "
                     "trust anchor",
                     path);
            goto out;
        }
    }
    d = refex__v1__directory__unpack(NULL, sd->directory.len, sd->directory.data);
    if (!d) {
        snprintf(err, errlen, "%s: directory contents are malformed", path);
        goto out;
    }
    if ((rc = refex_directory_new(&self)) != REFEX_OK)
        goto out;
    if ((rc = load_agencies(self, d, path, err, errlen)) != REFEX_OK)
        goto out;
    if (d->policy) {
        char perr[256] = "";
        if ((rc = refex_policy_from_pb(d->policy, &self->d_policy, perr, sizeof perr)) !=
            REFEX_OK) {
            snprintf(err, errlen, "%s: %s", path, perr);
            goto out;
        }
    }
    self->d_serial = d->serial;
    self->d_issued_at = d->issued_at_ms;
    if (sd->signature.len == 64) {
        self->d_bytes = malloc(sd->directory.len ? sd->directory.len : 1);
        if (!self->d_bytes) {
            rc = REFEX_E_NOMEM;
            goto out;
        }
        if (sd->directory.len)
            memcpy(self->d_bytes, sd->directory.data, sd->directory.len);
        self->d_len = sd->directory.len;
        memcpy(self->d_sig, sd->signature.data, 64);
        self->d_signed = 1;
    }
    *out = self;
    self = NULL;
    rc = REFEX_OK;
out:
    refex_directory_destroy(&self);
    if (d)
        refex__v1__directory__free_unpacked(d, NULL);
    if (sd)
        refex__v1__signed_directory__free_unpacked(sd, NULL);
    return rc;
}

int refex_directory_is_signed(const refex_directory *self)
{
    return self->d_signed;
}

uint64_t refex_directory_serial(const refex_directory *self)
{
    return self->d_serial;
}

int64_t refex_directory_issued_at(const refex_directory *self)
{
    return self->d_issued_at;
}

const refex_policy *refex_directory_policy(const refex_directory *self)
{
    return self->d_policy;
}

int refex_directory_policy_edit(refex_directory *self, refex_policy **out)
{
    int rc = self->d_policy ? REFEX_OK : refex_policy_new(&self->d_policy);
    if (rc != REFEX_OK)
        return rc;
    invalidate(self);
    *out = self->d_policy;
    return REFEX_OK;
}

size_t refex_directory_count(const refex_directory *self)
{
    return self->d_n;
}

const refex_agency *refex_directory_at(const refex_directory *self, size_t i)
{
    return i < self->d_n ? &self->d_agencies[i] : NULL;
}

const refex_agency *refex_directory_find(const refex_directory *self, const char *id)
{
    for (size_t i = 0; i < self->d_n; i++)
        if (strcmp(self->d_agencies[i].id, id) == 0)
            return &self->d_agencies[i];
    return NULL;
}

const refex_agency *refex_directory_find_transport(const refex_directory *self,
                                                   const uint8_t pk[32])
{
    for (size_t i = 0; i < self->d_n; i++)
        if (has_transport_key(&self->d_agencies[i], pk))
            return &self->d_agencies[i];
    return NULL;
}

int refex_agency_usable(const refex_agency *a, int64_t now_ms)
{
    if (a->revoked)
        return REFEX_E_REVOKED;
    if (a->valid_from_ms && now_ms < a->valid_from_ms)
        return REFEX_E_REVOKED;
    if (a->valid_until_ms && now_ms >= a->valid_until_ms)
        return REFEX_E_REVOKED;
    return REFEX_OK;
}

int refex_agency_sign_keys(const refex_agency *a, int64_t now_ms, const uint8_t *pks[2])
{
    pks[0] = a->sign_pk;
    pks[1] = NULL;
    if (!a->has_prev || now_ms >= a->prev_until_ms)
        return 1;
    pks[1] = a->prev_sign_pk;
    return 2;
}

int refex_agency_verify_domain(const refex_agency *a, int64_t now_ms, const char *context,
                               const uint8_t *data, size_t len, const uint8_t sig[64])
{
    const uint8_t *pks[2];
    int n = refex_agency_sign_keys(a, now_ms, pks), rc = REFEX_E_BAD_SIGNATURE;
    for (int i = 0; i < n && rc == REFEX_E_BAD_SIGNATURE; i++)
        rc = refex_verify_domain(context, data, len, sig, pks[i]);
    if (rc == REFEX_E_BAD_SIGNATURE && n == 1 && a->has_prev &&
        refex_verify_domain(context, data, len, sig, a->prev_sign_pk) == REFEX_OK)
        rc = REFEX_E_REVOKED; /* genuine, by a key rotated away: final, not a forgery */
    return rc;
}

int refex_agency_admits_transport(const refex_agency *a, const uint8_t pk[32], int64_t now_ms,
                                  const char **why)
{
    const char *w = NULL;
    if (a->revoked)
        w = "agency revoked";
    else if (refex_agency_usable(a, now_ms) != REFEX_OK)
        w = "agency outside its validity period";
    else if (sodium_memcmp(a->transport_pk, pk, 32) == 0)
        w = NULL;
    else if (!a->has_prev || sodium_memcmp(a->prev_transport_pk, pk, 32) != 0)
        w = "agency's transport key replaced";
    else if (now_ms >= a->prev_until_ms)
        w = "agency's previous transport key: the rotation overlap has ended";
    if (why)
        *why = w;
    return w ? REFEX_E_REVOKED : REFEX_OK;
}

int refex_agency_keys_match(const refex_agency *a, const refex_pubkeys *p)
{
    if (sodium_memcmp(a->sign_pk, p->sign_pk, 32) == 0 &&
        sodium_memcmp(a->enc_pk, p->enc_pk, 32) == 0 &&
        sodium_memcmp(a->transport_pk, p->transport_pk, 32) == 0)
        return 1;
    if (a->has_prev && sodium_memcmp(a->prev_sign_pk, p->sign_pk, 32) == 0 &&
        sodium_memcmp(a->prev_enc_pk, p->enc_pk, 32) == 0 &&
        sodium_memcmp(a->prev_transport_pk, p->transport_pk, 32) == 0)
        return 2;
    return 0;
}

int refex_directory_rotate(refex_directory *self, const refex_pubkeys *p, int64_t now_ms,
                           int64_t until_ms)
{
    refex_agency *a = (refex_agency *)refex_directory_find(self, p->agency);
    if (!a || strcmp(a->role, p->role) != 0 || until_ms <= 0 || strcmp(a->role, "broker") == 0 ||
        strcmp(a->role, "trust-anchor") == 0)
        return REFEX_E_INVAL;
    if (a->has_prev && a->prev_until_ms > now_ms && until_ms > now_ms)
        return REFEX_E_BUSY; /* would cut short the keys of the rotation before */
    if (refex_agency_keys_match(a, p) || sodium_memcmp(a->sign_pk, p->sign_pk, 32) == 0 ||
        sodium_memcmp(a->enc_pk, p->enc_pk, 32) == 0)
        return REFEX_E_EXISTS;
    for (size_t i = 0; i < self->d_n; i++)
        if (has_transport_key(&self->d_agencies[i], p->transport_pk))
            return REFEX_E_EXISTS;
    a->has_prev = 1;
    memcpy(a->prev_sign_pk, a->sign_pk, 32);
    memcpy(a->prev_enc_pk, a->enc_pk, 32);
    memcpy(a->prev_transport_pk, a->transport_pk, 32);
    a->prev_until_ms = until_ms;
    memcpy(a->sign_pk, p->sign_pk, 32);
    memcpy(a->enc_pk, p->enc_pk, 32);
    memcpy(a->transport_pk, p->transport_pk, 32);
    invalidate(self);
    return REFEX_OK;
}

int refex_directory_end_overlap(refex_directory *self, const char *id, int64_t now_ms)
{
    refex_agency *a = (refex_agency *)refex_directory_find(self, id);
    if (!a)
        return REFEX_E_UNKNOWN_AGENCY;
    if (!a->has_prev || a->prev_until_ms <= now_ms)
        return REFEX_E_NOTFOUND;
    a->prev_until_ms = now_ms;
    invalidate(self);
    return REFEX_OK;
}

void refex_agency_from_pubkeys(refex_agency *a, const refex_pubkeys *p, const char *display)
{
    memset(a, 0, sizeof *a);
    snprintf(a->id, sizeof a->id, "%s", p->agency);
    snprintf(a->role, sizeof a->role, "%s", p->role);
    snprintf(a->display_name, sizeof a->display_name, "%s", display ? display : p->agency);
    memcpy(a->sign_pk, p->sign_pk, 32);
    memcpy(a->enc_pk, p->enc_pk, 32);
    memcpy(a->transport_pk, p->transport_pk, 32);
}
