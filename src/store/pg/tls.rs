//! TLS to PostgreSQL, with libpq's `sslmode`, `sslrootcert`, `sslcert` and
//! `sslkey` meanings.
//!
//! - `disable`: no TLS. `prefer` (the default): TLS when the server offers
//!   it, else none. `require`: TLS or no connection. As with libpq when no
//!   root certificate is configured, these encrypt without checking the
//!   server's certificate.
//! - `verify-ca`: TLS, and the server's certificate must chain to a root
//!   certificate; its host name is not checked. `verify-full`: the
//!   certificate must also name the host of the URL: in its
//!   subjectAltName, or, as libpq accepts, in its CN when the
//!   subjectAltName has no name of the host's kind (DNS name or IP
//!   address).
//! - `sslrootcert=<file>`: the root certificates (PEM, one or more) the
//!   verifying modes check against, instead of the system's store. With
//!   `require` or `prefer` it also checks the chain, as libpq does when a
//!   root certificate file exists; a `prefer` connection whose TLS
//!   handshake fails is then tried once more without TLS, as libpq does
//!   (a warning says so once).
//!   `sslrootcert=system` is the system's store and, as in libpq 16, asks
//!   for `verify-full` (the default then; any weaker mode is an error).
//!   Without `sslrootcert`, libpq's default `~/.postgresql/root.crt` is
//!   used when it exists, as if named (so `require` and `prefer` check the
//!   chain too); when it does not, the verifying modes use the system's
//!   store (libpq would refuse to connect).
//! - `sslcert=<file>` and `sslkey=<file>` (PEM, both or neither): a client
//!   certificate for servers that ask for one (`cert` authentication). The
//!   key must not be encrypted (`sslpassword` is not supported). Without
//!   either, libpq's `~/.postgresql/postgresql.crt` and `postgresql.key`
//!   are used when both exist.
//!
//! The client (`tokio-postgres`) knows the first three modes and none of
//! the file parameters: [`split_verify`] takes them out of the URL (a
//! verifying mode becomes `require`) and [`connector`] builds the
//! connector they ask for. Files are read when the store is opened; an
//! error names the parameter and the file, never the URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Verify {
    /// Nothing (encryption only): `prefer`, `require` without a root
    /// certificate file.
    #[default]
    Nothing,
    /// The chain up to a root: `verify-ca`, or `require`/`prefer` with
    /// `sslrootcert`.
    Chain,
    /// The chain and the host name: `verify-full`.
    Full,
}

/// Where the root certificates come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Roots {
    /// The system's store (no `sslrootcert`, or `sslrootcert=system`).
    #[default]
    System,
    /// A PEM file (`sslrootcert=<file>`).
    File(PathBuf),
}

/// What a URL asks of TLS beyond what `tokio-postgres` reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct TlsSettings {
    pub(super) verify: Verify,
    pub(super) roots: Roots,
    /// `sslcert`: the client certificate chain (PEM).
    pub(super) cert: Option<PathBuf>,
    /// `sslkey`: its private key (PEM).
    pub(super) key: Option<PathBuf>,
    /// A combination libpq refuses too, reported by [`connector`].
    pub(super) problem: Option<String>,
}

/// libpq's default files under `~/.postgresql/`, those that exist: used
/// when the URL names none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Defaults {
    /// `root.crt`.
    pub(super) root: Option<PathBuf>,
    /// `postgresql.crt` and `postgresql.key`, when both exist.
    pub(super) identity: Option<(PathBuf, PathBuf)>,
}

impl Defaults {
    /// The files under `$HOME/.postgresql/`.
    pub(super) fn from_home() -> Defaults {
        let Some(home) = std::env::var_os("HOME").filter(|home| !home.is_empty()) else {
            return Defaults::default();
        };
        let dir = Path::new(&home).join(".postgresql");
        let existing = |name: &str| {
            let path = dir.join(name);
            path.is_file().then_some(path)
        };
        Defaults {
            root: existing("root.crt"),
            identity: existing("postgresql.crt").zip(existing("postgresql.key")),
        }
    }
}

/// `url` without the TLS parameters `tokio-postgres` does not know
/// (`sslrootcert`, `sslcert`, `sslkey`) and with a verifying `sslmode`
/// replaced by `require`, and the settings they make, with `defaults`
/// where the URL names no file.
pub(super) fn split_verify(url: &str, defaults: Defaults) -> (String, TlsSettings) {
    let mut settings = TlsSettings::default();
    let Some(query_at) = url.find('?') else {
        settings = settings.with_defaults(None, defaults);
        // The default mode (prefer) with a root file checks the chain.
        if matches!(settings.roots, Roots::File(_)) {
            settings.verify = Verify::Chain;
        }
        return (url.to_owned(), settings);
    };
    let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
    let (mut mode, mut root_file): (Option<String>, Option<String>) = (None, None);
    // The parameters passed on; `None` where an `sslmode` stood.
    let mut kept: Vec<Option<&str>> = Vec::new();
    for parameter in url[query_at + 1..].split('&') {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        // As in libpq and tokio-postgres, the last of a repeated name wins.
        match decode(name).as_str() {
            "sslmode" => {
                mode = Some(decode(value));
                kept.push(None);
            }
            "sslrootcert" => root_file = Some(decode(value)),
            "sslcert" => settings.cert = Some(PathBuf::from(decode(value))),
            "sslkey" => settings.key = Some(PathBuf::from(decode(value))),
            _ => kept.push(Some(parameter)),
        }
    }
    let system = root_file.as_deref() == Some("system");
    settings = settings.with_defaults(root_file, defaults);
    let file = matches!(settings.roots, Roots::File(_));
    let passed = match mode.as_deref() {
        // libpq 16: sslrootcert=system makes verify-full the default.
        None if system => {
            settings.verify = Verify::Full;
            kept.push(None);
            "require".to_owned()
        }
        Some("verify-full") => {
            settings.verify = Verify::Full;
            "require".to_owned()
        }
        Some("verify-ca") => {
            settings.verify = Verify::Chain;
            "require".to_owned()
        }
        None | Some("require" | "prefer") => {
            if file {
                settings.verify = Verify::Chain;
            }
            mode.clone().unwrap_or_default()
        }
        // `disable`, or a mode tokio-postgres reports as invalid.
        Some(other) => other.to_owned(),
    };
    if system && settings.verify != Verify::Full {
        settings.problem = Some(format!(
            "sslmode={passed} is not allowed with sslrootcert=system (as in libpq: use sslmode=verify-full)"
        ));
    }
    let mode_parameter = format!("sslmode={passed}");
    let parameters: Vec<&str> = kept
        .iter()
        .map(|p| p.unwrap_or(mode_parameter.as_str()))
        .collect();
    let base = &url[..query_at];
    if parameters.is_empty() {
        (base.to_owned(), settings)
    } else {
        (format!("{base}?{}", parameters.join("&")), settings)
    }
}

impl TlsSettings {
    /// Roots from `sslrootcert` (`None`: not in the URL), and `defaults`
    /// for the files the URL does not name.
    fn with_defaults(mut self, root_file: Option<String>, defaults: Defaults) -> TlsSettings {
        self.roots = match root_file {
            Some(file) if file != "system" && !file.is_empty() => Roots::File(PathBuf::from(file)),
            Some(_) => Roots::System,
            None => defaults.root.map_or(Roots::System, Roots::File),
        };
        if self.cert.is_none() && self.key.is_none() {
            if let Some((cert, key)) = defaults.identity {
                (self.cert, self.key) = (Some(cert), Some(key));
            }
        }
        self
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// The connector `settings` ask for.
///
/// # Errors
///
/// A file cannot be read or holds no usable certificate or key (the
/// message names the parameter and the file), no root certificate is
/// found, or the settings contradict each other.
pub(super) fn connector(settings: TlsSettings) -> anyhow::Result<MakeRustlsConnect> {
    if let Some(problem) = settings.problem {
        anyhow::bail!("{problem}");
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| anyhow::anyhow!("cannot set up TLS: {error}"))?;
    let builder = if settings.verify == Verify::Nothing {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifying(
                settings.verify,
                &settings.roots,
            )?))
    };
    let config = match (&settings.cert, &settings.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let (chain, key_der) = client_identity(cert, key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|error| {
                    anyhow::anyhow!(
                        "sslcert {} and sslkey {} do not fit together: {error}",
                        cert.display(),
                        key.display()
                    )
                })?
        }
        (Some(_), None) => anyhow::bail!("sslcert needs sslkey (the client certificate's key)"),
        (None, Some(_)) => anyhow::bail!("sslkey needs sslcert (the client certificate)"),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The verifier of a checking mode.
fn verifying(verify: Verify, roots: &Roots) -> anyhow::Result<Verifying> {
    let (store, source) = match roots {
        Roots::File(path) => (file_roots(path)?, format!("sslrootcert {}", path.display())),
        Roots::System => (system_roots(verify)?, "the system's root store".to_owned()),
    };
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .map_err(|error| anyhow::anyhow!("cannot set up TLS: {error}"))?;
    Ok(Verifying {
        inner,
        host_name: verify == Verify::Full,
        source,
    })
}

/// The certificates of a PEM file, one or more.
fn certificates(parameter: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|error| {
            anyhow::anyhow!(
                "{parameter} {}: cannot read: {}",
                path.display(),
                pem_error(&error)
            )
        })?
        .collect::<Result<_, _>>()
        .map_err(|error| {
            anyhow::anyhow!(
                "{parameter} {}: invalid PEM: {}",
                path.display(),
                pem_error(&error)
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "{parameter} {} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

fn pem_error(error: &rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(error) => error.to_string(),
        other => other.to_string(),
    }
}

/// The roots of `sslrootcert`.
fn file_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(certificates("sslrootcert", path)?);
    if roots.is_empty() {
        anyhow::bail!(
            "sslrootcert {}: none of its {ignored} certificate(s) can be used as a root",
            path.display()
        );
    }
    Ok(roots)
}

fn system_roots(verify: Verify) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if roots.is_empty() {
        let mode = if verify == Verify::Full {
            "verify-full"
        } else {
            "verify-ca"
        };
        anyhow::bail!(
            "sslmode={mode} needs root certificates: none were found in the system store; name a CA file with sslrootcert=<file>"
        );
    }
    Ok(roots)
}

/// The client certificate chain and key of `sslcert` and `sslkey`.
fn client_identity(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = certificates("sslcert", cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|error| {
        anyhow::anyhow!(
            "sslkey {}: no usable private key (PEM, not encrypted): {}",
            key.display(),
            pem_error(&error)
        )
    })?;
    Ok((chain, key_der))
}

/// `verify-ca` and `verify-full` (and `require` with `sslrootcert`):
/// webpki's checks, the host name's left out for `verify-ca`, and errors
/// that say what the certificate was checked against.
#[derive(Debug)]
struct Verifying {
    inner: Arc<WebPkiServerVerifier>,
    /// Whether the certificate must name the host (`verify-full`).
    host_name: bool,
    /// The roots, as the user named them.
    source: String,
}

/// A certificate error explained.
#[derive(Debug)]
struct Explained(String);

impl std::fmt::Display for Explained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Explained {}

impl ServerCertVerifier for Verifying {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first: a name error means the chain is
        // good.
        let error = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(rustls::Error::InvalidCertificate(error)) => error,
            Err(other) => return Err(other),
        };
        let text = match &error {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                if !self.host_name || named_by_common_name(end_entity, server_name) {
                    return Ok(ServerCertVerified::assertion());
                }
                format!(
                    "{error} (sslmode=verify-full checks the host name; verify-ca checks the chain to {} only)",
                    self.source
                )
            }
            CertificateError::UnknownIssuer => format!(
                "the server's certificate is not signed by a certificate of {} (UnknownIssuer)",
                self.source
            ),
            other => format!("{other} (checked against {})", self.source),
        };
        // Shown as "other error: <text>" (an `InvalidCertificate` would
        // show its `Debug` form).
        Err(rustls::Error::Other(OtherError(Arc::new(Explained(text)))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether `certificate` names `host` in its CN where libpq (14 and later)
/// looks there under `verify-full`: only when its subjectAltName has no
/// name of the host's kind (a DNS name for a host name, an IP address for
/// an address); RFC 6125 leaves the CN to such certificates. Compared as
/// libpq does: ignoring case, and a CN of `*.example.com` matches one
/// label in place of the `*`.
fn named_by_common_name(certificate: &CertificateDer<'_>, host: &ServerName<'_>) -> bool {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let Ok((_, certificate)) = X509Certificate::from_der(certificate.as_ref()) else {
        return false;
    };
    let (host, is_address) = match host {
        ServerName::DnsName(name) => (name.as_ref().to_owned(), false),
        ServerName::IpAddress(address) => (std::net::IpAddr::from(*address).to_string(), true),
        _ => return false,
    };
    if let Ok(Some(names)) = certificate.subject_alternative_name() {
        let names_hosts = names.value.general_names.iter().any(|name| match name {
            GeneralName::DNSName(_) => !is_address,
            GeneralName::IPAddress(_) => is_address,
            _ => false,
        });
        if names_hosts {
            return false;
        }
    }
    let Some(common_name) = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
    else {
        return false;
    };
    matches_host_name(common_name, &host)
}

/// libpq's comparison of a certificate's name with the host.
fn matches_host_name(pattern: &str, host: &str) -> bool {
    if pattern.contains('\0') {
        return false;
    }
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    // `*.example.com`: a non-empty first label without a dot, then the rest.
    let Some(rest) = pattern.strip_prefix('*') else {
        return false;
    };
    rest.starts_with('.')
        && rest.len() > 1
        && host.len() > rest.len()
        && host.is_char_boundary(host.len() - rest.len())
        && host[host.len() - rest.len()..].eq_ignore_ascii_case(rest)
        && !host[..host.len() - rest.len()].contains('.')
}

/// libpq's `prefer`/`require` without a root certificate file: any
/// certificate, but the handshake's signatures are still checked (so the
/// session key is the server's).
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

    fn split(url: &str) -> (String, Verify, Roots) {
        let (url, settings) = split_verify(url, Defaults::default());
        assert_eq!(settings.problem, None, "{url}");
        (url, settings.verify, settings.roots)
    }

    fn file(path: &str) -> Roots {
        Roots::File(PathBuf::from(path))
    }

    #[test]
    fn verifying_modes_become_require_with_verification() {
        assert_eq!(
            split("postgres://h/db?sslmode=verify-full&application_name=x"),
            (
                "postgres://h/db?sslmode=require&application_name=x".to_owned(),
                Verify::Full,
                Roots::System
            )
        );
        assert_eq!(
            split("postgres://h/db?application_name=x&sslmode=verify-ca"),
            (
                "postgres://h/db?application_name=x&sslmode=require".to_owned(),
                Verify::Chain,
                Roots::System
            )
        );
        assert_eq!(
            split("postgres://h/db?sslmode=require"),
            (
                "postgres://h/db?sslmode=require".to_owned(),
                Verify::Nothing,
                Roots::System
            )
        );
        assert_eq!(
            split("postgres://h/db"),
            ("postgres://h/db".to_owned(), Verify::Nothing, Roots::System)
        );
        assert!(connector(TlsSettings::default()).is_ok());
    }

    #[test]
    fn sslrootcert_is_taken_out_of_the_url_and_decoded() {
        assert_eq!(
            split("postgres://u:pw@h:5432/db?sslmode=verify-full&sslrootcert=/etc/vodhook/ca.pem&connect_timeout=3"),
            (
                "postgres://u:pw@h:5432/db?sslmode=require&connect_timeout=3".to_owned(),
                Verify::Full,
                file("/etc/vodhook/ca.pem")
            )
        );
        // Percent-encoded, before the mode, the only parameter left.
        assert_eq!(
            split("postgresql://h/db?sslrootcert=%2Fsrv%2Fmy%20ca.pem&sslmode=verify-ca"),
            (
                "postgresql://h/db?sslmode=require".to_owned(),
                Verify::Chain,
                file("/srv/my ca.pem")
            )
        );
        assert_eq!(
            split("postgres://h/db?sslrootcert=ca.pem"),
            ("postgres://h/db".to_owned(), Verify::Chain, file("ca.pem")),
            "with the default mode (prefer), as libpq when the file exists: the chain is checked"
        );
        // The last of a repeated name wins, as in libpq.
        assert_eq!(
            split("postgres://h/db?sslmode=disable&sslrootcert=a.pem&sslmode=verify-full&sslrootcert=b.pem"),
            (
                "postgres://h/db?sslmode=require&sslmode=require".to_owned(),
                Verify::Full,
                file("b.pem")
            )
        );
    }

    #[test]
    fn a_root_file_with_require_or_prefer_checks_the_chain_as_libpq_does() {
        for mode in ["require", "prefer"] {
            assert_eq!(
                split(&format!(
                    "postgres://h/db?sslmode={mode}&sslrootcert=/ca.pem"
                )),
                (
                    format!("postgres://h/db?sslmode={mode}"),
                    Verify::Chain,
                    file("/ca.pem")
                )
            );
        }
        assert_eq!(
            split("postgres://h/db?sslmode=disable&sslrootcert=/ca.pem"),
            (
                "postgres://h/db?sslmode=disable".to_owned(),
                Verify::Nothing,
                file("/ca.pem")
            ),
            "no TLS, nothing to check"
        );
    }

    #[test]
    fn sslrootcert_system_asks_for_verify_full() {
        assert_eq!(
            split("postgres://h/db?sslrootcert=system"),
            (
                "postgres://h/db?sslmode=require".to_owned(),
                Verify::Full,
                Roots::System
            )
        );
        assert_eq!(
            split("postgres://h/db?sslrootcert=system&sslmode=verify-full"),
            (
                "postgres://h/db?sslmode=require".to_owned(),
                Verify::Full,
                Roots::System
            )
        );
        let (_, settings) = split_verify(
            "postgres://h/db?sslmode=require&sslrootcert=system",
            Defaults::default(),
        );
        let error = connector(settings).err().unwrap().to_string();
        assert!(
            error.contains("sslmode=require is not allowed with sslrootcert=system"),
            "{error}"
        );
    }

    #[test]
    fn libpq_default_files_count_where_the_url_names_none() {
        let defaults = || Defaults {
            root: Some(PathBuf::from("/home/u/.postgresql/root.crt")),
            identity: Some((
                PathBuf::from("/home/u/.postgresql/postgresql.crt"),
                PathBuf::from("/home/u/.postgresql/postgresql.key"),
            )),
        };
        let root = file("/home/u/.postgresql/root.crt");
        // As if named: the default mode and require check the chain.
        for url in [
            "postgres://h/db",
            "postgres://h/db?application_name=x",
            "postgres://h/db?sslmode=require",
        ] {
            let (_, settings) = split_verify(url, defaults());
            assert_eq!(
                (settings.verify, &settings.roots),
                (Verify::Chain, &root),
                "{url}"
            );
            assert_eq!(
                settings.cert.as_deref(),
                Some(Path::new("/home/u/.postgresql/postgresql.crt"))
            );
            assert_eq!(
                settings.key.as_deref(),
                Some(Path::new("/home/u/.postgresql/postgresql.key"))
            );
        }
        let (_, settings) = split_verify("postgres://h/db?sslmode=verify-full", defaults());
        assert_eq!((settings.verify, settings.roots), (Verify::Full, root));
        // What the URL names wins.
        let (_, settings) = split_verify(
            "postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem&sslcert=/c.crt&sslkey=/c.key",
            defaults(),
        );
        assert_eq!(settings.roots, file("/ca.pem"));
        assert_eq!(settings.cert.as_deref(), Some(Path::new("/c.crt")));
        let (_, settings) = split_verify("postgres://h/db?sslrootcert=system", defaults());
        assert_eq!(
            (settings.verify, settings.roots),
            (Verify::Full, Roots::System)
        );
        // No TLS, nothing checked.
        let (_, settings) = split_verify("postgres://h/db?sslmode=disable", defaults());
        assert_eq!(settings.verify, Verify::Nothing);
    }

    #[test]
    fn client_certificate_parameters_are_taken_out() {
        let (url, settings) = split_verify(
            "postgres://h/db?sslcert=%2Fk%2Fclient.crt&sslmode=verify-full&sslkey=/k/client.key",
            Defaults::default(),
        );
        assert_eq!(url, "postgres://h/db?sslmode=require");
        assert_eq!(settings.cert, Some(PathBuf::from("/k/client.crt")));
        assert_eq!(settings.key, Some(PathBuf::from("/k/client.key")));
        let (_, settings) =
            split_verify("postgres://h/db?sslcert=/k/client.crt", Defaults::default());
        let error = connector(settings).err().unwrap().to_string();
        assert!(error.contains("sslcert needs sslkey"), "{error}");
    }

    /// A CA, and a server certificate it signed for `names`.
    struct Pki {
        ca_pem: String,
        server: CertificateDer<'static>,
    }

    fn pki(ca_name: &str, names: &[&str]) -> Pki {
        pki_with_cn(ca_name, names, None)
    }

    /// As [`pki`], the server certificate with a CN.
    fn pki_with_cn(ca_name: &str, names: &[&str], cn: Option<&str>) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut server = rcgen::CertificateParams::new(names).unwrap();
        if let Some(cn) = cn {
            server
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let server = server.signed_by(&server_key, &issuer).unwrap();
        Pki {
            ca_pem: ca.pem(),
            server: server.der().clone(),
        }
    }

    fn check(verifier: &Verifying, server: &CertificateDer<'_>, host: &str) -> Result<(), String> {
        verifier
            .verify_server_cert(
                server,
                &[],
                &ServerName::try_from(host).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn verify_ca_checks_the_chain_and_verify_full_the_host_too() {
        let dir = tempfile::tempdir().unwrap();
        let ours = pki("our CA", &["db.example", "127.0.0.1"]);
        let theirs = pki("their CA", &["db.example"]);
        let path = dir.path().join("ca.pem");
        // Two certificates in the file: the other CA, then ours.
        std::fs::write(&path, format!("{}{}", theirs.ca_pem, ours.ca_pem)).unwrap();
        let roots = Roots::File(path.clone());
        let full = verifying(Verify::Full, &roots).unwrap();
        let chain = verifying(Verify::Chain, &roots).unwrap();
        assert_eq!(check(&full, &ours.server, "db.example"), Ok(()));
        assert_eq!(check(&full, &ours.server, "127.0.0.1"), Ok(()));
        assert_eq!(check(&full, &theirs.server, "db.example"), Ok(()));
        let wrong_host = check(&full, &ours.server, "other.example").unwrap_err();
        assert!(
            wrong_host.contains("other.example") && wrong_host.contains("verify-ca"),
            "{wrong_host}"
        );
        assert_eq!(
            check(&chain, &ours.server, "other.example"),
            Ok(()),
            "verify-ca"
        );

        // Only the other CA: refused in both modes, naming the file.
        std::fs::write(&path, &theirs.ca_pem).unwrap();
        for verify in [Verify::Full, Verify::Chain] {
            let verifier = verifying(verify, &roots).unwrap();
            let error = check(&verifier, &ours.server, "db.example").unwrap_err();
            assert!(
                error.contains("not signed by a certificate of sslrootcert")
                    && error.contains(&path.display().to_string()),
                "{error}"
            );
        }
    }

    #[test]
    fn verify_full_takes_the_cn_only_when_the_alt_names_name_no_host() {
        let dir = tempfile::tempdir().unwrap();
        let check_cn = |names: &[&str], cn: &str, host: &str| {
            let pki = pki_with_cn("our CA", names, Some(cn));
            let path = dir.path().join("ca.pem");
            std::fs::write(&path, &pki.ca_pem).unwrap();
            let full = verifying(Verify::Full, &Roots::File(path)).unwrap();
            check(&full, &pki.server, host)
        };
        // No subjectAltName: the CN, ignoring case, one wildcard label.
        assert_eq!(check_cn(&[], "db.example", "db.example"), Ok(()));
        assert_eq!(check_cn(&[], "DB.Example", "db.example"), Ok(()));
        assert_eq!(check_cn(&[], "*.example.com", "db.example.com"), Ok(()));
        assert_eq!(check_cn(&[], "127.0.0.1", "127.0.0.1"), Ok(()));
        for (cn, host) in [
            ("db.example", "other.example"),
            ("*.example.com", "a.b.example.com"),
            ("*.example.com", "example.com"),
            ("db*.example.com", "db1.example.com"),
        ] {
            let error = check_cn(&[], cn, host).unwrap_err();
            assert!(error.contains("verify-ca"), "{cn} for {host}: {error}");
        }
        // An alt name of the host's kind: the CN is not looked at.
        assert!(check_cn(&["other.example"], "db.example", "db.example").is_err());
        assert!(check_cn(&["10.0.0.1"], "127.0.0.1", "127.0.0.1").is_err());
        // Of the other kind only: the CN still counts (as in libpq).
        assert_eq!(check_cn(&["10.0.0.1"], "db.example", "db.example"), Ok(()));
        assert_eq!(
            check_cn(&["other.example"], "127.0.0.1", "127.0.0.1"),
            Ok(())
        );
    }

    #[test]
    fn matching_a_host_name_as_libpq_does() {
        assert!(matches_host_name("db.example", "DB.EXAMPLE"));
        assert!(matches_host_name("*.example", "db.example"));
        assert!(!matches_host_name("*.example", ".example"));
        assert!(!matches_host_name("*.", "db."));
        assert!(!matches_host_name("*example", "dbexample"));
        assert!(!matches_host_name("db.example\0.evil", "db.example"));
        assert!(!matches_host_name("*.é.example", "a.x.example"));
    }

    #[test]
    fn a_root_file_missing_or_without_a_certificate_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let key_only = dir.path().join("key.pem");
        std::fs::write(
            &key_only,
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (path, expected) in [
            (&missing, "cannot read"),
            (&empty, "holds no certificate"),
            (&key_only, "holds no certificate"),
            (&garbage, "can be used as a root"),
        ] {
            let url = format!(
                "postgres://u:hunter2@h/db?sslmode=verify-full&sslrootcert={}",
                path.display()
            );
            let (_, settings) = split_verify(&url, Defaults::default());
            let error = format!("{:#}", connector(settings).err().unwrap());
            assert!(
                error.contains(&format!("sslrootcert {}", path.display()))
                    && error.contains(expected),
                "{error}"
            );
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}
