//! The configuration file (`/etc/relayq/relayq.toml`, `-C FILE`, `$RELAYQ_CONFIG`): its schema,
//! defaults and validation. Holds no secrets: passwords live in `password_file` or come from
//! `password_command`, read only by the daemon.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEFAULT_PATH: &str = "/etc/relayq/relayq.toml";
const DEFAULT_SPOOL: &str = "/var/spool/relayq";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_spool")]
    pub spool_dir: PathBuf,
    /// Largest message `sendmail` accepts, in bytes (suffixes K, M, G allowed).
    #[serde(default = "default_max_size", deserialize_with = "de_size")]
    pub max_message_size: u64,
    #[serde(default)]
    pub relay: Option<Relay>,
    /// Further relays tried in order when the ones before are unreachable.
    #[serde(default)]
    pub fallback_relay: Vec<Relay>,
    /// Relays chosen by envelope sender (`[[sender_relay]]`): mail from these senders goes
    /// through them only; the rest through [relay] (see `daemon::routes`).
    #[serde(default)]
    pub sender_relay: Vec<SenderRelay>,
    #[serde(default)]
    pub address: Address,
    #[serde(default)]
    pub queue: Queue,
    #[serde(default)]
    pub log: Log,
    /// The loopback SMTP listener the daemon serves (off unless `addresses` is set).
    #[serde(default)]
    pub listen: Listen,
    /// `[dkim]`: sign outgoing mail (off unless set; `crate::dkim`).
    #[serde(default)]
    pub dkim: Option<Dkim>,
    /// Where this file was read from (not a key).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// `smtps://host:465` (implicit TLS) or `smtp://host:587` (STARTTLS required).
    pub url: Option<String>,
    /// A provider preset that fills in the URL: smtp2go, ses:<region>, sendgrid, mailgun,
    /// postmark, gmail, office365, fastmail.
    pub provider: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A command (run with `sh -c`) whose first output line is the password or OAuth2 token.
    pub password_command: Option<String>,
    /// auto (PLAIN, else LOGIN), plain, login, xoauth2.
    #[serde(default)]
    pub auth: AuthKind,
    /// Extra PEM trust anchor(s), added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Trust only `ca_file`, not the system roots.
    #[serde(default)]
    pub ca_only: bool,
    /// SHA-256 (hex) of the relay's leaf certificate (DER).
    pub pin_sha256: Option<String>,
    /// Allow `smtp://` without TLS; honoured only for a loopback relay.
    #[serde(default)]
    pub allow_plaintext: bool,
    pub ehlo_name: Option<String>,
    #[serde(default = "d_30s", deserialize_with = "de_dur")]
    pub connect_timeout: Duration,
    #[serde(default = "d_5m", deserialize_with = "de_dur")]
    pub command_timeout: Duration,
    #[serde(default = "d_10m", deserialize_with = "de_dur")]
    pub data_timeout: Duration,
    /// Transactions at most this fast over all connections: `"14/s"`, `"30/min"`, `"100/h"`;
    /// `"off"` lifts a provider preset's. Unset: the preset's, else none.
    pub rate: Option<String>,
    /// Recipients at most this many in any 24 hours; 0 lifts a preset's. Unset: the
    /// preset's, else none.
    pub daily: Option<u64>,
}

impl Relay {
    /// The rate and daily cap in force: the table's, else its provider preset's (checked
    /// by `validate`).
    pub fn limits(&self) -> (Option<crate::daemon::ratelimit::Rate>, Option<u64>) {
        let preset = self.provider.as_deref().and_then(crate::provider::preset);
        let rate = match &self.rate {
            Some(r) => crate::daemon::ratelimit::Rate::parse(r).ok().flatten(),
            None => preset
                .and_then(|p| p.rate)
                .and_then(|r| crate::daemon::ratelimit::Rate::parse(r).ok().flatten()),
        };
        let daily = self
            .daily
            .or(preset.and_then(|p| p.daily))
            .filter(|&d| d > 0);
        (rate, daily)
    }
}

/// `[[sender_relay]]`: a relay (every key of [relay]) for the envelope senders `senders`
/// names, with its own failover list `[[sender_relay.fallback]]`. Postfix's
/// `sender_dependent_relayhost_maps`, msmtp's accounts.
#[derive(Debug, Clone, Deserialize)]
pub struct SenderRelay {
    /// `"alerts@example.org"` (that address), `"*@shop.example"` or `"@shop.example"` (the
    /// domain): the most specific match wins, case-insensitively.
    pub senders: Vec<String>,
    /// Tried in order when this entry's relay is unreachable; never [relay]'s.
    #[serde(default)]
    pub fallback: Vec<Relay>,
    #[serde(flatten)]
    pub relay: Relay,
}

impl crate::provider::RelayName for Relay {
    fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }
    fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }
    fn allow_plaintext(&self) -> bool {
        self.allow_plaintext
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    #[default]
    Auto,
    Plain,
    Login,
    Xoauth2,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Where mail for local accounts (root, www-data, cron's MAILTO=user) goes.
    pub admin: Option<String>,
    /// Envelope and header sender for mail from local accounts (a sender the relay accepts).
    pub sender: Option<String>,
    /// Domain used to qualify bare names that are not local accounts.
    pub domain: Option<String>,
    /// An /etc/aliases-format file; missing file = no aliases.
    #[serde(default = "default_aliases")]
    pub aliases: PathBuf,
    /// Extra domains treated as this host (besides localhost, the host name and FQDN).
    #[serde(default)]
    pub local_domains: Vec<String>,
    /// Rewrite a header From that names a local account to `sender` (default true).
    #[serde(default = "yes")]
    pub rewrite_from: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// The most parallel connections to a relay (the daemon starts with two and opens more
    /// while the backlog grows and the relay takes them).
    #[serde(default = "d_conns")]
    pub connections: usize,
    #[serde(default = "d_1m", deserialize_with = "de_dur")]
    pub retry_min: Duration,
    #[serde(default = "d_1h", deserialize_with = "de_dur")]
    pub retry_max: Duration,
    /// After this long in the queue a message is bounced.
    #[serde(default = "d_5d", deserialize_with = "de_dur")]
    pub lifetime: Duration,
    /// Send a delay warning to the sender after this long (unset = never).
    #[serde(default, deserialize_with = "de_opt_dur")]
    pub warn_after: Option<Duration>,
    /// How long bounced originals stay in failed/.
    #[serde(default = "d_7d", deserialize_with = "de_dur")]
    pub keep_failed: Duration,
    /// How long an idle relay connection is kept open for reuse.
    #[serde(default = "d_5s", deserialize_with = "de_dur")]
    pub idle_timeout: Duration,
    /// Send bounces (DSNs) to senders at all.
    #[serde(default = "yes")]
    pub bounces: bool,
    /// At most this many envelopes in the daemon's memory; the rest waits on disk, read
    /// oldest first as room frees (Postfix's `qmgr_message_active_limit`).
    #[serde(default = "d_active_limit")]
    pub active_limit: usize,
}

/// `[listen]`: SMTP on loopback addresses, served by the daemon (`daemon::listen`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// `"127.0.0.1:25"`, `"[::1]:587"`: loopback only (checked in `validate`). Empty: off.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Connections served at once; the next ones hear `421` and are closed.
    #[serde(default = "d_listen_conns")]
    pub max_connections: usize,
    /// How long the listener waits for a client's next command or data (RFC 5321 4.5.3.2).
    #[serde(default = "d_5m", deserialize_with = "de_dur")]
    pub timeout: Duration,
}

impl Default for Listen {
    fn default() -> Self {
        toml::from_str("").expect("empty listen table has defaults")
    }
}

impl Listen {
    /// The configured addresses, parsed (`validate` has checked them).
    pub fn socket_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }
}

/// `[dkim]`: the daemon signs mail whose header From is in `domain` (or a subdomain) with
/// the key in `key_file`, published at `<selector>._domainkey.<domain>` (`crate::dkim`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dkim {
    pub domain: String,
    pub selector: String,
    /// A PEM private key (RSA of 2048 to 4096 bits, or Ed25519): a secret, read by the
    /// daemon only, refused when other users can read it.
    pub key_file: PathBuf,
}

/// Whether the listener may bind `addr`: an IP loopback address (127.0.0.0/8, ::1, or
/// ::ffff:127.x as IPv6 writes it), never a wildcard or another host's.
pub fn is_loopback(addr: &std::net::SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

impl Default for Address {
    fn default() -> Self {
        toml::from_str("").expect("empty address table has defaults")
    }
}

impl Default for Queue {
    fn default() -> Self {
        toml::from_str("").expect("empty queue table has defaults")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    #[serde(default = "yes")]
    pub syslog: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log { syslog: true }
    }
}

fn yes() -> bool {
    true
}
fn default_spool() -> PathBuf {
    PathBuf::from(DEFAULT_SPOOL)
}
fn default_aliases() -> PathBuf {
    PathBuf::from("/etc/aliases")
}
fn default_max_size() -> u64 {
    50 * 1024 * 1024
}
fn d_conns() -> usize {
    20
}
fn d_active_limit() -> usize {
    20_000
}

fn d_listen_conns() -> usize {
    100
}
fn d_5s() -> Duration {
    Duration::from_secs(5)
}
fn d_30s() -> Duration {
    Duration::from_secs(30)
}
fn d_1m() -> Duration {
    Duration::from_secs(60)
}
fn d_5m() -> Duration {
    Duration::from_secs(300)
}
fn d_10m() -> Duration {
    Duration::from_secs(600)
}
fn d_1h() -> Duration {
    Duration::from_secs(3600)
}
fn d_5d() -> Duration {
    Duration::from_secs(5 * 86400)
}
fn d_7d() -> Duration {
    Duration::from_secs(7 * 86400)
}

/// Parse "90", "90s", "5m", "1h", "5d" into a duration.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 's') => (&s[..i], 1),
        (i, 'm') => (&s[..i], 60),
        (i, 'h') => (&s[..i], 3600),
        (i, 'd') => (&s[..i], 86400),
        _ => (s, 1),
    };
    let n: u64 = num.trim().parse().ok()?;
    n.checked_mul(mult).map(Duration::from_secs)
}

/// Parse "1048576", "512K", "50M", "1G" into bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1024),
        (i, 'M' | 'm') => (&s[..i], 1024 * 1024),
        (i, 'G' | 'g') => (&s[..i], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

fn de_dur<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(Duration::from_secs(n)),
        NumOrStr::Str(s) => parse_duration(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid duration {s:?} (use e.g. 90s, 5m, 1h, 5d)"))
        }),
    }
}

fn de_opt_dur<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    de_dur(d).map(Some)
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u64, D::Error> {
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => parse_size(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid size {s:?} (use e.g. 52428800 or 50M)"))
        }),
    }
}

/// Which config file to read: `-C FILE`, else `$RELAYQ_CONFIG`, else the default.
pub(crate) fn choose_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("RELAYQ_CONFIG") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

impl Config {
    /// Read and validate the config. A missing default file gives the built-in defaults (so
    /// `sendmail` works before setup, queueing mail until a relay is configured); a missing
    /// explicitly named file is an error.
    pub(crate) fn load(flag: Option<&Path>) -> Result<Config> {
        let path = choose_path(flag);
        let explicit = flag.is_some() || std::env::var_os("RELAYQ_CONFIG").is_some();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(e) => {
                return Err(Error::config(format!(
                    "cannot read config {}: {e}",
                    path.display()
                )));
            }
        };
        Config::parse(&text, &path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            let at = e
                .span()
                .map(|s| {
                    let start = s.start.min(text.len());
                    let line = text[..start].matches('\n').count() + 1;
                    let src = text.lines().nth(line - 1).unwrap_or("").trim();
                    format!(" at line {line} ({src})")
                })
                .unwrap_or_default();
            Error::config(format!("config {}{at}: {msg}", path.display()))
        })?;
        cfg.path = path.to_path_buf();
        cfg.validate()?;
        Ok(cfg)
    }

    fn bad(&self, key: &str, why: impl std::fmt::Display) -> Error {
        Error::config(format!("config {}: {key}: {why}", self.path.display()))
    }

    fn validate(&self) -> Result<()> {
        if !self.spool_dir.is_absolute() {
            return Err(self.bad("spool_dir", "must be an absolute path"));
        }
        if self.max_message_size < 1024 {
            return Err(self.bad("max_message_size", "must be at least 1024 bytes"));
        }
        for (key, v) in [
            ("address.admin", &self.address.admin),
            ("address.sender", &self.address.sender),
        ] {
            if let Some(a) = v
                && !crate::address::is_valid_mailbox(a)
            {
                return Err(self.bad(
                    key,
                    format!("{a:?} is not an address like user@example.com"),
                ));
            }
        }
        if let Some(d) = &self.address.domain
            && !crate::address::is_valid_domain(d)
        {
            return Err(self.bad("address.domain", format!("{d:?} is not a domain name")));
        }
        let q = &self.queue;
        if q.connections == 0 || q.connections > 100 {
            return Err(self.bad("queue.connections", "must be between 1 and 100"));
        }
        if q.active_limit == 0 {
            return Err(self.bad("queue.active_limit", "must be at least 1"));
        }
        if q.retry_min.is_zero() || q.retry_max < q.retry_min {
            return Err(self.bad("queue.retry_max", "must be at least queue.retry_min (> 0)"));
        }
        let keyed = self.relays().into_iter().enumerate().map(|(i, r)| {
            let key = if i == 0 {
                "relay".to_string()
            } else {
                format!("fallback_relay[{}]", i - 1)
            };
            (key, r)
        });
        let by_sender = self.sender_relay.iter().enumerate().flat_map(|(n, e)| {
            std::iter::once((format!("sender_relay[{n}]"), &e.relay)).chain(
                e.fallback
                    .iter()
                    .enumerate()
                    .map(move |(i, r)| (format!("sender_relay[{n}].fallback[{i}]"), r)),
            )
        });
        for (key, r) in keyed.chain(by_sender) {
            crate::provider::endpoint(r).map_err(|why| self.bad(&key, why))?;
            if let Some(rate) = &r.rate {
                crate::daemon::ratelimit::Rate::parse(rate)
                    .map_err(|why| self.bad(&format!("{key}.rate"), why))?;
            }
            if r.password_file.is_some() && r.password_command.is_some() {
                return Err(self.bad(&key, "set password_file or password_command, not both"));
            }
        }
        if let Some(d) = &self.dkim {
            crate::dkim::check_config(d).map_err(|why| self.bad("dkim", why))?;
        }
        if !self.sender_relay.is_empty() && self.relay.is_none() {
            return Err(self.bad(
                "sender_relay",
                "needs [relay] too: it carries the mail of every other sender",
            ));
        }
        crate::daemon::routes::SenderMap::new(&self.sender_relay).map_err(|why| {
            Error::config(format!("config {}: sender_relay{why}", self.path.display()))
        })?;
        self.validate_listen()
    }

    /// `[listen]`: loopback addresses only. A listener for other hosts would need AUTH and
    /// TLS (so that it is no open relay), which relayq does not offer yet.
    fn validate_listen(&self) -> Result<()> {
        let l = &self.listen;
        for a in &l.addresses {
            let addr: std::net::SocketAddr = a.parse().map_err(|_| {
                self.bad(
                    "listen.addresses",
                    format!(
                        "{a:?} is not an IP address and port like \"127.0.0.1:25\" or \"[::1]:25\""
                    ),
                )
            })?;
            if !is_loopback(&addr) {
                return Err(self.bad(
                    "listen.addresses",
                    format!("{a:?} is not a loopback address: the listener binds only 127.0.0.0/8 and ::1 (a listener for other hosts needs AUTH and TLS, which relayq does not offer yet)"),
                ));
            }
            if addr.port() == 0 {
                return Err(self.bad("listen.addresses", format!("{a:?}: port 0")));
            }
        }
        if l.max_connections == 0 || l.max_connections > 10_000 {
            return Err(self.bad("listen.max_connections", "must be between 1 and 10000"));
        }
        if l.timeout.is_zero() {
            return Err(self.bad("listen.timeout", "must be more than 0"));
        }
        Ok(())
    }

    /// The default relays ([relay], then [[fallback_relay]]) in order of preference.
    pub(crate) fn relays(&self) -> Vec<&Relay> {
        self.relay
            .iter()
            .chain(self.fallback_relay.iter())
            .collect()
    }

    /// Every route's relays in order of preference: first the default ones (`relays`), then
    /// each `[[sender_relay]]`'s (its relay, then its fallbacks), as `daemon::routes`
    /// numbers them.
    pub(crate) fn routes(&self) -> Vec<Vec<&Relay>> {
        std::iter::once(self.relays())
            .chain(
                self.sender_relay
                    .iter()
                    .map(|e| std::iter::once(&e.relay).chain(&e.fallback).collect()),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Config> {
        Config::parse(s, Path::new("/t.toml"))
    }

    #[test]
    fn defaults() {
        let c = p("").unwrap();
        assert_eq!(c.spool_dir, PathBuf::from(DEFAULT_SPOOL));
        assert_eq!(c.queue.connections, 20);
        assert_eq!(c.queue.lifetime, Duration::from_secs(5 * 86400));
        assert!(c.address.rewrite_from);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = p("spool_dir = \"/x\"\n[relay]\nurll = \"smtps://a:465\"\n").unwrap_err();
        assert_eq!(e.code(), 78);
        assert!(
            e.msg.contains("urll") && e.msg.contains("/t.toml") && e.msg.contains("line 3"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn bad_values() {
        assert!(
            p("spool_dir = \"rel\"")
                .unwrap_err()
                .msg
                .contains("spool_dir")
        );
        assert!(
            p("[address]\nadmin = \"not an address\"")
                .unwrap_err()
                .msg
                .contains("address.admin")
        );
        assert!(
            p("[queue]\nretry_min = \"soon\"")
                .unwrap_err()
                .msg
                .contains("retry_min")
        );
        assert!(
            p("[relay]\nurl = \"http://x\"")
                .unwrap_err()
                .msg
                .contains("relay")
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_size("50M"), Some(50 << 20));
        assert_eq!(parse_size("10"), Some(10));
        let c =
            p("max_message_size = \"1M\"\n[queue]\nretry_min = 30\nretry_max = \"2h\"").unwrap();
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.queue.retry_max, Duration::from_secs(7200));
    }

    #[test]
    fn listen_is_off_by_default_and_loopback_only() {
        let c = p("").unwrap();
        assert!(c.listen.addresses.is_empty());
        assert_eq!(c.listen.max_connections, 100);
        assert_eq!(c.listen.timeout, Duration::from_secs(300));
        let c = p("[listen]\naddresses = [\"127.0.0.1:25\", \"[::1]:587\", \"127.0.0.2:2525\"]\ntimeout = \"1m\"").unwrap();
        assert_eq!(c.listen.socket_addrs().len(), 3);
        assert_eq!(c.listen.timeout, Duration::from_secs(60));
        for bad in [
            "0.0.0.0:25",
            "[::]:25",
            "192.0.2.1:25",
            "[::ffff:192.0.2.1]:25",
            "localhost:25",
            "127.0.0.1",
            "127.0.0.1:0",
        ] {
            let e = p(&format!("[listen]\naddresses = [\"{bad}\"]")).unwrap_err();
            assert_eq!(e.code(), 78, "{bad}");
            assert!(
                e.msg.contains("listen.addresses") && !e.msg.contains('\n'),
                "{}",
                e.msg
            );
        }
        assert!(is_loopback(&"[::ffff:127.0.0.1]:25".parse().unwrap()));
        let e = p("[listen]\nmax_connections = 0").unwrap_err();
        assert!(e.msg.contains("listen.max_connections"), "{}", e.msg);
    }

    #[test]
    fn rate_and_daily_with_presets() {
        use crate::daemon::ratelimit::Rate;
        let c = p("[relay]\nurl = \"smtps://a.example:465\"\nrate = \"14/s\"\ndaily = 2000\n[[fallback_relay]]\nurl = \"smtps://b.example:465\"\nrate = \"30/min\"").unwrap();
        let rs = c.relays();
        assert_eq!(rs[0].limits(), (Rate::parse("14/s").unwrap(), Some(2000)));
        assert_eq!(rs[1].limits(), (Rate::parse("30/min").unwrap(), None));
        let e = p("[relay]\nurl = \"smtps://a.example:465\"\nrate = \"fast\"").unwrap_err();
        assert!(
            e.msg.contains("relay.rate") && e.msg.contains("14/s"),
            "{}",
            e.msg
        );
        let e = p("[relay]\nurl = \"smtps://a.example:465\"\n[[fallback_relay]]\nurl = \"smtps://b.example:465\"\nrate = \"1/day\"").unwrap_err();
        assert!(e.msg.contains("fallback_relay[0].rate"), "{}", e.msg);
        // Presets carry the provider's documented limits; the table overrides or lifts them.
        let c = p("[relay]\nprovider = \"office365\"").unwrap();
        assert_eq!(
            c.relays()[0].limits(),
            (Rate::parse("30/min").unwrap(), Some(10_000))
        );
        let c = p("[relay]\nprovider = \"ses:eu-west-1\"").unwrap();
        assert_eq!(
            c.relays()[0].limits(),
            (Rate::parse("1/s").unwrap(), Some(200))
        );
        let c = p("[relay]\nprovider = \"ses:eu-west-1\"\nrate = \"14/s\"\ndaily = 0").unwrap();
        assert_eq!(c.relays()[0].limits(), (Rate::parse("14/s").unwrap(), None));
        let c = p("[relay]\nprovider = \"gmail\"\nrate = \"off\"").unwrap();
        assert_eq!(c.relays()[0].limits(), (None, Some(2000)));
        let c = p("[relay]\nprovider = \"smtp2go\"").unwrap();
        assert_eq!(c.relays()[0].limits(), (None, None));
    }

    #[test]
    fn warn_after_is_optional() {
        assert_eq!(p("").unwrap().queue.warn_after, None, "unset = never");
        for v in ["2", "\"2\"", "\"2s\""] {
            let c = p(&format!("[queue]\nwarn_after = {v}")).unwrap();
            assert_eq!(c.queue.warn_after, Some(Duration::from_secs(2)), "{v}");
        }
        let c = p("[queue]\nwarn_after = \"4h\"").unwrap();
        assert_eq!(c.queue.warn_after, Some(Duration::from_secs(4 * 3600)));
        assert!(
            p("[queue]\nwarn_after = \"soon\"")
                .unwrap_err()
                .msg
                .contains("warn_after")
        );
    }
}
