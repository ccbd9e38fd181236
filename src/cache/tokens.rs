//! Service-account tokens the cloud issued, kept so that kubelet can set up
//! its pods' token volumes after an offline reboot (it keeps tokens in memory
//! only and asks again for every pod). A token is a credential: files are
//! 0600 like every cache file, and no token or body is ever logged.
//!
//! One record per component, service account and request spec (audiences and
//! bound object): `_tokens/{component}/{namespace}/{serviceaccount}/{hash}.json`,
//! holding the spec it answers, its expiry and the answer as the cloud sent it
//! (hex, since protobuf answers are binary). Pure except the clock passed in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::key::{fnv1a, is_safe_segment, stored_segment};
use crate::codec::Encoding;
use crate::codec::token::{self, TokenSpec};
use crate::request_info::{RequestInfo, Verb};

pub const TOKENS_DIR: &str = "_tokens";
/// A token this close to its expiry is not handed out any more.
pub const MIN_VALIDITY_LEFT: i64 = 10;

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`.
pub fn is_token_request(info: &RequestInfo) -> bool {
    info.is_resource_request
        && info.verb == Verb::Create
        && info.api_group.is_empty()
        && info.resource == "serviceaccounts"
        && info.subresource == "token"
        && !info.namespace.is_empty()
        && !info.name.is_empty()
}

/// Whose token a TokenRequest asks for, and the spec it asks with; `None` when
/// it is not a TokenRequest or its body cannot be read.
pub fn identify(
    info: &RequestInfo,
    component: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Option<(TokenOwner, TokenSpec)> {
    if !is_token_request(info) {
        return None;
    }
    let encoding = match content_type {
        Some(content_type) => Encoding::from_content_type(content_type)?,
        None => Encoding::Json,
    };
    let spec = token::request_spec(encoding, body).ok()?;
    let owner = TokenOwner {
        component: component.to_string(),
        namespace: info.namespace.clone(),
        service_account: info.name.clone(),
    };
    owner.dir()?;
    Some((owner, spec))
}

/// Who asked for which service account's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub component: String,
    pub namespace: String,
    pub service_account: String,
}

impl TokenOwner {
    /// The directory of this owner's records, if every name is safe as a path.
    pub fn dir(&self) -> Option<PathBuf> {
        [&self.component, &self.namespace, &self.service_account]
            .iter()
            .all(|s| is_safe_segment(s))
            .then(|| {
                PathBuf::from(TOKENS_DIR)
                    .join(stored_segment(&self.component).as_ref())
                    .join(stored_segment(&self.namespace).as_ref())
                    .join(stored_segment(&self.service_account).as_ref())
            })
    }

    /// The record file for one spec.
    pub fn record_path(&self, spec: &TokenSpec) -> Option<PathBuf> {
        Some(
            self.dir()?
                .join(format!("{:016x}.json", fnv1a(spec.key().as_bytes()))),
        )
    }
}

/// One issued token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub version: u32,
    /// `TokenSpec::key` of the request it answers (a hash collision never
    /// hands out another pod's token).
    pub spec: String,
    /// Unix seconds.
    pub expires: i64,
    /// `json` or `pb`: the encoding of `answer`.
    pub encoding: String,
    /// The cloud's answer, hex-encoded.
    pub answer: String,
}

impl TokenRecord {
    pub const VERSION: u32 = 1;

    pub fn new(spec: &TokenSpec, expires: i64, encoding: Encoding, answer: &[u8]) -> TokenRecord {
        TokenRecord {
            version: Self::VERSION,
            spec: spec.key(),
            expires,
            encoding: encoding.extension().into(),
            answer: answer.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    pub fn parse(bytes: &[u8]) -> Option<TokenRecord> {
        serde_json::from_slice::<TokenRecord>(bytes)
            .ok()
            .filter(|r| r.version == Self::VERSION)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn is_expired(&self, now: i64) -> bool {
        expired(self.expires, now)
    }

    /// The stored answer, if it answers `spec` at `now` in an encoding the
    /// client accepts.
    pub fn answer_for(
        &self,
        spec: &TokenSpec,
        now: i64,
        accepted: &[Encoding],
    ) -> Option<(Encoding, Vec<u8>)> {
        if self.spec != spec.key() || self.is_expired(now) {
            return None;
        }
        let encoding = *accepted.iter().find(|e| e.extension() == self.encoding)?;
        Some((encoding, from_hex(&self.answer)?))
    }
}

/// Whether a token expiring at `expires` is no longer handed out at `now`.
fn expired(expires: i64, now: i64) -> bool {
    expires - MIN_VALIDITY_LEFT <= now
}

/// The records kept, in memory (file -> expiry), so the autonomy report
/// counts them without reading the disk. Kept by whoever writes or removes
/// a record (the writer, the start-up scan, an expired record's reader).
#[derive(Default)]
pub struct TokenBook {
    records: Mutex<BTreeMap<PathBuf, i64>>,
}

impl TokenBook {
    pub fn kept(&self, path: &Path, expires: i64) {
        self.lock().insert(path.to_path_buf(), expires);
    }

    pub fn gone(&self, path: &Path) {
        self.lock().remove(path);
    }

    /// Every record under a directory is gone.
    pub fn forget_under(&self, dir: &Path) {
        self.lock().retain(|path, _| !path.starts_with(dir));
    }

    /// Records still valid at `now`, by component directory.
    pub fn valid_by_component(&self, now: i64) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (path, expires) in self.lock().iter() {
            if expired(*expires, now) {
                continue;
            }
            let component = path.components().nth(1);
            if let Some(component) = component.and_then(|c| c.as_os_str().to_str()) {
                *out.entry(component.to_string()).or_default() += 1;
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, i64>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::token::BoundObject;

    fn spec(uid: &str) -> TokenSpec {
        TokenSpec::new(
            vec!["api".into()],
            Some(BoundObject {
                kind: "Pod".into(),
                api_version: "v1".into(),
                name: "p".into(),
                uid: uid.into(),
            }),
        )
    }

    #[test]
    fn records_answer_only_their_own_spec_while_valid() {
        let record = TokenRecord::new(&spec("u1"), 1000, Encoding::Protobuf, &[0, 1, 0xfe]);
        let record = TokenRecord::parse(&record.encode()).unwrap();
        let both = [Encoding::Protobuf, Encoding::Json];
        assert_eq!(
            record.answer_for(&spec("u1"), 900, &both),
            Some((Encoding::Protobuf, vec![0, 1, 0xfe]))
        );
        let cases: [(&TokenSpec, i64, &[Encoding]); 4] = [
            (&spec("u2"), 900, &both),
            (&spec("u1"), 990, &both),
            (&spec("u1"), 2000, &both),
            (&spec("u1"), 900, &[Encoding::Json]),
        ];
        for (asked, now, accepted) in cases {
            assert_eq!(
                record.answer_for(asked, now, accepted),
                None,
                "{asked:?} at {now}"
            );
        }
        assert!(TokenRecord::parse(br#"{"version":9}"#).is_none());
    }

    #[test]
    fn token_requests_are_told_apart_from_other_writes() {
        use crate::request_info::{Query, classify};
        let body = br#"{"spec":{"audiences":["api"],"boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"p","uid":"u1"}}}"#;
        let cases = [
            (
                "POST",
                "/api/v1/namespaces/a/serviceaccounts/default/token",
                true,
            ),
            (
                "POST",
                "/api/v1/namespaces/a/serviceaccounts/default",
                false,
            ),
            (
                "GET",
                "/api/v1/namespaces/a/serviceaccounts/default/token",
                false,
            ),
            ("POST", "/api/v1/namespaces/a/pods/p/eviction", false),
            (
                "POST",
                "/apis/x.io/v1/namespaces/a/serviceaccounts/default/token",
                false,
            ),
        ];
        for (method, path, expected) in cases {
            let info = classify(method, path, &Query::default()).unwrap();
            assert_eq!(is_token_request(&info), expected, "{method} {path}");
            let identified = identify(&info, "kubelet", Some("application/json"), body);
            assert_eq!(identified.is_some(), expected, "{method} {path}");
        }
        let info = classify(
            "POST",
            "/api/v1/namespaces/a/serviceaccounts/default/token",
            &Query::default(),
        )
        .unwrap();
        let (owner, asked) = identify(&info, "kubelet", None, body).unwrap();
        assert_eq!(
            (owner.namespace.as_str(), owner.service_account.as_str()),
            ("a", "default")
        );
        assert_eq!(asked, spec("u1"));
        assert!(identify(&info, "kubelet", None, b"not json").is_none());
        assert!(identify(&info, "kubelet", Some("text/plain"), body).is_none());
    }

    #[test]
    fn record_paths_are_per_owner_and_spec() {
        let owner = TokenOwner {
            component: "kubelet".into(),
            namespace: "kube-system".into(),
            service_account: "coredns".into(),
        };
        let a = owner.record_path(&spec("u1")).unwrap();
        assert!(a.starts_with("_tokens/kubelet/kube-system/coredns"));
        assert_ne!(a, owner.record_path(&spec("u2")).unwrap());
        assert_eq!(a, owner.record_path(&spec("u1")).unwrap());
        let unsafe_owner = TokenOwner {
            service_account: "..".into(),
            ..owner
        };
        assert_eq!(unsafe_owner.record_path(&spec("u1")), None);
    }
}
