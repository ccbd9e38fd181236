//! TLS material for talking to the apiservers: the cluster CA and the client
//! identity (certificate chain and key in one PEM file, as kubelet writes it).
//! Everything is checked at load time, because a key that does not match its
//! certificate would otherwise only fail (panic, in ureq) at the first connect.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use ureq::tls::{Certificate, PrivateKey};

/// A client certificate chain with its private key.
pub struct ClientIdentity {
    pub chain: Vec<Certificate<'static>>,
    pub key: PrivateKey<'static>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// Loads the CA bundle; at least one certificate must parse.
pub fn load_ca(path: &Path) -> Result<Arc<Vec<Certificate<'static>>>, String> {
    let pem = read(path, "CA file")?;
    let certs = certificates(&pem);
    if certs.is_empty() {
        return Err(format!(
            "CA file {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(Arc::new(
        certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect(),
    ))
}

/// Loads a certificate chain and its private key from one PEM file and checks
/// that they belong together.
pub fn load_client_identity(path: &Path) -> Result<ClientIdentity, String> {
    let pem = read(path, "client certificate")?;
    parse_client_identity(&pem).map_err(|e| format!("client certificate {}: {e}", path.display()))
}

pub fn parse_client_identity(pem: &[u8]) -> Result<ClientIdentity, String> {
    let chain = certificates(pem);
    if chain.is_empty() {
        return Err("no certificate in the file".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(pem).map_err(|_| "no private key in the file".to_string())?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider)
        .map_err(|e| format!("private key does not fit the certificate: {e}"))?;
    Ok(ClientIdentity {
        chain: chain
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect(),
        key: PrivateKey::from_pem(pem).map_err(|e| format!("private key: {e}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_pem() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["node".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_certificate_and_key_from_one_pem() {
        let (cert, key) = identity_pem();
        let identity = parse_client_identity(format!("{cert}{key}").as_bytes()).unwrap();
        assert_eq!(identity.chain.len(), 1);
    }

    #[test]
    fn refuses_a_key_that_does_not_match() {
        let (cert, _) = identity_pem();
        let (_, other_key) = identity_pem();
        let err = parse_client_identity(format!("{cert}{other_key}").as_bytes())
            .err()
            .unwrap();
        assert!(err.contains("does not fit"), "{err}");
    }

    #[test]
    fn refuses_files_without_a_key_or_certificate() {
        let (cert, key) = identity_pem();
        assert!(parse_client_identity(cert.as_bytes()).is_err());
        assert!(parse_client_identity(key.as_bytes()).is_err());
        assert!(parse_client_identity(b"garbage").is_err());
    }
}
