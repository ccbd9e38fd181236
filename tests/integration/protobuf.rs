//! Protobuf through the hub: what kubelet asks for is cached as the apiserver
//! encoded it and served back offline in the encoding the client wants.
//! Responses are samples captured from kube-apiserver 1.20 (tests/fixtures/protobuf).

use std::time::Duration;

use crate::support::client::{self, RawStream, header};
use crate::support::{Behaviour, FakeApiserver, Hub, StreamEnd, TestPki, wait_until};

const WAIT: Duration = Duration::from_secs(10);
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const KUBELET: [(&str, &str); 2] = [
    (
        "User-Agent",
        "kubelet/v1.20.2 (linux/amd64) kubernetes/faecb19",
    ),
    (
        "Accept",
        "application/vnd.kubernetes.protobuf,application/json",
    ),
];

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/protobuf/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn protobuf(body: Vec<u8>) -> Behaviour {
    Behaviour::respond(200, &[("Content-Type", PROTOBUF)], body)
}

/// The captured watch stream, one frame per chunk.
fn watch_frames() -> Vec<(Duration, Vec<u8>)> {
    let stream = fixture("watch.pb");
    let mut frames = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let len = u32::from_be_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
        frames.push((Duration::from_millis(20), stream[at..at + 4 + len].to_vec()));
        at += 4 + len;
    }
    frames
}

fn kubelet_get(hub: &Hub, path: &str) -> client::Reply {
    client::request("GET", &format!("{}{path}", hub.proxy_url()), &KUBELET, &[])
}

fn fake_kubelet_world(pki: &TestPki) -> FakeApiserver {
    let fake = FakeApiserver::start(pki);
    fake.route(
        "GET",
        "/api/v1/namespaces/edge/configmaps/cm1",
        protobuf(fixture("cm1.pb")),
    );
    fake.route("GET", "/api/v1/pods", protobuf(fixture("podlist.pb")));
    fake.route(
        "GET",
        "/api/v1/namespaces/edge/configmaps",
        Behaviour::func(|r| {
            if r.query_param("watch").is_some() {
                Behaviour::Stream {
                    status: 200,
                    content_type: format!("{PROTOBUF};stream=watch"),
                    chunks: watch_frames(),
                    end: StreamEnd::UntilClientGone,
                }
            } else {
                protobuf(fixture("cmlist.pb"))
            }
        }),
    );
    fake
}

#[test]
fn kubelet_reads_are_cached_as_protobuf_and_served_back_offline() {
    let pki = TestPki::new();
    let fake = fake_kubelet_world(&pki);
    let hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    let pods = "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&limit=500";
    assert_eq!(kubelet_get(&hub, pods).2, fixture("podlist.pb"));
    assert_eq!(
        kubelet_get(&hub, "/api/v1/namespaces/edge/configmaps/cm1").2,
        fixture("cm1.pb")
    );
    let cache = hub.cache_dir();
    assert!(wait_until(WAIT, || std::fs::read(
        cache.join("kubelet/pods/edge/p1.pb")
    )
    .is_ok_and(|b| b == fixture("p1.pb"))));
    assert!(wait_until(WAIT, || cache
        .join("kubelet/pods/_lists.json")
        .exists()));
    assert!(wait_until(WAIT, || cache
        .join("kubelet/configmaps/edge/cm1.pb")
        .exists()));

    fake.stop();
    hub.wait_server_health(&fake.url(), false, WAIT);
    let (status, headers, body) = kubelet_get(&hub, "/api/v1/namespaces/edge/configmaps/cm1");
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, Some(PROTOBUF))
    );
    assert_eq!(
        body,
        fixture("cm1.pb"),
        "offline get is byte for byte the apiserver's answer"
    );
    let (status, _, body) = kubelet_get(&hub, pods);
    assert_eq!(status, 200);
    assert!(body.starts_with(b"k8s\0"));
    assert!(
        body.windows(2).any(|w| w == b"p1"),
        "the pod is in the offline list"
    );
    // A list for another node was never made: not answered.
    assert_eq!(
        kubelet_get(&hub, "/api/v1/pods?fieldSelector=spec.nodeName%3Dother").0,
        404
    );
    // JSON clients get a 404 for objects cached only as protobuf.
    let json_only = [KUBELET[0], ("Accept", "application/json")];
    let url = format!("{}/api/v1/namespaces/edge/configmaps/cm1", hub.proxy_url());
    assert_eq!(client::request("GET", &url, &json_only, &[]).0, 404);
    // Held watches speak the client's encoding.
    let watch = RawStream::get(
        &format!(
            "{}/api/v1/pods?watch=true&timeoutSeconds=1",
            hub.proxy_url()
        ),
        &KUBELET,
    );
    assert_eq!(
        watch.header("content-type"),
        Some("application/vnd.kubernetes.protobuf;stream=watch")
    );
}

#[test]
fn protobuf_watch_events_fill_and_empty_the_cache() {
    let pki = TestPki::new();
    let fake = fake_kubelet_world(&pki);
    let hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    let mut watch = RawStream::get(
        &format!(
            "{}/api/v1/namespaces/edge/configmaps?watch=true&resourceVersion=200",
            hub.proxy_url()
        ),
        &KUBELET,
    );
    let mut received = Vec::new();
    while received.len() < fixture("watch.pb").len() {
        let Some((_, piece)) = watch.next_chunk(WAIT) else {
            break;
        };
        received.extend(piece);
    }
    assert_eq!(
        received,
        fixture("watch.pb"),
        "the client gets the stream unchanged"
    );
    let cache = hub.cache_dir();
    // ADDED cm1, ADDED cm2, DELETED cm2: once the removal is counted, cm2 was
    // written and removed again.
    let removed = || hub.metric("node_yurthub_cache_objects_removed_total");
    assert!(
        wait_until(WAIT, || removed() == 1),
        "{} objects removed\n{}",
        removed(),
        hub.log()
    );
    assert_eq!(hub.metric("node_yurthub_cache_objects_written_total"), 2);
    assert!(cache.join("kubelet/configmaps/edge/cm1.pb").exists());
    assert!(!cache.join("kubelet/configmaps/edge/cm2.pb").exists());
}

#[test]
fn malformed_protobuf_reaches_the_client_but_never_the_cache() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let mut broken = fixture("cm1.pb");
    broken.truncate(150);
    fake.route(
        "GET",
        "/api/v1/namespaces/edge/configmaps/cm1",
        protobuf(broken.clone()),
    );
    let mut bad_frame = fixture("watch.pb")[..100].to_vec();
    bad_frame[0..4].copy_from_slice(&96u32.to_be_bytes());
    fake.route(
        "GET",
        "/api/v1/namespaces/edge/configmaps",
        Behaviour::Stream {
            status: 200,
            content_type: format!("{PROTOBUF};stream=watch"),
            chunks: vec![(Duration::ZERO, bad_frame.clone())],
            end: StreamEnd::Finish,
        },
    );
    let hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    assert_eq!(
        kubelet_get(&hub, "/api/v1/namespaces/edge/configmaps/cm1").2,
        broken
    );
    let mut watch = RawStream::get(
        &format!(
            "{}/api/v1/namespaces/edge/configmaps?watch=true",
            hub.proxy_url()
        ),
        &KUBELET,
    );
    assert_eq!(watch.read_to_end(WAIT), bad_frame);
    let decode_errors = || hub.metric("node_yurthub_cache_decode_errors_total");
    assert!(wait_until(WAIT, || decode_errors() >= 2), "{}", hub.log());
    assert!(!hub.cache_dir().join("kubelet/configmaps").exists());
    assert_eq!(kubelet_get(&hub, "/version").0, 404, "the hub is still up");
}
