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
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    relayq::sanitize_fds();
    let code = match relayq::cmd::main(std::env::args_os().collect()) {
        Ok(code) => code,
        Err((prog, e)) => {
            eprintln!("{prog}: {}", e.msg);
            e.code()
        }
    };
    // Without std's entry, nothing flushes stdout at exit.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code
}
