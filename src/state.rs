//! Per-message delivery state: an append-only journal (`journal/<ID>`, kept by the spool apart
//! from the message, so a message is one file to move), one
//! fsynced line per event (recipient delivered, deferred, failed; bounce or delay warning
//! sent). A torn last line after a crash is ignored, so at worst a recipient is tried again
//! (at-least-once).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The time now in unix seconds: the clock of journal lines, queue lifetimes and run/ notes.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptState {
    Pending,
    /// Last temporary failure: (time, reply).
    Deferred(u64, String),
    Delivered(u64, String),
    Failed(u64, String),
}

impl RcptState {
    pub fn is_done(&self) -> bool {
        matches!(self, RcptState::Delivered(..) | RcptState::Failed(..))
    }
}

/// The state of one queued message's recipients, as replayed from its log.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub rcpts: Vec<RcptState>,
    /// Delivery attempts that ended in a message-level deferral.
    pub attempts: u32,
    /// Earliest time of the next attempt (unix seconds).
    pub next: u64,
    pub bounced: bool,
    /// Per recipient: its failure has been dealt with (reported in a bounce, or due to
    /// nobody), so no later bounce repeats it. `B <i>` lines; `b 1` covers every recipient
    /// failed by then.
    pub reported: Vec<bool>,
    /// The delay warning (`queue.warn_after`) was queued, or was not due to anyone.
    pub warned: bool,
    /// Who last held the message (`h UID`; 0 = the admin): only they may release it.
    pub held_by: Option<u32>,
}

fn clean(reply: &str) -> String {
    let s: String = reply
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s.chars().take(400).collect()
}

impl State {
    pub fn new(n: usize) -> State {
        State {
            rcpts: vec![RcptState::Pending; n],
            reported: vec![false; n],
            ..State::default()
        }
    }

    /// Replay a journal (`Spool::journal`). Unknown or torn lines are skipped.
    pub fn parse(text: &[u8], n: usize) -> State {
        let mut st = State::new(n);
        let complete = match text.iter().rposition(|&b| b == b'\n') {
            Some(i) => &text[..=i],
            None => return st,
        };
        for line in String::from_utf8_lossy(complete).lines() {
            st.apply(line);
        }
        st
    }

    fn apply(&mut self, line: &str) {
        let mut it = line.splitn(4, ' ');
        let (Some(k), Some(a)) = (it.next(), it.next()) else {
            return;
        };
        let t: u64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let reply = it.next().unwrap_or("").to_string();
        match k {
            "d" | "f" | "t" => {
                let Ok(i) = a.parse::<usize>() else { return };
                let Some(r) = self.rcpts.get_mut(i) else {
                    return;
                };
                *r = match k {
                    "d" => RcptState::Delivered(t, reply),
                    "f" => RcptState::Failed(t, reply),
                    _ => RcptState::Deferred(t, reply),
                };
            }
            "n" => {
                self.next = a.parse().unwrap_or(0);
                self.attempts = t as u32;
            }
            "b" => {
                self.bounced = true;
                for (r, rep) in self.rcpts.iter().zip(self.reported.iter_mut()) {
                    *rep |= matches!(r, RcptState::Failed(..));
                }
            }
            "B" => {
                if let Some(r) = a
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| self.reported.get_mut(i))
                {
                    *r = true;
                }
            }
            "w" => self.warned = true,
            "h" => self.held_by = a.parse().ok(),
            _ => {}
        }
    }

    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.rcpts
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_done())
            .map(|(i, _)| i)
    }

    /// Failed recipients not yet reported in a bounce.
    pub fn unreported(&self) -> Vec<usize> {
        self.rcpts
            .iter()
            .zip(&self.reported)
            .enumerate()
            .filter(|(_, (r, rep))| matches!(r, RcptState::Failed(..)) && !**rep)
            .map(|(i, _)| i)
            .collect()
    }

    pub fn all_done(&self) -> bool {
        self.rcpts.iter().all(|r| r.is_done())
    }
}

/// Appends events to a state log, fsyncing each batch.
pub struct Journal {
    f: File,
}

impl Journal {
    /// A journal opened for appending (`Spool::journal_append`).
    pub fn new(f: File) -> Journal {
        Journal { f }
    }

    /// Write event lines and make them durable. Each event also updates `st`.
    pub fn record(&mut self, st: &mut State, events: &[Event]) -> io::Result<()> {
        let mut buf = String::new();
        for e in events {
            let line = e.line();
            st.apply(&line);
            buf.push_str(&line);
            buf.push('\n');
        }
        self.f.write_all(buf.as_bytes())?;
        self.f.sync_data()
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    Delivered(usize, u64, String),
    Deferred(usize, u64, String),
    Failed(usize, u64, String),
    /// Next attempt time and the attempt count so far.
    Next(u64, u32),
    Bounced,
    /// Recipient i's failure has been reported (or was due to nobody): `B <i>`.
    Reported(usize),
    /// The delay warning was queued (or was due to nobody), at this time: `w <time>`.
    Warned(u64),
    /// Held by this uid (0: root or the spool's owner).
    HeldBy(u32),
}

impl Event {
    fn line(&self) -> String {
        match self {
            Event::Delivered(i, t, r) => format!("d {i} {t} {}", clean(r)),
            Event::Deferred(i, t, r) => format!("t {i} {t} {}", clean(r)),
            Event::Failed(i, t, r) => format!("f {i} {t} {}", clean(r)),
            Event::Next(t, a) => format!("n {t} {a}"),
            Event::Bounced => "b 1".into(),
            Event::Reported(i) => format!("B {i}"),
            Event::Warned(t) => format!("w {t}"),
            Event::HeldBy(uid) => format!("h {uid}"),
        }
    }
}

/// A small informational file in `run/` for `relayq status` (and mailq): `key value` lines
/// like the envelope, replaced atomically, at most once a second (see [`Note`]).
pub trait RunFile: Clone + PartialEq {
    /// The file's text, one `key value` a line, values without line breaks.
    fn text(&self) -> String;
    /// Whether this may replace what is `pending` (an older delivery does not replace a
    /// newer one).
    fn replaces(&self, _pending: &Self) -> bool {
        true
    }
}

/// The `key value` lines of a run/ file (at most 4 KiB read); None when it is missing.
pub(crate) fn read_run_file(path: &Path) -> Option<Vec<(String, String)>> {
    let mut text = String::new();
    // Not following a link, nor waiting on a FIFO, planted in run/.
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    std::io::Read::read_to_string(&mut std::io::Read::take(f, 4096), &mut text).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), clean(v)))
            .collect(),
    )
}

/// Replace a run/ file atomically (write a temporary file, rename). Not fsynced: it is
/// informational, and a crash at worst shows an older state.
fn save_run_file(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path))
}

/// The most recent successful delivery, in `run/last-delivery` for `relayq status`. Lines of
/// `key value` like the envelope: `time`, `queue-id`, `rcpt`, `message-id`, `reply`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct LastDelivery {
    /// Unix seconds of the relay's reply.
    pub time: u64,
    pub queue_id: String,
    pub rcpt: String,
    pub message_id: Option<String>,
    pub reply: String,
}

impl LastDelivery {
    pub fn path(layout: &crate::spool::Layout) -> PathBuf {
        layout.run_file("last-delivery")
    }

    /// Read the file; None when it is missing or has no time or recipient.
    pub fn load(path: &Path) -> Option<LastDelivery> {
        let mut d = LastDelivery::default();
        for (k, v) in read_run_file(path)? {
            match k.as_str() {
                "time" => d.time = v.parse().ok()?,
                "queue-id" => d.queue_id = v,
                "rcpt" => d.rcpt = v,
                "message-id" => d.message_id = Some(v),
                "reply" => d.reply = v,
                _ => {}
            }
        }
        (d.time > 0 && !d.rcpt.is_empty()).then_some(d)
    }
}

impl RunFile for LastDelivery {
    fn text(&self) -> String {
        let mut text = format!(
            "time {}\nqueue-id {}\nrcpt {}\n",
            self.time,
            clean(&self.queue_id),
            clean(&self.rcpt)
        );
        if let Some(m) = &self.message_id {
            text.push_str(&format!("message-id {}\n", clean(m)));
        }
        text.push_str(&format!("reply {}\n", clean(&self.reply)));
        text
    }

    fn replaces(&self, pending: &Self) -> bool {
        pending.time <= self.time
    }
}

/// Whether the relay is usable, in `run/relay` for `relayq status` and mailq: `state up` or
/// `state down` with `since`, `reason` (plain words, never a secret) and `next-try`; `relay`
/// names it (its URL, without credentials).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct RelayState {
    pub up: bool,
    pub relay: String,
    /// Unix seconds: down since then (None when up).
    pub down_since: Option<u64>,
    pub reason: Option<String>,
    /// Unix seconds of the next probe (None when up).
    pub next_try: Option<u64>,
    /// A sender route's patterns (`[[sender_relay]]` senders, comma-separated); None for
    /// the default relays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senders: Option<String>,
    /// Each sender route's state (in the file: `route` starts one, its keys follow).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RelayState>,
}

impl RelayState {
    pub fn path(layout: &crate::spool::Layout) -> PathBuf {
        layout.run_file("relay")
    }

    /// Read the file; None when it is missing or says neither up nor down.
    pub fn load(path: &Path) -> Option<RelayState> {
        let mut r = RelayState::default();
        let mut known = false;
        for (k, v) in read_run_file(path)? {
            let cur = match r.routes.last_mut() {
                Some(x) => x,
                None => &mut r,
            };
            match k.as_str() {
                "state" if cur.senders.is_some() => cur.up = v == "up",
                "state" => (cur.up, known) = (v == "up", v == "up" || v == "down"),
                "relay" => cur.relay = v,
                "since" => cur.down_since = v.parse().ok(),
                "reason" => cur.reason = Some(v),
                "next-try" => cur.next_try = v.parse().ok(),
                "route" => r.routes.push(RelayState {
                    senders: Some(v),
                    ..RelayState::default()
                }),
                _ => {}
            }
        }
        known.then_some(r)
    }

    /// The recorded state if some route is "down" (for mailq and show).
    pub fn down(layout: &crate::spool::Layout) -> Option<RelayState> {
        RelayState::load(&RelayState::path(layout))
            .filter(|r| !r.up || r.routes.iter().any(|x| !x.up))
    }

    /// The state of the route that carries mail from `sender`: a sender route's when its
    /// patterns match, else the default's.
    pub fn for_sender(&self, sender: &str) -> &RelayState {
        if self.routes.is_empty() {
            return self;
        }
        let lists: Vec<Vec<String>> = self
            .routes
            .iter()
            .map(|x| {
                x.senders
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .map(str::to_string)
                    .collect()
            })
            .collect();
        let refs: Vec<&[String]> = lists.iter().map(Vec::as_slice).collect();
        match crate::daemon::routes::SenderMap::from_lists(&refs) {
            Ok(m) => match m.route(sender) {
                0 => self,
                r => &self.routes[r - 1],
            },
            Err(_) => self,
        }
    }
}

impl RunFile for RelayState {
    fn text(&self) -> String {
        let mut text = format!(
            "state {}\nrelay {}\n",
            if self.up { "up" } else { "down" },
            clean(&self.relay)
        );
        if let Some(t) = self.down_since {
            text.push_str(&format!("since {t}\n"));
        }
        if let Some(r) = &self.reason {
            text.push_str(&format!("reason {}\n", clean(r)));
        }
        if let Some(t) = self.next_try {
            text.push_str(&format!("next-try {t}\n"));
        }
        for r in &self.routes {
            text.push_str(&format!(
                "route {}\n",
                clean(r.senders.as_deref().unwrap_or(""))
            ));
            text.push_str(&r.text());
        }
        text
    }
}

/// Keeps a run/ file current without slowing deliveries: workers `set` the latest state in
/// memory; the daemon's main loop calls `write_due`, which writes at most once a second, and
/// `write_now` when it finishes. A state equal to the one on disk is not written again.
#[derive(Debug)]
pub struct Note<T> {
    path: PathBuf,
    pending: Option<T>,
    /// What the file holds (as last written, or as found at the start).
    saved: Option<T>,
    written: Option<std::time::Instant>,
    warned: bool,
}

/// run/last-delivery.
pub type DeliveryNote = Note<LastDelivery>;
/// run/relay.
pub type RelayNote = Note<RelayState>;

impl<T: RunFile> Note<T> {
    pub fn new(path: PathBuf) -> Note<T> {
        Note::with_saved(path, None)
    }

    /// `saved`: what the file holds now.
    pub fn with_saved(path: PathBuf, saved: Option<T>) -> Note<T> {
        Note {
            path,
            pending: None,
            saved,
            written: None,
            warned: false,
        }
    }

    /// What the file holds (as last written, or as found at the start).
    pub fn saved(&self) -> Option<&T> {
        self.saved.as_ref()
    }

    /// A new state; one that may not replace what is pending is ignored.
    pub fn set(&mut self, d: T) {
        if self.pending.as_ref().is_none_or(|p| d.replaces(p)) {
            self.pending = Some(d);
        }
    }

    /// Write what is pending if the last write is a second old. True when something is still
    /// pending (call again within a second).
    pub fn write_due(&mut self) -> bool {
        if self
            .written
            .is_some_and(|w| w.elapsed() < std::time::Duration::from_secs(1))
        {
            return self.pending.is_some();
        }
        self.write_now();
        false
    }

    pub fn write_now(&mut self) {
        let Some(d) = self.pending.take() else {
            return;
        };
        if self.saved.as_ref() == Some(&d) {
            return;
        }
        self.written = Some(std::time::Instant::now());
        match save_run_file(&self.path, &d.text()) {
            Ok(()) => self.saved = Some(d),
            Err(e) => {
                if !std::mem::replace(&mut self.warned, true) {
                    log::warn!("cannot write {}: {e}", self.path.display());
                }
            }
        }
    }

    /// `write_now` (`now`) or `write_due`; true when a write is still pending.
    pub fn write(&mut self, now: bool) -> bool {
        if now {
            self.write_now();
            return false;
        }
        self.write_due()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(p: &Path, n: usize) -> State {
        State::parse(&std::fs::read(p).unwrap_or_default(), n)
    }

    fn journal(p: &Path) -> io::Result<Journal> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .map(Journal::new)
    }

    #[test]
    fn replay_and_torn_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("X.st");
        let mut st = State::new(3);
        let mut j = journal(&p).unwrap();
        j.record(
            &mut st,
            &[
                Event::Delivered(0, 5, "250 ok".into()),
                Event::Deferred(1, 6, "451 later\r\nx".into()),
                Event::Next(100, 1),
            ],
        )
        .unwrap();
        j.record(&mut st, &[Event::Failed(2, 7, "550 no".into())])
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"d 1 9 250 to")
            .unwrap();
        let back = load(&p, 3);
        assert_eq!(back.rcpts[0], RcptState::Delivered(5, "250 ok".into()));
        assert_eq!(back.rcpts[1], RcptState::Deferred(6, "451 later  x".into()));
        assert_eq!(back.rcpts[2], RcptState::Failed(7, "550 no".into()));
        assert_eq!((back.next, back.attempts), (100, 1));
        assert_eq!(back.pending().collect::<Vec<_>>(), vec![1]);
        assert_eq!(st.rcpts, back.rcpts);
        // The delay warning: `w <time>` (any argument) replays; journals without one, as
        // every older journal is, read as not warned.
        assert!(!back.warned);
        let p = d.path().join("W.st");
        let mut st = State::new(1);
        journal(&p)
            .unwrap()
            .record(&mut st, &[Event::Warned(1_700_000_000)])
            .unwrap();
        assert!(st.warned);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text, "w 1700000000\n");
        assert!(load(&p, 1).warned);
        std::fs::write(&p, "t 0 5 451 later\nw 1\n").unwrap();
        assert!(load(&p, 1).warned);
        std::fs::write(&p, "t 0 5 451 later\n").unwrap();
        assert!(!load(&p, 1).warned, "old journals: not warned");
        // Out-of-range indices from a damaged log are ignored.
        std::fs::write(&p, "d 99 1 x\nzz\nB 99\n").unwrap();
        assert!(load(&p, 1).rcpts[0] == RcptState::Pending);
        // Bounced recipients: `B <i>` each; an older journal's `b 1` covers every recipient
        // failed by then, not one that fails later.
        std::fs::write(&p, "f 0 5 550 no\nf 2 5 550 no\nB 0\n").unwrap();
        assert_eq!(load(&p, 3).unreported(), vec![2]);
        std::fs::write(&p, "f 0 5 550 no\nb 1\nf 1 6 550 no\n").unwrap();
        let st = load(&p, 3);
        assert_eq!(st.unreported(), vec![1]);
        assert!(st.bounced);
    }

    #[test]
    fn last_delivery_file_and_rate_limit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("last-delivery");
        let one = LastDelivery {
            time: 1_700_000_000,
            queue_id: "06B04FC53EAC338EBBC37B".into(),
            rcpt: "a@example.org".into(),
            message_id: Some("<x@y>".into()),
            reply: "250 2.0.0 OK\r\nqueued".into(),
        };
        let mut note = DeliveryNote::new(p.clone());
        note.set(one.clone());
        assert!(!note.write_due(), "the first write is due at once");
        let back = LastDelivery::load(&p).unwrap();
        assert_eq!(
            back.reply, "250 2.0.0 OK  queued",
            "no line breaks in the file"
        );
        assert_eq!(
            (back.time, &back.rcpt, &back.message_id),
            (one.time, &one.rcpt, &one.message_id)
        );
        // Within the second: kept pending; an older delivery does not replace a newer one.
        let two = LastDelivery {
            time: one.time + 5,
            rcpt: "b@example.org".into(),
            ..one.clone()
        };
        note.set(two.clone());
        note.set(one.clone());
        assert!(note.write_due(), "rate limited");
        assert_eq!(LastDelivery::load(&p).unwrap().rcpt, "a@example.org");
        note.write_now();
        assert_eq!(LastDelivery::load(&p).unwrap().rcpt, "b@example.org");
        assert!(!note.write_due(), "nothing pending");
        // Damaged or missing files read as nothing.
        std::fs::write(&p, "time x\nrcpt a@b\n").unwrap();
        assert_eq!(LastDelivery::load(&p), None);
        std::fs::write(&p, "rcpt a@b\n").unwrap();
        assert_eq!(LastDelivery::load(&p), None);
        assert_eq!(LastDelivery::load(&d.path().join("none")), None);
    }

    #[test]
    fn relay_state_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("relay");
        let down = RelayState {
            up: false,
            relay: "smtp://smtp.example.com:587".into(),
            down_since: Some(1_700_000_000),
            reason: Some("authentication failed: 535 5.7.8 no\r\nsecond line".into()),
            next_try: Some(1_700_000_120),
            ..RelayState::default()
        };
        let mut note = RelayNote::with_saved(p.clone(), RelayState::load(&p));
        assert!(note.saved().is_none());
        note.set(down.clone());
        note.write_now();
        let back = RelayState::load(&p).unwrap();
        assert_eq!(
            back.reason.as_deref(),
            Some("authentication failed: 535 5.7.8 no  second line")
        );
        assert_eq!(
            (back.up, back.down_since, back.next_try, &back.relay),
            (false, down.down_since, down.next_try, &down.relay)
        );
        assert_eq!(note.saved(), Some(&down));
        // The same state again is not rewritten.
        std::fs::remove_file(&p).unwrap();
        note.set(down.clone());
        note.write_now();
        assert!(!p.exists());
        let up = RelayState {
            up: true,
            relay: down.relay.clone(),
            ..RelayState::default()
        };
        note.set(up.clone());
        note.write_now();
        assert_eq!(RelayState::load(&p), Some(up));
        std::fs::write(&p, "relay x\nreason y\n").unwrap();
        assert_eq!(RelayState::load(&p), None, "no state line");
    }

    #[test]
    fn relay_state_file_with_sender_routes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("relay");
        let shop = RelayState {
            up: false,
            relay: "smtps://smtp.shop.example:465".into(),
            down_since: Some(1_700_000_000),
            reason: Some("cannot connect".into()),
            next_try: Some(1_700_000_012),
            senders: Some("*@shop.example,alerts@example.org".into()),
            routes: vec![],
        };
        let all = RelayState {
            up: true,
            relay: "smtp://smtp.example.com:587".into(),
            routes: vec![shop.clone()],
            ..RelayState::default()
        };
        let mut note = RelayNote::new(p.clone());
        note.set(all.clone());
        note.write_now();
        let back = RelayState::load(&p).unwrap();
        assert_eq!(back, all);
        assert_eq!(back.for_sender("orders@SHOP.example"), &shop);
        assert_eq!(back.for_sender("Alerts@example.org"), &shop);
        assert_eq!(back.for_sender("server@example.com"), &all);
    }
}
