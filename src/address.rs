//! Addresses: parsing address lists (argv and To/Cc/Bcc), validation, the aliases file, and
//! the rewriting policy (bare names qualified, local accounts → admin, local senders → the
//! verified `sender`). Pure: account lookups are passed in.

use std::collections::HashMap;

/// One parsed mailbox: optional display name and the address (may be a bare name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub addr: String,
}

pub fn is_valid_domain(d: &str) -> bool {
    if d.starts_with('[') && d.ends_with(']') {
        return d[1..d.len() - 1].parse::<std::net::IpAddr>().is_ok()
            || d[1..d.len() - 1]
                .strip_prefix("IPv6:")
                .is_some_and(|v| v.parse::<std::net::Ipv6Addr>().is_ok());
    }
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// A local part we can put on the wire unquoted or as a quoted string, without controls.
pub fn is_valid_local(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 64
        && l.chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"<>()[]\\,;:\"@".contains(c))
}

/// `local@domain` with both parts valid.
pub fn is_valid_mailbox(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((l, d)) => is_valid_local(l) && is_valid_domain(d) && a.len() <= 254,
        None => false,
    }
}

/// Parse an address list (RFC 5322: commas, `Name <a@x>`, `a@x (Comment)`, groups) as found
/// in argv or a header value. Bare words are addresses, not names.
pub fn parse_list(value: &str) -> Vec<Mailbox> {
    parse_list_checked(value).0
}

/// [`parse_list`], and the entries that are neither an address nor a bare local name (e.g.
/// `"Some Name" bob`, missing its angle brackets), which `parse_list` leaves out: `-t` refuses
/// those rather than drop a recipient without a word.
pub fn parse_list_checked(value: &str) -> (Vec<Mailbox>, Vec<String>) {
    let mut bad = Vec::new();
    let mut raw = Vec::with_capacity(value.len() + 16);
    raw.extend_from_slice(b"To: ");
    raw.extend_from_slice(value.replace(['\r', '\n'], " ").as_bytes());
    raw.extend_from_slice(b"\r\n\r\n");
    let mut out = Vec::new();
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(&raw) else {
        return (out, bad);
    };
    let Some(addrs) = msg.to() else {
        return (out, bad);
    };
    for a in addrs.iter() {
        let name = a
            .name
            .as_ref()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty());
        match a.address.as_ref().map(|s| s.trim()) {
            Some(ad) if !ad.is_empty() => out.push(Mailbox {
                name,
                addr: ad.to_string(),
            }),
            _ => {
                // mail-parser reads a bare word ("root") as a display name.
                match name {
                    Some(n) if !n.contains(char::is_whitespace) => out.push(Mailbox {
                        name: None,
                        addr: n,
                    }),
                    Some(n) => bad.push(n),
                    None => {}
                }
            }
        }
    }
    (out, bad)
}

/// /etc/aliases: `name: target, target` with continuation lines and `#` comments. Targets
/// that a null client cannot deliver (`|cmd`, `/file`, `:include:`) are skipped.
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    map: HashMap<String, Vec<String>>,
}

impl Aliases {
    pub fn parse(text: &str) -> Aliases {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        let mut logical: Vec<String> = Vec::new();
        for line in text.lines() {
            if line.trim_start().starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = logical.last_mut() {
                    last.push(' ');
                    last.push_str(line.trim());
                }
                continue;
            }
            logical.push(line.trim().to_string());
        }
        for l in logical {
            let Some((name, targets)) = l.split_once(':') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let t: Vec<String> = targets
                .split(',')
                .map(|t| t.trim().trim_matches('"').to_string())
                .filter(|t| {
                    !t.is_empty()
                        && !t.starts_with('|')
                        && !t.starts_with('/')
                        && !t.starts_with(":include:")
                })
                .collect();
            map.insert(name, t);
        }
        Aliases { map }
    }

    pub fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.map.get(&name.to_ascii_lowercase())
    }
}

/// The rewriting policy.
#[derive(Debug, Clone, Default)]
pub struct Rewriter {
    pub admin: Option<String>,
    pub sender: Option<String>,
    pub domain: Option<String>,
    /// Domains that mean "this host" (lower case): localhost, host names, configured extras.
    pub local_domains: Vec<String>,
    /// Used to qualify when neither sender nor domain is configured.
    pub fqdn: String,
    pub aliases: Aliases,
    pub use_aliases: bool,
}

/// Why a recipient could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAddress(pub String);

impl Rewriter {
    /// The local part if `addr` names this host (a bare name, or @ a local domain).
    pub fn local_part<'a>(&self, addr: &'a str) -> Option<&'a str> {
        match addr.rsplit_once('@') {
            None => Some(addr),
            Some((l, d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                self.local_domains.contains(&d).then_some(l)
            }
        }
    }

    fn qualify(&self, local: &str) -> String {
        format!("{local}@{}", self.domain.as_deref().unwrap_or(&self.fqdn))
    }

    /// Rewrite one recipient into one or more relayable addresses.
    pub fn recipient(
        &self,
        addr: &str,
        is_account: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, BadAddress> {
        let mut out = Vec::new();
        self.expand(addr, is_account, 0, &mut out)?;
        Ok(out)
    }

    fn expand(
        &self,
        addr: &str,
        is_account: &dyn Fn(&str) -> bool,
        depth: u32,
        out: &mut Vec<String>,
    ) -> Result<(), BadAddress> {
        let addr = addr.trim().trim_start_matches('<').trim_end_matches('>');
        let Some(local) = self.local_part(addr) else {
            if !is_valid_mailbox(addr) {
                return Err(BadAddress(format!("invalid address {addr:?}")));
            }
            push_unique(out, lower_domain(addr));
            return Ok(());
        };
        if !is_valid_local(local) {
            return Err(BadAddress(format!("invalid address {addr:?}")));
        }
        if depth < 8 && self.use_aliases {
            let targets = self.aliases.get(local).or_else(|| self.aliases.get("*"));
            if let Some(t) = targets.filter(|t| !t.is_empty()) {
                // An alias to itself (root: root) ends the expansion.
                for x in t.clone() {
                    if x.eq_ignore_ascii_case(local) {
                        self.terminal(local, is_account, out);
                    } else {
                        self.expand(&x, is_account, depth + 1, out)?;
                    }
                }
                return Ok(());
            }
        }
        self.terminal(local, is_account, out);
        Ok(())
    }

    fn terminal(&self, local: &str, is_account: &dyn Fn(&str) -> bool, out: &mut Vec<String>) {
        let a = match &self.admin {
            Some(admin) if is_account(local) || self.domain.is_none() => admin.clone(),
            _ => self.qualify(local),
        };
        push_unique(out, a);
    }

    /// The envelope sender: `<>` stays null; a local sender (or none given: the submitting
    /// user) becomes the configured `sender`, else is qualified.
    pub fn envelope_sender(&self, given: Option<&str>, user: &str) -> Result<String, BadAddress> {
        let s = match given {
            Some("") => return Ok(String::new()),
            Some(s) => s.trim().trim_start_matches('<').trim_end_matches('>'),
            None => user,
        };
        match self.local_part(s) {
            Some(l) => {
                if !is_valid_local(l) {
                    return Err(BadAddress(format!("invalid sender {s:?}")));
                }
                Ok(self.sender.clone().unwrap_or_else(|| self.qualify(l)))
            }
            None if is_valid_mailbox(s) => Ok(lower_domain(s)),
            None => Err(BadAddress(format!("invalid sender {s:?}"))),
        }
    }

    /// The address a header From naming a local account is rewritten to, if any.
    pub fn header_sender(&self, addr: &str) -> Option<String> {
        let l = self.local_part(addr.trim())?;
        is_valid_local(l).then(|| self.sender.clone().unwrap_or_else(|| self.qualify(l)))
    }
}

fn push_unique(out: &mut Vec<String>, a: String) {
    if !out.iter().any(|x| x.eq_ignore_ascii_case(&a)) {
        out.push(a);
    }
}

fn lower_domain(a: &str) -> String {
    match a.rsplit_once('@') {
        Some((l, d)) => format!("{l}@{}", d.to_ascii_lowercase()),
        None => a.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw() -> Rewriter {
        Rewriter {
            admin: Some("ops@example.com".into()),
            sender: Some("server1@example.com".into()),
            domain: Some("example.com".into()),
            local_domains: vec!["localhost".into(), "web1".into(), "web1.example.com".into()],
            fqdn: "web1.example.com".into(),
            aliases: Aliases::parse(
                "# comment\npostmaster: root\nroot: ops@example.com, alice\nbob: |/usr/bin/x\n  , carol\nloop: loop\n",
            ),
            use_aliases: true,
        }
    }

    fn acct(n: &str) -> bool {
        ["root", "www-data", "alice", "loop", "bob", "carol"].contains(&n)
    }

    #[test]
    fn lists() {
        let l = parse_list(
            "a@x.org, \"Doe, J\" <j@x.org>, grp: c@d.org, e@f.org;, root (Cron Daemon), bare",
        );
        let addrs: Vec<_> = l.iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(
            addrs,
            ["a@x.org", "j@x.org", "c@d.org", "e@f.org", "root", "bare"]
        );
        assert_eq!(l[1].name.as_deref(), Some("Doe, J"));
        assert!(parse_list("undisclosed-recipients:;").is_empty());
        let (ok, bad) = parse_list_checked("\"Some Name\" bob, carol@dest.test");
        assert_eq!(ok.len(), 1);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            parse_list_checked("undisclosed-recipients:;, root")
                .1
                .is_empty()
        );
        assert_eq!(parse_list("a@x,b@y").len(), 2);
    }

    #[test]
    fn recipients() {
        let r = rw();
        assert_eq!(r.recipient("root", &acct).unwrap(), ["ops@example.com"]);
        assert_eq!(
            r.recipient("postmaster@localhost", &acct).unwrap(),
            ["ops@example.com"]
        );
        assert_eq!(
            r.recipient("www-data@web1.example.com", &acct).unwrap(),
            ["ops@example.com"]
        );
        assert_eq!(r.recipient("bob", &acct).unwrap(), ["ops@example.com"]);
        assert_eq!(r.recipient("loop", &acct).unwrap(), ["ops@example.com"]);
        assert_eq!(
            r.recipient("nobodyhere", &acct).unwrap(),
            ["nobodyhere@example.com"]
        );
        assert_eq!(
            r.recipient("Someone@Other.ORG", &acct).unwrap(),
            ["Someone@other.org"]
        );
        assert_eq!(r.recipient("<x@y.org>", &acct).unwrap(), ["x@y.org"]);
        assert!(r.recipient("bad addr@x", &acct).is_err());
        assert!(r.recipient("x@-bad-", &acct).is_err());
        let mut star = rw();
        star.aliases = Aliases::parse("*: catch@example.com\n");
        assert_eq!(
            star.recipient("anyone", &acct).unwrap(),
            ["catch@example.com"]
        );
    }

    #[test]
    fn senders() {
        let r = rw();
        assert_eq!(
            r.envelope_sender(None, "www-data").unwrap(),
            "server1@example.com"
        );
        assert_eq!(
            r.envelope_sender(Some("root@web1.example.com"), "x")
                .unwrap(),
            "server1@example.com"
        );
        assert_eq!(
            r.envelope_sender(Some("app@Example.COM"), "x").unwrap(),
            "app@example.com"
        );
        assert_eq!(r.envelope_sender(Some(""), "x").unwrap(), "");
        assert!(r.envelope_sender(Some("a b@c"), "x").is_err());
        let mut n = rw();
        n.sender = None;
        assert_eq!(
            n.envelope_sender(None, "www-data").unwrap(),
            "www-data@example.com"
        );
        assert_eq!(r.header_sender("root"), Some("server1@example.com".into()));
        assert_eq!(r.header_sender("app@example.com"), None);
    }

    #[test]
    fn validity() {
        assert!(is_valid_mailbox("a.b+c@ex-ample.co.uk"));
        assert!(is_valid_mailbox("a@[127.0.0.1]"));
        assert!(!is_valid_mailbox("a@"));
        assert!(!is_valid_mailbox("@x"));
        assert!(!is_valid_mailbox("a\r\n@x"));
        assert!(!is_valid_mailbox("a@x..y"));
    }
}
