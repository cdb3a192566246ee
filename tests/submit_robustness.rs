//! sendmail under stress: `-bs` driven by Python's smtplib (a client we did not write),
//! SIGKILL at random points (100 trials), a full file system, bad input with the right exit
//! codes and nothing left behind, and property tests of the parsers (bounded, in CI).

mod support;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn env() -> Env {
    Env::with(
        "max_message_size = \"64M\"\n",
        "url = \"smtp://127.0.0.1:1\"\nallow_plaintext = true",
        "",
    )
}

fn files(env: &Env, sub: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(env.spool(sub))
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn bs_dialogue_with_python_smtplib() {
    let env = env();
    let link = env.path().join("sendmail");
    std::os::unix::fs::symlink(SENDMAIL, &link).unwrap();
    // smtplib over a socketpair whose other end is sendmail's stdin/stdout, two messages in
    // one session, a leading-dot line, RSET and NOOP, as Symfony/Laravel drive -bs.
    let script = r#"
import smtplib, socket, subprocess, sys
a, b = socket.socketpair()
p = subprocess.Popen([sys.argv[1], "-bs", "-i"], stdin=b, stdout=b)
b.close()
s = smtplib.SMTP()
s.sock = a
s.file = None
code, msg = s.getreply()
assert code == 220, (code, msg)
s.ehlo("[127.0.0.1]")
assert s.has_extn("pipelining") and s.has_extn("8bitmime"), s.esmtp_features
s.sendmail("app@example.com", ["a@example.org", "root"], "Subject: one\r\n\r\n.leading dot\r\nbody one\r\n")
s.rset(); s.noop()
refused = s.sendmail("<>", ["b@example.org"], b"Subject: two\r\n\r\nbody two\r\n")
assert refused == {}, refused
s.quit()
sys.exit(p.wait(10))
"#;
    let o = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&link)
        .env("RELAYQ_CONFIG", &env.cfg)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "smtplib: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut queued: Vec<String> = files(&env, "new")
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    queued.sort_by_key(|t| t.contains("Subject: two"));
    assert_eq!(queued.len(), 2);
    assert!(
        queued[0].contains("rcpt <a@example.org>\nrcpt <admin@example.com>\n"),
        "{}",
        queued[0]
    );
    assert!(
        queued[0].contains("\r\n.leading dot\r\nbody one\r\n"),
        "dot-unstuffed once: {}",
        queued[0]
    );
    assert!(
        queued[1].contains("sender <>\n"),
        "null sender kept: {}",
        queued[1]
    );
}

#[test]
fn bs_symfony_dialogue_raw() {
    let env = env();
    let mut c = Command::new(BIN)
        .args(["-C"])
        .arg(&env.cfg)
        .args(["sendmail", "-bs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(b"HELO [127.0.0.1]\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nSubject: s\r\n\r\n..x\r\n.\r\nQUIT\r\n").unwrap();
    drop(stdin);
    let o = c.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{out} {}",
        stderr(&o)
    );
    let codes: Vec<&str> = out.lines().map(|l| &l[..3]).collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "354", "250", "221"],
        "{out}"
    );
    assert!(out.contains("queued as "), "{out}");
}

#[test]
fn sigkill_never_leaves_a_partial_message_in_new() {
    let env = env();
    let link = env.path().join("sendmail");
    std::os::unix::fs::symlink(SENDMAIL, &link).unwrap();
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash seed {seed}");
    let mut exited_ok = Vec::new();
    let started = Instant::now();
    for trial in 0..100 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let size = if trial % 3 == 0 {
            2_000
        } else {
            1_000_000 + ((seed >> 20) % 3_000_000) as usize
        };
        let delay = Duration::from_micros((seed >> 40) % 15_000);
        let marker = format!("TRIAL-{trial}-END");
        let mut body = format!("Subject: trial {trial}\n\n").into_bytes();
        while body.len() < size {
            body.extend_from_slice(
                b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\n",
            );
        }
        body.extend_from_slice(marker.as_bytes());
        body.push(b'\n');
        let mut c = Command::new(&link)
            .args(["-i", "a@example.org"])
            .env("RELAYQ_CONFIG", &env.cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            for chunk in body.chunks(64 * 1024) {
                if stdin.write_all(chunk).is_err() {
                    return;
                }
            }
        });
        std::thread::sleep(delay);
        let _ = c.kill();
        let st = c.wait().unwrap();
        let _ = writer.join();
        if st.success() {
            exited_ok.push(marker);
        }
    }
    // Every file in new/ is whole: envelope, header, and the trailer line its trial wrote.
    let mut found = Vec::new();
    for p in files(&env, "new") {
        let mut t = String::new();
        std::fs::File::open(&p)
            .unwrap()
            .read_to_string(&mut t)
            .unwrap();
        let mut r = std::io::BufReader::new(t.as_bytes());
        relayq::spool::Envelope::read_from(&mut r).expect("envelope complete");
        let last = t.trim_end().rsplit("\r\n").next().unwrap().to_string();
        assert!(
            last.starts_with("TRIAL-") && last.ends_with("-END"),
            "partial message in new/: ends with {last:?}"
        );
        found.push(last);
    }
    for m in &exited_ok {
        assert!(found.contains(m), "{m} exited 0 but is not in new/");
    }
    eprintln!(
        "crash: 100 trials, {} exited 0, {} in new/, {:.1} s",
        exited_ok.len(),
        found.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        !exited_ok.is_empty(),
        "some trials must complete (small ones)"
    );
    assert!(found.len() < 100, "some trials must be killed mid-write");
}

#[test]
fn full_disk_exits_75_and_leaves_nothing() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: mounting a small tmpfs needs root");
        return;
    }
    let env = env();
    let spool = env.path().join("spool");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&spool)
        .status()
        .unwrap();
    if !st.success() {
        eprintln!("SKIP: cannot mount tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(spool.clone());
    assert!(env.relayq(&["init"]).status.success());
    let big = format!("Subject: big\n\n{}\n", "y".repeat(1_000_000));
    let o = env.sendmail(&["-i", "a@example.org"], big.as_bytes());
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("full") || err.contains("No space"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        files(&env, "tmp").is_empty() && files(&env, "new").is_empty(),
        "nothing left behind"
    );
    let o = env.sendmail(&["-i", "a@example.org"], b"Subject: small\n\nfits\n");
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_input_gets_the_right_code_and_leaves_nothing() {
    let env = Env::with(
        "max_message_size = 2048\n",
        "url = \"smtp://127.0.0.1:1\"\nallow_plaintext = true",
        "",
    );
    let cases: Vec<(Vec<&str>, Vec<u8>, i32, &str)> = vec![
        (
            vec!["-i"],
            b"Subject: x\n\nno rcpt\n".to_vec(),
            64,
            "no recipients",
        ),
        (
            vec!["-f", "a@x.org\r\nBcc: evil@x.org", "b@x.org"],
            b"x\n".to_vec(),
            64,
            "line break",
        ),
        (
            vec!["-F", "Name\nBcc: evil@x.org", "b@x.org"],
            b"x\n".to_vec(),
            64,
            "line break",
        ),
        (
            vec!["b@x.org\nevil@x.org"],
            b"x\n".to_vec(),
            64,
            "line break",
        ),
        (
            vec!["-i", "b@x.org"],
            b"Subject: x\n\na\0b\n".to_vec(),
            65,
            "NUL",
        ),
        (
            vec!["-i", "b@x.org"],
            format!("Subject: x\n\n{}\n", "z".repeat(5000)).into_bytes(),
            65,
            "2048",
        ),
        (vec!["-Z"], b"x\n".to_vec(), 64, "usage:"),
        (vec!["-B", "9BIT", "b@x.org"], b"x\n".to_vec(), 64, "7BIT"),
        (
            vec!["-i", "bad address@"],
            b"x\n".to_vec(),
            65,
            "invalid address",
        ),
        // -t: an entry without its address in <> is refused, naming it; carol is not sent
        // the message alone.
        (
            vec!["-t", "-i"],
            b"To: \"Some Name\" bob, carol@dest.test\nSubject: x\n\nx\n".to_vec(),
            65,
            "\"Some Name bob\" is not an address",
        ),
    ];
    for (args, input, code, want) in cases {
        let o = env.sendmail(&args, &input);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with("sendmail: "), "{}", stderr(&o));
        assert!(
            files(&env, "new").is_empty() && files(&env, "tmp").is_empty(),
            "{args:?} left a file"
        );
    }
    // Config errors: 78, naming the key and the file; a missing spool: 75 with the fix.
    let bad = env.path().join("bad.toml");
    std::fs::write(&bad, "[relay]\nurll = \"x\"\n").unwrap();
    let o = Command::new(BIN)
        .args(["sendmail", "-C"])
        .arg(&bad)
        .arg("a@x.org")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(
        stderr(&o).contains("urll") && stderr(&o).contains("bad.toml"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(BIN)
        .args(["sendmail", "-C", "/nonexistent/relayq.toml", "a@x.org"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    let nospool = env.path().join("nospool.toml");
    std::fs::write(
        &nospool,
        format!("spool_dir = \"{}/missing\"\n", env.path().display()),
    )
    .unwrap();
    let o = Command::new(BIN)
        .args(["sendmail", "-C"])
        .arg(&nospool)
        .arg("a@x.org")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(75));
    assert!(stderr(&o).contains("relayq init"), "{}", stderr(&o));
}

#[test]
fn long_lines_are_broken_without_loss() {
    let env = env();
    let subject = (0..600)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let line: String = (0..5000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let o = env.sendmail(
        &["-i", "a@example.org"],
        format!("Subject: {subject}\n\n{line}\nend\n").as_bytes(),
    );
    assert!(o.status.success());
    let t = std::fs::read_to_string(&files(&env, "new")[0]).unwrap();
    let msg = &t[t.find("end\n").unwrap() + 4..];
    assert!(
        msg.split("\r\n").all(|l| l.len() <= 998),
        "no line over 998 octets"
    );
    let (head, body) = msg.split_once("\r\n\r\n").unwrap();
    assert!(
        head.replace("\r\n", "")
            .contains(&format!("Subject: {subject}")),
        "header folded at spaces, nothing lost"
    );
    assert_eq!(
        body.replace("\r\n", ""),
        format!("{line}end"),
        "body split, nothing lost"
    );
}

/// The envelope of the one queue file in new/, as the daemon reads it.
fn only_queued(env: &Env) -> (relayq::spool::Envelope, usize) {
    let queued = files(env, "new");
    assert_eq!(queued.len(), 1, "{queued:?}");
    let data = std::fs::read(&queued[0]).unwrap();
    let rcpt_lines = data
        .split(|&b| b == b'\n')
        .take_while(|l| *l != b"end")
        .filter(|l| l.starts_with(b"rcpt "))
        .count();
    let env = relayq::spool::Envelope::read_from(&mut std::io::Cursor::new(data))
        .expect("the daemon's reader takes the queue file");
    (env, rcpt_lines)
}

fn many(n: usize, fmt: impl Fn(usize) -> String) -> Vec<String> {
    (0..n).map(fmt).collect()
}

/// `sendmail -bs` with piped stdin and stdout.
fn spawn_bs(env: &Env, stderr: Stdio) -> std::process::Child {
    Command::new(BIN)
        .arg("-C")
        .arg(&env.cfg)
        .args(["sendmail", "-bs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// `sendmail -bs` fed `input` from a thread (10,000 pipelined commands and their replies
/// would fill both pipes otherwise); its replies, one a line.
fn bs_session(env: &Env, input: Vec<u8>) -> Vec<String> {
    let mut c = spawn_bs(env, Stdio::piped());
    let mut stdin = c.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let o = c.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "-bs: {:?} {}",
        o.status,
        stderr(&o)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn sendmail_takes_10000_recipients_and_refuses_10001_with_65() {
    let env = env();
    let msg = b"Subject: many\n\nbody\n";
    // 10,000 on the command line, plus the same again in another case: 10,000 once de-duplicated.
    let mut args = vec!["-i".to_string()];
    args.extend(many(10_000, |i| format!("u{i}@example.org")));
    args.extend(many(10_000, |i| format!("U{i}@EXAMPLE.org")));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = env.sendmail(&a, msg);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (queued, lines) = only_queued(&env);
    assert_eq!((queued.rcpts.len(), lines), (10_000, 10_000));
    std::fs::remove_file(&files(&env, "new")[0]).unwrap();

    // One more distinct recipient, from argv, or from the header with -t: refused, nothing
    // queued, one line saying why.
    let mut args = vec!["-i".to_string()];
    args.extend(many(10_001, |i| format!("u{i}@example.org")));
    let header = format!(
        "Bcc: {}\nSubject: many\n\nbody\n",
        many(5_001, |i| format!("h{i}@example.org")).join(",\n ")
    );
    let mut t_args = vec!["-i".to_string(), "-t".to_string()];
    t_args.extend(many(5_000, |i| format!("u{i}@example.org")));
    for (args, input) in [(args, msg.to_vec()), (t_args, header.into_bytes())] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = env.sendmail(&a, &input);
        assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
        assert_eq!(
            stderr(&o),
            "sendmail: too many recipients (more than 10000)\n"
        );
        assert!(
            files(&env, "new").is_empty() && files(&env, "tmp").is_empty(),
            "nothing queued"
        );
    }
}

#[test]
fn bs_answers_452_past_10000_recipients_and_queues_the_first_10000() {
    let env = env();
    let mut input = b"HELO [127.0.0.1]\r\nMAIL FROM:<app@example.com>\r\n".to_vec();
    for i in 0..10_001 {
        input.extend(format!("RCPT TO:<u{i}@example.org>\r\n").into_bytes());
    }
    // Past the limit, a recipient already accepted still is.
    input.extend(b"RCPT TO:<U17@Example.ORG>\r\n");
    input.extend(b"DATA\r\nSubject: many\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    let replies = bs_session(&env, input);
    let rcpt = &replies[3..3 + 10_002]; // after 220, HELO's and MAIL's 250
    assert_eq!(replies[2], "250 2.1.0 Ok");
    assert!(rcpt[..10_000].iter().all(|r| r == "250 2.1.5 Ok"));
    assert!(
        rcpt[10_000].starts_with("452 4.5.3 Too many recipients"),
        "{}",
        rcpt[10_000]
    );
    assert_eq!(rcpt[10_001], "250 2.1.5 Ok");
    let rest: Vec<&str> = replies[3 + 10_002..].iter().map(|r| &r[..4]).collect();
    assert_eq!(
        rest,
        ["354 ", "250 ", "221 "],
        "{:?}",
        &replies[3 + 10_002..]
    );
    let (queued, lines) = only_queued(&env);
    assert_eq!((queued.rcpts.len(), lines), (10_000, 10_000));
    assert_eq!(queued.rcpts[9_999].addr, "u9999@example.org");
}

#[test]
fn bs_never_queues_an_envelope_over_the_readers_size_limit() {
    // 10,000 recipients with a 500-byte NOTIFY each: 5 MiB of envelope, more than the daemon
    // reads. RCPT says 452 once the envelope is full; what was accepted is queued and readable.
    let env = env();
    let notify = "X".repeat(500);
    let mut input = b"HELO [127.0.0.1]\r\nMAIL FROM:<app@example.com>\r\n".to_vec();
    for i in 0..10_000 {
        input.extend(format!("RCPT TO:<u{i}@example.org> NOTIFY={notify}\r\n").into_bytes());
    }
    input.extend(b"DATA\r\nSubject: big envelope\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    let replies = bs_session(&env, input);
    let rcpt = &replies[3..3 + 10_000];
    let ok = rcpt.iter().filter(|r| *r == "250 2.1.5 Ok").count();
    assert!(
        (7_000..10_000).contains(&ok) && rcpt[..ok].iter().all(|r| r == "250 2.1.5 Ok"),
        "{ok} accepted"
    );
    assert!(
        rcpt[ok..]
            .iter()
            .all(|r| r.starts_with("452 4.5.3 Too many recipients")),
        "{}",
        rcpt[ok]
    );
    assert!(replies[3 + 10_000].starts_with("354 "));
    assert!(
        replies[3 + 10_001].starts_with("250 2.0.0 Ok: queued as "),
        "{}",
        replies[3 + 10_001]
    );
    let (queued, lines) = only_queued(&env);
    assert_eq!((queued.rcpts.len(), lines), (ok, ok));
}

mod fuzz {
    use proptest::prelude::*;
    use relayq::message::{BodyCopy, Framing, Lines, header_recipients, read_head};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn header_parsing_never_panics(input in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut l = Lines::new(std::io::BufReader::with_capacity(64, &input[..]), Framing::Stdin { dot_ends: true });
            if let Ok(h) = read_head(&mut l) {
                let _ = header_recipients(&h.headers);
            }
        }

        #[test]
        fn t_extraction_of_header_text(value in "[ -~]{0,300}") {
            let input = format!("To: {value}\nCc: {value}\nBcc: {value}\n\n");
            let mut l = Lines::new(std::io::BufReader::new(input.as_bytes()), Framing::Stdin { dot_ends: false });
            let h = read_head(&mut l).unwrap();
            // Refused (a data error naming the entry) or a list of clean addresses.
            if let Ok(r) = header_recipients(&h.headers) {
                for a in r { prop_assert!(!a.contains('\n') && !a.contains('\r')); }
            }
        }

        #[test]
        fn address_lists_never_panic(s in ".{0,400}") {
            let _ = relayq::address::parse_list(&s);
        }

        #[test]
        fn envelopes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = relayq::spool::Envelope::read_from(&mut std::io::BufReader::new(&input[..]));
        }

        #[test]
        fn argv_never_panics(args in proptest::collection::vec("-?[a-zA-Z0-9@.<>=,:-]{0,12}", 0..8)) {
            let _ = relayq::cli::parse_sendmail(args.into_iter().map(std::ffi::OsString::from).collect());
        }

        #[test]
        fn body_copy_is_crlf_bounded_and_lossless(input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'.'), 1u8..=255u8], 0..6000)) {
            let mut l = Lines::new(std::io::BufReader::with_capacity(97, &input[..]), Framing::Stdin { dot_ends: false });
            let mut out = Vec::new();
            let mut bc = BodyCopy::new(0, 1 << 30);
            bc.copy(&mut l, &mut out).unwrap();
            let text = out.clone();
            for (i, b) in text.iter().enumerate() {
                if *b == b'\n' { prop_assert!(i > 0 && text[i - 1] == b'\r'); }
                if *b == b'\r' { prop_assert_eq!(text.get(i + 1), Some(&b'\n')); }
            }
            for line in text.split(|&b| b == b'\n') { prop_assert!(line.len() <= 999); }
            let keep = |v: &[u8]| v.iter().copied().filter(|&b| b != b'\r' && b != b'\n').collect::<Vec<u8>>();
            prop_assert_eq!(keep(&input), keep(&out));
        }
    }
}

/// `sendmail -bs` fed `input` (from a thread), waited for with wait4: (exit code, replies,
/// peak RSS in KiB).
#[allow(clippy::zombie_processes)] // reaped by wait4, for its resource usage
fn bs_measured(
    env: &Env,
    input: impl FnOnce(&mut std::process::ChildStdin) -> std::io::Result<()> + Send + 'static,
) -> (Option<i32>, String, i64) {
    let mut c = spawn_bs(env, Stdio::null());
    let mut stdin = c.stdin.take().unwrap();
    // Written from here, after the fork: the child's peak RSS counts no buffer of ours.
    let writer = std::thread::spawn(move || input(&mut stdin));
    let mut stdout = c.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waiting for our own child, with valid out-pointers.
    let pid = unsafe { libc::wait4(c.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, c.id() as i32);
    let _ = writer.join();
    let out = reader.join().unwrap().unwrap();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, out, usage.ru_maxrss)
}

#[test]
fn bs_bounds_an_overlong_command_and_fails_when_data_is_cut_short() {
    let env = env();
    // A 64 MiB command line: refused, and never held in memory.
    let (code, out, rss_kib) = bs_measured(&env, |w| {
        w.write_all(b"EHLO x\r\nNOOP ")?;
        let piece = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            w.write_all(&piece)?;
        }
        w.write_all(b"\r\nQUIT\r\n")
    });
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("500 5.5.2 line too long"), "{out}");
    assert!(out.contains("221 "), "{out}");
    assert!(
        rss_kib < 32 * 1024,
        "peak RSS {rss_kib} KiB for a 64 MiB line"
    );
    // The input ends inside DATA: not queued, and the exit code says so.
    let (code, out, _) = bs_measured(&env, |w| {
        w.write_all(b"HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: cut\r\n\r\nhalf a mess")
    });
    assert_eq!(code, Some(65), "{out}");
    assert!(files(&env, "new").is_empty() && files(&env, "tmp").is_empty());
}
