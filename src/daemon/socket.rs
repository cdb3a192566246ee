//! The daemon's unix socket (`run/submit.sock`, open to every local user) and flush
//! requests. The server side: submissions from processes that cannot use setgid postdrop,
//! queue listing and the queue commands for a user's own mail (served by `admin`), and
//! `FLSH`/`FLSQ` flush requests, passed to the main loop. The client side: `relayq flush` /
//! `sendmail -q` ask a running daemon, or do one pass here when none answers.

use super::Daemon;
use super::worker::Ctx;
use crate::cli::QueueFilter;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::sink::ChunkWriter;
use crate::spool::{Draft, Envelope, Layout, Queue, Spool};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Listen on run/submit.sock. The socket is made under a temporary name and renamed into
/// place once it listens (and is open to all), so a client that finds the socket can
/// connect: it never meets one that is bound but not yet listening (ECONNREFUSED).
pub(super) fn listen(layout: &Layout) -> Result<UnixListener> {
    let p = layout.socket();
    let tmp = p.with_extension(format!("sock.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let fail = |e: std::io::Error| Error::temp(format!("cannot listen on {}: {e}", p.display()));
    let l = UnixListener::bind(&tmp).map_err(fail)?;
    let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o666));
    fs::rename(&tmp, &p).map_err(fail)?;
    Ok(l)
}

/// Connections one ordinary user may hold at once.
const PER_UID: usize = 8;
/// Connections at once, all users; the last `RESERVED` only for root and the spool's owner,
/// so a crowd of users cannot lock the admin out.
const TOTAL: usize = 128;
const RESERVED: usize = 16;
/// The longest a whole request may take, however its bytes trickle in: a client cannot
/// hold a connection by sending a byte now and then.
const REQUEST_DEADLINE: Duration = Duration::from_secs(120);
/// The longest any one read or write may wait.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// An ordinary user's flush requests: at most one this often.
const USER_FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Who holds which connection, and until when.
#[derive(Default)]
struct Conns {
    per_uid: std::collections::HashMap<u32, usize>,
    /// Open connections: id → (deadline, a handle to shut it down with).
    open: std::collections::HashMap<u64, (Instant, UnixStream)>,
    next_id: u64,
    /// An ordinary user's last flush request.
    flushed: std::collections::HashMap<u32, Instant>,
}

/// The local socket: submissions from processes that cannot use setgid postdrop
/// (NoNewPrivileges), flush requests, and ordinary users' queue listing and
/// show/hold/release/delete of their own messages. The peer's uid comes from SO_PEERCRED.
/// Each ordinary user may hold `PER_UID` connections, every request has a deadline for the
/// whole of it, and root and the spool's owner are served even when everyone else is busy.
pub(super) fn serve_socket(
    l: UnixListener,
    ctx: Arc<Ctx>,
    max_size: u64,
    flush: mpsc::Sender<FlushReq>,
) {
    let conns = Arc::new(Mutex::new(Conns::default()));
    let opened = Arc::new(Condvar::new());
    let (reaper, woken) = (conns.clone(), opened.clone());
    std::thread::spawn(move || reap(&reaper, &woken));
    let owner = ctx.spool.owner();
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        let Ok(cred) =
            nix::sys::socket::getsockopt(&s.as_fd(), nix::sys::socket::sockopt::PeerCredentials)
        else {
            continue;
        };
        let (uid, privileged) = (cred.uid(), cred.uid() == 0 || cred.uid() == owner);
        let mut g = conns.lock().unwrap_or_else(|e| e.into_inner());
        let mine = g.per_uid.get(&uid).copied().unwrap_or(0);
        let total = g.open.len();
        let busy = if total >= TOTAL {
            Some("the relayq daemon is busy (too many connections); try again")
        } else if !privileged && mine >= PER_UID {
            Some("the relayq daemon is busy: too many connections from this user; try again")
        } else if !privileged && total >= TOTAL - RESERVED {
            Some("the relayq daemon is busy (too many connections); try again")
        } else {
            None
        };
        if let Some(why) = busy {
            drop(g);
            refuse(&s, why);
            continue;
        }
        let Ok(handle) = s.try_clone() else { continue };
        let id = g.next_id;
        g.next_id += 1;
        g.open
            .insert(id, (Instant::now() + REQUEST_DEADLINE, handle));
        *g.per_uid.entry(uid).or_default() += 1;
        drop(g);
        opened.notify_one();
        let (ctx, conns, flush) = (ctx.clone(), conns.clone(), flush.clone());
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(IO_TIMEOUT));
            let _ = s.set_write_timeout(Some(IO_TIMEOUT));
            let peer = Peer {
                uid,
                privileged,
                conns: &conns,
                id,
            };
            let reply = match handle_client(&s, &ctx, max_size, &flush, &peer) {
                Ok(r) => r,
                Err(e) => Some(format!("ERR {}", e.replace('\n', " "))),
            };
            if let Some(reply) = reply {
                let _ = (&s).write_all(format!("{reply}\n").as_bytes());
            }
            let mut g = conns.lock().unwrap_or_else(|e| e.into_inner());
            g.open.remove(&id);
            if let Some(n) = g.per_uid.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    g.per_uid.remove(&uid);
                }
            }
        });
    }
}

/// The reaper: shuts down connections past their deadline (a blocked read then returns).
/// It sleeps until the next deadline, and while no connection is open until one opens
/// (`opened`): an idle daemon is not woken.
fn reap(conns: &Mutex<Conns>, opened: &Condvar) {
    let mut g = conns.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for (deadline, s) in g.open.values() {
            if *deadline <= now {
                let _ = s.shutdown(std::net::Shutdown::Both);
            } else {
                next = Some(next.map_or(*deadline, |n| n.min(*deadline)));
            }
        }
        g = match next {
            None => opened.wait(g).unwrap_or_else(|e| e.into_inner()),
            Some(at) => match opened.wait_timeout(g, at - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            },
        };
    }
}

/// Answer a connection we will not serve with one `ERR` line, without waiting for it. What
/// the client sent already is read first: a unix socket closed with unread data resets the
/// peer, which would then see "connection reset" instead of the reason.
fn refuse(s: &UnixStream, why: &str) {
    let _ = s.set_nonblocking(true);
    let drain = || {
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            if !matches!((&*s).read(&mut buf), Ok(n) if n > 0) {
                break;
            }
        }
    };
    drain();
    let _ = (&*s).write_all(format!("ERR {why}\n").as_bytes());
    let _ = s.shutdown(std::net::Shutdown::Write);
    drain();
}

/// Who is asking: the uid from SO_PEERCRED, and whether that is root or the spool's owner.
struct Peer<'a> {
    uid: u32,
    privileged: bool,
    conns: &'a Mutex<Conns>,
    /// This connection's, in `Conns::open`.
    id: u64,
}

impl Peer<'_> {
    /// A listing may take longer than a request: its reader sets the pace (`mailq | less`).
    fn allow(&self, d: Duration) {
        let mut g = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = g.open.get_mut(&self.id) {
            c.0 = Instant::now() + d;
        }
    }

    /// An ordinary user may ask for a flush once per `USER_FLUSH_EVERY`.
    fn may_flush(&self) -> std::result::Result<(), String> {
        if self.privileged {
            return Ok(());
        }
        let mut g = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(last) = g.flushed.get(&self.uid)
            && now.duration_since(*last) < USER_FLUSH_EVERY
        {
            return Err(format!(
                "a flush was asked for less than {} s ago; the daemon retries on its own",
                USER_FLUSH_EVERY.as_secs()
            ));
        }
        g.flushed
            .retain(|_, t| now.duration_since(*t) < USER_FLUSH_EVERY);
        g.flushed.insert(self.uid, now);
        Ok(())
    }
}

fn handle_client(
    s: &UnixStream,
    ctx: &Ctx,
    max_size: u64,
    flush: &mpsc::Sender<FlushReq>,
    peer: &Peer,
) -> std::result::Result<Option<String>, String> {
    let cred = peer;
    let mut verb = [0u8; 4];
    (&*s).read_exact(&mut verb).map_err(|e| e.to_string())?;
    let reply = match &verb {
        b"LIST" | b"LSTJ" | b"LSTC" | b"LSCJ" => {
            // Streamed as it is read, in bounded memory. LSTC/LSCJ in chunks whose end chunk
            // tells the client the listing is whole; LIST/LSTJ (clients before them) plain,
            // ended by the closed connection.
            let _turn = Listings::turn()?;
            peer.allow(LISTING_DEADLINE);
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, s);
            let only = (cred.uid != 0).then_some(cred.uid);
            let json = matches!(&verb, b"LSTJ" | b"LSCJ");
            w.write_all(b"OK\n").map_err(|e| e.to_string())?;
            let written = if matches!(&verb, b"LSTC" | b"LSCJ") {
                let mut c = ChunkWriter::new(&mut w);
                crate::queue::write_to(&ctx.spool, only, json, &mut c).and_then(|()| c.finish())
            } else {
                crate::queue::write_to(&ctx.spool, only, json, &mut w)
            };
            written
                .and_then(|()| w.flush())
                .map_err(|e| e.to_string())?;
            return Ok(None);
        }
        b"FLSH" => {
            // Everything, answered at once: what clients before FLSQ send and expect.
            peer.may_flush()?;
            let req = FlushReq {
                filter: QueueFilter::default(),
                done: None,
                privileged: peer.privileged,
            };
            flush.send(req).map_err(|_| "the daemon is stopping")?;
            let _ = (&ctx.wake).write(&[1]);
            Ok("OK flushing".into())
        }
        b"FLSQ" => {
            let req = crate::admin::read_request(s, MAX_FLUSH_REQUEST, "flush request")?;
            let filter = parse_flush_request(&req)?;
            peer.may_flush()?;
            let (tx, rx) = mpsc::channel();
            let req = FlushReq {
                filter,
                done: Some(tx),
                privileged: peer.privileged,
            };
            flush.send(req).map_err(|_| "the daemon is stopping")?;
            let _ = (&ctx.wake).write(&[1]);
            // How many matched only for root and the spool's owner, who can list the queue
            // anyway: anyone else would learn what others queued (see admin).
            let may_count = peer.privileged;
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(n) if may_count => Ok(format!("OK flushing {n}")),
                Ok(_) => Ok("OK flushing".into()),
                // Busy (a reload, say): the request is queued and will be done.
                Err(mpsc::RecvTimeoutError::Timeout) => Ok("OK flushing".into()),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err("the daemon is stopping".into()),
            }
        }
        b"SUBM" => {
            let mut r = BufReader::new(crate::sink::ChunkReader::new(s));
            let mut env =
                Envelope::read_from(&mut r).map_err(|e| format!("bad queue file: {e}"))?;
            env.uid = cred.uid;
            env.user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(cred.uid))
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| format!("uid{}", cred.uid));
            let mut d = Draft::create(&ctx.spool).map_err(|e| e.msg)?;
            env.write_to(d.writer()).map_err(|e| e.msg)?;
            let n = std::io::copy(&mut r.by_ref().take(max_size + 1), d.writer())
                .map_err(|e| e.to_string())?;
            if n > max_size {
                return Err(format!(
                    "message larger than the maximum size of {max_size} bytes"
                ));
            }
            if !r.get_ref().complete() {
                return Err("message incomplete".into());
            }
            d.commit().map(|id| format!("OK {id}")).map_err(|e| e.msg)
        }
        v => match crate::admin::Op::from_verb(v) {
            Some(op) => crate::admin::serve(&ctx.spool, cred.uid, op, s),
            None => Err("unknown request".into()),
        },
    };
    reply.map(Some)
}

/// Listings served at once. Each holds a pass's names and a batch of entries (see
/// `queue::read`), so their number bounds what listings cost the daemon, however many users
/// ask; the next waits its turn.
const LISTINGS: usize = 2;
/// The longest a listing may take, once its turn came (a million queued, read by a slow
/// reader); a reader that stops is cut off after `IO_TIMEOUT`.
const LISTING_DEADLINE: Duration = Duration::from_secs(600);
/// The longest a listing waits for its turn.
const LISTING_WAIT: Duration = Duration::from_secs(60);

/// A turn to list the queue, given back when dropped.
struct Listings;

static LISTING: (Mutex<usize>, std::sync::Condvar) = (Mutex::new(0), std::sync::Condvar::new());

impl Listings {
    fn turn() -> std::result::Result<Listings, String> {
        let (n, free) = &LISTING;
        let g = n.lock().unwrap_or_else(|e| e.into_inner());
        let (mut g, _) = free
            .wait_timeout_while(g, LISTING_WAIT, |n| *n >= LISTINGS)
            .unwrap_or_else(|e| e.into_inner());
        if *g >= LISTINGS {
            return Err("the relayq daemon is busy listing the queue for others; try again".into());
        }
        *g += 1;
        Ok(Listings)
    }
}

impl Drop for Listings {
    fn drop(&mut self) {
        let (n, free) = &LISTING;
        *n.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        free.notify_one();
    }
}

/// A flush request from the socket to the main loop; `done` hears how many messages are
/// being tried (None: the old `FLSH`, answered without waiting).
pub(super) struct FlushReq {
    pub(super) filter: QueueFilter,
    pub(super) done: Option<mpsc::Sender<usize>>,
    /// From root or the spool's owner: may cut a down relay's probe wait short.
    pub(super) privileged: bool,
}

/// The largest `FLSQ` request the socket reads, and the most IDs in one.
const MAX_FLUSH_REQUEST: u64 = 64 * 1024;
const MAX_FLUSH_IDS: usize = 1000;

/// `FLSQ` and the selection, one `id ID`, `domain D` or `sender S` a line, ended by
/// shutting down the write side; no line at all is everything. An older daemon answers
/// `ERR unknown request`.
fn flush_request(f: &QueueFilter) -> Vec<u8> {
    let mut req = b"FLSQ".to_vec();
    let lines = f.ids.iter().map(|x| ("id", x));
    let lines = lines
        .chain(f.domain.iter().map(|x| ("domain", x)))
        .chain(f.sender.iter().map(|x| ("sender", x)));
    for (key, value) in lines {
        req.extend_from_slice(format!("{key} {value}\n").as_bytes());
    }
    req
}

/// The selection a `FLSQ` request carries (after the verb). Anything malformed is an
/// error line for the client: the socket is open to every local user.
fn parse_flush_request(req: &[u8]) -> std::result::Result<QueueFilter, String> {
    let text = std::str::from_utf8(req).map_err(|_| "bad flush request: not UTF-8")?;
    let mut f = QueueFilter::default();
    for line in text.split_terminator('\n') {
        let shown: String = line.chars().take(40).collect();
        let bad = || format!("bad flush request line {shown:?}");
        let (key, value) = line.split_once(' ').ok_or_else(bad)?;
        if !is_selector(value) {
            return Err(bad());
        }
        match key {
            "id" if f.ids.len() < MAX_FLUSH_IDS => f.ids.push(value.to_string()),
            "id" => return Err(format!("bad flush request: more than {MAX_FLUSH_IDS} IDs")),
            "domain" if f.domain.is_none() => f.domain = Some(value.to_ascii_lowercase()),
            "sender" if f.sender.is_none() => f.sender = Some(value.to_string()),
            _ => return Err(bad()),
        }
    }
    Ok(f)
}

/// A queue ID, domain or sender a flush can select by: not empty, no control characters
/// (one line of a `FLSQ` request).
fn is_selector(v: &str) -> bool {
    !v.is_empty() && !v.chars().any(char::is_control)
}

/// Whether `flush` with this filter (-qI id, -qR domain, -qS sender) takes a message: the
/// one test for a one-shot pass and for a running daemon.
pub(super) fn selected(f: &QueueFilter, id: &str, env: &Envelope) -> bool {
    let id_ok = f.ids.is_empty() || f.ids.iter().any(|x| id.starts_with(x.as_str()));
    let dom_ok = f.domain.as_ref().is_none_or(|d| {
        let d = d.to_ascii_lowercase();
        env.rcpts.iter().any(|r| {
            let a = r.addr.to_ascii_lowercase();
            a.ends_with(&format!("@{d}")) || a.ends_with(&format!(".{d}"))
        })
    });
    let snd_ok = f.sender.as_ref().is_none_or(|x| {
        env.sender
            .to_ascii_lowercase()
            .contains(&x.to_ascii_lowercase())
    });
    id_ok && dom_ok && snd_ok
}

/// Send one flush request to the daemon's socket. Its answer line, or None when no daemon
/// answers (none running, or a stale socket).
fn ask_flush(layout: &Layout, req: &[u8]) -> Option<String> {
    let s = UnixStream::connect(layout.socket()).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    // A daemon that stops reading after the verb (an older one) still answers: read anyway.
    let _ = (&s).write_all(req);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    let _ = BufReader::new(&s).take(4096).read_line(&mut reply);
    let reply = reply.trim_end();
    (!reply.is_empty()).then(|| reply.to_string())
}

/// `relayq flush` / `sendmail -q`: ask a running daemon to flush what the filter selects,
/// or do one pass here over those messages.
pub fn flush(cfg: Config, cfg_flag: Option<PathBuf>, filter: &QueueFilter) -> Result<i32> {
    let layout = Layout::new(&cfg.spool_dir);
    for v in filter
        .ids
        .iter()
        .chain(&filter.domain)
        .chain(&filter.sender)
    {
        if !is_selector(v) {
            return Err(Error::usage(format!(
                "flush: {v:?} is not a queue ID, domain or sender"
            )));
        }
    }
    let everything = filter == &QueueFilter::default();
    if let Some(reply) = ask_flush(&layout, &flush_request(filter)) {
        // Quiet from cron (no terminal, log to syslog), or cron would mail every run.
        let chatty = nix::unistd::isatty(std::io::stdout()).unwrap_or(false) || !cfg.log.syslog;
        let what = filter.describe();
        if let Some(n) = reply.strip_prefix("OK flushing") {
            let left = "`mailq` shows what is left";
            let line = match (n.trim().parse::<usize>().ok(), everything) {
                (Some(n), true) => {
                    format!("the daemon is flushing the queue: {n} message(s); {left}")
                }
                (None, true) => format!("the daemon is flushing the queue; {left}"),
                (Some(0), false) => format!("no queued message matches {what}: nothing to flush"),
                (Some(n), false) => {
                    format!("the daemon is flushing {n} message(s) matching {what}; {left}")
                }
                (None, false) => {
                    format!("the daemon is flushing the messages matching {what}; {left}")
                }
            };
            if chatty {
                println!("relayq: {line}");
            }
            return Ok(0);
        }
        if reply == "ERR unknown request" {
            // A daemon of an earlier version: it only knows FLSH, which flushes everything.
            if let Some(r) = ask_flush(&layout, b"FLSH")
                && r.starts_with("OK")
            {
                if !everything {
                    eprintln!(
                        "relayq: warning: the running daemon is an older version that does not take ID, -qI, -qR or -qS selections: it is flushing the whole queue, not only {what} (restart it to update)"
                    );
                } else if chatty {
                    println!(
                        "relayq: the daemon is flushing the queue; `mailq` shows what is left"
                    );
                }
                return Ok(0);
            }
        }
        let why = reply.strip_prefix("ERR ").unwrap_or(&reply);
        return Err(Error::temp(format!(
            "the relayq daemon did not take the flush: {why}"
        )));
    }
    // Where the log goes: syslog when it is on (from cron a flush prints nothing, or cron
    // would mail every run); stderr too when syslog is off. On a terminal: warnings and
    // errors, a progress line for a large queue, and a summary.
    let tty = nix::unistd::isatty(std::io::stderr()).unwrap_or(false);
    let stderr_level = match (cfg.log.syslog, tty) {
        (false, _) => log::LevelFilter::Trace,
        (true, true) => log::LevelFilter::Warn,
        (true, false) => log::LevelFilter::Error,
    };
    let chatty = tty || !cfg.log.syslog;
    crate::log::init_with(cfg.log.syslog, true, false, stderr_level);
    let d = Daemon::new(cfg, cfg_flag, true)?;
    let stats = d.run_once(filter, tty)?;
    let remaining = Spool::open(&layout).map_or(0, |s| s.count(Queue::Active));
    if chatty {
        println!(
            "relayq: flush done in {:.1}s: {} message(s) tried, {} recipient(s) delivered, {} deferred, {} bounced; {remaining} message(s) still queued",
            stats.elapsed.as_secs_f64(),
            stats.attempted,
            stats.delivered,
            stats.deferred,
            stats.bounced
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::QueueFilter;
    use crate::spool::Rcpt;

    #[test]
    fn flush_request_round_trips() {
        for f in [
            QueueFilter::default(),
            QueueFilter {
                ids: vec!["06B0E9".into(), "06B0F1".into()],
                domain: Some("example.org".into()),
                sender: Some("bob@".into()),
            },
        ] {
            let req = flush_request(&f);
            assert_eq!(&req[..4], b"FLSQ");
            assert_eq!(parse_flush_request(&req[4..]), Ok(f));
        }
    }

    #[test]
    fn malformed_flush_requests_are_refused() {
        let many = "id X\n".repeat(MAX_FLUSH_IDS + 1);
        for bad in [
            &b"\xff\xfe"[..],
            b"id",
            b"id \n",
            b"ids X\n",
            b"domain a\ndomain b\n",
            b"sender a\nsender b\n",
            b"id a\x01b\n",
            b"id a\rb\n",
            many.as_bytes(),
        ] {
            let e = parse_flush_request(bad).expect_err(&String::from_utf8_lossy(bad));
            assert!(e.starts_with("bad flush request"), "{e}");
            assert!(e.len() < 100, "{e}");
        }
        // An empty request is the whole queue; a missing final newline is fine.
        assert_eq!(parse_flush_request(b""), Ok(QueueFilter::default()));
        let f = parse_flush_request(b"domain Example.ORG").unwrap();
        assert_eq!(f.domain.as_deref(), Some("example.org"));
    }

    #[test]
    fn selection_by_id_domain_and_sender() {
        let env = Envelope {
            sender: "Bob@Example.com".into(),
            rcpts: vec![Rcpt {
                addr: "a@mail.one.example".into(),
                ..Rcpt::default()
            }],
            ..Envelope::default()
        };
        let f = |ids: &[&str], d: Option<&str>, s: Option<&str>| QueueFilter {
            ids: ids.iter().map(|x| x.to_string()).collect(),
            domain: d.map(str::to_string),
            sender: s.map(str::to_string),
        };
        assert!(selected(&f(&[], None, None), "06B0E9AA", &env));
        assert!(selected(&f(&["06B0", "X"], None, None), "06B0E9AA", &env));
        assert!(!selected(&f(&["06B1"], None, None), "06B0E9AA", &env));
        assert!(selected(
            &f(&[], Some("one.example"), None),
            "06B0E9AA",
            &env
        ));
        assert!(!selected(
            &f(&[], Some("ne.example"), None),
            "06B0E9AA",
            &env
        ));
        assert!(selected(&f(&[], None, Some("bob@")), "06B0E9AA", &env));
        assert!(!selected(
            &f(&["06B0"], Some("two.example"), None),
            "06B0E9AA",
            &env
        ));
    }
}
