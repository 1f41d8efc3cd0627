/* Body options shared by `refex send` and `refex case publish` (body_flags.h): one table of
 * flags that set one field each, and the merge of those flags over a --body file. Not the
 * commands' own options, nor any check of what a body needs (the agent's job). */
#include "body_flags.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "pbjson_names.h"

/* "pre-birth" with prefix "REFERRAL_" -> "REFERRAL_PRE_BIRTH"; full names pass through. */
static json_t *enum_value(const char *prefix, const char *v)
{
    char buf[128];
    size_t pl = strlen(prefix);
    if (strncmp(v, prefix, pl) == 0)
        return json_string(v);
    int n = snprintf(buf, sizeof buf, "%s%s", prefix, v);
    if (n < 0 || (size_t)n >= sizeof buf)
        return json_string(v);
    for (char *p = buf + pl; *p; p++)
        *p = (char)(*p == '-' ? '_' : toupper((unsigned char)*p));
    return json_string(buf);
}

static json_t *child(json_t *o, const char *key)
{
    json_t *c = json_object_get(o, key);
    if (!json_is_object(c)) {
        c = json_object();
        json_object_set_new(o, key, c);
    }
    return c;
}

/* Flags that set one field: under parent (or at the top; "@" is the practitioner, placed
 * by type when the body is built), an enum if prefix. */
static const struct {
    int opt;
    const char *parent, *key, *prefix;
} FIELD_FLAGS[] = {
    {O_KIND, NULL, "kind", "REFERRAL_"},
    {O_SUBJ, "subject", "reference", NULL},
    {O_DUE, "subject", "estimated_due_date", NULL},
    {O_URG, NULL, "urgency", "URGENCY_"},
    {O_SUM, NULL, "summary", NULL},
    {O_A6, "lawful_basis", "article6", "ARTICLE6_"},
    {O_A9, "lawful_basis", "article9", "ARTICLE9_"},
    {O_CONS, NULL, "consent", "CONSENT_"},
    {O_PURPOSE, NULL, "purpose", "PURPOSE_"},
    {O_PREF, "@", "reference", NULL},
    {O_PROLE, "@", "role", NULL},
};

/* The member naming who sent a message of each type. */
static const struct {
    const char *type, *member;
} PRACTITIONER[] = {
    {"referral", "referrer"},
    {"referral-decision", "decided_by"},
    {"information-request", "requested_by"},
    {"information-response", "responded_by"},
    {"case-update", "published_by"},
};

static const char *practitioner_member(const char *type)
{
    char t[64];
    size_t n = type ? strlen(type) : 0;
    if (n >= sizeof t)
        n = 0;
    for (size_t i = 0; i < n; i++)
        t[i] = (char)(type[i] == '_' ? '-' : tolower((unsigned char)type[i]));
    t[n] = 0;
    for (size_t i = 0; i < sizeof PRACTITIONER / sizeof PRACTITIONER[0]; i++)
        if (strcmp(PRACTITIONER[i].type, t) == 0)
            return PRACTITIONER[i].member;
    return "referrer"; /* an unknown type is the agent's to refuse */
}

int cli_body_init(cli_body *b)
{
    memset(b, 0, sizeof *b);
    b->flags = json_object();
    b->concerns = json_array();
    b->practitioner = json_object();
    return b->flags && b->concerns && b->practitioner ? EXIT_OK : EXIT_FAIL;
}

void cli_body_fini(cli_body *b)
{
    json_decref(b->flags);
    json_decref(b->concerns);
    json_decref(b->practitioner);
    memset(b, 0, sizeof *b);
}

int cli_body_flag(cli_body *b, const char *cmd, int opt, const char *arg)
{
    long w;
    b->used = 1;
    if (opt == O_CONCERN) {
        json_array_append_new(b->concerns, enum_value("CONCERN_", arg));
        return EXIT_OK;
    }
    if (opt == O_GEST) {
        if (cli_parse_long(arg, 0, 45, &w) != 0) {
            return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex %s: --gestation-weeks takes 0 to 45\n",
                            cmd);
        }
        json_object_set_new(child(b->flags, "subject"), "gestation_weeks", json_integer(w));
        json_object_set_new(child(b->flags, "subject"), "kind", json_string("SUBJECT_UNBORN"));
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof FIELD_FLAGS / sizeof FIELD_FLAGS[0]; i++) {
        if (FIELD_FLAGS[i].opt != opt)
            continue;
        const char *parent = FIELD_FLAGS[i].parent;
        json_t *o = !parent                    ? b->flags
                    : strcmp(parent, "@") == 0 ? b->practitioner
                                               : child(b->flags, parent);
        json_object_set_new(o, FIELD_FLAGS[i].key,
                            FIELD_FLAGS[i].prefix ? enum_value(FIELD_FLAGS[i].prefix, arg)
                                                  : json_string(arg));
        return EXIT_OK;
    }
    return cli_fail(EXIT_USAGE, CLI_E_USAGE, "refex %s: unexpected option (see refex %s --help)\n",
                    cmd, cmd);
}

static json_t *load_body(const char *cmd, const char *file)
{
    json_error_t jerr;
    json_t *body =
        strcmp(file, "-") == 0 ? json_loadf(stdin, 0, &jerr) : json_load_file(file, 0, &jerr);
    if (!body) {
        (void)cli_fail(EXIT_FAIL, "E_JSON", "refex %s: %s:%d: %s\n", cmd, file, jerr.line,
                       jerr.text);
        return NULL;
    }
    if (!json_is_object(body)) {
        (void)cli_fail(EXIT_FAIL, "E_JSON", "refex %s: %s: the body must be a JSON object\n", cmd,
                       file);
        json_decref(body);
        return NULL;
    }
    return body;
}

/* A flag sets a field under its proto name; a --body file may hold the same field under its
 * lowerCamelCase JSON name (proto3 JSON, docs/protocol.md 10.2). Renames that key in o to
 * name, so the flag overrides or merges into it rather than making a field given twice;
 * a file with the field under both names is left as it is, to be refused. */
static void take_json_name(json_t *o, const char *name)
{
    const char *k;
    json_t *v;
    if (json_object_get(o, name))
        return; /* there under its proto name (and if under both, the agent refuses it) */
    json_object_foreach(o, k, v)
    {
        if (strcmp(k, name) != 0 && refex_pbjson_names_is_json_name(name, k, strlen(k))) {
            json_object_set(o, name, v);
            json_object_del(o, k);
            return;
        }
    }
}

/* Flags over the file's body: objects merge (recursively, so --article6 keeps the file's
 * lawful_basis.purpose), anything else replaces. */
static void merge_flags(json_t *body, json_t *flags)
{
    const char *k;
    json_t *v;
    json_object_foreach(flags, k, v)
    {
        take_json_name(body, k);
        json_t *cur = json_object_get(body, k);
        if (json_is_object(v) && json_is_object(cur))
            merge_flags(cur, v);
        else
            json_object_set(body, k, v);
    }
}

int cli_body_build(const cli_body *b, const char *cmd, const char *type, json_t **out)
{
    json_t *body = b->file ? load_body(cmd, b->file) : json_object();
    *out = NULL;
    if (!body)
        return EXIT_FAIL;
    if (json_array_size(b->concerns))
        json_object_set(b->flags, "concerns", b->concerns);
    if (json_object_size(b->practitioner))
        json_object_set(b->flags, practitioner_member(type), b->practitioner);
    merge_flags(body, b->flags);
    *out = body;
    return EXIT_OK;
}
