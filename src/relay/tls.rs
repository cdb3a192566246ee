//! TLS with the relay: the rustls configuration (system roots and/or `ca_file`, webpki's
//! verifier wrapped so that a refused certificate is explained from the certificate
//! itself), the handshake, the plain-or-TLS stream, what diagnostics see of the connection,
//! the SHA-256 pin check, and rustls's failures in an admin's words.

use super::{Kind, Session, SessionError, Stage, Target};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

/// What relayq offers in a TLS handshake, for hints (rustls with ring, safe defaults; the
/// unit test `offer_matches_the_provider` keeps it true).
pub(crate) const TLS_OFFER: &str = "TLS 1.3 or 1.2 with ECDHE key exchange and AES-GCM or ChaCha20-Poly1305 (no CBC ciphers, no RSA key exchange, nothing older than TLS 1.2)";

/// Which check the relay's certificate failed: decides the hint (a private CA's `ca_file`
/// helps only an unknown issuer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertIssue {
    /// Not valid for the host name relayq connected to.
    Name,
    /// No trusted CA vouches for it (self-signed, private CA, missing intermediate).
    Issuer,
    Expired,
    NotYetValid,
    /// It does not match `pin_sha256`.
    Pin,
    Other,
}

/// A rejected certificate, in the admin's words: what it is for, who issued it, how long
/// it is valid, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertProblem {
    pub issue: CertIssue,
    pub text: String,
}

impl fmt::Display for CertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for CertProblem {}

/// What an admin wants to see of a certificate.
pub(crate) struct CertFacts {
    /// DNS names and IP addresses (subjectAltName), else the subject's CN.
    pub names: Vec<String>,
    pub subject: String,
    pub issuer: String,
    pub self_signed: bool,
    /// Unix times.
    pub not_before: i64,
    pub not_after: i64,
}

/// The facts of a DER certificate (None if it does not parse).
pub(crate) fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    use x509_parser::extensions::GeneralName;
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => names.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        names.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            c.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_string),
        );
    }
    Some(CertFacts {
        names,
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        self_signed: c.subject().as_raw() == c.issuer().as_raw(),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
    })
}

/// A Unix time as a UTC date, "2026-12-02".
pub(crate) fn utc_day(t: i64) -> String {
    let (y, m, d) = crate::message::civil_from_days(t.div_euclid(86400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// "NotValidForName { .. }" → "not valid for name": a library's variant name as words, for
/// the rare failures that get no sentence of their own.
fn words(debug: &str) -> String {
    let head = debug.split(['(', '{', ' ']).next().unwrap_or(debug).trim();
    let mut out = String::new();
    for (i, ch) in head.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

/// A certificate rejection in the admin's words, from rustls's reason and the certificate.
pub(crate) fn explain_cert(e: &CertificateError, der: &[u8], host: &str) -> CertProblem {
    use CertificateError as C;
    let Some(f) = cert_facts(der) else {
        let issue = match e {
            C::NotValidForName | C::NotValidForNameContext { .. } => CertIssue::Name,
            C::UnknownIssuer => CertIssue::Issuer,
            C::Expired | C::ExpiredContext { .. } => CertIssue::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => CertIssue::NotYetValid,
            _ => CertIssue::Other,
        };
        return CertProblem {
            issue,
            text: format!(
                "the relay's certificate was rejected: {}",
                words(&format!("{e:?}"))
            ),
        };
    };
    let names = if f.names.is_empty() {
        "no host name".to_string()
    } else {
        f.names.join(", ")
    };
    let issuer = if f.self_signed {
        "itself (self-signed)".to_string()
    } else {
        f.issuer.clone()
    };
    let valid = format!(
        "valid {} to {}",
        utc_day(f.not_before),
        utc_day(f.not_after)
    );
    let (issue, text) = match e {
        C::NotValidForName | C::NotValidForNameContext { .. } => (
            CertIssue::Name,
            format!(
                "the relay's certificate is for {names}, not {host} (issued by {issuer}; {valid})"
            ),
        ),
        C::UnknownIssuer if f.self_signed => (
            CertIssue::Issuer,
            format!(
                "the relay's certificate for {names} is self-signed ({}), and nothing this host trusts vouches for it ({valid})",
                f.subject
            ),
        ),
        C::UnknownIssuer => (
            CertIssue::Issuer,
            format!(
                "the relay's certificate for {names} is issued by {}, which this host does not trust (or the relay does not send the intermediate certificate) ({valid})",
                f.issuer
            ),
        ),
        C::Expired | C::ExpiredContext { .. } => (
            CertIssue::Expired,
            format!(
                "the relay's certificate for {names} expired on {} (issued by {issuer})",
                utc_day(f.not_after)
            ),
        ),
        C::NotValidYet | C::NotValidYetContext { .. } => (
            CertIssue::NotYetValid,
            format!(
                "the relay's certificate for {names} is valid only from {}: check this host's clock (issued by {issuer})",
                utc_day(f.not_before)
            ),
        ),
        C::Revoked => (
            CertIssue::Other,
            format!("the relay's certificate for {names} has been revoked by {issuer}"),
        ),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => (
            CertIssue::Other,
            format!(
                "the relay's certificate for {names} is not meant for a TLS server (its extended key usage lacks serverAuth; issued by {issuer})"
            ),
        ),
        C::BadSignature
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => (
            CertIssue::Other,
            format!(
                "the relay's certificate for {names} has a signature relayq cannot verify (issued by {issuer})"
            ),
        ),
        other => (
            CertIssue::Other,
            format!(
                "the relay's certificate for {names} was rejected: {} (issued by {issuer}; {valid})",
                words(&format!("{other:?}"))
            ),
        ),
    };
    CertProblem { issue, text }
}

/// The system's verifier (webpki), with its refusals explained: a failure carries a
/// [`CertProblem`] built from the certificate itself, which rustls does not keep once the
/// handshake has failed.
#[derive(Debug)]
struct Explaining(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for Explaining {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(c) => {
                    let p = explain_cert(&c, end_entity, &server_name.to_str());
                    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                        Arc::new(p),
                    )))
                }
                other => other,
            })
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A rustls failure in the admin's words: never a library's Debug output or URL.
pub(super) fn tls_error(e: &rustls::Error) -> SessionError {
    use rustls::Error as E;
    let tls = |m: String| SessionError::new(Stage::Tls, Kind::Tls(m));
    match e {
        E::InvalidCertificate(CertificateError::Other(o)) => {
            match o.0.downcast_ref::<CertProblem>() {
                Some(p) => SessionError::new(Stage::Tls, Kind::Certificate(p.clone())),
                None => SessionError::new(
                    Stage::Tls,
                    Kind::Certificate(CertProblem {
                        issue: CertIssue::Other,
                        text: format!("the relay's certificate was rejected: {}", o.0),
                    }),
                ),
            }
        }
        E::InvalidCertificate(c) => SessionError::new(
            Stage::Tls,
            Kind::Certificate(explain_cert(c, &[], "")),
        ),
        E::AlertReceived(a) => tls(format!(
            "the relay ended TLS with the alert \"{}\"",
            words(&format!("{a:?}"))
        )),
        E::PeerIncompatible(p) => tls(format!(
            "the relay's TLS and relayq's have nothing in common ({})",
            words(&format!("{p:?}"))
        )),
        E::PeerMisbehaved(p) => tls(format!(
            "the relay broke the TLS protocol ({})",
            words(&format!("{p:?}"))
        )),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => tls(
            "the relay's answer is not the TLS relayq expected (does this port speak TLS from the first byte?)"
                .into(),
        ),
        E::NoCertificatesPresented => tls("the relay sent no certificate".into()),
        E::DecryptError => tls("cannot decrypt the relay's TLS data".into()),
        other => tls(other.to_string()),
    }
}

/// Root store: the system's CAs (unless `only_ca_file`) plus `ca_file`.
pub(crate) fn build_tls_config(
    ca_file: Option<&Path>,
    only_ca_file: bool,
) -> Result<Arc<rustls::ClientConfig>, SessionError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if !only_ca_file {
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
    }
    if let Some(p) = ca_file {
        let certs = CertificateDer::pem_file_iter(p)
            .map_err(|e| SessionError::local(&format!("ca_file {}: {e}", p.display())))?;
        for c in certs {
            let c = c.map_err(|e| SessionError::local(&format!("ca_file {}: {e}", p.display())))?;
            roots
                .add(c)
                .map_err(|e| SessionError::local(&format!("ca_file {}: {e}", p.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(SessionError::local(
            "no trusted CA certificates (install ca-certificates or set ca_file)",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| SessionError::local(&format!("TLS set-up: {e}")))?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SessionError::local(&format!("TLS set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Explaining(verifier)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(t) => t.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(b),
            Stream::Tls(t) => t.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// TLS facts for diagnostics.
#[derive(Debug, Clone)]
pub(crate) struct TlsInfo {
    pub version: String,
    pub cipher: String,
    pub peer_cert_der: Vec<u8>,
}

impl Session {
    pub(super) fn note_tls(&mut self) {
        if let Stream::Tls(t) = self.io.get_ref() {
            let c = &t.conn;
            self.tls = Some(TlsInfo {
                version: match c.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".into(),
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".into(),
                    Some(v) => v.as_str().unwrap_or("TLS").replace('_', "."),
                    None => String::new(),
                },
                cipher: c
                    .negotiated_cipher_suite()
                    .and_then(|s| s.suite().as_str())
                    .unwrap_or_default()
                    .to_string(),
                peer_cert_der: c
                    .peer_certificates()
                    .and_then(|v| v.first())
                    .map(|d| d.as_ref().to_vec())
                    .unwrap_or_default(),
            });
        }
    }

    pub(super) fn check_pin(&self, t: &Target) -> Result<(), SessionError> {
        let Some(pin) = &t.pin_sha256 else {
            return Ok(());
        };
        let der = self
            .tls
            .as_ref()
            .map(|i| i.peer_cert_der.clone())
            .unwrap_or_default();
        let got: String = ring::digest::digest(&ring::digest::SHA256, &der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let want: String = pin
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect::<String>()
            .to_ascii_lowercase();
        if got != want {
            let about = cert_facts(&der)
                .map(|f| {
                    format!(
                        " (for {}; issued by {}; valid to {})",
                        f.names.join(", "),
                        f.issuer,
                        utc_day(f.not_after)
                    )
                })
                .unwrap_or_default();
            return Err(SessionError::new(
                Stage::Tls,
                Kind::Certificate(CertProblem {
                    issue: CertIssue::Pin,
                    text: format!(
                        "the relay's certificate{about} has SHA-256 {got}, which does not match pin_sha256 (a renewed certificate needs a new pin)"
                    ),
                }),
            ));
        }
        Ok(())
    }
}

pub(super) fn tls_wrap(
    t: &Target,
    tcp: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, SessionError> {
    let cfg = t
        .tls_config
        .clone()
        .ok_or_else(|| SessionError::local("TLS required but no TLS configuration"))?;
    let name = ServerName::try_from(t.host.clone()).map_err(|_| {
        SessionError::new(
            Stage::Tls,
            Kind::Certificate(CertProblem {
                issue: CertIssue::Name,
                text: format!("{} is not a host name a certificate can be for", t.host),
            }),
        )
    })?;
    let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| tls_error(&e))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        if let Err(e) = s.conn.complete_io(&mut s.sock) {
            return Err(SessionError::io(Stage::Tls, &e));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_words() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400), "2000-02-29");
        assert_eq!(utc_day(1_580_428_800), "2020-01-31");
        assert_eq!(utc_day(-86_400), "1969-12-31");
        assert_eq!(words("NotValidForName"), "not valid for name");
        assert_eq!(words("HandshakeFailure"), "handshake failure");
        assert_eq!(words("UnknownIssuer { x: 1 }"), "unknown issuer");
    }

    #[test]
    fn rustls_failures_read_as_words() {
        let e = tls_error(&rustls::Error::AlertReceived(
            rustls::AlertDescription::InternalError,
        ));
        assert_eq!(
            e.to_string(),
            "TLS failure: the relay ended TLS with the alert \"internal error\""
        );
        let e = tls_error(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(
            matches!(&e.kind, Kind::Certificate(p) if p.issue == CertIssue::Issuer && p.text.ends_with("unknown issuer"))
        );
    }

    /// TLS_OFFER names what the provider really offers.
    #[test]
    fn offer_matches_the_provider() {
        for s in rustls::crypto::ring::default_provider().cipher_suites {
            let name = s.suite().as_str().unwrap_or("");
            assert!(
                name.contains("GCM") || name.contains("CHACHA20"),
                "{name} is not in TLS_OFFER"
            );
            assert!(
                name.starts_with("TLS13_") || name.contains("ECDHE"),
                "{name} is not in TLS_OFFER"
            );
        }
        for v in rustls::DEFAULT_VERSIONS {
            assert!(matches!(
                v.version,
                rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2
            ));
        }
    }
}
