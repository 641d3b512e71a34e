/*
 * store_mem: the in-process storage backend (the embedded default: one node, lost on
 * restart). Its exec runs on the loop thread; store.c makes it asynchronous.
 *
 * Data: a chained hash table uaid -> record (SipHash under a random key, since clients choose
 * uaids). A record is either live (its channels) or the tombstone of a uaid dropped by a hello
 * reset (no channels; every update to it answers STORE_GONE until it expires). A live record
 * holds an open-addressed table chid -> channel (linear probing, backward-shift deletion),
 * allocated at its first channel. A channel is:
 *   REGISTERED  registered by the device; counted against max_channels;
 *   DELETED     unregistered: a tombstone until "expires", updates answer STORE_GONE;
 *   UNLISTED    unknown to the device side (its registration expired) but holding a pending
 *               update that an app server sent; it exists only while the update is pending.
 * Any channel but DELETED may hold one pending update (version, data), until "expires".
 *
 * Time (milliseconds of a monotonic clock): a record lives until rec->expires, which every
 * operation on it pushes to at least now + timeout_live, and which is never earlier than the
 * expiry of anything it holds; a uaid is known while its live record lives. Expiry is lazy
 * (whatever a lookup finds expired is removed) plus a sweep that visits a bounded number of
 * buckets every second, so memory stays bounded without a pause proportional to the table.
 */
#include <stdlib.h>
#include <string.h>

#include "siphash.h"
#include "store_backend.h"

#define MEM_MIN_BUCKETS 64
#define MEM_MIN_CHANS   2 /* most devices hold one channel: 2 slots of 64 bytes, not 8 */
#define MEM_TICK_MS     1000
#define MEM_SWEEP_MIN   256 /* buckets per sweep, at least, */
#define MEM_SWEEP_SHIFT 5   /* and 1/32 of the table: a full pass every 32 s at most */

enum mem_chan_state {
    MEM_CHAN_FREE = 0, /* an empty slot */
    MEM_CHAN_REGISTERED,
    MEM_CHAN_DELETED,
    MEM_CHAN_UNLISTED,
};

struct mem_chan {
    uint8_t chid[IDS_BYTES];
    struct ids_spelling sp;
    uint8_t state;
    bool has_pending;
    int64_t version;
    char *data; /* NULL: the update carries none */
    size_t data_len;
    uint64_t expires; /* of the pending update, or of the DELETED tombstone */
};

struct mem_rec {
    struct mem_rec *next; /* bucket chain */
    uint8_t uaid[IDS_BYTES];
    bool dropped; /* the tombstone of a uaid dropped by a reset */
    uint64_t expires;
    size_t n_registered;
    size_t n_used; /* occupied slots of chans */
    size_t cap;    /* 0, or a power of two >= MEM_MIN_CHANS */
    struct mem_chan *chans;
};

struct mem {
    uv_loop_t *loop;
    store_mem_clock_fn clock; /* NULL: uv_now(loop) */
    void *clock_arg;
    uint64_t key[2];
    struct mem_rec **buckets;
    size_t n_buckets; /* a power of two */
    size_t n_recs;
    size_t cursor; /* the sweep's next bucket */
};

static const struct store_backend_ops mem_ops;

static uint64_t mem_now(const struct mem *m)
{
    return m->clock ? m->clock(m->clock_arg) : uv_now(m->loop);
}

static uint64_t mem_after(uint64_t now, uint64_t ms)
{
    return ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
}

static void mem_extend(struct mem_rec *rec, uint64_t until)
{
    if (rec->expires < until)
        rec->expires = until;
}

/* ---- channels of one record ---- */

static size_t mem_chan_home(const struct mem *m, const struct mem_rec *rec,
                            const uint8_t chid[IDS_BYTES])
{
    return (size_t)siphash16(m->key, chid) & (rec->cap - 1);
}

static void mem_chan_clear_pending(struct mem_chan *ch)
{
    free(ch->data);
    ch->data = NULL;
    ch->data_len = 0;
    ch->has_pending = false;
}

/* Rebuilds the channel table with capacity cap (0 frees it). Returns 0 or -1 (unchanged). */
static int mem_chan_resize(const struct mem *m, struct mem_rec *rec, size_t cap)
{
    struct mem_chan *chans = NULL;
    if (cap) {
        chans = calloc(cap, sizeof(*chans));
        if (!chans)
            return -1;
    }
    struct mem_chan *old = rec->chans;
    size_t old_cap = rec->cap;
    rec->chans = chans;
    rec->cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].state == MEM_CHAN_FREE)
            continue;
        size_t j = mem_chan_home(m, rec, old[i].chid);
        while (chans[j].state != MEM_CHAN_FREE)
            j = (j + 1) & (cap - 1);
        chans[j] = old[i];
    }
    free(old);
    return 0;
}

/* Shrinks an emptied channel table (failure to shrink is harmless). */
static void mem_chan_compact(const struct mem *m, struct mem_rec *rec)
{
    if (rec->cap && rec->n_used == 0)
        (void)mem_chan_resize(m, rec, 0);
    else if (rec->cap > MEM_MIN_CHANS && rec->n_used * 8 < rec->cap)
        (void)mem_chan_resize(m, rec, rec->cap / 2);
}

/* Empties slot i by backward shift. Slots after i may move into i; nothing else moves. */
static void mem_chan_remove_at(const struct mem *m, struct mem_rec *rec, size_t i)
{
    size_t mask = rec->cap - 1;
    if (rec->chans[i].state == MEM_CHAN_REGISTERED)
        rec->n_registered--;
    mem_chan_clear_pending(&rec->chans[i]);
    for (size_t j = (i + 1) & mask; rec->chans[j].state != MEM_CHAN_FREE; j = (j + 1) & mask) {
        size_t h = mem_chan_home(m, rec, rec->chans[j].chid);
        if (((j - h) & mask) >= ((j - i) & mask)) {
            rec->chans[i] = rec->chans[j];
            i = j;
        }
    }
    memset(&rec->chans[i], 0, sizeof(rec->chans[i]));
    rec->n_used--;
}

/*
 * Applies expiry to slot i: drops an expired pending update, removes an expired tombstone or
 * an UNLISTED channel left without update. Returns true when the slot was emptied.
 */
static bool mem_chan_expire(const struct mem *m, struct mem_rec *rec, size_t i, uint64_t now)
{
    struct mem_chan *ch = &rec->chans[i];
    if (ch->has_pending && now >= ch->expires)
        mem_chan_clear_pending(ch);
    if ((ch->state == MEM_CHAN_DELETED && now >= ch->expires) ||
        (ch->state == MEM_CHAN_UNLISTED && !ch->has_pending)) {
        mem_chan_remove_at(m, rec, i);
        return true;
    }
    return false;
}

/* Finds chid in rec, applying expiry to it; NULL when absent. */
static struct mem_chan *mem_chan_find(const struct mem *m, struct mem_rec *rec,
                                      const uint8_t chid[IDS_BYTES], uint64_t now)
{
    if (!rec->cap)
        return NULL;
    size_t i = mem_chan_home(m, rec, chid);
    while (rec->chans[i].state != MEM_CHAN_FREE) {
        if (memcmp(rec->chans[i].chid, chid, IDS_BYTES) == 0)
            return mem_chan_expire(m, rec, i, now) ? NULL : &rec->chans[i];
        i = (i + 1) & (rec->cap - 1);
    }
    return NULL;
}

/* Adds chid (absent) as an empty slot in state "state"; NULL on allocation failure. */
static struct mem_chan *mem_chan_add(const struct mem *m, struct mem_rec *rec,
                                     const uint8_t chid[IDS_BYTES], enum mem_chan_state state)
{
    if (!rec->cap || (rec->n_used + 1) * 10 > rec->cap * 7)
        if (mem_chan_resize(m, rec, rec->cap ? rec->cap * 2 : MEM_MIN_CHANS) != 0)
            return NULL;
    size_t i = mem_chan_home(m, rec, chid);
    while (rec->chans[i].state != MEM_CHAN_FREE)
        i = (i + 1) & (rec->cap - 1);
    struct mem_chan *ch = &rec->chans[i];
    memcpy(ch->chid, chid, IDS_BYTES);
    ch->state = (uint8_t)state;
    rec->n_used++;
    if (state == MEM_CHAN_REGISTERED)
        rec->n_registered++;
    return ch;
}

/* Applies expiry to every channel of rec. */
static void mem_rec_prune(const struct mem *m, struct mem_rec *rec, uint64_t now)
{
    /*
     * A removal may shift a later entry into slot i (so i is looked at again) or, at the wrap,
     * an entry already seen into a later slot (looked at twice: harmless). No entry is missed.
     */
    for (size_t i = 0; i < rec->cap;)
        if (!mem_chan_expire(m, rec, i, now))
            i++;
    mem_chan_compact(m, rec);
}

static void mem_rec_clear(struct mem_rec *rec)
{
    for (size_t i = 0; i < rec->cap; i++)
        free(rec->chans[i].data);
    free(rec->chans);
    rec->chans = NULL;
    rec->cap = rec->n_used = rec->n_registered = 0;
}

/* ---- the uaid table ---- */

static size_t mem_bucket(const struct mem *m, const uint8_t uaid[IDS_BYTES])
{
    return (size_t)siphash16(m->key, uaid) & (m->n_buckets - 1);
}

static void mem_rehash(struct mem *m, size_t n_buckets)
{
    struct mem_rec **buckets = calloc(n_buckets, sizeof(*buckets));
    if (!buckets)
        return; /* longer chains, still correct */
    struct mem_rec **old = m->buckets;
    size_t old_n = m->n_buckets;
    m->buckets = buckets;
    m->n_buckets = n_buckets;
    for (size_t i = 0; i < old_n; i++) {
        struct mem_rec *rec = old[i], *next;
        for (; rec; rec = next) {
            next = rec->next;
            size_t b = mem_bucket(m, rec->uaid);
            rec->next = buckets[b];
            buckets[b] = rec;
        }
    }
    free(old);
    m->cursor &= n_buckets - 1;
}

static void mem_rec_free(struct mem *m, struct mem_rec **link)
{
    struct mem_rec *rec = *link;
    *link = rec->next;
    mem_rec_clear(rec);
    free(rec);
    m->n_recs--;
}

/* Finds uaid's record (live or dropped), removing it when it has expired; NULL when absent. */
static struct mem_rec *mem_lookup(struct mem *m, const uint8_t uaid[IDS_BYTES], uint64_t now)
{
    struct mem_rec **link = &m->buckets[mem_bucket(m, uaid)];
    for (; *link; link = &(*link)->next) {
        if (memcmp((*link)->uaid, uaid, IDS_BYTES) != 0)
            continue;
        if (now >= (*link)->expires) {
            mem_rec_free(m, link);
            return NULL;
        }
        return *link;
    }
    return NULL;
}

/* Adds an empty live record for uaid (absent); NULL on allocation failure. */
static struct mem_rec *mem_insert(struct mem *m, const uint8_t uaid[IDS_BYTES])
{
    struct mem_rec *rec = calloc(1, sizeof(*rec));
    if (!rec)
        return NULL;
    memcpy(rec->uaid, uaid, IDS_BYTES);
    if (m->n_recs + 1 > m->n_buckets)
        mem_rehash(m, m->n_buckets * 2);
    size_t b = mem_bucket(m, uaid);
    rec->next = m->buckets[b];
    m->buckets[b] = rec;
    m->n_recs++;
    return rec;
}

/* The live record of uaid, made (or revived from a tombstone) if need be; NULL on failure. */
static struct mem_rec *mem_live(struct mem *m, const uint8_t uaid[IDS_BYTES], uint64_t now)
{
    struct mem_rec *rec = mem_lookup(m, uaid, now);
    if (!rec)
        return mem_insert(m, uaid);
    rec->dropped = false;
    return rec;
}

/* Drops a live record's data; it answers STORE_GONE until timeout_del from now. */
static void mem_drop(struct mem_rec *rec, uint64_t now, const struct store_limits *limits)
{
    mem_rec_clear(rec);
    rec->dropped = true;
    rec->expires = mem_after(now, limits->timeout_del_ms);
}

static void mem_sweep(struct mem *m, size_t max_buckets, uint64_t now)
{
    if (max_buckets > m->n_buckets)
        max_buckets = m->n_buckets;
    for (size_t n = 0; n < max_buckets; n++) {
        struct mem_rec **link = &m->buckets[m->cursor];
        while (*link) {
            if (now >= (*link)->expires) {
                mem_rec_free(m, link);
            } else {
                mem_rec_prune(m, *link, now);
                link = &(*link)->next;
            }
        }
        m->cursor = (m->cursor + 1) & (m->n_buckets - 1);
    }
    size_t fit = m->n_buckets;
    while (fit > MEM_MIN_BUCKETS && m->n_recs * 8 < fit)
        fit /= 2;
    if (fit < m->n_buckets)
        mem_rehash(m, fit);
}

/* ---- operations ---- */

static int mem_copy_data(const char *data, size_t len, char **out)
{
    *out = NULL;
    if (!data || !len)
        return 0;
    *out = malloc(len + 1);
    if (!*out)
        return -1;
    memcpy(*out, data, len);
    (*out)[len] = '\0';
    return 0;
}

static int mem_copy_update(const struct mem_chan *ch, struct store_update *u)
{
    memcpy(u->chid, ch->chid, IDS_BYTES);
    u->chid_sp = ch->sp;
    u->version = ch->version;
    u->data_len = ch->data ? ch->data_len : 0;
    return mem_copy_data(ch->data, ch->data_len, &u->data);
}

/* Fills req->updates with every pending update of rec (expired ones pruned first). */
static enum store_status mem_collect(const struct mem *m, struct mem_rec *rec, uint64_t now,
                                     struct store_req *req)
{
    mem_rec_prune(m, rec, now);
    size_t n = 0;
    for (size_t i = 0; i < rec->cap; i++)
        n += rec->chans[i].has_pending;
    if (!n)
        return STORE_OK;
    req->updates = calloc(n, sizeof(*req->updates));
    if (!req->updates)
        return STORE_ERROR;
    for (size_t i = 0; i < rec->cap; i++) {
        if (!rec->chans[i].has_pending)
            continue;
        if (mem_copy_update(&rec->chans[i], &req->updates[req->n_updates++]) != 0)
            return STORE_ERROR; /* store_req_free() frees what was copied */
    }
    return STORE_OK;
}

static enum store_status mem_hello(struct mem *m, const struct store_limits *limits,
                                   struct store_req *req, uint64_t now)
{
    bool reset = !req->uaid_valid;
    if (!reset) {
        struct mem_rec *old = mem_lookup(m, req->uaid, now);
        bool known = old && !old->dropped;
        if (req->n_channels > limits->max_channels) {
            if (known)
                mem_drop(old, now, limits);
            reset = true;
        } else if (!known && req->n_channels > 0) {
            reset = true;
        }
    }
    struct mem_rec *rec = mem_live(m, reset ? req->new_uaid : req->uaid, now);
    if (!rec)
        return STORE_ERROR;
    req->reset = reset;
    mem_extend(rec, mem_after(now, limits->timeout_live_ms));
    return mem_collect(m, rec, now, req);
}

static enum store_status mem_register(struct mem *m, const struct store_limits *limits,
                                      struct store_req *req, uint64_t now)
{
    struct mem_rec *rec = mem_live(m, req->uaid, now);
    if (!rec)
        return STORE_ERROR;
    mem_extend(rec, mem_after(now, limits->timeout_live_ms));
    struct mem_chan *ch = mem_chan_find(m, rec, req->chid, now);
    if (ch && ch->state == MEM_CHAN_REGISTERED) {
        ch->sp = req->chid_sp; /* replies use the latest spelling */
        return STORE_OK;
    }
    if (rec->n_registered >= limits->max_channels)
        return STORE_TOO_MANY;
    if (!ch) {
        ch = mem_chan_add(m, rec, req->chid, MEM_CHAN_REGISTERED);
        if (!ch)
            return STORE_ERROR;
    } else {
        /* A DELETED channel comes back; an UNLISTED one keeps its pending update. */
        ch->state = MEM_CHAN_REGISTERED;
        rec->n_registered++;
    }
    ch->sp = req->chid_sp;
    return STORE_OK;
}

static enum store_status mem_unregister(struct mem *m, const struct store_limits *limits,
                                        struct store_req *req, uint64_t now)
{
    struct mem_rec *rec = mem_lookup(m, req->uaid, now);
    if (rec && rec->dropped)
        return STORE_OK; /* every endpoint of the uaid is gone already */
    if (!rec) {
        rec = mem_insert(m, req->uaid);
        if (!rec)
            return STORE_ERROR;
    }
    mem_extend(rec, mem_after(now, limits->timeout_live_ms));
    struct mem_chan *ch = mem_chan_find(m, rec, req->chid, now);
    if (!ch) {
        /* Unknown (perhaps expired): remember it anyway, so that its endpoints answer 410. */
        ch = mem_chan_add(m, rec, req->chid, MEM_CHAN_DELETED);
        if (!ch)
            return STORE_ERROR;
        ch->sp = req->chid_sp;
    }
    if (ch->state == MEM_CHAN_REGISTERED)
        rec->n_registered--;
    ch->state = MEM_CHAN_DELETED;
    mem_chan_clear_pending(ch);
    ch->expires = mem_after(now, limits->timeout_del_ms);
    mem_extend(rec, ch->expires);
    return STORE_OK;
}

static enum store_status mem_ack(struct mem *m, const struct store_limits *limits,
                                 struct store_req *req, uint64_t now)
{
    struct mem_rec *rec = mem_lookup(m, req->uaid, now);
    if (!rec || rec->dropped)
        return STORE_OK;
    mem_extend(rec, mem_after(now, limits->timeout_live_ms));
    for (size_t i = 0; i < req->n_acks; i++) {
        struct mem_chan *ch = mem_chan_find(m, rec, req->acks[i].chid, now);
        if (!ch || !ch->has_pending || ch->version > req->acks[i].version)
            continue;
        mem_chan_clear_pending(ch);
        if (ch->state == MEM_CHAN_UNLISTED)
            mem_chan_remove_at(m, rec, (size_t)(ch - rec->chans));
    }
    mem_chan_compact(m, rec);
    return STORE_OK;
}

static enum store_status mem_update(struct mem *m, const struct store_limits *limits,
                                    struct store_req *req, uint64_t now)
{
    struct mem_rec *rec = mem_lookup(m, req->uaid, now);
    if (rec && rec->dropped)
        return STORE_GONE;
    struct mem_chan *ch = rec ? mem_chan_find(m, rec, req->chid, now) : NULL;
    if (ch && ch->state == MEM_CHAN_DELETED)
        return STORE_GONE;

    char *data = NULL;
    bool replace = !ch || !ch->has_pending || req->version >= ch->version;
    if (replace && mem_copy_data(req->data, req->data_len, &data) != 0)
        return STORE_ERROR;
    if (!rec)
        rec = mem_insert(m, req->uaid);
    if (rec && !ch) {
        /* Unknown channel (its registration expired): stored, as pushgo did. */
        ch = mem_chan_add(m, rec, req->chid, MEM_CHAN_UNLISTED);
        if (ch)
            ch->sp = req->chid_sp;
    }
    if (!rec || !ch) {
        free(data);
        return STORE_ERROR;
    }
    if (replace) {
        mem_chan_clear_pending(ch);
        ch->has_pending = true;
        ch->version = req->version;
        ch->data = data;
        ch->data_len = data ? req->data_len : 0;
        ch->expires = mem_after(now, limits->timeout_live_ms);
    }
    mem_extend(rec, mem_after(now, limits->timeout_live_ms)); /* >= the update's expiry */

    req->updates = calloc(1, sizeof(*req->updates));
    if (!req->updates)
        return STORE_ERROR;
    req->n_updates = 1;
    if (mem_copy_update(ch, &req->updates[0]) != 0)
        return STORE_ERROR;
    return STORE_OK;
}

static enum store_status mem_fetch(struct mem *m, const struct store_limits *limits,
                                   struct store_req *req, uint64_t now)
{
    struct mem_rec *rec = mem_lookup(m, req->uaid, now);
    if (!rec || rec->dropped)
        return STORE_OK;
    mem_extend(rec, mem_after(now, limits->timeout_live_ms));
    return mem_collect(m, rec, now, req);
}

static void mem_exec(void *backend, unsigned worker, const struct store_limits *limits,
                     struct store_req *req)
{
    struct mem *m = backend;
    uint64_t now = mem_now(m);
    switch (req->op) {
    case STORE_HELLO:
        req->status = mem_hello(m, limits, req, now);
        break;
    case STORE_REGISTER:
        req->status = mem_register(m, limits, req, now);
        break;
    case STORE_UNREGISTER:
        req->status = mem_unregister(m, limits, req, now);
        break;
    case STORE_ACK:
        req->status = mem_ack(m, limits, req, now);
        break;
    case STORE_UPDATE:
        req->status = mem_update(m, limits, req, now);
        break;
    case STORE_FETCH:
        req->status = mem_fetch(m, limits, req, now);
        break;
    case STORE_HOST_REFRESH:
    case STORE_HOST_CLEAR:
        req->status = STORE_OK; /* one node: no host records */
        break;
    default:
        req->status = STORE_ERROR;
        break;
    }
}

static void mem_tick(void *backend)
{
    struct mem *m = backend;
    size_t budget = m->n_buckets >> MEM_SWEEP_SHIFT;
    mem_sweep(m, budget > MEM_SWEEP_MIN ? budget : MEM_SWEEP_MIN, mem_now(m));
}

static void mem_free(void *backend)
{
    struct mem *m = backend;
    if (!m)
        return;
    for (size_t i = 0; m->buckets && i < m->n_buckets; i++)
        while (m->buckets[i])
            mem_rec_free(m, &m->buckets[i]);
    free(m->buckets);
    free(m);
}

static const struct store_backend_ops mem_ops = {
    .name = "memory",
    .exec = mem_exec,
    .tick = mem_tick,
    .tick_ms = MEM_TICK_MS,
    .free = mem_free,
};

struct store *store_mem_new(uv_loop_t *loop, const struct store_limits *limits)
{
    struct mem *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->loop = loop;
    siphash_random_key(m->key);
    m->n_buckets = MEM_MIN_BUCKETS;
    m->buckets = calloc(m->n_buckets, sizeof(*m->buckets));
    if (!m->buckets)
        goto fail;
    struct store *st = store_create(loop, &mem_ops, m, 0, limits);
    if (!st)
        goto fail;
    return st;

fail:
    mem_free(m);
    return NULL;
}

static struct mem *mem_of(const struct store *st)
{
    return st && store_ops(st) == &mem_ops ? store_backend(st) : NULL;
}

int store_mem_set_clock(struct store *st, store_mem_clock_fn now_ms, void *arg)
{
    struct mem *m = mem_of(st);
    if (!m)
        return -1;
    m->clock = now_ms;
    m->clock_arg = arg;
    return 0;
}

int store_mem_sweep(struct store *st, size_t max_buckets)
{
    struct mem *m = mem_of(st);
    if (!m)
        return -1;
    mem_sweep(m, max_buckets, mem_now(m));
    return 0;
}

int store_mem_stats(const struct store *st, struct store_mem_stats *out)
{
    const struct mem *m = mem_of(st);
    if (!m)
        return -1;
    memset(out, 0, sizeof(*out));
    out->buckets = m->n_buckets;
    for (size_t b = 0; b < m->n_buckets; b++) {
        for (const struct mem_rec *rec = m->buckets[b]; rec; rec = rec->next) {
            if (rec->dropped)
                out->dropped++;
            else
                out->uaids++;
            out->registered += rec->n_registered;
            for (size_t i = 0; i < rec->cap; i++) {
                out->deleted += rec->chans[i].state == MEM_CHAN_DELETED;
                out->pending += rec->chans[i].has_pending;
            }
        }
    }
    return 0;
}
