//! Discovery documents in the types current clients negotiate. Pure.
//!
//! Since 1.30 clients ask `/api` and `/apis` for the aggregated document
//! (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`)
//! and fall back to the plain per-group documents when the server answers the
//! plain type. The cache keeps each type in its own file and answers offline
//! only in a type the client accepts, with the Content-Type it was served in.

use std::path::PathBuf;

use super::key;
use crate::codec::media::MediaRange;

const AGGREGATED_GROUP: &str = "apidiscovery.k8s.io";
const AGGREGATED_KIND: &str = "APIGroupDiscoveryList";
/// Aggregated discovery versions the hub keeps (v2beta1: 1.26–1.29, v2: 1.30+).
const AGGREGATED_VERSIONS: [&str; 2] = ["v2", "v2beta1"];

/// One type of discovery document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentType {
    /// `application/json`: `/version`, `APIVersions`, `APIGroupList`, `APIResourceList`.
    Plain,
    /// `APIGroupDiscoveryList` in JSON, of one `apidiscovery.k8s.io` version.
    Aggregated(&'static str),
}

impl DocumentType {
    /// The type of a response with this Content-Type, if the cache keeps it.
    pub fn from_content_type(content_type: &str) -> Option<DocumentType> {
        let media = MediaRange::parse(content_type);
        match media.essence.as_str() {
            "application/json" => document_type(&media),
            _ => None,
        }
    }

    pub fn content_type(self) -> String {
        match self {
            DocumentType::Plain => "application/json".into(),
            DocumentType::Aggregated(version) => {
                format!("application/json;g={AGGREGATED_GROUP};v={version};as={AGGREGATED_KIND}")
            }
        }
    }

    /// The file of a document of this type at `path`; aggregated documents
    /// exist only for `/api` and `/apis`.
    pub fn file(self, path: &str) -> Option<PathBuf> {
        let plain = key::discovery_path(path)?;
        match self {
            DocumentType::Plain => Some(plain),
            DocumentType::Aggregated(version) => {
                let trimmed = path.trim_matches('/');
                matches!(trimmed, "api" | "apis")
                    .then(|| plain.with_file_name(format!("{trimmed}.apidiscovery-{version}.json")))
            }
        }
    }

    /// Every type the cache may hold, for "is anything cached here".
    pub const ALL: [DocumentType; 3] = [
        DocumentType::Plain,
        DocumentType::Aggregated("v2"),
        DocumentType::Aggregated("v2beta1"),
    ];
}

/// The document types a client accepts, most preferred first (Accept order).
/// No Accept header, `*/*` and `application/*` accept the plain type.
pub fn accepted(accept: Option<&str>) -> Vec<DocumentType> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return vec![DocumentType::Plain];
    };
    let mut out = Vec::new();
    for media in MediaRange::list(accept) {
        let wanted = match media.essence.as_str() {
            "application/json" => document_type(&media),
            "*/*" | "application/*" if media.parameter("as").is_none() => Some(DocumentType::Plain),
            _ => None,
        };
        if let Some(wanted) = wanted.filter(|w| !out.contains(w)) {
            out.push(wanted);
        }
    }
    out
}

/// The type an `application/json` range names: plain without `as`,
/// aggregated for `as=APIGroupDiscoveryList` of a known version, else none.
fn document_type(media: &MediaRange) -> Option<DocumentType> {
    match media.parameter("as") {
        None => Some(DocumentType::Plain),
        Some(AGGREGATED_KIND) if media.parameter("g") == Some(AGGREGATED_GROUP) => {
            let version = media.parameter("v")?;
            AGGREGATED_VERSIONS
                .iter()
                .find(|v| **v == version)
                .map(|v| DocumentType::Aggregated(v))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_1_35: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    #[test]
    fn response_types_the_cache_keeps() {
        let cases = [
            ("application/json", Some(DocumentType::Plain)),
            ("application/json; charset=utf-8", Some(DocumentType::Plain)),
            (
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                Some(DocumentType::Aggregated("v2")),
            ),
            (
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
                Some(DocumentType::Aggregated("v2beta1")),
            ),
            (
                "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList",
                None,
            ),
            (
                "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                None,
            ),
            ("application/json;as=Table;g=meta.k8s.io;v=v1", None),
            ("text/plain", None),
        ];
        for (content_type, expected) in cases {
            assert_eq!(
                DocumentType::from_content_type(content_type),
                expected,
                "{content_type}"
            );
        }
        for kind in DocumentType::ALL {
            assert_eq!(
                DocumentType::from_content_type(&kind.content_type()),
                Some(kind)
            );
        }
    }

    #[test]
    fn accepted_types_in_the_clients_order() {
        use DocumentType::*;
        let cases: [(Option<&str>, &[DocumentType]); 6] = [
            (None, &[Plain]),
            (
                Some(KUBECTL_1_35),
                &[Aggregated("v2"), Aggregated("v2beta1"), Plain],
            ),
            (
                Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
                &[Aggregated("v2")],
            ),
            (
                Some(
                    "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
                ),
                &[Plain],
            ),
            (Some("*/*"), &[Plain]),
            (Some("application/yaml"), &[]),
        ];
        for (accept, expected) in cases {
            assert_eq!(accepted(accept), expected, "{accept:?}");
        }
    }

    #[test]
    fn each_type_has_its_own_file() {
        assert_eq!(
            DocumentType::Plain.file("/apis"),
            Some(PathBuf::from("_discovery/apis.json"))
        );
        assert_eq!(
            DocumentType::Aggregated("v2").file("/apis"),
            Some(PathBuf::from("_discovery/apis.apidiscovery-v2.json"))
        );
        assert_eq!(
            DocumentType::Aggregated("v2").file("/api/"),
            Some(PathBuf::from("_discovery/api.apidiscovery-v2.json"))
        );
        assert_eq!(DocumentType::Aggregated("v2").file("/apis/apps/v1"), None);
        assert_eq!(DocumentType::Aggregated("v2").file("/version"), None);
    }
}
