//! `relayq flush` as an admin and as cron run it: on a terminal a progress line (count,
//! rate, ETA) for a large queue and a summary at the end; not on a terminal, with syslog on,
//! nothing at all on stdout or stderr when all goes well (cron mails any output). With a
//! daemon running, `relayq flush ID` and `sendmail -qR` flush only what they select, bad
//! requests on the socket get an error line, and an older daemon gets the old request. The
//! log reaches syslog (a private /dev/log) at facility mail in the Postfix format.

mod support;
use std::io::{BufRead, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// An Env whose log goes to syslog, as on a real host.
fn syslog_env(relay: &Relay) -> Env {
    let env = Env::new(&relay_toml("smtp", relay.port), "");
    let text = std::fs::read_to_string(&env.cfg).unwrap();
    std::fs::write(&env.cfg, text.replace("syslog = false", "syslog = true")).unwrap();
    env
}

fn queue(env: &Env, n: usize) {
    for i in 0..n {
        env.send(&[&format!("r{i}@example.org")], &format!("m{i}"));
    }
}

#[test]
fn quiet_when_not_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = syslog_env(&relay);
    queue(&env, 3);
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    assert_eq!(relay.arrived().len(), 3);
}

/// #13 item 7: a flush from cron, no daemon, relay down: the mail waits for the next run;
/// nothing promises a probe that no process will make.
#[test]
fn a_flush_without_a_daemon_promises_no_probe() {
    let env = Env::new(&plain_relay_toml(1), "");
    queue(&env, 1);
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("unreachable") && err.contains("mail stays queued for the next"),
        "{err}"
    );
    assert!(!err.contains("probing again"), "{err}");
    assert_eq!(env.queued(), 1);
}

#[test]
fn progress_and_summary_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    // Slow the relay down (15 ms a round trip) and use one connection, so the flush lasts
    // at least 150 round trips (2.25 s) on any machine: past the first progress line.
    let relay = Relay::start(
        tmp.path(),
        RelayOpts {
            extra: vec!["--rtt-ms".into(), "15".into()],
            ..Default::default()
        },
    );
    let env = syslog_env(&relay);
    let text = std::fs::read_to_string(&env.cfg).unwrap();
    std::fs::write(&env.cfg, format!("{text}\n[queue]\nconnections = 1\n")).unwrap();
    queue(&env, 150);
    let o = Command::new("/usr/bin/python3")
        .arg(repo().join("tests/tools/pty_drive.py"))
        .arg("[]")
        .arg("--")
        .arg(BIN)
        .arg("-C")
        .arg(&env.cfg)
        .arg("flush")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("relayq: flush: "), "no progress line: {out}");
    assert!(
        out.contains("/150 messages") && out.contains("msg/s, ETA"),
        "{out}"
    );
    assert!(out.contains("150/150 messages"), "final progress: {out}");
    assert!(
        out.contains("150 message(s) tried, 150 recipient(s) delivered"),
        "summary: {out}"
    );
    // Delivery lines go to syslog, not the terminal.
    assert!(!out.contains("status=sent"), "{out}");
    assert_eq!(
        relay.wait_for(150, std::time::Duration::from_secs(5)).len(),
        150
    );
}

/// Two messages, to one.example and two.example, deferred for an hour by a 451, and a
/// daemon started on them once the relay accepts again. Returns the daemon and the ID of
/// the message to one.example.
fn two_deferred(env: &Env, relay: &Relay) -> (std::process::Child, String) {
    relay.set_faults(r#"{"rcpt_all": "451 4.7.1 greylisted"}"#);
    env.send(&["a@one.example"], "to one");
    env.send(&["b@two.example"], "to two");
    assert!(env.flush().status.success());
    assert_eq!((env.queued(), relay.arrived().len()), (2, 0));
    relay.set_faults("{}");
    let o = env.relayq(&["queue", "--json"]);
    let one = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["recipients"][0]["address"] == "a@one.example")
        .and_then(|v| v["queue_id"].as_str().map(str::to_string))
        .expect("the message to one.example is listed");
    let d = env.daemon_listening();
    // Started with both on an hour's backoff: nothing goes out by itself.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(relay.arrived().len(), 0, "{}", env.daemon_log());
    (d, one)
}

fn stop(mut d: std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(d.wait().unwrap().success());
}

/// Until the queue holds `n` messages (bounded).
fn wait_queued(env: &Env, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.queued() != n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    env.queued()
}

/// A relay and an Env whose deferred mail waits an hour: only a flush brings it forward.
fn hour_backoff() -> (tempfile::TempDir, Relay, Env) {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = Env::new(
        &relay_toml("smtp", relay.port),
        "[queue]\nretry_min = 3600\nretry_max = 3600",
    );
    (tmp, relay, env)
}

#[test]
fn daemon_flushes_only_the_selected_messages() {
    let (_tmp, relay, env) = hour_backoff();
    let (d, one) = two_deferred(&env, &relay);

    let o = env.relayq(&["flush", &one]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        out.contains(&format!(
            "the daemon is flushing 1 message(s) matching ID {one}; `mailq` shows what is left"
        )),
        "{out}"
    );
    let got = relay.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}", env.daemon_log());
    assert_eq!(rcpts_of(&got[0]), ["a@one.example"]);
    assert_eq!(wait_queued(&env, 1), 1);
    // The other one keeps its backoff.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(relay.arrived().len(), 1, "only the selected message");
    assert_eq!(env.queued(), 1);

    // sendmail -qR: exit 0 and what the daemon says it does.
    let qr = |domain: &str, says: &str| {
        let o = env.sendmail(&[&format!("-qR{domain}")], b"");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
        assert!(out.contains(says), "{out}");
    };
    qr(
        "nowhere.example",
        "no queued message matches a recipient at nowhere.example",
    );
    qr(
        "two.example",
        "the daemon is flushing 1 message(s) matching a recipient at two.example",
    );
    let got = relay.wait_for(2, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "{}", env.daemon_log());
    assert_eq!(rcpts_of(&got[1]), ["b@two.example"]);
    assert_eq!(wait_queued(&env, 0), 0);
    stop(d);
}

#[test]
fn sendmail_qr_leaves_other_domains_deferred() {
    let (_tmp, relay, env) = hour_backoff();
    let (d, _) = two_deferred(&env, &relay);
    let o = env.sendmail(&["-qRtwo.example"], b"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = relay.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}", env.daemon_log());
    assert_eq!(rcpts_of(&got[0]), ["b@two.example"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(relay.arrived().len(), 1, "one.example stays deferred");
    assert_eq!(env.queued(), 1);
    // A plain flush still takes everything.
    let o = env.relayq(&["flush"]);
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("the daemon is flushing the queue: 1 message(s)"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(relay.wait_for(2, Duration::from_secs(10)).len(), 2);
    stop(d);
}

/// One raw request on the daemon's socket; its first answer line.
fn raw(env: &Env, req: &[u8]) -> String {
    let mut s = UnixStream::connect(env.spool("run").join("submit.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(req); // the daemon may stop reading at the limit
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut line = String::new();
    let _ = std::io::BufReader::new(&s).read_line(&mut line);
    line
}

#[test]
fn bad_flush_requests_get_an_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = Env::new(&relay_toml("smtp", relay.port), "");
    let mut d = env.daemon_listening();
    let big = [b"FLSQ".to_vec(), b"id X\n".repeat(20_000)].concat();
    for (req, want) in [
        (&b"FLSQ\xff\xfe\n"[..], "ERR bad flush request: not UTF-8"),
        (b"FLSQid\n", "ERR bad flush request line \"id\""),
        (b"FLSQdomain a\ndomain b\n", "ERR bad flush request line"),
        (b"FLSQid a\x00b\n", "ERR bad flush request line"),
        (&big, "ERR flush request too large"),
    ] {
        let got = raw(&env, req);
        assert!(
            got.starts_with(want),
            "{:?}: {got:?}",
            String::from_utf8_lossy(&req[..20.min(req.len())])
        );
    }
    assert!(
        d.try_wait().unwrap().is_none(),
        "daemon died: {}",
        env.daemon_log()
    );
    // Still serving: a good request, and the old bare FLSH.
    assert_eq!(raw(&env, b"FLSQid NOSUCH\n"), "OK flushing 0\n");
    assert_eq!(raw(&env, b"FLSH"), "OK flushing\n");
    env.send(&["a@example.org"], "after");
    assert_eq!(relay.wait_for(1, Duration::from_secs(10)).len(), 1);
    stop(d);
}

/// A daemon of the previous version: knows only FLSH, answers anything else as unknown.
fn old_daemon(env: &Env) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let l = UnixListener::bind(env.spool("run").join("submit.sock")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming().take(10) {
            let Ok(mut s) = s else { continue };
            let mut verb = [0u8; 4];
            if s.read_exact(&mut verb).is_err() {
                continue;
            }
            let reply: &[u8] = if &verb == b"FLSH" {
                b"OK flushing\n"
            } else {
                b"ERR unknown request\n"
            };
            let _ = s.write_all(reply);
            let _ = tx.send(verb.to_vec());
        }
    });
    rx
}

#[test]
fn an_older_daemon_flushes_everything_and_the_client_says_so() {
    let env = Env::new(&relay_toml("smtp", 9), "");
    let verbs = old_daemon(&env);
    let o = env.relayq(&["flush", "06B0E9"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the running daemon is an older version")
            && stderr(&o).contains("flushing the whole queue, not only ID 06B0E9"),
        "{}",
        stderr(&o)
    );
    let got: Vec<Vec<u8>> = verbs
        .recv_timeout(Duration::from_secs(5))
        .into_iter()
        .chain(verbs.recv_timeout(Duration::from_secs(5)))
        .collect();
    assert_eq!(got, [b"FLSQ".to_vec(), b"FLSH".to_vec()]);
    // The whole queue asked for: no warning.
    let o = env.relayq(&["flush"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("the daemon is flushing the queue"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// From cron with a daemon running, a selective flush prints nothing either.
#[test]
fn quiet_with_a_daemon_too() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = syslog_env(&relay);
    let mut d = env.daemon_listening();
    assert!(d.try_wait().unwrap().is_none());
    for args in [&["flush", "NOSUCH"][..], &["flush"]] {
        let o = env.relayq(args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(
            (stderr(&o), String::from_utf8_lossy(&o.stdout).into_owned()),
            (String::new(), String::new())
        );
    }
    stop(d);
}

#[test]
fn syslog_gets_postfix_style_lines_at_facility_mail() {
    // Logging goes through glibc's syslog(3) to /dev/log. A private mount namespace gives
    // the flush a /dev/log of the test's own (root only, as in CI).
    let can = nix::unistd::geteuid().is_root()
        && Command::new("/usr/bin/unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !can {
        eprintln!("skipped: needs root and unshare(1) (mount namespaces) for a private /dev/log");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = syslog_env(&relay);
    queue(&env, 2);
    let flush_logged = |env: &Env| {
        Command::new("/usr/bin/unshare")
            .args(["--mount", "--propagation", "private", "/usr/bin/python3"])
            .arg(repo().join("tests/tools/with_devlog.py"))
            .arg("--")
            .arg(BIN)
            .arg("-C")
            .arg(&env.cfg)
            .arg("flush")
            .output()
            .unwrap()
    };
    let o = flush_logged(&env);
    let records = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{records}{}", stderr(&o));
    assert!(o.stderr.is_empty(), "quiet as under cron: {}", stderr(&o));
    assert_eq!(relay.arrived().len(), 2);
    // <22> = facility mail (2) * 8 + info (6); ident relayq with the pid.
    let sent: Vec<&str> = records
        .lines()
        .filter(|l| l.contains("status=sent"))
        .collect();
    assert_eq!(sent.len(), 2, "{records}");
    for l in &sent {
        assert!(l.starts_with("<22>") && l.contains(" relayq["), "{l}");
        assert!(l.contains(": to=<r") && l.contains(", relay="), "{l}");
    }
    assert!(records.contains(": from=<"), "{records}");
    assert!(
        !records.contains("secret"),
        "no password in the log: {records}"
    );
    // A relay nobody answers: one warning (facility mail, warning = <20>) for the pass, not
    // one per worker that tried at the same moment.
    let text = std::fs::read_to_string(&env.cfg).unwrap();
    let port = format!("localhost:{}", relay.port);
    std::fs::write(&env.cfg, text.replace(&port, "127.0.0.1:1")).unwrap();
    queue(&env, 4);
    let o = flush_logged(&env);
    let records = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{records}{}", stderr(&o));
    let down: Vec<&str> = records
        .lines()
        .filter(|l| l.contains("unreachable"))
        .collect();
    assert_eq!(down.len(), 1, "{records}");
    assert!(down[0].starts_with("<20>"), "{records}");
}
