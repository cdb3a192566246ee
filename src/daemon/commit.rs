//! A transaction's result, as a worker handles it before anything else: what a failure
//! means (reconnect on a new connection, a per-session limit, the configured sender refused:
//! the relay held as in an outage; else each pending recipient deferred or failed), what a
//! run of temporary failures at DATA says about the relay (down), and the commit: the
//! results journaled, or the message removed when all are delivered.

use super::relays::{
    Conn, log_sender_refused, note_relay, refused_sender_reason, release, sender_refused,
};
use super::throttle::{throttle_reply, throttled, throttling};
use super::worker::{Ctx, Job, Outcome, requeue};
use crate::relay;
use crate::spool::Queue;
use crate::state::{self, Event, RcptState, now};
use log::{error, info, warn};
use std::io::Write;
use std::time::Instant;

/// After a failed transaction: try again on a new connection, or the outcome.
pub(super) enum Step {
    Retry,
    Out(Outcome),
}

/// A per-session limit at MAIL (OpenSMTPD's `452 4.5.3 Too many messages`, a `421` at MAIL)
/// on a connection that already carried messages: not a failure, go on on a new connection.
fn session_limit(e: &relay::SessionError) -> bool {
    use relay::{Kind, Stage};
    let relay::SessionError {
        stage: Stage::Mail,
        kind: Kind::Reply(r),
    } = e
    else {
        return false;
    };
    let t = r.text.to_ascii_lowercase();
    r.code == 421 || (r.code == 452 && (t.contains("4.5.3") || t.contains("too many")))
}

/// A failed transaction (the connection is closed): reconnect when the connection was the
/// problem and not the message, hold the message when the configured sender is refused,
/// otherwise journal the deferral or failure of every pending recipient.
#[allow(clippy::too_many_arguments)]
pub(super) fn fail_job(
    ctx: &Ctx,
    conn: &mut Option<Conn>,
    job: &Job,
    e: relay::SessionError,
    peer: &str,
    started: Instant,
    slot: usize,
    reused: bool,
) -> Step {
    let env = &job.env;
    let broken = conn.take();
    // A reused connection that the relay closed while idle: reconnect once.
    if reused && e.stage_is_before_data() && e.is_network() {
        if let Some(b) = broken {
            release(ctx, b, false);
        }
        return Step::Retry;
    }
    if let Some(b) = broken {
        release(ctx, b, !e.is_network());
    }
    if reused && session_limit(&e) {
        info!(
            "{}: the relay ends the session ({e}): going on on a new connection",
            job.id
        );
        return Step::Retry;
    }
    // The relay throttles (not a per-session limit): not deferred, it goes again when the
    // relay allows.
    if let relay::Kind::Reply(r) = &e.kind
        && throttling(r)
    {
        throttled(ctx, slot, job.pending.len(), &r.to_string());
        return Step::Out(requeue(ctx, job));
    }
    if sender_refused(&e) {
        let reason = refused_sender_reason(&env.sender, &e);
        if let Some(o) = hold_for_sender(ctx, job, slot, reason) {
            return Step::Out(o);
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
        if let Some(s) = g.slots.get_mut(slot) {
            s.mail_tempfails += 1;
            if s.mail_tempfails >= 5 {
                s.mail_tempfails = 0;
                s.mark_down(false, format!("the relay {}: {reply}", e.down_words()));
                s.mail_probe = true;
                warn!(
                    "relay {} {} ({reply}): treating it as down, probing every {}s",
                    s.name,
                    e.down_words(),
                    s.interval().as_secs()
                );
                note_relay(ctx, &g);
            }
        }
    }
    Step::Out(Outcome::Done {
        message_deferral: !perm,
        removed: false,
    })
}

/// The relay refused `job`'s sender. When it is the configured sender (bounces use it too;
/// for a sender route, the sender its probes use), that is a relay-wide configuration
/// problem: the relay is marked down and the message waits, untried, as in an outage.
/// None when the sender is another one.
fn hold_for_sender(ctx: &Ctx, job: &Job, slot: usize, reason: String) -> Option<Outcome> {
    let sender = &job.env.sender;
    let mut g = ctx.shared.lock().expect("lock");
    if !g
        .slots
        .get(slot)
        .is_some_and(|s| s.probe_sender.eq_ignore_ascii_case(sender))
    {
        return None;
    }
    if let Some(s) = g.slots.get_mut(slot)
        && s.down_until.is_none()
    {
        s.mark_down(true, reason);
        s.mail_probe = true;
        log_sender_refused(&s.name, &s.reason, sender, s.interval().as_secs());
        note_relay(ctx, &g);
    }
    g.ready.push_front(job.clone());
    drop(g);
    ctx.cv.notify_all();
    Some(Outcome::Blocked)
}

/// A refusal after DATA that names the sender, not the message: providers check the
/// sender (and From:) only there (SES: "Email address is not verified").
fn sender_refused_late(r: &relay::Reply) -> bool {
    let t = r.text.to_ascii_lowercase();
    r.is_perm()
        && [
            "not verified",
            "identities failed",
            "not authorized to send",
            "not owned by user",
            "sender address rejected",
            "sendasdenied",
            "not allowed to send as",
        ]
        .iter()
        .any(|p| t.contains(p))
}

/// How many consecutive messages must meet the same temporary failure at DATA or after the
/// dot before the relay counts as down (an outage, not a property of each message).
const DATA_TEMPFAILS_DOWN: u32 = 3;

/// A transaction that ran: first what it says about the relay (the configured sender refused
/// after DATA; the same 4xx at DATA for several messages in a row), then its results,
/// journaled at once.
pub(super) fn finish_tx(
    ctx: &Ctx,
    job: &Job,
    tx: &relay::TxResult,
    peer: &str,
    started: Instant,
    slot: usize,
) -> Outcome {
    // The relay throttles (at DATA, after the dot, or every recipient): not sent, not
    // deferred; it goes again when the relay allows.
    if let Some(r) = throttle_reply(tx) {
        throttled(ctx, slot, job.pending.len(), &r.to_string());
        return requeue(ctx, job);
    }
    match &tx.data {
        Some(Err(r)) if sender_refused_late(r) => {
            let reason = format!(
                "the relay refuses the sender <{}> after DATA: {}",
                job.env.sender, r.text
            );
            if let Some(o) = hold_for_sender(ctx, job, slot, reason) {
                return o;
            }
        }
        Some(Err(r)) if r.is_temp() => {
            let mut g = ctx.shared.lock().expect("lock");
            if let Some(s) = g.slots.get_mut(slot) {
                if s.down_until.is_some() {
                    // Found down meanwhile: this one waits for the relay with the rest.
                    drop(g);
                    return requeue(ctx, job);
                }
                if s.data_tempfail_code == r.code {
                    s.data_tempfails += 1;
                } else {
                    s.data_tempfail_code = r.code;
                    s.data_tempfails = 1;
                    s.data_deferred.clear();
                }
                if s.data_tempfails >= DATA_TEMPFAILS_DOWN {
                    s.data_tempfails = 0;
                    s.mark_down(
                        false,
                        format!("the relay refuses every message at DATA: {r}"),
                    );
                    warn!(
                        "relay {} answers {} to every message: treating it as down, probing every {}s",
                        s.name,
                        r.code,
                        s.interval().as_secs()
                    );
                    // Those deferred just before go again with everything else on recovery.
                    let ids = std::mem::take(&mut s.data_deferred);
                    g.released.extend(ids);
                    note_relay(ctx, &g);
                    drop(g);
                    let _ = (&ctx.wake).write(&[1]);
                    return requeue(ctx, job);
                }
                s.data_deferred.push(job.id.to_string());
            }
        }
        _ => {}
    }
    let (deferral, removed) = record_tx(ctx, job, tx, peer, started);
    // The relay took a MAIL: it is not refusing everything; and a message it took ends a
    // run of DATA failures.
    if let Some(s) = ctx.shared.lock().expect("lock").slots.get_mut(slot) {
        s.mail_tempfails = 0;
        if matches!(tx.data, Some(Ok(_))) {
            s.limiter.accepted();
            s.data_tempfails = 0;
            s.data_deferred.clear();
        }
    }
    Outcome::Done {
        message_deferral: deferral,
        removed,
    }
}

/// Record a finished transaction at once (commit), then log. Returns whether the message
/// should back off as a whole, and whether it was delivered to all and removed.
fn record_tx(
    ctx: &Ctx,
    job: &Job,
    tx: &relay::TxResult,
    peer: &str,
    started: Instant,
) -> (bool, bool) {
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
    (any_temp, removed)
}
