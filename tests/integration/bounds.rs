//! Numbers in a request URL (issue "no input is fatal"): what kube-apiserver
//! refuses with 400 the hub refuses itself with a `Status` and never forwards;
//! huge but valid numbers are served, with the hub's own deadline bounded;
//! the hub keeps serving afterwards.
//!
//! Contents:
//! - refused: `limit` and `timeoutSeconds` that are not int64 on a list or
//!   watch, a `timeout` that is not a Go duration
//! - served: the largest int64 `limit` and `timeoutSeconds`, the longest Go
//!   duration, a negative `timeout`

use std::time::Duration;

use crate::support::client::{self, header};
use crate::support::{Behaviour, FakeApiserver, Hub, TestPki};

const WAIT: Duration = Duration::from_secs(10);
const PODS: &str = "/api/v1/pods";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1";

#[test]
fn numbers_the_apiserver_refuses_are_refused_and_huge_ones_served() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        PODS,
        Behaviour::ok_json(
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":[]}"#,
        ),
    );
    fake.route(
        "PUT",
        LEASE,
        Behaviour::ok_json(r#"{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"edge-1","namespace":"kube-node-lease","resourceVersion":"6"}}"#),
    );
    let mut hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    let send = |method: &str, target: &str| {
        client::request(
            method,
            &format!("{}{target}", hub.proxy_url()),
            &[
                ("User-Agent", "kubectl/v1.32.4"),
                ("Content-Type", "application/json"),
            ],
            if method == "PUT" { b"{}" } else { b"" },
        )
    };

    for (method, target, message) in [
        ("GET", "/api/v1/pods?limit=abc", r#"invalid limit "abc""#),
        (
            "GET",
            "/api/v1/pods?limit=9223372036854775808",
            "out of the range",
        ),
        (
            "GET",
            "/api/v1/pods?watch=1&timeoutSeconds=18446744073709551615",
            "invalid timeoutSeconds",
        ),
        (
            "GET",
            "/api/v1/pods?timeoutSeconds=1.5",
            "not a whole number",
        ),
        ("PUT", &format!("{LEASE}?timeout=10"), "invalid timeout"),
        (
            "PUT",
            &format!("{LEASE}?timeout=3000000h"),
            "invalid timeout",
        ),
    ] {
        let (status, headers, body) = send(method, target);
        assert_eq!(status, 400, "{method} {target}");
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        let status_body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status_body["kind"], "Status", "{target}");
        assert_eq!(status_body["reason"], "BadRequest", "{target}");
        let said = status_body["message"].as_str().unwrap_or_default();
        assert!(said.contains(message), "{target}: {said}");
    }
    assert!(
        fake.requests_matching(|r| r.path == PODS || r.path == LEASE)
            .is_empty(),
        "a refused request was forwarded"
    );

    for (method, target) in [
        ("GET", "/api/v1/pods?limit=9223372036854775807"),
        (
            "GET",
            "/api/v1/pods?limit=-1&timeoutSeconds=9223372036854775807",
        ),
        ("GET", "/api/v1/pods?timeoutSeconds=-9223372036854775808"),
        ("PUT", &format!("{LEASE}?timeout=2562047h47m16.854775807s")),
        ("PUT", &format!("{LEASE}?timeout=-1s")),
    ] {
        let (status, _, body) = send(method, target);
        assert_eq!(
            status,
            200,
            "{method} {target}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let forwarded = fake.wait_for_request_count(|r| r.path == PODS || r.path == LEASE, 5, WAIT);
    assert_eq!(forwarded.len(), 5);
    assert!(hub.is_running());
}
