#!/usr/bin/env bash
# Builds the relayq Debian package from already-built binaries, without debhelper or
# cargo-deb: `make install DESTDIR=` into a staging tree, Debian's finishing touches (gzipped
# man pages, copyright, changelog), a control file, the maintainer scripts from
# contrib/debian/, then `dpkg-deb --root-owner-group --build`. Prints the .deb's path on
# stdout (everything else goes to stderr).
#
#   REL=target/release        where relayq and relayq-postdrop are
#   OUTDIR=target/debian      where the .deb goes
#   DEB_VERSION=0.1.0         package version (default: Cargo.toml's)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
REL=${REL:-target/release}
OUTDIR=${OUTDIR:-target/debian}
version=${DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)}
arch=$(dpkg --print-architecture)

for b in relayq relayq-postdrop relayq-doctor; do
  [ -x "$REL/$b" ] || { echo "mkdeb: $REL/$b is missing: run 'make build' first" >&2; exit 1; }
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root/DEBIAN" "$OUTDIR"

make -s --no-print-directory install DESTDIR="$root" REL="$REL" INSTALL_NEEDS= >&2

# Debian policy: stripped binaries, compressed man pages, copyright and changelog in /usr/share/doc.
if command -v strip >/dev/null; then
  strip --strip-unneeded "$root/usr/sbin/relayq" "$root/usr/sbin/relayq-postdrop" "$root/usr/sbin/relayq-doctor"
fi
find "$root/usr/share/man" -type f -name '*.[0-9]' -exec gzip -9n {} +
doc=$root/usr/share/doc/relayq
install -d "$doc"
install -m 0644 README.md docs/*.md "$doc/"
install -d "$doc/providers"
install -m 0644 docs/providers/*.md "$doc/providers/"
cat > "$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: relayq

Files: *
Copyright: the relayq authors
License: MIT or Apache-2.0
 On Debian systems the Apache 2.0 licence is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
printf 'relayq (%s) unstable; urgency=medium\n\n  * Package built by scripts/mkdeb.sh.\n\n -- relayq maintainers <root@localhost>  %s\n' \
  "$version" "$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" |
  gzip -9n > "$doc/changelog.gz"

# Shared-library dependencies: dpkg-shlibdeps wants a debian/control, so give it one.
depends="libc6 (>= 2.34)"
if command -v dpkg-shlibdeps >/dev/null; then
  mkdir -p "$stage/src/debian"
  printf 'Source: relayq\n\nPackage: relayq\nArchitecture: any\n' > "$stage/src/debian/control"
  if line=$(cd "$stage/src" && dpkg-shlibdeps -O "$root/usr/sbin/relayq" "$root/usr/sbin/relayq-postdrop" "$root/usr/sbin/relayq-doctor" 2>/dev/null); then
    depends=${line#shlibs:Depends=}
  fi
fi

cat > "$root/DEBIAN/control" <<CONTROL
Package: relayq
Version: $version
Architecture: $arch
Maintainer: relayq maintainers <root@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends, adduser
Provides: mail-transport-agent
Conflicts: mail-transport-agent
Replaces: mail-transport-agent
Section: mail
Priority: optional
Description: sendmail replacement that relays through one authenticated TLS smarthost
 relayq is a null client: sendmail queues each message durably in a local spool and
 the relayq daemon relays it through one smarthost (SMTP2GO, Amazon SES, SendGrid,
 Microsoft 365, a company relay) over verified TLS with AUTH, with per-recipient
 retries and RFC 3464 bounces. It listens on no port.
CONTROL
echo /etc/relayq/relayq.toml > "$root/DEBIAN/conffiles"
install -m 0755 contrib/debian/postinst contrib/debian/prerm contrib/debian/postrm "$root/DEBIAN/"

deb=$(cd "$OUTDIR" && pwd)/relayq_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
