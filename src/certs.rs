//! TLS material for talking to the apiservers: the cluster CA and the client
//! identity (certificate chain and key in one PEM file, as kubelet writes it).
//! Everything is checked at load time, because a key that does not match its
//! certificate would otherwise only fail (panic, in the HTTP client) at the
//! first connect. Plain rustls types: `upstream.rs` turns them into its client's.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::codec::time::now_unix;

/// A client certificate chain with its private key.
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    /// The PEM the key was read from (the HTTP client reads its own form).
    pub key_pem: Vec<u8>,
    /// About the first (leaf) certificate.
    pub info: CertInfo,
}

/// What the hub reports about a certificate: who it names and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject_cn: String,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    pub fn expired(&self) -> bool {
        self.not_after <= now_unix()
    }

    /// Whether most (80 %) of the validity has passed: time to renew.
    pub fn due_for_renewal(&self) -> bool {
        let lifetime = (self.not_after - self.not_before).max(0);
        now_unix() >= self.not_before + lifetime * 4 / 5
    }
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
pub fn load_ca(path: &Path) -> Result<Arc<Vec<CertificateDer<'static>>>, String> {
    let pem = read(path, "CA file")?;
    let certs = certificates(&pem);
    if certs.is_empty() {
        return Err(format!(
            "CA file {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(Arc::new(certs))
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
    let info =
        cert_info(chain[0].as_ref()).ok_or_else(|| "cannot read the certificate".to_string())?;
    Ok(ClientIdentity {
        chain,
        key_pem: pem.to_vec(),
        info,
    })
}

/// One DER element: tag and contents, and the bytes after it.
fn der_element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *bytes.first()?;
    let first = *bytes.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = bytes
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (len, 2 + n)
    };
    let contents = bytes.get(header..header.checked_add(len)?)?;
    Some((tag, contents, &bytes[header + len..]))
}

/// Subject CN and notAfter of an X.509 certificate, read with a small DER walk.
pub fn cert_info(der: &[u8]) -> Option<CertInfo> {
    let (_, certificate, _) = der_element(der)?;
    let (_, tbs, _) = der_element(certificate)?;
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    let (_, _, rest) = der_element(rest)?; // serial number
    let (_, _, rest) = der_element(rest)?; // signature algorithm
    let (_, _, rest) = der_element(rest)?; // issuer
    let (_, validity, rest) = der_element(rest)?;
    let (_, subject, _) = der_element(rest)?;
    let (before_tag, not_before, validity_rest) = der_element(validity)?;
    let (after_tag, not_after, _) = der_element(validity_rest)?;
    Some(CertInfo {
        subject_cn: common_name(subject).unwrap_or_default(),
        not_before: parse_time(before_tag, not_before)?,
        not_after: parse_time(after_tag, not_after)?,
    })
}

/// The first commonName (OID 2.5.4.3) in a Name.
fn common_name(mut name: &[u8]) -> Option<String> {
    while let Some((_, set, rest)) = der_element(name) {
        let (_, attribute, _) = der_element(set)?;
        let (_, oid, value) = der_element(attribute)?;
        if oid == [0x55, 0x04, 0x03] {
            let (_, text, _) = der_element(value)?;
            return String::from_utf8(text.to_vec()).ok();
        }
        name = rest;
    }
    None
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) to Unix seconds.
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    Some(crate::codec::time::unix_from_civil(
        year, month, day, hour, minute, second,
    ))
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
    fn reads_subject_and_expiry() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["node".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:edge-1");
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2031, 3, 4);
        let cert = params.self_signed(&key).unwrap();
        let info = cert_info(cert.der()).unwrap();
        assert_eq!(info.subject_cn, "system:node:edge-1");
        assert_eq!(info.not_after, 1_930_348_800, "2031-03-04T00:00:00Z");
        assert!(!info.expired());
        assert!(info.not_before < info.not_after);
        assert!(!info.due_for_renewal());
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let old = params.self_signed(&key).unwrap();
        assert!(cert_info(old.der()).unwrap().expired());
        assert_eq!(cert_info(b"\x30\x03garbage"), None);
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
