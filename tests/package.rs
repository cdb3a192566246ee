//! The Debian package end to end, as root (CI), each test in a throwaway root (an overlay
//! over `/`, tests/package/root.rs) so the machine's own /etc, /var and package database
//! are never touched, whatever MTA or relayq it has. `scripts/mkdeb.sh` builds the package
//! from the binaries under test.
//!
//! * `deb_installs_relays_upgrades_removes_and_purges`: `dpkg -i` installs it (user, setgid
//!   postdrop, secrets file, spool, init script), an ordinary user's mail goes through the
//!   installed /usr/sbin/sendmail and `relayq flush` to a real relay, an upgrade keeps
//!   queued mail and the admin's config, `dpkg -r` stops a daemon started by hand (prerm,
//!   by its pidfile) and keeps mail and config, `dpkg -P` refuses while mail is queued and
//!   removes everything with RELAYQ_PURGE_QUEUE=1.
//! * `replaces_postfix_on_a_host_without_systemd` (issue #13, acceptance 2): with apt from
//!   the Debian mirrors, postfix and rsyslog in the root, then `apt install ./relayq_*.deb`
//!   over postfix, `import --from postfix`, the LSB init script's start, status and reload,
//!   mail from a cron job (`sendmail -t` as an ordinary user), the daemon's lines in
//!   /var/log/mail.log with Postfix's `warning:` prefix, stop, and purge refused while mail
//!   is queued. It skips, saying why, when the mirrors cannot be reached.
//!
//! The roots have a policy-rc.d that denies invoke-rc.d (as chroot builders do), so no
//! maintainer script starts a service by itself. Every command runs under timeout(1).

#[path = "package/root.rs"]
mod root;
mod support;
use root::Root;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

const SPOOL: &str = "/var/spool/relayq";
const CONF: &str = "/etc/relayq/relayq.toml";
const PASSWORD: &str = "/etc/relayq/password";
const PIDFILE: &str = "/var/spool/relayq/run/relayq.pid";
const RCPT: &str = "someone@example.org";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Why this machine cannot run the package tests, if it cannot.
fn why_skip() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (mount, chroot, dpkg)".into());
    }
    for tool in [
        "dpkg", "dpkg-deb", "make", "setpriv", "timeout", "chroot", "mount",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// A throwaway root with a policy-rc.d that denies every invoke-rc.d action.
fn new_root() -> Option<Root> {
    let root = match Root::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("SKIP: package test: no throwaway root: {e}");
            return None;
        }
    };
    let policy = root.p("/usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n").expect("policy-rc.d");
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // A root that already had relayq or an MTA is not the fresh host these tests describe.
    for p in ["/usr/sbin/relayq", "/etc/relayq", SPOOL] {
        assert!(
            root.p(p).symlink_metadata().is_err(),
            "{p} exists in the machine's / (lower layer)"
        );
    }
    Some(root)
}

fn exists(root: &Root, p: &str) -> bool {
    root.p(p).symlink_metadata().is_ok()
}

/// A user's or group's entry in the root's database, if any.
fn getent(root: &Root, db: &str, name: &str) -> Option<Vec<String>> {
    let o = root.run("getent", &[db, name], 30);
    o.status.success().then(|| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .split(':')
            .map(String::from)
            .collect()
    })
}

fn id_of(root: &Root, db: &str, name: &str) -> u32 {
    getent(root, db, name)
        .and_then(|f| f.get(2)?.parse().ok())
        .unwrap_or_else(|| panic!("{db} {name} in the root"))
}

fn dpkg_status(root: &Root, pkg: &str) -> String {
    let o = root.run("dpkg-query", &["-W", "-f=${Status}", pkg], 30);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// scripts/mkdeb.sh from the binaries this test runs, into the root's /tmp; returns the
/// .deb's path inside the root.
fn build_deb(root: &Root, version: &str) -> String {
    let rel = Path::new(BIN).parent().expect("profile dir");
    let out = root.p("/tmp/relayq-debs");
    std::fs::create_dir_all(&out).expect("mkdir");
    let o = Command::new("timeout")
        .args(["300", "bash", "scripts/mkdeb.sh"])
        .current_dir(repo())
        .env("REL", rel)
        .env("OUTDIR", &out)
        .env("DEB_VERSION", version)
        .stdin(Stdio::null())
        .output()
        .expect("mkdeb.sh");
    assert!(o.status.success(), "mkdeb.sh: {}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout);
    let deb = PathBuf::from(printed.lines().last().unwrap_or("").trim());
    assert!(
        deb.is_file() && deb.starts_with(&out),
        "mkdeb.sh printed {printed:?}"
    );
    std::fs::set_permissions(&deb, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    format!(
        "/{}",
        deb.strip_prefix(&root.path).expect("in the root").display()
    )
}

/// (octal mode incl. setuid/setgid/sticky, uid, gid) of a path in the root.
fn stat(root: &Root, p: &str) -> (String, u32, u32) {
    let m = root
        .p(p)
        .symlink_metadata()
        .unwrap_or_else(|e| panic!("{p}: {e}"));
    (
        format!("{:04o}", m.permissions().mode() & 0o7777),
        m.uid(),
        m.gid(),
    )
}

/// Submit a message with the installed sendmail link `via`, as nobody or as root.
fn submit(root: &Root, via: &str, subject: &str, as_nobody: bool) {
    let msg = format!("Subject: {subject}\n\nbody of {subject}\n");
    let o = if as_nobody {
        root.run_env(
            &[],
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                via,
                "-i",
                RCPT,
            ],
            30,
            Some(msg.as_bytes()),
        )
    } else {
        root.run_env(&[], via, &["-i", RCPT], 30, Some(msg.as_bytes()))
    };
    assert!(o.status.success(), "{via} ({subject}): {}", stderr(&o));
}

/// Queue files (not journals) waiting in new/, queue/ and hold/.
fn queued(root: &Root) -> Vec<String> {
    let mut ids: Vec<String> = ["new", "queue", "hold"]
        .iter()
        .filter_map(|d| std::fs::read_dir(root.p(SPOOL).join(d)).ok())
        .flat_map(|r| r.filter_map(|e| e.ok()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".st"))
        .collect();
    ids.sort();
    ids
}

/// One `relayq flush`, then wait for the relay to hold `n` messages; the last one's subject.
fn flush_expect(root: &Root, relay: &Relay, n: usize, subject: &str) {
    root.ok("/usr/sbin/relayq", &["flush"], 90);
    let got = relay.wait_for(n, Duration::from_secs(20));
    assert_eq!(got.len(), n, "messages at the relay");
    let last = &got[n - 1];
    assert_eq!(subject_of(last), subject);
    assert_eq!(rcpts_of(last), vec![RCPT.to_string()]);
    assert!(
        queued(root).is_empty(),
        "queue empty after flush: {:?}",
        queued(root)
    );
}

/// Wait (bounded) until `f` holds.
fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The config an admin writes: the test relay, the test CA, syslog as `syslog`.
fn write_config(root: &Root, relay: &Relay, syslog: bool) -> String {
    let conf = format!(
        "[relay]\n{}\n\n[address]\nadmin = \"admin@example.com\"\nsender = \"server@example.com\"\ndomain = \"example.com\"\naliases = \"/nonexistent\"\n\n[log]\nsyslog = {syslog}\n",
        relay_toml("smtp", relay.port).replace("PASSWORD_FILE", PASSWORD)
    );
    std::fs::write(root.p(CONF), &conf).expect("write config");
    std::fs::write(root.p(PASSWORD), "secret\n").expect("write password");
    conf
}

fn check_installed(root: &Root, relayq_gid: u32) {
    let u = getent(root, "passwd", "relayq").expect("user relayq");
    let uid: u32 = u[2].parse().expect("uid");
    // postdrop's group: tmp/ and new/ only, not relayq's (which reads the password); the
    // daemon's user is a member, to read what users submit.
    let drop = getent(root, "group", "relayqdrop").expect("group relayqdrop");
    let drop_gid: u32 = drop[2].parse().expect("gid");
    assert_ne!(drop_gid, relayq_gid);
    assert_eq!(drop[3], "relayq", "members of relayqdrop");
    assert!(uid < 1000, "a system user: uid {uid}");
    assert_eq!(u[6], "/usr/sbin/nologin");
    assert_eq!(stat(root, "/usr/sbin/relayq"), ("0755".into(), 0, 0));
    assert_eq!(
        stat(root, "/usr/sbin/relayq-postdrop"),
        ("2755".into(), 0, drop_gid)
    );
    assert_eq!(stat(root, "/usr/sbin/relayq-doctor"), ("0755".into(), 0, 0));
    assert_eq!(stat(root, "/etc/init.d/relayq"), ("0755".into(), 0, 0));
    // `relayq doctor` finds its companion program where the package put it.
    let d = root.run("/usr/sbin/relayq", &["doctor", "--dns", "127.0.0.1:9"], 60);
    let out = String::from_utf8_lossy(&d.stdout);
    assert!(
        matches!(d.status.code(), Some(0 | 1)) && out.contains("permissions"),
        "doctor: {}",
        text(&d)
    );
    assert_eq!(
        stat(root, "/usr/sbin/relayq-sendmail"),
        ("0755".into(), 0, 0)
    );
    // sendmail is the submission front end; mailq and newaliases are relayq's.
    for (link, prog) in [
        ("/usr/sbin/sendmail", "relayq-sendmail"),
        ("/usr/lib/sendmail", "relayq-sendmail"),
        ("/usr/bin/mailq", "relayq"),
        ("/usr/bin/newaliases", "relayq"),
    ] {
        let to = std::fs::read_link(root.p(link)).unwrap_or_else(|e| panic!("{link}: {e}"));
        assert!(to.ends_with(prog), "{link} -> {}", to.display());
    }
    // The front end hands the listing to the relayq the package put beside it.
    let listing = root.ok("/usr/sbin/sendmail", &["-bp"], 60);
    assert!(
        listing.contains("Mail queue is empty") || listing.contains("Request"),
        "sendmail -bp: {listing}"
    );
    for f in [
        "/usr/share/man/man8/sendmail.8.gz",
        "/usr/share/man/man8/relayq.8.gz",
        "/usr/share/man/man5/relayq.toml.5.gz",
        "/lib/systemd/system/relayq.service",
        "/lib/systemd/system/relayq-flush.timer",
        "/lib/systemd/system/relayq.socket",
        // Rotation of the log the init script writes.
        "/etc/logrotate.d/relayq",
        "/usr/share/doc/relayq/copyright",
        "/usr/share/doc/relayq/admin.md",
        "/usr/share/doc/relayq/troubleshooting.md",
        "/usr/share/doc/relayq/providers/ses.md",
        // postinst linked the init script into the runlevels (update-rc.d).
        "/etc/rc2.d/S01relayq",
        "/etc/rc0.d/K01relayq",
    ] {
        assert!(exists(root, f), "{f} installed");
    }
    assert_eq!(stat(root, CONF), ("0644".into(), 0, 0));
    assert_eq!(stat(root, PASSWORD), ("0640".into(), 0, relayq_gid));
    // The spool as docs/spool.md describes it (relayq init --user relayq): the root is root's.
    assert_eq!(stat(root, SPOOL), ("0755".into(), 0, 0));
    for (dir, mode) in [
        ("tmp", "1770"),
        ("new", "1770"),
        ("queue", "0700"),
        ("hold", "0700"),
        ("failed", "0700"),
        ("corrupt", "0700"),
        ("journal", "0700"),
        ("run", "0755"),
    ] {
        let gid = if matches!(dir, "tmp" | "new") {
            drop_gid
        } else {
            relayq_gid
        };
        assert_eq!(
            stat(root, &format!("{SPOOL}/{dir}")),
            (mode.to_string(), uid, gid),
            "{SPOOL}/{dir}"
        );
    }
    let conffiles = root.ok("dpkg-query", &["-W", "-f=${Conffiles}", "relayq"], 30);
    for c in [CONF, "/etc/init.d/relayq", "/etc/logrotate.d/relayq"] {
        assert!(conffiles.contains(c), "conffiles: {conffiles}");
    }
}

fn dpkg_install(root: &Root, deb: &str) {
    root.ok(
        "dpkg",
        &["--force-confdef", "--force-confold", "-i", deb],
        300,
    );
}

#[test]
fn deb_installs_relays_upgrades_removes_and_purges() {
    if let Some(why) = why_skip() {
        eprintln!("SKIP: package test: {why}");
        return;
    }
    let Some(root) = new_root() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let version = env!("CARGO_PKG_VERSION");
    let deb1 = build_deb(&root, version);
    for field in ["Provides", "Conflicts", "Replaces"] {
        assert_eq!(
            root.ok("dpkg-deb", &["-f", &deb1, field], 30).trim(),
            "mail-transport-agent"
        );
    }
    let depends = root.ok("dpkg-deb", &["-f", &deb1, "Depends"], 30);
    assert!(depends.contains("libc6 (>= "), "Depends: {depends}");

    dpkg_install(&root, &deb1);
    assert_eq!(dpkg_status(&root, "relayq"), "install ok installed");
    let gid = id_of(&root, "group", "relayq");
    check_installed(&root, gid);

    // Configure the relay as an admin would; the files keep their modes.
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let conf = write_config(&root, &relay, false);
    assert_eq!(stat(&root, PASSWORD), ("0640".into(), 0, gid));

    // An ordinary user's mail: setgid relayq-postdrop as installed by postinst.
    submit(&root, "/usr/sbin/sendmail", "installed", true);
    let ids = queued(&root);
    assert_eq!(ids.len(), 1, "queued: {ids:?}");
    let mailq = root.ok("/usr/bin/mailq", &[], 30);
    assert!(mailq.contains(RCPT), "mailq: {mailq}");
    flush_expect(&root, &relay, 1, "installed");

    // Upgrade with a message waiting: it stays queued, and so do the admin's files.
    submit(
        &root,
        "/usr/lib/sendmail",
        "queued across the upgrade",
        false,
    );
    let waiting = queued(&root);
    assert_eq!(waiting.len(), 1);
    let v2 = format!("{version}+upgrade1");
    let deb2 = build_deb(&root, &v2);
    dpkg_install(&root, &deb2);
    assert_eq!(
        root.ok("dpkg-query", &["-W", "-f=${Version}", "relayq"], 30),
        v2
    );
    assert_eq!(queued(&root), waiting, "queued mail survives the upgrade");
    assert_eq!(
        std::fs::read_to_string(root.p(CONF)).ok(),
        Some(conf.clone())
    );
    assert_eq!(
        std::fs::read_to_string(root.p(PASSWORD)).ok().as_deref(),
        Some("secret\n")
    );
    check_installed(&root, gid);
    flush_expect(&root, &relay, 2, "queued across the upgrade");

    // A daemon started by hand (no init system involved), with the relay refusing every
    // transaction so that mail stays queued: prerm stops it through its pidfile, although
    // policy-rc.d denies the init script's stop.
    // The config asks for syslog, and the root has no /dev/log (no syslog daemon): the
    // daemon logs to its stderr instead, and says so first.
    relay.set_faults(r#"{"connect": "421 4.3.2 try later"}"#);
    let conf = write_config(&root, &relay, true);
    let err_path = tmp.path().join("daemon.err");
    let err_file = std::fs::File::create(&err_path).expect("daemon.err");
    let mut daemon = Command::new("timeout")
        .args(["--kill-after=5", "300", "chroot"])
        .arg(&root.path)
        .args(["/usr/sbin/relayq", "daemon"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .expect("relayq daemon");
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(
            root.p(PIDFILE)
        )
        .is_ok_and(|s| s
            .trim()
            .parse::<i32>()
            .is_ok_and(|p| root.running("relayq").contains(&p)))),
        "the daemon wrote run/relayq.pid with its pid"
    );
    submit(&root, "/usr/sbin/sendmail", "kept on remove", true);
    let waiting = queued(&root);
    assert_eq!(waiting.len(), 1);
    let removed = root.run("dpkg", &["-r", "relayq"], 180);
    assert!(removed.status.success(), "dpkg -r: {}", text(&removed));
    let st = daemon.wait().expect("wait daemon");
    assert!(
        root.running("relayq").is_empty(),
        "dpkg -r stopped the daemon ({st:?})"
    );
    assert!(!exists(&root, PIDFILE), "the daemon removed its pidfile");
    let err = std::fs::read_to_string(&err_path).expect("daemon.err");
    let first = err.lines().next().unwrap_or("");
    assert!(
        first.starts_with("relayq: no syslog socket (/dev/log): logging to stderr ("),
        "the daemon says where its logs go: {err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("relayq: warning: relay ")
                || l.starts_with("relayq: error: relay ")),
        "the relay's refusal, with Postfix's prefix: {err}"
    );
    assert!(err.lines().any(|l| l == "relayq: stopped"), "{err}");
    assert_eq!(dpkg_status(&root, "relayq"), "deinstall ok config-files");
    for gone in [
        "/usr/sbin/relayq",
        "/usr/sbin/relayq-sendmail",
        "/usr/sbin/sendmail",
        "/usr/bin/mailq",
    ] {
        assert!(!exists(&root, gone), "{gone} removed");
    }
    assert_eq!(std::fs::read_to_string(root.p(CONF)).ok(), Some(conf));
    assert!(exists(&root, PASSWORD));
    assert_eq!(queued(&root), waiting, "queued mail kept on remove");
    assert!(getent(&root, "passwd", "relayq").is_some());

    // Purge with mail queued: refused, saying where the mail is; the mail stays.
    let refused = root.run("dpkg", &["-P", "relayq"], 180);
    let said = text(&refused);
    assert!(!refused.status.success(), "purge refused: {said}");
    assert!(
        said.contains("1 message(s) still queued in /var/spool/relayq")
            && said.contains("RELAYQ_PURGE_QUEUE=1"),
        "purge says where the mail is and how to force: {said}"
    );
    assert_eq!(
        queued(&root),
        waiting,
        "queued mail kept by a refused purge"
    );

    // Forced: everything the package created is gone.
    let forced = root.run_env(
        &[("RELAYQ_PURGE_QUEUE", "1")],
        "dpkg",
        &["-P", "relayq"],
        180,
        None,
    );
    assert!(forced.status.success(), "forced purge: {}", text(&forced));
    let status = dpkg_status(&root, "relayq");
    assert!(
        status.is_empty() || status.ends_with("not-installed"),
        "{status}"
    );
    for gone in [
        "/etc/relayq",
        SPOOL,
        "/etc/init.d/relayq",
        "/etc/logrotate.d/relayq",
        "/etc/rc2.d/S01relayq",
    ] {
        assert!(!exists(&root, gone), "{gone} removed on purge");
    }
    assert!(
        getent(&root, "passwd", "relayq").is_none(),
        "user relayq removed"
    );
    assert!(
        getent(&root, "group", "relayq").is_none(),
        "group relayq removed"
    );
    let left = root.ok("find", &["/etc/systemd/system", "-name", "relayq*"], 30);
    assert!(left.is_empty(), "systemd links left: {left}");
    assert_eq!(
        relay.arrived().len(),
        2,
        "nothing delivered after the upgrade's"
    );
}

/// apt-get in the root, with the Debian mirrors; Err(output) on failure.
fn apt(root: &Root, env: &[(&str, &str)], args: &[&str], secs: u64) -> Result<String, String> {
    let mut a = vec!["-y", "-q", "-o", "Dpkg::Options::=--force-confold"];
    a.extend_from_slice(args);
    let o = root.run_env(env, "apt-get", &a, secs, None);
    if o.status.success() {
        Ok(text(&o))
    } else {
        Err(format!("apt-get {args:?}: {:?}\n{}", o.status, text(&o)))
    }
}

/// The lines of the root's /var/log/mail.log that contain `needle`.
fn mail_log(root: &Root, needle: &str) -> Vec<String> {
    std::fs::read_to_string(root.p("/var/log/mail.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

#[test]
fn replaces_postfix_on_a_host_without_systemd() {
    if let Some(why) = why_skip() {
        eprintln!("SKIP: package test: {why}");
        return;
    }
    let Some(root) = new_root() else { return };
    assert!(
        !exists(&root, "/run/systemd/system"),
        "the root runs no systemd"
    );
    // A Debian server without systemd, as it was: postfix (a satellite) and rsyslog.
    if let Err(e) = apt(&root, &[], &["update"], 300) {
        eprintln!("SKIP: package test: the Debian mirrors cannot be reached: {e}");
        return;
    }
    let preseed = "postfix postfix/main_mailer_type select Satellite system\npostfix postfix/mailname string server.example.com\npostfix postfix/relayhost string [smtp.example.com]:587\n";
    let o = root.run_env(
        &[],
        "debconf-set-selections",
        &[],
        30,
        Some(preseed.as_bytes()),
    );
    assert!(o.status.success(), "debconf: {}", text(&o));
    apt(
        &root,
        &[],
        &["install", "--no-install-recommends", "postfix", "rsyslog"],
        600,
    )
    .expect("postfix and rsyslog from the mirrors");
    assert_eq!(dpkg_status(&root, "postfix"), "install ok installed");
    // rsyslog's init script is in orphan-sysvinit-scripts since bookworm: start it as that
    // script does (rsyslogd forks into the background and listens on /dev/log).
    root.ok("/usr/sbin/rsyslogd", &[], 60);
    assert!(
        wait_until(Duration::from_secs(10), || exists(&root, "/dev/log")),
        "rsyslogd listens on /dev/log"
    );

    // `apt install ./relayq_*.deb`, as README.md says: apt removes postfix (dpkg -i would
    // refuse: relayq conflicts with mail-transport-agent).
    let deb = build_deb(&root, env!("CARGO_PKG_VERSION"));
    let installed = apt(&root, &[], &["install", &deb], 300).expect("apt install ./relayq_*.deb");
    assert_eq!(dpkg_status(&root, "relayq"), "install ok installed");
    assert_ne!(
        dpkg_status(&root, "postfix"),
        "install ok installed",
        "apt removed postfix: {installed}"
    );
    assert_eq!(
        std::fs::read_link(root.p("/usr/sbin/sendmail")).ok(),
        Some(PathBuf::from("relayq-sendmail"))
    );
    assert!(
        root.running("relayq").is_empty(),
        "policy-rc.d: not started"
    );

    // Take postfix's settings over, as the admin would (the importer's findings are not
    // this test's subject: it is run as the admin would run it, and must not crash).
    let imported = root.run("/usr/sbin/relayq", &["import", "--from", "postfix"], 60);
    eprintln!("relayq import --from postfix: {}", text(&imported));
    assert!(imported.status.code().is_some(), "import: {imported:?}");

    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    write_config(&root, &relay, true);

    // With no daemon yet, the hints name this host's init system, not systemctl.
    let doctor = root.run("/usr/sbin/relayq", &["doctor", "--dns", "127.0.0.1:9"], 60);
    let said = text(&doctor);
    assert!(
        said.contains("service relayq start") && !said.contains("systemctl"),
        "doctor's hint: {said}"
    );
    assert!(
        said.contains("pass  logs"),
        "doctor: logs reach syslog: {said}"
    );

    // Start with the init script; it waits until the daemon is ready.
    root.ok("/etc/init.d/relayq", &["start"], 60);
    let pid: i32 = std::fs::read_to_string(root.p(PIDFILE))
        .expect("run/relayq.pid")
        .trim()
        .parse()
        .expect("a pid");
    assert_eq!(
        root.running("relayq"),
        vec![pid],
        "one daemon, the pidfile's"
    );
    let status = root.run("/etc/init.d/relayq", &["status"], 30);
    assert!(status.status.success(), "status: {}", text(&status));

    // Mail from a cron job: an ordinary user's `sendmail -t`, in cron's environment.
    let job = "printf 'To: ops@example.org\\nSubject: nightly report\\n\\nall fine\\n' | /usr/sbin/sendmail -t";
    let o = root.run_env(
        &[
            ("HOME", "/var/www"),
            ("LOGNAME", "www-data"),
            ("SHELL", "/bin/sh"),
        ],
        "setpriv",
        &[
            "--reuid=www-data",
            "--regid=www-data",
            "--init-groups",
            "/bin/sh",
            "-c",
            job,
        ],
        30,
        None,
    );
    assert!(o.status.success(), "cron job: {}", text(&o));
    let got = relay.wait_for(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "the cron job's mail reached the relay");
    assert_eq!(subject_of(&got[0]), "nightly report");
    assert_eq!(rcpts_of(&got[0]), vec!["ops@example.org".to_string()]);

    // The daemon's lines are in mail.log, as an admin greps them.
    assert!(
        wait_until(Duration::from_secs(10), || !mail_log(&root, "status=sent")
            .is_empty()),
        "delivery in mail.log"
    );
    let sent = mail_log(&root, "status=sent");
    assert!(
        sent[0].contains(&format!("relayq[{pid}]: ")) && sent[0].contains("to=<ops@example.org>"),
        "{sent:?}"
    );
    let reload = root.run("/etc/init.d/relayq", &["reload"], 30);
    assert!(reload.status.success(), "reload: {}", text(&reload));
    assert!(
        wait_until(Duration::from_secs(10), || !mail_log(
            &root,
            "configuration reloaded"
        )
        .is_empty()),
        "SIGHUP reached the daemon"
    );

    // The relay goes away: the next message stays queued, and mail.log says so with
    // Postfix's `warning:` prefix.
    drop(relay);
    submit(&root, "/usr/sbin/sendmail", "waits for the relay", true);
    assert!(
        wait_until(Duration::from_secs(20), || !mail_log(&root, "unreachable")
            .is_empty()),
        "the relay's absence in mail.log"
    );
    let warned = mail_log(&root, "unreachable");
    assert!(
        warned[0].contains(&format!("relayq[{pid}]: warning: relay ")),
        "{warned:?}"
    );
    let waiting = queued(&root);
    assert_eq!(waiting.len(), 1, "queued: {waiting:?}");

    // Stop with the init script: the daemon and its pidfile are gone.
    root.ok("/etc/init.d/relayq", &["stop"], 60);
    assert!(root.running("relayq").is_empty(), "stopped");
    assert!(!exists(&root, PIDFILE), "pidfile removed");
    let status = root.run("/etc/init.d/relayq", &["status"], 30);
    assert_eq!(
        status.status.code(),
        Some(3),
        "status when stopped: {}",
        text(&status)
    );

    // Purge with mail queued: refused, saying where it is; forced, everything goes.
    let refused = apt(&root, &[], &["purge", "relayq"], 300).expect_err("purge refused");
    assert!(
        refused.contains("still queued in /var/spool/relayq")
            && refused.contains("RELAYQ_PURGE_QUEUE=1"),
        "{refused}"
    );
    assert_eq!(queued(&root), waiting, "the queued mail is kept");
    apt(
        &root,
        &[("RELAYQ_PURGE_QUEUE", "1")],
        &["purge", "relayq"],
        300,
    )
    .expect("forced purge");
    for gone in [
        SPOOL,
        "/etc/relayq",
        "/etc/init.d/relayq",
        "/usr/sbin/relayq",
    ] {
        assert!(!exists(&root, gone), "{gone} removed on purge");
    }
}
