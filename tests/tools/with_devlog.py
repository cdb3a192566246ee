#!/usr/bin/python3
"""Run a program with a /dev/log of our own and print what it logged there.

usage: unshare --mount --propagation private with_devlog.py -- PROGRAM ARGS...

Inside a private mount namespace (root only), a fresh tmpfs replaces /dev, holding the
host's null, zero, random and urandom and a datagram socket at /dev/log, as syslogd or
journald would bind it. The program runs; the records it sent (raw, one per line, e.g.
"<22>Dec  1 14:00:00 relayq[42]: ...") are printed on stdout once it has exited and the
socket has been quiet for 0.5 s (at most 5 s). Exits with the program's exit code; the
program's own stdout and stderr go to our stderr.
"""
import os, socket, subprocess, sys, tempfile, time

def main():
    argv = sys.argv[sys.argv.index("--") + 1:]
    new = tempfile.mkdtemp(prefix="devlog-")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", new], check=True)
    for n in ["null", "zero", "random", "urandom"]:
        open(os.path.join(new, n), "w").close()
        subprocess.run(["mount", "--bind", "/dev/" + n, os.path.join(new, n)], check=True)
    subprocess.run(["mount", "--move", new, "/dev"], check=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("/dev/log")
    os.chmod("/dev/log", 0o666)
    s.settimeout(0.5)
    p = subprocess.Popen(argv, stdout=sys.stderr, stderr=sys.stderr)
    records = []
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        try:
            records.append(s.recv(65536))
        except socket.timeout:
            pass
    if p.poll() is None:
        p.kill()
    code = p.wait()
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            records.append(s.recv(65536))
        except socket.timeout:
            break
    for r in records:
        sys.stdout.write(r.decode("utf-8", "replace").replace("\n", " ") + "\n")
    sys.exit(code if code >= 0 else 128 - code)

main()
