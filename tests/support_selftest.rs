//! Self-tests of the test support library: the fake apiserver driven
//! directly over TLS (ureq and RawStream), without the hub.

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::client::{self, RawStream};
use support::{Behaviour, FakeApiserver, StreamEnd, TestPki};

fn node_agent(pki: &TestPki) -> ureq::Agent {
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
    let agent = node_agent(&pki);
    let data = vec![b'x'; 100_000];
    let mut reader = std::io::Cursor::new(data.clone());
    let resp = agent
        .post(format!("{}/upload", fake.url()))
        .send(ureq::SendBody::from_reader(&mut reader))
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
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

    // ureq: reads arrive separated by the scripted gaps.
    let agent = node_agent(&pki);
    let resp = agent
        .get(format!("{}/api/v1/pods?watch=true", fake.url()))
        .call()
        .expect("watch");
    assert_eq!(resp.status().as_u16(), 200);
    let mut reader = resp.into_body().into_reader();
    let mut arrivals = Vec::new();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        arrivals.push(Instant::now());
        all.extend_from_slice(&buf[..n]);
    }
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
