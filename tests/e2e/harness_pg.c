/* The end-to-end harness against the PostgreSQL store: when REFEX_TEST_PG_URL_FILE names the
 * file tests/pg_cluster.sh wrote, every broker the harness makes uses that database (emptied
 * first) instead of data/broker/queue.db, and the harness's queries of queue.db go to it. Not
 * for starting the servers (tests/pg_cluster.sh). */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "util.h"

const char *h_pg_url(void)
{
    static char url[1024], from[1024]; /* the URI, and the file it was read from */
    const char *file = getenv("REFEX_TEST_PG_URL_FILE");
    if (!file || !*file)
        return NULL;
    if (strcmp(file, from) != 0) {
        uint8_t *text = NULL;
        size_t len = 0;
        snprintf(from, sizeof from, "%s", file);
        url[0] = 0;
        if (refex_file_read(file, sizeof url - 1, &text, &len) == REFEX_OK) {
            snprintf(url, sizeof url, "%.*s", (int)strcspn((char *)text, "\n"), (char *)text);
            free(text);
        } else {
            fprintf(stderr, "harness: cannot read REFEX_TEST_PG_URL_FILE %s\n", file);
            exit(2);
        }
    }
    return url[0] ? url : NULL;
}

static PGresult *pg_exec(const char *sql)
{
    PGconn *c = PQconnectdb(h_pg_url());
    PGresult *r = NULL;
    if (PQstatus(c) == CONNECTION_OK)
        r = PQexec(c, sql);
    else
        fprintf(stderr, "harness: cannot connect to %s: %s", h_pg_url(), PQerrorMessage(c));
    PQfinish(c);
    return r;
}

int h_pg_empty(void)
{
    PGresult *r =
        pg_exec("SET client_min_messages = warning; DROP VIEW IF EXISTS case_parties,"
                " case_current_parties; DROP TABLE IF EXISTS refex_state, claims, witnessed,"
                " case_leads, case_grants, case_subscriptions,"
                " messages, deliveries, receipts, senders");
    int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "harness: cannot empty the store: %s\n",
                r ? PQresultErrorMessage(r) : "no connection");
    PQclear(r);
    return ok ? 0 : -1;
}

long long h_pg_int(const char *sql)
{
    PGresult *r = pg_exec(sql);
    long long v = -1;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

void h_witness_source(const h_net *n, const char *rel, char *buf, size_t len)
{
    if (h_pg_url())
        snprintf(buf, len, "%s", h_pg_url());
    else
        h_path(n, buf, len, "%s", rel);
}
