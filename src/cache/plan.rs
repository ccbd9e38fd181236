//! What a request would put in the cache, decided from the request alone.
//! Pure: no I/O, tested as a table.

use crate::codec::token::TokenSpec;
use crate::request_info::{Query, RequestInfo, Verb};

use super::Cache;
use super::key::{self, Collection};
use super::lists::ListShape;
use super::tokens::{self, TokenOwner};

/// What one request would put in the cache, decided from the request alone.
pub struct Plan {
    pub(super) target: PlanTarget,
}

pub(super) enum PlanTarget {
    Object(Collection),
    List {
        collection: Collection,
        shape: ListShape,
        request_continue: String,
    },
    /// A watch; with the shape of the list its initial events make up when
    /// it is a streaming list (`sendInitialEvents=true`).
    Watch {
        collection: Collection,
        initial_list: Option<ListShape>,
    },
    /// A discovery document at this request path.
    Discovery(String),
    Token {
        owner: TokenOwner,
        spec: TokenSpec,
    },
}

impl Cache {
    /// Decides from the request whether its answer is worth caching.
    pub fn plan(
        &self,
        info: &RequestInfo,
        query: &Query,
        component: &str,
        edge_cache_header: bool,
    ) -> Option<Plan> {
        plan(
            info,
            query,
            component,
            self.is_cached_component(component, edge_cache_header),
        )
    }

    /// Whether a request is a TokenRequest whose answer the cache would keep
    /// (its body must then be read first: the spec decides where it goes).
    pub fn wants_token(
        &self,
        info: &RequestInfo,
        component: &str,
        edge_cache_header: bool,
    ) -> bool {
        tokens::is_token_request(info) && self.is_cached_component(component, edge_cache_header)
    }

    /// The plan for a TokenRequest with this body (see `wants_token`).
    pub fn plan_token(
        &self,
        info: &RequestInfo,
        component: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Option<Plan> {
        let (owner, spec) = tokens::identify(info, component, content_type, body)?;
        Some(Plan {
            target: PlanTarget::Token { owner, spec },
        })
    }
}

/// What a request's answer would be stored as; `cached_component`: whether
/// the component's answers are cached at all (discovery documents always are).
pub fn plan(
    info: &RequestInfo,
    query: &Query,
    component: &str,
    cached_component: bool,
) -> Option<Plan> {
    // A dry run's answer is what the object would become, not what it is:
    // whatever its value, and whatever the verb carrying it.
    if query.get("dryRun").is_some() {
        return None;
    }
    if !info.is_resource_request {
        if info.verb != Verb::Get {
            return None;
        }
        return key::discovery_path(&info.path).map(|_| Plan {
            target: PlanTarget::Discovery(info.path.clone()),
        });
    }
    if !cached_component || !is_cacheable_resource(info) {
        return None;
    }
    let collection = Collection::for_request(component, info)?;
    let target = match info.verb {
        Verb::Get | Verb::Create | Verb::Update | Verb::Patch => PlanTarget::Object(collection),
        Verb::List => PlanTarget::List {
            collection,
            shape: shape_of(info, query),
            request_continue: query.get("continue").unwrap_or_default().to_string(),
        },
        Verb::Watch => PlanTarget::Watch {
            collection,
            initial_list: query.sends_initial_events().then(|| shape_of(info, query)),
        },
        _ => return None,
    };
    Some(Plan { target })
}

/// The list shape of a list request.
pub fn shape_of(info: &RequestInfo, query: &Query) -> ListShape {
    ListShape {
        namespace: info.namespace.clone(),
        label_selector: query
            .get("labelSelector")
            .unwrap_or_default()
            .trim()
            .to_string(),
        field_selector: query
            .get("fieldSelector")
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Resources and subresources whose answers are objects worth keeping
/// (behaviour.md section 3).
fn is_cacheable_resource(info: &RequestInfo) -> bool {
    matches!(info.subresource.as_str(), "" | "status")
        && !matches!(
            info.resource.as_str(),
            "certificatesigningrequests"
                | "subjectaccessreviews"
                | "tokenreviews"
                | "selfsubjectaccessreviews"
                | "selfsubjectrulesreviews"
                | "localsubjectaccessreviews"
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::classify;

    /// The plan in a few words.
    fn summary(plan: Option<Plan>) -> String {
        let Some(plan) = plan else {
            return "-".into();
        };
        match plan.target {
            PlanTarget::Object(c) => format!("object {}", c.dir().display()),
            PlanTarget::List {
                collection,
                shape,
                request_continue,
            } => format!(
                "list {} [{}|{}|{}] {request_continue}",
                collection.dir().display(),
                shape.namespace,
                shape.label_selector,
                shape.field_selector
            ),
            PlanTarget::Watch {
                collection,
                initial_list,
            } => format!(
                "watch {}{}",
                collection.dir().display(),
                initial_list.map_or(String::new(), |s| format!(
                    " listing [{}]",
                    s.field_selector
                ))
            ),
            PlanTarget::Discovery(path) => format!("document {path}"),
            PlanTarget::Token { .. } => "token".into(),
        }
    }

    #[test]
    fn what_a_request_would_cache() {
        #[rustfmt::skip]
        let rows: &[(&str, &str, &str, bool, &str)] = &[
            ("GET", "/api/v1/namespaces/a/pods/p", "", true, "object kubelet/pods"),
            ("GET", "/api/v1/namespaces/a/pods/p", "", false, "-"),
            ("GET", "/api/v1/namespaces/a/pods/p/status", "", true, "object kubelet/pods"),
            ("GET", "/api/v1/namespaces/a/pods/p/log", "", true, "-"),
            ("PUT", "/api/v1/nodes/n/status", "", true, "object kubelet/nodes"),
            ("PATCH", "/api/v1/namespaces/a/configmaps/c", "", true, "object kubelet/configmaps"),
            ("POST", "/api/v1/namespaces/a/configmaps", "", true, "object kubelet/configmaps"),
            ("DELETE", "/api/v1/namespaces/a/pods/p", "", true, "-"),
            ("GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dn&labelSelector=%20app%3Dweb%20", true, "list kubelet/pods [|app=web|spec.nodeName=n] "),
            ("GET", "/api/v1/namespaces/a/pods", "continue=abc", true, "list kubelet/pods [a||] abc"),
            ("GET", "/api/v1/pods", "watch=true", true, "watch kubelet/pods"),
            ("GET", "/api/v1/pods", "watch=true&sendInitialEvents=true&fieldSelector=spec.nodeName%3Dn", true, "watch kubelet/pods listing [spec.nodeName=n]"),
            ("GET", "/api/v1/pods", "sendInitialEvents=true", true, "list kubelet/pods [||] "),
            ("GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases/n", "", true, "object kubelet/leases.v1.coordination.k8s.io"),
            ("POST", "/apis/certificates.k8s.io/v1/certificatesigningrequests", "", true, "-"),
            ("POST", "/apis/authentication.k8s.io/v1/tokenreviews", "", true, "-"),
            ("POST", "/api/v1/namespaces/a/serviceaccounts/s/token", "", true, "-"),
            ("GET", "/apis", "", false, "document /apis"),
            ("GET", "/version", "", false, "document /version"),
            ("GET", "/healthz", "", true, "-"),
            ("POST", "/apis", "", true, "-"),
            ("POST", "/api/v1/namespaces/a/configmaps", "dryRun=All", true, "-"),
            ("PUT", "/api/v1/namespaces/a/configmaps/c", "dryRun=All", true, "-"),
            ("PATCH", "/api/v1/namespaces/a/configmaps/c", "fieldManager=m&dryRun=All", true, "-"),
            ("PUT", "/api/v1/nodes/n/status", "dryRun=All", true, "-"),
            ("PATCH", "/api/v1/nodes/n/status", "dryRun", true, "-"),
            ("PATCH", "/api/v1/nodes/n/status", "dryRun=", true, "-"),
            ("GET", "/api/v1/namespaces/a/pods/p", "dryRun=All", true, "-"),
            ("GET", "/api/v1/pods", "dryRun=All", true, "-"),
            ("GET", "/api/v1/pods", "watch=true&dryRun=All", true, "-"),
            ("GET", "/version", "dryRun=All", false, "-"),
            ("PATCH", "/api/v1/nodes/n/status", "dryrun=All", true, "object kubelet/nodes"),
        ];
        for &(method, path, query, cached, expected) in rows {
            let query = Query::parse(query);
            let info = classify(method, path, &query).unwrap();
            assert_eq!(
                summary(plan(&info, &query, "kubelet", cached)),
                expected,
                "{method} {path}?{query:?} cached={cached}"
            );
        }
    }
}
