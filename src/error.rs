//! Errors and exit codes: every failure in relayq is an [`Error`] carrying a sysexits.h class
//! and one human line; `main` maps it to the process exit status in one place.

use std::fmt;

/// The sysexits.h classes callers of sendmail expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// EX_USAGE (64): bad command line.
    Usage,
    /// EX_DATAERR (65): bad input data (message, header, address).
    Data,
    /// EX_NOINPUT (66): an input file does not exist or cannot be read.
    NoInput,
    /// EX_NOUSER (67): an address that cannot be used.
    NoUser,
    /// EX_UNAVAILABLE (69): a service is unavailable.
    Unavailable,
    /// EX_SOFTWARE (70): internal error.
    Software,
    /// EX_OSERR (71): system error (fork, exec...).
    OsErr,
    /// EX_TEMPFAIL (75): try again later; nothing was accepted.
    Temp,
    /// EX_NOPERM (77): permission denied.
    NoPerm,
    /// EX_CONFIG (78): configuration error.
    Config,
}

impl Class {
    pub fn code(self) -> i32 {
        match self {
            Class::Usage => 64,
            Class::Data => 65,
            Class::NoInput => 66,
            Class::NoUser => 67,
            Class::Unavailable => 69,
            Class::Software => 70,
            Class::OsErr => 71,
            Class::Temp => 75,
            Class::NoPerm => 77,
            Class::Config => 78,
        }
    }
}

/// A failure with its class and a one-line message for stderr.
#[derive(Debug)]
pub struct Error {
    pub class: Class,
    pub msg: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(class: Class, msg: impl Into<String>) -> Error {
        Error {
            class,
            msg: msg.into(),
        }
    }
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::new(Class::Usage, msg)
    }
    pub fn data(msg: impl Into<String>) -> Error {
        Error::new(Class::Data, msg)
    }
    pub fn temp(msg: impl Into<String>) -> Error {
        Error::new(Class::Temp, msg)
    }
    pub fn config(msg: impl Into<String>) -> Error {
        Error::new(Class::Config, msg)
    }
    pub fn software(msg: impl Into<String>) -> Error {
        Error::new(Class::Software, msg)
    }
    pub fn noperm(msg: impl Into<String>) -> Error {
        Error::new(Class::NoPerm, msg)
    }
    /// An I/O error while touching the spool: always temporary (full disk, permissions, EIO),
    /// so the caller keeps the message and tries again.
    pub fn spool_io(what: &str, e: &std::io::Error) -> Error {
        let hint = match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => " (file system full)",
            Some(libc::EACCES) | Some(libc::EPERM) => " (permission denied)",
            Some(libc::EROFS) => " (read-only file system)",
            _ => "",
        };
        Error::temp(format!("{what}: {e}{hint}"))
    }
    pub fn code(&self) -> i32 {
        self.class.code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}
