/*
 * procstat: what spload samples of another process (the server, memcached) from /proc: CPU
 * time and resident memory. CPU time is the sum of every thread's run time from
 * /proc/PID/task/TID/schedstat (nanoseconds, exact) when the kernel provides it, else
 * utime + stime from /proc/PID/stat (clock ticks, usually 10 ms).
 */
#ifndef SPLOAD_PROCSTAT_H
#define SPLOAD_PROCSTAT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct procstat {
    uint64_t cpu_ns; /* user + system time of every live thread */
    uint64_t rss_kb; /* VmRSS */
    uint64_t hwm_kb; /* VmHWM, the peak of VmRSS */
    int threads;     /* threads counted in cpu_ns */
    bool schedstat;  /* cpu_ns came from schedstat (exact), not from ticks */
};

/* Samples process pid into out. Returns 0, or -1 when the process is gone or unreadable. */
int procstat_read(pid_t pid, struct procstat *out);

#define PROCSTAT_MAX_CPUS 8

/* The busy and total time (clock ticks) of each CPU, from /proc/stat. */
struct procstat_cpus {
    int n;                             /* CPUs read, at most PROCSTAT_MAX_CPUS */
    uint64_t busy[PROCSTAT_MAX_CPUS];  /* user + nice + system + irq + softirq + steal */
    uint64_t total[PROCSTAT_MAX_CPUS]; /* busy + idle + iowait */
};

/* Samples every CPU's times into out. Returns 0, or -1 when /proc/stat is unreadable. */
int procstat_cpus_read(struct procstat_cpus *out);

#endif
