//! The flush machinery against a real SMTP server (aiosmtpd via tests/relay/relay.py):
//! STARTTLS, implicit TLS, AUTH, per-recipient results, and injected faults. Each test
//! checks what arrived, what is still queued, what was bounced, and that nothing was lost
//! or sent twice.

mod support;
use std::time::Duration;
use support::*;

const QUICK_RETRY: &str = "[queue]\nretry_min = 1\nretry_max = 2\nidle_timeout = 3";

fn setup(opts: RelayOpts, scheme: &str) -> (Env, Relay) {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), opts);
    let env = Env::new(&relay_toml(scheme, relay.port), QUICK_RETRY);
    std::mem::forget(tmp); // relay output lives there until the process ends
    (env, relay)
}

#[test]
fn starttls_auth_delivers_each_recipient_once() {
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    env.send(&["a@example.org", "b@example.org", "root"], "hello");
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    let got = relay.arrived();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        rcpts_of(&got[0]),
        ["a@example.org", "b@example.org", "admin@example.com"]
    );
    assert_eq!(got[0]["mail_from"], "server@example.com");
    assert_eq!(got[0]["tls"], true);
    assert_eq!(got[0]["auth_user"], "user");
    assert!(got[0]["data"].as_str().unwrap().contains("body of hello"));
    assert_eq!(env.queued(), 0);
    assert_eq!(env.count("failed"), 0);
    assert!(stderr(&o).contains("status=sent"), "{}", stderr(&o));
}

#[test]
fn implicit_tls_works() {
    let (env, relay) = setup(
        RelayOpts {
            tls: "implicit",
            ..Default::default()
        },
        "smtps",
    );
    env.send(&["a@example.org"], "implicit");
    assert!(env.flush().status.success());
    let got = relay.arrived();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["tls"], true);
    assert_eq!(env.queued(), 0);
}

#[test]
fn one_rejected_recipient_does_not_fail_the_others() {
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    relay.set_faults(r#"{"rcpt": {"bad@example.org": "550 5.1.1 no such user", "slow@example.org": "451 4.2.0 greylisted"}}"#);
    env.send(
        &[
            "a@example.org",
            "bad@example.org",
            "slow@example.org",
            "c@example.org",
        ],
        "mixed",
    );
    let o = env.flush();
    assert!(o.status.success());
    let got = relay.arrived();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(rcpts_of(&got[0]), ["a@example.org", "c@example.org"]);
    // slow@ is deferred: the message stays queued, and mailq says why. bad@ failed for
    // good: its bounce is queued now (as Postfix does), not when slow@ is done, and the
    // same pass sends it (#13 item 10).
    assert!(
        got[1]["data"]
            .as_str()
            .unwrap()
            .contains("multipart/report"),
        "{got:?}"
    );
    assert_eq!(env.queued(), 1, "the message; the bounce went out");
    let q = env.relayq(&["queue"]);
    let text = String::from_utf8_lossy(&q.stdout);
    assert!(
        text.contains("slow@example.org") && text.contains("451 4.2.0 greylisted"),
        "{text}"
    );
    assert!(
        !text.contains("a@example.org"),
        "delivered recipients are not listed: {text}"
    );
    // The relay recovers: slow@ gets it, once; bad@ is bounced to the sender (here the
    // configured sender's mail goes to the admin) with the relay's reply.
    relay.set_faults(r#"{"rcpt": {"bad@example.org": "550 5.1.1 no such user"}}"#);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(env.flush().status.success());
    let got = relay.arrived();
    let to_slow: Vec<_> = got
        .iter()
        .filter(|m| rcpts_of(m) == ["slow@example.org"])
        .collect();
    assert_eq!(to_slow.len(), 1, "{got:?}");
    let bounces: Vec<_> = got
        .iter()
        .filter(|m| m["data"].as_str().unwrap().contains("multipart/report"))
        .collect();
    assert_eq!(
        bounces.len(),
        1,
        "bounced once, not again at the end: {got:?}"
    );
    let b = bounces[0]["data"].as_str().unwrap();
    assert!(
        b.contains("Final-Recipient: rfc822; bad@example.org")
            && b.contains("550 5.1.1 no such user"),
        "{b}"
    );
    assert!(
        b.contains("Delivery to its other 1 recipient(s) is still being attempted")
            && !b.contains("slow@example.org"),
        "{b}"
    );
    assert!(
        b.contains("Subject: mixed"),
        "original headers included: {b}"
    );
    assert_eq!(rcpts_of(bounces[0]), ["admin@example.com"]);
    assert_eq!(env.queued(), 0);
    assert_eq!(env.count("failed"), 1);
    // Every recipient got it exactly once.
    for r in ["a@example.org", "c@example.org", "slow@example.org"] {
        assert_eq!(
            got.iter()
                .filter(|m| rcpts_of(m).contains(&r.to_string()))
                .count(),
            1,
            "{r}"
        );
    }
}

#[test]
fn tempfail_at_mail_keeps_mail_then_delivers_once() {
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    relay.set_faults(r#"{"mail": "451 4.3.0 try later"}"#);
    env.send(&["a@example.org"], "later");
    assert!(env.flush().status.success());
    assert!(relay.arrived().is_empty());
    assert_eq!(env.queued(), 1);
    assert_eq!(env.count("failed"), 0);
    delivered_once_recovered(&env, &relay);
}

/// The relay recovers: a later pass delivers the one queued message, once.
fn delivered_once_recovered(env: &Env, relay: &Relay) {
    relay.set_faults("{}");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(env.flush().status.success());
    assert_eq!(relay.arrived().len(), 1);
    assert_eq!(env.queued(), 0);
}

#[test]
fn permanent_failures_bounce_never_retry() {
    for (fault, what) in [
        // Once: the bounce, sent in the same pass, is accepted.
        (
            r#"{"mail": "550 5.7.1 sender not verified", "count": 1}"#,
            "mail",
        ),
        (
            r#"{"data": "554 5.3.0 no DATA for you", "count": 1}"#,
            "data",
        ),
        (
            r#"{"dot": "554 5.6.0 content rejected", "count": 1}"#,
            "dot",
        ),
    ] {
        let (env, relay) = setup(RelayOpts::default(), "smtp");
        relay.set_faults(fault);
        // An application's own sender: a refusal at MAIL is about this message (the
        // configured sender refused is a configuration problem, see below).
        let msg = format!("Subject: {what}\n\nbody\n");
        let o = env.sendmail(&["-f", "app@example.net", "a@example.org"], msg.as_bytes());
        assert!(o.status.success(), "{}", stderr(&o));
        // One pass: the original fails, its bounce is queued and sent (#13 item 10).
        assert!(env.flush().status.success());
        assert_eq!(env.count("failed"), 1, "{what}: original kept in failed/");
        let got = relay.arrived();
        assert_eq!(got.len(), 1, "{what}: only the bounce arrives: {got:?}");
        assert!(
            got[0]["data"].as_str().unwrap().contains("Action: failed"),
            "{what}"
        );
        assert_eq!(env.queued(), 0, "{what}");
    }
}

#[test]
fn tempfail_after_dot_and_disconnect_mid_data_are_retried() {
    for fault in [
        r#"{"dot": "451 4.3.0 queue full"}"#,
        r#"{"disconnect_at": "middata"}"#,
        r#"{"disconnect_at": "rcpt"}"#,
    ] {
        let (env, relay) = setup(RelayOpts::default(), "smtp");
        relay.set_faults(fault);
        env.send(&["a@example.org", "b@example.org"], "retry");
        assert!(env.flush().status.success());
        assert!(relay.arrived().is_empty(), "{fault}");
        assert_eq!(env.queued(), 1, "{fault}");
        relay.set_faults("{}");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(env.flush().status.success());
        let got = relay.arrived();
        assert_eq!(got.len(), 1, "{fault}: {got:?}");
        assert_eq!(rcpts_of(&got[0]), ["a@example.org", "b@example.org"]);
        assert_eq!(env.queued(), 0);
        assert_eq!(env.count("failed"), 0);
    }
}

#[test]
fn stalled_relay_times_out_and_keeps_mail() {
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    relay.set_faults(r#"{"stall_at": "mail", "stall_seconds": 30}"#);
    env.send(&["a@example.org"], "stall");
    let t = std::time::Instant::now();
    assert!(env.flush().status.success());
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "command_timeout (5 s) bounds the stall"
    );
    assert_eq!(env.queued(), 1);
    assert!(relay.arrived().is_empty());
}

#[test]
fn configuration_problems_keep_mail_and_say_why() {
    // Wrong password, untrusted certificate, wrong host name, no STARTTLS offered.
    let cases: Vec<(RelayOpts, &str, &str)> = vec![
        (
            RelayOpts {
                auth: Some("user:other"),
                ..Default::default()
            },
            "smtp",
            "authentication failed",
        ),
        (
            RelayOpts {
                cert: "untrusted",
                ..Default::default()
            },
            "smtp",
            "certificate",
        ),
        (
            RelayOpts {
                cert: "wrongname",
                ..Default::default()
            },
            "smtp",
            "certificate",
        ),
        (
            RelayOpts {
                tls: "none",
                auth: None,
                ..Default::default()
            },
            "smtp",
            "STARTTLS",
        ),
    ];
    for (opts, scheme, want) in cases {
        let (env, relay) = setup(opts, scheme);
        env.send(&["a@example.org"], "cfg");
        let o = env.flush();
        assert!(o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains(want) && err.contains("configuration problem"),
            "want {want:?} in {err}"
        );
        assert!(!err.contains("secret"), "the password never appears: {err}");
        assert!(relay.arrived().is_empty());
        assert_eq!(env.queued(), 1, "mail kept");
        assert_eq!(env.count("failed"), 0, "never bounced for a config problem");
    }
}

#[test]
fn duplicate_window_is_at_least_once() {
    // The relay stores the message but drops the connection before its 250: relayq cannot
    // know, so it sends again. At least once, and at most twice here.
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    relay.set_faults(r#"{"dot_then_disconnect": true, "count": 1}"#);
    env.send(&["a@example.org"], "window");
    assert!(env.flush().status.success());
    std::thread::sleep(Duration::from_millis(1100));
    assert!(env.flush().status.success());
    let n = relay.arrived().len();
    assert!((1..=2).contains(&n), "{n}");
    assert_eq!(env.queued(), 0);
}

#[test]
fn daemon_wakes_on_new_mail_and_reuses_the_connection() {
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    let mut d = env.daemon();
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..5 {
        env.send(&["a@example.org"], &format!("wake {i}"));
        let got = relay.wait_for(i + 1, Duration::from_secs(10));
        assert_eq!(got.len(), i + 1, "message {i} delivered without polling");
    }
    assert!(
        relay.stat("connections") <= 2,
        "connections reused: {}",
        relay.stat("connections")
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = d.wait().unwrap();
    assert!(st.success());
    assert_eq!(env.queued(), 0);
}

#[test]
fn xoauth2_token_from_a_command() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        tmp.path(),
        RelayOpts {
            auth: None,
            extra: vec!["--xoauth2-token".into(), "tok-123".into()],
            ..Default::default()
        },
    );
    let toml = relay_toml("smtp", relay.port).replace(
        "password_file = \"PASSWORD_FILE\"",
        "auth = \"xoauth2\"\npassword_command = \"echo tok-123\"",
    );
    let env = Env::new(&toml, QUICK_RETRY);
    env.send(&["a@example.org"], "oauth");
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    let got = relay.arrived();
    assert_eq!(got.len(), 1, "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("tok-123"),
        "the token never appears in logs"
    );
    // A rejected token is a configuration problem: mail kept, not bounced.
    let toml = relay_toml("smtp", relay.port).replace(
        "password_file = \"PASSWORD_FILE\"",
        "auth = \"xoauth2\"\npassword_command = \"echo expired\"",
    );
    let env = Env::new(&toml, QUICK_RETRY);
    env.send(&["a@example.org"], "oauth2");
    let o = env.flush();
    assert!(
        stderr(&o).contains("authentication failed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.queued(), 1);
}

#[test]
fn failover_to_the_next_relay() {
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    // The primary is a closed port; the fallback is the real relay.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let text = std::fs::read_to_string(&env.cfg).unwrap();
    let primary = relay_toml("smtp", dead_port).replace(
        "PASSWORD_FILE",
        &env.path().join("password").display().to_string(),
    );
    let fallback = relay_toml("smtp", relay.port).replace(
        "PASSWORD_FILE",
        &env.path().join("password").display().to_string(),
    );
    let start = text.find("[relay]").unwrap();
    let end = text.find("[address]").unwrap();
    let new = format!(
        "{}[relay]\n{primary}\n\n[[fallback_relay]]\n{fallback}\n\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&env.cfg, new).unwrap();
    env.send(&["a@example.org"], "failover");
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(relay.arrived().len(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("unreachable"), "{}", stderr(&o));
    assert_eq!(env.queued(), 0);
}

#[test]
fn queue_lifetime_bounces_with_the_last_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = Env::new(
        &relay_toml("smtp", relay.port),
        "[queue]\nretry_min = 1\nretry_max = 1\nlifetime = 2",
    );
    relay.set_faults(r#"{"rcpt": {"slow@example.org": "451 4.2.0 greylisted"}}"#);
    env.send(&["slow@example.org"], "expire");
    assert!(env.flush().status.success());
    assert_eq!(env.queued(), 1);
    std::thread::sleep(Duration::from_millis(2200));
    assert!(env.flush().status.success()); // expires it, queues the bounce and sends it
    let got = relay.arrived();
    assert_eq!(got.len(), 1, "{got:?}");
    let b = got[0]["data"].as_str().unwrap();
    assert!(
        b.contains("Final-Recipient: rfc822; slow@example.org")
            && b.contains("451 4.2.0 greylisted")
            && b.contains("expired"),
        "{b}"
    );
    assert_eq!(env.count("failed"), 1);
    assert_eq!(env.queued(), 0);
}

#[test]
fn tempfail_at_data_is_retried() {
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    relay.set_faults(r#"{"data": "451 4.3.0 not now"}"#);
    env.send(&["a@example.org"], "data451");
    assert!(env.flush().status.success());
    assert!(relay.arrived().is_empty());
    assert_eq!((env.queued(), env.count("failed")), (1, 0));
    delivered_once_recovered(&env, &relay);
}

#[test]
fn sighup_reload_keeps_old_config_when_new_is_bad() {
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    let mut d = env.daemon();
    std::thread::sleep(Duration::from_millis(500));
    let good = std::fs::read_to_string(&env.cfg).unwrap();
    std::fs::write(&env.cfg, format!("{good}\nbogus_key = 1\n")).unwrap();
    let pid = nix::unistd::Pid::from_raw(d.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Put the good file back (sendmail reads it too) without telling the daemon: it must
    // still be relaying with the configuration it kept.
    std::fs::write(&env.cfg, &good).unwrap();
    env.send(&["a@example.org"], "after bad reload");
    assert_eq!(
        relay.wait_for(1, Duration::from_secs(10)).len(),
        1,
        "still relaying with the old config"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(d.wait().unwrap().success());
    let log = env.daemon_log();
    assert!(
        log.contains("reload failed, keeping the old configuration") && log.contains("bogus_key"),
        "{log}"
    );
    assert!(log.contains("configuration reloaded"), "{log}");
}

#[test]
fn sendmail_q_filters_by_domain_and_sender() {
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    env.send(&["a@one.example"], "to one");
    env.send(&["b@two.example"], "to two");
    let o = env.sendmail(&["-qRone.example"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let got = relay.arrived();
    assert_eq!(got.len(), 1);
    assert_eq!(rcpts_of(&got[0]), ["a@one.example"]);
    assert_eq!(env.queued(), 1);
    let o = env.sendmail(&["-qSnobody@else"], b"");
    assert!(o.status.success());
    assert_eq!(relay.arrived().len(), 1, "sender filter matched nothing");
    let o = env.sendmail(&["-q"], b"");
    assert!(o.status.success());
    assert_eq!(relay.arrived().len(), 2);
    assert_eq!(env.queued(), 0);
}

#[test]
fn crafted_spool_files_are_set_aside_never_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = Env::with(
        "max_message_size = 65536\n",
        &relay_toml("smtp", relay.port),
        QUICK_RETRY,
    );
    let new = env.spool("new");
    let head = "relayq-envelope 1\nsender <s@example.com>\n";
    let crafted: Vec<(&str, Vec<u8>)> = vec![
        ("0000000000000000000001", b"relayq-envelope 1\nsender <s@example.com>\nrcpt <a@exam".to_vec()),
        ("0000000000000000000002", b"not a queue file\n".to_vec()),
        ("0000000000000000000003", format!("{head}rcpt <a@example.org>\r\nrcpt <evil@example.org>\nend\nSubject: x\r\n\r\nx\r\n").into_bytes()),
        ("0000000000000000000004", format!("{head}rcpt <a@example.org> notify=NEVER evil=1\nend\n").into_bytes()),
        ("0000000000000000000005", {
            let mut v = head.as_bytes().to_vec();
            for i in 0..20_000 {
                v.extend_from_slice(format!("rcpt <r{i}@example.org>\n").as_bytes());
            }
            v.extend_from_slice(b"end\nSubject: many\r\n\r\nx\r\n");
            v
        }),
        ("0000000000000000000006", {
            let mut v = format!("{head}rcpt <big@example.org>\nend\nSubject: big\r\n\r\n").into_bytes();
            v.extend(std::iter::repeat_n(b'x', 8 << 20));
            v
        }),
        ("../../escape", b"x".to_vec()),
    ];
    for (name, data) in &crafted {
        if name.contains('/') {
            continue;
        }
        std::fs::write(new.join(name), data).unwrap();
    }
    std::os::unix::fs::symlink("/etc/passwd", new.join("0000000000000000000007")).unwrap();
    std::fs::create_dir(new.join("0000000000000000000008")).unwrap();
    // And one good message with thousands of recipients.
    let mut good = head.as_bytes().to_vec();
    for i in 0..3000 {
        good.extend_from_slice(format!("rcpt <many{i}@example.org>\n").as_bytes());
    }
    good.extend_from_slice(b"end\nSubject: fine\r\n\r\nok\r\n");
    std::fs::write(new.join("0000000000000000000009"), &good).unwrap();
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    let got = relay.arrived();
    assert_eq!(got.len(), 1, "only the good message is delivered");
    assert_eq!(rcpts_of(&got[0]).len(), 3000);
    assert!(
        rcpts_of(&got[0]).iter().all(|r| r.starts_with("many")),
        "nothing outside the envelope"
    );
    assert!(stderr(&o).contains("moved to corrupt/"), "{}", stderr(&o));
    assert_eq!(env.count("corrupt"), 8, "{}", stderr(&o));
    let st = env.relayq(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["corrupt"], 8, "status counts what was set aside: {st}");
    assert_eq!(env.queued(), 0);
    assert!(
        std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains("root:"),
        "the symlink target is untouched"
    );
}

#[test]
fn one_deliverer_per_spool() {
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    let mut d = env.daemon_listening();
    // A second daemon refuses to start (exit 75) rather than deliver the same queue.
    let o = std::process::Command::new(BIN)
        .arg("-C")
        .arg(&env.cfg)
        .args(["daemon", "--foreground"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("another relayq daemon"),
        "{}",
        stderr(&o)
    );
    // A flush asks the running daemon instead of delivering itself.
    let o = env.flush();
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("the daemon is flushing"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    env.send(&["a@example.org"], "once");
    assert_eq!(relay.wait_for(1, Duration::from_secs(10)).len(), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(relay.arrived().len(), 1, "sent once");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(d.wait().unwrap().success());
}

fn status_json(env: &Env, stuck_after: &str) -> (Option<i32>, serde_json::Value) {
    let o = env.relayq(&["status", "--json", "--stuck-after", stuck_after]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_default();
    (o.status.code(), v)
}

/// Poll `relayq status --json` (bounded) until `want` holds for its `relay` object.
fn wait_relay(env: &Env, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let v = status_json(env, "1h").1;
        if want(&v["relay"]) || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(d: &mut std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = d.wait();
}

#[test]
fn relay_down_shows_in_status_mailq_and_show() {
    // The relay's password is not ours: authentication fails, relay-wide.
    let (env, relay) = setup(
        RelayOpts {
            auth: Some("user:other"),
            ..Default::default()
        },
        "smtp",
    );
    let (_, v) = status_json(&env, "1h");
    assert!(v["relay"].is_null(), "nothing recorded yet: {v}");
    env.send(&["a@example.org"], "down");
    assert!(env.flush().status.success());
    let (_, v) = status_json(&env, "1h");
    let r = &v["relay"];
    assert_eq!(r["up"], false, "{v}");
    let reason = r["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("authentication failed: 535 5.7.8"),
        "{v}"
    );
    assert!(!v.to_string().contains("secret"), "no password text: {v}");
    let since = r["down_since"].as_u64().expect("down_since");
    assert!(relayq::daemon::now().abs_diff(since) < 60, "{v}");
    assert!(r["next_try"].as_u64().is_some_and(|t| t >= since), "{v}");
    let file = std::fs::read_to_string(env.spool("run/relay")).unwrap();
    assert!(!file.contains("secret"), "{file}");
    // Text status: the relay line.
    let o = env.relayq(&["status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("relay:         down since ")
            && out.contains("): authentication failed: 535")
            && out.contains("; next try "),
        "{out}"
    );
    // mailq: one line on top; the message shows the reason, the layout is unchanged.
    let q = env.relayq(&["queue"]);
    let text = String::from_utf8_lossy(&q.stdout);
    let mut lines = text.lines();
    let top = lines.next().unwrap_or("");
    assert!(
        top.starts_with("-- relay down since ") && top.contains(": authentication failed: 535"),
        "{text}"
    );
    assert!(
        lines.next().unwrap_or("").starts_with("-Queue ID-"),
        "{text}"
    );
    assert!(text.contains("(authentication failed: 535"), "{text}");
    let j = env.relayq(&["queue", "--json"]);
    let j = String::from_utf8_lossy(&j.stdout);
    assert!(
        !j.contains("relay down") && !j.contains("delay_reason"),
        "JSON lines unchanged: {j}"
    );
    let id = serde_json::from_str::<serde_json::Value>(j.lines().next().unwrap_or("{}"))
        .unwrap_or_default()["queue_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let o = env.relayq(&["show", &id]);
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown.contains("Recipient: <a@example.org> queued (authentication failed: 535"),
        "{shown}"
    );
    // Exit 1 once the relay has been down longer than --stuck-after, even with nothing
    // waiting in the queue (the message is held here: held mail still needs the relay; an
    // empty spool holds nothing up), and 0 before.
    assert!(env.relayq(&["hold", "--all"]).status.success());
    let (code, v) = status_json(&env, "0s");
    assert_eq!(
        (code, &v["stuck"]),
        (Some(1), &serde_json::json!(false)),
        "{v}"
    );
    assert_eq!(v["relay"]["stuck"], true, "{v}");
    assert_eq!(status_json(&env, "1h").0, Some(0));
    let prom = env.path().join("relayq.prom");
    env.relayq(&["status", "--metrics", prom.to_str().unwrap()]);
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(m.contains("\nrelayq_relay_up 0\n"), "{m}");
    assert!(env.relayq(&["release", "--all"]).status.success());
    // A second flush keeps the first failure's time.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(env.flush().status.success());
    assert_eq!(status_json(&env, "1h").1["relay"]["down_since"], since);
    // With the mail deleted nothing retries the relay: status says it was last seen down,
    // not that a next try is due, and that is not stuck.
    let spare = env.path().join("spare");
    std::fs::create_dir_all(&spare).unwrap();
    let queued: Vec<_> = std::fs::read_dir(env.spool("queue"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for p in &queued {
        std::fs::rename(p, spare.join(p.file_name().unwrap())).unwrap();
    }
    let o = env.relayq(&["status", "--stuck-after", "0s"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("relay:         last seen down since ")
            && out.contains("(no mail waiting: the next message tries it again)")
            && !out.contains("next try"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(0), "{out}");
    for p in &queued {
        std::fs::rename(spare.join(p.file_name().unwrap()), p).unwrap();
    }
    // Fixed: the relay is up, the mail delivered, the listing back to normal.
    std::fs::write(env.path().join("password"), "other\n").unwrap();
    assert!(env.flush().status.success());
    assert_eq!(relay.arrived().len(), 1);
    assert_eq!(env.queued(), 0);
    let (code, v) = status_json(&env, "0s");
    assert_eq!(v["relay"]["up"], true, "{v}");
    assert!(
        v["relay"]["reason"].is_null() && v["relay"]["down_since"].is_null(),
        "{v}"
    );
    assert_eq!(code, Some(0), "{v}");
    let out = String::from_utf8_lossy(&env.relayq(&["status"]).stdout).into_owned();
    assert!(out.contains("relay:         up\n"), "{out}");
    env.relayq(&["status", "--metrics", prom.to_str().unwrap()]);
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(m.contains("\nrelayq_relay_up 1\n"), "{m}");
}

#[test]
fn daemon_records_wrong_password_and_recovers_on_sighup() {
    let (env, relay) = setup(
        RelayOpts {
            auth: Some("user:other"),
            ..Default::default()
        },
        "smtp",
    );
    let mut d = env.daemon();
    env.send(&["a@example.org"], "wrong password");
    let v = wait_relay(&env, |r| r["up"] == false);
    assert!(
        v["relay"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("authentication")),
        "{v}"
    );
    assert!(!v.to_string().contains("secret"), "{v}");
    assert_eq!(status_json(&env, "0s").0, Some(1));
    let q = env.relayq(&["queue"]);
    let text = String::from_utf8_lossy(&q.stdout);
    assert!(text.starts_with("-- relay down since "), "{text}");
    assert!(relay.arrived().is_empty());
    std::fs::write(env.path().join("password"), "other\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let got = relay.wait_for(1, Duration::from_secs(10));
    let v = wait_relay(&env, |r| r["up"] == true);
    stop(&mut d);
    assert_eq!(got.len(), 1, "{}", env.daemon_log());
    assert_eq!(v["relay"]["up"], true, "{v}");
    assert_eq!(env.queued(), 0);
    assert_eq!(env.count("failed"), 0);
}

#[test]
fn refused_configured_sender_keeps_mail_queued() {
    // SES-style: the configured sender is not verified. Nothing may bounce (the bounce would
    // be refused too): the mail waits, and status says why.
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    relay.set_faults(r#"{"mail": "554 5.7.1 Email address is not verified"}"#);
    let mut d = env.daemon();
    env.send(&["a@example.org", "b@example.org"], "unverified");
    env.send(&["c@example.org"], "unverified 2");
    let v = wait_relay(&env, |r| r["up"] == false);
    assert_eq!(
        v["relay"]["reason"],
        "the relay refuses the sender <server@example.com>: 554 5.7.1 Email address is not verified",
        "{v}"
    );
    // Give it the time a bounce would take to appear.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(env.count("failed"), 0, "nothing failed");
    assert_eq!(env.queued(), 2, "both messages kept");
    assert!(relay.arrived().is_empty(), "no bounce");
    let q = String::from_utf8_lossy(&env.relayq(&["queue"]).stdout).into_owned();
    assert!(
        q.starts_with("-- relay down since ")
            && q.contains("(the relay refuses the sender <server@example.com>"),
        "{q}"
    );
    // Fixed at the provider: a flush retries now, and everything goes out once.
    relay.set_faults("{}");
    assert!(env.flush().status.success());
    let got = relay.wait_for(2, Duration::from_secs(10));
    let v = wait_relay(&env, |r| r["up"] == true);
    stop(&mut d);
    let log = env.daemon_log();
    assert_eq!(got.len(), 2, "{log}");
    assert_eq!(
        got.iter()
            .map(subject_of)
            .collect::<std::collections::BTreeSet<_>>(),
        ["unverified".to_string(), "unverified 2".to_string()].into(),
    );
    assert_eq!(v["relay"]["up"], true, "{v}");
    assert_eq!((env.queued(), env.count("failed")), (0, 0));
    assert!(
        log.contains("refuses the sender <server@example.com>")
            && log.contains("verify server@example.com")
            && log.contains("[address] sender"),
        "{log}"
    );
    assert!(!log.contains("status=bounced"), "{log}");
}

/// A relay that greylists slow@example.org for good, and a spool with quick retries and
/// `queue_extra` (e.g. `warn_after = 2`).
fn greylisting(queue_extra: &str) -> (Env, Relay) {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = Env::new(
        &relay_toml("smtp", relay.port),
        &format!("[queue]\nretry_min = 1\nretry_max = 2\nidle_timeout = 3\n{queue_extra}"),
    );
    std::mem::forget(tmp);
    relay.set_faults(r#"{"rcpt": {"slow@example.org": "451 4.2.0 greylisted"}}"#);
    (env, relay)
}

fn delay_dsns(relay: &Relay) -> Vec<serde_json::Value> {
    relay
        .arrived()
        .into_iter()
        .filter(|m| m["data"].as_str().unwrap_or("").contains("Action: delayed"))
        .collect()
}

/// Wait (bounded) until the relay has seen `n` more RCPT commands: retries happened.
fn wait_for_retries(relay: &Relay, n: u64) {
    let want = relay.stat("rcpt_commands") + n;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while relay.stat("rcpt_commands") < want {
        assert!(
            std::time::Instant::now() < deadline,
            "no retries: {} RCPTs, want {want}",
            relay.stat("rcpt_commands")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_delay_dsns(relay: &Relay, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = delay_dsns(relay);
        if d.len() >= n || std::time::Instant::now() > deadline {
            return d;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn term(d: &mut std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(d.wait().unwrap().success());
}

#[test]
fn delay_warning_once_for_the_delayed_recipient_across_retries_and_restarts() {
    let (env, relay) = greylisting("warn_after = 2");
    let o = env.sendmail(
        &["-f", "app@example.net", "a@example.org", "slow@example.org"],
        b"Subject: slowpoke\n\nbody of slowpoke\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut d = env.daemon();
    let got = relay.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "a@ is delivered at once");
    assert_eq!(rcpts_of(&got[0]), ["a@example.org"]);
    let dsns = wait_for_delay_dsns(&relay, 1);
    assert_eq!(dsns.len(), 1, "{}", env.daemon_log());
    let w = &dsns[0];
    // To whoever would get the bounce: the sender (not the configured sender), from the
    // verified sender.
    assert_eq!(rcpts_of(w), ["app@example.net"]);
    assert_eq!(w["mail_from"], "server@example.com");
    let text = w["data"].as_str().unwrap();
    for want in [
        "Subject: Delayed Mail (still being retried)",
        "Content-Type: multipart/report; report-type=delivery-status",
        "THIS IS A WARNING ONLY",
        "relayq will keep trying until ",
        "Final-Recipient: rfc822; slow@example.org\r\nAction: delayed\r\nStatus: 4.2.0\r\n",
        "Diagnostic-Code: smtp; 451 4.2.0 greylisted",
        "Will-Retry-Until: ",
        "Content-Type: text/rfc822-headers",
        "Subject: slowpoke",
    ] {
        assert!(text.contains(want), "want {want:?} in {text}");
    }
    assert!(
        !text.contains("a@example.org"),
        "only the delayed recipient is named: {text}"
    );
    assert!(
        !text.contains("body of slowpoke"),
        "headers only, no body: {text}"
    );
    assert!(
        env.daemon_log().contains(": sender delay notification: "),
        "{}",
        env.daemon_log()
    );
    // More retries, a restart (SIGTERM), a crash (SIGKILL): still one warning.
    wait_for_retries(&relay, 2);
    term(&mut d);
    let mut d = env.daemon();
    wait_for_retries(&relay, 2);
    let _ = d.kill();
    let _ = d.wait();
    let mut d = env.daemon();
    wait_for_retries(&relay, 2);
    assert_eq!(delay_dsns(&relay).len(), 1, "{}", env.daemon_log());
    assert_eq!(env.queued(), 1, "slow@ is still queued");
    // The relay relents: slow@ gets it once, nobody gets a bounce.
    relay.set_faults("{}");
    let got = relay.wait_for(3, Duration::from_secs(15));
    assert_eq!(
        got.iter()
            .filter(|m| rcpts_of(m) == ["slow@example.org"])
            .count(),
        1,
        "{got:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    term(&mut d);
    assert_eq!(relay.arrived().len(), 3, "{:?}", relay.arrived());
    assert_eq!(delay_dsns(&relay).len(), 1);
    assert_eq!((env.queued(), env.count("failed")), (0, 0));
}

#[test]
fn no_delay_warning_when_notify_excludes_delay() {
    let (env, relay) = greylisting("warn_after = 2");
    for (notify, subject) in [
        ("never", "never"),
        ("success,failure", "nodelay"),
        ("failure,delay", "control"),
    ] {
        let o = env.sendmail(
            &["-f", "app@example.net", "-N", notify, "slow@example.org"],
            format!("Subject: {subject}\n\nx\n").as_bytes(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mut d = env.daemon();
    // The one that asked for delay notifications gets one; once it is in, so would the
    // others have been (same arrival, same daemon).
    let dsns = wait_for_delay_dsns(&relay, 1);
    assert_eq!(dsns.len(), 1, "{}", env.daemon_log());
    wait_for_retries(&relay, 3);
    term(&mut d);
    let dsns = delay_dsns(&relay);
    assert_eq!(dsns.len(), 1, "{dsns:?}");
    let text = dsns[0]["data"].as_str().unwrap();
    assert!(text.contains("Subject: control"), "{text}");
    assert_eq!(
        env.daemon_log()
            .matches("no delay notification (NOTIFY excludes DELAY)")
            .count(),
        2,
        "{}",
        env.daemon_log()
    );
    assert_eq!(env.queued(), 3);
}

#[test]
fn flush_sends_due_delay_warnings_and_none_without_warn_after() {
    for warn in [true, false] {
        let (env, relay) = greylisting(if warn { "warn_after = \"2s\"" } else { "" });
        env.send(&["slow@example.org"], "flushed");
        assert!(env.flush().status.success());
        std::thread::sleep(Duration::from_millis(2200));
        let o = env.flush(); // retries, then queues the warning (when due) and sends it
        assert!(o.status.success());
        assert_eq!(
            stderr(&o).contains("sender delay notification"),
            warn,
            "{}",
            stderr(&o)
        );
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(1100));
            assert!(env.flush().status.success()); // delivers it; no second one
        }
        let dsns = delay_dsns(&relay);
        assert_eq!(dsns.len(), usize::from(warn), "warn_after set: {warn}");
        assert!(relay.stat("rcpt_commands") >= 4, "the retries ran");
        if warn {
            // The local account's mail went out as the configured sender: the admin's.
            assert_eq!(rcpts_of(&dsns[0]), ["admin@example.com"]);
        }
        assert_eq!(env.queued(), 1);
    }
}

#[test]
fn delay_warning_while_the_relay_is_unreachable() {
    // The classic case: the smarthost is down, nothing is even tried per message, and the
    // sender still hears after warn_after that the mail is waiting.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let env = Env::new(
        &relay_toml("smtp", port),
        "[queue]\nretry_min = 1\nretry_max = 2\nwarn_after = 2",
    );
    env.send(&["a@example.org"], "outage");
    let mut d = env.daemon();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !env.daemon_log().contains("sender delay notification") {
        assert!(
            std::time::Instant::now() < deadline,
            "no warning during the outage: {}",
            env.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    term(&mut d);
    let log = env.daemon_log();
    assert!(log.contains("unreachable"), "{log}");
    assert_eq!(log.matches("sender delay notification").count(), 1, "{log}");
    // The original and the warning wait in the queue for the relay.
    assert_eq!(env.queued(), 2);
    // The warning may not have left new/ yet when the daemon stopped: read new/, queue/
    // and the journals.
    let texts: Vec<String> = ["new", "queue", "journal"]
        .iter()
        .flat_map(|d| std::fs::read_dir(env.spool(d)).unwrap())
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    let warning = texts
        .iter()
        .find(|t| t.contains("Action: delayed"))
        .unwrap_or_else(|| panic!("the warning is queued: {texts:?}"));
    assert!(
        warning.contains("Final-Recipient: rfc822; a@example.org")
            && warning.contains("Status: 4.0.0")
            && warning.contains("rcpt <admin@example.com>"),
        "{warning}"
    );
    assert!(
        texts.iter().any(|t| t.lines().any(|l| l.starts_with("w "))),
        "journaled: {texts:?}"
    );
}

#[test]
fn reload_moves_to_the_new_relay_at_once() {
    // An idle connection to the old relay must not carry the next message after SIGHUP.
    let (env, old) = setup(RelayOpts::default(), "smtp");
    let tmp = tempfile::tempdir().unwrap();
    let new = Relay::start(tmp.path(), RelayOpts::default());
    let mut d = env.daemon();
    env.send(&["a@example.org"], "before");
    assert_eq!(old.wait_for(1, Duration::from_secs(10)).len(), 1);
    let text = std::fs::read_to_string(&env.cfg).unwrap();
    let moved = text.replace(
        &format!("localhost:{}", old.port),
        &format!("localhost:{}", new.port),
    );
    assert_ne!(text, moved);
    std::fs::write(&env.cfg, moved).unwrap();
    let pid = nix::unistd::Pid::from_raw(d.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !env.daemon_log().contains("configuration reloaded") {
        assert!(std::time::Instant::now() < deadline, "{}", env.daemon_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    env.send(&["b@example.org"], "after");
    let got = new.wait_for(1, Duration::from_secs(10));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = d.wait();
    assert_eq!(got.len(), 1, "{}", env.daemon_log());
    assert_eq!(subject_of(&got[0]), "after");
    assert_eq!(old.arrived().len(), 1, "nothing more through the old relay");
}

#[test]
fn bounces_follow_notify_and_ret() {
    // RFC 3461: NOTIFY=NEVER (or a list without FAILURE) means no bounce; RET=FULL returns
    // the whole message, RET=HDRS and no RET its headers only.
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    relay.set_faults(r#"{"rcpt": {"bad@example.org": "550 5.1.1 no such user"}}"#);
    for (args, subject) in [
        (&["-N", "never"][..], "never"),
        (&["-N", "success,delay"][..], "nofailure"),
        (&["-R", "full", "-N", "failure"][..], "full"),
        (&["-R", "hdrs"][..], "hdrs"),
        (&[][..], "default"),
    ] {
        let mut argv = vec!["-f", "app@example.net"];
        argv.extend_from_slice(args);
        argv.push("bad@example.org");
        let msg = format!("Subject: {subject}\n\nthe body of {subject}, caf\u{e9}\n");
        let o = env.sendmail(&argv, msg.as_bytes());
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(env.count("failed"), 5, "every original kept in failed/");
    assert_eq!(
        stderr(&o)
            .matches("no bounce (NOTIFY excludes FAILURE)")
            .count(),
        2,
        "{}",
        stderr(&o)
    );
    // The same pass sends the three bounces it queued (#13 item 10).
    assert_eq!(env.queued(), 0, "three bounces queued and sent");
    let got = relay.arrived();
    assert_eq!(got.len(), 3, "{got:?}");
    let bounce = |subject: &str| {
        let want = format!("Subject: {subject}\r\n");
        got.iter()
            .map(|m| m["data"].as_str().unwrap().to_string())
            .find(|d| d.contains(&want))
            .unwrap_or_else(|| panic!("no bounce for {subject}: {got:?}"))
    };
    let full = bounce("full");
    assert!(
        full.contains("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n"),
        "{full}"
    );
    // The relay shows the bytes as latin-1: back to bytes, then the UTF-8 body is whole.
    let bytes: Vec<u8> = full.chars().map(|c| c as u32 as u8).collect();
    let text = String::from_utf8(bytes.clone()).expect("the body's UTF-8 is intact");
    assert!(text.contains("the body of full, caf\u{e9}\r\n"), "{text}");
    let parsed = mail_parser::MessageParser::default()
        .parse(&bytes[..])
        .unwrap();
    let inner = parsed
        .parts
        .iter()
        .find_map(|p| match &p.body {
            mail_parser::PartType::Message(m) => Some(m),
            _ => None,
        })
        .expect("an attached message");
    assert_eq!(inner.subject(), Some("full"));
    assert!(inner.body_text(0).unwrap().contains("the body of full"));
    for subject in ["hdrs", "default"] {
        let b = bounce(subject);
        assert!(b.contains("Content-Type: text/rfc822-headers"), "{b}");
        assert!(!b.contains("the body of"), "headers only: {b}");
    }
    assert_eq!(env.queued(), 0);
}

#[test]
fn non_ascii_addresses_use_smtputf8_or_fail_alone() {
    // A relay that offers SMTPUTF8 gets MAIL ... SMTPUTF8 and the UTF-8 address.
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    env.send(&["j\u{f6}rg@example.org", "a@example.org"], "utf8");
    assert!(env.flush().status.success());
    let got = relay.arrived();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["smtputf8"], true, "{got:?}");
    assert_eq!(
        rcpts_of(&got[0]),
        ["j\u{f6}rg@example.org", "a@example.org"]
    );

    // One that does not: the ASCII recipient is delivered (without SMTPUTF8), the other
    // fails alone with a clear reason and is bounced.
    let (env, relay) = setup(
        RelayOpts {
            extra: vec!["--no-smtputf8".into()],
            ..Default::default()
        },
        "smtp",
    );
    let o = env.sendmail(
        &[
            "-f",
            "app@example.net",
            "j\u{f6}rg@example.org",
            "a@example.org",
        ],
        b"Subject: utf8\n\nx\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.flush();
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("553 5.6.7 the relay does not offer SMTPUTF8"),
        "{}",
        stderr(&o)
    );
    // The same pass sends the bounce it queued.
    let got = relay.arrived();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(rcpts_of(&got[0]), ["a@example.org"]);
    assert_eq!(got[0]["smtputf8"], false);
    assert_eq!(rcpts_of(&got[1]), ["app@example.net"]);
    assert!(
        got[1]["data"].as_str().unwrap().contains("Status: 5.6.7"),
        "{got:?}"
    );
    assert_eq!(env.queued(), 0);
}

#[test]
fn pin_sha256_is_checked_before_auth() {
    let der = std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(ca_dir().join("server.pem"))
        .output()
        .unwrap();
    assert!(der.status.success());
    let hex: String = ring::digest::digest(&ring::digest::SHA256, &der.stdout)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let wrong = format!("{}00", &hex[..hex.len() - 2]);
    for (pin, delivered) in [(hex.as_str(), true), (wrong.as_str(), false)] {
        let tmp = tempfile::tempdir().unwrap();
        let relay = Relay::start(tmp.path(), RelayOpts::default());
        let cfg = format!("{}\npin_sha256 = \"{pin}\"", relay_toml("smtp", relay.port));
        let env = Env::new(&cfg, QUICK_RETRY);
        env.send(&["a@example.org"], "pinned");
        let o = env.flush();
        assert!(o.status.success());
        let err = stderr(&o);
        assert_eq!(
            relay.arrived().len(),
            usize::from(delivered),
            "{pin}: {err}"
        );
        if !delivered {
            assert!(
                err.contains("does not match pin_sha256") && err.contains("configuration problem"),
                "{err}"
            );
            assert_eq!(env.queued(), 1, "mail kept");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}

/// Queue files with bodies made of what ends DATA at one relay or another (CR, LF, dots,
/// SMTP commands), in any order: written straight into new/ as a local user could through
/// postdrop or the socket. The relay must see each message once, whole, re-framed (CRLF,
/// dot-stuffed), and no command the bodies carry.
#[test]
fn queue_file_bodies_cannot_end_data_early() {
    const N: usize = 40;
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    let pieces: [&[u8]; 9] = [
        b".",
        b"\r",
        b"\n",
        b"\r\n",
        b"\r\n.\r\n",
        b"MAIL FROM:<evil@example.org>",
        b"RCPT TO:<victim@example.org>",
        b"DATA",
        b"text ",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let mut bodies = Vec::new();
    for i in 0..N {
        let mut body = format!("Subject: crafted {i}\r\n\r\n").into_bytes();
        for _ in 0..next() % 60 {
            body.extend_from_slice(pieces[next() % pieces.len()]);
        }
        let mut file =
            format!("relayq-envelope 1\nsender <a@example.org>\nrcpt <m{i}@example.org>\nend\n")
                .into_bytes();
        file.extend_from_slice(&body);
        std::fs::write(env.spool("new").join(format!("{:022X}", i + 1)), &file).unwrap();
        bodies.push(body);
    }
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    let got = relay.arrived();
    assert_eq!(got.len(), N, "{got:?}");
    assert_eq!(relay.stat("mail_commands"), N as u64);
    for m in &got {
        let rcpt = &rcpts_of(m)[0];
        let i: usize = rcpt[1..rcpt.find('@').unwrap()].parse().unwrap();
        let mut wire = Vec::new();
        let mut frame = relayq::message::Reframe::default();
        frame.push(&bodies[i], &mut wire);
        frame.finish(&mut wire);
        wire.truncate(wire.len() - 3);
        let want: Vec<u8> = wire
            .split_inclusive(|&b| b == b'\n')
            .flat_map(|l| if l.starts_with(b".") { &l[1..] } else { l })
            .copied()
            .collect();
        let data: Vec<u8> = m["data"]
            .as_str()
            .unwrap()
            .chars()
            .map(|c| c as u8)
            .collect();
        // Our trace field first (two lines), then the message as re-framed.
        assert!(data.starts_with(b"Received: by "), "message {i}");
        let after_trace = data
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w == b"\r\n")
            .nth(1);
        let data = data[after_trace.unwrap().0 + 2..].to_vec();
        assert_eq!(
            String::from_utf8_lossy(&data),
            String::from_utf8_lossy(&want),
            "message {i}"
        );
    }
}

#[test]
fn a_nul_byte_is_bounced_not_sent_and_sigterm_is_prompt_with_the_relay_down() {
    let (env, relay) = setup(RelayOpts::default(), "smtp");
    // As a user could write it through postdrop: sendmail itself refuses a NUL.
    std::fs::write(
        env.spool("new").join("0000000000000000000000A"),
        b"relayq-envelope 1\nsender <server@example.com>\nrcpt <a@example.org>\nend\nSubject: nul\r\n\r\na\0b\r\n",
    )
    .unwrap();
    // One pass fails it and queues the bounce, the next sends the bounce.
    for _ in 0..2 {
        let o = env.flush();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let got = relay.arrived();
    assert_eq!(got.len(), 1, "{got:?}");
    // A bounce: local mail's go to the admin.
    assert_eq!(rcpts_of(&got[0]), ["admin@example.com"], "a bounce");
    assert!(got[0]["data"].as_str().unwrap().contains("NUL byte"));
    assert_eq!(env.count("failed"), 1);

    // The relay down, a message waiting for it: SIGTERM ends the daemon at once, nothing
    // being in flight (it used to wait 30 s).
    relay.set_faults(r#"{"connect": "421 4.3.2 down"}"#);
    let mut d = env.daemon_listening();
    env.send(&["b@example.org"], "waiting");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !env.daemon_log().contains("421") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut exited = d.try_wait().unwrap();
    while exited.is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        exited = d.try_wait().unwrap();
    }
    let _ = d.kill();
    let _ = d.wait();
    assert!(
        exited.is_some_and(|s| s.success()),
        "still running 10 s after SIGTERM"
    );
    assert_eq!(env.queued(), 1, "the message waits for the relay");
}
