//! Import from msmtp: msmtprc's accounts: the default one is [relay]; each other account
//! with a `from` of its own is a `[[sender_relay]]` for that sender.

use super::text::{ca_file, conf_lines, no, port_of, set, sha256_pin, split_word, unquote, yes};
use super::{
    Imported, RelaySpec, Sources, WHY_AUTH, WHY_CERTCHECK, WHY_CLIENT_CERT, WHY_FROM, WHY_NONE,
    Wire,
};

/// An account's last value for `key` (a later line overrides an earlier one, as in msmtp).
fn setting(settings: &[(usize, String, String)], key: &str) -> Option<String> {
    settings
        .iter()
        .rev()
        .find(|(_, k, _)| k == key)
        .map(|(_, _, v)| v.clone())
}

/// The relay an account's settings describe (host, port, TLS, credentials, auth).
fn account_relay(
    label: &str,
    settings: &[(usize, String, String)],
    imp: &mut Imported,
) -> std::result::Result<RelaySpec, String> {
    let get = |key: &str| setting(settings, key);
    let host = get("host").ok_or_else(|| format!("{label}: no host"))?;
    let mut r = RelaySpec::new(label, &host, None);
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
    Ok(r)
}

/// msmtprc: `defaults`, `account NAME [: PARENT...]`, `account default : NAME`, then
/// `key value` lines. The account used is `default` (as msmtp-mta does).
pub(super) fn msmtp(src: &Sources) -> std::result::Result<Imported, String> {
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
    let get = |key: &str| setting(settings, key);
    let r = account_relay(&label, settings, &mut imp)?;
    let default_from = get("from");
    // Other accounts with a `from` of their own: relays by sender (msmtp picks the account
    // by the envelope sender the same way, with --read-envelope-from or -f).
    for (a, st) in &accounts {
        if a == name || Some(a) == default_alias.as_ref() {
            continue;
        }
        let from = st
            .iter()
            .rev()
            .find(|(_, k, _)| k == "from")
            .map(|(_, _, v)| v.clone());
        let pattern = from
            .filter(|f| Some(f) != default_from.as_ref())
            .filter(|f| crate::daemon::routes::Pattern::parse(f).is_ok())
            .filter(|f| {
                !imp.sender_relays
                    .iter()
                    .any(|s| s.senders.iter().any(|x| x.eq_ignore_ascii_case(f)))
            });
        let label = format!("account {a}");
        match pattern {
            Some(f) => match account_relay(&label, st, &mut imp) {
                Ok(r) => imp.sender_relays.push(super::SenderSpec {
                    senders: vec![f],
                    relay: r,
                }),
                Err(e) => imp.skip(&label, &format!("{e}: not carried over")),
            },
            None => imp.skip(
                &label,
                "no `from` address of its own: relayq relays the mail of other senders through the default account (and [[fallback_relay]]s)",
            ),
        }
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
