/*
 * ids: parsing, formatting and generation of UAIDs and channel IDs (SPEC.md §3).
 *
 * An accepted string is exactly 32 hex digits, or 36 characters in the 8-4-4-4-12 form with
 * dashes at offsets 8, 13, 18 and 23; anything else is rejected, including surrounding
 * whitespace, braces, "urn:uuid:" prefixes and embedded NULs. The version and variant bits
 * are not checked, because clients generate their own ids. The spelling keeps the dashed
 * flag and one bit per hex digit (digit index 0..31, dashes not counted) that was an upper
 * case letter, which is all ids_format needs to give back the exact input string.
 */
#include "simplepushd/ids.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <sys/random.h>

/* Returns the value of hex digit c (either case), or -1; sets *upper for A-F. */
static int hex_value(unsigned char c, bool *upper)
{
    *upper = false;
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') {
        *upper = true;
        return c - 'A' + 10;
    }
    return -1;
}

/* True when offset i of the 36-character form holds a dash. */
static bool dash_at(size_t i)
{
    return i == 8 || i == 13 || i == 18 || i == 23;
}

int ids_parse(const char *s, size_t len, uint8_t id[IDS_BYTES], struct ids_spelling *sp)
{
    uint8_t buf[IDS_BYTES] = {0};
    uint32_t upper_mask = 0;
    bool dashed;
    unsigned digit = 0;

    if (len == 32)
        dashed = false;
    else if (len == 36)
        dashed = true;
    else
        return -1;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool upper;
        int v;

        if (dashed && dash_at(i)) {
            if (c != '-')
                return -1;
            continue;
        }
        v = hex_value(c, &upper);
        if (v < 0)
            return -1;
        if (upper)
            upper_mask |= UINT32_C(1) << digit;
        buf[digit / 2] |= (uint8_t)(digit % 2 ? v : v << 4);
        digit++;
    }

    for (size_t i = 0; i < IDS_BYTES; i++)
        id[i] = buf[i];
    if (sp) {
        sp->upper = upper_mask;
        sp->dashed = dashed;
    }
    return 0;
}

size_t ids_format(const uint8_t id[IDS_BYTES], const struct ids_spelling *sp,
                  char out[IDS_MAX_STR + 1])
{
    static const char lower_digits[] = "0123456789abcdef";
    static const char upper_digits[] = "0123456789ABCDEF";
    bool dashed = sp && sp->dashed;
    uint32_t upper_mask = sp ? sp->upper : 0;
    size_t n = 0;

    for (unsigned digit = 0; digit < 2 * IDS_BYTES; digit++) {
        unsigned v = digit % 2 ? id[digit / 2] & 0x0f : id[digit / 2] >> 4;
        const char *digits = upper_mask & (UINT32_C(1) << digit) ? upper_digits : lower_digits;

        if (dashed && dash_at(n))
            out[n++] = '-';
        out[n++] = digits[v];
    }
    out[n] = '\0';
    return n;
}

/*
 * Fills buf with len random bytes. OpenSSL's RAND_bytes is the first source; if it fails
 * (its DRBG could not be seeded), the kernel's getrandom(2) is used directly. If that fails
 * as well there is no safe way to make an id, so the process aborts rather than hand out
 * predictable UAIDs, which are bearer credentials.
 */
static void random_bytes_or_abort(uint8_t *buf, size_t len)
{
    size_t done = 0;

    if (RAND_bytes(buf, (int)len) == 1)
        return;
    while (done < len) {
        ssize_t r = getrandom(buf + done, len - done, 0);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            abort();
        }
        done += (size_t)r;
    }
}

void ids_generate(uint8_t id[IDS_BYTES])
{
    random_bytes_or_abort(id, IDS_BYTES);
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40); /* version 4 */
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80); /* variant 10xx (RFC 4122) */
}
