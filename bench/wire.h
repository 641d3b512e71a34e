/*
 * wire: the bytes spload exchanges with a server, as pure functions: RFC 6455 client frames
 * (always masked, as a client must send them), server frames (never masked), and the head of
 * an HTTP/1.1 response (status, Content-Length, Connection: close, the 101 upgrade's
 * Sec-WebSocket-Accept).
 *
 * Nothing here allocates or keeps state; every function works on the caller's buffers.
 */
#ifndef SPLOAD_WIRE_H
#define SPLOAD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum {
    WIRE_OP_CONT = 0x0,
    WIRE_OP_TEXT = 0x1,
    WIRE_OP_BINARY = 0x2,
    WIRE_OP_CLOSE = 0x8,
    WIRE_OP_PING = 0x9,
    WIRE_OP_PONG = 0xA,
};

/* The longest header a client frame gets: 2 + 8 (length) + 4 (mask). */
#define WIRE_WS_HEADER_MAX 14

/* The largest server frame payload accepted; a larger one is a protocol error. */
#define WIRE_WS_PAYLOAD_MAX (1u << 20)

/* The Sec-WebSocket-Key every spload client sends, and the accept value it expects. */
#define WIRE_WS_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define WIRE_WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* One decoded server frame. payload points into the caller's buffer. */
struct wire_frame {
    bool fin;
    int opcode;
    const uint8_t *payload;
    size_t len;
};

/*
 * Writes a final client frame of opcode with payload, masked with mask, to out, which must
 * hold len + WIRE_WS_HEADER_MAX bytes. Returns the frame's length.
 */
size_t wire_ws_encode(uint8_t *out, int opcode, const void *payload, size_t len, uint32_t mask);

/*
 * Decodes the server frame at the start of buf[0..n). Returns the bytes it occupies (> 0),
 * 0 when buf holds only part of it, or -1 when it is malformed (masked, reserved bits set,
 * an unknown opcode, a control frame that is fragmented or over 125 bytes, or a payload over
 * WIRE_WS_PAYLOAD_MAX).
 */
ssize_t wire_ws_decode(const uint8_t *buf, size_t n, struct wire_frame *f);

/* The head of an HTTP/1.1 response. */
struct wire_http_head {
    int status;            /* 100..599 */
    size_t head_len;       /* bytes up to and including the blank line */
    long long content_len; /* -1 when absent */
    bool close;            /* Connection: close */
    bool chunked;          /* Transfer-Encoding: chunked (spload does not read those) */
    bool ws_accept_ok;     /* Sec-WebSocket-Accept equals WIRE_WS_ACCEPT */
};

/*
 * Parses the response head at the start of buf[0..n). Returns 1 when a whole head was
 * parsed into h, 0 when more bytes are needed, -1 when it is not an HTTP/1.x response or a
 * header is malformed (a bad Content-Length, a head over 16 KiB).
 */
int wire_http_head_parse(const char *buf, size_t n, struct wire_http_head *h);

#endif
