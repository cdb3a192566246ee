//! relayq-postdrop: the only code that runs with the spool group's privilege (installed
//! setgid `relayq`, mode 2755), like Postfix's postdrop. It reads no config and trusts
//! nothing: it copies one chunked queue file from stdin into SPOOL/tmp, and only when the
//! stream ends cleanly fsyncs it and renames it into SPOOL/new. The file's owner (the real
//! uid) records the submitter; the daemon validates the contents.
//!
//! Usage (by `sendmail` only): relayq-postdrop SPOOL_DIR   → prints the queue ID.

use relayq::sink::read_chunks;
use relayq::spool::{Draft, Layout, MAGIC, Queue, Spool};
use std::path::Path;

/// Refuse a spool that is not a relayq spool of our group (sticky, group-writable), checked
/// on the very directory fd that the file is then created and renamed through: the spool is
/// opened once, and no path is resolved again.
fn check_dir(spool: &Spool, q: Queue, egid: u32, privileged: bool) -> Result<(), String> {
    let shown = spool.layout().display_dir(q.dir_name());
    let m = spool.queue_stat(q).map_err(|e| format!("{shown}: {e}"))?;
    if privileged && (m.st_gid != egid || m.st_mode & 0o1000 == 0 || m.st_mode & 0o020 == 0) {
        return Err(format!(
            "{shown} is not a relayq spool directory (want group {egid}, mode 1770)"
        ));
    }
    Ok(())
}

fn run() -> Result<String, String> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let [root] = &args[..] else {
        return Err("usage: relayq-postdrop SPOOL_DIR".into());
    };
    let root = Path::new(root);
    if !root.is_absolute() {
        return Err("spool directory must be an absolute path".into());
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    // A file size limit (ulimit -f) makes write fail with EFBIG instead of killing us, so the
    // draft is removed; so does a closed stdout or stderr (EPIPE).
    // SAFETY: setting signal dispositions to SIG_IGN, before any other thread exists.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        );
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    let egid = nix::unistd::getegid().as_raw();
    let privileged = egid != nix::unistd::getgid().as_raw();
    let spool = Spool::open(&Layout::new(root)).map_err(|e| e.msg)?;
    check_dir(&spool, Queue::Tmp, egid, privileged)?;
    check_dir(&spool, Queue::New, egid, privileged)?;
    let mut draft = Draft::create(&spool).map_err(|e| e.msg)?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut check = MagicCheck {
        inner: draft.writer(),
        seen: Vec::new(),
    };
    // The spool's limit (run/limits), not a config we would have to parse. Past it, or on any
    // error, the draft removes its tmp/ file as it is dropped.
    let limit = spool.queue_file_limit();
    match read_chunks(&mut input, &mut check, limit) {
        Ok(true) if check.seen.starts_with(MAGIC.as_bytes()) => {}
        Ok(true) => return Err("input is not a relayq queue file".into()),
        Ok(false) => {
            return Err("input ended before the message was complete; nothing queued".into());
        }
        Err(e) => return Err(format!("cannot queue message: {e}")),
    }
    draft.commit().map_err(|e| e.msg)
}

struct MagicCheck<'a, W: std::io::Write> {
    inner: &'a mut W,
    seen: Vec<u8>,
}

impl<W: std::io::Write> std::io::Write for MagicCheck<'_, W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.seen.len() < MAGIC.len() {
            let k = (MAGIC.len() - self.seen.len()).min(b.len());
            self.seen.extend_from_slice(&b[..k]);
            if !MAGIC.as_bytes().starts_with(&self.seen) {
                return Err(std::io::Error::other("input is not a relayq queue file"));
            }
        }
        self.inner.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn main() {
    relayq::sanitize_fds();
    match run() {
        Ok(id) => println!("{id}"),
        Err(e) => {
            eprintln!("relayq-postdrop: {e}");
            std::process::exit(75);
        }
    }
}
