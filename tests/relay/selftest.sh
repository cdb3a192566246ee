#!/usr/bin/env bash
# selftest.sh — smoke test of the test relay itself (tests/relay/relay.py): plain, STARTTLS
# and implicit TLS with swaks; AUTH PLAIN/LOGIN/XOAUTH2 ok and failing; pipelining; every
# fault kind; stats; delays; SIGTERM. Every client call and wait is bounded. Exits non-zero
# on any failure. Needs scripts/deps.sh to have run (python3-aiosmtpd, swaks, openssl).
set -euo pipefail
cd "$(dirname "$0")"
PY=/usr/bin/python3
W=$(mktemp -d /tmp/relay-selftest.XXXXXX)
PIDS=()
FAILS=0
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "$FAILS" -eq 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$W"; else echo "(work dir kept: $W)"; fi
}
trap cleanup EXIT

ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }

command -v swaks >/dev/null && $PY -c 'import aiosmtpd' 2>/dev/null \
  || { echo "selftest: run scripts/deps.sh first (swaks, python3-aiosmtpd)" >&2; exit 2; }
bash mkca.sh "$W/ca" >/dev/null
CA=$W/ca

# start NAME ARGS... : run a relay in $W/NAME, wait (<= 15 s) for its port; sets PORT, RPID.
start() {
  local name=$1; shift
  mkdir -p "$W/$name"
  $PY relay.py --host 127.0.0.1 --port 0 --port-file "$W/$name/port" --outdir "$W/$name/out" \
    --stats "$W/$name/stats.json" --faults "$W/$name/faults.json" "$@" \
    >"$W/$name/stdout" 2>"$W/$name/stderr" &
  RPID=$!
  PIDS+=("$RPID")
  for _ in $(seq 150); do [ -s "$W/$name/port" ] && break; sleep 0.1; done
  [ -s "$W/$name/port" ] || { cat "$W/$name/stderr"; fail "$name: relay did not start"; exit 1; }
  PORT=$(cat "$W/$name/port")
  grep -qx "READY $PORT" "$W/$name/stdout" || fail "$name: READY line"
}
count() { ls "$W/$1/out" 2>/dev/null | grep -c '\.json$' || true; }
field() { $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
stat_of() { $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$W/$1/stats.json" "$2"; }
SW=(timeout 20 swaks --timeout 10 --from s@example.com --to a@example.org --hide-informational)

echo "== plain, AUTH required (swaks)"
start plain --tls none --auth user:secret --auth-required
"${SW[@]}" --server "127.0.0.1:$PORT" --auth PLAIN --auth-user user --auth-password secret \
  >"$W/plain/sw1" 2>&1 && ok "swaks AUTH PLAIN delivers" || { fail "swaks AUTH PLAIN"; cat "$W/plain/sw1"; }
check "one message stored" [ "$(count plain)" = 1 ]
F=$W/plain/out/00000001.json
check "json: tls false" [ "$(field "$F" tls)" = False ]
check "json: auth_user" [ "$(field "$F" auth_user)" = user ]
check "json: rcpt_tos" [ "$(field "$F" rcpt_tos)" = "['a@example.org']" ]
if "${SW[@]}" --server "127.0.0.1:$PORT" --auth LOGIN --auth-user user --auth-password wrong >"$W/plain/sw2" 2>&1; then
  fail "wrong password accepted"; else ok "swaks wrong password refused"; fi
check "wrong password: 535 5.7.8" grep -q '535 5.7.8' "$W/plain/sw2"
if "${SW[@]}" --server "127.0.0.1:$PORT" >"$W/plain/sw3" 2>&1; then fail "MAIL without AUTH accepted"; fi
check "MAIL before AUTH: 530" grep -q '<\*\* *530' "$W/plain/sw3"
check "stats: auth_ok=1 auth_fail=1" [ "$(stat_of plain auth_ok)/$(stat_of plain auth_fail)" = 1/1 ]
check "stats: 3 connections, 1 message" [ "$(stat_of plain connections)/$(stat_of plain messages)" = 3/1 ]

echo "== STARTTLS required (swaks)"
start starttls --tls starttls --cert "$CA/server.pem" --key "$CA/server.key" --auth user:secret --auth-required
"${SW[@]}" --server "127.0.0.1:$PORT" -tls --tls-verify --tls-ca-path "$CA/ca.pem" --tls-sni localhost \
  --auth PLAIN --auth-user user --auth-password secret >"$W/starttls/sw1" 2>&1 \
  && ok "swaks STARTTLS + AUTH delivers (certificate verified)" || { fail "swaks STARTTLS"; cat "$W/starttls/sw1"; }
check "json: tls true" [ "$(field "$W/starttls/out/00000001.json" tls)" = True ]
check "stats: STARTTLS session counted once" [ "$(stat_of starttls connections)" = 1 ]
if "${SW[@]}" --server "127.0.0.1:$PORT" --auth PLAIN --auth-user user --auth-password secret >"$W/starttls/sw2" 2>&1; then
  fail "AUTH before STARTTLS accepted"; else ok "no AUTH before STARTTLS"; fi
check "AUTH not advertised before STARTTLS" bash -c "! grep -q '250-AUTH' '$W/starttls/sw2'"
# Faults behave the same inside TLS (the integration tests mostly use STARTTLS).
PORT=$PORT D=$W/starttls CA=$CA timeout 60 $PY - <<'PY' || FAILS=$((FAILS + 1))
import glob, json, os, smtplib, ssl
PORT, D = int(os.environ["PORT"]), os.environ["D"]
ctx = ssl.create_default_context(cafile=os.environ["CA"] + "/ca.pem")
bad = 0
def faults(spec):
    with open(D + "/f.tmp", "w") as f:
        json.dump(spec, f)
    os.replace(D + "/f.tmp", D + "/faults.json")
def send(rcpts):
    n0 = len(glob.glob(D + "/out/*.json"))
    try:
        with smtplib.SMTP("localhost", PORT, timeout=10) as s:
            s.starttls(context=ctx)
            s.login("user", "secret")
            r = s.sendmail("s@example.com", rcpts, "Subject: tls\r\n\r\nx\r\n")
    except smtplib.SMTPException as e:
        r = type(e).__name__
    return r, len(glob.glob(D + "/out/*.json")) - n0
for spec, want in [
    ({"rcpt": {"bad@example.com": "550 5.1.1 no such user"}}, ({"bad@example.com": (550, b"5.1.1 no such user")}, 1)),
    ({"disconnect_at": "middata"}, ("SMTPServerDisconnected", 0)),
    ({"dot": "451 4.3.0 queue full"}, ("SMTPDataError", 0)),
    ({"dot_then_disconnect": True}, ("SMTPServerDisconnected", 1)),
    ({"stall_at": "mail", "stall_seconds": 0.5}, ({}, 1)),
]:
    faults(spec)
    got = send(["a@example.org", "bad@example.com"])
    print(("ok   " if got == want else "FAIL ") + f"STARTTLS + {json.dumps(spec)}: {got}")
    bad += got != want
raise SystemExit(1 if bad else 0)
PY

echo "== implicit TLS (swaks)"
start implicit --tls implicit --cert "$CA/server.pem" --key "$CA/server.key" --auth user:secret --auth-required
"${SW[@]}" --server "127.0.0.1:$PORT" -tlsc --tls-verify --tls-ca-path "$CA/ca.pem" --tls-sni localhost \
  --auth LOGIN --auth-user user --auth-password secret >"$W/implicit/sw1" 2>&1 \
  && ok "swaks implicit TLS + AUTH LOGIN delivers" || { fail "swaks implicit"; cat "$W/implicit/sw1"; }
check "json: tls true (implicit)" [ "$(field "$W/implicit/out/00000001.json" tls)" = True ]
check "AUTH advertised under implicit TLS" grep -q 'AUTH LOGIN PLAIN' "$W/implicit/sw1"

echo "== certificates (python ssl against implicit-TLS relays)"
for c in server untrusted wrongname; do
  start "cert-$c" --tls implicit --cert "$CA/$c.pem" --key "$CA/$c.key"
  r=$(timeout 15 $PY - "$PORT" "$CA/ca.pem" <<'PY'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            print("verified" if t.recv(100).startswith(b"220") else "nogreeting")
except ssl.SSLCertVerificationError as e:
    print("rejected:", e.verify_message)
PY
  ) || r="error"
  case $c in
    server) check "server.pem verifies for localhost ($r)" [ "$r" = verified ] ;;
    *) check "$c.pem is rejected ($r)" bash -c "[[ '$r' == rejected* ]]" ;;
  esac
done

echo "== faults, pipelining, AUTH mechanisms (python client)"
start faults --tls none --auth user:secret --xoauth2-token tok123 --size 100000
PORT=$PORT D=$W/faults timeout 240 $PY - <<'PY' || FAILS=$((FAILS + 1))
import base64, glob, json, os, smtplib, socket, time
PORT, D = int(os.environ["PORT"]), os.environ["D"]
FAILS, CONNS = 0, 0

def check(cond, what):
    global FAILS
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    FAILS += 0 if cond else 1

def faults(spec):
    tmp = D + "/faults.json.tmp"
    with open(tmp, "w") as f:
        json.dump(spec, f)
    os.replace(tmp, D + "/faults.json")

def arrived():
    return [json.load(open(p)) for p in sorted(glob.glob(D + "/out/*.json"))]

def stats():
    return json.load(open(D + "/stats.json"))

class Raw:
    """A bare SMTP client: exact control over what is sent and when."""
    def __init__(self, ehlo=True):
        global CONNS
        CONNS += 1
        self.s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
        self.f = self.s.makefile("rb")
        self.greeting = self.reply()
        if ehlo:
            self.ehlo = self.cmd("EHLO client.test")
    def reply(self):
        lines = []
        while True:
            try:
                ln = self.f.readline()
            except (ConnectionResetError, socket.timeout) as e:
                return ("EOF", type(e).__name__)
            if not ln:
                return ("EOF", "\n".join(lines))
            lines.append(ln.decode().rstrip("\r\n"))
            if ln[3:4] != b"-":
                return (lines[-1][:3], "\n".join(lines))
    def send(self, data):
        try:
            self.s.sendall(data.encode() if isinstance(data, str) else data)
        except OSError:
            pass
    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()
    def close(self):
        self.f.close()   # the makefile holds the socket open too
        self.s.close()

def txn(c, rcpts=("a@example.org",), body="Subject: t\r\n\r\nbody\r\n"):
    """One transaction; returns the list of reply codes (stops at the first EOF)."""
    codes = []
    for line in ["MAIL FROM:<s@example.com>"] + [f"RCPT TO:<{r}>" for r in rcpts] + ["DATA"]:
        code, _ = c.cmd(line)
        codes.append(code)
        if code == "EOF" or code[0] not in "23":
            return codes
    c.send(body + ".\r\n")
    codes.append(c.reply()[0])
    return codes

# -- EHLO ------------------------------------------------------------------------------
faults({})
c = Raw()
e = c.ehlo[1]
for kw in ("250-PIPELINING", "250-SIZE 100000", "250-8BITMIME", "250-AUTH LOGIN PLAIN XOAUTH2"):
    check(kw in e, "EHLO advertises " + kw)
check("STARTTLS" not in e, "no STARTTLS in plain mode")

# -- pipelining: one write, replies in order, per-recipient fault, dot-unstuffing --------
faults({"rcpt": {"bad@example.com": "550 5.1.1 no such user"}})
c.send("MAIL FROM:<s@example.com> BODY=8BITMIME\r\nRCPT TO:<a@example.org>\r\n"
       "RCPT TO:<bad@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
got = [c.reply() for _ in range(5)]
check([g[0] for g in got] == ["250", "250", "550", "250", "354"], f"pipelined replies in order {[g[0] for g in got]}")
check(got[2][1] == "550 5.1.1 no such user", "per-recipient reply text exact")
body = "Subject: pipe\r\n\r\n..leading dot\r\nplain \xe9\r\n"
c.send(body.encode("latin-1") + b".\r\n")
check(c.reply()[0] == "250", "250 after the dot")
m = arrived()[-1]
check(m["rcpt_tos"] == ["a@example.org", "b@example.org"], "550 recipient left out, others kept")
check(m["data"] == "Subject: pipe\r\n\r\n.leading dot\r\nplain \xe9\r\n", "data exact, dot-unstuffed, latin-1")
check(m["mail_options"] == ["BODY=8BITMIME"] and m["mail_from"] == "s@example.com", "envelope recorded")
c.cmd("QUIT")

# -- per-recipient faults with smtplib (case-insensitive, only those recipients) --------
faults({"rcpt": {"bad@example.com": "550 5.1.1 no such user", "slow@example.com": "451 4.2.0 greylisted"}})
n0 = len(arrived())
CONNS += 1
with smtplib.SMTP("127.0.0.1", PORT, timeout=10) as s:
    refused = s.sendmail("s@example.com", ["a@example.org", "BAD@example.com", "slow@example.com", "c@example.org"],
                         "Subject: mixed\r\n\r\nx\r\n")
check(refused == {"BAD@example.com": (550, b"5.1.1 no such user"), "slow@example.com": (451, b"4.2.0 greylisted")},
      f"smtplib sees exactly the two refusals {refused}")
check(arrived()[-1]["rcpt_tos"] == ["a@example.org", "c@example.org"] and len(arrived()) == n0 + 1, "stored for a, c only")

# -- rcpt_all, mail, data, dot -----------------------------------------------------------
n0 = len(arrived())
faults({"rcpt_all": "452 4.3.1 insufficient storage"})
c = Raw()
check(txn(c, ["a@example.org", "b@example.org"]) == ["250", "452"], "rcpt_all refuses every RCPT")
check(c.cmd("RCPT TO:<b@example.org>")[0] == "452" and c.cmd("DATA")[0] == "503", "rcpt_all: still refused, DATA 503")
check(c.cmd("RSET")[0] == "250", "RSET")
faults({"mail": "451 4.3.0 try later"})
check(c.cmd("MAIL FROM:<s@example.com>") == ("451", "451 4.3.0 try later"), "mail fault reply exact")
faults({})
check(txn(c) == ["250", "250", "354", "250"], "fault file re-read on the next command: MAIL ok again")
faults({"data": "554 5.3.0 no DATA"})
check(txn(c) == ["250", "250", "554"], "data fault replaces the 354")
check(txn(c) == ["250", "250", "554"], "after a DATA fault a new MAIL works (transaction reset)")
faults({"dot": "451 4.3.0 queue full"})
check(txn(c) == ["250", "250", "354", "451"], "dot fault after the final dot")
check(len(arrived()) == n0 + 1, "rcpt_all/mail/data/dot faults stored nothing")
c.cmd("QUIT")

# -- count ---------------------------------------------------------------------------------
faults({"mail": "451 4.3.0 try later", "count": 2})
c = Raw()
codes = [c.cmd("MAIL FROM:<s@example.com>")[0] for _ in range(3)]
check(codes == ["451", "451", "250"], f"count=2 limits the fault {codes}")
c.cmd("QUIT")

# -- dot_then_disconnect: stored, then dropped with no reply; count=1 ----------------------
faults({"dot_then_disconnect": True, "count": 1})
n0 = len(arrived())
c = Raw()
check(txn(c) == ["250", "250", "354", "EOF"], "dot_then_disconnect: no reply after the dot")
check(len(arrived()) == n0 + 1, "dot_then_disconnect: message stored")
c = Raw()
check(txn(c) == ["250", "250", "354", "250"], "dot_then_disconnect count=1: next one normal")
c.cmd("QUIT")

# -- disconnect_at -------------------------------------------------------------------------
for at, want in [("mail", ["EOF"]), ("rcpt", ["250", "EOF"]), ("data", ["250", "250", "EOF"]),
                 ("dot", ["250", "250", "354", "EOF"])]:
    faults({"disconnect_at": at})
    n0 = len(arrived())
    c = Raw()
    got = txn(c)
    check(got == want and len(arrived()) == n0, f"disconnect_at {at}: {got}, nothing stored")
faults({"disconnect_at": "middata"})
n0 = len(arrived())
c = Raw()
check([c.cmd("MAIL FROM:<s@example.com>")[0], c.cmd("RCPT TO:<a@example.org>")[0], c.cmd("DATA")[0]] == ["250", "250", "354"],
      "disconnect_at middata: 354 sent")
c.send("Subject: part\r\n")
time.sleep(0.3)
c.send("rest of the body\r\n.\r\n")
check(c.reply()[0] == "EOF" and len(arrived()) == n0, "disconnect_at middata: dropped mid-body, nothing stored")

# -- ehlo, connect -------------------------------------------------------------------------
faults({"ehlo": "421 4.3.2 go away"})
c = Raw()
check(c.ehlo == ("421", "421 4.3.2 go away") and c.reply()[0] == "EOF", "ehlo 421: reply then closed")
faults({"ehlo": "554 5.7.1 no"})
c = Raw()
check(c.ehlo[0] == "554" and c.cmd("NOOP")[0] == "250", "ehlo 554: reply, connection stays")
faults({"connect": "421 4.3.2 service unavailable"})
c = Raw(ehlo=False)
check(c.greeting == ("421", "421 4.3.2 service unavailable") and c.reply()[0] == "EOF", "connect: 421 greeting then closed")

# -- stalls --------------------------------------------------------------------------------
faults({"stall_at": "greeting", "stall_seconds": 1.5})
t = time.monotonic(); c = Raw()
check(c.greeting[0] == "220" and time.monotonic() - t >= 1.4, "stall_at greeting delays the banner")
faults({"stall_at": "mail", "stall_seconds": 1.5})
t = time.monotonic()
check(c.cmd("MAIL FROM:<s@example.com>")[0] == "250" and time.monotonic() - t >= 1.4, "stall_at mail, then normal")
c.cmd("QUIT")
faults({"stall_at": "dot", "stall_seconds": 2})
n0 = len(arrived())
c = Raw()
c.s.settimeout(0.5)
check(txn(c) == ["250", "250", "354", "EOF"], "stall_at dot: no reply within the client's timeout")
c.close()   # the client gives up; the relay must not store what it never acknowledged
time.sleep(2.5)
check(len(arrived()) == n0, "stall_at dot + client hang-up: not stored")

# -- cycle: ok, 451 at MAIL, drop at DATA, then ok again -------------------------------------
faults({"mode": "cycle", "cycle": ["ok", "451", "disconnect"]})
n0 = len(arrived())
got = []
for _ in range(4):
    c = Raw()
    got.append(txn(c))
check(got == [["250", "250", "354", "250"], ["451"], ["250", "250", "EOF"], ["250", "250", "354", "250"]],
      f"cycle ok/451/disconnect/ok {got}")
check(len(arrived()) == n0 + 2, "cycle: two stored")

# -- AUTH mechanisms -------------------------------------------------------------------------
faults({})
b64 = lambda s: base64.b64encode(s.encode()).decode()
a0 = stats()
c = Raw()
check(c.cmd("AUTH PLAIN " + b64("\0user\0nope"))[1] == "535 5.7.8 Authentication credentials invalid", "PLAIN wrong: 535 5.7.8")
check(c.cmd("AUTH PLAIN " + b64("\0user\0secret"))[0] == "235", "PLAIN right: 235")
c = Raw()
check(c.cmd("AUTH LOGIN")[0] == "334" and c.cmd(b64("user"))[0] == "334" and c.cmd(b64("secret"))[0] == "235", "LOGIN: 235")
c = Raw()
r = c.cmd("AUTH XOAUTH2 " + b64("user=user\x01auth=Bearer wrong\x01\x01"))
check(r[0] == "334" and c.cmd("")[1].startswith("535 5.7.8"), "XOAUTH2 bad token: 334 error challenge, then 535")
c = Raw()
check(c.cmd("AUTH XOAUTH2 " + b64("user=user\x01auth=Bearer tok123\x01\x01"))[0] == "235", "XOAUTH2 right token: 235")
check(txn(c)[-1] == "250" and arrived()[-1]["auth_user"] == "user", "XOAUTH2 session: auth_user recorded")
a1 = stats()
check((a1["auth_ok"] - a0["auth_ok"], a1["auth_fail"] - a0["auth_fail"]) == (3, 2), "stats: auth_ok +3, auth_fail +2")

# -- SIZE, unreadable/missing fault file, stats ---------------------------------------------
check(c.cmd("MAIL FROM:<s@example.com> SIZE=200000")[0] == "552", "SIZE over the limit: 552")
faults({"mail": "451 4.3.0 kept"})
check(c.cmd("MAIL FROM:<s@example.com>")[0] == "451", "mail fault on")
with open(D + "/faults.json", "w") as f:
    f.write('{"mail": ')     # a torn write: keep the previous spec
check(c.cmd("MAIL FROM:<s@example.com>")[0] == "451", "unparsable fault file: previous faults kept")
os.unlink(D + "/faults.json")
r = c.cmd("MAIL FROM:<s@example.com>")
check(r[0] == "250", f"missing fault file: no faults {r}")
c.cmd("QUIT")
time.sleep(0.2)
st = stats()
check(st["connections"] == CONNS, f"stats: connections {st['connections']} == {CONNS}")
check(st["messages"] == len(arrived()), f"stats: messages {st['messages']} == files {len(arrived())}")
seqs = [m["seq"] for m in arrived()]
check(seqs == list(range(1, len(seqs) + 1)), "sequence numbers unique and dense")
raise SystemExit(1 if FAILS else 0)
PY

echo "== --no-pipelining, --delay-ms, --rtt-ms, concurrency"
start nopipe --no-pipelining
r=$(timeout 10 $PY - "$PORT" <<'PY'
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=5); s.ehlo(); print(s.has_extn("pipelining")); s.quit()
PY
) || r=error
check "--no-pipelining: not advertised" [ "$r" = False ]
start delay --delay-ms 200
start rtt --rtt-ms 200
DELAY=$(cat "$W/delay/port") RTT=$(cat "$W/rtt/port") timeout 60 $PY - <<'PY' || FAILS=$((FAILS + 1))
import os, socket, time, threading, smtplib
def batch(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10); f = s.makefile("rb")
    f.readline()
    t = time.monotonic()
    s.sendall(b"HELO x\r\nMAIL FROM:<s@x.org>\r\nRCPT TO:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nRSET\r\n")
    for _ in range(5):
        f.readline()
    s.close()
    return time.monotonic() - t
d, r = batch(int(os.environ["DELAY"])), batch(int(os.environ["RTT"]))
ok = 0.95 <= d < 3 and 0.15 <= r < 0.6
print(("ok   " if ok else "FAIL ") + f"5 pipelined commands: --delay-ms 200 took {d:.2f}s (5 delays), --rtt-ms 200 took {r:.2f}s (1 round trip)")
# Concurrent sessions: unique sequence numbers.
errs = []
def one(i):
    try:
        with smtplib.SMTP("127.0.0.1", int(os.environ["RTT"]), timeout=20) as s:
            s.sendmail("s@x.org", [f"r{i}@x.org"], f"Subject: c{i}\r\n\r\nx\r\n")
    except Exception as e:
        errs.append(e)
ts = [threading.Thread(target=one, args=(i,)) for i in range(20)]
[t.start() for t in ts]; [t.join(30) for t in ts]
print(("ok   " if not errs else "FAIL ") + f"20 concurrent sessions delivered ({len(errs)} errors)")
raise SystemExit(0 if ok and not errs else 1)
PY
check "20 concurrent messages, 20 distinct files" [ "$(count rtt)" = 20 ]

echo "== SIGTERM"
kill -TERM "$RPID"
rc=0; timeout 5 tail --pid="$RPID" -f /dev/null || rc=$?
check "relay exits within 5 s of SIGTERM" [ "$rc" = 0 ]
wait "$RPID"; check "exit status 0 after SIGTERM" [ "$?" = 0 ]
for n in plain starttls implicit faults; do
  if grep -v -e 'faults: cannot use' "$W/$n/stderr" | grep -q .; then fail "$n: unexpected stderr:"; cat "$W/$n/stderr"; fi
done

echo
if [ "$FAILS" -eq 0 ]; then echo "selftest: all passed"; else echo "selftest: $FAILS FAILED"; exit 1; fi
