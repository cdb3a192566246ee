//! One connection to the relay and its dialogue: connect (implicit TLS or required
//! STARTTLS), EHLO, then transactions — pipelined in bounded groups when offered, with a
//! result per recipient — the dot-stuffed body, RSET, the sender probe and QUIT.

use super::reply::{Capabilities, read_reply};
use super::tls::{Stream, TlsInfo, tls_wrap};
use super::{Kind, OutEnvelope, Reply, SessionError, Stage, Target, Timeouts, TlsMode, TxResult};
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The reply given for an address the relay cannot take because it lacks SMTPUTF8.
fn no_smtputf8(what: &str, addr: &str) -> Reply {
    Reply {
        code: 553,
        text: format!(
            "553 5.6.7 the relay does not offer SMTPUTF8, which the non-ASCII {what} <{addr}> needs (RFC 6531)"
        ),
    }
}

/// Most commands sent before reading their replies.
const PIPE_GROUP: usize = 100;

pub(crate) struct Session {
    pub(super) io: BufReader<Stream>,
    wbuf: Vec<u8>,
    pub(super) caps: Capabilities,
    peer: String,
    timeouts: Timeouts,
    broken: bool,
    pub(super) tls: Option<TlsInfo>,
    /// A body was written and its final reply not read yet (pipelined across messages).
    dot_owed: bool,
    /// The RCPT results of the transaction whose body is being written.
    opened: Vec<Result<Reply, Reply>>,
}

fn xtext(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            o.push(b as char);
        } else {
            o.push_str(&format!("+{b:02X}"));
        }
    }
    o
}

impl Session {
    pub fn connect(t: &Target) -> Result<Session, SessionError> {
        let addrs: Vec<_> = (t.host.as_str(), t.port)
            .to_socket_addrs()
            .map_err(|e| {
                SessionError::new(
                    Stage::Connect,
                    Kind::Network(format!("cannot resolve {}: {e}", t.host)),
                )
            })?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, t.timeouts.connect) {
                Ok(s) => {
                    tcp = Some((s, *a));
                    break;
                }
                Err(e) => last = Some(SessionError::io(Stage::Connect, &e)),
            }
        }
        let Some((tcp, addr)) = tcp else {
            return Err(last.unwrap_or_else(|| {
                SessionError::new(
                    Stage::Connect,
                    Kind::Network(format!("{} has no address", t.host)),
                )
            }));
        };
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(t.timeouts.command));
        let _ = tcp.set_write_timeout(Some(t.timeouts.command));
        let peer = format!("{}[{}]:{}", t.host, addr.ip(), addr.port());
        let stream = if t.tls == TlsMode::Implicit {
            Stream::Tls(Box::new(tls_wrap(t, tcp)?))
        } else {
            Stream::Plain(tcp)
        };
        let mut s = Session {
            io: BufReader::with_capacity(16 * 1024, stream),
            wbuf: Vec::with_capacity(8192),
            caps: Capabilities::default(),
            peer,
            timeouts: t.timeouts,
            broken: false,
            tls: None,
            dot_owed: false,
            opened: Vec::new(),
        };
        if t.tls == TlsMode::Implicit {
            s.note_tls();
            s.check_pin(t)?;
        }
        let g = s.read_reply(Stage::Greeting)?;
        if g.code != 220 {
            return Err(SessionError::new(Stage::Greeting, Kind::Reply(g)));
        }
        s.ehlo(t)?;
        if t.tls == TlsMode::StartTls {
            if !s.caps.starttls {
                return Err(SessionError::new(Stage::StartTls, Kind::NoStartTls));
            }
            let r = s.command("STARTTLS", Stage::StartTls)?;
            if r.code != 220 {
                return Err(SessionError::new(Stage::StartTls, Kind::Reply(r)));
            }
            if !s.io.buffer().is_empty() {
                // Bytes after 220 before the handshake: a STARTTLS injection attempt.
                return Err(SessionError::new(
                    Stage::StartTls,
                    Kind::Protocol("data received before the TLS handshake".into()),
                ));
            }
            let tcp = match s.io.into_inner() {
                Stream::Plain(tcp) => tcp,
                Stream::Tls(_) => {
                    return Err(SessionError::new(
                        Stage::StartTls,
                        Kind::Protocol("already TLS".into()),
                    ));
                }
            };
            s.io = BufReader::with_capacity(16 * 1024, Stream::Tls(Box::new(tls_wrap(t, tcp)?)));
            s.note_tls();
            s.check_pin(t)?;
            s.ehlo(t)?;
        }
        if let Some(a) = &t.auth {
            s.auth(a)?;
        }
        Ok(s)
    }

    fn ehlo(&mut self, t: &Target) -> Result<(), SessionError> {
        let r = self.command(&format!("EHLO {}", t.ehlo_name), Stage::Ehlo)?;
        if r.code != 250 {
            return Err(SessionError::new(Stage::Ehlo, Kind::Reply(r)));
        }
        self.caps = Capabilities::parse(&r);
        Ok(())
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    pub fn tls_info(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    fn fail<T>(&mut self, e: SessionError) -> Result<T, SessionError> {
        if e.is_network() || matches!(e.kind, Kind::Protocol(_)) {
            self.broken = true;
        }
        Err(e)
    }

    fn flush_out(&mut self, stage: Stage) -> Result<(), SessionError> {
        let buf = std::mem::take(&mut self.wbuf);
        let r = self
            .io
            .get_mut()
            .write_all(&buf)
            .and_then(|_| self.io.get_mut().flush());
        self.wbuf = buf;
        self.wbuf.clear();
        match r {
            Ok(()) => Ok(()),
            Err(e) => self.fail(SessionError::io(stage, &e)),
        }
    }

    fn queue_line(&mut self, line: &str) {
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    pub(super) fn command(&mut self, line: &str, stage: Stage) -> Result<Reply, SessionError> {
        self.queue_line(line);
        self.flush_out(stage)?;
        self.read_reply(stage)
    }

    fn read_reply(&mut self, stage: Stage) -> Result<Reply, SessionError> {
        match read_reply(&mut self.io) {
            Ok(r) => Ok(r),
            Err(e) => self.fail(SessionError { stage, kind: e }),
        }
    }

    /// One transaction; see [`TxResult`].
    pub fn send(
        &mut self,
        env: &OutEnvelope,
        body: &mut dyn Read,
        size: u64,
    ) -> Result<TxResult, SessionError> {
        if self.broken || self.dot_owed {
            return Err(SessionError::new(
                Stage::Mail,
                Kind::Network("connection already broken".into()),
            ));
        }
        if let Some(max) = self.caps.size.filter(|&m| m > 0)
            && size > max
        {
            return Err(SessionError::new(
                Stage::Mail,
                Kind::Local(Reply {
                    code: 552,
                    text: format!(
                        "552 5.3.4 message size {size} exceeds the relay's fixed maximum message size of {max} bytes"
                    ),
                }),
            ));
        }
        let smtputf8 = env.needs_smtputf8();
        if smtputf8 && !self.caps.smtputf8 {
            // As Postfix does: without SMTPUTF8 a non-ASCII address cannot be sent. The
            // sender fails the message; each such recipient fails alone, the rest go.
            if !env.sender.is_ascii() {
                return Err(SessionError::new(
                    Stage::Mail,
                    Kind::Local(no_smtputf8("sender", &env.sender)),
                ));
            }
            let mut ascii = env.clone();
            ascii.rcpts.retain(|r| r.addr.is_ascii());
            let inner = if ascii.rcpts.is_empty() {
                TxResult {
                    rcpt: Vec::new(),
                    data: None,
                }
            } else {
                self.send(&ascii, body, size)?
            };
            let mut sent = inner.rcpt.into_iter();
            let mut out = TxResult {
                rcpt: Vec::with_capacity(env.rcpts.len()),
                data: inner.data,
            };
            for r in &env.rcpts {
                let res = if r.addr.is_ascii() { sent.next() } else { None };
                out.rcpt
                    .push(res.unwrap_or_else(|| Err(no_smtputf8("recipient", &r.addr))));
            }
            return Ok(out);
        }
        let mail = self.mail_line(env, size);
        let rcpt_lines: Vec<String> = env.rcpts.iter().map(|r| self.rcpt_line(r)).collect();
        let pipe = self.caps.pipelining;
        let mut results = Vec::with_capacity(env.rcpts.len());
        if pipe {
            // Commands go out in groups of at most PIPE_GROUP, and each group's replies are
            // read before the next is sent: a relay that stops reading while its replies
            // pile up (thousands of RCPTs) can then never deadlock with us (RFC 2920 §3.1).
            self.queue_line(&mail);
            let mut unread = 1usize; // replies owed, in order: MAIL, RCPT..., DATA
            let mut m: Option<Reply> = None;
            for (i, l) in rcpt_lines.iter().enumerate() {
                self.queue_line(l);
                unread += 1;
                if unread >= PIPE_GROUP && i + 1 < rcpt_lines.len() {
                    self.flush_out(Stage::Rcpt)?;
                    self.read_group(&mut m, &mut results, unread)?;
                    unread = 0;
                }
            }
            self.queue_line("DATA");
            self.flush_out(Stage::Mail)?;
            self.read_group(&mut m, &mut results, unread)?;
            let m = m.ok_or_else(|| {
                SessionError::new(Stage::Mail, Kind::Protocol("no MAIL reply".into()))
            })?;
            let d = self.read_reply(Stage::Data)?;
            if let Err(done) = self.after_group(m, results, d)? {
                return Ok(done);
            }
            self.write_body(body, true)?;
            let results = std::mem::take(&mut self.opened);
            return self.finish_dot(results);
        }
        let m = self.command(&mail, Stage::Mail)?;
        if !m.is_ok() {
            self.rset_quiet();
            return Err(SessionError::new(Stage::Mail, Kind::Reply(m)));
        }
        for l in &rcpt_lines {
            let r = self.command(l, Stage::Rcpt)?;
            results.push(if r.is_ok() { Ok(r) } else { Err(r) });
        }
        if !results.iter().any(|r| r.is_ok()) {
            self.rset_quiet();
            return Ok(TxResult {
                rcpt: results,
                data: None,
            });
        }
        let data_reply = self.command("DATA", Stage::Data)?;
        if data_reply.code != 354 {
            self.rset_quiet();
            return Ok(TxResult {
                rcpt: results,
                data: Some(Err(data_reply)),
            });
        }
        self.write_body(body, true)?;
        self.finish_dot(results)
    }

    /// MAIL FROM with the parameters the relay takes.
    fn mail_line(&self, env: &OutEnvelope, size: u64) -> String {
        let mut mail = format!("MAIL FROM:<{}>", env.sender);
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if env.body_8bit && self.caps.eightbitmime {
            mail.push_str(" BODY=8BITMIME");
        }
        if env.needs_smtputf8() {
            mail.push_str(" SMTPUTF8");
        }
        if self.caps.dsn {
            if let Some(r) = &env.ret {
                mail.push_str(&format!(" RET={r}"));
            }
            if let Some(e) = &env.envid {
                mail.push_str(&format!(" ENVID={}", xtext(e)));
            }
        }
        mail
    }

    fn rcpt_line(&self, r: &super::OutRcpt) -> String {
        let mut l = format!("RCPT TO:<{}>", r.addr);
        if self.caps.dsn {
            if let Some(n) = &r.notify {
                l.push_str(&format!(" NOTIFY={n}"));
            }
            if let Some(o) = &r.orcpt {
                l.push_str(&format!(" ORCPT={}", xtext(o)));
            }
        }
        l
    }

    /// After a pipelined group's replies (MAIL `m`, the RCPTs, DATA `d`): Ok(Ok(())) when
    /// the body is to follow (the RCPT results kept in `self.opened`), Ok(Err(result)) when
    /// the transaction ended without a body, Err when MAIL was refused.
    fn after_group(
        &mut self,
        m: Reply,
        results: Vec<Result<Reply, Reply>>,
        d: Reply,
    ) -> Result<Result<(), TxResult>, SessionError> {
        let any = results.iter().any(|r| r.is_ok());
        if d.code == 354 && (!m.is_ok() || !any) {
            // The relay opened DATA although nothing can be delivered: end it empty.
            self.queue_line(".");
            self.flush_out(Stage::Dot)?;
            let _ = self.read_reply(Stage::Dot)?;
        }
        if !m.is_ok() {
            self.rset_quiet();
            return Err(SessionError::new(Stage::Mail, Kind::Reply(m)));
        }
        if !any {
            self.rset_quiet();
            return Ok(Err(TxResult {
                rcpt: results,
                data: None,
            }));
        }
        if d.code != 354 {
            self.rset_quiet();
            return Ok(Err(TxResult {
                rcpt: results,
                data: Some(Err(d)),
            }));
        }
        self.opened = results;
        Ok(Ok(()))
    }

    /// Whether `env` can go as one pipelined group whose final dot travels with the next
    /// transaction's commands (RFC 2920): the relay pipelines, no address needs an extension
    /// it lacks, the size fits, and MAIL, the RCPTs and DATA fit in one group.
    pub fn can_chain(&self, env: &OutEnvelope, size: u64) -> bool {
        self.caps.pipelining
            && !self.broken
            && (self.caps.smtputf8 || !env.needs_smtputf8())
            && self.caps.size.is_none_or(|m| m == 0 || size <= m)
            && env.rcpts.len() + 2 <= PIPE_GROUP
    }

    /// Queue MAIL, the RCPTs and DATA for `env` (see [`Session::can_chain`]); they go out
    /// with [`Session::flush`], behind the previous message's final dot if one is owed.
    pub fn begin(&mut self, env: &OutEnvelope, size: u64) {
        let mail = self.mail_line(env, size);
        self.queue_line(&mail);
        for r in &env.rcpts {
            let l = self.rcpt_line(r);
            self.queue_line(&l);
        }
        self.queue_line("DATA");
    }

    /// Send what is queued (a previous body's end, the next transaction's commands).
    pub fn flush(&mut self) -> Result<(), SessionError> {
        if self.broken {
            return Err(SessionError::new(
                Stage::Mail,
                Kind::Network("connection already broken".into()),
            ));
        }
        self.flush_out(Stage::Mail)
    }

    /// Read the replies to [`Session::begin`]'s group (after any owed dot's, see
    /// [`Session::finish_dot`]). Ok(None): DATA was accepted and the body is to follow
    /// ([`Session::body`]); Ok(Some(result)): the transaction ended without a body; Err:
    /// MAIL refused, or the connection failed.
    pub fn read_begun(&mut self, nrcpts: usize) -> Result<Option<TxResult>, SessionError> {
        let m = self.read_reply(Stage::Mail)?;
        let mut results = Vec::with_capacity(nrcpts);
        for _ in 0..nrcpts {
            let r = self.read_reply(Stage::Rcpt)?;
            results.push(if r.is_ok() { Ok(r) } else { Err(r) });
        }
        let d = self.read_reply(Stage::Data)?;
        Ok(self.after_group(m, results, d)?.err())
    }

    /// Write the body of the transaction [`Session::read_begun`] opened, keeping its final
    /// dot queued to go out with the next commands; its reply is owed until
    /// [`Session::finish_dot`].
    pub fn body(&mut self, body: &mut dyn Read) -> Result<(), SessionError> {
        self.write_body(body, false)?;
        self.dot_owed = true;
        Ok(())
    }

    /// Send anything still queued and read the final reply of the body written last: the
    /// transaction's result, with the RCPT results `rcpt`.
    pub fn finish_dot(
        &mut self,
        rcpt: Vec<Result<Reply, Reply>>,
    ) -> Result<TxResult, SessionError> {
        self.dot_owed = false;
        if !self.wbuf.is_empty() {
            self.flush_out(Stage::Dot)?;
        }
        let _ = self
            .io
            .get_ref()
            .tcp()
            .set_read_timeout(Some(self.timeouts.data_end));
        let r = self.read_reply(Stage::Dot);
        let _ = self
            .io
            .get_ref()
            .tcp()
            .set_read_timeout(Some(self.timeouts.command));
        let r = r?;
        Ok(TxResult {
            rcpt,
            data: Some(if r.is_ok() { Ok(r) } else { Err(r) }),
        })
    }

    /// The RCPT results of the transaction whose body was written last.
    pub fn take_opened(&mut self) -> Vec<Result<Reply, Reply>> {
        std::mem::take(&mut self.opened)
    }

    /// Read `n` pipelined replies: MAIL's first (if not read yet), then RCPTs.
    fn read_group(
        &mut self,
        mail: &mut Option<Reply>,
        results: &mut Vec<Result<Reply, Reply>>,
        mut n: usize,
    ) -> Result<(), SessionError> {
        if mail.is_none() && n > 0 {
            *mail = Some(self.read_reply(Stage::Mail)?);
            n -= 1;
        }
        for _ in 0..n {
            let r = self.read_reply(Stage::Rcpt)?;
            results.push(if r.is_ok() { Ok(r) } else { Err(r) });
        }
        Ok(())
    }

    /// Stream the message re-framed for DATA (`message::Reframe`: CRLF line ends only, lines
    /// of at most 998 octets, dot-stuffing), ending with CRLF . CRLF, whatever the queue file
    /// holds.
    /// `flush`: send the end at once; otherwise it stays queued for the next commands.
    fn write_body(&mut self, body: &mut dyn Read, flush: bool) -> Result<(), SessionError> {
        let mut inb = vec![0u8; 64 * 1024];
        let mut out = Vec::with_capacity(66 * 1024);
        let mut frame = crate::message::Reframe::default();
        loop {
            let n = match body.read(&mut inb) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return self.fail(SessionError::new(
                        Stage::Dot,
                        Kind::Network(format!("cannot read the queued message: {e}")),
                    ));
                }
            };
            out.clear();
            frame.push(&inb[..n], &mut out);
            if let Err(e) = self.io.get_mut().write_all(&out) {
                return self.fail(SessionError::io(Stage::Dot, &e));
            }
        }
        out.clear();
        frame.finish(&mut out);
        if !flush {
            self.wbuf.extend_from_slice(&out);
            return Ok(());
        }
        if let Err(e) = self
            .io
            .get_mut()
            .write_all(&out)
            .and_then(|_| self.io.get_mut().flush())
        {
            return self.fail(SessionError::io(Stage::Dot, &e));
        }
        Ok(())
    }

    fn rset_quiet(&mut self) {
        if self.rset().is_err() {
            self.broken = true;
        }
    }

    /// Ask whether the relay takes `sender` (MAIL FROM), then RSET: catches "sender not
    /// verified" without sending anything.
    pub fn probe_sender(&mut self, sender: &str) -> Result<Reply, SessionError> {
        let r = self.command(&format!("MAIL FROM:<{sender}>"), Stage::Mail)?;
        self.rset_quiet();
        Ok(r)
    }

    pub fn rset(&mut self) -> Result<(), SessionError> {
        let r = self.command("RSET", Stage::Rset)?;
        if r.code != 250 {
            self.broken = true;
            return Err(SessionError::new(Stage::Rset, Kind::Reply(r)));
        }
        Ok(())
    }

    /// Best-effort QUIT, bounded by a short timeout.
    pub fn quit(mut self) {
        if self.broken {
            return;
        }
        let _ = self
            .io
            .get_ref()
            .tcp()
            .set_read_timeout(Some(Duration::from_secs(5)));
        let _ = self
            .io
            .get_ref()
            .tcp()
            .set_write_timeout(Some(Duration::from_secs(5)));
        let _ = self.command("QUIT", Stage::Rset);
        if let Stream::Tls(t) = self.io.get_mut() {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{OutRcpt, build_tls_config};
    use std::io::BufRead;
    use std::net::TcpListener;

    #[test]
    fn xtext_encodes() {
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
    }

    /// A scripted server: reads what the client sends, answers from `script`.
    fn server(
        script: Vec<(&'static str, &'static str)>,
    ) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut seen = Vec::new();
            w.write_all(b"220 fake ESMTP\r\n").unwrap();
            for (expect, answer) in script {
                // `expect` is a prefix; "BODY" reads until the lone dot.
                let mut got = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return seen;
                    }
                    got.push_str(&line);
                    if expect != "BODY" || line == ".\r\n" {
                        break;
                    }
                }
                assert!(
                    got.starts_with(expect) || expect == "BODY",
                    "expected {expect:?}, got {got:?}"
                );
                seen.push(got);
                if answer == "CLOSE" {
                    return seen;
                }
                if !answer.is_empty() {
                    w.write_all(answer.as_bytes()).unwrap();
                }
            }
            seen
        });
        (port, h)
    }

    fn target(port: u16) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::Plain,
            ehlo_name: "client.test".into(),
            auth: None,
            timeouts: Timeouts {
                connect: Duration::from_secs(5),
                command: Duration::from_secs(5),
                data_end: Duration::from_secs(5),
            },
            tls_config: None,
            pin_sha256: None,
        }
    }

    fn env(rcpts: &[&str]) -> OutEnvelope {
        OutEnvelope {
            sender: "s@x.org".into(),
            rcpts: rcpts
                .iter()
                .map(|a| OutRcpt {
                    addr: a.to_string(),
                    notify: None,
                    orcpt: None,
                })
                .collect(),
            envid: None,
            ret: None,
            body_8bit: true,
        }
    }

    #[test]
    fn pipelined_with_one_rejected_recipient() {
        let (port, h) = server(vec![
            (
                "EHLO",
                "250-fake\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000\r\n",
            ),
            // The pipelined group arrives as MAIL, RCPT, RCPT, DATA before any reply.
            ("MAIL FROM:<s@x.org> SIZE=12 BODY=8BITMIME", ""),
            ("RCPT TO:<a@x.org>", ""),
            ("RCPT TO:<bad@x.org>", ""),
            (
                "DATA",
                "250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n354 go\r\n",
            ),
            ("BODY", "250 2.0.0 queued\r\n"),
            ("QUIT", "221 bye\r\n"),
        ]);
        let mut s = Session::connect(&target(port)).unwrap();
        let tx = s
            .send(
                &env(&["a@x.org", "bad@x.org"]),
                &mut &b".hi\r\nx\r\n"[..],
                12,
            )
            .unwrap();
        assert!(tx.rcpt[0].is_ok());
        assert_eq!(tx.rcpt[1].as_ref().unwrap_err().code, 550);
        assert_eq!(tx.data.as_ref().unwrap().as_ref().unwrap().code, 250);
        s.quit();
        let seen = h.join().unwrap();
        assert_eq!(seen[5], "..hi\r\nx\r\n.\r\n");
    }

    /// Three messages on one connection, each body's final dot sent with the next MAIL,
    /// RCPTs and DATA in one write (the server answers the dot only once those arrived),
    /// with one RCPT of the middle message refused.
    #[test]
    fn chained_messages_travel_with_the_previous_dot() {
        let (port, h) = server(vec![
            ("EHLO", "250-fake\r\n250 PIPELINING\r\n"),
            ("MAIL FROM:<s@x.org>", ""),
            ("RCPT TO:<a@x.org>", ""),
            ("DATA", "250 ok\r\n250 ok\r\n354 go\r\n"),
            ("BODY", ""),
            ("MAIL FROM:<s@x.org>", ""),
            ("RCPT TO:<b@x.org>", ""),
            ("RCPT TO:<bad@x.org>", ""),
            (
                "DATA",
                "250 first\r\n250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n",
            ),
            ("BODY", ""),
            ("MAIL FROM:<s@x.org>", ""),
            ("RCPT TO:<c@x.org>", ""),
            ("DATA", "250 second\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
            ("BODY", "250 third\r\n"),
        ]);
        let mut s = Session::connect(&target(port)).unwrap();
        let mut owed = None;
        let mut results = Vec::new();
        for rcpts in [&["a@x.org"][..], &["b@x.org", "bad@x.org"], &["c@x.org"]] {
            let e = env(rcpts);
            assert!(s.can_chain(&e, 4));
            s.begin(&e, 4);
            s.flush().unwrap();
            if let Some(r) = owed.take() {
                results.push(s.finish_dot(r).unwrap());
            }
            assert!(s.read_begun(rcpts.len()).unwrap().is_none());
            s.body(&mut &b"hi\r\n"[..]).unwrap();
            owed = Some(s.take_opened());
        }
        results.push(s.finish_dot(owed.take().unwrap()).unwrap());
        let data: Vec<_> = results
            .iter()
            .map(|t| t.data.as_ref().unwrap().as_ref().unwrap().text.clone())
            .collect();
        assert_eq!(data, ["250 first", "250 second", "250 third"]);
        assert!(results[0].rcpt[0].is_ok() && results[2].rcpt[0].is_ok());
        assert!(results[1].rcpt[0].is_ok());
        assert_eq!(results[1].rcpt[1].as_ref().unwrap_err().code, 550);
        drop(s);
        assert_eq!(h.join().unwrap().len(), 14);
    }

    #[test]
    fn all_rejected_sends_rset_and_no_body() {
        let (port, h) = server(vec![
            ("EHLO", "250-fake\r\n250 PIPELINING\r\n"),
            ("MAIL", ""),
            ("RCPT", ""),
            ("DATA", "250 ok\r\n550 no\r\n554 no valid recipients\r\n"),
            ("RSET", "250 ok\r\n"),
        ]);
        let mut s = Session::connect(&target(port)).unwrap();
        let tx = s.send(&env(&["a@x.org"]), &mut &b"x\r\n"[..], 3).unwrap();
        assert!(tx.data.is_none() && tx.rcpt[0].is_err());
        drop(s);
        assert_eq!(h.join().unwrap().len(), 5);
    }

    #[test]
    fn mail_tempfail_and_disconnect_after_body() {
        let (port, _h) = server(vec![
            ("EHLO", "250 fake\r\n"),
            ("MAIL", "451 4.3.0 try later\r\n"),
            ("RSET", "250 ok\r\n"),
            ("MAIL", "250 ok\r\n"),
            ("RCPT", "250 ok\r\n"),
            ("DATA", "354 go\r\n"),
            ("BODY", "CLOSE"),
        ]);
        let mut s = Session::connect(&target(port)).unwrap();
        let e = s.send(&env(&["a@x.org"]), &mut &b"x"[..], 1).unwrap_err();
        assert!(e.is_mail_tempfail() && !e.is_permanent() && !e.is_config_problem());
        let e = s.send(&env(&["a@x.org"]), &mut &b"x"[..], 1).unwrap_err();
        assert_eq!(e.stage, Stage::Dot);
        assert!(e.is_network());
        assert!(s.send(&env(&["a@x.org"]), &mut &b"x"[..], 1).is_err());
    }

    #[test]
    fn size_limit_is_permanent() {
        let (port, _h) = server(vec![("EHLO", "250-fake\r\n250 SIZE 10\r\n")]);
        let mut s = Session::connect(&target(port)).unwrap();
        let e = s.send(&env(&["a@x.org"]), &mut &b"x"[..], 11).unwrap_err();
        assert!(e.is_permanent());
    }

    #[test]
    fn no_starttls_is_config_problem() {
        let (port, _h) = server(vec![("EHLO", "250 fake\r\n")]);
        let mut t = target(port);
        t.tls = TlsMode::StartTls;
        t.tls_config = Some(build_tls_config(None, false).unwrap_or_else(|_| panic!("tls config")));
        let e = Session::connect(&t).err().unwrap();
        assert_eq!(e.kind, Kind::NoStartTls);
        assert!(e.is_config_problem());
    }
}
