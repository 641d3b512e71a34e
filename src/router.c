/*
 * router: node-to-node requests as an lws HTTP client.
 *
 * Invariants:
 * - A job is in exactly one of two lists: in flight (r->flight), or finished and waiting for
 *   its completion to run (r->finished). Completions run from a zero-delay timer, so never
 *   inside the call that submitted the job.
 * - While a job is in flight and its connection exists, the connection's opaque user data
 *   points at the job and job->wsi at the connection; finishing a job breaks both links
 *   first, so a connection that outlives its job (a deadline, a shutdown) finds nothing.
 * - lws reports the end of every client connection exactly once, either as
 *   CLIENT_CONNECTION_ERROR or as CLOSED_CLIENT_HTTP; a failure inside
 *   lws_client_connect_via_info() is reported by its NULL result instead.
 */
#include "simplepushd/router.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "simplepushd/config.h"
#include "simplepushd/device.h"
#include "simplepushd/endpoint.h"
#include "simplepushd/http.h"
#include "simplepushd/log.h"
#include "simplepushd/metrics.h"
#include "simplepushd/server.h"
#include "simplepushd/store.h"

/* How often deadlines are checked while requests are in flight. */
#define ROUTER_SWEEP_MS 100

struct route_job {
    lws_dll2_t list; /* in r->flight or r->finished */
    struct router *r;
    struct lws *wsi;
    uint64_t owner;
    router_done_fn done;
    void *arg;
    uint64_t deadline_ms;
    int status; /* the response's status once its head has arrived */
    const char *method;
    char path[96];
    char host[INET6_ADDRSTRLEN + 1];
    char node[STORE_NODE_MAX + 1];
    int port;
    char *body;
    size_t body_len;
};

struct router {
    uv_loop_t *loop;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    const char *protocol;
    uv_timer_t sweep;                  /* deadlines */
    uv_timer_t deliver;                /* completions */
    lws_dll2_owner_t flight, finished; /* oldest first */
    bool closing;
    int handles_open;
};

static struct route_job *job_of(struct lws_dll2 *d)
{
    return lws_container_of(d, struct route_job, list);
}

static void job_free(struct route_job *j)
{
    free(j->body);
    free(j);
}

static void on_deliver(uv_timer_t *t);

/*
 * Moves an in-flight job to the finished list with status. kill: the connection is still
 * open and of no more use (a deadline, a shutdown), so it is closed.
 */
static void job_finish(struct route_job *j, int status, bool kill)
{
    struct router *r = j->r;
    if (j->wsi) {
        lws_set_opaque_user_data(j->wsi, NULL);
        if (kill) {
            lws_set_timeout(j->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            lws_cancel_service(r->ctx);
        }
        j->wsi = NULL;
    }
    j->status = status;
    lws_dll2_remove(&j->list);
    lws_dll2_add_tail(&j->list, &r->finished);
    if (!uv_is_active((uv_handle_t *)&r->deliver))
        uv_timer_start(&r->deliver, on_deliver, 0, 0);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct router *r = h->data;
    if (--r->handles_open == 0)
        free(r);
}

static void on_deliver(uv_timer_t *t)
{
    struct router *r = t->data;
    while (r->finished.head) {
        struct route_job *j = job_of(r->finished.head);
        lws_dll2_remove(&j->list);
        j->done(j->owner, j->status, j->arg);
        job_free(j);
    }
    if (!r->flight.count)
        uv_timer_stop(&r->sweep);
    if (r->closing && !r->flight.count && !r->finished.count && r->handles_open == 2) {
        uv_close((uv_handle_t *)&r->sweep, on_handle_closed);
        uv_close((uv_handle_t *)&r->deliver, on_handle_closed);
    }
}

static void on_sweep(uv_timer_t *t)
{
    struct router *r = t->data;
    uint64_t now = uv_now(r->loop);
    /* Every job has the same timeout, so the oldest is first. */
    while (r->flight.head && now >= job_of(r->flight.head)->deadline_ms) {
        struct route_job *j = job_of(r->flight.head);
        log_info("router", "%s %s on %s: no answer in %d ms", j->method, j->path, j->node,
                 ROUTER_TIMEOUT_MS);
        job_finish(j, ROUTER_FAILED, true);
    }
}

struct router *router_new(uv_loop_t *loop, struct lws_context *ctx, struct lws_vhost *vhost,
                          const char *protocol_name)
{
    struct router *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->loop = loop;
    r->ctx = ctx;
    r->vhost = vhost;
    r->protocol = protocol_name;
    uv_timer_init(loop, &r->sweep);
    uv_timer_init(loop, &r->deliver);
    r->sweep.data = r->deliver.data = r;
    r->handles_open = 2;
    return r;
}

void router_close(struct router *r)
{
    if (!r || r->closing)
        return;
    r->closing = true;
    while (r->flight.head)
        job_finish(job_of(r->flight.head), ROUTER_FAILED, false);
    uv_timer_start(&r->deliver, on_deliver, 0, 0);
}

size_t router_in_flight(const struct router *r)
{
    return r ? r->flight.count : 0;
}

int router_parse_node(const char *node, char *host, size_t host_size, int *port)
{
    const char *h = node, *colon;
    size_t hlen;
    if (!node || !*node || strlen(node) > STORE_NODE_MAX)
        return -1;
    if (*node == '[') {
        const char *close = strchr(node, ']');
        if (!close || close[1] != ':')
            return -1;
        h = node + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(node, ':');
        if (!colon || memchr(node, ':', (size_t)(colon - node)))
            return -1;
        hlen = (size_t)(colon - node);
    }
    if (hlen == 0 || hlen >= host_size)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(*node == '[' ? AF_INET6 : AF_INET, host, addr) != 1)
        return -1;
    char *end;
    const char *digits = colon + 1;
    if (*digits < '0' || *digits > '9')
        return -1;
    long p = strtol(digits, &end, 10);
    if (*end || p < 1 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

/* Submits a job (the router owns it from here, and frees it on failure). */
static int submit(struct router *r, struct route_job *j, uint64_t owner, router_done_fn done,
                  void *arg)
{
    if (r->closing) {
        job_free(j);
        return -1;
    }
    j->owner = owner;
    j->done = done;
    j->arg = arg;
    j->r = r;
    j->deadline_ms = uv_now(r->loop) + ROUTER_TIMEOUT_MS;
    lws_dll2_add_tail(&j->list, &r->flight);
    if (!uv_is_active((uv_handle_t *)&r->sweep))
        uv_timer_start(&r->sweep, on_sweep, ROUTER_SWEEP_MS, ROUTER_SWEEP_MS);

    struct lws_client_connect_info i;
    memset(&i, 0, sizeof(i));
    i.context = r->ctx;
    i.vhost = r->vhost;
    i.address = j->host;
    i.port = j->port;
    i.path = j->path;
    i.host = j->node;
    i.origin = j->node;
    i.method = j->method;
    i.local_protocol_name = r->protocol;
    i.alpn = "http/1.1";
    i.opaque_user_data = j;
    i.pwsi = &j->wsi;
    if (!lws_client_connect_via_info(&i)) {
        /* Failed inside the call: lws reports nothing more for it. */
        j->wsi = NULL;
        job_finish(j, ROUTER_FAILED, false);
    }
    return 0;
}

static struct route_job *job_new(const char *node, const char *method)
{
    struct route_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    if (router_parse_node(node, j->host, sizeof(j->host), &j->port)) {
        log_warning("router", "bad node address \"%s\" in a host record", node);
        free(j);
        return NULL;
    }
    snprintf(j->node, sizeof(j->node), "%s", node);
    j->method = method;
    return j;
}

int router_route(struct router *r, const char *node, const uint8_t uaid[IDS_BYTES],
                 const struct store_update *update, uint64_t owner, router_done_fn done, void *arg)
{
    char u[IDS_MAX_STR + 1], chid[IDS_MAX_STR + 1];
    struct ids_spelling plain = {0};
    struct route_job *j = job_new(node, "PUT");
    if (!j)
        return -1;
    ids_format(uaid, &plain, u);
    ids_format(update->chid, &update->chid_sp, chid);
    snprintf(j->path, sizeof(j->path), "/route/%s", u);

    json_t *obj =
        json_pack("{s:s, s:I}", "channelID", chid, "version", (json_int_t)update->version);
    if (obj && update->data && update->data_len &&
        json_object_set_new(obj, "data", json_stringn(update->data, update->data_len))) {
        json_decref(obj);
        obj = NULL;
    }
    if (!obj) {
        job_free(j);
        return -1;
    }
    j->body = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!j->body) {
        job_free(j);
        return -1;
    }
    j->body_len = strlen(j->body);
    return submit(r, j, owner, done, arg);
}

int router_kick(struct router *r, const char *node, const uint8_t uaid[IDS_BYTES], uint64_t gen,
                uint64_t owner, router_done_fn done, void *arg)
{
    char u[IDS_MAX_STR + 1];
    struct ids_spelling plain = {0};
    struct route_job *j = job_new(node, "DELETE");
    if (!j)
        return -1;
    ids_format(uaid, &plain, u);
    snprintf(j->path, sizeof(j->path), "/route/%s?gen=%016" PRIx64, u, gen);
    return submit(r, j, owner, done, arg);
}

/* Adds the body's headers and asks for the writeable callback that sends it. */
static int append_headers(struct route_job *j, struct lws *wsi, void *in, size_t len)
{
    uint8_t **p = (uint8_t **)in, *end = *p + len;
    char cl[24];
    int n = snprintf(cl, sizeof(cl), "%zu", j->body_len);
    if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, (const uint8_t *)cl, n, p,
                                     end))
        return -1;
    if (!j->body_len)
        return 0;
    if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
                                     (const uint8_t *)"application/json", 16, p, end))
        return -1;
    lws_client_http_body_pending(wsi, 1);
    lws_callback_on_writable(wsi);
    return 0;
}

static int write_body(struct route_job *j, struct lws *wsi)
{
    if (!j->body)
        return 0;
    uint8_t *buf = malloc(LWS_PRE + j->body_len);
    if (!buf)
        return -1;
    memcpy(buf + LWS_PRE, j->body, j->body_len);
    int n = lws_write(wsi, buf + LWS_PRE, j->body_len, LWS_WRITE_HTTP_FINAL);
    free(buf);
    free(j->body);
    j->body = NULL;
    lws_client_http_body_pending(wsi, 0);
    return n < (int)j->body_len ? -1 : 0;
}

/*
 * One connection per request would leave a socket in TIME_WAIT per route on this side (and
 * run out of ephemeral ports at a few hundred routes a second). The answer has been read in
 * full, so the connection is closed with a reset instead (SO_LINGER 0), which leaves none.
 */
static void abort_on_close(struct lws *wsi)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    lws_sockfd_type fd = lws_get_socket_fd(wsi);
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

int router_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct route_job *j = lws_get_opaque_user_data(wsi);

    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        if (!j)
            return -1;
        return append_headers(j, wsi, in, len);

    case LWS_CALLBACK_CLIENT_HTTP_WRITEABLE:
        if (!j)
            return -1;
        return write_body(j, wsi);

    case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
        if (!j)
            return -1;
        j->status = (int)lws_http_client_http_response(wsi);
        return 0;

    case LWS_CALLBACK_RECEIVE_CLIENT_HTTP: {
        /* The body (a small JSON object) is drained and not needed. */
        char buf[LWS_PRE + 1024], *p = buf + LWS_PRE;
        int n = (int)sizeof(buf) - LWS_PRE;
        return lws_http_client_read(wsi, &p, &n) < 0 ? -1 : 0;
    }

    case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
        return 0;

    case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
        if (j)
            job_finish(j, j->status > 0 ? j->status : ROUTER_FAILED, false);
        abort_on_close(wsi);
        return -1; /* one request per connection */

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (j) {
            log_info("router", "%s %s on %s: %s", j->method, j->path, j->node,
                     in ? (const char *)in : "connection failed");
            job_finish(j, ROUTER_FAILED, false);
        }
        return 0;

    case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
        /* Closed before the response was complete. */
        if (j)
            job_finish(j, ROUTER_FAILED, false);
        return 0;

    default:
        break;
    }
    (void)user;
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* ---- the receiving side: /route/<uaid> on the internal listener ---- */

/* The body's cap: data at most max_data_len bytes, each escaped in JSON as \uXXXX at worst. */
static size_t route_body_cap(void)
{
    return 6 * (size_t)server_self->cfg->endpoint_max_data_len + 1024;
}

static int respond_route(struct http_txn *txn, uint64_t *counters, int status, const char *error)
{
    counters[metrics_route_result(status)]++;
    if (status == 200)
        return http_respond(txn, 200, "{}");
    return http_respond_error(txn, status, error);
}

/* The DELETE: ?gen=<1..16 hex digits>, nothing else. */
static int route_kick(struct http_txn *txn)
{
    char q[64];
    int n = lws_hdr_copy_fragment(txn->wsi, q, sizeof(q), WSI_TOKEN_HTTP_URI_ARGS, 0);
    char extra[8];
    if (n < 5 || n > 4 + 16 || strncmp(q, "gen=", 4) ||
        lws_hdr_copy_fragment(txn->wsi, extra, sizeof(extra), WSI_TOKEN_HTTP_URI_ARGS, 1) >= 0)
        return respond_route(txn, metrics.kick_in, 400, "Invalid Generation");
    uint64_t gen = 0;
    for (int i = 4; i < n; i++) {
        int c = q[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return respond_route(txn, metrics.kick_in, 400, "Invalid Generation");
        gen = gen << 4 | (uint64_t)d;
    }
    if (device_kick(txn->uaid, gen))
        return respond_route(txn, metrics.kick_in, 404, "Not Connected");
    return respond_route(txn, metrics.kick_in, 200, NULL);
}

int router_http_begin(struct http_txn *txn, const char *path, size_t path_len)
{
    struct lws *wsi = txn->wsi;
    bool put = lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI) > 0;
    bool del = lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI) > 0;
    bool has_te = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
    char cl[32];
    int cl_len = lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH);
    bool has_cl = cl_len > 0 ||
                  lws_hdr_copy_fragment(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH, 0) >= 0;
    uint64_t *counters = del ? metrics.kick_in : metrics.route_in;
    struct ids_spelling sp;

    /* A body that is not read would be taken for the next request. */
    if (has_te || (has_cl && !(cl_len == 1 && cl[0] == '0')))
        txn->close_after = true;
    if (!put && !del) {
        txn->allow = "PUT, DELETE";
        return http_respond_error(txn, 405, "Method Not Allowed");
    }
    if (path_len < 2 || path[0] != '/' || memchr(path + 1, '/', path_len - 1) ||
        ids_parse(path + 1, path_len - 1, txn->uaid, &sp))
        return respond_route(txn, counters, 400, "Invalid UAID");
    if (del)
        return route_kick(txn);

    if (has_te)
        return respond_route(txn, counters, 411, "Length Required");
    int64_t length;
    if (!has_cl)
        return respond_route(txn, counters, 411, "Length Required");
    if (cl_len <= 0 || endpoint_parse_version(cl, (size_t)cl_len, &length))
        return respond_route(txn, counters, 400, "Invalid Content-Length");
    if ((uint64_t)length > route_body_cap())
        return respond_route(txn, counters, 413, "Request Entity Too Large");
    if (length == 0)
        return respond_route(txn, counters, 400, "Invalid Body");
    txn->close_after = false;
    txn->body = malloc((size_t)length);
    if (!txn->body)
        return -1;
    txn->body_expected = (size_t)length;
    txn->route = true;
    return 0;
}

int router_http_finish(struct http_txn *txn)
{
    uint64_t *counters = metrics.route_in;
    json_error_t err;
    struct store_update u;
    memset(&u, 0, sizeof(u));

    json_t *root = json_loadb(txn->body, txn->body_len, JSON_REJECT_DUPLICATES, &err);
    json_t *chid = root ? json_object_get(root, "channelID") : NULL;
    json_t *version = root ? json_object_get(root, "version") : NULL;
    json_t *data = root ? json_object_get(root, "data") : NULL;
    size_t known = (chid ? 1 : 0) + (version ? 1 : 0) + (data ? 1 : 0);
    int rc;

    if (!json_is_object(root) || json_object_size(root) != known || !json_is_string(chid) ||
        ids_parse(json_string_value(chid), json_string_length(chid), u.chid, &u.chid_sp) ||
        !json_is_integer(version) || json_integer_value(version) < 0 ||
        (data && !json_is_string(data))) {
        rc = respond_route(txn, counters, 400, "Invalid Body");
        goto out;
    }
    u.version = (int64_t)json_integer_value(version);
    if (data) {
        size_t len = json_string_length(data);
        if (len > (size_t)server_self->cfg->endpoint_max_data_len ||
            strlen(json_string_value(data)) != len) {
            rc = respond_route(txn, counters, 400, "Invalid Data");
            goto out;
        }
        u.data = (char *)json_string_value(data);
        u.data_len = len;
    }
    if (device_deliver(txn->uaid, &u))
        rc = respond_route(txn, counters, 404, "Not Connected");
    else
        rc = respond_route(txn, counters, 200, NULL);
out:
    json_decref(root);
    return rc;
}
