//! The worker pool: each worker takes jobs (one message's pending recipients) from the
//! shared ready queue, delivers them on a connection it keeps open and reuses, records each
//! transaction's result in the message's journal (or removes the delivered message) before
//! anything else, and reports the outcome to the main loop. A worker with no usable relay
//! leaves the job in the queue and waits for the next probe.

use super::relays::{
    Conn, Slot, connect_any, log_sender_refused, note_relay, refused_sender_reason, sender_refused,
};
use crate::relay::{self, OutEnvelope, OutRcpt};
use crate::spool::{Envelope, Queue, QueueId, Spool};
use crate::state::{self, Event, Journal, RcptState, State, now};
use log::{error, info, warn};
use std::collections::VecDeque;
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
    pub(super) ready: VecDeque<Job>,
    pub(super) slots: Vec<Slot>,
    pub(super) stop: bool,
    /// One pass only (flush): workers leave instead of waiting for a relay to come back.
    pub(super) once: bool,
    pub(super) idle_timeout: Duration,
    /// Workers waiting with an open connection: a worker without one leaves them the jobs.
    pub(super) idle_connected: usize,
    /// Bumped by each reload: a connection opened under an older config is not reused.
    pub(super) generation: u64,
    /// The sender local mail and bounces go out as: a 5xx to it at MAIL is a relay-wide
    /// configuration problem, not a property of the message.
    pub(super) relay_sender: String,
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
pub(super) enum Outcome {
    /// The transaction ran; results are journaled. `message_deferral`: the message as a
    /// whole should back off (4xx at MAIL/DATA/dot, or a dropped connection mid-way).
    Done { message_deferral: bool },
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
    /// The latest successful delivery, for `relayq status` (run/last-delivery).
    pub(super) last_delivery: Mutex<state::DeliveryNote>,
    /// Whether the relay is up, or down since when and why (run/relay).
    pub(super) relay_note: Mutex<state::RelayNote>,
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
        let _ = (&self.wake).write(&[1]);
    }
}

pub(super) fn worker(ctx: Arc<Ctx>) {
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
            .saturating_sub(job.body_offset)
            + job.trace.len() as u64;
        let mut file = BufReader::with_capacity(64 * 1024, file);
        if file.seek(SeekFrom::Start(job.body_offset)).is_err() {
            return Outcome::Gone("cannot seek".into());
        }
        // Our trace field first: the daemon's, from what the kernel told us, not the client.
        let mut body = job.trace.as_bytes().chain(file);
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
                        g.slots[slot]
                            .mark_down(false, format!("the relay {}: {reply}", e.down_words()));
                        g.slots[slot].mail_probe = true;
                        note_relay(ctx, &g.slots);
                        warn!(
                            "relay {} {} ({reply}): treating it as down, probing every {}s",
                            g.slots[slot].name,
                            e.down_words(),
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
