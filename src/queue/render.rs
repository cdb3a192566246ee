//! The listing's layouts: Postfix's `mailq` layout, written as entries come ([`Listing`]),
//! and JSON lines like `postqueue -j`. Above the listing, a line for each route whose relays
//! are down (run/relay) and for each relay holding mail for its rate limit (run/ratelimit:
//! its daily cap reached, or throttling).

use super::Entry;
use crate::state;
use std::fmt::Write as _;
use std::io;

fn ctime(t: u64) -> String {
    let d = crate::message::rfc5322_date(t as i64);
    // "Tue, 24 Nov 2026 02:54:11 +0000" → "Tue Nov 24 02:54:11"
    let p: Vec<&str> = d.split_whitespace().collect();
    if p.len() >= 5 {
        format!(
            "{} {} {:>2} {}",
            p[0].trim_end_matches(','),
            p[2],
            p[1],
            p[4]
        )
    } else {
        d
    }
}

/// `ctime` for a listing, where many times fall in the same minute: the last minute's text
/// is kept and only the seconds are rewritten.
#[derive(Default)]
struct Ctime {
    minute: Option<u64>,
    text: String,
}

impl Ctime {
    fn get(&mut self, t: u64) -> &str {
        if self.minute != Some(t / 60) {
            self.text = ctime(t - t % 60);
            // A zone whose offset has seconds: no shortcut.
            self.minute = self.text.ends_with(":00").then_some(t / 60);
            if self.minute.is_none() {
                self.text = ctime(t);
                return &self.text;
            }
        }
        self.text.truncate(self.text.len() - 2);
        let _ = write!(self.text, "{:02}", t % 60);
        &self.text
    }
}

/// Indent of recipient lines: the ID column (a 22-character ID and the `!` of a held
/// message), size, arrival time, each with its separating space.
const PAD: &str = "                                                      ";
const ID_WIDTH: usize = 23;

/// A relay holding mail for its rate limit, as the daemon last recorded it (run/ratelimit):
/// the relay (its URL with the user name, as `relayq status` names it), why ("daily cap
/// reached", "throttled by the relay") and when sending goes on (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHold {
    pub relay: String,
    pub why: &'static str,
    pub until: u64,
}

/// The relays holding mail for their rate limit now.
pub fn rate_holds(layout: &crate::spool::Layout) -> Vec<RateHold> {
    use crate::daemon::ratelimit::RateFile;
    let now = state::now();
    let mut holds: Vec<RateHold> = RateFile::load(&RateFile::path(layout))
        .0
        .iter()
        .filter_map(|r| {
            let (why, until) = r.waiting(now)?;
            Some(RateHold {
                relay: r.relay.clone(),
                why,
                until,
            })
        })
        .collect();
    // Two routes through the same relay account: one line.
    holds.dedup();
    holds
}

/// The Postfix `mailq` layout, written as entries come (see [`Listing::entries`]).
pub struct Listing<'a> {
    w: &'a mut dyn io::Write,
    relay: Option<&'a state::RelayState>,
    /// Relays holding mail for their rate limit: a line each above the listing.
    holds: Vec<RateHold>,
    ctime: Ctime,
    /// Messages and bytes listed so far.
    n: usize,
    total: u64,
}

impl<'a> Listing<'a> {
    /// `relay`: the relays' recorded state (the default route's, with each
    /// `[[sender_relay]]` route's): a line above the listing for each route down, and its
    /// reason under the waiting messages of its senders that have no reply of their own.
    /// Buffer `w`: one write per line otherwise.
    pub fn new(relay: Option<&'a state::RelayState>, w: &'a mut dyn io::Write) -> Self {
        Listing {
            w,
            relay,
            holds: Vec::new(),
            ctime: Ctime::default(),
            n: 0,
            total: 0,
        }
    }

    /// `holds`: relays holding mail for their rate limit (see [`rate_holds`]), a line each
    /// above the listing.
    pub fn holding(mut self, holds: Vec<RateHold>) -> Self {
        self.holds = holds;
        self
    }

    /// Write these entries (the heading before the first).
    pub fn entries(&mut self, entries: &[Entry]) -> io::Result<()> {
        if self.n == 0 && !entries.is_empty() {
            // One line per route down: the default relays', then each [[sender_relay]]'s.
            for r in self
                .relay
                .into_iter()
                .flat_map(|r| std::iter::once(r).chain(&r.routes))
            {
                if let (false, Some(why)) = (r.up, r.reason.as_deref()) {
                    let since = r
                        .down_since
                        .map(|t| format!(" since {}", self.ctime.get(t)));
                    let route = r
                        .senders
                        .as_deref()
                        .map(|s| format!(" for {s}"))
                        .unwrap_or_default();
                    writeln!(
                        self.w,
                        "-- relay{route} down{}: {why}",
                        since.unwrap_or_default()
                    )?;
                }
            }
            // One line per relay waiting for its rate limit (daily cap, throttling).
            for h in &self.holds {
                writeln!(
                    self.w,
                    "-- relay {} waiting for the rate limit ({}) until {}",
                    h.relay,
                    h.why,
                    self.ctime.get(h.until)
                )?;
            }
            self.w.write_all(
                b"-Queue ID-              --Size-- ----Arrival Time---- -Sender/Recipient-------\n",
            )?;
        }
        let relay = self.relay;
        let w = &mut *self.w;
        for e in entries {
            self.n += 1;
            self.total += e.message_size;
            let mark = if e.queue_name == "hold" { "!" } else { "" };
            let sender = if e.sender.is_empty() {
                "MAILER-DAEMON"
            } else {
                &e.sender
            };
            let id_pad = ID_WIDTH.saturating_sub(e.queue_id.len() + mark.len());
            writeln!(
                w,
                "{}{mark}{} {:>8} {:<20} {sender}",
                e.queue_id,
                &PAD[..id_pad],
                e.message_size,
                self.ctime.get(e.arrival_time)
            )?;
            let mut last_reason: Option<&str> = None;
            // The reason of the relays this message's sender goes through, when they are down.
            let waiting = relay
                .map(|r| r.for_sender(&e.sender))
                .filter(|r| !r.up)
                .and_then(|r| r.reason.as_deref())
                .filter(|_| matches!(e.queue_name, "active" | "deferred"));
            for r in &e.recipients {
                let own = r.delay_reason.as_deref();
                if let Some(why) = own.or(waiting.filter(|_| r.state == "queued"))
                    && last_reason != Some(why)
                {
                    writeln!(w, "{PAD}({why})")?;
                    last_reason = Some(why);
                }
                writeln!(w, "{PAD}{}", r.address)?;
            }
            if let Some(n) = e.next_attempt {
                writeln!(w, "{PAD}(next attempt {})", self.ctime.get(n))?;
            }
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Send what is written so far on its way (a batch at a time: the first lines come at
    /// once).
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// The summary line (or "Mail queue is empty").
    pub fn finish(self) -> io::Result<()> {
        let n = self.n;
        if n == 0 {
            return self.w.write_all(b"Mail queue is empty\n");
        }
        writeln!(
            self.w,
            "-- {} Kbytes in {n} Request{}.",
            self.total.div_ceil(1024),
            if n == 1 { "" } else { "s" }
        )
    }
}

/// JSON lines like `postqueue -j`, one message a line, written to `w`.
pub fn json_to(entries: &[Entry], w: &mut dyn io::Write) -> io::Result<()> {
    for e in entries {
        serde_json::to_writer(&mut *w, e)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}
