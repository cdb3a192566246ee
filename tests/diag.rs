//! `relayq test` against the real test relay: the good path and the usual mistakes, each
//! with its hint.

mod support;
use support::*;

fn test_cmd(env: &Env, args: &[&str]) -> (i32, String) {
    let mut a = vec!["test"];
    a.extend_from_slice(args);
    let o = env.relayq(&a);
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o)),
    )
}

#[test]
fn relayq_test_steps_and_hints() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    // Good: every step ok, a test message arrives, the password is never printed.
    let env = Env::new(&relay_toml("smtp", relay.port), "");
    let (code, out) = test_cmd(&env, &["--to", "check@example.org"]);
    assert_eq!(code, 0, "{out}");
    for step in [
        "dns", "tcp", "tls", "cert", "ehlo", "auth", "sender", "send",
    ] {
        assert!(out.contains(&format!("ok    {step}")), "{step}: {out}");
    }
    // The certificate as a newcomer needs it: who it is for, who vouches, when it ends
    // (the test CA's leaf lasts 3650 days).
    let cert = out.lines().find(|l| l.contains("ok    cert")).unwrap_or("");
    assert!(
        cert.contains("subject CN=localhost") && cert.contains("issuer CN=relayq test CA"),
        "{cert}"
    );
    let days: i64 = cert
        .rsplit_once('(')
        .and_then(|(_, d)| d.split_whitespace().next())
        .and_then(|d| d.parse().ok())
        .unwrap_or(-1);
    assert!((3000..=3650).contains(&days), "{cert}");
    assert!(!out.contains("secret"), "{out}");
    let got = relay.arrived();
    assert_eq!(got.len(), 1);
    assert_eq!(rcpts_of(&got[0]), ["check@example.org"]);
    // --no-send sends nothing.
    assert_eq!(test_cmd(&env, &["--no-send"]).0, 0);
    assert_eq!(relay.arrived().len(), 1);
    // Sender not verified (5xx at MAIL FROM).
    relay.set_faults(r#"{"mail": "554 5.7.1 Email address is not verified"}"#);
    let (code, out) = test_cmd(&env, &["--no-send"]);
    assert_eq!(code, 69, "{out}");
    assert!(
        out.contains("FAIL  sender") && out.contains("verify server@example.com"),
        "{out}"
    );
    relay.set_faults("{}");
    // Implicit TLS against a STARTTLS port.
    let env2 = Env::new(&relay_toml("smtps", relay.port), "");
    let (code, out) = test_cmd(&env2, &["--no-send"]);
    assert_eq!(code, 69);
    assert!(
        out.contains("FAIL  tls") && out.contains("smtp://localhost:"),
        "{out}"
    );
    // Wrong password.
    let env3 = Env::new(&relay_toml("smtp", relay.port), "");
    std::fs::write(env3.path().join("password"), "wrong\n").unwrap();
    let (code, out) = test_cmd(&env3, &["--no-send"]);
    assert_eq!(code, 69);
    assert!(
        out.contains("FAIL  auth") && out.contains("wrong username or password"),
        "{out}"
    );
    assert!(!out.contains("wrong\n"), "{out}");
    // Nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let env4 = Env::new(&relay_toml("smtp", port), "");
    let (code, out) = test_cmd(&env4, &["--no-send"]);
    assert_eq!(code, 69);
    assert!(
        out.contains("FAIL  tcp") && out.contains("nothing answers on port"),
        "{out}"
    );
    // A host that does not resolve (.invalid never does): a DNS step failure, with the hint
    // that says it is a name problem.
    let env5 = Env::new(
        &relay_toml("smtp", port).replace("localhost", "no-such-host.invalid"),
        "",
    );
    let (code, out) = test_cmd(&env5, &["--no-send"]);
    assert_eq!(code, 69, "{out}");
    assert!(
        out.contains("FAIL  dns") && out.contains("cannot resolve no-such-host.invalid"),
        "{out}"
    );
    assert!(out.contains("check the host name"), "{out}");
}

#[test]
fn relayq_test_plain_port_with_implicit_tls_expected() {
    // smtp:// (STARTTLS) against an implicit-TLS port: the greeting never comes.
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        tmp.path(),
        RelayOpts {
            tls: "implicit",
            ..Default::default()
        },
    );
    let env = Env::new(
        &relay_toml("smtp", relay.port).replace("command_timeout = 5", "command_timeout = 2"),
        "",
    );
    let (code, out) = test_cmd(&env, &["--no-send"]);
    assert_eq!(code, 69);
    assert!(out.contains("smtps://localhost:"), "{out}");
}
