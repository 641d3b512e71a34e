/*
 * config: the key table and the config.ini reader.
 *
 * Every key the daemon knows is one row of keys[] (name, type, default, range, reloadable,
 * where it lives in struct config, one line of description); nothing else in this file
 * knows a key by name, except the cross-field checks at the end of config_load(). pushgo
 * 1.x spellings are rows of aliases[], and pushgo keys that do nothing here are rows of
 * ignored[]. docs/config.md and the shipped config.ini list the same keys, and the unit
 * test checks that they do.
 *
 * The file is read by inih through our own line reader, which counts lines (Debian's inih
 * does not pass line numbers to the handler), strips leading whitespace (so indented keys
 * work and inih's multi-line continuation values never happen), turns pushgo's '/' comment
 * lines into blank lines and refuses lines longer than inih's line buffer rather than let
 * inih split them. The first error stops the reading: the reader returns end of file once an
 * error is recorded. Warnings are held until the end, and only those of lines before the
 * first error are logged (inih reads on past its own syntax errors).
 */
#include "simplepushd/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simplepushd/log.h"
#include "simplepushd/router.h"
#include "simplepushd/token.h"
#include "simplepushd/udp.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define MS_PER_S 1000ULL
#define MS_PER_M (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_M)

enum cfg_type {
    CFG_STRING,   /* char *, strdup'd; "" = the default */
    CFG_INT,      /* int or int64_t, by the field's size */
    CFG_SIZE,     /* int64_t bytes */
    CFG_DURATION, /* uint64_t milliseconds */
    CFG_BOOL,     /* bool */
    CFG_ENUM,     /* int, from a parse function */
};

/* Checks a string value; returns 0 or -1 with a reason. */
typedef int (*cfg_check_fn)(const char *value, char *reason, size_t len);

/* Parses an enum value; returns the value or -1. */
typedef int (*cfg_enum_fn)(const char *value);

struct cfg_key {
    const char *name;
    enum cfg_type type;
    size_t offset;
    size_t size;
    const char *def_str;
    int64_t def;      /* ms for durations */
    int64_t min, max; /* inclusive; ms for durations */
    bool zero_ok;     /* 0 ("off", "derived") is valid besides min..max */
    bool reloadable;
    cfg_check_fn check;
    cfg_enum_fn parse_enum;
    const char *choices; /* for enums, as shown in errors */
    const char *desc;
};

static int check_url_template(const char *value, char *reason, size_t len);
static int check_token_keys(const char *value, char *reason, size_t len);
static int check_hostport(const char *value, char *reason, size_t len);
static int check_node(const char *value, char *reason, size_t len);
static int parse_log_level(const char *value);
static int parse_log_format(const char *value);

#define FIELD(f) .offset = offsetof(struct config, f), .size = sizeof(((struct config *)0)->f)

#define KEY_STRING(n, f, d, rel, chk, text)                                                        \
    {                                                                                              \
        .name = n, .type = CFG_STRING, FIELD(f), .def_str = d, .reloadable = rel, .check = chk,    \
        .desc = text                                                                               \
    }
#define KEY_NUM(n, t, f, d, lo, hi, z, rel, text)                                                  \
    {                                                                                              \
        .name = n, .type = t, FIELD(f), .def = d, .min = lo, .max = hi, .zero_ok = z,              \
        .reloadable = rel, .desc = text                                                            \
    }
#define KEY_BOOL(n, f, d, rel, text)                                                               \
    {                                                                                              \
        .name = n, .type = CFG_BOOL, FIELD(f), .def = d, .min = 0, .max = 1, .reloadable = rel,    \
        .desc = text                                                                               \
    }
#define KEY_ENUM(n, f, d, fn, ch, rel, text)                                                       \
    {                                                                                              \
        .name = n, .type = CFG_ENUM, FIELD(f), .def = d, .parse_enum = fn, .choices = ch,          \
        .reloadable = rel, .desc = text                                                            \
    }

#define S(x) ((int64_t)(x) * (int64_t)MS_PER_S)

/* The keys. Durations are in ms; every timeout accepts 1 s. */
static const struct cfg_key keys[] = {
    KEY_STRING("server.host", server_host, "0.0.0.0", false, NULL,
               "address of the public listener (devices, app servers, health)"),
    KEY_NUM("server.port", CFG_INT, server_port, 8080, 0, 65535, false, false,
            "port of the public listener; 0 picks a free port"),
    KEY_STRING("server.current_host", server_current_host, NULL, false, NULL,
               "this node's name in endpoint URLs and host records; default server.host"),
    KEY_NUM("server.max_connections", CFG_INT, server_max_connections, 0, 1, 10000000, true, true,
            "most WebSocket devices at once; 0 derives it from the open-files limit"),
    KEY_NUM("server.max_handshakes", CFG_INT, server_max_handshakes, 1024, 1, 1000000, false, true,
            "most connections whose first request head is being read; over it: 503 and close"),
    KEY_NUM("server.drain_seconds", CFG_DURATION, server_drain_ms, S(10), 0, S(3600), false, false,
            "on SIGTERM, time over which device sockets are closed"),
    KEY_BOOL("server.demo", server_demo, false, false,
             "serve the demo page and the JavaScript client at /demo/ on the public listener"),
    KEY_STRING("internal.host", internal_host, "127.0.0.1", false, NULL,
               "address of the internal listener (routing between nodes, metrics)"),
    KEY_NUM("internal.port", CFG_INT, internal_port, 8081, 0, 65535, false, false,
            "port of the internal listener; 0 picks a free port"),
    KEY_STRING("internal.advertise", internal_advertise, NULL, false, check_node,
               "IP:port other nodes reach this node's internal listener at; default "
               "internal.host:internal.port"),
    KEY_STRING("ssl.certfile", ssl_certfile, NULL, false, NULL,
               "PEM certificate (chain) for TLS on the public listener"),
    KEY_STRING("ssl.keyfile", ssl_keyfile, NULL, false, NULL,
               "PEM private key for TLS on the public listener"),
    KEY_NUM("client.hello_timeout", CFG_DURATION, client_hello_timeout_ms, S(30), S(1), S(3600),
            true, true, "close a socket that has not sent hello within this time; 0 = off"),
    KEY_NUM("client.min_ping_interval", CFG_DURATION, client_min_ping_interval_ms, S(20), S(1),
            S(3600), true, true, "least time between two pings of a device; 0 = off"),
    KEY_NUM("client.resend_interval", CFG_DURATION, client_resend_interval_ms, S(60), S(1),
            S(86400), true, true, "resend unacknowledged updates to a device this often; 0 = off"),
    KEY_NUM("client.pong_interval", CFG_DURATION, client_pong_interval_ms, S(300), S(1), S(86400),
            true, true, "WebSocket ping to an idle device after this time; 0 = off"),
    KEY_NUM("client.max_message_size", CFG_SIZE, client_max_message_size, 262144, 4096, 16777216,
            false, true, "largest message a device may send, in bytes (over it: close 1009)"),
    KEY_NUM("client.max_pending_bytes", CFG_SIZE, client_max_pending_bytes, 65536, 4096, 16777216,
            false, true, "most bytes queued to a device that does not read (over it: close 1008)"),
    KEY_STRING("endpoint.url_template", endpoint_url_template, NULL, false, check_url_template,
               "endpoint URL given to devices; <token>, <current_host>, <port> are replaced"),
    KEY_STRING("endpoint.token_keys", endpoint_token_keys, NULL, true, check_token_keys,
               "comma-separated base64url 32-byte keys; the first encrypts, all decrypt"),
    KEY_NUM("endpoint.max_data_len", CFG_SIZE, endpoint_max_data_len, 4096, 0, 65536, false, false,
            "largest data= of an update, in bytes (over it: 413)"),
    KEY_BOOL("endpoint.cors", endpoint_cors, false, false,
             "answer CORS preflight (OPTIONS) and add CORS headers on the endpoint"),
    KEY_NUM("storage.max_channels", CFG_INT, storage_max_channels, 200, 1, 100000, false, false,
            "most channels a device may hold"),
    KEY_NUM("storage.timeout_live", CFG_DURATION, storage_timeout_live_ms, S(259200), S(1),
            S(2592000), false, false, "lifetime of stored channels, updates and host records"),
    KEY_NUM("storage.timeout_del", CFG_DURATION, storage_timeout_del_ms, S(86400), S(1), S(2592000),
            false, false, "how long an unregistered channel or reset device answers 410"),
    KEY_STRING("memcache.server", memcache_server, NULL, false, NULL,
               "comma-separated memcached host:port list; empty = in-process store"),
    KEY_ENUM("log.level", log_level, LOG_LEVEL_NOTICE, parse_log_level,
             "error|warning|notice|info|debug", true, "most verbose level written to stderr"),
    KEY_ENUM("log.format", log_format, LOG_FORMAT_TEXT, parse_log_format, "text|json", true,
             "log line format: text (journald) or json (MozLog)"),
    KEY_BOOL("heka.use", heka_use, false, true,
             "also send every log line as a MozLog JSON datagram to heka.server_addr"),
    KEY_STRING("heka.server_addr", heka_server_addr, "127.0.0.1:5565", true, check_hostport,
               "host:port of the Heka (or hindsight) UDP input"),
    KEY_STRING("heka.logger_name", heka_logger_name, "simplepushd", true, NULL,
               "the Logger field of the datagrams"),
    KEY_STRING("metrics.statsd_server", metrics_statsd_server, NULL, true, check_hostport,
               "host:port of a statsd server for pushgo's metric names; empty = none"),
    KEY_STRING("metrics.prefix", metrics_prefix, "simplepush", true, NULL,
               "prefix of the statsd metric names"),
};

#define KEY_COUNT ARRAY_SIZE(keys)

/*
 * pushgo 1.x names of our keys. A lenient alias whose value is not valid here is ignored with
 * a warning instead of failing: pushgo's token_key is a 16-, 24- or 32-byte key in standard
 * base64, which cannot decode our tokens anyway.
 */
static const struct {
    const char *name;
    const char *canonical;
    bool lenient;
} aliases[] = {
    {"host", "server.host", false},
    {"port", "server.port", false},
    {"max_connections", "server.max_connections", false},
    {"shard.current_host", "server.current_host", false},
    {"push.endpoint", "endpoint.url_template", false},
    {"pushEndpoint", "endpoint.url_template", false},
    {"token_key", "endpoint.token_keys", true},
    {"enable_cors", "endpoint.cors", false},
    {"endpoint.enable_cors", "endpoint.cors", false},
    {"db.max_channels", "storage.max_channels", false},
    {"db.timeout_live", "storage.timeout_live", false},
    {"db.timeout_del", "storage.timeout_del", false},
    {"statsd.server", "metrics.statsd_server", false},
    {"metrics.statsd_target", "metrics.statsd_server", false},
    {"statsd.name", "metrics.prefix", false},
};

/* pushgo 1.x keys with no meaning here: accepted with a warning. A trailing '*' is a prefix. */
/* clang-format off */
static const char *const ignored[] = {
    "wshost", "wsport",
    "ssl.ws.certfile", "ssl.ws.keyfile",
    "push.long_pongs",
    "db.timeout_reg", "db.handle_timeout", "db.redirect", "db.prop_prefix",
    "memcache.pool_size", "memcache.max_pool", "memcache.max_pool_size", "memcache.recv_timeout",
    "memcache.send_timeout", "memcache.poll_timeout", "memcache.retry_timeout",
    "elasticache.config_endpoint",
    "shard.use_aws_host", "shard.default_host", "shard.defaultHost", "shard.prefix",
    "shard.do_proxy", "shard.router", "shard.port", "shard.scheme", "shard.url_template",
    "shard.ctimeout", "shard.rwtimeout", "shard.defaultTTL", "shard.etcd_servers",
    "shard.bucket_size",
    "logger.enable", "logger.filter",
    "heka.sender", "heka.current_host", "heka.show_caller", "heka.stdout",
    "metrics.counters",
    "gcm.*",
};
/* clang-format on */

/* ---- value parsers ---- */

/* Parses a duration; returns 0, -1 for bad syntax or -2 when it overflows. */
static int parse_duration(const char *s, uint64_t *ms)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", MS_PER_S}, {"m", MS_PER_M}, {"h", MS_PER_H}};
    const char *p = s;
    uint64_t total = 0;

    if (!isdigit((unsigned char)*p))
        return -1;
    while (*p) {
        const char *component = p;
        uint64_t whole = 0, frac = 0, den = 1, unit = 0, v;

        if (!isdigit((unsigned char)*p))
            return -1;
        for (; isdigit((unsigned char)*p); p++)
            if (__builtin_mul_overflow(whole, 10, &whole) ||
                __builtin_add_overflow(whole, (uint64_t)(*p - '0'), &whole))
                return -2;
        if (*p == '.') {
            p++;
            if (!isdigit((unsigned char)*p))
                return -1;
            /* Digits past the ninth cannot matter at millisecond precision. */
            for (; isdigit((unsigned char)*p); p++) {
                if (den < 1000000000) {
                    frac = frac * 10 + (uint64_t)(*p - '0');
                    den *= 10;
                }
            }
        }
        if (!*p && component == s) {
            unit = MS_PER_S; /* a bare number: seconds */
        } else {
            for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
                size_t n = strlen(units[i].suffix);
                if (!strncmp(p, units[i].suffix, n) && !isalpha((unsigned char)p[n])) {
                    unit = units[i].ms;
                    p += n;
                    break;
                }
            }
            if (!unit)
                return -1;
        }
        if (__builtin_mul_overflow(whole, unit, &v) ||
            __builtin_add_overflow(v, frac * unit / den, &v) ||
            __builtin_add_overflow(total, v, &total))
            return -2;
    }
    *ms = total;
    return 0;
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t v;

    if (!s || parse_duration(s, &v) < 0)
        return -1;
    *ms = v;
    return 0;
}

int config_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    if (!s)
        return -1;
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (!strcasecmp(s, yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcasecmp(s, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Parses a base-10 integer (optional '-'); returns 0, -1 for bad syntax, -2 on overflow. */
static int parse_int(const char *s, int64_t *out)
{
    const char *p = s;
    char *end;

    if (*p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end)
        return -1;
    if (errno == ERANGE)
        return -2;
    *out = v;
    return 0;
}

static int parse_log_level(const char *value)
{
    return log_level_parse(value);
}

static int parse_log_format(const char *value)
{
    if (!strcasecmp(value, "text"))
        return LOG_FORMAT_TEXT;
    if (!strcasecmp(value, "json"))
        return LOG_FORMAT_JSON;
    return -1;
}

static int check_url_template(const char *value, char *reason, size_t len)
{
    if (strncmp(value, "http://", 7) && strncmp(value, "https://", 8)) {
        snprintf(reason, len, "must start with http:// or https://");
        return -1;
    }
    if (!strstr(value, "<token>")) {
        snprintf(reason, len, "must contain <token>");
        return -1;
    }
    return 0;
}

/*
 * Checks a key list with the token module itself, so that a bad key is reported with its
 * file:line. The reason never contains the key.
 */
static int check_token_keys(const char *value, char *reason, size_t len)
{
    static const char prefix[] = "endpoint.token_keys: ";
    char err[200];
    struct token_ring *ring = token_ring_new(value, err, sizeof(err));
    if (!ring) {
        /* The caller names the key already. */
        const char *why = strncmp(err, prefix, sizeof(prefix) - 1) ? err : err + sizeof(prefix) - 1;
        snprintf(reason, len, "%s (make one with simplepushd --genkey)", why);
        return -1;
    }
    token_ring_free(ring);
    return 0;
}

static int check_hostport(const char *value, char *reason, size_t len)
{
    return udp_check_hostport(value, reason, len);
}

static int check_node(const char *value, char *reason, size_t len)
{
    char host[64];
    int port;
    if (router_parse_node(value, host, sizeof(host), &port)) {
        snprintf(reason, len, "must be IPv4:port or [IPv6]:port");
        return -1;
    }
    return 0;
}

/* ---- the table ---- */

static void *field(const struct config *cfg, const struct cfg_key *k)
{
    return (char *)cfg + k->offset;
}

static int64_t get_int(const struct config *cfg, const struct cfg_key *k)
{
    const void *f = field(cfg, k);

    switch (k->type) {
    case CFG_INT:
    case CFG_SIZE:
        return k->size == sizeof(int) ? *(const int *)f : *(const int64_t *)f;
    case CFG_DURATION:
        return (int64_t) * (const uint64_t *)f;
    case CFG_BOOL:
        return *(const bool *)f;
    case CFG_ENUM:
        return *(const int *)f;
    case CFG_STRING:
        break;
    }
    return 0;
}

static void set_int(struct config *cfg, const struct cfg_key *k, int64_t v)
{
    void *f = field(cfg, k);

    switch (k->type) {
    case CFG_INT:
    case CFG_SIZE:
        if (k->size == sizeof(int))
            *(int *)f = (int)v;
        else
            *(int64_t *)f = v;
        break;
    case CFG_DURATION:
        *(uint64_t *)f = (uint64_t)v;
        break;
    case CFG_BOOL:
        *(bool *)f = v != 0;
        break;
    case CFG_ENUM:
        *(int *)f = (int)v;
        break;
    case CFG_STRING:
        break;
    }
}

/* Replaces a string field with a copy of s (NULL or "" = NULL). Returns 0 or -1. */
static int set_string(struct config *cfg, const struct cfg_key *k, const char *s)
{
    char **f = field(cfg, k);
    char *copy = NULL;

    if (s && *s && !(copy = strdup(s)))
        return -1;
    free(*f);
    *f = copy;
    return 0;
}

/* Sets key k to its default. Returns 0 or -1 (out of memory). */
static int set_default(struct config *cfg, const struct cfg_key *k)
{
    if (k->type == CFG_STRING)
        return set_string(cfg, k, k->def_str);
    set_int(cfg, k, k->def);
    return 0;
}

/* Finds a key by name or alias (any case); *lenient tells a lenient alias. */
static const struct cfg_key *find_key(const char *name, bool *lenient)
{
    *lenient = false;
    for (size_t i = 0; i < KEY_COUNT; i++)
        if (!strcasecmp(keys[i].name, name))
            return &keys[i];
    for (size_t i = 0; i < ARRAY_SIZE(aliases); i++) {
        if (!strcasecmp(aliases[i].name, name)) {
            const struct cfg_key *k = find_key(aliases[i].canonical, lenient);
            *lenient = aliases[i].lenient;
            return k;
        }
    }
    return NULL;
}

static bool is_ignored(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(ignored); i++) {
        size_t n = strlen(ignored[i]);
        if (ignored[i][n - 1] == '*' ? !strncasecmp(name, ignored[i], n - 1)
                                     : !strcasecmp(name, ignored[i]))
            return true;
    }
    return false;
}

/* Writes a duration in the largest unit that divides it ("1s", "720h", "250ms"). */
static void format_duration(uint64_t ms, char *buf, size_t len)
{
    if (ms && ms % MS_PER_H == 0)
        snprintf(buf, len, "%lluh", (unsigned long long)(ms / MS_PER_H));
    else if (ms && ms % MS_PER_M == 0)
        snprintf(buf, len, "%llum", (unsigned long long)(ms / MS_PER_M));
    else if (ms % MS_PER_S == 0)
        snprintf(buf, len, "%llus", (unsigned long long)(ms / MS_PER_S));
    else
        snprintf(buf, len, "%llums", (unsigned long long)ms);
}

/* Writes a key's valid range, e.g. "0..65535" or "0 or 1s..1h". */
static void format_range(const struct cfg_key *k, char *buf, size_t len)
{
    char lo[32], hi[32];

    if (k->type == CFG_DURATION) {
        format_duration((uint64_t)k->min, lo, sizeof(lo));
        format_duration((uint64_t)k->max, hi, sizeof(hi));
    } else {
        snprintf(lo, sizeof(lo), "%lld", (long long)k->min);
        snprintf(hi, sizeof(hi), "%lld", (long long)k->max);
    }
    snprintf(buf, len, "%s%s..%s", k->zero_ok ? "0 or " : "", lo, hi);
}

/*
 * Parses value into key k of cfg. Returns 0, or -1 with a reason (without file, line or key)
 * in reason.
 */
static int set_value(struct config *cfg, const struct cfg_key *k, const char *value, char *reason,
                     size_t len)
{
    static const char *const type_names[] = {
        [CFG_INT] = "integer", [CFG_SIZE] = "size", [CFG_DURATION] = "duration"};
    int64_t v = 0;
    int rc = 0;

    if (k->type == CFG_STRING) {
        if (*value && k->check && k->check(value, reason, len) < 0)
            return -1;
        if (set_string(cfg, k, *value ? value : k->def_str) < 0) {
            snprintf(reason, len, "out of memory");
            return -1;
        }
        return 0;
    }
    if (!*value) {
        snprintf(reason, len, "empty value");
        return -1;
    }
    switch (k->type) {
    case CFG_BOOL: {
        bool b;
        if (config_parse_bool(value, &b) < 0) {
            snprintf(reason, len, "invalid boolean \"%s\" (1/0, true/false, yes/no, on/off)",
                     value);
            return -1;
        }
        set_int(cfg, k, b);
        return 0;
    }
    case CFG_ENUM:
        v = k->parse_enum(value);
        if (v < 0) {
            snprintf(reason, len, "invalid value \"%s\" (%s)", value, k->choices);
            return -1;
        }
        set_int(cfg, k, v);
        return 0;
    case CFG_DURATION: {
        uint64_t ms;
        rc = parse_duration(value, &ms);
        if (rc == 0 && ms > (uint64_t)INT64_MAX)
            rc = -2;
        v = (int64_t)ms;
        break;
    }
    case CFG_INT:
    case CFG_SIZE:
        rc = parse_int(value, &v);
        break;
    case CFG_STRING:
        break;
    }
    if (rc == -1) {
        snprintf(reason, len, "invalid %s \"%s\"", type_names[k->type], value);
        return -1;
    }
    if (rc == -2 || !((v >= k->min && v <= k->max) || (k->zero_ok && v == 0))) {
        char range[80];
        format_range(k, range, sizeof(range));
        snprintf(reason, len, "%s is out of range %s", value, range);
        return -1;
    }
    set_int(cfg, k, v);
    return 0;
}

/* ---- reading a file ---- */

/* A warning held back until the file is read, so that none is logged past the first error. */
struct load_warning {
    int line;
    char *text;
};

struct load_ctx {
    struct config *cfg;
    const char *path;
    FILE *fp;
    char *buf; /* getline's buffer */
    size_t cap;
    int lineno;     /* the line inih is working on */
    int read_errno; /* set when reading failed */
    int err_line;   /* the line of the recorded error; 0 = none */
    bool failed;    /* an error has been written into err */
    int set_line[KEY_COUNT];
    struct load_warning *warnings;
    size_t nwarnings;
    char *err;
    size_t errlen;
};

/* Records the first error: "path:line: key: reason" (key may be NULL). */
static void __attribute__((format(printf, 3, 4)))
ctx_fail(struct load_ctx *ctx, const char *key, const char *fmt, ...)
{
    char reason[256];
    va_list ap;

    if (ctx->failed)
        return;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    ctx->err_line = ctx->lineno;
    ctx->failed = true;
    if (key)
        snprintf(ctx->err, ctx->errlen, "%s:%d: %s: %s", ctx->path, ctx->lineno, key, reason);
    else
        snprintf(ctx->err, ctx->errlen, "%s:%d: %s", ctx->path, ctx->lineno, reason);
}

/* Holds a warning, "path:line: " and fmt, for ctx_flush_warnings(). */
static void __attribute__((format(printf, 2, 3)))
ctx_warn(struct load_ctx *ctx, const char *fmt, ...)
{
    char msg[512], *text;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct load_warning *w =
        reallocarray(ctx->warnings, ctx->nwarnings + 1, sizeof(*ctx->warnings));
    if (w)
        ctx->warnings = w;
    if (!w || asprintf(&text, "%s:%d: %s", ctx->path, ctx->lineno, msg) < 0) {
        /* Out of memory: log it now rather than never. */
        log_warning("config", "%s:%d: %s", ctx->path, ctx->lineno, msg);
        return;
    }
    ctx->warnings[ctx->nwarnings].line = ctx->lineno;
    ctx->warnings[ctx->nwarnings++].text = text;
}

/* Logs the warnings of lines before stop_line (all when stop_line is 0) and frees them all. */
static void ctx_flush_warnings(struct load_ctx *ctx, int stop_line)
{
    for (size_t i = 0; i < ctx->nwarnings; i++) {
        if (!stop_line || ctx->warnings[i].line < stop_line)
            log_warning("config", "%s", ctx->warnings[i].text);
        free(ctx->warnings[i].text);
    }
    free(ctx->warnings);
}

/* inih's fgets: one line per call, counted and cleaned up; NULL at end or after an error. */
static char *ctx_reader(char *str, int num, void *stream)
{
    struct load_ctx *ctx = stream;

    if (ctx->failed || ctx->read_errno)
        return NULL;
    errno = 0;
    ssize_t n = getline(&ctx->buf, &ctx->cap, ctx->fp);
    if (n < 0) {
        if (ferror(ctx->fp))
            ctx->read_errno = errno ? errno : EIO;
        return NULL;
    }
    ctx->lineno++;

    char *p = ctx->buf;
    if (n > 0 && p[n - 1] == '\n')
        p[n - 1] = '\0';
    if (ctx->lineno == 1 && !strncmp(p, "\xEF\xBB\xBF", 3))
        p += 3;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '/')
        *p = '\0';

    size_t len = strlen(p);
    if (num < 1 || len > (size_t)num - 1) {
        ctx_fail(ctx, NULL, "line too long (more than %d characters)", num - 1);
        return NULL;
    }
    memcpy(str, p, len + 1);
    return str;
}

/*
 * inih cuts section names to 49 characters (its INI_MAX_SECTION of 50), so "[server <many
 * spaces> junk]" would arrive as "server   ..." and, spaces stripped, pass for [server]. Our
 * section names are short: a section name that long, before stripping, is no section of
 * ours.
 */
#define CFG_SECTION_MAX 48

static int ctx_handler(void *user, const char *section, const char *name, const char *value)
{
    struct load_ctx *ctx = user;
    char key[160], reason[200];

    /* inih passes "= value" on with an empty name. */
    if (!*name) {
        ctx_fail(ctx, NULL, "syntax error");
        return 0;
    }
    /* inih keeps the spaces of "[ server ]". */
    while (isspace((unsigned char)*section))
        section++;
    /* Trailing spaces go before the length is judged; a name too long is no key of ours. */
    size_t rawlen = strlen(section), seclen = rawlen;
    while (seclen && isspace((unsigned char)section[seclen - 1]))
        seclen--;
    int n = rawlen > CFG_SECTION_MAX
                ? -1
                : (*section ? snprintf(key, sizeof(key), "%.*s.%s", (int)seclen, section, name)
                            : snprintf(key, sizeof(key), "%s", name));
    if (n < 0 || (size_t)n >= sizeof(key)) {
        ctx_fail(ctx, NULL, "unknown key (section or key name too long)");
        return 0;
    }
    if (!value)
        value = "";

    bool lenient;
    const struct cfg_key *k = find_key(key, &lenient);
    if (!k) {
        if (is_ignored(key)) {
            ctx_warn(ctx, "%s: ignored (a pushgo setting with no use here)", key);
            return 1;
        }
        ctx_fail(ctx, NULL, "unknown key \"%s\"", key);
        return 0;
    }
    if (set_value(ctx->cfg, k, value, reason, sizeof(reason)) < 0) {
        if (lenient) {
            ctx_warn(ctx, "%s: %s; ignored (a pushgo value with no use here)", key, reason);
            return 1;
        }
        ctx_fail(ctx, key, "%s", reason);
        return 0;
    }
    size_t i = (size_t)(k - keys);
    if (ctx->set_line[i])
        ctx_warn(ctx, "%s: given again (line %d); the last value wins", key, ctx->set_line[i]);
    ctx->set_line[i] = ctx->lineno;
    return 1;
}

static size_t key_index(const char *name)
{
    bool lenient;

    return (size_t)(find_key(name, &lenient) - keys);
}

/* Checks that need more than one key, after the whole file is read. */
static void check_cross(struct load_ctx *ctx)
{
    size_t cert = key_index("ssl.certfile"), pkey = key_index("ssl.keyfile");

    if (!ctx->cfg->ssl_certfile != !ctx->cfg->ssl_keyfile) {
        size_t later = ctx->set_line[cert] > ctx->set_line[pkey] ? cert : pkey;
        ctx->lineno = ctx->set_line[later];
        ctx_fail(ctx, keys[later].name, "ssl.certfile and ssl.keyfile must be set together");
    }
}

int config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
    char dummy[1];
    struct load_ctx ctx = {
        .cfg = cfg,
        .path = path,
        .err = errlen ? err : dummy,
        .errlen = errlen ? errlen : sizeof(dummy),
    };

    bool whole_file = false; /* read to the end: every warning stands */

    ctx.err[0] = '\0';
    ctx.fp = fopen(path, "re");
    if (!ctx.fp) {
        snprintf(ctx.err, ctx.errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = ini_parse_stream(ctx_reader, &ctx, ctx_handler, &ctx);
    if (rc > 0 && (!ctx.failed || rc < ctx.err_line)) {
        /* A line inih could not parse, before any error of ours. */
        ctx.failed = false;
        ctx.err_line = 0;
        ctx.lineno = rc;
        ctx_fail(&ctx, NULL, "syntax error");
    } else if (ctx.read_errno && !ctx.failed) {
        snprintf(ctx.err, ctx.errlen, "%s: %s", path, strerror(ctx.read_errno));
        ctx.failed = true;
    } else if (rc < 0 && !ctx.failed) {
        snprintf(ctx.err, ctx.errlen, "%s: out of memory", path);
        ctx.failed = true;
    } else if (!ctx.failed) {
        check_cross(&ctx);
        whole_file = true;
    }
    ctx_flush_warnings(&ctx, whole_file ? 0 : ctx.err_line);
    free(ctx.buf);
    fclose(ctx.fp);
    return ctx.failed ? -1 : 0;
}

/* ---- public table access ---- */

struct config *config_new(void)
{
    struct config *cfg = calloc(1, sizeof(*cfg));

    if (!cfg)
        return NULL;
    for (size_t i = 0; i < KEY_COUNT; i++)
        if (set_default(cfg, &keys[i]) < 0)
            goto fail;
    return cfg;
fail:
    config_free(cfg);
    return NULL;
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < KEY_COUNT; i++)
        if (keys[i].type == CFG_STRING)
            free(*(char **)field(cfg, &keys[i]));
    free(cfg);
}

size_t config_key_count(void)
{
    return KEY_COUNT;
}

const char *config_key_name(size_t i)
{
    return i < KEY_COUNT ? keys[i].name : NULL;
}

bool config_key_reloadable(size_t i)
{
    return i < KEY_COUNT && keys[i].reloadable;
}

bool config_key_changed(const struct config *a, const struct config *b, size_t i)
{
    if (i >= KEY_COUNT)
        return false;
    const struct cfg_key *k = &keys[i];
    if (k->type == CFG_STRING) {
        const char *sa = *(char *const *)field(a, k), *sb = *(char *const *)field(b, k);
        if (!sa || !sb)
            return sa != sb;
        return strcmp(sa, sb) != 0;
    }
    return get_int(a, k) != get_int(b, k);
}

int config_key_copy(struct config *dst, const struct config *src, size_t i)
{
    if (i >= KEY_COUNT)
        return -1;
    const struct cfg_key *k = &keys[i];
    if (k->type == CFG_STRING) {
        const char *from = *(char *const *)field(src, k);
        char *copy = NULL;
        if (from && !(copy = strdup(from)))
            return -1;
        char **to = (char **)field(dst, k);
        free(*to);
        *to = copy;
        return 0;
    }
    set_int(dst, k, get_int(src, k));
    return 0;
}

const char *config_alias_name(size_t i, const char **canonical)
{
    if (i >= ARRAY_SIZE(aliases))
        return NULL;
    if (canonical)
        *canonical = aliases[i].canonical;
    return aliases[i].name;
}

const char *config_ignored_name(size_t i)
{
    return i < ARRAY_SIZE(ignored) ? ignored[i] : NULL;
}
