//! Flushing: a flush request to the running daemon (the socket's `FLSH`/`FLSQ`, SIGUSR1:
//! `flush_matching`, the selected messages tried now, ignoring backoff), and `relayq flush`
//! without a daemon, one pass of the same machinery (`run_once`: until nothing it could
//! send now is left), with its progress line and the counts its summary reports (`Stats`).

use super::socket::selected;
use super::{Daemon, Stats, take_lock};
use crate::error::Result;
use crate::spool::{self, Queue};
use std::collections::HashSet;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

impl Daemon {
    /// Flush (the socket, SIGUSR1): the messages `filter` selects are tried now, ignoring
    /// backoff; the others keep their timers. Returns how many of them are being tried.
    /// Only a flush from root or the spool's owner (`privileged`) cuts a down relay's probe
    /// wait short: an ordinary user looping `relayq flush` cannot make the daemon hammer a
    /// relay that is refusing connections.
    pub(super) fn flush_matching(
        &mut self,
        filter: &crate::cli::QueueFilter,
        privileged: bool,
    ) -> usize {
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

    /// One pass (flush): deliver what can be delivered now, then return. The pass goes on
    /// until nothing it could send now is left: mail read as room frees, and the bounces and
    /// delay warnings it queued itself. Each message is tried once.
    pub(super) fn run_once(
        mut self,
        filter: &crate::cli::QueueFilter,
        progress: bool,
    ) -> Result<Stats> {
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
    pub(super) fn more_to_send(&mut self) -> bool {
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
