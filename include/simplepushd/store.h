/*
 * store: the storage interface. Requests are asynchronous: a caller fills a store_req,
 * submits it, and later receives its completion callback on the loop thread, never from
 * inside store_submit(). A backend implements one synchronous function, exec, which either
 * runs on the loop thread (the in-process backend) or on worker threads (memcached), so the
 * protocol code does not know or care which backend is behind it.
 *
 * Requests on one uaid complete in the order they were submitted.
 *
 * Data model (SPEC §6, §9): per uaid, a set of channels; per channel its state (registered,
 * deleted) and at most one pending update (version, optional data), the newest. All of it
 * expires: pending updates after timeout_live, deleted channels and dropped uaids after
 * timeout_del. A uaid's record lives timeout_live after the last operation on it (any op that
 * finds or makes it refreshes it), and never less long than anything it holds; expired
 * records are gone as if never written ("unknown").
 */
#ifndef SIMPLEPUSHD_STORE_H
#define SIMPLEPUSHD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "simplepushd/ids.h"

enum store_op {
    /*
     * The hello of a device. In: uaid_valid (the client named a valid uaid, in uaid),
     * n_channels (the length of its channelIDs), new_uaid (a fresh uaid the caller made).
     * The backend keeps uaid unless: !uaid_valid; or n_channels > max_channels (the old
     * uaid's data is dropped, and its endpoints answer 410 within timeout_del); or uaid is
     * unknown (no record at all) and n_channels > 0. Out: reset (true when new_uaid was taken
     * instead), updates (every pending update of the chosen uaid). The chosen uaid becomes
     * known (a record exists) and its lifetime is refreshed.
     */
    STORE_HELLO,
    /*
     * In: uaid, chid, chid_sp. Out: status STORE_OK or STORE_TOO_MANY (the uaid holds
     * max_channels registered channels and chid is not one of them). Idempotent; the latest
     * chid_sp is kept. A deleted channel becomes registered again. Makes the uaid's record if
     * it has none (a dropped uaid is taken again, empty).
     */
    STORE_REGISTER,
    /*
     * In: uaid, chid. Always STORE_OK (unless out of memory). Drops the pending update; the
     * channel stops counting against max_channels, and its endpoints answer 410 for
     * timeout_del, also when the channel was unknown. No effect on a dropped uaid.
     */
    STORE_UNREGISTER,
    /*
     * In: uaid, acks. Removes each pending update whose version <= the acked version; unknown
     * channels are ignored. Always STORE_OK.
     */
    STORE_ACK,
    /*
     * In: uaid, chid, chid_sp, version, data/data_len (owned by the request). Stores the
     * update unless a newer one is pending (then keeps the newer; an equal version replaces),
     * and a stored update expires timeout_live later. Empty data counts as none. Out: STORE_OK
     * with updates[0] = the channel's pending update after the edit; STORE_GONE when the
     * channel was unregistered or its uaid dropped (within timeout_del). An unknown uaid or
     * channel (e.g. expired) is accepted and stored, as pushgo did; such a channel does not
     * count against max_channels unless the device registers it.
     */
    STORE_UPDATE,
    /* In: uaid. Out: updates = every pending, unexpired update (none for an unknown uaid). */
    STORE_FETCH,
    /*
     * In: uaid, node, gen. Extends the host record when it names this connection (node and
     * gen) or there is none (then it is written); STORE_GONE when it names another
     * connection: the socket that asked is not the uaid's current one.
     */
    STORE_HOST_REFRESH,
    /* In: uaid, node, gen. Removes the host record if it still names this connection. */
    STORE_HOST_CLEAR,
};

enum store_status {
    STORE_OK = 0,
    STORE_TOO_MANY = -1,    /* register: the uaid holds max_channels channels */
    STORE_GONE = -2,        /* update: channel unregistered or uaid dropped */
    STORE_UNAVAILABLE = -3, /* the backend cannot be reached */
    STORE_ERROR = -4,       /* anything else */
};

/* One pending update. data is NULL when the update carries none. */
struct store_update {
    uint8_t chid[IDS_BYTES];
    struct ids_spelling chid_sp;
    int64_t version;
    char *data;
    size_t data_len;
};

struct store_ack {
    uint8_t chid[IDS_BYTES];
    int64_t version;
};

/* Longest node address in a host record ("host:port" of an internal listener). */
#define STORE_NODE_MAX 127

struct store_req;
typedef void (*store_done_cb)(struct store_req *req);

struct store_req {
    enum store_op op;
    uint8_t uaid[IDS_BYTES];

    /* STORE_HELLO */
    bool uaid_valid;
    size_t n_channels;
    uint8_t new_uaid[IDS_BYTES];
    bool reset; /* out */

    /* STORE_REGISTER, STORE_UNREGISTER, STORE_UPDATE */
    uint8_t chid[IDS_BYTES];
    struct ids_spelling chid_sp;
    int64_t version;
    char *data; /* owned; freed by store_req_free() */
    size_t data_len;

    /* STORE_ACK; owned */
    struct store_ack *acks;
    size_t n_acks;

    /*
     * The host record of the uaid (routing between nodes, SPEC §9): which node holds its
     * socket, as the address of that node's internal listener, and the connection's
     * generation. In (HELLO, HOST_REFRESH, HOST_CLEAR): node and gen of this connection; an
     * empty node leaves host records alone. HELLO writes the record for the chosen uaid
     * before it reads the pending updates, so an update stored after that read finds the
     * record naming this node. In (UPDATE): want_host. Out (HELLO: the record it replaced;
     * UPDATE with want_host: the record after the update was stored): host, host_gen; an
     * empty host means none. The in-process backend serves one node and keeps no host
     * records: host always comes back empty.
     */
    char node[STORE_NODE_MAX + 1];
    uint64_t gen;
    bool want_host;
    char host[STORE_NODE_MAX + 1];
    uint64_t host_gen;

    /* Results: status, and for HELLO, FETCH and UPDATE the pending updates (owned). */
    enum store_status status;
    struct store_update *updates;
    size_t n_updates;

    /*
     * Completion, called once on the loop thread. The callback owns the request (it frees it,
     * or submits it again: submitting clears the results first). A request without a done
     * callback is freed by the store.
     */
    store_done_cb done;
    uint64_t owner;        /* the caller's id of whoever waits (a connection id) */
    void *user;            /* the caller's, not owned: the completion callback releases it */
    uint64_t submitted_ns; /* set by store_submit(), for the latency observer */

    struct store_req *next; /* private to the store: its queue link */
};

/* Limits every backend applies. Durations in milliseconds. */
struct store_limits {
    size_t max_channels;
    uint64_t timeout_live_ms;
    uint64_t timeout_del_ms;
};

struct store;

/* Allocates a zeroed request of the given op. Returns NULL on allocation failure. */
struct store_req *store_req_new(enum store_op op);

/* Frees a request and everything it owns. Accepts NULL. */
void store_req_free(struct store_req *req);

/* Makes the in-process store (the embedded default) on loop. Returns NULL on failure. */
struct store *store_mem_new(uv_loop_t *loop, const struct store_limits *limits);

/*
 * The memcached backend (store_mc.c). Tuning; a zero field takes the default given.
 */
struct store_mc_options {
    unsigned workers;            /* worker threads, each with one connection per server; 4 */
    unsigned connect_timeout_ms; /* libmemcached CONNECT_TIMEOUT; 250 */
    unsigned poll_timeout_ms;    /* libmemcached POLL_TIMEOUT (each wait for a reply); 250 */
    unsigned retry_timeout_s;    /* libmemcached RETRY_TIMEOUT (a failed server's pause); 2 */
    unsigned breaker_failures;   /* consecutive unreachable calls that open a breaker; 3 */
    unsigned breaker_open_ms;    /* how long an open breaker fails fast before a probe; 3000 */
};

/*
 * Makes the memcached store on loop. servers is a comma-separated list of host[:port]
 * (port 11211 by default; an IPv6 address in brackets, "[::1]:11211"); keys are spread over
 * them by consistent (ketama) hashing, all keys of one uaid on one server. opt may be NULL
 * (every default). Connections are made lazily, so an unreachable server is not an error
 * here. Returns NULL on failure with a one-line reason in err (a bad server list, a
 * max_channels too large for memcached's item size, out of memory). Loop thread.
 */
struct store *store_mc_new(uv_loop_t *loop, const char *servers, const struct store_limits *limits,
                           const struct store_mc_options *opt, char *err, size_t errlen);

/*
 * The circuit breakers of a memcached store, one per server, shared by its workers. A
 * breaker opens after breaker_failures consecutive calls found its server unreachable (a
 * timeout, a refused or lost connection); while open, requests whose uaid lives on that
 * server complete at once with STORE_UNAVAILABLE and memcached is not called. After
 * breaker_open_ms one request goes through as a probe (half-open): success closes the
 * breaker, failure opens it again.
 */
enum store_mc_breaker {
    STORE_MC_CLOSED = 0,
    STORE_MC_HALF_OPEN = 1,
    STORE_MC_OPEN = 2,
};

/* The worst state over the store's breakers, or -1 when st is not a memcached store. Any thread. */
int store_mc_breaker_state(const struct store *st);

/*
 * Seconds an app server should wait before retrying while storage is unavailable: until the
 * open breaker that closes last half-opens, rounded up; 1 when none is open. 0 when st is not
 * a memcached store (use a default then). Any thread.
 */
unsigned store_mc_retry_after(const struct store *st);

/* Counters of a memcached store since it was made (for metrics and tests). */
struct store_mc_stats {
    uint64_t calls;         /* memcached calls made */
    uint64_t unreachable;   /* calls that found their server unreachable */
    uint64_t denied;        /* calls not made because the server's breaker was open */
    uint64_t breaker_opens; /* transitions to open (from closed or half-open) */
    uint64_t conflicts;     /* CAS conflicts, each followed by a retry */
    uint64_t corrupt;       /* values that failed validation (treated as absent) */
    uint64_t data_lost;     /* pending updates whose data item was gone (delivered without) */
};

/* Fills out. Returns 0, or -1 when st is not a memcached store. Any thread. */
int store_mc_stats(const struct store *st, struct store_mc_stats *out);

/*
 * Submits req; its done callback runs later on the loop thread (never inside this call),
 * with req->status set. Requests on one uaid complete in submission order (with the memory
 * backend, all requests do). Loop thread only.
 */
void store_submit(struct store *st, struct store_req *req);

/* Called on the loop thread for every completion, before its done callback. */
typedef void (*store_observer_fn)(enum store_op op, enum store_status status, uint64_t latency_ns);

/* Sets (or with NULL clears) the completion observer. Loop thread only. */
void store_set_observer(struct store *st, store_observer_fn fn);

/* Replaces the limits (reload); requests executed from then on see the new ones. Loop thread only.
 */
void store_set_limits(struct store *st, const struct store_limits *limits);

/* The backend's name ("memory", "memcached"). */
const char *store_name(const struct store *st);

/*
 * Closes the store: requests not yet completed complete with STORE_UNAVAILABLE and no results
 * (still asynchronously, once the loop has run the store's close callbacks), and so do
 * requests submitted from then on; worker threads are joined (this waits for the request each
 * worker is executing, if any); timers and handles are closed, and the store frees itself
 * after the last completion. The store keeps the loop alive while requests are outstanding,
 * and not otherwise. Loop thread only. Accepts NULL; a second call before the store is freed
 * does nothing.
 */
void store_close(struct store *st);

#endif
