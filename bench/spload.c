/*
 * spload: the load generator of simplepushd's benchmark suite (bench/run, docs/performance.md).
 *
 * N devices connect (spread over destination addresses 127.0.0.1, 127.0.0.2, ... for more
 * 4-tuples; no source address is ever bound), say hello and register one channel each, then
 * ack every notification and optionally send `{}` pings at a fixed interval, spread evenly.
 * After the connect phase and a settle time come one or more steps: a fixed PUT rate for a
 * fixed time, open loop over K keep-alive HTTP connections, then a drain that waits for the
 * versions still on their way. The receiver computes end-to-end latency as now - version on
 * CLOCK_REALTIME (see load.h). With --server-pid (and --aux-pid for memcached) spload samples
 * that process's CPU time and resident memory at every phase boundary, so the figures per
 * event line up exactly with the phases.
 *
 * Output: one JSON object on stdout, a human summary on stderr. Exit status: 0 when every
 * device was ready and nothing was lost or failed, 3 when the run finished with errors (the
 * JSON says which), 2 for bad options, 1 when the run could not start.
 *
 * The phases, the epoll loop and the report live here; the devices are in load_dev.c and the
 * PUT driver in load_put.c.
 */
#include "load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define TICK_NS  1000000ull
#define SWEEP_NS 100000000ull

struct load L;

static uint64_t next_tick_ns, last_sweep_ns, connect_t0_ns;
static bool connecting;
static uint32_t ready_after_connect; /* devices ready when the connect phase ended */

static const char *const fail_names[FAIL_KINDS] = {
    "connect", "handshake", "hello",  "register", "protocol",
    "timeout", "eof",       "closed", "io",       "nomem",
};

uint64_t load_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t load_rt_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

/* xorshift64*: fast, and good enough to spread PUTs and masks. */
uint64_t load_rand(void)
{
    L.rng ^= L.rng >> 12;
    L.rng ^= L.rng << 25;
    L.rng ^= L.rng >> 27;
    return L.rng * 0x2545f4914f6cdd1dull;
}

/* ---- options ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spload [options]\n"
            "  --url ws://HOST:PORT/PATH   the server (or --host, --port, --path)\n"
            "  --host HOST                 IPv4 address (default 127.0.0.1)\n"
            "  --port PORT                 WebSocket port (required)\n"
            "  --path PATH                 WebSocket path (default /)\n"
            "  --put-port PORT             HTTP port for PUTs (default: --port)\n"
            "  --mode simplepush|nchan     protocol (default simplepush)\n"
            "  --devices N                 WebSocket devices (default 1000)\n"
            "  --addresses M               destinations HOST, HOST+1, ... (127/8; default 1)\n"
            "  --connect-rate R            connects started per second, 0 = no limit (default 0)\n"
            "  --max-inflight N            connects not yet ready at once (default 256)\n"
            "  --connect-timeout S         the whole connect phase (default 120)\n"
            "  --handshake-timeout S       one device's connect to ready (default 30)\n"
            "  --no-register               hello only (simplepush): no channel, no PUTs\n"
            "  --ping-interval S           `{}` ping per device every S seconds, 0 = none\n"
            "  --settle S                  wait after the connect phase (default 2)\n"
            "  --put-rate R[,R...]         PUTs per second, one step per rate (default 0)\n"
            "  --duration S                seconds per step (default 10); 0 with no\n"
            "                              --put-rate: no step, only the connect phase\n"
            "  --drain S                   most seconds to wait for late versions (default 3)\n"
            "  --http-conns K              keep-alive HTTP connections (default 32)\n"
            "  --server-pid PID            sample this process's CPU and RSS (the server)\n"
            "  --aux-pid PID               another process to sample (memcached); up to 4\n"
            "  --ready-file PATH           written when the connect phase and settle are over\n"
            "  --seed N                    random seed (default: from the clock)\n"
            "  --quiet                     no progress lines on stderr\n");
}

static int opt_double(const char *name, const char *arg, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || end == arg || *end || !isfinite(v) || v < min || v > max) {
        fprintf(stderr, "spload: --%s: expected a number in [%g, %g], got '%s'\n", name, min, max,
                arg);
        return -1;
    }
    *out = v;
    return 0;
}

static int opt_ulong(const char *name, const char *arg, unsigned long long min,
                     unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] == '-' || v < min || v > max) {
        fprintf(stderr, "spload: --%s: expected an integer in [%llu, %llu], got '%s'\n", name, min,
                max, arg);
        return -1;
    }
    *out = v;
    return 0;
}

static int opt_url(const char *arg)
{
    const char *p = arg;
    if (strncmp(p, "ws://", 5) != 0) {
        fprintf(stderr, "spload: --url: only ws://HOST:PORT/PATH is supported\n");
        return -1;
    }
    p += 5;
    const char *colon = strchr(p, ':');
    const char *slash = strchr(p, '/');
    if (!colon || (slash && slash < colon) || (size_t)(colon - p) >= sizeof(L.host)) {
        fprintf(stderr, "spload: --url: expected ws://HOST:PORT/PATH\n");
        return -1;
    }
    memcpy(L.host, p, (size_t)(colon - p));
    L.host[colon - p] = '\0';
    char port[8];
    size_t pl = slash ? (size_t)(slash - colon - 1) : strlen(colon + 1);
    if (pl == 0 || pl >= sizeof(port)) {
        fprintf(stderr, "spload: --url: bad port\n");
        return -1;
    }
    memcpy(port, colon + 1, pl);
    port[pl] = '\0';
    unsigned long long v;
    if (opt_ulong("url", port, 1, 65535, &v) < 0)
        return -1;
    L.port = (uint16_t)v;
    snprintf(L.path, sizeof(L.path), "%s", slash ? slash : "/");
    return 0;
}

static int opt_rates(const char *arg)
{
    char buf[512];
    if (strlen(arg) >= sizeof(buf)) {
        fprintf(stderr, "spload: --put-rate: too long\n");
        return -1;
    }
    strcpy(buf, arg);
    L.n_rates = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (L.n_rates == LOAD_MAX_STEPS) {
            fprintf(stderr, "spload: --put-rate: at most %d rates\n", LOAD_MAX_STEPS);
            return -1;
        }
        if (opt_double("put-rate", t, 0, 1e6, &L.rates[L.n_rates]) < 0)
            return -1;
        L.n_rates++;
    }
    if (L.n_rates == 0) {
        fprintf(stderr, "spload: --put-rate: no rate given\n");
        return -1;
    }
    return 0;
}

enum {
    O_URL = 256,
    O_HOST,
    O_PORT,
    O_PATH,
    O_PUT_PORT,
    O_MODE,
    O_DEVICES,
    O_ADDRESSES,
    O_CONNECT_RATE,
    O_MAX_INFLIGHT,
    O_CONNECT_TIMEOUT,
    O_HANDSHAKE_TIMEOUT,
    O_NO_REGISTER,
    O_PING,
    O_SETTLE,
    O_PUT_RATE,
    O_DURATION,
    O_DRAIN,
    O_HTTP_CONNS,
    O_SERVER_PID,
    O_AUX_PID,
    O_READY_FILE,
    O_SEED,
    O_QUIET,
    O_HELP,
};

static int parse_options(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, O_URL},
        {"host", required_argument, NULL, O_HOST},
        {"port", required_argument, NULL, O_PORT},
        {"path", required_argument, NULL, O_PATH},
        {"put-port", required_argument, NULL, O_PUT_PORT},
        {"mode", required_argument, NULL, O_MODE},
        {"devices", required_argument, NULL, O_DEVICES},
        {"addresses", required_argument, NULL, O_ADDRESSES},
        {"connect-rate", required_argument, NULL, O_CONNECT_RATE},
        {"max-inflight", required_argument, NULL, O_MAX_INFLIGHT},
        {"connect-timeout", required_argument, NULL, O_CONNECT_TIMEOUT},
        {"handshake-timeout", required_argument, NULL, O_HANDSHAKE_TIMEOUT},
        {"no-register", no_argument, NULL, O_NO_REGISTER},
        {"ping-interval", required_argument, NULL, O_PING},
        {"settle", required_argument, NULL, O_SETTLE},
        {"put-rate", required_argument, NULL, O_PUT_RATE},
        {"duration", required_argument, NULL, O_DURATION},
        {"drain", required_argument, NULL, O_DRAIN},
        {"http-conns", required_argument, NULL, O_HTTP_CONNS},
        {"server-pid", required_argument, NULL, O_SERVER_PID},
        {"aux-pid", required_argument, NULL, O_AUX_PID},
        {"ready-file", required_argument, NULL, O_READY_FILE},
        {"seed", required_argument, NULL, O_SEED},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    snprintf(L.host, sizeof(L.host), "127.0.0.1");
    snprintf(L.path, sizeof(L.path), "/");
    L.n_devs = 1000;
    L.n_addrs = 1;
    L.max_inflight = 256;
    L.connect_timeout_s = 120;
    L.handshake_timeout_s = 30;
    L.settle_s = 2;
    L.duration_s = 10;
    L.drain_s = 3;
    L.n_hconns = 32;
    L.n_rates = 1;
    L.seed = load_rt_us() ^ ((uint64_t)getpid() << 32);
    unsigned long long v;
    int put_port = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case O_URL:
            rc = opt_url(optarg);
            break;
        case O_HOST:
            if (strlen(optarg) >= sizeof(L.host)) {
                fprintf(stderr, "spload: --host: too long\n");
                return -1;
            }
            snprintf(L.host, sizeof(L.host), "%s", optarg);
            break;
        case O_PORT:
            if ((rc = opt_ulong("port", optarg, 1, 65535, &v)) == 0)
                L.port = (uint16_t)v;
            break;
        case O_PATH:
            if (optarg[0] != '/' || strlen(optarg) >= sizeof(L.path)) {
                fprintf(stderr, "spload: --path: must start with / (at most 255 bytes)\n");
                return -1;
            }
            snprintf(L.path, sizeof(L.path), "%s", optarg);
            break;
        case O_PUT_PORT:
            if ((rc = opt_ulong("put-port", optarg, 1, 65535, &v)) == 0)
                put_port = (int)v;
            break;
        case O_MODE:
            if (strcmp(optarg, "simplepush") == 0) {
                L.mode = MODE_SIMPLEPUSH;
            } else if (strcmp(optarg, "nchan") == 0) {
                L.mode = MODE_NCHAN;
            } else {
                fprintf(stderr, "spload: --mode: simplepush or nchan\n");
                return -1;
            }
            break;
        case O_DEVICES:
            if ((rc = opt_ulong("devices", optarg, 1, 1000000, &v)) == 0)
                L.n_devs = (uint32_t)v;
            break;
        case O_ADDRESSES:
            if ((rc = opt_ulong("addresses", optarg, 1, LOAD_MAX_ADDRS, &v)) == 0)
                L.n_addrs = (int)v;
            break;
        case O_CONNECT_RATE:
            rc = opt_double("connect-rate", optarg, 0, 1e7, &L.connect_rate);
            break;
        case O_MAX_INFLIGHT:
            if ((rc = opt_ulong("max-inflight", optarg, 1, 1000000, &v)) == 0)
                L.max_inflight = (uint32_t)v;
            break;
        case O_CONNECT_TIMEOUT:
            rc = opt_double("connect-timeout", optarg, 0.1, 86400, &L.connect_timeout_s);
            break;
        case O_HANDSHAKE_TIMEOUT:
            rc = opt_double("handshake-timeout", optarg, 0.1, 86400, &L.handshake_timeout_s);
            break;
        case O_NO_REGISTER:
            L.no_register = true;
            break;
        case O_PING:
            rc = opt_double("ping-interval", optarg, 0, 86400, &L.ping_interval_s);
            break;
        case O_SETTLE:
            rc = opt_double("settle", optarg, 0, 86400, &L.settle_s);
            break;
        case O_PUT_RATE:
            rc = opt_rates(optarg);
            break;
        case O_DURATION:
            rc = opt_double("duration", optarg, 0, 86400, &L.duration_s);
            break;
        case O_DRAIN:
            rc = opt_double("drain", optarg, 0, 3600, &L.drain_s);
            break;
        case O_HTTP_CONNS:
            if ((rc = opt_ulong("http-conns", optarg, 1, 4096, &v)) == 0)
                L.n_hconns = (uint32_t)v;
            break;
        case O_SERVER_PID:
            if ((rc = opt_ulong("server-pid", optarg, 1, 0x7fffffff, &v)) == 0)
                L.srv_pid = (pid_t)v;
            break;
        case O_AUX_PID:
            if (L.n_aux == LOAD_MAX_AUX) {
                fprintf(stderr, "spload: --aux-pid: at most %d\n", LOAD_MAX_AUX);
                return -1;
            }
            if ((rc = opt_ulong("aux-pid", optarg, 1, 0x7fffffff, &v)) == 0)
                L.aux_pid[L.n_aux++] = (pid_t)v;
            break;
        case O_READY_FILE:
            L.ready_file = optarg;
            break;
        case O_SEED:
            if ((rc = opt_ulong("seed", optarg, 0, UINT64_MAX, &v)) == 0)
                L.seed = v;
            break;
        case O_QUIET:
            L.quiet = true;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
        if (rc < 0)
            return -1;
    }
    if (optind != argc) {
        fprintf(stderr, "spload: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (L.port == 0) {
        fprintf(stderr, "spload: --port (or --url) is required\n");
        return -1;
    }
    L.put_port = put_port ? (uint16_t)put_port : L.port;
    if (L.duration_s == 0 && L.n_rates == 1 && L.rates[0] == 0)
        L.n_rates = 0; /* connect (and settle) only: no step at all */
    bool puts = false;
    for (int k = 0; k < L.n_rates; k++)
        puts |= L.rates[k] > 0;
    if (puts && L.no_register) {
        fprintf(stderr, "spload: --no-register leaves no endpoint to PUT to\n");
        return -1;
    }
    return 0;
}

/* The destinations: host, host + 1, ... (the last octet counts up inside 127/8). */
static int setup_addresses(void)
{
    struct in_addr a;
    if (inet_pton(AF_INET, L.host, &a) != 1) {
        fprintf(stderr, "spload: --host: an IPv4 address is needed, got '%s'\n", L.host);
        return -1;
    }
    uint32_t base = ntohl(a.s_addr);
    if (L.n_addrs > 1 && ((base >> 24) != 127 || (base & 0xff) + (uint32_t)L.n_addrs > 255)) {
        fprintf(stderr, "spload: --addresses %d needs a 127.x.y.z host with room above it\n",
                L.n_addrs);
        return -1;
    }
    for (int k = 0; k < L.n_addrs; k++) {
        L.dst[k].sin_family = AF_INET;
        L.dst[k].sin_port = htons(L.port);
        L.dst[k].sin_addr.s_addr = htonl(base + (uint32_t)k);
    }
    return 0;
}

/* ---- samples ---- */

static void take_sample(struct sample *s)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s->t_ns = load_mono_ns();
    s->gen_cpu_ns = ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
                    ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
    s->srv_ok = L.srv_pid && procstat_read(L.srv_pid, &s->srv) == 0;
    for (int k = 0; k < L.n_aux; k++)
        s->aux_ok[k] = procstat_read(L.aux_pid[k], &s->aux[k]) == 0;
}

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

/* ---- the loop ---- */

static void tick(uint64_t now)
{
    if (connecting) {
        uint64_t allowed = L.n_devs;
        if (L.connect_rate > 0)
            allowed = (uint64_t)((double)(now - connect_t0_ns) / 1e9 * L.connect_rate) + 1;
        while (L.next_dev < L.n_devs && L.next_dev < allowed &&
               L.n_started - L.n_done < L.max_inflight)
            dev_connect(L.next_dev++);
    }
    if (now - last_sweep_ns >= SWEEP_NS) {
        last_sweep_ns = now;
        dev_sweep_timeouts(now);
    }
    if (L.pinging && L.ping_interval_s > 0) {
        uint64_t due =
            (uint64_t)((double)(now - L.ping_t0_ns) / 1e9 / L.ping_interval_s * (double)L.n_devs);
        if (L.ping_resync) {
            L.pings_done = due;
            L.ping_resync = false;
        }
        while (L.pings_done < due) {
            dev_ping((uint32_t)(L.pings_done % L.n_devs));
            L.pings_done++;
        }
    }
    if (L.hc)
        put_tick(now);
    if (L.putting) {
        double rate = L.cur->rate;
        uint64_t due = (uint64_t)((double)(now - L.step_t0_ns) / 1e9 * rate);
        if (due > L.step_sent) {
            uint64_t sched = L.step_t0_ns + (uint64_t)((double)L.step_sent * 1e9 / rate);
            if (now > sched && now - sched > L.cur->lag_max_ns)
                L.cur->lag_max_ns = now - sched;
        }
        while (L.step_sent < due) {
            put_schedule(now);
            L.step_sent++;
        }
    }
}

/* Runs the loop until done() says so, seconds pass, or a signal stops it. */
static void run_until(bool (*done)(void), double seconds)
{
    uint64_t deadline = load_mono_ns() + (uint64_t)(seconds * 1e9);
    struct epoll_event ev[512];
    for (;;) {
        uint64_t now = load_mono_ns();
        if (now >= next_tick_ns) {
            tick(now);
            next_tick_ns += TICK_NS;
            if (next_tick_ns <= now)
                next_tick_ns = now + TICK_NS;
        }
        if (L.stop || now >= deadline || (done && done()))
            return;
        uint64_t wait = next_tick_ns > now ? next_tick_ns - now : 0;
        int n = epoll_wait(L.ep, ev, 512, (int)((wait + 999999) / 1000000));
        for (int k = 0; k < n; k++) {
            uint64_t tag = ev[k].data.u64;
            uint32_t idx = (uint32_t)tag;
            if ((tag >> 32) == TAG_DEV)
                dev_event(idx, ev[k].events);
            else if ((tag >> 32) == TAG_HTTP)
                put_event(idx, ev[k].events);
        }
    }
}

static bool all_done(void)
{
    return L.next_dev == L.n_devs && L.n_done == L.n_started;
}

static bool drained(void)
{
    return L.n_pend == 0 && put_idle() && L.pings_out == 0;
}

/*
 * Stops pinging and waits (at most --drain seconds) until every version and every ping sent
 * so far has arrived, so that what a step sent is counted in that step; unanswered pings go
 * to s. Pinging then resumes on its schedule, skipping what fell due meanwhile.
 */
static void quiesce(struct step *s)
{
    bool pinging = L.pinging;
    L.pinging = false;
    run_until(drained, L.drain_s);
    s->pings_unanswered += L.pings_out;
    dev_forget_pings();
    L.pinging = pinging;
    L.ping_resync = true;
}

static void on_signal(int sig)
{
    (void)sig;
    L.stop = 1;
}

/* ---- phases ---- */

static double progress_at;

static bool connect_progress(void)
{
    if (!L.quiet) {
        double t = (double)(load_mono_ns() - connect_t0_ns) / 1e9;
        if (t >= progress_at) {
            fprintf(stderr, "spload: %.0f s: %u/%u devices ready, %u failed\n", t, L.n_ready,
                    L.n_devs, L.n_done - L.n_ready);
            progress_at = t + 5;
        }
    }
    return all_done();
}

static void phase_connect(void)
{
    L.cur = &L.connect;
    take_sample(&L.connect.s0);
    connect_t0_ns = load_mono_ns();
    progress_at = 5;
    connecting = true;
    run_until(connect_progress, L.connect_timeout_s);
    connecting = false;
    /* Whatever is still on its way now timed out. */
    for (uint32_t i = 0; i < L.next_dev; i++)
        if (L.devs[i].state > DEV_NEW && L.devs[i].state < DEV_READY)
            dev_fail(i, FAIL_TIMEOUT);
    ready_after_connect = L.n_ready;
    take_sample(&L.connect.s1);
}

/* Counts what is still pending after a drain: lost, superseded or never answered. */
static void settle_pending(struct step *s)
{
    for (uint32_t i = 0; i < L.n_devs; i++) {
        struct dev *d = &L.devs[i];
        for (uint16_t k = 0; k < d->n_pend; k++) {
            if (!d->pend[k].answered)
                s->unanswered++;
            else if (d->pend[k].version < d->last_rx)
                s->superseded++;
            else
                s->lost++;
        }
        d->n_pend = 0;
    }
    L.n_pend = 0;
}

static void phase_step(int k)
{
    struct step *s = &L.steps[k];
    s->rate = L.rates[k];
    L.cur = s;
    if (s->rate > 0 && L.hc) {
        /* Fresh connections for each PUT step; none stay open through an idle step. */
        if (put_open_all() < 0)
            fprintf(stderr, "spload: cannot open the HTTP connections: %s\n", strerror(errno));
        run_until(put_all_open, 5);
        if (!put_all_open())
            fprintf(stderr, "spload: not every HTTP connection opened\n");
    }
    take_sample(&s->s0);
    L.step_t0_ns = load_mono_ns();
    L.step_sent = 0;
    L.putting = s->rate > 0;
    run_until(NULL, L.duration_s);
    L.putting = false;
    s->duration_s = (double)(load_mono_ns() - L.step_t0_ns) / 1e9;
    quiesce(s);
    if (s->rate > 0) {
        put_drop_queued();
        put_close_all();
        settle_pending(s);
    }
    take_sample(&s->s1);
}

/* ---- the report ---- */

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
    double gen = gen_cpu_s(&s->s0, &s->s1) / span * 100;
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

static int report(bool interrupted, const struct sample *settled, const struct sample *end)
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

/* ---- main ---- */

static int setup(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    uint64_t need = (uint64_t)L.n_devs + L.n_hconns + 16;
    if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
        fprintf(stderr, "spload: %llu devices and connections need %llu fds; the limit is %llu\n",
                (unsigned long long)L.n_devs, (unsigned long long)need,
                (unsigned long long)rl.rlim_cur);
        return -1;
    }
    if (setup_addresses() < 0)
        return -1;
    L.rng = L.seed ? L.seed : 0x9e3779b97f4a7c15ull;
    L.ep = epoll_create1(EPOLL_CLOEXEC);
    L.devs = calloc(L.n_devs, sizeof(*L.devs));
    L.rbuf = malloc(LOAD_RBUF);
    L.hello_lat = hist_new();
    L.connect.lat = hist_new();
    L.connect.put_rtt = hist_new();
    if (L.ep < 0 || !L.devs || !L.rbuf || !L.hello_lat || !L.connect.lat || !L.connect.put_rtt)
        return -1;
    for (uint32_t i = 0; i < L.n_devs; i++)
        L.devs[i].fd = -1;
    bool puts = false;
    for (int k = 0; k < L.n_rates; k++) {
        L.steps[k].lat = hist_new();
        L.steps[k].put_rtt = hist_new();
        if (!L.steps[k].lat || !L.steps[k].put_rtt)
            return -1;
        puts |= L.rates[k] > 0;
    }
    if (puts) {
        L.hc = calloc(L.n_hconns, sizeof(*L.hc));
        if (!L.hc)
            return -1;
        for (uint32_t k = 0; k < L.n_hconns; k++) {
            L.hc[k].fd = -1;
            L.hc[k].reconnect_ns = UINT64_MAX; /* put_open_all opens them */
        }
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static void teardown(void)
{
    if (L.devs)
        dev_close_all();
    put_close_all();
    if (L.ep >= 0)
        close(L.ep);
    free(L.devs);
    free(L.hc);
    free(L.rbuf);
    hist_free(L.hello_lat);
    hist_free(L.connect.lat);
    hist_free(L.connect.put_rtt);
    for (int k = 0; k < L.n_rates; k++) {
        hist_free(L.steps[k].lat);
        hist_free(L.steps[k].put_rtt);
    }
}

int main(int argc, char **argv)
{
    L.ep = -1;
    if (parse_options(argc, argv) < 0)
        return 2;
    if (setup() < 0) {
        fprintf(stderr, "spload: setup failed: %s\n", strerror(errno));
        teardown();
        return 1;
    }
    if (L.srv_pid && procstat_read(L.srv_pid, &(struct procstat){0}) < 0) {
        fprintf(stderr, "spload: --server-pid %d: no such process\n", (int)L.srv_pid);
        teardown();
        return 1;
    }
    next_tick_ns = load_mono_ns();

    phase_connect();
    L.pinging = true;
    L.ping_t0_ns = load_mono_ns();
    run_until(NULL, L.settle_s);
    quiesce(&L.connect);
    struct sample settled;
    take_sample(&settled);
    if (L.ready_file) {
        FILE *f = fopen(L.ready_file, "w");
        if (f) {
            fprintf(f, "%u\n", L.n_ready);
            fclose(f);
        }
    }
    for (int k = 0; k < L.n_rates && !L.stop; k++)
        phase_step(k);
    struct sample end;
    take_sample(&end);
    int rc = report(L.stop != 0, &settled, &end);
    teardown();
    return rc;
}
