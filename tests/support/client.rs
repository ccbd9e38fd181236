//! HTTP clients for tests: plain request/response helpers and `RawStream`,
//! a hand-written HTTP/1.1 reader that timestamps each piece of a streamed
//! (chunked) body as it arrives. Written here, not taken from the hub, so
//! the tests do not share the hub's bugs. An agent keeps its connections
//! alive between requests, as node components do.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Status, headers (names lowercased), body.
pub type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// Whole-request timeout of the agents built here (bounded tests).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The bound of an agent made without a timeout.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// How requests are sent: over TLS with this configuration (for
/// `https://`), each within `timeout` (connect, request, whole answer), on
/// a kept-alive connection when one is open.
#[derive(Clone)]
pub struct Agent {
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    /// Open connections between requests, with the URL origin they serve.
    idle: Arc<Mutex<Vec<(String, RawStream)>>>,
}

impl Agent {
    fn new(tls: Option<Arc<rustls::ClientConfig>>, timeout: Duration) -> Agent {
        Agent {
            tls,
            timeout,
            idle: Arc::default(),
        }
    }

    /// An open connection to `origin` whose other end has not closed it.
    fn kept_alive(&self, origin: &str) -> Option<RawStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(at) = idle.iter().position(|(o, _)| o == origin) {
            let (_, stream) = idle.swap_remove(at);
            if stream.is_open() {
                return Some(stream);
            }
        }
        None
    }
}

/// Plain-HTTP agent, 30 s per request.
pub fn agent() -> Agent {
    agent_with_timeout(Some(DEFAULT_TIMEOUT))
}

/// Like `agent()` with another timeout (`None`: an hour).
pub fn agent_with_timeout(timeout: Option<Duration>) -> Agent {
    Agent::new(None, timeout.unwrap_or(LONGEST_TIMEOUT))
}

/// HTTPS agent trusting only `ca_file`, presenting the client certificate +
/// key found in `client_pem` (one PEM file) when given; 30 s per request.
pub fn tls_agent(ca_file: &Path, client_pem: Option<&Path>) -> Agent {
    tls_agent_with_timeout(ca_file, client_pem, DEFAULT_TIMEOUT)
}

/// Like `tls_agent()` with another timeout (e.g. to poll a server that may
/// accept connections and not answer yet).
pub fn tls_agent_with_timeout(
    ca_file: &Path,
    client_pem: Option<&Path>,
    timeout: Duration,
) -> Agent {
    Agent::new(Some(rustls_client_config(ca_file, client_pem)), timeout)
}

/// GET with the default agent; panics on transport errors.
pub fn get(url: &str) -> Reply {
    request("GET", url, &[], &[])
}

/// A request with the default agent; panics on transport errors.
/// An empty `body` sends no body for GET/HEAD/DELETE/OPTIONS, and
/// `Content-Length: 0` otherwise.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    request_with(&agent(), method, url, headers, body)
}

/// Like `request` with the given agent; panics on transport errors.
pub fn request_with(
    agent: &Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    try_request_with(agent, method, url, headers, body)
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

/// Like `request` but returns transport errors.
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Reply> {
    try_request_with(&agent(), method, url, headers, body)
}

/// Sends the request on a connection of its own and reads the whole answer
/// (up to 256 MiB); a body cut short is an error.
pub fn try_request_with(
    agent: &Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Reply> {
    let deadline = Instant::now() + agent.timeout;
    let bodiless = matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS");
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if body.is_empty() && !bodiless {
        all.push(("Content-Length", "0"));
    }
    let origin = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    let path = &url[origin.len().min(url.len())..];
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = match agent.kept_alive(&origin) {
        Some(mut stream) => {
            stream.try_again(method, path, &all, body, agent.timeout)?;
            stream
        }
        None => RawStream::try_open(method, url, &all, body, agent.tls.clone(), agent.timeout)?,
    };
    let body = stream.read_body(deadline, 256 << 20)?;
    let reply = (stream.status, std::mem::take(&mut stream.headers), body);
    let closes = header(&reply.1, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    if !closes && stream.framing != Framing::UntilClose {
        let mut idle = agent.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push((origin, stream));
    }
    Ok(reply)
}

/// First value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Chunked,
    Length(u64),
    UntilClose,
    NoBody,
}

enum Parsed {
    Piece(Vec<u8>),
    End,
    NeedMore,
}

/// A raw HTTP/1.1 request on its own connection, for watch tests: the body
/// is handed out piece by piece with the `Instant` each piece arrived.
///
/// The instant of a piece is the time the read that completed it returned
/// (bytes are only read when no complete piece is buffered).
pub struct RawStream {
    io: Box<dyn Io>,
    sock: TcpStream,
    status: u16,
    headers: Vec<(String, String)>,
    buf: Vec<u8>,
    last_read_at: Instant,
    framing: Framing,
    ended: bool,
    /// The body ended as its framing says (not cut short).
    complete: bool,
    line_buf: Vec<u8>,
    line_at: Instant,
    /// The `Host` of the requests.
    authority: String,
}

impl RawStream {
    /// `GET url` over plain HTTP (e.g. `hub.proxy_url() + "/api/v1/pods?watch=true"`).
    /// Panics when no response head arrives within 10 s.
    pub fn get(url: &str, headers: &[(&str, &str)]) -> RawStream {
        Self::request("GET", url, headers, &[])
    }

    /// Any method over plain HTTP; a non-empty body is sent with Content-Length.
    pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> RawStream {
        Self::try_open(method, url, headers, body, None, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("RawStream {method} {url}: {e}"))
    }

    /// `GET url` over HTTPS trusting `ca_file`, with an optional client
    /// certificate + key PEM (e.g. directly against a `FakeApiserver`).
    pub fn get_tls(
        url: &str,
        headers: &[(&str, &str)],
        ca_file: &Path,
        client_pem: Option<&Path>,
    ) -> RawStream {
        let config = rustls_client_config(ca_file, client_pem);
        Self::try_open(
            "GET",
            url,
            headers,
            &[],
            Some(config),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("RawStream GET {url}: {e}"))
    }

    /// Opens the connection, sends the request and reads the response head.
    /// `http://` or `https://` (then `tls` must be given); loopback only.
    pub fn try_open(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> io::Result<RawStream> {
        let deadline = Instant::now() + timeout;
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| io::Error::other("url without scheme"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("cannot resolve"))?;
        assert!(
            addr.ip().is_loopback(),
            "RawStream is for loopback only: {url}"
        );
        let sock = TcpStream::connect_timeout(&addr, timeout)?;
        sock.set_nodelay(true)?;
        sock.set_write_timeout(Some(timeout))?;
        let io: Box<dyn Io> = match (scheme, tls) {
            ("http", _) => Box::new(sock.try_clone()?),
            ("https", Some(config)) => {
                let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| io::Error::other(format!("server name: {e}")))?;
                let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
                Box::new(rustls::StreamOwned::new(conn, sock.try_clone()?))
            }
            ("https", None) => return Err(io::Error::other("https needs a TLS config")),
            (other, _) => return Err(io::Error::other(format!("unsupported scheme {other}"))),
        };
        let mut stream = RawStream {
            io,
            sock,
            status: 0,
            headers: Vec::new(),
            buf: Vec::new(),
            last_read_at: Instant::now(),
            framing: Framing::NoBody,
            ended: false,
            complete: false,
            line_buf: Vec::new(),
            line_at: Instant::now(),
            authority: authority.to_string(),
        };
        stream.exchange(method, path, headers, body, deadline)?;
        Ok(stream)
    }

    /// Sends another request on the same connection (the last body read to
    /// its end) and reads its response head within `timeout`.
    pub fn try_again(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> io::Result<()> {
        self.ended = false;
        self.complete = false;
        self.exchange(method, path, headers, body, Instant::now() + timeout)
    }

    /// Whether the other end has neither closed the connection nor sent
    /// anything unasked.
    fn is_open(&self) -> bool {
        if self.sock.set_nonblocking(true).is_err() {
            return false;
        }
        let open = matches!(self.sock.peek(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        open && self.sock.set_nonblocking(false).is_ok()
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        deadline: Instant,
    ) -> io::Result<()> {
        let authority = self.authority.clone();
        let stream = self;
        // Bounds a TLS handshake too, which the first write or read drives.
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .sock
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {authority}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let framed = headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
        });
        if !body.is_empty() && !framed {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        stream.io.write_all(&out)?;
        stream.io.flush()?;

        loop {
            let head_end = loop {
                if let Some(pos) = stream.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break pos;
                }
                if !stream.read_more(deadline)? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before the response head",
                    ));
                }
            };
            let head: Vec<u8> = stream.buf.drain(..head_end + 4).collect();
            let head = String::from_utf8_lossy(&head[..head_end]).into_owned();
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
            if (100..200).contains(&status) && status != 101 {
                continue; // interim response
            }
            stream.status = status;
            stream.headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            break;
        }
        let chunked = stream
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = stream
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        stream.framing = if method == "HEAD" || matches!(stream.status, 204 | 304) {
            Framing::NoBody
        } else if chunked {
            Framing::Chunked
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        if stream.framing == Framing::NoBody {
            stream.ended = true;
            stream.complete = true;
        }
        Ok(())
    }

    pub fn status(&self) -> u16 {
        self.status
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    /// True once the body ended (terminating chunk, full length, EOF or error).
    pub fn is_ended(&self) -> bool {
        self.ended && self.line_buf.is_empty()
    }
    /// True once the body ended as framed: terminating chunk, full length,
    /// or EOF for a body without framing (not cut short or broken).
    pub fn ended_cleanly(&self) -> bool {
        self.ended && self.complete
    }

    /// Reads more bytes; Ok(false) on EOF, Err(TimedOut) at the deadline.
    fn read_more(&mut self, deadline: Instant) -> io::Result<bool> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match self.io.read(&mut tmp) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    self.last_read_at = Instant::now();
                    return Ok(true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    fn parse(&mut self) -> io::Result<Parsed> {
        match self.framing {
            Framing::NoBody => Ok(Parsed::End),
            Framing::Length(0) => Ok(Parsed::End),
            Framing::Length(rem) => {
                if self.buf.is_empty() {
                    return Ok(Parsed::NeedMore);
                }
                let n = (rem as usize).min(self.buf.len());
                self.framing = Framing::Length(rem - n as u64);
                Ok(Parsed::Piece(self.buf.drain(..n).collect()))
            }
            Framing::UntilClose => {
                if self.buf.is_empty() {
                    Ok(Parsed::NeedMore)
                } else {
                    Ok(Parsed::Piece(std::mem::take(&mut self.buf)))
                }
            }
            Framing::Chunked => {
                let Some(line_end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(Parsed::NeedMore);
                };
                let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size_text = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                })?;
                if size == 0 {
                    // Wait for the end of the (normally empty) trailer section.
                    let rest = &self.buf[line_end + 2..];
                    if rest.starts_with(b"\r\n") {
                        self.buf.drain(..line_end + 4);
                        return Ok(Parsed::End);
                    }
                    return match rest.windows(4).position(|w| w == b"\r\n\r\n") {
                        Some(p) => {
                            self.buf.drain(..line_end + 2 + p + 4);
                            Ok(Parsed::End)
                        }
                        None => Ok(Parsed::NeedMore),
                    };
                }
                let total = line_end + 2 + size + 2;
                if self.buf.len() < total {
                    return Ok(Parsed::NeedMore);
                }
                let data = self.buf[line_end + 2..line_end + 2 + size].to_vec();
                if &self.buf[total - 2..total] != b"\r\n" {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "chunk without CRLF",
                    ));
                }
                self.buf.drain(..total);
                Ok(Parsed::Piece(data))
            }
        }
    }

    fn next_piece(&mut self, deadline: Instant) -> Option<(Instant, Vec<u8>)> {
        if self.ended {
            return None;
        }
        loop {
            match self.parse() {
                Ok(Parsed::Piece(d)) => return Some((self.last_read_at, d)),
                Ok(Parsed::End) => {
                    self.ended = true;
                    self.complete = true;
                    return None;
                }
                Err(_) => {
                    self.ended = true;
                    return None;
                }
                Ok(Parsed::NeedMore) => {}
            }
            match self.read_more(deadline) {
                Ok(true) => {}
                Ok(false) => {
                    // EOF: the body ends here (cleanly only for UntilClose).
                    self.ended = true;
                    self.complete = self.framing == Framing::UntilClose;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return None,
                Err(_) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// The next decoded body piece (one HTTP chunk when chunked) and when it
    /// arrived; `None` on timeout or at the end (see `is_ended`).
    pub fn next_chunk(&mut self, timeout: Duration) -> Option<(Instant, Vec<u8>)> {
        if !self.line_buf.is_empty() {
            return Some((self.line_at, std::mem::take(&mut self.line_buf)));
        }
        self.next_piece(Instant::now() + timeout)
    }

    /// The next `\n`-terminated line of the body (with its `\n`) and when its
    /// last byte arrived; at the end, a final unterminated rest is returned.
    /// `None` on timeout or at the end.
    pub fn next_line(&mut self, timeout: Duration) -> Option<(Instant, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.line_buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.line_buf.drain(..=pos).collect();
                return Some((self.line_at, line));
            }
            match self.next_piece(deadline) {
                Some((at, data)) => {
                    self.line_buf.extend_from_slice(&data);
                    self.line_at = at;
                }
                None if self.ended && !self.line_buf.is_empty() => {
                    return Some((self.line_at, std::mem::take(&mut self.line_buf)));
                }
                None => return None,
            }
        }
    }

    /// The whole body, by `deadline`, at most `limit` bytes: a body cut
    /// short, invalid or larger is an error.
    pub fn read_body(&mut self, deadline: Instant, limit: usize) -> io::Result<Vec<u8>> {
        let mut out = std::mem::take(&mut self.line_buf);
        loop {
            match self.parse()? {
                Parsed::Piece(data) => out.extend_from_slice(&data),
                Parsed::End => break,
                Parsed::NeedMore if self.read_more(deadline)? => {}
                Parsed::NeedMore if self.framing == Framing::UntilClose => break,
                Parsed::NeedMore => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before the end of the body",
                    ));
                }
            }
            if out.len() > limit {
                return Err(io::Error::other("body larger than the limit"));
            }
        }
        self.ended = true;
        self.complete = true;
        Ok(out)
    }

    /// Reads the rest of the body until its end or `timeout`.
    pub fn read_to_end(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = std::mem::take(&mut self.line_buf);
        while let Some((_, d)) = self.next_piece(deadline) {
            out.extend_from_slice(&d);
        }
        out
    }

    /// Closes the connection (both directions) now.
    pub fn close(self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// rustls client config (ring) trusting `ca_file`, optional client cert+key PEM.
pub fn rustls_client_config(
    ca_file: &Path,
    client_pem: Option<&Path>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("read CA file") {
        roots.add(cert.expect("parse CA")).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let config = match client_pem {
        Some(pem) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pem)
                .expect("read client pem")
                .collect::<Result<_, _>>()
                .expect("parse client certs");
            let key = PrivateKeyDer::from_pem_file(pem).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth cert")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}
