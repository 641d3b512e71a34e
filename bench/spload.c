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
 * The options, the phases and the epoll loop live here; the devices are in load_dev.c, the
 * PUT driver in load_put.c and the report in load_report.c.
 */
#include "load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
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
    s->cpus_ok = procstat_cpus_read(&s->cpus) == 0;
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
    int rc = report_write(L.stop != 0, ready_after_connect, &settled, &end);
    teardown();
    return rc;
}
