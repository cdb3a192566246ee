//! `relayq import` taking the old tool's queue over, through the real binary: real Postfix
//! queue files (maildrop/ as postdrop leaves them, deferred/ after cleanup and a failed
//! attempt, one recipient already delivered; tests/fixtures/postfix-queue, made by its
//! generate.sh) and a real nullmailer queue file carried into relayq's spool and delivered
//! to the test relay with their envelopes; dma's and msmtpq's formats; the package's
//! example config replaced without --force; `doctor` warning about a non-empty old queue.

mod support;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::*;

fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Copy a fixture tree (files and directories only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

fn files_in(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            n += files_in(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

fn by_subject<'a>(got: &'a [serde_json::Value], s: &str) -> &'a serde_json::Value {
    got.iter()
        .find(|m| subject_of(m) == s)
        .unwrap_or_else(|| panic!("no message {s:?} among {got:#?}"))
}

fn mail_from(m: &serde_json::Value) -> &str {
    m["mail_from"].as_str().unwrap_or("")
}

/// Postfix's maildrop/ and deferred/ into relayq's spool, then to the relay: each message
/// with its envelope sender and the recipients Postfix had not delivered, the content as
/// it was; the old files gone; a second run finds nothing (no double delivery).
#[test]
fn postfix_queue_is_taken_over_and_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = Env::new(&relay_toml("smtp", relay.port), "");
    let pfq = env.path().join("postfix-spool");
    copy_tree(&fixture("postfix-queue/maildrop"), &pfq.join("maildrop"));
    copy_tree(&fixture("postfix-queue/deferred"), &pfq.join("deferred"));
    assert_eq!(files_in(&pfq), 4);
    let conf = fixture("import/postfix/default");
    let args = [
        "import",
        "--from",
        "postfix",
        "--path",
        conf.to_str().unwrap(),
        "--queue",
        pfq.to_str().unwrap(),
        "--queue-only",
    ];
    let o = env.relayq(&args);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("4 moved into relayq's queue"), "{out}");
    assert!(
        out.contains("1 recipient(s) postfix had delivered not sent again"),
        "{out}"
    );
    assert_eq!(files_in(&pfq), 0, "old files removed once queued: {out}");
    assert_eq!(env.queued(), 4);
    let mailq = env.relayq(&["queue"]);
    assert_eq!(
        text(&mailq).matches("app@example.org").count(),
        3,
        "{}",
        text(&mailq)
    );

    let f = env.flush();
    assert!(f.status.success(), "{}", text(&f));
    let got = relay.wait_for(4, Duration::from_secs(20));
    assert_eq!(got.len(), 4, "{got:#?}");
    let m = by_subject(&got, "maildrop one");
    assert_eq!(mail_from(m), "app@example.org");
    assert_eq!(rcpts_of(m), ["alice@example.net", "bob@example.net"]);
    let data = m["data"].as_str().unwrap();
    assert!(
        data.contains("\n.leading dot\r\n") || data.contains("\n.leading dot\n"),
        "{data}"
    );
    let joined = data.replace(['\r', '\n'], "");
    assert!(
        joined.contains(&"x".repeat(3000)),
        "the long line's octets all arrive: {data}"
    );
    assert!(data.contains("From: App <app@example.org>"), "{data}");
    // sendmail -t as root: the relayq rules for local names apply (sender, root → admin);
    // Bcc went into the envelope and out of the header.
    let m = by_subject(&got, "maildrop two (-t)");
    assert_eq!(mail_from(m), "server@example.com");
    assert_eq!(
        rcpts_of(m),
        [
            "carol@example.net",
            "admin@example.com",
            "hidden@example.net"
        ]
    );
    assert!(!m["data"].as_str().unwrap().contains("Bcc:"));
    let m = by_subject(&got, "deferred one");
    assert_eq!(mail_from(m), "app@example.org");
    assert_eq!(rcpts_of(m), ["dave@example.net", "erin@example.net"]);
    assert!(
        m["data"]
            .as_str()
            .unwrap()
            .contains("Message-Id: <20261202064039.C63A19B23CE@server1.example.com>")
    );
    // root@localhost was delivered by Postfix (its record marked done): not sent again.
    let m = by_subject(&got, "deferred two");
    assert_eq!(mail_from(m), "app@example.org");
    assert_eq!(rcpts_of(m), ["frank@example.net"]);

    let o = env.relayq(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("holds no mail"), "{}", text(&o));
    assert_eq!(env.queued(), 0);
}

/// nullmailer's queue/, with --dry-run first (lists, moves nothing), then for real.
#[test]
fn nullmailer_queue_dry_run_then_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::default());
    let env = Env::new(&relay_toml("smtp", relay.port), "");
    let nq = env.path().join("nullmailer-spool");
    copy_tree(&fixture("nullmailer-queue/queue"), &nq.join("queue"));
    let conf = fixture("import/nullmailer/default");
    let run = |extra: &[&str]| {
        let mut a = vec![
            "import",
            "--from",
            "nullmailer",
            "--path",
            conf.to_str().unwrap(),
            "--queue",
            nq.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        env.relayq(&a)
    };
    let o = run(&["--dry-run"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("1 message(s) in") && out.contains("would move"),
        "{out}"
    );
    assert!(
        out.contains("from app@example.org to grace@example.net, heidi@example.net"),
        "{out}"
    );
    assert_eq!(files_in(&nq), 1);
    assert_eq!(env.queued(), 0);
    let o = run(&["--queue-only"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(files_in(&nq), 0);
    let f = env.flush();
    assert!(f.status.success(), "{}", text(&f));
    let got = relay.wait_for(1, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(mail_from(&got[0]), "app@example.org");
    assert_eq!(
        rcpts_of(&got[0]),
        ["grace@example.net", "heidi@example.net"]
    );
    assert_eq!(subject_of(&got[0]), "nullmailer one");
}

/// dma's Q/M pairs (one per recipient, hard links of one message) and msmtpq's .mail/.msmtp
/// pairs; a file that cannot be read is left in place with the reason, and exit 75.
#[test]
fn dma_and_msmtpq_queues() {
    let env = Env::new(&plain_relay_toml(9), "");
    let dq = env.path().join("dma-spool");
    std::fs::create_dir_all(&dq).unwrap();
    let msg = "From: app@example.org\nSubject: dma one\n\nbody\n";
    std::fs::write(dq.join("M1a2b.55f0"), msg).unwrap();
    std::fs::hard_link(dq.join("M1a2b.55f0"), dq.join("M1a2b.55f8")).unwrap();
    for (id, r) in [
        ("1a2b.55f0", "ivan@example.net"),
        ("1a2b.55f8", "judy@example.net"),
    ] {
        std::fs::write(
            dq.join(format!("Q{id}")),
            format!("ID: {id}\nSender: app@example.org\nRecipient: {r}\n"),
        )
        .unwrap();
    }
    std::fs::write(dq.join("Qbroken.1"), "ID: broken.1\n").unwrap();
    let o = env.relayq(&[
        "import",
        "--from",
        "dma",
        "--queue",
        dq.to_str().unwrap(),
        "--queue-only",
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(75), "{out}");
    assert!(
        out.contains("from app@example.org to ivan@example.net, judy@example.net"),
        "{out}"
    );
    assert!(
        out.contains("Qbroken.1: left in place: no Sender or Recipient line"),
        "{out}"
    );
    assert_eq!(env.queued(), 1, "one message, two recipients");
    assert_eq!(files_in(&dq), 1);

    let mq = env.path().join("msmtp.queue");
    std::fs::create_dir_all(&mq).unwrap();
    std::fs::write(
        mq.join("2026-12-02-06.40.39.mail"),
        "From: app@example.org\nTo: kim@example.net\nSubject: msmtpq one\n\nbody\n",
    )
    .unwrap();
    std::fs::write(
        mq.join("2026-12-02-06.40.39.msmtp"),
        "-oi -f app@example.org -- kim@example.net\n",
    )
    .unwrap();
    let o = env.relayq(&[
        "import",
        "--from",
        "msmtp",
        "--queue",
        mq.to_str().unwrap(),
        "--queue-only",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("from app@example.org to kim@example.net"),
        "{}",
        text(&o)
    );
    assert_eq!(env.queued(), 2);
    assert_eq!(files_in(&mq), 0);
}

/// Right after installing the package, /etc/relayq holds the example config and an empty
/// password file: import replaces them without --force, as setup does. Anything else is
/// refused before the report (no "carried over" list followed by a refusal).
#[test]
fn import_replaces_the_shipped_example_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relayq.toml");
    let example =
        std::fs::read_to_string(repo().join("contrib/examples/relayq.toml.example")).unwrap();
    std::fs::write(&cfg, &example).unwrap();
    std::fs::write(dir.path().join("password"), "").unwrap();
    let nothing = dir.path().join("no-queue");
    let import = |extra: &[&str]| {
        Command::new(BIN)
            .arg("-C")
            .arg(&cfg)
            .args(["import", "--from", "nullmailer", "--path"])
            .arg(fixture("import/nullmailer/edited"))
            .arg("--queue")
            .arg(&nothing)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = import(&[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("example config the package installs: replaced"),
        "{out}"
    );
    assert!(out.contains("old queue: none at"), "{out}");
    let now = std::fs::read_to_string(&cfg).unwrap();
    assert!(now.contains("provider = \"sendgrid\""), "{now}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("password")).unwrap(),
        "SG.nullmailer-Secret-1\n"
    );
    // Now it is somebody's config: refused, before any report.
    let o = import(&[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(64), "{out}");
    assert!(!out.contains("carried over"), "{out}");
    assert!(out.contains("--force"), "{out}");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), now);
}

/// `doctor` warns about mail in an old queue at its usual place (/var/spool/postfix here,
/// in a private mount namespace with a tmpfs over /var/spool, so the host is untouched).
#[test]
fn doctor_warns_about_a_non_empty_old_queue() {
    let env = Env::new(&plain_relay_toml(9), "");
    let probe = Command::new("unshare")
        .args(["--mount", "--map-root-user", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: unshare --mount --map-root-user is not available here");
        return;
    }
    let doctor = |files: bool| {
        let copy = if files {
            format!(
                "mkdir -p /var/spool/postfix/maildrop && cp {}/* /var/spool/postfix/maildrop/ && ",
                fixture("postfix-queue/maildrop").display()
            )
        } else {
            String::new()
        };
        let script = format!(
            "mount -t tmpfs tmpfs /var/spool && {copy}exec {BIN} -C {cfg} doctor --dns 127.0.0.1:9",
            cfg = env.cfg.display()
        );
        let o = Command::new("unshare")
            .args(["--mount", "--map-root-user", "sh", "-c", &script])
            .env("HOME", env.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let out = text(&o);
        let line = out
            .lines()
            .find(|l| l.contains("old queue"))
            .unwrap_or_else(|| panic!("no old queue check in:\n{out}"))
            .to_string();
        (line, out)
    };
    let (line, out) = doctor(true);
    assert!(
        line.starts_with("warn")
            && line.contains("2 message(s) left in postfix's queue /var/spool/postfix"),
        "{out}"
    );
    assert!(
        out.contains("relayq import --from postfix --queue-only"),
        "{out}"
    );
    let (line, out) = doctor(false);
    assert!(line.starts_with("pass"), "{out}");
}
