/*
 * head: the request-head checks of head.h.
 *
 * The feed scans bytes once: pos only moves forward, and a line is judged when its LF
 * arrives (control bytes are refused as soon as they are seen). A CR is only judged once
 * the byte after it has arrived, so the scan stops in front of a CR that ends the buffer.
 * Invariants: start <= line <= pos; end is set only with HEAD_DONE; status and error only
 * with HEAD_BAD.
 */
#include "simplepushd/head.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

enum {
    F_REQUEST_LINE = 1 << 0,   /* the request line has been read */
    F_HTTP10 = 1 << 1,         /* HTTP/1.0 (Host optional) */
    F_HOST = 1 << 2,           /* a Host header */
    F_CONTENT_LENGTH = 1 << 3, /* a Content-Length header */
    F_TRANSFER_ENC = 1 << 4,   /* a Transfer-Encoding header */
    F_UPGRADE = 1 << 5,        /* an Upgrade header */
    F_DONE = 1 << 6,           /* HEAD_DONE was returned */
    F_BAD = 1 << 7,            /* HEAD_BAD was returned */
};

/* The methods lws 4.1.6 parses and the daemon answers (others, CONNECT above all, are 405). */
static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};

/* Longest Content-Length accepted: 18 digits always fit in an int64_t. */
#define CONTENT_LENGTH_DIGITS 18

void head_init(struct head *h)
{
    memset(h, 0, sizeof(*h));
}

static int bad(struct head *h, int status, const char *error)
{
    h->flags |= F_BAD;
    h->status = (uint16_t)status;
    h->error = error;
    return HEAD_BAD;
}

/* RFC 9110 tchar: the characters of a token (methods, header names). */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* True when the name p[0..n) is name, in any case. */
static bool name_is(const char *p, size_t n, const char *name)
{
    return strlen(name) == n && !strncasecmp(p, name, n);
}

static int request_line(struct head *h, const char *p, size_t n)
{
    size_t i = 0, t, v;

    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i == n || p[i] != ' ')
        return bad(h, 400, "Bad Request");
    t = ++i;
    while (i < n && p[i] > ' ' && p[i] < 0x7f)
        i++;
    if (i == t || i == n || p[i] != ' ')
        return bad(h, 400, "Bad Request");
    v = ++i;
    if (n - v != 8 || memcmp(p + v, "HTTP/", 5) || p[v + 5] < '0' || p[v + 5] > '9' ||
        p[v + 6] != '.' || p[v + 7] < '0' || p[v + 7] > '9')
        return bad(h, 400, "Bad Request");
    if (p[v + 5] != '1' || (p[v + 7] != '0' && p[v + 7] != '1'))
        return bad(h, 505, "HTTP Version Not Supported");
    if (p[v + 7] == '0')
        h->flags |= F_HTTP10;
    if (p[t] != '/')
        return bad(h, 400, "Bad Request");
    for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++)
        if (strlen(methods[m]) == t - 1 && !memcmp(p, methods[m], t - 1)) {
            h->flags |= F_REQUEST_LINE;
            return HEAD_MORE;
        }
    return bad(h, 405, "Method Not Allowed");
}

static int header_line(struct head *h, const char *p, size_t n)
{
    size_t i = 0, name_len, v, e;

    if (p[0] == ' ' || p[0] == '\t') /* obsolete line folding */
        return bad(h, 400, "Bad Request");
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i == n || p[i] != ':')
        return bad(h, 400, "Bad Request");
    name_len = i;
    for (v = i + 1; v < n && (p[v] == ' ' || p[v] == '\t'); v++)
        ;
    for (e = n; e > v && (p[e - 1] == ' ' || p[e - 1] == '\t'); e--)
        ;

    if (name_is(p, name_len, "host")) {
        if (h->flags & F_HOST)
            return bad(h, 400, "Bad Request");
        h->flags |= F_HOST;
    } else if (name_is(p, name_len, "content-length")) {
        if (h->flags & F_CONTENT_LENGTH || e == v || e - v > CONTENT_LENGTH_DIGITS)
            return bad(h, 400, "Invalid Content-Length");
        for (size_t k = v; k < e; k++)
            if (p[k] < '0' || p[k] > '9')
                return bad(h, 400, "Invalid Content-Length");
        h->flags |= F_CONTENT_LENGTH;
    } else if (name_is(p, name_len, "transfer-encoding")) {
        h->flags |= F_TRANSFER_ENC;
    } else if (name_is(p, name_len, "upgrade")) {
        if (h->flags & F_UPGRADE || !name_is(p + v, e - v, "websocket"))
            return bad(h, 400, "Unsupported Upgrade");
        h->flags |= F_UPGRADE;
    }
    return HEAD_MORE;
}

/* Judges the complete line p[0..n) (without its CRLF). */
static int line(struct head *h, const char *p, size_t n)
{
    if (!(h->flags & F_REQUEST_LINE)) {
        if (n == 0) /* an empty line before the request line */
            return HEAD_MORE;
        return request_line(h, p, n);
    }
    if (n)
        return header_line(h, p, n);
    if (!(h->flags & (F_HTTP10 | F_HOST)))
        return bad(h, 400, "Bad Request");
    if ((h->flags & F_CONTENT_LENGTH) && (h->flags & F_TRANSFER_ENC))
        return bad(h, 400, "Bad Request");
    h->flags |= F_DONE;
    return HEAD_DONE;
}

int head_feed(struct head *h, const char *buf, size_t len, size_t max)
{
    size_t lim = len < max ? len : max;

    if (h->flags & F_DONE)
        return HEAD_DONE;
    if (h->flags & F_BAD)
        return HEAD_BAD;
    for (; h->pos < lim; h->pos++) {
        unsigned char c = (unsigned char)buf[h->pos];
        if (c == '\r') {
            if (h->pos + 1 >= lim)
                break; /* judged once the next byte is here */
            if (buf[h->pos + 1] != '\n')
                return bad(h, 400, "Bad Request");
            continue;
        }
        if (c == '\n') {
            if (h->pos == h->line || buf[h->pos - 1] != '\r')
                return bad(h, 400, "Bad Request");
            bool before_request = !(h->flags & F_REQUEST_LINE);
            int rc = line(h, buf + h->line, h->pos - 1 - h->line);
            h->line = h->pos + 1;
            if (before_request && !(h->flags & F_REQUEST_LINE))
                h->start = h->line;
            if (rc == HEAD_DONE)
                h->end = ++h->pos;
            if (rc != HEAD_MORE)
                return rc;
            continue;
        }
        if ((c < ' ' && c != '\t') || c == 0x7f)
            return bad(h, 400, "Bad Request");
    }
    if (lim == max && len >= max) {
        if (!(h->flags & F_REQUEST_LINE))
            return bad(h, 414, "URI Too Long");
        return bad(h, 431, "Request Header Fields Too Large");
    }
    return HEAD_MORE;
}
