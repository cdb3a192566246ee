//! `sendmail -bs`: an SMTP dialogue on stdin/stdout, as Symfony Mailer, Laravel and Alpine's
//! tools drive it. Each accepted DATA is one submission through `submit`.

use crate::error::{Class, Result};
use crate::message::{Framing, Lines};
use crate::spool::{MAX_ENVELOPE_BYTES, MAX_RCPTS};
use crate::submit::{self, Context, Limit, Params, Recipients};
use std::io::{BufRead, Write};

const MAX_CMD: usize = 4096;

fn reply(out: &mut dyn Write, text: &str) -> std::io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.write_all(b"\r\n")?;
    out.flush()
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
}

/// Run the dialogue until QUIT or EOF.
pub fn serve<R: BufRead>(ctx: &Context, input: &mut R, out: &mut dyn Write) -> Result<()> {
    let io = |e: std::io::Error| crate::error::Error::temp(format!("-bs: {e}"));
    let host = ctx.fqdn.clone();
    reply(out, &format!("220 {host} ESMTP relayq")).map_err(io)?;
    let mut tx: Option<Tx> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = std::io::Read::take(&mut *input, MAX_CMD as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
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
        match verb.as_str() {
            "HELO" => {
                tx = None;
                reply(out, &format!("250 {host}")).map_err(io)?;
            }
            "EHLO" => {
                tx = None;
                let size = ctx.cfg.max_message_size;
                reply(out, &format!("250-{host}\r\n250-PIPELINING\r\n250-SIZE {size}\r\n250-8BITMIME\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8")).map_err(io)?;
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
                for (k, v) in params {
                    match k.as_str() {
                        "BODY" => p.body = Some(v.to_ascii_uppercase()),
                        "RET" => p.ret = Some(v.to_ascii_uppercase()),
                        "ENVID" => p.envid = Some(v),
                        "SMTPUTF8" | "AUTH" => {}
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
                let Some(Tx { p, .. }) = tx.take() else {
                    reply(out, "503 5.5.1 need MAIL command").map_err(io)?;
                    continue;
                };
                if p.recipients.is_empty() {
                    reply(out, "554 5.5.1 no valid recipients").map_err(io)?;
                    continue;
                }
                reply(out, "354 End data with <CR><LF>.<CR><LF>").map_err(io)?;
                let mut lines = Lines::new(&mut *input, Framing::Smtp);
                match submit::submit(ctx, &p, &mut lines) {
                    Ok(id) => reply(out, &format!("250 2.0.0 Ok: queued as {id}")).map_err(io)?,
                    Err(e) => {
                        if lines.cut_short() {
                            return Err(crate::error::Error::data(
                                "-bs: the input ended inside DATA, before the final \".\"; the message was not queued",
                            ));
                        }
                        if lines.drain().is_err() {
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
