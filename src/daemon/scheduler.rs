//! The scheduler: which queued message is tried when. Owns the tracked messages (`Msg`) and
//! their timers (`Schedule`), the parked messages (waiting out a timer without their envelope
//! in memory: `Schedule::park_idle`), the backoff after a deferral, the queue lifetime (expiry), the
//! delay warning's timing, and what becomes of a message whose recipients are all done. The
//! decisions take the time as a parameter (`now`, unix seconds): the daemon reads the clock
//! (`state::now`) and passes it in, the tests pass any time they like. `reports` applies
//! them (journal lines, bounces and delay warnings, the ready queue); `backlog` owns parking.

use super::worker::Job;
use crate::bounce;
use crate::config;
use crate::spool::{Envelope, QueueId};
use crate::state::{Event, RcptState, State, now};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// A queued message as the main thread tracks it.
pub(super) struct Msg {
    pub(super) id: QueueId,
    pub(super) env: Arc<Envelope>,
    pub(super) body_offset: u64,
    pub(super) arrival: u64,
    pub(super) state: State,
    pub(super) in_flight: bool,
    /// In flight only because no relay could be reached: waiting in the ready queue.
    pub(super) blocked: bool,
    /// Not before this time may the delay warning be tried again (queuing it failed).
    pub(super) warn_retry: u64,
    /// Our trace field, sent ahead of the message (`message::trace_field`).
    pub(super) trace: Arc<str>,
}

impl Msg {
    pub(super) fn new(
        id: QueueId,
        env: Envelope,
        body_offset: u64,
        arrival: u64,
        state: State,
    ) -> Msg {
        Msg {
            id,
            env: Arc::new(env),
            body_offset,
            arrival,
            state,
            in_flight: false,
            blocked: false,
            warn_retry: 0,
            trace: Arc::from(""),
        }
    }

    /// When this message's delay warning is due (unix seconds): `warn_after` after arrival,
    /// if it has not been sent, is not held or being delivered (waiting for an unreachable
    /// relay is not), still has recipients to deliver, and will not expire first. None = no
    /// warning to schedule.
    pub(super) fn warn_at(&self, warn_after: Option<Duration>, lifetime: u64) -> Option<u64> {
        let after = warn_after?.as_secs();
        let busy = self.in_flight && !self.blocked;
        if self.state.warned || busy || self.state.all_done() {
            return None;
        }
        let at = (self.arrival.saturating_add(after)).max(self.warn_retry);
        (at < self.arrival.saturating_add(lifetime)).then_some(at)
    }

    /// Its expiry (unless in flight) or delay warning, whichever comes first.
    fn due(&self, warn_after: Option<Duration>, lifetime: u64) -> Option<u64> {
        let expiry = (!self.in_flight).then_some(self.arrival.saturating_add(lifetime));
        expiry
            .into_iter()
            .chain(self.warn_at(warn_after, lifetime))
            .min()
    }

    /// Past its lifetime at `now`, with recipients left and no worker on it: due for expiry.
    fn expired(&self, now: u64, lifetime: u64) -> bool {
        !self.in_flight && !self.state.all_done() && self.arrival + lifetime <= now
    }

    fn job(&self) -> Job {
        Job {
            id: self.id.clone(),
            env: self.env.clone(),
            body_offset: self.body_offset,
            pending: self.state.pending().collect(),
            arrival: self.arrival,
            trace: self.trace.clone(),
        }
    }

    /// For a DSN about this message.
    pub(super) fn queued(&self) -> bounce::Queued<'_> {
        bounce::Queued {
            id: &self.id,
            env: &self.env,
            body_offset: self.body_offset,
            arrival: self.arrival,
            state: &self.state,
        }
    }
}

/// The tracked messages and when the waiting ones are tried next.
///
/// A message is in one of three places: `msgs` (its envelope and state in memory, at most
/// `limit` of them), `parked` (waiting out a timer: only its ID and when it is due, the
/// envelope re-read from disk then), `waiting` (parked and due, or flushed, waiting for room
/// in `msgs`). Whatever else is in queue/ or new/ is on disk only: `backlog` says there may
/// be such mail, read oldest first as room frees.
pub(super) struct Schedule {
    /// The messages in memory, by queue ID (at most `limit`, a flush aside).
    pub(super) msgs: HashMap<String, Msg>,
    /// (when, queue ID): the next attempt of a message waiting out its backoff; for a parked
    /// message, when it must be read again (attempt, delay warning or expiry).
    pub(super) timers: BTreeSet<(u64, String)>,
    /// Parked messages: queue ID → their timer.
    pub(super) parked: HashMap<String, u64>,
    /// Parked messages now due, oldest first; true: flushed (tried now, ignoring backoff).
    pub(super) waiting: BTreeMap<String, bool>,
    /// Messages given a timer since the last `park_idle`, with that timer.
    pub(super) to_park: Vec<(u64, String)>,
    /// No message in memory has its expiry or delay warning due before this (unix
    /// seconds): until then `expire` and `warn` do not look at every message, as the main
    /// loop would after each report. Lowered (`touch`) for a message read in or reported
    /// on, zero when anything else may have made one due (a reload).
    pub(super) msg_due: u64,
    /// At most this many messages in `msgs` (`queue.active_limit`).
    pub(super) limit: usize,
    /// Mail may be on disk (queue/ or new/) that is in none of the above.
    pub(super) backlog: bool,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::new(usize::MAX)
    }
}

impl Schedule {
    pub(super) fn new(limit: usize) -> Schedule {
        Schedule {
            msgs: HashMap::new(),
            timers: BTreeSet::new(),
            parked: HashMap::new(),
            waiting: BTreeMap::new(),
            to_park: Vec::new(),
            msg_due: 0,
            limit,
            backlog: false,
        }
    }

    /// How many more messages fit in memory.
    pub(super) fn room(&self) -> usize {
        self.limit.saturating_sub(self.msgs.len())
    }

    /// Whether the daemon knows message `id` (in memory, parked or waiting).
    pub(super) fn knows(&self, id: &str) -> bool {
        self.msgs.contains_key(id) || self.parked.contains_key(id) || self.waiting.contains_key(id)
    }

    /// Try message `id` again at `at` (unix seconds). Parked at the next `park_idle`.
    pub(super) fn at(&mut self, at: u64, id: &str) {
        self.timers.insert((at, id.to_string()));
        self.to_park.push((at, id.to_string()));
    }

    /// Drop message `id`'s timers (and its parking).
    pub(super) fn cancel(&mut self, id: &str) {
        self.waiting.remove(id);
        match self.parked.remove(id) {
            Some(due) => {
                self.timers.remove(&(due, id.to_string()));
            }
            None => self.timers.retain(|(_, x)| x != id),
        }
    }

    /// Stop tracking message `id` (its file left queue/ by an admin's hand).
    pub(super) fn forget(&mut self, id: &str) {
        self.msgs.remove(id);
        self.cancel(id);
    }

    /// Mark message `id` in flight: its job for the ready queue, or None when it is unknown
    /// or already in flight.
    pub(super) fn start(&mut self, id: &str) -> Option<Job> {
        let m = self.msgs.get_mut(id)?;
        if m.in_flight {
            return None;
        }
        m.in_flight = true;
        Some(m.job())
    }

    /// Take the timers due at `now`, earliest first: the messages in memory to try now.
    /// Parked ones due join `waiting`, to be read again as room allows.
    pub(super) fn take_due(&mut self, now: u64) -> Vec<String> {
        let mut due = Vec::new();
        while let Some((at, id)) = self.timers.first().cloned() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if self.parked.remove(&id).is_some() {
                self.waiting.insert(id, false);
            } else {
                due.push(id);
            }
        }
        due
    }

    /// Flush: the messages among `ids` waiting out a timer go now (their jobs), ignoring
    /// backoff; the timer of one that is in flight is dropped.
    pub(super) fn flush(&mut self, ids: &HashSet<String>) -> Vec<Job> {
        let waiting: Vec<(u64, String)> = self
            .timers
            .iter()
            .filter(|(_, id)| ids.contains(id))
            .cloned()
            .collect();
        let mut jobs = Vec::new();
        for (at, id) in waiting {
            jobs.extend(self.start(&id));
            if self.msgs.get(&id).is_some_and(|m| m.in_flight) {
                self.timers.remove(&(at, id));
            }
        }
        jobs
    }

    /// The messages past their lifetime at `now`.
    pub(super) fn expired(&self, now: u64, lifetime: u64) -> Vec<String> {
        self.msgs
            .iter()
            .filter(|(_, m)| m.expired(now, lifetime))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The messages whose delay warning is due at `now`.
    pub(super) fn warnings_due(
        &self,
        now: u64,
        warn_after: Option<Duration>,
        lifetime: u64,
    ) -> Vec<String> {
        self.msgs
            .iter()
            .filter(|(_, m)| m.warn_at(warn_after, lifetime).is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// When the main loop must next look: the earliest timer, expiry or delay warning (of a
    /// message in memory; a parked one's are in its timer). Looks at every message only
    /// once `msg_due` has come.
    pub(super) fn next_due(&mut self, warn_after: Option<Duration>, lifetime: u64) -> Option<u64> {
        let timer = self.timers.first().map(|(t, _)| *t);
        if self.msg_due <= now() {
            self.msg_due = self
                .msgs
                .values()
                .filter_map(|m| m.due(warn_after, lifetime))
                .min()
                .unwrap_or(u64::MAX);
        }
        let msgs = (self.msg_due < u64::MAX).then_some(self.msg_due);
        timer.into_iter().chain(msgs).min()
    }

    /// Message `id` was read in or reported on: its expiry or warning may come sooner,
    /// whatever it is doing now (in flight or not).
    pub(super) fn touch(&mut self, id: &str, warn_after: Option<Duration>, lifetime: u64) {
        if let Some(m) = self.msgs.get(id) {
            let expiry = m.arrival.saturating_add(lifetime);
            let warning = warn_after
                .filter(|_| !m.state.warned)
                .map(|a| m.arrival.saturating_add(a.as_secs()).max(m.warn_retry));
            self.msg_due = self.msg_due.min(warning.map_or(expiry, |w| w.min(expiry)));
        }
    }

    pub(super) fn in_flight(&self) -> usize {
        self.msgs.values().filter(|m| m.in_flight).count()
    }
}

/// The delay before a message's next attempt after `attempts` message-level deferrals:
/// retry_min, doubling each time up to retry_max, with ±10% jitter so a burst of deferrals
/// does not come back as one burst.
fn backoff(q: &config::Queue, attempts: u32) -> u64 {
    let mut r = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    backoff_with(q, attempts, u16::from_le_bytes(r))
}

/// `backoff` with the random number given.
fn backoff_with(q: &config::Queue, attempts: u32, random: u16) -> u64 {
    let min = q.retry_min.as_secs().max(1);
    let max = q.retry_max.as_secs().max(min);
    let base = min
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(30))
        .min(max);
    let j = random as u64 % (base / 5 + 1);
    (base - base / 10 + j).max(1)
}

/// After a transaction at `now` that left recipients to do: when the message is tried next,
/// and its count of message-level deferrals. A deferral of the message as a whole backs off;
/// otherwise the others are tried at once.
pub(super) fn next_attempt(
    q: &config::Queue,
    st: &State,
    message_deferral: bool,
    now: u64,
) -> (u64, u32) {
    let attempts = st.attempts + u32::from(message_deferral);
    let delay = if message_deferral {
        backoff(q, attempts)
    } else {
        0
    };
    (now + delay, attempts)
}

/// When a message taken into the queue is first tried.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Start {
    /// Past its lifetime: left for `expire`, which bounces it.
    Expired,
    /// Its journal's next attempt, still ahead.
    At(u64),
    Now,
}

/// The first attempt of a message that arrived at `arrival` and whose journal says `next`.
/// `once` (a flush pass) does not wait for a timer: the next run picks it up.
pub(super) fn start(arrival: u64, next: u64, now: u64, lifetime: u64, once: bool) -> Start {
    if arrival + lifetime <= now {
        Start::Expired
    } else if next > now && !once {
        Start::At(next)
    } else {
        Start::Now
    }
}

/// The journal events that give up a message's remaining recipients at `now`.
pub(super) fn expiry_events(st: &State, now: u64, lifetime: Duration) -> Vec<Event> {
    let days = lifetime.as_secs_f64() / 86400.0;
    st.rcpts
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
                now,
                format!("message expired: undeliverable for {days:.1} days{last}"),
            )
        })
        .collect()
}

/// What becomes of a message whose recipients are all done.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Retire {
    /// Delivered to all: removed.
    Remove,
    /// Some failed and the bounce is still to be queued: then to failed/.
    Bounce,
    /// Some failed, bounced: to failed/.
    Fail,
}

pub(super) fn retire(st: &State) -> Retire {
    if !st.rcpts.iter().any(|r| matches!(r, RcptState::Failed(..))) {
        Retire::Remove
    } else if !st.bounced {
        Retire::Bounce
    } else {
        Retire::Fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Rcpt;

    const DAY: u64 = 86400;

    fn queue_cfg(min: u64, max: u64) -> config::Queue {
        config::Queue {
            retry_min: Duration::from_secs(min),
            retry_max: Duration::from_secs(max),
            ..config::Queue::default()
        }
    }

    /// A message of `n` recipients that arrived at `arrival`, nothing done yet.
    fn msg(arrival: u64, n: usize) -> Msg {
        let env = Envelope {
            sender: "a@example.org".into(),
            rcpts: (0..n)
                .map(|i| Rcpt {
                    addr: format!("r{i}@example.net"),
                    ..Rcpt::default()
                })
                .collect(),
            ..Envelope::default()
        };
        let id = QueueId::parse(&crate::spool::new_id()).expect("a fresh ID parses");
        Msg::new(id, env, 0, arrival, State::new(n))
    }

    fn schedule(msgs: Vec<Msg>) -> Schedule {
        let mut s = Schedule::default();
        for m in msgs {
            s.msgs.insert(m.id.as_str().to_string(), m);
        }
        s
    }

    fn ids(s: &Schedule) -> Vec<String> {
        s.msgs.keys().cloned().collect()
    }

    #[test]
    fn backoff_doubles_from_retry_min_and_caps_at_retry_max() {
        let q = queue_cfg(60, 3600);
        // With the jitter's random number at 0 the delay is 90% of the base.
        let base = |a| backoff_with(&q, a, 0) * 10 / 9;
        assert_eq!(base(0), 60, "no deferral yet: retry_min");
        assert_eq!(base(1), 60);
        assert_eq!(base(2), 120);
        assert_eq!(base(3), 240);
        assert_eq!(base(6), 1920);
        assert_eq!(base(7), 3600, "3840 capped");
        assert_eq!(base(40), 3600, "no overflow");
        assert_eq!(base(u32::MAX), 3600);
    }

    #[test]
    fn backoff_jitter_is_ten_percent_either_way() {
        let q = queue_cfg(100, 100);
        assert_eq!(backoff_with(&q, 1, 0), 90);
        assert_eq!(backoff_with(&q, 1, 20), 110);
        assert_eq!(backoff_with(&q, 1, 21), 90, "modulo the range");
        for _ in 0..50 {
            assert!((90..=110).contains(&backoff(&q, 1)));
        }
        // Never 0 (0 would mean "at once"), even with a zero retry_min.
        assert_eq!(backoff_with(&queue_cfg(0, 0), 1, 0), 1);
        // A retry_max below retry_min is retry_min.
        assert_eq!(backoff_with(&queue_cfg(100, 10), 5, 0), 90);
    }

    #[test]
    fn next_attempt_backs_off_only_a_message_deferral() {
        let q = queue_cfg(60, 3600);
        let mut st = State::new(1);
        st.attempts = 2;
        assert_eq!(next_attempt(&q, &st, false, 1000), (1000, 2));
        let (at, attempts) = next_attempt(&q, &st, true, 1000);
        assert_eq!(attempts, 3);
        assert!((1000 + 216..=1000 + 264).contains(&at), "{at}");
    }

    #[test]
    fn start_waits_for_the_journal_unless_expired_or_one_pass() {
        let life = 5 * DAY;
        assert_eq!(start(0, 0, life, life, false), Start::Expired);
        assert_eq!(start(0, 0, life - 1, life, false), Start::Now);
        assert_eq!(start(0, 500, 100, life, false), Start::At(500));
        assert_eq!(start(0, 500, 100, life, true), Start::Now);
        assert_eq!(start(0, 100, 100, life, false), Start::Now, "due now");
    }

    #[test]
    fn a_message_past_its_lifetime_is_expired() {
        let life = 5 * DAY;
        let mut s = schedule(vec![msg(1000, 1)]);
        let id = ids(&s).remove(0);
        assert!(s.expired(1000 + life - 1, life).is_empty());
        assert_eq!(s.expired(1000 + life, life), vec![id.clone()]);
        // Not while a worker has it, nor once every recipient is done.
        s.msgs.get_mut(&id).unwrap().in_flight = true;
        assert!(s.expired(1000 + life, life).is_empty());
        let m = s.msgs.get_mut(&id).unwrap();
        m.in_flight = false;
        m.state.rcpts[0] = RcptState::Delivered(1, "250".into());
        assert!(s.expired(1000 + life, life).is_empty());
    }

    #[test]
    fn expiry_fails_the_recipients_left_with_their_last_reply() {
        let mut st = State::new(3);
        st.rcpts[0] = RcptState::Delivered(1, "250 ok".into());
        st.rcpts[1] = RcptState::Deferred(2, "451 later".into());
        let ev = expiry_events(&st, 77, Duration::from_secs(5 * DAY));
        assert_eq!(ev.len(), 2);
        let Event::Failed(1, 77, why) = &ev[0] else {
            panic!("{:?}", ev[0]);
        };
        assert_eq!(
            why,
            "message expired: undeliverable for 5.0 days (last reply: 451 later)"
        );
        assert!(
            matches!(&ev[1], Event::Failed(2, 77, why) if why.ends_with("5.0 days")),
            "{:?}",
            ev[1]
        );
    }

    #[test]
    fn warn_at_is_warn_after_past_arrival_unless_not_due() {
        let (life, after) = (5 * DAY, Some(Duration::from_secs(4 * 3600)));
        let at = 1000 + 4 * 3600;
        let mut m = msg(1000, 2);
        assert_eq!(m.warn_at(after, life), Some(at));
        assert_eq!(m.warn_at(None, life), None, "warn_after unset");
        assert_eq!(m.warn_at(after, 4 * 3600), None, "expires first");
        assert_eq!(m.warn_at(after, 4 * 3600 + 1), Some(at));
        m.in_flight = true;
        assert_eq!(m.warn_at(after, life), None, "being delivered");
        m.blocked = true;
        assert_eq!(m.warn_at(after, life), Some(at), "waiting for the relay");
        m.warn_retry = at + 300;
        assert_eq!(m.warn_at(after, life), Some(at + 300), "queuing it failed");
        m.state.warned = true;
        assert_eq!(m.warn_at(after, life), None, "already warned");
        m.state.warned = false;
        m.state.rcpts = vec![RcptState::Failed(1, "550".into()); 2];
        assert_eq!(m.warn_at(after, life), None, "nothing left to deliver");
    }

    #[test]
    fn warnings_are_due_at_their_time() {
        let (life, after) = (5 * DAY, Some(Duration::from_secs(3600)));
        let s = schedule(vec![msg(1000, 1)]);
        assert!(s.warnings_due(1000 + 3599, after, life).is_empty());
        assert_eq!(s.warnings_due(1000 + 3600, after, life), ids(&s));
    }

    #[test]
    fn timers_fire_when_due_and_not_before() {
        let mut s = schedule(vec![]);
        s.at(200, "B");
        s.at(100, "A");
        s.at(300, "C");
        assert!(s.take_due(99).is_empty());
        assert_eq!(s.take_due(200), vec!["A", "B"]);
        assert!(s.take_due(299).is_empty());
        s.cancel("C");
        assert!(s.take_due(1000).is_empty());
    }

    #[test]
    fn next_due_is_the_earliest_timer_expiry_or_warning() {
        let life = 5 * DAY;
        let mut s = schedule(vec![msg(1000, 1)]);
        let id = ids(&s).remove(0);
        assert_eq!(s.next_due(None, life), Some(1000 + life));
        assert_eq!(s.next_due(Some(Duration::from_secs(60)), life), Some(1060));
        s.at(500, &id);
        assert_eq!(s.next_due(Some(Duration::from_secs(60)), life), Some(500));
        s.forget(&id);
        assert_eq!(s.next_due(None, life), None);
    }

    #[test]
    fn a_message_is_started_once_and_flush_takes_only_the_selected() {
        let mut s = schedule(vec![msg(1000, 2), msg(1000, 1), msg(1000, 1)]);
        let all = ids(&s);
        let (a, b, c) = (&all[0], &all[1], &all[2]);
        for id in &all {
            s.at(5000, id);
        }
        let job = s.start(a).expect("not in flight yet");
        assert_eq!(job.pending.len(), s.msgs[a].env.rcpts.len());
        assert!(s.start(a).is_none(), "in flight");
        assert!(s.start("unknown").is_none());
        assert_eq!(s.in_flight(), 1);
        // Flushing a and b: b goes now, a (in flight) loses its timer, c keeps its own.
        let jobs = s.flush(&HashSet::from([a.clone(), b.clone()]));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].id.as_str(), b);
        assert_eq!(s.in_flight(), 2);
        assert_eq!(s.take_due(u64::MAX), vec![c.clone()]);
    }

    #[test]
    fn a_done_message_is_removed_or_bounced_then_failed() {
        let mut st = State::new(2);
        st.rcpts = vec![RcptState::Delivered(1, "250".into()); 2];
        assert_eq!(retire(&st), Retire::Remove);
        st.rcpts[1] = RcptState::Failed(1, "550".into());
        assert_eq!(retire(&st), Retire::Bounce);
        st.bounced = true;
        assert_eq!(retire(&st), Retire::Fail);
    }
}
