//! `relayq flush` as an admin and as cron run it: on a terminal a progress line (count,
//! rate, ETA) for a large queue and a summary at the end; not on a terminal, with syslog on,
//! nothing at all on stdout or stderr when all goes well (cron mails any output).

mod support;
use std::process::{Command, Stdio};
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

#[test]
fn progress_and_summary_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    // Slow the relay down (15 ms a round trip) so the flush lasts a few seconds.
    let relay = Relay::start(
        tmp.path(),
        RelayOpts {
            extra: vec!["--rtt-ms".into(), "15".into()],
            ..Default::default()
        },
    );
    let env = syslog_env(&relay);
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
