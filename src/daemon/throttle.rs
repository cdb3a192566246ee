//! The workers' side of the relays' send-rate limits (`ratelimit` is the pure limiter each
//! relay's slot holds): which replies are a relay throttling relayq, pausing the relay when
//! one comes, moving a transaction's count to the relay it really went to (failover), and
//! the content of run/ratelimit for `relayq status`.

use super::ratelimit;
use super::relays::Slot;
use super::worker::Ctx;
use crate::relay;
use crate::state::now;
use log::info;
use std::time::Instant;

/// A `421`/`454` that says the relay is limiting relayq (SES's "454 Throttling failure"):
/// the relay is paused (ratelimit), the message not deferred. Other temporary refusals,
/// worded so or not, are deferrals as before.
pub(super) fn throttling(r: &relay::Reply) -> bool {
    matches!(r.code, 421 | 454) && r.is_throttling()
}

/// The throttling reply in a transaction that ran, if the relay throttled it (at DATA, after
/// the dot, or every recipient).
pub(super) fn throttle_reply(tx: &relay::TxResult) -> Option<&relay::Reply> {
    match &tx.data {
        Some(Err(r)) => throttling(r).then_some(r),
        Some(Ok(_)) => None,
        None => tx
            .rcpt
            .iter()
            .map(|x| x.as_ref().err().filter(|r| throttling(r)))
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.first().copied()),
    }
}

/// A transaction of `rcpts` recipients counted against relay `from` goes to relay `to`
/// instead (failover while connecting), or nowhere (None: no connection): move its count.
pub(super) fn rate_moved(ctx: &Ctx, from: Option<usize>, to: Option<usize>, rcpts: usize) {
    if from == to {
        return;
    }
    let mut g = ctx.shared.lock().expect("lock");
    let (t, unix) = (Instant::now(), now());
    if let Some(s) = from.and_then(|i| g.slots.get_mut(i)) {
        s.limiter.refund(unix, rcpts as u64);
    }
    if let Some(s) = to.and_then(|i| g.slots.get_mut(i)) {
        s.limiter.take(t, unix, rcpts as u64);
    }
}

/// The relay answered a throttling reply (`421`/`454` "rate exceeded"): pause it (every
/// connection), and take the transaction back from the daily count. The message is not
/// deferred: the caller puts it back in the ready queue, to go when the pause is over.
pub(super) fn throttled(ctx: &Ctx, slot: usize, rcpts: usize, reply: &str) {
    let mut g = ctx.shared.lock().expect("lock");
    if let Some(s) = g.slots.get_mut(slot) {
        s.limiter.refund(now(), rcpts as u64);
        let pause = s.limiter.throttled(Instant::now());
        info!(
            "relay {} is throttling relayq (a rate limit): {reply}; waiting for the rate limit, sending again in {:.1}s",
            s.name,
            pause.as_secs_f64()
        );
    }
    drop(g);
    ctx.cv.notify_all();
}

/// run/ratelimit's content: every limited relay's state.
pub(super) fn rate_file(slots: &[Slot]) -> ratelimit::RateFile {
    let (t, unix) = (Instant::now(), now());
    ratelimit::RateFile(
        slots
            .iter()
            .filter(|s| s.limiter.limited())
            .map(|s| s.limiter.record(&s.rate_key, t, unix))
            .collect(),
    )
}
