# relayq — build, test, demo, bench, install.
# `make demo` and `make test` do all their own set-up on a fresh Debian machine.

CARGO   ?= cargo
PREFIX  ?= /usr
DESTDIR ?=
SBINDIR ?= $(PREFIX)/sbin
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
MANDIR  ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
SPOOL   ?= /var/spool/relayq
UNITDIR ?= /lib/systemd/system
REL     ?= target/release
# What `install` builds first; scripts/mkdeb.sh sets it empty to stage already-built binaries.
INSTALL_NEEDS ?= build

.PHONY: all build deps test check fmt clippy unit integration fuzz demo bench install uninstall deb lint-deb clean

all: build

build:
	$(CARGO) build --release --locked 2>/dev/null || $(CARGO) build --release

deps:
	bash scripts/deps.sh

# The README's test command: formatting, lints, unit and integration tests (real binary,
# real SMTP server), and a bounded fuzz run of the parsers.
# The release profile without LTO (the same code; installed builds are whole-program LTO):
# each of the ~30 test executables links the library, and LTO at each link was most of the
# build time (thin: 13.5 min of a 22 min CI run on 2 cores).
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
	  $(CARGO) test --release -- --test-threads=2

demo: deps build
	bash scripts/demo.sh

bench: deps build
	bash bench/run.sh

clean:
	$(CARGO) clean

# A Debian package from the release binaries (scripts/mkdeb.sh: `make install DESTDIR=`
# into a staging tree, then dpkg-deb). Prints the path of the .deb.
# DEB_VERSION=... overrides the version (default: Cargo.toml's).
deb: build
	bash scripts/mkdeb.sh

# lintian on that package, installing lintian first if it is missing (apt-get, as root).
# Not part of `make test`: lintian's install is large. Fails on an error or a warning;
# contrib/debian/lintian-overrides holds the deliberate exceptions (docs/install.md).
lint-deb: build
	@command -v lintian >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian; }
	deb=$$(bash scripts/mkdeb.sh) && lintian --info --display-info --pedantic --fail-on error,warning "$$deb"

# ---- install -------------------------------------------------------------------------
# Safe to re-run: keeps config, secrets and queued mail. Refuses to replace another MTA's
# sendmail unless FORCE=1.
OTHER_MTAS := postfix exim4-daemon-light exim4-daemon-heavy nullmailer msmtp-mta dma ssmtp opensmtpd sendmail-bin

install: $(INSTALL_NEEDS)
	@if [ -z "$(DESTDIR)" ] && [ "$(FORCE)" != 1 ]; then \
	  for p in $(OTHER_MTAS); do \
	    if dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed'; then \
	      echo "make install: the $$p package provides /usr/sbin/sendmail here."; \
	      echo "  Remove it first (apt-get remove $$p; flush or move its queue), or run 'make install FORCE=1'."; \
	      exit 1; fi; done; \
	  if [ -e /usr/sbin/sendmail ] && ! readlink /usr/sbin/sendmail | grep -q relayq; then \
	    echo "make install: /usr/sbin/sendmail exists and is not relayq ($$(readlink -f /usr/sbin/sendmail))."; \
	    echo "  Remove the other MTA first, or run 'make install FORCE=1' to replace the link."; exit 1; fi; \
	fi
	@if [ -z "$(DESTDIR)" ] && ! getent passwd relayq >/dev/null; then \
	  useradd --system --user-group --no-create-home --home-dir $(SPOOL) --shell /usr/sbin/nologin relayq; fi
	@# relayqdrop: postdrop's group (tmp/ and new/ only), apart from relayq's (which reads the password).
	@if [ -z "$(DESTDIR)" ]; then \
	  getent group relayqdrop >/dev/null || groupadd --system relayqdrop; \
	  id -nG relayq | grep -qw relayqdrop || usermod -a -G relayqdrop relayq; fi
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(UNITDIR)
	install -m 0755 $(REL)/relayq $(DESTDIR)$(SBINDIR)/relayq
	install -m 0755 $(REL)/relayq-sendmail $(DESTDIR)$(SBINDIR)/relayq-sendmail
	install -m 0755 $(REL)/relayq-postdrop $(DESTDIR)$(SBINDIR)/relayq-postdrop
	install -m 0755 $(REL)/relayq-doctor $(DESTDIR)$(SBINDIR)/relayq-doctor
	@if [ -z "$(DESTDIR)" ]; then chgrp relayqdrop $(SBINDIR)/relayq-postdrop && chmod 2755 $(SBINDIR)/relayq-postdrop; fi
	@# sendmail is the submission front end (it hands -bp and -q to relayq beside it).
	ln -sf relayq-sendmail $(DESTDIR)$(SBINDIR)/sendmail
	ln -sf ../sbin/relayq-sendmail $(DESTDIR)$(PREFIX)/lib/sendmail
	ln -sf ../sbin/relayq $(DESTDIR)$(BINDIR)/mailq
	ln -sf ../sbin/relayq $(DESTDIR)$(BINDIR)/newaliases
	install -m 0644 docs/man/sendmail.8 docs/man/relayq.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 docs/man/relayq.toml.5 $(DESTDIR)$(MANDIR)/man5/
# A page for every program, linked to the page that documents it: mailq, newaliases (the
# NAME line), relayq-sendmail and relayq-postdrop (PRIVILEGES) in sendmail.8, relayq-doctor
# in relayq.8.
	ln -sf sendmail.8 $(DESTDIR)$(MANDIR)/man8/mailq.8
	ln -sf sendmail.8 $(DESTDIR)$(MANDIR)/man8/newaliases.8
	ln -sf sendmail.8 $(DESTDIR)$(MANDIR)/man8/relayq-sendmail.8
	ln -sf sendmail.8 $(DESTDIR)$(MANDIR)/man8/relayq-postdrop.8
	ln -sf relayq.8 $(DESTDIR)$(MANDIR)/man8/relayq-doctor.8
	install -m 0644 contrib/relayq.service contrib/relayq.socket contrib/relayq-flush.service contrib/relayq-flush.timer $(DESTDIR)$(UNITDIR)/
# Hosts without systemd: the LSB init script (systemd ignores it: relayq.service wins).
	install -d $(DESTDIR)$(SYSCONFDIR)/init.d
	install -m 0755 contrib/init.d/relayq $(DESTDIR)$(SYSCONFDIR)/init.d/relayq
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/relayq
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/relayq/relayq.toml ]; then \
	  install -m 0644 contrib/examples/relayq.toml.example $(DESTDIR)$(SYSCONFDIR)/relayq/relayq.toml; fi
	@if [ -z "$(DESTDIR)" ]; then \
	  if [ ! -e $(SYSCONFDIR)/relayq/password ]; then install -m 0640 -g relayq /dev/null $(SYSCONFDIR)/relayq/password; fi; \
	  $(SBINDIR)/relayq -C $(SYSCONFDIR)/relayq/relayq.toml init --user relayq; \
	  echo "Installed. Next: edit $(SYSCONFDIR)/relayq/relayq.toml, put the password in $(SYSCONFDIR)/relayq/password,"; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload 2>/dev/null || true; \
	    echo "      then: systemctl enable --now relayq"; \
	  elif [ -d /run/openrc ]; then \
	    echo "      then: install -m 0755 contrib/openrc/relayq /etc/init.d/relayq && rc-update add relayq default && rc-service relayq start"; \
	  else update-rc.d relayq defaults >/dev/null 2>&1 || true; \
	    echo "      then: service relayq start   ($(SYSCONFDIR)/init.d/relayq; no systemd here)"; fi; fi

uninstall:
	-command -v systemctl >/dev/null && systemctl disable --now relayq relayq.socket relayq-flush.timer 2>/dev/null
	-[ -n "$(DESTDIR)" ] || [ ! -x $(SYSCONFDIR)/init.d/relayq ] || $(SYSCONFDIR)/init.d/relayq stop
	-[ -n "$(DESTDIR)" ] || ! command -v update-rc.d >/dev/null || update-rc.d -f relayq remove >/dev/null 2>&1
	rm -f $(DESTDIR)$(SBINDIR)/relayq $(DESTDIR)$(SBINDIR)/relayq-sendmail $(DESTDIR)$(SBINDIR)/relayq-postdrop $(DESTDIR)$(SBINDIR)/relayq-doctor
	for l in $(DESTDIR)$(SBINDIR)/sendmail $(DESTDIR)$(PREFIX)/lib/sendmail $(DESTDIR)$(BINDIR)/mailq $(DESTDIR)$(BINDIR)/newaliases; do \
	  if readlink $$l | grep -q relayq; then rm -f $$l; fi; done
	rm -f $(DESTDIR)$(MANDIR)/man8/sendmail.8 $(DESTDIR)$(MANDIR)/man8/relayq.8 $(DESTDIR)$(MANDIR)/man5/relayq.toml.5
	rm -f $(DESTDIR)$(MANDIR)/man8/mailq.8 $(DESTDIR)$(MANDIR)/man8/newaliases.8 $(DESTDIR)$(MANDIR)/man8/relayq-sendmail.8 $(DESTDIR)$(MANDIR)/man8/relayq-postdrop.8 $(DESTDIR)$(MANDIR)/man8/relayq-doctor.8
	rm -f $(DESTDIR)$(UNITDIR)/relayq.service $(DESTDIR)$(UNITDIR)/relayq.socket $(DESTDIR)$(UNITDIR)/relayq-flush.service $(DESTDIR)$(UNITDIR)/relayq-flush.timer
	rm -f $(DESTDIR)$(SYSCONFDIR)/init.d/relayq
	@echo "Kept: $(SYSCONFDIR)/relayq (config, secrets) and $(SPOOL) (queued mail). Remove them by hand if you want."
