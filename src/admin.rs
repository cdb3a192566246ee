//! Queue management for the admin: `relayq hold|release|delete ID...|--all`, `relayq show ID
//! [--body]` and `relayq status [--json]`. Each state change is a rename between spool
//! directories (hold/ ⇄ queue/ via new/), like the rest of the spool. Root or the spool's
//! owner only: ordinary users cannot reach the spool.

use crate::daemon::read_envelope;
use crate::error::{Error, Result};
use crate::spool::{self, Layout};
use crate::state::{self, RcptState, State};
use std::fs;
use std::io::{BufRead, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

fn require_access(layout: &Layout) -> Result<u32> {
    let owner = fs::metadata(layout.dir("queue"))
        .map_err(|e| {
            Error::temp(format!(
                "spool {}: {e}: run `relayq init`",
                layout.root.display()
            ))
        })?
        .uid();
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 && me != owner {
        return Err(Error::noperm(
            "only root (or the spool's owner) can manage the queue",
        ));
    }
    Ok(owner)
}

/// Where a message is now: (directory, path).
fn locate(layout: &Layout, id: &str) -> Option<(&'static str, PathBuf)> {
    if !spool::is_id(id) {
        return None;
    }
    ["queue", "hold", "new"]
        .into_iter()
        .map(|d| (d, layout.dir(d).join(id)))
        .find(|(_, p)| p.exists())
}

fn all_ids(layout: &Layout, dirs: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = dirs
        .iter()
        .filter_map(|d| fs::read_dir(layout.dir(d)).ok())
        .flat_map(|r| {
            r.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
        })
        .filter(|n| spool::is_id(n))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn move_with_state(from: &PathBuf, to: &PathBuf) -> std::io::Result<()> {
    let st = state::path_for(from);
    if st.exists() {
        fs::rename(&st, state::path_for(to))?;
    }
    fs::rename(from, to)
}

/// hold, release or delete the given IDs (or all with `--all`).
pub fn change(layout: &Layout, verb: &str, args: &[String]) -> Result<i32> {
    require_access(layout)?;
    let ids: Vec<String> = if args.iter().any(|a| a == "--all") {
        match verb {
            "release" => all_ids(layout, &["hold"]),
            "hold" => all_ids(layout, &["queue", "new"]),
            _ => all_ids(layout, &["queue", "hold", "new"]),
        }
    } else {
        args.to_vec()
    };
    if ids.is_empty() {
        return Err(Error::usage(format!("usage: relayq {verb} ID... | --all")));
    }
    let mut failed = 0;
    for id in &ids {
        let Some((dir, path)) = locate(layout, id) else {
            eprintln!("relayq: {id}: no such message in the queue");
            failed += 1;
            continue;
        };
        let r = match (verb, dir) {
            ("hold", "hold") | ("release", "queue") | ("release", "new") => Ok(()),
            ("hold", _) => move_with_state(&path, &layout.dir("hold").join(id)),
            // Released mail goes back through new/, where the daemon notices it at once.
            ("release", _) => {
                let st = state::path_for(&path);
                let r = if st.exists() {
                    fs::rename(&st, state::path_for(&layout.dir("queue").join(id)))
                } else {
                    Ok(())
                };
                r.and_then(|_| fs::rename(&path, layout.dir("new").join(id)))
            }
            _ => {
                fs::remove_file(&path).and_then(|_| match fs::remove_file(state::path_for(&path)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                })
            }
        };
        match r {
            Ok(()) => println!(
                "{id}: {}",
                match verb {
                    "hold" => "held",
                    "release" => "released",
                    _ => "deleted",
                }
            ),
            Err(e) => {
                eprintln!("relayq: {id}: {e}");
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Envelope, per-recipient state, header (and with `--body` the body) of one message.
pub fn show(layout: &Layout, args: &[String]) -> Result<i32> {
    let owner = require_access(layout)?;
    let body = args.iter().any(|a| a == "--body");
    let Some(id) = args.iter().find(|a| !a.starts_with("--")) else {
        return Err(Error::usage("usage: relayq show ID [--body]"));
    };
    let (dir, path) = locate(layout, id).ok_or_else(|| {
        Error::new(
            crate::error::Class::NoUser,
            format!("{id}: no such message in the queue"),
        )
    })?;
    let (env, off, meta) = read_envelope(&path).map_err(|e| Error::data(format!("{id}: {e}")))?;
    let st = State::load(&state::path_for(&path), env.rcpts.len());
    println!(
        "Queue ID:  {id} ({})",
        if dir == "queue" { "queued" } else { dir }
    );
    println!(
        "Arrived:   {}",
        crate::message::rfc5322_date(env.time as i64)
    );
    println!("Size:      {} bytes", meta.len().saturating_sub(off));
    println!("Submitter: uid {}", env.submitter(meta.uid(), owner));
    println!("Sender:    <{}>", env.sender);
    if st.next > 0 {
        println!(
            "Next try:  {} (after {} deferred attempt(s))",
            crate::message::rfc5322_date(st.next as i64),
            st.attempts
        );
    }
    for (r, s) in env.rcpts.iter().zip(st.rcpts.iter()) {
        let (what, reply) = match s {
            RcptState::Pending => ("queued", String::new()),
            RcptState::Deferred(_, x) => ("deferred", format!(" ({x})")),
            RcptState::Delivered(_, x) => ("sent", format!(" ({x})")),
            RcptState::Failed(_, x) => ("failed", format!(" ({x})")),
        };
        println!("Recipient: <{}> {what}{reply}", r.addr);
    }
    println!();
    let mut f =
        std::io::BufReader::new(fs::File::open(&path).map_err(|e| Error::temp(e.to_string()))?);
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(off))
        .map_err(|e| Error::temp(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    let mut line = Vec::new();
    let mut in_body = false;
    loop {
        line.clear();
        if f.read_until(b'\n', &mut line)
            .map_err(|e| Error::temp(e.to_string()))?
            == 0
        {
            break;
        }
        if !in_body && line == b"\r\n" {
            if !body {
                break;
            }
            in_body = true;
        }
        let _ = std::io::Write::write_all(&mut out, &line);
    }
    Ok(0)
}

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
}

/// Whether a daemon (or flush) runs on this spool, and its pid: it holds run/daemon.lock,
/// so if we can take the lock, nobody runs.
pub fn daemon_state(layout: &Layout) -> (bool, Option<u32>) {
    let lock_path = layout.dir("run").join("daemon.lock");
    match fs::File::open(&lock_path) {
        Ok(f) => match f.try_lock_shared() {
            Ok(()) => (false, None),
            Err(_) => {
                let mut s = String::new();
                let _ = (&f).read_to_string(&mut s);
                (true, s.trim().parse().ok())
            }
        },
        Err(_) => (false, None),
    }
}

/// The daemon, queue counts, oldest message and last error, as `relayq status` shows them.
pub fn collect(layout: &Layout, stuck_after: std::time::Duration) -> Result<Status> {
    require_access(layout)?;
    let (running, pid) = daemon_state(layout);
    let count = |d: &str| all_ids(layout, &[d]).len();
    // One pass over the queue: the listing has every message's state.
    let entries = crate::queue::scan(layout, None);
    let now = crate::daemon::now();
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
    Ok(Status {
        daemon_running: running,
        daemon_pid: pid,
        incoming,
        queued,
        deferred,
        held,
        failed: count("failed"),
        corrupt: count("corrupt"),
        oldest_age_seconds: oldest,
        last_error: last_error.map(|x| x.1.to_string()),
        last_delivery: state::LastDelivery::load(&state::LastDelivery::path(layout)),
        stuck: oldest.is_some_and(|a| a >= stuck_after.as_secs()),
    })
}

/// Daemon, queue counts, oldest message, last error; exit 1 when mail is stuck (queued
/// longer than `--stuck-after`, default 1 hour), for monitoring.
pub fn status(layout: &Layout, args: &[String]) -> Result<i32> {
    let json = args.iter().any(|a| a == "--json");
    let stuck_after = args
        .iter()
        .position(|a| a == "--stuck-after")
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            crate::config::parse_duration(v)
                .ok_or_else(|| Error::usage(format!("--stuck-after {v}: use e.g. 30m, 1h")))
        })
        .transpose()?
        .unwrap_or(std::time::Duration::from_secs(3600));
    let s = collect(layout, stuck_after)?;
    if let Some(path) = args
        .iter()
        .position(|a| a == "--metrics")
        .and_then(|i| args.get(i + 1))
    {
        write_metrics(std::path::Path::new(path), &s)?;
    }
    if json {
        println!("{}", serde_json::to_string(&s).unwrap_or_default());
    } else {
        let daemon = match (s.daemon_running, s.daemon_pid) {
            (true, Some(p)) => format!("running (pid {p})"),
            (true, None) => "running".into(),
            (false, _) => "not running".into(),
        };
        println!("daemon:      {daemon}");
        println!(
            "queue:       {} queued ({} deferred), {} incoming, {} held",
            s.queued, s.deferred, s.incoming, s.held
        );
        println!(
            "failed:      {} bounced originals kept, {} corrupt files set aside",
            s.failed, s.corrupt
        );
        match s.oldest_age_seconds {
            Some(a) => println!(
                "oldest:      {}m {}s{}",
                a / 60,
                a % 60,
                if s.stuck { "  <- STUCK" } else { "" }
            ),
            None => println!("oldest:      (queue empty)"),
        }
        if let Some(e) = &s.last_error {
            println!("last error:  {e}");
        }
        if let Some(d) = &s.last_delivery {
            println!(
                "last delivery: {} ({} ago) to <{}>: {}",
                crate::message::rfc5322_date(d.time as i64),
                ago(crate::daemon::now().saturating_sub(d.time)),
                d.rcpt,
                d.reply
            );
        }
    }
    Ok(if s.stuck { 1 } else { 0 })
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
    let tmp = path.with_extension("prom.tmp");
    fs::write(&tmp, m)
        .and_then(|_| fs::rename(&tmp, path))
        .map_err(|e| Error::temp(format!("metrics file {}: {e}", path.display())))
}
