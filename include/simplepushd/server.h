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

#include "simplepushd/store.h"

struct config;
struct gate;
struct lws_context;
struct lws_vhost;
struct registry;
struct router;
struct timers;
struct token_ring;

struct server {
    struct config *cfg; /* owned */
    char *config_path;  /* the file SIGHUP reads again */
    uv_loop_t *loop;    /* borrowed */
    struct lws_context *ctx;
    struct lws_vhost *vh_public;
    struct lws_vhost *vh_internal;
    struct gate *gate; /* the plain listeners (gate.h) */
    struct store *store;
    struct registry *reg;
    struct timers *timers;
    struct token_ring *tokens;
    struct router *router; /* requests to other nodes */
    /*
     * This node in host records: the address of its internal listener as other nodes reach
     * it. Empty with the in-process store (one node: no routing).
     */
    char node[STORE_NODE_MAX + 1];
    uint64_t gen_key; /* random; a connection's generation is its id XOR this */

    int public_port; /* bound ports (config may say 0) */
    int internal_port;
    char *url_prefix; /* endpoint URL before the token */
    char *url_suffix; /* endpoint URL after the token */

    size_t n_devices;          /* live WebSocket sessions */
    int64_t max_connections;   /* effective cap on n_devices */
    uint64_t fd_limit;         /* RLIMIT_NOFILE soft limit after raising it */
    bool stopping;             /* no new devices; sessions are being closed */
    bool closing_all;          /* the drain's end: every session closes now */
    bool stopped;              /* lws and our handles are closing */
    uint64_t drain_end_ms;     /* when the spread-out closing of devices ends */
    uint64_t stop_deadline_ms; /* when a graceful stop gives up waiting for devices */

    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t stop_timer;
    uv_timer_t notify_timer; /* systemd WATCHDOG=1 and STATUS= */
    uv_timer_t statsd_timer; /* statsd flushes */
    uint64_t watchdog_usec;  /* 0: no watchdog */
};

/* The server of the process (there is one). Set by server_start(). */
extern struct server *server_self;

/*
 * Builds the server from cfg (taking ownership of it; read from config_path) on loop: token
 * ring, store, registry, timer wheel, lws context and listeners, signal handlers. Logs the
 * bound ports in one line "listening public=ADDR:PORT internal=ADDR:PORT". Returns 0, or -1
 * after logging why.
 */
int server_start(struct server *srv, struct config *cfg, const char *config_path, uv_loop_t *loop,
                 uint64_t fd_limit);

/*
 * Reads the configuration file again (SIGHUP) and applies the keys that can change while
 * running (config_key_reloadable); others that changed are logged as needing a restart. An
 * invalid file is logged and the running configuration kept. Returns 0 or -1.
 */
int server_reload(struct server *srv);

/*
 * Stops the daemon. Graceful: new devices are refused, every device gets a close frame 1001,
 * and once they have gone (or after a grace period) everything closes. Otherwise every
 * connection and handle closes at once. Either way the loop then runs dry.
 */
void server_stop(struct server *srv, bool graceful);

/* Frees what server_start() built, once the loop has run dry. */
void server_free(struct server *srv);

/*
 * Writes the endpoint URL of a token into a malloc'd string (NULL on allocation failure).
 */
char *server_endpoint_url(const struct server *srv, const char *token);

#endif
