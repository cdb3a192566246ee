//! The Debian package end to end, as root (CI): `scripts/mkdeb.sh` builds it from the
//! binaries under test, `dpkg -i` installs it (user, setgid postdrop, secrets file, spool),
//! an ordinary user's mail goes through the installed /usr/sbin/sendmail and `relayq flush`
//! to a real relay, an upgrade keeps queued mail and the admin's config, `dpkg -r` keeps
//! mail and config, `dpkg -P` removes everything. It uses the real /etc/relayq and
//! /var/spool/relayq, so it skips (saying why) rather than touch a machine that has relayq,
//! another MTA or a running systemd; a guard purges the package if a check fails midway.
//! Every command runs under timeout(1).

mod support;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::*;

const SPOOL: &str = "/var/spool/relayq";
const CONF: &str = "/etc/relayq/relayq.toml";
const PASSWORD: &str = "/etc/relayq/password";
const RCPT: &str = "someone@example.org";

/// `cmd args` under timeout(1), stdin from `input` (or /dev/null).
fn run_with(cmd: &str, args: &[&str], secs: u64, input: Option<&[u8]>) -> Output {
    let mut c = Command::new("timeout")
        .args(["--kill-after=5", &secs.to_string(), cmd])
        .args(args)
        .env_remove("RELAYQ_CONFIG")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .current_dir(repo())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    if let (Some(data), Some(mut stdin)) = (input, c.stdin.take()) {
        stdin.write_all(data).expect("write stdin");
    }
    c.wait_with_output().expect("wait")
}

fn run(cmd: &str, args: &[&str], secs: u64) -> Output {
    run_with(cmd, args, secs, None)
}

/// Run and require success; returns stdout.
fn ok(cmd: &str, args: &[&str], secs: u64) -> String {
    let o = run(cmd, args, secs);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {:?}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn exists(p: &str) -> bool {
    Path::new(p).symlink_metadata().is_ok()
}

fn user_exists(name: &str) -> bool {
    nix::unistd::User::from_name(name).ok().flatten().is_some()
}

fn group_exists(name: &str) -> bool {
    nix::unistd::Group::from_name(name).ok().flatten().is_some()
}

fn dpkg_status(pkg: &str) -> String {
    let o = run("dpkg-query", &["-W", "-f=${Status}", pkg], 30);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Why this machine must not be touched, if it must not.
fn why_skip() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (dpkg -i)".into());
    }
    for tool in [
        "dpkg",
        "dpkg-deb",
        "dpkg-query",
        "make",
        "setpriv",
        "timeout",
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
    if Path::new("/run/systemd/system").exists() {
        return Some("systemd is running: postinst would start the real service".into());
    }
    for p in [
        "/usr/sbin/sendmail",
        "/usr/lib/sendmail",
        "/usr/sbin/relayq",
        "/etc/relayq",
        SPOOL,
    ] {
        if exists(p) {
            return Some(format!("{p} exists: the package test would clobber it"));
        }
    }
    if user_exists("relayq") || group_exists("relayq") {
        return Some("a relayq user or group exists: purge would remove it".into());
    }
    let all = ok(
        "dpkg-query",
        &["-W", "-f=${Package}\t${Status}\t${Provides}\n"],
        60,
    );
    for line in all.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let present = f.get(1).is_some_and(|s| !s.ends_with("not-installed"));
        let mta = f.get(2).is_some_and(|p| p.contains("mail-transport-agent"));
        if present && (mta || f[0] == "relayq") {
            return Some(format!("package {} is present ({})", f[0], f[1]));
        }
    }
    None
}

/// Purges the package when dropped, so a failed check leaves the machine as it was.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "relayq"], 180);
    }
}

/// scripts/mkdeb.sh from the binaries this test runs; returns the .deb it printed.
fn build_deb(out: &Path, version: &str) -> PathBuf {
    let rel = Path::new(BIN).parent().expect("profile dir");
    let o = Command::new("timeout")
        .args(["300", "bash", "scripts/mkdeb.sh"])
        .current_dir(repo())
        .env("REL", rel)
        .env("OUTDIR", out)
        .env("DEB_VERSION", version)
        .stdin(Stdio::null())
        .output()
        .expect("mkdeb.sh");
    assert!(o.status.success(), "mkdeb.sh: {}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout);
    let deb = PathBuf::from(printed.lines().last().unwrap_or("").trim());
    assert!(
        deb.is_file() && deb.starts_with(out),
        "mkdeb.sh printed {printed:?}"
    );
    deb
}

fn dpkg_install(deb: &Path) {
    let deb = deb.to_str().expect("utf-8 path");
    ok(
        "dpkg",
        &["--force-confdef", "--force-confold", "-i", deb],
        300,
    );
}

/// (octal mode incl. setuid/setgid/sticky, uid, gid) of a path, not following symlinks.
fn stat(p: &str) -> (String, u32, u32) {
    let m = Path::new(p)
        .symlink_metadata()
        .unwrap_or_else(|e| panic!("{p}: {e}"));
    (
        format!("{:04o}", m.permissions().mode() & 0o7777),
        m.uid(),
        m.gid(),
    )
}

/// Submit a message with the installed sendmail link `via`, as nobody or as root.
fn submit(via: &str, subject: &str, as_nobody: bool) {
    let msg = format!("Subject: {subject}\n\nbody of {subject}\n");
    let o = if as_nobody {
        run_with(
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
        run_with(via, &["-i", RCPT], 30, Some(msg.as_bytes()))
    };
    assert!(o.status.success(), "{via} ({subject}): {}", stderr(&o));
}

/// Queue files (not state logs) waiting in new/ and queue/.
fn queued() -> Vec<String> {
    let mut ids: Vec<String> = ["new", "queue"]
        .iter()
        .filter_map(|d| std::fs::read_dir(Path::new(SPOOL).join(d)).ok())
        .flat_map(|r| r.filter_map(|e| e.ok()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".st"))
        .collect();
    ids.sort();
    ids
}

/// One `relayq flush`, then wait for the relay to hold `n` messages; the last one's subject.
fn flush_expect(relay: &Relay, n: usize, subject: &str) {
    ok("/usr/sbin/relayq", &["flush"], 90);
    let got = relay.wait_for(n, Duration::from_secs(20));
    assert_eq!(got.len(), n, "messages at the relay");
    let last = &got[n - 1];
    assert_eq!(subject_of(last), subject);
    assert_eq!(rcpts_of(last), vec![RCPT.to_string()]);
    assert!(
        queued().is_empty(),
        "queue empty after flush: {:?}",
        queued()
    );
}

fn check_installed(relayq_gid: u32) {
    let u = nix::unistd::User::from_name("relayq")
        .ok()
        .flatten()
        .expect("user relayq");
    // postdrop's group: tmp/ and new/ only, not relayq's (which reads the password); the
    // daemon's user is a member, to read what users submit.
    let drop = nix::unistd::Group::from_name("relayqdrop")
        .ok()
        .flatten()
        .expect("group relayqdrop");
    let drop_gid = drop.gid.as_raw();
    assert_ne!(drop_gid, relayq_gid);
    assert_eq!(drop.mem, ["relayq"], "members of relayqdrop");
    assert!(u.uid.as_raw() < 1000, "a system user: uid {}", u.uid);
    assert_eq!(u.shell, PathBuf::from("/usr/sbin/nologin"));
    let uid = u.uid.as_raw();
    assert_eq!(stat("/usr/sbin/relayq"), ("0755".into(), 0, 0));
    assert_eq!(
        stat("/usr/sbin/relayq-postdrop"),
        ("2755".into(), 0, drop_gid)
    );
    assert_eq!(stat("/usr/sbin/relayq-doctor"), ("0755".into(), 0, 0));
    // `relayq doctor` finds its companion program where the package put it.
    let d = run("/usr/sbin/relayq", &["doctor", "--dns", "127.0.0.1:9"], 60);
    let out = String::from_utf8_lossy(&d.stdout);
    assert!(
        matches!(d.status.code(), Some(0 | 1)) && out.contains("permissions"),
        "doctor: {out}{}",
        String::from_utf8_lossy(&d.stderr)
    );
    for link in [
        "/usr/sbin/sendmail",
        "/usr/lib/sendmail",
        "/usr/bin/mailq",
        "/usr/bin/newaliases",
    ] {
        assert_eq!(
            std::fs::canonicalize(link).ok(),
            Some(PathBuf::from("/usr/sbin/relayq")),
            "{link}"
        );
    }
    for f in [
        "/usr/share/man/man8/sendmail.8.gz",
        "/usr/share/man/man8/relayq.8.gz",
        "/usr/share/man/man5/relayq.toml.5.gz",
        "/lib/systemd/system/relayq.service",
        "/lib/systemd/system/relayq-flush.timer",
        "/usr/share/doc/relayq/copyright",
        "/usr/share/doc/relayq/admin.md",
        "/usr/share/doc/relayq/troubleshooting.md",
        "/usr/share/doc/relayq/providers/ses.md",
    ] {
        assert!(exists(f), "{f} installed");
    }
    assert_eq!(stat(CONF), ("0644".into(), 0, 0));
    assert_eq!(stat(PASSWORD), ("0640".into(), 0, relayq_gid));
    // The spool as docs/spool.md describes it (relayq init --user relayq): the root is root's.
    assert_eq!(stat(SPOOL), ("0755".into(), 0, 0));
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
            stat(&format!("{SPOOL}/{dir}")),
            (mode.to_string(), uid, gid),
            "{SPOOL}/{dir}"
        );
    }
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "relayq"], 30);
    assert!(conffiles.contains(CONF), "conffiles: {conffiles}");
}

#[test]
fn deb_installs_relays_upgrades_removes_and_purges() {
    if let Some(why) = why_skip() {
        eprintln!("SKIP: package test: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let version = env!("CARGO_PKG_VERSION");
    let deb1 = build_deb(tmp.path(), version);
    let d1 = deb1.to_str().expect("utf-8 path");
    for field in ["Provides", "Conflicts", "Replaces"] {
        assert_eq!(
            ok("dpkg-deb", &["-f", d1, field], 30).trim(),
            "mail-transport-agent"
        );
    }
    let depends = ok("dpkg-deb", &["-f", d1, "Depends"], 30);
    assert!(depends.contains("libc6 (>= "), "Depends: {depends}");

    let _guard = PurgeOnDrop;
    dpkg_install(&deb1);
    assert_eq!(dpkg_status("relayq"), "install ok installed");
    let gid = nix::unistd::Group::from_name("relayq")
        .ok()
        .flatten()
        .expect("group relayq")
        .gid
        .as_raw();
    check_installed(gid);

    // Configure the relay as an admin would; the files keep their modes.
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let conf = format!(
        "[relay]\n{}\n\n[address]\nadmin = \"admin@example.com\"\nsender = \"server@example.com\"\ndomain = \"example.com\"\naliases = \"/nonexistent\"\n\n[log]\nsyslog = false\n",
        relay_toml("smtp", relay.port).replace("PASSWORD_FILE", PASSWORD)
    );
    std::fs::write(CONF, &conf).expect("write config");
    std::fs::write(PASSWORD, "secret\n").expect("write password");
    assert_eq!(stat(PASSWORD), ("0640".into(), 0, gid));

    // An ordinary user's mail: setgid relayq-postdrop as installed by postinst.
    submit("/usr/sbin/sendmail", "installed", true);
    let ids = queued();
    assert_eq!(ids.len(), 1, "queued: {ids:?}");
    let mailq = ok("/usr/bin/mailq", &[], 30);
    assert!(mailq.contains(RCPT), "mailq: {mailq}");
    flush_expect(&relay, 1, "installed");

    // Upgrade with a message waiting: it stays queued, and so do the admin's files.
    submit("/usr/lib/sendmail", "queued across the upgrade", false);
    let waiting = queued();
    assert_eq!(waiting.len(), 1);
    let v2 = format!("{version}+upgrade1");
    let deb2 = build_deb(tmp.path(), &v2);
    dpkg_install(&deb2);
    assert_eq!(ok("dpkg-query", &["-W", "-f=${Version}", "relayq"], 30), v2);
    assert_eq!(queued(), waiting, "queued mail survives the upgrade");
    assert_eq!(std::fs::read_to_string(CONF).ok(), Some(conf.clone()));
    assert_eq!(
        std::fs::read_to_string(PASSWORD).ok().as_deref(),
        Some("secret\n")
    );
    check_installed(gid);
    flush_expect(&relay, 2, "queued across the upgrade");

    // Remove: programs gone; config, secrets, queued mail and the user kept.
    submit("/usr/sbin/sendmail", "kept on remove", true);
    let waiting = queued();
    assert_eq!(waiting.len(), 1);
    ok("dpkg", &["-r", "relayq"], 180);
    assert_eq!(dpkg_status("relayq"), "deinstall ok config-files");
    for gone in ["/usr/sbin/relayq", "/usr/sbin/sendmail", "/usr/bin/mailq"] {
        assert!(!exists(gone), "{gone} removed");
    }
    assert_eq!(std::fs::read_to_string(CONF).ok(), Some(conf));
    assert!(exists(PASSWORD));
    assert_eq!(queued(), waiting, "queued mail kept on remove");
    assert!(user_exists("relayq"));

    // Purge: everything the package created is gone.
    ok("dpkg", &["-P", "relayq"], 180);
    let status = dpkg_status("relayq");
    assert!(
        status.is_empty() || status.ends_with("not-installed"),
        "{status}"
    );
    for gone in ["/etc/relayq", SPOOL] {
        assert!(!exists(gone), "{gone} removed on purge");
    }
    assert!(!user_exists("relayq"), "user relayq removed on purge");
    assert!(!group_exists("relayq"), "group relayq removed on purge");
    let left = ok("find", &["/etc/systemd/system", "-name", "relayq*"], 30);
    assert!(left.is_empty(), "systemd links left: {left}");
    assert_eq!(relay.arrived().len(), 2, "nothing delivered after remove");
}
