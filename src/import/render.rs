//! What a parser found, as relayq's config: the TOML (`[relay]`, `[[fallback_relay]]`,
//! `[address]`, `[queue]`), the one secret, and the report of what was carried over and not.

use super::{Imported, RelaySpec, Sourced, Tool, Wire};
use std::path::Path;

/// The result of [`render`]: relayq's TOML, the secret for the secrets file (never printed),
/// the settings carried over, and what was not.
#[derive(Debug)]
pub(super) struct Rendered {
    pub toml: String,
    pub secret: Option<String>,
    /// The `[[sender_relay]]`s' secrets, each to its own file (path, password).
    pub extra_secrets: Vec<(std::path::PathBuf, String)>,
    pub carried: Vec<String>,
    pub notes: Vec<String>,
}

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

/// The secrets file of `[[sender_relay]]` number `n`: beside the first (`password` →
/// `password-sender1`), one per relay, never inside relayq.toml.
pub(super) fn sender_secret_path(secret_path: &Path, n: usize) -> std::path::PathBuf {
    let name = secret_path
        .file_name()
        .map_or("password".into(), |f| f.to_string_lossy().into_owned());
    secret_path.with_file_name(format!("{name}-sender{}", n + 1))
}

/// The relay's password to write to a secrets file, if it has a usable one (notes say
/// why not otherwise).
fn password_of<'a>(r: &'a RelaySpec, notes: &mut Vec<String>) -> Option<&'a str> {
    if r.password_command.is_some() {
        return None;
    }
    match r.password.as_deref().filter(|p| !p.is_empty()) {
        Some(p) if p.contains(['\n', '\r']) => {
            notes.push(format!(
                "{}: the password has a line break: relayq reads the first line of password_file; not carried over",
                r.origin
            ));
            None
        }
        Some(p) => Some(p),
        None => {
            if r.username.is_some() {
                notes.push(format!(
                    "{}: a user name but no password: set password_file or password_command",
                    r.origin
                ));
            }
            None
        }
    }
}

/// One relay's keys (`key`: how the report names its table), its password in the secrets
/// file `password_file` when it has one.
fn relay_keys(
    r: &RelaySpec,
    (url, plaintext): &(String, bool),
    key: &str,
    password_file: Option<&Path>,
    toml: &mut String,
    carried: &mut Vec<String>,
) {
    let mut put = |k: &str, v: String, shown: Option<&str>| {
        toml.push_str(&format!("{k} = {v}\n"));
        let shown = shown.map_or(v, str::to_string);
        carried.push(format!("{key}.{k} = {shown}   (from {})", r.origin));
    };
    match preset_for(url) {
        Some(p) => put(
            "provider",
            quote(&p),
            Some(&format!("{} ({url})", quote(&p))),
        ),
        None => put("url", quote(url), None),
    }
    if *plaintext {
        put("allow_plaintext", "true".into(), None);
    }
    if let Some(u) = &r.username {
        put("username", quote(u), None);
    }
    if let Some(c) = &r.password_command {
        put("password_command", quote(c), None);
    } else if let Some(p) = password_file {
        let sp = p.display().to_string();
        put(
            "password_file",
            quote(&sp),
            Some(&format!("{} (the password, not shown)", quote(&sp))),
        );
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

/// Turn what a parser found into relayq's config text, the secret, and the report lines.
/// `secret_path` is where the secret will be written (the config names it).
pub(super) fn render(
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
    let mut extra_secrets = Vec::new();
    let mut n_relays = 0;
    for r in &imp.relays {
        let url = relay_url(r, &mut notes);
        if let Err(e) = crate::provider::parse_url(&url.0, url.1) {
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
        // The first password goes to the secrets file; another one cannot share it.
        let pw = match password_of(r, &mut notes) {
            Some(p) if secret.is_none() || secret.as_deref() == Some(p) => {
                secret = Some(p.to_string());
                Some(secret_path.to_path_buf())
            }
            Some(_) => {
                notes.push(format!(
                    "{}: its password differs from the first relay's: relayq import writes one secrets file; put this one in a file of its own (mode 600) and set password_file in {key}",
                    r.origin
                ));
                None
            }
            None => None,
        };
        relay_keys(r, &url, &key, pw.as_deref(), &mut toml, &mut carried);
    }
    // Relays by sender: each with its own secrets file beside the first.
    for (n, s) in imp.sender_relays.iter().enumerate() {
        let r = &s.relay;
        let url = relay_url(r, &mut notes);
        if let Err(e) = crate::provider::parse_url(&url.0, url.1) {
            notes.push(format!("{}: {e}: this relay is skipped", r.origin));
            continue;
        }
        let key = format!("sender_relay[{n}]");
        let senders: Vec<String> = s.senders.iter().map(|x| quote(x)).collect();
        toml.push_str(&format!(
            "\n[[sender_relay]]\nsenders = [{}]\n",
            senders.join(", ")
        ));
        carried.push(format!(
            "{key}.senders = [{}]   (from {})",
            senders.join(", "),
            r.origin
        ));
        let pw = password_of(r, &mut notes).map(|p| {
            let path = sender_secret_path(secret_path, n);
            extra_secrets.push((path.clone(), p.to_string()));
            path
        });
        relay_keys(r, &url, &key, pw.as_deref(), &mut toml, &mut carried);
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
        extra_secrets,
        carried,
        notes,
    })
}
