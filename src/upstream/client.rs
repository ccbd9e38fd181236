//! The HTTP/1.1 client: where each apiserver is, a TLS configuration per
//! identity with its pool of idle keep-alive connections, and one exchange:
//! a pooled or new connection, the request written, the response head read.
//!
//! Liveness of a pooled connection costs no system call per request:
//! connections idle longer than `MAX_IDLE` are dropped unused, and a
//! request that may safely be sent again (a GET, HEAD or OPTIONS without a
//! body) whose reused connection ends before any byte of an answer is sent
//! once more on a new connection. Any other request peeks at a pooled
//! connection before using it, and is never sent twice: once it may have
//! reached an apiserver, its failure is the caller's answer.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::connection::{Connection, Failure, RequestHead, Transport};
use super::response::{Decoder, Head};
use super::{Deadline, SendError, Unreachable, WATCH_HEAD_TIMEOUT};
use crate::certs::ClientIdentity;
use crate::http::{Socket, Stream};

/// Idle connections kept per apiserver and identity; a burst above it
/// opens connections that are closed after their request.
const MAX_IDLE_PER_SERVER: usize = 32;
/// Idle connections kept per identity, all apiservers together.
const MAX_IDLE_PER_IDENTITY: usize = 64;
/// A pooled connection idle longer is closed, not used: the other side
/// may be about to close it. Below the 60 s idle timeout common in load
/// balancers in front of apiservers and the 90 s of kube-apiserver's own
/// listener, with room for their timers' granularity.
const MAX_IDLE: Duration = Duration::from_secs(50);
/// How long an apiserver's host name, once looked up, is used as it is.
const NAME_TTL: Duration = Duration::from_secs(30);

/// Where one apiserver is, read once from its URL.
#[derive(Debug)]
pub(super) struct Target {
    tls: bool,
    /// Host name or address, without the brackets of an IPv6 address.
    host: String,
    port: u16,
    /// The address itself when the host is one (no lookup then).
    literal: Option<SocketAddr>,
    server_name: Option<ServerName<'static>>,
    /// The `Host` field: the host, and the port unless it is the scheme's own.
    host_header: String,
    /// A path prefix put before every request's target (usually empty).
    prefix: String,
    /// `host:port`, for messages.
    pub(super) address: String,
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
        let tls = uri.scheme_str() != Some("http");
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        let default_port = if tls { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let bracketed = authority.host();
        let host = bracketed.trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok();
        let server_name = match ip {
            Some(ip) => Some(ServerName::IpAddress(ip.into())),
            None => ServerName::try_from(host.to_string()).ok(),
        };
        let host_header = if port == default_port {
            bracketed.to_string()
        } else {
            format!("{bracketed}:{port}")
        };
        Ok(Target {
            tls,
            host: host.to_string(),
            port,
            literal: ip.map(|ip| SocketAddr::new(ip, port)),
            server_name,
            host_header,
            prefix: uri.path().trim_end_matches('/').to_string(),
            address: format!("{bracketed}:{port}"),
        })
    }
}

/// Finds an apiserver's addresses without a thread per request: an address
/// is used as it is (`Target::literal`); a host name is looked up on a
/// short-lived thread bounded by the connect deadline (the system resolver
/// has no timeout of its own) and kept for `NAME_TTL`.
#[derive(Debug, Default)]
pub(super) struct Resolver {
    names: Mutex<HashMap<(String, u16), Found>>,
}

/// When a name was looked up, and what it gave.
type Found = (Instant, Arc<[SocketAddr]>);

impl Resolver {
    fn resolve(&self, host: &str, port: u16, timeout: Duration) -> io::Result<Arc<[SocketAddr]>> {
        let key = (host.to_string(), port);
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, addresses)) = names.get(&key)
            && at.elapsed() < NAME_TTL
        {
            return Ok(addresses.clone());
        }
        drop(names);
        let (sender, receiver) = std::sync::mpsc::channel();
        let lookup = key.clone();
        std::thread::Builder::new()
            .name("yh-resolve".into())
            .spawn(move || {
                let found = lookup.to_socket_addrs().map(|a| a.collect::<Vec<_>>());
                let _ = sender.send(found);
            })?;
        let addresses: Arc<[SocketAddr]> = match receiver.recv_timeout(timeout) {
            Ok(Ok(found)) if !found.is_empty() => found.into(),
            Ok(Ok(_)) => return Err(io::Error::new(io::ErrorKind::NotFound, "no address")),
            Ok(Err(e)) => return Err(io::Error::new(io::ErrorKind::NotFound, e)),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "name lookup timed out",
                ));
            }
        };
        names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.retain(|_, (at, _)| at.elapsed() < NAME_TTL);
        names.insert(key, (Instant::now(), addresses.clone()));
        Ok(addresses)
    }
}

/// Idle keep-alive connections, per apiserver, newest last (reused first:
/// the one least likely to have been closed by the other side).
pub(super) struct Pool<S> {
    state: Mutex<PoolState<S>>,
}

struct PoolState<S> {
    idle: Vec<Vec<Connection<S>>>,
    total: usize,
    /// The identity was replaced: no connection is kept any more.
    retired: bool,
}

impl<S: Read + std::io::Write> Pool<S> {
    pub(super) fn new(servers: usize) -> Pool<S> {
        Pool {
            state: Mutex::new(PoolState {
                idle: (0..servers).map(|_| Vec::new()).collect(),
                total: 0,
                retired: false,
            }),
        }
    }

    /// The most recently used idle connection to `server`, unless it has
    /// been idle too long (then it and every older one are closed).
    pub(super) fn take(&self, server: usize, now: Instant) -> Option<Connection<S>> {
        let stale = {
            let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let state = &mut *guard;
            let idle = state.idle.get_mut(server)?;
            let conn = idle.pop()?;
            state.total -= 1;
            if now.saturating_duration_since(conn.idle_since) <= MAX_IDLE {
                return Some(conn);
            }
            // The newest is too old: so is every other.
            state.total -= idle.len();
            (conn, std::mem::take(idle))
        };
        // Closed once the lock is released.
        drop(stale);
        None
    }

    /// Keeps a connection whose exchange ended cleanly, within the bounds.
    pub(super) fn put(&self, server: usize, mut conn: Connection<S>) {
        conn.park();
        let refused = {
            let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let state = &mut *guard;
            match state.idle.get_mut(server) {
                Some(idle)
                    if !state.retired
                        && idle.len() < MAX_IDLE_PER_SERVER
                        && state.total < MAX_IDLE_PER_IDENTITY =>
                {
                    idle.push(conn);
                    state.total += 1;
                    None
                }
                _ => Some(conn),
            }
        };
        // Closed once the lock is released.
        drop(refused);
    }

    /// Closes every idle connection, and those given back from now on.
    fn retire(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.retired = true;
        state.total = 0;
        let idle: Vec<_> = state.idle.iter_mut().map(std::mem::take).collect();
        drop(state);
        drop(idle);
    }
}

/// One TLS identity (the hub's client certificate, or none) and its pool.
pub(super) struct Identity {
    /// Why no configuration could be built, if none could.
    tls: Result<Arc<ClientConfig>, String>,
    pool: Pool<Transport>,
}

impl Identity {
    fn new(
        roots: &Arc<RootCertStore>,
        identity: Option<&ClientIdentity>,
        servers: usize,
    ) -> Identity {
        Identity {
            tls: tls_config(roots, identity).map(Arc::new),
            pool: Pool::new(servers),
        }
    }
}

fn tls_config(
    roots: &Arc<RootCertStore>,
    identity: Option<&ClientIdentity>,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots.clone());
    let Some(identity) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    // The key was checked against the certificate when it was loaded.
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)
        .map_err(|_| "client key cannot be read".to_string())?;
    builder
        .with_client_auth_cert(identity.chain.clone(), key)
        .map_err(|e| format!("client certificate: {e}"))
}

/// What one exchange needs besides the request.
pub(super) struct Timing {
    pub deadline: Deadline,
    pub connect_timeout: Duration,
    /// How often a quiet stream's read returns (`Deadline::Stream`).
    pub stream_poll: Duration,
}

/// One request as the client sends it.
pub(super) struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub headers: &'a [(String, String)],
    pub body: Option<&'a mut dyn Read>,
    pub with_client_cert: bool,
}

pub(super) struct Client {
    targets: Vec<Target>,
    resolver: Resolver,
    roots: Arc<RootCertStore>,
    anonymous: Arc<Identity>,
    /// Replaced when the client certificate rotates.
    with_cert: RwLock<Arc<Identity>>,
}

impl Client {
    /// A client of `targets`, trusting `roots`, presenting `identity` where
    /// asked to.
    pub(super) fn new(
        targets: Vec<Target>,
        roots: &[CertificateDer<'static>],
        identity: Option<&ClientIdentity>,
    ) -> Client {
        let mut store = RootCertStore::empty();
        for root in roots {
            // certs::load_ca made sure at least one certificate parses.
            let _ = store.add(root.clone());
        }
        let roots = Arc::new(store);
        let servers = targets.len();
        Client {
            anonymous: Arc::new(Identity::new(&roots, None, servers)),
            with_cert: RwLock::new(Arc::new(Identity::new(&roots, identity, servers))),
            roots,
            resolver: Resolver::default(),
            targets,
        }
    }

    /// New connections present `identity`; idle ones of the old identity
    /// are closed, and those still in use closed when their exchange ends.
    pub(super) fn use_identity(&self, identity: &ClientIdentity) {
        let servers = self.targets.len();
        let new = Arc::new(Identity::new(&self.roots, Some(identity), servers));
        let old = std::mem::replace(
            &mut *self.with_cert.write().unwrap_or_else(|e| e.into_inner()),
            new,
        );
        old.pool.retire();
    }

    /// Sends a request and reads the response head.
    pub(super) fn send(
        &self,
        server: usize,
        mut request: Request<'_>,
        timing: &Timing,
    ) -> Result<(Head, Body), SendError> {
        let start = Instant::now();
        let target = &self.targets[server];
        let identity = if request.with_client_cert {
            self.with_cert
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        } else {
            self.anonymous.clone()
        };
        let head_deadline = match timing.deadline {
            Deadline::Within(within) => start + within,
            Deadline::Stream => start + WATCH_HEAD_TIMEOUT,
        };
        let connect_deadline = (start + timing.connect_timeout).min(head_deadline);
        let method = request.method;
        let replayable = matches!(method, "GET" | "HEAD" | "OPTIONS") && request.body.is_none();
        let mut pooled = loop {
            match identity.pool.take(server, start) {
                // Only a request that may be sent again skips the check.
                Some(conn) if replayable || is_open(conn.stream.socket()) => break Some(conn),
                Some(_) => continue,
                None => break None,
            }
        };
        let head = RequestHead {
            method,
            prefix: &target.prefix,
            target: request.target,
            host: &target.host_header,
            headers: request.headers,
        };
        loop {
            let mut conn = match pooled.take() {
                Some(conn) => conn,
                None => self.connect(target, &identity, connect_deadline)?,
            };
            arm(conn.stream.socket(), Some(head_deadline), None);
            let sent = conn
                .write_request(&head, request.body.take())
                .and_then(|()| conn.read_head(method == "HEAD"));
            match sent {
                Ok(head) => {
                    let body = Body::new(conn, &head, timing, identity, server);
                    return Ok((head, body));
                }
                Err(Failure::Ended(e)) if conn.reused && replayable => {
                    log::debug!(
                        "{method} {}: idle connection to {} had closed ({e}); sending on a new one",
                        request.target,
                        target.address
                    );
                }
                Err(failure) => return Err(failed(target, failure)),
            }
        }
    }

    fn connect(
        &self,
        target: &Target,
        identity: &Identity,
        deadline: Instant,
    ) -> Result<Connection<Transport>, SendError> {
        let connect_error = |e: io::Error| SendError {
            unreachable: unreachable(&e),
            timed_out: matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            message: format!("connecting to {}: {e}", target.address),
        };
        let left = || deadline.saturating_duration_since(Instant::now());
        let looked_up;
        let addresses: &[SocketAddr] = match &target.literal {
            Some(address) => std::slice::from_ref(address),
            None => {
                looked_up = self
                    .resolver
                    .resolve(&target.host, target.port, left())
                    .map_err(connect_error)?;
                &looked_up
            }
        };
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut tcp = None;
        for address in addresses {
            if left().is_zero() {
                last_error = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                break;
            }
            match TcpStream::connect_timeout(address, left()) {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        let tcp = tcp.ok_or(last_error).map_err(connect_error)?;
        let _ = tcp.set_nodelay(true);
        let mut socket = Socket::new(tcp);
        arm(&socket, Some(deadline), None);
        if !target.tls {
            return Ok(Connection::new(Transport::Plain(socket)));
        }
        let handshake_error = |message: String| SendError {
            unreachable: None,
            timed_out: false,
            message: format!("TLS with {}: {message}", target.address),
        };
        let config = identity.tls.clone().map_err(handshake_error)?;
        let name = target
            .server_name
            .clone()
            .ok_or_else(|| handshake_error(format!("invalid server name {:?}", target.host)))?;
        let mut tls =
            ClientConnection::new(config, name).map_err(|e| handshake_error(e.to_string()))?;
        while tls.is_handshaking() {
            if let Err(e) = tls.complete_io(&mut socket) {
                // No handshake within the connect deadline: nothing was sent,
                // the apiserver is as unreachable as one that refuses.
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) {
                    return Err(SendError {
                        unreachable: Some(Unreachable::Timeout),
                        timed_out: true,
                        message: format!("TLS handshake with {} timed out", target.address),
                    });
                }
                return Err(handshake_error(e.to_string()));
            }
        }
        Ok(Connection::new(Transport::Tls(Box::new(StreamOwned::new(
            tls, socket,
        )))))
    }
}

/// Sets the socket's read and write deadline and read timeout for what
/// comes next on it.
fn arm(socket: &Socket, deadline: Option<Instant>, read_timeout: Option<Duration>) {
    let _ = socket.set_read_timeout(read_timeout);
    let _ = socket.set_write_timeout(None);
    socket.set_deadline(deadline);
    socket.set_write_deadline(deadline);
}

/// Whether a pooled connection is still open with nothing unread (a closed
/// one shows the end of the stream, or a TLS close_notify waiting).
fn is_open(socket: &Socket) -> bool {
    matches!(socket.peek_now(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// How a failed connect says the apiserver could not be reached (the
/// request never left the hub), or `None` when it does not say so.
fn unreachable(error: &io::Error) -> Option<Unreachable> {
    use io::ErrorKind::*;
    Some(match error.kind() {
        ConnectionRefused => Unreachable::Refused,
        TimedOut | WouldBlock => Unreachable::Timeout,
        AddrNotAvailable | HostUnreachable | NetworkUnreachable | NotFound => Unreachable::NoRoute,
        _ => return None,
    })
}

/// The error of an exchange that failed after connecting: it may have
/// reached the apiserver, so it is never a connect failure.
fn failed(target: &Target, failure: Failure) -> SendError {
    let address = &target.address;
    let (message, timed_out) = match failure {
        Failure::Ended(e) => (
            format!("{address} closed the connection before answering ({e})"),
            false,
        ),
        Failure::TimedOut => (format!("no answer from {address} in time"), true),
        Failure::Broken(why) => (format!("{address}: {why}"), false),
    };
    SendError {
        message,
        unreachable: None,
        timed_out,
    }
}

/// A response body, read as it arrives. Its connection goes back to the
/// pool once the body has been read to its end (and the apiserver keeps
/// the connection); dropped before that, the connection is closed.
pub(super) struct Body {
    conn: Option<Connection<Transport>>,
    decoder: Decoder,
    reusable: bool,
    /// A stream: a read that times out is a quiet stream, not a failure.
    streaming: bool,
    identity: Arc<Identity>,
    server: usize,
    /// A read failed: every later read fails too.
    broken: bool,
}

impl Body {
    fn new(
        conn: Connection<Transport>,
        head: &Head,
        timing: &Timing,
        identity: Arc<Identity>,
        server: usize,
    ) -> Body {
        let streaming = timing.deadline == Deadline::Stream;
        if streaming {
            arm(conn.stream.socket(), None, Some(timing.stream_poll));
        }
        let mut body = Body {
            conn: Some(conn),
            decoder: Decoder::new(head.framing),
            reusable: head.reusable,
            streaming,
            identity,
            server,
            broken: false,
        };
        if body.decoder.is_done() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && self.reusable
            && !conn.has_leftover()
            && conn.stream.is_clean()
        {
            self.identity.pool.put(self.server, conn);
        }
    }
}

impl Read for Body {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Some(conn) = self.conn.as_mut() else {
            if self.broken {
                return Err(io::Error::other("the response body failed earlier"));
            }
            return Ok(0);
        };
        match conn.read_body(&mut self.decoder, out) {
            Ok(n) => {
                if self.decoder.is_done() {
                    self.release();
                }
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if self.streaming {
                    return Err(super::quiet_stream());
                }
                self.conn = None;
                self.broken = true;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the apiserver did not finish its answer in time",
                ))
            }
            Err(e) => {
                self.conn = None;
                self.broken = true;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::memory::Memory;

    #[test]
    fn targets_are_read_once_from_their_url() {
        // url, address, Host field, prefix, address used without a lookup
        let cases = [
            (
                "https://10.0.0.1:6443",
                "10.0.0.1:6443",
                "10.0.0.1:6443",
                "",
                Some("10.0.0.1:6443"),
            ),
            (
                "https://10.0.0.1",
                "10.0.0.1:443",
                "10.0.0.1",
                "",
                Some("10.0.0.1:443"),
            ),
            (
                "https://[fd00::1]:6443",
                "[fd00::1]:6443",
                "[fd00::1]:6443",
                "",
                Some("[fd00::1]:6443"),
            ),
            ("http://c:8080/prefix", "c:8080", "c:8080", "/prefix", None),
            ("http://c:80/a/b/", "c:80", "c", "/a/b", None),
            (
                "https://apiserver.example",
                "apiserver.example:443",
                "apiserver.example",
                "",
                None,
            ),
        ];
        for (url, address, host, prefix, literal) in cases {
            let target = Target::parse(url).unwrap();
            assert_eq!(target.address, address, "{url}");
            assert_eq!(target.host_header, host, "{url}");
            assert_eq!(target.prefix, prefix, "{url}");
            assert_eq!(
                target.literal.map(|a| a.to_string()).as_deref(),
                literal,
                "{url}"
            );
            assert_eq!(target.tls, url.starts_with("https"), "{url}");
            assert!(target.server_name.is_some(), "{url}");
        }
    }

    #[test]
    fn host_names_are_looked_up_once_per_ttl() {
        let resolver = Resolver::default();
        let first = resolver
            .resolve("localhost", 6443, Duration::from_secs(5))
            .unwrap();
        assert!(
            first
                .iter()
                .all(|a| a.port() == 6443 && a.ip().is_loopback())
        );
        assert_eq!(resolver.names.lock().unwrap().len(), 1, "a name is kept");
        let again = resolver
            .resolve("localhost", 6443, Duration::from_secs(5))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again), "no second lookup");
    }

    #[test]
    fn connect_errors_say_whether_the_apiserver_was_unreachable() {
        use io::ErrorKind::*;
        let cases = [
            (ConnectionRefused, Some(Unreachable::Refused)),
            (TimedOut, Some(Unreachable::Timeout)),
            (WouldBlock, Some(Unreachable::Timeout)),
            (HostUnreachable, Some(Unreachable::NoRoute)),
            (NetworkUnreachable, Some(Unreachable::NoRoute)),
            (AddrNotAvailable, Some(Unreachable::NoRoute)),
            (NotFound, Some(Unreachable::NoRoute)),
            // It may have reached an apiserver.
            (ConnectionReset, None),
            (ConnectionAborted, None),
            (InvalidData, None),
        ];
        for (kind, expected) in cases {
            assert_eq!(unreachable(&kind.into()), expected, "{kind:?}");
        }
    }

    fn parked(pool: &Pool<Memory>, server: usize, tag: &[u8]) {
        pool.put(server, Connection::new(Memory::new(tag)));
    }

    fn tag(conn: Connection<Memory>) -> Vec<u8> {
        let mut conn = conn;
        let mut out = Vec::new();
        conn.stream.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn the_pool_hands_out_the_newest_connection_of_its_server() {
        let pool = Pool::new(2);
        let now = Instant::now();
        parked(&pool, 0, b"a");
        parked(&pool, 0, b"b");
        parked(&pool, 1, b"c");
        assert_eq!(tag(pool.take(0, now).unwrap()), b"b");
        assert_eq!(tag(pool.take(1, now).unwrap()), b"c");
        assert_eq!(tag(pool.take(0, now).unwrap()), b"a");
        assert!(pool.take(0, now).is_none());
        assert!(pool.take(7, now).is_none(), "no such server");
    }

    #[test]
    fn connections_idle_too_long_are_closed_unused() {
        let pool = Pool::new(1);
        parked(&pool, 0, b"a");
        parked(&pool, 0, b"b");
        let later = Instant::now() + MAX_IDLE + Duration::from_secs(1);
        assert!(pool.take(0, later).is_none());
        assert_eq!(pool.state.lock().unwrap().total, 0, "the older one too");
        parked(&pool, 0, b"c");
        assert!(pool.take(0, Instant::now()).is_some());
    }

    #[test]
    fn the_pool_is_bounded_and_a_retired_one_keeps_nothing() {
        let pool = Pool::new(3);
        for _ in 0..MAX_IDLE_PER_SERVER + 5 {
            parked(&pool, 0, b"x");
        }
        assert_eq!(
            pool.state.lock().unwrap().idle[0].len(),
            MAX_IDLE_PER_SERVER
        );
        for _ in 0..MAX_IDLE_PER_SERVER + 5 {
            parked(&pool, 1, b"x");
            parked(&pool, 2, b"x");
        }
        assert_eq!(pool.state.lock().unwrap().total, MAX_IDLE_PER_IDENTITY);
        pool.retire();
        parked(&pool, 0, b"x");
        assert!(pool.take(0, Instant::now()).is_none());
        assert_eq!(pool.state.lock().unwrap().total, 0);
    }
}
