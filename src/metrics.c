/*
 * metrics: counters and their Prometheus text exposition.
 *
 * Names follow Prometheus conventions (simplepushd_ prefix, _total for counters, seconds for
 * durations); each has HELP and TYPE lines.
 */
#include "simplepushd/metrics.h"
#include "simplepushd/udp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct metrics metrics;

static const int put_statuses[METRICS_PUT_STATUSES] = {200, 202, 400, 404, 405, 410,
                                                       411, 413, 500, 503, 0,   0};
static const int bad_request_statuses[METRICS_BAD_REQUEST_STATUSES] = {400, 405, 414, 431, 505};
static const double latency_bounds[METRICS_LATENCY_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0};
static const char *const op_names[STORE_HOST_CLEAR + 1] = {
    [STORE_HELLO] = "hello",
    [STORE_REGISTER] = "register",
    [STORE_UNREGISTER] = "unregister",
    [STORE_ACK] = "ack",
    [STORE_UPDATE] = "update",
    [STORE_FETCH] = "fetch",
    [STORE_HOST_REFRESH] = "host_refresh",
    [STORE_HOST_CLEAR] = "host_clear",
};
static const char *const route_names[4] = {"ok", "not_connected", "refused", "failed"};

enum metrics_route_result metrics_route_result(int status)
{
    if (status == 200)
        return METRICS_ROUTE_OK;
    if (status == 404)
        return METRICS_ROUTE_NOT_THERE;
    return status > 0 ? METRICS_ROUTE_REFUSED : METRICS_ROUTE_FAILED;
}

void metrics_route(int status)
{
    metrics.route_out[metrics_route_result(status)]++;
}

void metrics_route_kick(int status)
{
    metrics.kick_out[metrics_route_result(status)]++;
}
static const char *const status_names[5] = {"ok", "too_many", "gone", "unavailable", "error"};

void metrics_put(int status)
{
    for (size_t i = 0; i < METRICS_PUT_STATUSES; i++) {
        if (put_statuses[i] && put_statuses[i] == status) {
            metrics.puts[i]++;
            return;
        }
    }
    metrics.puts[METRICS_PUT_STATUSES]++;
}

void metrics_bad_request(int status)
{
    for (size_t i = 0; i < METRICS_BAD_REQUEST_STATUSES; i++) {
        if (bad_request_statuses[i] == status) {
            metrics.bad_requests[i]++;
            return;
        }
    }
    metrics.bad_requests[METRICS_BAD_REQUEST_STATUSES]++;
}

void metrics_store(enum store_op op, enum store_status status, uint64_t latency_ns)
{
    int s = -(int)status;
    if ((int)op >= 0 && op <= STORE_HOST_CLEAR && s >= 0 && s < 5)
        metrics.store_requests[op][s]++;
    double secs = (double)latency_ns / 1e9;
    size_t b = 0;
    while (b < METRICS_LATENCY_BUCKETS && secs > latency_bounds[b])
        b++;
    metrics.store_latency[b]++;
    metrics.store_latency_count++;
    metrics.store_latency_sum += secs;
}

/* ---- statsd ---- */

static struct udp_sink *statsd;
static char statsd_prefix[64] = "simplepush";
static struct metrics statsd_sent; /* the counters as of the last flush */

void metrics_statsd_configure(struct udp_sink *sink, const char *prefix)
{
    udp_sink_free(statsd);
    statsd = sink;
    snprintf(statsd_prefix, sizeof(statsd_prefix), "%s", prefix ? prefix : "");
    statsd_sent = metrics; /* start counting from now */
}

/* Heka's StatsdInput reads at most 512 bytes of a datagram. */
#define STATSD_PACKET 512

struct statsd_packet {
    char buf[STATSD_PACKET];
    size_t len;
};

static void statsd_send(struct statsd_packet *p)
{
    if (p->len)
        udp_sink_send(statsd, p->buf, p->len);
    p->len = 0;
}

static void statsd_line(struct statsd_packet *p, const char *name, long long value,
                        const char *type)
{
    char line[160];
    int n = snprintf(line, sizeof(line), "%s%s%s:%lld|%s", statsd_prefix, *statsd_prefix ? "." : "",
                     name, value, type);
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    if (p->len + (p->len ? 1 : 0) + (size_t)n > sizeof(p->buf))
        statsd_send(p);
    if (p->len)
        p->buf[p->len++] = '\n';
    memcpy(p->buf + p->len, line, (size_t)n);
    p->len += (size_t)n;
}

static void statsd_counter(struct statsd_packet *p, const char *name, uint64_t now, uint64_t then)
{
    if (now > then)
        statsd_line(p, name, (long long)(now - then), "c");
}

void metrics_statsd_flush(size_t connections)
{
    if (!statsd)
        return;
    struct statsd_packet p = {.len = 0};
    const struct metrics *m = &metrics, *o = &statsd_sent;
    uint64_t puts_now = 0, puts_then = 0, ok_now = 0, ok_then = 0, bad_now = 0, bad_then = 0;

    /* pushgo's names (its METRICS.md and 1.1 statsd). */
    statsd_counter(&p, "client.socket.connect", m->ws_opened, o->ws_opened);
    statsd_counter(&p, "client.socket.disconnect", m->ws_closed, o->ws_closed);
    statsd_counter(&p, "updates.client.hello", m->hellos, o->hellos);
    statsd_counter(&p, "updates.client.register", m->registers, o->registers);
    statsd_counter(&p, "updates.client.unregister", m->unregisters, o->unregisters);
    statsd_counter(&p, "updates.client.ack", m->acks, o->acks);
    statsd_counter(&p, "updates.client.ping", m->pings, o->pings);
    statsd_counter(&p, "updates.client.too_many_pings", m->too_many_pings, o->too_many_pings);
    statsd_counter(&p, "updates.sent", m->updates_sent, o->updates_sent);
    /* pushgo 1.5's broadcast router counted hits and misses. */
    statsd_counter(&p, "router.broadcast.hit", m->route_out[METRICS_ROUTE_OK],
                   o->route_out[METRICS_ROUTE_OK]);
    statsd_counter(&p, "router.broadcast.miss",
                   m->route_out[1] + m->route_out[2] + m->route_out[3],
                   o->route_out[1] + o->route_out[2] + o->route_out[3]);
    for (size_t i = 0; i <= METRICS_PUT_STATUSES; i++) {
        puts_now += m->puts[i];
        puts_then += o->puts[i];
        bool ok = i < METRICS_PUT_STATUSES && (put_statuses[i] == 200 || put_statuses[i] == 202);
        bool bad = i < METRICS_PUT_STATUSES && put_statuses[i] >= 400 && put_statuses[i] < 500;
        ok_now += ok ? m->puts[i] : 0;
        ok_then += ok ? o->puts[i] : 0;
        bad_now += bad ? m->puts[i] : 0;
        bad_then += bad ? o->puts[i] : 0;
    }
    statsd_counter(&p, "updates.appserver.incoming", puts_now, puts_then);
    statsd_counter(&p, "updates.appserver.received", ok_now, ok_then);
    statsd_counter(&p, "updates.appserver.invalid", bad_now, bad_then);
    statsd_counter(&p, "updates.appserver.rejected", puts_now - ok_now - bad_now,
                   puts_then - ok_then - bad_then);
    statsd_line(&p, "update.client.connections", (long long)connections, "g");
    statsd_send(&p);
    statsd_sent = metrics;
}

/* A growing output buffer. */
struct out {
    char *buf;
    size_t len, cap;
    int failed;
};

static void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(struct out *o, const char *fmt, ...)
{
    if (o->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->failed = 1;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

static void counter(struct out *o, const char *name, const char *help, uint64_t v)
{
    out_printf(o, "# HELP simplepushd_%s %s\n# TYPE simplepushd_%s counter\nsimplepushd_%s %llu\n",
               name, help, name, name, (unsigned long long)v);
}

static void gauge(struct out *o, const char *name, const char *help, long long v)
{
    out_printf(o, "# HELP simplepushd_%s %s\n# TYPE simplepushd_%s gauge\nsimplepushd_%s %lld\n",
               name, help, name, name, v);
}

char *metrics_render(const struct metrics_gauges *g, size_t *len)
{
    struct out o = {.buf = malloc(4096), .cap = 4096};
    if (!o.buf)
        return NULL;
    o.buf[0] = '\0';

    gauge(&o, "connections", "Devices connected.", (long long)g->connections);
    gauge(&o, "max_connections", "The cap on connected devices.", (long long)g->max_connections);
    gauge(&o, "draining", "1 while the daemon is stopping.", g->draining);
    gauge(&o, "handshakes", "Connections whose first request head is being read.",
          (long long)g->handshakes);
    gauge(&o, "storage_breaker_state",
          "memcached circuit breaker: -1 no memcached, 0 closed, 1 half-open, 2 open.",
          g->breaker);
    counter(&o, "ws_opened_total", "WebSocket connections opened.", metrics.ws_opened);
    counter(&o, "ws_closed_total", "WebSocket connections closed.", metrics.ws_closed);
    counter(&o, "hellos_total", "Successful hellos.", metrics.hellos);
    counter(&o, "hello_resets_total", "Hellos answered with a new uaid.", metrics.hello_resets);
    counter(&o, "registers_total", "Register commands.", metrics.registers);
    counter(&o, "unregisters_total", "Unregister commands.", metrics.unregisters);
    counter(&o, "acks_total", "Ack commands.", metrics.acks);
    counter(&o, "pings_total", "Pings answered.", metrics.pings);
    counter(&o, "too_many_pings_total", "Sockets closed for pinging too often (4774).",
            metrics.too_many_pings);
    counter(&o, "kicks_total", "Older sockets closed by a newer hello of their uaid.",
            metrics.kicks);
    counter(&o, "notifications_total", "Notification messages sent to devices.",
            metrics.notifications);
    counter(&o, "updates_sent_total", "Updates carried by notification messages.",
            metrics.updates_sent);
    counter(&o, "log_datagrams_dropped_total", "Heka log datagrams dropped (never blocking).",
            g->log_drops);

    counter(&o, "handshakes_refused_total",
            "Connections closed at accept because server.max_handshakes were in flight.",
            metrics.handshakes_refused);
    counter(&o, "handshake_timeouts_total",
            "Connections closed (408) because their request head took too long.",
            metrics.handshake_timeouts);
    out_printf(&o, "# HELP simplepushd_bad_requests_total Request heads refused before "
                   "libwebsockets, by status.\n# TYPE simplepushd_bad_requests_total counter\n");
    for (size_t i = 0; i < METRICS_BAD_REQUEST_STATUSES; i++)
        out_printf(&o, "simplepushd_bad_requests_total{status=\"%d\"} %llu\n",
                   bad_request_statuses[i], (unsigned long long)metrics.bad_requests[i]);
    out_printf(&o, "simplepushd_bad_requests_total{status=\"other\"} %llu\n",
               (unsigned long long)metrics.bad_requests[METRICS_BAD_REQUEST_STATUSES]);

    out_printf(&o, "# HELP simplepushd_puts_total Answers to PUT /update, by status.\n"
                   "# TYPE simplepushd_puts_total counter\n");
    for (size_t i = 0; i < METRICS_PUT_STATUSES; i++)
        if (put_statuses[i])
            out_printf(&o, "simplepushd_puts_total{status=\"%d\"} %llu\n", put_statuses[i],
                       (unsigned long long)metrics.puts[i]);
    out_printf(&o, "simplepushd_puts_total{status=\"other\"} %llu\n",
               (unsigned long long)metrics.puts[METRICS_PUT_STATUSES]);

    out_printf(&o, "# HELP simplepushd_store_requests_total Storage requests, by operation and "
                   "outcome.\n# TYPE simplepushd_store_requests_total counter\n");
    for (int op = 0; op <= STORE_HOST_CLEAR; op++)
        for (int s = 0; s < 5; s++)
            out_printf(&o, "simplepushd_store_requests_total{op=\"%s\",status=\"%s\"} %llu\n",
                       op_names[op], status_names[s],
                       (unsigned long long)metrics.store_requests[op][s]);

    static const struct {
        const char *name, *help;
        const uint64_t *v;
    } routing[] = {
        {"routes_sent_total", "Updates sent to the node holding their device, by outcome.",
         metrics.route_out},
        {"kicks_sent_total", "Requests to close an older socket on another node, by outcome.",
         metrics.kick_out},
        {"routes_received_total", "Updates received from other nodes, by outcome.",
         metrics.route_in},
        {"kicks_received_total", "Requests from other nodes to close a socket, by outcome.",
         metrics.kick_in},
    };
    for (size_t i = 0; i < sizeof(routing) / sizeof(routing[0]); i++) {
        out_printf(&o, "# HELP simplepushd_%s %s\n# TYPE simplepushd_%s counter\n",
                   routing[i].name, routing[i].help, routing[i].name);
        for (int r = 0; r < 4; r++)
            out_printf(&o, "simplepushd_%s{result=\"%s\"} %llu\n", routing[i].name,
                       route_names[r], (unsigned long long)routing[i].v[r]);
    }

    out_printf(&o, "# HELP simplepushd_store_latency_seconds Time from a storage request to "
                   "its completion.\n# TYPE simplepushd_store_latency_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t b = 0; b < METRICS_LATENCY_BUCKETS; b++) {
        cum += metrics.store_latency[b];
        out_printf(&o, "simplepushd_store_latency_seconds_bucket{le=\"%g\"} %llu\n",
                   latency_bounds[b], (unsigned long long)cum);
    }
    cum += metrics.store_latency[METRICS_LATENCY_BUCKETS];
    out_printf(&o, "simplepushd_store_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
               (unsigned long long)cum);
    out_printf(&o, "simplepushd_store_latency_seconds_sum %.9f\n", metrics.store_latency_sum);
    out_printf(&o, "simplepushd_store_latency_seconds_count %llu\n",
               (unsigned long long)metrics.store_latency_count);

    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}
