//! One SMTP session with the smarthost: TCP connect, implicit TLS or required STARTTLS
//! (rustls, ring, verified certificates, optional SHA-256 pin), EHLO capabilities, AUTH
//! (PLAIN, LOGIN, XOAUTH2), and transactions that are pipelined (RFC 2920) when the relay
//! offers it, with a result per recipient. lettre's `SmtpConnection` cannot pipeline and
//! aborts on the first rejected RCPT, so the dialogue is ours; lettre supplies the AUTH
//! encodings. Nothing here logs, and no error text ever contains a credential.
//!
//! Files: `session` (the connection and the dialogue: MAIL, RCPT, DATA, the body), `tls`
//! (rustls set-up, the handshake, the pin), `auth`, `reply` (reply lines, EHLO capabilities,
//! the errors and how they are classified). Here: what the caller gives and gets back.

mod auth;
mod reply;
mod session;
mod tls;

pub use auth::{Auth, AuthMech};
pub(crate) use reply::{Kind, Reply, SessionError, Stage};
pub(crate) use session::Session;
pub(crate) use tls::{CertIssue, TLS_OFFER, build_tls_config, cert_facts};

use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Implicit,
    StartTls,
    Plain,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            command: Duration::from_secs(300),
            data_end: Duration::from_secs(600),
        }
    }
}

#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ehlo_name: String,
    pub auth: Option<Auth>,
    pub timeouts: Timeouts,
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    pub pin_sha256: Option<String>,
}

#[derive(Clone)]
pub(crate) struct OutRcpt {
    pub addr: String,
    pub notify: Option<String>,
    pub orcpt: Option<String>,
}

#[derive(Clone)]
pub(crate) struct OutEnvelope {
    /// "" = null sender.
    pub sender: String,
    pub rcpts: Vec<OutRcpt>,
    pub envid: Option<String>,
    pub ret: Option<String>,
    pub body_8bit: bool,
}

impl OutEnvelope {
    /// Whether an address is not ASCII: it needs the relay's SMTPUTF8 (RFC 6531).
    pub fn needs_smtputf8(&self) -> bool {
        !self.sender.is_ascii() || self.rcpts.iter().any(|r| !r.addr.is_ascii())
    }
}

/// Per recipient (in order): Ok = RCPT accepted, Err = rejected. `data`: the final reply
/// (None when the body was never sent). A recipient is delivered iff accepted and
/// `data == Some(Ok(_))`.
#[derive(Debug)]
pub(crate) struct TxResult {
    pub rcpt: Vec<Result<Reply, Reply>>,
    pub data: Option<Result<Reply, Reply>>,
}
