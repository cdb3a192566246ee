//! The worker pool: each worker takes jobs (one message's pending recipients) from the
//! shared ready queue, delivers them on a connection it keeps open and reuses, records each
//! transaction's result in the message's journal (or removes the delivered message) before
//! anything else, and reports the outcome to the main loop. A worker with no usable relay
//! leaves the job in the queue and waits for the next probe. Each worker serves one route
//! (`routes`): its jobs, its relays, its connections.
//!
//! This file owns the jobs, what the workers share (`Shared`, `Ctx`), the worker's loop and
//! one transaction on the wire (`run_job`, pipelined with the previous one's final dot).
//! What a transaction's result means and its commit are in `commit`; the rate-limit and
//! throttling hooks in `throttle`.

use super::commit::{Step, fail_job, finish_tx};
use super::ratelimit::{Hold, RateFile};
use super::relays::{Conn, Slot, connect_any, release};
use super::routes::Ready;
use super::throttle::rate_moved;
use crate::relay::{self, OutEnvelope, OutRcpt};
use crate::spool::{Envelope, Queue, QueueId, Spool};
use crate::state::{self, Event, Journal, State};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A unit of work for a worker: one message's pending recipients.
#[derive(Clone)]
pub(super) struct Job {
    pub(super) id: QueueId,
    pub(super) env: Arc<Envelope>,
    pub(super) body_offset: u64,
    pub(super) pending: Vec<usize>,
    pub(super) arrival: u64,
    /// The trace field sent ahead of the message.
    pub(super) trace: Arc<str>,
}

/// What the main thread and the workers share, under one lock: the ready queue, the relays
/// and their outage state, and the settings a reload changes.
pub(super) struct Shared {
    /// Jobs waiting, per route.
    pub(super) ready: Ready,
    pub(super) slots: Vec<Slot>,
    /// Each route's slots (indices into `slots`), in failover order.
    pub(super) routes: Vec<Vec<usize>>,
    pub(super) stop: bool,
    /// One pass only (flush): workers leave instead of waiting for a relay to come back.
    pub(super) once: bool,
    pub(super) idle_timeout: Duration,
    /// Workers waiting with an open connection, per route: a worker without one leaves
    /// them the jobs.
    pub(super) idle_connected: Vec<usize>,
    /// Bumped by each reload: a connection opened under an older config is not reused.
    pub(super) generation: u64,
    /// Messages deferred by a relay-wide failure detected only after them (the same 4xx at
    /// DATA for several messages in a row): the main loop puts them back in the ready queue,
    /// so they go with everything else when the relay is back.
    pub(super) released: Vec<String>,
    /// `[dkim]`: the signer, replaced by a reload.
    pub(super) dkim: Option<Arc<crate::dkim::Signer>>,
}

impl Shared {
    /// Route `r`'s slots, in failover order.
    fn route_slots(&self, r: usize) -> impl Iterator<Item = &Slot> {
        self.routes
            .get(r)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.slots.get(i))
    }
    /// Whether a new connection may be opened now for route `r`: its first relay usable
    /// (failover order) has room under its current concurrency.
    fn can_connect(&self, r: usize, now: Instant) -> bool {
        self.route_slots(r)
            .find(|s| s.usable(now))
            .is_some_and(|s| s.has_room())
    }
    /// Every route's relays are marked down, or the one its mail goes to has reached its
    /// daily cap or is throttling: nothing more goes in one pass (flush).
    pub(super) fn all_down(&self) -> bool {
        let now = Instant::now();
        (0..self.routes.len()).all(|r| self.route_done(r, now))
    }
    /// Nothing more goes through route `r` in this pass: its relays are all down, or the one
    /// its mail goes to has reached its daily cap or is throttling.
    fn route_done(&self, r: usize, now: Instant) -> bool {
        self.route_down(r)
            || self.slot_for(r, None, now).is_some_and(|i| {
                matches!(
                    self.slots[i].rate_hold(now),
                    Some(Hold::Daily(_) | Hold::Throttled(_))
                )
            })
    }
    /// The relay a worker of route `r` sends its next transaction to: its connection's, else
    /// the route's first usable one (failover order).
    fn slot_for(&self, r: usize, conn: Option<&Conn>, now: Instant) -> Option<usize> {
        conn.map(|c| c.slot).or_else(|| {
            self.routes
                .get(r)?
                .iter()
                .copied()
                .find(|&i| self.slots.get(i).is_some_and(|s| s.usable(now)))
        })
    }
    /// Every relay of route `r` is marked down.
    fn route_down(&self, r: usize) -> bool {
        self.route_slots(r).all(|s| s.down_until.is_some())
    }
    /// Jobs waiting for a route that has a relay not marked down.
    pub(super) fn sendable(&self) -> bool {
        (0..self.routes.len()).any(|r| self.ready.len_of(r) > 0 && !self.route_down(r))
    }
    fn earliest_probe(&self, r: usize) -> Option<Instant> {
        self.route_slots(r)
            .filter(|s| !s.probing)
            .filter_map(|s| s.down_until)
            .min()
    }
    fn idle_count(&mut self, r: usize) -> &mut usize {
        if self.idle_connected.len() <= r {
            self.idle_connected.resize(r + 1, 0);
        }
        &mut self.idle_connected[r]
    }
}

/// What a worker tells the main thread after a job.
pub(super) enum Outcome {
    /// The transaction ran; results are journaled. `message_deferral`: the message as a
    /// whole should back off (4xx at MAIL/DATA/dot, or a dropped connection mid-way);
    /// `removed`: delivered to all, and removed from queue/ by the worker.
    Done {
        message_deferral: bool,
        removed: bool,
    },
    /// No relay could be reached: the job is back in the ready queue.
    Blocked,
    /// The message file vanished or is unreadable (deleted by an admin?).
    Gone(String),
}

/// A worker's outcome for one message.
pub(super) struct Report {
    pub(super) id: String,
    pub(super) outcome: Outcome,
}

/// What every worker (and the socket server) holds: the shared state and its condition
/// variable, the spool, the way back to the main loop (the report channel and a byte on the
/// wake socket), and the run/ notes for `relayq status`.
pub(super) struct Ctx {
    pub(super) shared: Mutex<Shared>,
    pub(super) cv: Condvar,
    pub(super) spool: Spool,
    pub(super) reports: Mutex<mpsc::Sender<Report>>,
    pub(super) wake: UnixStream,
    /// A report's wake-up byte is on its way: the main loop clears this before it reads
    /// the reports, so one byte serves every report sent meanwhile.
    pub(super) woken: std::sync::atomic::AtomicBool,
    /// The latest successful delivery, for `relayq status` (run/last-delivery).
    pub(super) last_delivery: Mutex<state::DeliveryNote>,
    /// Whether the relay is up, or down since when and why (run/relay).
    pub(super) relay_note: Mutex<state::RelayNote>,
    /// The relays' rate limits and daily counts (run/ratelimit).
    pub(super) rate_note: Mutex<state::Note<RateFile>>,
}

impl Ctx {
    /// A message's state, replayed from its journal.
    pub(super) fn load_state(&self, id: &QueueId, nrcpts: usize) -> State {
        State::parse(&self.spool.journal(id), nrcpts)
    }

    /// Append events to a message's journal, durably, updating `st`.
    pub(super) fn record(
        &self,
        id: &QueueId,
        st: &mut State,
        events: &[Event],
    ) -> std::io::Result<()> {
        Journal::new(self.spool.journal_append(id)?).record(st, events)
    }

    fn report(&self, r: Report) {
        if let Ok(tx) = self.reports.lock() {
            let _ = tx.send(r);
        }
        // One byte wakes the main loop for every report sent until it looks (`woken`).
        if !self.woken.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// A message whose body went out and whose final reply is still owed: it is read (and the
/// result journaled) before anything about the next message on the connection.
struct Owed {
    job: Job,
    rcpt: Vec<Result<relay::Reply, relay::Reply>>,
    peer: String,
    started: Instant,
    slot: usize,
}

/// A worker of route `route` (see `routes`): until stopped, or the route is gone (a reload).
pub(super) fn worker(ctx: Arc<Ctx>, route: usize) {
    enum Next {
        /// A job, and the relay its transaction was counted against (rate limits).
        Job(Job, Option<usize>),
        Settle,
        CloseIdle,
        Exit,
    }
    let mut conn: Option<Conn> = None;
    let mut owed: Option<Owed> = None;
    loop {
        let next = {
            let mut g = ctx.shared.lock().expect("lock");
            loop {
                let now = Instant::now();
                if g.stop || route >= g.routes.len() {
                    break Next::Exit;
                }
                // A connection opened under an older config, or to a relay since marked down.
                if let Some(c) = &conn
                    && (c.generation != g.generation
                        || g.slots.get(c.slot).is_none_or(|s| s.down_until.is_some()))
                {
                    break Next::CloseIdle;
                }
                let waiting = g.ready.len_of(route);
                let spare = waiting > *g.idle_count(route);
                // The relay's rate limit: a transaction starts only when it allows one (a
                // worker without a connection opens none while one is idle).
                let slot = g.slot_for(route, conn.as_ref(), now);
                let held = slot.and_then(|i| g.slots[i].rate_hold(now));
                let limited = slot.is_some_and(|i| g.slots[i].limiter.limited());
                let may_open =
                    spare && g.can_connect(route, now) && !(limited && *g.idle_count(route) > 0);
                if waiting > 0 && held.is_none() && (conn.is_some() || may_open) {
                    match g.ready.pop_front(route) {
                        Some(j) => {
                            if let Some(s) = slot.and_then(|i| g.slots.get_mut(i)) {
                                s.limiter.take(now, state::now(), j.pending.len() as u64);
                            }
                            break Next::Job(j, slot);
                        }
                        None => continue,
                    }
                }
                if owed.is_some() {
                    break Next::Settle;
                }
                if g.once && (waiting == 0 || (conn.is_none() && g.route_done(route, now))) {
                    break Next::Exit;
                }
                let deadline = match &conn {
                    Some(c) => Some(c.last_used + g.idle_timeout),
                    None if waiting > 0 => g.earliest_probe(route),
                    None => None,
                };
                let unix = state::now();
                let deadline = match held.filter(|_| waiting > 0) {
                    Some(h) => {
                        Some(deadline.map_or(h.until(now, unix), |d| d.min(h.until(now, unix))))
                    }
                    None => deadline,
                };
                let connected = conn.is_some();
                if connected {
                    *g.idle_count(route) += 1;
                }
                g = match deadline {
                    Some(d) if d <= now && connected => {
                        *g.idle_count(route) -= 1;
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
                    *g.idle_count(route) -= 1;
                }
            }
        };
        match next {
            Next::Exit => {
                settle(&ctx, &mut conn, &mut owed);
                if let Some(c) = conn.take() {
                    release(&ctx, c, true);
                }
                return;
            }
            Next::CloseIdle => {
                settle(&ctx, &mut conn, &mut owed);
                if let Some(c) = conn.take() {
                    release(&ctx, c, true);
                }
            }
            Next::Settle => settle(&ctx, &mut conn, &mut owed),
            Next::Job(job, permit) => {
                if let Some(outcome) = run_job(&ctx, &mut conn, &mut owed, &job, permit, route) {
                    ctx.report(Report {
                        id: job.id.to_string(),
                        outcome,
                    });
                }
            }
        }
    }
}

/// Read the owed final reply, if any, and journal that message's result (or remove it).
fn settle(ctx: &Ctx, conn: &mut Option<Conn>, owed: &mut Option<Owed>) {
    let Some(o) = owed.take() else {
        return;
    };
    let res = match conn.as_mut() {
        Some(c) => c.session.finish_dot(o.rcpt),
        None => Err(relay::SessionError {
            stage: relay::Stage::Dot,
            kind: relay::Kind::Network("connection lost".into()),
        }),
    };
    let outcome = match res {
        Ok(tx) => finish_tx(ctx, &o.job, &tx, &o.peer, o.started, o.slot),
        Err(e) => match fail_job(ctx, conn, &o.job, e, &o.peer, o.started, o.slot, false) {
            Step::Out(out) => out,
            Step::Retry => requeue(ctx, &o.job),
        },
    };
    ctx.report(Report {
        id: o.job.id.to_string(),
        outcome,
    });
}

/// Put a job back at the head of the ready queue, untried: no deferral, no backoff.
pub(super) fn requeue(ctx: &Ctx, job: &Job) -> Outcome {
    ctx.shared
        .lock()
        .expect("lock")
        .ready
        .push_front(job.clone());
    ctx.cv.notify_all();
    Outcome::Blocked
}

/// Deliver one job on the current connection (connecting first if needed). Where the relay
/// pipelines, the body's final dot is left owed (`owed`) to go out with the next message's
/// commands, and None is returned: the result is reported when that reply is read.
fn run_job(
    ctx: &Ctx,
    conn: &mut Option<Conn>,
    owed: &mut Option<Owed>,
    job: &Job,
    mut permit: Option<usize>,
    route: usize,
) -> Option<Outcome> {
    let dkim = dkim_field(ctx, job);
    for _attempt in 0..3 {
        if conn.is_none() {
            settle(ctx, conn, owed);
            *conn = connect_any(ctx, route);
        }
        // Counted against the relay it goes to (none: not sent).
        let to = conn.as_ref().map(|c| c.slot);
        rate_moved(ctx, permit, to, job.pending.len());
        permit = to;
        let Some(c) = conn.as_mut() else {
            return Some(requeue(ctx, job));
        };
        let (file, meta) = match ctx.spool.open_file(Queue::Active, job.id.as_str()) {
            Ok(x) => x,
            Err(e) => return Some(Outcome::Gone(e.to_string())),
        };
        let size =
            meta.len().saturating_sub(job.body_offset) + (job.trace.len() + dkim.len()) as u64;
        let mut file = BufReader::with_capacity(64 * 1024, file);
        if file.seek(SeekFrom::Start(job.body_offset)).is_err() {
            return Some(Outcome::Gone("cannot seek".into()));
        }
        // Our trace field first: the daemon's, from what the kernel told us, not the client;
        // ahead of it the DKIM signature over all that follows.
        let mut body = dkim.as_bytes().chain(job.trace.as_bytes()).chain(file);
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
        let reused = c.reused;
        let chain = c.session.can_chain(&out, size);
        let sent = if chain {
            // One write: the previous body's final dot, then this MAIL, RCPTs, DATA.
            c.session.begin(&out, size);
            c.session.flush()
        } else {
            Ok(())
        };
        // The previous message's result first, before anything about this one.
        if owed.is_some() {
            settle(ctx, conn, owed);
        }
        let Some(c) = conn.as_mut() else {
            // The connection failed under the previous message: this one was not tried.
            continue;
        };
        let res = if chain {
            match sent.and_then(|()| c.session.read_begun(out.rcpts.len())) {
                Ok(Some(tx)) => Ok(tx),
                Ok(None) => match c.session.body(&mut body) {
                    Ok(()) => {
                        *owed = Some(Owed {
                            job: job.clone(),
                            rcpt: c.session.take_opened(),
                            peer: c.session.peer().to_string(),
                            started,
                            slot: c.slot,
                        });
                        c.reused = true;
                        c.last_used = Instant::now();
                        return None;
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        } else {
            c.session.send(&out, &mut body, size)
        };
        let peer = c.session.peer().to_string();
        let slot = c.slot;
        c.reused = true;
        c.last_used = Instant::now();
        match res {
            Ok(tx) => return Some(finish_tx(ctx, job, &tx, &peer, started, slot)),
            Err(e) => match fail_job(ctx, conn, job, e, &peer, started, slot, reused) {
                Step::Out(o) => return Some(o),
                Step::Retry => continue,
            },
        }
    }
    Some(requeue(ctx, job))
}

/// The DKIM-Signature field for `job` (over its trace field and the queue file, as they go
/// out), or "" when `[dkim]` is off or the message is not signed (logged).
fn dkim_field(ctx: &Ctx, job: &Job) -> String {
    let Some(signer) = ctx.shared.lock().expect("lock").dkim.clone() else {
        return String::new();
    };
    let mut file = match ctx.spool.open_file(Queue::Active, job.id.as_str()) {
        Ok((f, _)) => BufReader::with_capacity(64 * 1024, f),
        // Gone: the attempt finds out and says so.
        Err(_) => return String::new(),
    };
    if file.seek(SeekFrom::Start(job.body_offset)).is_err() {
        return String::new();
    }
    signer.field(job.id.as_str(), &mut job.trace.as_bytes().chain(file))
}
