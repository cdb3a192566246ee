//! The privilege model, as root in CI: an ordinary user submits through setgid
//! relayq-postdrop (the file's owner records who, unforgeably) and cannot list the spool;
//! under NoNewPrivileges (setgid ignored) submission goes through the daemon's socket, and
//! with no daemon it fails with exit 75 and says what to fix — never exit 0 without the
//! message on disk. Skipped (with a note) when not root.

mod support;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const USER: &str = "relayqtest";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn ensure_user() -> (u32, u32) {
    if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .unwrap();
        assert!(st.success() || nix::unistd::User::from_name(USER).ok().flatten().is_some());
    }
    let u = nix::unistd::User::from_name(USER).unwrap().unwrap();
    (u.uid.as_raw(), u.gid.as_raw())
}

/// Run `sendmail` as nobody, optionally with no_new_privs.
fn sendmail_as_nobody(bin_dir: &Path, cfg: &Path, nnp: bool, input: &str) -> std::process::Output {
    let mut args: Vec<String> = vec![
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
    ];
    if nnp {
        args.push("--no-new-privs".into());
    }
    args.push(bin_dir.join("sendmail").display().to_string());
    args.push("-i".into());
    args.push("someone@example.org".into());
    let mut c = Command::new("setpriv")
        .args(&args)
        .env("RELAYQ_CONFIG", cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn ordinary_users_submit_but_cannot_see_the_spool() {
    if !is_root() {
        eprintln!("SKIP: privilege tests need root");
        return;
    }
    let (uid, gid) = ensure_user();
    let tmp = tempfile::tempdir().unwrap();
    chmod(tmp.path(), 0o755);
    let relay = Relay::start(
        tmp.path(),
        RelayOpts {
            tls: "none",
            auth: None,
            ..Default::default()
        },
    );
    let env = Env::new(
        &format!(
            "url = \"smtp://127.0.0.1:{}\"\nallow_plaintext = true",
            relay.port
        ),
        "",
    );
    chmod(env.path(), 0o755);
    chmod(&env.cfg, 0o644);
    let o = env.relayq(&["init", "--user", USER]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Install-like copies: relayq, and relayq-postdrop setgid to the spool's group.
    let bin = env.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(BIN, bin.join("relayq")).unwrap();
    std::fs::copy(
        Path::new(BIN).with_file_name("relayq-postdrop"),
        bin.join("relayq-postdrop"),
    )
    .unwrap();
    std::os::unix::fs::symlink("relayq", bin.join("sendmail")).unwrap();
    nix::unistd::chown(
        &bin.join("relayq-postdrop"),
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    chmod(&bin.join("relayq-postdrop"), 0o2755);

    // 1. nobody submits through postdrop; the file belongs to nobody (the kernel says who).
    let o = sendmail_as_nobody(&bin, &env.cfg, false, "Subject: from nobody\n\nhi\n");
    assert!(o.status.success(), "postdrop submission: {}", stderr(&o));
    let files: Vec<_> = std::fs::read_dir(env.spool("new"))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(files.len(), 1);
    let m = files[0].metadata().unwrap();
    assert_eq!(m.uid(), 65534, "submitter recorded by file ownership");
    assert_eq!(m.gid(), gid);
    assert_eq!(m.mode() & 0o777, 0o640);
    let queue_owner = std::fs::metadata(env.spool("queue")).unwrap().uid();
    assert_eq!(queue_owner, uid);

    // nobody cannot list or read the spool.
    let ls = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
        .arg(env.spool("new"))
        .output()
        .unwrap();
    assert!(!ls.status.success(), "nobody must not list new/");
    let cat = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(files[0].path())
        .output()
        .unwrap();
    assert!(!cat.status.success(), "nobody must not read queued mail");

    // 2. Under NoNewPrivileges setgid does nothing: with no daemon, exit 75 and say what to fix.
    let o = sendmail_as_nobody(&bin, &env.cfg, true, "Subject: nnp\n\nhi\n");
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("NoNewPrivileges") && err.contains("daemon"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(env.spool("new")).unwrap().count(),
        1,
        "nothing half-written"
    );
    assert_eq!(std::fs::read_dir(env.spool("tmp")).unwrap().count(), 0);

    // With the daemon running (as root here; it drops to the spool owner), the socket works,
    // and the daemon records nobody's uid from SO_PEERCRED.
    let mut d = env.daemon();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !env.spool("run").join("submit.sock").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = sendmail_as_nobody(&bin, &env.cfg, true, "Subject: nnp with daemon\n\nhi\n");
    assert!(o.status.success(), "socket submission: {}", stderr(&o));
    let got = relay.wait_for(2, Duration::from_secs(15));
    assert_eq!(got.len(), 2, "both messages delivered");
    let nnp = got
        .iter()
        .find(|m| subject_of(m) == "nnp with daemon")
        .expect("nnp message");
    assert!(
        nnp["data"].as_str().unwrap().contains("from userid 65534"),
        "{}",
        nnp["data"]
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(d.wait().unwrap().success());
    // The daemon ran as the spool owner: nothing it wrote belongs to root.
    for dir in ["queue", "failed", "new"] {
        for e in std::fs::read_dir(env.spool(dir))
            .unwrap()
            .filter_map(|e| e.ok())
        {
            assert_ne!(
                e.metadata().unwrap().uid(),
                0,
                "{:?} owned by root",
                e.path()
            );
        }
    }
}

#[test]
fn daemon_refuses_unsafe_secrets_and_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = Env::new(&relay_toml("smtp", relay.port), "");
    // A world-readable password file: refuse, like ssh.
    chmod(&env.path().join("password"), 0o644);
    let o = env.flush();
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("readable by other users"),
        "{}",
        stderr(&o)
    );
    chmod(&env.path().join("password"), 0o600);
    // A spool directory with the wrong mode: refuse and say how to fix it.
    chmod(&env.spool("queue"), 0o777);
    let o = env.flush();
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("relayq init"), "{}", stderr(&o));
}
