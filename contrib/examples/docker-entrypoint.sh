#!/bin/bash
# Entrypoint for contrib/examples/Dockerfile: relayq's daemon beside the application.
# On stop (SIGTERM from tini): stop the app, give the daemon its 30 s to finish what is in
# flight, then one bounded flush pass; whatever is still queued stays on the spool volume.
set -euo pipefail

relayq init --user relayq >/dev/null      # a fresh volume gets its directories and modes
# --foreground: the daemon logs to stderr, so `docker logs` shows its lines (a container
# has no syslog daemon, no /dev/log); it says so in its first line.
relayq daemon --foreground &
daemon=$!

"$@" &
app=$!

stop() {
  kill -TERM "$app" 2>/dev/null || true
  wait "$app" || true
  kill -TERM "$daemon" 2>/dev/null || true
  wait "$daemon" || true
  timeout 20 relayq flush || true
  exit "$1"
}
trap 'stop 143' TERM INT

# Stop when either one exits (the app, or a daemon that refuses a bad config), with its status.
rc=0
wait -n "$app" "$daemon" || rc=$?
stop "$rc"
