//! Send-rate limits per relay (`rate = "14/s"`, `daily = 2000` in a relay table, or a
//! provider preset's): the limiter a relay's `Slot` holds, shared by every connection to it,
//! and its record in `run/ratelimit`, which carries the daily count across restarts and
//! shows `relayq status` the rate in force. Pure: the clock is a parameter (`now` for the
//! spacing and throttle pauses, `unix` seconds for the daily count).
//!
//! * `rate`: transactions (one per MAIL FROM) evenly spaced, `(per + 100 ms) / count` apart
//!   (`JITTER`), with no burst: in any window of `per` at most `count` start, whatever the
//!   number of connections, and the relay sees no more even when one is held up 100 ms.
//! * `daily`: recipients (RCPT TO) in any 24 hours, as Microsoft 365 counts them; for a
//!   provider that counts messages (Gmail) counting recipients never sends more. Counted in
//!   hourly buckets kept 25 hours, so a recipient counts for at least a full 24 hours.
//! * A throttling reply (a `421`/`454` that `relay::Reply::is_throttling`) pauses
//!   the relay (1 s, doubling while they go on, at most a minute; then one transaction
//!   probes, as for an outage) without deferring the message: it goes again as soon as
//!   the relay allows.

use std::time::{Duration, Instant};

/// The delay between relayq and the relay (network, scheduling) the spacing allows for: a
/// transaction held up this much more than the next does not make the relay see `count + 1`
/// in one `per`. At 10/s it costs 9% of the rate (9.1/s), at 30/min nothing to speak of.
pub const JITTER: Duration = Duration::from_millis(100);

/// A send rate: at most `count` transactions per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// `"14/s"`, `"30/min"`, `"100/h"` (also `/sec`, `/m`, `/hour`); `"off"` (or `"0"`) is
    /// None: no limit.
    pub fn parse(s: &str) -> Result<Option<Rate>, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") || s == "0" {
            return Ok(None);
        }
        let bad =
            || format!("invalid rate {s:?} (use e.g. \"14/s\", \"30/min\", \"100/h\" or \"off\")");
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let secs = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            _ => return Err(bad()),
        };
        if count == 0 {
            return Ok(None);
        }
        Ok(Some(Rate {
            count,
            per: Duration::from_secs(secs),
        }))
    }

    /// The time between two transactions: `per / count`, with [`JITTER`] added to `per` so
    /// that delays between relayq and the relay do not bunch `count + 1` into one `per` as
    /// the relay counts.
    pub fn spacing(&self) -> Duration {
        (self.per + JITTER) / self.count
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Hourly buckets kept: the current hour and the 24 before it.
const BUCKETS: usize = 25;

/// Recipients sent in the last 24 hours (and up to one more), in hourly buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Daily {
    /// The hour (unix seconds / 3600) of the newest bucket, `counts[0]`.
    hour: u64,
    counts: [u64; BUCKETS],
}

impl Daily {
    /// Move the window to `unix`'s hour: buckets older than 24 hours leave it.
    fn roll(&mut self, unix: u64) {
        let h = unix / 3600;
        if h <= self.hour {
            return;
        }
        let shift = (h - self.hour).min(BUCKETS as u64) as usize;
        self.counts.rotate_right(shift);
        self.counts[..shift].fill(0);
        self.hour = h;
    }

    /// Recipients counted at `unix`.
    pub fn count(&self, unix: u64) -> u64 {
        let mut d = self.clone();
        d.roll(unix);
        d.counts.iter().sum()
    }

    fn add(&mut self, unix: u64, n: u64) {
        self.roll(unix);
        self.counts[0] = self.counts[0].saturating_add(n);
    }

    /// Take back `n` counted this hour or the one before (a transaction that did not go).
    fn sub(&mut self, unix: u64, n: u64) {
        self.roll(unix);
        let mut n = n;
        for c in self.counts.iter_mut().take(2) {
            let k = n.min(*c);
            *c -= k;
            n -= k;
        }
    }

    /// When the count at `unix` falls below `cap` (unix seconds): now when it is below
    /// already, else when enough of the oldest hours have left the window.
    pub fn below_at(&self, cap: u64, unix: u64) -> u64 {
        let mut d = self.clone();
        d.roll(unix);
        let mut total: u64 = d.counts.iter().sum();
        if total < cap {
            return unix;
        }
        // Bucket i (hour - i) leaves the window when hour - i + BUCKETS begins.
        for i in (0..BUCKETS).rev() {
            total -= d.counts[i];
            if total < cap {
                return (d.hour + BUCKETS as u64 - i as u64) * 3600;
            }
        }
        unix
    }

    /// `hour c0,c1,...` for run/ratelimit.
    fn text(&self) -> String {
        let c: Vec<String> = self.counts.iter().map(u64::to_string).collect();
        format!("{} {}", self.hour, c.join(","))
    }

    /// The `text` form back; None when it is damaged.
    fn parse(hour: &str, counts: &str) -> Option<Daily> {
        let mut d = Daily {
            hour: hour.parse().ok()?,
            ..Daily::default()
        };
        let v: Vec<u64> = counts
            .split(',')
            .map(|c| c.parse().ok())
            .collect::<Option<_>>()?;
        if v.len() != BUCKETS {
            return None;
        }
        d.counts.copy_from_slice(&v);
        Some(d)
    }
}

/// Why a transaction may not start yet, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The next transaction's turn under `rate`.
    Rate(Instant),
    /// The relay answered a throttling reply: paused until then.
    Throttled(Instant),
    /// `daily` reached: until this unix time.
    Daily(u64),
}

impl Hold {
    /// The instant it ends (`now` and `unix` are the same moment).
    pub fn until(&self, now: Instant, unix: u64) -> Instant {
        match *self {
            Hold::Rate(t) | Hold::Throttled(t) => t,
            Hold::Daily(u) => now + Duration::from_secs(u.saturating_sub(unix)),
        }
    }
}

/// Longest pause after throttling replies.
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// One relay's limits and their state.
#[derive(Debug, Clone, Default)]
pub struct Limiter {
    pub rate: Option<Rate>,
    pub cap: Option<u64>,
    /// The earliest start of the next transaction under `rate`.
    next: Option<Instant>,
    pub daily: Daily,
    throttled_until: Option<Instant>,
    /// Throttling replies since the last transaction the relay took.
    throttles: u32,
    /// A transaction after a throttle is under way: the others wait for its answer.
    probing: bool,
}

impl Limiter {
    pub fn new(rate: Option<Rate>, cap: Option<u64>) -> Limiter {
        Limiter {
            rate,
            cap: cap.filter(|&c| c > 0),
            ..Limiter::default()
        }
    }

    /// Whether a transaction may start at `now` (None), or what holds it.
    pub fn hold(&self, now: Instant, unix: u64) -> Option<Hold> {
        if let Some(t) = self.throttled_until.filter(|&t| t > now) {
            return Some(Hold::Throttled(t));
        }
        if let Some(cap) = self.cap
            && self.daily.count(unix) >= cap
        {
            return Some(Hold::Daily(self.daily.below_at(cap, unix)));
        }
        match self.next {
            Some(t) if self.rate.is_some() && t > now => Some(Hold::Rate(t)),
            _ => None,
        }
    }

    /// A transaction of `rcpts` recipients starts at `now` (`hold` said it may).
    pub fn take(&mut self, now: Instant, unix: u64, rcpts: u64) {
        if let Some(r) = self.rate {
            self.next = Some(self.next.map_or(now, |n| n.max(now)) + r.spacing());
        }
        if self.cap.is_some() {
            self.daily.add(unix, rcpts);
        }
        if self.throttles > 0 {
            // A probe after a throttle: the next waits for its answer (at most a pause).
            self.probing = true;
            self.throttled_until = Some(now + self.pause(self.throttles));
        }
    }

    /// The transaction `take` counted did not happen (no connection, a throttling reply):
    /// its recipients leave the daily count. The rate's turn stays used.
    pub fn refund(&mut self, unix: u64, rcpts: u64) {
        if self.cap.is_some() {
            self.daily.sub(unix, rcpts);
        }
    }

    /// The pause after `n` throttling replies in a row (n >= 1): 1 s, doubling, at most a
    /// minute, never less than the rate's spacing.
    fn pause(&self, n: u32) -> Duration {
        (Duration::from_secs(1) * (1u32 << n.saturating_sub(1).min(6)))
            .min(MAX_PAUSE)
            .max(self.rate.map(|r| r.spacing()).unwrap_or_default())
    }

    /// A throttling reply at `now`: pause the relay. Like an outage probe: after the pause
    /// one transaction goes, and the next wait for its answer; another throttling reply
    /// doubles the pause, an accepted transaction ends it (`accepted`). Replies to
    /// transactions already under way when the pause began do not double it. Returns the
    /// time left to wait.
    pub fn throttled(&mut self, now: Instant) -> Duration {
        if let Some(t) = self.throttled_until.filter(|&t| t > now && !self.probing) {
            return t - now;
        }
        self.probing = false;
        self.throttles = self.throttles.saturating_add(1);
        let pause = self.pause(self.throttles);
        self.throttled_until = Some(now + pause);
        pause
    }

    /// The relay took a transaction: its throttling is over.
    pub fn accepted(&mut self) {
        if self.probing {
            self.throttled_until = None;
        }
        self.probing = false;
        self.throttles = 0;
    }

    /// The state a reload or restart carries over (rate turn, daily count, throttle).
    pub fn carry_from(&mut self, old: &Limiter) {
        self.next = old.next;
        self.daily = old.daily.clone();
        self.throttled_until = old.throttled_until;
        self.throttles = old.throttles;
        self.probing = old.probing;
    }

    /// Whether there is anything to record or show.
    pub fn limited(&self) -> bool {
        self.rate.is_some() || self.cap.is_some()
    }

    /// Its line in run/ratelimit (`key`: the relay, `now`/`unix` the same moment).
    pub fn record(&self, key: &str, now: Instant, unix: u64) -> RelayRate {
        RelayRate {
            relay: key.to_string(),
            rate: self.rate,
            cap: self.cap,
            throttled_until: self
                .throttled_until
                .filter(|&t| t > now)
                .map(|t| unix + t.saturating_duration_since(now).as_secs_f64().ceil() as u64),
            daily: self.daily.clone(),
        }
    }

    /// The state saved in run/ratelimit, taken back at start (a throttle still running
    /// included).
    pub fn restore(&mut self, saved: &RelayRate, now: Instant, unix: u64) {
        self.daily = saved.daily.clone();
        if let Some(t) = saved.throttled_until.filter(|&t| t > unix) {
            self.throttled_until = Some(now + Duration::from_secs(t - unix));
        }
    }
}

/// One relay's line in run/ratelimit:
/// `relay <key> <rate|off> <daily cap|0> <throttled-until|0> <hour> <c0,...,c24>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelayRate {
    pub relay: String,
    #[serde(serialize_with = "ser_rate")]
    pub rate: Option<Rate>,
    pub cap: Option<u64>,
    /// Unix seconds.
    pub throttled_until: Option<u64>,
    #[serde(skip)]
    pub daily: Daily,
}

fn ser_rate<S: serde::Serializer>(r: &Option<Rate>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => s.serialize_some(&r.to_string()),
        None => s.serialize_none(),
    }
}

impl RelayRate {
    fn line(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.relay,
            self.rate.map_or("off".into(), |r| r.to_string()),
            self.cap.unwrap_or(0),
            self.throttled_until.unwrap_or(0),
            self.daily.text()
        )
    }

    fn parse(v: &str) -> Option<RelayRate> {
        let f: Vec<&str> = v.split(' ').collect();
        let [relay, rate, cap, thr, hour, counts] = f[..] else {
            return None;
        };
        Some(RelayRate {
            relay: relay.to_string(),
            rate: Rate::parse(rate).ok()?,
            cap: cap.parse().ok().filter(|&c| c > 0),
            throttled_until: thr.parse().ok().filter(|&t| t > 0),
            daily: Daily::parse(hour, counts)?,
        })
    }

    /// What holds this relay's mail at `unix`: a throttle, or the daily cap reached (with
    /// the time it ends).
    pub fn waiting(&self, unix: u64) -> Option<(&'static str, u64)> {
        if let Some(t) = self.throttled_until.filter(|&t| t > unix) {
            return Some(("throttled by the relay", t));
        }
        let cap = self.cap?;
        (self.daily.count(unix) >= cap)
            .then(|| ("daily cap reached", self.daily.below_at(cap, unix)))
    }
}

/// run/ratelimit: every limited relay's line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateFile(pub Vec<RelayRate>);

impl RateFile {
    pub fn path(layout: &crate::spool::Layout) -> std::path::PathBuf {
        layout.run_file("ratelimit")
    }

    /// The file's lines; empty when it is missing, and a damaged line is skipped (mail goes
    /// on, counted from zero).
    pub fn load(path: &std::path::Path) -> RateFile {
        RateFile(
            crate::state::read_run_file(path)
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k == "relay")
                .filter_map(|(_, v)| RelayRate::parse(&v))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&RelayRate> {
        self.0.iter().find(|r| r.relay == key)
    }
}

impl crate::state::RunFile for RateFile {
    fn text(&self) -> String {
        self.0
            .iter()
            .map(|r| format!("relay {}\n", r.line()))
            .collect()
    }
}

/// A relay's name in run/ratelimit: its URL with the user name, since limits are per
/// account (`smtps://user@host:465`); no spaces.
pub fn key(url: &str, username: Option<&str>) -> String {
    let k = match (username, url.split_once("://")) {
        (Some(u), Some((scheme, rest))) => format!("{scheme}://{u}@{rest}"),
        _ => url.to_string(),
    };
    k.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    #[test]
    fn rates_parse() {
        let r = Rate::parse("14/s").unwrap().unwrap();
        assert_eq!((r.count, r.per), (14, Duration::from_secs(1)));
        assert_eq!(r.to_string(), "14/s");
        let r = Rate::parse(" 30/min ").unwrap().unwrap();
        assert_eq!(
            r.spacing(),
            Duration::from_millis(2003) + Duration::from_nanos(333_333)
        );
        assert_eq!(r.to_string(), "30/min");
        assert_eq!(Rate::parse("100/h").unwrap().unwrap().to_string(), "100/h");
        assert_eq!(Rate::parse("off").unwrap(), None);
        assert_eq!(Rate::parse("0/s").unwrap(), None);
        for bad in ["", "14", "x/s", "14/day", "-1/s", "1.5/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_spaces_transactions_over_all_connections() {
        let t = Instant::now();
        let mut l = Limiter::new(Rate::parse("10/s").unwrap(), None);
        // Whoever asks (any connection): one now, then one every 110 ms, never a burst.
        let mut starts = Vec::new();
        let mut now = t;
        while starts.len() < 25 {
            match l.hold(now, T0) {
                None => {
                    l.take(now, T0, 1);
                    starts.push(now);
                }
                Some(h) => {
                    assert!(matches!(h, Hold::Rate(_)));
                    now = h.until(now, T0);
                }
            }
        }
        for w in starts.windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_millis(110));
        }
        // At most 10 start in any second, and still when the relay sees each one up to
        // JITTER late (11 starts span 1.1 s).
        for (i, s) in starts.iter().enumerate() {
            let n = starts[i..]
                .iter()
                .filter(|&&x| x < *s + Duration::from_secs(1) + JITTER)
                .count();
            assert!(n <= 10, "{n}");
        }
        // After a quiet spell: one at once, not a burst.
        let later = now + Duration::from_secs(10);
        assert_eq!(l.hold(later, T0), None);
        l.take(later, T0, 1);
        assert!(l.hold(later, T0).is_some());
        // No rate: never held.
        let mut free = Limiter::new(None, None);
        free.take(t, T0, 1);
        assert_eq!(free.hold(t, T0), None);
        assert!(!free.limited());
    }

    #[test]
    fn daily_cap_counts_recipients_for_24_hours() {
        let t = Instant::now();
        let mut l = Limiter::new(None, Some(10));
        l.take(t, T0, 4);
        l.take(t, T0 + 3600, 6);
        let h = l.hold(t, T0 + 3600).expect("10 of 10");
        // The first 4 were sent in T0's hour: counted until 25 hours after that hour began.
        let frees = (T0 / 3600 + 25) * 3600;
        assert_eq!(h, Hold::Daily(frees));
        assert!(frees - T0 >= 24 * 3600, "a full day at least");
        assert_eq!(h.until(t, frees - 5), t + Duration::from_secs(5));
        assert_eq!(l.hold(t, frees), None, "4 left the window: 6 of 10");
        assert_eq!(l.daily.count(frees), 6);
        assert_eq!(l.daily.count(frees + 24 * 3600), 0);
        // A transaction that did not go is taken back.
        l.refund(T0 + 3600, 6);
        assert_eq!(l.daily.count(T0 + 3600), 4);
        // Far in the future: everything has left.
        assert_eq!(l.daily.count(T0 + 1000 * 86400), 0);
        // A clock that went back does not disturb it.
        assert_eq!(l.daily.count(T0 - 86400), 4);
    }

    #[test]
    fn throttling_pauses_probes_and_backs_off_until_accepted() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Limiter::new(None, None);
        assert_eq!(l.throttled(t), ms(1000));
        assert_eq!(l.hold(t, T0), Some(Hold::Throttled(t + ms(1000))));
        // Transactions under way when it began meet the same throttle: the same pause.
        assert_eq!(l.throttled(t + ms(400)), ms(600));
        assert_eq!(l.hold(t + ms(1000), T0), None);
        // After the pause one goes (a probe); the others wait for its answer.
        l.take(t + ms(1000), T0, 1);
        assert!(matches!(l.hold(t + ms(1001), T0), Some(Hold::Throttled(_))));
        // Throttled again: twice the pause.
        assert_eq!(l.throttled(t + ms(1100)), ms(2000));
        assert_eq!(l.hold(t + ms(3100), T0), None);
        l.take(t + ms(3100), T0, 1);
        // Accepted: full speed at once.
        l.accepted();
        assert_eq!(l.hold(t + ms(3101), T0), None);
        assert_eq!(
            l.throttled(t + ms(4000)),
            ms(1000),
            "counted from 1 s again"
        );
        // Doubling stops at a minute.
        let mut now = t + ms(5000);
        for _ in 0..10 {
            l.take(now, T0, 1);
            now += l.throttled(now);
        }
        assert_eq!(l.throttled(now), MAX_PAUSE);
        // Never shorter than the rate's spacing.
        let mut slow = Limiter::new(Rate::parse("1/min").unwrap(), None);
        assert_eq!(slow.throttled(t), Duration::from_millis(60_100));
    }

    #[test]
    fn run_file_round_trip_and_damage() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ratelimit");
        let (t, unix) = (Instant::now(), T0);
        let mut l = Limiter::new(Rate::parse("30/min").unwrap(), Some(10_000));
        l.take(t, unix, 3);
        l.throttled(t);
        let key = key("smtp://smtp.office365.com:587", Some("me @example.com"));
        assert_eq!(key, "smtp://me_@example.com@smtp.office365.com:587");
        let file = RateFile(vec![l.record(&key, t, unix)]);
        let mut note = crate::state::Note::new(p.clone());
        note.set(file.clone());
        note.write_now();
        let back = RateFile::load(&p);
        assert_eq!(back, file);
        let r = back.get(&key).unwrap();
        assert_eq!(r.daily.count(unix), 3);
        // 2.0033 s (rounded up): a throttle pauses at least the rate's spacing.
        assert_eq!(r.waiting(unix), Some(("throttled by the relay", unix + 3)));
        assert_eq!(r.waiting(unix + 3), None);
        // Restored after a restart: the count and the throttle go on.
        let mut again = Limiter::new(Rate::parse("30/min").unwrap(), Some(10_000));
        again.restore(r, t, unix);
        assert_eq!(again.daily.count(unix), 3);
        assert!(matches!(again.hold(t, unix), Some(Hold::Throttled(_))));
        // Torn or damaged: that line is skipped, mail goes on (counted from zero).
        std::fs::write(&p, "relay x 10/s 5 0 1 2,3\nrelay smtp://a:1 off 0 0 7 ").unwrap();
        assert_eq!(RateFile::load(&p), RateFile::default());
        std::fs::write(&p, "\u{0}\u{1}garbage").unwrap();
        assert_eq!(RateFile::load(&p), RateFile::default());
        assert_eq!(
            RateFile::load(&d.path().join("missing")),
            RateFile::default()
        );
    }
}
