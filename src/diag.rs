//! `relayq test [--to ADDR] [--no-send]`: walks the path to the relay one step at a time —
//! DNS, TCP, TLS, EHLO, AUTH, MAIL FROM, a test message — and says in plain words what went
//! right or wrong, with a hint for the usual mistakes (465 vs 587, wrong password, sender
//! not verified, port 25 blocked). Secrets are never printed.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::relay::{
    CertIssue, Kind, OutEnvelope, OutRcpt, Session, SessionError, Stage, TLS_OFFER, Target,
    TlsMode, cert_facts,
};
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

/// A hint for a failed session, from where it failed and how.
fn hint(t: &Target, e: &SessionError) -> String {
    let implicit = t.tls == TlsMode::Implicit;
    match (&e.kind, e.stage) {
        (Kind::Timeout | Kind::Network(_) | Kind::Closed | Kind::Protocol(_), Stage::Greeting) if !implicit => format!(
            "the server said nothing: port {} may expect TLS from the first byte (implicit TLS). Try url = \"smtps://{}:{}\"",
            t.port, t.host, t.port
        ),
        (Kind::Tls(_) | Kind::Closed, Stage::Tls) if implicit && t.port != 465 => format!(
            "port {} usually speaks plain SMTP with STARTTLS: try url = \"smtp://{}:{}\"",
            t.port, t.host, t.port
        ),
        (Kind::Tls(_) | Kind::Closed, Stage::Tls) if implicit => format!(
            "the TLS handshake failed: if this port uses STARTTLS, use smtp:// instead of smtps://; otherwise the relay refused the handshake or accepts nothing relayq offers: {TLS_OFFER}"
        ),
        (Kind::Tls(_) | Kind::Closed, Stage::Tls) => format!(
            "the relay refused the handshake, or accepts nothing relayq offers: {TLS_OFFER}. An old relay may need TLS 1.2 or newer enabled; ask its admin or the provider"
        ),
        (Kind::Certificate(c), _) => match c.issue {
            CertIssue::Name => "the url's host must be a name the certificate is for: use the provider's documented host name (not an alias or an IP address), or ask the relay's admin for a certificate that covers this name".into(),
            CertIssue::Issuer => "no CA this host trusts vouches for the certificate: for a private CA set ca_file to the CA's certificate; for a self-signed relay set ca_file to its certificate or pin_sha256; for a public provider install ca-certificates".into(),
            CertIssue::Expired => "the relay's certificate has expired: tell the provider (or renew it, for your own relay); if the date looks wrong, check this host's clock".into(),
            CertIssue::NotYetValid => "check this host's clock (timedatectl, or the NTP service)".into(),
            CertIssue::Pin => "if the relay's certificate was renewed, put its new SHA-256 in pin_sha256 (or remove the pin to trust the CA)".into(),
            CertIssue::Other => String::new(),
        },
        (Kind::NoStartTls, _) => "this port offers no STARTTLS: use smtps:// on port 465, or the provider's submission port".into(),
        (Kind::AuthFailed(_), _) => "wrong username or password (API key). Gmail and Microsoft 365 need an app password or auth = \"xoauth2\"".into(),
        (Kind::AuthUnavailable(g), _) if g.offered.is_empty() => "the relay offers no AUTH here: check the port (587 or 465) and that TLS is on".into(),
        (Kind::AuthUnavailable(g), _) if g.wanted.is_none() => format!(
            "relayq does not implement {}: enable AUTH PLAIN or LOGIN on the relay (they are safe inside TLS; Dovecot: auth_mechanisms = plain login), or use a port or account setting that offers them",
            g.offered.join(", ")
        ),
        (Kind::AuthUnavailable(_), _) => "set auth to a mechanism the relay offers, or remove the auth line to let relayq choose PLAIN or LOGIN".into(),
        (Kind::Reply(r), _) if r.is_throttling() => "the relay is throttling relayq (a rate limit): queued mail waits and goes when the limit allows; nothing to fix unless it lasts".into(),
        (Kind::Reply(r), Stage::Greeting | Stage::Ehlo) if r.is_temp() => "the relay is refusing connections for now (rate limit or maintenance)".into(),
        _ => String::new(),
    }
}

/// The step a failed connection stopped at, as `relayq test` names it.
fn step_of(e: &SessionError) -> &'static str {
    match (&e.kind, e.stage) {
        (Kind::Certificate(_), _) => "cert",
        (_, Stage::Tls | Stage::StartTls) => "tls",
        (_, Stage::Auth) => "auth",
        (_, Stage::Ehlo) => "ehlo",
        _ => "greeting",
    }
}

/// `relayq test`: `to` from --to (default: the admin), `from` from --from (default: the
/// configured sender; the relays tested are those mail from it goes through), `no_send`
/// from --no-send.
pub fn run(cfg: &Config, to: Option<&str>, from: Option<&str>, no_send: bool) -> Result<i32> {
    let to = to.map(str::to_string).or_else(|| cfg.address.admin.clone());
    if let Some(f) = from
        && !crate::address::is_valid_mailbox(f)
    {
        return Err(Error::usage(format!(
            "--from {f:?} is not an address like user@example.com"
        )));
    }
    let sender = from.map(str::to_string).unwrap_or_else(|| {
        cfg.address
            .sender
            .clone()
            .unwrap_or_else(|| format!("root@{}", crate::submit::host_names().1))
    });
    let mut targets = crate::daemon::resolved_targets(cfg, &sender)?;
    if !cfg.sender_relay.is_empty() {
        println!(
            "mail from <{sender}> goes through {}",
            targets
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", then ")
        );
    }
    // A person is waiting: a server that says nothing (implicit TLS spoken to as plain
    // SMTP) should be named in seconds, not after the daemon's 5-minute command timeout.
    for (_, t) in targets.iter_mut() {
        t.timeouts.command = t.timeouts.command.min(std::time::Duration::from_secs(20));
    }
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
        // TLS and EHLO; AUTH apart, so that the steps before it show when it fails.
        let mut unauthenticated = t.clone();
        unauthenticated.auth = None;
        let mut session = match Session::connect(&unauthenticated) {
            Ok(s) => s,
            Err(e) => {
                fail(step_of(&e), &e.to_string(), &hint(t, &e));
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
            .and_then(|i| cert_facts(&i.peer_cert_der))
        {
            let days = (c.not_after - crate::daemon::now() as i64).div_euclid(86400);
            let what = format!(
                "for {}; subject {}; issuer {}; expires {} ({days} days)",
                c.names.join(", "),
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
            Some(a) => match session.auth(a) {
                Ok(()) => ok("auth", &format!("accepted as {}", a.username)),
                Err(e) => {
                    fail("auth", &e.to_string(), &hint(t, &e));
                    all_ok = false;
                    continue;
                }
            },
            None => ok("auth", "none configured"),
        }
        // MAIL FROM: the sender must be one the relay accepts.
        match session.probe_sender(&sender) {
            Ok(r) if r.is_ok() => ok("sender", &format!("<{sender}> accepted")),
            Ok(r) => {
                let h = if r.is_throttling() {
                    "the relay is throttling relayq (a rate limit): queued mail waits and goes when the limit allows; try again later".to_string()
                } else if r.is_temp() {
                    "the relay refuses for now (a temporary 4xx reply): queued mail waits; try again later".to_string()
                } else {
                    format!(
                        "the relay does not accept this sender: verify {sender} (or its domain) with your provider, or set [address] sender to a verified address"
                    )
                };
                fail("sender", &format!("<{sender}> refused: {r}"), &h);
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
