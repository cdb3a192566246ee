#!/usr/bin/env python3
"""make bench, scale section (issue #14): throughput with the default config against a relay
with and without PIPELINING, a 2-second burst of 451 at DATA, and a million queued messages.
Each row is reported as a figure and as a ratio against its target; never fails on slowness.

Usage: bench/scale.py --bin target/release/relayq --out bench/out [--quick] [--million N]

Rows:
  pipelining   1,000 messages, the project's relay with and without PIPELINING
               (--no-pipelining), at 0 and 25 ms round trip (--rtt-ms), default config
               (no `connections` set): msg/s and daemon CPU ms per message.
  sink         5,000 messages (--quick: 1,000) at 0 ms to Postfix's smtp-sink (bench/sink.py),
               a relay that is not the limit: msg/s and CPU per message against the 0 ms
               targets, and smtp-source on as many sessions as the floor.
  burst451     300 queued, the relay answers 451 at DATA to every message for 2 s: seconds
               from the relay's recovery until the queue is empty (no `relayq flush`).
  rate10       300 queued, `rate = "10/s"` on the relay: the most MAILs the relay saw in any
               1-second window (its own timestamps), all delivered, none failed.
  throttle454  300 queued, the relay answers `454 4.7.0 Throttling` to every 5th
               transaction: all delivered, none bounced, attempts (MAILs) per message.
  million      N messages (default 1,000,000; --quick 100,000) written straight into queue/:
               the daemon's peak RSS, time from start to first delivery, the drain rate at
               0 ms over a window, `mailq | head -1` and `relayq status` times.

Queue files are written by `write_queue` below in the spool format (docs/spool.md), as
tests/bigqueue.rs does: envelope, then the same 2 KB message daemon.py sends.
"""
import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon import MSG, Env, Relay, wait_for  # noqa: E402
from relayfloor import floor  # noqa: E402
from sink import Sink, sink_drain  # noqa: E402
from sink import tools as sink_tools  # noqa: E402

# Targets from issue #14.
T_PIPE_25 = 350.0       # msg/s, 25 ms, PIPELINING relay (2x dma)
T_LOCK_25 = 140.0       # msg/s, 25 ms, lock-step relay (1.0x dma)
T_RATE_0 = 800.0        # msg/s at 0 ms
T_CPU_0 = 0.5           # daemon CPU ms per message at 0 ms
T_BURST = 15.0          # s until empty after recovery
T_RSS_MIB = 64.0        # daemon RSS with a million queued
T_FIRST = 2.0           # s from start to first delivery
T_DRAIN = 0.8           # drain rate at least 80% of the 1,000-message rate
T_STATUS = 3.0          # s, `relayq status`, warm


def ratio(value, target, higher_is_better=True):
    """value/target where higher is better, target/value where lower is: >= 1.0 meets it."""
    if not value:
        return 0.0 if higher_is_better else None
    return round(value / target if higher_is_better else target / value, 2)


def write_queue(spool, sub, n, base, step=1):
    """Write n queue files into spool/sub, oldest first by ID (at most 1,000 a second of
    arrival time), owned like the directory. Returns the seconds it took."""
    t0 = time.monotonic()
    d = os.path.join(spool, sub)
    st = os.stat(d)
    me = pwd.getpwuid(os.getuid()).pw_name
    chown = os.getuid() == 0 and (st.st_uid, st.st_gid) != (0, 0)
    body = MSG.replace(b"\n", b"\r\n")
    for i in range(0, n, step):
        t = base + i // 1000
        qid = "%09X%05X%08X" % (t, (i % 1000) * 1000, i)
        head = (f"relayq-envelope 1\nsender <app@example.com>\nrcpt <rcpt@example.org>\n"
                f"time {t}\nuid {os.getuid()}\nuser {me}\nend\n").encode()
        fd = os.open(os.path.join(d, qid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, head + body.replace(b"{n}", str(i).encode()))
        if chown:
            os.fchown(fd, st.st_uid, st.st_gid)
        os.close(fd)
    return time.monotonic() - t0


def status_of(pid, key):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def drain(binary, rtt_ms, pipelining, n):
    d = tempfile.mkdtemp(prefix="relayq-bench-")
    try:
        extra = (["--rtt-ms", str(rtt_ms)] if rtt_ms else []) + ([] if pipelining else ["--no-pipelining"])
        r = Relay(d, *extra)
        e = Env(binary, d, r.port)  # default config: no `connections`
        write_queue(os.path.join(d, "spool"), "new", n, int(time.time()) - 60)
        t0 = time.monotonic()
        e.start()
        ok = wait_for(lambda: r.stat("messages") >= n, 600)
        dt = time.monotonic() - t0
        cpu = e.cpu_seconds()
        e.stop()
        res = {"rtt_ms": rtt_ms, "pipelining": pipelining, "messages": n, "delivered": r.stat("messages"),
               "seconds": round(dt, 3), "msgs_per_s": round(n / dt, 1), "connections_used": r.stat("connections"),
               "peak_sessions": r.stat("peak_sessions"),
               "daemon_cpu_ms_per_msg": round(cpu * 1000 / n, 3), "complete": ok}
        r.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    # The relay's ceiling: a minimal client (bench/relayfloor.py) against a fresh relay with the
    # same options, on as many connections as the daemon had open at its peak.
    d = tempfile.mkdtemp(prefix="relayq-bench-")
    try:
        r = Relay(d, *extra)
        rate, errors = floor(r.port, n, max(1, res["peak_sessions"]), pipelining)
        r.stop()
        res["relay_floor_msgs_per_s"] = round(rate, 1)
        res["vs_floor"] = round(res["msgs_per_s"] / rate, 2) if rate else None
        if errors:
            res["relay_floor_errors"] = errors[:3]
        return res
    finally:
        shutil.rmtree(d, ignore_errors=True)


def burst451(binary, n=300, seconds=2.0):
    d = tempfile.mkdtemp(prefix="relayq-bench-")
    try:
        r = Relay(d)
        e = Env(binary, d, r.port)
        write_queue(os.path.join(d, "spool"), "new", n, int(time.time()) - 60)
        r.set_faults({"data": "451 4.3.0 relay restarting, try again"})
        e.start()
        time.sleep(seconds)
        r.set_faults({})
        t1 = time.monotonic()
        ok = wait_for(lambda: r.stat("messages") >= n, 180)
        rec = time.monotonic() - t1
        e.stop()
        r.stop()
        return {"queued": n, "burst_s": seconds, "seconds_to_empty_after_recovery": round(rec, 2),
                "delivered": r.stat("messages"), "complete": ok}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def arrived_json(r):
    out = []
    for name in sorted(os.listdir(r.out)):
        if name.endswith(".json"):
            with open(os.path.join(r.out, name)) as f:
                out.append(json.load(f))
    return out


def max_in_window(times, window=1.0):
    """The most timestamps in any half-open window [t, t + window)."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + window:
            j += 1
        best = max(best, j - i)
    return best


def rate10(binary, n=300):
    d = tempfile.mkdtemp(prefix="relayq-bench-")
    try:
        r = Relay(d)
        e = Env(binary, d, r.port, relay_extra='rate = "10/s"')
        write_queue(os.path.join(d, "spool"), "new", n, int(time.time()) - 60)
        t0 = time.monotonic()
        e.start()
        ok = wait_for(lambda: r.stat("messages") >= n, 120)
        dt = time.monotonic() - t0
        e.stop()
        r.stop()
        got = arrived_json(r)
        times = [m["mail_time"] for m in got if m.get("mail_time")]
        failed = len(os.listdir(os.path.join(d, "spool", "failed")))
        return {"queued": n, "rate": "10/s", "delivered": len(got), "failed": failed,
                "max_in_any_second": max_in_window(times), "seconds": round(dt, 2),
                "msgs_per_s": round(len(got) / dt, 2), "complete": ok}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def throttle454(binary, n=300):
    d = tempfile.mkdtemp(prefix="relayq-bench-")
    try:
        r = Relay(d)
        e = Env(binary, d, r.port)
        write_queue(os.path.join(d, "spool"), "new", n, int(time.time()) - 60)
        r.set_faults({"mode": "cycle", "cycle": ["ok", "ok", "ok", "ok", "454 4.7.0 Throttling failure"]})
        t0 = time.monotonic()
        e.start()
        ok = wait_for(lambda: r.stat("messages") >= n, 600)
        dt = time.monotonic() - t0
        e.stop()
        r.stop()
        got = arrived_json(r)
        bounces = sum(1 for m in got if not m["mail_from"])
        failed = len(os.listdir(os.path.join(d, "spool", "failed")))
        return {"queued": n, "delivered": len(got) - bounces, "bounced": bounces, "failed": failed,
                "mail_commands": r.stat("mail_commands"),
                "attempts_per_message": round(r.stat("mail_commands") / n, 3),
                "seconds": round(dt, 2), "complete": ok}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def timed_shell(cmd, env, runs=2):
    out = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(cmd, shell=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(round(time.monotonic() - t0, 3))
    return out


def million(binary, n, window):
    """The daemon with n queued: to Postfix's smtp-sink where `deps.sh --bench` unpacked it
    (so that the drain rate is relayq's, as in the sink row), else to the Python relay."""
    d = tempfile.mkdtemp(prefix="relayq-bench-", dir="/var/tmp")
    try:
        t = sink_tools()
        if t:
            r = Sink(t[0], t[2])
            delivered = lambda: r.get("mesg")   # noqa: E731
        else:
            r = Relay(d)
            delivered = lambda: r.stat("messages")   # noqa: E731
        e = Env(binary, d, r.port)
        print(f"   writing {n} queue files ...", flush=True)
        gen = write_queue(os.path.join(d, "spool"), "queue", n, int(time.time()) - 86400)
        t0 = time.monotonic()
        e.start()
        first = wait_for(lambda: delivered() >= 1, 120)
        t_first = time.monotonic() - t0
        # The drain rate over a window once deliveries run.
        time.sleep(2)
        m0, w0, c0 = delivered(), time.monotonic(), e.cpu_seconds()
        time.sleep(window)
        m1, w1, c1 = delivered(), time.monotonic(), e.cpu_seconds()
        rss_peak = status_of(e.daemon.pid, "VmHWM")
        rss_now = status_of(e.daemon.pid, "VmRSS")
        e.stop()
        mailq = os.path.join(d, "mailq")
        os.symlink(binary, mailq)
        mq = timed_shell(f"{mailq} | head -1", e.envv)
        stt = timed_shell(f"{binary} -C {e.cfg} status", e.envv)
        r.stop()
        return {"queued": n, "relay": "postfix smtp-sink" if t else "tests/relay/relay.py",
                "generate_s": round(gen, 1), "first_delivery_s": round(t_first, 3) if first else None,
                "drain_window_s": round(w1 - w0, 1), "drain_msgs_per_s": round((m1 - m0) / (w1 - w0), 1),
                "drain_cpu_ms_per_msg": round((c1 - c0) * 1000 / max(1, m1 - m0), 3),
                "daemon_peak_rss_kib": rss_peak, "daemon_rss_at_end_kib": rss_now,
                "mailq_head_s": mq, "status_s": stt}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target/release/relayq"))
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--quick", action="store_true", help="100,000 queued instead of a million")
    ap.add_argument("--million", type=int, default=None, help="how many queued for the million row")
    ap.add_argument("--only", default="",
                    help="comma-separated rows: pipelining,sink,burst451,rate10,throttle454,million")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    binary = os.path.abspath(a.bin)
    rows = set(a.only.split(",")) if a.only else {"pipelining", "sink", "burst451", "rate10", "throttle454", "million"}
    n_big = a.million or (100_000 if a.quick else 1_000_000)
    res = {}
    rate0 = rate_sink = None   # the small-queue rates the million row's drain is read against
    if "pipelining" in rows:
        print("== scale: 1,000 messages, default config, relay with / without PIPELINING")
        for rtt in (0, 25):
            for pipe in (True, False):
                k = f"drain_{rtt}ms_{'pipelining' if pipe else 'lockstep'}"
                row = drain(binary, rtt, pipe, 1000)
                if rtt == 25:
                    target = T_PIPE_25 if pipe else T_LOCK_25
                    row["target_msgs_per_s"] = target
                    row["ratio"] = ratio(row["msgs_per_s"], target)
                    tail = f"(target >= {target:.0f} msg/s: {row['ratio']}x)"
                else:
                    row["target_msgs_per_s"] = T_RATE_0
                    row["target_cpu_ms_per_msg"] = T_CPU_0
                    row["ratio"] = ratio(row["msgs_per_s"], T_RATE_0)
                    row["cpu_ratio"] = ratio(row["daemon_cpu_ms_per_msg"], T_CPU_0, higher_is_better=False)
                    tail = (f"(target >= {T_RATE_0:.0f} msg/s: {row['ratio']}x; <= {T_CPU_0} ms CPU: "
                            f"{row['cpu_ratio']}x)")
                    if pipe:
                        rate0 = row["msgs_per_s"]
                res[k] = row
                print(f"  {rtt:>2} ms {'PIPELINING' if pipe else 'lock-step ':10}  {row['msgs_per_s']:>7} msg/s  "
                      f"{row['connections_used']:>3} connections ({row['peak_sessions']} at once)  "
                      f"{row['daemon_cpu_ms_per_msg']} ms CPU/msg  {tail}; relay floor {row['relay_floor_msgs_per_s']} "
                      f"msg/s on as many connections: {row['vs_floor']}x", flush=True)
    if "sink" in rows:
        n_sink = 1000 if a.quick else 5000
        print(f"== scale: {n_sink:,} messages at 0 ms to Postfix's smtp-sink, default config")
        row = sink_drain(binary, n_sink, write_queue)
        res["drain_0ms_smtp_sink"] = row
        if "skipped" in row:
            print(f"  skipped: {row['skipped']}", flush=True)
        else:
            row["target_msgs_per_s"], row["target_cpu_ms_per_msg"] = T_RATE_0, T_CPU_0
            row["ratio"] = ratio(row["msgs_per_s"], T_RATE_0)
            row["cpu_ratio"] = ratio(row["daemon_cpu_ms_per_msg"], T_CPU_0, higher_is_better=False)
            rate_sink = row["msgs_per_s"]
            print(f"  {row['msgs_per_s']:>7} msg/s  {row['connections_used']:>3} connections  "
                  f"{row['daemon_cpu_ms_per_msg']} ms CPU/msg  (target >= {T_RATE_0:.0f} msg/s: {row['ratio']}x; "
                  f"<= {T_CPU_0} ms CPU: {row['cpu_ratio']}x); smtp-source floor {row['floor_msgs_per_s']} msg/s "
                  f"on as many sessions: {row['vs_floor']}x{'' if row['complete'] else ' INCOMPLETE'}", flush=True)
    if "burst451" in rows:
        print("== scale: 300 queued, 451 at DATA for 2 s, then recovery")
        row = burst451(binary)
        row["target_s"] = T_BURST
        row["ratio"] = ratio(row["seconds_to_empty_after_recovery"], T_BURST, higher_is_better=False)
        res["burst451"] = row
        print(f"  queue empty {row['seconds_to_empty_after_recovery']} s after recovery "
              f"(target <= {T_BURST:.0f} s: {row['ratio']}x){'' if row['complete'] else ' INCOMPLETE'}", flush=True)
    if "rate10" in rows:
        print('== scale: 300 queued, rate = "10/s"')
        row = rate10(binary)
        res["rate10"] = row
        print(f"  at most {row['max_in_any_second']} MAILs in any second (limit 10); {row['delivered']} delivered, "
              f"{row['failed']} failed, {row['msgs_per_s']} msg/s{'' if row['complete'] else ' INCOMPLETE'}", flush=True)
    if "throttle454" in rows:
        print("== scale: 300 queued, 454 Throttling to every 5th transaction")
        row = throttle454(binary)
        res["throttle454"] = row
        print(f"  {row['delivered']} delivered, {row['bounced']} bounced, {row['failed']} failed, "
              f"{row['attempts_per_message']} attempts per message (target < 2), {row['seconds']} s"
              f"{'' if row['complete'] else ' INCOMPLETE'}", flush=True)
    if "million" in rows:
        print(f"== scale: {n_big:,} queued, written straight into queue/")
        row = million(binary, n_big, 15 if a.quick else 30)
        rss_mib = row["daemon_peak_rss_kib"] / 1024
        row["targets"] = {"rss_mib": T_RSS_MIB, "first_delivery_s": T_FIRST, "drain_vs_small_queue": T_DRAIN, "status_s": T_STATUS}
        row["ratios"] = {
            "rss": ratio(rss_mib, T_RSS_MIB, higher_is_better=False),
            "first_delivery": ratio(row["first_delivery_s"], T_FIRST, higher_is_better=False),
            "status_warm": ratio(row["status_s"][-1], T_STATUS, higher_is_better=False),
        }
        # Against the small queue's rate to the same relay: the sink row's, or the Python
        # relay's 0 ms PIPELINING row.
        small, small_name = ((rate_sink, "the sink row's") if row["relay"].startswith("postfix")
                             else (rate0, "the 1,000-message"))
        if small:
            row["drain_vs_small_queue"] = round(row["drain_msgs_per_s"] / small, 2)
            row["ratios"]["drain"] = ratio(row["drain_vs_small_queue"], T_DRAIN)
        res["million"] = row
        print(f"  generated in {row['generate_s']} s; peak RSS {rss_mib:.1f} MiB (target <= {T_RSS_MIB:.0f}: "
              f"{row['ratios']['rss']}x); first delivery {row['first_delivery_s']} s (target <= {T_FIRST:.0f}: "
              f"{row['ratios']['first_delivery']}x)")
        drain_note = (f" = {row['drain_vs_small_queue']}x {small_name} rate (target >= {T_DRAIN}: "
                      f"{row['ratios']['drain']}x)" if small else "")
        print(f"  drain {row['drain_msgs_per_s']} msg/s to {row['relay']} over {row['drain_window_s']} s, "
              f"{row['drain_cpu_ms_per_msg']} ms CPU/msg{drain_note}")
        print(f"  mailq | head -1: {row['mailq_head_s']} s; relayq status: {row['status_s']} s "
              f"(warm target <= {T_STATUS:.0f}: {row['ratios']['status_warm']}x)", flush=True)
    with open(os.path.join(a.out, "scale.json"), "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
