//! The one place that turns an error into a Kubernetes `Status` body, the shape
//! every client-go program knows how to read.

use serde_json::json;

use crate::codec::Encoding;
use crate::codec::edit::{Object, Opened, key};
use crate::http::{Exchange, Stream};

/// The Kubernetes `StatusReason` that goes with an HTTP status code.
pub fn reason_for(code: u16) -> &'static str {
    match code {
        400 | 431 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// A `Status` failure body for `code` with a human-readable message.
pub fn status_body(code: u16, message: &str) -> Vec<u8> {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason_for(code),
        "code": code,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The same `Status` in `encoding`: a watch's ERROR event carries it in the
/// stream's own encoding (protobuf: metadata 1, status 2, message 3,
/// reason 4, code 6, in a `v1` `Status` envelope).
pub fn status_object(encoding: Encoding, code: u16, message: &str) -> Vec<u8> {
    if encoding == Encoding::Json {
        return status_body(code, message);
    }
    let mut opened = Opened::typed(Object::empty(encoding), "v1", "Status");
    let fields = [
        (key("status", 2), "Failure"),
        (key("message", 3), message),
        (key("reason", 4), reason_for(code)),
    ];
    for (field, value) in fields {
        let _ = opened.object.set_str(&[field], value);
    }
    let _ = opened.object.set_int(&[key("code", 6)], i64::from(code));
    opened.seal()
}

/// Every failure the hub answers by itself, with its status code: the one
/// place that pairs a kind of failure with a code (offline refusals carry the
/// code of their row of the offline table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request cannot be understood (an unsafe path, a bad selector).
    BadRequest(String),
    /// The in-flight bound of the port is reached.
    TooManyInFlight,
    /// A request head too large to send upstream (bytes, limit).
    HeadTooLargeToForward(usize, usize),
    /// The hub's memory budget is spent (bodies, lists and copies in flight).
    MemoryBudgetSpent,
    /// A request on the secure port without a bearer token: never forwarded,
    /// because the hub's own certificate would answer for it.
    NoBearerToken,
    /// exec, attach, port-forward: not relayed.
    UpgradeNotRelayed,
    /// Cloud mode with no usable apiserver, with the reasons.
    NoHealthyApiserver(String),
    /// The apiserver could not be reached or did not answer in time.
    Upstream {
        url: String,
        error: String,
        timed_out: bool,
    },
    /// A method the endpoint does not serve.
    MethodNotAllowed(String),
    /// A path the endpoint does not serve.
    NoSuchEndpoint(String),
    /// The cache cannot do what was asked now (cloud mode, the index being
    /// built, the writer behind), with the reason.
    CacheUnavailable(String),
    /// An offline answer that is a refusal (the code is its table row's).
    Offline { code: u16, message: String },
}

impl Refusal {
    pub fn code(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) => 400,
            Refusal::TooManyInFlight | Refusal::MemoryBudgetSpent => 429,
            Refusal::NoBearerToken => 401,
            Refusal::HeadTooLargeToForward(..) => 431,
            Refusal::UpgradeNotRelayed => 501,
            Refusal::NoHealthyApiserver(_) => 503,
            Refusal::Upstream {
                timed_out: true, ..
            } => 504,
            Refusal::Upstream { .. } => 502,
            Refusal::MethodNotAllowed(_) => 405,
            Refusal::NoSuchEndpoint(_) => 404,
            Refusal::CacheUnavailable(_) => 503,
            Refusal::Offline { code, .. } => *code,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::BadRequest(message)
            | Refusal::NoHealthyApiserver(message)
            | Refusal::CacheUnavailable(message)
            | Refusal::Offline { message, .. } => message.clone(),
            Refusal::TooManyInFlight => "too many requests in flight at the hub, retry later".into(),
            Refusal::HeadTooLargeToForward(size, limit) => format!(
                "request line and header fields of {size} bytes are more than the hub forwards ({limit})"
            ),
            Refusal::MemoryBudgetSpent => "the hub's memory budget for requests in flight is spent, retry later".into(),
            Refusal::NoBearerToken => "the hub's secure port needs a bearer token (Authorization: Bearer); it never forwards a request under the node's identity".into(),
            Refusal::UpgradeNotRelayed => "the hub does not relay protocol upgrades (exec, attach, port-forward); reach the apiserver directly".into(),
            Refusal::Upstream {
                url,
                error,
                timed_out,
            } => {
                let what = if *timed_out { "timed out" } else { "failed" };
                format!("request to apiserver {url} {what}: {error}")
            }
            Refusal::MethodNotAllowed(allowed) => format!("only {allowed} is allowed here"),
            Refusal::NoSuchEndpoint(path) => format!("no such endpoint {path}"),
        }
    }

    /// Header fields that go with the answer besides the body's type.
    fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if self.code() == 429 {
            headers.push(("Retry-After".into(), "1".into()));
        }
        headers
    }
}

/// Answers with the refusal's `Status`, unless a response already started
/// (then the connection is cut, so the client never takes a partial body for
/// a whole one).
pub fn refuse<S: Stream>(exchange: &mut Exchange<'_, S>, refusal: &Refusal) {
    refuse_with(exchange, refusal, &[]);
}

/// As `refuse`, with more header fields.
pub fn refuse_with<S: Stream>(
    exchange: &mut Exchange<'_, S>,
    refusal: &Refusal,
    extra_headers: &[(String, String)],
) {
    if exchange.response_started() {
        exchange.abort();
        return;
    }
    let code = refusal.code();
    let mut headers = refusal.headers();
    headers.extend_from_slice(extra_headers);
    let _ = exchange.respond(code, &headers, &status_body(code, &refusal.message()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_is_a_kubernetes_status() {
        let body: serde_json::Value =
            serde_json::from_slice(&status_body(429, "too many requests")).unwrap();
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["status"], "Failure");
        assert_eq!(body["reason"], "TooManyRequests");
        assert_eq!(body["code"], 429);
        assert_eq!(body["message"], "too many requests");
    }

    #[test]
    fn each_refusal_has_its_code() {
        let upstream = |timed_out| Refusal::Upstream {
            url: "https://a".into(),
            error: "e".into(),
            timed_out,
        };
        let cases = [
            (Refusal::BadRequest("x".into()), 400),
            (Refusal::TooManyInFlight, 429),
            (Refusal::MemoryBudgetSpent, 429),
            (Refusal::NoBearerToken, 401),
            (Refusal::HeadTooLargeToForward(2, 1), 431),
            (Refusal::UpgradeNotRelayed, 501),
            (Refusal::NoHealthyApiserver("x".into()), 503),
            (upstream(false), 502),
            (upstream(true), 504),
            (Refusal::MethodNotAllowed("GET".into()), 405),
            (Refusal::NoSuchEndpoint("/x".into()), 404),
            (Refusal::CacheUnavailable("busy".into()), 503),
            (
                Refusal::Offline {
                    code: 403,
                    message: "m".into(),
                },
                403,
            ),
        ];
        for (refusal, code) in cases {
            assert_eq!(refusal.code(), code, "{refusal:?}");
        }
        assert_eq!(
            upstream(true).message(),
            "request to apiserver https://a timed out: e"
        );
        assert!(
            Refusal::TooManyInFlight
                .headers()
                .contains(&("Retry-After".into(), "1".into()))
        );
    }
}
