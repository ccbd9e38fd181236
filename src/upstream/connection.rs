//! One connection to an apiserver: plain or TLS over a `Socket` (which keeps
//! the exchange's deadlines under rustls, where a per-read timeout cannot
//! see a trickled record), with a read buffer and a write buffer kept for
//! the connection's life, so an exchange on a reused connection allocates
//! nothing of its own. Writes a request, reads a response head, reads a
//! body as it arrives.
//!
//! Generic over the byte stream so unit tests run on bytes in memory.

use std::io::{self, Read, Write};
use std::time::Instant;

use rustls::{ClientConnection, StreamOwned};

use super::response::{Decoder, Head, MAX_HEAD_BYTES, parse_head};
use crate::http::{Socket, Stream};

/// The read buffer of a connection (it grows for a larger response head,
/// and shrinks back when the connection is pooled).
const READ_BUFFER: usize = 16 * 1024;
/// Request bytes gathered before a write: a small request goes out in one
/// write (one TLS record, one segment).
const WRITE_PIECE: usize = 16 * 1024;

/// The byte stream to an apiserver.
pub(super) enum Transport {
    Plain(Socket),
    Tls(Box<StreamOwned<ClientConnection, Socket>>),
}

impl Transport {
    /// Whether nothing is left of what the apiserver sent (no TLS record
    /// unread, no close_notify): one condition to pool the connection.
    pub(super) fn is_clean(&mut self) -> bool {
        match self {
            Transport::Plain(_) => true,
            Transport::Tls(tls) => tls.conn.process_new_packets().is_ok_and(|state| {
                state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed()
            }),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.read(out),
            Transport::Tls(tls) => tls.read(out),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(socket) => socket.write(bytes),
            Transport::Tls(tls) => tls.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(socket) => socket.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

impl Stream for Transport {
    fn socket(&self) -> &Socket {
        match self {
            Transport::Plain(socket) => socket,
            Transport::Tls(tls) => &tls.sock,
        }
    }
}

/// How an exchange failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The connection ended before any byte of an answer arrived (closed,
    /// reset, a write refused): on a reused connection, most likely the
    /// apiserver closed it while it was idle.
    Ended(io::Error),
    /// The exchange's deadline passed.
    TimedOut,
    /// Anything else: an invalid answer, a request that cannot be sent.
    Broken(String),
}

impl Failure {
    fn from_io(error: io::Error, nothing_received: bool) -> Failure {
        use io::ErrorKind::*;
        match error.kind() {
            WouldBlock | TimedOut => Failure::TimedOut,
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected
                if nothing_received =>
            {
                Failure::Ended(error)
            }
            _ => Failure::Broken(error.to_string()),
        }
    }
}

/// A request head as it is sent.
pub(super) struct RequestHead<'a> {
    pub method: &'a str,
    /// The server's path prefix (empty for most) and the request's own target.
    pub prefix: &'a str,
    pub target: &'a str,
    /// The `Host` field's value.
    pub host: &'a str,
    pub headers: &'a [(String, String)],
}

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    Length(u64),
    Chunked,
}

pub(super) struct Connection<S> {
    pub(super) stream: S,
    /// `buf[pos..end]` is read and not yet used.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    out: Vec<u8>,
    /// When it was last put back in the pool.
    pub(super) idle_since: Instant,
    /// Whether it has carried a request before this one.
    pub(super) reused: bool,
}

impl<S: Read + Write> Connection<S> {
    pub(super) fn new(stream: S) -> Connection<S> {
        Connection {
            stream,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            out: Vec::new(),
            idle_since: Instant::now(),
            reused: false,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Whether bytes arrived that no response has used (never the case
    /// between well-formed exchanges).
    pub(super) fn has_leftover(&self) -> bool {
        self.pos < self.end
    }

    /// Ready to wait in the pool: a buffer grown by a large head is given back.
    pub(super) fn park(&mut self) {
        if self.buf.len() > READ_BUFFER {
            self.buf = Vec::new();
        }
        self.out.truncate(0);
        if self.out.capacity() > 2 * WRITE_PIECE {
            self.out = Vec::new();
        }
        self.idle_since = Instant::now();
        self.reused = true;
    }

    /// Reads more into the buffer; returns how many bytes (0 at the end).
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            } else {
                let grown = self.buf.len().saturating_mul(2).max(READ_BUFFER);
                self.buf.resize(grown, 0);
            }
        }
        let n = read_retrying(&mut self.stream, &mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Writes the request: its head, then its body (streamed from `body`:
    /// with the `Content-Length` among the headers, else chunked).
    pub(super) fn write_request(
        &mut self,
        head: &RequestHead<'_>,
        body: Option<&mut dyn Read>,
    ) -> Result<(), Failure> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let result = write_head(&mut out, head, body.is_some())
            .and_then(|framing| self.write_body(&mut out, framing.zip(body)));
        self.out = out;
        result
    }

    fn write_body(
        &mut self,
        out: &mut Vec<u8>,
        body: Option<(BodyFraming, &mut dyn Read)>,
    ) -> Result<(), Failure> {
        let Some((framing, body)) = body else {
            return self.send(out);
        };
        let mut piece = [0u8; 8 * 1024];
        let mut sent: u64 = 0;
        loop {
            let n = read_retrying(body, &mut piece)
                .map_err(|e| Failure::Broken(format!("reading the request body: {e}")))?;
            sent = sent.saturating_add(n as u64);
            match framing {
                BodyFraming::Length(length) if sent > length => {
                    return Err(Failure::Broken(
                        "request body longer than its Content-Length".into(),
                    ));
                }
                BodyFraming::Length(length) if n == 0 && sent < length => {
                    return Err(Failure::Broken(
                        "request body shorter than its Content-Length".into(),
                    ));
                }
                BodyFraming::Length(_) => out.extend_from_slice(&piece[..n]),
                BodyFraming::Chunked => {
                    // Writing to a Vec cannot fail.
                    let _ = write!(out, "{n:x}\r\n");
                    out.extend_from_slice(&piece[..n]);
                    // (The last chunk, of size 0, has no trailer fields.)
                    out.extend_from_slice(b"\r\n");
                }
            }
            if n == 0 {
                return self.send(out);
            }
            if out.len() >= WRITE_PIECE {
                self.send(out)?;
                out.clear();
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| Failure::from_io(e, true))
    }

    /// Reads the response head, past any interim (1xx) ones.
    pub(super) fn read_head(&mut self, method_is_head: bool) -> Result<Head, Failure> {
        let mut received = false;
        loop {
            if self.pos < self.end {
                received = true;
                if let Some((head, length)) =
                    parse_head(self.buffered(), method_is_head).map_err(Failure::Broken)?
                {
                    self.pos += length;
                    match head.status {
                        101 => {
                            return Err(Failure::Broken(
                                "unexpected 101 Switching Protocols".into(),
                            ));
                        }
                        100..=199 => continue,
                        _ => return Ok(head),
                    }
                }
                if self.end - self.pos >= MAX_HEAD_BYTES {
                    return Err(Failure::Broken(format!(
                        "response head larger than {} KiB",
                        MAX_HEAD_BYTES / 1024
                    )));
                }
            }
            match self.fill() {
                Ok(0) if !received => {
                    return Err(Failure::Ended(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(0) => {
                    return Err(Failure::Broken(
                        "connection closed inside a response head".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(Failure::from_io(e, !received)),
            }
        }
    }

    /// Reads body bytes as they arrive (never waiting to fill `out`); 0 at
    /// the end of the body. A failed read (a timeout) can be tried again.
    pub(super) fn read_body(&mut self, decoder: &mut Decoder, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if decoder.is_done() || out.is_empty() {
                return Ok(0);
            }
            if let Some(left) = decoder.data_left() {
                let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = if self.pos < self.end {
                    let n = want.min(self.end - self.pos);
                    out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                    self.pos += n;
                    n
                } else {
                    match read_retrying(&mut self.stream, &mut out[..want]) {
                        // A body read until close may end without close_notify.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                        other => other?,
                    }
                };
                if n == 0 {
                    decoder.end_of_stream().map_err(invalid_data)?;
                    return Ok(0);
                }
                decoder.took(n);
                return Ok(n);
            }
            let used = decoder.parse(self.buffered()).map_err(invalid_data)?;
            if used > 0 {
                self.pos += used;
            } else if self.fill()? == 0 {
                decoder.end_of_stream().map_err(invalid_data)?;
            }
        }
    }
}

/// Writes the request line and header fields into `out`; returns how the
/// body will be framed when there is one.
fn write_head(
    out: &mut Vec<u8>,
    head: &RequestHead<'_>,
    has_body: bool,
) -> Result<Option<BodyFraming>, Failure> {
    let target_ok = |t: &str| t.bytes().all(|b| b > b' ' && b != 0x7f);
    if !target_ok(head.prefix) || !target_ok(head.target) || !head.target.starts_with('/') {
        return Err(Failure::Broken(format!(
            "request target {:?} cannot be sent",
            head.target
        )));
    }
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.prefix.as_bytes());
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(head.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut length = None;
    for (name, value) in head.headers {
        if !is_field(name, value) {
            return Err(Failure::Broken(format!(
                "header field {name:?} cannot be sent"
            )));
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<u64>().map_err(|_| {
                Failure::Broken(format!("invalid Content-Length {value:?} in the request"))
            })?);
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = match length {
        _ if !has_body => None,
        Some(length) => Some(BodyFraming::Length(length)),
        None => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            Some(BodyFraming::Chunked)
        }
    };
    out.extend_from_slice(b"\r\n");
    Ok(framing)
}

/// A header field that can go on the wire as it is: a token for a name, no
/// line break or NUL in the value.
fn is_field(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b > b' ' && b < 0x7f && b != b':')
        && !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

fn read_retrying(stream: &mut (impl Read + ?Sized), out: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(out) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::memory::Memory;
    use crate::upstream::response::Framing;

    /// Reads a whole response from `wire` handed out `piece` bytes per read
    /// into reads of `out` bytes: the body, or the error that ended it, and
    /// whether the connection ended clean (nothing left over).
    fn exchange(wire: &[u8], piece: usize, out: usize) -> Result<(Vec<u8>, bool), String> {
        let mut conn = Connection::new(Memory::in_pieces(wire, piece));
        let head = match conn.read_head(false) {
            Ok(head) => head,
            Err(e) => return Err(format!("{e:?}")),
        };
        let mut decoder = Decoder::new(head.framing);
        let mut body = Vec::new();
        let mut buffer = vec![0u8; out];
        loop {
            match conn.read_body(&mut decoder, &mut buffer) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&buffer[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok((body, !conn.has_leftover()))
    }

    /// Every split of the wire into reads, every size of the reader's buffer.
    fn check(wire: &[u8], expected: Result<&[u8], &str>) {
        for piece in 1..=wire.len().min(40) {
            for out in [1, 2, 3, 7, 4096] {
                let got = exchange(wire, piece, out);
                let context = format!(
                    "{:?} piece {piece} out {out}",
                    String::from_utf8_lossy(wire)
                );
                match expected {
                    Ok(body) => {
                        let (got, clean) = got.unwrap_or_else(|e| panic!("{context}: {e}"));
                        assert_eq!(got, body, "{context}");
                        assert!(clean, "{context}: bytes left over");
                    }
                    Err(error) => {
                        let got = got.expect_err(&context);
                        assert!(got.contains(error), "{context}: {got}");
                    }
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_are_decoded_whatever_the_split_points() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let cases: &[(&str, Result<&[u8], &str>)] = &[
            (
                "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
                Ok(b"hello, world"),
            ),
            (
                "A;ext=\"x;y\"\r\n0123456789\r\n000\r\nX-Trailer: 1\r\n\r\n",
                Ok(b"0123456789"),
            ),
            ("5\nhello\n0\n\n", Ok(b"hello")),
            ("0\r\n\r\n", Ok(b"")),
            ("5\r\nhelloX\r\n0\r\n\r\n", Err("not followed by CRLF")),
            ("zz\r\nhello\r\n", Err("invalid chunk size")),
            ("\r\nhello\r\n", Err("invalid chunk size")),
            ("ffffffffffffffffff\r\nx\r\n", Err("invalid chunk size")),
            ("5\r\nhel", Err("before the end of the body")),
            ("5\r\nhello\r\n", Err("before the end of the body")),
        ];
        for (body, expected) in cases {
            check(format!("{head}{body}").as_bytes(), *expected);
        }
        let long_line = format!("{head}1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(5000));
        check(long_line.as_bytes(), Err("line too long"));
    }

    #[test]
    fn bodies_of_known_length_and_until_close() {
        let cases: &[(&str, Result<&[u8], &str>)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                Ok(b"hello"),
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Ok(b"")),
            ("HTTP/1.1 204 No Content\r\n\r\n", Ok(b"")),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello",
                Err("before the end"),
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
                Ok(b"until the end"),
            ),
            // Interim answers are skipped.
            (
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                Ok(b"ok"),
            ),
            ("HTTP/1.1 101 Switching Protocols\r\n\r\n", Err("101")),
        ];
        for (wire, expected) in cases {
            check(wire.as_bytes(), *expected);
        }
    }

    #[test]
    fn bytes_after_the_body_keep_the_connection_from_the_pool() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
        assert_eq!(exchange(wire, 64, 4096).unwrap(), (b"ok".to_vec(), false));
    }

    #[test]
    fn how_a_head_fails_decides_whether_it_may_be_sent_again() {
        let failure = |wire: &[u8]| {
            Connection::new(Memory::new(wire))
                .read_head(false)
                .unwrap_err()
        };
        assert!(matches!(failure(b""), Failure::Ended(_)), "nothing arrived");
        assert!(matches!(
            failure(b"HTTP/1.1 200 OK\r\n"),
            Failure::Broken(_)
        ));
        assert!(matches!(
            failure(b"HTTP/1.1 100 Continue\r\n\r\n"),
            Failure::Broken(_)
        ));
        assert!(matches!(failure(b"garbage\r\n\r\n"), Failure::Broken(_)));
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "v".repeat(MAX_HEAD_BYTES));
        match failure(huge.as_bytes()) {
            Failure::Broken(why) => assert!(why.contains("larger than"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    fn written(
        method: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<String, Failure> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let mut conn = Connection::new(Memory::new(b""));
        let head = RequestHead {
            method,
            prefix: "/prefix",
            target: "/api/v1/pods?limit=1",
            host: "10.0.0.1:6443",
            headers: &headers,
        };
        let mut body = body;
        conn.write_request(&head, body.as_mut().map(|b| b as &mut dyn Read))?;
        Ok(String::from_utf8_lossy(&conn.stream.output).into_owned())
    }

    #[test]
    fn requests_are_written_as_given_with_their_body_framed() {
        assert_eq!(
            written("GET", &[("Accept", "application/json")], None).unwrap(),
            "GET /prefix/api/v1/pods?limit=1 HTTP/1.1\r\nHost: 10.0.0.1:6443\r\n\
             Accept: application/json\r\n\r\n"
        );
        assert_eq!(
            written("POST", &[("Content-Length", "5")], Some(b"hello")).unwrap(),
            "POST /prefix/api/v1/pods?limit=1 HTTP/1.1\r\nHost: 10.0.0.1:6443\r\n\
             Content-Length: 5\r\n\r\nhello"
        );
        assert_eq!(
            written("PATCH", &[], Some(b"hello")).unwrap(),
            "PATCH /prefix/api/v1/pods?limit=1 HTTP/1.1\r\nHost: 10.0.0.1:6443\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let large = vec![b'x'; 40_000];
        let wire = written("PUT", &[("Content-Length", "40000")], Some(&large)).unwrap();
        assert!(wire.ends_with(&"x".repeat(40_000)));
    }

    #[test]
    fn requests_that_cannot_be_sent_as_given_are_refused() {
        let refused = |headers: &[(&str, &str)], body: Option<&[u8]>| {
            matches!(written("POST", headers, body), Err(Failure::Broken(_)))
        };
        assert!(refused(&[("X-Injected", "a\r\nHost: evil")], None));
        assert!(refused(&[("Bad Name", "x")], None));
        assert!(refused(&[("", "x")], None));
        assert!(refused(&[("Content-Length", "5")], Some(b"hi")), "short");
        assert!(refused(&[("Content-Length", "1")], Some(b"hi")), "long");
        assert!(refused(&[("Content-Length", "x")], Some(b"hi")));
    }

    #[test]
    fn a_response_without_a_body_leaves_the_decoder_done() {
        assert!(Decoder::new(Framing::None).is_done());
        assert!(Decoder::new(Framing::Length(0)).is_done());
        assert!(!Decoder::new(Framing::Chunked).is_done());
    }
}
