#!/usr/bin/env python3
"""The relay's own ceiling: the least work a client can ask of the project's test relay
(tests/relay/relay.py, single-threaded aiosmtpd) for N messages, so that the daemon's drain
rates are read against what the relay can take, not only against absolute targets.

A minimal client: `conns` threads, each one plain connection (as bench/scale.py configures the
daemon: no TLS, no AUTH), EHLO once, then per message the RFC 2920 chain relayq uses where the
relay offers PIPELINING: the previous body's final dot and this message's MAIL, RCPT and DATA
in one write, the replies read together; without PIPELINING, lock-step (one command, one
reply). Same 2 KB message as the daemon sends. No queue, no journal, no fsync: whatever rate
this reaches is the relay's limit on this machine now.

Usage (module): floor(port, n, conns, pipelining) -> msgs/s
"""
import socket
import threading
import time

from daemon import MSG


def _reply(f):
    """Read one (possibly multi-line) reply; return its code."""
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("relay closed the connection")
        if line[3:4] != b"-":
            return int(line[:3])


def _session(port, count, pipelining, body, errors):
    try:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        _reply(f)
        s.sendall(b"EHLO floor.example.com\r\n")
        _reply(f)
        cmds = b"MAIL FROM:<app@example.com>\r\nRCPT TO:<rcpt@example.org>\r\nDATA\r\n"
        dot = body + b".\r\n"
        if pipelining:
            s.sendall(cmds)
            for i in range(count):
                # MAIL, RCPT, DATA's 354, and from the second on the previous dot's 250 first.
                for _ in range(3 if i == 0 else 4):
                    _reply(f)
                s.sendall(dot + (cmds if i + 1 < count else b""))
            _reply(f)
        else:
            for _ in range(count):
                for c in cmds.split(b"\r\n")[:3]:
                    s.sendall(c + b"\r\n")
                    _reply(f)
                s.sendall(dot)
                _reply(f)
        s.sendall(b"QUIT\r\n")
        _reply(f)
        s.close()
    except (OSError, ValueError) as e:
        errors.append(str(e))


def floor(port, n, conns, pipelining=True):
    """Send n messages over `conns` connections; return (msgs/s, errors)."""
    body = MSG.replace(b"{n}", b"0").replace(b"\n", b"\r\n")
    per = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
    errors = []
    threads = [threading.Thread(target=_session, args=(port, c, pipelining, body, errors))
               for c in per if c]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return n / (time.monotonic() - t0), errors
