//! Per-message delivery state: an append-only log `queue/<ID>.st` beside the message, one
//! fsynced line per event (recipient delivered, deferred, failed; bounce sent). A torn last
//! line after a crash is ignored, so at worst a recipient is tried again (at-least-once).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptState {
    Pending,
    /// Last temporary failure: (time, reply).
    Deferred(u64, String),
    Delivered(u64, String),
    Failed(u64, String),
}

impl RcptState {
    pub fn is_done(&self) -> bool {
        matches!(self, RcptState::Delivered(..) | RcptState::Failed(..))
    }
}

/// The state of one queued message's recipients, as replayed from its log.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub rcpts: Vec<RcptState>,
    /// Delivery attempts that ended in a message-level deferral.
    pub attempts: u32,
    /// Earliest time of the next attempt (unix seconds).
    pub next: u64,
    pub bounced: bool,
    pub warned: bool,
    pub held: bool,
}

pub fn path_for(msg: &Path) -> PathBuf {
    let mut p = msg.as_os_str().to_owned();
    p.push(".st");
    PathBuf::from(p)
}

fn clean(reply: &str) -> String {
    let s: String = reply
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s.chars().take(400).collect()
}

impl State {
    pub fn new(n: usize) -> State {
        State {
            rcpts: vec![RcptState::Pending; n],
            ..State::default()
        }
    }

    /// Replay a log. Unknown or torn lines are skipped.
    pub fn load(path: &Path, n: usize) -> State {
        let mut st = State::new(n);
        let Ok(text) = std::fs::read(path) else {
            return st;
        };
        let complete = match text.iter().rposition(|&b| b == b'\n') {
            Some(i) => &text[..=i],
            None => return st,
        };
        for line in String::from_utf8_lossy(complete).lines() {
            st.apply(line);
        }
        st
    }

    fn apply(&mut self, line: &str) {
        let mut it = line.splitn(4, ' ');
        let (Some(k), Some(a)) = (it.next(), it.next()) else {
            return;
        };
        let t: u64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let reply = it.next().unwrap_or("").to_string();
        match k {
            "d" | "f" | "t" => {
                let Ok(i) = a.parse::<usize>() else { return };
                let Some(r) = self.rcpts.get_mut(i) else {
                    return;
                };
                *r = match k {
                    "d" => RcptState::Delivered(t, reply),
                    "f" => RcptState::Failed(t, reply),
                    _ => RcptState::Deferred(t, reply),
                };
            }
            "n" => {
                self.next = a.parse().unwrap_or(0);
                self.attempts = t as u32;
            }
            "b" => self.bounced = true,
            "w" => self.warned = true,
            "h" => self.held = a == "1",
            _ => {}
        }
    }

    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.rcpts
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_done())
            .map(|(i, _)| i)
    }

    pub fn all_done(&self) -> bool {
        self.rcpts.iter().all(|r| r.is_done())
    }
}

/// Appends events to a state log, fsyncing each batch.
pub struct Journal {
    f: File,
}

impl Journal {
    pub fn open(path: &Path) -> io::Result<Journal> {
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(Journal { f })
    }

    /// Write event lines and make them durable. Each event also updates `st`.
    pub fn record(&mut self, st: &mut State, events: &[Event]) -> io::Result<()> {
        let mut buf = String::new();
        for e in events {
            let line = e.line();
            st.apply(&line);
            buf.push_str(&line);
            buf.push('\n');
        }
        self.f.write_all(buf.as_bytes())?;
        self.f.sync_data()
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    Delivered(usize, u64, String),
    Deferred(usize, u64, String),
    Failed(usize, u64, String),
    /// Next attempt time and the attempt count so far.
    Next(u64, u32),
    Bounced,
    Warned,
    Held(bool),
}

impl Event {
    fn line(&self) -> String {
        match self {
            Event::Delivered(i, t, r) => format!("d {i} {t} {}", clean(r)),
            Event::Deferred(i, t, r) => format!("t {i} {t} {}", clean(r)),
            Event::Failed(i, t, r) => format!("f {i} {t} {}", clean(r)),
            Event::Next(t, a) => format!("n {t} {a}"),
            Event::Bounced => "b 1".into(),
            Event::Warned => "w 1".into(),
            Event::Held(h) => format!("h {}", u8::from(*h)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_and_torn_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("X.st");
        let mut st = State::new(3);
        let mut j = Journal::open(&p).unwrap();
        j.record(
            &mut st,
            &[
                Event::Delivered(0, 5, "250 ok".into()),
                Event::Deferred(1, 6, "451 later\r\nx".into()),
                Event::Next(100, 1),
            ],
        )
        .unwrap();
        j.record(&mut st, &[Event::Failed(2, 7, "550 no".into())])
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"d 1 9 250 to")
            .unwrap();
        let back = State::load(&p, 3);
        assert_eq!(back.rcpts[0], RcptState::Delivered(5, "250 ok".into()));
        assert_eq!(back.rcpts[1], RcptState::Deferred(6, "451 later  x".into()));
        assert_eq!(back.rcpts[2], RcptState::Failed(7, "550 no".into()));
        assert_eq!((back.next, back.attempts), (100, 1));
        assert_eq!(back.pending().collect::<Vec<_>>(), vec![1]);
        assert_eq!(st.rcpts, back.rcpts);
        // Out-of-range indices from a damaged log are ignored.
        std::fs::write(&p, "d 99 1 x\nzz\n").unwrap();
        assert!(State::load(&p, 1).rcpts[0] == RcptState::Pending);
    }
}
