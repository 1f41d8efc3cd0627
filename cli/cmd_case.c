/* `refex case`: case membership and case updates. The lead agency (children's social care)
 * grants and revokes membership; members publish updates, which the agent encrypts for the
 * case's current members only, as the lead's signed grants say. */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void case_usage(FILE *out)
{
    fprintf(out,
            "usage: refex [-c AGENT.conf] case open --case REF\n"
            "       refex [-c AGENT.conf] case grant --case REF --member ID [--types T,...]\n"
            "                                       [--until YYYY-MM-DD]\n"
            "       refex [-c AGENT.conf] case revoke --case REF --member ID\n"
            "       refex [-c AGENT.conf] case members|show --case REF [--json]\n"
            "       refex [-c AGENT.conf] case subscribe (--case REF | --all) [--types T,...]\n"
            "       refex [-c AGENT.conf] case unsubscribe (--case REF | --all)\n"
            "       refex [-c AGENT.conf] case publish --case REF --type TYPE --summary TEXT\n"
            "                                       [--effective-date YYYY-MM-DD] [--json]\n"
            "\n"
            "open        (lead only) open a case under a pseudonymous reference: this agency\n"
            "            becomes its lead, and no other agency can lead it\n"
            "grant       (lead only) let an agency receive the case's updates; --types limits\n"
            "            them (assessment-concluded, child-protection-plan, birth, placement,\n"
            "            case-closed, other); --until ends the grant at that date (UTC)\n"
            "revoke      (lead only) end an agency's membership: later updates do not reach it\n"
            "members     the case's members, from the lead's signed grants this agent holds,\n"
            "            and whether each has subscribed\n"
            "show        the same, then the case's updates this agency has received\n"
            "subscribe   ask for the updates of one case this agency is a member of, or of\n"
            "            all of them (--all), optionally only some types (--types); a\n"
            "            non-member gets E_NOT_MEMBER, and the refusal is audited\n"
            "unsubscribe stop receiving them (a subscription to the case itself wins over\n"
            "            --all, so --all then unsubscribe --case REF leaves out REF)\n"
            "publish     send a case update to every current member allowed that type and\n"
            "            subscribed to it, and to the lead; each grant and subscription is\n"
            "            checked by this agent (the broker cannot add a reader); a\n"
            "            non-member gets E_NOT_MEMBER, and the refusal is audited\n");
}

/* "a,b" -> ["CASE_UPDATE_A", "CASE_UPDATE_B"] */
static json_t *update_types(const char *list);

/* "birth" -> "CASE_UPDATE_BIRTH"; full names pass through. */
static json_t *update_type(const char *v)
{
    char buf[96];
    if (strncmp(v, "CASE_UPDATE_", 12) == 0)
        return json_string(v);
    int n = snprintf(buf, sizeof buf, "CASE_UPDATE_%s", v);
    if (n < 0 || (size_t)n >= sizeof buf)
        return json_string(v);
    for (char *p = buf + 12; *p; p++)
        *p = (char)(*p == '-' ? '_' : toupper((unsigned char)*p));
    return json_string(buf);
}

static json_t *update_types(const char *list)
{
    json_t *arr = json_array();
    char *dup = strdup(list), *save = NULL;
    for (char *t = dup ? strtok_r(dup, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(arr, update_type(t));
    free(dup);
    return arr;
}

static long long date_ms(const char *d)
{
    int y, m, day;
    if (!d || sscanf(d, "%4d-%2d-%2d", &y, &m, &day) != 3 || m < 1 || m > 12 || day < 1 || day > 31)
        return -1;
    /* days from civil (Howard Hinnant), UTC midnight */
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (era * 146097 + doe - 719468) * 86400000LL;
}

/* The case updates this agency has received for the case, oldest first. */
static void show_updates(const char *case_ref)
{
    json_t *req = json_pack("{s:s}", "cmd", "inbox_list"), *reply = NULL, *m;
    size_t i, n = 0;
    int rc = cli_agent_request(req, &reply, 35000);
    json_decref(req);
    if (rc != EXIT_OK || !json_is_true(json_object_get(reply, "ok"))) {
        json_decref(reply);
        return;
    }
    printf("\nupdates received\n%-21s %-18s %-22s %s\n", "RECEIVED", "FROM", "TYPE", "SUMMARY");
    json_array_foreach(json_object_get(reply, "messages"), i, m)
    {
        const char *c = json_string_value(json_object_get(m, "case_ref"));
        const char *t = json_string_value(json_object_get(m, "type"));
        if (!c || !t || strcmp(c, case_ref) != 0 || strcmp(t, "CASE_UPDATE") != 0)
            continue;
        char when[32];
        json_t *body = json_object_get(m, "body");
        const char *ut = json_string_value(json_object_get(body, "update_type"));
        const char *sum = json_string_value(json_object_get(body, "summary"));
        cli_format_time(when, sizeof when,
                        (long long)json_integer_value(json_object_get(m, "received_ms")));
        printf("%-21s %-18s %-22s %s\n", when, json_string_value(json_object_get(m, "sender")),
               ut && strlen(ut) > 12 ? ut + 12 : "?", sum ? sum : "");
        n++;
    }
    if (!n)
        printf("(none)\n");
    json_decref(reply);
}

int cmd_case(int argc, char **argv)
{
    const char *case_ref = NULL, *member = NULL, *types = NULL, *until = NULL, *type = NULL,
               *summary = NULL, *effective = NULL;
    int json = 0, all = 0, opt;
    static const struct option opts[] = {{"case", required_argument, 0, 'C'},
                                         {"member", required_argument, 0, 'm'},
                                         {"types", required_argument, 0, 't'},
                                         {"until", required_argument, 0, 'u'},
                                         {"type", required_argument, 0, 'y'},
                                         {"summary", required_argument, 0, 's'},
                                         {"effective-date", required_argument, 0, 'e'},
                                         {"json", no_argument, 0, 'j'},
                                         {"all", no_argument, 0, 'a'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    if (argc < 2 || cli_wants_help(argc, argv)) {
        case_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    const char *sub = argv[1];
    optind = 1;
    while ((opt = getopt_long(argc - 1, argv + 1, "c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            cli_config = optarg;
            break;
        case 'C':
            case_ref = optarg;
            break;
        case 'm':
            member = optarg;
            break;
        case 't':
            types = optarg;
            break;
        case 'u':
            until = optarg;
            break;
        case 'y':
            type = optarg;
            break;
        case 's':
            summary = optarg;
            break;
        case 'e':
            effective = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'a':
            all = 1;
            break;
        default:
            case_usage(stderr);
            return EXIT_USAGE;
        }
    }
    int subscribing = strcmp(sub, "subscribe") == 0 || strcmp(sub, "unsubscribe") == 0;
    if (subscribing ? !case_ref == !all : !case_ref) {
        fprintf(stderr, "refex case %s: %s\n", sub,
                subscribing ? "give --case REF or --all" : "--case is required");
        return EXIT_USAGE;
    }
    int show = strcmp(sub, "show") == 0;
    if (show)
        sub = "members";
    json_t *req = NULL, *reply = NULL;
    int rc;
    if (strcmp(sub, "grant") == 0 || strcmp(sub, "revoke") == 0) {
        if (!member) {
            fprintf(stderr, "refex case %s: --member is required\n", sub);
            return EXIT_USAGE;
        }
        req = json_pack("{s:s, s:s, s:s, s:b}", "cmd", "grant", "case", case_ref, "member", member,
                        "revoke", strcmp(sub, "revoke") == 0);
        if (types)
            json_object_set_new(req, "types", update_types(types));
        if (until) {
            long long ms = date_ms(until);
            if (ms < 0) {
                json_decref(req);
                fprintf(stderr, "refex case grant: --until takes YYYY-MM-DD\n");
                return EXIT_USAGE;
            }
            json_object_set_new(req, "until_ms", json_integer(ms));
        }
    } else if (strcmp(sub, "open") == 0) {
        req = json_pack("{s:s, s:s, s:b}", "cmd", "grant", "case", case_ref, "open", 1);
    } else if (subscribing) {
        req = json_pack("{s:s, s:b, s:b}", "cmd", "subscribe", "all", all, "unsubscribe",
                        strcmp(sub, "unsubscribe") == 0);
        if (case_ref)
            json_object_set_new(req, "case", json_string(case_ref));
        if (types)
            json_object_set_new(req, "types", update_types(types));
    } else if (strcmp(sub, "members") == 0) {
        req = json_pack("{s:s, s:s}", "cmd", "members", "case", case_ref);
    } else if (strcmp(sub, "publish") == 0) {
        if (!type || !summary) {
            fprintf(stderr, "refex case publish: --type and --summary are required\n");
            return EXIT_USAGE;
        }
        json_t *body =
            json_pack("{s:s, s:o, s:s, s:{s:s, s:s}, s:s}", "case_ref", case_ref, "update_type",
                      update_type(type), "summary", summary, "lawful_basis", "article6",
                      "ARTICLE6_PUBLIC_TASK", "article9", "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST",
                      "purpose", "PURPOSE_CASE_MANAGEMENT");
        if (effective)
            json_object_set_new(body, "effective_date", json_string(effective));
        req = json_pack("{s:s, s:s, s:s, s:o}", "cmd", "send", "type", "case-update", "case",
                        case_ref, "body", body);
    } else {
        fprintf(stderr, "refex case: unknown subcommand '%s'\n", sub);
        return EXIT_USAGE;
    }
    rc = cli_agent_request(req, &reply, 35000);
    json_decref(req);
    if (rc != EXIT_OK)
        return rc;
    if (!json_is_true(json_object_get(reply, "ok"))) {
        rc = cli_print_error(reply);
        json_decref(reply);
        return rc;
    }
    if (json) {
        json_dumpf(reply, stdout, JSON_INDENT(2));
        printf("\n");
    } else if (strcmp(sub, "members") == 0) {
        json_t *m;
        size_t i;
        printf("case %s\n%-20s %-10s %-11s %-12s %s\n", case_ref, "MEMBER", "STATUS", "SUBSCRIBED",
               "UNTIL", "UPDATE TYPES");
        json_array_foreach(json_object_get(reply, "members"), i, m)
        {
            char until_s[32] = "-", typ[256] = "all";
            long long u = (long long)json_integer_value(json_object_get(m, "valid_until_ms"));
            if (u)
                cli_format_time(until_s, sizeof until_s, u);
            json_t *ts = json_object_get(m, "update_types"), *t;
            size_t k, used = 0;
            json_array_foreach(ts, k, t)
            {
                used += (size_t)snprintf(typ + (k ? used : 0), sizeof typ - (k ? used : 0), "%s%s",
                                         k ? "," : "", json_string_value(t) + 12);
                if (used >= sizeof typ)
                    break;
            }
            printf("%-20s %-10s %-11s %-12.10s %s\n",
                   json_string_value(json_object_get(m, "member")),
                   json_is_true(json_object_get(m, "is_lead"))    ? "lead"
                   : json_is_true(json_object_get(m, "revoked"))  ? "revoked"
                   : json_is_true(json_object_get(m, "in_force")) ? "member"
                                                                  : "expired",
                   json_is_true(json_object_get(m, "subscribed")) ? "yes" : "no", until_s, typ);
        }
        if (show)
            show_updates(case_ref);
    } else if (strcmp(sub, "publish") == 0) {
        printf("case update %s published to the members of %s\n",
               json_string_value(json_object_get(reply, "message_id")), case_ref);
    } else if (strcmp(sub, "open") == 0) {
        printf("case %s opened; this agency leads it\n", case_ref);
    } else if (subscribing) {
        printf("%s %s (serial %lld)\n",
               strcmp(sub, "unsubscribe") == 0 ? "unsubscribed from" : "subscribed to",
               case_ref ? case_ref : "every case this agency is a member of",
               (long long)json_integer_value(json_object_get(reply, "serial")));
    } else {
        printf("%s %s on case %s (serial %lld)\n", member,
               strcmp(sub, "revoke") == 0 ? "revoked" : "granted", case_ref,
               (long long)json_integer_value(json_object_get(reply, "serial")));
    }
    json_decref(reply);
    return EXIT_OK;
}
