//! Where things live in the cache directory. Pure.
//!
//! `{component}/{resource}/{namespace}/{name}.{ext}` for core-group objects and
//! `{component}/{resource}.{version}.{group}/...` for other groups, so two
//! groups' resources never collide; cluster-scoped objects have no namespace
//! directory. Names starting with `_` never come from Kubernetes (its names
//! start with a letter or digit), so the hub keeps its own files under them.

use std::path::PathBuf;

use crate::codec::Encoding;
use crate::request_info::RequestInfo;

/// Longest name kept as a file (file names are limited to 255 bytes).
const MAX_SEGMENT: usize = 240;

/// Whether a component, namespace or name is safe as one path segment.
pub fn is_safe_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= MAX_SEGMENT
        && segment != "."
        && segment != ".."
        && !segment.starts_with('_')
        && !segment
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
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
        PathBuf::from(&self.component).join(&self.resource_dir)
    }

    /// The file of one object; `None` when its namespace or name is unsafe.
    pub fn object_path(&self, namespace: &str, name: &str, encoding: Encoding) -> Option<PathBuf> {
        if !is_safe_segment(name) || (!namespace.is_empty() && !is_safe_segment(namespace)) {
            return None;
        }
        let mut path = self.dir();
        if !namespace.is_empty() {
            path.push(namespace);
        }
        path.push(format!("{name}.{}", encoding.extension()));
        Some(path)
    }

    /// The list-shape index of this collection.
    pub fn lists_path(&self) -> PathBuf {
        self.dir().join("_lists.json")
    }
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
        ] {
            assert_eq!(
                pods.object_path(namespace, name, Encoding::Json),
                None,
                "{namespace}/{name}"
            );
        }
        assert_eq!(
            pods.object_path("a", &"n".repeat(300), Encoding::Json),
            None
        );
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
