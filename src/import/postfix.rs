//! Import from Postfix as a null client: main.cf (parameters, `$name` expansion, Postfix
//! time values), the SASL password map's source file, and sender_dependent_relayhost_maps'
//! source file (`[[sender_relay]]`) (root's alias: [`super::identity`]).

use super::text::{ca_file, conf_lines, host_port, mailname, set, split_eq, split_word, yes};
use super::{Imported, RelaySpec, Sources, WHY_AUTH, WHY_CLIENT_CERT, WHY_FROM, Wire};

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

/// Expand `$name` / `${name}` / `$(name)` from the parameters (bounded depth).
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
/// level, wrapper mode, myorigin.
pub(super) fn postfix(src: &Sources) -> std::result::Result<Imported, String> {
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
    let ca = get("smtp_tls_CAfile").and_then(|f| ca_file(&f));
    let ehlo = get("smtp_helo_name").filter(|n| !n.contains('$'));
    // One relay from a host spec; its credentials under the first of `first` (sender keys),
    // then the host's keys. Err when it names no usable host; Ok(None) for the credentials
    // when SASL is on and the map has no entry.
    let spec = |h: &str,
                origin: &str,
                first: &[String]|
     -> std::result::Result<(RelaySpec, bool), String> {
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
        let keys = first
            .iter()
            .cloned()
            .chain([h.to_string(), format!("[{bare}]"), bare.clone()]);
        let mut found = false;
        if let Some(cred) = keys
            .into_iter()
            .find_map(|k| secrets.iter().find(|(sk, _)| *sk == k).map(|(_, c)| c))
        {
            let (u, p) = cred.split_once(':').unwrap_or((cred.as_str(), ""));
            r.username = Some(u.to_string());
            r.password = Some(p.to_string());
            found = true;
        }
        r.ca_file = ca.clone();
        r.ehlo_name = ehlo.clone();
        Ok((r, found))
    };
    let all = hosts.split([',', ' ']).chain(fallback.split([',', ' ']));
    for (i, h) in all.filter(|h| !h.is_empty()).enumerate() {
        let origin = if i == 0 { "relayhost" } else { "relay list" };
        let (r, found) = spec(h, origin, &[])?;
        if sasl && !found {
            imp.skip(
                format!("{origin} {h}"),
                "no entry in smtp_sasl_password_maps: no credentials",
            );
        }
        imp.relays.push(r);
    }
    // Relays by sender: the source text of sender_dependent_relayhost_maps (`sender
    // relayhost`), with credentials by sender when smtp_sender_dependent_authentication.
    let by_sender = get("smtp_sender_dependent_authentication").is_some_and(|v| yes(&v));
    for m in get("sender_dependent_relayhost_maps")
        .unwrap_or_default()
        .split([',', ' '])
        .filter(|m| !m.is_empty())
    {
        let path = m.split_once(':').map_or(m, |(_, p)| p);
        let Some(text) = (src.read)(path) else {
            imp.skip(
                m,
                "its source file could not be read: not carried over (relayq needs the plain text file, not the .db)",
            );
            continue;
        };
        for (n, line) in conf_lines(&text) {
            let (k, v) = split_word(line);
            let v = v.trim();
            let origin = format!("{path} line {n}");
            if v.is_empty() || v.eq_ignore_ascii_case("dunno") {
                continue;
            }
            let pattern = if k.starts_with('@') {
                format!("*{k}")
            } else {
                k.to_string()
            };
            if crate::daemon::routes::Pattern::parse(&pattern).is_err() {
                imp.skip(
                    format!("{origin}: {k}"),
                    "not a sender address or @domain: not carried over",
                );
                continue;
            }
            let first: Vec<String> = if by_sender {
                let domain = k.rsplit_once('@').map(|(_, d)| format!("@{d}"));
                std::iter::once(k.to_string()).chain(domain).collect()
            } else {
                Vec::new()
            };
            let (r, found) = match spec(v, &origin, &first) {
                Ok(x) => x,
                Err(e) => {
                    imp.skip(format!("{origin}: {k}"), &e);
                    continue;
                }
            };
            if sasl && !found {
                imp.skip(
                    format!("{origin}: {k} {v}"),
                    "no entry in smtp_sasl_password_maps: no credentials",
                );
            }
            // Senders of the same relay with the same credentials share one entry.
            let same = imp.sender_relays.iter_mut().find(|s| {
                s.relay.host == r.host
                    && s.relay.port == r.port
                    && s.relay.username == r.username
                    && s.relay.password == r.password
            });
            match same {
                Some(s) => s.senders.push(pattern),
                None => imp.sender_relays.push(super::SenderSpec {
                    senders: vec![pattern],
                    relay: r,
                }),
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        let p = postfix_params("a = x\nb = $a/${a}\n  y\n#c = 1\n");
        assert_eq!(postfix_expand("$b", &p, 0), "x/x y");
        assert_eq!(
            postfix_expand("$loop", &[("loop".into(), "$loop".into())], 0),
            "$loop"
        );
    }
}
