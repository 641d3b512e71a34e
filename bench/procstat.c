/*
 * procstat: /proc sampling of another process (see procstat.h).
 *
 * Threads that exited between two samples take their schedstat time with them; the
 * processes spload watches (simplepushd, memcached, an nginx worker) keep their threads for
 * their whole life, so the difference of two samples is their CPU time in between.
 */
#include "procstat.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The first number of /proc/PID/task/TID/schedstat: time on a CPU, in nanoseconds. */
static int procstat_schedstat(pid_t pid, uint64_t *cpu_ns, int *threads)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    uint64_t sum = 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[96];
        snprintf(p, sizeof(p), "/proc/%d/task/%.16s/schedstat", (int)pid, e->d_name);
        FILE *f = fopen(p, "r");
        if (!f)
            continue; /* the thread just exited */
        unsigned long long run = 0;
        int ok = fscanf(f, "%llu", &run);
        fclose(f);
        if (ok != 1) {
            closedir(d);
            return -1;
        }
        sum += run;
        n++;
    }
    closedir(d);
    if (n == 0)
        return -1;
    *cpu_ns = sum;
    *threads = n;
    return 0;
}

/* utime + stime (fields 14 and 15 of /proc/PID/stat) in nanoseconds. */
static int procstat_stat(pid_t pid, uint64_t *cpu_ns)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut, st;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        hz = 100;
    *cpu_ns = (ut + st) * (1000000000ull / (uint64_t)hz);
    return 0;
}

static int procstat_status(pid_t pid, uint64_t *rss_kb, uint64_t *hwm_kb)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int found = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long v;
        if (sscanf(line, "VmRSS: %llu kB", &v) == 1) {
            *rss_kb = v;
            found |= 1;
        } else if (sscanf(line, "VmHWM: %llu kB", &v) == 1) {
            *hwm_kb = v;
            found |= 2;
        }
    }
    fclose(f);
    return found == 3 ? 0 : -1;
}

int procstat_read(pid_t pid, struct procstat *out)
{
    memset(out, 0, sizeof(*out));
    if (procstat_status(pid, &out->rss_kb, &out->hwm_kb) != 0)
        return -1;
    if (procstat_schedstat(pid, &out->cpu_ns, &out->threads) == 0) {
        out->schedstat = true;
        return 0;
    }
    out->threads = 1;
    return procstat_stat(pid, &out->cpu_ns);
}

int procstat_cpus_read(struct procstat_cpus *out)
{
    memset(out, 0, sizeof(*out));
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    char line[512];
    while (fgets(line, sizeof(line), f) && out->n < PROCSTAT_MAX_CPUS) {
        int cpu;
        unsigned long long v[8] = {0};
        if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]) != 9 ||
            cpu != out->n)
            continue;
        /* user nice system idle iowait irq softirq steal */
        out->busy[out->n] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        out->total[out->n] = out->busy[out->n] + v[3] + v[4];
        out->n++;
    }
    fclose(f);
    return out->n > 0 ? 0 : -1;
}
