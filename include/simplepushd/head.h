/*
 * head: checks the head of an HTTP/1.x request (request line and header fields) as its bytes
 * arrive, before libwebsockets parses it. The gate module feeds it what a new connection
 * sent; a head it accepts goes on to lws, a head it refuses is answered with the status and
 * error text it names.
 *
 * What a head must be (RFC 9112, stricter where lws 4.1.6 would otherwise act on it):
 * - lines end in CRLF; a bare CR or LF, NUL or any other control byte but HT is refused;
 *   empty lines before the request line are skipped;
 * - the request line is `METHOD SP /target SP HTTP/1.x`: a token method out of GET, HEAD,
 *   POST, PUT, DELETE, OPTIONS, PATCH (else 405; CONNECT would switch lws to raw mode), a
 *   target of visible ASCII starting with '/', version 1.0 or 1.1 (another version, such as
 *   HTTP/2's `PRI * HTTP/2.0` preface, is 505);
 * - header lines are `token ":" value`, no whitespace before the colon, no line folding;
 * - HTTP/1.1 has exactly one Host; no header names Host, Content-Length or Upgrade twice;
 * - Upgrade, if present, is "websocket" in any case (h2c, h2 and all else: 400);
 * - Content-Length is 1 to 18 digits; Content-Length and Transfer-Encoding never together;
 * - the whole head, with the empty lines before it, fits in max bytes (else 431, or 414
 *   while still in the request line).
 *
 * The feed is incremental: every byte is examined once however the head is split into
 * reads, so a head trickled byte by byte costs O(n). Pure functions; any thread.
 */
#ifndef SIMPLEPUSHD_HEAD_H
#define SIMPLEPUSHD_HEAD_H

#include <stddef.h>
#include <stdint.h>

/* The largest request head accepted: lws's header table (max_http_header_data) holds as much. */
#define HEAD_MAX 16384

enum head_verdict {
    HEAD_MORE = 0, /* no complete head yet and nothing wrong so far */
    HEAD_DONE = 1, /* a complete, acceptable head: see start and end */
    HEAD_BAD = -1, /* refused: see status and error */
};

/* The state of one head being read; zero it with head_init(). */
struct head {
    uint32_t start;    /* offset of the request line (empty lines before it are skipped) */
    uint32_t line;     /* offset of the line being read */
    uint32_t pos;      /* bytes examined so far */
    uint32_t end;      /* HEAD_DONE: offset just past the empty line that ends the head */
    uint16_t flags;    /* what has been seen (head.c) */
    uint16_t status;   /* HEAD_BAD: the HTTP status to answer */
    const char *error; /* HEAD_BAD: the error text to answer (a static string) */
};

/* Starts a new head. */
void head_init(struct head *h);

/*
 * Examines buf[0..len): every byte the connection has sent so far (earlier calls saw a prefix
 * of it). Only the first max bytes matter. Returns HEAD_MORE (call again with more bytes),
 * HEAD_DONE or HEAD_BAD; once it has returned HEAD_DONE or HEAD_BAD it returns the same
 * again.
 */
int head_feed(struct head *h, const char *buf, size_t len, size_t max);

#endif
