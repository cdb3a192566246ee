//! What an admin reads when the relay is not what relayq expects (issue #13 item 12), through
//! the real binary and the real test relay: each message says what happened in the admin's
//! words — which AUTH mechanisms each side has, what a refused certificate is for, who issued
//! it and until when, that the relay hung up, that a size refusal is relayq's own, that a
//! rate limit is throttling — and never a library's Debug output or documentation URL.

mod support;
use support::*;

const QUICK_RETRY: &str = "[queue]\nretry_min = 1\nretry_max = 2\nidle_timeout = 3";

/// Library wording that must never reach an admin.
const LIBRARY_WORDS: &[&str] = &[
    "docs.rs",
    "https://",
    "close_notify",
    "Context {",
    "DnsName(",
    "NotValidForName",
    "UnknownIssuer",
    "received fatal alert",
    "os error",
];

fn no_library_words(what: &str, text: &str) {
    for w in LIBRARY_WORDS {
        assert!(!text.contains(w), "{what}: {w:?} in {text}");
    }
}

fn relay_with(dir: &std::path::Path, opts: RelayOpts) -> (Env, Relay) {
    let relay = Relay::start(dir, opts);
    let env = Env::new(&relay_toml("smtp", relay.port), QUICK_RETRY);
    (env, relay)
}

/// `relayq test --no-send`: exit code and everything it printed.
fn relayq_test(env: &Env) -> (i32, String) {
    let o = env.relayq(&["test", "--no-send"]);
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o)),
    )
}

fn line_of<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(start))
        .unwrap_or("")
}

/// The line after `start`'s: its hint.
fn hint_of<'a>(out: &'a str, start: &str) -> &'a str {
    let mut it = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(start));
    it.next();
    it.next()
        .filter(|l| l.trim_start().starts_with("hint:"))
        .unwrap_or("")
}

#[test]
fn a_relay_with_only_cram_md5_names_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, _relay) = relay_with(
        tmp.path(),
        RelayOpts {
            extra: vec!["--auth-mechs".into(), "CRAM-MD5".into()],
            ..Default::default()
        },
    );
    let (code, out) = relayq_test(&env);
    assert_eq!(code, 69, "{out}");
    // The steps that passed before AUTH are shown.
    for step in ["ok    tls", "ok    cert", "ok    ehlo"] {
        assert!(out.contains(step), "{step}: {out}");
    }
    let auth = line_of(&out, "FAIL  auth");
    assert!(
        auth.contains("the relay offers AUTH CRAM-MD5 only")
            && auth.contains("relayq supports PLAIN, LOGIN and XOAUTH2"),
        "{out}"
    );
    let hint = hint_of(&out, "FAIL  auth");
    assert!(
        hint.contains("relayq does not implement CRAM-MD5") && hint.contains("AUTH PLAIN or LOGIN"),
        "{out}"
    );
    assert!(!out.contains("offers no AUTH here"), "{out}");
    // The daemon says the same, as a configuration problem.
    env.send(&["a@example.org"], "cram");
    let err = stderr(&env.flush());
    assert!(
        err.contains("CRAM-MD5 only") && err.contains("configuration problem"),
        "{err}"
    );
    assert_eq!(env.queued(), 1);
}

#[test]
fn a_wrong_password_still_shows_the_steps_before_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, _relay) = relay_with(
        tmp.path(),
        RelayOpts {
            auth: Some("user:other"),
            ..Default::default()
        },
    );
    let (code, out) = relayq_test(&env);
    assert_eq!(code, 69, "{out}");
    let tls = out.find("ok    tls").expect(&out);
    let cert = out.find("ok    cert").expect(&out);
    let ehlo = out.find("ok    ehlo").expect(&out);
    let auth = out.find("FAIL  auth").expect(&out);
    assert!(tls < cert && cert < ehlo && ehlo < auth, "{out}");
    assert!(out.contains("ok    tls        TLS 1."), "{out}");
}

#[test]
fn certificate_problems_in_the_admins_words() {
    // (certificate, what the FAIL line says, what the hint says, whether ca_file is a fix)
    let cases = [
        (
            "wrongname",
            vec![
                "the relay's certificate is for wrong.example, not localhost",
                "issued by CN=relayq test CA",
                " to 20",
            ],
            "a name the certificate is for",
            false,
        ),
        (
            "expired",
            vec![
                "the relay's certificate for localhost, 127.0.0.1 expired on 2020-01-31",
                "issued by CN=relayq test CA",
            ],
            "has expired",
            false,
        ),
        (
            "untrusted",
            vec!["the relay's certificate for localhost, 127.0.0.1 is self-signed (CN=localhost)"],
            "set ca_file",
            true,
        ),
    ];
    for (cert, says, hint, ca_file) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (env, _relay) = relay_with(
            tmp.path(),
            RelayOpts {
                cert,
                ..Default::default()
            },
        );
        let (code, out) = relayq_test(&env);
        assert_eq!(code, 69, "{cert}: {out}");
        assert!(out.contains("ok    tcp"), "{cert}: {out}");
        let fail = line_of(&out, "FAIL  cert");
        for s in &says {
            assert!(fail.contains(s), "{cert}: {s:?} in {out}");
        }
        let h = hint_of(&out, "FAIL  cert");
        assert!(h.contains(hint), "{cert}: {out}");
        assert_eq!(h.contains("ca_file"), ca_file, "{cert}: {out}");
        no_library_words(cert, &out);
        // The daemon's log and `relayq status` say the same.
        env.send(&["a@example.org"], "cert");
        let err = stderr(&env.flush());
        assert!(err.contains(says[0]), "{cert}: {err}");
        no_library_words(cert, &err);
        let st = String::from_utf8_lossy(&env.relayq(&["status"]).stdout).into_owned();
        assert!(st.contains(says[0]), "{cert}: {st}");
        no_library_words(cert, &st);
    }
}

#[test]
fn a_refused_handshake_gets_a_hint_naming_what_relayq_offers() {
    // An old relay: TLS 1.2 with a CBC cipher only, which rustls does not offer.
    let tmp = tempfile::tempdir().unwrap();
    let (env, _relay) = relay_with(
        tmp.path(),
        RelayOpts {
            extra: vec!["--tls-ciphers".into(), "ECDHE-ECDSA-AES128-SHA".into()],
            ..Default::default()
        },
    );
    let (code, out) = relayq_test(&env);
    assert_eq!(code, 69, "{out}");
    // OpenSSL behind asyncio hangs up without an alert; others send "handshake failure"
    // (the unit tests in src/relay/tls.rs cover the alert's wording).
    let fail = line_of(&out, "FAIL  tls");
    assert!(
        fail.contains("the relay closed the connection during the TLS handshake")
            || fail.contains("the relay ended TLS with the alert"),
        "{out}"
    );
    let h = hint_of(&out, "FAIL  tls");
    assert!(
        h.contains("refused the handshake") && h.contains("TLS 1.3 or 1.2 with ECDHE"),
        "{out}"
    );
    no_library_words("alert", &out);
}

#[test]
fn a_relay_dying_mid_transaction_is_said_plainly() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, relay) = relay_with(tmp.path(), RelayOpts::default());
    relay.set_faults(r#"{"disconnect_at": "middata"}"#);
    env.send(&["a@example.org"], "dies");
    let err = stderr(&env.flush());
    assert!(
        err.contains(
            "status=deferred (the relay closed the connection during the message body (DATA))"
        ),
        "{err}"
    );
    no_library_words("log", &err);
    let q = String::from_utf8_lossy(&env.relayq(&["queue"]).stdout).into_owned();
    assert!(q.contains("the relay closed the connection during"), "{q}");
    no_library_words("mailq", &q);
    let st = String::from_utf8_lossy(&env.relayq(&["status"]).stdout).into_owned();
    no_library_words("status", &st);
    assert_eq!(env.queued(), 1);
}

#[test]
fn relayqs_own_size_refusal_says_it_is_relayqs() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, relay) = relay_with(
        tmp.path(),
        RelayOpts {
            extra: vec!["--size".into(), "600".into()],
            ..Default::default()
        },
    );
    let big = format!("Subject: big\n\n{}\n", "x".repeat(2000));
    let o = env.sendmail(&["-f", "app@example.net", "a@example.org"], big.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&env.flush());
    let line = err
        .lines()
        .find(|l| l.contains("to=<a@example.org>"))
        .unwrap_or("");
    assert!(
        line.contains("status=bounced")
            && line.contains("exceeds the relay's fixed maximum message size of 600 bytes")
            && line.contains("relayq's own check")
            && !line.contains("in reply to"),
        "{err}"
    );
    // The relay was never asked.
    assert_eq!(relay.stat("mail_commands"), 0, "{err}");
}

#[test]
fn a_rate_limit_is_named_as_throttling() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, relay) = relay_with(tmp.path(), RelayOpts::default());
    relay.set_faults(r#"{"mail": "451 4.7.0 rate limit exceeded, try again later"}"#);
    for i in 0..6 {
        let o = env.sendmail(
            &["-f", "app@example.net", "a@example.org"],
            format!("Subject: t{i}\n\nbody\n").as_bytes(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let err = stderr(&env.flush());
    assert!(err.contains("is throttling relayq (a rate limit)"), "{err}");
    assert!(
        !err.contains("refuses every transaction") && !err.contains("unreachable"),
        "{err}"
    );
    let st = String::from_utf8_lossy(&env.relayq(&["status"]).stdout).into_owned();
    assert!(st.contains("the relay is throttling relayq"), "{st}");
    assert_eq!(env.queued(), 6);
    // `relayq test` does not tell the admin to verify the sender for a rate limit.
    let (_, out) = relayq_test(&env);
    let h = hint_of(&out, "FAIL  sender");
    assert!(h.contains("throttling") && !h.contains("verify"), "{out}");
}
