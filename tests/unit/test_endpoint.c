/*
 * Unit tests of the endpoint's pure parsers: the form-urlencoded field lookup and the
 * version parser. The HTTP handling itself is covered end to end (tests/e2e).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "simplepushd/endpoint.h"

struct form_case {
    const char *form;
    const char *name;
    bool present;
    const char *value; /* expected decoded value when present */
    size_t len;        /* expected length (values may hold NUL) */
};

static void test_form_get(void **state)
{
    static const struct form_case cases[] = {
        {"version=5", "version", true, "5", 1},
        {"version=5&data=hi", "data", true, "hi", 2},
        {"data=hi&version=7", "version", true, "7", 1},
        {"version=", "version", true, "", 0},
        {"version", "version", true, "", 0},
        {"versions=5", "version", false, NULL, 0},
        {"xversion=5", "version", false, NULL, 0},
        {"", "version", false, NULL, 0},
        {"&&&", "version", false, NULL, 0},
        {"data=a+b", "data", true, "a b", 3},
        {"data=a%20b%26c%3Dd", "data", true, "a b&c=d", 7},
        {"data=%41%4a%4A", "data", true, "AJJ", 3},
        {"data=%", "data", true, "%", 1},
        {"data=%4", "data", true, "%4", 2},
        {"data=%zz", "data", true, "%zz", 3},
        {"data=%00x", "data", true, "\0x", 2},
        {"d%61ta=x", "data", true, "x", 1},
        {"%64ata=x", "data", true, "x", 1},
        {"dat%61=x", "data", true, "x", 1},
        {"data%=x&data=y", "data", true, "y", 1},
        {"dat=x&data%6=y", "data", false, NULL, 0},
        {"+data=x", "data", false, NULL, 0},
        {"data+=x", "data", false, NULL, 0},
        {"dat%61%=x", "data", false, NULL, 0},
        {"version=1&version=2", "version", true, "1", 1},
        {"data==x", "data", true, "=x", 2},
        {"data=caf%C3%A9", "data", true, "caf\xc3\xa9", 5},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct form_case *c = &cases[i];
        struct endpoint_field f;
        assert_int_equal(endpoint_form_get(c->form, strlen(c->form), c->name, &f), 0);
        assert_int_equal(f.present, c->present);
        if (c->present) {
            assert_non_null(f.value);
            assert_int_equal(f.len, c->len);
            assert_memory_equal(f.value, c->value, c->len);
            assert_int_equal(f.value[f.len], '\0');
        } else {
            assert_null(f.value);
        }
        free(f.value);
    }
}

/* The form is not NUL-terminated: nothing past len may be read. */
static void test_form_get_bounded(void **state)
{
    (void)state;
    const char buf[] = {'d', 'a', 't', 'a', '=', 'a', '%', '4'};
    struct endpoint_field f;
    assert_int_equal(endpoint_form_get(buf, sizeof(buf), "data", &f), 0);
    assert_true(f.present);
    assert_int_equal(f.len, 3);
    assert_memory_equal(f.value, "a%4", 3);
    free(f.value);
}

static void test_parse_version(void **state)
{
    static const struct {
        const char *s;
        int rc;
        int64_t v;
    } cases[] = {
        {"0", 0, 0},
        {"1", 0, 1},
        {"007", 0, 7},
        {"1416268800", 0, 1416268800},
        {"9223372036854775807", 0, INT64_MAX},
        {"9223372036854775808", -1, 0},
        {"18446744073709551616", -1, 0},
        {"99999999999999999999", -1, 0},
        {"-1", -1, 0},
        {"+1", -1, 0},
        {"", -1, 0},
        {" 1", -1, 0},
        {"1 ", -1, 0},
        {"1.0", -1, 0},
        {"1e3", -1, 0},
        {"abc", -1, 0},
        {"0x10", -1, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = -42;
        int rc = endpoint_parse_version(cases[i].s, strlen(cases[i].s), &v);
        assert_int_equal(rc, cases[i].rc);
        if (!rc)
            assert_int_equal(v, cases[i].v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_get),
        cmocka_unit_test(test_form_get_bounded),
        cmocka_unit_test(test_parse_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
