//! The offline cache, through the real binary and the fake apiserver: what
//! fills it, what it answers offline, restarts, damage, and crashes.
//!
//! Contents:
//! - filling: get, list (with reconcile), watch events, resourceVersion order, Table responses
//! - offline answers: get, list shapes and selectors, create/update/delete, watch, discovery, 400s
//! - offline start and held watches released when the cloud returns
//! - damage: quarantined files; kill -9 while a watch streams into the cache

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::client::{self, RawStream};
use crate::support::{Behaviour, FakeApiserver, Hub, StreamEnd, TestPki, wait_until};

pub(super) const WAIT: Duration = Duration::from_secs(10);
pub(super) const AGENT: &str = "test-agent/v1.0 (linux/amd64)";

pub(super) fn configmap(namespace: &str, name: &str, rv: u64, labels: &str) -> String {
    format!(
        r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"{namespace}","uid":"uid-{name}","resourceVersion":"{rv}","labels":{{{labels}}}}},"data":{{"v":"{rv}"}}}}"#
    )
}

/// A list as the apiserver writes it: items without kind and apiVersion.
pub(super) fn configmap_list(rv: u64, items: &[String]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|i| i.replacen(r#""kind":"ConfigMap","apiVersion":"v1","#, "", 1))
        .collect();
    format!(
        r#"{{"kind":"ConfigMapList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"}},"items":[{}]}}"#,
        items.join(",")
    )
}

pub(super) fn hub_for(fake: &FakeApiserver, pki: &TestPki, extra: &[&str]) -> Hub {
    let mut args = Hub::args_for(&[fake], pki);
    args.extend(["--cache-agents".to_string(), "test-agent".to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    Hub::start(&args)
}

pub(super) fn get(hub: &Hub, path: &str) -> client::Reply {
    client::request(
        "GET",
        &format!("{}{path}", hub.proxy_url()),
        &[("User-Agent", AGENT), ("Accept", "application/json")],
        &[],
    )
}

pub(super) fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

pub(super) fn names(list: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

pub(super) fn cached(hub: &Hub, relative: &str) -> Option<serde_json::Value> {
    std::fs::read(hub.cache_dir().join(relative))
        .ok()
        .map(|b| json(&b))
}

pub(super) fn wait_cached(hub: &Hub, relative: &str, check: impl Fn(&serde_json::Value) -> bool) {
    assert!(
        wait_until(WAIT, || cached(hub, relative).is_some_and(|o| check(&o))),
        "{relative} never reached the expected state: {:?}\n{}",
        cached(hub, relative),
        hub.log()
    );
}

/// Stops the fake and waits until the hub has marked it unhealthy.
pub(super) fn go_offline(hub: &Hub, fake: &FakeApiserver) {
    fake.stop();
    hub.wait_server_health(&fake.url(), false, WAIT);
}

/// A fake serving namespace `a`: cm1 (app=web), cm2 (app=web), cm3 (app=db).
pub(super) fn fake_with_configmaps(pki: &TestPki) -> FakeApiserver {
    let fake = FakeApiserver::start(pki);
    let cm1 = configmap("a", "cm1", 10, r#""app":"web""#);
    let cm2 = configmap("a", "cm2", 11, r#""app":"web""#);
    let cm3 = configmap("a", "cm3", 12, r#""app":"db""#);
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps/cm1",
        Behaviour::ok_json(&cm1),
    );
    let (web, all) = (
        configmap_list(20, &[cm1.clone(), cm2.clone()]),
        configmap_list(20, &[cm1, cm2, cm3]),
    );
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::func(
            move |request| match request.query_param("labelSelector").as_deref() {
                Some("app=web") => Behaviour::ok_json(&web),
                _ => Behaviour::ok_json(&all),
            },
        ),
    );
    fake.route(
        "GET",
        "/version",
        Behaviour::ok_json(r#"{"major":"1","minor":"20","gitVersion":"v1.20.2"}"#),
    );
    fake
}

// ---------------------------------------------------------------- filling

#[test]
fn get_and_list_responses_fill_the_cache_in_the_documented_layout() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    let hub = hub_for(&fake, &pki, &[]);
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps/cm1").0, 200);
    assert_eq!(
        get(
            &hub,
            "/api/v1/namespaces/a/configmaps?labelSelector=app%3Dweb"
        )
        .0,
        200
    );
    wait_cached(&hub, "test-agent/configmaps/a/cm2.json", |o| {
        o["kind"] == "ConfigMap" && o["apiVersion"] == "v1"
    });
    wait_cached(&hub, "test-agent/configmaps/a/cm1.json", |o| {
        o["data"]["v"] == "10"
    });
    assert!(
        cached(&hub, "test-agent/configmaps/a/cm3.json").is_none(),
        "cm3 was not in the listed shape"
    );
    // Non-agents are not cached; Edge-Cache: true makes them so.
    client::request(
        "GET",
        &format!("{}/api/v1/namespaces/a/configmaps/cm1", hub.proxy_url()),
        &[("User-Agent", "other/1.0")],
        &[],
    );
    client::request(
        "GET",
        &format!("{}/api/v1/namespaces/a/configmaps/cm1", hub.proxy_url()),
        &[("User-Agent", "custom/1.0"), ("Edge-Cache", "true")],
        &[],
    );
    wait_cached(&hub, "custom/configmaps/a/cm1.json", |_| true);
    assert!(!hub.cache_dir().join("other").exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(hub.cache_dir().join("test-agent/configmaps/a/cm1.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_new_list_removes_what_the_same_shape_no_longer_returns() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let (cm1, cm2) = (configmap("a", "cm1", 1, ""), configmap("a", "cm2", 2, ""));
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::sequence(vec![
            Behaviour::ok_json(&configmap_list(5, &[cm1.clone(), cm2])),
            Behaviour::ok_json(&configmap_list(6, &[cm1])),
        ]),
    );
    let hub = hub_for(&fake, &pki, &[]);
    get(&hub, "/api/v1/namespaces/a/configmaps");
    wait_cached(&hub, "test-agent/configmaps/a/cm2.json", |_| true);
    get(&hub, "/api/v1/namespaces/a/configmaps");
    assert!(
        wait_until(WAIT, || cached(&hub, "test-agent/configmaps/a/cm2.json")
            .is_none()),
        "cm2 must be gone"
    );
    assert!(cached(&hub, "test-agent/configmaps/a/cm1.json").is_some());
}

#[test]
fn paged_lists_count_as_complete_only_after_the_last_page() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let page = |rv: u64, items: &[String], next: &str| {
        configmap_list(rv, items).replacen(
            r#""resourceVersion":"#,
            &format!(r#""continue":"{next}","resourceVersion":"#),
            1,
        )
    };
    let (first, second) = (
        page(5, &[configmap("a", "cm1", 1, "")], "t1"),
        page(5, &[configmap("a", "cm2", 2, "")], ""),
    );
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::func(move |r| match r.query_param("continue").as_deref() {
            Some("t1") => Behaviour::ok_json(&second),
            _ => Behaviour::ok_json(&first),
        }),
    );
    let hub = hub_for(&fake, &pki, &[]);
    get(&hub, "/api/v1/namespaces/a/configmaps?limit=1");
    wait_cached(&hub, "test-agent/configmaps/a/cm1.json", |_| true);
    assert!(
        cached(&hub, "test-agent/configmaps/_lists.json").is_none(),
        "one page is not a whole list"
    );
    get(&hub, "/api/v1/namespaces/a/configmaps?limit=1&continue=t1");
    wait_cached(&hub, "test-agent/configmaps/_lists.json", |_| true);
    go_offline(&hub, &fake);
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps?limit=1");
    assert_eq!(status, 200);
    assert_eq!(names(&json(&body)), ["cm1", "cm2"]);
}

#[test]
fn watch_events_update_the_cache_and_never_go_back_in_time() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let event = |kind: &str, object: String| format!(r#"{{"type":"{kind}","object":{object}}}"#);
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::watch(
            vec![
                (Duration::ZERO, event("ADDED", configmap("a", "cm1", 5, ""))),
                (Duration::ZERO, event("ADDED", configmap("a", "gone", 6, ""))),
                (Duration::ZERO, event("MODIFIED", configmap("a", "cm1", 9, ""))),
                (Duration::ZERO, event("BOOKMARK", r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"10"}}"#.into())),
                (Duration::from_millis(50), event("DELETED", configmap("a", "gone", 11, ""))),
                // An older version arriving late must not win.
                (Duration::ZERO, event("MODIFIED", configmap("a", "cm1", 7, ""))),
            ],
            StreamEnd::UntilClientGone,
        ),
    );
    let hub = hub_for(&fake, &pki, &[]);
    let mut watch = RawStream::get(
        &format!(
            "{}/api/v1/namespaces/a/configmaps?watch=true",
            hub.proxy_url()
        ),
        &[("User-Agent", AGENT)],
    );
    for _ in 0..6 {
        assert!(
            watch.next_line(WAIT).is_some(),
            "the client gets every event"
        );
    }
    wait_cached(&hub, "test-agent/configmaps/a/cm1.json", |o| {
        o["data"]["v"] == "9"
    });
    assert!(wait_until(WAIT, || cached(
        &hub,
        "test-agent/configmaps/a/gone.json"
    )
    .is_none()));
    // The late, older MODIFIED comes after the DELETED: wait for it too. The
    // writer skips it as stale, or, while the newer copy still waits for
    // the writer, the queue keeps the newer one (coalesced): never written.
    let older_kept_out = || {
        hub.metric("node_yurthub_cache_stale_skipped_total")
            + hub.metric("node_yurthub_cache_coalesced_total")
    };
    assert!(
        wait_until(WAIT, || older_kept_out() >= 1),
        "{} stale writes skipped or coalesced",
        older_kept_out()
    );
    assert_eq!(
        cached(&hub, "test-agent/configmaps/a/cm1.json").map(|o| o["data"]["v"].clone()),
        Some("9".into())
    );
}

#[test]
fn table_and_error_responses_are_not_stored_as_objects() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::respond(
            200,
            &[(
                "Content-Type",
                "application/json;as=Table;v=v1;g=meta.k8s.io",
            )],
            r#"{"kind":"Table","rows":[]}"#,
        ),
    );
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps/missing",
        Behaviour::k8s_status(404, "NotFound", "not found"),
    );
    let hub = hub_for(&fake, &pki, &[]);
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps").0, 200);
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps/missing").0, 404);
    // Fill something afterwards, so the writer has caught up when we look.
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps/cm1",
        Behaviour::ok_json(&configmap("a", "cm1", 1, "")),
    );
    get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
    wait_cached(&hub, "test-agent/configmaps/a/cm1.json", |_| true);
    let files: Vec<_> = std::fs::read_dir(hub.cache_dir().join("test-agent/configmaps/a"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    assert!(
        !hub.cache_dir()
            .join("test-agent/configmaps/_lists.json")
            .exists()
    );
}

#[test]
fn agents_named_in_the_yurt_hub_cfg_configmap_are_cached_too() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    fake.route(
        "GET",
        "/api/v1/namespaces/kube-system/configmaps/yurt-hub-cfg",
        Behaviour::ok_json(r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"yurt-hub-cfg"},"data":{"cache_agents":"late-agent"}}"#),
    );
    let hub = hub_for(&fake, &pki, &[]);
    hub.expect_log("cache agents now", WAIT);
    client::request(
        "GET",
        &format!("{}/api/v1/namespaces/a/configmaps/cm1", hub.proxy_url()),
        &[("User-Agent", "late-agent/2.0")],
        &[],
    );
    wait_cached(&hub, "late-agent/configmaps/a/cm1.json", |_| true);
}

#[test]
fn cloud_mode_caches_nothing() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    let hub = hub_for(&fake, &pki, &["--working-mode", "cloud"]);
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps/cm1").0, 200);
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps").0, 200);
    go_offline(&hub, &fake);
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps/cm1").0, 503);
    assert!(!hub.cache_dir().join("test-agent").exists());
}

#[test]
fn a_failing_cache_write_never_fails_the_client() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    let hub = hub_for(&fake, &pki, &[]);
    // A file where the collection's directory should be: every write there fails.
    std::fs::create_dir_all(hub.cache_dir().join("test-agent")).unwrap();
    std::fs::write(hub.cache_dir().join("test-agent/configmaps"), b"in the way").unwrap();
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
    assert_eq!(
        (status, json(&body)["metadata"]["name"].as_str()),
        (200, Some("cm1"))
    );
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps");
    assert_eq!((status, names(&json(&body)).len()), (200, 3));
    let write_errors = || hub.metric("node_yurthub_cache_write_errors_total");
    assert!(wait_until(WAIT, || write_errors() >= 2), "{}", hub.log());
    hub.expect_log("cache write failed", WAIT);
}

// ---------------------------------------------------------------- offline answers

#[test]
fn offline_answers_follow_the_documented_table() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    let hub = hub_for(&fake, &pki, &[]);
    get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
    get(
        &hub,
        "/api/v1/namespaces/a/configmaps?labelSelector=app%3Dweb",
    );
    get(&hub, "/api/v1/namespaces/a/configmaps");
    get(&hub, "/version");
    wait_cached(&hub, "test-agent/configmaps/a/cm3.json", |_| true);
    assert!(wait_until(WAIT, || hub
        .cache_dir()
        .join("_discovery/version.json")
        .exists()));
    go_offline(&hub, &fake);

    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["metadata"]["uid"], "uid-cm1");

    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps/nope");
    assert_eq!(status, 404);
    assert_eq!(json(&body)["reason"], "NotFound");

    let (status, _, body) = get(
        &hub,
        "/api/v1/namespaces/a/configmaps?labelSelector=app%3Dweb",
    );
    assert_eq!(status, 200);
    let list = json(&body);
    assert_eq!(
        (
            list["kind"].as_str(),
            list["metadata"]["resourceVersion"].as_str()
        ),
        (Some("ConfigMapList"), Some("11"))
    );
    assert_eq!(names(&list), ["cm1", "cm2"]);

    // The full list shape was listed too, so other selectors are answered from it.
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps");
    assert_eq!(
        (status, names(&json(&body))),
        (200, vec!["cm1".to_string(), "cm2".into(), "cm3".into()])
    );
    let (status, _, _) = get(
        &hub,
        "/api/v1/namespaces/a/configmaps?labelSelector=app%21%3Dweb",
    );
    assert_eq!(status, 404, "a shape never listed is not answered");
    let (status, _, body) = get(
        &hub,
        "/api/v1/namespaces/a/configmaps?fieldSelector=metadata.name%3Dcm3",
    );
    assert_eq!(
        (status, names(&json(&body))),
        (200, vec!["cm3".to_string()])
    );
    let (status, _, body) = get(
        &hub,
        "/api/v1/namespaces/a/configmaps?fieldSelector=metadata.name%3Dabsent",
    );
    assert_eq!((status, names(&json(&body))), (200, Vec::<String>::new()));
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps?labelSelector=in%20(");
    assert_eq!(
        status,
        400,
        "a malformed selector is the client's error: {}",
        String::from_utf8_lossy(&body)
    );

    let url = format!("{}/api/v1/namespaces/a/configmaps/cm1", hub.proxy_url());
    let headers = [
        ("User-Agent", AGENT),
        ("Content-Type", "application/merge-patch+json"),
    ];
    let (status, _, body) =
        client::request("PATCH", &url, &headers, br#"{"data":{"v":"changed"}}"#);
    assert_eq!(
        (status, json(&body)["data"]["v"].as_str()),
        (200, Some("10"))
    );
    let (status, _, body) = client::request("DELETE", &url, &headers, &[]);
    assert_eq!(
        (status, json(&body)["message"].as_str()),
        (403, Some("delete request is not supported in local cache"))
    );
    let event = br#"{"kind":"Event","apiVersion":"v1","metadata":{"name":"e1"}}"#;
    let (status, _, body) = client::request(
        "POST",
        &format!("{}/api/v1/namespaces/a/events", hub.proxy_url()),
        &[("User-Agent", AGENT), ("Content-Type", "application/json")],
        event,
    );
    assert_eq!((status, body.as_slice()), (201, &event[..]));

    let (status, _, body) = client::request("GET", &url, &[("User-Agent", "stranger/1.0")], &[]);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = get(&hub, "/version");
    assert_eq!(
        (status, json(&body)["gitVersion"].as_str()),
        (200, Some("v1.20.2"))
    );
    assert_eq!(get(&hub, "/healthz").0, 400);

    let (status, _, body) = client::get(&format!("{}/v1/readyz", hub.serve_url()));
    assert_eq!(status, 200, "the hub can serve from its cache");
    assert!(String::from_utf8_lossy(&body).contains("cache"));
}

#[test]
fn a_read_that_fails_in_transport_is_answered_from_the_cache() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    let hub = hub_for(&fake, &pki, &[]);
    get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
    wait_cached(&hub, "test-agent/configmaps/a/cm1.json", |_| true);
    // The server still counts as healthy, but this request's connection drops.
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps/cm1",
        Behaviour::Drop,
    );
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
    assert_eq!(
        (status, json(&body)["metadata"]["name"].as_str()),
        (200, Some("cm1"))
    );
    // A component that is not cached gets the transport error.
    let (status, _, _) = client::request(
        "GET",
        &format!("{}/api/v1/namespaces/a/configmaps/cm1", hub.proxy_url()),
        &[("User-Agent", "stranger/1.0")],
        &[],
    );
    assert_eq!(status, 502);
}

#[test]
fn kubelet_never_gets_an_empty_pod_list_offline() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::ok_json(
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"3"},"items":[]}"#,
        ),
    );
    let hub = hub_for(&fake, &pki, &[]);
    let kubelet = [
        (
            "User-Agent",
            "kubelet/v1.20.2 (linux/amd64) kubernetes/faecb19",
        ),
        ("Accept", "application/json"),
    ];
    let url = format!(
        "{}/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&limit=500",
        hub.proxy_url()
    );
    assert_eq!(client::request("GET", &url, &kubelet, &[]).0, 200);
    assert!(wait_until(WAIT, || hub
        .cache_dir()
        .join("kubelet/pods/_lists.json")
        .exists()));
    go_offline(&hub, &fake);
    assert_eq!(client::request("GET", &url, &kubelet, &[]).0, 404);
}

#[test]
fn started_offline_the_hub_serves_its_cache_at_once_and_after_restarts() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    let mut hub = hub_for(&fake, &pki, &[]);
    get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
    wait_cached(&hub, "test-agent/configmaps/a/cm1.json", |_| true);
    fake.stop();
    for _ in 0..2 {
        hub.restart();
        let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
        assert_eq!(
            status,
            200,
            "{}\n{}",
            String::from_utf8_lossy(&body),
            hub.log()
        );
        assert_eq!(json(&body)["metadata"]["name"], "cm1");
    }
}

/// A component `yurt-hub-cfg` names (not a flag) is still cached, and
/// answered from the cache, after the node restarts offline.
#[test]
fn an_agent_named_by_yurt_hub_cfg_is_answered_offline_after_a_restart() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    fake.route(
        "GET",
        "/api/v1/namespaces/kube-system/configmaps/yurt-hub-cfg",
        Behaviour::ok_json(
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"yurt-hub-cfg","namespace":"kube-system"},"data":{"cache_agents":"my-agent"}}"#,
        ),
    );
    let mut hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    hub.expect_log("my-agent", WAIT);
    let read = |hub: &Hub| {
        client::request(
            "GET",
            &format!("{}/api/v1/namespaces/a/configmaps/cm1", hub.proxy_url()),
            &[("User-Agent", "my-agent/1.0")],
            &[],
        )
    };
    assert_eq!(read(&hub).0, 200);
    wait_cached(&hub, "my-agent/configmaps/a/cm1.json", |_| true);
    fake.stop();
    hub.restart();
    let (status, _, body) = read(&hub);
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&body),
        hub.log()
    );
    assert_eq!(json(&body)["metadata"]["name"], "cm1");
}

#[test]
fn a_held_offline_watch_ends_when_the_cloud_returns() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    let hub = hub_for(&fake, &pki, &["--heartbeat-healthy-threshold", "1"]);
    go_offline(&hub, &fake);
    let mut watch = RawStream::get(
        &format!(
            "{}/api/v1/namespaces/a/configmaps?watch=true&timeoutSeconds=300",
            hub.proxy_url()
        ),
        &[("User-Agent", AGENT)],
    );
    assert_eq!(watch.status(), 200);
    assert!(
        watch.next_chunk(Duration::from_millis(1500)).is_none(),
        "no events offline, and still open"
    );
    assert!(!watch.is_ended());
    fake.restart();
    let back = Instant::now();
    watch.read_to_end(WAIT);
    assert!(
        watch.is_ended(),
        "the watch must end once the cloud is back"
    );
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "took {:?}",
        back.elapsed()
    );
    // And an offline watch with a short timeout ends by itself.
    go_offline(&hub, &fake);
    let mut short = RawStream::get(
        &format!(
            "{}/api/v1/namespaces/a/configmaps?watch=true&timeoutSeconds=1",
            hub.proxy_url()
        ),
        &[("User-Agent", AGENT)],
    );
    short.read_to_end(WAIT);
    assert!(short.is_ended());
}

// ---------------------------------------------------------------- damage

#[test]
fn damaged_files_are_set_aside_never_served_and_counted() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    let mut hub = hub_for(&fake, &pki, &[]);
    get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
    wait_cached(&hub, "test-agent/configmaps/a/cm1.json", |_| true);
    fake.stop();
    hub.kill();
    let dir = hub.cache_dir().join("test-agent/configmaps/a");
    std::fs::write(
        dir.join("torn.json"),
        br#"{"kind":"ConfigMap","metadata":{"na"#,
    )
    .unwrap();
    std::fs::write(dir.join("_tmp.cm1.json.1.2"), b"{").unwrap();
    hub.restart();
    hub.expect_log("1 damaged moved aside, 1 temp files removed", WAIT);
    assert!(!dir.join("torn.json").exists());
    assert!(!dir.join("_tmp.cm1.json.1.2").exists());
    assert_eq!(
        std::fs::read_dir(hub.cache_dir().join("_quarantine"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps/torn").0, 404);
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps/cm1").0, 200);
    assert_eq!(hub.metric("node_yurthub_cache_quarantined_files_total"), 1);
}

#[test]
fn kill_9_while_a_watch_streams_into_the_cache_never_leaves_a_torn_file() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let events: Vec<(Duration, String)> = (1..=400)
        .map(|rv| {
            let object = configmap("a", &format!("cm{}", rv % 20), rv, "");
            (
                Duration::from_millis(2),
                format!(r#"{{"type":"MODIFIED","object":{object}}}"#),
            )
        })
        .collect();
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::watch(events, StreamEnd::UntilClientGone),
    );
    let mut hub = hub_for(&fake, &pki, &[]);
    let url = format!(
        "{}/api/v1/namespaces/a/configmaps?watch=true",
        hub.proxy_url()
    );
    let dir = hub.cache_dir().join("test-agent/configmaps/a");
    for iteration in 0..50 {
        let mut watch = RawStream::get(&url, &[("User-Agent", AGENT)]);
        // Let some events through, then kill the hub mid-stream.
        for _ in 0..(5 + iteration % 20) {
            if watch.next_line(WAIT).is_none() {
                break;
            }
        }
        hub.kill();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("_tmp.") {
                let bytes = std::fs::read(entry.path()).unwrap();
                assert!(
                    serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
                    "iteration {iteration}: {name} is torn"
                );
            }
        }
        hub.restart();
    }
    fake.stop();
    hub.restart();
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(cached(&hub, "test-agent/configmaps/a/cm1.json").is_some());
    assert!(
        !Path::new(&hub.cache_dir().join("_quarantine")).exists(),
        "nothing may need quarantine"
    );
}
