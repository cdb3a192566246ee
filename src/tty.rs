//! The terminal's echo, turned off for a password and restored on every way out: the guard's
//! drop (an answer, an error, end of input) and the signals that end a program at a prompt
//! (SIGINT from Ctrl-C, SIGQUIT, SIGTERM, SIGHUP), whose handler puts the saved settings
//! back before dying of the same signal. Nothing else in relayq touches terminal settings.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

const SIGNALS: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGHUP,
];

/// The settings to restore, for the signal handler (which may read only what is set
/// before ARMED is, and may call only async-signal-safe functions).
static ARMED: AtomicBool = AtomicBool::new(false);
static FD: AtomicI32 = AtomicI32::new(-1);
static mut SAVED: std::mem::MaybeUninit<libc::termios> = std::mem::MaybeUninit::uninit();

extern "C" fn restore_and_die(sig: libc::c_int) {
    if ARMED.swap(false, Ordering::SeqCst) {
        // SAFETY: SAVED was written before ARMED was set and is not written while armed;
        // tcsetattr, write, signal and raise are async-signal-safe.
        unsafe {
            libc::tcsetattr(
                FD.load(Ordering::SeqCst),
                libc::TCSANOW,
                (&raw const SAVED).cast::<libc::termios>(),
            );
            libc::write(1, c"\n".as_ptr().cast(), 1);
        }
    }
    // SAFETY: as above; the signal is blocked in its handler and delivered on return.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Echo off on `fd` (a terminal) until dropped.
pub(crate) struct EchoOff {
    fd: RawFd,
    saved: libc::termios,
    old: Vec<(Signal, SigAction)>,
}

impl EchoOff {
    pub(crate) fn new(fd: &impl AsRawFd) -> std::io::Result<EchoOff> {
        let fd = fd.as_raw_fd();
        let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills the termios it is given, or fails.
        if unsafe { libc::tcgetattr(fd, t.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: tcgetattr succeeded, so t is initialised.
        let saved = unsafe { t.assume_init() };
        // SAFETY: nothing reads SAVED until ARMED is set below.
        unsafe {
            (&raw mut SAVED).write(std::mem::MaybeUninit::new(saved));
        }
        FD.store(fd, Ordering::SeqCst);
        ARMED.store(true, Ordering::SeqCst);
        let mut guard = EchoOff {
            fd,
            saved,
            old: Vec::new(),
        };
        let act = SigAction::new(
            SigHandler::Handler(restore_and_die),
            SaFlags::empty(),
            SigSet::empty(),
        );
        for s in SIGNALS {
            // SAFETY: the handler only calls async-signal-safe functions.
            if let Ok(old) = unsafe { sigaction(s, &act) } {
                guard.old.push((s, old));
            }
        }
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL);
        // SAFETY: a valid termios for the fd it came from.
        if unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &quiet) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(guard)
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        ARMED.store(false, Ordering::SeqCst);
        // SAFETY: the settings read from this fd in new().
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
        for (s, old) in self.old.drain(..) {
            // SAFETY: putting back the disposition that was there before.
            let _ = unsafe { sigaction(s, &old) };
        }
    }
}
