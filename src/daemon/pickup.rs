//! Taking mail into the queue: the pickup of new/ (inotify tells the main loop, which moves
//! each file into queue/ oldest first, as many as fit: `backlog` reads the rest as room
//! frees), taking over queue/ after a restart, and admitting a queue file (`admit`: its
//! envelope read without trust, size and NUL checks, setting aside what is corrupt, its
//! journal replayed, its first attempt scheduled).

use super::scheduler::{self, Msg, Start};
use super::socket::selected;
use super::{Daemon, backlog};
use crate::spool::{self, Queue, QueueId};
use crate::state::{Event, RcptState, State, now};
use log::{error, info, warn};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;

/// How a message is taken into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// Just came through new/ (new, or released): logged, tried at once.
    Fresh,
    /// Read again from queue/ (a restart, a refill, a parked message due): its journal's
    /// next attempt holds.
    Restart,
    /// Flushed while parked: tried at once.
    Now,
}

impl Daemon {
    /// Take over queue/ (after a restart): an older spool's journals, then as much as fits
    /// in memory, oldest first; the rest is read as room frees.
    pub(super) fn load_queue(&mut self) {
        let n = self.spool().migrate_journals();
        if n > 0 {
            info!("moved {n} delivery journal(s) of an older relayq into journal/");
        }
        self.sched.backlog = true;
        self.balance();
    }

    /// Move new arrivals (and released mail) from new/ into queue/ and admit them, oldest
    /// first, as many as fit; with mail waiting on disk, they wait their turn (`refill`).
    pub(super) fn pickup(&mut self) {
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
    pub(super) fn pickup_released(&mut self, id: &str) {
        if QueueId::parse(id).is_some_and(|q| self.spool().contains(Queue::New, &q)) {
            self.pickup();
        }
    }

    pub(super) fn corrupt(&self, q: Queue, name: &str, why: &str) {
        match self.spool().set_aside(q, name) {
            Ok(_) => warn!("{name}: moved to corrupt/: {why}"),
            Err(e) => error!("{name}: {why}, and cannot move it to corrupt/: {e}"),
        }
    }

    /// Whether the message (past its envelope at `off`) holds a NUL byte.
    pub(super) fn has_nul(&self, id: &QueueId, off: u64) -> bool {
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
    pub(super) fn admit(&mut self, qid: QueueId, how: Admit) -> bool {
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
}
