/* send_referral: the smallest integration with a local refex-agent. Sends a synthetic
 * pre-birth referral and prints its message id.
 *   cc send_referral.c $(pkg-config --cflags --libs refex-client) -o send_referral
 *   ./send_referral /etc/refex/midwifery.conf [RECIPIENT]
 * (for a prefix outside the loader's path, add -Wl,-rpath,PREFIX/lib) */
#include <stdio.h>

#include <refex/client.h>

/* Invented data: pseudonymous references, never a name. Purpose, lawful basis and the
 * referring practitioner go into both agencies' audit logs. */
static const char *BODY =
    "{\"kind\": \"REFERRAL_PRE_BIRTH\","
    " \"subject\": {\"kind\": \"SUBJECT_UNBORN\", \"reference\": \"UB-EXAMPLE-0001\","
    "              \"gestation_weeks\": 12},"
    " \"concerns\": [\"CONCERN_SUBSTANCE_MISUSE\"],"
    " \"summary\": \"Synthetic example referral from the booking appointment\","
    " \"referrer\": {\"reference\": \"MW-EXAMPLE-01\", \"role\": \"community midwife\"},"
    " \"purpose\": \"PURPOSE_SAFEGUARDING\", \"urgency\": \"URGENCY_ROUTINE\","
    " \"lawful_basis\": {\"article6\": \"ARTICLE6_PUBLIC_TASK\","
    "                    \"article9\": \"ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST\"},"
    " \"consent\": \"CONSENT_NOT_SOUGHT_SAFEGUARDING\"}";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s AGENT.conf [RECIPIENT]\n", argv[0]);
        return 2;
    }
    const char *to[] = {argc > 2 ? argv[2] : "social-care"};
    refex_client_message m = {.type = "referral", .to = to, .n_to = 1, .body_json = BODY};
    refex_client *c = NULL;
    char id[33];
    int rc = refex_client_open(argv[1], &c);
    if (rc == REFEX_OK)
        rc = refex_client_send(c, &m, id, NULL);
    if (rc != REFEX_OK)
        fprintf(stderr, "send_referral: %s\n", refex_client_error(c));
    else
        printf("%s\n", id);
    refex_client_close(&c);
    return rc == REFEX_OK ? 0 : 1;
}
