//! TLS for HTTPS tunnel listeners and for `rtsps://` cameras (`load_client_config`).
//! Listeners: certificates and keys from PEM files into a rustls server
//! configuration (TLS 1.3 and 1.2, the provider's modern AEAD suites only). rustls is sans-IO:
//! the shards feed it ciphertext from their receive buffers and take ciphertext to send.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::proto::upstream_link::TlsVerification;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate {path}: {msg}")]
    Cert { path: String, msg: String },
    #[error("private key {path}: {msg}")]
    Key { path: String, msg: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads `cert` (a PEM chain, leaf first) and `key` (PKCS#8, PKCS#1 or SEC1 PEM).
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |msg: String| TlsError::Cert { path: cert.display().to_string(), msg };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block found".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.display().to_string(), msg: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    // Tunnel clients speak HTTP/1.x inside TLS; offering no ALPN keeps them on it.
    config.alpn_protocols.clear();
    Ok(Arc::new(config))
}

/// The CA bundles distributions install, in the order rustls-native-certs tries them;
/// `SSL_CERT_FILE` comes first when set.
const SYSTEM_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
];

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let cert_err = |msg: String| TlsError::Cert { path: path.display().to_string(), msg };
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(path).map_err(|e| cert_err(e.to_string()))? {
        // A bundle may hold certificates this verifier cannot use; the others still count.
        let _ = roots.add(der.map_err(|e| cert_err(e.to_string()))?);
    }
    if roots.is_empty() {
        return Err(cert_err("no usable CERTIFICATE block found".into()));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let found = from_env.into_iter().chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from)).find(|p| p.is_file());
    match found {
        Some(p) => load_roots(&p),
        None => Err(TlsError::Cert {
            path: SYSTEM_BUNDLES[0].into(),
            msg: "no system CA bundle found: set upstream_ca or upstream_fingerprint".into(),
        }),
    }
}

/// The rustls client configuration for a route's `rtsps://` or `rtsp+https://` camera.
pub fn load_client_config(verification: &TlsVerification) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let config = match verification {
        TlsVerification::SystemRoots => builder.with_root_certificates(system_roots()?).with_no_client_auth(),
        TlsVerification::Ca(path) => builder.with_root_certificates(load_roots(Path::new(path))?).with_no_client_auth(),
        TlsVerification::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedOrAny { pin: Some(*pin), provider }))
            .with_no_client_auth(),
        TlsVerification::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedOrAny { pin: None, provider }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts the camera's certificate when its SHA-256 is the pinned one (cameras mostly carry
/// self-signed certificates no CA vouches for), or any certificate when nothing is pinned
/// (`upstream_insecure_tls`). The handshake's signatures are checked either way: whoever
/// answers holds the certificate's key.
#[derive(Debug)]
struct PinnedOrAny {
    pin: Option<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedOrAny {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else { return Ok(ServerCertVerified::assertion()) };
        let seen = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if seen.as_ref() == pin.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The SHA-256 of a DER certificate as `upstream_fingerprint` spells it.
pub fn fingerprint_of(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.key_pair.serialize_pem()).unwrap();
        (c, k)
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rtr-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn loads_a_generated_pair() {
        let d = tempdir("ok");
        let (c, k) = write_pair(&d);
        let cfg = load_server_config(&c, &k).unwrap();
        assert!(cfg.alpn_protocols.is_empty());
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let d = tempdir("bad");
        let (c, k) = write_pair(&d);
        let junk = d.join("junk.pem");
        std::fs::write(&junk, "not a pem file\n").unwrap();
        let e = load_server_config(&junk, &k).unwrap_err().to_string();
        assert!(e.contains("junk.pem") && e.contains("no CERTIFICATE"), "{e}");
        let e = load_server_config(&c, &junk).unwrap_err().to_string();
        assert!(e.starts_with("private key") && e.contains("junk.pem"), "{e}");
        let e = load_server_config(&d.join("missing.pem"), &k).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
