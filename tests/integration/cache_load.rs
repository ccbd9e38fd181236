//! The cache under load, through the real binary: a storm of reads of the
//! same objects whose versions change during the storm.
//!
//! Contents:
//! - a read storm: copies of the same object or list shape replace each
//!   other while they wait for the writer; none is dropped, the newest
//!   version ends on disk and is what the hub serves offline, also after a
//!   restart

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cache::{AGENT, WAIT, cached, get, go_offline, hub_for, json};
use crate::support::client;
use crate::support::{Behaviour, FakeApiserver, Hub, TestPki, wait_until};

const CONNECTIONS: usize = 32;
const ROUNDS: usize = 25;
const LISTED: usize = 100;

/// A ConfigMap of about 1 KiB at version `rv`.
fn padded(namespace: &str, name: &str, rv: u64) -> String {
    format!(
        r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"{namespace}","uid":"uid-{name}","resourceVersion":"{rv}"}},"data":{{"v":"{rv}","pad":"{}"}}}}"#,
        "x".repeat(1024)
    )
}

fn listed_name(i: usize) -> String {
    format!("cm-{i:03}")
}

/// The versions the fake handed out last: every answer is a new version.
/// The object read alone lives in another namespace than the listed ones, so
/// the lists (which never hold it) do not remove it.
#[derive(Default)]
struct Versions {
    next: AtomicU64,
    newest_object: AtomicU64,
    newest_list: AtomicU64,
}

fn fake_with_changing_configmaps(pki: &TestPki, versions: &Arc<Versions>) -> FakeApiserver {
    let fake = FakeApiserver::start(pki);
    let served = versions.clone();
    fake.route(
        "GET",
        "/api/v1/namespaces/b/configmaps/hot",
        Behaviour::func(move |_| {
            let rv = served.next.fetch_add(1, Ordering::SeqCst) + 1;
            served.newest_object.fetch_max(rv, Ordering::SeqCst);
            Behaviour::ok_json(&padded("b", "hot", rv))
        }),
    );
    let served = versions.clone();
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::func(move |_| {
            let rv = served.next.fetch_add(1, Ordering::SeqCst) + 1;
            served.newest_list.fetch_max(rv, Ordering::SeqCst);
            let items: Vec<String> = (0..LISTED)
                .map(|i| padded("a", &listed_name(i), rv).replacen(r#""kind":"ConfigMap","apiVersion":"v1","#, "", 1))
                .collect();
            Behaviour::ok_json(&format!(
                r#"{{"kind":"ConfigMapList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"}},"items":[{}]}}"#,
                items.join(",")
            ))
        }),
    );
    fake
}

fn rv_of(object: &serde_json::Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

/// The object and the listed objects the hub answers, as versions.
fn served_versions(hub: &Hub) -> (u64, Vec<u64>) {
    let (status, _, body) = get(hub, "/api/v1/namespaces/b/configmaps/hot");
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&body),
        hub.log()
    );
    let object = rv_of(&json(&body));
    let (status, _, body) = get(hub, "/api/v1/namespaces/a/configmaps");
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&body),
        hub.log()
    );
    let list = json(&body);
    let items = list["items"].as_array().expect("items");
    (object, items.iter().map(rv_of).collect())
}

#[test]
fn a_read_storm_of_changing_objects_ends_with_the_newest_on_disk_and_nothing_dropped() {
    let pki = TestPki::new();
    let versions = Arc::new(Versions::default());
    let fake = fake_with_changing_configmaps(&pki, &versions);
    let mut hub = hub_for(&fake, &pki, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let storm: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let url = hub.proxy_url();
            std::thread::spawn(move || {
                let agent = client::agent();
                let headers = [("User-Agent", AGENT), ("Accept", "application/json")];
                for _ in 0..ROUNDS {
                    if Instant::now() > deadline {
                        break;
                    }
                    for path in [
                        "/api/v1/namespaces/b/configmaps/hot",
                        "/api/v1/namespaces/a/configmaps",
                    ] {
                        let (status, _, _) = client::request_with(
                            &agent,
                            "GET",
                            &format!("{url}{path}"),
                            &headers,
                            &[],
                        );
                        assert_eq!(status, 200, "{path}");
                    }
                }
            })
        })
        .collect();
    for reader in storm {
        reader.join().expect("a reader failed");
    }
    let newest_object = versions.newest_object.load(Ordering::SeqCst);
    let newest_list = versions.newest_list.load(Ordering::SeqCst);
    assert!(newest_object > 0 && newest_list > 0);
    let on_disk = || {
        cached(&hub, "test-agent/configmaps/b/hot.json").is_some_and(|o| rv_of(&o) == newest_object)
            && (0..LISTED).all(|i| {
                cached(
                    &hub,
                    &format!("test-agent/configmaps/a/{}.json", listed_name(i)),
                )
                .is_some_and(|o| rv_of(&o) == newest_list)
            })
    };
    assert!(
        wait_until(WAIT, on_disk),
        "the newest versions ({newest_object}, list {newest_list}) never reached the disk\n{}",
        hub.log()
    );
    assert_eq!(
        hub.metric("node_yurthub_cache_dropped_total"),
        0,
        "{}",
        hub.metrics()
    );
    go_offline(&hub, &fake);
    let expected = (newest_object, vec![newest_list; LISTED]);
    assert_eq!(served_versions(&hub), expected, "offline");
    hub.restart();
    assert_eq!(served_versions(&hub), expected, "offline, after a restart");
}
