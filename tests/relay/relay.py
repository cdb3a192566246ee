#!/usr/bin/python3
"""Test relay for relayq: a real SMTP server (aiosmtpd 1.4.3, Debian's python3-aiosmtpd)
with STARTTLS or implicit TLS, AUTH PLAIN/LOGIN/XOAUTH2, PIPELINING, SIZE, and exact
fault injection. Used by the integration tests, `make demo` and `make bench`.

    /usr/bin/python3 tests/relay/relay.py --port 0 --port-file F --outdir D [options]

Accepted messages: D/<seq>.json (written atomically before the 250 is sent). Faults: a JSON
file (--faults), re-read whenever it changes. Counters: --stats. See README.md.

Everything runs on one asyncio event loop in one thread, so counters and sequence numbers
need no locks. The server is aiosmtpd's SMTP protocol class, subclassed only to add fault
points around its commands; we run the listener ourselves (loop.create_server, as aiosmtpd's
Controller does) so that port 0 needs no probing and no probe connection is counted.
"""
import argparse
import asyncio
import base64
import binascii
import collections
import hashlib
import hmac
import json
import logging
import os
import signal
import ssl
import sys
import time
import warnings
import weakref

# aiosmtpd warns about AUTH without TLS (which the plain mode allows on purpose).
warnings.simplefilter("ignore")

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, TLSSetupException  # noqa: E402

LOG = logging.getLogger("relay")
ARGS = None      # parsed command line
FAULTS = None    # Faults
STATS = None     # Stats
SEQ = 0          # last message sequence number used
LIVE = weakref.WeakSet()   # open connections (Relay), aborted on shutdown

KNOWN_FAULTS = {"mail", "rcpt", "rcpt_all", "data", "dot", "ehlo", "connect", "disconnect_at",
                "stall_at", "stall_seconds", "dot_then_disconnect", "mode", "cycle", "count",
                "max_connections", "session_messages", "session_limit_reply"}
SESSIONS = set()   # sessions past the greeting and not closed (for "max_connections")
STALL_POINTS = {"greeting", "ehlo", "auth", "mail", "rcpt", "data", "dot"}
DROP_POINTS = STALL_POINTS | {"middata"}


def write_atomic(path, text):
    """Write `text` to `path` so that readers see the old file or the whole new one."""
    d, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(d, f".{base}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Stats:
    """Counters, rewritten (atomically) to --stats after every event, or with --stats-ms N at
    most every N ms while something changed (and at shutdown): the rewrite is a file create,
    write and rename, several a message, which costs a benchmark more than the SMTP does."""

    def __init__(self, path, every_ms=0):
        self.path, self.every, self.dirty = path, every_ms / 1000, False
        self.c = dict.fromkeys(
            ["connections", "mail_commands", "auth_ok", "auth_fail", "messages",
             "rcpt_commands", "data_commands", "dropped", "peak_sessions", "over_limit"], 0)
        self.flush()

    def bump(self, key):
        self.c[key] += 1
        self.changed()

    def peak(self, key, n):
        if n > self.c[key]:
            self.c[key] = n
            self.changed()

    def changed(self):
        if self.every:
            self.dirty = True
        else:
            self.flush()

    def flush(self):
        self.dirty = False
        if self.path:
            write_atomic(self.path, json.dumps(self.c))

    async def flusher(self):
        """With --stats-ms: write the counters when they changed, every N ms."""
        while self.every:
            await asyncio.sleep(self.every)
            if self.dirty:
                self.flush()


class Faults:
    """The fault spec from --faults, re-read when the file changes (new inode, mtime or size).
    A missing file means no faults. Every reload resets the "count" budgets and the cycle."""

    def __init__(self, path):
        self.path, self.key, self.bad, self.spec = path, None, None, {}
        self.used, self.cycle_n = collections.Counter(), 0

    def get(self):
        if not self.path:
            return self.spec
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.key is not None:
                LOG.info("faults: file removed, no faults")
            self.key, self.spec, self.used, self.cycle_n = None, {}, collections.Counter(), 0
            return self.spec
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self.key or key == self.bad:
            return self.spec
        try:
            with open(self.path) as f:
                spec = json.load(f)
            if not isinstance(spec, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            # A half-written file (non-atomic writer): keep the old spec, warn once.
            LOG.warning("faults: cannot use %s (%s); keeping the previous faults", self.path, e)
            self.bad = key
            return self.spec
        for k in sorted(set(spec) - KNOWN_FAULTS):
            LOG.warning("faults: unknown key %r ignored", k)
        for k, ok in (("stall_at", STALL_POINTS), ("disconnect_at", DROP_POINTS)):
            if k in spec and spec[k] not in ok:
                LOG.warning("faults: %s=%r is not one of %s", k, spec[k], "|".join(sorted(ok)))
        if "rcpt" in spec and not isinstance(spec["rcpt"], dict):
            LOG.warning("faults: \"rcpt\" must be an object {address: reply}; ignored")
        self.key, self.bad, self.spec = key, None, spec
        self.used, self.cycle_n = collections.Counter(), 0
        LOG.info("faults: %s", json.dumps(spec))
        return spec

    def fire(self, key):
        """Consume one occurrence of fault `key`. False once "count" occurrences are used."""
        limit = self.spec.get("count")
        if limit is None:
            return True
        if self.used[key] >= int(limit):
            return False
        self.used[key] += 1
        return True


def reply_text(text):
    """A fault reply as one SMTP reply string; "\\n" in it makes a multi-line reply."""
    text = str(text).replace("\r", "")
    if len(text) == 3 and text.isdigit():           # bare code, e.g. "451" in a cycle
        text = f"{text} {text[0]}.0.0 injected by the test relay"
    lines = text.split("\n")
    lines = [ln[:3] + "-" + ln[4:] for ln in lines[:-1]] + lines[-1:]
    return "\r\n".join(lines)


def fmt_peer(p):
    return f"{p[0]}:{p[1]}" if isinstance(p, tuple) else str(p)


def safe(s):
    """A str from aiosmtpd (maybe with surrogate escapes) that JSON readers accept."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if s else s


class Relay(SMTP):
    """aiosmtpd's SMTP server with fault points. One instance per TCP connection."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        # A long XOAUTH2 token does not fit aiosmtpd's 512-octet command limit or its
        # 1001-octet stream limit: allow longer AUTH lines. DATA lines are still checked
        # against line_length_limit (1001) by aiosmtpd itself.
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit,
                                                           {"AUTH": 16384})
        self.txn_action = "ok"     # this transaction's cycle step: ok | disconnect
        self.stored = 0            # messages stored on this connection
        self._mid_reply = False    # inside a multi-line reply (EHLO): no delay between lines

    def _client_connected_cb(self, reader, writer):
        super()._client_connected_cb(reader, writer)
        reader._limit = 16384   # see __init__

    def connection_lost(self, error):
        LIVE.discard(self)
        super().connection_lost(error)

    # -- helpers ------------------------------------------------------------------------
    async def push(self, status):
        """Every reply goes through here: apply --delay-ms / --rtt-ms once per reply."""
        text = status if isinstance(status, str) else status.decode("latin-1")
        first = not self._mid_reply
        self._mid_reply = text.rsplit("\r\n", 1)[-1][3:4] == "-"
        if first:
            if ARGS.delay_ms:
                await asyncio.sleep(ARGS.delay_ms / 1000)
            elif ARGS.rtt_ms and not self._reader._buffer:   # client waits for this reply
                await asyncio.sleep(ARGS.rtt_ms / 1000)
        await super().push(status)

    async def drop(self, where):
        """Drop the TCP connection now, without a reply."""
        LOG.info("%s: dropping the connection at %s", self.peer(), where)
        STATS.bump("dropped")
        self.transport.abort()
        raise asyncio.CancelledError()   # ends aiosmtpd's session task cleanly

    async def fault(self, text):
        """Return a fault reply for aiosmtpd to send; a 421 is sent here and then we hang up."""
        text = reply_text(text)
        LOG.info("%s: fault reply %r", self.peer(), text)
        if text.startswith("421"):
            await self.push(text)
            self.transport.close()
            raise asyncio.CancelledError()
        return text

    async def point(self, where):
        """The stall_at / disconnect_at faults at `where`."""
        spec = FAULTS.get()
        if spec.get("stall_at") == where and FAULTS.fire("stall_at"):
            secs = float(spec.get("stall_seconds", 30))
            LOG.info("%s: stalling %.1f s at %s", self.peer(), secs, where)
            self._reset_timeout(secs + self._timeout_duration)   # aiosmtpd's idle timeout
            await asyncio.sleep(secs)   # cancelled if the client hangs up meanwhile
        if spec.get("disconnect_at") == where and FAULTS.fire("disconnect_at"):
            await self.drop(where)

    def peer(self):
        return fmt_peer(self.session.peer if self.session else None)

    # -- connection and commands ----------------------------------------------------------
    async def _handle_client(self):
        await self.point("greeting")
        spec = FAULTS.get()
        if spec.get("connect") and FAULTS.fire("connect"):
            text = reply_text(spec["connect"])
            LOG.info("%s: connect fault %r", self.peer(), text)
            await self.push(text)
            self.transport.close()   # graceful: the reply is flushed first
            return
        limit = spec.get("max_connections")
        if isinstance(limit, int) and len(SESSIONS) >= limit:
            STATS.bump("over_limit")
            LOG.info("%s: over max_connections=%d", self.peer(), limit)
            await self.push("421 4.7.0 Too many concurrent SMTP connections; please try again later")
            self.transport.close()
            return
        SESSIONS.add(self)
        STATS.peak("peak_sessions", len(SESSIONS))
        try:
            await super()._handle_client()
        finally:
            SESSIONS.discard(self)

    async def smtp_EHLO(self, hostname, helo=False):   # the "ehlo" faults apply to HELO too
        await self.point("ehlo")
        spec = FAULTS.get()
        if hostname and spec.get("ehlo") and FAULTS.fire("ehlo"):
            return await self.push(await self.fault(spec["ehlo"]))
        await (super().smtp_HELO(hostname) if helo else super().smtp_EHLO(hostname))

    async def smtp_HELO(self, hostname):
        await self.smtp_EHLO(hostname, helo=True)

    async def smtp_AUTH(self, arg):
        await self.point("auth")
        await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg):
        STATS.bump("mail_commands")
        await self.point("mail")
        await super().smtp_MAIL(arg)   # syntax/AUTH checks, then Handler.handle_MAIL

    async def smtp_RCPT(self, arg):
        STATS.bump("rcpt_commands")
        await self.point("rcpt")
        await super().smtp_RCPT(arg)   # then Handler.handle_RCPT

    async def smtp_DATA(self, arg):
        # Faults apply only to a DATA that aiosmtpd would accept; otherwise its own error.
        if (self.session.host_name and not arg and self.envelope.rcpt_tos
                and not (self._auth_required and not self.session.authenticated)):
            STATS.bump("data_commands")
            await self.point("data")
            if self.txn_action == "disconnect":
                await self.drop("data (cycle)")
            spec = FAULTS.get()
            if spec.get("data") and FAULTS.fire("data"):
                status = await self.fault(spec["data"])
                self._set_post_data_state()   # the transaction is over; MAIL may follow
                return await self.push(status)
            if spec.get("disconnect_at") == "middata" and FAULTS.fire("disconnect_at"):
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                try:   # read part of the body (one line, at most 10 s), then drop
                    await asyncio.wait_for(self._reader.readuntil(b"\r\n"), 10)
                except Exception:
                    pass
                await self.drop("middata")
        await super().smtp_DATA(arg)   # reads the body, then Handler.handle_DATA


class Handler:
    """aiosmtpd hooks. `server` is the Relay (one per connection)."""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname   # the 5-argument hook must do this itself
        out = [r for r in responses if server.auth_offered or not r.startswith("250-AUTH")]
        if not ARGS.no_pipelining:
            out.insert(len(out) - 1, "250-PIPELINING")   # before the final "250 HELP"
        return out

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        spec = FAULTS.get()
        server.txn_action = "ok"
        steps = spec.get("cycle")
        if spec.get("mode") == "cycle" and isinstance(steps, list) and steps and FAULTS.fire("cycle"):
            step = str(steps[FAULTS.cycle_n % len(steps)])
            FAULTS.cycle_n += 1
            LOG.info("%s: cycle step %r", server.peer(), step)
            if step[:1].isdigit():          # "451", "550 5.7.1 ...": the reply to MAIL
                return await server.fault(step)
            if step not in ("ok", "disconnect"):
                LOG.warning("faults: unknown cycle step %r treated as ok", step)
            server.txn_action = step
        if spec.get("mail") and FAULTS.fire("mail"):
            return await server.fault(spec["mail"])
        per_session = spec.get("session_messages")
        if isinstance(per_session, int) and server.stored >= per_session:
            return await server.fault(spec.get("session_limit_reply", "452 4.5.3 Too many messages sent"))
        envelope.mail_from = address
        envelope.mail_time = time.time()   # when MAIL was accepted (rate-limit tests)
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        spec = FAULTS.get()
        per = spec.get("rcpt")
        if isinstance(per, dict):
            for who, text in per.items():   # exact address, case-insensitive
                if who.lower() == address.lower() and FAULTS.fire("rcpt:" + who.lower()):
                    return await server.fault(text)
        if spec.get("rcpt_all") and FAULTS.fire("rcpt_all"):
            return await server.fault(spec["rcpt_all"])
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server, session, envelope):
        # Called after the final dot, before any reply to it.
        await server.point("dot")
        spec = FAULTS.get()
        if spec.get("dot") and FAULTS.fire("dot"):
            return await server.fault(spec["dot"])   # not stored
        n = store(server, session, envelope)
        server.stored += 1
        STATS.bump("messages")
        if spec.get("dot_then_disconnect") and FAULTS.fire("dot_then_disconnect"):
            await server.drop("dot, after storing the message")
        return f"250 2.0.0 OK queued as {n}"

    async def handle_exception(self, error):
        if isinstance(error, TLSSetupException):   # e.g. the client rejected our certificate
            LOG.info("TLS handshake failed: %r", error.__cause__)
        else:
            LOG.warning("session error: %r", error, exc_info=ARGS.verbose > 0)
        return f"451 4.3.0 Error: {error.__class__.__name__}"

    async def auth_XOAUTH2(self, server, args):
        """AUTH XOAUTH2 <base64("user=U\\x01auth=Bearer T\\x01\\x01")>, as Gmail does it."""
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        fields = dict(p.split("=", 1) for p in blob.decode("utf-8", "replace").split("\x01") if "=" in p)
        user = fields.get("user", "")
        want_user = ARGS.auth.partition(":")[0] if ARGS.auth else user
        if ARGS.xoauth2_token and fields.get("auth") == "Bearer " + ARGS.xoauth2_token and user == want_user:
            STATS.bump("auth_ok")
            return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        STATS.bump("auth_fail")
        # Gmail's failure: a 334 error challenge, the client answers with an empty line, 535.
        err = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
        if await server.challenge_auth(err) is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message="535 5.7.8 Username and Password not accepted")


    async def auth_CRAM__MD5(self, server, args):
        """AUTH CRAM-MD5 (RFC 2195) against --auth USER:PASS; offered only with --auth-mechs."""
        challenge = f"<{os.getpid()}.{id(server)}@{ARGS.server_name}>".encode()
        blob = await server.challenge_auth(challenge)
        if blob is MISSING:
            return AuthResult(success=False, handled=True)
        user, _, pw = (ARGS.auth or "").partition(":")
        want = user.encode() + b" " + hmac.new(pw.encode(), challenge, hashlib.md5).hexdigest().encode()
        if ARGS.auth and hmac.compare_digest(blob, want):
            STATS.bump("auth_ok")
            return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        STATS.bump("auth_fail")
        return AuthResult(success=False, handled=False, message="535 5.7.8 Authentication credentials invalid")


def authenticator(server, session, envelope, mechanism, data):
    """Checks AUTH PLAIN and LOGIN against --auth USER:PASS."""
    user, _, pw = (ARGS.auth or "").partition(":")
    ok = (ARGS.auth is not None and isinstance(data, LoginPassword)
          and data.login == user.encode() and data.password == pw.encode())
    STATS.bump("auth_ok" if ok else "auth_fail")
    if ok:
        return AuthResult(success=True, auth_data=data)
    return AuthResult(success=False, handled=False, message="535 5.7.8 Authentication credentials invalid")


def store(server, session, envelope):
    """Write the message to OUTDIR/<seq>.json atomically; return its sequence number.
    os.link refuses to replace a file, so numbers stay unique even with another relay
    process writing into the same directory."""
    global SEQ
    login = getattr(session.auth_data, "login", None)   # LoginPassword from any mechanism
    rec = {
        "mail_from": safe(envelope.mail_from),
        "rcpt_tos": [safe(r) for r in envelope.rcpt_tos],
        "mail_options": [safe(o) for o in envelope.mail_options],
        "rcpt_options": [safe(o) for o in envelope.rcpt_options],
        "data": envelope.original_content.decode("latin-1"),   # dot-unstuffed, CRLFs kept
        "auth_user": login.decode("utf-8", "replace") if isinstance(login, bytes) else login,
        "tls": server.transport.get_extra_info("ssl_object") is not None,
        "peer": fmt_peer(session.peer),
        "helo": safe(session.host_name),
        "smtputf8": bool(envelope.smtp_utf8),
        "mail_time": getattr(envelope, "mail_time", None),
    }
    while True:
        SEQ += 1
        rec["seq"] = SEQ
        if not ARGS.outdir:
            return SEQ
        final = os.path.join(ARGS.outdir, f"{SEQ:08d}.json")
        tmp = os.path.join(ARGS.outdir, f".{SEQ:08d}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f)
        try:
            os.link(tmp, final)
            return SEQ
        except FileExistsError:
            continue
        finally:
            os.unlink(tmp)


async def serve(ctx):
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, c: LOG.debug("asyncio: %s", c.get("message")))
    auth_offered = bool(ARGS.auth or ARGS.xoauth2_token)
    exclude = ([] if ARGS.auth else ["PLAIN", "LOGIN"]) + ([] if ARGS.xoauth2_token else ["XOAUTH2"])
    if ARGS.auth_mechs:   # only these, e.g. "CRAM-MD5" (a relay offering what relayq lacks)
        offer = {m.upper() for m in ARGS.auth_mechs.replace(",", " ").split()}
        exclude = [m for m in ("PLAIN", "LOGIN", "XOAUTH2", "CRAM-MD5") if m not in offer]
    else:
        exclude.append("CRAM-MD5")
    kw = dict(
        hostname=ARGS.server_name, data_size_limit=ARGS.size or None,
        enable_SMTPUTF8=not ARGS.no_smtputf8, decode_data=False, timeout=ARGS.timeout,
        authenticator=authenticator, auth_required=ARGS.auth_required,
        auth_exclude_mechanism=exclude, loop=loop,
    )
    if ARGS.tls == "starttls":
        kw.update(tls_context=ctx, require_starttls=True)   # AUTH only after STARTTLS
    else:
        kw.update(auth_require_tls=False)   # implicit: TLS already; none: plain on purpose
    handler = Handler()

    def factory():   # called once per accepted TCP connection, before any TLS handshake
        STATS.bump("connections")
        p = Relay(handler, **kw)
        p.auth_offered = auth_offered
        LIVE.add(p)
        return p

    server = await loop.create_server(
        factory, ARGS.host, ARGS.port, ssl=ctx if ARGS.tls == "implicit" else None,
        ssl_handshake_timeout=10 if ARGS.tls == "implicit" else None, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    if ARGS.port_file:
        write_atomic(ARGS.port_file, f"{port}\n")
    print(f"READY {port}", flush=True)
    LOG.info("listening on %s:%d tls=%s auth=%s", ARGS.host, port, ARGS.tls, auth_offered)

    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    flusher = asyncio.ensure_future(STATS.flusher())
    await stop.wait()
    flusher.cancel()
    if STATS.dirty:
        STATS.flush()
    LOG.info("shutting down")
    server.close()
    for p in list(LIVE):
        if p.transport is not None:
            p.transport.abort()
    await asyncio.wait([asyncio.ensure_future(server.wait_closed())], timeout=3)


def main():
    global ARGS, FAULTS, STATS, SEQ
    p = argparse.ArgumentParser(description="SMTP test relay with fault injection (aiosmtpd)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (a literal IP)")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--port-file", help="write the actual port here (atomically) once listening")
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--cert", help="server certificate chain (PEM)")
    p.add_argument("--key", help="server private key (PEM)")
    p.add_argument("--auth", metavar="USER:PASS", help="enable AUTH PLAIN and LOGIN")
    p.add_argument("--auth-required", action="store_true", help="530 to MAIL before AUTH")
    p.add_argument("--xoauth2-token", metavar="TOKEN", help="enable AUTH XOAUTH2 with this token")
    p.add_argument("--auth-mechs", metavar="LIST",
                   help="offer only these AUTH mechanisms (of PLAIN LOGIN XOAUTH2 CRAM-MD5)")
    p.add_argument("--tls-ciphers", metavar="OPENSSL_LIST",
                   help="TLS 1.2 at most, with only these ciphers (an old or strict relay)")
    p.add_argument("--no-pipelining", action="store_true", help="do not advertise PIPELINING")
    p.add_argument("--no-smtputf8", action="store_true", help="do not advertise SMTPUTF8")
    p.add_argument("--size", type=int, default=0, help="advertise and enforce SIZE N (0 = none)")
    p.add_argument("--outdir", help="store accepted messages here as <seq>.json")
    p.add_argument("--faults", metavar="PATH", help="JSON fault spec, re-read when it changes")
    p.add_argument("--stats", metavar="PATH", help="JSON counters, rewritten on every event")
    p.add_argument("--stats-ms", type=int, default=0, metavar="N",
                   help="rewrite --stats at most every N ms (for benchmarks; 0 = every event)")
    p.add_argument("--delay-ms", type=int, default=0, help="sleep N ms before every reply")
    p.add_argument("--rtt-ms", type=int, default=0,
                   help="sleep N ms before a reply the client is waiting for (one per round "
                        "trip: pipelined commands share one delay)")
    p.add_argument("--timeout", type=float, default=300, help="idle timeout per session (s)")
    p.add_argument("--server-name", default="relay.test", help="name in the greeting and EHLO")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v: sessions, -vv: protocol")
    ARGS = p.parse_args()

    logging.basicConfig(stream=sys.stderr, format="relay[%(process)d] %(name)s: %(message)s",
                        level=logging.WARNING)
    LOG.setLevel(logging.INFO if ARGS.verbose else logging.WARNING)
    logging.getLogger("mail.log").setLevel(
        {0: logging.CRITICAL, 1: logging.WARNING}.get(ARGS.verbose, logging.DEBUG))
    # aiosmtpd itself reads the deprecated Session.login_data on every AUTH: not news.
    logging.getLogger("mail.log").addFilter(lambda r: "login_data is deprecated" not in r.getMessage())
    logging.getLogger("asyncio").setLevel(logging.DEBUG if ARGS.verbose > 1 else logging.CRITICAL)

    ctx = None
    if ARGS.tls != "none":
        if not (ARGS.cert and ARGS.key):
            p.error(f"--tls {ARGS.tls} needs --cert and --key")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)   # no client certificates
        ctx.load_cert_chain(ARGS.cert, ARGS.key)
        if ARGS.tls_ciphers:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(ARGS.tls_ciphers)
    if ARGS.port_file and os.path.exists(ARGS.port_file):
        os.unlink(ARGS.port_file)   # never let a reader see a previous run's port
    if ARGS.outdir:
        os.makedirs(ARGS.outdir, exist_ok=True)
        nums = [int(n[:-5]) for n in os.listdir(ARGS.outdir) if n.endswith(".json") and n[:-5].isdigit()]
        SEQ = max(nums, default=0)   # a restarted relay continues the numbering
    FAULTS = Faults(ARGS.faults)
    FAULTS.get()
    STATS = Stats(ARGS.stats, ARGS.stats_ms)
    asyncio.run(serve(ctx))


if __name__ == "__main__":
    main()
