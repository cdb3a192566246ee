//! Shared pieces for the daemon tests: a real SMTP relay (tests/relay/relay.py, aiosmtpd)
//! started per test on a free loopback port, a spool and config in a temp dir, and helpers to
//! run the real `relayq` binary as callers do.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_relayq");
/// What /usr/sbin/sendmail is installed as: the submission front end, beside `BIN`.
pub const SENDMAIL: &str = env!("CARGO_BIN_EXE_relayq-sendmail");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test CA, made once per test process.
pub fn ca_dir() -> PathBuf {
    static CA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("relayq-test-ca-{}", std::process::id()));
        let st = Command::new("bash")
            .arg(repo().join("tests/relay/mkca.sh"))
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("mkca.sh");
        assert!(st.success(), "mkca.sh failed");
        dir
    })
    .clone()
}

pub struct Relay {
    pub child: Child,
    pub port: u16,
    pub outdir: PathBuf,
    pub faults: PathBuf,
    pub stats: PathBuf,
}

#[derive(Clone)]
pub struct RelayOpts {
    pub tls: &'static str,
    pub cert: &'static str,
    pub auth: Option<&'static str>,
    pub extra: Vec<String>,
}

impl Default for RelayOpts {
    fn default() -> Self {
        RelayOpts {
            tls: "starttls",
            cert: "server",
            auth: Some("user:secret"),
            extra: vec![],
        }
    }
}

impl RelayOpts {
    /// Plain SMTP without AUTH on loopback: for tests about the queue, not the session.
    pub fn plain() -> Self {
        RelayOpts {
            tls: "none",
            auth: None,
            ..Default::default()
        }
    }
}

impl Relay {
    pub fn start(dir: &Path, o: RelayOpts) -> Relay {
        let ca = ca_dir();
        let outdir = dir.join("arrived");
        let faults = dir.join("faults.json");
        let stats = dir.join("stats.json");
        let port_file = dir.join("relay.port");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(repo().join("tests/relay/relay.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--tls", o.tls])
            .arg("--port-file")
            .arg(&port_file)
            .arg("--outdir")
            .arg(&outdir)
            .arg("--faults")
            .arg(&faults)
            .arg("--stats")
            .arg(&stats)
            .arg("--cert")
            .arg(ca.join(format!("{}.pem", o.cert)))
            .arg("--key")
            .arg(ca.join(format!("{}.key", o.cert)))
            .args(&o.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(a) = o.auth {
            cmd.args(["--auth", a, "--auth-required"]);
        }
        let child = cmd
            .spawn()
            .expect("start relay.py (is python3-aiosmtpd installed? run scripts/deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file)
                && let Ok(p) = s.trim().parse::<u16>()
            {
                break p;
            }
            assert!(Instant::now() < deadline, "relay did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Relay {
            child,
            port,
            outdir,
            faults,
            stats,
        }
    }

    pub fn set_faults(&self, json: &str) {
        let tmp = self.faults.with_extension("tmp");
        std::fs::write(&tmp, json).unwrap();
        std::fs::rename(&tmp, &self.faults).unwrap();
        // The relay notices a new mtime; make sure it differs from the last write.
        std::thread::sleep(Duration::from_millis(20));
    }

    /// Messages the relay accepted, in arrival order.
    pub fn arrived(&self) -> Vec<serde_json::Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.outdir)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok())
            .collect()
    }

    pub fn stat(&self, key: &str) -> u64 {
        std::fs::read_to_string(&self.stats)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v[key].as_u64())
            .unwrap_or(0)
    }

    /// Wait until `n` messages arrived (bounded).
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let a = self.arrived();
            if a.len() >= n || Instant::now() > deadline {
                return a;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A spool and config for one test.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
}

impl Env {
    /// `relay_toml`: the [relay] table body; `extra`: more TOML appended.
    pub fn new(relay_toml: &str, extra: &str) -> Env {
        Env::with("", relay_toml, extra)
    }

    /// `top`: top-level keys (before any table).
    pub fn with(top: &str, relay_toml: &str, extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("password");
        std::fs::write(&pw, "secret\n").unwrap();
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let cfg = dir.path().join("relayq.toml");
        let text = format!(
            "{top}spool_dir = \"{spool}\"\n\n[relay]\n{relay_toml}\n\n[address]\nadmin = \"admin@example.com\"\nsender = \"server@example.com\"\ndomain = \"example.com\"\naliases = \"/nonexistent\"\n\n[log]\nsyslog = false\n{extra}\n",
            spool = dir.path().join("spool").display(),
            relay_toml = relay_toml.replace("PASSWORD_FILE", &pw.display().to_string()),
        );
        std::fs::write(&cfg, text).unwrap();
        let e = Env { dir, cfg };
        // The spool belongs to whoever runs the tests, even where a `relayq` user exists
        // (an installed package): the daemon would drop to it and lose the temp files.
        let me = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "root".into());
        let o = e.relayq(&["init", "--user", &me]);
        assert!(
            o.status.success(),
            "init: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        e
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn spool(&self, sub: &str) -> PathBuf {
        self.dir.path().join("spool").join(sub)
    }

    pub fn relayq(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("-C")
            .arg(&self.cfg)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Run `sendmail args` with `input` on stdin, through a symlink named sendmail.
    pub fn sendmail(&self, args: &[&str], input: &[u8]) -> Output {
        let link = self.dir.path().join("sendmail");
        if !link.exists() {
            std::os::unix::fs::symlink(SENDMAIL, &link).unwrap();
        }
        let mut c = Command::new(&link)
            .args(args)
            .env("RELAYQ_CONFIG", &self.cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = c.stdin.take().unwrap().write_all(input); // sendmail may stop reading early (EPIPE)
        c.wait_with_output().unwrap()
    }

    pub fn send(&self, rcpts: &[&str], subject: &str) {
        let msg = format!("Subject: {subject}\n\nbody of {subject}\n");
        let o = self.sendmail(rcpts, msg.as_bytes());
        assert!(
            o.status.success(),
            "sendmail: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `relayq flush`, bounded.
    pub fn flush(&self) -> Output {
        // Output goes to files: a pipe read only at the end would fill up and stall a
        // flush that logs thousands of lines.
        let out = self.dir.path().join("flush.out");
        let err = self.dir.path().join("flush.err");
        let mut c = Command::new(BIN)
            .arg("-C")
            .arg(&self.cfg)
            .arg("flush")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut c, Duration::from_secs(60), "relayq flush");
        Output {
            status,
            stdout: std::fs::read(&out).unwrap(),
            stderr: std::fs::read(&err).unwrap(),
        }
    }

    /// Start the daemon; its log goes to `daemon.log` in the test dir (a pipe nobody
    /// reads would fill up and stall it).
    pub fn daemon(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        Command::new(BIN)
            .arg("-C")
            .arg(&self.cfg)
            .args(["daemon", "--foreground"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Start the daemon and wait (at most 10 s) until its socket is there: it then takes
    /// flush and queue requests.
    pub fn daemon_listening(&self) -> Child {
        let d = self.daemon();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spool("run").join("submit.sock").exists() {
            assert!(Instant::now() < deadline, "daemon: {}", self.daemon_log());
            std::thread::sleep(Duration::from_millis(25));
        }
        d
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Queue files (not state logs) in a spool directory.
    pub fn count(&self, sub: &str) -> usize {
        std::fs::read_dir(self.spool(sub))
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .filter(|e| !e.file_name().to_string_lossy().ends_with(".st"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Messages still to deliver (new/ + queue/).
    pub fn queued(&self) -> usize {
        self.count("new") + self.count("queue")
    }
}

pub fn subject_of(m: &serde_json::Value) -> String {
    m["data"]
        .as_str()
        .unwrap_or("")
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .trim()
        .to_string()
}

pub fn rcpts_of(m: &serde_json::Value) -> Vec<String> {
    m["rcpt_tos"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Wait for `c` to exit, at most `within`; past that, kill it and fail naming `what`.
pub fn wait_exit(c: &mut Child, within: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("{what} did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The [relay] table for the plaintext test relay (`RelayOpts::plain()`) on loopback `port`.
pub fn plain_relay_toml(port: u16) -> String {
    format!("url = \"smtp://127.0.0.1:{port}\"\nallow_plaintext = true")
}

/// The [relay] table for a relay on `port` with the test CA.
pub fn relay_toml(scheme: &str, port: u16) -> String {
    format!(
        "url = \"{scheme}://localhost:{port}\"\nusername = \"user\"\npassword_file = \"PASSWORD_FILE\"\nca_file = \"{}\"\nca_only = true\nconnect_timeout = 5\ncommand_timeout = 5\ndata_timeout = 10",
        ca_dir().join("ca.pem").display()
    )
}

/// Where scripts/deps.sh puts the test clients from PyPI and npm (a venv, node_modules).
pub fn deps_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RELAYQ_TEST_DEPS") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    cache.join("relayq-test-deps")
}

/// The local DNS server; killed when dropped.
pub struct Dns {
    child: Child,
    pub addr: String,
}

impl Dns {
    /// tests/dns/dnsd.py serving `zone` (JSON, see there) on a free loopback UDP port.
    pub fn start(dir: &Path, zone: &str) -> Dns {
        let zone_file = dir.join("zone.json");
        let port_file = dir.join("dns.port");
        std::fs::write(&zone_file, zone).unwrap();
        let child = Command::new("/usr/bin/python3")
            .arg(repo().join("tests/dns/dnsd.py"))
            .arg("--zone")
            .arg(&zone_file)
            .arg("--port-file")
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dnsd.py");
        let mut dns = Dns {
            child,
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while dns.addr.is_empty() {
            if let Ok(p) = std::fs::read_to_string(&port_file)
                && let Ok(p) = p.trim().parse::<u16>()
            {
                dns.addr = format!("127.0.0.1:{p}");
            }
            assert!(Instant::now() < deadline, "dnsd.py did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        dns
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stop a daemon as its service manager does (SIGTERM) and wait for it.
pub fn stop_daemon(d: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = d.wait();
}
