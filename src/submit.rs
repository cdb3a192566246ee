//! Submission: one message from `sendmail` (stdin) or `sendmail -bs` (one SMTP transaction)
//! → recipients resolved, headers completed, envelope written, queued durably. Network-free.

use crate::address::Rewriter;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::message::{self, BodyCopy, Framing, Header, Lines};
use crate::sink::Sink;
use crate::spool::{Envelope, Layout, Rcpt};
use std::io::BufRead;

/// Who is submitting, as the system says. The passwd entry (name, GECOS) is looked up
/// only when something needs it: sendmail runs once per message, and NSS is not free.
#[derive(Debug, Clone)]
pub struct Submitter {
    pub uid: u32,
    info: std::cell::OnceCell<(String, Option<String>)>,
}

impl Submitter {
    pub fn current() -> Submitter {
        Submitter {
            uid: nix::unistd::getuid().as_raw(),
            info: std::cell::OnceCell::new(),
        }
    }

    fn info(&self) -> &(String, Option<String>) {
        self.info.get_or_init(|| {
            match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.uid)) {
                Ok(Some(u)) => {
                    let gecos = u
                        .gecos
                        .to_string_lossy()
                        .split(',')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    (u.name, (!gecos.is_empty()).then_some(gecos))
                }
                _ => (format!("uid{}", self.uid), None),
            }
        })
    }

    pub fn user(&self) -> &str {
        &self.info().0
    }

    pub fn gecos(&self) -> Option<&str> {
        self.info().1.as_deref()
    }

    /// The user name if it was already looked up.
    pub fn known_user(&self) -> &str {
        self.info.get().map(|i| i.0.as_str()).unwrap_or("")
    }
}

/// This host's names: (short, fqdn).
pub fn host_names() -> (String, String) {
    let short = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    let fqdn = if short.contains('.') {
        short.clone()
    } else {
        // /etc/hosts often maps the short name to the FQDN; no DNS on the submission path.
        std::fs::read_to_string("/etc/hosts")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    let l = l.split('#').next()?;
                    let names: Vec<&str> = l.split_whitespace().skip(1).collect();
                    if names.contains(&short.as_str()) {
                        names
                            .iter()
                            .find(|n| n.contains('.') && n.starts_with(&format!("{short}.")))
                            .map(|s| s.to_string())
                    } else {
                        None
                    }
                })
            })
            .unwrap_or_else(|| short.clone())
    };
    (short.to_ascii_lowercase(), fqdn.to_ascii_lowercase())
}

/// Everything a submission needs that does not change per message.
pub struct Context {
    pub cfg: Config,
    pub layout: Layout,
    pub rewriter: Rewriter,
    pub me: Submitter,
    pub fqdn: String,
}

impl Context {
    pub fn new(cfg: Config, use_aliases: bool) -> Context {
        let (short, fqdn) = host_names();
        let mut local = vec![
            "localhost".to_string(),
            "localhost.localdomain".to_string(),
            short,
            fqdn.clone(),
        ];
        local.extend(
            cfg.address
                .local_domains
                .iter()
                .map(|d| d.to_ascii_lowercase()),
        );
        let aliases = if use_aliases {
            std::fs::read_to_string(&cfg.address.aliases)
                .map(|t| crate::address::Aliases::parse(&t))
                .unwrap_or_default()
        } else {
            Default::default()
        };
        let rewriter = Rewriter {
            admin: cfg.address.admin.clone(),
            sender: cfg.address.sender.clone(),
            domain: cfg.address.domain.clone(),
            local_domains: local,
            fqdn: fqdn.clone(),
            aliases,
            use_aliases,
        };
        Context {
            layout: Layout::new(&cfg.spool_dir),
            cfg,
            rewriter,
            me: Submitter::current(),
            fqdn,
        }
    }

    pub fn is_account(name: &str) -> bool {
        matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
    }

    /// Resolve raw recipients (argv words, header addresses, RCPT arguments) to relayable
    /// addresses, deduplicated.
    pub fn resolve(&self, raw: &[String]) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for r in raw {
            for a in self
                .rewriter
                .recipient(r, &Context::is_account)
                .map_err(|e| Error::data(e.0))?
            {
                if !out.iter().any(|x| x.eq_ignore_ascii_case(&a)) {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }

    /// The envelope sender for `given` (-f / MAIL FROM), rewritten; without one, the
    /// configured sender or the submitting user.
    pub fn sender_for(
        &self,
        given: Option<&str>,
    ) -> std::result::Result<String, crate::address::BadAddress> {
        match (given, &self.rewriter.sender) {
            (None, Some(s)) => Ok(s.clone()),
            _ => self.rewriter.envelope_sender(given, self.me.user()),
        }
    }

    pub fn domain(&self) -> &str {
        self.cfg.address.domain.as_deref().unwrap_or(&self.fqdn)
    }
}

/// What the command line (or SMTP dialogue) says about one message.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub sender: Option<String>,
    pub full_name: Option<String>,
    pub extract: bool,
    pub recipients: Vec<String>,
    pub body: Option<String>,
    pub notify: Option<String>,
    pub ret: Option<String>,
    pub envid: Option<String>,
}

/// Read one message from `lines` and queue it. Returns the queue ID.
pub fn submit<R: BufRead>(ctx: &Context, p: &Params, lines: &mut Lines<R>) -> Result<String> {
    let head = message::read_head(lines)?;
    let mut raw: Vec<String> = Vec::new();
    for a in &p.recipients {
        raw.extend(crate::address::parse_list(a).into_iter().map(|m| m.addr));
    }
    if p.extract {
        raw.extend(message::header_recipients(&head.headers));
    }
    let rcpts = ctx.resolve(&raw)?;
    if rcpts.is_empty() {
        return Err(Error::usage(
            "no recipients: give addresses as arguments, or use -t with To/Cc/Bcc headers",
        ));
    }
    let sender = ctx
        .sender_for(p.sender.as_deref())
        .map_err(|e| Error::data(e.0))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (headers, message_id) = complete_headers(ctx, p, head.headers, &sender, now)?;

    let env = Envelope {
        sender,
        rcpts: rcpts
            .into_iter()
            .map(|addr| Rcpt {
                orcpt: None,
                notify: p.notify.clone(),
                addr,
            })
            .collect(),
        envid: p.envid.clone(),
        ret: p.ret.clone(),
        body: p.body.clone(),
        time: now,
        uid: ctx.me.uid,
        user: ctx.me.known_user().to_string(),
        message_id: Some(message_id),
        is_bounce: false,
    };

    let mut sink = Sink::open(&ctx.layout)?;
    let w = sink.writer();
    let io = |e: std::io::Error| Error::spool_io("cannot write queue file", &e);
    env.write_to(w)?;
    let mut counter = Counter { inner: w, n: 0 };
    for h in &headers {
        message::write_header(&mut counter, h).map_err(io)?;
    }
    counter.inner.write_all(b"\r\n").map_err(io)?;
    let mut copy = BodyCopy::new(counter.n + 2, ctx.cfg.max_message_size);
    copy.count(0)?;
    let w = counter.inner;
    if let Some((line, complete)) = head.first_body {
        copy.piece(w, &line, complete)?;
    }
    if !head.eof {
        copy.copy(lines, w)?;
    }
    sink.commit()
}

struct Counter<'a> {
    inner: &'a mut dyn std::io::Write,
    n: u64,
}

impl std::io::Write for Counter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Remove Bcc (and Resent-Bcc, Return-Path), rewrite a local From, add Date, Message-ID and
/// From when missing, and prepend our Received line.
fn complete_headers(
    ctx: &Context,
    p: &Params,
    mut headers: Vec<Header>,
    sender: &str,
    now: u64,
) -> Result<(Vec<Header>, String)> {
    headers.retain(|h| !(h.is("Bcc") || h.is("Resent-Bcc") || h.is("Return-Path")));
    let has = |hs: &[Header], n: &str| hs.iter().any(|h| h.is(n));
    let date = message::rfc5322_date(now as i64);
    let rw = &ctx.rewriter;
    let visible_sender = if sender.is_empty() {
        ctx.sender_for(None)
            .unwrap_or_else(|_| format!("MAILER-DAEMON@{}", ctx.domain()))
    } else {
        sender.to_string()
    };
    if let Some(name) = &p.full_name
        && name.contains(['\r', '\n'])
    {
        return Err(Error::usage("-F: name contains a line break"));
    }

    // A From naming a local account (root, www-data@thishost, "root (Cron Daemon)") is
    // rewritten so the relay sees the verified sender; its display name is kept.
    if ctx.cfg.address.rewrite_from
        && let Some(i) = headers.iter().position(|h| h.is("From"))
    {
        let list = crate::address::parse_list(&headers[i].value());
        if list.len() == 1
            && let Some(new) = rw.header_sender(&list[0].addr)
        {
            let name = list[0].name.clone().unwrap_or_else(|| list[0].addr.clone());
            headers[i] = Header::new("From", &format!("{} <{new}>", message::phrase(&name)));
        }
    }
    // Bare names in To/Cc ("To: root", cron's MAILTO) are qualified, as Postfix does, so
    // the relay sees well-formed header addresses.
    for h in headers.iter_mut().filter(|h| h.is("To") || h.is("Cc")) {
        let list = crate::address::parse_list(&h.value());
        if !list.is_empty() && list.iter().any(|m| !m.addr.contains('@')) {
            let parts: Vec<String> = list
                .iter()
                .map(|m| {
                    let a = if m.addr.contains('@') {
                        m.addr.clone()
                    } else {
                        format!("{}@{}", m.addr, ctx.domain())
                    };
                    match &m.name {
                        Some(n) => format!("{} <{a}>", message::phrase(n)),
                        None => a,
                    }
                })
                .collect();
            let name = h.name.clone();
            *h = Header::new(&name, &parts.join(", "));
        }
    }
    if !has(&headers, "From") {
        let name = p
            .full_name
            .clone()
            .or_else(|| ctx.me.gecos().map(str::to_string));
        let v = match name.filter(|n| !n.trim().is_empty()) {
            Some(n) => format!("{} <{visible_sender}>", message::phrase(&n)),
            None => visible_sender.clone(),
        };
        headers.push(Header::new("From", &v));
    }
    if !has(&headers, "Date") {
        headers.push(Header::new("Date", &date));
    }
    let message_id = match headers.iter().find(|h| h.is("Message-ID")) {
        Some(h) => h
            .value()
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string(),
        None => {
            let id = format!("<{}.relayq@{}>", crate::spool::new_id(), ctx.domain());
            headers.push(Header::new("Message-ID", &id));
            id
        }
    };
    let message_id = if crate::spool::is_token(&message_id) {
        message_id
    } else {
        String::from("<>")
    };
    let received = Header {
        name: "Received".into(),
        lines: vec![
            format!(
                "Received: by {} (relayq, from userid {})",
                ctx.fqdn, ctx.me.uid
            )
            .into_bytes(),
            format!("\t; {date}").into_bytes(),
        ],
    };
    headers.insert(0, received);
    Ok((headers, message_id))
}

/// Read a message from stdin as `sendmail` does.
pub fn submit_stdin(ctx: &Context, p: &Params, ignore_dots: bool) -> Result<String> {
    let stdin = std::io::stdin();
    let lock = std::io::BufReader::with_capacity(64 * 1024, stdin.lock());
    let mut lines = Lines::new(
        lock,
        Framing::Stdin {
            dot_ends: !ignore_dots,
        },
    );
    submit(ctx, p, &mut lines)
}
