/*
 * siphash: SipHash-2-4 of one 16-byte id under a secret 128-bit key, for hash tables whose
 * keys are chosen by clients (uaids, channel ids). With a random key, a client cannot pick ids
 * that collide in our tables, so lookups stay O(1) whatever it sends.
 *
 * Header-only (static inline) so that every table module can use it without a shared object.
 * Pure functions, callable from any thread; siphash_random_key() reads getrandom(2).
 */
#ifndef SIMPLEPUSHD_SIPHASH_H
#define SIMPLEPUSHD_SIPHASH_H

#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t siphash_rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t siphash_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#define SIPHASH_ROUND(v0, v1, v2, v3)                                                              \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = siphash_rotl(v1, 13);                                                                 \
        v1 ^= v0;                                                                                  \
        v0 = siphash_rotl(v0, 32);                                                                 \
        v2 += v3;                                                                                  \
        v3 = siphash_rotl(v3, 16);                                                                 \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = siphash_rotl(v3, 21);                                                                 \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = siphash_rotl(v1, 17);                                                                 \
        v1 ^= v2;                                                                                  \
        v2 = siphash_rotl(v2, 32);                                                                 \
    } while (0)

/* SipHash-2-4 of the 16 bytes at in, under key (k0, k1 as read little-endian). */
static inline uint64_t siphash16(const uint64_t key[2], const uint8_t in[16])
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ key[0];
    uint64_t v1 = 0x646f72616e646f6dULL ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ULL ^ key[0];
    uint64_t v3 = 0x7465646279746573ULL ^ key[1];
    const uint64_t m[3] = {siphash_le64(in), siphash_le64(in + 8), (uint64_t)16 << 56};

    for (int i = 0; i < 3; i++) {
        v3 ^= m[i];
        SIPHASH_ROUND(v0, v1, v2, v3);
        SIPHASH_ROUND(v0, v1, v2, v3);
        v0 ^= m[i];
    }
    v2 ^= 0xff;
    for (int i = 0; i < 4; i++)
        SIPHASH_ROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

/*
 * Fills key with random bytes from getrandom(2). Should the kernel not deliver them (very
 * early boot), falls back to a mix of the clock, the pid and an address: weaker, but the
 * tables still work.
 */
static inline void siphash_random_key(uint64_t key[2])
{
    if (getrandom(key, 2 * sizeof(uint64_t), GRND_NONBLOCK) == (ssize_t)(2 * sizeof(uint64_t)))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    key[0] =
        ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    key[1] = (uint64_t)(uintptr_t)key ^ 0x9e3779b97f4a7c15ULL;
    clock_gettime(CLOCK_REALTIME, &ts);
    key[1] ^= (uint64_t)ts.tv_nsec * 0xbf58476d1ce4e5b9ULL;
}

#endif
