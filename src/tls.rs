//! TLS: the configured certificate, or a self-signed one created in the state directory at
//! first start (its SHA-256 fingerprint is logged so clients can pin it). rustls with the
//! `ring` provider: it cross-builds for aarch64-musl without a C toolchain of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::crypto::keys::write_secret_file;

pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

/// Where the certificate and key are, creating a self-signed pair when none is configured.
pub fn certificate_paths(config: &Config) -> Result<(PathBuf, PathBuf), String> {
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        return Ok((cert.clone(), key.clone()));
    }
    let dir = config.data_dir.join("tls");
    let cert = dir.join(CERT_FILE);
    let key = dir.join(KEY_FILE);
    if !cert.exists() || !key.exists() {
        create_self_signed(&dir, &cert, &key)?;
    }
    Ok((cert, key))
}

fn create_self_signed(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() && !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot create a self-signed certificate: {e}"))?;
    write_secret_file(key_path, certified.key_pair.serialize_pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
    std::fs::write(cert_path, certified.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
    tracing::info!(path = %cert_path.display(), "created self-signed TLS certificate");
    Ok(())
}

/// SHA-256 fingerprint of the first certificate in a PEM file, as colon-separated hex.
pub fn fingerprint(cert_path: &Path) -> Result<String, String> {
    let der = CertificateDer::from_pem_file(cert_path)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert_path.display()))?;
    let digest = Sha256::digest(der.as_ref());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// `sha256:<lowercase hex>` of the first certificate in a PEM file: the form enrolment
/// codes carry and `agent enroll --fingerprint` pins.
pub fn pin_fingerprint(cert_path: &Path) -> Result<String, String> {
    let der = CertificateDer::from_pem_file(cert_path)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert_path.display()))?;
    Ok(crate::domain::enrollment::certificate_fingerprint(
        der.as_ref(),
    ))
}

/// A rustls server configuration (HTTP/2 and HTTP/1.1 by ALPN) from PEM files.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("cannot read private key {}: {e}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
