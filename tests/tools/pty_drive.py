#!/usr/bin/python3
"""Drive a program on a pseudo-terminal, as a person at a terminal would.

usage: pty_drive.py [--stty] STEPS_JSON -- PROGRAM ARGS...

STEPS_JSON is a list of [expect, answer] pairs: wait (at most 10 s) until `expect` has
appeared in the program's output since the previous step, then type `answer` and Enter. A
step with a third element "hidden" is a password prompt: before typing, wait (at most 10 s)
until the program has turned the terminal's echo off, as a person would see the cursor stop
echoing. Typing before that would be echoed by the terminal whatever the program does next.
A step with "raw" types `answer` as it is, without Enter ("\u0003" is Ctrl-C: the terminal
sends SIGINT). With --stty, once the program has ended, the terminal's settings as
`stty -a` shows them are printed last, on a line "[pty_drive: stty: ...]".
Afterwards the rest of the output is read (at most 20 s). Prints the whole transcript (what
the terminal showed, echo included) and exits with the program's exit code; 124 when a step
or the end timed out (the program is killed).
"""
import json, os, pty, select, signal, subprocess, sys, termios, time

def main():
    sep = sys.argv.index("--")
    show_stty = sys.argv[1] == "--stty"
    steps = json.loads(sys.argv[2 if show_stty else 1])
    argv = sys.argv[sep + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    out = b""
    seen = 0
    def read_for(deadline, want=None):
        nonlocal out
        while time.monotonic() < deadline:
            if want is not None and want in out[seen:]:
                return True
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return want is None
                if not data:
                    return want is None
                out += data
        return False
    code = None
    def echo_off_by(deadline):
        while time.monotonic() < deadline:
            if not termios.tcgetattr(fd)[3] & termios.ECHO:
                return True
            read_for(time.monotonic() + 0.05)
        return False
    def give_up(why):
        sys.stdout.write(out.decode("utf-8", "replace"))
        sys.stdout.write(f"\n[pty_drive: {why}]\n")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sys.exit(124)
    for step in steps:
        expect, answer = step[0], step[1]
        want = expect.encode()
        if not read_for(time.monotonic() + 10, want):
            give_up(f"timed out waiting for {expect!r}")
        seen = out.index(want, seen) + len(want)
        if "hidden" in step[2:] and not echo_off_by(time.monotonic() + 10):
            give_up(f"echo still on 10 s after {expect!r}")
        os.write(fd, answer.encode() + (b"" if "raw" in step[2:] else b"\r"))
    if not read_for(time.monotonic() + 20):
        os.kill(pid, signal.SIGKILL)
        code = 124
    _, status = os.waitpid(pid, 0)
    if code is None:
        code = os.waitstatus_to_exitcode(status)
    sys.stdout.write(out.decode("utf-8", "replace"))
    if show_stty:
        st = subprocess.run(["stty", "-a"], stdin=fd, capture_output=True, text=True)
        sys.stdout.write("\n[pty_drive: stty: " + " ".join(st.stdout.split()) + "]\n")
    sys.exit(code if code >= 0 else 128 - code)

main()
