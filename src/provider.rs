//! Provider presets and relay URLs: turns `[relay] url` or `provider` into a host, port and
//! TLS mode. What each provider needs from the user is in docs/providers.md.
//!
//! It needs nothing from the config: the config's `[relay]` table is a `RelayName`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// smtps:// — TLS from the first byte (port 465).
    Implicit,
    /// smtp:// — STARTTLS required, never falls back.
    StartTls,
    /// smtp:// with allow_plaintext on a loopback relay.
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls == Tls::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// A preset: name, URL, and the DKIM selectors / SPF include the provider documents.
pub(crate) struct Preset {
    pub name: &'static str,
    pub url: &'static str,
    pub spf_include: &'static str,
    /// DKIM selectors the provider always uses (`<sel>._domainkey.<domain>`); empty when
    /// they are specific to the account.
    pub dkim_selectors: &'static [&'static str],
    pub note: &'static str,
    /// The most connections at once the provider documents (None: no documented limit;
    /// `queue.connections` applies).
    pub max_connections: Option<usize>,
    /// The send rate the provider documents (`relay.rate` syntax), applied unless the relay
    /// table sets `rate` (docs/providers/<name>.md cites the source).
    pub rate: Option<&'static str>,
    /// The daily cap (recipients in 24 hours) the provider documents, unless `daily` is set.
    pub daily: Option<u64>,
}

pub(crate) const PRESETS: &[Preset] = &[
    Preset {
        name: "smtp2go",
        url: "smtps://mail.smtp2go.com:465",
        spf_include: "spf.smtp2go.com",
        dkim_selectors: &[],
        note: "verify the sender domain or address in the SMTP2GO console; username/password are an SMTP user",
        max_connections: None,
        rate: None,
        daily: None,
    },
    Preset {
        name: "sendgrid",
        url: "smtps://smtp.sendgrid.net:465",
        spf_include: "sendgrid.net",
        dkim_selectors: &["s1", "s2"],
        note: "username is literally 'apikey', the password is an API key; the sender needs Sender Identity verification",
        max_connections: None,
        rate: None,
        daily: None,
    },
    Preset {
        name: "mailgun",
        url: "smtps://smtp.mailgun.org:465",
        spf_include: "mailgun.org",
        dkim_selectors: &[],
        note: "SMTP credentials of the sending domain (postmaster@your-domain)",
        max_connections: None,
        rate: None,
        daily: None,
    },
    Preset {
        name: "postmark",
        url: "smtp://smtp.postmarkapp.com:587",
        spf_include: "spf.mtasv.net",
        dkim_selectors: &[],
        note: "the server API token is both username and password; sender signature required",
        max_connections: None,
        rate: None,
        daily: None,
    },
    Preset {
        name: "gmail",
        url: "smtps://smtp.gmail.com:465",
        spf_include: "_spf.google.com",
        dkim_selectors: &["google"],
        note: "use an app password, or auth = \"xoauth2\" with password_command printing an access token",
        max_connections: None,
        rate: None,
        // Workspace: 2,000 messages a day, rolling 24 hours (support.google.com/a/answer/166852).
        daily: Some(2000),
    },
    Preset {
        name: "office365",
        url: "smtp://smtp.office365.com:587",
        spf_include: "spf.protection.outlook.com",
        dkim_selectors: &["selector1", "selector2"],
        note: "basic auth is being retired: use auth = \"xoauth2\" with a token command; SMTP AUTH must be enabled for the mailbox",
        // "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded" above 3 at once.
        max_connections: Some(3),
        // Exchange Online limits: 30 messages a minute, 10,000 recipients a day per mailbox.
        rate: Some("30/min"),
        daily: Some(10_000),
    },
    Preset {
        name: "fastmail",
        url: "smtps://smtp.fastmail.com:465",
        spf_include: "spf.messagingengine.com",
        dkim_selectors: &["fm1", "fm2", "fm3"],
        note: "an app password with SMTP access",
        max_connections: None,
        rate: None,
        daily: None,
    },
];

/// Amazon SES (`ses:<region>`): the URL depends on the region; Easy DKIM selectors are
/// per account.
const SES: Preset = Preset {
    name: "ses",
    url: "",
    spf_include: "amazonses.com",
    dkim_selectors: &[],
    note: "SMTP credentials (not the AWS access key) of the region; verify the sender identity",
    max_connections: None,
    // The sandbox's (docs.aws.amazon.com/ses/latest/dg/quotas.html): 1 message a second,
    // 200 in 24 hours; a production account sets its own (docs/providers/ses.md).
    rate: Some("1/s"),
    daily: Some(200),
};

/// The preset a provider name refers to (`ses:<region>` gives [`SES`]).
pub(crate) fn preset(name: &str) -> Option<&'static Preset> {
    if name.starts_with("ses:") {
        return Some(&SES);
    }
    PRESETS.iter().find(|p| p.name == name)
}

/// Look up a preset by name; `ses:<region>` is computed.
pub(crate) fn preset_url(name: &str) -> Option<String> {
    if let Some(region) = name.strip_prefix("ses:") {
        let ok = !region.is_empty()
            && region.len() < 32
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        return ok.then(|| format!("smtps://email-smtp.{region}.amazonaws.com:465"));
    }
    PRESETS
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.url.to_string())
}

/// Parse `smtp://host[:port]` / `smtps://host[:port]`.
pub(crate) fn parse_url(url: &str, allow_plaintext: bool) -> Result<Endpoint, String> {
    let (tls, rest, default_port) = if let Some(r) = url.strip_prefix("smtps://") {
        (Tls::Implicit, r, 465)
    } else if let Some(r) = url.strip_prefix("smtp://") {
        (Tls::StartTls, r, 587)
    } else {
        return Err(format!(
            "url {url:?} must start with smtps:// (port 465) or smtp:// (STARTTLS, port 587)"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(h) = rest.strip_prefix('[') {
        let (h, after) = h
            .split_once(']')
            .ok_or_else(|| format!("url {url:?}: unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("url {url:?}: bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("url {url:?}: junk after ']'")),
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| format!("url {url:?}: bad port {p:?}"))?,
            ),
            None => (rest.to_string(), default_port),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c))
    {
        return Err(format!("url {url:?}: bad host name"));
    }
    if port == 0 {
        return Err(format!("url {url:?}: port 0"));
    }
    let tls = if tls == Tls::StartTls && allow_plaintext {
        if !is_loopback(&host) {
            return Err(format!(
                "allow_plaintext is only honoured for a loopback relay, not {host}"
            ));
        }
        Tls::Plain
    } else {
        tls
    };
    Ok(Endpoint { host, port, tls })
}

pub(crate) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// How a relay is named: a URL or a provider preset, and whether a loopback relay may go
/// without TLS.
pub(crate) trait RelayName {
    fn url(&self) -> Option<&str>;
    fn provider(&self) -> Option<&str>;
    fn allow_plaintext(&self) -> bool;
}

/// The endpoint a `[relay]` table names (url wins over provider).
pub(crate) fn endpoint(r: &impl RelayName) -> Result<Endpoint, String> {
    let url = match (r.url(), r.provider()) {
        (Some(u), _) => u.to_string(),
        (None, Some(p)) => preset_url(p).ok_or_else(|| {
            let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
            format!(
                "unknown provider {p:?} (known: {}, ses:<region>)",
                names.join(", ")
            )
        })?,
        (None, None) => return Err("set url or provider".into()),
    };
    parse_url(&url, r.allow_plaintext())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = parse_url("smtps://mail.example.com", false).unwrap();
        assert_eq!((e.port, e.tls), (465, Tls::Implicit));
        let e = parse_url("smtp://mail.example.com:2525", false).unwrap();
        assert_eq!((e.port, e.tls), (2525, Tls::StartTls));
        assert_eq!(
            parse_url("smtp://127.0.0.1:25", true).unwrap().tls,
            Tls::Plain
        );
        assert!(parse_url("smtp://mail.example.com:25", true).is_err());
        assert!(parse_url("http://x", false).is_err());
        assert!(parse_url("smtp://a b:25", false).is_err());
        assert_eq!(parse_url("smtps://[::1]:465", false).unwrap().host, "::1");
    }

    #[test]
    fn presets() {
        assert_eq!(
            preset_url("ses:eu-west-1").unwrap(),
            "smtps://email-smtp.eu-west-1.amazonaws.com:465"
        );
        assert!(preset_url("ses:").is_none());
        assert!(preset_url("gmail").is_some());
        assert!(preset_url("nope").is_none());
    }
}
