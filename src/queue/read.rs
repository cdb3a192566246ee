//! Reading the queue for a listing, in bounded memory whatever its size: passes over new/,
//! queue/ and hold/ each keeping only the [`PASS`] oldest names above the last one listed
//! (a bounded heap, [`Oldest`]), their envelopes read by several threads a batch at a time.
//! Root's `mailq` and the daemon's answer to an ordinary user's (`only_uid`) share it.

use super::{Entry, RcptInfo};
use crate::spool::{Envelope, Oldest, Queue, QueueId, Spool, is_id};
use crate::state::{RcptState, State};
use std::io;
use std::os::unix::fs::MetadataExt;

/// One spool directory being listed: its name as a queue, and which queue it is.
struct Dir {
    qname: &'static str,
    queue: Queue,
}

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

/// Threads reading queue files: with a cold cache the work is waiting for the disk, and
/// several reads in flight finish sooner than one after another.
const READERS: usize = 8;

/// Names one pass over the directories keeps (about 80 bytes each: 5 MiB), so a million
/// queued are listed in 16 passes.
const PASS: usize = 65_536;

/// A listing reads this many messages first, so that its first lines come at once
/// (`mailq | head -1` with a million queued), then [`BATCH`] at a time (the entries of one
/// batch are in memory together, a few hundred bytes each: 16,384 cost the daemon 10 MiB
/// more than 4,096 and were no faster).
const FIRST_BATCH: usize = 256;
const BATCH: usize = 4_096;

/// A queue file to list: its name, its directory (index in [`DIRS`]) and its inode. Ordered
/// by name (an ID begins with the time it was made: oldest first), then directory.
type QFile = (String, usize, u64);

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

/// Read `files` (sorted here by inode: on a cold cache the inode table is then read in
/// order, not at random) by up to [`READERS`] threads; the entries in arrival order. Files
/// that are not valid queue files (or not `only_uid`'s) are skipped.
fn read_files(spool: &Spool, files: &mut [QFile], only_uid: Option<u32>) -> Vec<Entry> {
    let owner = spool.owner();
    files.sort_unstable_by_key(|f| f.2);
    let read = |part: &[QFile]| {
        let mut buf = Vec::with_capacity(crate::spool::HEAD_BYTES);
        part.iter()
            .filter_map(|(name, d, _)| {
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

/// One pass: the `k` oldest queue files of new/, queue/ and hold/ that come after `after`
/// (a name and directory), oldest first, and whether more are left.
fn oldest_after(spool: &Spool, after: Option<&(String, usize)>, k: usize) -> (Vec<QFile>, bool) {
    let mut pick: Oldest<QFile> = Oldest::new(k);
    for (d, dir) in DIRS.iter().enumerate() {
        // A directory that cannot be read lists nothing, as an empty one.
        let _ = spool.scan_ino(dir.queue, |name, ino| {
            if !is_id(name) || after.is_some_and(|(a, ad)| (name, d) <= (a.as_str(), *ad)) {
                return;
            }
            if pick.wants(|top| (name, d) < (top.0.as_str(), top.1)) {
                pick.offer((name.to_string(), d, ino));
            } else {
                pick.skip();
            }
        });
    }
    pick.finish()
}

/// Every queued message (new/, queue/, hold/; `only_uid`: only those that uid submitted),
/// handed to `f` a batch at a time as it is read: oldest first by queue ID (an ID begins
/// with the time the message was queued), each batch in arrival order. Never the whole
/// queue in memory: [`PASS`] names and one batch of entries at most. A message that moves
/// between directories while it runs is listed at most once (twice only within one pass,
/// as a listing of all the names at once would).
pub fn scan_batches(
    spool: &Spool,
    only_uid: Option<u32>,
    mut f: impl FnMut(Vec<Entry>) -> io::Result<()>,
) -> io::Result<()> {
    let mut after = None;
    let mut size = FIRST_BATCH;
    loop {
        let (mut files, more) = oldest_after(spool, after.as_ref(), PASS);
        after = files.last().map(|(name, d, _)| (name.clone(), *d));
        let mut rest = &mut files[..];
        while !rest.is_empty() {
            let (part, next) = rest.split_at_mut(size.min(rest.len()));
            rest = next;
            let entries = read_files(spool, part, only_uid);
            size = BATCH;
            if !entries.is_empty() {
                f(entries)?;
            }
        }
        if !more || after.is_none() {
            return Ok(());
        }
    }
}
