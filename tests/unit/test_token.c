/*
 * Unit tests for token: round trips, the byte layout checked against an independent
 * AES-256-GCM and base64 implementation (OpenSSL's EVP used directly here), key rotation,
 * rejection of every altered, truncated, extended or forged token and of bad key lists, the
 * decoding table, and the reuse of the ring's cipher contexts from token to token.
 *
 * The test compiles token.c itself, with the random source, calloc and the cipher context
 * constructor routed through stubs that can be told to fail, so that those error paths run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "simplepushd/token.h"

static bool fail_rand, fail_calloc, fail_ctx;

static int stub_rand_bytes(unsigned char *buf, int num)
{
    return fail_rand ? 0 : RAND_bytes(buf, num);
}

static void *stub_calloc(size_t n, size_t size)
{
    return fail_calloc ? NULL : calloc(n, size);
}

static EVP_CIPHER_CTX *stub_cipher_ctx_new(void)
{
    return fail_ctx ? NULL : EVP_CIPHER_CTX_new();
}

#define RAND_bytes         stub_rand_bytes
#define calloc             stub_calloc
#define EVP_CIPHER_CTX_new stub_cipher_ctx_new
#include "../../src/token.c"
#undef RAND_bytes
#undef calloc
#undef EVP_CIPHER_CTX_new

#define RAW_LEN   67
#define PLAIN_LEN 37

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Test keys: A is bytes 0..31, B is bytes 32..63. */
static const char key_a_str[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
static const char key_b_str[] = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8";
static uint8_t key_a[32], key_b[32];

static const uint8_t uaid1[IDS_BYTES] = {0x8b, 0x1e, 0x3c, 0x02, 0x55, 0x64, 0x4e, 0x7f,
                                         0x9a, 0x10, 0x0b, 0xcd, 0xef, 0x01, 0x23, 0x45};
static const uint8_t chid1[IDS_BYTES] = {0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x40, 0x11,
                                         0x82, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88};

static uint8_t kid_of(const uint8_t key[32])
{
    uint8_t d[SHA256_DIGEST_LENGTH];

    SHA256(key, 32, d);
    return d[0];
}

/*
 * Independent base64url: OpenSSL's standard base64 with the alphabet swapped, '=' cut.
 * out holds outlen bytes.
 */
static void enc_b64url(const uint8_t *in, size_t n, char *out, size_t outlen)
{
    char buf[256];
    int len = EVP_EncodeBlock((unsigned char *)buf, in, (int)n);

    while (len > 0 && buf[len - 1] == '=')
        len--;
    if (len < 0 || (size_t)len >= outlen)
        abort();
    for (int i = 0; i < len; i++)
        out[i] = buf[i] == '+' ? '-' : buf[i] == '/' ? '_' : buf[i];
    out[len] = '\0';
}

static void dec_b64url(const char *s, uint8_t *out, size_t n)
{
    char buf[256];
    unsigned char tmp[256];
    size_t len = strlen(s);

    for (size_t i = 0; i < len; i++)
        buf[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    while (len % 4)
        buf[len++] = '=';
    assert_true(EVP_DecodeBlock(tmp, (unsigned char *)buf, (int)len) >= (int)n);
    memcpy(out, tmp, n);
}

/* Builds a token from parts with EVP directly: the layout of token.h, written out again. */
static void forge(const uint8_t key[32], uint8_t version, uint8_t kid, const uint8_t nonce[12],
                  const uint8_t plain[PLAIN_LEN], char out[TOKEN_LEN + 1])
{
    uint8_t raw[RAW_LEN];
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len;

    raw[0] = version;
    raw[1] = kid;
    memcpy(raw + 2, nonce, 12);
    assert_int_equal(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce), 1);
    assert_int_equal(EVP_EncryptUpdate(ctx, NULL, &len, raw, 2), 1);
    assert_int_equal(EVP_EncryptUpdate(ctx, raw + 14, &len, plain, PLAIN_LEN), 1);
    assert_int_equal(EVP_EncryptFinal_ex(ctx, raw + 14 + len, &len), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, raw + 51), 1);
    EVP_CIPHER_CTX_free(ctx);
    enc_b64url(raw, RAW_LEN, out, TOKEN_LEN + 1);
    assert_int_equal(strlen(out), TOKEN_LEN);
}

/* Opens a token with EVP directly; returns 0 and the plaintext when the tag verifies. */
static int open_raw(const uint8_t key[32], const uint8_t raw[RAW_LEN], uint8_t plain[PLAIN_LEN])
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    uint8_t tag[16];
    int len, ok;

    memcpy(tag, raw + 51, 16);
    ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw + 2) == 1 &&
         EVP_DecryptUpdate(ctx, NULL, &len, raw, 2) == 1 &&
         EVP_DecryptUpdate(ctx, plain, &len, raw + 14, PLAIN_LEN) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1 &&
         EVP_DecryptFinal_ex(ctx, plain + len, &len) == 1;
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -1;
}

static struct token_ring *ring_or_fail(const char *csv)
{
    char err[256] = "";
    struct token_ring *ring = token_ring_new(csv, err, sizeof(err));

    if (!ring)
        fail_msg("ring \"%s\" refused: %s", csv ? csv : "(null)", err);
    return ring;
}

static void encode_or_fail(struct token_ring *ring, const uint8_t uaid[IDS_BYTES],
                           const uint8_t chid[IDS_BYTES], const struct ids_spelling *sp,
                           char out[TOKEN_LEN + 1])
{
    assert_int_equal(token_encode(ring, uaid, chid, sp, out), 0);
    assert_int_equal(strlen(out), TOKEN_LEN);
    assert_int_equal(strspn(out, alphabet), TOKEN_LEN);
}

/* Asserts that tok[0..len) is rejected and that the outputs are left alone. */
static void assert_rejected(struct token_ring *ring, const char *tok, size_t len)
{
    uint8_t uaid[IDS_BYTES], chid[IDS_BYTES];
    struct ids_spelling sp = {.upper = 0x5a5a5a5a, .dashed = 7};

    memset(uaid, 0xee, sizeof(uaid));
    memset(chid, 0xee, sizeof(chid));
    assert_int_equal(token_decode(ring, tok, len, uaid, chid, &sp), -1);
    for (int i = 0; i < IDS_BYTES; i++) {
        assert_int_equal(uaid[i], 0xee);
        assert_int_equal(chid[i], 0xee);
    }
    assert_int_equal(sp.upper, 0x5a5a5a5a);
    assert_int_equal(sp.dashed, 7);
}

static void assert_decodes_to(struct token_ring *ring, const char *tok,
                              const uint8_t want_uaid[IDS_BYTES],
                              const uint8_t want_chid[IDS_BYTES], uint32_t want_upper,
                              uint8_t want_dashed)
{
    uint8_t uaid[IDS_BYTES], chid[IDS_BYTES];
    struct ids_spelling sp;

    assert_int_equal(token_decode(ring, tok, strlen(tok), uaid, chid, &sp), 0);
    assert_memory_equal(uaid, want_uaid, IDS_BYTES);
    assert_memory_equal(chid, want_chid, IDS_BYTES);
    assert_int_equal(sp.upper, want_upper);
    assert_int_equal(sp.dashed, want_dashed);
}

static int setup(void **state)
{
    for (int i = 0; i < 32; i++) {
        key_a[i] = (uint8_t)i;
        key_b[i] = (uint8_t)(32 + i);
    }
    return 0;
}

/* The fixed test keys are what the test believes, and their key ids differ. */
static void test_fixture_keys(void **state)
{
    char s[64];

    enc_b64url(key_a, 32, s, sizeof(s));
    assert_string_equal(s, key_a_str);
    enc_b64url(key_b, 32, s, sizeof(s));
    assert_string_equal(s, key_b_str);
    assert_int_equal(kid_of(key_a), 0x63);
    assert_int_equal(kid_of(key_b), 0x72);
}

static void test_round_trip_many(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);

    srand(4242);
    for (int n = 0; n < 500; n++) {
        uint8_t uaid[IDS_BYTES], chid[IDS_BYTES];
        struct ids_spelling sp, back_sp;
        char tok[TOKEN_LEN + 1], s1[IDS_MAX_STR + 1], s2[IDS_MAX_STR + 1];
        uint8_t u2[IDS_BYTES], c2[IDS_BYTES];

        for (int i = 0; i < IDS_BYTES; i++) {
            uaid[i] = (uint8_t)rand();
            chid[i] = (uint8_t)rand();
        }
        sp.dashed = (uint8_t)(rand() & 1);
        sp.upper = ((uint32_t)rand() << 16) ^ (uint32_t)rand();
        encode_or_fail(ring, uaid, chid, &sp, tok);
        assert_decodes_to(ring, tok, uaid, chid, sp.upper, sp.dashed);

        /* The chid comes back spelled as it was registered. */
        assert_int_equal(token_decode(ring, tok, TOKEN_LEN, u2, c2, &back_sp), 0);
        ids_format(chid, &sp, s1);
        ids_format(c2, &back_sp, s2);
        assert_string_equal(s1, s2);
    }
    token_ring_free(ring);
}

static void test_spelling_extremes(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    static const struct ids_spelling sps[] = {
        {0, 0}, {0, 1}, {0xffffffffu, 0}, {0xffffffffu, 1}, {0x80000001u, 1}, {0x12345678u, 0},
    };
    char tok[TOKEN_LEN + 1];
    uint8_t u[IDS_BYTES], c[IDS_BYTES];

    for (size_t i = 0; i < sizeof(sps) / sizeof(sps[0]); i++) {
        encode_or_fail(ring, uaid1, chid1, &sps[i], tok);
        assert_decodes_to(ring, tok, uaid1, chid1, sps[i].upper, sps[i].dashed);
    }
    /* No spelling given: 32 lowercase hex digits. */
    encode_or_fail(ring, uaid1, chid1, NULL, tok);
    assert_decodes_to(ring, tok, uaid1, chid1, 0, 0);
    /* No spelling wanted back. */
    assert_int_equal(token_decode(ring, tok, TOKEN_LEN, u, c, NULL), 0);
    assert_memory_equal(u, uaid1, IDS_BYTES);
    assert_memory_equal(c, chid1, IDS_BYTES);
    token_ring_free(ring);
}

static void test_nonce_makes_tokens_differ(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    char t1[TOKEN_LEN + 1], t2[TOKEN_LEN + 1];
    uint8_t r1[RAW_LEN], r2[RAW_LEN];

    encode_or_fail(ring, uaid1, chid1, NULL, t1);
    encode_or_fail(ring, uaid1, chid1, NULL, t2);
    assert_string_not_equal(t1, t2);
    dec_b64url(t1, r1, RAW_LEN);
    dec_b64url(t2, r2, RAW_LEN);
    assert_memory_equal(r1, r2, 2);
    assert_memory_not_equal(r1 + 2, r2 + 2, 12);
    assert_decodes_to(ring, t1, uaid1, chid1, 0, 0);
    assert_decodes_to(ring, t2, uaid1, chid1, 0, 0);
    token_ring_free(ring);
}

/* What token_encode writes is the documented layout, opened here without token.c. */
static void test_layout_of_encoded_token(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    struct ids_spelling sp = {.upper = 0x04030201u, .dashed = 1};
    char tok[TOKEN_LEN + 1];
    uint8_t raw[RAW_LEN], plain[PLAIN_LEN];
    static const uint8_t want_sp[5] = {1, 0x01, 0x02, 0x03, 0x04};

    encode_or_fail(ring, uaid1, chid1, &sp, tok);
    dec_b64url(tok, raw, RAW_LEN);
    assert_int_equal(raw[0], 1);
    assert_int_equal(raw[1], kid_of(key_a));
    assert_int_equal(open_raw(key_a, raw, plain), 0);
    assert_memory_equal(plain, uaid1, 16);
    assert_memory_equal(plain + 16, chid1, 16);
    assert_memory_equal(plain + 32, want_sp, 5);
    /* The header bytes are authenticated: the same ciphertext under another AAD fails. */
    raw[0] = 2;
    assert_int_not_equal(open_raw(key_a, raw, plain), 0);
    token_ring_free(ring);
}

/* A token built independently from the documented layout decodes. */
static void test_forged_valid_token_decodes(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    uint8_t nonce[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    uint8_t plain[PLAIN_LEN];
    char tok[TOKEN_LEN + 1];

    memcpy(plain, uaid1, 16);
    memcpy(plain + 16, chid1, 16);
    plain[32] = 1;
    plain[33] = 0x78;
    plain[34] = 0x56;
    plain[35] = 0x34;
    plain[36] = 0x12;
    forge(key_a, 1, kid_of(key_a), nonce, plain, tok);
    assert_decodes_to(ring, tok, uaid1, chid1, 0x12345678u, 1);
    token_ring_free(ring);
}

/* Tokens with a valid tag but a bad header or spelling field are refused all the same. */
static void test_forged_bad_fields(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    uint8_t nonce[12] = {0};
    uint8_t plain[PLAIN_LEN] = {0};
    uint8_t kid = kid_of(key_a);
    char tok[TOKEN_LEN + 1];
    static const uint8_t versions[] = {0, 2, 3, 0x81, 0xff};
    static const uint8_t dashed[] = {2, 3, 0x80, 0xff};

    memcpy(plain, uaid1, 16);
    memcpy(plain + 16, chid1, 16);
    for (size_t i = 0; i < sizeof(versions); i++) {
        forge(key_a, versions[i], kid, nonce, plain, tok);
        assert_rejected(ring, tok, TOKEN_LEN);
    }
    /* Every key id but the right one, each with a tag that verifies under key A. */
    for (int k = 0; k < 256; k++) {
        if (k == kid)
            continue;
        forge(key_a, 1, (uint8_t)k, nonce, plain, tok);
        assert_rejected(ring, tok, TOKEN_LEN);
    }
    for (size_t i = 0; i < sizeof(dashed); i++) {
        plain[32] = dashed[i];
        forge(key_a, 1, kid, nonce, plain, tok);
        assert_rejected(ring, tok, TOKEN_LEN);
    }
    /* The control: the same forgery with sane fields passes. */
    plain[32] = 1;
    forge(key_a, 1, kid, nonce, plain, tok);
    assert_decodes_to(ring, tok, uaid1, chid1, 0, 1);
    token_ring_free(ring);
}

static void test_rotation(void **state)
{
    char csv[128];
    struct token_ring *ab, *ba, *a, *b;
    char tok_a[TOKEN_LEN + 1], tok_b[TOKEN_LEN + 1];
    uint8_t raw[RAW_LEN];

    snprintf(csv, sizeof(csv), "%s,%s", key_a_str, key_b_str);
    ab = ring_or_fail(csv);
    snprintf(csv, sizeof(csv), "%s,%s", key_b_str, key_a_str);
    ba = ring_or_fail(csv);
    a = ring_or_fail(key_a_str);
    b = ring_or_fail(key_b_str);

    /* The first key encrypts. */
    encode_or_fail(ab, uaid1, chid1, NULL, tok_a);
    dec_b64url(tok_a, raw, RAW_LEN);
    assert_int_equal(raw[1], kid_of(key_a));
    encode_or_fail(b, uaid1, chid1, NULL, tok_b);

    /* All keys decrypt. */
    assert_decodes_to(ba, tok_a, uaid1, chid1, 0, 0);
    assert_decodes_to(ba, tok_b, uaid1, chid1, 0, 0);
    assert_decodes_to(ab, tok_b, uaid1, chid1, 0, 0);
    assert_decodes_to(a, tok_a, uaid1, chid1, 0, 0);
    /* A ring without the key refuses. */
    assert_rejected(b, tok_a, TOKEN_LEN);
    assert_rejected(a, tok_b, TOKEN_LEN);

    token_ring_free(ab);
    token_ring_free(ba);
    token_ring_free(a);
    token_ring_free(b);
}

/* Two keys with the same key id byte: decode must try both. */
static void test_colliding_key_ids(void **state)
{
    uint8_t key_c[32] = {0};
    char c_str[TOKEN_KEY_STR_LEN + 1], csv[128];
    struct token_ring *ac, *ca, *a, *c;
    char tok_a[TOKEN_LEN + 1], tok_c[TOKEN_LEN + 1];
    uint32_t n = 0;

    do {
        memcpy(key_c, &n, sizeof(n));
        n++;
    } while (kid_of(key_c) != kid_of(key_a) && n < 100000);
    assert_int_equal(kid_of(key_c), kid_of(key_a));
    enc_b64url(key_c, 32, c_str, sizeof(c_str));

    snprintf(csv, sizeof(csv), "%s,%s", key_a_str, c_str);
    ac = ring_or_fail(csv);
    snprintf(csv, sizeof(csv), "%s, %s", c_str, key_a_str);
    ca = ring_or_fail(csv);
    a = ring_or_fail(key_a_str);
    c = ring_or_fail(c_str);

    encode_or_fail(a, uaid1, chid1, NULL, tok_a);
    encode_or_fail(c, uaid1, chid1, NULL, tok_c);
    assert_decodes_to(ac, tok_a, uaid1, chid1, 0, 0);
    assert_decodes_to(ac, tok_c, uaid1, chid1, 0, 0);
    assert_decodes_to(ca, tok_a, uaid1, chid1, 0, 0);
    assert_decodes_to(ca, tok_c, uaid1, chid1, 0, 0);
    assert_rejected(a, tok_c, TOKEN_LEN);
    assert_rejected(c, tok_a, TOKEN_LEN);

    token_ring_free(ac);
    token_ring_free(ca);
    token_ring_free(a);
    token_ring_free(c);
}

/* Every single-bit change of the 67 bytes, re-encoded, is refused. */
static void test_bit_flips(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    char tok[TOKEN_LEN + 1], bad[TOKEN_LEN + 1];
    uint8_t raw[RAW_LEN];

    encode_or_fail(ring, uaid1, chid1, NULL, tok);
    dec_b64url(tok, raw, RAW_LEN);
    /* The test's own re-encoding gives the same string, so the flips below are the only
     * change. */
    enc_b64url(raw, RAW_LEN, bad, sizeof(bad));
    assert_string_equal(bad, tok);
    for (int i = 0; i < RAW_LEN; i++) {
        for (int bit = 0; bit < 8; bit++) {
            raw[i] ^= (uint8_t)(1u << bit);
            enc_b64url(raw, RAW_LEN, bad, sizeof(bad));
            assert_rejected(ring, bad, TOKEN_LEN);
            raw[i] ^= (uint8_t)(1u << bit);
        }
    }
    assert_decodes_to(ring, tok, uaid1, chid1, 0, 0);
    token_ring_free(ring);
}

static void test_truncated_and_extended(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    char tok[TOKEN_LEN + 1], longer[TOKEN_LEN + 8];

    encode_or_fail(ring, uaid1, chid1, NULL, tok);
    for (size_t len = 0; len < TOKEN_LEN; len++)
        assert_rejected(ring, tok, len);
    /* Every alphabet character, a NUL, padding and a newline appended. */
    memcpy(longer, tok, TOKEN_LEN);
    for (size_t i = 0; i < sizeof(alphabet); i++) {
        longer[TOKEN_LEN] = alphabet[i]; /* the last round appends the NUL */
        assert_rejected(ring, longer, TOKEN_LEN + 1);
    }
    memcpy(longer + TOKEN_LEN, "==", 2);
    assert_rejected(ring, longer, TOKEN_LEN + 1);
    assert_rejected(ring, longer, TOKEN_LEN + 2);
    memcpy(longer + TOKEN_LEN, "\n", 1);
    assert_rejected(ring, longer, TOKEN_LEN + 1);
    /* Prepended characters shift the rest. */
    longer[0] = 'A';
    memcpy(longer + 1, tok, TOKEN_LEN);
    assert_rejected(ring, longer, TOKEN_LEN + 1);
    assert_rejected(ring, longer, TOKEN_LEN);
    token_ring_free(ring);
}

/* Any byte value other than the original, at any position, is refused: non-alphabet
 * characters by the decoder, alphabet characters by the tag or the trailing-bits rule. */
static void test_every_substitution(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    char tok[TOKEN_LEN + 1], bad[TOKEN_LEN + 1];

    encode_or_fail(ring, uaid1, chid1, NULL, tok);
    for (int pos = 0; pos < TOKEN_LEN; pos++) {
        for (int c = 0; c < 256; c++) {
            if (c == (unsigned char)tok[pos])
                continue;
            memcpy(bad, tok, sizeof(bad));
            bad[pos] = (char)c;
            assert_rejected(ring, bad, TOKEN_LEN);
        }
    }
    assert_decodes_to(ring, tok, uaid1, chid1, 0, 0);
    token_ring_free(ring);
}

static void test_standard_base64_rejected(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    char tok[TOKEN_LEN + 1], std[TOKEN_LEN + 3];
    int tries = 0;

    /* Find a token that has a character in which the two alphabets differ. */
    do {
        encode_or_fail(ring, uaid1, chid1, NULL, tok);
    } while (!strpbrk(tok, "-_") && ++tries < 1000);
    assert_non_null(strpbrk(tok, "-_"));
    for (int i = 0; i <= TOKEN_LEN; i++)
        std[i] = tok[i] == '-' ? '+' : tok[i] == '_' ? '/' : tok[i];
    assert_rejected(ring, std, TOKEN_LEN);
    /* Standard base64 with its padding. */
    memcpy(std + TOKEN_LEN, "==", 3);
    assert_rejected(ring, std, TOKEN_LEN + 2);
    /* base64url with padding is not accepted either. */
    memcpy(std, tok, TOKEN_LEN);
    assert_rejected(ring, std, TOKEN_LEN + 2);
    assert_decodes_to(ring, tok, uaid1, chid1, 0, 0);
    token_ring_free(ring);
}

/* 67 bytes leave the last character 4 unused bits; any of them set is refused. */
static void test_trailing_bits(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    char tok[TOKEN_LEN + 1], bad[TOKEN_LEN + 1];
    int v;

    encode_or_fail(ring, uaid1, chid1, NULL, tok);
    v = (int)(strchr(alphabet, tok[TOKEN_LEN - 1]) - alphabet);
    assert_int_equal(v & 15, 0);
    for (int low = 1; low < 16; low++) {
        memcpy(bad, tok, sizeof(bad));
        bad[TOKEN_LEN - 1] = alphabet[v | low];
        assert_rejected(ring, bad, TOKEN_LEN);
    }
    token_ring_free(ring);
}

static void test_null_arguments(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    char tok[TOKEN_LEN + 1];

    encode_or_fail(ring, uaid1, chid1, NULL, tok);
    assert_rejected(NULL, tok, TOKEN_LEN);
    assert_rejected(ring, NULL, TOKEN_LEN);
    assert_int_equal(token_encode(NULL, uaid1, chid1, NULL, tok), -1);
    token_ring_free(NULL);
    token_ring_free(ring);
}

/* A ring of n copies of key A, comma-separated, then extra appended. */
static void make_list(char *out, size_t outlen, int n, const char *sep, const char *extra)
{
    size_t off = 0;

    out[0] = '\0';
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(out + off, outlen - off, "%s%s", i ? sep : "", key_a_str);
    snprintf(out + off, outlen - off, "%s", extra);
}

static void test_bad_key_lists(void **state)
{
    char a_short[64], a_long[64], a_padded[64], a_plus[64], a_slash[64], a_dot[64];
    char a_bits[64], a_space[64], a_nl[64], a_std[64], a_nul[64];
    char seventeen[1024], empty_last[256], empty_first[256], empty_mid[256], blank_mid[256];
    char second_bad[256];
    const struct {
        const char *csv;
        const char *want;
    } cases[] = {
        {a_short, "key 1 is not 32 bytes of base64url"},
        {a_long, "key 1 is not 32 bytes of base64url"},
        {a_padded, "key 1 is not 32 bytes of base64url"},
        {a_plus, "key 1 is not 32 bytes of base64url"},
        {a_slash, "key 1 is not 32 bytes of base64url"},
        {a_dot, "key 1 is not 32 bytes of base64url"},
        {a_bits, "key 1 is not 32 bytes of base64url"},
        {a_space, "key 1 is not 32 bytes of base64url"},
        {a_nl, "key 1 is not 32 bytes of base64url"},
        {a_std, "key 1 is not 32 bytes of base64url"},
        {a_nul, "key 1 is not 32 bytes of base64url"},
        {"x", "key 1 is not 32 bytes of base64url"},
        {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
         "key 1 is not 32 bytes of base64url"},
        {second_bad, "key 2 is not 32 bytes of base64url"},
        {" ", "key 1 is empty"},
        {"\t", "key 1 is empty"},
        {",", "key 1 is empty"},
        {empty_first, "key 1 is empty"},
        {empty_last, "key 2 is empty"},
        {empty_mid, "key 2 is empty"},
        {blank_mid, "key 2 is empty"},
        {seventeen, "more than 16 keys"},
    };
    uint8_t bits_key[32];

    snprintf(a_short, sizeof(a_short), "%.42s", key_a_str);
    snprintf(a_long, sizeof(a_long), "%sA", key_a_str);
    snprintf(a_padded, sizeof(a_padded), "%s=", key_a_str);
    snprintf(a_plus, sizeof(a_plus), "+%s", key_a_str + 1);
    snprintf(a_slash, sizeof(a_slash), "%.20s/%s", key_a_str, key_a_str + 21);
    snprintf(a_dot, sizeof(a_dot), "%.42s.", key_a_str);
    /* The last character of 32 bytes carries 4 bits and 2 unused ones: set an unused bit. */
    snprintf(a_bits, sizeof(a_bits), "%s", key_a_str);
    a_bits[42] = alphabet[(strchr(alphabet, a_bits[42]) - alphabet) | 1];
    snprintf(a_space, sizeof(a_space), "%.20s %s", key_a_str, key_a_str + 21);
    snprintf(a_nl, sizeof(a_nl), "%s\n", key_a_str);
    memcpy(bits_key, key_a, 32);
    bits_key[0] = 0xfb; /* base64 "+" in standard, "-" in base64url */
    {
        char buf[64];
        int len = EVP_EncodeBlock((unsigned char *)buf, bits_key, 32);

        assert_int_equal(len, 44);
        assert_int_equal(buf[0], '+');
        snprintf(a_std, sizeof(a_std), "%.43s", buf);
    }
    /* An embedded NUL ends the C string: what is left is too short. */
    snprintf(a_nul, sizeof(a_nul), "%s", key_a_str);
    a_nul[30] = '\0';
    make_list(seventeen, sizeof(seventeen), 17, ",", "");
    make_list(empty_last, sizeof(empty_last), 1, ",", ",");
    snprintf(empty_first, sizeof(empty_first), ",%s", key_a_str);
    make_list(empty_mid, sizeof(empty_mid), 2, ",,", "");
    make_list(blank_mid, sizeof(blank_mid), 2, ", \t ,", "");
    snprintf(second_bad, sizeof(second_bad), "%s,%.42s", key_a_str, key_b_str);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        struct token_ring *ring = token_ring_new(cases[i].csv, err, sizeof(err));

        if (ring) {
            token_ring_free(ring);
            fail_msg("case %zu accepted: \"%s\"", i, cases[i].csv);
        }
        if (strncmp(err, "endpoint.token_keys: ", 21) != 0 || !strstr(err, cases[i].want))
            fail_msg("case %zu: error \"%s\", want \"%s\"", i, err, cases[i].want);
        /* The error never quotes key material. */
        assert_null(strstr(err, "AAECAwQF"));
        assert_null(strstr(err, "ICEiIyQl"));
    }
}

static void test_error_buffer_handling(void **state)
{
    char err[8];

    assert_null(token_ring_new(",", NULL, 0));
    assert_null(token_ring_new(",", err, 0));
    memset(err, 'x', sizeof(err));
    assert_null(token_ring_new(",", err, sizeof(err)));
    assert_int_equal(strlen(err), sizeof(err) - 1);
    assert_memory_equal(err, "endpoin", 7);
}

static void test_good_key_lists(void **state)
{
    char csv[1024];
    const char *seps[] = {",", ", ", " ,", " , ", "\t,\t", "  ,\t "};
    char tok[TOKEN_LEN + 1];
    struct token_ring *b = ring_or_fail(key_b_str);

    for (size_t i = 0; i < sizeof(seps) / sizeof(seps[0]); i++) {
        struct token_ring *ring;

        snprintf(csv, sizeof(csv), "  %s%s%s\t", key_b_str, seps[i], key_a_str);
        ring = ring_or_fail(csv);
        encode_or_fail(ring, uaid1, chid1, NULL, tok);
        /* Key B came first, so B encrypted. */
        assert_decodes_to(b, tok, uaid1, chid1, 0, 0);
        token_ring_free(ring);
    }
    /* Exactly TOKEN_MAX_KEYS keys, repeats included. */
    make_list(csv, sizeof(csv), TOKEN_MAX_KEYS, " , ", "");
    token_ring_free(ring_or_fail(csv));
    token_ring_free(b);
}

static void test_random_rings(void **state)
{
    struct token_ring *r1 = ring_or_fail(NULL);
    struct token_ring *r2 = ring_or_fail("");
    char t1[TOKEN_LEN + 1], t2[TOKEN_LEN + 1];

    encode_or_fail(r1, uaid1, chid1, NULL, t1);
    encode_or_fail(r2, uaid1, chid1, NULL, t2);
    assert_decodes_to(r1, t1, uaid1, chid1, 0, 0);
    assert_decodes_to(r2, t2, uaid1, chid1, 0, 0);
    /* Each random ring has a key of its own. */
    assert_rejected(r1, t2, TOKEN_LEN);
    assert_rejected(r2, t1, TOKEN_LEN);
    token_ring_free(r1);
    token_ring_free(r2);
}

static void test_genkey(void **state)
{
    char k1[TOKEN_KEY_STR_LEN + 1], k2[TOKEN_KEY_STR_LEN + 1];
    char tok[TOKEN_LEN + 1];
    uint8_t raw_key[32], raw[RAW_LEN], plain[PLAIN_LEN];
    struct token_ring *ring;

    assert_int_equal(token_genkey(k1), 0);
    assert_int_equal(token_genkey(k2), 0);
    assert_int_equal(strlen(k1), TOKEN_KEY_STR_LEN);
    assert_int_equal(strspn(k1, alphabet), TOKEN_KEY_STR_LEN);
    assert_string_not_equal(k1, k2);

    ring = ring_or_fail(k1);
    encode_or_fail(ring, uaid1, chid1, NULL, tok);
    assert_decodes_to(ring, tok, uaid1, chid1, 0, 0);
    /* The printed key is the key that seals tokens. */
    dec_b64url(k1, raw_key, 32);
    dec_b64url(tok, raw, RAW_LEN);
    assert_int_equal(raw[1], kid_of(raw_key));
    assert_int_equal(open_raw(raw_key, raw, plain), 0);
    token_ring_free(ring);
}

static void test_random_source_failure(void **state)
{
    struct token_ring *ring = ring_or_fail(key_a_str);
    char tok[TOKEN_LEN + 1] = "untouched";
    char key[TOKEN_KEY_STR_LEN + 1] = "untouched";
    char err[256] = "";

    fail_rand = true;
    assert_int_equal(token_encode(ring, uaid1, chid1, NULL, tok), -1);
    assert_string_equal(tok, "untouched");
    assert_int_equal(token_genkey(key), -1);
    assert_string_equal(key, "untouched");
    assert_null(token_ring_new(NULL, err, sizeof(err)));
    assert_string_equal(err, "endpoint.token_keys: cannot generate a random key");
    /* A ring from configured keys needs no randomness. */
    token_ring_free(ring_or_fail(key_b_str));
    fail_rand = false;
    token_ring_free(ring);
}

static void test_allocation_failure(void **state)
{
    char err[256] = "";

    fail_calloc = true;
    assert_null(token_ring_new(key_a_str, err, sizeof(err)));
    fail_calloc = false;
    assert_string_equal(err, "endpoint.token_keys: out of memory");
}

static void test_cipher_context_failure(void **state)
{
    struct token_ring *maker = ring_or_fail(key_a_str);
    struct token_ring *ring = ring_or_fail(key_a_str); /* no context made yet */
    char tok[TOKEN_LEN + 1], tok2[TOKEN_LEN + 1] = "untouched";

    encode_or_fail(maker, uaid1, chid1, NULL, tok);
    fail_ctx = true;
    assert_int_equal(token_encode(ring, uaid1, chid1, NULL, tok2), -1);
    assert_string_equal(tok2, "untouched");
    assert_rejected(ring, tok, TOKEN_LEN);
    fail_ctx = false;
    /* The contexts are made at the next use. */
    assert_decodes_to(ring, tok, uaid1, chid1, 0, 0);
    encode_or_fail(ring, uaid1, chid1, NULL, tok2);
    assert_decodes_to(maker, tok2, uaid1, chid1, 0, 0);
    token_ring_free(ring);
    token_ring_free(maker);
}

/* The decoding table agrees with the alphabet on all 256 byte values. */
static void test_value_table(void **state)
{
    for (int c = 0; c < 256; c++) {
        const char *at = c ? strchr(alphabet, c) : NULL;
        assert_int_equal(b64url_value((unsigned char)c), at ? (int)(at - alphabet) : -1);
    }
}

/*
 * The ring's cipher contexts are re-initialised for every token: a failed tag, another
 * key's token and encodes in between leave every later decode right.
 */
static void test_context_reuse(void **state)
{
    char csv[2 * TOKEN_KEY_STR_LEN + 2];
    snprintf(csv, sizeof(csv), "%s,%s", key_b_str, key_a_str);
    struct token_ring *a = ring_or_fail(key_a_str), *ba = ring_or_fail(csv);
    char tok_a[TOKEN_LEN + 1], tok_b[TOKEN_LEN + 1], bad[TOKEN_LEN + 1];

    encode_or_fail(a, uaid1, chid1, NULL, tok_a);
    encode_or_fail(ba, chid1, uaid1, NULL, tok_b);
    memcpy(bad, tok_a, sizeof(bad));
    bad[40] = bad[40] == 'A' ? 'B' : 'A';
    for (int i = 0; i < 3; i++) {
        assert_rejected(ba, bad, TOKEN_LEN);
        assert_decodes_to(ba, tok_a, uaid1, chid1, 0, 0);
        assert_decodes_to(ba, tok_b, chid1, uaid1, 0, 0);
        assert_rejected(a, tok_b, TOKEN_LEN);
        assert_decodes_to(a, tok_a, uaid1, chid1, 0, 0);
        encode_or_fail(ba, chid1, uaid1, NULL, tok_b);
    }
    token_ring_free(a);
    token_ring_free(ba);
}

/* Prints the cost of encode and decode; informative only. */
static void test_timing(void **state)
{
    enum { N = 5000 };
    struct token_ring *ring = ring_or_fail(key_a_str);
    char tok[TOKEN_LEN + 1];
    uint8_t u[IDS_BYTES], c[IDS_BYTES];
    struct timespec t0, t1, t2;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++)
        assert_int_equal(token_encode(ring, uaid1, chid1, NULL, tok), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    for (int i = 0; i < N; i++)
        assert_int_equal(token_decode(ring, tok, TOKEN_LEN, u, c, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    printf("token_encode %.2f us, token_decode %.2f us\n",
           ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / N / 1e3,
           ((t2.tv_sec - t1.tv_sec) * 1e9 + (t2.tv_nsec - t1.tv_nsec)) / N / 1e3);
    token_ring_free(ring);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_keys),
        cmocka_unit_test(test_round_trip_many),
        cmocka_unit_test(test_spelling_extremes),
        cmocka_unit_test(test_nonce_makes_tokens_differ),
        cmocka_unit_test(test_layout_of_encoded_token),
        cmocka_unit_test(test_forged_valid_token_decodes),
        cmocka_unit_test(test_forged_bad_fields),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_colliding_key_ids),
        cmocka_unit_test(test_bit_flips),
        cmocka_unit_test(test_truncated_and_extended),
        cmocka_unit_test(test_every_substitution),
        cmocka_unit_test(test_standard_base64_rejected),
        cmocka_unit_test(test_trailing_bits),
        cmocka_unit_test(test_null_arguments),
        cmocka_unit_test(test_bad_key_lists),
        cmocka_unit_test(test_error_buffer_handling),
        cmocka_unit_test(test_good_key_lists),
        cmocka_unit_test(test_random_rings),
        cmocka_unit_test(test_genkey),
        cmocka_unit_test(test_random_source_failure),
        cmocka_unit_test(test_allocation_failure),
        cmocka_unit_test(test_cipher_context_failure),
        cmocka_unit_test(test_value_table),
        cmocka_unit_test(test_context_reuse),
        cmocka_unit_test(test_timing),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
