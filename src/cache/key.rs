//! Where things live in the cache directory. Pure.
//!
//! `{component}/{resource}/{namespace}/{name}.{ext}` for core-group objects and
//! `{component}/{resource}.{version}.{group}/...` for other groups, so two
//! groups' resources never collide; cluster-scoped objects have no namespace
//! directory. Names starting with `_` never come from Kubernetes (its names
//! start with a letter or digit), so the hub keeps its own files under them.
//!
//! Kubernetes names reach 253 characters and a User-Agent has no limit, but a
//! file name stops at 255 bytes: a segment longer than `MAX_PLAIN_SEGMENT` is
//! stored as a prefix, `%` and a hash of the whole (`stored_segment`). Kubernetes
//! refuses `%` in names and so does `is_safe_segment`, so a shortened segment
//! never equals a plain one; the object inside keeps its real name.

use std::borrow::Cow;
use std::path::PathBuf;

use crate::codec::Encoding;
use crate::request_info::RequestInfo;

/// Longest segment stored as it is: with `.json` it still fits a 255-byte
/// file name, and it is what earlier versions stored as it is, so their
/// files stay where they were.
const MAX_PLAIN_SEGMENT: usize = 240;
/// Bytes of a longer segment kept in front of its hash, so a person can still
/// tell what a shortened file is.
const SHORTENED_PREFIX: usize = 200;
/// Separates the prefix from the hash in a shortened segment.
const SHORTENED_MARK: char = '%';

/// Whether a component, namespace or name is safe as one path segment.
pub fn is_safe_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && !segment.starts_with('_')
        && !segment
            .chars()
            .any(|c| c == '/' || c == '\\' || c == SHORTENED_MARK || c.is_control())
}

/// A safe segment as it is stored on disk: itself, or when longer than
/// `MAX_PLAIN_SEGMENT` bytes, `{prefix}%{FNV-1a 64 of the whole, 16 hex}`.
pub fn stored_segment(segment: &str) -> Cow<'_, str> {
    if segment.len() <= MAX_PLAIN_SEGMENT {
        return Cow::Borrowed(segment);
    }
    let mut cut = SHORTENED_PREFIX;
    while !segment.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!(
        "{}{SHORTENED_MARK}{:016x}",
        &segment[..cut],
        fnv1a(segment.as_bytes())
    ))
}

/// 64-bit FNV-1a: a stable, short stand-in for a long string (not a security
/// boundary: whatever is stored under it says what it is).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether an object of `kind` can belong to the resource of a collection
/// directory (`pods`, `leases.v1.coordination.k8s.io`): the resource is the
/// kind's plural as Kubernetes forms it (`Pod` -> `pods`, `Ingress` ->
/// `ingresses`, `NetworkPolicy` -> `networkpolicies`, `Endpoints` ->
/// `endpoints`), hyphens aside. An empty kind says nothing and fits. Kinds
/// whose plural is irregular are recognised by the caller from the list
/// types recorded for the collection.
pub fn kind_fits(resource_dir: &str, kind: &str) -> bool {
    if kind.is_empty() {
        return true;
    }
    let letters = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let resource = letters(resource_dir.split('.').next().unwrap_or_default());
    let kind = letters(kind);
    resource == kind
        || resource == format!("{kind}s")
        || resource == format!("{kind}es")
        || kind
            .strip_suffix('y')
            .is_some_and(|stem| resource == format!("{stem}ies"))
}

/// Kinds of the resources node components read most: an object of one of
/// these found under another resource is certainly misplaced.
const WELL_KNOWN_KINDS: &[&str] = &[
    "Pod",
    "ConfigMap",
    "Secret",
    "Node",
    "Service",
    "Endpoints",
    "EndpointSlice",
    "Lease",
    "Namespace",
    "ServiceAccount",
    "Event",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CSINode",
    "CSIDriver",
    "RuntimeClass",
    "PodTemplate",
];

/// Whether an object of `kind` is certainly not one of `resource_dir`: it
/// does not fit by the plural rules and is either an answer that is no
/// object (a `Status`, a list, a table, an event) or a well-known kind of
/// another resource. A kind whose plural is irregular (a custom resource's
/// `Person` under `people`, `PodMetrics` under metrics' `pods`) is not
/// foreign: it is served.
pub fn kind_is_foreign(resource_dir: &str, kind: &str) -> bool {
    if kind_fits(resource_dir, kind) {
        return false;
    }
    matches!(
        kind,
        "Status" | "Table" | "WatchEvent" | "PartialObjectMetadata"
    ) || kind.ends_with("List")
        || WELL_KNOWN_KINDS.contains(&kind)
}

/// One resource of one component: `{component}/{resource-dir}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Collection {
    pub component: String,
    /// `pods`, or `leases.v1.coordination.k8s.io` outside the core group.
    pub resource_dir: String,
}

impl Collection {
    /// The collection a resource request is about, if its names are safe.
    pub fn for_request(component: &str, info: &RequestInfo) -> Option<Collection> {
        if !info.is_resource_request
            || !is_safe_segment(component)
            || !is_safe_segment(&info.resource)
        {
            return None;
        }
        let resource_dir = if info.api_group.is_empty() {
            info.resource.clone()
        } else {
            format!("{}.{}.{}", info.resource, info.api_version, info.api_group)
        };
        is_safe_segment(&resource_dir).then(|| Collection {
            component: component.to_string(),
            resource_dir,
        })
    }

    pub fn dir(&self) -> PathBuf {
        PathBuf::from(stored_segment(&self.component).as_ref())
            .join(stored_segment(&self.resource_dir).as_ref())
    }

    /// The file of one object; `None` when its namespace or name is unsafe.
    pub fn object_path(&self, namespace: &str, name: &str, encoding: Encoding) -> Option<PathBuf> {
        if !is_safe_segment(name) || (!namespace.is_empty() && !is_safe_segment(namespace)) {
            return None;
        }
        let mut path = self.dir();
        if !namespace.is_empty() {
            path.push(stored_segment(namespace).as_ref());
        }
        path.push(format!("{}.{}", stored_segment(name), encoding.extension()));
        Some(path)
    }

    /// The list-shape index of this collection.
    pub fn lists_path(&self) -> PathBuf {
        lists_path_in(&self.dir())
    }
}

/// The list-shape index of a collection directory.
pub fn lists_path_in(collection_dir: &std::path::Path) -> PathBuf {
    collection_dir.join("_lists.json")
}

/// The file of a cached discovery document (`/version`, `/api`, `/apis/apps/v1`, ...).
pub fn discovery_path(path: &str) -> Option<PathBuf> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let is_discovery = matches!(
        segments.as_slice(),
        ["version"] | ["api"] | ["apis"] | ["api", _] | ["apis", _] | ["apis", _, _]
    );
    if !is_discovery
        || !segments
            .iter()
            .all(|s| is_safe_segment(s) && !s.contains('#'))
    {
        return None;
    }
    Some(PathBuf::from("_discovery").join(format!("{}.json", segments.join("#"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::{Query, classify};

    fn collection(path: &str) -> Option<Collection> {
        Collection::for_request(
            "kubelet",
            &classify("GET", path, &Query::default()).unwrap(),
        )
    }

    #[test]
    fn core_and_group_resources_get_distinct_directories() {
        assert_eq!(
            collection("/api/v1/namespaces/a/pods/p").unwrap().dir(),
            PathBuf::from("kubelet/pods")
        );
        assert_eq!(
            collection("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n")
                .unwrap()
                .dir(),
            PathBuf::from("kubelet/leases.v1.coordination.k8s.io")
        );
        assert_eq!(collection("/version"), None);
    }

    #[test]
    fn object_paths_follow_the_original_layout() {
        let pods = collection("/api/v1/pods").unwrap();
        assert_eq!(
            pods.object_path("edge", "p1", Encoding::Json),
            Some(PathBuf::from("kubelet/pods/edge/p1.json"))
        );
        let nodes = collection("/api/v1/nodes").unwrap();
        assert_eq!(
            nodes.object_path("", "edge-1", Encoding::Json),
            Some(PathBuf::from("kubelet/nodes/edge-1.json"))
        );
        assert_eq!(
            nodes.lists_path(),
            PathBuf::from("kubelet/nodes/_lists.json")
        );
    }

    #[test]
    fn unsafe_names_have_no_path() {
        let pods = collection("/api/v1/pods").unwrap();
        for (namespace, name) in [
            ("a", ".."),
            ("..", "x"),
            ("a", "x/y"),
            ("a", "_lists"),
            ("a", ""),
            ("a", "x\\y"),
            ("a", "x\ny"),
            ("a", "x%y"),
        ] {
            assert_eq!(
                pods.object_path(namespace, name, Encoding::Json),
                None,
                "{namespace}/{name}"
            );
        }
        assert!(
            Collection::for_request(
                "../x",
                &classify("GET", "/api/v1/pods", &Query::default()).unwrap()
            )
            .is_none()
        );
        assert!(
            Collection::for_request(
                "_x",
                &classify("GET", "/api/v1/pods", &Query::default()).unwrap()
            )
            .is_none()
        );
    }

    #[test]
    fn names_too_long_for_a_file_name_are_shortened_with_a_hash() {
        let pods = collection("/api/v1/pods").unwrap();
        let file = |name: &str| {
            pods.object_path("a", name, Encoding::Json)
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        // Up to 240 bytes, a name is its own file name (as it always was).
        let plain = "p".repeat(240);
        assert_eq!(file(&plain), format!("{plain}.json"));
        // Kubernetes' longest name, and two that differ only past the prefix.
        let longest = format!("{}a", "p".repeat(252));
        let other = format!("{}b", "p".repeat(252));
        for name in [&longest, &other] {
            let stored = file(name);
            assert!(stored.len() <= 255 - "_tmp.".len(), "{stored}");
            assert!(stored.starts_with(&"p".repeat(200)));
            assert!(stored.contains('%'), "a shortened name is marked: {stored}");
            assert_eq!(stored, file(name), "deterministic");
        }
        assert_ne!(file(&longest), file(&other));
        // A multi-byte character across the cut is kept whole.
        let wide = format!("x{}", "é".repeat(150));
        assert!(file(&wide).starts_with(&format!("x{}%", "é".repeat(99))));
        // A component from a very long User-Agent gets a directory that fits.
        let agent = "a".repeat(1000);
        let long_component = Collection::for_request(
            &agent,
            &classify("GET", "/api/v1/pods", &Query::default()).unwrap(),
        )
        .unwrap();
        let dir = long_component.dir();
        let first = dir.iter().next().unwrap().to_string_lossy().into_owned();
        assert!(first.len() < 255 && first.contains('%'), "{first}");
    }

    #[test]
    fn which_kinds_fit_which_resources() {
        #[rustfmt::skip]
        let rows: &[(&str, &str, bool)] = &[
            ("pods", "Pod", true),
            ("pods", "", true),
            ("configmaps", "ConfigMap", true),
            ("endpoints", "Endpoints", true),
            ("ingresses.v1.networking.k8s.io", "Ingress", true),
            ("networkpolicies.v1.networking.k8s.io", "NetworkPolicy", true),
            ("runtimeclasses.v1.node.k8s.io", "RuntimeClass", true),
            ("leases.v1.coordination.k8s.io", "Lease", true),
            ("network-attachment-definitions.v1.k8s.cni.cncf.io", "NetworkAttachmentDefinition", true),
            ("pods", "ConfigMap", false),
            ("pods", "PodList", false),
            ("pods", "Status", false),
            ("configmaps", "Secret", false),
            ("podtemplates", "Pod", false),
        ];
        for &(resource_dir, kind, fits) in rows {
            assert_eq!(
                kind_fits(resource_dir, kind),
                fits,
                "{kind} in {resource_dir}"
            );
        }
    }

    #[test]
    fn which_kinds_are_certainly_foreign() {
        #[rustfmt::skip]
        let rows: &[(&str, &str, bool)] = &[
            ("pods", "Pod", false),
            ("pods", "ConfigMap", true),
            ("pods", "PodList", true),
            ("pods", "Status", true),
            ("configmaps", "Secret", true),
            ("podtemplates", "Pod", true),
            ("people.v1.example.com", "Person", false),
            ("pods.v1beta1.metrics.k8s.io", "PodMetrics", false),
            ("widgets.v1.example.com", "Gadget", false),
        ];
        for &(resource_dir, kind, foreign) in rows {
            assert_eq!(
                kind_is_foreign(resource_dir, kind),
                foreign,
                "{kind} in {resource_dir}"
            );
        }
    }

    #[test]
    fn discovery_documents() {
        assert_eq!(
            discovery_path("/version"),
            Some(PathBuf::from("_discovery/version.json"))
        );
        assert_eq!(
            discovery_path("/apis/apps/v1"),
            Some(PathBuf::from("_discovery/apis#apps#v1.json"))
        );
        assert_eq!(
            discovery_path("/api/v1"),
            Some(PathBuf::from("_discovery/api#v1.json"))
        );
        assert_eq!(discovery_path("/healthz"), None);
        assert_eq!(discovery_path("/api/v1/pods"), None);
    }
}
