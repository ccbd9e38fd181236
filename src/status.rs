//! The one place that turns an error into a Kubernetes `Status` body, the shape
//! every client-go program knows how to read.

use serde_json::json;

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
}
