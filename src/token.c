/*
 * token: AES-256-GCM endpoint tokens and their key ring (SPEC.md §8,
 * reference/operations-reliability.md §6).
 *
 * Token bytes (67):
 *   [0]      version, always TOKEN_VERSION
 *   [1]      key id: first byte of SHA-256 of the key that sealed the token
 *   [2..14)  random nonce
 *   [14..51) ciphertext of uaid(16) | chid(16) | chid dashed(1) | chid upper mask(4, LE)
 *   [51..67) GCM tag; the additional authenticated data is bytes [0..2)
 * The text form is base64url without padding, exactly TOKEN_LEN characters. The decoder is
 * strict (alphabet A-Z a-z 0-9 - _ only, exact length, the unused low bits of the last
 * character zero), so a token has exactly one spelling and every altered string fails.
 * After the tag verifies, a dashed byte other than 0 or 1 is refused too; the upper mask is
 * taken as it is, since ids_format ignores bits of decimal digits.
 *
 * Keys are read once into a ring and never change (a reload makes a new ring). The ring also
 * keeps, made at first use, the AES-256-GCM implementation (OpenSSL 3 otherwise looks it up
 * by name on every call) and one cipher context per key with its key schedule done, which
 * each token only re-initialises with its nonce. So one ring serves one thread at a time.
 * Key material is wiped when the ring is freed (EVP_CIPHER_CTX_free wipes a context), and
 * plaintext buffers are wiped after use.
 */
#include "simplepushd/token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_VERSION   1
#define TOKEN_AAD_LEN   2
#define TOKEN_NONCE_LEN 12
#define TOKEN_TAG_LEN   16
#define TOKEN_PLAIN_LEN (2 * IDS_BYTES + 5)
#define TOKEN_BYTES     (TOKEN_AAD_LEN + TOKEN_NONCE_LEN + TOKEN_PLAIN_LEN + TOKEN_TAG_LEN)
#define TOKEN_OFF_NONCE TOKEN_AAD_LEN
#define TOKEN_OFF_CT    (TOKEN_OFF_NONCE + TOKEN_NONCE_LEN)
#define TOKEN_OFF_TAG   (TOKEN_OFF_CT + TOKEN_PLAIN_LEN)

/* Number of base64url characters, without padding, for n bytes. */
#define B64URL_LEN(n) (((n)*8 + 5) / 6)

_Static_assert(TOKEN_BYTES == 67, "token layout");
_Static_assert(B64URL_LEN(TOKEN_BYTES) == TOKEN_LEN, "TOKEN_LEN matches the layout");
_Static_assert(B64URL_LEN(TOKEN_KEY_LEN) == TOKEN_KEY_STR_LEN, "key string length");

struct token_key {
    uint8_t key[TOKEN_KEY_LEN];
    uint8_t kid;
    EVP_CIPHER_CTX *open; /* decrypting with this key, or NULL before first use */
};

struct token_ring {
    size_t n;
    EVP_CIPHER *gcm;      /* AES-256-GCM, or NULL before first use */
    EVP_CIPHER_CTX *seal; /* encrypting with keys[0], or NULL before first use */
    struct token_key keys[TOKEN_MAX_KEYS];
};

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The 6-bit value of each base64url character, -1 for every other byte. */
/* clang-format off */
static const int8_t b64url_values[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0x00 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0x10 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, /* 0x20 */
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1, /* 0x30 */
    -1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, /* 0x40 */
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63, /* 0x50 */
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, /* 0x60 */
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1, /* 0x70 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0x80 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0x90 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xa0 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xb0 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xc0 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xd0 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xe0 */
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, /* 0xf0 */
};
/* clang-format on */

/* Returns the 6-bit value of base64url character c, or -1. */
static int b64url_value(unsigned char c)
{
    return b64url_values[c];
}

/* Writes B64URL_LEN(n) characters for in[0..n) and a NUL into out. */
static void b64url_encode(const uint8_t *in, size_t n, char *out)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = b64url_alphabet[(acc >> bits) & 63];
        }
        acc &= (UINT32_C(1) << bits) - 1;
    }
    if (bits > 0)
        out[o++] = b64url_alphabet[(acc << (6 - bits)) & 63];
    out[o] = '\0';
}

/*
 * Decodes s[0..len) into exactly n bytes. Returns 0, or -1 when len is not B64URL_LEN(n),
 * a character is outside the alphabet, or the unused low bits of the last character are not
 * zero. out may be partly written on failure.
 */
static int b64url_decode(const char *s, size_t len, uint8_t *out, size_t n)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;

    if (len != B64URL_LEN(n))
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)s[i]);

        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (UINT32_C(1) << bits) - 1;
        }
    }
    return acc == 0 ? 0 : -1;
}

static uint8_t key_id(const uint8_t key[TOKEN_KEY_LEN])
{
    uint8_t digest[SHA256_DIGEST_LENGTH];

    SHA256(key, TOKEN_KEY_LEN, digest);
    return digest[0];
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

struct token_ring *token_ring_new(const char *keys_csv, char *err, size_t errlen)
{
    struct token_ring *ring = calloc(1, sizeof(*ring));
    const char *p = keys_csv;

    if (!ring) {
        set_err(err, errlen, "endpoint.token_keys: out of memory");
        return NULL;
    }
    if (!keys_csv || !*keys_csv) {
        if (RAND_bytes(ring->keys[0].key, TOKEN_KEY_LEN) != 1) {
            set_err(err, errlen, "endpoint.token_keys: cannot generate a random key");
            goto fail;
        }
        ring->keys[0].kid = key_id(ring->keys[0].key);
        ring->n = 1;
        return ring;
    }

    for (;;) {
        const char *comma = strchr(p, ',');
        const char *start = p;
        const char *end = comma ? comma : p + strlen(p);
        size_t number = ring->n + 1;
        struct token_key *k;

        while (start < end && is_blank(*start))
            start++;
        while (end > start && is_blank(end[-1]))
            end--;
        if (ring->n == TOKEN_MAX_KEYS) {
            set_err(err, errlen, "endpoint.token_keys: more than %d keys", TOKEN_MAX_KEYS);
            goto fail;
        }
        if (start == end) {
            set_err(err, errlen, "endpoint.token_keys: key %zu is empty", number);
            goto fail;
        }
        k = &ring->keys[ring->n];
        if (b64url_decode(start, (size_t)(end - start), k->key, TOKEN_KEY_LEN) != 0) {
            set_err(err, errlen,
                    "endpoint.token_keys: key %zu is not 32 bytes of base64url "
                    "(%d characters of A-Z a-z 0-9 - _, no '=' padding)",
                    number, TOKEN_KEY_STR_LEN);
            goto fail;
        }
        k->kid = key_id(k->key);
        ring->n++;

        if (!comma)
            break;
        p = comma + 1;
    }
    return ring;

fail:
    token_ring_free(ring);
    return NULL;
}

void token_ring_free(struct token_ring *ring)
{
    if (!ring)
        return;
    EVP_CIPHER_CTX_free(ring->seal);
    for (size_t i = 0; i < ring->n; i++)
        EVP_CIPHER_CTX_free(ring->keys[i].open);
    EVP_CIPHER_free(ring->gcm);
    OPENSSL_cleanse(ring, sizeof(*ring));
    free(ring);
}

/*
 * Returns *slot, first making it: a context that encrypts (enc 1) or decrypts (enc 0) with
 * AES-256-GCM, key and a TOKEN_NONCE_LEN-byte nonce still to be set. NULL on failure.
 */
static EVP_CIPHER_CTX *keyed_ctx(struct token_ring *ring, EVP_CIPHER_CTX **slot,
                                 const uint8_t key[TOKEN_KEY_LEN], int enc)
{
    if (*slot)
        return *slot;
    if (!ring->gcm && !(ring->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL)))
        return NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return NULL;
    if (EVP_CipherInit_ex(ctx, ring->gcm, NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, TOKEN_NONCE_LEN, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, key, NULL, enc) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    *slot = ctx;
    return ctx;
}

/* Seals plain[0..TOKEN_PLAIN_LEN) into raw, whose AAD and nonce are already in place. */
static int gcm_seal(struct token_ring *ring, uint8_t raw[TOKEN_BYTES],
                    const uint8_t plain[TOKEN_PLAIN_LEN])
{
    EVP_CIPHER_CTX *ctx = keyed_ctx(ring, &ring->seal, ring->keys[0].key, 1);
    int len;

    if (!ctx)
        return -1;
    return EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, raw + TOKEN_OFF_NONCE) == 1 &&
                   EVP_EncryptUpdate(ctx, NULL, &len, raw, TOKEN_AAD_LEN) == 1 &&
                   EVP_EncryptUpdate(ctx, raw + TOKEN_OFF_CT, &len, plain, TOKEN_PLAIN_LEN) == 1 &&
                   len == TOKEN_PLAIN_LEN &&
                   EVP_EncryptFinal_ex(ctx, raw + TOKEN_OFF_CT + len, &len) == 1 && len == 0 &&
                   EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TOKEN_TAG_LEN,
                                       raw + TOKEN_OFF_TAG) == 1
               ? 0
               : -1;
}

/* Opens raw with the ring's key number k into plain. Returns 0 only when the tag verifies. */
static int gcm_open(struct token_ring *ring, size_t k, const uint8_t raw[TOKEN_BYTES],
                    uint8_t plain[TOKEN_PLAIN_LEN])
{
    struct token_key *key = &ring->keys[k];
    EVP_CIPHER_CTX *ctx = keyed_ctx(ring, &key->open, key->key, 0);
    uint8_t tag[TOKEN_TAG_LEN];
    int len;

    if (!ctx)
        return -1;
    /* EVP_CTRL_GCM_SET_TAG takes a non-const buffer. */
    memcpy(tag, raw + TOKEN_OFF_TAG, TOKEN_TAG_LEN);
    return EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, raw + TOKEN_OFF_NONCE) == 1 &&
                   EVP_DecryptUpdate(ctx, NULL, &len, raw, TOKEN_AAD_LEN) == 1 &&
                   EVP_DecryptUpdate(ctx, plain, &len, raw + TOKEN_OFF_CT, TOKEN_PLAIN_LEN) == 1 &&
                   len == TOKEN_PLAIN_LEN &&
                   EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TOKEN_TAG_LEN, tag) == 1 &&
                   EVP_DecryptFinal_ex(ctx, plain + len, &len) == 1
               ? 0
               : -1;
}

int token_encode(struct token_ring *ring, const uint8_t uaid[IDS_BYTES],
                 const uint8_t chid[IDS_BYTES], const struct ids_spelling *chid_sp,
                 char out[TOKEN_LEN + 1])
{
    const struct token_key *k;
    uint8_t raw[TOKEN_BYTES];
    uint8_t plain[TOKEN_PLAIN_LEN];
    uint32_t upper = chid_sp ? chid_sp->upper : 0;
    int rc = -1;

    if (!ring || ring->n == 0)
        return -1;
    k = &ring->keys[0];
    raw[0] = TOKEN_VERSION;
    raw[1] = k->kid;
    if (RAND_bytes(raw + TOKEN_OFF_NONCE, TOKEN_NONCE_LEN) != 1)
        return -1;

    memcpy(plain, uaid, IDS_BYTES);
    memcpy(plain + IDS_BYTES, chid, IDS_BYTES);
    plain[2 * IDS_BYTES] = chid_sp && chid_sp->dashed ? 1 : 0;
    for (int i = 0; i < 4; i++)
        plain[2 * IDS_BYTES + 1 + i] = (uint8_t)(upper >> (8 * i));

    if (gcm_seal(ring, raw, plain) == 0) {
        b64url_encode(raw, TOKEN_BYTES, out);
        rc = 0;
    }
    OPENSSL_cleanse(plain, sizeof(plain));
    return rc;
}

int token_decode(struct token_ring *ring, const char *tok, size_t len, uint8_t uaid[IDS_BYTES],
                 uint8_t chid[IDS_BYTES], struct ids_spelling *chid_sp)
{
    uint8_t raw[TOKEN_BYTES];
    uint8_t plain[TOKEN_PLAIN_LEN];
    const uint8_t *sp = plain + 2 * IDS_BYTES;
    bool opened = false;
    int rc = -1;

    if (!ring || !tok || len != TOKEN_LEN)
        return -1;
    if (b64url_decode(tok, len, raw, TOKEN_BYTES) != 0)
        return -1;
    if (raw[0] != TOKEN_VERSION)
        return -1;
    /* Distinct keys may share a key id byte: try each key that has it. */
    for (size_t i = 0; i < ring->n && !opened; i++)
        if (ring->keys[i].kid == raw[1])
            opened = gcm_open(ring, i, raw, plain) == 0;
    if (!opened)
        goto out;
    if (sp[0] > 1)
        goto out;

    memcpy(uaid, plain, IDS_BYTES);
    memcpy(chid, plain + IDS_BYTES, IDS_BYTES);
    if (chid_sp) {
        chid_sp->dashed = sp[0];
        chid_sp->upper =
            (uint32_t)sp[1] | (uint32_t)sp[2] << 8 | (uint32_t)sp[3] << 16 | (uint32_t)sp[4] << 24;
    }
    rc = 0;
out:
    OPENSSL_cleanse(plain, sizeof(plain));
    return rc;
}

int token_genkey(char out[TOKEN_KEY_STR_LEN + 1])
{
    uint8_t key[TOKEN_KEY_LEN];

    if (RAND_bytes(key, TOKEN_KEY_LEN) != 1)
        return -1;
    b64url_encode(key, TOKEN_KEY_LEN, out);
    OPENSSL_cleanse(key, sizeof(key));
    return 0;
}
