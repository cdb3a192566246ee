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
#   python3-venv, nodejs, npm   real SMTP clients for tests/listener.rs: Django in a venv
#                        (PyPI) and nodemailer (npm), both in $RELAYQ_TEST_DEPS (below);
#                        in the same venv dkimpy and PyNaCl (ed25519), the independent DKIM
#                        verifier of tests/dkim.rs
#
# With --bench (bench/run.sh), also Postfix's smtp-sink and smtp-source: C programs, the
# relay and the floor client of the 0 ms row, where the Python relay would be the limit.
# They are unpacked from Debian's postfix package into $deps_dir/postfix, never installed
# (no MTA on the machine); libdb5.3 ... libssl3 are what they link.
set -euo pipefail
bench=false
[ "${1:-}" = --bench ] && bench=true

# Where the test clients that come from PyPI and npm live: outside the work tree, so a fresh
# clone or `cargo clean` does not fetch them again. tests/listener.rs looks in the same place.
deps_dir=${RELAYQ_TEST_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/relayq-test-deps}

# Django (venv) and nodemailer (npm) for tests/listener.rs; no network when already there.
clients() {
  local did=()
  if ! "$deps_dir/venv/bin/python" -c 'import django' >/dev/null 2>&1; then
    mkdir -p "$deps_dir"
    /usr/bin/python3 -m venv "$deps_dir/venv" >"$log" 2>&1 &&
      "$deps_dir/venv/bin/pip" install -q 'django>=4.2,<6' >>"$log" 2>&1 ||
      { cat "$log" >&2; echo "deps: FAILED to install django into $deps_dir/venv" >&2; exit 1; }
    did+=(django)
  fi
  if ! "$deps_dir/venv/bin/python" -c 'import dkim, nacl' >/dev/null 2>&1; then
    "$deps_dir/venv/bin/pip" install -q 'dkimpy>=1.1,<2' 'pynacl>=1.5,<2' >"$log" 2>&1 ||
      { cat "$log" >&2; echo "deps: FAILED to install dkimpy into $deps_dir/venv" >&2; exit 1; }
    did+=(dkimpy)
  fi
  if [ ! -f "$deps_dir/node/node_modules/nodemailer/package.json" ]; then
    mkdir -p "$deps_dir/node"
    [ -f "$deps_dir/node/package.json" ] || echo '{"private":true}' >"$deps_dir/node/package.json"
    npm install --prefix "$deps_dir/node" --no-audit --no-fund --silent 'nodemailer@^6' >"$log" 2>&1 ||
      { cat "$log" >&2; echo "deps: FAILED to install nodemailer into $deps_dir/node" >&2; exit 1; }
    did+=(nodemailer)
  fi
  if [ ${#did[@]} -gt 0 ]; then echo "deps: installed ${did[*]} into $deps_dir"; fi
  if $bench; then postfix_tools; fi
}

postfix_tools() {
  local dir=$deps_dir/postfix tmp
  [ -x "$dir/usr/sbin/smtp-sink" ] && [ -x "$dir/usr/sbin/smtp-source" ] && return 0
  tmp=$(mktemp -d)
  # apt-get download needs package lists (a fresh machine has none).
  if ! { (cd "$tmp" && apt-get download postfix) ||
         { $SUDO apt-get update -qq && (cd "$tmp" && apt-get download postfix); }; } >"$log" 2>&1 ||
     ! dpkg-deb -x "$tmp"/postfix_*.deb "$tmp/root" >>"$log" 2>&1; then
    cat "$log" >&2
    rm -rf "$tmp"
    echo "deps: FAILED to fetch Debian's postfix package for smtp-sink" >&2
    exit 1
  fi
  mkdir -p "$dir"
  rm -rf "$dir/usr"
  mv "$tmp/root/usr" "$dir/usr"
  rm -rf "$tmp"
  echo "deps: unpacked postfix's smtp-sink and smtp-source into $dir"
}

pkgs=(python3-aiosmtpd openssl swaks libnet-ssleay-perl iproute2 util-linux man-db groff-base procps adduser strace python3-venv)
# Node.js may come from elsewhere than Debian (NodeSource ships npm inside its nodejs).
command -v node >/dev/null && command -v npm >/dev/null || pkgs+=(nodejs npm)
if $bench; then pkgs+=(libdb5.3 libicu72 libnsl2 libsasl2-2 libssl3); fi

need=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$st" = "install ok installed" ] || need+=("$p")
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

if [ ${#need[@]} -eq 0 ]; then
  echo "deps: all ${#pkgs[@]} packages already installed"
  clients
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists; a stale one may lack a package: update first.
# apt's chatter goes to a log that is shown only if something fails.
if ! { $SUDO apt-get update -qq &&
       $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "deps: FAILED to install ${need[*]}" >&2
  exit 1
fi
echo "deps: installed ${need[*]}"
clients
