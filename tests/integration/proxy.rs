//! The online path, end to end through the real binary against the scriptable
//! fake apiserver (`tests/support/`).
//!
//! Contents:
//! - forwarding: method, path, query, headers, body, credentials
//! - streaming: watch events relayed one by one; truncated and dropped upstreams
//! - errors and timeouts: 5xx pass-through, 502, 504, Status bodies
//! - balancing and health: round robin, priority, retry on connect failure, failover
//! - upstream keep-alive: a pooled connection the apiserver closed, a write
//!   never sent twice, chunked framing split at odd points, `Connection: close`
//! - the hub's own endpoints: healthz, readyz, metrics
//! - bounds: in-flight requests, connections, header size, idle connections
//! - lifecycle: bad flags, SIGTERM with an open watch

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::client::{self, RawStream, header};
use crate::support::{Behaviour, FakeApiserver, Hub, StreamEnd, TestPki, wait_until};

const WAIT: Duration = Duration::from_secs(10);

fn hub_for(fakes: &[&FakeApiserver], pki: &TestPki, extra: &[&str]) -> Hub {
    let mut args = Hub::args_for(fakes, pki);
    args.extend(extra.iter().map(|s| s.to_string()));
    Hub::start(&args)
}

fn status_json(body: &[u8]) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(value["kind"], "Status", "{value}");
    value
}

/// Waits until the hub reports `server` healthy (or unhealthy): see
/// `Hub::wait_server_health`.
fn wait_healthy(hub: &Hub, server: &FakeApiserver, healthy: bool) {
    hub.wait_server_health(&server.url(), healthy, WAIT);
}

// ---------------------------------------------------------------- forwarding

#[test]
fn forwards_method_path_query_headers_and_body() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Behaviour::respond(
            201,
            &[("Content-Type", "application/json"), ("X-Upstream", "yes")],
            r#"{"kind":"ConfigMap"}"#,
        ),
    );
    let hub = hub_for(&[&fake], &pki, &[]);
    let body = br#"{"kind":"ConfigMap","metadata":{"name":"a"}}"#;
    let (status, headers, response) = client::request(
        "POST",
        &format!(
            "{}/api/v1/namespaces/default/configmaps?fieldManager=kubectl&dryRun=All",
            hub.proxy_url()
        ),
        &[
            ("Content-Type", "application/json"),
            ("User-Agent", "kubectl/v1.32.4"),
            ("Edge-Cache", "true"),
            ("X-Custom", "kept"),
        ],
        body,
    );
    assert_eq!(status, 201);
    assert_eq!(response, br#"{"kind":"ConfigMap"}"#);
    assert_eq!(header(&headers, "x-upstream"), Some("yes"));

    let seen = fake.wait_for_request_count(|r| r.method == "POST", 1, WAIT);
    let request = &seen[0];
    assert_eq!(request.path, "/api/v1/namespaces/default/configmaps");
    assert_eq!(request.query, "fieldManager=kubectl&dryRun=All");
    assert_eq!(request.body, body);
    assert_eq!(request.header("x-custom"), Some("kept"));
    assert_eq!(request.header("user-agent"), Some("kubectl/v1.32.4"));
    assert_eq!(
        request.header("edge-cache"),
        None,
        "Edge-Cache must be stripped"
    );
    assert_eq!(
        request.client_cert_cn.as_deref(),
        Some("system:node:edge-1")
    );
}

#[test]
fn bearer_token_is_forwarded_without_the_client_certificate() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/namespaces/default/pods",
        Behaviour::ok_json(r#"{"kind":"PodList","items":[]}"#),
    );
    let hub = hub_for(&[&fake], &pki, &[]);
    let (status, _, _) = client::request(
        "GET",
        &format!("{}/api/v1/namespaces/default/pods", hub.proxy_url()),
        &[("Authorization", "Bearer sa-token")],
        &[],
    );
    assert_eq!(status, 200);
    let seen =
        fake.wait_for_request_count(|r| r.path == "/api/v1/namespaces/default/pods", 1, WAIT);
    assert_eq!(seen[0].header("authorization"), Some("Bearer sa-token"));
    assert_eq!(seen[0].client_cert_cn, None);
}

#[test]
fn chunked_request_body_is_streamed_upstream() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "PUT",
        "/api/v1/namespaces/a/configmaps/b",
        Behaviour::ok_json("{}"),
    );
    let hub = hub_for(&[&fake], &pki, &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", hub.proxy_port())).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(
            b"PUT /api/v1/namespaces/a/configmaps/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
              Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = fake.wait_for_request_count(|r| r.method == "PUT", 1, WAIT);
    assert_eq!(seen[0].body, b"hello world");
}

// ---------------------------------------------------------------- streaming

#[test]
fn watch_events_reach_the_client_as_they_are_written() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::watch(
            vec![
                (
                    Duration::ZERO,
                    r#"{"type":"ADDED","object":{"kind":"Pod"}}"#.to_string(),
                ),
                (
                    Duration::from_millis(700),
                    r#"{"type":"MODIFIED","object":{"kind":"Pod"}}"#.to_string(),
                ),
                (
                    Duration::from_millis(700),
                    r#"{"type":"DELETED","object":{"kind":"Pod"}}"#.to_string(),
                ),
            ],
            StreamEnd::UntilClientGone,
        ),
    );
    let hub = hub_for(&[&fake], &pki, &[]);
    let mut stream = RawStream::get(
        &format!(
            "{}/api/v1/pods?watch=true&timeoutSeconds=60",
            hub.proxy_url()
        ),
        &[],
    );
    assert_eq!(stream.status(), 200);
    let mut arrivals = Vec::new();
    for expected in ["ADDED", "MODIFIED", "DELETED"] {
        let (at, line) = stream
            .next_line(WAIT)
            .unwrap_or_else(|| panic!("no {expected} event\n{}", hub.log()));
        assert!(String::from_utf8_lossy(&line).contains(expected));
        arrivals.push(at);
    }
    let writes = fake.wait_for_chunks(3, WAIT);
    assert_eq!(writes.len(), 3);
    for (write, arrival) in writes.iter().zip(&arrivals) {
        let delay = arrival.saturating_duration_since(write.written_at);
        // Generous for a loaded 2-core machine; buffering would show up as ~700 ms.
        assert!(
            delay < Duration::from_millis(300),
            "event relayed after {delay:?}"
        );
    }
    assert!(!stream.is_ended(), "the watch must stay open");
}

#[test]
fn quiet_watch_survives_and_is_released_when_its_client_leaves() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/configmaps",
        Behaviour::watch(
            vec![
                (Duration::ZERO, r#"{"type":"ADDED","object":{}}"#.into()),
                // Longer than the hub's stream poll interval: the stream must survive it.
                (
                    Duration::from_millis(4500),
                    r#"{"type":"MODIFIED","object":{}}"#.into(),
                ),
            ],
            StreamEnd::UntilClientGone,
        ),
    );
    let hub = hub_for(&[&fake], &pki, &[]);
    let mut stream = RawStream::get(
        &format!("{}/api/v1/configmaps?watch=true", hub.proxy_url()),
        &[],
    );
    assert!(stream.next_line(WAIT).is_some());
    let (_, line) = stream
        .next_line(WAIT)
        .expect("second event after a quiet spell");
    assert!(String::from_utf8_lossy(&line).contains("MODIFIED"));
    let closed_at = Instant::now();
    stream.close();
    assert!(
        wait_until(WAIT, || !fake.streams_closed_by_client().is_empty()),
        "the hub kept the upstream watch after its client left"
    );
    assert!(closed_at.elapsed() < Duration::from_secs(8));
}

#[test]
fn truncated_upstream_body_is_not_passed_off_as_complete() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/configmaps",
        Behaviour::Truncated {
            status: 200,
            declared_len: 1000,
            body: b"{\"kind\":\"ConfigMapList\"".to_vec(),
        },
    );
    let hub = hub_for(&[&fake], &pki, &[]);
    let result = client::try_request(
        "GET",
        &format!("{}/api/v1/configmaps", hub.proxy_url()),
        &[],
        &[],
    );
    assert!(
        result.is_err(),
        "a short body must surface as an error, got {result:?}"
    );
    // The hub is still fine afterwards.
    fake.route("GET", "/api/v1/configmaps", Behaviour::ok_json("{}"));
    assert_eq!(
        client::get(&format!("{}/api/v1/configmaps", hub.proxy_url())).0,
        200
    );
}

#[test]
fn watch_that_breaks_off_ends_the_client_stream() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::watch(
            vec![(Duration::ZERO, r#"{"type":"ADDED","object":{}}"#.into())],
            StreamEnd::Drop,
        ),
    );
    let hub = hub_for(&[&fake], &pki, &[]);
    let mut stream = RawStream::get(&format!("{}/api/v1/pods?watch=1", hub.proxy_url()), &[]);
    assert!(stream.next_line(WAIT).is_some());
    let rest = stream.read_to_end(WAIT);
    assert!(rest.is_empty());
    assert!(stream.is_ended());
}

// ---------------------------------------------------------------- upstream keep-alive

#[test]
fn a_pooled_connection_the_apiserver_closed_is_replaced_without_an_error() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let path = "/api/v1/namespaces/a/configmaps/x";
    fake.route("GET", path, Behaviour::ok_json(r#"{"kind":"ConfigMap"}"#));
    let hub = hub_for(&[&fake], &pki, &[]);
    let url = format!("{}{path}", hub.proxy_url());
    assert_eq!(client::get(&url).0, 200);
    // Closed while idle in the hub's pool, as an apiserver or a load
    // balancer closes idle keep-alive connections (idle at the fake a
    // moment after the client has its answer).
    assert!(wait_until(WAIT, || fake.close_idle_connections()));
    for _ in 0..3 {
        let (status, _, body) = client::get(&url);
        assert_eq!(
            (status, body.as_slice()),
            (200, &br#"{"kind":"ConfigMap"}"#[..])
        );
    }
    // The request met the closed connection (or a probe did first) and
    // went out again on a new one.
    hub.expect_log("had closed", WAIT);
    assert_eq!(fake.requests_to(path).len(), 4);
}

#[test]
fn a_write_on_a_pooled_connection_is_never_sent_twice() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let path = "/api/v1/namespaces/a/events";
    fake.route("GET", "/api/v1/namespaces", Behaviour::ok_json("{}"));
    fake.route("POST", path, Behaviour::json(201, "{}"));
    let hub = hub_for(&[&fake], &pki, &[]);
    let post = || client::request("POST", &format!("{}{path}", hub.proxy_url()), &[], b"{}");
    let warm = || {
        assert_eq!(
            client::get(&format!("{}/api/v1/namespaces", hub.proxy_url())).0,
            200
        )
    };
    // A pooled connection closed while idle is seen closed before the
    // write is sent on it.
    warm();
    // The hub's connection is idle at the fake once the fake has finished
    // the answer and waits for the next request (a moment after the client
    // has it).
    assert!(wait_until(WAIT, || fake.close_idle_connections()));
    assert_eq!(post().0, 201);
    assert_eq!(fake.requests_to(path).len(), 1);
    // A pooled connection that breaks after taking the write: the
    // apiserver may have acted on it, so it is not sent again.
    warm();
    fake.route("POST", path, Behaviour::Drop);
    let (status, _, body) = post();
    assert_eq!(status, 502);
    assert_eq!(status_json(&body)["code"], 502);
    let posts = fake.requests_to(path);
    assert_eq!(posts.len(), 2, "sent once");
    let reused = fake
        .requests()
        .iter()
        .any(|r| r.conn_id == posts[1].conn_id && r.path != path);
    assert!(reused, "the write went out on a pooled connection");
}

#[test]
fn chunked_framing_split_at_odd_points_is_relayed_whole() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let body: Vec<u8> = (0..3000u32)
        .map(|i| b"abcdefghij"[(i % 10) as usize])
        .collect();
    let mut wire =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for chunk in body.chunks(700) {
        wire.extend_from_slice(format!("{:X};ext=1\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\nX-Trailer: ignored\r\n\r\n");
    // Pieces of 1, 2, 3, 5, 7, 11, ... bytes: split inside size lines,
    // inside CRLFs, inside data.
    let mut pieces = Vec::new();
    let mut rest = wire.as_slice();
    for size in [1, 2, 3, 5, 7, 11, 13, 17, 19, 23].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(size.min(rest.len()));
        pieces.push(piece.to_vec());
        rest = after;
    }
    fake.route("GET", "/api/v1/configmaps", Behaviour::Pieces(pieces));
    let hub = hub_for(&[&fake], &pki, &[]);
    let url = format!("{}/api/v1/configmaps", hub.proxy_url());
    for _ in 0..2 {
        let (status, _, got) = client::get(&url);
        assert_eq!(status, 200);
        assert_eq!(got, body);
    }
}

#[test]
fn an_apiserver_answering_connection_close_gets_a_new_connection_each_time() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let path = "/api/v1/nodes/edge-1";
    fake.route(
        "GET",
        path,
        Behaviour::respond(200, &[("Connection", "close")], r#"{"kind":"Node"}"#),
    );
    let hub = hub_for(&[&fake], &pki, &[]);
    for _ in 0..3 {
        let (status, _, body) = client::get(&format!("{}{path}", hub.proxy_url()));
        assert_eq!((status, body.as_slice()), (200, &br#"{"kind":"Node"}"#[..]));
    }
    let mut connections: Vec<u64> = fake.requests_to(path).iter().map(|r| r.conn_id).collect();
    connections.dedup();
    assert_eq!(connections.len(), 3, "one connection per answer");
}

// ---------------------------------------------------------------- errors

#[test]
fn upstream_errors_pass_through_unchanged() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/namespaces/a/pods/missing",
        Behaviour::k8s_status(404, "NotFound", "pods \"missing\" not found"),
    );
    fake.route("GET", "/api/v1/nodes", Behaviour::text(500, "boom"));
    let hub = hub_for(&[&fake], &pki, &[]);
    let (status, _, body) = client::get(&format!(
        "{}/api/v1/namespaces/a/pods/missing",
        hub.proxy_url()
    ));
    assert_eq!(status, 404);
    assert_eq!(status_json(&body)["message"], "pods \"missing\" not found");
    let (status, _, body) = client::get(&format!("{}/api/v1/nodes", hub.proxy_url()));
    assert_eq!((status, body.as_slice()), (500, &b"boom"[..]));
}

#[test]
fn dropped_upstream_connection_is_a_502_status() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route("POST", "/api/v1/namespaces/a/events", Behaviour::Drop);
    let hub = hub_for(&[&fake], &pki, &[]);
    let (status, _, body) = client::request(
        "POST",
        &format!("{}/api/v1/namespaces/a/events", hub.proxy_url()),
        &[],
        b"{}",
    );
    assert_eq!(status, 502);
    assert_eq!(status_json(&body)["code"], 502);
}

#[test]
fn upstream_slower_than_the_request_timeout_is_a_504_status() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/nodes/edge-1",
        Behaviour::slow(Duration::from_secs(20), Behaviour::ok_json("{}")),
    );
    let hub = hub_for(&[&fake], &pki, &[]);
    let started = Instant::now();
    let (status, _, body) = client::get(&format!(
        "{}/api/v1/nodes/edge-1?timeout=1s",
        hub.proxy_url()
    ));
    assert_eq!(status, 504);
    assert_eq!(status_json(&body)["reason"], "Timeout");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn unsafe_paths_and_upgrades_get_a_status_without_reaching_upstream() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let hub = hub_for(&[&fake], &pki, &[]);
    let (status, _, body) = client::get(&format!(
        "{}/api/v1/namespaces/a/pods/..%2F..%2Fetc",
        hub.proxy_url()
    ));
    assert_eq!(status, 400);
    status_json(&body);
    let (status, _, body) = client::request(
        "POST",
        &format!(
            "{}/api/v1/namespaces/a/pods/p/exec?command=sh",
            hub.proxy_url()
        ),
        &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")],
        &[],
    );
    assert_eq!(status, 501);
    status_json(&body);
    assert!(
        fake.requests().iter().all(|r| r.path == "/readyz"),
        "{:?}",
        fake.requests()
    );
}

#[test]
fn malformed_requests_get_a_400_status() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let hub = hub_for(&[&fake], &pki, &[]);
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET http://evil/ HTTP/1.1\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", hub.proxy_port())).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.write_all(raw).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        assert!(response.starts_with("HTTP/1.1 400"), "{raw:?}: {response}");
        assert!(response.contains("\"kind\":\"Status\""), "{response}");
    }
}

// ---------------------------------------------------------------- balancing and health

fn two_servers(pki: &TestPki) -> (FakeApiserver, FakeApiserver) {
    let a = FakeApiserver::start(pki);
    let b = FakeApiserver::start(pki);
    for fake in [&a, &b] {
        fake.route(
            "GET",
            "/api/v1/namespaces",
            Behaviour::ok_json(r#"{"kind":"NamespaceList","items":[]}"#),
        );
    }
    (a, b)
}

fn count_to(fake: &FakeApiserver, path: &str) -> usize {
    fake.requests().iter().filter(|r| r.path == path).count()
}

#[test]
fn round_robin_spreads_requests_over_healthy_servers() {
    let pki = TestPki::new();
    let (a, b) = two_servers(&pki);
    let hub = hub_for(&[&a, &b], &pki, &["--lb-mode", "rr"]);
    wait_healthy(&hub, &a, true);
    wait_healthy(&hub, &b, true);
    for _ in 0..10 {
        assert_eq!(
            client::get(&format!("{}/api/v1/namespaces", hub.proxy_url())).0,
            200
        );
    }
    assert_eq!(
        (
            count_to(&a, "/api/v1/namespaces"),
            count_to(&b, "/api/v1/namespaces")
        ),
        (5, 5)
    );
}

#[test]
fn priority_mode_uses_the_first_healthy_server() {
    let pki = TestPki::new();
    let (a, b) = two_servers(&pki);
    let hub = hub_for(
        &[&a, &b],
        &pki,
        &["--lb-mode", "priority", "--heartbeat-failed-retry", "1"],
    );
    wait_healthy(&hub, &a, true);
    for _ in 0..4 {
        assert_eq!(
            client::get(&format!("{}/api/v1/namespaces", hub.proxy_url())).0,
            200
        );
    }
    assert_eq!(
        (
            count_to(&a, "/api/v1/namespaces"),
            count_to(&b, "/api/v1/namespaces")
        ),
        (4, 0)
    );
    a.set_readyz(500);
    wait_healthy(&hub, &a, false);
    for _ in 0..3 {
        assert_eq!(
            client::get(&format!("{}/api/v1/namespaces", hub.proxy_url())).0,
            200
        );
    }
    assert_eq!(count_to(&b, "/api/v1/namespaces"), 3);
    a.set_readyz(200);
    wait_healthy(&hub, &a, true);
}

#[test]
fn get_is_retried_once_on_the_next_server_when_connecting_fails() {
    let pki = TestPki::new();
    let (a, b) = two_servers(&pki);
    // Probes are far apart, so the hub still believes the stopped server is
    // healthy (one good probe makes it so).
    let hub = hub_for(
        &[&a, &b],
        &pki,
        &[
            "--heartbeat-interval-seconds",
            "600",
            "--heartbeat-healthy-threshold",
            "1",
        ],
    );
    wait_healthy(&hub, &a, true);
    wait_healthy(&hub, &b, true);
    a.stop();
    for _ in 0..6 {
        let (status, _, body) = client::get(&format!("{}/api/v1/namespaces", hub.proxy_url()));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(count_to(&b, "/api/v1/namespaces"), 6);
    // A write whose connection was refused never reached that server: it
    // goes to the next one too.
    b.route("POST", "/api/v1/namespaces", Behaviour::ok_json("{}"));
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(
            client::request(
                "POST",
                &format!("{}/api/v1/namespaces", hub.proxy_url()),
                &[],
                b"{}",
            )
            .0,
        );
    }
    assert_eq!(statuses, [200, 200]);
    assert_eq!(
        b.requests().iter().filter(|r| r.method == "POST").count(),
        2
    );
}

#[test]
fn failover_when_a_server_becomes_unhealthy_and_back() {
    let pki = TestPki::new();
    let (a, b) = two_servers(&pki);
    let hub = hub_for(
        &[&a, &b],
        &pki,
        &[
            "--heartbeat-failed-retry",
            "2",
            "--heartbeat-healthy-threshold",
            "2",
        ],
    );
    wait_healthy(&hub, &a, true);
    wait_healthy(&hub, &b, true);
    b.stop();
    wait_healthy(&hub, &b, false);
    a.clear_requests();
    for _ in 0..4 {
        assert_eq!(
            client::get(&format!("{}/api/v1/namespaces", hub.proxy_url())).0,
            200
        );
    }
    assert_eq!(count_to(&a, "/api/v1/namespaces"), 4);
    b.restart();
    wait_healthy(&hub, &b, true);
}

#[test]
fn no_healthy_server_in_cloud_mode_is_a_503_status_and_not_ready() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.set_readyz(500);
    // Cloud mode has no cache to fall back on (edge mode: the `cache` module).
    let hub = hub_for(&[&fake], &pki, &["--working-mode", "cloud"]);
    wait_healthy(&hub, &fake, false);
    let (status, _, body) = client::get(&format!("{}/api/v1/pods", hub.proxy_url()));
    assert_eq!(status, 503);
    let status_body = status_json(&body);
    assert!(
        status_body["message"]
            .as_str()
            .unwrap()
            .contains("no healthy apiserver"),
        "{status_body}"
    );
    let (status, _, body) = client::get(&format!("{}/v1/readyz", hub.serve_url()));
    assert_eq!(status, 503);
    assert!(
        String::from_utf8_lossy(&body).contains("/readyz answered 500"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

// ---------------------------------------------------------------- the hub's own endpoints

#[test]
fn healthz_readyz_and_metrics() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route("GET", "/api/v1/nodes/edge-1", Behaviour::ok_json("{}"));
    let hub = hub_for(&[&fake], &pki, &[]);
    let (status, headers, body) = client::get(&format!("{}/v1/healthz", hub.serve_url()));
    assert_eq!(
        (status, header(&headers, "content-type"), body.as_slice()),
        (200, Some("text/plain; charset=utf-8"), &b"OK"[..])
    );
    wait_healthy(&hub, &fake, true);
    assert_eq!(
        client::get(&format!("{}/v1/readyz", hub.serve_url())).0,
        200
    );
    let (status, _, _) = client::request(
        "GET",
        &format!("{}/api/v1/nodes/edge-1", hub.proxy_url()),
        &[("User-Agent", "kubelet/v1.20.2 (linux/amd64)")],
        &[],
    );
    assert_eq!(status, 200);
    // The hub counts the request and gives its in-flight slot back as it
    // finishes, which may be just after the client has read the last byte.
    let counted = r#"node_yurthub_requests_total{component="kubelet",verb="get",resource="nodes",code="200"} 1"#;
    let finished = "node_yurthub_in_flight_requests 0";
    let mut text = String::new();
    assert!(
        wait_until(WAIT, || {
            text = hub.metrics();
            text.contains(counted) && text.contains(finished)
        }),
        "{text}"
    );
    assert!(
        text.contains("# TYPE node_yurthub_server_healthy_status gauge"),
        "{text}"
    );
    assert_eq!(client::get(&format!("{}/nope", hub.serve_url())).0, 404);
}

// ---------------------------------------------------------------- bounds

#[test]
fn requests_past_the_in_flight_limit_get_429_but_watches_do_not_count() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/nodes",
        Behaviour::slow(Duration::from_secs(3), Behaviour::ok_json("{}")),
    );
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::watch(vec![], StreamEnd::UntilClientGone),
    );
    let hub = hub_for(&[&fake], &pki, &["--max-requests-in-flight", "2"]);
    let watch = RawStream::get(&format!("{}/api/v1/pods?watch=true", hub.proxy_url()), &[]);
    assert_eq!(watch.status(), 200);
    let url = format!("{}/api/v1/nodes", hub.proxy_url());
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || client::get(&url).0)
        })
        .collect();
    fake.wait_for_request_count(|r| r.path == "/api/v1/nodes", 2, WAIT);
    let (status, headers, body) = client::get(&url);
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert_eq!(status_json(&body)["reason"], "TooManyRequests");
    for thread in slow {
        assert_eq!(thread.join().unwrap(), 200);
    }
    assert_eq!(client::get(&url).0, 200, "slots are given back");
}

#[test]
fn connections_past_the_cap_get_503_and_the_hub_recovers() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let hub = hub_for(&[&fake], &pki, &["--max-connections", "3"]);
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", hub.proxy_port())).unwrap())
        .collect();
    let open = || hub.metric("node_yurthub_open_connections{listener=\"proxy\"}");
    assert!(wait_until(WAIT, || open() == 3), "{} open", open());
    let mut extra = TcpStream::connect(("127.0.0.1", hub.proxy_port())).unwrap();
    extra.set_read_timeout(Some(WAIT)).unwrap();
    let mut response = String::new();
    let _ = extra.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("\"kind\":\"Status\""), "{response}");
    drop(held);
    assert!(wait_until(WAIT, || client::try_request(
        "GET",
        &format!("{}/version", hub.proxy_url()),
        &[],
        &[]
    )
    .is_ok_and(|r| r.0 == 404)));
}

#[test]
fn a_huge_header_gets_431_and_the_hub_stays_up() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let hub = hub_for(&[&fake], &pki, &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", hub.proxy_port())).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let _ = stream.write_all(b"GET /api/v1/pods HTTP/1.1\r\nX-Big: ");
    let filler = vec![b'a'; 1024 * 1024];
    let _ = stream.write_all(&filler);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 431"),
        "{}",
        &response[..response.len().min(200)]
    );
    fake.route("GET", "/api/v1/pods", Behaviour::ok_json("{}"));
    assert_eq!(
        client::get(&format!("{}/api/v1/pods", hub.proxy_url())).0,
        200
    );
}

#[test]
fn thousands_of_idle_connections_do_not_take_the_hub_down() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route("GET", "/api/v1/pods", Behaviour::ok_json("{}"));
    let hub = hub_for(&[&fake], &pki, &["--max-connections", "200"]);
    let mut idle = Vec::new();
    for _ in 0..2000 {
        match TcpStream::connect(("127.0.0.1", hub.proxy_port())) {
            Ok(stream) => idle.push(stream),
            Err(e) => panic!("connect failed after {} connections: {e}", idle.len()),
        }
    }
    let open = || hub.metric("node_yurthub_open_connections{listener=\"proxy\"}");
    assert!(wait_until(WAIT, || open() == 200), "{} open", open());
    let threads = std::fs::read_dir(format!("/proc/{}/task", hub.pid()))
        .unwrap()
        .count();
    assert!(
        threads < 240,
        "{threads} threads for 200 allowed connections"
    );
    drop(idle);
    assert!(wait_until(WAIT, || client::try_request(
        "GET",
        &format!("{}/api/v1/pods", hub.proxy_url()),
        &[],
        &[]
    )
    .is_ok_and(|r| r.0 == 200)));
}

#[test]
fn running_out_of_file_descriptors_does_not_close_the_port() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route("GET", "/api/v1/pods", Behaviour::ok_json("{}"));
    let hub = hub_for(&[&fake], &pki, &[]);
    // Leave the hub a few descriptors above what it holds now.
    let open_now = std::fs::read_dir(format!("/proc/{}/fd", hub.pid()))
        .unwrap()
        .count();
    let limit = open_now + 8;
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &hub.pid().to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("prlimit (util-linux) is needed for this test");
    assert!(status.success());
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(TcpStream::connect(("127.0.0.1", hub.proxy_port())).unwrap());
    }
    // The serve port is short of descriptors too: the log is what tells.
    hub.expect_log("proxy listener: accept failed", WAIT);
    drop(held);
    assert!(
        wait_until(WAIT, || client::try_request(
            "GET",
            &format!("{}/api/v1/pods", hub.proxy_url()),
            &[],
            &[]
        )
        .is_ok_and(|r| r.0 == 200)),
        "the proxy port must serve again once descriptors are free\n{}",
        hub.log()
    );
    assert!(hub.metric("node_yurthub_accept_errors_total{listener=\"proxy\"}") > 0);
}

// ---------------------------------------------------------------- lifecycle

#[test]
fn bad_flags_exit_nonzero_with_one_line_naming_the_flag() {
    for (args, flag) in [
        (
            &[
                "--lb-mode",
                "random",
                "--server-addr",
                "https://127.0.0.1:1",
            ][..],
            "--lb-mode",
        ),
        (
            &[
                "--proxy-port",
                "notaport",
                "--server-addr",
                "https://127.0.0.1:1",
            ][..],
            "--proxy-port",
        ),
        (&["--node-name", "x"][..], "--server-addr"),
    ] {
        let output = std::process::Command::new(Hub::binary())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
    let output = std::process::Command::new(Hub::binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("yurthub "));
}

#[test]
fn sigterm_ends_open_watches_and_exits_zero_quickly() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/pods",
        Behaviour::watch(
            vec![(Duration::ZERO, "{}".into())],
            StreamEnd::UntilClientGone,
        ),
    );
    let mut hub = hub_for(&[&fake], &pki, &[]);
    let mut watch = RawStream::get(&format!("{}/api/v1/pods?watch=true", hub.proxy_url()), &[]);
    assert!(watch.next_line(WAIT).is_some());
    let started = Instant::now();
    let status = hub.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", hub.log());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    watch.read_to_end(WAIT);
    assert!(watch.is_ended());
    assert!(hub.log().contains("shutting down"));
}
