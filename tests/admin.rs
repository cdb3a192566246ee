//! Queue management through the real binary: show, hold, release, delete, status.

mod support;
use std::time::Duration;
use support::*;

fn ids(env: &Env) -> Vec<String> {
    let o = env.relayq(&["queue", "--json"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["queue_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn hold_release_delete_show_status() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = Env::new(
        &relay_toml("smtp", relay.port),
        "[queue]\nretry_min = 1\nretry_max = 1",
    );
    env.send(&["a@example.org"], "first");
    env.send(&["b@example.org"], "second");
    env.send(&["c@example.org"], "third");
    let all = ids(&env);
    assert_eq!(all.len(), 3);

    // show: envelope, recipient state, header; no body unless asked.
    let o = env.relayq(&["show", &all[0]]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("Sender:    <server@example.com>")
            && out.contains("Recipient: <a@example.org> queued")
            && out.contains("Subject: first"),
        "{out}"
    );
    assert!(!out.contains("body of first"), "{out}");
    let o = env.relayq(&["show", &all[0], "--body"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("body of first"));

    // hold one, delete one: a flush delivers only the third.
    assert!(env.relayq(&["hold", &all[0]]).status.success());
    assert!(env.relayq(&["delete", &all[1]]).status.success());
    assert_eq!(env.count("hold"), 1);
    let o = env.relayq(&["queue"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{}!", all[0])),
        "held mark"
    );
    let o = env.relayq(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["last_delivery"].is_null(), "nothing delivered yet: {v}");
    assert!(!String::from_utf8_lossy(&env.relayq(&["status"]).stdout).contains("last delivery"));
    assert!(env.flush().status.success());
    let got = relay.arrived();
    assert_eq!(got.iter().map(subject_of).collect::<Vec<_>>(), ["third"]);
    let o = env.relayq(&["status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("last delivery: ")
            && out.contains(" ago) to <c@example.org>: 250 2.0.0 OK queued as "),
        "{out}"
    );

    // status: counts, and exit 1 when mail is older than --stuck-after.
    let prom = env.path().join("relayq.prom");
    let o = env.relayq(&["status", "--json", "--metrics", prom.to_str().unwrap()]);
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains("relayq_queue_messages{state=\"held\"} 1")
            && metrics.contains("relayq_daemon_running 0"),
        "{metrics}"
    );
    let stamp: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("relayq_last_delivery_timestamp_seconds "))
        .and_then(|t| t.parse().ok())
        .expect("last delivery metric");
    assert!(relayq::daemon::now().abs_diff(stamp) < 60, "{metrics}");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            v["held"].as_u64(),
            v["queued"].as_u64(),
            v["daemon_running"].as_bool()
        ),
        (Some(1), Some(0), Some(false))
    );
    assert_eq!(v["last_delivery"]["rcpt"], "c@example.org", "{v}");
    assert_eq!(v["last_delivery"]["time"], stamp);
    assert_eq!(
        v["last_delivery"]["queue_id"].as_str(),
        Some(all[2].as_str())
    );
    relay.set_faults(r#"{"mail": "451 4.3.0 not now"}"#);
    assert!(env.relayq(&["release", "--all"]).status.success());
    assert!(env.flush().status.success());
    std::thread::sleep(Duration::from_millis(1100));
    let o = env.relayq(&["status", "--stuck-after", "1"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "stuck: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("STUCK") && out.contains("451 4.3.0 not now"),
        "{out}"
    );
    relay.set_faults("{}");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(env.flush().status.success());
    assert_eq!(relay.arrived().len(), 2, "released mail delivered");
    assert_eq!(env.relayq(&["status"]).status.code(), Some(0));
    let o = env.relayq(&["delete", "NOSUCHID0000000000000"]);
    assert_eq!(o.status.code(), Some(1));
}

/// The daemon records the latest delivery within about a second, also the last one of a
/// burst (rate limited, written by the main loop while the daemon keeps running).
#[test]
fn status_shows_the_daemons_last_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    // One connection: deliveries happen in the order the relay stores them.
    let env = Env::new(&relay_toml("smtp", relay.port), "[queue]\nconnections = 1");
    let mut d = env.daemon();
    for (i, rcpt) in ["x@example.org", "y@example.org", "z@example.org"]
        .iter()
        .enumerate()
    {
        env.send(&[rcpt], &format!("burst {i}"));
    }
    let got = relay.wait_for(3, Duration::from_secs(10));
    assert_eq!(got.len(), 3, "{}", env.daemon_log());
    let last = got.last().unwrap();
    let header_id = last["data"]
        .as_str()
        .unwrap_or("")
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .map(|x| x.trim().to_string());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let v = loop {
        let o = env.relayq(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if v["last_delivery"]["rcpt"] == rcpts_of(last)[0].as_str()
            || std::time::Instant::now() > deadline
        {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = d.wait();
    let ld = &v["last_delivery"];
    assert_eq!(ld["rcpt"].as_str(), Some(rcpts_of(last)[0].as_str()), "{v}");
    assert_eq!(ld["message_id"].as_str(), header_id.as_deref(), "{v}");
    assert!(
        ld["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("250 2.0.0 OK queued as ")),
        "{v}"
    );
    assert!(relayq::daemon::now().abs_diff(ld["time"].as_u64().unwrap()) < 60);
}

#[test]
fn every_command_has_help_and_refuses_unknown_options() {
    // --help needs no config and fits one screen (24 lines).
    for cmd in [
        "setup", "init", "daemon", "flush", "queue", "show", "hold", "release", "delete", "status",
        "test", "doctor", "import",
    ] {
        let o = std::process::Command::new(BIN)
            .args(["-C", "/nonexistent/relayq.toml", cmd, "--help"])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", stderr(&o));
        assert!(out.starts_with("usage: relayq"), "{cmd}: {out}");
        assert!(out.contains(cmd), "{cmd}: {out}");
        assert!(
            out.lines().count() <= 24,
            "{cmd}: {} lines",
            out.lines().count()
        );
    }
    for args in [
        &["queue", "--jsn"][..],
        &["status", "--metrics"],
        &["test", "extra"],
        &["daemon", "--bogus"],
    ] {
        let o = std::process::Command::new(BIN)
            .args(["-C", "/nonexistent/relayq.toml"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(64), "{args:?}");
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        assert!(e.contains(args[0]) && e.contains("--help"), "{args:?}: {e}");
    }
}

#[test]
fn printing_commands_end_quietly_when_the_reader_goes_away() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new(&relay_toml("smtp", 9), "");
    // Enough output to outlast a closed pipe.
    for i in 0..50 {
        env.send(&[&format!("r{i}@example.org")], "x");
    }
    for args in [
        &["status"][..],
        &["queue"],
        &["queue", "--json"],
        &["--help"],
    ] {
        let mut c = std::process::Command::new(BIN)
            .arg("-C")
            .arg(&env.cfg)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(c.stdout.take());
        let o = c.wait_with_output().unwrap();
        assert_ne!(
            o.status.signal(),
            Some(6),
            "{args:?} aborted: {}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
        assert!(
            o.status.success() || o.status.signal() == Some(13),
            "{args:?}: {:?} {}",
            o.status,
            stderr(&o)
        );
    }
}

#[test]
fn show_escapes_control_characters_unless_raw() {
    let env = Env::new(&plain_relay_toml(1), "");
    let o = env.sendmail(
        &["-i", "a@example.org"],
        b"Subject: \x1b]0;owned\x07\x1b[2J caf\xc3\xa9\n\nbody \x1b[31mred\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let id = &ids(&env)[0];
    let o = env.relayq(&["show", id, "--body"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!o.stdout.contains(&0x1b), "an escape reached the terminal");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Subject: ^[]0;owned^G^[[2J caf\u{e9}"),
        "{out}"
    );
    assert!(out.contains("body ^[[31mred"), "{out}");
    let o = env.relayq(&["show", id, "--body", "--raw"]);
    assert!(o.stdout.windows(5).any(|w| w == b"\x1b[31m"), "--raw");
}
