//! The owner and mode checks that make the daemon refuse to start (a spool it cannot trust,
//! a password file or DKIM key others can read, a config file others can change) — shared with
//! `relayq doctor`, so both say the same thing in the same words.

use crate::error::Error;
use crate::spool::{self, Layout, Spool};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What is wrong with one file or directory, and the one-line fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub fix: String,
    /// Missing (run `relayq init`, temporary) rather than unsafe (a config problem).
    pub missing: bool,
}

impl Problem {
    fn unsafe_(what: String, fix: impl Into<String>) -> Problem {
        Problem {
            what,
            fix: fix.into(),
            missing: false,
        }
    }
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Error {
        let msg = format!("{}: {}", p.what, p.fix);
        if p.missing {
            Error::temp(msg)
        } else {
            Error::config(msg)
        }
    }
}

pub type Check = std::result::Result<(), Problem>;

/// The spool's owner: the owner of `queue/` (the daemon's user).
pub fn spool_owner(layout: &Layout) -> std::result::Result<u32, Problem> {
    Spool::open(layout).map(|s| s.owner()).map_err(|e| Problem {
        what: e.msg,
        fix: "run `relayq init`".into(),
        missing: true,
    })
}

/// Every spool directory exists, belongs to the spool's owner and has the mode `relayq init`
/// gives it; the root belongs to root (or to the owner) and nobody else may write it.
pub fn spool(layout: &Layout) -> Check {
    let sp = Spool::open(layout).map_err(|e| Problem {
        what: e.msg,
        fix: "run `relayq init`".into(),
        missing: true,
    })?;
    let owner = sp.owner();
    let root = sp.lstat_dir(".").map_err(|e| Problem {
        what: format!("spool {}: {e}", layout.root.display()),
        fix: "run `relayq init`".into(),
        missing: true,
    })?;
    if (root.st_uid != 0 && root.st_uid != owner) || root.st_mode & 0o022 != 0 {
        return Err(Problem::unsafe_(
            format!(
                "{} is owned by uid {} with mode {:o}: others could replace its directories",
                layout.root.display(),
                root.st_uid,
                root.st_mode & 0o7777
            ),
            "run `relayq init` as root",
        ));
    }
    for (name, mode) in spool::DIRS {
        let p = layout.display_dir(name);
        let m = sp.lstat_dir(name).map_err(|e| Problem {
            what: format!("{p}: {e}"),
            fix: "run `relayq init`".into(),
            missing: true,
        })?;
        if m.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(Problem::unsafe_(
                format!("{p} is not a directory"),
                "move it away and run `relayq init`",
            ));
        }
        if m.st_uid != owner {
            return Err(Problem::unsafe_(
                format!(
                    "{p} is owned by uid {}, not the spool owner {owner}",
                    m.st_uid
                ),
                "run `relayq init`",
            ));
        }
        if m.st_mode & 0o7777 != *mode {
            return Err(Problem::unsafe_(
                format!("{p} has mode {:o}, want {:o}", m.st_mode & 0o7777, mode),
                "run `relayq init`",
            ));
        }
    }
    Ok(())
}

/// A password file must not be readable by other users (as ssh insists for keys) and must
/// belong to root or to the daemon's user (`daemon_uid`), so nobody else can swap it.
pub fn password_file(p: &Path, daemon_uid: Option<u32>) -> Check {
    secret_file(
        "password_file",
        p,
        daemon_uid,
        "create it with the relay's password on one line, then chmod 600",
    )
}

/// The DKIM private key (`[dkim] key_file`): the same rules as a password file.
pub fn dkim_key_file(p: &Path, daemon_uid: Option<u32>) -> Check {
    secret_file(
        "dkim key_file",
        p,
        daemon_uid,
        "make it with `openssl genpkey` (relayq.toml(5), [dkim]), then chmod 600",
    )
}

/// A secret named `key` in the config: not readable by others, owned by root or the daemon.
fn secret_file(key: &str, p: &Path, daemon_uid: Option<u32>, create: &str) -> Check {
    let m = fs::metadata(p)
        .map_err(|e| Problem::unsafe_(format!("{key} {}: {e}", p.display()), create))?;
    if m.mode() & 0o007 != 0 {
        return Err(Problem::unsafe_(
            format!(
                "{key} {} is readable by other users (mode {:o})",
                p.display(),
                m.mode() & 0o777
            ),
            format!("chmod 600 {} (or 640 root:relayq)", p.display()),
        ));
    }
    if m.uid() != 0 && Some(m.uid()) != daemon_uid {
        return Err(Problem::unsafe_(
            format!(
                "{key} {} is owned by uid {}, not root or the daemon's user",
                p.display(),
                m.uid()
            ),
            format!("chown root {}", p.display()),
        ));
    }
    Ok(())
}

/// The config file names the password command the daemon runs: others must not write it.
pub fn config_file(p: &Path) -> Check {
    match fs::metadata(p) {
        Ok(m) if m.mode() & 0o002 != 0 => Err(Problem::unsafe_(
            format!(
                "config {} is writable by other users (mode {:o})",
                p.display(),
                m.mode() & 0o777
            ),
            format!("chmod o-w {}", p.display()),
        )),
        // A missing default config means the built-in defaults: nothing to protect.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn password_and_config_modes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        fs::write(&p, "x\n").unwrap();
        chmod(&p, 0o600);
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(password_file(&p, Some(me)), Ok(()));
        chmod(&p, 0o644);
        let e = password_file(&p, Some(me)).unwrap_err();
        assert!(e.what.contains("readable by other users"), "{e:?}");
        assert!(e.fix.starts_with("chmod 600"), "{e:?}");
        assert!(!e.missing);
        let e: Error = e.into();
        assert_eq!(e.code(), 78);
        assert!(config_file(&p).is_ok());
        chmod(&p, 0o646);
        assert!(config_file(&p).unwrap_err().fix.starts_with("chmod o-w"));
        assert!(config_file(&d.path().join("absent")).is_ok());
        assert!(password_file(&d.path().join("absent"), None).is_err());
    }

    #[test]
    fn spool_modes() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path().join("spool"));
        assert!(spool(&l).unwrap_err().missing);
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        l.init(uid, gid).unwrap();
        assert_eq!(spool(&l), Ok(()));
        chmod(&l.root.join("hold"), 0o755);
        let e = spool(&l).unwrap_err();
        assert!(e.what.contains("has mode 755, want 700"), "{e:?}");
        assert_eq!(e.fix, "run `relayq init`");
    }
}
