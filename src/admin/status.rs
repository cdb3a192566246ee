//! `relayq status`: the daemon, the relay, queue counts, the oldest message, the last
//! error and delivery, as text, JSON or a Prometheus textfile; exit 1 when mail is stuck.
//! For root and the spool's owner; it only reads the spool (through `O_NOFOLLOW` fds).

use super::require_access;
use crate::error::{Error, Result};
use crate::spool::{Layout, Queue, Spool};
use crate::state;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;

#[derive(serde::Serialize)]
pub struct Status {
    pub daemon_running: bool,
    pub daemon_pid: Option<u32>,
    pub incoming: usize,
    pub queued: usize,
    pub deferred: usize,
    pub held: usize,
    pub failed: usize,
    pub corrupt: usize,
    pub oldest_age_seconds: Option<u64>,
    pub last_error: Option<String>,
    /// The most recent successful delivery the daemon (or a flush) recorded.
    pub last_delivery: Option<state::LastDelivery>,
    pub stuck: bool,
    /// The relay's state as the daemon (or a flush) last recorded it; None before any attempt.
    pub relay: Option<RelayStatus>,
}

#[derive(serde::Serialize)]
pub struct RelayStatus {
    #[serde(flatten)]
    pub state: state::RelayState,
    /// Down longer than --stuck-after.
    pub stuck: bool,
    /// No mail waiting: a "down" state is only what the last attempt found (nothing
    /// retries it until the next message).
    pub idle: bool,
}

/// Whether a daemon (or flush) runs on this spool, and its pid: it holds run/daemon.lock,
/// so if we can take the lock, nobody runs.
pub fn daemon_state(layout: &Layout) -> (bool, Option<u32>) {
    match Spool::open(layout)
        .ok()
        .and_then(|s| s.open_run_file("daemon.lock"))
    {
        Some(f) => match f.try_lock_shared() {
            Ok(()) => (false, None),
            Err(_) => {
                let mut s = String::new();
                let _ = (&f).read_to_string(&mut s);
                (true, s.trim().parse().ok())
            }
        },
        None => (false, None),
    }
}

/// The daemon, queue counts, oldest message and last error, as `relayq status` shows them.
pub fn collect(layout: &Layout, stuck_after: std::time::Duration) -> Result<Status> {
    let spool = Spool::open(layout)?;
    require_access(&spool)?;
    let (running, pid) = daemon_state(layout);
    // corrupt/ holds whatever was set aside, under new names (ID-oldname): every file.
    let corrupt = spool.list(Queue::Corrupt).map_or(0, |v| v.len());
    // One pass over the queue: the listing has every message's state.
    let entries = crate::queue::scan(&spool, None);
    let now = crate::state::now();
    let (mut incoming, mut queued, mut deferred, mut held) = (0, 0, 0, 0);
    let mut oldest = None;
    let mut last_error: Option<(u64, &str)> = None;
    for e in &entries {
        match e.queue_name {
            "incoming" => incoming += 1,
            "hold" => {
                held += 1;
                continue;
            }
            q => {
                queued += 1;
                deferred += usize::from(q == "deferred");
                for r in &e.recipients {
                    if let Some(why) = r.delay_reason.as_deref()
                        && r.state == "deferred"
                        && last_error.is_none_or(|(lt, _)| r.since > lt)
                    {
                        last_error = Some((r.since, why));
                    }
                }
            }
        }
        oldest = oldest.max(Some(now.saturating_sub(e.arrival_time)));
    }
    let waiting = incoming + queued + held > 0;
    Ok(Status {
        daemon_running: running,
        daemon_pid: pid,
        incoming,
        queued,
        deferred,
        held,
        failed: spool.count(Queue::Failed),
        corrupt,
        oldest_age_seconds: oldest,
        last_error: last_error.map(|x| x.1.to_string()),
        last_delivery: state::LastDelivery::load(&state::LastDelivery::path(layout)),
        stuck: oldest.is_some_and(|a| a >= stuck_after.as_secs()),
        relay: state::RelayState::load(&state::RelayState::path(layout)).map(|r| RelayStatus {
            // A relay last seen down with nothing waiting holds no mail up (the state is
            // only rechecked when there is mail to send).
            idle: !waiting,
            // Any route's relays (the default's or a sender route's) down too long.
            stuck: std::iter::once(&r)
                .chain(&r.routes)
                .any(|x| route_stuck(x, waiting, now, stuck_after)),
            state: r,
        }),
    })
}

/// A route's relays down with mail waiting for longer than `stuck_after`; a refused sender is
/// a configuration problem: stuck at once, not after an hour.
fn route_stuck(
    r: &state::RelayState,
    waiting: bool,
    now: u64,
    stuck_after: std::time::Duration,
) -> bool {
    !r.up
        && waiting
        && (r
            .down_since
            .is_some_and(|t| now.saturating_sub(t) >= stuck_after.as_secs())
            || r.reason
                .as_deref()
                .is_some_and(|x| x.contains("refuses the sender")))
}

/// Daemon, relay, queue counts, oldest message, last error; exit 1 when mail is stuck (queued
/// longer than `--stuck-after`, default 1 hour) or the relay has been down that long, for
/// monitoring.
pub fn status(
    layout: &Layout,
    json: bool,
    stuck_after: std::time::Duration,
    metrics: Option<&std::path::Path>,
) -> Result<i32> {
    let s = collect(layout, stuck_after)?;
    if let Some(path) = metrics {
        write_metrics(path, &s)?;
    }
    if json {
        println!("{}", serde_json::to_string(&s).unwrap_or_default());
    } else {
        let daemon = match (s.daemon_running, s.daemon_pid) {
            (true, Some(p)) => format!("running (pid {p})"),
            (true, None) => "running".into(),
            (false, _) => "not running".into(),
        };
        println!("daemon:        {daemon}");
        if let Some(r) = &s.relay {
            let now = crate::state::now();
            let stuck = |x| route_stuck(x, !r.idle, now, stuck_after);
            println!(
                "relay:         {}",
                relay_line(&r.state, r.idle, stuck(&r.state))
            );
            // Each [[sender_relay]] route: its own relays, its own state.
            for x in &r.state.routes {
                println!(
                    "relay for {}: {}",
                    x.senders.as_deref().unwrap_or(""),
                    relay_line(x, r.idle, stuck(x))
                );
            }
        }
        println!(
            "queue:         {} queued ({} deferred), {} incoming, {} held",
            s.queued, s.deferred, s.incoming, s.held
        );
        println!(
            "failed:        {} bounced originals kept, {} corrupt files set aside",
            s.failed, s.corrupt
        );
        match s.oldest_age_seconds {
            Some(a) => println!(
                "oldest:        {}m {}s{}",
                a / 60,
                a % 60,
                if s.stuck { "  <- STUCK" } else { "" }
            ),
            None => println!("oldest:        (queue empty)"),
        }
        if let Some(e) = &s.last_error {
            println!("last error:    {e}");
        }
        if let Some(d) = &s.last_delivery {
            println!(
                "last delivery: {} ({} ago) to <{}>: {}",
                crate::message::rfc5322_date(d.time as i64),
                ago(crate::state::now().saturating_sub(d.time)),
                d.rcpt,
                d.reply
            );
        }
    }
    let relay_stuck = s.relay.as_ref().is_some_and(|r| r.stuck);
    Ok(if s.stuck || relay_stuck { 1 } else { 0 })
}

/// "up", or "down since <time> (<age>): <reason>; next try <time>".
fn relay_line(st: &state::RelayState, idle: bool, stuck: bool) -> String {
    if st.up {
        return "up".into();
    }
    let date = |t: u64| crate::message::rfc5322_date(t as i64);
    let mut line = String::from(if idle { "last seen down" } else { "down" });
    if let Some(t) = st.down_since {
        line.push_str(&format!(
            " since {} ({} ago)",
            date(t),
            ago(crate::state::now().saturating_sub(t))
        ));
    }
    line.push_str(&format!(": {}", st.reason.as_deref().unwrap_or("unknown")));
    match st.next_try {
        _ if idle => line.push_str(" (no mail waiting: the next message tries it again)"),
        Some(t) => line.push_str(&format!("; next try {}", date(t))),
        None => {}
    }
    if stuck {
        line.push_str("  <- STUCK");
    }
    line
}

/// "42s", "5m 3s", "2h 5m", "3d 4h".
fn ago(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// Prometheus text format, for node_exporter's textfile collector (written atomically).
fn write_metrics(path: &std::path::Path, s: &Status) -> Result<()> {
    let mut m = String::new();
    m.push_str("# HELP relayq_queue_messages Messages in the spool by state.\n# TYPE relayq_queue_messages gauge\n");
    for (state, n) in [
        ("incoming", s.incoming),
        ("queued", s.queued),
        ("deferred", s.deferred),
        ("held", s.held),
        ("failed", s.failed),
        ("corrupt", s.corrupt),
    ] {
        m.push_str(&format!("relayq_queue_messages{{state=\"{state}\"}} {n}\n"));
    }
    m.push_str("# HELP relayq_oldest_message_age_seconds Age of the oldest queued message.\n# TYPE relayq_oldest_message_age_seconds gauge\n");
    m.push_str(&format!(
        "relayq_oldest_message_age_seconds {}\n",
        s.oldest_age_seconds.unwrap_or(0)
    ));
    m.push_str("# HELP relayq_daemon_running Whether the relayq daemon holds the spool lock.\n# TYPE relayq_daemon_running gauge\n");
    m.push_str(&format!(
        "relayq_daemon_running {}\n",
        u8::from(s.daemon_running)
    ));
    m.push_str("# HELP relayq_stuck Whether mail has waited longer than --stuck-after.\n# TYPE relayq_stuck gauge\n");
    m.push_str(&format!("relayq_stuck {}\n", u8::from(s.stuck)));
    m.push_str("# HELP relayq_last_delivery_timestamp_seconds When the relay last accepted a message (absent: none recorded).\n# TYPE relayq_last_delivery_timestamp_seconds gauge\n");
    if let Some(d) = &s.last_delivery {
        m.push_str(&format!(
            "relayq_last_delivery_timestamp_seconds {}\n",
            d.time
        ));
    }
    m.push_str("# HELP relayq_relay_up Whether the relay was usable at the last attempt (absent: none recorded).\n# TYPE relayq_relay_up gauge\n");
    if let Some(r) = &s.relay {
        m.push_str(&format!("relayq_relay_up {}\n", u8::from(r.state.up)));
        for x in &r.state.routes {
            let senders = x.senders.as_deref().unwrap_or("").replace(['"', '\\'], "");
            m.push_str(&format!(
                "relayq_relay_up{{senders=\"{senders}\"}} {}\n",
                u8::from(x.up)
            ));
        }
    }
    // Root writes into a directory others may own (node-exporter's): the temporary file is
    // created new (O_CREAT|O_EXCL, which follows no link) under a random name, then renamed
    // over the target, which replaces a link there rather than writing through it.
    let tmp = path.with_extension(format!("prom.{}.tmp", crate::spool::new_id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| f.write_all(m.as_bytes()))
        .and_then(|_| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .map_err(|e| Error::temp(format!("metrics file {}: {e}", path.display())))
}
