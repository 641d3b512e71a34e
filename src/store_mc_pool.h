/*
 * store_mc_pool: the memcached backend's connections and circuit breakers. Private to
 * store_mc.c (and its tests).
 *
 * A pool parses the server list, configures libmemcached (binary protocol, ketama hashing,
 * short timeouts, no NOREPLY) and clones one memcached_st per worker: conns[i] belongs to
 * worker i alone. It keeps one circuit breaker per server (by position in the list), shared
 * by the workers under one mutex: closed -> open after "failures" consecutive unreachable
 * calls -> half-open after open_ms (one probe call goes out; the others are refused while it
 * is out) -> closed when the probe succeeds, open again when it fails.
 */
#ifndef SIMPLEPUSHD_STORE_MC_POOL_H
#define SIMPLEPUSHD_STORE_MC_POOL_H

#include <libmemcached/memcached.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "simplepushd/store.h"

#define MC_DEFAULT_CONNECT_MS 250
#define MC_DEFAULT_POLL_MS    250
#define MC_DEFAULT_RETRY_S    2
#define MC_DEFAULT_FAILURES   3
#define MC_DEFAULT_OPEN_MS    3000
#define MC_DEFAULT_PORT       11211

struct mc_breaker {
    int state; /* enum store_mc_breaker */
    unsigned failures;
    uint64_t opened_at; /* monotonic milliseconds */
};

struct mc_pool {
    memcached_st **conns; /* one per worker */
    unsigned n_conns;
    unsigned n_servers;
    uv_mutex_t lock; /* guards breakers */
    bool has_lock;
    struct mc_breaker *breakers; /* one per server */
    unsigned failures;           /* consecutive unreachable calls that open a breaker */
    uint64_t open_ms;
};

/*
 * Sets up pool (zeroed on entry) for servers, with n_conns connections and the options'
 * timeouts and breaker settings (opt may be NULL). Returns 0, or -1 with a one-line reason
 * in err (a bad server list, out of memory); mc_pool_clear() then frees what was made.
 */
int mc_pool_init(struct mc_pool *pool, const char *servers, unsigned n_conns,
                 const struct store_mc_options *opt, char *err, size_t errlen);

/* Frees everything the pool holds. Accepts a zeroed pool. */
void mc_pool_clear(struct mc_pool *pool);

/* The position of the server that holds key (hashed by connection conn's settings). */
unsigned mc_pool_server(struct mc_pool *pool, unsigned conn, const char *key, size_t klen);

/* Whether a call to server may go out at now (monotonic ms); *probe is set for the probe. */
bool mc_pool_admit(struct mc_pool *pool, unsigned server, uint64_t now, bool *probe);

/* Records the outcome of an admitted call (down: unreachable). Returns true when it opened
 * the breaker. */
bool mc_pool_report(struct mc_pool *pool, unsigned server, bool down, bool probe, uint64_t now);

/* The worst breaker state (enum store_mc_breaker). */
int mc_pool_worst(struct mc_pool *pool);

/* Seconds until the open breaker that closes last half-opens, rounded up; at least 1. */
unsigned mc_pool_retry_after(struct mc_pool *pool, uint64_t now);

/* Whether rc says that the server could not be reached or did not answer in time. */
bool mc_pool_down(memcached_return_t rc);

#endif
