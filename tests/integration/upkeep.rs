//! The cache over months, through the real binary: garbage collection's
//! rules (online and offline), the disk quota's order, and the autonomy
//! report against a cache whose content the test knows.
//!
//! Contents:
//! - collection: what a shape's last list no longer held goes (online), a
//!   pod bound elsewhere stays; events past their time and components
//!   nobody named, unseen for long, go (offline, after a restart); what
//!   kubelet needs stays, with the hub's `--node-name` in another case
//! - quota: filled past it (files counted in 4 KiB blocks), components
//!   nobody named go first, agents next, kubelet's node and pods never,
//!   with the hub's `--node-name` in another case; every client answered
//! - report: JSON and text verdicts and counts for a known cache, an
//!   incomplete list named with its write error, the gauges, bad requests

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::cache::{WAIT, configmap, configmap_list, go_offline, json};
use crate::support::client;
use crate::support::k8s_wire;
use crate::support::{Behaviour, FakeApiserver, Hub, TestPki, wait_until};

const KUBELET: &str = "kubelet/v1.20.2 (linux/amd64) kubernetes/faecb19";
const PROXY: &str = "kube-proxy/v1.20.2 (linux/amd64) kubernetes/faecb19";
const NODE_PODS: &str = "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1";

fn pod(name: &str, node: &str, rv: u64) -> String {
    format!(
        r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"a","uid":"uid-{name}","resourceVersion":"{rv}"}},"spec":{{"nodeName":"{node}"}}}}"#
    )
}

fn pod_list(rv: u64, items: &[String]) -> String {
    format!(
        r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"}},"items":[{}]}}"#,
        items.join(",")
    )
}

fn node() -> String {
    r#"{"kind":"Node","apiVersion":"v1","metadata":{"name":"edge-1","resourceVersion":"3"}}"#.into()
}

fn event(name: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"a","resourceVersion":"7"}},"reason":"Started"}}"#
    )
}

/// A request as `agent` (a User-Agent), with more header fields.
fn ask(
    hub: &Hub,
    method: &str,
    path: &str,
    agent: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> client::Reply {
    let mut headers = vec![("User-Agent", agent), ("Accept", "application/json")];
    headers.extend_from_slice(extra);
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    client::request(
        method,
        &format!("{}{path}", hub.proxy_url()),
        &headers,
        body.as_bytes(),
    )
}

/// A fake with node edge-1 and its pods p1 and p2 (listed at 20).
fn fake_with_node_and_pods(pki: &TestPki) -> FakeApiserver {
    let fake = FakeApiserver::start(pki);
    let pods = pod_list(20, &[pod("p1", "edge-1", 10), pod("p2", "edge-1", 11)]);
    fake.route("GET", "/api/v1/pods", Behaviour::ok_json(&pods));
    fake.route("GET", "/api/v1/nodes/edge-1", Behaviour::ok_json(&node()));
    fake
}

/// A list of namespace `a`'s configmaps: its status and how many items.
fn list_configmaps(hub: &Hub, agent: &str, extra: &[(&str, &str)]) -> (u16, usize) {
    let (status, _, body) = ask(
        hub,
        "GET",
        "/api/v1/namespaces/a/configmaps",
        agent,
        extra,
        "",
    );
    let items = match status {
        200 => json(&body)["items"].as_array().map_or(0, Vec::len),
        _ => 0,
    };
    (status, items)
}

fn hub_with(fake: &FakeApiserver, pki: &TestPki, extra: &[&str]) -> Hub {
    hub_named(fake, pki, "edge-1", extra)
}

/// A hub with `--node-name node` (kubelet registers edge-1 whatever it is).
fn hub_named(fake: &FakeApiserver, pki: &TestPki, node: &str, extra: &[&str]) -> Hub {
    let mut args = Hub::args_for(&[fake], pki);
    let at = args.iter().position(|a| a == "--node-name").unwrap();
    args[at + 1] = node.to_string();
    args.extend(extra.iter().map(|s| s.to_string()));
    Hub::start(&args)
}

/// `POST /v1/gc`: what one garbage collection removed.
fn collect(hub: &Hub) -> Value {
    let (status, _, body) =
        client::request("POST", &format!("{}/v1/gc", hub.serve_url()), &[], &[]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    json(&body)
}

/// The autonomy report as JSON, once the index is built.
fn report(hub: &Hub) -> Value {
    let mut last = Value::Null;
    let ready = wait_until(WAIT, || {
        let (status, _, body) = client::request(
            "GET",
            &format!("{}/v1/autonomy?format=json", hub.serve_url()),
            &[],
            &[],
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        last = json(&body);
        last["indexReady"] == true
    });
    assert!(ready, "the index was never built: {last}");
    last
}

fn component<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no component {name} in {report:#}"))
}

fn resource<'a>(component: &'a Value, name: &str) -> &'a Value {
    component["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == name)
        .unwrap_or_else(|| panic!("no resource {name} in {component:#}"))
}

/// Sets a cached file's modification time `age` into the past: how the
/// cache of a component looks after it went unused that long.
fn age_file(path: &Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

fn age_tree(dir: &Path, age: Duration) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            age_tree(&entry.path(), age);
        } else {
            age_file(&entry.path(), age);
        }
    }
}

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn garbage_collection_applies_each_rule_online_and_offline_and_keeps_what_kubelet_needs() {
    let pki = TestPki::new();
    let fake = fake_with_node_and_pods(&pki);
    // A replica that lags behind answers a pod deleted before the list.
    fake.route(
        "GET",
        "/api/v1/namespaces/a/pods/p3",
        Behaviour::ok_json(&pod("p3", "edge-1", 15)),
    );
    fake.route(
        "GET",
        "/api/v1/namespaces/a/pods/moved",
        Behaviour::ok_json(&pod("moved", "edge-2", 30)),
    );
    let cm1 = configmap("a", "cm1", 5, "");
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps/cm1",
        Behaviour::ok_json(&cm1),
    );
    fake.route(
        "POST",
        "/api/v1/namespaces/a/events",
        Behaviour::func(|request| {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            let name = body["metadata"]["name"].as_str().unwrap_or("e").to_string();
            Behaviour::json(201, &event(&name))
        }),
    );
    // `--node-name=%H` keeps the host name's case; kubelet registered the
    // lowercased name and lists its pods so.
    let mut hub = hub_named(
        &fake,
        &pki,
        "Edge-1",
        &[
            "--cache-agents",
            "test-agent",
            "--gc-component-idle-days",
            "30",
        ],
    );
    assert_eq!(ask(&hub, "GET", NODE_PODS, KUBELET, &[], "").0, 200);
    for path in [
        "/api/v1/namespaces/a/pods/p3",
        "/api/v1/namespaces/a/pods/moved",
        "/api/v1/nodes/edge-1",
        "/api/v1/namespaces/a/configmaps/cm1",
    ] {
        assert_eq!(ask(&hub, "GET", path, KUBELET, &[], "").0, 200, "{path}");
    }
    for name in ["old-event", "new-event"] {
        let body = event(name);
        assert_eq!(
            ask(
                &hub,
                "POST",
                "/api/v1/namespaces/a/events",
                KUBELET,
                &[],
                &body
            )
            .0,
            201
        );
    }
    let edge_cache = [("Edge-Cache", "true")];
    assert_eq!(
        ask(
            &hub,
            "GET",
            "/api/v1/namespaces/a/configmaps/cm1",
            "custom/1.0",
            &edge_cache,
            ""
        )
        .0,
        200
    );
    assert_eq!(
        ask(
            &hub,
            "GET",
            "/api/v1/namespaces/a/configmaps/cm1",
            "test-agent/1.0",
            &[],
            ""
        )
        .0,
        200
    );
    let cache = hub.cache_dir();
    let files = [
        "kubelet/pods/a/p1.json",
        "kubelet/pods/a/p2.json",
        "kubelet/pods/a/p3.json",
        "kubelet/pods/a/moved.json",
        "kubelet/nodes/edge-1.json",
        "kubelet/configmaps/a/cm1.json",
        "kubelet/events/a/old-event.json",
        "kubelet/events/a/new-event.json",
        "custom/configmaps/a/cm1.json",
        "test-agent/configmaps/a/cm1.json",
    ];
    assert!(
        wait_until(WAIT, || files.iter().all(|f| cache.join(f).exists())),
        "not all cached: {:?}",
        files
            .iter()
            .filter(|f| !cache.join(f).exists())
            .collect::<Vec<_>>()
    );
    report(&hub);

    // Online: the pod the last list of its shape (older than the list) did
    // not hold; the pod bound elsewhere is still in the cloud and stays.
    let online = collect(&hub);
    assert_eq!(
        online["removed"],
        serde_json::json!({"not_in_last_list": 1}),
        "{online}"
    );
    assert_eq!(online["components"], serde_json::json!([]), "{online}");
    assert!(cache.join("kubelet/pods/a/moved.json").exists());
    assert!(!cache.join("kubelet/pods/a/p3.json").exists());
    // Asked again at once: the same collection's summary, no second one.
    assert_eq!(collect(&hub), online);
    assert_eq!(hub.metric("node_yurthub_cache_collections_total"), 1);

    // Offline, after a restart: the event past its time, and the component
    // nobody named that was not seen for 40 days; the agent's just as old
    // copy and every file kubelet needs (just as old) stay.
    hub.terminate();
    age_file(
        &cache.join("kubelet/events/a/old-event.json"),
        Duration::from_secs(2 * 3600),
    );
    for dir in [
        "custom",
        "test-agent",
        "kubelet/pods",
        "kubelet/nodes",
        "kubelet/configmaps",
    ] {
        age_tree(&cache.join(dir), 40 * DAY);
    }
    fake.stop();
    hub.restart();
    report(&hub);
    let offline = collect(&hub);
    assert_eq!(offline["removed"]["expired_event"], 1, "{offline}");
    assert_eq!(
        offline["components"],
        serde_json::json!(["custom"]),
        "{offline}"
    );
    assert!(!cache.join("custom").exists());
    assert!(!cache.join("kubelet/events/a/old-event.json").exists());
    for kept in [
        "kubelet/pods/a/p1.json",
        "kubelet/pods/a/p2.json",
        "kubelet/pods/a/moved.json",
        "kubelet/nodes/edge-1.json",
        "kubelet/configmaps/a/cm1.json",
        "kubelet/events/a/new-event.json",
        "test-agent/configmaps/a/cm1.json",
    ] {
        assert!(cache.join(kept).exists(), "{kept} must stay");
    }
    // kubelet's pod list still answers offline, whole.
    let (status, _, body) = ask(&hub, "GET", NODE_PODS, KUBELET, &[], "");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(crate::cache::names(&json(&body)), ["p1", "p2"]);
    assert_eq!(
        hub.metric("node_yurthub_cache_collected_total{rule=\"idle_component\"}"),
        1
    );
    assert_eq!(hub.metric("node_yurthub_cache_collections_total"), 1);
}

#[test]
fn past_its_quota_the_cache_drops_unnamed_components_first_and_kubelets_pods_last() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let mine: Vec<String> = (0..5)
        .map(|i| pod(&format!("p{i}"), "edge-1", 10 + i))
        .collect();
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::ok_json(&pod_list(20, &mine)),
    );
    fake.route("GET", "/api/v1/nodes/edge-1", Behaviour::ok_json(&node()));
    let padded = |i: usize, what: &str| {
        let mut object = configmap("a", &format!("{what}{i:04}"), 30 + i as u64, "");
        object.insert_str(
            object.len() - 2,
            &format!(r#","pad":"{}""#, "x".repeat(1500)),
        );
        object
    };
    let (big, agent_list): (Vec<String>, Vec<String>) = (
        (0..600).map(|i| padded(i, "big")).collect(),
        (0..150).map(|i| padded(i, "svc")).collect(),
    );
    let big_list = configmap_list(900, &big);
    let agent_list = configmap_list(901, &agent_list);
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::func(move |request| match request.header("user-agent") {
            Some(agent) if agent.starts_with("kube-proxy") => Behaviour::ok_json(&agent_list),
            _ => Behaviour::ok_json(&big_list),
        }),
    );
    // Each file takes a 4 KiB block: 600 + 150 of them are about 3 MiB.
    let hub = hub_named(
        &fake,
        &pki,
        "Edge-1",
        &["--disk-cache-max-bytes", "1048576"],
    );
    report(&hub);
    assert_eq!(ask(&hub, "GET", NODE_PODS, KUBELET, &[], "").0, 200);
    assert_eq!(
        ask(&hub, "GET", "/api/v1/nodes/edge-1", KUBELET, &[], "").0,
        200
    );
    let cache = hub.cache_dir();
    assert!(wait_until(WAIT, || cache
        .join("kubelet/nodes/edge-1.json")
        .exists()));
    // About 2 MiB more than fits: every answer still reaches its client.
    assert_eq!(list_configmaps(&hub, PROXY, &[]), (200, 150));
    let edge_cache = [("Edge-Cache", "true")];
    assert_eq!(list_configmaps(&hub, "custom/1.0", &edge_cache), (200, 600));
    assert!(
        wait_until(WAIT, || hub
            .metric("node_yurthub_cache_quota_evicted_total")
            > 0),
        "nothing evicted\n{}",
        hub.log()
    );
    let held = |dir: &str| std::fs::read_dir(cache.join(dir)).map_or(0, |d| d.count());
    let reported = wait_until(WAIT, || {
        let report = report(&hub);
        report["disk"]["usedBytes"].as_u64().unwrap() <= 1_048_576
            && component(&report, "kubelet")["ready"] == true
    });
    assert!(reported, "{:#}", report(&hub));
    assert_eq!(held("kubelet/pods/a"), 5, "kubelet's pods stay");
    assert!(cache.join("kubelet/nodes/edge-1.json").exists());
    assert_eq!(
        held("kube-proxy/configmaps/a"),
        150,
        "the agent's copy stays whole"
    );
    let custom = held("custom/configmaps/a");
    assert!(
        custom < 600,
        "the unnamed component's copy went first: {custom} left"
    );
    // The report is made at most once a second: wait for one made after the
    // quota's pass recorded what it could not keep.
    let recorded = |report: &serde_json::Value| {
        resource(component(report, "custom"), "configmaps")["lastWriteError"]["message"].is_string()
    };
    assert!(
        wait_until(WAIT, || recorded(&report(&hub))),
        "{:#}",
        report(&hub)
    );
    let known = report(&hub);
    let custom = component(&known, "custom");
    assert_eq!(custom["ready"], false, "{custom:#}");
    assert_eq!(
        custom["verdict"],
        "not ready to restart offline: incomplete lists of configmaps"
    );
    let error = &resource(custom, "configmaps")["lastWriteError"]["message"];
    assert!(
        error.as_str().unwrap().contains("--disk-cache-max-bytes"),
        "{error}"
    );
    assert!(
        hub.log().contains("disk quota:"),
        "the hub logs what it could not keep"
    );

    // Offline, what was evicted is not listed as if whole.
    go_offline(&hub, &fake);
    assert_eq!(
        list_configmaps(&hub, "custom/1.0", &edge_cache),
        (404, 0),
        "the evicted shape is not answered partly"
    );
    assert_eq!(list_configmaps(&hub, PROXY, &[]), (200, 150));
}

#[test]
fn the_autonomy_report_tells_what_each_component_holds_and_whether_it_can_restart_offline() {
    let pki = TestPki::new();
    let fake = fake_with_node_and_pods(&pki);
    let cm1 = configmap("a", "cm1", 5, "");
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::ok_json(&configmap_list(21, &[cm1])),
    );
    fake.route(
        "GET",
        "/api/v1/namespaces/a/secrets/s1",
        Behaviour::ok_json(
            r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s1","namespace":"a","resourceVersion":"6"}}"#,
        ),
    );
    fake.route(
        "POST",
        "/api/v1/namespaces/*",
        Behaviour::token_request(Duration::from_secs(3600)),
    );
    let services = [1, 2].map(|i| {
        format!(r#"{{"kind":"Service","apiVersion":"v1","metadata":{{"name":"s{i}","namespace":"default","resourceVersion":"{i}"}}}}"#)
    });
    fake.route(
        "GET",
        "/api/v1/services",
        Behaviour::ok_json(&format!(
            r#"{{"kind":"ServiceList","apiVersion":"v1","metadata":{{"resourceVersion":"22"}},"items":[{}]}}"#,
            services.join(",")
        )),
    );
    let hub = hub_with(&fake, &pki, &[]);
    hub.wait_server_health(&fake.url(), true, WAIT);
    // kube-proxy's s2 cannot be written (a directory where its file goes).
    std::fs::create_dir_all(hub.cache_dir().join("kube-proxy/services/default/s2.json")).unwrap();
    report(&hub);
    assert_eq!(ask(&hub, "GET", NODE_PODS, KUBELET, &[], "").0, 200);
    assert_eq!(
        ask(&hub, "GET", "/api/v1/nodes/edge-1", KUBELET, &[], "").0,
        200
    );
    let one_configmap = "/api/v1/namespaces/a/configmaps?fieldSelector=metadata.name%3Dcm1";
    assert_eq!(ask(&hub, "GET", one_configmap, KUBELET, &[], "").0, 200);
    assert_eq!(
        ask(
            &hub,
            "GET",
            "/api/v1/namespaces/a/secrets/s1",
            KUBELET,
            &[],
            ""
        )
        .0,
        200
    );
    let token = k8s_wire::json_token_request(&[], 3607, "p1", "uid-p1");
    let token_path = "/api/v1/namespaces/a/serviceaccounts/default/token";
    assert_eq!(ask(&hub, "POST", token_path, KUBELET, &[], &token).0, 201);
    assert_eq!(ask(&hub, "GET", "/api/v1/services", PROXY, &[], "").0, 200);

    let expected = "ready to restart offline: node, 2 pods, 1 configmap, 1 secret, 1 service-account token held; last complete list";
    let settled = wait_until(WAIT, || {
        let report = report(&hub);
        component(&report, "kubelet")["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with(expected))
            && component(&report, "kube-proxy")["resources"][0]["lastWriteError"].is_object()
    });
    let known = report(&hub);
    assert!(settled, "{known:#}");
    let kubelet = component(&known, "kubelet");
    assert_eq!(kubelet["ready"], true);
    assert_eq!(
        (&kubelet["agent"], &kubelet["kubelet"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
    assert_eq!(kubelet["objects"], 5, "node, 2 pods, 1 configmap, 1 secret");
    let pods = resource(kubelet, "pods");
    assert_eq!(pods["lists"][0]["fieldSelector"], "spec.nodeName=edge-1");
    assert_eq!(
        (
            pods["lists"][0]["complete"].clone(),
            pods["lists"][0]["objects"].clone()
        ),
        (Value::Bool(true), Value::from(2))
    );
    assert!(pods["lists"][0]["ageSeconds"].as_i64().unwrap() < 60);
    let configmaps = resource(kubelet, "configmaps");
    assert_eq!(configmaps["lists"][0]["fieldSelector"], "metadata.name=cm1");
    let proxy = component(&known, "kube-proxy");
    assert_eq!(proxy["ready"], false);
    assert_eq!(
        proxy["verdict"],
        "not ready to restart offline: incomplete lists of services"
    );
    let services = resource(proxy, "services");
    assert_eq!(
        (
            services["objects"].clone(),
            services["lists"][0]["complete"].clone()
        ),
        (Value::from(1), Value::Bool(false))
    );
    assert!(
        services["lastWriteError"]["message"]
            .as_str()
            .unwrap()
            .contains("s2.json"),
        "{services:#}"
    );

    // The text form, for curl: the verdicts first, one screen.
    let (status, headers, body) = client::request(
        "GET",
        &format!("{}/v1/autonomy", hub.serve_url()),
        &[("Accept", "*/*")],
        &[],
    );
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert_eq!(
        client::header(&headers, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        text.starts_with("node edge-1: an apiserver is healthy"),
        "{text}"
    );
    assert!(text.contains(&format!("kubelet     {expected}")), "{text}");
    assert!(text.contains("kube-proxy/services"), "{text}");
    assert!(text.lines().count() < 25, "{text}");
    let (status, headers, body) = client::request(
        "GET",
        &format!("{}/v1/autonomy", hub.serve_url()),
        &[("Accept", "application/json")],
        &[],
    );
    assert_eq!(
        (status, client::header(&headers, "content-type")),
        (200, Some("application/json"))
    );
    assert_eq!(json(&body)["node"], "edge-1");
    // The gauges say the same.
    assert_eq!(
        hub.metric(r#"node_yurthub_autonomy_ready{component="kubelet"}"#),
        1
    );
    assert_eq!(
        hub.metric(r#"node_yurthub_autonomy_ready{component="kube-proxy"}"#),
        0
    );
    assert_eq!(
        hub.metric(r#"node_yurthub_cache_objects{component="kubelet",resource="pods"}"#),
        2
    );
    assert_eq!(hub.metric(r#"node_yurthub_cache_lists{component="kube-proxy",resource="services",state="incomplete"}"#), 1);
    // Bad requests get a Status.
    let (status, _, body) = client::request(
        "GET",
        &format!("{}/v1/autonomy?format=yaml", hub.serve_url()),
        &[],
        &[],
    );
    assert_eq!(
        (status, json(&body)["kind"].clone()),
        (400, Value::from("Status"))
    );
    let (status, _, body) = client::request(
        "DELETE",
        &format!("{}/v1/autonomy", hub.serve_url()),
        &[],
        &[],
    );
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (405, Value::from(405))
    );
    let (status, _, _) = client::request("GET", &format!("{}/v1/gc", hub.serve_url()), &[], &[]);
    assert_eq!(status, 405);
    // Offline it is the same report, from memory.
    go_offline(&hub, &fake);
    let offline = report(&hub);
    assert_eq!(offline["online"], false);
    assert_eq!(component(&offline, "kubelet")["ready"], true);
}
