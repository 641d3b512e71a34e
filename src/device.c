/*
 * device: the SimplePush state machine of one WebSocket session (SPEC §2-§6).
 *
 * Invariants:
 * - A session is in the registry by id from ESTABLISHED to CLOSED, and by uaid while READY;
 *   store completions look it up by id, so a completion for a closed session finds nothing
 *   and only frees its request.
 * - While the hello is with the store, reading is paused (lws_rx_flow_control), so the
 *   commands a client sends right behind its hello are handled after the hello.
 * - Once close_code is set the session reads nothing more; what is queued is flushed (unless
 *   the close drops the queue) and the close frame follows. A safety timeout kills a socket
 *   whose peer does not read.
 * - Outgoing bytes queued per session never exceed client.max_pending_bytes.
 * - A message is written at once (lws_write outside the WRITEABLE callback) only when nothing
 *   is ahead of it: our queue is empty, lws holds no partial write of the session, and
 *   neither side has started a close. Otherwise it is queued and goes out from WRITEABLE, so
 *   messages leave in the order they were made.
 */
#include "simplepushd/device.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "simplepushd/config.h"
#include "simplepushd/http.h"
#include "simplepushd/log.h"
#include "simplepushd/message.h"
#include "simplepushd/metrics.h"
#include "simplepushd/registry.h"
#include "simplepushd/router.h"
#include "simplepushd/server.h"
#include "simplepushd/store.h"
#include "simplepushd/token.h"

/* Close codes (SPEC §4). */
#define CLOSE_NORMAL      1000
#define CLOSE_GOING_AWAY  1001
#define CLOSE_UNSUPPORTED 1003
#define CLOSE_POLICY      1008
#define CLOSE_TOO_BIG     1009
#define CLOSE_PING_FLOOD  4774

/*
 * lws 4.1's opcode for a close frame; it keeps it in a private header
 * (roles/ws/private-lib-roles-ws.h) and expects lws_close_reason() + return -1 instead.
 */
#define LWS_WRITE_CLOSE_FRAME ((enum lws_write_protocol)4)

/* Seconds a closing socket may take to flush before it is killed. */
#define CLOSE_GRACE_SECS 2

/* Largest message written at once from a stack buffer; longer ones are queued. */
#define WRITE_NOW_MAX 2048

enum session_state {
    SESSION_NEW,   /* waiting for hello */
    SESSION_HELLO, /* hello is with the store */
    SESSION_READY, /* uaid bound */
};

/* One queued outgoing text message; buf has LWS_PRE bytes of headroom before the text. */
struct outmsg {
    struct outmsg *next;
    size_t len;
    unsigned char buf[];
};

struct device_session {
    struct lws *wsi;
    uint64_t id;
    struct timers_node tn;
    struct outmsg *out_head, *out_tail;
    struct outmsg *deferred; /* messages that arrived while the hello was with the store */
    char *rx;                /* reassembly buffer, only while a fragmented message arrives */
    uint32_t rx_len, rx_cap;
    uint32_t out_bytes;
    /* timers_now() seconds, 0 = none; hello_due until READY, host_due (the refresh of the
     * host record, SPEC §9) from then on. */
    union {
        uint32_t hello_due;
        uint32_t host_due;
    };
    uint32_t pong_due, resend_due;
    uint64_t last_ping_ms;
    uint8_t uaid[IDS_BYTES];
    struct ids_spelling uaid_sp;
    uint8_t state;
    uint16_t close_code;
    bool counted : 1;      /* counts in server->n_devices */
    bool pending_hint : 1; /* updates may be waiting for an ack */
    bool ping_due : 1;     /* a WebSocket ping is to be sent */
    bool awaiting_pong : 1;
    bool rx_since_ping : 1;
    bool peer_closed : 1; /* the peer's close frame arrived; lws answers it */
};

size_t device_session_size(void)
{
    return sizeof(struct device_session);
}

static uint32_t secs(uint64_t ms)
{
    return (uint32_t)((ms + 999) / 1000);
}

/*
 * Depth of device_callback() on the stack. lws runs its timeouts (the close grace, a kill)
 * only when it services an event of its own, so a timeout set from our timer wheel or from
 * a store completion must be followed by a wake-up (lws_cancel_service). Reading turned
 * back on needs none: outside a callback lws applies it at once, and asks for POLLOUT
 * itself when it holds input to hand over.
 */
static int in_lws_callback;

static void wake_lws(void)
{
    if (!in_lws_callback)
        lws_cancel_service(server_self->ctx);
}

/* ---- outgoing queue and closing ---- */

static void drop_queue(struct device_session *s)
{
    struct outmsg *m = s->out_head;
    while (m) {
        struct outmsg *next = m->next;
        free(m);
        m = next;
    }
    s->out_head = s->out_tail = NULL;
    s->out_bytes = 0;
}

/* Starts a close with code: flush what is queued (unless drop), then the close frame. */
static void close_session(struct device_session *s, uint16_t code, bool drop)
{
    if (s->close_code)
        return;
    s->close_code = code;
    if (drop)
        drop_queue(s);
    if (s->state == SESSION_HELLO)
        lws_rx_flow_control(s->wsi, 1); /* let lws see the peer's close */
    lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, CLOSE_GRACE_SECS);
    lws_callback_on_writable(s->wsi);
    wake_lws();
}

/*
 * Writes a text message at once when nothing is ahead of it (see the invariants), saving
 * the POLLOUT round of a queued message: on libuv each poll change costs two epoll_ctl
 * calls. What the socket does not take, lws keeps and sends before anything else, and it
 * asks for POLLOUT only then. Debian's lws has no HTTP/2 for WebSockets (ALPN is
 * http/1.1 only) and we enable no extension, so a frame goes to the socket as it is.
 * Returns 1 when written, 0 when the message must be queued, -1 when the write failed (the
 * session is then being killed).
 */
static int write_now(struct device_session *s, const char *text, size_t len)
{
    unsigned char buf[LWS_PRE + WRITE_NOW_MAX];

    if (s->out_head || s->peer_closed || len > WRITE_NOW_MAX || server_self->closing_all ||
        lws_partial_buffered(s->wsi))
        return 0;
    memcpy(buf + LWS_PRE, text, len);
    if (lws_write(s->wsi, buf + LWS_PRE, len, LWS_WRITE_TEXT) < (int)len) {
        /* The socket is unusable: no close frame can go out, so kill it. */
        s->close_code = CLOSE_GOING_AWAY;
        drop_queue(s);
        lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        wake_lws();
        return -1;
    }
    return 1;
}

/*
 * Sends a text message (copied): at once when possible, else queued. Over the pending-bytes
 * bound the session is closed, unless unbounded: an error reply echoes a request of up to
 * client.max_message_size bytes and is the last message before the close, so it may exceed
 * the bound.
 */
static int queue_message(struct device_session *s, const char *text, size_t len, bool unbounded)
{
    if (s->close_code)
        return -1;
    int w = write_now(s, text, len);
    if (w)
        return w > 0 ? 0 : -1;
    if (!unbounded &&
        (uint64_t)s->out_bytes + len > (uint64_t)server_self->cfg->client_max_pending_bytes) {
        log_info("device", "session %llu over its outgoing bound, closing",
                 (unsigned long long)s->id);
        close_session(s, CLOSE_POLICY, true);
        return -1;
    }
    struct outmsg *m = malloc(sizeof(*m) + LWS_PRE + len);
    if (!m) {
        close_session(s, CLOSE_GOING_AWAY, true);
        return -1;
    }
    m->next = NULL;
    m->len = len;
    memcpy(m->buf + LWS_PRE, text, len);
    if (s->out_tail)
        s->out_tail->next = m;
    else
        s->out_head = m;
    s->out_tail = m;
    s->out_bytes += (uint32_t)len;
    lws_callback_on_writable(s->wsi);
    return 0;
}

static int queue_text(struct device_session *s, const char *text, size_t len)
{
    return queue_message(s, text, len, false);
}

/* Queues a built message (NULL = allocation failure) and frees it. */
static int queue_owned(struct device_session *s, char *text, size_t len)
{
    if (!text) {
        close_session(s, CLOSE_GOING_AWAY, true);
        return -1;
    }
    int rc = queue_text(s, text, len);
    free(text);
    return rc;
}

/* The error reply of SPEC §4: the request echoed with status and error, then close 1000. */
static void reply_error(struct device_session *s, json_t *request, int status)
{
    size_t len;
    char *text = message_error(request, status, &len);
    if (text)
        queue_message(s, text, len, true);
    free(text);
    close_session(s, CLOSE_NORMAL, false);
}

static int on_writeable(struct device_session *s)
{
    struct lws *wsi = s->wsi;

    if (server_self->closing_all && !s->close_code)
        close_session(s, CLOSE_GOING_AWAY, false);

    if (s->ping_due && !s->close_code) {
        /* One byte of payload: lws 4.1 does not report an empty pong to the protocol. */
        unsigned char buf[LWS_PRE + 1];
        buf[LWS_PRE] = 'p';
        s->ping_due = false;
        if (lws_write(wsi, buf + LWS_PRE, 1, LWS_WRITE_PING) < 1)
            return -1;
        if (s->out_head)
            lws_callback_on_writable(wsi);
        return 0;
    }
    struct outmsg *m = s->out_head;
    if (m) {
        s->out_head = m->next;
        if (!s->out_head)
            s->out_tail = NULL;
        s->out_bytes -= (uint32_t)m->len;
        int n = lws_write(wsi, m->buf + LWS_PRE, m->len, LWS_WRITE_TEXT);
        size_t len = m->len;
        free(m);
        if (n < (int)len)
            return -1;
        if (s->out_head || s->close_code)
            lws_callback_on_writable(wsi);
        return 0;
    }
    if (s->close_code) {
        /*
         * The close frame is written here rather than left to lws: Debian's lws is built with
         * _DEBUG, whose libuv "repeat test" closes a second time right after a polite close,
         * which drops the frame.
         */
        unsigned char buf[LWS_PRE + 2];
        buf[LWS_PRE] = (unsigned char)(s->close_code >> 8);
        buf[LWS_PRE + 1] = (unsigned char)(s->close_code & 0xff);
        lws_write(wsi, buf + LWS_PRE, 2, LWS_WRITE_CLOSE_FRAME);
        return -1;
    }
    return 0;
}

/* ---- timers ---- */

static void rearm(struct device_session *s)
{
    uint32_t due = 0;
    if (s->hello_due) /* or host_due */
        due = s->hello_due;
    if (s->pong_due && (!due || s->pong_due < due))
        due = s->pong_due;
    if (s->state == SESSION_READY && s->resend_due && (!due || s->resend_due < due))
        due = s->resend_due;
    if (!server_self->timers)
        return;
    if (due)
        timers_arm(server_self->timers, &s->tn, due);
    else
        timers_cancel(server_self->timers, &s->tn);
}

static void submit_fetch(struct device_session *s);
static void run_deferred(struct device_session *s);
static void submit_host(struct device_session *s, enum store_op op);
static void arm_host_refresh(struct device_session *s);

void device_on_timer(struct timers_node *node, void *arg)
{
    struct device_session *s = lws_container_of(node, struct device_session, tn);
    const struct config *cfg = server_self->cfg;
    uint32_t now = timers_now(server_self->timers);
    (void)arg;

    if (s->close_code)
        return;
    if (s->state != SESSION_READY && s->hello_due && now >= s->hello_due) {
        log_debug("device", "session %llu: no hello in time", (unsigned long long)s->id);
        close_session(s, CLOSE_NORMAL, false);
        return;
    }
    if (s->pong_due && now >= s->pong_due) {
        if (s->awaiting_pong && !s->rx_since_ping) {
            /* Nothing came back since our last ping: the peer is gone. */
            lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            s->close_code = CLOSE_GOING_AWAY;
            wake_lws();
            return;
        }
        s->ping_due = true;
        s->awaiting_pong = true;
        s->rx_since_ping = false;
        s->pong_due = now + secs(cfg->client_pong_interval_ms);
        lws_callback_on_writable(s->wsi);
    }
    if (s->state == SESSION_READY && s->host_due && now >= s->host_due) {
        arm_host_refresh(s);
        submit_host(s, STORE_HOST_REFRESH);
    }
    if (s->state == SESSION_READY && s->resend_due && now >= s->resend_due) {
        s->resend_due = now + secs(cfg->client_resend_interval_ms);
        if (s->pending_hint)
            submit_fetch(s);
    }
    rearm(s);
}

/* ---- notifications ---- */

/* Queues one notification carrying the updates. Returns 0 or -1. */
static int send_updates(struct device_session *s, const struct store_update *u, size_t n)
{
    /* A live delivery carries one update: no allocation for it. */
    char one_chid[1][IDS_MAX_STR + 1];
    struct message_update one_mu[1];
    char(*chids)[IDS_MAX_STR + 1] = n == 1 ? one_chid : malloc(n * sizeof(*chids));
    struct message_update *mu = n == 1 ? one_mu : malloc(n * sizeof(*mu));
    int rc = -1;
    if (!chids || !mu)
        goto out;
    for (size_t i = 0; i < n; i++) {
        ids_format(u[i].chid, &u[i].chid_sp, chids[i]);
        mu[i].chid = chids[i];
        mu[i].version = u[i].version;
        mu[i].data = u[i].data;
        mu[i].data_len = u[i].data_len;
    }
    size_t len;
    char *text = message_notification(mu, n, &len);
    rc = queue_owned(s, text, len);
    if (!rc) {
        s->pending_hint = true;
        metrics.notifications++;
        metrics.updates_sent += n;
    }
out:
    if (chids != one_chid)
        free(chids);
    if (mu != one_mu)
        free(mu);
    return rc;
}

bool device_drain(void *session)
{
    struct device_session *s = session;
    if (s->close_code)
        return false;
    close_session(s, CLOSE_GOING_AWAY, false);
    return true;
}

/* The connection's generation in host records: unique on this node, unguessable elsewhere. */
static uint64_t session_gen(const struct device_session *s)
{
    return s->id ^ server_self->gen_key;
}

int device_kick(const uint8_t uaid[IDS_BYTES], uint64_t gen)
{
    struct device_session *s = registry_find_uaid(server_self->reg, uaid);
    if (!s || s->close_code || session_gen(s) != gen)
        return -1;
    log_debug("device", "session %llu: its uaid said hello on another node",
              (unsigned long long)s->id);
    close_session(s, CLOSE_POLICY, true);
    metrics.kicks++;
    return 0;
}

/*
 * Deliveries that found no ready session, by uaid, in a direct-mapped table. An update
 * stored while its device's hello is with the store may have been stored after the hello
 * read the pending updates, and then found the session not yet ready: the hello reads them
 * again when a miss for its uaid came after it was submitted. A slot taken over by another
 * uaid only leaves the update to the next hello or resend.
 */
#define MISS_SLOTS 1024

static struct {
    uint8_t uaid[IDS_BYTES];
    uint64_t at_ns;
} misses[MISS_SLOTS];

static size_t miss_slot(const uint8_t uaid[IDS_BYTES])
{
    uint32_t h;
    memcpy(&h, uaid + IDS_BYTES - sizeof(h), sizeof(h));
    return (h ^ (uint32_t)server_self->gen_key) & (MISS_SLOTS - 1);
}

static void note_miss(const uint8_t uaid[IDS_BYTES])
{
    size_t i = miss_slot(uaid);
    memcpy(misses[i].uaid, uaid, IDS_BYTES);
    misses[i].at_ns = uv_hrtime();
}

static bool missed_since(const uint8_t uaid[IDS_BYTES], uint64_t since_ns)
{
    size_t i = miss_slot(uaid);
    return misses[i].at_ns >= since_ns && !memcmp(misses[i].uaid, uaid, IDS_BYTES);
}

int device_deliver(const uint8_t uaid[IDS_BYTES], const struct store_update *update)
{
    struct device_session *s = registry_find_uaid(server_self->reg, uaid);
    if (!s || s->state != SESSION_READY || s->close_code) {
        note_miss(uaid);
        return -1;
    }
    return send_updates(s, update, 1);
}

/* ---- store requests ---- */

/* Finds the live session a completion belongs to, or NULL. */
static struct device_session *owner_of(const struct store_req *req)
{
    return registry_find(server_self->reg, req->owner);
}

static struct store_req *new_req(struct device_session *s, enum store_op op, json_t *request,
                                 store_done_cb done)
{
    struct store_req *req = store_req_new(op);
    if (!req)
        return NULL;
    memcpy(req->uaid, s->uaid, IDS_BYTES);
    req->owner = s->id;
    req->done = done;
    req->user = request ? json_incref(request) : NULL;
    return req;
}

static void free_req(struct store_req *req)
{
    json_decref((json_t *)req->user);
    req->user = NULL;
    store_req_free(req);
}

static void fetch_done(struct store_req *req)
{
    struct device_session *s = owner_of(req);
    if (s && s->state == SESSION_READY && req->status == STORE_OK) {
        if (req->n_updates)
            send_updates(s, req->updates, req->n_updates);
        else
            s->pending_hint = false;
    }
    free_req(req);
}

static void submit_fetch(struct device_session *s)
{
    struct store_req *req = new_req(s, STORE_FETCH, NULL, fetch_done);
    if (req)
        store_submit(server_self->store, req);
}

/* Queues the hello reply, with the uaid spelled as the session holds it. */
static void queue_hello_reply(struct device_session *s)
{
    char uaid[IDS_MAX_STR + 1];
    size_t len;
    char *text;
    ids_format(s->uaid, &s->uaid_sp, uaid);
    text = message_hello_reply(uaid, &len);
    queue_owned(s, text, len);
}

/*
 * The older socket of a uaid on another node has been told to close (or could not be
 * reached). Updates that node delivered to it meanwhile were stored first: read them again.
 */
static void kick_done(uint64_t owner, int status, void *arg)
{
    struct device_session *s = registry_find(server_self->reg, owner);
    (void)arg;
    metrics_route_kick(status);
    if (s && s->state == SESSION_READY && !s->close_code)
        submit_fetch(s);
}

static void kick_remote(struct device_session *s, const char *node, uint64_t gen)
{
    if (router_kick(server_self->router, node, s->uaid, gen, s->id, kick_done, NULL))
        metrics_route_kick(ROUTER_FAILED);
}

static void host_done(struct store_req *req)
{
    struct device_session *s = owner_of(req);
    if (s && req->op == STORE_HOST_REFRESH && req->status == STORE_GONE && !s->close_code) {
        log_debug("device", "session %llu: its uaid is held by a newer connection elsewhere",
                  (unsigned long long)s->id);
        close_session(s, CLOSE_POLICY, true);
    }
    free_req(req);
}

/* Host record requests for this connection (no-ops on one node). */
static void submit_host(struct device_session *s, enum store_op op)
{
    if (!server_self->node[0] || !server_self->store)
        return;
    struct store_req *req = new_req(s, op, NULL, op == STORE_HOST_CLEAR ? NULL : host_done);
    if (!req)
        return;
    memcpy(req->node, server_self->node, sizeof(req->node));
    req->gen = session_gen(s);
    store_submit(server_self->store, req);
}

/* The host record lives storage.timeout_live: it is written again at half that age. */
static void arm_host_refresh(struct device_session *s)
{
    s->host_due = 0;
    if (server_self->node[0])
        s->host_due =
            timers_now(server_self->timers) + secs(server_self->cfg->storage_timeout_live_ms / 2);
}

static void hello_done(struct store_req *req)
{
    struct device_session *s = owner_of(req);
    if (!s || s->state != SESSION_HELLO || s->close_code) {
        free_req(req);
        return;
    }
    lws_rx_flow_control(s->wsi, 1);
    if (req->status != STORE_OK) {
        s->state = SESSION_NEW;
        reply_error(s, req->user, req->status == STORE_UNAVAILABLE ? 503 : 500);
        free_req(req);
        return;
    }
    if (req->reset) {
        memcpy(s->uaid, req->new_uaid, IDS_BYTES);
        memset(&s->uaid_sp, 0, sizeof(s->uaid_sp));
    } else {
        memcpy(s->uaid, req->uaid, IDS_BYTES);
    }

    void *previous = NULL;
    if (registry_bind_uaid(server_self->reg, s->uaid, s, &previous)) {
        reply_error(s, req->user, 500);
        free_req(req);
        return;
    }
    if (previous && previous != s) {
        /* The same uaid said hello here again: the newcomer keeps it. */
        close_session(previous, CLOSE_POLICY, true);
        metrics.kicks++;
    }
    if (req->host[0] && strcmp(req->host, server_self->node))
        kick_remote(s, req->host, req->host_gen);
    s->state = SESSION_READY;
    s->hello_due = 0;
    arm_host_refresh(s);
    metrics.hellos++;
    if (req->reset)
        metrics.hello_resets++;

    queue_hello_reply(s);
    if (req->n_updates)
        send_updates(s, req->updates, req->n_updates);
    if (!req->reset && missed_since(s->uaid, req->submitted_ns))
        submit_fetch(s);
    if (server_self->cfg->client_resend_interval_ms)
        s->resend_due =
            timers_now(server_self->timers) + secs(server_self->cfg->client_resend_interval_ms);
    rearm(s);
    free_req(req);
    run_deferred(s);
}

static void register_done(struct store_req *req)
{
    struct device_session *s = owner_of(req);
    if (!s || s->close_code) {
        free_req(req);
        return;
    }
    char chid[IDS_MAX_STR + 1];
    ids_format(req->chid, &req->chid_sp, chid);
    size_t len;
    char *text;
    if (req->status == STORE_OK) {
        char token[TOKEN_LEN + 1];
        char *url = NULL;
        if (!token_encode(server_self->tokens, s->uaid, req->chid, &req->chid_sp, token))
            url = server_endpoint_url(server_self, token);
        if (url) {
            text = message_register_reply(chid, 200, url, &len);
            queue_owned(s, text, len);
        } else
            reply_error(s, req->user, 500);
        free(url);
    } else if (req->status == STORE_TOO_MANY) {
        text = message_register_reply(chid, 413, NULL, &len);
        queue_owned(s, text, len);
    } else {
        reply_error(s, req->user, req->status == STORE_UNAVAILABLE ? 503 : 500);
    }
    free_req(req);
}

static void unregister_done(struct store_req *req)
{
    struct device_session *s = owner_of(req);
    if (s && !s->close_code) {
        /* Always 200 (SPEC §4): the device has forgotten the channel whatever we answer. */
        char chid[IDS_MAX_STR + 1];
        size_t len;
        char *text;
        ids_format(req->chid, &req->chid_sp, chid);
        text = message_unregister_reply(chid, &len);
        queue_owned(s, text, len);
    }
    free_req(req);
}

static void ack_done(struct store_req *req)
{
    if (req->status != STORE_OK)
        log_debug("device", "ack of session %llu not stored (status %d)",
                  (unsigned long long)req->owner, req->status);
    free_req(req);
}

/* ---- messages ---- */

static void on_hello(struct device_session *s, struct message *m)
{
    if (s->state == SESSION_READY) {
        /* A second hello: the same uaid (or none) is answered again, another is refused. */
        json_t *u = json_object_get(m->root, "uaid");
        bool same = m->uaid_kind == MESSAGE_UAID_ABSENT ||
                    (json_is_string(u) && json_string_length(u) == 0) ||
                    (m->uaid_kind == MESSAGE_UAID_VALID && !memcmp(m->uaid, s->uaid, IDS_BYTES));
        if (!same) {
            reply_error(s, m->root, 503);
            return;
        }
        queue_hello_reply(s);
        submit_fetch(s);
        return;
    }

    struct store_req *req = new_req(s, STORE_HELLO, m->root, hello_done);
    if (!req) {
        reply_error(s, m->root, 500);
        return;
    }
    req->uaid_valid = m->uaid_kind == MESSAGE_UAID_VALID;
    if (req->uaid_valid) {
        memcpy(req->uaid, m->uaid, IDS_BYTES);
        s->uaid_sp = m->uaid_sp;
    }
    req->n_channels = m->n_channel_ids;
    ids_generate(req->new_uaid);
    if (server_self->node[0]) {
        memcpy(req->node, server_self->node, sizeof(req->node));
        req->gen = session_gen(s);
    }
    s->state = SESSION_HELLO;
    lws_rx_flow_control(s->wsi, 0);
    store_submit(server_self->store, req);
}

static void on_command(struct device_session *s, struct message *m)
{
    store_done_cb done = m->type == MESSAGE_REGISTER ? register_done : unregister_done;
    enum store_op op = m->type == MESSAGE_REGISTER ? STORE_REGISTER : STORE_UNREGISTER;
    struct store_req *req;

    if (m->type == MESSAGE_ACK)
        metrics.acks++;
    else if (m->type == MESSAGE_REGISTER)
        metrics.registers++;
    else
        metrics.unregisters++;
    if (m->type == MESSAGE_ACK) {
        if (!m->n_acks)
            return;
        req = new_req(s, STORE_ACK, NULL, ack_done);
        if (!req)
            return;
        req->acks = malloc(m->n_acks * sizeof(*req->acks));
        if (!req->acks) {
            free_req(req);
            return;
        }
        for (size_t i = 0; i < m->n_acks; i++) {
            memcpy(req->acks[i].chid, m->acks[i].chid, IDS_BYTES);
            req->acks[i].version = m->acks[i].version;
        }
        req->n_acks = m->n_acks;
    } else {
        req = new_req(s, op, m->root, done);
        if (!req) {
            reply_error(s, m->root, 500);
            return;
        }
        memcpy(req->chid, m->chid, IDS_BYTES);
        req->chid_sp = m->chid_sp;
    }
    store_submit(server_self->store, req);
}

static void on_ping(struct device_session *s)
{
    uint64_t min = server_self->cfg->client_min_ping_interval_ms;
    uint64_t now = uv_now(server_self->loop);
    if (min && s->last_ping_ms && now - s->last_ping_ms < min) {
        log_debug("device", "session %llu pings too often", (unsigned long long)s->id);
        close_session(s, CLOSE_PING_FLOOD, false);
        metrics.too_many_pings++;
        return;
    }
    s->last_ping_ms = now;
    metrics.pings++;
    queue_text(s, "{}", 2);
}

/*
 * Keeps a message that arrived while the hello was with the store (lws may still hand over
 * what it had read when reading was paused); they are handled once the hello is answered.
 */
static void defer_message(struct device_session *s, const char *buf, size_t len)
{
    size_t total = len;
    struct outmsg **tail = &s->deferred;
    for (; *tail; tail = &(*tail)->next)
        total += (*tail)->len;
    if (total > (size_t)server_self->cfg->client_max_message_size) {
        close_session(s, CLOSE_POLICY, true);
        return;
    }
    struct outmsg *m = malloc(sizeof(*m) + len);
    if (!m) {
        close_session(s, CLOSE_GOING_AWAY, true);
        return;
    }
    m->next = NULL;
    m->len = len;
    memcpy(m->buf, buf, len);
    *tail = m;
}

static void handle_message(struct device_session *s, const char *buf, size_t len);

/* Handles the deferred messages in order (or drops them when the session is closing). */
static void run_deferred(struct device_session *s)
{
    while (s->deferred) {
        struct outmsg *m = s->deferred;
        s->deferred = m->next;
        if (!s->close_code && s->state != SESSION_HELLO)
            handle_message(s, (const char *)m->buf, m->len);
        free(m);
        if (s->state == SESSION_HELLO)
            return; /* a deferred message started another store round trip */
    }
}

static void handle_message(struct device_session *s, const char *buf, size_t len)
{
    struct message m;
    enum message_result r;

    if (s->state == SESSION_HELLO) {
        defer_message(s, buf, len);
        return;
    }
    if (len == 2 && buf[0] == '{' && buf[1] == '}') {
        /* The idle device's ping, most messages by far: no JSON tree for it. */
        on_ping(s);
        return;
    }
    r = message_parse(buf, len, &m);

    if (r == MESSAGE_E_JSON) {
        close_session(s, CLOSE_NORMAL, false);
        return;
    }
    if (r == MESSAGE_E_INVALID) {
        reply_error(s, m.root, 401);
        message_clear(&m);
        return;
    }
    switch (m.type) {
    case MESSAGE_PING:
        on_ping(s);
        break;
    case MESSAGE_PURGE:
        queue_text(s, "{}", 2);
        break;
    case MESSAGE_HELLO:
        on_hello(s, &m);
        break;
    case MESSAGE_REGISTER:
    case MESSAGE_UNREGISTER:
    case MESSAGE_ACK:
        if (s->state != SESSION_READY)
            reply_error(s, m.root, 401);
        else
            on_command(s, &m);
        break;
    }
    message_clear(&m);
}

/* Reassembles fragments; returns -1 when lws should close the connection at once. */
static int on_receive(struct device_session *s, const char *in, size_t len)
{
    struct lws *wsi = s->wsi;
    size_t max = (size_t)server_self->cfg->client_max_message_size;

    if (s->close_code)
        return 0;
    s->rx_since_ping = true;
    if (lws_frame_is_binary(wsi)) {
        close_session(s, CLOSE_UNSUPPORTED, true);
        return 0;
    }
    size_t remaining = lws_remaining_packet_payload(wsi);
    bool final = lws_is_final_fragment(wsi) && !remaining;
    if ((size_t)s->rx_len + len + remaining > max) {
        free(s->rx);
        s->rx = NULL;
        s->rx_len = s->rx_cap = 0;
        close_session(s, CLOSE_TOO_BIG, true);
        return 0;
    }
    if (!s->rx && final) {
        handle_message(s, in, len);
        return 0;
    }
    if (s->rx_len + len > s->rx_cap) {
        size_t cap = s->rx_cap ? s->rx_cap : 1024;
        while (cap < s->rx_len + len)
            cap *= 2;
        if (cap > max)
            cap = max;
        char *rx = realloc(s->rx, cap);
        if (!rx)
            return -1;
        s->rx = rx;
        s->rx_cap = (uint32_t)cap;
    }
    memcpy(s->rx + s->rx_len, in, len);
    s->rx_len += (uint32_t)len;
    if (final) {
        char *rx = s->rx;
        size_t rx_len = s->rx_len;
        s->rx = NULL;
        s->rx_len = s->rx_cap = 0;
        handle_message(s, rx, rx_len);
        free(rx);
    }
    return 0;
}

static int on_established(struct device_session *s, struct lws *wsi)
{
    struct server *srv = server_self;
    const struct config *cfg = srv->cfg;
    uint32_t now = timers_now(srv->timers);

    memset(s, 0, sizeof(*s));
    s->wsi = wsi;
    s->id = registry_next_id(srv->reg);
    if (registry_add(srv->reg, s->id, s)) {
        s->id = 0;
        return -1;
    }
    if (srv->n_devices >= (size_t)srv->max_connections || srv->stopping) {
        static const char full[] = "{\"status\":503,\"error\":\"Service Unavailable\"}";
        queue_text(s, full, sizeof(full) - 1);
        close_session(s, srv->stopping ? CLOSE_GOING_AWAY : CLOSE_POLICY, false);
        return 0;
    }
    s->counted = true;
    srv->n_devices++;
    metrics.ws_opened++;
    /* One second more: part of the current second is gone, and no socket may be closed for
     * want of a hello before client.hello_timeout has passed. */
    if (cfg->client_hello_timeout_ms)
        s->hello_due = now + secs(cfg->client_hello_timeout_ms) + 1;
    if (cfg->client_pong_interval_ms)
        s->pong_due = now + secs(cfg->client_pong_interval_ms);
    rearm(s);
    return 0;
}

static void on_closed(struct device_session *s)
{
    struct server *srv = server_self;
    if (!s->id)
        return;
    if (srv->timers) /* NULL once shutdown has closed the wheel */
        timers_cancel(srv->timers, &s->tn);
    registry_remove(srv->reg, s->id);
    if (s->state == SESSION_READY) {
        registry_unbind_uaid(srv->reg, s->uaid, s);
        submit_host(s, STORE_HOST_CLEAR);
    }
    if (s->counted) {
        srv->n_devices--;
        metrics.ws_closed++;
    }
    drop_queue(s);
    while (s->deferred) {
        struct outmsg *m = s->deferred;
        s->deferred = m->next;
        free(m);
    }
    free(s->rx);
    s->rx = NULL;
    s->id = 0;
}

static int dispatch(struct lws *wsi, enum lws_callback_reasons reason, struct device_session *s,
                    void *in, size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        /* New connections start bound to this (the default) protocol. */
        return http_confirm_upgrade(wsi);
    case LWS_CALLBACK_ESTABLISHED:
        return s ? on_established(s, wsi) : -1;
    case LWS_CALLBACK_RECEIVE:
        return s ? on_receive(s, in, len) : -1;
    case LWS_CALLBACK_RECEIVE_PONG:
        if (s)
            s->rx_since_ping = true;
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        /* lws echoes the close from its next POLLOUT; we send nothing more. */
        if (s)
            s->peer_closed = true;
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return s ? on_writeable(s) : -1;
    case LWS_CALLBACK_CLOSED:
        if (s)
            on_closed(s);
        return 0;
    default:
        return 0;
    }
}

int device_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    in_lws_callback++;
    int rc = dispatch(wsi, reason, user, in, len);
    in_lws_callback--;
    return rc;
}
