/*
 * metrics: the daemon's counters, and their Prometheus text exposition (format 0.0.4), served
 * at GET /metrics on the internal listener. Counters are plain integers written by the loop
 * thread only; the histogram of storage latency is fed from store completions.
 */
#ifndef SIMPLEPUSHD_METRICS_H
#define SIMPLEPUSHD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "simplepushd/store.h"

/* Buckets of the storage latency histogram, in seconds (+Inf implied). */
#define METRICS_LATENCY_BUCKETS 12

/* The HTTP statuses PUT /update answers, counted one by one (others count as "other"). */
#define METRICS_PUT_STATUSES 12

/* The statuses the gate refuses request heads with (others count as "other"). */
#define METRICS_BAD_REQUEST_STATUSES 5

struct metrics {
    uint64_t ws_opened, ws_closed;
    uint64_t hellos, hello_resets, registers, unregisters, acks, pings, too_many_pings;
    uint64_t kicks;         /* older sockets closed by a newer hello of their uaid */
    uint64_t notifications; /* notification messages queued to devices */
    uint64_t updates_sent;  /* updates in them */
    uint64_t puts[METRICS_PUT_STATUSES + 1];
    uint64_t handshakes_refused; /* connections closed at accept: max_handshakes in the gate */
    uint64_t handshake_timeouts; /* request heads not complete in time (408) */
    /* Request heads the gate refused, by status (bad_request_statuses in metrics.c). */
    uint64_t bad_requests[METRICS_BAD_REQUEST_STATUSES + 1];
    uint64_t store_requests[STORE_HOST_CLEAR + 1][5]; /* by op and -status */
    /*
     * Routing between nodes, by outcome (enum metrics_route_result): updates sent to the
     * node holding the device, kicks sent to the node holding an older socket, and the
     * same requests received.
     */
    uint64_t route_out[4], kick_out[4], route_in[4], kick_in[4];
    uint64_t store_latency[METRICS_LATENCY_BUCKETS + 1];
    uint64_t store_latency_count;
    double store_latency_sum; /* seconds */
};

extern struct metrics metrics;

enum metrics_route_result {
    METRICS_ROUTE_OK = 0,        /* 200: delivered, or the socket closed */
    METRICS_ROUTE_NOT_THERE = 1, /* 404: no such device on that node */
    METRICS_ROUTE_REFUSED = 2,   /* any other answer (400, 503, ...) */
    METRICS_ROUTE_FAILED = 3,    /* no answer (connection refused, timeout) */
};

/* The result of an HTTP status (or a router failure, < 0). */
enum metrics_route_result metrics_route_result(int status);

/* Counts the outcome of a route or kick this node sent (status as router_done_fn has it). */
void metrics_route(int status);
void metrics_route_kick(int status);

/* Counts one answer of PUT /update. */
void metrics_put(int status);

/* Counts one request head the gate refused with status. */
void metrics_bad_request(int status);

/* The store's observer: counts one completion and its latency. */
void metrics_store(enum store_op op, enum store_status status, uint64_t latency_ns);

/* Gauges read at render time. */
struct metrics_gauges {
    size_t connections;
    int64_t max_connections;
    size_t handshakes; /* connections in the gate (request head not read yet) */
    int draining;
    uint64_t log_drops; /* Heka datagrams dropped */
    int breaker;        /* memcached circuit breaker: -1 none, 0 closed, 1 half-open, 2 open */
};

struct udp_sink;

/*
 * Sends the counters to statsd from now on (sink owned; NULL stops), named as pushgo named
 * them, under prefix. Loop thread.
 */
void metrics_statsd_configure(struct udp_sink *sink, const char *prefix);

/*
 * Sends what the counters gained since the last flush (and the connections gauge) in
 * packets of at most 512 bytes. Does nothing without a statsd sink. Loop thread.
 */
void metrics_statsd_flush(size_t connections);

/* Renders every metric as Prometheus text; returns a malloc'd string (NULL on failure). */
char *metrics_render(const struct metrics_gauges *g, size_t *len);

#endif
