/*
 * store_mc_rec: the memcached backend's uaid record, in memory and as bytes, and the keys and
 * data items that go with it. Private to store_mc.c (and its tests). Pure functions on
 * caller-owned memory: callable from any thread.
 *
 * Value layouts (all integers little-endian):
 *   record     "SPU1", flags u8 (1: dropped), expires u64 (wall-clock ms), count u32, then
 *              count entries of MC_ENTRY_LEN bytes sorted by chid: chid[16], state u8,
 *              flags u8 (1: pending, 2: dashed spelling), upper u32 (spelling), version i64,
 *              expires u64 (of the pending update or of the tombstone), nonce u64 (0: no
 *              data), data length u32
 *   data item  "SPD1", nonce u64, the data bytes
 * A decoded record is valid: chids strictly ascending, known states and flags, a DELETED
 * channel holds no update, a channel without update has no version, nonce or length, a nonce
 * comes with a non-zero length and the other way round, a dropped record has no channels.
 */
#ifndef SIMPLEPUSHD_STORE_MC_REC_H
#define SIMPLEPUSHD_STORE_MC_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "simplepushd/ids.h"
#include "simplepushd/store.h"

#define MC_HDR_LEN 17 /* magic 4, flags 1, expires 8, channel count 4 */
#define MC_ENTRY_LEN                                                                               \
    50 /* chid 16, state 1, flags 1, upper 4, version 8, expires 8, nonce 8, length 4 */
#define MC_DATA_HDR_LEN 12 /* magic 4, nonce 8 */
#define MC_DATA_MAX     (1u << 20)
#define MC_KEY_MAX      96 /* "sp1:d:" + 32 + ":" + 32 + ":" + 16, and the NUL */

enum mc_chan_state {
    MC_REGISTERED = 1, /* registered by the device; counted against max_channels */
    MC_DELETED = 2,    /* unregistered: a tombstone until "expires" */
    MC_UNLISTED = 3,   /* unknown to the device side, holding an update an app server sent */
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

/* One uaid record as read (and then edited) by one request. */
struct mc_rec {
    bool found;   /* memcached holds a value under the key: cas is valid */
    uint64_t cas; /* of that value */
    bool live;    /* the value is a valid, unexpired record (live or dropped) */
    bool dropped;
    uint64_t expires;
    size_t n, cap, n_registered;
    struct mc_chan *chans; /* sorted by chid */
};

/* The record's key, "sp1:u:<uaid hex>"; returns its length. */
size_t mc_rec_key(char out[MC_KEY_MAX], const uint8_t uaid[IDS_BYTES]);

/* A data item's key, "sp1:d:<uaid hex>:<chid hex>:<nonce, 16 hex>"; returns its length. */
size_t mc_rec_data_key(char out[MC_KEY_MAX], const uint8_t uaid[IDS_BYTES],
                       const uint8_t chid[IDS_BYTES], uint64_t nonce);

/* The host record's key, "sp1:h:<uaid hex>"; returns its length. */
size_t mc_rec_host_key(char out[MC_KEY_MAX], const uint8_t uaid[IDS_BYTES]);

/*
 * The host record's value: magic "SPH1", the connection generation (8, little-endian), then
 * the node's address (1..STORE_NODE_MAX printable ASCII bytes, no spaces). Encoding writes
 * at most MC_HOSTREC_MAX bytes into out and returns the length, or 0 when node is not valid.
 * Decoding returns 0 and fills node (NUL-terminated) and gen, or -1 for anything else.
 */
#define MC_HOSTREC_MAX (12 + STORE_NODE_MAX)
size_t mc_rec_host_encode(uint8_t out[MC_HOSTREC_MAX], const char *node, uint64_t gen);
int mc_rec_host_decode(const uint8_t *v, size_t len, char node[STORE_NODE_MAX + 1], uint64_t *gen);

/* Frees the channels and zeroes rec. */
void mc_rec_clear(struct mc_rec *rec);

/* The position of chid in rec, or where it would go; *found says whether it is there. */
size_t mc_rec_pos(const struct mc_rec *rec, const uint8_t chid[IDS_BYTES], bool *found);

/* chid's channel, or NULL. */
struct mc_chan *mc_rec_find(struct mc_rec *rec, const uint8_t chid[IDS_BYTES]);

/* Inserts an empty channel chid (absent) at position i; NULL on allocation failure. */
struct mc_chan *mc_rec_insert(struct mc_rec *rec, size_t i, const uint8_t chid[IDS_BYTES],
                              enum mc_chan_state state);

/* Removes the channel at position i. */
void mc_rec_remove(struct mc_rec *rec, size_t i);

/* Applies expiry at now: drops expired updates, expired tombstones, UNLISTED channels left
 * empty; recounts the registered channels. */
void mc_rec_prune(struct mc_rec *rec, uint64_t now);

/* Makes rec live: a new empty record if it was absent, a dropped one taken again. Returns
 * true when that changed it. */
bool mc_rec_live(struct mc_rec *rec);

/* Pushes rec's expiry to at least until; returns true when that changed it. */
bool mc_rec_extend(struct mc_rec *rec, uint64_t until);

/* Decodes a value into rec (empty on entry). Returns 0, -1 when the value is not a valid
 * record (rec stays empty), or -2 on allocation failure. */
int mc_rec_decode(struct mc_rec *rec, const uint8_t *v, size_t len);

/* Encodes rec into a new buffer of *len bytes; NULL on allocation failure. */
uint8_t *mc_rec_encode(const struct mc_rec *rec, size_t *len);

/* Makes rec encode in at most max bytes by shedding the DELETED tombstones that expire first.
 * Returns 0, or -1 when it cannot (or on allocation failure). */
int mc_rec_fit(struct mc_rec *rec, size_t max);

/* Encodes a data item into a new buffer of *out_len bytes; NULL on allocation failure. */
uint8_t *mc_rec_data_encode(uint64_t nonce, const char *data, size_t len, size_t *out_len);

/* The data of a data item value when it is the one named by nonce, with data_len bytes;
 * NULL when the value is anything else. */
const uint8_t *mc_rec_data_check(const uint8_t *v, size_t len, uint64_t nonce, uint32_t data_len);

#endif
