/*
 * registry: two open-addressed hash tables, id -> connection and uaid -> session.
 *
 * Invariants of both tables: the capacity is a power of two (at least REG_MIN_CAP); an empty
 * slot is one whose key is 0 (ids are never 0) or whose session is NULL; every entry lies in
 * the probe run that starts at its home slot with no empty slot in between (kept by
 * backward-shift deletion); the load stays at or below 0.7 after every insertion.
 */
#include "simplepushd/registry.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "siphash.h"

#define REG_MIN_CAP 16

struct reg_id_slot {
    uint64_t id; /* 0: empty */
    void *conn;
};

struct reg_uaid_slot {
    uint8_t uaid[IDS_BYTES];
    void *session; /* NULL: empty */
};

struct registry {
    uint64_t last_id;
    uint64_t key[2]; /* SipHash key for uaids */

    struct reg_id_slot *ids;
    size_t ids_mask; /* capacity - 1 */
    size_t ids_count;

    struct reg_uaid_slot *uaids;
    size_t uaids_mask;
    size_t uaids_count;
};

/* The splitmix64 finaliser: a bijective 64-bit mix, good enough for ids we hand out. */
static uint64_t reg_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static size_t reg_id_home(const struct registry *reg, uint64_t id)
{
    return (size_t)reg_mix64(id) & reg->ids_mask;
}

static size_t reg_uaid_home(const struct registry *reg, const uint8_t uaid[IDS_BYTES], size_t mask)
{
    return (size_t)siphash16(reg->key, uaid) & mask;
}

/* True when an entry at slot j whose home is h may move back into the hole at slot i. */
static bool reg_may_shift(size_t i, size_t j, size_t h, size_t mask)
{
    /* The entry may move unless its home lies cyclically in (i, j]. */
    return ((j - h) & mask) >= ((j - i) & mask);
}

static bool reg_too_full(size_t count, size_t mask)
{
    return (count + 1) * 10 > (mask + 1) * 7;
}

static bool reg_too_empty(size_t count, size_t mask)
{
    return mask + 1 > REG_MIN_CAP && count * 8 < mask + 1;
}

/* Rebuilds the id table with capacity cap. Returns 0, or -1 (table unchanged) on failure. */
static int reg_ids_resize(struct registry *reg, size_t cap)
{
    struct reg_id_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -1;
    struct reg_id_slot *old = reg->ids;
    size_t old_cap = reg->ids_mask + 1;
    reg->ids = slots;
    reg->ids_mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].id)
            continue;
        size_t j = reg_id_home(reg, old[i].id);
        while (slots[j].id)
            j = (j + 1) & reg->ids_mask;
        slots[j] = old[i];
    }
    free(old);
    return 0;
}

static int reg_uaids_resize(struct registry *reg, size_t cap)
{
    struct reg_uaid_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -1;
    struct reg_uaid_slot *old = reg->uaids;
    size_t old_cap = reg->uaids_mask + 1;
    reg->uaids = slots;
    reg->uaids_mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].session)
            continue;
        size_t j = reg_uaid_home(reg, old[i].uaid, reg->uaids_mask);
        while (slots[j].session)
            j = (j + 1) & reg->uaids_mask;
        slots[j] = old[i];
    }
    free(old);
    return 0;
}

struct registry *registry_new(void)
{
    struct registry *reg = calloc(1, sizeof(*reg));
    if (!reg)
        goto fail;
    reg->ids = calloc(REG_MIN_CAP, sizeof(*reg->ids));
    reg->uaids = calloc(REG_MIN_CAP, sizeof(*reg->uaids));
    if (!reg->ids || !reg->uaids)
        goto fail;
    reg->ids_mask = REG_MIN_CAP - 1;
    reg->uaids_mask = REG_MIN_CAP - 1;
    siphash_random_key(reg->key);
    return reg;

fail:
    registry_free(reg);
    return NULL;
}

void registry_free(struct registry *reg)
{
    if (!reg)
        return;
    free(reg->ids);
    free(reg->uaids);
    free(reg);
}

uint64_t registry_next_id(struct registry *reg)
{
    if (++reg->last_id == 0)
        reg->last_id = 1;
    return reg->last_id;
}

/* Returns the slot holding id, or the empty slot that ends its probe run. */
static size_t reg_id_probe(const struct registry *reg, uint64_t id)
{
    size_t i = reg_id_home(reg, id);
    while (reg->ids[i].id && reg->ids[i].id != id)
        i = (i + 1) & reg->ids_mask;
    return i;
}

int registry_add(struct registry *reg, uint64_t id, void *conn)
{
    if (id == 0 || !conn)
        return -1;
    size_t i = reg_id_probe(reg, id);
    if (reg->ids[i].id)
        return -1;
    if (reg_too_full(reg->ids_count, reg->ids_mask)) {
        if (reg_ids_resize(reg, (reg->ids_mask + 1) * 2) != 0)
            return -1;
        i = reg_id_probe(reg, id);
    }
    reg->ids[i].id = id;
    reg->ids[i].conn = conn;
    reg->ids_count++;
    return 0;
}

void *registry_find(const struct registry *reg, uint64_t id)
{
    if (id == 0)
        return NULL;
    size_t i = reg_id_probe(reg, id);
    return reg->ids[i].id ? reg->ids[i].conn : NULL;
}

void registry_remove(struct registry *reg, uint64_t id)
{
    if (id == 0)
        return;
    size_t i = reg_id_probe(reg, id);
    if (!reg->ids[i].id)
        return;
    for (size_t j = (i + 1) & reg->ids_mask; reg->ids[j].id; j = (j + 1) & reg->ids_mask) {
        if (reg_may_shift(i, j, reg_id_home(reg, reg->ids[j].id), reg->ids_mask)) {
            reg->ids[i] = reg->ids[j];
            i = j;
        }
    }
    reg->ids[i].id = 0;
    reg->ids[i].conn = NULL;
    reg->ids_count--;
    if (reg_too_empty(reg->ids_count, reg->ids_mask))
        (void)reg_ids_resize(reg, (reg->ids_mask + 1) / 2); /* failure: stay larger */
}

size_t registry_count(const struct registry *reg)
{
    return reg->ids_count;
}

static size_t reg_uaid_probe(const struct registry *reg, const uint8_t uaid[IDS_BYTES])
{
    size_t i = reg_uaid_home(reg, uaid, reg->uaids_mask);
    while (reg->uaids[i].session && memcmp(reg->uaids[i].uaid, uaid, IDS_BYTES) != 0)
        i = (i + 1) & reg->uaids_mask;
    return i;
}

int registry_bind_uaid(struct registry *reg, const uint8_t uaid[IDS_BYTES], void *session,
                       void **previous)
{
    if (previous)
        *previous = NULL;
    if (!session)
        return -1;
    size_t i = reg_uaid_probe(reg, uaid);
    if (reg->uaids[i].session) {
        if (previous && reg->uaids[i].session != session)
            *previous = reg->uaids[i].session;
        reg->uaids[i].session = session;
        return 0;
    }
    if (reg_too_full(reg->uaids_count, reg->uaids_mask)) {
        if (reg_uaids_resize(reg, (reg->uaids_mask + 1) * 2) != 0)
            return -1;
        i = reg_uaid_probe(reg, uaid);
    }
    memcpy(reg->uaids[i].uaid, uaid, IDS_BYTES);
    reg->uaids[i].session = session;
    reg->uaids_count++;
    return 0;
}

void *registry_find_uaid(const struct registry *reg, const uint8_t uaid[IDS_BYTES])
{
    return reg->uaids[reg_uaid_probe(reg, uaid)].session;
}

size_t registry_uaid_count(const struct registry *reg)
{
    return reg->uaids_count;
}

size_t registry_foreach_uaid(const struct registry *reg, int (*fn)(void *session, void *arg),
                             void *arg)
{
    size_t visited = 0;
    for (size_t i = 0; i <= reg->uaids_mask; i++) {
        if (!reg->uaids[i].session)
            continue;
        visited++;
        if (fn(reg->uaids[i].session, arg))
            break;
    }
    return visited;
}

void registry_unbind_uaid(struct registry *reg, const uint8_t uaid[IDS_BYTES], const void *session)
{
    size_t i = reg_uaid_probe(reg, uaid);
    if (!reg->uaids[i].session || reg->uaids[i].session != session)
        return;
    for (size_t j = (i + 1) & reg->uaids_mask; reg->uaids[j].session;
         j = (j + 1) & reg->uaids_mask) {
        size_t h = reg_uaid_home(reg, reg->uaids[j].uaid, reg->uaids_mask);
        if (reg_may_shift(i, j, h, reg->uaids_mask)) {
            reg->uaids[i] = reg->uaids[j];
            i = j;
        }
    }
    memset(&reg->uaids[i], 0, sizeof(reg->uaids[i]));
    reg->uaids_count--;
    if (reg_too_empty(reg->uaids_count, reg->uaids_mask))
        (void)reg_uaids_resize(reg, (reg->uaids_mask + 1) / 2);
}
