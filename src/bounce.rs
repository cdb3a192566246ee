//! Delivery status notifications (RFC 3464 multipart/report): bounces for the recipients that
//! failed and delay warnings for the ones still queued, with the relay's last reply for each
//! and the original message's headers. `Dsn` builds the bytes (pure); `queue_dsn` composes
//! one for a queued message (who gets it, as which sender, what of the original) and writes
//! it into the spool, where the daemon delivers it like any message. The daemon decides when.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::message::rfc5322_date;
use crate::spool::{self, Draft, Envelope, Queue, QueueId, Rcpt, Spool};
use crate::state::{RcptState, State};
use log::info;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};

/// One recipient reported in a DSN.
pub struct Recipient<'a> {
    pub rcpt: &'a str,
    pub orcpt: Option<&'a str>,
    /// The relay's (last) reply, or our own reason (e.g. queue lifetime exceeded).
    pub reply: &'a str,
    /// The relay's host name, for Remote-MTA.
    pub remote: Option<&'a str>,
}

/// What a DSN reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The recipients have been given up: `Action: failed`, a 5.x.x status.
    Failure,
    /// The recipients are still queued (`queue.warn_after` passed): `Action: delayed`, a
    /// 4.x.x status, retried until `retry_until` (unix seconds, the end of the queue lifetime).
    Delay { retry_until: u64 },
}

/// What of the original message a DSN returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Original<'a> {
    /// The header section (CRLF lines, no blank line at the end), as text/rfc822-headers:
    /// the default, and always for delay warnings (RFC 3461 §4.3).
    Headers(&'a [u8]),
    /// The whole message (RET=FULL on a bounce), as message/rfc822; `eight_bit` when it
    /// has bytes above 127, so the part says 8bit.
    Full { message: &'a [u8], eight_bit: bool },
    /// RET=FULL, but the message was larger than `limit` bytes: its headers only, and the
    /// notification says why.
    TooLarge { headers: &'a [u8], limit: usize },
}

/// The most of an original message a bounce returns for RET=FULL (1 MiB): a larger bounce
/// risks the relay's size limit and the sender's quota; its headers identify it.
pub const FULL_LIMIT: usize = 1 << 20;

/// Whether a recipient's DSN NOTIFY parameter (RFC 3461 §4.1) asks for a bounce when it
/// fails: without one the default applies (it does); NEVER, or a list without FAILURE,
/// means none.
pub fn wants_failure(notify: Option<&str>) -> bool {
    notify_has(notify, "FAILURE")
}

/// Whether RET (RFC 3461 §4.3) asks for the whole message in a bounce; the default is the
/// headers only.
pub fn wants_full(ret: Option<&str>) -> bool {
    ret.is_some_and(|r| r.trim().eq_ignore_ascii_case("FULL"))
}

fn notify_has(notify: Option<&str>, what: &str) -> bool {
    notify.is_none_or(|n| n.split(',').any(|x| x.trim().eq_ignore_ascii_case(what)))
}

/// Whether a recipient's DSN NOTIFY parameter (RFC 3461 §4.1) asks for a delay notification:
/// without one the default applies (relayq sends them); NEVER, or a list without DELAY, means
/// none.
pub fn wants_delay(notify: Option<&str>) -> bool {
    notify_has(notify, "DELAY")
}

/// The enhanced status code in a reply ("550 5.1.1 ..." → "5.1.1"), or one derived from
/// the basic code.
pub fn status_of(reply: &str) -> String {
    let mut it = reply.split_whitespace();
    let code = it.next().unwrap_or("");
    if let Some(e) = it.next()
        && e.split('.').count() == 3
        && e.split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        return e.to_string();
    }
    match code.chars().next() {
        Some('4') => "4.0.0".into(),
        _ => "5.0.0".into(),
    }
}

pub struct Dsn<'a> {
    pub reporting_host: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub queue_id: &'a str,
    pub arrival: u64,
    pub now: u64,
    pub envid: Option<&'a str>,
    pub rcpts: Vec<Recipient<'a>>,
    /// What of the original is returned: see `Original`.
    pub original: Original<'a>,
    /// Other recipients of the message still being tried (a bounce sent as soon as some
    /// recipients failed): the notification says so.
    pub still_trying: usize,
    pub kind: Kind,
}

impl Dsn<'_> {
    /// The per-recipient Status: a failure is permanent (a 4.x.x reply that was given up on
    /// becomes 5.4.7, delivery time expired), a delay is temporary.
    fn status(&self, reply: &str) -> String {
        let s = status_of(reply);
        match (self.kind, s.starts_with('4')) {
            (Kind::Failure, true) => "5.4.7".into(),
            (Kind::Delay { .. }, false) => "4.0.0".into(),
            _ => s,
        }
    }

    pub fn build(&self, boundary: &str, message_id: &str) -> Vec<u8> {
        let mut m = String::new();
        let (subject, action, mut intro, part) = match self.kind {
            Kind::Failure => (
                "Undelivered Mail Returned to Sender",
                "failed",
                format!(
                    "Your message (queue ID {}) could not be delivered to one or more recipients. It has been given up.",
                    self.queue_id
                ),
                "Undelivered Message",
            ),
            Kind::Delay { retry_until } => (
                "Delayed Mail (still being retried)",
                "delayed",
                format!(
                    "####### THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE. #######\r\n\r\nYour message (queue ID {}) could not be delivered yet to the recipients below, after {} in the queue. relayq will keep trying until {}.",
                    self.queue_id,
                    human_duration(self.now.saturating_sub(self.arrival)),
                    rfc5322_date(retry_until as i64)
                ),
                "Delayed Message",
            ),
        };
        if self.kind == Kind::Failure && self.still_trying > 0 {
            intro.push_str(&format!(
                " Delivery to its other {} recipient(s) is still being attempted; you will hear again only if that fails too.",
                self.still_trying
            ));
        }
        if let Original::TooLarge { limit, .. } = self.original {
            intro.push_str(&format!(
                " The message was larger than {} KiB, so only its headers are returned.",
                limit / 1024
            ));
        }
        m.push_str(&format!("From: Mail Delivery System <{}>\r\n", self.from));
        m.push_str(&format!("To: <{}>\r\n", self.to));
        m.push_str(&format!("Subject: {subject}\r\n"));
        m.push_str(&format!("Date: {}\r\n", rfc5322_date(self.now as i64)));
        m.push_str(&format!("Message-ID: {message_id}\r\n"));
        m.push_str("Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
        m.push_str(&format!("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"));
        m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
        m.push_str(&format!("--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"));
        m.push_str(&format!(
            "This is the mail system at host {}.\r\n\r\n{intro}\r\n\r\n",
            self.reporting_host
        ));
        for f in &self.rcpts {
            m.push_str(&format!("<{}>: {}\r\n", f.rcpt, ascii(f.reply)));
        }
        m.push_str(&format!("\r\n--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"));
        m.push_str(&format!("Reporting-MTA: dns; {}\r\n", self.reporting_host));
        if let Some(e) = self.envid {
            m.push_str(&format!("Original-Envelope-Id: {e}\r\n"));
        }
        m.push_str(&format!(
            "X-Relayq-Queue-ID: {}\r\nArrival-Date: {}\r\n",
            self.queue_id,
            rfc5322_date(self.arrival as i64)
        ));
        for f in &self.rcpts {
            m.push_str("\r\n");
            if let Some(o) = f.orcpt {
                m.push_str(&format!("Original-Recipient: {o}\r\n"));
            }
            m.push_str(&format!(
                "Final-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {}\r\n",
                f.rcpt,
                self.status(f.reply)
            ));
            if let Some(r) = f.remote {
                m.push_str(&format!("Remote-MTA: dns; {r}\r\n"));
            }
            if f.reply.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                m.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", ascii(f.reply)));
            } else {
                m.push_str(&format!(
                    "Diagnostic-Code: X-relayq; {}\r\n",
                    ascii(f.reply)
                ));
            }
            if let Kind::Delay { retry_until } = self.kind {
                m.push_str(&format!(
                    "Will-Retry-Until: {}\r\n",
                    rfc5322_date(retry_until as i64)
                ));
            }
        }
        let (ctype, original) = match self.original {
            Original::Headers(h) | Original::TooLarge { headers: h, .. } => (
                format!("{part} Headers\r\nContent-Type: text/rfc822-headers"),
                h,
            ),
            Original::Full { message, eight_bit } => (
                format!(
                    "{part}\r\nContent-Type: message/rfc822{}",
                    if eight_bit {
                        "\r\nContent-Transfer-Encoding: 8bit"
                    } else {
                        ""
                    }
                ),
                message,
            ),
        };
        m.push_str(&format!(
            "\r\n--{boundary}\r\nContent-Description: {ctype}\r\n\r\n"
        ));
        let mut out = m.into_bytes();
        out.extend_from_slice(original);
        if !original.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        out
    }
}

/// "3 hours", "2 days", "40 seconds": for the human part of a delay warning.
fn human_duration(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s >= 2 * 86400 => (s / 86400, "days"),
        s if s >= 2 * 3600 => (s / 3600, "hours"),
        s if s >= 2 * 60 => (s / 60, "minutes"),
        s => (s, if s == 1 { "second" } else { "seconds" }),
    };
    format!("{n} {unit}")
}

fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The envelope sender of bounces, and of local mail when `[address] sender` is set.
pub fn sender(cfg: &Config, fqdn: &str) -> String {
    cfg.address.sender.clone().unwrap_or_else(|| {
        let domain = cfg.address.domain.as_deref().unwrap_or(fqdn);
        format!("MAILER-DAEMON@{domain}")
    })
}

/// A queued message a DSN reports on, as the daemon tracks it.
pub struct Queued<'a> {
    pub id: &'a QueueId,
    pub env: &'a Envelope,
    /// Where the message starts in its queue file (after the envelope).
    pub body_offset: u64,
    pub arrival: u64,
    pub state: &'a State,
}

/// Where and as whom DSNs are queued.
pub struct Reporter<'a> {
    pub spool: &'a Spool,
    pub cfg: &'a Config,
    /// This host's name: the Reporting-MTA, and the Message-ID's domain when `[address]
    /// domain` is unset.
    pub fqdn: &'a str,
    /// The (first) relay's host name, for Remote-MTA.
    pub remote: Option<&'a str>,
}

/// Queue a DSN (a bounce, or a delay warning) about `m` for its recipients `rcpts`, through
/// `spool::Draft` into new/, where the daemon picks it up like any message. Its ID, or None
/// when no DSN is due (null sender, a DSN itself, or bounces disabled).
pub fn queue_dsn(
    rep: &Reporter,
    m: &Queued,
    rcpts: &[usize],
    kind: Kind,
    now: u64,
) -> Result<Option<String>> {
    let (id, env, cfg) = (m.id.as_str(), m.env, rep.cfg);
    if env.sender.is_empty() || env.is_bounce || !cfg.queue.bounces {
        info!(
            "{id}: no {} for {} (null sender, a bounce itself, or queue.bounces = false)",
            match kind {
                Kind::Failure => "bounce",
                Kind::Delay { .. } => "delay notification",
            },
            if env.sender.is_empty() {
                "<>"
            } else {
                &env.sender
            }
        );
        return Ok(None);
    }
    // Mail from local accounts went out as the configured sender; its bounces belong to the admin.
    let to = match (&cfg.address.sender, &cfg.address.admin) {
        (Some(s), Some(a)) if s.eq_ignore_ascii_case(&env.sender) => a.clone(),
        _ => env.sender.clone(),
    };
    let domain = cfg
        .address
        .domain
        .clone()
        .unwrap_or_else(|| rep.fqdn.to_string());
    let from = sender(cfg, rep.fqdn);
    let file = rep.spool.open_file(Queue::Active, id).ok().map(|(f, _)| f);
    let mut headers = Vec::new();
    if let Some(f) = &file {
        let mut r = BufReader::new(f);
        let _ = r.seek(SeekFrom::Start(m.body_offset));
        let mut line = Vec::new();
        while headers.len() < 64 * 1024 {
            line.clear();
            if r.by_ref()
                .take(4096)
                .read_until(b'\n', &mut line)
                .unwrap_or(0)
                == 0
                || line == b"\r\n"
            {
                break;
            }
            headers.extend_from_slice(&line);
        }
    }
    // RET=FULL on a bounce: the whole message, when it is small enough to send back
    // (read from the same open file; one that cannot be read counts as too large).
    let full = (kind == Kind::Failure && wants_full(env.ret.as_deref())).then(|| {
        let mut f = file.as_ref()?;
        let size = f.metadata().ok()?.len().saturating_sub(m.body_offset);
        if size > FULL_LIMIT as u64 {
            return None;
        }
        f.seek(SeekFrom::Start(m.body_offset)).ok()?;
        let mut all = Vec::with_capacity(size as usize);
        f.take(FULL_LIMIT as u64 + 1).read_to_end(&mut all).ok()?;
        (all.len() <= FULL_LIMIT).then_some(all)
    });
    let original = match &full {
        None => Original::Headers(&headers),
        Some(None) => Original::TooLarge {
            headers: &headers,
            limit: FULL_LIMIT,
        },
        Some(Some(all)) => Original::Full {
            message: all,
            eight_bit: !all.is_ascii(),
        },
    };
    let replies: Vec<(String, String, Option<String>)> = rcpts
        .iter()
        .map(|&i| {
            let reply = match &m.state.rcpts[i] {
                RcptState::Failed(_, r) | RcptState::Deferred(_, r) => r.clone(),
                RcptState::Pending => "no delivery attempt has completed yet".into(),
                RcptState::Delivered(..) => String::new(),
            };
            (env.rcpts[i].addr.clone(), reply, env.rcpts[i].orcpt.clone())
        })
        .collect();
    let dsn = Dsn {
        reporting_host: rep.fqdn,
        from: &from,
        to: &to,
        queue_id: id,
        arrival: m.arrival,
        now,
        envid: env.envid.as_deref(),
        rcpts: replies
            .iter()
            .map(|(r, reply, o)| Recipient {
                rcpt: r,
                orcpt: o.as_deref(),
                reply,
                remote: rep.remote,
            })
            .collect(),
        original,
        still_trying: match kind {
            Kind::Failure => m.state.pending().count(),
            Kind::Delay { .. } => 0,
        },
        kind,
    };
    let bid = spool::new_id();
    let message_id = match kind {
        Kind::Failure => format!("<{bid}.bounce@{domain}>"),
        Kind::Delay { .. } => format!("<{bid}.delay@{domain}>"),
    };
    let body = dsn.build(&format!("{bid}/{}", rep.fqdn), &message_id);
    let benv = Envelope {
        sender: from.clone(),
        rcpts: vec![Rcpt {
            addr: to,
            ..Rcpt::default()
        }],
        time: now,
        uid: nix::unistd::geteuid().as_raw(),
        user: "MAILER-DAEMON".into(),
        message_id: Some(message_id),
        is_bounce: true,
        ..Envelope::default()
    };
    let mut d = Draft::create(rep.spool)?;
    benv.write_to(d.writer())?;
    d.writer()
        .write_all(&body)
        .map_err(|e| Error::spool_io("cannot write DSN", &e))?;
    d.commit().map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_shape() {
        let d = Dsn {
            reporting_host: "web1.example.com",
            from: "server@example.com",
            to: "app@example.com",
            queue_id: "ABC",
            arrival: 0,
            now: 60,
            envid: Some("E1"),
            rcpts: vec![Recipient {
                rcpt: "bad@x.org",
                orcpt: None,
                reply: "550 5.1.1 no such user",
                remote: Some("relay.example"),
            }],
            original: Original::Headers(b"Subject: hi\r\nTo: bad@x.org"),
            still_trying: 0,
            kind: Kind::Failure,
        };
        let out = String::from_utf8(d.build("BND", "<m@x>")).unwrap();
        assert!(out.contains("Content-Type: multipart/report; report-type=delivery-status"));
        assert!(
            out.contains(
                "Final-Recipient: rfc822; bad@x.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            )
        );
        assert!(out.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"));
        assert!(out.contains("Original-Envelope-Id: E1"));
        assert!(out.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\nTo: bad@x.org\r\n\r\n--BND--\r\n"));
        assert!(out.split("\r\n").all(|l| !l.contains('\n')));
        let parsed = mail_parser::MessageParser::default()
            .parse(out.as_bytes())
            .unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
    }

    fn delay_dsn(rcpts: Vec<Recipient<'_>>) -> String {
        let d = Dsn {
            reporting_host: "web1.example.com",
            from: "server@example.com",
            to: "app@example.com",
            queue_id: "ABC",
            arrival: 1_700_000_000,
            now: 1_700_000_000 + 4 * 3600,
            envid: Some("E1"),
            rcpts,
            original: Original::Headers(b"Subject: hi\r\nTo: slow@x.org\r\n"),
            still_trying: 0,
            kind: Kind::Delay {
                retry_until: 1_700_000_000 + 5 * 86400,
            },
        };
        String::from_utf8(d.build("BND", "<m@x>")).unwrap()
    }

    #[test]
    fn delay_dsn_fields() {
        let out = delay_dsn(vec![
            Recipient {
                rcpt: "slow@x.org",
                orcpt: Some("rfc822;slow@x.org"),
                reply: "451 4.2.0 greylisted",
                remote: Some("relay.example"),
            },
            Recipient {
                rcpt: "later@x.org",
                orcpt: None,
                reply: "no delivery attempt has completed yet",
                remote: None,
            },
        ]);
        let until = rfc5322_date(1_700_000_000 + 5 * 86400);
        assert!(out.contains("Subject: Delayed Mail (still being retried)\r\n"));
        assert!(out.contains("Content-Type: multipart/report; report-type=delivery-status"));
        assert!(out.contains("THIS IS A WARNING ONLY"));
        assert!(
            out.contains(&format!(
                "after 4 hours in the queue. relayq will keep trying until {until}."
            )),
            "{out}"
        );
        assert!(out.contains(
            "Original-Recipient: rfc822;slow@x.org\r\nFinal-Recipient: rfc822; slow@x.org\r\nAction: delayed\r\nStatus: 4.2.0\r\nRemote-MTA: dns; relay.example\r\nDiagnostic-Code: smtp; 451 4.2.0 greylisted\r\n"
        ));
        // A recipient without a reply yet: a generic temporary status, our own diagnostic.
        assert!(out.contains(
            "Final-Recipient: rfc822; later@x.org\r\nAction: delayed\r\nStatus: 4.0.0\r\nDiagnostic-Code: X-relayq; no delivery attempt has completed yet\r\n"
        ));
        assert_eq!(
            out.matches(&format!("Will-Retry-Until: {until}\r\n"))
                .count(),
            2,
            "one per recipient: {out}"
        );
        assert!(!out.contains("Action: failed") && !out.contains("Status: 5."));
        assert!(out.contains("Original-Envelope-Id: E1\r\n"));
        // The original's headers only.
        assert!(out.ends_with(
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\nTo: slow@x.org\r\n\r\n--BND--\r\n"
        ));
        let parsed = mail_parser::MessageParser::default()
            .parse(out.as_bytes())
            .unwrap();
        assert_eq!(parsed.subject(), Some("Delayed Mail (still being retried)"));
        assert_eq!(parsed.parts.len(), 4, "report + 3 parts");
    }

    #[test]
    fn delay_status_is_temporary_failure_status_permanent() {
        // A 5xx text on a still-queued recipient (e.g. our own reason) is never reported as
        // permanent in a delay DSN, and a 4xx one that was given up is 5.4.7 in a bounce.
        let out = delay_dsn(vec![Recipient {
            rcpt: "a@x.org",
            orcpt: None,
            reply: "554 odd",
            remote: None,
        }]);
        assert!(
            out.contains("Action: delayed\r\nStatus: 4.0.0\r\n"),
            "{out}"
        );
        let out = one_failure("451 4.2.0 greylisted", Original::Headers(b""), 0);
        assert!(out.contains("Action: failed\r\nStatus: 5.4.7\r\n"), "{out}");
        assert!(!out.contains("Will-Retry-Until") && !out.contains("WARNING"));
    }

    #[test]
    fn notify_decides_delay_warnings() {
        // RFC 3461: no NOTIFY = the default (warn); NEVER or a list without DELAY = none.
        assert!(wants_delay(None));
        assert!(wants_delay(Some("DELAY")));
        assert!(wants_delay(Some("FAILURE,DELAY")));
        assert!(wants_delay(Some("success,delay")));
        assert!(!wants_delay(Some("NEVER")));
        assert!(!wants_delay(Some("FAILURE")));
        assert!(!wants_delay(Some("SUCCESS,FAILURE")));
        assert!(!wants_delay(Some("")));
    }

    #[test]
    fn notify_decides_bounces_and_ret_what_they_return() {
        assert!(wants_failure(None));
        assert!(wants_failure(Some("FAILURE")));
        assert!(wants_failure(Some("success,failure")));
        assert!(!wants_failure(Some("NEVER")));
        assert!(!wants_failure(Some("DELAY")));
        assert!(wants_full(Some("FULL")) && wants_full(Some("full")));
        assert!(!wants_full(None) && !wants_full(Some("HDRS")));
    }

    /// A bounce for one recipient, a@x.org, that got `reply`.
    fn one_failure(reply: &str, original: Original<'_>, still_trying: usize) -> String {
        let d = Dsn {
            reporting_host: "h",
            from: "f@x",
            to: "t@x",
            queue_id: "Q",
            arrival: 0,
            now: 0,
            envid: None,
            rcpts: vec![Recipient {
                rcpt: "a@x.org",
                orcpt: None,
                reply,
                remote: None,
            }],
            original,
            still_trying,
            kind: Kind::Failure,
        };
        String::from_utf8(d.build("B", "<m@x>")).unwrap()
    }

    #[test]
    fn full_and_too_large_originals() {
        let dsn = |original| one_failure("550 5.1.1 no", original, 2);
        let msg = b"Subject: s\r\n\r\nline one\r\nlast line\r\n";
        let out = dsn(Original::Full {
            message: msg,
            eight_bit: false,
        });
        // The message keeps its last line end: the CRLF before the boundary is the boundary's.
        assert!(
            out.ends_with("Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n\r\nSubject: s\r\n\r\nline one\r\nlast line\r\n\r\n--B--\r\n"),
            "{out}"
        );
        let out = dsn(Original::TooLarge {
            headers: b"Subject: s",
            limit: FULL_LIMIT,
        });
        assert!(
            out.contains("larger than 1024 KiB, so only its headers are returned"),
            "{out}"
        );
        assert!(
            out.contains("Delivery to its other 2 recipient(s) is still being attempted"),
            "{out}"
        );
        assert!(
            out.ends_with("Content-Type: text/rfc822-headers\r\n\r\nSubject: s\r\n\r\n--B--\r\n")
        );
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(90), "90 seconds");
        assert_eq!(human_duration(4 * 3600), "4 hours");
        assert_eq!(human_duration(3 * 86400 + 5), "3 days");
    }

    #[test]
    fn status_codes() {
        assert_eq!(status_of("550 5.1.1 no"), "5.1.1");
        assert_eq!(status_of("554 rejected"), "5.0.0");
        assert_eq!(status_of("451 later"), "4.0.0");
        assert_eq!(status_of("queue lifetime exceeded"), "5.0.0");
    }
}
