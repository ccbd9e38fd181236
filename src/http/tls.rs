//! HTTPS for the secure proxy port: rustls on the server side, with the
//! serving certificate swappable while the hub runs. The same rustls as the
//! upstream client (tiny_http's TLS feature would have pulled an older one).

use std::io;
use std::sync::{Arc, RwLock};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::socket::Socket;
use super::{Acceptor, Stream};

impl Stream for StreamOwned<ServerConnection, Socket> {
    fn socket(&self) -> &Socket {
        &self.sock
    }
}

/// Accepts TLS connections with the current serving configuration; until
/// there is one (a serving certificate still waiting for approval), every
/// connection is closed.
pub struct TlsAcceptor {
    config: RwLock<Option<Arc<ServerConfig>>>,
}

impl TlsAcceptor {
    pub fn new(config: Option<Arc<ServerConfig>>) -> TlsAcceptor {
        TlsAcceptor {
            config: RwLock::new(config),
        }
    }

    /// New connections use `config` from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Some(config);
    }
}

impl Acceptor for TlsAcceptor {
    type Stream = StreamOwned<ServerConnection, Socket>;

    /// Completes the handshake within the socket's deadline.
    fn wrap(&self, mut socket: Socket) -> io::Result<Self::Stream> {
        let config = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| io::Error::other("no serving certificate yet"))?;
        let mut connection = ServerConnection::new(config).map_err(io::Error::other)?;
        while connection.is_handshaking() {
            connection.complete_io(&mut socket)?;
        }
        Ok(StreamOwned::new(connection, socket))
    }
}

/// A serving configuration from a certificate chain and key in PEM.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err("no certificate in the serving certificate file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| "no private key in the serving key file".to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("serving certificate and key do not fit together: {e}"))?;
    Ok(Arc::new(config))
}
