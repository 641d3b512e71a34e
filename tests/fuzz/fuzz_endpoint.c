/*
 * fuzz_endpoint: the PUT /update form and version parsers, endpoint_form_get() and
 * endpoint_parse_version(), against small reference implementations written here from the
 * contract in endpoint.h and SPEC §7.
 *
 * The input is a form body looked up for "version", "data" and "" (an empty name); when it
 * holds a NUL byte, the bytes before the first NUL are also a field name looked up in the
 * bytes after it. Every lookup must agree with the reference (found or not, the decoded
 * value byte for byte), and the value must be NUL-terminated at its length. The whole input
 * and every version value found are also parsed as a version, which must agree with the
 * reference: base-10 digits only, 0 .. 2^63-1, any number of leading zeros.
 */
#include <string.h>

#include "fuzz_common.h"
#include "simplepushd/endpoint.h"

static int ref_hex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes s[0..len) into out (room for len bytes): '+' is a space, %XX a byte, a malformed
 * escape stays as it is. Returns the decoded length. */
static size_t ref_decode(const char *s, size_t len, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && len - i >= 3 && ref_hex((unsigned char)s[i + 1]) >= 0 &&
                   ref_hex((unsigned char)s[i + 2]) >= 0) {
            out[o++] =
                (char)(ref_hex((unsigned char)s[i + 1]) << 4 | ref_hex((unsigned char)s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

/* Finds the first pair whose decoded key is name; returns whether it did and the decoded
 * value in value (room for len bytes) and *vlen. A pair without '=' has an empty value. */
static bool ref_form_get(const char *form, size_t len, const char *name, char *value, size_t *vlen)
{
    size_t nlen = strlen(name), start = 0;
    char *key = malloc(len ? len : 1);

    FUZZ_CHECK(key != NULL);
    while (start < len) {
        size_t end = start, eq, klen;

        while (end < len && form[end] != '&')
            end++;
        for (eq = start; eq < end && form[eq] != '='; eq++)
            ;
        klen = ref_decode(form + start, eq - start, key);
        if (klen == nlen && memcmp(key, name, nlen) == 0) {
            *vlen = eq < end ? ref_decode(form + eq + 1, end - eq - 1, value) : 0;
            free(key);
            return true;
        }
        start = end + 1;
    }
    free(key);
    return false;
}

static bool ref_parse_version(const char *s, size_t len, int64_t *version)
{
    uint64_t v = 0;

    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned d;

        if (s[i] < '0' || s[i] > '9')
            return false;
        d = (unsigned)(s[i] - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *version = (int64_t)v;
    return true;
}

static void check_version(const char *s, size_t len)
{
    int64_t got = -1, want = -2;
    bool ok = endpoint_parse_version(s, len, &got) == 0;

    FUZZ_CHECK(ok == ref_parse_version(s, len, &want));
    if (ok)
        FUZZ_CHECK(got == want && got >= 0);
}

/* Looks name up in form[0..len), checks it against the reference; returns the field. */
static struct endpoint_field lookup(const char *form, size_t len, const char *name)
{
    struct endpoint_field f;
    char *want = malloc(len ? len : 1);
    size_t want_len = 0;
    bool found;

    FUZZ_CHECK(want != NULL);
    memset(&f, 0xa5, sizeof(f));
    FUZZ_CHECK(endpoint_form_get(form, len, name, &f) == 0);
    found = ref_form_get(form, len, name, want, &want_len);
    FUZZ_CHECK(f.present == found);
    if (found) {
        FUZZ_CHECK(f.value != NULL && f.len == want_len && f.value[f.len] == '\0');
        FUZZ_CHECK(memcmp(f.value, want, want_len) == 0);
    } else {
        FUZZ_CHECK(f.value == NULL && f.len == 0);
    }
    free(want);
    return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"version", "data", ""};
    /* A copy of exactly size bytes, so that ASan catches any read past the form. */
    char *form = malloc(size ? size : 1);
    const char *nul;

    FUZZ_CHECK(form != NULL);
    memcpy(form, data, size);
    check_version(form, size);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct endpoint_field f = lookup(form, size, names[i]);

        if (i == 0 && f.present)
            check_version(f.value, f.len);
        free(f.value);
    }

    nul = memchr(form, '\0', size);
    if (nul) {
        size_t rest = size - (size_t)(nul - form) - 1;
        char *tail = malloc(rest ? rest : 1);
        struct endpoint_field f;

        FUZZ_CHECK(tail != NULL);
        memcpy(tail, nul + 1, rest);
        f = lookup(tail, rest, form);
        free(f.value);
        free(tail);
    }
    free(form);
    return 0;
}
