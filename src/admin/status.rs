//! `relayq status`: the daemon, the relay, queue counts, the oldest message, the last
//! error and delivery, as text, JSON or a Prometheus textfile; exit 1 when mail is stuck.
//! For root and the spool's owner; it only reads the spool (through `O_NOFOLLOW` fds).

use super::require_access;
use crate::daemon::ratelimit::{RateFile, RelayRate};
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
    /// Bounces the relay refused (kept in failed/): the report they carried reached nobody.
    pub refused_bounces: Vec<RefusedBounce>,
    /// Each relay with a send-rate limit or daily cap, as the daemon last recorded it.
    pub rate_limits: Vec<RateStatus>,
}

/// A relay's limits in force (run/ratelimit): rate, daily cap, the count in the last 24
/// hours, and what holds its mail now.
#[derive(serde::Serialize)]
pub struct RateStatus {
    #[serde(flatten)]
    pub limit: RelayRate,
    /// Recipients sent in the last 24 hours (counted for the daily cap).
    pub daily_count: u64,
    /// When the daily count next goes down (unix seconds): with the cap reached, when
    /// sending resumes.
    pub daily_resets_at: Option<u64>,
    /// "throttled by the relay" or "daily cap reached": mail is waiting for the rate limit.
    pub waiting: Option<String>,
    pub waiting_until: Option<u64>,
}

impl RateStatus {
    fn new(r: RelayRate, now: u64) -> RateStatus {
        let daily_count = r.daily.count(now);
        let daily_resets_at = match r.cap {
            Some(cap) if daily_count >= cap => Some(r.daily.below_at(cap, now)),
            _ if daily_count > 0 => Some(r.daily.below_at(daily_count, now)),
            _ => None,
        };
        let waiting = r.waiting(now);
        RateStatus {
            daily_count,
            daily_resets_at,
            waiting: waiting.map(|w| w.0.to_string()),
            waiting_until: waiting.map(|w| w.1),
            limit: r,
        }
    }

    /// "smtp://host:587: 30/min, daily 12 of 10000 recipients (...)".
    fn line(&self) -> String {
        let date = |t: u64| crate::message::rfc5322_date(t as i64);
        let l = &self.limit;
        let mut parts = Vec::new();
        if let Some(r) = l.rate {
            parts.push(r.to_string());
        }
        match l.cap {
            Some(cap) => parts.push(format!(
                "daily {} of {cap} recipients in 24 h{}",
                self.daily_count,
                self.daily_resets_at
                    .map(|t| format!(" (the count goes down at {})", date(t)))
                    .unwrap_or_default()
            )),
            None => parts.push("no daily cap".into()),
        }
        let mut line = format!("{}: {}", l.relay, parts.join(", "));
        if let (Some(w), Some(t)) = (&self.waiting, self.waiting_until) {
            line.push_str(&format!(
                "; waiting for the rate limit ({w}) until {}",
                date(t)
            ));
        }
        line
    }
}

/// A bounce (DSN) of ours that the relay refused for good: its queue ID, the message it
/// reported on, where it was going and the relay's reply.
#[derive(serde::Serialize)]
pub struct RefusedBounce {
    pub queue_id: String,
    pub original_id: Option<String>,
    pub rcpt: String,
    pub reply: String,
    pub time: u64,
}

/// The bounces in failed/: a bounce is never bounced, so one there was refused and its
/// report lost. Oldest first.
fn refused_bounces(spool: &Spool) -> Vec<RefusedBounce> {
    let mut out = vec![];
    for id in spool.ids(Queue::Failed) {
        let Ok((env, off, _)) = spool.read_envelope(Queue::Failed, id.as_str()) else {
            continue;
        };
        if !env.is_bounce {
            continue;
        }
        let st = state::State::parse(&spool.journal(&id), env.rcpts.len());
        for (i, r) in st.rcpts.iter().enumerate() {
            if let state::RcptState::Failed(time, reply) = r {
                out.push(RefusedBounce {
                    queue_id: id.as_str().to_string(),
                    original_id: original_of(spool, id.as_str(), off),
                    rcpt: env.rcpts.get(i).map(|r| r.addr.clone()).unwrap_or_default(),
                    reply: reply.clone(),
                    time: *time,
                });
            }
        }
    }
    out
}

/// The queue ID a bounce reports on, from its text ("Your message (queue ID X)").
fn original_of(spool: &Spool, name: &str, off: u64) -> Option<String> {
    let (f, _) = spool.open_file(Queue::Failed, name).ok()?;
    let mut head = vec![];
    let mut f = std::io::BufReader::new(f);
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(off)).ok()?;
    f.take(64 << 10).read_to_end(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head);
    let rest = &text[text.find("(queue ID ")? + 10..];
    let id = &rest[..rest.find(')')?];
    crate::spool::is_id(id).then(|| id.to_string())
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
    // Counted from the directory entries, without opening the files (a million queued
    // take a second): a file that is not a valid queue file counts until the daemon sets
    // it aside.
    let now = crate::state::now();
    let (incoming, new_oldest) = tally(&spool, Queue::New);
    let (queued, queue_oldest) = tally(&spool, Queue::Active);
    let (held, _) = tally(&spool, Queue::Hold);
    let oldest = [new_oldest, queue_oldest]
        .into_iter()
        .flatten()
        .min()
        .map(|t| now.saturating_sub(t));
    // Deferred: a message in queue/ with a journal (tried before); the last error is the
    // latest deferral among the newest journals.
    let mut journals = spool.journals_in(Queue::Active).unwrap_or_default();
    let deferred = journals.len();
    // The newest by modification time, and those written in the same clock tick.
    let k = journals.len().saturating_sub(NEWEST_JOURNALS);
    let cut = match journals.len() {
        n if n > NEWEST_JOURNALS => Some(journals.select_nth_unstable_by_key(k, |j| j.1).1.1),
        _ => None,
    };
    let newest = journals
        .iter()
        .filter(|j| cut.is_none_or(|c| j.1 >= c))
        .take(NEWEST_JOURNALS * 64);
    let mut last_error: Option<(u64, String)> = None;
    for (id, _) in newest {
        let st = state::State::parse(&spool.journal(id), MAX_RCPTS);
        for r in st.rcpts {
            if let state::RcptState::Deferred(t, why) = r
                && last_error.as_ref().is_none_or(|(lt, _)| t > *lt)
            {
                last_error = Some((t, why));
            }
        }
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
        last_error: last_error.map(|x| x.1),
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
        refused_bounces: refused_bounces(&spool),
        rate_limits: RateFile::load(&RateFile::path(layout))
            .0
            .into_iter()
            .map(|r| RateStatus::new(r, now))
            .collect(),
    })
}

/// The journals read for the last error: the most recently written.
const NEWEST_JOURNALS: usize = 16;
/// Recipients looked at in a journal read without its envelope.
const MAX_RCPTS: usize = 1024;
/// Queue files whose envelope is tried for the oldest arrival, smallest IDs first.
const OLDEST_TRIED: usize = 16;

/// How many queue files `q` holds (regular files named as queue IDs), and the arrival time
/// of the oldest: the envelope of the file with the smallest ID (an ID begins with the time
/// it was queued) that reads as a queue file, else the time in that ID.
fn tally(spool: &Spool, q: Queue) -> (usize, Option<u64>) {
    let mut n = 0;
    let mut smallest: Vec<String> = Vec::new();
    let _ = spool.scan_files(q, |name| {
        if !crate::spool::is_id(name) {
            return;
        }
        n += 1;
        if smallest.len() < OLDEST_TRIED || smallest.last().is_some_and(|l| name < l.as_str()) {
            let at = smallest.partition_point(|x| x.as_str() < name);
            smallest.insert(at, name.to_string());
            smallest.truncate(OLDEST_TRIED);
        }
    });
    let oldest = smallest
        .iter()
        .find_map(|name| {
            spool
                .read_envelope(q, name)
                .ok()
                .map(|(env, _, _)| env.time)
        })
        .or_else(|| {
            let secs = smallest.first()?.get(..9)?;
            u64::from_str_radix(secs, 16).ok()
        });
    (n, oldest)
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
        for r in &s.rate_limits {
            println!("rate limit:    {}", r.line());
        }
        let waiting = s.rate_limits.iter().any(|r| r.waiting.is_some()) && s.queued > 0;
        println!(
            "queue:         {} queued ({} deferred{}), {} incoming, {} held",
            s.queued,
            s.deferred,
            if waiting {
                ", the rest waiting for the rate limit"
            } else {
                ""
            },
            s.incoming,
            s.held
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
        for b in &s.refused_bounces {
            println!(
                "bounce refused: {}{} to <{}>: {}  <- LOST (failed/{})",
                b.queue_id,
                b.original_id
                    .as_deref()
                    .map(|o| format!(" (the bounce of {o})"))
                    .unwrap_or_default(),
                b.rcpt,
                b.reply,
                b.queue_id
            );
        }
    }
    let relay_stuck = s.relay.as_ref().is_some_and(|r| r.stuck);
    Ok(if s.stuck || relay_stuck || !s.refused_bounces.is_empty() {
        1
    } else {
        0
    })
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
    m.push_str("# HELP relayq_refused_bounces Bounces the relay refused, kept in failed/ (their report reached nobody).\n# TYPE relayq_refused_bounces gauge\n");
    m.push_str(&format!(
        "relayq_refused_bounces {}\n",
        s.refused_bounces.len()
    ));
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
