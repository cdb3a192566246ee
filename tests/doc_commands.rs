//! Acceptance 3 of #13: every command README.md, docs/admin.md and docs/troubleshooting.md
//! show is run here and its shown output compared with the real output, or is listed in
//! `NOT_HERE` with why it cannot run on a test machine and which test covers it instead.
//!
//! A block marked `<!-- doctest: NAME -->` runs in the scenario NAME below: a spool and
//! config as the docs show them (`/tmp/dx/...` paths, the SMTP user `server1`, ports 10587
//! and 10465 standing for the test relay's), the test relay, the daemon where the doc's
//! context has one. Each command runs through bash under a pseudo-terminal (`script`), as
//! the docs' transcripts were taken, with `relayq`, `sendmail` and `mailq` the binaries
//! under test. Queue IDs the doc shows are mapped to the real ones as they appear.
//! The varying parts (IDs, dates, durations, pids, sizes) are normalised as the docs'
//! header comment says (parse::normalise); `…` in a doc stands for anything.

#[path = "doc_commands/parse.rs"]
mod parse;
mod support;

use parse::{Block, Step};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const DOCS: &[&str] = &["README.md", "docs/admin.md", "docs/troubleshooting.md"];

/// Commands the docs show that cannot run on a test machine: (command as the doc has it,
/// without its prompt and trailing comment; why; the test that covers it instead).
const NOT_HERE: &[(&str, &str, &str)] = &[
    (
        "make demo",
        "builds the project and runs the whole chain itself; the suite runs inside `make test`",
        "tests/daemon_relay.rs (the same chain: sendmail, spool, daemon, test relay)",
    ),
    ("make test", "runs this very suite (CI: .ci/run)", ".ci/run"),
    (
        "make build && sudo make install",
        "installs into the real root (/usr/sbin, /etc, a system user)",
        "tests/package.rs (make install into a throwaway overlay root)",
    ),
    (
        "make deb && sudo apt install ./target/debian/relayq_*.deb",
        "apt on the real root",
        "tests/package.rs (apt install over postfix in a throwaway overlay root)",
    ),
    (
        "sudo relayq setup",
        "interactive: the answers are typed on a terminal",
        "tests/setup.rs (interactive_* and ctrl_c_* drive the questions through a pty)",
    ),
    (
        "echo \"$API_KEY\" | sudo relayq setup --provider sendgrid --username apikey --password-stdin \\\n--admin ops@example.com --sender server1@example.com",
        "a real provider (SendGrid) over the network",
        "the `setup` scenario here (the same flags against the test relay); tests/setup.rs",
    ),
    (
        "sudo relayq import --from nullmailer",
        "reads the real /etc/nullmailer and writes /etc/relayq",
        "the `import` scenario here (--path to a fixture); tests/import.rs",
    ),
    (
        "relayq doctor",
        "checks the installed system's config, and asks real DNS",
        "the `doctor` scenario here; tests/doctor.rs",
    ),
    (
        "relayq -C /tmp/dx/etc/relayq.toml setup --ca-file /tmp/dx/ca/ca.pem --spool-dir /tmp/dx/spool",
        "interactive: the answers are typed on a terminal",
        "tests/setup.rs (interactive_on_a_terminal_without_echoing_the_password, through a pty); \
         the `setup-written` scenario here (the same answers as flags)",
    ),
    (
        "systemctl enable --now relayq",
        "no systemd on a test machine",
        "tests/package.rs (the package's service scripts in a throwaway root)",
    ),
    (
        "systemctl status relayq",
        "no systemd on a test machine",
        "tests/package.rs",
    ),
    (
        "systemctl reload relayq",
        "no systemd on a test machine",
        "the `signals` scenario here (SIGHUP, which the unit's ExecReload sends)",
    ),
    (
        "journalctl -t relayq -f",
        "no journal on a test machine",
        "tests/daemon_relay.rs (the daemon's log lines)",
    ),
    (
        "journalctl -t relayq --since today | grep 'status=deferred'",
        "no journal on a test machine",
        "tests/daemon_relay.rs (the daemon's log lines)",
    ),
    (
        "journalctl -t relayq | grep 06B0E907F4B7A48DCAD164",
        "no journal on a test machine",
        "tests/daemon_relay.rs (the daemon's log lines)",
    ),
    (
        "grep -c 'status=sent' /var/log/mail.log",
        "no rsyslog on a test machine",
        "tests/package.rs (the lines in mail.log, through rsyslog in a throwaway root)",
    ),
    (
        "install -m 640 -o root -g relayq /dev/null /etc/relayq/password.new",
        "edits /etc on the real root, and needs the relayq group the package creates",
        "tests/setup.rs (the password file's owner and mode)",
    ),
    (
        "printf '%s\\n' \"$NEW_SECRET\" > /etc/relayq/password.new && mv /etc/relayq/password.new /etc/relayq/password",
        "edits /etc on the real root",
        "tests/daemon_relay.rs (a reload re-reads the secret)",
    ),
    (
        "relayq test --no-send",
        "after the two commands above, on the real root",
        "the `outage` scenario here (relayq test --no-send)",
    ),
    (
        "systemctl reload relayq && relayq flush",
        "no systemd on a test machine",
        "the `signals` and `outage` scenarios here",
    ),
    (
        "printf 'To: x@example.org\\nSubject: t\\n\\nx\\n' | sudo -u www-data /usr/sbin/sendmail -t -i; echo $?",
        "sudo is not installed on a test machine, and the spool is the real root's",
        "tests/privilege.rs (sendmail as an ordinary user)",
    ),
    (
        "printf 'Subject: x\\n\\nx\\n' | sendmail -i ops@example.com",
        "a full file system: a tmpfs mounted for it",
        "tests/submit_robustness.rs (a full tmpfs)",
    ),
    (
        "echo $?",
        "the exit code of the command before",
        "as that command",
    ),
];

/// The scenarios the docs' `<!-- doctest: NAME -->` markers may name.
const SCENARIOS: &[&str] = &[
    "setup",
    "setup-written",
    "test",
    "doctor",
    "import",
    "queue",
    "hold",
    "users",
    "status",
    "outage",
    "flush-down",
    "many",
    "select",
    "signals",
    "plain",
    "nonewprivs",
    "bad-config",
    "dup",
    "corrupt",
    "bounce",
    "auth",
    "bounce-refused",
];

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

fn all_blocks() -> Vec<Block> {
    let mut out = vec![];
    for f in DOCS {
        let text = std::fs::read_to_string(repo().join(f)).unwrap();
        out.extend(parse::blocks(f, &text).unwrap_or_else(|e| panic!("{e}")));
    }
    out
}

#[test]
fn every_command_shown_is_run_or_listed() {
    let blocks = all_blocks();
    let mut problems = vec![];
    let mut listed_seen = vec![false; NOT_HERE.len()];
    for b in &blocks {
        match &b.scenario {
            Some(s) if !SCENARIOS.contains(&s.as_str()) => {
                problems.push(format!("{}: unknown scenario {s:?}", b.at()))
            }
            Some(_) if b.lang != "console" => problems.push(format!(
                "{}: a doctest marker on a {} block: only console blocks show output",
                b.at(),
                b.lang
            )),
            Some(_) if b.steps.is_empty() => problems.push(format!(
                "{}: a doctest marker on a block without commands",
                b.at()
            )),
            Some(_) => {}
            None => {
                for s in &b.steps {
                    match NOT_HERE
                        .iter()
                        .position(|(c, _, _)| words(c) == words(&s.cmd))
                    {
                        Some(i) => listed_seen[i] = true,
                        None => problems.push(format!(
                            "{}: `{}` is neither in a <!-- doctest: NAME --> block nor in NOT_HERE",
                            b.at(),
                            s.cmd
                        )),
                    }
                }
            }
        }
    }
    for (i, seen) in listed_seen.iter().enumerate() {
        if !seen {
            problems.push(format!(
                "NOT_HERE lists `{}`, which no doc shows any more",
                NOT_HERE[i].0
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// One scenario's world: a temp dir standing for `/tmp/dx`, binaries named as callers name
/// them, the test relay, perhaps the daemon.
struct Session {
    env: Env,
    bin: PathBuf,
    /// (as the doc shows it, as it is here), longest first when applied.
    subs: Vec<(String, String)>,
    /// Doc queue ID -> real queue ID.
    ids: HashMap<String, String>,
    relay: Option<Relay>,
    daemon: Option<Child>,
    cwd: PathBuf,
    last_code: i32,
    /// Run before the step with this index.
    hooks: Vec<(usize, Hook)>,
    /// `$` prompts run as this user (nobody), `#` ones as root.
    user_dir_opened: bool,
    /// The doc shows the daemon's log lines under the command that caused them.
    output_is_daemon_log: bool,
}

type Hook = Box<dyn FnOnce(&mut Session)>;

impl Session {
    /// `relay`: the test relay's options, standing for the doc's port `doc_port`.
    fn new(relay: Option<(RelayOpts, &str)>) -> Session {
        let env = Env::new("url = \"smtp://localhost:1\"", "");
        let bin = env.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for (name, to) in [("relayq", BIN), ("sendmail", SENDMAIL), ("mailq", BIN)] {
            std::os::unix::fs::symlink(to, bin.join(name)).unwrap();
        }
        let mut s = Session {
            subs: vec![
                ("/tmp/dx/ca".into(), ca_dir().display().to_string()),
                ("/tmp/dx".into(), env.path().display().to_string()),
                (
                    "/usr/sbin/sendmail".into(),
                    bin.join("sendmail").display().to_string(),
                ),
                (
                    "/usr/sbin/relayq".into(),
                    bin.join("relayq").display().to_string(),
                ),
            ],
            env,
            bin,
            ids: HashMap::new(),
            relay: None,
            daemon: None,
            cwd: repo(),
            last_code: 0,
            hooks: vec![],
            user_dir_opened: false,
            output_is_daemon_log: false,
        };
        if let Some((o, doc_port)) = relay {
            let r = Relay::start(s.env.path(), o);
            s.subs.push((doc_port.to_string(), r.port.to_string()));
            s.relay = Some(r);
        }
        s
    }

    fn dx(&self, p: &str) -> PathBuf {
        PathBuf::from(self.to_real(p))
    }

    fn to_real(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (doc, real) in &self.subs {
            s = s.replace(doc.as_str(), real);
        }
        for (doc, real) in &self.ids {
            s = s.replace(doc.as_str(), real);
        }
        s
    }

    fn to_doc(&self, s: &str) -> String {
        let mut s = s.to_string();
        let mut subs = self.subs.clone();
        subs.sort_by_key(|(_, real)| std::cmp::Reverse(real.len()));
        for (doc, real) in &subs {
            s = s.replace(real.as_str(), doc);
        }
        s
    }

    /// The docs' config (relayq.toml as `relayq setup` writes it) at `/tmp/dx/t/good.toml`,
    /// also `$RELAYQ_CONFIG`, with the spool the Env made.
    fn config(&mut self, url: &str, extra: &str) {
        let dir = self.dx("/tmp/dx/t");
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let spool = self.env.path().join("spool");
        let text = format!(
            "spool_dir = \"{}\"\n\n[relay]\nurl = \"{}\"\nusername = \"server1\"\npassword_file = \"{}\"\nca_file = \"{}\"\ncommand_timeout = 5\n\n[address]\nadmin = \"ops@example.com\"\nsender = \"server1@example.com\"\ndomain = \"example.com\"\naliases = \"/nonexistent\"\n\n[log]\nsyslog = false\n{extra}\n",
            spool.display(),
            self.to_real(url),
            pw.display(),
            ca_dir().join("ca.pem").display()
        );
        let cfg = dir.join("good.toml");
        std::fs::write(&cfg, text).unwrap();
        std::fs::copy(&cfg, &self.env.cfg).unwrap();
        let spool = spool
            .display()
            .to_string()
            .trim_end_matches('/')
            .to_string();
        self.subs
            .insert(0, ("/var/spool/relayq".into(), spool.clone()));
        self.subs.insert(0, ("/tmp/dx/t/spool".into(), spool));
        self.subs.insert(
            0,
            (
                "/tmp/dx/t/good.toml".into(),
                self.env.cfg.display().to_string(),
            ),
        );
    }

    /// Runs `cmd` as root through bash on a pseudo-terminal; its exit code and output lines.
    fn sh(&self, cmd: &str) -> (i32, Vec<String>) {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = self.env.path().join("cmd.out");
        let mut c = Command::new("script")
            .args(["-qefc", cmd, "/dev/null"])
            .env("PATH", path)
            .env("SHELL", "/bin/bash")
            .env("RELAYQ_CONFIG", &self.env.cfg)
            .env("SMTP_PASSWORD", "s3cret")
            .env("TERM", "dumb")
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("script (util-linux)");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("`{cmd}` did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = String::from_utf8_lossy(&std::fs::read(&out).unwrap()).into_owned();
        let lines = text
            .split(['\n', '\r'])
            .filter(|l| !l.is_empty())
            .map(|l| self.to_doc(l))
            .collect();
        (status.code().unwrap_or(-1), lines)
    }

    /// Runs one step as the doc shows it; the mismatch, if any.
    fn step(&mut self, b: &Block, st: &Step) -> Result<(), String> {
        let cmd = self.to_real(&st.cmd);
        let log_before = self.env.daemon_log().lines().count();
        let real = if st.cmd == "echo $?" {
            vec![self.last_code.to_string()]
        } else if let Some(dir) = cmd.strip_prefix("cd ") {
            self.cwd = PathBuf::from(dir);
            vec![]
        } else {
            let cmd = if st.prompt == '$' {
                self.open_to_nobody();
                format!(
                    "setpriv --reuid=65534 --regid=65534 --clear-groups bash -c {}",
                    shell_quote(&cmd)
                )
            } else {
                cmd
            };
            let (code, lines) = self.sh(&cmd);
            self.last_code = code;
            lines
        };
        let real = if self.output_is_daemon_log {
            self.daemon_log_after(log_before, st.output.len())
        } else {
            real
        };
        self.learn_ids(&st.output, &real);
        parse::matches(&st.output, &real).map_err(|e| format!("{} `{}`:\n{e}", b.at(), st.cmd))
    }

    /// The daemon's log lines after the first `skip`, once there are `want` of them (at most
    /// 10 s).
    fn daemon_log_after(&self, skip: usize, want: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let new: Vec<String> = self
                .env
                .daemon_log()
                .lines()
                .skip(skip)
                .map(|l| self.to_doc(l))
                .collect();
            if new.len() >= want || Instant::now() > deadline {
                return new;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Lets user nobody reach the config and the binaries' links (a temp dir is 0700).
    fn open_to_nobody(&mut self) {
        if std::mem::replace(&mut self.user_dir_opened, true) {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let p = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(self.env.path(), p).unwrap();
        std::fs::set_permissions(&self.env.cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// `f` runs before the `nth` (from 0) step of `b` whose command is `cmd`.
    fn before(&mut self, b: &Block, cmd: &str, nth: usize, f: impl FnOnce(&mut Session) + 'static) {
        let i = b
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.cmd == cmd)
            .nth(nth)
            .unwrap_or_else(|| panic!("{}: no step `{cmd}`", b.at()))
            .0;
        self.hooks.push((i, Box::new(f)));
    }

    /// Doc IDs and real IDs, in order of first appearance, are paired.
    fn learn_ids(&mut self, doc: &[String], real: &[String]) {
        let ids = |v: &[String]| {
            let re = regex::Regex::new(r"\b[0-9A-F]{22}\b").unwrap();
            let mut out: Vec<String> = vec![];
            for l in v {
                for m in re.find_iter(l) {
                    if !out.iter().any(|x| x == m.as_str()) {
                        out.push(m.as_str().to_string());
                    }
                }
            }
            out
        };
        let known_real: Vec<String> = self.ids.values().cloned().collect();
        let d: Vec<String> = ids(doc)
            .into_iter()
            .filter(|x| !self.ids.contains_key(x))
            .collect();
        let r: Vec<String> = ids(real)
            .into_iter()
            .filter(|x| !known_real.contains(x))
            .collect();
        for (d, r) in d.into_iter().zip(r) {
            self.ids.insert(d, r);
        }
    }

    /// Starts the daemon and waits (at most 10 s) for its first log line.
    fn start_daemon(&mut self) {
        self.daemon = Some(self.env.daemon_listening());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.env.daemon_log().contains("daemon started") {
            assert!(Instant::now() < deadline, "{}", self.env.daemon_log());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn stop_relay(&mut self) {
        self.relay = None;
    }

    /// The test relay again, on the port it had.
    fn restart_relay(&mut self, o: RelayOpts, port: u16) {
        let mut o = o;
        o.extra = vec!["--port".into(), port.to_string()];
        self.relay = Some(Relay::start(self.env.path(), o));
    }

    /// Waits (at most `secs`) until `f` holds of `relayq status --json`.
    fn wait_status(&self, secs: u64, f: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let o = self.env.relayq(&["status", "--json"]);
            let v: serde_json::Value =
                serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
            if f(&v) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "status never got there: {v}\n{}",
                self.env.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Seeds the doc's queue IDs with the real ones, oldest first.
    fn seed_ids(&mut self, doc: &[&str]) {
        let real = self.queue_ids();
        assert!(real.len() >= doc.len(), "{real:?}");
        for (d, r) in doc.iter().zip(real) {
            self.ids.insert(d.to_string(), r);
        }
    }

    /// `sendmail` as user nobody (through the daemon's socket).
    fn sendmail_as_nobody(&mut self, rcpt: &str) {
        self.open_to_nobody();
        let (code, out) = self.sh(&format!(
            "printf 'Subject: x\\n\\nx\\n' | setpriv --reuid=65534 --regid=65534 --clear-groups sendmail -i {rcpt}"
        ));
        assert_eq!(code, 0, "{out:?}");
    }

    /// Real queue IDs, oldest first (by the JSON listing).
    fn queue_ids(&self) -> Vec<String> {
        let o = self.env.relayq(&["queue", "--json"]);
        let mut v: Vec<(u64, String)> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|j| {
                (
                    j["arrival_time"].as_u64().unwrap_or(0),
                    j["queue_id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    fn sendmail(&self, args: &[&str], msg: &str) -> String {
        let o = self.env.sendmail(args, msg.as_bytes());
        assert!(o.status.success(), "sendmail: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Session {
    fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = d.wait();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop_daemon();
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn server1() -> RelayOpts {
    RelayOpts {
        auth: Some("server1:s3cret"),
        ..Default::default()
    }
}

/// Runs every block marked with `scenario`, each in a fresh session made by `make`.
fn run(scenario: &str, make: impl Fn(&Block) -> Session) {
    let blocks: Vec<Block> = all_blocks()
        .into_iter()
        .filter(|b| b.scenario.as_deref() == Some(scenario))
        .collect();
    assert!(!blocks.is_empty(), "no block is marked {scenario}");
    let mut failures = vec![];
    for b in &blocks {
        let mut s = make(b);
        for (i, st) in b.steps.iter().enumerate() {
            while let Some(k) = s.hooks.iter().position(|(at, _)| *at == i) {
                let (_, h) = s.hooks.remove(k);
                h(&mut s);
            }
            if let Err(e) = s.step(b, st) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn setup() {
    run("setup", |_| {
        let s = Session::new(Some((
            RelayOpts {
                tls: "implicit",
                ..server1()
            },
            "10465",
        )));
        let etc = s.dx("/tmp/dx/etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("relayq.toml"), "[relay]\nprovider = \"smtp2go\"\n").unwrap();
        let mut s = s;
        s.env.cfg = etc.join("relayq.toml");
        s
    });
}

#[test]
fn test() {
    run("test", |_| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        s
    });
}

#[test]
fn import() {
    run("import", |_| {
        let mut s = Session::new(None);
        let imp = s.dx("/tmp/dx/imp");
        std::fs::create_dir(&imp).unwrap();
        s.env.cfg = imp.join("relayq.toml");
        s
    });
}

/// Three messages, one recipient greylisted, the others delivered by a flush; then a fourth
/// message put on hold (admin.md, mailq).
#[test]
fn queue() {
    run("queue", |b| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        let r = s.relay.as_ref().unwrap();
        r.set_faults(r#"{"rcpt": {"slow@example.org": "451 4.2.0 greylisted, try again later"}}"#);
        s.sendmail(
            &["-t", "-i"],
            "To: ops@example.com\nSubject: backup done\n\nok\n",
        );
        s.sendmail(
            &["-t", "-i"],
            "To: slow@example.org\nSubject: invoice 1042\n\nattached\n",
        );
        s.sendmail(
            &["-t", "-i"],
            "To: ops@example.com\nSubject: disk 80%\n\n/var\n",
        );
        let o = s.env.flush();
        assert!(o.status.success(), "{}", stderr(&o));
        s.sendmail(
            &["-t", "-i"],
            "From: www-data\nTo: customer@example.net\nSubject: Your order\n\nThanks!\n",
        );
        let ids = s.queue_ids();
        assert_eq!(ids.len(), 2, "{ids:?}");
        let o = s.env.relayq(&["hold", &ids[1]]);
        assert!(o.status.success(), "{}", stderr(&o));
        s.ids
            .insert("06B0E907F4B7A48DCAD164".into(), ids[0].clone());
        s.ids
            .insert("06B0E90859765BC99989E4".into(), ids[1].clone());
        let prom = s.env.path().join("node-exporter");
        std::fs::create_dir(&prom).unwrap();
        s.subs.push((
            "/var/lib/prometheus/node-exporter".into(),
            prom.display().to_string(),
        ));
        if has(b, "relayq status --stuck-after 5s") {
            // The oldest message must have waited longer than 5 s.
            s.before(b, "relayq status --stuck-after 5s", 0, |_| {
                std::thread::sleep(Duration::from_secs(6))
            });
        }
        s
    });
}

/// hold, release with the daemon running (admin.md, relayq hold, release, delete).
#[test]
fn hold() {
    run("hold", |b| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        let release = b
            .steps
            .iter()
            .find(|st| st.cmd.starts_with("relayq release"))
            .unwrap();
        s.before(b, &release.cmd.clone(), 0, |s| s.start_daemon());
        s
    });
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The docs' config for a relay nobody answers at "localhost:10587".
fn relay_gone() -> Session {
    let mut s = Session::new(None);
    s.subs.push(("10587".into(), dead_port().to_string()));
    s.config("smtp://localhost:10587", "");
    s
}

fn has(b: &Block, cmd: &str) -> bool {
    b.steps.iter().any(|s| s.cmd == cmd)
}

/// `relayq setup` with the answers the interactive transcript gives, then what it wrote.
#[test]
fn setup_written() {
    run("setup-written", |_| {
        let s = Session::new(None);
        let (code, out) = s.sh(&s.to_real(
            "echo s3cret | relayq -C /tmp/dx/etc/relayq.toml setup --url smtp://localhost:10587 --username server1 --password-stdin --admin ops@example.com --sender server1@example.com --ca-file /tmp/dx/ca/ca.pem --spool-dir /tmp/dx/spool --no-test",
        ));
        assert_eq!(code, 0, "{out:?}");
        s
    });
}

#[test]
fn doctor() {
    run("doctor", |_| {
        let mut s = Session::new(None);
        s.config("smtp://localhost:10587", "");
        s
    });
}

/// Root's and nobody's messages with the daemon running and the relay away; without the
/// daemon for the last block (admin.md, who may).
#[test]
fn users() {
    run("users", |b| {
        let mut s = relay_gone();
        s.start_daemon();
        s.sendmail_as_nobody("ops@example.com");
        s.sendmail(&["-i", "ops@example.com"], "Subject: root's\n\nx\n");
        s.seed_ids(&["06B0E91A9CE112F00AB490", "06B0E91A9CEC59FC58E4E8"]);
        if has(b, "relayq hold --all") {
            s.stop_daemon();
        }
        s
    });
}

/// The daemon running; one recipient greylisted, one refused (its message bounced to the
/// admin), one delivered (admin.md, relayq status).
#[test]
fn status() {
    run("status", |_| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        let r = s.relay.as_ref().unwrap();
        r.set_faults(
            r#"{"rcpt": {"slow@example.org": "451 4.2.0 greylisted, try again later", "nobody@example.org": "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown"}}"#,
        );
        s.start_daemon();
        s.sendmail(&["-i", "slow@example.org"], "Subject: invoice 1042\n\nx\n");
        s.sendmail(&["-i", "nobody@example.org"], "Subject: hello\n\nx\n");
        s.wait_status(20, |v| {
            v["failed"] == 1 && v["deferred"] == 1 && !v["last_delivery"].is_null()
        });
        s
    });
}

/// The relay went away with three messages waiting, the daemon running; it comes back
/// before `relayq flush` (admin.md, the day mail stops; troubleshooting.md).
#[test]
fn outage() {
    run("outage", |b| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        s.start_daemon();
        s.sendmail(
            &["-i", "ops@example.com"],
            "Subject: nightly report\n\nok\n",
        );
        let port = s.relay.as_ref().unwrap().port;
        s.wait_status(20, |v| !v["last_delivery"].is_null());
        s.stop_relay();
        for n in 1..=3 {
            s.sendmail(
                &["-i", "ops@example.com"],
                &format!("Subject: report {n}\n\nok\n"),
            );
        }
        s.wait_status(30, |v| v["relay"]["up"] == false && v["queued"] == 3);
        s.seed_ids(&[
            "06B0E9107E8F74289BFA43",
            "06B0E9107EA4615008CEDA",
            "06B0E9107EB96F63C5780E",
        ]);
        if has(b, "relayq flush") {
            s.before(b, "relayq flush", 0, move |s| {
                s.restart_relay(server1(), port)
            });
            s.before(b, "mailq", 0, |s| {
                s.relay
                    .as_ref()
                    .unwrap()
                    .wait_for(4, Duration::from_secs(30));
                s.wait_status(10, |v| v["queued"] == 0);
            });
        }
        s
    });
}

/// No daemon, nothing listening at the relay's address, two messages (admin.md, flush).
#[test]
fn flush_down() {
    run("flush-down", |_| {
        let s = relay_gone();
        s.sendmail(&["-i", "ops@example.com"], "Subject: a\n\nx\n");
        s.sendmail(&["-i", "ops@example.com"], "Subject: b\n\nx\n");
        s
    });
}

/// 150 messages and no daemon (admin.md, flush's progress line).
#[test]
fn many() {
    run("many", |_| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        for n in 0..150 {
            s.sendmail(&["-i", "ops@example.com"], &format!("Subject: {n}\n\nx\n"));
        }
        s
    });
}

/// Two messages, one to example.org, and no daemon (admin.md, -qR, -qS).
#[test]
fn select() {
    run("select", |_| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        s.sendmail(&["-i", "slow@example.org"], "Subject: a\n\nx\n");
        s.sendmail(&["-i", "ops@example.com"], "Subject: b\n\nx\n");
        s
    });
}

/// The daemon's answers to signals, a typo in the config before the second SIGHUP
/// (admin.md, signals).
#[test]
fn signals() {
    run("signals", |b| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        s.start_daemon();
        s.output_is_daemon_log = true;
        let hup = b
            .steps
            .iter()
            .find(|st| st.cmd.starts_with("kill -HUP"))
            .unwrap()
            .cmd
            .clone();
        s.before(b, &hup, 1, |s| s.config("smtp://localhost:10587", TYPO));
        s
    });
}

/// The docs' config, no relay, no daemon.
#[test]
fn plain() {
    run("plain", |_| {
        let mut s = Session::new(None);
        s.config("smtp://localhost:10587", "");
        s
    });
}

#[test]
fn nonewprivs() {
    run("nonewprivs", |_| {
        let mut s = Session::new(None);
        s.config("smtp://localhost:10587", "");
        s.open_to_nobody();
        s
    });
}

/// The typo the docs show, appended to the docs' config.
const TYPO: &str = "\n[queue]\nretry_max = \"forever\"";

/// A config with a typo (troubleshooting.md, config error).
#[test]
fn bad_config() {
    run("bad-config", |_| {
        let mut s = Session::new(None);
        s.config("smtp://localhost:10587", TYPO);
        s
    });
}

/// A relay that stores the message and hangs up before its reply, once (troubleshooting.md,
/// duplicates).
#[test]
fn dup() {
    run("dup", |_| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        s.relay
            .as_ref()
            .unwrap()
            .set_faults(r#"{"dot_then_disconnect": true, "count": 1}"#);
        s.sendmail(&["-i", "ops@example.com"], "Subject: x\n\nx\n");
        s
    });
}

/// A file that is not a queue file dropped into new/, the daemon running.
#[test]
fn corrupt() {
    run("corrupt", |_| {
        let mut s = relay_gone();
        std::fs::write(s.env.spool("new").join("06B0E91F00000000DEADBE"), "junk\n").unwrap();
        s.start_daemon();
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.env.count("corrupt") == 0 {
            assert!(Instant::now() < deadline, "{}", s.env.daemon_log());
            std::thread::sleep(Duration::from_millis(25));
        }
        s
    });
}

/// A recipient refused, its message bounced and kept in failed/; the daemon running.
#[test]
fn bounce() {
    run("bounce", |_| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        s.relay.as_ref().unwrap().set_faults(
            r#"{"rcpt": {"nobody@example.org": "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown"}}"#,
        );
        s.start_daemon();
        s.sendmail(
            &["-i", "nobody@example.org", "ops@example.com"],
            "Subject: x\n\nx\n",
        );
        s.wait_status(20, |v| v["failed"] == 1);
        let failed: Vec<String> = std::fs::read_dir(s.env.spool("failed"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        s.ids
            .insert("06B0E90959879F5BC3F40C".into(), failed[0].clone());
        s.ids
            .insert("06B0E91714F9EB82596EDA".into(), failed[0].clone());
        s
    });
}

/// The daemon running, the relay refusing the password (admin.md, mailq with the relay down).
#[test]
fn auth() {
    run("auth", |_| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        std::fs::write(s.dx("/tmp/dx/t/pw"), "wrong\n").unwrap();
        s.start_daemon();
        s.sendmail(&["-i", "ops@example.com"], "Subject: x\n\nx\n");
        s.wait_status(20, |v| v["relay"]["up"] == false);
        s
    });
}

/// A recipient refused, and the bounce to the admin refused too (troubleshooting.md,
/// bounces; #13: a refused bounce makes status say so and exit 1).
#[test]
fn bounce_refused() {
    run("bounce-refused", |_| {
        let mut s = Session::new(Some((server1(), "10587")));
        s.config("smtp://localhost:10587", "");
        s.relay.as_ref().unwrap().set_faults(
            r#"{"rcpt": {"nobody@example.org": "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown", "ops@example.com": "550 5.1.1 <ops@example.com>: Recipient address rejected: User unknown"}}"#,
        );
        s.start_daemon();
        s.sendmail(&["-i", "nobody@example.org"], "Subject: x\n\nx\n");
        s.wait_status(20, |v| v["failed"] == 2);
        s
    });
}
