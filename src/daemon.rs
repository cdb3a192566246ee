//! The flush daemon: picks up new mail (inotify on `new/`, no polling), schedules it, and
//! drains it through the relay with a small pool of reused connections. Owns retries with
//! backoff, the relay-wide outage state (detected once, probed, not retried per message),
//! queue lifetime, bounces, delay warnings and the local submission socket. `relayq flush`
//! is one pass of the same machinery.
//!
//! Commit rule: after the relay's final 250 a worker records the result (or unlinks the
//! message) before it does anything else, so a crash can at worst resend that one message.

use crate::bounce::{self, Dsn, Recipient};
use crate::config::{AuthKind, Config};
use crate::error::{Class, Error, Result};
use crate::provider::{self, Tls};
use crate::relay::{
    self, Auth, AuthMech, Kind, OutEnvelope, OutRcpt, Session, SessionError, Stage, Target,
    Timeouts,
};
use crate::spool::{self, Draft, Envelope, Layout, Queue, QueueId, Rcpt, Spool};
use crate::state::{self, Event, Journal, RcptState, State};
use log::{error, info, warn};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// How a relay's password or token is obtained.
#[derive(Clone)]
enum Secret {
    None,
    Static(String),
    Command(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::None => "none",
            Secret::Static(_) => "static(..)",
            Secret::Command(_) => "command(..)",
        })
    }
}

fn run_secret_command(cmd: &str) -> std::result::Result<String, String> {
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run password_command: {e}"))?;
    if !out.status.success() {
        return Err(format!("password_command failed ({})", out.status));
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let first = s.lines().next().unwrap_or("").trim().to_string();
    if first.is_empty() {
        return Err("password_command printed nothing".into());
    }
    Ok(first)
}

/// Read a password file, refusing one that other users can read (as ssh does for keys) or
/// that belongs to someone other than root or the daemon's user (see [`crate::perms`]).
pub fn read_password_file(p: &Path, daemon_uid: Option<u32>) -> Result<String> {
    crate::perms::password_file(p, daemon_uid)?;
    let text = fs::read_to_string(p)
        .map_err(|e| Error::config(format!("password_file {}: {e}", p.display())))?;
    let pw = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('\r')
        .to_string();
    if pw.is_empty() {
        return Err(Error::config(format!(
            "password_file {} is empty",
            p.display()
        )));
    }
    Ok(pw)
}

/// One configured relay: how to reach it, and whether it is currently usable.
struct Slot {
    name: String,
    target: Target,
    secret: Secret,
    /// None = up; Some = down until then.
    down_until: Option<Instant>,
    down_since: Option<Instant>,
    failures: u32,
    probing: bool,
    config_problem: bool,
    /// Consecutive transactions refused with 4xx at MAIL (a relay-wide refusal).
    mail_tempfails: u32,
    /// Why it is down, in plain words (for run/relay).
    reason: String,
    /// Marked down at MAIL (the configured sender refused, or every transaction refused): a
    /// connection alone does not show it is back; a probe's MAIL FROM must be accepted.
    mail_probe: bool,
}

impl Slot {
    fn usable(&self, now: Instant) -> bool {
        match self.down_until {
            None => true,
            Some(t) => t <= now && !self.probing,
        }
    }

    /// Probe interval while down: every 12 s for the first 10 minutes (at most 6 attempts in
    /// any minute, counting the two or more workers that found the relay down at the same
    /// moment, and a recovered relay is noticed within 12 s), then every minute, then
    /// every 5 minutes after an hour. Configuration problems (wrong password, bad
    /// certificate) back off further: they need a human, and SIGHUP retries at once.
    fn interval(&self) -> Duration {
        let down_for = self.down_since.map(|s| s.elapsed()).unwrap_or_default();
        let secs = if self.config_problem {
            (60u64 << self.failures.min(3)).min(600)
        } else if down_for < Duration::from_secs(600) {
            12
        } else if down_for < Duration::from_secs(3600) {
            60
        } else {
            300
        };
        Duration::from_secs(secs)
    }

    /// Record a failed connection. False when another worker had already marked the relay
    /// down and its next probe is not due: a concurrent attempt, neither counted nor logged
    /// again.
    fn mark_down(&mut self, config_problem: bool, reason: String) -> bool {
        let now = Instant::now();
        if self.down_until.is_some_and(|u| u > now) {
            return false;
        }
        self.reason = reason;
        self.failures += 1;
        self.config_problem = config_problem;
        self.down_since.get_or_insert(now);
        self.down_until = Some(now + self.interval());
        self.probing = false;
        true
    }

    fn mark_up(&mut self) -> bool {
        let was_down = self.down_until.is_some();
        self.down_until = None;
        self.down_since = None;
        self.failures = 0;
        self.probing = false;
        self.config_problem = false;
        self.mail_probe = false;
        self.reason.clear();
        was_down
    }
}

/// Each configured relay as (name, target) with its secret resolved: for `relayq test`.
pub fn resolved_targets(cfg: &Config) -> Result<Vec<(String, Target)>> {
    let mut out = Vec::new();
    for slot in build_slots(cfg)? {
        let mut t = slot.target.clone();
        if let Some(a) = t.auth.as_mut() {
            a.secret = match &slot.secret {
                Secret::Static(s) => s.clone(),
                Secret::Command(c) => run_secret_command(c).map_err(Error::config)?,
                Secret::None => String::new(),
            };
        }
        out.push((slot.name, t));
    }
    Ok(out)
}

fn build_slots(cfg: &Config) -> Result<Vec<Slot>> {
    let mut out = Vec::new();
    let ehlo_default = crate::submit::host_names().1;
    let daemon_uid = crate::perms::spool_owner(&Layout::new(&cfg.spool_dir)).ok();
    for r in cfg.relays() {
        let ep = provider::endpoint(r)
            .map_err(|e| Error::config(format!("config {}: relay: {e}", cfg.path.display())))?;
        let tls_config = if ep.tls == Tls::Plain {
            None
        } else {
            Some(
                relay::build_tls_config(r.ca_file.as_deref(), r.ca_only)
                    .map_err(|e| Error::config(format!("TLS setup for {}: {e}", ep.host)))?,
            )
        };
        let secret = if let Some(p) = &r.password_file {
            Secret::Static(read_password_file(p, daemon_uid)?)
        } else if let Some(c) = &r.password_command {
            Secret::Command(c.clone())
        } else {
            Secret::None
        };
        let mech = match r.auth {
            AuthKind::Auto => Some(None),
            AuthKind::Plain => Some(Some(AuthMech::Plain)),
            AuthKind::Login => Some(Some(AuthMech::Login)),
            AuthKind::Xoauth2 => Some(Some(AuthMech::Xoauth2)),
            AuthKind::None => None,
        };
        let auth = match (&r.username, mech) {
            (Some(u), Some(m)) => Some(Auth {
                mech: m,
                username: u.clone(),
                secret: String::new(),
            }),
            _ => None,
        };
        if auth.is_some() && matches!(secret, Secret::None) {
            return Err(Error::config(format!(
                "config {}: relay {}: username is set but neither password_file nor password_command",
                cfg.path.display(),
                ep.host
            )));
        }
        let target = Target {
            host: ep.host.clone(),
            port: ep.port,
            tls: match ep.tls {
                Tls::Implicit => relay::TlsMode::Implicit,
                Tls::StartTls => relay::TlsMode::StartTls,
                Tls::Plain => relay::TlsMode::Plain,
            },
            ehlo_name: r.ehlo_name.clone().unwrap_or_else(|| ehlo_default.clone()),
            auth,
            timeouts: Timeouts {
                connect: r.connect_timeout,
                command: r.command_timeout,
                data_end: r.data_timeout,
            },
            tls_config,
            pin_sha256: r.pin_sha256.clone(),
        };
        out.push(Slot {
            name: ep.to_string(),
            target,
            secret,
            down_until: None,
            down_since: None,
            failures: 0,
            probing: false,
            config_problem: false,
            mail_tempfails: 0,
            reason: String::new(),
            mail_probe: false,
        });
    }
    if out.is_empty() {
        return Err(Error::config(format!(
            "config {}: no [relay] configured: set [relay] url or provider (see relayq.toml(5))",
            cfg.path.display()
        )));
    }
    Ok(out)
}

/// A unit of work for a worker: one message's pending recipients.
#[derive(Clone)]
struct Job {
    id: QueueId,
    env: Arc<Envelope>,
    body_offset: u64,
    pending: Vec<usize>,
    arrival: u64,
}

struct Shared {
    ready: VecDeque<Job>,
    slots: Vec<Slot>,
    stop: bool,
    /// One pass only (flush): workers leave instead of waiting for a relay to come back.
    once: bool,
    idle_timeout: Duration,
    /// Workers waiting with an open connection: a worker without one leaves them the jobs.
    idle_connected: usize,
    /// Bumped by each reload: a connection opened under an older config is not reused.
    generation: u64,
    /// The sender local mail and bounces go out as: a 5xx to it at MAIL is a relay-wide
    /// configuration problem, not a property of the message.
    relay_sender: String,
}

impl Shared {
    fn any_usable(&self, now: Instant) -> bool {
        self.slots.iter().any(|s| s.usable(now))
    }
    fn all_down(&self) -> bool {
        self.slots.iter().all(|s| s.down_until.is_some())
    }
    fn earliest_probe(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| !s.probing)
            .filter_map(|s| s.down_until)
            .min()
    }
}

/// What a worker tells the main thread after a job.
enum Outcome {
    /// The transaction ran; results are journaled. `message_deferral`: the message as a
    /// whole should back off (4xx at MAIL/DATA/dot, or a dropped connection mid-way).
    Done { message_deferral: bool },
    /// No relay could be reached: the job is back in the ready queue.
    Blocked,
    /// The message file vanished or is unreadable (deleted by an admin?).
    Gone(String),
}

struct Report {
    id: String,
    outcome: Outcome,
}

struct Ctx {
    shared: Mutex<Shared>,
    cv: Condvar,
    spool: Spool,
    reports: Mutex<mpsc::Sender<Report>>,
    wake: UnixStream,
    /// The latest successful delivery, for `relayq status` (run/last-delivery).
    last_delivery: Mutex<state::DeliveryNote>,
    /// Whether the relay is up, or down since when and why (run/relay).
    relay_note: Mutex<state::RelayNote>,
}

impl Ctx {
    fn report(&self, r: Report) {
        if let Ok(tx) = self.reports.lock() {
            let _ = tx.send(r);
        }
        let _ = (&self.wake).write(&[1]);
    }
}

/// A live connection and which slot it belongs to.
struct Conn {
    session: Session,
    slot: usize,
    last_used: Instant,
    reused: bool,
}

/// Why a connection attempt failed: the error, whether it is a configuration problem, the
/// relay's name, and the reason in plain words for run/relay.
type ConnectFailure = (SessionError, bool, String, String);

fn connect_slot(ctx: &Ctx, i: usize) -> std::result::Result<Session, ConnectFailure> {
    let (mut target, secret, name, probe_sender) = {
        let g = ctx.shared.lock().expect("lock");
        (
            g.slots[i].target.clone(),
            g.slots[i].secret.clone(),
            g.slots[i].name.clone(),
            g.slots[i].mail_probe.then(|| g.relay_sender.clone()),
        )
    };
    if let Some(a) = target.auth.as_mut() {
        a.secret = match secret {
            Secret::Static(s) => s,
            Secret::Command(c) => match run_secret_command(&c) {
                Ok(s) => s,
                Err(e) => return Err((SessionError::local(&e), true, name, e)),
            },
            Secret::None => String::new(),
        };
    }
    let failed = |e: SessionError| {
        let reason = plain_reason(&e, &target);
        let cp = e.is_config_problem() || sender_refused(&e);
        (e, cp, name.clone(), reason)
    };
    let mut session = Session::connect(&target).map_err(failed)?;
    let Some(sender) = probe_sender else {
        return Ok(session);
    };
    // Down at MAIL: back only when the relay takes the sender again.
    match session.probe_sender(&sender) {
        Ok(r) if r.is_ok() => Ok(session),
        Ok(r) => {
            session.quit();
            let e = SessionError {
                stage: Stage::Mail,
                kind: Kind::Reply(r),
            };
            let refused = sender_refused(&e);
            let reason = if refused {
                refused_sender_reason(&sender, &e)
            } else {
                format!("the relay refuses every transaction: {e}")
            };
            Err((e, refused, name, reason))
        }
        Err(e) => Err(failed(e)),
    }
}

/// A 5xx to MAIL FROM that is about the sender (not the message's size or parameters).
fn sender_refused(e: &SessionError) -> bool {
    e.stage == Stage::Mail
        && matches!(&e.kind, Kind::Reply(r) if r.is_perm() && r.code != 552 && r.code != 555)
}

fn refused_sender_reason(sender: &str, e: &SessionError) -> String {
    let reply = match &e.kind {
        Kind::Reply(r) => r.text.clone(),
        _ => e.to_string(),
    };
    format!("the relay refuses the sender <{sender}>: {reply}")
}

/// The relay refused the configured sender: one error, naming it and the fix.
fn log_sender_refused(name: &str, reason: &str, sender: &str, retry: u64) {
    error!(
        "relay {name}: {reason} -- this is a configuration problem: mail stays queued; verify {sender} (or its domain) with your provider, or set [address] sender to an address it accepts, then run `systemctl reload relayq` (retrying in {retry}s)"
    );
}

/// A relay-wide failure in plain words, for run/relay: what failed and where, never a secret.
fn plain_reason(e: &SessionError, t: &Target) -> String {
    let hp = format!("{}:{}", t.host, t.port);
    let scheme_hint = "(smtps:// is TLS from the first byte, usually port 465; smtp:// is STARTTLS, usually port 587: check the url)";
    let r = match (&e.kind, e.stage) {
        (Kind::Network(m), Stage::Connect)
            if m.starts_with("cannot resolve") || m.ends_with("has no address") =>
        {
            m.clone()
        }
        (Kind::Network(m), Stage::Connect) => format!("cannot connect to {hp}: {}", plain_io(m)),
        (Kind::Timeout, Stage::Connect) => format!("cannot connect to {hp}: timed out"),
        (Kind::Network(_) | Kind::Timeout, Stage::Greeting) => format!("{hp}: {e} {scheme_hint}"),
        (Kind::Tls(m), _) => format!("TLS failure with {hp}: {m} {scheme_hint}"),
        (Kind::Certificate(m), _) => format!("certificate not trusted for {}: {m}", t.host),
        (Kind::Network(_) | Kind::Timeout | Kind::Protocol(_), _) => format!("{hp}: {e}"),
        _ => e.to_string(),
    };
    match t.auth.as_ref().map(|a| a.secret.as_str()) {
        Some(s) if !s.is_empty() => r.replace(s, "<secret>"),
        _ => r,
    }
}

/// "Connection refused (os error 111)" → "connection refused".
fn plain_io(m: &str) -> String {
    let m = match m.rfind(" (os error ") {
        Some(i) if m.ends_with(')') => &m[..i],
        _ => m,
    };
    let mut c = m.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

/// The relays' state for run/relay: up when one is usable, else down since the earliest
/// failure, with each one's reason and the next probe.
fn relay_state(slots: &[Slot]) -> state::RelayState {
    if let Some(s) = slots.iter().find(|s| s.down_until.is_none()) {
        return state::RelayState {
            up: true,
            relay: s.name.clone(),
            ..Default::default()
        };
    }
    let (t, now_i) = (now(), Instant::now());
    let reason = match slots {
        [one] => one.reason.clone(),
        _ => slots
            .iter()
            .map(|s| format!("{}: {}", s.name, s.reason))
            .collect::<Vec<_>>()
            .join("; "),
    };
    state::RelayState {
        up: false,
        relay: slots.first().map(|s| s.name.clone()).unwrap_or_default(),
        down_since: slots
            .iter()
            .filter_map(|s| s.down_since)
            .min()
            .map(|d| t.saturating_sub(d.elapsed().as_secs())),
        reason: Some(reason),
        next_try: slots
            .iter()
            .filter_map(|s| s.down_until)
            .min()
            .map(|d| t + d.saturating_duration_since(now_i).as_secs()),
    }
}

/// Record the relays' state (written by the main loop, at most once a second). A relay still
/// down keeps the "since" the file already has (across probes, reloads and flush runs).
fn note_relay(ctx: &Ctx, slots: &[Slot]) {
    let mut st = relay_state(slots);
    if let Ok(mut note) = ctx.relay_note.lock() {
        if let (Some(s), Some(prev)) = (
            st.down_since.as_mut(),
            note.saved().and_then(|p| p.down_since),
        ) {
            *s = (*s).min(prev);
        }
        note.set(st);
    }
}

/// Connect to the first usable relay, in order (failover). None if none can be reached.
fn connect_any(ctx: &Ctx) -> Option<Conn> {
    let n = ctx.shared.lock().expect("lock").slots.len();
    for i in 0..n {
        {
            let mut g = ctx.shared.lock().expect("lock");
            let now = Instant::now();
            if !g.slots[i].usable(now) {
                continue;
            }
            if g.slots[i].down_until.is_some() {
                g.slots[i].probing = true;
            }
        }
        match connect_slot(ctx, i) {
            Ok(session) => {
                let mut g = ctx.shared.lock().expect("lock");
                if g.slots[i].mark_up() {
                    info!(
                        "relay {} is reachable again ({})",
                        g.slots[i].name,
                        session.peer()
                    );
                }
                note_relay(ctx, &g.slots);
                return Some(Conn {
                    session,
                    slot: i,
                    last_used: Instant::now(),
                    reused: false,
                });
            }
            Err((e, config_problem, name, reason)) => {
                let mut g = ctx.shared.lock().expect("lock");
                if !g.slots[i].mark_down(config_problem, reason) {
                    // Another worker's attempt failed just before and said so.
                    ctx.cv.notify_all();
                    continue;
                }
                note_relay(ctx, &g.slots);
                let retry = g.slots[i].interval().as_secs();
                if sender_refused(&e) {
                    log_sender_refused(&name, &g.slots[i].reason, &g.relay_sender, retry);
                } else if config_problem {
                    error!(
                        "relay {name}: {e} -- this is a configuration problem: mail stays queued; fix the config and run `systemctl reload relayq` (retrying in {retry}s)"
                    );
                } else {
                    warn!(
                        "relay {name} unreachable: {e} (mail stays queued; probing again in {retry}s)"
                    );
                }
                ctx.cv.notify_all();
            }
        }
    }
    None
}

fn worker(ctx: Arc<Ctx>) {
    enum Next {
        Job(Job, u64),
        CloseIdle,
        Exit,
    }
    let mut conn: Option<Conn> = None;
    // The config generation `conn` was opened under.
    let mut conn_gen = 0u64;
    loop {
        let next = {
            let mut g = ctx.shared.lock().expect("lock");
            loop {
                let now = Instant::now();
                if g.stop {
                    break Next::Exit;
                }
                if conn.is_some() && conn_gen != g.generation {
                    break Next::CloseIdle;
                }
                let spare = g.ready.len() > g.idle_connected;
                if !g.ready.is_empty() && (conn.is_some() || (spare && g.any_usable(now))) {
                    match g.ready.pop_front() {
                        Some(j) => break Next::Job(j, g.generation),
                        None => continue,
                    }
                }
                if g.once && (g.ready.is_empty() || (conn.is_none() && g.all_down())) {
                    break Next::Exit;
                }
                let deadline = match &conn {
                    Some(c) => Some(c.last_used + g.idle_timeout),
                    None if !g.ready.is_empty() => g.earliest_probe(),
                    None => None,
                };
                let connected = conn.is_some();
                if connected {
                    g.idle_connected += 1;
                }
                g = match deadline {
                    Some(d) if d <= now && connected => {
                        g.idle_connected -= 1;
                        break Next::CloseIdle;
                    }
                    // Another worker is probing: look again shortly.
                    Some(d) if d <= now => {
                        ctx.cv
                            .wait_timeout(g, Duration::from_millis(100))
                            .expect("lock")
                            .0
                    }
                    Some(d) => ctx.cv.wait_timeout(g, d - now).expect("lock").0,
                    None => ctx.cv.wait(g).expect("lock"),
                };
                if connected {
                    g.idle_connected -= 1;
                }
            }
        };
        match next {
            Next::Exit => {
                if let Some(c) = conn.take() {
                    c.session.quit();
                }
                return;
            }
            Next::CloseIdle => {
                if let Some(c) = conn.take() {
                    c.session.quit();
                }
            }
            Next::Job(job, generation) => {
                let fresh = conn.is_none();
                let outcome = run_job(&ctx, &mut conn, &job);
                if fresh {
                    conn_gen = generation;
                }
                ctx.report(Report {
                    id: job.id.to_string(),
                    outcome,
                });
            }
        }
    }
}

/// Deliver one job on the current connection (connecting first if needed).
impl Ctx {
    /// A message's state, replayed from its journal.
    fn load_state(&self, id: &QueueId, nrcpts: usize) -> State {
        State::parse(&self.spool.journal(id), nrcpts)
    }

    /// Append events to a message's journal, durably, updating `st`.
    fn record(&self, id: &QueueId, st: &mut State, events: &[Event]) -> std::io::Result<()> {
        Journal::new(self.spool.journal_append(id)?).record(st, events)
    }
}

fn run_job(ctx: &Ctx, conn: &mut Option<Conn>, job: &Job) -> Outcome {
    for _attempt in 0..2 {
        if conn.is_none() {
            *conn = connect_any(ctx);
        }
        let Some(c) = conn.as_mut() else {
            ctx.shared
                .lock()
                .expect("lock")
                .ready
                .push_front(job.clone());
            return Outcome::Blocked;
        };
        let file = match ctx.spool.open_file(Queue::Active, job.id.as_str()) {
            Ok((f, _)) => f,
            Err(e) => return Outcome::Gone(e.to_string()),
        };
        let size = file
            .metadata()
            .map(|m| m.len())
            .unwrap_or(0)
            .saturating_sub(job.body_offset);
        let mut body = BufReader::with_capacity(64 * 1024, file);
        if body.seek(SeekFrom::Start(job.body_offset)).is_err() {
            return Outcome::Gone("cannot seek".into());
        }
        let env = &job.env;
        let out = OutEnvelope {
            sender: env.sender.clone(),
            rcpts: job
                .pending
                .iter()
                .map(|&i| OutRcpt {
                    addr: env.rcpts[i].addr.clone(),
                    notify: env.rcpts[i].notify.clone(),
                    orcpt: env.rcpts[i].orcpt.clone(),
                })
                .collect(),
            envid: env.envid.clone(),
            ret: env.ret.clone(),
            body_8bit: env.body.as_deref() != Some("7BIT"),
        };
        let started = Instant::now();
        let res = c.session.send(&out, &mut body, size);
        let peer = c.session.peer().to_string();
        let slot = c.slot;
        let reused = c.reused;
        c.reused = true;
        c.last_used = Instant::now();
        match res {
            Ok(tx) => {
                let deferral = record_tx(ctx, job, &tx, &peer, started);
                // The relay took a MAIL: it is not refusing everything.
                ctx.shared.lock().expect("lock").slots[slot].mail_tempfails = 0;
                return Outcome::Done {
                    message_deferral: deferral,
                };
            }
            Err(e) => {
                let broken = conn.take();
                // A reused connection that the relay closed while idle: reconnect once.
                if reused && e.stage_is_before_data() && e.is_network() {
                    continue;
                }
                if let Some(b) = broken
                    && !e.is_network()
                {
                    b.session.quit();
                }
                if sender_refused(&e) {
                    let mut g = ctx.shared.lock().expect("lock");
                    if g.relay_sender.eq_ignore_ascii_case(&env.sender) {
                        // The configured sender (bounces use it too): a relay-wide
                        // configuration problem; the message waits like in an outage.
                        if g.slots[slot].down_until.is_none() {
                            let reason = refused_sender_reason(&env.sender, &e);
                            g.slots[slot].mark_down(true, reason);
                            g.slots[slot].mail_probe = true;
                            note_relay(ctx, &g.slots);
                            let s = &g.slots[slot];
                            log_sender_refused(
                                &s.name,
                                &s.reason,
                                &env.sender,
                                s.interval().as_secs(),
                            );
                        }
                        g.ready.push_front(job.clone());
                        drop(g);
                        ctx.cv.notify_all();
                        return Outcome::Blocked;
                    }
                }
                let reply = e.to_string();
                let perm = e.is_permanent();
                let now_s = now();
                let events: Vec<Event> = job
                    .pending
                    .iter()
                    .map(|&i| {
                        if perm {
                            Event::Failed(i, now_s, reply.clone())
                        } else {
                            Event::Deferred(i, now_s, reply.clone())
                        }
                    })
                    .collect();
                let mut st = ctx.load_state(&job.id, job.env.rcpts.len());
                if let Err(err) = ctx.record(&job.id, &mut st, &events) {
                    error!("{}: cannot record delivery state: {err}", job.id);
                }
                let status = if perm { "bounced" } else { "deferred" };
                for &i in &job.pending {
                    info!(
                        "{}: to=<{}>, relay={peer}, delay={:.1}, status={status} ({reply})",
                        job.id,
                        job.env.rcpts[i].addr,
                        started.elapsed().as_secs_f64()
                    );
                }
                if e.is_mail_tempfail() {
                    let mut g = ctx.shared.lock().expect("lock");
                    g.slots[slot].mail_tempfails += 1;
                    if g.slots[slot].mail_tempfails >= 5 {
                        g.slots[slot].mail_tempfails = 0;
                        g.slots[slot].mark_down(
                            false,
                            format!("the relay refuses every transaction: {reply}"),
                        );
                        g.slots[slot].mail_probe = true;
                        note_relay(ctx, &g.slots);
                        warn!(
                            "relay {} refuses every transaction ({reply}): treating it as down, probing every {}s",
                            g.slots[slot].name,
                            g.slots[slot].interval().as_secs()
                        );
                    }
                }
                return Outcome::Done {
                    message_deferral: !perm,
                };
            }
        }
    }
    ctx.shared
        .lock()
        .expect("lock")
        .ready
        .push_front(job.clone());
    Outcome::Blocked
}

/// Record a finished transaction at once (commit), then log. Returns whether the message
/// should back off as a whole.
fn record_tx(ctx: &Ctx, job: &Job, tx: &relay::TxResult, peer: &str, started: Instant) -> bool {
    let t = now();
    let mut events = Vec::new();
    let mut lines = Vec::new();
    let mut any_temp = false;
    for (k, &i) in job.pending.iter().enumerate() {
        let rcpt = tx.rcpt.get(k);
        let (ev, status, reply) = match (rcpt, &tx.data) {
            (Some(Ok(_)), Some(Ok(r))) => {
                (Event::Delivered(i, t, r.to_string()), "sent", r.to_string())
            }
            (Some(Ok(_)), Some(Err(r))) | (Some(Err(r)), _) => {
                if r.is_perm() {
                    (Event::Failed(i, t, r.to_string()), "bounced", r.to_string())
                } else {
                    any_temp = true;
                    (
                        Event::Deferred(i, t, r.to_string()),
                        "deferred",
                        r.to_string(),
                    )
                }
            }
            _ => {
                any_temp = true;
                let r = "transaction incomplete".to_string();
                (Event::Deferred(i, t, r.clone()), "deferred", r)
            }
        };
        events.push(ev);
        lines.push((i, status, reply));
    }
    let mut st = ctx.load_state(&job.id, job.env.rcpts.len());
    let all_sent = events.iter().all(|e| matches!(e, Event::Delivered(..)));
    let prior_all_delivered = st
        .rcpts
        .iter()
        .enumerate()
        .all(|(i, r)| job.pending.contains(&i) || matches!(r, RcptState::Delivered(..)));
    // Everything delivered: the commit is removing the message. If it is no longer in
    // queue/ (held or released meanwhile), its journal records the deliveries instead.
    let removed = all_sent
        && prior_all_delivered
        && match ctx.spool.remove(&job.id, Queue::Active) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                error!("{}: cannot remove the delivered message: {e}", job.id);
                false
            }
        };
    if !removed && let Err(e) = ctx.record(&job.id, &mut st, &events) {
        error!("{}: cannot record delivery state: {e}", job.id);
    }
    let delay = started.elapsed().as_secs_f64();
    let total = t.saturating_sub(job.arrival);
    for (i, status, reply) in lines {
        info!(
            "{}: to=<{}>, relay={peer}, delay={total}, delays={delay:.2}, status={status} ({reply})",
            job.id, job.env.rcpts[i].addr
        );
    }
    if removed {
        info!("{}: removed", job.id);
    }
    if let Some(Event::Delivered(i, t, reply)) = events
        .iter()
        .rev()
        .find(|e| matches!(e, Event::Delivered(..)))
        && let Ok(mut note) = ctx.last_delivery.lock()
    {
        note.set(state::LastDelivery {
            time: *t,
            queue_id: job.id.to_string(),
            rcpt: job.env.rcpts[*i].addr.clone(),
            message_id: job.env.message_id.clone(),
            reply: reply.clone(),
        });
    }
    any_temp
}

/// A queued message as the main thread tracks it.
struct Msg {
    id: QueueId,
    env: Arc<Envelope>,
    body_offset: u64,
    arrival: u64,
    state: State,
    in_flight: bool,
    /// In flight only because no relay could be reached: waiting in the ready queue.
    blocked: bool,
    /// Not before this time may the delay warning be tried again (queuing it failed).
    warn_retry: u64,
}

impl Msg {
    /// When this message's delay warning is due (unix seconds): `warn_after` after arrival,
    /// if it has not been sent, is not held or being delivered (waiting for an unreachable
    /// relay is not), still has recipients to deliver, and will not expire first. None = no
    /// warning to schedule.
    fn warn_at(&self, warn_after: Option<Duration>, lifetime: u64) -> Option<u64> {
        let after = warn_after?.as_secs();
        let busy = self.in_flight && !self.blocked;
        if self.state.warned || busy || self.state.all_done() {
            return None;
        }
        let at = (self.arrival.saturating_add(after)).max(self.warn_retry);
        (at < self.arrival.saturating_add(lifetime)).then_some(at)
    }

    fn job(&self) -> Job {
        Job {
            id: self.id.clone(),
            env: self.env.clone(),
            body_offset: self.body_offset,
            pending: self.state.pending().collect(),
            arrival: self.arrival,
        }
    }
}

/// How long a file may sit untouched in tmp/ (and an orphaned journal in journal/).
const TMP_KEEP: u64 = 3600;

pub struct Daemon {
    cfg: Config,
    cfg_flag: Option<PathBuf>,
    ctx: Arc<Ctx>,
    msgs: HashMap<String, Msg>,
    timers: BTreeSet<(u64, String)>,
    reports: mpsc::Receiver<Report>,
    wake_rx: UnixStream,
    spool_owner: u32,
    workers: Vec<std::thread::JoinHandle<()>>,
    stats: Stats,
    once: bool,
    fqdn: String,
}

#[derive(Default, Debug)]
pub struct Stats {
    /// Messages whose attempt finished (delivered, deferred, bounced or gone).
    pub attempted: u64,
    /// Recipients.
    pub delivered: u64,
    /// Messages.
    pub deferred: u64,
    /// Recipients.
    pub bounced: u64,
    pub elapsed: Duration,
}

/// Take the spool's daemon lock; Err if another daemon or flush holds it.
fn take_lock(spool: &Spool) -> Result<File> {
    let p = spool.layout().run_file("daemon.lock");
    let f = spool
        .open_run("daemon.lock")
        .map_err(|e| Error::temp(format!("cannot open {}: {e}", p.display())))?;
    match f.try_lock() {
        Ok(()) => {
            let _ = f.set_len(0);
            let _ = (&f).write_all(format!("{}\n", std::process::id()).as_bytes());
            Ok(f)
        }
        Err(fs::TryLockError::WouldBlock) => Err(Error::new(
            Class::Temp,
            "another relayq daemon or flush is running on this spool",
        )),
        Err(fs::TryLockError::Error(e)) => {
            Err(Error::temp(format!("cannot lock {}: {e}", p.display())))
        }
    }
}

/// Check the spool's owners and modes before trusting it.
pub fn check_spool(layout: &Layout) -> Result<()> {
    Ok(crate::perms::spool(layout)?)
}

impl Daemon {
    pub fn new(cfg: Config, cfg_flag: Option<PathBuf>, once: bool) -> Result<Daemon> {
        let layout = Layout::new(&cfg.spool_dir);
        check_spool(&layout)?;
        crate::perms::config_file(&cfg.path)?;
        // Secrets are read (as root if need be) before privileges are dropped.
        let slots = build_slots(&cfg)?;
        // If root, become the spool's owner (the daemon's user), so every file we create
        // stays the daemon's, and nothing in the spool can make root act.
        let spool = Spool::open_as_owner(&layout)?;
        let spool_owner = spool.owner();
        let (tx, rx) = mpsc::channel();
        let (wake_tx, wake_rx) = UnixStream::pair().map_err(|e| Error::software(e.to_string()))?;
        wake_rx.set_nonblocking(true).ok();
        wake_tx.set_nonblocking(true).ok();
        let ctx = Arc::new(Ctx {
            shared: Mutex::new(Shared {
                ready: VecDeque::new(),
                slots,
                stop: false,
                once,
                idle_timeout: cfg.queue.idle_timeout,
                idle_connected: 0,
                generation: 0,
                relay_sender: bounce_sender(&cfg, &crate::submit::host_names().1),
            }),
            cv: Condvar::new(),
            last_delivery: Mutex::new(state::DeliveryNote::new(state::LastDelivery::path(&layout))),
            relay_note: Mutex::new(state::RelayNote::with_saved(
                state::RelayState::path(&layout),
                state::RelayState::load(&state::RelayState::path(&layout)),
            )),
            spool,
            reports: Mutex::new(tx),
            wake: wake_tx,
        });
        Ok(Daemon {
            cfg,
            cfg_flag,
            ctx,
            msgs: HashMap::new(),
            timers: BTreeSet::new(),
            reports: rx,
            wake_rx,
            spool_owner,
            workers: Vec::new(),
            stats: Stats::default(),
            once,
            fqdn: crate::submit::host_names().1,
        })
    }

    fn layout(&self) -> &Layout {
        self.ctx.spool.layout()
    }

    fn spool(&self) -> &Spool {
        &self.ctx.spool
    }

    /// Record events in a tracked message's journal (and its state).
    fn journal(&mut self, id: &str, events: &[Event]) -> std::io::Result<()> {
        let Some(m) = self.msgs.get_mut(id) else {
            return Ok(());
        };
        self.ctx.record(&m.id, &mut m.state, events)
    }

    fn spawn_workers(&mut self) {
        for _ in 0..self.cfg.queue.connections {
            let c = self.ctx.clone();
            self.workers.push(std::thread::spawn(move || worker(c)));
        }
    }

    /// Load everything in queue/ (after a restart), taking over an older spool's journals.
    fn load_queue(&mut self) {
        let n = self.spool().migrate_journals();
        if n > 0 {
            info!("moved {n} delivery journal(s) of an older relayq into journal/");
        }
        for id in self.spool().ids(Queue::Active) {
            self.admit(id, false);
        }
    }

    /// Move new arrivals (and released mail) from new/ into queue/ and admit them.
    fn pickup(&mut self) -> usize {
        let Ok(mut names) = self.spool().list(Queue::New) else {
            return 0;
        };
        names.sort_by(|a, b| a.name.cmp(&b.name));
        let mut n = 0;
        for l in names {
            let name = l.name;
            // Held and released while we still track it: the entry we have is stale (its file
            // moved away). A worker still sending the old file finishes first.
            if let Some(m) = self.msgs.get(&name)
                && !self.spool().contains(Queue::Active, &m.id)
            {
                if m.in_flight {
                    continue;
                }
                self.forget(&name);
            }
            let Some(id) = QueueId::parse(&name).filter(|_| !self.msgs.contains_key(&name)) else {
                self.corrupt(Queue::New, &name, "bad queue file name");
                continue;
            };
            if let Err(e) = self.spool().pickup(&id) {
                error!("{name}: cannot move into queue/: {e}");
                continue;
            }
            if self.admit(id, true) {
                n += 1;
            }
        }
        if n > 0 {
            let _ = self.spool().sync(Queue::Active);
        }
        n
    }

    /// A message we stopped tracking, released while a worker had it: it waits in new/,
    /// where pickup skipped it then.
    fn pickup_released(&mut self, id: &str) {
        if QueueId::parse(id).is_some_and(|q| self.spool().contains(Queue::New, &q)) {
            self.pickup();
        }
    }

    /// Stop tracking a message (its file left queue/ by an admin's hand).
    fn forget(&mut self, id: &str) {
        self.msgs.remove(id);
        self.timers.retain(|(_, x)| x != id);
    }

    fn corrupt(&self, q: Queue, name: &str, why: &str) {
        match self.spool().set_aside(q, name) {
            Ok(_) => warn!("{name}: moved to corrupt/: {why}"),
            Err(e) => error!("{name}: {why}, and cannot move it to corrupt/: {e}"),
        }
    }

    /// Validate and start tracking a queue file. False if it was set aside.
    /// `fresh`: it just came through new/ (a new message, or a released one): tried at once,
    /// whatever backoff its journal recorded.
    fn admit(&mut self, qid: QueueId, fresh: bool) -> bool {
        let id = qid.as_str();
        if self.msgs.contains_key(id) {
            return true;
        }
        let (env, off, meta) = match self.spool().read_envelope(Queue::Active, id) {
            Ok(x) => x,
            Err(why) => {
                self.corrupt(Queue::Active, id, &why);
                return false;
            }
        };
        let limit = self.cfg.max_message_size + spool::MAX_ENVELOPE_BYTES as u64 + 1024 * 1024;
        if meta.len() > limit {
            self.corrupt(
                Queue::Active,
                id,
                &format!("larger than max_message_size ({} bytes)", meta.len()),
            );
            return false;
        }
        let uid = env.submitter(meta.uid(), self.spool_owner);
        let mtime = meta.mtime().max(0) as u64;
        let arrival = env
            .time
            .clamp(mtime.saturating_sub(86400), now().max(mtime));
        let st = State::parse(&self.spool().journal(&qid), env.rcpts.len());
        if fresh && st.rcpts.iter().any(|r| *r != RcptState::Pending) {
            info!(
                "{id}: back in the queue (released), nrcpt={}",
                env.rcpts.len()
            );
        } else if fresh {
            info!(
                "{id}: from=<{}>, size={}, nrcpt={}, uid={uid}{}",
                env.sender,
                meta.len() - off,
                env.rcpts.len(),
                env.message_id
                    .as_deref()
                    .map(|m| format!(", message-id={m}"))
                    .unwrap_or_default()
            );
        }
        let next = if fresh { 0 } else { st.next };
        let id = id.to_string();
        let id = id.as_str();
        let msg = Msg {
            id: qid.clone(),
            env: Arc::new(env),
            body_offset: off,
            arrival,
            state: st,
            in_flight: false,
            blocked: false,
            warn_retry: 0,
        };
        self.msgs.insert(id.to_string(), msg);
        if self.msgs[id].state.all_done() {
            self.finish(id);
            return true;
        }
        if arrival + self.cfg.queue.lifetime.as_secs() <= now() {
            // Past its lifetime: left for expire(), which bounces it.
        } else if next > now() && !self.once {
            self.timers.insert((next, id.to_string()));
        } else {
            self.enqueue(id);
        }
        true
    }

    fn enqueue(&mut self, id: &str) {
        let Some(m) = self.msgs.get_mut(id) else {
            return;
        };
        if m.in_flight {
            return;
        }
        m.in_flight = true;
        let job = m.job();
        self.ctx.shared.lock().expect("lock").ready.push_back(job);
        self.ctx.cv.notify_all();
    }

    /// Everything due now goes to the ready queue.
    fn run_timers(&mut self) {
        let t = now();
        while let Some((due, id)) = self.timers.first().cloned() {
            if due > t {
                break;
            }
            self.timers.pop_first();
            self.enqueue(&id);
        }
    }

    /// Messages past their lifetime: give up on their pending recipients.
    fn expire(&mut self) {
        let t = now();
        let life = self.cfg.queue.lifetime.as_secs();
        let expired: Vec<String> = self
            .msgs
            .iter()
            .filter(|(_, m)| !m.in_flight && !m.state.all_done() && m.arrival + life <= t)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let m = &self.msgs[&id];
            let days = self.cfg.queue.lifetime.as_secs_f64() / 86400.0;
            let events: Vec<Event> = m
                .state
                .rcpts
                .iter()
                .enumerate()
                .filter(|(_, r)| !r.is_done())
                .map(|(i, r)| {
                    let last = match r {
                        RcptState::Deferred(_, reply) => format!(" (last reply: {reply})"),
                        _ => String::new(),
                    };
                    Event::Failed(
                        i,
                        t,
                        format!("message expired: undeliverable for {days:.1} days{last}"),
                    )
                })
                .collect();
            if let Err(e) = self.journal(&id, &events) {
                error!("{id}: cannot record expiry: {e}");
                continue;
            }
            let m = &self.msgs[&id];
            for e in &events {
                if let Event::Failed(i, _, r) = e {
                    info!("{id}: to=<{}>, status=expired ({r})", m.env.rcpts[*i].addr);
                }
            }
            self.timers.retain(|(_, x)| *x != id);
            self.finish(&id);
        }
    }

    /// A worker finished a job.
    fn handle(&mut self, r: Report) {
        let Some(m) = self.msgs.get_mut(&r.id) else {
            return;
        };
        m.in_flight = false;
        m.blocked = matches!(r.outcome, Outcome::Blocked);
        if !m.blocked {
            self.stats.attempted += 1;
        }
        match r.outcome {
            Outcome::Blocked => {
                // The job sits in the ready queue again; keep it marked in flight.
                m.in_flight = true;
            }
            Outcome::Gone(why) => {
                warn!("{}: queue file disappeared ({why}); forgetting it", r.id);
                self.msgs.remove(&r.id);
                self.pickup_released(&r.id);
            }
            Outcome::Done { message_deferral } => {
                if !self.ctx.spool.contains(Queue::Active, &m.id) {
                    // Delivered to all and removed by the worker; or held (or deleted) while
                    // it was being sent, its journal has the results.
                    self.stats.delivered += m.state.pending().count() as u64;
                    self.msgs.remove(&r.id);
                    self.pickup_released(&r.id);
                    return;
                }
                let before: Vec<bool> = m
                    .state
                    .rcpts
                    .iter()
                    .map(|x| matches!(x, RcptState::Delivered(..)))
                    .collect();
                // Keep a warning sent whose journal line could not be written: once per run.
                let warned = m.state.warned;
                m.state = self.ctx.load_state(&m.id, m.env.rcpts.len());
                m.state.warned |= warned;
                self.stats.delivered += m
                    .state
                    .rcpts
                    .iter()
                    .zip(before)
                    .filter(|(x, b)| matches!(x, RcptState::Delivered(..)) && !b)
                    .count() as u64;
                if m.state.all_done() {
                    self.finish(&r.id);
                    return;
                }
                // Some recipients failed for good while others wait: bounce those now.
                self.bounce_failed(&r.id);
                let Some(m) = self.msgs.get_mut(&r.id) else {
                    return;
                };
                let t = now();
                let attempts = m.state.attempts + u32::from(message_deferral);
                let delay = if message_deferral {
                    backoff(&self.cfg, attempts)
                } else {
                    0
                };
                let next = t + delay;
                if let Err(e) = self
                    .ctx
                    .record(&m.id, &mut m.state, &[Event::Next(next, attempts)])
                {
                    error!("{}: cannot record next attempt: {e}", r.id);
                }
                self.stats.deferred += 1;
                if self.once {
                    // One pass only: the next run (or the daemon) picks it up.
                } else if delay == 0 {
                    self.enqueue(&r.id);
                } else {
                    self.timers.insert((next, r.id.clone()));
                }
            }
        }
    }

    /// All recipients are done: bounce the failed ones not bounced yet, then retire the
    /// message.
    fn finish(&mut self, id: &str) {
        let Some(m) = self.msgs.get(id) else { return };
        let qid = m.id.clone();
        if !m
            .state
            .rcpts
            .iter()
            .any(|r| matches!(r, RcptState::Failed(..)))
        {
            match self.spool().remove(&qid, Queue::Active) {
                Ok(()) => info!("{id}: removed"),
                Err(e) => warn!("{id}: cannot remove it from queue/: {e}"),
            }
            self.msgs.remove(id);
            return;
        }
        if !m.state.bounced {
            if !self.bounce_failed(id) {
                self.timers.insert((now() + 300, id.to_string()));
                return;
            }
            let _ = self.journal(id, &[Event::Bounced]);
        }
        if self
            .spool()
            .transition(&qid, Queue::Active, Queue::Failed)
            .is_ok()
        {
            info!(
                "{id}: moved to failed/ (kept {} days)",
                self.cfg.queue.keep_failed.as_secs() / 86400
            );
        }
        self.msgs.remove(id);
    }

    /// Bounce the recipients that failed and have not been reported yet (those whose NOTIFY
    /// allows it), as soon as they fail: the sender learns of a bad address now, not when
    /// the message's last recipient is done. Then `B <i>` journal lines, so that each is
    /// bounced once (the DSN is durable first: a crash in between duplicates it, never loses
    /// it). False when the bounce could not be queued: try again later.
    fn bounce_failed(&mut self, id: &str) -> bool {
        let Some(m) = self.msgs.get(id) else {
            return true;
        };
        let failed = m.state.unreported();
        if failed.is_empty() {
            return true;
        }
        let notify: Vec<usize> = failed
            .iter()
            .copied()
            .filter(|&i| bounce::wants_failure(m.env.rcpts[i].notify.as_deref()))
            .collect();
        if notify.is_empty() {
            info!("{id}: no bounce (NOTIFY excludes FAILURE)");
        } else {
            match self.queue_dsn(id, &notify, bounce::Kind::Failure) {
                Ok(Some(bid)) => info!("{id}: sender non-delivery notification: {bid}"),
                Ok(None) => {}
                Err(e) => {
                    error!("{id}: cannot create bounce: {e}; will try again later");
                    return false;
                }
            }
            self.stats.bounced += notify.len() as u64;
        }
        let events: Vec<Event> = failed.into_iter().map(Event::Reported).collect();
        if let Err(e) = self.journal(id, &events) {
            error!("{id}: cannot record the bounce: {e}");
        }
        true
    }

    /// Messages still undelivered `queue.warn_after` after arrival: one delay DSN each, to
    /// whoever would get the bounce, for the recipients still queued whose NOTIFY allows it.
    /// Then the `w` journal event, so that it is sent once, across restarts too.
    fn warn(&mut self) {
        let t = now();
        let (after, life) = (self.cfg.queue.warn_after, self.cfg.queue.lifetime.as_secs());
        let due: Vec<String> = self
            .msgs
            .iter()
            .filter(|(_, m)| m.warn_at(after, life).is_some_and(|at| at <= t))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let m = &self.msgs[&id];
            if !self.ctx.spool.contains(Queue::Active, &m.id) {
                // Held or deleted meanwhile: not due here (a released message is admitted
                // again, from its journal).
                if let Some(m) = self.msgs.get_mut(&id) {
                    m.state.warned = true;
                }
                continue;
            }
            let delayed: Vec<usize> = m
                .state
                .pending()
                .filter(|&i| bounce::wants_delay(m.env.rcpts[i].notify.as_deref()))
                .collect();
            if delayed.is_empty() {
                info!("{id}: no delay notification (NOTIFY excludes DELAY)");
            } else {
                let kind = bounce::Kind::Delay {
                    retry_until: m.arrival.saturating_add(life),
                };
                match self.queue_dsn(&id, &delayed, kind) {
                    Ok(Some(did)) => info!("{id}: sender delay notification: {did}"),
                    Ok(None) => {}
                    Err(e) => {
                        error!("{id}: cannot create delay notification: {e}; will try again later");
                        if let Some(m) = self.msgs.get_mut(&id) {
                            m.warn_retry = t + 300;
                        }
                        continue;
                    }
                }
            }
            // The DSN is durable in new/ before this line is: a crash in between makes the
            // restarted daemon queue it again (a duplicate warning), never lose it. The other
            // order could lose it, with the journal saying it was sent.
            // On failure `m.state.warned` is set anyway: not sent again by this process. A
            // blocked job may meanwhile be taken by a worker that journals too: each record
            // is one O_APPEND write, so the lines do not mix.
            if let Err(e) = self.journal(&id, &[Event::Warned(t)]) {
                error!("{id}: cannot record the delay notification: {e}");
            }
        }
    }

    /// Queue a DSN (a bounce, or a delay warning) for recipients `rcpts`. None when no DSN
    /// is due (null sender, a DSN itself, or bounces disabled).
    fn queue_dsn(&self, id: &str, rcpts: &[usize], kind: bounce::Kind) -> Result<Option<String>> {
        let m = &self.msgs[id];
        let env = &m.env;
        if env.sender.is_empty() || env.is_bounce || !self.cfg.queue.bounces {
            info!(
                "{id}: no {} for {} (null sender, a bounce itself, or queue.bounces = false)",
                match kind {
                    bounce::Kind::Failure => "bounce",
                    bounce::Kind::Delay { .. } => "delay notification",
                },
                if env.sender.is_empty() {
                    "<>"
                } else {
                    &env.sender
                }
            );
            return Ok(None);
        }
        // Mail from local accounts went out as the configured sender; its bounces belong to the admin.
        let to = match (&self.cfg.address.sender, &self.cfg.address.admin) {
            (Some(s), Some(a)) if s.eq_ignore_ascii_case(&env.sender) => a.clone(),
            _ => env.sender.clone(),
        };
        let domain = self
            .cfg
            .address
            .domain
            .clone()
            .unwrap_or_else(|| self.fqdn.clone());
        let from = bounce_sender(&self.cfg, &self.fqdn);
        let file = self
            .spool()
            .open_file(Queue::Active, m.id.as_str())
            .ok()
            .map(|(f, _)| f);
        let mut headers = Vec::new();
        if let Some(f) = &file {
            let mut r = BufReader::new(f);
            let _ = r.seek(SeekFrom::Start(m.body_offset));
            let mut line = Vec::new();
            while headers.len() < 64 * 1024 {
                line.clear();
                if r.by_ref()
                    .take(4096)
                    .read_until(b'\n', &mut line)
                    .unwrap_or(0)
                    == 0
                    || line == b"\r\n"
                {
                    break;
                }
                headers.extend_from_slice(&line);
            }
        }
        // RET=FULL on a bounce: the whole message, when it is small enough to send back
        // (read from the same open file; one that cannot be read counts as too large).
        let full =
            (kind == bounce::Kind::Failure && bounce::wants_full(env.ret.as_deref())).then(|| {
                let mut f = file.as_ref()?;
                let size = f.metadata().ok()?.len().saturating_sub(m.body_offset);
                if size > bounce::FULL_LIMIT as u64 {
                    return None;
                }
                f.seek(SeekFrom::Start(m.body_offset)).ok()?;
                let mut all = Vec::with_capacity(size as usize);
                f.take(bounce::FULL_LIMIT as u64 + 1)
                    .read_to_end(&mut all)
                    .ok()?;
                (all.len() <= bounce::FULL_LIMIT).then_some(all)
            });
        let original = match &full {
            None => bounce::Original::Headers(&headers),
            Some(None) => bounce::Original::TooLarge {
                headers: &headers,
                limit: bounce::FULL_LIMIT,
            },
            Some(Some(all)) => bounce::Original::Full {
                message: all,
                eight_bit: !all.is_ascii(),
            },
        };
        let replies: Vec<(String, String, Option<String>)> = rcpts
            .iter()
            .map(|&i| {
                let reply = match &m.state.rcpts[i] {
                    RcptState::Failed(_, r) | RcptState::Deferred(_, r) => r.clone(),
                    RcptState::Pending => "no delivery attempt has completed yet".into(),
                    RcptState::Delivered(..) => String::new(),
                };
                (env.rcpts[i].addr.clone(), reply, env.rcpts[i].orcpt.clone())
            })
            .collect();
        let remote = self
            .ctx
            .shared
            .lock()
            .expect("lock")
            .slots
            .first()
            .map(|s| s.target.host.clone());
        let dsn = Dsn {
            reporting_host: &self.fqdn,
            from: &from,
            to: &to,
            queue_id: id,
            arrival: m.arrival,
            now: now(),
            envid: env.envid.as_deref(),
            rcpts: replies
                .iter()
                .map(|(r, reply, o)| Recipient {
                    rcpt: r,
                    orcpt: o.as_deref(),
                    reply,
                    remote: remote.as_deref(),
                })
                .collect(),
            original,
            still_trying: match kind {
                bounce::Kind::Failure => m.state.pending().count(),
                bounce::Kind::Delay { .. } => 0,
            },
            kind,
        };
        let bid = spool::new_id();
        let message_id = match kind {
            bounce::Kind::Failure => format!("<{bid}.bounce@{domain}>"),
            bounce::Kind::Delay { .. } => format!("<{bid}.delay@{domain}>"),
        };
        let body = dsn.build(&format!("{bid}/{}", self.fqdn), &message_id);
        let benv = Envelope {
            sender: from.clone(),
            rcpts: vec![Rcpt {
                addr: to,
                ..Rcpt::default()
            }],
            time: now(),
            uid: nix::unistd::geteuid().as_raw(),
            user: "MAILER-DAEMON".into(),
            message_id: Some(message_id),
            is_bounce: true,
            ..Envelope::default()
        };
        let mut d = Draft::create(self.spool())?;
        benv.write_to(d.writer())?;
        d.writer()
            .write_all(&body)
            .map_err(|e| Error::spool_io("cannot write DSN", &e))?;
        d.commit().map(Some)
    }

    /// Remove failed/ and corrupt/ entries older than keep_failed, tmp/ files left by a
    /// writer that died (an hour untouched: nothing legitimate stays there that long), and
    /// journals whose message is gone. Returns when the next removal is due.
    fn cleanup(&self) -> Option<u64> {
        let t = now();
        let mut next: Option<u64> = None;
        for (q, keep) in [
            (Queue::Failed, self.cfg.queue.keep_failed.as_secs()),
            (Queue::Tmp, TMP_KEEP),
            (Queue::Corrupt, self.cfg.queue.keep_failed.as_secs()),
        ] {
            for l in self.spool().list(q).unwrap_or_default() {
                let Some(st) = self.spool().stat(q, &l.name) else {
                    continue;
                };
                let due = (st.st_mtime.max(0) as u64) + keep;
                if due <= t {
                    let _ = self.spool().expire(q, &l.name);
                } else {
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
        }
        self.spool().sweep_journals(t, TMP_KEEP);
        next
    }

    fn reload(&mut self) {
        match Config::load(self.cfg_flag.as_deref()).and_then(|c| build_slots(&c).map(|s| (c, s))) {
            Ok((c, mut slots)) => {
                let mut g = self.ctx.shared.lock().expect("lock");
                // Retried at once; one down at MAIL must still show MAIL is accepted.
                for s in slots.iter_mut() {
                    s.mail_probe = g.slots.iter().any(|o| o.name == s.name && o.mail_probe);
                }
                g.slots = slots;
                g.idle_timeout = c.queue.idle_timeout;
                g.relay_sender = bounce_sender(&c, &self.fqdn);
                g.generation += 1;
                drop(g);
                self.cfg = c;
                self.ctx.cv.notify_all();
                info!("configuration reloaded");
            }
            Err(e) => error!("reload failed, keeping the old configuration: {e}"),
        }
    }

    /// Flush (the socket, SIGUSR1): the messages `filter` selects are tried now, ignoring
    /// backoff; the others keep their timers. Returns how many of them are being tried.
    fn flush_matching(&mut self, filter: &crate::cli::QueueFilter) -> usize {
        self.pickup();
        let matched: std::collections::HashSet<String> = self
            .msgs
            .iter()
            .filter(|(id, m)| selected(filter, id, &m.env))
            .map(|(id, _)| id.clone())
            .collect();
        let due: Vec<(u64, String)> = self
            .timers
            .iter()
            .filter(|(_, id)| matched.contains(id))
            .cloned()
            .collect();
        for (at, id) in due {
            self.enqueue(&id);
            if self.msgs.get(&id).is_some_and(|m| m.in_flight) {
                self.timers.remove(&(at, id));
            }
        }
        let n = matched
            .iter()
            .filter(|id| self.msgs.get(*id).is_some_and(|m| m.in_flight))
            .count();
        // A relay marked down is probed now rather than at its next probe time.
        if n > 0 || filter == &crate::cli::QueueFilter::default() {
            let mut g = self.ctx.shared.lock().expect("lock");
            for s in g.slots.iter_mut() {
                if s.down_until.is_some() {
                    s.down_until = Some(Instant::now());
                }
            }
        }
        self.ctx.cv.notify_all();
        n
    }

    fn drain_reports(&mut self) {
        let mut b = [0u8; 256];
        while (&self.wake_rx).read(&mut b).map(|n| n > 0).unwrap_or(false) {}
        while let Ok(r) = self.reports.try_recv() {
            self.handle(r);
        }
    }

    /// Write run/last-delivery and run/relay if due (`now`: whatever is pending). True when
    /// a write is still pending.
    fn note_delivery(&self, now: bool) -> bool {
        let relay = self.ctx.relay_note.lock().is_ok_and(|mut n| n.write(now));
        let delivery = self
            .ctx
            .last_delivery
            .lock()
            .is_ok_and(|mut n| n.write(now));
        relay || delivery
    }

    fn in_flight(&self) -> usize {
        self.msgs.values().filter(|m| m.in_flight).count()
    }

    /// One pass (flush): deliver what can be delivered now, then return.
    pub fn run_once(mut self, filter: &crate::cli::QueueFilter, progress: bool) -> Result<Stats> {
        let started = Instant::now();
        let _lock = take_lock(self.spool())?;
        self.load_queue();
        self.pickup();
        if filter != &crate::cli::QueueFilter::default() {
            let drop_ids: Vec<String> = self
                .msgs
                .iter()
                .filter(|(id, m)| !selected(filter, id, &m.env))
                .map(|(id, _)| id.clone())
                .collect();
            let mut g = self.ctx.shared.lock().expect("lock");
            g.ready
                .retain(|j| !drop_ids.iter().any(|d| d == j.id.as_str()));
            drop(g);
            for id in drop_ids {
                self.msgs.remove(&id);
            }
        }
        self.expire();
        let total = self.msgs.len() as u64;
        // A progress line only for a queue that takes a while.
        let mut shown = false;
        let mut last_shown = started;
        self.spawn_workers();
        loop {
            let workers_alive = self.workers.iter().any(|w| !w.is_finished());
            self.drain_reports();
            if progress && total >= 100 && last_shown.elapsed() >= Duration::from_secs(1) {
                last_shown = Instant::now();
                shown = true;
                eprint!(
                    "\r{}\x1b[K",
                    progress_line(self.stats.attempted, total, started.elapsed())
                );
            }
            self.note_delivery(false);
            if !workers_alive {
                self.drain_reports();
                break;
            }
            let mut fds = [nix::poll::PollFd::new(
                self.wake_rx.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16));
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // The pass is over: nothing is in flight any more (jobs blocked by an unreachable
        // relay included). Delay warnings now due are queued, for the next pass (or the
        // daemon) to deliver, as bounces are.
        for m in self.msgs.values_mut() {
            m.in_flight = false;
        }
        self.warn();
        if shown {
            eprintln!(
                "\r{}\x1b[K",
                progress_line(self.stats.attempted, total, started.elapsed())
            );
        }
        self.note_delivery(true);
        self.cleanup();
        self.stats.elapsed = started.elapsed();
        Ok(self.stats)
    }

    /// Run until SIGTERM/SIGINT.
    pub fn run(mut self) -> Result<()> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        use nix::sys::signal::{SigSet, Signal};
        use nix::sys::signalfd::{SfdFlags, SignalFd};

        let _lock = take_lock(self.spool())?;
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGUSR1,
        ] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| Error::software(format!("sigprocmask: {e}")))?;
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::software(format!("signalfd: {e}")))?;
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| Error::software(format!("inotify: {e}")))?;
        ino.add_watch(
            &self.layout().root.join(Queue::New.dir_name()),
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        )
        .map_err(|e| Error::software(format!("inotify watch: {e}")))?;
        // Files leaving queue/ by an admin's hand (hold, delete): forgotten at once, so no
        // timer or worker reaches for them.
        let queue_wd = ino
            .add_watch(
                &self.layout().root.join(Queue::Active.dir_name()),
                AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_DELETE,
            )
            .map_err(|e| Error::software(format!("inotify watch: {e}")))?;
        let listener = listen(self.layout())?;
        let accept_ctx = self.ctx.clone();
        let max_size = self.cfg.max_message_size;
        let (flush_tx, flush_rx) = mpsc::channel::<FlushReq>();
        std::thread::spawn(move || serve_socket(listener, accept_ctx, max_size, flush_tx));

        self.spawn_workers();
        self.load_queue();
        self.pickup();
        let mut next_cleanup = self.cleanup();
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        info!(
            "daemon started: {} queued, {} connection(s) to {}",
            self.msgs.len(),
            self.cfg.queue.connections,
            self.ctx
                .shared
                .lock()
                .expect("lock")
                .slots
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
                .join(", then ")
        );
        let mut stopping: Option<Instant> = None;
        loop {
            self.drain_reports();
            while let Ok(req) = flush_rx.try_recv() {
                // Stopping: dropped unanswered, and the client hears that the daemon stops.
                if stopping.is_none() {
                    let n = self.flush_matching(&req.filter);
                    if let Some(done) = req.done {
                        let _ = done.send(n);
                    }
                }
            }
            if let Some(since) = stopping {
                if self.in_flight_busy() == 0 || since.elapsed() > Duration::from_secs(30) {
                    break;
                }
            } else {
                self.run_timers();
                self.expire();
                self.warn();
                if next_cleanup.is_some_and(|t| t <= now()) {
                    next_cleanup = self.cleanup();
                }
            }
            // Sleep until something happens or the next timer is due: no wake-ups when idle.
            let mut due: Option<u64> = self.timers.first().map(|(t, _)| *t);
            let life = self.cfg.queue.lifetime.as_secs();
            let warn_after = self.cfg.queue.warn_after;
            if let Some(exp) = self
                .msgs
                .values()
                .flat_map(|m| {
                    let expiry = (!m.in_flight).then_some(m.arrival + life);
                    expiry.into_iter().chain(m.warn_at(warn_after, life))
                })
                .min()
            {
                due = Some(due.map_or(exp, |d| d.min(exp)));
            }
            if let Some(c) = next_cleanup {
                due = Some(due.map_or(c, |d| d.min(c)));
            }
            if self.note_delivery(false) {
                let soon = now() + 1;
                due = Some(due.map_or(soon, |d| d.min(soon)));
            }
            let timeout = if stopping.is_some() {
                nix::poll::PollTimeout::from(100u16)
            } else {
                match due {
                    Some(d) => {
                        let ms = d
                            .saturating_sub(now())
                            .saturating_mul(1000)
                            .clamp(0, 3_600_000) as i32;
                        nix::poll::PollTimeout::try_from(ms.max(0))
                            .unwrap_or(nix::poll::PollTimeout::MAX)
                    }
                    None => nix::poll::PollTimeout::NONE,
                }
            };
            let mut fds = [
                nix::poll::PollFd::new(sfd.as_fd(), nix::poll::PollFlags::POLLIN),
                nix::poll::PollFd::new(ino.as_fd(), nix::poll::PollFlags::POLLIN),
                nix::poll::PollFd::new(self.wake_rx.as_fd(), nix::poll::PollFlags::POLLIN),
            ];
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::software(format!("poll: {e}"))),
            }
            let sig_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
            let ino_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
            if sig_ready {
                while let Ok(Some(si)) = sfd.read_signal() {
                    match Signal::try_from(si.ssi_signo as i32) {
                        Ok(Signal::SIGTERM | Signal::SIGINT) if stopping.is_none() => {
                            info!("stopping: finishing transactions in flight");
                            stopping = Some(Instant::now());
                            let mut g = self.ctx.shared.lock().expect("lock");
                            g.stop = true;
                            g.ready.clear();
                            drop(g);
                            self.ctx.cv.notify_all();
                        }
                        Ok(Signal::SIGHUP) => self.reload(),
                        Ok(Signal::SIGUSR1) => {
                            self.flush_matching(&crate::cli::QueueFilter::default());
                        }
                        _ => {}
                    }
                }
            }
            if ino_ready {
                let mut left = Vec::new();
                while let Ok(ev) = ino.read_events() {
                    if ev.is_empty() {
                        break;
                    }
                    left.extend(
                        ev.into_iter()
                            .filter(|e| e.wd == queue_wd)
                            .filter_map(|e| e.name?.into_string().ok()),
                    );
                }
                for id in left {
                    if self.msgs.get(&id).is_some_and(|m| {
                        !m.in_flight && !self.ctx.spool.contains(Queue::Active, &m.id)
                    }) {
                        self.forget(&id);
                    }
                }
                if stopping.is_none() {
                    self.pickup();
                }
            }
        }
        let mut g = self.ctx.shared.lock().expect("lock");
        g.stop = true;
        drop(g);
        self.ctx.cv.notify_all();
        let deadline = Instant::now() + Duration::from_secs(5);
        for w in self.workers.drain(..) {
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if w.is_finished() {
                let _ = w.join();
            }
        }
        self.note_delivery(true);
        self.spool().remove_run("submit.sock");
        info!("stopped");
        Ok(())
    }

    /// Jobs a worker is actually working on (not waiting in the ready queue).
    fn in_flight_busy(&self) -> usize {
        let queued = self.ctx.shared.lock().expect("lock").ready.len();
        self.in_flight().saturating_sub(queued)
    }
}

/// The envelope sender of bounces, and of local mail when `[address] sender` is set.
fn bounce_sender(cfg: &Config, fqdn: &str) -> String {
    cfg.address.sender.clone().unwrap_or_else(|| {
        let domain = cfg.address.domain.as_deref().unwrap_or(fqdn);
        format!("MAILER-DAEMON@{domain}")
    })
}

fn backoff(cfg: &Config, attempts: u32) -> u64 {
    let min = cfg.queue.retry_min.as_secs().max(1);
    let max = cfg.queue.retry_max.as_secs().max(min);
    let base = min
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(30))
        .min(max);
    // ±10% jitter so a burst of deferrals does not come back as one burst.
    let mut r = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    let j = u16::from_le_bytes(r) as u64 % (base / 5 + 1);
    (base - base / 10 + j).max(1)
}

fn listen(layout: &Layout) -> Result<UnixListener> {
    let p = layout.socket();
    let _ = fs::remove_file(&p);
    let l = UnixListener::bind(&p)
        .map_err(|e| Error::temp(format!("cannot listen on {}: {e}", p.display())))?;
    let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o666));
    Ok(l)
}

/// The local socket: submissions from processes that cannot use setgid postdrop
/// (NoNewPrivileges), flush requests, and ordinary users' queue listing and
/// show/hold/release/delete of their own messages. The peer's uid comes from SO_PEERCRED.
fn serve_socket(l: UnixListener, ctx: Arc<Ctx>, max_size: u64, flush: mpsc::Sender<FlushReq>) {
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        if active.load(std::sync::atomic::Ordering::SeqCst) >= 64 {
            let _ = (&s).write_all(b"ERR busy, try again\n");
            continue;
        }
        let ctx = ctx.clone();
        let active = active.clone();
        let flush = flush.clone();
        active.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(300)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(300)));
            let reply = match handle_client(&s, &ctx, max_size, &flush) {
                Ok(r) => r,
                Err(e) => format!("ERR {}", e.replace('\n', " ")),
            };
            let _ = (&s).write_all(format!("{reply}\n").as_bytes());
            active.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
}

fn handle_client(
    s: &UnixStream,
    ctx: &Ctx,
    max_size: u64,
    flush: &mpsc::Sender<FlushReq>,
) -> std::result::Result<String, String> {
    let cred = nix::sys::socket::getsockopt(&s.as_fd(), nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| e.to_string())?;
    let mut verb = [0u8; 4];
    (&*s).read_exact(&mut verb).map_err(|e| e.to_string())?;
    match &verb {
        b"LIST" | b"LSTJ" => {
            let entries = crate::queue::scan(&ctx.spool, (cred.uid() != 0).then_some(cred.uid()));
            let text = if &verb == b"LIST" {
                crate::queue::render(
                    &entries,
                    state::RelayState::down(ctx.spool.layout()).as_ref(),
                )
            } else {
                crate::queue::json(&entries)
            };
            Ok(format!("OK\n{}", text.trim_end_matches('\n')))
        }
        b"FLSH" => {
            // Everything, answered at once: what clients before FLSQ send and expect.
            let req = FlushReq {
                filter: crate::cli::QueueFilter::default(),
                done: None,
            };
            flush.send(req).map_err(|_| "the daemon is stopping")?;
            let _ = (&ctx.wake).write(&[1]);
            Ok("OK flushing".into())
        }
        b"FLSQ" => {
            let req = crate::admin::read_request(s, MAX_FLUSH_REQUEST, "flush request")?;
            let filter = parse_flush_request(&req)?;
            let (tx, rx) = mpsc::channel();
            let req = FlushReq {
                filter,
                done: Some(tx),
            };
            flush.send(req).map_err(|_| "the daemon is stopping")?;
            let _ = (&ctx.wake).write(&[1]);
            // How many matched only for root and the spool's owner, who can list the queue
            // anyway: anyone else would learn what others queued (see admin).
            let may_count = cred.uid() == 0 || cred.uid() == nix::unistd::geteuid().as_raw();
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(n) if may_count => Ok(format!("OK flushing {n}")),
                Ok(_) => Ok("OK flushing".into()),
                // Busy (a reload, say): the request is queued and will be done.
                Err(mpsc::RecvTimeoutError::Timeout) => Ok("OK flushing".into()),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err("the daemon is stopping".into()),
            }
        }
        b"SUBM" => {
            let mut r = BufReader::new(crate::sink::ChunkReader::new(s));
            let mut env =
                Envelope::read_from(&mut r).map_err(|e| format!("bad queue file: {e}"))?;
            env.uid = cred.uid();
            env.user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(cred.uid()))
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| format!("uid{}", cred.uid()));
            let mut d = Draft::create(&ctx.spool).map_err(|e| e.msg)?;
            env.write_to(d.writer()).map_err(|e| e.msg)?;
            let n = std::io::copy(&mut r.by_ref().take(max_size + 1), d.writer())
                .map_err(|e| e.to_string())?;
            if n > max_size {
                return Err(format!(
                    "message larger than the maximum size of {max_size} bytes"
                ));
            }
            if !r.get_ref().complete() {
                return Err("message incomplete".into());
            }
            d.commit().map(|id| format!("OK {id}")).map_err(|e| e.msg)
        }
        v => match crate::admin::Op::from_verb(v) {
            Some(op) => crate::admin::serve(&ctx.spool, cred.uid(), op, s),
            None => Err("unknown request".into()),
        },
    }
}

/// A flush request from the socket to the main loop; `done` hears how many messages are
/// being tried (None: the old `FLSH`, answered without waiting).
struct FlushReq {
    filter: crate::cli::QueueFilter,
    done: Option<mpsc::Sender<usize>>,
}

/// The largest `FLSQ` request the socket reads, and the most IDs in one.
const MAX_FLUSH_REQUEST: u64 = 64 * 1024;
const MAX_FLUSH_IDS: usize = 1000;

/// `FLSQ` and the selection, one `id ID`, `domain D` or `sender S` a line, ended by
/// shutting down the write side; no line at all is everything. An older daemon answers
/// `ERR unknown request`.
fn flush_request(f: &crate::cli::QueueFilter) -> Vec<u8> {
    let mut req = b"FLSQ".to_vec();
    let lines = f.ids.iter().map(|x| ("id", x));
    let lines = lines
        .chain(f.domain.iter().map(|x| ("domain", x)))
        .chain(f.sender.iter().map(|x| ("sender", x)));
    for (key, value) in lines {
        req.extend_from_slice(format!("{key} {value}\n").as_bytes());
    }
    req
}

/// The selection a `FLSQ` request carries (after the verb). Anything malformed is an
/// error line for the client: the socket is open to every local user.
fn parse_flush_request(req: &[u8]) -> std::result::Result<crate::cli::QueueFilter, String> {
    let text = std::str::from_utf8(req).map_err(|_| "bad flush request: not UTF-8")?;
    let mut f = crate::cli::QueueFilter::default();
    for line in text.split_terminator('\n') {
        let shown: String = line.chars().take(40).collect();
        let bad = || format!("bad flush request line {shown:?}");
        let (key, value) = line.split_once(' ').ok_or_else(bad)?;
        if !is_selector(value) {
            return Err(bad());
        }
        match key {
            "id" if f.ids.len() < MAX_FLUSH_IDS => f.ids.push(value.to_string()),
            "id" => return Err(format!("bad flush request: more than {MAX_FLUSH_IDS} IDs")),
            "domain" if f.domain.is_none() => f.domain = Some(value.to_ascii_lowercase()),
            "sender" if f.sender.is_none() => f.sender = Some(value.to_string()),
            _ => return Err(bad()),
        }
    }
    Ok(f)
}

/// A queue ID, domain or sender a flush can select by: not empty, no control characters
/// (one line of a `FLSQ` request).
fn is_selector(v: &str) -> bool {
    !v.is_empty() && !v.chars().any(char::is_control)
}

/// Whether `flush` with this filter (-qI id, -qR domain, -qS sender) takes a message: the
/// one test for a one-shot pass and for a running daemon.
fn selected(f: &crate::cli::QueueFilter, id: &str, env: &Envelope) -> bool {
    let id_ok = f.ids.is_empty() || f.ids.iter().any(|x| id.starts_with(x.as_str()));
    let dom_ok = f.domain.as_ref().is_none_or(|d| {
        let d = d.to_ascii_lowercase();
        env.rcpts.iter().any(|r| {
            let a = r.addr.to_ascii_lowercase();
            a.ends_with(&format!("@{d}")) || a.ends_with(&format!(".{d}"))
        })
    });
    let snd_ok = f.sender.as_ref().is_none_or(|x| {
        env.sender
            .to_ascii_lowercase()
            .contains(&x.to_ascii_lowercase())
    });
    id_ok && dom_ok && snd_ok
}

/// Send one flush request to the daemon's socket. Its answer line, or None when no daemon
/// answers (none running, or a stale socket).
fn ask_flush(layout: &Layout, req: &[u8]) -> Option<String> {
    let s = UnixStream::connect(layout.socket()).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    // A daemon that stops reading after the verb (an older one) still answers: read anyway.
    let _ = (&s).write_all(req);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    let _ = BufReader::new(&s).take(4096).read_line(&mut reply);
    let reply = reply.trim_end();
    (!reply.is_empty()).then(|| reply.to_string())
}

/// `relayq flush` / `sendmail -q`: ask a running daemon to flush what the filter selects,
/// or do one pass here over those messages.
pub fn flush(
    cfg: Config,
    cfg_flag: Option<PathBuf>,
    filter: &crate::cli::QueueFilter,
) -> Result<i32> {
    let layout = Layout::new(&cfg.spool_dir);
    for v in filter
        .ids
        .iter()
        .chain(&filter.domain)
        .chain(&filter.sender)
    {
        if !is_selector(v) {
            return Err(Error::usage(format!(
                "flush: {v:?} is not a queue ID, domain or sender"
            )));
        }
    }
    let everything = filter == &crate::cli::QueueFilter::default();
    if let Some(reply) = ask_flush(&layout, &flush_request(filter)) {
        // Quiet from cron (no terminal, log to syslog), or cron would mail every run.
        let chatty = nix::unistd::isatty(std::io::stdout()).unwrap_or(false) || !cfg.log.syslog;
        let what = filter.describe();
        if let Some(n) = reply.strip_prefix("OK flushing") {
            let left = "`mailq` shows what is left";
            let line = match (n.trim().parse::<usize>().ok(), everything) {
                (Some(n), true) => {
                    format!("the daemon is flushing the queue: {n} message(s); {left}")
                }
                (None, true) => format!("the daemon is flushing the queue; {left}"),
                (Some(0), false) => format!("no queued message matches {what}: nothing to flush"),
                (Some(n), false) => {
                    format!("the daemon is flushing {n} message(s) matching {what}; {left}")
                }
                (None, false) => {
                    format!("the daemon is flushing the messages matching {what}; {left}")
                }
            };
            if chatty {
                println!("relayq: {line}");
            }
            return Ok(0);
        }
        if reply == "ERR unknown request" {
            // A daemon of an earlier version: it only knows FLSH, which flushes everything.
            if let Some(r) = ask_flush(&layout, b"FLSH")
                && r.starts_with("OK")
            {
                if !everything {
                    eprintln!(
                        "relayq: warning: the running daemon is an older version that does not take ID, -qI, -qR or -qS selections: it is flushing the whole queue, not only {what} (restart it to update)"
                    );
                } else if chatty {
                    println!(
                        "relayq: the daemon is flushing the queue; `mailq` shows what is left"
                    );
                }
                return Ok(0);
            }
        }
        let why = reply.strip_prefix("ERR ").unwrap_or(&reply);
        return Err(Error::temp(format!(
            "the relayq daemon did not take the flush: {why}"
        )));
    }
    // Where the log goes: syslog when it is on (from cron a flush prints nothing, or cron
    // would mail every run); stderr too when syslog is off. On a terminal: warnings and
    // errors, a progress line for a large queue, and a summary.
    let tty = nix::unistd::isatty(std::io::stderr()).unwrap_or(false);
    let stderr_level = match (cfg.log.syslog, tty) {
        (false, _) => log::LevelFilter::Trace,
        (true, true) => log::LevelFilter::Warn,
        (true, false) => log::LevelFilter::Error,
    };
    let chatty = tty || !cfg.log.syslog;
    crate::log::init_with(cfg.log.syslog, true, false, stderr_level);
    let d = Daemon::new(cfg, cfg_flag, true)?;
    let stats = d.run_once(filter, tty)?;
    let remaining = Spool::open(&layout).map_or(0, |s| s.count(Queue::Active));
    if chatty {
        println!(
            "relayq: flush done in {:.1}s: {} message(s) tried, {} recipient(s) delivered, {} deferred, {} bounced; {remaining} message(s) still queued",
            stats.elapsed.as_secs_f64(),
            stats.attempted,
            stats.delivered,
            stats.deferred,
            stats.bounced
        );
    }
    Ok(0)
}

/// The progress line of a flush on a terminal: done/total, rate, ETA.
fn progress_line(done: u64, total: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let eta = if rate > 0.0 {
        format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
    } else {
        "?".into()
    };
    format!("relayq: flush: {done}/{total} messages, {rate:.0} msg/s, ETA {eta}")
}

pub fn daemon(cfg: Config, cfg_flag: Option<PathBuf>, foreground: bool) -> Result<i32> {
    crate::log::init(cfg.log.syslog, foreground, false);
    let d = Daemon::new(cfg, cfg_flag, false)?;
    d.run()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::QueueFilter;

    #[test]
    fn flush_request_round_trips() {
        for f in [
            QueueFilter::default(),
            QueueFilter {
                ids: vec!["06B0E9".into(), "06B0F1".into()],
                domain: Some("example.org".into()),
                sender: Some("bob@".into()),
            },
        ] {
            let req = flush_request(&f);
            assert_eq!(&req[..4], b"FLSQ");
            assert_eq!(parse_flush_request(&req[4..]), Ok(f));
        }
    }

    #[test]
    fn malformed_flush_requests_are_refused() {
        let many = "id X\n".repeat(MAX_FLUSH_IDS + 1);
        for bad in [
            &b"\xff\xfe"[..],
            b"id",
            b"id \n",
            b"ids X\n",
            b"domain a\ndomain b\n",
            b"sender a\nsender b\n",
            b"id a\x01b\n",
            b"id a\rb\n",
            many.as_bytes(),
        ] {
            let e = parse_flush_request(bad).expect_err(&String::from_utf8_lossy(bad));
            assert!(e.starts_with("bad flush request"), "{e}");
            assert!(e.len() < 100, "{e}");
        }
        // An empty request is the whole queue; a missing final newline is fine.
        assert_eq!(parse_flush_request(b""), Ok(QueueFilter::default()));
        let f = parse_flush_request(b"domain Example.ORG").unwrap();
        assert_eq!(f.domain.as_deref(), Some("example.org"));
    }

    #[test]
    fn selection_by_id_domain_and_sender() {
        let env = Envelope {
            sender: "Bob@Example.com".into(),
            rcpts: vec![Rcpt {
                addr: "a@mail.one.example".into(),
                ..Rcpt::default()
            }],
            ..Envelope::default()
        };
        let f = |ids: &[&str], d: Option<&str>, s: Option<&str>| QueueFilter {
            ids: ids.iter().map(|x| x.to_string()).collect(),
            domain: d.map(str::to_string),
            sender: s.map(str::to_string),
        };
        assert!(selected(&f(&[], None, None), "06B0E9AA", &env));
        assert!(selected(&f(&["06B0", "X"], None, None), "06B0E9AA", &env));
        assert!(!selected(&f(&["06B1"], None, None), "06B0E9AA", &env));
        assert!(selected(
            &f(&[], Some("one.example"), None),
            "06B0E9AA",
            &env
        ));
        assert!(!selected(
            &f(&[], Some("ne.example"), None),
            "06B0E9AA",
            &env
        ));
        assert!(selected(&f(&[], None, Some("bob@")), "06B0E9AA", &env));
        assert!(!selected(
            &f(&["06B0"], Some("two.example"), None),
            "06B0E9AA",
            &env
        ));
    }
}
