//! Joining with a bootstrap token: the hub obtains its own client certificate
//! by a CertificateSigningRequest, as kubelet's TLS bootstrap does (signer
//! `kubernetes.io/kube-apiserver-client-kubelet`, CN `system:node:<node>`,
//! O `system:nodes`, so a stock cluster's approver accepts it), keeps it under
//! `--root-dir`, and renews it when 80 % of its life has passed. The client
//! certificate follower loads the file whenever it changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::certs;
use crate::store::Store;
use crate::upstream::Upstream;

pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
const CSR_PATH: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
/// Between attempts when the cloud cannot be reached or refuses.
const RETRY: Duration = Duration::from_secs(10);
/// How long one request waits to be approved and signed.
const APPROVAL_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const POLL: Duration = Duration::from_secs(1);

/// Where the hub keeps its own client certificate and key (one PEM, 0600).
pub fn client_certificate_path(root_dir: &Path) -> PathBuf {
    root_dir.join("pki").join("yurthub-client-current.pem")
}

/// Where the hub keeps the serving certificate of its secure port.
pub fn serving_certificate_path(root_dir: &Path) -> PathBuf {
    root_dir.join("pki").join("yurthub-server-current.pem")
}

/// The serving configuration from the stored serving certificate, if usable.
pub fn stored_serving_config(
    root_dir: &Path,
) -> Option<(Arc<rustls::ServerConfig>, certs::CertInfo)> {
    let pem = std::fs::read(serving_certificate_path(root_dir)).ok()?;
    let info = certs::parse_client_identity(&pem).ok()?.info;
    let config = crate::http::server_config(&pem, &pem).ok()?;
    (!info.expired()).then_some((config, info))
}

/// Starts the `yh-serving-cert` thread: requests a serving certificate for the
/// secure port (signer kubelet-serving; approved by an administrator with
/// `kubectl certificate approve`) with the hub's client certificate, hands it
/// to the listener, and renews it when due.
pub fn spawn_serving(
    upstream: Arc<Upstream>,
    root_dir: PathBuf,
    node_name: String,
    ip_sans: Vec<std::net::IpAddr>,
    acceptor: Arc<crate::http::TlsAcceptor>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("yh-serving-cert".into())
        .spawn(move || {
            let store = match Store::open(&root_dir) {
                Ok(store) => store,
                Err(e) => {
                    log::error!("cannot use --root-dir {}: {e}", root_dir.display());
                    return;
                }
            };
            let spec = CsrSpec {
                signer: SERVING_SIGNER,
                usages: &["digital signature", "key encipherment", "server auth"],
                ip_sans,
                dns_sans: vec![node_name.clone()],
            };
            loop {
                if let Some((config, info)) = stored_serving_config(&root_dir)
                    && !info.due_for_renewal()
                {
                    acceptor.replace(config);
                    std::thread::sleep(RETRY * 6);
                    continue;
                }
                if upstream.credential_problem().is_some() || !upstream.health.any_healthy() {
                    std::thread::sleep(RETRY);
                    continue;
                }
                match request_certificate(&upstream, &node_name, &spec, None) {
                    Ok(pem) => match store
                        .write(Path::new("pki/yurthub-server-current.pem"), pem.as_bytes())
                    {
                        Ok(()) => log::info!(
                            "serving certificate stored in {}",
                            serving_certificate_path(&root_dir).display()
                        ),
                        Err(e) => log::error!("cannot store the serving certificate: {e}"),
                    },
                    Err(e) => {
                        log::warn!(
                            "serving certificate request failed: {e}; retrying in {RETRY:?}"
                        );
                        std::thread::sleep(RETRY);
                    }
                }
            }
        })?;
    Ok(())
}

/// Starts the `yh-bootstrap` thread: obtains a certificate if there is no
/// usable one, then renews it when due. Never blocks the caller.
pub fn spawn(
    upstream: Arc<Upstream>,
    root_dir: PathBuf,
    node_name: String,
    token: String,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("yh-bootstrap".into()).spawn(move || {
        let path = client_certificate_path(&root_dir);
        let store = match Store::open(&root_dir) {
            Ok(store) => store,
            Err(e) => {
                log::error!("cannot use --root-dir {}: {e}", root_dir.display());
                return;
            }
        };
        loop {
            let current = certs::load_client_identity(&path).ok().map(|id| id.info);
            match &current {
                Some(info) if !info.due_for_renewal() => {
                    std::thread::sleep(RETRY * 6);
                    continue;
                }
                Some(_) => log::info!("client certificate {} is due for renewal", path.display()),
                None => {
                    log::info!("requesting a client certificate for system:node:{node_name} with the join token");
                    upstream.set_credential_problem(Some("waiting for a client certificate (join token)".into()));
                }
            }
            // Renew with the current certificate while it is valid, else the token.
            let bearer = match &current {
                Some(info) if !info.expired() => None,
                _ => Some(token.as_str()),
            };
            match request_certificate(&upstream, &node_name, &client_spec(), bearer) {
                Ok(pem) => match store.write(Path::new("pki/yurthub-client-current.pem"), pem.as_bytes()) {
                    Ok(()) => log::info!("client certificate for system:node:{node_name} stored in {}", path.display()),
                    Err(e) => log::error!("cannot store the client certificate: {e}"),
                },
                Err(e) => {
                    log::warn!("client certificate request failed: {e}; retrying in {RETRY:?}");
                    std::thread::sleep(RETRY);
                }
            }
        }
    })?;
    Ok(())
}

/// What a certificate is requested for.
pub struct CsrSpec {
    pub signer: &'static str,
    pub usages: &'static [&'static str],
    /// Subject alternative names (serving certificates).
    pub ip_sans: Vec<std::net::IpAddr>,
    pub dns_sans: Vec<String>,
}

/// The hub's client certificate.
fn client_spec() -> CsrSpec {
    CsrSpec {
        signer: CLIENT_SIGNER,
        usages: &["digital signature", "key encipherment", "client auth"],
        ip_sans: Vec::new(),
        dns_sans: Vec::new(),
    }
}

/// Creates a key and a CSR, submits it, and waits until it is signed.
/// Returns the certificate and key as one PEM.
pub fn request_certificate(
    upstream: &Upstream,
    node_name: &str,
    spec: &CsrSpec,
    bearer: Option<&str>,
) -> Result<String, String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(spec.dns_sans.clone()).map_err(|e| e.to_string())?;
    params
        .subject_alt_names
        .extend(spec.ip_sans.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("system:node:{node_name}"),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| e.to_string())?;
    let body = serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "generateName": format!("yurthub-{node_name}-") },
        "spec": {
            "request": base64_encode(csr_pem.as_bytes()),
            "signerName": spec.signer,
            "usages": spec.usages,
        },
    });
    let server = upstream.pick().ok_or("no apiserver reachable")?;
    let (status, response) = upstream
        .call(
            server,
            "POST",
            CSR_PATH,
            bearer,
            Some(body.to_string().as_bytes()),
        )
        .map_err(|e| e.to_string())?;
    if status != 201 {
        // Not retried by the caller for a while: say what the apiserver said.
        return Err(format!(
            "creating the CSR: status {status}: {}",
            status_message(&response)
        ));
    }
    let created: serde_json::Value =
        serde_json::from_slice(&response).map_err(|e| e.to_string())?;
    let name = created["metadata"]["name"]
        .as_str()
        .ok_or("the created CSR has no name")?
        .to_string();
    log::info!(
        "CertificateSigningRequest {name} ({}) created; waiting for approval",
        spec.signer
    );
    let deadline = Instant::now() + APPROVAL_TIMEOUT;
    while Instant::now() < deadline {
        std::thread::sleep(POLL);
        let Some(server) = upstream.pick() else {
            continue;
        };
        let Ok((200, body)) =
            upstream.call(server, "GET", &format!("{CSR_PATH}/{name}"), bearer, None)
        else {
            continue;
        };
        let csr: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let conditions = csr["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(refused) = conditions
            .iter()
            .find(|c| matches!(c["type"].as_str(), Some("Denied" | "Failed")))
        {
            return Err(format!(
                "CSR {name} was {}: {}",
                refused["type"], refused["message"]
            ));
        }
        if let Some(certificate) = csr["status"]["certificate"]
            .as_str()
            .filter(|c| !c.is_empty())
        {
            let cert_pem =
                base64_decode(certificate).ok_or("the signed certificate is not base64")?;
            let cert_pem =
                String::from_utf8(cert_pem).map_err(|_| "the signed certificate is not PEM")?;
            let pem = format!("{}\n{}", cert_pem.trim_end(), key.serialize_pem());
            certs::parse_client_identity(pem.as_bytes())?;
            log::info!("CertificateSigningRequest {name} approved and signed");
            return Ok(pem);
        }
    }
    Err(format!(
        "CSR {name} was not signed within {APPROVAL_TIMEOUT:?}"
    ))
}

fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_default()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let value = BASE64.iter().position(|&b| b == c)? as u32;
        buffer = buffer << 6 | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        assert_eq!(base64_decode("Zm9v\nYg=="), Some(b"foob".to_vec()));
        assert_eq!(base64_decode("!!"), None);
    }
}
