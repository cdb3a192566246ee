//! Writing relayq's own configuration: the TOML file and the secrets file beside it, as
//! `relayq setup` and `relayq import` produce them. Owns the modes and owners (config 0644,
//! secret 0640 root:relayq, or 0600 when there is no relayq group), the refusal to overwrite
//! without `--force` (except the shipped example config), and atomic replacement (temp
//! file, fsync, rename, fsync dir).
//! The secret's bytes never pass through anything that logs or prints.

use crate::error::{Class, Error, Result};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What [`write`] produced, for the caller's summary.
#[derive(Debug, Default)]
pub struct Written {
    pub config: PathBuf,
    pub secret: Option<PathBuf>,
}

/// The conventional secrets path beside a config file: `<dir>/password`.
pub fn secret_path_for(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join("password")
}

/// Quote a string as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The config installed as shipped (contrib/examples/relayq.toml.example, byte for byte),
/// and the password file beside it absent or empty: what `make install` and the package put
/// there is nobody's work, so `relayq setup` and `relayq import` replace it without --force.
pub fn untouched_install(config: &Path) -> bool {
    const EXAMPLE: &str = include_str!("../contrib/examples/relayq.toml.example");
    let secret_empty = match std::fs::metadata(secret_path_for(config)) {
        Ok(m) => m.len() == 0,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    secret_empty && std::fs::read_to_string(config).is_ok_and(|t| t == EXAMPLE)
}

/// Refuse to replace an existing file unless `force`.
pub fn check_absent(path: &Path, force: bool) -> Result<()> {
    if !force && std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::new(
            Class::Usage,
            format!(
                "{} exists: not overwriting it (use --force to replace it)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Write `config_text` to `config` (validated first: it must parse as a relayq config) and,
/// when given, `secret` to `secret_path` (a trailing newline is added). Refuses to replace
/// either existing file unless `force`. Both writes are atomic and durable.
pub fn write(
    config: &Path,
    config_text: &str,
    secret: Option<(&Path, &[u8])>,
    force: bool,
) -> Result<Written> {
    crate::config::Config::parse(config_text, config).map_err(|e| {
        Error::new(
            Class::Software,
            format!("generated config does not validate: {}", e.msg),
        )
    })?;
    check_absent(config, force)?;
    if let Some((p, _)) = secret {
        check_absent(p, force)?;
    }
    let dir = config.parent().unwrap_or_else(|| Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let mut w = Written {
        config: config.to_path_buf(),
        secret: None,
    };
    if let Some((p, bytes)) = secret {
        write_secret(p, bytes)?;
        w.secret = Some(p.to_path_buf());
    }
    atomic_write(config, config_text.as_bytes(), 0o644, None)?;
    Ok(w)
}

/// Write a secrets file (a password, one line): root:relayq 0640 when the daemon's group
/// exists (the daemon runs as relayq), else 0600 for whoever runs this.
pub fn write_secret(p: &Path, bytes: &[u8]) -> Result<()> {
    let mut v = bytes.to_vec();
    if !v.ends_with(b"\n") {
        v.push(b'\n');
    }
    let gid = nix::unistd::Group::from_name("relayq")
        .ok()
        .flatten()
        .filter(|_| nix::unistd::geteuid().is_root())
        .map(|g| g.gid.as_raw());
    let mode = if gid.is_some() { 0o640 } else { 0o600 };
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    atomic_write(p, &v, mode, gid)
}

fn io_err(p: &Path, e: std::io::Error) -> Error {
    let class = if e.kind() == std::io::ErrorKind::PermissionDenied {
        Class::NoPerm
    } else {
        Class::Temp
    };
    Error::new(class, format!("{}: {e}", p.display()))
}

/// Temp file in the same directory (created with `mode` so the secret is never readable by
/// others, even for an instant), optional chgrp, fsync, rename over `path`, fsync the dir.
fn atomic_write(path: &Path, bytes: &[u8], mode: u32, gid: Option<u32>) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("/"));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        if let Some(g) = gid {
            nix::unistd::fchown(&f, None, Some(nix::unistd::Gid::from_raw(g)))?;
        }
        // The umask may have narrowed `mode`; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn quoting() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
        let v: toml::Value = toml::from_str(&format!("k = {}", toml_str("x\u{1}\ny"))).unwrap();
        assert_eq!(v["k"].as_str(), Some("x\u{1}\ny"));
    }

    #[test]
    fn writes_modes_and_refuses_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("relayq.toml");
        let sec = secret_path_for(&cfg);
        let text = "[relay]\nurl = \"smtps://mail.example.com:465\"\n";
        let w = write(&cfg, text, Some((&sec, b"hunter2")), false).unwrap();
        assert_eq!(w.secret.as_deref(), Some(sec.as_path()));
        assert_eq!(std::fs::read_to_string(&sec).unwrap(), "hunter2\n");
        let m = std::fs::metadata(&sec).unwrap().mode() & 0o777;
        assert!(m == 0o600 || m == 0o640, "{m:o}");
        assert_eq!(std::fs::metadata(&cfg).unwrap().mode() & 0o777, 0o644);
        let e = write(&cfg, text, None, false).unwrap_err();
        assert!(e.msg.contains("--force"), "{}", e.msg);
        write(&cfg, text, Some((&sec, b"new")), true).unwrap();
        assert_eq!(std::fs::read_to_string(&sec).unwrap(), "new\n");
        // An invalid config is never written.
        let bad = d.path().join("bad.toml");
        assert!(write(&bad, "[relay]\nurl = \"http://x\"\n", None, false).is_err());
        assert!(!bad.exists());
    }
}
