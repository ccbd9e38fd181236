//! One upstream list+watch per resource for the whole node
//! (`--shared-watch-resources`): kube-proxy, coredns, flannel and every
//! agent listing and watching Services or EndpointSlices are answered from
//! one shared state instead of each pulling the same objects from the cloud.
//!
//! `state.rs` holds what the shared watch knows (pure), `serve.rs` decides
//! which requests it answers and what a change looks like to one client
//! (pure), `body.rs` is one client's answer as the relay reads it,
//! `follow.rs` the `yh-shared-watch` thread per resource and encoding, and
//! `access.rs` checks that a client with its own token may read what it
//! asks (the shared state is read with the node's identity).

mod access;
mod body;
mod follow;
pub mod serve;
pub mod state;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use body::SharedBody;
use serve::{Plan, Selection, Start};
use state::{Change, Resume, State};

use crate::codec::{self, Encoding, Pieces};
use crate::http::header_value;
use crate::metrics::{escape, header};
use crate::request_info::{Query, RequestInfo, Verb};
use crate::upstream::Upstream;

/// How long a request waits for a shared state being filled for the first
/// time, or behind the resourceVersion it asks for, before it is forwarded.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// A shared state nobody used for this long (no local watch, list, or
/// follower inside the hub) closes its upstream watch and is forgotten:
/// a client that asked once does not keep a stream open for ever.
const IDLE_STOP: Duration = Duration::from_secs(600);

/// Shared states at once (resources times encodings times versions a
/// spec without a version matches): a flood of made-up versions cannot
/// start a thread each.
const MAX_STATES: usize = 16;

/// A resource named in `--shared-watch-resources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSpec {
    pub group: String,
    /// `None`: every version the apiserver serves.
    pub version: Option<String>,
    pub resource: String,
}

impl ResourceSpec {
    fn matches(&self, group: &str, version: &str, resource: &str) -> bool {
        resource == self.resource
            && group == self.group
            && self.version.as_ref().is_none_or(|v| v == version)
    }
}

/// The default of `--shared-watch-resources`, as the original's
/// `--pool-scope-resources`.
pub const DEFAULT_RESOURCES: &str = "services,endpointslices.v1.discovery.k8s.io";

/// Parses `--shared-watch-resources`: comma-separated, each as kubectl
/// names them (`services`, `endpointslices.v1.discovery.k8s.io`,
/// `endpointslices.discovery.k8s.io`) or as the original's
/// `--pool-scope-resources` (`/v1/services`,
/// `discovery.k8s.io/v1/endpointslices`). Empty: none.
pub fn parse_resources(text: &str) -> Result<Vec<ResourceSpec>, String> {
    let mut specs = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad =
            || format!("{part:?} is neither resource[.version][.group] nor group/version/resource");
        let spec = if part.contains('/') {
            let pieces: Vec<&str> = part.split('/').map(str::trim).collect();
            let [group, version, resource] = pieces[..] else {
                return Err(bad());
            };
            if version.is_empty() || resource.is_empty() {
                return Err(bad());
            }
            ResourceSpec {
                group: group.to_string(),
                version: Some(version.to_string()),
                resource: resource.to_string(),
            }
        } else {
            let (resource, rest) = part.split_once('.').unwrap_or((part, ""));
            let (version, group) = match rest.split_once('.') {
                Some((first, group)) if is_version(first) => (Some(first), group),
                _ if is_version(rest) => (Some(rest), ""),
                _ => (None, rest),
            };
            ResourceSpec {
                group: group.to_string(),
                version: version.map(str::to_string),
                resource: resource.to_string(),
            }
        };
        if spec.resource.is_empty()
            || !is_plain(&spec.resource)
            || !is_plain(&spec.group)
            || !spec.version.as_deref().is_none_or(is_plain)
        {
            return Err(bad());
        }
        if !specs.contains(&spec) {
            specs.push(spec);
        }
    }
    Ok(specs)
}

/// A resource's name in metrics and logs: `services.v1`,
/// `endpointslices.v1.discovery.k8s.io`.
fn label_of(group: &str, version: &str, resource: &str) -> String {
    if group.is_empty() {
        format!("{resource}.{version}")
    } else {
        format!("{resource}.{version}.{group}")
    }
}

/// Lower-case letters, digits, `-` and `.`: a resource or group name.
fn is_plain(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// `v1`, `v1beta1`, `v2alpha3`.
fn is_version(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('v') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let rest = &rest[digits..];
    rest.is_empty()
        || ["alpha", "beta"].iter().any(|stage| {
            rest.strip_prefix(stage)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// The shared state of one resource in one encoding, the counters about it,
/// and the wake-up of local watches.
pub struct Shared {
    /// `services.v1`, `endpointslices.v1.discovery.k8s.io`: the metric label.
    pub label: String,
    pub encoding: Encoding,
    /// The collection's path: `/api/v1/services`.
    pub path: String,
    state: Mutex<State>,
    changed: Condvar,
    /// Upstream streams open (0 or 1).
    pub streams_open: AtomicI64,
    /// Body bytes received from the apiserver, as sent (compressed lists
    /// counted compressed).
    pub received_bytes: AtomicU64,
    /// Local watches served now.
    pub watchers: AtomicI64,
    pub lists_served: AtomicU64,
    pub watches_served: AtomicU64,
    /// Lists from upstream after the first (a 410 Gone, an unreadable stream).
    pub relists: AtomicU64,
    /// The last list failed (a 403, an unreadable answer): requests are
    /// forwarded at once instead of waiting for a state that may not come.
    pub failing: AtomicBool,
    /// Retired (after `IDLE_STOP` unused, or as soon as the apiserver says
    /// it does not serve the resource): its upstream watch is closed, a
    /// request still holding it is forwarded, a watch on it ends.
    pub stopped: AtomicBool,
    /// Followers inside the hub (the filters' context) holding it.
    held: AtomicI64,
    last_used: Mutex<Instant>,
}

/// Counts a local watch for as long as it lives.
pub struct WatcherSlot(Arc<Shared>);

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        // Used now, then no longer watched: never idle in between.
        self.0.touch();
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps a shared state from being retired while a follower inside the
/// hub reads it.
pub struct Hold(Arc<Shared>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.touch();
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    fn new(label: String, encoding: Encoding, path: String) -> Shared {
        Shared {
            label,
            encoding,
            path,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            streams_open: AtomicI64::new(0),
            received_bytes: AtomicU64::new(0),
            watchers: AtomicI64::new(0),
            lists_served: AtomicU64::new(0),
            watches_served: AtomicU64::new(0),
            relists: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            held: AtomicI64::new(0),
            last_used: Mutex::new(Instant::now()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and wakes every local watch.
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let out = change(&mut self.lock());
        self.changed.notify_all();
        out
    }

    fn watcher(self: &Arc<Self>) -> WatcherSlot {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        WatcherSlot(self.clone())
    }

    pub fn hold(self: &Arc<Self>) -> Hold {
        self.held.fetch_add(1, Ordering::Relaxed);
        Hold(self.clone())
    }

    /// A bookmark of the resource at `resource_version` (its kind with only
    /// that version).
    fn bookmark_at(&self, resource_version: u64) -> Vec<u8> {
        let state = self.lock();
        self.encoding.bookmark(
            &state.kind,
            &state.api_version,
            &resource_version.to_string(),
            false,
        )
    }

    /// The resourceVersion the state is at.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version()
    }

    /// Synced once, or not known to fail (a state relisting after a 410
    /// is still the one to use; one that never synced and fails is not).
    fn usable(&self) -> bool {
        self.lock().synced() || !self.failing.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Nobody watches, holds or listed it for `IDLE_STOP`.
    fn idle(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) <= 0
            && self.held.load(Ordering::Relaxed) <= 0
            && self
                .last_used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
                >= IDLE_STOP
    }

    /// The changes from `seq` on, waiting up to `wait` for one; `None`:
    /// some are no longer kept.
    pub fn wait_changes(&self, seq: u64, wait: Duration) -> Option<Vec<Arc<Change>>> {
        let mut state = self.lock();
        if state.next_seq() <= seq && !wait.is_zero() {
            state = self
                .changed
                .wait_timeout_while(state, wait, |s| s.next_seq() <= seq)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.changes_from(seq)
    }

    /// The state once synced and at least at `at_least`, waiting up to
    /// `wait`; `None` if it is not by then.
    pub fn wait_ready(
        &self,
        at_least: Option<u64>,
        wait: Duration,
    ) -> Option<MutexGuard<'_, State>> {
        let ready =
            |s: &mut State| s.synced() && at_least.is_none_or(|rv| s.resource_version() >= rv);
        let failing =
            || self.failing.load(Ordering::Relaxed) || self.stopped.load(Ordering::Relaxed);
        let mut state = self.lock();
        if !ready(&mut state) && !failing() {
            state = self
                .changed
                .wait_timeout_while(state, wait, |s| !ready(s) && !failing())
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        (ready(&mut state) && !failing()).then_some(state)
    }
}

/// What the proxy needs to know of a request to ask for a shared answer.
pub struct SharedRequest<'a> {
    pub info: &'a RequestInfo,
    pub query: &'a Query,
    /// Every header field: `Accept`, the client's own `Authorization`
    /// (none: the node's identity), and whether it asks to act as someone
    /// else (`Impersonate-*`, never answered here). Read only for a request
    /// of a shared resource.
    pub headers: &'a [(String, String)],
}

/// An answer from the shared state, relayed as an apiserver's would be.
pub struct SharedAnswer {
    pub headers: Vec<(String, String)>,
    pub body: SharedBody,
}

/// Every shared resource of the hub.
pub struct SharedWatches {
    specs: Vec<ResourceSpec>,
    upstream: Arc<Upstream>,
    access: access::Access,
    /// A watch without `timeoutSeconds` lasts this long.
    watch_timeout: Duration,
    collections: Arc<Collections>,
}

type Collections = Mutex<Registry>;

/// The shared states by resource label and encoding, and the resources the
/// apiserver said it does not serve (404), not tried again for a while.
#[derive(Default)]
struct Registry {
    states: BTreeMap<(String, Encoding), Arc<Shared>>,
    unserved: BTreeMap<String, Instant>,
}

/// How long a resource the apiserver answered 404 for is not tried again
/// (requests for it are forwarded meanwhile), and how many are remembered.
const UNSERVED_FOR: Duration = Duration::from_secs(60);
const MAX_UNSERVED: usize = 64;

/// Retires `shared` if it is idle, or `at_once`: forgotten (the next
/// request starts a new one) and stopped (a watch still on it ends), under
/// the lock every request takes to find it.
fn retire(collections: &Collections, shared: &Shared, at_once: bool) -> bool {
    let mut collections = collections.lock().unwrap_or_else(|e| e.into_inner());
    if !at_once && !shared.idle() {
        return false;
    }
    collections
        .states
        .retain(|_, s| !std::ptr::eq(&**s, shared));
    if at_once {
        let now = Instant::now();
        let unserved = &mut collections.unserved;
        if unserved.len() >= MAX_UNSERVED {
            unserved.retain(|_, until| now < *until);
            if unserved.len() >= MAX_UNSERVED {
                unserved.clear();
            }
        }
        unserved.insert(shared.label.clone(), now + UNSERVED_FOR);
    }
    // Under the state's lock, so no wait misses it.
    shared.update(|_| shared.stopped.store(true, Ordering::Relaxed));
    if !at_once {
        log::info!(
            "shared watch of {} ({}) stopped, unused for {} s",
            shared.label,
            shared.encoding.extension(),
            IDLE_STOP.as_secs()
        );
    }
    true
}

impl SharedWatches {
    pub fn new(
        specs: Vec<ResourceSpec>,
        upstream: Arc<Upstream>,
        watch_timeout: Duration,
    ) -> SharedWatches {
        SharedWatches {
            specs,
            access: access::Access::new(upstream.clone()),
            upstream,
            watch_timeout,
            collections: Arc::new(Mutex::new(Registry::default())),
        }
    }

    /// The answer the shared state gives, or `None` when the request goes
    /// to the apiserver (another resource, a request the shared state
    /// cannot answer as the apiserver would, a state not synced in time, a
    /// client whose own credentials may not read it).
    pub fn answer(&self, request: &SharedRequest<'_>) -> Option<SharedAnswer> {
        let info = request.info;
        if !info.is_resource_request
            || !info.subresource.is_empty()
            || !matches!(info.verb, Verb::List | Verb::Watch)
            || !self.is_shared(&info.api_group, &info.api_version, &info.resource)
        {
            return None;
        }
        let plan = serve::plan(info, request.query);
        let selection = Selection::of(info, request.query);
        let (plan, selection) = match (plan, selection) {
            (Plan::Forward(why), _) | (_, Err(why)) => {
                log::debug!("{}: forwarded, {why}", info.path);
                return None;
            }
            (plan, Ok(selection)) => (plan, selection),
        };
        // A client asking for another shape first (kubectl's Tables) gets
        // it from the apiserver.
        let accept = header_value(request.headers, "accept");
        let other_shape = accept.is_some_and(|a| a.contains("as="));
        let accepted = codec::accepted(accept);
        // The version and group go into a path and a metric label: only
        // what kube-apiserver could serve.
        if !is_version(&info.api_version) || !is_plain(&info.api_group) {
            return None;
        }
        let impersonates = request.headers.iter().any(|(name, _)| {
            name.as_bytes()
                .get(..12)
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"impersonate-"))
        });
        if accepted.is_empty() || other_shape || impersonates {
            return None;
        }
        if let Some(authorization) = header_value(request.headers, "authorization")
            && !self.access.allows(authorization, info)
        {
            return None;
        }
        let shared = self.shared_for(
            &info.api_prefix,
            &info.api_group,
            &info.api_version,
            &info.resource,
            accepted[0],
        )?;
        let encoding = shared.encoding;
        let at_least = match &plan {
            Plan::List { at_least } => *at_least,
            Plan::Watch(watch) => match watch.start {
                Start::Initial { at_least, .. } => at_least,
                Start::After(_) => None,
            },
            Plan::Forward(_) => None,
        };
        let Some(state) = shared.wait_ready(at_least, SYNC_WAIT) else {
            log::debug!(
                "{}: forwarded, the shared watch of {} is not ready",
                info.path,
                shared.label
            );
            return None;
        };
        let item_kind = state.kind.clone();
        let api_version = state.api_version.clone();
        let headers =
            |content_type: &str| vec![("Content-Type".to_string(), content_type.to_string())];
        let answer = match plan {
            Plan::List { .. } => {
                let (objects, rv, _) = state.snapshot(|o| selection.selects(o));
                drop(state);
                let items: Vec<Arc<[u8]>> = objects.iter().map(|o| o.bytes.clone()).collect();
                let pieces = encoding.encode_list(
                    &format!("{item_kind}List"),
                    &api_version,
                    &rv.to_string(),
                    items,
                );
                let mut headers = headers(encoding.content_type());
                headers.push(("Content-Length".into(), pieces.len().to_string()));
                shared.lists_served.fetch_add(1, Ordering::Relaxed);
                SharedAnswer {
                    headers,
                    body: SharedBody::whole(shared.clone(), encoding, pieces),
                }
            }
            Plan::Watch(watch) => {
                let timeout = watch.timeout.unwrap_or(self.watch_timeout);
                let body = match watch.start {
                    Start::Initial { annotated_end, .. } => {
                        let (objects, rv, seq) = state.snapshot(|o| selection.selects(o));
                        drop(state);
                        let items: Vec<Arc<[u8]>> =
                            objects.iter().map(|o| o.bytes.clone()).collect();
                        let bookmark = annotated_end.then(|| {
                            encoding.initial_events_end_bookmark(
                                &item_kind,
                                &api_version,
                                &rv.to_string(),
                            )
                        });
                        let initial: Pieces<Arc<[u8]>> =
                            encoding.encode_added_events(items, bookmark.as_deref());
                        SharedBody::watch(
                            shared.clone(),
                            encoding,
                            selection,
                            Some(initial),
                            seq,
                            rv,
                            watch.bookmarks,
                            timeout,
                        )
                    }
                    Start::After(after) => match state.resume(after) {
                        Resume::Gone => {
                            drop(state);
                            SharedBody::gone(shared.clone(), encoding, after)
                        }
                        Resume::At(seq) => {
                            drop(state);
                            SharedBody::watch(
                                shared.clone(),
                                encoding,
                                selection,
                                None,
                                seq,
                                after,
                                watch.bookmarks,
                                timeout,
                            )
                        }
                    },
                };
                shared.watches_served.fetch_add(1, Ordering::Relaxed);
                SharedAnswer {
                    headers: headers(encoding.watch_content_type()),
                    body,
                }
            }
            Plan::Forward(_) => return None,
        };
        Some(answer)
    }

    fn is_shared(&self, group: &str, version: &str, resource: &str) -> bool {
        self.specs
            .iter()
            .any(|spec| spec.matches(group, version, resource))
    }

    /// The shared state of a resource the hub itself follows (the filters'
    /// Services): one in either encoding, else protobuf (what kube-proxy
    /// and coredns ask for, and the smaller), started now. `None` when the
    /// resource is not shared.
    pub fn for_hub(&self, group: &str, version: &str, resource: &str) -> Option<Arc<Shared>> {
        if !self.is_shared(group, version, resource) {
            return None;
        }
        let prefix = if group.is_empty() { "api" } else { "apis" };
        let label = label_of(group, version, resource);
        let encoding = {
            let collections = self.collections.lock().unwrap_or_else(|e| e.into_inner());
            let state = |e| collections.states.get(&(label.clone(), e));
            let works = |e| state(e).is_some_and(|s| s.usable());
            match (works(Encoding::Protobuf), works(Encoding::Json)) {
                (true, _) => Encoding::Protobuf,
                (false, true) => Encoding::Json,
                // Protobuf tried and failing (an apiserver or a resource
                // that does not speak it): JSON.
                _ if state(Encoding::Protobuf).is_some() => Encoding::Json,
                _ => Encoding::Protobuf,
            }
        };
        self.shared_for(prefix, group, version, resource, encoding)
    }

    /// The shared state of a resource in an encoding, started if there is
    /// none: a client gets the encoding it prefers, as from the apiserver
    /// (the hub cannot turn one into the other).
    fn shared_for(
        &self,
        prefix: &str,
        group: &str,
        version: &str,
        resource: &str,
        encoding: Encoding,
    ) -> Option<Arc<Shared>> {
        let label = label_of(group, version, resource);
        let mut collections = self.collections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = collections.states.get(&(label.clone(), encoding)) {
            shared.touch();
            return Some(shared.clone());
        }
        if collections
            .unserved
            .get(&label)
            .is_some_and(|until| Instant::now() < *until)
        {
            return None;
        }
        if collections.states.len() >= MAX_STATES {
            log::debug!("{label}: forwarded, {MAX_STATES} shared watches run already");
            return None;
        }
        let path = if group.is_empty() {
            format!("/{prefix}/{version}/{resource}")
        } else {
            format!("/{prefix}/{group}/{version}/{resource}")
        };
        let shared = Arc::new(Shared::new(label.clone(), encoding, path));
        let retire = {
            let collections = self.collections.clone();
            move |shared: &Shared, at_once| retire(&collections, shared, at_once)
        };
        if let Err(e) = follow::start(shared.clone(), self.upstream.clone(), retire) {
            log::warn!("cannot start the shared watch of {label}: {e}");
            return None;
        }
        log::info!("shared watch of {label} ({}) started", encoding.extension());
        collections.states.insert((label, encoding), shared.clone());
        Some(shared)
    }

    pub fn render_metrics(&self, out: &mut String) {
        let collections: Vec<Arc<Shared>> = self
            .collections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .states
            .values()
            .cloned()
            .collect();
        type Read = fn(&Shared) -> u64;
        let series: [(&str, &str, &str, Read); 8] = [
            (
                "node_yurthub_shared_watch_upstream_streams",
                "gauge",
                "upstream watches open for the shared state",
                |s| s.streams_open.load(Ordering::Relaxed).max(0) as u64,
            ),
            (
                "node_yurthub_shared_watch_received_bytes_total",
                "counter",
                "bytes received from the apiserver for the shared state (lists as sent, compressed or not)",
                |s| s.received_bytes.load(Ordering::Relaxed),
            ),
            (
                "node_yurthub_shared_watch_watchers",
                "gauge",
                "local watches served from the shared state",
                |s| s.watchers.load(Ordering::Relaxed).max(0) as u64,
            ),
            (
                "node_yurthub_shared_watch_lists_total",
                "counter",
                "local lists answered from the shared state",
                |s| s.lists_served.load(Ordering::Relaxed),
            ),
            (
                "node_yurthub_shared_watch_watches_total",
                "counter",
                "local watches and streaming lists answered from the shared state",
                |s| s.watches_served.load(Ordering::Relaxed),
            ),
            (
                "node_yurthub_shared_watch_relists_total",
                "counter",
                "upstream lists after the first (410 Gone, a broken stream)",
                |s| s.relists.load(Ordering::Relaxed),
            ),
            (
                "node_yurthub_shared_watch_objects",
                "gauge",
                "objects the shared state holds",
                |s| s.lock().len() as u64,
            ),
            (
                "node_yurthub_shared_watch_memory_bytes",
                "gauge",
                "memory the shared state's objects and kept changes take",
                |s| s.lock().bytes() as u64,
            ),
        ];
        for (name, kind, help, read) in series {
            header(out, name, kind, help);
            for shared in &collections {
                let _ = writeln!(
                    out,
                    "{name}{{resource=\"{}\",encoding=\"{}\"}} {}",
                    escape(&shared.label),
                    shared.encoding.extension(),
                    read(shared)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(group: &str, version: Option<&str>, resource: &str) -> ResourceSpec {
        ResourceSpec {
            group: group.into(),
            version: version.map(str::to_string),
            resource: resource.into(),
        }
    }

    #[test]
    fn a_state_is_retired_only_once_nobody_watches_holds_or_used_it_for_a_while() {
        let collections: Collections = Mutex::new(Registry::default());
        let shared = Arc::new(Shared::new(
            "services.v1".into(),
            Encoding::Json,
            "/api/v1/services".into(),
        ));
        collections
            .lock()
            .unwrap()
            .states
            .insert(("services.v1".into(), Encoding::Json), shared.clone());
        let long_ago = |shared: &Shared| {
            if let Some(at) = Instant::now().checked_sub(IDLE_STOP + Duration::from_secs(1)) {
                *shared.last_used.lock().unwrap() = at;
            }
        };
        assert!(!retire(&collections, &shared, false), "just used");
        long_ago(&shared);
        let watcher = shared.watcher();
        assert!(!retire(&collections, &shared, false), "watched");
        drop(watcher);
        long_ago(&shared);
        let held = shared.hold();
        assert!(!retire(&collections, &shared, false), "held");
        drop(held);
        if Instant::now()
            .checked_sub(IDLE_STOP + Duration::from_secs(1))
            .is_none()
        {
            return; // a machine up for less than the idle time cannot say
        }
        long_ago(&shared);
        assert!(retire(&collections, &shared, false));
        assert!(collections.lock().unwrap().states.is_empty());
        assert!(
            collections.lock().unwrap().unserved.is_empty(),
            "idle is not unserved"
        );
        // One the apiserver does not serve goes at once, watched or not, and
        // is not tried again for a while.
        let unserved = Arc::new(Shared::new(
            "services.v9".into(),
            Encoding::Json,
            "/api/v9/services".into(),
        ));
        let _watcher = unserved.watcher();
        assert!(retire(&collections, &unserved, true));
        assert!(
            collections
                .lock()
                .unwrap()
                .unserved
                .contains_key("services.v9")
        );
        assert!(shared.stopped.load(Ordering::Relaxed));
        assert!(
            shared.wait_ready(None, Duration::ZERO).is_none(),
            "a stopped state answers nothing"
        );
    }

    #[test]
    fn resources_are_named_as_kubectl_or_the_original_names_them() {
        let rows: Vec<(&str, Result<Vec<ResourceSpec>, ()>)> = vec![
            (
                DEFAULT_RESOURCES,
                Ok(vec![
                    spec("", None, "services"),
                    spec("discovery.k8s.io", Some("v1"), "endpointslices"),
                ]),
            ),
            ("", Ok(vec![])),
            (" , ", Ok(vec![])),
            ("services.v1", Ok(vec![spec("", Some("v1"), "services")])),
            (
                "endpointslices.discovery.k8s.io",
                Ok(vec![spec("discovery.k8s.io", None, "endpointslices")]),
            ),
            (
                "endpointslices.v1beta1.discovery.k8s.io",
                Ok(vec![spec(
                    "discovery.k8s.io",
                    Some("v1beta1"),
                    "endpointslices",
                )]),
            ),
            (
                "/v1/services,discovery.k8s.io/v1/endpointslices",
                Ok(vec![
                    spec("", Some("v1"), "services"),
                    spec("discovery.k8s.io", Some("v1"), "endpointslices"),
                ]),
            ),
            ("services,services", Ok(vec![spec("", None, "services")])),
            ("v1/services", Err(())),
            ("/v1/", Err(())),
            ("Services", Err(())),
            ("services/../x/y", Err(())),
        ];
        for (text, expected) in rows {
            assert_eq!(parse_resources(text).map_err(|_| ()), expected, "{text:?}");
        }
        assert!(is_version("v1") && is_version("v2beta3") && is_version("v1alpha1"));
        assert!(
            !is_version("v")
                && !is_version("vbeta1")
                && !is_version("v1beta")
                && !is_version("discovery")
        );
    }
}
