//! relayq: a sendmail-compatible null client. `sendmail` queues each message durably in a
//! local spool without touching the network; `relayq daemon` (or `relayq flush`) relays the
//! queue through one authenticated TLS smarthost, per recipient, with retries and bounces.
//!
//! Data flow: `cli` (argv) → `submit` (+ `message`, `address`) → `sink` → `spool` →
//! `daemon` (+ `relay`, `bounce`, `state`) ; `config`, `provider`, `log`, `error` beside.

pub mod address;
pub mod admin;
pub mod args;
pub mod bounce;
pub mod cli;
pub mod cmd;
pub mod conffile;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod dkim;
pub mod doctor;
pub mod error;
pub mod import;
pub mod initsys;
pub mod log;
pub mod message;
pub mod perms;
pub mod provider;
pub mod queue;
pub mod relay;
pub mod setup;
pub mod sink;
pub mod smtpd;
pub mod spool;
pub mod state;
pub mod submit;
pub(crate) mod tty;

// The unwinder linked in from libgcc_eh.a rather than loaded from libgcc_s.so.1 (what
// `-static-libgcc` does for C): one shared library fewer to find, map and relocate at every
// start, about 0.1 ms of each `sendmail`. With `panic = "abort"` nothing unwinds across a
// library boundary; std uses it only to print a backtrace.
#[link(name = "gcc_eh", kind = "static", modifiers = "-bundle")]
unsafe extern "C" {}

/// The body of the executables' C-style `main` (see src/main.rs): SIGPIPE ignored, fds 0-2
/// open, `run` given argv, an error printed as `prog: message` and mapped to its exit code,
/// stdout flushed (without std's entry, nothing else flushes it).
pub fn start(
    run: impl FnOnce(Vec<std::ffi::OsString>) -> Result<i32, (&'static str, error::Error)>,
) -> i32 {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    sanitize_fds();
    let code = match run(std::env::args_os().collect()) {
        Ok(code) => code,
        Err((prog, e)) => {
            eprintln!("{prog}: {}", e.msg);
            e.code()
        }
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code
}

/// Make sure fds 0, 1 and 2 are open (mailutils closes stdout and stderr), so no file we open
/// later becomes "stderr" and receives error text.
pub fn sanitize_fds() {
    for fd in 0..3 {
        // SAFETY: fcntl(F_GETFD) only queries; open() gets a path literal.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                let flags = if fd == 0 {
                    libc::O_RDONLY
                } else {
                    libc::O_WRONLY
                };
                libc::open(c"/dev/null".as_ptr(), flags);
            }
        }
    }
}
