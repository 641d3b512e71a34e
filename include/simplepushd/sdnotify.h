/*
 * sdnotify: the systemd notify protocol, embedded (no libsystemd): one datagram of
 * "KEY=VALUE" lines to the unix socket named by $NOTIFY_SOCKET (a leading '@' names an
 * abstract socket). Without $NOTIFY_SOCKET every call does nothing, so the daemon behaves
 * the same outside systemd. Loop thread only.
 */
#ifndef SIMPLEPUSHD_SDNOTIFY_H
#define SIMPLEPUSHD_SDNOTIFY_H

#include <stdint.h>

/* Opens the socket named by $NOTIFY_SOCKET, if any. Returns 0 (also when unset) or -1. */
int sdnotify_open(void);

/* Sends one message, e.g. "READY=1\nSTATUS=clients=0". Returns 0, or -1 (not sent). */
int sdnotify_send(const char *message);

/* Sends a printf-formatted message. */
int sdnotify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * The watchdog interval systemd asks for ($WATCHDOG_USEC, when $WATCHDOG_PID is unset or
 * ours), in microseconds; 0 when there is none.
 */
uint64_t sdnotify_watchdog_usec(void);

/* Closes the socket. */
void sdnotify_close(void);

#endif
