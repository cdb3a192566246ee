//! Queue listing (`mailq`, `sendmail -bp`, `relayq queue [--json]`): one entry per message
//! with its recipients' states, in Postfix's familiar layout or as JSON lines like
//! `postqueue -j`. Root and the spool owner read the spool; other users ask the daemon,
//! which shows them only their own messages. Above the listing, a line for each route whose
//! relays are down (run/relay) and for each relay holding mail for its rate limit
//! (run/ratelimit: its daily cap reached, or throttling).

use crate::error::{Error, Result};
use crate::spool::{Envelope, Layout, Queue, QueueId, Spool};
use crate::state::{self, RcptState, State};
use serde::Serialize;
use std::fmt::Write as _;

use std::io;
use std::os::unix::fs::MetadataExt;

#[derive(Debug, Serialize)]
pub struct RcptInfo {
    pub address: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_reason: Option<String>,
    /// When the state was recorded (0 for queued).
    #[serde(skip)]
    pub since: u64,
}

#[derive(Debug, Serialize)]
pub struct Entry {
    pub queue_name: &'static str,
    pub queue_id: String,
    pub arrival_time: u64,
    pub message_size: u64,
    pub sender: String,
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<u64>,
    pub recipients: Vec<RcptInfo>,
}

/// One spool directory being listed: its name as a queue, and which queue it is.
struct Dir {
    qname: &'static str,
    queue: Queue,
}

/// One message's entry, or None for a file that is not a valid queue file (or not `only_uid`'s).
fn read_entry(
    spool: &Spool,
    d: &Dir,
    name: &str,
    owner: u32,
    only_uid: Option<u32>,
    buf: &mut Vec<u8>,
) -> Option<Entry> {
    let (mut f, meta) = spool.open_file(d.queue, name).ok()?;
    let (env, off) = Envelope::read_head(&mut f, meta.len(), buf).ok()?;
    drop(f);
    let uid = env.submitter(meta.uid(), owner);
    if only_uid.is_some_and(|u| u != uid) {
        return None;
    }
    let st = State::parse(&spool.journal(&QueueId::parse(name)?), env.rcpts.len());
    let qname = d.qname;
    let queue_name = if qname == "active" && st.attempts > 0 {
        "deferred"
    } else {
        qname
    };
    let recipients = env
        .rcpts
        .into_iter()
        .zip(st.rcpts)
        .filter(|(_, s)| !matches!(s, RcptState::Delivered(..)))
        .map(|(r, s)| {
            let (state, since, reason) = match s {
                RcptState::Pending => (if qname == "hold" { "held" } else { "queued" }, 0, None),
                RcptState::Deferred(t, why) => ("deferred", t, Some(why)),
                RcptState::Failed(t, why) => ("failed", t, Some(why)),
                RcptState::Delivered(t, _) => ("sent", t, None),
            };
            RcptInfo {
                address: r.addr,
                state,
                delay_reason: reason,
                since,
            }
        })
        .collect();
    Some(Entry {
        queue_name,
        queue_id: name.to_string(),
        arrival_time: env.time,
        message_size: meta.len().saturating_sub(off),
        sender: env.sender,
        uid,
        next_attempt: (st.next > 0).then_some(st.next),
        recipients,
    })
}

/// Threads reading queue files: with a cold cache the work is waiting for the disk, and
/// several reads in flight finish sooner than one after another.
const READERS: usize = 8;

/// A streaming listing reads this many messages first, so that its first lines come at once
/// (`mailq | head -1` with a million queued), then [`BATCH`] at a time.
const FIRST_BATCH: usize = 256;
const BATCH: usize = 16_384;

/// The spool directories listed, as queue names.
const DIRS: [Dir; 3] = [
    Dir {
        qname: "incoming",
        queue: Queue::New,
    },
    Dir {
        qname: "active",
        queue: Queue::Active,
    },
    Dir {
        qname: "hold",
        queue: Queue::Hold,
    },
];

/// A queue file to read: its inode, its directory (index in [`DIRS`]) and its name.
type QFile = (u64, usize, String);

/// The queue files of new/, queue/ and hold/ (names that are queue IDs).
fn files(spool: &Spool) -> Vec<QFile> {
    let mut files = Vec::new();
    for (i, d) in DIRS.iter().enumerate() {
        for l in spool.list(d.queue).unwrap_or_default() {
            if crate::spool::is_id(&l.name) {
                files.push((l.ino, i, l.name));
            }
        }
    }
    files
}

/// Read `files` (sorted here by inode: on a cold cache the inode table is then read in
/// order, not at random) by up to [`READERS`] threads; the entries in arrival order. Files
/// that are not valid queue files (or not `only_uid`'s) are skipped.
fn read_files(spool: &Spool, files: &mut [QFile], only_uid: Option<u32>) -> Vec<Entry> {
    let owner = spool.owner();
    files.sort_unstable();
    let read = |part: &[QFile]| {
        let mut buf = Vec::with_capacity(crate::spool::HEAD_BYTES);
        part.iter()
            .filter_map(|(_, d, name)| {
                read_entry(spool, DIRS.get(*d)?, name, owner, only_uid, &mut buf)
            })
            .collect::<Vec<Entry>>()
    };
    let per_thread = files.len().div_ceil(READERS).max(1_000);
    let mut out: Vec<Entry> = std::thread::scope(|s| {
        let parts: Vec<_> = files
            .chunks(per_thread)
            .map(|part| {
                std::thread::Builder::new()
                    .spawn_scoped(s, move || read(part))
                    .map_err(|_| part)
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| match p {
                Ok(h) => h.join().unwrap_or_default(),
                // No thread to be had: read this part here.
                Err(part) => read(part),
            })
            .collect()
    });
    out.sort_unstable_by(|a, b| {
        (a.arrival_time, &a.queue_id, a.queue_name).cmp(&(
            b.arrival_time,
            &b.queue_id,
            b.queue_name,
        ))
    });
    out
}

/// Read every queued message (new/, queue/, hold/), in arrival order. `only_uid`: filter.
pub fn scan(spool: &Spool, only_uid: Option<u32>) -> Vec<Entry> {
    read_files(spool, &mut files(spool), only_uid)
}

/// Every queued message, handed to `f` a batch at a time as it is read, without holding the
/// whole queue: oldest first by queue ID (an ID begins with the time the message was
/// queued), each batch in arrival order.
pub fn scan_batches(
    spool: &Spool,
    mut f: impl FnMut(Vec<Entry>) -> io::Result<()>,
) -> io::Result<()> {
    let mut files = files(spool);
    files.sort_unstable_by(|a, b| a.2.cmp(&b.2));
    let mut rest = &mut files[..];
    let mut size = FIRST_BATCH;
    while !rest.is_empty() {
        let (part, more) = rest.split_at_mut(size.min(rest.len()));
        rest = more;
        f(read_files(spool, part, None))?;
        size = BATCH;
    }
    Ok(())
}

fn ctime(t: u64) -> String {
    let d = crate::message::rfc5322_date(t as i64);
    // "Tue, 24 Nov 2026 02:54:11 +0000" → "Tue Nov 24 02:54:11"
    let p: Vec<&str> = d.split_whitespace().collect();
    if p.len() >= 5 {
        format!(
            "{} {} {:>2} {}",
            p[0].trim_end_matches(','),
            p[2],
            p[1],
            p[4]
        )
    } else {
        d
    }
}

/// `ctime` for a listing, where many times fall in the same minute: the last minute's text
/// is kept and only the seconds are rewritten.
#[derive(Default)]
struct Ctime {
    minute: Option<u64>,
    text: String,
}

impl Ctime {
    fn get(&mut self, t: u64) -> &str {
        if self.minute != Some(t / 60) {
            self.text = ctime(t - t % 60);
            // A zone whose offset has seconds: no shortcut.
            self.minute = self.text.ends_with(":00").then_some(t / 60);
            if self.minute.is_none() {
                self.text = ctime(t);
                return &self.text;
            }
        }
        self.text.truncate(self.text.len() - 2);
        let _ = write!(self.text, "{:02}", t % 60);
        &self.text
    }
}

/// A relay holding mail for its rate limit, as the daemon last recorded it (run/ratelimit):
/// the relay (its URL with the user name, as `relayq status` names it), why ("daily cap
/// reached", "throttled by the relay") and when sending goes on (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHold {
    pub relay: String,
    pub why: &'static str,
    pub until: u64,
}

/// The relays holding mail for their rate limit now.
pub fn rate_holds(layout: &Layout) -> Vec<RateHold> {
    use crate::daemon::ratelimit::RateFile;
    let now = state::now();
    let mut holds: Vec<RateHold> = RateFile::load(&RateFile::path(layout))
        .0
        .iter()
        .filter_map(|r| {
            let (why, until) = r.waiting(now)?;
            Some(RateHold {
                relay: r.relay.clone(),
                why,
                until,
            })
        })
        .collect();
    // Two routes through the same relay account: one line.
    holds.dedup();
    holds
}

/// Indent of recipient lines: the ID column (a 22-character ID and the `!` of a held
/// message), size, arrival time, each with its separating space.
const PAD: &str = "                                                      ";
const ID_WIDTH: usize = 23;

/// The Postfix `mailq` layout, written as entries come (see [`Listing::entries`]).
pub struct Listing<'a> {
    w: &'a mut dyn io::Write,
    relay: Option<&'a state::RelayState>,
    /// Relays holding mail for their rate limit: a line each above the listing.
    holds: Vec<RateHold>,
    ctime: Ctime,
    /// Messages and bytes listed so far.
    n: usize,
    total: u64,
}

impl<'a> Listing<'a> {
    /// `relay`: the relays' recorded state (the default route's, with each
    /// `[[sender_relay]]` route's): a line above the listing for each route down, and its
    /// reason under the waiting messages of its senders that have no reply of their own.
    /// Buffer `w`: one write per line otherwise.
    pub fn new(relay: Option<&'a state::RelayState>, w: &'a mut dyn io::Write) -> Self {
        Listing {
            w,
            relay,
            holds: Vec::new(),
            ctime: Ctime::default(),
            n: 0,
            total: 0,
        }
    }

    /// `holds`: relays holding mail for their rate limit (see [`rate_holds`]), a line each
    /// above the listing.
    pub fn holding(mut self, holds: Vec<RateHold>) -> Self {
        self.holds = holds;
        self
    }

    /// Write these entries (the heading before the first).
    pub fn entries(&mut self, entries: &[Entry]) -> io::Result<()> {
        if self.n == 0 && !entries.is_empty() {
            // One line per route down: the default relays', then each [[sender_relay]]'s.
            for r in self
                .relay
                .into_iter()
                .flat_map(|r| std::iter::once(r).chain(&r.routes))
            {
                if let (false, Some(why)) = (r.up, r.reason.as_deref()) {
                    let since = r
                        .down_since
                        .map(|t| format!(" since {}", self.ctime.get(t)));
                    let route = r
                        .senders
                        .as_deref()
                        .map(|s| format!(" for {s}"))
                        .unwrap_or_default();
                    writeln!(
                        self.w,
                        "-- relay{route} down{}: {why}",
                        since.unwrap_or_default()
                    )?;
                }
            }
            // One line per relay waiting for its rate limit (daily cap, throttling).
            for h in &self.holds {
                writeln!(
                    self.w,
                    "-- relay {} waiting for the rate limit ({}) until {}",
                    h.relay,
                    h.why,
                    self.ctime.get(h.until)
                )?;
            }
            self.w.write_all(
                b"-Queue ID-              --Size-- ----Arrival Time---- -Sender/Recipient-------\n",
            )?;
        }
        let relay = self.relay;
        let w = &mut *self.w;
        for e in entries {
            self.n += 1;
            self.total += e.message_size;
            let mark = if e.queue_name == "hold" { "!" } else { "" };
            let sender = if e.sender.is_empty() {
                "MAILER-DAEMON"
            } else {
                &e.sender
            };
            let id_pad = ID_WIDTH.saturating_sub(e.queue_id.len() + mark.len());
            writeln!(
                w,
                "{}{mark}{} {:>8} {:<20} {sender}",
                e.queue_id,
                &PAD[..id_pad],
                e.message_size,
                self.ctime.get(e.arrival_time)
            )?;
            let mut last_reason: Option<&str> = None;
            // The reason of the relays this message's sender goes through, when they are down.
            let waiting = relay
                .map(|r| r.for_sender(&e.sender))
                .filter(|r| !r.up)
                .and_then(|r| r.reason.as_deref())
                .filter(|_| matches!(e.queue_name, "active" | "deferred"));
            for r in &e.recipients {
                let own = r.delay_reason.as_deref();
                if let Some(why) = own.or(waiting.filter(|_| r.state == "queued"))
                    && last_reason != Some(why)
                {
                    writeln!(w, "{PAD}({why})")?;
                    last_reason = Some(why);
                }
                writeln!(w, "{PAD}{}", r.address)?;
            }
            if let Some(n) = e.next_attempt {
                writeln!(w, "{PAD}(next attempt {})", self.ctime.get(n))?;
            }
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The summary line (or "Mail queue is empty").
    pub fn finish(self) -> io::Result<()> {
        let n = self.n;
        if n == 0 {
            return self.w.write_all(b"Mail queue is empty\n");
        }
        writeln!(
            self.w,
            "-- {} Kbytes in {n} Request{}.",
            self.total.div_ceil(1024),
            if n == 1 { "" } else { "s" }
        )
    }
}

/// The Postfix `mailq` layout of `entries`, written to `w` (`relay`: see [`Listing::new`];
/// `holds`: [`Listing::holding`]).
pub fn render_to(
    entries: &[Entry],
    relay: Option<&state::RelayState>,
    holds: Vec<RateHold>,
    w: &mut dyn io::Write,
) -> io::Result<()> {
    let mut l = Listing::new(relay, w).holding(holds);
    l.entries(entries)?;
    l.finish()
}

/// JSON lines like `postqueue -j`, one message a line, written to `w`.
pub fn json_to(entries: &[Entry], w: &mut dyn io::Write) -> io::Result<()> {
    for e in entries {
        serde_json::to_writer(&mut *w, e)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

fn to_string(f: impl FnOnce(&mut dyn io::Write) -> io::Result<()>) -> String {
    let mut v = Vec::new();
    let _ = f(&mut v);
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The Postfix `mailq` layout (`relay`, `holds`: see [`render_to`]).
pub fn render(
    entries: &[Entry],
    relay: Option<&state::RelayState>,
    holds: Vec<RateHold>,
) -> String {
    to_string(|w| render_to(entries, relay, holds, w))
}

pub fn json(entries: &[Entry]) -> String {
    to_string(|w| json_to(entries, w))
}

/// List the queue for the calling user, to `out`.
pub fn list(layout: &Layout, as_json: bool, out: &mut dyn io::Write) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let owner = Spool::open(layout)?.owner();
    let written = if me == 0 || me == owner {
        // Root reads the queue as the spool's owner, as Postfix's showq runs as mail_owner.
        // Written batch by batch, each flushed: the first lines come at once.
        let spool = Spool::open_as_owner(layout)?;
        if as_json {
            scan_batches(&spool, |e| json_to(&e, out).and_then(|()| out.flush()))
        } else {
            let relay = state::RelayState::down(layout);
            let mut l = Listing::new(relay.as_ref(), out).holding(rate_holds(layout));
            scan_batches(&spool, |e| l.entries(&e).and_then(|()| l.w.flush()))
                .and_then(|()| l.finish())
        }
    } else {
        let text = from_daemon(layout, as_json)?;
        out.write_all(text.as_bytes()).and_then(|()| {
            if text.is_empty() || text.ends_with('\n') {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        })
    };
    match written.and_then(|()| out.flush()) {
        // The reader has all it wanted (`mailq | head`): not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Error::temp(format!("cannot write the listing: {e}"))),
    }
}

/// Ordinary users: the daemon lists their own messages (it knows the peer's uid).
fn from_daemon(layout: &Layout, as_json: bool) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(layout.socket()).map_err(|e| {
        use std::io::ErrorKind::{ConnectionRefused, NotFound};
        match e.kind() {
            // No socket, or one nobody listens on: Postfix's "mail system is down". Not a
            // temporary failure on a host that only flushes from cron: the service is absent.
            NotFound | ConnectionRefused => Error::new(
                crate::error::Class::Unavailable,
                format!(
                    "queue listing unavailable: the relayq daemon is not running, and only it can show you your mail; ask root (`sudo mailq`) or start it (`{}`)",
                    crate::initsys::hint(crate::initsys::Action::Start, None)
                ),
            ),
            _ => Error::temp(format!(
                "only root can read the queue directly, and the relayq daemon is not reachable ({e})"
            )),
        }
    })?;
    if let Err(e) = s.write_all(if as_json { b"LSTJ" } else { b"LIST" }) {
        return Err(crate::sink::refusal(&s).unwrap_or_else(|| Error::temp(e.to_string())));
    }
    let mut out = String::new();
    s.take(256 << 20)
        .read_to_string(&mut out)
        .map_err(|e| Error::temp(e.to_string()))?;
    match out.split_once('\n') {
        Some(("OK", rest)) => Ok(rest.to_string()),
        Some((err, _)) => Err(Error::temp(err.trim_start_matches("ERR ").to_string())),
        None => Err(Error::temp("the relayq daemon sent no answer")),
    }
}
