#!/usr/bin/env python3
"""make bench, daemon section: drain rate (0 ms and 25 ms round trip), sendmail→relay latency,
idle footprint, and a relay outage. Uses the project's test relay (aiosmtpd, tests/relay/relay.py)
and the real binaries. Reports; never fails on slowness.

Usage: bench/daemon.py --bin target/release/relayq --out bench/out [--quick]
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"
TICK = os.sysconf("SC_CLK_TCK")
MSG = ("Subject: bench {n}\nFrom: app@example.com\nTo: rcpt@example.org\n\n" + ("x" * 72 + "\n") * 26).encode()


class Relay:
    def __init__(self, d, *extra):
        self.d = d
        self.out = os.path.join(d, "arrived")
        self.stats = os.path.join(d, "stats.json")
        self.faults = os.path.join(d, "faults.json")
        port_file = os.path.join(d, "port")
        self.p = subprocess.Popen([PY, os.path.join(REPO, "tests/relay/relay.py"), "--port", "0", "--port-file", port_file,
                                   "--outdir", self.out, "--stats", self.stats, "--stats-ms", "10", "--faults", self.faults,
                                   *extra],
                                  stdout=subprocess.DEVNULL)
        for _ in range(400):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            time.sleep(0.025)
        self.port = int(open(port_file).read())

    def arrived(self):
        try:
            return len([f for f in os.listdir(self.out) if f.endswith(".json")])
        except FileNotFoundError:
            return 0

    def stat(self, k):
        try:
            return json.load(open(self.stats)).get(k, 0)
        except (OSError, ValueError):
            return 0

    def set_faults(self, spec):
        tmp = self.faults + ".tmp"
        with open(tmp, "w") as f:
            json.dump(spec, f)
        os.replace(tmp, self.faults)

    def stop(self):
        self.p.terminate()
        self.p.wait()


class Env:
    def __init__(self, binary, d, port, extra="", relay_extra=""):
        self.bin, self.d = binary, d
        self.cfg = os.path.join(d, "relayq.toml")
        with open(self.cfg, "w") as f:
            f.write(f'spool_dir = "{d}/spool"\n[relay]\nurl = "smtp://127.0.0.1:{port}"\nallow_plaintext = true\n{relay_extra}\n'
                    f'[address]\nadmin = "admin@example.com"\nsender = "server@example.com"\ndomain = "example.com"\n'
                    f'[log]\nsyslog = false\n{extra}\n')
        subprocess.run([binary, "-C", self.cfg, "init"], check=True, stdout=subprocess.DEVNULL)
        self.sendmail = os.path.join(d, "sendmail")
        os.symlink(binary, self.sendmail)
        self.envv = dict(os.environ, RELAYQ_CONFIG=self.cfg)
        self.daemon = None

    def send(self, n):
        subprocess.run([self.sendmail, "-i", "rcpt@example.org"], input=MSG.replace(b"{n}", str(n).encode()), env=self.envv, check=True)

    def start(self):
        self.log = open(os.path.join(self.d, "daemon.log"), "w")
        self.daemon = subprocess.Popen([self.bin, "-C", self.cfg, "daemon", "--foreground"], stdout=subprocess.DEVNULL, stderr=self.log)

    def cpu_seconds(self):
        f = open(f"/proc/{self.daemon.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK

    def ctx_switches(self):
        total = 0
        for t in os.listdir(f"/proc/{self.daemon.pid}/task"):
            try:
                for line in open(f"/proc/{self.daemon.pid}/task/{t}/status"):
                    if "ctxt_switches" in line:
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def rss_kib(self):
        for line in open(f"/proc/{self.daemon.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        if self.daemon:
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait(timeout=30)


def wait_for(pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def drain(binary, rtt_ms, n, conns):
    d = tempfile.mkdtemp(prefix="relayq-bench-")
    try:
        r = Relay(d, *(["--rtt-ms", str(rtt_ms)] if rtt_ms else []))
        e = Env(binary, d, r.port, f"[queue]\nconnections = {conns}")
        for i in range(n):
            e.send(i)
        t0 = time.monotonic()
        e.start()
        ok = wait_for(lambda: r.arrived() >= n, 300)
        dt = time.monotonic() - t0
        cpu = e.cpu_seconds()
        e.stop()
        res = {"rtt_ms": rtt_ms, "messages": n, "delivered": r.arrived(), "seconds": round(dt, 3), "msgs_per_s": round(n / dt, 1),
               "connections_configured": conns, "connections_used": r.stat("connections"),
               "daemon_cpu_ms_per_msg": round(cpu * 1000 / n, 3), "complete": ok}
        r.stop()
        return res
    finally:
        shutil.rmtree(d, ignore_errors=True)


def latency_and_idle(binary, n):
    d = tempfile.mkdtemp(prefix="relayq-bench-")
    try:
        r = Relay(d)
        e = Env(binary, d, r.port)
        e.start()
        time.sleep(0.5)
        lat = []
        for i in range(n):
            e.send(i)
            t_exit = time.time_ns()
            want = i + 1
            wait_for(lambda: r.arrived() >= want, 10)
            f = os.path.join(r.out, sorted(os.listdir(r.out))[-1]) if r.arrived() else None
            if f:
                lat.append((os.stat(f).st_mtime_ns - t_exit) / 1e6)
        lat.sort()
        p50 = statistics.median(lat)
        p95 = lat[int(len(lat) * 0.95) - 1]
        # Idle: after the connection's idle timeout (5 s) closes it.
        time.sleep(6.5)
        rss = e.rss_kib()
        c0 = e.ctx_switches()
        time.sleep(10)
        c1 = e.ctx_switches()
        e.stop()
        r.stop()
        return {"samples": len(lat), "latency_p50_ms": round(p50, 2), "latency_p95_ms": round(p95, 2),
                "idle_rss_kib": rss, "idle_wakeups_per_s": round((c1 - c0) / 10, 2)}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def outage(binary, n, seconds):
    d = tempfile.mkdtemp(prefix="relayq-bench-")
    try:
        r = Relay(d)
        e = Env(binary, d, r.port)
        e.start()
        time.sleep(0.5)
        r.set_faults({k: "451 4.3.2 outage" for k in ["ehlo", "mail", "rcpt_all", "data", "dot"]})
        c0 = r.stat("connections")
        t0 = time.monotonic()
        for i in range(n):
            e.send(i)
        time.sleep(max(0, seconds - (time.monotonic() - t0)))
        attempts = r.stat("connections") - c0
        r.set_faults({})
        t1 = time.monotonic()
        ok = wait_for(lambda: r.arrived() >= n, 120)
        rec = time.monotonic() - t1
        e.stop()
        r.stop()
        return {"outage_s": seconds, "queued": n, "connection_attempts_during_outage": attempts,
                "attempts_per_minute": round(attempts * 60 / seconds, 1), "seconds_to_empty_after_recovery": round(rec, 2),
                "complete": ok}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/relayq"))
    ap.add_argument("--out", default=os.path.join(REPO, "bench/out"))
    ap.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    binary = os.path.abspath(a.bin)
    n = 200 if a.quick else 1000
    res = {}
    print("== daemon: drain rate (1,000 queued 2 KB messages)")
    res["drain_0ms"] = drain(binary, 0, n, 2)
    print("   0 ms RTT:  {msgs_per_s:>7} msg/s  {connections_used} connections  {daemon_cpu_ms_per_msg} ms CPU/msg  (target >= 360 msg/s, <= 1 ms CPU/msg)".format(**res["drain_0ms"]))
    res["drain_25ms"] = drain(binary, 25, n, 10)
    print("  25 ms RTT:  {msgs_per_s:>7} msg/s  {connections_used} connections  {daemon_cpu_ms_per_msg} ms CPU/msg  (target >= 175 msg/s with <= 10 connections; dma 175)".format(**res["drain_25ms"]))
    print("== daemon: latency sendmail exit -> relay 250, and idle footprint")
    res["latency"] = latency_and_idle(binary, 200)
    print("  p50 {latency_p50_ms} ms, p95 {latency_p95_ms} ms over {samples}  (target 5 / 10 ms; Postfix 5.9 / 8.7; nullmailer, dma ~50)".format(**res["latency"]))
    print("  idle RSS {idle_rss_kib} KiB, {idle_wakeups_per_s} wake-ups/s  (target <= 4096 KiB, 0/s)".format(**res["latency"]))
    secs = 20 if a.quick else 60
    print(f"== daemon: {secs} s relay outage (every command 451), then recovery")
    res["outage"] = outage(binary, 200, secs)
    print("  {connection_attempts_during_outage} connection attempts ({attempts_per_minute}/min; target <= 6/min); queue empty {seconds_to_empty_after_recovery} s after recovery (target <= 15 s)".format(**res["outage"]))
    with open(os.path.join(a.out, "daemon.json"), "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
