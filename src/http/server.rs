//! The listener: one named accept thread per port and one thread per open
//! connection, with a hard cap on open connections (past it a canned 503, not a
//! new thread) and an accept loop that survives fd exhaustion.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::conn::{Conn, Exchange, Limits, ReadHeadError, Stream};
use super::response_head::{ResponseHead, json_content_type};

/// Answers requests. Called on a connection thread; may block (a watch does).
pub trait Handler<S: Stream>: Send + Sync + 'static {
    fn handle(&self, exchange: &mut Exchange<'_, S>);
}

/// Turns an accepted TCP connection into the stream the handler reads (plain or TLS).
pub trait Acceptor: Send + Sync + 'static {
    type Stream: Stream;
    fn wrap(&self, tcp: TcpStream) -> io::Result<Self::Stream>;
}

/// Plain HTTP.
pub struct PlainAcceptor;

impl Acceptor for PlainAcceptor {
    type Stream = TcpStream;
    fn wrap(&self, tcp: TcpStream) -> io::Result<TcpStream> {
        Ok(tcp)
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
}

/// Counters a listener keeps, read by the metrics.
#[derive(Default)]
pub struct ServerStats {
    pub open_connections: AtomicUsize,
    pub rejected_connections: AtomicU64,
    pub accept_errors: AtomicU64,
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

/// Starts serving `listener` on a new accept thread.
pub fn spawn<A: Acceptor, H: Handler<A::Stream>>(
    listener: TcpListener,
    config: ServerConfig,
    acceptor: Arc<A>,
    handler: Arc<H>,
) -> io::Result<ServerHandle> {
    let local_addr = listener.local_addr()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(ServerStats::default());
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
        if stats.open_connections.load(Ordering::SeqCst) >= config.max_connections {
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
        let spawned = {
            let config = config.clone();
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            let stopping = stopping.clone();
            thread::Builder::new()
                .name(format!("yh-{}-conn", config.name))
                .stack_size(config.stack_size)
                .spawn(move || {
                    let _guard = guard;
                    serve_tcp(tcp, remote, &config, &*acceptor, &*handler, &stopping);
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

fn serve_tcp<A: Acceptor, H: Handler<A::Stream>>(
    tcp: TcpStream,
    remote: SocketAddr,
    config: &ServerConfig,
    acceptor: &A,
    handler: &H,
    stopping: &AtomicBool,
) {
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_write_timeout(Some(config.limits.write_timeout));
    // A TLS handshake must also finish in bounded time.
    let _ = tcp.set_read_timeout(Some(config.limits.head_timeout));
    let stream = match acceptor.wrap(tcp) {
        Ok(stream) => stream,
        Err(e) => {
            log::debug!(
                "{} listener: handshake with {remote} failed: {e}",
                config.name
            );
            return;
        }
    };
    serve_connection(stream, remote, config, handler, stopping);
}

/// Serves requests on one connection until it closes.
pub(crate) fn serve_connection<S: Stream, H: Handler<S>>(
    stream: S,
    remote: SocketAddr,
    config: &ServerConfig,
    handler: &H,
    stopping: &AtomicBool,
) {
    let mut conn = Conn::new(stream);
    loop {
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
                log::debug!("{} listener: reading from {remote}: {e}", config.name);
                return;
            }
        };
        let _ = conn
            .stream
            .socket()
            .set_read_timeout(Some(config.limits.body_read_timeout));
        let closing = stopping.load(Ordering::SeqCst);
        let mut exchange = Exchange::new(&mut conn, head, closing);
        handler.handle(&mut exchange);
        if !exchange.complete(&*config.error_body) {
            let _ = conn.stream.flush();
            let _ = conn.stream.socket().shutdown(Shutdown::Both);
            return;
        }
    }
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
}
