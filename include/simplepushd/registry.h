/*
 * registry: this node's live connections, found in O(1).
 *
 * Two maps, both open-addressed hash tables that grow by doubling:
 *   id   -> connection   every live connection (devices and HTTP transactions) by its
 *                        64-bit id; store completions find their connection here, since the
 *                        connection may have closed meanwhile.
 *   uaid -> session      the device session that holds a uaid on this node.
 * Values are opaque pointers owned by the caller. Loop thread only.
 *
 * Both tables use linear probing over a power-of-two array, grow at a load above 0.7, shrink
 * below 1/8, and delete by backward shift (no tombstones, no per-entry allocation). Ids are
 * hashed with the splitmix64 finaliser; uaids, which clients choose, with SipHash-2-4 under a
 * random key, so that no client can force collisions.
 */
#ifndef SIMPLEPUSHD_REGISTRY_H
#define SIMPLEPUSHD_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "simplepushd/ids.h"

struct registry;

/* Returns NULL on allocation failure. */
struct registry *registry_new(void);

/* Frees the tables (not the values). Accepts NULL. */
void registry_free(struct registry *reg);

/* Hands out the next connection id (never 0, never reused). */
uint64_t registry_next_id(struct registry *reg);

/*
 * Maps id -> conn. Returns 0, or -1 on allocation failure, when id is 0, conn is NULL, or id is
 * mapped already (the existing mapping is kept).
 */
int registry_add(struct registry *reg, uint64_t id, void *conn);

/* Returns the connection of id, or NULL. */
void *registry_find(const struct registry *reg, uint64_t id);

/* Unmaps id (no-op when not mapped). */
void registry_remove(struct registry *reg, uint64_t id);

/* Number of ids mapped. */
size_t registry_count(const struct registry *reg);

/* Number of uaids bound. */
size_t registry_uaid_count(const struct registry *reg);

/*
 * Binds uaid to session. Returns 0 and sets *previous (when previous is not NULL) to the
 * session that held the uaid before, so the caller can close it: NULL if none, and NULL when
 * session itself held it. Returns -1 on allocation failure or when session is NULL; the
 * binding is then unchanged.
 */
int registry_bind_uaid(struct registry *reg, const uint8_t uaid[IDS_BYTES], void *session,
                       void **previous);

/* Returns the session holding uaid, or NULL. */
void *registry_find_uaid(const struct registry *reg, const uint8_t uaid[IDS_BYTES]);

/*
 * Calls fn(session, arg) for each session bound to a uaid, in table order, until fn returns
 * non-zero. fn must not bind or unbind uaids. Returns the number of sessions visited.
 */
size_t registry_foreach_uaid(const struct registry *reg, int (*fn)(void *session, void *arg),
                             void *arg);

/* Unbinds uaid only if it is still bound to session (a newer socket may hold it now). */
void registry_unbind_uaid(struct registry *reg, const uint8_t uaid[IDS_BYTES], const void *session);

#endif
