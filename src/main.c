/*
 * main: the command line, start-up order and exit codes of simplepushd.
 *
 *   simplepushd [-c FILE]      run in the foreground (systemd Type=notify style)
 *   simplepushd -t [-c FILE]   test the configuration file and exit 0 or 1
 *   simplepushd -V             print the versions of simplepushd and its libraries
 *   simplepushd --genkey       print a fresh endpoint token key
 *
 * Start-up: parse the command line, read the configuration, raise the open-files soft limit
 * to the hard limit, start the server on a libuv loop, run the loop until it runs dry.
 */
#include <getopt.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "simplepushd/config.h"
#include "simplepushd/log.h"
#include "simplepushd/server.h"
#include "simplepushd/token.h"

#define DEFAULT_CONFIG "/etc/simplepushd/config.ini"

static void usage(FILE *out)
{
    fprintf(out, "usage: simplepushd [-c FILE] [-t] [-V] [--genkey]\n"
                 "  -c, --config FILE  configuration file (default " DEFAULT_CONFIG ")\n"
                 "  -t, --test-config  check the configuration file and exit\n"
                 "  -V, --version      print versions and exit\n"
                 "      --genkey       print a new endpoint token key and exit\n"
                 "  -h, --help         print this help and exit\n");
}

static void print_versions(void)
{
    printf("simplepushd %s (commit %s)\n", SP_VERSION, SP_COMMIT);
    printf("libwebsockets %s\n", lws_get_library_version());
    printf("libuv %s\n", uv_version_string());
    printf("jansson %s\n", jansson_version_str());
    printf("openssl %s\n", OpenSSL_version(OPENSSL_VERSION));
}

/* Raises the soft open-files limit to the hard limit; returns the limit now in force. */
static uint64_t raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return 1024;
    rlim_t before = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl))
            rl.rlim_cur = before;
    }
    log_notice("main", "open-files limit: soft %llu -> %llu (hard %llu)",
               (unsigned long long)before, (unsigned long long)rl.rlim_cur,
               (unsigned long long)rl.rlim_max);
    return (uint64_t)rl.rlim_cur;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"test-config", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},      {"genkey", no_argument, NULL, 'g'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *path = DEFAULT_CONFIG;
    bool test_only = false;
    int opt;

    while ((opt = getopt_long(argc, argv, "c:tVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 'V':
            print_versions();
            return 0;
        case 'g': {
            char key[TOKEN_KEY_STR_LEN + 1];
            if (token_genkey(key)) {
                fprintf(stderr, "simplepushd: cannot make a key\n");
                return 1;
            }
            printf("%s\n", key);
            return 0;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }

    log_configure(LOG_LEVEL_NOTICE, LOG_FORMAT_TEXT);
    struct config *cfg = config_new();
    char err[512];
    if (!cfg) {
        fprintf(stderr, "simplepushd: out of memory\n");
        return 1;
    }
    if (config_load(cfg, path, err, sizeof(err))) {
        fprintf(stderr, "simplepushd: %s\n", err);
        fprintf(stderr, "simplepushd: configuration file %s test failed\n", path);
        config_free(cfg);
        return 1;
    }
    if (test_only) {
        printf("simplepushd: configuration file %s test is successful\n", path);
        config_free(cfg);
        return 0;
    }
    log_configure(cfg->log_level, cfg->log_format);
    log_notice("main", "simplepushd %s (commit %s) starting", SP_VERSION, SP_COMMIT);

    uint64_t fd_limit = raise_fd_limit();
    uv_loop_t loop;
    if (uv_loop_init(&loop)) {
        config_free(cfg);
        return 1;
    }
    struct server srv;
    int rc = 0;
    if (server_start(&srv, cfg, path, &loop, fd_limit)) {
        rc = 1;
        server_stop(&srv, false);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    server_free(&srv);
    if (uv_loop_close(&loop))
        log_warning("main", "the event loop still had handles at exit");
    log_notice("main", "exiting with status %d", rc);
    return rc;
}
