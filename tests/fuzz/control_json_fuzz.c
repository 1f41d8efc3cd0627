/* libFuzzer target: a control-socket request as a local client sends it. The agent's own
 * dispatch (agents/control.c) needs a running agent with its store and sockets, so this
 * target runs what that path does to the bytes that needs no agent: jansson's json_loadb,
 * the "cmd" lookup, the field checks of a send (type name, case reference, recipient ids,
 * ttl), the body through refex_body_pack_json, refex_body_unpack, refex_body_check and
 * refex_body_meta_get, the body back to JSON (as inbox_show replies) and the canonical dump
 * the local-id submission hash takes. Not covered here: the command handlers' store
 * queries and replies (the e2e tests drive those). Must never crash or leak. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "body.h"
#include "body_rules.h"
#include "envelope.h"
#include "keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_body(int type, const json_t *body, const char *case_ref)
{
    char err[256];
    uint8_t *packed = NULL;
    size_t len = 0;
    Refex__V1__Body *b = NULL;
    if (refex_body_pack_json(type, body, &packed, &len, err, sizeof err) != REFEX_OK)
        return;
    if (refex_body_unpack(type, packed, len, &b) == REFEX_OK) {
        refex_body_meta m;
        char detail[64];
        json_t *back = NULL;
        refex_body_meta_get(b, &m);
        (void)refex_case_ref_valid(case_ref && *case_ref ? case_ref : m.case_ref);
        (void)!refex_body_check(b, detail, sizeof detail);
        if (refex_body_to_json(b, &back) == REFEX_OK) {
            free(json_dumps(back, JSON_COMPACT));
            json_decref(back);
        }
        refex__v1__body__free_unpacked(b, NULL);
    }
    free(packed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *req = json_loadb((const char *)data, size, 0, &jerr);
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    if (!req || !cmd) {
        json_decref(req);
        return 0;
    }
    int type = refex_message_type_parse(json_string_value(json_object_get(req, "type")));
    const char *case_ref = json_string_value(json_object_get(req, "case"));
    (void)json_integer_value(json_object_get(req, "ttl_seconds"));
    if (case_ref)
        (void)refex_case_ref_valid(case_ref);
    const char *from = json_string_value(json_object_get(req, "from"));
    if (from)
        (void)refex_id_valid(from);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(req, "to"), i, v)
    {
        const char *id = json_string_value(v);
        if (id)
            (void)refex_id_valid(id);
    }
    if (type)
        check_body(type, json_object_get(req, "body"), case_ref);
    free(json_dumps(req, JSON_COMPACT | JSON_SORT_KEYS));
    json_decref(req);
    return 0;
}
