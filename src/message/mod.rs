//! The message as `sendmail` receives it: line framing (LF/CRLF, the lone-dot rule, SMTP
//! dot-stuffing), the header section (parsed, completed, Bcc removed), and the streaming
//! copy of the body into the spool as CRLF with lines of at most 998 octets. No file or
//! network I/O of its own: it works on any `BufRead`/`Write`.

use crate::error::{Error, Result};
use std::io::{self, BufRead, Write};

mod wire;
pub use wire::{Reframe, contains_nul, escape_controls, trace_field};

/// How the end of the message is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Plain stdin: EOF ends it; a lone "." line too unless `-i`/`-oi`.
    Stdin { dot_ends: bool },
    /// SMTP DATA: a lone "." ends it; a leading "." is unstuffed; EOF first is an error.
    Smtp,
}

/// Lines longer than this (excluding CRLF) are broken (RFC 5322 §2.1.1).
pub const MAX_LINE: usize = 998;
/// Largest piece of one line held in memory at once.
const CHUNK: usize = 64 * 1024;
/// Bounds on the header section.
pub const MAX_HEADER_BYTES: usize = 1 << 20;
pub const MAX_HEADERS: usize = 10_000;

/// Reads a message line by line, in bounded pieces, with line ends removed.
pub struct Lines<R> {
    inner: R,
    framing: Framing,
    done: bool,
    at_start: bool,
    cut_short: bool,
}

/// One piece of a line: `complete` is false when the line goes on in the next piece.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Piece {
    pub complete: bool,
}

impl<R: BufRead> Lines<R> {
    pub fn new(inner: R, framing: Framing) -> Self {
        Lines {
            inner,
            framing,
            done: false,
            at_start: true,
            cut_short: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Read the next piece of at most `max` bytes into `buf`. None at the end of the message.
    pub fn next(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<Piece>> {
        buf.clear();
        if self.done {
            return Ok(None);
        }
        let max = max.max(2);
        let complete = loop {
            let avail = self.inner.fill_buf()?;
            if avail.is_empty() {
                self.done = true;
                if self.framing == Framing::Smtp {
                    self.cut_short = true;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed during DATA",
                    ));
                }
                if buf.is_empty() && self.at_start {
                    return Ok(None);
                }
                while buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                break true;
            }
            let room = max - buf.len().min(max);
            match memchr(b'\n', &avail[..avail.len().min(room + 8)]) {
                Some(i) if buf.len() + trim_cr(&avail[..i]).len() <= max => {
                    buf.extend_from_slice(&avail[..i]);
                    self.inner.consume(i + 1);
                    while buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                    break true;
                }
                Some(_) => {
                    let mut take = room.max(1);
                    if take > 1 && avail[take - 1] == b'\r' {
                        take -= 1;
                    }
                    buf.extend_from_slice(&avail[..take]);
                    self.inner.consume(take);
                    break false;
                }
                None if avail.len() >= room + 8 || buf.len() + avail.len() > max => {
                    let mut take = room.min(avail.len()).max(1);
                    if take > 1 && avail[take - 1] == b'\r' {
                        take -= 1;
                    }
                    buf.extend_from_slice(&avail[..take]);
                    self.inner.consume(take);
                    break false;
                }
                None => {
                    let n = avail.len();
                    buf.extend_from_slice(avail);
                    self.inner.consume(n);
                }
            }
        };
        let was_start = self.at_start;
        self.at_start = complete;
        if was_start {
            match self.framing {
                Framing::Stdin { dot_ends: true } | Framing::Smtp if complete && buf == b"." => {
                    self.done = true;
                    return Ok(None);
                }
                Framing::Smtp if buf.first() == Some(&b'.') => {
                    buf.remove(0);
                }
                _ => {}
            }
        }
        Ok(Some(Piece { complete }))
    }

    /// Read and discard the rest of the message (SMTP: to keep the dialogue in step).
    /// The input ended inside SMTP DATA, before the final dot: the client is gone.
    pub fn cut_short(&self) -> bool {
        self.cut_short
    }

    pub fn drain(&mut self) -> io::Result<()> {
        let mut buf = Vec::new();
        while self.next(&mut buf, CHUNK)?.is_some() {}
        Ok(())
    }
}

fn trim_cr(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r'] = s {
        s = rest;
    }
    s
}

fn memchr(b: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&x| x == b)
}

/// One header field: its name and its physical lines (continuations included), no CRLF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub lines: Vec<Vec<u8>>,
}

impl Header {
    pub fn new(name: &str, value: &str) -> Header {
        Header {
            name: name.to_string(),
            lines: vec![format!("{name}: {value}").into_bytes()],
        }
    }
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
    /// The unfolded value (after "Name:"), lossily decoded.
    pub fn value(&self) -> String {
        let mut v = String::new();
        for (i, l) in self.lines.iter().enumerate() {
            let s = String::from_utf8_lossy(l);
            if i == 0 {
                v.push_str(s.split_once(':').map(|x| x.1).unwrap_or(""));
            } else {
                v.push(' ');
                v.push_str(s.trim_start());
            }
        }
        v.trim().to_string()
    }
}

/// The header section and where the body starts.
#[derive(Debug, Default)]
pub struct Head {
    pub headers: Vec<Header>,
    /// A first body line read while looking for headers (no blank separator was given).
    pub first_body: Option<(Vec<u8>, bool)>,
    /// The input ended inside or right after the headers.
    pub eof: bool,
}

fn check_nul(buf: &[u8]) -> Result<()> {
    if buf.contains(&0) {
        return Err(Error::data(
            "message contains a NUL byte; sendmail refuses binary data that SMTP cannot carry",
        ));
    }
    Ok(())
}

fn field_name(line: &[u8]) -> Option<&str> {
    let i = memchr(b':', line)?;
    let name = &line[..i];
    let ok = !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b));
    if ok {
        std::str::from_utf8(name).ok()
    } else {
        None
    }
}

/// Read the header section.
pub fn read_head<R: BufRead>(lines: &mut Lines<R>) -> Result<Head> {
    let mut head = Head::default();
    let mut buf = Vec::new();
    let mut total = 0usize;
    let mut first = true;
    loop {
        let piece = lines
            .next(&mut buf, MAX_HEADER_BYTES + 1 - total.min(MAX_HEADER_BYTES))
            .map_err(read_err)?;
        let Some(piece) = piece else {
            head.eof = true;
            return Ok(head);
        };
        check_nul(&buf)?;
        if !piece.complete {
            return Err(Error::data(format!(
                "header section larger than {MAX_HEADER_BYTES} bytes"
            )));
        }
        total += buf.len() + 2;
        if first {
            first = false;
            if buf.starts_with(b"From ") {
                continue; // mbox separator line, as Postfix drops it
            }
        }
        if buf.is_empty() {
            return Ok(head);
        }
        if buf[0] == b' ' || buf[0] == b'\t' {
            if let Some(h) = head.headers.last_mut() {
                h.lines.push(std::mem::take(&mut buf));
                continue;
            }
        } else if let Some(name) = field_name(&buf) {
            if head.headers.len() >= MAX_HEADERS {
                return Err(Error::data(format!(
                    "more than {MAX_HEADERS} header fields"
                )));
            }
            let name = name.to_string();
            head.headers.push(Header {
                name,
                lines: vec![std::mem::take(&mut buf)],
            });
            continue;
        }
        head.first_body = Some((std::mem::take(&mut buf), true));
        return Ok(head);
    }
}

pub fn read_err(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::data(e.to_string())
    } else {
        Error::temp(format!("error reading the message: {e}"))
    }
}

/// Write one header's lines, folding any physical line over 998 octets at whitespace (or,
/// with no whitespace, at 998 with a continuation), so no octet is lost.
pub fn write_header(w: &mut dyn Write, h: &Header) -> io::Result<()> {
    for l in &h.lines {
        let clean: Vec<u8>;
        let mut rest: &[u8] = if l.contains(&b'\r') {
            // A bare CR inside a header line: a space, so the field stays one field.
            clean = l
                .iter()
                .map(|&b| if b == b'\r' { b' ' } else { b })
                .collect();
            &clean
        } else {
            l
        };
        while rest.len() > MAX_LINE {
            let cut = rest[1..MAX_LINE]
                .iter()
                .rposition(|&b| b == b' ' || b == b'\t')
                .map(|i| i + 1)
                .filter(|&i| rest[..i].iter().any(|&b| b != b' ' && b != b'\t'));
            match cut {
                Some(i) => {
                    w.write_all(&rest[..i])?;
                    w.write_all(b"\r\n")?;
                    rest = &rest[i..];
                }
                None => {
                    // The continuation's leading space counts toward the next line.
                    w.write_all(&rest[..MAX_LINE - 1])?;
                    w.write_all(b"\r\n ")?;
                    rest = &rest[MAX_LINE - 1..];
                }
            }
        }
        w.write_all(rest)?;
        w.write_all(b"\r\n")?;
    }
    Ok(())
}

/// Copies the body: CRLF line ends, lines over 998 octets broken with CRLF, NUL refused,
/// the total bounded by `limit`. Returns the bytes written.
pub struct BodyCopy {
    pub written: u64,
    pub limit: u64,
    pub eight_bit: bool,
    col: usize,
}

impl BodyCopy {
    pub fn new(already: u64, limit: u64) -> BodyCopy {
        BodyCopy {
            written: already,
            limit,
            eight_bit: false,
            col: 0,
        }
    }

    fn too_big(&self) -> Error {
        Error::data(format!(
            "message larger than the maximum size of {} bytes (max_message_size)",
            self.limit
        ))
    }

    pub fn count(&mut self, n: usize) -> Result<()> {
        self.written += n as u64;
        if self.written > self.limit {
            return Err(self.too_big());
        }
        Ok(())
    }

    /// Write one piece of a line.
    pub fn piece(&mut self, w: &mut dyn Write, buf: &[u8], complete: bool) -> Result<()> {
        check_nul(buf)?;
        if !self.eight_bit && buf.iter().any(|&b| b >= 0x80) {
            self.eight_bit = true;
        }
        // A bare CR (old Mac line end, or PHP's CR CR LF) is a line end too: SMTP forbids
        // bare CR, and converting it keeps every other octet.
        if let Some(i) = buf.iter().position(|&b| b == b'\r') {
            self.piece(w, &buf[..i], true)?;
            return self.piece(w, &buf[i + 1..], complete);
        }
        let io = |e: io::Error| Error::spool_io("cannot write queue file", &e);
        let mut rest = buf;
        while self.col + rest.len() > MAX_LINE {
            let take = MAX_LINE - self.col;
            w.write_all(&rest[..take]).map_err(io)?;
            w.write_all(b"\r\n").map_err(io)?;
            self.count(take + 2)?;
            rest = &rest[take..];
            self.col = 0;
        }
        w.write_all(rest).map_err(io)?;
        self.col += rest.len();
        self.count(rest.len())?;
        if complete {
            w.write_all(b"\r\n").map_err(io)?;
            self.count(2)?;
            self.col = 0;
        }
        Ok(())
    }

    /// Copy the rest of the message from `lines`.
    pub fn copy<R: BufRead>(&mut self, lines: &mut Lines<R>, w: &mut dyn Write) -> Result<()> {
        let mut buf = Vec::with_capacity(CHUNK);
        while let Some(p) = lines.next(&mut buf, CHUNK).map_err(read_err)? {
            self.piece(w, &buf, p.complete)?;
        }
        Ok(())
    }
}

/// RFC 5322 date of `t` (seconds since the epoch) in the local time zone.
pub fn rfc5322_date(t: i64) -> String {
    // SAFETY: localtime_r writes only into `tm`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let tt: libc::time_t = t as libc::time_t;
    if unsafe { libc::localtime_r(&tt, &mut tm) }.is_null() {
        return rfc5322_utc(t);
    }
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let off = tm.tm_gmtoff / 60;
    let sign = if off < 0 { '-' } else { '+' };
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} {}{:02}{:02}",
        DAYS[tm.tm_wday.clamp(0, 6) as usize],
        tm.tm_mday,
        MONS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        sign,
        off.abs() / 60,
        off.abs() % 60
    )
}

/// Days since 1970-01-01 as a (year, month 1-12, day 1-31) date: Howard Hinnant's
/// civil-from-days.
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn rfc5322_utc(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONS[(m - 1) as usize],
        y,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A display name as a phrase: atoms stay, anything else is quoted; non-ASCII is RFC 2047
/// encoded.
pub fn phrase(name: &str) -> String {
    let name = name.trim();
    if !name.is_ascii() {
        use base64::Engine;
        return format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(name)
        );
    }
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c))
    {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Recipients named in the header (for -t): Resent-To/Cc/Bcc when any Resent- field is
/// present, else To/Cc/Bcc; every occurrence of each field counts. An entry that is not an
/// address (`"Some Name" bob`) is a data error naming it: no recipient is dropped silently.
pub fn header_recipients(headers: &[Header]) -> Result<Vec<String>> {
    let resent = headers
        .iter()
        .any(|h| h.name.len() > 7 && h.name[..7].eq_ignore_ascii_case("resent-"));
    let names: &[&str] = if resent {
        &["Resent-To", "Resent-Cc", "Resent-Bcc"]
    } else {
        &["To", "Cc", "Bcc"]
    };
    let mut out = Vec::new();
    for h in headers.iter().filter(|h| names.iter().any(|n| h.is(n))) {
        let (list, bad) = crate::address::parse_list_checked(&h.value());
        if let Some(b) = bad.first() {
            return Err(Error::data(format!(
                "{}: {b:?} is not an address (a name needs its address in <>)",
                h.name
            )));
        }
        out.extend(list.into_iter().map(|m| m.addr));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    use super::*;

    fn lines(input: &[u8], framing: Framing, max: usize) -> Vec<(String, bool)> {
        let mut l = Lines::new(io::BufReader::with_capacity(16, input), framing);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(p) = l.next(&mut buf, max).unwrap() {
            out.push((String::from_utf8_lossy(&buf).into_owned(), p.complete));
        }
        out
    }

    fn s(v: &[(&str, bool)]) -> Vec<(String, bool)> {
        v.iter().map(|(a, b)| (a.to_string(), *b)).collect()
    }

    #[test]
    fn line_ends() {
        let f = Framing::Stdin { dot_ends: false };
        assert_eq!(
            lines(b"a\nb\r\nc\r\r\nd", f, 100),
            s(&[("a", true), ("b", true), ("c", true), ("d", true)])
        );
        assert_eq!(lines(b"", f, 100), s(&[]));
        assert_eq!(lines(b"\n", f, 100), s(&[("", true)]));
        assert_eq!(
            lines(b"x\n.\ny\n", f, 100),
            s(&[("x", true), (".", true), ("y", true)])
        );
    }

    #[test]
    fn lone_dot() {
        let f = Framing::Stdin { dot_ends: true };
        assert_eq!(lines(b"x\n.\ny\n", f, 100), s(&[("x", true)]));
        assert_eq!(
            lines(b"x\n..\n.\r\n", f, 100),
            s(&[("x", true), ("..", true)])
        );
        let f = Framing::Smtp;
        assert_eq!(
            lines(b"x\r\n..y\r\n.\r\nNEXT", f, 100),
            s(&[("x", true), (".y", true)])
        );
    }

    #[test]
    fn smtp_eof_is_error() {
        let mut l = Lines::new(io::BufReader::new(&b"x\r\n"[..]), Framing::Smtp);
        let mut buf = Vec::new();
        assert!(l.next(&mut buf, 100).unwrap().is_some());
        assert!(l.next(&mut buf, 100).is_err());
    }

    #[test]
    fn long_lines_are_pieces() {
        let f = Framing::Stdin { dot_ends: true };
        let got = lines(b"abcdefghij\n.\n", f, 4);
        assert_eq!(got, s(&[("abcd", false), ("efgh", false), ("ij", true)]));
        // A "." that continues a long line is not the end.
        let got = lines(b"abcd.\nz\n", f, 4);
        assert_eq!(got, s(&[("abcd", false), (".", true), ("z", true)]));
    }

    #[test]
    fn body_breaks_long_lines_without_loss() {
        let long = vec![b'x'; 2500];
        let mut input = long.clone();
        input.extend_from_slice(b"\nend\n");
        let mut l = Lines::new(
            io::BufReader::with_capacity(100, &input[..]),
            Framing::Stdin { dot_ends: false },
        );
        let mut out = Vec::new();
        let mut bc = BodyCopy::new(0, 1 << 20);
        bc.copy(&mut l, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.split("\r\n").all(|l| l.len() <= MAX_LINE));
        assert_eq!(text.replace("\r\n", "").len(), 2500 + 3);
        assert!(text.ends_with("end\r\n"));
    }

    #[test]
    fn size_limit_and_nul() {
        let mut l = Lines::new(
            io::BufReader::new(&b"0123456789\n0123456789\n"[..]),
            Framing::Stdin { dot_ends: false },
        );
        let mut bc = BodyCopy::new(0, 15);
        let e = bc.copy(&mut l, &mut Vec::new()).unwrap_err();
        assert_eq!(e.code(), 65);
        assert!(e.msg.contains("15 bytes"));
        let mut l = Lines::new(
            io::BufReader::new(&b"a\0b\n"[..]),
            Framing::Stdin { dot_ends: false },
        );
        assert_eq!(
            BodyCopy::new(0, 100)
                .copy(&mut l, &mut Vec::new())
                .unwrap_err()
                .code(),
            65
        );
    }

    #[test]
    fn head() {
        let input = b"From someone Mon Jan 1\nTo: a@x,\n  b@y\nSubject: hi\nBcc: c@z\n\nbody\n";
        let mut l = Lines::new(
            io::BufReader::new(&input[..]),
            Framing::Stdin { dot_ends: false },
        );
        let h = read_head(&mut l).unwrap();
        assert_eq!(h.headers.len(), 3);
        assert_eq!(h.headers[0].value(), "a@x, b@y");
        assert_eq!(
            header_recipients(&h.headers).unwrap(),
            ["a@x", "b@y", "c@z"]
        );
        let mut l2 = Lines::new(
            io::BufReader::new(&b"no header here\nmore\n"[..]),
            Framing::Stdin { dot_ends: false },
        );
        let h2 = read_head(&mut l2).unwrap();
        assert!(h2.headers.is_empty());
        assert_eq!(h2.first_body.unwrap().0, b"no header here");
        let mut l3 = Lines::new(
            io::BufReader::new(&b"To: a@x\nResent-To: r@x\nResent-Cc: s@x\n\n"[..]),
            Framing::Stdin { dot_ends: false },
        );
        assert_eq!(
            header_recipients(&read_head(&mut l3).unwrap().headers).unwrap(),
            ["r@x", "s@x"]
        );
    }

    #[test]
    fn header_folding() {
        let mut v = String::from("Subject:");
        for _ in 0..300 {
            v.push_str(" word");
        }
        let h = Header {
            name: "Subject".into(),
            lines: vec![v.clone().into_bytes()],
        };
        let mut out = Vec::new();
        write_header(&mut out, &h).unwrap();
        let t = String::from_utf8(out).unwrap();
        assert!(t.split("\r\n").all(|l| l.len() <= MAX_LINE));
        assert_eq!(t.replace("\r\n", ""), v);
        let h = Header {
            name: "X".into(),
            lines: vec![format!("X: {}", "y".repeat(3000)).into_bytes()],
        };
        let mut out = Vec::new();
        write_header(&mut out, &h).unwrap();
        let t = String::from_utf8(out).unwrap();
        assert!(t.split("\r\n").all(|l| l.len() <= MAX_LINE));
        assert_eq!(t.matches('y').count(), 3000);
    }

    #[test]
    fn dates_and_phrases() {
        assert_eq!(rfc5322_utc(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_utc(1_795_999_276),
            "Mon, 30 Nov 2026 00:41:16 +0000"
        );
        assert!(rfc5322_date(1_795_999_276).contains("2026"));
        assert_eq!(phrase("Cron Daemon"), "Cron Daemon");
        assert_eq!(phrase("Doe, J"), "\"Doe, J\"");
        assert!(phrase("Jürgen").starts_with("=?UTF-8?B?"));
    }
}
