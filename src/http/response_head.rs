//! The one writer of HTTP/1.1 response heads: the status line and header
//! fields of every response the hub sends (handler answers, the interim
//! `100 Continue`, the listener's canned errors).
//!
//! Pure. In one place so there is one rule for which responses may carry a
//! body and how it is framed: a 204 never announces a length, an answer to
//! HEAD never promises chunks.

use ::http::StatusCode;

/// How the body after a response head is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseBody {
    /// Nothing follows: HEAD, 1xx, 204, 304, or a zero length.
    None,
    /// Exactly this many bytes follow, announced by `Content-Length`.
    Length(u64),
    /// Chunks follow, ended by a chunk of size zero.
    Chunked,
}

/// A response head to write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseHead<'a> {
    pub(crate) status: u16,
    /// Header fields, written in this order and as given; the framing field and
    /// `Connection: close` follow them.
    pub(crate) headers: &'a [(String, String)],
    /// The body length if known (sent as `Content-Length`), else the body is
    /// chunked.
    pub(crate) length: Option<u64>,
    /// The request was HEAD: the head describes a body that is not sent.
    pub(crate) head_request: bool,
    /// Tells the client the connection closes after this response.
    pub(crate) close: bool,
}

/// The interim response that tells a client waiting on `Expect: 100-continue`
/// to send its body.
pub(crate) const CONTINUE: ResponseHead<'static> = ResponseHead {
    status: 100,
    headers: &[],
    length: None,
    head_request: false,
    close: false,
};

impl ResponseHead<'_> {
    /// Whether the status (or the request method) rules out a body.
    fn forbids_body(&self) -> bool {
        self.head_request
            || self.status == 204
            || self.status == 304
            || is_informational(self.status)
    }

    /// What must follow this head on the wire.
    pub(crate) fn body(&self) -> ResponseBody {
        match (self.forbids_body(), self.length) {
            (true, _) | (false, Some(0)) => ResponseBody::None,
            (false, Some(n)) => ResponseBody::Length(n),
            (false, None) => ResponseBody::Chunked,
        }
    }

    /// The head as bytes, ending with the empty line.
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (name, value) in self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        match self.length {
            // An answer to HEAD and a 304 announce the length of the body they
            // do not send; 1xx and 204 announce none (RFC 9110 section 8.6).
            Some(n) if self.status != 204 && !is_informational(self.status) => {
                out.push_str(&format!("Content-Length: {n}\r\n"));
            }
            None if !self.forbids_body() => out.push_str("Transfer-Encoding: chunked\r\n"),
            _ => {}
        }
        if self.close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

fn is_informational(status: u16) -> bool {
    (100..200).contains(&status)
}

/// The reason phrase of a status code; "Unknown" for a code without one.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("Unknown")
}

/// The header fields of the hub's own JSON answers (canned errors).
pub(crate) fn json_content_type() -> Vec<(String, String)> {
    vec![("Content-Type".to_string(), "application/json".to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, length: Option<u64>) -> ResponseHead<'static> {
        ResponseHead {
            status,
            headers: &[],
            length,
            head_request: false,
            close: false,
        }
    }

    fn check(head: ResponseHead<'_>, expected_text: &str, expected_body: ResponseBody) {
        assert_eq!(
            String::from_utf8(head.to_bytes()).unwrap(),
            expected_text,
            "{head:?}"
        );
        assert_eq!(head.body(), expected_body, "{head:?}");
    }

    #[test]
    fn known_length_is_sent_as_content_length() {
        let headers = json_content_type();
        check(
            ResponseHead {
                headers: &headers,
                ..head(200, Some(2))
            },
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n",
            ResponseBody::Length(2),
        );
    }

    #[test]
    fn zero_length_means_nothing_follows() {
        check(
            head(200, Some(0)),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ResponseBody::None,
        );
    }

    #[test]
    fn unknown_length_is_chunked() {
        check(
            head(200, None),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            ResponseBody::Chunked,
        );
    }

    #[test]
    fn head_request_gets_the_length_but_no_body_and_never_chunks() {
        let to_head = |length| ResponseHead {
            head_request: true,
            ..head(200, length)
        };
        check(
            to_head(Some(42)),
            "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n",
            ResponseBody::None,
        );
        check(to_head(None), "HTTP/1.1 200 OK\r\n\r\n", ResponseBody::None);
    }

    #[test]
    fn no_content_never_announces_a_body() {
        check(
            head(204, Some(5)),
            "HTTP/1.1 204 No Content\r\n\r\n",
            ResponseBody::None,
        );
        check(
            head(204, None),
            "HTTP/1.1 204 No Content\r\n\r\n",
            ResponseBody::None,
        );
    }

    #[test]
    fn not_modified_keeps_a_given_length_but_sends_no_body() {
        check(
            head(304, Some(7)),
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
            ResponseBody::None,
        );
        check(
            head(304, None),
            "HTTP/1.1 304 Not Modified\r\n\r\n",
            ResponseBody::None,
        );
    }

    #[test]
    fn continue_is_a_bare_status_line() {
        check(
            CONTINUE,
            "HTTP/1.1 100 Continue\r\n\r\n",
            ResponseBody::None,
        );
    }

    #[test]
    fn close_is_announced_after_the_framing() {
        let headers = vec![("Retry-After".to_string(), "1".to_string())];
        check(
            ResponseHead {
                headers: &headers,
                close: true,
                ..head(503, Some(3))
            },
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 3\r\n\
             Connection: close\r\n\r\n",
            ResponseBody::Length(3),
        );
        check(
            ResponseHead {
                close: true,
                ..head(200, None)
            },
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            ResponseBody::Chunked,
        );
    }

    #[test]
    fn reason_phrases_are_the_ones_the_hub_always_sent() {
        // The hand-written table this module replaced, kept as a regression check.
        let sent_before = [
            (100, "Continue"),
            (101, "Switching Protocols"),
            (200, "OK"),
            (201, "Created"),
            (202, "Accepted"),
            (204, "No Content"),
            (206, "Partial Content"),
            (301, "Moved Permanently"),
            (302, "Found"),
            (304, "Not Modified"),
            (307, "Temporary Redirect"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (406, "Not Acceptable"),
            (409, "Conflict"),
            (410, "Gone"),
            (413, "Payload Too Large"),
            (415, "Unsupported Media Type"),
            (422, "Unprocessable Entity"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (502, "Bad Gateway"),
            (503, "Service Unavailable"),
            (504, "Gateway Timeout"),
            (505, "HTTP Version Not Supported"),
        ];
        for (status, phrase) in sent_before {
            assert_eq!(reason_phrase(status), phrase, "{status}");
        }
    }

    #[test]
    fn status_without_a_phrase_is_unknown() {
        assert_eq!(reason_phrase(599), "Unknown");
        assert_eq!(reason_phrase(42), "Unknown");
        assert_eq!(reason_phrase(1000), "Unknown");
        check(
            head(599, Some(0)),
            "HTTP/1.1 599 Unknown\r\nContent-Length: 0\r\n\r\n",
            ResponseBody::None,
        );
    }
}
