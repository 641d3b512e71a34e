/*
 * fuzz_token: token_decode() with a fixed key ring on arbitrary bytes, encode/decode round
 * trips on ids taken from the input, and token_ring_new() on the input as a key list.
 *
 * Checked on every input, besides ASan/UBSan/LeakSanitizer's own checks:
 * - a token that decodes is TOKEN_LEN characters, and sealing its ids again gives a token
 *   that decodes to the same ids and spelling;
 * - the first 37 bytes of the input, as uaid(16) | chid(16) | dashed(1) | upper mask(4),
 *   encode into TOKEN_LEN base64url characters that decode to exactly those values, with
 *   the ring's first key and after rotation (tokens sealed by keys 2 and 3, key 3 sharing
 *   key 1's id byte); a ring without the sealing key refuses the token;
 * - the token with one character replaced (position and character from the input), cut
 *   short or extended never decodes;
 * - a key list that token_ring_new() accepts gives a working ring, and one it refuses gives
 *   an error that starts with "endpoint.token_keys: ".
 */
#include <string.h>

#include "fuzz_common.h"
#include "simplepushd/ids.h"
#include "simplepushd/token.h"

/* Bytes of input that make a round trip: uaid, chid, dashed flag, upper mask. */
#define ROUND_TRIP_BYTES (2 * IDS_BYTES + 1 + 4)

static struct token_ring *ring;       /* FUZZ_TOKEN_KEYS: what every token is decoded with */
static struct token_ring *ring_k3;    /* seals with key 3 */
static struct token_ring *ring_k2;    /* seals with key 2 */
static struct token_ring *ring_other; /* lacks key 1 */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static struct token_ring *ring_or_abort(const char *keys)
{
    char err[200];
    struct token_ring *r = token_ring_new(keys, err, sizeof(err));

    if (!r)
        fprintf(stderr, "fuzz_token: %s\n", err);
    FUZZ_CHECK(r != NULL);
    return r;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ring = ring_or_abort(FUZZ_TOKEN_KEYS);
    ring_k3 = ring_or_abort(FUZZ_TOKEN_KEYS_K3);
    ring_k2 = ring_or_abort(FUZZ_TOKEN_KEYS_K2);
    ring_other = ring_or_abort(FUZZ_TOKEN_KEYS_OTHER);
    return 0;
}

static bool same_spelling(const struct ids_spelling *a, const struct ids_spelling *b)
{
    return a->dashed == b->dashed && a->upper == b->upper;
}

/* Encodes with enc, which must give a well-formed token that dec opens to the same values. */
static void round_trip(struct token_ring *enc, struct token_ring *dec,
                       const uint8_t uaid[IDS_BYTES], const uint8_t chid[IDS_BYTES],
                       const struct ids_spelling *sp, char tok[TOKEN_LEN + 1])
{
    uint8_t u[IDS_BYTES], c[IDS_BYTES];
    struct ids_spelling s;

    memset(tok, 0, TOKEN_LEN + 1);
    FUZZ_CHECK(token_encode(enc, uaid, chid, sp, tok) == 0);
    FUZZ_CHECK(strlen(tok) == TOKEN_LEN);
    FUZZ_CHECK(strspn(tok, b64url) == TOKEN_LEN);
    FUZZ_CHECK(token_decode(dec, tok, TOKEN_LEN, u, c, &s) == 0);
    FUZZ_CHECK(memcmp(u, uaid, IDS_BYTES) == 0 && memcmp(c, chid, IDS_BYTES) == 0);
    if (sp) {
        FUZZ_CHECK(same_spelling(&s, sp));
    } else {
        FUZZ_CHECK(s.dashed == 0 && s.upper == 0);
    }
}

/* A token that decoded: its ids seal and open again, and their spelling formats and parses. */
static void check_decoded(const uint8_t uaid[IDS_BYTES], const uint8_t chid[IDS_BYTES],
                          const struct ids_spelling *sp)
{
    char tok[TOKEN_LEN + 1], text[IDS_MAX_STR + 1];
    uint8_t id[IDS_BYTES];
    size_t n;

    FUZZ_CHECK(sp->dashed <= 1);
    round_trip(ring, ring, uaid, chid, sp, tok);
    n = ids_format(chid, sp, text);
    FUZZ_CHECK(n == (sp->dashed ? 36u : 32u));
    FUZZ_CHECK(ids_parse(text, n, id, NULL) == 0 && memcmp(id, chid, IDS_BYTES) == 0);
}

/* Every altered token fails: one character replaced, cut short, or one character longer. */
static void check_altered(const char tok[TOKEN_LEN + 1], size_t pos, char c)
{
    char bad[TOKEN_LEN + 2];
    uint8_t u[IDS_BYTES], ch[IDS_BYTES];
    struct ids_spelling s;

    memcpy(bad, tok, TOKEN_LEN + 1);
    if (bad[pos] != c) {
        bad[pos] = c;
        FUZZ_CHECK(token_decode(ring, bad, TOKEN_LEN, u, ch, &s) != 0);
    }
    FUZZ_CHECK(token_decode(ring, tok, TOKEN_LEN - 1 - pos % 4, u, ch, &s) != 0);
    memcpy(bad, tok, TOKEN_LEN);
    bad[TOKEN_LEN] = b64url[(unsigned char)c % 64];
    bad[TOKEN_LEN + 1] = '\0';
    FUZZ_CHECK(token_decode(ring, bad, TOKEN_LEN + 1, u, ch, &s) != 0);
}

static void check_round_trips(const uint8_t *data, size_t size)
{
    const uint8_t *uaid = data, *chid = data + IDS_BYTES;
    const uint8_t *spb = data + 2 * IDS_BYTES;
    struct ids_spelling sp = {
        .dashed = spb[0] & 1,
        .upper = (uint32_t)spb[1] | (uint32_t)spb[2] << 8 | (uint32_t)spb[3] << 16 |
                 (uint32_t)spb[4] << 24,
    };
    char tok[TOKEN_LEN + 1];
    uint8_t u[IDS_BYTES], c[IDS_BYTES];

    round_trip(ring, ring, uaid, chid, spb[0] & 2 ? NULL : &sp, tok);
    if (size >= ROUND_TRIP_BYTES + 2)
        check_altered(tok, data[ROUND_TRIP_BYTES] % TOKEN_LEN, (char)data[ROUND_TRIP_BYTES + 1]);
    FUZZ_CHECK(token_decode(ring_other, tok, TOKEN_LEN, u, c, NULL) != 0);

    /* Rotation: tokens sealed by the other keys of the ring open with it. */
    round_trip(ring_k3, ring, uaid, chid, &sp, tok);
    round_trip(ring_k2, ring, uaid, chid, &sp, tok);
}

/* The input as a key list (up to its first NUL). */
static void check_key_list(const uint8_t *data, size_t size)
{
    char *csv = malloc(size + 1);
    char err[200] = "";
    struct token_ring *r;

    FUZZ_CHECK(csv != NULL);
    memcpy(csv, data, size);
    csv[size] = '\0';
    r = token_ring_new(csv, err, sizeof(err));
    if (r) {
        static const uint8_t uaid[IDS_BYTES] = {1}, chid[IDS_BYTES] = {2};
        char tok[TOKEN_LEN + 1];

        round_trip(r, r, uaid, chid, NULL, tok);
        token_ring_free(r);
    } else {
        FUZZ_CHECK(strncmp(err, "endpoint.token_keys: ", 21) == 0);
    }
    free(csv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t uaid[IDS_BYTES], chid[IDS_BYTES];
    struct ids_spelling sp;
    char *tok;

    /* A copy of exactly size bytes, so that ASan catches any read past the token. */
    tok = malloc(size ? size : 1);
    FUZZ_CHECK(tok != NULL);
    memcpy(tok, data, size);
    memset(uaid, 0x5a, sizeof(uaid));
    if (token_decode(ring, tok, size, uaid, chid, &sp) == 0) {
        FUZZ_CHECK(size == TOKEN_LEN);
        check_decoded(uaid, chid, &sp);
    } else {
        /* The outputs are written only on success. */
        for (size_t i = 0; i < IDS_BYTES; i++)
            FUZZ_CHECK(uaid[i] == 0x5a);
    }
    free(tok);

    if (size >= ROUND_TRIP_BYTES)
        check_round_trips(data, size);
    if (size <= 16 * (TOKEN_KEY_STR_LEN + 4))
        check_key_list(data, size);
    return 0;
}
