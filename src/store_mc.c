/*
 * store_mc: the memcached storage backend (production: several nodes share one memcached
 * pool). Its exec runs on store.c's worker threads; each worker owns one memcached_st, cloned
 * from a configured prototype, so exec takes no lock but a breaker's.
 *
 * Schema (docs/storage.md gives the reasons):
 *   sp1:u:<uaid hex>                      the uaid record: a dropped flag, its expiry, and its
 *                                         channels sorted by chid (state, spelling, pending
 *                                         version and expiry, the pending data's nonce, length)
 *   sp1:d:<uaid hex>:<chid hex>:<nonce>   the data of one pending update; never rewritten
 * Every key of a uaid is stored "by key" with the record key as group key, so a uaid lives
 * on one server. The record is the one authority: every edit reads it with its CAS value,
 * edits it in memory and writes it back with cas (add when memcached has no value), retried
 * on conflict up to MC_CAS_TRIES times, so concurrent edits from several nodes never lose one
 * another. A data item is written under a fresh random nonce before the record names it, and
 * deleted (best effort) once the record no longer names it; a reader that finds a named item
 * gone reads the record again before it reports the data as lost.
 *
 * Semantics are the memory backend's (store_mem.c), state for state: REGISTERED channels
 * (counted against max_channels), DELETED tombstones, UNLISTED channels that exist only while
 * they hold a pending update; a dropped uaid is a record with the dropped flag and no
 * channels. Expiries are wall-clock milliseconds inside the value, shared by the nodes; an
 * expired record, channel or update is treated as absent and pruned at the next write.
 * memcached's TTL is garbage collection only: never earlier than the value's own expiry
 * (rounded up, plus one second), capped at 30 days. A value that fails validation is treated
 * as absent (and overwritten by the next write).
 *
 * Failure: a call that finds its server unreachable (store.h: the breakers) ends the request
 * with STORE_UNAVAILABLE at once. Any other failure is STORE_ERROR.
 *
 * The record's layout and codec are store_mc_rec.c's; the connections (one memcached_st per
 * worker) and the breakers are store_mc_pool.c's. This file holds the operations.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_backend.h"
#include "store_mc_pool.h"
#include "store_mc_rec.h"

#define MC_DEFAULT_WORKERS 4
#define MC_CAS_TRIES       16
#define MC_BACKOFF_US      50   /* first pause after a CAS conflict, doubled each time, */
#define MC_BACKOFF_MAX     5000 /* up to this; a random part of it is slept */
#define MC_COLLECT_TRIES   4
#define MC_TTL_MAX         2592000 /* 30 days: memcached reads a larger TTL as a Unix time */
#define MC_RECORD_MAX      1000000 /* bytes of a record: under memcached's 1 MiB item limit */
#define MC_MAX_CHANNELS    16384   /* max_channels that fit, with room left for tombstones */

/* A private result of mc_save(), beside enum store_status (all <= 0). */
enum { MC_CONFLICT = 1 };

/* A data item that the record stopped naming: deleted once the record is written. */
struct mc_junk {
    uint8_t chid[IDS_BYTES];
    uint64_t nonce;
};

struct mc {
    struct mc_pool pool;
    size_t record_max;

    uint64_t (*clock)(void *arg); /* NULL: the real wall clock */
    void *clock_arg;
    store_mc_hook_fn hook;
    void *hook_arg;

    _Atomic uint64_t calls, unreachable, denied, breaker_opens, conflicts, corrupt, data_lost;
};

/* One exec: a worker's connection, the time, and the uaid whose record it works on. */
struct mc_x {
    struct mc *m;
    unsigned worker;
    memcached_st *mc;
    const struct store_limits *limits;
    uint64_t now;
    uint8_t uaid[IDS_BYTES];
    char key[MC_KEY_MAX];
    size_t klen;
    unsigned server;
    struct mc_junk *junk;
    size_t n_junk, cap_junk;
    uint64_t rng; /* for the backoff's jitter */
};

static const struct store_backend_ops mc_ops;

static void mc_count(_Atomic uint64_t *counter)
{
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

static uint64_t mc_mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static uint64_t mc_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mc_after(uint64_t now, uint64_t ms)
{
    return ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
}

/* memcached's TTL for a value that expires at "expires": never earlier, at most 30 days. */
static time_t mc_ttl(uint64_t expires, uint64_t now)
{
    if (expires <= now)
        return 1;
    uint64_t s = (expires - now + 999) / 1000 + 1; /* rounded up, plus memcached's tick */
    return s > MC_TTL_MAX ? MC_TTL_MAX : (time_t)s;
}

/* A fresh random nonce for a data item (never 0, which means "no data"). */
static uint64_t mc_nonce(void)
{
    uint8_t b[IDS_BYTES];
    uint64_t x, y;
    ids_generate(b);
    memcpy(&x, b, sizeof(x));
    memcpy(&y, b + 8, sizeof(y));
    x ^= y;
    return x ? x : 1;
}

/* Asks x's server's breaker for one call; false: the call must not be made. */
static bool mc_begin(struct mc_x *x, bool *probe)
{
    if (!mc_pool_admit(&x->m->pool, x->server, mc_mono_ms(), probe)) {
        mc_count(&x->m->denied);
        return false;
    }
    mc_count(&x->m->calls);
    return true;
}

/* Ends a call begun with mc_begin(); returns true when the server was unreachable. */
static bool mc_end(struct mc_x *x, memcached_return_t rc, bool probe)
{
    bool down = mc_pool_down(rc);
    if (down)
        mc_count(&x->m->unreachable);
    if (mc_pool_report(&x->m->pool, x->server, down, probe, mc_mono_ms()))
        mc_count(&x->m->breaker_opens);
    return down;
}

/* Remembers ch's data item for deletion after the write, and clears its pending update. */
static void mc_chan_clear_pending(struct mc_x *x, struct mc_chan *ch)
{
    if (ch->pending && ch->nonce) {
        if (x->n_junk == x->cap_junk) {
            size_t cap = x->cap_junk ? x->cap_junk * 2 : 8;
            struct mc_junk *junk = realloc(x->junk, cap * sizeof(*junk));
            if (junk) {
                x->junk = junk;
                x->cap_junk = cap;
            }
        }
        /* Without room the item is left to its TTL: harmless. */
        if (x->n_junk < x->cap_junk) {
            memcpy(x->junk[x->n_junk].chid, ch->chid, IDS_BYTES);
            x->junk[x->n_junk++].nonce = ch->nonce;
        }
    }
    ch->pending = false;
    ch->version = 0;
    ch->expires = 0;
    ch->nonce = 0;
    ch->data_len = 0;
}

/* ---- memcached calls ---- */

/* Points x at uaid's record: its key (the group key of all the uaid's keys) and server. */
static void mc_x_target(struct mc_x *x, const uint8_t uaid[IDS_BYTES])
{
    memcpy(x->uaid, uaid, IDS_BYTES);
    x->klen = mc_rec_key(x->key, uaid);
    x->server = mc_pool_server(&x->m->pool, x->worker, x->key, x->klen);
}

/* Takes the value of one key as read: returns STORE_OK or STORE_ERROR. */
typedef int (*mc_take_fn)(struct mc_x *x, void *arg, const uint8_t *v, size_t len, uint64_t cas);

/*
 * Reads one key of x's uaid, on the uaid's server, and hands its value (if memcached holds
 * one) to take. Returns STORE_OK, STORE_UNAVAILABLE or STORE_ERROR.
 */
static int mc_get_one(struct mc_x *x, const char *key, size_t klen, mc_take_fn take, void *arg)
{
    memcached_result_st res;
    if (!memcached_result_create(x->mc, &res))
        return STORE_ERROR;
    bool probe;
    if (!mc_begin(x, &probe)) {
        memcached_result_free(&res);
        return STORE_UNAVAILABLE;
    }
    const char *keys[1] = {key};
    size_t lens[1] = {klen};
    int status = STORE_OK;
    bool taken = false;
    memcached_return_t rc = memcached_mget_by_key(x->mc, x->key, x->klen, keys, lens, 1);
    if (rc == MEMCACHED_SUCCESS) {
        while (memcached_fetch_result(x->mc, &res, &rc)) {
            if (taken)
                continue; /* one key asked: one value */
            taken = true;
            status = take(x, arg, (const uint8_t *)memcached_result_value(&res),
                          memcached_result_length(&res), memcached_result_cas(&res));
        }
        if (rc == MEMCACHED_END || rc == MEMCACHED_NOTFOUND)
            rc = MEMCACHED_SUCCESS;
    }
    memcached_result_free(&res);
    if (mc_end(x, rc, probe))
        return STORE_UNAVAILABLE;
    if (rc != MEMCACHED_SUCCESS)
        return STORE_ERROR;
    return status;
}

static int mc_take_rec(struct mc_x *x, void *arg, const uint8_t *v, size_t len, uint64_t cas)
{
    struct mc_rec *rec = arg;
    rec->found = true;
    rec->cas = cas;
    int d = mc_rec_decode(rec, v, len);
    if (d == -2)
        return STORE_ERROR;
    if (d == -1)
        mc_count(&x->m->corrupt);
    else
        rec->live = true;
    return STORE_OK;
}

/*
 * Reads x's record into rec: found and cas as memcached holds the value; live when the value
 * is a valid unexpired record, which is then pruned. Returns STORE_OK, STORE_UNAVAILABLE or
 * STORE_ERROR.
 */
static int mc_load(struct mc_x *x, struct mc_rec *rec)
{
    mc_rec_clear(rec);
    int status = mc_get_one(x, x->key, x->klen, mc_take_rec, rec);
    if (status != STORE_OK)
        return status;
    if (rec->live && x->now >= rec->expires) {
        rec->live = rec->dropped = false;
        rec->n = rec->n_registered = 0;
    }
    if (rec->live)
        mc_rec_prune(rec, x->now);
    return STORE_OK;
}

/*
 * Writes one key of x's uaid: cas over the value read (found, cas), or add when there was
 * none. Returns STORE_OK, MC_CONFLICT (someone wrote in between: read again),
 * STORE_UNAVAILABLE or STORE_ERROR.
 */
static int mc_put_cas(struct mc_x *x, const char *key, size_t klen, const void *v, size_t len,
                      time_t ttl, bool found, uint64_t cas)
{
    bool probe;
    if (!mc_begin(x, &probe))
        return STORE_UNAVAILABLE;
    memcached_return_t rc =
        found ? memcached_cas_by_key(x->mc, x->key, x->klen, key, klen, v, len, ttl, 0, cas)
              : memcached_add_by_key(x->mc, x->key, x->klen, key, klen, v, len, ttl, 0);
    if (mc_end(x, rc, probe))
        return STORE_UNAVAILABLE;
    if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_NOTFOUND) {
        mc_count(&x->m->conflicts);
        return MC_CONFLICT;
    }
    return memcached_success(rc) ? STORE_OK : STORE_ERROR;
}

/* Writes rec back over the value read. As mc_put_cas(). */
static int mc_save(struct mc_x *x, struct mc_rec *rec)
{
    if (mc_rec_fit(rec, x->m->record_max) != 0)
        return STORE_ERROR;
    size_t len;
    uint8_t *v = mc_rec_encode(rec, &len);
    if (!v)
        return STORE_ERROR;
    int status = mc_put_cas(x, x->key, x->klen, v, len, mc_ttl(rec->expires, x->now), rec->found,
                            rec->cas);
    free(v);
    return status;
}

/* Writes a data item (nonce fresh, so nothing else writes that key). */
static int mc_put_data(struct mc_x *x, const uint8_t chid[IDS_BYTES], uint64_t nonce,
                       const char *data, size_t len, uint64_t expires)
{
    char key[MC_KEY_MAX];
    size_t klen = mc_rec_data_key(key, x->uaid, chid, nonce), vlen;
    uint8_t *v = mc_rec_data_encode(nonce, data, len, &vlen);
    if (!v)
        return STORE_ERROR;
    bool probe;
    if (!mc_begin(x, &probe)) {
        free(v);
        return STORE_UNAVAILABLE;
    }
    memcached_return_t rc = memcached_set_by_key(x->mc, x->key, x->klen, key, klen, (const char *)v,
                                                 vlen, mc_ttl(expires, x->now), 0);
    free(v);
    if (mc_end(x, rc, probe))
        return STORE_UNAVAILABLE;
    return memcached_success(rc) ? STORE_OK : STORE_ERROR;
}

/* Deletes a data item; a missing one is fine. */
static int mc_del_data(struct mc_x *x, const uint8_t chid[IDS_BYTES], uint64_t nonce)
{
    char key[MC_KEY_MAX];
    size_t klen = mc_rec_data_key(key, x->uaid, chid, nonce);
    bool probe;
    if (!mc_begin(x, &probe))
        return STORE_UNAVAILABLE;
    memcached_return_t rc = memcached_delete_by_key(x->mc, x->key, x->klen, key, klen, 0);
    return mc_end(x, rc, probe) ? STORE_UNAVAILABLE : STORE_OK;
}

/* Deletes the data items the written record no longer names (best effort). */
static void mc_drop_junk(struct mc_x *x)
{
    for (size_t i = 0; i < x->n_junk; i++)
        if (mc_del_data(x, x->junk[i].chid, x->junk[i].nonce) == STORE_UNAVAILABLE)
            break; /* the rest expire with their TTL */
    x->n_junk = 0;
}

/* ---- reading pending updates ---- */

static void mc_free_updates(struct store_req *req)
{
    for (size_t i = 0; i < req->n_updates; i++)
        free(req->updates[i].data);
    free(req->updates);
    req->updates = NULL;
    req->n_updates = 0;
}

/* Stores a data item's value as update u's data when it is the one named by nonce. */
static bool mc_take_data(struct mc_x *x, struct store_update *u, uint64_t nonce, uint32_t data_len,
                         const uint8_t *v, size_t len, int *status)
{
    const uint8_t *data = mc_rec_data_check(v, len, nonce, data_len);
    if (!data) {
        mc_count(&x->m->corrupt);
        return false;
    }
    u->data = malloc(data_len + 1);
    if (!u->data) {
        *status = STORE_ERROR;
        return false;
    }
    memcpy(u->data, data, data_len);
    u->data[data_len] = '\0';
    u->data_len = data_len;
    return true;
}

/* One data item asked for by mc_collect_once(). */
struct mc_ask {
    char key[MC_KEY_MAX];
    size_t update; /* index in req->updates */
    uint32_t data_len;
};

/* Finds the ask whose key is k (results mostly come in order: start at *cursor). */
static struct mc_ask *mc_ask_find(struct mc_ask *asks, const size_t *lens, size_t n, size_t *cursor,
                                  const char *k, size_t kl)
{
    for (size_t j = 0; j < n; j++) {
        size_t a = (*cursor + j) % n;
        if (lens[a] == kl && memcmp(asks[a].key, k, kl) == 0) {
            *cursor = a + 1;
            return &asks[a];
        }
    }
    return NULL;
}

/*
 * Fills req->updates with the pending updates of rec (only chid's when only is not NULL),
 * reading their data items in one multi-get. (*missing)[i] is set to the nonce of update i
 * when its data item was not there (the update then has no data), to 0 otherwise.
 */
static int mc_collect_once(struct mc_x *x, struct mc_rec *rec, const uint8_t *only,
                           struct store_req *req, uint64_t **missing)
{
    mc_free_updates(req);
    free(*missing);
    *missing = NULL;
    if (!rec->live || rec->dropped)
        return STORE_OK;
    size_t n = 0, n_data = 0;
    for (size_t i = 0; i < rec->n; i++) {
        const struct mc_chan *ch = &rec->chans[i];
        if (ch->pending && (!only || memcmp(ch->chid, only, IDS_BYTES) == 0)) {
            n++;
            n_data += ch->nonce != 0;
        }
    }
    if (!n)
        return STORE_OK;
    req->updates = calloc(n, sizeof(*req->updates));
    *missing = calloc(n, sizeof(**missing));
    struct mc_ask *asks = n_data ? calloc(n_data, sizeof(*asks)) : NULL;
    const char **keys = n_data ? calloc(n_data, sizeof(*keys)) : NULL;
    size_t *lens = n_data ? calloc(n_data, sizeof(*lens)) : NULL;
    memcached_result_st res;
    bool have_res = false;
    int status = STORE_OK;
    if (!req->updates || !*missing || (n_data && (!asks || !keys || !lens))) {
        status = STORE_ERROR;
        goto done;
    }
    size_t k = 0;
    for (size_t i = 0; i < rec->n; i++) {
        const struct mc_chan *ch = &rec->chans[i];
        if (!ch->pending || (only && memcmp(ch->chid, only, IDS_BYTES) != 0))
            continue;
        struct store_update *u = &req->updates[req->n_updates];
        memcpy(u->chid, ch->chid, IDS_BYTES);
        u->chid_sp = ch->sp;
        u->version = ch->version;
        if (ch->nonce) {
            (*missing)[req->n_updates] = ch->nonce;
            lens[k] = mc_rec_data_key(asks[k].key, x->uaid, ch->chid, ch->nonce);
            keys[k] = asks[k].key;
            asks[k].update = req->n_updates;
            asks[k++].data_len = ch->data_len;
        }
        req->n_updates++;
    }
    if (!n_data)
        goto done;

    if (x->m->hook)
        x->m->hook(x->m->hook_arg, x->worker, x->uaid);
    bool probe;
    if (!memcached_result_create(x->mc, &res)) {
        status = STORE_ERROR;
        goto done;
    }
    have_res = true;
    if (!mc_begin(x, &probe)) {
        status = STORE_UNAVAILABLE;
        goto done;
    }
    memcached_return_t rc = memcached_mget_by_key(x->mc, x->key, x->klen, keys, lens, n_data);
    if (rc == MEMCACHED_SUCCESS) {
        size_t cursor = 0;
        while (memcached_fetch_result(x->mc, &res, &rc)) {
            struct mc_ask *a =
                mc_ask_find(asks, lens, n_data, &cursor, memcached_result_key_value(&res),
                            memcached_result_key_length(&res));
            if (!a || req->updates[a->update].data)
                continue;
            if (mc_take_data(x, &req->updates[a->update], (*missing)[a->update], a->data_len,
                             (const uint8_t *)memcached_result_value(&res),
                             memcached_result_length(&res), &status))
                (*missing)[a->update] = 0;
        }
        if (rc == MEMCACHED_END || rc == MEMCACHED_NOTFOUND)
            rc = MEMCACHED_SUCCESS;
    }
    if (mc_end(x, rc, probe))
        status = STORE_UNAVAILABLE;
    else if (rc != MEMCACHED_SUCCESS)
        status = STORE_ERROR;

done:
    if (have_res)
        memcached_result_free(&res);
    free(asks);
    free(keys);
    free(lens);
    return status;
}

/* Whether fresh still names every data item that collecting req found missing. */
static bool mc_still_named(struct mc_rec *fresh, const struct store_req *req,
                           const uint64_t *missing)
{
    for (size_t i = 0; i < req->n_updates; i++) {
        if (!missing[i])
            continue;
        const struct mc_chan *ch =
            fresh->live && !fresh->dropped ? mc_rec_find(fresh, req->updates[i].chid) : NULL;
        if (!ch || !ch->pending || ch->nonce != missing[i])
            return false;
    }
    return true;
}

/*
 * Fills req->updates with rec's pending updates and their data. A data item found missing
 * was either replaced or acked meanwhile (then the record is read again and collected anew,
 * up to "tries" times in all) or lost (the record still names it: the update goes without
 * data).
 */
static int mc_collect(struct mc_x *x, struct mc_rec *rec, const uint8_t *only, unsigned tries,
                      struct store_req *req)
{
    struct mc_rec tmp[2];
    memset(tmp, 0, sizeof(tmp));
    struct mc_rec *cur = rec;
    uint64_t *missing = NULL;
    int status;
    for (unsigned t = 1;; t++) {
        status = mc_collect_once(x, cur, only, req, &missing);
        if (status != STORE_OK)
            break;
        size_t n_missing = 0;
        for (size_t i = 0; i < req->n_updates; i++)
            n_missing += missing[i] != 0;
        if (!n_missing || t >= tries)
            break;
        struct mc_rec *next = &tmp[t % 2];
        status = mc_load(x, next);
        if (status != STORE_OK)
            break;
        if (mc_still_named(next, req, missing)) {
            atomic_fetch_add_explicit(&x->m->data_lost, n_missing, memory_order_relaxed);
            break;
        }
        cur = next;
    }
    free(missing);
    mc_rec_clear(&tmp[0]);
    mc_rec_clear(&tmp[1]);
    if (status != STORE_OK)
        mc_free_updates(req);
    return status;
}

/*
 * Pauses after the t-th conflict (t >= 1): a random time below 50 us << t, at most 5 ms, so
 * that writers racing for one record spread out instead of colliding again.
 */
static void mc_backoff(struct mc_x *x, unsigned t)
{
    uint64_t cap = t >= 7 ? MC_BACKOFF_MAX : (uint64_t)MC_BACKOFF_US << t;
    if (cap > MC_BACKOFF_MAX)
        cap = MC_BACKOFF_MAX;
    x->rng ^= x->rng << 13;
    x->rng ^= x->rng >> 7;
    x->rng ^= x->rng << 17;
    struct timespec ts = {0, (long)(x->rng % cap) * 1000};
    nanosleep(&ts, NULL);
}

/* ---- operations ---- */

/* Edits rec (as read) for req; sets *write when rec must be written back. */
typedef int (*mc_edit_fn)(struct mc_x *x, struct mc_rec *rec, struct store_req *req, bool *write);

/* Runs edit over x's record until its write lands (gets + cas, retried on conflict). */
static int mc_edit(struct mc_x *x, struct mc_rec *rec, mc_edit_fn edit, struct store_req *req)
{
    for (unsigned t = 0; t < MC_CAS_TRIES; t++) {
        x->n_junk = 0;
        int status = mc_load(x, rec);
        if (status != STORE_OK)
            return status;
        bool write = false;
        status = edit(x, rec, req, &write);
        if (!write)
            return status;
        if (x->m->hook)
            x->m->hook(x->m->hook_arg, x->worker, x->uaid);
        int saved = mc_save(x, rec);
        if (saved == MC_CONFLICT) {
            mc_backoff(x, t + 1);
            continue;
        }
        if (saved != STORE_OK)
            return saved;
        mc_drop_junk(x);
        return status;
    }
    return STORE_ERROR;
}

/* ---- host records ---- */

/* A host record as read: found and cas as memcached holds the value. */
struct mc_host {
    bool found;
    uint64_t cas;
    bool valid; /* the value decoded (an invalid one counts as none) */
    char node[STORE_NODE_MAX + 1];
    uint64_t gen;
};

static int mc_take_host(struct mc_x *x, void *arg, const uint8_t *v, size_t len, uint64_t cas)
{
    struct mc_host *h = arg;
    h->found = true;
    h->cas = cas;
    h->valid = !mc_rec_host_decode(v, len, h->node, &h->gen);
    if (!h->valid && len > 0) /* an empty value is a cleared record */
        mc_count(&x->m->corrupt);
    return STORE_OK;
}

/* Reads x's host record. Returns STORE_OK, STORE_UNAVAILABLE or STORE_ERROR. */
static int mc_host_load(struct mc_x *x, struct mc_host *h)
{
    char key[MC_KEY_MAX];
    size_t klen = mc_rec_host_key(key, x->uaid);
    memset(h, 0, sizeof(*h));
    return mc_get_one(x, key, klen, mc_take_host, h);
}

/*
 * Writes x's host record over h as read: (node, gen) for timeout_live, or with node NULL an
 * empty value that lives a second (memcached has no compare-and-delete). Returns STORE_OK,
 * MC_CONFLICT, STORE_UNAVAILABLE or STORE_ERROR.
 */
static int mc_host_save(struct mc_x *x, const struct mc_host *h, const char *node, uint64_t gen)
{
    char key[MC_KEY_MAX];
    size_t klen = mc_rec_host_key(key, x->uaid);
    uint8_t v[MC_HOSTREC_MAX];
    size_t vlen = 0;
    time_t ttl = 1;
    if (node) {
        vlen = mc_rec_host_encode(v, node, gen);
        if (!vlen)
            return STORE_ERROR;
        ttl = mc_ttl(mc_after(x->now, x->limits->timeout_live_ms), x->now);
    }
    return mc_put_cas(x, key, klen, v, vlen, ttl, h->found, h->cas);
}

enum mc_host_mode {
    MC_HOST_TAKE,    /* hello: write ours whatever is there; report what it replaced */
    MC_HOST_REFRESH, /* write ours only over ours or nothing; STORE_GONE otherwise */
    MC_HOST_CLEAR,   /* remove ours; leave anything else */
};

static bool mc_host_is(const struct mc_host *h, const struct store_req *req)
{
    return h->valid && h->gen == req->gen && !strcmp(h->node, req->node);
}

/* The host record edits, each one compare-and-swap with retries. */
static int mc_host_edit(struct mc_x *x, struct store_req *req, enum mc_host_mode mode)
{
    for (unsigned t = 0; t < MC_CAS_TRIES; t++) {
        struct mc_host h;
        int status = mc_host_load(x, &h);
        if (status != STORE_OK)
            return status;
        bool ours = mc_host_is(&h, req);
        const char *node = req->node;
        if (mode == MC_HOST_TAKE) {
            if (h.valid && !ours) {
                memcpy(req->host, h.node, sizeof(req->host));
                req->host_gen = h.gen;
            } else {
                req->host[0] = '\0';
                req->host_gen = 0;
            }
        } else if (mode == MC_HOST_REFRESH) {
            if (h.valid && !ours)
                return STORE_GONE;
        } else {
            if (!ours)
                return STORE_OK;
            node = NULL;
        }
        if (x->m->hook)
            x->m->hook(x->m->hook_arg, x->worker, x->uaid);
        status = mc_host_save(x, &h, node, req->gen);
        if (status != MC_CONFLICT)
            return status;
        mc_backoff(x, t + 1);
    }
    return STORE_ERROR;
}

static int mc_edit_hello(struct mc_x *x, struct mc_rec *rec, struct store_req *req, bool *write)
{
    const struct store_limits *l = x->limits;
    bool known = rec->live && !rec->dropped;
    if (req->n_channels > l->max_channels) {
        req->reset = true;
        if (known) {
            for (size_t i = 0; i < rec->n; i++)
                mc_chan_clear_pending(x, &rec->chans[i]);
            rec->n = rec->n_registered = 0;
            rec->dropped = true;
            rec->expires = mc_after(x->now, l->timeout_del_ms);
            *write = true;
        }
        return STORE_OK;
    }
    if (!known && req->n_channels > 0) {
        req->reset = true;
        return STORE_OK;
    }
    req->reset = false;
    bool made = mc_rec_live(rec);
    *write = mc_rec_extend(rec, mc_after(x->now, l->timeout_live_ms)) || made;
    return STORE_OK;
}

/* Makes the record live and refreshes it (the new uaid of a reset hello). */
static int mc_edit_live(struct mc_x *x, struct mc_rec *rec, struct store_req *req, bool *write)
{
    bool made = mc_rec_live(rec);
    *write = mc_rec_extend(rec, mc_after(x->now, x->limits->timeout_live_ms)) || made;
    return STORE_OK;
}

static int mc_hello(struct mc_x *x, struct store_req *req)
{
    struct mc_rec rec = {0};
    int status = STORE_OK;
    req->reset = true;
    if (req->uaid_valid)
        status = mc_edit(x, &rec, mc_edit_hello, req);
    if (status == STORE_OK && req->reset) {
        mc_x_target(x, req->new_uaid);
        status = mc_edit(x, &rec, mc_edit_live, req);
    }
    /* The host record before the updates are read: see store.h. */
    if (status == STORE_OK && req->node[0])
        status = mc_host_edit(x, req, MC_HOST_TAKE);
    if (status == STORE_OK)
        status = mc_collect(x, &rec, NULL, MC_COLLECT_TRIES, req);
    mc_rec_clear(&rec);
    if (status != STORE_OK)
        req->reset = false;
    return status;
}

static int mc_edit_register(struct mc_x *x, struct mc_rec *rec, struct store_req *req, bool *write)
{
    bool made = mc_rec_live(rec);
    bool changed = mc_rec_extend(rec, mc_after(x->now, x->limits->timeout_live_ms)) || made;
    bool found;
    size_t i = mc_rec_pos(rec, req->chid, &found);
    struct mc_chan *ch = found ? &rec->chans[i] : NULL;
    if (ch && ch->state == MC_REGISTERED) {
        ch->sp = req->chid_sp; /* replies use the latest spelling */
        *write = true;
        return STORE_OK;
    }
    if (rec->n_registered >= x->limits->max_channels) {
        *write = changed;
        return STORE_TOO_MANY;
    }
    if (!ch) {
        ch = mc_rec_insert(rec, i, req->chid, MC_REGISTERED);
        if (!ch)
            return STORE_ERROR;
    } else {
        /* A DELETED channel comes back; an UNLISTED one keeps its pending update. */
        if (ch->state == MC_DELETED)
            ch->expires = 0;
        ch->state = MC_REGISTERED;
        rec->n_registered++;
    }
    ch->sp = req->chid_sp;
    *write = true;
    return STORE_OK;
}

static int mc_edit_unregister(struct mc_x *x, struct mc_rec *rec, struct store_req *req,
                              bool *write)
{
    if (rec->live && rec->dropped)
        return STORE_OK; /* every endpoint of the uaid is gone already */
    mc_rec_live(rec);
    mc_rec_extend(rec, mc_after(x->now, x->limits->timeout_live_ms));
    bool found;
    size_t i = mc_rec_pos(rec, req->chid, &found);
    struct mc_chan *ch;
    if (found) {
        ch = &rec->chans[i];
    } else {
        /* Unknown (perhaps expired): remember it anyway, so that its endpoints answer 410. */
        ch = mc_rec_insert(rec, i, req->chid, MC_DELETED);
        if (!ch)
            return STORE_ERROR;
        ch->sp = req->chid_sp;
    }
    if (ch->state == MC_REGISTERED)
        rec->n_registered--;
    mc_chan_clear_pending(x, ch);
    ch->state = MC_DELETED;
    ch->expires = mc_after(x->now, x->limits->timeout_del_ms);
    mc_rec_extend(rec, ch->expires);
    *write = true;
    return STORE_OK;
}

static int mc_edit_ack(struct mc_x *x, struct mc_rec *rec, struct store_req *req, bool *write)
{
    if (!rec->live || rec->dropped)
        return STORE_OK; /* acks make no records */
    bool changed = mc_rec_extend(rec, mc_after(x->now, x->limits->timeout_live_ms));
    for (size_t k = 0; k < req->n_acks; k++) {
        bool found;
        size_t i = mc_rec_pos(rec, req->acks[k].chid, &found);
        struct mc_chan *ch = found ? &rec->chans[i] : NULL;
        if (!ch || !ch->pending || ch->version > req->acks[k].version)
            continue;
        mc_chan_clear_pending(x, ch);
        if (ch->state == MC_UNLISTED)
            mc_rec_remove(rec, i);
        changed = true;
    }
    *write = changed;
    return STORE_OK;
}

static int mc_edit_fetch(struct mc_x *x, struct mc_rec *rec, struct store_req *req, bool *write)
{
    if (rec->live && !rec->dropped)
        *write = mc_rec_extend(rec, mc_after(x->now, x->limits->timeout_live_ms));
    return STORE_OK;
}

static int mc_fetch(struct mc_x *x, struct store_req *req)
{
    struct mc_rec rec = {0};
    int status = mc_edit(x, &rec, mc_edit_fetch, req);
    if (status == STORE_OK)
        status = mc_collect(x, &rec, NULL, MC_COLLECT_TRIES, req);
    mc_rec_clear(&rec);
    return status;
}

/* The update's result when it replaced the pending one: its own data, no read needed. */
static int mc_update_result(const struct mc_chan *ch, struct store_req *req)
{
    req->updates = calloc(1, sizeof(*req->updates));
    if (!req->updates)
        return STORE_ERROR;
    req->n_updates = 1;
    struct store_update *u = &req->updates[0];
    memcpy(u->chid, ch->chid, IDS_BYTES);
    u->chid_sp = ch->sp;
    u->version = ch->version;
    if (ch->nonce) {
        u->data = malloc(req->data_len + 1);
        if (!u->data)
            return STORE_ERROR;
        memcpy(u->data, req->data, req->data_len);
        u->data[req->data_len] = '\0';
        u->data_len = req->data_len;
    }
    return STORE_OK;
}

/*
 * The update's loop is mc_edit()'s plus the data item, which is written (once) before the
 * record that names it, and deleted again if the record never came to name it.
 */
static int mc_update(struct mc_x *x, struct store_req *req)
{
    const struct store_limits *l = x->limits;
    bool has_data = req->data && req->data_len;
    uint64_t nonce = 0;
    bool written = false, named = false, replace = false;
    struct mc_rec rec = {0};
    struct mc_chan *ch = NULL;
    int status = STORE_ERROR;

    if (has_data && req->data_len > MC_DATA_MAX)
        return STORE_ERROR;
    for (unsigned t = 0; t < MC_CAS_TRIES; t++) {
        x->n_junk = 0;
        status = mc_load(x, &rec);
        if (status != STORE_OK)
            break;
        bool found;
        size_t i = mc_rec_pos(&rec, req->chid, &found);
        ch = found ? &rec.chans[i] : NULL;
        if ((rec.live && rec.dropped) || (ch && ch->state == MC_DELETED)) {
            status = STORE_GONE;
            break;
        }
        replace = !ch || !ch->pending || req->version >= ch->version;
        if (replace && has_data && !written) {
            nonce = mc_nonce();
            status = mc_put_data(x, req->chid, nonce, req->data, req->data_len,
                                 mc_after(x->now, l->timeout_live_ms));
            if (status != STORE_OK)
                break;
            written = true;
        }
        mc_rec_live(&rec);
        if (!ch) {
            /* Unknown channel (its registration expired): stored, as pushgo did. */
            ch = mc_rec_insert(&rec, i, req->chid, MC_UNLISTED);
            if (!ch) {
                status = STORE_ERROR;
                break;
            }
            ch->sp = req->chid_sp;
        }
        if (replace) {
            mc_chan_clear_pending(x, ch);
            ch->pending = true;
            ch->version = req->version;
            ch->nonce = has_data ? nonce : 0;
            ch->data_len = has_data ? (uint32_t)req->data_len : 0;
            ch->expires = mc_after(x->now, l->timeout_live_ms);
        }
        mc_rec_extend(&rec, mc_after(x->now, l->timeout_live_ms)); /* >= the update's expiry */
        if (x->m->hook)
            x->m->hook(x->m->hook_arg, x->worker, x->uaid);
        status = mc_save(x, &rec);
        if (status == MC_CONFLICT) {
            status = STORE_ERROR; /* if the tries run out */
            mc_backoff(x, t + 1);
            continue;
        }
        if (status != STORE_OK)
            break;
        named = replace && has_data;
        mc_drop_junk(x);
        break;
    }
    if (written && !named && status != STORE_UNAVAILABLE)
        mc_del_data(x, req->chid, nonce); /* otherwise it expires with its TTL */
    if (status == STORE_OK) {
        ch = mc_rec_find(&rec, req->chid);
        if (replace)
            status = mc_update_result(ch, req);
        else
            status = mc_collect(x, &rec, req->chid, 1, req);
    }
    if (status != STORE_OK)
        mc_free_updates(req);
    mc_rec_clear(&rec);
    if (status == STORE_OK && req->want_host) {
        /* Read after the write: a hello that missed this update has named its node by now. */
        struct mc_host h;
        if (mc_host_load(x, &h) == STORE_OK && h.valid) {
            memcpy(req->host, h.node, sizeof(req->host));
            req->host_gen = h.gen;
        }
    }
    return status;
}

static void mc_exec(void *backend, unsigned worker, const struct store_limits *limits,
                    struct store_req *req)
{
    struct mc *m = backend;
    struct mc_x x = {
        .m = m,
        .worker = worker,
        .mc = m->pool.conns[worker],
        .limits = limits,
        .now = m->clock ? m->clock(m->clock_arg) : mc_wall_ms(),
        .rng = uv_hrtime() ^ ((uint64_t)worker << 40) ^ (uintptr_t)req,
    };
    struct mc_rec rec = {0};
    int status;
    if (!x.rng)
        x.rng = 1;
    mc_x_target(&x, req->uaid);
    switch (req->op) {
    case STORE_HELLO:
        status = mc_hello(&x, req);
        break;
    case STORE_REGISTER:
        status = mc_edit(&x, &rec, mc_edit_register, req);
        break;
    case STORE_UNREGISTER:
        status = mc_edit(&x, &rec, mc_edit_unregister, req);
        break;
    case STORE_ACK:
        status = mc_edit(&x, &rec, mc_edit_ack, req);
        break;
    case STORE_UPDATE:
        status = mc_update(&x, req);
        break;
    case STORE_FETCH:
        status = mc_fetch(&x, req);
        break;
    case STORE_HOST_REFRESH:
        status = req->node[0] ? mc_host_edit(&x, req, MC_HOST_REFRESH) : STORE_OK;
        break;
    case STORE_HOST_CLEAR:
        status = req->node[0] ? mc_host_edit(&x, req, MC_HOST_CLEAR) : STORE_OK;
        break;
    default:
        status = STORE_ERROR;
        break;
    }
    mc_rec_clear(&rec);
    free(x.junk);
    req->status = (enum store_status)status;
}

/* ---- construction ---- */

static void mc_free(void *backend)
{
    struct mc *m = backend;
    if (!m)
        return;
    mc_pool_clear(&m->pool);
    free(m);
}

static void mc_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

struct store *store_mc_new(uv_loop_t *loop, const char *servers, const struct store_limits *limits,
                           const struct store_mc_options *opt, char *err, size_t errlen)
{
    struct mc *m = NULL;
    struct store *st;

    if (!loop || !limits) {
        mc_err(err, errlen, "bad arguments");
        return NULL;
    }
    if (!servers || !*servers) {
        mc_err(err, errlen, "no memcached server given");
        return NULL;
    }
    if (limits->max_channels > MC_MAX_CHANNELS) {
        if (err && errlen)
            snprintf(err, errlen,
                     "storage.max_channels %zu is too large for memcached (a uaid's record must "
                     "fit one item): at most %d",
                     limits->max_channels, MC_MAX_CHANNELS);
        return NULL;
    }
    m = calloc(1, sizeof(*m));
    if (!m) {
        mc_err(err, errlen, "out of memory");
        return NULL;
    }
    m->record_max = MC_RECORD_MAX;
    unsigned workers = opt && opt->workers ? opt->workers : MC_DEFAULT_WORKERS;
    if (mc_pool_init(&m->pool, servers, workers, opt, err, errlen) != 0)
        goto fail;
    st = store_create(loop, &mc_ops, m, workers, limits);
    if (!st) {
        mc_err(err, errlen, "cannot start the storage worker threads");
        goto fail;
    }
    return st;

fail:
    mc_free(m);
    return NULL;
}

static const struct store_backend_ops mc_ops = {
    .name = "memcached",
    .exec = mc_exec,
    .free = mc_free,
};

static struct mc *mc_of(const struct store *st)
{
    return st && store_ops(st) == &mc_ops ? store_backend(st) : NULL;
}

int store_mc_breaker_state(const struct store *st)
{
    struct mc *m = mc_of(st);
    return m ? mc_pool_worst(&m->pool) : -1;
}

unsigned store_mc_retry_after(const struct store *st)
{
    struct mc *m = mc_of(st);
    return m ? mc_pool_retry_after(&m->pool, mc_mono_ms()) : 0;
}

int store_mc_stats(const struct store *st, struct store_mc_stats *out)
{
    struct mc *m = mc_of(st);
    if (!m)
        return -1;
    out->calls = atomic_load_explicit(&m->calls, memory_order_relaxed);
    out->unreachable = atomic_load_explicit(&m->unreachable, memory_order_relaxed);
    out->denied = atomic_load_explicit(&m->denied, memory_order_relaxed);
    out->breaker_opens = atomic_load_explicit(&m->breaker_opens, memory_order_relaxed);
    out->conflicts = atomic_load_explicit(&m->conflicts, memory_order_relaxed);
    out->corrupt = atomic_load_explicit(&m->corrupt, memory_order_relaxed);
    out->data_lost = atomic_load_explicit(&m->data_lost, memory_order_relaxed);
    return 0;
}

int store_mc_set_clock(struct store *st, uint64_t (*now_ms)(void *arg), void *arg)
{
    struct mc *m = mc_of(st);
    if (!m)
        return -1;
    m->clock = now_ms;
    m->clock_arg = arg;
    return 0;
}

int store_mc_set_hook(struct store *st, store_mc_hook_fn hook, void *arg)
{
    struct mc *m = mc_of(st);
    if (!m)
        return -1;
    m->hook = hook;
    m->hook_arg = arg;
    return 0;
}
