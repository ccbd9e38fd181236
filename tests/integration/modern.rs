//! What current nodes (Kubernetes 1.30–1.37) ask of the hub, through the real
//! binary and the fake apiserver: streaming lists online and offline,
//! service-account tokens after an offline reboot, streams from an apiserver
//! that goes silent, and aggregated discovery.
//!
//! Contents:
//! - streaming lists online: the initial events are a complete list (JSON and protobuf)
//! - streaming lists offline: ADDED + annotated bookmark, also after a restart offline;
//!   a LIST of a shape learned only from a streaming list; unknown shapes get a 4xx first
//! - an apiserver that ignores `sendInitialEvents` (1.20): its events are plain watch events
//! - before the first probe: a streaming list is answered from the cache at once
//! - TokenRequests: the cloud's token answered offline, never an expired one
//! - a silent apiserver: its relayed streams end once it is marked unhealthy
//! - aggregated discovery: served only to clients that accept it

use std::time::Duration;

use serde_json::Value;

use crate::support::client::{self, RawStream};
use crate::support::fake_apiserver::TokenIssuer;
use crate::support::k8s_wire::{self, Encoding};
use crate::support::{Behaviour, FakeApiserver, Hub, StreamEnd, TestPki, wait_until};

const WAIT: Duration = Duration::from_secs(15);
const KUBELET: &str = "kubelet/v1.35.0 (linux/amd64) kubernetes/66452049";
const PODS_ON_EDGE_1: &str = "/api/v1/pods?allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Dedge-1&resourceVersion=&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=2&watch=true";
const PLAIN_POD_LIST: &str = "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1";

fn pod(encoding: Encoding, name: &str, rv: u64) -> Vec<u8> {
    match encoding {
        Encoding::Json => k8s_wire::json_pod("default", name, rv, "edge-1").into_bytes(),
        Encoding::Protobuf => k8s_wire::pb_pod("default", name, rv, "edge-1"),
    }
}

fn pod_file(hub: &Hub, encoding: Encoding, name: &str) -> std::path::PathBuf {
    let extension = match encoding {
        Encoding::Json => "json",
        Encoding::Protobuf => "pb",
    };
    hub.cache_dir()
        .join(format!("kubelet/pods/default/{name}.{extension}"))
}

/// A streaming list answered by the fake whose current pods are `names`.
fn pods_world(encoding: Encoding, names: &[(&str, u64)], list_rv: u64) -> Behaviour {
    Behaviour::streaming_list(
        encoding,
        "Pod",
        "v1",
        names.iter().map(|(n, rv)| pod(encoding, n, *rv)).collect(),
        list_rv,
        Vec::new(),
        StreamEnd::Finish,
    )
}

fn hub_for(fake: &FakeApiserver, pki: &TestPki, extra: &[&str]) -> Hub {
    let mut args = Hub::args_for(&[fake], pki);
    args.extend(extra.iter().map(|s| s.to_string()));
    Hub::start(&args)
}

/// Reads a whole watch answer (bounded by the request's own `timeoutSeconds`).
fn watch_body(hub: &Hub, path: &str, encoding: Encoding) -> (u16, Vec<u8>) {
    let mut stream = RawStream::get(
        &format!("{}{path}", hub.proxy_url()),
        &[("User-Agent", KUBELET), ("Accept", encoding.accept())],
    );
    let status = stream.status();
    (status, stream.read_to_end(WAIT))
}

/// `(type, name, resourceVersion, initial-events-end annotation)` per event.
fn events(encoding: Encoding, body: &[u8]) -> Vec<(String, String, String, bool)> {
    match encoding {
        Encoding::Json => k8s_wire::json_events(body)
            .unwrap_or_else(|| panic!("not JSON events: {}", String::from_utf8_lossy(body)))
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_string(),
                    e["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    e["object"]["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    k8s_wire::json_is_initial_events_end(e),
                )
            })
            .collect(),
        Encoding::Protobuf => k8s_wire::pb_frames(body)
            .expect("protobuf watch frames")
            .into_iter()
            .map(|(event_type, object)| {
                let object = k8s_wire::pb_decode(&object).expect("protobuf object");
                let end = object
                    .annotations
                    .iter()
                    .any(|(k, v)| k == k8s_wire::INITIAL_EVENTS_END && v == "true");
                (event_type, object.name, object.resource_version, end)
            })
            .collect(),
    }
}

/// Stops the fake and waits until the hub has marked it unhealthy.
fn go_offline(hub: &Hub, fake: &FakeApiserver) {
    fake.stop();
    hub.wait_server_health(&fake.url(), false, WAIT);
}

// ------------------------------------------------------- streaming lists

#[test]
fn a_streaming_list_online_fills_the_cache_and_reconciles_like_a_list() {
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let pki = TestPki::new();
        let fake = FakeApiserver::start(&pki);
        fake.route(
            "GET",
            "/api/v1/pods",
            Behaviour::sequence(vec![
                pods_world(encoding, &[("p1", 10), ("gone", 11)], 12),
                pods_world(encoding, &[("p1", 10), ("p2", 13)], 14),
            ]),
        );
        let hub = hub_for(&fake, &pki, &[]);
        let (status, body) = watch_body(&hub, PODS_ON_EDGE_1, encoding);
        assert_eq!(status, 200);
        assert_eq!(events(encoding, &body).len(), 3, "relayed as sent");
        assert!(
            wait_until(WAIT, || pod_file(&hub, encoding, "gone").exists()
                && hub.metric("node_yurthub_cache_streamed_lists_total") == 1),
            "{encoding:?}: first streaming list not stored\n{}",
            hub.log()
        );
        let (status, _) = watch_body(&hub, PODS_ON_EDGE_1, encoding);
        assert_eq!(status, 200);
        assert!(
            wait_until(WAIT, || !pod_file(&hub, encoding, "gone").exists()
                && pod_file(&hub, encoding, "p2").exists()),
            "{encoding:?}: an object the same shape no longer returns must go\n{}",
            hub.log()
        );
        assert!(pod_file(&hub, encoding, "p1").exists());
        let shapes = std::fs::read_to_string(hub.cache_dir().join("kubelet/pods/_lists.json"))
            .expect("the shape is recorded");
        assert!(
            shapes.contains("spec.nodeName=edge-1") && shapes.contains("PodList"),
            "{shapes}"
        );
    }
}

#[test]
fn offline_a_streaming_list_gets_added_events_and_the_annotated_bookmark_also_after_a_restart() {
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let pki = TestPki::new();
        let fake = FakeApiserver::start(&pki);
        fake.route(
            "GET",
            "/api/v1/pods",
            pods_world(encoding, &[("p1", 10), ("p2", 21)], 30),
        );
        let mut hub = hub_for(&fake, &pki, &[]);
        assert_eq!(watch_body(&hub, PODS_ON_EDGE_1, encoding).0, 200);
        assert!(wait_until(WAIT, || {
            hub.metric("node_yurthub_cache_streamed_lists_total") == 1
        }));
        go_offline(&hub, &fake);
        for round in ["offline", "restarted offline"] {
            let (status, body) = watch_body(&hub, PODS_ON_EDGE_1, encoding);
            assert_eq!(status, 200, "{encoding:?} {round}");
            let mut got = events(encoding, &body);
            let bookmark = got.pop().expect("events");
            assert_eq!(
                (bookmark.0.as_str(), bookmark.2.as_str(), bookmark.3),
                ("BOOKMARK", "21", true),
                "{encoding:?} {round}: the bookmark carries the highest resourceVersion and the annotation"
            );
            got.sort();
            let added: Vec<(&str, &str)> = got
                .iter()
                .map(|(t, n, _, _)| (t.as_str(), n.as_str()))
                .collect();
            assert_eq!(
                added,
                [("ADDED", "p1"), ("ADDED", "p2")],
                "{encoding:?} {round}"
            );
            // A LIST of the shape learned only from the streaming list.
            let (status, _, list) = client::request(
                "GET",
                &format!("{}{PLAIN_POD_LIST}", hub.proxy_url()),
                &[("User-Agent", KUBELET), ("Accept", encoding.accept())],
                &[],
            );
            assert_eq!(
                status,
                200,
                "{encoding:?} {round}: {}",
                String::from_utf8_lossy(&list)
            );
            hub.restart();
        }
    }
}

#[test]
fn offline_an_unknown_shape_or_an_empty_pod_list_gets_a_4xx_status_before_any_200() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route("GET", "/api/v1/pods", pods_world(Encoding::Json, &[], 5));
    let hub = hub_for(&fake, &pki, &[]);
    // Online the node has no pods: an empty, complete streaming list.
    assert_eq!(watch_body(&hub, PODS_ON_EDGE_1, Encoding::Json).0, 200);
    assert!(wait_until(WAIT, || {
        hub.metric("node_yurthub_cache_streamed_lists_total") == 1
    }));
    go_offline(&hub, &fake);
    let never_listed = "/api/v1/namespaces/kube-system/configmaps?allowWatchBookmarks=true&resourceVersion=&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=2&watch=true";
    for path in [never_listed, PODS_ON_EDGE_1] {
        let (status, _, body) = client::request(
            "GET",
            &format!("{}{path}", hub.proxy_url()),
            &[("User-Agent", KUBELET), ("Accept", "application/json")],
            &[],
        );
        let status_body: Value = serde_json::from_slice(&body).expect("a Status body");
        assert_eq!(status, 404, "{path}: {status_body}");
        assert_eq!(status_body["kind"], "Status");
    }
}

#[test]
fn an_apiserver_that_ignores_send_initial_events_only_feeds_the_watch_cache() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::streaming_list_unsupported(
            Encoding::Json,
            "Pod",
            "v1",
            vec![pod(Encoding::Json, "p1", 10)],
            11,
            Vec::new(),
            StreamEnd::Finish,
        ),
    );
    let hub = hub_for(&fake, &pki, &[]);
    let (status, body) = watch_body(&hub, PODS_ON_EDGE_1, Encoding::Json);
    assert_eq!(status, 200);
    assert!(
        !events(Encoding::Json, &body).iter().any(|e| e.3),
        "no annotated bookmark"
    );
    assert!(wait_until(WAIT, || pod_file(&hub, Encoding::Json, "p1").exists()));
    assert_eq!(hub.metric("node_yurthub_cache_streamed_lists_total"), 0);
    assert!(
        !hub.cache_dir().join("kubelet/pods/_lists.json").exists(),
        "without the bookmark the events are not a complete list"
    );
}

#[test]
fn before_the_first_probe_a_streaming_list_is_answered_from_the_cache_at_once() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/pods",
        pods_world(Encoding::Protobuf, &[("p1", 10)], 11),
    );
    let mut args = Hub::args_for(&[&fake], &pki);
    args.extend(["--heartbeat-timeout-seconds".into(), "8".into()]);
    let mut hub = Hub::start(&args);
    assert_eq!(watch_body(&hub, PODS_ON_EDGE_1, Encoding::Protobuf).0, 200);
    assert!(wait_until(WAIT, || {
        hub.metric("node_yurthub_cache_streamed_lists_total") == 1
    }));
    // The link goes silent and the node reboots: the first probe takes up to
    // 8 s to fail, and kubelet must not wait for it.
    fake.freeze();
    hub.restart();
    let (status, body) = watch_body(&hub, PODS_ON_EDGE_1, Encoding::Protobuf);
    assert!(
        !hub.log().contains("is unhealthy"),
        "answered before the first probe failed"
    );
    assert_eq!(status, 200);
    let got = events(Encoding::Protobuf, &body);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[1].3, "ends with the annotated bookmark");
    fake.thaw();
}

// ---------------------------------------------------------------- tokens

const TOKEN_PATH: &str = "/api/v1/namespaces/default/serviceaccounts/default/token";

fn token_request(hub: &Hub, pod_uid: &str) -> (u16, Value) {
    let body = k8s_wire::json_token_request(&[], 3607, "p1", pod_uid);
    let (status, _, answer) = client::request(
        "POST",
        &format!("{}{TOKEN_PATH}", hub.proxy_url()),
        &[
            ("User-Agent", KUBELET),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    let answer = serde_json::from_slice(&answer)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&answer)));
    (status, answer)
}

#[test]
fn offline_a_token_request_gets_the_token_the_cloud_issued_never_an_expired_one() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let issuer = TokenIssuer::new(Duration::from_secs(3600));
    fake.route("POST", "/api/v1/namespaces/*", issuer.behaviour());
    let hub = hub_for(&fake, &pki, &[]);
    let (status, online) = token_request(&hub, "uid-long");
    assert_eq!(status, 201, "{online}");
    let token = online["status"]["token"].as_str().unwrap().to_string();
    // One that expires 12 s after it is issued: served only while more than
    // 10 s of it are left.
    issuer.set_lifetime(Duration::from_secs(12));
    assert_eq!(token_request(&hub, "uid-short").0, 201);
    issuer.set_expired(Duration::from_secs(60));
    assert_eq!(token_request(&hub, "uid-expired").0, 201);
    assert!(wait_until(WAIT, || {
        hub.metric("node_yurthub_cache_tokens_stored_total") == 2
    }));
    let records: Vec<_> = walk(&hub.cache_dir().join("_tokens"));
    assert_eq!(records.len(), 2, "the expired one is never stored");
    for record in &records {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(record).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", record.display());
    }
    go_offline(&hub, &fake);
    let requests_before = fake.requests().len();

    let (status, offline) = token_request(&hub, "uid-long");
    assert_eq!(status, 201, "{offline}");
    assert_eq!(offline["status"]["token"], token.as_str());
    assert_eq!(offline["status"], online["status"]);
    let (status, refused) = token_request(&hub, "uid-other-pod");
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["kind"], "Status");
    assert_eq!(token_request(&hub, "uid-expired").0, 503);
    assert!(
        wait_until(WAIT, || token_request(&hub, "uid-short").0 == 503),
        "a token about to expire is no longer served"
    );
    assert!(
        wait_until(WAIT, || walk(&hub.cache_dir().join("_tokens")).len() == 1),
        "and its record is removed"
    );
    assert_eq!(
        fake.requests().len(),
        requests_before,
        "nothing reached the cloud"
    );
    assert!(
        !hub.log().contains(&token),
        "a token never appears in the log"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

// ----------------------------------------------------------- silent links

#[test]
fn a_stream_from_an_apiserver_that_goes_silent_ends_once_it_is_marked_unhealthy() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let first = k8s_wire::json_event("ADDED", &k8s_wire::json_pod("default", "p1", 10, "edge-1"));
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::watch(vec![(Duration::ZERO, first)], StreamEnd::UntilClientGone),
    );
    let hub = hub_for(
        &fake,
        &pki,
        &[
            "--heartbeat-timeout-seconds",
            "1",
            "--heartbeat-failed-retry",
            "2",
        ],
    );
    let mut watch = RawStream::get(
        &format!(
            "{}/api/v1/pods?watch=true&timeoutSeconds=600",
            hub.proxy_url()
        ),
        &[("User-Agent", KUBELET), ("Accept", "application/json")],
    );
    assert_eq!(watch.status(), 200);
    assert!(watch.next_line(WAIT).is_some(), "the first event arrives");
    // The process stops answering (as with SIGSTOP or a link that drops
    // packets): nothing closes the stream, only the hub can end it.
    fake.freeze();
    hub.wait_server_health(&fake.url(), false, WAIT);
    watch.read_to_end(WAIT);
    assert!(
        watch.is_ended(),
        "the client sees the end of the response\n{}",
        hub.log()
    );
    assert_eq!(hub.metric("node_yurthub_streams_ended_unhealthy_total"), 1);
    // The client comes back and is answered offline at once.
    let (status, body) = watch_body(
        &hub,
        "/api/v1/pods?watch=true&timeoutSeconds=1",
        Encoding::Json,
    );
    assert_eq!((status, body.len()), (200, 0));
    fake.thaw();
}

// ------------------------------------------------------------- discovery

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const KUBECTL_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

fn discovery(hub: &Hub, path: &str, accept: &str) -> client::Reply {
    client::request(
        "GET",
        &format!("{}{path}", hub.proxy_url()),
        &[("User-Agent", "kubectl/v1.35.0"), ("Accept", accept)],
        &[],
    )
}

#[test]
fn aggregated_discovery_is_served_offline_only_to_clients_that_accept_it() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let aggregated = r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[]}"#;
    let plain = r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#;
    fake.route(
        "GET",
        "/apis",
        Behaviour::func(move |request| {
            if request
                .header("accept")
                .is_some_and(|a| a.contains("as=APIGroupDiscoveryList"))
            {
                Behaviour::respond(200, &[("Content-Type", AGGREGATED)], aggregated)
            } else {
                Behaviour::ok_json(plain)
            }
        }),
    );
    fake.route(
        "GET",
        "/api",
        Behaviour::respond(200, &[("Content-Type", AGGREGATED)], aggregated),
    );
    let hub = hub_for(&fake, &pki, &[]);
    assert_eq!(discovery(&hub, "/apis", KUBECTL_ACCEPT).0, 200);
    assert_eq!(discovery(&hub, "/apis", "application/json").0, 200);
    assert_eq!(discovery(&hub, "/api", KUBECTL_ACCEPT).0, 200);
    let cached = hub.cache_dir().join("_discovery");
    assert!(wait_until(WAIT, || {
        cached.join("apis.apidiscovery-v2.json").exists()
            && cached.join("apis.json").exists()
            && cached.join("api.apidiscovery-v2.json").exists()
    }));
    go_offline(&hub, &fake);

    let (status, headers, body) = discovery(&hub, "/apis", KUBECTL_ACCEPT);
    assert_eq!(status, 200);
    assert_eq!(client::header(&headers, "content-type"), Some(AGGREGATED));
    assert_eq!(body, aggregated.as_bytes());
    let (status, headers, body) = discovery(&hub, "/apis", "application/json");
    assert_eq!(status, 200);
    assert_eq!(
        client::header(&headers, "content-type"),
        Some("application/json")
    );
    assert_eq!(body, plain.as_bytes());
    // `/api` is cached only as the aggregated document.
    let (status, _, body) = discovery(&hub, "/api", "application/json");
    assert_eq!(status, 406, "{}", String::from_utf8_lossy(&body));
    assert_eq!(discovery(&hub, "/api", KUBECTL_ACCEPT).0, 200);
}
