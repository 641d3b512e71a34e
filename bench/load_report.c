/*
 * load_report: spload's report (see load.h): one JSON object on stdout with every counter,
 * histogram and per-event figure of the run, then a human summary on stderr.
 *
 * A figure that could not be computed (a process that was not sampled, a step that did not
 * run) is null in the JSON and "nan" in the summary, never a made-up number.
 */
#include "load.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const fail_names[FAIL_KINDS] = {
    "connect", "handshake", "hello",  "register", "protocol",
    "timeout", "eof",       "closed", "io",       "nomem",
};

static double span_s(const struct sample *a, const struct sample *b)
{
    return (double)(b->t_ns - a->t_ns) / 1e9;
}

static double srv_cpu_s(const struct sample *a, const struct sample *b)
{
    if (!a->srv_ok || !b->srv_ok)
        return NAN;
    return (double)(b->srv.cpu_ns - a->srv.cpu_ns) / 1e9;
}

static double aux_cpu_s(const struct sample *a, const struct sample *b, int k)
{
    if (!a->aux_ok[k] || !b->aux_ok[k])
        return NAN;
    return (double)(b->aux[k].cpu_ns - a->aux[k].cpu_ns) / 1e9;
}

static double gen_cpu_s(const struct sample *a, const struct sample *b)
{
    return (double)(b->gen_cpu_ns - a->gen_cpu_ns) / 1e9;
}

static json_t *jnum(double v)
{
    return isfinite(v) ? json_real(round(v * 1000) / 1000) : json_null();
}

static json_t *jhist(const struct hist *h)
{
    return json_pack("{s:I,s:o,s:I,s:I,s:I,s:I,s:I,s:I}", "count", (json_int_t)hist_count(h),
                     "mean", jnum(hist_mean(h)), "p50", (json_int_t)hist_quantile(h, 0.5), "p90",
                     (json_int_t)hist_quantile(h, 0.9), "p99", (json_int_t)hist_quantile(h, 0.99),
                     "p999", (json_int_t)hist_quantile(h, 0.999), "max", (json_int_t)hist_max(h),
                     "min", (json_int_t)hist_min(h));
}

static json_t *jfails(const uint64_t *f)
{
    json_t *o = json_object();
    for (int k = 0; k < FAIL_KINDS; k++)
        if (f[k])
            json_object_set_new(o, fail_names[k], json_integer((json_int_t)f[k]));
    return o;
}

static uint64_t sum_fails(const uint64_t *f)
{
    uint64_t n = 0;
    for (int k = 0; k < FAIL_KINDS; k++)
        n += f[k];
    return n;
}

static uint64_t step_errors(const struct step *s)
{
    return s->put_skipped + s->put_dropped + s->put_conn_errors + s->put_unsent + s->put_bad +
           s->unanswered + s->unexpected + s->pings_unanswered;
}

static json_t *jstep(const struct step *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "put_rate", jnum(s->rate));
    json_object_set_new(o, "seconds", jnum(s->duration_s));
    json_object_set_new(o, "puts", json_integer((json_int_t)s->puts));
    json_t *st = json_object();
    for (int c = 0; c < LOAD_STATUS_MAX; c++) {
        if (s->status[c]) {
            char key[8];
            snprintf(key, sizeof(key), "%d", c);
            json_object_set_new(st, key, json_integer((json_int_t)s->status[c]));
        }
    }
    json_object_set_new(o, "put_status", st);
    const struct {
        const char *name;
        uint64_t v;
    } counts[] = {
        {"put_ok", s->put_ok},
        {"put_bad", s->put_bad},
        {"put_conn_errors", s->put_conn_errors},
        {"put_retries", s->put_retries},
        {"put_skipped", s->put_skipped},
        {"put_dropped", s->put_dropped},
        {"put_unsent", s->put_unsent},
        {"put_collisions", s->put_collisions},
        {"notifications", s->messages},
        {"updates", s->updates},
        {"delivered", s->matched},
        {"unmatched", s->unmatched},
        {"acks", s->acks},
        {"lost", s->lost},
        {"superseded", s->superseded},
        {"unanswered", s->unanswered},
        {"pings", s->pings},
        {"pongs", s->pongs},
        {"pings_unanswered", s->pings_unanswered},
        {"unexpected", s->unexpected},
    };
    for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++)
        json_object_set_new(o, counts[c].name, json_integer((json_int_t)counts[c].v));
    json_object_set_new(o, "latency_us", jhist(s->lat));
    json_object_set_new(o, "put_rtt_us", jhist(s->put_rtt));
    json_object_set_new(o, "schedule_lag_max_us", json_integer((json_int_t)(s->lag_max_ns / 1000)));
    double span = span_s(&s->s0, &s->s1);
    double cpu = srv_cpu_s(&s->s0, &s->s1);
    json_object_set_new(o, "window_s", jnum(span));
    json_object_set_new(o, "server_cpu_s", jnum(cpu));
    json_object_set_new(o, "server_cpu_pct", jnum(cpu / span * 100));
    json_object_set_new(o, "server_cpu_us_per_notification",
                        jnum(s->matched ? cpu * 1e6 / (double)s->matched : NAN));
    json_object_set_new(o, "server_cpu_us_per_ping",
                        jnum(s->rate == 0 && s->pongs ? cpu * 1e6 / (double)s->pongs : NAN));
    json_t *aux = json_array();
    for (int k = 0; k < L.n_aux; k++) {
        double a = aux_cpu_s(&s->s0, &s->s1, k);
        json_array_append_new(
            aux, json_pack("{s:i,s:o,s:o,s:o}", "pid", (int)L.aux_pid[k], "cpu_s", jnum(a),
                           "cpu_pct", jnum(a / span * 100), "cpu_us_per_notification",
                           jnum(s->matched ? a * 1e6 / (double)s->matched : NAN)));
    }
    json_object_set_new(o, "aux", aux);
    /*
     * Every CPU's busy share over the step, and what of CPU 0 (where bench/run pins the
     * server) and of CPU 1 (spload and memcached) our processes do not explain: other
     * processes on a shared host.
     */
    double gen = gen_cpu_s(&s->s0, &s->s1) / span * 100;
    double ours1 = gen;
    for (int k = 0; k < L.n_aux; k++) {
        double a = aux_cpu_s(&s->s0, &s->s1, k);
        if (isfinite(a))
            ours1 += a / span * 100;
    }
    json_t *busy = json_array();
    double others0 = NAN, others1 = NAN;
    if (s->s0.cpus_ok && s->s1.cpus_ok) {
        for (int c = 0; c < s->s1.cpus.n && c < s->s0.cpus.n; c++) {
            uint64_t t = s->s1.cpus.total[c] - s->s0.cpus.total[c];
            double pct =
                t ? (double)(s->s1.cpus.busy[c] - s->s0.cpus.busy[c]) * 100.0 / (double)t : NAN;
            json_array_append_new(busy, jnum(pct));
            if (c == 0 && isfinite(cpu))
                others0 = fmax(0.0, pct - cpu / span * 100);
            if (c == 1)
                others1 = fmax(0.0, pct - ours1);
        }
    }
    json_object_set_new(o, "host_cpu_busy_pct", busy);
    json_object_set_new(o, "cpu0_others_pct", jnum(others0));
    json_object_set_new(o, "cpu1_others_pct", jnum(others1));
    json_object_set_new(o, "generator_cpu_pct", jnum(gen));
    json_object_set_new(o, "generator_bound", json_boolean(gen > 80));
    json_object_set_new(o, "errors", json_integer((json_int_t)step_errors(s)));
    return o;
}

static const char *errno_label(int e)
{
    switch (e) {
    case ECONNREFUSED:
        return "ECONNREFUSED";
    case ECONNRESET:
        return "ECONNRESET";
    case EADDRNOTAVAIL:
        return "EADDRNOTAVAIL";
    case EMFILE:
        return "EMFILE";
    case ENFILE:
        return "ENFILE";
    case ETIMEDOUT:
        return "ETIMEDOUT";
    case ENOBUFS:
        return "ENOBUFS";
    default:
        return NULL;
    }
}

int report_write(bool interrupted, uint32_t ready_after_connect, const struct sample *settled,
                 const struct sample *end)
{
    const struct step *c = &L.connect;
    json_t *root = json_object();
    json_object_set_new(root, "tool", json_string("spload"));
    json_object_set_new(root, "mode", json_string(L.mode == MODE_NCHAN ? "nchan" : "simplepush"));
    json_object_set_new(root, "target",
                        json_pack("{s:s,s:i,s:i,s:i,s:s}", "host", L.host, "port", (int)L.port,
                                  "put_port", (int)L.put_port, "addresses", L.n_addrs, "path",
                                  L.path));
    json_t *rates = json_array();
    for (int k = 0; k < L.n_rates; k++)
        json_array_append_new(rates, jnum(L.rates[k]));
    json_object_set_new(root, "options",
                        json_pack("{s:I,s:o,s:I,s:o,s:b,s:o,s:o,s:o,s:o,s:I,s:I}", "devices",
                                  (json_int_t)L.n_devs, "connect_rate", jnum(L.connect_rate),
                                  "max_inflight", (json_int_t)L.max_inflight, "ping_interval_s",
                                  jnum(L.ping_interval_s), "register", !L.no_register, "put_rates",
                                  rates, "duration_s", jnum(L.duration_s), "drain_s",
                                  jnum(L.drain_s), "settle_s", jnum(L.settle_s), "http_conns",
                                  (json_int_t)L.n_hconns, "seed", (json_int_t)L.seed));

    json_t *codes = json_object();
    for (unsigned k = 0; k < sizeof(L.close_codes) / sizeof(L.close_codes[0]); k++) {
        if (L.close_codes[k]) {
            char key[8];
            snprintf(key, sizeof(key), "%u", k);
            json_object_set_new(codes, key, json_integer((json_int_t)L.close_codes[k]));
        }
    }
    if (L.close_other)
        json_object_set_new(codes, "other", json_integer((json_int_t)L.close_other));
    json_t *errs = json_object();
    for (int k = 0; k < LOAD_ERRNO_SLOTS && L.connect_errno[k].n; k++) {
        const char *name = errno_label(L.connect_errno[k].err);
        char key[16];
        if (!name) {
            snprintf(key, sizeof(key), "errno%d", L.connect_errno[k].err);
            name = key;
        }
        json_object_set_new(errs, name, json_integer((json_int_t)L.connect_errno[k].n));
    }
    json_object_set_new(root, "devices",
                        json_pack("{s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:o}", "requested",
                                  (json_int_t)L.n_devs, "started", (json_int_t)L.n_started,
                                  "ready_after_connect", (json_int_t)ready_after_connect,
                                  "ready_at_end", (json_int_t)L.n_ready, "failed_before_ready",
                                  jfails(L.fail_before), "failed_after_ready", jfails(L.fail_after),
                                  "close_codes", codes, "connect_errno", errs));

    double cspan = span_s(&c->s0, &c->s1);
    double ccpu = srv_cpu_s(&c->s0, &c->s1);
    json_t *conn = json_object();
    json_object_set_new(conn, "seconds", jnum(cspan));
    json_object_set_new(conn, "rate_per_s", jnum(ready_after_connect / cspan));
    json_object_set_new(conn, "hello_latency_us", jhist(L.hello_lat));
    json_object_set_new(conn, "server_cpu_s", jnum(ccpu));
    json_object_set_new(conn, "server_cpu_us_per_device",
                        jnum(ready_after_connect ? ccpu * 1e6 / ready_after_connect : NAN));
    json_t *caux = json_array();
    for (int k = 0; k < L.n_aux; k++) {
        double a = aux_cpu_s(&c->s0, &c->s1, k);
        json_array_append_new(caux,
                              jnum(ready_after_connect ? a * 1e6 / ready_after_connect : NAN));
    }
    json_object_set_new(conn, "aux_cpu_us_per_device", caux);
    json_object_set_new(conn, "generator_cpu_pct", jnum(gen_cpu_s(&c->s0, &c->s1) / cspan * 100));
    json_object_set_new(root, "connect", conn);

    if (L.srv_pid) {
        json_t *srv = json_object();
        json_object_set_new(srv, "pid", json_integer(L.srv_pid));
        if (c->s0.srv_ok && settled->srv_ok) {
            double per = ((double)settled->srv.rss_kb - (double)c->s0.srv.rss_kb) * 1024.0 /
                         (ready_after_connect ? ready_after_connect : 1);
            json_object_set_new(srv, "rss_kb_empty", json_integer((json_int_t)c->s0.srv.rss_kb));
            json_object_set_new(srv, "rss_kb_connected",
                                json_integer((json_int_t)settled->srv.rss_kb));
            json_object_set_new(srv, "rss_bytes_per_device", jnum(per));
            json_object_set_new(srv, "threads", json_integer(settled->srv.threads));
            json_object_set_new(srv, "cpu_source",
                                json_string(settled->srv.schedstat ? "schedstat" : "stat"));
        }
        if (end->srv_ok) {
            json_object_set_new(srv, "rss_kb_end", json_integer((json_int_t)end->srv.rss_kb));
            json_object_set_new(srv, "hwm_kb", json_integer((json_int_t)end->srv.hwm_kb));
        }
        double ispan = span_s(&c->s1, settled);
        json_object_set_new(srv, "settle_cpu_pct", jnum(srv_cpu_s(&c->s1, settled) / ispan * 100));
        json_object_set_new(root, "server", srv);
    }
    json_t *aux = json_array();
    for (int k = 0; k < L.n_aux; k++) {
        json_array_append_new(
            aux, json_pack("{s:i,s:I,s:I}", "pid", (int)L.aux_pid[k], "rss_kb_start",
                           (json_int_t)(c->s0.aux_ok[k] ? c->s0.aux[k].rss_kb : 0), "rss_kb_end",
                           (json_int_t)(end->aux_ok[k] ? end->aux[k].rss_kb : 0)));
    }
    json_object_set_new(root, "aux", aux);

    json_t *steps = json_array();
    uint64_t puts = 0, ok = 0, delivered = 0, lost = 0, superseded = 0, serr = 0;
    for (int k = 0; k < L.n_rates; k++) {
        const struct step *s = &L.steps[k];
        json_array_append_new(steps, jstep(s));
        puts += s->puts;
        ok += s->put_ok;
        delivered += s->matched;
        lost += s->lost;
        superseded += s->superseded;
        serr += step_errors(s);
    }
    json_object_set_new(root, "steps", steps);
    uint64_t errors = sum_fails(L.fail_before) + sum_fails(L.fail_after) + serr +
                      L.protocol_errors + c->unexpected + c->pings_unanswered +
                      (L.n_devs - L.n_started);
    json_object_set_new(root, "totals",
                        json_pack("{s:I,s:I,s:I,s:I,s:I}", "puts", (json_int_t)puts, "put_ok",
                                  (json_int_t)ok, "delivered", (json_int_t)delivered, "lost",
                                  (json_int_t)lost, "superseded", (json_int_t)superseded));
    json_object_set_new(root, "protocol_errors", json_integer((json_int_t)L.protocol_errors));
    json_object_set_new(root, "errors", json_integer((json_int_t)errors));
    json_object_set_new(root, "interrupted", json_boolean(interrupted));
    bool good = !interrupted && errors == 0 && lost == 0 && L.n_ready == L.n_devs;
    json_object_set_new(root, "ok", json_boolean(good));
    json_dumpf(root, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    fflush(stdout);
    json_decref(root);

    /* The human summary. */
    fprintf(stderr,
            "spload: %u/%u devices ready in %.1f s (%.0f/s); hello p50 %.2f ms, p99 %.2f ms",
            ready_after_connect, L.n_devs, cspan, ready_after_connect / cspan,
            hist_quantile(L.hello_lat, 0.5) / 1e3, hist_quantile(L.hello_lat, 0.99) / 1e3);
    if (isfinite(ccpu) && ready_after_connect)
        fprintf(stderr, "; server %.0f us CPU per device", ccpu * 1e6 / ready_after_connect);
    fputc('\n', stderr);
    if (L.srv_pid && c->s0.srv_ok && settled->srv_ok && ready_after_connect)
        fprintf(stderr, "spload: server RSS %llu kB empty, %llu kB connected: %.0f B per device\n",
                (unsigned long long)c->s0.srv.rss_kb, (unsigned long long)settled->srv.rss_kb,
                ((double)settled->srv.rss_kb - (double)c->s0.srv.rss_kb) * 1024.0 /
                    ready_after_connect);
    for (int k = 0; k < L.n_rates; k++) {
        const struct step *s = &L.steps[k];
        double span = span_s(&s->s0, &s->s1), cpu = srv_cpu_s(&s->s0, &s->s1);
        if (s->rate > 0)
            fprintf(stderr,
                    "spload: %.0f PUT/s for %.0f s: %llu PUTs, %llu ok, %llu delivered, %llu lost, "
                    "%llu errors; e2e p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms; server %.1f%% "
                    "(%.1f us/notification); generator %.0f%%\n",
                    s->rate, s->duration_s, (unsigned long long)s->puts,
                    (unsigned long long)s->put_ok, (unsigned long long)s->matched,
                    (unsigned long long)s->lost, (unsigned long long)step_errors(s),
                    hist_quantile(s->lat, 0.5) / 1e3, hist_quantile(s->lat, 0.99) / 1e3,
                    hist_quantile(s->lat, 0.999) / 1e3, hist_max(s->lat) / 1e3, cpu / span * 100,
                    s->matched ? cpu * 1e6 / (double)s->matched : NAN,
                    gen_cpu_s(&s->s0, &s->s1) / span * 100);
        else
            fprintf(stderr,
                    "spload: idle %.0f s: %llu pings, %llu answered; server %.3f%% of a core"
                    " (%.1f us/ping); generator %.0f%%\n",
                    span, (unsigned long long)s->pings, (unsigned long long)s->pongs,
                    cpu / span * 100, s->pongs ? cpu * 1e6 / (double)s->pongs : NAN,
                    gen_cpu_s(&s->s0, &s->s1) / span * 100);
    }
    fprintf(stderr, "spload: %s (%llu errors, %llu lost)\n", good ? "OK" : "NOT OK",
            (unsigned long long)errors, (unsigned long long)lost);
    return good ? 0 : 3;
}
