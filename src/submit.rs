//! Submission: one message from `sendmail` (stdin) or `sendmail -bs` (one SMTP transaction)
//! → recipients resolved, headers completed, envelope written, queued durably. Network-free.

use crate::address::Rewriter;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::message::{self, BodyCopy, Framing, Header, Lines};
use crate::sink::Sink;
use crate::spool::{Envelope, Layout, MAX_ADDR, MAX_ENVELOPE_BYTES, MAX_RCPTS, Rcpt};
use std::collections::HashSet;
use std::io::BufRead;

/// A limit of the daemon's envelope reader (`spool::MAX_RCPTS`, `MAX_ADDR`,
/// `MAX_ENVELOPE_BYTES`) that a submission would break. Checked where mail is accepted, before
/// anything is written: the daemon would otherwise set the file aside in `corrupt/`, unsent
/// and unbounced, after `sendmail` exited 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    TooManyRecipients,
    AddressTooLong,
    EnvelopeTooLarge,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::TooManyRecipients => write!(f, "too many recipients (more than {MAX_RCPTS})"),
            Limit::AddressTooLong => write!(f, "address too long (more than {MAX_ADDR} bytes)"),
            Limit::EnvelopeTooLarge => write!(
                f,
                "envelope too large (more than {MAX_ENVELOPE_BYTES} bytes: too many or too long recipients)"
            ),
        }
    }
}

impl From<Limit> for Error {
    fn from(l: Limit) -> Error {
        Error::data(l.to_string())
    }
}

/// The most an envelope holds besides its `rcpt` lines: the magic line and `end`, six lines
/// of at most `MAX_ADDR` bytes of value (sender, envid, ret, body, message-id, user), and
/// `time`, `uid`, `bounce`.
const ENVELOPE_REST_MAX: usize = 6 * (MAX_ADDR + 16) + 128;
/// What a `rcpt <ADDR>\n` line adds to the address.
const RCPT_LINE: usize = "rcpt <>\n".len();

/// The resolved recipients of one message: de-duplicated ignoring ASCII case, first seen
/// kept, in linear time (a hash set beside the list), and always within the reader's limits.
#[derive(Debug, Default)]
pub struct Recipients {
    list: Vec<String>,
    /// `list`, lower-cased.
    seen: HashSet<String>,
    /// The addresses' bytes.
    addr_bytes: usize,
}

impl Recipients {
    /// What a recipient's DSN parameters add to its `rcpt` line (` notify=...`).
    pub fn dsn_bytes(notify: Option<&str>) -> usize {
        notify.map_or(0, |n| " notify=".len() + n.len())
    }

    /// Add the addresses one recipient resolved to, all or none: `Ok(n)`, the number that
    /// were new (duplicates are no error), or the limit they would break, leaving the set as
    /// it was. `dsn` is what each `rcpt` line carries besides its address (`dsn_bytes`).
    pub fn add(&mut self, addrs: Vec<String>, dsn: usize) -> Result<usize, Limit> {
        let start = self.list.len();
        let mut broke = None;
        for a in addrs {
            if a.len() > MAX_ADDR {
                broke = Some(Limit::AddressTooLong);
                break;
            }
            let key = a.to_ascii_lowercase();
            if self.seen.contains(&key) {
                continue;
            }
            if self.list.len() == MAX_RCPTS {
                broke = Some(Limit::TooManyRecipients);
                break;
            }
            self.seen.insert(key);
            self.addr_bytes += a.len();
            self.list.push(a);
        }
        let bytes = self.addr_bytes + self.list.len() * (RCPT_LINE + dsn);
        if broke.is_none() && bytes > MAX_ENVELOPE_BYTES - ENVELOPE_REST_MAX {
            broke = Some(Limit::EnvelopeTooLarge);
        }
        match broke {
            None => Ok(self.list.len() - start),
            Some(l) => {
                for a in self.list.drain(start..) {
                    self.seen.remove(&a.to_ascii_lowercase());
                    self.addr_bytes -= a.len();
                }
                Err(l)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn into_vec(self) -> Vec<String> {
        self.list
    }
}

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

    /// Rewrite one raw recipient (argv word, header address, RCPT argument) to the relayable
    /// addresses it stands for.
    pub fn rewrite(&self, raw: &str) -> Result<Vec<String>> {
        self.rewriter
            .recipient(raw, &Context::is_account)
            .map_err(|e| Error::data(e.0))
    }

    /// Resolve raw recipients to relayable addresses, de-duplicated, within the envelope's
    /// limits for rcpt lines carrying `dsn` bytes of parameters (`Recipients::dsn_bytes`).
    /// Stops at the first recipient over a limit.
    pub fn resolve_with(&self, raw: &[String], dsn: usize) -> Result<Recipients> {
        let mut set = Recipients::default();
        for r in raw {
            set.add(self.rewrite(r)?, dsn)?;
        }
        Ok(set)
    }

    /// Resolve raw recipients to relayable addresses, de-duplicated, within the limits.
    pub fn resolve(&self, raw: &[String]) -> Result<Vec<String>> {
        Ok(self.resolve_with(raw, 0)?.into_vec())
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
    submit_traced(ctx, p, lines, None)
}

/// `submit`, with a trace field put on top of the message's headers: the SMTP listener's
/// `Received` (the client's address), which only the receiving side knows.
pub fn submit_traced<R: BufRead>(
    ctx: &Context,
    p: &Params,
    lines: &mut Lines<R>,
    trace: Option<Header>,
) -> Result<String> {
    let head = message::read_head(lines)?;
    let mut raw: Vec<String> = Vec::new();
    for a in &p.recipients {
        raw.extend(crate::address::parse_list(a).into_iter().map(|m| m.addr));
    }
    if p.extract {
        raw.extend(message::header_recipients(&head.headers)?);
    }
    let rcpts = ctx
        .resolve_with(&raw, Recipients::dsn_bytes(p.notify.as_deref()))?
        .into_vec();
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
    let (mut headers, message_id) = complete_headers(ctx, p, head.headers, &sender, now)?;
    headers.splice(0..0, trace);

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

    // The envelope as the daemon will read it, checked before anything is written.
    let mut envelope = Vec::with_capacity(256 + env.rcpts.len() * 32);
    env.write_to(&mut envelope)?;
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(Limit::EnvelopeTooLarge.into());
    }

    let mut sink = Sink::open(&ctx.layout)?;
    let w = sink.writer();
    let io = |e: std::io::Error| Error::spool_io("cannot write queue file", &e);
    w.write_all(&envelope).map_err(io)?;
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
/// From when missing. (The trace field is the daemon's, added as it sends: it knows the
/// submitter from the kernel, which no client can forge.)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recipients_dedup_keeps_first_seen_order_ignoring_case() {
        let mut r = Recipients::default();
        assert_eq!(r.add(strings(&["b@x.org", "a@x.org", "B@X.org"]), 0), Ok(2));
        assert_eq!(r.add(strings(&["A@x.ORG"]), 0), Ok(0));
        assert_eq!(r.add(strings(&["c@x.org", "b@x.org", "c@x.org"]), 0), Ok(1));
        assert_eq!(r.len(), 3);
        assert_eq!(r.into_vec(), ["b@x.org", "a@x.org", "c@x.org"]);
    }

    /// 10,000 addresses, then 500,000 repeats (in other case) of the last ones added: a scan
    /// of the list per address, as the de-duplication did, makes 5e9 comparisons (tens of
    /// seconds); the hash set takes a fraction of a second, even in a debug build.
    #[test]
    fn recipients_count_limit_all_or_none() {
        let mut r = Recipients::default();
        for i in 0..MAX_RCPTS - 1 {
            r.add(vec![format!("u{i}@example.org")], 0).unwrap();
        }
        // One alias expanding to two new addresses and an old one: neither is taken.
        let batch = strings(&["new1@example.org", "u0@example.org", "new2@example.org"]);
        assert_eq!(r.add(batch, 0), Err(Limit::TooManyRecipients));
        assert_eq!(r.len(), MAX_RCPTS - 1);
        assert_eq!(r.add(strings(&["new2@example.org"]), 0), Ok(1));
        assert_eq!(r.len(), MAX_RCPTS);
        // Full: a duplicate is still fine, a new address is not.
        assert_eq!(r.add(strings(&["U5@example.org"]), 0), Ok(0));
        assert_eq!(
            r.add(strings(&["new1@example.org"]), 0),
            Err(Limit::TooManyRecipients)
        );
        assert_eq!(
            Error::from(Limit::TooManyRecipients).msg,
            "too many recipients (more than 10000)"
        );
        assert_eq!(Error::from(Limit::TooManyRecipients).code(), 65);
        let long = format!("{}@example.org", "a".repeat(MAX_ADDR));
        assert_eq!(
            Recipients::default().add(vec![long], 0),
            Err(Limit::AddressTooLong)
        );
    }

    /// The byte budget keeps the largest envelope the set allows within what the reader
    /// takes, every other field at its longest; and it is not far below the reader's limit.
    #[test]
    fn recipients_envelope_budget_matches_the_reader() {
        for notify in [None, Some("x".repeat(MAX_ADDR))] {
            let dsn = Recipients::dsn_bytes(notify.as_deref());
            let mut r = Recipients::default();
            let mut i = 0;
            let last = loop {
                let a = format!("{i:0>width$}@example.org", width = MAX_ADDR - 12);
                match r.add(vec![a], dsn) {
                    Ok(_) => i += 1,
                    Err(l) => break l,
                }
            };
            assert_eq!(last, Limit::EnvelopeTooLarge);
            assert!(r.len() < MAX_RCPTS);
            let token = |c: char| c.to_string().repeat(MAX_ADDR);
            let env = Envelope {
                sender: format!("{}@example.org", "s".repeat(MAX_ADDR - 12)),
                rcpts: r
                    .into_vec()
                    .into_iter()
                    .map(|addr| Rcpt {
                        addr,
                        notify: notify.clone(),
                        orcpt: None,
                    })
                    .collect(),
                envid: Some(token('e')),
                ret: Some(token('r')),
                body: Some(token('b')),
                time: u64::MAX,
                uid: u32::MAX,
                user: token('u'),
                message_id: Some(token('m')),
                is_bounce: true,
            };
            let mut buf = Vec::new();
            env.write_to(&mut buf).unwrap();
            assert!(buf.len() <= MAX_ENVELOPE_BYTES, "{}", buf.len());
            assert!(buf.len() > MAX_ENVELOPE_BYTES - 2 * ENVELOPE_REST_MAX);
            let back = Envelope::read_from(&mut std::io::Cursor::new(buf)).unwrap();
            assert_eq!(back.rcpts.len(), env.rcpts.len());
        }
    }
}
