//! DKIM signing through the real daemon and the test relay, the signatures checked by dkimpy
//! (PyPI, in the venv scripts/deps.sh makes: an implementation independent of relayq's),
//! for RSA and Ed25519 keys made as docs/providers/own-relay.md says; bad keys refused at
//! start; and `relayq doctor` comparing the published key with key_file (tests/dns/dnsd.py).

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// A key made with openssl as the docs say, and its `p=` value.
struct TestKey {
    path: PathBuf,
    p: String,
    k: &'static str,
}

fn sh(script: &str, arg: &Path) -> String {
    let o = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(arg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn make_key(dir: &Path, k: &'static str) -> TestKey {
    let path = dir.join(format!("{k}.pem"));
    let (make, public) = match k {
        "ed25519" => (
            "openssl genpkey -algorithm ed25519 -out \"$1\"",
            "openssl pkey -in \"$1\" -pubout -outform DER | tail -c 32 | base64 -w0",
        ),
        _ => (
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out \"$1\" 2>/dev/null",
            "openssl pkey -in \"$1\" -pubout -outform DER | base64 -w0",
        ),
    };
    sh(&format!("umask 077 && {make}"), &path);
    let p = sh(public, &path);
    TestKey { path, p, k }
}

impl TestKey {
    fn record(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.k, self.p)
    }
}

/// A relay, and relayq configured to sign for example.com with a new key of type `k`.
struct Signing {
    env: Env,
    relay: Relay,
    key: TestKey,
    selector: String,
    _tmp: tempfile::TempDir,
}

fn signing(k: &'static str) -> Signing {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::plain());
    let key = make_key(tmp.path(), k);
    let selector = format!("{k}2026");
    let env = Env::new(
        &format!(
            "url = \"smtp://127.0.0.1:{}\"\nallow_plaintext = true\ncommand_timeout = 10",
            relay.port
        ),
        &format!(
            "\n[dkim]\ndomain = \"example.com\"\nselector = \"{selector}\"\nkey_file = \"{}\"\n",
            key.path.display()
        ),
    );
    Signing {
        env,
        relay,
        key,
        selector,
        _tmp: tmp,
    }
}

impl Signing {
    /// dkimpy's verdict on `msg`, the key published at the selector: (all pass, its output).
    fn verify(&self, msg: &[u8]) -> (bool, String) {
        let py = deps_dir().join("venv/bin/python");
        assert!(
            py.exists(),
            "{} missing: run scripts/deps.sh (dkimpy in a venv)",
            py.display()
        );
        let dir = self.env.path();
        std::fs::write(dir.join("msg.eml"), msg).unwrap();
        let records = serde_json::json!({
            format!("{}._domainkey.example.com", self.selector): self.key.record()
        });
        std::fs::write(dir.join("records.json"), records.to_string()).unwrap();
        let o = Command::new(py)
            .arg(repo().join("tests/tools/dkim_verify.py"))
            .arg(dir.join("msg.eml"))
            .arg(dir.join("records.json"))
            .output()
            .unwrap();
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        (o.status.success(), out)
    }
}

/// The bytes the relay stored (`data` is them as latin-1).
fn bytes_of(m: &serde_json::Value) -> Vec<u8> {
    m["data"]
        .as_str()
        .unwrap()
        .chars()
        .map(|c| c as u8)
        .collect()
}

/// 8-bit header and body, long folded header fields, a line longer than 998 octets, lines
/// that start with a dot, trailing blanks and empty lines, a byte that is not UTF-8.
fn hard_message() -> Vec<u8> {
    let to: Vec<String> = (0..40).map(|i| format!("user{i}@example.org")).collect();
    let mut m = format!(
        "From: Server <server@example.com>\nTo: {}\nSubject: Gr\u{fc}\u{df}e aus K\u{f6}ln \u{2014} {}\nMIME-Version: 1.0\nContent-Type: text/plain;\n charset=utf-8\nContent-Transfer-Encoding: 8bit\nX-Folded: one\n\ttwo  \n   three\n\nGr\u{fc}\u{df}e, caf\u{e9} \u{20ac}\n.a line with a dot\n..two dots\ntrailing blanks   \n\t tab first\n{}\n",
        to.join(",\n\t"),
        "long words ".repeat(12),
        "0123456789".repeat(150),
    )
    .into_bytes();
    m.extend_from_slice(b"latin-1: caf\xe9\n\n\n\n");
    m
}

fn signed_and_verified(k: &'static str) {
    let s = signing(k);
    let mut d = s.env.daemon_listening();
    let o = s.env.sendmail(&["rcpt@example.org"], &hard_message());
    assert!(o.status.success(), "{}", stderr(&o));
    let other = b"From: someone@example.net\nSubject: not ours\n\nhello\n";
    assert!(
        s.env
            .sendmail(&["rcpt@example.org"], other)
            .status
            .success()
    );
    let got = s.relay.wait_for(2, Duration::from_secs(30));
    let _ = d.kill();
    let _ = d.wait();
    assert_eq!(got.len(), 2, "{}", s.env.daemon_log());
    let (ours, theirs): (Vec<_>, Vec<_>) = got.iter().partition(|m| subject_of(m) != "not ours");
    let msg = bytes_of(ours[0]);
    // The signature first, then the daemon's trace field: it signs what follows it.
    assert!(
        msg.starts_with(b"DKIM-Signature: v=1; a="),
        "{}",
        String::from_utf8_lossy(&msg)
    );
    let text = String::from_utf8_lossy(&msg);
    let second = text
        .split("\r\n")
        .find(|l| !l.starts_with([' ', '\t']) && !l.starts_with("DKIM-Signature"));
    assert!(
        second.is_some_and(|l| l.starts_with("Received: by")),
        "{text}"
    );
    let (ok, out) = s.verify(&msg);
    assert!(ok, "dkimpy: {out}\n{text}");
    let a = if k == "rsa" {
        "rsa-sha256"
    } else {
        "ed25519-sha256"
    };
    assert_eq!(
        out.trim(),
        format!("pass d=example.com s={} a={a}", s.selector)
    );
    // The verifier does check: one byte of the body changed, the signature fails.
    let at = msg.windows(4).position(|w| w == b"caf\xe9").unwrap();
    let mut bad = msg.clone();
    bad[at + 3] = b'e';
    let (ok, out) = s.verify(&bad);
    assert!(!ok && out.starts_with("fail"), "{out}");
    // Mail from another domain goes out unsigned, and the log says why.
    let plain = bytes_of(theirs[0]);
    assert!(!String::from_utf8_lossy(&plain).contains("DKIM-Signature"));
    let log = s.env.daemon_log();
    assert!(
        log.contains("not DKIM-signed: its From domain example.net is not the [dkim] domain"),
        "{log}"
    );
}

#[test]
fn rsa_signatures_verify() {
    signed_and_verified("rsa");
}

#[test]
fn ed25519_signatures_verify() {
    signed_and_verified("ed25519");
}

/// The daemon refuses to start, exit 78, one line naming the key.
fn refused(s: &Signing, want: &str) {
    let mut d = s.env.daemon();
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        if let Some(st) = d.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = d.kill();
            panic!("the daemon started with a bad key: {}", s.env.daemon_log());
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let log = s.env.daemon_log();
    assert_eq!(st.code(), Some(78), "{log}");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{log}");
    let key = s.key.path.display().to_string();
    assert!(lines[0].contains(&key) && lines[0].contains(want), "{log}");
    std::fs::remove_file(s.env.path().join("daemon.log")).unwrap();
}

#[test]
fn bad_keys_stop_the_daemon_at_start() {
    let s = signing("ed25519");
    let p = &s.key.path;
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    refused(&s, "is readable by other users (mode 644)");
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    sh(
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1\"",
        p,
    );
    refused(&s, "neither an RSA nor an Ed25519 key");
    std::fs::write(p, "not a key\n").unwrap();
    refused(&s, "not a PEM private key");
    std::fs::remove_file(p).unwrap();
    refused(&s, "No such file");
}

/// `relayq doctor` with `zone` served: its dkim line, and the fix after it.
fn doctor_dkim(s: &Signing, name: &str, zone: serde_json::Value) -> (String, String) {
    let dir = s.env.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    let dns = Dns::start(&dir, &zone.to_string());
    let o = s.env.relayq(&["doctor", "--dns", &dns.addr]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut it = out
        .lines()
        .skip_while(|l| !l.get(4..).unwrap_or("").trim_start().starts_with("dkim "));
    let line = it
        .next()
        .unwrap_or_else(|| panic!("no dkim line in:\n{out}"));
    let fix = it.next().filter(|l| l.trim_start().starts_with("fix: "));
    (line.to_string(), fix.unwrap_or("").to_string())
}

#[test]
fn doctor_compares_the_published_key_with_key_file() {
    let s = signing("ed25519");
    let name = format!("{}._domainkey.example.com", s.selector);
    let (line, _) = doctor_dkim(
        &s,
        "good",
        serde_json::json!({ &name: [["TXT", s.key.record()]] }),
    );
    assert!(
        line.starts_with("pass") && line.contains("publishes the public key of"),
        "{line}"
    );
    let other = make_key(s.env.path(), "rsa");
    let (line, fix) = doctor_dkim(
        &s,
        "mismatch",
        serde_json::json!({ &name: [["TXT", other.record()]] }),
    );
    assert!(
        line.starts_with("FAIL") && line.contains("(k=rsa) is not the public key of"),
        "{line}"
    );
    assert!(fix.contains(&s.key.record()), "{fix}");
    // Another key of the same type.
    let newer = make_key(&s.env.path().join("mismatch"), "ed25519");
    let (line, _) = doctor_dkim(
        &s,
        "same-type",
        serde_json::json!({ &name: [["TXT", newer.record()]] }),
    );
    assert!(
        line.starts_with("FAIL") && line.contains("(k=ed25519) is not the public key of"),
        "{line}"
    );
    let (line, _) = doctor_dkim(
        &s,
        "revoked",
        serde_json::json!({ &name: [["TXT", "v=DKIM1; k=ed25519; p="]] }),
    );
    assert!(
        line.starts_with("FAIL") && line.contains("revoked"),
        "{line}"
    );
    let (line, fix) = doctor_dkim(
        &s,
        "missing",
        serde_json::json!({ "example.com": [["TXT", "v=spf1 -all"]] }),
    );
    assert!(
        line.starts_with("FAIL") && line.contains(&format!("no DKIM key at {name}")),
        "{line}"
    );
    assert!(
        fix.contains(&format!("publish a TXT record at {name}")),
        "{fix}"
    );
}
