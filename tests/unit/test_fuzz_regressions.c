/*
 * Regression tests for bugs the fuzzers (tests/fuzz/) found: one test per bug, named after
 * it, feeding the input that showed it. The same inputs are kept in the fuzzers' seed
 * corpora (tests/fuzz/corpus/<target>/), named in each test's comment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "simplepushd/endpoint.h"

/*
 * fuzz_endpoint, corpus/endpoint/version-leading-zeros: endpoint_parse_version() refused
 * any text longer than 19 characters, so a version with leading zeros ("0000000000000000000042",
 * a base-10 integer in range) was answered 400 Invalid Version, against SPEC §7 and unlike
 * pushgo's strconv.ParseInt. Overflow is now checked per digit.
 */
static void test_version_leading_zeros_refused(void **state)
{
    static const char body[] = "version=0000000000000000000042";
    static const struct {
        const char *s;
        int rc;
        int64_t v;
    } cases[] = {
        {"0000000000000000000042", 0, 42},
        {"00000000000000000000000000000000000000000000000000000000000000000000000000000", 0, 0},
        {"00000000009223372036854775807", 0, INT64_MAX},
        {"00000000009223372036854775808", -1, 0},
        {"0000000000000000000018446744073709551616", -1, 0},
        {"000000000000000000000000000000000000000000000x", -1, 0},
    };
    struct endpoint_field f;
    int64_t v = -1;

    (void)state;
    assert_int_equal(endpoint_form_get(body, sizeof(body) - 1, "version", &f), 0);
    assert_true(f.present);
    assert_int_equal(endpoint_parse_version(f.value, f.len, &v), 0);
    assert_int_equal(v, 42);
    free(f.value);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        v = -1;
        assert_int_equal(endpoint_parse_version(cases[i].s, strlen(cases[i].s), &v), cases[i].rc);
        if (cases[i].rc == 0)
            assert_int_equal(v, cases[i].v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_leading_zeros_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
