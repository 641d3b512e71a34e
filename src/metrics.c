/*
 * metrics: counters and their Prometheus text exposition.
 *
 * Names follow Prometheus conventions (simplepushd_ prefix, _total for counters, seconds for
 * durations); each has HELP and TYPE lines.
 */
#include "simplepushd/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct metrics metrics;

static const int put_statuses[METRICS_PUT_STATUSES] = {200, 202, 400, 404, 405, 410,
                                                       411, 413, 500, 503, 0,   0};
static const double latency_bounds[METRICS_LATENCY_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0};
static const char *const op_names[STORE_FETCH + 1] = {
    [STORE_HELLO] = "hello", [STORE_REGISTER] = "register", [STORE_UNREGISTER] = "unregister",
    [STORE_ACK] = "ack",     [STORE_UPDATE] = "update",     [STORE_FETCH] = "fetch",
};
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

void metrics_store(enum store_op op, enum store_status status, uint64_t latency_ns)
{
    int s = -(int)status;
    if ((int)op >= 0 && op <= STORE_FETCH && s >= 0 && s < 5)
        metrics.store_requests[op][s]++;
    double secs = (double)latency_ns / 1e9;
    size_t b = 0;
    while (b < METRICS_LATENCY_BUCKETS && secs > latency_bounds[b])
        b++;
    metrics.store_latency[b]++;
    metrics.store_latency_count++;
    metrics.store_latency_sum += secs;
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
    for (int op = 0; op <= STORE_FETCH; op++)
        for (int s = 0; s < 5; s++)
            out_printf(&o, "simplepushd_store_requests_total{op=\"%s\",status=\"%s\"} %llu\n",
                       op_names[op], status_names[s],
                       (unsigned long long)metrics.store_requests[op][s]);

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
