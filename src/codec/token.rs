//! Service-account TokenRequests (`POST .../serviceaccounts/{name}/token`):
//! what a request asks for (audiences, bound object), which decides whether a
//! token issued earlier answers it, and when an issued token expires. kubelet
//! sends and reads these in protobuf, other clients in JSON.

use serde::Deserialize;

use super::{CodecError, Encoding, json_error, protobuf};

/// The object a token is bound to (kubelet binds each token to its pod).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct BoundObject {
    pub kind: String,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub name: String,
    pub uid: String,
}

/// What identifies a TokenRequest: a token issued for the same audiences and
/// the same bound object answers it (the lifetime asked for does not matter:
/// the issuer decides it anyway and the answer says when the token expires).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct TokenSpec {
    /// Sorted and without repeats (the order has no meaning).
    pub audiences: Vec<String>,
    #[serde(rename = "boundObjectRef")]
    pub bound: Option<BoundObject>,
}

impl TokenSpec {
    pub fn new(mut audiences: Vec<String>, bound: Option<BoundObject>) -> TokenSpec {
        audiences.sort();
        audiences.dedup();
        TokenSpec { audiences, bound }
    }

    /// The spec as one canonical string (equal specs give equal keys).
    pub fn key(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonTokenRequest {
    spec: JsonSpec,
    status: JsonStatus,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonSpec {
    audiences: Option<Vec<String>>,
    #[serde(rename = "boundObjectRef")]
    bound: Option<BoundObject>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonStatus {
    token: String,
    #[serde(rename = "expirationTimestamp")]
    expiration: Option<String>,
}

/// The spec of a TokenRequest body.
pub fn request_spec(encoding: Encoding, body: &[u8]) -> Result<TokenSpec, CodecError> {
    match encoding {
        Encoding::Json => {
            let request: JsonTokenRequest =
                serde_json::from_slice(body).map_err(|e| json_error("TokenRequest", e))?;
            Ok(TokenSpec::new(
                request.spec.audiences.unwrap_or_default(),
                request.spec.bound,
            ))
        }
        Encoding::Protobuf => protobuf::token_request_spec(body),
    }
}

/// When the token of an issued TokenRequest expires (Unix seconds); an error
/// when the answer carries no token or no readable expiry.
pub fn issued_expiry(encoding: Encoding, body: &[u8]) -> Result<i64, CodecError> {
    match encoding {
        Encoding::Json => {
            let issued: JsonTokenRequest =
                serde_json::from_slice(body).map_err(|e| json_error("TokenRequest", e))?;
            if issued.status.token.is_empty() {
                return Err(CodecError("TokenRequest without status.token".into()));
            }
            issued
                .status
                .expiration
                .as_deref()
                .and_then(super::time::parse_rfc3339)
                .ok_or_else(|| CodecError("TokenRequest without a readable expiry".into()))
        }
        Encoding::Protobuf => protobuf::token_expiry(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUED: &str = r#"{"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1","metadata":{"name":"default","namespace":"a"},"spec":{"audiences":["https://kubernetes.default.svc"],"expirationSeconds":3607,"boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"p","uid":"u1"}},"status":{"token":"eyJhbGciOi.x.y","expirationTimestamp":"2031-03-04T00:00:00Z"}}"#;

    #[test]
    fn json_requests_are_keyed_by_audiences_and_bound_object() {
        let a = request_spec(
            Encoding::Json,
            br#"{"spec":{"audiences":["b","a","a"],"expirationSeconds":600,"boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"p","uid":"u1"}}}"#,
        )
        .unwrap();
        let b = request_spec(
            Encoding::Json,
            br#"{"spec":{"audiences":["a","b"],"boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"p","uid":"u1"}}}"#,
        )
        .unwrap();
        assert_eq!(a.audiences, ["a", "b"]);
        assert_eq!(
            a.key(),
            b.key(),
            "order, repeats and lifetime do not matter"
        );
        let other_pod = request_spec(
            Encoding::Json,
            br#"{"spec":{"audiences":["a","b"],"boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"p","uid":"u2"}}}"#,
        )
        .unwrap();
        assert_ne!(a.key(), other_pod.key());
        let unbound = request_spec(Encoding::Json, br#"{"spec":{}}"#).unwrap();
        assert_eq!(unbound, TokenSpec::default());
        assert!(request_spec(Encoding::Json, b"{").is_err());
    }

    #[test]
    fn issued_tokens_say_when_they_expire() {
        assert_eq!(
            issued_expiry(Encoding::Json, ISSUED.as_bytes()),
            Ok(1_930_348_800)
        );
        let no_token = ISSUED.replace("eyJhbGciOi.x.y", "");
        assert!(issued_expiry(Encoding::Json, no_token.as_bytes()).is_err());
        let no_expiry = ISSUED.replace("2031-03-04T00:00:00Z", "soon");
        assert!(issued_expiry(Encoding::Json, no_expiry.as_bytes()).is_err());
    }
}
