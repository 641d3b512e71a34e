/*
 * Unit tests for head: request heads lws must never parse are refused with the status and
 * text the gate answers; good heads are accepted with their exact extent; the verdict does
 * not depend on how the bytes are split into reads; the size cap holds at its boundary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "simplepushd/head.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Feeds all of s at once. */
static int feed_all(struct head *h, const char *s, size_t len, size_t max)
{
    head_init(h);
    return head_feed(h, s, len, max);
}

/* Feeds s one more byte at a time, as a trickling client would; asserts MORE until the end. */
static int feed_bytewise(struct head *h, const char *s, size_t len, size_t max)
{
    int v = HEAD_MORE;
    head_init(h);
    for (size_t i = 1; i <= len && v == HEAD_MORE; i++)
        v = head_feed(h, s, i, max);
    return v;
}

static const char *const good[] = {
    "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "PUT /update/abc?version=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 9\r\n"
    "Content-Type: application/x-www-form-urlencoded\r\n\r\n",
    "GET /status/ HTTP/1.0\r\n\r\n",
    "GET / HTTP/1.1\r\nhOsT: x\r\nUPGRADE:WebSocket \r\n\r\n",
    "OPTIONS /update/x HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Tab:\ta\tb\t\r\n\r\n",
    "DELETE /x HTTP/1.1\r\nHost: x\r\nUser-Agent: caf\xc3\xa9 \xff\r\n\r\n",
    "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "PATCH /x HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999999\r\n\r\n",
    "PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET /%7e~!$&'()*+,;=:@/?a=b HTTP/1.1\r\nHost: x\r\nHTTP2-Settings: AAMAAABk\r\n\r\n",
};

static void test_good_heads(void **state)
{
    struct head h;
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        size_t len = strlen(good[i]);
        assert_int_equal(feed_all(&h, good[i], len, HEAD_MAX), HEAD_DONE);
        assert_int_equal(h.start, 0);
        assert_int_equal(h.end, len);
        assert_int_equal(feed_bytewise(&h, good[i], len, HEAD_MAX), HEAD_DONE);
        assert_int_equal(h.end, len);
        /* Once decided, the verdict stays. */
        assert_int_equal(head_feed(&h, good[i], len, HEAD_MAX), HEAD_DONE);
    }
}

static void test_bytes_after_the_head(void **state)
{
    static const char req[] = "PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nversion=1";
    struct head h;
    (void)state;
    assert_int_equal(feed_all(&h, req, sizeof(req) - 1, HEAD_MAX), HEAD_DONE);
    assert_int_equal(h.end, sizeof(req) - 1 - 9);
}

static void test_empty_lines_before_the_request_line(void **state)
{
    static const char req[] = "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    struct head h;
    (void)state;
    assert_int_equal(feed_all(&h, req, sizeof(req) - 1, HEAD_MAX), HEAD_DONE);
    assert_int_equal(h.start, 4);
    assert_int_equal(h.end, sizeof(req) - 1);
    assert_int_equal(feed_bytewise(&h, req, sizeof(req) - 1, HEAD_MAX), HEAD_DONE);
    assert_int_equal(h.start, 4);
}

static void test_incomplete_heads_wait(void **state)
{
    static const char *const partial[] = {
        "",
        "G",
        "GET / HTTP/1.1",
        "GET / HTTP/1.1\r",
        "GET / HTTP/1.1\r\nHost: x\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n\r",
        "\r\n",
    };
    struct head h;
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(partial); i++)
        assert_int_equal(feed_all(&h, partial[i], strlen(partial[i]), HEAD_MAX), HEAD_MORE);
}

/* One bad head: its bytes (NULs included), the status and the error text. */
#define BAD(s, st, e)                                                                              \
    {                                                                                              \
        s, sizeof(s) - 1, st, e                                                                    \
    }

static const struct {
    const char *head;
    size_t len;
    int status;
    const char *error;
} bad[] = {
    /* The request line. */
    BAD("GARBAGE\r\n\r\n", 400, "Bad Request"),
    BAD("GET\r\n\r\n", 400, "Bad Request"),
    BAD("GET /\r\n\r\n", 400, "Bad Request"),
    BAD("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("GET /\x80 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("GET / http/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505, "HTTP Version Not Supported"),
    BAD("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP Version Not Supported"),
    BAD("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "HTTP Version Not Supported"),
    BAD("FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "Method Not Allowed"),
    BAD("get / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "Method Not Allowed"),
    BAD("CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "Method Not Allowed"),
    BAD("TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "Method Not Allowed"),
    /* Line ends and control bytes. */
    BAD("GET / HTTP/1.1\nHost: x\n\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.1\r\nHost: x\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400, "Bad Request"),
    BAD("\x00\x01\x02\x03\r\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.1\r\nHost: x\x00y\r\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.1\r\nX: \x7f\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("\n", 400, "Bad Request"),
    /* Header lines. */
    BAD("GET / HTTP/1.1\r\nHost: x\r\nBadHeader\r\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.1\r\n: x\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.1\r\nX\"Y: a\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.1\r\n\r\n", 400, "Bad Request"),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, "Bad Request"),
    BAD("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
        "Bad Request"),
    /* Content-Length. */
    BAD("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400,
        "Invalid Content-Length"),
    BAD("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", 400,
        "Invalid Content-Length"),
    BAD("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "Invalid Content-Length"),
    BAD("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", 400, "Invalid Content-Length"),
    BAD("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n", 400, "Invalid Content-Length"),
    BAD("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 400, "Invalid Content-Length"),
    BAD("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", 400, "Invalid Content-Length"),
    BAD("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999999999999999\r\n\r\n", 400,
        "Invalid Content-Length"),
    /* Upgrade: websocket only (h2c reaches lws's HTTP/2 code). */
    BAD("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        400, "Unsupported Upgrade"),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\n\r\n", 400, "Unsupported Upgrade"),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2\r\n\r\n", 400, "Unsupported Upgrade"),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket2\r\n\r\n", 400, "Unsupported Upgrade"),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: TLS/1.2\r\n\r\n", 400, "Unsupported Upgrade"),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket, h2c\r\n\r\n", 400, "Unsupported Upgrade"),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nUpgrade:\r\n\r\n", 400, "Unsupported Upgrade"),
    BAD("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nUpgrade: websocket\r\n\r\n", 400,
        "Unsupported Upgrade"),
};

static void test_bad_heads(void **state)
{
    struct head h;
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        size_t len = bad[i].len;
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            int v = bytewise ? feed_bytewise(&h, bad[i].head, len, HEAD_MAX)
                             : feed_all(&h, bad[i].head, len, HEAD_MAX);
            if (v != HEAD_BAD || h.status != bad[i].status || strcmp(h.error, bad[i].error))
                fail_msg("case %zu (%s): verdict %d status %d", i, bytewise ? "bytewise" : "whole",
                         v, h.status);
        }
        assert_int_equal(head_feed(&h, bad[i].head, len, HEAD_MAX), HEAD_BAD);
    }
}

/* Garbage is refused at its first byte: a TLS ClientHello sent to a plain port, say. */
static void test_refused_before_the_line_ends(void **state)
{
    static const char hello[] = "\x16\x03\x01\x02\x00\x01";
    static const char cr[] = "GET / HTTP/1.1\rX";
    struct head h;
    (void)state;
    assert_int_equal(feed_all(&h, hello, 1, HEAD_MAX), HEAD_BAD);
    assert_int_equal(h.status, 400);
    assert_int_equal(feed_all(&h, cr, sizeof(cr) - 1, HEAD_MAX), HEAD_BAD);
    assert_int_equal(feed_all(&h, cr, sizeof(cr) - 2, HEAD_MAX), HEAD_MORE);
}

/* Builds "GET /aaa... HTTP/1.1\r\nHost: x\r\n" padded with X headers to exactly len bytes. */
static char *head_of_length(size_t len)
{
    static const char line[] = "GET / HTTP/1.1\r\nHost: x\r\n";
    char *s = malloc(len + 1);
    assert_non_null(s);
    assert_true(len >= sizeof(line) - 1 + 2 + 6);
    memcpy(s, line, sizeof(line) - 1);
    size_t pos = sizeof(line) - 1, pad = len - pos - 2 - 5; /* "X: " ... "\r\n", then "\r\n" */
    memcpy(s + pos, "X: ", 3);
    memset(s + pos + 3, 'a', pad);
    memcpy(s + pos + 3 + pad, "\r\n\r\n", 4);
    s[len] = '\0';
    assert_int_equal(strlen(s), len);
    return s;
}

static void test_size_cap(void **state)
{
    struct head h;
    (void)state;
    char *at = head_of_length(HEAD_MAX), *over = head_of_length(HEAD_MAX + 1);
    assert_int_equal(feed_all(&h, at, HEAD_MAX, HEAD_MAX), HEAD_DONE);
    assert_int_equal(h.end, HEAD_MAX);
    assert_int_equal(feed_all(&h, over, HEAD_MAX + 1, HEAD_MAX), HEAD_BAD);
    assert_int_equal(h.status, 431);
    assert_string_equal(h.error, "Request Header Fields Too Large");
    /* The bytes past the cap are never looked at: the same verdict with only max of them. */
    assert_int_equal(feed_all(&h, over, HEAD_MAX, HEAD_MAX), HEAD_BAD);
    assert_int_equal(h.status, 431);
    assert_int_equal(feed_bytewise(&h, over, HEAD_MAX + 1, HEAD_MAX), HEAD_BAD);
    assert_int_equal(h.status, 431);
    free(at);
    free(over);

    /* A request line longer than the cap is 414. */
    char *url = malloc(HEAD_MAX + 1);
    assert_non_null(url);
    memcpy(url, "GET /", 5);
    memset(url + 5, 'u', HEAD_MAX - 5);
    assert_int_equal(feed_all(&h, url, HEAD_MAX, HEAD_MAX), HEAD_BAD);
    assert_int_equal(h.status, 414);
    assert_string_equal(h.error, "URI Too Long");
    free(url);

    /* A 1 MB header is refused after the cap. */
    size_t mb = 1024 * 1024;
    char *big = head_of_length(mb);
    assert_int_equal(feed_all(&h, big, mb, HEAD_MAX), HEAD_BAD);
    assert_int_equal(h.status, 431);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_heads),
        cmocka_unit_test(test_bytes_after_the_head),
        cmocka_unit_test(test_empty_lines_before_the_request_line),
        cmocka_unit_test(test_incomplete_heads_wait),
        cmocka_unit_test(test_bad_heads),
        cmocka_unit_test(test_refused_before_the_line_ends),
        cmocka_unit_test(test_size_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
