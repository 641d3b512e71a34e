/*
 * store_mc_rec: the memcached backend's uaid record and data items (store_mc_rec.h).
 */
#include "store_mc_rec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MC_REC_MAGIC   "SPU1"
#define MC_DATA_MAGIC  "SPD1"
#define MC_REC_DROPPED 0x01
#define MC_CH_PENDING  0x01
#define MC_CH_DASHED   0x02

static void mc_rec_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void mc_rec_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t mc_rec_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t mc_rec_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static char *mc_rec_hex(char *out, const uint8_t *b, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        *out++ = digits[b[i] >> 4];
        *out++ = digits[b[i] & 15];
    }
    *out = '\0';
    return out;
}

size_t mc_rec_key(char out[MC_KEY_MAX], const uint8_t uaid[IDS_BYTES])
{
    memcpy(out, "sp1:u:", 6);
    return (size_t)(mc_rec_hex(out + 6, uaid, IDS_BYTES) - out);
}

size_t mc_rec_data_key(char out[MC_KEY_MAX], const uint8_t uaid[IDS_BYTES],
                       const uint8_t chid[IDS_BYTES], uint64_t nonce)
{
    memcpy(out, "sp1:d:", 6);
    char *p = mc_rec_hex(out + 6, uaid, IDS_BYTES);
    *p++ = ':';
    p = mc_rec_hex(p, chid, IDS_BYTES);
    return (size_t)(p - out) + (size_t)sprintf(p, ":%016" PRIx64, nonce);
}

size_t mc_rec_host_key(char out[MC_KEY_MAX], const uint8_t uaid[IDS_BYTES])
{
    memcpy(out, "sp1:h:", 6);
    return (size_t)(mc_rec_hex(out + 6, uaid, IDS_BYTES) - out);
}

static bool mc_rec_node_valid(const char *node, size_t len)
{
    if (len == 0 || len > STORE_NODE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (node[i] <= ' ' || node[i] > '~')
            return false;
    return true;
}

size_t mc_rec_host_encode(uint8_t out[MC_HOSTREC_MAX], const char *node, uint64_t gen)
{
    size_t len = strnlen(node, STORE_NODE_MAX + 1);
    if (!mc_rec_node_valid(node, len))
        return 0;
    memcpy(out, "SPH1", 4);
    for (int i = 0; i < 8; i++)
        out[4 + i] = (uint8_t)(gen >> (8 * i));
    memcpy(out + 12, node, len);
    return 12 + len;
}

int mc_rec_host_decode(const uint8_t *v, size_t len, char node[STORE_NODE_MAX + 1], uint64_t *gen)
{
    if (len <= 12 || len > MC_HOSTREC_MAX || memcmp(v, "SPH1", 4) ||
        !mc_rec_node_valid((const char *)v + 12, len - 12))
        return -1;
    uint64_t g = 0;
    for (int i = 0; i < 8; i++)
        g |= (uint64_t)v[4 + i] << (8 * i);
    memcpy(node, v + 12, len - 12);
    node[len - 12] = '\0';
    *gen = g;
    return 0;
}

void mc_rec_clear(struct mc_rec *rec)
{
    free(rec->chans);
    memset(rec, 0, sizeof(*rec));
}

/* The position of chid in rec (or where it would go); *found says whether it is there. */
size_t mc_rec_pos(const struct mc_rec *rec, const uint8_t chid[IDS_BYTES], bool *found)
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

struct mc_chan *mc_rec_find(struct mc_rec *rec, const uint8_t chid[IDS_BYTES])
{
    bool found;
    size_t i = mc_rec_pos(rec, chid, &found);
    return found ? &rec->chans[i] : NULL;
}

/* Inserts an empty channel chid (absent) at position i; NULL on allocation failure. */
struct mc_chan *mc_rec_insert(struct mc_rec *rec, size_t i, const uint8_t chid[IDS_BYTES],
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

void mc_rec_remove(struct mc_rec *rec, size_t i)
{
    if (rec->chans[i].state == MC_REGISTERED)
        rec->n_registered--;
    memmove(&rec->chans[i], &rec->chans[i + 1], (rec->n - i - 1) * sizeof(*rec->chans));
    rec->n--;
}

/* Applies expiry: drops expired updates, expired tombstones and UNLISTED channels left empty. */
void mc_rec_prune(struct mc_rec *rec, uint64_t now)
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
int mc_rec_decode(struct mc_rec *rec, const uint8_t *v, size_t len)
{
    if (len < MC_HDR_LEN || memcmp(v, MC_REC_MAGIC, 4) != 0)
        return -1;
    uint8_t flags = v[4];
    uint64_t expires = mc_rec_get64(v + 5);
    uint32_t n = mc_rec_get32(v + 13);
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
        ch->sp.upper = mc_rec_get32(p + 18);
        ch->version = (int64_t)mc_rec_get64(p + 22);
        ch->expires = mc_rec_get64(p + 30);
        ch->nonce = mc_rec_get64(p + 38);
        ch->data_len = mc_rec_get32(p + 46);
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
uint8_t *mc_rec_encode(const struct mc_rec *rec, size_t *len)
{
    *len = MC_HDR_LEN + rec->n * MC_ENTRY_LEN;
    uint8_t *v = malloc(*len);
    if (!v)
        return NULL;
    memcpy(v, MC_REC_MAGIC, 4);
    v[4] = rec->dropped ? MC_REC_DROPPED : 0;
    mc_rec_put64(v + 5, rec->expires);
    mc_rec_put32(v + 13, (uint32_t)rec->n);
    uint8_t *p = v + MC_HDR_LEN;
    for (size_t i = 0; i < rec->n; i++, p += MC_ENTRY_LEN) {
        const struct mc_chan *ch = &rec->chans[i];
        memcpy(p, ch->chid, IDS_BYTES);
        p[16] = ch->state;
        p[17] = (uint8_t)((ch->pending ? MC_CH_PENDING : 0) | (ch->sp.dashed ? MC_CH_DASHED : 0));
        mc_rec_put32(p + 18, ch->sp.upper);
        mc_rec_put64(p + 22, (uint64_t)ch->version);
        mc_rec_put64(p + 30, ch->expires);
        mc_rec_put64(p + 38, ch->nonce);
        mc_rec_put32(p + 46, ch->data_len);
    }
    return v;
}

static int mc_rec_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * Makes rec fit in max bytes by shedding the DELETED tombstones that expire first
 * (their endpoints then accept updates again). Returns 0, or -1 when it cannot.
 */
int mc_rec_fit(struct mc_rec *rec, size_t max)
{
    size_t max_n = (max - MC_HDR_LEN) / MC_ENTRY_LEN;
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
    qsort(exp, n_del, sizeof(*exp), mc_rec_cmp_u64);
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
bool mc_rec_live(struct mc_rec *rec)
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

bool mc_rec_extend(struct mc_rec *rec, uint64_t until)
{
    if (rec->expires >= until)
        return false;
    rec->expires = until;
    return true;
}

uint8_t *mc_rec_data_encode(uint64_t nonce, const char *data, size_t len, size_t *out_len)
{
    uint8_t *v = malloc(MC_DATA_HDR_LEN + len);
    if (!v)
        return NULL;
    memcpy(v, MC_DATA_MAGIC, 4);
    mc_rec_put64(v + 4, nonce);
    if (len)
        memcpy(v + MC_DATA_HDR_LEN, data, len);
    *out_len = MC_DATA_HDR_LEN + len;
    return v;
}

const uint8_t *mc_rec_data_check(const uint8_t *v, size_t len, uint64_t nonce, uint32_t data_len)
{
    if (len != MC_DATA_HDR_LEN + (size_t)data_len || memcmp(v, MC_DATA_MAGIC, 4) != 0 ||
        mc_rec_get64(v + 4) != nonce)
        return NULL;
    return v + MC_DATA_HDR_LEN;
}
