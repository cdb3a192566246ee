//! The envelope: what travels with a message in its queue file, ahead of the message itself
//! (`relayq-envelope 1`, one `key value` line each, `end`). Written by `sendmail`, read
//! without trust by everything else; the limits here are the ones every writer checks first.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{self, BufRead, Write};

/// Magic first line of every queue file; the number is the format version.
pub const MAGIC: &str = "relayq-envelope 1";
/// Upper bounds a reader enforces on untrusted envelopes.
pub const MAX_RCPTS: usize = 10_000;
pub const MAX_ENVELOPE_BYTES: usize = 4 << 20;
pub const MAX_ADDR: usize = 512;
/// What `Envelope::read_head` reads in one go: an envelope with a few recipients fits.
pub const HEAD_BYTES: usize = 4096;
/// Envelope keys that may appear once (`rcpt` repeats).
const ONCE_KEYS: [&str; 9] = [
    "sender",
    "envid",
    "ret",
    "body",
    "message-id",
    "time",
    "uid",
    "user",
    "bounce",
];

/// One recipient with its DSN parameters (RFC 3461).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rcpt {
    pub addr: String,
    pub notify: Option<String>,
    pub orcpt: Option<String>,
}

/// What travels with the message: written by `sendmail`, read (without trust) by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Envelope sender; empty = null sender `<>`.
    pub sender: String,
    pub rcpts: Vec<Rcpt>,
    pub envid: Option<String>,
    pub ret: Option<String>,
    /// "7BIT" or "8BITMIME" when given.
    pub body: Option<String>,
    pub time: u64,
    /// Submitting uid as claimed by the writer; trusted only for files owned by root or the
    /// spool owner (see `submitter`).
    pub uid: u32,
    pub user: String,
    pub message_id: Option<String>,
    /// A bounce (DSN) we generated: never bounced itself.
    pub is_bounce: bool,
}

/// A token safe to write on one envelope line: printable ASCII or UTF-8, no spaces, no
/// controls, bounded.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ADDR && s.chars().all(|c| !c.is_control() && !c.is_whitespace())
}

fn is_text(s: &str) -> bool {
    s.len() <= MAX_ADDR && s.chars().all(|c| !c.is_control())
}

impl Envelope {
    /// Serialize. Fails (data error) if any field could break the line format.
    pub fn write_to(&self, w: &mut dyn Write) -> Result<()> {
        let bad = |what: &str, v: &str| Error::data(format!("invalid {what} {v:?}"));
        if !self.sender.is_empty() && !is_token(&self.sender) {
            return Err(bad("sender", &self.sender));
        }
        let mut s = String::with_capacity(256);
        s.push_str(MAGIC);
        s.push('\n');
        s.push_str(&format!("sender <{}>\n", self.sender));
        for r in &self.rcpts {
            if !is_token(&r.addr) {
                return Err(bad("recipient", &r.addr));
            }
            s.push_str(&format!("rcpt <{}>", r.addr));
            if let Some(n) = &r.notify {
                if !is_token(n) {
                    return Err(bad("NOTIFY", n));
                }
                s.push_str(&format!(" notify={n}"));
            }
            if let Some(o) = &r.orcpt {
                if !is_token(o) {
                    return Err(bad("ORCPT", o));
                }
                s.push_str(&format!(" orcpt={o}"));
            }
            s.push('\n');
        }
        for (k, v) in [
            ("envid", &self.envid),
            ("ret", &self.ret),
            ("body", &self.body),
            ("message-id", &self.message_id),
        ] {
            if let Some(v) = v {
                if !is_token(v) {
                    return Err(bad(k, v));
                }
                s.push_str(&format!("{k} {v}\n"));
            }
        }
        if !is_text(&self.user) {
            return Err(bad("user", &self.user));
        }
        if self.is_bounce {
            s.push_str("bounce 1\n");
        }
        s.push_str(&format!(
            "time {}\nuid {}\nuser {}\nend\n",
            self.time, self.uid, self.user
        ));
        w.write_all(s.as_bytes())
            .map_err(|e| Error::spool_io("cannot write queue file", &e))
    }

    /// Parse an envelope from an untrusted queue file, leaving the reader at the message.
    pub fn read_from(r: &mut dyn BufRead) -> std::result::Result<Envelope, String> {
        let mut env = Envelope::default();
        let mut total = 0usize;
        let mut line = Vec::new();
        let mut seen = 0u16;
        let mut first = true;
        loop {
            line.clear();
            let n = std::io::Read::take(&mut *r, (MAX_ADDR * 4) as u64)
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("read error: {e}"))?;
            total += n;
            if n == 0 || line.last() != Some(&b'\n') {
                return Err("truncated envelope".into());
            }
            if total > MAX_ENVELOPE_BYTES {
                return Err("envelope too large".into());
            }
            line.pop();
            let l = std::str::from_utf8(&line).map_err(|_| "envelope is not UTF-8".to_string())?;
            if l.contains('\r') || l.chars().any(|c| c.is_control()) {
                return Err("control character in envelope".into());
            }
            if first {
                if l != MAGIC {
                    return Err("not a relayq queue file (bad magic)".into());
                }
                first = false;
                continue;
            }
            if l == "end" {
                break;
            }
            let (key, val) = l
                .split_once(' ')
                .ok_or_else(|| format!("bad envelope line {l:?}"))?;
            if let Some(k) = ONCE_KEYS.iter().position(|&k| k == key) {
                if seen & (1 << k) != 0 {
                    return Err(format!("duplicate envelope key {key:?}"));
                }
                seen |= 1 << k;
            }
            let angle = |v: &str| -> std::result::Result<String, String> {
                let a = v
                    .strip_prefix('<')
                    .and_then(|v| v.strip_suffix('>'))
                    .ok_or_else(|| format!("bad address {v:?}"))?;
                if !a.is_empty() && !is_token(a) {
                    return Err(format!("bad address {v:?}"));
                }
                Ok(a.to_string())
            };
            match key {
                "sender" => env.sender = angle(val)?,
                "rcpt" => {
                    let mut parts = val.split(' ');
                    let addr = angle(parts.next().unwrap_or(""))?;
                    if addr.is_empty() || !addr.contains('@') {
                        return Err(format!("bad recipient {val:?}"));
                    }
                    let mut rc = Rcpt {
                        addr,
                        ..Rcpt::default()
                    };
                    for p in parts {
                        match p.split_once('=') {
                            Some(("notify", v)) if is_token(v) => rc.notify = Some(v.into()),
                            Some(("orcpt", v)) if is_token(v) => rc.orcpt = Some(v.into()),
                            _ => return Err(format!("bad recipient parameter {p:?}")),
                        }
                    }
                    if env.rcpts.len() >= MAX_RCPTS {
                        return Err(format!("more than {MAX_RCPTS} recipients"));
                    }
                    env.rcpts.push(rc);
                }
                "envid" | "ret" | "body" | "message-id" => {
                    if !is_token(val) {
                        return Err(format!("bad {key} {val:?}"));
                    }
                    let v = Some(val.to_string());
                    match key {
                        "envid" => env.envid = v,
                        "ret" => env.ret = v,
                        "body" => env.body = v,
                        _ => env.message_id = v,
                    }
                }
                "time" => env.time = val.parse().map_err(|_| format!("bad time {val:?}"))?,
                "uid" => env.uid = val.parse().map_err(|_| format!("bad uid {val:?}"))?,
                "user" if is_text(val) => env.user = val.to_string(),
                "bounce" if val == "1" => env.is_bounce = true,
                _ => return Err(format!("unknown envelope line {key:?}")),
            }
        }
        if env.rcpts.is_empty() {
            return Err("no recipients".into());
        }
        if seen & 1 == 0 {
            return Err("no sender line".into());
        }
        Ok(env)
    }

    /// Parse the envelope at the start of an open queue file of `len` bytes, reading only its
    /// head: one `read` of at most `HEAD_BYTES` covers the usual envelope (and a small message
    /// whole); a longer envelope is read again through a buffer. Readahead is turned off for
    /// larger files, so on a cold cache a large message costs no more I/O than a small one. Returns the
    /// envelope and the offset of the message.
    pub fn read_head(
        f: &mut File,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> std::result::Result<(Envelope, u64), String> {
        use std::io::{Read, Seek};
        use std::os::fd::AsRawFd;
        let want = usize::try_from(len).unwrap_or(usize::MAX).min(HEAD_BYTES);
        if len > HEAD_BYTES as u64 {
            // SAFETY: advice only; the fd is open for the call's duration.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        }
        buf.resize(want, 0);
        let mut n = 0;
        while n < want {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read error: {e}")),
            }
        }
        let mut head = &buf[..n];
        match Envelope::read_from(&mut head) {
            Ok(env) => Ok((env, (n - head.len()) as u64)),
            Err(_) if n == HEAD_BYTES => {
                f.rewind().map_err(|e| format!("read error: {e}"))?;
                let mut r = io::BufReader::new(f);
                let env = Envelope::read_from(&mut r)?;
                let off = r
                    .stream_position()
                    .map_err(|e| format!("read error: {e}"))?;
                Ok((env, off))
            }
            Err(e) => Err(e),
        }
    }

    /// The uid that submitted a queue file: the file's owner, which the kernel records and a
    /// user cannot forge, unless the writer was root or the spool owner (the daemon writing
    /// for a socket client), whose `uid` line is then believed.
    pub fn submitter(&self, file_uid: u32, spool_owner: u32) -> u32 {
        if file_uid == 0 || file_uid == spool_owner {
            self.uid
        } else {
            file_uid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn env() -> Envelope {
        Envelope {
            sender: "a@example.com".into(),
            rcpts: vec![
                Rcpt {
                    addr: "b@example.org".into(),
                    ..Default::default()
                },
                Rcpt {
                    addr: "c@example.org".into(),
                    notify: Some("FAILURE,DELAY".into()),
                    orcpt: Some("rfc822;c@example.org".into()),
                },
            ],
            envid: Some("QQ314159".into()),
            ret: Some("HDRS".into()),
            body: Some("8BITMIME".into()),
            time: 1_700_000_000,
            uid: 33,
            user: "www-data".into(),
            message_id: Some("<x@y>".into()),
            is_bounce: true,
        }
    }

    #[test]
    fn roundtrip() {
        let e = env();
        let mut buf = Vec::new();
        e.write_to(&mut buf).unwrap();
        buf.extend_from_slice(b"Subject: hi\r\n\r\nbody\r\n");
        let mut r = io::Cursor::new(buf);
        let back = Envelope::read_from(&mut r).unwrap();
        assert_eq!(back, e);
        let mut rest = String::new();
        io::Read::read_to_string(&mut r, &mut rest).unwrap();
        assert_eq!(rest, "Subject: hi\r\n\r\nbody\r\n");
    }

    #[test]
    fn read_head_short_and_long_envelopes() {
        let d = tempfile::tempdir().unwrap();
        let mut long = env();
        long.rcpts = (0..300)
            .map(|i| Rcpt {
                addr: format!("rcpt{i}@example.org"),
                ..Rcpt::default()
            })
            .collect();
        let mut buf = Vec::new();
        for (i, e) in [env(), long].into_iter().enumerate() {
            let mut data = Vec::new();
            e.write_to(&mut data).unwrap();
            let off = data.len() as u64;
            data.extend(std::iter::repeat_n(b'x', 10_000));
            let p = d.path().join(i.to_string());
            fs::write(&p, &data).unwrap();
            let mut f = File::open(&p).unwrap();
            let got = Envelope::read_head(&mut f, data.len() as u64, &mut buf).unwrap();
            assert_eq!(got, (e, off), "envelope {i}");
            // Cut inside the envelope: an error, whichever way it was read.
            let cut = off as usize - 3;
            fs::write(&p, &data[..cut]).unwrap();
            let mut f = File::open(&p).unwrap();
            assert!(Envelope::read_head(&mut f, cut as u64, &mut buf).is_err());
        }
    }

    #[test]
    fn null_sender() {
        let e = Envelope {
            sender: String::new(),
            ..env()
        };
        let mut buf = Vec::new();
        e.write_to(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf).contains("sender <>\n"));
        assert_eq!(
            Envelope::read_from(&mut io::Cursor::new(buf))
                .unwrap()
                .sender,
            ""
        );
    }

    #[test]
    fn rejects_bad_input() {
        let cases: &[&[u8]] = &[
            b"",
            b"relayq-envelope 1\nsender <a@b>\nrcpt <c@d>\n",
            b"relayq-envelope 2\nsender <a@b>\nrcpt <c@d>\nend\n",
            b"relayq-envelope 1\nsender <a@b>\nend\n",
            b"relayq-envelope 1\nsender <a@b>\nrcpt <c@d\r>\nend\n",
            b"relayq-envelope 1\nsender <a@b>\nrcpt <c d@e>\nend\n",
            b"relayq-envelope 1\nsender <a@b>\nsender <x@y>\nrcpt <c@d>\nend\n",
            b"relayq-envelope 1\nsender <a@b>\nrcpt <c@d> evil=1\nend\n",
            b"relayq-envelope 1\nsender <a@b>\nrcpt <c@d>\nuid 1\nuid 0\nend\n",
            b"relayq-envelope 1\nsender <a@b>\nrcpt <nodomain>\nend\n",
        ];
        for c in cases {
            assert!(
                Envelope::read_from(&mut io::Cursor::new(c.to_vec())).is_err(),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        let e = Envelope {
            rcpts: vec![Rcpt {
                addr: "a\r\nb@c".into(),
                ..Default::default()
            }],
            ..env()
        };
        assert!(e.write_to(&mut Vec::new()).is_err());
    }

    #[test]
    fn submitter_trust() {
        let e = env();
        assert_eq!(e.submitter(1000, 999), 1000);
        assert_eq!(e.submitter(999, 999), 33);
        assert_eq!(e.submitter(0, 999), 33);
    }
}
