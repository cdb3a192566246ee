#!/usr/bin/env bash
# make demo: the main job end to end on an embedded default.
# sendmail (as cron would call it) → durable spool → relayq daemon → a local SMTP relay
# (aiosmtpd, STARTTLS with a test CA, AUTH) → print what arrived → clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RELAYQ_BIN:-$PWD/target/release/relayq}
W=$(mktemp -d /tmp/relayq-demo.XXXXXX)
RELAY_PID= DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
  [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null && wait "$RELAY_PID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a test CA and a local relay (aiosmtpd, STARTTLS required, AUTH demo/secret)"
bash tests/relay/mkca.sh "$W/ca" >/dev/null
/usr/bin/python3 tests/relay/relay.py --host 127.0.0.1 --port 0 --port-file "$W/port" \
  --tls starttls --cert "$W/ca/server.pem" --key "$W/ca/server.key" \
  --auth demo:secret --auth-required --outdir "$W/arrived" &
RELAY_PID=$!
for _ in $(seq 100); do [ -s "$W/port" ] && break; sleep 0.1; done
PORT=$(cat "$W/port")
echo "relay listening on 127.0.0.1:$PORT"

step "config (embedded default) and spool"
umask 077
printf 'secret\n' > "$W/password"
cat > "$W/relayq.toml" <<CFG
spool_dir = "$W/spool"

[relay]
url = "smtp://localhost:$PORT"   # STARTTLS, certificate verified against the test CA
username = "demo"
password_file = "$W/password"
ca_file = "$W/ca/ca.pem"

[address]
admin = "admin@example.com"      # root, cron's MAILTO=root, www-data... go here
sender = "server1@example.com"   # the sender the relay accepts
domain = "example.com"

[log]
syslog = false
CFG
umask 022
sed 's/^/  /' "$W/relayq.toml"
# The demo's spool is the caller's, even where a relayq user exists (after `make install`):
# the daemon then needs no access to the demo's files in $W.
"$BIN" -C "$W/relayq.toml" init --user "$(id -un)"
# As installed: sendmail is the submission front end beside relayq.
ln -s "$(dirname "$BIN")/relayq-sendmail" "$W/sendmail"
export RELAYQ_CONFIG="$W/relayq.toml"

step "sendmail, as Debian cron calls it: sendmail -FCronDaemon -i -B8BITMIME -oem root"
t0=$(date +%s%N)
printf 'From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@web1> /usr/local/bin/backup\n\nbackup finished: 42 files, 0 errors\n' \
  | "$W/sendmail" -FCronDaemon -i -B8BITMIME -oem root
t1=$(date +%s%N)
echo "sendmail exited 0 after $(( (t1 - t0) / 1000000 )) ms; the message is on disk:"
"$BIN" queue

step "relayq daemon (wakes on new mail, relays, removes what the relay accepted)"
"$BIN" daemon --foreground &
DAEMON_PID=$!
for _ in $(seq 150); do ls "$W/arrived"/*.json >/dev/null 2>&1 && break; sleep 0.1; done
sleep 0.3

step "what arrived at the relay"
found=0
for f in "$W"/arrived/*.json; do
  [ -e "$f" ] || continue
  found=1
  /usr/bin/python3 - "$f" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"envelope: MAIL FROM:<{m['mail_from']}>  RCPT TO:{', '.join('<%s>' % r for r in m['rcpt_tos'])}")
print(f"session:  TLS={m.get('tls')}  AUTH user={m.get('auth_user')}")
print("message:")
for line in m["data"].splitlines():
    print("  | " + line)
PY
done
step "queue after delivery"
"$BIN" queue
[ "$found" = 1 ] || { echo "demo FAILED: nothing arrived at the relay" >&2; exit 1; }
echo
echo "demo OK"
