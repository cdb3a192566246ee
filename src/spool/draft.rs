//! The durable write path: a queue file made in `tmp/` (`O_EXCL|O_NOFOLLOW`), fsynced,
//! renamed into `new/` (`RENAME_NOREPLACE`) and `new/` fsynced, through the spool's directory
//! fds only; dropped unfinished, it removes itself.

use super::*;

/// A queue file being written in `tmp/`. Dropped without `commit`, it removes itself, so a
/// failed submission leaves nothing behind. Works through the spool's directory fds only.
pub struct Draft {
    pub id: String,
    tmp: OwnedFd,
    new: OwnedFd,
    /// Still in tmp/ (to remove on drop).
    pending: bool,
    out: Option<BufWriter<File>>,
}

impl Draft {
    pub fn create(spool: &Spool) -> Result<Draft> {
        let shown = spool.layout.display_dir("tmp");
        let dirs = spool
            .qdir(Queue::Tmp)
            .and_then(|t| Ok((t.try_clone()?, spool.qdir(Queue::New)?.try_clone()?)));
        let (tmp, new) = dirs.map_err(|e| Error::spool_io(&format!("cannot open {shown}"), &e))?;
        let new_gid = nix::sys::stat::fstat(&new).map(|s| s.st_gid).ok();
        for _ in 0..8 {
            let id = new_id();
            match nix::fcntl::openat(
                &tmp,
                id.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o640),
            ) {
                Ok(fd) => {
                    let f = File::from(fd);
                    // Group = the spool's group, so the daemon can read it whoever wrote it.
                    if let (Some(g), Ok(st)) = (new_gid, nix::sys::stat::fstat(&f))
                        && st.st_gid != g
                    {
                        let _ = nix::unistd::fchown(&f, None, Some(nix::unistd::Gid::from_raw(g)));
                    }
                    return Ok(Draft {
                        id,
                        tmp,
                        new,
                        pending: true,
                        out: Some(BufWriter::with_capacity(64 * 1024, f)),
                    });
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    return Err(Error::spool_io(
                        &format!("cannot create a file in {shown}"),
                        &nix_io(e),
                    ));
                }
            }
        }
        Err(Error::temp("cannot find a unique queue file name"))
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.out.as_mut().expect("draft already committed")
    }

    /// Make the message durable and visible: flush, fsync the file, rename into new/, fsync
    /// new/. Only after this returns Ok may the submitter report success.
    pub fn commit(mut self) -> Result<String> {
        let w = self.out.take().expect("draft already committed");
        let f = w
            .into_inner()
            .map_err(|e| Error::spool_io("cannot write queue file", e.error()))?;
        f.sync_all()
            .map_err(|e| Error::spool_io("cannot fsync queue file", &e))?;
        drop(f);
        nix::fcntl::renameat2(
            &self.tmp,
            self.id.as_str(),
            &self.new,
            self.id.as_str(),
            RenameFlags::RENAME_NOREPLACE,
        )
        .or_else(|e| match e {
            Errno::EINVAL | Errno::ENOSYS => {
                nix::fcntl::renameat(&self.tmp, self.id.as_str(), &self.new, self.id.as_str())
            }
            e => Err(e),
        })
        .map_err(|e| Error::spool_io("cannot move queue file into new/", &nix_io(e)))?;
        self.pending = false;
        nix::unistd::fsync(&self.new)
            .map_err(|e| Error::spool_io("cannot fsync spool directory", &nix_io(e)))?;
        Ok(std::mem::take(&mut self.id))
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if self.pending {
            self.out = None;
            let _ = nix::unistd::unlinkat(
                &self.tmp,
                self.id.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}
