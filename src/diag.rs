//! `relayq test [--to ADDR] [--no-send]`: walks the path to the relay one step at a time —
//! DNS, TCP, TLS, EHLO, AUTH, MAIL FROM, a test message — and says in plain words what went
//! right or wrong, with a hint for the usual mistakes (465 vs 587, wrong password, sender
//! not verified, port 25 blocked). Secrets are never printed.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::relay::{Kind, OutEnvelope, OutRcpt, Session, SessionError, Stage, Target, TlsMode};
use std::net::{TcpStream, ToSocketAddrs};

fn ok(step: &str, what: &str) {
    println!("  ok    {step:<10} {what}");
}

fn fail(step: &str, what: &str, hint: &str) {
    println!("  FAIL  {step:<10} {what}");
    if !hint.is_empty() {
        println!("        hint: {hint}");
    }
}

fn warn(step: &str, what: &str, hint: &str) {
    println!("  warn  {step:<10} {what}");
    println!("        hint: {hint}");
}

/// What a newcomer wants to see of the relay's certificate.
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    /// Unix time.
    pub not_after: i64,
}

/// Subject, issuer and expiry of a DER certificate (None if it does not parse).
pub fn cert_summary(der: &[u8]) -> Option<CertSummary> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(CertSummary {
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        not_after: c.validity().not_after.timestamp(),
    })
}

/// A hint for a failed session, from where it failed and how.
fn hint(t: &Target, e: &SessionError) -> String {
    match (&e.kind, e.stage) {
        (Kind::Timeout | Kind::Network(_) | Kind::Protocol(_), Stage::Greeting) if t.tls != TlsMode::Implicit => format!(
            "the server said nothing: port {} may expect TLS from the first byte (implicit TLS). Try url = \"smtps://{}:{}\"",
            t.port, t.host, t.port
        ),
        (Kind::Tls(_), _) | (Kind::Certificate(_), Stage::Tls) if t.tls == TlsMode::Implicit && t.port != 465 => format!(
            "port {} usually speaks plain SMTP with STARTTLS: try url = \"smtp://{}:{}\"",
            t.port, t.host, t.port
        ),
        (Kind::Tls(_), _) if t.tls == TlsMode::Implicit => "the TLS handshake failed: if this port uses STARTTLS, use smtp:// instead of smtps://".into(),
        (Kind::Certificate(_), _) => "the relay's certificate is not trusted for this name: check the host name, or set ca_file for a private CA".into(),
        (Kind::NoStartTls, _) => "this port offers no STARTTLS: use smtps:// on port 465, or the provider's submission port".into(),
        (Kind::AuthFailed(_), _) => "wrong username or password (API key). Gmail and Microsoft 365 need an app password or auth = \"xoauth2\"".into(),
        (Kind::AuthUnavailable(_), _) => "the relay offers no AUTH here: check the port (587 or 465) and that TLS is on".into(),
        (Kind::Reply(r), Stage::Greeting | Stage::Ehlo) if r.is_temp() => "the relay is refusing connections for now (rate limit or maintenance)".into(),
        _ => String::new(),
    }
}

/// `relayq test`: `to` from --to (default: the admin), `no_send` from --no-send.
pub fn run(cfg: &Config, to: Option<&str>, no_send: bool) -> Result<i32> {
    let to = to.map(str::to_string).or_else(|| cfg.address.admin.clone());
    let mut targets = crate::daemon::resolved_targets(cfg)?;
    // A person is waiting: a server that says nothing (implicit TLS spoken to as plain
    // SMTP) should be named in seconds, not after the daemon's 5-minute command timeout.
    for (_, t) in targets.iter_mut() {
        t.timeouts.command = t.timeouts.command.min(std::time::Duration::from_secs(20));
    }
    let sender = cfg
        .address
        .sender
        .clone()
        .unwrap_or_else(|| format!("root@{}", crate::submit::host_names().1));
    let mut all_ok = true;
    for (name, t) in &targets {
        println!("relay {name}");
        // DNS
        let addrs: Vec<_> = match (t.host.as_str(), t.port).to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                fail(
                    "dns",
                    &format!("cannot resolve {}: {e}", t.host),
                    "check the host name and /etc/resolv.conf; a DNS failure is not an error of the relay",
                );
                all_ok = false;
                continue;
            }
        };
        ok(
            "dns",
            &addrs
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
        // TCP
        match addrs.iter().find_map(|a| {
            TcpStream::connect_timeout(a, t.timeouts.connect)
                .ok()
                .map(|_| *a)
        }) {
            Some(a) => ok("tcp", &format!("connected to {a}")),
            None => {
                let h = if t.port == 25 {
                    "many cloud providers block outgoing port 25: use the provider's port 587 (smtp://) or 465 (smtps://)".to_string()
                } else {
                    format!(
                        "nothing answers on port {}: check the port and any firewall",
                        t.port
                    )
                };
                fail(
                    "tcp",
                    &format!("cannot connect to {}:{}", t.host, t.port),
                    &h,
                );
                all_ok = false;
                continue;
            }
        }
        // TLS, EHLO, AUTH
        let mut session = match Session::connect(t) {
            Ok(s) => s,
            Err(e) => {
                let step = match e.stage {
                    Stage::Tls | Stage::StartTls => "tls",
                    Stage::Auth => "auth",
                    Stage::Ehlo => "ehlo",
                    _ => "greeting",
                };
                fail(step, &e.to_string(), &hint(t, &e));
                all_ok = false;
                continue;
            }
        };
        match session.tls_info() {
            Some(i) => ok(
                "tls",
                &format!(
                    "{} {} ({})",
                    i.version,
                    i.cipher,
                    if t.tls == TlsMode::Implicit {
                        "implicit TLS"
                    } else {
                        "STARTTLS"
                    }
                ),
            ),
            None => ok("tls", "none (plaintext allowed for this loopback relay)"),
        }
        if let Some(c) = session
            .tls_info()
            .and_then(|i| cert_summary(&i.peer_cert_der))
        {
            let days = (c.not_after - crate::daemon::now() as i64).div_euclid(86400);
            let what = format!(
                "subject {}; issuer {}; expires {} ({days} days)",
                c.subject,
                c.issuer,
                crate::message::rfc5322_date(c.not_after)
            );
            if days < 14 {
                warn(
                    "cert",
                    &what,
                    "the relay's certificate expires soon: tell the provider (or renew it, for your own relay)",
                );
            } else {
                ok("cert", &what);
            }
        }
        let caps = session.capabilities();
        ok("ehlo", &caps.raw.join(", "));
        match &t.auth {
            Some(a) => ok("auth", &format!("accepted as {}", a.username)),
            None => ok("auth", "none configured"),
        }
        // MAIL FROM: the sender must be one the relay accepts.
        match session.probe_sender(&sender) {
            Ok(r) if r.is_ok() => ok("sender", &format!("<{sender}> accepted")),
            Ok(r) => {
                fail(
                    "sender",
                    &format!("<{sender}> refused: {r}"),
                    &format!(
                        "the relay does not accept this sender: verify {sender} (or its domain) with your provider, or set [address] sender to a verified address"
                    ),
                );
                all_ok = false;
                continue;
            }
            Err(e) => {
                fail("sender", &e.to_string(), "");
                all_ok = false;
                continue;
            }
        }
        if no_send {
            session.quit();
            continue;
        }
        let Some(rcpt) = to.clone() else {
            println!("  skip  send       no recipient: give --to ADDR or set [address] admin");
            session.quit();
            continue;
        };
        let date = crate::message::rfc5322_date(crate::daemon::now() as i64);
        let domain = cfg
            .address
            .domain
            .clone()
            .unwrap_or_else(|| crate::submit::host_names().1);
        let body = format!(
            "From: relayq test <{sender}>\r\nTo: <{rcpt}>\r\nSubject: relayq test message\r\nDate: {date}\r\nMessage-ID: <{}.test@{domain}>\r\n\r\nThis message was sent by `relayq test` through {name}.\r\n",
            crate::spool::new_id()
        );
        let env = OutEnvelope {
            sender: sender.clone(),
            rcpts: vec![OutRcpt {
                addr: rcpt.clone(),
                notify: None,
                orcpt: None,
            }],
            envid: None,
            ret: None,
            body_8bit: false,
        };
        match session.send(&env, &mut body.as_bytes(), body.len() as u64) {
            Ok(tx) => match (&tx.rcpt[0], &tx.data) {
                (Ok(_), Some(Ok(r))) => ok("send", &format!("test message to <{rcpt}>: {r}")),
                (Err(r), _) | (Ok(_), Some(Err(r))) => {
                    fail(
                        "send",
                        &format!("test message to <{rcpt}> refused: {r}"),
                        "",
                    );
                    all_ok = false;
                }
                _ => {
                    fail("send", "no final reply", "");
                    all_ok = false;
                }
            },
            Err(e) => {
                fail("send", &e.to_string(), &hint(t, &e));
                all_ok = false;
                continue;
            }
        }
        session.quit();
    }
    if all_ok {
        println!("all good");
        Ok(0)
    } else {
        Err(Error::new(
            crate::error::Class::Unavailable,
            "test failed: see the steps above",
        ))
    }
}
