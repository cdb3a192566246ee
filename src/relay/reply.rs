//! What the relay says and what goes wrong: reply lines (multi-line, bounded), EHLO
//! capabilities, and [`SessionError`] — the stage, the kind, and whether it is temporary,
//! permanent or a configuration problem.

use super::tls::tls_error;
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Connection refused or reset, DNS failure, EOF: temporary.
    Network(String),
    Timeout,
    /// A TLS failure that is not about the certificate: temporary.
    Tls(String),
    /// Certificate or host name verification failed, or the pin did not match: configuration.
    Certificate(String),
    /// STARTTLS required but not offered: configuration (never fall back).
    NoStartTls,
    /// Credentials refused: configuration.
    AuthFailed(Reply),
    /// AUTH not offered, or no common mechanism: configuration.
    AuthUnavailable(String),
    /// A local configuration problem (e.g. the password command failed).
    Config(String),
    /// A negative reply at a stage.
    Reply(Reply),
    Protocol(String),
}

#[derive(Debug, Clone)]
pub(crate) struct SessionError {
    pub stage: Stage,
    pub kind: Kind,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = format!("{:?}", self.stage).to_ascii_uppercase();
        match &self.kind {
            Kind::Network(e) => write!(f, "connection problem at {st}: {e}"),
            Kind::Timeout => write!(f, "timed out at {st}"),
            Kind::Tls(e) => write!(f, "TLS failure: {e}"),
            Kind::Certificate(e) => write!(f, "TLS certificate verification failed: {e}"),
            Kind::NoStartTls => write!(
                f,
                "the relay does not offer STARTTLS, which this smtp:// URL requires (use smtps:// for port 465)"
            ),
            Kind::AuthFailed(r) => write!(f, "authentication failed: {r}"),
            Kind::AuthUnavailable(e) => write!(f, "cannot authenticate: {e}"),
            Kind::Config(e) => write!(f, "{e}"),
            Kind::Reply(r) => write!(f, "{r} (in reply to {st})"),
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
        matches!(&self.kind, Kind::Reply(r) if r.is_perm())
    }
    pub fn is_network(&self) -> bool {
        matches!(self.kind, Kind::Network(_) | Kind::Timeout | Kind::Tls(_))
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
            return tls_error(inner);
        }
        SessionError::new(stage, Kind::Network(e.to_string()))
    }
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
                SessionError::io(Stage::Connect, &e).kind
            }
        })?;
        if n == 0 {
            return Err(Kind::Network("connection closed by the relay".into()));
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
