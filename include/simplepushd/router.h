/*
 * router: node-to-node requests over the internal listeners (SPEC §9), as an lws HTTP client
 * on the daemon's one loop.
 *
 * Two requests, each on a connection of its own (the peer's internal listener), with a
 * deadline of ROUTER_TIMEOUT_MS from submission to answer:
 *   PUT    /route/<uaid>            {"channelID":"…","version":N[,"data":"…"]}
 *          the peer delivers the update to the device it holds: 200, or 404 not here;
 *   DELETE /route/<uaid>?gen=<hex>  the peer closes the device's socket of that generation
 *          (a newer connection of the uaid said hello elsewhere): 200, or 404 not here.
 * Completions run on the loop thread, never inside the call that submitted them, and find
 * their waiter by an id (the caller's registry id), as store completions do.
 *
 * Loop thread only.
 */
#ifndef SIMPLEPUSHD_ROUTER_H
#define SIMPLEPUSHD_ROUTER_H

#include <libwebsockets.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "simplepushd/ids.h"

struct store_update;
struct router;

/* From submission to the peer's answer. */
#define ROUTER_TIMEOUT_MS 2000

/* How a request ended: the peer's HTTP status (> 0), or ROUTER_FAILED (no answer in time). */
#define ROUTER_FAILED (-1)

typedef void (*router_done_fn)(uint64_t owner, int status, void *arg);

/*
 * Makes the router: its client connections bind to protocol_name of vhost (which must list
 * router_callback under that name). Returns NULL on allocation failure.
 */
struct router *router_new(uv_loop_t *loop, struct lws_context *ctx, struct lws_vhost *vhost,
                          const char *protocol_name);

/*
 * Ends every request in flight with ROUTER_FAILED (their completions still run, from the
 * loop) and frees the router once they have. Accepts NULL.
 */
void router_close(struct router *r);

/*
 * Parses a node address "host:port" ("[v6]:port" for IPv6; host an IP literal). Returns 0
 * and fills host (NUL-terminated) and port, or -1.
 */
int router_parse_node(const char *node, char *host, size_t host_size, int *port);

/*
 * Sends update to the device holding uaid on node. done(owner, status, arg) runs later; arg
 * is the caller's (not owned). Returns 0, or -1 when the request cannot be made (a bad node
 * address, no memory); done is not called then.
 */
int router_route(struct router *r, const char *node, const uint8_t uaid[IDS_BYTES],
                 const struct store_update *update, uint64_t owner, router_done_fn done,
                 void *arg);

/* Asks node to close the socket of uaid whose generation is gen. As router_route(). */
int router_kick(struct router *r, const char *node, const uint8_t uaid[IDS_BYTES], uint64_t gen,
                uint64_t owner, router_done_fn done, void *arg);

/* Requests in flight (for metrics and tests). */
size_t router_in_flight(const struct router *r);

struct http_txn;

/*
 * The receiving side, on the internal listener: the head of a request to /route/...; path
 * is what follows "/route". Answers at once what needs no body (405, 400, 411, 413, and the
 * whole DELETE), else sets the transaction up to read the body, which http.c feeds in and
 * then hands to router_http_finish(). Returns 0, or -1 to close the connection.
 */
int router_http_begin(struct http_txn *txn, const char *path, size_t path_len);

/*
 * Validates the body of PUT /route/<uaid> ({"channelID","version"[,"data"]}, nothing else)
 * and delivers it to the device holding the uaid here: 200, 404 when none does, 400 for
 * anything malformed. Returns 0, or -1 to close the connection.
 */
int router_http_finish(struct http_txn *txn);

/* The lws protocol callback of the router's client connections. */
int router_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len);

#endif
