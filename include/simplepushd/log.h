/*
 * log: the daemon's one logger.
 *
 * Lines go to stderr, as text with an sd-daemon priority prefix ("<6>") that journald reads,
 * or as one MozLog JSON object per line. The level check happens in the macros, before any
 * formatting, so a disabled level costs one comparison. libwebsockets' own log lines are
 * routed here by log_lws_emit(). Everything here runs on the loop thread, except that
 * log_write() may also be called by worker threads (one write(2) per line).
 */
#ifndef SIMPLEPUSHD_LOG_H
#define SIMPLEPUSHD_LOG_H

#include <stdbool.h>
#include <stdint.h>

/* Severities, numbered as syslog's. */
enum log_level {
    LOG_LEVEL_ERR = 3,
    LOG_LEVEL_WARNING = 4,
    LOG_LEVEL_NOTICE = 5,
    LOG_LEVEL_INFO = 6,
    LOG_LEVEL_DEBUG = 7,
};

enum log_format {
    LOG_FORMAT_TEXT,
    LOG_FORMAT_JSON,
};

struct udp_sink;

/* The most verbose level that is written. Read by the macros below. */
extern int log_threshold;

/* Sets level and format; may be called again (reload). */
void log_configure(enum log_level level, enum log_format format);

/*
 * Sends every line that is written also as one MozLog JSON datagram to sink (Heka), with
 * logger as its Logger field; takes ownership of sink; NULL stops sending. Never blocks:
 * datagrams the kernel does not take are dropped and counted. Loop thread.
 */
void log_set_heka(struct udp_sink *sink, const char *logger);

/* Datagrams dropped by the Heka sink since start. */
uint64_t log_heka_drops(void);

/* Parses "error", "warning", "notice", "info" or "debug"; returns -1 for anything else. */
int log_level_parse(const char *name);

/* Returns the name of a level, as log_level_parse() accepts it. */
const char *log_level_name(int level);

/* Formats and writes one line. "type" names the component (MozLog's Type). */
void log_write(int level, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The emit function handed to lws_set_log_level(); maps lws levels onto ours. */
void log_lws_emit(int lws_level, const char *line);

/* The lws log mask that matches the current threshold. */
int log_lws_mask(void);

#define log_at(level, type, ...)                                                                   \
    do {                                                                                           \
        if ((level) <= log_threshold)                                                              \
            log_write((level), (type), __VA_ARGS__);                                               \
    } while (0)

#define log_err(type, ...)     log_at(LOG_LEVEL_ERR, type, __VA_ARGS__)
#define log_warning(type, ...) log_at(LOG_LEVEL_WARNING, type, __VA_ARGS__)
#define log_notice(type, ...)  log_at(LOG_LEVEL_NOTICE, type, __VA_ARGS__)
#define log_info(type, ...)    log_at(LOG_LEVEL_INFO, type, __VA_ARGS__)
#define log_debug(type, ...)   log_at(LOG_LEVEL_DEBUG, type, __VA_ARGS__)

#endif
