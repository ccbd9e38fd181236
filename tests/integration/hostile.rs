//! Hostile and careless clients: nothing a local process or a pod sends takes
//! the hub down, borrows the node's identity, or holds a port.
//!
//! Contents:
//! - identity: the secure port refuses a request without a bearer token (401,
//!   never forwarded); `Impersonate-*`/`X-Remote-*` never ride on the hub's
//!   certificate; the secure port binds its own address; offline, it never
//!   hands out cached Secrets
//! - deadlines, per port: a trickled TLS handshake, a request head trickled
//!   inside one TLS record, a trickled plain head and a trickled body are cut
//!   at their total deadlines; slow clients of the secure port never make the
//!   plain port answer 429; idle connections never make `/v1/healthz` fail
//! - memory: request bodies past the memory budget get 429 with
//!   `Retry-After`, and the budget is whole again afterwards; a 60 KB
//!   User-Agent and a crowd of components keep `/metrics` small

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::client::{self, header};
use crate::support::{Behaviour, FakeApiserver, Hub, TestPki, wait_until};

const WAIT: Duration = Duration::from_secs(10);
const KUBELET: &str = "kubelet/v1.20.2 (linux/amd64) kubernetes/faecb19";
const PODS: &str = "/api/v1/namespaces/default/pods";

/// A hub with the secure port on (serving certificate from the test PKI),
/// plus `extra` flags; returns it with the secure port's number.
fn hub_with_secure_port(fake: &FakeApiserver, pki: &TestPki, extra: &[&str]) -> (Hub, u16) {
    let secure_port = crate::support::free_port();
    let mut args = Hub::args_for(&[fake], pki);
    args.extend([
        "--proxy-secure-port".into(),
        secure_port.to_string(),
        "--tls-cert-file".into(),
        pki.server_cert_path().display().to_string(),
        "--tls-private-key-file".into(),
        pki.server_key_path().display().to_string(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let hub = Hub::start(&args);
    hub.expect_log("secure proxy listening on https://", WAIT);
    (hub, secure_port)
}

/// A TLS client connection to `addr`, verifying the hub as 127.0.0.1.
fn tls_connect(
    pki: &TestPki,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let config = client::rustls_client_config(&pki.ca_path(), None);
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let connection = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

/// Everything the peer sends until it closes (bounded by the read timeout).
fn read_all(stream: &mut impl Read) -> String {
    let mut out = Vec::new();
    let mut piece = [0u8; 4096];
    while let Ok(n) = stream.read(&mut piece) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&piece[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not a Status ({e}): {}", String::from_utf8_lossy(body)))
}

#[test]
fn the_secure_port_refuses_a_request_without_a_bearer_token_and_never_forwards_it() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        PODS,
        Behaviour::ok_json(r#"{"kind":"PodList","items":[]}"#),
    );
    let (hub, secure_port) = hub_with_secure_port(&fake, &pki, &[]);
    hub.wait_server_health(&fake.url(), true, WAIT);
    let agent = client::tls_agent(&pki.ca_path(), None);
    let url = format!("https://127.0.0.1:{secure_port}{PODS}");
    for authorization in [None, Some("Basic dXNlcjpwYXNz"), Some("Bearer ")] {
        let headers: Vec<(&str, &str)> = authorization
            .map(|a| ("Authorization", a))
            .into_iter()
            .collect();
        let (status, _, body) = client::request_with(&agent, "GET", &url, &headers, &[]);
        assert_eq!(status, 401, "{authorization:?}");
        let status = status_of(&body);
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "Unauthorized");
    }
    assert!(
        fake.requests_to(PODS).is_empty(),
        "nothing reached the apiserver"
    );
    // With a token it goes upstream under that token alone, identity
    // headers included: the apiserver judges them against the pod's token.
    let (status, _, _) = client::request_with(
        &agent,
        "GET",
        &url,
        &[
            ("Authorization", "Bearer pod-token"),
            ("Impersonate-User", "system:admin"),
        ],
        &[],
    );
    assert_eq!(status, 200);
    let seen = &fake.requests_to(PODS)[0];
    assert_eq!(seen.header("authorization"), Some("Bearer pod-token"));
    assert_eq!(seen.client_cert_cn, None);
    assert_eq!(seen.header("impersonate-user"), Some("system:admin"));
    let metrics = hub.metrics();
    assert!(
        metrics.contains("verb=\"list\",resource=\"pods\",code=\"401\"} 3"),
        "{metrics}"
    );
}

#[test]
fn identity_headers_never_ride_on_the_hubs_certificate() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        PODS,
        Behaviour::ok_json(r#"{"kind":"PodList","items":[]}"#),
    );
    let hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    hub.wait_server_health(&fake.url(), true, WAIT);
    let (status, _, _) = client::request(
        "GET",
        &format!("{}{PODS}", hub.proxy_url()),
        &[
            ("User-Agent", KUBELET),
            ("Impersonate-User", "system:admin"),
            ("Impersonate-Group", "system:masters"),
            ("Impersonate-Extra-Scopes", "x"),
            ("X-Remote-User", "system:admin"),
            ("X-Remote-Group", "system:masters"),
        ],
        &[],
    );
    assert_eq!(status, 200);
    let seen = &fake.requests_to(PODS)[0];
    assert!(
        seen.client_cert_cn.is_some(),
        "sent under the node's certificate"
    );
    let borrowed: Vec<&(String, String)> = seen
        .headers
        .iter()
        .filter(|(n, _)| {
            let n = n.to_ascii_lowercase();
            n.starts_with("impersonate-") || n.starts_with("x-remote-")
        })
        .collect();
    assert!(borrowed.is_empty(), "{borrowed:?}");
}

#[test]
fn the_secure_port_listens_on_its_own_address() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let (hub, secure_port) =
        hub_with_secure_port(&fake, &pki, &["--proxy-secure-bind-address", "127.0.0.2"]);
    assert!(
        TcpStream::connect(("127.0.0.1", secure_port)).is_err(),
        "not on --bind-address"
    );
    let mut tls = tls_connect(&pki, SocketAddr::from(([127, 0, 0, 2], secure_port)));
    write!(
        tls,
        "GET {PODS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let answer = read_all(&mut tls);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // The plain port stays where --bind-address put it.
    assert_eq!(
        client::get(&format!("{}/v1/healthz", hub.serve_url())).0,
        200
    );
    assert!(TcpStream::connect(("127.0.0.1", hub.proxy_port())).is_ok());
}

#[test]
fn offline_the_secure_port_never_hands_out_cached_secrets() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let secret = "/api/v1/namespaces/default/secrets/s1";
    let configmap = "/api/v1/namespaces/default/configmaps/c1";
    fake.route(
        "GET",
        secret,
        Behaviour::ok_json(
            r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s1","namespace":"default","resourceVersion":"5"},"data":{"k":"c2VjcmV0"}}"#,
        ),
    );
    fake.route(
        "GET",
        configmap,
        Behaviour::ok_json(
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c1","namespace":"default","resourceVersion":"6"}}"#,
        ),
    );
    let (hub, secure_port) = hub_with_secure_port(&fake, &pki, &[]);
    hub.wait_server_health(&fake.url(), true, WAIT);
    for path in [secret, configmap] {
        let (status, _, _) = client::request(
            "GET",
            &format!("{}{path}", hub.proxy_url()),
            &[("User-Agent", KUBELET)],
            &[],
        );
        assert_eq!(status, 200);
    }
    assert!(wait_until(WAIT, || hub
        .metric("node_yurthub_cache_objects_written_total")
        >= 2));
    fake.stop();
    hub.wait_server_health(&fake.url(), false, WAIT);
    let agent = client::tls_agent(&pki.ca_path(), None);
    let secure = |path: &str| {
        client::request_with(
            &agent,
            "GET",
            &format!("https://127.0.0.1:{secure_port}{path}"),
            &[("Authorization", "Bearer any"), ("User-Agent", KUBELET)],
            &[],
        )
    };
    let (status, _, body) = secure(secret);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(!String::from_utf8_lossy(&body).contains("c2VjcmV0"));
    assert_eq!(secure(configmap).0, 200, "other cached objects are served");
    let plain = client::request(
        "GET",
        &format!("{}{secret}", hub.proxy_url()),
        &[("User-Agent", KUBELET)],
        &[],
    );
    assert_eq!(plain.0, 200, "the node's own components still get it");
}

/// Sends `bytes` one at a time every `pace` until the peer closes or
/// `give_up` passes; returns when the peer closed (None: it never did).
fn trickle(
    tcp: &mut TcpStream,
    bytes: &[u8],
    pace: Duration,
    give_up: Duration,
) -> Option<Instant> {
    let started = Instant::now();
    tcp.set_read_timeout(Some(pace)).unwrap();
    let mut sink = [0u8; 4096];
    for byte in bytes.iter().cycle() {
        if started.elapsed() > give_up {
            return None;
        }
        if tcp.write_all(std::slice::from_ref(byte)).is_err() {
            return Some(Instant::now());
        }
        // Waiting for an answer paces the trickle.
        match tcp.read(&mut sink) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(Instant::now()),
        }
    }
    None
}

#[test]
fn trickled_handshakes_heads_and_bodies_are_cut_at_their_deadlines() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Behaviour::ok_json("{}"),
    );
    let (hub, secure_port) = hub_with_secure_port(&fake, &pki, &[]);
    let pace = Duration::from_millis(300);
    let started = Instant::now();
    let secure = SocketAddr::from(([127, 0, 0, 1], secure_port));
    let plain = SocketAddr::from(([127, 0, 0, 1], hub.proxy_port()));
    // Each case runs on its own thread, all at once: (what, cut within).
    let handshake = std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(secure).unwrap();
        // A TLS handshake record header announcing a large record, then noise.
        let mut hello = vec![0x16, 0x03, 0x01, 0x3f, 0xff];
        hello.extend(std::iter::repeat_n(0x01, 4096));
        trickle(&mut tcp, &hello, pace, Duration::from_secs(40))
    });
    let head_in_record = {
        let config = client::rustls_client_config(&pki.ca_path(), None);
        std::thread::spawn(move || {
            let name =
                rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
            let mut connection = rustls::ClientConnection::new(config, name).unwrap();
            let mut tcp = TcpStream::connect(secure).unwrap();
            tcp.set_read_timeout(Some(WAIT)).unwrap();
            while connection.is_handshaking() {
                connection.complete_io(&mut tcp).unwrap();
            }
            // One record holding a head that never ends, sent a byte at a time.
            let mut head = b"GET /api HTTP/1.1\r\nAuthorization: Bearer t\r\n".to_vec();
            head.extend(std::iter::repeat_n(b'x', 8000));
            connection.writer().write_all(&head).unwrap();
            let mut record = Vec::new();
            while connection.wants_write() {
                connection.write_tls(&mut record).unwrap();
            }
            trickle(&mut tcp, &record, pace, Duration::from_secs(60))
        })
    };
    let plain_head = std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(plain).unwrap();
        trickle(
            &mut tcp,
            b"GET /api HTTP/1.1\r\nX-Slow: ",
            pace,
            Duration::from_secs(60),
        )
    });
    let body = std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(plain).unwrap();
        // The request's own timeout (3 s, plus the hub's grace) bounds its body.
        write!(
            tcp,
            "POST /api/v1/namespaces/default/configmaps?timeout=3s HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        .unwrap();
        trickle(&mut tcp, b"{", pace, Duration::from_secs(40))
    });
    let cut = |what: &str, result: Option<Instant>, within: Duration| {
        let at = result.unwrap_or_else(|| panic!("{what}: never cut"));
        let took = at - started;
        assert!(
            took <= within,
            "{what}: cut after {took:?}, allowed {within:?}"
        );
        took
    };
    let handshake = cut(
        "handshake",
        handshake.join().unwrap(),
        Duration::from_secs(15),
    );
    let head = cut(
        "head in one record",
        head_in_record.join().unwrap(),
        Duration::from_secs(38),
    );
    let plain = cut(
        "plain head",
        plain_head.join().unwrap(),
        Duration::from_secs(38),
    );
    let body = cut("body", body.join().unwrap(), Duration::from_secs(15));
    assert!(
        handshake >= Duration::from_secs(9),
        "handshake cut early: {handshake:?}"
    );
    assert!(
        head >= Duration::from_secs(25) && plain >= Duration::from_secs(25),
        "{head:?} {plain:?}"
    );
    assert!(body >= Duration::from_secs(7), "body cut early: {body:?}");
    // The hub serves on.
    assert_eq!(
        client::get(&format!("{}/v1/healthz", hub.serve_url())).0,
        200
    );
}

#[test]
fn slow_clients_of_the_secure_port_never_make_the_plain_port_answer_429() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let slow = "/api/v1/namespaces/default/configmaps/slow";
    fake.route(
        "GET",
        slow,
        Behaviour::slow(Duration::from_secs(4), Behaviour::ok_json("{}")),
    );
    fake.route(
        "GET",
        PODS,
        Behaviour::ok_json(r#"{"kind":"PodList","items":[]}"#),
    );
    let (hub, secure_port) = hub_with_secure_port(&fake, &pki, &["--max-requests-in-flight", "2"]);
    hub.wait_server_health(&fake.url(), true, WAIT);
    let agent = client::tls_agent(&pki.ca_path(), None);
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let agent = agent.clone();
            std::thread::spawn(move || {
                client::request_with(
                    &agent,
                    "GET",
                    &format!("https://127.0.0.1:{secure_port}{slow}"),
                    &[("Authorization", "Bearer t")],
                    &[],
                )
                .0
            })
        })
        .collect();
    assert!(
        wait_until(WAIT, || hub.metric("node_yurthub_in_flight_requests") == 2),
        "the secure port's two slots never filled"
    );
    let (status, _, _) = client::request_with(
        &agent,
        "GET",
        &format!("https://127.0.0.1:{secure_port}{PODS}"),
        &[("Authorization", "Bearer t")],
        &[],
    );
    assert_eq!(status, 429, "the secure port is full");
    let (status, _, _) = client::get(&format!("{}{PODS}", hub.proxy_url()));
    assert_eq!(status, 200, "the plain port has its own slots");
    for holder in holders {
        assert_eq!(holder.join().unwrap(), 200);
    }
}

#[test]
fn idle_connections_on_the_serve_port_never_make_healthz_fail() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    let serve = SocketAddr::from((
        [127, 0, 0, 1],
        hub.serve_url().rsplit(':').next().unwrap().parse().unwrap(),
    ));
    // More than the serve port's 32 connections: idle ones and half-sent heads.
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..40 {
        let mut tcp = TcpStream::connect(serve).unwrap();
        match i % 3 {
            0 => tcp.write_all(b"GET /v1/healthz HTTP/1.1\r\n").unwrap(),
            // Answered, then a body that never comes is drained: waiting on
            // the client all the same.
            1 => tcp
                .write_all(b"GET /v1/healthz HTTP/1.1\r\nContent-Length: 200000\r\n\r\nx")
                .unwrap(),
            _ => {}
        }
        held.push(tcp);
    }
    for _ in 0..5 {
        let (status, _, body) = client::get(&format!("{}/v1/healthz", hub.serve_url()));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    assert!(hub.metric("node_yurthub_evicted_idle_connections_total{listener=\"serve\"}") >= 5);
    drop(held);
}

#[test]
fn request_bodies_past_the_memory_budget_get_429_and_the_budget_comes_back() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let configmaps = "/api/v1/namespaces/default/configmaps";
    fake.route(
        "POST",
        configmaps,
        Behaviour::slow(Duration::from_secs(3), Behaviour::json(201, "{}")),
    );
    let mut args = Hub::args_for(&[&fake], &pki);
    args.extend(["--memory-budget-mib".into(), "8".into()]);
    let hub = Hub::start(&args);
    hub.wait_server_health(&fake.url(), true, WAIT);
    // Edge mode reads a write's body whole before sending it; three bodies
    // of 3 MiB at once do not fit in 8 MiB.
    let body = Arc::new(vec![b' '; 3 * 1024 * 1024 - 16]);
    let url = format!("{}{configmaps}", hub.proxy_url());
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let (body, url) = (body.clone(), url.clone());
            std::thread::spawn(move || {
                let (status, headers, _) = client::request(
                    "POST",
                    &url,
                    &[
                        ("Content-Type", "application/json"),
                        ("User-Agent", KUBELET),
                    ],
                    &body[..],
                );
                (status, header(&headers, "retry-after").map(str::to_string))
            })
        })
        .collect();
    let mut answers: Vec<(u16, Option<String>)> =
        writers.into_iter().map(|w| w.join().unwrap()).collect();
    answers.sort();
    assert_eq!(answers[0].0, 201, "{answers:?}");
    assert_eq!(answers[2], (429, Some("1".to_string())), "{answers:?}");
    assert!(hub.metric("node_yurthub_memory_budget_refused_total") >= 1);
    assert!(
        wait_until(WAIT, || hub
            .metric("node_yurthub_memory_budget_bytes{state=\"used\"}")
            == 0),
        "every reservation was given back"
    );
    // And a write that fits goes through again.
    assert_eq!(
        client::request("POST", &url, &[("Content-Type", "application/json")], b"{}").0,
        201
    );
}

#[test]
fn a_huge_user_agent_and_a_crowd_of_components_keep_metrics_small() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        PODS,
        Behaviour::ok_json(r#"{"kind":"PodList","items":[]}"#),
    );
    let hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    hub.wait_server_health(&fake.url(), true, WAIT);
    let url = format!("{}{PODS}", hub.proxy_url());
    let huge = "a".repeat(60_000);
    // Too large to forward: a clear 431, counted without its name.
    let (status, _, body) = client::request("GET", &url, &[("User-Agent", &huge)], &[]);
    assert_eq!(status, 431, "{}", String::from_utf8_lossy(&body));
    assert_eq!(status_of(&body)["kind"], "Status");
    for i in 0..150 {
        let agent = format!("agent-{i}/1.0");
        assert_eq!(
            client::request("GET", &url, &[("User-Agent", &agent)], &[]).0,
            200
        );
    }
    let metrics = hub.metrics();
    assert!(
        metrics.len() < 64 * 1024,
        "/metrics is {} bytes",
        metrics.len()
    );
    assert!(!metrics.contains(&huge[..100]));
    assert!(
        metrics.contains("node_yurthub_requests_total{component=\"other\",verb=\"list\",resource=\"pods\",code=\"431\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("node_yurthub_requests_total{component=\"other\",verb=\"list\",resource=\"pods\",code=\"200\"}"),
        "{metrics}"
    );
}

#[test]
fn bytes_after_a_bad_chunk_size_are_never_read_as_a_second_request() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let configmaps = "/api/v1/namespaces/default/configmaps";
    let smuggled = "/api/v1/namespaces/kube-system/secrets";
    fake.route("POST", configmaps, Behaviour::json(201, "{}"));
    fake.route(
        "GET",
        smuggled,
        Behaviour::ok_json(r#"{"kind":"SecretList","items":[]}"#),
    );
    let mut args = Hub::args_for(&[&fake], &pki);
    args.extend(["--working-mode".into(), "cloud".into()]);
    let hub = Hub::start(&args);
    hub.wait_server_health(&fake.url(), true, WAIT);
    for bad_size in ["zz", "-1", "fffffffffffffffffff", "1;\u{0}"] {
        let mut tcp = TcpStream::connect(("127.0.0.1", hub.proxy_port())).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            tcp,
            "POST {configmaps} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
             2\r\n{{}}\r\n{bad_size}\r\n\r\n\
             GET {smuggled} HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let answer = read_all(&mut tcp);
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "one answer, then the connection closed ({bad_size:?}): {answer}"
        );
    }
    assert!(
        fake.requests_to(smuggled).is_empty(),
        "the bytes after the bad chunk were taken for a request"
    );
}

#[test]
fn an_older_empty_list_never_removes_newer_cached_objects() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let pods = "/api/v1/namespaces/default/pods";
    fake.route(
        "GET",
        &format!("{pods}/p1"),
        Behaviour::ok_json(
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p1","namespace":"default","resourceVersion":"100"}}"#,
        ),
    );
    fake.route(
        "GET",
        pods,
        Behaviour::ok_json(
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"50"},"items":[]}"#,
        ),
    );
    let hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    hub.wait_server_health(&fake.url(), true, WAIT);
    let get = |path: &str| {
        client::request(
            "GET",
            &format!("{}{path}", hub.proxy_url()),
            &[("User-Agent", KUBELET)],
            &[],
        )
    };
    assert_eq!(get(&format!("{pods}/p1")).0, 200);
    let file = hub.cache_dir().join("kubelet/pods/default/p1.json");
    assert!(wait_until(WAIT, || file.exists()), "p1 never cached");
    let written = hub.metric("node_yurthub_cache_objects_written_total");
    assert_eq!(get(pods).0, 200);
    // The list (at resourceVersion 50) is applied once the writer records
    // its shape; p1 (at 100) is newer and stays.
    let lists = hub.cache_dir().join("kubelet/pods/_lists.json");
    assert!(
        wait_until(WAIT, || lists.exists()),
        "the list was never applied"
    );
    assert!(file.exists(), "an older list removed a newer object");
    assert_eq!(hub.metric("node_yurthub_cache_objects_removed_total"), 0);
    assert!(hub.metric("node_yurthub_cache_objects_written_total") >= written);
}

#[test]
fn an_offline_list_too_large_for_the_memory_budget_is_answered_one_at_a_time() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let configmaps = "/api/v1/namespaces/default/configmaps";
    // 50 ConfigMaps of 100 KB: a 5 MB list. With an 8 MiB budget the
    // objects fit once, but not with the list built of them.
    let data = "x".repeat(100_000);
    let items: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"c{i}","namespace":"default","resourceVersion":"{}"}},"data":{{"d":"{data}"}}}}"#,
                10 + i
            )
        })
        .collect();
    fake.route(
        "GET",
        configmaps,
        Behaviour::ok_json(&format!(
            r#"{{"kind":"ConfigMapList","apiVersion":"v1","metadata":{{"resourceVersion":"99"}},"items":[{}]}}"#,
            items.join(",")
        )),
    );
    // Filled by a hub with the default budget...
    let mut filler = Hub::start(&Hub::args_for(&[&fake], &pki));
    filler.wait_server_health(&fake.url(), true, WAIT);
    let (status, _, _) = client::request(
        "GET",
        &format!("{}{configmaps}", filler.proxy_url()),
        &[("User-Agent", KUBELET)],
        &[],
    );
    assert_eq!(status, 200);
    let cache = filler.cache_dir();
    let lists = cache.join("kubelet/configmaps/_lists.json");
    assert!(
        wait_until(WAIT, || lists.exists()),
        "the list was never stored"
    );
    filler.terminate();
    fake.stop();
    // ...then served offline by one with 8 MiB.
    let mut args = Hub::args_for(&[&fake], &pki);
    args.extend([
        "--memory-budget-mib".into(),
        "8".into(),
        "--disk-cache-path".into(),
        cache.display().to_string(),
    ]);
    let hub = Hub::start(&args);
    let url = format!("{}{configmaps}", hub.proxy_url());
    // Clients that ask for the list and never read it hold what the hub is
    // writing to them: the first holds 5 MB of the budget, the second the
    // one place past it (counted once for its build, once for its write).
    let hold = || {
        let mut tcp = TcpStream::connect(("127.0.0.1", hub.proxy_port())).unwrap();
        write!(
            tcp,
            "GET {configmaps} HTTP/1.1\r\nHost: x\r\nUser-Agent: {KUBELET}\r\n\r\n"
        )
        .unwrap();
        tcp
    };
    let first = hold();
    assert!(
        wait_until(WAIT, || hub
            .metric("node_yurthub_memory_budget_bytes{state=\"used\"}")
            >= 5_000_000),
        "the first list is not being written"
    );
    let oversize = hub.metric("node_yurthub_memory_budget_oversize_total");
    let second = hold();
    assert!(
        wait_until(WAIT, || hub
            .metric("node_yurthub_memory_budget_oversize_total")
            >= oversize + 2),
        "the second list never took the place past the budget"
    );
    let get = |url: &str| client::request("GET", url, &[("User-Agent", KUBELET)], &[]);
    let (status, headers, body) = get(&url);
    assert_eq!(
        status,
        429,
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    assert_eq!(header(&headers, "retry-after"), Some("1"));
    assert_eq!(status_of(&body)["reason"], "TooManyRequests");
    let (status, _, body) = get(&format!("{url}/c7"));
    assert_eq!(status, 200, "one object still fits");
    assert_eq!(status_of(&body)["metadata"]["name"], "c7");
    drop((first, second));
    // Once they are gone, the next one gets the whole list.
    let mut list = None;
    assert!(wait_until(WAIT, || {
        let reply = get(&url);
        let ok = reply.0 == 200;
        list = Some(reply);
        ok
    }));
    let list = status_of(&list.unwrap().2);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(50));
    assert!(
        wait_until(WAIT, || hub
            .metric("node_yurthub_memory_budget_bytes{state=\"used\"}")
            == 0),
        "every reservation was given back"
    );
}
