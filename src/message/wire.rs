//! The message as it leaves: re-framed for SMTP DATA (`Reframe`), checked for NUL, with
//! the daemon's trace field; and made safe for a terminal (`relayq show`).

use super::{MAX_LINE, rfc5322_date};
use std::io;

/// The buffer `contains_nul` reads with.
const CHUNK: usize = 64 * 1024;

/// Re-frames a queued message for SMTP DATA as it streams to the relay, whatever the queue
/// file holds: every line end becomes CRLF (a bare LF, a bare CR, and CRs before an LF count
/// as one line end), a line longer than 998 octets is broken there (as `sendmail` breaks it),
/// and a line that starts with "." gets another. [`Reframe::finish`] ends the data with
/// CRLF "." CRLF. So no byte sequence in a queue file can end DATA early on the wire or
/// smuggle a command into the session, even at a relay that also takes LF "." LF or
/// CR "." CR as the end.
#[derive(Debug, Default)]
pub struct Reframe {
    /// Octets on the current output line (the stuffing dot included).
    col: usize,
    /// CRs seen that may still be followed by an LF.
    cr: bool,
}

impl Reframe {
    fn line_end(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.col = 0;
    }

    /// Re-frame the next piece of the message into `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for &b in data {
            match b {
                b'\r' => self.cr = true,
                b'\n' => {
                    self.cr = false;
                    self.line_end(out);
                }
                b => {
                    if std::mem::take(&mut self.cr) {
                        self.line_end(out);
                    }
                    if self.col >= MAX_LINE {
                        self.line_end(out);
                    }
                    if self.col == 0 && b == b'.' {
                        out.push(b'.');
                        self.col += 1;
                    }
                    out.push(b);
                    self.col += 1;
                }
            }
        }
    }

    /// The end of the data: the last line's end if it had none, then "." CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.cr) || self.col > 0 {
            self.line_end(out);
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Whether a message holds a NUL byte, which SMTP cannot carry (RFC 5321 4.1.1.4): read to
/// its end, a buffer at a time.
pub fn contains_nul(r: &mut dyn io::Read) -> io::Result<bool> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) if buf[..n].contains(&0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The trace field the daemon sends ahead of a message, as Postfix's cleanup adds one: the
/// submitter's uid as the kernel recorded it (the queue file's owner, or `SO_PEERCRED` for
/// the socket) and the arrival time, never what the client wrote.
pub fn trace_field(host: &str, uid: u32, id: &str, arrival: u64) -> String {
    format!(
        "Received: by {host} (relayq, from userid {uid})\r\n\tid {id}; {}\r\n",
        rfc5322_date(arrival as i64)
    )
}

/// A message's bytes made safe for a terminal (`relayq show`): control characters (C0 but
/// TAB, DEL, and C1 as UTF-8) in caret or `\u{..}` form, bytes that are not UTF-8 as `\xHH`;
/// printable text, UTF-8 included, and the line ends (LF, CRLF) unchanged. So a message
/// cannot retitle, clear or reprogram the admin's terminal.
pub fn escape_controls(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.utf8_chunks() {
        let text = chunk.valid();
        for (i, c) in text.char_indices() {
            match c {
                '\t' | '\n' => out.push(c as u8),
                '\r' if text[i + 1..].starts_with('\n') => out.push(b'\r'),
                c if (c as u32) < 0x20 => out.extend_from_slice(&[b'^', c as u8 + 0x40]),
                '\u{7f}' => out.extend_from_slice(b"^?"),
                c if c.is_control() => {
                    out.extend_from_slice(format!("\\u{{{:x}}}", c as u32).as_bytes())
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        for b in chunk.invalid() {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reframed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut r = Reframe::default();
        // In uneven pieces, as reads return them.
        for piece in body.chunks(7) {
            r.push(piece, &mut out);
        }
        r.finish(&mut out);
        out
    }

    #[test]
    fn reframe_examples() {
        assert_eq!(reframed(b""), b".\r\n");
        assert_eq!(reframed(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(reframed(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(reframed(b"x\r.\rQUIT\r\n"), b"x\r\n..\r\nQUIT\r\n.\r\n");
        assert_eq!(reframed(b"a\r\r\nb\rc"), b"a\r\nb\r\nc\r\n.\r\n");
        let long = reframed(&[b'.'; 2000]);
        assert!(
            long.split(|&b| b == b'\n').all(|l| l.len() <= 999),
            "{}",
            long.len()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Whatever a queue file holds, the data on the wire ends only at its end, by any
        /// reading a relay might have of "end of data"; lines stay within 998 octets.
        #[test]
        fn reframed_data_ends_only_at_the_end(
            body in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::Just(b'.'), proptest::prelude::Just(b'\r'),
                    proptest::prelude::Just(b'\n'), proptest::prelude::any::<u8>()
                ],
                0..3000,
            )
        ) {
            let out = reframed(&body);
            let wire = [b"\r\n".as_slice(), &out].concat();
            for (i, &b) in wire.iter().enumerate() {
                // CR and LF only as CRLF: no bare LF "." LF or CR "." CR end can exist.
                if b == b'\n' { proptest::prop_assert_eq!(wire[i - 1], b'\r'); }
                if b == b'\r' { proptest::prop_assert_eq!(wire.get(i + 1), Some(&b'\n')); }
            }
            let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
            let (last, body_lines) = (lines.len() - 2, &lines[..lines.len() - 2]);
            proptest::prop_assert_eq!(lines[last], b".\r".as_slice());
            for l in body_lines {
                proptest::prop_assert!(l.len() <= 999, "line of {} octets", l.len());
                if l.first() == Some(&b'.') {
                    proptest::prop_assert_eq!(l.get(1), Some(&b'.'), "unstuffed dot line");
                }
            }
            // Nothing but line ends and stuffing changed: un-stuffed and with the line ends
            // removed, the octets are the body's.
            let kept: Vec<u8> = body_lines.iter().flat_map(|l| {
                let l = &l[..l.len() - 1];
                if l.first() == Some(&b'.') { &l[1..] } else { l }
            }).copied().collect();
            let want: Vec<u8> = body.iter().copied().filter(|&b| b != b'\r' && b != b'\n').collect();
            proptest::prop_assert_eq!(kept, want);
        }
    }

    #[test]
    fn escape_controls_keeps_text_and_line_ends() {
        let esc = |b: &[u8]| {
            let mut v = Vec::new();
            escape_controls(b, &mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(
            esc(b"Subject: caf\xc3\xa9\tok\r\n"),
            "Subject: caf\u{e9}\tok\r\n"
        );
        assert_eq!(
            esc(b"X: \x1b]0;owned\x07\x1b[2J\n"),
            "X: ^[]0;owned^G^[[2J\n"
        );
        assert_eq!(esc(b"a\rb\x7f\xc2\x9b\xff\n"), "a^Mb^?\\u{9b}\\xff\n");
        assert_eq!(esc(b"\x00"), "^@");
    }
}
