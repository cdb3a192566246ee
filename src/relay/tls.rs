//! TLS with the relay: the rustls configuration (system roots and/or `ca_file`), the
//! handshake, the plain-or-TLS stream, what diagnostics see of the connection, and the
//! SHA-256 pin check.

use super::{Kind, Session, SessionError, Stage, Target};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

pub(super) fn tls_error(e: &rustls::Error) -> SessionError {
    match e {
        rustls::Error::InvalidCertificate(c) => {
            SessionError::new(Stage::Tls, Kind::Certificate(format!("{c:?}")))
        }
        other => SessionError::new(Stage::Tls, Kind::Tls(other.to_string())),
    }
}

/// Root store: the system's CAs (unless `only_ca_file`) plus `ca_file`.
pub(crate) fn build_tls_config(
    ca_file: Option<&Path>,
    only_ca_file: bool,
) -> Result<Arc<rustls::ClientConfig>, SessionError> {
    use rustls_pki_types::CertificateDer;
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
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SessionError::local(&e.to_string()))?
    .with_root_certificates(roots)
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
                version: c
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default(),
                cipher: c
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
                    .unwrap_or_default(),
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
            return Err(SessionError::new(
                Stage::Tls,
                Kind::Certificate(format!(
                    "certificate SHA-256 {got} does not match pin_sha256"
                )),
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
    let name = rustls_pki_types::ServerName::try_from(t.host.clone()).map_err(|_| {
        SessionError::new(
            Stage::Tls,
            Kind::Certificate(format!("{} is not a valid TLS server name", t.host)),
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
