/*
 * udp: a fire-and-forget UDP destination for log datagrams (Heka) and statsd packets. Sends
 * never block: a datagram the kernel will not take at once is dropped and counted. Sending
 * is safe from any thread; making and freeing a sink belong to the loop thread.
 */
#ifndef SIMPLEPUSHD_UDP_H
#define SIMPLEPUSHD_UDP_H

#include <stddef.h>
#include <stdint.h>

struct udp_sink;

/*
 * Checks "host:port" (host a name, an IPv4 address or a bracketed IPv6 address; port
 * 1..65535) without resolving it. Returns 0, or -1 with the reason in err.
 */
int udp_check_hostport(const char *hostport, char *err, size_t errlen);

/* Resolves hostport and opens a non-blocking socket to it. NULL on failure (reason in err). */
struct udp_sink *udp_sink_new(const char *hostport, char *err, size_t errlen);

/* Sends one datagram. Returns 0, or -1 when it was dropped (and counted). */
int udp_sink_send(struct udp_sink *sink, const void *buf, size_t len);

/* Datagrams dropped so far. */
uint64_t udp_sink_drops(const struct udp_sink *sink);

/* Closes the socket and frees the sink. Accepts NULL. */
void udp_sink_free(struct udp_sink *sink);

#endif
