/*
 * load_put: spload's PUT driver: K keep-alive HTTP/1.1 connections to the server, fed by an
 * open-loop schedule (see load.h).
 *
 * Each tick (1 ms) sends every PUT that is due by then, whatever the answers so far: a
 * slow server makes queues and latency grow instead of slowing the schedule down (no
 * coordinated omission). A connection carries one request at a time (no pipelining);
 * PUTs due while every connection is busy wait in the least loaded connection's queue, and
 * their version, taken when the tick sent them to the queue, makes that wait part of the
 * measured latency.
 *
 * Each PUT goes to a random ready device that has no version pending, so two versions of
 * one channel are never in flight together (the server would coalesce them: SimplePush keeps
 * only the latest version of a channel). When 16 random picks all find busy devices, one of
 * them gets a second version and the collision is counted.
 */
#include "load.h"
#include "wire.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PUT_PICKS        16
#define PUT_RECONNECT_NS 10000000ull

static void hc_arm(uint32_t k, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u64 = LOAD_TAG(TAG_HTTP, k)};
    epoll_ctl(L.ep, EPOLL_CTL_MOD, L.hc[k].fd, &ev);
}

static int hc_connect(uint32_t k)
{
    struct hconn *h = &L.hc[k];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = L.dst[0];
    sa.sin_port = htons(L.put_port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = LOAD_TAG(TAG_HTTP, k)};
    if (epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return -1;
    }
    h->fd = fd;
    h->state = HC_CONNECTING;
    h->in_len = h->out_len = h->out_off = 0;
    h->inflight = false;
    h->want_out = true;
    return 0;
}

/*
 * Drops connection k; its queue waits for a reconnect. The request in flight is sent once
 * more when no byte of an answer had come (the server closed an idle keep-alive connection
 * as the request went out, a race every HTTP client meets; PUT is idempotent), otherwise it
 * is an error.
 */
static void hc_drop(uint32_t k)
{
    struct hconn *h = &L.hc[k];
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
    h->state = HC_CLOSED;
    h->reconnect_ns = load_mono_ns() + PUT_RECONNECT_NS;
    if (h->inflight && h->in_len == 0 && h->q[h->qhead].retries == 0) {
        h->q[h->qhead].retries++;
        h->inflight = false;
        L.cur->put_retries++;
    } else if (h->inflight) {
        struct putreq *r = &h->q[h->qhead];
        L.cur->put_conn_errors++;
        dev_pend_take(&L.devs[r->dev], r->version);
        h->qhead = (h->qhead + 1) % LOAD_HQ_CAP;
        h->qlen--;
        h->inflight = false;
    }
}

/* Writes what is left of h->out. */
static void hc_flush(uint32_t k)
{
    struct hconn *h = &L.hc[k];
    while (h->out_off < h->out_len) {
        ssize_t n =
            send(h->fd, h->out + h->out_off, h->out_len - h->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                hc_drop(k);
                return;
            }
            break;
        }
        h->out_off += (size_t)n;
    }
    bool want = h->out_off < h->out_len;
    if (want != h->want_out) {
        h->want_out = want;
        hc_arm(k, want ? EPOLLIN | EPOLLOUT : EPOLLIN);
    }
}

/* Sends the head of the queue when the connection is free. */
static void hc_kick(uint32_t k)
{
    struct hconn *h = &L.hc[k];
    if (h->state != HC_OPEN || h->inflight || h->qlen == 0)
        return;
    struct putreq *r = &h->q[h->qhead];
    struct dev *d = &L.devs[r->dev];
    char body[32];
    int bl;
    int n;
    if (L.mode == MODE_NCHAN) {
        bl = snprintf(body, sizeof(body), "%llu", (unsigned long long)r->version);
        n = snprintf(h->out, sizeof(h->out),
                     "POST /pub/d%u HTTP/1.1\r\nHost: %s:%u\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     r->dev, L.host, (unsigned)L.put_port, bl, body);
    } else {
        bl = snprintf(body, sizeof(body), "version=%llu", (unsigned long long)r->version);
        n = snprintf(h->out, sizeof(h->out),
                     "PUT %s HTTP/1.1\r\nHost: %s:%u\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     d->path, L.host, (unsigned)L.put_port, bl, body);
    }
    if (n <= 0 || (size_t)n >= sizeof(h->out)) {
        /* Cannot happen with a server's token (90 characters); count it and move on. */
        L.cur->put_bad++;
        dev_pend_take(d, r->version);
        h->qhead = (h->qhead + 1) % LOAD_HQ_CAP;
        h->qlen--;
        return;
    }
    h->out_len = (size_t)n;
    h->out_off = 0;
    h->inflight = true;
    hc_flush(k);
}

/* One whole response arrived for the request in flight. */
static void hc_response(uint32_t k, int status)
{
    struct hconn *h = &L.hc[k];
    struct step *s = L.cur;
    if (!h->inflight || h->qlen == 0) {
        L.protocol_errors++;
        return;
    }
    struct putreq *r = &h->q[h->qhead];
    h->qhead = (h->qhead + 1) % LOAD_HQ_CAP;
    h->qlen--;
    h->inflight = false;
    s->status[status < LOAD_STATUS_MAX ? status : 0]++;
    hist_add(s->put_rtt, (load_mono_ns() - r->t_ns) / 1000);
    bool ok =
        L.mode == MODE_NCHAN ? (status == 201 || status == 202) : (status == 200 || status == 202);
    struct dev *d = &L.devs[r->dev];
    if (ok) {
        s->put_ok++;
        dev_pend_answered(d, r->version);
    } else {
        s->put_bad++;
        dev_pend_take(d, r->version);
    }
}

static void hc_readable(uint32_t k)
{
    struct hconn *h = &L.hc[k];
    ssize_t n = read(h->fd, h->in + h->in_len, sizeof(h->in) - h->in_len);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            hc_drop(k);
        return;
    }
    if (n == 0) {
        hc_drop(k);
        return;
    }
    h->in_len += (size_t)n;
    size_t pos = 0;
    for (;;) {
        struct wire_http_head hd;
        int r = wire_http_head_parse(h->in + pos, h->in_len - pos, &hd);
        if (r < 0 || (r == 1 && hd.chunked)) {
            L.protocol_errors++;
            hc_drop(k);
            return;
        }
        if (r == 0)
            break;
        size_t body = hd.content_len > 0 ? (size_t)hd.content_len : 0;
        if (hd.head_len + body > sizeof(h->in)) {
            L.protocol_errors++;
            hc_drop(k);
            return;
        }
        if (h->in_len - pos < hd.head_len + body)
            break;
        pos += hd.head_len + body;
        hc_response(k, hd.status);
        if (hd.close) {
            hc_drop(k);
            return;
        }
    }
    memmove(h->in, h->in + pos, h->in_len - pos);
    h->in_len -= pos;
    hc_kick(k);
}

void put_event(uint32_t k, uint32_t events)
{
    struct hconn *h = &L.hc[k];
    if (h->state == HC_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
            L.cur->put_conn_errors++;
            hc_drop(k);
            return;
        }
        h->state = HC_OPEN;
        h->want_out = false;
        hc_arm(k, EPOLLIN);
        hc_kick(k);
        return;
    }
    if (h->state != HC_OPEN)
        return;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        hc_readable(k);
    if (h->state == HC_OPEN && (events & EPOLLOUT))
        hc_flush(k);
}

int put_open_all(void)
{
    for (uint32_t k = 0; k < L.n_hconns; k++) {
        if (L.hc[k].state == HC_CLOSED && hc_connect(k) < 0)
            return -1;
    }
    return 0;
}

/* A ready device with nothing pending, chosen at random (see the file comment). */
static int64_t put_pick_device(void)
{
    if (L.n_ready == 0)
        return -1;
    int64_t busy = -1;
    for (int t = 0; t < PUT_PICKS; t++) {
        uint32_t i = (uint32_t)(load_rand() % L.n_devs);
        struct dev *d = &L.devs[i];
        if (d->state != DEV_READY)
            continue;
        if (d->n_pend == 0)
            return i;
        busy = i;
    }
    if (busy < 0) {
        /* Few devices are ready: walk from a random point to the next ready one. */
        uint32_t start = (uint32_t)(load_rand() % L.n_devs);
        for (uint32_t j = 0; j < L.n_devs; j++) {
            uint32_t i = (start + j) % L.n_devs;
            if (L.devs[i].state == DEV_READY) {
                if (L.devs[i].n_pend == 0)
                    return i;
                busy = i;
            }
        }
    }
    if (busy >= 0)
        L.cur->put_collisions++;
    return busy;
}

/* The connection with the shortest queue (free ones first), starting round-robin. */
static int64_t put_pick_conn(void)
{
    int64_t best = -1;
    uint32_t best_len = LOAD_HQ_CAP;
    for (uint32_t j = 0; j < L.n_hconns; j++) {
        uint32_t k = (L.hc_rr + j) % L.n_hconns;
        uint32_t len = L.hc[k].qlen + (L.hc[k].state != HC_OPEN ? 1 : 0);
        if (len < best_len) {
            best = k;
            best_len = len;
            if (len == 0)
                break;
        }
    }
    L.hc_rr = (L.hc_rr + 1) % L.n_hconns;
    return best;
}

void put_schedule(uint64_t now_ns)
{
    struct step *s = L.cur;
    int64_t i = put_pick_device();
    if (i < 0) {
        s->put_skipped++;
        return;
    }
    int64_t k = put_pick_conn();
    if (k < 0 || L.hc[k].qlen >= LOAD_HQ_CAP) {
        s->put_dropped++;
        return;
    }
    struct dev *d = &L.devs[i];
    uint64_t v = load_rt_us();
    if (v <= d->last_version)
        v = d->last_version + 1;
    if (dev_pend_add(d, v) < 0) {
        s->put_dropped++;
        return;
    }
    d->last_version = v;
    struct hconn *h = &L.hc[k];
    struct putreq *r = &h->q[(h->qhead + h->qlen) % LOAD_HQ_CAP];
    r->dev = (uint32_t)i;
    r->retries = 0;
    r->version = v;
    r->t_ns = now_ns;
    h->qlen++;
    s->puts++;
    hc_kick((uint32_t)k);
}

/* Reconnects dropped connections (never before put_open_all: reconnect_ns starts at max). */
void put_tick(uint64_t now_ns)
{
    for (uint32_t k = 0; k < L.n_hconns; k++) {
        struct hconn *h = &L.hc[k];
        if (h->state == HC_CLOSED && now_ns >= h->reconnect_ns && hc_connect(k) < 0)
            h->reconnect_ns = now_ns + PUT_RECONNECT_NS;
    }
}

bool put_idle(void)
{
    if (!L.hc)
        return true;
    for (uint32_t k = 0; k < L.n_hconns; k++)
        if (L.hc[k].qlen)
            return false;
    return true;
}

bool put_all_open(void)
{
    for (uint32_t k = 0; k < L.n_hconns; k++)
        if (L.hc[k].state != HC_OPEN)
            return false;
    return true;
}

void put_drop_queued(void)
{
    if (!L.hc)
        return;
    for (uint32_t k = 0; k < L.n_hconns; k++) {
        struct hconn *h = &L.hc[k];
        uint32_t keep = h->inflight ? 1 : 0;
        while (h->qlen > keep) {
            struct putreq *r = &h->q[(h->qhead + h->qlen - 1) % LOAD_HQ_CAP];
            dev_pend_take(&L.devs[r->dev], r->version);
            h->qlen--;
            L.cur->put_unsent++;
        }
    }
}

void put_close_all(void)
{
    if (!L.hc)
        return;
    for (uint32_t k = 0; k < L.n_hconns; k++) {
        struct hconn *h = &L.hc[k];
        if (h->fd >= 0)
            close(h->fd);
        h->fd = -1;
        h->state = HC_CLOSED;
        h->inflight = false;
        h->qhead = h->qlen = 0;
        h->in_len = h->out_len = h->out_off = 0;
        h->reconnect_ns = UINT64_MAX; /* until put_open_all */
    }
}
