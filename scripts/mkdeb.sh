#!/usr/bin/env bash
# Builds the relayq Debian package from already-built binaries, without debhelper or
# cargo-deb: `make install DESTDIR=` into a staging tree, Debian's finishing touches (gzipped
# man pages, copyright, changelog, lintian overrides), a control file, md5sums, the
# maintainer scripts from contrib/debian/, then `dpkg-deb --root-owner-group --build`.
# Prints the .deb's path on stdout (everything else goes to stderr). `make lint-deb` checks
# the result with lintian.
#
#   REL=target/release        where the relayq binaries are
#   OUTDIR=target/debian      where the .deb goes
#   DEB_VERSION=0.1.0         package version (default: Cargo.toml's)
#   DEB_MAINTAINER="Name <a@example.org>"   Maintainer and changelog signer (default: a
#                             placeholder at example.org, the reserved domain)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
REL=${REL:-target/release}
OUTDIR=${OUTDIR:-target/debian}
version=${DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)}
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-relayq maintainers <relayq@example.org>}
# One date for the changelog and the copyright years: the last commit's, or
# SOURCE_DATE_EPOCH, so that the same tree builds the same package.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

for b in relayq relayq-sendmail relayq-postdrop relayq-doctor; do
  [ -x "$REL/$b" ] || { echo "mkdeb: $REL/$b is missing: run 'make build' first" >&2; exit 1; }
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root/DEBIAN" "$OUTDIR"

make -s --no-print-directory install DESTDIR="$root" REL="$REL" INSTALL_NEEDS= >&2

# Debian policy: stripped binaries (without .comment and .note, as dh_strip does),
# compressed man pages, copyright and changelog in /usr/share/doc.
if command -v strip >/dev/null; then
  strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$root/usr/sbin/relayq" "$root/usr/sbin/relayq-sendmail" "$root/usr/sbin/relayq-postdrop" "$root/usr/sbin/relayq-doctor"
fi
find "$root/usr/share/man" -type f -name '*.[0-9]' -exec gzip -9n {} +
# The man page links (mailq.8 -> sendmail.8) now point at the .gz.
find "$root/usr/share/man" -type l -name '*.[0-9]' | while read -r link; do
  ln -s "$(readlink "$link").gz" "$link.gz"
  rm "$link"
done
doc=$root/usr/share/doc/relayq
install -d "$doc"
install -m 0644 README.md docs/*.md "$doc/"
install -d "$doc/providers"
install -m 0644 docs/providers/*.md "$doc/providers/"
# Copyright years: the first commit's to the last's (or the build date's).
first=$(git log --format=%ct 2>/dev/null | tail -n 1 || true)
first=$(date -u -d "@${first:-$epoch}" +%Y)
last=$(date -u -d "@$epoch" +%Y)
years=$first
[ "$first" = "$last" ] || years=$first-$last
sed "s/@YEARS@/$years/" contrib/debian/copyright > "$doc/copyright"
chmod 0644 "$doc/copyright"
printf 'relayq (%s) unstable; urgency=medium\n\n  * Package built by scripts/mkdeb.sh.\n\n -- %s  %s\n' \
  "$version" "$maintainer" "$(date -R -d "@$epoch")" |
  gzip -9n > "$doc/changelog.gz"
install -D -m 0644 contrib/debian/lintian-overrides "$root/usr/share/lintian/overrides/relayq"
# Rotation of /var/log/relayq.log, which the init script writes (a conffile, as all of /etc).
install -D -m 0644 contrib/logrotate/relayq "$root/etc/logrotate.d/relayq"

# Shared-library dependencies: dpkg-shlibdeps wants a debian/control, so give it one.
depends="libc6 (>= 2.34)"
if command -v dpkg-shlibdeps >/dev/null; then
  mkdir -p "$stage/src/debian"
  printf 'Source: relayq\n\nPackage: relayq\nArchitecture: any\n' > "$stage/src/debian/control"
  if line=$(cd "$stage/src" && dpkg-shlibdeps -O "$root/usr/sbin/relayq" "$root/usr/sbin/relayq-sendmail" "$root/usr/sbin/relayq-postdrop" "$root/usr/sbin/relayq-doctor" 2>/dev/null); then
    depends=${line#shlibs:Depends=}
  fi
fi

# Installed-Size as dpkg-gencontrol counts it: each file's size in KiB rounded up, 1 for
# each directory and link (not du's blocks, which depend on the build's file system).
installed_size=$(find "$root" -mindepth 1 -path "$root/DEBIAN" -prune -o \
  \( -type f -printf '%s\n' -o -printf '1024\n' \) | awk '{ k += int(($1 + 1023) / 1024) } END { print k }')

cat > "$root/DEBIAN/control" <<CONTROL
Package: relayq
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Pre-Depends: init-system-helpers (>= 1.54~)
Depends: $depends, adduser
Provides: mail-transport-agent
Conflicts: mail-transport-agent
Replaces: mail-transport-agent
Section: mail
Priority: optional
Description: sendmail replacement that relays through one authenticated TLS smarthost
 relayq is a null client: sendmail queues each message durably in a local
 spool and the relayq daemon relays it through one smarthost (SMTP2GO,
 Amazon SES, SendGrid, Microsoft 365, a company relay) over verified TLS
 with AUTH, with per-recipient retries and RFC 3464 bounces. It listens on
 no port unless asked to (an SMTP listener on loopback, off by default).
CONTROL
printf '%s\n' /etc/relayq/relayq.toml /etc/init.d/relayq /etc/logrotate.d/relayq > "$root/DEBIAN/conffiles"
# md5sums for debsums and dpkg --verify: every file but the conffiles (dpkg records those).
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
  grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles) | xargs -d '\n' md5sum) > "$root/DEBIAN/md5sums"
install -m 0755 contrib/debian/postinst contrib/debian/prerm contrib/debian/postrm "$root/DEBIAN/"

deb=$(cd "$OUTDIR" && pwd)/relayq_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
