//! The bounded active queue (Postfix's `qmgr_message_active_limit`): at most
//! `queue.active_limit` envelopes in the daemon's memory. This file owns what moves mail
//! between disk and memory: parking a message that waits out a timer (its envelope and state
//! leave memory, its ID and due time stay), the scan that reads mail on disk oldest first as
//! room frees (`Daemon::refill`, one pass over queue/ and new/ keeping only the oldest that
//! fit), and taking a file from new/ (`Daemon::take_new`). A million queued costs one
//! directory pass per refill, never a million envelopes in memory.

use super::Daemon;
use super::pickup::Admit;
use super::scheduler::Schedule;
use crate::spool::{Oldest, Queue, QueueId, Spool, is_id};
use std::io;
use std::time::Duration;

/// Where a message the scan found is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Src {
    /// Parked and due (or flushed): read again.
    Waiting,
    /// In new/: picked up (a new message, or a released one).
    New,
    /// In queue/, on disk only.
    Active,
}

impl Schedule {
    /// Take a parked or waiting message back, to be read again: whether it was flushed.
    pub(super) fn unpark(&mut self, id: &str) -> bool {
        let forced = self.waiting.remove(id).unwrap_or(false);
        if let Some(due) = self.parked.remove(id) {
            self.timers.remove(&(due, id.to_string()));
        }
        forced
    }

    /// Park the messages given a timer since the last call: their envelope and state leave
    /// memory until the timer, their delay warning or their expiry is due, whichever comes
    /// first. One whose warning or expiry is due already stays, for `warn`/`expire`.
    pub(super) fn park_idle(&mut self, now: u64, warn_after: Option<Duration>, lifetime: u64) {
        for (at, id) in std::mem::take(&mut self.to_park) {
            let Some(m) = self.msgs.get(&id) else {
                continue;
            };
            if m.in_flight || !self.timers.contains(&(at, id.clone())) {
                continue;
            }
            let due = [Some(at), m.warn_at(warn_after, lifetime)]
                .into_iter()
                .flatten()
                .chain([m.arrival.saturating_add(lifetime)])
                .min()
                .unwrap_or(at);
            if due <= now {
                continue;
            }
            self.timers.remove(&(at, id.clone()));
            self.msgs.remove(&id);
            self.timers.insert((due, id.clone()));
            self.parked.insert(id, due);
        }
    }

    /// Flush: the parked messages `pick` selects wait for room, to be tried now. Their count.
    pub(super) fn flush_parked(&mut self, mut pick: impl FnMut(&str) -> bool) -> usize {
        let ids: Vec<String> = self
            .parked
            .keys()
            .chain(self.waiting.keys())
            .filter(|id| pick(id))
            .cloned()
            .collect();
        for id in &ids {
            self.unpark(id);
            self.waiting.insert(id.clone(), true);
        }
        ids.len()
    }
}

/// The `k` oldest names in a queue directory, and whether more are there: one streamed
/// pass, memory for `k` names only.
pub(super) fn oldest_in(spool: &Spool, q: Queue, k: usize) -> io::Result<(Vec<String>, bool)> {
    let mut pick: Oldest<String> = Oldest::new(k);
    spool.scan(q, |name| {
        if pick.wants(|top| name < top.as_str()) {
            pick.offer(name.to_string());
        } else {
            pick.skip();
        }
    })?;
    Ok(pick.finish())
}

/// Offer a name found on disk, allocating only for one that may be kept.
fn offer(pick: &mut Oldest<(String, Src)>, name: &str, src: Src) {
    if pick.wants(|top| name < top.0.as_str()) {
        pick.offer((name.to_string(), src));
    } else {
        pick.skip();
    }
}

impl Daemon {
    /// A refill reads a whole directory: not for fewer free places than this (half the
    /// limit), unless nothing is in memory.
    fn refill_batch(&self) -> usize {
        (self.sched.limit / 2).max(1)
    }

    /// Take mail into memory while there is room: parked messages now due, then (when mail
    /// may be on disk only) the oldest of queue/, new/ and the due ones together.
    pub(super) fn refill(&mut self) {
        self.refill_with(false);
    }

    /// `refill`; `force`: read the directories even for a few free places (a flush pass
    /// with nothing else left to send).
    pub(super) fn refill_with(&mut self, force: bool) {
        let room = self.sched.room();
        if room == 0 {
            return;
        }
        if !self.sched.backlog {
            let due: Vec<(String, bool)> = self
                .sched
                .waiting
                .iter()
                .take(room)
                .map(|(id, f)| (id.clone(), *f))
                .collect();
            for (id, forced) in due {
                self.take_waiting(&id, forced);
            }
            return;
        }
        if !force && room < self.refill_batch() && !self.sched.msgs.is_empty() {
            return;
        }
        let mut pick: Oldest<(String, Src)> = Oldest::new(room);
        for id in self.sched.waiting.keys() {
            pick.offer((id.clone(), Src::Waiting));
        }
        let mut bad = Vec::new();
        let spool = &self.ctx.spool;
        let _ = spool.scan(Queue::New, |name| {
            if is_id(name) {
                offer(&mut pick, name, Src::New);
            } else {
                bad.push(name.to_string());
            }
        });
        let (sched, skip) = (&self.sched, &self.skip);
        let scanned = spool.scan(Queue::Active, |name| {
            if is_id(name) && !sched.knows(name) && !skip.contains(name) {
                offer(&mut pick, name, Src::Active);
            }
        });
        let (found, more) = pick.finish();
        // A directory that cannot be read now is read again at the next refill.
        self.sched.backlog = more || scanned.is_err();
        for name in bad {
            self.corrupt(Queue::New, &name, "bad queue file name");
        }
        let mut picked = 0;
        for (id, src) in found {
            match src {
                Src::Waiting => self.take_waiting(&id, false),
                Src::New => picked += usize::from(self.take_new(&id)),
                Src::Active => {
                    if let Some(q) = QueueId::parse(&id) {
                        self.admit(q, Admit::Restart);
                    }
                }
            }
        }
        if picked > 0 {
            let _ = self.spool().sync(Queue::Active);
        }
    }

    /// Read a parked message again (`forced`: flushed, tried now whatever its backoff).
    fn take_waiting(&mut self, id: &str, forced: bool) {
        let forced = self.sched.unpark(id) || forced;
        if let Some(q) = QueueId::parse(id) {
            self.admit(q, if forced { Admit::Now } else { Admit::Restart });
        }
    }

    /// Move `name` from new/ into queue/ and admit it. False when it stays (a worker still
    /// sends the copy we track) or was set aside.
    pub(super) fn take_new(&mut self, name: &str) -> bool {
        // Held and released while we still track it: the entry we have is stale (its file
        // moved away). A worker still sending the old file finishes first.
        if self.sched.knows(name)
            && QueueId::parse(name).is_some_and(|q| !self.spool().contains(Queue::Active, &q))
        {
            if self.sched.msgs.get(name).is_some_and(|m| m.in_flight) {
                return false;
            }
            self.sched.forget(name);
        }
        let Some(id) = QueueId::parse(name).filter(|_| !self.sched.knows(name)) else {
            self.corrupt(Queue::New, name, "bad queue file name");
            return false;
        };
        if let Err(e) = self.spool().pickup(&id) {
            log::error!("{name}: cannot move into queue/: {e}");
            return false;
        }
        self.skip.remove(name);
        self.admit(id, Admit::Fresh)
    }

    /// A flush pass: the messages whose attempt is over leave memory (and are not read again
    /// in this pass), after their delay warning if it is due.
    pub(super) fn retire_passed(&mut self) {
        if self.passed.is_empty() {
            return;
        }
        let (after, life) = (self.cfg.queue.warn_after, self.cfg.queue.lifetime.as_secs());
        let t = crate::state::now();
        let passed = std::mem::take(&mut self.passed);
        let due: Vec<String> = passed
            .iter()
            .filter(|id| {
                self.sched
                    .msgs
                    .get(*id)
                    .and_then(|m| m.warn_at(after, life))
                    .is_some_and(|at| at <= t)
            })
            .cloned()
            .collect();
        self.warn_these(due);
        for id in passed {
            if self.sched.msgs.get(&id).is_some_and(|m| !m.in_flight) {
                self.sched.msgs.remove(&id);
                self.skip.insert(id);
            }
        }
    }

    /// Park what got a timer, then fill the room; again while what was read waits out a
    /// timer (mail deferred before a restart) and more is on disk.
    pub(super) fn balance(&mut self) {
        let (after, life) = (self.cfg.queue.warn_after, self.cfg.queue.lifetime.as_secs());
        loop {
            self.sched.park_idle(crate::state::now(), after, life);
            let room = self.sched.room();
            self.refill();
            if room == self.sched.room() || self.sched.to_park.is_empty() || !self.sched.backlog {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::scheduler::Msg;
    use super::*;
    use crate::spool::Envelope;
    use crate::state::State;

    /// A one-recipient message that arrived at `arrival`, in a schedule of `limit`.
    fn tracked(s: &mut Schedule, arrival: u64) -> String {
        let env = Envelope {
            rcpts: vec![crate::spool::Rcpt::default()],
            ..Envelope::default()
        };
        let id = QueueId::parse(&crate::spool::new_id()).expect("a fresh ID parses");
        let key = id.as_str().to_string();
        s.msgs
            .insert(key.clone(), Msg::new(id, env, 0, arrival, State::new(1)));
        key
    }

    #[test]
    fn a_message_with_a_timer_is_parked_and_waits_for_room_when_due() {
        let life = 5 * 86400;
        let mut s = Schedule::new(2);
        let a = tracked(&mut s, 1000);
        let b = tracked(&mut s, 1000);
        assert_eq!(s.room(), 0);
        s.at(2000, &a);
        s.park_idle(1500, None, life);
        assert!(!s.msgs.contains_key(&a), "envelope out of memory");
        assert_eq!(s.parked.get(&a), Some(&2000));
        assert!(s.knows(&a));
        assert_eq!(s.room(), 1);
        // Not yet due; then due: it waits for room (the in-memory ones are returned).
        assert!(s.take_due(1999).is_empty());
        s.at(2000, &b);
        s.msgs.get_mut(&b).unwrap().in_flight = true;
        s.park_idle(1500, None, life);
        assert!(s.msgs.contains_key(&b), "in flight: not parked");
        assert_eq!(s.take_due(2000), vec![b.clone()]);
        assert!(s.waiting.contains_key(&a) && s.parked.is_empty());
        assert!(!s.unpark(&a), "due, not flushed");
        assert!(!s.knows(&a));
    }

    #[test]
    fn a_parked_message_is_due_at_its_warning_or_expiry_if_earlier() {
        let life = 100;
        let mut s = Schedule::default();
        let a = tracked(&mut s, 1000);
        s.at(5000, &a);
        s.park_idle(1010, Some(Duration::from_secs(30)), life);
        assert_eq!(s.parked.get(&a), Some(&1030), "the delay warning");
        let b = tracked(&mut s, 1000);
        s.at(5000, &b);
        s.park_idle(1010, None, life);
        assert_eq!(s.parked.get(&b), Some(&1100), "the expiry");
        // One whose warning is due already stays, for `warn`.
        let c = tracked(&mut s, 1000);
        s.at(5000, &c);
        s.park_idle(1040, Some(Duration::from_secs(30)), life);
        assert!(s.msgs.contains_key(&c));
    }

    #[test]
    fn flush_and_forget_reach_parked_messages() {
        let mut s = Schedule::default();
        let a = tracked(&mut s, 1000);
        let b = tracked(&mut s, 1000);
        s.at(9000, &a);
        s.at(9000, &b);
        s.park_idle(1000, None, 86400);
        assert_eq!(s.flush_parked(|id| id == a), 1);
        assert_eq!(s.waiting.get(&a), Some(&true), "flushed: tried now");
        assert!(s.unpark(&a));
        s.forget(&b);
        assert!(!s.knows(&b));
        assert!(s.take_due(u64::MAX).is_empty(), "no timer left");
    }
}
