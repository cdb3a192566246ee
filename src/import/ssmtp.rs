//! Import from ssmtp: ssmtp.conf and revaliases.

use super::text::{ca_file, conf_lines, host_port, last, set, split_eq, yes};
use super::{Imported, RelaySpec, Sources, WHY_AUTH, WHY_CLIENT_CERT, WHY_FROM, WHY_NONE, Wire};

/// ssmtp.conf (`Key=Value`, keys case-insensitive) and revaliases (`local:from:mailhub`).
pub(super) fn ssmtp(src: &Sources) -> std::result::Result<Imported, String> {
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
