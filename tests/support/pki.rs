//! Throw-away PKI for tests: a CA, a server certificate for the fake
//! apiserver and client certificates, written into a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// CN and O of the node client certificate (`client.pem`).
pub const NODE_CN: &str = "system:node:edge-1";
pub const NODE_ORG: &str = "system:nodes";
/// CN and O of the admin client certificate (`admin.pem`).
pub const ADMIN_CN: &str = "admin";
pub const ADMIN_ORG: &str = "system:masters";

pub struct TestPki {
    dir: tempfile::TempDir,
    ca_issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    server_config: Arc<rustls::ServerConfig>,
    client_cert_der: CertificateDer<'static>,
    admin_cert_der: CertificateDer<'static>,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("yurthub-pki-")
            .tempdir()
            .expect("create pki temp dir");

        // CA
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = dn("yurthub-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign ca");
        let ca_pem = ca_cert.pem();
        let ca_der = ca_cert.der().clone();
        let ca_issuer = Issuer::new(ca_params, ca_key);
        std::fs::write(dir.path().join("ca.crt"), &ca_pem).expect("write ca.crt");

        // Server certificate for the fake apiserver.
        let server_key = KeyPair::generate().expect("server key");
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        server_params.distinguished_name = dn("kube-apiserver");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let server_cert = server_params
            .signed_by(&server_key, &ca_issuer)
            .expect("sign server cert");
        std::fs::write(dir.path().join("server.crt"), server_cert.pem()).expect("write server.crt");
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem())
            .expect("write server.key");

        let (_, client_cert_der) =
            issue_client(&ca_issuer, dir.path(), "client.pem", NODE_CN, &[NODE_ORG]);
        let (_, admin_cert_der) =
            issue_client(&ca_issuer, dir.path(), "admin.pem", ADMIN_CN, &[ADMIN_ORG]);

        // rustls server config: client certs optional, verified against the CA.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der.clone()).expect("add ca to root store");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .expect("client verifier");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![server_cert.der().clone(), ca_der.clone()], key)
            .expect("server cert/key");

        TestPki {
            dir,
            ca_issuer,
            ca_der,
            server_config: Arc::new(server_config),
            client_cert_der,
            admin_cert_der,
        }
    }

    /// Issues another client certificate signed by the CA and writes it (cert
    /// then PKCS#8 key, one PEM file) as `file_name` in the PKI directory.
    /// Returns the path and the certificate DER.
    pub fn issue_client_pem(
        &self,
        file_name: &str,
        cn: &str,
        orgs: &[&str],
    ) -> (PathBuf, CertificateDer<'static>) {
        issue_client(&self.ca_issuer, self.dir.path(), file_name, cn, orgs)
    }

    /// The directory holding all the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// `ca.crt` (PEM).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }
    /// `client.pem`: node client cert + key (CN `system:node:edge-1`, O `system:nodes`).
    pub fn client_pem_path(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }
    /// `admin.pem`: admin client cert + key (CN `admin`, O `system:masters`).
    pub fn admin_pem_path(&self) -> PathBuf {
        self.dir.path().join("admin.pem")
    }
    /// `server.crt` / `server.key` of the fake apiserver (PEM).
    pub fn server_cert_path(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }
    pub fn server_key_path(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    pub fn client_cert_der(&self) -> &CertificateDer<'static> {
        &self.client_cert_der
    }
    pub fn admin_cert_der(&self) -> &CertificateDer<'static> {
        &self.admin_cert_der
    }
    /// rustls server config for the fake apiserver (optional client auth).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config.clone()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name
}

fn issue_client(
    ca: &Issuer<'static, KeyPair>,
    dir: &Path,
    file_name: &str,
    cn: &str,
    orgs: &[&str],
) -> (PathBuf, CertificateDer<'static>) {
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    for org in orgs {
        name.push(DnType::OrganizationName, *org);
    }
    name.push(DnType::CommonName, cn);
    params.distinguished_name = name;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&key, ca).expect("sign client cert");
    let path = dir.join(file_name);
    std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem()))
        .expect("write client pem");
    (path, cert.der().clone())
}

/// Common name (CN) of the subject of a DER certificate, found by a small DER
/// walk: Certificate -> tbsCertificate -> subject -> RDNs -> CN (2.5.4.3).
pub fn cert_cn(der: &[u8]) -> Option<String> {
    let (tag, cert, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    // serialNumber, signature, issuer, validity
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (tag, subject, _) = tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, next) = tlv(rdns)?;
        rdns = next;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (_, atv, next) = tlv(atvs)?;
            atvs = next;
            let (tag, oid, value) = tlv(atv)?;
            if tag == 0x06 && oid == [0x55, 0x04, 0x03] {
                let (_, text, _) = tlv(value)?;
                return Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    None
}

/// One DER TLV: (tag, contents, rest). Single-byte tags only.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}
