//! The shared state is read with the node's identity. A client that brings
//! its own token (a pod's service account on the secure port, kube-proxy's
//! in-cluster config) is answered from it only once the apiserver said that
//! token may list or watch what it asks (a SelfSubjectAccessReview made
//! with the client's own token), remembered as kube-apiserver's webhook
//! authorizer remembers: 5 minutes when allowed, 30 s when not. Otherwise
//! the request is forwarded and the apiserver answers it, so the node's
//! identity is never lent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::request_info::{RequestInfo, bearer_token};
use crate::upstream::Upstream;

const ALLOWED_FOR: Duration = Duration::from_secs(300);
const DENIED_FOR: Duration = Duration::from_secs(30);
/// Decisions remembered (tokens times what they asked).
const MAX_DECISIONS: usize = 1024;

/// What a token asked. No `Debug`: it holds the token, which is never logged.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Asked {
    token: String,
    verb: &'static str,
    group: String,
    resource: String,
    namespace: String,
}

pub struct Access {
    upstream: Arc<Upstream>,
    decided: Mutex<HashMap<Asked, (bool, Instant)>>,
}

/// The `exp` claim of a JWT (Unix seconds), if the token is one.
fn jwt_expiry(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["exp"].as_u64()
}

/// Time from `now` until Unix second `exp` (zero once past).
fn seconds_left(exp: u64, now: SystemTime) -> Duration {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    Duration::from_secs(exp).saturating_sub(now)
}

/// The SelfSubjectAccessReview asking whether the token may do what the
/// request does.
fn review(asked: &Asked, version: &str) -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {
            "verb": asked.verb,
            "group": asked.group,
            "version": version,
            "resource": asked.resource,
            "namespace": asked.namespace,
        }},
    })
    .to_string()
    .into_bytes()
}

impl Access {
    pub fn new(upstream: Arc<Upstream>) -> Access {
        Access {
            upstream,
            decided: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the request's own credentials may read what it asks. Only
    /// bearer tokens are checked; anything else (or no answer) is `false`.
    pub fn allows(&self, authorization: &str, info: &RequestInfo) -> bool {
        let Some(token) = bearer_token(authorization) else {
            return false;
        };
        let asked = Asked {
            token: token.to_string(),
            verb: info.verb.as_str(),
            group: info.api_group.clone(),
            resource: info.resource.clone(),
            namespace: info.namespace.clone(),
        };
        let now = Instant::now();
        if let Some(&(allowed, until)) = self.lock().get(&asked)
            && now < until
        {
            return allowed;
        }
        // A JWT past its `exp` is refused by the apiserver: no review.
        let left = jwt_expiry(token).map(|exp| seconds_left(exp, SystemTime::now()));
        if left == Some(Duration::ZERO) {
            return false;
        }
        let Some(server) = self.upstream.pick() else {
            return false;
        };
        let body = review(&asked, &info.api_version);
        let allowed = match self.upstream.call(
            server,
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            Some(token),
            Some(&body),
        ) {
            Ok((201 | 200, answer)) => serde_json::from_slice::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| v["status"]["allowed"].as_bool())
                .unwrap_or(false),
            // A token the apiserver does not accept (401), or that may not
            // even ask (403): denied, remembered as a denial.
            Ok((401 | 403, _)) => false,
            Ok((status, _)) => {
                log::debug!(
                    "access review for a shared {}: status {status}",
                    asked.resource
                );
                // Not remembered: the apiserver answers the request itself.
                return false;
            }
            Err(e) => {
                log::debug!("access review for a shared {}: {e}", asked.resource);
                return false;
            }
        };
        let mut until = now + if allowed { ALLOWED_FOR } else { DENIED_FOR };
        // An allowed decision never outlives the token's own expiry, when it
        // says one (a JWT's `exp`; any size: no overflow).
        if allowed && let Some(end) = left.and_then(|left| now.checked_add(left)) {
            until = until.min(end);
        }
        let mut decided = self.lock();
        if decided.len() >= MAX_DECISIONS {
            decided.retain(|_, (_, until)| now < *until);
            if decided.len() >= MAX_DECISIONS {
                decided.clear();
            }
        }
        decided.insert(asked, (allowed, until));
        allowed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Asked, (bool, Instant)>> {
        self.decided.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_never_outlives_the_tokens_expiry() {
        use base64::Engine as _;
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let token = format!(
            "{}.{}.sig",
            encode(r#"{"alg":"RS256"}"#),
            encode(r#"{"exp":1000,"sub":"x"}"#)
        );
        assert_eq!(jwt_expiry(&token), Some(1000));
        assert_eq!(jwt_expiry("opaque-token"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), None);
        assert_eq!(
            jwt_expiry(&format!("a.{}.c", encode(r#"{"sub":"x"}"#))),
            None
        );
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(seconds_left(1000, at(940)), Duration::from_secs(60));
        assert_eq!(seconds_left(1000, at(2000)), Duration::ZERO);
    }

    #[test]
    fn the_review_asks_exactly_what_the_request_does() {
        let asked = Asked {
            token: "t".into(),
            verb: "watch",
            group: "discovery.k8s.io".into(),
            resource: "endpointslices".into(),
            namespace: "kube-system".into(),
        };
        let review: serde_json::Value = serde_json::from_slice(&review(&asked, "v1")).unwrap();
        assert_eq!(
            review["spec"]["resourceAttributes"],
            serde_json::json!({"verb": "watch", "group": "discovery.k8s.io", "version": "v1",
                "resource": "endpointslices", "namespace": "kube-system"})
        );
        assert!(
            !review.to_string().contains("\"t\""),
            "the token is not in the body"
        );
    }
}
