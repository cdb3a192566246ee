//! The flush daemon: picks up new mail (inotify on `new/`, no polling), schedules it, and
//! drains it through the relay with a small pool of reused connections. `relayq flush` is
//! one pass of the same machinery.
//!
//! This file owns the `Daemon` (the main thread): its state, start-up (the lock, the spool
//! and group checks), its main loop (`run`: signals, inotify, timers, forgetting what an
//! admin took out of queue/), starting workers, the run/ notes, cleanup, reload, and the
//! entry point `daemon()`. Beside it: `pickup` (new/ into queue/, admitting a queue file),
//! `backlog` (the bounded active queue: parking, and reading mail on disk oldest first as
//! room frees), `scheduler` (which message is tried when: timers, backoff, expiry, delay
//! warnings; pure decisions), `reports` (applying them: a worker's report, expiry, bounces,
//! delay warnings, retiring), `flush` (flush requests, and `relayq flush`'s one pass),
//! `worker` (the pool that delivers) with `commit` (a transaction's result) and `throttle`
//! (the rate-limit hooks; `ratelimit` the limiter), `relays` (relay selection and outage
//! probing), `routes` (sender routes), `socket` (the local socket; `flush()`), `listen`
//! (the loopback SMTP listener). Bounces and delay warnings are composed by `crate::bounce`.
//!
//! Commit rule: after the relay's final 250 a worker records the result (or unlinks the
//! message) before it does anything else, so a crash can at worst resend that one message.

mod backlog;
mod commit;
mod flush;
mod listen;
mod pickup;
pub mod ratelimit;
mod relays;
mod reports;
pub mod routes;
mod scheduler;
mod socket;
mod throttle;
mod worker;

/// The clock lives in `state`; kept here for the callers that know it as `daemon::now`.
pub use crate::state::now;
pub use relays::resolved_targets;
pub use socket::flush;

use crate::config::Config;
use crate::error::{Class, Error, Result};
use crate::spool::{Layout, Queue, QueueId, Spool};
use crate::state::{self, Event};
use log::{error, info, warn};
use relays::build_slots;
use scheduler::Schedule;
use socket::{FlushReq, listen, serve_socket};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsFd;
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

    /// Start the workers the work needs: a route gets one more for each job waiting beyond
    /// those started, up to `queue.connections` (a flush starts them all at once). An idle
    /// daemon runs none: their stacks and malloc arenas were most of its memory (20 workers:
    /// 4.7 MiB idle). Started workers stay until the daemon stops or their route goes; a
    /// reload that lowered `connections` leaves the extra ones idle (the relay's cap keeps
    /// them off the wire).
    fn spawn_workers(&mut self) {
        self.start_workers(self.once);
    }

    /// The daemon's mail waits for a worker: more of them if the route has room. A flush
    /// pass starts its workers for each round itself (`spawn_workers`), and they leave when
    /// the round has nothing left.
    fn grow_workers(&mut self) {
        if !self.once {
            self.start_workers(false);
        }
    }

    fn start_workers(&mut self, all: bool) {
        let waiting: Vec<usize> = {
            let g = self.ctx.shared.lock().expect("lock");
            (0..g.routes.len()).map(|r| g.ready.len_of(r)).collect()
        };
        if self.workers.is_empty() {
            // None started yet, or a flush round's joined.
            self.route_workers.clear();
        }
        self.route_workers.resize(waiting.len(), 0);
        let cap = self.cfg.queue.connections;
        for (route, waiting) in waiting.into_iter().enumerate() {
            let want = if all {
                cap
            } else {
                cap.min(self.route_workers[route] + waiting)
            };
            while self.route_workers[route] < want {
                let c = self.ctx.clone();
                self.workers
                    .push(std::thread::spawn(move || worker(c, route)));
                self.route_workers[route] += 1;
            }
        }
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

    /// Write run/last-delivery, run/relay and run/ratelimit if due (`now`: whatever is pending). True when
    /// a write is still pending.
    fn note_delivery(&self, now: bool) -> bool {
        let relay = self.ctx.relay_note.lock().is_ok_and(|mut n| n.write(now));
        let rates = throttle::rate_file(&self.ctx.shared.lock().expect("lock").slots);
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
