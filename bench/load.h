/*
 * load: the state spload's event loop drives, shared by its parts: the devices (one
 * WebSocket client each, load_dev.c), the PUT driver (keep-alive HTTP/1.1 connections,
 * load_put.c), the report (load_report.c), and the options, phases and loop (spload.c).
 *
 * One thread, one epoll instance, no locks. Everything lives in the one struct load `L`.
 *
 * Version tracking: every PUT carries version = CLOCK_REALTIME in microseconds at the moment
 * the 1 ms tick sends it (made strictly increasing per device). The version goes on the
 * device's pending list when it is sent; the notification that carries it takes it off
 * (latency = now - version, both read from the same clock) and a non-2xx answer takes it off
 * too. What is still pending after the drain and was answered 200/202 is lost (or
 * superseded, when the device has since received a newer version: SimplePush keeps only
 * the latest version of a channel, so that is allowed by the protocol but still reported).
 */
#ifndef SPLOAD_LOAD_H
#define SPLOAD_LOAD_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hist.h"
#include "procstat.h"

#define LOAD_MAX_AUX     4
#define LOAD_MAX_ADDRS   254
#define LOAD_MAX_STEPS   32
#define LOAD_HQ_CAP      512 /* queued PUTs per HTTP connection */
#define LOAD_RBUF        ((2u << 20) + 65536u)
#define LOAD_OUT_MAX     (1u << 20) /* unsent bytes a device may have before it is failed */
#define LOAD_STATUS_MAX  600
#define LOAD_ERRNO_SLOTS 8

enum load_mode { MODE_SIMPLEPUSH, MODE_NCHAN };

enum dev_state {
    DEV_NEW,        /* not started */
    DEV_CONNECTING, /* TCP connect in progress */
    DEV_UPGRADING,  /* upgrade request sent, waiting for 101 */
    DEV_HELLO,      /* hello sent */
    DEV_REGISTER,   /* register sent */
    DEV_READY,      /* registered (simplepush) or subscribed (nchan) */
    DEV_DEAD,       /* failed or closed; fd closed */
};

/* Why a device died; counted separately before and after it was ready. */
enum dev_fail {
    FAIL_CONNECT,   /* socket() or connect() failed */
    FAIL_HANDSHAKE, /* no valid 101 Switching Protocols */
    FAIL_HELLO,     /* hello not answered 200 */
    FAIL_REGISTER,  /* register not answered 200 with an endpoint */
    FAIL_PROTOCOL,  /* a malformed frame or message */
    FAIL_TIMEOUT,   /* not ready within the handshake timeout */
    FAIL_EOF,       /* the server closed the TCP connection without a close frame */
    FAIL_CLOSED,    /* the server sent a close frame */
    FAIL_IO,        /* read or write error */
    FAIL_NOMEM,
    FAIL_KINDS
};

struct pend {
    uint64_t version;
    bool answered; /* its PUT was answered 200/202 (201/202 for nchan) */
};

struct dev {
    int fd;
    uint8_t state;
    bool want_out;      /* EPOLLOUT is armed */
    uint16_t pings_out; /* `{}` pings not answered yet */
    uint16_t n_pend, cap_pend;
    uint32_t in_len, out_len, frag_len;
    uint64_t t_start_ns;   /* connect() */
    uint64_t last_version; /* the newest version sent to it */
    uint64_t last_rx;      /* the newest version it received */
    char *path;            /* PUT target: "/update/<token>" or "/pub/d<i>" */
    struct pend *pend;
    uint8_t *in;   /* the start of a frame not yet complete */
    uint8_t *out;  /* bytes the socket did not take yet */
    uint8_t *frag; /* a fragmented message being reassembled */
};

struct putreq {
    uint32_t dev;
    uint32_t retries; /* sent again after its connection closed before any answer */
    uint64_t version;
    uint64_t t_ns; /* when the tick sent (or queued) it */
};

enum hconn_state { HC_CLOSED, HC_CONNECTING, HC_OPEN };

struct hconn {
    int fd;
    uint8_t state;
    bool inflight; /* q[qhead] was written and awaits its response */
    bool want_out;
    uint32_t qhead, qlen;
    uint64_t reconnect_ns;
    size_t in_len, out_len, out_off;
    struct putreq q[LOAD_HQ_CAP];
    char in[8192];
    char out[1024];
};

/* A sample of every clock spload reads at a phase boundary. */
struct sample {
    uint64_t t_ns;
    uint64_t gen_cpu_ns; /* getrusage(RUSAGE_SELF) user + system */
    bool srv_ok;
    struct procstat srv;
    bool aux_ok[LOAD_MAX_AUX];
    struct procstat aux[LOAD_MAX_AUX];
    bool cpus_ok;
    struct procstat_cpus cpus; /* the whole host: shows load from other processes */
};

/* Counters of one step (one PUT rate), or of the connect phase. */
struct step {
    double rate;
    double duration_s;
    uint64_t puts;           /* PUTs sent (or queued) */
    uint64_t put_skipped;    /* due while no device was ready */
    uint64_t put_dropped;    /* due while every HTTP queue was full */
    uint64_t put_collisions; /* sent to a device that still had one pending */
    uint64_t put_conn_errors;
    uint64_t put_retries; /* re-sent once: the server closed an idle keep-alive connection */
    uint64_t put_unsent;  /* still queued when the drain ended */
    uint64_t status[LOAD_STATUS_MAX];
    uint64_t put_ok, put_bad;
    uint64_t messages;  /* notification messages */
    uint64_t updates;   /* versions received */
    uint64_t matched;   /* versions that were pending: delivered (and acked) */
    uint64_t unmatched; /* duplicates, or versions from before the step */
    uint64_t acks;
    uint64_t lost, superseded, unanswered;
    uint64_t pings, pongs;
    uint64_t pings_unanswered; /* still unanswered when the drain ended */
    uint64_t unexpected;       /* other messages */
    uint64_t lag_max_ns;       /* the most a tick ran behind the PUT schedule */
    struct hist *lat;          /* e2e: notification received - version, us */
    struct hist *put_rtt;      /* PUT queued -> response, us */
    struct sample s0, s1;
};

struct errno_count {
    int err;
    uint64_t n;
};

struct load {
    /* Options. */
    enum load_mode mode;
    char host[64];
    uint16_t port, put_port;
    char path[256];
    uint32_t n_devs;
    double connect_rate;
    uint32_t max_inflight;
    double connect_timeout_s, handshake_timeout_s;
    bool no_register;
    double ping_interval_s;
    double rates[LOAD_MAX_STEPS];
    int n_rates;
    double duration_s, drain_s, settle_s;
    uint32_t n_hconns;
    int n_addrs;
    pid_t srv_pid;
    pid_t aux_pid[LOAD_MAX_AUX];
    int n_aux;
    const char *ready_file;
    uint64_t seed;
    bool quiet;

    /* Run state. */
    int ep;
    volatile int stop;
    struct sockaddr_in dst[LOAD_MAX_ADDRS];
    struct dev *devs;
    struct hconn *hc;
    uint8_t *rbuf;
    uint64_t rng;
    uint32_t next_dev; /* the next device to connect */
    uint32_t n_started, n_done, n_ready;
    uint64_t n_pend; /* versions pending over every device */
    uint64_t pings_done;
    uint64_t ping_t0_ns;
    uint64_t pings_out; /* over every device */
    bool pinging;
    bool ping_resync; /* skip the pings that fell due while pinging was off */
    bool putting;
    uint64_t step_t0_ns;
    uint64_t step_sent;
    uint32_t hc_rr;
    struct step *cur; /* where counters go now */
    struct step connect;
    struct step steps[LOAD_MAX_STEPS];
    struct hist *hello_lat; /* connect() -> hello answered (or 101 for nchan), us */
    uint64_t fail_before[FAIL_KINDS], fail_after[FAIL_KINDS];
    uint64_t close_codes[5000];
    uint64_t close_other;
    struct errno_count connect_errno[LOAD_ERRNO_SLOTS];
    uint64_t protocol_errors;
};

extern struct load L;

/* Clocks. */
uint64_t load_mono_ns(void);
uint64_t load_rt_us(void);
uint64_t load_rand(void);

/* Devices (load_dev.c). */
void dev_connect(uint32_t i);
void dev_event(uint32_t i, uint32_t events);
void dev_fail(uint32_t i, enum dev_fail why);
void dev_ping(uint32_t i);
void dev_sweep_timeouts(uint64_t now_ns);
void dev_close_all(void);
/* Forgets every unanswered ping (after a drain counted them). */
void dev_forget_pings(void);
/* Takes version v off device i's pending list; returns whether it was there. */
bool dev_pend_take(struct dev *d, uint64_t v);
/* Marks version v of device i answered; returns whether it was still pending. */
bool dev_pend_answered(struct dev *d, uint64_t v);
int dev_pend_add(struct dev *d, uint64_t v);

/* The PUT driver (load_put.c). */
int put_open_all(void);
void put_schedule(uint64_t now_ns);
void put_event(uint32_t k, uint32_t events);
void put_tick(uint64_t now_ns);
bool put_idle(void);
bool put_all_open(void);
void put_drop_queued(void);
void put_close_all(void);

/*
 * The report (load_report.c): the JSON on stdout and the summary on stderr. Returns the exit
 * status: 0 when every device was ready and nothing failed or was lost, else 3.
 */
int report_write(bool interrupted, uint32_t ready_after_connect, const struct sample *settled,
                 const struct sample *end);

/* epoll tags: the kind in the high half, the index in the low half. */
#define TAG_DEV           1ull
#define TAG_HTTP          2ull
#define LOAD_TAG(kind, i) (((uint64_t)(kind) << 32) | (uint32_t)(i))

#endif
