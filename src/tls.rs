//! TLS with rustls (ring provider), both ways.
//!
//! * Client-facing: an acceptor from `client_tls_cert_file`/`client_tls_key_file`; clients
//!   that send SSLRequest get `S` and a handshake; with `require`, plaintext logins are
//!   refused.
//! * Server-facing, libpq's sslmode semantics: `prefer` and `require` encrypt without
//!   authenticating the server (as libpq does), `verify-ca` checks the chain against
//!   `server_tls_ca_file`, `verify-full` also checks the host name.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Client-facing TLS (PgBouncer's `client_tls_sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    /// SSLRequest is answered `N`.
    #[default]
    Disable,
    /// TLS when the client asks for it.
    Allow,
    /// Same as `allow` (PgBouncer accepts both names).
    Prefer,
    /// Plaintext logins are refused.
    Require,
}

/// Server-facing TLS (PgBouncer's `server_tls_sslmode`, libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    #[default]
    Disable,
    /// TLS when the server offers it, plaintext otherwise; no authentication.
    Prefer,
    /// TLS or fail; no authentication.
    Require,
    /// TLS, chain verified against the CA; host name not checked.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

/// TLS settings (`[tls]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// `disable`, `allow`/`prefer` (TLS when the client asks) or `require`.
    pub client_tls_sslmode: ClientTlsMode,
    /// PEM certificate chain presented to clients.
    pub client_tls_cert_file: Option<PathBuf>,
    /// PEM private key for `client_tls_cert_file`.
    pub client_tls_key_file: Option<PathBuf>,
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`.
    pub server_tls_sslmode: ServerTlsMode,
    /// PEM CA bundle for `verify-ca` / `verify-full`.
    pub server_tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Verifier(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The acceptor for client connections.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let chain = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The connector for server connections (`None` when TLS to servers is off).
pub fn connector(cfg: &TlsConfig) -> Result<Option<tokio_rustls::TlsConnector>, TlsError> {
    Ok(client_config(cfg)?.map(|c| tokio_rustls::TlsConnector::from(Arc::new(c))))
}

/// The rustls client settings behind [`connector`], for clients that take them whole
/// (tokio-postgres in the health check).
pub fn client_config(cfg: &TlsConfig) -> Result<Option<rustls::ClientConfig>, TlsError> {
    let mode = cfg.server_tls_sslmode;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        ServerTlsMode::Disable => return Ok(None),
        ServerTlsMode::Prefer | ServerTlsMode::Require => Arc::new(NoVerification(provider())),
        ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull => {
            let Some(ca) = &cfg.server_tls_ca_file else {
                return Err(TlsError::Verifier(
                    "server_tls_ca_file is needed for verify-ca / verify-full".into(),
                ));
            };
            let webpki = chain_verifier(read_certs(ca)?).map_err(|e| match e {
                TlsError::Rustls(e) => file_err(ca, e),
                e => e,
            })?;
            if mode == ServerTlsMode::VerifyFull {
                webpki
            } else {
                Arc::new(CaOnly(webpki))
            }
        }
    };
    verified_by(verifier).map(Some)
}

/// Every certificate of a PEM file, in file order.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The certificate names itself as its issuer (`openssl req -x509`, or a CA root). An
/// unparsable certificate is not.
pub fn is_self_signed(cert: &CertificateDer<'_>) -> bool {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(cert.as_ref())
        .is_ok_and(|c| c.tbs_certificate.issuer == c.tbs_certificate.subject)
}

/// webpki's chain and name check, trusting exactly `anchors`.
fn chain_verifier(
    anchors: Vec<CertificateDer<'static>>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in anchors {
        roots.add(cert)?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))
}

fn client_connector(
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<tokio_rustls::TlsConnector, TlsError> {
    Ok(tokio_rustls::TlsConnector::from(Arc::new(verified_by(
        verifier,
    )?)))
}

fn verified_by(verifier: Arc<dyn ServerCertVerifier>) -> Result<rustls::ClientConfig, TlsError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// A connector for checking a server whose certificate Pake was configured with: the
/// certificate it presents must be one of `anchors` (a self-signed certificate is its own
/// trust anchor) or chain to one of them. The name is not checked (`verify-ca`): the
/// caller reaches the server at an address its certificate need not name.
pub fn anchored_connector(
    anchors: Vec<CertificateDer<'static>>,
) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let chain = CaOnly(chain_verifier(anchors.clone())?);
    client_connector(Arc::new(Pinned { anchors, chain }))
}

/// A connector that encrypts without authenticating the server (libpq's `require`). Only
/// for connections that carry nothing secret.
pub fn unverified_connector() -> Result<tokio_rustls::TlsConnector, TlsError> {
    client_connector(Arc::new(NoVerification(provider())))
}

/// `prefer` / `require`: encryption without authentication, as libpq does for these modes.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must verify; a host-name mismatch is accepted.
#[derive(Debug)]
struct CaOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for CaOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
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

/// [`anchored_connector`]'s check: an end-entity certificate equal to an anchor is
/// accepted as it is (webpki refuses a self-signed `CA:TRUE` certificate as an end entity,
/// and `openssl req -x509` makes exactly those); any other must chain to an anchor.
#[derive(Debug)]
struct Pinned {
    anchors: Vec<CertificateDer<'static>>,
    chain: CaOnly,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .anchors
            .iter()
            .any(|a| a.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.chain
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Built TLS state for a configuration.
#[derive(Clone, Default)]
pub struct Tls {
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub client_mode: ClientTlsMode,
    pub connector: Option<tokio_rustls::TlsConnector>,
    pub server_mode: ServerTlsMode,
}

impl Tls {
    pub fn build(cfg: &TlsConfig) -> Result<Tls, TlsError> {
        let acceptor = match (
            cfg.client_tls_sslmode,
            &cfg.client_tls_cert_file,
            &cfg.client_tls_key_file,
        ) {
            (ClientTlsMode::Disable, _, _) => None,
            (_, Some(cert), Some(key)) => Some(acceptor(cert, key)?),
            _ => {
                return Err(TlsError::Verifier(
                    "client TLS needs client_tls_cert_file and client_tls_key_file".into(),
                ))
            }
        };
        Ok(Tls {
            acceptor,
            client_mode: cfg.client_tls_sslmode,
            connector: connector(cfg)?,
            server_mode: cfg.server_tls_sslmode,
        })
    }

    pub fn client_required(&self) -> bool {
        self.client_mode == ClientTlsMode::Require
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -x509` as an operator would run it: self-signed, and `CA:TRUE` by
    /// OpenSSL's defaults.
    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        (cert, key)
    }

    /// A TLS server presenting `cert` on a real socket, and whether `connector` completes a
    /// handshake with it (reached as 127.0.0.1, a name the certificate does not carry).
    async fn handshake(cert: &Path, key: &Path, connector: tokio_rustls::TlsConnector) -> bool {
        let acceptor = acceptor(cert, key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.is_ok()
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::from(addr.ip());
        let ok = connector.connect(name, tcp).await.is_ok();
        let _ = server.await;
        ok
    }

    #[tokio::test]
    async fn a_self_signed_certificate_is_its_own_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "pake");
        let (other, _) = self_signed(dir.path(), "other");
        let mine = read_certs(&cert).unwrap();
        assert!(is_self_signed(&mine[0]));
        let pinned = anchored_connector(mine).unwrap();
        assert!(handshake(&cert, &key, pinned).await);
        let stranger = anchored_connector(read_certs(&other).unwrap()).unwrap();
        assert!(!handshake(&cert, &key, stranger).await);
        assert!(handshake(&cert, &key, unverified_connector().unwrap()).await);

        let lab = crate::lab::certs::Certs::generate().unwrap();
        assert!(!is_self_signed(&read_certs(&lab.cert).unwrap()[0]));
        let root = anchored_connector(read_certs(&lab.ca).unwrap()).unwrap();
        assert!(handshake(&lab.cert, &lab.key, root).await);
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let empty = read_certs(&dir.path().join("empty.pem")).unwrap_err();
        assert!(empty.to_string().contains("no PEM certificate"), "{empty}");
    }
}
