//! Parsing of an HTTP/1.1 request head (request line and header fields).
//!
//! Pure: bytes in, a `RequestHead` or a `HeadError` out. Limits on size and count
//! are enforced by the caller (`conn.rs`) before the bytes reach this parser, and
//! here for the number of fields.

use std::fmt;

/// At most this many header fields in one request.
pub const MAX_HEADER_FIELDS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// The parsed request line and header fields of one request.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// Path part of the request target, still percent-encoded.
    pub path: String,
    /// Query part of the request target without the `?`, still percent-encoded.
    pub query: String,
    /// Header fields in arrival order, names as the client wrote them.
    pub headers: Vec<(String, String)>,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl RequestHead {
    /// First value of a header field, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The request target as it was sent (`path?query`).
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// First value of a header field in a list, by case-insensitive name.
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why a request head was refused; each maps to one status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed request line or header field (400).
    Malformed(&'static str),
    /// Too many header fields (431).
    TooManyFields,
    /// A transfer coding other than `chunked` (501).
    UnsupportedTransferEncoding,
    /// Not HTTP/1.0 or HTTP/1.1 (505).
    UnsupportedVersion,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooManyFields => 431,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::UnsupportedVersion => 505,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(what) => write!(f, "malformed request: {what}"),
            HeadError::TooManyFields => {
                write!(f, "more than {MAX_HEADER_FIELDS} header fields")
            }
            HeadError::UnsupportedTransferEncoding => {
                write!(f, "only the chunked transfer coding is supported")
            }
            HeadError::UnsupportedVersion => write!(f, "only HTTP/1.0 and HTTP/1.1 are supported"),
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a request head: everything before the empty line, without it.
pub fn parse_head(bytes: &[u8]) -> Result<RequestHead, HeadError> {
    let text = std::str::from_utf8(bytes).map_err(|_| HeadError::Malformed("not utf-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().ok_or(HeadError::Malformed("empty"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("request line"));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(HeadError::Malformed("method"));
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        v if v.starts_with("HTTP/") => return Err(HeadError::UnsupportedVersion),
        _ => return Err(HeadError::Malformed("request line")),
    };
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HeadError::Malformed("request target"));
    }
    let target = target.split('#').next().unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };

    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            return Err(HeadError::Malformed("folded header line"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(HeadError::Malformed("header line without colon"))?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(HeadError::Malformed("header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(HeadError::Malformed("header value"));
        }
        if headers.len() == MAX_HEADER_FIELDS {
            return Err(HeadError::TooManyFields);
        }
        headers.push((name.to_string(), value.to_string()));
    }

    let framing = body_framing(&headers)?;
    let connection = |token: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let keep_alive = match version {
        Version::Http11 => !connection("close"),
        Version::Http10 => connection("keep-alive"),
    };
    let expect_continue = version == Version::Http11
        && header_value(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    Ok(RequestHead {
        method: method.to_string(),
        path,
        query,
        headers,
        framing,
        keep_alive,
        expect_continue,
    })
}

fn body_framing(headers: &[(String, String)]) -> Result<BodyFraming, HeadError> {
    let mut transfer_encodings = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .peekable();
    let has_transfer_encoding = transfer_encodings.peek().is_some();
    let codings: Vec<&str> = transfer_encodings.collect();
    let mut lengths = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str());
    let first_length = lengths.next();
    if has_transfer_encoding {
        // Both framings at once is how requests get smuggled: refuse it.
        if first_length.is_some() {
            return Err(HeadError::Malformed(
                "both content-length and transfer-encoding",
            ));
        }
        return if codings.len() == 1 && codings[0].eq_ignore_ascii_case("chunked") {
            Ok(BodyFraming::Chunked)
        } else {
            Err(HeadError::UnsupportedTransferEncoding)
        };
    }
    let Some(first_length) = first_length else {
        return Ok(BodyFraming::None);
    };
    if lengths.any(|other| other != first_length) {
        return Err(HeadError::Malformed("conflicting content-length"));
    }
    if first_length.is_empty() || !first_length.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeadError::Malformed("content-length"));
    }
    let length: u64 = first_length
        .parse()
        .map_err(|_| HeadError::Malformed("content-length"))?;
    Ok(if length == 0 {
        BodyFraming::None
    } else {
        BodyFraming::Length(length)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ok(input: &str) -> RequestHead {
        parse_head(input.as_bytes()).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    fn check_err(input: &str, status: u16) {
        let err = parse_head(input.as_bytes()).expect_err(input);
        assert_eq!(err.status(), status, "{input:?}: {err}");
    }

    #[test]
    fn parses_kubelet_style_get() {
        let head = check_ok(
            "GET /api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&limit=500 HTTP/1.1\r\n\
             Host: 127.0.0.1:10261\r\nUser-Agent: kubelet/v1.20.2\r\n\
             Accept: application/vnd.kubernetes.protobuf,application/json\r\n",
        );
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/api/v1/pods");
        assert_eq!(head.query, "fieldSelector=spec.nodeName%3Dedge-1&limit=500");
        assert_eq!(head.header("user-agent"), Some("kubelet/v1.20.2"));
        assert_eq!(head.framing, BodyFraming::None);
        assert!(head.keep_alive);
        assert_eq!(
            head.target(),
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&limit=500"
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        assert!(!check_ok("GET / HTTP/1.1\r\nConnection: close\r\n").keep_alive);
        assert!(!check_ok("GET / HTTP/1.0\r\n").keep_alive);
        assert!(check_ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n").keep_alive);
    }

    #[test]
    fn body_framing_is_strict() {
        assert_eq!(
            check_ok("POST / HTTP/1.1\r\nContent-Length: 12\r\n").framing,
            BodyFraming::Length(12)
        );
        assert_eq!(
            check_ok("POST / HTTP/1.1\r\nContent-Length: 0\r\n").framing,
            BodyFraming::None
        );
        assert_eq!(
            check_ok("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n").framing,
            BodyFraming::Chunked
        );
        check_err(
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
            400,
        );
        check_err("POST / HTTP/1.1\r\nContent-Length: -1\r\n", 400);
        check_err(
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n",
            400,
        );
        check_err(
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n",
            501,
        );
    }

    #[test]
    fn rejects_malformed_heads() {
        check_err("GET /\r\n", 400);
        check_err("GET  / HTTP/1.1\r\n", 400);
        check_err("GET http://x/ HTTP/1.1\r\n", 400);
        check_err("GET / HTTP/2.0\r\n", 505);
        check_err("GET / FOO\r\n", 400);
        check_err("GET / HTTP/1.1\r\nBad Name: x\r\n", 400);
        check_err("GET / HTTP/1.1\r\nX: a\r\n  folded\r\n", 400);
        check_err("GET / HTTP/1.1\r\nX: a\u{1}b\r\n", 400);
        let many: String = (0..=MAX_HEADER_FIELDS)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        check_err(&format!("GET / HTTP/1.1\r\n{many}"), 431);
    }

    const HEADS: &[&str] = &[
        "GET /api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&limit=500 HTTP/1.1\r\n\
         Host: 127.0.0.1:10261\r\nUser-Agent: kubelet/v1.20.2 (linux/amd64)\r\n\
         Accept: application/vnd.kubernetes.protobuf,application/json\r\n",
        "PUT /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n?timeout=10s HTTP/1.1\r\n\
         Content-Length: 12\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n",
        "POST /api/v1/namespaces/a/pods HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\
         Connection: keep-alive, Upgrade\r\n",
        "GET / HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\nContent-Length: 0\r\n",
    ];

    /// Any head: parsing never panics, and a parsed head written out again
    /// parses to the same request.
    #[test]
    fn generated_heads_never_panic_and_round_trip() {
        let seeds: Vec<&[u8]> = HEADS.iter().map(|h| h.as_bytes()).collect();
        crate::fuzz::run(0x5eed_0002, &seeds, 20_000, |input| {
            let Ok(head) = parse_head(input) else { return };
            assert!(head.path.starts_with('/'));
            assert!(!head.method.is_empty());
            let mut again = format!("{} {} HTTP/1.1\r\n", head.method, head.target());
            for (name, value) in &head.headers {
                again.push_str(&format!("{name}: {value}\r\n"));
            }
            let reparsed = parse_head(again.as_bytes()).expect("a parsed head parses again");
            assert_eq!(
                (&reparsed.method, &reparsed.path, &reparsed.query),
                (&head.method, &head.path, &head.query)
            );
            assert_eq!(reparsed.headers, head.headers);
            assert_eq!(reparsed.framing, head.framing);
        });
    }

    /// Any bytes on a connection, arriving in pieces of any size: reading
    /// heads never panics, and ends (the stream does).
    #[test]
    fn generated_connections_never_panic() {
        use crate::http::conn::{Conn, ReadHeadError};
        use crate::http::memory::Memory;
        let seeds: Vec<Vec<u8>> = HEADS
            .iter()
            .map(|h| format!("{h}\r\n{h}\n\n").into_bytes())
            .collect();
        let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
        let limits = crate::http::Limits {
            max_head_bytes: 1024,
            ..Default::default()
        };
        // Each read costs a buffer refill, slow in debug builds: an input
        // arrives in 1 to 16 pieces, so every split point is tried but few
        // inputs trickle byte by byte.
        let mut round = 0;
        crate::fuzz::run(0x5eed_0003, &seeds, 1_500, |input| {
            round = round % 16 + 1;
            let piece = input.len() / round + 1;
            let mut conn = Conn::new(Memory::in_pieces(input, piece));
            for _ in 0..=input.len() {
                match conn.read_head(&limits) {
                    Ok(Some(head)) => assert!(head.path.starts_with('/')),
                    Ok(None) | Err(ReadHeadError::Parse(_)) => return,
                    Err(ReadHeadError::TooLarge | ReadHeadError::Io(_)) => return,
                }
            }
            panic!("more heads than bytes");
        });
    }

    #[test]
    fn expect_continue_is_recognised() {
        assert!(
            check_ok("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n")
                .expect_continue
        );
    }
}
