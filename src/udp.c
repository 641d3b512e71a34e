/*
 * udp: non-blocking UDP datagrams to one destination, with a drop counter.
 */
#include "simplepushd/udp.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct udp_sink {
    int fd;
    uint64_t drops; /* updated atomically: senders may be on several threads */
};

/* Splits "host:port" into host and port. Returns 0 or -1. */
static int split_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -1;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return -1; /* no port, or an unbracketed IPv6 address */
        hl = (size_t)(colon - s);
    }
    if (!hl || hl >= hostlen)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    const char *p = colon + 1;
    size_t pl = strlen(p);
    if (!pl || pl >= portlen || pl > 5)
        return -1;
    unsigned long v = 0;
    for (size_t i = 0; i < pl; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(p[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    memcpy(port, p, pl + 1);
    return 0;
}

int udp_check_hostport(const char *hostport, char *err, size_t errlen)
{
    char host[256], port[8];
    if (split_hostport(hostport, host, sizeof(host), port, sizeof(port))) {
        snprintf(err, errlen, "\"%s\" is not host:port", hostport);
        return -1;
    }
    return 0;
}

struct udp_sink *udp_sink_new(const char *hostport, char *err, size_t errlen)
{
    char host[256], port[8];
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *res = NULL;
    struct udp_sink *sink = NULL;

    if (udp_check_hostport(hostport, err, errlen))
        return NULL;
    split_hostport(hostport, host, sizeof(host), port, sizeof(port));
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "%s: %s", hostport, gai_strerror(rc));
        return NULL;
    }
    sink = calloc(1, sizeof(*sink));
    if (!sink) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    sink->fd = socket(res->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (sink->fd < 0 || connect(sink->fd, res->ai_addr, res->ai_addrlen)) {
        snprintf(err, errlen, "%s: %s", hostport, strerror(errno));
        goto fail;
    }
    freeaddrinfo(res);
    return sink;
fail:
    if (sink && sink->fd >= 0)
        close(sink->fd);
    free(sink);
    freeaddrinfo(res);
    return NULL;
}

int udp_sink_send(struct udp_sink *sink, const void *buf, size_t len)
{
    ssize_t n;
    do
        n = send(sink->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)len)
        return 0;
    /* Full socket buffer, nobody listening (ECONNREFUSED), too big: drop, count, go on. */
    __atomic_add_fetch(&sink->drops, 1, __ATOMIC_RELAXED);
    return -1;
}

uint64_t udp_sink_drops(const struct udp_sink *sink)
{
    return sink ? __atomic_load_n(&sink->drops, __ATOMIC_RELAXED) : 0;
}

void udp_sink_free(struct udp_sink *sink)
{
    if (!sink)
        return;
    close(sink->fd);
    free(sink);
}
