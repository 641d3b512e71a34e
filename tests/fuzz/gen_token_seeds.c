/*
 * gen_token_seeds: writes valid endpoint tokens, made with the fuzzers' fixed key ring
 * (fuzz_common.h), as seed files for fuzz_token. Built with SP_FUZZ=ON; run by hand when
 * the token layout or the ring changes:
 *   build-fuzz/tests/gen_token_seeds tests/fuzz/corpus/token
 * Each seed is one token of TOKEN_LEN characters without a newline. The nonce is random, so
 * every run writes different tokens; the committed ones need not be regenerated.
 */
#include <stdio.h>
#include <string.h>

#include "fuzz_common.h"
#include "simplepushd/ids.h"
#include "simplepushd/token.h"

struct seed {
    const char *file;
    const char *keys; /* the ring that seals it */
    const char *uaid; /* an accepted id spelling */
    const char *chid;
};

static const struct seed seeds[] = {
    {"valid-lower", FUZZ_TOKEN_KEYS, "9b1b4b4ad1a54d3d8f0e0d1e2f3a4b5c",
     "0123456789abcdef0123456789abcdef"},
    {"valid-dashed", FUZZ_TOKEN_KEYS, "9b1b4b4a-d1a5-4d3d-8f0e-0d1e2f3a4b5c",
     "f47ac10b-58cc-4372-a567-0e02b2c3d479"},
    {"valid-dashed-upper", FUZZ_TOKEN_KEYS, "00000000000000000000000000000000",
     "F47AC10B-58CC-4372-A567-0E02B2C3D479"},
    {"valid-mixed-case", FUZZ_TOKEN_KEYS, "ffffffffffffffffffffffffffffffff",
     "aBcDeF0123456789AbCdEf0123456789"},
    {"valid-key2", FUZZ_TOKEN_KEYS_K2, "9b1b4b4ad1a54d3d8f0e0d1e2f3a4b5c",
     "0123456789abcdef0123456789abcdef"},
    {"valid-key3-shared-kid", FUZZ_TOKEN_KEYS_K3, "9b1b4b4ad1a54d3d8f0e0d1e2f3a4b5c",
     "ABCDEF00-0000-4000-8000-000000000000"},
};

static int write_seed(const char *dir, const struct seed *s)
{
    uint8_t uaid[IDS_BYTES], chid[IDS_BYTES];
    struct ids_spelling sp;
    char tok[TOKEN_LEN + 1], path[4096], err[200];
    struct token_ring *ring = token_ring_new(s->keys, err, sizeof(err));
    FILE *f;
    int rc = -1;

    if (!ring) {
        fprintf(stderr, "gen_token_seeds: %s\n", err);
        return -1;
    }
    if (ids_parse(s->uaid, strlen(s->uaid), uaid, NULL) != 0 ||
        ids_parse(s->chid, strlen(s->chid), chid, &sp) != 0 ||
        token_encode(ring, uaid, chid, &sp, tok) != 0) {
        fprintf(stderr, "gen_token_seeds: cannot make %s\n", s->file);
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, s->file);
    f = fopen(path, "w");
    if (!f) {
        perror(path);
        goto fail;
    }
    rc = fwrite(tok, 1, TOKEN_LEN, f) == TOKEN_LEN ? 0 : -1;
    if (fclose(f) != 0 || rc != 0) {
        perror(path);
        rc = -1;
    }
fail:
    token_ring_free(ring);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
        if (write_seed(argv[1], &seeds[i]) != 0)
            return 1;
    return 0;
}
