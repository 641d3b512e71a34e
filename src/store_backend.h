/*
 * store_backend: how a storage backend plugs into store.c. Private to the store modules (and
 * their tests); the rest of the daemon sees only simplepushd/store.h.
 *
 * A backend supplies one synchronous function, exec, and store.c supplies the asynchrony,
 * once for every backend:
 *   - loop-thread backends (n_workers == 0, the memory backend): exec runs inside
 *     store_submit(), and the completion is queued and delivered later from a uv_prepare_t
 *     callback (before the loop polls again, after the idle handles of the turn; no
 *     wake-up, so no syscall), so completions come in submission order and never inside
 *     store_submit();
 *   - worker backends (n_workers > 0, the memcached backend): store_submit() routes the
 *     request by a hash of its uaid to one of n_workers worker threads, each with its own
 *     queue, mutex and condition variable; the worker runs exec and pushes the request onto
 *     the store's locked completion queue, then wakes the loop with uv_async_send(). One uaid
 *     always goes to the same worker, so its requests execute and complete in order.
 * Workers never touch loop-owned objects: exec sees only the backend, the request and a
 * snapshot of the limits.
 */
#ifndef SIMPLEPUSHD_STORE_BACKEND_H
#define SIMPLEPUSHD_STORE_BACKEND_H

#include <stdint.h>
#include <uv.h>

#include "simplepushd/store.h"

struct store_backend_ops {
    const char *name; /* what store_name() returns */

    /*
     * Executes req synchronously and sets req->status and its results (req->updates is NULL
     * and req->reset false on entry). With no workers it runs on the loop thread and worker
     * is 0; otherwise on worker thread number "worker" (0 .. n_workers - 1), which runs one
     * request at a time, so per-worker state (a memcached_st) needs no lock. limits is a
     * snapshot valid during the call. A worker exec must return in bounded time (use I/O
     * timeouts): store_close() joins the workers and so waits for the calls in progress.
     */
    void (*exec)(void *backend, unsigned worker, const struct store_limits *limits,
                 struct store_req *req);

    /* Optional: housekeeping on the loop thread every tick_ms milliseconds (expiry sweeps). */
    void (*tick)(void *backend);
    uint64_t tick_ms;

    /* Frees the backend. Called on the loop thread once no exec can run any more. */
    void (*free)(void *backend);
};

/*
 * Makes a store around backend: n_workers == 0 runs exec on the loop thread, otherwise on
 * that many worker threads. On success the store owns backend (ops->free at the end of
 * store_close()); on failure it returns NULL and the caller still owns backend. Loop thread.
 */
struct store *store_create(uv_loop_t *loop, const struct store_backend_ops *ops, void *backend,
                           unsigned n_workers, const struct store_limits *limits);

/* The backend and the ops a store was made with. */
void *store_backend(const struct store *st);
const struct store_backend_ops *store_ops(const struct store *st);

/* Which worker (0 .. n_workers - 1) serves uaid; the same uaid always gets the same one. */
unsigned store_route(const uint8_t uaid[IDS_BYTES], unsigned n_workers);

/*
 * Test hooks of the memory backend (store_mem.c). Each returns -1 when st is not a memory
 * store, 0 otherwise.
 *
 * store_mem_set_clock() replaces the backend's clock (milliseconds of a monotonic clock,
 * uv_now() by default; NULL restores it), so that tests can expire records without sleeping.
 * store_mem_sweep() runs the expiry sweep over at most max_buckets buckets of the uaid table,
 * as the backend's timer does every second. store_mem_stats() counts what the backend holds
 * (walks the whole table: tests and debugging only).
 */
typedef uint64_t (*store_mem_clock_fn)(void *arg);

struct store_mem_stats {
    size_t uaids;      /* live uaid records */
    size_t dropped;    /* tombstones of dropped uaids */
    size_t registered; /* registered channels */
    size_t deleted;    /* tombstones of unregistered channels */
    size_t pending;    /* pending updates (some may have expired but not been swept yet) */
    size_t buckets;    /* size of the uaid table */
};

int store_mem_set_clock(struct store *st, store_mem_clock_fn now_ms, void *arg);
int store_mem_sweep(struct store *st, size_t max_buckets);
int store_mem_stats(const struct store *st, struct store_mem_stats *out);

/*
 * Test hooks of the memcached backend (store_mc.c). Each returns -1 when st is not a
 * memcached store, 0 otherwise; call them before submitting requests.
 *
 * store_mc_set_clock() replaces the wall clock the backend stamps expiries with
 * (milliseconds since the epoch; NULL restores the real one). It is called on the worker
 * threads, so now_ms must be thread-safe. memcached's own TTLs stay relative to real time.
 * store_mc_set_hook() installs a function that a worker calls, with the record's uaid,
 * between reading a record and writing it back, and between reading a record and reading
 * its data items, so that tests can make a conflicting write there.
 */
typedef void (*store_mc_hook_fn)(void *arg, unsigned worker, const uint8_t uaid[IDS_BYTES]);

int store_mc_set_clock(struct store *st, uint64_t (*now_ms)(void *arg), void *arg);
int store_mc_set_hook(struct store *st, store_mc_hook_fn hook, void *arg);

#endif
