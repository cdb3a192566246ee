//! The flush daemon: picks up new mail (inotify on `new/`, no polling), schedules it, and
//! drains it through the relay with a small pool of reused connections. `relayq flush` is
//! one pass of the same machinery.
//!
//! This file owns the `Daemon` (the main thread): its main loop (`run`) and one pass
//! (`run_once`), taking messages into the queue (pickup, admit, forget, corrupt), cleanup,
//! reload, and the entry points `daemon()` and `flush()`. Beside it: `scheduler` (which
//! message is tried when: timers, backoff, expiry, delay warnings), `backlog` (the bounded
//! active queue: parking, and reading mail on disk oldest first as room frees), `worker` (the pool that
//! delivers), `relays` (relay selection and outage probing) and `socket` (the local socket
//! and flush requests). Bounces and delay warnings are composed by `crate::bounce`.
//!
//! Commit rule: after the relay's final 250 a worker records the result (or unlinks the
//! message) before it does anything else, so a crash can at worst resend that one message.

mod backlog;
mod listen;
pub mod ratelimit;
mod relays;
pub mod routes;
mod scheduler;
mod socket;
mod worker;

/// The clock lives in `state`; kept here for the callers that know it as `daemon::now`.
pub use crate::state::now;
pub use relays::resolved_targets;
pub use socket::flush;

use crate::config::Config;
use crate::error::{Class, Error, Result};
use crate::spool::{self, Layout, Queue, QueueId, Spool};
use crate::state::{self, Event, RcptState, State};
use log::{error, info, warn};
use relays::build_slots;
use scheduler::{Msg, Schedule, Start};
use socket::{FlushReq, listen, selected, serve_socket};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};
use worker::{Ctx, Report, Shared, worker};

/// How long a file may sit untouched in tmp/ (and an orphaned journal in journal/).
const TMP_KEEP: u64 = 3600;

/// The main thread's state: the configuration, the scheduler's messages and timers, the
/// workers and what they share, and the counts a flush reports.
struct Daemon {
    cfg: Config,
    cfg_flag: Option<PathBuf>,
    ctx: Arc<Ctx>,
    sched: Schedule,
    reports: mpsc::Receiver<Report>,
    wake_rx: UnixStream,
    spool_owner: u32,
    workers: Vec<std::thread::JoinHandle<()>>,
    stats: Stats,
    once: bool,
    fqdn: String,
    /// A flush pass: messages not to read again in this pass (tried already, or not selected).
    skip: HashSet<String>,
    /// A flush pass: messages whose attempt is over, to leave memory (`retire_passed`).
    passed: Vec<String>,
    /// A flush pass's selection.
    filter: Option<crate::cli::QueueFilter>,
    /// Released by an outage (`take_released`) while their own report was still on its way:
    /// released when it arrives, so that its deferral does not give them a backoff.
    release_on_report: HashSet<String>,
    /// Workers started for each route (`spawn_workers`).
    route_workers: Vec<usize>,
}

/// How a message is taken into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Just came through new/ (new, or released): logged, tried at once.
    Fresh,
    /// Read again from queue/ (a restart, a refill, a parked message due): its journal's
    /// next attempt holds.
    Restart,
    /// Flushed while parked: tried at once.
    Now,
}

/// What a pass did, for the summary line of `relayq flush`.
#[derive(Default, Debug)]
struct Stats {
    /// Messages whose attempt finished (delivered, deferred, bounced or gone).
    attempted: u64,
    /// Recipients.
    delivered: u64,
    /// Messages.
    deferred: u64,
    /// Recipients.
    bounced: u64,
    elapsed: Duration,
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

/// What users submit through postdrop belongs to them and to postdrop's group (the group
/// of tmp/ and new/): unless the daemon holds that group it could not read their mail, and
/// would set it aside. Refuse to start instead, saying what to do.
fn check_drop_group(spool: &Spool) -> Result<()> {
    let Ok(tmp) = spool.lstat_dir("tmp") else {
        return Ok(());
    };
    let gid = nix::unistd::Gid::from_raw(tmp.st_gid);
    let held =
        nix::unistd::getegid() == gid || nix::unistd::getgroups().is_ok_and(|g| g.contains(&gid));
    if held || nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let name = nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .map_or(format!("gid {gid}"), |g| g.name);
    Err(Error::config(format!(
        "the daemon's user is not in group {name}, the group of {} (postdrop's): it could not read users' mail; run `usermod -a -G {name} <the daemon's user>` and restart",
        spool.layout().display_dir("tmp")
    )))
}

/// Check the spool's owners and modes before trusting it.
fn check_spool(layout: &Layout) -> Result<()> {
    Ok(crate::perms::spool(layout)?)
}

impl Daemon {
    fn new(cfg: Config, cfg_flag: Option<PathBuf>, once: bool) -> Result<Daemon> {
        let layout = Layout::new(&cfg.spool_dir);
        check_spool(&layout)?;
        crate::perms::config_file(&cfg.path)?;
        // Secrets are read (as root if need be) before privileges are dropped.
        let (mut slots, routes) = build_slots(&cfg)?;
        let map = routes::SenderMap::new(&cfg.sender_relay).map_err(Error::config)?;
        let dkim = crate::dkim::Signer::load(&cfg)?;
        // The daily counts (and a throttle) go on across restarts.
        let rates = ratelimit::RateFile::load(&ratelimit::RateFile::path(&layout));
        for s in slots.iter_mut() {
            if let Some(saved) = rates.get(&s.rate_key) {
                s.limiter.restore(saved, Instant::now(), now());
            }
        }
        // If root, become the spool's owner (the daemon's user), so every file we create
        // stays the daemon's, and nothing in the spool can make root act.
        let spool = Spool::open_as_owner(&layout)?;
        let spool_owner = spool.owner();
        check_drop_group(&spool)?;
        // postdrop's size limit follows max_message_size (run/limits).
        if let Err(e) = spool.write_limits(cfg.max_message_size) {
            warn!("cannot write run/limits for relayq-postdrop: {e}");
        }
        let (tx, rx) = mpsc::channel();
        let (wake_tx, wake_rx) = UnixStream::pair().map_err(|e| Error::software(e.to_string()))?;
        wake_rx.set_nonblocking(true).ok();
        wake_tx.set_nonblocking(true).ok();
        let ctx = Arc::new(Ctx {
            shared: Mutex::new(Shared {
                ready: routes::Ready::new(map),
                slots,
                routes,
                stop: false,
                once,
                idle_timeout: cfg.queue.idle_timeout,
                idle_connected: Vec::new(),
                released: Vec::new(),
                generation: 0,
                dkim,
            }),
            cv: Condvar::new(),
            last_delivery: Mutex::new(state::DeliveryNote::new(state::LastDelivery::path(&layout))),
            relay_note: Mutex::new(state::RelayNote::with_saved(
                state::RelayState::path(&layout),
                state::RelayState::load(&state::RelayState::path(&layout)),
            )),
            rate_note: Mutex::new(state::Note::with_saved(
                ratelimit::RateFile::path(&layout),
                Some(rates),
            )),
            spool,
            reports: Mutex::new(tx),
            wake: wake_tx,
            woken: std::sync::atomic::AtomicBool::new(false),
        });
        let limit = cfg.queue.active_limit;
        Ok(Daemon {
            cfg,
            cfg_flag,
            ctx,
            sched: Schedule::new(limit),
            reports: rx,
            wake_rx,
            spool_owner,
            workers: Vec::new(),
            stats: Stats::default(),
            once,
            fqdn: crate::submit::host_names().1,
            skip: HashSet::new(),
            passed: Vec::new(),
            release_on_report: HashSet::new(),
            filter: None,
            route_workers: Vec::new(),
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
        let Some(m) = self.sched.msgs.get_mut(id) else {
            return Ok(());
        };
        self.ctx.record(&m.id, &mut m.state, events)
    }

    /// Start workers up to `queue.connections` for each route: more after a reload that
    /// raised it or added routes (one that lowered it leaves the extra ones idle: the relay's
    /// cap keeps them off the wire; a route gone, its workers leave).
    fn spawn_workers(&mut self) {
        let n = self.ctx.shared.lock().expect("lock").routes.len();
        if self.workers.is_empty() {
            // None started yet, or a flush round's joined.
            self.route_workers.clear();
        }
        self.route_workers.resize(n, 0);
        for route in 0..n {
            while self.route_workers[route] < self.cfg.queue.connections {
                let c = self.ctx.clone();
                self.workers
                    .push(std::thread::spawn(move || worker(c, route)));
                self.route_workers[route] += 1;
            }
        }
    }

    /// Take over queue/ (after a restart): an older spool's journals, then as much as fits
    /// in memory, oldest first; the rest is read as room frees.
    fn load_queue(&mut self) {
        let n = self.spool().migrate_journals();
        if n > 0 {
            info!("moved {n} delivery journal(s) of an older relayq into journal/");
        }
        self.sched.backlog = true;
        self.balance();
    }

    /// Move new arrivals (and released mail) from new/ into queue/ and admit them, oldest
    /// first, as many as fit; with mail waiting on disk, they wait their turn (`refill`).
    fn pickup(&mut self) {
        if self.sched.backlog {
            self.refill();
            return;
        }
        // Only as many names as there is room for are kept (a burst into new/ while the
        // daemon was busy can be large); more there: the next ones wait for `refill`.
        let Ok((names, more)) = backlog::oldest_in(self.spool(), Queue::New, self.sched.room())
        else {
            return;
        };
        self.sched.backlog |= more;
        let mut n = 0;
        for name in names {
            n += usize::from(self.take_new(&name));
        }
        if n > 0 {
            let _ = self.spool().sync(Queue::Active);
        }
    }

    /// A message we stopped tracking, released while a worker had it: it waits in new/,
    /// where pickup skipped it then.
    fn pickup_released(&mut self, id: &str) {
        if QueueId::parse(id).is_some_and(|q| self.spool().contains(Queue::New, &q)) {
            self.pickup();
        }
    }

    fn corrupt(&self, q: Queue, name: &str, why: &str) {
        match self.spool().set_aside(q, name) {
            Ok(_) => warn!("{name}: moved to corrupt/: {why}"),
            Err(e) => error!("{name}: {why}, and cannot move it to corrupt/: {e}"),
        }
    }

    /// Whether the message (past its envelope at `off`) holds a NUL byte.
    fn has_nul(&self, id: &QueueId, off: u64) -> bool {
        self.spool()
            .open_file(Queue::Active, id.as_str())
            .and_then(|(mut f, _)| {
                f.seek(SeekFrom::Start(off))?;
                crate::message::contains_nul(&mut f)
            })
            .unwrap_or(false)
    }

    /// Validate and start tracking a queue file. False if it was set aside (or a flush
    /// pass does not select it).
    fn admit(&mut self, qid: QueueId, how: Admit) -> bool {
        let id = qid.as_str();
        if self.sched.msgs.contains_key(id) {
            return true;
        }
        // Parked or waiting: read again now (flushed: tried now).
        let how = match (self.sched.unpark(id), how) {
            (true, Admit::Restart) => Admit::Now,
            (_, how) => how,
        };
        let fresh = how == Admit::Fresh;
        let (env, off, meta) = match self.spool().read_envelope(Queue::Active, id) {
            Ok(x) => x,
            Err(why) => {
                self.corrupt(Queue::Active, id, &why);
                return false;
            }
        };
        if meta.len() > spool::queue_file_limit(self.cfg.max_message_size) {
            self.corrupt(
                Queue::Active,
                id,
                &format!("larger than max_message_size ({} bytes)", meta.len()),
            );
            return false;
        }
        if let Some(f) = &self.filter
            && !selected(f, id, &env)
        {
            self.skip.insert(id.to_string());
            return false;
        }
        let uid = env.submitter(meta.uid(), self.spool_owner);
        let mtime = meta.mtime().max(0) as u64;
        let t = now();
        let arrival = env.time.clamp(mtime.saturating_sub(86400), t.max(mtime));
        let mut st = State::parse(&self.spool().journal(&qid), env.rcpts.len());
        // A NUL byte cannot go over SMTP: sendmail refuses it, but postdrop and the socket
        // take what a user writes. Failed at once, so the sender hears of it (a bounce).
        if fresh && self.has_nul(&qid, off) {
            let why =
                "554 5.6.0 the message contains a NUL byte, which SMTP cannot carry: not sent";
            let events: Vec<Event> = st
                .pending()
                .map(|i| Event::Failed(i, t, why.into()))
                .collect();
            warn!("{id}: {why}");
            if let Err(e) = self.ctx.record(&qid, &mut st, &events) {
                error!("{id}: cannot record the failure: {e}");
            }
        }
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
        let next = if how == Admit::Restart { st.next } else { 0 };
        let id = id.to_string();
        let id = id.as_str();
        let mut msg = Msg::new(qid.clone(), env, off, arrival, st);
        msg.trace = crate::message::trace_field(&self.fqdn, uid, id, arrival).into();
        self.sched.msgs.insert(id.to_string(), msg);
        let (after, life) = (self.cfg.queue.warn_after, self.cfg.queue.lifetime.as_secs());
        self.sched.touch(id, after, life);
        if self.sched.msgs[id].state.all_done() {
            self.finish(id);
            return true;
        }
        let lifetime = self.cfg.queue.lifetime.as_secs();
        match scheduler::start(arrival, next, t, lifetime, self.once) {
            // Past its lifetime: left for expire(), which bounces it.
            Start::Expired => {}
            Start::At(next) => self.sched.at(next, id),
            Start::Now => self.enqueue(id),
        }
        true
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
        let loaded = Config::load(self.cfg_flag.as_deref()).and_then(|c| {
            let (slots, routes) = build_slots(&c)?;
            let map = routes::SenderMap::new(&c.sender_relay).map_err(Error::config)?;
            let dkim = crate::dkim::Signer::load(&c)?;
            Ok((c, slots, routes, map, dkim))
        });
        match loaded {
            Ok((c, mut slots, routes, map, dkim)) => {
                let mut g = self.ctx.shared.lock().expect("lock");
                // Retried at once; one down at MAIL must still show MAIL is accepted.
                for s in slots.iter_mut() {
                    s.mail_probe = g
                        .slots
                        .iter()
                        .any(|o| o.name == s.name && o.route == s.route && o.mail_probe);
                    // The rate's turn, the daily count and a throttle carry over.
                    if let Some(o) = g.slots.iter().find(|o| o.rate_key == s.rate_key) {
                        s.limiter.carry_from(&o.limiter);
                    }
                }
                g.slots = slots;
                g.routes = routes;
                g.ready.reroute(map);
                g.idle_timeout = c.queue.idle_timeout;
                g.dkim = dkim;
                g.generation += 1;
                drop(g);
                if let Err(e) = self.spool().write_limits(c.max_message_size) {
                    warn!("cannot write run/limits for relayq-postdrop: {e}");
                }
                self.sched.limit = c.queue.active_limit;
                // Another lifetime or warn_after: every message is looked at again.
                self.sched.msg_due = 0;
                self.cfg = c;
                // More connections allowed, or new routes: their workers start now (a
                // route gone, its workers leave).
                self.spawn_workers();
                self.ctx.cv.notify_all();
                info!("configuration reloaded");
            }
            Err(e) => error!("reload failed, keeping the old configuration: {e}"),
        }
    }

    /// Flush (the socket, SIGUSR1): the messages `filter` selects are tried now, ignoring
    /// backoff; the others keep their timers. Returns how many of them are being tried.
    /// Only a flush from root or the spool's owner (`privileged`) cuts a down relay's probe
    /// wait short: an ordinary user looping `relayq flush` cannot make the daemon hammer a
    /// relay that is refusing connections.
    fn flush_matching(&mut self, filter: &crate::cli::QueueFilter, privileged: bool) -> usize {
        self.pickup();
        let matched: HashSet<String> = self
            .sched
            .msgs
            .iter()
            .filter(|(id, m)| selected(filter, id, &m.env))
            .map(|(id, _)| id.clone())
            .collect();
        let jobs = self.sched.flush(&matched);
        self.ctx.shared.lock().expect("lock").ready.extend(jobs);
        // Parked ones (their envelope on disk) wait for room, to be tried at once.
        let spool = &self.ctx.spool;
        let by_env = filter.domain.is_some() || filter.sender.is_some();
        let parked = self.sched.flush_parked(|id| {
            if !by_env {
                return selected(filter, id, &spool::Envelope::default());
            }
            spool
                .read_envelope(Queue::Active, id)
                .is_ok_and(|(env, _, _)| selected(filter, id, &env))
        });
        self.refill();
        let n = parked
            + matched
                .iter()
                .filter(|id| self.sched.msgs.get(*id).is_some_and(|m| m.in_flight))
                .count();
        // A relay marked down is probed now rather than at its next probe time.
        if privileged && (n > 0 || filter == &crate::cli::QueueFilter::default()) {
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
        self.ctx
            .woken
            .store(false, std::sync::atomic::Ordering::Release);
        let mut b = [0u8; 256];
        while (&self.wake_rx).read(&mut b).map(|n| n > 0).unwrap_or(false) {}
        while let Ok(r) = self.reports.try_recv() {
            let id = (!self.release_on_report.is_empty()).then(|| r.id.clone());
            self.handle(r);
            if let Some(id) = id
                && self.release_on_report.remove(&id)
            {
                self.release_now(HashSet::from([id]));
            }
        }
        self.take_released();
    }

    /// Messages a worker deferred just before it found their relay down (worker.rs,
    /// `Shared::released`): back to the ready queue, to go when the relay is back.
    fn take_released(&mut self) {
        let ids: HashSet<String> =
            std::mem::take(&mut self.ctx.shared.lock().expect("lock").released)
                .into_iter()
                .collect();
        let (later, now): (HashSet<String>, HashSet<String>) = ids
            .into_iter()
            .partition(|id| self.sched.msgs.get(id).is_some_and(|m| m.in_flight));
        self.release_on_report.extend(later);
        self.release_now(now);
    }

    /// Messages `ids` go to the ready queue at once, ignoring their backoff.
    fn release_now(&mut self, ids: HashSet<String>) {
        if !ids.is_empty() {
            let jobs = self.sched.flush(&ids);
            self.ctx.shared.lock().expect("lock").ready.extend(jobs);
            // Parked meanwhile (their envelope back on disk): read again, to go at once.
            if self.sched.flush_parked(|id| ids.contains(id)) > 0 {
                self.refill();
            }
            self.ctx.cv.notify_all();
        }
    }

    /// Write run/last-delivery, run/relay and run/ratelimit if due (`now`: whatever is pending). True when
    /// a write is still pending.
    fn note_delivery(&self, now: bool) -> bool {
        let relay = self.ctx.relay_note.lock().is_ok_and(|mut n| n.write(now));
        let rates = relays::rate_file(&self.ctx.shared.lock().expect("lock").slots);
        let rate = self.ctx.rate_note.lock().is_ok_and(|mut n| {
            n.set(rates);
            n.write(now)
        });
        let delivery = self
            .ctx
            .last_delivery
            .lock()
            .is_ok_and(|mut n| n.write(now));
        relay || delivery || rate
    }

    /// One pass (flush): deliver what can be delivered now, then return. The pass goes on
    /// until nothing it could send now is left: mail read as room frees, and the bounces and
    /// delay warnings it queued itself. Each message is tried once.
    fn run_once(mut self, filter: &crate::cli::QueueFilter, progress: bool) -> Result<Stats> {
        let started = Instant::now();
        let _lock = take_lock(self.spool())?;
        if filter != &crate::cli::QueueFilter::default() {
            self.filter = Some(filter.clone());
        }
        self.load_queue();
        self.expire();
        let total = if self.sched.backlog {
            // Counted name by name: a million names are not held as a list.
            let mut n = 0u64;
            for q in [Queue::Active, Queue::New] {
                let _ = self
                    .spool()
                    .scan(q, |name| n += u64::from(spool::is_id(name)));
            }
            n
        } else {
            self.sched.msgs.len() as u64
        };
        // A progress line only for a queue that takes a while.
        let mut shown = false;
        let mut last_shown = started;
        loop {
            self.spawn_workers();
            loop {
                let workers_alive = self.workers.iter().any(|w| !w.is_finished());
                self.drain_reports();
                self.retire_passed();
                self.balance();
                self.expire();
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
            self.retire_passed();
            // What the pass queued itself (bounces, delay warnings) and what room let in
            // meanwhile: another round, unless every relay is down.
            if self.ctx.shared.lock().expect("lock").all_down() || !self.more_to_send() {
                break;
            }
        }
        // The pass is over: nothing is in flight any more (jobs blocked by an unreachable
        // relay included). Delay warnings now due are queued, for the next pass (or the
        // daemon) to deliver.
        for m in self.sched.msgs.values_mut() {
            m.in_flight = false;
        }
        self.sched.msg_due = 0;
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

    /// A flush pass whose workers left: take in what it queued itself (bounces, delay
    /// warnings) and what is still on disk. True when that gave the workers something.
    fn more_to_send(&mut self) -> bool {
        // Bounded: each round takes mail in or retires it; files in new/ that stay there (a
        // worker's stale copy) must not keep the pass going.
        for round in 0..1000 {
            self.balance();
            if round > 0 {
                self.refill_with(true);
            }
            self.expire();
            self.warn();
            self.pickup();
            if self.ctx.shared.lock().expect("lock").sendable() {
                return true;
            }
            let waiting = self.sched.backlog || !self.sched.waiting.is_empty();
            let mut new = false;
            let _ = self.spool().scan(Queue::New, |_| new = true);
            if !waiting && !new {
                return false;
            }
            if !waiting && self.sched.room() == 0 {
                return false;
            }
        }
        false
    }

    /// Run until SIGTERM/SIGINT; `smtp`: the loopback SMTP listener's sockets, if any.
    fn run(mut self, smtp: listen::Listener) -> Result<()> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        use nix::sys::signal::{SigSet, Signal};
        use nix::sys::signalfd::{SfdFlags, SignalFd};

        let _lock = take_lock(self.spool())?;
        let _pidfile = self
            .spool()
            .write_pidfile()
            .map_err(|e| warn!("cannot write run/relayq.pid: {e}"));
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
        let smtp = smtp.start(&self.cfg);

        self.spawn_workers();
        self.load_queue();
        self.pickup();
        let mut next_cleanup = self.cleanup();
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let more = if self.sched.backlog {
            format!(
                " read (active_limit {}), more on disk read as room frees",
                self.sched.limit
            )
        } else {
            String::new()
        };
        let relays = {
            let g = self.ctx.shared.lock().expect("lock");
            (0..g.routes.len())
                .map(|r| {
                    let names = g.routes[r]
                        .iter()
                        .map(|&i| g.slots[i].name.clone())
                        .collect::<Vec<_>>()
                        .join(", then ");
                    match r {
                        0 => names,
                        _ => format!("{names} for {}", g.ready.map().label(r)),
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        info!(
            "daemon started: {} queued{more}, {} connection(s) to {relays}",
            self.sched.msgs.len() + self.sched.parked.len(),
            self.cfg.queue.connections,
        );
        let mut stopping: Option<Instant> = None;
        loop {
            self.drain_reports();
            while let Ok(req) = flush_rx.try_recv() {
                // Stopping: dropped unanswered, and the client hears that the daemon stops.
                if stopping.is_none() {
                    let n = self.flush_matching(&req.filter, req.privileged);
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
                self.balance();
                if next_cleanup.is_some_and(|t| t <= now()) {
                    next_cleanup = self.cleanup();
                }
            }
            // Sleep until something happens or the next timer is due: no wake-ups when idle.
            let (life, warn_after) = (self.cfg.queue.lifetime.as_secs(), self.cfg.queue.warn_after);
            let mut due = self.sched.next_due(warn_after, life);
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
                            // Waiting in the ready queue (for a relay that is down, say) is
                            // not in flight: nothing to wait for.
                            for job in g.ready.drain_all() {
                                if let Some(m) = self.sched.msgs.get_mut(job.id.as_str()) {
                                    m.in_flight = false;
                                    m.blocked = false;
                                }
                            }
                            drop(g);
                            self.ctx.cv.notify_all();
                        }
                        Ok(Signal::SIGHUP) => {
                            self.reload();
                            smtp.reconfigure(&self.cfg);
                        }
                        Ok(Signal::SIGUSR1) => {
                            // SIGUSR1: only root or the daemon's user can send it.
                            self.flush_matching(&crate::cli::QueueFilter::default(), true);
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
                    let gone = || {
                        QueueId::parse(&id)
                            .is_some_and(|q| !self.ctx.spool.contains(Queue::Active, &q))
                    };
                    let idle = match self.sched.msgs.get(&id) {
                        Some(m) => !m.in_flight,
                        None => self.sched.knows(&id),
                    };
                    if idle && gone() {
                        self.sched.forget(&id);
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
        self.sched.in_flight().saturating_sub(queued)
    }
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

/// `relayq daemon`: run until SIGTERM or SIGINT.
pub fn daemon(cfg: Config, cfg_flag: Option<PathBuf>, foreground: bool) -> Result<i32> {
    crate::log::init(cfg.log.syslog, foreground, false);
    // Bound before Daemon::new drops root to the spool's owner: port 25 needs it.
    let smtp = listen::Listener::bind(&cfg).inspect_err(|e| crate::log::fatal(&e.msg))?;
    Daemon::new(cfg, cfg_flag, false)
        .and_then(|d| d.run(smtp))
        .inspect_err(|e| crate::log::fatal(&e.msg))?;
    Ok(0)
}
