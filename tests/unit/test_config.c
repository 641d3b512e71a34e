/*
 * Unit tests for config: the key table, the value parsers, and config_load() on good and bad
 * files. Bad files are checked against the exact "file:line: key: reason" text. Warnings are
 * read back by pointing stderr at a temporary file while config_load() runs. The last tests
 * check that docs/config.md and the shipped config.ini list every key, so that neither can
 * drift from the table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "simplepushd/config.h"
#include "simplepushd/log.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define REPO_ROOT   SP_TEST_DATA "/../../.."
#define DOCS_PATH   REPO_ROOT "/docs/config.md"
#define SHIPPED_INI REPO_ROOT "/config.ini"

/* Two valid keys (bytes 0..31, and a pattern), and one with non-zero trailing bits. */
#define KEY_A        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
#define KEY_B        "_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-8"
#define KEY_BAD_BITS "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9"

static char tmp_dir[64];
static char tmp_ini[128];

static int group_setup(void **state)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/sp_test_config_XXXXXX");
    if (!mkdtemp(tmp_dir))
        return -1;
    snprintf(tmp_ini, sizeof(tmp_ini), "%s/t.ini", tmp_dir);
    return 0;
}

static int group_teardown(void **state)
{
    unlink(tmp_ini);
    rmdir(tmp_dir);
    return 0;
}

/* Writes content to the scratch file and returns its path. */
static const char *write_tmp(const char *content)
{
    FILE *f = fopen(tmp_ini, "w");
    assert_non_null(f);
    assert_int_equal(fputs(content, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return tmp_ini;
}

/* Reads a whole file into a NUL-terminated heap buffer (NULL if it cannot be read). */
static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    buf[len] = '\0';
    fclose(f);
    return buf;
}

/* Runs config_load() on path with stderr captured; returns its result, the log in *log. */
static int load_captured(struct config *cfg, const char *path, char *err, size_t errlen, char **log)
{
    char logpath[160];
    snprintf(logpath, sizeof(logpath), "%s/stderr.txt", tmp_dir);
    FILE *f = fopen(logpath, "w+");
    assert_non_null(f);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(f), STDERR_FILENO) >= 0);

    int rc = config_load(cfg, path, err, errlen);

    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    fclose(f);
    *log = read_all(logpath);
    assert_non_null(*log);
    unlink(logpath);
    return rc;
}

/* Counts the lines of s that contain needle. */
static int count_lines_with(const char *s, const char *needle)
{
    int n = 0;
    for (const char *line = s; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        snprintf(buf, sizeof(buf), "%.*s", (int)len, line);
        if (strstr(buf, needle))
            n++;
        line += len + (end ? 1 : 0);
    }
    return n;
}

static size_t key_index(const char *name)
{
    for (size_t i = 0; i < config_key_count(); i++)
        if (!strcmp(config_key_name(i), name))
            return i;
    fail_msg("no key %s", name);
    return 0;
}

/* ---- defaults and the key table ---- */

static void test_defaults(void **state)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    assert_string_equal(cfg->server_host, "0.0.0.0");
    assert_int_equal(cfg->server_port, 8080);
    assert_null(cfg->server_current_host);
    assert_int_equal(cfg->server_max_connections, 0);
    assert_int_equal(cfg->server_max_handshakes, 1024);
    assert_int_equal(cfg->server_drain_ms, 10000);
    assert_string_equal(cfg->internal_host, "127.0.0.1");
    assert_int_equal(cfg->internal_port, 8081);
    assert_null(cfg->ssl_certfile);
    assert_null(cfg->ssl_keyfile);
    assert_int_equal(cfg->client_hello_timeout_ms, 30000);
    assert_int_equal(cfg->client_min_ping_interval_ms, 20000);
    assert_int_equal(cfg->client_resend_interval_ms, 60000);
    assert_int_equal(cfg->client_pong_interval_ms, 300000);
    assert_int_equal(cfg->client_max_message_size, 262144);
    assert_int_equal(cfg->client_max_pending_bytes, 65536);
    assert_null(cfg->endpoint_url_template);
    assert_null(cfg->endpoint_token_keys);
    assert_int_equal(cfg->endpoint_max_data_len, 4096);
    assert_false(cfg->endpoint_cors);
    assert_int_equal(cfg->storage_max_channels, 200);
    assert_int_equal(cfg->storage_timeout_live_ms, 259200000ULL);
    assert_int_equal(cfg->storage_timeout_del_ms, 86400000ULL);
    assert_null(cfg->memcache_server);
    assert_int_equal(cfg->log_level, LOG_LEVEL_NOTICE);
    assert_int_equal(cfg->log_format, LOG_FORMAT_TEXT);
    config_free(cfg);
    config_free(NULL);
}

static void test_key_table(void **state)
{
    size_t n = config_key_count();
    assert_int_equal(n, 33);
    for (size_t i = 0; i < n; i++) {
        const char *name = config_key_name(i);
        assert_non_null(name);
        assert_non_null(strchr(name, '.'));
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(name, config_key_name(j));
    }
    assert_null(config_key_name(n));
    assert_false(config_key_reloadable(n));

    /* SPEC §12: log (and its heka sink), metrics targets, token keys, client limits and
     * max_connections (and max_handshakes) reload; listeners and storage do not. */
    static const char *const reloadable[] = {
        "log.level",
        "log.format",
        "endpoint.token_keys",
        "client.hello_timeout",
        "client.min_ping_interval",
        "client.resend_interval",
        "client.pong_interval",
        "client.max_message_size",
        "client.max_pending_bytes",
        "server.max_connections",
        "server.max_handshakes",
        "heka.use",
        "heka.server_addr",
        "heka.logger_name",
        "metrics.statsd_server",
        "metrics.prefix",
    };
    for (size_t i = 0; i < n; i++) {
        bool want = false;
        for (size_t j = 0; j < ARRAY_SIZE(reloadable); j++)
            want = want || !strcmp(config_key_name(i), reloadable[j]);
        assert_int_equal(config_key_reloadable(i), want);
    }

    const char *canonical = NULL;
    size_t aliases = 0;
    for (const char *a; (a = config_alias_name(aliases, &canonical)); aliases++) {
        assert_non_null(canonical);
        key_index(canonical);
    }
    assert_true(aliases >= 10);
    assert_null(config_alias_name(aliases, NULL));
    size_t ignored = 0;
    while (config_ignored_name(ignored))
        ignored++;
    assert_true(ignored >= 30);
}

static void test_key_changed(void **state)
{
    struct config *a = config_new(), *b = config_new();
    char err[256];
    assert_non_null(a);
    assert_non_null(b);
    for (size_t i = 0; i < config_key_count(); i++)
        assert_false(config_key_changed(a, b, i));
    assert_false(config_key_changed(a, b, config_key_count()));

    /* good_sections.ini sets every key to a value other than its default. */
    assert_int_equal(config_load(b, SP_TEST_DATA "/good_sections.ini", err, sizeof(err)), 0);
    for (size_t i = 0; i < config_key_count(); i++) {
        if (!config_key_changed(a, b, i))
            fail_msg("%s not changed by good_sections.ini", config_key_name(i));
        assert_true(config_key_changed(b, a, i));
    }
    config_free(a);
    config_free(b);
}

/* ---- value parsers ---- */

static void test_parse_duration(void **state)
{
    static const struct {
        const char *s;
        uint64_t ms;
    } good[] = {
        {"0", 0},           {"1", 1000},
        {"20", 20000},      {"1.5", 1500},
        {"007", 7000},      {"0ms", 0},
        {"250ms", 250},     {"20s", 20000},
        {"0.5s", 500},      {"2.5ms", 2},
        {"0.0001s", 0},     {"1.0000000001s", 1000},
        {"5m", 300000},     {"3h", 10800000},
        {"1.5h", 5400000},  {"1h30m", 5400000},
        {"1m30s", 90000},   {"1h1m1s1ms", 3661001},
        {"30s1h", 3630000}, {"18446744073709551615ms", UINT64_MAX},
    };
    static const char *const bad[] = {
        "",
        "abc",
        "s",
        "ms",
        "-1",
        "-5s",
        "+5s",
        "5 s",
        " 5s",
        "5s ",
        "5S",
        "5H",
        "5d",
        "5us",
        "5sec",
        "5mss",
        "5hm",
        ".5s",
        "5.s",
        "5.",
        "1h30",
        "5ms5",
        "1e3",
        "0x10",
        "1,5s",
        "18446744073709551616ms",
        "18446744073709551616",
        "5124095576030432h",
        "99999999999999999999999h",
        "10000000000000000000s1s",
    };

    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        uint64_t ms = 12345;
        if (config_parse_duration(good[i].s, &ms) != 0)
            fail_msg("\"%s\" rejected", good[i].s);
        if (ms != good[i].ms)
            fail_msg("\"%s\" gave %llu, not %llu", good[i].s, (unsigned long long)ms,
                     (unsigned long long)good[i].ms);
    }
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        uint64_t ms = 12345;
        if (config_parse_duration(bad[i], &ms) != -1)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_int_equal(ms, 12345);
    }
    uint64_t ms = 1;
    assert_int_equal(config_parse_duration(NULL, &ms), -1);
}

static void test_parse_bool(void **state)
{
    static const struct {
        const char *s;
        bool v;
    } good[] = {
        {"1", true},      {"0", false},   {"true", true}, {"false", false}, {"TRUE", true},
        {"False", false}, {"yes", true},  {"NO", false},  {"Yes", true},    {"no", false},
        {"on", true},     {"OFF", false}, {"oN", true},   {"off", false},
    };
    static const char *const bad[] = {
        "", "2", "-1", "t", "f", "y", "n", "enable", " true", "true ", "10", "00", "truex", "of",
    };

    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        bool v = !good[i].v;
        if (config_parse_bool(good[i].s, &v) != 0)
            fail_msg("\"%s\" rejected", good[i].s);
        assert_int_equal(v, good[i].v);
    }
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        bool v = true;
        if (config_parse_bool(bad[i], &v) != -1)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_true(v);
    }
    bool v;
    assert_int_equal(config_parse_bool(NULL, &v), -1);
}

/* ---- good files ---- */

static void check_good_values(const struct config *cfg)
{
    assert_string_equal(cfg->server_host, "192.0.2.1");
    assert_int_equal(cfg->server_port, 9090);
    assert_string_equal(cfg->server_current_host, "push.example.com");
    assert_int_equal(cfg->server_max_connections, 5);
    assert_int_equal(cfg->server_max_handshakes, 64);
    assert_int_equal(cfg->server_drain_ms, 2500);
    assert_string_equal(cfg->internal_host, "127.0.0.2");
    assert_int_equal(cfg->internal_port, 0);
    assert_string_equal(cfg->ssl_certfile, "/etc/ssl/push.pem");
    assert_string_equal(cfg->ssl_keyfile, "/etc/ssl/push.key");
    assert_int_equal(cfg->client_hello_timeout_ms, 1000);
    assert_int_equal(cfg->client_min_ping_interval_ms, 0);
    assert_int_equal(cfg->client_resend_interval_ms, 300000);
    assert_int_equal(cfg->client_pong_interval_ms, 7200000);
    assert_int_equal(cfg->client_max_message_size, 4096);
    assert_int_equal(cfg->client_max_pending_bytes, 16777216);
    assert_string_equal(cfg->endpoint_url_template, "https://<current_host>/update/<token>");
    assert_non_null(strstr(cfg->endpoint_token_keys, KEY_A));
    assert_non_null(strstr(cfg->endpoint_token_keys, KEY_B));
    assert_int_equal(cfg->endpoint_max_data_len, 0);
    assert_true(cfg->endpoint_cors);
    assert_int_equal(cfg->storage_max_channels, 3);
    assert_int_equal(cfg->storage_timeout_live_ms, 2592000000ULL);
    assert_int_equal(cfg->storage_timeout_del_ms, 1000);
    assert_string_equal(cfg->memcache_server, "10.0.0.1:11211,10.0.0.2:11211");
    assert_int_equal(cfg->log_level, LOG_LEVEL_DEBUG);
    assert_int_equal(cfg->log_format, LOG_FORMAT_JSON);
}

static void test_good_sections(void **state)
{
    struct config *cfg = config_new();
    char err[256] = "x", *log;
    assert_int_equal(load_captured(cfg, SP_TEST_DATA "/good_sections.ini", err, sizeof(err), &log),
                     0);
    assert_string_equal(err, "");
    assert_string_equal(log, "");
    check_good_values(cfg);
    free(log);
    config_free(cfg);
}

static void test_good_flat(void **state)
{
    struct config *flat = config_new(), *sect = config_new();
    char err[256], *log;
    assert_int_equal(load_captured(flat, SP_TEST_DATA "/good_flat.ini", err, sizeof(err), &log), 0);
    assert_string_equal(log, "");
    free(log);
    check_good_values(flat);
    assert_int_equal(config_load(sect, SP_TEST_DATA "/good_sections.ini", err, sizeof(err)), 0);
    for (size_t i = 0; i < config_key_count(); i++)
        if (config_key_changed(flat, sect, i) && strcmp(config_key_name(i), "endpoint.token_keys"))
            fail_msg("%s differs between the flat and the sections file", config_key_name(i));
    config_free(flat);
    config_free(sect);
}

static void test_pushgo_file(void **state)
{
    struct config *cfg = config_new();
    char err[256], *log;
    const char *path = SP_TEST_DATA "/pushgo.ini";
    assert_int_equal(load_captured(cfg, path, err, sizeof(err), &log), 0);

    assert_string_equal(cfg->server_host, "0.0.0.0");
    assert_int_equal(cfg->server_port, 8090);
    assert_int_equal(cfg->server_max_connections, 1000);
    assert_string_equal(cfg->endpoint_url_template, "http://<current_host>/update/<token>");
    assert_int_equal(cfg->storage_timeout_live_ms, 259200000ULL);
    assert_int_equal(cfg->storage_timeout_del_ms, 3600000);
    assert_int_equal(cfg->storage_max_channels, 50);
    assert_string_equal(cfg->memcache_server, "127.0.0.1:11211");
    assert_int_equal(cfg->client_min_ping_interval_ms, 10000);
    assert_int_equal(cfg->client_hello_timeout_ms, 15000);
    assert_string_equal(cfg->server_current_host, "push1.example.com");
    /* pushgo 1.1's documented statsd key sets ours; heka.use = 0 is our default too. */
    assert_string_equal(cfg->metrics_statsd_server, "localhost:8125");
    assert_false(cfg->heka_use);
    /* pushgo's token_key is not one of our keys: warned about, not used. */
    assert_null(cfg->endpoint_token_keys);

    /* One warning per pushgo-only key, each naming file:line. */
    static const char *const warned[] = {
        ":5: wsport: ignored",
        ":7: push.long_pongs: ignored",
        ":8: logger.enable: ignored",
        ":12: db.timeout_reg: ignored",
        ":16: memcache.pool_size: ignored",
        ":17: memcache.recv_timeout: ignored",
        ":22: shard.use_aws_host: ignored",
        ":23: gcm.api_key: ignored",
    };
    for (size_t i = 0; i < ARRAY_SIZE(warned); i++) {
        char want[200];
        snprintf(want, sizeof(want), "%s%s (a pushgo setting with no use here)", path, warned[i]);
        if (count_lines_with(log, want) != 1)
            fail_msg("no warning \"%s\" in:\n%s", want, log);
    }
    char want[300];
    snprintf(want, sizeof(want),
             "<4>config: %s:20: token_key: key 1 is not 32 bytes of base64url (43 characters of "
             "A-Z a-z 0-9 - _, no '=' padding) (make one with simplepushd --genkey); ignored (a "
             "pushgo value with no use here)\n",
             path);
    assert_non_null(strstr(log, want));
    assert_int_equal(count_lines_with(log, "<4>config: "), ARRAY_SIZE(warned) + 1);
    free(log);
    config_free(cfg);
}

static void test_aliases(void **state)
{
    /* A valid non-default value for each key that has an alias. */
    static const struct {
        const char *key;
        const char *value;
    } values[] = {
        {"server.host", "10.1.2.3"},
        {"server.port", "1234"},
        {"server.max_connections", "77"},
        {"server.current_host", "node7"},
        {"endpoint.url_template", "https://push.example.com/update/<token>"},
        {"endpoint.token_keys", KEY_A},
        {"endpoint.cors", "true"},
        {"storage.max_channels", "9"},
        {"storage.timeout_live", "100"},
        {"storage.timeout_del", "5m"},
        {"metrics.statsd_server", "127.0.0.1:9125"},
        {"metrics.prefix", "push"},
    };
    const char *alias, *canonical;

    for (size_t i = 0; (alias = config_alias_name(i, &canonical)); i++) {
        const char *value = NULL;
        for (size_t j = 0; j < ARRAY_SIZE(values); j++)
            if (!strcmp(values[j].key, canonical))
                value = values[j].value;
        if (!value)
            fail_msg("no test value for %s", canonical);

        char content[256], err[256], *log;
        snprintf(content, sizeof(content), "%s = %s\n", alias, value);
        struct config *def = config_new(), *cfg = config_new();
        if (load_captured(cfg, write_tmp(content), err, sizeof(err), &log) != 0)
            fail_msg("%s: %s", alias, err);
        assert_string_equal(log, "");
        size_t k = key_index(canonical);
        for (size_t j = 0; j < config_key_count(); j++)
            assert_int_equal(config_key_changed(def, cfg, j), j == k);
        free(log);
        config_free(def);
        config_free(cfg);
    }
}

static void test_ignored_keys(void **state)
{
    /* Every ignored name loads with a warning, in flat and in section form. */
    const char *name;
    for (size_t i = 0; (name = config_ignored_name(i)); i++) {
        char content[256], err[256], want[320], *log;
        /* "gcm.*" is tried as "gcm.x". */
        char flat[128];
        snprintf(flat, sizeof(flat), "%s", name);
        char *star = strchr(flat, '*');
        if (star)
            *star = 'x';
        const char *dot = strchr(flat, '.');
        if (dot)
            snprintf(content, sizeof(content), "%s = 1\n[%.*s]\n%s = 2\n", flat, (int)(dot - flat),
                     flat, dot + 1);
        else
            snprintf(content, sizeof(content), "%s = 1\n", flat);

        struct config *def = config_new(), *cfg = config_new();
        if (load_captured(cfg, write_tmp(content), err, sizeof(err), &log) != 0)
            fail_msg("%s: %s", name, err);
        snprintf(want, sizeof(want), "%s:1: %s: ignored", tmp_ini, flat);
        assert_int_equal(count_lines_with(log, want), 1);
        if (dot) {
            snprintf(want, sizeof(want), "%s:3: %s: ignored", tmp_ini, flat);
            assert_int_equal(count_lines_with(log, want), 1);
        }
        for (size_t j = 0; j < config_key_count(); j++)
            assert_false(config_key_changed(def, cfg, j));
        free(log);
        config_free(def);
        config_free(cfg);
    }
}

/* Comments, whitespace, CRLF, a BOM, "name: value", key case, inline ';' comments. */
static void test_syntax_forms(void **state)
{
    static const char content[] = "\xEF\xBB\xBF; a byte order mark, then a comment\r\n"
                                  "# hash comment\r\n"
                                  "/ pushgo's slash comment\r\n"
                                  "   ; indented comment\r\n"
                                  "\r\n"
                                  "[ server ]\r\n"
                                  "\tPORT = 1234 ; an inline comment after whitespace\r\n"
                                  "    host: 10.0.0.1\r\n"
                                  "    current_host   =   node.example.com   \r\n"
                                  "[Endpoint]\n"
                                  "url_template = http://h/u/<token>;not-a-comment\n"
                                  "[log]\n"
                                  "level = Warning\n"
                                  "[]\n"
                                  "Client.Hello_Timeout = 2s\n";
    struct config *cfg = config_new();
    char err[256], *log;
    if (load_captured(cfg, write_tmp(content), err, sizeof(err), &log) != 0)
        fail_msg("%s", err);
    assert_string_equal(log, "");
    assert_int_equal(cfg->server_port, 1234);
    assert_string_equal(cfg->server_host, "10.0.0.1");
    assert_string_equal(cfg->server_current_host, "node.example.com");
    assert_string_equal(cfg->endpoint_url_template, "http://h/u/<token>;not-a-comment");
    assert_int_equal(cfg->log_level, LOG_LEVEL_WARNING);
    assert_int_equal(cfg->client_hello_timeout_ms, 2000);
    free(log);
    config_free(cfg);
}

/* The last value wins, with a warning; an empty string value means the key's default. */
static void test_repeat_and_empty(void **state)
{
    static const char content[] = "port = 1\n"
                                  "[server]\n"
                                  "port = 2\n"
                                  "host = 10.9.9.9\n"
                                  "current_host = x\n"
                                  "host =\n"
                                  "current_host =\n"
                                  "[memcache]\n"
                                  "server = 127.0.0.1:11211\n"
                                  "server = ; empty once the comment is gone\n"
                                  "[endpoint]\n"
                                  "url_template =\n";
    struct config *cfg = config_new();
    char err[256], *log;
    if (load_captured(cfg, write_tmp(content), err, sizeof(err), &log) != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg->server_port, 2);
    assert_string_equal(cfg->server_host, "0.0.0.0");
    assert_null(cfg->server_current_host);
    assert_null(cfg->memcache_server);
    assert_null(cfg->endpoint_url_template);

    static const char *const warned[] = {
        ":3: server.port: given again (line 1); the last value wins",
        ":6: server.host: given again (line 4); the last value wins",
        ":7: server.current_host: given again (line 5); the last value wins",
        ":10: memcache.server: given again (line 9); the last value wins",
    };
    for (size_t i = 0; i < ARRAY_SIZE(warned); i++) {
        char want[256];
        snprintf(want, sizeof(want), "<4>config: %s%s\n", tmp_ini, warned[i]);
        if (!strstr(log, want))
            fail_msg("no warning \"%s\" in:\n%s", want, log);
    }
    assert_int_equal(count_lines_with(log, "<4>"), ARRAY_SIZE(warned));
    free(log);
    config_free(cfg);
}

/* Boundaries of every range are accepted. */
static void test_ranges_accepted(void **state)
{
    static const char *const lines[] = {
        "server.port = 0",
        "server.port = 65535",
        "internal.port = 65535",
        "internal.advertise = 10.0.0.5:8081",
        "internal.advertise = [fd00::5]:1",
        "server.max_connections = 0",
        "server.max_connections = 1",
        "server.max_connections = 10000000",
        "server.max_handshakes = 1",
        "server.max_handshakes = 1000000",
        "server.drain_seconds = 0",
        "server.drain_seconds = 1h",
        "client.hello_timeout = 0",
        "client.hello_timeout = 1s",
        "client.hello_timeout = 3600",
        "client.min_ping_interval = 1000ms",
        "client.resend_interval = 24h",
        "client.pong_interval = 1",
        "client.max_message_size = 16777216",
        "client.max_pending_bytes = 4096",
        "endpoint.max_data_len = 65536",
        "endpoint.cors = off",
        "storage.max_channels = 1",
        "storage.max_channels = 100000",
        "storage.timeout_live = 1",
        "storage.timeout_del = 720h",
        "log.level = error",
        "log.level = info",
        "log.level = NOTICE",
        "log.format = Text",
        "endpoint.token_keys = " KEY_A " , " KEY_B "," KEY_A "," KEY_B,
        "endpoint.url_template = http://<current_host>:<port>/update/<token>",
    };
    for (size_t i = 0; i < ARRAY_SIZE(lines); i++) {
        char content[256], err[256];
        snprintf(content, sizeof(content), "%s\n", lines[i]);
        struct config *cfg = config_new();
        if (config_load(cfg, write_tmp(content), err, sizeof(err)) != 0)
            fail_msg("\"%s\" rejected: %s", lines[i], err);
        config_free(cfg);
    }
}

/* ---- bad files ---- */

static void test_bad_files(void **state)
{
    /* expect is the error after the file name. */
    static const struct {
        const char *content;
        const char *expect;
    } cases[] = {
        {"[server]\nprot = 8080\n", ":2: unknown key \"server.prot\""},
        {"hello = 1\n", ":1: unknown key \"hello\""},
        {"[gcmx]\napi_key = 1\n", ":2: unknown key \"gcmx.api_key\""},
        {"shard.scheme2 = 1\n", ":1: unknown key \"shard.scheme2\""},
        {"[client]\nhello_timeout = abc\n", ":2: client.hello_timeout: invalid duration \"abc\""},
        {"client.hello_timeout = -5s\n", ":1: client.hello_timeout: invalid duration \"-5s\""},
        {"client.hello_timeout = 5 s\n", ":1: client.hello_timeout: invalid duration \"5 s\""},
        {"client.hello_timeout = 5d\n", ":1: client.hello_timeout: invalid duration \"5d\""},
        {"client.hello_timeout =\n", ":1: client.hello_timeout: empty value"},
        {"client.hello_timeout = 500ms\n",
         ":1: client.hello_timeout: 500ms is out of range 0 or 1s..1h"},
        {"client.hello_timeout = 2h\n", ":1: client.hello_timeout: 2h is out of range 0 or 1s..1h"},
        {"client.hello_timeout = 99999999999999999999s\n",
         ":1: client.hello_timeout: 99999999999999999999s is out of range 0 or 1s..1h"},
        {"client.hello_timeout = 18446744073709551615ms\n",
         ":1: client.hello_timeout: 18446744073709551615ms is out of range 0 or 1s..1h"},
        {"client.pong_interval = 86401\n",
         ":1: client.pong_interval: 86401 is out of range 0 or 1s..24h"},
        {"server.drain_seconds = 3601\n", ":1: server.drain_seconds: 3601 is out of range 0s..1h"},
        {"storage.timeout_live = 0\n", ":1: storage.timeout_live: 0 is out of range 1s..720h"},
        {"db.timeout_del = 2592001\n", ":1: db.timeout_del: 2592001 is out of range 1s..720h"},
        {"server.port = 70000\n", ":1: server.port: 70000 is out of range 0..65535"},
        {"server.port = -1\n", ":1: server.port: -1 is out of range 0..65535"},
        {"port = 99999999999999999999\n",
         ":1: port: 99999999999999999999 is out of range 0..65535"},
        {"server.port = -99999999999999999999\n",
         ":1: server.port: -99999999999999999999 is out of range 0..65535"},
        {"server.port = 80a\n", ":1: server.port: invalid integer \"80a\""},
        {"internal.advertise = node1:8081\n",
         ":1: internal.advertise: must be IPv4:port or [IPv6]:port"},
        {"internal.advertise = 10.0.0.5\n",
         ":1: internal.advertise: must be IPv4:port or [IPv6]:port"},
        {"internal.advertise = 10.0.0.5:0\n",
         ":1: internal.advertise: must be IPv4:port or [IPv6]:port"},
        {"internal.advertise = fd00::5:8081\n",
         ":1: internal.advertise: must be IPv4:port or [IPv6]:port"},
        {"server.port = 0x50\n", ":1: server.port: invalid integer \"0x50\""},
        {"server.port = +80\n", ":1: server.port: invalid integer \"+80\""},
        {"server.port = -\n", ":1: server.port: invalid integer \"-\""},
        {"server.port = 8080 # http\n", ":1: server.port: invalid integer \"8080 # http\""},
        {"server.port =\n", ":1: server.port: empty value"},
        {"server.max_connections = -1\n",
         ":1: server.max_connections: -1 is out of range 0 or 1..10000000"},
        {"max_connections = 10000001\n",
         ":1: max_connections: 10000001 is out of range 0 or 1..10000000"},
        {"server.max_handshakes = 0\n", ":1: server.max_handshakes: 0 is out of range 1..1000000"},
        {"server.max_handshakes = 1000001\n",
         ":1: server.max_handshakes: 1000001 is out of range 1..1000000"},
        {"client.max_message_size = 64k\n", ":1: client.max_message_size: invalid size \"64k\""},
        {"client.max_message_size = 4095\n",
         ":1: client.max_message_size: 4095 is out of range 4096..16777216"},
        {"client.max_pending_bytes = 16777217\n",
         ":1: client.max_pending_bytes: 16777217 is out of range 4096..16777216"},
        {"endpoint.max_data_len = 65537\n",
         ":1: endpoint.max_data_len: 65537 is out of range 0..65536"},
        {"storage.max_channels = 0\n", ":1: storage.max_channels: 0 is out of range 1..100000"},
        {"db.max_channels = 100001\n", ":1: db.max_channels: 100001 is out of range 1..100000"},
        {"endpoint.cors = maybe\n",
         ":1: endpoint.cors: invalid boolean \"maybe\" (1/0, true/false, yes/no, on/off)"},
        {"enable_cors = 2\n",
         ":1: enable_cors: invalid boolean \"2\" (1/0, true/false, yes/no, on/off)"},
        {"endpoint.cors =\n", ":1: endpoint.cors: empty value"},
        {"log.level = loud\n",
         ":1: log.level: invalid value \"loud\" (error|warning|notice|info|debug)"},
        {"log.format = xml\n", ":1: log.format: invalid value \"xml\" (text|json)"},
        {"log.level =\n", ":1: log.level: empty value"},
        {"endpoint.url_template = http://example.com/update/\n",
         ":1: endpoint.url_template: must contain <token>"},
        {"push.endpoint = http://example.com/\n", ":1: push.endpoint: must contain <token>"},
        {"pushEndpoint = ftp://example.com/<token>\n",
         ":1: pushEndpoint: must start with http:// or https://"},
        {"endpoint.url_template = <token>\n",
         ":1: endpoint.url_template: must start with http:// or https://"},
        {"endpoint.token_keys = abc\n", ":1: endpoint.token_keys: key 1 is not 32 bytes of "
                                        "base64url (43 characters of A-Z a-z 0-9 - _, "
                                        "no '=' padding) (make one with simplepushd --genkey)"},
        {"endpoint.token_keys = " KEY_A "," KEY_BAD_BITS "\n",
         ":1: endpoint.token_keys: key 2 is not 32 bytes of base64url (43 characters of A-Z a-z "
         "0-9 - _, "
         "no '=' padding) (make one with simplepushd --genkey)"},
        {"endpoint.token_keys = " KEY_A "=\n",
         ":1: endpoint.token_keys: key 1 is not 32 bytes of base64url (43 characters of A-Z a-z "
         "0-9 - _, "
         "no '=' padding) (make one with simplepushd --genkey)"},
        {"endpoint.token_keys = " KEY_A ",," KEY_B "\n",
         ":1: endpoint.token_keys: key 2 is empty (make one with simplepushd --genkey)"},
        {"endpoint.token_keys = " KEY_A ",\n",
         ":1: endpoint.token_keys: key 2 is empty (make one with simplepushd --genkey)"},
        {"endpoint.token_keys = " KEY_A " " KEY_B "\n",
         ":1: endpoint.token_keys: key 1 is not 32 bytes of base64url (43 characters of A-Z a-z "
         "0-9 - _, "
         "no '=' padding) (make one with simplepushd --genkey)"},
        /* A section name cut short must not become one of ours (found reading the code). */
        {"[server                                                            junk]\nport = 1\n",
         ":2: unknown key (section or key name too long)"},
        {"[heka]\nserver_addr = nohost\n", ":2: heka.server_addr: \"nohost\" is not host:port"},
        {"metrics.statsd_server = h:70000\n",
         ":1: metrics.statsd_server: \"h:70000\" is not host:port"},
        {"metrics.statsd_server = ::1:8125\n",
         ":1: metrics.statsd_server: \"::1:8125\" is not host:port"},
        {"[ssl]\ncertfile = /c\n",
         ":2: ssl.certfile: ssl.certfile and ssl.keyfile must be set together"},
        {"ssl.keyfile = /k\n",
         ":1: ssl.keyfile: ssl.certfile and ssl.keyfile must be set together"},
        {"ssl.certfile = /c\nssl.keyfile = /k\nssl.keyfile =\n",
         ":3: ssl.keyfile: ssl.certfile and ssl.keyfile must be set together"},
        {"ssl.keyfile = /k\nport = 1\nssl.certfile = /c\nssl.certfile =\n",
         ":4: ssl.certfile: ssl.certfile and ssl.keyfile must be set together"},
        {"[server\nport = 1\n", ":1: syntax error"},
        {"port 8080\n", ":1: syntax error"},
        {"; fine\n\nport = 1\n= 2\n", ":4: syntax error"},
        {"a b\nserver.port = x\n", ":1: syntax error"},
        {"server.port = x\na b\n", ":1: server.port: invalid integer \"x\""},
        {"# one\n\n; three\nport = 1\nbogus = 1\nport = x\n", ":5: unknown key \"bogus\""},
        {"[server]\n  host = 10.0.0.1\n  port = x\n", ":3: server.port: invalid integer \"x\""},
        {"ssl.certfile = /c\nserver.port = x\n", ":2: server.port: invalid integer \"x\""},
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct config *cfg = config_new();
        char err[512], want[512], *log;
        const char *path = write_tmp(cases[i].content);
        if (load_captured(cfg, path, err, sizeof(err), &log) != -1)
            fail_msg("accepted:\n%s", cases[i].content);
        snprintf(want, sizeof(want), "%s%s", path, cases[i].expect);
        if (strcmp(err, want))
            fail_msg("for:\n%s\ngot  \"%s\"\nwant \"%s\"", cases[i].content, err, want);
        free(log);
        config_free(cfg);
    }
}

/* Warnings are logged for the lines before the first error, and for the whole file when the
 * error is found after reading it. */
static void test_warnings_and_errors(void **state)
{
    static const struct {
        const char *content;
        const char *expect;
        const char *warned;     /* must be logged */
        const char *not_warned; /* must not be */
    } cases[] = {
        {"wsport = 1\nport = 1\na b\nport = 2\nwshost = x\n", ":3: syntax error",
         ":1: wsport: ignored", ":4: server.port"},
        {"wsport = 1\nport = 1\na b\nport = 2\nwshost = x\n", ":3: syntax error",
         ":1: wsport: ignored", ":5: wshost"},
        {"wsport = 1\nport = x\nwshost = 1\n", ":2: port: invalid integer \"x\"",
         ":1: wsport: ignored", ":3: wshost"},
        {"ssl.certfile = /c\nwsport = 1\n",
         ":1: ssl.certfile: ssl.certfile and ssl.keyfile must be set together",
         ":2: wsport: ignored", ":1: ssl"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct config *cfg = config_new();
        char err[256], want[256], *log;
        const char *path = write_tmp(cases[i].content);
        assert_int_equal(load_captured(cfg, path, err, sizeof(err), &log), -1);
        snprintf(want, sizeof(want), "%s%s", path, cases[i].expect);
        assert_string_equal(err, want);
        snprintf(want, sizeof(want), "%s%s", path, cases[i].warned);
        if (count_lines_with(log, want) != 1)
            fail_msg("no \"%s\" in:\n%s", want, log);
        snprintf(want, sizeof(want), "%s%s", path, cases[i].not_warned);
        if (count_lines_with(log, want) != 0)
            fail_msg("\"%s\" in:\n%s", want, log);
        free(log);
        config_free(cfg);
    }
}

static void test_bad_fixtures(void **state)
{
    static const struct {
        const char *file;
        const char *expect;
    } cases[] = {
        {"unknown_key.ini", ":3: unknown key \"server.prot\""},
        {"syntax_error.ini", ":4: syntax error"},
        {"ssl_half.ini", ":2: ssl.certfile: ssl.certfile and ssl.keyfile must be set together"},
        {"no_such_file.ini", ": No such file or directory"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char path[512], want[600], err[600];
        snprintf(path, sizeof(path), "%s/%s", SP_TEST_DATA, cases[i].file);
        snprintf(want, sizeof(want), "%s%s", path, cases[i].expect);
        struct config *cfg = config_new();
        assert_int_equal(config_load(cfg, path, err, sizeof(err)), -1);
        assert_string_equal(err, want);
        config_free(cfg);
    }
}

static void test_unreadable(void **state)
{
    struct config *cfg = config_new();
    char err[256], want[256];

    /* A directory opens but cannot be read. */
    assert_int_equal(config_load(cfg, tmp_dir, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: Is a directory", tmp_dir);
    assert_string_equal(err, want);

    /* No error buffer, or a short one. */
    assert_int_equal(config_load(cfg, "/nonexistent/config.ini", NULL, 0), -1);
    assert_int_equal(config_load(cfg, write_tmp("bogus = 1\n"), NULL, 0), -1);
    assert_int_equal(config_load(cfg, write_tmp("port = 1\n"), NULL, 0), 0);
    char small[8];
    assert_int_equal(config_load(cfg, "/nonexistent/config.ini", small, sizeof(small)), -1);
    assert_string_equal(small, "/nonexi");

    /* An empty file is a valid file. */
    assert_int_equal(config_load(cfg, write_tmp(""), err, sizeof(err)), 0);
    assert_string_equal(err, "");
    config_free(cfg);
}

static void test_long_line(void **state)
{
    char content[1200], err[256], want[256];
    struct config *cfg = config_new();

    /* A line that fits inih's buffer (199 characters on Debian) is fine. */
    snprintf(content, sizeof(content), "server.current_host = %0*d\n", 150, 7);
    assert_int_equal(config_load(cfg, write_tmp(content), err, sizeof(err)), 0);
    assert_int_equal(strlen(cfg->server_current_host), 150);

    /* A longer one is an error, not silently split into two lines. */
    snprintf(content, sizeof(content), "; comment\nserver.current_host = %0*d\nport = 1\n", 1000,
             7);
    assert_int_equal(config_load(cfg, write_tmp(content), err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:2: line too long (more than ", tmp_ini);
    assert_memory_equal(err, want, strlen(want));
    assert_string_equal(err + strlen(err) - strlen(" characters)"), " characters)");
    config_free(cfg);
}

/* ---- documentation and the shipped config.ini ---- */

static void test_docs_list_every_name(void **state)
{
    char *doc = read_all(DOCS_PATH);
    if (!doc)
        fail_msg("cannot read %s", DOCS_PATH);
    char want[128];
    const char *name, *canonical;
    for (size_t i = 0; i < config_key_count(); i++) {
        snprintf(want, sizeof(want), "`%s`", config_key_name(i));
        if (!strstr(doc, want))
            fail_msg("docs/config.md does not list %s", want);
    }
    for (size_t i = 0; (name = config_alias_name(i, &canonical)); i++) {
        snprintf(want, sizeof(want), "`%s`", name);
        if (!strstr(doc, want))
            fail_msg("docs/config.md does not list the alias %s", want);
    }
    for (size_t i = 0; (name = config_ignored_name(i)); i++) {
        snprintf(want, sizeof(want), "`%s`", name);
        if (!strstr(doc, want))
            fail_msg("docs/config.md does not list the ignored key %s", want);
    }
    free(doc);
}

/* The shipped config.ini loads without a warning, sets defaults, and shows every key. */
static void test_shipped_config_ini(void **state)
{
    struct config *def = config_new(), *cfg = config_new();
    char err[256], *log;
    if (load_captured(cfg, SHIPPED_INI, err, sizeof(err), &log) != 0)
        fail_msg("%s", err);
    assert_string_equal(log, "");
    free(log);
    /* The quick start's config shows the demo page (the packaged one does not). */
    assert_true(cfg->server_demo);
    cfg->server_demo = def->server_demo;
    for (size_t i = 0; i < config_key_count(); i++)
        if (config_key_changed(def, cfg, i))
            fail_msg("config.ini sets %s to a value other than its default", config_key_name(i));
    config_free(def);
    config_free(cfg);

    /* Every key appears as "name =" under its [section], set or commented out. */
    char *ini = read_all(SHIPPED_INI);
    assert_non_null(ini);
    bool seen[64] = {false};
    assert_true(config_key_count() <= ARRAY_SIZE(seen));
    char section[64] = "";
    for (char *line = strtok(ini, "\n"); line; line = strtok(NULL, "\n")) {
        char key[160], word[64];
        if (sscanf(line, "[%63[^]]]", section) == 1)
            continue;
        const char *p = line;
        if (*p == ';' || *p == '#')
            p++;
        while (*p == ' ')
            p++;
        if (sscanf(p, "%63[a-z_] =", word) != 1 || !strstr(p, " ="))
            continue;
        snprintf(key, sizeof(key), "%s.%s", section, word);
        for (size_t i = 0; i < config_key_count(); i++)
            if (!strcmp(config_key_name(i), key))
                seen[i] = true;
    }
    for (size_t i = 0; i < config_key_count(); i++)
        if (!seen[i])
            fail_msg("config.ini does not show %s", config_key_name(i));
    free(ini);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_key_table),
        cmocka_unit_test(test_key_changed),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_good_sections),
        cmocka_unit_test(test_good_flat),
        cmocka_unit_test(test_pushgo_file),
        cmocka_unit_test(test_aliases),
        cmocka_unit_test(test_ignored_keys),
        cmocka_unit_test(test_syntax_forms),
        cmocka_unit_test(test_repeat_and_empty),
        cmocka_unit_test(test_ranges_accepted),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_warnings_and_errors),
        cmocka_unit_test(test_bad_fixtures),
        cmocka_unit_test(test_unreadable),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_docs_list_every_name),
        cmocka_unit_test(test_shipped_config_ini),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
