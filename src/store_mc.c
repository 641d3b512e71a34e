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
 */
#include <ctype.h>
#include <inttypes.h>
#include <libmemcached/memcached.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_backend.h"

#define MC_DEFAULT_WORKERS    4
#define MC_DEFAULT_CONNECT_MS 250
#define MC_DEFAULT_POLL_MS    250
#define MC_DEFAULT_RETRY_S    2
#define MC_DEFAULT_FAILURES   3
#define MC_DEFAULT_OPEN_MS    3000
#define MC_DEFAULT_PORT       11211

#define MC_CAS_TRIES     16
#define MC_COLLECT_TRIES 4
#define MC_TTL_MAX       2592000 /* 30 days: memcached reads a larger TTL as a Unix time */
#define MC_RECORD_MAX    1000000 /* bytes of a record: under memcached's 1 MiB item limit */
#define MC_MAX_CHANNELS  16384   /* max_channels that fit, with room left for tombstones */
#define MC_DATA_MAX      (1u << 20)

#define MC_REC_MAGIC  "SPU1"
#define MC_DATA_MAGIC "SPD1"
#define MC_HDR_LEN    17 /* magic 4, flags 1, expires 8, channel count 4 */
#define MC_ENTRY_LEN                                                                               \
    50                     /* chid 16, state 1, flags 1, upper 4, version 8, expires 8,            \
                              nonce 8, data length 4 */
#define MC_DATA_HDR_LEN 12 /* magic 4, nonce 8 */
#define MC_REC_DROPPED  0x01
#define MC_CH_PENDING   0x01
#define MC_CH_DASHED    0x02

#define MC_KEY_MAX  96 /* "sp1:d:" + 32 + ":" + 32 + ":" + 16, and the NUL */
#define MC_HOST_MAX 253

/* Private results of the memcached primitives, beside enum store_status (all <= 0). */
enum { MC_MISS = 1, MC_CONFLICT = 2 };

enum mc_chan_state {
    MC_REGISTERED = 1,
    MC_DELETED = 2,
    MC_UNLISTED = 3,
};

struct mc_chan {
    uint8_t chid[IDS_BYTES];
    struct ids_spelling sp;
    uint8_t state;
    bool pending;
    int64_t version;
    uint64_t expires; /* of the pending update, or of the DELETED tombstone */
    uint64_t nonce;   /* names the pending update's data item; 0: it carries no data */
    uint32_t data_len;
};

/* One uaid record as read (and then edited) by one exec. */
struct mc_rec {
    bool found;   /* memcached holds a value under the key: cas is valid */
    uint64_t cas; /* of that value */
    bool live;    /* the value is a valid, unexpired record (live or dropped) */
    bool dropped;
    uint64_t expires;
    size_t n, cap, n_registered;
    struct mc_chan *chans; /* sorted by chid */
};

/* A data item that the record stopped naming: deleted once the record is written. */
struct mc_junk {
    uint8_t chid[IDS_BYTES];
    uint64_t nonce;
};

struct mc_breaker {
    int state; /* enum store_mc_breaker */
    unsigned failures;
    uint64_t opened_at; /* monotonic milliseconds */
};

struct mc {
    memcached_st **conns; /* one per worker */
    unsigned n_workers;
    unsigned n_servers;
    size_t record_max;

    uv_mutex_t lock; /* guards breakers */
    bool has_lock;
    struct mc_breaker *breakers; /* one per server, by position */
    unsigned breaker_failures;
    uint64_t breaker_open_ms;

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

/* ---- bytes and keys ---- */

static void mc_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void mc_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t mc_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t mc_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static char *mc_hex(char *out, const uint8_t *b, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        *out++ = digits[b[i] >> 4];
        *out++ = digits[b[i] & 15];
    }
    *out = '\0';
    return out;
}

static size_t mc_rec_key(char out[MC_KEY_MAX], const uint8_t uaid[IDS_BYTES])
{
    memcpy(out, "sp1:u:", 6);
    return (size_t)(mc_hex(out + 6, uaid, IDS_BYTES) - out);
}

static size_t mc_data_key(char out[MC_KEY_MAX], const uint8_t uaid[IDS_BYTES],
                          const uint8_t chid[IDS_BYTES], uint64_t nonce)
{
    memcpy(out, "sp1:d:", 6);
    char *p = mc_hex(out + 6, uaid, IDS_BYTES);
    *p++ = ':';
    p = mc_hex(p, chid, IDS_BYTES);
    return (size_t)(p - out) + (size_t)sprintf(p, ":%016" PRIx64, nonce);
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

/* ---- the circuit breakers ---- */

/* Whether a call to server may go out at "now"; *probe is set for the half-open probe. */
static bool mc_breaker_admit(struct mc *m, unsigned server, uint64_t now, bool *probe)
{
    struct mc_breaker *b = &m->breakers[server];
    bool ok = true;
    *probe = false;
    uv_mutex_lock(&m->lock);
    if (b->state == STORE_MC_HALF_OPEN) {
        ok = false; /* the probe is out */
    } else if (b->state == STORE_MC_OPEN) {
        if (now >= b->opened_at && now - b->opened_at >= m->breaker_open_ms) {
            b->state = STORE_MC_HALF_OPEN;
            *probe = true;
        } else {
            ok = false;
        }
    }
    uv_mutex_unlock(&m->lock);
    return ok;
}

/* Records the outcome of an admitted call: down when the server was unreachable. */
static void mc_breaker_report(struct mc *m, unsigned server, bool down, bool probe, uint64_t now)
{
    struct mc_breaker *b = &m->breakers[server];
    bool opened = false;
    uv_mutex_lock(&m->lock);
    if (down) {
        if (b->failures < UINT32_MAX)
            b->failures++;
        if (probe || (b->state == STORE_MC_CLOSED && b->failures >= m->breaker_failures)) {
            b->state = STORE_MC_OPEN;
            b->opened_at = now;
            opened = true;
        }
    } else {
        b->failures = 0;
        if (probe)
            b->state = STORE_MC_CLOSED;
    }
    uv_mutex_unlock(&m->lock);
    if (opened)
        mc_count(&m->breaker_opens);
}

static int mc_breaker_worst(struct mc *m)
{
    int worst = STORE_MC_CLOSED;
    uv_mutex_lock(&m->lock);
    for (unsigned i = 0; i < m->n_servers; i++)
        if (m->breakers[i].state > worst)
            worst = m->breakers[i].state;
    uv_mutex_unlock(&m->lock);
    return worst;
}

static unsigned mc_breaker_retry_after(struct mc *m, uint64_t now)
{
    uint64_t wait = 0;
    uv_mutex_lock(&m->lock);
    for (unsigned i = 0; i < m->n_servers; i++) {
        const struct mc_breaker *b = &m->breakers[i];
        uint64_t due = mc_after(b->opened_at, m->breaker_open_ms);
        if (b->state == STORE_MC_OPEN && due > now && due - now > wait)
            wait = due - now;
    }
    uv_mutex_unlock(&m->lock);
    uint64_t s = (wait + 999) / 1000;
    return s < 1 ? 1 : s > 86400 ? 86400 : (unsigned)s;
}

/* Whether rc means that the server could not be reached (or did not answer in time). */
static bool mc_down(memcached_return_t rc)
{
    switch (rc) {
    case MEMCACHED_FAILURE:
    case MEMCACHED_HOST_LOOKUP_FAILURE:
    case MEMCACHED_CONNECTION_FAILURE:
    case MEMCACHED_CONNECTION_BIND_FAILURE:
    case MEMCACHED_WRITE_FAILURE:
    case MEMCACHED_READ_FAILURE:
    case MEMCACHED_UNKNOWN_READ_FAILURE:
    case MEMCACHED_ERROR: /* also MEMCACHED_CONNECTION_SOCKET_CREATE_FAILURE */
    case MEMCACHED_PARTIAL_READ:
    case MEMCACHED_SOME_ERRORS:
    case MEMCACHED_NO_SERVERS:
    case MEMCACHED_ERRNO:
    case MEMCACHED_TIMEOUT:
    case MEMCACHED_SERVER_MARKED_DEAD:
    case MEMCACHED_SERVER_TEMPORARILY_DISABLED:
    case MEMCACHED_IN_PROGRESS:
        return true;
    default:
        return false;
    }
}

/* Asks x's server's breaker for one call; false: the call must not be made. */
static bool mc_begin(struct mc_x *x, bool *probe)
{
    if (!mc_breaker_admit(x->m, x->server, mc_mono_ms(), probe)) {
        mc_count(&x->m->denied);
        return false;
    }
    mc_count(&x->m->calls);
    return true;
}

/* Ends a call begun with mc_begin(); returns true when the server was unreachable. */
static bool mc_end(struct mc_x *x, memcached_return_t rc, bool probe)
{
    bool down = mc_down(rc);
    if (down)
        mc_count(&x->m->unreachable);
    mc_breaker_report(x->m, x->server, down, probe, mc_mono_ms());
    return down;
}

/* ---- records ---- */

static void mc_rec_clear(struct mc_rec *rec)
{
    free(rec->chans);
    memset(rec, 0, sizeof(*rec));
}

/* The position of chid in rec (or where it would go); *found says whether it is there. */
static size_t mc_chan_pos(const struct mc_rec *rec, const uint8_t chid[IDS_BYTES], bool *found)
{
    size_t lo = 0, hi = rec->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(rec->chans[mid].chid, chid, IDS_BYTES);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static struct mc_chan *mc_chan_find(struct mc_rec *rec, const uint8_t chid[IDS_BYTES])
{
    bool found;
    size_t i = mc_chan_pos(rec, chid, &found);
    return found ? &rec->chans[i] : NULL;
}

/* Inserts an empty channel chid (absent) at position i; NULL on allocation failure. */
static struct mc_chan *mc_chan_insert(struct mc_rec *rec, size_t i, const uint8_t chid[IDS_BYTES],
                                      enum mc_chan_state state)
{
    if (rec->n == rec->cap) {
        size_t cap = rec->cap ? rec->cap * 2 : 8;
        struct mc_chan *chans = realloc(rec->chans, cap * sizeof(*chans));
        if (!chans)
            return NULL;
        rec->chans = chans;
        rec->cap = cap;
    }
    memmove(&rec->chans[i + 1], &rec->chans[i], (rec->n - i) * sizeof(*rec->chans));
    rec->n++;
    struct mc_chan *ch = &rec->chans[i];
    memset(ch, 0, sizeof(*ch));
    memcpy(ch->chid, chid, IDS_BYTES);
    ch->state = (uint8_t)state;
    if (state == MC_REGISTERED)
        rec->n_registered++;
    return ch;
}

static void mc_chan_remove(struct mc_rec *rec, size_t i)
{
    if (rec->chans[i].state == MC_REGISTERED)
        rec->n_registered--;
    memmove(&rec->chans[i], &rec->chans[i + 1], (rec->n - i - 1) * sizeof(*rec->chans));
    rec->n--;
}

/* Remembers ch's data item for deletion after the write, and clears its pending update. */
static int mc_chan_clear_pending(struct mc_x *x, struct mc_chan *ch)
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
    return 0;
}

/* Applies expiry: drops expired updates, expired tombstones and UNLISTED channels left empty. */
static void mc_rec_prune(struct mc_rec *rec, uint64_t now)
{
    size_t j = 0;
    rec->n_registered = 0;
    for (size_t i = 0; i < rec->n; i++) {
        struct mc_chan ch = rec->chans[i];
        if (ch.pending && now >= ch.expires) {
            /* Its data item expires with it (same TTL). */
            ch.pending = false;
            ch.version = 0;
            ch.nonce = 0;
            ch.data_len = 0;
        }
        if ((ch.state == MC_DELETED && now >= ch.expires) ||
            (ch.state == MC_UNLISTED && !ch.pending))
            continue;
        rec->n_registered += ch.state == MC_REGISTERED;
        rec->chans[j++] = ch;
    }
    rec->n = j;
}

/*
 * Decodes value into rec (empty on entry). Returns 0, -1 when the value is not a valid record,
 * or -2 on allocation failure.
 */
static int mc_rec_decode(struct mc_rec *rec, const uint8_t *v, size_t len)
{
    if (len < MC_HDR_LEN || memcmp(v, MC_REC_MAGIC, 4) != 0)
        return -1;
    uint8_t flags = v[4];
    uint64_t expires = mc_get64(v + 5);
    uint32_t n = mc_get32(v + 13);
    if ((flags & ~MC_REC_DROPPED) || (len - MC_HDR_LEN) % MC_ENTRY_LEN != 0 ||
        (len - MC_HDR_LEN) / MC_ENTRY_LEN != n || ((flags & MC_REC_DROPPED) && n))
        return -1;
    if (n) {
        rec->chans = calloc(n, sizeof(*rec->chans));
        if (!rec->chans)
            return -2;
        rec->cap = n;
    }
    const uint8_t *p = v + MC_HDR_LEN;
    for (uint32_t i = 0; i < n; i++, p += MC_ENTRY_LEN) {
        struct mc_chan *ch = &rec->chans[i];
        memcpy(ch->chid, p, IDS_BYTES);
        ch->state = p[16];
        uint8_t cf = p[17];
        ch->sp.dashed = (cf & MC_CH_DASHED) != 0;
        ch->sp.upper = mc_get32(p + 18);
        ch->version = (int64_t)mc_get64(p + 22);
        ch->expires = mc_get64(p + 30);
        ch->nonce = mc_get64(p + 38);
        ch->data_len = mc_get32(p + 46);
        ch->pending = (cf & MC_CH_PENDING) != 0;
        bool bad = ch->state < MC_REGISTERED || ch->state > MC_UNLISTED ||
                   (cf & ~(MC_CH_PENDING | MC_CH_DASHED)) ||
                   (i > 0 && memcmp(rec->chans[i - 1].chid, ch->chid, IDS_BYTES) >= 0) ||
                   (ch->state == MC_DELETED && ch->pending) ||
                   (!ch->pending && (ch->nonce || ch->data_len || ch->version)) ||
                   (!ch->nonce != !ch->data_len) || ch->data_len > MC_DATA_MAX;
        if (bad) {
            free(rec->chans);
            rec->chans = NULL;
            rec->cap = 0;
            return -1;
        }
        rec->n_registered += ch->state == MC_REGISTERED;
    }
    rec->n = n;
    rec->dropped = (flags & MC_REC_DROPPED) != 0;
    rec->expires = expires;
    return 0;
}

/* Encodes rec into a new buffer of *len bytes; NULL on allocation failure. */
static uint8_t *mc_rec_encode(const struct mc_rec *rec, size_t *len)
{
    *len = MC_HDR_LEN + rec->n * MC_ENTRY_LEN;
    uint8_t *v = malloc(*len);
    if (!v)
        return NULL;
    memcpy(v, MC_REC_MAGIC, 4);
    v[4] = rec->dropped ? MC_REC_DROPPED : 0;
    mc_put64(v + 5, rec->expires);
    mc_put32(v + 13, (uint32_t)rec->n);
    uint8_t *p = v + MC_HDR_LEN;
    for (size_t i = 0; i < rec->n; i++, p += MC_ENTRY_LEN) {
        const struct mc_chan *ch = &rec->chans[i];
        memcpy(p, ch->chid, IDS_BYTES);
        p[16] = ch->state;
        p[17] = (uint8_t)((ch->pending ? MC_CH_PENDING : 0) | (ch->sp.dashed ? MC_CH_DASHED : 0));
        mc_put32(p + 18, ch->sp.upper);
        mc_put64(p + 22, (uint64_t)ch->version);
        mc_put64(p + 30, ch->expires);
        mc_put64(p + 38, ch->nonce);
        mc_put32(p + 46, ch->data_len);
    }
    return v;
}

static int mc_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * Makes rec fit in record_max bytes by shedding the DELETED tombstones that expire first
 * (their endpoints then accept updates again). Returns 0, or -1 when it cannot.
 */
static int mc_rec_fit(const struct mc *m, struct mc_rec *rec)
{
    size_t max_n = (m->record_max - MC_HDR_LEN) / MC_ENTRY_LEN;
    if (rec->n <= max_n)
        return 0;
    size_t excess = rec->n - max_n, n_del = 0;
    for (size_t i = 0; i < rec->n; i++)
        n_del += rec->chans[i].state == MC_DELETED;
    if (excess > n_del)
        return -1;
    uint64_t *exp = malloc(n_del * sizeof(*exp));
    if (!exp)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < rec->n; i++)
        if (rec->chans[i].state == MC_DELETED)
            exp[k++] = rec->chans[i].expires;
    qsort(exp, n_del, sizeof(*exp), mc_cmp_u64);
    uint64_t limit = exp[excess - 1];
    size_t below = 0;
    while (below < n_del && exp[below] < limit)
        below++;
    free(exp);
    size_t at_limit = excess - below, j = 0; /* tombstones expiring exactly at limit to shed */
    for (size_t i = 0; i < rec->n; i++) {
        const struct mc_chan *ch = &rec->chans[i];
        if (ch->state == MC_DELETED &&
            (ch->expires < limit || (ch->expires == limit && at_limit && at_limit--)))
            continue;
        rec->chans[j++] = *ch;
    }
    rec->n = j;
    return 0;
}

/* Makes rec live: a new empty record if there was none, a dropped one taken again. */
static bool mc_rec_live(struct mc_rec *rec)
{
    if (!rec->live) {
        rec->live = true;
        rec->dropped = false;
        rec->expires = 0;
        rec->n = rec->n_registered = 0;
        return true;
    }
    if (rec->dropped) {
        rec->dropped = false;
        return true;
    }
    return false;
}

static bool mc_rec_extend(struct mc_rec *rec, uint64_t until)
{
    if (rec->expires >= until)
        return false;
    rec->expires = until;
    return true;
}

/* ---- memcached calls ---- */

/* Points x at uaid's record: its key and the server that holds it. */
static void mc_x_target(struct mc_x *x, const uint8_t uaid[IDS_BYTES])
{
    memcpy(x->uaid, uaid, IDS_BYTES);
    x->klen = mc_rec_key(x->key, uaid);
    x->server = 0;
    if (x->m->n_servers < 2)
        return;
    memcached_return_t rc;
    const memcached_instance_st *inst = memcached_server_by_key(x->mc, x->key, x->klen, &rc);
    for (unsigned i = 0; inst && i < x->m->n_servers; i++) {
        if (memcached_server_instance_by_position(x->mc, i) == inst) {
            x->server = i;
            return;
        }
    }
}

/*
 * Reads x's record into rec: found and cas as memcached holds the value; live when the value
 * is a valid unexpired record, which is then pruned. Returns STORE_OK, STORE_UNAVAILABLE or
 * STORE_ERROR.
 */
static int mc_load(struct mc_x *x, struct mc_rec *rec)
{
    mc_rec_clear(rec);
    memcached_result_st res;
    if (!memcached_result_create(x->mc, &res))
        return STORE_ERROR;
    bool probe;
    if (!mc_begin(x, &probe)) {
        memcached_result_free(&res);
        return STORE_UNAVAILABLE;
    }
    const char *keys[1] = {x->key};
    size_t lens[1] = {x->klen};
    int status = STORE_OK;
    memcached_return_t rc = memcached_mget_by_key(x->mc, x->key, x->klen, keys, lens, 1);
    if (rc == MEMCACHED_SUCCESS) {
        while (memcached_fetch_result(x->mc, &res, &rc)) {
            if (rec->found)
                continue; /* one key asked: one value */
            rec->found = true;
            rec->cas = memcached_result_cas(&res);
            int d = mc_rec_decode(rec, (const uint8_t *)memcached_result_value(&res),
                                  memcached_result_length(&res));
            if (d == -2)
                status = STORE_ERROR;
            else if (d == -1)
                mc_count(&x->m->corrupt);
            else
                rec->live = true;
        }
        if (rc == MEMCACHED_END || rc == MEMCACHED_NOTFOUND)
            rc = MEMCACHED_SUCCESS;
    }
    memcached_result_free(&res);
    if (mc_end(x, rc, probe))
        return STORE_UNAVAILABLE;
    if (rc != MEMCACHED_SUCCESS)
        return STORE_ERROR;
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
 * Writes rec back: cas over the value read, or add when there was none. Returns STORE_OK,
 * MC_CONFLICT (someone wrote in between: read again), STORE_UNAVAILABLE or STORE_ERROR.
 */
static int mc_save(struct mc_x *x, struct mc_rec *rec)
{
    if (mc_rec_fit(x->m, rec) != 0)
        return STORE_ERROR;
    size_t len;
    uint8_t *v = mc_rec_encode(rec, &len);
    if (!v)
        return STORE_ERROR;
    bool probe;
    if (!mc_begin(x, &probe)) {
        free(v);
        return STORE_UNAVAILABLE;
    }
    time_t ttl = mc_ttl(rec->expires, x->now);
    memcached_return_t rc = rec->found
                                ? memcached_cas_by_key(x->mc, x->key, x->klen, x->key, x->klen,
                                                       (const char *)v, len, ttl, 0, rec->cas)
                                : memcached_add_by_key(x->mc, x->key, x->klen, x->key, x->klen,
                                                       (const char *)v, len, ttl, 0);
    free(v);
    if (mc_end(x, rc, probe))
        return STORE_UNAVAILABLE;
    if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_NOTFOUND) {
        mc_count(&x->m->conflicts);
        return MC_CONFLICT;
    }
    return memcached_success(rc) ? STORE_OK : STORE_ERROR;
}

/* Writes a data item (nonce fresh, so nothing else writes that key). */
static int mc_put_data(struct mc_x *x, const uint8_t chid[IDS_BYTES], uint64_t nonce,
                       const char *data, size_t len, uint64_t expires)
{
    char key[MC_KEY_MAX];
    size_t klen = mc_data_key(key, x->uaid, chid, nonce);
    uint8_t *v = malloc(MC_DATA_HDR_LEN + len);
    if (!v)
        return STORE_ERROR;
    memcpy(v, MC_DATA_MAGIC, 4);
    mc_put64(v + 4, nonce);
    memcpy(v + MC_DATA_HDR_LEN, data, len);
    bool probe;
    if (!mc_begin(x, &probe)) {
        free(v);
        return STORE_UNAVAILABLE;
    }
    memcached_return_t rc = memcached_set_by_key(x->mc, x->key, x->klen, key, klen, (const char *)v,
                                                 MC_DATA_HDR_LEN + len, mc_ttl(expires, x->now), 0);
    free(v);
    if (mc_end(x, rc, probe))
        return STORE_UNAVAILABLE;
    return memcached_success(rc) ? STORE_OK : STORE_ERROR;
}

/* Deletes a data item; a missing one is fine. */
static int mc_del_data(struct mc_x *x, const uint8_t chid[IDS_BYTES], uint64_t nonce)
{
    char key[MC_KEY_MAX];
    size_t klen = mc_data_key(key, x->uaid, chid, nonce);
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
    if (len != MC_DATA_HDR_LEN + (size_t)data_len || memcmp(v, MC_DATA_MAGIC, 4) != 0 ||
        mc_get64(v + 4) != nonce) {
        mc_count(&x->m->corrupt);
        return false;
    }
    u->data = malloc(data_len + 1);
    if (!u->data) {
        *status = STORE_ERROR;
        return false;
    }
    memcpy(u->data, v + MC_DATA_HDR_LEN, data_len);
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
            lens[k] = mc_data_key(asks[k].key, x->uaid, ch->chid, ch->nonce);
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
            fresh->live && !fresh->dropped ? mc_chan_find(fresh, req->updates[i].chid) : NULL;
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
        if (saved == MC_CONFLICT)
            continue;
        if (saved != STORE_OK)
            return saved;
        mc_drop_junk(x);
        return status;
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
    size_t i = mc_chan_pos(rec, req->chid, &found);
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
        ch = mc_chan_insert(rec, i, req->chid, MC_REGISTERED);
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
    size_t i = mc_chan_pos(rec, req->chid, &found);
    struct mc_chan *ch;
    if (found) {
        ch = &rec->chans[i];
    } else {
        /* Unknown (perhaps expired): remember it anyway, so that its endpoints answer 410. */
        ch = mc_chan_insert(rec, i, req->chid, MC_DELETED);
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
        size_t i = mc_chan_pos(rec, req->acks[k].chid, &found);
        struct mc_chan *ch = found ? &rec->chans[i] : NULL;
        if (!ch || !ch->pending || ch->version > req->acks[k].version)
            continue;
        mc_chan_clear_pending(x, ch);
        if (ch->state == MC_UNLISTED)
            mc_chan_remove(rec, i);
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
        size_t i = mc_chan_pos(&rec, req->chid, &found);
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
            ch = mc_chan_insert(&rec, i, req->chid, MC_UNLISTED);
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
        ch = mc_chan_find(&rec, req->chid);
        if (replace)
            status = mc_update_result(ch, req);
        else
            status = mc_collect(x, &rec, req->chid, 1, req);
    }
    if (status != STORE_OK)
        mc_free_updates(req);
    mc_rec_clear(&rec);
    return status;
}

static void mc_exec(void *backend, unsigned worker, const struct store_limits *limits,
                    struct store_req *req)
{
    struct mc *m = backend;
    struct mc_x x = {
        .m = m,
        .worker = worker,
        .mc = m->conns[worker],
        .limits = limits,
        .now = m->clock ? m->clock(m->clock_arg) : mc_wall_ms(),
    };
    struct mc_rec rec = {0};
    int status;
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
    for (unsigned i = 0; m->conns && i < m->n_workers; i++)
        memcached_free(m->conns[i]);
    free(m->conns);
    free(m->breakers);
    if (m->has_lock)
        uv_mutex_destroy(&m->lock);
    free(m);
}

static void mc_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void mc_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool mc_host_char(int c, bool bracketed)
{
    if (isalnum(c) || c == '.')
        return true;
    return bracketed ? c == ':' || c == '%' : c == '-' || c == '_';
}

/* Parses one "host[:port]" entry (len bytes at s) and adds it to mc. */
static int mc_add_server(memcached_st *mc, const char *s, size_t len, char *err, size_t errlen)
{
    const char *end = s + len, *hs = s, *he, *ps = NULL;
    bool bracketed = *s == '[';
    if (bracketed) {
        hs = s + 1;
        he = memchr(hs, ']', (size_t)(end - hs));
        if (!he) {
            mc_err(err, errlen, "bad memcached server \"%.*s\": missing ']'", (int)len, s);
            return -1;
        }
        if (he + 1 < end) {
            if (he[1] != ':') {
                mc_err(err, errlen, "bad memcached server \"%.*s\": expected ':' after ']'",
                       (int)len, s);
                return -1;
            }
            ps = he + 2;
        }
    } else {
        const char *colon = memchr(s, ':', len);
        he = colon ? colon : end;
        if (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1))) {
            mc_err(err, errlen,
                   "bad memcached server \"%.*s\": write an IPv6 address in brackets, "
                   "[addr]:port",
                   (int)len, s);
            return -1;
        }
        if (colon)
            ps = colon + 1;
    }
    size_t hlen = (size_t)(he - hs);
    if (hlen == 0 || hlen > MC_HOST_MAX) {
        mc_err(err, errlen, "bad memcached server \"%.*s\": %s host", (int)len, s,
               hlen ? "too long a" : "no");
        return -1;
    }
    for (const char *p = hs; p < he; p++) {
        if (!mc_host_char((unsigned char)*p, bracketed)) {
            mc_err(err, errlen, "bad memcached server \"%.*s\": bad character in host", (int)len,
                   s);
            return -1;
        }
    }
    long port = MC_DEFAULT_PORT;
    if (ps) {
        char buf[8];
        size_t plen = (size_t)(end - ps);
        char *stop;
        bool digits = plen > 0 && plen < sizeof(buf);
        for (size_t i = 0; digits && i < plen; i++)
            digits = isdigit((unsigned char)ps[i]);
        if (digits) {
            memcpy(buf, ps, plen);
            buf[plen] = '\0';
            port = strtol(buf, &stop, 10);
        }
        if (!digits || port < 1 || port > 65535) {
            mc_err(err, errlen, "bad memcached server \"%.*s\": port must be 1-65535", (int)len, s);
            return -1;
        }
    }
    char host[MC_HOST_MAX + 1];
    memcpy(host, hs, hlen);
    host[hlen] = '\0';
    for (uint32_t i = 0; i < memcached_server_count(mc); i++) {
        const memcached_instance_st *inst = memcached_server_instance_by_position(mc, i);
        if (!strcmp(memcached_server_name(inst), host) && memcached_server_port(inst) == port) {
            mc_err(err, errlen, "memcached server \"%.*s\" is listed twice", (int)len, s);
            return -1;
        }
    }
    memcached_return_t rc = memcached_server_add(mc, host, (in_port_t)port);
    if (rc != MEMCACHED_SUCCESS) {
        mc_err(err, errlen, "cannot add memcached server \"%.*s\": %s", (int)len, s,
               memcached_strerror(mc, rc));
        return -1;
    }
    return 0;
}

/* Adds every server of a comma-separated list to mc. */
static int mc_add_servers(memcached_st *mc, const char *list, char *err, size_t errlen)
{
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if (a == b) {
            mc_err(err, errlen, "bad memcached server list \"%s\": empty entry", list);
            return -1;
        }
        if (mc_add_server(mc, a, (size_t)(b - a), err, errlen) != 0)
            return -1;
        if (!*end)
            return 0;
        p = end + 1;
    }
}

static unsigned mc_or(unsigned v, unsigned dflt)
{
    return v ? v : dflt;
}

static int mc_configure(memcached_st *mc, const struct store_mc_options *o)
{
    unsigned poll_ms = mc_or(o ? o->poll_timeout_ms : 0, MC_DEFAULT_POLL_MS);
    const struct {
        memcached_behavior_t flag;
        uint64_t value;
    } behaviors[] = {
        {MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1},
        /* Ketama (MD5) consistent hashing: a server's loss moves only its own keys. */
        {MEMCACHED_BEHAVIOR_KETAMA, 1},
        {MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT,
         mc_or(o ? o->connect_timeout_ms : 0, MC_DEFAULT_CONNECT_MS)},
        {MEMCACHED_BEHAVIOR_POLL_TIMEOUT, poll_ms},
        {MEMCACHED_BEHAVIOR_RCV_TIMEOUT, (uint64_t)poll_ms * 1000},
        {MEMCACHED_BEHAVIOR_SND_TIMEOUT, (uint64_t)poll_ms * 1000},
        {MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, mc_or(o ? o->retry_timeout_s : 0, MC_DEFAULT_RETRY_S)},
        {MEMCACHED_BEHAVIOR_TCP_NODELAY, 1},
        {MEMCACHED_BEHAVIOR_TCP_KEEPALIVE, 1},
        {MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1},
        /* Replies are needed (CAS results), and NOREPLY with binary loops forever (pushgo). */
        {MEMCACHED_BEHAVIOR_NOREPLY, 0},
    };
    for (size_t i = 0; i < sizeof(behaviors) / sizeof(behaviors[0]); i++)
        if (memcached_behavior_set(mc, behaviors[i].flag, behaviors[i].value) != MEMCACHED_SUCCESS)
            return -1;
    return 0;
}

struct store *store_mc_new(uv_loop_t *loop, const char *servers, const struct store_limits *limits,
                           const struct store_mc_options *opt, char *err, size_t errlen)
{
    struct mc *m = NULL;
    memcached_st *proto = NULL;
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
        mc_err(err, errlen,
               "storage.max_channels %zu is too large for memcached (a uaid's record must fit "
               "one item): at most %d",
               limits->max_channels, MC_MAX_CHANNELS);
        return NULL;
    }
    m = calloc(1, sizeof(*m));
    if (!m)
        goto fail_oom;
    m->record_max = MC_RECORD_MAX;
    m->n_workers = mc_or(opt ? opt->workers : 0, MC_DEFAULT_WORKERS);
    m->breaker_failures = mc_or(opt ? opt->breaker_failures : 0, MC_DEFAULT_FAILURES);
    m->breaker_open_ms = mc_or(opt ? opt->breaker_open_ms : 0, MC_DEFAULT_OPEN_MS);
    proto = memcached_create(NULL);
    if (!proto)
        goto fail_oom;
    if (mc_configure(proto, opt) != 0) {
        mc_err(err, errlen, "cannot configure libmemcached");
        goto fail;
    }
    if (mc_add_servers(proto, servers, err, errlen) != 0)
        goto fail;
    m->n_servers = memcached_server_count(proto);
    m->breakers = calloc(m->n_servers, sizeof(*m->breakers));
    m->conns = calloc(m->n_workers, sizeof(*m->conns));
    if (!m->breakers || !m->conns)
        goto fail_oom;
    if (uv_mutex_init(&m->lock) != 0)
        goto fail_oom;
    m->has_lock = true;
    for (unsigned i = 0; i < m->n_workers; i++) {
        m->conns[i] = memcached_clone(NULL, proto);
        if (!m->conns[i])
            goto fail_oom;
    }
    memcached_free(proto);
    proto = NULL;
    st = store_create(loop, &mc_ops, m, m->n_workers, limits);
    if (!st) {
        mc_err(err, errlen, "cannot start the storage worker threads");
        goto fail;
    }
    return st;

fail_oom:
    mc_err(err, errlen, "out of memory");
fail:
    memcached_free(proto);
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
    return m ? mc_breaker_worst(m) : -1;
}

unsigned store_mc_retry_after(const struct store *st)
{
    struct mc *m = mc_of(st);
    return m ? mc_breaker_retry_after(m, mc_mono_ms()) : 0;
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
