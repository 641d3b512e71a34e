/*
 * gate: our own listeners in front of lws; see gate.h.
 *
 * The head is read with MSG_PEEK: the bytes stay in the socket, and lws reads them itself
 * once the socket is adopted (lws_adopt_socket_vhost(), the same call lws's own listener
 * makes). Adopting with a read buffer instead (lws_adopt_socket_vhost_readbuf()) is unusable
 * in lws 4.1.6: the buffered head is still on the wsi's buffer list when lws_http_action()
 * looks there for the request body, so a request with a body gets its own head as body and
 * then loops for ever (roles/http/server/server.c).
 *
 * While a head is incomplete, SO_RCVLOWAT is set one byte beyond what has been peeked, so
 * that the socket is readable again only when more bytes (or the end) arrive; a readable
 * socket that peeks no more bytes has reached its end. Each peek starts from the first byte,
 * so the number of peeks per head is capped (GATE_MAX_PEEKS): a head trickled in tiny
 * pieces costs at most that many copies of HEAD_MAX bytes.
 *
 * A connection whose head is complete at the first peek after the accept (the usual case)
 * is handed to lws at once, without a poll handle; one that is not becomes a struct conn,
 * with a uv_poll_t on the socket and the head state. Peeks go into one static scratch
 * buffer (loop thread only).
 *
 * Invariants:
 * - every conn is on exactly one of two lists, reading or lingering, each in deadline order
 *   (deadlines are the accept time or the refusal time plus a constant), and counts in the
 *   gate's n and its listener's n;
 * - a conn leaves its list and n when its socket is handed over or closed; its poll handle
 *   is closed then, and the conn is freed in the handle's close callback;
 * - the socket is closed (or adopted by lws) only after uv_close() of its poll handle, so
 *   that libuv never watches a descriptor number that a later accept may reuse;
 * - the tick timer runs while a conn is in the gate or a listener is paused.
 */
#include "simplepushd/gate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "simplepushd/head.h"
#include "simplepushd/log.h"
#include "simplepushd/metrics.h"

/* The public and the internal listener. */
#define GATE_LISTENERS 2
/* Connections accepted per wake-up of a listener, so that one listener cannot starve all. */
#define ACCEPTS_PER_WAKE 64
/* Reads of a lingering connection per wake-up. */
#define LINGER_READS_PER_WAKE 16
/* Period of the tick that enforces deadlines and resumes paused listeners. */
#define TICK_MS 250
/* Most peeks per request head: a head sent in more pieces is refused (408). */
#define GATE_MAX_PEEKS 64

struct listener {
    uv_poll_t poll;
    struct gate *g;
    struct lws_vhost *vh;
    int fd;
    size_t n;    /* its conns in the gate */
    bool paused; /* out of descriptors or memory: accepting again at the next tick */
};

struct conn {
    uv_poll_t poll;
    struct gate *g;
    struct listener *l;
    lws_dll2_t list;   /* in g->reading or g->lingering */
    uint64_t deadline; /* loop time (ms) */
    int fd;
    bool lingering; /* answered; reading and dropping until EOF or the deadline */
    uint8_t peeks;  /* peeks of the head so far */
    uint32_t seen;  /* bytes of the head peeked so far */
    struct head head;
};

struct gate {
    uv_loop_t *loop;
    uv_timer_t tick;
    struct listener listeners[GATE_LISTENERS];
    size_t n_listeners;
    lws_dll2_owner_t reading, lingering; /* by deadline, the soonest first */
    size_t max;                          /* max_handshakes, per listener */
    bool ticking;
    bool closed;
};

static char scratch[HEAD_MAX];

static void on_tick(uv_timer_t *timer);

static struct conn *conn_of(struct lws_dll2 *d)
{
    return lws_container_of(d, struct conn, list);
}

/* Connections in the gate: both lists. */
static size_t conns(const struct gate *g)
{
    return (size_t)g->reading.count + (size_t)g->lingering.count;
}

static void start_tick(struct gate *g)
{
    if (!g->ticking && !g->closed) {
        g->ticking = true;
        uv_timer_start(&g->tick, on_tick, TICK_MS, TICK_MS);
    }
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

/*
 * Writes a complete response, {"status":N,"error":"<error>"} with Connection: close, without
 * blocking. The socket's send buffer is empty, so the few hundred bytes go in one call; if
 * they do not, the client gets less and the close.
 */
static void respond(int fd, int status, const char *error)
{
    char body[128], msg[512];
    int b = snprintf(body, sizeof(body), "{\"status\":%d,\"error\":\"%s\"}", status, error);
    if (b < 0 || (size_t)b >= sizeof(body))
        return;
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     "connection: close\r\n\r\n%s",
                     status, reason_phrase(status), b, body);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return;
    ssize_t w;
    do
        w = send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
}

static void free_conn(uv_handle_t *handle)
{
    free(handle->data);
}

/* Takes c out of the gate: its handle closes (and frees c); the socket is the caller's. */
static void conn_release(struct conn *c)
{
    lws_dll2_remove(&c->list);
    c->l->n--;
    uv_close((uv_handle_t *)&c->poll, free_conn);
}

static void conn_close(struct conn *c)
{
    int fd = c->fd;
    conn_release(c);
    close(fd);
}

static void set_rcvlowat(int fd, int bytes)
{
    setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof(bytes));
}

/* Hands fd to lws; the request head is still in the socket for lws to read. */
static void hand_over(struct listener *l, int fd)
{
    /* On failure lws has closed the socket; there is nobody to answer. */
    if (!lws_adopt_socket_vhost(l->vh, fd))
        log_info("gate", "libwebsockets did not take a connection");
}

/* Answers a refused head and lingers: the client's unread bytes must not reset the answer. */
static void refuse(struct conn *c, int status, const char *error)
{
    struct gate *g = c->g;

    if (status == 408)
        metrics.handshake_timeouts++;
    else
        metrics_bad_request(status);
    log_info("gate", "refused a request head: %d %s", status, error);
    respond(c->fd, status, error);
    shutdown(c->fd, SHUT_WR);
    if (c->seen)
        set_rcvlowat(c->fd, 1);
    lws_dll2_remove(&c->list);
    c->lingering = true;
    c->deadline = uv_now(g->loop) + GATE_LINGER_MS;
    lws_dll2_add_tail(&c->list, &g->lingering);
}

/* Reads and drops what a refused client still sends; closes on EOF or error. */
static void linger_read(struct conn *c)
{
    for (int i = 0; i < LINGER_READS_PER_WAKE; i++) {
        ssize_t n = recv(c->fd, scratch, sizeof(scratch), 0);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_close(c);
        return;
    }
}

/* Peeks at what has come of the head so far (into scratch). Returns bytes, 0 or -1. */
static ssize_t peek(int fd)
{
    ssize_t n;
    do
        n = recv(fd, scratch, sizeof(scratch), MSG_PEEK);
    while (n < 0 && errno == EINTR);
    return n;
}

static void head_read(struct conn *c)
{
    ssize_t n = peek(c->fd);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    /* Readable without a byte more than last time: the client has finished sending. */
    if (n <= (ssize_t)c->seen) {
        conn_close(c);
        return;
    }
    c->seen = (uint32_t)n;
    int v = head_feed(&c->head, scratch, (size_t)n, HEAD_MAX);
    if (v == HEAD_BAD) {
        refuse(c, c->head.status, c->head.error);
    } else if (v == HEAD_DONE) {
        int fd = c->fd;
        struct listener *l = c->l;
        conn_release(c);
        set_rcvlowat(fd, 1);
        hand_over(l, fd);
    } else if (++c->peeks >= GATE_MAX_PEEKS) {
        refuse(c, 408, "Request Timeout");
    } else {
        set_rcvlowat(c->fd, (int)n + 1);
    }
}

static void on_conn(uv_poll_t *poll, int status, int events)
{
    struct conn *c = poll->data;
    (void)events;
    if (status < 0)
        conn_close(c);
    else if (c->lingering)
        linger_read(c);
    else
        head_read(c);
}

/* Keeps a connection whose head has not come whole: returns the conn, or NULL. */
static struct conn *conn_new(struct listener *l, int fd, const struct head *h, size_t seen)
{
    struct gate *g = l->g;
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (uv_poll_init(g->loop, &c->poll, fd)) {
        free(c);
        return NULL;
    }
    c->poll.data = c;
    c->g = g;
    c->l = l;
    c->fd = fd;
    c->head = *h;
    c->seen = (uint32_t)seen;
    c->peeks = seen ? 1 : 0;
    c->deadline = uv_now(g->loop) + GATE_HANDSHAKE_MS;
    lws_dll2_add_tail(&c->list, &g->reading);
    l->n++;
    uv_poll_start(&c->poll, UV_READABLE, on_conn);
    start_tick(g);
    return c;
}

static void admit(struct listener *l, int fd)
{
    struct gate *g = l->g;
    struct head h;
    int one = 1;

    if (l->n >= g->max) {
        metrics.handshakes_refused++;
        respond(fd, 503, "Service Unavailable");
        close(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    /* The head is often here already: then it needs no poll handle. */
    head_init(&h);
    ssize_t n = peek(fd);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        close(fd);
        return;
    }
    if (n < 0)
        n = 0;
    int v = n > 0 ? head_feed(&h, scratch, (size_t)n, HEAD_MAX) : HEAD_MORE;
    if (v == HEAD_DONE) {
        hand_over(l, fd);
        return;
    }
    struct conn *c = conn_new(l, fd, &h, (size_t)n);
    if (!c) {
        close(fd);
        return;
    }
    if (v == HEAD_BAD)
        refuse(c, h.status, h.error);
    else if (n > 0)
        set_rcvlowat(fd, (int)n + 1);
}

static void pause_listener(struct listener *l, int err)
{
    log_warning("gate", "accept: %s; not accepting for %d ms", strerror(err), TICK_MS);
    l->paused = true;
    uv_poll_stop(&l->poll);
    start_tick(l->g);
}

static void on_listener(uv_poll_t *poll, int status, int events)
{
    struct listener *l = poll->data;
    (void)events;
    if (status < 0) {
        pause_listener(l, -status);
        return;
    }
    for (int i = 0; i < ACCEPTS_PER_WAKE && !l->g->closed; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            admit(l, fd);
            continue;
        }
        switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            return;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            pause_listener(l, errno);
            return;
        default:
            /* A network error pending on the new connection (accept(2)): try the next. */
            continue;
        }
    }
}

static void on_tick(uv_timer_t *timer)
{
    struct gate *g = timer->data;
    uint64_t now = uv_now(g->loop);

    while (g->reading.head && conn_of(g->reading.head)->deadline <= now) {
        struct conn *c = conn_of(g->reading.head);
        metrics.handshake_timeouts++;
        respond(c->fd, 408, "Request Timeout");
        conn_close(c);
    }
    while (g->lingering.head && conn_of(g->lingering.head)->deadline <= now)
        conn_close(conn_of(g->lingering.head));
    for (size_t i = 0; i < g->n_listeners; i++) {
        struct listener *l = &g->listeners[i];
        if (l->paused) {
            l->paused = false;
            uv_poll_start(&l->poll, UV_READABLE, on_listener);
        }
    }
    if (!conns(g)) {
        g->ticking = false;
        uv_timer_stop(&g->tick);
    }
}

struct gate *gate_new(uv_loop_t *loop, size_t max_handshakes)
{
    struct gate *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->loop = loop;
    g->max = max_handshakes;
    uv_timer_init(loop, &g->tick);
    g->tick.data = g;
    return g;
}

static bool is_wildcard(const char *host)
{
    return !host || !*host || !strcmp(host, "0.0.0.0") || !strcmp(host, "::");
}

/* Opens, binds and listens on addr; returns the descriptor or -1 (errno set). */
static int listen_on(const struct sockaddr *addr, socklen_t len, bool dual_stack)
{
    int one = 1, zero = 0, e;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        (addr->sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual_stack ? &zero : &one, sizeof(int))) ||
        bind(fd, addr, len) || listen(fd, SOMAXCONN)) {
        e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* The first address of the interface named name (IPv4 first, as lws does), or -1. */
static int interface_address(const char *name, struct sockaddr_storage *ss, socklen_t *len)
{
    struct ifaddrs *ifs, *i;
    int rc = -1;

    if (getifaddrs(&ifs))
        return -1;
    for (int family = AF_INET; rc && family; family = family == AF_INET ? AF_INET6 : 0)
        for (i = ifs; i && rc; i = i->ifa_next)
            if (i->ifa_addr && i->ifa_addr->sa_family == family && !strcmp(i->ifa_name, name)) {
                *len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
                memcpy(ss, i->ifa_addr, *len);
                rc = 0;
            }
    freeifaddrs(ifs);
    return rc;
}

/* Binds host:port as gate.h says; returns the listening descriptor or -1 (errno set). */
static int open_listener(const char *host, int port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    socklen_t len;
    int fd;

    memset(&ss, 0, sizeof(ss));
    if (is_wildcard(host)) {
        /* Both families on one socket, or IPv4 alone where there is no IPv6. */
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = in6addr_any;
        sin6->sin6_port = htons((uint16_t)port);
        fd = listen_on((struct sockaddr *)sin6, sizeof(*sin6), true);
        if (fd >= 0 || (errno != EAFNOSUPPORT && errno != EADDRNOTAVAIL))
            return fd;
        memset(&ss, 0, sizeof(ss));
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons((uint16_t)port);
        return listen_on((struct sockaddr *)sin, sizeof(*sin), false);
    }
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        len = sizeof(*sin);
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        len = sizeof(*sin6);
    } else if (interface_address(host, &ss, &len)) {
        struct addrinfo hints, *res;
        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        if (getaddrinfo(host, NULL, &hints, &res)) {
            errno = EADDRNOTAVAIL;
            return -1;
        }
        len = res->ai_addrlen <= sizeof(ss) ? res->ai_addrlen : sizeof(ss);
        memcpy(&ss, res->ai_addr, len);
        freeaddrinfo(res);
    }
    if (ss.ss_family == AF_INET)
        sin->sin_port = htons((uint16_t)port);
    else
        sin6->sin6_port = htons((uint16_t)port);
    return listen_on((struct sockaddr *)&ss, len, false);
}

int gate_listen(struct gate *g, struct lws_vhost *vh, const char *host, int port, int *bound)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int e;

    if (g->n_listeners == GATE_LISTENERS || g->closed) {
        errno = ENOSPC;
        return -1;
    }
    struct listener *l = &g->listeners[g->n_listeners];
    int fd = open_listener(host, port);
    if (fd < 0)
        return -1;
    if (getsockname(fd, (struct sockaddr *)&ss, &len))
        goto fail;
    *bound = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                           : ((struct sockaddr_in6 *)&ss)->sin6_port);
    if (uv_poll_init(g->loop, &l->poll, fd)) {
        errno = EINVAL;
        goto fail;
    }
    g->n_listeners++;
    l->poll.data = l;
    l->g = g;
    l->vh = vh;
    l->fd = fd;
    uv_poll_start(&l->poll, UV_READABLE, on_listener);
    return 0;
fail:
    e = errno;
    close(fd);
    errno = e;
    return -1;
}

void gate_set_max_handshakes(struct gate *g, size_t max_handshakes)
{
    g->max = max_handshakes;
}

size_t gate_handshakes(const struct gate *g)
{
    return g ? conns(g) : 0;
}

void gate_close(struct gate *g)
{
    if (!g || g->closed)
        return;
    g->closed = true;
    for (size_t i = 0; i < g->n_listeners; i++) {
        uv_close((uv_handle_t *)&g->listeners[i].poll, NULL);
        close(g->listeners[i].fd);
    }
    while (g->reading.head)
        conn_close(conn_of(g->reading.head));
    while (g->lingering.head)
        conn_close(conn_of(g->lingering.head));
    uv_close((uv_handle_t *)&g->tick, NULL);
}

void gate_free(struct gate *g)
{
    free(g);
}
