//! One client connection: buffered reading of request heads and bodies, and a
//! response writer that streams (each piece of body is flushed as it is written,
//! so a watch event reaches the client at once).
//!
//! Generic over the byte stream so the plain and the TLS listener share it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::head::{BodyFraming, HeadError, RequestHead, parse_head};

/// A client byte stream: plain TCP, or TLS over TCP.
pub trait Stream: Read + Write + Send + 'static {
    /// The TCP socket underneath, for timeouts, peeking and shutdown.
    fn socket(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

/// Per-connection bounds. Every wait on a client has a deadline.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line and all header fields).
    pub max_head_bytes: usize,
    /// Time for a whole request head to arrive once its first byte has.
    pub head_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Longest wait for the next bytes of a request body.
    pub body_read_timeout: Duration,
    /// Longest wait for a client to take response bytes.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            head_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            body_read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Most bytes of an unread request body drained to keep a connection reusable.
const MAX_DRAIN_BYTES: u64 = 256 * 1024;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE_BYTES: usize = 4096;
const READ_CHUNK: usize = 16 * 1024;

pub(crate) enum ReadHeadError {
    /// The head grew past `max_head_bytes`.
    TooLarge,
    Parse(HeadError),
    Io(io::Error),
}

/// A connection with its read buffer.
pub(crate) struct Conn<S> {
    pub(crate) stream: S,
    buf: Vec<u8>,
    pos: usize,
}

impl<S: Stream> Conn<S> {
    pub(crate) fn new(stream: S) -> Self {
        Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more bytes into the buffer; returns how many (0 at end of stream).
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old_len = self.buf.len();
        self.buf.resize(old_len + READ_CHUNK, 0);
        let result = loop {
            match self.stream.read(&mut self.buf[old_len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(old_len + n);
        if self.buf.capacity() > 4 * READ_CHUNK && self.buf.len() < READ_CHUNK {
            self.buf.shrink_to(2 * READ_CHUNK);
        }
        result
    }

    /// Reads the next request head. `Ok(None)`: the client closed (or stayed idle
    /// past the idle timeout) between requests.
    pub(crate) fn read_head(
        &mut self,
        limits: &Limits,
    ) -> Result<Option<RequestHead>, ReadHeadError> {
        let socket = self.stream.socket();
        let _ = socket.set_read_timeout(Some(limits.idle_timeout));
        let mut deadline: Option<Instant> = None;
        let mut scanned = 0;
        loop {
            // Tolerate empty lines before a request line (RFC 9112 section 2.2).
            while self.buffered().starts_with(b"\r\n") {
                self.pos += 2;
            }
            while self.buffered().starts_with(b"\n") {
                self.pos += 1;
            }
            if let Some((head_len, total)) = find_head_end(self.buffered(), scanned) {
                let head = parse_head(&self.buffered()[..head_len]).map_err(ReadHeadError::Parse);
                self.pos += total;
                return head.map(Some);
            }
            scanned = self.buffered().len().saturating_sub(3);
            if self.buffered().len() >= limits.max_head_bytes {
                return Err(ReadHeadError::TooLarge);
            }
            if !self.buffered().is_empty() && deadline.is_none() {
                deadline = Some(Instant::now() + limits.head_timeout);
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ReadHeadError::Io(io::ErrorKind::TimedOut.into()));
                }
                let _ = self.stream.socket().set_read_timeout(Some(left));
            }
            match self.fill() {
                Ok(0) if self.buffered().is_empty() => return Ok(None),
                Ok(0) => return Err(ReadHeadError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) if self.buffered().is_empty() && is_timeout(&e) => return Ok(None),
                Err(e) => return Err(ReadHeadError::Io(e)),
            }
            if deadline.is_none() {
                deadline = Some(Instant::now() + limits.head_timeout);
            }
        }
    }

    /// Reads body bytes: from the buffer first, then straight from the stream.
    fn read_some(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.buf.len() {
            let n = out.len().min(self.buf.len() - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        loop {
            match self.stream.read(out) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Reads one CRLF- (or LF-) terminated line, without the terminator.
    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                let mut line = self.buffered()[..i].to_vec();
                self.pos += i + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buffered().len() > MAX_LINE_BYTES {
                return Err(invalid_data("chunked body line too long"));
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn write_all_flush(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }
}

fn find_head_end(bytes: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            if bytes[i + 1..].starts_with(b"\r\n") {
                return Some((i, i + 3));
            }
            if bytes[i + 1..].starts_with(b"\n") {
                return Some((i, i + 2));
            }
        }
        i += 1;
    }
    None
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn invalid_data(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Where the reading of a request body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Done,
    Length(u64),
    /// Inside a chunk with this many bytes left (0: the next size line is due).
    Chunk(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseState {
    NotStarted,
    Fixed(u64),
    Chunked,
    /// Head written, no body allowed (HEAD, 204, 304).
    NoBody,
    Finished,
    /// A write failed or a fixed-length body came out short: close the connection.
    Broken,
}

/// One request and its response on a connection.
pub struct Exchange<'c, S: Stream> {
    pub head: RequestHead,
    pub remote: SocketAddr,
    conn: &'c mut Conn<S>,
    body: BodyState,
    continue_pending: bool,
    response: ResponseState,
    close_after: bool,
    status: u16,
}

impl<'c, S: Stream> Exchange<'c, S> {
    pub(crate) fn new(
        conn: &'c mut Conn<S>,
        head: RequestHead,
        remote: SocketAddr,
        closing: bool,
    ) -> Self {
        let body = match head.framing {
            BodyFraming::None => BodyState::Done,
            BodyFraming::Length(n) => BodyState::Length(n),
            BodyFraming::Chunked => BodyState::Chunk(0),
        };
        let continue_pending = head.expect_continue && body != BodyState::Done;
        let close_after = closing || !head.keep_alive;
        Exchange {
            head,
            remote,
            conn,
            body,
            continue_pending,
            response: ResponseState::NotStarted,
            close_after,
            status: 0,
        }
    }

    /// Whether the request carries a body.
    pub fn has_body(&self) -> bool {
        self.head.framing != BodyFraming::None
    }

    /// The request body, streamed from the client.
    pub fn body(&mut self) -> BodyReader<'_, 'c, S> {
        BodyReader { exchange: self }
    }

    /// Status code of the response, once started (0 before).
    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn response_started(&self) -> bool {
        self.response != ResponseState::NotStarted
    }

    /// Asks for the connection to be closed after this exchange.
    pub fn close_after(&mut self) {
        self.close_after = true;
    }

    /// Writes the status line and header fields. `length`: the body length if
    /// known (sent as Content-Length), else the body is chunked.
    pub fn start_response(
        &mut self,
        status: u16,
        headers: &[(String, String)],
        length: Option<u64>,
    ) -> io::Result<()> {
        if self.response != ResponseState::NotStarted {
            return Err(io::Error::other("response already started"));
        }
        self.status = status;
        if self.continue_pending {
            // The client waits for 100 Continue that will not come: it may or
            // may not send its body, so the connection cannot be reused.
            self.close_after = true;
        }
        let no_body = self.head.method == "HEAD"
            || status == 204
            || status == 304
            || (100..200).contains(&status);
        let mut out = Vec::with_capacity(256);
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", status, reason_phrase(status));
        for (name, value) in headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        match length {
            Some(n) if status != 204 && !(100..200).contains(&status) => {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
            None if !no_body => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            _ => {}
        }
        if self.close_after {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.response = match (no_body, length) {
            (true, _) => ResponseState::NoBody,
            (false, Some(0)) => ResponseState::Finished,
            (false, Some(n)) => ResponseState::Fixed(n),
            (false, None) => ResponseState::Chunked,
        };
        if self.response == ResponseState::NoBody {
            self.response = ResponseState::Finished;
        }
        self.guard(|conn| conn.write_all_flush(&out))
    }

    /// Writes and flushes one piece of the response body.
    pub fn write_body(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self.response {
            ResponseState::Fixed(left) => {
                let n = (data.len() as u64).min(left);
                self.response = ResponseState::Fixed(left - n);
                if n < data.len() as u64 {
                    self.response = ResponseState::Broken;
                    return Err(io::Error::other(
                        "response body longer than its content-length",
                    ));
                }
                self.guard(|conn| conn.write_all_flush(data))?;
                if left == n {
                    self.response = ResponseState::Finished;
                }
                Ok(())
            }
            ResponseState::Chunked => {
                let mut framed = Vec::with_capacity(data.len() + 16);
                let _ = write!(framed, "{:x}\r\n", data.len());
                framed.extend_from_slice(data);
                framed.extend_from_slice(b"\r\n");
                self.guard(|conn| conn.write_all_flush(&framed))
            }
            ResponseState::Finished if self.head.method == "HEAD" => Ok(()),
            ResponseState::NotStarted => Err(io::Error::other("response not started")),
            _ => Err(io::Error::other("response body already complete")),
        }
    }

    /// Ends the response body.
    pub fn finish(&mut self) -> io::Result<()> {
        match self.response {
            ResponseState::Chunked => {
                self.guard(|conn| conn.write_all_flush(b"0\r\n\r\n"))?;
                self.response = ResponseState::Finished;
                Ok(())
            }
            ResponseState::Fixed(_) => {
                self.response = ResponseState::Broken;
                Err(io::Error::other(
                    "response body shorter than its content-length",
                ))
            }
            ResponseState::Finished => Ok(()),
            ResponseState::NotStarted => Err(io::Error::other("response not started")),
            ResponseState::NoBody | ResponseState::Broken => Ok(()),
        }
    }

    /// Marks the response as cut short: the connection is closed after it, so the
    /// client sees an incomplete body instead of a silently complete one.
    pub fn abort(&mut self) {
        self.response = ResponseState::Broken;
        let _ = self.conn.stream.socket().shutdown(Shutdown::Both);
    }

    /// A whole response with a body already in memory.
    pub fn respond(
        &mut self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> io::Result<()> {
        self.start_response(status, headers, Some(body.len() as u64))?;
        self.write_body(body)?;
        self.finish()
    }

    /// Whether the client has closed its side (or sent bytes we are not reading
    /// yet, which only a pipelining client does). Never blocks.
    pub fn client_gone(&self) -> bool {
        let socket = self.conn.stream.socket();
        if socket.set_nonblocking(true).is_err() {
            return true;
        }
        let mut probe = [0u8; 1];
        let gone = match socket.peek(&mut probe) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => true,
        };
        let _ = socket.set_nonblocking(false);
        gone
    }

    fn guard(&mut self, write: impl FnOnce(&mut Conn<S>) -> io::Result<()>) -> io::Result<()> {
        let result = write(self.conn);
        if result.is_err() {
            self.response = ResponseState::Broken;
        }
        result
    }

    fn read_body(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.body == BodyState::Done {
            return Ok(0);
        }
        if self.continue_pending {
            self.continue_pending = false;
            self.conn
                .write_all_flush(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        match self.body {
            BodyState::Done => Ok(0),
            BodyState::Length(left) => {
                let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.conn.read_some(&mut out[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let left = left - n as u64;
                self.body = if left == 0 {
                    BodyState::Done
                } else {
                    BodyState::Length(left)
                };
                Ok(n)
            }
            BodyState::Chunk(0) => {
                let line = self.conn.read_line()?;
                let size = parse_chunk_size(&line)?;
                if size == 0 {
                    // Trailer fields, if any, up to the empty line.
                    while !self.conn.read_line()?.is_empty() {}
                    self.body = BodyState::Done;
                    return Ok(0);
                }
                self.body = BodyState::Chunk(size);
                self.read_body(out)
            }
            BodyState::Chunk(left) => {
                let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.conn.read_some(&mut out[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let left = left - n as u64;
                if left == 0 && !self.conn.read_line()?.is_empty() {
                    return Err(invalid_data("chunk not followed by CRLF"));
                }
                self.body = BodyState::Chunk(left);
                Ok(n)
            }
        }
    }

    /// Brings the exchange to an end; returns whether the connection can carry
    /// another request.
    pub(crate) fn complete(mut self, error_body: &dyn Fn(u16, &str) -> Vec<u8>) -> bool {
        if self.response == ResponseState::NotStarted {
            log::error!(
                "handler returned without a response for {} {}",
                self.head.method,
                self.head.path
            );
            self.close_after = true;
            let body = error_body(500, "the hub produced no response");
            let _ = self.respond(500, &json_content_type(), &body);
        }
        if self.response != ResponseState::Finished && self.finish().is_err() {
            return false;
        }
        if self.response != ResponseState::Finished || self.close_after {
            return false;
        }
        if self.body != BodyState::Done {
            if self.continue_pending {
                return false;
            }
            let mut sink = [0u8; 8192];
            let mut drained = 0u64;
            while self.body != BodyState::Done {
                match self.read_body(&mut sink) {
                    Ok(n) => drained += n as u64,
                    Err(_) => return false,
                }
                if drained > MAX_DRAIN_BYTES {
                    return false;
                }
            }
        }
        true
    }
}

pub(crate) fn json_content_type() -> Vec<(String, String)> {
    vec![("Content-Type".to_string(), "application/json".to_string())]
}

fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = std::str::from_utf8(digits)
        .map_err(|_| invalid_data("chunk size"))?
        .trim();
    if digits.is_empty() || digits.len() > 15 {
        return Err(invalid_data("chunk size"));
    }
    u64::from_str_radix(digits, 16).map_err(|_| invalid_data("chunk size"))
}

/// The request body as a reader; ends at the end of the body, not of the stream.
pub struct BodyReader<'e, 'c, S: Stream> {
    exchange: &'e mut Exchange<'c, S>,
}

impl<S: Stream> Read for BodyReader<'_, '_, S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.exchange.read_body(out)
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
