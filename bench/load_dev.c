/*
 * load_dev: spload's devices, one non-blocking WebSocket client each (see load.h).
 *
 * simplepush mode: connect, upgrade (sub-protocol push-notification), hello, register one
 * channel, keep the pushEndpoint's path; then ack every notification and count the `{}`
 * answers to pings. nchan mode: connect and upgrade on /sub/d<i>; each text frame is a
 * version; `{}` answers pings.
 *
 * A device's fd is open exactly while its state is between CONNECTING and READY; dev_fail
 * closes it, frees its buffers (never its pending list, which the report still reads) and
 * makes it DEAD. Every function that may fail a device returns -1 afterwards, and callers
 * stop touching it.
 */
#include "load.h"
#include "wire.h"

#include <errno.h>
#include <jansson.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* The channelID of device i: a UUIDv4-shaped string derived from the seed and i. */
static void dev_chid(uint32_t i, char out[37])
{
    uint64_t a = L.seed ^ (0x9e3779b97f4a7c15ull * (i + 1));
    a ^= a >> 31;
    a *= 0xbf58476d1ce4e5b9ull;
    a ^= a >> 27;
    uint64_t b = a * 0x94d049bb133111ebull;
    b ^= b >> 29;
    snprintf(out, 37, "%08x-%04x-4%03x-8%03x-%012llx", (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff, (unsigned)(b >> 52) & 0xfff,
             (unsigned long long)(b & 0xffffffffffffull));
}

static void dev_arm(uint32_t i, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u64 = LOAD_TAG(TAG_DEV, i)};
    epoll_ctl(L.ep, EPOLL_CTL_MOD, L.devs[i].fd, &ev);
}

static void dev_free_buffers(struct dev *d)
{
    free(d->in);
    free(d->out);
    free(d->frag);
    d->in = d->out = d->frag = NULL;
    d->in_len = d->out_len = d->frag_len = 0;
}

static void count_errno(int err)
{
    for (int k = 0; k < LOAD_ERRNO_SLOTS; k++) {
        if (L.connect_errno[k].n == 0 || L.connect_errno[k].err == err) {
            L.connect_errno[k].err = err;
            L.connect_errno[k].n++;
            return;
        }
    }
    L.connect_errno[LOAD_ERRNO_SLOTS - 1].n++;
}

void dev_fail(uint32_t i, enum dev_fail why)
{
    struct dev *d = &L.devs[i];
    if (d->state == DEV_DEAD || d->state == DEV_NEW)
        return;
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
    dev_free_buffers(d);
    L.pings_out -= d->pings_out;
    d->pings_out = 0;
    if (d->state == DEV_READY) {
        L.n_ready--;
        L.fail_after[why]++;
    } else {
        L.n_done++;
        L.fail_before[why]++;
    }
    d->state = DEV_DEAD;
}

/* Sends len bytes to device i, keeping what the socket does not take. */
static int dev_send(uint32_t i, const void *buf, size_t len)
{
    struct dev *d = &L.devs[i];
    const uint8_t *p = buf;
    if (d->out_len == 0) {
        ssize_t n = send(d->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n == (ssize_t)len)
            return 0;
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                dev_fail(i, FAIL_IO);
                return -1;
            }
            n = 0;
        }
        p += n;
        len -= (size_t)n;
    }
    if (d->out_len + len > LOAD_OUT_MAX) {
        dev_fail(i, FAIL_IO);
        return -1;
    }
    uint8_t *o = realloc(d->out, d->out_len + len);
    if (!o) {
        dev_fail(i, FAIL_NOMEM);
        return -1;
    }
    memcpy(o + d->out_len, p, len);
    d->out = o;
    d->out_len += (uint32_t)len;
    if (!d->want_out) {
        d->want_out = true;
        dev_arm(i, EPOLLIN | EPOLLOUT);
    }
    return 0;
}

static int dev_send_frame(uint32_t i, int opcode, const void *payload, size_t len)
{
    uint8_t stack[512];
    uint8_t *buf =
        len + WIRE_WS_HEADER_MAX <= sizeof(stack) ? stack : malloc(len + WIRE_WS_HEADER_MAX);
    if (!buf) {
        dev_fail(i, FAIL_NOMEM);
        return -1;
    }
    size_t n = wire_ws_encode(buf, opcode, payload, len, (uint32_t)load_rand());
    int rc = dev_send(i, buf, n);
    if (buf != stack)
        free(buf);
    return rc;
}

static int dev_send_text(uint32_t i, const char *s)
{
    return dev_send_frame(i, WIRE_OP_TEXT, s, strlen(s));
}

void dev_connect(uint32_t i)
{
    struct dev *d = &L.devs[i];
    L.n_started++;
    d->t_start_ns = load_mono_ns();
    d->state = DEV_CONNECTING;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        count_errno(errno);
        dev_fail(i, FAIL_CONNECT);
        return;
    }
    d->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const struct sockaddr_in *sa = &L.dst[i % (uint32_t)L.n_addrs];
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 && errno != EINPROGRESS) {
        count_errno(errno);
        dev_fail(i, FAIL_CONNECT);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = LOAD_TAG(TAG_DEV, i)};
    if (epoll_ctl(L.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        count_errno(errno);
        dev_fail(i, FAIL_CONNECT);
    }
}

/* The TCP connection is up: send the upgrade request. */
static void dev_connected(uint32_t i)
{
    struct dev *d = &L.devs[i];
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
        count_errno(err ? err : errno);
        dev_fail(i, FAIL_CONNECT);
        return;
    }
    char req[512];
    char path[300];
    if (L.mode == MODE_NCHAN)
        snprintf(path, sizeof(path), "/sub/d%u", i);
    else
        snprintf(path, sizeof(path), "%s", L.path);
    int n =
        snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: " WIRE_WS_KEY "\r\n"
                 "Sec-WebSocket-Version: 13\r\n%s\r\n",
                 path, L.host, (unsigned)L.port,
                 L.mode == MODE_SIMPLEPUSH ? "Sec-WebSocket-Protocol: push-notification\r\n" : "");
    d->state = DEV_UPGRADING;
    d->want_out = false;
    dev_arm(i, EPOLLIN);
    dev_send(i, req, (size_t)n);
}

static void dev_ready(uint32_t i)
{
    struct dev *d = &L.devs[i];
    d->state = DEV_READY;
    L.n_ready++;
    L.n_done++;
    hist_add(L.hello_lat, (load_mono_ns() - d->t_start_ns) / 1000);
}

int dev_pend_add(struct dev *d, uint64_t v)
{
    if (d->n_pend == d->cap_pend) {
        uint16_t cap = d->cap_pend ? (uint16_t)(d->cap_pend * 2) : 2;
        if (cap < d->cap_pend)
            return -1;
        struct pend *p = realloc(d->pend, cap * sizeof(*p));
        if (!p)
            return -1;
        d->pend = p;
        d->cap_pend = cap;
    }
    d->pend[d->n_pend].version = v;
    d->pend[d->n_pend].answered = false;
    d->n_pend++;
    L.n_pend++;
    return 0;
}

bool dev_pend_take(struct dev *d, uint64_t v)
{
    for (uint16_t k = 0; k < d->n_pend; k++) {
        if (d->pend[k].version == v) {
            d->pend[k] = d->pend[--d->n_pend];
            L.n_pend--;
            return true;
        }
    }
    return false;
}

bool dev_pend_answered(struct dev *d, uint64_t v)
{
    for (uint16_t k = 0; k < d->n_pend; k++) {
        if (d->pend[k].version == v) {
            d->pend[k].answered = true;
            return true;
        }
    }
    return false;
}

/* Version v reached device i at realtime now_us. */
static void dev_got_version(struct dev *d, uint64_t v, uint64_t now_us)
{
    struct step *s = L.cur;
    s->updates++;
    if (dev_pend_take(d, v)) {
        s->matched++;
        hist_add(s->lat, now_us > v ? now_us - v : 0);
    } else {
        s->unmatched++;
    }
    if (v > d->last_rx)
        d->last_rx = v;
}

/* A notification: record every update, then ack them all in one message. */
static int dev_notification(uint32_t i, json_t *msg)
{
    struct dev *d = &L.devs[i];
    json_t *ups = json_object_get(msg, "updates");
    size_t n = json_array_size(ups);
    if (!json_is_array(ups) || n == 0) {
        L.protocol_errors++;
        return 0;
    }
    L.cur->messages++;
    uint64_t now_us = load_rt_us();
    char chid[37];
    dev_chid(i, chid);
    size_t cap = 64 + n * 96;
    char stack[512];
    char *ack = cap <= sizeof(stack) ? stack : malloc(cap);
    if (!ack) {
        dev_fail(i, FAIL_NOMEM);
        return -1;
    }
    size_t pos = (size_t)snprintf(ack, cap, "{\"messageType\":\"ack\",\"updates\":[");
    bool first = true;
    size_t k;
    json_t *u;
    json_array_foreach(ups, k, u)
    {
        const char *c = json_string_value(json_object_get(u, "channelID"));
        json_t *jv = json_object_get(u, "version");
        if (!c || !json_is_integer(jv) || strcmp(c, chid) != 0) {
            L.protocol_errors++;
            continue;
        }
        json_int_t v = json_integer_value(jv);
        dev_got_version(d, (uint64_t)v, now_us);
        pos += (size_t)snprintf(ack + pos, cap - pos, "%s{\"channelID\":\"%s\",\"version\":%lld}",
                                first ? "" : ",", chid, (long long)v);
        first = false;
    }
    pos += (size_t)snprintf(ack + pos, cap - pos, "]}");
    int rc = dev_send_frame(i, WIRE_OP_TEXT, ack, pos);
    if (ack != stack)
        free(ack);
    if (rc == 0)
        L.cur->acks++;
    return rc;
}

/* The answer `{}` to a ping. */
static void dev_pong(struct dev *d)
{
    L.cur->pongs++;
    if (d->pings_out) {
        d->pings_out--;
        L.pings_out--;
    }
}

/* The status of a reply of type want, or -1 when msg is not one. */
static int dev_reply_status(json_t *msg, const char *want)
{
    const char *t = json_string_value(json_object_get(msg, "messageType"));
    json_t *st = json_object_get(msg, "status");
    if (!t || strcmp(t, want) != 0 || !json_is_integer(st))
        return -1;
    return (int)json_integer_value(st);
}

static int dev_message_simplepush(uint32_t i, const uint8_t *p, size_t len)
{
    struct dev *d = &L.devs[i];
    if (d->state == DEV_READY && len == 2 && p[0] == '{' && p[1] == '}') {
        dev_pong(d);
        return 0;
    }
    json_t *msg = json_loadb((const char *)p, len, 0, NULL);
    if (!json_is_object(msg)) {
        json_decref(msg);
        L.protocol_errors++;
        dev_fail(i, FAIL_PROTOCOL);
        return -1;
    }
    int rc = 0;
    switch (d->state) {
    case DEV_HELLO:
        if (dev_reply_status(msg, "hello") != 200) {
            dev_fail(i, FAIL_HELLO);
            rc = -1;
        } else if (L.no_register) {
            dev_ready(i);
        } else {
            char chid[37], reg[128];
            dev_chid(i, chid);
            snprintf(reg, sizeof(reg), "{\"messageType\":\"register\",\"channelID\":\"%s\"}", chid);
            d->state = DEV_REGISTER;
            rc = dev_send_text(i, reg);
        }
        break;
    case DEV_REGISTER: {
        const char *ep = json_string_value(json_object_get(msg, "pushEndpoint"));
        const char *p2 = ep ? strstr(ep, "/update/") : NULL;
        if (dev_reply_status(msg, "register") != 200 || !p2) {
            dev_fail(i, FAIL_REGISTER);
            rc = -1;
        } else if (!(d->path = strdup(p2))) {
            dev_fail(i, FAIL_NOMEM);
            rc = -1;
        } else {
            dev_ready(i);
        }
        break;
    }
    case DEV_READY: {
        const char *t = json_string_value(json_object_get(msg, "messageType"));
        if (t && strcmp(t, "notification") == 0)
            rc = dev_notification(i, msg);
        else
            L.cur->unexpected++;
        break;
    }
    default:
        L.cur->unexpected++;
        break;
    }
    json_decref(msg);
    return rc;
}

static int dev_message_nchan(uint32_t i, const uint8_t *p, size_t len)
{
    struct dev *d = &L.devs[i];
    if (len == 2 && p[0] == '{' && p[1] == '}') {
        dev_pong(d);
        return 0;
    }
    uint64_t v = 0;
    size_t k = 0;
    for (; k < len && k < 20 && p[k] >= '0' && p[k] <= '9'; k++)
        v = v * 10 + (uint64_t)(p[k] - '0');
    if (k == 0 || k != len) {
        L.cur->unexpected++;
        return 0;
    }
    L.cur->messages++;
    dev_got_version(d, v, load_rt_us());
    return 0;
}

static int dev_message(uint32_t i, const uint8_t *p, size_t len)
{
    if (L.mode == MODE_NCHAN)
        return dev_message_nchan(i, p, len);
    return dev_message_simplepush(i, p, len);
}

static int dev_frame(uint32_t i, const struct wire_frame *f)
{
    struct dev *d = &L.devs[i];
    switch (f->opcode) {
    case WIRE_OP_PING:
        return dev_send_frame(i, WIRE_OP_PONG, f->payload, f->len);
    case WIRE_OP_PONG:
        return 0;
    case WIRE_OP_CLOSE: {
        unsigned code = f->len >= 2 ? ((unsigned)f->payload[0] << 8) | f->payload[1] : 1005;
        if (code < sizeof(L.close_codes) / sizeof(L.close_codes[0]))
            L.close_codes[code]++;
        else
            L.close_other++;
        dev_fail(i, FAIL_CLOSED);
        return -1;
    }
    case WIRE_OP_BINARY:
        L.protocol_errors++;
        dev_fail(i, FAIL_PROTOCOL);
        return -1;
    default:
        break;
    }
    /* Text or continuation: whole messages go straight through, fragments are gathered. */
    bool cont = f->opcode == WIRE_OP_CONT;
    if (cont != (d->frag != NULL)) {
        L.protocol_errors++;
        dev_fail(i, FAIL_PROTOCOL);
        return -1;
    }
    if (f->fin && !cont)
        return dev_message(i, f->payload, f->len);
    if (d->frag_len + f->len > WIRE_WS_PAYLOAD_MAX) {
        L.protocol_errors++;
        dev_fail(i, FAIL_PROTOCOL);
        return -1;
    }
    uint8_t *g = realloc(d->frag, d->frag_len + f->len + 1);
    if (!g) {
        dev_fail(i, FAIL_NOMEM);
        return -1;
    }
    memcpy(g + d->frag_len, f->payload, f->len);
    d->frag = g;
    d->frag_len += (uint32_t)f->len;
    if (!f->fin)
        return 0;
    int rc = dev_message(i, d->frag, d->frag_len);
    if (d->state != DEV_DEAD) {
        free(d->frag);
        d->frag = NULL;
        d->frag_len = 0;
    }
    return rc;
}

/* The 101 arrived: say hello (simplepush) or be ready (nchan). */
static int dev_upgraded(uint32_t i)
{
    if (L.mode == MODE_NCHAN) {
        dev_ready(i);
        return 0;
    }
    L.devs[i].state = DEV_HELLO;
    return dev_send_text(i, "{\"messageType\":\"hello\",\"channelIDs\":[]}");
}

static void dev_readable(uint32_t i)
{
    struct dev *d = &L.devs[i];
    size_t have = d->in_len;
    if (have)
        memcpy(L.rbuf, d->in, have);
    ssize_t n = read(d->fd, L.rbuf + have, LOAD_RBUF - have);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            dev_fail(i, FAIL_IO);
        return;
    }
    if (n == 0) {
        dev_fail(i, FAIL_EOF);
        return;
    }
    size_t len = have + (size_t)n, pos = 0;
    if (d->state == DEV_UPGRADING) {
        struct wire_http_head h;
        int r = wire_http_head_parse((const char *)L.rbuf, len, &h);
        if (r < 0 || (r == 1 && (h.status != 101 || !h.ws_accept_ok))) {
            dev_fail(i, FAIL_HANDSHAKE);
            return;
        }
        if (r == 0)
            goto keep; /* an incomplete head: keep all of it (pos is 0) */
        pos = h.head_len;
        if (dev_upgraded(i) < 0)
            return;
    }
    while (pos < len) {
        struct wire_frame f;
        ssize_t r = wire_ws_decode(L.rbuf + pos, len - pos, &f);
        if (r < 0) {
            L.protocol_errors++;
            dev_fail(i, FAIL_PROTOCOL);
            return;
        }
        if (r == 0)
            break;
        pos += (size_t)r;
        if (dev_frame(i, &f) < 0)
            return;
    }
    if (d->state == DEV_DEAD)
        return;
keep:
    if (pos == len) {
        free(d->in);
        d->in = NULL;
        d->in_len = 0;
        return;
    }
    uint8_t *k = realloc(d->in, len - pos);
    if (!k) {
        dev_fail(i, FAIL_NOMEM);
        return;
    }
    memmove(k, L.rbuf + pos, len - pos);
    d->in = k;
    d->in_len = (uint32_t)(len - pos);
}

static void dev_writable(uint32_t i)
{
    struct dev *d = &L.devs[i];
    if (d->out_len) {
        ssize_t n = send(d->fd, d->out, d->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                dev_fail(i, FAIL_IO);
            return;
        }
        memmove(d->out, d->out + n, d->out_len - (size_t)n);
        d->out_len -= (uint32_t)n;
    }
    if (d->out_len == 0) {
        free(d->out);
        d->out = NULL;
        d->want_out = false;
        dev_arm(i, EPOLLIN);
    }
}

void dev_event(uint32_t i, uint32_t events)
{
    struct dev *d = &L.devs[i];
    if (d->state == DEV_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            dev_connected(i);
        return;
    }
    if (d->state == DEV_DEAD || d->state == DEV_NEW)
        return;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        dev_readable(i);
    if (d->state != DEV_DEAD && (events & EPOLLOUT))
        dev_writable(i);
}

void dev_ping(uint32_t i)
{
    if (L.devs[i].state != DEV_READY)
        return;
    if (dev_send_frame(i, WIRE_OP_TEXT, "{}", 2) == 0) {
        L.cur->pings++;
        L.devs[i].pings_out++;
        L.pings_out++;
    }
}

void dev_forget_pings(void)
{
    for (uint32_t i = 0; i < L.n_devs; i++)
        L.devs[i].pings_out = 0;
    L.pings_out = 0;
}

void dev_sweep_timeouts(uint64_t now_ns)
{
    uint64_t limit = (uint64_t)(L.handshake_timeout_s * 1e9);
    for (uint32_t i = 0; i < L.next_dev; i++) {
        struct dev *d = &L.devs[i];
        if (d->state >= DEV_CONNECTING && d->state < DEV_READY && now_ns > d->t_start_ns + limit)
            dev_fail(i, FAIL_TIMEOUT);
    }
}

void dev_close_all(void)
{
    for (uint32_t i = 0; i < L.n_devs; i++) {
        struct dev *d = &L.devs[i];
        if (d->fd >= 0)
            close(d->fd);
        d->fd = -1;
        dev_free_buffers(d);
        free(d->path);
        free(d->pend);
        d->path = NULL;
        d->pend = NULL;
        d->n_pend = d->cap_pend = 0;
    }
}
