/*
 * fuzz_config: config_load() on arbitrary file contents.
 *
 * The input is written to a memfd, which config_load() opens as /proc/self/fd/N: no disk, and
 * nothing left behind. Warnings are not logged (threshold LOG_LEVEL_ERR), so the fuzzer stays
 * quiet. Checked on every input, besides ASan/UBSan/LeakSanitizer's own checks:
 * - a failure writes one line "path:..." into err, a success leaves err empty;
 * - a loaded config keeps every key in its range (SPEC §11 and docs/config.md): ports,
 *   sizes, durations, enums; string keys are NULL or non-empty; the listeners' hosts are
 *   set; ssl.certfile and ssl.keyfile come together; an url template starts with http:// or
 *   https:// and holds <token>; token keys make a ring;
 * - the reload helpers agree: no key differs from itself, and config_key_changed() against
 *   the defaults runs for every key.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "simplepushd/config.h"
#include "simplepushd/log.h"
#include "simplepushd/token.h"

#define MS(s) ((uint64_t)(s)*1000)

static int mem_fd = -1;
static char mem_path[64];
static struct config *defaults;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_configure(LOG_LEVEL_ERR, LOG_FORMAT_TEXT);
    mem_fd = memfd_create("fuzz_config.ini", MFD_CLOEXEC);
    FUZZ_CHECK(mem_fd >= 0);
    snprintf(mem_path, sizeof(mem_path), "/proc/self/fd/%d", mem_fd);
    defaults = config_new();
    FUZZ_CHECK(defaults != NULL);
    return 0;
}

static void write_input(const uint8_t *data, size_t size)
{
    size_t done = 0;

    FUZZ_CHECK(ftruncate(mem_fd, 0) == 0);
    while (done < size) {
        ssize_t n = pwrite(mem_fd, data + done, size - done, (off_t)done);

        FUZZ_CHECK(n > 0);
        done += (size_t)n;
    }
}

/* A duration key: 0 when the key allows "off", else lo..hi seconds. */
static bool duration_ok(uint64_t ms, bool zero_ok, uint64_t lo, uint64_t hi)
{
    return (zero_ok && ms == 0) || (ms >= MS(lo) && ms <= MS(hi));
}

static bool string_ok(const char *s)
{
    return !s || *s;
}

static void check_loaded(const struct config *c)
{
    FUZZ_CHECK(c->server_host && *c->server_host);
    FUZZ_CHECK(c->internal_host && *c->internal_host);
    FUZZ_CHECK(string_ok(c->server_current_host) && string_ok(c->memcache_server));
    FUZZ_CHECK(c->server_port >= 0 && c->server_port <= 65535);
    FUZZ_CHECK(c->internal_port >= 0 && c->internal_port <= 65535);
    FUZZ_CHECK(c->server_max_connections >= 0 && c->server_max_connections <= 10000000);
    FUZZ_CHECK(duration_ok(c->server_drain_ms, true, 0, 3600));

    FUZZ_CHECK(string_ok(c->ssl_certfile) && string_ok(c->ssl_keyfile));
    FUZZ_CHECK(!c->ssl_certfile == !c->ssl_keyfile);

    FUZZ_CHECK(duration_ok(c->client_hello_timeout_ms, true, 1, 3600));
    FUZZ_CHECK(duration_ok(c->client_min_ping_interval_ms, true, 1, 3600));
    FUZZ_CHECK(duration_ok(c->client_resend_interval_ms, true, 1, 86400));
    FUZZ_CHECK(duration_ok(c->client_pong_interval_ms, true, 1, 86400));
    FUZZ_CHECK(c->client_max_message_size >= 4096 && c->client_max_message_size <= 16777216);
    FUZZ_CHECK(c->client_max_pending_bytes >= 4096 && c->client_max_pending_bytes <= 16777216);

    FUZZ_CHECK(string_ok(c->endpoint_url_template));
    if (c->endpoint_url_template) {
        FUZZ_CHECK(!strncmp(c->endpoint_url_template, "http://", 7) ||
                   !strncmp(c->endpoint_url_template, "https://", 8));
        FUZZ_CHECK(strstr(c->endpoint_url_template, "<token>") != NULL);
    }
    FUZZ_CHECK(string_ok(c->endpoint_token_keys));
    if (c->endpoint_token_keys) {
        struct token_ring *keys = token_ring_new(c->endpoint_token_keys, NULL, 0);

        FUZZ_CHECK(keys != NULL);
        token_ring_free(keys);
    }
    FUZZ_CHECK(c->endpoint_max_data_len >= 0 && c->endpoint_max_data_len <= 65536);

    FUZZ_CHECK(c->storage_max_channels >= 1 && c->storage_max_channels <= 100000);
    FUZZ_CHECK(duration_ok(c->storage_timeout_live_ms, false, 1, 2592000));
    FUZZ_CHECK(duration_ok(c->storage_timeout_del_ms, false, 1, 2592000));

    FUZZ_CHECK(c->log_level >= LOG_LEVEL_ERR && c->log_level <= LOG_LEVEL_DEBUG);
    FUZZ_CHECK(c->log_format == LOG_FORMAT_TEXT || c->log_format == LOG_FORMAT_JSON);

    for (size_t i = 0; i < config_key_count(); i++) {
        FUZZ_CHECK(!config_key_changed(c, c, i));
        (void)config_key_changed(defaults, c, i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config *cfg = config_new();
    char err[512];

    FUZZ_CHECK(cfg != NULL);
    write_input(data, size);
    memset(err, 'x', sizeof(err));
    if (config_load(cfg, mem_path, err, sizeof(err)) == 0) {
        FUZZ_CHECK(err[0] == '\0');
        check_loaded(cfg);
    } else {
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL);
        FUZZ_CHECK(strncmp(err, mem_path, strlen(mem_path)) == 0);
        FUZZ_CHECK(strchr(err, '\n') == NULL);
    }
    config_free(cfg);
    return 0;
}
