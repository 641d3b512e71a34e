/*
 * fuzz_head: head_feed(), the request-head check the gate runs before libwebsockets sees a
 * byte, on the input as the bytes a client sent.
 *
 * The input is fed whole and again in pieces (sizes drawn from the input itself), with the
 * real cap and with a small one: the verdict, the head's extent and the refusal must not
 * depend on the pieces. An accepted head must be what head.h promises: empty lines, then a
 * request line of an accepted method and an origin-form target, ending at the first empty
 * line, without control bytes; a refusal names one of the gate's statuses; only an input
 * shorter than the cap may still wait for more.
 */
#include <string.h>

#include "fuzz_common.h"
#include "simplepushd/head.h"

static const char *const methods[] = {"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ",
                                      "PATCH "};

/* Feeds data[0..size) in pieces whose sizes come from a generator seeded with seed. */
static int feed_pieces(struct head *h, const char *data, size_t size, size_t max, uint32_t seed)
{
    size_t len = 0;
    int v = HEAD_MORE;

    head_init(h);
    while (v == HEAD_MORE && len < size) {
        seed = seed * 1103515245u + 12345u;
        len += 1 + (seed >> 16) % 64;
        if (len > size)
            len = size;
        v = head_feed(h, data, len, max);
    }
    if (v == HEAD_MORE && size == 0)
        v = head_feed(h, data, 0, max);
    return v;
}

static void check_done(const struct head *h, const char *data, size_t size, size_t max)
{
    size_t m;

    FUZZ_CHECK(h->start < h->end && h->end <= size && h->end <= max);
    FUZZ_CHECK(h->start % 2 == 0);
    for (size_t i = 0; i < h->start; i += 2)
        FUZZ_CHECK(data[i] == '\r' && data[i + 1] == '\n');
    FUZZ_CHECK(h->end - h->start >= 4 && !memcmp(data + h->end - 4, "\r\n\r\n", 4));
    for (size_t i = h->start; i + 4 < h->end; i++)
        FUZZ_CHECK(memcmp(data + i, "\r\n\r\n", 4) != 0);
    for (size_t i = h->start; i < h->end; i++) {
        unsigned char c = (unsigned char)data[i];
        FUZZ_CHECK(c >= ' ' || c == '\t' || c == '\r' || c == '\n');
        FUZZ_CHECK(c != 0x7f);
        if (c == '\r')
            FUZZ_CHECK(data[i + 1] == '\n');
        if (c == '\n')
            FUZZ_CHECK(data[i - 1] == '\r');
    }
    for (m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
        size_t n = strlen(methods[m]);
        if (h->end - h->start > n && !memcmp(data + h->start, methods[m], n)) {
            FUZZ_CHECK(data[h->start + n] == '/');
            break;
        }
    }
    FUZZ_CHECK(m < sizeof(methods) / sizeof(methods[0]));
}

static void check(const char *data, size_t size, size_t max, uint32_t seed)
{
    struct head whole, pieces;
    int v = head_feed((head_init(&whole), &whole), data, size, max);
    int w = feed_pieces(&pieces, data, size, max, seed);

    FUZZ_CHECK(v == w);
    FUZZ_CHECK(head_feed(&whole, data, size, max) == v);
    if (v == HEAD_DONE) {
        FUZZ_CHECK(whole.start == pieces.start && whole.end == pieces.end);
        check_done(&whole, data, size, max);
    } else if (v == HEAD_BAD) {
        FUZZ_CHECK(whole.status == pieces.status && whole.error && pieces.error &&
                   !strcmp(whole.error, pieces.error));
        FUZZ_CHECK(whole.status == 400 || whole.status == 405 || whole.status == 414 ||
                   whole.status == 431 || whole.status == 505);
    } else {
        FUZZ_CHECK(v == HEAD_MORE && size < max);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes, so that ASan catches any read past the input. */
    char *buf = malloc(size ? size : 1);
    uint32_t seed = 2166136261u;

    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data, size);
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 16777619u;
    check(buf, size, HEAD_MAX, seed);
    check(buf, size, size / 2 + 1, seed ^ 0x5bd1e995u);
    free(buf);
    return 0;
}
