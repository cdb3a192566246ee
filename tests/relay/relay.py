#!/usr/bin/python3
"""Test relay: a real SMTP server (aiosmtpd, which this project did not write) with STARTTLS,
implicit TLS, AUTH PLAIN/LOGIN/XOAUTH2, PIPELINING, and fault injection per command and per
recipient. Used by the integration tests, `make demo` and `make bench`.

Run with Debian's interpreter: /usr/bin/python3 tests/relay/relay.py --port 0 --port-file F ...
Accepted messages are written atomically to OUTDIR/<seq>.json:
  {"mail_from", "rcpt_tos", "mail_options", "rcpt_options", "data", "auth_user", "tls", "peer"}
Faults come from a JSON file (--faults), re-read whenever it changes; see README.md.
"""
import argparse
import asyncio
import base64
import itertools
import json
import os
import signal
import ssl
import sys
import threading
import time
import warnings

warnings.simplefilter("ignore")

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

ARGS = None
SEQ = itertools.count(1)
LOCK = threading.Lock()
STATS = {"connections": 0, "mail_commands": 0, "auth_ok": 0, "auth_fail": 0, "messages": 0}
CYCLE = itertools.count(0)


class Faults:
    """The fault spec, re-read when the file's mtime changes."""

    def __init__(self, path):
        self.path, self.mtime, self.spec, self.used = path, None, {}, {}

    def get(self):
        if not self.path:
            return {}
        try:
            m = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            self.spec, self.mtime = {}, None
            return self.spec
        if m != self.mtime:
            try:
                with open(self.path) as f:
                    self.spec = json.load(f)
                self.mtime, self.used = m, {}
            except (OSError, ValueError):
                pass
        return self.spec

    def take(self, key):
        """The fault for `key`, honouring an optional "count" limit."""
        spec = self.get()
        if key not in spec:
            return None
        limit = spec.get("count")
        if limit is not None:
            n = self.used.get(key, 0)
            if n >= limit:
                return None
            self.used[key] = n + 1
        return spec[key]


FAULTS = None


def bump(key):
    with LOCK:
        STATS[key] += 1
        if ARGS.stats:
            write_atomic(ARGS.stats, json.dumps(STATS))


def write_atomic(path, text):
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def log(*a):
    if ARGS.verbose:
        print("relay:", *a, file=sys.stderr, flush=True)


class FaultySMTP(SMTP):
    """aiosmtpd's SMTP with fault injection points around each command."""

    def connection_made(self, transport):
        bump("connections")
        self._cycle_action = "ok"
        super().connection_made(transport)
        spec = FAULTS.get()
        if spec.get("connect") and self._bump_used("connect"):
            transport.write((spec["connect"] + "\r\n").encode())
            transport.close()

    def _bump_used(self, key):
        return FAULTS.take(key) is not None

    async def _delay(self):
        if ARGS.delay_ms:
            await asyncio.sleep(ARGS.delay_ms / 1000.0)

    async def push(self, status):
        await self._delay()
        await super().push(status)

    async def _fault(self, stage):
        """Apply stall/disconnect faults for `stage`. True if the command must not proceed."""
        spec = FAULTS.get()
        if spec.get("stall_at") == stage and FAULTS.take("stall_at") is not None:
            log("stall at", stage)
            await asyncio.sleep(float(spec.get("stall_seconds", 30)))
        if spec.get("disconnect_at") == stage and FAULTS.take("disconnect_at") is not None:
            log("disconnect at", stage)
            self.transport.abort()
            return True
        return False

    async def smtp_EHLO(self, arg):
        if await self._fault("ehlo"):
            return
        f = FAULTS.take("ehlo")
        if f:
            await self.push(f)
            if f.startswith("421"):
                self.transport.close()
            return
        await super().smtp_EHLO(arg)

    async def smtp_MAIL(self, arg):
        bump("mail_commands")
        spec = FAULTS.get()
        self._cycle_action = "ok"
        if spec.get("mode") == "cycle":
            seq = spec.get("cycle", ["ok"])
            self._cycle_action = seq[next(CYCLE) % len(seq)]
            if self._cycle_action == "451":
                await self.push("451 4.3.0 cycle: try again later")
                return
        if await self._fault("mail"):
            return
        f = FAULTS.take("mail")
        if f:
            await self.push(f)
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg):
        if await self._fault("rcpt"):
            return
        f = FAULTS.take("rcpt_all")
        if f:
            await self.push(f)
            return
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg):
        if self._cycle_action == "disconnect" or await self._fault("data"):
            self.transport.abort()
            return
        f = FAULTS.take("data")
        if f:
            await self.push(f)
            return
        spec = FAULTS.get()
        if spec.get("disconnect_at") == "middata" and FAULTS.take("disconnect_at") is not None:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            try:
                await asyncio.wait_for(self._reader.readuntil(b"\r\n"), 5)
            except Exception:
                pass
            self.transport.abort()
            return
        if spec.get("stall_at") == "dot" and FAULTS.take("stall_at") is not None:
            self._stall_dot = float(spec.get("stall_seconds", 30))
        await super().smtp_DATA(arg)


class Handler:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if not ARGS.no_pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        per = FAULTS.get().get("rcpt", {})
        if isinstance(per, dict) and address in per:
            return per[address]
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        stall = getattr(server, "_stall_dot", 0)
        if stall:
            server._stall_dot = 0
            await asyncio.sleep(stall)
        f = FAULTS.take("dot")
        if f:
            return f
        n = next(SEQ)
        msg = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "rcpt_options": list(envelope.rcpt_options),
            "data": envelope.original_content.decode("latin-1"),
            "auth_user": auth_user(session),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "peer": str(session.peer),
        }
        if ARGS.outdir:
            write_atomic(os.path.join(ARGS.outdir, f"{n:06d}.json"), json.dumps(msg))
        bump("messages")
        if FAULTS.take("dot_then_disconnect"):
            server.transport.abort()
        return "250 2.0.0 OK queued as %06d" % n

    async def auth_XOAUTH2(self, server, args):
        if not ARGS.xoauth2_token or len(args) < 2:
            return AuthResult(success=False)
        try:
            raw = base64.b64decode(args[1]).decode()
        except Exception:
            return AuthResult(success=False)
        parts = dict(p.split("=", 1) for p in raw.split("\x01") if "=" in p)
        ok = parts.get("auth") == "Bearer " + ARGS.xoauth2_token
        bump("auth_ok" if ok else "auth_fail")
        if not ok:
            return AuthResult(success=False, handled=False, message="535 5.7.8 token rejected")
        return AuthResult(success=True, auth_data=LoginPassword(parts.get("user", "").encode(), b""))


def auth_user(session):
    d = getattr(session, "auth_data", None)
    if isinstance(d, LoginPassword):
        return d.login.decode()
    return None


def authenticator(server, session, envelope, mechanism, auth_data):
    user, _, pw = ARGS.auth.partition(":")
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == pw
    bump("auth_ok" if ok else "auth_fail")
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None,
                      message=None if ok else "535 5.7.8 authentication credentials invalid")


class FaultyController(Controller):
    def factory(self):
        return FaultySMTP(self.handler, **self.SMTP_kwargs)


def main():
    global ARGS, FAULTS
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--auth", help="USER:PASS")
    p.add_argument("--auth-required", action="store_true")
    p.add_argument("--xoauth2-token")
    p.add_argument("--no-pipelining", action="store_true")
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--outdir")
    p.add_argument("--faults")
    p.add_argument("--stats")
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true")
    ARGS = p.parse_args()
    import logging
    if ARGS.verbose:
        logging.basicConfig(level=logging.DEBUG)
    else:
        logging.getLogger("mail.log").setLevel(logging.CRITICAL)
        warnings.simplefilter("ignore")
    FAULTS = Faults(ARGS.faults)
    if ARGS.outdir:
        os.makedirs(ARGS.outdir, exist_ok=True)

    ctx = None
    if ARGS.tls != "none":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(ARGS.cert, ARGS.key)
    kw = dict(hostname=ARGS.host, port=ARGS.port, data_size_limit=ARGS.size or None, enable_SMTPUTF8=True)
    smtp_kw = dict(server_hostname="relay.test", decode_data=False)
    if ARGS.auth or ARGS.xoauth2_token:
        smtp_kw.update(authenticator=authenticator if ARGS.auth else (lambda *a: AuthResult(success=False)),
                       auth_required=ARGS.auth_required)
    if ARGS.tls == "starttls":
        smtp_kw.update(tls_context=ctx, require_starttls=True)
    elif ARGS.tls == "implicit":
        kw["ssl_context"] = ctx
        smtp_kw["auth_require_tls"] = False
    else:
        smtp_kw["auth_require_tls"] = False

    # Port 0: pick a free port ourselves (aiosmtpd needs a concrete one).
    if ARGS.port == 0:
        import socket
        s = socket.socket()
        s.bind((ARGS.host, 0))
        kw["port"] = s.getsockname()[1]
        s.close()
    ctl = FaultyController(Handler(), **kw, **smtp_kw)
    ctl.start()
    # start() opens one probe connection of its own: it is not a client's.
    with LOCK:
        STATS["connections"] = 0
    FAULTS.used = {}
    port = kw["port"]
    if ARGS.port_file:
        write_atomic(ARGS.port_file, str(port))
    if ARGS.stats:
        write_atomic(ARGS.stats, json.dumps(STATS))
    print(f"READY {port}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    while not stop.wait(0.5):
        pass
    ctl.stop(no_assert=True)


if __name__ == "__main__":
    main()
