//! `relayq import --from nullmailer|msmtp|ssmtp|dma|postfix`: read the configuration of the
//! tool relayq replaces and write relayq's equivalent (config + secrets file, through
//! [`crate::conffile`]), saying what was carried over and what could not be, and why.
//!
//! Layers: the five parsers turn source text into an [`Imported`] (no I/O: other files they
//! need come through a [`Sources::read`] callback, so tests feed them from memory);
//! [`render`] turns that into relayq TOML, the secret and the notes; [`run`] is the thin
//! command that reads the files, prints and writes. Nothing printed ever holds a secret.

use crate::error::{Class, Error, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub const USAGE: &str = "usage: relayq [-C out.toml] import --from nullmailer|msmtp|ssmtp|dma|postfix [--path FILE_OR_DIR] [--dry-run] [--force]";

/// The tools relayq can import from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Nullmailer,
    Msmtp,
    Ssmtp,
    Dma,
    Postfix,
}

impl Tool {
    pub const ALL: [Tool; 5] = [
        Tool::Nullmailer,
        Tool::Msmtp,
        Tool::Ssmtp,
        Tool::Dma,
        Tool::Postfix,
    ];

    pub fn from_name(s: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Tool::Nullmailer => "nullmailer",
            Tool::Msmtp => "msmtp",
            Tool::Ssmtp => "ssmtp",
            Tool::Dma => "dma",
            Tool::Postfix => "postfix",
        }
    }

    /// Where the tool keeps its configuration: a directory, or msmtp's file.
    pub fn default_path(self) -> &'static str {
        match self {
            Tool::Nullmailer => "/etc/nullmailer",
            Tool::Msmtp => "/etc/msmtprc",
            Tool::Ssmtp => "/etc/ssmtp",
            Tool::Dma => "/etc/dma",
            Tool::Postfix => "/etc/postfix",
        }
    }

    /// The main file inside the configuration directory.
    pub fn main_file(self) -> &'static str {
        match self {
            Tool::Nullmailer => "remotes",
            Tool::Msmtp => "msmtprc",
            Tool::Ssmtp => "ssmtp.conf",
            Tool::Dma => "dma.conf",
            Tool::Postfix => "main.cf",
        }
    }

    /// Parse the tool's configuration.
    pub fn parse(self, src: &Sources) -> std::result::Result<Imported, String> {
        match self {
            Tool::Nullmailer => nullmailer(src),
            Tool::Msmtp => msmtp(src),
            Tool::Ssmtp => ssmtp(src),
            Tool::Dma => dma(src),
            Tool::Postfix => postfix(src),
        }
    }
}

/// The source texts: the main file, and a reader for the files it refers to (a bare name is
/// looked up beside the main file; an absolute path is read as is, see [`run`]).
pub struct Sources<'a> {
    pub main: &'a str,
    pub read: &'a dyn Fn(&str) -> Option<String>,
}

/// How the old tool talked to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// TLS from the first byte (port 465, "ssl", "tls", wrapper mode).
    Implicit,
    /// STARTTLS, required.
    StartTls,
    /// STARTTLS when offered, else plaintext.
    Opportunistic,
    /// No TLS.
    Plain,
}

/// One relay as the old tool described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    /// Where it came from, for messages ("remotes line 2").
    pub origin: String,
    pub host: String,
    pub port: Option<u16>,
    pub wire: Wire,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_command: Option<String>,
    /// relayq's auth value (plain, login, xoauth2, none), when the tool forced one.
    pub auth: Option<&'static str>,
    pub ca_file: Option<String>,
    pub pin_sha256: Option<String>,
    pub ehlo_name: Option<String>,
}

impl RelaySpec {
    fn new(origin: impl Into<String>, host: &str, port: Option<u16>) -> RelaySpec {
        RelaySpec {
            origin: origin.into(),
            host: host.to_string(),
            port,
            wire: Wire::Plain,
            username: None,
            password: None,
            password_command: None,
            auth: None,
            ca_file: None,
            pin_sha256: None,
            ehlo_name: None,
        }
    }
}

/// A value carried over with where it came from.
pub type Sourced = Option<(String, String)>;

/// What a parser found: relays in order of preference, addresses, and the settings it could
/// not carry over (each "what: why").
#[derive(Debug, Default)]
pub struct Imported {
    pub relays: Vec<RelaySpec>,
    pub admin: Sourced,
    pub sender: Sourced,
    pub domain: Sourced,
    pub aliases: Sourced,
    /// `[queue]` settings as relayq durations ("4h"): when to warn, when to give up.
    pub warn_after: Sourced,
    pub lifetime: Sourced,
    pub notes: Vec<String>,
}

impl Imported {
    fn skip(&mut self, what: impl std::fmt::Display, why: &str) {
        self.notes.push(format!("{what}: {why}"));
    }
}

/// The result of [`render`]: relayq's TOML, the secret for the secrets file (never printed),
/// the settings carried over, and what was not.
#[derive(Debug)]
pub struct Rendered {
    pub toml: String,
    pub secret: Option<String>,
    pub carried: Vec<String>,
    pub notes: Vec<String>,
}

// Reasons shared by the parsers.
const WHY_CERTCHECK: &str = "not carried over: relayq always verifies the relay's certificate; if it is self-signed or from a private CA, set ca_file (its CA) or pin_sha256";
const WHY_CLIENT_CERT: &str = "TLS client certificates are not supported by relayq";
const WHY_AUTH: &str = "relayq authenticates with PLAIN or LOGIN (auto) or XOAUTH2; using auto";
const WHY_FROM: &str = "relayq always rewrites the envelope and From of local senders to address.sender and keeps other senders as given";
const WHY_NONE: &str = "no relayq equivalent";
const SYSTEM_CA: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/certs",
    "system",
];

// ---------- shared helpers ----------

/// Non-blank lines that are not `#` comments, trimmed, with their 1-based numbers.
fn conf_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// The first word and the rest (trimmed).
fn split_word(line: &str) -> (&str, &str) {
    match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    }
}

/// `key = value` / `key=value` (the value may be empty).
fn split_eq(line: &str) -> Option<(&str, &str)> {
    line.split_once('=').map(|(k, v)| (k.trim(), v.trim()))
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(s)
}

fn yes(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "on" | "yes" | "true" | "1" | ""
    )
}

fn no(v: &str) -> bool {
    !yes(v)
}

/// The first non-blank line of a small file.
fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

fn port_of(s: &str) -> std::result::Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("bad port {:?}", s.trim())),
    }
}

/// `[host]:port`, `[host]`, `host:port`, `host`, or a bare IPv6 address.
fn host_port(s: &str) -> std::result::Result<(String, Option<u16>), String> {
    let s = s.trim();
    if let Some(r) = s.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {s:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(port_of(p)?),
            None if after.is_empty() => None,
            None => return Err(format!("junk after ']' in {s:?}")),
        };
        return Ok((h.to_string(), port));
    }
    match s.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h.to_string(), Some(port_of(p)?))),
        _ => Ok((s.to_string(), None)),
    }
}

/// A SHA-256 fingerprint (hex, colons allowed) as relayq's pin_sha256, if it is one.
fn sha256_pin(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// A CA file, unless it is the system bundle (which relayq trusts anyway).
fn ca_file(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty() && !SYSTEM_CA.contains(&s)).then(|| s.to_string())
}

/// The last value set for `key` (later lines win, as in the tools).
fn last(kv: &[(String, String)], key: &str) -> Option<String> {
    kv.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn set(slot: &mut Sourced, value: &str, from: &str) {
    let v = value.trim();
    if !v.is_empty() {
        *slot = Some((v.to_string(), from.to_string()));
    }
}

/// The mailname (first line of /etc/mailname) as a domain, when it has a dot.
fn mailname(src: &Sources, path: &str) -> Option<String> {
    (src.read)(path)
        .as_deref()
        .and_then(first_line)
        .filter(|m| m.contains('.'))
}

/// The external address root's mail goes to in an aliases(5) file, if any.
fn root_alias(text: &str) -> Option<String> {
    let mut logical = String::new();
    let mut found = None;
    for line in text.lines().chain(std::iter::once("")) {
        if line.starts_with([' ', '\t']) && !logical.is_empty() {
            logical.push_str(line);
            continue;
        }
        if let Some((name, targets)) = logical.split_once(':')
            && name.trim().eq_ignore_ascii_case("root")
        {
            found = targets
                .split(',')
                .map(|t| unquote(t.trim()))
                .find(|t| t.contains('@') && crate::address::is_valid_mailbox(t))
                .map(str::to_string);
        }
        logical = if line.trim_start().starts_with('#') {
            String::new()
        } else {
            line.to_string()
        };
    }
    found
}

/// Split a line by POSIX shell rules (quotes and backslashes), as nullmailer reads remotes.
fn shell_words(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(x) => cur.push(x),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

// ---------- nullmailer ----------

/// /etc/nullmailer: `remotes` (one relay a line: `host [protocol] [--]option[=value]...`),
/// `adminaddr`, `allmailfrom`, `defaulthost`, `me`, `defaultdomain`, /etc/mailname.
pub fn nullmailer(src: &Sources) -> std::result::Result<Imported, String> {
    let mut imp = Imported::default();
    for (n, line) in conf_lines(src.main) {
        let origin = format!("remotes line {n}");
        let words = shell_words(line).map_err(|e| format!("{origin}: {e}"))?;
        let Some((host, opts)) = words.split_first() else {
            continue;
        };
        let (proto, opts) = match opts.split_first() {
            Some((p, rest)) if !p.starts_with('-') && !p.contains('=') => (p.as_str(), rest),
            _ => ("smtp", opts),
        };
        if proto != "smtp" {
            imp.skip(
                &origin,
                &format!("protocol {proto}: relayq speaks SMTP only; this relay is skipped"),
            );
            continue;
        }
        let mut r = RelaySpec::new(&origin, host, None);
        let mut starttls = false;
        for o in opts {
            let o = o.trim_start_matches('-');
            let (k, v) = o.split_once('=').unwrap_or((o, ""));
            match k {
                "port" => r.port = Some(port_of(v).map_err(|e| format!("{origin}: {e}"))?),
                "user" => r.username = Some(v.to_string()),
                "pass" => r.password = Some(v.to_string()),
                "tls" | "ssl" => r.wire = Wire::Implicit,
                "starttls" => starttls = true,
                "x509cafile" => r.ca_file = ca_file(v),
                "auth-login" => r.auth = Some("login"),
                "insecure" => imp.skip(format!("{origin}: --insecure"), WHY_CERTCHECK),
                "tls-anon-auth" => imp.skip(format!("{origin}: --tls-anon-auth"), WHY_CERTCHECK),
                "x509certfile" | "x509keyfile" => {
                    imp.skip(format!("{origin}: --{k}"), WHY_CLIENT_CERT)
                }
                "source" => imp.skip(
                    format!("{origin}: --source"),
                    "relayq does not bind a source address",
                ),
                _ => imp.skip(format!("{origin}: --{k}"), WHY_NONE),
            }
        }
        if starttls && r.wire != Wire::Implicit {
            r.wire = Wire::StartTls;
        }
        if r.port.is_none() && r.wire == Wire::Implicit {
            r.port = Some(465);
        }
        r.port.get_or_insert(25);
        imp.relays.push(r);
    }
    let file = |name: &str| (src.read)(name).as_deref().and_then(first_line);
    if let Some(a) = file("adminaddr") {
        let mut list = a.split(',').map(str::trim).filter(|s| !s.is_empty());
        if let Some(first) = list.next() {
            set(&mut imp.admin, first, "adminaddr");
        }
        let rest: Vec<&str> = list.collect();
        if !rest.is_empty() {
            imp.skip(
                format!("adminaddr: {}", rest.join(", ")),
                "relayq sends local mail to one admin address; add the others in /etc/aliases (root: a, b)",
            );
        }
    }
    if let Some(a) = file("allmailfrom") {
        set(&mut imp.sender, &a, "allmailfrom");
    }
    for name in ["defaulthost", "me", "/etc/mailname", "defaultdomain"] {
        if let Some(d) = file(name).filter(|d| d.contains('.')) {
            set(&mut imp.domain, &d, name.trim_start_matches("/etc/"));
            break;
        }
    }
    for name in [
        "idhost",
        "helohost",
        "pausetime",
        "maxpause",
        "queuelifetime",
        "sendtimeout",
    ] {
        if file(name).is_some() {
            imp.skip(
                name,
                "not carried over: relayq has its own retry schedule ([queue]) and uses the FQDN (or ehlo_name)",
            );
        }
    }
    Ok(imp)
}

// ---------- msmtp ----------

/// msmtprc: `defaults`, `account NAME [: PARENT...]`, `account default : NAME`, then
/// `key value` lines. The account used is `default` (as msmtp-mta does).
pub fn msmtp(src: &Sources) -> std::result::Result<Imported, String> {
    type Settings = Vec<(usize, String, String)>;
    let mut defaults: Settings = Vec::new();
    let mut accounts: Vec<(String, Settings)> = Vec::new();
    let mut default_alias: Option<String> = None;
    let mut in_defaults = false;
    for (n, line) in conf_lines(src.main) {
        let (k, v) = split_word(line);
        let v = unquote(v).to_string();
        match k {
            "defaults" => in_defaults = true,
            "account" => {
                in_defaults = false;
                let (name, parents) = match v.split_once(':') {
                    Some((a, b)) => (a.trim().to_string(), b.trim().to_string()),
                    None => (v.trim().to_string(), String::new()),
                };
                if name.is_empty() {
                    return Err(format!("line {n}: account without a name"));
                }
                let mut s = defaults.clone();
                for p in parents.split([',', ' ']).filter(|p| !p.is_empty()) {
                    let inherited = accounts
                        .iter()
                        .find(|(a, _)| a == p)
                        .map(|(_, s)| s.clone())
                        .ok_or_else(|| format!("line {n}: account {p:?} is not defined above"))?;
                    s.extend(inherited);
                }
                if name == "default" && !parents.is_empty() && !parents.contains(',') {
                    default_alias = Some(parents.clone());
                }
                accounts.push((name, s));
            }
            _ if in_defaults => defaults.push((n, k.to_string(), v)),
            _ => match accounts.last_mut() {
                Some((_, s)) => s.push((n, k.to_string(), v)),
                None => defaults.push((n, k.to_string(), v)),
            },
        }
    }
    let mut imp = Imported::default();
    let chosen = accounts
        .iter()
        .position(|(a, _)| a == "default")
        .or_else(|| (accounts.len() == 1).then_some(0))
        .ok_or_else(|| {
            if accounts.is_empty() {
                "no account defined".to_string()
            } else {
                "no account named \"default\" (msmtp as sendmail uses it): add `account default : NAME`".to_string()
            }
        })?;
    let (name, settings) = &accounts[chosen];
    let label = match &default_alias {
        Some(a) if name == "default" => format!("account {a}"),
        _ => format!("account {name}"),
    };
    for (a, _) in &accounts {
        if a != name && Some(a) != default_alias.as_ref() {
            imp.skip(
                format!("account {a}"),
                "relayq relays through one account (and [[fallback_relay]]s); only the default account is imported",
            );
        }
    }
    let get = |key: &str| {
        settings
            .iter()
            .rev()
            .find(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.clone())
    };
    let host = get("host").ok_or_else(|| format!("{label}: no host"))?;
    let mut r = RelaySpec::new(&label, &host, None);
    if let Some(p) = get("port") {
        r.port = Some(port_of(&p).map_err(|e| format!("{label}: {e}"))?);
    }
    let tls = get("tls").is_some_and(|v| yes(&v));
    let starttls = get("tls_starttls").is_none_or(|v| yes(&v));
    r.wire = match (tls, starttls) {
        (false, _) => Wire::Plain,
        (true, true) => Wire::StartTls,
        (true, false) => Wire::Implicit,
    };
    r.port
        .get_or_insert(if r.wire == Wire::Implicit { 465 } else { 25 });
    r.username = get("user");
    r.password = get("password");
    r.password_command = get("passwordeval");
    r.ca_file = get("tls_trust_file").and_then(|f| ca_file(&f));
    r.ehlo_name = get("domain").filter(|d| d != "localhost");
    if let Some(fp) = get("tls_fingerprint") {
        r.pin_sha256 = sha256_pin(&fp);
        if r.pin_sha256.is_none() {
            imp.skip(
                "tls_fingerprint",
                "only a SHA-256 fingerprint can become pin_sha256",
            );
        }
    }
    match get("auth")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("on") => {}
        Some("off") => r.auth = Some("none"),
        Some(m @ ("plain" | "login" | "xoauth2")) => {
            r.auth = Some(match m {
                "plain" => "plain",
                "login" => "login",
                _ => "xoauth2",
            })
        }
        Some(m) => imp.skip(format!("auth {m}"), WHY_AUTH),
    }
    if get("tls_certcheck").is_some_and(|v| no(&v)) {
        imp.skip("tls_certcheck off", WHY_CERTCHECK);
    }
    if let Some(f) = get("from") {
        if let Some(d) = f.strip_prefix("%U@").filter(|d| !d.contains('%')) {
            set(&mut imp.domain, d, &format!("{label} from {f}"));
            imp.skip(
                format!("from {f}"),
                "relayq has one sender for local accounts: set address.sender (the domain is carried over as address.domain)",
            );
        } else if f.contains('%') {
            imp.skip(
                format!("from {f}"),
                "patterns (%U, %H, %C, %M) are not supported: set address.sender to the one sender the relay accepts",
            );
        } else {
            set(&mut imp.sender, &f, &format!("{label} from"));
        }
    }
    if let Some(a) = get("aliases") {
        set(&mut imp.aliases, &a, &format!("{label} aliases"));
    }
    if let Some(d) = get("maildomain") {
        set(&mut imp.domain, &d, &format!("{label} maildomain"));
    }
    const USED: &[&str] = &[
        "host",
        "port",
        "tls",
        "tls_starttls",
        "user",
        "password",
        "passwordeval",
        "tls_trust_file",
        "domain",
        "tls_fingerprint",
        "auth",
        "tls_certcheck",
        "from",
        "aliases",
        "maildomain",
    ];
    let mut seen: Vec<&str> = Vec::new();
    for (_, k, v) in settings.iter() {
        if USED.contains(&k.as_str()) || seen.contains(&k.as_str()) {
            continue;
        }
        seen.push(k);
        let why = match k.as_str() {
            "set_from_header" | "allow_from_override" | "auto_from" | "undisclosed_recipients" => {
                WHY_FROM
            }
            "syslog" | "logfile" | "logfile_time_format" => {
                "relayq logs to syslog (facility mail), see [log]"
            }
            "tls_cert_file" | "tls_key_file" => WHY_CLIENT_CERT,
            "timeout" => {
                "relayq has connect_timeout, command_timeout and data_timeout (defaults kept)"
            }
            "protocol" if v == "smtp" => continue,
            "tls_min_dh_prime_bits" | "tls_priorities" | "tls_host_override" | "tls_crl_file" => {
                "relayq uses rustls' defaults (TLS 1.2+)"
            }
            _ => WHY_NONE,
        };
        imp.skip(k, why);
    }
    imp.relays.push(r);
    Ok(imp)
}

// ---------- ssmtp ----------

/// ssmtp.conf (`Key=Value`, keys case-insensitive) and revaliases (`local:from:mailhub`).
pub fn ssmtp(src: &Sources) -> std::result::Result<Imported, String> {
    let mut imp = Imported::default();
    let mut kv: Vec<(String, String)> = Vec::new();
    for (n, line) in conf_lines(src.main) {
        let (k, v) = split_eq(line).ok_or_else(|| format!("ssmtp.conf line {n}: no '='"))?;
        kv.push((k.to_ascii_lowercase(), v.to_string()));
    }
    let get = |key: &str| last(&kv, key);
    let hub = get("mailhub").ok_or("ssmtp.conf: no mailhub")?;
    let (host, port) = host_port(&hub).map_err(|e| format!("mailhub: {e}"))?;
    let mut r = RelaySpec::new("mailhub", &host, port.or(Some(25)));
    let tls = get("usetls").is_some_and(|v| yes(&v));
    let starttls = get("usestarttls").is_some_and(|v| yes(&v));
    r.wire = match (tls, starttls) {
        (_, true) => Wire::StartTls,
        (true, false) => Wire::Implicit,
        (false, false) => Wire::Plain,
    };
    r.username = get("authuser").filter(|u| !u.is_empty());
    r.password = get("authpass");
    r.ca_file = get("tls_ca_file").and_then(|f| ca_file(&f));
    match get("authmethod").map(|m| m.to_ascii_lowercase()) {
        None => {}
        Some(m) if m.is_empty() || m == "login" || m == "plain" => {}
        Some(m) => imp.skip(format!("AuthMethod={m}"), WHY_AUTH),
    }
    if let Some(root) = get("root") {
        if root.contains('@') {
            set(&mut imp.admin, &root, "root");
        } else if !root.is_empty() {
            imp.skip(
                format!("root={root}"),
                "a local account: relayq sends root's mail to address.admin, an external address; set it",
            );
        }
    }
    if let Some(d) = get("rewritedomain") {
        set(&mut imp.domain, &d, "rewriteDomain");
    }
    if let Some(h) = get("hostname") {
        r.ehlo_name = Some(h).filter(|h| h.contains('.'));
    }
    for (k, v) in &kv {
        let why = match k.as_str() {
            "mailhub" | "usetls" | "usestarttls" | "authuser" | "authpass" | "tls_ca_file"
            | "authmethod" | "root" | "rewritedomain" | "hostname" => continue,
            "fromlineoverride" => WHY_FROM,
            "tlscert" | "tlskey" => WHY_CLIENT_CERT,
            "tls_ca_dir" => "use ca_file with one PEM bundle instead of a directory",
            "debug" => "use relayq test for a step-by-step check",
            _ => WHY_NONE,
        };
        imp.skip(
            format!("{k}={}", if k.contains("pass") { "…" } else { v }),
            why,
        );
    }
    if let Some(text) = (src.read)("revaliases") {
        for (n, line) in conf_lines(&text) {
            let mut parts = line.splitn(3, ':');
            let (local, from) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if local == "root" && imp.sender.is_none() && crate::address::is_valid_mailbox(from) {
                set(&mut imp.sender, from, "revaliases root");
            } else {
                imp.skip(
                    format!("revaliases line {n} ({local})"),
                    "relayq has one sender for all local accounts (address.sender); per-account senders and mailhubs are not carried over",
                );
            }
        }
    }
    imp.relays.push(r);
    Ok(imp)
}

// ---------- dma ----------

/// dma.conf (`KEY value`), the AUTHPATH file (`user|host:password`), MAILNAME (a name or a
/// file).
pub fn dma(src: &Sources) -> std::result::Result<Imported, String> {
    let mut imp = Imported::default();
    let mut kv: Vec<(String, String)> = Vec::new();
    for (_, line) in conf_lines(src.main) {
        let (k, v) = split_word(line);
        kv.push((k.to_ascii_uppercase(), v.to_string()));
    }
    let get = |key: &str| last(&kv, key);
    let has = |key: &str| get(key).is_some();
    let host = get("SMARTHOST")
        .filter(|h| !h.is_empty())
        .ok_or("dma.conf: no SMARTHOST (dma delivers directly; relayq needs a relay)")?;
    let port = match get("PORT") {
        Some(p) => port_of(&p).map_err(|e| format!("PORT: {e}"))?,
        None => 25,
    };
    let mut r = RelaySpec::new("SMARTHOST", &host, Some(port));
    r.wire = match (
        has("SECURETRANSFER"),
        has("STARTTLS"),
        has("OPPORTUNISTIC_TLS"),
    ) {
        (false, _, _) => Wire::Plain,
        (true, false, _) => Wire::Implicit,
        (true, true, false) => Wire::StartTls,
        (true, true, true) => Wire::Opportunistic,
    };
    if let Some(fp) = get("FINGERPRINT") {
        r.pin_sha256 = sha256_pin(&fp);
    }
    if let Some(path) = get("AUTHPATH") {
        match (src.read)(&path) {
            Some(text) => {
                for (n, line) in conf_lines(&text) {
                    let entry = line
                        .split_once('|')
                        .and_then(|(u, rest)| rest.split_once(':').map(|(h, p)| (u, h, p)));
                    match entry {
                        Some((u, h, p)) if h.eq_ignore_ascii_case(&host) => {
                            r.username = Some(u.to_string());
                            r.password = Some(p.to_string());
                        }
                        Some((_, h, _)) => imp.skip(
                            format!("{path} line {n} (host {h})"),
                            "not for the SMARTHOST",
                        ),
                        None => imp.skip(
                            format!("{path} line {n}"),
                            "not in the form user|smarthost:password",
                        ),
                    }
                }
                if r.username.is_none() {
                    imp.skip(&path, &format!("has no entry for {host}: no credentials"));
                }
            }
            None => imp.skip(&path, "AUTHPATH file could not be read: no credentials"),
        }
    }
    if let Some(m) = get("MASQUERADE") {
        match m.split_once('@') {
            Some((u, h)) if !u.is_empty() && !h.is_empty() => {
                set(&mut imp.sender, &m, "MASQUERADE")
            }
            Some(("", h)) if !h.is_empty() => set(&mut imp.domain, h, "MASQUERADE"),
            None => set(&mut imp.domain, &m, "MASQUERADE"),
            _ => imp.skip(
                format!("MASQUERADE {m}"),
                "a user without a host: set address.sender to a full address",
            ),
        }
    }
    if imp.domain.is_none()
        && let Some(m) = get("MAILNAME")
    {
        let name = if m.starts_with('/') {
            mailname(src, &m)
        } else {
            Some(m.clone()).filter(|m| m.contains('.'))
        };
        if let Some(n) = name {
            set(&mut imp.domain, &n, &format!("MAILNAME {m}"));
        }
    }
    if let Some(a) = get("ALIASES").filter(|a| a != "/etc/aliases") {
        set(&mut imp.aliases, &a, "ALIASES");
    }
    for (k, v) in &kv {
        let why = match k.as_str() {
            "SMARTHOST" | "PORT" | "SECURETRANSFER" | "STARTTLS" | "AUTHPATH" | "MASQUERADE"
            | "MAILNAME" | "ALIASES" | "NULLCLIENT" | "VERIFYCERT" | "SECURE" => continue,
            "FINGERPRINT" if r.pin_sha256.is_some() => continue,
            "FINGERPRINT" => "not a SHA-256 fingerprint: not carried over",
            "OPPORTUNISTIC_TLS" => {
                "relayq requires TLS: it never falls back to plaintext when STARTTLS fails"
            }
            "CERTFILE" => WHY_CLIENT_CERT,
            "INSECURE" => "relayq authenticates only over TLS",
            "DEFER" => "to hold mail, run relayq flush from cron instead of the daemon",
            "FULLBOUNCE" => "relayq's bounces include the original header only",
            "SPOOLDIR" => {
                "relayq keeps its own spool (spool_dir); flush dma's queue first (dma -q)"
            }
            _ => WHY_NONE,
        };
        imp.skip(format!("{k} {v}").trim_end(), why);
    }
    imp.relays.push(r);
    Ok(imp)
}

// ---------- postfix ----------

/// main.cf parameters (`name = value`, continuation lines start with white space).
fn postfix_params(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(t);
            }
            continue;
        }
        if let Some((k, v)) = split_eq(t) {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

/// Expand `$name` / `${name}` / `$(name)` from the parameters (bounded depth).
/// A Postfix time value ("4h", "90m", "5d", "1w", or a bare number in `unit`) in seconds.
fn postfix_time(v: &str, unit: u64) -> Option<u64> {
    let v = v.trim();
    if let Some(w) = v.strip_suffix('w') {
        return w.parse::<u64>().ok()?.checked_mul(7 * 86400);
    }
    if v.ends_with(|c: char| c.is_ascii_digit()) {
        return v.parse::<u64>().ok()?.checked_mul(unit);
    }
    crate::config::parse_duration(v).map(|d| d.as_secs())
}

/// Seconds as relayq writes a duration: the largest unit that divides it ("4h", "90m").
fn duration_text(secs: u64) -> String {
    match secs {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn postfix_expand(v: &str, params: &[(String, String)], depth: usize) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = match after.chars().next() {
            Some(open @ ('{' | '(')) => {
                let close = if open == '{' { '}' } else { ')' };
                match after[1..].find(close) {
                    Some(j) => (&after[1..1 + j], &after[j + 2..]),
                    None => (after, ""),
                }
            }
            _ => {
                let j = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..j], &after[j..])
            }
        };
        let value = params.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
        match value {
            Some(val) if depth < 8 => out.push_str(&postfix_expand(val, params, depth + 1)),
            _ => {
                out.push('$');
                out.push_str(name);
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// main.cf with relayhost, SASL (the plain text source of smtp_sasl_password_maps), TLS
/// level, wrapper mode, myorigin, and root's alias in /etc/aliases.
pub fn postfix(src: &Sources) -> std::result::Result<Imported, String> {
    let mut imp = Imported::default();
    let params = postfix_params(src.main);
    let get = |k: &str| {
        params
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| postfix_expand(v, &params, 0))
            .filter(|v| !v.is_empty())
    };
    let hosts = get("relayhost")
        .ok_or("main.cf: relayhost is empty (postfix delivers directly; relayq needs a relay)")?;
    let fallback = get("smtp_fallback_relay").unwrap_or_default();
    let level = get("smtp_tls_security_level").unwrap_or_else(|| {
        match (
            get("smtp_enforce_tls").is_some_and(|v| yes(&v)),
            get("smtp_use_tls").is_some_and(|v| yes(&v)),
        ) {
            (true, _) => "encrypt".into(),
            (false, true) => "may".into(),
            _ => "none".into(),
        }
    });
    let wrapper = get("smtp_tls_wrappermode").is_some_and(|v| yes(&v));
    let sasl = get("smtp_sasl_auth_enable").is_some_and(|v| yes(&v));
    let secrets: Vec<(String, String)> = match get("smtp_sasl_password_maps") {
        Some(maps) if sasl => {
            let mut v = Vec::new();
            for m in maps.split([',', ' ']).filter(|m| !m.is_empty()) {
                let path = m.split_once(':').map_or(m, |(_, p)| p);
                match (src.read)(path) {
                    Some(text) => v.extend(conf_lines(&text).map(|(_, l)| {
                        let (k, val) = split_word(l);
                        (k.to_string(), val.to_string())
                    })),
                    None => imp.skip(
                        m,
                        "its source file could not be read: no credentials (relayq needs the plain text file, not the .db)",
                    ),
                }
            }
            v
        }
        _ => Vec::new(),
    };
    let all = hosts.split([',', ' ']).chain(fallback.split([',', ' ']));
    for (i, h) in all.filter(|h| !h.is_empty()).enumerate() {
        let origin = if i == 0 { "relayhost" } else { "relay list" };
        let (host, port) = host_port(h).map_err(|e| format!("{origin}: {e}"))?;
        let mut r = RelaySpec::new(origin, &host, port.or(Some(25)));
        r.wire = match (wrapper, level.as_str()) {
            (true, _) => Wire::Implicit,
            (false, "none") => Wire::Plain,
            (false, "may") => Wire::Opportunistic,
            _ => Wire::StartTls,
        };
        if r.port == Some(465) && r.wire != Wire::Implicit {
            r.wire = Wire::Implicit;
        }
        let bare = host.clone();
        let keys = [h.to_string(), format!("[{bare}]"), bare.clone()];
        if let Some((_, cred)) = keys
            .iter()
            .find_map(|k| secrets.iter().find(|(sk, _)| sk == k))
        {
            let (u, p) = cred.split_once(':').unwrap_or((cred.as_str(), ""));
            r.username = Some(u.to_string());
            r.password = Some(p.to_string());
        } else if sasl {
            imp.skip(
                format!("{origin} {h}"),
                "no entry in smtp_sasl_password_maps: no credentials",
            );
        }
        r.ca_file = get("smtp_tls_CAfile").and_then(|f| ca_file(&f));
        r.ehlo_name = get("smtp_helo_name").filter(|n| !n.contains('$'));
        imp.relays.push(r);
    }
    if level == "encrypt" {
        imp.skip(
            "smtp_tls_security_level = encrypt",
            "postfix did not check the certificate at this level; relayq always does (set ca_file for a private CA)",
        );
    } else if level == "dane" || level == "dane-only" {
        imp.skip(
            format!("smtp_tls_security_level = {level}"),
            "relayq verifies the certificate against the CA roots, not DANE",
        );
    }
    if let Some(o) = get("myorigin") {
        let d = if o.starts_with('/') {
            mailname(src, &o)
        } else {
            Some(o.clone()).filter(|d| d.contains('.') && !d.contains('$'))
        };
        if let Some(d) = d {
            set(&mut imp.domain, &d, &format!("myorigin = {o}"));
        }
    }
    if imp.domain.is_none()
        && let Some(d) = get("mydomain").filter(|d| d.contains('.') && !d.contains('$'))
    {
        set(&mut imp.domain, &d, "mydomain");
    }
    if let Some(a) = (src.read)("/etc/aliases").as_deref().and_then(root_alias) {
        set(&mut imp.admin, &a, "/etc/aliases root");
    }
    // Delay warnings (off unless set; a bare number is hours) and the queue lifetime (a
    // bare number is days; 0 = try once, which relayq does not do).
    if let Some(v) = get("delay_warning_time") {
        match postfix_time(&v, 3600) {
            Some(0) => {}
            Some(t) => set(
                &mut imp.warn_after,
                &duration_text(t),
                &format!("delay_warning_time = {v}"),
            ),
            None => imp.skip(
                format!("delay_warning_time = {v}"),
                "not a time: not carried over",
            ),
        }
    }
    if let Some(v) = get("maximal_queue_lifetime") {
        match postfix_time(&v, 86400) {
            Some(0) | None => imp.skip(
                format!("maximal_queue_lifetime = {v}"),
                "relayq needs a lifetime above 0 (it retries until then): not carried over",
            ),
            Some(t) => set(
                &mut imp.lifetime,
                &duration_text(t),
                &format!("maximal_queue_lifetime = {v}"),
            ),
        }
    }
    for (k, why) in [
        ("sender_canonical_maps", WHY_FROM),
        ("smtp_generic_maps", WHY_FROM),
        ("canonical_maps", WHY_FROM),
        (
            "sender_dependent_relayhost_maps",
            "relayq has one relay for all senders",
        ),
        ("smtp_sasl_mechanism_filter", WHY_AUTH),
        ("transport_maps", "relayq sends all mail through the relay"),
        ("smtp_tls_cert_file", WHY_CLIENT_CERT),
        (
            "smtp_tls_fingerprint_digest",
            "set pin_sha256 (SHA-256 of the certificate)",
        ),
    ] {
        if get(k).is_some() {
            imp.skip(k, why);
        }
    }
    Ok(imp)
}

// ---------- rendering ----------

fn quote(s: &str) -> String {
    crate::conffile::toml_str(s)
}

/// The URL (and allow_plaintext) for a relay, and the TLS notes.
fn relay_url(r: &RelaySpec, notes: &mut Vec<String>) -> (String, bool) {
    let port = r.port.unwrap_or(25);
    let host = if r.host.contains(':') {
        format!("[{}]", r.host)
    } else {
        r.host.clone()
    };
    let mut plaintext = false;
    let scheme = match r.wire {
        Wire::Implicit => "smtps",
        _ if port == 465 => "smtps",
        Wire::StartTls => "smtp",
        Wire::Opportunistic => {
            notes.push(format!(
                "{}: opportunistic TLS: relayq requires STARTTLS and never falls back to plaintext",
                r.origin
            ));
            "smtp"
        }
        Wire::Plain if crate::provider::is_loopback(&r.host) => {
            plaintext = true;
            notes.push(format!(
                "{}: no TLS: kept only because {} is a loopback relay (allow_plaintext = true)",
                r.origin, r.host
            ));
            "smtp"
        }
        Wire::Plain => {
            notes.push(format!(
                "{}: no TLS: relayq requires TLS (STARTTLS on smtp://, implicit on smtps://); plaintext is allowed only to a loopback relay. Check that {} offers STARTTLS with `relayq test`",
                r.origin, r.host
            ));
            "smtp"
        }
    };
    (format!("{scheme}://{host}:{port}"), plaintext)
}

/// A preset whose URL is exactly this one.
fn preset_for(url: &str) -> Option<String> {
    if let Some(region) = url
        .strip_prefix("smtps://email-smtp.")
        .and_then(|r| r.strip_suffix(".amazonaws.com:465"))
    {
        let name = format!("ses:{region}");
        return (crate::provider::preset_url(&name).as_deref() == Some(url)).then_some(name);
    }
    crate::provider::PRESETS
        .iter()
        .find(|p| p.url == url)
        .map(|p| p.name.to_string())
}

/// Turn what a parser found into relayq's config text, the secret, and the report lines.
/// `secret_path` is where the secret will be written (the config names it).
pub fn render(
    imp: &Imported,
    tool: Tool,
    source: &str,
    secret_path: &Path,
) -> std::result::Result<Rendered, String> {
    let mut notes = imp.notes.clone();
    let mut carried = Vec::new();
    let mut toml = format!(
        "# Written by `relayq import --from {}` from {source}; see relayq.toml(5).\n",
        tool.name()
    );
    let mut secret: Option<String> = None;
    let mut n_relays = 0;
    for r in &imp.relays {
        let (url, plaintext) = relay_url(r, &mut notes);
        if let Err(e) = crate::provider::parse_url(&url, plaintext) {
            if n_relays == 0 {
                return Err(format!("{}: {e}", r.origin));
            }
            notes.push(format!("{}: {e}: this relay is skipped", r.origin));
            continue;
        }
        let (table, key) = if n_relays == 0 {
            ("[relay]".to_string(), "relay".to_string())
        } else {
            (
                "[[fallback_relay]]".to_string(),
                format!("fallback_relay[{}]", n_relays - 1),
            )
        };
        n_relays += 1;
        toml.push_str(&format!("\n{table}\n"));
        let mut put = |k: &str, v: String, shown: Option<&str>| {
            toml.push_str(&format!("{k} = {v}\n"));
            let shown = shown.map_or(v, str::to_string);
            carried.push(format!("{key}.{k} = {shown}   (from {})", r.origin));
        };
        match preset_for(&url) {
            Some(p) => put(
                "provider",
                quote(&p),
                Some(&format!("{} ({url})", quote(&p))),
            ),
            None => put("url", quote(&url), None),
        }
        if plaintext {
            put("allow_plaintext", "true".into(), None);
        }
        if let Some(u) = &r.username {
            put("username", quote(u), None);
        }
        if let Some(c) = &r.password_command {
            put("password_command", quote(c), None);
        } else if let Some(p) = r.password.as_deref().filter(|p| !p.is_empty()) {
            if p.contains(['\n', '\r']) {
                notes.push(format!(
                    "{}: the password has a line break: relayq reads the first line of password_file; not carried over",
                    r.origin
                ));
            } else if secret.is_none() || secret.as_deref() == Some(p) {
                secret = Some(p.to_string());
                let sp = secret_path.display().to_string();
                put(
                    "password_file",
                    quote(&sp),
                    Some(&format!("{} (the password, not shown)", quote(&sp))),
                );
            } else {
                notes.push(format!(
                    "{}: its password differs from the first relay's: relayq import writes one secrets file; put this one in a file of its own (mode 600) and set password_file in {key}",
                    r.origin
                ));
            }
        } else if r.username.is_some() {
            notes.push(format!(
                "{}: a user name but no password: set password_file or password_command",
                r.origin
            ));
        }
        if let Some(a) = r.auth {
            put("auth", quote(a), None);
        }
        if let Some(ca) = &r.ca_file {
            put("ca_file", quote(ca), None);
            put("ca_only", "true".into(), None);
        }
        if let Some(pin) = &r.pin_sha256 {
            put("pin_sha256", quote(pin), None);
        }
        if let Some(e) = r
            .ehlo_name
            .as_deref()
            .filter(|e| crate::address::is_valid_domain(e))
        {
            put("ehlo_name", quote(e), None);
        }
    }
    if n_relays == 0 {
        return Err("no usable relay found".into());
    }
    let mut address = String::new();
    type Check<'a> = (&'static str, &'a Sourced, fn(&str) -> bool);
    let checks: [Check; 4] = [
        ("admin", &imp.admin, crate::address::is_valid_mailbox),
        ("sender", &imp.sender, crate::address::is_valid_mailbox),
        ("domain", &imp.domain, crate::address::is_valid_domain),
        ("aliases", &imp.aliases, |p| p.starts_with('/')),
    ];
    for (k, slot, ok) in checks {
        let Some((v, from)) = slot else { continue };
        if ok(v) {
            address.push_str(&format!("{k} = {}\n", quote(v)));
            carried.push(format!("address.{k} = {}   (from {from})", quote(v)));
        } else {
            notes.push(format!(
                "{from} {}: not a valid address.{k}: not carried over",
                quote(v)
            ));
        }
    }
    let mut queue = String::new();
    for (k, slot) in [("warn_after", &imp.warn_after), ("lifetime", &imp.lifetime)] {
        if let Some((v, from)) = slot {
            queue.push_str(&format!("{k} = {}\n", quote(v)));
            carried.push(format!("queue.{k} = {}   (from {from})", quote(v)));
        }
    }
    if !queue.is_empty() {
        toml.push_str(&format!("\n[queue]\n{queue}"));
    }
    if imp.admin.is_none() {
        notes.push("no admin address found: set address.admin, where mail for root and other local accounts goes".into());
    }
    if !address.is_empty() {
        toml.push_str(&format!("\n[address]\n{address}"));
    }
    Ok(Rendered {
        toml,
        secret,
        carried,
        notes,
    })
}

// ---------- the command ----------

struct Args {
    tool: Tool,
    path: Option<PathBuf>,
    dry_run: bool,
    force: bool,
}

fn parse_args(args: Vec<OsString>) -> Result<Option<Args>> {
    let usage = |m: &str| Error::usage(format!("{m}\n{USAGE}"));
    let mut tool = None;
    let mut path = None;
    let (mut dry_run, mut force) = (false, false);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy().into_owned();
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().map(|v| v.to_string_lossy().into_owned()))
                .ok_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--from" => {
                let v = value()?;
                tool =
                    Some(Tool::from_name(&v).ok_or_else(|| usage(&format!("unknown tool {v:?}")))?);
            }
            "--path" => path = Some(PathBuf::from(value()?)),
            "--dry-run" | "-n" => dry_run = true,
            "--force" | "-f" => force = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            _ => return Err(usage(&format!("unexpected argument {a:?}"))),
        }
    }
    let tool = tool.ok_or_else(|| usage("--from is required"))?;
    Ok(Some(Args {
        tool,
        path,
        dry_run,
        force,
    }))
}

/// `relayq [-C out.toml] import ...`: exit 0 ok, 64 usage (or the config exists and no
/// --force), 65 the source cannot be parsed or has no usable relay, 66 the source config is
/// missing, 77 it cannot be read (permission), 75 writing failed.
pub fn run(config_flag: Option<&Path>, args: Vec<OsString>) -> Result<i32> {
    let Some(a) = parse_args(args)? else {
        return Ok(0);
    };
    let given = a.path.is_some();
    let path = a
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(a.tool.default_path()));
    let main_path = if path.is_dir() {
        path.join(a.tool.main_file())
    } else {
        path.clone()
    };
    let dir = main_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let main = std::fs::read_to_string(&main_path).map_err(|e| {
        let class = match e.kind() {
            std::io::ErrorKind::PermissionDenied => Class::NoPerm,
            _ => Class::NoInput,
        };
        Error::new(
            class,
            format!(
                "no {} configuration to import: {}: {e}",
                a.tool.name(),
                main_path.display()
            ),
        )
    })?;
    // Files the config refers to: bare names beside the main file; with --path, absolute
    // paths are looked up by their name in that directory first.
    let read = |name: &str| -> Option<String> {
        let p = Path::new(name);
        let local = if p.is_absolute() {
            given.then(|| p.file_name().map(|f| dir.join(f))).flatten()
        } else {
            Some(dir.join(p))
        };
        local
            .and_then(|l| std::fs::read_to_string(l).ok())
            .or_else(|| {
                p.is_absolute()
                    .then(|| std::fs::read_to_string(p).ok())
                    .flatten()
            })
    };
    let src = Sources {
        main: &main,
        read: &read,
    };
    let source = if a.tool == Tool::Msmtp {
        main_path.display().to_string()
    } else {
        dir.display().to_string()
    };
    let bad = |e: String| Error::data(format!("{} {source}: {e}", a.tool.name()));
    let imp = a.tool.parse(&src).map_err(bad)?;
    let out = crate::config::choose_path(config_flag);
    let secret_path = crate::conffile::secret_path_for(&out);
    let r = render(&imp, a.tool, &source, &secret_path).map_err(bad)?;
    crate::config::Config::parse(&r.toml, &out)
        .map_err(|e| bad(format!("the imported config does not validate: {}", e.msg)))?;
    println!("relayq import: from {} ({source})", a.tool.name());
    println!("carried over:");
    for c in &r.carried {
        println!("  {c}");
    }
    if r.notes.is_empty() {
        println!("not carried over: nothing");
    } else {
        println!("not carried over:");
        for n in &r.notes {
            println!("  - {n}");
        }
    }
    if a.dry_run {
        println!("\n--dry-run: would write {}:\n", out.display());
        print!("{}", r.toml);
        if r.secret.is_some() {
            println!(
                "\n--dry-run: would write {} (mode 0600, or 0640 root:relayq): <the password, not shown>",
                secret_path.display()
            );
        }
        println!("\nnothing written");
        return Ok(0);
    }
    let secret = r
        .secret
        .as_deref()
        .map(|s| (secret_path.as_path(), s.as_bytes()));
    let w = crate::conffile::write(&out, &r.toml, secret, a.force)?;
    println!("wrote {}", w.config.display());
    if let Some(s) = &w.secret {
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(s).map(|m| m.mode() & 0o777).unwrap_or(0);
        println!("wrote {} (mode {mode:04o}, the password)", s.display());
    }
    println!(
        "next: relayq -C {} test, then switch /usr/sbin/sendmail over (docs/migration.md)",
        out.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_with(tool: Tool, main: &str, files: &[(&str, &str)]) -> Result<Rendered, String> {
        let read = |n: &str| {
            files
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        let imp = tool.parse(&Sources { main, read: &read })?;
        render(&imp, tool, "/src", Path::new("/etc/relayq/password"))
    }

    fn ok(tool: Tool, main: &str, files: &[(&str, &str)]) -> Rendered {
        let r = parse_with(tool, main, files).unwrap();
        crate::config::Config::parse(&r.toml, Path::new("/t.toml")).unwrap();
        r
    }

    #[test]
    fn helpers() {
        assert_eq!(host_port("[a.b]:587").unwrap(), ("a.b".into(), Some(587)));
        assert_eq!(host_port("a.b").unwrap(), ("a.b".into(), None));
        assert_eq!(host_port("fe80::1").unwrap(), ("fe80::1".into(), None));
        assert!(host_port("a.b:x").is_err());
        assert!(host_port("[a.b").is_err());
        assert_eq!(
            shell_words(r#"h smtp pass='a b' user="c\"d" x\ y"#).unwrap(),
            ["h", "smtp", "pass=a b", "user=c\"d", "x y"]
        );
        assert!(shell_words("a 'b").is_err());
        assert_eq!(sha256_pin(&"AB:".repeat(32)), Some("ab".repeat(32)));
        assert_eq!(sha256_pin("abcd"), None);
        assert_eq!(
            root_alias("# x\nroot: admin, ops@example.com\n").as_deref(),
            Some("ops@example.com")
        );
        assert_eq!(root_alias("root: admin\n"), None);
        let p = postfix_params("a = x\nb = $a/${a}\n  y\n#c = 1\n");
        assert_eq!(postfix_expand("$b", &p, 0), "x/x y");
        assert_eq!(
            postfix_expand("$loop", &[("loop".into(), "$loop".into())], 0),
            "$loop"
        );
    }

    #[test]
    fn tls_mapping_and_presets() {
        let r = ok(
            Tool::Nullmailer,
            "smtp.gmail.com smtp --port=465 --user=u --pass=p\n",
            &[],
        );
        assert!(r.toml.contains("provider = \"gmail\""), "{}", r.toml);
        let r = ok(Tool::Nullmailer, "127.0.0.1\n", &[]);
        assert!(r.toml.contains("allow_plaintext = true"), "{}", r.toml);
        let r = ok(
            Tool::Nullmailer,
            "email-smtp.eu-west-1.amazonaws.com smtp --tls --user=AKIA --pass=x\n",
            &[],
        );
        assert!(
            r.toml.contains("provider = \"ses:eu-west-1\""),
            "{}",
            r.toml
        );
        assert_eq!(r.secret.as_deref(), Some("x"));
        assert!(!r.toml.contains("\"x\""));
        let r = ok(
            Tool::Nullmailer,
            "mx.example.com smtp --starttls --port=2525\n",
            &[],
        );
        assert!(r.toml.contains("url = \"smtp://mx.example.com:2525\""));
        assert!(
            r.notes.iter().all(|n| !n.contains("no TLS")),
            "{:?}",
            r.notes
        );
        let r = ok(Tool::Nullmailer, "fe80::1 smtp --tls\n", &[]);
        assert!(r.toml.contains("smtps://[fe80::1]:465"), "{}", r.toml);
        let r = ok(
            Tool::Nullmailer,
            "q.example.com qmqp\nm.example.com smtp --ssl\n",
            &[],
        );
        assert!(r.notes.iter().any(|n| n.contains("qmqp")));
        assert!(r.toml.contains("smtps://m.example.com:465"));
    }

    #[test]
    fn dma_and_postfix_details() {
        let conf = "SMARTHOST mx.example.com\nPORT 587\nSECURETRANSFER\nSTARTTLS\nOPPORTUNISTIC_TLS\nFINGERPRINT ";
        let r = ok(
            Tool::Dma,
            &format!("{conf}{}\nMASQUERADE example.org\n", "A".repeat(64)),
            &[],
        );
        assert!(r.toml.contains("smtp://mx.example.com:587"));
        assert!(
            r.toml
                .contains(&format!("pin_sha256 = \"{}\"", "a".repeat(64)))
        );
        assert!(r.toml.contains("domain = \"example.org\""));
        assert!(r.notes.iter().any(|n| n.contains("never falls back")));
        let main = "relayhost = [mx.example.com]:465, backup.example.com:587\nsmtp_tls_security_level = verify\nsmtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = texthash:/etc/postfix/sasl_passwd\n";
        let r = ok(
            Tool::Postfix,
            main,
            &[(
                "/etc/postfix/sasl_passwd",
                "[mx.example.com]:465 u:pw\nbackup.example.com u:pw\n",
            )],
        );
        assert!(r.toml.contains("smtps://mx.example.com:465"));
        assert!(
            r.toml
                .contains("[[fallback_relay]]\nurl = \"smtp://backup.example.com:587\"")
        );
        assert_eq!(r.toml.matches("password_file").count(), 2, "{}", r.toml);
        assert!(parse_with(Tool::Postfix, "relayhost =\n", &[]).is_err());
        // Queue times: a bare number is hours for delay_warning_time, days for the lifetime.
        for (conf, want, note) in [
            (
                "delay_warning_time = 4\nmaximal_queue_lifetime = 3\n",
                ["warn_after = \"4h\"", "lifetime = \"3d\""],
                None,
            ),
            (
                "delay_warning_time = 90m\nmaximal_queue_lifetime = 1w\n",
                ["warn_after = \"90m\"", "lifetime = \"7d\""],
                None,
            ),
            (
                "delay_warning_time = 0h\nmaximal_queue_lifetime = 0\n",
                ["", ""],
                Some("maximal_queue_lifetime = 0"),
            ),
            (
                "delay_warning_time = soon\n",
                ["", ""],
                Some("delay_warning_time = soon"),
            ),
        ] {
            let r = ok(
                Tool::Postfix,
                &format!("relayhost = [mx.example.com]:587\n{conf}"),
                &[],
            );
            for w in want.iter().filter(|w| !w.is_empty()) {
                assert!(
                    r.toml.contains("[queue]\n") && r.toml.contains(w),
                    "{conf}: {}",
                    r.toml
                );
            }
            if want[0].is_empty() {
                assert!(!r.toml.contains("warn_after"), "{conf}: {}", r.toml);
            }
            if let Some(n) = note {
                assert!(
                    r.notes.iter().any(|x| x.starts_with(n)),
                    "{conf}: {:?}",
                    r.notes
                );
            }
        }
    }

    #[test]
    fn msmtp_accounts() {
        let rc = "account a\nhost a.example.com\nport 587\ntls on\nauth xoauth2\npasswordeval \"oauth2 token\"\naccount b\nhost b.example.com\n";
        let r = ok(Tool::Msmtp, &format!("{rc}account default : a\n"), &[]);
        assert!(r.toml.contains("smtp://a.example.com:587"));
        assert!(r.toml.contains("auth = \"xoauth2\""));
        assert!(r.toml.contains("password_command = \"oauth2 token\""));
        assert!(r.notes.iter().any(|n| n.starts_with("account b:")));
        assert!(
            parse_with(Tool::Msmtp, rc, &[]).is_err(),
            "two accounts, none default"
        );
        assert!(parse_with(Tool::Msmtp, "account x : nope\n", &[]).is_err());
    }

    #[test]
    fn bad_values_are_notes_not_errors() {
        let r = ok(
            Tool::Ssmtp,
            "mailhub=smtp.example.com:465\nroot=not an@address@x\nrewriteDomain=bad domain\n",
            &[],
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("not a valid address.domain")),
            "{:?}",
            r.notes
        );
        assert!(parse_with(Tool::Ssmtp, "mailhub=bad host!\n", &[]).is_err());
        assert!(
            parse_with(Tool::Ssmtp, "mailhub=m.example.com\nno equals sign\n", &[])
                .unwrap_err()
                .contains("line 2")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        // Random input (and random lines of each tool's keywords) never panics, and whatever
        // renders is a valid relayq config.
        #[test]
        fn never_panics(
            lines in proptest::collection::vec(
                prop_oneof![
                    any::<String>(),
                    "(host|port|tls|account|defaults|SMARTHOST|PORT|mailhub=|relayhost =|AuthPass=|SECURETRANSFER)[ =:\\[\\]a-z0-9.@%$'\"]{0,30}",
                ],
                0..12,
            ),
            aux in any::<String>(),
        ) {
            let main = lines.join("\n");
            for tool in Tool::ALL {
                if let Ok(r) = parse_with(tool, &main, &[("/etc/aliases", &aux), ("/etc/mailname", &aux), ("adminaddr", &aux)]) {
                    prop_assert!(crate::config::Config::parse(&r.toml, Path::new("/t.toml")).is_ok(), "{}", r.toml);
                }
            }
        }
    }
}
