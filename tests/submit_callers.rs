//! Every invocation in shared/CALLERS.md, run through a symlink named `sendmail` with the
//! caller's real argv and stdin; each must queue a correct message: envelope after
//! rewriting, Date/Message-ID/From exactly once, no Bcc, CRLF only, body intact.

mod support;
use relayq::spool::Envelope;
use std::io::{BufReader, Read};
use support::*;

struct Queued {
    env: Envelope,
    header: String,
    body: String,
    raw: Vec<u8>,
}

fn only_queued(env: &Env) -> Queued {
    let files: Vec<_> = std::fs::read_dir(env.spool("new"))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(files.len(), 1, "exactly one queued message");
    let mut r = BufReader::new(std::fs::File::open(files[0].path()).unwrap());
    let e = Envelope::read_from(&mut r).unwrap();
    let mut raw = Vec::new();
    r.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (header, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or((text.clone(), String::new()));
    Queued {
        env: e,
        header,
        body,
        raw,
    }
}

fn count_header(h: &str, name: &str) -> usize {
    h.split("\r\n")
        .filter(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l.as_bytes()[name.len()] == b':'
        })
        .count()
}

fn header_value(h: &str, name: &str) -> String {
    h.split("\r\n")
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim().to_string())
        .unwrap_or_default()
}

/// Common checks for every caller.
fn check(q: &Queued, rcpts: &[&str], sender: &str, body_has: &str) {
    let got: Vec<&str> = q.env.rcpts.iter().map(|r| r.addr.as_str()).collect();
    assert_eq!(got, rcpts);
    assert_eq!(q.env.sender, sender);
    for h in ["Date", "Message-ID", "From"] {
        assert_eq!(count_header(&q.header, h), 1, "{h} once in {}", q.header);
    }
    assert_eq!(count_header(&q.header, "Bcc"), 0, "no Bcc: {}", q.header);
    // CRLF only: no bare LF or CR.
    for (i, b) in q.raw.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && q.raw[i - 1] == b'\r', "bare LF at {i}");
        }
        if *b == b'\r' {
            assert_eq!(q.raw.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    assert!(
        q.body.contains(body_has),
        "body {:?} lacks {body_has:?}",
        q.body
    );
}

fn run(args: &[&str], input: &str) -> (Env, Queued) {
    let env = Env::new("url = \"smtp://127.0.0.1:1\"\nallow_plaintext = true", "");
    let o = env.sendmail(args, input.as_bytes());
    assert!(o.status.success(), "sendmail {args:?}: {}", stderr(&o));
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "quiet on success (Symfony fails on stderr)"
    );
    let q = only_queued(&env);
    (env, q)
}

const ADMIN: &str = "admin@example.com";
const SENDER: &str = "server@example.com";

#[test]
fn php_mail_mixed_line_ends() {
    // PHP 8 mail(): "-t -i" plus the 5th argument; CRLF joins, the caller's LF, and CR CR LF.
    let input = "To: user@example.org\r\nSubject: php\r\nFrom: shop@example.com\r\nBcc: hidden@example.org\r\n\r\nline one\nline two\r\r\nend\n";
    let (_e, q) = run(&["-t", "-i", "-fbounce@example.com"], input);
    check(
        &q,
        &["user@example.org", "hidden@example.org"],
        "bounce@example.com",
        "line one\r\nline two\r\nend\r\n",
    );
    assert_eq!(header_value(&q.header, "From"), "shop@example.com");
}

#[test]
fn phpmailer_sendmail_with_bcc_and_empty_group() {
    let input = "Date: Tue, 24 Nov 2026 10:00:00 +0000\nTo: undisclosed-recipients:;\nFrom: App <app@example.com>\nBcc: a@example.org, b@example.org\nMessage-ID: <x1@example.com>\nSubject: hi\n\nbody\n";
    let (_e, q) = run(&["-fapp@example.com", "-i", "-t"], input);
    check(
        &q,
        &["a@example.org", "b@example.org"],
        "app@example.com",
        "body",
    );
    assert_eq!(header_value(&q.header, "Message-ID"), "<x1@example.com>");
}

#[test]
fn symfony_t_mode_argv() {
    let (_e, q) = run(
        &["-i", "-fa@example.com", "b@example.org"],
        "From: a@example.com\nTo: b@example.org\nSubject: s\n\n..double dot kept as sent\n",
    );
    check(
        &q,
        &["b@example.org"],
        "a@example.com",
        "..double dot kept as sent",
    );
}

#[test]
fn debian_cron() {
    let input = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@web1> backup\nContent-Type: text/plain; charset=UTF-8\nX-Cron-Env: <SHELL=/bin/sh>\n\nbackup done: 42 files, \u{e9}t\u{e9}\n";
    let (_e, q) = run(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], input);
    check(&q, &[ADMIN], SENDER, "backup done");
    assert_eq!(
        header_value(&q.header, "From"),
        "Cron Daemon <server@example.com>"
    );
    assert_eq!(q.env.body.as_deref(), Some("8BITMIME"));
    assert!(q.body.contains("\u{e9}t\u{e9}"), "8-bit body intact");
    // MAILTO=a@x,b@y is one argv word.
    let (_e, q) = run(
        &[
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "a@example.org,b@example.org",
        ],
        "Subject: x\n\ny\n",
    );
    check(&q, &["a@example.org", "b@example.org"], SENDER, "y");
}

#[test]
fn cronie() {
    let input = "From: \"(Cron Daemon)\" <root>\nTo: ops@example.org\nSubject: Cron <root@h> job\nAuto-Submitted: auto-generated\n\nout\n";
    let (_e, q) = run(
        &[
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "root",
        ],
        input,
    );
    check(&q, &["ops@example.org"], SENDER, "out");
    assert!(
        header_value(&q.header, "From").ends_with("<server@example.com>"),
        "{}",
        q.header
    );
}

#[test]
fn systemd_cron_and_busybox() {
    let (_e, q) = run(
        &["-i", "-B", "8BITMIME", "root"],
        "Subject: unit failed\nContent-Transfer-Encoding: binary\n\nlog\n",
    );
    check(&q, &[ADMIN], SENDER, "log");
    let (_e, q) = run(&["-ti"], "To: root\nSubject: cron: /bin/true\n\n");
    check(&q, &[ADMIN], SENDER, "");
}

#[test]
fn mutt_with_dsn_and_double_dash() {
    let (_e, q) = run(
        &[
            "-oem",
            "-oi",
            "-B8BITMIME",
            "-f",
            "me@example.com",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "--",
            "to@example.org",
            "cc@example.org",
            "bcc@example.org",
        ],
        "From: Me <me@example.com>\nTo: to@example.org\nCc: cc@example.org\nSubject: m\n\nhi\n",
    );
    check(
        &q,
        &["to@example.org", "cc@example.org", "bcc@example.org"],
        "me@example.com",
        "hi",
    );
    assert_eq!(q.env.rcpts[0].notify.as_deref(), Some("FAILURE,DELAY"));
    assert_eq!(q.env.ret.as_deref(), Some("HDRS"));
}

#[test]
fn git_send_email_keeps_lone_dots() {
    let input = "From: Dev <dev@example.com>\nTo: list@example.org\nSubject: [PATCH] x\nDate: Tue, 24 Nov 2026 10:00:00 +0000\nMessage-ID: <p@example.com>\n\ndiff\n.\n..\nend\n";
    let (_e, q) = run(&["-i", "list@example.org", "dev2@example.org"], input);
    check(
        &q,
        &["list@example.org", "dev2@example.org"],
        SENDER,
        "diff\r\n.\r\n..\r\nend\r\n",
    );
}

#[test]
fn bsd_mailx_send_mail_name_strips_bcc() {
    let env = Env::new("url = \"smtp://127.0.0.1:1\"\nallow_plaintext = true", "");
    let link = env.path().join("send-mail");
    std::os::unix::fs::symlink(SENDMAIL, &link).unwrap();
    let mut c = std::process::Command::new(&link)
        .args(["-i", "--", "a@example.org", "hidden@example.org"])
        .env("RELAYQ_CONFIG", &env.cfg)
        .stdin(std::process::Stdio::piped())
        .output_with_input("To: a@example.org\nBcc: hidden@example.org\nSubject: mailx\n\nb\n");
    assert!(c.status.success());
    let q = only_queued(&env);
    check(&q, &["a@example.org", "hidden@example.org"], SENDER, "b");
    c.stdout.clear();
}

trait WithInput {
    fn output_with_input(&mut self, input: &str) -> std::process::Output;
}
impl WithInput for std::process::Command {
    fn output_with_input(&mut self, input: &str) -> std::process::Output {
        use std::io::Write;
        let mut ch = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        ch.stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        ch.wait_with_output().unwrap()
    }
}

#[test]
fn mailutils_with_stdout_and_stderr_closed() {
    let env = Env::new("url = \"smtp://127.0.0.1:1\"\nallow_plaintext = true", "");
    let link = env.path().join("sendmail");
    std::os::unix::fs::symlink(SENDMAIL, &link).unwrap();
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" -oi -f root@localhost -t >&- 2>&-")
        .arg(&link)
        .env("RELAYQ_CONFIG", &env.cfg)
        .stdin(std::process::Stdio::piped())
        .output_with_input("To: ops@example.org\nSubject: mailutils\n\nbody\n");
    assert!(o.status.success());
    let q = only_queued(&env);
    check(&q, &["ops@example.org"], SENDER, "body");
}

#[test]
fn logwatch_several_to_lines_and_bare_from() {
    let (_e, q) = run(
        &["-t"],
        "To: a@example.org\nTo: b@example.org\nFrom: Logwatch\nSubject: Logwatch\nMIME-Version: 1.0\n\nreport\n",
    );
    check(&q, &["a@example.org", "b@example.org"], SENDER, "report");
    assert_eq!(
        header_value(&q.header, "From"),
        "Logwatch <server@example.com>"
    );
}

#[test]
fn fail2ban_without_i_stops_at_lone_dot() {
    let (_e, q) = run(
        &["-f", "fail2ban@localhost", "root@localhost"],
        "Subject: [Fail2Ban] sshd: banned 1.2.3.4\nFrom: Fail2Ban <fail2ban@localhost>\nTo: root@localhost\n\nbanned\n.\nnot part of the message\n",
    );
    check(&q, &[ADMIN], SENDER, "banned");
    assert!(
        !q.body.contains("not part"),
        "without -i a lone dot ends the message"
    );
}

#[test]
fn unattended_upgrades_and_apt_listchanges() {
    let (_e, q) = run(
        &["-oi", "-t"],
        "Subject: upgrades\nFrom: root\nTo: root\nAuto-Submitted: auto-generated\n\nok\n",
    );
    check(&q, &[ADMIN], SENDER, "ok");
    let (_e, q) = run(
        &["-oi", "-t"],
        "Auto-Submitted: auto-generated\nSubject: apt-listchanges\nTo: root\n\nnews\n",
    );
    check(&q, &[ADMIN], SENDER, "news");
}

#[test]
fn nodemailer_ruby_django_trojita() {
    let (_e, q) = run(
        &["-i", "-f", "app@example.com", "x@example.org"],
        "From: app@example.com\r\nTo: x@example.org\r\nBcc: y@example.org\r\nSubject: n\r\n\r\nnode\r\n",
    );
    check(&q, &["x@example.org"], "app@example.com", "node");
    let (_e, q) = run(
        &["-i", "-f", "a@example.com", "--", "b@example.org"],
        "To: b@example.org\nSubject: r\n\nruby\n",
    );
    check(&q, &["b@example.org"], "a@example.com", "ruby");
    let (_e, q) = run(
        &["Jane Doe <jane@example.org>"],
        "Subject: d\r\n\r\ndjango\r\n",
    );
    check(&q, &["jane@example.org"], SENDER, "django");
    let (_e, q) = run(
        &["-bm", "-oi", "t@example.org"],
        "From: t@example.com\nSubject: t\n\ntrojita\n",
    );
    check(&q, &["t@example.org"], SENDER, "trojita");
}

#[test]
fn newaliases_and_mailq_names() {
    let env = Env::new("url = \"smtp://127.0.0.1:1\"\nallow_plaintext = true", "");
    for (name, want) in [("newaliases", ""), ("mailq", "Mail queue is empty")] {
        let link = env.path().join(name);
        std::os::unix::fs::symlink(BIN, &link).unwrap();
        let o = std::process::Command::new(&link)
            .env("RELAYQ_CONFIG", &env.cfg)
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains(want), "{name}");
    }
    env.send(&["a@example.org"], "listed");
    let o = std::process::Command::new(env.path().join("mailq"))
        .env("RELAYQ_CONFIG", &env.cfg)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("a@example.org") && out.trim_end().ends_with("in 1 Request."),
        "{out}"
    );
}

/// The installed sendmail is the submission front end: `-bp`, and mailq or newaliases by
/// name, are relayq's, run from beside it with the same argv; without relayq there, a
/// clear error and EX_UNAVAILABLE, never a message queued by mistake.
#[test]
fn front_end_hands_listing_and_names_to_relayq() {
    let env = Env::new("url = \"smtp://127.0.0.1:1\"\nallow_plaintext = true", "");
    env.send(&["a@example.org"], "listed");
    let o = env.sendmail(&["-bp"], b"");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.trim_end().ends_with("in 1 Request."), "{out}");
    let run = |link: &std::path::Path| {
        std::process::Command::new(link)
            .env("RELAYQ_CONFIG", &env.cfg)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    for (name, want) in [("mailq", "in 1 Request."), ("newaliases", "")] {
        let link = env.path().join(format!("fe-{name}")).join(name);
        std::fs::create_dir(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(SENDMAIL, &link).unwrap();
        let o = run(&link);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains(want), "{name}");
    }
    assert_eq!(env.queued(), 1, "a name or -bp queued a message");
    // A copy of the front end alone in a directory: no relayq beside it.
    let alone = env.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(SENDMAIL, alone.join("sendmail")).unwrap();
    let o = std::process::Command::new(alone.join("sendmail"))
        .arg("-bp")
        .env("RELAYQ_CONFIG", &env.cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("sendmail: cannot run ")
            && err.contains("relayq")
            && err.lines().count() == 1,
        "{err}"
    );
}
