//! OpenYurt's response filters through the real binary: what kubelet and
//! kube-proxy read is rewritten or narrowed, in JSON and protobuf, online
//! and offline, while the cache keeps what the apiserver sent.
//!
//! Contents:
//! - masterservice: kubelet's Service list shows `default/kubernetes` at the
//!   hub's address, online and offline (JSON and protobuf); the cache file
//!   keeps the apiserver's; other components, and a disabled filter, see
//!   the apiserver's answer
//! - discardcloudservice in a watch: a Service that becomes discarded leaves
//!   as DELETED and comes back as ADDED; bookmarks pass
//! - yurt-hub-cfg adds components to a filter while the hub runs

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::client::{self, RawStream};
use crate::support::k8s_wire::{self, Encoding};
use crate::support::{Behaviour, FakeApiserver, Hub, StreamEnd, TestPki, free_ports, wait_until};

const WAIT: Duration = Duration::from_secs(15);
const KUBELET: &str = "kubelet/v1.35.0 (linux/amd64) kubernetes/66452049";
const KUBE_PROXY: &str = "kube-proxy/v1.35.0 (linux/amd64) kubernetes/66452049";
const SERVICES: &str = "/api/v1/services";

fn json_service(name: &str, rv: u64, kind: &str, annotations: Value) -> Value {
    json!({
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "resourceVersion": rv.to_string(), "annotations": annotations},
        "spec": {"type": kind, "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                 "ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": 6443}]}
    })
}

/// The same Service in protobuf: spec (2) with ports (1: {name 1, port 3}),
/// clusterIP (3), type (4), clusterIPs (18).
fn pb_service(name: &str, rv: u64) -> Vec<u8> {
    let mut port = Vec::new();
    k8s_wire::put_bytes(&mut port, 1, b"https");
    k8s_wire::put_bytes(&mut port, 2, b"TCP");
    k8s_wire::put_uint(&mut port, 3, 443);
    let mut spec = Vec::new();
    k8s_wire::put_bytes(&mut spec, 1, &port);
    k8s_wire::put_bytes(&mut spec, 3, b"10.96.0.1");
    k8s_wire::put_bytes(&mut spec, 4, b"ClusterIP");
    k8s_wire::put_bytes(&mut spec, 18, b"10.96.0.1");
    let mut raw = Vec::new();
    let meta = k8s_wire::pb_object_meta(
        name,
        "default",
        &format!("uid-{name}"),
        &rv.to_string(),
        &[],
        &[],
    );
    k8s_wire::put_bytes(&mut raw, 1, &meta);
    k8s_wire::put_bytes(&mut raw, 2, &spec);
    k8s_wire::put_bytes(&mut raw, 3, b"");
    k8s_wire::pb_wrap("Service", "v1", &raw)
}

fn fake_with_services(pki: &TestPki) -> FakeApiserver {
    let fake = FakeApiserver::start(pki);
    let json_list = k8s_wire::json_list(
        "Service",
        "v1",
        20,
        &[
            json_service("kubernetes", 10, "ClusterIP", json!({}))
                .to_string()
                .into_bytes(),
            json_service("web", 11, "ClusterIP", json!({}))
                .to_string()
                .into_bytes(),
        ],
    );
    let pb_list = Encoding::Protobuf.list(
        "Service",
        "v1",
        20,
        &[pb_service("kubernetes", 10), pb_service("web", 11)],
    );
    fake.route(
        "GET",
        SERVICES,
        Behaviour::func(move |request| {
            let protobuf = request
                .header("accept")
                .is_some_and(|a| a.starts_with("application/vnd.kubernetes.protobuf"));
            if protobuf {
                Behaviour::respond(
                    200,
                    &[("Content-Type", Encoding::Protobuf.content_type())],
                    pb_list.clone(),
                )
            } else {
                Behaviour::ok_json(&json_list)
            }
        }),
    );
    fake
}

fn hub_with_secure_port(fake: &FakeApiserver, pki: &TestPki, extra: &[&str]) -> (Hub, u16) {
    let [secure] = free_ports::<1>();
    let mut args = Hub::args_for(&[fake], pki);
    args.extend(["--proxy-secure-port".to_string(), secure.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    (Hub::start(&args), secure)
}

fn list(hub: &Hub, user_agent: &str, encoding: Encoding) -> (u16, Vec<u8>) {
    let accept = encoding.accept();
    let (status, _, body) = client::request(
        "GET",
        &format!("{}{SERVICES}", hub.proxy_url()),
        &[("User-Agent", user_agent), ("Accept", accept)],
        b"",
    );
    (status, body)
}

/// `(name, clusterIP, first port)` of each Service in a list answer (the
/// port in JSON only; 0 in protobuf).
fn services(body: &[u8], encoding: Encoding) -> Vec<(String, String, u64)> {
    match encoding {
        Encoding::Json => {
            let list: Value = serde_json::from_slice(body).unwrap();
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["metadata"]["name"].as_str().unwrap().to_string(),
                        s["spec"]["clusterIP"].as_str().unwrap().to_string(),
                        s["spec"]["ports"][0]["port"].as_u64().unwrap(),
                    )
                })
                .collect()
        }
        Encoding::Protobuf => k8s_wire::pb_list_raw_items(body)
            .unwrap_or_else(|| panic!("not a protobuf list: {}", String::from_utf8_lossy(body)))
            .iter()
            .map(|item| {
                (
                    k8s_wire::pb_string_at(item, &[1, 1]).expect("a name"),
                    k8s_wire::pb_string_at(item, &[2, 3]).expect("a cluster IP"),
                    0,
                )
            })
            .collect(),
    }
}

#[test]
fn kubelet_sees_default_kubernetes_at_the_hub_online_and_offline() {
    let pki = TestPki::new();
    let fake = fake_with_services(&pki);
    let (hub, secure) = hub_with_secure_port(&fake, &pki, &["--dummy-if-ip", "169.254.2.1"]);
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let (status, body) = list(&hub, KUBELET, encoding);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let got = services(&body, encoding);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            (got[0].0.as_str(), got[0].1.as_str()),
            ("kubernetes", "169.254.2.1")
        );
        assert_eq!((got[1].0.as_str(), got[1].1.as_str()), ("web", "10.96.0.1"));
        if encoding == Encoding::Json {
            assert_eq!(got[0].2, u64::from(secure));
            assert_eq!(got[1].2, 443);
        }
        // Another component gets the apiserver's answer.
        let (_, body) = list(&hub, KUBE_PROXY, encoding);
        assert_eq!(services(&body, encoding)[0].1, "10.96.0.1");
    }
    // The cache keeps what the apiserver sent.
    let cached = hub
        .cache_dir()
        .join("kubelet/services/default/kubernetes.json");
    assert!(wait_until(WAIT, || cached.exists()), "{}", hub.log());
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&cached).unwrap()).unwrap();
    assert_eq!(on_disk["spec"]["clusterIP"], "10.96.0.1");
    assert!(
        hub.metric(
            "node_yurthub_filter_objects_total{filter=\"masterservice\",outcome=\"rewritten\"}"
        ) >= 2
    );

    crate::cache::go_offline(&hub, &fake);
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let (status, body) = list(&hub, KUBELET, encoding);
        assert_eq!(
            status,
            200,
            "{} {:?} {}",
            String::from_utf8_lossy(&body),
            std::fs::read_to_string(hub.cache_dir().join("kubelet/services/_lists.json")),
            hub.log()
        );
        let got = services(&body, encoding);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].1, "169.254.2.1", "offline {encoding:?}");
        assert_eq!(got[1].1, "10.96.0.1");
    }
}

#[test]
fn a_disabled_filter_and_a_hub_without_secure_port_leave_the_answer_alone() {
    let pki = TestPki::new();
    let fake = fake_with_services(&pki);
    let (hub, _) = hub_with_secure_port(
        &fake,
        &pki,
        &["--disabled-resource-filters", "masterservice"],
    );
    let (_, body) = list(&hub, KUBELET, Encoding::Json);
    assert_eq!(services(&body, Encoding::Json)[0].1, "10.96.0.1");
    drop(hub);
    // The tests' default: no secure port, so nothing to point pods at.
    let hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    let (_, body) = list(&hub, KUBELET, Encoding::Json);
    assert_eq!(services(&body, Encoding::Json)[0].1, "10.96.0.1");
    // A filter name the hub does not know (one the original removed) is
    // ignored, as the original does, and logged.
    drop(hub);
    let mut args = Hub::args_for(&[&fake], &pki);
    args.extend(["--disabled-resource-filters".into(), "endpoints".into()]);
    let hub = Hub::start(&args);
    hub.expect_log("names no filter of this hub: endpoints", WAIT);
}

#[test]
fn in_a_watch_a_discarded_service_leaves_as_deleted_and_comes_back_as_added() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let discard = |on: bool| json!({"svc.openyurt.io/discard": if on { "true" } else { "false" }});
    let events = [
        (
            "ADDED",
            json_service("lb", 1, "LoadBalancer", discard(false)),
        ),
        (
            "MODIFIED",
            json_service("lb", 2, "LoadBalancer", discard(true)),
        ),
        (
            "MODIFIED",
            json_service("lb", 3, "LoadBalancer", discard(true)),
        ),
        (
            "MODIFIED",
            json_service("lb", 4, "LoadBalancer", discard(false)),
        ),
        (
            "ADDED",
            json_service("gone", 5, "LoadBalancer", discard(true)),
        ),
    ];
    let mut chunks: Vec<(Duration, String)> = events
        .iter()
        .map(|(t, o)| (Duration::ZERO, k8s_wire::json_event(t, &o.to_string())))
        .collect();
    chunks.push((
        Duration::ZERO,
        k8s_wire::json_event("BOOKMARK", &k8s_wire::json_bookmark("Service", "v1", 6)),
    ));
    fake.route("GET", SERVICES, Behaviour::watch(chunks, StreamEnd::Finish));
    let hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    let mut stream = RawStream::get(
        &format!("{}{SERVICES}?watch=true&timeoutSeconds=5", hub.proxy_url()),
        &[("User-Agent", KUBE_PROXY)],
    );
    assert_eq!(stream.status(), 200);
    let body = stream.read_to_end(WAIT);
    let seen: Vec<(String, String)> = k8s_wire::json_events(&body)
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("ADDED", "1"),
        ("DELETED", "2"),
        ("ADDED", "4"),
        ("BOOKMARK", "6"),
    ]
    .iter()
    .map(|(t, rv)| (t.to_string(), rv.to_string()))
    .collect();
    assert_eq!(seen, want, "{}", String::from_utf8_lossy(&body));
    assert!(
        hub.metric(
            "node_yurthub_filter_objects_total{filter=\"discardcloudservice\",outcome=\"dropped\"}"
        ) >= 3
    );
}

#[test]
fn yurt_hub_cfg_adds_components_to_a_filter_while_the_hub_runs() {
    let pki = TestPki::new();
    let fake = fake_with_services(&pki);
    let cfg = k8s_wire::json_object("ConfigMap", "v1", "kube-system", "yurt-hub-cfg", 1, &[]);
    let mut cfg: Value = serde_json::from_str(&cfg).unwrap();
    cfg["data"] = json!({"masterservice": "my-agent, other"});
    fake.route(
        "GET",
        "/api/v1/namespaces/kube-system/configmaps/yurt-hub-cfg",
        Behaviour::ok_json(&cfg.to_string()),
    );
    let (hub, _) = hub_with_secure_port(&fake, &pki, &[]);
    let rewritten = || {
        let (_, body) = list(&hub, "my-agent/1.0", Encoding::Json);
        services(&body, Encoding::Json)[0].1 == "169.254.2.1"
    };
    assert!(wait_until(WAIT, rewritten), "{}", hub.log());
}

const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

fn json_slice(service: &str, nodes: &[&str]) -> Value {
    json!({
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": format!("{service}-x"), "namespace": "default", "uid": format!("uid-{service}-x"),
                     "resourceVersion": "30", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": nodes.iter().enumerate().map(|(i, n)| json!({
            "addresses": [format!("10.1.0.{i}")], "conditions": {"ready": true}, "nodeName": n
        })).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
    })
}

/// The same slice in protobuf: endpoints (2: {addresses 1, conditions 2
/// {ready 1}, nodeName 6}), ports (3), addressType (4).
fn pb_slice(service: &str, nodes: &[&str]) -> Vec<u8> {
    let mut raw = Vec::new();
    let meta = k8s_wire::pb_object_meta(
        &format!("{service}-x"),
        "default",
        &format!("uid-{service}-x"),
        "30",
        &[("kubernetes.io/service-name", service)],
        &[],
    );
    k8s_wire::put_bytes(&mut raw, 1, &meta);
    for (i, node) in nodes.iter().enumerate() {
        let mut conditions = Vec::new();
        k8s_wire::put_uint(&mut conditions, 1, 1);
        let mut endpoint = Vec::new();
        k8s_wire::put_bytes(&mut endpoint, 1, format!("10.1.0.{i}").as_bytes());
        k8s_wire::put_bytes(&mut endpoint, 2, &conditions);
        k8s_wire::put_bytes(&mut endpoint, 6, node.as_bytes());
        k8s_wire::put_bytes(&mut raw, 2, &endpoint);
    }
    let mut port = Vec::new();
    k8s_wire::put_bytes(&mut port, 1, b"http");
    k8s_wire::put_uint(&mut port, 3, 80);
    k8s_wire::put_bytes(&mut raw, 3, &port);
    k8s_wire::put_bytes(&mut raw, 4, b"IPv4");
    k8s_wire::pb_wrap("EndpointSlice", "discovery.k8s.io/v1", &raw)
}

/// The node names of each slice's endpoints in a list answer.
fn slice_nodes(body: &[u8], encoding: Encoding) -> Vec<Vec<String>> {
    match encoding {
        Encoding::Json => {
            let list: Value = serde_json::from_slice(body).unwrap();
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    s["endpoints"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["nodeName"].as_str().unwrap().to_string())
                        .collect()
                })
                .collect()
        }
        Encoding::Protobuf => k8s_wire::pb_list_raw_items(body)
            .unwrap_or_else(|| panic!("not a protobuf list: {}", String::from_utf8_lossy(body)))
            .iter()
            .map(|item| k8s_wire::pb_strings_of_messages(item, 2, 6))
            .collect(),
    }
}

#[test]
fn kube_proxy_sees_only_its_pools_endpoints_online_and_offline() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let node = k8s_wire::json_object(
        "Node",
        "v1",
        "",
        "edge-1",
        1,
        &[("apps.openyurt.io/nodepool", "hangzhou")],
    );
    fake.route("GET", "/api/v1/nodes/edge-1", Behaviour::ok_json(&node));
    let pool = json!({"kind": "NodePool", "apiVersion": "apps.openyurt.io/v1beta2",
                      "metadata": {"name": "hangzhou"}, "status": {"nodes": ["edge-1", "edge-2"]}});
    fake.route(
        "GET",
        "/apis/apps.openyurt.io/v1beta2/nodepools/hangzhou",
        Behaviour::ok_json(&pool.to_string()),
    );
    let annotated = |name: &str, keys: &str| {
        let mut s = json_service(
            name,
            5,
            "ClusterIP",
            json!({"openyurt.io/topologyKeys": keys}),
        );
        s["metadata"]["namespace"] = "default".into();
        s.to_string().into_bytes()
    };
    let services = k8s_wire::json_list(
        "Service",
        "v1",
        40,
        &[
            annotated("by-pool", "openyurt.io/nodepool"),
            annotated("by-node", "kubernetes.io/hostname"),
        ],
    );
    fake.route(
        "GET",
        SERVICES,
        Behaviour::func(move |request| {
            if request.query_param("watch").is_some() {
                Behaviour::watch(Vec::new(), StreamEnd::Stall(Duration::from_secs(20)))
            } else {
                Behaviour::ok_json(&services)
            }
        }),
    );
    let all = ["edge-1", "edge-2", "cloud-1"];
    let json_slices = k8s_wire::json_list(
        "EndpointSlice",
        "discovery.k8s.io/v1",
        50,
        &[
            json_slice("by-pool", &all).to_string().into_bytes(),
            json_slice("by-node", &all).to_string().into_bytes(),
            json_slice("plain", &all).to_string().into_bytes(),
        ],
    );
    let pb_slices = Encoding::Protobuf.list(
        "EndpointSlice",
        "discovery.k8s.io/v1",
        50,
        &[
            pb_slice("by-pool", &all),
            pb_slice("by-node", &all),
            pb_slice("plain", &all),
        ],
    );
    fake.route(
        "GET",
        SLICES,
        Behaviour::func(move |request| {
            if request
                .header("accept")
                .is_some_and(|a| a.starts_with("application/vnd.kubernetes.protobuf"))
            {
                Behaviour::respond(
                    200,
                    &[("Content-Type", Encoding::Protobuf.content_type())],
                    pb_slices.clone(),
                )
            } else {
                Behaviour::ok_json(&json_slices)
            }
        }),
    );
    let mut hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    let readyz = |hub: &Hub| client::get(&format!("{}/v1/readyz", hub.serve_url())).2;
    assert!(
        wait_until(WAIT, || !String::from_utf8_lossy(&readyz(&hub))
            .contains("without context")),
        "{}\n{}",
        String::from_utf8_lossy(&readyz(&hub)),
        hub.log()
    );
    // In any order (the cache answers in name order): by-node, by-pool, plain.
    let want = vec![
        vec!["edge-1".to_string()],
        vec!["edge-1".to_string(), "edge-2".to_string()],
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    ];
    let list_slices = |hub: &Hub, encoding: Encoding| {
        let accept = encoding.accept();
        let (status, _, body) = client::request(
            "GET",
            &format!("{}{SLICES}", hub.proxy_url()),
            &[("User-Agent", KUBE_PROXY), ("Accept", accept)],
            b"",
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let mut nodes = slice_nodes(&body, encoding);
        nodes.sort();
        nodes
    };
    // Protobuf first: a client that also accepts JSON is answered from a
    // shared watch already synced in either encoding.
    for encoding in [Encoding::Protobuf, Encoding::Json] {
        assert_eq!(list_slices(&hub, encoding), want, "online {encoding:?}");
    }
    crate::cache::go_offline(&hub, &fake);
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        assert_eq!(list_slices(&hub, encoding), want, "offline {encoding:?}");
    }
    // What the filters knew is kept: a restart offline filters the same.
    hub.restart();
    assert!(!String::from_utf8_lossy(&readyz(&hub)).contains("without context"));
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        assert_eq!(
            list_slices(&hub, encoding),
            want,
            "offline after a restart {encoding:?}"
        );
    }
}

/// `data` compressed by the system's gzip, as kube-apiserver sends a large list.
fn gzipped(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("gzip")
        .args(["-c", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    output.stdout
}

#[test]
fn gzip_answers_are_cached_and_filtered_decompressed() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    // A list past kube-apiserver's 128 KiB compression threshold.
    let items: Vec<Vec<u8>> = (0..400)
        .map(|i| {
            let name = if i == 0 {
                "kubernetes".to_string()
            } else {
                format!("svc-{i:03}")
            };
            let mut s = json_service(&name, 10 + i, "ClusterIP", json!({"note": "x".repeat(300)}));
            s["metadata"]["namespace"] = "default".into();
            s.to_string().into_bytes()
        })
        .collect();
    let list = k8s_wire::json_list("Service", "v1", 900, &items);
    assert!(list.len() > 128 * 1024);
    let compressed = gzipped(list.as_bytes());
    let sent = compressed.clone();
    fake.route(
        "GET",
        SERVICES,
        Behaviour::func(move |request| {
            if request.query_param("watch").is_some() {
                return Behaviour::watch(Vec::new(), StreamEnd::Stall(Duration::from_secs(20)));
            }
            Behaviour::respond(
                200,
                &[
                    ("Content-Type", "application/json"),
                    ("Content-Encoding", "gzip"),
                ],
                sent.clone(),
            )
        }),
    );
    // The shared watch reads the compressed list once and answers from
    // what it decompressed.
    let (shared, _) = hub_with_secure_port(&fake, &pki, &[]);
    let (status, headers, body) = client::request(
        "GET",
        &format!("{}{SERVICES}", shared.proxy_url()),
        &[
            ("User-Agent", "flanneld/v0.14.0"),
            ("Accept-Encoding", "gzip"),
        ],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(client::header(&headers, "content-encoding"), None);
    assert_eq!(services(&body, Encoding::Json).len(), 400);
    assert_eq!(
        shared.metric(
            "node_yurthub_shared_watch_received_bytes_total{resource=\"services.v1\",encoding=\"json\"}"
        ),
        compressed.len() as u64
    );
    drop(shared);
    // Relayed (Services not shared):
    let (hub, _) = hub_with_secure_port(&fake, &pki, &["--shared-watch-resources="]);
    let get = |user_agent: &str| {
        client::request(
            "GET",
            &format!("{}{SERVICES}", hub.proxy_url()),
            &[("User-Agent", user_agent), ("Accept-Encoding", "gzip")],
            b"",
        )
    };
    // Not filtered for flanneld: the client gets the
    // apiserver's compressed bytes, and the cache reads them decompressed.
    let (status, headers, body) = get("flanneld/v0.14.0");
    assert_eq!(status, 200);
    assert_eq!(client::header(&headers, "content-encoding"), Some("gzip"));
    assert_eq!(body, compressed);
    let cached = hub
        .cache_dir()
        .join("flanneld/services/default/svc-399.json");
    assert!(wait_until(WAIT, || cached.exists()), "{}", hub.log());
    // Filtered for kubelet: decompressed, rewritten, no Content-Encoding.
    let (status, headers, body) = get(KUBELET);
    assert_eq!(status, 200);
    assert_eq!(client::header(&headers, "content-encoding"), None);
    let got = services(&body, Encoding::Json);
    assert_eq!(got.len(), 400);
    assert_eq!(got[0].1, "169.254.2.1");
    // Offline, from what the cache read.
    crate::cache::go_offline(&hub, &fake);
    let (status, _, body) = get("flanneld/v0.14.0");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(services(&body, Encoding::Json).len(), 400);
    assert_eq!(hub.metric("node_yurthub_cache_decode_errors_total"), 0);
}
