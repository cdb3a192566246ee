//! The spool's files besides the queue files: each message's journal (`journal/ID`, read,
//! appended, swept when orphaned, migrated from relayq 0.1's `ID.st`) and the small files
//! in `run/` (the lock, the limits postdrop reads, the daemon's pidfile), all through the directory fds.

use super::*;
use std::io::Read;

/// The largest queue file the spool takes for a `max_message_size`: the message, its
/// envelope, and room for the header lines `sendmail` adds. The daemon sets aside anything
/// larger; `relayq-postdrop` refuses it (from `run/limits`, written by `relayq init` and the
/// daemon, so postdrop needs no config).
pub fn queue_file_limit(max_message_size: u64) -> u64 {
    max_message_size.saturating_add(MAX_ENVELOPE_BYTES as u64 + (1 << 20))
}

/// postdrop's limit when `run/limits` is missing: the default `max_message_size` (50 MiB).
pub const DEFAULT_QUEUE_FILE_LIMIT: u64 = 50 << 20;

/// The name in run/ of the limits file.
const LIMITS: &str = "limits";

/// The name in run/ of the daemon's pidfile (for init scripts, `prerm`, `kill -HUP`).
pub const PIDFILE: &str = "relayq.pid";

/// The daemon's pidfile, removed when dropped if it still names this process.
pub struct PidFile {
    run: OwnedFd,
    pid: u32,
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let names_us = open_regular(&self.run, PIDFILE).is_ok_and(|(f, _)| {
            let mut s = String::new();
            f.take(64).read_to_string(&mut s).is_ok() && s.trim() == self.pid.to_string()
        });
        if names_us {
            let _ =
                nix::unistd::unlinkat(&self.run, PIDFILE, nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
    }
}

impl Spool {
    // ---- journals ---------------------------------------------------------------------

    /// A message's journal (empty when it has none), at most 16 MiB.
    pub fn journal(&self, id: &QueueId) -> Vec<u8> {
        let mut v = Vec::new();
        if let Ok((f, _)) = self.dir(JOURNAL).and_then(|d| open_regular(d, id.as_str())) {
            let _ = f.take(16 << 20).read_to_end(&mut v);
        }
        v
    }

    /// Each non-empty journal of a message in `q`: its ID and modification time (seconds,
    /// nanoseconds), for `relayq status`, which reads only the newest.
    pub fn journals_in(&self, q: Queue) -> io::Result<Vec<(QueueId, (i64, i64))>> {
        let (jdir, qdir) = (self.dir(JOURNAL)?, self.qdir(q)?);
        let stat = |d: &OwnedFd, name: &str| {
            nix::sys::stat::fstatat(d, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()
        };
        let mut out = Vec::new();
        self.scan_regular(JOURNAL, |name| {
            if let Some(id) = QueueId::parse(name)
                && let Some(st) = stat(jdir, name).filter(|st| st.st_size > 0)
                && stat(qdir, name).is_some()
            {
                out.push((id, (st.st_mtime, st.st_mtime_nsec)));
            }
        })?;
        Ok(out)
    }

    /// Open a message's journal to append to (created if need be).
    pub fn journal_append(&self, id: &QueueId) -> io::Result<File> {
        let fd = nix::fcntl::openat(
            self.dir(JOURNAL)?,
            id.as_str(),
            OFlag::O_WRONLY
                | OFlag::O_APPEND
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(nix_io)?;
        Ok(File::from(fd))
    }

    /// Journals older than `min_age` seconds whose message is in no queue (its removal was
    /// cut short by a crash, or it was set aside): removed. A message moving between queues
    /// during the scan is in one of them at each look, so each name is looked for twice.
    pub fn sweep_journals(&self, now: u64, min_age: u64) -> usize {
        let (Ok(names), Ok(jdir)) = (self.list_dir(JOURNAL), self.dir(JOURNAL)) else {
            return 0;
        };
        let live = [Queue::New, Queue::Active, Queue::Hold, Queue::Failed];
        let mut n = 0;
        for l in names {
            let Some(id) = QueueId::parse(&l.name) else {
                continue;
            };
            let old = nix::sys::stat::fstatat(
                jdir,
                id.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok_and(|s| (s.st_mtime.max(0) as u64).saturating_add(min_age) <= now);
            if old && self.locate(&id, &live).is_none() && self.locate(&id, &live).is_none() {
                let _ = self.unlink(JOURNAL, id.as_str());
                n += 1;
            }
        }
        n
    }

    /// Move the journals of an older spool (`queue/ID.st` beside the message, and in hold/,
    /// failed/, new/) into journal/, once. A journal already in journal/ wins. Returns how
    /// many moved.
    pub fn migrate_journals(&self) -> usize {
        let mut n = 0;
        let Ok(jdir) = self.dir(JOURNAL) else {
            return 0;
        };
        for q in [
            Queue::Active,
            Queue::Hold,
            Queue::Failed,
            Queue::New,
            Queue::Corrupt,
        ] {
            // Streamed: only the (rare) journals are kept, never a million queue names.
            let mut old = Vec::new();
            let scanned = self.scan(q, |name| {
                if name.strip_suffix(".st").is_some_and(is_id) {
                    old.push(name.to_string());
                }
            });
            let (Ok(()), Ok(src)) = (scanned, self.qdir(q)) else {
                continue;
            };
            for name in old {
                let id = &name[..name.len() - 3];
                if nix::fcntl::renameat2(
                    src,
                    name.as_str(),
                    jdir,
                    id,
                    RenameFlags::RENAME_NOREPLACE,
                )
                .is_ok()
                {
                    n += 1;
                }
            }
        }
        if n > 0 {
            let _ = nix::unistd::fsync(jdir);
        }
        n
    }

    // ---- run/ ---------------------------------------------------------------------------

    /// Open a file in run/ to read (the daemon's lock, to test it), without following a link
    /// or waiting on a FIFO; regular files only.
    pub fn open_run_file(&self, name: &str) -> Option<File> {
        open_regular(self.dir(RUN).ok()?, name).ok().map(|(f, _)| f)
    }

    /// Replace a small file in run/ atomically (a new file under a random name, then
    /// rename), owned by the spool's owner. Not fsynced: run/ holds information, not mail.
    fn write_run(&self, name: &str, text: &str) -> io::Result<()> {
        let dir = self.dir(RUN)?;
        let tmp = format!("{name}.{}", new_id());
        let fd = nix::fcntl::openat(
            dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(nix_io)?;
        let mut f = File::from(fd);
        let written = io::Write::write_all(&mut f, text.as_bytes()).and_then(|()| {
            nix::unistd::fchown(&f, Some(nix::unistd::Uid::from_raw(self.owner)), None)
                .map_err(nix_io)?;
            nix::fcntl::renameat(dir, tmp.as_str(), dir, name).map_err(nix_io)
        });
        if written.is_err() {
            let _ =
                nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        written
    }

    /// Record the largest queue file for postdrop (see [`queue_file_limit`]).
    pub fn write_limits(&self, max_message_size: u64) -> io::Result<()> {
        let limit = queue_file_limit(max_message_size);
        self.write_run(LIMITS, &format!("max-queue-file {limit}\n"))
    }

    /// The largest queue file postdrop may take: `run/limits` if the spool's owner wrote it,
    /// else [`DEFAULT_QUEUE_FILE_LIMIT`]'s.
    pub fn queue_file_limit(&self) -> u64 {
        let written = self.open_run_file(LIMITS).and_then(|f| {
            let st = nix::sys::stat::fstat(&f).ok()?;
            if st.st_uid != self.owner || st.st_mode & 0o022 != 0 {
                return None;
            }
            let mut s = String::new();
            f.take(4096).read_to_string(&mut s).ok()?;
            s.lines()
                .find_map(|l| l.strip_prefix("max-queue-file ")?.trim().parse().ok())
        });
        written.unwrap_or(queue_file_limit(DEFAULT_QUEUE_FILE_LIMIT))
    }

    /// Write this process's pid to `run/relayq.pid` (the daemon, once it holds the lock);
    /// the file goes when the returned guard is dropped.
    pub fn write_pidfile(&self) -> io::Result<PidFile> {
        let pid = std::process::id();
        let run = self.dir(RUN)?.try_clone()?;
        self.write_run(PIDFILE, &format!("{pid}\n"))?;
        Ok(PidFile { run, pid })
    }

    /// Open (creating) a file in run/ to read and write, without following links: the
    /// daemon's lock.
    pub fn open_run(&self, name: &str) -> io::Result<File> {
        let fd = nix::fcntl::openat(
            self.dir(RUN)?,
            name,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(nix_io)?;
        Ok(File::from(fd))
    }

    /// Remove a file from run/ (the socket at exit).
    pub fn remove_run(&self, name: &str) {
        let _ = self.unlink(RUN, name);
    }
}
