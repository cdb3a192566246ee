//! The relays as the daemon sees them: each configured relay's target and secret (`Slot`,
//! built from the config), which of them is usable, connecting to the first usable one
//! (failover), and the outage state: a relay found down is marked so once, probed at
//! growing intervals rather than retried per message, and recorded in run/relay for
//! `relayq status`. Each relay's send-rate limiter (`ratelimit`) lives in its slot, shared
//! by every connection to it (`throttle` has the hooks that count and pause it). Also the
//! password file and `password_command`, read before the daemon drops its privileges. Each
//! route (`routes`) has slots of its own: failover walks the route's slots only.

use super::ratelimit::{self, Hold, Limiter};
use super::worker::{Ctx, Shared};
use crate::config::{AuthKind, Config};
use crate::error::{Error, Result};
use crate::provider::{self, Tls};
use crate::relay::{self, Auth, AuthMech, Kind, Session, SessionError, Stage, Target, Timeouts};
use crate::spool::Layout;
use crate::state::{self, now};
use log::{error, info, warn};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

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
fn read_password_file(p: &Path, daemon_uid: Option<u32>) -> Result<String> {
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
pub(super) struct Slot {
    pub(super) name: String,
    /// The route it serves (`routes`): 0 the default, n + 1 `[[sender_relay]]` n.
    pub(super) route: usize,
    /// The sender a probe of a relay found down at MAIL tries: one this route carries.
    pub(super) probe_sender: String,
    pub(super) target: Target,
    secret: Secret,
    /// None = up; Some = down until then.
    pub(super) down_until: Option<Instant>,
    down_since: Option<Instant>,
    failures: u32,
    pub(super) probing: bool,
    config_problem: bool,
    /// Consecutive transactions refused with 4xx at MAIL (a relay-wide refusal).
    pub(super) mail_tempfails: u32,
    /// Why it is down, in plain words (for run/relay).
    pub(super) reason: String,
    /// Marked down at MAIL (the configured sender refused, or every transaction refused): a
    /// connection alone does not show it is back; a probe's MAIL FROM must be accepted.
    pub(super) mail_probe: bool,
    /// Connections open (or being opened) to this relay under the current config.
    pub(super) open: usize,
    /// Of those, the ones whose session is up: only a refusal while one of them works says
    /// the relay limits connections (two opened at once to a relay that is down are not).
    pub(super) established: usize,
    /// How many may be open now: starts at [`START_CONNECTIONS`], one more for each
    /// connection that succeeds, down to what is open when the relay refuses one more
    /// (slow start, as Postfix's), never above `cap`.
    pub(super) allowed: usize,
    /// `queue.connections`, or the provider's documented limit if lower.
    pub(super) cap: usize,
    /// Consecutive messages that met the same temporary failure at DATA or after the dot
    /// (`data_tempfail_code`), and those of them deferred.
    pub(super) data_tempfails: u32,
    pub(super) data_tempfail_code: u16,
    pub(super) data_deferred: Vec<String>,
    /// `rate` and `daily` (ratelimit), shared by every connection to this relay.
    pub(super) limiter: Limiter,
    /// Its name in run/ratelimit: URL and user name.
    pub(super) rate_key: String,
}

/// Connections opened at first; more follow while the backlog grows and the relay takes them.
const START_CONNECTIONS: usize = 2;

impl Slot {
    /// What holds this relay's next transaction at `now` (its rate, a throttle, the daily
    /// cap), if anything.
    pub(super) fn rate_hold(&self, now: Instant) -> Option<Hold> {
        self.limiter.hold(now, state::now())
    }

    /// Whether one more connection may be opened.
    pub(super) fn has_room(&self) -> bool {
        self.open < self.allowed
    }

    pub(super) fn usable(&self, now: Instant) -> bool {
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
    pub(super) fn interval(&self) -> Duration {
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
    pub(super) fn mark_down(&mut self, config_problem: bool, reason: String) -> bool {
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

/// The relays that carry mail from `sender` (its route), as (name, target) with their
/// secret resolved: for `relayq test`.
pub fn resolved_targets(cfg: &Config, sender: &str) -> Result<Vec<(String, Target)>> {
    let (slots, routes) = build_slots(cfg)?;
    let map = super::routes::SenderMap::new(&cfg.sender_relay).map_err(Error::config)?;
    let mine = routes.get(map.route(sender)).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for slot in slots
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mine.contains(i))
        .map(|(_, s)| s)
    {
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

/// Route `r`'s probe sender: the sender local mail and bounces go out as when it maps
/// there, else the route's first full address, else postmaster at its first domain.
fn probe_sender(cfg: &Config, map: &super::routes::SenderMap, r: usize, default: &str) -> String {
    if r == 0 || map.route(default) == r {
        return default.to_string();
    }
    let pats: Vec<super::routes::Pattern> = cfg
        .sender_relay
        .get(r - 1)
        .map(|e| {
            e.senders
                .iter()
                .filter_map(|s| super::routes::Pattern::parse(s).ok())
                .collect()
        })
        .unwrap_or_default();
    pats.iter()
        .find_map(|p| match p {
            super::routes::Pattern::Address(a) => Some(a.clone()),
            _ => None,
        })
        .or_else(|| {
            pats.iter().find_map(|p| match p {
                super::routes::Pattern::Domain(d) => Some(format!("postmaster@{d}")),
                _ => None,
            })
        })
        .unwrap_or_else(|| default.to_string())
}

/// Every route's slots, in one list, and each route's slot indices (failover order).
pub(super) fn build_slots(cfg: &Config) -> Result<(Vec<Slot>, Vec<Vec<usize>>)> {
    let mut out = Vec::new();
    let mut routes = Vec::new();
    let ehlo_default = crate::submit::host_names().1;
    let daemon_uid = crate::perms::spool_owner(&Layout::new(&cfg.spool_dir)).ok();
    let map = super::routes::SenderMap::new(&cfg.sender_relay).map_err(Error::config)?;
    let relay_sender = crate::bounce::sender(cfg, &ehlo_default);
    let each = cfg
        .routes()
        .into_iter()
        .enumerate()
        .flat_map(|(route, relays)| relays.into_iter().map(move |r| (route, r)));
    for (route, r) in each {
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
        let cap = r
            .provider
            .as_deref()
            .and_then(provider::preset)
            .and_then(|p| p.max_connections)
            .map_or(cfg.queue.connections, |m| m.min(cfg.queue.connections))
            .max(1);
        let (rate, daily) = r.limits();
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
        if routes.len() <= route {
            routes.resize(route + 1, Vec::new());
        }
        routes[route].push(out.len());
        out.push(Slot {
            name: ep.to_string(),
            route,
            probe_sender: probe_sender(cfg, &map, route, &relay_sender),
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
            open: 0,
            established: 0,
            allowed: cap.min(START_CONNECTIONS),
            cap,
            data_tempfails: 0,
            data_tempfail_code: 0,
            data_deferred: Vec::new(),
            limiter: Limiter::new(rate, daily),
            rate_key: ratelimit::key(&ep.to_string(), r.username.as_deref()),
        });
    }
    if routes.first().is_none_or(Vec::is_empty) {
        return Err(Error::config(format!(
            "config {}: no [relay] configured: set [relay] url or provider (see relayq.toml(5))",
            cfg.path.display()
        )));
    }
    Ok((out, routes))
}

/// A live connection and which slot it belongs to.
pub(super) struct Conn {
    pub(super) session: Session,
    pub(super) slot: usize,
    pub(super) last_used: Instant,
    pub(super) reused: bool,
    /// The config generation it was opened under (its slot's count is only then ours).
    pub(super) generation: u64,
}

/// Close a connection (QUIT when `quit`) and give its place back to its relay's count.
pub(super) fn release(ctx: &Ctx, c: Conn, quit: bool) {
    {
        let mut g = ctx.shared.lock().expect("lock");
        if g.generation == c.generation
            && let Some(s) = g.slots.get_mut(c.slot)
        {
            s.open = s.open.saturating_sub(1);
            s.established = s.established.saturating_sub(1);
        }
    }
    ctx.cv.notify_all();
    if quit {
        c.session.quit();
    }
}

/// A refusal that means "not one more connection" rather than "down": `421` (or any 4xx)
/// in the greeting, the connection closed or refused before it.
fn connection_limit(e: &SessionError) -> bool {
    match (&e.kind, e.stage) {
        (Kind::Reply(r), Stage::Greeting) => r.is_temp(),
        (Kind::Network(_), Stage::Greeting) => true,
        (Kind::Network(m), Stage::Connect) => m.to_ascii_lowercase().contains("refused"),
        _ => false,
    }
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
            g.slots[i]
                .mail_probe
                .then(|| g.slots[i].probe_sender.clone()),
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
                format!("the relay {}: {e}", e.down_words())
            };
            Err((e, refused, name, reason))
        }
        Err(e) => Err(failed(e)),
    }
}

/// A 5xx to MAIL FROM that is about the sender (not the message's size or parameters).
pub(super) fn sender_refused(e: &SessionError) -> bool {
    e.stage == Stage::Mail
        && matches!(&e.kind, Kind::Reply(r) if r.is_perm() && r.code != 552 && r.code != 555)
}

pub(super) fn refused_sender_reason(sender: &str, e: &SessionError) -> String {
    let reply = match &e.kind {
        Kind::Reply(r) => r.text.clone(),
        _ => e.to_string(),
    };
    format!("the relay refuses the sender <{sender}>: {reply}")
}

/// The relay refused the configured sender: one error, naming it and the fix.
pub(super) fn log_sender_refused(name: &str, reason: &str, sender: &str, retry: u64) {
    error!(
        "relay {name}: {reason} -- this is a configuration problem: mail stays queued; verify {sender} (or its domain) with your provider, or set [address] sender to an address it accepts, then run `{}` (retrying in {retry}s)",
        crate::initsys::hint(crate::initsys::Action::Reload, Some(std::process::id()))
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
        (Kind::Network(_) | Kind::Closed | Kind::Timeout, Stage::Greeting) => {
            format!("{hp}: {e} {scheme_hint}")
        }
        (Kind::Tls(m), _) => format!("TLS failure with {hp}: {m} {scheme_hint}"),
        (Kind::Certificate(m), _) => m.to_string(),
        (Kind::Network(_) | Kind::Closed | Kind::Timeout | Kind::Protocol(_), _) => {
            format!("{hp}: {e}")
        }
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

/// One route's relays' state: up when one is usable, else down since the earliest
/// failure, with each one's reason and the next probe.
fn route_state(slots: &[&Slot]) -> state::RelayState {
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
        ..Default::default()
    }
}

/// The relays' state for run/relay: the default route's, with each sender route's in
/// `routes` (labelled with its senders).
fn relay_state(g: &Shared) -> state::RelayState {
    let of = |r: usize| -> Vec<&Slot> { g.slots.iter().filter(|s| s.route == r).collect() };
    let mut st = route_state(&of(0));
    for r in 1..g.routes.len() {
        let mut rs = route_state(&of(r));
        rs.senders = Some(g.ready.map().label(r).to_string());
        st.routes.push(rs);
    }
    st
}

/// Record the relays' state (written by the main loop, at most once a second). A route
/// still down keeps the "since" the file already has (across probes, reloads and flush
/// runs).
pub(super) fn note_relay(ctx: &Ctx, g: &Shared) {
    let mut st = relay_state(g);
    if let Ok(mut note) = ctx.relay_note.lock() {
        if let Some(prev) = note.saved() {
            keep_since(&mut st, prev);
            for r in st.routes.iter_mut() {
                if let Some(p) = prev.routes.iter().find(|p| p.senders == r.senders) {
                    keep_since(r, p);
                }
            }
        }
        note.set(st);
    }
}

fn keep_since(st: &mut state::RelayState, prev: &state::RelayState) {
    if let (Some(s), Some(p)) = (st.down_since.as_mut(), prev.down_since) {
        *s = (*s).min(p);
    }
}

/// Connect to route `route`'s first usable relay, in order (failover within the route
/// only). None if none can be reached, or the first usable one has no room for one more
/// connection (a full relay is not a reason to fail over).
pub(super) fn connect_any(ctx: &Ctx, route: usize) -> Option<Conn> {
    let mine = ctx.shared.lock().expect("lock").routes.get(route)?.clone();
    for i in mine {
        let (generation, probe) = {
            let mut g = ctx.shared.lock().expect("lock");
            let now = Instant::now();
            let generation = g.generation;
            let s = g.slots.get_mut(i)?;
            if !s.usable(now) {
                continue;
            }
            if !s.has_room() {
                return None;
            }
            let probe = s.down_until.is_some();
            if probe {
                s.probing = true;
            }
            s.open += 1;
            (generation, probe)
        };
        let res = connect_slot(ctx, i);
        let mut g = ctx.shared.lock().expect("lock");
        let current =
            g.generation == generation && g.slots.get(i).is_some_and(|s| s.route == route);
        match res {
            Ok(session) if !current => {
                drop(g);
                session.quit();
                return None;
            }
            // Opened while another worker found the relay down (the same 4xx to every
            // message, say): only the probe may say it is back.
            Ok(session) if !probe && g.slots[i].down_until.is_some() => {
                g.slots[i].open = g.slots[i].open.saturating_sub(1);
                drop(g);
                ctx.cv.notify_all();
                session.quit();
                return None;
            }
            Ok(session) => {
                let s = &mut g.slots[i];
                s.established += 1;
                // Slow start: a connection that works makes room for one more.
                if s.allowed < s.cap {
                    s.allowed += 1;
                    // A worker waiting for room may open it.
                    ctx.cv.notify_all();
                }
                if s.mark_up() {
                    info!("relay {} is reachable again ({})", s.name, session.peer());
                }
                note_relay(ctx, &g);
                return Some(Conn {
                    session,
                    slot: i,
                    last_used: Instant::now(),
                    reused: false,
                    generation,
                });
            }
            Err(_) if !current => return None,
            Err((e, config_problem, name, reason)) => {
                let s = &mut g.slots[i];
                s.open = s.open.saturating_sub(1);
                if s.established > 0 && connection_limit(&e) {
                    // Others work: the relay's connection limit, not an outage. Stay
                    // below it; the job goes on on a connection that works.
                    s.allowed = s.open;
                    info!(
                        "relay {name} refused one more connection ({e}): using at most {} connections",
                        s.allowed
                    );
                    drop(g);
                    ctx.cv.notify_all();
                    return None;
                }
                if !s.mark_down(config_problem, reason) {
                    // Another worker's attempt failed just before and said so.
                    drop(g);
                    ctx.cv.notify_all();
                    continue;
                }
                note_relay(ctx, &g);
                let retry = g.slots[i].interval().as_secs();
                if sender_refused(&e) {
                    log_sender_refused(&name, &g.slots[i].reason, &g.slots[i].probe_sender, retry);
                } else if config_problem {
                    error!(
                        "relay {name}: {e} -- this is a configuration problem: mail stays queued; fix the config and run `{}` (retrying in {retry}s)",
                        crate::initsys::hint(
                            crate::initsys::Action::Reload,
                            Some(std::process::id())
                        )
                    );
                } else if g.once {
                    // A flush pass (no daemon): nothing probes again before the next run.
                    warn!(
                        "relay {name} unreachable: {e} (mail stays queued for the next `relayq flush` or the daemon)"
                    );
                } else {
                    warn!(
                        "relay {name} {}: {e} (mail stays queued; probing again in {retry}s)",
                        e.down_words()
                    );
                }
                drop(g);
                ctx.cv.notify_all();
            }
        }
    }
    None
}
