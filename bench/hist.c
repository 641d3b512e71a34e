/*
 * hist: the log-linear histogram (see hist.h).
 *
 * Bucket index: v < 128 -> v; otherwise with e = floor(log2 v) (7..63) and the six bits
 * below the leading one, sub = (v >> (e - 6)) & 63, the index is 128 + (e - 7) * 64 + sub.
 * Bucket i >= 128 covers [(64 + sub) << (e - 6), ((65 + sub) << (e - 6)) - 1].
 */
#include "hist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HIST_EXACT   128u
#define HIST_SUB     64u
#define HIST_BUCKETS (HIST_EXACT + (63u - 7u + 1u) * HIST_SUB)

struct hist {
    uint64_t count;
    uint64_t max;
    uint64_t min;
    long double sum;
    uint64_t b[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_EXACT)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (e - 6)) & (HIST_SUB - 1);
    return HIST_EXACT + (e - 7) * HIST_SUB + sub;
}

/* The middle of bucket i. */
static uint64_t hist_value(unsigned i)
{
    if (i < HIST_EXACT)
        return i;
    unsigned e = (i - HIST_EXACT) / HIST_SUB + 7;
    unsigned sub = (i - HIST_EXACT) % HIST_SUB;
    uint64_t lo = (uint64_t)(HIST_SUB + sub) << (e - 6);
    uint64_t width = (uint64_t)1 << (e - 6);
    return lo + width / 2;
}

struct hist *hist_new(void)
{
    struct hist *h = calloc(1, sizeof(*h));
    if (h)
        hist_reset(h);
    return h;
}

void hist_free(struct hist *h)
{
    free(h);
}

void hist_reset(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void hist_add(struct hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
    if (v < h->min)
        h->min = v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->max > dst->max)
        dst->max = src->max;
    if (src->min < dst->min)
        dst->min = src->min;
}

uint64_t hist_count(const struct hist *h)
{
    return h->count;
}

uint64_t hist_max(const struct hist *h)
{
    return h->max;
}

uint64_t hist_min(const struct hist *h)
{
    return h->count ? h->min : 0;
}

double hist_mean(const struct hist *h)
{
    return h->count ? (double)(h->sum / h->count) : 0.0;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q <= 0)
        return hist_min(h);
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}
