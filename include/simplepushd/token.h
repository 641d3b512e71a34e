/*
 * token: endpoint tokens, the last path segment of PUT /update/<token>.
 *
 * A token proves the server issued it. It is base64url without padding of
 *   version(1) = 1 | key id(1) | nonce(12) | AES-256-GCM(uaid(16) | chid(16) | chid spelling(5))
 *   | tag(16)
 * with the version and key id bytes as additional authenticated data; 67 bytes, so always
 * TOKEN_LEN characters. The key id is the first byte of SHA-256 of the key. The chid
 * spelling lets a notification carry the channelID exactly as the device registered it.
 *
 * A key ring holds 1..TOKEN_MAX_KEYS keys: the first encrypts, all decrypt (rotation).
 * Its keys never change once made (reload makes a new ring), but encode and decode keep
 * cipher contexts in it, so a ring is used by one thread at a time (the loop thread).
 */
#ifndef SIMPLEPUSHD_TOKEN_H
#define SIMPLEPUSHD_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "simplepushd/ids.h"

#define TOKEN_LEN         90
#define TOKEN_KEY_LEN     32
#define TOKEN_KEY_STR_LEN 43 /* base64url of 32 bytes, no padding */
#define TOKEN_MAX_KEYS    16

struct token_ring;

/*
 * Makes a ring from a comma-separated list of base64url 32-byte keys (spaces around commas
 * allowed). NULL or "" makes a ring with one random key. On error returns NULL and writes
 * the reason into err (never the key itself).
 * Each key is exactly TOKEN_KEY_STR_LEN characters of A-Z a-z 0-9 - _ with no '=' padding
 * (what token_genkey writes); spaces and tabs around a key are ignored; an empty entry, a
 * key of another length or alphabet, and more than TOKEN_MAX_KEYS keys are errors; err then
 * reads "endpoint.token_keys: key N is ..." (N counts from 1) or "endpoint.token_keys: more
 * than 16 keys". err may be NULL.
 */
struct token_ring *token_ring_new(const char *keys_csv, char *err, size_t errlen);

/* Frees a ring. Accepts NULL. */
void token_ring_free(struct token_ring *ring);

/*
 * Encodes a token into out (TOKEN_LEN characters and a NUL) with the ring's first key and a
 * fresh random nonce, so two calls give different tokens. chid_sp NULL means the chid was
 * spelled as 32 lowercase hex digits. Returns 0 or -1.
 */
int token_encode(struct token_ring *ring, const uint8_t uaid[IDS_BYTES],
                 const uint8_t chid[IDS_BYTES], const struct ids_spelling *chid_sp,
                 char out[TOKEN_LEN + 1]);

/*
 * Decodes and authenticates tok[0..len). Returns 0 and fills the outputs, or -1 for any bad
 * token (length, alphabet, non-zero trailing bits, version, unknown key id, tag): callers
 * must answer every failure the same way. chid_sp may be NULL. The outputs are written only
 * on success.
 */
int token_decode(struct token_ring *ring, const char *tok, size_t len, uint8_t uaid[IDS_BYTES],
                 uint8_t chid[IDS_BYTES], struct ids_spelling *chid_sp);

/* Writes a fresh random key, base64url without padding, and a NUL. Returns 0 or -1. */
int token_genkey(char out[TOKEN_KEY_STR_LEN + 1]);

#endif
