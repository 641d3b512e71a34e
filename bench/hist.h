/*
 * hist: a log-linear histogram of non-negative integers (microseconds in spload), in the
 * manner of HdrHistogram: values below 128 are exact, larger ones fall into 64 buckets per
 * power of two, so a percentile is within 1/64 (1.6%) of the true value. The maximum, the
 * minimum and the mean are exact. Fixed size (about 30 KiB), no allocation after hist_new.
 */
#ifndef SPLOAD_HIST_H
#define SPLOAD_HIST_H

#include <stdint.h>

struct hist;

/* A new, empty histogram, or NULL when out of memory. */
struct hist *hist_new(void);

/* Frees h; NULL is fine. */
void hist_free(struct hist *h);

/* Empties h. */
void hist_reset(struct hist *h);

/* Records one value. */
void hist_add(struct hist *h, uint64_t v);

/* Adds every value of src to dst. */
void hist_merge(struct hist *dst, const struct hist *src);

uint64_t hist_count(const struct hist *h);
uint64_t hist_max(const struct hist *h);
uint64_t hist_min(const struct hist *h);
double hist_mean(const struct hist *h);

/*
 * The value at quantile q (0 < q <= 1): the smallest recorded value v such that at least
 * q * count values are <= v, reported as the middle of its bucket and never above the exact
 * maximum. 0 for an empty histogram.
 */
uint64_t hist_quantile(const struct hist *h, double q);

#endif
