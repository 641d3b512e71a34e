/*
 * config: the daemon's settings, read from an inih config.ini.
 *
 * Every key is a row of one table (name, type, default, min, max, reloadable). A key may be
 * written as "[section] key" or as pushgo's flat dotted "section.key"; pushgo 1.x names that
 * differ from ours (host, port, push.endpoint, token_key, db.*, ...) are aliases. pushgo keys
 * that have no meaning here are accepted with a warning naming file:line; any other unknown
 * key, and any bad value, is an error naming file:line. A key given twice takes the last
 * value (with a warning); an empty value gives a string key its default. docs/config.md
 * describes the format and every key.
 *
 * The module fills a plain struct and never touches lws, libuv or storage. Not thread-safe:
 * call it from the loop thread (or before it starts).
 */
#ifndef SIMPLEPUSHD_CONFIG_H
#define SIMPLEPUSHD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Durations are stored in milliseconds; 0 means "off" where a key allows it. */
struct config {
    /* [server] */
    char *server_host;              /* "0.0.0.0" */
    int server_port;                /* 8080; 0 = any free port */
    char *server_current_host;      /* NULL/"" = derived from server_host */
    int64_t server_max_connections; /* 0 = derived from the open-files limit */
    int64_t server_max_handshakes;  /* 1024: connections in the gate at once */
    uint64_t server_drain_ms;       /* server.drain_seconds, 10s */
    bool server_demo;               /* serve the demo page at /demo/; false */

    /* [internal] */
    char *internal_host; /* "127.0.0.1" */
    int internal_port;   /* 8081; 0 = any free port */
    char *internal_advertise; /* NULL/"" = internal_host:internal_port */

    /* [ssl] (public listener) */
    char *ssl_certfile; /* NULL = plain HTTP */
    char *ssl_keyfile;

    /* [client] */
    uint64_t client_hello_timeout_ms;     /* 30s; 0 = off */
    uint64_t client_min_ping_interval_ms; /* 20s; 0 = off */
    uint64_t client_resend_interval_ms;   /* 60s; 0 = off */
    uint64_t client_pong_interval_ms;     /* 300s; 0 = off */
    int64_t client_max_message_size;      /* 262144 bytes */
    int64_t client_max_pending_bytes;     /* 65536 bytes */

    /* [endpoint] */
    char *endpoint_url_template;   /* NULL/"" = http(s)://<current_host>:<port>/update/<token> */
    char *endpoint_token_keys;     /* NULL/"" = a random key made at start */
    int64_t endpoint_max_data_len; /* 4096 bytes */
    bool endpoint_cors;            /* false */

    /* [storage] */
    int64_t storage_max_channels;     /* 200 */
    uint64_t storage_timeout_live_ms; /* 259200s */
    uint64_t storage_timeout_del_ms;  /* 86400s */

    /* [memcache] */
    char *memcache_server; /* NULL/"" = in-process store */

    /* [log] */
    int log_level;  /* enum log_level; notice */
    int log_format; /* enum log_format; text */

    /* [heka] */
    bool heka_use;          /* false */
    char *heka_server_addr; /* "127.0.0.1:5565" */
    char *heka_logger_name; /* "simplepushd" */

    /* [metrics] */
    char *metrics_statsd_server; /* NULL/"" = no statsd */
    char *metrics_prefix;        /* "simplepush" */
};

/* Allocates a config holding every key's default. Returns NULL on allocation failure. */
struct config *config_new(void);

/* Frees a config and its strings. Accepts NULL. */
void config_free(struct config *cfg);

/*
 * Reads "path" into cfg (which should come from config_new()). Warnings (pushgo keys that
 * have no meaning here) are logged with file:line. On error returns -1 and writes one line,
 * "file:line: key: reason" (or "file: reason" when the file cannot be read), into err;
 * cfg may then be partly updated and should be freed. Returns 0 on success.
 */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);

/* Parses a duration: "250ms", "20s", "5m", "3h" or bare seconds. Returns 0 or -1. */
int config_parse_duration(const char *s, uint64_t *ms);

/* Parses a boolean: 1/0, true/false, yes/no, on/off (any case). Returns 0 or -1. */
int config_parse_bool(const char *s, bool *out);

/*
 * The key table, for reload and for checks that the documentation lists every key.
 * Keys are numbered 0..config_key_count()-1; names are canonical ("client.hello_timeout").
 */
size_t config_key_count(void);

/* Returns the canonical name of key i, or NULL when i is out of range. */
const char *config_key_name(size_t i);

/* True when the daemon applies a new value of key i on SIGHUP (false: needs a restart). */
bool config_key_reloadable(size_t i);

/* True when key i has different values in a and b (strings compared by content). */
bool config_key_changed(const struct config *a, const struct config *b, size_t i);

/* Copies key i's value from src to dst (strings are duplicated). Returns 0, or -1. */
int config_key_copy(struct config *dst, const struct config *src, size_t i);

/*
 * The other names config_load() accepts, numbered from 0; NULL past the end. Aliases are
 * pushgo 1.x spellings of our keys (*canonical is set to the key's name); ignored names are
 * pushgo keys accepted with a warning ("gcm.*" stands for every name starting "gcm.").
 */
const char *config_alias_name(size_t i, const char **canonical);
const char *config_ignored_name(size_t i);

#endif
