/*
 * ids: UAIDs and channel IDs.
 *
 * Both are UUIDs, accepted as 32 hex digits or in the 36-character 8-4-4-4-12 form, hex in
 * any case. Internally an id is its 16 bytes. A "spelling" records how the client wrote it
 * (dashed or not, which hex digits were upper case) so that the exact string can be echoed
 * back without keeping it: ids_format(ids_parse(s)) == s for every accepted s.
 * Pure functions, callable from any thread.
 */
#ifndef SIMPLEPUSHD_IDS_H
#define SIMPLEPUSHD_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IDS_BYTES   16
#define IDS_MAX_STR 36 /* the longest accepted spelling, without the NUL */

struct ids_spelling {
    uint32_t upper; /* bit i set: hex digit i (0..31) was written upper case */
    uint8_t dashed; /* 1: 8-4-4-4-12 form, 0: 32 hex digits */
};

/*
 * Parses s[0..len) (not NUL-terminated) into id and, if sp is not NULL, its spelling.
 * Returns 0, or -1 when s is not an accepted form.
 */
int ids_parse(const char *s, size_t len, uint8_t id[IDS_BYTES], struct ids_spelling *sp);

/* Writes the id as spelled by sp (NULL: 32 lowercase hex digits) plus a NUL; returns length. */
size_t ids_format(const uint8_t id[IDS_BYTES], const struct ids_spelling *sp,
                  char out[IDS_MAX_STR + 1]);

/*
 * Fills id with a random version 4 UUID (RFC 4122 version and variant bits set). The bytes
 * come from OpenSSL's RAND_bytes, or from getrandom(2) if that fails; if both fail the
 * process aborts, since a predictable UAID would be a guessable credential.
 */
void ids_generate(uint8_t id[IDS_BYTES]);

#endif
