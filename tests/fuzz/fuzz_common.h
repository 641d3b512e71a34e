/*
 * fuzz_common: what the libFuzzer targets in tests/fuzz/ share: the entry points'
 * prototypes, the fixed token key ring, and a check that aborts (libFuzzer reports the abort
 * as a crash and saves the input).
 *
 * The key ring is a constant so that the committed seed tokens (made by gen_token_seeds)
 * stay valid. Keys 1 and 3 share their key id byte (45), so decoding a token sealed with
 * key 3 tries key 1 first and must fall through to key 3 (token.c's rotation path).
 */
#ifndef SIMPLEPUSHD_FUZZ_COMMON_H
#define SIMPLEPUSHD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_KEY_1 "CGjERErBl257L3OgJm3sObf09jf0OBUOJ0IzWeVaOkQ"
#define FUZZ_KEY_2 "nnWVx0JNkhmqukbtpmJX0F9XSc7_dowYfWZ-2aZAqzM"
#define FUZZ_KEY_3 "8kVIeFBhhNXGAih3L0fWQFvAgtJ4T5EppBr3utH8eP8"

/* The ring every fuzzer decodes with: key 1 encrypts, all three decrypt. */
#define FUZZ_TOKEN_KEYS FUZZ_KEY_1 ", " FUZZ_KEY_2 ",\t" FUZZ_KEY_3

/* Rings that encrypt with key 3 and key 2: their tokens must decode with FUZZ_TOKEN_KEYS. */
#define FUZZ_TOKEN_KEYS_K3 FUZZ_KEY_3 "," FUZZ_KEY_1
#define FUZZ_TOKEN_KEYS_K2 FUZZ_KEY_2

/* A ring without key 1: tokens of FUZZ_TOKEN_KEYS must not decode with it. */
#define FUZZ_TOKEN_KEYS_OTHER FUZZ_KEY_2 "," FUZZ_KEY_3

/* Aborts with the failed condition when cond is false. The corpus replay unit test
 * (tests/unit/test_fuzz_corpus.c) defines its own, which fails the cmocka test instead. */
#ifndef FUZZ_CHECK
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
