//! `relayq doctor` through the real binary, with the sender domain's records served by a
//! local DNS server (tests/dns/dnsd.py, standard library only) on a free loopback UDP port.

mod support;
use std::time::{Duration, Instant};
use support::*;

const FASTMAIL: &str =
    "provider = \"fastmail\"\nusername = \"server\"\npassword_file = \"PASSWORD_FILE\"";

/// SPF reaches Fastmail's include through a nested include, DKIM via CNAME, DMARC p=none.
const GOOD_ZONE: &str = r#"{
 "example.com": [["TXT", "google-site-verification=abc"], ["TXT", "v=spf1 ip4:192.0.2.10 include:_spf.example.net ~all"]],
 "_spf.example.net": [["TXT", "v=spf1 include:spf.messagingengine.com -all"]],
 "fm1._domainkey.example.com": [["CNAME", "fm1.example.com.dkim.fmhosted.com"]],
 "fm1.example.com.dkim.fmhosted.com": [["TXT", "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC"]],
 "_dmarc.example.com": [["TXT", "v=DMARC1; p=none; rua=mailto:postmaster@example.com"]]
}"#;

fn run(env: &Env, args: &[&str]) -> (i32, String) {
    let mut a = vec!["doctor"];
    a.extend_from_slice(args);
    let o = env.relayq(&a);
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o)),
    )
}

/// Doctor against a DNS server serving `zone`, stopped before returning.
fn doctor(env: &Env, zone: &str) -> (i32, String) {
    let dns = Dns::start(env.path(), zone);
    run(env, &["--dns", &dns.addr])
}

fn line<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{out}"))
}

/// The fix line printed after the line starting with `start`.
fn fix_after<'a>(out: &'a str, start: &str) -> &'a str {
    let mut it = out.lines().skip_while(|l| !l.starts_with(start));
    it.next();
    it.next()
        .filter(|l| l.trim_start().starts_with("fix: "))
        .unwrap_or_else(|| panic!("no fix after {start:?} in:\n{out}"))
}

#[test]
fn good_domain_all_pass() {
    let env = Env::new(FASTMAIL, "");
    let mut d = env.daemon_listening();
    let dns = Dns::start(env.path(), GOOD_ZONE);
    let (code, out) = run(&env, &["--dns", &dns.addr]);
    assert_eq!(code, 0, "{out}");
    for l in out.lines().filter(|l| !l.starts_with(' ')) {
        assert!(
            l.starts_with("pass  ") || l == "0 failed, 0 warning(s)",
            "{l:?} in:\n{out}"
        );
    }
    assert!(line(&out, "pass  daemon").contains("running (pid"), "{out}");
    assert!(
        line(&out, "pass  spf").contains(
            "includes spf.messagingengine.com (via _spf.example.net → spf.messagingengine.com)"
        ),
        "{out}"
    );
    assert!(
        line(&out, "pass  dkim").contains("fm1._domainkey.example.com"),
        "{out}"
    );
    assert!(line(&out, "pass  dmarc").contains("p=none"), "{out}");
    // The same in JSON.
    let (code, json) = run(&env, &["--json", "--dns", &dns.addr]);
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert_eq!(v["failed"], 0, "{json}");
    assert_eq!(v["warnings"], 0, "{json}");
    let checks: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["check"].as_str())
        .collect();
    for c in [
        "config",
        "permissions",
        "daemon",
        "queue",
        "spf",
        "dkim",
        "dmarc",
    ] {
        assert!(checks.contains(&c), "{c}: {json}");
    }
    let _ = d.kill();
    let _ = d.wait();
}

#[test]
fn spf_without_the_provider_fails_and_reject_policy_is_explained() {
    let env = Env::new(FASTMAIL, "");
    let zone = r#"{
 "example.com": [["TXT", "v=spf1 include:_spf.example.net ~all"]],
 "_spf.example.net": [["TXT", "v=spf1 ip4:192.0.2.0/24 -all"]],
 "_dmarc.example.com": [["TXT", "v=DMARC1; p=reject"]]
}"#;
    let (code, out) = doctor(&env, zone);
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "FAIL  spf").contains("does not include spf.messagingengine.com"),
        "{out}"
    );
    assert!(
        fix_after(&out, "FAIL  spf").contains("add include:spf.messagingengine.com"),
        "{out}"
    );
    assert!(line(&out, "warn  dkim").contains("no DKIM key"), "{out}");
    let dmarc = line(&out, "FAIL  dmarc");
    assert!(
        dmarc.contains("p=reject") && dmarc.contains("will be refused"),
        "{out}"
    );
}

#[test]
fn no_dmarc_is_a_warning_only() {
    let env = Env::new(FASTMAIL, "");
    let zone = GOOD_ZONE.replace("_dmarc.example.com", "_dmarc.elsewhere.example");
    let (code, out) = doctor(&env, &zone);
    assert_eq!(code, 0, "warnings alone exit 0: {out}");
    assert!(
        line(&out, "warn  dmarc").contains("no DMARC record at _dmarc.example.com"),
        "{out}"
    );
    assert!(
        fix_after(&out, "warn  dmarc").contains("v=DMARC1; p=none"),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn two_spf_records_fail() {
    let env = Env::new(FASTMAIL, "");
    let zone = GOOD_ZONE.replace(
        r#"["TXT", "google-site-verification=abc"]"#,
        r#"["TXT", "v=spf1 include:spf.messagingengine.com -all"]"#,
    );
    let (code, out) = doctor(&env, &zone);
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "FAIL  spf").contains("example.com has 2 SPF"),
        "{out}"
    );
    assert!(
        fix_after(&out, "FAIL  spf").contains("merge them into one"),
        "{out}"
    );
}

#[test]
fn dns_not_answering_is_a_warning_not_a_domain_failure() {
    let env = Env::new(FASTMAIL, "");
    // A UDP socket nobody reads: queries time out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let (code, out) = run(&env, &["--dns", &addr]);
    assert!(started.elapsed() < Duration::from_secs(30), "{out}");
    assert_eq!(code, 0, "{out}");
    assert!(
        line(&out, "warn  dns").contains("could not ask DNS"),
        "{out}"
    );
    for check in ["spf", "dkim", "dmarc"] {
        assert!(
            !out.lines()
                .any(|l| l.get(6..).is_some_and(|r| r.starts_with(check))),
            "{check} judged without DNS: {out}"
        );
    }
    drop(silent);
}

#[test]
fn unsafe_password_file_fails_with_the_fix() {
    let env = Env::new(FASTMAIL, "");
    let pw = env.path().join("password");
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, out) = doctor(&env, GOOD_ZONE);
    assert_eq!(code, 1, "{out}");
    let l = line(&out, "FAIL  permissions");
    assert!(
        l.contains(&pw.display().to_string()) && l.contains("readable by other users"),
        "{out}"
    );
    assert!(
        fix_after(&out, "FAIL  permissions").contains(&format!("chmod 600 {}", pw.display())),
        "{out}"
    );
    // The daemon refuses with the same words.
    let o = env.flush();
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(l["FAIL  permissions ".len()..].trim()),
        "{}",
        stderr(&o)
    );
}

#[test]
fn spool_with_wrong_mode_fails() {
    let env = Env::new(FASTMAIL, "");
    let q = env.spool("queue");
    std::fs::set_permissions(&q, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let (code, out) = doctor(&env, GOOD_ZONE);
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "FAIL  permissions")
            .contains(&format!("{} has mode 777, want 700", q.display())),
        "{out}"
    );
    assert!(
        fix_after(&out, "FAIL  permissions").contains("relayq init"),
        "{out}"
    );
}

#[test]
fn config_error_is_one_fail_line() {
    let env = Env::new(FASTMAIL, "");
    let text = std::fs::read_to_string(&env.cfg).unwrap();
    std::fs::write(&env.cfg, text.replace("[log]", "[log]\nsyslogg = 1")).unwrap();
    let (code, out) = run(&env, &["--dns", "127.0.0.1:9"]);
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "FAIL  config").contains("syslogg"), "{out}");
    assert_eq!(out.matches("FAIL").count(), 1, "{out}");
}
