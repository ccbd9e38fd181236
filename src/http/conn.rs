//! One client connection: buffered reading of request heads, and the
//! `Exchange` of one request and its response. The response streams (each
//! piece of body is flushed as it is written, so a watch event reaches the
//! client at once). Request bodies are decoded in `body.rs`, response heads
//! written by `response_head.rs`.
//!
//! Generic over the byte stream so the plain and the TLS listener share it,
//! and unit tests can use bytes in memory.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::body::BodyDecoder;
use super::head::{BodyFraming, HeadError, RequestHead, parse_head};
use super::response_head::{ResponseBody, ResponseHead, json_content_type};
use super::socket::Socket;

/// A client byte stream: plain TCP, or TLS over TCP.
pub trait Stream: Read + Write + Send + 'static {
    /// The socket underneath, for timeouts, deadlines, peeking and shutdown.
    fn socket(&self) -> &Socket;
}

impl Stream for Socket {
    fn socket(&self) -> &Socket {
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
    /// Time for a TLS handshake, from the connection's accept.
    pub handshake_timeout: Duration,
    /// Time for a whole request body, unless the request asks for longer
    /// (its `timeout`), from the end of its head.
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Longest wait for a client to take response bytes.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            head_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            write_timeout: Duration::from_secs(60),
        }
    }
}

const READ_CHUNK: usize = 16 * 1024;
/// Slices given to one vectored write: a response's pieces (a list's
/// objects and the framing between them) go out in writes of at most this
/// many, each flushed (so at most this many slices live on the stack).
const SLICES_PER_WRITE: usize = 64;

pub(crate) enum ReadHeadError {
    /// The head grew past `max_head_bytes`.
    TooLarge,
    Parse(HeadError),
    Io(io::Error),
}

/// A connection with its read buffer. The buffer is zeroed once when it
/// grows, never per read: a client sending one byte per packet costs one
/// read, not a 16 KiB clear.
pub(crate) struct Conn<S> {
    pub(crate) stream: S,
    /// `buf[pos..end]` is read and not yet consumed; `buf[end..]` is room.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl<S: Read + Write> Conn<S> {
    pub(crate) fn new(stream: S) -> Self {
        Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
            end: 0,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Reads more bytes into the buffer; returns how many (0 at end of stream).
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() > 4 * READ_CHUNK && self.end < READ_CHUNK {
            // A large head came and went: give the memory back.
            self.buf.truncate(2 * READ_CHUNK);
            self.buf.shrink_to_fit();
        }
        if self.buf.len() - self.end < READ_CHUNK / 4 {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        let result = loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.end += *result.as_ref().unwrap_or(&0);
        result
    }

    /// Reads body bytes: from the buffer first, then straight from the stream.
    pub(crate) fn read_some(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.end {
            let n = out.len().min(self.end - self.pos);
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

    /// Reads one CRLF- (or LF-) terminated line, without the terminator; a
    /// line longer than `max` bytes (a CR before the LF included) is an error.
    pub(crate) fn read_line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                if i > max {
                    return Err(line_too_long());
                }
                let mut line = self.buffered()[..i].to_vec();
                self.pos += i + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buffered().len() > max {
                return Err(line_too_long());
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    pub(crate) fn write_all_flush(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes `prefix`, every piece and `suffix`, in order, with as few
    /// (vectored) writes as the stream takes, then flushes.
    pub(crate) fn write_all_flush_framed(
        &mut self,
        prefix: &[u8],
        pieces: &[&[u8]],
        suffix: &[u8],
    ) -> io::Result<()> {
        debug_assert!(pieces.len() <= SLICES_PER_WRITE - 2);
        let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
        let all = std::iter::once(prefix)
            .chain(pieces.iter().copied())
            .chain(std::iter::once(suffix));
        let mut count = 0;
        for (slot, slice) in slices.iter_mut().zip(all) {
            *slot = IoSlice::new(slice);
            count += 1;
        }
        let mut left = &mut slices[..count];
        IoSlice::advance_slices(&mut left, 0);
        while !left.is_empty() {
            match self.stream.write_vectored(left) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut left, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.stream.flush()
    }
}

impl<S: Stream> Conn<S> {
    /// Reads the next request head. `Ok(None)`: the client closed (or stayed idle
    /// past the idle timeout) between requests.
    pub(crate) fn read_head(
        &mut self,
        limits: &Limits,
    ) -> Result<Option<RequestHead>, ReadHeadError> {
        // Idle until a first byte; from then on the whole head has a deadline
        // (kept by the socket, under TLS too).
        let socket = self.stream.socket();
        let _ = socket.set_read_timeout(Some(limits.idle_timeout));
        if self.buffered().is_empty() {
            socket.set_deadline_from_first_byte(limits.head_timeout);
        } else {
            socket.set_deadline(Some(Instant::now() + limits.head_timeout));
        }
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
                self.stream.socket().set_deadline(None);
                return head.map(Some);
            }
            scanned = self.buffered().len().saturating_sub(3);
            if self.buffered().len() >= limits.max_head_bytes {
                return Err(ReadHeadError::TooLarge);
            }
            match self.fill() {
                Ok(0) if self.buffered().is_empty() => return Ok(None),
                Ok(0) => return Err(ReadHeadError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) if self.buffered().is_empty() && is_timeout(&e) => return Ok(None),
                Err(e) => return Err(ReadHeadError::Io(e)),
            }
        }
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

fn line_too_long() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "chunked body line too long")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseState {
    NotStarted,
    Fixed(u64),
    Chunked,
    /// Head and whole body written (or no body allowed: HEAD, 1xx, 204, 304).
    Finished,
    /// A write failed or a fixed-length body came out short: close the connection.
    Broken,
}

/// One request and its response on a connection.
pub struct Exchange<'c, S> {
    pub head: RequestHead,
    conn: &'c mut Conn<S>,
    body: BodyDecoder,
    response: ResponseState,
    close_after: bool,
    status: u16,
    /// The head of a response of known length, sent with its first piece
    /// of body: one write and one segment for a small answer, not two.
    pending_head: Vec<u8>,
}

impl<'c, S: Read + Write> Exchange<'c, S> {
    pub(crate) fn new(conn: &'c mut Conn<S>, head: RequestHead, closing: bool) -> Self {
        let body = BodyDecoder::new(head.framing, head.expect_continue);
        let close_after = closing || !head.keep_alive;
        Exchange {
            head,
            conn,
            body,
            response: ResponseState::NotStarted,
            close_after,
            status: 0,
            pending_head: Vec::new(),
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
        if self.body.response_started() {
            // The request body is out of step with the client (never asked
            // for with 100 Continue, or failed): the next request cannot be
            // found on this connection.
            self.close_after = true;
        }
        let head = ResponseHead {
            status,
            headers,
            length,
            head_request: self.head.method == "HEAD",
            close: self.close_after,
        };
        self.response = match head.body() {
            ResponseBody::None => ResponseState::Finished,
            ResponseBody::Length(n) => ResponseState::Fixed(n),
            ResponseBody::Chunked => ResponseState::Chunked,
        };
        if matches!(self.response, ResponseState::Fixed(n) if n > 0) {
            // Its body follows at once (a stream's head, of unknown length,
            // goes out alone so the client sees it before the first event).
            self.pending_head = head.to_bytes();
            return Ok(());
        }
        self.guard(|conn| conn.write_all_flush(&head.to_bytes()))
    }

    /// Writes and flushes one piece of the response body.
    pub fn write_body(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_body_pieces([data])
    }

    /// Writes and flushes pieces of the response body as they are, with
    /// vectored writes (the head still waiting goes out with the first
    /// ones; under chunked framing each write is one chunk): no piece is
    /// copied to be joined with another.
    pub fn write_body_pieces<'p>(
        &mut self,
        pieces: impl IntoIterator<Item = &'p [u8]>,
    ) -> io::Result<()> {
        let mut pieces = pieces.into_iter().filter(|p| !p.is_empty()).peekable();
        while pieces.peek().is_some() {
            // Two places kept for the framing around the pieces.
            let mut group = [&[][..]; SLICES_PER_WRITE - 2];
            let mut count = 0;
            for piece in pieces.by_ref().take(group.len()) {
                group[count] = piece;
                count += 1;
            }
            self.write_group(&group[..count])?;
        }
        Ok(())
    }

    /// Writes one group of pieces, with the head still waiting or the
    /// chunk's framing around them.
    fn write_group(&mut self, pieces: &[&[u8]]) -> io::Result<()> {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        match self.response {
            ResponseState::Fixed(left) => {
                if len as u64 > left {
                    self.response = ResponseState::Broken;
                    return Err(io::Error::other(
                        "response body longer than its content-length",
                    ));
                }
                let head = std::mem::take(&mut self.pending_head);
                self.guard(|conn| conn.write_all_flush_framed(&head, pieces, b""))?;
                self.response = match left - len as u64 {
                    0 => ResponseState::Finished,
                    left => ResponseState::Fixed(left),
                };
                Ok(())
            }
            ResponseState::Chunked => {
                let mut size = [0u8; 20];
                let mut cursor = io::Cursor::new(&mut size[..]);
                let _ = write!(cursor, "{len:x}\r\n");
                let size_len = cursor.position() as usize;
                self.guard(|conn| conn.write_all_flush_framed(&size[..size_len], pieces, b"\r\n"))
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
            ResponseState::Broken => Ok(()),
        }
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

    fn guard(&mut self, write: impl FnOnce(&mut Conn<S>) -> io::Result<()>) -> io::Result<()> {
        let result = write(self.conn);
        if result.is_err() {
            self.response = ResponseState::Broken;
        }
        result
    }

    fn read_body(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.body.read(self.conn, out)
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
        // An unread body is drained (bounded) so the next request is found;
        // a body that failed, or was never asked for, ends the connection.
        self.body.drain(self.conn)
    }
}

impl<S: Stream> Exchange<'_, S> {
    /// Marks the response as cut short: the connection is closed after it, so the
    /// client sees an incomplete body instead of a silently complete one.
    pub fn abort(&mut self) {
        self.response = ResponseState::Broken;
        let _ = self.conn.stream.socket().shutdown(Shutdown::Both);
    }

    /// Gives the rest of the request body until `deadline` to arrive
    /// (a request that asks for a longer `timeout` than the default).
    pub fn set_body_deadline(&mut self, deadline: Instant) {
        self.conn.stream.socket().set_deadline(Some(deadline));
    }

    /// The response must be taken by the client by `deadline` (until the
    /// next request on the connection).
    pub fn set_response_deadline(&mut self, deadline: Instant) {
        self.conn.stream.socket().set_write_deadline(Some(deadline));
    }

    /// Whether the client has closed its side (or sent bytes we are not reading
    /// yet, which only a pipelining client does). Never blocks.
    pub fn client_gone(&self) -> bool {
        match self.conn.stream.socket().peek_now() {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }
}

/// The request body as a reader; ends at the end of the body, not of the stream.
pub struct BodyReader<'e, 'c, S> {
    exchange: &'e mut Exchange<'c, S>,
}

impl<S: Read + Write> Read for BodyReader<'_, '_, S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.exchange.read_body(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::MAX_DRAIN_BYTES;
    use crate::http::memory::{Memory, unread};

    /// What one exchange left behind: whether the connection may carry another
    /// request, what the hub wrote, and what it left unread.
    struct Outcome {
        reusable: bool,
        written: String,
        writes: usize,
        unread: Vec<u8>,
    }

    /// Runs `handler` on one request (`head` without its empty line, then
    /// `rest` on the wire) and completes the exchange as the server does.
    fn exchange(
        head: &str,
        rest: &[u8],
        handler: impl FnOnce(&mut Exchange<'_, Memory>),
    ) -> Outcome {
        let head = parse_head(head.as_bytes()).unwrap_or_else(|e| panic!("{head:?}: {e}"));
        let mut conn = Conn::new(Memory::new(rest));
        let mut exchange = Exchange::new(&mut conn, head, false);
        handler(&mut exchange);
        let reusable =
            exchange.complete(&|status, message| format!("{status} {message}").into_bytes());
        let unread = unread(&mut conn);
        Outcome {
            reusable,
            written: String::from_utf8_lossy(&conn.stream.output).into_owned(),
            writes: conn.stream.writes,
            unread,
        }
    }

    fn read_all(exchange: &mut Exchange<'_, Memory>) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        exchange.body().read_to_end(&mut body).map(|_| body)
    }

    fn ok(exchange: &mut Exchange<'_, Memory>) {
        exchange.respond(200, &[], b"ok").unwrap();
    }

    const NEXT: &[u8] = b"GET /next HTTP/1.1\r\n\r\n";

    fn with_next(body: &[u8]) -> Vec<u8> {
        [body, NEXT].concat()
    }

    #[test]
    fn read_body_leaves_the_connection_at_the_next_request() {
        let outcome = exchange(
            "POST / HTTP/1.1\r\nContent-Length: 5\r\n",
            &with_next(b"hello"),
            |exchange| {
                assert_eq!(read_all(exchange).unwrap(), b"hello");
                ok(exchange);
            },
        );
        assert!(outcome.reusable);
        assert_eq!(
            outcome.written,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        );
        assert_eq!(outcome.unread, NEXT);
    }

    #[test]
    fn unread_body_within_the_drain_limit_is_drained() {
        let body = vec![b'x'; MAX_DRAIN_BYTES as usize];
        let outcome = exchange(
            &format!("PUT / HTTP/1.1\r\nContent-Length: {}\r\n", body.len()),
            &with_next(&body),
            ok,
        );
        assert!(outcome.reusable);
        assert_eq!(outcome.unread, NEXT);
    }

    #[test]
    fn unread_body_past_the_drain_limit_closes_the_connection() {
        let body = vec![b'x'; MAX_DRAIN_BYTES as usize + 1];
        let outcome = exchange(
            &format!("PUT / HTTP/1.1\r\nContent-Length: {}\r\n", body.len()),
            &with_next(&body),
            ok,
        );
        assert!(!outcome.reusable);
    }

    #[test]
    fn bad_chunk_size_closes_the_connection_instead_of_reading_on() {
        // After the bad size line, the bytes would parse as the end of the
        // body and a second request: neither may be read.
        let outcome = exchange(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n",
            b"zz\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            |exchange| {
                assert!(read_all(exchange).is_err());
                exchange.respond(400, &[], b"bad").unwrap();
            },
        );
        assert!(!outcome.reusable);
        assert_eq!(
            outcome.written,
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad"
        );
        assert_eq!(outcome.unread, b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn bad_crlf_after_a_chunk_closes_the_connection() {
        let outcome = exchange(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n",
            &with_next(b"5\r\nhelloXX\r\n0\r\n\r\n"),
            |exchange| {
                assert!(read_all(exchange).is_err());
                ok(exchange);
            },
        );
        assert!(!outcome.reusable);
    }

    #[test]
    fn short_body_is_an_error_and_closes_the_connection() {
        let outcome = exchange(
            "POST / HTTP/1.1\r\nContent-Length: 10\r\n",
            b"hello",
            |exchange| {
                let err = read_all(exchange).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
                ok(exchange);
            },
        );
        assert!(!outcome.reusable);
    }

    #[test]
    fn continue_comes_before_the_body_is_read_and_before_the_response() {
        let outcome = exchange(
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n",
            &with_next(b"hello"),
            |exchange| {
                assert!(exchange.conn.stream.output.is_empty(), "sent before a read");
                assert_eq!(read_all(exchange).unwrap(), b"hello");
                ok(exchange);
            },
        );
        assert!(outcome.reusable);
        assert_eq!(
            outcome.written,
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        );
        assert_eq!(outcome.unread, NEXT);
    }

    #[test]
    fn continue_is_never_sent_after_the_response_started() {
        let outcome = exchange(
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n",
            &with_next(b"hello"),
            |exchange| {
                exchange.start_response(200, &[], None).unwrap();
                assert!(read_all(exchange).is_err());
                exchange.finish().unwrap();
            },
        );
        assert!(!outcome.reusable);
        assert_eq!(
            outcome.written,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
        );
    }

    #[test]
    fn body_never_asked_for_is_not_drained() {
        let outcome = exchange(
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n",
            &with_next(b"hello"),
            ok,
        );
        assert!(!outcome.reusable);
        assert!(!outcome.written.contains("100 Continue"));
        assert!(outcome.written.contains("Connection: close\r\n"));
        assert_eq!(outcome.unread, with_next(b"hello"));
    }

    #[test]
    fn chunked_response_is_framed_and_ended() {
        let outcome = exchange("GET /watch HTTP/1.1\r\n", NEXT, |exchange| {
            exchange.start_response(200, &[], None).unwrap();
            exchange.write_body(b"event one").unwrap();
            exchange.write_body(b"").unwrap();
            exchange.write_body(b"event two!").unwrap();
            exchange.finish().unwrap();
        });
        assert!(outcome.reusable);
        assert_eq!(
            outcome.written,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             9\r\nevent one\r\na\r\nevent two!\r\n0\r\n\r\n"
        );
        assert_eq!(outcome.unread, NEXT);
    }

    #[test]
    fn answer_to_head_sends_no_body() {
        let outcome = exchange("HEAD / HTTP/1.1\r\n", NEXT, |exchange| {
            exchange.respond(200, &[], b"not sent").unwrap();
        });
        assert!(outcome.reusable);
        assert_eq!(
            outcome.written,
            "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n"
        );
    }

    #[test]
    fn no_content_and_not_modified_send_no_body() {
        for status in [204, 304] {
            let outcome = exchange("GET / HTTP/1.1\r\n", NEXT, |exchange| {
                exchange.start_response(status, &[], None).unwrap();
                assert!(exchange.write_body(b"x").is_err());
                exchange.finish().unwrap();
            });
            assert!(outcome.reusable, "{status}");
            assert_eq!(
                outcome.written,
                format!(
                    "HTTP/1.1 {status} {}\r\n\r\n",
                    crate::http::response_head::reason_phrase(status)
                )
            );
        }
    }

    #[test]
    fn response_shorter_than_its_length_closes_the_connection() {
        let outcome = exchange("GET / HTTP/1.1\r\n", NEXT, |exchange| {
            exchange.start_response(200, &[], Some(10)).unwrap();
            exchange.write_body(b"short").unwrap();
        });
        assert!(!outcome.reusable);
    }

    #[test]
    fn response_longer_than_its_length_is_refused() {
        let outcome = exchange("GET / HTTP/1.1\r\n", NEXT, |exchange| {
            exchange.start_response(200, &[], Some(2)).unwrap();
            assert!(exchange.write_body(b"too long").is_err());
        });
        // The head waits for its body, so nothing of it went out.
        assert!(!outcome.reusable);
        assert_eq!(outcome.written, "");
    }

    #[test]
    fn pieces_go_out_as_they_are_in_a_few_writes_fixed_or_chunked() {
        let pieces: Vec<Vec<u8>> = (0..150).map(|i| format!("<{i}>").into_bytes()).collect();
        let joined = pieces.concat();
        let length = joined.len() as u64;
        let fixed = exchange("GET / HTTP/1.1\r\n", NEXT, |exchange| {
            exchange.start_response(200, &[], Some(length)).unwrap();
            exchange
                .write_body_pieces(pieces.iter().map(Vec::as_slice))
                .unwrap();
        });
        assert!(fixed.reusable);
        // 62 pieces per write (two places kept for framing): 150 take 3.
        assert_eq!(fixed.writes, 3);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
        assert_eq!(fixed.written, head + std::str::from_utf8(&joined).unwrap());

        let chunked = exchange("GET / HTTP/1.1\r\n", NEXT, |exchange| {
            exchange.start_response(200, &[], None).unwrap();
            exchange
                .write_body_pieces(pieces.iter().map(Vec::as_slice))
                .unwrap();
        });
        assert!(chunked.reusable);
        let body = chunked.written.split_once("\r\n\r\n").unwrap().1;
        let mut chunks = Vec::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                break;
            }
            chunks.push(&after[..size]);
            assert_eq!(&after[size..size + 2], "\r\n");
            rest = &after[size + 2..];
        }
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks.concat().as_bytes(), joined);
    }

    #[test]
    fn a_small_answer_goes_out_in_one_write() {
        let outcome = exchange("GET / HTTP/1.1\r\n", NEXT, |exchange| {
            exchange.start_response(200, &[], Some(2)).unwrap();
            exchange.write_body(b"ok").unwrap();
        });
        assert!(outcome.reusable);
        assert_eq!(outcome.writes, 1);
        assert_eq!(
            outcome.written,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        );
    }

    #[test]
    fn connection_close_is_announced_when_the_client_asks_for_it() {
        let outcome = exchange("GET / HTTP/1.1\r\nConnection: close\r\n", NEXT, ok);
        assert!(!outcome.reusable);
        assert_eq!(
            outcome.written,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        );
    }

    #[test]
    fn handler_without_a_response_gets_a_closing_500() {
        let outcome = exchange("GET / HTTP/1.1\r\n", NEXT, |_| {});
        assert!(!outcome.reusable);
        assert_eq!(
            outcome.written,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
             Content-Length: 32\r\nConnection: close\r\n\r\n500 the hub produced no response"
        );
    }

    #[test]
    fn second_response_is_refused() {
        exchange("GET / HTTP/1.1\r\n", NEXT, |exchange| {
            ok(exchange);
            assert!(exchange.start_response(200, &[], None).is_err());
        });
    }
}
