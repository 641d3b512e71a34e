/*
 * server: the daemon's root object. It owns the libuv loop's handles, the lws context with
 * its two vhosts (public: devices, PUT /update, health; internal: node-to-node and health),
 * the store, the registry, the timer wheel and the token key ring. The device and endpoint
 * modules reach their collaborators through it.
 *
 * Everything here runs on the loop thread.
 */
#ifndef SIMPLEPUSHD_SERVER_H
#define SIMPLEPUSHD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct config;
struct lws_context;
struct lws_vhost;
struct registry;
struct store;
struct timers;
struct token_ring;

struct server {
    struct config *cfg;            /* owned */
    uv_loop_t *loop;               /* borrowed */
    struct lws_context *ctx;
    struct lws_vhost *vh_public;
    struct lws_vhost *vh_internal;
    struct store *store;
    struct registry *reg;
    struct timers *timers;
    struct token_ring *tokens;

    int public_port;               /* bound ports (config may say 0) */
    int internal_port;
    char *url_prefix;              /* endpoint URL before the token */
    char *url_suffix;              /* endpoint URL after the token */

    size_t n_devices;              /* live WebSocket sessions */
    int64_t max_connections;       /* effective cap on n_devices */
    uint64_t fd_limit;             /* RLIMIT_NOFILE soft limit after raising it */
    bool stopping;

    uv_signal_t sig_term, sig_int;
};

/* The server of the process (there is one). Set by server_start(). */
extern struct server *server_self;

/*
 * Builds the server from cfg (taking ownership of it) on loop: token ring, store, registry,
 * timer wheel, lws context and listeners, signal handlers. Logs the bound ports in one line
 * "listening public=ADDR:PORT internal=ADDR:PORT". Returns 0, or -1 after logging why.
 */
int server_start(struct server *srv, struct config *cfg, uv_loop_t *loop, uint64_t fd_limit);

/* Stops accepting, closes every connection and handle; the loop then runs dry. */
void server_stop(struct server *srv);

/* Frees what server_start() built, once the loop has run dry. */
void server_free(struct server *srv);

/*
 * Writes the endpoint URL of a token into a malloc'd string (NULL on allocation failure).
 */
char *server_endpoint_url(const struct server *srv, const char *token);

#endif
