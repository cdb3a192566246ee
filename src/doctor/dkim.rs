//! `[dkim]`: the key file (owner and mode as the daemon insists, and a key it can sign
//! with), and the key published at `<selector>._domainkey.<domain>`: there, not revoked,
//! and the public half of `key_file`.

use super::Report;
use super::dns::{DnsFail, Lookup};
use crate::config::{Config, Dkim};
use crate::dkim::{Key, Published, parse_record};
use crate::perms;

/// Check `[dkim]` when it is set. None when it is not (or the answer is unknown); Some(true)
/// when the published key is the key file's, for the DMARC check.
pub(super) fn check(r: &mut Report, cfg: &Config, dns: Option<&dyn Lookup>) -> Option<bool> {
    let d = cfg.dkim.as_ref()?;
    let owner = perms::spool_owner(&crate::spool::Layout::new(&cfg.spool_dir)).ok();
    if let Err(p) = perms::dkim_key_file(&d.key_file, owner) {
        r.problem("dkim", p);
        return Some(false);
    }
    let key = match std::fs::read(&d.key_file) {
        Ok(pem) => match Key::parse(&pem) {
            Ok(k) => k,
            Err(why) => {
                r.fail(
                    "dkim",
                    format!("dkim key_file {}: {why}", d.key_file.display()),
                    "make a key: openssl genpkey -algorithm ed25519 (or RSA, 2048 bits) -out FILE; see relayq.toml(5), [dkim]",
                );
                return Some(false);
            }
        },
        Err(e) => {
            r.warn(
                "dkim",
                format!("cannot read dkim key_file {}: {e}", d.key_file.display()),
                "run relayq doctor as root to compare the key with the one published",
            );
            return None;
        }
    };
    let dns = dns?;
    published(r, dns, d, &key)
}

/// The record at `<selector>._domainkey.<domain>` against `key`.
fn published(r: &mut Report, dns: &dyn Lookup, d: &Dkim, key: &Key) -> Option<bool> {
    let name = format!("{}._domainkey.{}", d.selector, d.domain);
    let publish = format!("publish a TXT record at {name}: \"{}\"", key.record());
    let txts = match dns.txt(&name) {
        Ok(t) => t,
        Err(DnsFail::Missing) => Vec::new(),
        Err(DnsFail::Unreachable(e)) => {
            r.dns_down(&e);
            return None;
        }
    };
    let recs: Vec<Published> = txts
        .iter()
        .map(|t| parse_record(t))
        .filter(|p| !matches!(p, Published::Bad(_)))
        .collect();
    let mut fail = |found: String, fix: String| {
        r.fail("dkim", found, fix);
        Some(false)
    };
    match recs.as_slice() {
        [] => fail(
            format!(
                "no DKIM key at {name}: receivers cannot check the signatures relayq adds{}",
                match txts.first() {
                    Some(t) => format!(" (found {t:?})"),
                    None => String::new(),
                }
            ),
            publish,
        ),
        [Published::Revoked] => fail(
            format!(
                "the key at {name} is revoked (empty p=): receivers treat relayq's signatures as invalid"
            ),
            format!("{publish} (or use a new selector for a new key)"),
        ),
        [Published::Key { k, p }] if key.matches(p) && k == key.kind.tag() => {
            r.pass(
                "dkim",
                format!(
                    "{name} publishes the public key of {} ({})",
                    d.key_file.display(),
                    key.kind
                ),
            );
            Some(true)
        }
        [Published::Key { k, .. }] => fail(
            format!(
                "the key at {name} (k={k}) is not the public key of {} ({}): receivers find relayq's signatures invalid",
                d.key_file.display(),
                key.kind
            ),
            format!("{publish} (or set [dkim] key_file to the key published there)"),
        ),
        many => fail(
            format!(
                "{} DKIM records at {name}: receivers may take any of them",
                many.len()
            ),
            format!("keep one: {publish}"),
        ),
    }
}
