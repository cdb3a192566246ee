//! Logging: glibc syslog (facility mail, ident `relayq`, via nix) behind the `log` facade,
//! plus stderr when running in the foreground, or when there is no syslog socket
//! (`/dev/log` missing: containers, chroots), saying so once. glibc reconnects to /dev/log
//! by itself and never falls back to the network (the `syslog` crate does; see
//! docs/architecture.md). Warnings, errors and fatal errors carry Postfix's `warning: `,
//! `error: ` and `fatal: ` prefixes in syslog and on stderr; informational lines none.

use log::{Level, LevelFilter, Log, Metadata, Record};
use nix::syslog::{Facility, LogFlags, Priority, Severity};
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::OnceLock;

/// Where glibc's syslog(3) writes (`_PATH_LOG`).
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// The `log` target of a record that ends the program (see [`fatal`]).
const FATAL: &str = "fatal";

struct Logger {
    syslog: bool,
    stderr: bool,
    /// Records above this level go to syslog only (a flush on a terminal shows warnings).
    stderr_level: LevelFilter,
    level: LevelFilter,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Postfix's prefix for a record: `fatal: `, `error: `, `warning: `, or none.
fn prefix(level: Level, target: &str) -> &'static str {
    match level {
        Level::Error if target == FATAL => "fatal: ",
        Level::Error => "error: ",
        Level::Warn => "warning: ",
        _ => "",
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }
    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let tag = prefix(r.level(), r.target());
        let msg = format!("{tag}{}", r.args());
        if self.syslog {
            let sev = match r.level() {
                Level::Error if r.target() == FATAL => Severity::LOG_CRIT,
                Level::Error => Severity::LOG_ERR,
                Level::Warn => Severity::LOG_WARNING,
                Level::Info => Severity::LOG_INFO,
                _ => Severity::LOG_DEBUG,
            };
            let _ = nix::syslog::syslog(Priority::new(sev, Facility::LOG_MAIL), msg.as_str());
        }
        // A fatal error is also the caller's one line on stderr: not twice.
        if self.stderr && r.level() <= self.stderr_level && r.target() != FATAL {
            let _ = writeln!(std::io::stderr().lock(), "relayq: {msg}");
        }
    }
    fn flush(&self) {}
}

/// Whether a syslog daemon listens at [`SYSLOG_SOCKET`] (following a link, as systemd's
/// /dev/log is one).
pub fn syslog_socket_present() -> bool {
    syslog_socket_at(Path::new(SYSLOG_SOCKET))
}

fn syslog_socket_at(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Where this process's stderr goes, in words, for the line that says where logs go.
pub fn stderr_destination() -> String {
    let link = std::fs::read_link("/proc/self/fd/2").ok();
    match link.as_deref().and_then(Path::to_str) {
        Some("/dev/null") => "stderr, which is /dev/null: nothing is kept".into(),
        Some(p) if p.starts_with("pipe:") || p.starts_with("socket:") => {
            "stderr (the service manager's or container's log: journalctl, docker logs)".into()
        }
        Some(p) if p.starts_with('/') && !p.starts_with("/dev/") => format!("stderr ({p})"),
        _ => "stderr".into(),
    }
}

/// Install the logger once. `stderr`: also print (foreground, or a terminal). Without a
/// syslog socket, syslog's records go to stderr instead, and the first line says so.
pub fn init(syslog: bool, stderr: bool, verbose: bool) {
    init_with(syslog, stderr, verbose, LevelFilter::Trace)
}

/// As [`init`], printing only records up to `stderr_level` on stderr.
pub fn init_with(syslog: bool, stderr: bool, verbose: bool, stderr_level: LevelFilter) {
    let no_socket = syslog && !syslog_socket_present();
    let syslog = syslog && !no_socket;
    if syslog {
        let _ = nix::syslog::openlog(
            Some(c"relayq"),
            LogFlags::LOG_PID | LogFlags::LOG_NDELAY,
            Facility::LOG_MAIL,
        );
    }
    let level = if verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let logger = LOGGER.get_or_init(|| Logger {
        syslog,
        // Without syslog, stderr is the only place left.
        stderr: stderr || !syslog,
        stderr_level,
        level,
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
        if no_socket && stderr_level >= LevelFilter::Info {
            log::info!(
                "no syslog socket ({SYSLOG_SOCKET}): logging to {}",
                stderr_destination()
            );
        }
    }
}

/// Log the error that ends the program: syslog's `fatal: ` line (the caller prints the
/// same error on stderr as its one line, so it is not repeated there).
pub fn fatal(msg: &str) {
    log::error!(target: FATAL, "{msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_as_postfix_writes_them() {
        assert_eq!(prefix(Level::Error, FATAL), "fatal: ");
        assert_eq!(prefix(Level::Error, "relayq::daemon"), "error: ");
        assert_eq!(prefix(Level::Warn, "relayq::daemon"), "warning: ");
        assert_eq!(prefix(Level::Info, "relayq::daemon"), "");
        assert_eq!(prefix(Level::Debug, "relayq::daemon"), "");
    }

    #[test]
    fn a_socket_is_a_syslog_socket_and_a_file_is_not() {
        let d = tempfile::tempdir().expect("tempdir");
        let sock = d.path().join("log");
        let _l = std::os::unix::net::UnixDatagram::bind(&sock).expect("bind");
        assert!(syslog_socket_at(&sock));
        let file = d.path().join("file");
        std::fs::write(&file, "").expect("write");
        assert!(!syslog_socket_at(&file));
        assert!(!syslog_socket_at(&d.path().join("missing")));
    }
}
