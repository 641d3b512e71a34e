/*
 * registry: this node's live connections, found in O(1).
 *
 * Two maps, both open-addressed hash tables that grow by doubling:
 *   id   -> connection   every live connection (devices and HTTP transactions) by its
 *                        64-bit id; store completions find their connection here, since the
 *                        connection may have closed meanwhile.
 *   uaid -> session      the device session that holds a uaid on this node.
 * Values are opaque pointers owned by the caller. Loop thread only.
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

/* Maps id -> conn. Returns 0, or -1 on allocation failure. id must not be mapped yet. */
int registry_add(struct registry *reg, uint64_t id, void *conn);

/* Returns the connection of id, or NULL. */
void *registry_find(const struct registry *reg, uint64_t id);

/* Unmaps id (no-op when not mapped). */
void registry_remove(struct registry *reg, uint64_t id);

/* Number of ids mapped. */
size_t registry_count(const struct registry *reg);

/*
 * Binds uaid to session. Returns 0 and sets *previous to the session that held the uaid
 * before (NULL if none), so the caller can close it; -1 on allocation failure.
 */
int registry_bind_uaid(struct registry *reg, const uint8_t uaid[IDS_BYTES], void *session,
                       void **previous);

/* Returns the session holding uaid, or NULL. */
void *registry_find_uaid(const struct registry *reg, const uint8_t uaid[IDS_BYTES]);

/* Unbinds uaid only if it is still bound to session (a newer socket may hold it now). */
void registry_unbind_uaid(struct registry *reg, const uint8_t uaid[IDS_BYTES],
                          const void *session);

#endif
