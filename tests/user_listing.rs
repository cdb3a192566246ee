//! An ordinary user's `mailq` and `relayq queue --json`, answered by the daemon: only the
//! user's own messages, oldest first, streamed in bounded memory (a listing by any local
//! user must not grow the daemon with the queue), and `mailq | head -1` ends at once with
//! exit 0. Queue files are written straight into the spool (docs/spool.md), as
//! tests/bigqueue.rs does; the lister is user nobody (setpriv). Skipped when not root.

mod support;
use relayq::spool::{Envelope, Rcpt};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::*;

const NOBODY: u32 = 65534;

/// A spool (owned by root, the daemon's user here) that user nobody can reach: the config
/// and a `mailq` link readable by all. Not root: None, with a note.
fn env_for_nobody() -> Option<Env> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: listing as an ordinary user needs root (setpriv)");
        return None;
    }
    let env = Env::new(&plain_relay_toml(1), "");
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&env.cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(BIN, env.path().join("mailq")).unwrap();
    Some(env)
}

/// Message `i`, queued by `uid` at `t`, in spool directory `dir` (`queue`: deferred, next
/// attempt in a day, so the daemon leaves it alone). Its ID and message size.
fn write_message(env: &Env, dir: &str, i: usize, t: u64, uid: u32) -> (String, u64) {
    let id = format!("{t:09X}{:05X}{:08X}", i % 0x10_0000, i);
    let env_ = Envelope {
        sender: format!("app{}@example.com", i % 7),
        rcpts: vec![Rcpt {
            addr: format!("rcpt{i}@example.org"),
            ..Rcpt::default()
        }],
        time: t,
        uid,
        user: format!("uid{uid}"),
        ..Envelope::default()
    };
    let mut data = Vec::new();
    env_.write_to(&mut data).unwrap();
    let body = format!("Subject: message {i}\r\n\r\nbody {i}\r\n");
    data.extend_from_slice(body.as_bytes());
    std::fs::write(env.spool(dir).join(&id), data).unwrap();
    if dir == "queue" {
        let log = format!("t 0 {t} 451 4.3.0 later\nn {} 1\n", t + 86_400);
        std::fs::write(env.spool("journal").join(&id), log).unwrap();
    }
    (id, body.len() as u64)
}

/// `args` (after the program) as user nobody; `mailq` runs the link, anything else relayq.
fn as_nobody(env: &Env, prog: &str, args: &[&str], out: &Path) -> Output {
    let bin = if prog == "mailq" {
        env.path().join("mailq")
    } else {
        Path::new(BIN).to_path_buf()
    };
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "env"])
        .arg(format!("RELAYQ_CONFIG={}", env.cfg.display()))
        .arg(bin);
    if prog != "mailq" {
        c.arg("-C").arg(&env.cfg);
    }
    let mut child = c
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let status = wait_exit(&mut child, std::time::Duration::from_secs(120), prog);
    Output {
        status,
        stdout: std::fs::read(out).unwrap(),
        stderr: std::io::read_to_string(err).unwrap().into_bytes(),
    }
}

/// The IDs of a `mailq` listing, in order, and its last line.
fn listed(text: &str) -> (Vec<String>, String) {
    let ids = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with([' ', '-']))
        .map(|l| l.split([' ', '!']).next().unwrap().to_string())
        .collect();
    (ids, text.lines().last().unwrap_or("").to_string())
}

fn summary(n: usize, bytes: u64) -> String {
    format!("-- {} Kbytes in {n} Requests.", bytes.div_ceil(1024))
}

#[test]
fn users_list_only_their_own_mail_oldest_first() {
    let Some(env) = env_for_nobody() else { return };
    const N: usize = 3_000;
    let base = relayq::daemon::now() - 3_600;
    let (mut all, mut mine) = (vec![], vec![]);
    let (mut all_bytes, mut my_bytes) = (0, 0);
    for i in 0..N {
        // Written newest first, so directory order is not arrival order.
        let i = N - 1 - i;
        let uid = if i.is_multiple_of(5) { NOBODY } else { 33 };
        let dir = if i.is_multiple_of(4) { "hold" } else { "queue" };
        let (id, size) = write_message(&env, dir, i, base + (i / 3) as u64, uid);
        all.push(id.clone());
        all_bytes += size;
        if uid == NOBODY {
            mine.push(id);
            my_bytes += size;
        }
    }
    all.sort();
    mine.sort();
    let _d = DaemonGuard(env.daemon_listening());

    let o = as_nobody(&env, "mailq", &[], &env.path().join("mailq.out"));
    assert!(o.status.success(), "{}", stderr(&o));
    let (ids, last) = listed(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(ids, mine, "nobody's messages, oldest first");
    assert_eq!(last, summary(mine.len(), my_bytes));

    let o = as_nobody(
        &env,
        "relayq",
        &["queue", "--json"],
        &env.path().join("q.json"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = entries
        .iter()
        .map(|e| e["queue_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, mine);
    assert!(entries.iter().all(|e| e["uid"] == NOBODY));

    // Root reads the spool itself: everything, as before.
    let o = env.relayq(&["queue"]);
    let (ids, last) = listed(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(ids, all);
    assert_eq!(last, summary(N, all_bytes));
}

/// 100,000 queued, all the user's: the daemon's peak RSS (VmHWM) grows by less than 24 MiB
/// while it lists them (measured: 14 MiB; with a million queued 16 MiB, where the old
/// answer, which held every name, every entry and the whole text at once, took the daemon
/// from 5 to 800 MiB). What a listing may hold: one pass's
/// names (65,536 at about 80 bytes: 5 MiB), one batch of entries (4,096, twice while they
/// are gathered from the reader threads: 3 MiB), the reader threads' stacks and malloc
/// arenas, a 64 KiB buffer; none of it grows with the queue. Then `mailq | head -1` ends
/// with exit 0 (not SIGPIPE's 141) before the listing is done.
#[test]
fn listing_a_hundred_thousand_costs_the_daemon_bounded_memory() {
    const N: usize = 100_000;
    let Some((env, d)) = held_by_nobody(N) else {
        return;
    };
    let hwm = || {
        let s = std::fs::read_to_string(format!("/proc/{}/status", d.0.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = hwm();
    let o = as_nobody(&env, "mailq", &[], &env.path().join("mailq.out"));
    assert!(o.status.success(), "{}", stderr(&o));
    let (ids, _) = listed(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(ids.len(), N);
    let grown = hwm().saturating_sub(before);
    eprintln!("user_listing: daemon VmHWM {before} kB, grown by {grown} kB listing {N}");
    assert!(grown < 24 * 1024, "the daemon grew by {grown} kB");

    let o = Command::new("bash")
        .args(["-o", "pipefail", "-c"])
        .arg(format!(
            "setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups env RELAYQ_CONFIG={} {} | head -1",
            env.cfg.display(),
            env.path().join("mailq").display()
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    assert_eq!(stderr(&o), "");
}

/// A listing the daemon does not finish (killed while the reader stalls) is an error for
/// the user (exit 75, one line), never a shorter listing that looks complete.
#[test]
fn a_listing_cut_off_by_the_daemon_is_an_error() {
    const N: usize = 20_000;
    let Some((env, d)) = held_by_nobody(N) else {
        return;
    };
    // The listing (about 2 MB) fills the pipe nobody reads and the socket behind it, and the
    // daemon waits to write; then it dies.
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "env"])
        .arg(format!("RELAYQ_CONFIG={}", env.cfg.display()))
        .arg(env.path().join("mailq"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    let status = wait_exit(&mut child, std::time::Duration::from_secs(60), "mailq");
    let (ids, last) = listed(&out);
    assert!(
        ids.len() < N,
        "the listing was not cut off: {} listed",
        ids.len()
    );
    assert!(
        !last.starts_with("-- "),
        "a cut-off listing ended with a summary: {last}"
    );
    assert_eq!(status.code(), Some(75), "{err}");
    assert!(
        err.starts_with("mailq: the relayq daemon's listing broke off") && err.lines().count() == 1,
        "{err}"
    );
}

/// `n` messages of nobody's, held (the daemon reads none of them by itself, so its memory
/// before a listing is its own), and the daemon running. Not root: None.
fn held_by_nobody(n: usize) -> Option<(Env, DaemonGuard)> {
    let env = env_for_nobody()?;
    let base = relayq::daemon::now() - 3_600;
    for i in 0..n {
        write_message(&env, "hold", i, base + (i / 30) as u64, NOBODY);
    }
    let d = DaemonGuard(env.daemon_listening());
    Some((env, d))
}

/// The daemon, stopped when the test ends (also when it fails).
struct DaemonGuard(std::process::Child);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        stop_daemon(&mut self.0);
    }
}
