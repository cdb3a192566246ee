//! Queue management: `relayq hold|release|delete ID...|--all` and `relayq show ID [--body]
//! [--raw]` (`status` is in `admin::status`). Each state change is one transition of the
//! spool's (hold/ ⇄ queue/ via new/). Root works on the spool as its owner, as does the
//! owner; other users cannot reach it, so their show/hold/release/delete go over the
//! daemon's socket, which runs the same per-ID code on their own messages only.

use crate::error::{Class, Error, Result};
use crate::sink::ChunkWriter;
use crate::spool::{Envelope, Layout, Oldest, Queue, QueueId, Spool, is_id};
use crate::state::{self, Event, Journal, RcptState, State};
use std::io::{BufRead, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;

mod status;
pub use status::{Status, collect, daemon_state, status};

fn require_access(spool: &Spool) -> Result<u32> {
    let owner = spool.owner();
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 && me != owner {
        return Err(Error::noperm(
            "only root (or the spool's owner) can manage the queue",
        ));
    }
    Ok(owner)
}

/// Largest request an ordinary user may send the daemon (IDs, one a line): about 47,000 IDs.
const MAX_REQUEST: u64 = 1 << 20;
/// Most answers a client reads from the daemon for one request.
const MAX_ANSWERS: usize = 1 << 20;

/// A per-message operation. Root and the spool's owner run it on the spool directly; an
/// ordinary user's request goes over the daemon's socket, and the daemon runs the same code
/// limited to the messages that user submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Show { body: bool },
    Hold,
    Release,
    Delete,
}

impl Op {
    const ALL: [Op; 5] = [
        Op::Show { body: false },
        Op::Show { body: true },
        Op::Hold,
        Op::Release,
        Op::Delete,
    ];

    /// `relayq show|hold|release|delete` (and `--body` for show).
    pub fn parse(cmd: &str, args: &[String]) -> Option<Op> {
        match cmd {
            "show" => Some(Op::Show {
                body: args.iter().any(|a| a == "--body"),
            }),
            "hold" => Some(Op::Hold),
            "release" => Some(Op::Release),
            "delete" => Some(Op::Delete),
            _ => None,
        }
    }

    /// The request's verb on the daemon's socket (like LIST, SUBM).
    pub fn verb(self) -> &'static [u8; 4] {
        match self {
            Op::Show { body: false } => b"SHOW",
            Op::Show { body: true } => b"SHWB",
            Op::Hold => b"HOLD",
            Op::Release => b"RLSE",
            Op::Delete => b"DELE",
        }
    }

    pub fn from_verb(v: &[u8]) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.verb() == v)
    }

    fn name(self) -> &'static str {
        match self {
            Op::Show { .. } => "show",
            Op::Hold => "hold",
            Op::Release => "release",
            Op::Delete => "delete",
        }
    }
}

/// Whose messages a caller may touch. `owner` is the spool's owner (see
/// `Envelope::submitter`); `only` is None for root and the spool's owner, and Some(uid) for
/// an ordinary user, who may touch what that uid submitted and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct Scope {
    pub owner: u32,
    pub only: Option<u32>,
}

impl Scope {
    fn sees(&self, spool: &Spool, q: Queue, id: &QueueId) -> bool {
        self.only.is_none_or(|uid| {
            spool
                .read_envelope(q, id.as_str())
                .is_ok_and(|(env, _, meta)| env.submitter(meta.uid(), self.owner) == uid)
        })
    }

    /// The uid a hold is recorded under: 0 for root and the spool's owner (the admin).
    fn holder(&self) -> u32 {
        self.only.unwrap_or(0)
    }
}

/// Why one ID was not handled. `NoSuch` is also the answer for another user's message: the
/// two must be indistinguishable.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    NoSuch(String),
    Broken(String),
    Io(String),
    /// Not this caller's to do (an admin's hold, for a user).
    Denied(String),
}

impl Failure {
    fn line(&self) -> String {
        match self {
            Failure::NoSuch(id) => format!("{id}: no such message in the queue"),
            Failure::Broken(m) | Failure::Io(m) | Failure::Denied(m) => m.clone(),
        }
    }

    fn into_error(self) -> Error {
        let class = match self {
            Failure::NoSuch(_) => Class::NoUser,
            Failure::Broken(_) => Class::Data,
            Failure::Io(_) => Class::Temp,
            Failure::Denied(_) => Class::NoPerm,
        };
        Error::new(class, self.line())
    }

    /// The answer line on the daemon's socket.
    fn wire(&self) -> String {
        let (tag, text) = match self {
            Failure::NoSuch(id) => ("MISS", id),
            Failure::Broken(m) => ("BAD", m),
            Failure::Io(m) => ("IO", m),
            Failure::Denied(m) => ("DENY", m),
        };
        format!("{tag} {}", text.replace(['\r', '\n'], " "))
    }

    fn from_wire(tag: &str, text: &str) -> Option<Failure> {
        match tag {
            "MISS" => Some(Failure::NoSuch(text.into())),
            "BAD" => Some(Failure::Broken(text.into())),
            "IO" => Some(Failure::Io(text.into())),
            "DENY" => Some(Failure::Denied(text.into())),
            _ => None,
        }
    }
}

/// Where a message `scope` may see is now. Anything else, including a name that is not a
/// queue ID (no path traversal), is not there.
fn locate(spool: &Spool, id: &str, scope: Scope) -> Option<(Queue, QueueId)> {
    let id = QueueId::parse(id)?;
    let q = spool.locate(&id, &[Queue::Active, Queue::Hold, Queue::New])?;
    scope.sees(spool, q, &id).then_some((q, id))
}

/// Names `--all` holds in memory at once: one pass over the directories.
const ALL_PASS: usize = 65_536;

/// Hand `f` each ID a request names: its arguments, or with `--all` every message `scope` may
/// see in the directories `op` applies to, oldest first, [`ALL_PASS`] names a pass (a million
/// queued is never a million names in memory, in the daemon least of all). Each pass starts
/// after the last name of the one before, and a message `op` moves leaves those
/// directories, so none is handed twice. Stops at `f`'s first error.
fn each_target<E>(
    spool: &Spool,
    op: Op,
    args: &[String],
    scope: Scope,
    f: impl FnMut(&str) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    each_target_by(spool, op, args, scope, ALL_PASS, f)
}

fn each_target_by<E>(
    spool: &Spool,
    op: Op,
    args: &[String],
    scope: Scope,
    pass: usize,
    mut f: impl FnMut(&str) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    if !args.iter().any(|a| a == "--all") {
        return args
            .iter()
            .filter(|a| !a.starts_with("--"))
            .try_for_each(|a| f(a));
    }
    let queues: &[Queue] = match op {
        Op::Release => &[Queue::Hold],
        Op::Hold => &[Queue::Active, Queue::New],
        _ => &[Queue::Active, Queue::Hold, Queue::New],
    };
    let mut after: Option<String> = None;
    loop {
        let mut pick: Oldest<String> = Oldest::new(pass);
        for q in queues {
            // A directory that cannot be read has nothing to act on, as an empty one.
            let _ = spool.scan(*q, |name| {
                if !is_id(name) || after.as_deref().is_some_and(|a| name <= a) {
                    return;
                }
                if pick.wants(|top| name < top.as_str()) {
                    pick.offer(name.to_string());
                } else {
                    pick.skip();
                }
            });
        }
        let (mut names, more) = pick.finish();
        // In two directories at once: caught between a rename's two links.
        names.dedup();
        for name in &names {
            if let Some(id) = QueueId::parse(name)
                && queues.iter().any(|q| scope.sees(spool, *q, &id))
            {
                f(name)?;
            }
        }
        match names.pop() {
            Some(last) if more => after = Some(last),
            _ => return Ok(()),
        }
    }
}

/// What a successful operation reports: a line, or the message `show` prints.
enum Report {
    Line(String),
    Show(Box<Shown>),
}

struct Shown {
    id: QueueId,
    queue: Queue,
    /// The message's journal, replayed.
    state: State,
    /// The message, open.
    file: std::fs::File,
    env: Envelope,
    off: u64,
    meta: std::fs::Metadata,
    owner: u32,
    body: bool,
    /// The relay's state when it is down (the reason a queued message waits).
    relay: Option<state::RelayState>,
}

/// Run `op` on one message `scope` may see. Each state change is one transition of the
/// spool's; a hold records who held it (`h UID`, 0 for the admin), and only an admin hold's
/// holder, the admin, may release it.
fn apply(spool: &Spool, scope: Scope, op: Op, id: &str) -> Result<Report, Failure> {
    let (q, qid) = locate(spool, id, scope).ok_or_else(|| Failure::NoSuch(id.to_string()))?;
    let io = |e: std::io::Error| Failure::Io(format!("{id}: {e}"));
    match (op, q) {
        (Op::Show { body }, _) => {
            let (env, off, meta) = spool
                .read_envelope(q, id)
                .map_err(|e| Failure::Broken(format!("{id}: {e}")))?;
            let (file, _) = spool.open_file(q, id).map_err(io)?;
            return Ok(Report::Show(Box::new(Shown {
                state: State::parse(&spool.journal(&qid), env.rcpts.len()),
                id: qid,
                queue: q,
                file,
                env,
                off,
                meta,
                owner: scope.owner,
                body,
                relay: state::RelayState::down(spool.layout()).filter(|_| q == Queue::Active),
            })));
        }
        (Op::Hold, Queue::Hold) | (Op::Release, Queue::Active | Queue::New) => {}
        (Op::Hold, _) => {
            let mut st = State::default();
            spool
                .journal_append(&qid)
                .and_then(|f| Journal::new(f).record(&mut st, &[Event::HeldBy(scope.holder())]))
                .map_err(io)?;
            spool.transition(&qid, q, Queue::Hold).map_err(io)?
        }
        // Released mail goes back through new/, where the daemon notices it at once and
        // tries it now, whatever backoff its journal recorded.
        (Op::Release, _) => {
            let held_by = State::parse(&spool.journal(&qid), 0).held_by;
            if scope.only.is_some() && held_by != scope.only {
                return Err(Failure::Denied(format!(
                    "{id}: held by the administrator; only root can release it"
                )));
            }
            spool.transition(&qid, q, Queue::New).map_err(io)?
        }
        (Op::Delete, _) => spool.remove(&qid, q).map_err(io)?,
    }
    let done = match op {
        Op::Hold => "held",
        Op::Release => "released",
        _ => "deleted",
    };
    Ok(Report::Line(format!("{id}: {done}\n")))
}

impl Report {
    fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Report::Line(l) => out.write_all(l.as_bytes()),
            Report::Show(s) => s.write(out),
        }
    }
}

impl Shown {
    /// Envelope, per-recipient state, header (and with `--body` the body).
    fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let (id, env, st) = (&self.id, &self.env, &self.state);
        let shown_dir = match self.queue {
            Queue::Active => "queued",
            q => q.dir_name(),
        };
        writeln!(out, "Queue ID:  {id} ({shown_dir})")?;
        writeln!(
            out,
            "Arrived:   {}",
            crate::message::rfc5322_date(env.time as i64)
        )?;
        writeln!(
            out,
            "Size:      {} bytes",
            self.meta.len().saturating_sub(self.off)
        )?;
        writeln!(
            out,
            "Submitter: uid {}",
            env.submitter(self.meta.uid(), self.owner)
        )?;
        writeln!(out, "Sender:    <{}>", env.sender)?;
        if st.next > 0 {
            writeln!(
                out,
                "Next try:  {} (after {} deferred attempt(s))",
                crate::message::rfc5322_date(st.next as i64),
                st.attempts
            )?;
        }
        // The state of the relays this message's sender goes through (its route).
        let waiting = self
            .relay
            .as_ref()
            .map(|r| r.for_sender(&env.sender))
            .filter(|r| !r.up)
            .and_then(|r| r.reason.as_deref());
        for (r, s) in env.rcpts.iter().zip(st.rcpts.iter()) {
            let (what, reply) = match s {
                RcptState::Pending => (
                    "queued",
                    waiting.map(|w| format!(" ({w})")).unwrap_or_default(),
                ),
                RcptState::Deferred(_, x) => ("deferred", format!(" ({x})")),
                RcptState::Delivered(_, x) => ("sent", format!(" ({x})")),
                RcptState::Failed(_, x) => ("failed", format!(" ({x})")),
            };
            writeln!(out, "Recipient: <{}> {what}{reply}", r.addr)?;
        }
        writeln!(out)?;
        let mut f = std::io::BufReader::new(&self.file);
        f.seek(std::io::SeekFrom::Start(self.off))?;
        let mut line = Vec::new();
        let (mut in_body, mut line_start) = (false, true);
        loop {
            line.clear();
            // Pieces of at most 64 KiB: a crafted file with one huge line stays bounded.
            if f.by_ref().take(64 * 1024).read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            if !in_body && line_start && line == b"\r\n" {
                if !self.body {
                    return Ok(());
                }
                in_body = true;
            }
            line_start = line.ends_with(b"\n");
            out.write_all(&line)?;
        }
    }
}

/// The outcome of a request: hold/release/delete report each failed ID as it comes and exit
/// 1; show's failure is the command's error (no such message: EX_NOUSER).
struct Tally {
    op: Op,
    failed: usize,
    error: Option<Failure>,
}

impl Tally {
    fn add(&mut self, r: Result<(), Failure>) {
        let Err(f) = r else { return };
        self.failed += 1;
        if matches!(self.op, Op::Show { .. }) {
            self.error.get_or_insert(f);
        } else {
            eprintln!("relayq: {}", f.line());
        }
    }

    fn finish(self) -> Result<i32> {
        match self.error {
            Some(f) => Err(f.into_error()),
            None => Ok(i32::from(self.failed > 0)),
        }
    }
}

/// `relayq show|hold|release|delete`: root and the spool's owner work on the spool; anyone
/// else asks the daemon, which (by SO_PEERCRED) lets them touch only what they submitted.
pub fn manage(layout: &Layout, cmd: &str, args: &[String]) -> Result<i32> {
    let op = Op::parse(cmd, args).ok_or_else(|| Error::usage(format!("unknown command {cmd}")))?;
    let all = args.iter().any(|a| a == "--all");
    let named = args.iter().filter(|a| !a.starts_with("--")).count();
    if matches!(op, Op::Show { .. }) && (named != 1 || all) {
        return Err(Error::usage("usage: relayq show ID [--body] [--raw]"));
    }
    if named == 0 && !all {
        return Err(Error::usage(format!(
            "usage: relayq {} ID... | --all",
            op.name()
        )));
    }
    let owner = Spool::open(layout)?.owner();
    let me = nix::unistd::geteuid().as_raw();
    let mut tally = Tally {
        op,
        failed: 0,
        error: None,
    };
    // A message's bytes reach the terminal escaped, unless asked for raw.
    let mut out = Escaped {
        inner: std::io::stdout().lock(),
        line: Vec::new(),
        raw: args.iter().any(|a| a == "--raw"),
    };
    if me == 0 || me == owner {
        // Root works as the spool's owner: nothing planted in the spool can make root act.
        let spool = Spool::open_as_owner(layout)?;
        spool.check()?;
        let scope = Scope { owner, only: None };
        let _ = each_target(&spool, op, args, scope, |id| {
            tally.add(apply(&spool, scope, op, id).and_then(|r| {
                r.write(&mut out)
                    .map_err(|e| Failure::Io(format!("{id}: {e}")))
            }));
            Ok::<(), std::convert::Infallible>(())
        });
    } else {
        ask_daemon(layout, op, args, &mut tally, &mut out)?;
    }
    out.finish()
        .map_err(|e| Error::temp(format!("cannot write: {e}")))?;
    tally.finish()
}

/// Output where a message's control characters are escaped (`message::escape_controls`), a
/// line at a time (lines of over 64 KiB in pieces), unless `raw`.
struct Escaped<W: Write> {
    inner: W,
    line: Vec<u8>,
    raw: bool,
}

impl<W: Write> Escaped<W> {
    fn emit(&mut self, upto: usize) -> std::io::Result<()> {
        let mut esc = Vec::with_capacity(upto + 16);
        crate::message::escape_controls(&self.line[..upto], &mut esc);
        self.line.drain(..upto);
        self.inner.write_all(&esc)
    }

    /// Write what is left (a last line without its end) and flush.
    fn finish(&mut self) -> std::io::Result<()> {
        self.emit(self.line.len())?;
        self.inner.flush()
    }
}

impl<W: Write> Write for Escaped<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.raw {
            return self.inner.write(b);
        }
        self.line.extend_from_slice(b);
        while let Some(i) = self.line.iter().position(|&c| c == b'\n') {
            self.emit(i + 1)?;
        }
        if self.line.len() > 64 * 1024 {
            self.emit(self.line.len())?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An ordinary user's request, answered by the daemon one ID at a time: `OK` and the report
/// in chunks, or a failure line (`MISS ID`, `BAD text`, `IO text`); `END` at the end.
fn ask_daemon(
    layout: &Layout,
    op: Op,
    args: &[String],
    tally: &mut Tally,
    out: &mut dyn Write,
) -> Result<()> {
    let mut req = op.verb().to_vec();
    for a in args {
        if a == "--all" || crate::spool::is_id(a) {
            req.extend_from_slice(a.as_bytes());
            req.push(b'\n');
        } else if !a.starts_with("--") {
            tally.add(Err(Failure::NoSuch(a.clone())));
        }
    }
    let lost = |e: std::io::Error| Error::temp(format!("lost the relayq daemon's answer: {e}"));
    let s = UnixStream::connect(layout.socket()).map_err(|e| {
        Error::temp(format!(
            "the relayq daemon is not running ({e}); only it can tell which messages are yours (root can manage the queue directly)"
        ))
    })?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .map_err(lost)?;
    if let Err(e) = (&s)
        .write_all(&req)
        .and_then(|_| s.shutdown(std::net::Shutdown::Write))
    {
        return Err(crate::sink::refusal(&s).unwrap_or_else(|| lost(e)));
    }
    let mut r = std::io::BufReader::new(&s);
    for _ in 0..MAX_ANSWERS {
        let mut line = String::new();
        r.by_ref().take(4096).read_line(&mut line).map_err(lost)?;
        let line = line.trim_end_matches('\n');
        let (tag, text) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "END" => return Ok(()),
            "OK" => {
                if !crate::sink::read_chunks(&mut r, out, u64::MAX).map_err(lost)? {
                    return Err(Error::temp(
                        "the relayq daemon stopped in the middle of an answer",
                    ));
                }
            }
            "ERR" => return Err(Error::temp(format!("relayq daemon: {text}"))),
            _ => match Failure::from_wire(tag, text) {
                Some(f) => tally.add(Err(f)),
                None => return Err(Error::temp("the relayq daemon sent no answer")),
            },
        }
    }
    Err(Error::temp("the relayq daemon sent too many answers"))
}

/// The rest of a socket request (after its verb), up to the client's shutdown of its
/// write side: at most `max` bytes, else "<what> too large".
pub fn read_request(s: &UnixStream, max: u64, what: &str) -> std::result::Result<Vec<u8>, String> {
    let mut req = Vec::new();
    s.take(max + 1)
        .read_to_end(&mut req)
        .map_err(|e| e.to_string())?;
    if req.len() as u64 > max {
        return Err(format!("{what} too large"));
    }
    Ok(req)
}

/// The daemon's side of a request on its socket: `peer` (from SO_PEERCRED) is root, or may
/// touch only what it submitted; anyone else's message is "no such message". The reply
/// ends with the `END` line the caller writes.
pub fn serve(
    spool: &Spool,
    peer: u32,
    op: Op,
    s: &UnixStream,
) -> std::result::Result<String, String> {
    let scope = Scope {
        owner: spool.owner(),
        only: (peer != 0).then_some(peer),
    };
    let req = read_request(s, MAX_REQUEST, "request")?;
    let args: Vec<String> = String::from_utf8_lossy(&req)
        .lines()
        .map(str::to_string)
        .collect();
    let io = |e: std::io::Error| e.to_string();
    let mut w = std::io::BufWriter::new(s);
    each_target(spool, op, &args, scope, |id| {
        match apply(spool, scope, op, id) {
            Ok(report) => {
                w.write_all(b"OK\n").map_err(io)?;
                let mut c = ChunkWriter::new(&mut w);
                let r = report.write(&mut c);
                c.finish().map_err(io)?;
                if let Err(e) = r {
                    writeln!(w, "{}", Failure::Io(format!("{id}: {e}")).wire()).map_err(io)?;
                }
            }
            Err(f) => writeln!(w, "{}", f.wire()).map_err(io)?,
        }
        Ok::<(), String>(())
    })?;
    w.flush().map_err(io)?;
    Ok("END".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Draft;

    fn spool() -> (tempfile::TempDir, Spool) {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path().join("spool"));
        l.init(
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
        .unwrap();
        let s = Spool::open(&l).unwrap();
        (d, s)
    }

    fn queued(s: &Spool) -> QueueId {
        let id = QueueId::parse(&Draft::create(s).unwrap().commit().unwrap()).unwrap();
        s.pickup(&id).unwrap();
        id
    }

    /// `--all` in passes of 3 names: every message once, oldest first, also while the
    /// operation moves each one out of the directories it scans.
    #[test]
    fn all_in_passes_hands_each_message_once_while_they_move() {
        let (_d, s) = spool();
        let mut queue: Vec<String> = (0..10).map(|_| queued(&s).to_string()).collect();
        let held: Vec<String> = (0..3)
            .map(|_| {
                let id = queued(&s);
                s.transition(&id, Queue::Active, Queue::Hold).unwrap();
                id.to_string()
            })
            .collect();
        queue.sort();
        let scope = Scope {
            owner: s.owner(),
            only: None,
        };
        let all = ["--all".to_string()];
        let mut seen = Vec::new();
        each_target_by(&s, Op::Hold, &all, scope, 3, |id| {
            let qid = QueueId::parse(id).unwrap();
            s.transition(&qid, Queue::Active, Queue::Hold).unwrap();
            seen.push(id.to_string());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(
            seen, queue,
            "hold --all: the queued ones, each once, in order"
        );
        let mut every = [queue, held].concat();
        every.sort();
        let mut seen = Vec::new();
        each_target_by(&s, Op::Delete, &all, scope, 3, |id| {
            seen.push(id.to_string());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(seen, every);
        // The first error stops it.
        let mut n = 0;
        let r = each_target_by(&s, Op::Release, &all, scope, 3, |_| {
            n += 1;
            if n == 4 { Err("stop") } else { Ok(()) }
        });
        assert_eq!((r, n), (Err("stop"), 4));
        // Named IDs are handed as given (checked later, one by one).
        let mut seen = Vec::new();
        each_target_by(
            &s,
            Op::Hold,
            &["x".into(), "--raw".into()],
            scope,
            3,
            |id| {
                seen.push(id.to_string());
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(seen, ["x"]);
    }
}
