/*
 * log: stderr logging in text (journald priority prefixes) or MozLog JSON.
 *
 * One line is built in a stack buffer and written with a single write(2), so lines from the
 * loop thread and from worker threads never interleave.
 */
#include "simplepushd/log.h"
#include "simplepushd/udp.h"

#include <jansson.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log_threshold = LOG_LEVEL_NOTICE;
static enum log_format log_fmt = LOG_FORMAT_TEXT;
static char log_hostname[256];

/* The Heka sink: swapped by the loop thread, used by any thread that logs. */
static pthread_mutex_t heka_lock = PTHREAD_MUTEX_INITIALIZER;
static struct udp_sink *heka_sink;
static char heka_logger[128] = "simplepushd";
static uint64_t heka_drops_before; /* drops of sinks already replaced */

static const char *const level_names[] = {
    [LOG_LEVEL_ERR] = "error", [LOG_LEVEL_WARNING] = "warning", [LOG_LEVEL_NOTICE] = "notice",
    [LOG_LEVEL_INFO] = "info", [LOG_LEVEL_DEBUG] = "debug",
};

void log_configure(enum log_level level, enum log_format format)
{
    log_threshold = level;
    log_fmt = format;
    if (!log_hostname[0] && gethostname(log_hostname, sizeof(log_hostname) - 1) != 0)
        strcpy(log_hostname, "localhost");
    lws_set_log_level(log_lws_mask(), log_lws_emit);
}

int log_level_parse(const char *name)
{
    for (int i = LOG_LEVEL_ERR; i <= LOG_LEVEL_DEBUG; i++)
        if (!strcasecmp(name, level_names[i]))
            return i;
    if (!strcasecmp(name, "warn"))
        return LOG_LEVEL_WARNING;
    return -1;
}

const char *log_level_name(int level)
{
    if (level < LOG_LEVEL_ERR || level > LOG_LEVEL_DEBUG)
        return "unknown";
    return level_names[level];
}

static void write_all(const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

static void log_vwrite(int level, const char *type, const char *fmt, va_list ap)
{
    char msg[2048];
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n < 0)
        return;
    /* Strip one trailing newline (lws lines carry one). */
    size_t len = strlen(msg);
    if (len && msg[len - 1] == '\n')
        msg[--len] = '\0';

    if (log_fmt == LOG_FORMAT_TEXT) {
        char line[2200];
        int m = snprintf(line, sizeof(line), "<%d>%s: %s\n", level, type, msg);
        if (m > 0)
            write_all(line, (size_t)m < sizeof(line) ? (size_t)m : sizeof(line) - 1);
    }
    if (log_fmt != LOG_FORMAT_JSON && !__atomic_load_n(&heka_sink, __ATOMIC_RELAXED))
        return;

    /* One MozLog object, for stderr (json format) and for Heka. */
    pthread_mutex_lock(&heka_lock);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *obj = json_pack("{s:I, s:s, s:s, s:s, s:s, s:i, s:i, s:{s:s}}", "Timestamp",
                            (json_int_t)ts.tv_sec * 1000000000 + ts.tv_nsec, "Type", type, "Logger",
                            heka_logger, "Hostname", log_hostname, "EnvVersion", "2.0", "Severity",
                            level, "Pid", (int)getpid(), "Fields", "msg", msg);
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (s) {
        if (heka_sink)
            udp_sink_send(heka_sink, s, strlen(s));
        if (log_fmt == LOG_FORMAT_JSON) {
            write_all(s, strlen(s));
            write_all("\n", 1);
        }
        free(s);
    }
    pthread_mutex_unlock(&heka_lock);
}

void log_set_heka(struct udp_sink *sink, const char *logger)
{
    pthread_mutex_lock(&heka_lock);
    struct udp_sink *old = heka_sink;
    heka_drops_before += udp_sink_drops(old);
    __atomic_store_n(&heka_sink, sink, __ATOMIC_RELAXED);
    snprintf(heka_logger, sizeof(heka_logger), "%s", logger && *logger ? logger : "simplepushd");
    pthread_mutex_unlock(&heka_lock);
    udp_sink_free(old);
}

uint64_t log_heka_drops(void)
{
    pthread_mutex_lock(&heka_lock);
    uint64_t n = heka_drops_before + udp_sink_drops(heka_sink);
    pthread_mutex_unlock(&heka_lock);
    return n;
}

void log_write(int level, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, type, fmt, ap);
    va_end(ap);
}

static int lws_to_level(int lws_level)
{
    if (lws_level & LLL_ERR)
        return LOG_LEVEL_ERR;
    if (lws_level & LLL_WARN)
        return LOG_LEVEL_WARNING;
    if (lws_level & (LLL_NOTICE | LLL_USER))
        return LOG_LEVEL_NOTICE;
    if (lws_level & LLL_INFO)
        return LOG_LEVEL_INFO;
    return LOG_LEVEL_DEBUG;
}

void log_lws_emit(int lws_level, const char *line)
{
    int level = lws_to_level(lws_level);
    if (level <= log_threshold)
        log_write(level, "lws", "%s", line);
}

int log_lws_mask(void)
{
    /* lws notices are chatty (one per vhost and listener); keep them at info. */
    int mask = LLL_ERR | LLL_USER;
    if (log_threshold >= LOG_LEVEL_WARNING)
        mask |= LLL_WARN;
    if (log_threshold >= LOG_LEVEL_INFO)
        mask |= LLL_NOTICE | LLL_INFO;
    if (log_threshold >= LOG_LEVEL_DEBUG)
        mask |= LLL_DEBUG;
    return mask;
}
