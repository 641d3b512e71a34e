/*
 * Replays the fuzzers' committed seed corpora (tests/fuzz/corpus/<target>/) through the
 * fuzz targets' own checks, in the normal build: every input a fuzzer ever crashed on is
 * kept there, so this is a regression test for all of them, and it runs under the ASan
 * build of .ci/test without clang or libFuzzer. The fuzz targets' sources are included
 * here with their entry points renamed; FUZZ_CHECK fails the cmocka test, naming the seed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CORPUS_DIR SP_TEST_DATA "/../../fuzz/corpus"

/* The seed being replayed, named in failures. */
static char current_seed[512];

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail_msg("%s: %s:%d: check failed: %s", current_seed, __FILE__, __LINE__, #cond);      \
    } while (0)

#define LLVMFuzzerInitialize   message_init
#define LLVMFuzzerTestOneInput message_one
int message_init(int *argc, char ***argv);
int message_one(const uint8_t *data, size_t size);
#include "../fuzz/fuzz_message.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize   token_init
#define LLVMFuzzerTestOneInput token_one
int token_init(int *argc, char ***argv);
int token_one(const uint8_t *data, size_t size);
#include "../fuzz/fuzz_token.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput endpoint_one
int endpoint_one(const uint8_t *data, size_t size);
#include "../fuzz/fuzz_endpoint.c"
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput head_one
int head_one(const uint8_t *data, size_t size);
#include "../fuzz/fuzz_head.c"
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerInitialize   config_init
#define LLVMFuzzerTestOneInput config_one
int config_init(int *argc, char ***argv);
int config_one(const uint8_t *data, size_t size);
#include "../fuzz/fuzz_config.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

/* Reads a whole file into a malloc'd buffer (at least one byte allocated). */
static uint8_t *read_seed(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0, n;

    assert_non_null(f);
    do {
        if (len == cap) {
            cap = cap ? 2 * cap : 4096;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    assert_int_equal(ferror(f), 0);
    fclose(f);
    *size = len;
    return buf;
}

/* Runs one() on every file of the target's corpus directory; returns how many. */
static size_t replay(const char *target, int (*one)(const uint8_t *, size_t))
{
    char dir[256];
    struct dirent *e;
    size_t count = 0;
    DIR *d;

    snprintf(dir, sizeof(dir), "%s/%s", CORPUS_DIR, target);
    d = opendir(dir);
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        uint8_t *data;
        size_t size;

        if (e->d_name[0] == '.')
            continue;
        snprintf(current_seed, sizeof(current_seed), "%s/%s", dir, e->d_name);
        data = read_seed(current_seed, &size);
        assert_int_equal(one(data, size), 0);
        free(data);
        count++;
    }
    closedir(d);
    return count;
}

static void test_message_corpus(void **state)
{
    (void)state;
    message_init(NULL, NULL);
    assert_true(replay("message", message_one) >= 12);
}

static void test_token_corpus(void **state)
{
    (void)state;
    token_init(NULL, NULL);
    assert_true(replay("token", token_one) >= 12);
    token_ring_free(ring);
    token_ring_free(ring_k3);
    token_ring_free(ring_k2);
    token_ring_free(ring_other);
}

static void test_endpoint_corpus(void **state)
{
    (void)state;
    assert_true(replay("endpoint", endpoint_one) >= 12);
}

static void test_head_corpus(void **state)
{
    (void)state;
    assert_true(replay("head", head_one) >= 12);
}

static void test_config_corpus(void **state)
{
    (void)state;
    config_init(NULL, NULL);
    assert_true(replay("config", config_one) >= 12);
    config_free(defaults);
    close(mem_fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_corpus),
        cmocka_unit_test(test_token_corpus),
        cmocka_unit_test(test_endpoint_corpus),
        cmocka_unit_test(test_head_corpus),
        cmocka_unit_test(test_config_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
