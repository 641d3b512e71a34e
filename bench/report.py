#!/usr/bin/python3
"""bench/report.py: the tables of a bench/run results directory, and docs/performance.md.

    report.py summary DIR           the tables, as Markdown, on stdout
    report.py markdown DIR OUT.md   OUT.md with the machine, the bar of issue 6, the tables,
                                    the method and the exact commands; PNG charts beside it
                                    (perf-rss.png, perf-latency.png) when gnuplot is there

DIR holds one spload JSON per run (named by bench/run: idle-<N>, storm-<N>-<run>,
notify-embedded, notify-memcached, notify-19k, nchan-simplepushd, nchan-nchan), commands.tsv,
meta.txt and version.txt. bench/findings.md (profiles of the misses, written by hand) is
copied into OUT.md when it exists. Only the standard library is used.
"""

import glob
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# Said of a figure measured while other processes used more than 10% of a CPU of ours.
NOISY = " ⚠ other processes were busy on our CPUs during this step (see the tables)"

# The bar of issue 6.
BAR_RSS_BYTES = 2048
BAR_IDLE_PCT = 2.0
BAR_CONNECT_US = 100.0
BAR_FLAT_RATIO = 1.3
BAR_NOTIFY_US = 30.0
BAR_NOTIFY_MC_US = 60.0
BAR_P99_MS = 5.0
BAR_RATE = 5000


def load(dirname):
    runs = {}
    for path in sorted(glob.glob(os.path.join(dirname, "*.json"))):
        name = os.path.basename(path)[:-5]
        try:
            with open(path) as f:
                runs[name] = json.load(f)
        except (OSError, ValueError) as e:
            print("report: %s: %s" % (path, e), file=sys.stderr)
    return runs


def num(v, digits=1):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, int) or digits == 0:
        return "{:,}".format(int(round(v)))
    return "{:,.{d}f}".format(v, d=digits)


def ms(us):
    return num(us / 1000.0, 2) if us is not None else "–"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out) + "\n"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def noise(step):
    """'a / b': the % of CPU 0 and CPU 1 that other processes of the host used in a step."""
    a, b = step.get("cpu0_others_pct"), step.get("cpu1_others_pct")
    if a is None and b is None:
        return "–"
    return "%s / %s" % (num(a, 0), num(b, 0))


def noisy(step, limit=10.0):
    return any((step.get(k) or 0) > limit for k in ("cpu0_others_pct", "cpu1_others_pct"))


def step_rate_map(run):
    return {int(s["put_rate"]): s for s in run.get("steps", [])}


# ---- the sections ----

def idle_rows(runs):
    rows = []
    for name in sorted((n for n in runs if re.fullmatch(r"idle-\d+", n)),
                       key=lambda n: int(n.split("-")[1])):
        r = runs[name]
        srv = r.get("server", {})
        st = r["steps"][0] if r.get("steps") else {}
        window = st.get("window_s") or 0
        rows.append({
            "devices": r["devices"]["ready_after_connect"],
            "requested": r["devices"]["requested"],
            "rss_empty_kb": srv.get("rss_kb_empty"),
            "rss_kb": srv.get("rss_kb_connected"),
            "per_device": srv.get("rss_bytes_per_device"),
            "idle_pct": st.get("server_cpu_pct"),
            "us_per_ping": st.get("server_cpu_us_per_ping"),
            "pings_per_s": (st.get("pongs", 0) / window) if window else None,
            "window": window,
            "connect_us": r["connect"].get("server_cpu_us_per_device"),
            "errors": r.get("errors"),
            "noise": noise(st) if st else "–",
            "noisy": noisy(st) if st else False,
        })
    return rows


def idle_section(runs):
    rows = idle_rows(runs)
    if not rows:
        return ""
    t = table(["devices ready", "RSS empty (MB)", "RSS connected (MB)", "RSS per device (B)",
               "server CPU idle (% of a core)", "pings/s", "CPU per ping (µs)",
               "connect+hello+register CPU per device (µs)", "errors",
               "other processes on CPU 0 / 1 (%)"],
              [["%s / %s" % (num(x["devices"]), num(x["requested"])),
                num((x["rss_empty_kb"] or 0) / 1024.0, 1), num((x["rss_kb"] or 0) / 1024.0, 1),
                num(x["per_device"], 0), num(x["idle_pct"], 2), num(x["pings_per_s"], 0),
                num(x["us_per_ping"], 1), num(x["connect_us"], 0), num(x["errors"]), x["noise"]]
               for x in rows])
    return "### Idle registered devices, `{}` ping every 60 s\n\n" + t


def storm_rows(runs):
    groups = {}
    for name, r in runs.items():
        m = re.fullmatch(r"storm-(\d+)-(\d+)", name)
        if m:
            groups.setdefault(int(m.group(1)), []).append(r)
    rows = []
    for n in sorted(groups):
        rs = groups[n]
        rows.append({
            "devices": n,
            "runs": len(rs),
            "us": median([r["connect"].get("server_cpu_us_per_device") for r in rs]),
            "us_all": [r["connect"].get("server_cpu_us_per_device") for r in rs],
            "rate": median([r["connect"].get("rate_per_s") for r in rs]),
            "p99": median([r["connect"]["hello_latency_us"]["p99"] for r in rs]),
            "gen": median([r["connect"].get("generator_cpu_pct") for r in rs]),
            "ready": min(r["devices"]["ready_after_connect"] for r in rs),
            "errors": sum(r.get("errors", 0) for r in rs),
        })
    return rows


def storm_section(runs):
    rows = storm_rows(runs)
    if not rows:
        return ""
    t = table(["devices", "runs", "server CPU per connect+hello (µs, median)", "each run (µs)",
               "connects/s", "connect→hello p99 (ms)", "generator CPU (%)", "errors"],
              [[num(x["devices"]), x["runs"], num(x["us"], 1),
                ", ".join(num(v, 1) for v in x["us_all"]), num(x["rate"], 0), ms(x["p99"]),
                num(x["gen"], 0), num(x["errors"])] for x in rows])
    return "### Connect storm (connect, upgrade, hello; no register)\n\n" + t


def notify_table(run, aux_label=None):
    header = ["PUT/s", "PUTs sent", "delivered", "lost", "superseded", "not sent (queues full)",
              "other errors", "e2e p50 (ms)", "p99 (ms)", "p99.9 (ms)", "max (ms)",
              "server CPU (%)", "server CPU per notification (µs)"]
    if aux_label:
        header += [aux_label + " CPU per notification (µs)"]
    header += ["generator CPU (%)", "other processes on CPU 0 / 1 (%)"]
    rows = []
    for s in run.get("steps", []):
        if not s["put_rate"]:
            continue
        lat = s["latency_us"]
        not_sent = s["put_dropped"] + s["put_skipped"]
        cpu = num(s["server_cpu_pct"], 1)
        if s["server_cpu_pct"] is not None and s["server_cpu_pct"] > 90:
            cpu += " (saturated)"
        row = [num(s["put_rate"], 0), num(s["puts"]), num(s["delivered"]), num(s["lost"]),
               num(s["superseded"]), num(not_sent), num(s["errors"] - not_sent),
               ms(lat["p50"]), ms(lat["p99"]), ms(lat["p999"]), ms(lat["max"]), cpu,
               num(s["server_cpu_us_per_notification"], 1)]
        if aux_label:
            aux = s.get("aux") or [{}]
            row.append(num(aux[0].get("cpu_us_per_notification"), 1))
        row.append(num(s["generator_cpu_pct"], 0) + (" (bound)" if s["generator_bound"] else ""))
        row.append(noise(s))
        rows.append(row)
    return table(header, rows)


def notify_section(runs):
    out = []
    if "notify-embedded" in runs:
        out.append("### Notifications, embedded store, %s devices\n\n" %
                   num(runs["notify-embedded"]["devices"]["ready_after_connect"])
                   + notify_table(runs["notify-embedded"]))
    if "notify-memcached" in runs:
        out.append("### Notifications, memcached store, %s devices (memcached on CPU 1)\n\n" %
                   num(runs["notify-memcached"]["devices"]["ready_after_connect"])
                   + notify_table(runs["notify-memcached"], "memcached"))
    if "notify-19k" in runs:
        out.append("### Notifications, embedded store, %s devices\n\n" %
                   num(runs["notify-19k"]["devices"]["ready_after_connect"])
                   + notify_table(runs["notify-19k"]))
    return "\n".join(out)


def nchan_section(runs, dirname):
    if os.path.exists(os.path.join(dirname, "nchan-skipped.txt")):
        return ("### simplepushd and nchan\n\nSkipped: nginx with libnginx-mod-nchan could not "
                "be installed on this machine.\n")
    a, b = runs.get("nchan-simplepushd"), runs.get("nchan-nchan")
    if not a or not b:
        return ""

    def idle(r):
        s = r["steps"][0]
        return s

    def ratio(x, y):
        return num(x / y, 2) if x is not None and y else "–"

    rows = []
    ra, rb = a["server"].get("rss_bytes_per_device"), b["server"].get("rss_bytes_per_device")
    rows.append(["RSS per idle device (B)", num(ra, 0), num(rb, 0), ratio(ra, rb)])
    ia, ib = idle(a)["server_cpu_pct"], idle(b)["server_cpu_pct"]
    rows.append(["CPU, idle with 60 s pings (% of a core)", num(ia, 2), num(ib, 2), ratio(ia, ib)])
    pa, pb = idle(a)["server_cpu_us_per_ping"], idle(b)["server_cpu_us_per_ping"]
    rows.append(["CPU per ping (µs)", num(pa, 1), num(pb, 1), ratio(pa, pb)])
    ca, cb = (a["connect"]["server_cpu_us_per_device"], b["connect"]["server_cpu_us_per_device"])
    rows.append(["CPU per new device (µs): connect+hello+register / connect+subscribe",
                 num(ca, 0), num(cb, 0), ratio(ca, cb)])
    sa, sb = step_rate_map(a), step_rate_map(b)
    for rate in sorted(k for k in sa if k and k in sb):
        x, y = sa[rate]["server_cpu_us_per_notification"], sb[rate]["server_cpu_us_per_notification"]
        rows.append(["CPU per message at %s/s (µs)" % num(rate), num(x, 1), num(y, 1), ratio(x, y)])
    for rate in sorted(k for k in sa if k and k in sb):
        x, y = sa[rate]["latency_us"]["p99"], sb[rate]["latency_us"]["p99"]
        rows.append(["e2e p99 at %s/s (ms)" % num(rate), ms(x), ms(y), ratio(x, y)])
    lost_a = sum(s["lost"] for s in a["steps"])
    lost_b = sum(s["lost"] for s in b["steps"])
    rows.append(["lost (all steps)", num(lost_a), num(lost_b), ""])
    return ("### simplepushd and nchan, same load (10k devices)\n\n" +
            table(["", "simplepushd", "nchan", "simplepushd / nchan"], rows))


# ---- the bar ----

def bar_rows(runs, dirname):
    rows = []

    def verdict(ok):
        return "**pass**" if ok else "**MISS**"

    idle = {x["requested"]: x for x in idle_rows(runs)}
    top = idle.get(19000) or (idle[max(idle)] if idle else None)
    if top:
        v = top["per_device"]
        rows.append(["RSS per idle registered device at 19k", "≤ 2,048 B",
                     "%s B" % num(v, 0), verdict(v is not None and v <= BAR_RSS_BYTES)])
        v = top["idle_pct"]
        rows.append(["CPU, 19k idle devices pinging every 60 s", "≤ 2% of a core",
                     "%s%% (%s µs per ping)%s" % (num(v, 2), num(top["us_per_ping"], 1),
                                                 NOISY if top["noisy"] else ""),
                     verdict(v is not None and v <= BAR_IDLE_PCT)])
    storm = {x["devices"]: x for x in storm_rows(runs)}
    if storm:
        lo, hi = storm.get(1000), storm.get(19000)
        worst = max(x["us"] for x in storm.values() if x["us"] is not None)
        flat = (hi["us"] / lo["us"]) if lo and hi and lo["us"] else None
        rows.append(["CPU per connect+hello, 1k and 19k", "≤ 100 µs, flat",
                     "%s µs at 1k, %s µs at 19k (×%s)" % (
                         num(lo["us"] if lo else None, 1), num(hi["us"] if hi else None, 1),
                         num(flat, 2)),
                     verdict(worst <= BAR_CONNECT_US and (flat is None or flat <= BAR_FLAT_RATIO))])
    for name, bar, label in (("notify-embedded", BAR_NOTIFY_US, "embedded store"),
                             ("notify-memcached", BAR_NOTIFY_MC_US, "memcached")):
        if name in runs:
            s = step_rate_map(runs[name]).get(BAR_RATE)
            if s:
                v = s["server_cpu_us_per_notification"]
                extra = ""
                if name == "notify-memcached" and s.get("aux"):
                    extra = " (+ %s µs in memcached)" % num(s["aux"][0]["cpu_us_per_notification"], 1)
                if s["server_cpu_pct"] is not None and s["server_cpu_pct"] > 90:
                    extra += "; the server is saturated at this rate"
                if noisy(s):
                    extra += NOISY
                rows.append(["Server CPU per PUT→notification→ack, %s, at %s/s" % (label, num(BAR_RATE)),
                             "≤ %d µs" % bar, "%s µs%s" % (num(v, 1), extra),
                             verdict(v is not None and v <= bar)])
    if "notify-19k" in runs:
        s = step_rate_map(runs["notify-19k"]).get(BAR_RATE)
        if s:
            v = s["latency_us"]["p99"]
            rows.append(["e2e p99 at 5,000 notifications/s, 19k devices", "≤ 5 ms",
                         "%s ms (p50 %s, p99.9 %s; lost %s)%s" % (
                             ms(v), ms(s["latency_us"]["p50"]), ms(s["latency_us"]["p999"]),
                             num(s["lost"]), NOISY if noisy(s) else ""),
                         verdict(v is not None and v <= BAR_P99_MS * 1000 and s["lost"] == 0)])
    a, b = runs.get("nchan-simplepushd"), runs.get("nchan-nchan")
    if a and b:
        ra, rb = a["server"].get("rss_bytes_per_device"), b["server"].get("rss_bytes_per_device")
        rows.append(["RSS per connection vs nchan", "lower", "%s B vs %s B (×%s)" % (
            num(ra, 0), num(rb, 0), num(ra / rb if ra and rb else None, 2)),
            verdict(ra is not None and rb is not None and ra < rb)])
        sa, sb = step_rate_map(a), step_rate_map(b)
        rates = sorted(k for k in sa if k and k in sb)
        better = all(sa[k]["server_cpu_us_per_notification"] < sb[k]["server_cpu_us_per_notification"]
                     for k in rates) if rates else False
        rows.append(["CPU per message vs nchan", "lower at every rate",
                     "; ".join("%s/s: %s vs %s µs" % (
                         num(k), num(sa[k]["server_cpu_us_per_notification"], 1),
                         num(sb[k]["server_cpu_us_per_notification"], 1)) for k in rates),
                     verdict(better)])
    elif os.path.exists(os.path.join(dirname, "nchan-skipped.txt")):
        rows.append(["Better than nchan", "lower RSS/conn, CPU/message", "nchan not installed",
                     "skipped"])
    return rows


def bar_section(runs, dirname):
    rows = bar_rows(runs, dirname)
    if not rows:
        return ""
    return table(["criterion (issue 6)", "bar", "measured", "verdict"], rows)


# ---- charts ----

def charts(runs, outdir):
    gp = shutil.which("gnuplot")
    if not gp:
        return []
    made = []
    tmp = tempfile.mkdtemp(prefix="bench-report-")
    try:
        rows = idle_rows(runs)
        if rows:
            with open(os.path.join(tmp, "rss.dat"), "w") as f:
                f.write("0 %.3f 0\n" % ((rows[0]["rss_empty_kb"] or 0) / 1024.0))
                for x in rows:
                    f.write("%d %.3f %.3f\n" % (x["devices"], (x["rss_kb"] or 0) / 1024.0,
                                                (x["per_device"] or 0)))
            extra = ""
            b = runs.get("nchan-nchan")
            if b and b["server"].get("rss_kb_connected"):
                with open(os.path.join(tmp, "nchan.dat"), "w") as f:
                    f.write("0 %.3f\n" % (b["server"]["rss_kb_empty"] / 1024.0))
                    f.write("%d %.3f\n" % (b["devices"]["ready_after_connect"],
                                           b["server"]["rss_kb_connected"] / 1024.0))
                extra = (", '%s/nchan.dat' using 1:2 with linespoints lw 2 pt 5 "
                         "title 'nginx + nchan (worker)'" % tmp)
            script = """
set terminal pngcairo size 800,480 font 'sans,10'
set output '%(out)s'
set title 'Server resident memory vs idle registered devices'
set xlabel 'devices'
set ylabel 'VmRSS (MB)'
set grid
set key left top
set xrange [0:*]
set yrange [0:*]
plot '%(tmp)s/rss.dat' using 1:2 with linespoints lw 2 pt 7 title 'simplepushd'%(extra)s
""" % {"out": os.path.join(outdir, "perf-rss.png"), "tmp": tmp, "extra": extra}
            if subprocess.run([gp], input=script, text=True).returncode == 0:
                made.append("perf-rss.png")

        series = []
        for name, title in (("notify-embedded", "simplepushd, embedded store"),
                            ("notify-memcached", "simplepushd, memcached"),
                            ("nchan-nchan", "nginx + nchan")):
            r = runs.get(name)
            if not r:
                continue
            path = os.path.join(tmp, name + ".dat")
            with open(path, "w") as f:
                for s in r["steps"]:
                    if s["put_rate"] and s["latency_us"]["count"]:
                        f.write("%g %.4f %.4f %.4f\n" % (
                            s["put_rate"], max(s["latency_us"]["p50"], 1) / 1000.0,
                            max(s["latency_us"]["p99"], 1) / 1000.0,
                            max(s["latency_us"]["p999"], 1) / 1000.0))
            series.append((path, title))
        if series:
            plots = []
            colors = ["#1f77b4", "#d62728", "#2ca02c"]
            for k, (path, title) in enumerate(series):
                c = colors[k % len(colors)]
                plots.append("'%s' using 1:2 with linespoints lw 2 pt 7 lc rgb '%s' "
                             "title '%s p50'" % (path, c, title))
                plots.append("'%s' using 1:3 with linespoints lw 2 pt 5 dt 2 lc rgb '%s' "
                             "title '%s p99'" % (path, c, title))
            script = """
set terminal pngcairo size 800,480 font 'sans,10'
set output '%(out)s'
set title 'End-to-end latency (PUT sent -> notification received), 10k devices'
set xlabel 'PUT rate (per second)'
set ylabel 'latency (ms)'
set logscale xy
set grid
set key left top
plot %(plots)s
""" % {"out": os.path.join(outdir, "perf-latency.png"), "plots": ", ".join(plots)}
            if subprocess.run([gp], input=script, text=True).returncode == 0:
                made.append("perf-latency.png")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return made


# ---- the document ----

def read_meta(dirname):
    meta = {}
    try:
        with open(os.path.join(dirname, "meta.txt")) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                meta[k] = v
    except OSError:
        pass
    try:
        with open(os.path.join(dirname, "version.txt")) as f:
            meta["version"] = f.read().strip()
    except OSError:
        meta["version"] = ""
    return meta


def commands(dirname):
    out = []
    try:
        with open(os.path.join(dirname, "commands.tsv")) as f:
            for line in f:
                name, _, cmd = line.rstrip("\n").partition("\t")
                out.append((name, cmd))
    except OSError:
        pass
    return out


def summary(dirname):
    runs = load(dirname)
    parts = [bar_section(runs, dirname), idle_section(runs), storm_section(runs),
             notify_section(runs), nchan_section(runs, dirname)]
    print("\n".join(p for p in parts if p))


METHOD = """\
## Method

* **Pinning.** The server runs on CPU 0 (`taskset -c 0`); the load generator `spload` and
  memcached share CPU 1. nginx (master and its one worker) runs on CPU 0 like simplepushd.
* **What is measured, and how.** `spload` samples the server at every phase boundary:
  CPU time is the sum over its threads of `/proc/PID/task/*/schedstat` (nanoseconds, so the
  memcached backend's worker threads count too), memory is `VmRSS` of `/proc/PID/status`.
  *RSS per device* = (VmRSS after the devices connected and settled − VmRSS of the same
  server before the first connect) ÷ devices; each idle size runs on a fresh server.
  *CPU per notification* = server CPU over the step (its PUTs, notifications, acks and the
  drain) ÷ notifications delivered and acked. *CPU per connection* = server CPU from the
  first connect to the last hello answer ÷ devices. *Idle CPU* = server CPU over the idle
  window ÷ its length, with every device sending `{}` every 60 s, spread evenly.
* **Latency.** Each PUT carries `version` = CLOCK_REALTIME in µs when the generator's 1 ms
  tick sends it; the device computes now − version on the same clock when the notification
  arrives, then acks it. PUTs follow an open-loop schedule over 32 keep-alive connections
  (nothing waits for an answer before sending the next one), so a slow server shows up as
  latency rather than as a lower rate (no coordinated omission). A PUT goes to a random
  device with nothing pending, so two versions of one channel are never in flight together.
* **Lost** = PUTs answered 200/202 whose version never reached the device within the drain
  (5 s) after the step.
* **The generator's own CPU** (getrusage) is in every table: above 80% of its core the step
  is marked *bound* and says more about the generator than about the server.
* **Server configuration:** `max_connections = 19500`, `min_ping_interval = 0`,
  `resend_interval = 0`, `pong_interval = 300s`, `hello_timeout = 30s`, log level warning;
  the embedded store unless memcached is named. nchan: nginx with one worker, the
  configuration of `shared/reference/performance-anchors.md` §6 (memory store, a message
  buffer of 1, `{}` heartbeats answered), written by `bench/run`.
* **Noise.** The machine has 2 vCPUs shared with other work (other builds, tests and
  fuzzers run beside the benchmark); the load average at the start and end of the run is
  given above, and each step's row says how much of CPU 0 and CPU 1 *other* processes used
  during it (`/proc/stat` busy time minus the server's, the generator's and memcached's own
  CPU). A figure measured while they used more than 10% is flagged ⚠ in the bar table. CPU time per event holds up far better than
  throughput or latency under such sharing, which is why the bar is written in CPU per
  event. Latency tails (p99.9, max) move with whatever else the host runs: compare them
  between runs with care. `bench/run report` runs short steps (10–15 s); `bench/run
  idle|storm|notify|nchan` run the full ones (20–30 s).
"""


def markdown(dirname, outpath):
    runs = load(dirname)
    meta = read_meta(dirname)
    outdir = os.path.dirname(os.path.abspath(outpath))
    made = charts(runs, outdir)
    doc = ["# Performance\n",
           "Measured with the project's own benchmark suite (`bench/`): the load generator "
           "`bench/spload.c` and the scenarios of `bench/run`. This page is written by "
           "`bench/run report` from one run on the machine below; the figures are this "
           "machine's, not a promise for another.\n",
           "## Machine and versions\n",
           table(["", ""], [
               ["CPU", "%s × %s" % (meta.get("nproc", "?"), meta.get("model", "?"))],
               ["memory", meta.get("memory", "?")],
               ["kernel", meta.get("kernel", "?")],
               ["open files (hard limit)", meta.get("fd_limit", "?")],
               ["simplepushd", "<br>".join(meta.get("version", "").splitlines())],
               ["libwebsockets (Debian)", meta.get("lws", "?")],
               ["memcached", meta.get("memcached", "?")],
               ["nginx / nchan", "%s / %s" % (meta.get("nginx", "?") or "–",
                                              meta.get("nchan", "?") or "–")],
               ["run", "%s, commit %s" % (meta.get("date", "?"), meta.get("commit", "?"))],
               ["load average (1/5/15 min)", "start %s; end %s" % (
                   meta.get("load_start", "?"), meta.get("load_end", "?"))],
           ]),
           "## Against the bar (issue 6)\n",
           bar_section(runs, dirname),
           "## Results\n"]
    for part in (idle_section(runs), storm_section(runs), notify_section(runs),
                 nchan_section(runs, dirname)):
        if part:
            doc.append(part)
    if "perf-rss.png" in made:
        doc.append("![Server RSS vs devices](perf-rss.png)\n")
    if "perf-latency.png" in made:
        doc.append("![End-to-end latency vs PUT rate](perf-latency.png)\n")
    findings = os.path.join(HERE, "findings.md")
    if os.path.exists(findings):
        with open(findings) as f:
            doc.append(f.read().rstrip("\n") + "\n")
    doc.append(METHOD)
    doc.append("## Reproducing\n\n"
               "```sh\n"
               "bench/run report     # short versions of everything, rewrites this page (~8 min)\n"
               "bench/run idle       # or storm, notify, nchan: the full scenario\n"
               "bench/run profile notify   # perf profile of the server (or notify-memcached, idle, storm)\n"
               "```\n\n"
               "`bench/run` builds a RelWithDebInfo tree in `build-bench/`, writes a config per "
               "server (ports chosen above the ephemeral range), pins the processes and ends "
               "every process it started. The commands it ran for this page, in order "
               "(`spload` is `build-bench/bench/spload`; ports and pids are those of the run):\n")
    cmds = commands(dirname)
    if cmds:
        doc.append("```sh\n" + "\n".join("%s   # %s" % (c, n) for n, c in cmds) + "\n```\n")
    doc.append("Each simplepushd ran `taskset -c 0 simplepushd -c config.ini` with:\n\n"
               "```ini\n[server]\nhost = 0.0.0.0\nport = <free port>\nmax_connections = 19500\n"
               "drain_seconds = 0\ndemo = 0\n[internal]\nhost = 127.0.0.1\nport = 0\n[client]\n"
               "min_ping_interval = 0\nresend_interval = 0\npong_interval = 300s\n"
               "hello_timeout = 30s\n[log]\nlevel = warning\n"
               "; notify-memcached only:\n[memcache]\nserver = 127.0.0.1:<port>\n```\n\n"
               "memcached: `taskset -c 1 memcached -l 127.0.0.1 -p <port> -U 0 -m 1024 -c 4096 "
               "-u root`.\n")
    with open(outpath, "w") as f:
        f.write("\n".join(doc))


def main(argv):
    if len(argv) == 3 and argv[1] == "summary":
        summary(argv[2])
        return 0
    if len(argv) == 4 and argv[1] == "markdown":
        markdown(argv[2], argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
