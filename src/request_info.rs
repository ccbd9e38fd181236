//! Classifies a request the way kube-apiserver's RequestInfo does: resource or
//! not, verb, API group and version, namespace, resource, name, subresource;
//! plus the client component (from User-Agent) and the wanted response format.
//!
//! Pure: no I/O, no failure other than a path that could escape the cache root.

use std::fmt;

/// Kubernetes verbs, as RBAC and audit logs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
    /// Any other method on a resource path (OPTIONS, ...).
    Other,
}

impl Verb {
    /// create, update, patch, delete, deletecollection: what the cloud must
    /// take whenever it can be reached.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Other => "other",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// `/api/v1/...` or `/apis/{group}/{version}/...` naming a resource.
    pub is_resource_request: bool,
    pub verb: Verb,
    /// `api` or `apis` (empty for non-resource requests).
    pub api_prefix: String,
    /// Empty for the core group.
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    /// The object's name; for a list or watch narrowed by
    /// `fieldSelector=metadata.name=X`, that X.
    pub name: String,
    /// Lower-cased HTTP method.
    pub method: String,
    /// Decoded path (non-resource requests are keyed by it).
    pub path: String,
}

/// A path segment that would be unsafe as a file or directory name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafePath(pub String);

impl fmt::Display for UnsafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid path segment {:?}", self.0)
    }
}

impl RequestInfo {
    /// Whether the request may stay open for long: watches and streaming subresources.
    pub fn is_long_running(&self) -> bool {
        self.verb == Verb::Watch
            || (self.is_resource_request
                && matches!(
                    self.subresource.as_str(),
                    "exec" | "attach" | "portforward" | "proxy" | "log"
                ))
    }
}

/// Classifies `method path?query`. `path` and `query` are still percent-encoded.
pub fn classify(method: &str, path: &str, query: &Query) -> Result<RequestInfo, UnsafePath> {
    let method_lower = method.to_ascii_lowercase();
    let mut segments = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode(raw, false);
        if decoded == "." || decoded == ".." || decoded.contains(['/', '\\', '\0']) {
            return Err(UnsafePath(decoded));
        }
        segments.push(decoded);
    }
    let decoded_path = format!("/{}", segments.join("/"));
    let non_resource = RequestInfo {
        is_resource_request: false,
        verb: match method_lower.as_str() {
            "get" | "head" => Verb::Get,
            "post" => Verb::Create,
            "put" => Verb::Update,
            "patch" => Verb::Patch,
            "delete" => Verb::Delete,
            _ => Verb::Other,
        },
        api_prefix: String::new(),
        api_group: String::new(),
        api_version: String::new(),
        namespace: String::new(),
        resource: String::new(),
        subresource: String::new(),
        name: String::new(),
        method: method_lower.clone(),
        path: decoded_path.clone(),
    };
    let (prefix, group, version, rest) = match segments.first().map(String::as_str) {
        Some("api") if segments.len() >= 3 => ("api", "", segments[1].as_str(), &segments[2..]),
        Some("apis") if segments.len() >= 4 => (
            "apis",
            segments[1].as_str(),
            segments[2].as_str(),
            &segments[3..],
        ),
        _ => return Ok(non_resource),
    };
    let mut rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let mut watch_prefix = false;
    if rest.first() == Some(&"watch") {
        watch_prefix = true;
        rest.remove(0);
        if rest.is_empty() {
            return Ok(non_resource);
        }
    }
    let mut namespace = "";
    if rest.first() == Some(&"namespaces") && rest.len() >= 2 {
        namespace = rest[1];
        // `/namespaces/{name}[/status|/finalize]` is the namespace object itself;
        // anything else after the name is a resource in that namespace.
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest.drain(..2);
        }
    }
    let resource = rest.first().copied().unwrap_or_default();
    let mut name = rest.get(1).copied().unwrap_or_default().to_string();
    let subresource = rest.get(2).copied().unwrap_or_default();

    let verb = match method_lower.as_str() {
        "get" | "head" => {
            if watch_prefix || (name.is_empty() && query.is_watch()) {
                Verb::Watch
            } else if name.is_empty() {
                Verb::List
            } else {
                Verb::Get
            }
        }
        "post" => Verb::Create,
        "put" => Verb::Update,
        "patch" => Verb::Patch,
        "delete" if name.is_empty() => Verb::DeleteCollection,
        "delete" => Verb::Delete,
        _ => Verb::Other,
    };
    if matches!(verb, Verb::List | Verb::Watch | Verb::DeleteCollection)
        && name.is_empty()
        && let Some(selected) = query.field_selector_name()
    {
        {
            if selected == "." || selected == ".." || selected.contains(['/', '\\', '\0']) {
                return Err(UnsafePath(selected));
            }
            name = selected;
        }
    }
    Ok(RequestInfo {
        is_resource_request: true,
        verb,
        api_prefix: prefix.to_string(),
        api_group: group.to_string(),
        api_version: version.to_string(),
        namespace: namespace.to_string(),
        resource: resource.to_string(),
        subresource: subresource.to_string(),
        name,
        method: method_lower,
        path: decoded_path,
    })
}

/// Decoded query parameters, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Query {
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k, true), percent_decode(v, true))
            })
            .collect();
        Query { pairs }
    }

    /// First value of a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `watch=true` (or any value Go's `strconv.ParseBool` reads as true).
    pub fn is_watch(&self) -> bool {
        self.get("watch").is_some_and(parse_bool)
    }

    /// `sendInitialEvents=true`: a streaming list (a watch whose initial events,
    /// up to an annotated bookmark, are the list).
    pub fn sends_initial_events(&self) -> bool {
        self.is_watch() && self.get("sendInitialEvents").is_some_and(parse_bool)
    }

    /// X in `fieldSelector=metadata.name=X` (alone or among other requirements).
    pub fn field_selector_name(&self) -> Option<String> {
        let selector = self.get("fieldSelector")?;
        selector.split(',').find_map(|requirement| {
            let requirement = requirement.trim();
            let value = requirement
                .strip_prefix("metadata.name==")
                .or_else(|| requirement.strip_prefix("metadata.name="))?;
            Some(value.trim().to_string())
        })
    }

    /// `timeoutSeconds` as a whole number of seconds.
    pub fn timeout_seconds(&self) -> Option<u64> {
        self.get("timeoutSeconds")?.trim().parse().ok()
    }

    /// `timeout` as a Go duration (`10s`, `1m30s`, `500ms`).
    pub fn timeout(&self) -> Option<std::time::Duration> {
        parse_go_duration(self.get("timeout")?)
    }
}

fn parse_bool(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Parses a Go `time.Duration` string with units h, m, s, ms, us, ns.
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

/// Percent-decodes; with `plus_is_space`, `+` means a space (query strings).
/// Invalid escapes are kept as written, invalid UTF-8 is replaced.
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The component a request comes from: the lower-cased User-Agent up to the
/// first `/` (`kubelet/v1.20.2 (linux/amd64)` -> `kubelet`). Empty without one.
pub fn component(user_agent: Option<&str>) -> String {
    user_agent
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, target: &str, expected: (&str, &str, &str, &str, &str, &str)) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let info = classify(method, path, &Query::parse(query)).expect(target);
        let got = (
            info.verb.as_str(),
            info.api_group.as_str(),
            info.namespace.as_str(),
            info.resource.as_str(),
            info.name.as_str(),
            info.subresource.as_str(),
        );
        assert_eq!(got, expected, "{method} {target}");
        assert!(info.is_resource_request, "{method} {target}");
    }

    #[test]
    fn classifies_resource_requests() {
        check(
            "GET",
            "/api/v1/namespaces/ns/pods/p1",
            ("get", "", "ns", "pods", "p1", ""),
        );
        check(
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&limit=500",
            ("list", "", "", "pods", "", ""),
        );
        check(
            "GET",
            "/api/v1/pods?watch=true&resourceVersion=5",
            ("watch", "", "", "pods", "", ""),
        );
        check(
            "GET",
            "/api/v1/pods?watch=1",
            ("watch", "", "", "pods", "", ""),
        );
        check(
            "GET",
            "/api/v1/pods?watch=false",
            ("list", "", "", "pods", "", ""),
        );
        check(
            "GET",
            "/api/v1/watch/namespaces/ns/pods",
            ("watch", "", "ns", "pods", "", ""),
        );
        check(
            "GET",
            "/api/v1/watch/namespaces/ns/pods/p1",
            ("watch", "", "ns", "pods", "p1", ""),
        );
        check(
            "POST",
            "/api/v1/namespaces/ns/pods",
            ("create", "", "ns", "pods", "", ""),
        );
        check(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1?timeout=10s",
            (
                "update",
                "coordination.k8s.io",
                "kube-node-lease",
                "leases",
                "edge-1",
                "",
            ),
        );
        check(
            "PATCH",
            "/api/v1/nodes/edge-1/status?timeout=10s",
            ("patch", "", "", "nodes", "edge-1", "status"),
        );
        check(
            "DELETE",
            "/api/v1/namespaces/ns/pods/p1",
            ("delete", "", "ns", "pods", "p1", ""),
        );
        check(
            "DELETE",
            "/api/v1/namespaces/ns/pods",
            ("deletecollection", "", "ns", "pods", "", ""),
        );
        check(
            "GET",
            "/apis/storage.k8s.io/v1/csinodes/edge-1",
            ("get", "storage.k8s.io", "", "csinodes", "edge-1", ""),
        );
        check("HEAD", "/api/v1/nodes/n", ("get", "", "", "nodes", "n", ""));
    }

    #[test]
    fn namespace_object_is_resource_namespaces() {
        check(
            "GET",
            "/api/v1/namespaces/kube-system",
            ("get", "", "kube-system", "namespaces", "kube-system", ""),
        );
        check(
            "GET",
            "/api/v1/namespaces",
            ("list", "", "", "namespaces", "", ""),
        );
        check(
            "PUT",
            "/api/v1/namespaces/x/finalize",
            ("update", "", "x", "namespaces", "x", "finalize"),
        );
    }

    #[test]
    fn field_selector_on_name_narrows_a_list_to_one_object() {
        check(
            "GET",
            "/api/v1/namespaces/edge/configmaps?fieldSelector=metadata.name%3Dcm1&limit=500",
            ("list", "", "edge", "configmaps", "cm1", ""),
        );
        check(
            "GET",
            "/api/v1/nodes?fieldSelector=metadata.name%3Dedge-1&watch=true",
            ("watch", "", "", "nodes", "edge-1", ""),
        );
    }

    #[test]
    fn non_resource_requests() {
        for path in [
            "/version",
            "/healthz",
            "/api",
            "/apis",
            "/api/v1",
            "/apis/apps",
            "/apis/apps/v1",
            "/openapi/v2",
            "/",
        ] {
            let info = classify("GET", path, &Query::default()).unwrap();
            assert!(!info.is_resource_request, "{path}");
            assert_eq!(info.path, path);
        }
    }

    #[test]
    fn refuses_segments_that_could_escape_the_cache_root() {
        for path in [
            "/api/v1/namespaces/../pods/x",
            "/api/v1/namespaces/ns/pods/%2E%2E",
            "/api/v1/namespaces/ns/pods/a%2Fb",
            "/api/v1/namespaces/ns/pods/a%5Cb",
            "/api/v1/namespaces/ns/pods/a%00",
        ] {
            assert!(classify("GET", path, &Query::default()).is_err(), "{path}");
        }
        let query = Query::parse("fieldSelector=metadata.name%3D..%2Fx");
        assert!(classify("GET", "/api/v1/pods", &query).is_err());
    }

    #[test]
    fn long_running_requests() {
        let watch = classify("GET", "/api/v1/pods", &Query::parse("watch=true")).unwrap();
        assert!(watch.is_long_running());
        let exec = classify(
            "POST",
            "/api/v1/namespaces/a/pods/b/exec",
            &Query::default(),
        )
        .unwrap();
        assert!(exec.is_long_running());
        let list = classify("GET", "/api/v1/pods", &Query::default()).unwrap();
        assert!(!list.is_long_running());
    }

    #[test]
    fn component_is_user_agent_up_to_slash() {
        assert_eq!(
            component(Some("kubelet/v1.20.2 (linux/amd64) kubernetes/faecb19")),
            "kubelet"
        );
        assert_eq!(component(Some("Kube-Proxy/v1")), "kube-proxy");
        assert_eq!(component(Some("coredns")), "coredns");
        assert_eq!(component(None), "");
    }

    #[test]
    fn query_decoding_and_timeouts() {
        let q =
            Query::parse("labelSelector=app%3Dweb%2Ctier+in+(a)&timeoutSeconds=300&timeout=1m30s");
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.timeout_seconds(), Some(300));
        assert_eq!(q.timeout(), Some(std::time::Duration::from_secs(90)));
        assert_eq!(
            parse_go_duration("500ms"),
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("x"), None);
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
    }
}
