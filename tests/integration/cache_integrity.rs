//! What the cache must never hold or serve, through the real binary: the
//! answer of a dry run, a file that is not the object its path names, a file
//! reached through a symbolic link; and what must not stop it: a name too long
//! for a file, one list item that cannot be stored.
//!
//! Contents:
//! - dry runs: a write with `dryRun` leaves the cache as it was
//! - names: the longest Kubernetes names are stored, served and listed offline
//! - lists: one item that cannot be stored never stops the rest of its list
//! - misplaced files: set aside (`_quarantine/`), never served offline
//! - symbolic links: never served, never written through, set aside at start

use std::path::{Path, PathBuf};

use super::cache::{
    AGENT, WAIT, cached, configmap, configmap_list, fake_with_configmaps, get, go_offline, hub_for,
    json, names, wait_cached,
};
use crate::support::client;
use crate::support::{Behaviour, FakeApiserver, Hub, TestPki, wait_until};

/// Entries of `_quarantine/` in the hub's cache.
fn quarantined(hub: &Hub) -> Vec<String> {
    std::fs::read_dir(hub.cache_dir().join("_quarantine"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Stores `fence` through the hub and waits for it: the writer applies work
/// in order, so whatever was relayed before it has been applied (or skipped).
fn fence(hub: &Hub, fake: &FakeApiserver) {
    let path = "/api/v1/namespaces/a/configmaps/fence";
    fake.route(
        "GET",
        path,
        Behaviour::ok_json(&configmap("a", "fence", 1, "")),
    );
    assert_eq!(get(hub, path).0, 200);
    wait_cached(hub, "test-agent/configmaps/a/fence.json", |_| true);
}

// ---------------------------------------------------------------- dry runs

#[test]
fn a_dry_run_write_never_changes_the_cache() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    // What each write would make of the object: newer, so it would win.
    let would_be = configmap("a", "cm1", 99, r#""app":"dry""#);
    let created = configmap("a", "created", 100, "");
    let object = "/api/v1/namespaces/a/configmaps/cm1";
    fake.route("PUT", object, Behaviour::ok_json(&would_be));
    fake.route("PATCH", object, Behaviour::ok_json(&would_be));
    fake.route(
        "POST",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::json(201, &created),
    );
    let hub = hub_for(&fake, &pki, &[]);
    assert_eq!(get(&hub, object).0, 200);
    wait_cached(&hub, "test-agent/configmaps/a/cm1.json", |o| {
        o["data"]["v"] == "10"
    });
    let written = hub.metric("node_yurthub_cache_objects_written_total");
    for (method, path, content_type, body, expected) in [
        ("PUT", object, "application/json", would_be.as_str(), 200),
        (
            "PATCH",
            object,
            "application/merge-patch+json",
            r#"{"data":{"v":"dry"}}"#,
            200,
        ),
        (
            "POST",
            "/api/v1/namespaces/a/configmaps",
            "application/json",
            created.as_str(),
            201,
        ),
    ] {
        let (status, _, answer) = client::request(
            method,
            &format!("{}{path}?dryRun=All&fieldManager=test", hub.proxy_url()),
            &[("User-Agent", AGENT), ("Content-Type", content_type)],
            body.as_bytes(),
        );
        assert_eq!(
            status,
            expected,
            "{method}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert!(json(&answer)["metadata"]["resourceVersion"].is_string());
    }
    assert_eq!(
        fake.requests_matching(|r| r.query_param("dryRun").as_deref() == Some("All"))
            .len(),
        3,
        "the dry runs reached the apiserver"
    );
    fence(&hub, &fake);
    assert_eq!(
        cached(&hub, "test-agent/configmaps/a/cm1.json").unwrap()["data"]["v"],
        "10",
        "the object on disk is the one the apiserver holds"
    );
    assert!(cached(&hub, "test-agent/configmaps/a/created.json").is_none());
    assert_eq!(
        hub.metric("node_yurthub_cache_objects_written_total"),
        written + 1,
        "only the fence was written"
    );
}

// ---------------------------------------------------------------- names

#[test]
fn the_longest_names_are_stored_served_and_listed_offline() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    // 253 characters: Kubernetes' longest name; `{name}.json` would not fit.
    let long = format!("{}-z", "l".repeat(251));
    let object = configmap("a", &long, 5, "");
    let short = configmap("a", "cm1", 6, "");
    fake.route(
        "GET",
        &format!("/api/v1/namespaces/a/configmaps/{long}"),
        Behaviour::ok_json(&object),
    );
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::ok_json(&configmap_list(7, &[object.clone(), short])),
    );
    let hub = hub_for(&fake, &pki, &[]);
    assert_eq!(
        get(&hub, &format!("/api/v1/namespaces/a/configmaps/{long}")).0,
        200
    );
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps").0, 200);
    wait_cached(&hub, "test-agent/configmaps/_lists.json", |_| true);
    let dir = hub.cache_dir().join("test-agent/configmaps/a");
    let stored: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("lll"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}\n{}", hub.log());
    assert!(
        stored[0].starts_with(&"l".repeat(200)) && stored[0].contains('%') && stored[0].len() < 255,
        "{stored:?}"
    );
    assert_eq!(hub.metric("node_yurthub_cache_write_errors_total"), 0);
    go_offline(&hub, &fake);
    let (status, _, body) = get(&hub, &format!("/api/v1/namespaces/a/configmaps/{long}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["metadata"]["name"], long.as_str());
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps");
    assert_eq!(
        (status, names(&json(&body))),
        (200, vec!["cm1".to_string(), long])
    );
    assert!(quarantined(&hub).is_empty());
}

// ---------------------------------------------------------------- lists

#[test]
fn one_list_item_that_cannot_be_stored_never_stops_the_rest_of_its_list() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let cm1 = configmap("a", "cm1", 1, "");
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps",
        Behaviour::sequence(vec![
            Behaviour::ok_json(&configmap_list(
                5,
                &[cm1.clone(), configmap("a", "gone", 2, "")],
            )),
            Behaviour::ok_json(&configmap_list(
                9,
                &[
                    cm1,
                    configmap("a", "x/y", 6, ""),
                    configmap("a", "..", 7, ""),
                    configmap("a", "cm2", 8, ""),
                ],
            )),
        ]),
    );
    let hub = hub_for(&fake, &pki, &[]);
    get(&hub, "/api/v1/namespaces/a/configmaps");
    wait_cached(&hub, "test-agent/configmaps/a/gone.json", |_| true);
    get(&hub, "/api/v1/namespaces/a/configmaps");
    wait_cached(&hub, "test-agent/configmaps/a/cm2.json", |_| true);
    assert!(
        wait_until(WAIT, || cached(&hub, "test-agent/configmaps/a/gone.json")
            .is_none()),
        "the list is reconciled all the same\n{}",
        hub.log()
    );
    go_offline(&hub, &fake);
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps");
    assert_eq!(
        (status, names(&json(&body))),
        (200, vec!["cm1".to_string(), "cm2".into()]),
        "the shape is recorded: no list could ever hold those names"
    );
    assert!(!hub.cache_dir().join("test-agent/configmaps/a/x").exists());
}

// ---------------------------------------------------------------- misplaced files

#[test]
fn a_file_holding_another_object_than_its_path_names_is_set_aside_never_served() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    let hub = hub_for(&fake, &pki, &[]);
    get(&hub, "/api/v1/namespaces/a/configmaps");
    wait_cached(&hub, "test-agent/configmaps/a/cm3.json", |_| true);
    hub.expect_log("cache scan:", WAIT);
    go_offline(&hub, &fake);
    let dir = hub.cache_dir().join("test-agent/configmaps/a");
    let secret = r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"wrong-kind","namespace":"a","resourceVersion":"3"},"data":{}}"#;
    for (file, bytes) in [
        // cm1 copied under another name, cm1 of another namespace, a Secret.
        ("copied.json", configmap("a", "cm1", 10, r#""app":"web""#)),
        ("moved.json", configmap("b", "moved", 10, r#""app":"web""#)),
        ("wrong-kind.json", secret.to_string()),
    ] {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    for name in ["copied", "moved", "wrong-kind"] {
        let (status, _, body) = get(&hub, &format!("/api/v1/namespaces/a/configmaps/{name}"));
        assert_eq!(status, 404, "{name}: {}", String::from_utf8_lossy(&body));
    }
    // A file put there by hand while the hub runs is not in the index that
    // lists are answered from: never listed; asked for by name, set aside.
    std::fs::write(dir.join("listed.json"), configmap("a", "cm2", 10, "")).unwrap();
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps");
    assert_eq!(
        (status, names(&json(&body))),
        (200, vec!["cm1".to_string(), "cm2".into(), "cm3".into()])
    );
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps/listed").0, 404);
    let set_aside = quarantined(&hub);
    assert_eq!(set_aside.len(), 4, "{set_aside:?}");
    for name in ["copied", "moved", "wrong-kind", "listed"] {
        assert!(!dir.join(format!("{name}.json")).exists());
        assert!(
            set_aside
                .iter()
                .any(|q| q.contains(&format!("#{name}.json"))),
            "{name} in {set_aside:?}"
        );
    }
    assert_eq!(hub.metric("node_yurthub_cache_quarantined_files_total"), 4);
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps/cm1").0, 200);
}

// ---------------------------------------------------------------- symbolic links

/// A directory outside the cache root, with a ConfigMap `evil` in it that
/// would pass every check if the hub followed a link to it.
fn outside() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let outside = tempfile::tempdir().unwrap();
    let evil = configmap("a", "evil", 50, r#""app":"web""#).into_bytes();
    std::fs::create_dir_all(outside.path().join("a")).unwrap();
    let file = outside.path().join("a/evil.json");
    std::fs::write(&file, &evil).unwrap();
    (outside, file, evil)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_symlinked_file_in_the_cache_is_never_served_and_its_target_never_modified() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    fake.route(
        "GET",
        "/api/v1/namespaces/a/configmaps/evil",
        Behaviour::ok_json(&configmap("a", "evil", 60, r#""app":"web""#)),
    );
    let mut hub = hub_for(&fake, &pki, &[]);
    let (_outside, target, original) = outside();
    get(&hub, "/api/v1/namespaces/a/configmaps");
    wait_cached(&hub, "test-agent/configmaps/a/cm3.json", |_| true);
    hub.expect_log("cache scan:", WAIT);
    let link = hub.cache_dir().join("test-agent/configmaps/a/evil.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // Online, the link is set aside (never written through) and a newer
    // `evil` is stored in its place.
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps/evil").0, 200);
    wait_cached(&hub, "test-agent/configmaps/a/evil.json", |o| {
        o["metadata"]["resourceVersion"] == "60"
    });
    assert!(!link.symlink_metadata().unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), original);
    // Offline, a link put in its place is never followed: the answers come
    // from what the hub stored (resourceVersion 60, from memory), never
    // from the link's target (50).
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    go_offline(&hub, &fake);
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps/evil");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["metadata"]["resourceVersion"], "60");
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps");
    let list = json(&body);
    assert_eq!(
        (status, names(&list)),
        (
            200,
            vec!["cm1".to_string(), "cm2".into(), "cm3".into(), "evil".into()]
        )
    );
    assert_eq!(list["items"][3]["metadata"]["resourceVersion"], "60");
    assert_eq!(std::fs::read(&target).unwrap(), original);
    // At start, the scan sets links aside (the one still there); their
    // targets stay as they were.
    hub.kill();
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    hub.restart();
    hub.expect_log("1 damaged moved aside", WAIT);
    assert!(link.symlink_metadata().is_err());
    assert_eq!(std::fs::read(&target).unwrap(), original);
    assert_eq!(files_in(target.parent().unwrap()), ["evil.json"]);
    assert_eq!(quarantined(&hub).len(), 2);
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps/evil").0, 404);
}

#[test]
fn a_symlinked_directory_in_the_cache_is_never_written_or_read_through() {
    let pki = TestPki::new();
    let fake = fake_with_configmaps(&pki);
    let mut hub = hub_for(&fake, &pki, &[]);
    let (outside, target, original) = outside();
    hub.expect_log("cache scan:", WAIT);
    std::fs::create_dir_all(hub.cache_dir().join("test-agent")).unwrap();
    let link = hub.cache_dir().join("test-agent/configmaps");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    // The client still gets its answers; the writes are refused.
    let (status, _, body) = get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
    assert_eq!(
        (status, json(&body)["metadata"]["name"].as_str()),
        (200, Some("cm1"))
    );
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps").0, 200);
    let write_errors = || hub.metric("node_yurthub_cache_write_errors_total");
    assert!(wait_until(WAIT, || write_errors() >= 2), "{}", hub.log());
    assert_eq!(files_in(outside.path()), ["a"]);
    assert_eq!(files_in(&outside.path().join("a")), ["evil.json"]);
    assert_eq!(std::fs::read(&target).unwrap(), original);
    // Offline, nothing behind the link is served.
    go_offline(&hub, &fake);
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps/evil").0, 404);
    assert_eq!(get(&hub, "/api/v1/namespaces/a/configmaps").0, 404);
    // At start, the scan sets the link aside (not what it points to), and
    // the cache fills again where it belongs.
    hub.kill();
    fake.restart();
    hub.restart();
    hub.expect_log("1 damaged moved aside", WAIT);
    assert!(link.symlink_metadata().is_err());
    assert_eq!(files_in(&outside.path().join("a")), ["evil.json"]);
    get(&hub, "/api/v1/namespaces/a/configmaps/cm1");
    wait_cached(&hub, "test-agent/configmaps/a/cm1.json", |_| true);
    assert_eq!(files_in(&outside.path().join("a")), ["evil.json"]);
}
