//! The privilege model, as root in CI: an ordinary user submits through setgid
//! relayq-postdrop (the file's owner records who, unforgeably) and cannot list the spool;
//! under NoNewPrivileges (setgid ignored) submission goes through the daemon's socket, and
//! with no daemon it fails with exit 75 and says what to fix — never exit 0 without the
//! message on disk. Users manage their own messages (and only those) through the daemon;
//! nobody can make the daemon record another submitter. Skipped (with a note) when not root.

mod support;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The spool's owner (the daemon's user).
const USER: &str = "relayqtest";
/// Two ordinary users.
const USER_A: &str = "relayqtest-a";
const USER_B: &str = "relayqtest-b";
/// A well-formed queue ID that names no message.
const NO_SUCH: &str = "0123456789ABCDEF0123456";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// (uid, gid) of `name`, created as a system user if missing. Serialized (useradd locks
/// /etc/passwd) and retried a bounded number of times.
fn ensure_user(name: &str) -> (u32, u32) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let lookup = || nix::unistd::User::from_name(name).ok().flatten();
    for _ in 0..10 {
        if let Some(u) = lookup() {
            return (u.uid.as_raw(), u.gid.as_raw());
        }
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status();
        if lookup().is_none() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let u = lookup().unwrap_or_else(|| panic!("cannot create user {name}"));
    (u.uid.as_raw(), u.gid.as_raw())
}

/// An unprivileged identity to run commands as.
#[derive(Clone, Copy)]
struct Who {
    uid: u32,
    gid: u32,
}

impl Who {
    fn user(name: &str) -> Who {
        let (uid, gid) = ensure_user(name);
        Who { uid, gid }
    }

    const NOBODY: Who = Who {
        uid: 65534,
        gid: 65534,
    };

    /// Run `prog args` as this user (no supplementary groups), `input` on stdin.
    fn run(&self, nnp: bool, prog: &Path, args: &[&str], input: &[u8]) -> Output {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups");
        if nnp {
            c.arg("--no-new-privs");
        }
        let mut c = c
            .arg(prog)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let _ = c.stdin.take().unwrap().write_all(input);
        c.wait_with_output().unwrap()
    }

    /// Python as this user: `script` with `args`.
    fn python(&self, script: &str, args: &[&str], input: &[u8]) -> String {
        let mut a = vec!["-c", script];
        a.extend_from_slice(args);
        let o = self.run(false, Path::new("/usr/bin/python3"), &a, input);
        assert!(o.status.success(), "python: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The errno name when this user opens `p` for reading ("OK" if it can).
    fn open_error(&self, p: &Path) -> String {
        self.python(
            "import sys, errno\ntry:\n    open(sys.argv[1], 'rb')\n    print('OK')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
            &[p.to_str().unwrap()],
            b"",
        )
        .trim()
        .to_string()
    }

    /// Send `request` raw on the daemon's socket as this user; the whole answer.
    fn socket(&self, sock: &Path, request: &[u8]) -> String {
        self.python(
            "import sys, socket\ns = socket.socket(socket.AF_UNIX)\ns.settimeout(20)\ns.connect(sys.argv[1])\ns.sendall(sys.stdin.buffer.read())\ns.shutdown(socket.SHUT_WR)\nout = b''\nwhile True:\n    b = s.recv(65536)\n    if not b:\n        break\n    out += b\nsys.stdout.write(out.decode('latin-1'))",
            &[sock.to_str().unwrap()],
            request,
        )
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A relay, a spool owned by USER, a config others can read, and install-like copies of
/// relayq and setgid relayq-postdrop.
struct Host {
    relay: Relay,
    env: Env,
    bin: PathBuf,
    spool_uid: u32,
    spool_gid: u32,
    _tmp: tempfile::TempDir,
}

impl Host {
    fn new(extra: &str) -> Host {
        let (spool_uid, spool_gid) = ensure_user(USER);
        let tmp = tempfile::tempdir().unwrap();
        chmod(tmp.path(), 0o755);
        let relay = Relay::start(tmp.path(), RelayOpts::plain());
        let env = Env::new(
            &format!(
                "url = \"smtp://127.0.0.1:{}\"\nallow_plaintext = true",
                relay.port
            ),
            extra,
        );
        chmod(env.path(), 0o755);
        chmod(&env.cfg, 0o644);
        let o = env.relayq(&["init", "--user", USER]);
        assert!(o.status.success(), "{}", stderr(&o));
        let bin = env.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::copy(BIN, bin.join("relayq")).unwrap();
        std::fs::copy(SENDMAIL, bin.join("relayq-sendmail")).unwrap();
        std::fs::copy(
            Path::new(BIN).with_file_name("relayq-postdrop"),
            bin.join("relayq-postdrop"),
        )
        .unwrap();
        std::os::unix::fs::symlink("relayq-sendmail", bin.join("sendmail")).unwrap();
        nix::unistd::chown(
            &bin.join("relayq-postdrop"),
            Some(nix::unistd::Uid::from_raw(0)),
            Some(nix::unistd::Gid::from_raw(spool_gid)),
        )
        .unwrap();
        chmod(&bin.join("relayq-postdrop"), 0o2755);
        Host {
            relay,
            env,
            bin,
            spool_uid,
            spool_gid,
            _tmp: tmp,
        }
    }

    fn sendmail(&self, who: Who, nnp: bool, input: &str) -> Output {
        let cfg = self.env.cfg.display().to_string();
        who.run(
            nnp,
            Path::new("/usr/bin/env"),
            &[
                &format!("RELAYQ_CONFIG={cfg}"),
                self.bin.join("sendmail").to_str().unwrap(),
                "-i",
                "someone@example.org",
            ],
            input.as_bytes(),
        )
    }

    fn relayq(&self, who: Who, args: &[&str]) -> Output {
        let cfg = self.env.cfg.display().to_string();
        let mut a = vec!["-C", &cfg];
        a.extend_from_slice(args);
        who.run(false, &self.bin.join("relayq"), &a, b"")
    }

    fn socket(&self) -> PathBuf {
        self.env.spool("run").join("submit.sock")
    }

    /// Root's view of the queue (`relayq queue --json`).
    fn entries(&self) -> Vec<serde_json::Value> {
        json_lines(&self.env.relayq(&["queue", "--json"]))
    }

    /// Root's view: the IDs `uid` submitted.
    fn ids_of(&self, uid: u32) -> Vec<String> {
        self.entries()
            .iter()
            .filter(|e| e["uid"].as_u64() == Some(uid as u64))
            .map(|e| e["queue_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Wait (bounded) until root sees `n` messages, all deferred.
    fn wait_deferred(&self, n: usize) {
        let ok = wait_until(Duration::from_secs(30), || {
            let e = self.entries();
            e.len() == n && e.iter().all(|e| e["queue_name"] == "deferred")
        });
        assert!(ok, "not all deferred: {:?}", self.entries());
    }

    /// Every file of `id` in the spool, its journal too: (directory, contents).
    fn snapshot(&self, id: &str) -> Vec<(String, Vec<u8>)> {
        ["new", "queue", "hold", "failed", "corrupt", "journal"]
            .into_iter()
            .filter_map(|d| {
                let b = std::fs::read(self.env.spool(d).join(id)).ok()?;
                Some((format!("{d}/{id}"), b))
            })
            .collect()
    }

    /// This host's relayq-postdrop on its spool, run by `wrapper` (which makes it an
    /// ordinary user), fed `data` as sendmail frames it.
    fn postdrop_under(&self, mut wrapper: Command, data: &[u8]) -> Output {
        use std::io::Write;
        let mut c = wrapper
            .arg(self.bin.join("relayq-postdrop"))
            .arg(self.env.path().join("spool"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = c.stdin.take().unwrap().write_all(&chunked(data));
        c.wait_with_output().unwrap()
    }

    /// Which directory `id` is in, if any.
    fn where_is(&self, id: &str) -> Option<&'static str> {
        ["new", "queue", "hold", "failed", "corrupt"]
            .into_iter()
            .find(|d| self.env.spool(d).join(id).exists())
    }
}

/// A host, when running as root; else None, with a note (the privilege tests need root).
fn root_host(extra: &str) -> Option<Host> {
    if !is_root() {
        eprintln!("SKIP: privilege tests need root");
        return None;
    }
    Some(Host::new(extra))
}

/// The daemon, stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
struct Daemon(std::process::Child);

impl Daemon {
    fn start(h: &Host) -> Daemon {
        let d = Daemon(h.env.daemon());
        let sock = h.socket();
        assert!(
            wait_until(Duration::from_secs(10), || sock.exists()),
            "daemon socket: {}",
            h.env.daemon_log()
        );
        d
    }

    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(st)) = self.0.try_wait() {
            return Some(st);
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn ordinary_users_submit_but_cannot_see_the_spool() {
    let Some(h) = root_host("") else {
        return;
    };
    let (env, relay, gid) = (&h.env, &h.relay, h.spool_gid);

    // 1. nobody submits through postdrop; the file belongs to nobody (the kernel says who).
    let o = h.sendmail(Who::NOBODY, false, "Subject: from nobody\n\nhi\n");
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
    assert_eq!(queue_owner, h.spool_uid);

    // nobody cannot list or read the spool.
    let ls = Who::NOBODY.run(
        false,
        Path::new("/bin/ls"),
        &[env.spool("new").to_str().unwrap()],
        b"",
    );
    assert!(!ls.status.success(), "nobody must not list new/");
    assert_eq!(
        Who::NOBODY.open_error(&files[0].path()),
        "EACCES",
        "nobody must not read queued mail"
    );

    // 2. Under NoNewPrivileges setgid does nothing: with no daemon, exit 75 and say what to fix.
    let o = h.sendmail(Who::NOBODY, true, "Subject: nnp\n\nhi\n");
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
    let mut d = Daemon::start(&h);
    let o = h.sendmail(Who::NOBODY, true, "Subject: nnp with daemon\n\nhi\n");
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
    assert!(d.stop().is_some_and(|s| s.success()));
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

/// Queue IDs in `relayq queue --json` output.
fn listed(o: &Output) -> Vec<String> {
    json_lines(o)
        .iter()
        .map(|e| e["queue_id"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Users A and B, and a host whose relay greylists every recipient, so mail stays queued
/// (deferred) while the test looks at it. None (with a note) when not root.
fn two_users_and_a_greylisting_relay() -> Option<(Who, Who, Host)> {
    let h = root_host("[queue]\nretry_min = 3600\nretry_max = 3600")?;
    let (a, b) = (Who::user(USER_A), Who::user(USER_B));
    h.relay
        .set_faults(r#"{"rcpt_all": "451 4.7.1 greylisted"}"#);
    Some((a, b, h))
}

#[test]
fn users_manage_only_their_own_mail() {
    let Some((a, b, h)) = two_users_and_a_greylisting_relay() else {
        return;
    };
    let mut d = Daemon::start(&h);
    for (who, subject) in [(a, "a1"), (a, "a2"), (b, "b1")] {
        let o = h.sendmail(
            who,
            false,
            &format!("Subject: {subject}\n\nbody of {subject}\n"),
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    h.wait_deferred(3);
    let mine = h.ids_of(a.uid);
    let [a1, a2] = &mine[..] else {
        panic!("A's messages: {mine:?}")
    };
    let theirs = h.ids_of(b.uid);
    let [b1] = &theirs[..] else {
        panic!("B's messages: {theirs:?}")
    };

    // B sees only B's mail in the queue listing, in both formats.
    assert_eq!(
        listed(&h.relayq(b, &["queue", "--json"])),
        std::slice::from_ref(b1)
    );
    let o = h.relayq(b, &["queue"]);
    let text = stdout(&o);
    assert!(o.status.success() && text.contains(b1.as_str()), "{text}");
    assert!(
        !text.contains(a1.as_str()) && !text.contains(a2.as_str()),
        "{text}"
    );
    assert_eq!(listed(&h.relayq(a, &["queue", "--json"])).len(), 2);

    // B cannot read the spool files nor the relay's password.
    let a1_file = h.env.spool("queue").join(a1);
    assert!(a1_file.exists());
    assert_eq!(b.open_error(&a1_file), "EACCES");
    assert_eq!(b.open_error(&h.env.spool("new")), "EACCES");
    assert_eq!(b.open_error(&h.env.path().join("password")), "EACCES");
    assert_eq!(
        b.open_error(&h.env.cfg),
        "OK",
        "the config (no secrets) is readable"
    );

    // B cannot show, hold, release or delete A's message: exactly what a message that does
    // not exist gets, and A's message stays as it was.
    let before = h.snapshot(a1);
    assert_eq!(before.len(), 2, "queue/ID and its state log: {before:?}");
    for (cmd, code) in [("show", 67), ("hold", 1), ("release", 1), ("delete", 1)] {
        let theirs = h.relayq(b, &[cmd, a1]);
        let none = h.relayq(b, &[cmd, NO_SUCH]);
        assert_eq!(
            theirs.status.code(),
            Some(code),
            "{cmd}: {}",
            stderr(&theirs)
        );
        assert_eq!(none.status.code(), Some(code), "{cmd}: {}", stderr(&none));
        assert_eq!(
            stderr(&theirs),
            stderr(&none).replace(NO_SUCH, a1),
            "{cmd} must not tell A's message from no message"
        );
        assert!(
            stderr(&theirs).contains("no such message"),
            "{}",
            stderr(&theirs)
        );
        assert_eq!(stdout(&theirs), "", "{cmd}");
    }
    // --all means all of B's own: A's stay where they are.
    let o = h.relayq(b, &["hold", "--all"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{b1}: held\n"));
    // Crafted requests on the socket: another user's ID, and a path instead of an ID.
    let sock = h.socket();
    assert_eq!(
        b.socket(&sock, format!("DELE{a1}\n").as_bytes()),
        format!("MISS {a1}\nEND\n")
    );
    assert_eq!(
        b.socket(&sock, format!("SHWB../queue/{a1}\n").as_bytes()),
        format!("MISS ../queue/{a1}\nEND\n")
    );
    assert_eq!(h.snapshot(a1), before, "A's message untouched by B");
    assert_eq!(h.where_is(a2), Some("queue"));
    assert_eq!(h.where_is(b1), Some("hold"));

    // A manages A's own: show (with and without the body), hold, release, delete.
    let o = h.relayq(a, &["show", a1]);
    let text = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        text.contains(&format!("Submitter: uid {}", a.uid))
            && text.contains("Subject: a1")
            && text.contains("deferred (451 4.7.1 greylisted)"),
        "{text}"
    );
    assert!(!text.contains("body of a1"), "{text}");
    let o = h.relayq(a, &["show", a1, "--body"]);
    assert!(stdout(&o).contains("body of a1"), "{}", stdout(&o));
    let o = h.relayq(a, &["hold", a1]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), format!("{a1}: held\n"))
    );
    assert_eq!(h.where_is(a1), Some("hold"));
    assert!(stdout(&h.relayq(a, &["queue"])).contains(&format!("{a1}!")));
    let o = h.relayq(a, &["release", a1]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), format!("{a1}: released\n"))
    );
    // The daemon takes it back (through new/) and keeps its state: deferred, in queue/.
    assert!(
        wait_until(Duration::from_secs(10), || h.where_is(a1) == Some("queue")),
        "released: {:?}\n{}",
        h.where_is(a1),
        h.env.daemon_log()
    );
    assert!(
        !h.env.daemon_log().contains("corrupt"),
        "{}",
        h.env.daemon_log()
    );
    // One request, two IDs: A's is done, B's is "no such message".
    let o = h.relayq(a, &["hold", a2, b1]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), format!("{a2}: held\n"));
    assert_eq!(
        stderr(&o),
        format!("relayq: {b1}: no such message in the queue\n")
    );
    assert_eq!(h.where_is(b1), Some("hold"));
    let o = h.relayq(a, &["delete", a1]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), format!("{a1}: deleted\n"))
    );
    assert!(h.snapshot(a1).is_empty(), "deleted with its state log");

    // Root can do everything to anyone's mail.
    let o = h.env.relayq(&["show", b1]);
    assert!(
        stdout(&o).contains(&format!("Submitter: uid {}", b.uid)),
        "{}",
        stdout(&o)
    );
    assert!(h.env.relayq(&["release", b1]).status.success());
    assert!(wait_until(Duration::from_secs(10), || h.where_is(b1) == Some("queue")));
    assert!(h.env.relayq(&["delete", b1]).status.success());
    assert_eq!(h.where_is(b1), None);

    // Without the daemon, ordinary users are told so (exit 75, one line); root goes direct.
    assert!(d.stop().is_some_and(|s| s.success()));
    let o = h.relayq(a, &["release", a2]);
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.lines().count() == 1 && err.contains("daemon is not running") && err.contains("root"),
        "{err}"
    );
    assert_eq!(h.where_is(a2), Some("hold"));
    assert!(h.env.relayq(&["release", a2]).status.success());
    assert_eq!(h.where_is(a2), Some("new"));
}

/// A queue file as `relayq` writes it, claiming to come from root.
fn forged(subject: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "relayq-envelope 1\nsender <forger@example.com>\nrcpt <x@example.org>\ntime {now}\nuid 0\nuser root\nend\n\
         Subject: {subject}\r\nTo: other@example.net\r\nCc: root@example.net\r\nBcc: y@example.net\r\n\r\nforged\r\n"
    )
    .into_bytes()
}

/// `data` in the chunked framing of postdrop and the socket, with the end chunk.
fn chunked(data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(data);
    v.extend_from_slice(&0u32.to_be_bytes());
    v
}

#[test]
fn submitters_cannot_be_forged() {
    let Some((a, b, h)) = two_users_and_a_greylisting_relay() else {
        return;
    };

    // Files put in the spool by hand (as root, before the daemon starts), owned by B and
    // claiming root: in new/ readable by the daemon's group, in new/ unreadable to it, and
    // in queue/ (which only the daemon writes).
    let place = |dir: &str, id: &str, mode: u32, subject: &str| {
        let staging = h.env.path().join(id);
        std::fs::write(&staging, forged(subject)).unwrap();
        nix::unistd::chown(
            &staging,
            Some(nix::unistd::Uid::from_raw(b.uid)),
            Some(nix::unistd::Gid::from_raw(h.spool_gid)),
        )
        .unwrap();
        chmod(&staging, mode);
        std::fs::rename(&staging, h.env.spool(dir).join(id)).unwrap();
    };
    let (in_new, unreadable, in_queue) = (
        "0000000000000000000A1",
        "0000000000000000000A2",
        "0000000000000000000A3",
    );
    place("new", in_new, 0o640, "placed in new");
    place("new", unreadable, 0o600, "unreadable");
    place("queue", in_queue, 0o640, "placed in queue");
    let mut d = Daemon::start(&h);

    // B over the socket, with an envelope claiming uid 0 / root: recorded as B.
    let mut req = b"SUBM".to_vec();
    req.extend(chunked(&forged("socket")));
    let answer = b.socket(&h.socket(), &req);
    let sock_id = answer
        .trim()
        .strip_prefix("OK ")
        .unwrap_or_else(|| panic!("SUBM: {answer}"))
        .to_string();
    // B through setgid postdrop, the same forged envelope: recorded as B (the file's owner).
    let o = b.run(
        false,
        &h.bin.join("relayq-postdrop"),
        &[h.env.spool("").to_str().unwrap()],
        &chunked(&forged("postdrop")),
    );
    assert!(o.status.success(), "postdrop: {}", stderr(&o));
    let pd_id = stdout(&o).trim().to_string();

    h.wait_deferred(4);
    let all = [sock_id.as_str(), pd_id.as_str(), in_new, in_queue];
    for e in h.entries() {
        assert_eq!(e["uid"].as_u64(), Some(b.uid as u64), "{e}");
        assert!(all.contains(&e["queue_id"].as_str().unwrap()), "{e}");
    }
    for id in all {
        let o = h.env.relayq(&["show", id]);
        assert!(
            stdout(&o).contains(&format!("Submitter: uid {}\n", b.uid)),
            "{id}: {}",
            stdout(&o)
        );
    }
    // The daemon writes socket submissions itself, from SO_PEERCRED.
    let env_text = std::fs::read_to_string(h.env.spool("queue").join(&sock_id)).unwrap();
    assert!(
        env_text.contains(&format!("\nuid {}\nuser {USER_B}\n", b.uid)),
        "{env_text}"
    );
    // B owns them, A sees none of them, the file the daemon cannot read is set aside.
    assert_eq!(listed(&h.relayq(b, &["queue", "--json"])).len(), 4);
    assert!(listed(&h.relayq(a, &["queue", "--json"])).is_empty());
    assert_eq!(h.relayq(a, &["show", &sock_id]).status.code(), Some(67));
    assert_eq!(h.where_is(unreadable), None, "not left in new/ nor queued");
    assert_eq!(h.env.count("corrupt"), 1);
    let log = h.env.daemon_log();
    assert!(
        log.contains(&format!("{unreadable}: moved to corrupt/")),
        "{log}"
    );
    assert!(
        log.contains(&format!("{in_new}: from=<forger@example.com>"))
            && log.contains(&format!("uid={}", b.uid))
            && !log.contains("uid=0"),
        "{log}"
    );

    // Delivered to the envelope's recipient only, whatever the header says.
    h.relay.set_faults("{}");
    assert!(h.env.relayq(&["flush"]).status.success());
    let got = h.relay.wait_for(4, Duration::from_secs(20));
    assert_eq!(got.len(), 4, "{}", h.env.daemon_log());
    for m in &got {
        assert_eq!(rcpts_of(m), ["x@example.org"], "{}", subject_of(m));
        assert_eq!(m["mail_from"], "forger@example.com");
    }
    let mut subjects: Vec<String> = got.iter().map(subject_of).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["placed in new", "placed in queue", "postdrop", "socket"]
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(h.relay.arrived().len(), 4, "nothing else sent");
    assert!(d.stop().is_some_and(|s| s.success()));
}

// ---- the spool's one guarded door (issue 11) ------------------------------------------

/// The only message root sees in the queue.
fn only_id(h: &Host) -> String {
    let e = h.entries();
    let [m] = &e[..] else {
        panic!("want one message: {e:?}")
    };
    m["queue_id"].as_str().unwrap().to_string()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
}

#[test]
fn hold_and_release_keep_who_was_delivered() {
    let Some(h) = root_host("[queue]\nretry_min = 3600\nretry_max = 3600") else {
        return;
    };
    h.relay
        .set_faults(r#"{"rcpt": {"later@example.org": "451 4.7.1 greylisted"}}"#);
    ok(&h.env.sendmail(
        &["-i", "now@example.org", "later@example.org"],
        b"Subject: once each\n\nhi\n",
    ));
    ok(&h.env.flush());
    assert_eq!(h.relay.wait_for(1, Duration::from_secs(10)).len(), 1);
    let id = only_id(&h);
    ok(&h.env.relayq(&["hold", &id]));
    ok(&h.env.relayq(&["release", &id]));
    // The journal went along: `show` still knows who has it.
    let o = h.env.relayq(&["show", &id]);
    assert!(
        stdout(&o).contains("Recipient: <now@example.org> sent"),
        "{}",
        stdout(&o)
    );
    h.relay.set_faults("{}");
    ok(&h.env.flush());
    let got = h.relay.wait_for(2, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        rcpts_of(&got[1]),
        ["later@example.org"],
        "sent twice to now@"
    );
    assert!(h.entries().is_empty(), "{:?}", h.entries());
}

#[test]
fn released_mail_goes_out_at_once_with_the_daemon_running() {
    // No idle connection kept: the outage below starts at the next connection.
    let Some(h) = root_host("[queue]\nretry_min = 3600\nretry_max = 3600\nidle_timeout = 0") else {
        return;
    };
    h.relay
        .set_faults(r#"{"rcpt_all": "451 4.7.1 greylisted"}"#);
    let _d = Daemon::start(&h);
    ok(&h
        .env
        .sendmail(&["-i", "a@example.org"], b"Subject: deferred\n\nhi\n"));
    h.wait_deferred(1);
    // Hold the only queued message, let the relay take mail again, release it, and wait
    // (bounded) for the n-th arrival. (Released, it is tried at once: the relay must be
    // back first.)
    let release_and_arrive = |n: usize, within: u64| {
        let id = only_id(&h);
        ok(&h.env.relayq(&["hold", &id]));
        h.relay.set_faults("{}");
        ok(&h.env.relayq(&["release", &id]));
        let got = h.relay.wait_for(n, Duration::from_secs(within));
        assert_eq!(
            got.len(),
            n,
            "released mail stranded: {}",
            h.env.daemon_log()
        );
    };
    // Deferred for an hour; released, it goes now (no flush, no other mail).
    release_and_arrive(1, 15);

    // The relay down while the message waits for it: held, released, and the relay back.
    h.relay
        .set_faults(r#"{"connect": "421 4.3.2 down for maintenance"}"#);
    ok(&h
        .env
        .sendmail(&["-i", "b@example.org"], b"Subject: outage\n\nhi\n"));
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(h.env.spool("run").join("relay"))
            .is_ok_and(|r| r.contains("state down"))
    }));
    // The daemon probes a down relay every 12 s.
    release_and_arrive(2, 40);
    assert!(h.entries().is_empty(), "{:?}", h.entries());
}

#[test]
fn what_the_admin_held_only_root_releases() {
    let Some((a, _b, h)) = two_users_and_a_greylisting_relay() else {
        return;
    };
    let _d = Daemon::start(&h);
    ok(&h.sendmail(a, false, "Subject: mine\n\nhi\n"));
    h.wait_deferred(1);
    let id = only_id(&h);
    ok(&h.env.relayq(&["hold", &id]));
    let o = h.relayq(a, &["release", &id]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("only root can release it"),
        "{}",
        stderr(&o)
    );
    assert_eq!(h.where_is(&id), Some("hold"));
    ok(&h.env.relayq(&["release", &id]));
    assert!(wait_until(Duration::from_secs(10), || h.where_is(&id) == Some("queue")));
    // What the user held, the user releases.
    ok(&h.relayq(a, &["hold", &id]));
    assert_eq!(h.where_is(&id), Some("hold"));
    ok(&h.relayq(a, &["release", &id]));
    assert_ne!(h.where_is(&id), Some("hold"));
}

/// A directory outside the spool, root's, with a file and an ID-named file in it; its
/// listing and modes, to compare before and after.
fn outside(h: &Host) -> (PathBuf, impl Fn() -> Vec<(String, u32, u32)>) {
    let dir = h.env.path().join("outside");
    std::fs::create_dir(&dir).unwrap();
    for name in ["victim", NO_SUCH] {
        std::fs::write(dir.join(name), "root's\n").unwrap();
        chmod(&dir.join(name), 0o600);
    }
    let d = dir.clone();
    let look = move || {
        let mut v: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    m.mode() & 0o7777,
                    m.uid(),
                )
            })
            .collect();
        v.sort();
        v
    };
    (dir, look)
}

#[test]
fn the_relayq_user_cannot_make_root_act_through_links() {
    let Some(h) = root_host("") else {
        return;
    };
    let owner = Who {
        uid: h.spool_uid,
        gid: h.spool_gid,
    };
    let root = h.env.path().join("spool");
    let (out, look) = outside(&h);
    let before = look();
    let swap = "import os, sys\nroot, name, target = sys.argv[1:4]\ntry:\n    os.rename(os.path.join(root, name), os.path.join(root, name + '.real'))\n    os.symlink(target, os.path.join(root, name))\n    print('swapped')\nexcept OSError as e:\n    print(os.strerror(e.errno))";
    // `relayq init` gave the spool root to root: the relayq user cannot swap its directories.
    let said = owner.python(
        swap,
        &[root.to_str().unwrap(), "hold", out.to_str().unwrap()],
        b"",
    );
    assert_eq!(said.trim(), "Permission denied");
    assert_eq!(std::fs::metadata(&root).unwrap().uid(), 0);

    // A spool root the relayq user owns (as relayq 0.1 left it): it swaps hold/ for a link
    // out of the spool and plants an ID-named file in queue/. Root's commands refuse, one
    // line naming the link, and nothing outside changes.
    ok(&h
        .env
        .sendmail(&["-i", "a@example.org"], b"Subject: queued\n\nhi\n"));
    nix::unistd::chown(&root, Some(nix::unistd::Uid::from_raw(h.spool_uid)), None).unwrap();
    let said = owner.python(
        swap,
        &[root.to_str().unwrap(), "hold", out.to_str().unwrap()],
        b"",
    );
    assert_eq!(said.trim(), "swapped");
    owner.python(
        "import sys; open(sys.argv[1], 'w').write('APT::Update::Pre-Invoke {\"id\";};')",
        &[root
            .join("queue")
            .join("0ABCDEF0123456789ABCDEF")
            .to_str()
            .unwrap()],
        b"",
    );
    for cmd in ["hold", "release", "delete"] {
        let o = h.env.relayq(&[cmd, "--all"]);
        assert!(!o.status.success(), "{cmd} --all: {}", stdout(&o));
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{cmd}: {e}");
        assert!(e.contains("hold is not a directory"), "{cmd}: {e}");
        assert_eq!(look(), before, "{cmd} --all changed {}", out.display());
    }
    // init refuses the link too, and the same for run/ pointing at a root file: nothing is
    // chowned or chmodded through it.
    let o = h.env.relayq(&["init", "--user", USER]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("hold is not a directory"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(root.join("hold")).unwrap();
    std::fs::rename(root.join("hold.real"), root.join("hold")).unwrap();
    nix::unistd::chown(&root, Some(nix::unistd::Uid::from_raw(h.spool_uid)), None).unwrap();
    let said = owner.python(
        swap,
        &[
            root.to_str().unwrap(),
            "run",
            out.join("victim").to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(said.trim(), "swapped");
    let o = h.env.relayq(&["init", "--user", USER]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("run is not a directory"),
        "{}",
        stderr(&o)
    );
    assert_eq!(look(), before, "init changed {}", out.display());
}

#[test]
fn a_spool_of_relayq_0_1_is_taken_over() {
    let Some(h) = root_host("[queue]\nretry_min = 3600\nretry_max = 3600") else {
        return;
    };
    let root = h.env.path().join("spool");
    // Two messages as relayq 0.1 kept them: the journal beside the message as ID.st, one
    // queued with one of its two recipients delivered, one held likewise; no journal/, and
    // the root the relayq user's.
    for subject in ["queued", "held"] {
        ok(&h.env.sendmail(
            &["-i", "now@example.org", "later@example.org"],
            format!("Subject: {subject}\n\nhi\n").as_bytes(),
        ));
    }
    let mut ids: Vec<String> = std::fs::read_dir(root.join("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    ids.sort();
    for (id, dir) in ids.iter().zip(["queue", "hold"]) {
        std::fs::rename(root.join("new").join(id), root.join(dir).join(id)).unwrap();
        let st = root.join(dir).join(format!("{id}.st"));
        std::fs::write(&st, "d 0 1795000000 250 2.0.0 OK\nn 1795000060 1\n").unwrap();
        nix::unistd::chown(&st, Some(nix::unistd::Uid::from_raw(h.spool_uid)), None).unwrap();
    }
    std::fs::remove_dir(root.join("journal")).unwrap();
    nix::unistd::chown(&root, Some(nix::unistd::Uid::from_raw(h.spool_uid)), None).unwrap();

    // The package's postinst runs init on upgrade, then the daemon (here: a flush) starts.
    ok(&h.env.relayq(&["init", "--user", USER]));
    assert_eq!(std::fs::metadata(&root).unwrap().uid(), 0);
    ok(&h.env.flush());
    ok(&h.env.relayq(&["release", &ids[1]]));
    ok(&h.env.flush());
    let got = h.relay.wait_for(2, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "{got:?}");
    for m in &got {
        assert_eq!(rcpts_of(m), ["later@example.org"], "re-sent to now@: {m:?}");
    }
    assert!(h.entries().is_empty(), "{:?}", h.entries());
    for dir in ["queue", "hold", "journal"] {
        assert_eq!(
            std::fs::read_dir(root.join(dir)).unwrap().count(),
            0,
            "{dir}/"
        );
    }
}

#[test]
fn postdrop_refuses_what_the_spool_would_not_take_and_leaves_nothing() {
    // max_message_size 1 MiB: postdrop takes at most that, the envelope and 1 MiB more
    // (run/limits, written by init), whatever the user streams at it.
    let Some(h) = root_host("") else {
        return;
    };
    let text = std::fs::read_to_string(&h.env.cfg).unwrap();
    std::fs::write(&h.env.cfg, format!("max_message_size = \"1M\"\n{text}")).unwrap();
    ok(&h.env.relayq(&["init", "--user", USER]));
    let mut data =
        b"relayq-envelope 1\nsender <a@example.org>\nrcpt <b@example.org>\nend\n".to_vec();
    data.resize(8 << 20, b'x');
    let spool = h.env.path().join("spool");
    let o = Who::NOBODY.run(
        false,
        &h.bin.join("relayq-postdrop"),
        &[spool.to_str().unwrap()],
        &chunked(&data),
    );
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(stderr(&o).contains("larger than"), "{}", stderr(&o));
    for d in ["tmp", "new"] {
        assert_eq!(std::fs::read_dir(spool.join(d)).unwrap().count(), 0, "{d}/");
    }
    // Killed by its file size limit (SIGXFSZ), it still removes its file.
    let mut sh = Command::new("sh");
    sh.args([
        "-c",
        "ulimit -f 1024; exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$0\" \"$1\"",
    ]);
    let o = h.postdrop_under(sh, &data[..2 << 20]);
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(spool.join("tmp")).unwrap().count(), 0);
}

#[test]
fn roots_metrics_file_follows_no_planted_link() {
    // node-exporter's directory belongs to another user, who plants links where root's
    // `status --metrics` writes.
    let Some(h) = root_host("") else {
        return;
    };
    let exporter = Who::user(USER_A);
    let dir = h.env.path().join("textfile");
    std::fs::create_dir(&dir).unwrap();
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(exporter.uid)), None).unwrap();
    let (_, look) = outside(&h);
    let before = look();
    let victim = h.env.path().join("outside").join("victim");
    let metrics = dir.join("relayq.prom");
    for link in ["relayq.prom.tmp", "relayq.prom"] {
        exporter.python(
            "import os, sys; os.symlink(sys.argv[1], sys.argv[2])",
            &[victim.to_str().unwrap(), dir.join(link).to_str().unwrap()],
            b"",
        );
    }
    let o = h
        .env
        .relayq(&["status", "--metrics", metrics.to_str().unwrap()]);
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", stderr(&o));
    assert_eq!(look(), before, "root wrote through a link");
    let m = std::fs::symlink_metadata(&metrics).unwrap();
    assert!(m.is_file(), "the link was replaced by the file");
    assert!(
        std::fs::read_to_string(&metrics)
            .unwrap()
            .contains("relayq_")
    );
}

#[test]
fn one_user_cannot_block_the_socket_nor_flood_the_relay_nor_forge_the_trace() {
    let Some((a, b, h)) = two_users_and_a_greylisting_relay() else {
        return;
    };
    h.relay.set_faults("{}");
    let _d = Daemon::start(&h);
    // A holds 64 connections open, idle after half a verb (a connection the daemon has
    // already refused, past A's share, may fail the send: it still counts as A's).
    let hold = "import socket, sys, time\nconns = []\nfor i in range(64):\n    s = socket.socket(socket.AF_UNIX)\n    try:\n        s.connect(sys.argv[1]); conns.append(s)\n    except OSError:\n        continue\n    try:\n        s.send(b'LI')\n    except OSError:\n        pass\nprint(len(conns), flush=True)\ntime.sleep(30)";
    let mut hog = Command::new("setpriv")
        .args([
            &format!("--reuid={}", a.uid),
            &format!("--regid={}", a.gid),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            hold,
            h.socket().to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(hog.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "64", "A's connections");
    // B is still served: a listing, and a submission under NoNewPrivileges (the socket).
    let o = h.relayq(b, &["queue"]);
    assert!(o.status.success(), "B's mailq: {}", stderr(&o));
    let o = h.sendmail(b, true, "Subject: from B\n\nhi\n");
    assert!(o.status.success(), "B's submission: {}", stderr(&o));
    // A is told why, in one line.
    let o = h.relayq(a, &["queue"]);
    assert_eq!(o.status.code(), Some(75));
    assert!(
        stderr(&o).contains("too many connections"),
        "{}",
        stderr(&o)
    );
    let _ = hog.kill();
    let _ = hog.wait();
    let got = h.relay.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    // The trace field is the daemon's: B's real uid, whatever the socket client wrote.
    let data = got[0]["data"].as_str().unwrap();
    assert!(
        data.starts_with("Received: by ")
            && data
                .lines()
                .next()
                .unwrap()
                .ends_with(&format!("(relayq, from userid {})", b.uid)),
        "{data}"
    );
    // A forged trace and uid through postdrop: the relay sees A's uid first.
    let spool = h.env.path().join("spool");
    let mut f = forged("forged trace");
    let body_at = f.windows(4).position(|w| w == b"end\n").unwrap() + 4;
    f.splice(
        body_at..body_at,
        b"Received: by x (relayq, from userid 0)\r\n"
            .iter()
            .copied(),
    );
    let o = a.run(
        false,
        &h.bin.join("relayq-postdrop"),
        &[spool.to_str().unwrap()],
        &chunked(&f),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let got = h.relay.wait_for(2, Duration::from_secs(10));
    let data = got[1]["data"].as_str().unwrap();
    assert!(
        data.lines()
            .next()
            .unwrap()
            .ends_with(&format!("(relayq, from userid {})", a.uid)),
        "{data}"
    );
    // A user's flushes: one per 10 s (a loop of them cannot flood the relay with logins).
    // (A's held connections are closed by now: its hog was killed.)
    assert!(wait_until(Duration::from_secs(10), || h
        .relayq(a, &["queue"])
        .status
        .success()));
    let o = h.relayq(a, &["flush"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = h.relayq(a, &["flush"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("less than 10 s ago"), "{}", stderr(&o));
}

#[test]
fn postdrop_resolves_the_spool_path_once() {
    // Every file system call postdrop makes, as an ordinary user (strace as root runs it
    // setgid, as installed): the spool is resolved by path once; tmp/, new/ and the file
    // only relative to directory fds, so no symlink swapped in meanwhile can redirect it.
    let Some(h) = root_host("") else {
        return;
    };
    let spool = h.env.path().join("spool");
    let trace = h.env.path().join("postdrop.strace");
    let mut strace = Command::new("strace");
    strace
        .args(["-f", "-qq", "-u", "nobody", "-e", "trace=%file", "-o"])
        .arg(&trace);
    let msg = b"relayq-envelope 1\nsender <a@example.org>\nrcpt <b@example.org>\nend\nSubject: x\r\n\r\nx\r\n";
    let o = h.postdrop_under(strace, msg);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&trace).unwrap();
    let root = spool.to_str().unwrap();
    let by_path: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(root) && !l.contains("execve("))
        .collect();
    assert_eq!(by_path.len(), 1, "{by_path:#?}");
    assert!(by_path[0].contains("O_DIRECTORY"), "{}", by_path[0]);
    // And the rest did happen, through fds: the file made, renamed into new/.
    assert!(text.contains("renameat2("), "{text}");
    assert_eq!(std::fs::read_dir(spool.join("new")).unwrap().count(), 1);
}
