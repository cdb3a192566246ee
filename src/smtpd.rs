//! The SMTP server: `sendmail -bs` (a dialogue on stdin/stdout, as Symfony Mailer, Laravel
//! and Alpine's tools drive it) and each connection of the daemon's loopback listener
//! (`daemon::listen`), which adds the client's address to the trace and the log. Each
//! accepted DATA is one submission through `submit`. Replies are batched for PIPELINING
//! (RFC 2920) and flushed whenever reading the next command could block.

use crate::error::{Class, Error, Result};
use crate::message::{Framing, Header, Lines};
use crate::spool::{MAX_ENVELOPE_BYTES, MAX_RCPTS};
use crate::submit::{self, Context, Limit, Params, Recipients};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;

const MAX_CMD: usize = 4096;

/// A TCP client of the listener: who it is, and which of our addresses it reached.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub addr: SocketAddr,
    pub local: SocketAddr,
}

/// Queue a reply; it goes out at the next flush (before a read that could block).
fn reply(out: &mut dyn Write, text: &str) -> std::io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.write_all(b"\r\n")
}

/// A read that ran out of time (SO_RCVTIMEO gives EAGAIN).
fn timed_out(k: std::io::ErrorKind) -> bool {
    matches!(
        k,
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The input of DATA, counted (the size the log shows), remembering a read error so that
/// the dialogue does not read again after a timeout or a reset.
struct Counted<'a, R> {
    inner: &'a mut BufReader<R>,
    n: &'a Cell<u64>,
    failed: &'a Cell<Option<std::io::ErrorKind>>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.fill_buf()?.len().min(buf.len());
        buf[..k].copy_from_slice(&self.inner.buffer()[..k]);
        self.consume(k);
        Ok(k)
    }
}

impl<R: Read> BufRead for Counted<'_, R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self.inner.fill_buf() {
            Ok(b) => Ok(b),
            Err(e) => {
                self.failed.set(Some(e.kind()));
                Err(e)
            }
        }
    }
    fn consume(&mut self, n: usize) {
        self.n.set(self.n.get() + n as u64);
        self.inner.consume(n);
    }
}

/// A HELO/EHLO name fit for the trace field: a host name or address literal, else "unknown".
fn helo_name(arg: &str) -> &str {
    let ok = !arg.is_empty()
        && arg.len() <= 255
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
    if ok { arg } else { "unknown" }
}

/// The listener's `Received` field (RFC 5321 4.4): the client's HELO name, address and port,
/// this host, and the protocol (RFC 3848, RFC 6531).
fn received(ctx: &Context, c: &Client, helo: &str, proto: &str, now: u64) -> Header {
    let ip = match c.addr.ip().to_canonical() {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("IPv6:{a}"),
    };
    let port = c.addr.port();
    Header {
        name: "Received".into(),
        lines: vec![
            format!("Received: from {helo} ([{ip}] port {port})").into_bytes(),
            format!(
                "\tby {} (relayq listener) with {proto}; {}",
                ctx.fqdn,
                crate::message::rfc5322_date(now as i64)
            )
            .into_bytes(),
        ],
    }
}

/// Command verbs of other protocols: a web page can make a browser POST to a loopback port
/// with SMTP commands in the body (cross-protocol), so the listener hangs up at once, as
/// Postfix's smtpd_forbidden_commands does. A header line ("Host: ...") counts too.
fn foreign(verb: &str) -> bool {
    matches!(
        verb,
        "GET" | "POST" | "HEAD" | "PUT" | "CONNECT" | "OPTIONS"
    ) || (verb.len() > 1 && verb.ends_with(':'))
}

/// Split `FROM:<addr> PARAMS` into (addr, params). None if malformed.
fn path_arg<'a>(arg: &'a str, prefix: &str) -> Option<(&'a str, Vec<(String, String)>)> {
    let rest = arg
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &arg[prefix.len()..])?;
    let rest = rest.trim_start();
    let (addr, params) = if let Some(r) = rest.strip_prefix('<') {
        let end = r.find('>')?;
        (&r[..end], &r[end + 1..])
    } else {
        let end = rest.find(' ').unwrap_or(rest.len());
        (&rest[..end], &rest[end..])
    };
    let params = params
        .split_whitespace()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), v.to_string()),
            None => (p.to_ascii_uppercase(), String::new()),
        })
        .collect();
    Some((addr, params))
}

/// One mail transaction: MAIL's parameters and the recipients accepted so far.
struct Tx {
    p: Params,
    /// The accepted recipients as the envelope will hold them, so that RCPT refuses the one
    /// that would break the envelope reader's limits (`Recipients`).
    rcpts: Recipients,
    /// The longest NOTIFY so far, as `Recipients::dsn_bytes`: the envelope gives every
    /// recipient the transaction's last NOTIFY.
    dsn: usize,
    /// MAIL carried SMTPUTF8 (the trace says UTF8SMTP).
    utf8: bool,
}

/// `sendmail -bs`: run the dialogue on stdin/stdout until QUIT or EOF.
pub fn serve<R: Read>(ctx: &Context, input: &mut BufReader<R>, out: &mut dyn Write) -> Result<()> {
    let r = dialogue(ctx, None, input, out);
    let _ = out.flush();
    r
}

/// One connection of the loopback listener, until QUIT or EOF. Its `Received` field names
/// the client, and each queued message is logged with it. A read that times out (the
/// socket's SO_RCVTIMEO) ends it with `421`. Err: the connection was lost (for the log).
pub fn serve_client<R: Read>(
    ctx: &Context,
    client: &Client,
    input: &mut BufReader<R>,
    out: &mut dyn Write,
) -> Result<()> {
    let r = dialogue(ctx, Some(client), input, out);
    let _ = out.flush();
    r
}

fn dialogue<R: Read>(
    ctx: &Context,
    client: Option<&Client>,
    input: &mut BufReader<R>,
    out: &mut dyn Write,
) -> Result<()> {
    let who = if client.is_some() { "smtp" } else { "-bs" };
    let io = |e: std::io::Error| Error::temp(format!("{who}: {e}"));
    let host = ctx.fqdn.clone();
    let timeout = |out: &mut dyn Write, last: &str| {
        let _ = reply(out, &format!("421 4.4.2 {host} timeout exceeded, closing"));
        let _ = out.flush();
        Error::temp(format!("{who}: timeout after {last}"))
    };
    reply(out, &format!("220 {host} ESMTP relayq")).map_err(io)?;
    let mut tx: Option<Tx> = None;
    let mut helo: Option<(String, bool)> = None;
    let mut last = String::from("CONNECT");
    let mut line = Vec::new();
    loop {
        // RFC 2920: replies may wait while the client's next command is already here, and
        // must go out before a read that could block.
        if input.buffer().is_empty() {
            out.flush().map_err(io)?;
        }
        line.clear();
        let n = match Read::take(&mut *input, MAX_CMD as u64 + 1).read_until(b'\n', &mut line) {
            Ok(n) => n,
            Err(e) if client.is_some() && timed_out(e.kind()) => return Err(timeout(out, &last)),
            Err(e) => return Err(io(e)),
        };
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            if n > MAX_CMD {
                // Skip the rest of the overlong line, holding none of it.
                skip_line(input).map_err(io)?;
                reply(out, "500 5.5.2 line too long").map_err(io)?;
                continue;
            }
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = match text.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
            None => (text.to_ascii_uppercase(), ""),
        };
        if client.is_some() && foreign(&verb) {
            let _ = reply(
                out,
                &format!("421 4.7.0 {host} this is an SMTP server, closing"),
            );
            let _ = out.flush();
            let shown: String = verb.chars().take(16).collect();
            return Err(Error::temp(format!(
                "{who}: {shown:?}: not SMTP (a web browser?), hung up"
            )));
        }
        last.clear();
        last.extend(verb.chars().take(16));
        match verb.as_str() {
            "HELO" | "EHLO" => {
                tx = None;
                helo = Some((helo_name(arg).to_string(), verb == "EHLO"));
                if verb == "HELO" {
                    reply(out, &format!("250 {host}")).map_err(io)?;
                } else {
                    let size = ctx.cfg.max_message_size;
                    reply(out, &format!("250-{host}\r\n250-PIPELINING\r\n250-SIZE {size}\r\n250-8BITMIME\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8")).map_err(io)?;
                }
            }
            "MAIL" => {
                if tx.is_some() {
                    reply(out, "503 5.5.1 nested MAIL command").map_err(io)?;
                    continue;
                }
                let Some((addr, params)) = path_arg(arg, "FROM:") else {
                    reply(out, "501 5.5.4 syntax: MAIL FROM:<address>").map_err(io)?;
                    continue;
                };
                let mut p = Params {
                    sender: Some(addr.to_string()),
                    ..Params::default()
                };
                let mut bad = None;
                let mut utf8 = false;
                for (k, v) in params {
                    match k.as_str() {
                        "BODY" => p.body = Some(v.to_ascii_uppercase()),
                        "RET" => p.ret = Some(v.to_ascii_uppercase()),
                        "ENVID" => p.envid = Some(v),
                        "SMTPUTF8" => utf8 = true,
                        "AUTH" => {}
                        "SIZE" => {
                            if v.parse::<u64>()
                                .map(|s| s > ctx.cfg.max_message_size)
                                .unwrap_or(true)
                            {
                                bad = Some(format!(
                                    "552 5.3.4 message size exceeds the maximum of {} bytes",
                                    ctx.cfg.max_message_size
                                ));
                            }
                        }
                        _ => bad = Some(format!("555 5.5.4 unsupported parameter {k}")),
                    }
                }
                if let Some(b) = bad {
                    reply(out, &b).map_err(io)?;
                    continue;
                }
                if let Err(e) = ctx.sender_for(p.sender.as_deref()) {
                    reply(out, &format!("553 5.1.7 {}", e.0)).map_err(io)?;
                    continue;
                }
                tx = Some(Tx {
                    p,
                    rcpts: Recipients::default(),
                    dsn: 0,
                    utf8,
                });
                reply(out, "250 2.1.0 Ok").map_err(io)?;
            }
            "RCPT" => {
                let Some(t) = tx.as_mut() else {
                    reply(out, "503 5.5.1 need MAIL command").map_err(io)?;
                    continue;
                };
                let Some((addr, params)) = path_arg(arg, "TO:") else {
                    reply(out, "501 5.5.4 syntax: RCPT TO:<address>").map_err(io)?;
                    continue;
                };
                let addrs = match ctx.rewrite(addr) {
                    Ok(a) => a,
                    Err(e) => {
                        reply(out, &format!("553 5.1.3 {}", e.msg)).map_err(io)?;
                        continue;
                    }
                };
                let notify = params
                    .into_iter()
                    .rfind(|(k, _)| k == "NOTIFY")
                    .map(|(_, v)| v.to_ascii_uppercase());
                let dsn = t.dsn.max(Recipients::dsn_bytes(notify.as_deref()));
                // RFC 5321 4.5.3.1.10: past the limit, 452 and the recipients accepted so
                // far still get the message; the client sends the rest in another one.
                let added = match t.rcpts.add(addrs, dsn) {
                    Ok(n) => n,
                    Err(l @ Limit::AddressTooLong) => {
                        reply(out, &format!("553 5.1.3 {l}")).map_err(io)?;
                        continue;
                    }
                    Err(Limit::TooManyRecipients) => {
                        let m = format!("452 4.5.3 Too many recipients (at most {MAX_RCPTS})");
                        reply(out, &m).map_err(io)?;
                        continue;
                    }
                    Err(Limit::EnvelopeTooLarge) => {
                        let m = format!(
                            "452 4.5.3 Too many recipients (at most {MAX_ENVELOPE_BYTES} bytes of envelope)"
                        );
                        reply(out, &m).map_err(io)?;
                        continue;
                    }
                };
                t.dsn = dsn;
                if notify.is_some() {
                    t.p.notify = notify;
                }
                // A recipient that adds no address (a duplicate) need not be resolved again.
                if added > 0 {
                    t.p.recipients.push(format!("<{addr}>"));
                }
                reply(out, "250 2.1.5 Ok").map_err(io)?;
            }
            "DATA" => {
                let Some(Tx { p, rcpts, utf8, .. }) = tx.take() else {
                    reply(out, "503 5.5.1 need MAIL command").map_err(io)?;
                    continue;
                };
                if p.recipients.is_empty() {
                    reply(out, "554 5.5.1 no valid recipients").map_err(io)?;
                    continue;
                }
                reply(out, "354 End data with <CR><LF>.<CR><LF>").map_err(io)?;
                // The client waits for 354 before it sends the message.
                out.flush().map_err(io)?;
                let (helo_arg, esmtp) = helo
                    .as_ref()
                    .map_or(("unknown", false), |(h, e)| (h.as_str(), *e));
                let proto = match (utf8, esmtp) {
                    (true, _) => "UTF8SMTP",
                    (false, true) => "ESMTP",
                    (false, false) => "SMTP",
                };
                let now = crate::state::now();
                let trace = client.map(|c| received(ctx, c, helo_arg, proto, now));
                let (size, failed) = (Cell::new(0), Cell::new(None));
                let mut counted = Counted {
                    inner: &mut *input,
                    n: &size,
                    failed: &failed,
                };
                let mut lines = Lines::new(&mut counted, Framing::Smtp);
                match submit::submit_traced(ctx, &p, &mut lines, trace) {
                    Ok(id) => {
                        if let Some(c) = client {
                            log::info!(
                                "{id}: client={}, helo={helo_arg}, from=<{}>, nrcpt={}, size={}, proto={proto}",
                                c.addr,
                                ctx.sender_for(p.sender.as_deref()).unwrap_or_default(),
                                rcpts.len(),
                                size.get()
                            );
                        }
                        reply(out, &format!("250 2.0.0 Ok: queued as {id}")).map_err(io)?
                    }
                    Err(e) => {
                        if lines.cut_short() {
                            return Err(Error::data(format!(
                                "{who}: the input ended inside DATA, before the final \".\"; the message was not queued"
                            )));
                        }
                        // A read that failed (a timeout, a reset) is not tried again.
                        if failed.get().is_some() || lines.drain().is_err() {
                            if client.is_some() && failed.get().is_some_and(timed_out) {
                                return Err(timeout(out, "DATA"));
                            }
                            return Err(e);
                        }
                        let code = match e.class {
                            Class::Temp => "451 4.3.0",
                            Class::Data if e.msg.contains("maximum size") => "552 5.3.4",
                            _ => "554 5.6.0",
                        };
                        let msg = e.msg.replace(['\r', '\n'], " ");
                        reply(out, &format!("{code} {msg}")).map_err(io)?;
                    }
                }
            }
            "RSET" => {
                tx = None;
                reply(out, "250 2.0.0 Ok").map_err(io)?;
            }
            "NOOP" => reply(out, "250 2.0.0 Ok").map_err(io)?,
            "VRFY" => reply(out, "252 2.5.2 cannot verify, but will try").map_err(io)?,
            "HELP" => reply(
                out,
                "214 2.0.0 commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT",
            )
            .map_err(io)?,
            "QUIT" => {
                reply(out, &format!("221 2.0.0 {host} closing")).map_err(io)?;
                return Ok(());
            }
            "STARTTLS" | "AUTH" if client.is_some() => {
                reply(out, "502 5.5.1 not offered on this loopback listener").map_err(io)?
            }
            "STARTTLS" | "AUTH" => {
                reply(out, "502 5.5.1 not needed on a local pipe").map_err(io)?
            }
            _ => reply(out, "500 5.5.2 command not recognized").map_err(io)?,
        }
    }
}

/// Consume input up to and including the next LF (or to EOF), a buffer at a time.
fn skip_line<R: BufRead>(r: &mut R) -> std::io::Result<()> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let (a, p) = path_arg("FROM:<a@x> BODY=8BITMIME SIZE=100", "FROM:").unwrap();
        assert_eq!(a, "a@x");
        assert_eq!(
            p,
            vec![
                ("BODY".into(), "8BITMIME".into()),
                ("SIZE".into(), "100".into())
            ]
        );
        assert_eq!(path_arg("from: <>", "FROM:").unwrap().0, "");
        assert_eq!(path_arg("TO:b@y", "TO:").unwrap().0, "b@y");
        assert!(path_arg("FRM:<a>", "FROM:").is_none());
        assert!(path_arg("FROM:<a", "FROM:").is_none());
    }
}
