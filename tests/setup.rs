//! `relayq setup` through the real binary against the real test relay: non-interactive with
//! flags (as Ansible or a Dockerfile runs it), interactively on a pseudo-terminal (the
//! password is not echoed), and the refusals: existing config, password in argv, missing
//! answers, a wrong password (the config is kept, the hint is printed).

mod support;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;

struct Case {
    dir: tempfile::TempDir,
    relay: Relay,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let relay = Relay::start(dir.path(), RelayOpts::default());
        Case { dir, relay }
    }
    fn cfg(&self) -> PathBuf {
        self.dir.path().join("etc/relayq.toml")
    }
    /// The flags every run needs here: the relay on loopback with the test CA, a spool in
    /// the temp dir.
    fn base(&self) -> Vec<String> {
        vec![
            "--url".into(),
            format!("smtp://localhost:{}", self.relay.port),
            "--ca-file".into(),
            ca_dir().join("ca.pem").display().to_string(),
            "--spool-dir".into(),
            self.dir.path().join("spool").display().to_string(),
        ]
    }
    fn setup(&self, extra: &[&str], stdin: &str) -> Output {
        let mut c = Command::new(BIN)
            .arg("-C")
            .arg(self.cfg())
            .arg("setup")
            .args(self.base())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = c.stdin.take().unwrap().write_all(stdin.as_bytes());
        c.wait_with_output().unwrap()
    }
}

fn all(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

const ANSWERS: &[&str] = &[
    "--username",
    "user",
    "--password-stdin",
    "--admin",
    "ops@example.com",
    "--sender",
    "server@example.com",
];

#[test]
fn non_interactive_writes_config_and_secret_then_proves_it() {
    let c = Case::new();
    let o = c.setup(ANSWERS, "secret\n");
    let out = all(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        !out.contains("secret\n") && !out.contains(" secret"),
        "{out}"
    );
    for step in ["tls", "auth", "sender", "send"] {
        assert!(out.contains(&format!("ok    {step}")), "{step}: {out}");
    }
    // The test message went to the admin address through the relay.
    let got = c.relay.arrived();
    assert_eq!(got.len(), 1, "{out}");
    assert_eq!(rcpts_of(&got[0]), ["ops@example.com"]);
    // Config: parses, names the secrets file, holds no secret.
    let text = std::fs::read_to_string(c.cfg()).unwrap();
    assert!(!text.contains("secret\""), "{text}");
    assert!(text.contains("domain = \"example.com\""), "{text}");
    let pw = c.dir.path().join("etc/password");
    assert_eq!(std::fs::read_to_string(&pw).unwrap(), "secret\n");
    assert!(matches!(mode(&pw), 0o600 | 0o640), "{:o}", mode(&pw));
    assert_eq!(mode(&c.cfg()), 0o644);
    assert!(c.dir.path().join("spool/new").is_dir(), "spool made");
    // sendmail works with what setup wrote.
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        cfg: c.cfg(),
    };
    let s = env.sendmail(&["someone@example.org"], b"Subject: after setup\n\nhi\n");
    assert!(s.status.success(), "{}", stderr(&s));
    let f = env.flush();
    assert!(f.status.success(), "{}", stderr(&f));
    assert_eq!(c.relay.arrived().len(), 2);

    // Again without --force: refused before asking anything, nothing changed.
    let o = c.setup(ANSWERS, "other\n");
    assert_eq!(o.status.code(), Some(64), "{}", all(&o));
    assert!(stderr(&o).contains("--force"), "{}", all(&o));
    assert_eq!(std::fs::read_to_string(&pw).unwrap(), "secret\n");
}

#[test]
fn wrong_password_keeps_config_and_gives_the_hint() {
    let c = Case::new();
    let o = c.setup(ANSWERS, "not-it\n");
    let out = all(&o);
    assert_eq!(o.status.code(), Some(69), "{out}");
    assert!(out.contains("FAIL  auth"), "{out}");
    assert!(out.contains("wrong username or password"), "{out}");
    assert!(out.contains("the config is written"), "{out}");
    assert!(!out.contains("not-it"), "{out}");
    assert!(c.cfg().exists());
    // --force replaces it; the right password passes.
    let mut a = ANSWERS.to_vec();
    a.extend(["--force", "--no-send"]);
    let o = c.setup(&a, "secret\n");
    assert_eq!(o.status.code(), Some(0), "{}", all(&o));
    assert!(c.relay.arrived().is_empty(), "--no-send sends nothing");
}

#[test]
fn refusals_are_usage_errors_with_one_line() {
    let c = Case::new();
    for (args, want) in [
        (vec!["--password", "hunter2"], "--password-stdin"),
        (vec!["--username", "user"], "--password"),
        (vec!["--provider", "nosuch"], "unknown provider"),
        (vec!["--bogus"], "bogus"),
        (
            vec!["--admin", "not an address", "--no-test"],
            "not an address",
        ),
    ] {
        let o = c.setup(&args, "");
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", all(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", all(&o));
        assert!(!c.cfg().exists(), "{args:?} wrote a config");
    }
    // No relay at all and no terminal to ask on.
    let o = Command::new(BIN)
        .arg("-C")
        .arg(c.cfg())
        .args(["setup", "--admin", "a@example.com"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", all(&o));
    assert!(stderr(&o).contains("--provider or --url"), "{}", all(&o));
}

#[test]
fn interactive_on_a_terminal_without_echoing_the_password() {
    let c = Case::new();
    let mut argv = vec![
        "/usr/bin/python3".to_string(),
        repo()
            .join("tests/tools/pty_drive.py")
            .display()
            .to_string(),
        serde_json::json!([
            ["SMTP user name", "user"],
            ["not shown", "secret", "hidden"],
            ["Admin address", "ops@example.com"],
            ["Sender address", "server@example.com"],
        ])
        .to_string(),
        "--".into(),
        BIN.into(),
        "-C".into(),
        c.cfg().display().to_string(),
        "setup".into(),
    ];
    // The relay is given as a flag (a test cannot reach a provider); the rest is asked.
    argv.extend(c.base());
    let o = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = all(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("user name"), "{out}");
    assert!(!out.contains("secret"), "the password was echoed: {out}");
    assert!(out.contains("ok    send"), "{out}");
    let got = c.relay.arrived();
    assert_eq!(got.len(), 1, "{out}");
    assert_eq!(rcpts_of(&got[0]), ["ops@example.com"]);
    let text = std::fs::read_to_string(c.cfg()).unwrap();
    assert!(
        text.contains("admin = \"ops@example.com\"") && text.contains("username = \"user\""),
        "{text}"
    );
}

#[test]
fn a_running_daemon_is_told_to_reload() {
    let c = Case::new();
    let mut a = ANSWERS.to_vec();
    a.push("--no-test");
    let o = c.setup(&a, "secret\n");
    assert_eq!(o.status.code(), Some(0), "{}", all(&o));
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        cfg: c.cfg(),
    };
    let mut d = env.daemon();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !env.daemon_log().contains("daemon started") {
        assert!(std::time::Instant::now() < deadline, "{}", env.daemon_log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    a.push("--force");
    let o = c.setup(&a, "secret\n");
    let out = all(&o);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !env.daemon_log().contains("configuration reloaded")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = d.kill();
    let _ = d.wait();
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("told the running daemon"), "{out}");
    assert!(
        env.daemon_log().contains("configuration reloaded"),
        "{}",
        env.daemon_log()
    );
}

#[test]
fn replaces_the_config_make_install_left_without_force() {
    let c = Case::new();
    std::fs::create_dir_all(c.cfg().parent().unwrap()).unwrap();
    // What `make install` and the package leave: the example config, an empty password file.
    std::fs::copy(repo().join("contrib/examples/relayq.toml.example"), c.cfg()).unwrap();
    let pw = c.dir.path().join("etc/password");
    std::fs::write(&pw, "").unwrap();
    let mut a = ANSWERS.to_vec();
    a.push("--no-send");
    let o = c.setup(&a, "secret\n");
    assert_eq!(o.status.code(), Some(0), "{}", all(&o));
    assert_eq!(std::fs::read_to_string(&pw).unwrap(), "secret\n");
    // Once edited, it is somebody's config: --force is needed again.
    let o = c.setup(&a, "secret\n");
    assert_eq!(o.status.code(), Some(64), "{}", all(&o));
}

/// Run `relayq -C cfg setup FLAGS` on a pseudo-terminal through tests/tools/pty_drive.py,
/// answering `steps` ([expect, answer, ("hidden"|"raw")...]); the transcript and exit code.
fn on_a_terminal(
    c: &Case,
    flags: &[String],
    steps: serde_json::Value,
    stty: bool,
) -> (i32, String) {
    let mut argv = vec![
        repo()
            .join("tests/tools/pty_drive.py")
            .display()
            .to_string(),
    ];
    if stty {
        argv.push("--stty".into());
    }
    argv.extend([
        steps.to_string(),
        "--".into(),
        BIN.into(),
        "-C".into(),
        c.cfg().display().to_string(),
        "setup".into(),
    ]);
    argv.extend(flags.iter().cloned());
    let o = Command::new("/usr/bin/python3")
        .args(&argv)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), all(&o))
}

#[test]
fn interactive_asks_again_for_a_bad_provider_an_empty_user_and_a_bad_admin() {
    let c = Case::new();
    // The provider is asked (a test cannot reach it: --no-test); the spool is the temp dir's.
    let flags = vec![
        "--spool-dir".to_string(),
        c.dir.path().join("spool").display().to_string(),
        "--no-test".into(),
    ];
    let (code, out) = on_a_terminal(
        &c,
        &flags,
        serde_json::json!([
            ["Provider or URL", "smtp2gop"],
            ["did you mean smtp2go?", "smtp2go"],
            ["SMTP user name", ""],
            ["or - for a relay without AUTH", "user"],
            ["not shown", "secret", "hidden"],
            ["Admin address", "ops"],
            ["is not an address", "ops@example.com"],
            ["Sender address", "server@example.com"],
        ]),
        false,
    );
    assert_eq!(code, 0, "{out}");
    // Each refusal names the question, never a flag the user did not type.
    assert!(
        out.contains("Provider or URL: unknown provider \"smtp2gop\""),
        "{out}"
    );
    assert!(
        out.contains("Admin address: \"ops\" is not an address"),
        "{out}"
    );
    assert!(
        !out.contains("--admin") && !out.contains("--provider"),
        "{out}"
    );
    assert!(!out.contains("secret"), "the password was echoed: {out}");
    let text = std::fs::read_to_string(c.cfg()).unwrap();
    for want in [
        "provider = \"smtp2go\"",
        "username = \"user\"",
        "admin = \"ops@example.com\"",
    ] {
        assert!(text.contains(want), "{text}");
    }
}

#[test]
fn interactive_dash_means_no_auth() {
    let c = Case::new();
    let mut flags = c.base();
    flags.push("--no-test".into());
    let (code, out) = on_a_terminal(
        &c,
        &flags,
        serde_json::json!([
            ["SMTP user name", "-"],
            ["Admin address", "ops@example.com"],
            ["Sender address", "server@example.com"],
        ]),
        false,
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("not shown"), "a password was asked: {out}");
    let text = std::fs::read_to_string(c.cfg()).unwrap();
    assert!(
        !text.contains("username") && !text.contains("password"),
        "{text}"
    );
}

#[test]
fn ctrl_c_at_the_password_prompt_gives_the_echo_back() {
    let c = Case::new();
    let (code, out) = on_a_terminal(
        &c,
        &c.base(),
        serde_json::json!([
            ["SMTP user name", "user"],
            ["not shown", "\u{3}", "hidden", "raw"],
        ]),
        true,
    );
    // Killed by SIGINT (130), as a shell sees a Ctrl-C, with nothing written.
    assert_eq!(code, 130, "{out}");
    assert!(!c.cfg().exists());
    let stty = out
        .lines()
        .find_map(|l| l.strip_prefix("[pty_drive: stty: "))
        .unwrap_or_else(|| panic!("no stty line: {out}"));
    let words: Vec<&str> = stty.trim_end_matches(']').split_whitespace().collect();
    assert!(
        words.contains(&"echo") && !words.contains(&"-echo"),
        "the terminal was left without echo: {stty}"
    );
}
