/*
 * device: one device's WebSocket session, the SimplePush state machine of SPEC §2-§6.
 *
 * A session is lws's per-session data of the "push-notification" protocol: small, fixed in
 * size, with buffers allocated only while a message is being reassembled or is waiting to
 * be sent. States: NEW (hello timeout running) -> HELLO (the store is deciding the uaid;
 * reading is paused) -> READY (uaid bound in the registry). A session is found by its
 * connection id (store completions) or by its uaid (deliveries), never by a kept pointer.
 *
 * Loop thread only.
 */
#ifndef SIMPLEPUSHD_DEVICE_H
#define SIMPLEPUSHD_DEVICE_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "simplepushd/ids.h"
#include "simplepushd/timers.h"

struct store_update;
struct device_session;

/* The lws protocol callback of "push-notification". */
int device_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len);

/* The size of a session, for the protocol table. */
size_t device_session_size(void);

/*
 * Delivers one update to the device holding uaid on this node. Returns 0 when it was
 * queued for sending, -1 when no ready session holds the uaid (or it cannot take more).
 */
int device_deliver(const uint8_t uaid[IDS_BYTES], const struct store_update *update);

/*
 * Closes the session holding uaid on this node if its connection generation is gen (SPEC
 * §9: the uaid said hello on another node). Returns 0 when it did, -1 when no such session.
 */
int device_kick(const uint8_t uaid[IDS_BYTES], uint64_t gen);
/*
 * Starts closing a ready session with 1001 (going away), for a drain. Returns true when it
 * did, false when the session was closing already.
 */
bool device_drain(void *session);

/* Called by the timer wheel for a session's node. */
void device_on_timer(struct timers_node *node, void *arg);

#endif
