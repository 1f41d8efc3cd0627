/* The fixed world the fuzz targets and their seed generator (make_corpus.c) share: test
 * keys from fixed seeds (crypto_sign_seed_keypair), so every run is deterministic and the
 * committed seeds verify, and a directory of three agencies with a small information-sharing
 * policy (social-care leads; the seeds' lead-to-member types allowed), built in memory. Test code
 * only: these keys protect nothing. */
#ifndef REFEX_FUZZ_FIXTURE_H
#define REFEX_FUZZ_FIXTURE_H

#include <stdint.h>

#include "directory.h"

#define FUZZ_LEAD      "la-north"     /* social-care: may lead a case */
#define FUZZ_MEMBER    "health-south" /* health */
#define FUZZ_REVOKED   "police-east"  /* revoked */
#define FUZZ_LOG_NAME  "refex.example/log"
#define FUZZ_WITNESS   "witness.example"
#define FUZZ_NOW_MS    1767225600000LL /* 2026-01-01T00:00:00Z */
#define FUZZ_MAX_FRAME (1u << 20)

typedef struct {
    uint8_t sign_pk[32], sign_sk[64]; /* one per agency, as listed in the directory */
    uint8_t enc_pk[32], enc_sk[32];
} fuzz_keys;

typedef struct {
    fuzz_keys lead, member, revoked;
    uint8_t anchor_pk[32], anchor_sk[64];   /* signs the directory */
    uint8_t log_pk[32], log_sk[64];         /* signs checkpoints as FUZZ_LOG_NAME */
    uint8_t witness_pk[32], witness_sk[64]; /* cosigns them as FUZZ_WITNESS */
    refex_directory *dir;                   /* with its policy, signed by the anchor */
} fuzz_fixture;

/* The fixture, built on first use; aborts if it cannot be (never on fuzzed input). */
const fuzz_fixture *fuzz_fixture_get(void);

#endif
