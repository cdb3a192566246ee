#!/usr/bin/env python3
"""make bench, enqueue section: 1,000 sequential 2 KB messages through `sendmail` (a fresh
process each, as callers do) against the floor (bench/floor.c: read, write, fsync, rename,
fsync dir), alternated in rounds on the same file system; CPU per message and peak RSS from
wait4(); plus one 100 MB message. Reports; never fails on slowness."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = b"Subject: bench\nFrom: app@example.com\nTo: rcpt@example.org\n\n" + (b"x" * 72 + b"\n") * 26  # ~2 KB


SPAWN = None


def run_n(argv, env, stdin_path, n):
    """Run argv n times through bench/spawn (fork+exec from a tiny C parent, so peak RSS
    is the child's own); return (wall s, user+sys s, max peak RSS KiB, failures)."""
    out = subprocess.run([SPAWN, stdin_path, str(n), *argv], env=env, capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]) / 1e9, int(out[1]) / 1e6, int(out[2]), int(out[3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/relayq"))
    ap.add_argument("--out", default=os.path.join(REPO, "bench/out"))
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--big-mb", type=int, default=100)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    global SPAWN
    floor = os.path.join(a.out, "floor")
    SPAWN = os.path.join(a.out, "spawn")
    subprocess.run(["cc", "-O2", "-o", floor, os.path.join(REPO, "bench/floor.c")], check=True)
    subprocess.run(["cc", "-O2", "-o", SPAWN, os.path.join(REPO, "bench/spawn.c")], check=True)
    base = tempfile.mkdtemp(prefix="relayq-bench-", dir="/var/tmp")
    try:
        cfg = os.path.join(base, "relayq.toml")
        with open(cfg, "w") as f:
            f.write(f'spool_dir = "{base}/spool"\nmax_message_size = "200M"\n[address]\nadmin = "admin@example.com"\n'
                    'sender = "server@example.com"\ndomain = "example.com"\n')
        binary = os.path.abspath(a.bin)
        subprocess.run([binary, "-C", cfg, "init"], check=True, stdout=subprocess.DEVNULL)
        # Installed, sendmail is the submission front end beside relayq (relayq-sendmail).
        front = os.path.join(os.path.dirname(binary), "relayq-sendmail")
        sendmail = os.path.join(base, "sendmail")
        os.symlink(front if os.path.exists(front) else binary, sendmail)
        # The floor writes into the spool's own tmp/ and new/: the same directories, so the
        # same ext4 block group and inode bitmap. In separate directories the two differed by
        # up to 0.5 ms a message from where the file system put them, not from the work.
        fspool = os.path.join(base, "spool")
        msg = os.path.join(base, "msg.eml")
        with open(msg, "wb") as f:
            f.write(BODY)
        env = dict(os.environ, RELAYQ_CONFIG=cfg, FLOOR_SPOOL=fspool)
        per = a.messages // a.rounds
        r_rounds, f_rounds, r_cpu, f_cpu, r_rss, f_rss, bad = [], [], 0.0, 0.0, 0, 0, 0
        for i in range(a.rounds):
            # Alternate which goes first: the first round after the deletions below creates
            # files while ext4 skips the inodes freed in the last 30 s, which costs more.
            order = ("relayq", "floor") if i % 2 == 0 else ("floor", "relayq")
            for who in order:
                if who == "relayq":
                    w, c, rss, b = run_n([sendmail, "-i", "rcpt@example.org"], env, msg, per)
                    r_rounds.append(w); r_cpu += c; r_rss = max(r_rss, rss); bad += b
                else:
                    w, c, rss, b = run_n([floor, "-i", "rcpt@example.org"], env, msg, per)
                    f_rounds.append(w); f_cpu += c; f_rss = max(f_rss, rss); bad += b
            d = os.path.join(fspool, "new")
            for x in os.listdir(d):
                os.unlink(os.path.join(d, x))
        n = per * a.rounds
        r_med, f_med = statistics.median(r_rounds), statistics.median(f_rounds)
        res = {
            "filesystem": subprocess.run(["df", "-T", base], capture_output=True, text=True).stdout.splitlines()[-1].split()[1],
            "messages": n, "failures": bad,
            "relayq_msgs_per_s": round(per / r_med, 1), "floor_msgs_per_s": round(per / f_med, 1),
            "relayq_ms_per_msg": round(r_med * 1000 / per, 3), "floor_ms_per_msg": round(f_med * 1000 / per, 3),
            "ratio_time_vs_floor": round(r_med / f_med, 3),
            "relayq_cpu_ms_per_msg": round(r_cpu * 1000 / n, 3), "floor_cpu_ms_per_msg": round(f_cpu * 1000 / n, 3),
            "relayq_peak_rss_kib": r_rss, "floor_peak_rss_kib": f_rss,
            "anchors_ratio": {"dma": 1.15, "nullmailer": 2.0, "postfix": 2.7},
        }
        # One big message: memory must stay bounded.
        big = os.path.join(base, "big.eml")
        with open(big, "wb") as f:
            f.write(b"Subject: big\n\n")
            line = b"y" * 76 + b"\n"
            for _ in range(a.big_mb * 1024 * 1024 // len(line)):
                f.write(line)
        w, c, rss, st = run_n([sendmail, "-i", "rcpt@example.org"], env, big, 1)
        res.update({"big_mb": a.big_mb, "big_seconds": round(w, 3), "big_peak_rss_kib": rss, "big_failures": st})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("== enqueue: %d sequential 2 KB messages (%s), median of %d alternating rounds" % (n, res["filesystem"], a.rounds))
    print("  relayq  %8.1f msg/s  %6.3f ms/msg  CPU %5.3f ms/msg  peak RSS %5d KiB" % (res["relayq_msgs_per_s"], res["relayq_ms_per_msg"], res["relayq_cpu_ms_per_msg"], res["relayq_peak_rss_kib"]))
    print("  floor   %8.1f msg/s  %6.3f ms/msg  CPU %5.3f ms/msg  peak RSS %5d KiB" % (res["floor_msgs_per_s"], res["floor_ms_per_msg"], res["floor_cpu_ms_per_msg"], res["floor_peak_rss_kib"]))
    print("  ratio relayq/floor: %.2fx  (target <= 1.3x; dma ~1.15x, nullmailer ~2x, Postfix ~2.7x)" % res["ratio_time_vs_floor"])
    print("  %d MB message: %.2f s, peak RSS %d KiB (target <= 4096 KiB), failures %d" % (res["big_mb"], res["big_seconds"], res["big_peak_rss_kib"], res["big_failures"]))
    with open(os.path.join(a.out, "enqueue.json"), "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
