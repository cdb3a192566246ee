//! The daemon's loopback SMTP listener (`[listen]`), driven by real SMTP clients — Python's
//! smtplib (plain, and a session that pipelines several commands per write), swaks, Python's
//! logging.handlers.SMTPHandler, Django's send_mail, nodemailer — each message delivered end
//! to end to the test relay with the right envelope and a trace field naming the client.
//! Also: a non-loopback address is a config error (exit 78); the connection cap and the
//! idle timeout answer 421; 100 concurrent clients × 10 messages with the daemon SIGKILLed
//! once mid-run lose no message that got a 250.
//!
//! Django and nodemailer come from PyPI and npm: scripts/deps.sh installs them in
//! $RELAYQ_TEST_DEPS (default ~/.cache/relayq-test-deps).

mod support;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A relay, and a spool whose daemon listens on a free loopback port.
struct Setup {
    relay: Relay,
    env: Env,
    port: u16,
    _tmp: tempfile::TempDir,
}

impl Setup {
    fn new(listen_extra: &str) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let relay = Relay::start(tmp.path(), RelayOpts::plain());
        let port = free_port();
        let env = Env::new(
            &format!(
                "url = \"smtp://127.0.0.1:{}\"\nallow_plaintext = true\ncommand_timeout = 10",
                relay.port
            ),
            &format!("\n[listen]\naddresses = [\"127.0.0.1:{port}\"]\n{listen_extra}"),
        );
        Setup {
            relay,
            env,
            port,
            _tmp: tmp,
        }
    }

    /// Start the daemon and wait (bounded) until the listener answers.
    fn daemon(&self) -> Child {
        let d = self.env.daemon_listening();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "listener not up: {}",
                self.env.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        d
    }

    /// The one message with this subject that reached the relay (bounded wait).
    fn arrived(&self, subject: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(m) = self
                .relay
                .arrived()
                .into_iter()
                .find(|m| subject_of(m) == subject)
            {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{subject:?} never reached the relay; daemon log:\n{}",
                self.env.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn stop(mut d: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = d.wait();
}

/// Run a Python program with /usr/bin/python3 (or another interpreter), bounded; argv[1]
/// is the listener's port.
fn python(interp: &str, prog: &str, port: u16) -> Output {
    run_bounded(
        Command::new(interp)
            .arg("-c")
            .arg(prog)
            .arg(port.to_string()),
    )
}

fn run_bounded(cmd: &mut Command) -> Output {
    let mut c = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start client");
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = c.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.wait_with_output().unwrap()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

fn header(m: &serde_json::Value, name: &str) -> Vec<String> {
    let data = m["data"].as_str().unwrap_or("");
    let head = data.split("\r\n\r\n").next().unwrap_or("");
    let mut out: Vec<String> = Vec::new();
    let mut inside = false;
    for l in head.split("\r\n") {
        if l.starts_with([' ', '\t']) {
            if inside && let Some(last) = out.last_mut() {
                last.push(' ');
                last.push_str(l.trim());
            }
        } else if let Some((n, v)) = l.split_once(':') {
            inside = n.eq_ignore_ascii_case(name);
            if inside {
                out.push(v.trim().to_string());
            }
        }
    }
    out
}

/// The envelope the relay saw, and the listener's trace field naming the client.
fn check(m: &serde_json::Value, from: &str, rcpts: &[&str], client_port: Option<u16>) {
    assert_eq!(m["mail_from"], from, "{m}");
    assert_eq!(rcpts_of(m), rcpts, "{m}");
    let trace: Vec<String> = header(m, "Received")
        .into_iter()
        .filter(|r| r.contains("relayq listener"))
        .collect();
    assert_eq!(trace.len(), 1, "one listener trace field: {m}");
    assert!(
        trace[0].starts_with("from ") && trace[0].contains("([127.0.0.1] port "),
        "{}",
        trace[0]
    );
    assert!(trace[0].contains(" with ESMTP;"), "{}", trace[0]);
    if let Some(p) = client_port {
        assert!(
            trace[0].contains(&format!("([127.0.0.1] port {p})")),
            "{}",
            trace[0]
        );
    }
}

#[test]
fn python_smtplib_plain_session() {
    let s = Setup::new("");
    let d = s.daemon();
    let prog = r#"
import smtplib, sys
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "App <app@shop.example>"
m["To"] = "alice@example.org"
m["Subject"] = "smtplib plain"
m.set_content("héllo from smtplib\n.leading dot\n")
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20) as c:
    c.ehlo("app.local")
    assert c.has_extn("pipelining") and c.has_extn("size") and c.has_extn("8bitmime")
    assert c.has_extn("smtputf8") and c.has_extn("dsn"), c.esmtp_features
    c.send_message(m, to_addrs=["alice@example.org", "bob@example.org"])
    print(c.sock.getsockname()[1])
"#;
    let o = python("/usr/bin/python3", prog, s.port);
    assert_ok(&o, "smtplib");
    let client_port: u16 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let m = s.arrived("smtplib plain");
    check(
        &m,
        "app@shop.example",
        &["alice@example.org", "bob@example.org"],
        Some(client_port),
    );
    let data = m["data"].as_str().unwrap();
    assert!(data.contains("Received: from app.local ("), "{data}");
    assert!(data.contains("\r\n.leading dot"), "dot-unstuffed: {data}");
    // One log line for the accepted message, with the client's address.
    let log = s.env.daemon_log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("client=127.0.0.1:{client_port},"))
                && l.contains("from=<app@shop.example>")
                && l.contains("nrcpt=2")
                && l.contains("size=")),
        "{log}"
    );
    stop(d);
}

/// Several commands in one write, twice: the envelope and DATA of the first message, then
/// the end of its data with the whole next transaction and QUIT. Every reply must come
/// (flushed before the server waits), in order, and nothing after the final dot is lost.
#[test]
fn python_pipelined_session() {
    let s = Setup::new("");
    let d = s.daemon();
    let prog = r#"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
f = s.makefile("rb")
def replies(n):
    out = []
    while len(out) < n:
        l = f.readline()
        assert l, "connection closed after %r" % out
        if l[3:4] == b" ":
            out.append(l[:3].decode())
    return out
assert replies(1) == ["220"]
s.sendall(b"EHLO pipe.local\r\n")
assert replies(1) == ["250"]
s.sendall(b"MAIL FROM:<pipe@shop.example> BODY=8BITMIME\r\nRCPT TO:<one@example.org>\r\n"
          b"RCPT TO:<two@example.org> NOTIFY=NEVER\r\nDATA\r\n")
assert replies(4) == ["250", "250", "250", "354"]
s.sendall(b"Subject: pipelined 1\r\n\r\nfirst\r\n.\r\n"
          b"MAIL FROM:<pipe@shop.example>\r\nRCPT TO:<three@example.org>\r\nDATA\r\n")
got = replies(4)
assert got == ["250", "250", "250", "354"], got
s.sendall(b"Subject: pipelined 2\r\n\r\nsecond\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
assert replies(4) == ["250", "250", "250", "221"]
"#;
    let o = python("/usr/bin/python3", prog, s.port);
    assert_ok(&o, "pipelined session");
    let m = s.arrived("pipelined 1");
    check(
        &m,
        "pipe@shop.example",
        &["one@example.org", "two@example.org"],
        None,
    );
    let m = s.arrived("pipelined 2");
    check(&m, "pipe@shop.example", &["three@example.org"], None);
    stop(d);
}

#[test]
fn swaks_with_pipelining() {
    let s = Setup::new("");
    let d = s.daemon();
    let o = run_bounded(
        Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", s.port)])
            .args(["--helo", "swaks.local", "--pipeline"])
            .args(["--from", "swaks@shop.example"])
            .args(["--to", "carol@example.org,dave@example.org"])
            .args(["--header", "Subject: via swaks", "--body", "swaks body"]),
    );
    assert_ok(&o, "swaks");
    let m = s.arrived("via swaks");
    check(
        &m,
        "swaks@shop.example",
        &["carol@example.org", "dave@example.org"],
        None,
    );
    assert!(m["data"].as_str().unwrap().contains("swaks body"));
    stop(d);
}

#[test]
fn python_logging_smtphandler() {
    let s = Setup::new("");
    let d = s.daemon();
    let prog = r#"
import logging, logging.handlers, sys
h = logging.handlers.SMTPHandler(("127.0.0.1", int(sys.argv[1])), "alerts@shop.example",
                                 ["ops@example.org"], "SMTPHandler alert", timeout=20)
h.handleError = lambda record: (_ for _ in ()).throw(RuntimeError("SMTPHandler failed"))
log = logging.getLogger("app")
log.addHandler(h)
log.error("disk almost full on %s", "db1")
"#;
    let o = python("/usr/bin/python3", prog, s.port);
    assert_ok(&o, "SMTPHandler");
    let m = s.arrived("SMTPHandler alert");
    check(&m, "alerts@shop.example", &["ops@example.org"], None);
    assert!(
        m["data"]
            .as_str()
            .unwrap()
            .contains("disk almost full on db1")
    );
    stop(d);
}

#[test]
fn django_send_mail() {
    let py = deps_dir().join("venv/bin/python");
    assert!(
        py.exists(),
        "{} missing: run scripts/deps.sh (Django in a venv)",
        py.display()
    );
    let s = Setup::new("");
    let d = s.daemon();
    let prog = r#"
import sys
from django.conf import settings
settings.configure(EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
                   EMAIL_HOST="127.0.0.1", EMAIL_PORT=int(sys.argv[1]), EMAIL_TIMEOUT=20)
import django
django.setup()
from django.core.mail import send_mail
n = send_mail("Django welcome", "Welcome, Émile.", "noreply@shop.example",
              ["emile@example.org"], fail_silently=False)
assert n == 1, n
"#;
    let o = python(py.to_str().unwrap(), prog, s.port);
    assert_ok(&o, "django send_mail");
    let m = s.arrived("Django welcome");
    check(&m, "noreply@shop.example", &["emile@example.org"], None);
    stop(d);
}

#[test]
fn nodemailer_over_smtp() {
    let modules = deps_dir().join("node/node_modules");
    assert!(
        modules.join("nodemailer").exists(),
        "{} missing: run scripts/deps.sh (nodemailer from npm)",
        modules.join("nodemailer").display()
    );
    let s = Setup::new("");
    let d = s.daemon();
    let prog = r#"
const nodemailer = require("nodemailer");
const t = nodemailer.createTransport({host: "127.0.0.1", port: Number(process.argv[1]),
  secure: false, ignoreTLS: true, name: "node.local", connectionTimeout: 20000});
t.sendMail({from: "node@shop.example", to: "frank@example.org, grace@example.org",
  subject: "nodemailer hello", text: "sent by nodemailer"})
 .then(info => { if (info.accepted.length !== 2) { throw new Error(JSON.stringify(info)); } })
 .catch(e => { console.error(e); process.exit(1); });
"#;
    let o = run_bounded(
        Command::new("node")
            .env("NODE_PATH", &modules)
            .args(["-e", prog, "--"])
            .arg(s.port.to_string()),
    );
    assert_ok(&o, "nodemailer");
    let m = s.arrived("nodemailer hello");
    check(
        &m,
        "node@shop.example",
        &["frank@example.org", "grace@example.org"],
        None,
    );
    stop(d);
}

/// A wildcard or another host's address: the config is refused (78) with one line naming
/// the setting, by the daemon and by everything else that reads the file.
#[test]
fn non_loopback_address_is_a_config_error() {
    for addr in ["0.0.0.0", "[::]", "192.0.2.1"] {
        let env = Env::new(&plain_relay_toml(1), "");
        let mut text = std::fs::read_to_string(&env.cfg).unwrap();
        text.push_str(&format!(
            "\n[listen]\naddresses = [\"127.0.0.1:{}\", \"{addr}:2525\"]\n",
            free_port()
        ));
        std::fs::write(&env.cfg, text).unwrap();
        let mut d = env.daemon();
        let st = wait_exit(
            &mut d,
            Duration::from_secs(10),
            &format!("the daemon (with {addr})"),
        );
        assert_eq!(st.code(), Some(78), "{addr}: {}", env.daemon_log());
        let log = env.daemon_log();
        assert_eq!(log.trim_end().lines().count(), 1, "one line: {log}");
        assert!(
            log.contains("listen.addresses") && log.contains("loopback"),
            "{log}"
        );
    }
}

/// Read the greeting (or refusal) of a new connection.
fn greeting(port: u16) -> (TcpStream, String) {
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line).unwrap();
    (c, line)
}

#[test]
fn connections_over_the_cap_hear_421() {
    let s = Setup::new("max_connections = 2\n");
    let d = s.daemon();
    // The readiness check's connection holds a place until its thread sees it gone: two
    // clients are both served once it has (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (a, _b) = loop {
        let (a, g1) = greeting(s.port);
        let (b, g2) = greeting(s.port);
        if g1.starts_with("220 ") && g2.starts_with("220 ") {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "two clients never served: {g1}{g2}"
        );
        drop((a, b));
        std::thread::sleep(Duration::from_millis(100));
    };
    let (_c, g3) = greeting(s.port);
    assert!(g3.starts_with("421 4.3.2 "), "{g3:?}");
    // One leaves: a new client is served again (bounded).
    (&a).write_all(b"QUIT\r\n").unwrap();
    let mut rest = String::new();
    let _ = BufReader::new(&a).read_to_string(&mut rest);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_e, g) = greeting(s.port);
        if g.starts_with("220 ") {
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {g}");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(d);
}

#[test]
fn an_idle_client_is_dropped_with_421() {
    let s = Setup::new("timeout = \"1s\"\n");
    let d = s.daemon();
    let (c, g) = greeting(s.port);
    assert!(g.starts_with("220 "), "{g}");
    (&c).write_all(b"EHLO idle.local\r\nMAIL FROM:<a@shop.example>\r\n")
        .unwrap();
    // ... and then nothing: the listener says why it hangs up, and closes.
    let mut rest = String::new();
    BufReader::new(&c).read_to_string(&mut rest).unwrap();
    let last = rest.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("421 4.4.2 "), "{rest}");
    stop(d);
}

/// A browser made to POST to the port (cross-protocol) gets no SMTP session.
#[test]
fn http_requests_are_hung_up_on() {
    let s = Setup::new("");
    let d = s.daemon();
    let (c, _) = greeting(s.port);
    (&c).write_all(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nMAIL FROM:<x@shop.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: cross\r\n\r\nx\r\n.\r\n",
    )
    .unwrap();
    let mut rest = String::new();
    let _ = BufReader::new(&c).read_to_string(&mut rest);
    assert!(rest.starts_with("421 4.7.0 "), "{rest}");
    assert!(!rest.contains("250"), "{rest}");
    assert_eq!(s.env.queued(), 0);
    stop(d);
}

/// A small SMTP client: one connection for as many messages as it can; Ok(true) when the
/// message got its 250.
struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> std::io::Result<Smtp> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        let mut c = Smtp {
            r: BufReader::new(s.try_clone()?),
            w: s,
        };
        if c.reply()? != 220 {
            return Err(std::io::Error::other("no 220"));
        }
        c.w.write_all(b"EHLO load.local\r\n")?;
        if c.reply()? != 250 {
            return Err(std::io::Error::other("EHLO refused"));
        }
        Ok(c)
    }

    fn reply(&mut self) -> std::io::Result<u32> {
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if l.len() < 4 {
                return Err(std::io::Error::other("short reply"));
            }
            if l.as_bytes()[3] == b' ' {
                return l[..3].parse().map_err(std::io::Error::other);
            }
        }
    }

    fn send(&mut self, subject: &str) -> std::io::Result<bool> {
        // Pipelined: MAIL, RCPT and DATA in one write.
        self.w.write_all(
            b"MAIL FROM:<load@shop.example>\r\nRCPT TO:<sink@example.org>\r\nDATA\r\n",
        )?;
        let (m, r, d) = (self.reply()?, self.reply()?, self.reply()?);
        if (m, r, d) != (250, 250, 354) {
            return Ok(false);
        }
        self.w.write_all(
            format!("Subject: {subject}\r\n\r\nload test {subject}\r\n.\r\n").as_bytes(),
        )?;
        Ok(self.reply()? == 250)
    }
}

/// 100 clients at once, 10 messages each, and the daemon SIGKILLed once mid-run, then
/// started again: every message that got a 250 reaches the relay (at least once). Clients
/// retry what was not accepted, as MTAs and mail libraries' callers do.
#[test]
fn hundred_concurrent_clients_survive_a_sigkill() {
    const CLIENTS: usize = 100;
    const EACH: usize = 10;
    let s = Setup::new("");
    let d = s.daemon();
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let port = s.port;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(240);
                let mut conn: Option<Smtp> = None;
                let mut next = 0;
                while next < EACH && Instant::now() < deadline {
                    let subject = format!("load c{c:03} m{next:02}");
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match Smtp::connect(port) {
                            Ok(c) => conn.insert(c),
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(100));
                                continue;
                            }
                        },
                    };
                    match c.send(&subject) {
                        Ok(true) => {
                            accepted.lock().unwrap().push(subject);
                            next += 1;
                        }
                        // Not accepted (the daemon died, a 4xx): again, on a new connection.
                        _ => {
                            conn = None;
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
        })
        .collect();
    // Mid-run: once a third of the messages got their 250.
    let deadline = Instant::now() + Duration::from_secs(120);
    while accepted.lock().unwrap().len() < CLIENTS * EACH / 3 {
        assert!(
            Instant::now() < deadline,
            "slow: {} accepted; {}",
            accepted.lock().unwrap().len(),
            s.env.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut d = d;
    d.kill().unwrap();
    d.wait().unwrap();
    let at_kill = accepted.lock().unwrap().len();
    assert!(at_kill < CLIENTS * EACH, "the kill came after the run");
    let d = s.daemon();
    for t in threads {
        t.join().unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), CLIENTS * EACH, "every client finished");
    // Duplicates may come (a 250 lost with the daemon): wait for every subject, bounded.
    let deadline = Instant::now() + Duration::from_secs(180);
    let (arrived, missing) = loop {
        let arrived = s.relay.arrived();
        let got: std::collections::HashSet<String> = arrived.iter().map(subject_of).collect();
        let missing: Vec<String> = accepted
            .iter()
            .filter(|a| !got.contains(*a))
            .cloned()
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (arrived, missing);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        missing.is_empty(),
        "{} of {} accepted messages never arrived, e.g. {:?}",
        missing.len(),
        accepted.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(at_kill > 0);
    for m in &arrived {
        assert_eq!(m["mail_from"], "load@shop.example");
        assert_eq!(rcpts_of(m), ["sink@example.org"]);
    }
    stop(d);
}

/// Start the daemon as systemd would for relayq.socket: the listening socket `l` as fd 3,
/// LISTEN_FDS=1 and LISTEN_PID set to the daemon's own pid (by a shell that then execs it).
fn socket_activated(env: &Env, l: &std::net::TcpListener) -> Child {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = l.as_raw_fd();
    let log = std::fs::File::create(env.path().join("daemon.log")).unwrap();
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"",
        BIN,
        "-C",
        env.cfg.to_str().unwrap(),
        "daemon",
        "--foreground",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log);
    // SAFETY: only dup2 and fcntl, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear it instead.
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(fd, 3) >= 0
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

/// relayq.socket: the daemon serves the socket systemd passes (no [listen] addresses
/// needed), and refuses one that is not on a loopback address (exit 78).
#[test]
fn socket_activation() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::plain());
    let env = Env::new(&plain_relay_toml(relay.port), "");
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let d = socket_activated(&env, &l);
    drop(l);
    let prog = r#"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20) as c:
    c.sendmail("act@shop.example", ["henry@example.org"],
               "Subject: socket activated\r\n\r\nhello\r\n")
"#;
    let o = python("/usr/bin/python3", prog, port);
    assert_ok(&o, "smtplib via the passed socket");
    let m = relay.wait_for(1, Duration::from_secs(30));
    assert_eq!(m.len(), 1, "{}", env.daemon_log());
    assert_eq!(subject_of(&m[0]), "socket activated");
    check(&m[0], "act@shop.example", &["henry@example.org"], None);
    stop(d);

    let wild = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let mut d = socket_activated(&env, &wild);
    let st = wait_exit(
        &mut d,
        Duration::from_secs(10),
        "the daemon given a wildcard socket",
    );
    assert_eq!(st.code(), Some(78), "{}", env.daemon_log());
    assert!(env.daemon_log().contains("not a loopback address"));
}
