#!/usr/bin/env bash
# Installs what the tests, `make demo` and `make bench` need on a fresh Debian 12 machine.
# Idempotent and offline-friendly: apt-get (update + install) runs only when a package is
# missing, so re-runs on a ready machine touch no network. Prints one line saying what it did.
#
#   python3-aiosmtpd     the test relay (tests/relay/relay.py, run with /usr/bin/python3)
#   openssl              makes the test CA (tests/relay/mkca.sh)
#   swaks, libnet-ssleay-perl   SMTP client for tests; Net::SSLeay gives swaks STARTTLS/TLS
#   iproute2             tc / ip netns for the bench
#   util-linux           setpriv
#   man-db, groff-base   man page checks
#   procps               ps / pgrep in scripts
#   adduser              the .deb's postinst (tests/package.rs installs it)
#   strace               shows which paths relayq-postdrop resolves (tests/privilege.rs)
set -euo pipefail

pkgs=(python3-aiosmtpd openssl swaks libnet-ssleay-perl iproute2 util-linux man-db groff-base procps adduser strace)

need=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$st" = "install ok installed" ] || need+=("$p")
done

if [ ${#need[@]} -eq 0 ]; then
  echo "deps: all ${#pkgs[@]} packages already installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists; a stale one may lack a package: update first.
# apt's chatter goes to a log that is shown only if something fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq &&
       $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "deps: FAILED to install ${need[*]}" >&2
  exit 1
fi
echo "deps: installed ${need[*]}"
