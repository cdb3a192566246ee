//! Bounces: an RFC 3464 delivery status notification (multipart/report) for the recipients
//! that failed, with the relay's reply for each and the original message's headers. Pure:
//! builds bytes; the daemon queues them like any message.

use crate::message::rfc5322_date;

pub struct Failed<'a> {
    pub rcpt: &'a str,
    pub orcpt: Option<&'a str>,
    /// The relay's reply, or our own reason (e.g. queue lifetime exceeded).
    pub reply: &'a str,
    /// Status code like 5.1.1 (taken from the reply when it has one).
    pub remote: Option<&'a str>,
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
    pub failed: Vec<Failed<'a>>,
    /// The original header section (CRLF lines, no blank line at the end).
    pub original_headers: &'a [u8],
    /// Delay warning rather than failure.
    pub warning: bool,
}

impl Dsn<'_> {
    pub fn build(&self, boundary: &str, message_id: &str) -> Vec<u8> {
        let mut m = String::new();
        let (subject, action, intro) = if self.warning {
            (
                "Delayed Mail (still being retried)",
                "delayed",
                "could not be delivered yet. It is still in the queue and will be retried; you do not need to send it again",
            )
        } else {
            (
                "Undelivered Mail Returned to Sender",
                "failed",
                "could not be delivered to one or more recipients. It has been given up",
            )
        };
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
            "This is the mail system at host {}.\r\n\r\nYour message (queue ID {}) {intro}.\r\n\r\n",
            self.reporting_host, self.queue_id
        ));
        for f in &self.failed {
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
        for f in &self.failed {
            m.push_str("\r\n");
            if let Some(o) = f.orcpt {
                m.push_str(&format!("Original-Recipient: {o}\r\n"));
            }
            m.push_str(&format!(
                "Final-Recipient: rfc822; {}\r\nAction: {action}\r\n",
                f.rcpt
            ));
            let status = if self.warning {
                "4.0.0".to_string()
            } else {
                status_of(f.reply)
            };
            m.push_str(&format!(
                "Status: {}\r\n",
                if !self.warning && status.starts_with('4') {
                    "5.4.7".into()
                } else {
                    status
                }
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
            if self.warning {
                m.push_str(&format!(
                    "Will-Retry-Until: {}\r\n",
                    rfc5322_date(self.now as i64)
                ));
            }
        }
        m.push_str(&format!("\r\n--{boundary}\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n"));
        let mut out = m.into_bytes();
        out.extend_from_slice(self.original_headers);
        if !self.original_headers.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        out
    }
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
            failed: vec![Failed {
                rcpt: "bad@x.org",
                orcpt: None,
                reply: "550 5.1.1 no such user",
                remote: Some("relay.example"),
            }],
            original_headers: b"Subject: hi\r\nTo: bad@x.org",
            warning: false,
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

    #[test]
    fn status_codes() {
        assert_eq!(status_of("550 5.1.1 no"), "5.1.1");
        assert_eq!(status_of("554 rejected"), "5.0.0");
        assert_eq!(status_of("451 later"), "4.0.0");
        assert_eq!(status_of("queue lifetime exceeded"), "5.0.0");
    }
}
