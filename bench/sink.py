#!/usr/bin/env python3
"""The 0 ms row against a relay that is not the limit: Postfix's smtp-sink (C, PIPELINING,
throws the mail away), with Postfix's smtp-source (C, no queue, no fsync) on as many
sessions as the daemon opened as the floor. The Python relay takes about 1,000 msg/s on this
machine; smtp-sink takes well over ten times that, so this row shows the daemon's own limit.

Both programs come from Debian's postfix package, unpacked (not installed) by
`scripts/deps.sh --bench` into $RELAYQ_TEST_DEPS/postfix. Without them the row is skipped.

Usage (module): sink_drain(binary, n, write_queue) -> row (dict); write_queue is scale.py's
"""
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from daemon import MSG, Env, wait_for

DEPS = os.environ.get("RELAYQ_TEST_DEPS") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "relayq-test-deps")
ROOT = os.path.join(DEPS, "postfix")


def tools():
    """(smtp-sink, smtp-source, env) or None when `scripts/deps.sh --bench` has not run."""
    sink, source = (os.path.join(ROOT, "usr/sbin", p) for p in ("smtp-sink", "smtp-source"))
    if not (os.access(sink, os.X_OK) and os.access(source, os.X_OK)):
        return None
    return sink, source, dict(os.environ, LD_LIBRARY_PATH=os.path.join(ROOT, "usr/lib/postfix"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """smtp-sink on a loopback port; `-c` prints "sess=N quit=N mesg=N" after every message."""

    def __init__(self, exe, env):
        self.port = free_port()
        user = ["-u", "nobody"] if os.getuid() == 0 else []   # it refuses to run as root
        self.p = subprocess.Popen([exe, "-c", *user, f"127.0.0.1:{self.port}", "256"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.counts = {}
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(self._listening, 10)

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def _read(self):
        buf = b""
        while chunk := self.p.stdout.read1(65536):
            buf += chunk
            *done, buf = buf.split(b"\r")
            if done:
                self.counts = dict(kv.split("=", 1) for kv in done[-1].decode().split() if "=" in kv)

    def get(self, key):
        return int(self.counts.get(key, 0))

    def stop(self):
        self.p.terminate()
        self.p.wait()


def sink_drain(binary, n, write_queue):
    t = tools()
    if not t:
        return {"skipped": "no smtp-sink: run scripts/deps.sh --bench"}
    exe_sink, exe_source, env = t
    d = tempfile.mkdtemp(prefix="relayq-bench-")
    try:
        s = Sink(exe_sink, env)
        e = Env(binary, d, s.port)      # default config
        before = s.get("mesg")          # the readiness probe is a session, not a message
        write_queue(os.path.join(d, "spool"), "new", n, int(time.time()) - 60)
        t0 = time.monotonic()
        e.start()
        ok = wait_for(lambda: s.get("mesg") - before >= n, 300)
        dt = time.monotonic() - t0
        cpu = e.cpu_seconds()
        e.stop()
        sessions = max(1, s.get("sess") - 1)
        row = {"relay": "postfix smtp-sink", "messages": n, "delivered": s.get("mesg") - before,
               "seconds": round(dt, 3), "msgs_per_s": round(n / dt, 1), "connections_used": sessions,
               "daemon_cpu_ms_per_msg": round(cpu * 1000 / n, 3), "complete": ok}
        # The floor: smtp-source, the same message, as many sessions, each kept open (-d).
        msg = os.path.join(d, "msg.txt")
        with open(msg, "wb") as f:
            f.write(MSG.replace(b"{n}", b"0"))
        t0 = time.monotonic()
        src = subprocess.run([exe_source, "-d", "-s", str(sessions), "-m", str(n), "-F", msg,
                              "-f", "app@example.com", "-t", "rcpt@example.org", f"127.0.0.1:{s.port}"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
        floor = n / (time.monotonic() - t0)
        s.stop()
        row["floor_client"] = "postfix smtp-source (lock-step, no queue)"
        row["floor_msgs_per_s"] = round(floor, 1) if src.returncode == 0 else None
        row["vs_floor"] = round(row["msgs_per_s"] / floor, 2) if src.returncode == 0 else None
        if src.returncode != 0:
            row["floor_error"] = src.stderr.decode(errors="replace").strip()[-200:]
        return row
    finally:
        shutil.rmtree(d, ignore_errors=True)
