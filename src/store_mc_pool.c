/*
 * store_mc_pool: the memcached backend's connections and circuit breakers (store_mc_pool.h).
 */
#include "store_mc_pool.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MC_HOST_MAX   253
#define MC_SHOWN(len) ((int)((len) > 80 ? 80 : (len))) /* bytes of a bad entry quoted */

static uint64_t mc_pool_after(uint64_t now, uint64_t ms)
{
    return ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
}

static void mc_pool_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void mc_pool_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool mc_pool_host_char(int c, bool bracketed)
{
    if (isalnum(c) || c == '.')
        return true;
    return bracketed ? c == ':' || c == '%' : c == '-' || c == '_';
}

/* Parses one "host[:port]" entry (len bytes at s) and adds it to mc. */
static int mc_pool_add_server(memcached_st *mc, const char *s, size_t len, char *err, size_t errlen)
{
    const char *end = s + len, *hs = s, *he, *ps = NULL;
    bool bracketed = *s == '[';
    if (bracketed) {
        hs = s + 1;
        he = memchr(hs, ']', (size_t)(end - hs));
        if (!he) {
            mc_pool_err(err, errlen, "bad memcached server \"%.*s\": missing ']'", MC_SHOWN(len),
                        s);
            return -1;
        }
        if (he + 1 < end) {
            if (he[1] != ':') {
                mc_pool_err(err, errlen, "bad memcached server \"%.*s\": expected ':' after ']'",
                            MC_SHOWN(len), s);
                return -1;
            }
            ps = he + 2;
        }
    } else {
        const char *colon = memchr(s, ':', len);
        he = colon ? colon : end;
        if (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1))) {
            mc_pool_err(err, errlen,
                        "bad memcached server \"%.*s\": write an IPv6 address in brackets, "
                        "[addr]:port",
                        MC_SHOWN(len), s);
            return -1;
        }
        if (colon)
            ps = colon + 1;
    }
    size_t hlen = (size_t)(he - hs);
    if (hlen == 0 || hlen > MC_HOST_MAX) {
        mc_pool_err(err, errlen, "bad memcached server \"%.*s\": %s host", MC_SHOWN(len), s,
                    hlen ? "too long a" : "no");
        return -1;
    }
    for (const char *p = hs; p < he; p++) {
        if (!mc_pool_host_char((unsigned char)*p, bracketed)) {
            mc_pool_err(err, errlen, "bad memcached server \"%.*s\": bad character in host",
                        MC_SHOWN(len), s);
            return -1;
        }
    }
    long port = MC_DEFAULT_PORT;
    if (ps) {
        char buf[8];
        size_t plen = (size_t)(end - ps);
        bool digits = plen > 0 && plen < sizeof(buf);
        for (size_t i = 0; digits && i < plen; i++)
            digits = isdigit((unsigned char)ps[i]);
        if (digits) {
            memcpy(buf, ps, plen);
            buf[plen] = '\0';
            port = strtol(buf, NULL, 10);
        }
        if (!digits || port < 1 || port > 65535) {
            mc_pool_err(err, errlen, "bad memcached server \"%.*s\": port must be 1-65535",
                        MC_SHOWN(len), s);
            return -1;
        }
    }
    char host[MC_HOST_MAX + 1];
    memcpy(host, hs, hlen);
    host[hlen] = '\0';
    for (uint32_t i = 0; i < memcached_server_count(mc); i++) {
        const memcached_instance_st *inst = memcached_server_instance_by_position(mc, i);
        if (!strcmp(memcached_server_name(inst), host) && memcached_server_port(inst) == port) {
            mc_pool_err(err, errlen, "memcached server \"%.*s\" is listed twice", MC_SHOWN(len), s);
            return -1;
        }
    }
    memcached_return_t rc = memcached_server_add(mc, host, (in_port_t)port);
    if (rc != MEMCACHED_SUCCESS) {
        mc_pool_err(err, errlen, "cannot add memcached server \"%.*s\": %s", MC_SHOWN(len), s,
                    memcached_strerror(mc, rc));
        return -1;
    }
    return 0;
}

/* Adds every server of a comma-separated list to mc. */
static int mc_pool_add_servers(memcached_st *mc, const char *list, char *err, size_t errlen)
{
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if (a == b) {
            mc_pool_err(err, errlen, "bad memcached server list \"%.*s\": empty entry",
                        MC_SHOWN(strlen(list)), list);
            return -1;
        }
        if (mc_pool_add_server(mc, a, (size_t)(b - a), err, errlen) != 0)
            return -1;
        if (!*end)
            return 0;
        p = end + 1;
    }
}

static unsigned mc_pool_or(unsigned v, unsigned dflt)
{
    return v ? v : dflt;
}

static int mc_pool_configure(memcached_st *mc, const struct store_mc_options *o)
{
    unsigned poll_ms = mc_pool_or(o ? o->poll_timeout_ms : 0, MC_DEFAULT_POLL_MS);
    const struct {
        memcached_behavior_t flag;
        uint64_t value;
    } behaviors[] = {
        {MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1},
        /* Ketama (MD5) consistent hashing: a server's loss moves only its own keys. */
        {MEMCACHED_BEHAVIOR_KETAMA, 1},
        {MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT,
         mc_pool_or(o ? o->connect_timeout_ms : 0, MC_DEFAULT_CONNECT_MS)},
        {MEMCACHED_BEHAVIOR_POLL_TIMEOUT, poll_ms},
        {MEMCACHED_BEHAVIOR_RCV_TIMEOUT, (uint64_t)poll_ms * 1000},
        {MEMCACHED_BEHAVIOR_SND_TIMEOUT, (uint64_t)poll_ms * 1000},
        {MEMCACHED_BEHAVIOR_RETRY_TIMEOUT,
         mc_pool_or(o ? o->retry_timeout_s : 0, MC_DEFAULT_RETRY_S)},
        {MEMCACHED_BEHAVIOR_TCP_NODELAY, 1},
        {MEMCACHED_BEHAVIOR_TCP_KEEPALIVE, 1},
        {MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1},
        /* Replies are needed (CAS results), and NOREPLY with binary loops forever (pushgo). */
        {MEMCACHED_BEHAVIOR_NOREPLY, 0},
    };
    for (size_t i = 0; i < sizeof(behaviors) / sizeof(behaviors[0]); i++)
        if (memcached_behavior_set(mc, behaviors[i].flag, behaviors[i].value) != MEMCACHED_SUCCESS)
            return -1;
    return 0;
}

/* Whether a call to server may go out at "now"; *probe is set for the half-open probe. */
bool mc_pool_admit(struct mc_pool *pool, unsigned server, uint64_t now, bool *probe)
{
    struct mc_breaker *b = &pool->breakers[server];
    bool ok = true;
    *probe = false;
    uv_mutex_lock(&pool->lock);
    if (b->state == STORE_MC_HALF_OPEN) {
        ok = false; /* the probe is out */
    } else if (b->state == STORE_MC_OPEN) {
        if (now >= b->opened_at && now - b->opened_at >= pool->open_ms) {
            b->state = STORE_MC_HALF_OPEN;
            *probe = true;
        } else {
            ok = false;
        }
    }
    uv_mutex_unlock(&pool->lock);
    return ok;
}

/* Records the outcome of an admitted call: down when the server was unreachable. */
bool mc_pool_report(struct mc_pool *pool, unsigned server, bool down, bool probe, uint64_t now)
{
    struct mc_breaker *b = &pool->breakers[server];
    bool opened = false;
    uv_mutex_lock(&pool->lock);
    if (down) {
        if (b->failures < UINT32_MAX)
            b->failures++;
        if (probe || (b->state == STORE_MC_CLOSED && b->failures >= pool->failures)) {
            b->state = STORE_MC_OPEN;
            b->opened_at = now;
            opened = true;
        }
    } else {
        b->failures = 0;
        if (probe)
            b->state = STORE_MC_CLOSED;
    }
    uv_mutex_unlock(&pool->lock);
    return opened;
}

int mc_pool_worst(struct mc_pool *pool)
{
    int worst = STORE_MC_CLOSED;
    uv_mutex_lock(&pool->lock);
    for (unsigned i = 0; i < pool->n_servers; i++)
        if (pool->breakers[i].state > worst)
            worst = pool->breakers[i].state;
    uv_mutex_unlock(&pool->lock);
    return worst;
}

unsigned mc_pool_retry_after(struct mc_pool *pool, uint64_t now)
{
    uint64_t wait = 0;
    uv_mutex_lock(&pool->lock);
    for (unsigned i = 0; i < pool->n_servers; i++) {
        const struct mc_breaker *b = &pool->breakers[i];
        uint64_t due = mc_pool_after(b->opened_at, pool->open_ms);
        if (b->state == STORE_MC_OPEN && due > now && due - now > wait)
            wait = due - now;
    }
    uv_mutex_unlock(&pool->lock);
    uint64_t s = (wait + 999) / 1000;
    return s < 1 ? 1 : s > 86400 ? 86400 : (unsigned)s;
}

/* Whether rc means that the server could not be reached (or did not answer in time). */
bool mc_pool_down(memcached_return_t rc)
{
    switch (rc) {
    case MEMCACHED_FAILURE:
    case MEMCACHED_HOST_LOOKUP_FAILURE:
    case MEMCACHED_CONNECTION_FAILURE:
    case MEMCACHED_CONNECTION_BIND_FAILURE:
    case MEMCACHED_WRITE_FAILURE:
    case MEMCACHED_READ_FAILURE:
    case MEMCACHED_UNKNOWN_READ_FAILURE:
    case MEMCACHED_ERROR: /* also MEMCACHED_CONNECTION_SOCKET_CREATE_FAILURE */
    case MEMCACHED_PARTIAL_READ:
    case MEMCACHED_SOME_ERRORS:
    case MEMCACHED_NO_SERVERS:
    case MEMCACHED_ERRNO:
    case MEMCACHED_TIMEOUT:
    case MEMCACHED_SERVER_MARKED_DEAD:
    case MEMCACHED_SERVER_TEMPORARILY_DISABLED:
    case MEMCACHED_IN_PROGRESS:
        return true;
    default:
        return false;
    }
}

unsigned mc_pool_server(struct mc_pool *pool, unsigned conn, const char *key, size_t klen)
{
    if (pool->n_servers < 2)
        return 0;
    memcached_st *mc = pool->conns[conn];
    memcached_return_t rc;
    const memcached_instance_st *inst = memcached_server_by_key(mc, key, klen, &rc);
    for (unsigned i = 0; inst && i < pool->n_servers; i++)
        if (memcached_server_instance_by_position(mc, i) == inst)
            return i;
    return 0;
}

int mc_pool_init(struct mc_pool *pool, const char *servers, unsigned n_conns,
                 const struct store_mc_options *opt, char *err, size_t errlen)
{
    memcached_st *proto = memcached_create(NULL);
    if (!proto)
        goto fail_oom;
    pool->failures = mc_pool_or(opt ? opt->breaker_failures : 0, MC_DEFAULT_FAILURES);
    pool->open_ms = mc_pool_or(opt ? opt->breaker_open_ms : 0, MC_DEFAULT_OPEN_MS);
    if (mc_pool_configure(proto, opt) != 0) {
        mc_pool_err(err, errlen, "cannot configure libmemcached");
        goto fail;
    }
    if (mc_pool_add_servers(proto, servers, err, errlen) != 0)
        goto fail;
    pool->n_servers = memcached_server_count(proto);
    pool->breakers = calloc(pool->n_servers, sizeof(*pool->breakers));
    pool->conns = calloc(n_conns, sizeof(*pool->conns));
    if (!pool->breakers || !pool->conns)
        goto fail_oom;
    if (uv_mutex_init(&pool->lock) != 0)
        goto fail_oom;
    pool->has_lock = true;
    for (; pool->n_conns < n_conns; pool->n_conns++) {
        pool->conns[pool->n_conns] = memcached_clone(NULL, proto);
        if (!pool->conns[pool->n_conns])
            goto fail_oom;
    }
    memcached_free(proto);
    return 0;

fail_oom:
    mc_pool_err(err, errlen, "out of memory");
fail:
    memcached_free(proto);
    return -1;
}

void mc_pool_clear(struct mc_pool *pool)
{
    for (unsigned i = 0; pool->conns && i < pool->n_conns; i++)
        memcached_free(pool->conns[i]);
    free(pool->conns);
    free(pool->breakers);
    if (pool->has_lock)
        uv_mutex_destroy(&pool->lock);
    memset(pool, 0, sizeof(*pool));
}
