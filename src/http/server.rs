//! The listener: one named accept thread per port and one thread per open
//! connection, with a hard cap on open connections (past it a canned 503, not a
//! new thread, or on a port that asks for it the oldest idle connection is
//! closed to make room) and an accept loop that survives fd exhaustion. A
//! panic in a connection's handler ends that connection, never the process.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::conn::{Conn, Exchange, Limits, ReadHeadError, Stream};
use super::response_head::{ResponseHead, json_content_type};
use super::socket::Socket;

/// Answers requests. Called on a connection thread; may block (a watch does).
pub trait Handler<S: Stream>: Send + Sync + 'static {
    fn handle(&self, exchange: &mut Exchange<'_, S>);
}

/// Turns an accepted TCP connection into the stream the handler reads (plain or TLS).
pub trait Acceptor: Send + Sync + 'static {
    type Stream: Stream;
    /// Ends within the socket's deadline (a TLS handshake).
    fn wrap(&self, socket: Socket) -> io::Result<Self::Stream>;
}

/// Plain HTTP.
pub struct PlainAcceptor;

impl Acceptor for PlainAcceptor {
    type Stream = Socket;
    fn wrap(&self, socket: Socket) -> io::Result<Socket> {
        Ok(socket)
    }
}

/// Builds a Kubernetes `Status` body for errors the server answers itself.
pub type ErrorBody = Arc<dyn Fn(u16, &str) -> Vec<u8> + Send + Sync>;

pub struct ServerConfig {
    /// Short name used in thread names and logs (`proxy`, `serve`).
    pub name: &'static str,
    pub max_connections: usize,
    pub limits: Limits,
    pub error_body: ErrorBody,
    /// Stack size of connection threads.
    pub stack_size: usize,
    /// At the connection cap, close the connection idle the longest (between
    /// requests, or still sending its head) instead of refusing the new one:
    /// for the port of liveness probes, which idle clients must not block.
    pub evict_idle_when_full: bool,
}

/// Counters a listener keeps, read by the metrics.
#[derive(Default)]
pub struct ServerStats {
    pub open_connections: AtomicUsize,
    pub rejected_connections: AtomicU64,
    pub accept_errors: AtomicU64,
    /// Requests being served (the proxy ports; watches excluded).
    pub in_flight: AtomicI64,
    /// Connections whose handler panicked.
    pub panics: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted_idle: AtomicU64,
}

/// The open connections of a port that evicts idle ones: a handle to each
/// socket and since when it has been waiting for a request (none while one
/// is being served).
#[derive(Default)]
struct Idle {
    next_id: AtomicU64,
    connections: Mutex<HashMap<u64, (TcpStream, Option<Instant>)>>,
}

impl Idle {
    fn add(self: &Arc<Self>, tcp: &TcpStream) -> Option<Tracked> {
        let handle = tcp.try_clone().ok()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (handle, Some(Instant::now())));
        Some(Tracked {
            idle: self.clone(),
            id,
        })
    }

    /// Closes the connection that has waited for a request the longest.
    fn evict_oldest(&self) -> bool {
        let mut connections = self.lock();
        let oldest = connections
            .iter()
            .filter_map(|(id, (_, since))| since.map(|since| (since, *id)))
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some((tcp, _)) = connections.remove(&id) {
            let _ = tcp.shutdown(Shutdown::Both);
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (TcpStream, Option<Instant>)>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection's entry in `Idle`, removed when the connection ends.
struct Tracked {
    idle: Arc<Idle>,
    id: u64,
}

impl Tracked {
    fn set_waiting(&self, waiting: bool) {
        if let Some((_, since)) = self.idle.lock().get_mut(&self.id) {
            *since = waiting.then(Instant::now);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.idle.lock().remove(&self.id);
    }
}

/// A running listener.
pub struct ServerHandle {
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
    pub stats: Arc<ServerStats>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting. Open connections finish their current request and close.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // accept() has no timeout: wake it with a connection of our own.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts serving `listener` on a new accept thread, counting in `stats`.
pub fn spawn<A: Acceptor, H: Handler<A::Stream>>(
    listener: TcpListener,
    config: ServerConfig,
    acceptor: Arc<A>,
    handler: Arc<H>,
    stats: Arc<ServerStats>,
) -> io::Result<ServerHandle> {
    let local_addr = listener.local_addr()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let accept_thread = {
        let stopping = stopping.clone();
        let stats = stats.clone();
        let config = Arc::new(config);
        thread::Builder::new()
            .name(format!("yh-{}-accept", config.name))
            .spawn(move || accept_loop(listener, config, acceptor, handler, stopping, stats))?
    };
    Ok(ServerHandle {
        local_addr,
        stopping,
        accept_thread: Some(accept_thread),
        stats,
    })
}

fn accept_loop<A: Acceptor, H: Handler<A::Stream>>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    acceptor: Arc<A>,
    handler: Arc<H>,
    stopping: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
) {
    let mut last_error_log: Option<Instant> = None;
    let idle = config.evict_idle_when_full.then(Arc::<Idle>::default);
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let (tcp, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    log::warn!("{} listener: accept failed: {e}; retrying", config.name);
                    last_error_log = Some(Instant::now());
                }
                // Out of descriptors or memory: the pending connection stays in the
                // backlog, so pause instead of spinning, and keep the port open.
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let full = stats.open_connections.load(Ordering::SeqCst) >= config.max_connections;
        if full && idle.as_ref().is_some_and(|idle| idle.evict_oldest()) {
            // Its thread sees the connection end and leaves; this one is
            // served at once (open connections exceed the cap by one for a
            // moment).
            stats.evicted_idle.fetch_add(1, Ordering::Relaxed);
        } else if full {
            stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "{} listener: refusing {remote}: {} connections open",
                config.name,
                config.max_connections
            );
            reject_busy(tcp, &config);
            continue;
        }
        stats.open_connections.fetch_add(1, Ordering::SeqCst);
        let guard = OpenConnection(stats.clone());
        let tracked = idle.as_ref().and_then(|idle| idle.add(&tcp));
        let spawned = {
            let config = config.clone();
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            let stopping = stopping.clone();
            let stats = stats.clone();
            thread::Builder::new()
                .name(format!("yh-{}-conn", config.name))
                .stack_size(config.stack_size)
                .spawn(move || {
                    let _guard = guard;
                    let served = catch_unwind(AssertUnwindSafe(|| {
                        let connection = Connection {
                            remote,
                            config: &config,
                            stopping: &stopping,
                            tracked: tracked.as_ref(),
                        };
                        serve_tcp(tcp, &connection, &*acceptor, &*handler)
                    }));
                    if served.is_err() {
                        // The hook logged the panic; the socket closed as it unwound.
                        stats.panics.fetch_add(1, Ordering::Relaxed);
                    }
                })
        };
        if let Err(e) = spawned {
            // The closure, and with it the connection and the count, went down
            // with the failed spawn: the client sees the connection close.
            stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "{} listener: cannot start a connection thread: {e}",
                config.name
            );
        }
    }
}

/// Decrements the open-connection count however the connection thread ends.
struct OpenConnection(Arc<ServerStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers 503 on a connection we will not serve, without blocking the accept loop.
fn reject_busy(tcp: TcpStream, config: &ServerConfig) {
    let body = (config.error_body)(503, "too many open connections to the hub, retry later");
    let mut headers = json_content_type();
    headers.push(("Retry-After".to_string(), "1".to_string()));
    let out = canned_response(503, &headers, &body);
    let _ = tcp.set_nonblocking(true);
    // Read what already arrived so closing does not turn into a reset that
    // would destroy the answer before the client reads it.
    let mut sink = [0u8; 4096];
    let _ = (&tcp).read(&mut sink);
    let _ = (&tcp).write(&out);
    let _ = tcp.shutdown(Shutdown::Write);
}

/// What a connection thread knows of its connection besides the stream.
pub(crate) struct Connection<'a> {
    pub(crate) remote: SocketAddr,
    pub(crate) config: &'a ServerConfig,
    pub(crate) stopping: &'a AtomicBool,
    /// Its entry among the idle-evictable connections, if the port has them.
    tracked: Option<&'a Tracked>,
}

fn serve_tcp<A: Acceptor, H: Handler<A::Stream>>(
    tcp: TcpStream,
    connection: &Connection<'_>,
    acceptor: &A,
    handler: &H,
) {
    let config = connection.config;
    let _ = tcp.set_nodelay(true);
    let socket = Socket::new(tcp);
    let _ = socket.set_write_timeout(Some(config.limits.write_timeout));
    // A TLS handshake must finish in bounded time, however it trickles in.
    let _ = socket.set_read_timeout(Some(config.limits.handshake_timeout));
    socket.set_deadline(Some(Instant::now() + config.limits.handshake_timeout));
    let stream = match acceptor.wrap(socket) {
        Ok(stream) => stream,
        Err(e) => {
            log::debug!(
                "{} listener: handshake with {} failed: {e}",
                config.name,
                connection.remote
            );
            return;
        }
    };
    stream.socket().set_deadline(None);
    serve_connection(stream, connection, handler);
}

/// Serves requests on one connection until it closes.
pub(crate) fn serve_connection<S: Stream, H: Handler<S>>(
    stream: S,
    connection: &Connection<'_>,
    handler: &H,
) {
    let config = connection.config;
    let mut conn = Conn::new(stream);
    loop {
        if let Some(tracked) = connection.tracked {
            tracked.set_waiting(true);
        }
        conn.stream.socket().set_write_deadline(None);
        let head = match conn.read_head(&config.limits) {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(ReadHeadError::TooLarge) => {
                let body = (config.error_body)(431, "request header fields too large");
                write_error(&mut conn, 431, &body);
                return;
            }
            Err(ReadHeadError::Parse(e)) => {
                let body = (config.error_body)(e.status(), &e.to_string());
                write_error(&mut conn, e.status(), &body);
                return;
            }
            Err(ReadHeadError::Io(e)) => {
                log::debug!(
                    "{} listener: reading from {}: {e}",
                    config.name,
                    connection.remote
                );
                return;
            }
        };
        if let Some(tracked) = connection.tracked {
            tracked.set_waiting(false);
        }
        // The body's reads keep the idle timeout; its total deadline is
        // shorter (no system call for a request without a body).
        let socket = conn.stream.socket();
        socket.set_deadline(Some(Instant::now() + config.limits.body_timeout));
        let closing = connection.stopping.load(Ordering::SeqCst);
        let mut exchange = Exchange::new(&mut conn, head, closing);
        handler.handle(&mut exchange);
        // Answered: from here the connection only waits on its client (a
        // body to drain, a lingering close), so it may be evicted.
        if let Some(tracked) = connection.tracked {
            tracked.set_waiting(true);
        }
        if !exchange.complete(&*config.error_body) {
            close_lingering(&mut conn);
            return;
        }
    }
}

/// How long, and how many bytes, a closing connection still reads and drops.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Closes a connection whose request may not have been read to its end (a
/// body refused half-way): the write side first, then what the client still
/// sends is read and dropped, bounded, so that closing with unread bytes does
/// not reset the connection and destroy the answer before the client reads it.
fn close_lingering<S: Stream>(conn: &mut Conn<S>) {
    let _ = conn.stream.flush();
    let socket = conn.stream.socket();
    let _ = socket.shutdown(Shutdown::Write);
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 16 * 1024];
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_raw_read_timeout(Some(left)).is_err() {
            break;
        }
        // The raw TCP socket: under TLS these bytes are not worth decrypting.
        match (&**socket).read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => dropped += n,
        }
    }
    let _ = socket.shutdown(Shutdown::Both);
}

/// Answers a request head the listener refused; the connection closes after it.
fn write_error<S: Stream>(conn: &mut Conn<S>, status: u16, body: &[u8]) {
    let out = canned_response(status, &json_content_type(), body);
    let _ = conn.stream.write_all(&out);
    let _ = conn.stream.flush();
    let _ = conn.stream.socket().shutdown(Shutdown::Write);
}

/// A whole response the listener answers itself, head and body, after which
/// the connection closes.
fn canned_response(status: u16, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let head = ResponseHead {
        status,
        headers,
        length: Some(body.len() as u64),
        head_request: false,
        close: true,
    };
    let mut out = head.to_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_answer_is_a_closing_503_with_retry_after() {
        let mut headers = json_content_type();
        headers.push(("Retry-After".to_string(), "1".to_string()));
        assert_eq!(
            String::from_utf8(canned_response(503, &headers, b"{}")).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }

    #[test]
    fn refused_head_gets_a_closing_json_answer() {
        assert_eq!(
            String::from_utf8(canned_response(431, &json_content_type(), b"{}")).unwrap(),
            "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }

    /// Answers 200, or panics for `/panic`.
    struct Panicky;

    impl<S: Stream> Handler<S> for Panicky {
        fn handle(&self, exchange: &mut Exchange<'_, S>) {
            if exchange.head.path == "/panic" {
                panic!("a handler bug");
            }
            let _ = exchange.respond(200, &[], b"ok");
        }
    }

    fn start(max_connections: usize, evict_idle_when_full: bool) -> ServerHandle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        spawn(
            listener,
            ServerConfig {
                name: "test",
                max_connections,
                limits: Limits::default(),
                error_body: Arc::new(|_, m| m.as_bytes().to_vec()),
                stack_size: 256 * 1024,
                evict_idle_when_full,
            },
            Arc::new(PlainAcceptor),
            Arc::new(Panicky),
            Arc::default(),
        )
        .unwrap()
    }

    /// Sends one request and returns everything the server sent until it
    /// closed (bounded by a read timeout).
    fn request(addr: SocketAddr, path: &str) -> String {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn a_panicking_handler_ends_its_connection_not_the_listener() {
        let mut server = start(8, false);
        let addr = server.local_addr();
        assert_eq!(request(addr, "/panic"), "", "the connection just closes");
        assert!(request(addr, "/ok").starts_with("HTTP/1.1 200"));
        // Counted once the thread has unwound (after its socket closed).
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.stats.panics.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the panic was never counted");
            thread::yield_now();
        }
        assert_eq!(server.stats.panics.load(Ordering::SeqCst), 1);
        server.stop();
    }

    #[test]
    fn at_the_cap_an_idle_connection_makes_room_where_asked() {
        for evict in [true, false] {
            let mut server = start(2, evict);
            let addr = server.local_addr();
            let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
            let deadline = Instant::now() + Duration::from_secs(10);
            while server.stats.open_connections.load(Ordering::SeqCst) < 2 {
                assert!(Instant::now() < deadline, "connections never counted");
                thread::yield_now();
            }
            if evict {
                let answer = request(addr, "/ok");
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                assert_eq!(server.stats.evicted_idle.load(Ordering::SeqCst), 1);
            } else {
                // The refusal comes at once, before any request: a client
                // writing one might find the connection already closed.
                let mut tcp = TcpStream::connect(addr).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut answer = Vec::new();
                let _ = tcp.read_to_end(&mut answer);
                let answer = String::from_utf8_lossy(&answer);
                assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            }
            drop(idle);
            server.stop();
        }
    }
}
