//! Relays chosen by sender (`[[sender_relay]]`) against real test relays with different AUTH
//! credentials: each sender's mail arrives through its own relay only, a route whose relay
//! is down fails over to its own fallback and never to another route's relay, `relayq test
//! --from` tests the relay the address maps to, and a bad map is refused (exit 78).

mod support;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

/// The shop's password file (mode 0600) in `dir`.
fn shop_password(dir: &Path) -> PathBuf {
    let p = dir.join("shop.password");
    std::fs::write(&p, "shoppw\n").unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p
}

/// A `[[sender_relay]]` entry (or, with `table` = "sender_relay.fallback", its fallback)
/// for the shop's relay on `port`, as the shop's user.
fn shop_table(table: &str, senders: &str, port: u16, pw: &Path) -> String {
    let body = relay_toml("smtp", port)
        .replace("username = \"user\"", "username = \"shop\"")
        .replace("PASSWORD_FILE", &pw.display().to_string());
    format!("\n[[{table}]]\n{senders}{body}\n")
}

/// The company relay as [relay] and the shop's as the `[[sender_relay]]` for `senders` (one
/// pattern) with `shop_limits` (TOML lines, e.g. `daily = 2`), each started in a directory
/// of its own under `dir`.
fn company_and_shop(dir: &Path, senders: &str, shop_limits: &str) -> (Env, Relay, Relay) {
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let company = Relay::start(&a, RelayOpts::default());
    let shop = shop_relay(&b);
    let pw = shop_password(dir);
    let extra = shop_table(
        "sender_relay",
        &format!("senders = [\"{senders}\"]\n"),
        shop.port,
        &pw,
    ) + shop_limits;
    let env = Env::new(&relay_toml("smtp", company.port), &extra);
    (env, company, shop)
}

fn shop_relay(dir: &Path) -> Relay {
    Relay::start(
        dir,
        RelayOpts {
            auth: Some("shop:shoppw"),
            ..RelayOpts::default()
        },
    )
}

/// (sender, subject, auth user) of each message a relay took.
fn seen(r: &Relay) -> Vec<(String, String, String)> {
    r.arrived()
        .iter()
        .map(|m| {
            (
                m["mail_from"].as_str().unwrap_or("").to_ascii_lowercase(),
                subject_of(m),
                m["auth_user"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn send_as(env: &Env, from: &str, subject: &str) {
    let msg = format!("Subject: {subject}\n\nbody\n");
    let o = env.sendmail(&["-f", from, "to@example.net"], msg.as_bytes());
    assert!(o.status.success(), "sendmail: {}", stderr(&o));
}

#[test]
fn each_sender_goes_through_its_own_relay_and_fails_over_within_its_route() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["company", "shop", "shop2"]
        .iter()
        .map(|n| tmp.path().join(n))
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let company = Relay::start(&dirs[0], RelayOpts::default());
    let shop = shop_relay(&dirs[1]);
    let shop2 = shop_relay(&dirs[2]);
    let pw = shop_password(tmp.path());
    let senders = "senders = [\"*@shop.example\", \"alerts@example.org\"]\n";
    let extra = format!(
        "{}{}",
        shop_table("sender_relay", senders, shop.port, &pw),
        shop_table("sender_relay.fallback", "", shop2.port, &pw)
    );
    let env = Env::new(&relay_toml("smtp", company.port), &extra);

    send_as(&env, "orders@Shop.Example", "shop-1");
    send_as(&env, "alerts@example.org", "alerts-1");
    env.send(&["to@example.net"], "company-1");
    env.sendmail(
        &["-f", "other@example.org", "to@example.net"],
        b"Subject: other-1\n\nx\n",
    );
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut got = seen(&shop);
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "alerts@example.org".into(),
                "alerts-1".into(),
                "shop".into()
            ),
            ("orders@shop.example".into(), "shop-1".into(), "shop".into()),
        ],
        "the shop's senders through the shop's relay, as the shop"
    );
    let mut got = seen(&company);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("other@example.org".into(), "other-1".into(), "user".into()),
            (
                "server@example.com".into(),
                "company-1".into(),
                "user".into()
            ),
        ],
        "everyone else through [relay]"
    );

    // The shop's relay is down: its own fallback takes the shop's mail.
    drop(shop);
    send_as(&env, "orders@shop.example", "shop-2");
    env.send(&["to@example.net"], "company-2");
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        seen(&shop2),
        vec![("orders@shop.example".into(), "shop-2".into(), "shop".into())]
    );
    assert_eq!(company.wait_for(3, Duration::from_secs(5)).len(), 3);

    // Both of the shop's relays down: its mail waits, and never goes through the company's.
    drop(shop2);
    send_as(&env, "orders@shop.example", "shop-3");
    env.send(&["to@example.net"], "company-3");
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    let company_got = company.wait_for(4, Duration::from_secs(5));
    assert_eq!(company_got.len(), 4, "{:?}", seen(&company));
    assert!(
        seen(&company).iter().all(|(s, _, _)| !s.contains("shop")),
        "{:?}",
        seen(&company)
    );
    assert_eq!(
        env.queued(),
        1,
        "the shop's message waits for the shop's relays"
    );
    // relayq status names each route's state.
    let o = env.relayq(&["status"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("relay:         up") && out.contains("*@shop.example,alerts@example.org"),
        "{out}"
    );
    let shop_line = out
        .lines()
        .find(|l| l.contains("*@shop.example"))
        .unwrap_or("");
    assert!(shop_line.contains("down"), "{out}");
}

#[test]
fn the_daemon_keeps_each_routes_mail_on_its_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, company, shop) = company_and_shop(tmp.path(), "@shop.example", "");
    let mut d = env.daemon_listening();
    let threads = || {
        std::fs::read_to_string(format!("/proc/{}/status", d.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap()
    };
    // Idle: the main loop, the socket and its reaper; no worker for either route (they were
    // 2 × queue.connections = 40 threads).
    let idle = threads();
    assert!(idle <= 3, "idle daemon: {idle} threads");
    for i in 0..5 {
        send_as(&env, "orders@shop.example", &format!("shop-{i}"));
        env.send(&["to@example.net"], &format!("company-{i}"));
    }
    let shop_got = shop.wait_for(5, Duration::from_secs(20));
    let company_got = company.wait_for(5, Duration::from_secs(20));
    let busy = threads();
    assert!(busy > idle, "workers started for the mail: {busy}");
    let _ = d.kill();
    let _ = d.wait();
    assert_eq!(shop_got.len(), 5, "{}", env.daemon_log());
    assert_eq!(company_got.len(), 5, "{}", env.daemon_log());
    assert!(
        seen(&shop)
            .iter()
            .all(|(s, _, u)| s.ends_with("@shop.example") && u == "shop")
    );
    assert!(
        seen(&company)
            .iter()
            .all(|(s, _, u)| s == "server@example.com" && u == "user")
    );
}

#[test]
fn a_routes_daily_cap_holds_only_its_own_mail_and_counts_only_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, company, shop) = company_and_shop(tmp.path(), "@shop.example", "daily = 2\n");
    for i in 0..2 {
        env.send(&["to@example.net"], &format!("company-{i}"));
    }
    for i in 0..3 {
        send_as(&env, "orders@shop.example", &format!("shop-{i}"));
    }
    let mut d = env.daemon_listening();
    let shop_got = shop.wait_for(2, Duration::from_secs(20));
    assert_eq!(shop_got.len(), 2, "{}", env.daemon_log());
    // The shop's route reaches its cap (status says so) ...
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let o = env.relayq(&["status", "--json"]);
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("status: {}", stderr(&o)));
        if !v["rate_limits"][0]["waiting"].is_null() || std::time::Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // ... while the company's mail keeps flowing, sent after it too.
    for i in 2..5 {
        env.send(&["to@example.net"], &format!("company-{i}"));
    }
    let company_got = company.wait_for(5, Duration::from_secs(20));
    let q = env.relayq(&["queue", "--json"]);
    let mailq = String::from_utf8_lossy(&env.relayq(&["queue"]).stdout).into_owned();
    stop_daemon(&mut d);
    let log = env.daemon_log();
    assert_eq!(company_got.len(), 5, "{log}");
    assert!(
        seen(&company)
            .iter()
            .all(|(s, _, _)| s == "server@example.com")
    );
    assert_eq!(shop.arrived().len(), 2, "{log}");
    // Only the shop's relay is limited, and its count is its own 2 recipients, not the
    // company's 5 as well.
    let limits = status["rate_limits"].as_array().expect("rate_limits");
    assert_eq!(limits.len(), 1, "{status}");
    let shop_key = format!("smtp://shop@localhost:{}", shop.port);
    assert_eq!(
        limits[0]["relay"].as_str(),
        Some(shop_key.as_str()),
        "{status}"
    );
    assert_eq!(limits[0]["daily_count"].as_u64(), Some(2), "{status}");
    assert_eq!(
        limits[0]["waiting"].as_str(),
        Some("daily cap reached"),
        "{status}"
    );
    // The third shop message waits: queued, untried (no deferral, no backoff), no bounce.
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&q.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(e["sender"], "orders@shop.example", "{e}");
    assert_eq!(e["queue_name"], "active", "{e}");
    assert_eq!(e["recipients"][0]["state"], "queued", "{e}");
    assert!(e["next_attempt"].is_null(), "{e}");
    assert!(!log.contains("status=deferred"), "{log}");
    assert_eq!(env.count("failed"), 0);
    // mailq says why it waits.
    assert!(
        mailq.contains(&format!(
            "-- relay {shop_key} waiting for the rate limit (daily cap reached) until "
        )),
        "{mailq}"
    );
}

#[test]
fn relayq_test_from_tests_the_relay_the_sender_maps_to() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, company, shop) = company_and_shop(tmp.path(), "*@shop.example", "");
    let o = env.relayq(&["test", "--from", "orders@shop.example", "--no-send"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains(&format!("localhost:{}", shop.port)), "{out}");
    assert!(
        !out.contains(&format!("localhost:{}", company.port)),
        "{out}"
    );
    assert!(
        out.contains("accepted as shop") && out.contains("<orders@shop.example> accepted"),
        "{out}"
    );
    // Without --from: the configured sender's relay, the company's.
    let o = env.relayq(&["test", "--no-send"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.contains(&format!("localhost:{}", company.port)),
        "{out}"
    );
    assert!(out.contains("accepted as user"), "{out}");
    let o = env.relayq(&["test", "--from", "not an address"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
}

#[test]
fn overlapping_or_malformed_patterns_are_a_config_error() {
    for (senders, want) in [
        (
            "senders = [\"*@shop.example\"]\n",
            "*@shop.example is already in sender_relay[0]",
        ),
        ("senders = [\"shop.example\"]\n", "is not a sender pattern"),
    ] {
        let pw = Path::new("/nonexistent");
        let extra = format!(
            "{}{}",
            shop_table("sender_relay", "senders = [\"@shop.example\"]\n", 1, pw),
            shop_table("sender_relay", senders, 2, pw)
        );
        let env_dir = tempfile::tempdir().unwrap();
        let cfg = env_dir.path().join("relayq.toml");
        std::fs::write(
            &cfg,
            format!("[relay]\nurl = \"smtps://relay.example:465\"\n{extra}"),
        )
        .unwrap();
        let o = std::process::Command::new(BIN)
            .arg("-C")
            .arg(&cfg)
            .args(["test", "--no-send"])
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(78), "{err}");
        assert!(
            err.contains(want) && err.trim().lines().count() == 1,
            "{err}"
        );
    }
}

#[test]
fn import_from_postfix_carries_the_sender_dependent_relays() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("etc/relayq.toml");
    let src = repo().join("tests/fixtures/import/postfix/by-sender");
    let o = std::process::Command::new(BIN)
        .arg("-C")
        .arg(&cfg_path)
        .args(["import", "--from", "postfix", "--path"])
        .arg(&src)
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let cfg = relayq::config::Config::parse(&text, &cfg_path).unwrap();
    for secret in ["Company-Secret-1", "Shop-Secret-2"] {
        assert!(
            !out.contains(secret) && !text.contains(secret),
            "{out}\n{text}"
        );
    }
    let r = cfg.relay.as_ref().unwrap();
    assert_eq!(r.url.as_deref(), Some("smtp://smtp.company.example:587"));
    assert_eq!(r.username.as_deref(), Some("company"));
    assert_eq!(cfg.sender_relay.len(), 1, "{text}");
    let s = &cfg.sender_relay[0];
    assert_eq!(
        s.senders,
        ["*@shop.example", "alerts@example.org"],
        "{text}"
    );
    assert_eq!(
        s.relay.url.as_deref(),
        Some("smtp://smtp.shop-mail.example:587")
    );
    assert_eq!(s.relay.username.as_deref(), Some("shop"));
    let pw = s.relay.password_file.clone().unwrap();
    assert_ne!(Some(&pw), r.password_file.as_ref(), "a file of its own");
    assert_eq!(std::fs::read_to_string(&pw).unwrap(), "Shop-Secret-2\n");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&pw).unwrap().permissions());
    assert!(matches!(mode & 0o777, 0o600 | 0o640), "{mode:o}");
    let main_pw = r.password_file.as_ref().unwrap();
    assert_eq!(
        std::fs::read_to_string(main_pw).unwrap(),
        "Company-Secret-1\n"
    );
    assert!(!out.contains("sender_dependent_relayhost_maps:"), "{out}");
}
