//! The request-body decoder: Content-Length and chunked framing, the interim
//! `100 Continue`, and the bounded drain of an unread body that lets a
//! connection carry its next request.
//!
//! Framing is where request smuggling happens: when the hub and a client
//! disagree on where a body ends, the rest of one body is read as the next
//! request. So every error is final: a body that failed once is never read
//! again, and its connection is closed instead of reused.

use std::io::{self, Read, Write};

use super::conn::Conn;
use super::head::BodyFraming;
use super::response_head::CONTINUE;

/// Most bytes of an unread request body drained to keep a connection reusable.
pub(crate) const MAX_DRAIN_BYTES: u64 = 256 * 1024;
/// Longest chunk-size or trailer line accepted in a chunked body, counted up
/// to its LF (a CR before it included).
pub(crate) const MAX_LINE_BYTES: usize = 4096;
/// Most hex digits in a chunk size, leading zeros included: a size stays far
/// from overflowing a u64.
const MAX_CHUNK_SIZE_DIGITS: usize = 15;

/// Where the reading of a request body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Done,
    Length(u64),
    /// Inside a chunk with this many bytes left (0: the next size line is due).
    Chunk(u64),
    /// The body can no longer be read in step with the client, for this
    /// reason: the connection must close after the response.
    Unusable(&'static str),
}

/// Reads one request's body from its connection.
#[derive(Debug)]
pub(crate) struct BodyDecoder {
    state: State,
    /// The client sent `Expect: 100-continue` and has not been told to go on.
    continue_pending: bool,
}

impl BodyDecoder {
    pub(crate) fn new(framing: BodyFraming, expect_continue: bool) -> BodyDecoder {
        let state = match framing {
            BodyFraming::None => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::Chunk(0),
        };
        BodyDecoder {
            state,
            continue_pending: expect_continue && state != State::Done,
        }
    }

    /// To be called as the response head goes out. Returns whether the
    /// connection must close after the response because the body can no
    /// longer be read in step with the client.
    pub(crate) fn response_started(&mut self) -> bool {
        if self.continue_pending {
            // The client waits for a 100 Continue that must not come after a
            // final response: it may or may not send its body, so its bytes
            // cannot be told apart from a next request.
            self.continue_pending = false;
            self.state = State::Unusable("request body not read before the response started");
        }
        matches!(self.state, State::Unusable(_))
    }

    /// Reads body bytes into `out`; 0 at the end of the body. The first read
    /// sends the `100 Continue` the client may be waiting for.
    pub(crate) fn read<S: Read + Write>(
        &mut self,
        conn: &mut Conn<S>,
        out: &mut [u8],
    ) -> io::Result<usize> {
        if out.is_empty() || self.state == State::Done {
            return Ok(0);
        }
        if let State::Unusable(why) = self.state {
            return Err(io::Error::other(why));
        }
        let result = self.read_framed(conn, out);
        if result.is_err() {
            self.state = State::Unusable("request body failed earlier");
        }
        result
    }

    fn read_framed<S: Read + Write>(
        &mut self,
        conn: &mut Conn<S>,
        out: &mut [u8],
    ) -> io::Result<usize> {
        if self.continue_pending {
            self.continue_pending = false;
            conn.write_all_flush(&CONTINUE.to_bytes())?;
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Unusable(why) => return Err(io::Error::other(why)),
                State::Length(left) => {
                    let n = read_at_most(conn, out, left)?;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok(n);
                }
                State::Chunk(0) => {
                    let size = parse_chunk_size(&conn.read_line(MAX_LINE_BYTES)?)?;
                    if size == 0 {
                        // Trailer fields, if any, up to the empty line: skipped.
                        while !conn.read_line(MAX_LINE_BYTES)?.is_empty() {}
                        self.state = State::Done;
                        return Ok(0);
                    }
                    self.state = State::Chunk(size);
                }
                State::Chunk(left) => {
                    let n = read_at_most(conn, out, left)?;
                    let left = left - n as u64;
                    if left == 0 && !conn.read_line(MAX_LINE_BYTES)?.is_empty() {
                        return Err(invalid_data("chunk not followed by CRLF"));
                    }
                    self.state = State::Chunk(left);
                    return Ok(n);
                }
            }
        }
    }

    /// Reads and discards what is left of the body, at most `MAX_DRAIN_BYTES`
    /// of it. Returns whether the connection is positioned at the next request.
    pub(crate) fn drain<S: Read + Write>(&mut self, conn: &mut Conn<S>) -> bool {
        if self.continue_pending {
            // Never told to send its body: the client may or may not.
            return false;
        }
        let mut sink = [0u8; 8192];
        let mut drained = 0u64;
        while self.state != State::Done {
            match self.read(conn, &mut sink) {
                Ok(n) => drained += n as u64,
                Err(_) => return false,
            }
            if drained > MAX_DRAIN_BYTES {
                return false;
            }
        }
        true
    }
}

/// Reads at least one and at most `left` bytes; the stream ending first is an error.
fn read_at_most<S: Read + Write>(
    conn: &mut Conn<S>,
    out: &mut [u8],
    left: u64,
) -> io::Result<usize> {
    let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    match conn.read_some(&mut out[..want])? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        n => Ok(n),
    }
}

/// Parses a chunk-size line (without its line end): the size in hex, then
/// optional whitespace and chunk extensions, which are ignored.
pub(crate) fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    // httparse reads an empty size as 0 (the last chunk) and allows 16 digits;
    // the hub refuses the first and keeps its bound on the second.
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(invalid_data("chunk size"));
    }
    // Lines ending in a bare LF are accepted like CRLF, as in request heads.
    let mut terminated = Vec::with_capacity(line.len() + 2);
    terminated.extend_from_slice(line);
    terminated.extend_from_slice(b"\r\n");
    match httparse::parse_chunk_size(&terminated) {
        Ok(httparse::Status::Complete((_, size))) => Ok(size),
        Ok(httparse::Status::Partial) | Err(_) => Err(invalid_data("chunk size")),
    }
}

fn invalid_data(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::memory::{Memory, unread};

    /// What decoding one body gave: the body (or the error that ended it),
    /// the bytes left unread, and what was written back (100 Continue).
    struct Decoded {
        body: io::Result<Vec<u8>>,
        rest: Vec<u8>,
        written: Vec<u8>,
    }

    fn decode_with(framing: BodyFraming, expect_continue: bool, stream: Memory) -> Decoded {
        let mut conn = Conn::new(stream);
        let mut decoder = BodyDecoder::new(framing, expect_continue);
        let mut body = Vec::new();
        let mut piece = [0u8; 1000];
        let body = loop {
            match decoder.read(&mut conn, &mut piece) {
                Ok(0) => break Ok(body),
                Ok(n) => body.extend_from_slice(&piece[..n]),
                Err(e) => break Err(e),
            }
        };
        let rest = unread(&mut conn);
        Decoded {
            body,
            rest,
            written: conn.stream.output,
        }
    }

    fn decode(framing: BodyFraming, wire: &[u8]) -> Decoded {
        decode_with(framing, false, Memory::new(wire))
    }

    fn check_chunked(wire: &str, body: &str, rest: &str) {
        let decoded = decode(BodyFraming::Chunked, wire.as_bytes());
        let got = decoded.body.unwrap_or_else(|e| panic!("{wire:?}: {e}"));
        assert_eq!(String::from_utf8_lossy(&got), body, "{wire:?}");
        assert_eq!(String::from_utf8_lossy(&decoded.rest), rest, "{wire:?}");
    }

    fn check_chunked_error(wire: &[u8], kind: io::ErrorKind) {
        let decoded = decode(BodyFraming::Chunked, wire);
        let err = decoded.body.expect_err(&String::from_utf8_lossy(wire));
        assert_eq!(
            err.kind(),
            kind,
            "{:?}: {err}",
            String::from_utf8_lossy(wire)
        );
    }

    #[test]
    fn content_length_body_stops_at_its_length() {
        let decoded = decode(BodyFraming::Length(5), b"helloGET / HTTP/1.1\r\n\r\n");
        assert_eq!(decoded.body.unwrap(), b"hello");
        assert_eq!(decoded.rest, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn content_length_body_cut_short_is_an_error() {
        let decoded = decode(BodyFraming::Length(10), b"hello");
        assert_eq!(
            decoded.body.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn chunked_body_is_joined_and_stops_at_the_last_chunk() {
        check_chunked(
            "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "hello, world",
            "GET / HTTP/1.1\r\n\r\n",
        );
        check_chunked("A\r\n0123456789\r\n0\r\n\r\n", "0123456789", "");
        check_chunked("00a\r\n0123456789\r\n000\r\n\r\n", "0123456789", "");
    }

    #[test]
    fn chunk_extensions_are_ignored() {
        check_chunked(
            "5;name=value\r\nhello\r\n6 ; quoted=\"a;b\"\r\n there\r\n0;last\r\n\r\nNEXT",
            "hello there",
            "NEXT",
        );
    }

    #[test]
    fn trailer_fields_are_skipped() {
        check_chunked(
            "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\nNEXT",
            "hello",
            "NEXT",
        );
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        check_chunked("5\nhello\n0\n\nNEXT", "hello", "NEXT");
    }

    #[test]
    fn chunk_not_followed_by_crlf_is_an_error() {
        check_chunked_error(b"5\r\nhelloX\r\n0\r\n\r\n", io::ErrorKind::InvalidData);
        check_chunked_error(b"5\r\nhello world\r\n", io::ErrorKind::InvalidData);
    }

    #[test]
    fn chunk_cut_short_is_an_error() {
        check_chunked_error(b"a\r\nhello", io::ErrorKind::UnexpectedEof);
        check_chunked_error(
            b"5\r\nhello\r\n0\r\nX: trailer",
            io::ErrorKind::UnexpectedEof,
        );
    }

    #[test]
    fn malformed_chunk_sizes_are_errors() {
        for wire in [
            "\r\n",
            ";ext\r\n",
            " 5\r\nhello\r\n0\r\n\r\n",
            "+5\r\nhello\r\n0\r\n\r\n",
            "-1\r\n",
            "5x\r\nhello\r\n0\r\n\r\n",
            "5 5\r\n",
            "0x5\r\nhello\r\n0\r\n\r\n",
            "5\r\r\nhello\r\n0\r\n\r\n",
        ] {
            check_chunked_error(wire.as_bytes(), io::ErrorKind::InvalidData);
        }
    }

    #[test]
    fn chunk_size_line_longer_than_the_limit_is_an_error() {
        // One byte past the limit: 4097 bytes before the LF.
        let extension = "a".repeat(MAX_LINE_BYTES);
        let too_long = format!(
            "5;{}\r\nhello\r\n0\r\n\r\n",
            &extension[..MAX_LINE_BYTES - 2]
        );
        check_chunked_error(too_long.as_bytes(), io::ErrorKind::InvalidData);
        // The same, trickled in so the line spans many buffer refills.
        let trickled = decode_with(
            BodyFraming::Chunked,
            false,
            Memory::in_pieces(too_long.as_bytes(), 7),
        );
        assert_eq!(
            trickled.body.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // A line without any line end is refused once it passes the limit,
        // without waiting for the rest.
        let endless = format!("5;{extension}");
        check_chunked_error(endless.as_bytes(), io::ErrorKind::InvalidData);
        // A line of exactly the limit, its CR included, is fine.
        let at_limit = format!(
            "5;{}\r\nhello\r\n0\r\n\r\n",
            &extension[..MAX_LINE_BYTES - 3]
        );
        check_chunked(&at_limit, "hello", "");
    }

    #[test]
    fn trailer_line_longer_than_the_limit_is_an_error() {
        let wire = format!("0\r\nX: {}\r\n\r\n", "v".repeat(MAX_LINE_BYTES));
        check_chunked_error(wire.as_bytes(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn chunk_size_that_would_overflow_is_an_error() {
        check_chunked_error(b"fffffffffffffffff\r\n", io::ErrorKind::InvalidData);
        check_chunked_error(b"10000000000000000\r\n", io::ErrorKind::InvalidData);
        // The bound is on digits, leading zeros included.
        check_chunked_error(b"0000000000000005\r\nhello\r\n", io::ErrorKind::InvalidData);
        assert_eq!(
            parse_chunk_size(b"fffffffffffffff").unwrap(),
            0x0fff_ffff_ffff_ffff
        );
        assert!(parse_chunk_size(b"ffffffffffffffff").is_err());
    }

    #[test]
    fn error_in_a_body_is_final() {
        // What follows the bad size line would parse as the end of the body;
        // it must not be read as such, nor the request after it.
        let mut conn = Conn::new(Memory::new(
            b"zz\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        ));
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked, false);
        let mut piece = [0u8; 100];
        assert!(decoder.read(&mut conn, &mut piece).is_err());
        assert!(decoder.read(&mut conn, &mut piece).is_err());
        assert!(!decoder.drain(&mut conn));
        assert!(decoder.response_started());
        assert_eq!(
            unread(&mut conn),
            b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
        );
    }

    #[test]
    fn continue_is_sent_once_when_the_body_is_first_read() {
        let mut conn = Conn::new(Memory::new(b"hello"));
        let mut decoder = BodyDecoder::new(BodyFraming::Length(5), true);
        assert!(conn.stream.output.is_empty(), "sent before any read");
        let mut piece = [0u8; 2];
        assert_eq!(decoder.read(&mut conn, &mut piece).unwrap(), 2);
        assert_eq!(conn.stream.output, b"HTTP/1.1 100 Continue\r\n\r\n");
        let mut rest = Vec::new();
        while let n @ 1.. = decoder.read(&mut conn, &mut piece).unwrap() {
            rest.extend_from_slice(&piece[..n]);
        }
        assert_eq!(rest, b"llo");
        assert_eq!(conn.stream.output, b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(!decoder.response_started());
    }

    #[test]
    fn continue_is_not_sent_without_a_body() {
        let decoded = decode_with(BodyFraming::None, true, Memory::new(b""));
        assert!(decoded.written.is_empty());
        assert_eq!(decoded.body.unwrap(), b"");
    }

    #[test]
    fn continue_is_never_sent_after_the_response_started() {
        let mut conn = Conn::new(Memory::new(b"hello"));
        let mut decoder = BodyDecoder::new(BodyFraming::Length(5), true);
        assert!(decoder.response_started(), "connection must close");
        let mut piece = [0u8; 8];
        assert!(decoder.read(&mut conn, &mut piece).is_err());
        assert!(!decoder.drain(&mut conn));
        assert!(conn.stream.output.is_empty());
        assert_eq!(unread(&mut conn), b"hello");
    }

    #[test]
    fn body_awaiting_continue_is_not_drained() {
        let mut conn = Conn::new(Memory::new(b"hello"));
        let mut decoder = BodyDecoder::new(BodyFraming::Length(5), true);
        assert!(!decoder.drain(&mut conn));
        assert!(conn.stream.output.is_empty());
        assert_eq!(unread(&mut conn), b"hello");
    }

    #[test]
    fn body_within_the_drain_limit_is_drained() {
        let mut wire = vec![b'x'; MAX_DRAIN_BYTES as usize];
        wire.extend_from_slice(b"NEXT");
        let mut conn = Conn::new(Memory::new(&wire));
        let mut decoder = BodyDecoder::new(BodyFraming::Length(MAX_DRAIN_BYTES), false);
        assert!(decoder.drain(&mut conn));
        assert_eq!(unread(&mut conn), b"NEXT");
    }

    #[test]
    fn body_past_the_drain_limit_is_not_drained() {
        let length = MAX_DRAIN_BYTES + 1;
        let mut conn = Conn::new(Memory::new(&vec![b'x'; length as usize]));
        let mut decoder = BodyDecoder::new(BodyFraming::Length(length), false);
        assert!(!decoder.drain(&mut conn));

        let mut chunked = Vec::new();
        for _ in 0..=MAX_DRAIN_BYTES / 4096 {
            chunked.extend_from_slice(b"1000\r\n");
            chunked.extend_from_slice(&[b'x'; 4096]);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let mut conn = Conn::new(Memory::new(&chunked));
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked, false);
        assert!(!decoder.drain(&mut conn));
    }

    #[test]
    fn partly_read_body_is_drained_to_its_end() {
        let mut conn = Conn::new(Memory::new(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\nNEXT"));
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked, false);
        let mut piece = [0u8; 2];
        assert_eq!(decoder.read(&mut conn, &mut piece).unwrap(), 2);
        assert!(decoder.drain(&mut conn));
        assert!(!decoder.response_started());
        assert_eq!(unread(&mut conn), b"NEXT");
    }

    /// Any bytes after a chunked or fixed-length head, in pieces of any
    /// size: decoding never panics, ends, and never gives more bytes than
    /// were sent (nor, for a length, more than the length).
    #[test]
    fn generated_bodies_never_panic_nor_grow() {
        let seeds: &[&[u8]] = &[
            b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"5;name=value\r\nhello\r\n6 ; quoted=\"a;b\"\r\n there\r\n0;last\r\n\r\nNEXT",
            b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\nNEXT",
            b"00a\r\n0123456789\r\n000\r\n\r\n",
            b"5\nhello\n0\n\nNEXT",
            b"fffffffffffffff\r\nabc",
        ];
        // Each read from the stream refills the connection's buffer, slow in
        // debug builds: an input arrives in 1 to 8 pieces.
        let mut round = 0u64;
        crate::fuzz::run(0x5eed_0004, seeds, 4_000, |input| {
            round += 1;
            let piece = input.len() / (round % 8 + 1) as usize + 1;
            let framing = match round % 3 {
                0 => BodyFraming::Length(round % 40),
                _ => BodyFraming::Chunked,
            };
            let mut conn = Conn::new(Memory::in_pieces(input, piece));
            let mut decoder = BodyDecoder::new(framing, round.is_multiple_of(5));
            let mut out = [0u8; 37];
            let mut total = 0;
            for _ in 0..=input.len() + 1 {
                match decoder.read(&mut conn, &mut out[..(round % 37 + 1) as usize]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            assert!(total <= input.len(), "{total} bytes out of {}", input.len());
            if let BodyFraming::Length(length) = framing {
                assert!(total as u64 <= length);
            }
            let _ = decoder.drain(&mut conn);
            let _ = decoder.response_started();
        });
    }

    #[test]
    fn broken_body_is_not_drained() {
        let mut conn = Conn::new(Memory::new(b"5\r\nhello!!0\r\n\r\nNEXT"));
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked, false);
        assert!(!decoder.drain(&mut conn));
    }
}
