//! Self-tests of the test support library: the fake apiserver driven
//! directly over TLS (the test client and RawStream), without the hub.

use std::collections::VecDeque;
use std::io::Read;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::client::{self, RawStream};
use crate::support::{self, k8s_wire, wait_until};
use crate::support::{
    Behaviour, Encoding, FakeApiserver, LivePoll, StreamEnd, TestPki, TokenIssuer, json_event,
    json_initial_events_end_bookmark, pb_event, pb_initial_events_end_bookmark,
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
