//! TLS to PostgreSQL, with libpq's `sslmode` meanings.
//!
//! - `disable`: no TLS. `prefer` (the default): TLS when the server offers
//!   it, else none. `require`: TLS or no connection. As with libpq when no
//!   root certificate is configured, these encrypt without checking the
//!   server's certificate.
//! - `verify-ca`, `verify-full`: TLS, and the server's certificate must
//!   chain to a root of the system's store (where a TencentDB CA
//!   certificate is installed) and name the host.
//!
//! The client (`tokio-postgres`) knows the first three only; the two
//! verifying modes are taken out of the URL here and ask for `require`
//! with a verifying connector.

use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// `url` with a verifying `sslmode` replaced by `require`, and whether the
/// certificate is to be verified.
pub(super) fn split_verify(url: &str) -> (String, bool) {
    let Some(query_at) = url.find('?') else {
        return (url.to_owned(), false);
    };
    let mut verify = false;
    let parameters: Vec<String> = url[query_at + 1..]
        .split('&')
        .map(|parameter| match parameter {
            "sslmode=verify-full" | "sslmode=verify-ca" => {
                verify = true;
                "sslmode=require".to_owned()
            }
            other => other.to_owned(),
        })
        .collect();
    (
        format!("{}?{}", &url[..query_at], parameters.join("&")),
        verify,
    )
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// The connector: verifying against the system's roots, or encrypting
/// only.
pub(super) fn connector(verify: bool) -> anyhow::Result<MakeRustlsConnect> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| anyhow::anyhow!("cannot set up TLS: {error}"))?;
    let config = if verify {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if roots.is_empty() {
            anyhow::bail!(
                "sslmode=verify-full needs root certificates in the system store, and none were found"
            );
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

/// libpq's `prefer`/`require`: any certificate, but the handshake's
/// signatures are still checked (so the session key is the server's).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        crypto::verify_tls12_signature(
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
        crypto::verify_tls13_signature(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_modes_become_require_with_verification() {
        assert_eq!(
            split_verify("postgres://h/db?sslmode=verify-full&application_name=x"),
            (
                "postgres://h/db?sslmode=require&application_name=x".to_owned(),
                true
            )
        );
        assert_eq!(
            split_verify("postgres://h/db?sslmode=require"),
            ("postgres://h/db?sslmode=require".to_owned(), false)
        );
        assert_eq!(
            split_verify("postgres://h/db"),
            ("postgres://h/db".to_owned(), false)
        );
        assert!(connector(false).is_ok());
    }
}
