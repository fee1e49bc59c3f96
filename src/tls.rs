//! TLS for HTTPS tunnel listeners: certificates and keys from PEM files into a rustls server
//! configuration (TLS 1.3 and 1.2, the provider's modern AEAD suites only). rustls is sans-IO:
//! the shards feed it ciphertext from their receive buffers and take ciphertext to send.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
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
