//! Self-tests of the test support library: the fake apiserver and its live
//! collections driven directly over TLS (the test client, RawStream and
//! WatchRecorder), without the hub.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::client::{self, RawStream};
use crate::support::live_collection::{self, EventStatus};
use crate::support::{self, k8s_wire, wait_until};
use crate::support::{
    Behaviour, Encoding, FakeApiserver, LiveCollection, LivePoll, RecordedEvent, StreamEnd,
    TestPki, TokenIssuer, WatchRecorder, json_event, json_initial_events_end_bookmark, pb_event,
    pb_initial_events_end_bookmark,
};

fn node_agent(pki: &TestPki) -> client::Agent {
    client::tls_agent(&pki.ca_path(), Some(&pki.client_pem_path()))
}

#[test]
fn json_route_records_request_and_client_cn() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "POST",
        "/api/v1/namespaces/default/pods",
        Behaviour::json(201, r#"{"kind":"Pod"}"#),
    );
    let agent = node_agent(&pki);
    let url = format!(
        "{}/api/v1/namespaces/default/pods?fieldManager=kubectl&x=a%20b",
        fake.url()
    );
    let (status, headers, body) = client::request_with(
        &agent,
        "POST",
        &url,
        &[("Content-Type", "application/json"), ("X-Test", "1")],
        br#"{"metadata":{"name":"p"}}"#,
    );
    assert_eq!(status, 201);
    assert_eq!(
        client::header(&headers, "content-type"),
        Some("application/json")
    );
    assert_eq!(body, br#"{"kind":"Pod"}"#);

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/v1/namespaces/default/pods");
    assert_eq!(r.query, "fieldManager=kubectl&x=a%20b");
    assert_eq!(r.query_param("x").as_deref(), Some("a b"));
    assert_eq!(r.header("x-test"), Some("1"));
    assert_eq!(r.body, br#"{"metadata":{"name":"p"}}"#);
    assert_eq!(r.client_cert_cn.as_deref(), Some("system:node:edge-1"));

    // The admin certificate is seen as such.
    let admin = client::tls_agent(&pki.ca_path(), Some(&pki.admin_pem_path()));
    let (status, _, _) =
        client::request_with(&admin, "GET", &format!("{}/readyz", fake.url()), &[], &[]);
    assert_eq!(status, 200);
    let last = fake.requests().pop().unwrap();
    assert_eq!(last.client_cert_cn.as_deref(), Some("admin"));
}

#[test]
fn bearer_request_without_client_cert_is_accepted() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/nodes/edge-1",
        Behaviour::ok_json(r#"{"kind":"Node"}"#),
    );
    let agent = client::tls_agent(&pki.ca_path(), None);
    let (status, _, body) = client::request_with(
        &agent,
        "GET",
        &format!("{}/api/v1/nodes/edge-1", fake.url()),
        &[("Authorization", "Bearer abc")],
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(body, br#"{"kind":"Node"}"#);
    let r = fake.wait_for_requests(|r| r.path == "/api/v1/nodes/edge-1", Duration::from_secs(1));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].client_cert_cn, None);
    assert_eq!(r[0].header("authorization"), Some("Bearer abc"));
}

#[test]
fn foreign_client_cert_is_rejected() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let agent = client::tls_agent(&pki.ca_path(), Some(&other.client_pem_path()));
    let res = client::try_request_with(&agent, "GET", &format!("{}/readyz", fake.url()), &[], &[]);
    assert!(res.is_err(), "expected a TLS failure, got {res:?}");
    assert!(fake.requests().is_empty());
}

#[test]
fn default_routes_readyz_and_404_and_route_precedence() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let agent = node_agent(&pki);
    let get = |path: &str| {
        client::request_with(&agent, "GET", &format!("{}{path}", fake.url()), &[], &[])
    };

    let (status, _, body) = get("/readyz");
    assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
    fake.set_readyz(500);
    assert_eq!(get("/readyz").0, 500);
    fake.set_readyz(200);
    assert_eq!(get("/readyz").0, 200);

    let (status, _, body) = get("/api/v1/pods");
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["code"], 404);

    fake.route("GET", "/api/*", Behaviour::ok_json(r#"{"a":1}"#));
    fake.route("GET", "/api/v1/pods", Behaviour::ok_json(r#"{"b":2}"#));
    assert_eq!(get("/api/v1/pods").2, br#"{"b":2}"#);
    assert_eq!(get("/api/v1/nodes").2, br#"{"a":1}"#);
    fake.route("*", "/api/*", Behaviour::text(503, "later wins"));
    assert_eq!(get("/api/v1/pods").0, 503);

    // Keep-alive: all of those went over one connection.
    let ids: std::collections::HashSet<u64> = fake.requests().iter().map(|r| r.conn_id).collect();
    assert_eq!(ids.len(), 1, "expected connection reuse");
}

#[test]
fn sequence_and_func_behaviours() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/seq",
        Behaviour::sequence(vec![Behaviour::text(500, "a"), Behaviour::text(200, "b")]),
    );
    fake.route(
        "GET",
        "/echo",
        Behaviour::func(|r| Behaviour::text(200, &r.query)),
    );
    let agent = node_agent(&pki);
    let get = |path: &str| {
        client::request_with(&agent, "GET", &format!("{}{path}", fake.url()), &[], &[])
    };
    assert_eq!(get("/seq").0, 500);
    assert_eq!(get("/seq").0, 200);
    assert_eq!(get("/seq").0, 200);
    assert_eq!(get("/echo?q=1").2, b"q=1");
}

#[test]
fn slow_drop_and_truncated() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/slow",
        Behaviour::slow(Duration::from_millis(300), Behaviour::ok_json("{}")),
    );
    fake.route("GET", "/drop", Behaviour::Drop);
    fake.route(
        "GET",
        "/trunc",
        Behaviour::Truncated {
            status: 200,
            declared_len: 100,
            body: b"{\"short\":".to_vec(),
        },
    );
    let agent = node_agent(&pki);

    let t0 = Instant::now();
    let (status, _, _) =
        client::request_with(&agent, "GET", &format!("{}/slow", fake.url()), &[], &[]);
    assert_eq!(status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));

    let res = client::try_request_with(&agent, "GET", &format!("{}/drop", fake.url()), &[], &[]);
    assert!(res.is_err(), "drop should fail, got {res:?}");
    assert_eq!(
        fake.requests_to("/drop").len(),
        1,
        "the request is read before dropping"
    );

    let res = client::try_request_with(&agent, "GET", &format!("{}/trunc", fake.url()), &[], &[]);
    assert!(res.is_err(), "truncated body should fail, got {res:?}");

    // The server still works afterwards.
    assert_eq!(
        client::request_with(&agent, "GET", &format!("{}/readyz", fake.url()), &[], &[]).0,
        200
    );
}

#[test]
fn chunked_request_body_is_decoded() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route("POST", "/upload", Behaviour::text(200, "done"));
    let data = vec![b'x'; 100_000];
    let mut chunked = Vec::new();
    for piece in data.chunks(16 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let resp = RawStream::try_open(
        "POST",
        &format!("{}/upload", fake.url()),
        &[("Transfer-Encoding", "chunked")],
        &chunked,
        Some(client::rustls_client_config(
            &pki.ca_path(),
            Some(&pki.client_pem_path()),
        )),
        Duration::from_secs(10),
    )
    .expect("post");
    assert_eq!(resp.status(), 200);
    let r = fake.wait_for_requests(|r| r.path == "/upload", Duration::from_secs(1));
    assert_eq!(r[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(r[0].body.len(), data.len());
}

#[test]
fn stream_is_delivered_chunk_by_chunk() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let gap = Duration::from_millis(200);
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::watch(
            vec![
                (
                    Duration::ZERO,
                    r#"{"type":"ADDED","object":{"n":1}}"#.to_string(),
                ),
                (gap, r#"{"type":"MODIFIED","object":{"n":2}}"#.to_string()),
                (gap, r#"{"type":"DELETED","object":{"n":3}}"#.to_string()),
            ],
            StreamEnd::Finish,
        ),
    );

    // Each chunk arrives on its own, separated by the scripted gaps.
    let mut first = RawStream::get_tls(
        &format!("{}/api/v1/pods?watch=true", fake.url()),
        &[],
        &pki.ca_path(),
        Some(&pki.client_pem_path()),
    );
    assert_eq!(first.status(), 200);
    let mut arrivals = Vec::new();
    let mut all = Vec::new();
    while let Some((at, chunk)) = first.next_chunk(Duration::from_secs(2)) {
        arrivals.push(at);
        all.extend_from_slice(&chunk);
    }
    assert!(first.is_ended());
    assert_eq!(
        arrivals.len(),
        3,
        "one read per chunk: {:?}",
        String::from_utf8_lossy(&all)
    );
    assert!(arrivals[1] - arrivals[0] >= gap - Duration::from_millis(20));
    let events: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&all)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["type"], "DELETED");

    // Recorded write times, and RawStream arrival times within milliseconds of them.
    assert_eq!(fake.chunk_write_times().len(), 3);
    let mut raw = RawStream::get_tls(
        &format!("{}/api/v1/pods?watch=true", fake.url()),
        &[("Accept", "application/json")],
        &pki.ca_path(),
        Some(&pki.client_pem_path()),
    );
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.header("transfer-encoding"), Some("chunked"));
    let mut got = Vec::new();
    while let Some((at, line)) = raw.next_line(Duration::from_secs(2)) {
        got.push((at, line));
    }
    assert!(raw.is_ended());
    assert_eq!(got.len(), 3);
    let writes = fake.chunk_writes();
    assert_eq!(writes.len(), 6);
    for ((at, line), w) in got.iter().zip(&writes[3..]) {
        assert_eq!(line, &w.data);
        let lag = at.saturating_duration_since(w.written_at);
        assert!(lag < Duration::from_millis(50), "lag {lag:?}");
    }
}

#[test]
fn stream_ends_drop_stall_until_client_gone() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let one = vec![(Duration::ZERO, b"{\"a\":1}\n".to_vec())];
    let stream = |end| Behaviour::Stream {
        status: 200,
        content_type: "application/json".into(),
        chunks: one.clone(),
        end,
    };
    fake.route("GET", "/drop", stream(StreamEnd::Drop));
    fake.route(
        "GET",
        "/stall",
        stream(StreamEnd::Stall(Duration::from_millis(300))),
    );
    fake.route("GET", "/gone", stream(StreamEnd::UntilClientGone));
    let open = |path: &str| {
        RawStream::get_tls(
            &format!("{}{path}", fake.url()),
            &[],
            &pki.ca_path(),
            Some(&pki.client_pem_path()),
        )
    };

    let mut s = open("/drop");
    assert_eq!(
        s.next_chunk(Duration::from_secs(2)).unwrap().1,
        b"{\"a\":1}\n"
    );
    assert!(s.next_chunk(Duration::from_secs(2)).is_none());
    assert!(s.is_ended());

    let mut s = open("/stall");
    assert!(s.next_chunk(Duration::from_secs(2)).is_some());
    assert!(s.next_chunk(Duration::from_millis(100)).is_none());
    assert!(!s.is_ended(), "still open during the stall");
    let t0 = Instant::now();
    assert!(s.next_chunk(Duration::from_secs(2)).is_none());
    assert!(s.is_ended());
    assert!(t0.elapsed() < Duration::from_secs(1));

    let mut s = open("/gone");
    assert!(s.next_chunk(Duration::from_secs(2)).is_some());
    assert!(s.next_chunk(Duration::from_millis(300)).is_none());
    assert!(!s.is_ended());
    assert!(fake.streams_closed_by_client().is_empty());
    let closed_at = Instant::now();
    s.close();
    let gone = support::wait_for(Duration::from_secs(2), || {
        fake.streams_closed_by_client().pop()
    });
    let (path, at) = gone.expect("server noticed the client leaving");
    assert_eq!(path, "/gone");
    assert!(at - closed_at < Duration::from_millis(500));
}

#[test]
fn stop_and_restart_on_same_port() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route("GET", "/x", Behaviour::ok_json("{}"));
    fake.route(
        "GET",
        "/watch",
        Behaviour::watch(
            vec![(Duration::ZERO, "{}".into())],
            StreamEnd::UntilClientGone,
        ),
    );
    let url = fake.url();
    let agent = node_agent(&pki);
    assert_eq!(
        client::request_with(&agent, "GET", &format!("{url}/x"), &[], &[]).0,
        200
    );

    let mut watch = RawStream::get_tls(
        &format!("{url}/watch"),
        &[],
        &pki.ca_path(),
        Some(&pki.client_pem_path()),
    );
    assert!(watch.next_chunk(Duration::from_secs(2)).is_some());
    assert_eq!(fake.open_connections(), 2);

    let t0 = Instant::now();
    fake.stop();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t0.elapsed()
    );
    assert!(!fake.is_running());
    assert_eq!(fake.open_connections(), 0);
    // The open watch is cut, new connections are refused.
    assert!(watch.next_chunk(Duration::from_secs(2)).is_none());
    assert!(watch.is_ended());
    let err = TcpStream::connect(fake.addr()).expect_err("refused while stopped");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(client::try_request_with(&agent, "GET", &format!("{url}/x"), &[], &[]).is_err());
    fake.stop(); // idempotent

    fake.restart();
    assert_eq!(fake.url(), url);
    let (status, _, body) = client::request_with(&agent, "GET", &format!("{url}/x"), &[], &[]);
    assert_eq!((status, body.as_slice()), (200, b"{}".as_slice()));
    assert_eq!(fake.requests_to("/x").len(), 2, "records survive a restart");
}

#[test]
fn idle_connections_close_on_request_and_after_connection_close() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route("GET", "/x", Behaviour::ok_json("{}"));
    fake.route(
        "GET",
        "/last",
        Behaviour::respond(200, &[("Connection", "close")], "{}"),
    );
    let open = |path: &str| {
        RawStream::get_tls(
            &format!("{}{path}", fake.url()),
            &[],
            &pki.ca_path(),
            Some(&pki.client_pem_path()),
        )
    };
    let mut idle = open("/x");
    assert_eq!(idle.read_to_end(Duration::from_secs(5)), b"{}");
    assert_eq!(fake.open_connections(), 1, "kept alive after its answer");
    assert!(support::wait_until(Duration::from_secs(5), || fake.close_idle_connections()));
    assert_eq!(fake.open_connections(), 0);
    let mut last = open("/last");
    assert_eq!(last.read_to_end(Duration::from_secs(5)), b"{}");
    assert!(
        support::wait_until(Duration::from_secs(5), || fake.open_connections() == 0),
        "closed after saying so"
    );
}

#[test]
fn pieces_arrive_as_scripted() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let pieces = [
        &b"HTTP/1.1 200 OK\r\nTransfer-"[..],
        b"Encoding: chunked\r\n\r\n2\r",
        b"\nok\r\n0\r\n\r\n",
    ];
    fake.route(
        "GET",
        "/p",
        Behaviour::Pieces(pieces.iter().map(|p| p.to_vec()).collect()),
    );
    let mut raw = RawStream::get_tls(
        &format!("{}/p", fake.url()),
        &[],
        &pki.ca_path(),
        Some(&pki.client_pem_path()),
    );
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.read_to_end(Duration::from_secs(5)), b"ok");
    assert!(raw.is_ended());
}

#[test]
fn drop_closes_port_promptly() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/slow",
        Behaviour::slow(Duration::from_secs(60), Behaviour::ok_json("{}")),
    );
    let addr = fake.addr();
    let url = format!("{}/slow", fake.url());
    let ca = pki.ca_path();
    let pem = pki.client_pem_path();
    let waiter = std::thread::spawn(move || {
        let agent = client::tls_agent(&ca, Some(&pem));
        client::try_request_with(&agent, "GET", &url, &[], &[]).is_err()
    });
    assert_eq!(
        fake.wait_for_requests(|r| r.path == "/slow", Duration::from_secs(2))
            .len(),
        1
    );
    let t0 = Instant::now();
    drop(fake);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t0.elapsed()
    );
    assert!(waiter.join().unwrap(), "the pending request fails");
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn cert_cn_parses_test_certs() {
    let pki = TestPki::new();
    assert_eq!(
        support::pki::cert_cn(pki.client_cert_der()).as_deref(),
        Some("system:node:edge-1")
    );
    assert_eq!(
        support::pki::cert_cn(pki.admin_cert_der()).as_deref(),
        Some("admin")
    );
    assert_eq!(
        support::pki::cert_cn(pki.ca_der()).as_deref(),
        Some("yurthub-test-ca")
    );
    let pem = std::fs::read_to_string(pki.client_pem_path()).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("PRIVATE KEY"));
}

// ------------------------------------------------- modern apiserver answers

const WATCH_LIST_QUERY: &str = "allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Dedge-1&resourceVersion=&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=300&watch=true";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/protobuf/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn open_tls(fake: &FakeApiserver, pki: &TestPki, path_and_query: &str) -> RawStream {
    RawStream::get_tls(
        &format!("{}{path_and_query}", fake.url()),
        &[],
        &pki.ca_path(),
        Some(&pki.client_pem_path()),
    )
}

/// JSON events of a stream, until `n` arrived or 2 s passed.
fn json_lines(stream: &mut RawStream, n: usize) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    while events.len() < n {
        let Some((_, line)) = stream.next_line(Duration::from_secs(2)) else {
            break;
        };
        events.push(serde_json::from_slice(&line).expect("one JSON event per line"));
    }
    events
}

/// Raw lines of a stream, until `n` arrived or 2 s passed.
fn json_lines_raw(stream: &mut RawStream, n: usize) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| stream.next_line(Duration::from_secs(2)).map(|(_, l)| l))
        .take(n)
        .collect()
}

/// Protobuf frames of a stream, until `n` arrived or 2 s passed.
fn pb_stream_frames(stream: &mut RawStream, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut bytes = Vec::new();
    loop {
        if let Some(frames) = k8s_wire::pb_frames(&bytes).filter(|f| f.len() >= n) {
            return frames;
        }
        match stream.next_chunk(Duration::from_secs(2)) {
            Some((_, chunk)) => bytes.extend(chunk),
            None => return k8s_wire::pb_frames(&bytes).unwrap_or_default(),
        }
    }
}

#[test]
fn streaming_list_json_sends_added_events_then_annotated_bookmark() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let pods: Vec<Vec<u8>> = ["p1", "p2", "p3"]
        .iter()
        .map(|n| k8s_wire::json_pod("edge", n, 90, "edge-1").into_bytes())
        .collect();
    let modified = k8s_wire::json_pod("edge", "p1", 101, "edge-1");
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::streaming_list(
            Encoding::Json,
            "Pod",
            "v1",
            pods,
            100,
            vec![(
                Duration::from_millis(50),
                json_event("MODIFIED", &modified).into_bytes(),
            )],
            StreamEnd::UntilClientGone,
        ),
    );

    let mut stream = open_tls(&fake, &pki, &format!("/api/v1/pods?{WATCH_LIST_QUERY}"));
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.header("content-type"), Some("application/json"));
    let events = json_lines(&mut stream, 5);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "ADDED", "ADDED", "BOOKMARK", "MODIFIED"]);
    assert_eq!(events[1]["object"]["metadata"]["name"], "p2");
    assert_eq!(events[1]["object"]["spec"]["nodeName"], "edge-1");
    let bookmark = &events[3];
    assert!(k8s_wire::json_is_initial_events_end(bookmark));
    assert_eq!(bookmark["object"]["kind"], "Pod");
    assert_eq!(bookmark["object"]["apiVersion"], "v1");
    assert_eq!(bookmark["object"]["metadata"]["resourceVersion"], "100");
    assert_eq!(events[4]["object"]["metadata"]["resourceVersion"], "101");
    assert!(
        stream.next_line(Duration::from_millis(100)).is_none() && !stream.is_ended(),
        "then an open watch"
    );
    assert!(
        events
            .iter()
            .take(3)
            .all(|e| !k8s_wire::json_is_initial_events_end(e))
    );

    // A plain watch from the list's RV gets only what came after.
    let mut stream = open_tls(&fake, &pki, "/api/v1/pods?watch=true&resourceVersion=100");
    let events = json_lines(&mut stream, 1);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "MODIFIED");

    // A LIST on the same route.
    let agent = node_agent(&pki);
    let (status, headers, body) = client::request_with(
        &agent,
        "GET",
        &format!("{}/api/v1/pods?limit=500", fake.url()),
        &[],
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(
        client::header(&headers, "content-type"),
        Some("application/json")
    );
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["metadata"]["resourceVersion"], "100");
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
}

#[test]
fn streaming_list_protobuf_sends_added_frames_then_annotated_bookmark() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let pods = vec![
        k8s_wire::pb_pod("edge", "p1", 90, "edge-1"),
        k8s_wire::pb_pod("edge", "p2", 91, "edge-1"),
    ];
    let deleted = pb_event("DELETED", &k8s_wire::pb_pod("edge", "p2", 102, "edge-1"));
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::streaming_list(
            Encoding::Protobuf,
            "Pod",
            "v1",
            pods.clone(),
            100,
            vec![(Duration::from_millis(50), deleted)],
            StreamEnd::UntilClientGone,
        ),
    );

    let mut stream = open_tls(&fake, &pki, &format!("/api/v1/pods?{WATCH_LIST_QUERY}"));
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.header("content-type"),
        Some("application/vnd.kubernetes.protobuf;stream=watch")
    );
    let frames = pb_stream_frames(&mut stream, 4);
    let types: Vec<&str> = frames.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["ADDED", "ADDED", "BOOKMARK", "DELETED"]);
    assert_eq!(frames[0].1, pods[0], "objects travel unchanged");
    let p2 = k8s_wire::pb_decode(&frames[1].1).unwrap();
    assert_eq!(
        (p2.kind.as_str(), p2.name.as_str(), p2.namespace.as_str()),
        ("Pod", "p2", "edge")
    );
    assert_eq!(p2.node_name.as_deref(), Some("edge-1"));
    let bookmark = k8s_wire::pb_decode(&frames[2].1).unwrap();
    assert_eq!(
        (bookmark.api_version.as_str(), bookmark.kind.as_str()),
        ("v1", "Pod")
    );
    assert_eq!(bookmark.resource_version, "100");
    assert!(bookmark.is_initial_events_end());
    assert_eq!(bookmark.name, "");
    assert_eq!(
        frames[2].1,
        pb_initial_events_end_bookmark("Pod", "v1", 100)
    );
    assert!(
        !k8s_wire::pb_decode(&frames[0].1)
            .unwrap()
            .is_initial_events_end()
    );

    // A LIST on the same route.
    let agent = node_agent(&pki);
    let (status, headers, body) = client::request_with(
        &agent,
        "GET",
        &format!("{}/api/v1/pods", fake.url()),
        &[],
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(
        client::header(&headers, "content-type"),
        Some("application/vnd.kubernetes.protobuf")
    );
    let list = k8s_wire::pb_decode_list(&body).unwrap();
    assert_eq!(
        (list.kind.as_str(), list.resource_version.as_str()),
        ("PodList", "100")
    );
    let names: Vec<&str> = list.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["p1", "p2"]);
    assert_eq!(list.items[1].node_name.as_deref(), Some("edge-1"));
}

#[test]
fn apiserver_without_streaming_lists_sends_no_annotated_bookmark() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let json_pods = vec![
        k8s_wire::json_pod("edge", "p1", 90, "edge-1").into_bytes(),
        k8s_wire::json_pod("edge", "p2", 91, "edge-1").into_bytes(),
    ];
    let bookmark = json_event("BOOKMARK", &k8s_wire::json_bookmark("Pod", "v1", 150));
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::streaming_list_unsupported(
            Encoding::Json,
            "Pod",
            "v1",
            json_pods,
            100,
            vec![(Duration::from_millis(20), bookmark.into_bytes())],
            StreamEnd::Finish,
        ),
    );
    let pb_pods = vec![k8s_wire::pb_pod("edge", "p1", 90, "edge-1")];
    fake.route(
        "GET",
        "/api/v1/namespaces/edge/pods",
        Behaviour::streaming_list_unsupported(
            Encoding::Protobuf,
            "Pod",
            "v1",
            pb_pods,
            100,
            vec![],
            StreamEnd::Finish,
        ),
    );

    let mut stream = open_tls(&fake, &pki, &format!("/api/v1/pods?{WATCH_LIST_QUERY}"));
    let events = k8s_wire::json_events(&stream.read_to_end(Duration::from_secs(2))).unwrap();
    assert!(stream.is_ended());
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "ADDED", "BOOKMARK"]);
    assert!(
        !events.iter().any(k8s_wire::json_is_initial_events_end),
        "a plain bookmark only"
    );

    let mut stream = open_tls(
        &fake,
        &pki,
        &format!("/api/v1/namespaces/edge/pods?{WATCH_LIST_QUERY}"),
    );
    let frames = k8s_wire::pb_frames(&stream.read_to_end(Duration::from_secs(2))).unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, "ADDED");
}

#[test]
fn protobuf_helpers_agree_with_apiserver_samples() {
    // Decoding what kube-apiserver wrote.
    let cm1 = k8s_wire::pb_decode(&fixture("cm1.pb")).unwrap();
    assert_eq!(
        (cm1.api_version.as_str(), cm1.kind.as_str()),
        ("v1", "ConfigMap")
    );
    assert_eq!(
        (
            cm1.namespace.as_str(),
            cm1.name.as_str(),
            cm1.resource_version.as_str()
        ),
        ("edge", "cm1", "201")
    );
    assert_eq!(cm1.labels, [("app".to_string(), "web".to_string())]);
    let p1 = k8s_wire::pb_decode(&fixture("p1.pb")).unwrap();
    assert_eq!((p1.kind.as_str(), p1.name.as_str()), ("Pod", "p1"));
    assert_eq!(p1.node_name.as_deref(), Some("edge-1"));
    assert!(
        p1.annotation("kubectl.kubernetes.io/last-applied-configuration")
            .is_some()
    );
    let list = k8s_wire::pb_decode_list(&fixture("podlist.pb")).unwrap();
    assert_eq!(list.kind, "PodList");
    assert_eq!(list.items[0].node_name.as_deref(), Some("edge-1"));

    // Building the same layout.
    let built = k8s_wire::pb_object("ConfigMap", "v1", "edge", "cm1", 201, &[("app", "web")]);
    let decoded = k8s_wire::pb_decode(&built).unwrap();
    assert_eq!(
        decoded,
        k8s_wire::PbObject {
            uid: decoded.uid.clone(),
            annotations: vec![],
            ..cm1
        }
    );
    let header = b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12";
    assert!(built.starts_with(header) && fixture("cm1.pb").starts_with(header));
    assert!(
        built.ends_with(b"\x1a\x00\x22\x00"),
        "empty contentEncoding and contentType"
    );
    let pod = k8s_wire::pb_decode(&k8s_wire::pb_pod("edge", "p1", 206, "edge-1")).unwrap();
    assert_eq!(
        (pod.name, pod.namespace, pod.resource_version, pod.node_name),
        (p1.name, p1.namespace, p1.resource_version, p1.node_name)
    );
    assert_eq!(
        k8s_wire::pb_list("ConfigMap", "v1", 202, &[]),
        fixture("emptylist.pb")
    );
    assert_eq!(
        k8s_wire::pb_list("ConfigMap", "v1", 202, &[fixture("cm1.pb")]),
        fixture("cmlist.pb")
    );

    // Watch frames split and re-encoded byte for byte.
    let stream = fixture("watch.pb");
    let frames = k8s_wire::pb_frames(&stream).unwrap();
    let types: Vec<&str> = frames.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["ADDED", "ADDED", "DELETED", "BOOKMARK"]);
    let rebuilt: Vec<u8> = frames.iter().flat_map(|(t, o)| pb_event(t, o)).collect();
    assert_eq!(rebuilt, stream);
    assert!(k8s_wire::pb_frames(&stream[..stream.len() - 1]).is_none());

    // 1.20's bookmark is ours plus clusterName (ObjectMeta field 15, gone
    // since 1.25): empty strings, generation 0, an empty creationTimestamp.
    let ours = k8s_wire::pb_bookmark("ConfigMap", "v1", 204);
    assert_eq!(
        ours,
        b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x15\x0a\x13\
          \x0a\x00\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x03204\x38\x00\x42\x00\
          \x1a\x00\x22\x00"
    );
    assert_eq!(
        k8s_wire::pb_decode(&frames[3].1),
        k8s_wire::pb_decode(&ours)
    );
    let annotated = k8s_wire::pb_decode(&pb_initial_events_end_bookmark("ConfigMap", "v1", 204));
    assert_eq!(
        annotated.unwrap().annotations,
        [("k8s.io/initial-events-end".to_string(), "true".to_string())]
    );
}

#[test]
fn json_and_text_helpers() {
    let line = json_event(
        "ADDED",
        &k8s_wire::json_object("ConfigMap", "v1", "edge", "cm1", 7, &[("a", "b")]),
    );
    assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    assert_eq!(
        json_event("ADDED", r#"{"z":1,"a":[2]}"#),
        "{\"type\":\"ADDED\",\"object\":{\"z\":1,\"a\":[2]}}\n",
        "the object is kept as given"
    );
    assert_eq!(
        json_event("DELETED", "{\n  \"a\": 1\n}\n"),
        "{\"type\":\"DELETED\",\"object\":{\"a\":1}}\n"
    );
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["object"]["metadata"]["labels"]["a"], "b");
    assert_eq!(event["object"]["metadata"]["resourceVersion"], "7");
    let bookmark: serde_json::Value =
        serde_json::from_str(&json_initial_events_end_bookmark("Secret", "v1", 9)).unwrap();
    assert_eq!(
        bookmark,
        serde_json::json!({
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {
                "resourceVersion": "9",
                "creationTimestamp": null,
                "annotations": {"k8s.io/initial-events-end": "true"},
            },
        })
    );
    assert_eq!(
        k8s_wire::fake_uid("edge", "p1"),
        k8s_wire::fake_uid("edge", "p1")
    );
    assert_ne!(
        k8s_wire::fake_uid("edge", "p1"),
        k8s_wire::fake_uid("edge", "p2")
    );

    let at = |secs| k8s_wire::rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
    assert_eq!(at(0), "1970-01-01T00:00:00Z");
    assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    let b64: Vec<String> = ["", "f", "fo", "foo", "foob", "fooba", "foobar"]
        .iter()
        .map(|s| k8s_wire::base64url(s.as_bytes()))
        .collect();
    assert_eq!(
        b64,
        ["", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"]
    );
    assert_eq!(k8s_wire::base64url(&[0xfb, 0xff]), "-_8");
}

fn post_token(agent: &client::Agent, fake: &FakeApiserver, sa: &str, body: &str) -> client::Reply {
    client::request_with(
        agent,
        "POST",
        &format!(
            "{}/api/v1/namespaces/edge/serviceaccounts/{sa}/token",
            fake.url()
        ),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

#[test]
fn token_requests_get_distinct_tokens_expiring_as_scripted() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let issuer = TokenIssuer::new(Duration::from_secs(3600));
    fake.route("*", "/api/v1/namespaces/*", issuer.behaviour());
    let agent = node_agent(&pki);
    let body = k8s_wire::json_token_request(&["api", "vault"], 3607, "p1", "uid-1");

    let before = SystemTime::now();
    let (status, headers, reply) = post_token(&agent, &fake, "default", &body);
    assert_eq!(status, 201);
    assert_eq!(
        client::header(&headers, "content-type"),
        Some("application/json")
    );
    let answer: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(answer["kind"], "TokenRequest");
    assert_eq!(answer["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(answer["metadata"]["name"], "default");
    assert_eq!(answer["metadata"]["namespace"], "edge");
    assert_eq!(
        answer["spec"]["audiences"],
        serde_json::json!(["api", "vault"])
    );
    assert_eq!(answer["spec"]["expirationSeconds"], 3607);
    assert_eq!(answer["spec"]["boundObjectRef"]["name"], "p1");
    let token = answer["status"]["token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped: {token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    );
    let issued = issuer.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].token, token);
    assert_eq!(issued[0].bound_object_name.as_deref(), Some("p1"));
    assert_eq!(
        answer["status"]["expirationTimestamp"],
        issued[0].expiration_timestamp.as_str()
    );
    assert_eq!(
        issued[0].expiration_timestamp,
        k8s_wire::rfc3339(issued[0].expires_at)
    );
    let lifetime = issued[0].expires_at.duration_since(before).unwrap();
    assert!(
        lifetime > Duration::from_secs(3598) && lifetime <= Duration::from_secs(3601),
        "{lifetime:?}"
    );

    // Another call: another token; no audiences: the default one.
    let bare = r#"{"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1","spec":{}}"#;
    let (status, _, reply) = post_token(&agent, &fake, "builder", bare);
    assert_eq!(status, 201);
    let answer: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(
        answer["spec"]["audiences"],
        serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert_eq!(answer["spec"]["expirationSeconds"], 3600);
    assert_ne!(answer["status"]["token"], token);
    assert_eq!(issuer.issued()[1].service_account, "builder");

    // Short-lived and already expired tokens.
    issuer.set_lifetime(Duration::from_secs(2));
    post_token(&agent, &fake, "default", &body);
    let short = issuer.issued()[2].expires_at;
    assert!(short > before && short <= SystemTime::now() + Duration::from_secs(2));
    issuer.set_expired(Duration::from_secs(600));
    let (status, _, _) = post_token(&agent, &fake, "default", &body);
    assert_eq!(status, 201);
    assert!(issuer.issued()[3].expires_at < before);

    // Not a TokenRequest.
    assert_eq!(post_token(&agent, &fake, "default", "not json").0, 400);
    let get = |path: &str| {
        client::request_with(&agent, "GET", &format!("{}{path}", fake.url()), &[], &[]).0
    };
    assert_eq!(
        get("/api/v1/namespaces/edge/serviceaccounts/default/token"),
        405
    );
    assert_eq!(get("/api/v1/namespaces/edge/pods"), 404);
    assert_eq!(issuer.issued().len(), 4);

    // The shortcut behaves the same.
    let fake2 = FakeApiserver::start(&pki);
    fake2.route(
        "POST",
        "/api/v1/namespaces/edge/serviceaccounts/default/token",
        Behaviour::token_request(Duration::from_secs(60)),
    );
    let (status, _, reply) = post_token(&agent, &fake2, "default", &body);
    assert_eq!(status, 201);
    let answer: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert!(
        answer["status"]["token"]
            .as_str()
            .is_some_and(|t| t.len() > 20)
    );
}

/// GET with a client-side timeout, on a fresh connection.
fn get_with_timeout(pki: &TestPki, url: &str, timeout: Duration) -> std::io::Result<u16> {
    let agent =
        client::tls_agent_with_timeout(&pki.ca_path(), Some(&pki.client_pem_path()), timeout);
    client::try_request_with(&agent, "GET", url, &[], &[]).map(|(status, _, _)| status)
}

#[test]
fn frozen_fake_accepts_connections_but_answers_nothing_until_thawed() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route("GET", "/x", Behaviour::ok_json("{}"));
    let readyz = format!("{}/readyz", fake.url());
    let agent = node_agent(&pki);
    let mut kept_alive = RawStream::get_tls(
        &format!("{}/x", fake.url()),
        &[],
        &pki.ca_path(),
        Some(&pki.client_pem_path()),
    );
    assert_eq!(kept_alive.status(), 200);
    assert_eq!(kept_alive.read_to_end(Duration::from_secs(5)), b"{}");

    fake.freeze();
    assert!(fake.is_frozen() && fake.is_running());
    // The kernel still completes the TCP handshake; nothing comes back.
    let mut tcp = TcpStream::connect_timeout(&fake.addr(), Duration::from_secs(1))
        .expect("connect while frozen");
    tcp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let err = tcp.read(&mut [0u8; 16]).expect_err("silence, not EOF");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err:?}"
    );
    // Probes and requests, new or on a kept-alive connection, time out.
    let t0 = Instant::now();
    assert!(get_with_timeout(&pki, &readyz, Duration::from_millis(500)).is_err());
    assert!(t0.elapsed() >= Duration::from_millis(450));
    let again = kept_alive.try_again("GET", "/x", &[], &[], Duration::from_millis(500));
    assert!(again.is_err(), "{again:?}");
    assert!(
        fake.requests_to("/readyz").is_empty(),
        "nothing read while frozen"
    );

    fake.thaw();
    assert!(!fake.is_frozen());
    assert_eq!(
        get_with_timeout(&pki, &readyz, Duration::from_secs(5)).unwrap(),
        200
    );
    assert_eq!(
        client::request_with(&agent, "GET", &format!("{}/x", fake.url()), &[], &[]).0,
        200
    );
}

#[test]
fn frozen_fake_stalls_open_streams_and_pending_answers() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let gap = Duration::from_millis(200);
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::watch(
            vec![
                (Duration::ZERO, r#"{"n":1}"#.into()),
                (gap, r#"{"n":2}"#.into()),
                (gap, r#"{"n":3}"#.into()),
            ],
            StreamEnd::UntilClientGone,
        ),
    );
    fake.route(
        "GET",
        "/slow",
        Behaviour::slow(gap, Behaviour::ok_json("{}")),
    );

    let mut watch = open_tls(&fake, &pki, "/api/v1/pods?watch=true");
    assert!(watch.next_line(Duration::from_secs(2)).is_some());
    let url = format!("{}/slow", fake.url());
    let (ca, pem) = (pki.ca_path(), pki.client_pem_path());
    let pending = std::thread::spawn(move || {
        let agent = client::tls_agent(&ca, Some(&pem));
        client::request_with(&agent, "GET", &url, &[], &[]).0
    });
    assert_eq!(
        fake.wait_for_requests(|r| r.path == "/slow", Duration::from_secs(2))
            .len(),
        1
    );
    fake.freeze();

    // Longer than both scripted delays: nothing arrives, nothing closes.
    assert!(watch.next_line(Duration::from_millis(700)).is_none());
    assert!(!watch.is_ended(), "a stalled stream stays open");
    assert!(!support::wait_until(Duration::from_millis(100), || pending.is_finished()));
    assert_eq!(fake.chunk_writes().len(), 1);

    fake.thaw();
    let rest = json_lines_raw(&mut watch, 2);
    assert_eq!(rest, [b"{\"n\":2}\n".to_vec(), b"{\"n\":3}\n".to_vec()]);
    assert_eq!(
        pending.join().unwrap(),
        200,
        "the pending request is answered"
    );
}

#[test]
fn frozen_fake_still_stops_and_drops_promptly() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/watch",
        Behaviour::watch(
            vec![(Duration::ZERO, "{}".into())],
            StreamEnd::UntilClientGone,
        ),
    );
    let mut watch = open_tls(&fake, &pki, "/watch");
    assert!(watch.next_chunk(Duration::from_secs(2)).is_some());
    fake.freeze();
    let _waiting = TcpStream::connect(fake.addr()).expect("connect while frozen");

    // stop() ends the freeze: refused, then served again after restart.
    let t0 = Instant::now();
    fake.stop();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t0.elapsed()
    );
    assert!(!fake.is_frozen());
    assert!(watch.next_chunk(Duration::from_secs(2)).is_none() && watch.is_ended());
    assert!(TcpStream::connect(fake.addr()).is_err());
    fake.restart();
    let readyz = format!("{}/readyz", fake.url());
    assert_eq!(
        get_with_timeout(&pki, &readyz, Duration::from_secs(5)).unwrap(),
        200
    );

    // Dropped while frozen, with a stream and a silent connection open.
    let mut watch = open_tls(&fake, &pki, "/watch");
    assert!(watch.next_chunk(Duration::from_secs(2)).is_some());
    fake.freeze();
    let _waiting = TcpStream::connect(fake.addr()).expect("connect while frozen");
    let addr = fake.addr();
    let t0 = Instant::now();
    drop(fake);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t0.elapsed()
    );
    assert!(watch.next_chunk(Duration::from_secs(2)).is_none() && watch.is_ended());
    assert!(TcpStream::connect(addr).is_err());
}

// ------------------------------------------------------------ live streams

/// Bounds every wait of the live-stream and live-collection tests.
const LIVE_WAIT: Duration = Duration::from_secs(5);

#[test]
fn live_behaviour_streams_what_its_source_gives_until_finish_or_departure() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let queue: Arc<Mutex<VecDeque<LivePoll>>> = Arc::default();
    let q = queue.clone();
    fake.route(
        "GET",
        "/api/v1/namespaces/*/pods",
        Behaviour::func(move |_| {
            let q = q.clone();
            Behaviour::live(200, "application/json", move |wait| {
                let next = q.lock().unwrap().pop_front();
                next.unwrap_or_else(|| {
                    // A source waits for data; the test's queue does not
                    // wake it, so wait a little only.
                    std::thread::sleep(wait.min(Duration::from_millis(5)));
                    LivePoll::Idle
                })
            })
        }),
    );
    // `*` in the middle stands for one segment.
    let (status, _, _) = client::request_with(
        &node_agent(&pki),
        "GET",
        &format!("{}/api/v1/namespaces/a/b/pods", fake.url()),
        &[],
        &[],
    );
    assert_eq!(status, 404);
    let (status, _, _) = client::request_with(
        &node_agent(&pki),
        "GET",
        &format!("{}/api/v1/namespaces//pods", fake.url()),
        &[],
        &[],
    );
    assert_eq!(status, 404, "one non-empty segment");

    let mut stream = open_tls(&fake, &pki, "/api/v1/namespaces/a/pods?watch=true");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.header("transfer-encoding"), Some("chunked"));
    queue.lock().unwrap().extend([
        LivePoll::Data(b"one\n".to_vec()),
        LivePoll::Data(Vec::new()),
        LivePoll::Data(b"two\n".to_vec()),
    ]);
    assert_eq!(stream.next_chunk(LIVE_WAIT).unwrap().1, b"one\n");
    assert_eq!(stream.next_chunk(LIVE_WAIT).unwrap().1, b"two\n");
    queue.lock().unwrap().push_back(LivePoll::Finish);
    assert!(stream.next_chunk(LIVE_WAIT).is_none());
    assert!(stream.ended_cleanly());
    // The connection stays usable after a clean end.
    assert_eq!(
        client::request_with(
            &node_agent(&pki),
            "GET",
            &format!("{}/readyz", fake.url()),
            &[],
            &[]
        )
        .0,
        200
    );

    // A client that leaves is noticed within the 50 ms checks.
    let stream = open_tls(&fake, &pki, "/api/v1/namespaces/b/pods?watch=true");
    let closed_at = Instant::now();
    stream.close();
    assert!(wait_until(LIVE_WAIT, || {
        fake.streams_closed_by_client()
            .iter()
            .any(|(path, _)| path == "/api/v1/namespaces/b/pods")
    }));
    let (_, noticed) = fake.streams_closed_by_client().pop().unwrap();
    assert!(noticed - closed_at < Duration::from_secs(1));
}

#[test]
fn status_objects_read_back_the_same_in_both_encodings() {
    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let status = encoding.status(410, "Expired", "too old resource version: 1 (2)");
        let decoded = match encoding {
            Encoding::Json => {
                let v: serde_json::Value = serde_json::from_slice(&status).unwrap();
                assert!(v.get("details").is_none());
                (
                    v["code"].as_u64().unwrap() as u16,
                    v["reason"].as_str().unwrap().to_string(),
                    v["message"].as_str().unwrap().to_string(),
                )
            }
            Encoding::Protobuf => k8s_wire::pb_decode_status(&status).unwrap(),
        };
        assert_eq!(
            decoded,
            (
                410,
                "Expired".into(),
                "too old resource version: 1 (2)".into()
            )
        );
    }
    assert_eq!(
        k8s_wire::pb_decode_status(&k8s_wire::pb_bookmark("Service", "v1", 1)),
        None
    );
}

// ------------------------------------------------------ live collections

struct LiveBed {
    pki: TestPki,
    fake: FakeApiserver,
    services: Arc<LiveCollection>,
    encoding: Encoding,
}

/// A fake serving a Services collection in `encoding`.
fn live_bed(encoding: Encoding) -> LiveBed {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let services = LiveCollection::new(encoding, "Service", "v1");
    services.route_on(&fake);
    LiveBed {
        pki,
        fake,
        services,
        encoding,
    }
}

impl LiveBed {
    fn get(&self, path_and_query: &str) -> client::Reply {
        client::request_with(
            &node_agent(&self.pki),
            "GET",
            &format!("{}{path_and_query}", self.fake.url()),
            &[("Accept", self.encoding.accept())],
            &[],
        )
    }
    /// The objects and resourceVersion of a list that must succeed.
    fn list(&self, path_and_query: &str) -> (BTreeMap<(String, String), u64>, u64) {
        let (status, headers, body) = self.get(path_and_query);
        assert_eq!(
            status,
            200,
            "{path_and_query}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            client::header(&headers, "content-type"),
            Some(self.encoding.content_type())
        );
        live_collection::list_state(&body, self.encoding)
    }
    fn watch(&self, path_and_query: &str) -> WatchRecorder {
        let (ca, pem) = (self.pki.ca_path(), self.pki.client_pem_path());
        WatchRecorder::start(
            &self.fake.url(),
            path_and_query,
            self.encoding,
            &[],
            Some((&ca, Some(&pem))),
        )
    }
    /// A watch already registered with the collection when this returns.
    fn open_watch(&self, path_and_query: &str) -> WatchRecorder {
        let before = self.services.open_watches();
        let watch = self.watch(path_and_query);
        assert_eq!(watch.wait_open(LIVE_WAIT), Some(200), "{path_and_query}");
        assert!(wait_until(LIVE_WAIT, || self.services.open_watches() > before));
        watch
    }
}

fn keys(objects: &[(&str, &str, u64)]) -> BTreeMap<(String, String), u64> {
    objects
        .iter()
        .map(|(ns, name, rv)| ((ns.to_string(), name.to_string()), *rv))
        .collect()
}

/// `(type, name, resourceVersion)` of each event.
fn brief(events: &[RecordedEvent]) -> Vec<(String, String, u64)> {
    events
        .iter()
        .map(|e| (e.event_type.clone(), e.name.clone(), e.resource_version))
        .collect()
}

fn ev(event_type: &str, name: &str, rv: u64) -> (String, String, u64) {
    (event_type.to_string(), name.to_string(), rv)
}

fn count(events: &[RecordedEvent], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

/// A watch's state after its events.
fn state_of(events: &[RecordedEvent]) -> BTreeMap<(String, String), u64> {
    let mut state = BTreeMap::new();
    live_collection::apply(&mut state, events);
    state
}

#[test]
fn label_selectors_parse_and_match_as_kube_apiserver_reads_them() {
    let labels = [("app", "web"), ("tier", "front"), ("size", "3")];
    let cases: &[(&str, bool)] = &[
        ("", true),
        ("app=web", true),
        ("app==web", true),
        ("app = web", true),
        ("app=db", false),
        ("app!=db", true),
        ("app!=web", false),
        ("missing!=x", true),
        ("app", true),
        ("missing", false),
        ("!missing", true),
        ("!app", false),
        ("tier in (front,back)", true),
        ("tier in (back)", false),
        ("missing in (a)", false),
        ("tier notin (back, side)", true),
        ("tier notin (front)", false),
        ("missing notin (a)", true),
        ("app=web,tier=front", true),
        ("app=web,tier=back", false),
        ("app=web, tier in (front), !missing, size", true),
        ("size>2", true),
        ("size<3", false),
        ("app>2", false),
        ("app=", false),
        ("missing=", false),
    ];
    for (selector, want) in cases {
        assert_eq!(
            live_collection::label_selector_matches(selector, &labels),
            Ok(*want),
            "{selector:?}"
        );
    }
    assert_eq!(
        live_collection::label_selector_matches("empty=", &[("empty", "")]),
        Ok(true)
    );
    for bad in [
        "app=web,",
        "=web",
        "app in a",
        "app in (a",
        "!",
        "app=(x)",
        "app>x",
    ] {
        assert!(
            live_collection::label_selector_matches(bad, &labels).is_err(),
            "{bad:?} should not parse"
        );
    }
}

fn live_list_selects(encoding: Encoding) {
    let bed = live_bed(encoding);
    let s = &bed.services;
    assert_eq!(s.current_rv(), live_collection::INITIAL_RESOURCE_VERSION);
    let web_a = s.put("a", "web", &[("app", "web"), ("tier", "front")]);
    let db_a = s.put("a", "db", &[("app", "db"), ("tier", "back")]);
    let web_b = s.put("b", "web", &[("app", "web"), ("canary", "true")]);
    let bare_b = s.put("b", "bare", &[]);
    assert!(web_a < db_a && db_a < web_b && web_b < bare_b);
    assert_eq!(s.current_rv(), bare_b);
    let all = keys(&[
        ("a", "web", web_a),
        ("a", "db", db_a),
        ("b", "web", web_b),
        ("b", "bare", bare_b),
    ]);
    assert_eq!(s.objects(), all);

    let (objects, rv) = bed.list("/api/v1/services");
    assert_eq!((objects, rv), (all, bare_b));
    let (objects, _) = bed.list(&s.path(Some("a")));
    assert_eq!(objects, keys(&[("a", "web", web_a), ("a", "db", db_a)]));
    let (objects, _) = bed.list("/api/v1/namespaces/nowhere/services");
    assert!(objects.is_empty());

    let (objects, _) = bed.list("/api/v1/services?labelSelector=app%3Dweb");
    assert_eq!(objects, keys(&[("a", "web", web_a), ("b", "web", web_b)]));
    let (objects, _) = bed.list("/api/v1/services?labelSelector=app%3Dweb,!canary");
    assert_eq!(objects, keys(&[("a", "web", web_a)]));
    let (objects, _) = bed.list("/api/v1/services?labelSelector=tier+in+(front,back)");
    assert_eq!(objects, keys(&[("a", "web", web_a), ("a", "db", db_a)]));
    let (objects, _) = bed.list("/api/v1/namespaces/b/services?labelSelector=app!%3Dweb");
    assert_eq!(objects, keys(&[("b", "bare", bare_b)]));
    let (objects, _) = bed.list("/api/v1/services?fieldSelector=metadata.name%3Dweb");
    assert_eq!(objects, keys(&[("a", "web", web_a), ("b", "web", web_b)]));
    let (objects, _) = bed.list(
        "/api/v1/services?fieldSelector=metadata.namespace!%3Da,metadata.name%3D%3Dweb&limit=1",
    );
    assert_eq!(objects, keys(&[("b", "web", web_b)]));

    // Refused as kube-apiserver refuses them, in the collection's encoding.
    let (status, _, body) = bed.get("/api/v1/services?fieldSelector=spec.clusterIP%3DNone");
    assert_eq!(status, 400);
    let message = match encoding {
        Encoding::Json => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["kind"], "Status");
            v["message"].as_str().unwrap().to_string()
        }
        Encoding::Protobuf => k8s_wire::pb_decode_status(&body).unwrap().2,
    };
    assert_eq!(message, "field label not supported: spec.clusterIP");
    let (status, _, _) = bed.get("/api/v1/services?labelSelector=app%3Dweb,");
    assert_eq!(status, 400);

    // Single objects.
    let (status, _, body) = bed.get("/api/v1/namespaces/a/services/db");
    assert_eq!(status, 200);
    let (namespace, name, rv) = match encoding {
        Encoding::Json => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let m = &v["metadata"];
            (
                m["namespace"].clone(),
                m["name"].clone(),
                m["resourceVersion"].clone(),
            )
        }
        Encoding::Protobuf => {
            let o = k8s_wire::pb_decode(&body).unwrap();
            (o.namespace.into(), o.name.into(), o.resource_version.into())
        }
    };
    assert_eq!((namespace, name), ("a".into(), "db".into()));
    assert_eq!(rv, serde_json::Value::from(db_a.to_string()));
    let (status, _, body) = bed.get("/api/v1/namespaces/b/services/db");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = bed.get("/api/v1/namespaces/a/configmaps");
    assert_eq!(status, 404, "another resource is not this collection's");

    // Deleting, and the counters.
    assert_eq!(s.delete("a", "db"), Some(bare_b + 1));
    assert_eq!(s.delete("a", "db"), None);
    let (objects, rv) = bed.list(&s.path(Some("a")));
    assert_eq!((objects, rv), (keys(&[("a", "web", web_a)]), bare_b + 1));
    assert_eq!(s.lists(), 12);
    assert_eq!(s.watches(), 0);
    let sent = s.bytes_sent();
    bed.list("/api/v1/services");
    assert!(s.bytes_sent() > sent);

    // Another group: its own paths and list kind.
    let slices = LiveCollection::new(encoding, "EndpointSlice", "discovery.k8s.io/v1");
    slices.route_on(&bed.fake);
    let rv = slices.put("a", "web-x1", &[("kubernetes.io/service-name", "web")]);
    slices.put("b", "web-x2", &[("kubernetes.io/service-name", "web")]);
    assert_eq!(
        slices.path(Some("a")),
        "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices"
    );
    let (status, _, body) = bed.get(
        "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb",
    );
    assert_eq!(status, 200);
    let kind = match encoding {
        Encoding::Json => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            v["kind"].as_str().unwrap().to_string()
        }
        Encoding::Protobuf => k8s_wire::pb_decode_list(&body).unwrap().kind,
    };
    assert_eq!(kind, "EndpointSliceList");
    assert_eq!(
        live_collection::list_state(&body, encoding).0,
        keys(&[("a", "web-x1", rv)])
    );
    // The Services collection still answers its own paths.
    assert_eq!(bed.list("/api/v1/services").0.len(), 3);
}

#[test]
fn live_list_selects_by_namespace_labels_and_fields_json() {
    live_list_selects(Encoding::Json);
}

#[test]
fn live_list_selects_by_namespace_labels_and_fields_protobuf() {
    live_list_selects(Encoding::Protobuf);
}

fn live_watch_from_zero(encoding: Encoding) {
    let bed = live_bed(encoding);
    let s = &bed.services;
    let one = s.put("a", "one", &[("app", "web")]);
    let two = s.put("a", "two", &[]);

    let watch = bed.open_watch("/api/v1/services?watch=true&resourceVersion=0");
    assert_eq!(
        watch.content_type().as_deref(),
        Some(encoding.watch_content_type())
    );
    assert!(watch.wait_for(|e| e.len() >= 2, LIVE_WAIT));
    let one_again = s.put("a", "one", &[("app", "db")]);
    let two_gone = s.delete("a", "two").unwrap();
    let three = s.put("b", "three", &[]);
    assert!(watch.wait_for(|e| e.len() >= 5, LIVE_WAIT));
    let events = watch.events();
    assert_eq!(
        brief(&events),
        [
            ev("ADDED", "one", one),
            ev("ADDED", "two", two),
            ev("MODIFIED", "one", one_again),
            ev("DELETED", "two", two_gone),
            ev("ADDED", "three", three),
        ]
    );
    assert_eq!(events[0].labels, [("app".to_string(), "web".to_string())]);
    assert_eq!(events[2].labels, [("app".to_string(), "db".to_string())]);
    assert_eq!(events[4].namespace, "b");
    assert_eq!(state_of(&events), s.objects());
    assert!(!watch.ended());
    assert_eq!(watch.problem(), None);
    assert_eq!(s.watches(), 1);

    // From an absent resourceVersion too; with sendInitialEvents=false, only
    // what comes next.
    let absent = bed.open_watch("/api/v1/services?watch=1");
    let from_now = bed.open_watch("/api/v1/services?watch=true&sendInitialEvents=false");
    let four = s.put("a", "four", &[]);
    assert!(absent.wait_for(|e| e.len() >= 3, LIVE_WAIT));
    assert_eq!(
        brief(&absent.events()),
        [
            ev("ADDED", "one", one_again),
            ev("ADDED", "three", three),
            ev("ADDED", "four", four),
        ]
    );
    assert!(from_now.wait_for(|e| !e.is_empty(), LIVE_WAIT));
    assert_eq!(brief(&from_now.events()), [ev("ADDED", "four", four)]);
    assert_eq!(s.open_watches(), 3);
}

#[test]
fn live_watch_from_zero_sees_added_then_changes_json() {
    live_watch_from_zero(Encoding::Json);
}

#[test]
fn live_watch_from_zero_sees_added_then_changes_protobuf() {
    live_watch_from_zero(Encoding::Protobuf);
}

fn live_watch_selector_transitions(encoding: Encoding) {
    let bed = live_bed(encoding);
    let s = &bed.services;
    let by_label = bed.open_watch("/api/v1/services?watch=true&labelSelector=app%3Dweb");
    let by_field = bed.open_watch(
        "/api/v1/namespaces/a/services?watch=true&fieldSelector=metadata.name!%3Dother",
    );

    let added = s.put("a", "svc", &[("app", "web")]);
    let out = s.put("a", "svc", &[("app", "db")]);
    s.put("a", "other", &[("app", "db")]);
    let back = s.put("a", "svc", &[("app", "web")]);
    let changed = s.put("a", "svc", &[("app", "web"), ("v", "2")]);
    s.put("b", "svc", &[("app", "db")]);
    let web_b = s.put("b", "web", &[("app", "web")]);
    let gone = s.delete("a", "svc").unwrap();
    s.delete("a", "other").unwrap();

    assert!(by_label.wait_for(|e| e.len() >= 6, LIVE_WAIT));
    let events = by_label.events();
    assert_eq!(
        brief(&events),
        [
            ev("ADDED", "svc", added),
            ev("DELETED", "svc", out),
            ev("ADDED", "svc", back),
            ev("MODIFIED", "svc", changed),
            ev("ADDED", "web", web_b),
            ev("DELETED", "svc", gone),
        ]
    );
    // Leaving the selector: DELETED carries the object as it was before,
    // at the change's resourceVersion (kube-apiserver's cacheWatcher).
    assert_eq!(events[1].labels, [("app".to_string(), "web".to_string())]);
    assert_eq!(events[5].labels.len(), 2);

    assert!(by_field.wait_for(|e| e.len() >= 5, LIVE_WAIT));
    assert_eq!(
        brief(&by_field.events()),
        [
            ev("ADDED", "svc", added),
            ev("MODIFIED", "svc", out),
            ev("MODIFIED", "svc", back),
            ev("MODIFIED", "svc", changed),
            ev("DELETED", "svc", gone),
        ]
    );

    // What each watch holds is what a list with its selectors returns.
    s.put("a", "svc", &[("app", "web")]);
    s.put("b", "more", &[("app", "web")]);
    assert!(by_label.wait_for(|e| e.len() >= 8, LIVE_WAIT));
    assert!(by_field.wait_for(|e| e.len() >= 6, LIVE_WAIT));
    assert_eq!(
        state_of(&by_label.events()),
        bed.list("/api/v1/services?labelSelector=app%3Dweb").0
    );
    assert_eq!(
        state_of(&by_field.events()),
        bed.list("/api/v1/namespaces/a/services?fieldSelector=metadata.name!%3Dother")
            .0
    );
    assert_eq!(state_of(&by_label.events()).len(), 3);
}

#[test]
fn live_watch_selector_transitions_json() {
    live_watch_selector_transitions(Encoding::Json);
}

#[test]
fn live_watch_selector_transitions_protobuf() {
    live_watch_selector_transitions(Encoding::Protobuf);
}

fn live_watch_resume_and_expiry(encoding: Encoding) {
    let bed = live_bed(encoding);
    let s = &bed.services;
    s.put("a", "x", &[]);
    let second = s.put("a", "y", &[]);
    let third = s.put("a", "x", &[("v", "2")]);
    let fourth = s.delete("a", "y").unwrap();

    let resumed = bed.open_watch(&format!(
        "/api/v1/services?watch=true&resourceVersion={second}"
    ));
    let fifth = s.put("a", "z", &[]);
    assert!(resumed.wait_for(|e| e.len() >= 3, LIVE_WAIT));
    assert_eq!(
        brief(&resumed.events()),
        [
            ev("MODIFIED", "x", third),
            ev("DELETED", "y", fourth),
            ev("ADDED", "z", fifth),
        ]
    );

    // After a compaction: 200, one ERROR event with a 410 Expired Status,
    // then the end of the stream, for any resourceVersion before it.
    s.compact();
    let expired = bed.watch(&format!(
        "/api/v1/services?watch=true&resourceVersion={second}"
    ));
    assert!(expired.wait_ended(LIVE_WAIT));
    assert_eq!(expired.status(), Some(200));
    assert!(expired.ended_cleanly());
    let events = expired.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event_type, "ERROR");
    assert_eq!(
        events[0].error,
        Some(EventStatus {
            code: 410,
            reason: "Expired".to_string(),
            message: format!("too old resource version: {second} ({fifth})"),
        })
    );
    // The open watch goes on; one from the compaction point misses nothing.
    let at_compaction = bed.open_watch(&format!(
        "/api/v1/services?watch=true&resourceVersion={fifth}"
    ));
    let sixth = s.put("a", "x", &[]);
    assert!(at_compaction.wait_for(|e| !e.is_empty(), LIVE_WAIT));
    assert_eq!(brief(&at_compaction.events()), [ev("MODIFIED", "x", sixth)]);
    assert!(resumed.wait_for(|e| e.len() >= 4, LIVE_WAIT));
    assert_eq!(state_of(&resumed.events()), s.objects());

    // A resourceVersion the collection has not reached yet: 504.
    let ahead = bed.watch(&format!(
        "/api/v1/services?watch=true&resourceVersion={}",
        sixth + 10
    ));
    assert!(ahead.wait_ended(LIVE_WAIT));
    assert_eq!(ahead.status(), Some(504));
    assert!(
        ahead
            .problem()
            .unwrap()
            .contains("Too large resource version")
    );
    assert_eq!(s.watches(), 4);
    assert_eq!(s.open_watches(), 2);
}

#[test]
fn live_watch_resumes_from_rv_and_expires_after_compaction_json() {
    live_watch_resume_and_expiry(Encoding::Json);
}

#[test]
fn live_watch_resumes_from_rv_and_expires_after_compaction_protobuf() {
    live_watch_resume_and_expiry(Encoding::Protobuf);
}

fn live_bookmarks(encoding: Encoding) {
    let bed = live_bed(encoding);
    let s = &bed.services;
    s.set_bookmark_interval(Some(Duration::from_millis(100)));
    s.put("a", "x", &[]);
    // Opened first: it has had longer to get a bookmark it must not get.
    let without = bed.open_watch("/api/v1/services?watch=true&allowWatchBookmarks=false");
    let with = bed.open_watch("/api/v1/services?watch=true&allowWatchBookmarks=true");
    assert!(with.wait_for(|e| count(e, "BOOKMARK") >= 3, LIVE_WAIT));
    let rv = s.current_rv();
    let bookmarks: Vec<RecordedEvent> = with
        .events()
        .into_iter()
        .filter(|e| e.event_type == "BOOKMARK")
        .collect();
    for b in &bookmarks {
        assert_eq!((b.resource_version, b.name.as_str()), (rv, ""));
        assert!(!b.initial_events_end);
    }
    let changed = s.put("a", "x", &[("v", "2")]);
    assert!(with.wait_for(
        |e| {
            e.iter()
                .any(|b| b.event_type == "BOOKMARK" && b.resource_version == changed)
        },
        LIVE_WAIT
    ));
    assert!(without.wait_for(|e| e.len() >= 2, LIVE_WAIT));
    assert_eq!(count(&without.events(), "BOOKMARK"), 0);

    // None: no more bookmarks.
    s.set_bookmark_interval(None);
    let seen = count(&with.events(), "BOOKMARK");
    assert!(!with.wait_for(
        |e| count(e, "BOOKMARK") > seen + 1,
        Duration::from_millis(500)
    ));
}

#[test]
fn live_bookmarks_arrive_when_asked_and_not_otherwise_json() {
    live_bookmarks(Encoding::Json);
}

#[test]
fn live_bookmarks_arrive_when_asked_and_not_otherwise_protobuf() {
    live_bookmarks(Encoding::Protobuf);
}

fn live_streaming_list(encoding: Encoding) {
    let bed = live_bed(encoding);
    let s = &bed.services;
    s.set_bookmark_interval(None);
    let web = s.put("a", "web", &[("app", "web")]);
    s.put("a", "db", &[("app", "db")]);
    let web2 = s.put("b", "web2", &[("app", "web")]);
    let list_rv = s.current_rv();

    let watch = bed.open_watch(&format!(
        "/api/v1/services?watch=true&sendInitialEvents=true&allowWatchBookmarks=true\
         &resourceVersionMatch=NotOlderThan&resourceVersion=&labelSelector=app%3Dweb&{}",
        "timeoutSeconds=300"
    ));
    let later = s.put("a", "web", &[("app", "web"), ("v", "2")]);
    assert!(watch.wait_for(|e| e.len() >= 4, LIVE_WAIT));
    let events = watch.events();
    assert_eq!(
        brief(&events),
        [
            ev("ADDED", "web", web),
            ev("ADDED", "web2", web2),
            ev("BOOKMARK", "", list_rv),
            ev("MODIFIED", "web", later),
        ]
    );
    assert!(events[2].initial_events_end);
    assert_eq!(
        events.iter().filter(|e| e.initial_events_end).count(),
        1,
        "only the bookmark ending the initial events is annotated"
    );

    // Without sendInitialEvents: no annotated bookmark.
    s.set_bookmark_interval(Some(Duration::from_millis(50)));
    let plain = bed.open_watch("/api/v1/services?watch=true&allowWatchBookmarks=true");
    assert!(plain.wait_for(|e| count(e, "BOOKMARK") >= 2, LIVE_WAIT));
    assert!(plain.events().iter().all(|e| !e.initial_events_end));
}

#[test]
fn live_streaming_list_ends_initial_events_with_annotated_bookmark_json() {
    live_streaming_list(Encoding::Json);
}

#[test]
fn live_streaming_list_ends_initial_events_with_annotated_bookmark_protobuf() {
    live_streaming_list(Encoding::Protobuf);
}

#[test]
fn live_watches_end_on_end_watches_timeout_departure_and_stop() {
    let bed = live_bed(Encoding::Json);
    let s = &bed.services;
    s.set_bookmark_interval(None);
    let first = bed.open_watch("/api/v1/services?watch=true");
    let second = bed.open_watch("/api/v1/namespaces/a/services?watch=true");
    let rv = s.put("a", "x", &[]);
    s.end_watches();
    for watch in [&first, &second] {
        assert!(watch.wait_ended(LIVE_WAIT));
        assert!(watch.ended_cleanly());
        // Events recorded before end_watches are delivered first.
        assert_eq!(brief(&watch.events()), [ev("ADDED", "x", rv)]);
    }
    assert!(wait_until(LIVE_WAIT, || s.open_watches() == 0));

    // timeoutSeconds: a clean end after that long.
    let t0 = Instant::now();
    let timed = bed.open_watch("/api/v1/services?watch=true&timeoutSeconds=1");
    assert!(timed.wait_ended(LIVE_WAIT));
    let took = t0.elapsed();
    assert!(timed.ended_cleanly());
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(brief(&timed.events()), [ev("ADDED", "x", rv)]);

    // A client that goes away: the fake notices and forgets the watch.
    let gone_before = bed.fake.streams_closed_by_client().len();
    let leaving = bed.open_watch("/api/v1/services?watch=true");
    leaving.stop();
    assert!(
        !leaving.ended(),
        "stopped by the client, not ended by the server"
    );
    assert!(wait_until(LIVE_WAIT, || s.open_watches() == 0));
    assert!(wait_until(LIVE_WAIT, || {
        bed.fake.streams_closed_by_client().len() > gone_before
    }));
    // So does a recorder at its limit.
    let (ca, pem) = (bed.pki.ca_path(), bed.pki.client_pem_path());
    let limited = WatchRecorder::start_with_limit(
        &bed.fake.url(),
        "/api/v1/services?watch=true",
        Encoding::Json,
        &[],
        Some((&ca, Some(&pem))),
        Duration::from_millis(300),
    );
    assert!(limited.wait_for(|e| !e.is_empty(), LIVE_WAIT));
    assert!(wait_until(LIVE_WAIT, || s.open_watches() == 0));
    assert!(!limited.ended());

    // The fake stopping ends open watches abruptly.
    let open = bed.open_watch("/api/v1/services?watch=true");
    bed.fake.stop();
    assert!(open.wait_ended(LIVE_WAIT));
    assert!(!open.ended_cleanly());
    assert!(wait_until(LIVE_WAIT, || s.open_watches() == 0));
    assert_eq!(s.watches(), 6);
}

#[test]
fn recorder_helpers_give_an_informers_state() {
    let event = |t: &str, name: &str, rv: u64| RecordedEvent {
        event_type: t.to_string(),
        namespace: "ns".to_string(),
        name: name.to_string(),
        resource_version: rv,
        labels: Vec::new(),
        initial_events_end: false,
        error: None,
    };
    let mut state = BTreeMap::new();
    live_collection::apply(
        &mut state,
        &[
            event("ADDED", "a", 1),
            event("ADDED", "b", 2),
            event("MODIFIED", "a", 3),
            event("BOOKMARK", "", 4),
            event("ERROR", "", 0),
            event("DELETED", "b", 5),
        ],
    );
    assert_eq!(state, keys(&[("ns", "a", 3)]));

    for encoding in [Encoding::Json, Encoding::Protobuf] {
        let objects = [
            encoding_object(encoding, "x", "one", 7),
            encoding_object(encoding, "", "two", 8),
        ];
        let body = encoding.list("Service", "v1", 9, &objects);
        assert_eq!(
            live_collection::list_state(&body, encoding),
            (keys(&[("x", "one", 7), ("", "two", 8)]), 9)
        );
    }
}

fn encoding_object(encoding: Encoding, namespace: &str, name: &str, rv: u64) -> Vec<u8> {
    match encoding {
        Encoding::Json => k8s_wire::json_object("Service", "v1", namespace, name, rv, &[]).into(),
        Encoding::Protobuf => k8s_wire::pb_object("Service", "v1", namespace, name, rv, &[]),
    }
}
