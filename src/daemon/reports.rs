//! The main thread's side of what happens to a message, applying the scheduler's decisions:
//! a worker's report (`handle`: the journal replayed, the next attempt or its backoff),
//! mail a relay outage released (`take_released`), the ready queue (`enqueue`, timers due),
//! expiry, and the end of a message (`finish`: removed, or bounced and moved to failed/),
//! with the bounces and delay warnings it queues through `crate::bounce`.

use super::Daemon;
use super::scheduler::{Msg, Retire, expiry_events, next_attempt, retire};
use super::worker::{Outcome, Report};
use crate::bounce;
use crate::spool::Queue;
use crate::state::{Event, RcptState, now};
use log::{error, info, warn};
use std::collections::HashSet;
use std::io::Read;

/// How long before a DSN that could not be queued is tried again (seconds).
const DSN_RETRY: u64 = 300;

impl Daemon {
    pub(super) fn drain_reports(&mut self) {
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
    pub(super) fn take_released(&mut self) {
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
    pub(super) fn release_now(&mut self, ids: HashSet<String>) {
        if !ids.is_empty() {
            let jobs = self.sched.flush(&ids);
            self.ctx.shared.lock().expect("lock").ready.extend(jobs);
            // Parked meanwhile (their envelope back on disk): read again, to go at once.
            if self.sched.flush_parked(|id| ids.contains(id)) > 0 {
                self.refill();
            }
            self.grow_workers();
            self.ctx.cv.notify_all();
        }
    }

    /// Start a message (put its job in the ready queue) unless it is in flight already.
    pub(super) fn enqueue(&mut self, id: &str) {
        let Some(job) = self.sched.start(id) else {
            return;
        };
        self.ctx.shared.lock().expect("lock").ready.push_back(job);
        self.grow_workers();
        self.ctx.cv.notify_all();
    }

    /// Everything due now goes to the ready queue.
    pub(super) fn run_timers(&mut self) {
        for id in self.sched.take_due(now()) {
            self.enqueue(&id);
        }
    }

    /// Messages past their lifetime: give up on their pending recipients.
    pub(super) fn expire(&mut self) {
        let t = now();
        if t < self.sched.msg_due {
            return;
        }
        let lifetime = self.cfg.queue.lifetime;
        for id in self.sched.expired(t, lifetime.as_secs()) {
            let events = expiry_events(&self.sched.msgs[&id].state, t, lifetime);
            if let Err(e) = self.journal(&id, &events) {
                error!("{id}: cannot record expiry: {e}");
                continue;
            }
            let m = &self.sched.msgs[&id];
            for e in &events {
                if let Event::Failed(i, _, r) = e {
                    info!("{id}: to=<{}>, status=expired ({r})", m.env.rcpts[*i].addr);
                }
            }
            self.sched.cancel(&id);
            self.finish(&id);
        }
    }

    /// A worker finished a job.
    pub(super) fn handle(&mut self, r: Report) {
        let (after, life) = (self.cfg.queue.warn_after, self.cfg.queue.lifetime.as_secs());
        self.sched.touch(&r.id, after, life);
        let Some(m) = self.sched.msgs.get_mut(&r.id) else {
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
                self.sched.msgs.remove(&r.id);
                self.pickup_released(&r.id);
            }
            Outcome::Done {
                message_deferral,
                removed,
            } => {
                if removed || !self.ctx.spool.contains(Queue::Active, &m.id) {
                    // Delivered to all and removed by the worker; or held (or deleted) while
                    // it was being sent, its journal has the results (and it may be back
                    // in new/, released). A file the worker removed cannot be in new/: it
                    // was in queue/ until then.
                    self.stats.delivered += m.state.pending().count() as u64;
                    self.sched.msgs.remove(&r.id);
                    if !removed {
                        self.pickup_released(&r.id);
                    }
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
                let Some(m) = self.sched.msgs.get_mut(&r.id) else {
                    return;
                };
                let t = now();
                let (next, attempts) = next_attempt(&self.cfg.queue, &m.state, message_deferral, t);
                if let Err(e) = self
                    .ctx
                    .record(&m.id, &mut m.state, &[Event::Next(next, attempts)])
                {
                    error!("{}: cannot record next attempt: {e}", r.id);
                }
                self.stats.deferred += 1;
                if self.once {
                    // One pass only: the next run (or the daemon) picks it up.
                    self.passed.push(r.id);
                } else if next == t {
                    self.enqueue(&r.id);
                } else {
                    self.sched.at(next, &r.id);
                }
            }
        }
    }

    /// All recipients are done: bounce the failed ones not bounced yet, then retire the
    /// message.
    pub(super) fn finish(&mut self, id: &str) {
        let Some(m) = self.sched.msgs.get(id) else {
            return;
        };
        let qid = m.id.clone();
        match retire(&m.state) {
            Retire::Remove => {
                match self.spool().remove(&qid, Queue::Active) {
                    Ok(()) => info!("{id}: removed"),
                    Err(e) => warn!("{id}: cannot remove it from queue/: {e}"),
                }
                self.sched.msgs.remove(id);
                return;
            }
            Retire::Bounce => {
                if !self.bounce_failed(id) {
                    self.sched.at(now() + DSN_RETRY, id);
                    return;
                }
                let _ = self.journal(id, &[Event::Bounced]);
            }
            Retire::Fail => {}
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
        self.sched.msgs.remove(id);
    }

    /// Bounce the recipients that failed and have not been reported yet (those whose NOTIFY
    /// allows it), as soon as they fail: the sender learns of a bad address now, not when
    /// the message's last recipient is done. Then `B <i>` journal lines, so that each is
    /// bounced once (the DSN is durable first: a crash in between duplicates it, never loses
    /// it). False when the bounce could not be queued: try again later.
    fn bounce_failed(&mut self, id: &str) -> bool {
        let Some(m) = self.sched.msgs.get(id) else {
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
            match self.queue_dsn(m, &notify, bounce::Kind::Failure, now()) {
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
    pub(super) fn warn(&mut self) {
        let (after, life) = (self.cfg.queue.warn_after, self.cfg.queue.lifetime.as_secs());
        if now() < self.sched.msg_due {
            return;
        }
        let due = self.sched.warnings_due(now(), after, life);
        self.warn_these(due);
    }

    /// The delay warnings of messages `ids` (due now).
    pub(super) fn warn_these(&mut self, ids: Vec<String>) {
        let t = now();
        let life = self.cfg.queue.lifetime.as_secs();
        for id in ids {
            let m = &self.sched.msgs[&id];
            if !self.ctx.spool.contains(Queue::Active, &m.id) {
                // Held or deleted meanwhile: not due here (a released message is admitted
                // again, from its journal).
                if let Some(m) = self.sched.msgs.get_mut(&id) {
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
                match self.queue_dsn(m, &delayed, kind, t) {
                    Ok(Some(did)) => info!("{id}: sender delay notification: {did}"),
                    Ok(None) => {}
                    Err(e) => {
                        error!("{id}: cannot create delay notification: {e}; will try again later");
                        if let Some(m) = self.sched.msgs.get_mut(&id) {
                            m.warn_retry = t + DSN_RETRY;
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

    /// Queue a DSN about `m` (see `bounce::queue_dsn`), reporting the first relay of its
    /// route as the Remote-MTA.
    fn queue_dsn(
        &self,
        m: &Msg,
        rcpts: &[usize],
        kind: bounce::Kind,
        now: u64,
    ) -> crate::error::Result<Option<String>> {
        let remote = {
            let g = self.ctx.shared.lock().expect("lock");
            let r = g.ready.map().route(&m.env.sender);
            g.routes
                .get(r)
                .and_then(|v| v.first())
                .and_then(|&i| g.slots.get(i))
                .map(|s| s.target.host.clone())
        };
        let reporter = bounce::Reporter {
            spool: self.spool(),
            cfg: &self.cfg,
            fqdn: &self.fqdn,
            remote: remote.as_deref(),
        };
        bounce::queue_dsn(&reporter, &m.queued(), rcpts, kind, now)
    }
}
