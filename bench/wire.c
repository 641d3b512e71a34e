/*
 * wire: RFC 6455 client frames and HTTP/1.1 response heads (see wire.h).
 *
 * Server frames are checked as strictly as a client should: a masked server frame, reserved
 * bits, unknown opcodes and oversized or fragmented control frames are errors, so that the
 * benchmark notices a server that breaks the framing instead of measuring garbage.
 */
#include "wire.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WIRE_HTTP_HEAD_MAX 16384

size_t wire_ws_encode(uint8_t *out, int opcode, const void *payload, size_t len, uint32_t mask)
{
    size_t pos = 0;
    out[pos++] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[pos++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        out[pos++] = 0x80 | 126;
        out[pos++] = (uint8_t)(len >> 8);
        out[pos++] = (uint8_t)len;
    } else {
        out[pos++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[pos++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint8_t key[4] = {(uint8_t)(mask >> 24), (uint8_t)(mask >> 16), (uint8_t)(mask >> 8),
                      (uint8_t)mask};
    memcpy(out + pos, key, 4);
    pos += 4;
    const uint8_t *p = payload;
    for (size_t i = 0; i < len; i++)
        out[pos + i] = p[i] ^ key[i & 3];
    return pos + len;
}

ssize_t wire_ws_decode(const uint8_t *buf, size_t n, struct wire_frame *f)
{
    if (n < 2)
        return 0;
    uint8_t b0 = buf[0], b1 = buf[1];
    if (b0 & 0x70)
        return -1; /* reserved bits: no extension was negotiated */
    if (b1 & 0x80)
        return -1; /* a server never masks */
    int op = b0 & 0x0f;
    bool control = op & 0x08;
    switch (op) {
    case WIRE_OP_CONT:
    case WIRE_OP_TEXT:
    case WIRE_OP_BINARY:
    case WIRE_OP_CLOSE:
    case WIRE_OP_PING:
    case WIRE_OP_PONG:
        break;
    default:
        return -1;
    }
    size_t pos = 2;
    uint64_t len = b1 & 0x7f;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = ((uint64_t)buf[2] << 8) | buf[3];
        pos = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | buf[2 + i];
        pos = 10;
    }
    if (control && (len > 125 || !(b0 & 0x80)))
        return -1;
    if (len > WIRE_WS_PAYLOAD_MAX)
        return -1;
    if (n - pos < len)
        return 0;
    f->fin = b0 & 0x80;
    f->opcode = op;
    f->payload = buf + pos;
    f->len = (size_t)len;
    return (ssize_t)(pos + len);
}

/* The value of a header line "name: value" when its name is name (case-insensitive). */
static const char *wire_header_value(const char *line, const char *end, const char *name,
                                     size_t *vlen)
{
    size_t nl = strlen(name);
    if ((size_t)(end - line) <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return NULL;
    const char *v = line + nl + 1;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    const char *e = end;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *vlen = (size_t)(e - v);
    return v;
}

static bool wire_value_is(const char *v, size_t vlen, const char *word)
{
    return vlen == strlen(word) && strncasecmp(v, word, vlen) == 0;
}

static int wire_parse_length(const char *v, size_t vlen, long long *out)
{
    if (vlen == 0 || vlen > 18)
        return -1;
    long long x = 0;
    for (size_t i = 0; i < vlen; i++) {
        if (!isdigit((unsigned char)v[i]))
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return 0;
}

int wire_http_head_parse(const char *buf, size_t n, struct wire_http_head *h)
{
    const char *end = memmem(buf, n, "\r\n\r\n", 4);
    if (!end)
        return n > WIRE_HTTP_HEAD_MAX ? -1 : 0;
    memset(h, 0, sizeof(*h));
    h->head_len = (size_t)(end - buf) + 4;
    h->content_len = -1;
    /* The status line: "HTTP/1.x NNN reason". */
    if (end - buf < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
        return -1;
    for (int i = 9; i < 12; i++)
        if (!isdigit((unsigned char)buf[i]))
            return -1;
    h->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    if (h->status < 100 || h->status > 599)
        return -1;
    const char *line = memchr(buf, '\n', (size_t)(end - buf));
    while (line && line < end) {
        line++;
        const char *eol = memchr(line, '\r', (size_t)(end + 2 - line));
        if (!eol)
            break;
        size_t vlen;
        const char *v;
        if ((v = wire_header_value(line, eol, "content-length", &vlen))) {
            if (wire_parse_length(v, vlen, &h->content_len) != 0)
                return -1;
        } else if ((v = wire_header_value(line, eol, "connection", &vlen))) {
            h->close = wire_value_is(v, vlen, "close");
        } else if ((v = wire_header_value(line, eol, "transfer-encoding", &vlen))) {
            h->chunked = wire_value_is(v, vlen, "chunked");
        } else if ((v = wire_header_value(line, eol, "sec-websocket-accept", &vlen))) {
            h->ws_accept_ok =
                vlen == strlen(WIRE_WS_ACCEPT) && memcmp(v, WIRE_WS_ACCEPT, vlen) == 0;
        }
        line = memchr(eol, '\n', (size_t)(end + 2 - eol));
    }
    return 1;
}
