//! Soak: 2,000 messages while the relay cycles between accepting, 451 at MAIL and dropping
//! the connection at DATA, and the daemon is killed with SIGKILL and restarted 10 times.
//! Every message must arrive at least once, duplicates are counted (bounded by the kills),
//! and nothing is left in the queue. Bounded: about a minute on 2 cores.

mod support;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::*;

const MESSAGES: usize = 2000;
const KILLS: usize = 10;
const CONNECTIONS: usize = 2;

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
    relay.set_faults(r#"{"mode": "cycle", "cycle": ["ok", "451", "disconnect"]}"#);
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
    for k in 0..KILLS {
        for i in 0..per_batch {
            let n = k * per_batch + i;
            env.send(&["soak@example.org"], &format!("soak {n}"));
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(100 + (seed >> 33) % 400));
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
    for m in &got {
        assert_eq!(rcpts_of(m), ["soak@example.org"]);
        *counts.entry(subject_of(m)).or_default() += 1;
    }
    let missing: Vec<usize> = (0..MESSAGES)
        .filter(|n| !counts.contains_key(&format!("soak {n}")))
        .collect();
    let dups: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "soak: {} messages, {} arrivals, {} duplicates after {KILLS} kills, {} relay connections, {:.1} s",
        MESSAGES,
        got.len(),
        dups,
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
    assert_eq!(env.queued(), 0, "queue drained");
    assert_eq!(env.count("failed"), 0);
    assert_eq!(env.count("corrupt"), 0);
}
