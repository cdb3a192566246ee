//! Issue #14: the bounded active queue. With more mail queued than `queue.active_limit`,
//! the daemon reads only as many envelopes as fit, delivers everything, oldest first, and
//! reads the rest from disk as room frees.

mod support;
use relayq::spool::{Envelope, Rcpt};
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const N: usize = 300;
const LIMIT: usize = 50;

fn id_for(t: u64, i: usize) -> String {
    format!(
        "{t:09X}{:05X}{:08X}",
        i % 1_000_000,
        (i as u32).wrapping_mul(2_654_435_761)
    )
}

/// A queue file as the spool holds it: envelope, then the message.
fn queue_file(id: &str, t: u64, i: usize) -> Vec<u8> {
    let env = Envelope {
        sender: "app@example.com".into(),
        rcpts: vec![Rcpt {
            addr: format!("user{i}@example.org"),
            ..Rcpt::default()
        }],
        message_id: Some(format!("<{id}.relayq@example.com>")),
        time: t,
        uid: 33,
        user: "www-data".into(),
        ..Envelope::default()
    };
    let mut data = Vec::new();
    env.write_to(&mut data).unwrap();
    data.extend_from_slice(format!("Subject: message {i:04}\r\n\r\nbody {i}\r\n").as_bytes());
    data
}

/// Write `N` messages into queue/, in an order unrelated to their age (directory order is
/// no help), and one corrupt file under the newest ID of all.
fn generate(queue: &Path, base: u64) -> String {
    let mut order: Vec<usize> = (0..N).collect();
    // A fixed shuffle: every 7th from the end first.
    order.sort_by_key(|i| ((i * 7919) % N, *i));
    for i in order {
        let t = base + i as u64;
        let id = id_for(t, i);
        std::fs::write(queue.join(&id), queue_file(&id, t, i)).unwrap();
    }
    let newest = id_for(base + N as u64, N);
    std::fs::write(queue.join(&newest), "not an envelope\n").unwrap();
    newest
}

#[test]
fn more_than_the_active_limit_is_delivered_oldest_first_reading_as_room_frees() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::plain());
    let env = Env::new(
        &plain_relay_toml(relay.port),
        &format!("[queue]\nconnections = 1\nactive_limit = {LIMIT}\n"),
    );
    let base = relayq::daemon::now() - 3600;
    let newest = generate(&env.spool("queue"), base);
    let mut d = env.daemon();
    let got = relay.wait_for(N, Duration::from_secs(90));
    // The corrupt file is set aside once the scan reaches it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !env.daemon_log().contains("moved to corrupt/") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = d.kill();
    let _ = d.wait();
    let log = env.daemon_log();
    assert_eq!(got.len(), N, "delivered {} of {N}: {log}", got.len());
    let subjects: Vec<String> = got.iter().map(subject_of).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("message {i:04}")).collect();
    assert_eq!(subjects, expected, "not oldest first");
    assert_eq!(env.queued(), 0, "{log}");
    // Only as many envelopes as fit were read at start ...
    assert!(
        log.contains(&format!(
            "daemon started: {LIMIT} queued read (active_limit {LIMIT})"
        )),
        "{log}"
    );
    // ... and the newest file (unreadable) only once the older mail had left room: an eager
    // reader sets it aside before the first delivery.
    let at = log
        .find(&format!("{newest}: moved to corrupt/"))
        .unwrap_or_else(|| panic!("corrupt file not set aside: {log}"));
    let removed_before = log[..at].matches(": removed").count();
    assert!(
        removed_before >= N - LIMIT,
        "set aside after only {removed_before} deliveries: {log}"
    );
}

/// `relayq flush` (no daemon) with more queued than the active limit: one pass delivers it
/// all, oldest first.
#[test]
fn one_flush_pass_delivers_more_than_the_active_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(tmp.path(), RelayOpts::plain());
    let env = Env::new(
        &plain_relay_toml(relay.port),
        &format!("[queue]\nconnections = 1\nactive_limit = {LIMIT}\n"),
    );
    generate(&env.spool("queue"), relayq::daemon::now() - 3600);
    let o = env.flush();
    assert!(o.status.success(), "{}", stderr(&o));
    let got = relay.arrived();
    let subjects: Vec<String> = got.iter().map(subject_of).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("message {i:04}")).collect();
    assert_eq!(subjects, expected, "{}", stderr(&o));
    assert_eq!((env.queued(), env.count("corrupt")), (0, 1));
}
