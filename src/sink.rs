//! Where `sendmail` writes a finished queue file: straight into the spool when it may
//! (root, the daemon's user), through setgid `relayq-postdrop` (ordinary users), or over the
//! daemon's local socket (NoNewPrivileges services, where setgid is ignored). The last two
//! carry the file in length-prefixed chunks ending with an empty chunk, so a sender killed
//! mid-stream never commits a partial message.

use crate::error::{Error, Result};
use crate::spool::{Draft, Layout, Queue, Spool};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

const CHUNK: usize = 64 * 1024;

/// Writes `u32 length | bytes` chunks; `finish` sends the empty end chunk.
pub struct ChunkWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> ChunkWriter<W> {
    pub fn new(inner: W) -> Self {
        ChunkWriter {
            inner,
            buf: Vec::with_capacity(CHUNK),
        }
    }
    fn send(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.inner
                .write_all(&(self.buf.len() as u32).to_be_bytes())?;
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
    pub fn finish(&mut self) -> io::Result<()> {
        self.send()?;
        self.inner.write_all(&0u32.to_be_bytes())?;
        self.inner.flush()
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > CHUNK {
            self.send()?;
        }
        if data.len() >= CHUNK {
            self.inner.write_all(&(data.len() as u32).to_be_bytes())?;
            self.inner.write_all(data)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Read a chunked stream into `out`. Ok(true) when the end chunk arrived; Ok(false) on EOF
/// before it (the sender died: discard). `limit` bounds the total.
pub fn read_chunks(r: &mut dyn Read, out: &mut dyn Write, limit: u64) -> io::Result<bool> {
    let mut total = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut n = u32::from_be_bytes(len) as usize;
        if n == 0 {
            return Ok(true);
        }
        total += n as u64;
        if total > limit {
            return Err(io::Error::other(format!(
                "message larger than {limit} bytes"
            )));
        }
        while n > 0 {
            let k = n.min(buf.len());
            match r.read_exact(&mut buf[..k]) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
            out.write_all(&buf[..k])?;
            n -= k;
        }
    }
}

/// Reads the payload of a chunked stream; `complete()` tells whether the end chunk came.
/// EOF before the end chunk is an error, so a half-sent message is never taken as whole.
pub struct ChunkReader<R: Read> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: Read> ChunkReader<R> {
    pub fn new(inner: R) -> Self {
        ChunkReader {
            inner,
            left: 0,
            done: false,
        }
    }
    pub fn complete(&self) -> bool {
        self.done
    }
}

impl<R: Read> Read for ChunkReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut len = [0u8; 4];
            self.inner.read_exact(&mut len)?;
            self.left = u32::from_be_bytes(len) as usize;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let k = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..k])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a chunk",
            ));
        }
        self.left -= n;
        Ok(n)
    }
}

pub enum Sink {
    Direct(Draft),
    Postdrop {
        child: KillOnDrop,
        w: ChunkWriter<io::BufWriter<ChildStdin>>,
    },
    Socket(ChunkWriter<io::BufWriter<UnixStream>>),
}

fn no_new_privs() -> bool {
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers.
    unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 }
}

/// The reason the daemon gave for refusing a connection (`ERR ...`: busy), read after a
/// write to its socket failed: a busy daemon answers at once and closes, so the request
/// meets a closed socket (EPIPE) while the answer waits to be read.
pub fn refusal(s: &UnixStream) -> Option<Error> {
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(1)));
    let mut line = String::new();
    io::BufReader::new(s).take(4096).read_line(&mut line).ok()?;
    let why = line.trim_end().strip_prefix("ERR ")?;
    Some(Error::temp(format!("relayq daemon: {why}")))
}

/// The setgid helper beside this executable, if it is installed setgid to the spool's group.
fn postdrop_for(spool: &Spool) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("relayq-postdrop");
    let m = std::fs::metadata(&p).ok()?;
    let drop_gid = spool.lstat_dir("tmp").ok()?.st_gid;
    (m.mode() & 0o2000 != 0 && m.gid() == drop_gid).then_some(p)
}

impl Sink {
    /// Choose the way into the spool.
    pub fn open(layout: &Layout) -> Result<Sink> {
        let spool = Spool::open(layout)?;
        if spool.writable(Queue::Tmp) && spool.writable(Queue::New) {
            return Ok(Sink::Direct(Draft::create(&spool)?));
        }
        let nnp = no_new_privs();
        if !nnp && let Some(pd) = postdrop_for(&spool) {
            let mut child = Command::new(&pd)
                .arg(&layout.root)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| Error::temp(format!("cannot run {}: {e}", pd.display())))?;
            let stdin = child
                .stdin
                .take()
                .ok_or_else(|| Error::software("no pipe to postdrop"))?;
            return Ok(Sink::Postdrop {
                child: KillOnDrop(Some(child)),
                w: ChunkWriter::new(io::BufWriter::new(stdin)),
            });
        }
        match UnixStream::connect(layout.socket()) {
            Ok(s) => {
                let mut w = io::BufWriter::with_capacity(CHUNK, s);
                w.write_all(b"SUBM")
                    .map_err(|e| Error::temp(format!("relayq daemon socket: {e}")))?;
                Ok(Sink::Socket(ChunkWriter::new(w)))
            }
            Err(e) => {
                let why = if nnp {
                    "this process runs with NoNewPrivileges, so setgid relayq-postdrop cannot help"
                } else {
                    "relayq-postdrop is not installed setgid to the spool's group (run `make install` or `relayq init`)"
                };
                Err(Error::temp(format!(
                    "cannot queue mail: no write access to {} and {why}; the relayq daemon's socket {} is not reachable ({e}): start the daemon ({})",
                    layout.root.display(),
                    layout.socket().display(),
                    crate::initsys::hint(crate::initsys::Action::Start, None)
                )))
            }
        }
    }

    pub fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Direct(d) => d.writer(),
            Sink::Postdrop { w, .. } => w,
            Sink::Socket(w) => w,
        }
    }

    /// Make the message durable. Returns the queue ID.
    pub fn commit(self) -> Result<String> {
        match self {
            Sink::Direct(d) => d.commit(),
            Sink::Postdrop { mut child, mut w } => {
                let sent = w.finish();
                drop(w);
                let child = child
                    .0
                    .take()
                    .ok_or_else(|| Error::software("postdrop already reaped"))?;
                let out = child
                    .wait_with_output()
                    .map_err(|e| Error::temp(format!("relayq-postdrop: {e}")))?;
                if out.status.success() && sent.is_ok() {
                    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
                } else {
                    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    Err(Error::temp(if msg.is_empty() {
                        format!("relayq-postdrop failed ({})", out.status)
                    } else {
                        msg
                    }))
                }
            }
            Sink::Socket(mut w) => {
                let io = |e: io::Error| {
                    Error::temp(format!("lost the connection to the relayq daemon: {e}"))
                };
                let sent = w.finish();
                let s = w.get_mut().get_mut();
                if let Err(e) = sent {
                    return Err(refusal(s).unwrap_or_else(|| io(e)));
                }
                s.shutdown(std::net::Shutdown::Write).map_err(io)?;
                let mut line = String::new();
                io::BufReader::new(&*s)
                    .take(4096)
                    .read_line(&mut line)
                    .map_err(io)?;
                match line.trim_end().split_once(' ') {
                    Some(("OK", id)) => Ok(id.to_string()),
                    Some(("ERR", msg)) => Err(Error::temp(format!("relayq daemon: {msg}"))),
                    _ => Err(Error::temp(
                        "the relayq daemon closed the connection without queueing the message",
                    )),
                }
            }
        }
    }
}

/// An uncommitted postdrop must not see a clean end: it is killed, so it discards.
pub struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_roundtrip_and_truncation() {
        let mut data = Vec::new();
        {
            let mut w = ChunkWriter::new(&mut data);
            w.write_all(&vec![b'a'; 100_000]).unwrap();
            w.write_all(b"tail").unwrap();
            w.finish().unwrap();
        }
        let mut out = Vec::new();
        assert!(read_chunks(&mut &data[..], &mut out, 1 << 20).unwrap());
        assert_eq!(out.len(), 100_004);
        for cut in [0, 3, 4, 100, data.len() - 4, data.len() - 1] {
            let mut out = Vec::new();
            assert!(
                !read_chunks(&mut &data[..cut], &mut out, 1 << 20).unwrap(),
                "cut {cut}"
            );
        }
        assert!(read_chunks(&mut &data[..], &mut Vec::new(), 1000).is_err());
        let mut r = ChunkReader::new(&data[..]);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert!(r.complete() && all.len() == 100_004);
        let mut r = ChunkReader::new(&data[..data.len() - 4]);
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }
}
