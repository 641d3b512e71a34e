/*
 * http: HTTP transactions on both listeners; dispatch, health endpoints, JSON responses.
 *
 * A response (status, headers to add, body) goes out in one write of the header block and the
 * body; lws keeps what the socket does not take. Inside the connection's own callbacks lws is
 * still busy with the request, so the response is queued in the transaction and written from
 * LWS_CALLBACK_HTTP_WRITEABLE. Outside them (a store completion) it is written at once and
 * the transaction completed there, which saves a POLLOUT round. A response that is sent
 * before the request body was read closes the connection, since the unread body would be
 * taken for the next request; such responses always go through WRITEABLE.
 */
#include "simplepushd/http.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simplepushd/assets.h"
#include "simplepushd/config.h"
#include "simplepushd/endpoint.h"
#include "simplepushd/gate.h"
#include "simplepushd/ids.h"
#include "simplepushd/log.h"
#include "simplepushd/metrics.h"
#include "simplepushd/registry.h"
#include "simplepushd/router.h"
#include "simplepushd/server.h"
#include "simplepushd/store.h"

#ifndef SP_SOURCE_URL
#define SP_SOURCE_URL "https://github.com/simplepushd/simplepushd"
#endif

enum http_phase {
    HTTP_PHASE_REQUEST = 0, /* reading the request, or waiting for the store */
    HTTP_PHASE_RESPONSE,    /* response queued, not written yet */
    HTTP_PHASE_DONE,
};

/* Room for the header block in the response buffer. */
#define HTTP_HEADERS_MAX 1024
/* Responses up to this size (headers and body) are built on the stack. */
#define HTTP_STACK_RESPONSE 2048

/* The connection whose callback is running (NULL outside http_callback). */
static struct lws *serving_wsi;

static int write_response(struct http_txn *txn);
static int send_now(struct http_txn *txn);

void http_txn_reset(struct http_txn *txn)
{
    if (txn->id)
        registry_remove(server_self->reg, txn->id);
    free(txn->resp);
    free(txn->body);
    free(txn->token);
    struct lws *wsi = txn->wsi;
    bool internal = txn->internal;
    memset(txn, 0, sizeof(*txn));
    txn->wsi = wsi;
    txn->internal = internal;
}

/* Queues a response body of len bytes (copied). */
static int respond_bytes(struct http_txn *txn, int status, const void *body, size_t len)
{
    free(txn->resp);
    txn->resp_len = len;
    txn->resp = malloc(len + 1);
    if (!txn->resp)
        return -1;
    memcpy(txn->resp, body, len);
    txn->resp[len] = '\0';
    txn->status = status;
    txn->phase = HTTP_PHASE_RESPONSE;
    if (txn->wsi != serving_wsi && !txn->close_after && !lws_partial_buffered(txn->wsi))
        return send_now(txn);
    lws_callback_on_writable(txn->wsi);
    return 0;
}

int http_respond(struct http_txn *txn, int status, const char *json)
{
    if (!json)
        json = "{}";
    return respond_bytes(txn, status, json, strlen(json));
}

int http_respond_error(struct http_txn *txn, int status, const char *text)
{
    char buf[256];
    json_t *obj = json_pack("{s:i, s:s}", "status", status, "error", text);
    if (!obj)
        return -1;
    int n = json_dumpb(obj, buf, sizeof(buf) - 1, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (n <= 0 || (size_t)n >= sizeof(buf))
        return -1;
    buf[n] = '\0';
    return http_respond(txn, status, buf);
}

/* Adds the header block of the queued response at *p (ends before end). Returns 0 or -1. */
static int add_headers(struct http_txn *txn, uint8_t **p, uint8_t *end)
{
    struct lws *wsi = txn->wsi;

    if (lws_add_http_common_headers(wsi, (unsigned)txn->status,
                                    txn->content_type ? txn->content_type : "application/json",
                                    txn->resp_len, p, end))
        return -1;
    if (txn->allow &&
        lws_add_http_header_by_name(wsi, (const uint8_t *)"allow:", (const uint8_t *)txn->allow,
                                    (int)strlen(txn->allow), p, end))
        return -1;
    if (txn->retry_after) {
        char v[16];
        int n = snprintf(v, sizeof(v), "%u", txn->retry_after);
        if (lws_add_http_header_by_name(wsi, (const uint8_t *)"retry-after:", (uint8_t *)v, n, p,
                                        end))
            return -1;
    }
    if (txn->cors) {
        static const char origin[] = "*", methods[] = "PUT, OPTIONS", headers[] = "Content-Type";
        if (lws_add_http_header_by_name(wsi, (const uint8_t *)"access-control-allow-origin:",
                                        (const uint8_t *)origin, sizeof(origin) - 1, p, end) ||
            lws_add_http_header_by_name(wsi, (const uint8_t *)"access-control-allow-methods:",
                                        (const uint8_t *)methods, sizeof(methods) - 1, p, end) ||
            lws_add_http_header_by_name(wsi, (const uint8_t *)"access-control-allow-headers:",
                                        (const uint8_t *)headers, sizeof(headers) - 1, p, end))
            return -1;
    }
    if (txn->close_after && lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION,
                                                         (const uint8_t *)"close", 5, p, end))
        return -1;
    return lws_finalize_http_header(wsi, p, end) ? -1 : 0;
}

/*
 * Writes the queued response, header block and body, in one lws_write: one send and one
 * POLLOUT round per response rather than two. Returns 0, or -1 to close.
 */
static int write_response(struct http_txn *txn)
{
    uint8_t stack[LWS_PRE + HTTP_STACK_RESPONSE];
    size_t cap = HTTP_HEADERS_MAX + txn->resp_len;
    uint8_t *buf = stack;
    int rc = -1;

    if (txn->is_put)
        metrics_put(txn->status);
    if (cap > HTTP_STACK_RESPONSE && !(buf = malloc(LWS_PRE + cap)))
        return -1;
    uint8_t *start = buf + LWS_PRE, *p = start;
    /* The header block may take the room the body does not need. */
    if (add_headers(txn, &p, start + cap - txn->resp_len - 1))
        goto out;
    memcpy(p, txn->resp, txn->resp_len);
    p += txn->resp_len;
    size_t len = (size_t)(p - start);
    if (lws_write(txn->wsi, start, len, LWS_WRITE_HTTP_FINAL) == (int)len)
        rc = 0;
out:
    if (buf != stack)
        free(buf);
    return rc;
}

/*
 * Writes the queued response and completes the transaction, outside the connection's own
 * callbacks. lws then frees and remakes the per-session data, so txn is gone on return. A
 * connection that cannot go on (a failed write, no keep-alive) is killed from lws's next
 * turn, which lws_cancel_service() brings about. Returns 0.
 */
static int send_now(struct http_txn *txn)
{
    struct lws *wsi = txn->wsi;
    int rc = write_response(txn);
    txn->phase = HTTP_PHASE_DONE;
    http_txn_reset(txn);
    if (rc || lws_http_transaction_completed(wsi)) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        lws_cancel_service(lws_get_context(wsi));
    }
    return 0;
}

static int on_writeable(struct http_txn *txn)
{
    if (txn->phase != HTTP_PHASE_RESPONSE)
        return 0;
    if (write_response(txn))
        return -1;
    bool close_after = txn->close_after;
    txn->phase = HTTP_PHASE_DONE;
    http_txn_reset(txn);
    if (close_after)
        return -1;
    return lws_http_transaction_completed(txn->wsi) ? -1 : 0;
}

/* ---- health endpoints ---- */

static bool server_full(void)
{
    return server_self->n_devices >= (size_t)server_self->max_connections;
}

static int respond_status(struct http_txn *txn)
{
    bool ok = !server_full() && !server_self->stopping;
    char buf[160];
    snprintf(buf, sizeof(buf), "{\"status\":\"%s\",\"clients\":%zu,\"version\":\"%s\"}",
             ok ? "OK" : "NOPE", server_self->n_devices, SP_VERSION);
    return http_respond(txn, ok ? 200 : 503, buf);
}

static int respond_metrics(struct http_txn *txn)
{
    struct metrics_gauges g = {
        .connections = server_self->n_devices,
        .max_connections = server_self->max_connections,
        .handshakes = gate_handshakes(server_self->gate),
        .draining = server_self->stopping,
        .log_drops = log_heka_drops(),
        .breaker = store_mc_breaker_state(server_self->store),
    };
    size_t len;
    char *text = metrics_render(&g, &len);
    if (!text)
        return http_respond_error(txn, 500, "An unexpected error occurred");
    txn->content_type = "text/plain; version=0.0.4";
    int rc = http_respond(txn, 200, text);
    free(text);
    return rc;
}

static int respond_version(struct http_txn *txn)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "{\"version\":\"%s\",\"commit\":\"%s\",\"source\":\"%s\"}",
             SP_VERSION, SP_COMMIT, SP_SOURCE_URL);
    return http_respond(txn, 200, buf);
}

static void heartbeat_done(struct store_req *req)
{
    struct http_txn *txn = registry_find(server_self->reg, req->owner);
    if (txn) {
        registry_remove(server_self->reg, txn->id);
        txn->id = 0;
        int breaker = store_mc_breaker_state(server_self->store); /* -1: not memcached */
        if (req->status == STORE_OK && breaker <= STORE_MC_CLOSED)
            http_respond(txn, 200, "{\"status\":\"ok\",\"storage\":\"ok\"}");
        else if (breaker == STORE_MC_OPEN || breaker == STORE_MC_HALF_OPEN)
            http_respond(txn, 503,
                         "{\"status\":\"error\",\"storage\":\"memcached unreachable (circuit "
                         "open)\"}");
        else
            http_respond(txn, 503, "{\"status\":\"error\",\"storage\":\"unavailable\"}");
    }
    store_req_free(req);
}

/* The deep health check: one read of a random uaid through the store. */
static int respond_heartbeat(struct http_txn *txn)
{
    struct store_req *req = store_req_new(STORE_FETCH);
    if (!req)
        return http_respond_error(txn, 500, "An unexpected error occurred");
    ids_generate(req->uaid);
    txn->id = registry_next_id(server_self->reg);
    if (registry_add(server_self->reg, txn->id, txn)) {
        txn->id = 0;
        store_req_free(req);
        return http_respond_error(txn, 500, "An unexpected error occurred");
    }
    req->owner = txn->id;
    req->done = heartbeat_done;
    store_submit(server_self->store, req);
    return 0;
}

static bool is_method(struct lws *wsi, enum lws_token_indexes tok)
{
    return lws_hdr_total_length(wsi, tok) > 0;
}

static int dispatch(struct http_txn *txn, const char *path, size_t len)
{
    struct lws *wsi = txn->wsi;
    static const char update[] = "/update";

    if (!txn->internal && len >= sizeof(update) - 1 && !memcmp(path, update, sizeof(update) - 1) &&
        (len == sizeof(update) - 1 || path[sizeof(update) - 1] == '/'))
        return endpoint_begin(txn, path + sizeof(update) - 1, len - (sizeof(update) - 1));

    static const char route[] = "/route";
    if (txn->internal && len >= sizeof(route) - 1 && !memcmp(path, route, sizeof(route) - 1) &&
        (len == sizeof(route) - 1 || path[sizeof(route) - 1] == '/'))
        return router_http_begin(txn, path + sizeof(route) - 1, len - (sizeof(route) - 1));

    enum { H_NONE, H_STATUS, H_LB, H_HEART, H_VERSION, H_METRICS, H_ASSET } which = H_NONE;
    const struct asset *asset = NULL;
    if (!txn->internal && (!strcmp(path, "/status/") || !strcmp(path, "/status")))
        which = H_STATUS;
    else if (!txn->internal && !strcmp(path, "/__lbheartbeat__"))
        which = H_LB;
    else if (!strcmp(path, "/__heartbeat__"))
        which = H_HEART;
    else if (!txn->internal && !strcmp(path, "/__version__"))
        which = H_VERSION;
    else if (txn->internal && !strcmp(path, "/metrics"))
        which = H_METRICS;
    else if (!txn->internal && server_self->cfg->server_demo &&
             (asset = assets_find(!strcmp(path, "/demo") ? "/demo/" : path)))
        which = H_ASSET;

    /* Whatever the answer, a body we do not read would be taken for the next request. */
    char cl[32];
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) ||
        (lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 && strcmp(cl, "0")))
        txn->close_after = true;

    if (which == H_NONE)
        return http_respond_error(txn, 404, "Not Found");
    if (!is_method(wsi, WSI_TOKEN_GET_URI)) {
        txn->allow = "GET";
        return http_respond_error(txn, 405, "Method Not Allowed");
    }
    switch (which) {
    case H_STATUS:
        return respond_status(txn);
    case H_LB:
        if (server_full() || server_self->stopping)
            return http_respond(txn, 503, "{}");
        return http_respond(txn, 200, "{}");
    case H_HEART:
        return respond_heartbeat(txn);
    case H_VERSION:
        return respond_version(txn);
    case H_METRICS:
        return respond_metrics(txn);
    case H_ASSET:
        /* The demo page and the client library: the one non-JSON content of the public port. */
        txn->content_type = asset->content_type;
        return respond_bytes(txn, 200, asset->data, asset->len);
    default:
        return http_respond_error(txn, 404, "Not Found");
    }
}

int http_confirm_upgrade(struct lws *wsi)
{
    char up[32];
    int n = lws_hdr_copy(wsi, up, sizeof(up), WSI_TOKEN_UPGRADE);
    if (n > 0 && !strcasecmp(up, "websocket"))
        return 0;

    /* Anything else (h2c above all: it reaches lws's HTTP/2 code) is refused here. */
    log_info("http", "refused upgrade to \"%s\"", n > 0 ? up : "?");
    if (n > 0) {
        static const char body[] = "{\"status\":400,\"error\":\"Unsupported Upgrade\"}";
        uint8_t buf[LWS_PRE + 512], *start = buf + LWS_PRE, *p = start,
                                    *end = buf + sizeof(buf) - 1;
        if (!lws_add_http_common_headers(wsi, 400, "application/json", sizeof(body) - 1, &p, end) &&
            !lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const uint8_t *)"close", 5,
                                          &p, end) &&
            !lws_finalize_write_http_header(wsi, start, &p, end)) {
            uint8_t b[LWS_PRE + sizeof(body)];
            memcpy(b + LWS_PRE, body, sizeof(body) - 1);
            lws_write(wsi, b + LWS_PRE, sizeof(body) - 1, LWS_WRITE_HTTP_FINAL);
        }
    }
    return -1;
}

/*
 * Whether a request's first body bytes are the start of a request line ("PUT /", ...).
 * lws 4.1 parses a request that it had buffered (sent pipelined behind another) and then
 * hands that same buffer, from its first byte, to the body parser: the body is the request
 * itself, and once the announced length is consumed lws loops forever on the rest. Failing
 * the body callback is the one way out of that loop (lws closes the connection). No body of
 * ours starts like a request line.
 */
static bool is_request_line(const char *in, size_t len)
{
    static const char *const methods[] = {"PUT /",    "POST /",  "GET /",     "HEAD /",
                                          "DELETE /", "PATCH /", "OPTIONS /", "CONNECT /"};
    if (!in || !len)
        return false;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        size_t n = strlen(methods[i]);
        if (!memcmp(in, methods[i], len < n ? len : n))
            return true;
    }
    return false;
}

static int dispatch_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                             void *in, size_t len)
{
    struct http_txn *txn = user;

    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return http_confirm_upgrade(wsi);

    case LWS_CALLBACK_HTTP: {
        if (!txn)
            return -1;
        txn->wsi = wsi;
        txn->internal = lws_get_vhost(wsi) == server_self->vh_internal;
        http_txn_reset(txn);
        const char *path = in ? in : "/";
        size_t plen = in ? strlen(path) : 1;
        (void)len;
        if (dispatch(txn, path, plen))
            return -1;
        return 0;
    }

    case LWS_CALLBACK_HTTP_BODY:
        if (txn && !txn->body_started) {
            txn->body_started = true;
            if (is_request_line(in, len))
                return -1;
        }
        if (!txn || txn->phase != HTTP_PHASE_REQUEST || !txn->body)
            return 0; /* answered already; the connection closes after the response */
        if (txn->body_len + len > txn->body_expected)
            return -1;
        memcpy(txn->body + txn->body_len, in, len);
        txn->body_len += len;
        return 0;

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        /*
         * Once per request. lws 4.1 calls this again each time it services the connection
         * while bytes wait in its input buffer after the body (a pipelined request, stray
         * bytes). It cannot parse a request with a body from that buffer (it takes the
         * request's own bytes for the body and then loops forever), so the connection closes
         * after this response instead of going on to that request.
         */
        if (!txn)
            return 0;
        if (txn->body_done) {
            if (txn->body)
                txn->close_after = true;
            return 0;
        }
        txn->body_done = true;
        if (txn->phase != HTTP_PHASE_REQUEST || !txn->body)
            return 0;
        if (txn->route)
            return router_http_finish(txn) ? -1 : 0;
        return endpoint_finish(txn) ? -1 : 0;

    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!txn)
            return -1;
        return on_writeable(txn);

    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (txn)
            http_txn_reset(txn);
        return 0;

    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

int http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                  size_t len)
{
    struct lws *outer = serving_wsi;
    serving_wsi = wsi;
    int rc = dispatch_callback(wsi, reason, user, in, len);
    serving_wsi = outer;
    return rc;
}
