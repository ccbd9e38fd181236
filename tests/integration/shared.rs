//! The shared watch: one upstream list+watch per resource answering every
//! local client, compared with what the same clients see watching the fake
//! apiserver directly (`LiveCollection` behaves as kube-apiserver's watch
//! cache):
//! - clients with different selectors see exactly the direct watches'
//!   events, from one upstream list and watch; offline the cache answers;
//! - across an upstream break, a `410 Gone` relist and a hub restart;
//! - protobuf streaming lists of EndpointSlices;
//! - a client with its own token only when an access review allows it;
//! - what the shared state cannot answer is forwarded at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::live_collection::{ObjectKey, apply, list_state};
use crate::support::{
    Behaviour, Encoding, FakeApiserver, Hub, LiveCollection, RecordedEvent, TestPki, WatchRecorder,
    client, wait_until,
};

const WAIT: Duration = Duration::from_secs(20);
const KUBE_PROXY: &str = "kube-proxy/v1.30.0";
const HUB_AGENT: &str = "yurthub/shared-watch";
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

/// What a test compares of an event: type, object, version, labels.
type Seen = (String, String, String, u64, Vec<(String, String)>);

fn seen(events: &[RecordedEvent]) -> Vec<Seen> {
    events
        .iter()
        .filter(|e| e.event_type != "BOOKMARK" || e.initial_events_end)
        .map(|e| {
            (
                e.event_type.clone(),
                e.namespace.clone(),
                e.name.clone(),
                e.resource_version,
                e.labels.clone(),
            )
        })
        .collect()
}

struct Bed {
    pki: TestPki,
    fake: FakeApiserver,
    services: Arc<LiveCollection>,
    slices: Arc<LiveCollection>,
    hub: Hub,
}

impl Bed {
    fn new(slices_encoding: Encoding) -> Bed {
        let pki = TestPki::new();
        let fake = FakeApiserver::start(&pki);
        let services = LiveCollection::new(Encoding::Json, "Service", "v1");
        let slices = LiveCollection::new(slices_encoding, "EndpointSlice", "discovery.k8s.io/v1");
        services.route_on(&fake);
        slices.route_on(&fake);
        services.put("a", "web", &[("app", "web")]);
        services.put("a", "db", &[("app", "db")]);
        services.put("b", "web", &[("app", "web")]);
        let hub = Hub::start(&Hub::args_for(&[&fake], &pki));
        Bed {
            pki,
            fake,
            services,
            slices,
            hub,
        }
    }

    /// A watch through the hub, as kube-proxy.
    fn through_hub(&self, path_and_query: &str, accept: &str) -> WatchRecorder {
        let watch = WatchRecorder::start(
            &self.hub.proxy_url(),
            path_and_query,
            if accept.starts_with("application/vnd") {
                Encoding::Protobuf
            } else {
                Encoding::Json
            },
            &[("User-Agent", KUBE_PROXY), ("Accept", accept)],
            None,
        );
        assert_eq!(watch.wait_open(WAIT), Some(200), "{path_and_query}");
        watch
    }

    /// The same watch straight to the fake apiserver.
    fn direct(&self, path_and_query: &str, encoding: Encoding) -> WatchRecorder {
        let (ca, pem) = (self.pki.ca_path(), self.pki.client_pem_path());
        let watch = WatchRecorder::start(
            &self.fake.url(),
            path_and_query,
            encoding,
            &[],
            Some((&ca, Some(&pem))),
        );
        assert_eq!(watch.wait_open(WAIT), Some(200), "{path_and_query}");
        watch
    }

    /// A list through the hub: status, objects, resourceVersion.
    fn list(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> (u16, BTreeMap<ObjectKey, u64>, u64) {
        let mut all = vec![("User-Agent", KUBE_PROXY), ("Accept", "application/json")];
        all.extend_from_slice(headers);
        let (status, _, body) = client::request(
            "GET",
            &format!("{}{path_and_query}", self.hub.proxy_url()),
            &all,
            b"",
        );
        if status != 200 {
            return (status, BTreeMap::new(), 0);
        }
        let (objects, rv) = list_state(&body, Encoding::Json);
        (status, objects, rv)
    }

    /// A list straight from the fake apiserver.
    fn direct_list(&self, path_and_query: &str) -> BTreeMap<ObjectKey, u64> {
        let agent = client::tls_agent(&self.pki.ca_path(), Some(&self.pki.client_pem_path()));
        let (status, _, body) = client::request_with(
            &agent,
            "GET",
            &format!("{}{path_and_query}", self.fake.url()),
            &[],
            b"",
        );
        assert_eq!(status, 200);
        list_state(&body, Encoding::Json).0
    }

    /// Requests the hub's shared watch made for `path` (`watch` or not).
    fn hub_requests(&self, path: &str, watch: bool) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.path == path && r.header("user-agent") == Some(HUB_AGENT))
            .filter(|r| r.query_param("watch").is_some() == watch)
            .count()
    }

    fn metric(&self, name: &str, resource: &str, encoding: &str) -> u64 {
        self.hub.metric(&format!(
            "{name}{{resource=\"{resource}\",encoding=\"{encoding}\"}}"
        ))
    }
}

/// Waits until the hub's and the direct watch's events agree and hold at
/// least `least` events, then returns them.
fn agree(hub: &WatchRecorder, direct: &WatchRecorder, least: usize, what: &str) -> Vec<Seen> {
    let same = wait_until(WAIT, || {
        let (h, d) = (seen(&hub.events()), seen(&direct.events()));
        d.len() >= least && h == d
    });
    assert!(
        same,
        "{what}: through the hub {:#?}\ndirect {:#?}\nhub problem: {:?}",
        seen(&hub.events()),
        seen(&direct.events()),
        hub.problem()
    );
    seen(&direct.events())
}

#[test]
fn clients_with_different_selectors_see_what_direct_watches_show_from_one_upstream_watch() {
    let bed = Bed::new(Encoding::Json);
    let (status, listed, rv) = bed.list(SERVICES, &[]);
    assert_eq!(status, 200);
    assert_eq!(listed, bed.direct_list(SERVICES));
    let queries = [
        format!("{SERVICES}?watch=true&resourceVersion={rv}"),
        format!("{SERVICES}?watch=true&resourceVersion={rv}&labelSelector=app%3Dweb"),
        format!(
            "/api/v1/namespaces/a/services?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dweb&allowWatchBookmarks=true"
        ),
    ];
    let watches: Vec<(WatchRecorder, WatchRecorder)> = queries
        .iter()
        .map(|q| {
            (
                bed.through_hub(q, "application/json"),
                bed.direct(q, Encoding::Json),
            )
        })
        .collect();
    let s = &bed.services;
    s.put("a", "web", &[("app", "other")]);
    s.put("a", "web", &[("app", "web")]);
    s.put("a", "new", &[("app", "web")]);
    s.delete("b", "web");
    s.delete("a", "db");
    s.put("b", "web", &[("app", "x")]);
    let least = [6, 4, 2];
    for (i, (hub, direct)) in watches.iter().enumerate() {
        agree(hub, direct, least[i], &queries[i]);
    }
    // The relabelled object left the selection as DELETED with the labels
    // the client had seen, and came back as ADDED.
    let selected = seen(&watches[1].0.events());
    assert_eq!(selected[0].0, "DELETED");
    assert_eq!(selected[0].4, vec![("app".to_string(), "web".to_string())]);
    assert_eq!(selected[1].0, "ADDED");
    // One list and one watch upstream, whatever the clients asked; none of
    // their requests reached the apiserver.
    assert_eq!(bed.hub_requests(SERVICES, false), 1);
    assert_eq!(bed.hub_requests(SERVICES, true), 1);
    assert!(
        !bed.fake
            .requests()
            .iter()
            .any(|r| r.header("user-agent") == Some(KUBE_PROXY)),
        "a client's request reached the apiserver"
    );
    let m = |name| bed.metric(name, "services.v1", "json");
    assert_eq!(m("node_yurthub_shared_watch_upstream_streams"), 1);
    assert_eq!(m("node_yurthub_shared_watch_watchers"), 3);
    assert_eq!(m("node_yurthub_shared_watch_objects"), 3);
    assert!(m("node_yurthub_shared_watch_received_bytes_total") > 0);

    // Offline, the cache answers the list kube-proxy made.
    let web = format!("{SERVICES}?labelSelector=app%3Dweb");
    let (_, online, _) = bed.list(&web, &[]);
    assert_eq!(online, bed.direct_list(&web));
    assert_eq!(online.len(), 2);
    bed.fake.stop();
    bed.hub.wait_server_health(&bed.fake.url(), false, WAIT);
    let (status, offline, _) = bed.list(&web, &[]);
    assert_eq!(status, 200, "{}", bed.hub.log());
    assert_eq!(offline, online);
}

/// Events of a client that watches again from the last version it saw
/// whenever its watch ends (as an informer), over several watches.
struct Informer {
    query: String,
    watches: Vec<WatchRecorder>,
    /// Events of watches already ended.
    before: Vec<RecordedEvent>,
}

impl Informer {
    fn events(&self) -> Vec<RecordedEvent> {
        let mut events = self.before.clone();
        if let Some(last) = self.watches.last() {
            events.extend(last.events());
        }
        events
    }

    fn last_rv(&self, from: u64) -> u64 {
        self.events()
            .iter()
            .map(|e| e.resource_version)
            .max()
            .unwrap_or(from)
    }

    /// Once its watch has ended, a new one from the last version seen.
    fn rewatch(&mut self, start: impl Fn(&str) -> WatchRecorder, from: u64) {
        let last = self.watches.last().expect("a watch");
        assert!(
            last.wait_ended(WAIT),
            "{}: the watch did not end",
            self.query
        );
        self.before.extend(last.events());
        let rv = self.last_rv(from);
        let query = format!("{}&resourceVersion={rv}", self.query);
        self.watches.push(start(&query));
    }
}

#[test]
fn clients_carry_on_across_an_upstream_break_a_410_relist_and_a_hub_restart() {
    let mut bed = Bed::new(Encoding::Json);
    // Watches of the hub's own can be refused for a while (503).
    let refuse_hub = Arc::new(AtomicBool::new(false));
    let Behaviour::Func(live) = bed.services.behaviour() else {
        panic!("a live collection answers per request");
    };
    let refusing = refuse_hub.clone();
    bed.fake.route(
        "GET",
        SERVICES,
        Behaviour::func(move |request| {
            let hubs_watch = request.header("user-agent") == Some(HUB_AGENT)
                && request.query_param("watch").is_some();
            if hubs_watch && refusing.load(Ordering::SeqCst) {
                return Behaviour::k8s_status(503, "ServiceUnavailable", "refused for the test");
            }
            live(request)
        }),
    );
    let (_, _, rv) = bed.list(SERVICES, &[]);
    let queries = [
        format!("{SERVICES}?watch=true"),
        format!("{SERVICES}?watch=true&labelSelector=app%3Dweb"),
    ];
    let list_of = |query: &str| query.replace("watch=true&", "").replace("?watch=true", "");
    let initial: Vec<BTreeMap<ObjectKey, u64>> = queries
        .iter()
        .map(|q| bed.direct_list(&list_of(q)))
        .collect();
    let hub_clients: Vec<Informer> = queries
        .iter()
        .map(|q| Informer {
            query: q.clone(),
            watches: vec![
                bed.through_hub(&format!("{q}&resourceVersion={rv}"), "application/json"),
            ],
            before: Vec::new(),
        })
        .collect();
    let mut direct_clients: Vec<Informer> = queries
        .iter()
        .map(|q| Informer {
            query: q.clone(),
            watches: vec![bed.direct(&format!("{q}&resourceVersion={rv}"), Encoding::Json)],
            before: Vec::new(),
        })
        .collect();

    // 1. The upstream watch breaks (the direct ones too): the hub resumes
    // from its version, its clients' watches never end.
    bed.services.end_watches();
    for informer in &mut direct_clients {
        informer.rewatch(|q| bed.direct(q, Encoding::Json), rv);
    }
    assert!(wait_until(WAIT, || bed.hub_requests(SERVICES, true) >= 2));
    bed.services.put("a", "web", &[("app", "web"), ("v", "2")]);
    bed.services.put("c", "web", &[("app", "web")]);
    for (hub, direct) in hub_clients.iter().zip(&direct_clients) {
        let same = wait_until(WAIT, || {
            seen(&hub.events()) == seen(&direct.events()) && direct.events().len() >= 2
        });
        assert!(
            same,
            "after a break {}: {:#?}\n{:#?}",
            hub.query,
            seen(&hub.events()),
            seen(&direct.events())
        );
        assert!(
            !hub.watches[0].ended(),
            "a local watch ended with the upstream one"
        );
    }

    // 2. The hub's watch cannot resume while the apiserver compacts past
    // it: it gets 410, lists again, and its clients get the difference as
    // events, without listing themselves.
    refuse_hub.store(true, Ordering::SeqCst);
    bed.services.end_watches();
    for informer in &mut direct_clients {
        informer.watches.last().unwrap().wait_ended(WAIT);
    }
    bed.services.put("a", "db", &[("app", "db"), ("v", "2")]);
    bed.services.delete("c", "web");
    bed.services.put("d", "web", &[("app", "web")]);
    bed.services.compact();
    refuse_hub.store(false, Ordering::SeqCst);
    let relisted = || {
        bed.hub.metric(
            "node_yurthub_shared_watch_relists_total{resource=\"services.v1\",encoding=\"json\"}",
        ) >= 1
    };
    assert!(wait_until(WAIT, relisted), "{}", bed.hub.log());
    for ((informer, query), initial) in hub_clients.iter().zip(&queries).zip(&initial) {
        let want = bed.direct_list(&list_of(query));
        let converged = wait_until(WAIT, || {
            let mut state = initial.clone();
            apply(&mut state, &informer.events());
            state == want
        });
        assert!(
            converged,
            "{query} after a relist: {:#?}\nwant {want:#?}",
            seen(&informer.events())
        );
        assert!(
            !informer.watches[0].ended(),
            "a local watch ended with the relist"
        );
    }

    // 3. A hub restart: a client resuming from before it, with changes made
    // meanwhile, gets 410 (the new shared state starts after them), lists
    // again through the hub and sees what a direct list shows.
    let before_restart = hub_clients[0].last_rv(rv);
    bed.hub.kill();
    bed.services.put("e", "web", &[("app", "web")]);
    bed.hub.restart();
    let resumed = bed.through_hub(
        &format!("{SERVICES}?watch=true&resourceVersion={before_restart}"),
        "application/json",
    );
    assert!(resumed.wait_for(|e| !e.is_empty(), WAIT));
    let first = resumed.events()[0].clone();
    assert_eq!(first.event_type, "ERROR");
    assert_eq!(first.error.as_ref().map(|e| e.code), Some(410));
    assert!(resumed.wait_ended(WAIT));
    let (status, listed, rv) = bed.list(SERVICES, &[]);
    assert_eq!(status, 200);
    assert_eq!(listed, bed.direct_list(SERVICES));
    let query = format!("{SERVICES}?watch=true&resourceVersion={rv}");
    let (hub, direct) = (
        bed.through_hub(&query, "application/json"),
        bed.direct(&query, Encoding::Json),
    );
    bed.services.delete("e", "web");
    agree(&hub, &direct, 1, "after a restart");
}

#[test]
fn protobuf_streaming_lists_of_endpointslices_are_shared_with_their_selectors() {
    let bed = Bed::new(Encoding::Protobuf);
    let slices = &bed.slices;
    for (namespace, name, service) in [
        ("a", "web-1", "web"),
        ("a", "web-2", "web"),
        ("b", "db-1", "db"),
    ] {
        slices.put(namespace, name, &[("kubernetes.io/service-name", service)]);
    }
    let protobuf = "application/vnd.kubernetes.protobuf";
    // A first list syncs the shared state (a streaming list sent before
    // would be forwarded while it syncs, which is also correct).
    let (status, _, body) = client::request(
        "GET",
        &format!("{}{SLICES}", bed.hub.proxy_url()),
        &[("User-Agent", KUBE_PROXY), ("Accept", protobuf)],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(list_state(&body, Encoding::Protobuf).0, slices.objects());
    let queries = [
        format!(
            "{SLICES}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector=kubernetes.io%2Fservice-name%3Dweb"
        ),
        "/apis/discovery.k8s.io/v1/namespaces/b/endpointslices?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
            .to_string(),
    ];
    let watches: Vec<(WatchRecorder, WatchRecorder)> = queries
        .iter()
        .map(|q| {
            (
                bed.through_hub(q, protobuf),
                bed.direct(q, Encoding::Protobuf),
            )
        })
        .collect();
    for (hub, _) in &watches {
        assert_eq!(
            hub.content_type().as_deref(),
            Some("application/vnd.kubernetes.protobuf;stream=watch")
        );
    }
    slices.put(
        "a",
        "web-1",
        &[("kubernetes.io/service-name", "web"), ("x", "1")],
    );
    slices.put("b", "db-2", &[("kubernetes.io/service-name", "db")]);
    slices.delete("a", "web-2");
    slices.put("b", "db-1", &[("kubernetes.io/service-name", "web")]);
    // Initial events (2 + the annotated bookmark, 1 + bookmark), then the changes.
    let least = [3 + 3, 2 + 2];
    for (i, (hub, direct)) in watches.iter().enumerate() {
        let events = agree(hub, direct, least[i], &queries[i]);
        assert!(events.iter().any(|e| e.0 == "BOOKMARK"), "{events:#?}");
    }
    assert_eq!(bed.hub_requests(SLICES, true), 1);
    let m = |name| bed.metric(name, "endpointslices.v1.discovery.k8s.io", "pb");
    assert_eq!(m("node_yurthub_shared_watch_watchers"), 2);
    assert_eq!(m("node_yurthub_shared_watch_watches_total"), 2);
}

#[test]
fn a_client_with_its_own_token_is_answered_only_when_an_access_review_allows_it() {
    let bed = Bed::new(Encoding::Json);
    let reviews = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let asked = reviews.clone();
    bed.fake.route(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        Behaviour::func(move |request| {
            let token = request.header("authorization").unwrap_or("").to_string();
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            let attributes = &body["spec"]["resourceAttributes"];
            assert_eq!(attributes["resource"], "services");
            asked.lock().unwrap().push(token.clone());
            let allowed = token == "Bearer good";
            Behaviour::json(
                201,
                &serde_json::json!({"kind": "SelfSubjectAccessReview",
                    "apiVersion": "authorization.k8s.io/v1", "status": {"allowed": allowed}})
                .to_string(),
            )
        }),
    );
    let served = || {
        bed.metric(
            "node_yurthub_shared_watch_lists_total",
            "services.v1",
            "json",
        )
    };
    // Without a token: the node's identity either way, served.
    assert_eq!(bed.list(SERVICES, &[]).0, 200);
    assert_eq!(served(), 1);
    let with_token = |token: &str| {
        let authorization = format!("Bearer {token}");
        let status = bed
            .list(SERVICES, &[("Authorization", authorization.as_str())])
            .0;
        let forwarded = bed
            .fake
            .requests()
            .iter()
            .filter(|r| {
                r.path == SERVICES && r.header("authorization") == Some(authorization.as_str())
            })
            .count();
        (status, forwarded)
    };
    assert_eq!(with_token("good"), (200, 0));
    assert_eq!(with_token("good"), (200, 0));
    assert_eq!(served(), 3);
    assert_eq!(with_token("bad"), (200, 1), "forwarded with its own token");
    assert_eq!(served(), 3);
    assert_eq!(
        *reviews.lock().unwrap(),
        ["Bearer good", "Bearer bad"],
        "one review per token, remembered"
    );
    // Asking to act as someone else is never answered from the shared state.
    assert_eq!(bed.list(SERVICES, &[("Impersonate-User", "admin")]).0, 200);
    assert_eq!(served(), 3);
}

#[test]
fn what_the_shared_state_cannot_answer_is_forwarded_at_once() {
    let pki = TestPki::new();
    let fake = FakeApiserver::start(&pki);
    // Services may not be listed: the shared state never syncs.
    fake.route(
        "GET",
        SERVICES,
        Behaviour::k8s_status(403, "Forbidden", "services is forbidden"),
    );
    let slices = LiveCollection::new(Encoding::Json, "EndpointSlice", "discovery.k8s.io/v1");
    slices.route_on(&fake);
    slices.put("a", "s1", &[]);
    let hub = Hub::start(&Hub::args_for(&[&fake], &pki));
    let get = |target: &str| {
        let started = Instant::now();
        let (status, _, body) = client::request(
            "GET",
            &format!("{}{target}", hub.proxy_url()),
            &[("User-Agent", KUBE_PROXY)],
            b"",
        );
        (status, started.elapsed(), body)
    };
    for _ in 0..2 {
        let (status, took, _) = get(SERVICES);
        assert_eq!(status, 403, "the apiserver's own answer");
        assert!(
            took < Duration::from_secs(4),
            "took {took:?}: waited for a state that cannot sync"
        );
    }
    // A list at an exact version, and a watch from before what the state
    // holds: the apiserver's answers.
    let (status, _, _) = get(&format!(
        "{SLICES}?resourceVersion=101&resourceVersionMatch=Exact"
    ));
    assert_eq!(status, 200);
    assert!(wait_until(WAIT, || fake.requests().iter().any(|r| r.path
        == SLICES
        && r.query_param("resourceVersionMatch").is_some())));
    let old = WatchRecorder::start(
        &hub.proxy_url(),
        &format!("{SLICES}?watch=true&resourceVersion=1"),
        Encoding::Json,
        &[("User-Agent", KUBE_PROXY)],
        None,
    );
    assert!(old.wait_for(|e| !e.is_empty(), WAIT), "{:?}", old.problem());
    assert_eq!(old.events()[0].error.as_ref().map(|e| e.code), Some(410));
    assert!(old.wait_ended(WAIT));
}

#[test]
fn made_up_versions_huge_timeouts_and_the_last_bookmark_of_a_watch() {
    let bed = Bed::new(Encoding::Json);
    assert_eq!(bed.list(SERVICES, &[]).0, 200);
    // A version kube-apiserver could not serve never names a shared state,
    // a path upstream or a metric label.
    for path in [
        "/api/v1%22%7D%200%0Afake_metric%7Ba%3D%22/services",
        "/api/v1%3Fx/services",
        "/api/v9000/services",
    ] {
        let (status, _, _) = client::request(
            "GET",
            &format!("{}{path}", bed.hub.proxy_url()),
            &[("User-Agent", KUBE_PROXY)],
            b"",
        );
        assert!(status >= 400, "{path}: {status}");
    }
    let metrics = bed.hub.metrics();
    assert!(!metrics.contains("fake_metric"), "{metrics}");
    let states: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("node_yurthub_shared_watch_upstream_streams{"))
        .collect();
    assert_eq!(states.len(), 1, "{states:?}");
    // A timeout past any deadline is served, not a panic.
    let forever = bed.through_hub(
        &format!("{SERVICES}?watch=true&timeoutSeconds=9223372036854775807"),
        "application/json",
    );
    assert!(
        forever.wait_for(|e| e.len() == 3, WAIT),
        "{:?}",
        forever.problem()
    );
    assert!(!forever.ended());
    assert_eq!(
        bed.hub
            .metric("node_yurthub_connection_panics_total{listener=\"proxy\"}"),
        0
    );
    // A watch that times out with bookmarks allowed ends with one at the
    // state's version, as kube-apiserver's do.
    let rv = bed.services.current_rv();
    let short = bed.through_hub(
        &format!(
            "{SERVICES}?watch=true&resourceVersion={rv}&timeoutSeconds=1&allowWatchBookmarks=true"
        ),
        "application/json",
    );
    assert!(short.wait_ended(WAIT));
    let last = short.events().pop().expect("a bookmark");
    assert_eq!(
        (last.event_type.as_str(), last.resource_version),
        ("BOOKMARK", rv)
    );
}
