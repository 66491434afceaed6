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
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The connector for server connections (`None` when TLS to servers is off).
pub fn connector(cfg: &TlsConfig) -> Result<Option<tokio_rustls::TlsConnector>, TlsError> {
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
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, e))? {
                roots
                    .add(cert.map_err(|e| file_err(ca, e))?)
                    .map_err(|e| file_err(ca, e))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            if mode == ServerTlsMode::VerifyFull {
                webpki
            } else {
                Arc::new(CaOnly(webpki))
            }
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(tokio_rustls::TlsConnector::from(Arc::new(config))))
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
