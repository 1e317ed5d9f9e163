//! Certificate pinning for the agent: trust exactly the appliance's certificate whose
//! SHA-256 (over its DER bytes) was handed out with the enrolment code, so no `cert.pem`
//! has to be copied to the node. The handshake signature is still checked against that
//! certificate's key, so only the holder of its private key can answer.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// `sha256:<hex>` (also accepted: the colon-separated upper-case form the appliance logs,
/// with or without the prefix) -> the 32 digest bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    let hexpart = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let compact: String = hexpart.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(compact.to_ascii_lowercase())
        .map_err(|_| format!("fingerprint {text:?} is not sha256:<64 hex digits>"))?;
    bytes
        .try_into()
        .map_err(|_| format!("fingerprint {text:?} is not sha256:<64 hex digits>"))
}

/// The canonical text form, as the appliance hands it out.
pub fn format_fingerprint(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

/// Accepts one end-entity certificate, by digest; names and dates are not checked (the
/// appliance's self-signed certificate names whatever host it was made on).
#[derive(Debug)]
pub struct Pinned {
    digest: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    pub fn new(digest: [u8; 32], provider: Arc<CryptoProvider>) -> Self {
        Self { digest, provider }
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        // Not secret: a plain comparison is fine.
        if got == self.digest {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate {} is not the pinned {}",
                format_fingerprint(&got),
                format_fingerprint(&self.digest)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client configuration that trusts only the pinned certificate.
pub fn pinned_client_config(digest: [u8; 32]) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned::new(digest, provider)))
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_both_forms_and_junk_is_refused() {
        let d = [0xabu8; 32];
        let canonical = format_fingerprint(&d);
        assert_eq!(parse_fingerprint(&canonical), Ok(d));
        let logged = d
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&logged), Ok(d));
        assert!(parse_fingerprint("sha256:abcd").is_err());
        assert!(parse_fingerprint("sha256:zz").is_err());
    }

    #[test]
    fn only_the_pinned_certificate_is_accepted() {
        let der = CertificateDer::from(vec![1u8, 2, 3]);
        let digest: [u8; 32] = Sha256::digest([1u8, 2, 3]).into();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let name = ServerName::try_from("appliance").unwrap();
        let pinned = Pinned::new(digest, provider.clone());
        assert!(pinned
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .is_ok());
        let other = Pinned::new([0; 32], provider);
        assert!(other
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .is_err());
    }
}
