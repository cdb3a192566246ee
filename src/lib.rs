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
