//! DKIM signing (RFC 6376; ed25519-sha256 from RFC 8463) for relays that do not sign:
//! `[dkim] domain, selector, key_file`. The daemon signs each message when it sends it, over
//! the bytes exactly as they go on the wire: its trace field first, then the queue file,
//! re-framed as [`Reframe`] frames it (CRLF, lines of at most 998 octets), as the receiver
//! stores it (without the stuffing dots and the final "."). Relaxed/relaxed canonicalization.
//! mail-auth canonicalizes, hashes and signs; this file owns the rest: the key (a secret,
//! checked like a password file and read before the daemon drops its privileges; an
//! unusable key is a configuration error at start and at reload, never at send time), which
//! messages are signed, which header fields, and the key's DNS record (`relayq doctor`).
//!
//! Signed: mail whose header From is in `domain` or a subdomain of it (aligned for DMARC);
//! the rest goes out unsigned, logged. Header fields: [`OVERSIGNED`] once more than they
//! occur (so none can be added, and an absent one stays absent), [`SIGNED`] as they occur.
//!
//! Memory: the header section is held while it is read (at most [`MAX_HEAD`]; a larger one
//! goes out unsigned), the body streams through the hash in 64 KiB pieces; so a message is
//! read twice, once for the hash and once to send it.

use crate::config::{Config, Dkim};
use crate::error::{Error, Result};
use crate::message::{MAX_HEADER_BYTES, Reframe};
use base64::Engine as _;
use log::{info, warn};
use mail_auth::common::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

/// Header fields signed once per occurrence, when present.
pub const SIGNED: &[&str] = &[
    "Sender",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Header fields listed once more than they occur: another one added on the way breaks the
/// signature, and one that is absent is signed as absent.
pub const OVERSIGNED: &[&str] = &["From", "Reply-To", "To", "Cc", "Subject"];

/// The largest header section signed: what `sendmail` accepts, with room for the trace field.
pub const MAX_HEAD: usize = MAX_HEADER_BYTES + 64 * 1024;

/// The key types DKIM knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa { bits: usize },
    Ed25519,
}

impl KeyType {
    /// The `k=` tag's value.
    pub fn tag(self) -> &'static str {
        match self {
            KeyType::Rsa { .. } => "rsa",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyType::Rsa { bits } => write!(f, "rsa-sha256, {bits} bits"),
            KeyType::Ed25519 => f.write_str("ed25519-sha256"),
        }
    }
}

/// A private key from `key_file`, and its public half as DNS publishes it.
pub struct Key {
    pub kind: KeyType,
    key: Arc<DkimKey>,
    /// The `p=` bytes: SubjectPublicKeyInfo for RSA (what `openssl pkey -pubout` writes),
    /// the raw 32 bytes for Ed25519 (RFC 8463).
    public: Vec<u8>,
}

impl Key {
    /// A PEM private key: RSA (PKCS#8 or PKCS#1) of 2048 to 4096 bits, or Ed25519 (PKCS#8).
    pub fn parse(pem: &[u8]) -> std::result::Result<Key, String> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
            "not a PEM private key (want -----BEGIN PRIVATE KEY-----, as `openssl genpkey` writes)"
                .to_string()
        })?;
        let rsa = |r: std::result::Result<RsaKeyPair, ring::error::KeyRejected>| {
            r.map_err(|e| match e.to_string().as_str() {
                "TooSmall" => "an RSA key of fewer than 2048 bits (make one of 2048)".to_string(),
                "TooLarge" => "an RSA key of more than 4096 bits".to_string(),
                why => format!("not a usable RSA key ({why})"),
            })
        };
        let lib = |e: mail_auth::Error| e.to_string();
        match der {
            PrivateKeyDer::Pkcs1(k) => {
                let pair = rsa(RsaKeyPair::from_der(k.secret_pkcs1_der()))?;
                let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(k)).map_err(lib)?;
                Ok(Key::rsa(&pair, key))
            }
            PrivateKeyDer::Pkcs8(k) => {
                let der = k.secret_pkcs8_der();
                match RsaKeyPair::from_pkcs8(der) {
                    Err(e) if e.to_string() == "WrongAlgorithm" => {
                        let pair =
                            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| {
                                if e.to_string() == "WrongAlgorithm" {
                                    "neither an RSA nor an Ed25519 key: DKIM signs with those only"
                                        .to_string()
                                } else {
                                    format!("not a usable Ed25519 key ({e})")
                                }
                            })?;
                        let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(der).map_err(lib)?;
                        Ok(Key {
                            kind: KeyType::Ed25519,
                            key: Arc::new(DkimKey::Ed25519(key)),
                            public: pair.public_key().as_ref().to_vec(),
                        })
                    }
                    r => {
                        let pair = rsa(r)?;
                        let key =
                            RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(k)).map_err(lib)?;
                        Ok(Key::rsa(&pair, key))
                    }
                }
            }
            _ => Err("an EC key: DKIM signs with RSA or Ed25519 keys only".to_string()),
        }
    }

    fn rsa(pair: &RsaKeyPair, key: RsaKey<Sha256>) -> Key {
        let pkcs1 = pair.public().as_ref();
        Key {
            kind: KeyType::Rsa {
                bits: pair.public().modulus_len() * 8,
            },
            key: Arc::new(DkimKey::Rsa(key)),
            public: rsa_spki(pkcs1),
        }
    }

    /// Check `path` like a password file (see [`crate::perms`]), then read and parse it.
    pub fn load(path: &Path, daemon_uid: Option<u32>) -> Result<Key> {
        crate::perms::dkim_key_file(path, daemon_uid)?;
        let pem = std::fs::read(path)
            .map_err(|e| Error::config(format!("dkim key_file {}: {e}", path.display())))?;
        Key::parse(&pem)
            .map_err(|why| Error::config(format!("dkim key_file {}: {why}", path.display())))
    }

    /// The public key as base64, the `p=` tag's value.
    pub fn public_b64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.public)
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn record(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.kind.tag(), self.public_b64())
    }

    /// Whether a published `p=` (base64 decoded) is this key's public half. RSA keys are
    /// compared as RSAPublicKey, whether published as SubjectPublicKeyInfo or bare.
    pub fn matches(&self, published: &[u8]) -> bool {
        bare_public(published) == bare_public(&self.public)
    }
}

/// The key inside a SubjectPublicKeyInfo, or the bytes as they are when they are not one.
fn bare_public(der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    match x509_parser::x509::SubjectPublicKeyInfo::from_der(der) {
        Ok(([], spki)) => spki.subject_public_key.data.to_vec(),
        _ => der.to_vec(),
    }
}

/// DER length octets.
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
}

/// An RSAPublicKey wrapped in a SubjectPublicKeyInfo (rsaEncryption, NULL parameters).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    const ALG: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x03];
    der_len(pkcs1.len() + 1, &mut bits);
    bits.push(0);
    bits.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_len(ALG.len() + bits.len(), &mut out);
    out.extend_from_slice(ALG);
    out.extend_from_slice(&bits);
    out
}

/// What a published DKIM key record says (`v=DKIM1; k=...; p=...`).
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    Key {
        k: String,
        p: Vec<u8>,
    },
    /// `p=` empty: the key is revoked (RFC 6376 3.6.1).
    Revoked,
    /// Not a key record, or `p=` that is not base64.
    Bad(String),
}

/// Read one TXT record as a DKIM key record.
pub fn parse_record(txt: &str) -> Published {
    let mut k = "rsa".to_string();
    let mut p = None;
    for tag in txt.split(';') {
        let Some((name, value)) = tag.split_once('=') else {
            continue;
        };
        match name.trim() {
            "v" if value.trim() != "DKIM1" => {
                return Published::Bad(format!("v={} is not DKIM1", value.trim()));
            }
            "k" => k = value.trim().to_ascii_lowercase(),
            "p" => p = Some(value.split_whitespace().collect::<String>()),
            _ => {}
        }
    }
    match p {
        None => Published::Bad("no p= tag".into()),
        Some(p) if p.is_empty() => Published::Revoked,
        Some(p) => match base64::engine::general_purpose::STANDARD.decode(&p) {
            Ok(p) => Published::Key { k, p },
            Err(_) => Published::Bad("p= is not base64".into()),
        },
    }
}

/// `[dkim]`'s values, checked when the config is read (the key is read by the daemon only).
pub fn check_config(d: &Dkim) -> std::result::Result<(), String> {
    if !d.domain.is_ascii()
        || !crate::address::is_valid_domain(&d.domain)
        || d.domain.starts_with('[')
    {
        return Err(format!(
            "domain {:?} is not a domain name (write an internationalized one as its xn-- form)",
            d.domain
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !d.selector.split('.').all(label_ok) {
        return Err(format!(
            "selector {:?} is not a DNS label like \"mail2026\"",
            d.selector
        ));
    }
    if !d.key_file.is_absolute() {
        return Err(format!(
            "key_file {}: must be an absolute path",
            d.key_file.display()
        ));
    }
    Ok(())
}

/// Why a message goes out unsigned.
#[derive(Debug)]
pub enum Unsigned {
    /// Its header From is in another domain: a signature would not be aligned for DMARC.
    OtherDomain(String),
    NoFrom,
    ManyFrom(usize),
    HeadTooLarge,
    Io(io::Error),
    Sign(String),
}

impl std::fmt::Display for Unsigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsigned::OtherDomain(d) => write!(
                f,
                "its From domain {d} is not the [dkim] domain or a subdomain"
            ),
            Unsigned::NoFrom => f.write_str("it has no From address"),
            Unsigned::ManyFrom(n) => write!(f, "it has {n} From fields"),
            Unsigned::HeadTooLarge => {
                write!(f, "its header section is larger than {MAX_HEAD} bytes")
            }
            Unsigned::Io(e) => write!(f, "cannot read it: {e}"),
            Unsigned::Sign(e) => write!(f, "signing failed: {e}"),
        }
    }
}

impl From<io::Error> for Unsigned {
    fn from(e: io::Error) -> Self {
        Unsigned::Io(e)
    }
}

/// A shared key for mail-auth's signer, which owns its key.
struct Shared(Arc<DkimKey>);

impl SigningKey for Shared {
    type Hasher = Sha256;
    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }
    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

/// The daemon's signer: `[dkim]` with its key loaded.
pub struct Signer {
    domain: String,
    selector: String,
    key: Key,
}

impl Signer {
    /// The signer `cfg` asks for, if any, its key read now (as root if need be): a missing,
    /// unsafe or unusable key is a configuration error.
    pub fn load(cfg: &Config) -> Result<Option<Arc<Signer>>> {
        let Some(d) = &cfg.dkim else {
            return Ok(None);
        };
        let layout = crate::spool::Layout::new(&cfg.spool_dir);
        let daemon_uid = crate::perms::spool_owner(&layout).ok();
        Ok(Some(Arc::new(Signer {
            domain: d.domain.to_ascii_lowercase(),
            selector: d.selector.clone(),
            key: Key::load(&d.key_file, daemon_uid)?,
        })))
    }

    /// The DKIM-Signature field (CRLF-terminated) to send ahead of the message `r` yields
    /// (the trace field first), or "" when it goes out unsigned, which is logged.
    pub fn field(&self, id: &str, r: &mut dyn Read) -> String {
        match self.sign(r) {
            Ok(f) => f,
            Err(u @ (Unsigned::Io(_) | Unsigned::Sign(_))) => {
                warn!("{id}: not DKIM-signed: {u}");
                String::new()
            }
            Err(u) => {
                info!("{id}: not DKIM-signed: {u}");
                String::new()
            }
        }
    }

    /// Sign the message `r` yields, as it will be on the wire.
    pub fn sign(&self, r: &mut dyn Read) -> std::result::Result<String, Unsigned> {
        let mut wire = Wire::new(r);
        let (mut head, mut piece) = (Vec::new(), Vec::new());
        // Where the header section ends (after the CRLF of its last field).
        let end = loop {
            if !wire.next(&mut piece)? {
                break head.len();
            }
            let from = head.len().saturating_sub(3);
            head.extend_from_slice(&piece);
            if let Some(i) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                break from + i + 2;
            }
            if head.len() > MAX_HEAD {
                return Err(Unsigned::HeadTooLarge);
            }
        };
        let fields = fields(&head[..end]);
        self.aligned(&fields)?;
        let signer = DkimSigner::from_key(Shared(self.key.key.clone()))
            .domain(self.domain.as_str())
            .selector(self.selector.as_str())
            .headers(header_list(&fields))
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        let mut stream = signer.sign_streaming();
        stream.write(&head);
        drop(head);
        while wire.next(&mut piece)? {
            stream.write(&piece);
        }
        let sig = stream.finish().map_err(|e| Unsigned::Sign(e.to_string()))?;
        Ok(sig.to_header())
    }

    /// The header From: exactly one field, every address in `domain` or a subdomain.
    fn aligned(&self, fields: &[(String, String)]) -> std::result::Result<(), Unsigned> {
        let froms: Vec<&String> = fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("From"))
            .map(|(_, v)| v)
            .collect();
        let value = match froms.as_slice() {
            [] => return Err(Unsigned::NoFrom),
            [one] => one,
            many => return Err(Unsigned::ManyFrom(many.len())),
        };
        let addrs = crate::address::parse_list(value);
        if addrs.is_empty() {
            return Err(Unsigned::NoFrom);
        }
        for a in addrs {
            let d = a
                .addr
                .rsplit_once('@')
                .map_or("", |(_, d)| d)
                .to_ascii_lowercase();
            let d = d.trim_end_matches('.');
            let sub = d
                .strip_suffix(self.domain.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
            if !sub {
                return Err(Unsigned::OtherDomain(if d.is_empty() {
                    a.addr
                } else {
                    d.to_string()
                }));
            }
        }
        Ok(())
    }
}

/// The `h=` list for mail-auth: each name of [`OVERSIGNED`] twice when present (mail-auth
/// signs every occurrence, then lists a name it did not find once more), once when absent;
/// [`SIGNED`] once when present.
fn header_list(fields: &[(String, String)]) -> Vec<&'static str> {
    let present = |name: &str| fields.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut h = Vec::new();
    for &name in OVERSIGNED {
        h.push(name);
        if present(name) {
            h.push(name);
        }
    }
    h.extend(SIGNED.iter().copied().filter(|n| present(n)));
    h
}

/// A header section's fields, unfolded: (name, value).
fn fields(head: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim_end().to_string(), value.to_string()));
        }
    }
    out
}

/// The message as the receiver stores it: the reader's bytes framed as [`Reframe`] frames
/// them for DATA, without the stuffing dots and the final "." line.
struct Wire<'a> {
    r: &'a mut dyn Read,
    frame: Reframe,
    line_start: bool,
    inb: Vec<u8>,
    framed: Vec<u8>,
    done: bool,
}

impl<'a> Wire<'a> {
    fn new(r: &'a mut dyn Read) -> Wire<'a> {
        Wire {
            r,
            frame: Reframe::default(),
            line_start: true,
            inb: vec![0; 64 * 1024],
            framed: Vec::with_capacity(66 * 1024),
            done: false,
        }
    }

    /// The next piece into `out`; false at the end.
    fn next(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        out.clear();
        if self.done {
            return Ok(false);
        }
        let n = loop {
            match self.r.read(&mut self.inb) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.framed.clear();
        if n == 0 {
            self.done = true;
            self.frame.finish(&mut self.framed);
            // Not the ".\r\n" that ends DATA.
            self.framed.truncate(self.framed.len().saturating_sub(3));
        } else {
            self.frame.push(&self.inb[..n], &mut self.framed);
        }
        for &b in &self.framed {
            // Reframe doubles every dot that starts a line: the receiver removes one.
            if self.line_start && b == b'.' {
                self.line_start = false;
                continue;
            }
            self.line_start = b == b'\n';
            out.push(b);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dkim")
            .join(name);
        std::fs::read(p).unwrap()
    }

    fn signer(key: &str) -> Signer {
        Signer {
            domain: "example.com".into(),
            selector: "sel".into(),
            key: Key::parse(&fixture(key)).unwrap(),
        }
    }

    fn wire(msg: &[u8]) -> Vec<u8> {
        let mut r = msg;
        let mut w = Wire::new(&mut r);
        let (mut all, mut piece) = (Vec::new(), Vec::new());
        while w.next(&mut piece).unwrap() {
            all.extend_from_slice(&piece);
        }
        all
    }

    #[test]
    fn wire_is_what_the_receiver_stores() {
        assert_eq!(
            wire(b"A: b\n\n.x\n..\nend"),
            b"A: b\r\n\r\n.x\r\n..\r\nend\r\n"
        );
        assert_eq!(wire(b""), b"");
        let long = wire(&[b'y'; 2000]);
        assert_eq!(
            long.len(),
            2000 + 3 * 2,
            "broken at 998 as Reframe breaks it"
        );
    }

    #[test]
    fn keys_of_each_kind_and_their_records() {
        let rsa = Key::parse(&fixture("rsa.pem")).unwrap();
        assert_eq!(rsa.kind, KeyType::Rsa { bits: 2048 });
        let want = String::from_utf8(fixture("rsa.pub")).unwrap();
        assert_eq!(
            rsa.public_b64(),
            want.trim(),
            "p= as openssl pkey -pubout writes it"
        );
        assert_eq!(rsa.record(), format!("v=DKIM1; k=rsa; p={}", want.trim()));
        let pkcs1 = Key::parse(&fixture("rsa-pkcs1.pem")).unwrap();
        assert_eq!(pkcs1.public_b64(), rsa.public_b64());
        let ed = Key::parse(&fixture("ed.pem")).unwrap();
        assert_eq!(ed.kind, KeyType::Ed25519);
        let want = String::from_utf8(fixture("ed.pub")).unwrap();
        assert_eq!(
            ed.record(),
            format!("v=DKIM1; k=ed25519; p={}", want.trim())
        );
        for (pem, why) in [
            (fixture("rsa1024.pem"), "fewer than 2048 bits"),
            (fixture("ec.pem"), "neither an RSA nor an Ed25519 key"),
            (b"hello\n".to_vec(), "not a PEM private key"),
            (fixture("rsa.pub"), "not a PEM private key"),
        ] {
            let e = Key::parse(&pem).err().expect(why);
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn published_records() {
        let rsa = Key::parse(&fixture("rsa.pem")).unwrap();
        let Published::Key { k, p } = parse_record(&rsa.record()) else {
            panic!()
        };
        assert_eq!(k, "rsa");
        assert!(rsa.matches(&p));
        // The same key published bare (RSAPublicKey) also matches; another key does not.
        assert!(rsa.matches(&bare_public(&p)));
        let ed = Key::parse(&fixture("ed.pem")).unwrap();
        assert!(!rsa.matches(&ed.public) && !ed.matches(&p));
        // Split into 255-octet strings and joined with spaces by some DNS tools.
        let spaced = rsa.record().replace("AQAB", " AQ AB");
        assert!(matches!(parse_record(&spaced), Published::Key { .. }));
        assert_eq!(parse_record("v=DKIM1; k=rsa; p="), Published::Revoked);
        assert!(matches!(parse_record("v=spf1 -all"), Published::Bad(_)));
        assert!(matches!(parse_record("v=DKIM1; p=%%%"), Published::Bad(_)));
        assert!(matches!(parse_record("v=DKIM2; p=AAAA"), Published::Bad(_)));
    }

    #[test]
    fn config_values() {
        let d = |domain: &str, selector: &str, key: &str| Dkim {
            domain: domain.into(),
            selector: selector.into(),
            key_file: key.into(),
        };
        assert_eq!(check_config(&d("example.com", "s2026", "/k")), Ok(()));
        assert_eq!(check_config(&d("example.com", "a.b_c", "/k")), Ok(()));
        for bad in [
            d("exa mple.com", "s", "/k"),
            d("bücher.example", "s", "/k"),
            d("[192.0.2.1]", "s", "/k"),
            d("example.com", "", "/k"),
            d("example.com", "s;t", "/k"),
            d("example.com", "s", "k.pem"),
        ] {
            assert!(check_config(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn which_messages_are_signed() {
        let s = signer("ed.pem");
        let sign = |m: &str| s.sign(&mut m.as_bytes());
        for ok in [
            "From: a@example.com\n\nx\n",
            "From: \"A\" <a@Mail.Example.COM>\n\nx\n",
            "FROM: a@example.com, b@sub.example.com\n\nx\n",
            "From: a@example.com\n",
        ] {
            assert!(sign(ok).is_ok(), "{ok:?}");
        }
        for (bad, why) in [
            ("From: a@notexample.com\n\nx\n", "notexample.com is not"),
            ("From: a@example.com, b@other.org\n\nx\n", "other.org"),
            ("Subject: x\n\nx\n", "no From"),
            ("From: a@example.com\nFrom: b@example.com\n\nx\n", "2 From"),
        ] {
            let e = sign(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let huge = format!("From: a@example.com\nX: {}\n\nx\n", "y".repeat(MAX_HEAD));
        assert!(matches!(sign(&huge), Err(Unsigned::HeadTooLarge)));
    }

    /// The tags, the signed fields (From oversigned) and the body hash of relaxed
    /// canonicalization over the wire form (here: trailing blanks and empty lines dropped).
    #[test]
    fn signature_fields_and_body_hash() {
        for (key, a) in [("rsa.pem", "rsa-sha256"), ("ed.pem", "ed25519-sha256")] {
            let msg = "Received: by h\r\n\tid 1\r\nFrom: a@example.com\r\nTo: b@x.org\r\nX-Other: 1\r\n\r\n.dot  \r\nb\t\r\n\r\n\r\n";
            let f = signer(key).sign(&mut msg.as_bytes()).unwrap();
            assert!(
                f.starts_with("DKIM-Signature: v=1; a=") && f.ends_with(";\r\n"),
                "{f}"
            );
            let flat: String = f.split_whitespace().collect();
            assert!(
                flat.contains(&format!("a={a};s=sel;d=example.com;c=relaxed/relaxed;")),
                "{f}"
            );
            let h = flat.split(";h=").nth(1).unwrap().split(';').next().unwrap();
            assert_eq!(h, "To:From:From:Reply-To:To:Cc:Subject", "{f}");
            let bh = flat
                .split(";bh=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap();
            let want = ring::digest::digest(&ring::digest::SHA256, b".dot\r\nb\r\n");
            assert_eq!(
                bh,
                base64::engine::general_purpose::STANDARD.encode(want),
                "{f}"
            );
        }
    }
}
