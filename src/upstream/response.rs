//! An apiserver's response as the client reads it: the head (parsed with
//! httparse), the rule that says where its body ends, and the decoder of
//! that body. Pure: bytes in, decisions out (the reading is `connection.rs`).
//!
//! The decoder can stop at any byte and resume: a watch's read times out
//! every stream poll and is simply tried again, so nothing of a body's
//! framing may live on the stack of one read.

use crate::http::parse_chunk_size;

/// Most bytes of a response head (status line and header fields).
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_FIELDS: usize = 128;
/// Longest chunk-size or trailer line, its line end included.
const MAX_LINE_BYTES: usize = 4096;
/// Most bytes of trailer fields after the last chunk (read and dropped).
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// A response head: the status, the header fields whose value is text, and
/// how its body is framed.
#[derive(Debug)]
pub(super) struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    /// Whether the connection can carry another request once the body has
    /// been read to its end.
    pub reusable: bool,
}

/// Where a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body: HEAD, 1xx, 204, 304.
    None,
    Length(u64),
    Chunked,
    /// At the end of the stream (then the connection cannot be reused).
    UntilClose,
}

/// Parses a response head at the start of `bytes`: `Ok(None)` while it is
/// incomplete, else the head and its length. Interim (1xx) heads are
/// returned like any other; the caller skips them.
pub(super) fn parse_head(
    bytes: &[u8],
    method_is_head: bool,
) -> Result<Option<(Head, usize)>, String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut fields);
    let length = match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid response head: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let version = response.version.unwrap_or(0);
    let fields = response.headers;
    let framing = framing(method_is_head, status, fields)?;
    let both = has(fields, "transfer-encoding") && has(fields, "content-length");
    let reusable = keep_alive(version, fields) && framing != Framing::UntilClose && !both;
    let headers = fields
        .iter()
        .filter_map(|field| {
            let value = std::str::from_utf8(field.value).ok()?;
            let visible = value
                .bytes()
                .all(|b| b == b'\t' || (b' '..0x7f).contains(&b));
            visible.then(|| (field.name.to_string(), value.to_string()))
        })
        .collect();
    let head = Head {
        status,
        headers,
        framing,
        reusable,
    };
    Ok(Some((head, length)))
}

/// Which rule ends the body (RFC 9112 section 6.3): none for a HEAD request
/// and for 1xx, 204 and 304; chunked when it is the last transfer coding
/// (another last coding: until the connection closes); else Content-Length
/// (copies must agree); else until the connection closes.
pub(super) fn framing(
    method_is_head: bool,
    status: u16,
    fields: &[httparse::Header<'_>],
) -> Result<Framing, String> {
    if method_is_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    let codings = values(fields, "transfer-encoding");
    if let Some(last) = codings.clone().last() {
        return Ok(if last.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let mut length = None;
    for value in values(fields, "content-length") {
        let parsed = std::str::from_utf8(value)
            .ok()
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok())
            .ok_or("invalid Content-Length in the response")?;
        if length.is_some_and(|seen| seen != parsed) {
            return Err("conflicting Content-Length values in the response".into());
        }
        length = Some(parsed);
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// Whether the server keeps the connection open after this response:
/// HTTP/1.1 unless it says `close`, HTTP/1.0 only if it says `keep-alive`.
pub(super) fn keep_alive(version: u8, fields: &[httparse::Header<'_>]) -> bool {
    let mut tokens = values(fields, "connection");
    if version >= 1 {
        !tokens.any(|t| t.eq_ignore_ascii_case(b"close"))
    } else {
        tokens.any(|t| t.eq_ignore_ascii_case(b"keep-alive"))
    }
}

fn has(fields: &[httparse::Header<'_>], name: &str) -> bool {
    fields.iter().any(|f| f.name.eq_ignore_ascii_case(name))
}

/// The comma-separated elements of every field `name`, trimmed, empty ones left out.
fn values<'a>(
    fields: &'a [httparse::Header<'a>],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
    fields
        .iter()
        .filter(move |f| f.name.eq_ignore_ascii_case(name))
        .flat_map(|f| f.value.split(|&b| b == b','))
        .map(|v| v.trim_ascii())
        .filter(|v| !v.is_empty())
}

/// Where the reading of a body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    /// A chunk-size line is due.
    SizeLine,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data is due.
    DataEnd,
    /// Trailer fields after the last chunk, this many bytes of them so far.
    Trailers(usize),
    UntilClose,
    Done,
}

/// Decodes one response body, one step at a time.
#[derive(Debug)]
pub(super) struct Decoder {
    state: State,
}

impl Decoder {
    pub(super) fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::SizeLine,
            Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// How many bytes of body can be taken as they are, now (`u64::MAX`
    /// until the stream closes); `None` while framing comes first, or at
    /// the end.
    pub(super) fn data_left(&self) -> Option<u64> {
        match self.state {
            State::Length(n) | State::Data(n) => Some(n),
            State::UntilClose => Some(u64::MAX),
            _ => None,
        }
    }

    /// `n` bytes of body (at most `data_left`) were taken.
    pub(super) fn took(&mut self, n: usize) {
        let n = n as u64;
        self.state = match self.state {
            State::Length(left) => match left.saturating_sub(n) {
                0 => State::Done,
                left => State::Length(left),
            },
            State::Data(left) => match left.saturating_sub(n) {
                0 => State::DataEnd,
                left => State::Data(left),
            },
            other => other,
        };
    }

    /// Reads framing at the start of `input`; returns how many bytes it
    /// used (0: more input is needed first).
    pub(super) fn parse(&mut self, input: &[u8]) -> Result<usize, String> {
        match self.state {
            State::SizeLine => {
                let Some(line) = line(input)? else {
                    return Ok(0);
                };
                let size = parse_chunk_size(trim_line_end(line))
                    .map_err(|_| "invalid chunk size in the response")?;
                self.state = if size == 0 {
                    State::Trailers(0)
                } else {
                    State::Data(size)
                };
                Ok(line.len())
            }
            State::DataEnd => match input {
                [b'\r', b'\n', ..] => {
                    self.state = State::SizeLine;
                    Ok(2)
                }
                [b'\n', ..] => {
                    self.state = State::SizeLine;
                    Ok(1)
                }
                [] | [b'\r'] => Ok(0),
                _ => Err("chunk not followed by CRLF in the response".into()),
            },
            State::Trailers(seen) => {
                let Some(line) = line(input)? else {
                    return Ok(0);
                };
                let seen = seen.saturating_add(line.len());
                self.state = if trim_line_end(line).is_empty() {
                    State::Done
                } else if seen > MAX_TRAILER_BYTES {
                    return Err("trailer fields too large in the response".into());
                } else {
                    State::Trailers(seen)
                };
                Ok(line.len())
            }
            State::Length(_) | State::Data(_) | State::UntilClose | State::Done => Ok(0),
        }
    }

    /// The stream ended: the end of a body read until close, else a body
    /// cut short.
    pub(super) fn end_of_stream(&mut self) -> Result<(), String> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err("the apiserver closed the connection before the end of the body".into()),
        }
    }
}

/// The first line of `input`, its LF included; `None` while incomplete.
fn line(input: &[u8]) -> Result<Option<&[u8]>, String> {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) if i < MAX_LINE_BYTES => Ok(Some(&input[..=i])),
        None if input.len() < MAX_LINE_BYTES => Ok(None),
        _ => Err("chunk-size or trailer line too long in the response".into()),
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header fields as (name, value).
    type Fields<'a> = &'a [(&'a str, &'a str)];

    fn fields<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<httparse::Header<'a>> {
        pairs
            .iter()
            .map(|(name, value)| httparse::Header {
                name,
                value: value.as_bytes(),
            })
            .collect()
    }

    #[test]
    fn the_body_length_rule_follows_rfc_9112() {
        use Framing::*;
        let ok = |f| Ok::<Framing, String>(f);
        #[rustfmt::skip]
        let cases: &[(bool, u16, Fields, Result<Framing, String>)] = &[
            (false, 200, &[("Content-Length", "12")], ok(Length(12))),
            (false, 200, &[("content-length", " 0 ")], ok(Length(0))),
            (false, 200, &[("Content-Length", "5, 5"), ("Content-Length", "5")], ok(Length(5))),
            (false, 200, &[("Transfer-Encoding", "chunked")], ok(Chunked)),
            (false, 200, &[("Transfer-Encoding", "gzip, CHUNKED")], ok(Chunked)),
            (false, 200, &[("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")], ok(Chunked)),
            (false, 200, &[("Transfer-Encoding", "chunked, gzip")], ok(UntilClose)),
            // Transfer-Encoding wins over Content-Length.
            (false, 200, &[("Content-Length", "3"), ("Transfer-Encoding", "chunked")], ok(Chunked)),
            (false, 200, &[], ok(UntilClose)),
            (true, 200, &[("Content-Length", "12")], ok(None)),
            (false, 204, &[("Content-Length", "12")], ok(None)),
            (false, 304, &[("Transfer-Encoding", "chunked")], ok(None)),
            (false, 100, &[], ok(None)),
            (false, 200, &[("Content-Length", "5"), ("Content-Length", "6")],
                Err("conflicting Content-Length values in the response".into())),
            (false, 200, &[("Content-Length", "-1")], Err("invalid Content-Length in the response".into())),
            (false, 200, &[("Content-Length", "+1")], Err("invalid Content-Length in the response".into())),
            (false, 200, &[("Content-Length", "99999999999999999999")],
                Err("invalid Content-Length in the response".into())),
            (false, 200, &[("Content-Length", ",")], ok(UntilClose)),
        ];
        for (head, status, pairs, expected) in cases {
            assert_eq!(
                &framing(*head, *status, &fields(pairs)),
                expected,
                "{head} {status} {pairs:?}"
            );
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_field() {
        let cases: &[(u8, Fields, bool)] = &[
            (1, &[], true),
            (1, &[("Connection", "close")], false),
            (1, &[("connection", "Keep-Alive, CLOSE")], false),
            (1, &[("Connection", "keep-alive")], true),
            (0, &[], false),
            (0, &[("Connection", "keep-alive")], true),
            (0, &[("Connection", "close")], false),
        ];
        for (version, pairs, expected) in cases {
            assert_eq!(
                keep_alive(*version, &fields(pairs)),
                *expected,
                "{version} {pairs:?}"
            );
        }
    }

    #[test]
    fn heads_are_parsed_or_refused() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Bin: \xff\r\n\
              Content-Length: 2\r\n\r\n{}";
        let (head, length) = parse_head(wire, false).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(length, wire.len() - 2, "the body is not part of the head");
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.reusable);
        let names: Vec<&str> = head.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["Content-Type", "Content-Length"],
            "only text values"
        );

        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false)
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"", false).unwrap().is_none());
        for refused in [
            &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        ] {
            assert!(
                parse_head(refused, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(refused)
            );
        }
        let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
        let head = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(
            parse_head(head.as_bytes(), false).is_err(),
            "too many fields"
        );
    }

    #[test]
    fn a_connection_is_reusable_only_when_the_framing_allows_it() {
        let reusable = |wire: &[u8]| parse_head(wire, false).unwrap().unwrap().0.reusable;
        assert!(reusable(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(reusable(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!reusable(b"HTTP/1.1 200 OK\r\n\r\n"), "until close");
        assert!(!reusable(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ));
        assert!(!reusable(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!reusable(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
    }

    #[test]
    fn generated_heads_never_panic() {
        let seeds: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            b"HTTP/1.0 304 Not Modified\r\nContent-Length: 18446744073709551615\r\n\r\n",
        ];
        crate::fuzz::run(0x5eed_0101, seeds, 4_000, |input| {
            let _ = parse_head(input, false);
        });
    }

    #[test]
    fn generated_chunked_bodies_never_panic() {
        let seeds: &[&[u8]] = &[
            b"5\r\nhello\r\n0\r\n\r\n",
            b"ffffffffffffffff\r\nx\r\n",
            b"3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n",
        ];
        crate::fuzz::run(0x5eed_0102, seeds, 4_000, |input| {
            let mut decoder = Decoder::new(Framing::Chunked);
            let mut at = 0;
            while at < input.len() && !decoder.is_done() {
                if let Some(left) = decoder.data_left() {
                    let n = (input.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                    decoder.took(n);
                    at += n;
                    continue;
                }
                match decoder.parse(&input[at..]) {
                    Ok(0) | Err(_) => break,
                    Ok(used) => at += used,
                }
            }
            let _ = decoder.end_of_stream();
        });
    }
}
