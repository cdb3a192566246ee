//! Import from dma (DragonFly Mail Agent): dma.conf, its AUTHPATH file and MAILNAME.

use super::text::{conf_lines, last, mailname, port_of, set, sha256_pin, split_word};
use super::{Imported, RelaySpec, Sources, WHY_CLIENT_CERT, WHY_NONE, Wire};

/// dma.conf (`KEY value`), the AUTHPATH file (`user|host:password`), MAILNAME (a name or a
/// file).
pub(super) fn dma(src: &Sources) -> std::result::Result<Imported, String> {
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
                "relayq keeps its own spool (spool_dir); the mail in dma's is taken over into it"
            }
            _ => WHY_NONE,
        };
        imp.skip(format!("{k} {v}").trim_end(), why);
    }
    imp.relays.push(r);
    Ok(imp)
}
