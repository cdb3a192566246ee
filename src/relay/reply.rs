//! What the relay says and what goes wrong: reply lines (multi-line, bounded), EHLO
//! capabilities, and [`SessionError`] — the stage, the kind, whether it is temporary,
//! permanent or a configuration problem, and how it reads to an admin (no library wording:
//! a dropped connection is "the relay closed the connection during MAIL", relayq's own
//! refusals say they are relayq's, a rate limit is named as throttling).

use super::AuthMech;
use super::tls::{CertProblem, tls_error};
use std::fmt;
use std::io::{self, BufRead, Read};

/// A reply from the relay, e.g. code 550, text "550 5.1.1 no such user".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn is_temp(&self) -> bool {
        (400..500).contains(&self.code)
    }
    pub fn is_perm(&self) -> bool {
        self.code >= 500
    }
    pub fn is_ok(&self) -> bool {
        (200..400).contains(&self.code)
    }
    /// A temporary refusal that is the relay limiting how fast or how much relayq sends
    /// (SES "454 Throttling failure", "451 4.7.0 rate limit exceeded", "421 too many
    /// connections"), not a fault: it passes by itself. "452 too many recipients" is a
    /// per-transaction limit, not throttling.
    pub fn is_throttling(&self) -> bool {
        if !self.is_temp() {
            return false;
        }
        let t = self.text.to_ascii_lowercase();
        let words = [
            "rate limit",
            "ratelimit",
            "rate-limit",
            "throttl",
            "too many",
            "sending rate",
            "slow down",
        ];
        words.iter().any(|w| t.contains(w)) && !t.contains("too many recipients")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Tls,
    Auth,
    Mail,
    Rcpt,
    Data,
    Dot,
    Rset,
}

impl Stage {
    /// The stage as an admin reads it in "during ..." and "in reply to ...".
    pub fn label(self) -> &'static str {
        match self {
            Stage::Connect => "CONNECT",
            Stage::Greeting => "GREETING",
            Stage::Ehlo => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Tls => "the TLS handshake",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL",
            Stage::Rcpt => "RCPT",
            Stage::Data => "DATA",
            Stage::Dot => "the message body (DATA)",
            Stage::Rset => "RSET",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Connection refused, DNS failure: temporary. The text is plain ("connection refused").
    Network(String),
    /// The relay closed (or reset) the connection: temporary.
    Closed,
    Timeout,
    /// A TLS failure that is not about the certificate, in plain words: temporary.
    Tls(String),
    /// Certificate or host name verification failed, or the pin did not match: configuration.
    Certificate(CertProblem),
    /// STARTTLS required but not offered: configuration (never fall back).
    NoStartTls,
    /// Credentials refused: configuration.
    AuthFailed(Reply),
    /// AUTH not offered, or no mechanism both sides have: configuration.
    AuthUnavailable(AuthGap),
    /// A local configuration problem (e.g. the password command failed).
    Config(String),
    /// A negative reply at a stage.
    Reply(Reply),
    /// relayq's own refusal, from what the relay announced in EHLO (SIZE, SMTPUTF8): the
    /// relay was not asked. Permanent or temporary by its code, like a reply.
    Local(Reply),
    Protocol(String),
}

/// Why AUTH cannot start: what the relay offers and what relayq wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthGap {
    /// The mechanisms in the relay's EHLO (empty: no AUTH at all).
    pub offered: Vec<String>,
    /// The configured mechanism; None = automatic (PLAIN or LOGIN).
    pub wanted: Option<AuthMech>,
}

/// The mechanisms relayq speaks, as a relay names them.
pub(super) const RELAYQ_MECHS: &str = "PLAIN, LOGIN and XOAUTH2";

impl AuthMech {
    pub fn name(self) -> &'static str {
        match self {
            AuthMech::Plain => "PLAIN",
            AuthMech::Login => "LOGIN",
            AuthMech::Xoauth2 => "XOAUTH2",
        }
    }
}

impl fmt::Display for AuthGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offered = self.offered.join(", ");
        match (self.offered.is_empty(), self.wanted) {
            (true, _) => write!(
                f,
                "the relay offers no AUTH on this connection (not on this port, or not before TLS)"
            ),
            (false, None) => write!(
                f,
                "the relay offers AUTH {offered} only; relayq supports {RELAYQ_MECHS}: no mechanism in common"
            ),
            (false, Some(m)) => write!(
                f,
                "auth = \"{}\" needs AUTH {}, but the relay offers AUTH {offered} only (relayq supports {RELAYQ_MECHS})",
                m.name().to_ascii_lowercase(),
                m.name()
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SessionError {
    pub stage: Stage,
    pub kind: Kind,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.stage.label();
        match &self.kind {
            Kind::Network(e) => write!(f, "connection problem at {st}: {e}"),
            Kind::Closed => write!(f, "the relay closed the connection during {st}"),
            Kind::Timeout => write!(f, "timed out at {st}"),
            Kind::Tls(e) => write!(f, "TLS failure: {e}"),
            Kind::Certificate(e) => write!(f, "TLS certificate rejected: {e}"),
            Kind::NoStartTls => write!(
                f,
                "the relay does not offer STARTTLS, which this smtp:// URL requires (use smtps:// for port 465)"
            ),
            Kind::AuthFailed(r) => write!(f, "authentication failed: {r}"),
            Kind::AuthUnavailable(e) => write!(f, "cannot authenticate: {e}"),
            Kind::Config(e) => write!(f, "{e}"),
            Kind::Reply(r) => write!(f, "{r} (in reply to {st})"),
            Kind::Local(r) => write!(
                f,
                "{r} (relayq's own check against what the relay announced in EHLO; the relay was not asked)"
            ),
            Kind::Protocol(e) => write!(f, "protocol error at {st}: {e}"),
        }
    }
}

impl std::error::Error for SessionError {}

impl SessionError {
    pub(super) fn new(stage: Stage, kind: Kind) -> Self {
        SessionError { stage, kind }
    }
    /// A local configuration failure (before any network I/O).
    pub fn local(msg: &str) -> Self {
        SessionError::new(Stage::Connect, Kind::Config(msg.to_string()))
    }
    pub fn is_config_problem(&self) -> bool {
        matches!(
            self.kind,
            Kind::Certificate(_)
                | Kind::NoStartTls
                | Kind::AuthFailed(_)
                | Kind::AuthUnavailable(_)
                | Kind::Config(_)
        )
    }
    pub fn is_permanent(&self) -> bool {
        matches!(&self.kind, Kind::Reply(r) | Kind::Local(r) if r.is_perm())
    }
    pub fn is_network(&self) -> bool {
        matches!(
            self.kind,
            Kind::Network(_) | Kind::Closed | Kind::Timeout | Kind::Tls(_)
        )
    }
    /// What a relay-wide failure makes the relay, for "relay NAME <words>: ..." and
    /// "the relay <words>: ..." in the log and `relayq status`: "is throttling relayq" (a
    /// rate limit), "refuses every transaction" (4xx at MAIL), or "unreachable".
    pub fn down_words(&self) -> &'static str {
        match &self.kind {
            Kind::Reply(r) if r.is_throttling() => "is throttling relayq (a rate limit)",
            Kind::Reply(r) if self.stage == Stage::Mail && r.is_temp() => {
                "refuses every transaction"
            }
            _ => "unreachable",
        }
    }
    pub fn stage_is_before_data(&self) -> bool {
        matches!(
            self.stage,
            Stage::Mail | Stage::Rcpt | Stage::Data | Stage::Rset
        )
    }
    pub fn is_mail_tempfail(&self) -> bool {
        self.stage == Stage::Mail && matches!(&self.kind, Kind::Reply(r) if r.is_temp())
    }
    pub(super) fn io(stage: Stage, e: &io::Error) -> Self {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return SessionError::new(stage, Kind::Timeout);
        }
        if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            let mut t = tls_error(inner);
            t.stage = stage;
            return t;
        }
        // rustls reports a relay that hangs up without TLS close_notify as UnexpectedEof
        // with a link to its manual: the admin needs only "closed".
        if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        ) && stage != Stage::Connect
        {
            return SessionError::new(stage, Kind::Closed);
        }
        SessionError::new(stage, Kind::Network(plain_io(e)))
    }
}

/// An I/O error in plain words: "Connection refused (os error 111)" → "connection refused".
fn plain_io(e: &io::Error) -> String {
    let m = e.to_string();
    let m = match m.rfind(" (os error ") {
        Some(i) if m.ends_with(')') => &m[..i],
        _ => &m,
    };
    let mut c = m.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Capabilities {
    pub pipelining: bool,
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    pub auth: Vec<String>,
    pub raw: Vec<String>,
}

impl Capabilities {
    pub fn parse(reply: &Reply) -> Capabilities {
        let mut c = Capabilities::default();
        for line in reply.text.lines().skip(1) {
            let kw = line.get(4..).unwrap_or("").trim();
            c.raw.push(kw.to_string());
            let mut it = kw.split_whitespace();
            let word = it.next().unwrap_or("").to_ascii_uppercase();
            match word.as_str() {
                "PIPELINING" => c.pipelining = true,
                "SIZE" => c.size = Some(it.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => c.eightbitmime = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "DSN" => c.dsn = true,
                "STARTTLS" => c.starttls = true,
                "AUTH" => c.auth.extend(it.map(|m| m.to_ascii_uppercase())),
                _ if word.starts_with("AUTH=") => c
                    .auth
                    .extend(word[5..].split_whitespace().map(str::to_string)),
                _ => {}
            }
        }
        c.auth.dedup();
        c
    }
}

const MAX_REPLY: usize = 64 * 1024;

/// Read one (possibly multi-line) reply.
pub(super) fn read_reply(r: &mut dyn BufRead) -> Result<Reply, Kind> {
    let mut text = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.take(4096).read_until(b'\n', &mut line).map_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                Kind::Timeout
            } else {
                SessionError::io(Stage::Greeting, &e).kind
            }
        })?;
        if n == 0 {
            return Err(Kind::Closed);
        }
        let l = String::from_utf8_lossy(&line);
        let l = l.trim_end_matches(['\r', '\n']);
        if l.len() < 3 || !l.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
            return Err(Kind::Protocol(format!(
                "bad reply line {:?}",
                l.chars().take(80).collect::<String>()
            )));
        }
        let code: u16 = l[..3].parse().unwrap_or(0);
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(l);
        if text.len() > MAX_REPLY {
            return Err(Kind::Protocol("reply too long".into()));
        }
        match l.as_bytes().get(3) {
            Some(b'-') => continue,
            _ => return Ok(Reply { code, text }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str) -> Reply {
        Reply {
            code: text[..3].parse().unwrap(),
            text: text.into(),
        }
    }

    #[test]
    fn throttling_is_told_apart() {
        for t in [
            "451 4.7.0 rate limit exceeded, try again later",
            "454 Throttling failure: Maximum sending rate exceeded.",
            "421 4.7.0 Too many connections from your IP",
            "450 4.7.1 Ratelimit reached",
        ] {
            assert!(reply(t).is_throttling(), "{t}");
            let e = SessionError::new(Stage::Mail, Kind::Reply(reply(t)));
            assert!(e.down_words().contains("throttling"), "{t}");
        }
        for t in [
            "451 4.3.0 try later",
            "452 4.5.3 Error: too many recipients",
            "550 5.7.1 rate limit exceeded",
        ] {
            assert!(!reply(t).is_throttling(), "{t}");
        }
        let e = SessionError::new(Stage::Mail, Kind::Reply(reply("451 4.3.0 try later")));
        assert_eq!(e.down_words(), "refuses every transaction");
        let e = SessionError::new(Stage::Connect, Kind::Network("connection refused".into()));
        assert_eq!(e.down_words(), "unreachable");
    }

    #[test]
    fn admin_words_not_library_words() {
        // rustls's wording for a relay that hangs up, with a link to its manual.
        let eof = io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify: https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof",
        );
        let e = SessionError::io(Stage::Dot, &eof).to_string();
        assert_eq!(
            e,
            "the relay closed the connection during the message body (DATA)"
        );
        let e = SessionError::io(
            Stage::Rcpt,
            &io::Error::from(io::ErrorKind::ConnectionReset),
        );
        assert!(e.is_network() && !e.is_permanent());
        assert_eq!(e.to_string(), "the relay closed the connection during RCPT");
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            SessionError::io(Stage::Connect, &refused).to_string(),
            "connection problem at CONNECT: connection refused"
        );
        // relayq's own refusal says so, and is not "in reply to" anything.
        let own = SessionError::new(
            Stage::Mail,
            Kind::Local(reply(
                "552 5.3.4 message size 9 exceeds the relay's fixed maximum",
            )),
        );
        let s = own.to_string();
        assert!(
            s.contains("relayq's own check") && !s.contains("in reply to"),
            "{s}"
        );
        assert!(own.is_permanent());
        // AUTH: what each side has.
        let gap = |offered: &[&str], wanted| AuthGap {
            offered: offered.iter().map(|s| s.to_string()).collect(),
            wanted,
        };
        let s = gap(&["CRAM-MD5"], None).to_string();
        assert!(
            s.contains("offers AUTH CRAM-MD5 only") && s.contains("PLAIN, LOGIN and XOAUTH2"),
            "{s}"
        );
        let s = gap(&["PLAIN", "LOGIN"], Some(AuthMech::Xoauth2)).to_string();
        assert!(s.contains("auth = \"xoauth2\" needs AUTH XOAUTH2"), "{s}");
        assert!(gap(&[], None).to_string().contains("offers no AUTH"));
    }

    #[test]
    fn replies() {
        let mut r = io::Cursor::new(b"250-a.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n".to_vec());
        let rep = read_reply(&mut r).unwrap();
        assert_eq!(rep.code, 250);
        let c = Capabilities::parse(&rep);
        assert!(c.pipelining && c.eightbitmime && !c.starttls);
        assert_eq!(c.size, Some(1000));
        assert_eq!(c.auth, ["PLAIN", "LOGIN"]);
        assert!(read_reply(&mut io::Cursor::new(b"xx\r\n".to_vec())).is_err());
        assert!(read_reply(&mut io::Cursor::new(b"250-a\r\n".to_vec())).is_err());
        assert_eq!(
            read_reply(&mut io::Cursor::new(b"550 5.1.1 no\r\n".to_vec()))
                .unwrap()
                .text,
            "550 5.1.1 no"
        );
    }
}
