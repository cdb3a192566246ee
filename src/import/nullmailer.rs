//! Import from nullmailer: /etc/nullmailer's `remotes` and its one-line files.

use super::text::{ca_file, conf_lines, first_line, port_of, set, shell_words};
use super::{Imported, RelaySpec, Sources, WHY_CERTCHECK, WHY_CLIENT_CERT, WHY_NONE, Wire};

/// /etc/nullmailer: `remotes` (one relay a line: `host [protocol] [--]option[=value]...`),
/// `adminaddr`, `allmailfrom`, `defaulthost`, `me`, `defaultdomain`, /etc/mailname.
pub(super) fn nullmailer(src: &Sources) -> std::result::Result<Imported, String> {
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
