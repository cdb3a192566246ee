//! Logging: glibc syslog (facility mail, ident `relayq`, via nix) behind the `log` facade,
//! plus stderr when running in the foreground. glibc reconnects to /dev/log by itself and
//! never falls back to the network (the `syslog` crate does; see docs/architecture.md).

use log::{Level, LevelFilter, Log, Metadata, Record};
use nix::syslog::{Facility, LogFlags, Priority, Severity};
use std::io::Write;
use std::sync::OnceLock;

struct Logger {
    syslog: bool,
    stderr: bool,
    /// Records above this level go to syslog only (a flush on a terminal shows warnings).
    stderr_level: LevelFilter,
    level: LevelFilter,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }
    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let msg = r.args().to_string();
        if self.syslog {
            let sev = match r.level() {
                Level::Error => Severity::LOG_ERR,
                Level::Warn => Severity::LOG_WARNING,
                Level::Info => Severity::LOG_INFO,
                _ => Severity::LOG_DEBUG,
            };
            let _ = nix::syslog::syslog(Priority::new(sev, Facility::LOG_MAIL), msg.as_str());
        }
        if self.stderr && r.level() <= self.stderr_level {
            let tag = match r.level() {
                Level::Error => "error: ",
                Level::Warn => "warning: ",
                _ => "",
            };
            let _ = writeln!(std::io::stderr().lock(), "relayq: {tag}{msg}");
        }
    }
    fn flush(&self) {}
}

/// Install the logger once. `stderr`: also print (foreground, or a terminal).
pub fn init(syslog: bool, stderr: bool, verbose: bool) {
    init_with(syslog, stderr, verbose, LevelFilter::Trace)
}

/// As [`init`], printing only records up to `stderr_level` on stderr.
pub fn init_with(syslog: bool, stderr: bool, verbose: bool, stderr_level: LevelFilter) {
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
        stderr,
        stderr_level,
        level,
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}
