//! The sender domain's records: SPF (one record, and it includes the provider's servers,
//! followed through include/redirect within RFC 7208's lookup limit), DKIM (the provider's
//! fixed selectors) and DMARC (and what its policy demands of the other two).

use super::Report;
use super::dns::{Dns, DnsFail, Lookup, Rec};
use crate::config::{Config, Relay};
use crate::provider::{self, Preset};
use hickory_resolver::proto::rr::RecordType;
use std::net::SocketAddr;

/// RFC 7208 4.6.4: at most 10 mechanisms and modifiers that cause DNS lookups.
const SPF_MAX_LOOKUPS: usize = 10;

fn sender_domain(cfg: &Config) -> Option<String> {
    cfg.address
        .sender
        .as_deref()
        .and_then(|s| s.rsplit_once('@').map(|(_, d)| d.to_string()))
        .or_else(|| cfg.address.domain.clone())
        .map(|d| d.to_ascii_lowercase())
}

fn preset_of(relay: Option<&Relay>) -> Option<&'static Preset> {
    relay?.provider.as_deref().and_then(provider::preset)
}

pub(super) fn check_dns(r: &mut Report, cfg: &Config, server: Option<SocketAddr>) {
    let sender = sender_domain(cfg);
    if sender.is_none() && cfg.dkim.is_none() {
        return r.warn(
            "dns",
            "no sender domain to check",
            "set [address] sender (or domain) so doctor can check its SPF, DKIM and DMARC",
        );
    }
    let dns = match Dns::new(server) {
        Ok(d) => Some(d),
        Err(e) => {
            r.dns_down(&e);
            None
        }
    };
    // relayq's own signature ([dkim]), when it signs: for DMARC it stands for DKIM.
    let own = cfg.dkim.is_some();
    let signed = super::dkim::check(r, cfg, dns.as_ref().map(|d| d as &dyn Lookup));
    let (Some(domain), Some(dns)) = (sender, dns) else {
        return;
    };
    let preset = preset_of(cfg.relay.as_ref());
    let spf = check_spf(r, &dns, &domain, preset);
    let dkim = if own {
        signed
    } else {
        check_dkim(r, &dns, &domain, preset)
    };
    check_dmarc(r, &dns, &domain, spf, dkim);
}

/// The v=spf1 records among a name's TXT records.
fn spf_records(txts: Vec<String>) -> Vec<String> {
    txts.into_iter()
        .filter(|t| {
            let l = t.trim_start().to_ascii_lowercase();
            l == "v=spf1" || l.starts_with("v=spf1 ")
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SpfError {
    NoRecord(String),
    Multiple(String, usize),
    TooManyLookups,
    Dns(String),
}

fn one_spf(src: &dyn Lookup, domain: &str) -> std::result::Result<String, SpfError> {
    let mut v = match src.txt(domain) {
        Ok(t) => spf_records(t),
        Err(DnsFail::Missing) => Vec::new(),
        Err(DnsFail::Unreachable(e)) => return Err(SpfError::Dns(e)),
    };
    match v.len() {
        0 => Err(SpfError::NoRecord(domain.to_string())),
        1 => Ok(v.remove(0)),
        n => Err(SpfError::Multiple(domain.to_string(), n)),
    }
}

fn same_domain(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Whether `record` (or what it includes or redirects to) includes `target`; `chain` ends
/// with the names followed to get there. Lookups are counted against RFC 7208's limit.
fn spf_includes(
    src: &dyn Lookup,
    record: &str,
    target: &str,
    lookups: &mut usize,
    chain: &mut Vec<String>,
) -> std::result::Result<bool, SpfError> {
    let mut redirect = None;
    let mut has_all = false;
    for term in record.split_ascii_whitespace().skip(1) {
        let t = term
            .trim_start_matches(['+', '-', '~', '?'])
            .to_ascii_lowercase();
        let mech = t.split([':', '/', '=']).next().unwrap_or("");
        has_all |= mech == "all";
        if let Some(r) = t.strip_prefix("redirect=") {
            redirect = Some(r.to_string());
            continue;
        }
        if !matches!(mech, "include" | "a" | "mx" | "ptr" | "exists") {
            continue;
        }
        *lookups += 1;
        if *lookups > SPF_MAX_LOOKUPS {
            return Err(SpfError::TooManyLookups);
        }
        if let Some(inc) = t.strip_prefix("include:")
            && follow(src, inc, target, lookups, chain)?
        {
            return Ok(true);
        }
    }
    // RFC 7208 6.1: redirect= is ignored when the record has an "all".
    match redirect {
        Some(r) if !has_all => {
            *lookups += 1;
            if *lookups > SPF_MAX_LOOKUPS {
                return Err(SpfError::TooManyLookups);
            }
            follow(src, &r, target, lookups, chain)
        }
        _ => Ok(false),
    }
}

fn follow(
    src: &dyn Lookup,
    name: &str,
    target: &str,
    lookups: &mut usize,
    chain: &mut Vec<String>,
) -> std::result::Result<bool, SpfError> {
    chain.push(name.to_string());
    if same_domain(name, target) {
        return Ok(true);
    }
    let rec = one_spf(src, name)?;
    if spf_includes(src, &rec, target, lookups, chain)? {
        return Ok(true);
    }
    chain.pop();
    Ok(false)
}

/// SPF: one record, and it includes the provider's servers. Some(true/false) when known.
fn check_spf(
    r: &mut Report,
    dns: &dyn Lookup,
    domain: &str,
    preset: Option<&Preset>,
) -> Option<bool> {
    let wanted = preset.map(|p| p.spf_include);
    let example = format!(
        "\"v=spf1 include:{} ~all\"",
        wanted.unwrap_or("<your relay's SPF domain>")
    );
    let rec = match one_spf(dns, domain) {
        Ok(rec) => rec,
        Err(SpfError::Dns(e)) => {
            r.dns_down(&e);
            return None;
        }
        Err(SpfError::Multiple(_, n)) => {
            r.fail(
                "spf",
                format!(
                    "{domain} has {n} SPF (v=spf1) records: receivers then ignore SPF (permerror)"
                ),
                "merge them into one TXT record that starts with v=spf1",
            );
            return Some(false);
        }
        Err(_) => {
            r.fail(
                "spf",
                format!("{domain} has no SPF record (TXT starting with v=spf1)"),
                format!("add a TXT record at {domain}: {example}"),
            );
            return Some(false);
        }
    };
    let Some(want) = wanted else {
        r.pass(
            "spf",
            format!("{domain}: {rec} (custom relay: make sure this lists its servers)"),
        );
        return None;
    };
    let (mut lookups, mut chain) = (0, Vec::new());
    match spf_includes(dns, &rec, want, &mut lookups, &mut chain) {
        Ok(true) => {
            r.pass(
                "spf",
                format!(
                    "{domain}: {rec} — includes {want} (via {})",
                    chain.join(" → ")
                ),
            );
            Some(true)
        }
        Ok(false) => {
            let found =
                format!("{domain}: {rec} — does not include {want}, your provider's servers");
            let fix = format!(
                "add include:{want} before the final \"all\" of the SPF record at {domain}"
            );
            // Mailbox providers send with your address as the envelope sender, so SPF is
            // checked against your domain. Sending services use their own bounce domain
            // unless you set up a custom MAIL FROM / return path; then DMARC rests on DKIM.
            let own_envelope =
                preset.is_some_and(|p| matches!(p.name, "gmail" | "office365" | "fastmail"));
            if own_envelope {
                r.fail("spf", found, fix);
            } else {
                r.warn(
                    "spf",
                    found,
                    format!("{fix} (needed when the provider sends with your domain as the return path, e.g. a custom MAIL FROM; otherwise DKIM carries DMARC)"),
                );
            }
            Some(false)
        }
        Err(SpfError::Dns(e)) => {
            r.dns_down(&e);
            None
        }
        Err(SpfError::TooManyLookups) => {
            r.fail(
                "spf",
                format!("{domain}: {rec} — needs more than {SPF_MAX_LOOKUPS} DNS lookups (permerror)"),
                "remove includes you no longer use, so at most 10 include/a/mx/ptr/exists/redirect remain",
            );
            Some(false)
        }
        Err(SpfError::NoRecord(n)) | Err(SpfError::Multiple(n, _)) => {
            r.fail(
                "spf",
                format!("{domain}: {rec} — {n}, which it includes, has no single SPF record"),
                format!("remove or correct include:{n} in the SPF record at {domain}"),
            );
            Some(false)
        }
    }
}

/// DKIM: the provider's fixed selectors, when it has them. Some(true) when a key is found.
fn check_dkim(
    r: &mut Report,
    dns: &dyn Lookup,
    domain: &str,
    preset: Option<&Preset>,
) -> Option<bool> {
    let sels = preset.map(|p| p.dkim_selectors).unwrap_or(&[]);
    if sels.is_empty() {
        r.warn(
            "dkim",
            "the DKIM selector is specific to your account: not checked",
            format!("check the DKIM record your provider gave you is published under _domainkey.{domain}"),
        );
        return None;
    }
    let (mut found, mut dangling) = (Vec::new(), Vec::new());
    for sel in sels {
        let name = format!("{sel}._domainkey.{domain}");
        let recs = match dns.query(&name, RecordType::TXT) {
            // A CNAME whose target has no key yet: ask for the CNAME itself.
            Err(DnsFail::Missing) => dns.query(&name, RecordType::CNAME),
            other => other,
        };
        match recs {
            Ok(recs) => {
                let key = recs.iter().any(|x| match x {
                    Rec::Cname(_) => false,
                    Rec::Txt(t) => t.split(';').any(|tag| {
                        tag.trim()
                            .strip_prefix("p=")
                            .is_some_and(|v| !v.trim().is_empty())
                    }),
                });
                let cname = recs.iter().find_map(|x| match x {
                    Rec::Cname(c) => Some(c.trim_end_matches('.').to_string()),
                    Rec::Txt(_) => None,
                });
                match (key, cname) {
                    (true, Some(c)) => found.push(format!("{name} (CNAME → {c})")),
                    (true, None) => found.push(name),
                    (false, Some(c)) => dangling.push(format!("{name} → {c}")),
                    (false, None) => {}
                }
            }
            Err(DnsFail::Missing) => {}
            Err(DnsFail::Unreachable(e)) => {
                r.dns_down(&e);
                return None;
            }
        }
    }
    if found.is_empty() && !dangling.is_empty() {
        r.warn(
            "dkim",
            format!("{}: the CNAME points to no DKIM key", dangling.join(", ")),
            "copy the DKIM CNAMEs exactly as your provider shows them, and activate DKIM in its console",
        );
        return Some(false);
    }
    if found.is_empty() {
        let names: Vec<String> = sels.iter().map(|s| format!("{s}._domainkey")).collect();
        r.warn(
            "dkim",
            format!("no DKIM key at {} under {domain}", names.join(", ")),
            "publish the DKIM records (usually CNAMEs) your provider shows for your domain",
        );
        Some(false)
    } else {
        r.pass("dkim", format!("key published at {}", found.join(", ")));
        Some(true)
    }
}

/// DMARC: `_dmarc.<domain>` and what its policy demands of the other two.
fn check_dmarc(
    r: &mut Report,
    dns: &dyn Lookup,
    domain: &str,
    spf: Option<bool>,
    dkim: Option<bool>,
) {
    let name = format!("_dmarc.{domain}");
    let recs: Vec<String> = match dns.txt(&name) {
        Ok(t) => t
            .into_iter()
            .filter(|t| t.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))
            .collect(),
        Err(DnsFail::Missing) => Vec::new(),
        Err(DnsFail::Unreachable(e)) => return r.dns_down(&e),
    };
    let rec = match recs.as_slice() {
        [one] => one,
        [] => {
            return r.warn(
                "dmarc",
                format!("no DMARC record at {name}"),
                format!("add a TXT record at {name}: \"v=DMARC1; p=none; rua=mailto:postmaster@{domain}\" (large receivers such as Gmail expect one)"),
            );
        }
        many => {
            return r.warn(
                "dmarc",
                format!(
                    "{} DMARC records at {name}: receivers ignore them all",
                    many.len()
                ),
                "keep exactly one TXT record starting with v=DMARC1",
            );
        }
    };
    let policy = rec
        .split(';')
        .filter_map(|t| t.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("p"))
        .map(|(_, v)| v.trim().to_ascii_lowercase());
    match policy.as_deref() {
        Some("none") => r.pass(
            "dmarc",
            format!("{rec} — p=none: receivers only report, nothing is refused"),
        ),
        Some(p @ ("quarantine" | "reject")) => {
            let what = if p == "reject" {
                "refuse"
            } else {
                "put in spam"
            };
            let demand = format!(
                "p={p}: receivers {what} mail that passes neither SPF nor DKIM for {domain}"
            );
            match (spf, dkim) {
                (Some(false), Some(true)) => r.warn(
                    "dmarc",
                    format!("{rec} — {demand}; SPF does not cover your provider, so only DKIM saves your mail"),
                    "fix the SPF record above, so mail still passes if a DKIM signature breaks",
                ),
                (Some(false), _) => r.fail(
                    "dmarc",
                    format!("{rec} — {demand}; SPF does not cover your provider and no DKIM key was confirmed, so your mail will be {}", if p == "reject" { "refused" } else { "put in spam" }),
                    "fix the SPF record above and publish your provider's DKIM records (or set p=none until both pass)",
                ),
                _ => r.pass("dmarc", format!("{rec} — {demand}")),
            }
        }
        _ => r.warn(
            "dmarc",
            format!("{rec} — no valid p= policy"),
            format!("the record at {name} needs p=none, p=quarantine or p=reject"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Table(HashMap<&'static str, Vec<&'static str>>);

    impl Lookup for Table {
        fn query(&self, name: &str, _: RecordType) -> std::result::Result<Vec<Rec>, DnsFail> {
            if name == "down.test" {
                return Err(DnsFail::Unreachable("request timed out".into()));
            }
            self.0
                .get(name)
                .map(|v| v.iter().map(|t| Rec::Txt(t.to_string())).collect())
                .ok_or(DnsFail::Missing)
        }
    }

    fn walk(
        t: &Table,
        rec: &str,
        target: &str,
    ) -> (std::result::Result<bool, SpfError>, Vec<String>) {
        let (mut n, mut chain) = (0, Vec::new());
        (spf_includes(t, rec, target, &mut n, &mut chain), chain)
    }

    #[test]
    fn spf_nested_include_redirect_and_limits() {
        let mut m = HashMap::new();
        m.insert("a.test", vec!["v=spf1 ip4:192.0.2.1 include:b.test -all"]);
        m.insert(
            "b.test",
            vec!["something else", "v=spf1 ~include:SPF.Provider.test ?all"],
        );
        m.insert("spf.provider.test", vec!["v=spf1 ip4:198.51.100.0/24 -all"]);
        m.insert("r.test", vec!["v=spf1 redirect=a.test"]);
        m.insert("loop.test", vec!["v=spf1 include:loop.test"]);
        m.insert("two.test", vec!["v=spf1 -all", "v=spf1 ~all"]);
        m.insert(
            "many.test",
            vec!["v=spf1 a mx a:x mx:y ptr exists:z a/24 mx/24 a:q include:e.test include:f.test"],
        );
        let t = Table(m);
        let (res, chain) = walk(&t, "v=spf1 include:a.test ~all", "spf.provider.test");
        assert_eq!(res, Ok(true));
        assert_eq!(chain, ["a.test", "b.test", "spf.provider.test"]);
        assert_eq!(
            walk(&t, "v=spf1 redirect=a.test", "spf.provider.test").0,
            Ok(true)
        );
        // redirect is ignored next to "all"
        assert_eq!(
            walk(&t, "v=spf1 -all redirect=a.test", "spf.provider.test").0,
            Ok(false)
        );
        assert_eq!(walk(&t, "v=spf1 include:b.test", "other.test").0, Ok(false));
        assert_eq!(
            walk(&t, "v=spf1 include:loop.test", "x.test").0,
            Err(SpfError::TooManyLookups)
        );
        assert_eq!(
            walk(&t, "v=spf1 include:many.test", "x.test").0,
            Err(SpfError::TooManyLookups)
        );
        assert_eq!(
            walk(&t, "v=spf1 include:none.test", "x.test").0,
            Err(SpfError::NoRecord("none.test".into()))
        );
        assert_eq!(
            walk(&t, "v=spf1 include:two.test", "x.test").0,
            Err(SpfError::Multiple("two.test".into(), 2))
        );
        assert!(matches!(
            walk(&t, "v=spf1 include:down.test", "x.test").0,
            Err(SpfError::Dns(_))
        ));
        // odd input does not panic
        for rec in [
            "v=spf1",
            "v=spf1 include:",
            "v=spf1 redirect=",
            "v=spf1 ::: === / %{i}",
        ] {
            let _ = walk(&t, rec, "x.test");
        }
        assert_eq!(
            spf_records(vec!["v=spf10".into(), "V=SPF1 -all".into()]),
            ["V=SPF1 -all"]
        );
    }
}
