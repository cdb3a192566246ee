//! Queue listing (`mailq`, `sendmail -bp`, `relayq queue [--json]`): one entry per message
//! with its recipients' states, in Postfix's familiar layout or as JSON lines like
//! `postqueue -j`. Root and the spool owner read the spool; other users ask the daemon,
//! which shows them only their own messages, streamed as it reads them (`write_to`).
//! `read` reads the queue in bounded memory, a batch at a time; `render` writes the layouts
//! and the lines above them (routes down, relays waiting for their rate limit).

mod read;
mod render;

pub use read::scan_batches;
pub use render::{Listing, RateHold, json_to, rate_holds};

use crate::error::{Error, Result};
use crate::spool::{Layout, Spool};
use crate::state;
use serde::Serialize;
use std::io::{self, BufRead};

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

/// Write the listing of `spool` (`only_uid`: that user's messages only) to `out`, batch by
/// batch, each flushed: root's `mailq`, and the daemon's answer to an ordinary user's.
/// Buffer `out`.
pub fn write_to(
    spool: &Spool,
    only_uid: Option<u32>,
    as_json: bool,
    out: &mut dyn io::Write,
) -> io::Result<()> {
    if as_json {
        scan_batches(spool, only_uid, |e| {
            json_to(&e, out).and_then(|()| out.flush())
        })
    } else {
        let relay = state::RelayState::down(spool.layout());
        let mut l = Listing::new(relay.as_ref(), out).holding(rate_holds(spool.layout()));
        scan_batches(spool, only_uid, |e| l.entries(&e).and_then(|()| l.flush()))
            .and_then(|()| l.finish())
    }
}

/// List the queue for the calling user, to `out`.
pub fn list(layout: &Layout, as_json: bool, out: &mut dyn io::Write) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let owner = Spool::open(layout)?.owner();
    let written = if me == 0 || me == owner {
        // Root reads the queue as the spool's owner, as Postfix's showq runs as mail_owner.
        let spool = Spool::open_as_owner(layout)?;
        write_to(&spool, None, as_json, out)
    } else {
        copy_answer(&mut listing_from_daemon(layout, as_json)?, out)?
    };
    match written.and_then(|()| out.flush()) {
        // The reader has all it wanted (`mailq | head`): not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Error::temp(format!("cannot write the listing: {e}"))),
    }
}

/// Copy the daemon's listing to `out` as it comes. A failed read is an error here; a failed
/// write is returned, for the caller to tell a closed pipe from a failure.
fn copy_answer(r: &mut impl BufRead, out: &mut dyn io::Write) -> Result<io::Result<()>> {
    loop {
        let buf = match r.fill_buf() {
            Ok([]) => return Ok(Ok(())),
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::temp(format!(
                    "the relayq daemon's listing broke off: {e}"
                )));
            }
        };
        let n = buf.len();
        if let Err(e) = out.write_all(buf).and_then(|()| out.flush()) {
            return Ok(Err(e));
        }
        r.consume(n);
    }
}

/// Ordinary users: the daemon lists their own messages (it knows the peer's uid). Asked
/// for in chunks (`LSTC`, `LSCJ`: `sink::ChunkWriter`'s framing), so a listing the daemon
/// cut off (stopped, or past its deadline) is an error here, not a shorter listing. A daemon
/// of an earlier version answers `ERR unknown request`; it is asked again the old way, a
/// plain stream that the closed connection ends.
fn listing_from_daemon(layout: &Layout, as_json: bool) -> Result<Box<dyn BufRead>> {
    let verb: &[u8; 4] = if as_json { b"LSCJ" } else { b"LSTC" };
    match from_daemon(layout, verb) {
        Ok(r) => Ok(Box::new(io::BufReader::with_capacity(
            64 * 1024,
            crate::sink::ChunkReader::new(r),
        ))),
        Err(e) if e.msg == "unknown request" => {
            let verb: &[u8; 4] = if as_json { b"LSTJ" } else { b"LIST" };
            Ok(Box::new(from_daemon(layout, verb)?))
        }
        Err(e) => Err(e),
    }
}

/// A listing request to the daemon: the answer past its first line `OK` (an `ERR` line is
/// the error).
fn from_daemon(
    layout: &Layout,
    verb: &[u8; 4],
) -> Result<io::BufReader<std::os::unix::net::UnixStream>> {
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
    if let Err(e) = s.write_all(verb) {
        return Err(crate::sink::refusal(&s).unwrap_or_else(|| Error::temp(e.to_string())));
    }
    let mut r = io::BufReader::with_capacity(64 * 1024, s);
    let mut first = Vec::new();
    (&mut r)
        .take(4096)
        .read_until(b'\n', &mut first)
        .map_err(|e| Error::temp(e.to_string()))?;
    let first = String::from_utf8_lossy(&first);
    match first.strip_suffix('\n') {
        Some("OK") => Ok(r),
        Some(err) => Err(Error::temp(err.trim_start_matches("ERR ").to_string())),
        None => Err(Error::temp("the relayq daemon sent no answer")),
    }
}
