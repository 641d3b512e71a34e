/*
 * server: start-up and shutdown of the daemon's parts, the lws context on our libuv loop,
 * and the two listeners.
 *
 * The libuv loop belongs to main; lws joins it as a "foreign" loop, so lws's sockets, our
 * timer wheel, the store's completions and the signal handlers all run on one epoll loop.
 * lws's own idle timers are switched off (retry policy with zero intervals): lws keeps its
 * timers in a sorted list, O(n) per insert, so our timer wheel does that work instead.
 *
 * Plain-TCP listeners are the gate's (gate.h): it checks each connection's first request head
 * before lws parses it, then hands the connection to the vhost, which does not listen itself.
 * Only a TLS public listener is lws's own, since no head can be read before TLS. The two
 * vhosts get different "no listener" ports (-2 public, -1 internal): lws 4.1.6 moves a request
 * to the vhost that the Host header names among those of the same listen port
 * (lws_select_vhost), so a shared port would let Host: internal reach the internal vhost
 * from the public listener.
 */
#include "simplepushd/server.h"

#include <errno.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simplepushd/config.h"
#include "simplepushd/device.h"
#include "simplepushd/gate.h"
#include "simplepushd/head.h"
#include "simplepushd/http.h"
#include "simplepushd/log.h"
#include "simplepushd/metrics.h"
#include "simplepushd/registry.h"
#include "simplepushd/router.h"
#include "simplepushd/sdnotify.h"
#include "simplepushd/store.h"
#include "simplepushd/timers.h"
#include "simplepushd/token.h"
#include "simplepushd/udp.h"

/* lws's receive buffer per WebSocket: messages are small, bigger ones are reassembled. */
#define DEVICE_RX_BUFFER 128
/* Largest chunk lws may write at once; a notification must not be split. */
#define DEVICE_TX_PACKET 65536
/* HTTP header tables lws may hold at once (handshakes and requests in flight). */
#define HTTP_HEADER_POOL 512
/*
 * Bytes of request head lws keeps: a PUT may carry version and data in its query string. The
 * gate refuses heads of more raw bytes than that, which lws would store in fewer.
 */
#define HTTP_HEADER_DATA HEAD_MAX
/* Open files kept for everything but devices: HTTP clients, listeners, stdio, loop fds. */
#define FD_HEADROOM 256

struct server *server_self;

/* No lws validity pings: client.pong_interval runs on our timer wheel. */
static const lws_retry_bo_t no_idle_policy = {
    .secs_since_valid_ping = 0,
    .secs_since_valid_hangup = 0,
};

static struct lws_protocols public_protocols[] = {
    {"http", http_callback, sizeof(struct http_txn), 0, 0, NULL, 0},
    {"push-notification", device_callback, 0 /* set at start */, DEVICE_RX_BUFFER, 0, NULL,
     DEVICE_TX_PACKET},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static struct lws_protocols internal_protocols[] = {
    {"http", http_callback, sizeof(struct http_txn), 0, 0, NULL, 0},
    {"sp-router", router_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* "push-notification" also serves WebSocket handshakes that name no sub-protocol. */
static const struct lws_protocol_vhost_options pvo_default = {NULL, NULL, "default", "1"};
static const struct lws_protocol_vhost_options public_pvo = {NULL, &pvo_default,
                                                             "push-notification", ""};

static bool is_wildcard(const char *host)
{
    return !host || !*host || !strcmp(host, "0.0.0.0") || !strcmp(host, "::");
}

/* Splits the endpoint URL template around "<token>", substituting <current_host>. */
/*
 * Names this node for host records: internal.advertise, or the internal listener's own
 * address and bound port. Only a store shared by several nodes needs one.
 */
static int build_node(struct server *srv)
{
    const struct config *cfg = srv->cfg;
    char host[64];
    int port;
    srv->node[0] = '\0';
    if (!cfg->memcache_server || !*cfg->memcache_server)
        return 0;
    if (cfg->internal_advertise && *cfg->internal_advertise) {
        snprintf(srv->node, sizeof(srv->node), "%s", cfg->internal_advertise);
        return 0;
    }
    if (is_wildcard(cfg->internal_host)) {
        log_err("server", "internal.host is a wildcard address: set internal.advertise to the "
                          "IP:port other nodes reach this node's internal listener at");
        return -1;
    }
    bool v6 = strchr(cfg->internal_host, ':') != NULL;
    snprintf(srv->node, sizeof(srv->node), v6 ? "[%s]:%d" : "%s:%d", cfg->internal_host,
             srv->internal_port);
    if (router_parse_node(srv->node, host, sizeof(host), &port)) {
        log_err("server", "internal.host \"%s\" is not an IP address: set internal.advertise "
                          "to the IP:port other nodes reach this node's internal listener at",
                cfg->internal_host);
        srv->node[0] = '\0';
        return -1;
    }
    return 0;
}

static int build_url_template(struct server *srv)
{
    const struct config *cfg = srv->cfg;
    const char *host = cfg->server_current_host && *cfg->server_current_host
                           ? cfg->server_current_host
                           : (is_wildcard(cfg->server_host) ? "localhost" : cfg->server_host);
    char current[300];
    char deflt[400];
    const char *tpl = cfg->endpoint_url_template;

    snprintf(current, sizeof(current), "%s:%d", host, srv->public_port);
    if (!tpl || !*tpl) {
        snprintf(deflt, sizeof(deflt), "%s://<current_host>/update/<token>",
                 cfg->ssl_certfile ? "https" : "http");
        tpl = deflt;
    }

    /* Expand <current_host> (any number of times), then split at <token>. */
    size_t cap = strlen(tpl) + 8 * sizeof(current) + 1;
    char *out = malloc(cap), *o = out;
    if (!out)
        return -1;
    for (const char *p = tpl; *p;) {
        static const char ch[] = "<current_host>";
        if (!strncmp(p, ch, sizeof(ch) - 1) && (size_t)(o - out) + strlen(current) < cap) {
            o += sprintf(o, "%s", current);
            p += sizeof(ch) - 1;
        } else if ((size_t)(o - out) + 1 < cap) {
            *o++ = *p++;
        } else {
            break;
        }
    }
    *o = '\0';
    char *tok = strstr(out, "<token>");
    if (!tok) {
        free(out);
        log_err("server", "endpoint.url_template has no <token>");
        return -1;
    }
    *tok = '\0';
    srv->url_prefix = out;
    srv->url_suffix = strdup(tok + sizeof("<token>") - 1);
    return srv->url_suffix ? 0 : -1;
}

char *server_endpoint_url(const struct server *srv, const char *token)
{
    size_t len = strlen(srv->url_prefix) + strlen(token) + strlen(srv->url_suffix) + 1;
    char *url = malloc(len);
    if (url)
        snprintf(url, len, "%s%s%s", srv->url_prefix, token, srv->url_suffix);
    return url;
}

/* Seconds a graceful stop waits for devices to take their close frames. */
#define STOP_GRACE_MS 2000

/* Milliseconds between STATUS= updates to systemd. */
#define NOTIFY_STATUS_MS 10000

static void notify_status(struct server *srv, const char *state)
{
    sdnotify_sendf("%sSTATUS=%s clients=%zu max_connections=%lld store=%s", state,
                   srv->stopping ? "stopping" : "serving", srv->n_devices,
                   (long long)srv->max_connections, srv->store ? store_name(srv->store) : "-");
}

/* Proves to systemd's watchdog that the loop runs, and keeps STATUS= current. */
static void on_notify_timer(uv_timer_t *timer)
{
    struct server *srv = timer->data;
    notify_status(srv, srv->watchdog_usec ? "WATCHDOG=1\n" : "");
}

/*
 * The token keys: endpoint.token_keys, or else systemd's credential token_keys
 * ($CREDENTIALS_DIRECTORY/token_keys, from LoadCredential=), so that the secret need not
 * sit in config.ini. Returns a malloc'd string, or NULL for "none" (a random key).
 */
static char *token_keys_of(const struct config *cfg)
{
    if (cfg->endpoint_token_keys && *cfg->endpoint_token_keys)
        return strdup(cfg->endpoint_token_keys);
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (!dir || !*dir)
        return NULL;
    char path[4096];
    snprintf(path, sizeof(path), "%s/token_keys", dir);
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    char buf[2048];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return n ? strdup(buf) : NULL;
}

/* Milliseconds between two statsd flushes. */
#define STATSD_FLUSH_MS 10000

/* Opens (or closes) the Heka log sink and the statsd sink as the configuration says. */
static void apply_outputs(const struct config *cfg)
{
    char err[256];
    struct udp_sink *sink = NULL;
    if (cfg->heka_use && !(sink = udp_sink_new(cfg->heka_server_addr, err, sizeof(err))))
        log_err("server", "heka.server_addr: %s; not sending logs to Heka", err);
    log_set_heka(sink, cfg->heka_logger_name);

    sink = NULL;
    if (cfg->metrics_statsd_server && *cfg->metrics_statsd_server &&
        !(sink = udp_sink_new(cfg->metrics_statsd_server, err, sizeof(err))))
        log_err("server", "metrics.statsd_server: %s; not sending to statsd", err);
    metrics_statsd_configure(sink, cfg->metrics_prefix);
}

static void on_statsd_timer(uv_timer_t *timer)
{
    struct server *srv = timer->data;
    metrics_statsd_flush(srv->n_devices);
}

/* The cap on devices: server.max_connections, or derived from the open-files limit. */
static int64_t effective_max_connections(const struct server *srv)
{
    int64_t max = srv->cfg->server_max_connections;
    if (max)
        return max;
    return srv->fd_limit > 2 * FD_HEADROOM ? (int64_t)(srv->fd_limit - FD_HEADROOM)
                                           : (int64_t)srv->fd_limit / 2;
}

int server_reload(struct server *srv)
{
    char err[512];
    struct token_ring *ring = NULL;
    struct config *next = config_new();
    int rc = -1;

    sdnotify_send("RELOADING=1");
    if (!next) {
        log_err("server", "reload: out of memory; keeping the running configuration");
        goto out;
    }
    if (config_load(next, srv->config_path, err, sizeof(err))) {
        log_err("server", "reload: %s; keeping the running configuration", err);
        goto out;
    }
    /* The keys are read again (the credential may have changed too) and checked first. */
    char *keys = token_keys_of(next);
    if (keys) {
        ring = token_ring_new(keys, err, sizeof(err));
        free(keys);
        if (!ring) {
            log_err("server", "reload: %s; keeping the running configuration", err);
            goto out;
        }
    }
    for (size_t i = 0; i < config_key_count(); i++) {
        if (!config_key_changed(srv->cfg, next, i))
            continue;
        if (!config_key_reloadable(i))
            log_warning("server", "reload: %s changed; it takes effect at the next restart",
                        config_key_name(i));
        else if (config_key_copy(srv->cfg, next, i))
            log_err("server", "reload: out of memory applying %s", config_key_name(i));
        else
            log_notice("server", "reload: %s changed", config_key_name(i));
    }
    if (ring) {
        token_ring_free(srv->tokens);
        srv->tokens = ring;
        ring = NULL;
    }
    log_configure(srv->cfg->log_level, srv->cfg->log_format);
    apply_outputs(srv->cfg);
    srv->max_connections = effective_max_connections(srv);
    gate_set_max_handshakes(srv->gate, (size_t)srv->cfg->server_max_handshakes);
    log_notice("server", "configuration reloaded from %s", srv->config_path);
    rc = 0;
out:
    token_ring_free(ring);
    config_free(next);
    sdnotify_send("READY=1");
    return rc;
}

static void on_sighup(uv_signal_t *sig, int signum)
{
    struct server *srv = sig->data;
    (void)signum;
    if (!srv->stopping)
        server_reload(srv);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct server *srv = sig->data;
    /* SIGTERM closes devices first; SIGINT, or SIGTERM again, stops at once. */
    bool graceful = signum == SIGTERM && !srv->stopping;
    log_notice("server", "signal %d: %s", signum, graceful ? "stopping" : "stopping now");
    server_stop(srv, graceful);
}

/* A vhost; port is lws's listener's, or CONTEXT_PORT_NO_LISTEN(_SERVER) for the gate's. */
static struct lws_vhost *create_vhost(struct server *srv, const char *name, const char *host,
                                      int port, struct lws_protocols *protocols,
                                      const struct lws_protocol_vhost_options *pvo, bool tls)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.vhost_name = name;
    info.iface = is_wildcard(host) ? NULL : host;
    info.port = port;
    info.protocols = protocols;
    info.pvo = pvo;
    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    info.retry_and_idle_policy = &no_idle_policy;
    info.keepalive_timeout = 30;
    info.timeout_secs = 10;
    if (tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = srv->cfg->ssl_certfile;
        info.ssl_private_key_filepath = srv->cfg->ssl_keyfile;
        info.alpn = "http/1.1"; /* never h2 (SPEC §1) */
    }
    struct lws_vhost *vh = lws_create_vhost(srv->ctx, &info);
    if (!vh && port >= 0)
        log_err("server", "cannot listen on %s:%d (%s listener)", host ? host : "*", port, name);
    else if (!vh)
        log_err("server", "cannot create the %s vhost", name);
    return vh;
}

/* Listens on host:port through the gate for vh; writes the bound port. Returns 0 or -1. */
static int gate_listener(struct server *srv, struct lws_vhost *vh, const char *name,
                         const char *host, int port, int *bound)
{
    if (!gate_listen(srv->gate, vh, host, port, bound))
        return 0;
    log_err("server", "cannot listen on %s:%d (%s listener): %s", host && *host ? host : "*", port,
            name, strerror(errno));
    return -1;
}

int server_start(struct server *srv, struct config *cfg, const char *config_path, uv_loop_t *loop,
                 uint64_t fd_limit)
{
    char err[256];
    memset(srv, 0, sizeof(*srv));
    server_self = srv;
    srv->cfg = cfg;
    srv->loop = loop;
    srv->fd_limit = fd_limit;
    srv->config_path = strdup(config_path);
    if (!srv->config_path)
        return -1;
    apply_outputs(cfg); /* Heka from the first line on */

    srv->max_connections = effective_max_connections(srv);
    if (!cfg->server_max_connections) {
        log_notice("server", "max_connections = %lld (open-files limit %llu less %d)",
                   (long long)srv->max_connections, (unsigned long long)fd_limit, FD_HEADROOM);
    } else if ((uint64_t)srv->max_connections + FD_HEADROOM > fd_limit) {
        log_warning("server",
                    "server.max_connections %lld leaves less than %d spare of the open-files "
                    "limit %llu: connections will fail before the cap",
                    (long long)srv->max_connections, FD_HEADROOM, (unsigned long long)fd_limit);
    }

    char *keys = token_keys_of(cfg);
    srv->tokens = token_ring_new(keys, err, sizeof(err));
    if (!srv->tokens) {
        free(keys);
        log_err("server", "%s", err);
        return -1;
    }
    if (keys && (!cfg->endpoint_token_keys || !*cfg->endpoint_token_keys))
        log_notice("server", "token keys from the credential $CREDENTIALS_DIRECTORY/token_keys");
    bool random_key = !keys;
    free(keys);
    if (random_key)
        log_warning("server", "endpoint.token_keys is empty: using a random key; endpoints will "
                              "not survive a restart or work across nodes "
                              "(make a key with simplepushd --genkey)");

    struct store_limits limits = {
        .max_channels = (size_t)cfg->storage_max_channels,
        .timeout_live_ms = cfg->storage_timeout_live_ms,
        .timeout_del_ms = cfg->storage_timeout_del_ms,
    };
    if (cfg->memcache_server && *cfg->memcache_server) {
        char serr[256];
        srv->store = store_mc_new(loop, cfg->memcache_server, &limits, NULL, serr, sizeof(serr));
        if (!srv->store) {
            log_err("server", "memcache.server: %s", serr);
            return -1;
        }
    } else {
        srv->store = store_mem_new(loop, &limits);
    }
    if (srv->store)
        store_set_observer(srv->store, metrics_store);
    srv->reg = registry_new();
    srv->timers = timers_new(loop, device_on_timer, srv);
    if (!srv->store || !srv->reg || !srv->timers) {
        log_err("server", "out of memory");
        return -1;
    }

    public_protocols[1].per_session_data_size = device_session_size();

    struct lws_context_creation_info info;
    void *loops[1] = {loop};
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
                   LWS_SERVER_OPTION_VALIDATE_UTF8;
    if (cfg->ssl_certfile)
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = loops;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.max_http_header_pool = HTTP_HEADER_POOL;
    info.max_http_header_data = HTTP_HEADER_DATA;
    info.timeout_secs = 10;
    info.user = srv;
    info.pcontext = &srv->ctx; /* lws clears it once the context is wholly gone */
    srv->ctx = lws_create_context(&info);
    if (!srv->ctx) {
        log_err("server", "cannot create the libwebsockets context (is libwebsockets-evlib-uv "
                          "installed?)");
        return -1;
    }

    bool tls = cfg->ssl_certfile != NULL;
    srv->gate = gate_new(loop, (size_t)cfg->server_max_handshakes);
    if (!srv->gate) {
        log_err("server", "out of memory");
        return -1;
    }
    srv->vh_public = create_vhost(srv, "public", cfg->server_host,
                                  tls ? cfg->server_port : CONTEXT_PORT_NO_LISTEN_SERVER,
                                  public_protocols, &public_pvo, tls);
    if (!srv->vh_public)
        return -1;
    srv->vh_internal = create_vhost(srv, "internal", cfg->internal_host, CONTEXT_PORT_NO_LISTEN,
                                    internal_protocols, NULL, false);
    if (!srv->vh_internal)
        return -1;
    if (tls)
        srv->public_port = lws_get_vhost_listen_port(srv->vh_public);
    else if (gate_listener(srv, srv->vh_public, "public", cfg->server_host, cfg->server_port,
                           &srv->public_port))
        return -1;
    if (gate_listener(srv, srv->vh_internal, "internal", cfg->internal_host, cfg->internal_port,
                      &srv->internal_port))
        return -1;
    if (build_url_template(srv) || build_node(srv))
        return -1;
    uint8_t key[IDS_BYTES];
    ids_generate(key);
    memcpy(&srv->gen_key, key, sizeof(srv->gen_key));
    srv->router = router_new(loop, srv->ctx, srv->vh_internal, "sp-router");
    if (!srv->router) {
        log_err("server", "out of memory");
        return -1;
    }

    uv_signal_init(loop, &srv->sig_term);
    uv_signal_init(loop, &srv->sig_int);
    uv_signal_init(loop, &srv->sig_hup);
    uv_timer_init(loop, &srv->stop_timer);
    uv_timer_init(loop, &srv->notify_timer);
    uv_timer_init(loop, &srv->statsd_timer);
    srv->statsd_timer.data = srv;
    srv->sig_term.data = srv->sig_int.data = srv->stop_timer.data = srv;
    srv->notify_timer.data = srv->sig_hup.data = srv;
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    uv_signal_start(&srv->sig_hup, on_sighup, SIGHUP);

    log_notice("server", "listening public=%s:%d internal=%s:%d",
               is_wildcard(cfg->server_host) ? "0.0.0.0" : cfg->server_host, srv->public_port,
               cfg->internal_host, srv->internal_port);
    log_notice("server", "store=%s max_connections=%lld endpoint=%s<token>%s node=%s",
               store_name(srv->store), (long long)srv->max_connections, srv->url_prefix,
               srv->url_suffix, srv->node[0] ? srv->node : "-");

    /* systemd: ready once the listeners are bound; the watchdog is pinged from the loop. */
    if (sdnotify_open())
        log_warning("server", "cannot open $NOTIFY_SOCKET; systemd will not be notified");
    srv->watchdog_usec = sdnotify_watchdog_usec();
    uint64_t every = NOTIFY_STATUS_MS;
    if (srv->watchdog_usec && srv->watchdog_usec / 2000 < every)
        every = srv->watchdog_usec / 2000 ? srv->watchdog_usec / 2000 : 1;
    uv_timer_start(&srv->notify_timer, on_notify_timer, every, every);
    uv_unref((uv_handle_t *)&srv->notify_timer);
    uv_timer_start(&srv->statsd_timer, on_statsd_timer, STATSD_FLUSH_MS, STATSD_FLUSH_MS);
    uv_unref((uv_handle_t *)&srv->statsd_timer);
    notify_status(srv, "READY=1\n");
    return 0;
}

static void stop_now(struct server *srv)
{
    if (srv->stopped)
        return;
    bool was_stopping = srv->stopping;
    srv->stopping = srv->stopped = true;
    metrics_statsd_flush(srv->n_devices); /* what the last interval counted */
    if (!was_stopping)
        sdnotify_send("STOPPING=1");
    /* No new connections reach lws; those still in the gate are closed. */
    gate_close(srv->gate);
    /* lws first: closing sessions still use the registry, timers and store. */
    if (srv->ctx)
        lws_context_destroy(srv->ctx);
    router_close(srv->router);
    srv->router = NULL;
    if (srv->timers)
        timers_close(srv->timers);
    srv->timers = NULL;
    if (srv->store)
        store_close(srv->store);
    srv->store = NULL;
    if (srv->sig_term.loop) {
        uv_close((uv_handle_t *)&srv->sig_term, NULL);
        uv_close((uv_handle_t *)&srv->sig_int, NULL);
        uv_close((uv_handle_t *)&srv->sig_hup, NULL);
        uv_close((uv_handle_t *)&srv->stop_timer, NULL);
        uv_close((uv_handle_t *)&srv->notify_timer, NULL);
        uv_close((uv_handle_t *)&srv->statsd_timer, NULL);
    }
    sdnotify_close();
}

/* Milliseconds between two rounds of the drain. */
#define DRAIN_TICK_MS 100

/* Closes every session left with 1001 (from its next writeable callback), then stops. */
static void close_all(struct server *srv)
{
    srv->closing_all = true;
    srv->stop_deadline_ms = uv_now(srv->loop) + STOP_GRACE_MS;
    lws_callback_on_writable_all_protocol_vhost(
        srv->vh_public, lws_vhost_name_to_protocol(srv->vh_public, "push-notification"));
    lws_cancel_service(srv->ctx);
}

static int drain_one(void *session, void *arg)
{
    size_t *budget = arg;
    if (device_drain(session))
        (*budget)--;
    return *budget == 0;
}

/*
 * One round of the drain: close a share of the ready devices, so that they reconnect to
 * other nodes spread over server.drain_seconds instead of all at once.
 */
static void on_stop_timer(uv_timer_t *timer)
{
    struct server *srv = timer->data;
    uint64_t now = uv_now(srv->loop);

    if (srv->closing_all) {
        if (!srv->n_devices || now >= srv->stop_deadline_ms)
            stop_now(srv);
        return;
    }
    size_t ready = registry_uaid_count(srv->reg);
    if (!ready || now >= srv->drain_end_ms) {
        close_all(srv);
        return;
    }
    uint64_t rounds = (srv->drain_end_ms - now + DRAIN_TICK_MS - 1) / DRAIN_TICK_MS;
    size_t budget = (size_t)((ready + rounds - 1) / rounds);
    registry_foreach_uaid(srv->reg, drain_one, &budget);
}

void server_stop(struct server *srv, bool graceful)
{
    if (srv->stopped)
        return;
    if (!graceful || !srv->ctx || !srv->sig_term.loop || srv->stopping) {
        stop_now(srv);
        return;
    }
    /* New devices are refused and /__lbheartbeat__ answers 503 from now on. */
    srv->stopping = true;
    sdnotify_send("STOPPING=1");
    srv->drain_end_ms = uv_now(srv->loop) + srv->cfg->server_drain_ms;
    log_notice("server", "draining %zu devices over %llu ms", srv->n_devices,
               (unsigned long long)srv->cfg->server_drain_ms);
    uv_timer_start(&srv->stop_timer, on_stop_timer, 0, DRAIN_TICK_MS);
}

void server_free(struct server *srv)
{
    /* With a foreign loop the last stage of lws's destruction needs one more call. */
    if (srv->ctx)
        lws_context_destroy(srv->ctx);
    gate_free(srv->gate);
    registry_free(srv->reg);
    token_ring_free(srv->tokens);
    config_free(srv->cfg);
    free(srv->config_path);
    log_set_heka(NULL, NULL);
    metrics_statsd_configure(NULL, NULL);
    free(srv->url_prefix);
    free(srv->url_suffix);
    memset(srv, 0, sizeof(*srv));
    server_self = NULL;
}
