//! `relayq init`: the only spool code that must stay root, working on fds only.

use super::*;

impl Layout {
    /// Create the layout with its owners and modes (idempotent); must run as root to give
    /// the directories to `owner`/`group` (the daemon's). Works on fds only: each entry is
    /// opened without following links and must be a real directory belonging to root or the
    /// spool's owner, else init refuses, naming it. Owners and modes change through the fd.
    pub fn init(&self, owner: u32, group: u32) -> Result<()> {
        self.init_with_drop_group(owner, group, group)
    }

    /// [`Layout::init`], with `tmp/` and `new/` in the group `drop_group`: the one
    /// `relayq-postdrop` is setgid to (`relayqdrop` in an install, as Postfix's `postdrop`),
    /// which opens no other door: not the rest of the spool, not the relay password (group
    /// `relayq`). The spool's owner must be a member to read what postdrop writes.
    pub fn init_with_drop_group(&self, owner: u32, group: u32, drop_group: u32) -> Result<()> {
        let me = nix::unistd::geteuid().as_raw();
        let refuse = |what: String| {
            Error::config(format!("{what}: move it away and run `relayq init` again"))
        };
        let io_err = |what: &str, e: io::Error| Error::spool_io(what, &e);
        match nix::unistd::mkdir(&self.root, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(io_err(
                    &format!("cannot create {}", self.root.display()),
                    nix_io(e),
                ));
            }
        }
        let root = open_root(self)?;
        let st =
            nix::sys::stat::fstat(&root).map_err(|e| io_err("cannot stat spool", nix_io(e)))?;
        if st.st_uid != me && st.st_uid != owner {
            return Err(refuse(format!(
                "{} is owned by uid {}, not root or the spool owner",
                self.root.display(),
                st.st_uid
            )));
        }
        // The root belongs to whoever runs init (root, in an install), so the spool owner
        // cannot swap the directories below it.
        let root_gid = if me == 0 { 0 } else { group };
        set_owner_mode(&root, me, root_gid, 0o755)
            .map_err(|e| io_err(&format!("cannot set owner of {}", self.root.display()), e))?;
        for (name, mode) in DIRS {
            let shown = self.display_dir(name);
            match nix::sys::stat::mkdirat(&root, *name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io_err(&format!("cannot create {shown}"), nix_io(e))),
            }
            let fd = open_dir(&root, name).map_err(|e| match e.kind() {
                io::ErrorKind::Other => refuse(format!("{shown} is not a directory (a symlink?)")),
                _ => io_err(&format!("cannot open {shown}"), e),
            })?;
            let st = nix::sys::stat::fstat(&fd).map_err(|e| io_err(&shown, nix_io(e)))?;
            if st.st_uid != me && st.st_uid != owner {
                return Err(refuse(format!(
                    "{shown} is owned by uid {}, not root or the spool owner",
                    st.st_uid
                )));
            }
            let gid = if matches!(*name, "tmp" | "new") {
                drop_group
            } else {
                group
            };
            set_owner_mode(&fd, owner, gid, *mode)
                .map_err(|e| io_err(&format!("cannot set owner and mode of {shown}"), e))?;
        }
        Ok(())
    }
}

fn set_owner_mode(fd: &OwnedFd, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    let st = nix::sys::stat::fstat(fd).map_err(nix_io)?;
    if st.st_uid != uid || st.st_gid != gid {
        nix::unistd::fchown(
            fd,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(nix_io)?;
    }
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode)).map_err(nix_io)
}
