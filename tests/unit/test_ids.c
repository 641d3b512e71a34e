/*
 * Unit tests for ids: accepted spellings round-trip byte for byte, every other string is
 * rejected, and generated ids are distinct version 4 UUIDs.
 *
 * The test compiles ids.c itself, with RAND_bytes and getrandom routed through stubs, so
 * that the fallback to getrandom and the abort when both fail can be exercised.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/rand.h>

#include "simplepushd/ids.h"

/* Stub behaviour: real sources, or RAND_bytes failing and getrandom scripted. */
static bool fail_rand;
static enum { GETRANDOM_REAL, GETRANDOM_SCRIPT, GETRANDOM_EIO } getrandom_mode;
static int getrandom_calls;

static int stub_rand_bytes(unsigned char *buf, int num)
{
    return fail_rand ? 0 : RAND_bytes(buf, num);
}

/* Scripted: first call interrupted, second call short (5 bytes of 0x11), then 0x22s. */
static ssize_t stub_getrandom(void *buf, size_t len, unsigned int flags)
{
    size_t n = len;

    if (getrandom_mode == GETRANDOM_REAL)
        return getrandom(buf, len, flags);
    getrandom_calls++;
    if (getrandom_mode == GETRANDOM_EIO) {
        errno = EIO;
        return -1;
    }
    if (getrandom_calls == 1) {
        errno = EINTR;
        return -1;
    }
    if (getrandom_calls == 2 && n > 5)
        n = 5;
    memset(buf, getrandom_calls == 2 ? 0x11 : 0x22, n);
    return (ssize_t)n;
}

#define RAND_bytes stub_rand_bytes
#define getrandom  stub_getrandom
#include "../../src/ids.c"
#undef RAND_bytes
#undef getrandom

/* Asserts that s parses, that its bytes are want_hex, and that formatting gives s back. */
static void check_round_trip(const char *s, const char *want_hex)
{
    uint8_t id[IDS_BYTES];
    struct ids_spelling sp;
    char out[IDS_MAX_STR + 1];
    size_t n;

    assert_int_equal(ids_parse(s, strlen(s), id, &sp), 0);
    n = ids_format(id, &sp, out);
    assert_int_equal(n, strlen(s));
    assert_string_equal(out, s);
    assert_int_equal(sp.dashed, strlen(s) == 36);

    n = ids_format(id, NULL, out);
    assert_int_equal(n, 32);
    assert_string_equal(out, want_hex);
}

static void test_accepted_spellings(void **state)
{
    static const struct {
        const char *s;
        const char *hex;
    } cases[] = {
        {"0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"},
        {"0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcdef"},
        {"0123456789aBcDeF0123456789AbCdEf", "0123456789abcdef0123456789abcdef"},
        {"01234567-89ab-cdef-0123-456789abcdef", "0123456789abcdef0123456789abcdef"},
        {"01234567-89AB-CDEF-0123-456789ABCDEF", "0123456789abcdef0123456789abcdef"},
        {"01234567-89Ab-cDeF-0123-456789aBCdeF", "0123456789abcdef0123456789abcdef"},
        {"00000000000000000000000000000000", "00000000000000000000000000000000"},
        {"00000000-0000-0000-0000-000000000000", "00000000000000000000000000000000"},
        {"ffffffffffffffffffffffffffffffff", "ffffffffffffffffffffffffffffffff"},
        {"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "ffffffffffffffffffffffffffffffff"},
        {"Ffffffffffffffffffffffffffffffff", "ffffffffffffffffffffffffffffffff"},
        {"fffffffffffffffffffffffffffffffF", "ffffffffffffffffffffffffffffffff"},
        {"d1f2a3b4-c5d6-e7f8-9a0b-1c2d3e4f5a6b", "d1f2a3b4c5d6e7f89a0b1c2d3e4f5a6b"},
        /* Version and variant bits are not checked: neither of these is a v4 UUID. */
        {"6ba7b810-9dad-11d1-80b4-00c04fd430c8", "6ba7b8109dad11d180b400c04fd430c8"},
        {"123e4567e89b12d3a456426614174000", "123e4567e89b12d3a456426614174000"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_round_trip(cases[i].s, cases[i].hex);
}

static void test_spelling_mask(void **state)
{
    uint8_t id[IDS_BYTES];
    struct ids_spelling sp;
    const char *s = "A0000000-0000-0000-0000-0000000000Bc";

    assert_int_equal(ids_parse(s, strlen(s), id, &sp), 0);
    assert_int_equal(sp.dashed, 1);
    /* Digit 0 is 'A', digit 30 is 'B'; digit 31 'c' is lower case. */
    assert_int_equal(sp.upper, (UINT32_C(1) << 0) | (UINT32_C(1) << 30));
    assert_int_equal(id[0], 0xa0);
    assert_int_equal(id[15], 0xbc);

    /* Decimal digits carry no case, so they never set a bit. */
    s = "0123456789ABCDEF0123456789ABCDEF";
    assert_int_equal(ids_parse(s, strlen(s), id, &sp), 0);
    assert_int_equal(sp.dashed, 0);
    assert_int_equal(sp.upper, 0xfc00fc00u);
}

static void test_parse_without_spelling(void **state)
{
    uint8_t id[IDS_BYTES];
    const char *s = "01234567-89AB-CDEF-0123-456789ABCDEF";
    static const uint8_t want[IDS_BYTES] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                                            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};

    assert_int_equal(ids_parse(s, strlen(s), id, NULL), 0);
    assert_memory_equal(id, want, IDS_BYTES);
}

/* Mask bits on decimal digits have no effect: the digit is printed as is. */
static void test_format_ignores_mask_on_decimal_digits(void **state)
{
    static const uint8_t id[IDS_BYTES] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                                          0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    struct ids_spelling sp = {.upper = 0xffffffffu, .dashed = 0};
    char out[IDS_MAX_STR + 1];

    assert_int_equal(ids_format(id, &sp, out), 32);
    assert_string_equal(out, "0123456789ABCDEF0123456789ABCDEF");
    sp.dashed = 1;
    sp.upper = 0;
    assert_int_equal(ids_format(id, &sp, out), 36);
    assert_string_equal(out, "01234567-89ab-cdef-0123-456789abcdef");
}

/* Random ids in random spellings: format then parse gives back id and spelling. */
static void test_random_spellings_round_trip(void **state)
{
    srand(12345);
    for (int n = 0; n < 2000; n++) {
        uint8_t id[IDS_BYTES], back[IDS_BYTES];
        struct ids_spelling sp, back_sp;
        char out[IDS_MAX_STR + 1], again[IDS_MAX_STR + 1];
        uint32_t letters = 0;
        size_t len;

        for (int i = 0; i < IDS_BYTES; i++)
            id[i] = (uint8_t)rand();
        sp.dashed = (uint8_t)(rand() & 1);
        sp.upper = ((uint32_t)rand() << 16) ^ (uint32_t)rand();
        for (unsigned d = 0; d < 32; d++) {
            unsigned v = d % 2 ? id[d / 2] & 0x0f : id[d / 2] >> 4;
            if (v >= 10)
                letters |= UINT32_C(1) << d;
        }

        len = ids_format(id, &sp, out);
        assert_int_equal(len, sp.dashed ? 36 : 32);
        assert_int_equal(strlen(out), len);
        assert_int_equal(ids_parse(out, len, back, &back_sp), 0);
        assert_memory_equal(back, id, IDS_BYTES);
        assert_int_equal(back_sp.dashed, sp.dashed);
        assert_int_equal(back_sp.upper, sp.upper & letters);
        assert_int_equal(ids_format(back, &back_sp, again), len);
        assert_string_equal(again, out);
    }
}

static void test_rejected_strings(void **state)
{
    static const struct {
        const char *s;
        size_t len; /* 0: strlen(s) */
    } cases[] = {
        {"", 0},
        {"0", 0},
        {"0123456789abcdef0123456789abcde", 0},   /* 31 digits */
        {"0123456789abcdef0123456789abcdef0", 0}, /* 33 digits */
        {"0123456789abcdef0123456789abcdef01234567", 0},
        {"01234567-89ab-cdef-0123-456789abcde", 0},   /* 35 */
        {"01234567-89ab-cdef-0123-456789abcdef0", 0}, /* 37 */
        {"0123456789abcdef0123456789abcdef0123", 0},  /* 36 digits, no dashes */
        {"0123456-789ab-cdef-0123-456789abcdef", 0},  /* dash one early */
        {"012345678-9ab-cdef-0123-456789abcdef", 0},  /* dash one late */
        {"01234567-89abc-def-0123-456789abcdef", 0},
        {"01234567-89ab-cde-f0123-456789abcdef", 0},
        {"01234567-89ab-cdef-01234-56789abcdef", 0},
        {"01234567089ab-cdef-0123-456789abcdef", 0}, /* a digit where a dash goes */
        {"01234567-89ab-cdef-0123-456789abcde-", 0}, /* a dash where a digit goes */
        {"-0123456789abcdef0123456789abcdef", 0},
        {"0123456789abcdef-0123456789abcdef", 0},
        {"01234567-89ab-cdef-0123-456789abcdef", 35},
        {"01234567_89ab_cdef_0123_456789abcdef", 0},
        {"01234567 89ab cdef 0123 456789abcdef", 0},
        {"g123456789abcdef0123456789abcdef", 0},
        {"0123456789abcdef0123456789abcdeg", 0},
        {"0123456789abcdeG0123456789abcdef", 0},
        {"0x23456789abcdef0123456789abcdef", 0},
        {"0123456789abcdef0123456789abcde\0", 32}, /* embedded NUL */
        {"\0"
         "123456789abcdef0123456789abcdef",
         32},
        {"01234567-89ab-cdef-0123-4567\0"
         "9abcdef",
         36},
        {" 0123456789abcdef0123456789abcde", 0}, /* leading space, 32 chars */
        {"0123456789abcdef0123456789abcde ", 0}, /* trailing space */
        {" 0123456789abcdef0123456789abcdef", 0},
        {"0123456789abcdef0123456789abcdef\n", 0},
        {"\t0123456789abcdef0123456789abcdef", 0},
        {"{01234567-89ab-cdef-0123-456789abcdef}", 0},
        {"{0123456-89ab-cdef-0123-456789abcde}", 0},
        {"urn:uuid:01234567-89ab-cdef-0123-456789abcdef", 0},
        {"+0123456789abcdef0123456789abcde", 0},
        {"0123456789abcdef0123456789abcd%f", 0},
        {"0123456789abcdef0123456789abcd\xc3\xa9", 0}, /* U+00E9, 2 bytes */
        {"0123456789abcdef0123456789abcd\xff\xff", 0},
        {"\xef\xbc\x90"
         "123456789abcdef0123456789abcd",
         0}, /* fullwidth zero */
        {"01234567-89ab-cdef-0123-456789abcdef", 32},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t id[IDS_BYTES] = {0x5a};
        struct ids_spelling sp = {.upper = 7, .dashed = 9};
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].s);

        if (ids_parse(cases[i].s, len, id, &sp) != -1)
            fail_msg("case %zu accepted: \"%.*s\"", i, (int)len, cases[i].s);
        /* A failed parse leaves the outputs alone. */
        assert_int_equal(id[0], 0x5a);
        assert_int_equal(sp.upper, 7);
        assert_int_equal(sp.dashed, 9);
    }
}

/* Every byte value at every position: accepted iff it is a hex digit, or a dash where one
 * belongs. */
static void test_every_byte_at_every_position(void **state)
{
    static const char *const bases[] = {"0123456789abcdef0123456789abcdef",
                                        "01234567-89ab-cdef-0123-456789abcdef"};

    for (int b = 0; b < 2; b++) {
        size_t len = strlen(bases[b]);
        char s[IDS_MAX_STR];

        for (size_t pos = 0; pos < len; pos++) {
            for (int c = 0; c < 256; c++) {
                uint8_t id[IDS_BYTES];
                bool is_dash_pos = b == 1 && (pos == 8 || pos == 13 || pos == 18 || pos == 23);
                bool want;

                memcpy(s, bases[b], len);
                s[pos] = (char)c;
                if (is_dash_pos)
                    want = c == '-';
                else
                    want =
                        (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
                if ((ids_parse(s, len, id, NULL) == 0) != want)
                    fail_msg("form %d, position %zu, byte 0x%02x: wrong verdict", b, pos, c);
            }
        }
    }
}

static int compare_ids(const void *a, const void *b)
{
    return memcmp(a, b, IDS_BYTES);
}

static void test_generate(void **state)
{
    enum { N = 4096 };
    uint8_t(*ids)[IDS_BYTES] = calloc(N, IDS_BYTES);
    unsigned seen_bits[IDS_BYTES] = {0};

    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        ids_generate(ids[i]);
        assert_int_equal(ids[i][6] >> 4, 4);
        assert_int_equal(ids[i][8] >> 6, 2);
        for (int j = 0; j < IDS_BYTES; j++)
            seen_bits[j] |= ids[i][j];
    }
    /* Every byte other than the fixed nibbles varies: all non-fixed bits were seen set. */
    for (int j = 0; j < IDS_BYTES; j++) {
        unsigned want = j == 6 ? 0x4f : j == 8 ? 0xbf : 0xff;
        assert_int_equal(seen_bits[j], want);
    }
    qsort(ids, N, IDS_BYTES, compare_ids);
    for (int i = 1; i < N; i++)
        assert_true(memcmp(ids[i - 1], ids[i], IDS_BYTES) != 0);

    /* A generated id formats as SPEC.md §3 says a new UAID looks: 32 lowercase hex. */
    {
        char out[IDS_MAX_STR + 1];
        uint8_t back[IDS_BYTES];

        assert_int_equal(ids_format(ids[0], NULL, out), 32);
        assert_int_equal(out[12], '4');
        assert_int_equal(ids_parse(out, 32, back, NULL), 0);
        assert_memory_equal(back, ids[0], IDS_BYTES);
    }
    free(ids);
}

/* When RAND_bytes fails, getrandom fills the id, retrying after EINTR and short reads. */
static void test_generate_falls_back_to_getrandom(void **state)
{
    uint8_t id[IDS_BYTES];
    static const uint8_t want[IDS_BYTES] = {0x11, 0x11, 0x11, 0x11, 0x11, 0x22, 0x42, 0x22,
                                            0xa2, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22};

    fail_rand = true;
    getrandom_mode = GETRANDOM_SCRIPT;
    getrandom_calls = 0;
    ids_generate(id);
    fail_rand = false;
    getrandom_mode = GETRANDOM_REAL;
    assert_int_equal(getrandom_calls, 3);
    assert_memory_equal(id, want, IDS_BYTES);
}

/* With no working random source, ids_generate aborts instead of returning a weak id. */
static void test_generate_aborts_without_randomness(void **state)
{
    pid_t pid;
    int status;

    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uint8_t id[IDS_BYTES];
        struct rlimit no_core = {0, 0};

        setrlimit(RLIMIT_CORE, &no_core);
        signal(SIGABRT, SIG_DFL);
        fail_rand = true;
        getrandom_mode = GETRANDOM_EIO;
        ids_generate(id);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted_spellings),
        cmocka_unit_test(test_spelling_mask),
        cmocka_unit_test(test_parse_without_spelling),
        cmocka_unit_test(test_format_ignores_mask_on_decimal_digits),
        cmocka_unit_test(test_random_spellings_round_trip),
        cmocka_unit_test(test_rejected_strings),
        cmocka_unit_test(test_every_byte_at_every_position),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_generate_falls_back_to_getrandom),
        cmocka_unit_test(test_generate_aborts_without_randomness),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
