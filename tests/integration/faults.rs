//! Faults at the edge of online and offline (issue 17): a write is never
//! answered locally while an apiserver accepts connections, whatever the
//! health checker thinks of it; a locally answered write says so; each
//! apiserver's health is decided on its own, by consecutive results.
//!
//! Contents:
//! - writes while `/readyz` fails: every create, update, patch, delete,
//!   deletecollection and TokenRequest reaches the apiserver, whose answers
//!   (errors included) come back unchanged; a write goes to whichever
//!   apiserver accepts the connection
//! - writes with no apiserver reachable: refused or silent, answered locally
//!   with `X-Yurthub-Offline: true`, counted per component and verb and per
//!   reason (`refused`, `timeout`, `recent`)
//! - health per server: a blackholed apiserver never delays the verdict on the
//!   others; a flapping `/readyz` moves the verdict only as the thresholds
//!   allow (probes answered one at a time, counted, never timed)
//! - reads during a blip: the apiserver's answer when it gives one, the cache
//!   when the connection fails

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::support::client::{self, header};
use crate::support::fake_apiserver::status_json;
use crate::support::{Behaviour, FakeApiserver, Hub, TestPki, TokenIssuer, k8s_wire, wait_until};

const WAIT: Duration = Duration::from_secs(10);
/// A cache agent by default.
const KUBELET: &str = "kubelet/v1.20.2 (linux/amd64) kubernetes/faecb19";
/// The header every locally answered write carries.
const OFFLINE: &str = "x-yurthub-offline";
const CONFIGMAPS: &str = "/api/v1/namespaces/a/configmaps";
const CM1: &str = "/api/v1/namespaces/a/configmaps/cm1";
const TOKEN_PATH: &str = "/api/v1/namespaces/a/serviceaccounts/default/token";

fn hub_for(fakes: &[&FakeApiserver], pki: &TestPki, extra: &[&str]) -> Hub {
    let mut args = Hub::args_for(fakes, pki);
    args.extend(extra.iter().map(|s| s.to_string()));
    Hub::start(&args)
}

fn configmap(name: &str, rv: u64) -> String {
    format!(
        r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"a","uid":"uid-{name}","resourceVersion":"{rv}"}},"data":{{"v":"{rv}"}}}}"#
    )
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

fn content_type_for(method: &str) -> &'static str {
    match method {
        "PATCH" => "application/strategic-merge-patch+json",
        _ => "application/json",
    }
}

/// A request as kubelet makes it.
fn kubelet(hub: &Hub, method: &str, path: &str, body: &[u8]) -> client::Reply {
    client::request(
        method,
        &format!("{}{path}", hub.proxy_url()),
        &[
            ("User-Agent", KUBELET),
            ("Accept", "application/json"),
            ("Content-Type", content_type_for(method)),
        ],
        body,
    )
}

/// The sum of every series of the metric `name` (any labels); 0 when the hub
/// renders none. For "nothing counted"; a count expected to exist is read
/// with `Hub::metric`, which fails on a missing series.
fn total(hub: &Hub, name: &str) -> u64 {
    hub.metrics()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<u64>().ok())
        .sum()
}

fn offline_writes(component: &str, verb: &str) -> String {
    format!("node_yurthub_offline_writes_total{{component=\"{component}\",verb=\"{verb}\"}}")
}

fn unreachable(reason: &str) -> String {
    format!("node_yurthub_unreachable_total{{reason=\"{reason}\"}}")
}

/// The hub's verdicts on `url` in the order it logged them (true: healthy).
fn verdicts(hub: &Hub, url: &str) -> Vec<bool> {
    let needle = format!("apiserver {url} is ");
    hub.log()
        .lines()
        .filter_map(|l| Some(l[l.find(&needle)? + needle.len()..].starts_with("healthy")))
        .collect()
}

/// Where the hub first logged `url` unhealthy, as a byte offset in its log.
fn logged_unhealthy_at(hub: &Hub, url: &str) -> Option<usize> {
    hub.log().find(&format!("apiserver {url} is unhealthy"))
}

fn assert_not_offline(what: &str, reply: &client::Reply) {
    assert_eq!(
        header(&reply.1, OFFLINE),
        None,
        "{what}: answered by the apiserver, yet marked offline"
    );
}

// ------------------------------------------------ writes while /readyz fails

#[test]
fn writes_reach_the_apiserver_while_its_readyz_fails() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let from_cloud = |status: u16, body: String| {
        Behaviour::respond(
            status,
            &[
                ("Content-Type", "application/json"),
                ("X-Answered-By", "fake"),
            ],
            body,
        )
    };
    // Each answer differs from the request body: an echo would show.
    fake.route("POST", CONFIGMAPS, from_cloud(201, configmap("cm9", 31)));
    fake.route("PUT", CM1, from_cloud(200, configmap("cm1", 32)));
    fake.route("PATCH", CM1, from_cloud(200, configmap("cm1", 33)));
    let deleted = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":{"name":"cm1","kind":"configmaps"}}"#;
    fake.route("DELETE", CM1, from_cloud(200, deleted.to_string()));
    let emptied = r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"35"},"items":[]}"#;
    fake.route("DELETE", CONFIGMAPS, from_cloud(200, emptied.to_string()));
    let issuer = TokenIssuer::new(Duration::from_secs(3600));
    fake.route("POST", TOKEN_PATH, issuer.behaviour());
    // The apiserver works; only its /readyz says otherwise.
    fake.set_readyz(500);
    let hub = hub_for(&[&fake], &pki, &[]);
    hub.wait_server_health(&fake.url(), false, WAIT);

    let writes: [(&str, &str, String, u16, String); 5] = [
        (
            "POST",
            CONFIGMAPS,
            configmap("cm9", 0),
            201,
            configmap("cm9", 31),
        ),
        ("PUT", CM1, configmap("cm1", 0), 200, configmap("cm1", 32)),
        (
            "PATCH",
            CM1,
            r#"{"data":{"v":"x"}}"#.into(),
            200,
            configmap("cm1", 33),
        ),
        ("DELETE", CM1, String::new(), 200, deleted.into()),
        ("DELETE", CONFIGMAPS, String::new(), 200, emptied.into()),
    ];
    for (method, path, body, status, answer) in &writes {
        let reply = kubelet(&hub, method, path, body.as_bytes());
        let what = format!("{method} {path}");
        assert_eq!(
            (reply.0, text(&reply.2)),
            (*status, answer.clone()),
            "{what}: the client gets the apiserver's answer\n{}",
            hub.log()
        );
        assert_eq!(header(&reply.1, "x-answered-by"), Some("fake"), "{what}");
        assert_not_offline(&what, &reply);
        let seen = fake.requests_matching(|r| r.method == *method && r.path == *path);
        assert_eq!(seen.len(), 1, "{what} reached the apiserver once");
        assert_eq!(seen[0].body, body.as_bytes(), "{what}: the body as sent");
        assert_eq!(seen[0].header("user-agent"), Some(KUBELET), "{what}");
    }

    // A TokenRequest too: the token is the one the apiserver issued.
    let token_body = k8s_wire::json_token_request(&[], 3607, "p1", "uid-p1");
    let reply = kubelet(&hub, "POST", TOKEN_PATH, token_body.as_bytes());
    assert_eq!(reply.0, 201, "{}", String::from_utf8_lossy(&reply.2));
    assert_not_offline("TokenRequest", &reply);
    let issued = issuer.issued();
    assert_eq!(issued.len(), 1, "the TokenRequest reached the apiserver");
    assert_eq!(json(&reply.2)["status"]["token"], issued[0].token.as_str());

    assert!(
        !hub.server_healthy(&fake.url()),
        "the health checker still holds the server unhealthy: the writes did not wait for it"
    );
    assert_eq!(
        total(&hub, "node_yurthub_offline_writes_total"),
        0,
        "no write answered locally\n{}",
        hub.metrics()
    );
    assert_eq!(
        total(&hub, "node_yurthub_unreachable_total"),
        0,
        "{}",
        hub.metrics()
    );
}

#[test]
fn an_apiservers_own_errors_to_a_write_reach_the_client_unchanged_while_its_readyz_fails() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let unavailable = status_json(503, "ServiceUnavailable", "etcd is leader-less");
    let throttled = status_json(429, "TooManyRequests", "too many requests, slow down");
    fake.route(
        "POST",
        CONFIGMAPS,
        Behaviour::sequence(vec![
            Behaviour::json(503, &unavailable),
            Behaviour::respond(
                429,
                &[("Content-Type", "application/json"), ("Retry-After", "7")],
                throttled.clone(),
            ),
            Behaviour::json(500, "{\"kind\":\"Status\",\"code\":500}"),
        ]),
    );
    // The connection is accepted and the request read, then dropped: it may
    // have been applied, so it is not answered as if it had been.
    fake.route("PUT", CM1, Behaviour::Drop);
    fake.set_readyz(500);
    let hub = hub_for(&[&fake], &pki, &[]);
    hub.wait_server_health(&fake.url(), false, WAIT);

    let body = configmap("cm9", 0);
    let reply = kubelet(&hub, "POST", CONFIGMAPS, body.as_bytes());
    assert_eq!(
        (reply.0, text(&reply.2)),
        (503, unavailable),
        "{}",
        hub.log()
    );
    assert_not_offline("503", &reply);
    let reply = kubelet(&hub, "POST", CONFIGMAPS, body.as_bytes());
    assert_eq!((reply.0, text(&reply.2)), (429, throttled));
    assert_eq!(header(&reply.1, "retry-after"), Some("7"));
    assert_not_offline("429", &reply);
    let reply = kubelet(&hub, "POST", CONFIGMAPS, body.as_bytes());
    assert_eq!(
        (reply.0, reply.2.as_slice()),
        (500, &b"{\"kind\":\"Status\",\"code\":500}"[..])
    );
    assert_not_offline("500", &reply);
    assert_eq!(
        fake.requests_matching(|r| r.method == "POST" && r.path == CONFIGMAPS)
            .len(),
        3
    );

    let reply = kubelet(&hub, "PUT", CM1, configmap("cm1", 0).as_bytes());
    assert_eq!(reply.0, 502, "{}", String::from_utf8_lossy(&reply.2));
    assert_eq!(json(&reply.2)["kind"], "Status");
    assert_not_offline("a dropped connection", &reply);
    assert_eq!(
        fake.requests_matching(|r| r.method == "PUT" && r.path == CM1)
            .len(),
        1
    );
    assert_eq!(total(&hub, "node_yurthub_offline_writes_total"), 0);
    assert_eq!(total(&hub, "node_yurthub_unreachable_total"), 0);
}

#[test]
fn a_write_goes_to_whichever_apiserver_accepts_the_connection() {
    let pki = TestPki::new();
    let refusing = FakeApiserver::start(&pki);
    let working = FakeApiserver::start(&pki);
    working.route(
        "POST",
        CONFIGMAPS,
        Behaviour::json(201, &configmap("cm9", 40)),
    );
    working.set_readyz(500);
    let hub = hub_for(&[&refusing, &working], &pki, &["--lb-mode", "rr"]);
    refusing.stop();
    hub.wait_server_health(&refusing.url(), false, WAIT);
    hub.wait_server_health(&working.url(), false, WAIT);

    // Round robin would start at either: every one reaches the working server.
    for i in 0..4 {
        let reply = kubelet(&hub, "POST", CONFIGMAPS, configmap("cm9", 0).as_bytes());
        assert_eq!(
            (
                reply.0,
                json(&reply.2)["metadata"]["resourceVersion"].clone()
            ),
            (201, "40".into()),
            "write {i}\n{}",
            hub.log()
        );
        assert_not_offline(&format!("write {i}"), &reply);
    }
    assert_eq!(
        working
            .requests_matching(|r| r.method == "POST" && r.path == CONFIGMAPS)
            .len(),
        4
    );
    assert_eq!(total(&hub, "node_yurthub_offline_writes_total"), 0);
    assert_eq!(
        total(&hub, "node_yurthub_unreachable_total"),
        0,
        "an apiserver could be reached\n{}",
        hub.metrics()
    );
}

// ------------------------------------------------ writes with no apiserver reachable

#[test]
fn with_every_apiserver_refusing_a_write_is_answered_locally_and_marked() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route("GET", CM1, Behaviour::ok_json(&configmap("cm1", 10)));
    // Probes far apart: the health checker still holds the server healthy
    // when the writes find it refusing; each write decides for itself.
    let hub = hub_for(
        &[&fake],
        &pki,
        &[
            "--heartbeat-healthy-threshold",
            "1",
            "--heartbeat-interval-seconds",
            "600",
        ],
    );
    hub.wait_server_health(&fake.url(), true, WAIT);
    assert_eq!(kubelet(&hub, "GET", CM1, &[]).0, 200);
    let cached = hub.cache_dir().join("kubelet/configmaps/a/cm1.json");
    assert!(wait_until(WAIT, || cached.exists()), "{}", hub.log());
    fake.stop();

    let created = br#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm9","namespace":"a"},"data":{"k":"v"}}"#;
    let reply = kubelet(&hub, "POST", CONFIGMAPS, created);
    assert_eq!(
        (reply.0, text(&reply.2)),
        (201, text(created)),
        "the request body echoed\n{}",
        hub.log()
    );
    assert_eq!(header(&reply.1, OFFLINE), Some("true"), "{:?}", reply.1);
    assert_eq!(hub.metric(&offline_writes("kubelet", "create")), 1);
    assert_eq!(hub.metric(&unreachable("refused")), 1, "{}", hub.metrics());

    // The health checker still holds it healthy, so the next write asks
    // again (one refused connection decides nothing for later requests).
    let reply = kubelet(&hub, "POST", CONFIGMAPS, created);
    assert_eq!((reply.0, text(&reply.2)), (201, text(created)));
    assert_eq!(header(&reply.1, OFFLINE), Some("true"));
    assert_eq!(hub.metric(&offline_writes("kubelet", "create")), 2);
    assert_eq!(hub.metric(&unreachable("refused")), 2, "{}", hub.metrics());

    // Update and patch get the cached object, deletes a refusal: all marked.
    let reply = kubelet(&hub, "PUT", CM1, configmap("cm1", 0).as_bytes());
    assert_eq!(
        (reply.0, json(&reply.2)["data"]["v"].as_str()),
        (200, Some("10"))
    );
    assert_eq!(header(&reply.1, OFFLINE), Some("true"), "update");
    let reply = kubelet(&hub, "PATCH", CM1, br#"{"data":{"v":"x"}}"#);
    assert_eq!(
        (reply.0, json(&reply.2)["data"]["v"].as_str()),
        (200, Some("10"))
    );
    assert_eq!(header(&reply.1, OFFLINE), Some("true"), "patch");
    let reply = kubelet(&hub, "DELETE", CM1, &[]);
    assert_eq!(reply.0, 403, "{}", String::from_utf8_lossy(&reply.2));
    assert_eq!(header(&reply.1, OFFLINE), Some("true"), "delete");
    let reply = kubelet(&hub, "DELETE", CONFIGMAPS, &[]);
    assert_eq!(reply.0, 403, "{}", String::from_utf8_lossy(&reply.2));
    assert_eq!(header(&reply.1, OFFLINE), Some("true"), "deletecollection");
    for verb in ["update", "patch", "delete", "deletecollection"] {
        assert_eq!(hub.metric(&offline_writes("kubelet", verb)), 1, "{verb}");
    }
    // A TokenRequest with no token of the cloud's cached: refused, marked.
    let token_body = k8s_wire::json_token_request(&[], 3607, "p1", "uid-p1");
    let reply = kubelet(&hub, "POST", TOKEN_PATH, token_body.as_bytes());
    assert_eq!(reply.0, 503, "{}", String::from_utf8_lossy(&reply.2));
    assert_eq!(header(&reply.1, OFFLINE), Some("true"), "TokenRequest");
    assert_eq!(hub.metric(&offline_writes("kubelet", "create")), 3);
    assert_eq!(
        total(&hub, "node_yurthub_unreachable_total"),
        7,
        "each write answered locally counted once, by reason\n{}",
        hub.metrics()
    );
    assert_eq!(hub.metric(&unreachable("refused")), 7);
    assert!(fake.requests_matching(|r| r.method != "GET").is_empty());
}

#[test]
fn a_registration_of_a_node_the_cache_does_not_hold_is_never_answered_locally() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    let hub = hub_for(&[&fake], &pki, &[]);
    hub.wait_server_health(&fake.url(), true, WAIT);
    fake.stop();
    hub.wait_server_health(&fake.url(), false, WAIT);
    let node = br#"{"kind":"Node","apiVersion":"v1","metadata":{"name":"edge-1"}}"#;
    let reply = kubelet(&hub, "POST", "/api/v1/nodes", node);
    // kubelet takes a 201 for a finished registration and never registers
    // again; a 503 it retries until the cloud answers.
    assert_eq!(reply.0, 503, "{}", text(&reply.2));
    assert_eq!(json(&reply.2)["kind"], "Status");
    assert_eq!(header(&reply.1, OFFLINE), Some("true"));
    // Other creates are still answered locally.
    let created =
        br#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm9","namespace":"a"}}"#;
    assert_eq!(kubelet(&hub, "POST", CONFIGMAPS, created).0, 201);
}

#[test]
fn a_write_to_an_apiserver_that_never_completes_the_handshake_is_answered_locally() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    // Never completes a connection: each probe fails only at its connect
    // deadline (5 s), and two failures in a row are needed, so nothing is
    // known yet when the first write's own connect gives up (also at 5 s;
    // with one failure needed, the probe started at the same moment could
    // decide first).
    fake.freeze();
    let hub = hub_for(
        &[&fake],
        &pki,
        &[
            "--heartbeat-timeout-seconds",
            "8",
            "--heartbeat-failed-retry",
            "2",
        ],
    );
    let created =
        br#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm9","namespace":"a"}}"#;
    // Not known to be down (it may be an apiserver still starting): a write
    // whose connection only timed out is an error, never a faked success.
    let reply = kubelet(&hub, "POST", CONFIGMAPS, created);
    assert_eq!(reply.0, 504, "{}", String::from_utf8_lossy(&reply.2));
    assert_eq!(header(&reply.1, OFFLINE), None);
    assert_eq!(total(&hub, "node_yurthub_offline_writes_total"), 0);

    // Once the health checker has confirmed it down (its probe got no answer
    // at all), the write is answered locally at once.
    hub.wait_server_health(&fake.url(), false, Duration::from_secs(20));
    let started = Instant::now();
    let reply = kubelet(&hub, "POST", CONFIGMAPS, created);
    assert_eq!((reply.0, text(&reply.2)), (201, text(created)));
    assert_eq!(header(&reply.1, OFFLINE), Some("true"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(hub.metric(&unreachable("recent")), 1, "{}", hub.metrics());
    assert_eq!(hub.metric(&offline_writes("kubelet", "create")), 1);
    fake.thaw();
}

// ------------------------------------------------ health per server

#[test]
fn a_blackholed_apiserver_never_delays_the_verdict_on_the_others() {
    let pki = TestPki::new();
    let blackholed = FakeApiserver::start(&pki);
    let stopped = FakeApiserver::start(&pki);
    let healthy = FakeApiserver::start(&pki);
    // A probe of the blackholed server hangs 8 s; two failures make a verdict.
    let hub = hub_for(
        &[&blackholed, &stopped, &healthy],
        &pki,
        &[
            "--heartbeat-timeout-seconds",
            "8",
            "--heartbeat-failed-retry",
            "2",
        ],
    );
    for fake in [&blackholed, &stopped, &healthy] {
        hub.wait_server_health(&fake.url(), true, WAIT);
    }
    blackholed.freeze();
    stopped.stop();
    let outage = Instant::now();

    // Refused probes fail at once: two of them, one interval apart.
    hub.wait_server_health(&stopped.url(), false, Duration::from_secs(6));
    let decided = outage.elapsed();
    assert_eq!(
        logged_unhealthy_at(&hub, &blackholed.url()),
        None,
        "the blackholed server was judged first ({decided:?} after the outage)\n{}",
        hub.log()
    );
    assert!(hub.server_healthy(&healthy.url()));

    // The blackholed one is judged on its own schedule, after its timeouts.
    hub.wait_server_health(&blackholed.url(), false, Duration::from_secs(30));
    let (blackholed_at, stopped_at) = (
        logged_unhealthy_at(&hub, &blackholed.url()).unwrap(),
        logged_unhealthy_at(&hub, &stopped.url()).unwrap(),
    );
    assert!(stopped_at < blackholed_at, "{}", hub.log());
    assert!(hub.server_healthy(&healthy.url()));
    assert_eq!(
        verdicts(&hub, &healthy.url()),
        [true],
        "the third server's verdict never changed"
    );
    eprintln!(
        "stopped server unhealthy {decided:?} after the outage, blackholed one {:?}",
        outage.elapsed()
    );
    blackholed.thaw();
}

/// Longest a probe waits for the test to hand it its answer.
const GATE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct GateState {
    /// Probes received so far.
    arrived: usize,
    /// The status for each probe, by arrival number.
    answers: Vec<u16>,
    /// Answer every probe with 200 at once (the test is over).
    open: bool,
}

/// Answers an apiserver's `/readyz` probes one at a time, each with the status
/// the test hands it: between two answers the test reads the hub's verdict,
/// which then reflects exactly the probes answered so far (one prober per
/// server, each probe after the previous one's result).
#[derive(Clone)]
struct ProbeGate(Arc<(Mutex<GateState>, Condvar)>);

impl ProbeGate {
    fn install(fake: &FakeApiserver) -> ProbeGate {
        let gate = ProbeGate(Arc::default());
        let answering = gate.clone();
        fake.route(
            "GET",
            "/readyz",
            Behaviour::func(move |_| answering.next_answer()),
        );
        gate
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.0.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs on the fake's connection thread for each probe.
    fn next_answer(&self) -> Behaviour {
        let cv = &self.0.1;
        let mut st = self.state();
        let n = st.arrived;
        st.arrived += 1;
        cv.notify_all();
        let deadline = Instant::now() + GATE_TIMEOUT;
        while st.answers.len() <= n && !st.open {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        match st.answers.get(n) {
            Some(200) => Behaviour::text(200, "ok"),
            Some(&status) => Behaviour::text(status, "[-]etcd failed: reason withheld\n"),
            None if st.open => Behaviour::text(200, "ok"),
            None => Behaviour::text(503, "the test never answered this probe"),
        }
    }

    /// Waits until probe `n` (counted from 0) has arrived; panics otherwise.
    fn wait_arrived(&self, n: usize, hub: &Hub) {
        let cv = &self.0.1;
        let deadline = Instant::now() + WAIT;
        let mut st = self.state();
        while st.arrived <= n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "probe {n} never came ({} so far)\n{}",
                    st.arrived,
                    hub.log()
                );
            }
            st = cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Answers the next unanswered probe, which must have arrived.
    fn answer(&self, status: u16) {
        let mut st = self.state();
        assert!(st.answers.len() < st.arrived, "no probe is waiting");
        st.answers.push(status);
        self.0.1.notify_all();
    }
}

impl Drop for ProbeGate {
    fn drop(&mut self) {
        // The last handle (the route's) outlives the test's: open on the test's.
        self.state().open = true;
        self.0.1.notify_all();
    }
}

#[test]
fn a_flapping_readyz_changes_the_verdict_only_as_the_thresholds_allow() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route(
        "GET",
        "/api/v1/namespaces",
        Behaviour::ok_json(r#"{"kind":"NamespaceList","items":[]}"#),
    );
    let gate = ProbeGate::install(&fake);
    // The default thresholds: unhealthy after 3 failures in a row, healthy
    // after 2 successes in a row, from the start too.
    let hub = hub_for(&[&fake], &pki, &["--heartbeat-timeout-seconds", "5"]);
    let url = fake.url();
    // (answer to the probe, gauge after it, verdicts logged after it)
    let (h, u) = (true, false);
    let script: &[(u16, u64, &[bool])] = &[
        (500, 0, &[]), // unknown: one failure decides nothing
        (500, 0, &[]), // nor two
        (200, 0, &[]), // nor one success
        (200, 1, &[h]),
        (500, 1, &[h]), // flapping: never 3 failures in a row
        (200, 1, &[h]),
        (500, 1, &[h]),
        (500, 1, &[h]),
        (200, 1, &[h]),
        (500, 1, &[h]),
        (200, 1, &[h]),
        (500, 1, &[h]),
        (500, 1, &[h]),
        (500, 0, &[h, u]), // the third in a row
        (200, 0, &[h, u]), // flapping: never 2 successes in a row
        (500, 0, &[h, u]),
        (200, 0, &[h, u]),
        (500, 0, &[h, u]),
        (200, 0, &[h, u]),
        (200, 1, &[h, u, h]), // the second in a row
    ];
    let check = |after: usize, gauge: u64, logged: &[bool]| {
        let series = format!("node_yurthub_server_healthy_status{{server=\"{url}\"}}");
        assert_eq!(
            (hub.metric(&series), verdicts(&hub, &url)),
            (gauge, logged.to_vec()),
            "after {after} probes ({:?})\n{}",
            script[..after].iter().map(|s| s.0).collect::<Vec<_>>(),
            hub.log()
        );
    };
    for (n, &(status, _, _)) in script.iter().enumerate() {
        gate.wait_arrived(n, &hub);
        // Probe n waits for its answer: the verdict is that of probes 0..n.
        let (gauge, logged) = match n {
            0 => (0, &[][..]),
            _ => (script[n - 1].1, script[n - 1].2),
        };
        check(n, gauge, logged);
        if n == 2 {
            // Unknown after two failures, and used: requests still go to it.
            let (status, _, body) = client::request(
                "GET",
                &format!("{}/api/v1/namespaces", hub.proxy_url()),
                &[("User-Agent", "tool/1.0")],
                &[],
            );
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            assert_eq!(fake.requests_to("/api/v1/namespaces").len(), 1);
        }
        gate.answer(status);
    }
    gate.wait_arrived(script.len(), &hub);
    let (_, gauge, logged) = script[script.len() - 1];
    check(script.len(), gauge, logged);
}

// ------------------------------------------------ reads during a blip

/// With `/readyz` failing, a cached read is still sent to the apiserver and
/// gets its answer (which the cache keeps); once the connection fails
/// (dropped, or refused), the cache answers.
#[test]
fn reads_while_readyz_fails_get_the_apiservers_answer_or_the_cache_when_the_connection_fails() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    fake.route("GET", CM1, Behaviour::ok_json(&configmap("cm1", 10)));
    let hub = hub_for(&[&fake], &pki, &[]);
    hub.wait_server_health(&fake.url(), true, WAIT);
    assert_eq!(kubelet(&hub, "GET", CM1, &[]).0, 200);
    let cached = hub.cache_dir().join("kubelet/configmaps/a/cm1.json");
    assert!(wait_until(WAIT, || cached.exists()), "{}", hub.log());

    // The cloud moves on; its /readyz starts failing.
    fake.route("GET", CM1, Behaviour::ok_json(&configmap("cm1", 11)));
    fake.set_readyz(500);
    hub.wait_server_health(&fake.url(), false, WAIT);
    let asked = || {
        fake.requests_matching(|r| r.method == "GET" && r.path == CM1)
            .len()
    };
    let before = asked();
    let (status, _, body) = kubelet(&hub, "GET", CM1, &[]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let version = json(&body)["metadata"]["resourceVersion"].clone();
    assert_eq!(asked(), before + 1, "the apiserver is asked");
    assert_eq!(version, "11", "and its answer reaches the client");
    assert!(
        wait_until(WAIT, || std::fs::read(&cached)
            .is_ok_and(|b| json(&b)["metadata"]["resourceVersion"] == "11")),
        "the cache keeps the apiserver's answer"
    );

    // The connection breaks after the request: the cache answers.
    fake.route("GET", CM1, Behaviour::Drop);
    let (status, _, body) = kubelet(&hub, "GET", CM1, &[]);
    assert_eq!(
        (status, json(&body)["metadata"]["resourceVersion"].as_str()),
        (200, Some("11")),
        "{}",
        hub.log()
    );
    // No apiserver listening: the cache answers.
    fake.stop();
    let (status, _, body) = kubelet(&hub, "GET", CM1, &[]);
    assert_eq!(
        (status, json(&body)["metadata"]["resourceVersion"].as_str()),
        (200, Some("11")),
        "{}",
        hub.log()
    );
    assert_eq!(total(&hub, "node_yurthub_offline_writes_total"), 0);
}
