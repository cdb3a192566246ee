//! The `relayq` executable: `sendmail`, `mailq` and `newaliases` by argv[0], `relayq
//! <command>` otherwise. All work happens in the library; this maps errors to exit codes.
//!
//! `no_main`: sendmail is exec'd once per message, so start-up is on the hot path. Rust's
//! usual entry asks glibc for the main thread's stack bounds (which parses /proc/self/maps)
//! to install a guard page handler; a plain C `main` skips that. SIGPIPE is ignored by hand,
//! as std's entry would, so a vanished reader gives EPIPE, not death.
#![no_main]

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    relayq::start(relayq::cmd::main)
}
