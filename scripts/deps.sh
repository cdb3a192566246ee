#!/usr/bin/env bash
# Installs what the tests, the demo and the bench need on a fresh Debian machine.
# Idempotent: apt-get runs only when something is missing.
set -euo pipefail
need=()
for p in python3-aiosmtpd openssl swaks iproute2 util-linux man-db groff-base procps; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  echo "deps: installed ${need[*]}"
else
  echo "deps: all present"
fi
