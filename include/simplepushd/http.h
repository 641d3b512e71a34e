/*
 * http: one HTTP/1.1 transaction on an lws connection, from the request line to the JSON
 * response, for both listeners.
 *
 * lws calls LWS_CALLBACK_HTTP with the path; http_callback() dispatches it: PUT
 * /update/<token> to the endpoint module, the health paths to their handlers, anything else
 * to a JSON 404. A response given with http_respond() inside the connection's callbacks is
 * queued and written from the writeable callback; one given later (a store completion) is
 * written at once. Either way headers and body go out in one write. Every response has a
 * JSON body and Content-Type application/json.
 *
 * Loop thread only.
 */
#ifndef SIMPLEPUSHD_HTTP_H
#define SIMPLEPUSHD_HTTP_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The per-connection state lws allocates for our HTTP protocols (zeroed). */
struct http_txn {
    struct lws *wsi;
    uint64_t id;              /* registry id while a store request is in flight, else 0 */
    int status;               /* response status, 0 while none is queued */
    uint8_t phase;            /* enum http_phase */
    bool close_after;         /* close the connection once the response is written */
    bool internal;            /* on the internal listener */
    const char *allow;        /* value of an Allow: header, or NULL */
    unsigned retry_after;     /* Retry-After seconds, or 0 */
    bool cors;                /* add CORS headers */
    bool is_put;              /* a PUT /update: its answer is counted */
    const char *content_type; /* NULL: application/json */
    char *resp;               /* response body, malloc'd */
    size_t resp_len;
    char *body; /* request body being read, malloc'd */
    size_t body_len;
    size_t body_expected; /* Content-Length */
    bool body_started;    /* body bytes came for this request */
    bool body_done;       /* LWS_CALLBACK_HTTP_BODY_COMPLETION came for this request */
    char *token;          /* PUT: the token of the path, malloc'd */
    bool route;           /* PUT /route/<uaid> from another node: the body goes to the router */
    uint8_t uaid[16];     /* its uaid */
};

/* The lws protocol callback of the public and the internal HTTP protocols. */
int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len);

/*
 * Responds with status and a JSON body (copied; NULL means "{}"). Inside the connection's
 * own lws callbacks the response is queued for the writeable callback. Outside them (a store
 * completion) it is written at once and the transaction completed, and lws frees txn:
 * callers must not use txn after http_respond() or http_respond_error() there. Returns 0,
 * or -1 (then the connection should be closed).
 */
int http_respond(struct http_txn *txn, int status, const char *json);

/* Queues {"status":N,"error":"<text>"}. */
int http_respond_error(struct http_txn *txn, int status, const char *text);

/* Releases what the transaction holds and resets it for the next request. */
void http_txn_reset(struct http_txn *txn);

/*
 * Refuses every Upgrade but "websocket" (LWS_CALLBACK_HTTP_CONFIRM_UPGRADE, reached by
 * both protocols): returns 0 to let a WebSocket upgrade go on, -1 to hang up. Never reads
 * "in" (CVE-2025-11677: lws may pass a pointer into a freed header table).
 */
int http_confirm_upgrade(struct lws *wsi);

#endif
