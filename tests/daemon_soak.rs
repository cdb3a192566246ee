//! Soak: 2,000 messages while the relay cycles between accepting, 451 at MAIL and dropping
//! the connection at DATA, and the daemon is killed with SIGKILL and restarted 10 times.
//! Every message must arrive at least once, duplicates are counted (bounded by the kills),
//! and nothing is left in the queue. Every tenth message also has a recipient the relay
//! refuses (550): each of those must be bounced at least once, duplicates bounded the same.
//! Meanwhile root holds and releases queued messages at random (`relayq hold`/`release`):
//! nothing held is lost or sent twice. Bounded: about a minute on 2 cores.

mod support;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::*;

const MESSAGES: usize = 2000;
const KILLS: usize = 10;
const CONNECTIONS: usize = 2;
/// Every BAD_EVERY-th message also goes to a recipient the relay refuses.
const BAD_EVERY: usize = 10;
/// Messages held and released after each batch (at most).
const HOLDS: usize = 5;

fn kill9(c: &mut std::process::Child) {
    let _ = c.kill(); // SIGKILL
    let _ = c.wait();
}

#[test]
fn soak_kills_and_flapping_relay_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // Plain SMTP on loopback: the soak is about the queue, and the Python relay's TLS
    // handshakes would dominate the run (TLS is covered by daemon_relay.rs).
    let relay = Relay::start(tmp.path(), RelayOpts::plain());
    // Per MAIL command, across all sessions: accept, 451, drop the connection at DATA.
    relay.set_faults(
        r#"{"mode": "cycle", "cycle": ["ok", "451", "disconnect"], "rcpt": {"bad@example.org": "550 5.1.1 no such user"}}"#,
    );
    let relay_cfg = format!(
        "url = \"smtp://127.0.0.1:{}\"\nallow_plaintext = true\ncommand_timeout = 10",
        relay.port
    );
    let env = Env::new(
        &relay_cfg,
        &format!("[queue]\nretry_min = 1\nretry_max = 2\nconnections = {CONNECTIONS}"),
    );
    let started = Instant::now();
    let mut daemon = env.daemon();
    // Submit in batches, killing the daemon at points spread over the run.
    let per_batch = MESSAGES / KILLS;
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("soak seed {seed}");
    let mut held = 0;
    for k in 0..KILLS {
        for i in 0..per_batch {
            let n = k * per_batch + i;
            if n.is_multiple_of(BAD_EVERY) {
                env.send(
                    &["soak@example.org", "bad@example.org"],
                    &format!("soak {n}"),
                );
            } else {
                env.send(&["soak@example.org"], &format!("soak {n}"));
            }
        }
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        // Hold and release a few of what is queued now, at random moments.
        let queued: Vec<String> = std::fs::read_dir(env.spool("queue"))
            .map(|r| {
                r.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        for _ in 0..queued.len().min(HOLDS) {
            let id = &queued[next() as usize % queued.len()];
            std::thread::sleep(Duration::from_millis(next() % 50));
            if env.relayq(&["hold", id]).status.success() {
                held += 1;
                std::thread::sleep(Duration::from_millis(next() % 50));
                let o = env.relayq(&["release", id]);
                assert!(o.status.success(), "release {id}: {}", stderr(&o));
            }
        }
        std::thread::sleep(Duration::from_millis(100 + next() % 400));
        kill9(&mut daemon);
        daemon = env.daemon();
    }
    // Let it drain (bounded).
    let deadline = Instant::now() + Duration::from_secs(90);
    // Cheap check first (the spool), so the test does not compete with the relay for CPU.
    while env.queued() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    kill9(&mut daemon);
    let got = relay.arrived();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut bounced: HashMap<String, usize> = HashMap::new();
    for m in &got {
        if rcpts_of(m) == ["admin@example.com"] {
            // A bounce (local mail's go to the admin): it names the original by its headers.
            let data = m["data"].as_str().unwrap_or("");
            assert!(
                data.contains("Final-Recipient: rfc822; bad@example.org"),
                "{data}"
            );
            let subject = data
                .split("\r\n")
                .filter_map(|l| l.strip_prefix("Subject: soak "))
                .next()
                .unwrap_or("?");
            *bounced.entry(format!("soak {subject}")).or_default() += 1;
            continue;
        }
        assert_eq!(rcpts_of(m), ["soak@example.org"]);
        *counts.entry(subject_of(m)).or_default() += 1;
    }
    let missing: Vec<usize> = (0..MESSAGES)
        .filter(|n| !counts.contains_key(&format!("soak {n}")))
        .collect();
    let unbounced: Vec<usize> = (0..MESSAGES)
        .step_by(BAD_EVERY)
        .filter(|n| !bounced.contains_key(&format!("soak {n}")))
        .collect();
    assert_eq!(
        bounced.len(),
        MESSAGES / BAD_EVERY,
        "bounces only for the messages with a refused recipient: {bounced:?}"
    );
    let dups: usize = counts.values().map(|c| c - 1).sum();
    let bounce_dups: usize = bounced.values().map(|c| c - 1).sum();
    eprintln!(
        "soak: {} messages, {} arrivals, {} duplicates, {} bounces ({} duplicate) after {KILLS} kills and {held} holds, {} relay connections, {:.1} s",
        MESSAGES,
        got.len(),
        dups,
        bounced.values().sum::<usize>(),
        bounce_dups,
        relay.stat("connections"),
        started.elapsed().as_secs_f64()
    );
    assert!(
        missing.is_empty(),
        "lost messages: {:?}",
        &missing[..missing.len().min(20)]
    );
    assert!(
        dups <= KILLS * CONNECTIONS,
        "{dups} duplicates for {KILLS} kills"
    );
    assert!(unbounced.is_empty(), "lost bounces: {unbounced:?}");
    assert!(
        bounce_dups <= KILLS * CONNECTIONS,
        "{bounce_dups} duplicate bounces for {KILLS} kills"
    );
    assert_eq!(env.queued(), 0, "queue drained");
    assert_eq!(env.count("failed"), MESSAGES / BAD_EVERY, "originals kept");
    assert_eq!(env.count("corrupt"), 0);
}
