//! Postfix's queue file format, read without `postcat`: typed records (one type byte, the
//! length in 7-bit groups low first with the high bit meaning "more", the data), pointer
//! records followed as Postfix's `rec_get()` follows them, in three segments: the envelope
//! (up to `M`), the content (`N` a line, `L` part of a line, up to `X`) and the extracted
//! envelope (up to `E`). The same reader takes the files `postdrop` leaves in `maildrop/`
//! and the ones `cleanup` writes into `incoming/`, `active/`, `deferred/` and `hold/`.
//! (Record types: postfix/src/global/rec_type.h; the format: record.c.)

use super::queue::Found;

/// Bounds on an untrusted file: the number of pointer jumps (Postfix: 10000 reverse ones),
/// and the records read in all (a loop of forward jumps ends too).
const MAX_JUMPS: usize = 10_000;
const MAX_RECORDS: usize = 50_000_000;

/// DSN NOTIFY bits as Postfix stores them (dsn_mask.h).
const NOTIFY_BITS: [(u32, &str); 4] = [(1, "NEVER"), (2, "SUCCESS"), (4, "FAILURE"), (8, "DELAY")];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Segment {
    Envelope,
    Content,
    Extracted,
}

/// One record: its type and data, and where the next one starts.
fn record(b: &[u8], at: usize) -> Result<(u8, &[u8], usize), String> {
    let ty = *b.get(at).ok_or("truncated")?;
    let (mut len, mut shift, mut i) = (0usize, 0u32, at + 1);
    loop {
        let byte = *b.get(i).ok_or("truncated in a record length")?;
        i += 1;
        if shift > 28 {
            return Err(format!("bad record length at offset {at}"));
        }
        len |= ((byte & 0x7f) as usize) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let end = i
        .checked_add(len)
        .filter(|e| *e <= b.len())
        .ok_or_else(|| format!("truncated in a record of type {:?}", ty as char))?;
    Ok((ty, &b[i..end], end))
}

/// `notify_flags` as relayq writes NOTIFY ("SUCCESS,FAILURE"), when it is a known mask.
fn notify_text(v: &str) -> Option<String> {
    let mask: u32 = v.trim().parse().ok()?;
    let words: Vec<&str> = NOTIFY_BITS
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, w)| *w)
        .collect();
    (!words.is_empty() && mask < 16).then(|| words.join(","))
}

/// `ret_flags` as RET (1 FULL, 2 HDRS).
fn ret_text(v: &str) -> Option<String> {
    match v.trim() {
        "1" => Some("FULL".into()),
        "2" => Some("HDRS".into()),
        _ => None,
    }
}

fn text(d: &[u8]) -> String {
    String::from_utf8_lossy(d).into_owned()
}

/// Read one Postfix queue file. An error says why it cannot be taken over (a file still
/// being written has no end record).
pub(super) fn parse(b: &[u8]) -> Result<Found, String> {
    let mut f = Found::default();
    let mut seg = Segment::Envelope;
    let (mut at, mut jumps, mut n) = (0usize, 0usize, 0usize);
    let mut notify: Vec<Option<String>> = Vec::new();
    let mut next_notify: Option<String> = None;
    loop {
        n += 1;
        if n > MAX_RECORDS {
            return Err("too many records".into());
        }
        if at >= b.len() {
            return Err("no end record: the file is incomplete (still being written?)".into());
        }
        let (ty, d, next) = record(b, at)?;
        at = next;
        match (seg, ty) {
            // A pointer: 0 is a placeholder, else jump (bounded).
            (_, b'p') => {
                let off: usize = text(d)
                    .trim()
                    .parse()
                    .map_err(|_| "malformed pointer record".to_string())?;
                if off != 0 {
                    jumps += 1;
                    if jumps > MAX_JUMPS || off >= b.len() {
                        return Err("bad pointer record".into());
                    }
                    at = off;
                }
            }
            (_, b'w') => {}
            (Segment::Envelope, b'M') => seg = Segment::Content,
            (Segment::Content, b'N') => {
                f.content.extend_from_slice(d);
                f.content.push(b'\n');
            }
            (Segment::Content, b'L') => f.content.extend_from_slice(d),
            (Segment::Content, b'X') => seg = Segment::Extracted,
            (Segment::Content, t) => {
                return Err(format!("unexpected record {:?} in the content", t as char));
            }
            (_, b'E') if seg == Segment::Extracted => {
                f.notify = uniform(&notify);
                return Ok(f);
            }
            (_, b'S') => f.sender = Some(text(d)),
            (_, b'F') => f.full_name = Some(text(d)).filter(|n| !n.is_empty()),
            (_, b'T') => {
                f.time = text(d)
                    .split_whitespace()
                    .next()
                    .and_then(|t| t.parse().ok())
            }
            (_, b'R') => {
                f.rcpts.push(text(d));
                notify.push(next_notify.take());
            }
            // Delivered, or cancelled as a duplicate: not to be sent again.
            (_, b'D') | (_, b'/') => {
                f.done += 1;
                next_notify = None;
            }
            (_, b'n') => next_notify = notify_text(&text(d)),
            (_, b'i') => f.envid = Some(text(d)),
            (_, b'<') => f.ret = ret_text(&text(d)),
            (_, b'A') => {
                let a = text(d);
                match a.split_once('=') {
                    Some(("notify_flags", v)) => next_notify = notify_text(v),
                    Some(("envelope_id", v)) => f.envid = Some(v.to_string()),
                    Some(("ret_flags", v)) => f.ret = ret_text(v),
                    _ => {}
                }
            }
            (_, b'E') => return Err("end record before the content".into()),
            // C size, c ctime, O/o original recipient, W warning time, K killed, L loop
            // filter, I inspector, f flags, d delay, V VERP, P priority, r/e return-receipt
            // and errors-to, m milter count, > redirect, and anything newer.
            _ => {}
        }
    }
}

/// The NOTIFY all recipients share, if they share one.
fn uniform(v: &[Option<String>]) -> Option<String> {
    let first = v.first()?.clone()?;
    v.iter()
        .all(|x| x.as_deref() == Some(first.as_str()))
        .then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(out: &mut Vec<u8>, ty: u8, data: &[u8]) {
        out.push(ty);
        let mut len = data.len();
        loop {
            let mut byte = (len & 0x7f) as u8;
            len >>= 7;
            if len != 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if len == 0 {
                break;
            }
        }
        out.extend_from_slice(data);
    }

    #[test]
    fn records_pointers_and_done_recipients() {
        let mut b = Vec::new();
        rec(&mut b, b'T', b"1700000000 5");
        rec(&mut b, b'S', b"app@example.org");
        rec(&mut b, b'A', b"notify_flags=6");
        rec(&mut b, b'R', b"a@example.net");
        rec(&mut b, b'D', b"b@example.net");
        rec(&mut b, b'p', b"              0");
        rec(&mut b, b'M', b"");
        rec(&mut b, b'N', b"Subject: x");
        rec(&mut b, b'N', b"");
        let long = vec![b'y'; 300];
        rec(&mut b, b'L', &long);
        rec(&mut b, b'N', b"tail");
        // A pointer forward over junk, as cleanup leaves after editing a header.
        let ptr_at = b.len();
        rec(&mut b, b'p', b"000000000000000");
        let junk_at = b.len();
        rec(&mut b, b'Z', b"junk");
        let target = b.len();
        let ptr = format!("{target:15}");
        b.truncate(ptr_at);
        rec(&mut b, b'p', ptr.as_bytes());
        assert_eq!(b.len(), junk_at);
        rec(&mut b, b'Z', b"junk");
        rec(&mut b, b'X', b"");
        rec(&mut b, b'R', b"c@example.net");
        rec(&mut b, b'E', b"");
        let f = parse(&b).unwrap();
        assert_eq!(f.sender.as_deref(), Some("app@example.org"));
        assert_eq!(f.rcpts, ["a@example.net", "c@example.net"]);
        assert_eq!(f.done, 1);
        assert_eq!(f.time, Some(1_700_000_000));
        let mut want = b"Subject: x\n\n".to_vec();
        want.extend_from_slice(&long);
        want.extend_from_slice(b"tail\n");
        assert_eq!(f.content, want);
        assert_eq!(f.notify, None, "only the first recipient asked for NOTIFY");
        // Cut anywhere: an error, never a panic or a partial message.
        for cut in 0..b.len() {
            assert!(parse(&b[..cut]).is_err(), "cut {cut}");
        }
        assert_eq!(notify_text("6").as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(notify_text("99"), None);
    }
}
