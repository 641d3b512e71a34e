/*
 * gate: the daemon's own plain-TCP listeners, in front of libwebsockets.
 *
 * A gate listener accepts connections for one lws vhost (which does not listen itself) and
 * looks at each connection's first request head (at most HEAD_MAX bytes, peeked, so that
 * they stay in the socket), checking it with head_feed() as it arrives. A connection with a
 * good head is handed to lws by lws_adopt_socket_vhost(), and lws reads the head itself;
 * from then on the connection is lws's and the gate keeps nothing of it. A bad head is
 * answered here with a JSON error ({"status":N,"error":"..."}, Connection: close); then the
 * gate stops writing, reads and drops what the client still sends for a short while (so
 * that the answer is not lost to a reset) and closes. So lws never parses a request head
 * that the gate has not checked, for the first request of each connection; later requests
 * on a kept-alive connection are parsed by lws alone.
 *
 * Limits: a head must be complete within GATE_HANDSHAKE_MS of the accept and come in at
 * most 64 pieces (else 408 and close: slowloris). At most max_handshakes connections of each
 * listener are in the gate at once (a flood of the public listener leaves the internal one
 * alone); a connection accepted beyond that gets a 503 and is closed at once. Counters are
 * in metrics (handshakes_refused, handshake_timeouts, bad_requests).
 *
 * Loop thread only.
 */
#ifndef SIMPLEPUSHD_GATE_H
#define SIMPLEPUSHD_GATE_H

#include <stddef.h>
#include <uv.h>

struct lws_vhost;
struct gate;

/* Time from the accept within which the request head must be complete. */
#define GATE_HANDSHAKE_MS 10000

/* Time a refused connection is read (and its bytes dropped) before it is closed. */
#define GATE_LINGER_MS 2000

/* A gate on loop, admitting max_handshakes per listener. NULL on failure. */
struct gate *gate_new(uv_loop_t *loop, size_t max_handshakes);

/*
 * Listens on host:port (host NULL, "", "0.0.0.0" or "::": every address, IPv6 and IPv4;
 * else an IP address, an interface name or a host name) for vhost vh. Writes the bound
 * port (port 0 picks a free one) to *bound. Returns 0, or -1 with errno set.
 */
int gate_listen(struct gate *g, struct lws_vhost *vh, const char *host, int port, int *bound);

/* Changes the cap on connections of each listener in the gate (from the next accept on). */
void gate_set_max_handshakes(struct gate *g, size_t max_handshakes);

/* Connections in the gate now (accepted, not yet handed to lws or closed). */
size_t gate_handshakes(const struct gate *g);

/*
 * Stops listening and closes every connection still in the gate; their handles finish
 * closing on the loop. Idempotent.
 */
void gate_close(struct gate *g);

/* Frees the gate, once the loop has run dry after gate_close(). Accepts NULL. */
void gate_free(struct gate *g);

#endif
