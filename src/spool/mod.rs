//! The spool, one guarded door: this module owns every path inside the spool and every state
//! change of a message (Postfix's `mail_queue_rename()` and qmail-queue are the models).
//! Nothing else builds a spool path, renames or unlinks a queue file.
//!
//! - [`QueueId`]: a validated queue ID, the only name a message has.
//! - [`Queue`]: the directories a message moves through (`tmp/ new/ queue/ hold/ failed/
//!   corrupt/`); its delivery journal lives apart in `journal/ID`, so a message is one file
//!   to move and every transition is one rename (plus a directory fsync) through
//!   [`Spool::transition`].
//! - [`Spool`]: the spool opened as directory fds (`O_DIRECTORY|O_NOFOLLOW`, checked with
//!   fstat), so no link planted inside the spool is ever followed, whoever runs the code.
//!   Root's queue commands open it with [`Spool::open_as_owner`], which first becomes the
//!   spool's owner, as Postfix's postsuper runs as `mail_owner`.
//! - [`Draft`]: the durable write path (`tmp/` → fsync → rename into `new/` → fsync).
//! - [`Layout::init`]: the only code that must stay root; it works on fds too.
//! - [`Oldest`]: the oldest `k` names of a directory too large to list, in memory for `k`.
//!
//! See docs/spool.md for the layout and who owns what.

mod draft;
mod envelope;
mod files;
mod init;
mod oldest;
pub use draft::Draft;
pub use envelope::*;
pub use files::{DEFAULT_QUEUE_FILE_LIMIT, PIDFILE, PidFile, queue_file_limit};
pub use oldest::Oldest;

use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags};
use nix::sys::stat::{FileStat, Mode};
use std::fs::File;
use std::io::{self, BufWriter};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The directories a message moves through, each one a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Being written; never read.
    Tmp,
    /// Committed, not yet seen by the daemon.
    New,
    /// The daemon's: being delivered or waiting for a retry (`queue/`).
    Active,
    /// Put aside by `relayq hold`.
    Hold,
    /// Every recipient done, some failed and bounced: kept `keep_failed`.
    Failed,
    /// A file the daemon could not trust, set aside under a new name.
    Corrupt,
}

/// The group `relayq-postdrop` is installed setgid to, which owns `tmp/` and `new/` and
/// nothing else (Postfix's `postdrop`).
pub const DROP_GROUP: &str = "relayqdrop";

const NQUEUES: usize = 6;
/// Index of `journal/` and `run/` in [`DIRS`], after the queues.
const JOURNAL: usize = NQUEUES;
const RUN: usize = NQUEUES + 1;

/// (name, mode) of each directory, queues first in [`Queue`] order. tmp/ and new/ are 1770
/// (user and group rwx, sticky): only the daemon's user and processes holding its group
/// (setgid `relayq-postdrop`, which creates one file and fsyncs the directory, nothing else)
/// can enter them; sticky, so no submitter can remove another's file. Ordinary users are not
/// in the group. Everything past new/ belongs to the daemon's user alone. The spool root
/// itself belongs to root (mode 0755), so the daemon's user cannot replace these directories.
pub const DIRS: &[(&str, u32)] = &[
    ("tmp", 0o1770),
    ("new", 0o1770),
    ("queue", 0o700),
    ("hold", 0o700),
    ("failed", 0o700),
    ("corrupt", 0o700),
    ("journal", 0o700),
    ("run", 0o755),
];

impl Queue {
    pub const ALL: [Queue; NQUEUES] = [
        Queue::Tmp,
        Queue::New,
        Queue::Active,
        Queue::Hold,
        Queue::Failed,
        Queue::Corrupt,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The directory's name (`queue` for [`Queue::Active`]).
    pub fn dir_name(self) -> &'static str {
        DIRS[self.index()].0
    }
}

/// A queue ID: seconds, microseconds and 32 random bits in upper-case hex, unique across
/// processes and hosts (creation uses O_EXCL and RENAME_NOREPLACE besides). Only names that
/// could have been made this way are IDs, so an ID is never a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(String);

impl QueueId {
    pub fn generate() -> QueueId {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut r = [0u8; 4];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r).is_err() {
            r = (std::process::id() ^ now.subsec_nanos()).to_le_bytes();
        }
        QueueId(format!(
            "{:09X}{:05X}{:08X}",
            now.as_secs(),
            now.subsec_micros(),
            u32::from_le_bytes(r)
        ))
    }

    pub fn parse(s: &str) -> Option<QueueId> {
        is_id(s).then(|| QueueId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for QueueId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A fresh queue ID as a string.
pub fn new_id() -> String {
    QueueId::generate().0
}

/// True for names `new_id` produces (and nothing that could be a path).
pub fn is_id(s: &str) -> bool {
    (10..=40).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
}

/// Where the spool is. Paths only for messages to people and for the socket; everything
/// that touches the spool's contents goes through a [`Spool`].
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

fn nix_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Open `name` in `dir` to read, without following a link or waiting on a FIFO; regular
/// files only (every read of a spool file goes through here).
fn open_regular(dir: &OwnedFd, name: &str) -> io::Result<(File, std::fs::Metadata)> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(nix_io)?;
    let f = File::from(fd);
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((f, meta))
}

/// `dir` opened again, to read its entries. Not a dup: a dup shares the read position, and
/// two threads reading a directory at once (the daemon's refill and a listing, say) would
/// each see names twice and miss others.
fn reading(dir: &OwnedFd) -> io::Result<nix::dir::Dir> {
    nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(nix_io)
}

/// Open a directory below `dir` without following a link, as a real directory.
fn open_dir(dir: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => {
            io::Error::other(format!("{name} is not a directory (a symlink or a file)"))
        }
        e => nix_io(e),
    })
}

fn open_root(layout: &Layout) -> Result<OwnedFd> {
    nix::fcntl::openat(
        nix::fcntl::AT_FDCWD,
        &layout.root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Error::temp(format!(
            "spool {}: {}: run `relayq init` as root",
            layout.root.display(),
            nix_io(e)
        ))
    })
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// A directory's path, for messages to people (never opened by path).
    pub fn display_dir(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    pub fn socket(&self) -> PathBuf {
        self.run_file("submit.sock")
    }

    /// A file in run/: the daemon's socket, lock and status notes (information, not mail).
    pub fn run_file(&self, name: &str) -> PathBuf {
        self.root.join("run").join(name)
    }

    /// Check the spool exists, for a clear error before reading a message.
    pub fn check_exists(&self) -> Result<()> {
        let ok = open_root(self).ok().is_some_and(|r| {
            ["new", "tmp"].iter().all(|d| {
                nix::sys::stat::fstatat(&r, *d, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
            })
        });
        if !ok {
            return Err(Error::temp(format!(
                "spool {} is missing or incomplete: run `relayq init` as root",
                self.root.display()
            )));
        }
        Ok(())
    }
}

/// A name in a spool directory and its inode (for reading in disk order).
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub ino: u64,
}

/// The spool, opened. Directories are opened on first use (a submitter needs only tmp/ and
/// new/), each without following links and checked to be a directory of the spool's owner.
pub struct Spool {
    layout: Layout,
    root: OwnedFd,
    owner: u32,
    group: u32,
    dirs: [OnceLock<std::result::Result<OwnedFd, String>>; NQUEUES + 2],
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spool({})", self.layout.root.display())
    }
}

impl Spool {
    /// Open the spool as whoever we are.
    pub fn open(layout: &Layout) -> Result<Spool> {
        let root = open_root(layout)?;
        let st = nix::sys::stat::fstatat(&root, "queue", nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()
            .filter(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .ok_or_else(|| {
                Error::temp(format!(
                    "spool {} is missing or incomplete: run `relayq init` as root",
                    layout.root.display()
                ))
            })?;
        Ok(Spool {
            layout: layout.clone(),
            root,
            owner: st.st_uid,
            group: st.st_gid,
            dirs: Default::default(),
        })
    }

    /// Open the spool as its owner: root becomes the owner first (for good: these are one-shot
    /// commands and the daemon), so nothing the owner planted in the spool can make root act;
    /// the owner stays itself; anyone else is refused.
    pub fn open_as_owner(layout: &Layout) -> Result<Spool> {
        let spool = Spool::open(layout)?;
        let me = nix::unistd::geteuid().as_raw();
        if me == 0 && spool.owner != 0 {
            let g = nix::unistd::Gid::from_raw(spool.group);
            // And postdrop's group, when it is another, to read what users submitted.
            let mut groups = vec![g];
            if let Ok(t) = spool.lstat_dir("tmp")
                && t.st_gid != spool.group
            {
                groups.push(nix::unistd::Gid::from_raw(t.st_gid));
            }
            nix::unistd::setgroups(&groups)
                .map_err(|e| Error::software(format!("setgroups: {e}")))?;
            nix::unistd::setgid(g).map_err(|e| Error::software(format!("setgid: {e}")))?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(spool.owner))
                .map_err(|e| Error::software(format!("setuid: {e}")))?;
        } else if me != 0 && me != spool.owner {
            return Err(Error::noperm(format!(
                "the spool {} belongs to uid {}: run as root or as that user",
                layout.root.display(),
                spool.owner
            )));
        }
        Ok(spool)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The spool's owner (the daemon's user) and group.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    pub fn group(&self) -> u32 {
        self.group
    }

    /// The status of one of [`DIRS`] (or of the root, for `"."`), links not followed: for
    /// the owner and mode checks of `perms`.
    pub fn lstat_dir(&self, name: &str) -> io::Result<FileStat> {
        nix::sys::stat::fstatat(&self.root, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(nix_io)
    }

    fn dir(&self, i: usize) -> io::Result<&OwnedFd> {
        let r = self.dirs[i].get_or_init(|| {
            let name = DIRS[i].0;
            let fd = open_dir(&self.root, name)
                .map_err(|e| format!("{}: {e}", self.layout.display_dir(name)))?;
            let st = nix::sys::stat::fstat(&fd).map_err(|e| e.to_string())?;
            if st.st_uid != self.owner {
                return Err(format!(
                    "{} is owned by uid {}, not the spool owner {}",
                    self.layout.display_dir(name),
                    st.st_uid,
                    self.owner
                ));
            }
            Ok(fd)
        });
        r.as_ref().map_err(|e| io::Error::other(e.clone()))
    }

    /// Every directory a queue command works in (the queues it moves messages between, and
    /// journal/) is a real directory of the spool's owner: else one error naming the first
    /// that is not, before anything is touched.
    pub fn check(&self) -> Result<()> {
        for i in [Queue::New, Queue::Active, Queue::Hold]
            .map(Queue::index)
            .into_iter()
            .chain([JOURNAL])
        {
            self.dir(i).map_err(|e| {
                Error::config(format!("{e}: move it away and run `relayq init` as root"))
            })?;
        }
        Ok(())
    }

    fn qdir(&self, q: Queue) -> io::Result<&OwnedFd> {
        self.dir(q.index())
    }

    /// The names in a directory (UTF-8 names only; nothing else is ever ours).
    fn list_dir(&self, i: usize) -> io::Result<Vec<Listed>> {
        let mut d = reading(self.dir(i)?)?;
        let mut v = Vec::new();
        for e in d.iter() {
            let e = e.map_err(nix_io)?;
            let Ok(name) = e.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            v.push(Listed {
                name: name.to_string(),
                ino: e.ino(),
            });
        }
        Ok(v)
    }

    /// Every name in a queue, one at a time, in directory order: for a queue too large to
    /// hold as a list (the daemon's scan of a million queued, oldest first).
    pub fn scan(&self, q: Queue, mut f: impl FnMut(&str)) -> io::Result<()> {
        self.scan_ino(q, |name, _| f(name))
    }

    /// [`Spool::scan`] with each name's inode (to read the files in disk order).
    pub fn scan_ino(&self, q: Queue, mut f: impl FnMut(&str, u64)) -> io::Result<()> {
        let mut d = reading(self.qdir(q)?)?;
        for e in d.iter() {
            let e = e.map_err(nix_io)?;
            if let Ok(name) = e.file_name().to_str()
                && name != "."
                && name != ".."
            {
                f(name, e.ino());
            }
        }
        Ok(())
    }

    /// Every regular file's name in a queue, one at a time, from the directory entries
    /// alone (a file's type is looked up only where the file system does not say it):
    /// nothing is opened, so a million queued are counted in a second.
    pub fn scan_files(&self, q: Queue, f: impl FnMut(&str)) -> io::Result<()> {
        self.scan_regular(q.index(), f)
    }

    fn scan_regular(&self, i: usize, mut f: impl FnMut(&str)) -> io::Result<()> {
        use nix::dir::Type;
        let dir = self.dir(i)?;
        let mut d = reading(dir)?;
        for e in d.iter() {
            let e = e.map_err(nix_io)?;
            let Ok(name) = e.file_name().to_str() else {
                continue;
            };
            let regular = match e.file_type() {
                Some(t) => t == Type::File,
                None => {
                    nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
                }
            };
            if regular {
                f(name);
            }
        }
        Ok(())
    }

    /// Every name in a queue (queue files, and whatever else is there).
    pub fn list(&self, q: Queue) -> io::Result<Vec<Listed>> {
        self.list_dir(q.index())
    }

    /// The messages in a queue, sorted (oldest first).
    pub fn ids(&self, q: Queue) -> Vec<QueueId> {
        let mut v: Vec<QueueId> = self
            .list(q)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|l| QueueId::parse(&l.name))
            .collect();
        v.sort();
        v
    }

    /// How many messages a queue holds.
    pub fn count(&self, q: Queue) -> usize {
        self.list(q)
            .map(|v| v.iter().filter(|l| is_id(&l.name)).count())
            .unwrap_or(0)
    }

    /// Open a queue file to read, without following links or blocking on a FIFO; regular
    /// files only.
    pub fn open_file(&self, q: Queue, name: &str) -> io::Result<(File, std::fs::Metadata)> {
        open_regular(self.qdir(q)?, name)
    }

    /// Read the envelope of a queue file (without trusting it): the envelope, the offset of
    /// the message, and the file's metadata.
    pub fn read_envelope(
        &self,
        q: Queue,
        name: &str,
    ) -> std::result::Result<(Envelope, u64, std::fs::Metadata), String> {
        let (f, meta) = self
            .open_file(q, name)
            .map_err(|e| format!("cannot open: {e}"))?;
        let mut r = io::BufReader::new(f);
        let env = Envelope::read_from(&mut r)?;
        let off = io::Seek::stream_position(&mut r).map_err(|e| e.to_string())?;
        Ok((env, off, meta))
    }

    /// A name's status in a queue (links not followed).
    pub fn stat(&self, q: Queue, name: &str) -> Option<FileStat> {
        nix::sys::stat::fstatat(
            self.qdir(q).ok()?,
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()
    }

    pub fn contains(&self, q: Queue, id: &QueueId) -> bool {
        self.stat(q, id.as_str()).is_some()
    }

    /// The first of `among` that holds the message.
    pub fn locate(&self, id: &QueueId, among: &[Queue]) -> Option<Queue> {
        among.iter().copied().find(|q| self.contains(*q, id))
    }

    /// The status of a queue's directory, through the fd every later operation uses.
    pub fn queue_stat(&self, q: Queue) -> io::Result<FileStat> {
        nix::sys::stat::fstat(self.qdir(q)?).map_err(nix_io)
    }

    /// Whether we (by our real uid, as access(2)) may create files in a queue.
    pub fn writable(&self, q: Queue) -> bool {
        use std::os::fd::AsRawFd;
        self.qdir(q).is_ok_and(|fd| {
            // SAFETY: a valid fd and a NUL-terminated literal.
            unsafe {
                libc::faccessat(fd.as_raw_fd(), c".".as_ptr(), libc::W_OK | libc::X_OK, 0) == 0
            }
        })
    }

    /// Make a directory's entries durable.
    pub fn sync(&self, q: Queue) -> io::Result<()> {
        nix::unistd::fsync(self.qdir(q)?).map_err(nix_io)
    }

    // ---- the transitions: every rename and unlink of a queue file is below --------------

    /// The one rename: `from/name` to `to/to_name`, never replacing a file, then (when asked)
    /// fsync the destination directory, which commits the rename.
    fn rename(
        &self,
        from: Queue,
        name: &str,
        to: Queue,
        to_name: &str,
        sync: bool,
    ) -> io::Result<()> {
        let (src, dst) = (self.qdir(from)?, self.qdir(to)?);
        match nix::fcntl::renameat2(src, name, dst, to_name, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {}
            Err(Errno::EINVAL | Errno::ENOSYS) => {
                // A filesystem without RENAME_NOREPLACE: IDs are unique, so a plain rename
                // after checking is enough.
                if nix::sys::stat::fstatat(dst, to_name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok()
                {
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                nix::fcntl::renameat(src, name, dst, to_name).map_err(nix_io)?;
            }
            Err(e) => return Err(nix_io(e)),
        }
        if sync {
            self.sync(to)?;
        }
        Ok(())
    }

    /// The one unlink of a spool file.
    fn unlink(&self, dir: usize, name: &str) -> io::Result<()> {
        nix::unistd::unlinkat(
            self.dir(dir)?,
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(nix_io)
    }

    /// A state change of message `id` from one queue to another (hold, release, fail, ...),
    /// committed (the destination fsynced) when this returns. Its journal stays where it is.
    pub fn transition(&self, id: &QueueId, from: Queue, to: Queue) -> io::Result<()> {
        self.rename(from, id.as_str(), to, id.as_str(), true)
    }

    /// new/ → queue/, uncommitted: the daemon picks up a batch, then [`Spool::sync`]s
    /// queue/ once (a crash before leaves the file in new/, where it is picked up again).
    pub fn pickup(&self, id: &QueueId) -> io::Result<()> {
        self.rename(Queue::New, id.as_str(), Queue::Active, id.as_str(), false)
    }

    /// Set a file the daemon cannot trust aside in corrupt/, under a fresh name that keeps
    /// what is safe of the old one. Returns the new name.
    pub fn set_aside(&self, from: Queue, name: &str) -> io::Result<String> {
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
            .take(64)
            .collect();
        let to = format!("{}-{safe}", new_id());
        self.rename(from, name, Queue::Corrupt, &to, true)?;
        Ok(to)
    }

    /// Remove message `id` from queue `from`, then its journal; the directory is fsynced. A
    /// message that is not there (moved by an admin meanwhile) keeps its journal: Err(NotFound).
    pub fn remove(&self, id: &QueueId, from: Queue) -> io::Result<()> {
        self.unlink(from.index(), id.as_str())?;
        match self.unlink(JOURNAL, id.as_str()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.sync(from)
    }

    /// Remove a file whose time is up (cleanup of tmp/, failed/ and corrupt/), with the
    /// journal of a message in failed/.
    pub fn expire(&self, q: Queue, name: &str) -> io::Result<()> {
        self.unlink(q.index(), name)?;
        if q == Queue::Failed && is_id(name) {
            let _ = self.unlink(JOURNAL, name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    fn spool() -> (tempfile::TempDir, Spool) {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path().join("spool"));
        let me = nix::unistd::getuid().as_raw();
        let g = nix::unistd::getgid().as_raw();
        l.init(me, g).unwrap();
        l.init(me, g).unwrap();
        let s = Spool::open(&l).unwrap();
        (d, s)
    }

    #[test]
    fn ids_unique_and_valid() {
        let mut s = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = new_id();
            assert!(is_id(&id), "{id}");
            assert!(s.insert(id));
        }
        assert!(!is_id("../etc"));
        assert!(!is_id("abc"));
        assert!(QueueId::parse("0123456789ab").is_none());
    }

    #[test]
    fn draft_commit_and_drop() {
        let (d, s) = spool();
        let mut dr = Draft::create(&s).unwrap();
        dr.writer().write_all(b"x").unwrap();
        let id = dr.commit().unwrap();
        let root = d.path().join("spool");
        assert_eq!(fs::read(root.join("new").join(&id)).unwrap(), b"x");
        let mut dr = Draft::create(&s).unwrap();
        dr.writer().write_all(b"partial").unwrap();
        drop(dr);
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn transitions_keep_the_journal_apart() {
        let (d, s) = spool();
        let root = d.path().join("spool");
        let id = QueueId::parse(&Draft::create(&s).unwrap().commit().unwrap()).unwrap();
        s.pickup(&id).unwrap();
        s.journal_append(&id)
            .unwrap()
            .write_all(b"d 0 1 250 OK\n")
            .unwrap();
        s.transition(&id, Queue::Active, Queue::Hold).unwrap();
        s.transition(&id, Queue::Hold, Queue::New).unwrap();
        assert_eq!(s.journal(&id), b"d 0 1 250 OK\n");
        assert_eq!(s.locate(&id, &Queue::ALL), Some(Queue::New));
        // Never replaces: a second file of the same name stays where it is.
        fs::write(root.join("hold").join(id.as_str()), "other").unwrap();
        assert!(s.transition(&id, Queue::New, Queue::Hold).is_err());
        assert_eq!(s.sweep_journals(u64::MAX / 2, 0), 0, "live journal kept");
        s.remove(&id, Queue::New).unwrap();
        assert!(s.journal(&id).is_empty());
        // Removing what is not there keeps the journal.
        s.journal_append(&id).unwrap().write_all(b"x\n").unwrap();
        fs::remove_file(root.join("hold").join(id.as_str())).unwrap();
        assert!(s.remove(&id, Queue::Active).is_err());
        assert_eq!(s.journal(&id), b"x\n");
        assert_eq!(s.sweep_journals(u64::MAX / 2, 0), 1, "orphan swept");
    }

    #[test]
    fn links_in_the_spool_are_not_followed() {
        let (d, _) = spool();
        let root = d.path().join("spool");
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::remove_dir(root.join("hold")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("hold")).unwrap();
        let s = Spool::open(&Layout::new(&root)).unwrap();
        let id = QueueId::parse(&Draft::create(&s).unwrap().commit().unwrap()).unwrap();
        let e = s.transition(&id, Queue::New, Queue::Hold).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        let me = nix::unistd::getuid().as_raw();
        let e = Layout::new(&root)
            .init(me, nix::unistd::getgid().as_raw())
            .unwrap_err();
        assert!(e.msg.contains("hold is not a directory"), "{}", e.msg);
    }

    #[test]
    fn migrates_old_journals_once() {
        let (d, s) = spool();
        let root = d.path().join("spool");
        let id = new_id();
        fs::write(root.join("hold").join(&id), "m").unwrap();
        fs::write(
            root.join("queue").join(format!("{id}.st")),
            "d 0 1 250 OK\n",
        )
        .unwrap();
        assert_eq!(s.migrate_journals(), 1);
        assert_eq!(s.migrate_journals(), 0);
        assert_eq!(s.journal(&QueueId::parse(&id).unwrap()), b"d 0 1 250 OK\n");
    }
}
