//! Classifies a request the way kube-apiserver's RequestInfo does: resource or
//! not, verb, API group and version, namespace, resource, name, subresource;
//! plus the client component (from User-Agent) and the wanted response format.
//!
//! Pure: no I/O. A request is refused (400) for a path that could escape the
//! cache root, or for a query parameter kube-apiserver itself would refuse
//! (`timeoutSeconds`, `limit`, `timeout` that do not parse): the hub then
//! never acts on a number it misread. Numbers that parse are used clamped.

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

/// Why a request cannot be classified: the hub answers 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// A path segment that would be unsafe as a file or directory name.
    UnsafePath(String),
    /// A query parameter kube-apiserver would refuse, with its value and why.
    Parameter {
        name: &'static str,
        value: String,
        why: &'static str,
    },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::UnsafePath(segment) => write!(f, "invalid path segment {segment:?}"),
            Invalid::Parameter { name, value, why } => {
                write!(f, "invalid {name} {value:?} in the request URL: {why}")
            }
        }
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
pub fn classify(method: &str, path: &str, query: &Query) -> Result<RequestInfo, Invalid> {
    let method_lower = method.to_ascii_lowercase();
    let mut segments = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode(raw, false);
        if decoded == "." || decoded == ".." || decoded.contains(['/', '\\', '\0']) {
            return Err(Invalid::UnsafePath(decoded));
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
        _ => {
            query.check(&non_resource)?;
            return Ok(non_resource);
        }
    };
    let mut rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let mut watch_prefix = false;
    if rest.first() == Some(&"watch") {
        watch_prefix = true;
        rest.remove(0);
        if rest.is_empty() {
            query.check(&non_resource)?;
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
                return Err(Invalid::UnsafePath(selected));
            }
            name = selected;
        }
    }
    let info = RequestInfo {
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
    };
    query.check(&info)?;
    Ok(info)
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

    /// `watch=true`: as kube-apiserver reads a boolean parameter, any value
    /// but `0` and `false` (any case), the empty one included.
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

    /// `timeoutSeconds` as a whole number of seconds; a negative one is 0
    /// (no timeout of the client's own). `None` when absent or not a number.
    pub fn timeout_seconds(&self) -> Option<u64> {
        let seconds = parse_int64(self.get("timeoutSeconds")?).ok()?;
        Some(u64::try_from(seconds).unwrap_or(0))
    }

    /// `timeout` as a Go duration (`10s`, `1m30s`, `500ms`); a negative one
    /// is zero (no timeout of the client's own). `None` when absent or invalid.
    pub fn timeout(&self) -> Option<std::time::Duration> {
        parse_go_duration(self.get("timeout")?).ok()
    }

    /// Refuses what kube-apiserver refuses with 400 before doing anything:
    /// list options that do not parse as int64 (`timeoutSeconds`, `limit`,
    /// on the verbs that read list options), and a `timeout` that is not a Go
    /// duration (on requests that are not long-running, the only ones the
    /// apiserver reads it on).
    fn check(&self, info: &RequestInfo) -> Result<(), Invalid> {
        let reads_list_options = info.is_resource_request
            && matches!(info.verb, Verb::List | Verb::Watch | Verb::DeleteCollection);
        if reads_list_options {
            for name in ["timeoutSeconds", "limit"] {
                if let Some(value) = self.get(name) {
                    parse_int64(value).map_err(|why| Invalid::Parameter {
                        name,
                        value: value.to_string(),
                        why,
                    })?;
                }
            }
        }
        if !info.is_long_running()
            && let Some(value) = self.get("timeout")
            && !value.is_empty()
        {
            parse_go_duration(value).map_err(|why| Invalid::Parameter {
                name: "timeout",
                value: value.to_string(),
                why,
            })?;
        }
        Ok(())
    }
}

/// A boolean parameter as kube-apiserver converts one: only `0` and `false`
/// (any case) are false.
pub fn parse_bool(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

/// An integer parameter as Go's `strconv.ParseInt(value, 10, 64)` reads it:
/// an optional sign and decimal digits, nothing else, within int64.
pub fn parse_int64(value: &str) -> Result<i64, &'static str> {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a whole number");
    }
    value
        .parse()
        .map_err(|_| "out of the range of a 64-bit integer")
}

/// Parses a Go `time.Duration` string as Go's `time.ParseDuration` does: an
/// optional sign, then numbers (fractions allowed) each with a unit among h,
/// m, s, ms, us (µs, μs), ns; `0` alone needs none. Anything past about 292
/// years (int64 nanoseconds) is an error, as in Go. A negative duration is
/// returned as zero, which is what it means to the hub.
pub fn parse_go_duration(text: &str) -> Result<std::time::Duration, &'static str> {
    const INVALID: &str = "not a duration such as 30s, 1m30s or 500ms";
    const OVERFLOW: u128 = 1 << 63;
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(INVALID);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let whole = &rest[..whole_len];
        rest = &rest[whole_len..];
        let mut fraction = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let len = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            fraction = &after_dot[..len];
            rest = &after_dot[len..];
        } else if whole.is_empty() {
            return Err(INVALID);
        }
        if whole.is_empty() && fraction.is_empty() {
            return Err(INVALID);
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit: u128 = match &rest[..unit_len] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ns" => 1,
            "" => return Err("a number without a unit (h, m, s, ms, us, ns)"),
            _ => return Err("an unknown unit (not h, m, s, ms, us, ns)"),
        };
        rest = &rest[unit_len..];
        // Leading zeros aside, more than 19 digits overflow whatever the unit.
        let whole = whole.trim_start_matches('0');
        if whole.len() > 19 {
            return Err(INVALID);
        }
        let whole: u128 = whole.parse().unwrap_or(0);
        // Digits past the 18th are below a nanosecond even for hours.
        let fraction = &fraction[..fraction.len().min(18)];
        let scale = 10u128.pow(fraction.len() as u32);
        let fraction: u128 = fraction.parse().unwrap_or(0);
        total = whole
            .checked_mul(nanos_per_unit)
            .and_then(|n| n.checked_add(fraction * nanos_per_unit / scale))
            .and_then(|n| total.checked_add(n))
            .filter(|&n| n <= OVERFLOW)
            .ok_or(INVALID)?;
    }
    if negative {
        return Ok(std::time::Duration::ZERO);
    }
    if total >= OVERFLOW {
        return Err(INVALID);
    }
    Ok(std::time::Duration::from_nanos(total as u64))
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

/// The token of an `Authorization: Bearer` value (scheme matched without
/// regard to case, RFC 9110 section 11.1); `None` for another scheme or an
/// empty token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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

    #[test]
    fn only_bearer_tokens_are_read_as_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token(" bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

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
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
    }

    #[test]
    fn integers_parse_as_go_parse_int() {
        for (text, want) in [
            ("0", Some(0)),
            ("500", Some(500)),
            ("+5", Some(5)),
            ("-1", Some(-1)),
            ("007", Some(7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("18446744073709551615", None),
            ("-9223372036854775809", None),
            ("99999999999999999999999999", None),
            ("", None),
            ("+", None),
            ("-", None),
            ("+-1", None),
            (" 5", None),
            ("5 ", None),
            ("1e3", None),
            ("1.0", None),
            ("0x10", None),
            ("1_000", None),
            ("abc", None),
            ("\u{661}", None),
        ] {
            assert_eq!(parse_int64(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn durations_parse_as_go_parse_duration() {
        use std::time::Duration;
        let ms = Duration::from_millis;
        for (text, want) in [
            ("0", Some(Duration::ZERO)),
            ("+0", Some(Duration::ZERO)),
            ("-0", Some(Duration::ZERO)),
            ("0s", Some(Duration::ZERO)),
            ("30s", Some(ms(30_000))),
            ("1m30s", Some(ms(90_000))),
            ("500ms", Some(ms(500))),
            ("1.5h", Some(ms(5_400_000))),
            (".5s", Some(ms(500))),
            ("1.s", Some(ms(1000))),
            ("1h1m1s1ms1us1ns", Some(Duration::new(3661, 1_001_001))),
            ("2\u{b5}s", Some(Duration::from_nanos(2000))),
            ("2\u{3bc}s", Some(Duration::from_nanos(2000))),
            ("0.000000001s", Some(Duration::from_nanos(1))),
            ("1.0000000000000000000000001s", Some(ms(1000))),
            ("00000000000000000000000001s", Some(ms(1000))),
            // Negative: no timeout of the client's own.
            ("-5s", Some(Duration::ZERO)),
            (
                "2562047h47m16.854775807s",
                Some(Duration::from_nanos(i64::MAX as u64)),
            ),
            ("2562047h47m16.854775808s", None),
            ("9223372036854775808ns", None),
            ("99999999999999999999h", None),
            ("1e3s", None),
            ("10", None),
            ("", None),
            ("-", None),
            ("s", None),
            (".s", None),
            ("1.2.3s", None),
            ("1x", None),
            ("1S", None),
            (" 1s", None),
            ("1s ", None),
            ("x", None),
        ] {
            assert_eq!(parse_go_duration(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn booleans_read_as_kube_apiserver_reads_them() {
        for (value, want) in [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("", true),
            ("TRUE", true),
            ("0", false),
            ("false", false),
            ("False", false),
            ("FALSE", false),
        ] {
            assert_eq!(
                Query::parse(&format!("watch={value}")).is_watch(),
                want,
                "{value:?}"
            );
        }
        assert!(!Query::parse("").is_watch());
    }

    /// `(method, target, refused)`: what kube-apiserver answers 400 to, the
    /// hub refuses; huge but valid numbers pass.
    #[test]
    fn refuses_numbers_the_apiserver_refuses() {
        for (method, target, refused) in [
            ("GET", "/api/v1/pods?limit=500", false),
            ("GET", "/api/v1/pods?limit=-1", false),
            ("GET", "/api/v1/pods?limit=9223372036854775807", false),
            ("GET", "/api/v1/pods?limit=abc", true),
            ("GET", "/api/v1/pods?limit=", true),
            ("GET", "/api/v1/pods?limit=1.5", true),
            ("GET", "/api/v1/pods?limit=9223372036854775808", true),
            (
                "GET",
                "/api/v1/pods?watch=1&timeoutSeconds=9223372036854775807",
                false,
            ),
            (
                "GET",
                "/api/v1/pods?watch=1&timeoutSeconds=18446744073709551615",
                true,
            ),
            ("GET", "/api/v1/watch/pods?timeoutSeconds=abc", true),
            ("GET", "/api/v1/pods?timeoutSeconds=%2B30", false),
            ("GET", "/api/v1/pods?timeoutSeconds=+30", true),
            ("DELETE", "/api/v1/namespaces/a/pods?limit=x", true),
            // A single object's GET reads no list options.
            (
                "GET",
                "/api/v1/namespaces/a/pods/p?limit=x&timeoutSeconds=y",
                false,
            ),
            ("POST", "/api/v1/namespaces/a/pods?limit=x", false),
            ("PUT", "/api/v1/nodes/n?timeout=10s", false),
            ("PUT", "/api/v1/nodes/n?timeout=-10s", false),
            ("PUT", "/api/v1/nodes/n?timeout=", false),
            ("PUT", "/api/v1/nodes/n?timeout=10", true),
            ("PUT", "/api/v1/nodes/n?timeout=1000000h", false),
            ("PUT", "/api/v1/nodes/n?timeout=3000000h", true),
            ("GET", "/version?timeout=abc", true),
            // kube-apiserver reads no timeout on long-running requests.
            ("GET", "/api/v1/pods?watch=1&timeout=abc", false),
            ("GET", "/api/v1/namespaces/a/pods/p/log?timeout=abc", false),
        ] {
            let (path, query) = target.split_once('?').unwrap();
            let result = classify(method, path, &Query::parse(query));
            assert_eq!(result.is_err(), refused, "{method} {target}: {result:?}");
            if let Err(e) = result {
                assert!(
                    matches!(e, Invalid::Parameter { .. }),
                    "{method} {target}: {e}"
                );
            }
        }
    }

    #[test]
    fn numbers_that_parse_are_clamped() {
        for (query, seconds) in [
            ("timeoutSeconds=30", Some(30)),
            ("timeoutSeconds=-30", Some(0)),
            ("timeoutSeconds=9223372036854775807", Some(i64::MAX as u64)),
            ("timeoutSeconds=18446744073709551615", None),
            ("timeoutSeconds=x", None),
            ("", None),
        ] {
            assert_eq!(Query::parse(query).timeout_seconds(), seconds, "{query}");
        }
        assert_eq!(
            Query::parse("timeout=-1s").timeout(),
            Some(std::time::Duration::ZERO)
        );
        assert_eq!(Query::parse("timeout=abc").timeout(), None);
    }

    #[test]
    fn refusals_say_what_and_why() {
        let e = classify("GET", "/api/v1/pods", &Query::parse("limit=abc")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid limit \"abc\" in the request URL: not a whole number"
        );
    }

    /// Any target: classification never panics, never names a directory
    /// that escapes, and a refusal is a path or a parameter it can name.
    #[test]
    fn generated_requests_never_panic_nor_escape() {
        const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
        let seeds = [
            "/api/v1/namespaces/kube-system/pods/p1?resourceVersion=0",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&limit=500&timeoutSeconds=300",
            "/api/v1/watch/namespaces/ns/configmaps?fieldSelector=metadata.name%3Dcm1",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1?timeout=10s",
            "/api/v1/nodes?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&timeout=1m30s",
            "/api/v1/namespaces/a/pods/b/log?follow=true",
            "/apis/apps/v1?timeout=32s",
            "/version",
        ];
        let mut method = 0;
        crate::fuzz::run_text(0x5eed_0001, &seeds, 20_000, |target| {
            method = (method + 1) % METHODS.len();
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let query = Query::parse(query);
            let _ = (
                query.timeout(),
                query.timeout_seconds(),
                query.sends_initial_events(),
            );
            let _ = component(Some(target));
            match classify(METHODS[method], path, &query) {
                Ok(info) => {
                    for segment in [
                        &info.api_group,
                        &info.api_version,
                        &info.namespace,
                        &info.resource,
                        &info.name,
                        &info.subresource,
                    ] {
                        assert!(
                            segment != "."
                                && segment != ".."
                                && !segment.contains(['/', '\\', '\0']),
                            "{target:?}: {segment:?}"
                        );
                    }
                    assert!(info.path.starts_with('/'));
                    assert!(!info.path.split('/').any(|s| s == ".." || s == "."));
                }
                Err(Invalid::UnsafePath(_)) => {}
                Err(Invalid::Parameter { name, value, .. }) => {
                    assert_eq!(query.get(name), Some(value.as_str()));
                }
            }
        });
    }
}
